#!/bin/bash
# `make kernel-patch-check`: the committed patch series matches the sources (mkpatch.sh output),
# applies to Debian's linux-source-6.1 with `patch --dry-run`, and is checkpatch-clean (0 errors,
# 0 warnings). Installs linux-source-6.1 (140 MB) when missing and run as root; unpacks only
# MAINTAINERS, drivers/md and scripts into DIR (default build/kernel/linux-source).
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
echo "kernel-patch-check: ${#patches[@]} patch(es) OK against $(basename "$TAR")"
