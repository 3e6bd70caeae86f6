#!/bin/bash
# Boots Debian's kernel under QEMU (TCG) from a busybox initramfs holding the dm-ploop module, our
# ploop tool, dmsetup, e2fsprogs and fio (each with the libraries ldd names), and runs a script in
# the guest. The guest's output (serial console) goes to $WORK/serial.log and to stdout.
# Exit: 0 PASS, 1 FAIL (the script failed, or the kernel logged BUG/WARNING/Oops), 2 setup error.
#
# Env: KO (built module, required), GUEST_TEST (script; default kernel/qemu/guest-test.sh),
#      GUEST_FILES (more host files to copy into /data of the guest), PLOOP (our tool),
#      KVER (default: what linux-image-amd64 depends on), MEM (MiB, default 768),
#      TIMEOUT (s, default 300), WORK (default build/kernel/qemu).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOTDIR=$(cd "$HERE/../.." && pwd)
KVER=${KVER:-$(dpkg-query -W -f='${Depends}' linux-image-amd64 2>/dev/null | sed -n 's/^linux-image-\([^ ,]*\).*/\1/p')}
[ -n "$KVER" ] || KVER=$(basename "$(ls -d /lib/modules/*/build 2>/dev/null | head -1 | xargs dirname)")
MEM=${MEM:-768}
TIMEOUT=${TIMEOUT:-300}
KO=${KO:?KO=path/to/dm-ploop.ko}
GUEST_TEST=${GUEST_TEST:-$HERE/guest-test.sh}
PLOOP=${PLOOP:-$ROOTDIR/build/bin/ploop}
WORK=${WORK:-$ROOTDIR/build/kernel/qemu}
EXTRA_MODS=${EXTRA_MODS:-crc32c_generic ext4}
ROOT=$WORK/initramfs
LOG=$WORK/serial.log
KIMG=/boot/vmlinuz-$KVER

die() { echo "FATAL: $*" >&2; exit 2; }
[ -r "$KIMG" ] || die "missing $KIMG (apt-get install linux-image-amd64; make deps)"
for t in qemu-system-x86_64 cpio gzip xz /bin/busybox /sbin/dmsetup mkfs.ext4 e2fsck fio modinfo; do
	command -v "$t" >/dev/null || die "missing $t (make deps)"
done
[ -x "$PLOOP" ] || die "missing $PLOOP (make)"
modinfo -F vermagic "$KO" | grep -q "^$KVER " || die "vermagic mismatch: $(modinfo -F vermagic "$KO") vs $KVER"
mkdir -p "$WORK"

# ---- initramfs ----
rm -rf "$ROOT"
mkdir -p "$ROOT"/{bin,sbin,dev,proc,sys,tmp,data,lib/modules,etc,run}
cp /bin/busybox "$ROOT/bin/busybox"
copy_bin() {	# copy_bin FILE DEST: a dynamic binary or library plus what ldd lists
	local f=$1 dest=$2 lib
	cp -L "$f" "$ROOT$dest"
	for lib in $(ldd "$f" 2>/dev/null | grep -o '/[^ ]*'); do
		[ -e "$ROOT$lib" ] && continue
		mkdir -p "$ROOT$(dirname "$lib")"
		cp -L "$lib" "$ROOT$lib"
	done
}
copy_bin /sbin/dmsetup /sbin/dmsetup
copy_bin "$PLOOP" /bin/ploop
copy_bin "$(command -v mkfs.ext4)" /sbin/mkfs.ext4
copy_bin "$(command -v e2fsck)" /sbin/e2fsck
copy_bin "$(command -v fio)" /bin/fio
xml=$(ldconfig -p | sed -n 's/.*libxml2\.so\.2 .*=> //p' | head -1)
[ -n "$xml" ] && copy_bin "$xml" "$xml"	# dlopen'ed by ploop at run time
printf 'root:x:0:0:root:/:/bin/sh\n' >"$ROOT/etc/passwd"
: >"$ROOT/etc/mtab"

