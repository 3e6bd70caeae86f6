#!/bin/sh
# Installs the Debian packages the build, the tests and the benchmarks need.
# Idempotent: does nothing when every package is present; runs `apt-get update` once otherwise.
set -eu
PKGS="gcc make pkg-config libxml2-dev liburing-dev libfuse3-dev fuse3 fio libext2fs-dev qemu-system-common clang libclang-rt-14-dev qemu-utils ploop e2fsprogs util-linux xxd gdb strace python3"
# Components list what they need beyond this in scripts/deps.d/COMPONENT.txt (one package per line).
for f in "$(dirname "$0")"/deps.d/*.txt; do
	[ -f "$f" ] && PKGS="$PKGS $(grep -v '^#' "$f" | tr '\n' ' ')"
done
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "deps: missing packages:$missing (run as root, or install them)" >&2
	exit 1
fi
echo "deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
