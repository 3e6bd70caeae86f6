#!/usr/bin/env bash
# simfs with -o quota=ID: df shows the soft limits; filling to the soft limit, into grace, past
# grace and to the hard limit; writes refused with EDQUOT leave no partial data; inode limits;
# hard links; sparse files; fallocate and hole punching; truncate up and down; chown between uids
# with second-level limits; rename across directories and over a file; the usage the daemon
# writes back equals a fresh scan, and after a kill -9 the next mount rescans.
source "$(dirname "$0")/../lib.sh"
source "$ROOT/tests/tools/simfs-lib.sh"
simfs_skip_unless_root simfs_quota

P=$T/p R=$T/r
chmod 755 "$T"	# uid 1000 works in it too
mkdir -p "$P" "$R"
MiB=1048576
# file_usage: "total BYTES INODES" and the uid/gid lines from the quota file, after a sync.
file_usage() { quota_sync 101 && "$QTOOL" file 101 | grep -v '^flags'; }
scan_usage() { "$QTOOL" scan "$P"; }
total_bytes() { file_usage | awk '$1 == "total" { print $2 }'; }
total_inodes() { file_usage | awk '$1 == "total" { print $3 }'; }
# edquot NAME CMD...: CMD fails with "Disk quota exceeded".
edquot() {
	local name=$1
	shift
	if "$@" 2>"$T/.err"; then not_ok "$name (succeeded)"; elif grep -q "Disk quota exceeded" "$T/.err"; then
		ok "$name"
	else not_ok "$name ($(head -c 200 "$T/.err"))"; fi
}
same_as_scan() {
	local a b
	a=$(file_usage) b=$(scan_usage)
	if [ "$a" = "$b" ]; then ok "$1"; else not_ok "$1 (daemon: $(echo $a) / scan: $(echo $b))"; fi
}

# 10 MiB soft, 20 MiB hard, 100/150 inodes, 3 s grace
quota_init 101 "$P" 10240 20480 100 150 3 || not_ok "quota init"
expect_rc "mount with quota" 0 sf mount "$P" "$R" -o quota=101
check "df shows the block soft limit" test "$(df -k --output=size "$R" | tail -1 | tr -d ' ')" = 10240
check "df shows the inode soft limit" test "$(df --output=itotal "$R" | tail -1 | tr -d ' ')" = 100
expect_rc "second mount of the same quota refused" 6 sf mount "$P" "$T" -o quota=101

# ---- blocks: soft, grace, past grace, hard ----
check "fill to just under the soft limit" dd if=/dev/urandom of="$R/a" bs=1M count=9 status=none
check "usage counted exactly" test "$(total_bytes)" = "$(scan_usage | awk '$1 == "total" { print $2 }')"
check "write over the soft limit starts grace" dd if=/dev/zero of="$R/b" bs=1M count=2 status=none
check "df: nothing left beyond the soft limit" test "$(df -k --output=avail "$R" | tail -1 | tr -d ' ')" = 0
check "writes within grace pass" dd if=/dev/zero of="$R/c" bs=4k count=1 status=none
sleep 4
edquot "write past grace refused" dd if=/dev/zero of="$R/d" bs=4k count=1 status=none
check "the refused write left nothing" test "$(stat -c %s "$R/d")" = 0
edquot "append past grace refused" dd if=/dev/zero of="$R/a" bs=100 count=1 oflag=append conv=notrunc status=none
check "the refused append left the file as it was" test "$(stat -c %s "$R/a")" = $((9 * MiB))
rm -f "$R/b" "$R/c" "$R/d"
check "back under the soft limit: writes pass again" dd if=/dev/zero of="$R/c" bs=4k count=1 status=none
rm -f "$R/c"
# hard limit: a long grace this time
"$VZQUOTA" -q setlimit 101 -e 1h -n 1h >/dev/null || not_ok "setlimit grace"
edquot "writing 30 MiB stops at the hard limit" dd if=/dev/zero of="$R/big" bs=1M count=30 status=none
sz=$(stat -c %s "$R/big")
check "only whole refused-free writes landed (size $sz)" test $((sz % MiB)) = 0
check "usage does not exceed the hard limit" test "$(total_bytes)" -le $((20480 * 1024))
cur=$(stat -c %s "$R/big")
edquot "a 1 MiB write with less than 1 MiB left is refused" dd if=/dev/zero of="$R/big" bs=1M count=1 \
	seek=$((cur / MiB)) conv=notrunc status=none
check "and leaves no partial data" test "$(stat -c %s "$R/big")" = "$cur"
check "rewriting allocated data passes at the hard limit" dd if=/dev/urandom of="$R/big" bs=1M count=1 conv=notrunc status=none
rm -f "$R/big"
same_as_scan "usage equals a fresh scan after the block scenarios"

