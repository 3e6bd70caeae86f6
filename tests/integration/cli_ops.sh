#!/usr/bin/env bash
# End-to-end semantics of the ploop CLI against a model: a raw file kept in step with every write
# (dd conv=notrunc). After each step the virtual disk (`ploop export`) must equal the model and every
# delta must pass `ploop check -f -c -r`.
# runner: isolated (touches nothing another test looks at: tests/run may run it beside them)
source "$(dirname "$0")/../lib.sh"

MiB=1048576
TOPG='{5fbaabe3-6958-40ff-92a7-860e329aab41}'
NONEG='{00000000-0000-0000-0000-000000000000}'

# put IMAGE MODEL OFFSET LENGTH: LENGTH random bytes at OFFSET, written through libploop into IMAGE
# (a DiskDescriptor.xml: its top) and into the raw MODEL. Reports only a failure.
put() {
	head -c "$4" /dev/urandom >"$T/.chunk"
	if ! "$PLOOP_IO" write "$1" "$3" <"$T/.chunk" 2>"$T/.err"; then
		not_ok "write $4 bytes at $3 into $1: $(head -c 300 "$T/.err")"
		return 1
	fi
	dd if="$T/.chunk" of="$2" bs=64K seek="$3" oflag=seek_bytes conv=notrunc status=none
}

# deltas DD: the image files a DiskDescriptor.xml names, as paths.
deltas() {
	local dir f
	dir=$(dirname "$1")
	sed -n 's:.*<File>\(.*\)</File>.*:\1:p' "$1" | while IFS= read -r f; do
		case $f in /*) echo "$f" ;; *) echo "$dir/$f" ;; esac
	done
}

# same_content NAME SOURCE MODEL [EXPORT OPTIONS]: `ploop export SOURCE` equals MODEL byte for byte.
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
		not_ok "$name ($(cmp "$out" "$model" 2>&1 | head -1); size $(stat -c %s "$out") vs model $(stat -c %s "$model"))"
	fi
}

# checked NAME DD: `ploop check -f -c -r` accepts every delta of DD (a raw base: -R -b BLOCKSIZE),
# and so does Debian's real one (1.15), when installed, every ploop delta. With SPARSE_OK=1 its one
# complaint may be "sparse": a preallocated (fallocated) cluster written in part, as its own
# preallocated images are (its mount repairs that with check -S; interop_oracle shows the repair).
HAVE_ORACLE=$(have_oracle && echo 1)
export PLOOP_ORACLE_LOCKDIR="$T/.oracle-lock"
checked() {
	local name=$1 dd=$2 f bad="" rc bs
	bs=$(sed -n 's:.*<Blocksize>\(.*\)</Blocksize>.*:\1:p' "$dd")
	while IFS= read -r f; do
		if [ "$(head -c 4 "$f" | tr -d '\0')" = "With" ]; then
			"$PLOOP" check -f -c -r "$f" >"$T/.ck" 2>&1
			rc=$?
			if [ $rc = 0 ] && [ -n "$HAVE_ORACLE" ]; then
				"$ORACLE" check -f -c -r "$f" >"$T/.ck" 2>&1
				rc=$?
				if [ $rc = 11 ] && [ -n "${SPARSE_OK:-}" ] &&
					[ "$(grep -vc 'check_and_repair_sparse\|fill_hole\|is sparse' "$T/.ck")" = 0 ]; then
					rc=0
				fi
				[ $rc = 0 ] || bad="$bad ${f##*/} (real ploop check exit $rc: $(tr '\n' ' ' <"$T/.ck" | head -c 200))"
				continue
			fi
		else
			"$PLOOP" check -R -b "$bs" -f -r "$f" >"$T/.ck" 2>&1
			rc=$?
		fi
		[ $rc = 0 ] || bad="$bad ${f##*/} (exit $rc: $(tr '\n' ' ' <"$T/.ck" | head -c 200))"
	done < <(deltas "$dd")
	if [ -z "$bad" ]; then ok "$name"; else not_ok "$name:$bad"; fi
}

# verify NAME DD MODEL: content equals the model, every delta is consistent.
verify() {
	same_content "$1: content" "$2" "$3"
	checked "$1: check every delta" "$2"
}

# shots DD: "GUID PARENT" per snapshot, from the XML; parent_of DD GUID: its parent.
shots() {
	tr -d ' \n' <"$1" | grep -o '<Shot>[^S]*</Shot>' |
		sed 's:<Shot><GUID>\([^<]*\)</GUID><ParentGUID>\([^<]*\)</ParentGUID>.*:\1 \2:'
}
parent_of() { shots "$1" | awk -v g="$2" 'tolower($1) == tolower(g) { print $2 }'; }
# nfiles GLOB-EXPANSION...: how many of the arguments exist.
nfiles() {
	local f n=0
	for f in "$@"; do [ -e "$f" ] && n=$((n + 1)); done
	echo $n
}
# quiet CMD...: runs a ploop command, keeping its output for failure messages.
quiet() { "$@" >"$T/.out" 2>&1; }

# ---- snapshot tree ---------------------------------------------------------------------------------------
mkdir A
DD=A/DiskDescriptor.xml
S1='{aaaaaaaa-0000-4000-8000-000000000001}'
check "init -s 16M -b 256" quiet "$PLOOP" init -s 16M -b 256 -t none A/root.hds
truncate -s 16M mA
put "$DD" mA 12345 300000
put "$DD" mA $((9 * MiB - 7)) 70000
verify "init + unaligned writes" "$DD" mA

out=$("$PLOOP" snapshot -u "$S1" "$DD" 2>&1)
check "snapshot -u prints the new GUID" grep -q "ploop snapshot $S1 has been successfully created" <<<"$out"
cp mA m_S1
check "snapshot -u: the old top got the GUID, the base file stays" test "$(parent_of "$DD" "$TOPG")" = "$S1"
check "snapshot -u: the snapshot is the base" test "$(parent_of "$DD" "$S1")" = "$NONEG"
check "snapshot: new top file is root.hds.{uuid} with a uuid of its own" \
	bash -c "ls A | grep -E '^root\.hds\.\{[0-9a-f-]{36}\}$' | grep -vqi '${S1:1:36}'"
check "snapshot: XML TopGUID is the fixed top GUID" grep -q "<TopGUID>$TOPG</TopGUID>" "$DD"
put "$DD" mA 200000 400000
put "$DD" mA $((16 * MiB - 1000)) 1000
verify "snapshot + writes (copy-on-write of partial clusters)" "$DD" mA

out=$("$PLOOP" snapshot "$DD" 2>&1)
S2=$(sed -n 's/^ploop snapshot \({[0-9a-f-]*}\) has been successfully created$/\1/p' <<<"$out")
check "snapshot without -u makes a random GUID" test -n "$S2"
cp mA m_S2
put "$DD" mA $((4 * MiB + 3)) $((MiB + 5))
verify "second snapshot + writes" "$DD" mA
same_content "export -u S1 is the disk at the first snapshot" "$DD" m_S1 -u "$S1"
same_content "export -u S2 is the disk at the second snapshot" "$DD" m_S2 -u "$S2"
expect_rc "export -u unknown GUID: no such snapshot" 43 "$PLOOP" export -u '{12345678-1234-1234-1234-123456789abc}' "$DD" "$T/nothing"

