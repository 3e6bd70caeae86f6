#!/usr/bin/env bash
# Interoperability with Debian's ploop 1.15 (the real upstream tool, run offline by
# tests/tools/ploop-oracle), in both directions:
#  A. the real tool accepts every delta our tool writes (check -f -c -r), and lists/describes our
#     descriptors byte for byte as we do;
#  B. the real tool snapshots, merges, deletes, switches, grows and converts our images, and our
#     export still equals the model (a raw file kept in step with every write);
#  C. our tool does the same to images the real tool created, and the real tool accepts the result;
#  D. init writes the same DiskDescriptor.xml (and delta) as the real tool; error exit codes agree.
# runner: isolated (touches nothing another test looks at: tests/run may run it beside them)
source "$(dirname "$0")/../lib.sh"

if ! have_oracle; then
	ok "interop_oracle # SKIP no ploop package"
	finish
fi
export PLOOP_ORACLE_LOCKDIR="$T/.oracle-lock"

MiB=1048576
TOPG='{5fbaabe3-6958-40ff-92a7-860e329aab41}'

quiet() { "$@" >"$T/.out" 2>&1; }
# put IMAGE MODEL OFFSET LENGTH: LENGTH random bytes at OFFSET through libploop and into MODEL.
put() {
	head -c "$4" /dev/urandom >"$T/.chunk"
	if ! "$PLOOP_IO" write "$1" "$3" <"$T/.chunk" 2>"$T/.err"; then
		not_ok "write $4 bytes at $3 into $1: $(head -c 300 "$T/.err")"
		return 1
	fi
	dd if="$T/.chunk" of="$2" bs=64K seek="$3" oflag=seek_bytes conv=notrunc status=none
}
deltas() {
	local dir f
	dir=$(dirname "$1")
	sed -n 's:.*<File>\(.*\)</File>.*:\1:p' "$1" | while IFS= read -r f; do
		case $f in /*) echo "$f" ;; *) echo "$dir/$f" ;; esac
	done
}
# same_content NAME SOURCE MODEL [EXPORT OPTIONS]: our export of SOURCE equals MODEL.
same_content() {
	local name=$1 src=$2 model=$3 out=$T/.export rc
	shift 3
	rm -f "$out"
	"$PLOOP" export "$@" "$src" "$out" >/dev/null 2>"$T/.err"
	rc=$?
	if [ $rc != 0 ]; then
		not_ok "$name (export exit $rc: $(head -c 300 "$T/.err"))"
	elif cmp -s "$out" "$model"; then
		ok "$name"
	else
		not_ok "$name ($(cmp "$out" "$model" 2>&1 | head -1); size $(stat -c %s "$out") vs $(stat -c %s "$model"))"
	fi
}
# run_check NAME TOOL DD: TOOL check -f -c -r accepts every delta of DD (checked in parallel: each
# run of the real tool costs a mount namespace).
run_check() {
	local name=$1 tool=$2 dd=$3 f i bad="" rc files=()
	mapfile -t files < <(deltas "$dd")
	for i in "${!files[@]}"; do
		("$tool" check -f -c -r "${files[$i]}" >"$T/.ck$i" 2>&1; echo $? >"$T/.rc$i") &
	done
	wait
	for i in "${!files[@]}"; do
		f=${files[$i]}
		rc=$(cat "$T/.rc$i")
		[ "$rc" = 0 ] || bad="$bad ${f##*/} (exit $rc: $(grep -iE 'error|flag|sparse|wrong|skipped' "$T/.ck$i" | tr '\n' ' ' | head -c 250))"
	done
	if [ -z "$bad" ]; then ok "$name"; else not_ok "$name:$bad"; fi
}
oracle_accepts() { run_check "$1: real ploop check -f -c -r, every delta" "$ORACLE" "$2"; }
we_accept() { run_check "$1: our check -f -c -r, every delta" "$PLOOP" "$2"; }
# verify NAME DD MODEL: our export equals the model, and both tools accept every delta.
verify() {
	same_content "$1: content" "$2" "$3"
	oracle_accepts "$1" "$2"
	we_accept "$1" "$2"
}
# same_listing NAME DD [snapshot-list OPTIONS]: both tools print the same bytes and exit alike.
same_listing() {
	local name=$1 dd=$2 orc prc
	shift 2
	"$ORACLE" snapshot-list "$@" "$dd" >"$T/.o" 2>"$T/.oe"
	orc=$?
	"$PLOOP" snapshot-list "$@" "$dd" >"$T/.p" 2>"$T/.pe"
	prc=$?
	if [ $orc = $prc ] && cmp -s "$T/.o" "$T/.p"; then ok "$name: snapshot-list $* as upstream"; else
		not_ok "$name: snapshot-list $* (exit $prc, upstream $orc; upstream/ours first differing line: $(diff "$T/.o" "$T/.p" | grep '^<' | head -1 | cat -A) / $(diff "$T/.o" "$T/.p" | grep '^>' | head -1 | cat -A))"
	fi
}
# same_info NAME DD: `info -s` prints the same (upstream's "Opening delta" log line aside).
same_info() {
	local o p
	o=$("$ORACLE" info -s "$2" 2>/dev/null | grep -v '^Opening delta ')
	p=$("$PLOOP" info -s "$2" 2>/dev/null)
	if [ -n "$o" ] && [ "$o" = "$p" ]; then ok "$1: info -s as upstream"; else
		not_ok "$1: info -s (ours: $(echo "$p" | tr '\n\t' '|~'); upstream: $(echo "$o" | tr '\n\t' '|~'))"
	fi
}
same_listings() {
	local g
	same_listing "$1" "$2"
	same_listing "$1" "$2" -s -H -o current,fname,parent_uuid
	g=$(sed -n 's:.*<ParentGUID>\({.*}\)</ParentGUID>.*:\1:p' "$2" | grep -v '{00000000-' | head -1)
	[ -n "$g" ] && same_listing "$1" "$2" -u "$g"
	same_info "$1" "$2"
}
# clear_empty_flag DELTA: what `ploop check -f` would do after qemu-io filled a fresh delta.
clear_empty_flag() { printf '\000' | dd of="$1" bs=1 seek=52 conv=notrunc status=none; }
# unsparse FILE: qemu-io leaves holes inside clusters, which 1.15's ext4 sparse check rejects.
unsparse() { cp --sparse=never "$1" "$1.tmp" && mv "$1.tmp" "$1"; }