# ---- truncate, sparse files, fallocate ----
check "sparse: truncate up to 1 GiB" truncate -s 1G "$R/sparse"
check "sparse file costs nothing" test "$(total_bytes)" = "$(scan_usage | awk '$1 == "total" { print $2 }')"
b0=$(total_bytes)
check "write 4 KiB into the hole" dd if=/dev/urandom of="$R/sparse" bs=4k count=1 seek=1000 conv=notrunc status=none
check "the hole write costs 4 KiB" test $(($(total_bytes) - b0)) = 4096
edquot "fallocate over the hard limit refused" fallocate -l 100M "$R/falloc"
check "the refused fallocate allocated nothing" test "$(stat -c %b "$R/falloc" 2>/dev/null || echo 0)" = 0
b0=$(total_bytes)
check "fallocate 2 MiB" fallocate -l 2M "$R/falloc"
check "fallocate charged 2 MiB" test $(($(total_bytes) - b0)) = $((2 * MiB))
check "punch a 1 MiB hole" fallocate -p -o 0 -l 1M "$R/falloc"
check "the hole freed 1 MiB" test $(($(total_bytes) - b0)) = $((1 * MiB))
b0=$(total_bytes)
check "truncate down frees" sh -c "truncate -s 0 '$R/falloc' && test \$((\$(total_bytes 2>/dev/null || true)+0)) -ge 0"
check "truncate down freed 1 MiB" test $((b0 - $(total_bytes))) = $((1 * MiB))
rm -f "$R/sparse" "$R/falloc"
same_as_scan "usage equals a fresh scan after sparse/fallocate/truncate"

# ---- blocks the host filesystem allocates by itself, after the write ----
# ext4 allocates the extent tree of a fragmented file when it writes the data back: those blocks
# were never charged, but given back when the file went, and the usage sank below the truth by
# about a block per file (past the hard limit in the end). Written back (sync) before each step.
frag() {
	python3 -c "import os, sys
fd = os.open(sys.argv[1], os.O_CREAT | os.O_WRONLY, 0o644)
for i in range(600): os.pwrite(fd, b'x' * 4096, i * 8192)" "$1"
}
# Left alone after its writeback, a file is measured when the usage is asked for (vzquota stat).
frag "$R/frag-idle" && sync
same_as_scan "a fragmented file written back and left alone: usage equals a fresh scan"
rm "$R/frag-idle"
for k in 1 2 3 4 5; do
	frag "$R/frag$k" && sync && rm "$R/frag$k"
	frag "$R/frag-kept$k" && sync && truncate -s 100K "$R/frag-kept$k"
done
# The kernel forgets the inode (memory pressure) before the file goes, written back or not yet:
# charged when it is forgotten (its writeback started then).
frag "$R/frag-forgotten" && sync && echo 2 >/proc/sys/vm/drop_caches && sleep 0.5 && rm "$R/frag-forgotten"
frag "$R/frag-dirty" && echo 2 >/proc/sys/vm/drop_caches && sleep 0.5 && sync && rm "$R/frag-dirty"
sync
same_as_scan "fragmented files written back, then removed or truncated: usage equals a fresh scan"
# Written, then the daemon stops (and the usage is written back) before the host wrote it back:
# charged at the stop, so its removal after the next mount gives back what was charged.
frag "$R/frag-stop"
expect_rc "umount after a fragmented write" 0 sf umount "$R"
sync
expect_rc "mount again" 0 sf mount "$P" "$R" -o quota=101
rm "$R/frag-stop"
sync
same_as_scan "a fragmented file written before a stop, removed after it: usage equals a fresh scan"
# With few inode descriptors the forgotten inodes are reopened from their handles to be measured.
expect_rc "umount" 0 sf umount "$R"
expect_rc "mount with inode_fds=16" 0 sf mount "$P" "$R" -o quota=101,inode_fds=16
for k in $(seq 24); do frag "$R/frag-many$k"; done
echo 2 >/proc/sys/vm/drop_caches
sleep 0.5
sync
rm -f "$R"/frag-many*
sync
same_as_scan "24 fragmented files, inode descriptors closed for the limit, forgotten, removed: usage equals a fresh scan"
expect_rc "umount" 0 sf umount "$R"
expect_rc "mount with quota" 0 sf mount "$P" "$R" -o quota=101
rm -f "$R"/frag-kept*
same_as_scan "... and once they are removed too"

# ---- inodes and hard links ----
i0=$(total_inodes)
mkdir "$R/many"
n=$(total_inodes)
for i in $(seq $((150 - n))); do : >"$R/many/f$i" || break; done
edquot "creating past the inode hard limit refused" touch "$R/many/over"
edquot "mkdir past the inode hard limit refused" mkdir "$R/many/overdir"
edquot "mknod past the inode hard limit refused" mkfifo "$R/many/fifo"
edquot "symlink past the inode hard limit refused" ln -s x "$R/many/sl"
check "at the inode limit, a hard link passes (no inode)" ln "$R/many/f1" "$R/many/f1-link"
check "the link costs no inode" test "$(total_inodes)" = 150
rm "$R/many/f1"
check "removing one of two links frees no inode" test "$(total_inodes)" = 150
rm "$R/many/f1-link"
check "removing the last link frees it" test "$(total_inodes)" = 149
rm -rf "$R/many"
check "rm -rf gives every inode back" test "$(total_inodes)" = "$i0"

