#!/usr/bin/env bash
# Data integrity of mounted images with many writes in flight: fio with --verify=crc32c at queue
# depth 32 (random and sequential writes, 4 KiB and 64 KiB-1 MiB mixes) on the served FUSE file
# itself and on files in the mounted ext4, re-verified after umount and mount; mkfs.ext4 + e2fsck
# through the loop device (direct I/O) and a file tree read back after remount; copy-up integrity
# on a chain of deltas whose lower levels hold known data (fio random writes at QD32 into partial
# clusters of the top, several writers in the same clusters at once): the exported disk equals the
# model outside what fio wrote, and fio's own blocks verify after remount. (QEMU's FUSE export
# before 10.1 fails checks like these.)
source "$(dirname "$0")/../lib.sh"

for tool in fio e2fsck mkfs.ext4 fsfreeze perl; do
	command -v "$tool" >/dev/null || { echo "ok all # SKIP $tool is not installed"; exit 0; }
done
if [ "$(id -u)" != 0 ] || [ ! -e /dev/fuse ] || [ ! -e /dev/loop-control ]; then
	echo "ok all # SKIP needs root, /dev/fuse and /dev/loop-control"
	exit 0
fi

source "$ROOT/tests/mount_lib.sh"

# ---- fio ------------------------------------------------------------------------------------------

FIO_COMMON=(--ioengine=io_uring --direct=1 --iodepth=32 --verify=crc32c --do_verify=1 --verify_fatal=1)
MIX=64k/30:128k/20:256k/20:512k/15:1m/15

# fio_ok NAME FIO-ARGS...: runs fio; ok when it exits 0, every job reports err=0 and no verify error.
# A fio that does not finish within FIO_TIMEOUT seconds (a hung server) fails the check.
fio_ok() {
	local name=$1 rc jobs bad
	shift
	timeout -k 10 "${FIO_TIMEOUT:-240}" fio "$@" >"$T/.fio" 2>&1
	rc=$?
	[ $rc = 124 ] || [ $rc = 137 ] && echo "fio: timed out after ${FIO_TIMEOUT:-240} s" >>"$T/.fio"
	jobs=$(grep -c 'err= *[0-9-]*' "$T/.fio")
	bad=$(grep -o 'err= *[0-9-]*' "$T/.fio" | grep -v 'err= *0$' | head -3 | tr '\n' ' ')
	if [ $rc = 0 ] && [ "$jobs" -gt 0 ] && [ -z "$bad" ] && ! grep -qi 'verify.*fail\|bad magic\|bad header' "$T/.fio"; then
		ok "$name ($(grep -o 'IOPS=[^,]*' "$T/.fio" | head -1 | tr '\n' ' '))"
		return 0
	fi
	not_ok "$name (fio exit $rc, $jobs job(s) reported, ${bad:-no job error})"
	grep -i 'err=\|verify\|bad\|error\|fio:' "$T/.fio" | head -12 | sed 's/^/#   /'
	return 1
}

# ---- 1. fio on the served FUSE file itself -------------------------------------------------------

