# Shared helpers of the simfs integration tests (sourced after tests/lib.sh): private run and
# quota directories under $T, mounts that the EXIT trap always undoes, quota tool shortcuts.
SIMFS=${SIMFS:-$ROOT/build/bin/simfs}
VZQUOTA=${VZQUOTA:-$ROOT/build/bin/vzquota}
QTOOL=${QTOOL:-$ROOT/build/bin/simfs-qtool}
export SIMFS_RUN_DIR=$T/simfs-run VZQ_DIR=$T/vzq VZQ_RUN_DIR=$T/vzq-run
mkdir -p "$VZQ_DIR" "$VZQ_RUN_DIR"
TO=${SIMFS_TIMEOUT:-60}

simfs_skip_unless_root() {
	if [ "$(id -u)" != 0 ] || [ ! -c /dev/fuse ]; then
		ok "$1 # SKIP needs root and /dev/fuse"
		finish
	fi
}

# sf ARGS...: the simfs tool, killed if it hangs (exit 124).
sf() { timeout -k 5 "$TO" "$SIMFS" "$@"; }

# Every instance this test started goes, however the test ends: clean umount, then the daemon is
# killed and its mount detached.
_simfs_sweep() {
	local st root pid
	for st in "$SIMFS_RUN_DIR"/*.state; do
		[ -e "$st" ] || continue
		root=$(sed -n 's/^root=//p' "$st")
		pid=$(sed -n 's/^pid=//p' "$st")
		timeout -k 5 20 "$SIMFS" umount "$root" || timeout -k 5 20 "$SIMFS" umount -l "$root"
		[ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = simfs ] && kill -9 "$pid"
		umount -l "$root"
	done
	grep " fuse.simfs " /proc/self/mountinfo | awk '{ print $5 }' | grep "^$T/" | while read -r m; do umount -l "$m"; done
}
at_exit _simfs_sweep

# quota_init ID PATH BSOFT_KB BHARD_KB ISOFT IHARD [GRACE_S]: a quota, on, with second level.
quota_init() {
	"$VZQUOTA" -q init "$1" -p "$2" -b "$3" -B "$4" -i "$5" -I "$6" -e "${7:-60}" -n "${7:-60}" -s 1 -u 1000 >/dev/null &&
		"$VZQUOTA" -q on "$1" -p "$2" >/dev/null
}
# usage_kb ID: first-level block usage (KiB) the daemon holds, after a sync.
quota_sync() { "$VZQUOTA" stat "$1" >/dev/null 2>&1; }
