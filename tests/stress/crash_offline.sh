#!/usr/bin/env bash
# SIGKILL during offline ploop operations, with real processes (tests/unit/test_crash.c does the same
# with injected faults at every write point). For each scenario: a golden image set is made once, the
# operation is run to completion on a copy (its duration and its after-state), then each round runs it
# on a fresh copy, kills it with SIGKILL after a random delay in [0, duration], and then
#   (a) runs the next command, as a user would (a read-write mount and umount: it completes or rolls
#       back what a crash interrupted; a server the killed command started is stopped by umount),
#   (b) `ploop check -f -c DiskDescriptor.xml` must succeed, and DiskDescriptor.xml's Disk_size must be
#       the size in the top delta's header,
#   (c) the content must be the before-state or the after-state (the before-state for operations that
#       keep it: merge, delete, convert, compact, grow except its size).
# Files a killed command left that the descriptor does not name (root.hds.import, convert's
# root.hds.tmp) are reported as notes, not failures.
# Not part of `make test`: slow and timing-dependent. Run as root after `make`:
#   tests/stress/crash_offline.sh [-n ROUNDS] [SCENARIO...]     (default 20 rounds, every scenario)
# Scratch in $CRASH_DIR (default /var/tmp/crash, about 3 GB), removed at the end; logs of failing
# rounds are kept in $CRASH_DIR.fail. Exit status 1 if any round failed.
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
P=$ROOT/build/bin/ploop
PIO=$ROOT/build/bin/ploop-io
S=${CRASH_DIR:-/var/tmp/crash}
FAILDIR=$S.fail
ROUNDS=20
if [ "${1:-}" = -n ]; then ROUNDS=$2; shift 2; fi
ALL="snapshot merge_top merge_mid merge_all delete_mid switch grow grow_bat64k grow_bat1m
convert_prealloc convert_raw convert_v1 convert_v2 compact shrink import"
SCEN=${*:-$ALL}
MNT=$S/mnt
G=$S/gold
W=$S/work
failures=0

