#!/usr/bin/env bash
# simfs against native access and against bindfs, in one run, on the same host filesystem: a tree
# of small files extracted, walked (find + stat, cold and warm), du, 10,000 files created / stat-ed
# / unlinked, rm -rf, and sequential 1 MiB reads and writes. Each configuration has its own copy
# of the directory; times are medians of BENCH_RUNS runs. Prints a markdown table; not a test.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
SIMFS=$ROOT/build/bin/simfs
VZQUOTA=$ROOT/build/bin/vzquota
RUNS=${BENCH_RUNS:-3}
FILES=${BENCH_FILES:-20000}
SEQ_MIB=${BENCH_SEQ_MIB:-1024}
B=${BENCH_DIR:-/var/tmp/simfs-bench}
mkdir -p "$B"
B=$(mktemp -d "$B/run.XXXXXX")
export SIMFS_RUN_DIR=$B/run VZQ_DIR=$B/vzq VZQ_RUN_DIR=$B/vzq-run
mkdir -p "$VZQ_DIR" "$VZQ_RUN_DIR"
URING=/sys/module/fuse/parameters/enable_uring
uring_was=
cleanup() {
	cd /
	[ -n "$uring_was" ] && echo "$uring_was" >"$URING"
	for m in "$B"/mnt-*; do
		[ -d "$m" ] || continue
		"$SIMFS" umount "$m" 2>/dev/null || fusermount3 -u "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
	done
	rm -rf "$B"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
command -v bindfs >/dev/null || { echo "simfs bench: bindfs is missing (apt-get install bindfs)" >&2; exit 1; }

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
now() { date +%s%N; }
timed() {
	local t0 t1
	t0=$(now)
	"$@" >/dev/null 2>"$B/.err" || {
		echo "simfs bench: command failed: $* ($(head -c 300 "$B/.err"))" >&2
		cat "$SIMFS_RUN_DIR"/*.log >&2 2>/dev/null
		exit 1
	}
	t1=$(now)
	awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f\n", (b - a) / 1e9 }'
}
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.4f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# ---- the configurations: name -> directory the workload runs in ----
# simfs on /dev/fuse, and on FUSE over io_uring where the kernel has it (fuse.enable_uring is
# turned on for those mounts only: a connection keeps the transport it started with).
CONFIGS=(native simfs)
declare -A DIR
mkdir -p "$B/native" "$B/priv-simfs" "$B/priv-quota" "$B/priv-bindfs" "$B/mnt-simfs" "$B/mnt-quota" "$B/mnt-bindfs"
DIR[native]=$B/native
"$SIMFS" mount "$B/priv-simfs" "$B/mnt-simfs" -o nouring
DIR[simfs]=$B/mnt-simfs
"$VZQUOTA" -q init 9001 -p "$B/priv-quota" -b 100000000 -B 100000000 -i 10000000 -I 10000000 -e 0 -n 0 >/dev/null
"$VZQUOTA" -q on 9001 -p "$B/priv-quota" >/dev/null
QOPT=quota=9001,nouring
if [ -w "$URING" ]; then
	uring_was=$(cat "$URING")
	echo Y >"$URING"
	mkdir -p "$B/priv-ring" "$B/mnt-ring"
	"$SIMFS" mount "$B/priv-ring" "$B/mnt-ring"
	DIR[simfs-ring]=$B/mnt-ring
	CONFIGS+=(simfs-ring)
	QOPT=quota=9001
fi
"$SIMFS" mount "$B/priv-quota" "$B/mnt-quota" -o "$QOPT"
if [ -n "$uring_was" ]; then
	echo "$uring_was" >"$URING"
	uring_was=
fi
DIR[simfs-quota]=$B/mnt-quota
bindfs "$B/priv-bindfs" "$B/mnt-bindfs"
DIR[bindfs]=$B/mnt-bindfs
CONFIGS+=(simfs-quota bindfs)

# ---- the source tree: FILES small files in 100-file directories, as a tar ----
python3 - "$B/src" "$FILES" <<'PY'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
random.seed(1)
for i in range(n):
    d = os.path.join(root, "d%03d" % (i // 1000), "s%02d" % (i // 100 % 10))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%05d" % i), "wb") as f:
        f.write(os.urandom(random.randint(100, 8000)))
PY
tar -C "$B/src" -cf "$B/tree.tar" .
rm -rf "$B/src"
head -c $((SEQ_MIB << 20)) /dev/urandom >"$B/seq.src"

cat >"$B/cstat.py" <<'PY'
import os, sys
d = sys.argv[1]
os.makedirs(d, exist_ok=True)
names = [os.path.join(d, "n%05d" % i) for i in range(10000)]
for p in names:
    fd = os.open(p, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644); os.write(fd, b"x" * 100); os.close(fd)
for p in names:
    os.stat(p)
for p in names:
    os.unlink(p)
os.rmdir(d)
PY

declare -A RES
# op NAME SETUP COLD CMD: CMD in every configuration, round robin RUNS times (so that a burst of
# load on this shared machine hits all of them alike); SETUP untimed before each run, then sync,
# and with COLD=1 a cache drop. Records the median per configuration.
OPS=()
op() {
	local name=$1 setup=$2 cold=$3 cmd=$4 i c
	declare -A t=()
	OPS+=("$name")
	for i in $(seq "$RUNS"); do
		for c in "${CONFIGS[@]}"; do
			D=${DIR[$c]} sh -c "$setup" >/dev/null 2>&1 || true
			sync
			[ "$cold" = 1 ] && drop_caches
			t[$c]+="$(D=${DIR[$c]} timed sh -c "$cmd") "
		done
	done
	for c in "${CONFIGS[@]}"; do RES[$name,$c]=$(printf '%s\n' ${t[$c]} | median); done
}
EXTRACT='rm -rf "$D/t"; mkdir "$D/t"'
TREE='[ -d "$D/t/d000" ] || { mkdir -p "$D/t" && tar -C "$D/t" -xf '"$B"'/tree.tar; }'
op "extract $FILES small files (tar -x)" "$EXTRACT" 1 'tar -C "$D/t" -xf '"$B"'/tree.tar'
op "find + stat of the tree, cold cache" "$TREE" 1 'find "$D/t" -printf "%s %m %u %Y\n" >/dev/null'
op "find + stat of the tree, warm cache" "$TREE; find \"\$D/t\" -printf '%s\n' >/dev/null" 0 'find "$D/t" -printf "%s %m %u %Y\n" >/dev/null'
op "du -s of the tree, cold cache" "$TREE" 1 'du -s "$D/t" >/dev/null'
op "create + stat + unlink 10,000 files" 'rm -rf "$D/c"' 0 'python3 '"$B"'/cstat.py "$D/c"'
op "rm -rf of the tree" "$TREE" 1 'rm -rf "$D/t"'
op "sequential write $SEQ_MIB MiB, 1 MiB blocks, + fsync" 'rm -f "$D/seq"' 0 'dd if='"$B"'/seq.src of="$D/seq" bs=1M conv=fsync status=none'
op "sequential read $SEQ_MIB MiB, 1 MiB blocks, cold" '[ -f "$D/seq" ] || cp '"$B"'/seq.src "$D/seq"' 1 'dd if="$D/seq" of=/dev/null bs=1M status=none'

# ---- the table ----
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
SIMFS_CONFIGS=(simfs)
[ -n "${DIR[simfs-ring]:-}" ] && SIMFS_CONFIGS+=(simfs-ring)
SIMFS_CONFIGS+=(simfs-quota)
echo "# simfs bench, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, $(uname -r), bindfs $(bindfs --version 2>/dev/null | head -1 | awk '{ print $2 }'), median of $RUNS"
echo "# simfs: /dev/fuse; simfs-ring: FUSE over io_uring; simfs-quota: with a vzquota enforced ($QOPT)"
hdr="| operation |" sep="|---|"
for c in "${CONFIGS[@]}"; do hdr+=" $c |"; sep+="---|"; done
for c in "${SIMFS_CONFIGS[@]}"; do hdr+=" $c vs native | $c vs bindfs |"; sep+="---|---|"; done
echo "$hdr"
echo "$sep"
for o in "${OPS[@]}"; do
	line="| $o |"
	for c in "${CONFIGS[@]}"; do line+=" $(printf '%.3f' "${RES[$o,$c]}") s |"; done
	for c in "${SIMFS_CONFIGS[@]}"; do
		line+=" $(ratio "${RES[$o,native]}" "${RES[$o,$c]}")x | $(ratio "${RES[$o,bindfs]}" "${RES[$o,$c]}")x |"
	done
	echo "$line"
done
echo "(vs native: native time / simfs time, 1.00 = as fast as native; vs bindfs: bindfs time / simfs time, > 1 = faster than bindfs)"
