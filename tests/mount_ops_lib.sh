# Helpers of the mount lifecycle and online-operation tests (sourced after tests/lib.sh): the
# image sets a test mounts, checks that must pass or must be refused, digests, and the EXIT-trap
# cleanup that undoes every mount, device and server of the test however it ends.

RT=$(cd "$T" && pwd -P)
TO=${PLOOP_TIMEOUT:-60}
MiB=1048576
TOPG='{5fbaabe3-6958-40ff-92a7-860e329aab41}'

if [ "$(id -u)" != 0 ] || [ ! -c /dev/fuse ] || [ ! -e /dev/loop-control ]; then
	ok "$(basename "$0" .sh) # SKIP needs root, /dev/fuse and loop devices"
	finish
fi

# pl ARGS...: the ploop tool, killed if it hangs (a hang is reported as exit 124).
pl() { timeout -k 5 "$TO" "$PLOOP" "$@"; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# ---- cleanup: every image set mounted from this test's directory goes, however the test ends ----------
IDS=()		# run directories (/run/ploop/ID) this test's servers used
MNTS=()		# mount points this test used

our_ids() {
	local st
	for st in /run/ploop/*/state; do
		[ -e "$st" ] && grep -q "^descriptor=$RT/" "$st" 2>/dev/null && basename "$(dirname "$st")"
	done
	printf '%s\n' "${IDS[@]}"
}
# run_id DD [GUID]: the name of the run directory of DD's server (ploop_instance_id: FNV-1a of the
# descriptor's real path, a 0xff byte and the GUID).
run_id() {
	local LC_ALL=C s h=$((0xcbf29ce484222325)) i c
	s="$(realpath "$1")"$'\xff'"${2:-}"
	for ((i = 0; i < ${#s}; i++)); do
		printf -v c '%d' "'${s:i:1}"
		h=$(((h ^ (c & 255)) * 0x100000001b3))
	done
	printf '%016x\n' "$h"
}
# snapshot_guid [FILE]: the GUID in `ploop snapshot`'s report (FILE, or standard input).
snapshot_guid() { sed -n 's/^ploop snapshot \({[0-9a-f-]*}\) has been.*/\1/p' "$@"; }
state_of() { sed -n "s/^$2=//p" "/run/ploop/$1/state" 2>/dev/null; }
# loop_back DEV: the backing file of a loop device ("" when detached).
loop_back() { cat "/sys/block/${1#/dev/}/loop/backing_file" 2>/dev/null; }

sweep() {
	local id dev pid m ids
	ids=$(our_ids | sort -u)
	# Filesystems first (one mounted by hand would keep its device busy), then ploop umount by
	# descriptor (snapshot views by device).
	for m in "${MNTS[@]}"; do mountpoint -q "$m" && umount "$m"; done
	for id in $ids; do
		[ -e "/run/ploop/$id/state" ] || continue
		dev=$(state_of "$id" device)
		if [ -n "$(state_of "$id" guid)" ]; then
			timeout -k 5 30 "$PLOOP" umount -d "$dev"
		else
			timeout -k 5 30 "$PLOOP" umount "$(state_of "$id" descriptor)"
		fi
	done
	# Last resort: kill the server, detach its devices, lazily unmount what is left.
	for id in $ids; do
		[ -d "/run/ploop/$id" ] || continue
		pid=$(state_of "$id" pid)
		[ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = ploopd ] && kill -9 "$pid"
		m=$(state_of "$id" mount)
		[ -n "$m" ] && umount -l "$m"
		for dev in $(state_of "$id" part) $(state_of "$id" device); do
			case $(loop_back "$dev") in "/run/ploop/$id/"* | / | "") losetup -d "$dev" ;; esac
		done
		umount -l "/run/ploop/$id/disk"
		rm -rf "/run/ploop/$id"
	done
	# Filesystems this test mounted itself, and any loop device still backed by one of our run dirs.
	for m in "${MNTS[@]}"; do mountpoint -q "$m" && umount -l "$m"; done
	for id in $ids; do
		for dev in /sys/block/loop*/loop/backing_file; do
			grep -q "^/run/ploop/$id/" "$dev" 2>/dev/null && dev=${dev#/sys/block/} && losetup -d "/dev/${dev%%/*}"
		done
	done
	return 0
}
at_exit sweep

# remember DD [GUID]: notes the run directory of DD's (snapshot) server for the cleanup; sets ID.
remember() {
	local st
	ID=
	for st in /run/ploop/*/state; do
		[ -e "$st" ] || continue
		if grep -qx "descriptor=$(realpath "$1")" "$st" 2>/dev/null && grep -qx "guid=${2:-}" "$st" 2>/dev/null; then
			ID=$(basename "$(dirname "$st")")
			IDS+=("$ID")
		fi
	done
}

# ---- helpers ----------------------------------------------------------------------------------
# must NAME CMD...: ok when CMD exits 0 (stdout kept in $T/.out).
must() {
	local name=$1 rc
	shift
	"$@" >"$T/.out" 2>"$T/.err"
	rc=$?
	if [ $rc = 0 ]; then
		ok "$name"
		return 0
	fi
	not_ok "$name (exit $rc: $(head -c 300 "$T/.err" | tr '\n' ' '))"
	return 1
}
# host_fs MIB: a small ext4 on a loop device at H=$RT/host, for a test that fills or freezes the
# filesystem its set lives on; at exit it is thawed, and unmounted once the sets on it are (sweep).
host_fs() {
	H=$RT/host
	mkdir -p "$H"
	at_exit 'fsfreeze -u "$H" 2>/dev/null; sweep; mountpoint -q "$H" && { umount "$H" || umount -l "$H"; }'
	truncate -s "$1M" "$RT/host.img"
	must "host: mkfs.ext4 of $1 MiB" mkfs.ext4 -q -F "$RT/host.img" || return 1
	must "host: mount -o loop" mount -o loop "$RT/host.img" "$H"
}
# refuse NAME RC CMD...: CMD fails with exit RC ("any": any nonzero) and exactly one line on stderr.
refuse() {
	local name=$1 want=$2 rc lines
	shift 2
	"$@" >"$T/.out" 2>"$T/.err"
	rc=$?
	lines=$(wc -l <"$T/.err")
	if [ $rc = 0 ] || { [ "$want" != any ] && [ "$rc" != "$want" ]; }; then
		not_ok "$name (exit $rc, wanted $want: $(head -c 300 "$T/.err" | tr '\n' ' '))"
	elif [ "$lines" != 1 ]; then
		not_ok "$name (exit $rc, but $lines lines on stderr: $(head -c 300 "$T/.err" | tr '\n' '|'))"
	else
		ok "$name (exit $rc)"
	fi
}

# inst DD [GUID]: reads DD's line of `ploop list -H` (its top, or snapshot GUID) into I_DEV I_PART
# I_PID I_MODE I_MNT; fails when there is none.
inst() {
	local line
	line=$(pl list -H | awk -v d="$(realpath "$1")" -v g="${2:-}" \
		'$6 == d && ((g == "" && NF == 6) || (g != "" && $8 == g ")"))')
	I_DEV='' I_PART='' I_PID='' I_MODE='' I_MNT=''
	[ -n "$line" ] || return 1
	read -r I_DEV I_PART I_PID I_MODE I_MNT _ <<<"$line"
}

# mount_set NAME DD [ploop mount options...]: mounts, reports the time, notes the server for cleanup.
mount_set() {
	local name=$1 dd=$2 t0 rc
	shift 2
	t0=$(now_ms)
	pl mount "$@" "$dd" >"$T/.out" 2>"$T/.err"
	rc=$?
	remember "$dd" "$(guid_arg "$@")"
	if [ $rc = 0 ]; then
		ok "$name ($(($(now_ms) - t0)) ms)"
		return 0
	fi
	not_ok "$name (exit $rc: $(head -c 300 "$T/.err" | tr '\n' ' '))"
	return 1
}
# guid_arg OPTIONS...: the canonical GUID after -u (resolving "base" is the caller's business).
guid_arg() {
	local g=
	while [ $# -gt 0 ]; do
		[ "$1" = -u ] && g=$2
		shift
	done
	case $g in "" | base | "$TOPG") ;; '{'*) echo "$g" ;; *) echo "{$g}" ;; esac
}

deltas() {
	local dir f
	dir=$(dirname "$1")
	sed -n 's:.*<File>\(.*\)</File>.*:\1:p' "$1" | while IFS= read -r f; do
		case $f in /*) echo "$f" ;; *) echo "$dir/$f" ;; esac
	done
}
ndeltas() { deltas "$1" | wc -l; }
# in_use FILE: the header's m_DiskInUse is set.
in_use() { [ "$(od -An -tx4 -j44 -N4 "$1" | tr -d ' ')" != 00000000 ]; }

# checked NAME DD: every delta passes `ploop check -f -c -r`, ours and Debian's real one (1.15, when
# installed: it also rejects clusters left partly unwritten, "sparse"), and none is marked in use.
HAVE_ORACLE=$(have_oracle && echo 1)
export PLOOP_ORACLE_LOCKDIR="$T/.oracle-lock"
checked() {
	local name=$1 f bad="" rc
	while IFS= read -r f; do
		pl check -f -c -r "$f" >"$T/.ck" 2>&1
		rc=$?
		[ $rc = 0 ] || bad="$bad ${f##*/} (check exit $rc: $(tr '\n' ' ' <"$T/.ck" | head -c 200))"
		# (a raw base is no delta to it)
		if [ -n "$HAVE_ORACLE" ] && [[ $(head -c 16 "$f") == Withou* ]]; then
			"$ORACLE" check -f -c -r "$f" >"$T/.ock" 2>&1
			rc=$?
			[ $rc = 0 ] || bad="$bad ${f##*/} (real ploop check exit $rc: $(tr '\n' ' ' <"$T/.ock" | head -c 200))"
		fi
		in_use "$f" && bad="$bad ${f##*/} (dirty flag set)"
	done < <(deltas "$2")
	if [ -z "$bad" ]; then ok "$name"; else not_ok "$name:$bad"; fi
}

# pid_gone PID: the process has exited (a zombie counts: nobody reaps it here).
pid_gone() {
	local s
	s=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)
	[ -z "$s" ] || [ "$s" = Z ]
}

