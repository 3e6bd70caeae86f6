#!/usr/bin/env bash
# The dm-ploop kernel target: builds the module against Debian's headers, refuses `mount --kernel`
# on this host (no module), then boots Debian's kernel under QEMU and runs kernel/qemu/guest-test.sh
# there (create with our tool, map, write/read, snapshot by reload, COW, merge, unmap, check, ext4,
# bad images). Each guest check prints its own "ok NAME" line.
# runner: isolated (touches nothing another test looks at: tests/run may run it beside them)
set -u
cd "$(dirname "$0")/../.."
ROOT=$PWD
PLOOP=${PLOOP:-$ROOT/build/bin/ploop}
start=$(date +%s)

if ! make -s kernel-module >build/kernel-module.log 2>&1; then
	cat build/kernel-module.log
	echo "not ok kernel_module_build"
	exit 1
fi
echo "ok kernel_module_build"

# Without the module (always so on this host), --kernel fails with one line and status 60.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PLOOP" init -s 64M -t none "$tmp/root.hds" >/dev/null
out=$("$PLOOP" mount --kernel "$tmp/DiskDescriptor.xml" 2>&1)
rc=$?
if [ -d /sys/module/dm_ploop ]; then
	echo "ok mount_kernel_without_module # SKIP the module is loaded here"
elif [ $rc = 60 ] && [ "$(printf '%s\n' "$out" | wc -l)" = 1 ] && [[ "$out" == *dm-ploop* ]]; then
	echo "ok mount_kernel_without_module"
else
	echo "not ok mount_kernel_without_module # rc=$rc: $out"
fi

# An image with a GPT and ext4 as `ploop init -t ext4` makes it (here, through ploopd) for the guest.
mkdir -p "$tmp/ext4"
"$PLOOP" init -s 128M -t ext4 "$tmp/ext4/root.hds" >/dev/null && echo "ok ext4_image_for_guest" ||
	echo "not ok ext4_image_for_guest"

# Software emulation: about 125 s on a quiet machine, past 200 s beside the other tests of a busy one.
GUEST_FILES="$tmp/ext4/DiskDescriptor.xml $tmp/ext4/root.hds" TIMEOUT=${KERNEL_TEST_TIMEOUT:-360} KO=$ROOT/build/kernel/dm-ploop/dm-ploop.ko PLOOP=$PLOOP WORK=$ROOT/build/kernel/qemu-test \
	kernel/qemu/run-guest.sh
rc=$?
[ $rc = 0 ] && echo "ok kernel_guest_run" || echo "not ok kernel_guest_run (exit $rc, log build/kernel/qemu-test/serial.log)"
echo "kernel test: $(($(date +%s) - start)) s"
exit $rc
