#!/usr/bin/env bash
# The block path benchmark of `make bench`: fio through ext4 on our mounted image (ploopd + loop
# with direct I/O), against the same jobs on ext4 over a loop device with direct I/O on a raw file
# (the physical limit of this stack) and on QEMU's FUSE export of a qcow2 chain of the same depth
# (qemu-storage-daemon, loop without direct I/O as its FUSE export needs before 10.1), all in one
# run. Prints a table of ratios to raw loop. Cleans up every mount, daemon and loop device.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
PLOOP=$ROOT/build/bin/ploop
B=${BENCH_DIR:-/var/tmp/ploop-bench}
RUNTIME=${BENCH_FIO_RUNTIME:-6}
SIZE_G=${BENCH_DISK_GIB:-4}
mkdir -p "$B"
B=$(mktemp -d "$B/mount.XXXXXX")
LOOPS=()
QSD_PID=
cleanup() {
	set +e
	for m in "$B"/mnt-*; do mountpoint -q "$m" && umount "$m"; done
	for d in "$B"/ours-*; do [ -f "$d/DiskDescriptor.xml" ] && "$PLOOP" umount "$d/DiskDescriptor.xml" >/dev/null 2>&1; done
	for l in "${LOOPS[@]}"; do losetup -d "$l" 2>/dev/null; done
	if [ -n "$QSD_PID" ]; then kill "$QSD_PID"; wait "$QSD_PID"; fi 2>/dev/null
	for f in "$B"/export-*; do mountpoint -q "$f" && umount -l "$f"; done
	rm -rf "$B"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if ! command -v qemu-storage-daemon >/dev/null; then
	echo "bench mount: qemu-storage-daemon is missing (make deps installs qemu-system-common)" >&2
	exit 1
fi

# fio_job NAME DIR ARGS...: prints the job's result (MiB/s for 1M jobs, IOPS otherwise).
fio_job() {
	local name=$1 dir=$2 out unit
	shift 2
	out=$(fio --name="$name" --directory="$dir" --filename=bench.dat --size=1G --ioengine=io_uring --direct=1 \
		--time_based --runtime="$RUNTIME" --ramp_time=1 --output-format=json "$@" 2>/dev/null)
	unit=iops
	case " $* " in *" --bs=1M "*) unit=bw ;; esac
	python3 -c '
import json, sys
j = json.loads(sys.stdin.read())["jobs"][0]
op = "write" if j["write"]["io_bytes"] > j["read"]["io_bytes"] else "read"
v = j[op]["bw"] / 1024 if sys.argv[1] == "bw" else j[op]["iops"]
print("%.0f" % v)' "$unit" <<<"$out"
}

JOBS=(
	"seqread-1M-qd16 --rw=read --bs=1M --iodepth=16"
	"seqwrite-1M-qd16 --rw=write --bs=1M --iodepth=16"
	"randread-4k-qd1 --rw=randread --bs=4k --iodepth=1"
	"randread-4k-qd32 --rw=randread --bs=4k --iodepth=32"
	"randwrite-4k-qd1 --rw=randwrite --bs=4k --iodepth=1"
	"randwrite-4k-qd32 --rw=randwrite --bs=4k --iodepth=32"
	"fsync-4k-write --rw=randwrite --bs=4k --iodepth=1 --fsync=1"
)

# Lays out the fio file (so every job hits allocated space) in a mounted filesystem.
layout() { fio --name=layout --directory="$1" --filename=bench.dat --size=1G --rw=write --bs=1M --direct=1 \
	--ioengine=io_uring --iodepth=16 >/dev/null 2>&1 && sync; }

declare -A RES

