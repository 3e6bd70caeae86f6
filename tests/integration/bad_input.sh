#!/usr/bin/env bash
# Bad input: corrupt images (tests/tools/mkcorrupt.c), malformed DiskDescriptor.xml files
# (tests/data/bad-descriptors), wrong arguments and a full disk. Every command runs in the ASan+UBSan
# build and must give one line on stderr and a documented exit code, never crash, never change a byte
# of the input of a read-only command, and never leave an image worse after a failed change.
# One "ok"/"not ok" line per input and command: "img:CASE:COMMAND", "dd:CASE:COMMAND", "args:NAME",
# "full-disk:NAME".
# runner: isolated (touches nothing another test looks at: tests/run may run it beside them)
source "$(dirname "$0")/../lib.sh"

BAD_DESCRIPTORS=$ROOT/tests/data/bad-descriptors
TMO=${BAD_INPUT_TIMEOUT:-10}	# seconds per command; a hang is a failure
CS=32768			# the cluster of every image here (64 sectors)
SIZE=512M			# 16384 clusters: a BAT of 3 clusters with padding after the last entry
DATA_OFFSETS="0 32768 65536 3276800 163840000 536838144"	# clusters 0-2, 100, 5000 and the last
TOP_GUID='{5fbaabe3-6958-40ff-92a7-860e329aab41}'
BASE_GUID='{11111111-2222-4333-8444-555555555555}'	# the base of the chains in the static descriptors
UNKNOWN_GUID='{deadbeef-dead-4eef-8eef-deadbeefdead}'
# Exit codes of enum ploop_status (ploop.h): "fail" accepts only these.
DOCUMENTED=" 1 4 5 6 7 11 12 15 16 17 19 20 23 28 30 35 37 38 39 43 "

for tool in "$PLOOP" "$PLOOP_SAN" "$PLOOP_IO" "$MKCORRUPT"; do
	if [ ! -x "$tool" ]; then
		not_ok "setup: $tool is not built (make all)"
		finish
	fi
done
shopt -s nullglob
# Thousands of small files are written and fsynced: on a tmpfs when we may mount one (several
# times faster than a disk), else in $T itself.
W=$T/w
mkdir -p "$W"
if mount -t tmpfs -o size=2G tmpfs "$W" 2>/dev/null; then
	at_exit "umount '$W' || umount -l '$W'"
fi
SCR=$W/scratch-main	# per-job scratch files (the tests run as two parallel jobs)
mkdir -p "$SCR"

# ---- judging one command -------------------------------------------------------------------------------

