#!/usr/bin/env bash
# simfs on FUSE over io_uring (fuse.enable_uring=1, kernel 6.14+): the daemon takes its requests
# from per-CPU ring queues. Checked: the ring is in use; parallel writers and readers see exactly
# their data; quota limits hold (EDQUOT, exact usage); kill -9 during a workload leaves no stuck
# process and the next mount works; and the POSIX, quota and lifecycle suites pass again over the ring.
# The kernel parameter is global: it is set for this test and put back however the test ends.
source "$(dirname "$0")/../lib.sh"
source "$ROOT/tests/tools/simfs-lib.sh"
simfs_skip_unless_root simfs_uring

PARAM=/sys/module/fuse/parameters/enable_uring
if ! [ -w "$PARAM" ]; then
	ok "skip: this kernel has no FUSE over io_uring ($PARAM)"
	finish
fi
old=$(cat "$PARAM")
at_exit "echo $old >$PARAM"
echo Y >"$PARAM"

P=$T/p R=$T/r
mkdir -p "$P" "$R"
pid_of() { sed -n 's/^pid=//p' "$(grep -l "^root=$1\$" "$SIMFS_RUN_DIR"/*.state)"; }
rings_of() { find "/proc/$1/fd" -lname 'anon_inode:\[io_uring\]' 2>/dev/null | wc -l; }
cpus=$(getconf _NPROCESSORS_CONF)

# ---- the ring is used ----
expect_rc "mount" 0 sf mount "$P" "$R"
pid=$(pid_of "$R")
check "the daemon serves from a ring per thread, 4 threads per CPU queue" test "$(rings_of "$pid")" -ge $((cpus * 4))

mkdir -p "$T/p2" "$T/r2"
expect_rc "a second instance with -o nouring" 0 sf mount "$T/p2" "$T/r2" -o nouring
check "-o nouring stays on /dev/fuse" test "$(rings_of "$(pid_of "$T/r2")")" = 0
expect_rc "umount the nouring instance" 0 sf umount "$T/r2"

# ---- parallel writers and readers ----
writer() { # writer N: 40 files of random sizes, their digests in $T/sums.N
	local i n
	mkdir -p "$R/w$1"
	for i in $(seq 40); do
		n=$(((RANDOM * 37 + i * 4099) % 2000000 + 1))
		head -c "$n" /dev/urandom >"$R/w$1/f$i" || return 1
	done
	(cd "$R/w$1" && sha256sum f*) >"$T/sums.$1"
}
for w in 1 2 3 4; do writer "$w" & done
wait
same=0
for w in 1 2 3 4; do (cd "$P/w$w" && sha256sum -c --quiet "$T/sums.$w") || same=1; done
check "4 parallel writers: the host files hold exactly what was written" test "$same" = 0
sync
echo 3 >/proc/sys/vm/drop_caches
same=0
for w in 1 2 3 4; do (cd "$R/w$w" && sha256sum -c --quiet "$T/sums.$w") & done
for w in 1 2 3 4; do wait -n || same=1; done
check "4 parallel readers, cold cache: every file reads back intact" test "$same" = 0
check "a 1 MiB-block copy through the mount" sh -c "cat '$R'/w1/* >'$R/big' && cat '$P'/w1/* | cmp - '$R/big'"
check "directory listing over the ring" test "$(ls "$R/w2" | wc -l)" = 40
expect_rc "umount" 0 sf umount "$R"
check "no ring thread left" sh -c "! [ -d /proc/$pid ] || grep -q '^State:.*Z' /proc/$pid/status"

# ---- quota over the ring ----
rm -rf "$P" && mkdir -p "$P"
quota_init 777 "$P" 4096 8192 1000 2000 0
expect_rc "mount with quota" 0 sf mount "$P" "$R" -o quota=777
check "a write under the soft limit" sh -c "head -c 3M /dev/urandom >'$R/three'"
check "a write past the soft limit with no grace fails with EDQUOT" sh -c "! head -c 4M /dev/urandom >'$R/more' 2>'$T/err' && grep -q 'Disk quota exceeded' '$T/err'"
rm -f "$R/more"
quota_sync 777
used=$("$QTOOL" file 777 | grep -v '^flags')
scan=$("$QTOOL" scan "$P")
check "usage kept over the ring equals a fresh scan" test -n "$used" -a "$used" = "$scan"
expect_rc "umount with quota" 0 sf umount "$R"