# leftovers ID PID DEV PART MNT: what is left of a stopped server (empty when nothing).
leftovers() {
	local id=$1 pid=$2 dev=$3 part=$4 mnt=$5 out="" d b
	[ -e "/run/ploop/$id" ] && out="$out run-dir"
	grep -q " /run/ploop/$id/" /proc/mounts && out="$out fuse-mount"
	for d in "$dev" "$part"; do
		[ -n "$d" ] || continue
		b=$(loop_back "$d")
		case $b in "/run/ploop/$id/"* | /) out="$out $d(backing:$b)" ;; esac
	done
	[ -n "$mnt" ] && mountpoint -q "$mnt" && out="$out $mnt-still-mounted"
	[ -n "$pid" ] && ! pid_gone "$pid" && out="$out ploopd-$pid-running"
	echo "$out"
}

# umount_set NAME DD HOW...: `ploop umount HOW...` (HOW: -m DIR, -d DEV, or nothing for the
# descriptor; G=GUID names a snapshot view, UCMD=snapshot-umount another command), then checks that the server, its devices, mounts and run directory are gone.
umount_set() {
	local name=$1 dd=$2 t0 rc left id pid dev part mnt st
	shift 2
	if ! inst "$dd" "${G:-}"; then
		not_ok "$name (not in ploop list before umount)"
		return 1
	fi
	remember "$dd" "${G:-}"
	# a set renamed since its mount: its state names the old path; its server is the one listed
	if [ -z "$ID" ]; then
		for st in /run/ploop/*/state; do
			grep -qx "pid=$I_PID" "$st" 2>/dev/null && ID=$(basename "$(dirname "$st")") && IDS+=("$ID")
		done
	fi
	id=$ID pid=$I_PID dev=$I_DEV part=$I_PART mnt=$I_MNT
	[ "$mnt" = - ] && mnt=
	t0=$(now_ms)
	if [ $# = 0 ]; then set -- "$dd"; fi
	pl "${UCMD:-umount}" "$@" >"$T/.out" 2>"$T/.err"
	rc=$?
	for _ in $(seq 50); do pid_gone "$pid" && break; sleep 0.1; done
	left=$(leftovers "$id" "$pid" "$dev" "$part" "$mnt")
	if [ $rc != 0 ]; then
		not_ok "$name (exit $rc: $(head -c 300 "$T/.err" | tr '\n' ' '))"
	elif inst "$dd" "${G:-}"; then
		not_ok "$name (still in ploop list)"
	elif [ -n "$left" ]; then
		not_ok "$name (left behind:$left)"
	else
		ok "$name ($(($(now_ms) - t0)) ms)"
	fi
}

# put_files DIR TAG: a few files of TAG (a tree of small ones, some large, odd sizes), synced; their
# digests in $T/TAG.sha. verify_files NAME DIR TAG: they read back the same.
put_files() {
	local d=$1/$2 i
	mkdir -p "$d/tree"
	for i in $(seq 40); do head -c $((i * 997)) /dev/urandom >"$d/tree/f$i"; done
	head -c $((3 * MiB + 4321)) /dev/urandom >"$d/big1"
	head -c $((9 * MiB + 17)) /dev/urandom >"$d/big2"
	head -c 65536 /dev/zero >"$d/zeros"
	sync -f "$d"
	(cd "$1" && find "$2" -type f -print0 | sort -z | xargs -0 sha256sum) >"$T/$2.sha"
}
verify_files() {
	local out
	if [ ! -s "$T/$3.sha" ]; then
		not_ok "$1 (no digests of $3)"
	elif out=$(cd "$2" && sha256sum --quiet -c "$T/$3.sha" 2>&1); then
		ok "$1"
	else
		not_ok "$1 ($(head -c 300 <<<"$out" | tr '\n' ' '))"
	fi
}
check_not() {
	local name=$1
	shift
	if "$@"; then not_ok "$name"; else ok "$name"; fi
}
absent() { if [ ! -e "$2" ]; then ok "$1"; else not_ok "$1 ($2 exists)"; fi; }

# set_digest DD: digests of the descriptor and of every delta (whole files), and the file list.
set_digest() { (cd "$(dirname "$1")" && ls -A && sha256sum DiskDescriptor.xml && deltas "$1" | xargs sha256sum); }
# meta_digest DD: the descriptor, the file list and every delta's header (not data or sizes: a
# mounted filesystem may write).
meta_digest() {
	local f
	(cd "$(dirname "$1")" && ls -A && sha256sum DiskDescriptor.xml)
	for f in $(deltas "$1"); do head -c 64 "$f" | sha256sum; done
}
