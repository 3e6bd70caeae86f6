#!/usr/bin/env bash
# Online operations on image sets of other shapes than mount_online's single line of snapshots: an
# online snapshot of a raw-based set (the server goes on read-write, data reads back, umount is
# clean) and one that fails half-way (the old chain served read-write, the descriptor unchanged);
# compact with a snapshot (mounted, the top does not grow; unmounted, what it holds itself is given
# back), write-zeroes over snapshot data (zeros read back); snapshot-delete while mounted of a snapshot with
# two children (marked temporary) and of a leaf outside the served chain (removed), as offline; an
# online merge refused where the parent's BAT must grow; unreferenced clusters at the end of the top
# (a crash leaves them) given back at mount; resize of a disk without a filesystem.
# Every mount this test makes is undone by the EXIT trap, however the test ends.
source "$(dirname "$0")/../lib.sh"
source "$ROOT/tests/mount_ops_lib.sh"

# drop_caches: the next reads come from the server, not the page cache.
drop_caches() { sync && echo 3 >/proc/sys/vm/drop_caches; }
# writable NAME DIR: a file written and synced in DIR reads back after the caches are dropped.
writable() {
	local f=$2/w.$RANDOM
	if head -c $((3 * MiB + 17)) /dev/urandom >"$f" && sync -f "$2" && sum=$(sha "$f") && drop_caches &&
		test "$(sha "$f")" = "$sum"; then
		ok "$1"
	else
		not_ok "$1"
	fi
}
# shots DD: "GUID PARENT" of every snapshot of the descriptor.
shots() {
	tr -d ' \n' <"$1" | grep -o '<Shot>[^S]*</Shot>' |
		sed 's:<Shot><GUID>\([^<]*\)</GUID><ParentGUID>\([^<]*\)</ParentGUID>.*:\1 \2:'
}
# dd_digest DD: the files of DD's directory and the descriptor's digest.
dd_digest() { (cd "$(dirname "$1")" && ls -A && sha256sum DiskDescriptor.xml); }

# ---- online snapshot of a raw-based set --------------------------------------------------------------------
mkdir -p R mR
MNTS=("$RT/mR")
R=$RT/R/DiskDescriptor.xml
must "raw: init -f raw" pl init -s 512M -f raw R/root.hds
mount_set "raw: mount" "$R" -m mR
put_files mR r1
must "raw: online snapshot of a raw-based set" pl snapshot "$R"
check "raw: the descriptor names 2 images" test "$(ndeltas "$R")" = 2
drop_caches
verify_files "raw: the files read back after the snapshot (from the raw base)" mR r1
writable "raw: the new top takes writes" mR
put_files mR r2
inst "$R" && check "raw: the server is listed read-write" test "$I_MODE" = rw
must "raw: a second online snapshot" pl snapshot "$R"
drop_caches
verify_files "raw: the files read back after the second snapshot" mR r1
verify_files "raw: ... and the later ones" mR r2
must "raw: online snapshot-delete of the first snapshot (merge into the raw base, not the top)" \
	pl snapshot-delete -u "$(pl snapshot-list -H -o uuid "$R" | sed -n 1p | tr -d ' ')" "$R"
drop_caches
verify_files "raw: the files read back after the merge into the raw base" mR r1
verify_files "raw: ... and the later ones" mR r2
writable "raw: the top still takes writes" mR
umount_set "raw: umount" "$R"
mount_set "raw: mount again" "$R" -m mR
verify_files "raw: every file reads back after umount + mount" mR r1
verify_files "raw: ... and the later ones" mR r2

# ---- a snapshot that fails half-way -------------------------------------------------------------------------
# The descriptor cannot be replaced (immutable): the new delta was made and opened, the old top
# marked clean; all of that is undone and the server goes on with the old chain.
at_exit chattr -i "$R"
before=$(dd_digest "$R")
depth0=$(ndeltas "$R")
if chattr +i "$R" 2>/dev/null; then
	refuse "failed snapshot: refused with one line" any pl snapshot "$R"
	chattr -i "$R"
	check "failed snapshot: the descriptor is unchanged, no file added or removed" test "$(dd_digest "$R")" = "$before"
	inst "$R" && check "failed snapshot: the server is still listed read-write" test "$I_MODE" = rw
	drop_caches
	verify_files "failed snapshot: the files read back" mR r1
	writable "failed snapshot: the old top still takes writes" mR
	must "failed snapshot: a snapshot works once the descriptor can be written" pl snapshot "$R"
	check "failed snapshot: ... and adds one image" test "$(ndeltas "$R")" = $((depth0 + 1))
	drop_caches
	verify_files "failed snapshot: the files read back after the next snapshot" mR r2