PROBLEMS=()
problem() { PROBLEMS+=("$*"); }
# verdict NAME: "ok NAME" if nothing was noted since the last verdict, else "not ok NAME: problems".
verdict() {
	if [ ${#PROBLEMS[@]} -eq 0 ]; then
		ok "$1"
	else
		not_ok "$1: $(IFS=';'; echo "${PROBLEMS[*]}")"
	fi
	PROBLEMS=()
}

# run CMD...: one command with a time limit and no stdin; exit code in RC, stdout in $SCR/out,
# stderr in $SCR/err and in the array ERR, one element per line.
run() {
	timeout -k 2 "$TMO" "$@" </dev/null >"$SCR/out" 2>"$SCR/err"
	RC=$?
	mapfile -t ERR <"$SCR/err"
}
first_err() { echo "${ERR[0]:-}" | cut -c1-160; }

# outcome WANT: judges the last run. WANT is an exit code, alternatives ("4|39"), "fail" (any
# documented error code) or "any" (success or a documented error; the caller checks what success
# must leave behind). Crashes, sanitizer reports and time-outs always fail, and so does anything
# but exactly one line on stderr for an error, or any stderr at all on success.
outcome() {
	local want=$1 line

	for line in "${ERR[@]}"; do
		if [[ $line =~ AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|runtime\ error ]]; then
			problem "crash or sanitizer report (exit $RC): ${line:0:200}"
			return
		fi
	done
	if [[ " 99 134 139 " == *" $RC "* ]]; then
		problem "crash (exit $RC): $(first_err)"
		return
	fi
	if [ "$RC" -eq 124 ] || [ "$RC" -eq 137 ]; then
		problem "hung (killed after ${TMO}s)"
		return
	fi
	case $want in
	any) [ "$RC" -eq 0 ] || [[ $DOCUMENTED == *" $RC "* ]] || problem "undocumented exit $RC: $(first_err)" ;;
	fail)
		if [ "$RC" -eq 0 ]; then
			problem "exit 0, wanted an error"
		elif [[ $DOCUMENTED != *" $RC "* ]]; then
			problem "undocumented exit $RC: $(first_err)"
		fi
		;;
	*) [[ "|$want|" == *"|$RC|"* ]] || problem "exit $RC, wanted $want${ERR[0]:+ ($(first_err))}" ;;
	esac
	# a library message's own newline, shown as '?' by the one-line rule
	if [ "$RC" -ne 0 ] && [[ ${ERR[0]:-} == *\? ]]; then
		problem "the error ends in '?': $(first_err)"
	fi
	if [ "$RC" -ne 0 ] && [ ${#ERR[@]} -ne 1 ]; then
		line=$(printf '%s|' "${ERR[@]}")
		problem "${#ERR[@]} lines on stderr, wanted 1: ${line:0:200}"
	fi
	if [ "$RC" -eq 0 ] && [ ${#ERR[@]} -ne 0 ]; then
		problem "stderr on success: $(first_err)"
	fi
}

# state DIR: every entry of DIR but the descriptor's lock file: files with their digest, then
# anything else by name.
state() {
	local f files=() others=()
	for f in "$1"/* "$1"/.[!.]*; do
		if [ "${f##*/}" = DiskDescriptor.xml.lck ]; then
			continue
		elif [ -f "$f" ]; then
			files+=("${f##*/}")
		else
			others+=("not-a-file  ${f##*/}")
		fi
	done
	[ ${#files[@]} -eq 0 ] || (cd "$1" && sha256sum -- "${files[@]}")
	[ ${#others[@]} -eq 0 ] || printf '%s\n' "${others[@]}"
}
# unchanged DIR BEFORE: notes every entry that changed, appeared or disappeared since BEFORE.
unchanged() {
	local now
	now=$(state "$1")
	[ "$now" = "$2" ] && return 0
	problem "$(diff <(echo "$2") <(echo "$now") | awk '/^</ { old[$3] = 1 } /^>/ { new[$3] = 1 }
		END { for (f in old) printf "%s%s %s", n++ ? ", " : "", (f in new) ? "changed" : "removed", f
		      for (f in new) if (!(f in old)) printf "%snew %s", n++ ? ", " : "", f }')"
	if [ -f "$1/DiskDescriptor.xml" ] && grep -q '<Temporary/>' "$1/DiskDescriptor.xml"; then
		problem "the descriptor now marks a snapshot <Temporary/>"
	fi
	return 1
}
# with_file BEFORE NAME FILE: BEFORE with NAME's digest replaced by FILE's (an expected repair).
with_file() { echo "$1" | sed "s|^[0-9a-f]*  $2\$|$(sha "$3")  $2|"; }

# content IMAGE|DESCRIPTOR: digest of the virtual disk: the runs of allocated clusters (adjacent
# runs joined, wherever they live) and their data, as the plain build exports it. Every image set
# here holds the source's data, so this is compared with REF_CONTENT.
content() {
	local s l raw=$SCR/content.raw
	rm -f "$raw"
	if ! "$PLOOP" export "$1" "$raw" >/dev/null 2>&1; then
		echo unreadable
		return
	fi
	"$PLOOP" map -j "$1" 2>/dev/null |
		sed -n 's/.*"start": \([0-9]*\), "length": \([0-9]*\), "data": true.*/\1 \2/p' |
		awk '$1 == end { len += $2; end += $2; next }
		     { if (len) print start, len; start = $1; len = $2; end = $1 + $2 }
		     END { if (len) print start, len }' |
		while read -r s l; do
			echo "$s $l"
			dd if="$raw" iflag=skip_bytes,count_bytes skip="$s" count="$l" bs=1M 2>/dev/null
		done | sha256sum
	rm -f "$raw"
}
# vsize IMAGE|DESCRIPTOR: virtual size in bytes (end of the last extent of map -j).
vsize() {
	"$PLOOP" map -j "$1" 2>/dev/null | sed -n 's/.*"start": \([0-9]*\), "length": \([0-9]*\).*/\1 \2/p' |
		tail -n 1 | awk '{ print $1 + $2 }'
}
# raw_as_reference FILE: an export output holds the source's disk (size, data, nothing else allocated).
raw_as_reference() {
	local o
	[ "$(stat -c %s "$1")" = "$(stat -c %s "$W/ref.raw")" ] || { problem "export size $(stat -c %s "$1")"; return; }
	[ "$(stat -c %b "$1")" = "$(stat -c %b "$W/ref.raw")" ] || problem "export allocates other blocks"
	for o in $DATA_OFFSETS; do
		cmp -s -i "$o:$o" -n $CS "$1" "$W/ref.raw" || { problem "export differs at $o"; return; }
	done
}
# map_as_reference: the last map -j output lists the source's extents (file names aside).
map_as_reference() {
	[ "$(sed 's/"file": "[^"]*"//' "$SCR/out")" = "$(sed 's/"file": "[^"]*"//' "$W/ref.map")" ] ||
		problem "map -j differs from the source image's"
}
# deltas DESCRIPTOR: the image files of the chain, one per line.
deltas() { "$PLOOP" snapshot-list -H -o fname "$1" 2>/dev/null; }

# ---- the valid source and the corpus -------------------------------------------------------------------

mkdir -p "$W/src" "$W/empty" "$W/corpus" "$W/expect"
"$PLOOP" init -s $SIZE -b 64 -t none "$W/src/root.hds" >/dev/null &&
	for o in $DATA_OFFSETS; do
		head -c $CS /dev/urandom | "$PLOOP_IO" write "$W/src/DiskDescriptor.xml" "$o" || break
	done &&
	"$PLOOP" init -s $SIZE -b 64 -t none "$W/empty/empty.hds" >/dev/null
check "setup: valid source image" "$PLOOP" check -f -c -r "$W/src/root.hds"
check "setup: empty delta" "$PLOOP" check -f -c -r "$W/empty/empty.hds"
"$PLOOP" export "$W/src/DiskDescriptor.xml" "$W/ref.raw" && "$PLOOP" map -j "$W/src/root.hds" >"$W/ref.map"
REF_CONTENT=$(content "$W/src/DiskDescriptor.xml")
check "setup: source holds 4 runs of data" [ "$("$PLOOP" map "$W/src/DiskDescriptor.xml" | wc -l)" -eq 5 ]

"$MKCORRUPT" "$W/src/root.hds" "$W/corpus" >"$W/corpus.list"
check "setup: mkcorrupt wrote every case" [ "$(wc -l <"$W/corpus.list")" -eq "$("$MKCORRUPT" -l | wc -l)" ]
expect_rc "setup: mkcorrupt refuses a source it cannot use" 1 "$MKCORRUPT" "$W/empty/empty.hds" "$W/expect"

# A two-image chain in the layout of the static descriptors: BASE_GUID in root.hds, the top in top.hds.
{
	echo '<?xml version="1.0"?>'
	echo '<Parallels_disk_image>'
	sed -n '/<Disk_Parameters>/,/<\/Disk_Parameters>/p' "$W/src/DiskDescriptor.xml"
	printf '  <StorageData>\n    <Storage>\n      <Start>0</Start>\n      <End>1048576</End>\n'
	printf '      <Blocksize>64</Blocksize>\n'
	printf '      <Image>\n        <GUID>%s</GUID>\n        <Type>Compressed</Type>\n' "$BASE_GUID"
	printf '        <File>root.hds</File>\n      </Image>\n'
	printf '      <Image>\n        <GUID>%s</GUID>\n        <Type>Compressed</Type>\n' "$TOP_GUID"
	printf '        <File>top.hds</File>\n      </Image>\n'
	printf '    </Storage>\n  </StorageData>\n  <Snapshots>\n    <TopGUID>%s</TopGUID>\n' "$TOP_GUID"
	printf '    <Shot>\n      <GUID>%s</GUID>\n' "$BASE_GUID"
	printf '      <ParentGUID>{00000000-0000-0000-0000-000000000000}</ParentGUID>\n    </Shot>\n'
	printf '    <Shot>\n      <GUID>%s</GUID>\n      <ParentGUID>%s</ParentGUID>\n    </Shot>\n' "$TOP_GUID" "$BASE_GUID"
	printf '  </Snapshots>\n</Parallels_disk_image>\n'
} >"$W/chain.xml"
mkdir -p "$W/chain-control"
cp "$W/src/root.hds" "$W/chain-control/"
cp "$W/empty/empty.hds" "$W/chain-control/top.hds"
cp "$W/chain.xml" "$W/chain-control/DiskDescriptor.xml"
check "setup: chain descriptor reads as the source" [ "$(content "$W/chain-control/DiskDescriptor.xml")" = "$REF_CONTENT" ]

# ---- corrupt images: what each command must do with each kind of damage --------------------------------
#
# header      the header breaks a rule of §1.2/§3.1 step 1, or the file cannot hold its header and BAT:
#             every reader refuses with 11 (PLOOP_ERR_FORMAT, also for a file without a ploop
#             signature: §3.1 "Wrong signature"). snapshot-list reads only the descriptor.
# bat         a BAT entry is invalid (0xffffffff, misaligned, past EOF): check reports it (11), readers
#             that load the BAT refuse (11); info -s reads only the header. snapshot reads only the
#             header of the top and adds a new empty delta over it, leaving the damaged one
#             byte-identical, so it may succeed ("any").
# bat-c       like bat, but only check -c finds it (two entries share a cluster, an entry points into
#             the BAT area: §3.1 step 5), so check -r -f and check -f pass and change nothing.
# bat-tail    like bat, but the file ends inside the last data cluster: check -f extends the file to
#             a whole cluster (§1.1, §3.1 step 2) and then passes.
# soft        repairable and harmless to readers (non-zero padding, §1.3; a partial cluster at the
#             end, §1.1): check -r reports it (11, "Skipped"), check -f repairs it, the rest works.
# valid       legitimately readable (v1, a v2.1 marker, a leaked cluster): everything passes.
# dirty       m_DiskInUse set: readers may read it; check without -d gives 37, the descriptor form
#             drops the flag (7 when read-only: it would have to write); writers refuse it (37) but a
#             merge source or target is opened allowing it ("any").
# empty       CIF_Empty on a non-empty image: readers ignore it (§1.7); check -r gives 7 and check -f
#             clears it.
# converting  CIF_FmtVersionConvert: the BAT may hold a mix of v1 and v2 entries and only the .idx
#             backup (absent here) is trustworthy, so everything refuses with 17 (§1.7, §3.1 step 4),
#             readers included; info -s and snapshot-list do not look at the BAT.
declare -A KIND=(
	[bad-signature]=header [bad-type]=header [cluster-not-pow2]=header [cluster-too-small]=header
	[cluster-too-large]=header [cluster-zero]=header [fbo-zero]=header [fbo-unaligned]=header
	[fbo-huge]=header [msize-too-small]=header [msize-huge]=header [size-zero]=header [size-huge]=header
	[size-max]=header [size-huge-consistent]=header [truncated-0]=header [truncated-10]=header
	[truncated-63]=header [truncated-64]=header [truncated-mid-bat]=header [all-zeros]=header
	[garbage-1]=header [garbage-512]=header [garbage-64k]=header [garbage-1m]=header
	[garbage-after-signature]=header
	[entry-past-eof]=bat [entry-far-past-eof]=bat [entry-ffffffff]=bat [v1-misaligned]=bat
	[truncated-after-bat]=bat [garbage-bat]=bat
	[entry-duplicate]=bat-c [entry-in-bat]=bat-c
	[truncated-mid-data]=bat-tail
	[nonzero-padding]=soft [unused-slot-past-eof]=soft [unaligned-size]=soft
	[v1-valid]=valid [v1-size-high-bits]=valid [v21-extension-past-eof]=valid [leaked-cluster]=valid
	[dirty]=dirty [empty-flag]=empty [convert-flag]=converting
)
RO_COMMANDS=(check-fcr check-rf map map-j export dd-info-s dd-snapshot-list dd-map dd-export dd-check-rf)
MOD_COMMANDS=(check-f dd-check-f snapshot merge-as-top merge-as-base grow-dd grow-delta convert-v1)
declare -A WANT
while read -r kind wants; do
	[ -n "$kind" ] || continue
	read -r -a w <<<"$wants"
	cmds=("${RO_COMMANDS[@]}" "${MOD_COMMANDS[@]}")
	for i in "${!cmds[@]}"; do WANT[$kind:${cmds[$i]}]=${w[$i]}; done
done <<'EOF'
header      11 11 11 11 11  11 0 11 11 11  11 11 fail fail fail fail fail fail
bat         11 11 11 11 11  0  0 11 11 11  11 11 any  fail fail fail fail fail
bat-c       11 0  11 11 11  0  0 11 11 11  0  11 any  fail fail fail fail fail
bat-tail    11 11 11 11 11  0  0 11 11 11  0  0  any  fail fail fail fail fail
soft        11 11 0  0  0   0  0 0  0  11  0  0  0    0    0    0    0    0
valid       0  0  0  0  0   0  0 0  0  0   0  0  0    0    0    0    0    0
dirty       37 37 0  0  0   0  0 0  0  7   37 0  37   any  any  37   37   37
empty       7  7  0  0  0   0  0 0  0  7   0  0  0    0    0    0    0    0
converting  17 17 17 17 17  17 0 17 17 17  17 17 17   17   17   17   17   17
EOF

# What check -f repairs (§3.1) is known to the byte: the file it must leave. Every other check -f
# leaves no trace.
pad_start=$((64 + 4 * 16384)) pad_end=$((3 * CS))
for c in nonzero-padding unused-slot-past-eof empty-flag dirty; do
	cp "$W/src/root.hds" "$W/expect/$c"	# for dirty: the descriptor form forces -d
done
for c in unaligned-size truncated-mid-data; do
	cp "$W/corpus/$c" "$W/expect/$c"
	truncate -s $((($(stat -c %s "$W/corpus/$c") + CS - 1) / CS * CS)) "$W/expect/$c"
done
cp "$W/corpus/garbage-bat" "$W/expect/garbage-bat"	# fatal entries stay, the padding is cleared
dd if=/dev/zero of="$W/expect/garbage-bat" bs=1 seek=$pad_start count=$((pad_end - pad_start)) conv=notrunc 2>/dev/null
declare -A REPAIR=(
	[nonzero-padding:check-f]=1 [nonzero-padding:dd-check-f]=1
	[unused-slot-past-eof:check-f]=1 [unused-slot-past-eof:dd-check-f]=1
	[empty-flag:check-f]=1 [empty-flag:dd-check-f]=1 [dirty:dd-check-f]=1
	[unaligned-size:check-f]=1 [unaligned-size:dd-check-f]=1
	[truncated-mid-data:check-f]=1 [truncated-mid-data:dd-check-f]=1
	[garbage-bat:check-f]=1 [garbage-bat:dd-check-f]=1
)

# after_success CASE DIR KEY: what a successful change must leave: the source's disk (when the
# damaged image could be read at all), and every delta of the chain no worse under check -f -c -r
# than the damaged input was.
after_success() {
	local c=$1 d=$2 key=$3 kind=${KIND[$1]} f r allowed=${WANT[${KIND[$1]}:check-fcr]}
	if [[ $kind == bat* ]]; then
		[ "$(sha "$d/root.hds")" = "$(sha "$W/corpus/$c")" ] || problem "the damaged delta was changed"
	else
		[ "$(content "$d/DiskDescriptor.xml")" = "$REF_CONTENT" ] || problem "disk contents changed"
	fi
	while read -r f; do
		"$PLOOP" check -f -c -r "$f" >/dev/null 2>&1
		r=$?
		[ $r -eq 0 ] || [ $r -eq "$allowed" ] || problem "check -f -c -r ${f##*/} gives $r afterwards"
	done < <(deltas "$d/DiskDescriptor.xml")
	case $key in
	grow-dd | grow-delta)
		[ "$(vsize "$d/DiskDescriptor.xml")" = 1073741824 ] || problem "size after grow: $(vsize "$d/DiskDescriptor.xml")" ;;
	esac
}

# The damaged image alone with the source's descriptor ("single"), as the top of a chain over the
# valid source ("top"), and as the base under an empty top ("base"); each command works on a copy.
make_templates() {
	local c=$1 t=$W/tpl/$1
	mkdir -p "$t-single" "$t-top" "$t-base" "$W/mod"
	cp "$W/corpus/$c" "$t-single/root.hds"
	cp "$W/src/DiskDescriptor.xml" "$t-single/"
	cp "$W/src/root.hds" "$t-top/root.hds"
	cp "$W/corpus/$c" "$t-top/top.hds"
	cp "$W/chain.xml" "$t-top/DiskDescriptor.xml"
	cp "$W/corpus/$c" "$t-base/root.hds"
	cp "$W/empty/empty.hds" "$t-base/top.hds"
	cp "$W/chain.xml" "$t-base/DiskDescriptor.xml"
}

test_image_case() {
	local c=$1 kind=${KIND[$1]} d key before

	make_templates "$c"
	# Read-only commands share one copy: none may change a byte of it.
	d=$W/ro/$c
	cp -r "$W/tpl/$c-single" "$d"
	before=$(state "$d")
	for key in "${RO_COMMANDS[@]}"; do
		rm -f "$SCR/out.raw"
		case $key in
		check-fcr) run "$PLOOP_SAN" check -f -c -r "$d/root.hds" ;;
		check-rf) run "$PLOOP_SAN" check -r -f "$d/root.hds" ;;
		map) run "$PLOOP_SAN" map "$d/root.hds" ;;
		map-j) run "$PLOOP_SAN" map -j "$d/root.hds" ;;
		export) run "$PLOOP_SAN" export "$d/root.hds" "$SCR/out.raw" ;;
		dd-info-s) run "$PLOOP_SAN" info -s "$d/DiskDescriptor.xml" ;;
		dd-snapshot-list) run "$PLOOP_SAN" snapshot-list "$d/DiskDescriptor.xml" ;;
		dd-map) run "$PLOOP_SAN" map "$d/DiskDescriptor.xml" ;;
		dd-export) run "$PLOOP_SAN" export "$d/DiskDescriptor.xml" "$SCR/out.raw" ;;
		dd-check-rf) run "$PLOOP_SAN" check -r -f "$d/DiskDescriptor.xml" ;;
		esac
		outcome "${WANT[$kind:$key]}"
		unchanged "$d" "$before" || before=$(state "$d")
		case $key:$RC in
		export:0 | dd-export:0) raw_as_reference "$SCR/out.raw" ;;
		export:* | dd-export:*) [ ! -e "$SCR/out.raw" ] || problem "a failed export left its output behind" ;;
		map-j:0) map_as_reference ;;
		esac
		verdict "img:$c:$key"
	done

	# Changing commands each get a fresh copy.
	for key in "${MOD_COMMANDS[@]}"; do
		d=$W/mod/$c-$key
		case $key in
		merge-as-top) cp -r "$W/tpl/$c-top" "$d" ;;
		merge-as-base) cp -r "$W/tpl/$c-base" "$d" ;;
		*) cp -r "$W/tpl/$c-single" "$d" ;;
		esac
		before=$(state "$d")
		case $key in
		check-f) run "$PLOOP_SAN" check -f "$d/root.hds" ;;
		dd-check-f) run "$PLOOP_SAN" check -f "$d/DiskDescriptor.xml" ;;
		snapshot) run "$PLOOP_SAN" snapshot "$d/DiskDescriptor.xml" ;;
		merge-as-top | merge-as-base) run "$PLOOP_SAN" snapshot-merge "$d/DiskDescriptor.xml" ;;
		grow-dd) run "$PLOOP_SAN" grow -s 1G "$d/DiskDescriptor.xml" ;;
		grow-delta) run "$PLOOP_SAN" grow -s 1G "$d/root.hds" ;;
		convert-v1) run "$PLOOP_SAN" convert -v 1 "$d/DiskDescriptor.xml" ;;
		esac
		outcome "${WANT[$kind:$key]}"
		if [ -n "${REPAIR[$c:$key]:-}" ]; then
			unchanged "$d" "$(with_file "$before" root.hds "$W/expect/$c")"
		elif [ "$RC" -ne 0 ] || [[ $key == *check-f ]]; then
			unchanged "$d" "$before"
		else
			after_success "$c" "$d" "$key"
		fi
		verdict "img:$c:$key"
	done
	rm -rf "$W/ro/$c" "$W/mod" "$W/tpl"
}