# ---- rename ----
mkdir -p "$R/d1" "$R/d2"
dd if=/dev/urandom of="$R/d1/x" bs=64k count=1 status=none
dd if=/dev/urandom of="$R/d2/y" bs=128k count=1 status=none
b0=$(total_bytes) i0=$(total_inodes)
check "rename across directories" mv "$R/d1/x" "$R/d2/x"
check "rename across directories costs nothing" test "$(total_bytes) $(total_inodes)" = "$b0 $i0"
check "rename over an existing file" mv -f "$R/d2/x" "$R/d2/y"
check "the replaced file is freed" test "$(total_bytes) $(total_inodes)" = "$((b0 - 131072)) $((i0 - 1))"
same_as_scan "usage equals a fresh scan after renames"

# ---- space the accounting must not miss ----
# settled_as_scan NAME: the usage equals a fresh scan within 2 s (a release reaches the daemon
# after close() returns).
settled_as_scan() {
	local i
	for i in $(seq 20); do [ "$(file_usage)" = "$(scan_usage)" ] && break; sleep 0.1; done
	same_as_scan "$1"
}
# X MiB preallocated past the end of an X MiB hole, with room for less than 2X: filling the hole
# must be charged, not taken for space the preallocation already holds.
x=$(( (20480 * 1024 - $(total_bytes)) / MiB * 2 / 3 ))
check "${x} MiB preallocated past the end of a ${x} MiB hole" sh -c "truncate -s ${x}M '$R/pre' && fallocate -n -o ${x}M -l ${x}M '$R/pre'"
edquot "filling the hole below the end is charged (refused at the hard limit)" \
	dd if=/dev/zero of="$R/pre" bs=1M count=$x conv=notrunc status=none