else
	ok "failed snapshot # SKIP chattr +i is not supported here"
fi
umount_set "raw: final umount" "$R"

# ---- compact with a snapshot ----------------------------------------------------------------------------------
# A discard must read back as zeros (the loop device sends write-zeroes as the same punch), so
# trimming what a snapshot holds would copy zeros into the top: mounted, compact gives nothing back
# with snapshots and says so (upstream's dm-ploop discards on a single delta only); unmounted, it
# gives back the top's free clusters, found in the ext4 block bitmap.
mkdir -p K mK
MNTS+=("$RT/mK")
K=$RT/K/DiskDescriptor.xml
kib() { du -sk "$(deltas "$K" | tail -1)" | cut -f1; }
must "snapshots: init -s 1G" pl init -s 1G K/root.hds
mount_set "snapshots: mount" "$K" -m mK
head -c $((200 * MiB)) /dev/urandom >mK/big
sync -f mK
must "snapshots: online snapshot over a 200M file" pl snapshot "$K"
put_files mK k1
rm mK/big
head -c $((100 * MiB)) /dev/urandom >mK/top-only
sync -f mK
rm mK/top-only
sync -f mK
du0=$(kib)
must "snapshots: compact while mounted" pl compact "$K"
du1=$(kib)
check "snapshots: compact did not grow the top ($du0 -> $du1 KiB)" test "$du1" -le "$du0"
check "snapshots: ... and says why it gave nothing back" grep -q "has snapshots" "$T/.out" "$T/.err"
drop_caches
verify_files "snapshots: the files read back" mK k1
umount_set "snapshots: umount" "$K"
must "snapshots: compact unmounted" pl compact "$K"
du2=$(kib)
check "snapshots: unmounted, the clusters only the top held left it ($du1 -> $du2 KiB)" test $((du1 - du2)) -gt $((90 * 1024))
checked "snapshots: every delta checks clean" "$K"
mount_set "snapshots: mount again" "$K" -m mK
verify_files "snapshots: the files read back after compact" mK k1
umount_set "snapshots: final umount" "$K"

# ---- write-zeroes that must not unmap still zero what only a snapshot holds ----------------------------------
mkdir -p Z
Z=$RT/Z/DiskDescriptor.xml
must "zeroes: init -s 64M -t none" pl init -s 64M -t none Z/root.hds
mount_set "zeroes: mount (device only)" "$Z"
if inst "$Z"; then
	head -c $((8 * MiB)) /dev/urandom >"$T/z.data"
	dd if="$T/z.data" of="$I_DEV" bs=1M oflag=direct status=none
	must "zeroes: online snapshot" pl snapshot "$Z"
	blkdiscard -z -o $((MiB + 4096)) -l $((3 * MiB)) "$I_DEV"
	head -c $((3 * MiB)) /dev/zero >"$T/z.zeros"
	drop_caches
	check "zeroes: blkdiscard -z over snapshot data reads back as zeros" \
		cmp -s "$T/z.zeros" <(dd if="$I_DEV" bs=4096 skip=257 count=768 iflag=direct status=none)
	check "zeroes: the data around it is intact" \
		cmp -s <(head -c $((MiB + 4096)) "$T/z.data") <(head -c $((MiB + 4096)) "$I_DEV")
fi
umount_set "zeroes: umount" "$Z"

