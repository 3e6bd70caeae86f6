#!/usr/bin/env bash
# The life of a mounted image set at its edges: two `ploop mount` of one set at the same moment,
# `ploop umount` right after the server was killed, `resize` after a crash, a snapshot view mounted
# before the top, `umount -m` of a filesystem mounted by hand, and a read-write mount of a leaf
# snapshot. Every mount this test makes is undone by the EXIT trap, however the test ends.
source "$(dirname "$0")/../lib.sh"
source "$ROOT/tests/mount_ops_lib.sh"

mkdir -p A mA mV mX
MNTS=("$RT/mA" "$RT/mV" "$RT/mX")
A=$RT/A/DiskDescriptor.xml
must "init -s 512M (GPT + ext4)" pl init -s 512M A/root.hds || finish
IDS+=("$(run_id "$A")")

# ---- two mounts of one set at the same moment ----------------------------------------------------------
# Exactly one wins; the other fails without touching the winner (its run directory, its image).
for round in $(seq 10); do
	pl mount "$A" >"$T/m1.out" 2>"$T/m1.err" &
	p1=$!
	pl mount "$A" >"$T/m2.out" 2>"$T/m2.err" &
	p2=$!
	wait $p1
	rc1=$?
	wait $p2
	rc2=$?
	name="concurrent mounts, round $round"
	if [ $(((rc1 == 0) + (rc2 == 0))) = 1 ]; then
		loser=$T/m1.err
		[ $rc1 = 0 ] && loser=$T/m2.err
		if [ $((rc1 + rc2)) = 21 ]; then
			ok "$name: one mounted, the other failed with exit 21 ($(head -c 200 "$loser"))"
		else
			not_ok "$name: the loser failed with exit $((rc1 + rc2)), not 21 ($(head -c 200 "$loser"))"
		fi
	else
		not_ok "$name: exits $rc1 and $rc2 ($(cat "$T/m1.err" "$T/m2.err" | tr '\n' ' ' | head -c 300))"
	fi
	if inst "$A"; then
		check "$name: the winner serves (device $I_DEV, run directory and state in place)" \
			test -b "$I_DEV" -a "$I_MODE" = rw -a -e "/run/ploop/$(run_id "$A")/state"
		umount_set "$name: umount" "$A"
	fi
	checked "$name: every delta checks clean, not marked in use" "$A"
done

# ---- ploop umount (every 4th round: ploop mount) right after kill -9 of the server ------------------------
# A server killed during direct writes takes a moment to exit (its in-flight I/O is reaped first, and its
# files, with the locks on them, go only after that), and meanwhile resets the connection of the umount
# that asks it to stop: umount cleans up at the first call; a mount cleans up and mounts at the first call.
# (Raw writes onto the device of a set without a filesystem: open files would rightly keep one mounted.)
B=$RT/B/DiskDescriptor.xml
mkdir -p B
must "init -t none (a set without a filesystem)" pl init -s 512M -t none B/root.hds
IDS+=("$(run_id "$B")")
for round in $(seq 20); do
	name="umount right after kill -9 during writes, round $round"
	mount_set "$name: mount" "$B" || break
	inst "$B"
	pid=$I_PID dev=$I_DEV part=$I_PART id=$(run_id "$B")
	writers=()
	for w in 0 1 2 3; do
		dd if=/dev/zero of="$dev" bs=1M seek=$((w * 100)) count=100 oflag=direct conv=notrunc status=none 2>/dev/null &
		writers+=($!)
	done
	sleep 0.3
	kill -9 "$pid"
	if [ $((round % 4)) = 0 ]; then
		name="mount right after kill -9 during writes, round $round"
		pl mount "$B" >"$T/.out" 2>"$T/.err"
		rc=$?
		wait "${writers[@]}"
		if [ $rc = 0 ] && inst "$B" && [ "$I_PID" != "$pid" ]; then
			ok "$name: the first ploop mount cleans up and mounts"
			umount_set "$name: umount" "$B"
		else
			not_ok "$name: the first ploop mount: exit $rc ($(head -c 200 "$T/.err"))"
			pl umount "$B" >/dev/null 2>&1
		fi
		checked "$name: every delta checks clean" "$B"
		continue
	fi
	pl umount "$B" >"$T/.out" 2>"$T/.err"
	rc=$?
	wait "${writers[@]}"
	for _ in $(seq 50); do pid_gone "$pid" && break; sleep 0.1; done
	left=$(leftovers "$id" "$pid" "$dev" "$part" "")
	if [ $rc = 0 ] && [ -z "$left" ]; then ok "$name: the first ploop umount cleans up"; else
		not_ok "$name: the first ploop umount: exit $rc ($(head -c 200 "$T/.err")), left behind:${left:- nothing}"
		pl umount "$B" >/dev/null 2>&1
	fi
	# umount has checked and repaired the top the server left marked in use.
	mount_set "$name: mount again" "$B" && umount_set "$name: umount" "$B"
	checked "$name: every delta checks clean" "$B"
done

