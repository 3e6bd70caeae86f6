#!/usr/bin/env bash
# Crash safety of mounted images: ploopd (and, separately, the writer) is killed with SIGKILL at
# random moments while tests/tools/fsync-writer writes checksummed records and fsyncs them -- into a
# file of the mounted ext4, and raw onto the partition device -- and in the middle of an online
# snapshot and of an online merge. After every crash: `ploop umount` cleans up the dead server
# without leftovers, `ploop mount` works again, every record acknowledged by an fsync reads back
# intact, the inner ext4 is clean after journal replay, every delta passes `ploop check -f -c -r`,
# and the descriptor's chain is consistent (an interrupted merge is completed by the next mount).
#
# SEED=N reproduces a run's random delays; ROUNDS=N scales the number of rounds (default 1).
source "$(dirname "$0")/../lib.sh"

SEED=${SEED:-$(( $$ ^ $(date +%s) ))}
RANDOM=$SEED
SCALE=${ROUNDS:-1}
echo "# seed $SEED (SEED=$SEED reproduces the delays)"

for tool in e2fsck fsfreeze cc; do
	command -v "$tool" >/dev/null || { echo "ok all # SKIP $tool is not installed"; exit 0; }
done
if [ "$(id -u)" != 0 ] || [ ! -e /dev/fuse ] || [ ! -e /dev/loop-control ]; then
	echo "ok all # SKIP needs root, /dev/fuse and /dev/loop-control"
	exit 0
fi

source "$ROOT/tests/mount_lib.sh"

[ -x "$FW" ] || { not_ok "$FW is not built (make)"; finish; }

# ---- the crash scenarios ---------------------------------------------------------------------------

REGION=96M		# what the writer covers
WARGS=(-s "$REGION" -d -j 8 -n 16)

# crash_cleanup NAME DD TAG [nomount]: after a SIGKILL of the server: the writer dies, `ploop list`
# says the server is dead, `ploop umount` cleans up the dead server with nothing left behind (with
# "nomount": no umount; the next `ploop mount` has to clean up by itself).
crash_cleanup() {
	local name=$1 dd=$2 tag=$3 how=${4:-}
	if ! stop_writer; then
		not_ok "$name: the writer (pid $WPID) does not die after SIGKILL; threads: $(stuck_threads "$WPID")"
		# A filesystem the dead server left frozen blocks its writers for good.
		local m
		m=$(field "$dd" mount)
		if [ -n "$m" ] && timeout 10 fsfreeze -u "$m" 2>/dev/null; then
			not_ok "$name: the dead server left $m frozen (thawed by the test)"
		fi
		stop_writer || not_ok "$name: the writer still does not die"
	fi
	if ! "$PLOOP" list | grep -F "$(realpath "$dd")" | grep -q DEAD; then
		not_ok "$name: ploop list does not show the killed server as DEAD: $("$PLOOP" list | grep -F "$(realpath "$dd")")"
	fi
	[ "$how" = nomount ] && return 0
	pumount "$name: umount after the server was killed" "$dd" || { show_log "$tag"; return 1; }
	return 0
}

# one_instance NAME DD: DD's instance has exactly its two loop devices and one FUSE mount (nothing
# of a dead predecessor at the same run directory is left).
one_instance() {
	local id d n=0 f
	id=${SET_IDS[$(realpath "$2")]:-}
	for d in /sys/block/loop*/loop/backing_file; do
		[ -r "$d" ] || continue
		case $(cat "$d" 2>/dev/null) in "/run/ploop/$id/"*) n=$((n + 1)) ;; esac
	done
	f=$(grep -cF " /run/ploop/$id/disk " /proc/mounts)
	if [ "$n" = 2 ] && [ "$f" = 1 ]; then ok "$1"; else
		not_ok "$1: $n loop devices and $f FUSE mounts on /run/ploop/$id/disk (want 2 and 1)"
	fi
}

# verify_ext4 NAME DD MNT LOG TAG: mount (journal replay), writer's verify, umount, e2fsck, check.
verify_ext4() {
	local name=$1 dd=$2 mnt=$3 log=$4 tag=$5
	if pmount "$name: mount again" "$dd" -m "$mnt"; then
		if "$FW" verify "$mnt/data" "$log" -d >"$T/.verify" 2>&1; then
			ok "$name: acknowledged records intact ($(grep -o 'acknowledged:.*' "$T/.verify" | cut -d' ' -f2-4))"
		else
			not_ok "$name: acknowledged records lost or damaged"
			sed 's/^/#   /' "$T/.verify" | head -25
			show_log "$tag"
		fi
		pumount "$name: clean umount" "$dd"
	fi
	fsck_clean "$name: e2fsck -fn clean after journal replay" "$dd"
	checked "$name: ploop check -f -c -r of every delta" "$dd"
}