image_tests() {
	local c
	mkdir -p "$W/ro"
	while read -r c _; do
		if [ -z "${KIND[$c]:-}" ]; then
			not_ok "img:$c: no expectation for this mkcorrupt case"
		elif [ ! -f "$W/corpus/$c" ]; then
			not_ok "img:$c: mkcorrupt did not write it"
		else
			test_image_case "$c"
		fi
	done < <("$MKCORRUPT" -l)
}

# ---- malformed descriptors ---------------------------------------------------------------------------------
# Each bad descriptor sits in its own directory with valid images under the names the static files
# use (root.hds with data; empty deltas mid.hds, mid2.hds and top.hds), a valid image one level up
# (../escape.hds, where the ".." cases point), a subdirectory a/ and xxe-name.txt holding
# "root.hds" (were the external entity loaded, <File>&xxe;</File> would name a real image). Every
# command must refuse with 39 (PLOOP_ERR_DESCRIPTOR) and change nothing, except as DD_WANT says.
DD_COMMANDS=(info-s snapshot-list map export check-rf snapshot snapshot-merge grow convert-v1 check-f)
declare -A DD_WANT
# info -s opens only the top delta's header and snapshot-list only parses the descriptor: a missing
# or unreadable base is none of their business. A Blocksize that differs from the images' is refused
# by whatever opens the chain (whether info -s, which prints the top's own values, must refuse it
# is left open).
while read -r c wants; do
	[ -n "$c" ] || continue
	read -r -a w <<<"$wants"
	for i in "${!DD_COMMANDS[@]}"; do DD_WANT[$c:${DD_COMMANDS[$i]}]=${w[$i]}; done