# ---- A. our images, accepted by the real tool ---------------------------------------------------------------------
n=0
for spec in "-v 2 -b 64" "-v 2 -b 256" "-v 2 -b 2048" "-v 1 -b 64" "-v 1 -b 256" "-v 1 -b 2048" \
	"-v 2 -b 256 -f preallocated" "-v 1 -b 2048 -f preallocated"; do
	n=$((n + 1))
	d=A$n
	mkdir $d
	# shellcheck disable=SC2086
	if ! quiet "$PLOOP" init -s 12M $spec -t none $d/root.hds; then
		not_ok "init $spec ($(head -c 300 "$T/.out"))"
		continue
	fi
	truncate -s 12M m$d
	put $d/DiskDescriptor.xml m$d 12345 100000
	put $d/DiskDescriptor.xml m$d $((3 * MiB - 511)) $((MiB + 1023))
	put $d/DiskDescriptor.xml m$d $((12 * MiB - 4097)) 4097
	# Partial writes into fallocated clusters trip 1.15's sparse check: that is the "pw" case
	# below; here the image is made dense so that only the header and BAT are judged.
	case $spec in *preallocated*) unsparse $d/root.hds ;; esac
	verify "ours $spec + writes" $d/DiskDescriptor.xml m$d
	same_info "ours $spec" $d/DiskDescriptor.xml
done
mkdir Araw
quiet "$PLOOP" init -s 8M -f raw -t none Araw/root.hds
same_info "ours -f raw" Araw/DiskDescriptor.xml
head -c $((2 * MiB + 777)) /dev/urandom >imp.raw
truncate -s $((9 * MiB)) imp.raw
for v in 1 2; do
	mkdir imp$v
	check "import -v $v" quiet "$PLOOP" import -v $v -b 128 imp.raw imp$v/root.hds
	verify "import -v $v" imp$v/DiskDescriptor.xml imp.raw
done

