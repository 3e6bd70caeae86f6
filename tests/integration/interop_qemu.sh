#!/usr/bin/env bash
# Interoperability with QEMU's parallels driver, an independent reader and writer of ploop deltas.
# 1. Deltas our tool writes (v1/v2, several cluster sizes, expanded/preallocated, imported, grown,
#    merged, converted) pass `qemu-img check`, and qemu-img reads each single delta exactly as
#    `ploop export DELTA` does.
# 2. Images qemu-img/qemu-io create are read, checked, described and snapshotted/merged by our tool.
# runner: isolated (touches nothing another test looks at: tests/run may run it beside them)
source "$(dirname "$0")/../lib.sh"

MiB=1048576
if ! command -v qemu-img >/dev/null || ! command -v qemu-io >/dev/null; then
	ok "interop_qemu # SKIP qemu-img/qemu-io not installed (apt-get install qemu-utils)"
	finish
fi

# put IMAGE MODEL OFFSET LENGTH: LENGTH random bytes at OFFSET through libploop and into MODEL.
put() {
	head -c "$4" /dev/urandom >"$T/.chunk"
	if ! "$PLOOP_IO" write "$1" "$3" <"$T/.chunk" 2>"$T/.err"; then
		not_ok "write $4 bytes at $3 into $1: $(head -c 300 "$T/.err")"
		return 1
	fi
	dd if="$T/.chunk" of="$2" bs=64K seek="$3" oflag=seek_bytes conv=notrunc status=none
}

# qput IMAGE MODEL OFFSET LENGTH BYTE: qemu-io writes the pattern BYTE (0xNN) into the single delta IMAGE.
qput() {
	if ! qemu-io -f parallels -c "write -P $5 $3 $4" "$1" >"$T/.err" 2>&1; then
		not_ok "qemu-io write $4 bytes at $3 into $1: $(head -c 300 "$T/.err")"
		return 1
	fi
	head -c "$4" /dev/zero | tr '\0' "\\$(printf '%03o' "$5")" |
		dd of="$2" bs=64K seek="$3" oflag=seek_bytes conv=notrunc status=none
}

quiet() { "$@" >"$T/.out" 2>&1; }

