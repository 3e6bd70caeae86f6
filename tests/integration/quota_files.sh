#!/usr/bin/env bash
# The quota file: corrupt, truncated and malformed files give exit 4 and one line, the file
# untouched; legacy vzquota v3/v2/v1 files (crafted here with python3 struct, x86_64 layout) are read
# with every value intact and converted on the first write; DIRTY and stale LIVE files are recounted
# by the next `on`.
# runner: isolated (touches nothing another test looks at: tests/run may run it beside them)
source "$(dirname "$0")/../lib.sh"
VZQ=${VZQ:-$ROOT/build/san/bin/vzquota}
[ -x "$VZQ" ] || { not_ok "setup: $VZQ is not built (make)"; finish; }
export VZQ_DIR=$T/var VZQ_RUN_DIR=$T/run
mkdir -p "$VZQ_DIR" "$T/tree/d"
echo data >"$T/tree/d/f"
q() { "$VZQ" "$@"; }
# with_field SRC DST OFFSET FORMAT VALUE: DST is quota file SRC with the field at OFFSET (struct
# FORMAT: '<I', '<Q') set to VALUE ("|BITS": BITS or'ed in) and the checksum made valid again.
with_field() {
	python3 - "$@" <<'PY'
import struct, sys
src, dst, off, fmt, val = sys.argv[1:6]
off = int(off)
b = bytearray(open(src, 'rb').read())
def crc32c(data):
    crc = 0xffffffff
    for x in data:
        crc ^= x
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82f63b78 if crc & 1 else crc >> 1
    return crc ^ 0xffffffff
old = struct.unpack_from(fmt, b, off)[0]
struct.pack_into(fmt, b, off, old | int(val[1:], 0) if val.startswith('|') else int(val, 0))
struct.pack_into('<I', b, len(b) - 8, crc32c(bytes(b[:-8])))
open(dst, 'wb').write(b)
PY
}
# with_flags SRC DST FLAGS: the flags word of the header
with_flags() { with_field "$1" "$2" 16 '<I' "$3"; }
F=$VZQ_DIR/quota.7
q init 7 -p "$T/tree" -b 100 -B 200 -i 10 -I 20 -e 60 -n 60 -s 1 -u 100 >/dev/null 2>&1
cp "$F" "$T/good"
size=$(stat -c %s "$T/good")

# bad FILE-MAKER NAME: every command that reads the file fails with 4, one line, file untouched
bad() {
	local name=$1 cmd rc lines
	for cmd in show on off stat setlimit drop; do
		local extra=()
		[ $cmd = setlimit ] && extra=(-b 5)
		"$VZQ" $cmd 7 "${extra[@]}" >/dev/null 2>"$T/err"
		rc=$?
		lines=$(wc -l <"$T/err")
		if [ $rc = 4 ] && [ "$lines" = 1 ] && cmp -s "$F" "$T/bad"; then ok "corrupt:$name:$cmd"; else
			not_ok "corrupt:$name:$cmd (exit $rc, $lines lines: $(head -c 200 "$T/err"))"
		fi
	done
}
for off in 0 4 8 16 20 24 28 40 100 140 144 $((size - 8)) $((size - 4)) $((size - 1)); do
	cp "$T/good" "$T/bad"
	printf '\xa5' | dd of="$T/bad" bs=1 seek=$off conv=notrunc status=none
	cp "$T/bad" "$F"
	bad "byte$off"
done
for len in 3 100 $((size - 1)) $((size - 8)); do
	head -c $len "$T/good" >"$T/bad"; cp "$T/bad" "$F"; bad "truncated$len"
done
cp "$T/good" "$T/bad"; echo junk >>"$T/bad"; cp "$T/bad" "$F"; bad "trailing-junk"
# grown past its header's size: refused by the header before it is read whole (a 1.3 GB file
# was read into memory first: 18 s, 1.3 GB resident)
cp "$T/good" "$T/bad"; truncate -s 64M "$T/bad"; cp --sparse=always "$T/bad" "$F"
bad "grown-64M"
check "grown file refused by its header" grep -q "$((64 << 20)) bytes, past the $size its header says" "$T/err"
rm -f "$T/bad"
head -c 4096 /dev/urandom >"$T/bad"; cp "$T/bad" "$F"; bad "random"
# a well-formed file (valid checksum) with a field out of range
with_flags "$T/good" "$T/bad" 0x80000	# an unknown flag
cp "$T/bad" "$F"; bad "unknown-flag-valid-crc"
for off in 72 80; do	# inode soft, hard limit: 32-bit counts
	with_field "$T/good" "$T/bad" $off '<Q' $((1 << 40))
	cp "$T/bad" "$F"; bad "inode-limit-2^40-at-$off-valid-crc"
