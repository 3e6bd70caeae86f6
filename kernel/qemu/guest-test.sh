#!/bin/sh
# In-guest test of dm-ploop (busybox sh, run by /init with the modules loaded, cwd /tmp on tmpfs).
# Prints "ok NAME" / "not ok NAME" per check; exits non-zero if any failed.
set -u
fails=0
ok() { echo "ok $1"; }
bad() { echo "not ok $1${2:+ # $2}"; fails=$((fails + 1)); }
check() { n=$1; shift; if "$@" >/tmp/check.out 2>&1; then ok "$n"; else cat /tmp/check.out; bad "$n"; fi; }
sum() { sha256sum "$1" | cut -d' ' -f1; }
devsum() { dd if="$1" bs=1M iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1; }
# wr DEV KIB_OFFSET KIB_LEN [direct]: the same random data to DEV and to the shadow copy
wr() {
	dd if=/dev/urandom of=/tmp/pat bs=1K count="$3" 2>/dev/null
	dd if=/tmp/pat of="$1" bs=1K seek="$2" conv=notrunc ${4:+oflag=direct} 2>/dev/null || return 1
	dd if=/tmp/pat of=/tmp/shadow bs=1K seek="$2" conv=notrunc 2>/dev/null
}
same() { sync; echo 3 >/proc/sys/vm/drop_caches; [ "$(devsum "$1")" = "$(sum /tmp/shadow)" ]; }
mark_dirty() { printf 'Ynot' | dd of="$1" bs=1 seek=44 conv=notrunc 2>/dev/null; }
status() { dmsetup status "$1" | cut -d' ' -f4-; }
# rejects NAME TABLE REASON: the table load fails, and the kernel log says why
rejects() {
	if dmsetup create badmap --table "$2" 2>/dev/null; then dmsetup remove badmap; bad "$1" "loaded"
	elif dmesg | tail -3 | grep -q "ploop: $3"; then ok "$1"
	else bad "$1" "$(dmesg | tail -2 | tr '\n' ' ')"; fi
}

dmsetup targets | grep -q '^ploop ' && ok target_registered || bad target_registered

# ---- one image mapped with dmsetup (as upstream's userspace does): write, snapshot by reload,
# write, merge by message, unmap; our offline tools work on the chain while the target is suspended.
mkdir -p /tmp/img && cd /tmp/img
ploop init -s 128M -t none root.hds >/dev/null || bad init
dd if=/dev/zero of=/tmp/shadow bs=1M count=128 2>/dev/null
mark_dirty root.hds
NAME=chain
DEV=/dev/mapper/$NAME
check map_chain dmsetup create "$NAME" --table "0 262144 ploop 11 /tmp/img/root.hds"
[ -b "$DEV" ] || { bad device_node; exit 1; }
[ "$(blockdev --getsz "$DEV")" = 262144 ] && ok device_size || bad device_size
check write_direct_full_clusters wr "$DEV" 0 2048 direct
check write_direct_partial_alloc wr "$DEV" 5132 4 direct
check write_buffered_cross_cluster wr "$DEV" 7268 300
check write_direct_overwrite_allocated wr "$DEV" 64 8 direct
check write_buffered_last_cluster wr "$DEV" 130048 1024
check readback_after_writes same "$DEV"
echo "KTEST: status $(status "$NAME")"

# snapshot: suspend (the target syncs), let our tool make the new top, reload with the longer chain
check snapshot_suspend dmsetup suspend "$NAME"
ploop check -d root.hds >/dev/null		# the old top becomes a read-only lower delta
check snapshot_create ploop snapshot DiskDescriptor.xml
TOP=$(ls /tmp/img/root.hds.*)
mark_dirty "$TOP"
check snapshot_reload dmsetup reload "$NAME" --table "0 262144 ploop 11 /tmp/img/root.hds $TOP"
check snapshot_resume dmsetup resume "$NAME"
dmsetup info "$NAME" | grep -q SUSPENDED && { dmsetup resume "$NAME"; bad still_suspended; }
[ "$(dmsetup status "$NAME" | cut -d' ' -f4)" = 2 ] && ok snapshot_two_deltas || bad snapshot_two_deltas
check readback_after_snapshot same "$DEV"
check cow_write_direct wr "$DEV" 1032 4 direct
check cow_write_buffered wr "$DEV" 2 20
check write_new_cluster_over_snapshot wr "$DEV" 102400 64 direct
check readback_after_cow same "$DEV"
status "$NAME" | grep -q 'cows=[1-9]' && ok cow_counted || bad cow_counted "$(status "$NAME")"
echo "KTEST: status $(status "$NAME")"
# the userspace reader sees the same chain (after the target synced it)
dmsetup suspend "$NAME" && ploop export DiskDescriptor.xml /tmp/exp.raw >/dev/null && dmsetup resume "$NAME"
[ "$(sum /tmp/exp.raw)" = "$(sum /tmp/shadow)" ] && ok userspace_reads_live_chain || bad userspace_reads_live_chain
rm -f /tmp/exp.raw