done <<'EOF'
file-nonexistent    0   0 4  4  4  4  4  4  4  4
file-is-directory   0   0  4  4  4  4  4  4  4  4
file-is-descriptor  11  0 11 11 11 11 11 11 11 11
blocksize-mismatch  any 0 39 39 39 39 39 39 39 39
EOF

test_descriptor_case() {
	local src=$1 c d key before
	c=$(basename "$src" .xml)
	d=$W/dd/$c
	for key in "${DD_COMMANDS[@]}"; do
		# Read-only commands share one copy, the others each get a fresh one.
		case $key in
		info-s | snapshot-list | map | export | check-rf) [ -d "$d" ] || before= ;;
		*) rm -rf "$d" && before= ;;
		esac
		if [ -z "$before" ]; then
			cp -r "$W/dd/template" "$d"
			if [ -d "$src" ]; then mkdir "$d/DiskDescriptor.xml"; else cp "$src" "$d/DiskDescriptor.xml"; fi
			before=$(state "$d")
		fi
		rm -f "$SCR/out.raw"
		case $key in
		info-s) run "$PLOOP_SAN" info -s "$d/DiskDescriptor.xml" ;;
		snapshot-list) run "$PLOOP_SAN" snapshot-list "$d/DiskDescriptor.xml" ;;
		map) run "$PLOOP_SAN" map "$d/DiskDescriptor.xml" ;;
		export) run "$PLOOP_SAN" export "$d/DiskDescriptor.xml" "$SCR/out.raw" ;;
		check-rf) run "$PLOOP_SAN" check -r -f "$d/DiskDescriptor.xml" ;;
		snapshot) run "$PLOOP_SAN" snapshot "$d/DiskDescriptor.xml" ;;
		snapshot-merge) run "$PLOOP_SAN" snapshot-merge "$d/DiskDescriptor.xml" ;;
		grow) run "$PLOOP_SAN" grow -s 1G "$d/DiskDescriptor.xml" ;;
		convert-v1) run "$PLOOP_SAN" convert -v 1 "$d/DiskDescriptor.xml" ;;
		check-f) run "$PLOOP_SAN" check -f "$d/DiskDescriptor.xml" ;;
		esac
		outcome "${DD_WANT[$c:$key]:-39}"
		# Read-only commands never change anything; the others only when they succeed.
		case $key in
		info-s | snapshot-list | map | export | check-rf) unchanged "$d" "$before" || before=$(state "$d") ;;
		*) [ "$RC" -eq 0 ] || unchanged "$d" "$before" ;;
		esac
		[ "$key" != export ] || [ "$RC" -eq 0 ] || [ ! -e "$SCR/out.raw" ] ||
			problem "a failed export left its output behind"
		verdict "dd:$c:$key"
	done
	rm -rf "$d"
}