# snapshot-list: upstream's fixed-width layout (38/1/38/32), descriptor order, '*' marks the current image.
adir=$(cd A && pwd -P)
f_base="$adir/root.hds"
f_s2=$(deltas "$DD" | sed -n 2p)
f_s2="$adir/${f_s2##*/}"
f_top=$(deltas "$DD" | sed -n 3p)
f_top="$adir/${f_top##*/}"
hdr=$(printf '%-38s %-1s %-38s %-32s ' PARENT_UUID C UUID FNAME)
row() { printf '%-38s %-1s %-38s %s' "$1" "$2" "$3" "$4"; }
want=$(printf '%s\n%s\n%s\n%s' "$hdr" "$(row "$NONEG" "" "$S1" "$f_base")" "$(row "$S1" "" "$S2" "$f_s2")" \
	"$(row "$S2" '*' "$TOPG" "$f_top")")
check "snapshot-list: default columns" test "$("$PLOOP" snapshot-list "$DD")" = "$want"
check "snapshot-list -H: no header" test "$("$PLOOP" snapshot-list -H "$DD")" = "$(tail -n +2 <<<"$want")"
want=$(printf '%s\n%s\n%s' "$hdr" "$(row "$NONEG" "" "$S1" "$f_base")" "$(row "$S1" '*' "$S2" "$f_s2")")
check "snapshot-list -s: top hidden, its parent current" test "$("$PLOOP" snapshot-list -s "$DD")" = "$want"
want=$(printf '%s\n%s\n%s' "$hdr" "$(row "$S1" "" "$S2" "$f_s2")" "$(row "$NONEG" "" "$S1" "$f_base")")
check "snapshot-list -u S2: the chain from S2 down to the base" test "$("$PLOOP" snapshot-list -u "$S2" "$DD")" = "$want"
want=$(printf '%-38s \n%s\n%s\n%s' UUID "$S1" "$S2" "$TOPG")
check "snapshot-list -o uuid" test "$("$PLOOP" snapshot-list -o uuid "$DD")" = "$want"
want=$(printf '%-1s %-38s \n%-1s %s\n%-1s %s\n%-1s %s' C UUID "" "$S1" "" "$S2" '*' "$TOPG")
check "snapshot-list -o current,uuid" test "$("$PLOOP" snapshot-list -o current,uuid "$DD")" = "$want"
want=$(printf '%-38s %-1s \n%-38s \n%-38s \n%-38s *' UUID C "$S1" "$S2" "$TOPG")
check "snapshot-list -o uuid,current: empty last column as upstream (no trailing blank)" \
	test "$("$PLOOP" snapshot-list -o uuid,current "$DD")" = "$want"
expect_rc "snapshot-list -o with an unknown field: 1, as upstream" 1 "$PLOOP" snapshot-list -o uuid,size "$DD"

# merge the top into its parent: the survivor keeps the child's GUID and the parent's file.
cp "$DD" dd.before
check "snapshot-merge (top into its parent)" quiet "$PLOOP" snapshot-merge "$DD"
check "snapshot-merge: parent GUID gone, top now on the parent's file" \
	test "$(grep -c "$S2" "$DD")" = 0 -a "$(deltas "$DD" | tail -1)" = "A/${f_s2##*/}"
check "snapshot-merge: the child's file is removed" test ! -e "$f_top"
check "snapshot-merge: two images left" test "$(deltas "$DD" | wc -l)" = 2
verify "snapshot-merge" "$DD" mA
same_content "snapshot-merge: lower snapshot unchanged" "$DD" m_S1 -u "$S1"

S3='{aaaaaaaa-0000-4000-8000-000000000003}'
S4='{aaaaaaaa-0000-4000-8000-000000000004}'
quiet "$PLOOP" snapshot -u "$S3" "$DD"
cp mA m_S3
put "$DD" mA $((2 * MiB - 100)) 200
quiet "$PLOOP" snapshot -u "$S4" "$DD"
cp mA m_S4
put "$DD" mA $((2 * MiB + 1)) $((3 * MiB))
verify "four-level chain" "$DD" mA
check "snapshot-merge -u S4 (middle into its parent)" quiet "$PLOOP" snapshot-merge -u "$S4" "$DD"
check "snapshot-merge -u: S3 is gone, S4 now has S1 as parent" test "$(parent_of "$DD" "$S4")" = "$S1"
check "snapshot-merge -u: the top still sits on S4" test "$(parent_of "$DD" "$TOPG")" = "$S4"
verify "snapshot-merge -u middle" "$DD" mA
same_content "snapshot-merge -u: S4 keeps its content" "$DD" m_S4 -u "$S4"
cp "$DD" dd.before
expect_rc "snapshot-merge -u of the base is refused" 38 "$PLOOP" snapshot-merge -u "$S1" "$DD"
check "refused merge leaves the descriptor alone" cmp -s "$DD" dd.before
check "snapshot-merge -A (everything into the base)" quiet "$PLOOP" snapshot-merge -A "$DD"
check "snapshot-merge -A: a single image on the base file" \
	test "$(deltas "$DD")" = "A/root.hds" -a "$(nfiles A/root.hds*)" = 1
check "snapshot-merge -A: only the top GUID is left" test "$(shots "$DD")" = "$TOPG $NONEG"
verify "snapshot-merge -A" "$DD" mA

# ---- snapshot-delete --------------------------------------------------------------------------------------
cp "$DD" dd.before
expect_rc "snapshot-delete of the only (base) image is refused" 38 "$PLOOP" snapshot-delete -u "$TOPG" "$DD"
check "refused delete leaves the descriptor alone" cmp -s "$DD" dd.before
expect_rc "snapshot-delete of an unknown GUID" 43 "$PLOOP" snapshot-delete -u '{12345678-1234-1234-1234-123456789abc}' "$DD"
S5='{aaaaaaaa-0000-4000-8000-000000000005}'
S6='{aaaaaaaa-0000-4000-8000-000000000006}'
S7='{aaaaaaaa-0000-4000-8000-000000000007}'
quiet "$PLOOP" snapshot -u "$S5" "$DD"
cp mA m_S5
put "$DD" mA 777 5000
quiet "$PLOOP" snapshot -u "$S6" "$DD"
put "$DD" mA $((MiB / 2 + 17)) $((MiB / 2))
check "snapshot-delete of a middle snapshot (merges its only child into it)" quiet "$PLOOP" snapshot-delete -u "$S6" "$DD"
check "snapshot-delete middle: S6 is gone, the top sits on S5" \
	test "$(parent_of "$DD" "$TOPG")" = "$S5" -a "$(deltas "$DD" | wc -l)" = 2
verify "snapshot-delete middle" "$DD" mA
same_content "snapshot-delete middle: S5 unchanged" "$DD" m_S5 -u "$S5"
quiet "$PLOOP" snapshot -u "$S7" "$DD"
cp mA m_S7
top_file=$(deltas "$DD" | tail -1)
put "$DD" mA 0 100000
check "snapshot-delete of the top leaf" quiet "$PLOOP" snapshot-delete -u "$TOPG" "$DD"
cp m_S7 mA
check "snapshot-delete top: its file is removed, its parent becomes the top" \
	test ! -e "$top_file" -a "$(parent_of "$DD" "$TOPG")" = "$S5" -a "$(deltas "$DD" | wc -l)" = 2
verify "snapshot-delete top (its writes are gone)" "$DD" mA