# ---- snapshot-delete of a snapshot tree while mounted ----------------------------------------------------------
# snapshot, snapshot, snapshot-switch -u S1 -D: S1 (the base) has two children, X and the served top;
# K, the old top kept by -D, is a leaf under X. As offline: S1 is marked temporary; K, which the
# server does not use, is removed.
mkdir -p B mB
MNTS+=("$RT/mB")
B=$RT/B/DiskDescriptor.xml
must "tree: init" pl init -s 256M B/root.hds
must "tree: snapshot S1" pl snapshot "$B"
S1=$(snapshot_guid "$T/.out")
must "tree: snapshot X" pl snapshot "$B"
X=$(snapshot_guid "$T/.out")
must "tree: snapshot-switch -u S1 -D" pl snapshot-switch -u "$S1" -D "$B"
K=$(shots "$B" | awk -v x="$X" 'tolower($2) == tolower(x) { print $1 }')
mount_set "tree: mount" "$B" -m mB
put_files mB t1
K_FILE=$(pl snapshot-list -H -o uuid,fname "$B" | awk -v g="$K" 'tolower($1) == tolower(g) { print $2 }')
check "tree: K is a leaf under X with a file of its own" test -n "$K" -a -n "$K_FILE" -a -f "$K_FILE"
must "tree: snapshot-delete of S1 (two children) while mounted" pl snapshot-delete -u "$S1" "$B"
check "tree: S1 is marked temporary, still 4 images" \
	test "$(tr -d ' \n\t' <"$B" | grep -o "<GUID>$S1</GUID><ParentGUID>[^<]*</ParentGUID><Temporary/>" | wc -l)" = 1 -a "$(ndeltas "$B")" = 4
check "tree: ... and the notice says so" grep -q "marked temporary" "$T/.out" "$T/.err"
must "tree: snapshot-delete of the unserved leaf K while mounted" pl snapshot-delete -u "$K" "$B"
check "tree: K is gone from the descriptor and the disk" \
	test "$(ndeltas "$B")" = 3 -a ! -e "$K_FILE" -a -z "$(pl snapshot-list -H -o uuid "$B" | grep -iF "$K")"
refuse "tree: snapshot-delete of an unknown snapshot: exit 43" 43 \
	pl snapshot-delete -u '{01234567-89ab-cdef-0123-456789abcdef}' "$B"
refuse "tree: snapshot-delete of the running top: refused" 38 pl snapshot-delete -u "$TOPG" "$B"
drop_caches
verify_files "tree: the files read back" mB t1
writable "tree: the top still takes writes" mB
umount_set "tree: umount" "$B"
checked "tree: every delta checks clean" "$B"

# ---- an online merge into a parent whose BAT must grow ---------------------------------------------------------
# The top was grown past what the parent's one-cluster BAT maps (64K clusters: about 1 GiB): merging
# it into the parent means moving data clusters the parent serves out of the BAT's way, under reads
# the server answers through the old map. Refused while mounted (exit 17, as a busy set), nothing
# changed; unmounted, the merge does it.
mkdir -p GR
GR=$RT/GR/DiskDescriptor.xml
must "grown: init -s 512M -b 128 -t none (64K clusters)" pl init -s 512M -b 128 -t none GR/root.hds
head -c $((4 * MiB)) /dev/urandom >"$T/g.data"
mount_set "grown: mount (device only)" "$GR" && inst "$GR" &&
	dd if="$T/g.data" of="$I_DEV" bs=1M oflag=direct status=none
umount_set "grown: umount" "$GR"
must "grown: snapshot" pl snapshot "$GR"
must "grown: grow the top to 4G" pl grow -s 4G "$GR"
mount_set "grown: mount again" "$GR"
if inst "$GR"; then
	dd if="$T/g.data" of="$I_DEV" bs=1M seek=3000 oflag=direct status=none
	blockdev --flushbufs "$I_DEV"
	before=$(set_digest "$GR")
	refuse "grown: online merge into the smaller parent: refused" 17 pl snapshot-merge "$GR"
	check "grown: ... saying to merge it unmounted" grep -q "merge it unmounted" "$T/.err"
	check "grown: ... with the descriptor and every delta unchanged" test "$(set_digest "$GR")" = "$before"
	drop_caches
	check "grown: the parent's data reads back" \
		cmp -s "$T/g.data" <(dd if="$I_DEV" bs=1M count=4 iflag=direct status=none)
	check "grown: the top's data past the parent's end reads back" \
		cmp -s "$T/g.data" <(dd if="$I_DEV" bs=1M skip=3000 count=4 iflag=direct status=none)
