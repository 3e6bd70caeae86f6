# Helpers of the mounted-image integrity and crash tests (sourced after tests/lib.sh): the instance
# of an image set, mount/umount as checks, leftovers, last-resort cleanup, background writers.

FW=${FSYNC_WRITER:-$ROOT/build/bin/fsync-writer}
declare -A SET_IDS=()	# descriptor realpath -> run-directory id of its read-write instance
declare -A LAST=()	# id -> "pid device part" as last seen
MNTS=()			# mount points this test created
WRITERS=()		# background writer pids
SERVER_LOGS=$T/server-logs
mkdir -p "$SERVER_LOGS"

# inst_state DD: the state file of DD's read-write instance (empty if there is none).
inst_state() {
	local dd s
	dd=$(realpath "$1" 2>/dev/null) || return 1
	for s in /run/ploop/*/state; do
		[ -f "$s" ] || continue
		if grep -qxF "descriptor=$dd" "$s" 2>/dev/null && grep -qx 'guid=' "$s" 2>/dev/null; then
			echo "$s"
			return 0
		fi
	done
	return 1
}
# field DD NAME: a field of DD's instance state (pid, device, part, mount, file).
field() {
	local s
	s=$(inst_state "$1") || return 1
	sed -n "s/^$2=//p" "$s"
}
# remember DD: records the instance of DD for the last-resort cleanup.
remember() {
	local s id
	s=$(inst_state "$1") || return 1
	id=$(basename "$(dirname "$s")")
	SET_IDS[$(realpath "$1")]=$id
	LAST[$id]="$(sed -n 's/^pid=//p' "$s") $(sed -n 's/^device=//p' "$s") $(sed -n 's/^part=//p' "$s")"
}
# save_log DD TAG: keeps a copy of the server log (a dead server's log goes with its run directory).
save_log() {
	local id=${SET_IDS[$(realpath "$1")]:-}
	[ -n "$id" ] && [ -f "/run/ploop/$id/log" ] && cp "/run/ploop/$id/log" "$SERVER_LOGS/$2.log"
	return 0
}
# show_log TAG: the saved server log as comment lines.
show_log() {
	[ -f "$SERVER_LOGS/$1.log" ] && tail -n 25 "$SERVER_LOGS/$1.log" | sed 's/^/#   server log: /'
	return 0
}
alive() {	# alive PID: a process with at least one thread that is not a zombie
	local t
	for t in /proc/"$1"/task/*/stat; do
		[ -r "$t" ] || continue
		[ "$(sed 's/.*) //' "$t" 2>/dev/null | cut -c1)" != Z ] && return 0
	done
	return 1
}
# pmount NAME DD [ARGS...]: ploop mount; a failure is a failed check (with its message).
pmount() {
	local name=$1 dd=$2 rc
	shift 2
	"$PLOOP" mount "$@" "$dd" >"$T/.mount.out" 2>&1
	rc=$?
	if [ $rc != 0 ]; then
		not_ok "$name: ploop mount exit $rc: $(tr '\n' ' ' <"$T/.mount.out" | head -c 300)"
		return 1
	fi
	remember "$dd"
	return 0
}
# pumount NAME DD: ploop umount; then nothing of the set may be left (server, mounts, devices).
pumount() {
	local name=$1 dd=$2 rc left pid i
	pid=$(field "$dd" pid)
	"$PLOOP" umount "$dd" >"$T/.umount.out" 2>&1
	rc=$?
	if [ $rc = 0 ] && [ -n "$pid" ] && alive "$pid"; then
		# ploop umount is back; the server's last threads may still be on their way out.
		echo "# $name: server $pid still had threads after ploop umount returned: $(stuck_threads "$pid")"
		for i in $(seq 60); do
			alive "$pid" || break
			sleep 0.05
		done
	fi
	left=$(leftovers "$dd")
	if [ $rc != 0 ] || [ -n "$left" ]; then
		not_ok "$name: ploop umount exit $rc ($(tr '\n' ' ' <"$T/.umount.out" | head -c 300)) leftovers: ${left:-none}"
		return 1
	fi
	return 0
}
# leftovers DD: what is left of DD's instance (prints nothing when it is all gone).
leftovers() {
	local dd id pid d bf
	dd=$(realpath "$1")
	id=${SET_IDS[$dd]:-}
	[ -n "$id" ] || return 0
	read -r pid _ <<<"${LAST[$id]:-}"
	if [ -n "${pid:-}" ] && alive "$pid" && grep -qF "$dd" "/proc/$pid/cmdline" 2>/dev/null; then
		echo -n "server $pid running; "
	fi
	grep -qF " /run/ploop/$id/disk " /proc/mounts && echo -n "FUSE mount /run/ploop/$id/disk; "
	for d in /sys/block/loop*/loop/backing_file; do
		[ -r "$d" ] || continue
		bf=$(cat "$d" 2>/dev/null)
		case $bf in "/run/ploop/$id/"*) echo -n "loop device $(basename "$(dirname "$(dirname "$d")")") on $bf; " ;; esac
	done
	for d in "${MNTS[@]}"; do
		awk -v m="$d" '$2 == m' /proc/mounts | grep -q . && echo -n "filesystem on $d; "
	done
	return 0
}
# mount_of_set DIR ID: DIR holds a filesystem from one of ID's loop devices.
mount_of_set() {
	local src
	src=$(awk -v m="$1" '$2 == m {print $1}' /proc/mounts | tail -1)
	[ -n "$src" ] || return 1
	case $(cat "/sys/block/$(basename "$src")/loop/backing_file" 2>/dev/null) in
	"/run/ploop/$2/"*) return 0 ;;
	esac
	# the device may already be detached: a mount of a loop device without a backing file
	[ -e "/sys/block/$(basename "$src")/loop" ] || return 1
	[ -z "$(cat "/sys/block/$(basename "$src")/loop/backing_file" 2>/dev/null)" ]
}
# start_writer TARGET LOG ARGS...: fsync-writer in the background (WPID).
start_writer() {
	local target=$1 log=$2
	shift 2
	"$FW" write "$target" "$log" "$@" >>"$T/writer.out" 2>>"$T/writer.err" &
	WPID=$!
	WRITERS+=("$WPID")
}
# stop_writer: kill -9 the writer and reap it; fails if it does not die within 10 s.
stop_writer() {
	local i
	kill -9 "$WPID" 2>/dev/null
	for i in $(seq 100); do
		alive "$WPID" || break
		sleep 0.1
	done
	if alive "$WPID"; then
		return 1
	fi
	wait "$WPID" 2>/dev/null
	return 0
}
# deltas DD: the image files of DD (paths).
deltas() {
	local dir f
	dir=$(dirname "$1")
	sed -n 's:.*<File>\(.*\)</File>.*:\1:p' "$1" | while IFS= read -r f; do
		case $f in /*) echo "$f" ;; *) echo "$dir/$f" ;; esac
	done
}
# checked NAME DD: `ploop check -f -c -r` accepts every delta of DD.
checked() {
	local name=$1 dd=$2 f bad="" rc
	while IFS= read -r f; do
		"$PLOOP" check -f -c -r "$f" >"$T/.ck" 2>&1
		rc=$?
		[ $rc = 0 ] || bad="$bad ${f##*/} (exit $rc: $(tr '\n' ' ' <"$T/.ck" | head -c 300))"
	done < <(deltas "$dd")
	if [ -z "$bad" ]; then ok "$name"; else not_ok "$name:$bad"; fi
}
# fsck_clean NAME DD: the filesystem on DD's partition passes e2fsck -fn (DD mounted, no fs).
fsck_clean() {
	local name=$1 dd=$2 part rc
	pmount "$name" "$dd" || return 1
	part=$(field "$dd" part)
	e2fsck -fn "$part" >"$T/.fsck" 2>&1
	rc=$?
	pumount "$name (umount after e2fsck)" "$dd"
	if [ $rc = 0 ]; then ok "$name"; else
		not_ok "$name (e2fsck exit $rc)"
		grep -v '^Pass\|^e2fsck\|^$' "$T/.fsck" | head -15 | sed 's/^/#   /'
	fi
}
# force_cleanup DD: last resort for a set whose umount failed.
force_cleanup() {
	local dd=$1 id pid d bf
	id=${SET_IDS[$dd]:-}
	[ -n "$id" ] || return 0
	read -r pid _ <<<"${LAST[$id]:-}"
	if [ -f "/run/ploop/$id/state" ]; then
		pid=$(sed -n 's/^pid=//p' "/run/ploop/$id/state")
	fi
	for d in "${MNTS[@]}"; do
		if mount_of_set "$d" "$id"; then
			fsfreeze -u "$d" 2>/dev/null
			umount "$d" 2>/dev/null || umount -l "$d"
		fi
	done
	if [ -n "${pid:-}" ] && grep -qF "$dd" "/proc/$pid/cmdline" 2>/dev/null; then
		kill -9 "$pid" 2>/dev/null
	fi
	for d in /sys/block/loop*/loop/backing_file; do
		[ -r "$d" ] || continue
		bf=$(cat "$d" 2>/dev/null)
		case $bf in "/run/ploop/$id/"*) losetup -d "/dev/$(basename "$(dirname "$(dirname "$d")")")" ;; esac
	done
	grep -qF " /run/ploop/$id/disk " /proc/mounts && umount -l "/run/ploop/$id/disk"
	"$PLOOP" umount "$dd"
	return 0
}
cleanup_all() {
	local w d dd id pid rest
	for w in "${WRITERS[@]}"; do kill -9 "$w" 2>/dev/null; done
	# A server stuck after SIGKILL (a thread waiting on its own FUSE device) would hang umount.
	for dd in "${!SET_IDS[@]}"; do
		id=${SET_IDS[$dd]}
		read -r pid rest <<<"${LAST[$id]:-}"
		if [ -n "${pid:-}" ] && alive "$pid" && [ "$(sed 's/.*) //' "/proc/$pid/stat" | cut -c1)" = Z ]; then
			abort_fuse "$dd"
		fi
	done
	for d in "${MNTS[@]}"; do (fsfreeze -u "$d" 2>/dev/null &); done
	sleep 0.2
	for w in "${WRITERS[@]}"; do alive "$w" || wait "$w" 2>/dev/null; done
	for dd in "${!SET_IDS[@]}"; do
		"$PLOOP" umount "$dd" || true
		[ -n "$(leftovers "$dd")" ] && force_cleanup "$dd"
	done
	[ -n "$FUSECTL_MOUNTED" ] && umount /sys/fs/fuse/connections
	return 0
}
at_exit cleanup_all
# no_leftovers NAME: none of this test's sets left anything behind.
no_leftovers() {
	local dd left=""
	for dd in "${!SET_IDS[@]}"; do
		left="$left$(leftovers "$dd")"
	done
	if [ -z "$left" ]; then ok "$1"; else not_ok "$1: $left"; fi
}
# sleep_ms N
sleep_ms() { sleep "$(printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)))"; }
# rand MIN MAX: a random integer in [MIN, MAX]
rand() { echo $(($1 + (RANDOM * 32768 + RANDOM) % ($2 - $1 + 1))); }
now_ms() { echo $(($(date +%s%N) / 1000000)); }
# kill_server DD TAG: SIGKILL to DD's server (its log kept as TAG); waits until it is gone. A server
# that does not exit is a failed check; its FUSE connection is then aborted so the test can go on.
kill_server() {
	local name=$1 dd=$2 tag=$3 pid i
	pid=$(field "$dd" pid) || { not_ok "$name: no server to kill"; return 1; }
	save_log "$dd" "$tag"
	kill -9 "$pid" 2>/dev/null
	for i in $(seq 100); do
		alive "$pid" || return 0
		sleep 0.05
	done
	not_ok "$name: the server (pid $pid) does not exit after SIGKILL; threads still running: $(stuck_threads "$pid")"
	show_log "$tag"
	abort_fuse "$dd"
	for i in $(seq 100); do
		alive "$pid" || { echo "# $name: the server exited once its FUSE connection was aborted"; return 1; }
		sleep 0.05
	done
	not_ok "$name: the server (pid $pid) survives even the abort of its FUSE connection"
	return 1
}
# stuck_threads PID: the threads of PID that are not zombies, with state and kernel wait channel.
stuck_threads() {
	local t
	for t in /proc/"$1"/task/*; do
		[ -r "$t/stat" ] || continue
		local st
		st=$(sed 's/.*) //' "$t/stat" | cut -c1)
		[ "$st" = Z ] && continue
		echo -n "${t##*/}($(cat "$t/comm" 2>/dev/null)):$st:$(cat "$t/wchan" 2>/dev/null) "
	done
}
FUSECTL_MOUNTED=
# abort_fuse DD: aborts the FUSE connection of DD's served file (fusectl), failing its pending requests.
abort_fuse() {
	local id minor
	id=${SET_IDS[$(realpath "$1")]:-}
	[ -n "$id" ] || return 1
	minor=$(awk -v m="/run/ploop/$id/disk" '$5 == m {split($3, d, ":"); print d[2]}' /proc/self/mountinfo | head -1)
	[ -n "$minor" ] || return 1
	if [ ! -d /sys/fs/fuse/connections/"$minor" ] && ! mountpoint -q /sys/fs/fuse/connections; then
		mount -t fusectl fusectl /sys/fs/fuse/connections && FUSECTL_MOUNTED=1
	fi
	echo "# aborting FUSE connection $minor of /run/ploop/$id/disk"
	echo 1 >/sys/fs/fuse/connections/"$minor"/abort
}