run_jobs() {
	local cfg=$1 dir=$2 j name
	for j in "${JOBS[@]}"; do
		name=${j%% *}
		# shellcheck disable=SC2086
		RES[$cfg:$name]=$(fio_job "$name" "$dir" ${j#* })
		echo "  $cfg $name ${RES[$cfg:$name]}" >&2
	done
}

# raw: a preallocated raw file, loop with direct I/O, ext4.
setup_raw() {
	local dev
	fallocate -l "${SIZE_G}G" "$B/raw.img"
	dev=$(losetup --direct-io=on --show -f "$B/raw.img")
	LOOPS+=("$dev")
	mkfs.ext4 -q -F "$dev"
	mkdir -p "$B/mnt-raw"
	mount "$dev" "$B/mnt-raw"
}

# ours with DEPTH deltas: data laid out, then DEPTH-1 snapshots each followed by some writes.
setup_ours() {
	local depth=$1 d=$B/ours-$1
	mkdir -p "$d" "$B/mnt-ours$1"
	"$PLOOP" init -s "${SIZE_G}G" "$d/root.hds" >/dev/null
	"$PLOOP" mount -m "$B/mnt-ours$1" "$d/DiskDescriptor.xml" >/dev/null
	layout "$B/mnt-ours$1"
	for i in $(seq 2 "$depth"); do
		"$PLOOP" snapshot "$d/DiskDescriptor.xml" >/dev/null
		fio --name=mix --directory="$B/mnt-ours$1" --filename=bench.dat --size=1G --rw=randwrite --bs=64k \
			--number_ios=800 --direct=1 --ioengine=io_uring >/dev/null 2>&1
	done
	sync
}

# QEMU's FUSE export of a qcow2 chain of DEPTH images (1 MiB clusters), loop without direct I/O.
setup_qemu() {
	local depth=$1 prev="" img dev exp=$B/export-$1
	for i in $(seq 1 "$depth"); do
		img=$B/q$1-$i.qcow2
		if [ -z "$prev" ]; then
			qemu-img create -q -f qcow2 -o cluster_size=1M "$img" "${SIZE_G}G"
		else
			qemu-img create -q -f qcow2 -o cluster_size=1M -b "$prev" -F qcow2 "$img"
		fi
		prev=$img
	done
	: >"$exp"
	qemu-storage-daemon --blockdev "driver=file,node-name=f,filename=$img,cache.direct=on,aio=io_uring" \
		--blockdev driver=qcow2,node-name=q,file=f \
		--export "type=fuse,id=e,node-name=q,mountpoint=$exp,writable=on" >/dev/null 2>&1 &
	QSD_PID=$!
	for _ in $(seq 100); do mountpoint -q "$exp" && break; sleep 0.1; done
	dev=$(losetup --show -f "$exp")
	LOOPS+=("$dev")
	mkfs.ext4 -q -F "$dev"
	mkdir -p "$B/mnt-qemu$1"
	mount "$dev" "$B/mnt-qemu$1"
	layout "$B/mnt-qemu$1"
}

teardown_qemu() {
	umount "$B/mnt-qemu$1"
	losetup -d "${LOOPS[-1]}"
	unset 'LOOPS[-1]'
	kill "$QSD_PID"
	wait "$QSD_PID" 2>/dev/null
	QSD_PID=
}

echo "# block path: fio through ext4, ${RUNTIME}s per job, $(nproc) CPUs, $(uname -r)" >&2
setup_raw
layout "$B/mnt-raw"
run_jobs raw "$B/mnt-raw"
umount "$B/mnt-raw"

for depth in 1 4; do
	setup_ours "$depth"
	run_jobs "ours$depth" "$B/mnt-ours$depth"
	# Snapshot of the mounted image: command to return (the server freezes, switches, thaws).
	t=()
	for i in $(seq 5); do
		s=$(date +%s%N)
		"$PLOOP" snapshot "$B/ours-$depth/DiskDescriptor.xml" >/dev/null
		e=$(date +%s%N)
		t+=($(((e - s) / 1000)))
		"$PLOOP" snapshot-merge "$B/ours-$depth/DiskDescriptor.xml" >/dev/null
	done
	RES[ours$depth:snapshot-us]=$(printf '%s\n' "${t[@]}" | sort -n | sed -n 3p)
	"$PLOOP" umount "$B/ours-$depth/DiskDescriptor.xml" >/dev/null
	setup_qemu "$depth"
	run_jobs "qemu$depth" "$B/mnt-qemu$depth"
	teardown_qemu "$depth"
done

# Copy-on-write cost: first 4 KiB writes at 1 MiB stride over a full lower delta (1 MiB clusters).
cow() {
	local out
	out=$(fio --name=cow --directory="$1" --filename=bench.dat --size=1G --ioengine=io_uring --direct=1 \
		--rw=write:1020k --bs=4k --iodepth="$2" --number_ios=1024 --output-format=json 2>/dev/null)
	python3 -c 'import json, sys; print("%.0f" % json.loads(sys.stdin.read())["jobs"][0]["write"]["iops"])' <<<"$out"
}
d=$B/ours-cow
mkdir -p "$d" "$B/mnt-cow"
"$PLOOP" init -s "${SIZE_G}G" "$d/root.hds" >/dev/null
"$PLOOP" mount -m "$B/mnt-cow" "$d/DiskDescriptor.xml" >/dev/null
layout "$B/mnt-cow"
for qd in 1 32; do
	"$PLOOP" snapshot "$d/DiskDescriptor.xml" >/dev/null
	RES[ours:cow-qd$qd]=$(cow "$B/mnt-cow" "$qd")
done
"$PLOOP" umount "$d/DiskDescriptor.xml" >/dev/null
setup_qemu 1
for qd in 1 32; do
	# A fresh overlay over the full image for each run.
	umount "$B/mnt-qemu1"
	losetup -d "${LOOPS[-1]}"; unset 'LOOPS[-1]'
	kill "$QSD_PID"; wait "$QSD_PID" 2>/dev/null
	qemu-img create -q -f qcow2 -o cluster_size=1M -b "$B/q1-1.qcow2" -F qcow2 "$B/q1-top$qd.qcow2"
	qemu-storage-daemon --blockdev "driver=file,node-name=f,filename=$B/q1-top$qd.qcow2,cache.direct=on,aio=io_uring" \
		--blockdev driver=qcow2,node-name=q,file=f \
		--export "type=fuse,id=e,node-name=q,mountpoint=$B/export-1,writable=on" >/dev/null 2>&1 &
	QSD_PID=$!
	for _ in $(seq 100); do mountpoint -q "$B/export-1" && break; sleep 0.1; done
	dev=$(losetup --show -f "$B/export-1"); LOOPS+=("$dev")
	mount "$dev" "$B/mnt-qemu1"
	RES[qemu:cow-qd$qd]=$(cow "$B/mnt-qemu1" "$qd")
done
teardown_qemu 1

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
echo "| job | raw loop | ours, 1 delta | ratio | qemu, 1 | ratio | ours, 4 deltas | ratio | qemu, 4 | ratio |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for j in "${JOBS[@]}"; do
	n=${j%% *}
	r=${RES[raw:$n]}
	printf '| %s | %s | %s | %sx | %s | %sx | %s | %sx | %s | %sx |\n' "$n" "$r" "${RES[ours1:$n]}" \
		"$(ratio "${RES[ours1:$n]}" "$r")" "${RES[qemu1:$n]}" "$(ratio "${RES[qemu1:$n]}" "$r")" \
		"${RES[ours4:$n]}" "$(ratio "${RES[ours4:$n]}" "$r")" "${RES[qemu4:$n]}" "$(ratio "${RES[qemu4:$n]}" "$r")"
done
echo "(MiB/s for 1M jobs, IOPS for the others; ratio = configuration / raw loop, same run)"
echo
echo "| copy-on-write: first 4 KiB writes at 1 MiB stride over a full lower delta | ours | qemu qcow2 1M clusters | ours/qemu |"
echo "|---|---|---|---|"
for qd in 1 32; do
	printf '| queue depth %s (writes/s) | %s | %s | %sx |\n' "$qd" "${RES[ours:cow-qd$qd]}" "${RES[qemu:cow-qd$qd]}" \
		"$(ratio "${RES[ours:cow-qd$qd]}" "${RES[qemu:cow-qd$qd]}")"
done
echo
echo "snapshot of a mounted image, command to return (median of 5): ${RES[ours1:snapshot-us]} us (1 delta), ${RES[ours4:snapshot-us]} us (4 deltas)"