# A snapshot with two children: marked temporary, merged once one child is gone.
S8='{aaaaaaaa-0000-4000-8000-000000000008}'
quiet "$PLOOP" snapshot -u "$S8" "$DD"
cp mA m_S8
put "$DD" mA $((3 * MiB)) 65536
cp mA m_K
check "snapshot-switch -D keeps the old top" quiet "$PLOOP" snapshot-switch -D -u "$S8" "$DD"
K=$(shots "$DD" | awk -v p="$S8" -v t="$TOPG" '$2 == p && $1 != t { print $1 }')
check "snapshot-switch -D: the old top is a snapshot of S8 with a new GUID" test -n "$K"
check "snapshot-switch -D: S8 has two children" test "$(shots "$DD" | awk -v p="$S8" '$2 == p' | wc -l)" = 2
cp m_S8 mA
verify "snapshot-switch -D: the disk is S8 again" "$DD" mA
same_content "snapshot-switch -D: the kept top has the pre-switch content" "$DD" m_K -u "$K"
put "$DD" mA $((5 * MiB + 99)) 4000
out=$("$PLOOP" snapshot-delete -u "$S8" "$DD" 2>&1)
check "snapshot-delete of a snapshot with two children succeeds" test $? = 0
check "snapshot-delete with two children: marked <Temporary/>" \
	bash -c "tr -d ' \n' <'$DD' | grep -q '<GUID>$S8</GUID><ParentGUID>$S5</ParentGUID><Temporary/>'"
verify "snapshot-delete with two children: content unchanged" "$DD" mA
check "... says it is marked temporary, not that it is deleted" \
	bash -c "echo '$out' | grep -q 'marked temporary' && ! echo '$out' | grep -q 'successfully deleted'"
cp "$DD" dd.before
one_line "snapshot-delete of a snapshot already marked temporary: exit 1, as 1.15" 1 "$PLOOP" snapshot-delete -u "$S8" "$DD"
check "... and the descriptor is unchanged" cmp -s "$DD" dd.before
same_content "snapshot-delete with two children: the other child unchanged" "$DD" m_K -u "$K"
check "snapshot-delete of the other child" quiet "$PLOOP" snapshot-delete -u "$K" "$DD"
verify "after the other child is gone" "$DD" mA
S9='{aaaaaaaa-0000-4000-8000-000000000009}'
check "next operation (snapshot) runs" quiet "$PLOOP" snapshot -u "$S9" "$DD"
check "the temporary snapshot has been merged away" \
	bash -c "! grep -q '$S8' '$DD' && ! grep -q Temporary '$DD' && test \$(grep -c '<Image>' '$DD') = 3"
verify "temporary snapshot merged" "$DD" mA

# ---- snapshot-switch ----------------------------------------------------------------------------------------
cp mA m_S9
put "$DD" mA 123 456789
old_top=$(deltas "$DD" | tail -1)
check "snapshot-switch -u S5" quiet "$PLOOP" snapshot-switch -u "$S5" "$DD"
cp m_S5 mA
check "snapshot-switch: the old top file is removed, a new empty top sits on S5" \
	test ! -e "$old_top" -a "$(parent_of "$DD" "$TOPG")" = "$S5" -a "$(deltas "$DD" | wc -l)" = 3
verify "snapshot-switch" "$DD" mA
same_content "snapshot-switch: S9 is still there" "$DD" m_S9 -u "$S9"
expect_rc "snapshot-switch to the current top is refused" 38 "$PLOOP" snapshot-switch -u "$TOPG" "$DD"
check "snapshot-switch back to S9" quiet "$PLOOP" snapshot-switch -u "$S9" "$DD"
cp m_S9 mA
verify "snapshot-switch back" "$DD" mA

# ---- grow ------------------------------------------------------------------------------------------------------
mkdir G
GD=G/DiskDescriptor.xml
quiet "$PLOOP" init -s 16M -b 64 -t none G/root.hds
truncate -s 16M mG
put "$GD" mG 40000 100000
put "$GD" mG $((15 * MiB + 3)) 20000
verify "grow setup (32K clusters)" "$GD" mG
# 16M -> 300M with 32 KiB clusters needs a second BAT cluster: data clusters there must move.
check "grow -s 300M DiskDescriptor.xml" quiet "$PLOOP" grow -s 300M "$GD"
truncate -s 300M mG
check "grow: Disk_size and End updated" \
	bash -c "grep -q '<Disk_size>614400</Disk_size>' '$GD' && grep -q '<End>614400</End>' '$GD'"
check "grow: geometry consistent (Sectors = Disk_size / (Cylinders*Heads))" bash -c "
	c=\$(sed -n 's:.*<Cylinders>\(.*\)</Cylinders>.*:\1:p' '$GD'); h=\$(sed -n 's:.*<Heads>\(.*\)</Heads>.*:\1:p' '$GD')
	s=\$(sed -n 's:.*<Sectors>\(.*\)</Sectors>.*:\1:p' '$GD'); test \$((614400 / (c * h))) = \$s"
check "grow: info -s shows the new size" bash -c "'$PLOOP' info -s '$GD' | grep -qx 'size:		614400'"
verify "grow with BAT relocation" "$GD" mG
put "$GD" mG $((299 * MiB + 11)) 70000
verify "write past the old end" "$GD" mG
quiet "$PLOOP" snapshot "$GD"
check "grow with a snapshot" quiet "$PLOOP" grow -s 310M "$GD"
truncate -s 310M mG
put "$GD" mG $((309 * MiB)) $((MiB))
verify "grow of the top delta only" "$GD" mG
check "merge of a bigger top into a smaller base" quiet "$PLOOP" snapshot-merge "$GD"
verify "merge grows the base" "$GD" mG
cp "$GD" dd.before
expect_rc "grow to a smaller size is refused" 38 "$PLOOP" grow -s 100M "$GD"
check "refused grow leaves the descriptor alone" cmp -s "$GD" dd.before

# a switch rolls back a grow made since the snapshot: the new top is as large as the snapshot
mkdir G3
G3D=G3/DiskDescriptor.xml
quiet "$PLOOP" init -s 8M -b 64 -t none G3/root.hds
truncate -s 8M mG3
put "$G3D" mG3 1000 100000
G3S='{aaaaaaaa-0000-4000-8000-0000000000a3}'
quiet "$PLOOP" snapshot -u "$G3S" "$G3D"
check "grow after a snapshot" quiet "$PLOOP" grow -s 16M "$G3D"
check "snapshot-switch to the snapshot taken before the grow" quiet "$PLOOP" snapshot-switch -u "$G3S" "$G3D"
check "switch: the disk is 8M again (info -s, Disk_size)" bash -c "'$PLOOP' info -s '$G3D' | grep -qx 'size:		16384' && grep -q '<Disk_size>16384</Disk_size>' '$G3D'"
verify "switch: the disk is the snapshot" "$G3D" mG3

mkdir G2
quiet "$PLOOP" init -s 8M -b 64 -v 1 -t none G2/one.hds
truncate -s 8M mG2
put G2/one.hds mG2 32768 99999
check "grow -s 280M of a single delta file (v1)" quiet "$PLOOP" grow -s 280M G2/one.hds
truncate -s 280M mG2
same_content "grow of a delta file: content kept" G2/one.hds mG2
expect_rc "grow of a delta file: check -f -c -r" 0 "$PLOOP" check -f -c -r G2/one.hds
check "grow of a delta file: header size" bash -c "
	test \$(od -An -tu4 -j36 -N4 G2/one.hds | tr -d ' ') = 573440"