fi
umount_set "grown: umount" "$GR"
must "grown: the merge unmounted" pl snapshot-merge "$GR"
check "grown: ... leaves one image" test "$(ndeltas "$GR")" = 1
checked "grown: the merged image checks clean" "$GR"
mount_set "grown: mount the merged image" "$GR"
if inst "$GR"; then
	check "grown: the parent's data reads back after the merge" \
		cmp -s "$T/g.data" <(dd if="$I_DEV" bs=1M count=4 iflag=direct status=none)
	check "grown: the top's data reads back after the merge" \
		cmp -s "$T/g.data" <(dd if="$I_DEV" bs=1M skip=3000 count=4 iflag=direct status=none)
fi
umount_set "grown: final umount" "$GR"

# ---- clusters at the end of the top that no BAT entry names ------------------------------------------------
# A crash leaves them: the server's preallocated tail (16 clusters), data whose entry never became
# durable, a partial cluster of old bytes. The next read-write server gives them back before any
# I/O (nothing names them, so nothing is lost), and a new cluster reads as zeros around a write.
mkdir -p PT
PT=$RT/PT/DiskDescriptor.xml
PT_TOP=$RT/PT/root.hds
must "tail: init -s 256M -t none" pl init -s 256M -t none PT/root.hds
head -c $((512 * 1024)) /dev/zero | tr '\0' '\252' >>"$PT_TOP"
mount_set "tail: mount over a top that ends in 512K of old bytes" "$PT"
check "tail: the partial cluster was given back ($(stat -c %s "$PT_TOP") bytes)" test "$(stat -c %s "$PT_TOP")" = $MiB
if inst "$PT"; then
	head -c 4096 /dev/urandom >"$T/p.data"
	# 4K at 256K into virtual cluster 5, the first new cluster
	dd if="$T/p.data" of="$I_DEV" bs=4096 seek=$(((5 * MiB + 262144) / 4096)) oflag=direct conv=fsync status=none
	drop_caches
	dd if="$I_DEV" bs=1M skip=5 count=1 iflag=direct status=none >"$T/p.read"
	check "tail: the written 4K reads back" cmp -s "$T/p.data" <(tail -c +$((262144 + 1)) "$T/p.read" | head -c 4096)
	check "tail: the rest of the new cluster reads as zeros, not the old bytes" \
		test "$(head -c 262144 "$T/p.read" | tr -d '\0' | wc -c)" = 0 -a \
		"$(tail -c +$((262144 + 4096 + 1)) "$T/p.read" | tr -d '\0' | wc -c)" = 0
	check "tail: the server preallocates past the new cluster ($(stat -c %s "$PT_TOP") bytes)" \
		test "$(stat -c %s "$PT_TOP")" -gt $((2 * MiB))
	kill -9 "$I_PID"
	for _ in $(seq 50); do pid_gone "$I_PID" && break; sleep 0.1; done
fi
pl check -r -c -d "$PT_TOP" >"$T/pt.check" 2>&1
check "tail: the killed server left unreferenced clusters at the end (check -r -d: want to trim tail)" \
	grep -q "unreferenced cluster(s) at the end.*want to trim tail" "$T/pt.check"
mount_set "tail: mount again (no umount first: mount cleans up after the dead server)" "$PT"
check "tail: ... gives them back at once ($(stat -c %s "$PT_TOP") bytes: header+BAT and one cluster)" \
	test "$(stat -c %s "$PT_TOP")" = $((2 * MiB))
if inst "$PT"; then
	drop_caches
	check "tail: the synced 4K reads back" \
		cmp -s "$T/p.data" <(dd if="$I_DEV" bs=4096 skip=$(((5 * MiB + 262144) / 4096)) count=1 iflag=direct status=none)
fi
refuse "tail: check of the mounted set refused (exit 17)" 17 pl check "$PT"
check "tail: ... saying to check it unmounted or a snapshot" grep -q "check it unmounted, or a snapshot" "$T/.err"
# Read-only, a snapshot of a mounted set can be checked, its top (being written) cannot.
refuse "tail: check -r of the mounted set refused too (exit 17)" 17 pl check -r "$PT"
check "tail: ... saying its top is being written" grep -q "top delta is being written" "$T/.err"
must "tail: online snapshot" pl snapshot "$PT"
must "tail: check -r -f -c -u BASE of the mounted set" pl check -r -f -c -u "$(pl snapshot-list -H -o uuid "$PT" | head -1)" "$PT"
umount_set "tail: umount" "$PT"
checked "tail: the image checks clean" "$PT"
pl check -f -c "$PT_TOP" >"$T/pt.check" 2>&1
check "tail: ... with no unreferenced cluster" test -z "$(grep unreferenced "$T/pt.check")"