descriptor_tests() {
	local d key src n=0
	mkdir -p "$W/dd/template/a" "$W/dd-gen"
	cp "$W/src/root.hds" "$W/dd/template/"
	for f in mid mid2 top; do cp "$W/empty/empty.hds" "$W/dd/template/$f.hds"; done
	echo root.hds >"$W/dd/template/xxe-name.txt"
	cp "$W/src/root.hds" "$W/dd/escape.hds"

	# Control: the layout itself is valid, so every refusal below is the defect's doing.
	d=$W/dd/control
	cp -r "$W/dd/template" "$d" && cp "$W/chain.xml" "$d/DiskDescriptor.xml"
	for key in "info -s" snapshot-list map "check -r -f"; do
		# shellcheck disable=SC2086
		run "$PLOOP_SAN" $key "$d/DiskDescriptor.xml"
		outcome 0
		verdict "dd:control:${key// /}"
	done

	# Generated rather than stored: 2 MiB (the limit is 1 MiB), nesting deeper than libxml2 allows,
	# and a directory where the file should be.
	{ cat "$W/chain.xml"; head -c $((2 << 20)) /dev/zero | tr '\0' ' '; } >"$W/dd-gen/too-large-2mib.xml"
	{
		echo '<?xml version="1.0"?><Parallels_disk_image>'
		for ((i = 0; i < 5000; i++)); do printf '<Disk_Parameters>'; done
		for ((i = 0; i < 5000; i++)); do printf '</Disk_Parameters>'; done
		echo '</Parallels_disk_image>'
	} >"$W/dd-gen/nested-too-deep.xml"
	mkdir -p "$W/dd-gen/descriptor-is-directory.xml"

	for src in "$BAD_DESCRIPTORS"/*.xml "$W/dd-gen"/*.xml; do
		n=$((n + 1))
		test_descriptor_case "$src"
	done
	check "dd: ../escape.hds is untouched" [ "$(sha "$W/dd/escape.hds")" = "$(sha "$W/src/root.hds")" ]
	check "dd: the corpus holds $n descriptors" [ $n -ge 50 ]
}

# ---- wrong arguments ---------------------------------------------------------------------------------------
# Usage errors are 38 (PLOOP_ERR_PARAM), unknown snapshots 43, missing inputs 4 or 39; each is one
# line on stderr and leaves the image set as it was, without stray files.
argument_tests() {
	local A=$W/args DD
	DD=$A/DiskDescriptor.xml
	mkdir -p "$A"
	"$PLOOP" init -s 64M -b 64 -t none "$A/root.hds" >/dev/null
	head -c $CS /dev/urandom | "$PLOOP_IO" write "$DD" 0
	"$PLOOP" snapshot -u "$BASE_GUID" "$DD" >/dev/null
	echo keep >"$A/existing.raw"

	# arg_case NAME WANT ARGS...: runs the sanitized tool on the set in $A.
	arg_case() {
		local name=$1 want=$2 before
		shift 2
		before=$(state "$A")
		run "$PLOOP_SAN" "$@"
		outcome "$want"
		unchanged "$A" "$before"
		verdict "args:$name"
	}
	arg_case unknown-command 38 frobnicate "$DD"
	arg_case unknown-global-option 38 -x map "$DD"
	arg_case unknown-option 38 map -z "$DD"
	arg_case missing-option-argument 38 init -s
	arg_case missing-argument 38 map
	arg_case too-many-arguments 38 map "$DD" "$DD"
	arg_case init-size-abc 38 init -s abc -t none "$A/new.hds"
	arg_case init-size-negative 38 init -s -1 -t none "$A/new.hds"
	arg_case init-size-zero 38 init -s 0 -t none "$A/new.hds"
	arg_case init-size-huge 38 init -s 99999999999T -t none "$A/new.hds"
	arg_case init-blocksize-100 38 init -s 1G -b 100 -t none "$A/new.hds"
	arg_case init-blocksize-1G 38 init -s 1G -b 1G -t none "$A/new.hds"
	arg_case init-version-3 38 init -s 1G -v 3 -t none "$A/new.hds"
	arg_case init-format-unknown 38 init -s 1G -f qcow2 -t none "$A/new.hds"
	arg_case init-filesystem-xfs 38 init -s 1G -t xfs "$A/new.hds"
	arg_case init-filesystem-ext3 38 init -s 1G -t ext3 "$A/new.hds"
	arg_case init-over-existing-set 1 init -s 1G -t none "$A/new.hds"
	arg_case grow-size-abc 38 grow -s abc "$DD"
	arg_case grow-size-negative 38 grow -s -1 "$DD"
	arg_case grow-size-zero 38 grow -s 0 "$DD"
	arg_case grow-shrink 38 grow -s 1M "$DD"
	arg_case grow-without-size 38 grow "$DD"
	arg_case snapshot-guid-invalid 38 snapshot -u nonsense "$DD"
	arg_case snapshot-guid-reserved 38 snapshot -u "$TOP_GUID" "$DD"
	arg_case snapshot-guid-exists 38 snapshot -u "$BASE_GUID" "$DD"
	arg_case snapshot-merge-guid-invalid 38 snapshot-merge -u xyz "$DD"
	# Upstream's exit codes for an unknown UUID: 38 for merge and switch, 1 for snapshot-list.
	arg_case snapshot-merge-guid-unknown 38 snapshot-merge -u "$UNKNOWN_GUID" "$DD"
	arg_case snapshot-merge-base 38 snapshot-merge -u "$BASE_GUID" "$DD"
	arg_case snapshot-merge-all-and-guid 38 snapshot-merge -A -u "$TOP_GUID" "$DD"
	arg_case snapshot-delete-without-guid 38 snapshot-delete "$DD"
	arg_case snapshot-delete-guid-invalid 38 snapshot-delete -u xyz "$DD"
	arg_case snapshot-delete-guid-unknown 43 snapshot-delete -u "$UNKNOWN_GUID" "$DD"
	# Only a base without children is refused (with one child, the child is merged into it, as upstream).
	(
		A=$A-single
		DD=$A/DiskDescriptor.xml
		mkdir -p "$A"
		"$PLOOP" init -s 8M -t none "$A/root.hds" >/dev/null
		arg_case snapshot-delete-base 38 snapshot-delete -u "$TOP_GUID" "$DD"
	)
	arg_case snapshot-switch-guid-invalid 38 snapshot-switch -u xyz "$DD"
	arg_case snapshot-switch-guid-unknown 38 snapshot-switch -u "$UNKNOWN_GUID" "$DD"
	arg_case snapshot-switch-to-top 38 snapshot-switch -u "$TOP_GUID" "$DD"
	arg_case snapshot-list-guid-invalid 38 snapshot-list -u xyz "$DD"
	arg_case snapshot-list-guid-unknown 1 snapshot-list -u "$UNKNOWN_GUID" "$DD"
	arg_case snapshot-list-fields-invalid 1 snapshot-list -o uuid,size "$DD"
	arg_case map-guid-invalid 38 map -u xyz "$DD"
	arg_case map-guid-on-delta 38 map -u "$BASE_GUID" "$A/root.hds"
	arg_case export-guid-invalid 38 export -u xyz "$DD" "$SCR/args-out.raw"
	# The null GUID is the parent of the base, not a snapshot: 43 like any unknown GUID, where upstream has it.
	NULL_GUID='{00000000-0000-0000-0000-000000000000}'
	arg_case map-guid-null 43 map -u "$NULL_GUID" "$DD"
	arg_case export-guid-null 43 export -u "$NULL_GUID" "$DD" "$SCR/args-out.raw"
	arg_case snapshot-delete-guid-null 43 snapshot-delete -u "$NULL_GUID" "$DD"
	arg_case snapshot-merge-guid-null 38 snapshot-merge -u "$NULL_GUID" "$DD"
	arg_case export-over-existing-output 38 export "$DD" "$A/existing.raw"
	arg_case check-guid-invalid 38 check -u xyz "$DD"
	arg_case check-raw-without-blocksize 38 check -R "$A/root.hds"
	arg_case check-blocksize-invalid 38 check -R -b 100 "$A/root.hds"
	arg_case convert-nothing 38 convert "$DD"
	arg_case convert-version-3 38 convert -v 3 "$DD"
	arg_case convert-format-unknown 38 convert -f qcow2 "$DD"
	arg_case convert-both 38 convert -v 1 -f raw "$DD"
	arg_case import-size-abc 38 import -s abc "$A/existing.raw" "$A/imported.hds"
	arg_case import-blocksize-invalid 38 import -b 100 "$A/existing.raw" "$A/imported.hds"
	arg_case merge-one-image 38 merge "$A/root.hds"
	# One file twice (by name, or through a hard link) is refused before anything is opened, not
	# reported as locked by another process.
	arg_case merge-same-file-twice 38 merge "$A/root.hds" "$A/root.hds"
	(
		A=$A-link
		mkdir -p "$A"
		"$PLOOP" init -s 8M -t none "$A/root.hds" >/dev/null
		ln "$A/root.hds" "$A/link.hds"
		arg_case merge-hard-link-of-itself 38 merge "$A/link.hds" "$A/root.hds"
	)
	# A new image's file name that DiskDescriptor.xml cannot give back as it is (its reader trims
	# blanks and refuses control characters; XML holds UTF-8 text only) is refused as an argument,
	# before anything is created: init used to write <File> lead.hds</File>, which every later
	# command failed to open (exit 4).
	(
		IN=$A/existing.raw
		A=$A-names
		mkdir -p "$A"
		# name_case NAME ARGS...: refused with 38, and the directory is left as it was, without
		# even a lock file; then emptied for the next case.
		name_case() {
			local before
			before=$(ls -A "$A")
			arg_case "$@"
			check "args:$1: nothing created" [ "$(ls -A "$A")" = "$before" ]
			rm -rf "$A" && mkdir -p "$A"
		}
		name_case init-name-leading-blank 38 init -s 8M -t none "$A/ lead.hds"
		name_case init-name-trailing-blank 38 init -s 8M -t none "$A/trail.hds "
		name_case init-name-control-character 38 init -s 8M -t none "$A/a"$'\t'"b.hds"
		name_case init-name-not-utf8 38 init -s 8M -t none "$A/"$'\xff'".hds"
		name_case import-name-leading-blank 38 import -s 1M "$IN" "$A/ imported.hds"
		"$PLOOP" init -s 8M -t none "$A/kept.hds" >/dev/null && rm "$A"/DiskDescriptor.xml* &&
			mv "$A/kept.hds" "$A/kept.hds "
		name_case restore-descriptor-name-trailing-blank 38 restore-descriptor "$A" "$A/kept.hds "
	)
	arg_case info-without-s 38 info "$DD"
	arg_case restore-descriptor-over-existing 1 restore-descriptor "$A" "$A/root.hds"
	arg_case map-nonexistent-descriptor "4|39" map "$A/nonexistent.xml"
	arg_case map-nonexistent-directory "4|39" map "$A/no/such/dir/DiskDescriptor.xml"
	arg_case info-nonexistent "4|39" info -s "$A/nonexistent.xml"
	arg_case check-nonexistent "4|39" check -f -c -r "$A/nonexistent.hds"
	arg_case snapshot-nonexistent "4|39" snapshot "$A/nonexistent.xml"
	arg_case export-nonexistent "4|39" export "$A/nonexistent.xml" "$SCR/args-out.raw"
	arg_case import-nonexistent 4 import "$A/nonexistent.raw" "$A/imported.hds"
	arg_case restore-descriptor-nonexistent-dir 4 restore-descriptor "$A/no/such/dir" "$A/root.hds"
	[[ ${ERR[0]:-} == *"No such file or directory"* ]] || problem "the message does not say what is missing: $(first_err)"
	verdict "args:restore-descriptor-nonexistent-dir-message"
	check "args: refused exports create no output" [ ! -e "$SCR/args-out.raw" ]
	# An input that opens but is no image (a directory): the output export created goes with it.
	arg_case export-directory-input 4 export "$A" "$SCR/args-out.raw"
	check "args: an export of a directory leaves no output" [ ! -e "$SCR/args-out.raw" ]

	# A FIFO in place of a descriptor, a delta or the lock file: refused at once (no open() that waits
	# for a writer), 39 for the descriptor, 4 for the others; the export output is not left behind.
	(
		A=$A-fifo
		DD=$A/DiskDescriptor.xml
		mkdir -p "$A" "$A/lck" "$A/chain"
		mkfifo "$DD" "$A/delta.hds" "$A/chain/root.hds"
		"$PLOOP" init -s 8M -t none "$A/lck/root.hds" >/dev/null
		rm -f "$A/lck/DiskDescriptor.xml.lck" && mkfifo "$A/lck/DiskDescriptor.xml.lck"
		cp "$A/lck/DiskDescriptor.xml" "$A/chain/"
		for cmd in "info -s" map snapshot "resize -s 1G" "check -r" "check -f" "snapshot-list"; do
			# shellcheck disable=SC2086
			arg_case "fifo-descriptor-${cmd// /}" 39 $cmd "$DD"
		done
		arg_case fifo-descriptor-export 39 export "$DD" "$SCR/args-out.raw"
		for cmd in "check -r" "check -f -c" map; do
			# shellcheck disable=SC2086
			arg_case "fifo-delta-${cmd// /}" 4 $cmd "$A/delta.hds"
		done
		arg_case fifo-delta-export 4 export "$A/delta.hds" "$SCR/args-out.raw"
		arg_case fifo-delta-in-chain-map 4 map "$A/chain/DiskDescriptor.xml"
		arg_case fifo-delta-in-chain-export 4 export "$A/chain/DiskDescriptor.xml" "$SCR/args-out.raw"
		arg_case fifo-lock-map 4 map "$A/lck/DiskDescriptor.xml"
		arg_case fifo-lock-snapshot 4 snapshot "$A/lck/DiskDescriptor.xml"
		check "args: refused FIFO exports create no output" [ ! -e "$SCR/args-out.raw" ]
	)

	# A directory in place of a descriptor: refused (39) before a lock file is made beside it (a
	# stray DIR.lck was left). Init with DELTA an existing directory leaves no lock file either.
	mkdir "$A/dir.xml"
	for cmd in compact "resize -s 1G" snapshot "convert -f raw" snapshot-merge "snapshot-delete -u $BASE_GUID" \
		"snapshot-switch -u $BASE_GUID" "grow -s 1G"; do
		# shellcheck disable=SC2086
		arg_case "directory-descriptor-${cmd%% *}" 39 $cmd "$A/dir.xml"
		[[ ${ERR[0]:-} == *"not a regular file"* ]] || problem "the message does not say what is wrong: $(first_err)"
		verdict "args:directory-descriptor-${cmd%% *}-message"
		rm -f "$A/dir.xml.lck"	# each case on its own
	done
	rmdir "$A/dir.xml"
	(
		A=$A-initdir
		mkdir -p "$A/root.hds"
		arg_case init-delta-directory 1 init -s 8M -t none "$A/root.hds"
		check "args: init over a directory leaves no lock file" [ ! -e "$A/DiskDescriptor.xml.lck" ]
	)
	check "args: the set is still consistent" "$PLOOP" check -r -f "$DD"
}

# ---- the two jobs --------------------------------------------------------------------------------------------
# The image and the descriptor/argument tests are independent: they run side by side, each with its
# own scratch files, and their reports are printed in order.
job() {
	(
		SCR=$W/scratch-$1
		mkdir -p "$SCR"
		shift
		"$@"
		echo "# job finished in ${SECONDS}s"
	) >"$W/job-$1.log" 2>&1 &
}
# shellcheck disable=SC2016
at_exit 'for p in $(jobs -p); do kill "$p"; done; wait'
job images image_tests
job descriptors eval 'descriptor_tests; argument_tests'
wait
for j in images descriptors; do
	cat "$W/job-$j.log"
	_failures=$((_failures + $(grep -c '^not ok' "$W/job-$j.log")))
	grep -q '^# job finished' "$W/job-$j.log" || not_ok "$j: the job did not finish"
done

# ---- full disk ------------------------------------------------------------------------------------------------
# An 8 MiB tmpfs. Running out of space is 20 (FALLOCATE) or 7 (WRITE); afterwards every delta still
# passes check -f -c -r, the disk reads as before, and nothing half-made is left.
SMALL=$T/small
mkdir -p "$SMALL"
if ! mount -t tmpfs -o size=8M tmpfs "$SMALL" 2>/dev/null; then
	ok "full-disk # SKIP cannot mount a tmpfs here"
	finish
fi
at_exit "umount '$SMALL' || umount -l '$SMALL'"

# fill KIB: leaves about KIB KiB free on the tmpfs.
fill() {
	rm -f "$SMALL/fill"
	dd if=/dev/zero of="$SMALL/fill" bs=32K 2>/dev/null
	truncate -s "-$1K" "$SMALL/fill"
}
unfill() { rm -f "$SMALL/fill"; }
# leftovers DIR: files other than images, descriptors and locks (temporary or half-made ones).
leftovers() { find "$1" -type f ! -name '*.hds' ! -name '*.hds.{*}' ! -name DiskDescriptor.xml ! -name '*.lck' | tr '\n' ' '; }
# set_consistent DIR CONTENT: every delta passes check -f -c -r, the disk reads as CONTENT, and
# nothing temporary is left.
set_consistent() {
	local f
	while read -r f; do
		run "$PLOOP" check -f -c -r "$f"
		[ "$RC" -eq 0 ] || problem "check -f -c -r ${f##*/}: exit $RC ($(first_err))"
	done < <(deltas "$1/DiskDescriptor.xml")
	[ "$(content "$1/DiskDescriptor.xml")" = "$2" ] || problem "disk contents changed"
	[ -z "$(leftovers "$1")" ] || problem "left behind: $(leftovers "$1")"
}