cleanup() {
	mountpoint -q "$MNT" && umount "$MNT"
	for dd in "$W/DiskDescriptor.xml" "$G"/*/DiskDescriptor.xml; do
		[ -e "$dd" ] && "$P" list -H 2>/dev/null | grep -qF "$dd" && "$P" umount "$dd" >/dev/null 2>&1
	done
	rm -rf "$S"
	rmdir "$FAILDIR" 2>/dev/null
}
trap cleanup EXIT
trap 'exit 130' INT TERM
rm -rf "$S" && mkdir -p "$S" "$MNT" "$G" "$FAILDIR" || exit 1
head -c 512M /dev/urandom >"$S/rand" || exit 1

# put DD OFFSET MIB: MIB MiB of random data at OFFSET (bytes) into the set's top.
put() { head -c "$(($3 << 20))" "$S/rand" | "$PIO" write "$1" "$2" || exit 1; }
run() { exec "$P" "$@"; }
# snap DD: takes a snapshot, prints the GUID of the old top.
snap() { local u; u=$(cat /proc/sys/kernel/random/uuid); "$P" snapshot -u "$u" "$1" >/dev/null || exit 1; echo "{$u}"; }
size_of() { "$P" info -s "$1" | sed -n 's/^size:[[:space:]]*//p'; }

# Content digests. disk: the whole virtual disk. prefix: the first $OLD bytes and the disk size (grow).
# files: the files of the ext4 inside (read-only mount), and the disk size.
content_disk() { "$P" export "$1" - | sha256sum | cut -c1-16; }
content_prefix() {
	local tail
	tail=$("$P" map -j "$1" | awk -v o="$OLD" -F'[:,]' '/"data": true/ { if ($2 + $4 > o) n++ } END { print n ? "tail-allocated" : "tail-empty" }')
	echo "$(size_of "$1") $("$PIO" read "$1" 0 "$OLD" | sha256sum | cut -c1-16) $tail"
}
content_files() {
	local out rc
	"$P" mount -r -m "$MNT" "$1" >/dev/null 2>"$S/mnt.err" || { echo "MOUNT-FAILED $(head -c 200 "$S/mnt.err")"; return; }
	out=$(cd "$MNT" && find . -type f ! -name '.balloon-*' -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
	"$P" umount "$1" >/dev/null 2>&1 || echo "UMOUNT-FAILED"
	echo "$(size_of "$1") $out"
}

# Scenarios: setup_X DIR builds the golden set (DIR/DiskDescriptor.xml), op_X DIR is the command
# (run in the background and killed), CONTENT_X the digest function.
setup_base() { # DIR SIZE BS MIB [VER]: one delta with MIB MiB of data
	"$P" init -s "$2" -b "$3" -v "${5:-2}" -t none "$1/root.hds" >/dev/null || exit 1
	put "$1/DiskDescriptor.xml" 0 "$4"
}
setup_snapshot() { setup_base "$1" 1T 64K 256; snap "$1/DiskDescriptor.xml" >/dev/null; put "$1/DiskDescriptor.xml" $((128 << 20)) 256; }
op_snapshot() { run snapshot "$1/DiskDescriptor.xml"; }
setup_merge_top() { setup_base "$1" 1G 1M 256; snap "$1/DiskDescriptor.xml" >/dev/null; put "$1/DiskDescriptor.xml" $((128 << 20)) 256; }
op_merge_top() { run snapshot-merge "$1/DiskDescriptor.xml"; }
setup_chain3() { # DIR [SIZE BS]: base, middle, top with overlapping data; DIR/mid: the middle's GUID
	setup_base "$1" "${2:-1G}" "${3:-1M}" 300
	snap "$1/DiskDescriptor.xml" >/dev/null
	put "$1/DiskDescriptor.xml" $((100 << 20)) 300
	snap "$1/DiskDescriptor.xml" >"$1/mid"
	put "$1/DiskDescriptor.xml" $((500 << 20)) 200
}
setup_merge_mid() { setup_chain3 "$1"; }
op_merge_mid() { run snapshot-merge -u "$(cat "$1/mid")" "$1/DiskDescriptor.xml"; }
setup_merge_all() { setup_chain3 "$1"; }
op_merge_all() { run snapshot-merge -A "$1/DiskDescriptor.xml"; }
setup_delete_mid() { setup_chain3 "$1"; }
op_delete_mid() { run snapshot-delete -u "$(cat "$1/mid")" "$1/DiskDescriptor.xml"; }
setup_switch() { setup_chain3 "$1"; }
op_switch() { run snapshot-switch -u "$(cat "$1/mid")" "$1/DiskDescriptor.xml"; }
setup_grow() { setup_base "$1" 512M 1M 400; }
op_grow() { run grow -s 2G "$1/DiskDescriptor.xml"; }
setup_grow_bat64k() { setup_base "$1" 512M 64K 500; }
op_grow_bat64k() { run grow -s 256G "$1/DiskDescriptor.xml"; }
setup_grow_bat1m() { setup_base "$1" 512M 1M 500; }
op_grow_bat1m() { run grow -s 60T "$1/DiskDescriptor.xml"; }
setup_convert_prealloc() { setup_base "$1" 1G 1M 300; }
op_convert_prealloc() { run convert -f preallocated "$1/DiskDescriptor.xml"; }
setup_convert_raw() { setup_base "$1" 1G 1M 400; }
op_convert_raw() { run convert -f raw "$1/DiskDescriptor.xml"; }
setup_convert_v1() { setup_chain3 "$1" 256G 64K; }
op_convert_v1() { run convert -v 1 "$1/DiskDescriptor.xml"; }
setup_convert_v2() {
	setup_base "$1" 256G 64K 300 1
	snap "$1/DiskDescriptor.xml" >/dev/null
	put "$1/DiskDescriptor.xml" $((100 << 20)) 300
}
op_convert_v2() { run convert -v 2 "$1/DiskDescriptor.xml"; }
setup_ext4() { # DIR SIZE: ext4 inside, 600 MiB of files of which 400 deleted
	"$P" init -s "$2" -t ext4 "$1/root.hds" >/dev/null || exit 1
	"$P" mount -m "$MNT" "$1/DiskDescriptor.xml" >/dev/null || exit 1
	for i in $(seq 0 11); do head -c 50M "$S/rand" >"$MNT/f$i" || exit 1; echo "$i" >>"$MNT/f$i"; done
	sync
	rm -f "$MNT"/f[2-9] "$MNT"/f10
	"$P" umount "$1/DiskDescriptor.xml" >/dev/null || exit 1
}
setup_compact() { setup_ext4 "$1" 1G; }
op_compact() { run compact "$1/DiskDescriptor.xml"; }
setup_shrink() { setup_ext4 "$1" 1G; }
op_shrink() { run resize -s 700M "$1/DiskDescriptor.xml"; }
setup_import() { head -c 400M "$S/rand" >"$1/in.raw"; truncate -s 1G "$1/in.raw"; }
op_import() { run import -b 64K "$1/in.raw" "$1/root.hds"; }
content_import() {
	if [ ! -e "$1/DiskDescriptor.xml" ] && [ ! -e "$1/root.hds" ]; then echo none; return; fi # root.hds.import may stay
	content_disk "$1/DiskDescriptor.xml"
}

content_of() { # SCENARIO DIR
	case $1 in
	grow*) content_prefix "$2/DiskDescriptor.xml" ;;
	snapshot | convert_v*) OLD=$((1 << 30)) content_prefix "$2/DiskDescriptor.xml" ;;
	compact | shrink) content_files "$2/DiskDescriptor.xml" ;;
	import) content_import "$2" ;;
	*) content_disk "$2/DiskDescriptor.xml" ;;
	esac
}
keeps_content() { case $1 in merge* | delete* | convert* | compact | grow*) return 0 ;; esac; return 1; }

