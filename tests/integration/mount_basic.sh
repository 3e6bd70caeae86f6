#!/usr/bin/env bash
# `ploop mount` end to end: init -t ext4 (GPT and -P), mount with and without a mount point and
# read-only, umount by descriptor / -m / -d, `ploop list`, content across umount + mount, two sets
# at once, mounting a set twice, snapshot views (-u UUID / -u base, read-only only), refusal of the
# offline-only commands while mounted, `info -s` while mounted, and a server killed with SIGKILL
# (list shows DEAD, umount and mount clean up, fsync'd data survives, the filesystem checks clean).
# Every mount this test makes is undone by the EXIT trap, however the test ends.
source "$(dirname "$0")/../lib.sh"
source "$ROOT/tests/mount_ops_lib.sh"

mkdir -p A B mA mB m2 m3 m4 mX
MNTS=("$RT/mA" "$RT/mB" "$RT/m2" "$RT/m3" "$RT/m4" "$RT/mX")
A=$RT/A/DiskDescriptor.xml
B=$RT/B/DiskDescriptor.xml

# ---- init -t ext4 ---------------------------------------------------------------------------------------
must "init -s 512M -t ext4 (GPT + ext4)" pl init -s 512M -t ext4 A/root.hds
check "init -t ext4: descriptor and image made" test -s "$A" -a -s A/root.hds
checked "init -t ext4: the image checks clean, not marked in use" "$A"
check "init -t ext4: no server left running" test -z "$(our_ids)"
# init stops the server it made even when something holds the new device past every retry of
# its umount (udev's probe holds it a moment): the failed init leaves no files, no server, no
# loop device once the holder lets go
mkdir -p H
/usr/bin/python3 - "$RT/H/" 14 "$T/held" <<'PY' &
import glob, os, sys, time
want, secs, note = sys.argv[1], float(sys.argv[2]), sys.argv[3]
held, end = [], time.time() + 20
while not held and time.time() < end:
    for bf in glob.glob('/sys/block/loop*/loop/backing_file'):
        try:
            b = open(bf).read().strip()
            st = open('/run/ploop/%s/state' % b.split('/')[3]).read() if b.startswith('/run/ploop/') else ''
            if 'descriptor=' + want in st:
                held.append(os.open('/dev/' + bf.split('/')[3], os.O_RDONLY))
                open(note, 'a').write(bf.split('/')[3] + '\n')
        except (OSError, IndexError):
            pass
    time.sleep(0.01)
time.sleep(secs)
PY
holder=$!
at_exit "kill $holder"
sleep 0.3
one_line "init while its device is held for 14 s: fails with 46" 46 pl init -s 256M -t ext4 H/root.hds
check "... leaving no file ($(ls -A H | tr '\n' ' '))" test -z "$(ls -A H)"
check "... and no server" bash -c "! grep -l 'descriptor=$RT/H/' /run/ploop/*/state 2>/dev/null"
wait $holder
check "the holder held the device ($(tr '\n' ' ' <"$T/held"))" test -s "$T/held"
check "... which, once the holder is gone, is detached" \
	bash -c "for l in \$(cat '$T/held'); do test ! -e /sys/block/\$l/loop || exit 1; done"
must "init -s 256M -t ext4 -P (no partition table)" pl init -s 256M -t ext4 -P B/root.hds
checked "init -P: the image checks clean" "$B"
pl info -s "$A" >"$T/info.offline" 2>&1