# import of 16 MiB of data: nothing of the new image may stay.
head -c 16M /dev/urandom >"$W/big.raw"
mkdir -p "$SMALL/imp"
run "$PLOOP_SAN" import "$W/big.raw" "$SMALL/imp/root.hds"
outcome 20
[ -z "$(find "$SMALL/imp" -type f)" ] ||
	problem "left behind: $(find "$SMALL/imp" -type f | tr '\n' ' ')"
verdict "full-disk:import"
rm -rf "$SMALL/imp"

# snapshot-merge of a 2 MiB top into its base with 512 KiB free.
M=$SMALL/merge
mkdir -p "$M"
"$PLOOP" init -s 64M -b 64 -t none "$M/root.hds" >/dev/null
head -c 1M /dev/urandom | "$PLOOP_IO" write "$M/DiskDescriptor.xml" 0
"$PLOOP" snapshot "$M/DiskDescriptor.xml" >/dev/null
head -c 2M /dev/urandom | "$PLOOP_IO" write "$M/DiskDescriptor.xml" $((8 << 20))
merge_content=$(content "$M/DiskDescriptor.xml")
fill 512
before=$(state "$M")
run "$PLOOP_SAN" snapshot-merge "$M/DiskDescriptor.xml"
outcome 20
# The space is taken before any data moves: nothing changed, no <Temporary/> marker left (every
# later command would first try to complete the merge, and fail for lack of space as well).
unchanged "$M" "$before"
set_consistent "$M" "$merge_content"
verdict "full-disk:snapshot-merge"
# With room again, the same command merges and reports success.
unfill
run "$PLOOP_SAN" snapshot-merge "$M/DiskDescriptor.xml"
outcome 0
set_consistent "$M" "$merge_content"
[ "$(deltas "$M/DiskDescriptor.xml" | wc -l)" -eq 1 ] || problem "the snapshot is still there"
verdict "full-disk:snapshot-merge-retry"

