#!/usr/bin/env bash
# `make bench`: image operations of our ploop against the same work done by qemu-img on qcow2
# (the peer our users know), measured in the same run so that the ratios are fair on a noisy
# machine. Prints a table; BENCHMARKS.md records results. Not a test: nothing here fails on speed.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
PLOOP=$ROOT/build/bin/ploop
PLOOP_IO=$ROOT/build/bin/ploop-io
B=${BENCH_DIR:-/var/tmp/ploop-bench}
RUNS=${BENCH_RUNS:-5}
SNAP_RUNS=${BENCH_SNAP_RUNS:-30}
ONLY=${1:-}
mkdir -p "$B"
B=$(mktemp -d "$B/run.XXXXXX")
trap 'rm -rf "$B"' EXIT
cd "$B"

need_gib=9
avail=$(df -BG --output=avail . | tail -1 | tr -dc 0-9)
if [ "$avail" -lt "$need_gib" ]; then
	echo "bench: needs ${need_gib} GiB free in $B (has ${avail} GiB); set BENCH_DIR" >&2
	exit 1
fi

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; }
now() { date +%s%N; }
# elapsed seconds of a command (stdout/stderr discarded)
timed() {
	local t0 t1
	t0=$(now)
	"$@" >/dev/null 2>&1 || { echo "bench: command failed: $*" >&2; exit 1; }
	t1=$(now)
	awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f", (b - a) / 1e9 }'
}
# compare NAME PEER_NAME SETUP_OURS OURS SETUP_PEER PEER: runs ours and the peer alternately
# RUNS times (each after its setup and a cache drop; setup not timed), reports the medians.
# The order swaps every round (ours first, then the peer first): on this disk a run right after
# the other's large output was deleted (discarded) is up to 2x slower or faster by position alone.
compare() {
	local name=$1 peer_name=$2 setup_ours=$3 ours=$4 setup_peer=$5 peer=$6 a=() b=() i
	for i in $(seq "$RUNS"); do
		if [ $((i % 2)) = 0 ]; then
			eval "$setup_peer" >/dev/null 2>&1
			drop_caches
			b+=("$(timed sh -c "$peer")")
		fi
		eval "$setup_ours" >/dev/null 2>&1
		drop_caches
		a+=("$(timed sh -c "$ours")")
		if [ $((i % 2)) = 1 ]; then
			eval "$setup_peer" >/dev/null 2>&1
			drop_caches
			b+=("$(timed sh -c "$peer")")
		fi
	done
	row "$name" "$(printf '%s\n' "${a[@]}" | median)" "$(printf '%s\n' "${b[@]}" | median)" "$peer_name"
}
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.4f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b / a }'; }
RESULTS=()
# row NAME OURS PEER PEER_NAME: higher "x faster" is better for us
row() {
	RESULTS+=("$(printf '| %-46s | %9.4f s | %9.4f s | %-26s | %5.2fx |' "$1" "$2" "$3" "$4" "$(ratio "$2" "$3")")")
	echo "${RESULTS[-1]}"
}
want() { [ -z "$ONLY" ] || [[ "$1" == *$ONLY* ]]; }

# A file of MIB MiB where every other MiB is random data and the rest zeros.
half_zero_raw() {
	local out=$1 mib=$2
	: >"$out"
	head -c $((mib / 2 * 1048576)) /dev/urandom >"$B/.rand"
	python3 - "$out" "$B/.rand" "$mib" <<'PY'
import sys
out, rnd, mib = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(rnd, "rb") as r, open(out, "wb") as o:
    for i in range(mib):
        o.write(r.read(1 << 20) if i % 2 == 0 else b"\0" * (1 << 20))
PY
	rm -f "$B/.rand"
}

echo "# ploop bench, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, $(uname -r), $(qemu-img --version | head -1)"
echo "| operation | ours | peer | peer command | peer/ours |"
echo "|---|---|---|---|---|"

# ---- snapshot of a 1 TiB image holding 2 GiB (and holding nothing: independent of data size) ----
if want snapshot; then
	mkdir snap
	"$PLOOP" init -s 1T -t none snap/root.hds >/dev/null
	head -c $((2 << 30)) /dev/urandom | "$PLOOP_IO" write snap/DiskDescriptor.xml 0
	qemu-img create -q -f qcow2 -o cluster_size=1M base.qcow2 1T
	qemu-io -f qcow2 -c "write -P 0x5a 0 1G" -c "write -P 0x5b 1G 1G" base.qcow2 >/dev/null
	sync
	ours=$(for i in $(seq "$SNAP_RUNS"); do
		timed "$PLOOP" snapshot snap/DiskDescriptor.xml
		echo
		"$PLOOP" snapshot-delete -u 5fbaabe3-6958-40ff-92a7-860e329aab41 snap/DiskDescriptor.xml >/dev/null
	done | median)
	peer=$(for i in $(seq "$SNAP_RUNS"); do
		timed qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
		echo
		rm -f top.qcow2
	done | median)
	row "snapshot, 1 TiB virtual, 2 GiB data (median of $SNAP_RUNS)" "$ours" "$peer" "qemu-img create -b"
	mkdir snap0
	"$PLOOP" init -s 1T -t none snap0/root.hds >/dev/null
	empty=$(for i in $(seq "$SNAP_RUNS"); do
		timed "$PLOOP" snapshot snap0/DiskDescriptor.xml
		echo
		"$PLOOP" snapshot-delete -u 5fbaabe3-6958-40ff-92a7-860e329aab41 snap0/DiskDescriptor.xml >/dev/null
	done | median)
	row "snapshot, 1 TiB virtual, no data (ours vs ours)" "$empty" "$ours" "ploop snapshot with 2 GiB"
	rm -rf snap snap0 base.qcow2