# A chain made and reshaped by our tool; after every step the real tool accepts every delta and
# lists the descriptor exactly as we do.
mkdir ch
CD=ch/DiskDescriptor.xml
S1='{cccccccc-0000-4000-8000-000000000001}'
S2='{cccccccc-0000-4000-8000-000000000002}'
S3='{cccccccc-0000-4000-8000-000000000003}'
quiet "$PLOOP" init -s 16M -b 64 -t none ch/root.hds
truncate -s 16M mch
put $CD mch 1000 $((MiB))
quiet "$PLOOP" snapshot -u $S1 $CD
put $CD mch $((MiB / 2)) $((MiB))
quiet "$PLOOP" snapshot -u $S2 $CD
put $CD mch $((15 * MiB + 5)) 5000
verify "our chain of 3" $CD mch
same_listings "our chain of 3" $CD
# The 'current' column last: upstream prints nothing (no blank) for images that are not current.
same_listing "our chain of 3" $CD -o fname,current
cp mch mS3
quiet "$PLOOP" snapshot -u $S3 $CD
put $CD mch 7 70000
check "our snapshot-merge -u (middle)" quiet "$PLOOP" snapshot-merge -u $S2 $CD
verify "our snapshot-merge -u" $CD mch
check "our snapshot-switch -D" quiet "$PLOOP" snapshot-switch -D -u $S3 $CD
cp mS3 mch
verify "our snapshot-switch -D" $CD mch
same_listings "our snapshot-switch -D (two children)" $CD
check "our snapshot-delete of the kept top (leaf)" quiet "$PLOOP" snapshot-delete -u \
	"$(sed -n 's:.*<GUID>\({.*}\)</GUID>.*:\1:p' $CD | sort -u | grep -v -e "$S1" -e "$S2" -e "$S3" -e "$TOPG" | head -1)" $CD
verify "our snapshot-delete leaf" $CD mch
put $CD mch $((8 * MiB)) 12345
check "our grow of a chain (top only)" quiet "$PLOOP" grow -s 40M $CD
truncate -s 40M mch
put $CD mch $((39 * MiB)) 5555
verify "our grow of a chain" $CD mch
same_info "our grow" $CD
check "our convert -v 1" quiet "$PLOOP" convert -v 1 $CD
verify "our convert -v 1" $CD mch
same_info "our convert -v 1" $CD
check "our snapshot-delete of a middle snapshot" quiet "$PLOOP" snapshot-delete -u $S3 $CD
verify "our snapshot-delete middle" $CD mch
check "our convert -v 2" quiet "$PLOOP" convert -v 2 $CD
verify "our convert -v 2" $CD mch
check "our snapshot-merge -A" quiet "$PLOOP" snapshot-merge -A $CD
verify "our snapshot-merge -A" $CD mch
same_listings "our snapshot-merge -A" $CD
check "our grow with BAT relocation (40M -> 260M, 32K clusters)" quiet "$PLOOP" grow -s 260M $CD
truncate -s 260M mch
put $CD mch $((259 * MiB)) 5555
verify "our grow with BAT relocation" $CD mch

# A BAT of two clusters (300M, 32K clusters): an entry in its second cluster written by a merge,
# then every entry rewritten by convert -v. 1.15 rejects BAT clusters left partly unwritten.
mkdir mb
quiet "$PLOOP" init -s 300M -b 64 -t none mb/root.hds
quiet "$PLOOP" snapshot mb/DiskDescriptor.xml
truncate -s 300M mmb
put mb/DiskDescriptor.xml mmb 310000000 4096
check "our snapshot-merge into the second BAT cluster" quiet "$PLOOP" snapshot-merge mb/DiskDescriptor.xml
verify "our snapshot-merge into the second BAT cluster" mb/DiskDescriptor.xml mmb
check "our convert -v 1 of a two-cluster BAT" quiet "$PLOOP" convert -v 1 mb/DiskDescriptor.xml
verify "our convert -v 1 of a two-cluster BAT" mb/DiskDescriptor.xml mmb

mkdir pw
quiet "$PLOOP" init -s 12M -b 256 -t none pw/root.hds
truncate -s 12M mpw
put pw/DiskDescriptor.xml mpw 1000 $((MiB))
check "our convert -f preallocated" quiet "$PLOOP" convert -f preallocated pw/DiskDescriptor.xml
verify "our convert -f preallocated" pw/DiskDescriptor.xml mpw
# A partial write into a preallocated (fallocated, never written) cluster leaves unwritten blocks
# inside that cluster. 1.15's check calls that "sparse" (rc 11) -- for its own preallocated images
# too, which its mount repairs with check -S. So: structurally the image is what 1.15 expects once
# its sparse repair ran on a copy, and our content and check are exact.
put pw/DiskDescriptor.xml mpw $((10 * MiB + 1000)) 5000
same_content "our write into a preallocated cluster: content" pw/DiskDescriptor.xml mpw
we_accept "our write into a preallocated cluster" pw/DiskDescriptor.xml
cp -r pw pw-sparse-repaired
expect_rc "our write into a preallocated cluster: real ploop check -f -S repairs only sparseness" 0 \
	"$ORACLE" check -f -S pw-sparse-repaired/root.hds