# verify_raw NAME DD LOG TAG: mount, writer's verify on the partition device, umount, check.
verify_raw() {
	local name=$1 dd=$2 log=$3 tag=$4 part
	if pmount "$name: mount again" "$dd"; then
		part=$(field "$dd" part)
		if "$FW" verify "$part" "$log" -d >"$T/.verify" 2>&1; then
			ok "$name: acknowledged records intact ($(grep -o 'acknowledged:.*' "$T/.verify" | cut -d' ' -f2-4))"
		else
			not_ok "$name: acknowledged records lost or damaged"
			sed 's/^/#   /' "$T/.verify" | head -25
			show_log "$tag"
		fi
		pumount "$name: clean umount" "$dd"
	fi
	checked "$name: ploop check -f -c -r of every delta" "$dd"
}

# chain_consistent NAME DD: the descriptor reads, snapshot-list works, every file it names exists,
# and nothing is temporary.
chain_consistent() {
	local name=$1 dd=$2 f bad=""
	"$PLOOP" snapshot-list "$dd" >"$T/.sl" 2>&1 || bad="snapshot-list exit $?: $(head -c 200 "$T/.sl"); "
	while IFS= read -r f; do
		[ -f "$f" ] || { bad="$bad$f is missing; "; continue; }
		# Space a crash left behind is given back, not stranded inside the file (a resumed
		# merge allocates after what the killed one had written).
		"$PLOOP" check -f -c -r "$f" >"$T/.ck" 2>&1
		grep -q "unreferenced cluster" "$T/.ck" && bad="$bad$(basename "$f"): $(grep -o "[0-9]* unreferenced cluster(s)" "$T/.ck"); "
	done < <(deltas "$dd")
	grep -q '<Temporary' "$dd" && bad="$bad<Temporary/> still in the descriptor; "
	if [ -z "$bad" ]; then ok "$name"; else not_ok "$name: $bad"; fi
}

# orphans DD: delta files in DD's directory the descriptor does not name (informational).
orphans() {
	local dir f names
	dir=$(dirname "$1")
	names=$(deltas "$1" | xargs -n1 basename)
	for f in "$dir"/*; do
		case ${f##*/} in DiskDescriptor.xml*) continue ;; esac
		grep -qxF "${f##*/}" <<<"$names" || echo -n "${f##*/} "
	done
}

# 1. ext4 inside, the server killed during fsync'ed writes into a file.
E=$T/ext4
mkdir -p "$E/img" "$E/mnt"
MNTS+=("$E/mnt")
"$PLOOP" init -s 1G -t ext4 "$E/img/root.hds" >/dev/null 2>"$T/.err" || { not_ok "init ext4 image: $(cat "$T/.err")"; finish; }
DE=$E/img/DiskDescriptor.xml
ELOG=$T/ext4.log
for r in $(seq $((4 * SCALE))); do
	name="ext4 kill-server round $r"
	pmount "$name: mount" "$DE" -m "$E/mnt" || break
	args=("${WARGS[@]}")
	[ $((r % 2)) = 0 ] && args=(-s "$REGION" -d -j 4 -n 8 -b 16k -f)	# 16 KiB records, fsync
	start_writer "$E/mnt/data" "$ELOG" "${args[@]}"
	ms=$(rand 300 3000)
	sleep_ms "$ms"
	echo "# $name: killing the server after $ms ms"
	kill_server "$name" "$DE" "ext4-$r"
	if [ "$r" = 3 ]; then
		# No umount: ploop mount finds the dead server and cleans up after it itself.
		crash_cleanup "$name" "$DE" "ext4-$r" nomount
		if pmount "$name: ploop mount straight over the dead server" "$DE" -m "$E/mnt"; then
			one_instance "$name: ploop mount cleaned up the dead server's devices" "$DE"
			check "$name: ploop mount says it checked the dirty top before the new server" \
				grep -q "was not closed cleanly: checking it" "$T/.mount.out"
			pumount "$name: umount" "$DE" || break
		fi
	else
		crash_cleanup "$name" "$DE" "ext4-$r" || break
	fi
	verify_ext4 "$name" "$DE" "$E/mnt" "$ELOG" "ext4-$r"
done