# recover DIR: the next command (read-write mount + umount), also stopping a server the killed
# command started; prints what it did when it was not a plain success.
recover() {
	local dd=$1/DiskDescriptor.xml i rc
	if [ ! -e "$dd" ] && [ -e "$1/root.hds" ]; then
		# import killed after its image was whole but before its descriptor was written
		"$P" restore-descriptor "$1" "$1/root.hds" >"$S/rec.out" 2>&1 || { echo "restore-descriptor: exit $?"; return 1; }
		echo "restore-descriptor"
	fi
	[ -e "$dd" ] || return 0
	if "$P" list -H 2>/dev/null | grep -qF "$dd"; then
		# The killed command's children (e2fsck, resize2fs) go on and hold the partition until they
		# finish: umount says busy (46) meanwhile.
		for i in $(seq 1 60); do
			"$P" umount "$dd" >"$S/rec.out" 2>&1
			rc=$?
			[ $rc = 46 ] || break
			sleep 1
		done
		[ $rc = 0 ] || echo "umount of the left-over server: exit $rc $(head -c 300 "$S/rec.out")"
		[ "$i" -gt 1 ] && echo "left-over server: umount busy for ${i}s (orphaned e2fsck/resize2fs)"
	fi
	"$P" mount "$dd" >"$S/rec.out" 2>&1 || { echo "next command (mount): exit $? $(tr '\n' ' ' <"$S/rec.out" | head -c 300)"; return 1; }
	grep -qi "complet\|restor\|remov\|roll" "$S/rec.out" && echo "recovery: $(tr '\n' ' ' <"$S/rec.out" | head -c 200)"
	"$P" umount "$dd" >"$S/rec.out" 2>&1 || { echo "umount: exit $? $(head -c 300 "$S/rec.out")"; return 1; }
}

# leftovers DIR: files in DIR that its descriptor does not name (a killed command's debris).
leftovers() {
	local f named=" "
	[ -e "$1/DiskDescriptor.xml" ] && named=" $(sed -n 's:.*<File>\(.*\)</File>.*:\1:p' "$1/DiskDescriptor.xml" | tr '\n' ' ')"
	for f in "$1"/* "$1"/.[!.]*; do
		[ -e "$f" ] || continue
		f=${f##*/}
		case $f in DiskDescriptor.xml | DiskDescriptor.xml.lck | mid | in.raw) continue ;; esac
		case $named in *" $f "*) continue ;; esac
		printf '%s ' "$f"
	done
}