oracle_accepts "our write into a preallocated cluster, after 1.15's sparse repair" pw-sparse-repaired/DiskDescriptor.xml
same_content "our write into a preallocated cluster, after 1.15's sparse repair: content" \
	pw-sparse-repaired/DiskDescriptor.xml mpw

# ---- B. the real tool on our images ------------------------------------------------------------------------------------
# B1: snapshot + our write into its new top + its merge.
mkdir B1
BD=B1/DiskDescriptor.xml
quiet "$PLOOP" init -s 20M -b 256 -t none B1/root.hds
truncate -s 20M mB1
put $BD mB1 333 $((2 * MiB))
check "real snapshot of our image" quiet "$ORACLE" snapshot $BD
put $BD mB1 $((MiB + 1)) $((3 * MiB))
verify "real snapshot + our write" $BD mB1
check "real snapshot-merge" quiet "$ORACLE" snapshot-merge $BD
verify "real snapshot-merge" $BD mB1

# B2: a chain of the real tool's snapshots: merge -u middle, delete middle, merge -A, switch.
R1='{dddddddd-0000-4000-8000-000000000001}'
R2='{dddddddd-0000-4000-8000-000000000002}'
R3='{dddddddd-0000-4000-8000-000000000003}'
R4='{dddddddd-0000-4000-8000-000000000004}'
quiet "$ORACLE" snapshot -u $R1 $BD
put $BD mB1 $((5 * MiB - 3)) 100
quiet "$ORACLE" snapshot -u $R2 $BD
cp mB1 mR2
put $BD mB1 $((19 * MiB)) $((MiB))
quiet "$ORACLE" snapshot -u $R3 $BD
put $BD mB1 0 4096
verify "real chain of 4" $BD mB1
same_listings "real chain of 4" $BD
check "real snapshot-merge -u (middle)" quiet "$ORACLE" snapshot-merge -u $R2 $BD
verify "real snapshot-merge -u" $BD mB1
same_content "real snapshot-merge -u: R2 unchanged" $BD mR2 -u $R2
check "real snapshot-delete of a middle snapshot" quiet "$ORACLE" snapshot-delete -u $R2 $BD
verify "real snapshot-delete middle" $BD mB1
quiet "$ORACLE" snapshot -u $R4 $BD
cp mB1 mR4
put $BD mB1 $((10 * MiB)) 77777
check "real snapshot-switch" quiet "$ORACLE" snapshot-switch -u $R4 $BD
cp mR4 mB1
verify "real snapshot-switch" $BD mB1
put $BD mB1 $((10 * MiB + 1)) 77777
check "real snapshot-merge -A" quiet "$ORACLE" snapshot-merge -A $BD
verify "real snapshot-merge -A" $BD mB1
check "real grow of the descriptor" quiet "$ORACLE" grow -s 40M $BD
truncate -s 40M mB1
same_content "real grow: content" $BD mB1
same_info "real grow" $BD
put $BD mB1 $((39 * MiB + 17)) 9999
verify "real grow + our write" $BD mB1

# B3: the real tool grows one of our deltas so far that its BAT must move data clusters.
mkdir B3
quiet "$PLOOP" init -s 16M -b 64 -v 2 -t none B3/root.hds
truncate -s 16M mB3
put B3/root.hds mB3 5 $((3 * MiB))
put B3/root.hds mB3 $((14 * MiB)) 99
check "real grow of our delta (BAT relocation)" quiet "$ORACLE" grow -s 260M B3/root.hds
truncate -s 260M mB3
same_content "real grow of our delta: content" B3/root.hds mB3
expect_rc "real grow of our delta: our check" 0 "$PLOOP" check -f -c -r B3/root.hds

# B4: the real tool converts our chain to v1 and back.
mkdir B4
B4D=B4/DiskDescriptor.xml
quiet "$PLOOP" init -s 12M -b 256 -v 2 -t none B4/root.hds
truncate -s 12M mB4
put $B4D mB4 100 $((2 * MiB))
quiet "$PLOOP" snapshot $B4D
put $B4D mB4 $((MiB + 3)) $((MiB))
check "real convert -v 1 of our chain" quiet "$ORACLE" convert -v 1 $B4D
verify "real convert -v 1" $B4D mB4
put $B4D mB4 $((11 * MiB)) 4321
check "our snapshot-merge of the real tool's v1 chain" quiet "$PLOOP" snapshot-merge $B4D
verify "our merge after real convert" $B4D mB4
check "real convert -v 2" quiet "$ORACLE" convert -v 2 $B4D
verify "real convert -v 2" $B4D mB4