A=$T/fuse
mkdir -p "$A/img"
"$PLOOP" init -s 1280M -t none "$A/img/root.hds" >/dev/null 2>"$T/.err" || { not_ok "init: $(cat "$T/.err")"; finish; }
DA=$A/img/DiskDescriptor.xml
# The four workloads, each in its own part of the disk: NAME and fio arguments without the file.
FUSE_JOBS=(
	"randwrite-4k|--rw=randwrite --bs=4k --offset=0 --size=192M"
	"randwrite-64k-1m|--rw=randwrite --bssplit=$MIX --offset=192M --size=256M"
	"write-4k|--rw=write --bs=4k --offset=448M --size=192M"
	"write-64k-1m|--rw=write --bssplit=$MIX --offset=640M --size=384M"
)
if pmount "fuse file: mount" "$DA"; then
	F=$(field "$DA" file)
	for j in "${FUSE_JOBS[@]}"; do
		# shellcheck disable=SC2086
		fio_ok "fuse file: fio ${j%%|*} QD32 verify" --name="${j%%|*}" --filename="$F" "${FIO_COMMON[@]}" ${j#*|}
	done
	# Several jobs at once, each a stride of 4 KiB blocks: neighbouring blocks of the same clusters
	# are written by different jobs, first writes of fresh clusters racing each other.
	fio_ok "fuse file: 4 concurrent jobs interleaved in the same clusters, QD16 each, verify" \
		--filename="$F" "${FIO_COMMON[@]}" --iodepth=16 --rw=write:12k --bs=4k --size=64M \
		--name=s0 --offset=1024M --name=s1 --offset=1048580k --name=s2 --offset=1048584k --name=s3 --offset=1048588k
	pumount "fuse file: umount" "$DA" && ok "fuse file: umount"
fi
checked "fuse file: ploop check -f -c -r" "$DA"
if pmount "fuse file: mount again" "$DA"; then
	F=$(field "$DA" file)
	for j in "${FUSE_JOBS[@]}"; do
		# shellcheck disable=SC2086
		fio_ok "fuse file: fio ${j%%|*} data intact after umount + mount" --name="${j%%|*}" --filename="$F" \
			"${FIO_COMMON[@]}" ${j#*|} --verify_only
	done
	fio_ok "fuse file: interleaved jobs' data intact after umount + mount" \
		--filename="$F" "${FIO_COMMON[@]}" --iodepth=16 --rw=write:12k --bs=4k --size=64M --verify_only \
		--name=s0 --offset=1024M --name=s1 --offset=1048580k --name=s2 --offset=1048584k --name=s3 --offset=1048588k
	pumount "fuse file: umount again" "$DA"
fi

# ---- 2. fio on files in the mounted ext4 ---------------------------------------------------------

B=$T/ext4
mkdir -p "$B/img" "$B/mnt"
MNTS+=("$B/mnt")
"$PLOOP" init -s 2G -t ext4 "$B/img/root.hds" >/dev/null 2>"$T/.err" || { not_ok "init ext4: $(cat "$T/.err")"; finish; }
DB=$B/img/DiskDescriptor.xml
EXT4_JOBS=(
	"randwrite-4k|--rw=randwrite --bs=4k --size=256M"
	"randwrite-64k-1m|--rw=randwrite --bssplit=$MIX --size=384M"
	"write-4k|--rw=write --bs=4k --size=128M"
	"write-64k-1m|--rw=write --bssplit=$MIX --size=384M"
)
if pmount "ext4: mount" "$DB" -m "$B/mnt"; then
	for j in "${EXT4_JOBS[@]}"; do
		# shellcheck disable=SC2086
		fio_ok "ext4: fio ${j%%|*} QD32 verify" --name="${j%%|*}" --filename="$B/mnt/${j%%|*}" "${FIO_COMMON[@]}" ${j#*|}
	done
	fio_ok "ext4: 4 concurrent jobs interleaved in one file, QD16 each, verify" \
		--filename="$B/mnt/interleaved" "${FIO_COMMON[@]}" --iodepth=16 --rw=write:12k --bs=4k --size=128M \
		--name=s0 --offset=0 --name=s1 --offset=4k --name=s2 --offset=8k --name=s3 --offset=12k
	pumount "ext4: umount" "$DB" && ok "ext4: umount"
fi
fsck_clean "ext4: e2fsck -fn clean" "$DB"
checked "ext4: ploop check -f -c -r" "$DB"
if pmount "ext4: mount again" "$DB" -m "$B/mnt"; then
	for j in "${EXT4_JOBS[@]}"; do
		# shellcheck disable=SC2086
		fio_ok "ext4: fio ${j%%|*} data intact after umount + mount" --name="${j%%|*}" --filename="$B/mnt/${j%%|*}" \
			"${FIO_COMMON[@]}" ${j#*|} --verify_only
	done
	fio_ok "ext4: interleaved jobs' data intact after umount + mount" \
		--filename="$B/mnt/interleaved" "${FIO_COMMON[@]}" --iodepth=16 --rw=write:12k --bs=4k --size=128M \
		--verify_only --name=s0 --offset=0 --name=s1 --offset=4k --name=s2 --offset=8k --name=s3 --offset=12k
	pumount "ext4: umount again" "$DB"
fi

# ---- 3. mkfs.ext4 + e2fsck through the loop device -----------------------------------------------

# fsck_dev NAME DEV: e2fsck -fn of DEV finds nothing.
fsck_dev() {
	local rc
	e2fsck -fn "$2" >"$T/.fsck" 2>&1
	rc=$?
	if [ $rc = 0 ]; then ok "$1"; else
		not_ok "$1 (e2fsck exit $rc)"
		grep -v '^Pass\|^e2fsck\|^$' "$T/.fsck" | head -15 | sed 's/^/#   /'
	fi
}

C=$T/mkfs
mkdir -p "$C/img" "$C/mnt"
MNTS+=("$C/mnt")
"$PLOOP" init -s 2G -t none "$C/img/root.hds" >/dev/null 2>"$T/.err" || { not_ok "init: $(cat "$T/.err")"; finish; }
DC=$C/img/DiskDescriptor.xml
if pmount "mkfs: mount" "$DC"; then
	DEV=$(field "$DC" device)
	if [ "$(cat "/sys/block/${DEV#/dev/}/loop/dio" 2>/dev/null)" = 1 ]; then ok "mkfs: $DEV uses direct I/O"; else
		not_ok "mkfs: $DEV does not use direct I/O (dio=$(cat "/sys/block/${DEV#/dev/}/loop/dio" 2>&1))"
	fi
	if mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$DEV" >"$T/.mkfs" 2>&1; then
		ok "mkfs: mkfs.ext4 on $DEV"
		fsck_dev "mkfs: e2fsck -fn right after mkfs" "$DEV"
		# A tree of many small files and a few large ones, with its checksums.
		if mount "$DEV" "$C/mnt"; then
			cp -a /usr/include "$C/mnt/include" 2>/dev/null
			for i in $(seq 8); do head -c $((i * 7 * 1048576 + i * 4097)) /dev/urandom >"$C/mnt/big$i"; done
			(cd "$C/mnt" && find . -type f -print0 | sort -z | xargs -0 sha256sum) >"$T/manifest"
			umount "$C/mnt" || not_ok "mkfs: umount of the filesystem"
			fsck_dev "mkfs: e2fsck -fn after writing $(wc -l <"$T/manifest") files" "$DEV"
		else
			not_ok "mkfs: mount $DEV"
		fi
	else
		not_ok "mkfs: mkfs.ext4 on $DEV: $(head -c 300 "$T/.mkfs")"
	fi
	pumount "mkfs: umount" "$DC"
fi
checked "mkfs: ploop check -f -c -r" "$DC"
if [ -s "$T/manifest" ] && pmount "mkfs: mount again" "$DC"; then
	DEV=$(field "$DC" device)
	fsck_dev "mkfs: e2fsck -fn after umount + mount" "$DEV"
	if mount -o ro "$DEV" "$C/mnt"; then
		if (cd "$C/mnt" && sha256sum --quiet -c "$T/manifest") >"$T/.sum" 2>&1; then
			ok "mkfs: every file reads back intact after umount + mount"
		else
			not_ok "mkfs: files differ after umount + mount: $(grep -c FAILED "$T/.sum") failed"
			head -10 "$T/.sum" | sed 's/^/#   /'
		fi
		umount "$C/mnt"
	else
		not_ok "mkfs: mount $DEV again"
	fi
	pumount "mkfs: umount again" "$DC"
fi

# ---- 4. copy-up: fio into partial clusters of a top over lower deltas full of known data -----------

D=$T/cow
mkdir -p "$D/img"
MiB=1048576
"$PLOOP" init -s 512M -t none "$D/img/root.hds" >/dev/null 2>"$T/.err" || { not_ok "init: $(cat "$T/.err")"; finish; }
DD=$D/img/DiskDescriptor.xml
MODEL=$T/model.raw

# put F OFFSET LENGTH: random bytes into the served file F (direct I/O) and the model alike.
put() {
	head -c "$3" /dev/urandom >"$T/.chunk"
	dd if="$T/.chunk" of="$1" bs=64K seek="$2" oflag=seek_bytes,direct conv=notrunc,fsync status=none &&
		dd if="$T/.chunk" of="$MODEL" bs=64K seek="$2" oflag=seek_bytes conv=notrunc status=none
}
# masked_cmp A B IOLOG...: A and B are equal in every 4 KiB block no fio write in the logs touched.
masked_cmp() {
	perl -e '
		my ($a, $b, @logs) = @ARGV; my %w;
		for my $l (@logs) {
			open(my $fh, "<", $l) or die "$l: $!";
			while (<$fh>) {
				my @f = split;
				next unless @f >= 4 && $f[-3] eq "write";
				my ($o, $n) = @f[-2, -1];
				for (my $k = int($o / 4096); $k * 4096 < $o + $n; $k++) { $w{$k} = 1 }
			}
		}
		open(my $fa, "<:raw", $a) or die "$a: $!"; open(my $fb, "<:raw", $b) or die "$b: $!";
		my ($blk, $bad, $cmp, @first) = (0, 0, 0);
		while (1) {
			my $na = read($fa, my $x, 1 << 20); my $nb = read($fb, my $y, 1 << 20);
			die "sizes differ\n" if $na != $nb;
			last if !$na;
			for (my $i = 0; $i < $na; $i += 4096, $blk++) {
				next if $w{$blk};
				$cmp++;
				if (substr($x, $i, 4096) ne substr($y, $i, 4096)) { $bad++; push @first, $blk * 4096 if @first < 5 }
			}
		}
		printf "%d blocks fio did not write compared, %d written, %d differ%s\n", $cmp, scalar(keys %w), $bad,
			@first ? " (first at byte offsets @first)" : "";
		exit($bad ? 1 : 0);
	' "$@"
}
COW_JOBS=(--name=cow --offset=0 --size=256M --rw=randwrite --bssplit=4k/50:16k/20:64k/20:256k/10 --io_size=96M)
# Three jobs, each writing every fourth 4 KiB block of the same 128 MiB at 256 MiB (the fourth block
# of each 16 KiB is left to copy-up alone). $1: a prefix for per-job write logs, or nothing.
cow_stride() {
	local j
	echo --iodepth=16 --rw=write:12k --bs=4k --size=128M
	for j in 0 1 2; do
		echo "--name=c$j" "--offset=$((262144 + 4 * j))k"
		[ -n "${1:-}" ] && echo "--write_iolog=$1.c$j.iolog"
	done
}
if pmount "copy-up: mount" "$DD"; then
	F=$(field "$DD" file)
	# Base: all of the disk; then two snapshots with scattered pieces; then the (empty) top.
	head -c $((512 * MiB)) /dev/urandom >"$MODEL"
	dd if="$MODEL" of="$F" bs=1M oflag=direct conv=notrunc,fsync status=none || not_ok "copy-up: filling the base"
	for level in 1 2; do
		"$PLOOP" snapshot "$DD" >/dev/null 2>"$T/.err" || not_ok "copy-up: online snapshot $level: $(cat "$T/.err")"
		for i in $(seq 24); do
			put "$F" $(((RANDOM * 32768 + RANDOM) % (511 * 256) * 4096)) $(((RANDOM % 256 + 1) * 4096)) ||
				not_ok "copy-up: writing level $level"
		done
	done
	"$PLOOP" snapshot "$DD" >/dev/null 2>"$T/.err" || not_ok "copy-up: online snapshot 3: $(cat "$T/.err")"
	if cmp "$F" "$MODEL" >"$T/.cmp" 2>&1; then ok "copy-up: the chain of $(deltas "$DD" | wc -l) deltas reads as the model"; else
		not_ok "copy-up: the chain reads differently from the model: $(head -c 200 "$T/.cmp")"
	fi
	fio_ok "copy-up: fio random writes (4k-256k) into partial clusters of the top, QD32, verify" \
		--filename="$F" "${FIO_COMMON[@]}" --write_iolog="$T/cow.iolog" "${COW_JOBS[@]}"
	# shellcheck disable=SC2046
	fio_ok "copy-up: 3 concurrent jobs in the same clusters of the top, QD16 each, verify" \
		--filename="$F" "${FIO_COMMON[@]}" $(cow_stride "$T/stride")
	pumount "copy-up: umount" "$DD"
fi
checked "copy-up: ploop check -f -c -r of every delta" "$DD"
rm -f "$T/export.raw"
if "$PLOOP" export "$DD" "$T/export.raw" >/dev/null 2>"$T/.err"; then
	ls "$T"/*.iolog >/dev/null 2>&1 || not_ok "copy-up: fio left no iolog"
	if masked_cmp "$T/export.raw" "$MODEL" "$T"/*.iolog >"$T/.mcmp" 2>&1; then
		ok "copy-up: exported disk equals the model outside fio's writes ($(cat "$T/.mcmp"))"
	else
		not_ok "copy-up: exported disk differs from the model outside fio's writes: $(cat "$T/.mcmp")"
	fi
else
	not_ok "copy-up: ploop export: $(cat "$T/.err")"
fi
rm -f "$T/export.raw"
if pmount "copy-up: mount again" "$DD"; then
	F=$(field "$DD" file)
	fio_ok "copy-up: fio's random writes intact after umount + mount" \
		--filename="$F" "${FIO_COMMON[@]}" --verify_only "${COW_JOBS[@]}"
	# shellcheck disable=SC2046
	fio_ok "copy-up: concurrent jobs' writes intact after umount + mount" \
		--filename="$F" "${FIO_COMMON[@]}" --verify_only $(cow_stride)
	pumount "copy-up: umount again" "$DD"
fi
rm -f "$MODEL"

no_leftovers "no FUSE mount, loop device or server left behind"
finish