# ---- resize of a set without a filesystem to the size it has -------------------------------------------
# It was taken for a shrink, and a shrink of a disk without ext4 is refused (exit 38); it is a no-op.
must "resize -t none set to its own size (512M) is no shrink" pl resize -s 512M "$B"
check "... the disk is still 512M" test "$(pl info -s "$B" | awk '/^size:/ {print $2}')" = $((512 * 2048))
checked "... every delta checks clean" "$B"

# ---- umount -m DIR of a filesystem mounted by hand ------------------------------------------------------
mount_set "mount without -m (device only)" "$A"
if inst "$A" && mount "$I_PART" mX; then
	check "the hand-mounted directory is not in the set's state (list shows no mount point)" test "$I_MNT" = -
	umount_set "umount -m DIR finds the set by the device mounted at DIR" "$A" -m "$RT/mX"
	check_not "umount -m DIR: the filesystem is unmounted" mountpoint -q mX
	checked "umount -m DIR: every delta checks clean" "$A"
else
	not_ok "mount the partition by hand"
fi

# ---- resize after a crash -------------------------------------------------------------------------------
# The filesystem of a killed server needs its journal replayed: e2fsck -p exits 1 (errors corrected).
mount_set "resize after a crash: mount -m" "$A" -m mA
head -c $((20 * MiB)) /dev/urandom >mA/crash-data
sync -f mA
inst "$A"
kill -9 "$I_PID"
for _ in $(seq 50); do pid_gone "$I_PID" && break; sleep 0.1; done
umount_set "resize after a crash: umount cleans up after the killed server" "$A"
must "resize after a crash: resize -s 600M" pl resize -s 600M "$A"
check "resize after a crash: the disk is 600M" test "$(pl info -s "$A" | awk '/^size:/ {print $2}')" = $((600 * 2048))
if mount_set "resize after a crash: mount the device only" "$A" && inst "$A"; then
	fs_bytes=$(dumpe2fs -h "$I_PART" 2>/dev/null | awk -F: '/^Block count/ {c = $2} /^Block size/ {b = $2} END {print c * b}')
	check "resize after a crash: the filesystem grew with the disk ($fs_bytes bytes)" test "${fs_bytes:-0}" -gt $((550 * MiB))
	must "resize after a crash: e2fsck -fn is clean" e2fsck -fn "$I_PART"
	umount_set "resize after a crash: umount" "$A"
fi
checked "resize after a crash: every delta checks clean" "$A"

# ---- a snapshot view mounted before the top ---------------------------------------------------------------
# Either order works; offline writers stay refused while the view serves, and are told what holds the set.
S1=$(pl snapshot "$A" 2>&1 | snapshot_guid)
check "offline snapshot S1" test -n "$S1"
IDS+=("$(run_id "$A" "$S1")")
mount_set "snapshot view of S1 (the top not mounted)" "$A" -u "$S1" -r -m mV
mount_set "mount the top after the view" "$A" -m mA
put_files mA after-view
verify_files "the top mounted after the view is writable" mA after-view
absent "the view does not see the top's new files" mV/after-view
umount_set "umount the top (the view stays)" "$A"
check "the view still serves" mountpoint -q mV
must "resize -s 700M while only the view is mounted" pl resize -s 700M "$A"
check "resize beside the view: the disk is 700M" test "$(pl info -s "$A" | awk '/^size:/ {print $2}')" = $((700 * 2048))
refuse "offline snapshot-merge while the view is mounted is refused (exit 23)" 23 pl snapshot-merge "$A"
check "the refusal names the view and how to unmount it" grep -q "snapshot $S1 is mounted read-only.*snapshot-umount" "$T/.err"
G=$S1 UCMD=snapshot-umount umount_set "snapshot-umount the view" "$A" -u "$S1" "$A"
mount_set "mount the top again" "$A" -m mA
verify_files "the top's files are there" mA after-view
umount_set "umount the top" "$A"
checked "after the view: every delta checks clean" "$A"

# ---- a leaf snapshot mounted read-write -------------------------------------------------------------------
# snapshot-switch -D keeps the old top as snapshot K with nothing over it: as upstream, K can be
# mounted read-write (only a snapshot with children is read-only only).
before=$(pl snapshot-list -H -o uuid "$A" | sort)
must "snapshot-switch -u S1 -D (the old top kept as a leaf snapshot)" pl snapshot-switch -u "$S1" -D "$A"
K=$(comm -13 <(echo "$before") <(pl snapshot-list -H -o uuid "$A" | sort) | grep -vxF "$TOPG" | head -1)
[ -n "$K" ] || K=$(comm -12 <(echo "$before") <(pl snapshot-list -H -o uuid "$A" | sort) | grep -vxF -e "$TOPG" -e "$S1" | head -1)
check "the leaf snapshot K is listed ($K)" test -n "$K"
IDS+=("$(run_id "$A" "$K")")
refuse "mount -u S1 without -r is refused: S1 has children (exit 38)" 38 pl mount -u "$S1" -m mX "$A"
check "the refusal says S1 has children" grep -q "has children" "$T/.err"
mount_set "mount -u K (a leaf) read-write" "$A" -u "$K" -m mX
if inst "$A" "$K"; then
	check "the leaf's mount is read-write" test "$I_MODE" = rw
	verify_files "the leaf has the old top's files" mX after-view
	put_files mX on-leaf