# ---- C. our tool on images the real tool created -------------------------------------------------------------------------
n=0
for spec in "-v 1 -b 64" "-v 2 -b 2048" "-v 2 -b 64" "-v 1 -b 2048 -f preallocated" "-v 2 -b 256 -f preallocated"; do
	n=$((n + 1))
	d=C$n
	dd=$d/DiskDescriptor.xml
	mkdir $d
	# shellcheck disable=SC2086
	if ! quiet "$ORACLE" init -s 12M $spec -t none $d/root.hds; then
		not_ok "real init $spec ($(head -c 300 "$T/.out"))"
		continue
	fi
	truncate -s 12M m$d
	if [ $((n % 2)) = 1 ] && command -v qemu-io >/dev/null; then
		# data written by qemu-io into the single base delta, then the flag qemu leaves is cleared
		head -c 200000 /dev/zero | tr '\0' '\253' >"$T/.chunk"
		quiet qemu-io -f parallels -c "write -P 0xab 4096 200000" $d/root.hds
		dd if="$T/.chunk" of=m$d bs=64K seek=4096 oflag=seek_bytes conv=notrunc status=none
		head -c 70000 /dev/zero | tr '\0' '\315' >"$T/.chunk"
		quiet qemu-io -f parallels -c "write -P 0xcd $((7 * MiB - 512)) 70000" $d/root.hds
		dd if="$T/.chunk" of=m$d bs=64K seek=$((7 * MiB - 512)) oflag=seek_bytes conv=notrunc status=none
		unsparse $d/root.hds
		clear_empty_flag $d/root.hds
		how="qemu-io"
	else
		put $dd m$d 4097 200000
		put $dd m$d $((7 * MiB - 511)) 70000
		how="ploop-io"
	fi
	case "$spec/$how" in
	*preallocated*/ploop-io)
		# Our partial writes land in clusters the real tool fallocated and flagged CIF_Empty
		# (dense copy: the sparse side of this is the "pw" case).
		unsparse $d/root.hds
		verify "real init $spec + $how writes" $dd m$d
		# Carry on from an image the real tool accepts: what its mount-time check -f would repair.
		expect_rc "$d: our check -f (rw) repairs the header" 0 "$PLOOP" check -f $d/root.hds
		verify "$d: repaired" $dd m$d
		;;
	*) verify "real init $spec + $how writes" $dd m$d ;;
	esac
	E1='{eeeeeeee-0000-4000-8000-000000000001}'
	E2='{eeeeeeee-0000-4000-8000-000000000002}'
	E3='{eeeeeeee-0000-4000-8000-000000000003}'
	E4='{eeeeeeee-0000-4000-8000-000000000004}'
	check "$d: our snapshot" quiet "$PLOOP" snapshot -u $E1 $dd
	put $dd m$d $((MiB - 1)) $((MiB + 2))
	verify "$d: our snapshot + write" $dd m$d
	check "$d: our second snapshot" quiet "$PLOOP" snapshot -u $E2 $dd
	put $dd m$d $((11 * MiB + 3)) 1000
	check "$d: our snapshot-merge -u E2 (into the base)" quiet "$PLOOP" snapshot-merge -u $E2 $dd
	verify "$d: our snapshot-merge -u" $dd m$d
	check "$d: our third snapshot" quiet "$PLOOP" snapshot -u $E3 $dd
	put $dd m$d $((5 * MiB)) 300001
	check "$d: our snapshot-delete of a middle snapshot" quiet "$PLOOP" snapshot-delete -u $E3 $dd
	verify "$d: our snapshot-delete" $dd m$d
	quiet "$PLOOP" snapshot -u $E4 $dd
	cp m$d m$d.snap
	put $dd m$d 0 3
	check "$d: our snapshot-switch" quiet "$PLOOP" snapshot-switch -u $E4 $dd
	cp m$d.snap m$d
	verify "$d: our snapshot-switch" $dd m$d
	case $spec in *"-v 1"*) to=2 ;; *) to=1 ;; esac
	check "$d: our convert -v $to" quiet "$PLOOP" convert -v $to $dd
	verify "$d: our convert -v $to" $dd m$d
	check "$d: our snapshot-merge -A" quiet "$PLOOP" snapshot-merge -A $dd
	verify "$d: our snapshot-merge -A" $dd m$d
	# 32K clusters: past 255.5M the BAT needs a second cluster and data clusters must move.
	case $spec in *"-b 64"*) gs=260 ;; *) gs=40 ;; esac
	check "$d: our grow to ${gs}M" quiet "$PLOOP" grow -s ${gs}M $dd
	truncate -s ${gs}M m$d
	verify "$d: our grow" $dd m$d
	put $dd m$d $(((gs - 1) * MiB - 1)) 2
	same_content "$d: write past the old end" $dd m$d
	we_accept "$d: write past the old end" $dd
	# (a partial write into a preallocated cluster is the "pw" case above)
	case $spec in *preallocated*) ;; *) oracle_accepts "$d: write past the old end" $dd ;; esac
	same_listings "$d: final" $dd