deltas() {
	local dir f
	dir=$(dirname "$1")
	sed -n 's:.*<File>\(.*\)</File>.*:\1:p' "$1" | while IFS= read -r f; do
		case $f in /*) echo "$f" ;; *) echo "$dir/$f" ;; esac
	done
}

# same_content NAME SOURCE MODEL: `ploop export SOURCE` equals MODEL byte for byte.
same_content() {
	local out=$T/.export rc
	rm -f "$out"
	"$PLOOP" export "$2" "$out" >/dev/null 2>"$T/.err"
	rc=$?
	if [ $rc != 0 ]; then
		not_ok "$1 (export exit $rc: $(head -c 300 "$T/.err"))"
	elif cmp -s "$out" "$3"; then
		ok "$1"
	else
		not_ok "$1 ($(cmp "$out" "$3" 2>&1 | head -1); size $(stat -c %s "$out") vs $(stat -c %s "$3"))"
	fi
}

# qemu_reads NAME DELTA: qemu-img check accepts DELTA; qemu-img convert of it equals our export of it
# (a one-delta chain), and qemu-img compare agrees.
qemu_reads() {
	local name=$1 img=$2 rc
	qemu-img check -f parallels "$img" >"$T/.qc" 2>&1
	rc=$?
	if [ $rc = 0 ] && grep -q '^No errors were found on the image' "$T/.qc" &&
		! grep -qE 'ERROR|Leaked|leaked|corrupt' "$T/.qc"; then ok "$name: qemu-img check"; else
		not_ok "$name: qemu-img check (exit $rc: $(tr '\n' ' ' <"$T/.qc" | head -c 300))"
	fi
	rm -f "$T/q.raw" "$T/e.raw"
	if ! qemu-img convert -f parallels -O raw "$img" "$T/q.raw" 2>"$T/.err"; then
		not_ok "$name: qemu-img convert ($(head -c 300 "$T/.err"))"
		return
	fi
	if ! "$PLOOP" export "$img" "$T/e.raw" 2>"$T/.err"; then
		not_ok "$name: ploop export of the delta ($(head -c 300 "$T/.err"))"
		return
	fi
	if cmp -s "$T/q.raw" "$T/e.raw"; then ok "$name: qemu-img convert = ploop export"; else
		not_ok "$name: qemu-img convert != ploop export ($(cmp "$T/q.raw" "$T/e.raw" 2>&1 | head -1); sizes $(stat -c %s "$T/q.raw") $(stat -c %s "$T/e.raw"))"
	fi
	qemu-img compare -f parallels -F raw "$img" "$T/e.raw" >"$T/.qc" 2>&1
	rc=$?
	if [ $rc = 0 ]; then ok "$name: qemu-img compare"; else
		not_ok "$name: qemu-img compare (exit $rc: $(tr '\n' ' ' <"$T/.qc" | head -c 300))"
	fi
}

# qemu_reads_all NAME DD: qemu_reads on every delta of DD.
qemu_reads_all() {
	local f n=0
	while IFS= read -r f; do
		qemu_reads "$1 [delta $n]" "$f"
		n=$((n + 1))
	done < <(deltas "$2")
}

# ---- 1. our images, read by qemu --------------------------------------------------------------------------------
# shape NAME SIZE INIT-OPTIONS...: init + unaligned writes across cluster boundaries.
shape() {
	local name=$1 size=$2
	shift 2
	mkdir "$name"
	if ! "$PLOOP" init -s "$size" "$@" -t none "$name/root.hds" >"$T/.out" 2>&1; then
		not_ok "$name: init $* ($(head -c 300 "$T/.out"))"
		return 1
	fi
	truncate -s "$size" "m.$name"
	put "$name/DiskDescriptor.xml" "m.$name" 12345 100000
	put "$name/DiskDescriptor.xml" "m.$name" $((3 * MiB - 511)) $((MiB + 1023))
	put "$name/DiskDescriptor.xml" "m.$name" $(($(stat -c %s "m.$name") - 4097)) 4097
}

for spec in "v2b64 12M -v 2 -b 64" "v2b256 12M -v 2 -b 256" "v2b2048 12M -v 2 -b 2048" \
	"v1b64 12M -v 1 -b 64" "v1b256 12M -v 1 -b 256" "v1b2048 12M -v 1 -b 2048" \
	"v2prealloc 10M -v 2 -b 256 -f preallocated" "v1prealloc 10M -v 1 -b 2048 -f preallocated"; do
	# shellcheck disable=SC2086
	set -- $spec
	shape "$@" || continue
	same_content "$1: ploop export = model" "$1/DiskDescriptor.xml" "m.$1"
	qemu_reads "$1" "$1/root.hds"
done

# Imported images: only the non-zero clusters are stored.
head -c $((2 * MiB + 777)) /dev/urandom >imp.raw
truncate -s $((9 * MiB)) imp.raw
head -c 5000 /dev/urandom | dd of=imp.raw bs=64K seek=$((7 * MiB + 3)) oflag=seek_bytes conv=notrunc status=none
mkdir imp1 imp2
check "import (v2, default clusters)" "$PLOOP" import imp.raw imp1/root.hds
qemu_reads "import v2" imp1/root.hds
check "import -v 1 -b 64" "$PLOOP" import -v 1 -b 64 imp.raw imp2/root.hds
qemu_reads "import v1 b64" imp2/root.hds
rm -f "$T/e.raw"
"$PLOOP" export imp2/root.hds "$T/e.raw" 2>/dev/null
check "import v1 b64: content" cmp -s "$T/e.raw" imp.raw

# Grow with BAT relocation: 32 KiB clusters, 16M -> 300M needs a second BAT cluster.
for v in 1 2; do
	shape "grow$v" 16M -v "$v" -b 64 || continue
	check "grow$v: grow -s 300M" "$PLOOP" grow -s 300M "grow$v/DiskDescriptor.xml"
	truncate -s 300M "m.grow$v"
	put "grow$v/DiskDescriptor.xml" "m.grow$v" $((300 * MiB - 40000)) 30000
	same_content "grow$v: ploop export = model" "grow$v/DiskDescriptor.xml" "m.grow$v"
	qemu_reads "grow v$v (BAT relocated)" "grow$v/root.hds"
done
# Growing a single delta file.
shape gfile 8M -v 2 -b 128
check "gfile: grow -s 64M of the delta file" "$PLOOP" grow -s 64M gfile/root.hds
qemu_reads "grow of a delta file" gfile/root.hds

# A chain: every delta alone is a valid parallels image; after merges, the base holds everything.
shape chain 20M -v 2 -b 256
quiet "$PLOOP" snapshot chain/DiskDescriptor.xml
put chain/DiskDescriptor.xml m.chain $((5 * MiB + 3)) $((2 * MiB))
quiet "$PLOOP" snapshot chain/DiskDescriptor.xml
put chain/DiskDescriptor.xml m.chain $((MiB - 1)) 2
put chain/DiskDescriptor.xml m.chain $((19 * MiB)) 100
qemu_reads_all "chain of 3" chain/DiskDescriptor.xml
check "chain: snapshot-merge" quiet "$PLOOP" snapshot-merge chain/DiskDescriptor.xml
qemu_reads_all "chain after snapshot-merge" chain/DiskDescriptor.xml
check "chain: snapshot-merge -A" quiet "$PLOOP" snapshot-merge -A chain/DiskDescriptor.xml
qemu_reads "chain after snapshot-merge -A" chain/root.hds
same_content "chain after merges: qemu-visible base = model" chain/root.hds m.chain

# convert -v on a chain of two.
shape conv 12M -v 2 -b 128
quiet "$PLOOP" snapshot conv/DiskDescriptor.xml
put conv/DiskDescriptor.xml m.conv $((6 * MiB + 100)) 300000
check "conv: convert -v 1" quiet "$PLOOP" convert -v 1 conv/DiskDescriptor.xml
qemu_reads_all "after convert -v 1" conv/DiskDescriptor.xml
check "conv: convert -v 2" quiet "$PLOOP" convert -v 2 conv/DiskDescriptor.xml
qemu_reads_all "after convert -v 2" conv/DiskDescriptor.xml
check "conv: merge" quiet "$PLOOP" snapshot-merge conv/DiskDescriptor.xml
qemu_reads "conv after merge" conv/root.hds
same_content "conv: content" conv/DiskDescriptor.xml m.conv

# convert -f preallocated of an expanded image.
shape pre 10M -v 2 -b 64
check "pre: convert -f preallocated" quiet "$PLOOP" convert -f preallocated pre/DiskDescriptor.xml
qemu_reads "after convert -f preallocated" pre/root.hds

# prefix_is EXPORT MODEL: EXPORT starts with MODEL and any bytes past it are zeros.
prefix_is() {
	local n
	n=$(stat -c %s "$2")
	cmp -s -n "$n" "$1" "$2" && [ "$(stat -c %s "$1")" -ge "$n" ] &&
		cmp -s -n $(($(stat -c %s "$1") - n)) <(tail -c +$((n + 1)) "$1") /dev/zero
}

# ---- 2. qemu's images, read by us --------------------------------------------------------------------------------
# flags IMG: the m_Flags word of a delta header.
flags() { od -An -tu4 -j52 -N4 "$1" | tr -d ' '; }

# qshape NAME SIZE_BYTES [qemu-img create options]: qemu-img create + qemu-io pattern writes.
qshape() {
	local name=$1 size=$2
	shift 2
	mkdir "$name"
	if ! qemu-img create -f parallels "$@" "$name/img.hds" "$size" >"$T/.out" 2>&1; then
		not_ok "$name: qemu-img create ($(head -c 300 "$T/.out"))"
		return 1
	fi
	truncate -s "$size" "m.$name"
	qput "$name/img.hds" "m.$name" 100000 300000 0xab
	qput "$name/img.hds" "m.$name" $((size / 2 - 1000)) 70000 0x5c
	qput "$name/img.hds" "m.$name" $((size - 3000)) 3000 0x01
	qput "$name/img.hds" "m.$name" 101000 1000 0xee
}

for spec in "q64k 10240000 -o cluster_size=64K" "q1m 31457280 -o cluster_size=1M" "qdef 20971520" \
	"q32k 7340032 -o cluster_size=32K" "q256k 5243392 -o cluster_size=256K"; do
	# shellcheck disable=SC2086
	set -- $spec
	name=$1 size=$2
	case "$spec" in
	*cluster_size=32K*) cs=32768 ;; *cluster_size=64K*) cs=65536 ;; *cluster_size=256K*) cs=262144 ;;
	*) cs=1048576 ;;
	esac
	# New deltas hold whole clusters: a snapshot of an odd-sized disk rounds it up (zeros appended).
	rsize=$(((size + cs - 1) / cs * cs))
	qshape "$@" || continue
	img=$name/img.hds
	rm -f "$T/q.raw"
	qemu-img convert -f parallels -O raw "$img" "$T/q.raw"
	check "$name: qemu-img's own view equals the model" cmp -s "$T/q.raw" "m.$name"
	same_content "$name: ploop export = model" "$img" "m.$name"
	# check -f -c -r: rc 7 when qemu left CIF_Empty on a non-empty image (upstream 1.15 does the same).
	want=0
	[ $(($(flags "$img") & 1)) = 1 ] && want=7
	expect_rc "$name: ploop check -f -c -r (CIF_Empty=$(($(flags "$img") & 1)))" $want "$PLOOP" check -f -c -r "$img"
	cp "$img" "$name/empty-flag.hds"
	printf '\001' | dd of="$name/empty-flag.hds" bs=1 seek=52 conv=notrunc status=none
	expect_rc "$name: check -f -c -r with a stray CIF_Empty" 7 "$PLOOP" check -f -c -r "$name/empty-flag.hds"
	expect_rc "$name: check -f (rw) repairs the stray CIF_Empty" 0 "$PLOOP" check -f "$name/empty-flag.hds"
	check "$name: CIF_Empty cleared" test "$(flags "$name/empty-flag.hds")" = 0
	expect_rc "$name: check -f -c -r after the repair" 0 "$PLOOP" check -f -c -r "$name/empty-flag.hds"
	check "$name: the repair changed nothing else" cmp -s "$img" "$name/empty-flag.hds"
	[ "$want" = 7 ] && quiet "$PLOOP" check -f "$img"

	check "$name: restore-descriptor" quiet "$PLOOP" restore-descriptor "$name" "$img"
	check "$name: restore-descriptor: Disk_size is the image's size" \
		grep -q "<Disk_size>$((size / 512))</Disk_size>" "$name/DiskDescriptor.xml"
	same_content "$name: descriptor content" "$name/DiskDescriptor.xml" "m.$name"
	check "$name: snapshot on top of qemu's image" quiet "$PLOOP" snapshot "$name/DiskDescriptor.xml"
	check "$name: snapshot rounds the virtual size up to a whole cluster" \
		test "$("$PLOOP" info -s "$name/DiskDescriptor.xml" | sed -n 's/^size:\t*//p')" = $((rsize / 512))
	check "$name: the descriptor says the same size" \
		grep -q "<Disk_size>$((rsize / 512))</Disk_size>" "$name/DiskDescriptor.xml"
	put "$name/DiskDescriptor.xml" "m.$name" 99999 200003
	put "$name/DiskDescriptor.xml" "m.$name" $((size - 5000)) 4999
	# (The size is checked once above; here the content of the model's range, the rest must be zeros.)
	rm -f "$T/e.raw"
	"$PLOOP" export "$name/DiskDescriptor.xml" "$T/e.raw" 2>/dev/null
	check "$name: snapshot + write: content" prefix_is "$T/e.raw" "m.$name"
	check "$name: snapshot-merge into qemu's image" quiet "$PLOOP" snapshot-merge "$name/DiskDescriptor.xml"
	rm -f "$T/e.raw"
	"$PLOOP" export "$name/DiskDescriptor.xml" "$T/e.raw" 2>/dev/null
	check "$name: after merge: content" prefix_is "$T/e.raw" "m.$name"
	check "$name: after merge, qemu sees the $rsize-byte disk" \
		test "$(qemu-img info --output=json "$img" | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')" = "$rsize"
	expect_rc "$name: merged image passes ploop check -f -c -r" 0 "$PLOOP" check -f -c -r "$img"
	qemu_reads "$name merged by us" "$img"
done

# qemu-io writing into images our init made (CIF_Empty set at creation, which qemu leaves alone).
for v in 1 2; do
	name=qw$v
	mkdir "$name"
	quiet "$PLOOP" init -s 6M -v "$v" -b 128 -t none "$name/root.hds"
	truncate -s 6M "m.$name"
	qput "$name/root.hds" "m.$name" 70000 200000 0x3c
	qput "$name/root.hds" "m.$name" $((6 * MiB - 512)) 512 0xc3
	same_content "$name: qemu-io wrote into our v$v image: ploop export = model" "$name/DiskDescriptor.xml" "m.$name"
	want=0
	[ $(($(flags "$name/root.hds") & 1)) = 1 ] && want=7
	expect_rc "$name: check -f -c -r after qemu's writes (CIF_Empty=$((want / 7)))" $want \
		"$PLOOP" check -f -c -r "$name/root.hds"
	expect_rc "$name: check -f (rw)" 0 "$PLOOP" check -f "$name/root.hds"
	expect_rc "$name: check -f -c -r after the rw check" 0 "$PLOOP" check -f -c -r "$name/root.hds"
	quiet "$PLOOP" snapshot "$name/DiskDescriptor.xml"
	put "$name/DiskDescriptor.xml" "m.$name" 1 $((MiB))
	check "$name: snapshot-merge" quiet "$PLOOP" snapshot-merge "$name/DiskDescriptor.xml"
	same_content "$name: after our snapshot + write + merge" "$name/DiskDescriptor.xml" "m.$name"
	qemu_reads "$name after our merge" "$name/root.hds"
done

finish