fi
G=$K umount_set "umount -u K" "$A" -u "$K" "$A"
mount_set "mount -u K -r" "$A" -u "$K" -r -m mX
verify_files "the files written into the leaf are there" mX on-leaf
G=$K umount_set "umount -u K (read-only)" "$A" -u "$K" "$A"
mount_set "mount the top (over S1)" "$A" -m mA
absent "the top does not see the leaf's files" mA/on-leaf
umount_set "umount the top" "$A"
checked "after the leaf's mount: every delta checks clean" "$A"

# ---- a snapshot marked temporary (two children) with a view mounted first ------------------------------------
# S1 has two children: snapshot-delete marks it temporary, to be merged once one is left. That is no
# interrupted merge: the top mounts beside a view as before.
must "snapshot-delete -u S1 (two children: marked temporary)" pl snapshot-delete -u "$S1" "$A"
mount_set "view of K (S1 temporary)" "$A" -u "$K" -r -m mX
mount_set "mount the top after the view, S1 temporary" "$A" -m mA
umount_set "umount the top (S1 temporary)" "$A"
G=$K umount_set "umount the view of K" "$A" -u "$K" "$A"
checked "with S1 temporary: every delta checks clean" "$A"

# ---- wrong targets while mounted: the documented exit codes, messages that name the right thing ---------------
mkdir -p W mW
MNTS+=("$RT/mW")
W=$RT/W/DiskDescriptor.xml
IDS+=("$(run_id "$W")")
NOSUCH='{01234567-89ab-cdef-0123-456789abcdef}'
must "wrong targets: init -s 512M" pl init -s 512M W/root.hds
mount_set "wrong targets: mount" "$W" -m mW
refuse "shrink while mounted needs the set unmounted (exit 17)" 17 pl resize -s 256M "$W"
refuse "online merge of a snapshot that does not exist (exit 38, as offline and upstream)" 38 pl snapshot-merge -u "$NOSUCH" "$W"
check "... says there is no such snapshot" grep -q "no snapshot $NOSUCH" "$T/.err"
refuse "snapshot-umount of a view that is not mounted (exit 40)" 40 pl snapshot-umount -u "$NOSUCH" "$W"
check "... names the snapshot, not the set" grep -q "snapshot $NOSUCH of .* is not mounted" "$T/.err"
must "wrong targets: online snapshot S" pl snapshot "$W"
WS=$(snapshot_guid "$T/.out")
IDS+=("$(run_id "$W" "$WS")")
mount_set "wrong targets: a view of S" "$W" -u "$WS" -r -m mX
refuse "online merge into S while a view holds it (exit 23)" 23 pl snapshot-merge "$W"
check "... names the view and how to unmount it" grep -q "snapshot $WS is mounted read-only.*snapshot-umount -u $WS" "$T/.err"
G=$WS UCMD=snapshot-umount umount_set "wrong targets: snapshot-umount the view" "$W" -u "$WS" "$W"

# ---- a server that takes no requests (stopped, or hung with its socket's backlog full) ----------------------
# A command to a stopped server fails within a few seconds, changing nothing: umount, snapshot and a
# resize (which, without CAP_SYS_RESOURCE, would unmount the filesystem first and hang in that unmount
# for as long as the server is stopped). Once the server is continued, it runs none of the commands
# whose clients gave up (a stop run then took the set away). Checked before anything fills the
# socket's backlog: that makes the connect itself fail, which is the other way of noticing.
# (A watchdog continues the server should a command hang in the kernel, so the test cannot.)
if inst "$W"; then
	hung=$I_PID
	at_exit "kill -CONT $hung"
	size0=$(pl info -s "$W")
	snaps0=$(pl snapshot-list -H "$W" | wc -l)
	kill -STOP "$hung"
	(sleep 90; kill -CONT "$hung") >/dev/null 2>&1 &
	watchdog=$!
	for c in "umount" "snapshot" "resize -s 900M"; do
		t0=$(now_ms)
		refuse "$c of a stopped server fails at once (exit 2)" 2 timeout 20 "$PLOOP" $c "$W"
		ms=$(($(now_ms) - t0))
		check "... within 5 s ($ms ms)" test "$ms" -lt 5000
		check "... says the server takes no requests" grep -q "takes no requests" "$T/.err"
	done
	check "... the filesystem stays mounted" mountpoint -q "$RT/mW"
	slow=0
	for i in $(seq 15); do timeout 10 "$PLOOP" list -H >/dev/null 2>&1 || slow=$((slow + 1)); done
	check "ploop list does not wait for a stopped server (15 calls, $slow timed out)" test "$slow" = 0
	refuse "umount of a stopped server with its backlog full fails at once" 2 timeout 10 "$PLOOP" umount "$W"
	check "... says the server takes no requests" grep -q "takes no requests" "$T/.err"
	kill -CONT "$hung"
	kill "$watchdog" 2>/dev/null; wait "$watchdog" 2>/dev/null
	sleep 2
	check "continued, the server ran none of the commands given up on: still mounted" \
		test "$(pl list -H | grep -c " $W\$")" = 1
	check "... its filesystem too" mountpoint -q "$RT/mW"
	check "... no new snapshot" test "$(pl snapshot-list -H "$W" | wc -l)" = "$snaps0"
	check "... the size unchanged" test "$(pl info -s "$W")" = "$size0"