done

# Craw: a raw set reshaped by both tools. 1.15's snapshot and snapshot-merge type every image of a
# raw set Plain (any Plain image makes the set raw; the raw file is the base, wherever the
# descriptor lists it); we write Plain for the base only, which 1.15 reads as the same set.
RD=Craw/DiskDescriptor.xml
W1='{abababab-0000-4000-8000-000000000001}'
W2='{abababab-0000-4000-8000-000000000002}'
W3='{abababab-0000-4000-8000-000000000003}'
# verify_raw NAME: our export equals the model; our check of the set and the real check of every
# delta but the raw file accept it.
verify_raw() {
	local f
	same_content "$1: content" $RD mCraw
	expect_rc "$1: our check of the set" 0 "$PLOOP" check $RD
	deltas $RD | while IFS= read -r f; do
		[ "$f" = Craw/d.raw ] ||
			expect_rc "$1: real ploop check -f -c -r ${f##*/}" 0 "$ORACLE" check -f -c -r "$f"
	done
}
# as_upstream [base-last]: every image Plain, as 1.15 writes it; base-last: the raw file's entry last.
as_upstream() {
	sed -i 's:<Type>Compressed</Type>:<Type>Plain</Type>:' $RD
	[ "${1:-}" = base-last ] || return 0
	awk '/<Image>/ { img = $0 "\n"; in_img = 1; next }
	     in_img { img = img $0 "\n"; if (!/<\/Image>/) next
		      in_img = 0; if (img ~ /<File>d\.raw<\/File>/) base = img; else printf "%s", img; next }
	     /<\/Storage>/ { printf "%s", base }
	     { print }' $RD >$RD.new && mv $RD.new $RD
}
mkdir Craw
head -c $((3 * MiB / 2)) /dev/urandom >Craw/d.raw
cp Craw/d.raw mCraw
quiet "$PLOOP" restore-descriptor -f raw Craw Craw/d.raw
check "real snapshot of a raw set" quiet "$ORACLE" snapshot -u $W1 $RD
check "real snapshot of a raw set: it types every image Plain" [ "$(grep -c '<Type>Plain</Type>' $RD)" = 2 ]
put $RD mCraw 1000 5000
same_listings "real snapshot of a raw set" $RD
verify_raw "real snapshot of a raw set"
check "our snapshot of it" quiet "$PLOOP" snapshot -u $W2 $RD
put $RD mCraw $((MiB - 7)) 70000
check "real snapshot of ours" quiet "$ORACLE" snapshot -u $W3 $RD
put $RD mCraw 5 $((MiB / 2))
check "real snapshot-merge -u of a middle snapshot of a raw set" quiet "$ORACLE" snapshot-merge -u $W3 $RD
same_listings "real snapshot-merge -u of a raw set" $RD
same_content "real snapshot-merge -u of a raw set: content" $RD mCraw
# 1.15 leaves CIF_Empty set on the delta it merged into (in its own sets too, raw or not), which its
# check -f clears at mount: carry on from what its mount would see.
deltas $RD | while IFS= read -r f; do [ "$f" = Craw/d.raw ] || quiet "$ORACLE" check -f "$f"; done
verify_raw "real snapshot-merge -u of a raw set"
as_upstream base-last
check "raw set, base listed last: as written" [ "$(deltas $RD | tail -1)" = Craw/d.raw ]
same_listings "raw set, base listed last" $RD
verify_raw "raw set, base listed last"
check "our convert -v 1 of a raw set, base listed last" quiet "$PLOOP" convert -v 1 $RD
verify_raw "our convert -v 1 of a raw set"
check "our snapshot of a raw set, base listed last" quiet "$PLOOP" snapshot $RD
put $RD mCraw $((MiB + 3)) 4000
verify_raw "our snapshot of a raw set, base listed last"
same_listings "our snapshot of a raw set, base listed last" $RD
as_upstream
check "our snapshot-merge -A into the raw file" quiet "$PLOOP" snapshot-merge -A $RD
check "our snapshot-merge -A: the raw file holds the disk" cmp -s Craw/d.raw mCraw
same_listings "our snapshot-merge -A of a raw set" $RD
expect_rc "our snapshot-merge -A: real ploop check -R of the raw file" 0 "$ORACLE" check -R -b 1024 Craw/d.raw
check "real snapshot of our merged raw set" quiet "$ORACLE" snapshot $RD
put $RD mCraw 77 7777
verify_raw "real snapshot of our merged raw set"