: >"$ROOT/lib/modules/load.order"
add_mod() {
	local name=$1 f dep ko
	f=$(modinfo -k "$KVER" -F filename "$name") || die "no module $name in $KVER"
	case "$f" in (builtin*|"") return 0;; esac
	ko=$(basename "$f"); ko=${ko%.xz}; ko=${ko%.zst}; ko=${ko%.gz}
	[ -e "$ROOT/lib/modules/$ko" ] && return 0
	for dep in $(modinfo -k "$KVER" -F depends "$name" | tr ',' ' '); do add_mod "$dep"; done
	case "$f" in	# busybox insmod cannot read compressed modules
		(*.ko.xz)  xz   -dc  "$f" >"$ROOT/lib/modules/$ko";;
		(*.ko.zst) zstd -qdc "$f" >"$ROOT/lib/modules/$ko";;
		(*.ko.gz)  gzip -dc  "$f" >"$ROOT/lib/modules/$ko";;
		(*)        cp "$f" "$ROOT/lib/modules/$ko";;
	esac
	echo "$ko" >>"$ROOT/lib/modules/load.order"
}
for m in dm-mod loop $EXTRA_MODS; do add_mod "$m"; done
strip --strip-debug -o "$ROOT/lib/modules/dm-ploop.ko" "$KO"
echo dm-ploop.ko >>"$ROOT/lib/modules/load.order"
for f in ${GUEST_FILES:-}; do cp "$f" "$ROOT/data/"; done

cp "$GUEST_TEST" "$ROOT/test.sh"
cat >"$ROOT/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o size=80% tmpfs /tmp
mkdir -p /run/lock
export DM_DISABLE_UDEV=1	# no udev: dmsetup makes the /dev/mapper nodes itself
result() { echo "KTEST-RESULT: $1"; poweroff -f; }
echo "KTEST: kernel $(uname -r)"
for m in $(cat /lib/modules/load.order); do
	insmod /lib/modules/$m || { echo "not ok insmod $m"; dmesg | tail -20; result FAIL; }
done
cd /tmp
sh /test.sh; rc=$?
if dmesg | grep -E -q 'BUG:|Oops|WARNING:|general protection|KASAN|UBSAN|list_add corruption|hung_task'; then
	dmesg | tail -60; echo "not ok kernel_log_clean"; rc=1
else
	echo "ok kernel_log_clean"
fi
[ $rc = 0 ] || { dmesg | tail -30; result FAIL; }
result PASS
INIT
chmod +x "$ROOT/init" "$ROOT/test.sh"
(cd "$ROOT" && find . -print0 | cpio --null -o -H newc --quiet | gzip -1) >"$WORK/initramfs.cpio.gz"

# ---- boot: the uncompressed vmlinux through QEMU's PVH entry (no in-guest decompression) ----
VMLINUX=$WORK/vmlinux-$KVER
if [ ! -s "$VMLINUX" ] || [ "$KIMG" -nt "$VMLINUX" ]; then
	off=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$KIMG" | head -1 | cut -d: -f1)
	[ -n "$off" ] || die "no xz stream in $KIMG"
	tail -c +$((off + 1)) "$KIMG" | xz -dcq >"$VMLINUX.tmp" 2>/dev/null || true	# trailing data: rc 1
	[ "$(head -c 4 "$VMLINUX.tmp" | od -An -tx1 | tr -d ' ')" = 7f454c46 ] || die "vmlinux extraction failed"
	mv "$VMLINUX.tmp" "$VMLINUX"
fi
rc=0
timeout --foreground "$TIMEOUT" qemu-system-x86_64 -accel tcg -cpu max -m "$MEM" -smp 1 \
	-nographic -no-reboot -nodefaults -serial mon:stdio \
	-kernel "$VMLINUX" -initrd "$WORK/initramfs.cpio.gz" \
	-append "console=ttyS0 panic=-1 oops=panic loglevel=4 quiet" \
	</dev/null 2>&1 | tr -d '\r' | tee "$LOG" || rc=$?
grep -q '^KTEST-RESULT: PASS' "$LOG" && exit 0
[ "$rc" = 124 ] && echo "not ok qemu (timed out after ${TIMEOUT}s)"
exit 1
