#!/bin/bash
# `make kernel-patch-check`: the committed patch series matches the sources (mkpatch.sh output),
# applies to Debian's linux-source-6.1 with `patch --dry-run`, and is checkpatch-clean (0 errors,
# 0 warnings). Installs linux-source-6.1 (140 MB) when missing and run as root; unpacks only
# MAINTAINERS, drivers/md and scripts into DIR (default build/kernel/linux-source).
# KERNEL_PATCH_BUILD=1 also builds the patched tree's drivers/md for Debian's kernel (full tree in
# DIR/full, 1.5 GB, about 3 minutes: olddefconfig with DM_PLOOP=m, modules_prepare, M=drivers/md)
# and, with KERNEL_PATCH_BUILD=guest, runs the QEMU guest test with that in-tree dm-ploop.ko.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DIR=${1:-$ROOT/build/kernel/linux-source}
case "$DIR" in (/*) ;; (*) DIR=$ROOT/$DIR;; esac
TAR=/usr/src/linux-source-6.1.tar.xz
TREE=$DIR/linux-source-6.1
fail() { echo "kernel-patch-check: $*" >&2; exit 1; }

if [ ! -f "$TREE/drivers/md/Kconfig" ]; then
	if [ ! -f "$TAR" ]; then
		[ "$(id -u)" = 0 ] || fail "$TAR missing: apt-get install linux-source-6.1"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends linux-source-6.1 >/dev/null ||
			fail "cannot install linux-source-6.1"
	fi
	mkdir -p "$DIR"
	tar -C "$DIR" -xf "$TAR" linux-source-6.1/MAINTAINERS linux-source-6.1/drivers/md linux-source-6.1/scripts
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
shopt -s nullglob
patches=("$HERE"/*.patch)
[ ${#patches[@]} -gt 0 ] || fail "no patches in $HERE"
"$HERE/mkpatch.sh" "$TREE" "$tmp/fresh.patch" >/dev/null
cmp -s "$tmp/fresh.patch" "$HERE/0001-dm-ploop-add-ploop-image-target.patch" ||
	fail "kernel/patches is out of date with kernel/dm-ploop or ploop/ploop_format.h: run make kernel-patch"
echo "ok patch_matches_sources"

for p in "${patches[@]}"; do
	(cd "$TREE" && patch -p1 --dry-run --quiet <"$p") || fail "$(basename "$p") does not apply to $TREE"
	echo "ok applies $(basename "$p")"
	out=$(cd "$TREE" && perl scripts/checkpatch.pl --no-tree "$p" 2>&1) || true
	if ! grep -q '^total: 0 errors, 0 warnings' <<<"$out"; then
		echo "$out"
		fail "$(basename "$p") is not checkpatch-clean"
	fi
	echo "ok checkpatch $(basename "$p") ($(grep '^total:' <<<"$out"))"
done
if [ -n "${KERNEL_PATCH_BUILD:-}" ]; then
	KVER=$(dpkg-query -W -f='${Depends}' linux-image-amd64 | sed -n 's/^linux-image-\([^ ,]*\).*/\1/p')
	rm -rf "$DIR/full" && mkdir -p "$DIR/full"
	tar -C "$DIR/full" -xf "$TAR"
	FULL=$DIR/full/linux-source-6.1
	for p in "${patches[@]}"; do (cd "$FULL" && patch -p1 --quiet <"$p"); done
	(
		cd "$FULL"
		cp "/boot/config-$KVER" .config
		scripts/config --module DM_PLOOP
		make -s olddefconfig
		grep -q '^CONFIG_DM_PLOOP=m' .config
		make -s -j"$(nproc)" KERNELRELEASE="$KVER" modules_prepare
		cp "/usr/src/linux-headers-$KVER/Module.symvers" .
		make -s -j"$(nproc)" KERNELRELEASE="$KVER" M="$FULL/drivers/md" modules
	) >"$DIR/full/build.log" 2>&1 || { tail -30 "$DIR/full/build.log"; fail "the patched tree does not build"; }
	modinfo -F vermagic "$FULL/drivers/md/dm-ploop.ko" | grep -q "^$KVER " || fail "in-tree dm-ploop.ko: wrong vermagic"
	echo "ok in_tree_build drivers/md/dm-ploop.ko (CONFIG_DM_PLOOP=m, $KVER)"
	if [ "$KERNEL_PATCH_BUILD" = guest ]; then
		mkdir -p "$tmp/ext4"
		"$ROOT/build/bin/ploop" init -s 128M -t ext4 "$tmp/ext4/root.hds" >/dev/null
		GUEST_FILES="$tmp/ext4/DiskDescriptor.xml $tmp/ext4/root.hds" KO=$FULL/drivers/md/dm-ploop.ko \
			WORK=$ROOT/build/kernel/qemu-intree "$ROOT/kernel/qemu/run-guest.sh" >"$DIR/full/guest.log" 2>&1 ||
			fail "the in-tree module fails the guest test ($DIR/full/guest.log)"
		echo "ok in_tree_module_guest_test ($(grep -c '^ok ' "$DIR/full/guest.log") checks)"
	fi
fi
echo "kernel-patch-check: ${#patches[@]} patch(es) OK against $(basename "$TAR")"