# snapshot with no room for the new delta.
fill 0
before=$(state "$M")
run "$PLOOP_SAN" snapshot "$M/DiskDescriptor.xml"
outcome 20
unchanged "$M" "$before"
verdict "full-disk:snapshot"

# convert -v 1 with no room for the .idx backup.
before=$(state "$M")
run "$PLOOP_SAN" convert -v 1 "$M/DiskDescriptor.xml"
outcome 20
unchanged "$M" "$before"
set_consistent "$M" "$merge_content"
verdict "full-disk:convert"

# convert -f preallocated with room for a new descriptor but not for the clusters: nothing changes
# (the descriptor used to say <Preallocated> after the failed conversion).
fill 512
before=$(state "$M")
run "$PLOOP_SAN" convert -f preallocated "$M/DiskDescriptor.xml"
outcome 20
unchanged "$M" "$before"
set_consistent "$M" "$merge_content"
verdict "full-disk:convert-preallocated"
unfill
rm -rf "$M"

# grow whose new BAT does not fit (64M -> 64G needs 8 MiB of BAT).
G=$SMALL/grow
mkdir -p "$G"
"$PLOOP" init -s 64M -b 64 -t none "$G/root.hds" >/dev/null
head -c 1M /dev/urandom | "$PLOOP_IO" write "$G/DiskDescriptor.xml" 0
grow_content=$(content "$G/DiskDescriptor.xml")
fill 2048
before=$(state "$G")
run "$PLOOP_SAN" grow -s 64G "$G/DiskDescriptor.xml"
outcome 20
unchanged "$G" "$before"
set_consistent "$G" "$grow_content"
verdict "full-disk:grow-bat"

