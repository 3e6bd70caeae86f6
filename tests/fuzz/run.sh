#!/usr/bin/env bash
# Runs one libFuzzer target for a bounded time over a scratch copy of its seed corpus (the repo is
# never written), keeps any crashing input under /tmp, and ends with one "ok"/"not ok" line.
# Usage: tests/fuzz/run.sh TARGET_BINARY SECONDS [extra libFuzzer flags...]
set -u

if [ $# -lt 2 ]; then
	echo "usage: $0 TARGET_BINARY SECONDS [libFuzzer flags...]" >&2
	exit 2
fi
bin=$1
secs=$2
shift 2
name=$(basename "$bin")
here=$(cd "$(dirname "$0")" && pwd)
seeds=$here/corpus/$name
dict=$here/$name.dict

if [ ! -x "$bin" ]; then
	echo "not ok fuzz/$name (no executable $bin; build it with make fuzz-build)"
	exit 1
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/fuzz-$name.XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT
mkdir "$work/corpus" "$work/artifacts"
if [ -d "$seeds" ]; then
	cp -- "$seeds"/* "$work/corpus/" 2>/dev/null
fi

args=(-max_total_time="$secs" -rss_limit_mb=2048 -timeout=30 -print_final_stats=1
	-artifact_prefix="$work/artifacts/")
[ -f "$dict" ] && args+=(-dict="$dict")
# UBSan reports are failures, not warnings; leaks are found by libFuzzer's own LeakSanitizer pass.
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}

echo "fuzzing $name for ${secs}s: $(ls "$work/corpus" | wc -l) seeds from ${seeds#"$PWD"/}"
"$bin" "${args[@]}" "$@" "$work/corpus" 2>&1 | tee "$work/log"
rc=${PIPESTATUS[0]}
execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log" | tail -n 1)
cov=$(grep -oE '(DONE|INITED) +cov: [0-9]+ ft: [0-9]+' "$work/log" | tail -n 1 | sed -E 's/.*cov: ([0-9]+) ft: ([0-9]+)/\1 edges, \2 features/')
corpus=$(ls "$work/corpus" | wc -l)

if [ "$rc" -eq 0 ]; then
	echo "ok fuzz/$name (${execs:-0} execs, ${cov:-no coverage line}, corpus $corpus)"
	exit 0
fi

# Keep what it found: the artifacts and the log, outside the scratch directory.
kind=$(ls "$work/artifacts" 2>/dev/null | grep -oE '^(crash|leak|timeout|oom|slow-unit)' | sort -u | paste -sd, -)
keep=$(mktemp -d "${TMPDIR:-/tmp}/fuzz-found-$name.XXXXXX")
cp -- "$work/artifacts"/* "$keep/" 2>/dev/null
cp -- "$work/log" "$keep/fuzz.log"
for f in "$keep"/*; do
	[ "$(basename "$f")" = fuzz.log ] || echo "reproducer: $f (rerun: $bin $f)"
done
echo "not ok fuzz/$name (exit $rc: ${kind:-no artifact}; ${execs:-?} execs; kept in $keep)"
exit 1