# ---- mount -m DIR, ploop list ---------------------------------------------------------------------------
mount_set "mount -m DIR" "$A" -m mA
mdev=$(head -1 "$T/.out")
if inst "$A"; then
	ok "list: the mounted set is listed"
	check "list: DEVICE is what mount printed ($mdev)" test "$I_DEV" = "$mdev"
	check "list: DEVICE is a loop block device" test -b "$I_DEV" -a "${I_DEV#/dev/loop}" != "$I_DEV"
	check "list: PARTITION is a loop device of its own over GPT partition 1" \
		test -b "$I_PART" -a "$I_PART" != "$I_DEV"
	check "list: PARTITION starts at partition 1 of the disk" \
		test "$(cat "/sys/block/${I_PART#/dev/}/loop/offset" 2>/dev/null)" = $((2048 * 512))
	check "list: PID is a running ploopd" test "$(cat "/proc/$I_PID/comm" 2>/dev/null)" = ploopd
	check "list: MODE rw" test "$I_MODE" = rw
	check "list: MOUNT is the directory" test "$I_MNT" = "$RT/mA"
	check "mount: the filesystem on PARTITION is mounted at DIR" \
		test "$(findmnt -n -o SOURCE --mountpoint "$RT/mA")" = "$I_PART"
	check "mount: the disk has a GPT (sector 1 is 'EFI PART')" \
		test "$(dd if="$I_DEV" bs=512 skip=1 count=1 status=none | head -c 8 | tr -d '\0')" = "EFI PART"
	check "mount: the disk device is 512M" test "$(blockdev --getsize64 "$I_DEV")" = $((512 * MiB))
	check "mount: ext4 on the partition" test "$(blkid -p -o value -s TYPE "$I_PART")" = ext4
	check "mount: the top delta is marked in use while served" in_use A/root.hds
else
	not_ok "list: the mounted set is listed ($(pl list 2>&1 | tr '\n' '|'))"
fi

# ---- content across umount + mount ----------------------------------------------------------------------
put_files mA a1
verify_files "files written and synced read back" mA a1
info_out=$(pl info -s "$A" 2>&1)
check "info -s works while mounted, same output as offline" test "$info_out" = "$(cat "$T/info.offline")"
umount_set "umount DiskDescriptor.xml: server, devices, FUSE mount, run dir gone" "$A"
checked "after umount: every delta checks clean, dirty flag clear" "$A"
mount_set "mount again" "$A" -m mA
verify_files "after umount + mount: every file has its checksum" mA a1

# ---- mounting a set twice ------------------------------------------------------------------------------
inst "$A"
pid1=$I_PID
refuse "mount of a mounted set fails (exit 21, one line)" 21 pl mount -m mX "$A"
refuse "mount -r of a set mounted rw fails (exit 21)" 21 pl mount -r "$A"
inst "$A"
check "the refused mount left the first one alone (same server, still mounted)" \
	test "$I_PID" = "$pid1" -a "$(pl list -H | grep -c " $A\$")" = 1 -a "$(findmnt -n -o TARGET "$I_PART")" = "$RT/mA"
check "the refused mount did not mount the directory" bash -c "! mountpoint -q '$RT/mX'"

# ---- offline-only commands while mounted ---------------------------------------------------------------
sync -f mA
before=$(meta_digest "$A")
refuse "snapshot-switch is refused while mounted" any pl snapshot-switch -u "$TOPG" "$A"
check "snapshot-switch: the error says the set is mounted" grep -q mounted "$T/.err"
refuse "grow is refused while mounted" any pl grow -s 1G "$A"
refuse "convert -v 1 is refused while mounted" any pl convert -v 1 "$A"
refuse "convert -f preallocated is refused while mounted" any pl convert -f preallocated "$A"
check "refused commands changed nothing (descriptor, files, headers, sizes)" test "$(meta_digest "$A")" = "$before"
verify_files "refused commands: the files are intact" mA a1
umount_set "umount -m DIR" "$A" -m mA
checked "after the refused commands: every delta checks clean" "$A"

# ---- mount without -m: the device only ------------------------------------------------------------------
mount_set "mount without -m (device only)" "$A"
if inst "$A"; then
	check "device only: list shows no mount point" test "$I_MNT" = -
	check "device only: the partition is not mounted anywhere" test -z "$(findmnt -n -o TARGET "$I_PART")"
	must "device only: the filesystem is clean (e2fsck -fn)" e2fsck -fn "$I_PART"
	if mount -o ro "$I_PART" mX; then
		verify_files "device only: the partition mounted by hand has every file" mX a1
		umount mX
	else
		not_ok "device only: the partition mounted by hand"
	fi
	# The served file behaves as a block device at its end: a write across it is cut short at the
	# end (the last 4 KiB written back as they were), one at the end gets ENOSPC.
	check "device only: a write across the end of the served file writes up to the end" python3 -c '
import errno, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
size = os.fstat(fd).st_size
last = os.pread(fd, 4096, size - 4096)
n = os.pwrite(fd, last + b"x" * 4096, size - 4096)
try:
    os.pwrite(fd, b"x", size)
    sys.exit("a write at the end succeeded")
except OSError as e:
    if e.errno != errno.ENOSPC:
        raise
os.fsync(fd)
sys.exit(0 if n == 4096 and os.pread(fd, 4096, size - 4096) == last and os.fstat(fd).st_size == size else
         "wrote %d" % n)
' "/run/ploop/$ID/disk"
	umount_set "umount -d DEVICE" "$A" -d "$I_DEV"
else
	not_ok "device only: the set is listed"
fi

# ---- read-only mount ------------------------------------------------------------------------------------
before=$(set_digest "$A")
mount_set "mount -r -m DIR" "$A" -r -m mA
if inst "$A"; then
	remember "$A"
	check "mount -r: list MODE ro" test "$I_MODE" = ro
	verify_files "mount -r: every file reads back" mA a1
	err=$(touch mA/new 2>&1)
	check "mount -r: creating a file fails with EROFS" test -n "$err" -a ! -e mA/new -a -z "${err##*Read-only file system*}"
	err=$( (printf x >>mA/a1/zeros) 2>&1)
	check "mount -r: appending to a file fails with EROFS" test -z "${err##*Read-only file system*}"
	check "mount -r: the partition device refuses writes" \
		bash -c "! dd if=/dev/urandom of='$I_PART' bs=4096 count=1 seek=100 oflag=direct conv=notrunc status=none 2>/dev/null"
	check "mount -r: the disk device refuses writes" \
		bash -c "! dd if=/dev/urandom of='$I_DEV' bs=4096 count=1 seek=100 oflag=direct conv=notrunc status=none 2>/dev/null"
	check "mount -r: the served FUSE file cannot be opened for writing" \
		bash -c "! dd if=/dev/urandom of='/run/ploop/$ID/disk' bs=4096 count=1 seek=100 conv=notrunc status=none 2>/dev/null"
	refuse "mount -r: resize is refused (exit 38)" 38 pl resize -s 1G "$A"
	check "mount -r: the refused resize announces no unmount ($(head -c 100 "$T/.out"))" test ! -s "$T/.out"
	check "mount -r: the filesystem stays mounted" mountpoint -q mA
	check_not "mount -r: the top delta is not marked in use" in_use A/root.hds
	umount_set "umount of a read-only mount" "$A"
	check "mount -r + umount: not a byte of the image set changed" test "$(set_digest "$A")" = "$before"
else
	not_ok "mount -r: the set is listed"
fi

# ---- two image sets at once ---------------------------------------------------------------------------
mount_set "mount a second set (-P) while the first is mounted" "$B" -m mB
mount_set "mount the first set again beside it" "$A" -m mA
if inst "$B"; then
	check "-P: PARTITION is the disk device itself" test "$I_PART" = "$I_DEV"
	check "-P: ext4 on the whole disk" test "$(blkid -p -o value -s TYPE "$I_DEV")" = ext4
	check "-P: no partition table" test "$(dd if="$I_DEV" bs=512 skip=1 count=1 status=none | head -c 8 | tr -d '\0')" != "EFI PART"
	devB=$I_DEV
	inst "$A"
	check "two sets: different devices" test "$I_DEV" != "$devB" -a "$I_PART" != "$devB"
	check "two sets: both listed" test "$(pl list -H | awk -v a="$A" -v b="$B" '$6 == a || $6 == b' | wc -l)" = 2
fi
put_files mA a2
put_files mB b1
verify_files "two sets: first set's new files" mA a2
verify_files "two sets: second set's files" mB b1
absent "two sets: the second set's files are not in the first" mA/b1
absent "two sets: the first set's files are not in the second" mB/a2
umount_set "two sets: umount the first" "$A" -m mA
verify_files "two sets: the second still serves after the first is gone" mB b1
umount_set "two sets: umount the second" "$B" -d "$devB"
checked "two sets: first set checks clean" "$A"
checked "two sets: second set checks clean" "$B"
mount_set "two sets: mount the second again" "$B" -m mB
mount_set "two sets: mount the first again" "$A" -m mA
verify_files "two sets: first set's files after remount" mA a2
verify_files "two sets: older files of the first set" mA a1
verify_files "two sets: second set's files after remount" mB b1
umount_set "two sets: umount the second again" "$B"
umount_set "two sets: umount the first again" "$A"

# ---- snapshot views: mount -u UUID (read-only only), mount -u base -r -------------------------------------
S1=$(pl snapshot "$A" 2>&1 | snapshot_guid)
check "offline snapshot S1" test -n "$S1"
mount_set "mount the top after snapshot S1" "$A" -m mA
put_files mA s1after
umount_set "umount before snapshot S2" "$A"
S2=$(pl snapshot "$A" 2>&1 | snapshot_guid)
check "offline snapshot S2 (3 deltas)" test -n "$S2" -a "$(ndeltas "$A")" = 3
mount_set "mount the top rw over S2" "$A" -m mA
put_files mA s2after
refuse "mount -u S2 without -r is refused (exit 38)" 38 pl mount -u "$S2" -m m2 "$A"
refuse "mount -u base without -r is refused (exit 38)" 38 pl mount -u base -m m3 "$A"
check "the refused snapshot mounts mounted nothing" bash -c "! mountpoint -q '$RT/m2' && ! mountpoint -q '$RT/m3'"
mount_set "mount -u S2 -r -m DIR, beside the rw top" "$A" -u "$S2" -r -m m2
mount_set "mount -u base -r -m DIR" "$A" -u base -r -m m3
remember "$A" "$S1"
if inst "$A" "$S2"; then
	check "list: the S2 view is read-only" test "$I_MODE" = ro -a "$I_MNT" = "$RT/m2"
	verify_files "S2 view: files written before S2" m2 s1after
	verify_files "S2 view: older files" m2 a2
	absent "S2 view: files written after S2 are absent" m2/s2after
	check "S2 view: writes are refused" bash -c "! touch '$RT/m2/x' 2>/dev/null"
else
	not_ok "list: the S2 view is listed ($(pl list 2>&1 | tr '\n' '|'))"
fi
if inst "$A" "$S1"; then
	check "list: the base view is read-only" test "$I_MODE" = ro -a "$I_MNT" = "$RT/m3"
	verify_files "base view: files written before S1" m3 a2
	absent "base view: files written after S1 are absent" m3/s1after
	absent "base view: files written after S2 are absent" m3/s2after
else
	not_ok "list: the base view is listed as snapshot $S1 ($(pl list 2>&1 | tr '\n' '|'))"
fi
refuse "mount -u S2 -r a second time fails (exit 21)" 21 pl mount -u "$S2" -r -m m4 "$A"
put_files mA topwhileviews
verify_files "the rw top is writable while snapshot views are mounted" mA topwhileviews
verify_files "the rw top has the files written after S2" mA s2after
absent "the S2 view does not see the top's new files" m2/topwhileviews
G=$S2 umount_set "umount -u S2 DiskDescriptor.xml (snapshot view)" "$A" -u "$S2" "$A"
must "snapshot-umount -m DIR (base view)" pl snapshot-umount -m m3
check "snapshot-umount: the base view is gone" bash -c "! mountpoint -q '$RT/m3'"
check "snapshot-umount: the top is still mounted" inst "$A"
umount_set "umount the top" "$A"
checked "after snapshot views: every delta checks clean" "$A"

# ---- a dead server -------------------------------------------------------------------------------------
mount_set "mount for the crash test" "$A" -m mA
inst "$A"
remember "$A"
id=$ID pid=$I_PID dev=$I_DEV part=$I_PART
head -c $((5 * MiB + 999)) /dev/urandom >"$T/durable"
dd if="$T/durable" of=mA/durable bs=1M conv=fsync status=none
sync -f mA
head -c $((2 * MiB)) /dev/urandom >mA/not-synced
kill -9 "$pid"
for _ in $(seq 50); do pid_gone "$pid" && break; sleep 0.1; done
check "kill -9 ploopd: the server is gone" pid_gone "$pid"
if inst "$A"; then
	check "kill -9: ploop list shows DEAD" test "$I_MODE" = DEAD
else
	not_ok "kill -9: ploop list still lists the set"
fi
refuse "kill -9: an offline command before ploop umount is refused" 17 pl snapshot "$A"
check "... and says that ploop umount cleans up" grep -q "by a server that is gone (.*): ploop umount cleans up after it" "$T/.err"
umount_set "kill -9: ploop umount cleans up (no devices, FUSE mount, run dir left)" "$A"
# ... and repairs what the server left marked in use, as a mount would: offline work goes on at once.
checked "kill -9: after ploop umount every delta checks clean, none marked in use" "$A"
must "kill -9: an offline snapshot right after ploop umount" pl snapshot "$A"
must "kill -9: ... merged back" pl snapshot-merge "$A"
mount_set "kill -9: ploop mount again" "$A" -m mA
if [ -s "$T/durable" ] && cmp -s "$T/durable" mA/durable; then
	ok "kill -9: data written and fsync'd before the kill is there"
else
	not_ok "kill -9: data written and fsync'd before the kill is there"
fi
verify_files "kill -9: older files" mA s2after
umount_set "kill -9: umount after the replay" "$A"
checked "kill -9: every delta checks clean after mount + umount" "$A"
mount_set "kill -9: mount the device only" "$A"
inst "$A" && must "kill -9: e2fsck -fn of the partition is clean after the journal replay" e2fsck -fn "$I_PART"
umount_set "kill -9: umount -d PARTITION" "$A" -d "$I_PART"

# kill -9 again, then mount straight away: the dead server's leftovers are cleaned up by mount.
mount_set "mount for the second crash" "$A" -m mA
inst "$A"
pid=$I_PID dev=$I_DEV part=$I_PART
remember "$A"
id=$ID
head -c $((3 * MiB)) /dev/urandom >"$T/durable2"
dd if="$T/durable2" of=mA/durable2 bs=1M conv=fsync status=none
kill -9 "$pid"
for _ in $(seq 50); do pid_gone "$pid" && break; sleep 0.1; done
mount_set "kill -9, then ploop mount at once (cleans up the dead server itself)" "$A" -m mA
inst "$A"
check "mount after kill -9: a new server" test -n "$I_PID" -a "$I_PID" != "$pid" -a "$I_MODE" = rw
olddevs=
for d in "$dev" "$part"; do
	[ "$d" = "$I_DEV" ] || [ "$d" = "$I_PART" ] || olddevs="$olddevs$(loop_back "$d" | grep -E "^(/run/ploop/$id/|/\$)")"
done
check "mount after kill -9: the dead server's loop devices are detached" test -z "$olddevs"
check "mount after kill -9: the fsync'd file is there" cmp -s "$T/durable2" mA/durable2
verify_files "mount after kill -9: older files" mA a2
umount_set "umount after the second crash" "$A"
checked "second crash: every delta checks clean" "$A"

# ---- umount -d while the user mounted the filesystem himself --------------------------------------------
# Upstream unmounts a filesystem on the device before it detaches it; it must never report success
# and leave the filesystem mounted on a device whose server is gone.
mount_set "B: mount the device only" "$B"
if inst "$B" && mount "$I_PART" mX; then
	put_files mX b2
	remember "$B"
	pid=$I_PID dev=$I_DEV part=$I_PART idB=$ID
	t0=$(now_ms)
	pl umount -d "$dev" >"$T/.out" 2>"$T/.err"
	rc=$?
	ms=$(($(now_ms) - t0))
	if [ $rc = 0 ]; then
		if mountpoint -q mX; then
			not_ok "umount -d with a filesystem mounted by hand: exit 0 after $ms ms, but the filesystem is still mounted on $dev, whose backing file is now '$(loop_back "$dev")'"
		else
			ok "umount -d with a filesystem mounted by hand: the filesystem was unmounted first"
		fi
	elif mountpoint -q mX && inst "$B" && [ "$I_MODE" = rw ] && cmp -s <(cd mX && sha256sum b2/big1) <(grep ' b2/big1$' "$T/b2.sha"); then
		ok "umount -d with a filesystem mounted by hand: refused (exit $rc), the set still served"
	else
		not_ok "umount -d with a filesystem mounted by hand: exit $rc after $ms ms, and the filesystem is left on a device nobody serves ($(head -c 200 "$T/.err"))"
	fi
	mountpoint -q mX && umount mX
	inst "$B" && pl umount "$B" >/dev/null 2>&1
	for _ in $(seq 50); do pid_gone "$pid" && break; sleep 0.1; done
	check "B: no loop device, run dir or server left after the hand-mounted filesystem went" \
		test -z "$(leftovers "$idB" "$pid" "$dev" "$part" "")"
	mount_set "B: mount again" "$B" -m mB
	verify_files "B: the synced files written through the hand mount are there" mB b2
	verify_files "B: older files" mB b1
	umount_set "B: umount" "$B"
	checked "B: every delta checks clean" "$B"
else
	not_ok "B: mount the partition by hand"
fi

# ---- a filesystem unmounted by hand, and another set mounted on its directory ---------------------------
# `ploop list` shows where a set is mounted, not where it once was, and umount -m DIR stops the set
# mounted at DIR. Both orders of the two sets (which of them the run directory lists first varies).
for order in "$A $B" "$B $A"; do
	read -r first second <<<"$order"
	mount_set "stale mount point: mount ${first#"$RT"/} -m m4" "$first" -m m4
	umount m4
	inst "$first"
	check "list: a filesystem unmounted by hand shows no mount point (list: $I_MNT)" test "$I_MNT" = -
	mount_set "stale mount point: mount ${second#"$RT"/} -m m4, where the other's was" "$second" -m m4
	umount_set "umount -m DIR stops the set mounted there" "$second" -m "$RT/m4"
	check_not "... and DIR is unmounted" mountpoint -q m4
	umount_set "the other set: umount" "$first"
done

# ---- errors ---------------------------------------------------------------------------------------------
refuse "umount of a set that is not mounted (exit 40)" 40 pl umount "$A"
refuse "umount -m of a directory that is no ploop mount (exit 40)" 40 pl umount -m mA
refuse "mount -m of a missing directory" any pl mount -m "$RT/nonexistent" "$A"
check "nothing is left of the refused mounts" test -z "$(our_ids | sort -u | while read -r i; do [ -e "/run/ploop/$i" ] && echo "$i"; done)"
# A mount that fails inside the server, after the image was opened (the filesystem refuses the
# options, or is not of the type asked for), leaves nothing behind: no run directory (not even its
# control socket), no device, and the top not marked in use.
id=$(run_id "$A")
IDS+=("$id")
for how in "-o no_such_option" "-t xfs"; do
	# shellcheck disable=SC2086 # $how is two words
	refuse "mount $how fails in the server (exit 21)" 21 pl mount $how -m mX "$A"
	check "mount $how: no run directory left behind$([ -e "/run/ploop/$id" ] && echo " (left: $(ls -A "/run/ploop/$id" | tr '\n' ' '))")" \
		test ! -e "/run/ploop/$id"
	fail_dev=
	grep -q " /run/ploop/$id/disk " /proc/mounts && fail_dev="$fail_dev fuse:$id"
	for b in /sys/block/loop*/loop/backing_file; do
		grep -q "^/run/ploop/$id/" "$b" 2>/dev/null && fail_dev="$fail_dev ${b#/sys/block/}"
	done
	check "mount $how: no loop device or FUSE mount left${fail_dev:+ ($fail_dev)}" test -z "$fail_dev"
	check_not "mount $how: the directory is not mounted" mountpoint -q mX
	checked "mount $how: every delta checks clean, the top is not marked in use" "$A"
	must "mount $how: an offline snapshot works afterwards (nothing holds the set)" pl snapshot "$A"
done
# mount(8)'s flag options (noatime, nodev, ...) are mount flags, the rest the filesystem's options.
mount_set "mount -o noatime,nodev,nosuid,data=ordered" "$A" -o noatime,nodev,nosuid,data=ordered -m mX
check "the flags and the ext4 option are in effect" bash -c "findmnt -n -o OPTIONS --mountpoint '$RT/mX' |
	grep -q 'nosuid' && findmnt -n -o OPTIONS --mountpoint '$RT/mX' | grep -q 'nodev' &&
	findmnt -n -o OPTIONS --mountpoint '$RT/mX' | grep -q 'noatime' && findmnt -n -o OPTIONS --mountpoint '$RT/mX' | grep -q 'data=ordered'"
umount_set "umount the noatime mount" "$A"
# -B in bytes (1024, 2048, 4096) or sectors (2, 4, 8, or with a suffix).
mkdir -p FB
FB=$RT/FB/DiskDescriptor.xml
IDS+=("$(run_id "$FB")")
must "init -B 2048 (bytes)" pl init -s 256M -B 2048 FB/root.hds
mount_set "mount the -B 2048 image" "$FB" -m mX
check "its ext4 has 2 KiB blocks" test "$(stat -f -c %S "$RT/mX")" = 2048
umount_set "umount the -B 2048 image" "$FB"
check "nothing of this test is left mounted" test -z "$(our_ids | sort -u | while read -r i; do
	[ -e "/run/ploop/$i/state" ] || grep -q " /run/ploop/$i/disk " /proc/mounts && echo "$i"; done)"
finish