fi
# ---- a client of the control socket that sends nothing ----------------------------------------------------
# The server takes one connection at a time: an idle one is dropped after a few seconds, so the
# commands behind it go through instead of waiting for ever - also when a burst of `ploop list` (each
# looks at the server) has filled the socket's backlog meanwhile: the server runs, so it is waited for.
if inst "$W"; then
	python3 -c 'import socket,sys,time; s=socket.socket(socket.AF_UNIX,socket.SOCK_SEQPACKET); s.connect(sys.argv[1]); print("connected",flush=True); time.sleep(60)' \
		"/run/ploop/$(run_id "$W")/control" >"$T/idle" &
	idle=$!
	at_exit "kill $idle"
	for _ in $(seq 50); do grep -q connected "$T/idle" && break; sleep 0.1; done
	listers=()
	for _ in $(seq 12); do pl list >/dev/null 2>&1 & listers+=($!); done
	sleep 0.5
	must "an online snapshot while another client holds the control socket idle" timeout 30 "$PLOOP" snapshot "$W"
	wait "${listers[@]}"
	kill "$idle"; wait "$idle" 2>/dev/null
	must "... merged back" pl snapshot-merge "$W"
fi

# ---- umount while something holds the device open -------------------------------------------------------
# A holder that goes away within a few seconds (a probe after the unmount) is waited for; one that
# stays makes umount refuse (exit 46) and leaves the set served.
if inst "$W"; then
	python3 -c 'import os,sys,time; fd=os.open(sys.argv[1],os.O_RDONLY); print("open",flush=True); time.sleep(30)' \
		"$I_PART" >"$T/holder" &
	holder=$!
	at_exit "kill $holder"
	for _ in $(seq 50); do grep -q open "$T/holder" && break; sleep 0.1; done
	refuse "umount while a process holds the partition open refused (exit 46)" 46 pl umount "$W"
	check "... names the process" grep -q "is open in process $holder" "$T/.err"
	check "... and leaves the set served" test "$(pl list -H | grep -c " $W\$")" = 1
	kill "$holder"; wait "$holder" 2>/dev/null
	python3 -c 'import os,sys,time; fd=os.open(sys.argv[1],os.O_RDONLY); print("open",flush=True); time.sleep(1)' \
		"$I_PART" >"$T/holder" &
	holder=$!
	for _ in $(seq 50); do grep -q open "$T/holder" && break; sleep 0.1; done
	umount_set "umount while a process holds the partition open for a second waits for it" "$W"
	wait "$holder"
else
	not_ok "wrong targets: the set is not mounted"
fi
# ---- a host filesystem with room for less than the server's preallocation step -----------------------
# The server grows the top by 16 clusters at a time, or by one when that does not fit; only what was
# allocated may count as preallocated: the next clusters were written into holes of the file, and
# once the disk was full the last one stayed half written, so a cleanly unmounted top failed check
# (size not aligned to the cluster, exit 11).
# fill_host NAME DIR WRITES: a set on the small host filesystem mounted at DIR, 4K written every
# cluster until the host is full (WRITES clusters are more than it holds), umounted: the top must be
# a whole number of clusters and every delta must check clean.
fill_host() {
	local name=$1 dir=$2 n=$3 dd=$RT/$2/DiskDescriptor.xml i
	IDS+=("$(run_id "$dd")")
	must "$name: init -t none" pl init -s 512M -t none "$dir/root.hds"
	if mount_set "$name: mount" "$dd"; then
		inst "$dd"
		for i in $(seq 0 "$n"); do
			dd if=/dev/urandom of="$I_DEV" bs=4k count=1 seek=$((i * 256)) oflag=direct conv=notrunc \
				status=none 2>/dev/null
		done
		umount_set "$name: umount" "$dd"
	fi
	check "$name: the top is a whole number of clusters" test $(($(stat -c %s "$dir/root.hds") % MiB)) = 0
	checked "$name: every delta checks clean" "$dd"
}
mkdir -p F
if mount -t tmpfs -o size=2200k tmpfs F; then
	at_exit "umount -l $RT/F"
	fill_host "full host (2200k tmpfs)" F 17
	umount "$RT/F"
fi
# An online merge without the space it needs fails (20) before any data moves, and leaves the set as
# it was: no <Temporary/> marker (every later command would redo the merge, and fail), the parent
# clean, the set still served and written.
mkdir -p M
if mount -t tmpfs -o size=8M tmpfs M; then
	at_exit "umount -l $RT/M"
	MD=$RT/M/DiskDescriptor.xml
	IDS+=("$(run_id "$MD")")
	must "merge, host full: init -t none" pl init -s 64M -t none M/root.hds
	if mount_set "merge, host full: mount" "$MD" && inst "$MD"; then
		dd if=/dev/urandom of="$I_DEV" bs=1M count=1 oflag=direct status=none
		must "merge, host full: online snapshot" pl snapshot "$MD"
		for i in 8 9 10 11; do
			dd if=/dev/urandom of="$I_DEV" bs=1M count=1 seek=$i oflag=direct status=none 2>/dev/null
		done
		refuse "merge, host full: online snapshot-merge without the space (exit 20)" 20 pl snapshot-merge "$MD"
		check "... no <Temporary/> left in the descriptor" bash -c "! grep -q Temporary '$MD'"
		check "... still two deltas" test "$(grep -c '<Image>' "$MD")" = 2
		umount_set "merge, host full: umount" "$MD"
		checked "merge, host full: every delta checks clean" "$MD"
	fi
	umount "$RT/M"