# ---- D. descriptors, deltas and exit codes as upstream's --------------------------------------------------------------------
n=0
for spec in "-s 20M" "-s 100M -b 64" "-s 1G -b 64" "-s 10001K" "-s 64M -v 1" "-s 64M -v 1 -b 256" \
	"-s 2T" "-s 16M -f preallocated" "-s 16M -v 1 -b 64 -f preallocated" "-s 8M -f raw" "-s 5000 -b 128" \
	"-s 4294965248 -v 1"; do
	n=$((n + 1))
	mkdir D$n D$n/ours D$n/real
	# shellcheck disable=SC2086
	quiet "$PLOOP" init $spec -t none D$n/ours/root.hds
	# shellcheck disable=SC2086
	quiet "$ORACLE" init $spec -t none D$n/real/root.hds
	if cmp -s D$n/ours/DiskDescriptor.xml D$n/real/DiskDescriptor.xml; then ok "init $spec: DiskDescriptor.xml as upstream's"; else
		not_ok "init $spec: DiskDescriptor.xml differs: $(diff D$n/real/DiskDescriptor.xml D$n/ours/DiskDescriptor.xml | grep '^[<>]' | head -4 | tr '\n' ' ')"
	fi
	check "init $spec: delta byte-identical to upstream's" cmp -s D$n/ours/root.hds D$n/real/root.hds
	rm -rf D$n
done

# v1 at its limit (§1.3: 2^32-1 sectors, here 2097151 clusters of 1 MiB): what a grow or a
# conversion reaches, a snapshot creates too, as 1.15 does.
mkdir V1 V1r V2
quiet "$PLOOP" init -s 1G -v 1 -t none V1/root.hds
cp V1/root.hds V1/DiskDescriptor.xml V1r/
check "our grow of v1 to 2097151M" quiet "$PLOOP" grow -s 2097151M V1/DiskDescriptor.xml
check "real grow of v1 to 2097151M" quiet "$ORACLE" grow -s 2097151M V1r/DiskDescriptor.xml
check "grow of v1 to 2097151M: delta as upstream's" cmp -s V1/root.hds V1r/root.hds
check "our snapshot of a v1 image at its limit" quiet "$PLOOP" snapshot V1/DiskDescriptor.xml
check "real snapshot of a v1 image at its limit" quiet "$ORACLE" snapshot V1r/DiskDescriptor.xml
oracle_accepts "our snapshot of a v1 image at its limit" V1/DiskDescriptor.xml
same_listings "our snapshot of a v1 image at its limit" V1/DiskDescriptor.xml
quiet "$PLOOP" init -s 2097151M -v 2 -t none V2/root.hds
check "our convert -v 1 at the v1 limit" quiet "$PLOOP" convert -v 1 V2/DiskDescriptor.xml
check "our snapshot after convert -v 1 at the limit" quiet "$PLOOP" snapshot V2/DiskDescriptor.xml
oracle_accepts "our snapshot after convert -v 1 at the limit" V2/DiskDescriptor.xml
rm -rf V1 V1r V2

# restore-descriptor writes what upstream's writes.
mkdir E1 E2 E3 E4
quiet "$PLOOP" init -s 24M -b 128 -v 1 -t none E1/x.hds
cp E1/x.hds E2/x.hds
rm E1/DiskDescriptor.xml
quiet "$PLOOP" restore-descriptor E1 E1/x.hds
quiet "$ORACLE" restore-descriptor E2 E2/x.hds
check "restore-descriptor: DiskDescriptor.xml as upstream's" cmp -s E1/DiskDescriptor.xml E2/DiskDescriptor.xml
head -c $((3 * MiB / 2)) /dev/urandom >E3/d.raw
cp E3/d.raw E4/d.raw
quiet "$PLOOP" restore-descriptor -f raw E3 E3/d.raw
quiet "$ORACLE" restore-descriptor -f raw E4 E4/d.raw
check "restore-descriptor -f raw: DiskDescriptor.xml as upstream's" cmp -s E3/DiskDescriptor.xml E4/DiskDescriptor.xml