# merge: the target copies the snapshot up into the top and drops it; reload with the top alone
check merge_message dmsetup message "$NAME" 0 merge
[ "$(dmsetup status "$NAME" | cut -d' ' -f4)" = 1 ] && ok merge_one_delta_left || bad merge_one_delta_left
check merge_reload sh -c "dmsetup suspend $NAME && dmsetup reload $NAME --table '0 262144 ploop 11 $TOP' && dmsetup resume $NAME"
dmsetup info "$NAME" | grep -q SUSPENDED && { dmsetup resume "$NAME"; bad still_suspended; }
check write_after_merge wr "$DEV" 4100 16 direct
check readback_after_merge same "$DEV"
check unmap_chain dmsetup remove "$NAME"
[ -e "$DEV" ] && bad device_removed || ok device_removed
ploop check -d "$TOP" >/dev/null	# what umount does: the target leaves the marker to userspace
check check_base ploop check -f root.hds
check check_top ploop check -f "$TOP"
ploop export "$TOP" /tmp/exp.raw >/dev/null
[ "$(sum /tmp/exp.raw)" = "$(sum /tmp/shadow)" ] && ok userspace_reads_merged_top || bad userspace_reads_merged_top
rm -f /tmp/exp.raw /tmp/shadow

# ---- raw base under a ploop top ----
mkdir -p /tmp/raw && cd /tmp/raw
dd if=/dev/urandom of=/tmp/raw/base.raw bs=1M count=32 2>/dev/null
cp /tmp/raw/base.raw /tmp/shadow
ploop init -s 32M -t none top.hds >/dev/null && mark_dirty top.hds
check raw_base_map dmsetup create rawchain --table "0 65536 ploop 11 raw@/tmp/raw/base.raw /tmp/raw/top.hds"
check raw_base_read same /dev/mapper/rawchain
check raw_base_cow wr /dev/mapper/rawchain 3000 8 direct
check raw_base_readback same /dev/mapper/rawchain
check raw_base_remove dmsetup remove rawchain
ploop check -d top.hds >/dev/null
check raw_base_check_top ploop check -f top.hds
rm -f /tmp/shadow /tmp/raw/base.raw