run_scenario() {
	local n_left=0 sc=$1 gd=$G/$1 t0 t1 dur before after got rc round msg ck pre ok_before=0 ok_after=0
	declare -A precheck=()
	rm -rf "$gd" && mkdir -p "$gd"
	MID=
	(setup_"$sc" "$gd") || { echo "$sc: setup failed"; failures=$((failures + 1)); return; }
	OLD=$(size_of "$gd/DiskDescriptor.xml" 2>/dev/null); OLD=$((${OLD:-0} * 512))
	export OLD
	before=$(content_of "$sc" "$gd")
	rm -rf "$W" && cp -a --sparse=always "$gd" "$W"
	sync
	t0=$(date +%s%N)
	(op_"$sc" "$W") >"$S/op.out" 2>&1 || { echo "$sc: the uninterrupted operation failed: $(head -c 300 "$S/op.out")"; failures=$((failures + 1)); return; }
	t1=$(date +%s%N)
	dur=$(((t1 - t0) / 1000000))
	after=$(content_of "$sc" "$W")
	keeps_content "$sc" && [ "$sc" != import ] && case $sc in grow*) ;; *) [ "$before" = "$after" ] || echo "$sc: WARNING after-state differs from before-state for a content-keeping op" ;; esac
	echo "== $sc: ${dur} ms uninterrupted; before=$before after=$after"
	for round in $(seq 1 "$ROUNDS"); do
		rm -rf "$W" && cp -a --sparse=always "$gd" "$W"
		sync
		local delay=$((RANDOM * 32768 + RANDOM))
		delay=$((delay % (dur + 1)))
		op_"$sc" "$W" >"$S/op.out" 2>&1 &
		local pid=$!
		sleep "$(printf '%d.%03d' $((delay / 1000)) $((delay % 1000)))"
		kill -9 "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
		rc=$?
		msg=""
		pre=$( [ -e "$W/DiskDescriptor.xml" ] && { "$P" list -H 2>/dev/null | grep -qF "$W/DiskDescriptor.xml" && echo server-left; } )
		# What a check sees before anything else runs (informational).
		if [ -e "$W/DiskDescriptor.xml" ] && [ -z "$pre" ]; then
			cp -a --sparse=always "$W" "$S/pre" 2>/dev/null
			"$P" check -f -c -r "$S/pre/DiskDescriptor.xml" >"$S/ck.out" 2>&1
			ck=$?
			precheck[$ck]=$((${precheck[$ck]:-0} + 1))
			rm -rf "$S/pre"
		fi
		msg=$(recover "$W")
		local rrc=$?
		if [ -e "$W/DiskDescriptor.xml" ]; then
			"$P" check -f -c "$W/DiskDescriptor.xml" >"$S/ck.out" 2>&1
			ck=$?
			# (b) the descriptor tells the size the top delta's header has
			local dsize hsize
			dsize=$(sed -n 's:.*<Disk_size>\(.*\)</Disk_size>.*:\1:p' "$W/DiskDescriptor.xml")
			hsize=$(size_of "$W/DiskDescriptor.xml")
			if [ $ck = 0 ] && [ "$dsize" != "$hsize" ]; then
				ck=99
				echo "Disk_size $dsize but the top delta holds $hsize sectors" >"$S/ck.out"
			fi
		else
			ck=0
		fi
		got=$(content_of "$sc" "$W")
		local left
		left=$(leftovers "$W")
		[ -n "$left" ] && { n_left=$((n_left + 1)); msg="$msg left behind: $left"; }
		local verdict=ok
		if [ $rrc != 0 ] || [ $ck != 0 ]; then verdict=FAIL
		elif [ "$got" = "$before" ]; then ok_before=$((ok_before + 1))
		elif [ "$got" = "$after" ] && ! keeps_content "$sc"; then ok_after=$((ok_after + 1))
		elif [ "$got" = "$after" ] && [ "${sc#grow}" != "$sc" ]; then ok_after=$((ok_after + 1))
		else verdict=FAIL
		fi
		if [ $verdict = FAIL ]; then
			failures=$((failures + 1))
			echo "  FAIL $sc round $round: killed after ${delay} ms (op exit $rc); $msg; check exit $ck: $(tr '\n' ' ' <"$S/ck.out" | head -c 300); content $got"
			rm -rf "$FAILDIR/$sc.$round" && cp -a --sparse=always "$W" "$FAILDIR/$sc.$round"
		elif [ -n "$msg" ]; then
			echo "  note $sc round $round (${delay} ms): $msg"
		fi
	done
	local pc=""
	for k in "${!precheck[@]}"; do pc="$pc rc$k:${precheck[$k]}"; done
	echo "== $sc: $ROUNDS rounds, $ok_before before-state, $ok_after after-state, check -r straight after the kill:$pc; $n_left rounds left files behind"
	rm -rf "$W" "$gd"
}

for sc in $SCEN; do run_scenario "$sc"; done
echo "failures: $failures"
exit $((failures > 0))