fi
# The same on ext4: a fallocate that runs out of space there keeps what it allocated and grows the
# file to it (not a whole number of clusters), which the server took as not allocated at all: the
# file stayed longer than its last cluster after a clean umount (check: not aligned, exit 11).
mkdir -p X
truncate -s 12M X.img
if mkfs.ext4 -q -F X.img && mount -o loop X.img X; then
	at_exit "umount -l $RT/X"
	fill_host "full ext4 host (12M)" X 20
	umount "$RT/X"
fi

# ---- two sets mounted on one directory ---------------------------------------------------------------
# umount of the lower set unmounted the upper set's filesystem first (the directory shows the upper
# one), then its own: the other set was left unmounted behind its server's back. Refused now (46).
mkdir -p O1 O2 mO
MNTS+=("$RT/mO")
O1=$RT/O1/DiskDescriptor.xml O2=$RT/O2/DiskDescriptor.xml
IDS+=("$(run_id "$O1")" "$(run_id "$O2")")
must "stacked: init O1" pl init -s 256M O1/root.hds
must "stacked: init O2" pl init -s 256M O2/root.hds
mount_set "stacked: mount O1 on mO" "$O1" -m mO
mount_set "stacked: mount O2 on mO too" "$O2" -m mO
touch mO/o2-file
refuse "stacked: umount of the lower set O1 refused (exit 46)" 46 pl umount "$O1"
check "... saying another filesystem is mounted over it" grep -q "another filesystem is mounted over it" "$T/.err"
check "... and O2's filesystem is still mounted on mO" test -e mO/o2-file
must "stacked: umount O2" pl umount "$O2"
check "... leaves O1 mounted on mO" mountpoint -q mO
check_not "... and takes O2 out of ploop list" inst "$O2"
umount_set "stacked: umount O1" "$O1"
# ---- a dead server's cleanup when another filesystem is on its mount point ------------------------------
# ploop umount (or mount) of a set whose server died unmounted its mount point by path: the other
# set's filesystem mounted over it went instead (and then its own too). Refused now (46); a
# filesystem mounted in its place, once ours was unmounted by hand, is left alone.
mount_set "dead, stacked: mount O1 on mO" "$O1" -m mO
mount_set "dead, stacked: mount O2 on mO too" "$O2" -m mO
touch mO/o2-dead
inst "$O1"
pid=$I_PID
kill -9 "$pid"
for _ in $(seq 50); do pid_gone "$pid" && break; sleep 0.1; done
refuse "dead, stacked: umount of O1 after its server died refused (exit 46)" 46 pl umount "$O1"
check "... saying another filesystem is mounted over it" grep -q "another filesystem is mounted over it" "$T/.err"
check "... and O2's filesystem is still mounted on mO" test -e mO/o2-dead
refuse "dead, stacked: mount O1 again (cleans up first) refused too (exit 46)" 46 pl mount "$O1"
check "... and O2's filesystem is still mounted on mO" test -e mO/o2-dead
inst "$O2" && check "... and O2 still serves" test "$I_MODE" = rw
must "dead, stacked: umount O2" pl umount "$O2"
umount_set "dead, stacked: then umount O1 cleans up after its dead server" "$O1"
check_not "... and nothing is left on mO" mountpoint -q mO
mount_set "dead, in its place: mount O1 on mO" "$O1" -m mO
inst "$O1"
pid=$I_PID
kill -9 "$pid"
for _ in $(seq 50); do pid_gone "$pid" && break; sleep 0.1; done
umount "$RT/mO"
if mount -t tmpfs tmpfs mO; then
	touch mO/tmpfs-file
	must "dead, in its place: umount O1 (its filesystem unmounted by hand, a tmpfs on mO)" pl umount "$O1"
	check_not "... takes O1 out of ploop list" inst "$O1"
	check "... leaves the tmpfs mounted on mO" test -e mO/tmpfs-file
	umount "$RT/mO"
else
	not_ok "dead, in its place: mount a tmpfs on mO"
fi