# grow that must move data clusters out of the new BAT area without the space for them: it takes
# that space before anything moves, so nothing changes (it used to move them one by one until the
# space ran out, their old places left as holes nothing gives back).
unfill
rm -rf "$G" && mkdir -p "$G"
"$PLOOP" init -s 64M -b 64 -t none "$G/root.hds" >/dev/null
head -c 640K /dev/urandom | "$PLOOP_IO" write "$G/DiskDescriptor.xml" 0
grow_content=$(content "$G/DiskDescriptor.xml")
fill 64
before=$(state "$G")
run "$PLOOP_SAN" grow -s 1G "$G/DiskDescriptor.xml"
outcome 20
unchanged "$G" "$before"
set_consistent "$G" "$grow_content"
[ "$(vsize "$G/DiskDescriptor.xml")" = $((64 << 20)) ] || problem "size changed to $(vsize "$G/DiskDescriptor.xml")"
verdict "full-disk:grow-relocate"

# grow whose delta needs no new space (64M -> 1G: the BAT stays in its cluster) with no room for the
# new descriptor: the delta header said 1G and DiskDescriptor.xml 64M (found by review). The
# descriptor is written before the delta changes, so nothing changes; with room, the grow completes.
unfill
rm -rf "$G" && mkdir -p "$G"
"$PLOOP" init -s 64M -t none "$G/root.hds" >/dev/null
head -c 1M /dev/urandom | "$PLOOP_IO" write "$G/DiskDescriptor.xml" 0
grow_content=$(content "$G/DiskDescriptor.xml")
fill 0
before=$(state "$G")
run "$PLOOP_SAN" grow -s 1G "$G/DiskDescriptor.xml"
outcome 20
unchanged "$G" "$before"
set_consistent "$G" "$grow_content"
verdict "full-disk:grow-descriptor"
unfill
run "$PLOOP_SAN" grow -s 1G "$G/DiskDescriptor.xml"
outcome 0
set_consistent "$G" "$grow_content"
[ "$(vsize "$G/DiskDescriptor.xml")" = $((1 << 30)) ] || problem "size is $(vsize "$G/DiskDescriptor.xml")"
grep -q '<Disk_size>2097152</Disk_size>' "$G/DiskDescriptor.xml" || problem "the descriptor's size is not 1G"
run "$PLOOP" check -f -c "$G/root.hds"
[ "$RC" -eq 0 ] || problem "check -f -c: exit $RC ($(first_err))"
verdict "full-disk:grow-descriptor-retry"

# export to a disk that is too small: the partial output goes.
fill 256
run "$PLOOP_SAN" export "$G/DiskDescriptor.xml" "$SMALL/out.raw"
outcome 20
[ ! -e "$SMALL/out.raw" ] || problem "the partial output was left behind"
verdict "full-disk:export"

# Listings written to a full disk: the command fails (exit 20), a short list is never taken for all.
fill 0
dd if=/dev/zero of="$SMALL/fill.rest" bs=512 2>/dev/null	# (fill leaves less than 32K)
for cmd in "snapshot-list" "map -j" "info -s"; do
	# shellcheck disable=SC2086 # $cmd is a command and its options
	run sh -c 'out=$1; shift; "$@" >"$out"' sh "$SMALL/listing" "$PLOOP_SAN" $cmd "$G/DiskDescriptor.xml"
	outcome 20
	verdict "full-disk:output of ${cmd%% *}"
done
rm -f "$SMALL/listing" "$SMALL/fill.rest"

# init of a preallocated image that does not fit.
unfill
mkdir -p "$SMALL/pre"
run "$PLOOP_SAN" init -s 64M -f preallocated -t none "$SMALL/pre/root.hds"
outcome 20
[ -z "$(find "$SMALL/pre" -type f ! -name '*.lck')" ] ||
	problem "left behind: $(find "$SMALL/pre" -type f ! -name '*.lck' | tr '\n' ' ')"
verdict "full-disk:init-preallocated"

# On ext4, unlike tmpfs, a fallocate that runs out of space part-way keeps what it got and the size
# it reached: convert -f preallocated of a 20 MiB image with about 3 MiB free must not leave the
# delta ending in a partial cluster.
EXT=$T/ext4
mkdir -p "$EXT"
truncate -s 40M "$T/ext4.img"
mkfs.ext4 -qF "$T/ext4.img"
if LOOPDEV=$(losetup -f --show "$T/ext4.img" 2>/dev/null); then
	at_exit "losetup -d $LOOPDEV"
	mount "$LOOPDEV" "$EXT" && at_exit "umount '$EXT' || umount -l '$EXT'"
fi
if mountpoint -q "$EXT"; then
	E=$EXT/conv
	mkdir -p "$E"
	"$PLOOP" init -s 20M -t none "$E/root.hds" >/dev/null
	head -c 1M /dev/urandom | "$PLOOP_IO" write "$E/DiskDescriptor.xml" 0
	conv_content=$(content "$E/DiskDescriptor.xml")
	fallocate -l $(($(stat -f -c '%f * %S' "$EXT") - 3 * 1048576)) "$EXT/fill"
	run "$PLOOP_SAN" convert -f preallocated "$E/DiskDescriptor.xml"
	outcome 20
	set_consistent "$E" "$conv_content"
	[ $(($(stat -c %s "$E/root.hds") % 1048576)) = 0 ] || problem "the delta ends in a partial cluster"
	! grep -q '<Preallocated>' "$E/DiskDescriptor.xml" || problem "the descriptor says preallocated"
	verdict "full-disk-ext4:convert-preallocated"
else
	ok "full-disk-ext4 # SKIP cannot mount an ext4 image here"
fi

# ---- read-only filesystem ------------------------------------------------------------------------------------
# A writer that cannot open DiskDescriptor.xml.lck there is refused with 4 (cannot open; 1 for init,
# cannot create), never 23, which says another process holds the set and which scripts retry; readers
# work, with the lock file or without it.
RO=$T/ro
mkdir -p "$RO"
if mount -t tmpfs -o size=16M tmpfs "$RO" 2>/dev/null; then
	at_exit "umount '$RO' || umount -l '$RO'"
	mkdir -p "$RO/lck" "$RO/nolck"
	"$PLOOP" init -s 8M -b 64 -t none "$RO/lck/root.hds" >/dev/null
	"$PLOOP" init -s 8M -b 64 -t none "$RO/nolck/root.hds" >/dev/null && rm "$RO/nolck/DiskDescriptor.xml.lck"
	mount -o remount,ro "$RO"
	for s in lck nolck; do
		for c in snapshot snapshot-merge "grow -s 16M" "check -f" "convert -v 1"; do
			# shellcheck disable=SC2086
			run "$PLOOP_SAN" $c "$RO/$s/DiskDescriptor.xml"
			outcome 4
			[[ ${ERR[0]:-} == *"DiskDescriptor.xml.lck"*"Read-only file system"* ]] ||
				problem "the message does not name the lock file and the error: $(first_err)"
			verdict "read-only-fs:$s:${c// /}"
		done
		for c in "check -r -f" snapshot-list "info -s" map; do
			# shellcheck disable=SC2086
			run "$PLOOP_SAN" $c "$RO/$s/DiskDescriptor.xml"
			outcome 0
			verdict "read-only-fs:$s:${c// /}"
		done
	done
	run "$PLOOP_SAN" init -s 8M -t none "$RO/new.hds"
	outcome 1
	verdict "read-only-fs:init"
else
	ok "read-only-fs # SKIP cannot mount a tmpfs here"
fi

echo "# bad_input.sh took ${SECONDS}s"
finish