# 2. Raw writes on the partition device (O_DIRECT), the server killed.
R=$T/raw
mkdir -p "$R/img"
"$PLOOP" init -s 512M -t ext4 "$R/img/root.hds" >/dev/null 2>"$T/.err" || { not_ok "init raw image: $(cat "$T/.err")"; finish; }
DR=$R/img/DiskDescriptor.xml
RLOG=$T/raw.log
if pmount "raw: mount" "$DR"; then
	# The region starts out as zeros, so verify can tell garbage from blocks never written.
	dd if=/dev/zero of="$(field "$DR" part)" bs=1M count=96 oflag=direct conv=fsync status=none ||
		not_ok "raw: zeroing the region"
	pumount "raw: umount" "$DR"
fi
for r in $(seq $((3 * SCALE))); do
	name="raw kill-server round $r"
	pmount "$name: mount" "$DR" || break
	start_writer "$(field "$DR" part)" "$RLOG" "${WARGS[@]}"
	ms=$(rand 300 3000)
	sleep_ms "$ms"
	echo "# $name: killing the server after $ms ms"
	kill_server "$name" "$DR" "raw-$r"
	crash_cleanup "$name" "$DR" "raw-$r" || break
	verify_raw "$name" "$DR" "$RLOG" "raw-$r"
done

# 3. The writer killed, the server alive: what was acknowledged is there at once and after umount.
for kind in ext4 raw; do
	name="$kind kill-writer"
	if [ $kind = ext4 ]; then
		pmount "$name: mount" "$DE" -m "$E/mnt" || continue
		start_writer "$E/mnt/data" "$ELOG" "${WARGS[@]}"
		target=$E/mnt/data log=$ELOG dd=$DE
	else
		pmount "$name: mount" "$DR" || continue
		start_writer "$(field "$DR" part)" "$RLOG" "${WARGS[@]}"
		target=$(field "$DR" part) log=$RLOG dd=$DR
	fi
	ms=$(rand 300 2000)
	sleep_ms "$ms"
	echo "# $name: killing the writer after $ms ms"
	stop_writer || not_ok "$name: the writer does not die"
	if "$FW" verify "$target" "$log" -d >"$T/.verify" 2>&1; then
		ok "$name: acknowledged records intact while mounted"
	else
		not_ok "$name: acknowledged records lost or damaged while mounted"
		sed 's/^/#   /' "$T/.verify" | head -25
	fi
	save_log "$dd" "$kind-kw"
	pumount "$name: umount" "$dd" || { show_log "$kind-kw"; continue; }
	if [ $kind = ext4 ]; then
		verify_ext4 "$name" "$DE" "$E/mnt" "$ELOG" "$kind-kw"
	else
		verify_raw "$name" "$DR" "$RLOG" "$kind-kw"
	fi
done

# 4. Online snapshot and merge, the server killed in the middle of them.
O=$T/online
mkdir -p "$O/img" "$O/mnt"
MNTS+=("$O/mnt")
"$PLOOP" init -s 1G -t ext4 "$O/img/root.hds" >/dev/null 2>"$T/.err" || { not_ok "init online image: $(cat "$T/.err")"; finish; }
DO=$O/img/DiskDescriptor.xml
OLOG=$T/online.log
ndeltas() { deltas "$DO" | wc -l; }
# top_parent DD: the GUID of the top's parent snapshot.
top_parent() {
	awk -F'[<>]' '$2 == "TopGUID" {top = $3} $2 == "GUID" {g = $3} $2 == "ParentGUID" {parent[g] = $3}
		END {print parent[top]}' "$1"
}

# op_ms OP ARGS...: runs `ploop OP ARGS DD` while the writer runs, uncrashed; prints its duration.
op_ms() {
	local op=$1 t0 t1 rc
	shift
	t0=$(now_ms)
	"$PLOOP" "$op" "$@" "$DO" >"$T/.op" 2>&1
	rc=$?
	t1=$(now_ms)
	[ $rc = 0 ] || { not_ok "uncrashed $op: exit $rc: $(head -c 300 "$T/.op")"; return 1; }
	echo $((t1 - t0))
}

# Calibration, and the plain online operations under load: snapshot, then merge of the top.
snap_ms=30 merge_ms=300
if pmount "online: mount" "$DO" -m "$O/mnt"; then
	start_writer "$O/mnt/data" "$OLOG" "${WARGS[@]}"
	sleep 0.5
	if t=$(op_ms snapshot); then snap_ms=$t; ok "online snapshot under load (${t} ms)"; fi
	sleep 0.5
	dd if=/dev/urandom of="$O/mnt/big" bs=1M count=128 conv=fsync status=none
	if t=$(op_ms snapshot-merge); then merge_ms=$t; ok "online merge of the top under load (${t} ms)"; fi
	stop_writer
	[ "$(ndeltas)" = 1 ] || not_ok "online: $(ndeltas) deltas after snapshot + merge"
	save_log "$DO" online-calib
	pumount "online: umount" "$DO" && verify_ext4 "online uncrashed" "$DO" "$O/mnt" "$OLOG" online-calib
