#!/bin/bash
# Writes kernel/patches/0001-dm-ploop-add-ploop-image-target.patch: kernel/dm-ploop/dm-ploop.c and
# ploop/ploop_format.h as new files under drivers/md, plus the Kconfig, Makefile and MAINTAINERS
# entries, against Debian's linux-source-6.1 tree (unpacked by check.sh). Deterministic output,
# so check.sh can tell whether the committed series matches the sources.
# Usage: mkpatch.sh [LINUX_TREE] [OUT]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TREE=${1:-$ROOT/build/kernel/linux-source/linux-source-6.1}
OUT=${2:-$HERE/0001-dm-ploop-add-ploop-image-target.patch}
for f in drivers/md/Kconfig drivers/md/Makefile MAINTAINERS; do
	[ -f "$TREE/$f" ] || { echo "mkpatch: no $TREE/$f (run make kernel-patch-check first)" >&2; exit 1; }
done
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
mkdir -p "$W/drivers/md"
cp "$TREE/drivers/md/Kconfig" "$TREE/drivers/md/Makefile" "$W/drivers/md/"
cp "$TREE/MAINTAINERS" "$W/"
export GIT_AUTHOR_NAME="ploop developers" GIT_AUTHOR_EMAIL="ploop@example.invalid"
export GIT_COMMITTER_NAME="$GIT_AUTHOR_NAME" GIT_COMMITTER_EMAIL="$GIT_AUTHOR_EMAIL"
export GIT_AUTHOR_DATE="2026-11-26T12:00:00Z" GIT_COMMITTER_DATE="2026-11-26T12:00:00Z"
cd "$W"
git init -q . && git add -A && git commit -q -m base

cp "$ROOT/kernel/dm-ploop/dm-ploop.c" "$ROOT/ploop/ploop_format.h" drivers/md/
python3 - <<'PY'
import re
k = open("drivers/md/Kconfig").read()
entry = '''config DM_PLOOP
	tristate "ploop image target"
	depends on BLK_DEV_DM
	help
	  A target serving a chain of ploop v2 images, the disk format of
	  OpenVZ containers: a base image (ploop or raw) and snapshots on
	  top of it, each a regular file.  Writes allocate clusters in the
	  top image, copying clusters held by lower images up first.  A
	  snapshot is a table reload with a new top; the "merge" message
	  folds the image below the top into it.

	  To compile this code as a module, choose M here: the module will
	  be called dm-ploop.

	  If unsure, say N.

'''
k = k.replace("config DM_INIT\n", entry + "config DM_INIT\n", 1)
open("drivers/md/Kconfig", "w").write(k)
m = open("drivers/md/Makefile").read()
m = re.sub(r"(obj-\$\(CONFIG_DM_DUST\)\s*\+= dm-dust.o\n)", r"\1obj-$(CONFIG_DM_PLOOP)\t\t+= dm-ploop.o\n", m, 1)
open("drivers/md/Makefile", "w").write(m)
mt = open("MAINTAINERS").read()
entry = '''DEVICE-MAPPER PLOOP TARGET
M:	ploop developers <ploop@example.invalid>
L:	dm-devel@redhat.com
S:	Maintained
F:	drivers/md/dm-ploop.c
F:	drivers/md/ploop_format.h

'''
i = mt.index("DEVICE-MAPPER  (LVM)\n")
j = mt.index("\n\n", i) + 2
mt = mt[:j] + entry + mt[j:]
open("MAINTAINERS", "w").write(mt)
PY
git add -A
git commit -q -F - <<'MSG'
dm ploop: add a target for ploop v2 image chains

Add "ploop", a device-mapper target serving a chain of ploop v2 deltas
(the image format of OpenVZ containers) from regular files.

Table line:
  <start> <len> ploop <cluster_log> [raw@]<base> ... <top>

Reads resolve through the chain to the topmost delta holding a cluster,
or read zeros.  A write to a cluster the top lacks appends a cluster to
the top file, copying the old content up from a lower delta first; the
data is synced before its BAT entry is written.  Flush and FUA from
above sync the top file.  Headers are checked as the OpenVZ kernel does:
v2 only, the dirty marker on a writable top, the minimal first block
offset, BAT entries inside the file and not shared.

A snapshot is a table reload with a new, empty top.  The "merge"
message copies every cluster of the delta below the top into the top
and drops it from the chain.  The on-disk format header is shared with
the userspace tools.

Signed-off-by: ploop developers <ploop@example.invalid>
MSG
git format-patch -q -1 --stdout >"$OUT"
echo "mkpatch: wrote $OUT"