# ---- resize of a set whose mount point has another filesystem mounted over it --------------------------
# Without CAP_SYS_RESOURCE the filesystem is unmounted, grown and mounted again: the unmount by path
# took off the tmpfs over it (and the remount stacked ours on ours); with it, resize2fs grows what its
# mount point shows. Refused now before anything changes (46); once the cover is gone it grows.
mount_set "covered: mount O1 on mO" "$O1" -m mO
inst "$O1"
part=$I_PART
df0=$(df -B1 --output=size "$RT/mO" | tail -1)
if mount -t tmpfs tmpfs mO; then
	touch mO/cover-file
	for how in "" "setpriv --bounding-set=-sys_resource --"; do
		refuse "covered: resize -s 320M${how:+ without CAP_SYS_RESOURCE} refused (exit 46)" 46 $how "$PLOOP" resize -s 320M "$O1"
		check "... naming the directory" grep -q "$RT/mO" "$T/.err"
		check "... and the tmpfs is still mounted over mO" test -e mO/cover-file
		check "... and the disk did not grow" test "$(pl info -s "$O1" | awk '/^size:/ {print $2}')" = $((256 * 2048))
	done
	# FITRIM and FIFREEZE of the mount point would reach the tmpfs: compact is refused, an online
	# snapshot is taken without freezing (the server says so in its log).
	refuse "covered: compact refused (exit 46)" 46 pl compact "$O1"
	check "... and the tmpfs is still mounted over mO" test -e mO/cover-file
	must "covered: online snapshot" pl snapshot "$O1"
	check "... not frozen, logged as covered" grep -q "not frozen: another filesystem is mounted over $RT/mO" \
		"/run/ploop/$(run_id "$O1")/log"
	# Mounted by hand on a second directory where it does show, first in mountinfo: still refused
	# (the unmount to grow would leave it mounted under the cover, after the disk grew).
	MNTS+=("$RT/mB")
	mkdir -p mB
	if umount mO && umount mO && mount "$part" mB && mount "$part" mO && mount -t tmpfs tmpfs mO &&
		touch mO/cover-file; then
		refuse "covered, shown at mB too: resize refused (exit 46)" 46 pl resize -s 320M "$O1"
		check "... naming the covered directory" grep -q "$RT/mO" "$T/.err"
		must "covered, shown at mB too: online snapshot" pl snapshot "$O1"
		check "... not frozen either" \
			test "$(grep -c "not frozen: another filesystem is mounted over $RT/mO" "/run/ploop/$(run_id "$O1")/log")" = 2
		check "... and the tmpfs is still mounted over mO" test -e mO/cover-file
		umount mB
	else
		not_ok "covered: mount $part on mB as well"
	fi
	umount "$RT/mO"
	must "covered: once the cover is gone, resize -s 320M without CAP_SYS_RESOURCE" \
		setpriv --bounding-set=-sys_resource -- "$PLOOP" resize -s 320M "$O1"
	check "... grew the filesystem ($df0 -> $(df -B1 --output=size "$RT/mO" | tail -1) bytes)" \
		test "$(df -B1 --output=size "$RT/mO" | tail -1)" -gt $((df0 + 50 * MiB))
	check "... mounted again on mO, once" test "$(findmnt -n -o SOURCE --mountpoint "$RT/mO")" = "$part"
else
	not_ok "covered: mount a tmpfs over mO"
fi
umount_set "covered: umount O1" "$O1"
checked "covered: every delta checks clean" "$O1"

# ---- resize without CAP_SYS_RESOURCE of a filesystem mounted by hand ---------------------------------------
# It is unmounted to grow, before the disk grows: mounted on two directories it is refused with
# nothing changed (the unmount of one left it mounted, e2fsck failed after the disk grew); mounted on
# one, it comes back with the options it had (it came back read-write, without nosuid...).
noresource="setpriv --bounding-set=-sys_resource --"
MNTS+=("$RT/mH" "$RT/mH2")
mkdir -p mH mH2
mount_set "by hand: mount O1 (device only)" "$O1"
inst "$O1"
size0=$(pl info -s "$O1" | awk '/^size:/ {print $2}')
if mount -o ro,nosuid,nodev,noexec,noatime,nosymfollow "$I_PART" mH && mount --bind mH mH2; then
	refuse "by hand, on two directories: resize without CAP_SYS_RESOURCE refused (exit 46)" 46 \
		$noresource "$PLOOP" resize -s 400M "$O1"
	check "... saying so" grep -q "mounted on 2 directories" "$T/.err"
	check "... nothing changed: the disk did not grow" test "$(pl info -s "$O1" | awk '/^size:/ {print $2}')" = "$size0"
	check "... both still mounted" bash -c "mountpoint -q mH && mountpoint -q mH2"
	umount mH2
	must "by hand ro,nosuid,nodev,noexec,noatime,nosymfollow: resize without CAP_SYS_RESOURCE" \
		$noresource "$PLOOP" resize -s 400M "$O1"
	check "... the disk grew" test "$(pl info -s "$O1" | awk '/^size:/ {print $2}')" = $((400 * 2048))
	opts=$(findmnt -n -o OPTIONS --mountpoint "$RT/mH")
	check "... mounted again with its options ($opts)" \
		test "$(tr , '\n' <<<"$opts" | grep -cxE 'ro|nosuid|nodev|noexec|noatime|nosymfollow')" = 6
	umount mH
else
	not_ok "by hand: mount $I_PART read-only on mH and bind it on mH2"