# -f raw is for a raw image file. A descriptor or a ploop delta given with it was grown as a raw
# file: zeros appended, the descriptor then too large to read (exit 39 for good), the delta's
# header not knowing them.
for f in "$GD" G2/one.hds; do
	cp "$f" "$T/.before"
	one_line "grow -f raw of ${f##*/} is refused (exit 38)" 38 "$PLOOP" grow -f raw -s 400M "$f"
	check "... and ${f##*/} is unchanged" cmp -s "$f" "$T/.before"
done
head -c 100000 /dev/urandom >G2/disk.raw
cp G2/disk.raw mG3
truncate -s 4M mG3
check "grow -f raw of a raw image file" quiet "$PLOOP" grow -f raw -s 4M G2/disk.raw
check "... the file is the disk, grown with zeros" cmp -s G2/disk.raw mG3

# ---- convert -v ------------------------------------------------------------------------------------------------
mkdir C
CD=C/DiskDescriptor.xml
quiet "$PLOOP" init -s 24M -b 128 -t none C/root.hds
truncate -s 24M mC
put "$CD" mC 1000 $((3 * MiB))
quiet "$PLOOP" snapshot "$CD"
put "$CD" mC $((10 * MiB - 9)) 300000
quiet "$PLOOP" snapshot "$CD"
put "$CD" mC $((MiB + 1)) 1000
for f in $(deltas "$CD"); do cp "$f" "$f.orig"; done
check "convert -v 1" quiet "$PLOOP" convert -v 1 "$CD"
check "convert -v 1: every delta has the v1 signature" bash -c "
	for f in \$(sed -n 's:.*<File>\(.*\)</File>.*:C/\1:p' '$CD'); do test \"\$(head -c 16 \"\$f\")\" = WithoutFreeSpace || exit 1; done"
check "convert -v 1: info -s says version 1" bash -c "'$PLOOP' info -s '$CD' | grep -qx 'fmt_version:	1'"
check "convert: no .idx backups left" test "$(nfiles C/*.idx)" = 0
verify "convert -v 1" "$CD" mC
check "convert -v 2" quiet "$PLOOP" convert -v 2 "$CD"
check "convert -v 2: every delta has the v2 signature" bash -c "
	for f in \$(sed -n 's:.*<File>\(.*\)</File>.*:C/\1:p' '$CD'); do test \"\$(head -c 16 \"\$f\")\" = WithouFreSpacExt || exit 1; done"
verify "convert -v 2" "$CD" mC
check "convert v2 -> v1 -> v2 gives back the same files" bash -c "
	for f in \$(sed -n 's:.*<File>\(.*\)</File>.*:C/\1:p' '$CD'); do cmp -s \"\$f\" \"\$f.orig\" || exit 1; done"