check "usage does not exceed the hard limit" test "$(total_bytes)" -le $((20480 * 1024))
rm -f "$R/pre"
check "again, ${x} MiB past the end of a ${x} MiB hole" sh -c "truncate -s ${x}M '$R/pre' && fallocate -n -o ${x}M -l ${x}M '$R/pre'"
edquot "fallocate of the hole below the end is charged (refused at the hard limit)" fallocate -o 0 -l ${x}M "$R/pre"
check "usage still does not exceed the hard limit" test "$(total_bytes)" -le $((20480 * 1024))
rm -f "$R/pre"
b0=$(total_bytes)
python3 - "$R" >"$T/orphan.out" 2>&1 <<'PY'
import errno, os, sys
R = sys.argv[1]
fds = []
for i in range(3):
    fd = os.open(f"{R}/orphan{i}", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.write(fd, b"x" * (8 << 20))
    except OSError as e:
        print("write", i, errno.errorcode[e.errno])
    os.unlink(f"{R}/orphan{i}")
    fds.append(fd)
os.ftruncate(fds[0], 0)
print("truncated")
PY
check "unlinked files held open keep their charge: the third 8 MiB is refused" \
	grep -qx "write 2 EDQUOT" "$T/orphan.out"
check "truncating an unlinked open file frees its blocks once" grep -qx truncated "$T/orphan.out"
settled_as_scan "after the last close of unlinked files, usage equals a fresh scan"
python3 - "$R" <<'PY'
import os, sys
R = sys.argv[1]
fd = os.open(f"{R}/xa", os.O_CREAT | os.O_RDWR, 0o644)
os.write(fd, b"x" * 8192)
os.unlink(f"{R}/xa")
os.setxattr(fd, "user.big", b"v" * 3000)
os.close(fd)
fd = os.open(f"{R}/xb", os.O_CREAT | os.O_RDWR, 0o644)
os.setxattr(fd, "user.big", b"v" * 3000)
os.unlink(f"{R}/xb")
os.removexattr(fd, "user.big")
os.close(fd)
PY
settled_as_scan "an xattr added to or removed from an unlinked open file: usage equals a fresh scan"
exec 7<>"$R/open-rename"
dd if=/dev/zero bs=1M count=1 status=none >&7
: >"$R/victim-name"
check "rename over a file that is open" mv -f "$R/victim-name" "$R/open-rename"
check "the replaced open file keeps its charge" test "$(total_bytes)" -ge $((b0 + MiB))
exec 7>&-
rm -f "$R/open-rename"
settled_as_scan "after it is closed, usage equals a fresh scan"
mkdir -p "$R/movers" "$R/moved"
check "4 MiB preallocated past the end of an empty file (fallocate -n)" sh -c ": >'$R/kept' && fallocate -n -l 4M '$R/kept'"
for i in $(seq 40); do : >"$R/movers/$(printf 'm%.0s' $(seq 240))$i"; done
: >"$R/movers/over-me"
check "fill to the hard limit" sh -c "dd if=/dev/zero of='$R/fill' bs=4k count=10000 status=none 2>/dev/null; true"
edquot "a symlink needing a block is refused at the hard limit" ln -s "$(printf 'x%.0s' $(seq 200))" "$R/long-link"
edquot "so is any new name within a block of the hard limit (its directory may grow)" ln -s short "$R/short-link"
mkdir -p "$R/names"
for i in $(seq 40); do : >"$R/names/$(printf 'n%.0s' $(seq 240))$i" 2>/dev/null || break; done
check "new names at the hard limit never grow the directory past it" test "$(total_bytes)" -le $((20480 * 1024))
# Renamed in, names grow a directory as created ones do: 40 long names need 3 blocks in "moved".
for f in "$R/movers/m"*; do mv "$f" "$R/moved/" 2>"$T/.err" || break; done
check "renames into another directory at the hard limit are refused with EDQUOT" grep -q "Disk quota exceeded" "$T/.err"
check "renames at the hard limit never grow a directory past it" test "$(total_bytes)" -le $((20480 * 1024))
check "a rename over an existing name passes at the hard limit" mv -f "$R/movers/$(ls "$R/movers" | grep '^m' | head -1)" "$R/movers/over-me"
# writing into space preallocated past the end needs no new block: it passes at the hard limit
check "writes into space preallocated past the end pass at the hard limit" \
	dd if=/dev/urandom of="$R/kept" bs=64k count=64 conv=notrunc status=none
check "... and so does fallocate of it" fallocate -o 0 -l 4M "$R/kept"
check "... they wrote no block past the hard limit" test "$(total_bytes)" -le $((20480 * 1024))
rm -rf "$R/fill" "$R/names" "$R/movers" "$R/moved" "$R/kept"
same_as_scan "usage equals a fresh scan after the hard-limit scenarios"
i0=$(total_inodes)
: >"$R/wsrc"
check "a rename leaving a whiteout" python3 -c "import ctypes, sys; sys.exit(ctypes.CDLL(None).renameat2(-100, b'$R/wsrc', -100, b'$R/wdst', 4) != 0)"
check "the whiteout is charged an inode" test "$(total_inodes)" = $((i0 + 2))
rm -f "$R/wsrc" "$R/wdst"
same_as_scan "usage equals a fresh scan after whiteouts"

# ---- second level: chown between uids ----
"$VZQUOTA" -q setlimit2 101 -u 1000 1024 1024 10 10 >/dev/null && "$VZQUOTA" -q reload2 101 >/dev/null ||
	not_ok "setlimit2 / reload2"
dd if=/dev/urandom of="$R/big2" bs=1M count=2 status=none
dd if=/dev/urandom of="$R/small" bs=256k count=1 status=none
edquot "chown of 2 MiB to a uid limited to 1 MiB refused" chown 1000 "$R/big2"
check "the refused chown kept the owner" test "$(stat -c %u "$R/big2")" = 0
check "chown of 256 KiB passes" chown 1000:1000 "$R/small"
check "usage moved to uid 1000" sh -c "$(declare -f file_usage quota_sync); QTOOL=$QTOOL VZQUOTA=$VZQUOTA; file_usage | grep -qx 'user 1000 262144 1'"
chmod 777 "$R/d1"
check "uid 1000 writes within its limit" setpriv --reuid 1000 --regid 1000 --clear-groups dd if=/dev/zero of="$R/d1/u" bs=256k count=1 status=none
edquot "uid 1000 writing past its limit refused" setpriv --reuid 1000 --regid 1000 --clear-groups dd if=/dev/zero of="$R/d1/u2" bs=1M count=1 status=none
check "chown back to root moves usage back" chown 0:0 "$R/small"
same_as_scan "usage equals a fresh scan after chown (per uid and gid)"
# chown moves usage between uid/gid records only: over the soft limit with the grace expired it
# is not refused, and it does not start the first level's grace again
"$VZQUOTA" -q setlimit 101 -e 2 >/dev/null || not_ok "setlimit short grace"
rm -f "$R/d1/u" "$R/big2"
dd if=/dev/zero of="$R/over" bs=1M count=$(( (10240 * 1024 - $(total_bytes)) / MiB + 1 )) status=none
sleep 3
edquot "over soft, grace expired: a write is refused" dd if=/dev/zero of="$R/over2" bs=4k count=1 status=none
check "over soft, grace expired: chown passes (the first level does not change)" chown 1000:1000 "$R/small"
edquot "and the chown did not start the grace again" dd if=/dev/zero of="$R/over2" bs=4k count=1 status=none
check "chown back passes too" chown 0:0 "$R/small"
check "over soft, grace expired: an xattr that needs no block passes" \
	python3 -c "import os, sys; os.setxattr(sys.argv[1], 'user.small', b'1')" "$R/small"
rm -f "$R/over" "$R/over2"
"$VZQUOTA" -q setlimit 101 -e 1h >/dev/null || not_ok "setlimit grace back"
same_as_scan "usage equals a fresh scan after chown past grace"
# a new name may grow its directory by a block, charged to the directory's owner: a user at its
# block hard limit still creates empty files and links in a directory of root's
U1000="setpriv --reuid 1000 --regid 1000 --clear-groups"
$U1000 sh -c "dd if=/dev/zero of='$R/d1/ufill' bs=4k count=1000 status=none 2>/dev/null; true"
check "uid 1000 filled to its block hard limit" sh -c "$(declare -f file_usage quota_sync); QTOOL=$QTOOL VZQUOTA=$VZQUOTA; file_usage | grep -qx 'user 1000 1048576 [0-9]*'"
check "uid 1000 at its block hard limit creates an empty file in root's directory" $U1000 touch "$R/d1/uempty"
check "and a hard link there" $U1000 ln "$R/d1/uempty" "$R/d1/uempty2"
edquot "but not a directory (its first block is the user's)" $U1000 mkdir "$R/d1/udir"
rm -f "$R/d1/ufill" "$R/d1/uempty" "$R/d1/uempty2" "$R/d1/u" "$R/d1/u2"
same_as_scan "usage equals a fresh scan after names created at a user's hard limit"

# ---- the second level changes at the next start, not under a running daemon ----
# (turned on, it would count uid/gid usage from zero; turned off, limits would stop at once)
expect_rc "setlimit -s 0 while served" 0 "$VZQUOTA" setlimit 101 -s 0
check "setlimit says the change takes effect at the next start" grep -q "(notice).*next start" "$T/.stderr"
expect_rc "stat -t: the daemon's second level is still active" 0 "$VZQUOTA" stat 101 -t
check "stat -t shows it requested off, active" sh -c "'$VZQUOTA' stat 101 -t | grep -qx 'User/group quota: off,active'"
edquot "uid 1000 is still limited until the next start" $U1000 dd if=/dev/zero of="$R/d1/u3" bs=1M count=2 status=none
expect_rc "umount" 0 sf umount "$R"
expect_rc "mount: the second level is off now" 0 sf mount "$P" "$R" -o quota=101
expect_rc "stat -t: inactive (9)" 9 "$VZQUOTA" stat 101 -t
check "uid 1000 is not limited" $U1000 dd if=/dev/zero of="$R/d1/u3" bs=1M count=2 status=none
expect_rc "setlimit -s 1 while served" 0 "$VZQUOTA" setlimit 101 -s 1
expect_rc "stat -t: still inactive (9)" 9 "$VZQUOTA" stat 101 -t
expect_rc "setlimit2 while the second level is not active: 6" 6 "$VZQUOTA" setlimit2 101 -u 1000 1024 1024 10 10
check "uid 1000 writes, not counted from zero meanwhile" $U1000 dd if=/dev/zero of="$R/d1/u4" bs=512k count=1 status=none
check "the file keeps the request and DIRTY after a sync" sh -c "quota_sync() { '$VZQUOTA' stat 101 >/dev/null 2>&1; }; quota_sync 101; test \$(( \$('$QTOOL' file 101 | awk '/^flags/ { print \$2 }') & 6 )) = 6"
check "no uid 1000 usage counted from zero" sh -c "! '$QTOOL' file 101 | grep -qx 'user 1000 524288 1'"
expect_rc "umount" 0 sf umount "$R"
check "the clean stop keeps the request and DIRTY" sh -c "test \$(( \$('$QTOOL' file 101 | awk '/^flags/ { print \$2 }') & 6 )) = 6"
expect_rc "mount: counts uid/gid usage" 0 sf mount "$P" "$R" -o quota=101
expect_rc "stat -t: active" 0 "$VZQUOTA" stat 101 -t
check "uid 1000's usage counted" sh -c "$(declare -f file_usage quota_sync); QTOOL=$QTOOL VZQUOTA=$VZQUOTA; file_usage | grep -qx 'user 1000 2621440 2'"
same_as_scan "per uid/gid usage equals a fresh scan after the second level came on"
rm -f "$R/d1/u3" "$R/d1/u4"

# ---- clean stop writes back; kill -9 is detected and rescanned ----
expect_rc "umount" 0 sf umount "$R"
check "clean stop clears LIVE" sh -c "test \$(( \$('$QTOOL' file 101 | awk '/^flags/ { print \$2 }') & 256 )) = 0"
check "and keeps SERVED (vzquota off trusts the usage written back)" sh -c "test \$(( \$('$QTOOL' file 101 | awk '/^flags/ { print \$2 }') & 512 )) = 512"
expect_rc "mount again" 0 sf mount "$P" "$R" -o quota=101
dd if=/dev/urandom of="$R/after" bs=1M count=1 status=none
pid=$(sed -n 's/^pid=//p' "$SIMFS_RUN_DIR"/*.state)
kill -9 "$pid"
sleep 0.5
dd if=/dev/urandom of="$P/behind" bs=1M count=1 status=none	# changed while nobody enforces
check "a killed daemon leaves LIVE in the file" sh -c "test \$(( \$('$QTOOL' file 101 | awk '/^flags/ { print \$2 }') & 256 )) = 256"
check "simfs list shows it dead" sh -c "'$SIMFS' list | grep -q ' dead\$'"
check "the killed daemon's socket is still there" test -S "$VZQ_RUN_DIR/101.sock"
expect_rc "umount after kill -9" 0 sf umount "$R"
check "umount of the killed instance removes its quota socket" test ! -e "$VZQ_RUN_DIR/101.sock"
check "and its empty log" sh -c "! ls '$SIMFS_RUN_DIR' | grep -v '\\.lock$' | grep -q ."
# 200 extents still in the host's page cache when the tree is counted: ext4 allocates their extent
# index block only when it writes them, so a count must have them written first
/usr/bin/python3 -c "
import os
fd = os.open('$P/frag', os.O_WRONLY | os.O_CREAT, 0o644)
for i in range(200): os.pwrite(fd, b'x' * 4096, i * 8192)
os.close(fd)"
expect_rc "vzquota on after the kill: recounts (the quota was left live), not 'already running'" 0 "$VZQUOTA" -q on 101
expect_rc "mount after kill -9 (rescans)" 0 sf mount "$P" "$R" -o quota=101
sync	# the page cache written, as it will be
same_as_scan "after kill -9 and remount, usage equals a fresh scan"
rm "$R/frag"
same_as_scan "and after a file the count found in the page cache is removed"
expect_rc "final umount" 0 sf umount "$R"
check "nothing left mounted" sh -c "! grep -q ' $R ' /proc/self/mountinfo"
check "the live lock file stays while the quota exists" test -e "$VZQ_RUN_DIR/101.live"
check "a clean stop removes the socket" test ! -e "$VZQ_RUN_DIR/101.sock"
# killed again, and this time the quota is turned off before the dead mount is cleaned up
expect_rc "mount again" 0 sf mount "$P" "$R" -o quota=101
kill -9 "$(sed -n 's/^pid=//p' "$SIMFS_RUN_DIR"/*.state)"
sleep 0.5
expect_rc "vzquota off after kill -9 (dead mount still there)" 0 "$VZQUOTA" -q off 101
check "vzquota off removes the killed daemon's socket" test ! -e "$VZQ_RUN_DIR/101.sock"
expect_rc "umount of the dead mount" 0 sf umount "$R"
check "nothing left in the simfs run directory" sh -c "! ls '$SIMFS_RUN_DIR' | grep -v '\\.lock$' | grep -q ."
check "only the lock file left in the quota run directory" sh -c "[ \"\$(ls '$VZQ_RUN_DIR')\" = 101.live ]"
expect_rc "on again" 0 "$VZQUOTA" -q on 101
expect_rc "and a mount serves it again" 0 sf mount "$P" "$R" -o quota=101
expect_rc "stat asks the new daemon" 0 "$VZQUOTA" stat 101
expect_rc "umount" 0 sf umount "$R"
"$VZQUOTA" -q off 101 >/dev/null 2>&1
expect_rc "drop" 0 "$VZQUOTA" -q drop 101
check "drop removes the live lock file too" test ! -e "$VZQ_RUN_DIR/101.live"
# ---- a name unlinked while it is opened, created, truncated or chowned ----
# Four loops on 20 shared names (create with data, chown, unlink, truncate) left the usage 50-650
# KiB below a fresh scan, and records of uids that owned nothing: a truncate or chown of a name
# looked up just before its unlink, or an open (a create) that lost the race with it, counted the
# blocks or the owner of an inode whose charge the unlink had already given back.
PR=$T/pr RR=$T/rr
mkdir -p "$PR" "$RR"
quota_init 140 "$PR" 10000000 10000000 100000 100000 || not_ok "init and on of quota 140"
expect_rc "mount for the unlink races" 0 sf mount "$PR" "$RR" -o quota=140
race() {
	python3 - "$1" "$RR" <<'PY'
import os, random, sys
op, r = sys.argv[1], sys.argv[2]
data = os.urandom(65536)
for i in range(3000):
    f = "%s/f%d" % (r, random.randrange(20))
    try:
        if op == "c":
            fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644); os.write(fd, data); os.close(fd)
        elif op == "w":
            u = random.choice([0, 1000, 1001]); os.chown(f, u, u)
        elif op == "u":
            os.unlink(f)
        else:
            os.truncate(f, random.choice([0, 4096, 32768, 131072]))
    except OSError:
        pass
PY
}
for round in 1 2 3; do
	race c & race w & race u & race t &
	wait
done
for i in $(seq 20); do
	quota_sync 140
	[ "$("$QTOOL" file 140 | grep -v '^flags')" = "$("$QTOOL" scan "$PR")" ] && break
	sleep 0.1
done
a=$("$QTOOL" file 140 | grep -v '^flags') b=$("$QTOOL" scan "$PR")
if [ "$a" = "$b" ]; then ok "create, chown, unlink and truncate racing on shared names: usage equals a fresh scan"
else not_ok "create, chown, unlink and truncate racing on shared names: usage equals a fresh scan (daemon: $(echo $a) / scan: $(echo $b))"; fi
expect_rc "umount of quota 140" 0 sf umount "$RR"
"$VZQUOTA" -q off 140 >/dev/null
expect_rc "drop quota 140" 0 "$VZQUOTA" -q drop 140
# ---- the ugid limit (-u): the second level keeps at most that many uid/gid records ----
PU=$T/pu RU=$T/ru
mkdir -p "$PU" "$RU"
"$VZQUOTA" -q init 130 -p "$PU" -b 100000 -B 100000 -i 100000 -I 100000 -e 60 -n 60 -s 1 -u 10 >/dev/null &&
	"$VZQUOTA" -q on 130 >/dev/null || not_ok "init and on of quota 130 -s 1 -u 10"
expect_rc "mount with a ugid limit of 10" 0 sf mount "$PU" "$RU" -o quota=130
echo data >"$RU/g"
check "5000 chowns of one file to new uids/gids" python3 -c "import os
for i in range(5000): os.chown('$RU/g', 1000000 + i, 1000000 + i)"
out=$("$VZQUOTA" stat 130 -t)
size=$(stat -c %s "$VZQ_DIR/quota.130")
check "the chown storm leaves a small quota file ($size bytes)" test "$size" -le 1024
check "only the records with usage are left (root's, the last owner's)" bash -c "echo '$out' | grep -qx 'Ugids: loaded 4, total 4, limit 10'"
check "the old owners' records are gone" bash -c "! echo '$out' | grep -q '^1000000 '"
check "the limit was not exceeded" bash -c "echo '$out' | grep -qx 'Ugid limit was exceeded: no'"
check "after the storm the usage equals a fresh scan" test "$("$QTOOL" file 130 | grep -v '^flags')" = "$("$QTOOL" scan "$PU")"
# 12 new owners: 4 records are left for 2 of them; the others are not counted at the second level
for i in $(seq 2000 2011); do echo x >"$RU/o$i" && chown $i:$i "$RU/o$i"; done
# at once, before the daemon wrote its records back: the file alone seemed to have room
expect_rc "setlimit2 of a new id when the daemon has no room for it is refused (3)" 3 \
	"$VZQUOTA" setlimit2 130 -u 3000 100 200 10 20
check "... and the quota file has no record of it" bash -c "! '$VZQUOTA' show 130 -t 2>/dev/null | grep -q '^3000 '"
out=$("$VZQUOTA" stat 130 -t)
check "no record past the limit" bash -c "echo '$out' | grep -qx 'Ugids: loaded 10, total 10, limit 10'"
check "stat -t says the limit was exceeded" bash -c "echo '$out' | grep -qx 'Ugid limit was exceeded: yes'"
check "show -t says so too" bash -c "'$VZQUOTA' show 130 -t 2>/dev/null | grep -qx 'Ugid limit was exceeded: yes'"
check "batch: the exceeded line is 1" test "$("$VZQUOTA" -b stat 130 -t | sed -n 5p)" = 1
check "the first level counts every owner" test "$("$QTOOL" file 130 | awk '$1 == "total"')" = "$("$QTOOL" scan "$PU" | awk '$1 == "total"')"
check "every record kept is exact" bash -c "! comm -23 <('$QTOOL' file 130 | grep -v '^flags' | sort) <('$QTOOL' scan '$PU' | sort) | grep -q ."
rm "$RU/o2000"
out=$("$VZQUOTA" stat 130 -t)
check "the records of an owner whose usage goes to zero are dropped" bash -c "echo '$out' | grep -qx 'Ugids: loaded 8, total 8, limit 10' && ! echo '$out' | grep -q '^2000 '"
expect_rc "umount of quota 130" 0 sf umount "$RU"
check "the file written at the stop keeps the limit" bash -c "'$VZQUOTA' show 130 -t 2>/dev/null | grep -qx 'Ugids: loaded 8, total 8, limit 10'"
rm -f "$PU"/o*
"$VZQUOTA" -q off 130 >/dev/null && "$VZQUOTA" -q on 130 >/dev/null
check "on recounts a quota whose limit was exceeded: room again" bash -c "'$VZQUOTA' show 130 -t 2>/dev/null | grep -qx 'Ugid limit was exceeded: no'"
"$VZQUOTA" -q off 130 >/dev/null
expect_rc "drop quota 130" 0 "$VZQUOTA" -q drop 130
# One record left under the limit (root's two of 3), a file created by a new uid and gid: the uid
# takes the last record, the gid finds none (the reservation made and undone around the create
# dropped the uid's record, and the limit, exceeded then, let none be made again).
PV=$T/pv RV=$T/rv
mkdir -p "$PV" "$RV"
chmod 777 "$PV"
"$VZQUOTA" -q init 131 -p "$PV" -b 10000 -B 20000 -i 100 -I 200 -e 1h -n 1h -s 1 -u 3 >/dev/null &&
	"$VZQUOTA" -q on 131 >/dev/null || not_ok "init and on of quota 131 -s 1 -u 3"
expect_rc "mount with a ugid limit of 3" 0 sf mount "$PV" "$RV" -o quota=131
check "uid 1001 creates a file" setpriv --reuid 1001 --regid 1001 --clear-groups touch "$RV/f"
quota_sync 131
check "its uid takes the last record" bash -c "'$QTOOL' file 131 | grep -q '^user 1001 '"
check "its gid finds none" bash -c "! '$QTOOL' file 131 | grep -q '^group 1001 '"
check "the limit is exceeded" bash -c "'$VZQUOTA' stat 131 -t | grep -qx 'Ugid limit was exceeded: yes'"
expect_rc "umount of quota 131" 0 sf umount "$RV"
"$VZQUOTA" -q off 131 >/dev/null
expect_rc "drop quota 131" 0 "$VZQUOTA" -q drop 131
# ---- the quota directory full: the daemon cannot write its usage back. File errors are exit 4
# for every command (not 3, the daemon's failure), and stat still shows the usage, the daemon's (upstream's
# reads the kernel's and needs no room) ----
PF=$T/pf RF=$T/rf QF=$T/qfull
mkdir -p "$PF" "$RF" "$QF"
if mount -t tmpfs -o size=64k tmpfs "$QF"; then
	at_exit "umount -l '$QF'"
	VZQ_DIR=$QF quota_init 150 "$PF" 10240 20480 100 150 || not_ok "init and on of quota 150"
	VZQ_DIR=$QF expect_rc "mount of quota 150" 0 sf mount "$PF" "$RF" -o quota=150
	dd if=/dev/zero of="$RF/f" bs=4k count=10 status=none
	dd if=/dev/zero of="$QF/fill" bs=4k status=none 2>/dev/null
	want=$("$QTOOL" scan "$PF" | awk '$1 == "total" { print $2 / 1024, $3 }')
	out=$(VZQ_DIR=$QF "$VZQUOTA" -b stat 150 2>"$T/.err")
	check "stat with the quota directory full: exit 0 ($?)" test $? = 0
	check "... shows the daemon's usage ($want)" test "$(echo "$out" | awk '{ printf "%s ", $1 }')" = "$want "
	check "... and warns, one line, that the file could not be written" bash -c "test \$(wc -l <'$T/.err') = 1 && grep -q 'No space left on device.*usage shown is the simfs daemon' '$T/.err'"
	VZQ_DIR=$QF expect_rc "stat -f with the quota directory full: 0" 0 "$VZQUOTA" stat 150 -f
	VZQ_DIR=$QF expect_rc "stat -t with the quota directory full: 0" 0 "$VZQUOTA" stat 150 -t
	check "stat -t says the uid/gid usage is the last written back" grep -q "uid/gid usage as last written back" "$T/.stderr"
	VZQ_DIR=$QF expect_rc "setlimit2 with the quota directory full: 4 (the file)" 4 "$VZQUOTA" setlimit2 150 -u 2000 1 2 3 4
	VZQ_DIR=$QF expect_rc "setlimit with the quota directory full: 4" 4 "$VZQUOTA" setlimit 150 -b 100001
	rm "$QF/fill"
	VZQ_DIR=$QF expect_rc "room again: stat 0" 0 "$VZQUOTA" stat 150
	check "... without a warning" test ! -s "$T/.stderr"
	VZQ_DIR=$QF expect_rc "umount of quota 150" 0 sf umount "$RF"
	VZQ_DIR=$QF "$VZQUOTA" -q off 150 >/dev/null
	VZQ_DIR=$QF expect_rc "drop quota 150" 0 "$VZQUOTA" -q drop 150
	umount "$QF"
else
	not_ok "quota directory full: cannot mount a tmpfs here"
fi
# a socket a killed daemon left, and the quota dropped without an off or a umount first
"$VZQUOTA" -q init 101 -p "$P" -b 100000 -B 100000 -i 1000 -I 1000 -e 60 -n 60 >/dev/null && "$VZQUOTA" -q on 101
expect_rc "mount for the drop case" 0 sf mount "$P" "$R" -o quota=101
kill -9 "$(sed -n 's/^pid=//p' "$SIMFS_RUN_DIR"/*.state)"
sleep 0.5
expect_rc "drop -f after kill -9" 0 "$VZQUOTA" -q drop 101 -f
check "drop removes the killed daemon's socket" test ! -e "$VZQ_RUN_DIR/101.sock"
expect_rc "umount of the dead mount" 0 sf umount "$R"
check "the quota run directory is empty" sh -c "! ls '$VZQ_RUN_DIR' | grep -q ."
finish