done
expect_rc "drop -f removes a corrupt file" 0 q drop 7 -f
check "gone" test ! -e "$F"
expect_rc "init over a corrupt file" 0 bash -c "cp '$T/bad' '$F' && '$VZQ' init 7 -p '$T/tree' -b 1 -B 2 -i 3 -I 4 -e 5 -n 6"
expect_rc "show after init over it" 0 q show 7

# ---- the empty file of an unfinished init: init creates the name empty to hold its lock while it
# counts, and renames the counted file over it; killed meanwhile, it leaves that empty file. It is
# no quota file (11), during the init and after it, for every command; one that takes the lock (the
# init is gone) removes it; init works over it ----
E=$VZQ_DIR/quota.12
: >"$E"
flock -n "$E" sleep 3 &	# the init, still counting
LOCKER=$!
sleep 0.3
expect_rc "empty, init running: show 11" 11 q show 12
expect_rc "empty, init running: stat -f 11" 11 q stat 12 -f
expect_rc "empty, init running: on 7 (the init holds the lock)" 7 q on 12
check "empty, init running: left for the init" test -e "$E"
wait $LOCKER
for cmd in show "stat -f" reload2; do
	one_line "empty, init killed: $cmd 11, one line" 11 bash -c '"$0" "$1" 12 "${@:2}"' "$VZQ" $cmd
	check "empty: $cmd names the unfinished init" grep -q "quota.12: no quota file (the empty file of an unfinished init)" "$T/.err"
	check "empty: $cmd leaves it" test -e "$E"
done
for cmd in on off stat "setlimit -b 5" "setlimit2 -t 1 1" drop; do
	: >"$E"
	one_line "empty, init killed: $cmd 11, one line" 11 bash -c '"$0" "$1" 12 "${@:2}"' "$VZQ" $cmd
	check "empty: $cmd removed it" test ! -e "$E"
done
: >"$E"
out=$(q init 12 -p "$T/tree" -b 100 -B 200 -i 10 -I 20 -e 60 -n 60 2>&1)
check "init over the empty file ($?), no warning ('$out')" test $? = 0 -a -z "$out"
expect_rc "show after that init" 0 q show 12
expect_rc "drop 12" 0 q drop 12

# ---- anything but a regular file in place of the quota file: exit 4, one line naming it, never
# a hang (a FIFO blocked open() for ever) and never overwritten, init included ----
not_regular() {	# not_regular NAME TEST: quota.9 is the object; TEST checks it is still there
	local name=$1 test=$2 cmd rc lines
	for cmd in show reload2 stat on off drop setlimit setlimit2 init; do
		local extra=()
		case $cmd in
		setlimit) extra=(-b 5) ;;
		setlimit2) extra=(-t 1 1) ;;
		init) extra=(-p "$T/tree" -b 1 -B 2 -i 3 -I 4 -e 5 -n 6) ;;
		esac
		timeout -k 2 10 "$VZQ" $cmd 9 "${extra[@]}" >/dev/null 2>"$T/err"
		rc=$?
		lines=$(wc -l <"$T/err")
		if [ $rc = 4 ] && [ "$lines" = 1 ] && grep -q "$VZQ_DIR/quota.9" "$T/err" && test $test "$VZQ_DIR/quota.9"; then
			ok "$name:$cmd"
		else
			not_ok "$name:$cmd (exit $rc, $lines lines: $(head -c 200 "$T/err"))"
		fi
	done
}
mkfifo "$VZQ_DIR/quota.9"
not_regular fifo -p
rm "$VZQ_DIR/quota.9"
mkdir "$VZQ_DIR/quota.9"
not_regular directory -d
rmdir "$VZQ_DIR/quota.9"
ln -s /dev/null "$VZQ_DIR/quota.9"
not_regular device -c
rm "$VZQ_DIR/quota.9"
# a symbolic link to a good quota file: the rename of a write would put a file in the link's place
# and leave the one it points at as it was
cp "$T/good" "$T/linked"
ln -s "$T/linked" "$VZQ_DIR/quota.9"
not_regular symlink -L
check "symlink: the file it points at is unchanged" cmp -s "$T/linked" "$T/good"
rm "$VZQ_DIR/quota.9"
# nor a FIFO in place of the tmp file of an atomic write
q init 9 -p "$T/tree" -b 1 -B 2 -i 3 -I 4 -e 5 -n 6 >/dev/null 2>&1
cp "$VZQ_DIR/quota.9" "$T/q9"
mkfifo "$VZQ_DIR/quota.9.tmp"
timeout -k 2 10 "$VZQ" setlimit 9 -b 7 >/dev/null 2>"$T/err"
rc=$?
check "FIFO as the tmp file: exit 4, one line (exit $rc)" test $rc = 4 -a "$(wc -l <"$T/err")" = 1
check "FIFO as the tmp file: quota file unchanged" cmp -s "$VZQ_DIR/quota.9" "$T/q9"
rm -f "$VZQ_DIR/quota.9.tmp"
expect_rc "drop 9" 0 q drop 9

