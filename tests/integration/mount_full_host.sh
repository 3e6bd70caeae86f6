#!/usr/bin/env bash
# A mounted set whose host filesystem is full: `ploop resize` fails with exit 20 (no space), the GPT
# stays consistent (the backup table, at the new end of the disk, is written and flushed before the
# primary: a backup that cannot be written leaves the old primary), and a filesystem that was
# unmounted to grow (no CAP_SYS_RESOURCE) and could not be mounted again is said to be left
# unmounted, and `ploop list` does not show it mounted. The host is a small ext4 on a loop device.
source "$(dirname "$0")/../lib.sh"
source "$ROOT/tests/mount_ops_lib.sh"

MNTS=("$RT/mnt")
mkdir -p mnt
host_fs 300 || finish
DD=$H/DiskDescriptor.xml
must "init -s 1G (GPT + ext4)" pl init -s 1G "$H/root.hds" || finish
IDS+=("$(run_id "$DD")")
mount_set "mount -m mnt" "$DD" -m mnt || finish
inst "$DD"
dev=$I_DEV
gpt_before=$(parted -s "$dev" unit s print 2>&1 | grep '^ 1 ')
dd if=/dev/urandom of=mnt/big bs=1M count=600 conv=fsync status=none 2>/dev/null
sync
check "the host is full ($(df -k --output=avail "$H" | tail -1 | tr -d ' ') KiB left)" \
	test "$(df -k --output=avail "$H" | tail -1)" -lt 1024

how=
command -v capsh >/dev/null && how="capsh --drop=cap_sys_resource --"
if [ -n "$how" ]; then
	$how -c "timeout 120 $PLOOP resize -s 2G $DD" >"$T/.out" 2>"$T/.err"
else
	timeout 120 "$PLOOP" resize -s 2G "$DD" >"$T/.out" 2>"$T/.err"
fi
rc=$?
msg=$(grep -v '^ploop resize: .*unmounted to grow it$' "$T/.err" | head -c 400 | tr '\n' '|')
check "resize -s 2G on a full host fails with exit 20, no space (exit $rc: $msg)" test "$rc" = 20
check "... in one line" test "$(grep -vc 'unmounted to grow it$' "$T/.err")" = 1
parted -s "$dev" unit s print >"$T/parted" 2>&1
check "... the GPT is consistent: $(grep -i corrupt "$T/parted" | head -c 200)" bash -c "! grep -qi corrupt '$T/parted'"
check "... partition 1 as it was" test "$(grep '^ 1 ' "$T/parted")" = "$gpt_before"
inst "$DD"
if mountpoint -q mnt; then
	ok "... the filesystem is mounted again"
	check "... and listed so" test "$I_MNT" = "$RT/mnt"
else
	check "... the error says the filesystem was left unmounted" grep -q "left unmounted" "$T/.err"
	check "... ploop list shows no mount point ($I_MNT)" test "$I_MNT" != "$RT/mnt"
fi
finish
