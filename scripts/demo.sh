#!/usr/bin/env bash
# `make demo`: a guided tour of what is built so far, run on throw-away images in a temporary
# directory: create an image, put data in it, snapshot, change it, list, map, merge, check.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PLOOP=$ROOT/build/bin/ploop
PLOOP_IO=$ROOT/build/bin/ploop-io
VZQUOTA=$ROOT/build/bin/vzquota
SIMFS=$ROOT/build/bin/simfs
D=$(mktemp -d "${TMPDIR:-/tmp}/ploop-demo.XXXXXX")
# The demo's quota files and run directories stay inside its scratch directory.
export VZQ_DIR=$D/vzquota VZQ_RUN_DIR=$D/run-vzquota SIMFS_RUN_DIR=$D/run-simfs
cleanup() {
	set +e
	local keep=
	if [ -f "$D/ct3/DiskDescriptor.xml" ] && "$PLOOP" list 2>/dev/null | grep -qF "$D/ct3/"; then
		# its server still has the images open: they are not removed from under it
		"$PLOOP" umount "$D/ct3/DiskDescriptor.xml" >/dev/null 2>&1 || keep=$D/ct3/DiskDescriptor.xml
	fi
	mountpoint -q "$D/root4" && "$SIMFS" umount -l "$D/root4" >/dev/null 2>&1
	if [ -n "$keep" ]; then
		echo "demo: $D is kept: its image is still mounted (ploop umount $keep)" >&2
	else
		rm -rf "$D"
	fi
}
trap cleanup EXIT
# Killed (timeout, a CI job stopped), the same cleanup runs: nothing stays mounted.
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM
cd "$D"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

step "Create a 1 GiB ploop v2 image (1 MiB clusters) and its DiskDescriptor.xml"
mkdir ct
run "$PLOOP" init -s 1G -t none ct/root.hds
run ls -l ct
run cat ct/DiskDescriptor.xml

step "Import a raw disk: only clusters that are not all zero are stored"
head -c $((64 << 20)) /dev/urandom > data.raw
truncate -s 256M data.raw
mkdir ct2
run "$PLOOP" import data.raw ct2/root.hds
run du -h --apparent-size data.raw ct2/root.hds

step "Write 8 MiB into the image at offset 100 MiB (through the library, as a device would)"
head -c $((8 << 20)) /dev/urandom > chunk
run "$PLOOP_IO" write ct/DiskDescriptor.xml $((100 << 20)) < chunk
run "$PLOOP" map ct/DiskDescriptor.xml

step "Snapshot it before an 'upgrade', then change data in the new top delta"
run "$PLOOP" snapshot ct/DiskDescriptor.xml
head -c $((2 << 20)) /dev/urandom > chunk2
run "$PLOOP_IO" write ct/DiskDescriptor.xml $((101 << 20)) < chunk2
run "$PLOOP" snapshot-list ct/DiskDescriptor.xml
echo "The map shows which delta holds each range (level 0 = base):"
run "$PLOOP" map ct/DiskDescriptor.xml

step "Merge the snapshot back (the top's changes go into the base file)"
run "$PLOOP" export ct/DiskDescriptor.xml before-merge.raw
run "$PLOOP" snapshot-merge ct/DiskDescriptor.xml
run "$PLOOP" snapshot-list ct/DiskDescriptor.xml
run "$PLOOP" export ct/DiskDescriptor.xml after-merge.raw
run cmp before-merge.raw after-merge.raw && echo "content identical before and after the merge"

step "Grow the disk to 4 GiB, convert to format v1 and back, check every rule"
run "$PLOOP" grow -s 4G ct/DiskDescriptor.xml
run "$PLOOP" info -s ct/DiskDescriptor.xml
run "$PLOOP" convert -v 1 ct/DiskDescriptor.xml
run "$PLOOP" convert -v 2 ct/DiskDescriptor.xml
run "$PLOOP" check -f -c -r ct/root.hds && echo "check: consistent"

if command -v qemu-img >/dev/null; then
	step "QEMU's parallels driver reads the same image"
	run qemu-img check -f parallels ct/root.hds
fi

step "A container disk: ext4 inside a GPT, served by ploopd and mounted"
mkdir -p ct3 root3
run "$PLOOP" init -s 2G ct3/root.hds
run "$PLOOP" mount -m root3 ct3/DiskDescriptor.xml
run "$PLOOP" list
run df -h root3
echo '$ cp -a /usr/share/doc root3/doc && sync'
cp -a /usr/share/doc root3/doc && sync
run du -sh root3/doc

step "Snapshot it while mounted (freeze, switch to a new top delta, thaw), then change files"
run "$PLOOP" snapshot ct3/DiskDescriptor.xml
echo '$ rm -rf root3/doc/[a-m]*; dd if=/dev/urandom of=root3/new bs=1M count=64'
rm -rf root3/doc/[a-m]*
dd if=/dev/urandom of=root3/new bs=1M count=64 status=none
run "$PLOOP" snapshot-list ct3/DiskDescriptor.xml

step "Merge the changes down while mounted, then give deleted space back"
run "$PLOOP" snapshot-merge ct3/DiskDescriptor.xml
run ls -l ct3
echo '$ rm root3/new; sync'
rm root3/new
sync
run "$PLOOP" compact ct3/DiskDescriptor.xml
run ls -l ct3

step "Unmount: the server flushes, clears the dirty flag and exits; every rule checks clean"
run "$PLOOP" umount ct3/DiskDescriptor.xml
run "$PLOOP" check -f -c ct3/root.hds && echo "check: consistent"

step "The simfs layout: a private directory shown as a container root, with a vzquota disk quota"
mkdir -p private4 root4
cp -a /usr/share/doc/bash private4/ 2>/dev/null || mkdir -p private4/bash
echo "Limits: 8 MiB soft, 10 MiB hard (1k blocks), 500/600 inodes, 1 hour of grace."
run "$VZQUOTA" init 104 -p "$D/private4" -b 8192 -B 10240 -i 500 -I 600 -e 1h -n 1h
run "$VZQUOTA" on 104
run "$SIMFS" mount private4 root4 -o quota=104
run "$SIMFS" list
echo "df inside shows the quota's soft limits, not the host's disk:"
run df -h root4
run df -i root4
echo '$ dd if=/dev/urandom of=root4/big bs=1M count=9    # over the soft limit: grace starts'
dd if=/dev/urandom of=root4/big bs=1M count=9 status=none
run "$VZQUOTA" stat 104
echo '$ dd if=/dev/urandom of=root4/more bs=1M count=4   # over the hard limit: refused'
dd if=/dev/urandom of=root4/more bs=1M count=4 status=none 2>&1 | sed 's/^/  /' || true
run "$VZQUOTA" stat 104
echo '$ rm root4/big root4/more'
rm -f root4/big root4/more
run "$VZQUOTA" stat 104
run "$SIMFS" umount root4
run "$VZQUOTA" off 104
run "$VZQUOTA" show 104

step "Done. Containers (vzctl) come with the next issues; see README.md."