# ---- legacy files ----
legacy() {	# legacy VERSION FILE PATH [V3FLAGS]: a vzquota file with known values
	python3 - "$@" <<'PY'
import os, struct, sys
ver, out, path = int(sys.argv[1]), sys.argv[2], sys.argv[3].encode()
empty = int(os.environ.get('EMPTY_RECORDS', '0'))	# records with neither usage nor limits
flags = int(sys.argv[4], 0) if len(sys.argv) > 4 else 0x4
if ver == 3:
    b = struct.pack('<II', 0xFEDCBC27, flags)
    b += struct.pack('<QQqQIIqII', 2048000, 1024000, 1700000000, 5120000, 2000, 1000, 1700000500, 1500, 0)
    b += struct.pack('<qqII', 259200, 86400, 0, 0)
    b += struct.pack('<Q', len(path)) + path
    b += struct.pack('<IIII', 100, 2 + empty, 2, 2 + empty)
    b += struct.pack('<qqII', 3600, 7200, 0, 0) + struct.pack('<qqII', 60, 120, 0, 0)
    b += struct.pack('<II', 1000, 0) + struct.pack('<QQqQIIqII', 409600, 204800, 0, 102400, 40, 20, 0, 10, 0) + struct.pack('<II', 1, 0)
    b += struct.pack('<II', 50, 1) + struct.pack('<QQqQIIqII', 0, 0, 0, 4096, 0, 0, 0, 3, 0) + struct.pack('<II', 2, 0)
    for i in range(empty):
        b += struct.pack('<II', 77 + i, 0) + struct.pack('<QQqQIIqII', 0, 0, 0, 0, 0, 0, 0, 0, 0) + struct.pack('<II', 0, 0)
    s = 0
    pad = b + b'\0' * (-len(b) % 8)
    for i in range(0, len(pad), 8):
        s ^= struct.unpack_from('<Q', pad, i)[0]
    b += struct.pack('<Q', s)
elif ver == 2:
    b = struct.pack('<II', 0xFEDCBB00, 0)
    b += struct.pack('<QQqqQIIIIqqiI', 2048000, 1024000, 259200, 0, 5120000, 2000, 1000, 1500, 0, 86400, 0, 0, 0)
    b += struct.pack('<Q', len(path)) + path
else:
    b = struct.pack('<II', 0xFEDCBA98, 0)
    b += struct.pack('<IIqqIIIIqqiI', 2000, 1000, 259200, 0, 5000, 2000, 1000, 1500, 86400, 0, 0, 0)
    b += struct.pack('<Q', len(path)) + path
open(out, 'wb').write(b)
PY
}
legacy 3 "$VZQ_DIR/quota.300" /vz/private/300
cp "$VZQ_DIR/quota.300" "$T/legacy3"
out=$(q -b show 300 -t 2>/dev/null)
check "legacy v3: show works, file untouched" cmp -s "$VZQ_DIR/quota.300" "$T/legacy3"
check "legacy v3: first level" test "$(echo "$out" | sed -n 1,2p | tr -s ' ' | tr '\n' ' ')" = " 5000 1000 2000 1700000000 259200  1500 1000 2000 1700000500 86400 "
check "legacy v3: ugid status" test "$(echo "$out" | sed -n 3,5p | tr '\n' ' ')" = "1 0 0 2 100 0 "
check "legacy v3: grace times" test "$(echo "$out" | sed -n 6,7p | tr -s ' ' | tr '\n' ' ')" = " user 3600 7200 0h group 60 120 0h "
check "legacy v3: user record" bash -c "echo '$out' | grep -Eq '^1000 +user 1k-blocks +100 +200 +400 +0 +0 0\$'"
check "legacy v3: user inodes" bash -c "echo '$out' | grep -Eq '^1000 +user +inodes +10 +20 +40 +0 +0 0\$'"
check "legacy v3: group record dirty" bash -c "echo '$out' | grep -Eq '^50 +group 1k-blocks +4 +0 +0 +0 +0 1\$'"
expect_rc "legacy v3: setlimit converts" 0 q setlimit 300 -i 1001
check "converted to ours" test "$(head -c 4 "$VZQ_DIR/quota.300")" = VZQF
out2=$(q -b show 300 -t 2>/dev/null)
check "converted: every other value kept" test "$(echo "$out2" | sed 2s/1001/1000/)" = "$out"
EMPTY_RECORDS=2 legacy 3 "$T/l3e" /x
out3=$(q -b show 1 -t -c "$T/l3e" 2>/dev/null)
check "legacy v3: records with neither usage nor limits are dropped" test "$out3" = "$out"
legacy 3 "$T/l3" /x; printf '\x01' | dd of="$T/l3" bs=1 seek=30 conv=notrunc status=none
expect_rc "legacy v3 bad checksum: 4" 4 q show 1 -c "$T/l3"
legacy 3 "$T/l3" /x; head -c 150 "$T/l3" >"$T/l3t"
expect_rc "legacy v3 truncated: 4" 4 q show 1 -c "$T/l3t"
# Left on by the OpenVZ host (flags ON): imported off and dirty, and `on` counts the tree.
legacy 3 "$VZQ_DIR/quota.301" "$T/tree" 0x5
expect_rc "legacy v3 left on: imported dirty (show: 10)" 10 q show 301
expect_rc "legacy v3 left on: on counts the tree (not 'already running')" 0 q on 301
expect_rc "legacy v3 left on: clean after on" 0 q show 301
check "legacy v3 left on: usage is the tree's" test "$(q -b show 301 | awk 'NR == 1 { print $1 } NR == 2 { print $1 }' | tr '\n' ' ')" = "$("$ROOT/build/bin/vzdqcheck" -q "$T/tree" | tr '\n' ' ')"
q off 301 >/dev/null 2>&1
q drop 301 >/dev/null 2>&1
legacy 2 "$T/l2" /vz/private/2
expect_rc "legacy v2: dirty after import (10)" 10 q show 2 -c "$T/l2"
check "legacy v2: values" test "$(q -b show 2 -c "$T/l2" | tr -s ' ' | tr '\n' ' ')" = " 5000 1000 2000 0 259200  1500 1000 2000 0 86400 "
legacy 1 "$T/l1" /vz/private/1
check "legacy v1: KiB values" test "$(q -b show 1 -c "$T/l1" | tr -s ' ' | tr '\n' ' ')" = " 5000 1000 2000 0 259200  1500 1000 2000 0 86400 "