rm -f C/*.orig
# A conversion killed once its .idx backup and the flag were written: commands that read refuse it
# (17) and name `ploop check DiskDescriptor.xml`, which rolls it back from the backup.
mkdir CV
quiet "$PLOOP" init -s 8M -t none CV/root.hds
truncate -s 8M mCV
put CV/DiskDescriptor.xml mCV 0 $((3 * MiB))
head -c $MiB CV/root.hds >CV/root.hds.idx
printf 'Ynot' | dd of=CV/root.hds bs=1 seek=44 conv=notrunc status=none	# m_DiskInUse
printf '\2\0\0\0' | dd of=CV/root.hds bs=1 seek=52 conv=notrunc status=none	# CIF_FmtVersionConvert
expect_rc "interrupted convert -v: export refused (17)" 17 "$PLOOP" export CV/DiskDescriptor.xml "$T/cv.raw"
check "... naming ploop check DiskDescriptor.xml" grep -q "run ploop check DiskDescriptor.xml" "$T/.stderr"
expect_rc "... check -r of DiskDescriptor.xml only reports it (17)" 17 "$PLOOP" check -r CV/DiskDescriptor.xml
expect_rc "... check of DiskDescriptor.xml rolls it back" 0 "$PLOOP" check CV/DiskDescriptor.xml
check "... the .idx backup is gone" test ! -e CV/root.hds.idx
verify "interrupted convert -v, rolled back by check" CV/DiskDescriptor.xml mCV

# ---- convert -f preallocated / raw --------------------------------------------------------------------------------
quiet "$PLOOP" snapshot-merge -A "$CD"
check "convert -f preallocated" quiet "$PLOOP" convert -f preallocated "$CD"
check "convert -f preallocated: <Preallocated>1</Preallocated>" grep -q '<Preallocated>1</Preallocated>' "$CD"
check "convert -f preallocated: every cluster allocated" python3 -c "
import json, subprocess, sys
m = json.loads(subprocess.run([sys.argv[1], 'map', '-j', sys.argv[2]], capture_output=True, check=True).stdout)
sys.exit(not (m and all(e['data'] for e in m) and sum(e['length'] for e in m) == 24 << 20))" "$PLOOP" "$CD"
check "convert -f preallocated: file holds header + every cluster" \
	test "$(stat -c %s C/root.hds)" = $((24 * MiB + 65536))
verify "convert -f preallocated" "$CD" mC
put "$CD" mC $((20 * MiB + 5)) 12345
SPARSE_OK=1 verify "write into a preallocated image" "$CD" mC
check "convert -f raw" quiet "$PLOOP" convert -f raw "$CD"
check "convert -f raw: Type Plain, same file name" \
	bash -c "grep -q '<Type>Plain</Type>' '$CD' && grep -q '<File>root.hds</File>' '$CD' && ! grep -q Compressed '$CD'"
check "convert -f raw: the file is the disk" cmp -s C/root.hds mC
verify "convert -f raw" "$CD" mC
sha_c=$(sha C/root.hds)
one_line "convert -v 1 of a raw image alone is refused (38): it has no format version" 38 "$PLOOP" convert -v 1 "$CD"
check "... and the image is unchanged" test "$(sha C/root.hds)" = "$sha_c"
quiet "$PLOOP" snapshot "$CD"
put "$CD" mC $((7 * MiB + 1)) $((MiB))
verify "snapshot over a raw base" "$CD" mC
check "snapshot-merge into a raw base" quiet "$PLOOP" snapshot-merge "$CD"
check "snapshot-merge into raw: the raw file is the disk" cmp -s C/root.hds mC
verify "snapshot-merge into raw" "$CD" mC

# init -f preallocated: like convert, every BAT entry filled (in order), file = BAT + every cluster.
mkdir P
quiet "$PLOOP" init -s 8M -b 128 -f preallocated -t none P/root.hds
check "init -f preallocated: <Preallocated>1</Preallocated>" grep -q '<Preallocated>1</Preallocated>' P/DiskDescriptor.xml
check "init -f preallocated: file holds header + every cluster" test "$(stat -c %s P/root.hds)" = $((8 * MiB + 65536))
check "init -f preallocated: every cluster allocated" python3 -c "
import json, subprocess, sys
m = json.loads(subprocess.run([sys.argv[1], 'map', '-j', sys.argv[2]], capture_output=True, check=True).stdout)
sys.exit(not (m and all(e['data'] for e in m) and sum(e['length'] for e in m) == 8 << 20))" "$PLOOP" P/DiskDescriptor.xml
truncate -s 8M mP
put P/DiskDescriptor.xml mP 5555 $((MiB))
SPARSE_OK=1 verify "write into a fresh preallocated image" P/DiskDescriptor.xml mP
check "init -f preallocated: writes do not grow the file" test "$(stat -c %s P/root.hds)" = $((8 * MiB + 65536))

# ---- restore-descriptor -------------------------------------------------------------------------------------------
mkdir R1 R2 R3
cp G2/one.hds R1/img.hds
check "restore-descriptor of a ploop1 delta" quiet "$PLOOP" restore-descriptor R1 R1/img.hds
check "restore-descriptor: size, blocksize and version from the header" \
	test "$("$PLOOP" info -s R1/DiskDescriptor.xml)" = "$(printf 'size:\t\t573440\nblocksize:\t64\nfmt_version:\t1')"
verify "restore-descriptor ploop1" R1/DiskDescriptor.xml mG2
cp R1/DiskDescriptor.xml dd.before
check "restore-descriptor refuses an existing descriptor" bash -c "! '$PLOOP' restore-descriptor R1 R1/img.hds 2>/dev/null"
check "refused restore-descriptor leaves the descriptor alone" cmp -s R1/DiskDescriptor.xml dd.before
random_file R2/disk.raw 8
check "restore-descriptor -f raw" quiet "$PLOOP" restore-descriptor -f raw R2 R2/disk.raw
check "restore-descriptor -f raw: Plain, 1M blocks, the file's size" bash -c "
	grep -q '<Type>Plain</Type>' R2/DiskDescriptor.xml && grep -q '<Blocksize>2048</Blocksize>' R2/DiskDescriptor.xml &&
	grep -q '<Disk_size>16384</Disk_size>' R2/DiskDescriptor.xml"
same_content "restore-descriptor -f raw: content" R2/DiskDescriptor.xml R2/disk.raw
head -c $((3 * MiB / 2)) /dev/urandom >R3/disk.raw
check "restore-descriptor -f raw -b 64" quiet "$PLOOP" restore-descriptor -f raw -b 64 R3 R3/disk.raw
check "restore-descriptor -f raw -b 64: blocksize kept" grep -q '<Blocksize>64</Blocksize>' R3/DiskDescriptor.xml
same_content "restore-descriptor -f raw -b 64: content" R3/DiskDescriptor.xml R3/disk.raw
# A raw file whose size is no whole number of clusters is refused (38, as upstream), with the reason:
# a disk of such a size would grow to the next cluster at the first snapshot.
mkdir R4
head -c $((1954 * 512)) /dev/urandom >R4/disk.raw
one_line "restore-descriptor -f raw -b 64 of 1954 sectors: refused (38), one line" 38 \
	"$PLOOP" restore-descriptor -f raw -b 64 R4 R4/disk.raw
check "... saying it is no multiple of the cluster ($(cat "$T/.err"))" grep -q "not a multiple of the cluster size" "$T/.err"
one_line "... without -b too (38)" 38 "$PLOOP" restore-descriptor -f raw R4 R4/disk.raw
check "... saying so ($(cat "$T/.err"))" grep -q "not a multiple of 32 KiB" "$T/.err"
head -c 1000000 /dev/urandom >R4/disk.raw
one_line "restore-descriptor -f raw -b 64 of 1000000 bytes: refused (38)" 38 \
	"$PLOOP" restore-descriptor -f raw -b 64 R4 R4/disk.raw
check "... saying it is no whole number of sectors ($(cat "$T/.err"))" grep -q "not a whole number of 512-byte sectors" "$T/.err"
check "... and no descriptor was written" test ! -e R4/DiskDescriptor.xml

# ---- merge of an explicit file list -----------------------------------------------------------------------------------
mkdir M
MD=M/DiskDescriptor.xml
quiet "$PLOOP" init -s 12M -b 256 -v 1 -t none M/base.hds
truncate -s 12M mM
put "$MD" mM 5 $((2 * MiB))
quiet "$PLOOP" snapshot "$MD"
put "$MD" mM $((MiB + 77)) $((3 * MiB))
quiet "$PLOOP" snapshot "$MD"
put "$MD" mM $((11 * MiB)) 4097
mapfile -t mfiles < <(deltas "$MD")
# -f raw says BASE is a raw file: a ploop delta given so would have its header and BAT overwritten
sha_base=$(sha "${mfiles[0]}")
one_line "merge -f raw into a ploop delta is refused (exit 38)" 38 "$PLOOP" merge -f raw "${mfiles[2]}" "${mfiles[0]}"
check "... and the delta is unchanged" test "$(sha "${mfiles[0]}")" = "$sha_base"
check "merge TOP MIDDLE BASE" quiet "$PLOOP" merge "${mfiles[2]}" "${mfiles[1]}" "${mfiles[0]}"
same_content "merge of a file list: the base alone is the disk" "${mfiles[0]}" mM
expect_rc "merge of a file list: base passes check" 0 "$PLOOP" check -f -c -r "${mfiles[0]}"
check "merge of a file list: nothing is removed" test -e "${mfiles[1]}" -a -e "${mfiles[2]}"

# ---- import / export ----------------------------------------------------------------------------------------------------
mkdir I1 I2 I3
head -c $((3 * MiB)) /dev/urandom >in.raw
truncate -s $((8 * MiB)) in.raw
head -c 100000 /dev/urandom | dd of=in.raw bs=64K seek=6000000 oflag=seek_bytes conv=notrunc status=none
check "import FILE" quiet "$PLOOP" import in.raw I1/root.hds
verify "import FILE" I1/DiskDescriptor.xml in.raw
check "import stores only non-zero clusters (1M header + 4 data clusters)" test "$(stat -c %s I1/root.hds)" = $((5 * MiB))
expect_rc "import from a stream without -s" 38 bash -c "cat in.raw | '$PLOOP' import - I2/root.hds"
mkfifo in.fifo
one_line "import from a FIFO without -s: 38 at once, not waiting for a writer" 38 timeout 10 "$PLOOP" import in.fifo I2/root.hds
one_line "import from a directory: 4" 4 "$PLOOP" import -s 1M I3 I2/root.hds
check "... neither left anything" test -z "$(ls -A I2)"
rm in.fifo
check "import - (stdin) -s 8M -b 64 -v 1" bash -c "cat in.raw | '$PLOOP' import -s 8M -b 64 -v 1 - I2/root.hds"
check "import -b -v: parameters taken" \
	test "$("$PLOOP" info -s I2/DiskDescriptor.xml)" = "$(printf 'size:\t\t16384\nblocksize:\t64\nfmt_version:\t1')"
verify "import from stdin" I2/DiskDescriptor.xml in.raw
check "export - (stdout) through a pipe" bash -c "'$PLOOP' export I2/DiskDescriptor.xml - | cmp -s - in.raw"
check "import of a stream shorter than -s fails" bash -c "! head -c 5000000 in.raw | '$PLOOP' import -s 8M - I3/root.hds 2>/dev/null"
check "failed import leaves no image behind" test ! -e I3/root.hds -a ! -e I3/DiskDescriptor.xml
expect_rc "a stream ending chunks before -s fails as a short input" 6 bash -c "head -c $((3 * MiB)) in.raw | '$PLOOP' import -s 10M - I3/root.hds"
check "... and says where it ended" bash -c "head -c $((3 * MiB)) in.raw | '$PLOOP' import -s 10M - I3/root.hds 2>&1 | grep -q 'input ended at $((3 * MiB)) of'"
expect_rc "a stream longer than -s is refused" 38 bash -c "cat in.raw | '$PLOOP' import -s 2M - I3/root.hds"
expect_rc "a file larger than -s is refused" 38 "$PLOOP" import -s 2M in.raw I3/root.hds
check "refused imports leave no image behind" test ! -e I3/root.hds -a ! -e I3/DiskDescriptor.xml
# an import killed while it filled other.hds.import, then a set imported under another name: only
# an import of that name removes the leftover, and check of the set names it
mkfifo imp.fifo
"$PLOOP" import -s 8M imp.fifo I3/other.hds &
ipid=$!
exec 9>imp.fifo
head -c $((2 * MiB)) in.raw >&9
for _ in $(seq 50); do [ -s I3/other.hds.import ] && break; sleep 0.1; done
kill -9 $ipid
exec 9>&-
wait $ipid 2>/dev/null
rm imp.fifo
check "a killed import leaves its .import" test -e I3/other.hds.import
check "import into the same directory" quiet "$PLOOP" import in.raw I3/root.hds
check "check of the set names the killed import's leftover" bash -c "'$PLOOP' check I3/DiskDescriptor.xml 2>&1 | grep -q 'I3/other.hds.import is not in DiskDescriptor.xml: the unfinished image of a killed ploop import'"
rm -f I3/other.hds.import
# A partial cluster at the end of a delta (a crash while the file grew) holds old bytes: convert
# -f preallocated hands it out for an empty cluster, which must still read as zeros.
mkdir PT
quiet "$PLOOP" init -s 10M -b 64 -t none PT/root.hds
truncate -s 10M mPT
put PT/DiskDescriptor.xml mPT 0 32768
head -c 1000 /dev/zero | tr '\0' Z >>PT/root.hds
check "convert -f preallocated of a delta ending in a partial cluster" quiet "$PLOOP" convert -f preallocated PT/DiskDescriptor.xml
same_content "convert -f preallocated: empty clusters still read as zeros" PT/DiskDescriptor.xml mPT
mkdir S
quiet "$PLOOP" init -s 64M -t none S/root.hds
truncate -s 64M mS
put S/DiskDescriptor.xml mS $((40 * MiB + 3)) 5000
rm -f sparse.out
check "export to a file" quiet "$PLOOP" export S/DiskDescriptor.xml sparse.out
check "export output is sparse (64M disk, 1 cluster of data: < 2M allocated)" \
	test "$(stat -c %s sparse.out)" = $((64 * MiB)) -a "$(du -k sparse.out | cut -f1)" -lt 2048
check "sparse export has the content" cmp -s sparse.out mS
expect_rc "export refuses to overwrite an existing file" 38 "$PLOOP" export S/DiskDescriptor.xml sparse.out

# ---- map -------------------------------------------------------------------------------------------------------------------
# The chain of A has a base and two deltas; extents must tile the disk and name the bytes they map.
quiet "$PLOOP" snapshot "$DD"
put "$DD" mA $((13 * MiB + 1)) 300000
"$PLOOP" map -j "$DD" >map.json 2>"$T/.err"
check "map -j: valid JSON" python3 -m json.tool map.json /dev/null
check "map -j: extents tile the disk and data extents hold the disk's bytes" python3 -c "
import json, sys
ext = json.load(open('map.json'))
disk = open(sys.argv[1], 'rb').read()
pos = 0
for e in ext:
    assert e['start'] == pos, ('gap', e)
    pos += e['length']
    if e['data']:
        with open(e['file'], 'rb') as f:
            f.seek(e['offset'])
            assert f.read(e['length']) == disk[e['start']:e['start'] + e['length']], ('bytes', e)
    else:
        assert disk[e['start']:e['start'] + e['length']] == bytes(e['length']), ('not zero', e)
assert pos == len(disk) == 16 << 20, ('total', pos)
assert len({e['level'] for e in ext if e['data']}) >= 2, 'levels'
" mA
"$PLOOP" map "$DD" >map.txt 2>"$T/.err"
check "map (text): header and one line per data extent of the JSON" bash -c "
	head -1 map.txt | grep -q '^Offset *Length *Level *File offset *File' &&
	test \$((\$(wc -l <map.txt) - 1)) = \$(grep -c '\"data\": true' map.json)"
check "map (text): offsets and lengths agree with the JSON" python3 -c "
import json
ext = [e for e in json.load(open('map.json')) if e['data']]
rows = [l.split() for l in open('map.txt').read().splitlines()[1:]]
assert [(int(r[0], 16), int(r[1], 16), int(r[2]), int(r[3], 16)) for r in rows] == \
       [(e['start'], e['length'], e['level'], e['offset']) for e in ext]
"
check "map of a single delta file" bash -c "'$PLOOP' map -j A/root.hds | python3 -m json.tool >/dev/null"

# ---- CIF_Empty: set exactly when the file ends at its BAT, as 1.15's check wants it -----------------------
mkdir -p EF
quiet "$PLOOP" init -s 16M -t none EF/root.hds
printf '\0\0\0\0' | dd of=EF/root.hds bs=1 seek=52 conv=notrunc status=none	# m_Flags: CIF_Empty cleared
expect_rc "CIF_Empty cleared on an empty delta: check -f -c -r finds it (7, as 1.15)" 7 "$PLOOP" check -f -c -r EF/root.hds
expect_rc "... check -f repairs it" 0 "$PLOOP" check -f EF/root.hds
check "... the flag is set again" test "$(od -An -tx4 -j52 -N4 EF/root.hds | tr -d ' ')" = 00000001
checked "... every delta checks clean" EF/DiskDescriptor.xml

# ---- locking -------------------------------------------------------------------------------------------------------------------
"$PLOOP_IO" hold "$DD" 30 >hold.out 2>&1 &
holder=$!
at_exit "kill $holder"
for _ in $(seq 100); do grep -q locked hold.out && break; sleep 0.05; done
check "ploop-io hold takes the image set" grep -qx locked hold.out
cp "$DD" dd.before
for cmd in "snapshot" "snapshot-merge" "snapshot-merge -A" "snapshot-delete -u $S9" "snapshot-switch -u $S5" \
	"grow -s 20M" "convert -v 1" "convert -f preallocated"; do
	# shellcheck disable=SC2086
	"$PLOOP" $cmd "$DD" >"$T/.out" 2>"$T/.lockerr"
	rc=$?
	if [ $rc = 23 ] && [ "$(wc -l <"$T/.lockerr")" = 1 ] && grep -qi locked "$T/.lockerr"; then
		ok "locked: $cmd fails with 23 and one line"
	else
		not_ok "locked: $cmd (exit $rc, stderr: $(head -c 300 "$T/.lockerr"))"
	fi
done
check "locked: nothing changed" cmp -s "$DD" dd.before
kill "$holder" 2>/dev/null
wait "$holder" 2>/dev/null
check "after the holder ends: snapshot succeeds" quiet "$PLOOP" snapshot "$DD"
check "after the holder ends: snapshot-merge succeeds" quiet "$PLOOP" snapshot-merge "$DD"
verify "after locking" "$DD" mA

# ---- interrupted merge: a <Temporary/> snapshot left by a crash ---------------------------------------------------------------
mkdir X
XD=X/DiskDescriptor.xml
T1='{bbbbbbbb-0000-4000-8000-000000000001}'
T2='{bbbbbbbb-0000-4000-8000-000000000002}'
quiet "$PLOOP" init -s 10M -b 128 -t none X/root.hds
truncate -s 10M mX
put "$XD" mX 100 $((2 * MiB))
quiet "$PLOOP" snapshot -u "$T1" "$XD"
put "$XD" mX $((MiB + 5)) $((2 * MiB))
quiet "$PLOOP" snapshot -u "$T2" "$XD"
put "$XD" mX $((9 * MiB + 1)) 3000
# mark_temporary GUID: what merge writes first, and a crash mid-merge leaves behind.
mark_temporary() {
	python3 - "$XD" "$1" <<'EOF'
import re, sys
path, guid = sys.argv[1], sys.argv[2]
xml = open(path).read()
new = re.sub(r'(<Shot>\s*<GUID>' + re.escape(guid) + r'</GUID>\s*<ParentGUID>[^<]*</ParentGUID>)',
             r'\1\n      <Temporary/>', xml)
assert new != xml
open(path, 'w').write(new)
EOF
}
mark_temporary "$T2"
verify "a middle snapshot marked temporary by hand: content" "$XD" mX
T3='{bbbbbbbb-0000-4000-8000-000000000003}'
check "next command (snapshot) after a crash mid-merge" quiet "$PLOOP" snapshot -u "$T3" "$XD"
check "the interrupted merge was completed (T2 gone, no Temporary left)" \
	bash -c "! grep -q '$T2' '$XD' && ! grep -q Temporary '$XD' && test \$(grep -c '<Image>' '$XD') = 3"
check "the merged image sits on T1 and T3 on it" test "$(parent_of "$XD" "$T3")" = "$T1"
verify "interrupted merge completed" "$XD" mX
put "$XD" mX $((4 * MiB)) 1234
mark_temporary "$T1"
check "next command (snapshot-merge) with the base marked temporary" quiet "$PLOOP" snapshot-merge "$XD"
check "base-level interrupted merge completed" \
	bash -c "! grep -q '$T1' '$XD' && ! grep -q Temporary '$XD' && test \$(grep -c '<Image>' '$XD') = 1"
verify "base-level interrupted merge" "$XD" mX

# A merge killed while it copied: its target left marked in use, with clusters written past the last
# one its BAT names. A check that may write completes the merge first (as every modifying command
# does); the target gives back those clusters before the merge allocates after them.
T4='{bbbbbbbb-0000-4000-8000-000000000004}'
quiet "$PLOOP" snapshot -u "$T4" "$XD"
put "$XD" mX $((6 * MiB)) 200000
mark_temporary "$T4"
xbase=$(deltas "$XD" | head -1)
xsize=$(stat -c %s "$xbase")
printf 'Ynot' | dd of="$xbase" bs=1 seek=44 conv=notrunc status=none
head -c $((2 * 64 * 1024)) /dev/urandom >>"$xbase"
sum_before=$(deltas "$XD" | xargs -d "\n" cat "$XD" | sha256sum)
check "check -r of the set: the dirty target is reported (exit 7)" test "$("$PLOOP" check -r "$XD" >"$T/.out" 2>&1; echo $?)" = 7
check "... naming the interrupted merge" grep -q "merge into snapshot $T4 was interrupted" "$T/.out"
check "... and nothing written" test "$(deltas "$XD" | xargs -d "\n" cat "$XD" | sha256sum)" = "$sum_before"
check "... and the merge is still pending" grep -q Temporary "$XD"
check "check -f -c of the set completes the interrupted merge" quiet "$PLOOP" check -f -c "$XD"
check "... T4 gone, no Temporary left, one image" \
	bash -c "! grep -q '$T4' '$XD' && ! grep -q Temporary '$XD' && test \$(grep -c '<Image>' '$XD') = 1"
check "... the clusters past the target's BAT were given back first (no hole left)" \
	bash -c "! '$PLOOP' check -f -c -r '$xbase' 2>&1 | grep -q unreferenced && test \$(stat -c %s '$xbase') -le $((xsize + 4 * 64 * 1024))"
verify "interrupted merge completed by check" "$XD" mX

# A crash can also leave a cluster allocated but not named by the BAT before the last one it names
# (a batch whose entries were being written): a merge into that delta, left in use, gives it back.
put "$XD" mX 100 5000
head -c $((64 * 1024)) /dev/urandom >>"$xbase"	# unnamed ...
put "$XD" mX $((8 * MiB)) 70000			# ... and clusters named after it
check "a hole inside the base (set up)" bash -c "'$PLOOP' check -f -c -r '$xbase' 2>&1 | grep -q '1 unreferenced'"
quiet "$PLOOP" snapshot "$XD"
put "$XD" mX $((3 * MiB)) 3000
printf 'Ynot' | dd of="$xbase" bs=1 seek=44 conv=notrunc status=none
check "snapshot-merge into the base a crash left in use" quiet "$PLOOP" snapshot-merge "$XD"
check "... moved a cluster into the hole first" grep -q "1 cluster(s) moved into the holes a crash left" "$T/.out"
check "... no hole left" bash -c "! '$PLOOP' check -f -c -r '$xbase' 2>&1 | grep -q unreferenced"
verify "merge into a base with a hole" "$XD" mX

# What killed commands leave beside a set (a descriptor not yet put in place, the raw copy of a
# conversion, header+BAT backups of a format conversion not pending) goes with the next command that
# holds the set alone; a file the set names, or one of another name, stays.
LD=$(dirname "$XD")
XTOP=$(deltas "$XD" | tail -1)
for f in "$LD/DiskDescriptor.xml.tmp" "$XTOP.tmp" "$XTOP.idx" "$LD/notes.tmp"; do echo leftover >"$f"; done
check "next command (snapshot) after killed ones left files beside the set" quiet "$PLOOP" snapshot "$XD"
check "... removed DiskDescriptor.xml.tmp, IMAGE.tmp and IMAGE.idx" \
	bash -c "! test -e '$LD/DiskDescriptor.xml.tmp' && ! test -e '$XTOP.tmp' && ! test -e '$XTOP.idx'"
check "... and kept a file of another name" test -e "$LD/notes.tmp"
verify "content after the leftovers went" "$XD" mX

# Deltas named as the set names them that the descriptor does not name: an empty one (a killed
# snapshot's) goes with the next command; one holding data (a merge killed just before it removed
# the merged file, or a copy kept by hand) stays, and check tells about it.
XBASE=$(deltas "$XD" | head -1)
EMPTY="$XBASE.{cccccccc-0000-4000-8000-000000000001}"
KEPT="$XBASE.{cccccccc-0000-4000-8000-000000000002}"
mkdir "$T/scratch" && quiet "$PLOOP" init -s 10M -b 128 -t none "$T/scratch/x.hds" && mv "$T/scratch/x.hds" "$EMPTY"
rm -rf "$T/scratch"
cp "$XBASE" "$KEPT"
check "next command (snapshot) with undescribed deltas beside the set" quiet "$PLOOP" snapshot "$XD"
check "... removed the empty one, kept the one holding data" bash -c "! test -e '$EMPTY' && test -e '$KEPT'"
out=$("$PLOOP" check "$XD" 2>&1)
check "check tells about the undescribed delta holding data (and exits 0)" \
	test $? = 0 -a -n "$out" -a -z "${out##*"${KEPT##*/}"*is not in DiskDescriptor.xml*}"