fi

# ---- check -f -c of a 10 GiB image with 2 GiB allocated, cold cache ----
if want check; then
	mkdir chk
	"$PLOOP" init -s 10G -t none chk/root.hds >/dev/null
	for off in 0 3 6 9; do
		head -c $((512 << 20)) /dev/urandom | "$PLOOP_IO" write chk/DiskDescriptor.xml $((off << 30))
	done
	"$PLOOP" export chk/DiskDescriptor.xml chk.raw
	qemu-img convert -f raw -O qcow2 chk.raw chk.qcow2
	rm -f chk.raw
	ours=$(for i in $(seq "$RUNS"); do drop_caches; timed "$PLOOP" check -f -c chk/root.hds; echo; done | median)
	peer=$(for i in $(seq "$RUNS"); do drop_caches; timed qemu-img check -f qcow2 chk.qcow2; echo; done | median)
	row "check -f -c, 10 GiB, 2 GiB allocated, cold" "$ours" "$peer" "qemu-img check (qcow2)"
	ours=$(for i in $(seq "$RUNS"); do timed "$PLOOP" check -f -c chk/root.hds; echo; done | median)
	peer=$(for i in $(seq "$RUNS"); do timed qemu-img check -f qcow2 chk.qcow2; echo; done | median)
	row "check -f -c, 10 GiB, 2 GiB allocated, warm" "$ours" "$peer" "qemu-img check (qcow2)"
	rm -rf chk chk.qcow2
fi

# ---- merge of a top delta holding 1 GiB of changed clusters into its base, cold ----
if want merge; then
	head -c $((1 << 30)) /dev/urandom >base.data
	head -c $((1 << 30)) /dev/urandom >top.data
	merge_setup() {
		rm -rf m m.qcow2 mt.qcow2
		mkdir m
		"$PLOOP" init -s 4G -t none m/root.hds >/dev/null
		"$PLOOP_IO" write m/DiskDescriptor.xml 0 <base.data
		"$PLOOP" snapshot m/DiskDescriptor.xml >/dev/null
		"$PLOOP_IO" write m/DiskDescriptor.xml $((512 << 20)) <top.data
	}
	qcow_setup() {
		rm -f m.qcow2 mt.qcow2
		qemu-img create -q -f qcow2 m.qcow2 4G
		qemu-io -f qcow2 -c "write -P 0x11 0 1G" m.qcow2 >/dev/null
		qemu-img create -q -f qcow2 -b m.qcow2 -F qcow2 mt.qcow2
		qemu-io -f qcow2 -c "write -P 0x22 512M 1G" mt.qcow2 >/dev/null
	}
	compare "snapshot-merge, 1 GiB changed clusters, cold" "qemu-img commit (qcow2)" \
		merge_setup "$PLOOP snapshot-merge m/DiskDescriptor.xml" qcow_setup "qemu-img commit -q mt.qcow2"
	compare "snapshot-merge vs cp of 1 GiB + sync, cold" "cp 1 GiB + sync" \
		merge_setup "$PLOOP snapshot-merge m/DiskDescriptor.xml" "rm -f cp.out" "cp top.data cp.out && sync cp.out"
	rm -rf m m.qcow2 mt.qcow2 cp.out base.data top.data
fi

# ---- import / export of a 2 GiB raw file, 50% zero clusters, cold ----
if want port; then
	half_zero_raw in.raw 2048
	compare "import 2 GiB raw (50% zero clusters), cold" "qemu-img convert raw->qcow2" \
		"rm -rf imp; mkdir imp" "$PLOOP import in.raw imp/root.hds" \
		"rm -f imp.qcow2" "qemu-img convert -f raw -O qcow2 in.raw imp.qcow2"
	# qemu-img convert leaves its output in the page cache; an image of ours is durable when import
	# returns (data before BAT). The same durability for both:
	compare "import 2 GiB raw (50% zero clusters), cold, both durable" "qemu-img convert + sync" \
		"rm -rf imp; mkdir imp" "$PLOOP import in.raw imp/root.hds" \
		"rm -f imp.qcow2" "qemu-img convert -f raw -O qcow2 in.raw imp.qcow2 && sync imp.qcow2"
	compare "export 2 GiB (50% zero clusters) to raw, cold" "qemu-img convert qcow2->raw" \
		"rm -f exp.raw" "$PLOOP export imp/DiskDescriptor.xml exp.raw" \
		"rm -f qexp.raw" "qemu-img convert -f qcow2 -O raw imp.qcow2 qexp.raw"
	cmp -s exp.raw in.raw || { echo "bench: export differs from the input" >&2; exit 1; }
	rm -rf imp imp.qcow2 exp.raw qexp.raw in.raw
fi

mkdir -p "$ROOT/build"
printf '%s\n' "${RESULTS[@]}" >"$ROOT/build/bench-results.md"
# The other sections, each a script of its own: the block path (mount), then one per component.
for section in mount simfs kernel; do
	[ -x "$ROOT/tests/bench/$section.sh" ] && want "$section" || continue
	echo
	"$ROOT/tests/bench/$section.sh" | tee -a "$ROOT/build/bench-results.md"
done
echo "(peer/ours > 1 means ours is faster; table also in build/bench-results.md)"
