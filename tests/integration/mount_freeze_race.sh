#!/usr/bin/env bash
# The filesystem that an online snapshot freezes, and that compact trims, is the set's own: a mount
# point unmounted between the server (or compact) finding it and opening it, as `ploop resize`
# without CAP_SYS_RESOURCE unmounts it, is then a directory of the filesystem below, which must be
# left alone (it was frozen, for good when the deltas live there too: the server blocked writing
# the new delta). strace delays the open of the mount point to hold that window open. The
# filesystem below is a small ext4 on a loop device holding the set, so a failure freezes only it
# (thawed on every exit).
source "$(dirname "$0")/../lib.sh"
source "$ROOT/tests/mount_ops_lib.sh"

host_fs 200 || finish
at_exit '[ -z "${STRACE:-}" ] || kill "$STRACE"'
DD=$H/img/DiskDescriptor.xml
MNTS=("$H/mnt")
mkdir -p "$H/img" "$H/mnt"
must "init -s 512M (GPT + ext4)" pl init -s 512M "$H/img/root.hds" || finish
IDS+=("$(run_id "$DD")")

# strace options that delay each open of the mount point by 2 s. Only openat stops a tracee
# (--seccomp-bpf): a server thread caught in a tracing stop at every syscall is taken for a
# stopped server by the client, which gives up on it ("takes no requests").
DELAY_OPEN=(-f --seccomp-bpf -P "$H/mnt" -e trace=openat -e inject=openat:delay_enter=2000000)
# meanwhile PID SECS: the mount point is unmounted SECS after command PID started (while its open is
# delayed); RC is the command's exit status
meanwhile() {
	sleep "$2"
	umount "$H/mnt"
	wait "$1"
	RC=$?
}
# host_writable: a write to the filesystem below completes (a writer of a frozen filesystem waits
# where no signal reaches it: after 5 s it is thawed, and the answer is no)
host_writable() {
	touch "$H/probe" &
	local p=$! i
	for ((i = 0; i < 50; i++)); do
		kill -0 $p 2>/dev/null || { wait $p; return; }
		sleep 0.1
	done
	fsfreeze -u "$H"
	wait $p
	return 1
}

mount_set "mount -m" "$DD" -m "$H/mnt" || finish
inst "$DD"
strace "${DELAY_OPEN[@]}" -p "$I_PID" -o "$T/strace.snap" 2>/dev/null &
STRACE=$!
sleep 1
timeout --foreground 30 "$PLOOP" snapshot "$DD" >"$T/.out" 2>&1 &
meanwhile $! 0.7
# first, as it thaws what it finds frozen: strace cannot leave a server waiting on a frozen filesystem
check "the filesystem below the mount point was not frozen" host_writable
kill "$STRACE" 2>/dev/null; wait "$STRACE" 2>/dev/null; STRACE=
check "the server opened the mount point while it was being unmounted (strace saw it)" grep -q "$H/mnt" "$T/strace.snap"
check "snapshot, its mount point unmounted meanwhile: done (exit $RC: $(head -c 200 "$T/.out"))" test "$RC" = 0
umount_set "umount" "$DD"
must "snapshot-merge (compact gives nothing back over snapshots)" pl snapshot-merge "$DD"

mount_set "mount -m again" "$DD" -m "$H/mnt" || finish
strace "${DELAY_OPEN[@]}" -o "$T/strace.compact" timeout --foreground 30 "$PLOOP" compact "$DD" >"$T/.out" 2>&1 &
meanwhile $! 1.2
check "compact opened the mount point while it was being unmounted (strace saw it)" grep -q "$H/mnt" "$T/strace.compact"
check "compact, its mount point unmounted meanwhile: refused (exit $RC: $(head -c 200 "$T/.out"))" test "$RC" = 46
check "... saying so" grep -q "was unmounted meanwhile: not trimmed" "$T/.out"
umount_set "umount" "$DD"
checked "the deltas are clean" "$DD"
finish