rm -f "$KEPT"
verify "content after the undescribed deltas" "$XD" mX

# ---- out of space -------------------------------------------------------------------------------------------------------------
# A command that runs out of space fails with 20 and leaves the set as it was: its files, and the
# free space (nothing moved, nothing left behind as holes).
mkdir F
if mount -t tmpfs -o size=32M tmpfs F 2>/dev/null; then
	at_exit "umount '$T/F' || umount -l '$T/F'"
	FD=F/DiskDescriptor.xml
	# leave_free KIB: fills F up to about KIB KiB free.
	leave_free() {
		rm -f F/fill
		dd if=/dev/zero of=F/fill bs=32K status=none 2>/dev/null
		truncate -s "-$1K" F/fill
	}
	# set_state: the digest of every file of the set, and the free space of F.
	set_state() { (cd F && sha256sum DiskDescriptor.xml root.hds*) && stat -f -c %a F; }
	random_file mF 12
	quiet "$PLOOP" import -s 64M -b 64 mF F/root.hds
	truncate -s 64M mF
	quiet "$PLOOP" snapshot "$FD"
	put "$FD" mF $((20 * MiB)) $((5 * MiB))
	verify "out of space: set-up (12 MiB base, 5 MiB top, 32 KiB clusters)" "$FD" mF
	ftop=$(deltas "$FD" | tail -1)

	# grow to 60G needs a BAT of 7.5 MiB, over all 160 data clusters of the top: they moved to the
	# end of the file one by one until the space ran out, their old places left as holes.
	leave_free 3072
	before=$(set_state)
	one_line "out of space: grow -s 60G with 3 MiB free fails (exit 20)" 20 "$PLOOP" grow -s 60G "$FD"
	check "... the set and the free space are as they were" test "$(set_state)" = "$before"
	check "... no unreferenced clusters in the top" bash -c "! '$PLOOP' check -f -c -r '$ftop' 2>&1 | grep -q unreferenced"
	verify "out of space: after the failed grow" "$FD" mF

	# snapshot-merge of the top into the base needs 160 new clusters there: it failed with the base
	# already marked <Temporary/> (no data moved), and every later modifying command first tried to
	# complete that merge and failed with 20 as well.
	leave_free 3072
	before=$(set_state)
	one_line "out of space: snapshot-merge with 3 MiB free fails (exit 20)" 20 "$PLOOP" snapshot-merge "$FD"
	check "... the set (no <Temporary/>) and the free space are as they were" test "$(set_state)" = "$before"
	check "... a later command (snapshot) works" quiet "$PLOOP" snapshot "$FD"
	verify "out of space: after the failed merge and a snapshot" "$FD" mF
	before=$(set_state)
	one_line "out of space: snapshot-merge -A fails (exit 20)" 20 "$PLOOP" snapshot-merge -A "$FD"
	check "... the set and the free space are as they were" test "$(set_state)" = "$before"

	# import of data clusters between zero ones (one allocation and write per run): the space ran
	# out at a run in the middle of a chunk, with the write of an earlier run of it queued on the
	# ring but not submitted, and the import waited forever for its completion.
	# (Where in a chunk it runs out varies with timing: three tries, a cluster apart.)
	for i in $(seq 128); do head -c 32768 /dev/urandom; head -c 32768 /dev/zero; done >mI
	for kib in 2304 2272 2240; do
		mkdir F/imp
		leave_free $kib
		free_before=$(stat -f -c %a F)
		expect_rc "out of space: import with $kib KiB free fails (exit 20, no hang)" 20 \
			timeout 20 "$PLOOP" import -b 64 mI F/imp/root.hds
		check "... leaves no image, no .import, no descriptor (nor its lock file)" \
			test "$(nfiles F/imp/root.hds F/imp/root.hds.import F/imp/DiskDescriptor.xml*)" = 0
		check "... and the free space as it was" test "$(stat -f -c %a F)" = "$free_before"
		rm -rf F/imp
	done
	rm -f mI
	rm -f F/fill
	check "with room again: snapshot-merge -A" quiet "$PLOOP" snapshot-merge -A "$FD"
	check "... one image left" test "$(deltas "$FD" | wc -l)" = 1
	verify "out of space: merged with room again" "$FD" mF
	rm -f F/* mF

	# A sparse raw base holds every cluster in place: a merge into it allocated nothing up front
	# (it counted only clusters without a BAT entry), ran out of space while it wrote the holes,
	# and left the base half written and <Temporary/> in the descriptor.
	mkdir F/R
	RD=F/R/DiskDescriptor.xml
	quiet "$PLOOP" init -s 24M -b 128 -f raw --sparse -t none F/R/root.hds
	truncate -s 24M mR
	put "$RD" mR 0 $((4 * MiB))
	quiet "$PLOOP" snapshot "$RD"
	put "$RD" mR $((8 * MiB)) $((4 * MiB))
	quiet "$PLOOP" snapshot "$RD"
	put "$RD" mR $((16 * MiB)) $((4 * MiB))
	verify "out of space: sparse raw base (set-up)" "$RD" mR
	raw_state() { (cd F/R && sha256sum ./*); }
	leave_free 2048
	before=$(raw_state)
	one_line "out of space: snapshot-merge into a sparse raw base fails (exit 20)" 20 \
		"$PLOOP" snapshot-merge -u "$(shots "$RD" | awk -v n="$NONEG" '$2 != n && $1 != "'"$TOPG"'" { print $1 }')" "$RD"
	check "... the set (no <Temporary/>) is as it was" test "$(raw_state)" = "$before"
	one_line "out of space: snapshot-merge -A into a sparse raw base fails (exit 20)" 20 "$PLOOP" snapshot-merge -A "$RD"
	check "... the set is as it was" test "$(raw_state)" = "$before"
	one_line "out of space: snapshot-delete of the raw base's child fails (exit 20)" 20 \
		"$PLOOP" snapshot-delete -u "$(shots "$RD" | awk -v n="$NONEG" '$2 == n { print $1 }')" "$RD"
	check "... the set is as it was" test "$(raw_state)" = "$before"
	mapfile -t rfiles < <(deltas "$RD" | tac)
	one_line "out of space: merge -f raw TOP MIDDLE BASE into a sparse raw file fails (exit 20)" 20 \
		"$PLOOP" merge -f raw "${rfiles[@]}"
	check "... the files are as they were" test "$(raw_state)" = "$before"
	check "... a later command (snapshot) works" quiet "$PLOOP" snapshot "$RD"
	verify "out of space: sparse raw base after the failed merges" "$RD" mR
	rm -f F/fill
	check "with room again: snapshot-merge -A into the sparse raw base" quiet "$PLOOP" snapshot-merge -A "$RD"
	check "... one image left" test "$(deltas "$RD" | wc -l)" = 1
	verify "out of space: merged into the raw base with room again" "$RD" mR
	rm -rf F/R mR
else
	ok "out of space # SKIP cannot mount a tmpfs here"
fi

# A snapshot that does not exist: exit 43 for delete, 38 for merge and switch, as upstream.
expect_rc "snapshot-delete -u of a snapshot that does not exist (exit 43)" 43 "$PLOOP" snapshot-delete -u '{01234567-89ab-cdef-0123-456789abcdef}' "$DD"
for c in snapshot-merge snapshot-switch; do
	expect_rc "$c -u of a snapshot that does not exist (exit 38, as upstream)" 38 "$PLOOP" $c -u '{01234567-89ab-cdef-0123-456789abcdef}' "$DD"
done
check "ploop COMMAND --help prints that command's usage (exit 0)" bash -c "'$PLOOP' init --help | grep -q '^usage: ploop init -s SIZE' && '$PLOOP' snapshot-merge -h | grep -q '^usage: ploop snapshot-merge'"
finish