# ---- a filesystem on the target ----
mkdir -p /tmp/fs /mnt && cd /tmp/fs
ploop init -s 128M -t none root.hds >/dev/null
FDEV=$(ploop mount --kernel DiskDescriptor.xml)
[ -b "$FDEV" ] && ok mount_kernel || { bad mount_kernel "$FDEV"; exit 1; }
ploop list -H | grep -q "$FDEV" && ok list_shows_kernel_device || bad list_shows_kernel_device
check mkfs_ext4 mkfs.ext4 -q -F "$FDEV"
check fs_mount mount -t ext4 "$FDEV" /mnt
dd if=/dev/urandom of=/mnt/big bs=1M count=12 2>/dev/null
cp /bin/busybox /mnt/busybox
mkdir -p /mnt/d && for i in 1 2 3 4 5 6 7 8; do echo "file $i" >/mnt/d/f$i; done
want=$(cat /mnt/big /mnt/busybox | sha256sum)
sync
check fs_umount umount /mnt
echo 3 >/proc/sys/vm/drop_caches
check fs_remount mount -t ext4 "$FDEV" /mnt
[ "$(cat /mnt/big /mnt/busybox | sha256sum)" = "$want" ] && ok fs_files_intact || bad fs_files_intact
# the same commands as with the server: online snapshot and merge of the mounted filesystem
FNAME=${FDEV#/dev/mapper/}
check online_snapshot ploop snapshot DiskDescriptor.xml
[ "$(dmsetup status "$FNAME" | cut -d' ' -f4)" = 2 ] && ok online_snapshot_two_deltas || bad online_snapshot_two_deltas
dd if=/dev/urandom of=/mnt/big2 bs=1M count=4 2>/dev/null
echo changed >/mnt/d/f1
want2=$(cat /mnt/big /mnt/big2 /mnt/busybox /mnt/d/f1 | sha256sum)
check online_snapshot_merge ploop snapshot-merge DiskDescriptor.xml
[ "$(dmsetup status "$FNAME" | cut -d' ' -f4)" = 1 ] && ok online_merge_one_delta || bad online_merge_one_delta
[ "$(ploop snapshot-list -H DiskDescriptor.xml | wc -l)" = 1 ] && ok online_merge_descriptor || bad online_merge_descriptor
echo 3 >/proc/sys/vm/drop_caches
[ "$(cat /mnt/big /mnt/big2 /mnt/busybox /mnt/d/f1 | sha256sum)" = "$want2" ] && ok fs_files_after_merge || bad fs_files_after_merge
umount /mnt
dmsetup status "${FDEV#/dev/mapper/}" | grep -q 'flushes=[1-9]' && ok fs_flushes_reach_target || bad fs_flushes_reach_target "$(dmsetup status "${FDEV#/dev/mapper/}")"
check e2fsck_clean e2fsck -fn "$FDEV"
check fs_umount_kernel ploop umount DiskDescriptor.xml
[ -e "$FDEV" ] && bad umount_kernel_removed_device || ok umount_kernel_removed_device
check fs_check_delta ploop check -f root.hds	# also proves umount cleared the dirty marker

# ---- after a crash: the mapping gone without `ploop umount` (as when the host goes down), the top
# left in use with half an allocation at its end; `mount --kernel` checks and repairs it first, as
# upstream's mount does (the target itself refuses a partial cluster) ----
mkdir -p /tmp/crash && cd /tmp/crash
ploop init -s 32M -t none root.hds >/dev/null
CDEV=$(ploop mount --kernel DiskDescriptor.xml)
dd if=/dev/urandom of=/tmp/cpat bs=1M count=3 2>/dev/null
dd if=/tmp/cpat of="$CDEV" bs=1M oflag=direct 2>/dev/null
dmsetup remove "${CDEV#/dev/mapper/}"
dd if=/dev/zero bs=4096 count=1 2>/dev/null >>root.hds
check crash_remount_repairs ploop mount --kernel DiskDescriptor.xml
grep -q "was not closed cleanly" /tmp/check.out && ok crash_remount_says_so || bad crash_remount_says_so
[ "$(dd if="$CDEV" bs=1M count=3 iflag=direct 2>/dev/null | sha256sum)" = "$(sha256sum </tmp/cpat)" ] &&
	ok crash_data_intact || bad crash_data_intact
check crash_umount ploop umount DiskDescriptor.xml
check crash_check_clean ploop check -f root.hds
rm -f /tmp/cpat

# ---- a ploop command killed while it had the device suspended: the next command finishes its
# work and resumes the device. (a) killed before it changed the chain: suspended, the top's marker
# cleared; (b) killed after an offline snapshot, before the reload: the descriptor names a new top
# the table does not have yet ----
mkdir -p /tmp/stuck /mnt3 && cd /tmp/stuck
ploop init -s 64M -t none root.hds >/dev/null
SDEV=$(ploop mount --kernel DiskDescriptor.xml)
SNAME=${SDEV#/dev/mapper/}
SRUN=$(dirname "$(grep -l "^descriptor=/tmp/stuck/DiskDescriptor.xml" /run/ploop/*/state)")
mkfs.ext4 -q -F "$SDEV" && mount -t ext4 "$SDEV" /mnt3 && dd if=/dev/urandom of=/mnt3/a bs=1M count=2 2>/dev/null
want=$(sha256sum </mnt3/a)
dmsetup suspend "$SNAME"
printf '\0\0\0\0' | dd of=root.hds bs=1 seek=44 conv=notrunc 2>/dev/null
check stuck_a_snapshot_finishes timeout 60 ploop snapshot DiskDescriptor.xml
grep -q "left suspended" /tmp/check.out && ok stuck_a_says_so || bad stuck_a_says_so
dmsetup info "$SNAME" | grep -q SUSPENDED && bad stuck_a_resumed || ok stuck_a_resumed
[ "$(dmsetup status "$SNAME" | cut -d' ' -f4)" = 2 ] && ok stuck_a_two_deltas || bad stuck_a_two_deltas
dd if=/dev/urandom of=/mnt3/b bs=1M count=1 2>/dev/null && sync && ok stuck_a_fs_writable || bad stuck_a_fs_writable
dmsetup suspend "$SNAME"
T1=$(ls root.hds.*)
mv "$SRUN/state" /tmp/state.saved		# ploop sees the set unmounted: the offline snapshot
ploop check -d "$T1" >/dev/null
ploop snapshot DiskDescriptor.xml >/dev/null && ok stuck_b_offline_snapshot || bad stuck_b_offline_snapshot
mv /tmp/state.saved "$SRUN/state"
check stuck_b_umount_finishes timeout 60 ploop umount DiskDescriptor.xml
grep -q "left suspended" /tmp/check.out && ok stuck_b_says_so || bad stuck_b_says_so
grep -q " /mnt3 " /proc/mounts && bad stuck_b_unmounted || ok stuck_b_unmounted
for f in root.hds root.hds.*; do ploop check -f "$f" >/dev/null || bad "stuck_b_check_$f"; done
ok stuck_b_deltas_checked
SDEV=$(ploop mount --kernel -m /mnt3 DiskDescriptor.xml) && ok stuck_b_remount || bad stuck_b_remount
[ "$(dmsetup status "${SDEV#/dev/mapper/}" | cut -d' ' -f4)" = 3 ] && ok stuck_b_three_deltas || bad stuck_b_three_deltas
[ "$(sha256sum </mnt3/a)" = "$want" ] && [ -s /mnt3/b ] && ok stuck_files_intact || bad stuck_files_intact
check stuck_umount ploop umount DiskDescriptor.xml

# ---- the target refuses the new chain after an offline merge already changed it (a dmsetup that
# fails reloads stands in for the refusal): the device stays suspended, since resuming the old
# table would write into the merged and unlinked top, until a later command reloads it ----
mkdir -p /tmp/refuse /tmp/fakebin && cd /tmp/refuse
printf '#!/bin/sh\n[ "$1" = reload ] && exit 1\nexec %s "$@"\n' "$(command -v dmsetup)" >/tmp/fakebin/dmsetup
chmod +x /tmp/fakebin/dmsetup
ploop init -s 64M -t none root.hds >/dev/null
XDEV=$(ploop mount --kernel DiskDescriptor.xml)
XNAME=${XDEV#/dev/mapper/}
dd if=/dev/urandom of=/tmp/xpat bs=1M count=4 2>/dev/null
dd if=/tmp/xpat of="$XDEV" bs=1M oflag=direct 2>/dev/null
ploop snapshot DiskDescriptor.xml >/dev/null
dd if=/dev/urandom of=/tmp/xpat2 bs=1M count=2 2>/dev/null
dd if=/tmp/xpat2 of="$XDEV" bs=1M seek=1 oflag=direct 2>/dev/null
dd if=/tmp/xpat2 of=/tmp/xpat bs=1M seek=1 conv=notrunc 2>/dev/null
if PATH=/tmp/fakebin:$PATH ploop snapshot-merge DiskDescriptor.xml >/tmp/check.out 2>&1; then
	bad refused_reload_fails
else
	ok refused_reload_fails
fi
grep -q "stays suspended" /tmp/check.out && ok refused_says_suspended || bad refused_says_suspended "$(cat /tmp/check.out)"
dmsetup info "$XNAME" | grep -q SUSPENDED && ok refused_left_suspended || bad refused_left_suspended
[ -z "$(ls root.hds.* 2>/dev/null)" ] && ok refused_merge_done_offline || bad refused_merge_done_offline
check refused_umount_finishes timeout 60 ploop umount DiskDescriptor.xml
check refused_check_clean ploop check -f root.hds
XDEV=$(ploop mount --kernel -r DiskDescriptor.xml)
[ "$(dd if="$XDEV" bs=1M count=4 iflag=direct 2>/dev/null | sha256sum)" = "$(sha256sum </tmp/xpat)" ] &&
	ok refused_data_intact || bad refused_data_intact
check refused_umount_ro ploop umount DiskDescriptor.xml
rm -rf /tmp/fakebin /tmp/xpat /tmp/xpat2

# ---- an image made by `ploop init -t ext4` on the host (GPT + ext4): mount --kernel -m, online
# snapshot and merge under the mounted filesystem, umount, read-only remount ----
if [ -f /data/DiskDescriptor.xml ]; then
	mkdir -p /tmp/gpt /mnt2 && cp /data/DiskDescriptor.xml /data/root.hds /tmp/gpt/ && cd /tmp/gpt
	check gpt_mount_kernel_fs ploop mount --kernel -m /mnt2 DiskDescriptor.xml
	grep -q ' /mnt2 ext4 ' /proc/mounts && ok gpt_fs_mounted || bad gpt_fs_mounted
	dd if=/dev/urandom of=/mnt2/a bs=1M count=3 2>/dev/null
	check gpt_online_snapshot ploop snapshot DiskDescriptor.xml
	dd if=/dev/urandom of=/mnt2/b bs=1M count=2 2>/dev/null
	check gpt_online_merge ploop snapshot-merge DiskDescriptor.xml
	want=$(cat /mnt2/a /mnt2/b | sha256sum)
	check gpt_umount ploop umount DiskDescriptor.xml
	grep -q ' /mnt2 ' /proc/mounts && bad gpt_fs_unmounted || ok gpt_fs_unmounted
	dmsetup ls | grep -q 'ploop-' && bad gpt_maps_removed "$(dmsetup ls)" || ok gpt_maps_removed
	check gpt_check_delta ploop check -f root.hds
	check gpt_remount_ro ploop mount --kernel -r -m /mnt2 DiskDescriptor.xml
	[ "$(cat /mnt2/a /mnt2/b | sha256sum)" = "$want" ] && ok gpt_files_intact || bad gpt_files_intact
	check gpt_umount_by_dir ploop umount -m /mnt2
else
	bad gpt_image_missing
fi

# ---- concurrent random writes with verification (fio, libaio QD16) across a snapshot ----
mkdir -p /tmp/fio && cd /tmp/fio
ploop init -s 64M -t none root.hds >/dev/null
VDEV=$(ploop mount --kernel DiskDescriptor.xml)
check fio_verify_fresh fio --name=v1 --filename="$VDEV" --rw=randwrite --bs=4k --size=48M --io_size=16M \
	--ioengine=libaio --iodepth=16 --direct=1 --verify=crc32c --randrepeat=1 --output=/dev/null
check fio_snapshot ploop snapshot DiskDescriptor.xml
check fio_verify_cow fio --name=v2 --filename="$VDEV" --rw=randwrite --bs=16k --size=64M --io_size=16M \
	--ioengine=libaio --iodepth=16 --direct=1 --verify=crc32c --randrepeat=0 --output=/dev/null
check fio_umount ploop umount DiskDescriptor.xml
check fio_check_base ploop check -f root.hds
check fio_check_top ploop check -f root.hds.*

# ---- merge messages: one at a time, none on a suspended device, a suspend interrupts one ----
mkdir -p /tmp/mx && cd /tmp/mx
ploop init -s 96M -b 64 -t none base.hds >/dev/null && mark_dirty base.hds
dmsetup create mx --table "0 196608 ploop 6 /tmp/mx/base.hds"
dd if=/dev/urandom of=/dev/mapper/mx bs=1M count=64 oflag=direct 2>/dev/null
dmsetup remove mx
cp base.hds base.pristine
MXTOP=/tmp/mx/t/top.hds
MX="0 196608 ploop 6 /tmp/mx/base.hds $MXTOP"
fsize() { stat -c %s "$1"; }
mx_new() {	# the base with 64 MiB of data under a new empty top, mapped as mx
	cp /tmp/mx/base.pristine /tmp/mx/base.hds && rm -rf /tmp/mx/t && mkdir -p /tmp/mx/t &&
		ploop init -s 96M -b 64 -t none "$MXTOP" >/dev/null && mark_dirty "$MXTOP" &&
		dmsetup create mx --table "$MX"
}
mx_merge_bg() {	# a merge message in the background; waits until it writes the top
	s0=$(fsize "$MXTOP")
	rm -f /tmp/mx/rc
	(dmsetup message mx 0 merge 2>/dev/null; echo $? >/tmp/mx/rc) &
	mpid=$!
	n=0; while [ "$(fsize "$MXTOP")" = "$s0" ] && [ ! -e /tmp/mx/rc ] && [ $n -lt 5000 ]; do n=$((n + 1)); done
}
# mx_fresh NAME: unmapped, the chain loads again and its first 64 MiB are what the device showed
mx_fresh() {
	dmsetup remove mx
	ploop check -d "$MXTOP" >/dev/null 2>&1
	if dmsetup create --readonly mxro --table "$MX" 2>/dev/null; then
		[ "$(dd if=/dev/mapper/mxro bs=1M count=64 iflag=direct 2>/dev/null | sha256sum)" = "$want" ] &&
			ok "$1" || bad "$1" "first 64 MiB differ after a fresh load"
		dmsetup remove mxro
	else
		bad "$1" "the chain no longer loads: $(dmesg | grep 'ploop:' | tail -1)"
	fi
}
mx_want() { want=$(dd if=/dev/mapper/mx bs=1M count=64 iflag=direct 2>/dev/null | sha256sum); }
# a merge sent to a suspended device (here after a reload of the same chain) is refused
mx_new && mx_want
dmsetup suspend mx && dmsetup reload mx --table "$MX"
s0=$(fsize "$MXTOP")
dmsetup message mx 0 merge 2>/dev/null && bad merge_refused_while_suspended || ok merge_refused_while_suspended
[ "$(fsize "$MXTOP")" = "$s0" ] && ok merge_suspended_top_untouched || bad merge_suspended_top_untouched
dmsetup resume mx
dd if=/dev/urandom of=/dev/mapper/mx bs=1M seek=64 count=32 oflag=direct 2>/dev/null	# new clusters
mx_fresh merge_suspended_image_intact
mark_dirty "$MXTOP" && dmsetup create mx --table "$MX"
check merge_after_refused_merge dmsetup message mx 0 merge
dmsetup remove mx
# a suspend while a merge runs: nothing writes the top once suspend returned; reload, resume, merge again
mx_new && mx_want
mx_merge_bg
dmsetup suspend mx
s1=$(fsize "$MXTOP"); sleep 1
[ "$(fsize "$MXTOP")" = "$s1" ] && ok suspend_stops_merge_writes || bad suspend_stops_merge_writes
wait $mpid
echo "KTEST: merge during suspend: rc $(cat /tmp/mx/rc), status $(status mx)"
dmsetup reload mx --table "$MX" && dmsetup resume mx
[ "$(dmsetup status mx | cut -d' ' -f4)" = 2 ] && dmsetup message mx 0 merge
[ "$(dmsetup status mx | cut -d' ' -f4)" = 1 ] && ok merge_resent_after_suspend || bad merge_resent_after_suspend "$(status mx)"
dd if=/dev/urandom of=/dev/mapper/mx bs=1M seek=64 count=32 oflag=direct 2>/dev/null
mx_fresh merge_suspend_reload_intact
# two merge messages at once: the second is refused while the first runs
mx_new && mx_want
mx_merge_bg
if dmsetup message mx 0 merge 2>/dev/null; then
	bad concurrent_merge_refused "second merge accepted"
elif dmesg | tail -3 | grep -q 'merge is already running'; then
	ok concurrent_merge_refused
else
	ok "concurrent_merge_refused # SKIP the first merge ended first ($(dmesg | tail -1))"
fi
wait $mpid
[ "$(cat /tmp/mx/rc)" = 0 ] && ok concurrent_first_merge_done || bad concurrent_first_merge_done
[ "$(dmsetup status mx | cut -d' ' -f4)" = 1 ] && ok concurrent_merge_one_delta || bad concurrent_merge_one_delta "$(status mx)"
dd if=/dev/urandom of=/dev/mapper/mx bs=4K seek=16484 count=1 oflag=direct 2>/dev/null && ok concurrent_merge_write ||
	bad concurrent_merge_write
mx_fresh concurrent_merge_intact
cd /tmp && rm -rf /tmp/mx

# ---- a table loaded while another is live and allocating (reload without a suspend first):
# resume rebuilds its map from the synced top, so its allocations do not reuse clusters in use ----
mkdir -p /tmp/rl && cd /tmp/rl
ploop init -s 64M -t none root.hds >/dev/null && mark_dirty root.hds
RL="0 131072 ploop 11 /tmp/rl/root.hds"
dd if=/dev/zero of=/tmp/shadow bs=1M count=64 2>/dev/null
dmsetup create rl --table "$RL"
check reload_live_write_before wr /dev/mapper/rl 0 4096 direct
check reload_live_load dmsetup reload rl --table "$RL"
check reload_live_write_old_table wr /dev/mapper/rl 10240 4096 direct
check reload_live_resume dmsetup resume rl
check reload_live_write_new_table wr /dev/mapper/rl 20480 4096 direct
check reload_live_readback same /dev/mapper/rl
dmsetup remove rl
ploop check -d root.hds >/dev/null
check reload_live_check ploop check -f root.hds
if dmsetup create --readonly rlro --table "$RL"; then
	check reload_live_fresh_load same /dev/mapper/rlro
	dmsetup remove rlro
else
	bad reload_live_fresh_load "$(dmesg | grep 'ploop:' | tail -1)"
fi
# the map is sized by one read of the top's header and filled from a second: a header whose size
# changed in between is refused (a writer racing the table load; here, changed under a suspended
# table and found by resume), never indexed past the map
mkdir -p /tmp/rl/h && cd /tmp/rl/h
ploop init -s 64M -t none root.hds >/dev/null && mark_dirty root.hds
dmsetup create rl --table "0 131072 ploop 11 /tmp/rl/h/root.hds" && dmsetup suspend rl
printf '\200\000\000\000\000\000\004\000\000\000\000\000' | dd of=root.hds bs=1 seek=32 conv=notrunc 2>/dev/null
truncate -s $(($(stat -c %s root.hds) + 1048576)) root.hds
if dmsetup resume rl 2>/dev/null; then
	bad top_size_change_refused "resumed"
elif dmesg | tail -3 | grep -q 'Top delta size changed'; then
	ok top_size_change_refused
else
	bad top_size_change_refused "$(dmesg | tail -1)"
fi
check top_size_change_remove dmsetup remove rl
cd /tmp && rm -rf /tmp/rl /tmp/shadow

# ---- the top's filesystem full (ENOSPC): a failed allocation or merge batch gives back what it
# appended, so the top stays a whole number of clusters and loads again ----
mkdir -p /tmp/full /tmp/fullb && mount -t tmpfs -o size=8500k tmpfs /tmp/full && cd /tmp/full
ploop init -s 64M -t none root.hds >/dev/null && mark_dirty root.hds
FT="0 131072 ploop 11 /tmp/full/root.hds"
dmsetup create full --table "$FT"
i=0; nf=0
while [ $i -lt 12 ]; do
	dd if=/dev/urandom of=/dev/mapper/full bs=4K seek=$((i * 256)) count=1 oflag=direct 2>/dev/null || nf=$((nf + 1))
	i=$((i + 1))
done
dd if=/dev/urandom of=/dev/mapper/full bs=1M seek=40 count=1 oflag=direct 2>/dev/null && nf=$((nf + 100))
[ $nf -gt 0 ] && [ $nf -lt 100 ] && ok enospc_writes_fail || bad enospc_writes_fail "$nf"
want=$(dd if=/dev/mapper/full bs=1M count=12 iflag=direct 2>/dev/null | sha256sum)
[ $(($(stat -c %s root.hds) % 1048576)) = 0 ] && ok enospc_top_whole_clusters ||
	bad enospc_top_whole_clusters "$(stat -c %s root.hds)"
dmsetup remove full
ploop check -d root.hds >/dev/null 2>&1
check enospc_check_top ploop check -f root.hds
mark_dirty root.hds
if dmsetup create full --table "$FT"; then
	[ "$(dd if=/dev/mapper/full bs=1M count=12 iflag=direct 2>/dev/null | sha256sum)" = "$want" ] &&
		ok enospc_image_loads || bad enospc_image_loads "data differ"
	dmsetup remove full
else
	bad enospc_image_loads "$(dmesg | grep 'ploop:' | tail -1)"
fi
# a merge into a top on the full filesystem: it fails, the chain stays as it was
rm -f /tmp/full/*
cd /tmp/fullb && ploop init -s 64M -t none base.hds >/dev/null && mark_dirty base.hds
dmsetup create full --table "0 131072 ploop 11 /tmp/fullb/base.hds"
dd if=/dev/urandom of=/dev/mapper/full bs=1M count=16 oflag=direct 2>/dev/null
dmsetup remove full
cd /tmp/full && ploop init -s 64M -t none top.hds >/dev/null && mark_dirty top.hds
FT="0 131072 ploop 11 /tmp/fullb/base.hds /tmp/full/top.hds"
dmsetup create full --table "$FT"
want=$(dd if=/dev/mapper/full bs=1M count=16 iflag=direct 2>/dev/null | sha256sum)
dmsetup message full 0 merge 2>/dev/null && bad enospc_merge_fails || ok enospc_merge_fails
echo "KTEST: status after the merge $(status full)"
[ $(($(stat -c %s top.hds) % 1048576)) = 0 ] && ok enospc_merge_top_whole_clusters ||
	bad enospc_merge_top_whole_clusters "$(stat -c %s top.hds)"
[ "$(dd if=/dev/mapper/full bs=1M count=16 iflag=direct 2>/dev/null | sha256sum)" = "$want" ] &&
	ok enospc_merge_data || bad enospc_merge_data
dmsetup remove full
ploop check -d top.hds >/dev/null 2>&1
if dmsetup create --readonly full --table "$FT"; then
	[ "$(dd if=/dev/mapper/full bs=1M count=16 iflag=direct 2>/dev/null | sha256sum)" = "$want" ] &&
		ok enospc_merge_chain_loads || bad enospc_merge_chain_loads "data differ"
	dmsetup remove full
else
	bad enospc_merge_chain_loads "$(dmesg | grep 'ploop:' | tail -1)"
fi
cd /tmp && umount /tmp/full && rm -rf /tmp/full /tmp/fullb

# ---- a writeback error of the top (its filesystem on a device swapped to dm-error for a moment)
# reaches the next flush from above, even when a sync of the target's own (suspend's, an
# allocation's) saw it first; the flush after that one passes ----
mkdir -p /tmp/eio && dd if=/dev/zero of=/tmp/eio.img bs=1M count=64 2>/dev/null
LOOP=$(losetup -f) && losetup "$LOOP" /tmp/eio.img
EL="0 131072 linear $LOOP 0"
dmsetup create eiolow --table "$EL"
mkfs.ext4 -q -F -O ^has_journal /dev/mapper/eiolow && mount -t ext4 /dev/mapper/eiolow /tmp/eio
ploop init -s 16M -t none /tmp/eio/root.hds >/dev/null && mark_dirty /tmp/eio/root.hds
dmsetup create eio --table "0 32768 ploop 11 /tmp/eio/root.hds"
flush_dev() { dd if=/dev/zero of=/dev/mapper/eio bs=4K count=0 conv=notrunc,fsync 2>/dev/null; }
eiolow() { dmsetup suspend --nolockfs eiolow && dmsetup load eiolow --table "$1" && dmsetup resume eiolow; }
dd if=/dev/urandom of=/dev/mapper/eio bs=1M count=2 oflag=direct 2>/dev/null
flush_dev && ok eio_flush_before || bad eio_flush_before
for how in suspend alloc; do
	# a write into an allocated cluster, in the top's page cache: its writeback fails
	dd if=/dev/urandom of=/dev/mapper/eio bs=4K seek=16 count=1 oflag=direct conv=notrunc 2>/dev/null
	eiolow "0 131072 error" && sync; eiolow "$EL"
	if [ $how = suspend ]; then
		dmsetup suspend eio && dmsetup resume eio
	else
		dd if=/dev/urandom of=/dev/mapper/eio bs=4K seek=1792 count=1 oflag=direct conv=notrunc 2>/dev/null
	fi
	flush_dev && bad "eio_flush_reports_lost_write_$how" "the flush succeeded" || ok "eio_flush_reports_lost_write_$how"
	flush_dev && ok "eio_flush_after_report_$how" || bad "eio_flush_after_report_$how"
done
dmsetup remove eio
umount /tmp/eio && dmsetup remove eiolow && losetup -d "$LOOP"
rm -rf /tmp/eio /tmp/eio.img

# ---- a table loaded while the live one is half-way through an allocation (file extended, BAT
# entry not yet written: its data sync held up by the suspended device under the top's
# filesystem): after resume the new table still reads that cluster ----
mkdir -p /tmp/rc && dd if=/dev/zero of=/tmp/rc.img bs=1M count=64 2>/dev/null
LOOP=$(losetup -f) && losetup "$LOOP" /tmp/rc.img
dmsetup create rclow --table "0 131072 linear $LOOP 0"
mkfs.ext4 -q -F -O ^has_journal /dev/mapper/rclow && mount -t ext4 /dev/mapper/rclow /tmp/rc
ploop init -s 16M -t none /tmp/rc/root.hds >/dev/null && mark_dirty /tmp/rc/root.hds
RC="0 32768 ploop 11 /tmp/rc/root.hds"
dmsetup create rc --table "$RC"
dd if=/dev/urandom of=/dev/mapper/rc bs=1M count=1 oflag=direct 2>/dev/null	# ext4's bitmaps read in
dd if=/dev/urandom of=/tmp/rc.pat bs=64K count=1 2>/dev/null
dmsetup suspend --nolockfs rclow
s0=$(stat -c %s /tmp/rc/root.hds)
dd if=/tmp/rc.pat of=/dev/mapper/rc bs=64K seek=80 oflag=direct conv=notrunc 2>/dev/null &
wpid=$!
n=0; while [ "$(stat -c %s /tmp/rc/root.hds)" = "$s0" ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
[ $n -lt 100 ] && ok race_reload_file_extended || bad race_reload_file_extended
sleep 0.5	# the data sync is waiting for rclow now
check race_reload_load dmsetup reload rc --table "$RC"
dmsetup resume rclow
wait $wpid && ok race_reload_write || bad race_reload_write
check race_reload_resume dmsetup resume rc
[ "$(dd if=/dev/mapper/rc bs=64K skip=80 count=1 iflag=direct 2>/dev/null | sha256sum)" = "$(sha256sum </tmp/rc.pat)" ] &&
	ok race_reload_sees_allocation || bad race_reload_sees_allocation "the new table lost the cluster"
dmsetup remove rc
umount /tmp/rc && dmsetup remove rclow && losetup -d "$LOOP"
rm -rf /tmp/rc /tmp/rc.img /tmp/rc.pat

# ---- bad images are refused at table load ----
mkdir -p /tmp/bad && cd /tmp/bad
ploop init -s 64M -t none good.hds >/dev/null
cp good.hds clean.hds
mark_dirty good.hds
check good_image_loads dmsetup create good --table "0 131072 ploop 11 /tmp/bad/good.hds"
dmsetup remove good
rejects reject_rw_top_not_in_use "0 131072 ploop 11 /tmp/bad/clean.hds" "Writable top delta is not marked in use"
cp good.hds bat.hds
printf '\377\377\377\177' | dd of=bat.hds bs=1 seek=64 conv=notrunc 2>/dev/null
rejects reject_bat_past_eof "0 131072 ploop 11 /tmp/bad/bat.hds" "BAT entry points outside"
cp good.hds sig.hds
printf 'X' | dd of=sig.hds bs=1 seek=3 conv=notrunc 2>/dev/null
rejects reject_bad_signature "0 131072 ploop 11 /tmp/bad/sig.hds" "Not a ploop v2 delta"
cp good.hds fbo.hds
printf '\000\020' | dd of=fbo.hds bs=1 seek=48 conv=notrunc 2>/dev/null
rejects reject_custom_fbo "0 131072 ploop 11 /tmp/bad/fbo.hds" "Custom FirstBlockOffset"
rejects reject_cluster_mismatch "0 131072 ploop 12 /tmp/bad/good.hds" "Cluster size differs"
cp good.hds dup.hds
truncate -s 3M dup.hds
printf '\001\000\000\000\001\000\000\000' | dd of=dup.hds bs=1 seek=64 conv=notrunc 2>/dev/null
rejects reject_shared_cluster "0 131072 ploop 11 /tmp/bad/dup.hds" "Two BAT entries share"
rejects reject_delta_twice "0 131072 ploop 11 /tmp/bad/good.hds /tmp/bad/good.hds" "A delta appears twice"
mkdir -p v1 && ploop init -v 1 -s 64M -t none v1/v1.hds >/dev/null && mark_dirty v1/v1.hds
rejects reject_v1 "0 131072 ploop 11 /tmp/bad/v1/v1.hds" "v1 deltas are not supported"
truncate -s 1572864 bad9.hds && dd if=good.hds of=bad9.hds bs=1M count=1 conv=notrunc 2>/dev/null
rejects reject_unaligned_file "0 131072 ploop 11 /tmp/bad/bad9.hds" "Delta file size is not a multiple"
cp good.hds huge.hds	# 1M clusters claimed (2 TiB at 1 MiB clusters), a 1 MiB file
printf '\000\000\020\000\000\000\000\200\000' | dd of=huge.hds bs=1 seek=32 conv=notrunc 2>/dev/null
rejects reject_bat_beyond_file "0 131072 ploop 11 /tmp/bad/huge.hds" "Delta file is shorter than its BAT"
# a raw base of 32.5 MiB: its last half cluster would read as zeros (and copy up so): refused
mkdir -p /tmp/bad/raw && dd if=/dev/urandom of=/tmp/bad/raw/base.raw bs=512K count=65 2>/dev/null
ploop init -s 33M -t none /tmp/bad/raw/top.hds >/dev/null && mark_dirty /tmp/bad/raw/top.hds
rejects reject_raw_unaligned "0 67584 ploop 11 raw@/tmp/bad/raw/base.raw /tmp/bad/raw/top.hds" \
	"Raw delta size is not a multiple of the cluster"
rm -rf /tmp/bad/raw
# a sparse top of 2 TiB loads (its used-cluster bitmap, 8 MiB, is not kmalloc'ed: no WARNING);
# one with more data clusters than a map may have (17 TiB of 32 KiB clusters) is refused
mkdir -p /tmp/bad/huge && ploop init -s 64M -b 64 -t none /tmp/bad/huge/big.hds >/dev/null
truncate -s 2199023255552 /tmp/bad/huge/big.hds
if dmsetup create --readonly hugef --table "0 131072 ploop 6 /tmp/bad/huge/big.hds"; then
	dmsetup remove hugef
	dmesg | grep -q 'WARNING:' && bad huge_sparse_top_loads "WARNING in the log" || ok huge_sparse_top_loads
else
	bad huge_sparse_top_loads "$(dmesg | tail -1)"
fi
truncate -s 18691697672192 /tmp/bad/huge/big.hds && mark_dirty /tmp/bad/huge/big.hds
rejects reject_top_too_many_clusters "0 131072 ploop 6 /tmp/bad/huge/big.hds" "Top delta file has too many clusters"
rm -rf /tmp/bad/huge
# a read-only mapping: reads work, writes fail, the image is not touched
mkdir -p /tmp/ro && cd /tmp/ro && ploop init -s 64M -t none root.hds >/dev/null
before=$(sum root.hds)
RDEV=$(ploop mount --kernel -r DiskDescriptor.xml) && ok mount_kernel_ro || bad mount_kernel_ro
dd if="$RDEV" of=/dev/null bs=1M count=4 iflag=direct 2>/dev/null && ok ro_read || bad ro_read
dd if=/dev/zero of="$RDEV" bs=4K count=1 oflag=direct 2>/dev/null && bad ro_write_refused || ok ro_write_refused
check umount_kernel_by_device ploop umount -d "$RDEV"
[ "$(sum root.hds)" = "$before" ] && ok ro_image_untouched || bad ro_image_untouched
cd /tmp/bad
[ -z "$(dmsetup ls 2>/dev/null | grep -v 'No devices')" ] && ok no_devices_left || bad no_devices_left "$(dmsetup ls)"
dmesg | grep -E 'device-mapper: (table|ploop)' | tail -8

check rmmod rmmod dm_ploop
echo "KTEST: $fails failed"
[ "$fails" = 0 ]