# ---- SIGTERM while files are open and written ----
# The ring threads hold /dev/fuse: stopped, they must stop serving, so that nothing is charged
# after the final write-back (the usage equals a scan) and the writers get an error at once.
rm -rf "$P" && mkdir -p "$P"
quota_init 778 "$P" 10000000 10000000 100000 100000 0
expect_rc "mount with quota for SIGTERM" 0 sf mount "$P" "$R" -o quota=778
pid=$(pid_of "$R")
cat >"$T/tight.py" <<'PY'
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
os.write(fd, b"y" * 4096)
open(sys.argv[2], "w").close()	# writing through the mount: ready for the SIGTERM
n = 0
while True:
    try:
        os.write(fd, b"y" * 4096)
        n += 1
        if n % 256 == 0:
            os.ftruncate(fd, 0)
    except OSError:
        print(time.monotonic())
        break
PY
# The writers must be writing through the mount before the SIGTERM (a writer that started after it
# would write into the host directory for ever): each says so once its first write went through.
writers=()
for k in 1 2 3; do python3 "$T/tight.py" "$R/t$k" "$T/ready$k" >"$T/tight$k" 2>&1 & writers+=($!); done
check "three writers are writing through the mount" \
	timeout 60 sh -c "until [ -e '$T/ready1' ] && [ -e '$T/ready2' ] && [ -e '$T/ready3' ]; do sleep 0.1; done"
sleep 0.5
kill -TERM "$pid"
stopped=$(python3 -c 'import time; print(time.monotonic())')
check "the daemon stops" timeout 30 sh -c "while [ -d /proc/$pid ]; do sleep 0.1; done"
# (up to 30 s; writers that hang are killed, so that the test goes on)
for _ in $(seq 300); do
	running=$(jobs -rp | grep -cxF -f <(printf '%s\n' "${writers[@]}"))
	[ "$running" = 0 ] && break
	sleep 0.1
done
check "the writers end ($running left)" test "$running" = 0
kill -9 "${writers[@]}" 2>/dev/null
wait
check "the writers got an error within a second of SIGTERM" python3 -c "
import sys
ends = [float(open(sys.argv[i]).read()) for i in (2, 3, 4)]
sys.exit(max(ends) - float(sys.argv[1]) > 1.0)" "$stopped" "$T/tight1" "$T/tight2" "$T/tight3"
used=$("$QTOOL" file 778 | grep -v '^flags')
scan=$("$QTOOL" scan "$P")
check "after SIGTERM under load, the quota file equals a fresh scan" test -n "$used" -a "$used" = "$scan"
sf umount "$R" >/dev/null 2>&1

# ---- kill -9 during a workload ----
rm -rf "$P" && mkdir -p "$P"
expect_rc "mount for kill -9" 0 sf mount "$P" "$R"
pid=$(pid_of "$R")
(for i in $(seq 2000); do echo "$i" >"$R/k$i" || exit 0; done) &
busy=$!
sleep 0.3
kill -9 "$pid"
sleep 0.3
check "the writer does not hang after kill -9" timeout 10 sh -c "while kill -0 $busy 2>/dev/null; do sleep 0.1; done"
check "no stuck daemon after kill -9" sh -c "! [ -d /proc/$pid ] || grep -q '^State:.*Z' /proc/$pid/status"
expect_rc "umount after kill -9" 0 sf umount "$R"
expect_rc "mount again after kill -9" 0 sf mount "$P" "$R"
check "files written before the kill are there" test -f "$R/k1"
expect_rc "umount" 0 sf umount "$R"

# ---- the POSIX, quota and lifecycle suites again, over the ring ----
for suite in simfs_posix simfs_quota simfs_lifecycle; do
	out=$(bash "$ROOT/tests/integration/$suite.sh" 2>&1)
	rc=$?
	n=$(grep -c '^ok ' <<<"$out")
	if [ "$rc" = 0 ] && ! grep -q '^not ok' <<<"$out"; then ok "$suite over the ring ($n checks)"; else
		not_ok "$suite over the ring: $(grep '^not ok' <<<"$out" | head -5 | tr '\n' ';')"
	fi
done
finish
