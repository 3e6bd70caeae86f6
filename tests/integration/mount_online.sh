#!/usr/bin/env bash
# Online operations on a mounted image set while a writer appends checksummed records with fsync
# (and writes checksummed blob files): snapshot and a read-only view of it, snapshot-merge of the
# top, snapshot-delete of middle snapshots, snapshot-merge -A, resize while the writer holds the
# filesystem (the device grows at once; the filesystem online with CAP_SYS_RESOURCE, else the
# documented refusal and upstream 1.15's unmount/resize2fs/mount once nothing holds it), offline
# resize grow and shrink, compact mounted and unmounted. After each operation: the writer saw no
# error and goes on, every checksum verifies, and after umount every delta passes `ploop check -f -c`
# with its dirty flag clear. Operation times are in the ok lines.
source "$(dirname "$0")/../lib.sh"
source "$ROOT/tests/mount_ops_lib.sh"

# ---- the writer ----------------------------------------------------------------------------------------
# In the background, with its working directory in the mounted filesystem (so it holds it): appends
# records "SEQ RANDOM CHECKSUM" to w/log-GEN, each with fsync, and every 8th record writes a blob file
# (64..512 KiB of random bytes) with fsync. Only after a write is durable does it note it outside the
# image: $T/acked-GEN (the last durable record), $T/blobs.sha (digests of durable blobs),
# $T/times-GEN (when each record was durable). Any failure goes to $T/writer.err and ends it.
HX=0123456789abcdef
GEN=0
WPID=
# rec_sum STRING: the record checksum into REC_SUM (LOG_AWK computes the same).
rec_sum() {
	local s=$1 x=5381 i t
	for ((i = 0; i < ${#s}; i++)); do
		t=${HX%%"${s:i:1}"*}
		x=$(((x * 33 + ${#t} + 1) % 4294967291))
	done
	REC_SUM=$x
}
LOG_AWK='function h(s,  i, x) { x = 5381; for (i = 1; i <= length(s); i++) x = (x * 33 + index("0123456789abcdef", substr(s, i, 1))) % 4294967291; return x }
{ if (NF != 3 || $1 != NR || h($1 $2) != $3) { print "bad record at line " NR ": " substr($0, 1, 80); bad = 1; exit } }
END { if (!bad) print NR }'

writer() {
	local g=$2 n=0 line sz
	trap - EXIT INT TERM
	if ! cd "$1" || ! mkdir -p w; then echo "writer $g: cannot work in $1" >>"$T/writer.err"; exit 1; fi
	while [ ! -e "$T/writer.stop" ]; do
		n=$((n + 1))
		printf -v line '%d %08x%08x%08x' "$n" "$SRANDOM" "$SRANDOM" "$SRANDOM"
		rec_sum "${line/ /}"
		if ! printf '%s %s\n' "$line" "$REC_SUM" |
			dd of="w/log-$g" oflag=append conv=notrunc,fsync status=none 2>>"$T/writer.err"; then
			echo "writer $g: record $n: write or fsync failed" >>"$T/writer.err"
			exit 1
		fi
		echo "$n" >"$T/acked-$g"
		echo "$EPOCHREALTIME" >>"$T/times-$g"
		if [ $((n % 8)) = 0 ]; then
			sz=$(((SRANDOM % 448 + 64) * 1024 + SRANDOM % 1000))
			head -c "$sz" /dev/urandom >"$T/blob-$g"
			if ! dd if="$T/blob-$g" of="w/blob-$g-$n" bs=64K conv=fsync status=none 2>>"$T/writer.err"; then
				echo "writer $g: blob $n: write or fsync failed" >>"$T/writer.err"
				exit 1
			fi
			echo "$(sha256sum <"$T/blob-$g" | cut -d' ' -f1)  w/blob-$g-$n" >>"$T/blobs.sha"
		fi
	done
}
# num_of FILE: the number in a note of the writer (rewritten in place: read until complete).
num_of() {
	local n
	for _ in 1 2 3 4 5 6 7 8 9 10; do
		n=$(cat "$1" 2>/dev/null)
		[ -n "$n" ] && break
		sleep 0.01
	done
	echo "${n:-0}"
}
# acked: the writer's last durable record.
acked() { num_of "$T/acked-$GEN"; }
# wait_records N: until the writer has N more durable records than now (30 s at most).
wait_records() {
	local want=$(($(acked) + $1))
	for _ in $(seq 300); do
		[ "$(acked)" -ge "$want" ] && return 0
		kill -0 "$WPID" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}
start_writer() {
	GEN=$((GEN + 1))
	rm -f "$T/writer.stop"
	echo 0 >"$T/acked-$GEN"
	: >"$T/times-$GEN"
	writer "$1" "$GEN" &
	WPID=$!
	wait_records 5 || not_ok "writer $GEN does not get going ($(head -c 300 "$T/writer.err" 2>/dev/null))"
}
# stop_writer: ends the writer between two records; its exit status (124: it did not stop).
stop_writer() {
	local rc
	[ -n "$WPID" ] || return 0
	touch "$T/writer.stop"
	for _ in $(seq 300); do
		kill -0 "$WPID" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$WPID" 2>/dev/null; then
		kill -9 "$WPID"
		WPID=
		return 124
	fi
	wait "$WPID"
	rc=$?
	WPID=
	return $rc
}
# writer_ok NAME: the writer runs, has reported no error, and goes on (20 more durable records).
writer_ok() {
	if [ -s "$T/writer.err" ]; then
		not_ok "$1 (writer: $(head -c 300 "$T/writer.err" | tr '\n' ' '))"
	elif ! kill -0 "$WPID" 2>/dev/null; then
		not_ok "$1 (the writer has exited)"
	elif ! wait_records 20; then
		not_ok "$1 (the writer makes no progress: $(acked) records)"
	else
		ok "$1"
	fi
}
# writer_stopped NAME: stops the writer; ok when it ended without an error.
writer_stopped() {
	local rc
	stop_writer
	rc=$?
	if [ $rc = 0 ] && [ ! -s "$T/writer.err" ]; then
		ok "$1 ($(acked) records in this run)"
	else
		not_ok "$1 (exit $rc: $(head -c 300 "$T/writer.err" 2>/dev/null | tr '\n' ' '))"
	fi
}
# longest_wait T0 T1 (seconds, EPOCHREALTIME): the writer's longest gap between two durable records
# that overlaps [T0, T1], in ms.
longest_wait() {
	awk -v a="$1" -v b="$2" 'NR > 1 && $1 >= a && p <= b { d = $1 - p; if (d > m) m = d } { p = $1 }
		END { printf "%d", m * 1000 }' "$T/times-$GEN"
}
# mark NAME: keeps what the writer has made durable so far (for a snapshot view taken next).
mark() {
	local g
	cp "$T/blobs.sha" "$T/blobs.$1" 2>/dev/null || : >"$T/blobs.$1"
	for ((g = 1; g <= GEN; g++)); do num_of "$T/acked-$g" >"$T/acked-$g.$1"; done
	echo "$GEN" >"$T/gen.$1"
}

# ---- content -------------------------------------------------------------------------------------------
TAGS=()
# content DIR [exact | MARK]: problems with what DIR should hold (nothing: all is well): every writer
# log checks and holds at least what was acknowledged (exact: exactly that; MARK: as noted by mark
# MARK, for a snapshot view), every blob and every file of put_files checks.
content() {
	local dir=$1 how=${2:-} g out want gens=$GEN sums=$T/blobs.sha tag bad=""
	if [ -n "$how" ] && [ "$how" != exact ]; then
		gens=$(cat "$T/gen.$how")
		sums=$T/blobs.$how
	fi
	for ((g = 1; g <= gens; g++)); do
		if [ -n "$how" ] && [ "$how" != exact ]; then want=$(cat "$T/acked-$g.$how"); else want=$(num_of "$T/acked-$g"); fi
		out=$(awk "$LOG_AWK" "$dir/w/log-$g" 2>&1)
		case $out in
		"" | *[!0-9]*) bad="$bad log-$g: ${out:-unreadable};" ;;
		*)
			if [ "$out" -lt "$want" ] || { [ "$how" = exact ] && [ "$out" != "$want" ]; }; then
				bad="$bad log-$g: $out records, $want acknowledged;"
			fi
			;;
		esac
	done
	if [ -s "$sums" ] && ! out=$(cd "$dir" && sha256sum --quiet -c "$sums" 2>&1); then
		bad="$bad blobs: $(head -c 200 <<<"$out" | tr '\n' ' ');"
	fi
	for tag in "${TAGS[@]}"; do
		[ -n "$how" ] && [ "$how" != exact ] && ! grep -qx "$tag" "$T/tags.$how" && continue
		out=$(cd "$dir" && sha256sum --quiet -c "$T/$tag.sha" 2>&1) || bad="$bad $tag: $(head -c 200 <<<"$out" | tr '\n' ' ');"
	done
	echo "$bad"
}
verify_all() {
	local bad
	bad=$(content "$2" "${3:-}")
	if [ -z "$bad" ]; then ok "$1"; else not_ok "$1:$bad"; fi
}
# put DIR TAG: put_files, remembered for every later verify_all.
put() {
	put_files "$1" "$2"
	TAGS+=("$2")
	printf '%s\n' "${TAGS[@]}" >"$T/tags.now"
}
# snap NAME: an online snapshot (files and writer state noted first); its GUID in SNAP, ms in SNAP_MS.
snap() {
	local t0 w0 w1 rc
	put mC "pre$1"
	mark "$1"
	cp "$T/tags.now" "$T/tags.$1"
	t0=$(now_ms)
	w0=$EPOCHREALTIME
	pl snapshot "$C" >"$T/.out" 2>"$T/.err"
	rc=$?
	SNAP_MS=$(($(now_ms) - t0))
	w1=$EPOCHREALTIME
	wait_records 2	# the first record after the snapshot ends the writer's wait
	SNAP_WAIT=$(longest_wait "$w0" "$w1")
	SNAP=$(sed -n 's/^ploop snapshot \({[0-9a-f-]*}\) has been successfully created$/\1/p' "$T/.out")
	if [ $rc = 0 ] && [ -n "$SNAP" ]; then
		ok "online snapshot $1 while the writer writes (${SNAP_MS} ms; the writer's longest wait ${SNAP_WAIT} ms)"
	else
		not_ok "online snapshot $1 while the writer writes (exit $rc: $(head -c 300 "$T/.err" | tr '\n' ' '))"
	fi
}
# timed NAME CMD...: ok when CMD exits 0, with its time.
timed() {
	local name=$1 t0 rc
	shift
	t0=$(now_ms)
	"$@" >"$T/.out" 2>"$T/.err"
	rc=$?
	T_MS=$(($(now_ms) - t0))
	if [ $rc = 0 ]; then
		ok "$name ($T_MS ms)"
		return 0
	fi
	not_ok "$name (exit $rc after $T_MS ms: $(head -c 300 "$T/.err" | tr '\n' ' '))"
	return 1
}

# online_op NAME CMD...: timed, while the writer writes; also reports the writer's longest wait.
online_op() {
	local name=$1 t0 w0 w1 rc
	shift
	t0=$(now_ms)
	w0=$EPOCHREALTIME
	"$@" >"$T/.out" 2>"$T/.err"
	rc=$?
	T_MS=$(($(now_ms) - t0))
	w1=$EPOCHREALTIME
	wait_records 2
	if [ $rc = 0 ]; then
		ok "$name ($T_MS ms; the writer's longest wait $(longest_wait "$w0" "$w1") ms)"
		return 0
	fi
	not_ok "$name (exit $rc after $T_MS ms: $(head -c 300 "$T/.err" | tr '\n' ' '))"
	return 1
}

shots() {
	tr -d ' \n' <"$1" | grep -o '<Shot>[^S]*</Shot>' |
		sed 's:<Shot><GUID>\([^<]*\)</GUID><ParentGUID>\([^<]*\)</ParentGUID>.*:\1 \2:'
}
parent_of() { shots "$1" | awk -v g="$2" 'tolower($1) == tolower(g) { print $2 }'; }
listed() { pl snapshot-list -H -o uuid "$1" | tr -d ' ' | tr '\n' ' ' | sed 's/ $//'; }
delta_files() { find "$(dirname "$1")" -maxdepth 1 -name 'root.hds*' | wc -l; }
fsize() { stat -c %s "$1"; }
dfsize() { df -B1 --output=size "$1" | tail -1 | tr -d ' '; }
devsize() { blockdev --getsize64 "$1"; }

# cycle NAME: stop the writer, check the content, umount, check every delta, mount, check again,
# start a new writer.
cycle() {
	writer_stopped "$1: the writer ended without an error"
	verify_all "$1: every record, blob and file checks before umount" mC exact
	umount_set "$1: umount" "$C"
	checked "$1: every delta passes check -f -c, dirty flags clear" "$C"
	mount_set "$1: mount again" "$C" -m mC
	verify_all "$1: every record, blob and file checks after mount" mC exact
	start_writer "$RT/mC"
}
# view NAME GUID MARK ABSENT-TAG: snapshot-mount GUID at mS; it holds what was durable at MARK, not
# ABSENT-TAG, refuses writes; snapshot-umount again.
view() {
	local name=$1 g=$2
	timed "$name: snapshot-mount -u $g -m DIR" pl snapshot-mount -u "$g" -m mS "$C"
	remember "$C" "$g"
	if inst "$C" "$g"; then
		check "$name: listed as a read-only snapshot mount" test "$I_MODE" = ro -a "$I_MNT" = "$RT/mS"
	else
		not_ok "$name: listed as a snapshot mount ($(pl list 2>&1 | tr '\n' '|'))"
	fi
	verify_all "$name: the view holds every record, blob and file durable at the snapshot" mS "$3"
	absent "$name: files written after the snapshot are absent" "mS/$4"
	check_not "$name: the view refuses writes" touch mS/new 2>/dev/null
	G=$g UCMD=snapshot-umount umount_set "$name: snapshot-umount -u" "$C" -u "$g" "$C"
	check "$name: the top is still mounted" test "$(findmnt -n -o TARGET --mountpoint "$RT/mC")" = "$RT/mC"
}

at_exit stop_writer
mkdir -p C mC mS
MNTS=("$RT/mC" "$RT/mS")
C=$RT/C/DiskDescriptor.xml
CAP_RES=false
(($(sed -n 's/^CapEff:[[:space:]]*//p' /proc/self/status | sed 's/^/0x/') >> 24 & 1)) && CAP_RES=true

must "init -s 512M -t ext4" pl init -s 512M -t ext4 C/root.hds
mount_set "mount -m DIR" "$C" -m mC
inst "$C"
DEV=$I_DEV PART=$I_PART
put mC base
start_writer "$RT/mC"
writer_ok "the writer runs"

# ---- online snapshot, and a view of it ----------------------------------------------------------------------
snap S1
S1=$SNAP
check "online snapshot: snapshot-list shows S1 under the top" test "$(listed "$C")" = "$S1 $TOPG"
check "online snapshot: S1 is the top's parent" test "$(parent_of "$C" "$TOPG")" = "$S1"
check "online snapshot: 2 deltas" test "$(ndeltas "$C")" = 2
writer_ok "online snapshot: the writer saw no error and goes on"
put mC postS1
verify_all "online snapshot: every record, blob and file checks while mounted" mC
view "snapshot view S1" "$S1" S1 postS1
writer_ok "snapshot view S1: the writer saw no error and goes on"
cycle "after the online snapshot"

# ---- online merge of the top into its parent --------------------------------------------------------------------
online_op "online snapshot-merge of the top into S1 while the writer writes" pl snapshot-merge "$C"
check "snapshot-merge: one delta left" test "$(ndeltas "$C")" = 1 -a "$(delta_files "$C")" = 1
check "snapshot-merge: snapshot-list shows only the top" test "$(listed "$C")" = "$TOPG"
writer_ok "snapshot-merge: the writer saw no error and goes on"
verify_all "snapshot-merge: every record, blob and file checks while mounted" mC
cycle "after the online merge"

# ---- online snapshot-delete of middle snapshots ------------------------------------------------------------
snap S2
S2=$SNAP
snap S3
S3=$SNAP
snap S4
S4=$SNAP
put mC postS4
check "three online snapshots: 4 deltas" test "$(ndeltas "$C")" = 4
online_op "online snapshot-delete of middle snapshot S3 (its child S4 is not the top; 4 deltas -> 3)" \
	pl snapshot-delete -u "$S3" "$C"
check "snapshot-delete S3: 3 deltas" test "$(ndeltas "$C")" = 3 -a "$(delta_files "$C")" = 3
check "snapshot-delete S3: S3 gone, S4 is now S2's child" \
	test "$(listed "$C")" = "$S2 $S4 $TOPG" -a "$(parent_of "$C" "$S4")" = "$S2"
writer_ok "snapshot-delete S3: the writer saw no error and goes on"
view "snapshot view S4 after S3 went" "$S4" S4 postS4
online_op "online snapshot-delete of middle snapshot S4 (its child is the top; 3 deltas -> 2)" \
	pl snapshot-delete -u "$S4" "$C"
check "snapshot-delete S4: 2 deltas" test "$(ndeltas "$C")" = 2 -a "$(delta_files "$C")" = 2
check "snapshot-delete S4: the top is S2's child" test "$(listed "$C")" = "$S2 $TOPG" -a "$(parent_of "$C" "$TOPG")" = "$S2"
writer_ok "snapshot-delete S4: the writer saw no error and goes on"
refuse "snapshot-delete of the running top is refused" any pl snapshot-delete -u "$TOPG" "$C"
verify_all "snapshot-delete: every record, blob and file checks while mounted" mC
view "snapshot view S2 after the deletions" "$S2" S2 preS3
cycle "after the online deletes"

# ---- online merge -A ---------------------------------------------------------------------------------------
snap S5
check "snapshot S5: 3 deltas" test "$(ndeltas "$C")" = 3
online_op "online snapshot-merge -A while the writer writes (3 deltas -> 1)" pl snapshot-merge -A "$C"
check "merge -A: one delta, only the top listed" test "$(ndeltas "$C")" = 1 -a "$(delta_files "$C")" = 1 -a "$(listed "$C")" = "$TOPG"
writer_ok "merge -A: the writer saw no error and goes on"
verify_all "merge -A: every record, blob and file checks while mounted" mC
cycle "after merge -A"

# ---- online resize (grow) while the writer holds the filesystem ------------------------------------------------
inst "$C"
DEV=$I_DEV PART=$I_PART
part0=$(devsize "$PART")
df0=$(dfsize mC)
t0=$(now_ms)
pl resize -s 1G "$C" >"$T/.out" 2>"$T/.err"
rc=$?
ms=$(($(now_ms) - t0))
part1=$(devsize "$PART")
if $CAP_RES; then
	check "resize while mounted: the disk device is 1G at once" test "$(devsize "$DEV")" = $((1024 * MiB))
	check "resize while mounted: the partition device grew at once ($part0 -> $part1 bytes)" \
		test "$part1" -gt $((part0 + 500 * MiB))
	check "resize while mounted: info -s reports 1G" grep -qx "size:		2097152" <(pl info -s "$C")
	if [ $rc = 0 ]; then ok "online resize to 1G with CAP_SYS_RESOURCE ($ms ms)"; else
		not_ok "online resize to 1G with CAP_SYS_RESOURCE (exit $rc: $(head -c 300 "$T/.err"))"
	fi
	check "online resize: df grows while mounted ($df0 -> $(dfsize mC))" test "$(dfsize mC)" -gt $((df0 + 400 * MiB))
	writer_ok "online resize: the writer saw no error and goes on"
else
	if [ $rc = 46 ] && [ "$(wc -l <"$T/.err")" = 1 ] && grep -q CAP_SYS_RESOURCE "$T/.err"; then
		ok "resize without CAP_SYS_RESOURCE while the writer holds the filesystem: exit 46, one line naming CAP_SYS_RESOURCE ($ms ms)"
	else
		not_ok "resize without CAP_SYS_RESOURCE while the writer holds the filesystem: wanted exit 46 and one line naming CAP_SYS_RESOURCE (exit $rc: $(head -c 300 "$T/.err" | tr '\n' '|'))"
	fi
	# Unmounted before the disk grows: refused with nothing changed.
	check "... nothing changed: the partition device kept its size" test "$part1" = "$part0"
	check "... nothing changed: info -s does not report 1G" bash -c "! grep -qx 'size:		2097152' <('$PLOOP' info -s '$C')"
	check "resize without CAP_SYS_RESOURCE: the filesystem is still mounted where it was" \
		test "$(findmnt -n -o SOURCE --mountpoint "$RT/mC")" = "$PART"
	writer_ok "resize without CAP_SYS_RESOURCE: the writer saw no error and goes on"
	writer_stopped "resize: the writer ended without an error"
	timed "resize once nothing holds the filesystem (upstream's unmount, resize2fs, mount)" pl resize -s 1G "$C"
	check "resize fallback: df grew ($df0 -> $(dfsize "$RT/mC"))" test "$(dfsize "$RT/mC")" -gt $((df0 + 400 * MiB))
	check "resize fallback: mounted again at the same place on the same device" \
		test "$(findmnt -n -o SOURCE --mountpoint "$RT/mC")" = "$PART"
	verify_all "resize fallback: every record, blob and file checks" mC exact
	start_writer "$RT/mC"
fi
cycle "after the online resize"

# ---- offline resize: grow, then shrink ---------------------------------------------------------------------
writer_stopped "offline resize: the writer ended without an error"
umount_set "offline resize: umount" "$C"
timed "offline resize grow to 1536M" pl resize -s 1536M "$C"
checked "offline grow: every delta checks clean" "$C"
mount_set "offline grow: mount" "$C" -m mC
inst "$C"
check "offline grow: the disk is 1536M" test "$(devsize "$I_DEV")" = $((1536 * MiB))
df1=$(dfsize mC)
check "offline grow: df shows the larger filesystem ($df1 bytes)" test "$df1" -gt $((1300 * MiB))
verify_all "offline grow: every record, blob and file checks" mC exact
# Fill most of the disk (so that data lies past the new end), delete, shrink.
dd if=/dev/zero of=mC/fill bs=1M count=900 conv=fsync status=none
rm mC/fill
umount_set "shrink: umount" "$C"
size0=$(fsize C/root.hds)
timed "offline resize shrink to 768M (no snapshots)" pl resize -s 768M "$C"
size1=$(fsize C/root.hds)
check "shrink: the image file is smaller ($size0 -> $size1 bytes)" test "$size1" -lt "$size0"
check "shrink: info -s reports 768M" grep -qx "size:		1572864" <(pl info -s "$C")
checked "shrink: every delta checks clean" "$C"
mount_set "shrink: mount" "$C" -m mC
inst "$C"
check "shrink: the disk is 768M" test "$(devsize "$I_DEV")" = $((768 * MiB))
check "shrink: df shows the smaller filesystem ($(dfsize mC) bytes)" test "$(dfsize mC)" -lt $((768 * MiB)) -a "$(dfsize mC)" -gt $((600 * MiB))
verify_all "shrink: every record, blob and file checks" mC exact
umount_set "shrink: umount" "$C"
mount_set "shrink: mount with a snapshot" "$C" -m mC
pl snapshot "$C" >/dev/null 2>&1
umount_set "shrink: umount with a snapshot" "$C"
before=$(cd C && ls -A && sha256sum DiskDescriptor.xml)
refuse "shrink with a snapshot is refused" any pl resize -s 700M "$C"
check "refused shrink changed nothing" test "$(cd C && ls -A && sha256sum DiskDescriptor.xml)" = "$before"
must "merge the snapshot offline" pl snapshot-merge "$C"

# ---- compact, mounted and unmounted ---------------------------------------------------------------------------
mount_set "compact: mount" "$C" -m mC
dd if=/dev/zero of=mC/junk bs=1M count=400 conv=fsync status=none
size0=$(fsize C/root.hds)
rm mC/junk
timed "compact while mounted, right after the delete" pl compact "$C"
gave1=$(sed -n 's/^compact: the image gave back \([0-9]*\) bytes$/\1/p' "$T/.out")
size1=$(fsize C/root.hds)
sync -f mC
timed "compact while mounted again, after syncfs" pl compact "$C"
gave2=$(sed -n 's/^compact: the image gave back \([0-9]*\) bytes$/\1/p' "$T/.out")
size2=$(fsize C/root.hds)
check "compact while mounted: the image file shrank by the 400M deleted ($size0 -> $size1 -> $size2 bytes; reported ${gave1:-?} + ${gave2:-?})" \
	test $((size0 - size2)) -gt $((350 * MiB))
check "compact right after rm (no sync in between) gives the space back ($((size0 - size1)) bytes)" \
	test $((size0 - size1)) -gt $((350 * MiB))
verify_all "compact while mounted: every record, blob and file checks" mC exact
start_writer "$RT/mC"
dd if=/dev/zero of=mC/junk bs=1M count=200 conv=fsync status=none
size0=$(fsize C/root.hds)
rm mC/junk
sync -f mC
online_op "compact while mounted, while the writer writes" pl compact "$C"
gave=$(sed -n 's/^compact: the image gave back \([0-9]*\) bytes$/\1/p' "$T/.out")
size1=$(fsize C/root.hds)
check "compact while the writer writes: the image file shrank by the 200M deleted ($size0 -> $size1 bytes; reported ${gave:-?})" \
	test $((size0 - size1)) -gt $((150 * MiB))
writer_ok "compact: the writer saw no error and goes on"
verify_all "compact: every record, blob and file checks while mounted" mC
cycle "after the online compact"
dd if=/dev/zero of=mC/junk bs=1M count=300 conv=fsync status=none
rm mC/junk
writer_stopped "offline compact: the writer ended without an error"
umount_set "offline compact: umount" "$C"
size0=$(fsize C/root.hds)
timed "compact unmounted (ext4 bitmap through libext2fs)" pl compact "$C"
gave=$(sed -n 's/^compact: the image gave back \([0-9]*\) bytes$/\1/p' "$T/.out")
size1=$(fsize C/root.hds)
check "offline compact: the image file shrank by the 300M deleted ($size0 -> $size1 bytes, reported ${gave:-?})" \
	test $((size0 - size1)) -gt $((250 * MiB))
check "offline compact: the reported count is what the file lost" test "${gave:-x}" = $((size0 - size1))
checked "offline compact: every delta checks clean" "$C"
mount_set "offline compact: mount" "$C" -m mC
verify_all "offline compact: every record, blob and file checks" mC exact
inst "$C" && must "offline compact: e2fsck -fn is clean" e2fsck -fn "$I_PART"
umount_set "final umount" "$C"
checked "final: every delta checks clean" "$C"

# ---- growing a disk that is being written with direct I/O, step after step ----
# Each write that completes while the kernel asks the server for the file's attributes makes the
# kernel drop the answer and keep the old size, which then cuts reads at the old end: the new end of
# the disk read as EIO and the partition table could not be written (6 of 12 resizes failed so
# before the server read the size back until the kernel had it). The device itself is written (no
# filesystem: without CAP_SYS_RESOURCE a mounted one in use is not grown at all).
mkdir -p G
GD=$RT/G/DiskDescriptor.xml
must "grow under load: init -s 256M -t none" pl init -s 256M -t none G/root.hds
mount_set "grow under load: mount" "$GD"
inst "$GD"
fio --name=w --filename="$I_DEV" --size=100M --rw=randwrite --bs=4k --iodepth=16 --ioengine=io_uring \
	--direct=1 --time_based --runtime=120 >/dev/null 2>&1 &
gpid=$!
at_exit "kill $gpid"
sleep 1
bad=""
for step in 1 2 3 4 5 6 7 8; do
	pl resize -s $((256 + step * 32))M "$GD" >/dev/null 2>"$T/.err"
	rc=$?
	if [ $rc != 0 ]; then bad+=" step $step: exit $rc ($(head -c 120 "$T/.err"));"; continue; fi
	sz=$(devsize "$I_DEV")
	[ "$sz" = $(((256 + step * 32) * MiB)) ] || bad+=" step $step: disk is $sz bytes;"
	dd if="$I_DEV" of=/dev/null bs=4096 count=1 skip=$((sz / 4096 - 1)) iflag=direct status=none 2>/dev/null ||
		bad+=" step $step: the last block does not read;"
done
kill $gpid 2>/dev/null
wait $gpid 2>/dev/null
check "grow under load: 8 online resizes during direct writes, each disk end readable${bad:+ -$bad}" test -z "$bad"
umount_set "grow under load: umount" "$GD"
checked "grow under load: every delta checks clean" "$GD"
# snapshotted NAME DIR: a mounted 64M set in DIR with 1 MiB of "A" at 0 in its base and 1 MiB of
# "B" at 1 MiB in the top of an online snapshot ($T/DIRA, $T/DIRB, $T/DIRC hold the patterns);
# fails unless all of it worked.
snapshotted() {
	local name=$1 dir=$2 dd=$RT/$2/DiskDescriptor.xml x
	mkdir -p "$dir"
	IDS+=("$(run_id "$dd")")
	for x in A B C; do yes $x | head -c $MiB >"$T/$dir$x"; done
	must "$name: init -s 64M -t none" pl init -s 64M -t none "$dir/root.hds" &&
		mount_set "$name: mount" "$dd" && inst "$dd" &&
		dd if="$T/${dir}A" of="$I_DEV" bs=1M seek=0 oflag=direct status=none &&
		must "$name: online snapshot" pl snapshot "$dd" &&
		dd if="$T/${dir}B" of="$I_DEV" bs=1M seek=1 oflag=direct status=none
}
# ---- online merge whose child file cannot be removed -------------------------------------------------
# The descriptor was stored without the child (the merge is done), then removing its file failed
# (EBUSY here: something is mounted over it) and the server went on serving the old chain: every
# write after that went into the child, a file the descriptor no longer names, and was lost at umount.
UD=$RT/U/DiskDescriptor.xml
if snapshotted "merge, child busy" U; then
	uchild=$(deltas "$UD" | tail -n 1)
	touch "$T/uempty"
	mount --bind "$T/uempty" "$uchild" && at_exit "umount -l '$uchild'"
	refuse "merge, child busy: snapshot-merge reports the file it could not remove" 35 pl snapshot-merge "$UD"
	check "... and the descriptor names one image" test "$(ndeltas "$UD")" = 1
	dd if="$T/UC" of="$I_DEV" bs=1M seek=2 oflag=direct status=none
	umount_set "merge, child busy: umount" "$UD"
	umount "$uchild" && rm -f "$uchild"
	checked "merge, child busy: every delta checks clean" "$UD"
	pl export "$UD" "$T/u.raw" >/dev/null 2>&1
	check "merge, child busy: what was written after the merge is there" \
		cmp <(cat "$T/UA" "$T/UB" "$T/UC") <(head -c $((3 * MiB)) "$T/u.raw")
fi
# ---- discard after an online merge of the top failed -------------------------------------------------
# The merge had copied the top's clusters into the parent's file when it failed (here: the descriptor
# could not be stored, injected with gdb); the parent stays marked temporary and the next mount
# completes the merge. A discard of a cluster only the top held (as the server sees the chain) then
# punched it out of the top: the recovery merge kept the parent's copy, and the discarded data was
# back after the next mount. The top now keeps zeros there while its parent may hold more than seen.
if command -v gdb >/dev/null; then
	VD=$RT/V/DiskDescriptor.xml
	if snapshotted "failed merge, discard" V; then
		printf '%s\n' 'set pagination off' 'break ploop_merge_commit' 'continue' \
			'set var dd->path = "/nonexistent/DiskDescriptor.xml"' detach quit >"$T/v.gdb"
		gdb -q -p "$I_PID" -batch -x "$T/v.gdb" >"$T/v.gdbout" 2>&1 &
		gpid=$!
		for _ in $(seq 100); do grep -q '^Breakpoint 1 at' "$T/v.gdbout" && break; sleep 0.1; done
		refuse "failed merge, discard: snapshot-merge fails (injected)" any pl snapshot-merge "$VD"
		wait $gpid
		blkdiscard -o $MiB -l $MiB "$I_DEV"
		umount_set "failed merge, discard: umount" "$VD"
		if mount_set "failed merge, discard: mount again (completes the merge)" "$VD"; then
			inst "$VD"
			dd if="$I_DEV" of="$T/v.got" bs=1M count=2 iflag=direct status=none
			check "failed merge, discard: the discarded cluster reads as zeros" \
				cmp <(cat "$T/VA"; head -c $MiB /dev/zero) "$T/v.got"
			umount_set "failed merge, discard: umount again" "$VD"
		fi
		checked "failed merge, discard: every delta checks clean" "$VD"
	fi
else
	not_ok "failed merge, discard: gdb is missing (make deps installs it)"
fi
finish