# ---- resize of a disk without a filesystem --------------------------------------------------------------------
# An image made with -t none (a raw disk for whatever its user puts on it): resize grows the disk,
# mounted or not, and says there is nothing else to grow; shrinking would cut its data blindly and
# is refused. The server's preallocated tail does not outlive a resize (it was left in the file,
# unreferenced, for good).
mkdir -p NF
NF=$RT/NF/DiskDescriptor.xml
must "no fs: init -s 256M -t none" pl init -s 256M -t none NF/root.hds
head -c $MiB /dev/urandom >"$T/nf.data"
mount_set "no fs: mount" "$NF"
if inst "$NF"; then
	dd if="$T/nf.data" of="$I_DEV" bs=1M seek=100 oflag=direct status=none
	must "no fs: resize -s 1G while mounted" pl resize -s 1G "$NF"
	check "no fs: ... says the disk grew and there is nothing else to grow" grep -q "nothing else to grow" "$T/.out" "$T/.err"
	check "no fs: the device is 1G at once" test "$(blockdev --getsize64 "$I_DEV")" = $((1024 * MiB))
	drop_caches
	check "no fs: the data reads back" cmp -s "$T/nf.data" <(dd if="$I_DEV" bs=1M skip=100 count=1 iflag=direct status=none)
fi
umount_set "no fs: umount" "$NF"
nf_top=$(deltas "$NF" | tail -1)
check "no fs: the top holds header+BAT and one data cluster, no preallocated tail ($(stat -c %s "$nf_top") bytes)" \
	test "$(stat -c %s "$nf_top")" = $((2 * MiB))
pl check -f -c "$NF" >"$T/nf.check" 2>&1
check "no fs: check finds no unreferenced cluster" test -z "$(grep unreferenced "$T/nf.check")"
must "no fs: resize -s 2G unmounted" pl resize -s 2G "$NF"
check "no fs: info -s reports 2G" grep -qx "size:		4194304" <(pl info -s "$NF")
mount_set "no fs: mount the grown disk" "$NF"
if inst "$NF"; then
	dd if="$T/nf.data" of="$I_DEV" bs=1M seek=1900 oflag=direct status=none
	drop_caches
	check "no fs: data written past the old ends and before them reads back" \
		eval 'cmp -s "$T/nf.data" <(dd if="$I_DEV" bs=1M skip=100 count=1 iflag=direct status=none) &&
		      cmp -s "$T/nf.data" <(dd if="$I_DEV" bs=1M skip=1900 count=1 iflag=direct status=none)'
fi
umount_set "no fs: umount the grown disk" "$NF"
before=$(set_digest "$NF")
refuse "no fs: shrinking is refused" 38 pl resize -s 128M "$NF"
check "no fs: ... and changes nothing" test "$(set_digest "$NF")" = "$before"
checked "no fs: the image checks clean" "$NF"

# ---- resize to a size no delta can hold ------------------------------------------------------------------------
# Refused (38) before the device is served or the filesystem checked: found only by the grow, it
# left the ext4 superblock changed; a size that wrapped around when rounded up to the cluster
# became a shrink to 0. Every byte of the set stays as it was.
mkdir -p HUGE
HUGE=$RT/HUGE/DiskDescriptor.xml
must "huge: init -s 256M" pl init -s 256M HUGE/root.hds
before=$(set_digest "$HUGE")
for s in 9007199254740992 18446744073709551615 36028797018963968 $((4294967295 * 2048)); do
	refuse "huge: resize -s $s is refused" 38 pl resize -s "$s" "$HUGE"
	check "huge: ... and changes nothing" test "$(set_digest "$HUGE")" = "$before"
done
check "huge: no server was left" test -z "$(pl list -H | grep -F "$HUGE")"
checked "huge: the image checks clean" "$HUGE"

finish
