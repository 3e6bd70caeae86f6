#!/usr/bin/env bash
# `tests/bench/run.sh kernel`: fio in a QEMU guest (Debian's kernel, TCG: software emulation, so
# absolute numbers are low; the ratio is what counts) through the dm-ploop target against a loop
# device over a raw file, same jobs in the same boot. Prints a markdown table.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
make -s kernel-module >/dev/null
W=$ROOT/build/kernel/qemu-bench
KO=$ROOT/build/kernel/dm-ploop/dm-ploop.ko GUEST_TEST=$ROOT/kernel/qemu/guest-bench.sh WORK=$W MEM=${MEM:-1024} \
	kernel/qemu/run-guest.sh >/dev/null || { tail -30 "$W/serial.log" >&2; echo "bench kernel: guest run failed" >&2; exit 1; }
echo "# dm-ploop vs loop, fio --direct=1 psync QD1 in a QEMU TCG guest (software emulation), $(date -u +%Y-%m-%d), $(nproc) host CPUs"
echo "| fio job | loop on raw file | dm-ploop | ploop/loop |"
echo "|---|---|---|---|"
grep '^BENCH ' "$W/serial.log" | awk '
	{ key = $2; if ($3 == "/dev/loop0") { l[key] += $4; li[key] += $5; nl[key]++ } else { p[key] += $4; pi[key] += $5; np[key]++ }
	  if (!(key in seen)) { seen[key] = 1; order[++n] = key } }
	END { for (i = 1; i <= n; i++) { k = order[i]; lb = l[k] / nl[k]; pb = p[k] / np[k]
		printf "| %s | %.1f MiB/s (%d IOPS) | %.1f MiB/s (%d IOPS) | %.2fx |\n", k, lb / 1024, li[k] / nl[k], pb / 1024, pi[k] / np[k], (lb ? pb / lb : 0) } }'