# ---- dirty and stale live: recounted by on ----
q init 8 -p "$T/tree" -b 100 -B 200 -i 10 -I 20 -e 60 -n 60 >/dev/null 2>&1
echo more >"$T/tree/d/g"
expect_rc "setlimit -f marks dirty" 0 q setlimit 8 -f
expect_rc "show dirty: 10" 10 q show 8
q on 8 >/dev/null 2>&1
check "on recounted a dirty file" test "$(q -b show 8 2>/dev/null | awk 'NR==2{print $1}')" = 4
q off 8 >/dev/null
echo more >"$T/tree/d/h"
with_flags "$VZQ_DIR/quota.8" "$VZQ_DIR/quota.8" "|0x100"	# LIVE, as a killed daemon leaves it
expect_rc "on --nocheck keeps the stale count" 0 q on 8 --nocheck
check "stale count" test "$(q -b show 8 2>/dev/null | awk 'NR==2{print $1}')" = 4
q off 8 >/dev/null	# counts: no simfs served the quota since on
with_flags "$VZQ_DIR/quota.8" "$VZQ_DIR/quota.8" "|0x100"
q on 8 >/dev/null 2>&1
check "on recounted a file left LIVE by a dead daemon" test "$(q -b show 8 2>/dev/null | awk 'NR==2{print $1}')" = 5
finish