fi
umount_set "by hand: umount O1" "$O1"
checked "by hand: every delta checks clean" "$O1"
# ---- snapshot-umount of a view with a filesystem mounted over it ----------------------------------------
# The view's server unmounts its directory only while the view's filesystem shows there (46 otherwise).
OS=$(pl snapshot "$O1" 2>&1 | snapshot_guid)
check "covered view: offline snapshot of O1" test -n "$OS"
IDS+=("$(run_id "$O1" "$OS")")
mount_set "covered view: snapshot-mount of it on mO" "$O1" -u "$OS" -r -m mO
if mount -t tmpfs tmpfs mO; then
	touch mO/cover-file
	refuse "covered view: snapshot-umount refused (exit 46)" 46 pl snapshot-umount -u "$OS" "$O1"
	check "... saying another filesystem is mounted over it" grep -q "another filesystem is mounted over it" "$T/.err"
	check "... and the tmpfs is still mounted over mO" test -e mO/cover-file
	umount "$RT/mO"
else
	not_ok "covered view: mount a tmpfs over mO"
fi
G=$OS UCMD=snapshot-umount umount_set "covered view: snapshot-umount once the cover is gone" "$O1" -u "$OS" "$O1"

# ---- a mounted set whose directory is renamed ----------------------------------------------------------
# A set is its files, not the path it was mounted by. Its directory renamed and a new set made under
# the old name, the new one was taken as mounted: its snapshot was done by the old set's server (the
# new delta in R1 became that server's top, where the device's writes then went), and the renamed set
# was not found (umount: not mounted, snapshot: locked). The set's base delta now identifies it: the
# new R1 is not mounted, the renamed set is found (and listed) as R1x, and the server acts on no
# descriptor that does not name the very files it has open.
R=$RT/R1/DiskDescriptor.xml
RX=$RT/R1x/DiskDescriptor.xml
mkdir -p R1
must "renamed: init R1 (-t none)" pl init -s 64M -t none R1/root.hds
mount_set "renamed: mount R1" "$R"
inst "$R"
rdev=$I_DEV
random_file "$T/w0" 4
random_file "$T/w4" 1
dd if="$T/w0" of="$rdev" bs=1M oflag=direct conv=fsync status=none
mv R1 R1x
mkdir R1
must "renamed: init a new set R1 where it was" pl init -s 64M -t none R1/root.hds
check "... ploop list shows the mounted set as R1x" inst "$RX"
check "... and not the new R1" bash -c "! $PLOOP list -H | grep -qF ' $R'"
must "renamed: snapshot of the new R1 (offline: it is not mounted)" pl snapshot "$R"
check "... R1 has 2 deltas now" test "$(ndeltas "$R")" = 2
check "... the server's top is still R1x's only delta" test "$(ndeltas "$RX")" = 1
check "... the server's log names no snapshot" bash -c "! grep -q 'snapshot {' /run/ploop/$(run_id "$R")/log"
must "renamed: snapshot of R1x (online, by its server)" pl snapshot "$RX"
check "... R1x has 2 deltas" test "$(ndeltas "$RX")" = 2
check "... R1 still has 2" test "$(ndeltas "$R")" = 2
dd if="$T/w4" of="$rdev" bs=1M seek=8 oflag=direct conv=fsync status=none
# Neither name nor the descriptor of R1x names the files served any more: refused by the server.
top=$(deltas "$RX" | tail -1)
cp "$RX" "$T/rx.xml"
cp "$top" R1x/copy.hds
sed "s:${top##*/}:copy.hds:" "$T/rx.xml" >R1x/DiskDescriptor.xml.new && mv R1x/DiskDescriptor.xml.new "$RX"
python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect(sys.argv[1])
s.send(b"snapshot")
print(s.recv(4096).decode())' "/run/ploop/$(run_id "$R")/control" >"$T/.reply" 2>&1
check "renamed: the server refuses a snapshot when no descriptor names its files (39): $(head -c 200 "$T/.reply")" \
	grep -q '^err 39 .*does not name the images this server has open' "$T/.reply"
check "... nothing was made" test "$(ls R1x | grep -c 'root.hds.{')" = 1
mv "$T/rx.xml" "$RX"
rm -f R1x/copy.hds
mount_set "renamed: mount the new R1 as well" "$R"
check "... both listed" bash -c "$PLOOP list -H | grep -qF ' $R' && $PLOOP list -H | grep -qF ' $RX'"
umount_set "renamed: umount the new R1" "$R"
umount_set "renamed: umount R1x" "$RX"
must "renamed: export R1x" pl export "$RX" "$T/rx.raw"
check "... it has the first write" cmp -n $((4 * MiB)) "$T/w0" "$T/rx.raw"
check "... and the one after the snapshot" cmp -n $MiB -i 0:$((8 * MiB)) "$T/w4" "$T/rx.raw"
must "renamed: export R1" pl export "$R" "$T/r.raw"
check "... which holds neither" bash -c "! cmp -s -n $MiB -i 0:$((8 * MiB)) '$T/w4' '$T/r.raw' && ! cmp -s -n $((4 * MiB)) '$T/w0' '$T/r.raw'"
checked "renamed: every delta of R1x checks clean" "$RX"
checked "renamed: every delta of R1 checks clean" "$R"

