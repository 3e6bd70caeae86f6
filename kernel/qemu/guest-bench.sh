#!/bin/sh
# In-guest fio: the dm-ploop target over a ploop image against a loop device over a raw file, both
# files in the same tmpfs, same jobs, alternating, in one boot. Prints "BENCH JOB DEV KIB_S IOPS".
set -u
SIZE_MB=${SIZE_MB:-192}
RUNTIME=${RUNTIME:-3}
cd /tmp
# sparse, like a fresh image: the first pass allocates tmpfs pages on both sides
dd if=/dev/zero of=/tmp/raw.img bs=1M count=0 seek="$SIZE_MB" 2>/dev/null
losetup /dev/loop0 /tmp/raw.img || exit 1
mkdir -p /tmp/img && cd /tmp/img
ploop init -s "${SIZE_MB}M" -t none root.hds >/dev/null || exit 1
DEV=$(ploop mount --kernel DiskDescriptor.xml) || exit 1
echo "KTEST: ploop $DEV, loop /dev/loop0"
# fio JOB DEV RW BS [time]: prints one BENCH line (terse v3: read 7/8, write 48/49)
run() {
	job=$1 dev=$2 rw=$3 bs=$4 extra=${5:-}
	line=$(fio --name="$job" --filename="$dev" --rw="$rw" --bs="$bs" --direct=1 --ioengine=psync \
		--size="${SIZE_MB}M" $extra --output-format=terse --terse-version=3 2>/dev/null | tail -1)
	echo "$line" | awk -F';' -v j="$job" -v d="$dev" '{ printf "BENCH %s %s %d %d\n", j, d, $7 + $48, $8 + $49 }'
}
# the first pass over a fresh image allocates every cluster (no time limit: the whole device)
run alloc-seqwrite-1M /dev/loop0 write 1M
run alloc-seqwrite-1M "$DEV" write 1M
for round in 1 2; do
	for spec in "seqread-1M read 1M" "seqwrite-1M write 1M" "seqread-4K read 4k" "seqwrite-4K write 4k" \
		"randread-4K randread 4k" "randwrite-4K randwrite 4k"; do
		set -- $spec
		run "$1" /dev/loop0 "$2" "$3" "--time_based --runtime=$RUNTIME"
		run "$1" "$DEV" "$2" "$3" "--time_based --runtime=$RUNTIME"
	done
done
echo "KTEST: status $(dmsetup status "${DEV#/dev/mapper/}")"
ploop umount DiskDescriptor.xml || exit 1
losetup -d /dev/loop0
ploop check -f root.hds >/dev/null || exit 1