fi
echo "# online snapshot took ${snap_ms} ms, merge ${merge_ms} ms"

# crash_online KIND N: start the operation in the background during writes, SIGKILL the server
# after a random part of its usual duration, then clean up, check the chain and the data.
crash_online() {
	local kind=$1 n=$2 name tag ms before after cpid rc i span
	name="crash during online $kind, attempt $n"
	tag="$kind-$n"
	pmount "$name: mount" "$DO" -m "$O/mnt" || return 1
	start_writer "$O/mnt/data" "$OLOG" "${WARGS[@]}"
	sleep 0.3
	case $kind in
	snapshot)
		span=$((snap_ms + 5))
		;;
	merge)
		# Something to merge: a snapshot, then data written into the new top.
		"$PLOOP" snapshot "$DO" >/dev/null 2>"$T/.err" || not_ok "$name: online snapshot: $(cat "$T/.err")"
		dd if=/dev/urandom of="$O/mnt/big" bs=1M count=128 conv=fsync,notrunc status=none
		span=$((merge_ms + 5))
		;;
	merge-middle)
		# A middle delta with data: snapshot, data, snapshot; its child is the running top.
		"$PLOOP" snapshot "$DO" >/dev/null 2>"$T/.err" || not_ok "$name: online snapshot: $(cat "$T/.err")"
		dd if=/dev/urandom of="$O/mnt/big" bs=1M count=96 conv=fsync,notrunc status=none
		"$PLOOP" snapshot "$DO" >/dev/null 2>"$T/.err" || not_ok "$name: online snapshot: $(cat "$T/.err")"
		span=$((merge_ms + 5))
		;;
	esac
	before=$(ndeltas)
	ms=$(rand 0 "$span")
	case $kind in
	snapshot) "$PLOOP" snapshot "$DO" >"$T/.op" 2>&1 & ;;
	merge) "$PLOOP" snapshot-merge "$DO" >"$T/.op" 2>&1 & ;;
	merge-middle)
		# merge the middle snapshot (the top's parent) into its own parent
		local parent
		parent=$(top_parent "$DO")
		"$PLOOP" snapshot-merge -u "$parent" "$DO" >"$T/.op" 2>&1 &
		;;
	esac
	cpid=$!
	sleep_ms "$ms"
	kill_server "$name" "$DO" "$tag"
	for i in $(seq 100); do
		kill -0 "$cpid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$cpid" 2>/dev/null; then
		not_ok "$name: ploop $kind hangs after the server died"
		kill -9 "$cpid"
	fi
	wait "$cpid"
	rc=$?
	local crashed temp=""
	crashed=$(ndeltas)
	grep -q '<Temporary' "$DO" && temp=yes
	echo "# $name: server killed after $ms ms (of ~$span); the command exited $rc; deltas $before -> $crashed${temp:+, <Temporary/> in the descriptor}"
	crash_cleanup "$name" "$DO" "$tag" || return 1
	if "$PLOOP" snapshot-list "$DO" >"$T/.sl" 2>&1; then ok "$name: snapshot-list works after the crash"; else
		not_ok "$name: snapshot-list after the crash: exit $?: $(head -c 300 "$T/.sl")"
	fi
	# The next mount completes an interrupted merge; the chain is then consistent.
	if pmount "$name: mount after the crash" "$DO"; then
		after=$(ndeltas)
		pumount "$name: umount" "$DO"
		chain_consistent "$name: chain consistent after the next mount ($after deltas)" "$DO"
		if [ -n "$temp" ]; then
			if [ "$after" = $((crashed - 1)) ]; then ok "$name: the next mount completed the interrupted merge"; else
				not_ok "$name: the interrupted merge was not completed by the next mount ($crashed -> $after deltas)"
			fi
		fi
	fi
	local extra
	extra=$(orphans "$DO")
	[ -n "$extra" ] && echo "# $name: files the descriptor does not name: $extra"
	verify_ext4 "$name" "$DO" "$O/mnt" "$OLOG" "$tag"
	# Keep the chain short: merge everything offline once it grows.
	if [ "$(ndeltas)" -gt 3 ]; then
		"$PLOOP" snapshot-merge -A "$DO" >/dev/null 2>"$T/.err" || not_ok "$name: offline merge -A: $(cat "$T/.err")"
	fi
}

for n in $(seq $((4 * SCALE))); do crash_online snapshot "$n"; done
for n in $(seq $((4 * SCALE))); do crash_online merge "$n"; done
for n in $(seq $((2 * SCALE))); do crash_online merge-middle "$n"; done

no_leftovers "no FUSE mount, loop device or server left behind"
finish