# Error exit codes (and the resulting image set) of both tools on copies of one chain.
mkdir X
XD=X/DiskDescriptor.xml
X1='{ffffffff-0000-4000-8000-000000000001}'
X2='{ffffffff-0000-4000-8000-000000000002}'
NOPE='{12345678-1234-4234-8234-123456789abc}'
quiet "$PLOOP" init -s 8M -b 256 -t none X/r.hds
truncate -s 8M mX
put $XD mX 1 $((MiB))
quiet "$PLOOP" snapshot -u $X1 $XD
put $XD mX $((MiB / 2)) $((MiB))
quiet "$PLOOP" snapshot -u $X2 $XD
put $XD mX $((7 * MiB)) 100
while IFS= read -r c; do
	rm -rf Xo Xp
	cp -a X Xo
	cp -a X Xp
	# shellcheck disable=SC2086
	"$ORACLE" $c Xo/DiskDescriptor.xml >/dev/null 2>&1
	orc=$?
	# shellcheck disable=SC2086
	"$PLOOP" $c Xp/DiskDescriptor.xml >/dev/null 2>"$T/.err"
	prc=$?
	if [ $orc = $prc ]; then ok "exit code as upstream: $c ($prc)"; else
		not_ok "exit code of '$c': $prc, upstream $orc ($(head -c 200 "$T/.err"))"
	fi
	if [ $orc = 0 ] && [ $prc = 0 ]; then
		# both changed the set: same content, same shape
		rm -f "$T/o.raw" "$T/p.raw"
		"$PLOOP" export Xo/DiskDescriptor.xml "$T/o.raw" 2>/dev/null
		"$PLOOP" export Xp/DiskDescriptor.xml "$T/p.raw" 2>/dev/null
		check "same result as upstream: $c" cmp -s "$T/o.raw" "$T/p.raw"
	fi
done <<EOF
snapshot-delete -u $X1
snapshot-delete -u $NOPE
snapshot-merge -u $X1
snapshot-merge -u $NOPE
snapshot-switch -u $TOPG
snapshot-switch -u $NOPE
snapshot -u $X1
snapshot -u not-a-guid
grow -s 4M
convert -v 3
snapshot-list -u $NOPE
snapshot-delete -u $TOPG
EOF
rm -rf Xo Xp

# A raw image that ends in a partial cluster: check -R notes it and accepts it, as 1.15 does; no set
# is made of it (restore-descriptor refuses it with 38, as 1.15 does: the disk of a set is a whole
# number of clusters).
mkdir P
head -c 1500160 /dev/urandom >P/part.raw
cp P/part.raw mP
for o in "-R -b 2048" "-R -f -b 2048" "-R -r -f -b 2048" "-R -F -b 2048"; do
	# shellcheck disable=SC2086
	"$ORACLE" check $o P/part.raw >/dev/null 2>&1
	orc=$?
	# shellcheck disable=SC2086
	"$PLOOP" check $o P/part.raw >/dev/null 2>"$T/.err"
	prc=$?
	if [ $orc = $prc ]; then ok "exit code as upstream: check $o of a raw image with a partial cluster ($prc)"; else
		not_ok "exit code of 'check $o' of a raw image with a partial cluster: $prc, upstream $orc ($(head -c 200 "$T/.err"))"
	fi
done
check "check -R of a raw image with a partial cluster: unchanged" cmp -s P/part.raw mP
mkdir Pq
cp P/part.raw Pq/part.raw
"$ORACLE" restore-descriptor -f raw -b 2048 Pq Pq/part.raw >/dev/null 2>&1
orc=$?
"$PLOOP" restore-descriptor -f raw -b 2048 P P/part.raw >/dev/null 2>"$T/.err"
prc=$?
if [ $orc = 38 ] && [ $prc = 38 ]; then ok "restore-descriptor of a raw image with a partial cluster: refused (38), as upstream"; else
	not_ok "restore-descriptor of a raw image with a partial cluster: exit $prc, upstream $orc ($(head -c 200 "$T/.err"))"
fi
check "... no descriptor made" test ! -e P/DiskDescriptor.xml

finish