# ---- sets that share a base file, or a path, with a mounted one ------------------------------------------
# A set whose base is a hard link of a mounted set's base was taken for it (its snapshot made by the
# other's server, its umount unmounting the other): a server serves the set its base is named in now.
HA=$RT/HA/DiskDescriptor.xml HB=$RT/HB/DiskDescriptor.xml
mkdir -p HA HB
must "hard link: init HA" pl init -s 64M -t none HA/root.hds
mount_set "hard link: mount HA" "$HA"
ln HA/root.hds HB/root.hds
cp "$HA" "$HB"
refuse "hard link: umount of HB, which is not mounted (exit 40)" 40 pl umount "$HB"
check "... HA is still mounted" inst "$HA"
pl snapshot "$HB" >/dev/null 2>&1
check "... a snapshot of HB was not made by HA's server" test "$(ndeltas "$HA")" = 1
umount_set "hard link: umount HA" "$HA"
rm -rf HB
# Three sets mounted one after the other from one path, each renamed away: each gets a server of its own.
for i in 1 2 3; do
	mkdir -p TP
	must "one path, set $i: init" pl init -s 64M -t none TP/root.hds
	mount_set "one path, set $i: mount" "$RT/TP/DiskDescriptor.xml"
	mv TP "TP$i"
	IDS+=("$(run_id "$RT/TP/DiskDescriptor.xml")")
done
for i in 1 2 3; do umount_set "one path, set $i: umount by its new name" "$RT/TP$i/DiskDescriptor.xml"; done
# A dead server's leftovers are found by the path it served, even once its base file was replaced.
DB=$RT/DB/DiskDescriptor.xml
mkdir -p DB
must "dead, base replaced: init" pl init -s 64M -t none DB/root.hds
if mount_set "dead, base replaced: mount" "$DB" && inst "$DB"; then
	pid=$I_PID
	kill -9 "$pid"
	for _ in $(seq 50); do pid_gone "$pid" && break; sleep 0.1; done
	# Offline commands are refused until umount has cleaned up; the file is replaced by hand.
	must "dead, base replaced: a copy of the base put in its place (a new file)" \
		sh -c "cp --sparse=always DB/root.hds DB/root.new && mv DB/root.new DB/root.hds"
	umount_set "dead, base replaced: umount by the descriptor cleans up" "$DB"
fi
# A base moved out of its set's directory leaves the set where its descriptor is.
MB=$RT/MB/DiskDescriptor.xml
mkdir -p MB MBX
must "base moved: init" pl init -s 64M -t none MB/root.hds
mount_set "base moved: mount" "$MB"
mv MB/root.hds MBX/
check "... ploop list still shows the set where its descriptor is" inst "$MB"
mv MBX/root.hds MB/
umount_set "base moved back: umount" "$MB"
# A client that keeps sending commands on one connection held every other command back.
mount_set "poller: mount" "$MB"
python3 -c '
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect(sys.argv[1])
try:
    for _ in range(30):
        s.send(b"status"); s.recv(4096); time.sleep(0.5)
except OSError:
    pass' "/run/ploop/$(run_id "$MB")/control" &
poller=$!
at_exit "kill $poller"
sleep 0.3
must "poller: an online snapshot while a client sends status every 0.5 s" timeout 10 "$PLOOP" snapshot "$MB"
kill "$poller" 2>/dev/null; wait "$poller" 2>/dev/null
umount_set "poller: umount" "$MB"

# ---- two resizes of one mounted set at the same moment -------------------------------------------------
# They interleaved (the server's grow, the partition table, resize2fs): the second failed with "e2fsck
# failed" or took the first one's size for a shrink. One waits for the other or is refused as locked
# (23); the filesystem checks clean and the disk has one of the two sizes.
Z=$RT/Z/DiskDescriptor.xml
mkdir -p Z
must "concurrent resizes: init -s 512M" pl init -s 512M Z/root.hds
mount_set "concurrent resizes: mount (device only)" "$Z"
for sizes in "950 930" "1100 1080" "1300 1290"; do
	read -r s1 s2 <<<"$sizes"
	name="concurrent resizes to ${s1}M and ${s2}M"
	pl resize -s ${s1}M "$Z" >"$T/r1.out" 2>"$T/r1.err" &
	p1=$!
	sleep 0.03
	pl resize -s ${s2}M "$Z" >"$T/r2.out" 2>"$T/r2.err"
	rc2=$?
	wait $p1
	rc1=$?
	if { [ $rc1 = 0 ] || [ $rc1 = 23 ]; } && { [ $rc2 = 0 ] || [ $rc2 = 23 ]; } && [ $((rc1 + rc2)) != 46 ]; then
		ok "$name: exits $rc1 and $rc2"
	else
		not_ok "$name: exits $rc1 and $rc2 ($(cat "$T/r1.err" "$T/r2.err" | tr '\n' ' ' | head -c 300))"
	fi
	for r in 1 2; do
		rc=rc$r
		[ ${!rc} = 23 ] && check "... the refused one says so in one line" test "$(wc -l <"$T/r$r.err")" = 1
	done
	size=$(pl info -s "$Z" | awk '/^size:/ {print $2}')
	check "... the disk has one of the two sizes ($size sectors)" \
		test "$size" = $((s1 * 2048)) -o "$size" = $((s2 * 2048))
	inst "$Z"
	check "... the filesystem checks clean" bash -c "e2fsck -fn '$I_PART' >/dev/null 2>&1"
done
umount_set "concurrent resizes: umount" "$Z"
checked "concurrent resizes: every delta checks clean" "$Z"
finish
