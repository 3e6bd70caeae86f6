#!/usr/bin/env bash
# simfs mount/umount/list: bad input (one-line errors, documented exit codes), many instances at
# once, read-only views, SIGTERM, umount of a busy mount (and -l), kill -9 of the daemon (no stuck
# process, umount and mount work again), quota off / missing / already enforced.
source "$(dirname "$0")/../lib.sh"
source "$ROOT/tests/tools/simfs-lib.sh"
simfs_skip_unless_root simfs_lifecycle

P=$T/p R=$T/r
mkdir -p "$P" "$R"
alive() { [ -d "/proc/$1" ] && ! grep -q '^State:.*[ZX]' "/proc/$1/status" 2>/dev/null; }
pid_of() { sed -n 's/^pid=//p' "$(grep -l "^root=$1\$" "$SIMFS_RUN_DIR"/*.state)"; }

# ---- bad input ----
check "--help documents the exit codes" sh -c "'$SIMFS' --help | grep -q 'exit codes'"
one_line "no command" 2 sf
one_line "unknown command" 2 sf frobnicate
one_line "mount without ROOT" 2 sf mount "$P"
one_line "unknown option" 2 sf mount "$P" "$R" -o bogus
one_line "bad quota id" 2 sf mount "$P" "$R" -o quota=abc
# numeric options are parsed strictly: no sign, no overflow, no garbage, in range
for o in inode_fds=-1 inode_fds=99999999999999999999 inode_fds=0 inode_fds=1048577 inode_fds=16x "inode_fds= 16" \
	threads=-1 threads=0 threads=1025 threads=18446744073709551617 threads=+4 \
	timeout=-1 timeout=nan timeout=inf timeout=0x10 timeout=1e8 timeout=1e3 timeout=1e+3 timeout=1.5.2 quota=-1 quota=-0 quota=4294967296; do
	one_line "bad numeric option $o" 2 sf mount "$P" "$R" -o "$o"
done
check "no mount left by the bad options" sh -c "! grep -q ' $R ' /proc/mounts"
one_line "list with an argument" 2 sf list extra
check "list with an argument names it" grep -q "unexpected argument 'extra'" "$T/.err"
one_line "unknown flag" 2 sf mount -x "$P" "$R"
one_line "missing PRIVATE" 3 sf mount "$T/nope" "$R"
one_line "missing ROOT" 3 sf mount "$P" "$T/nope"
: >"$T/file"
one_line "PRIVATE is a file" 3 sf mount "$T/file" "$R"
mkdir -p "$P/inner"
one_line "ROOT inside PRIVATE" 4 sf mount "$P" "$P/inner"
one_line "ROOT is PRIVATE" 4 sf mount "$P" "$P/"
one_line "quota file missing" 7 sf mount "$P" "$R" -o quota=555
check "a refused mount of a missing quota leaves no live lock file" test ! -e "$VZQ_RUN_DIR/555.live"
check "nor a socket" test ! -e "$VZQ_RUN_DIR/555.sock"
one_line "vzquota on of that id still says: no quota file" 11 "$VZQUOTA" on 555
"$VZQUOTA" -q init 556 -p "$P" -b 1000 -B 1000 -i 100 -I 100 -e 60 -n 60 >/dev/null
one_line "quota off" 5 sf mount "$P" "$R" -o quota=556
check "quota off: the message says what to do" grep -q "vzquota on 556" "$T/.err"
one_line "umount of something not mounted" 9 sf umount "$R"
rmdir "$P/inner"

# ---- mount, twice, busy, lazy ----
expect_rc "mount" 0 sf mount "$P" "$R"
one_line "the same ROOT twice" 8 sf mount "$P" "$R"
check "list shows it running" sh -c "'$SIMFS' list | grep -q '^$R $P [0-9]* - running\$'"
check "st_dev differs from the host's" test "$(stat -c %d "$R")" != "$(stat -c %d "$P")"
(cd "$R" && exec sleep 30) &
busy=$!
sleep 0.3
one_line "umount of a busy ROOT" 10 sf umount "$R"
expect_rc "umount -l of a busy ROOT" 0 sf umount -l "$R"
check "ROOT is detached" sh -c "! grep -q ' $R ' /proc/self/mountinfo"
kill "$busy"
wait "$busy" 2>/dev/null
for i in $(seq 50); do [ -z "$("$SIMFS" list)" ] && break; sleep 0.1; done
check "the daemon went when its last user did" test -z "$("$SIMFS" list)"

# ---- detached by hand (umount -l while busy), and another filesystem at ROOT ----
gone() { for i in $(seq 50); do alive "$1" || return 0; sleep 0.1; done; return 1; }
# (a lock file per ROOT stays, as in /run/lock: it holds nothing)
run_dir_empty() { [ -z "$(ls -A "$SIMFS_RUN_DIR" | grep -v '\.lock$')" ]; }
mkdir -p "$T/other"
: >"$T/other/marker"
at_exit "umount -l '$R'"	# the bind mounts below, whatever happens
# mount_detached: mounts P at R, keeps it busy (pid $busy, daemon $pid) and detaches it by hand.
mount_detached() {
	expect_rc "mount" 0 sf mount "$P" "$R"
	pid=$(pid_of "$R")
	(cd "$R" && exec sleep 30) &
	busy=$!
	sleep 0.3
	umount -l "$R"
}
mount_detached
expect_rc "simfs umount after umount -l by hand while busy" 0 sf umount "$R"
check "the daemon stopped" gone "$pid"
check "it left neither state nor log (nothing was wrong)" run_dir_empty
kill "$busy"
wait "$busy" 2>/dev/null
mount_detached
mount --bind "$T/other" "$R"
kill -TERM "$pid"
check "stopped after umount -l by hand, the daemon exits" gone "$pid"
check "and leaves alone the filesystem now mounted at ROOT" test -e "$R/marker"
check "and no log" run_dir_empty
kill "$busy"
wait "$busy" 2>/dev/null
umount "$R"
expect_rc "mount" 0 sf mount "$P" "$R"
pid=$(pid_of "$R")
mount --bind "$T/other" "$R"
one_line "simfs umount refuses when another filesystem covers the simfs mount" 10 sf umount "$R"
check "which stays" test -e "$R/marker"
check "and the daemon serves on" alive "$pid"
kill -TERM "$pid"
check "a daemon stopped while covered exits" gone "$pid"
check "without unmounting what covers it" test -e "$R/marker"
check "and says so in its log" grep -q "mounted over ours" "$SIMFS_RUN_DIR"/*.log
umount "$R"
expect_rc "simfs umount of the dead mount beneath" 0 sf umount "$R"
check "nothing of it left mounted" sh -c "! grep -q ' $R ' /proc/self/mountinfo"
check "the log with a message is kept" sh -c "ls '$SIMFS_RUN_DIR' | grep -q '\\.log\$'"
rm -f "$SIMFS_RUN_DIR"/*.log
# another filesystem mounted over the dead mount of a killed daemon: umount and mount take the
# topmost mount at ROOT, so they refuse (exit 10) instead of taking that one away
expect_rc "mount for kill -9, then a tmpfs over it" 0 sf mount "$P" "$R"
pid=$(pid_of "$R")
kill -9 "$pid"
sleep 0.3
if mount -t tmpfs -o size=1m cover "$R"; then
	echo kept >"$R/cover-file"
	one_line "umount of a dead instance under another filesystem refused (exit 10)" 10 sf umount "$R"
	check "... the tmpfs stays, with its file" test "$(cat "$R/cover-file" 2>/dev/null)" = kept
	one_line "mount over a dead instance under another filesystem refused (exit 10)" 10 sf mount "$P" "$R"
	check "... the tmpfs stays, with its file" test "$(cat "$R/cover-file" 2>/dev/null)" = kept
	umount "$R"
else
	not_ok "mount a tmpfs over the dead mount"
fi
expect_rc "once the cover is gone, umount of the dead instance" 0 sf umount "$R"
check "ROOT is free again" sh -c "! grep -q ' $R ' /proc/self/mountinfo"

# ---- the state files: only root writes them ----
expect_rc "mount" 0 sf mount "$P" "$R"
check "the state file is not writable by others ($(stat -c %a "$SIMFS_RUN_DIR"/*.state))" \
	test "$(stat -c %a "$SIMFS_RUN_DIR"/*.state)" = 644
expect_rc "umount" 0 sf umount "$R"

# ---- the same ROOT mounted by several at once: one serves it, the others are told ----
for i in 1 2 3 4 5 6; do sf mount "$P" "$R" >/dev/null 2>"$T/.par$i" & done
wait
check "six mounts of one ROOT at once: one mount ($(grep -c " $R " /proc/self/mountinfo))" \
	test "$(grep -c " $R " /proc/self/mountinfo)" = 1
check "... one daemon ($(pgrep -f "simfs mount $P $R\$" | wc -l))" \
	test "$(pgrep -f "simfs mount $P $R\$" | wc -l)" = 1
check "... five told it is served already" test "$(cat "$T"/.par* | grep -c 'already served')" = 5
expect_rc "umount" 0 sf umount "$R"

# ---- ROOT through a symlink: the mount is at its target ----
ln -s "$R" "$T/rlink"
expect_rc "mount" 0 sf mount "$P" "$R"
one_line "a second mount through a symlink to ROOT: already served (8)" 8 sf mount "$P" "$T/rlink"
expect_rc "umount through the symlink" 0 sf umount "$T/rlink"
check "ROOT is free again" sh -c "! grep -q ' $R ' /proc/self/mountinfo"
ln -s selfloop "$T/selfloop"
one_line "a ROOT that is a symlink loop: exit 3" 3 sf mount "$P" "$T/selfloop"
check "... saying so" grep -q "Too many levels of symbolic links" "$T/.err"
mkdir -p "$T/line
break"
at_exit "umount -l '$T/line
break' 2>/dev/null"	# (if it were mounted after all: the sweep cannot name it)
one_line "a ROOT with a line break: refused (2), on one line" 2 sf mount "$P" "$T/line
break"

# ---- many instances ----
N=8
for i in $(seq $N); do mkdir -p "$T/p$i" "$T/r$i"; done
ok_all=1
for i in $(seq $N); do sf mount "$T/p$i" "$T/r$i" || ok_all=0; done
check "$N instances mounted" test $ok_all = 1
check "list shows $N running" test "$("$SIMFS" list | grep -c ' running$')" = $N
for i in $(seq $N); do echo "$i" >"$T/r$i/id"; done
check "each serves its own PRIVATE" sh -c "for i in \$(seq $N); do test \"\$(cat $T/p\$i/id)\" = \$i || exit 1; done"
ok_all=1
for i in $(seq $N); do sf umount "$T/r$i" || ok_all=0; done
check "$N instances unmounted" test $ok_all = 1
check "list is empty" test -z "$("$SIMFS" list)"

# ---- read-only ----
echo data >"$P/f"
expect_rc "mount -o ro" 0 sf mount "$P" "$R" -o ro
check "ro: reads work" test "$(cat "$R/f")" = data
check "ro: writes fail" sh -c "! echo x 2>/dev/null >'$R/g'"
check "ro: nothing created" test ! -e "$P/g"
expect_rc "umount ro" 0 sf umount "$R"

# ---- SIGTERM ----
expect_rc "mount for SIGTERM" 0 sf mount "$P" "$R"
pid=$(pid_of "$R")
kill -TERM "$pid"
for i in $(seq 50); do alive "$pid" || break; sleep 0.1; done
check "SIGTERM stops the daemon" sh -c "! [ -d /proc/$pid ] || grep -q '^State:.*Z' /proc/$pid/status"
check "SIGTERM unmounts ROOT" sh -c "! grep -q ' $R ' /proc/self/mountinfo"
check "SIGTERM removes the instance" test -z "$("$SIMFS" list)"

# ---- kill -9 ----
expect_rc "mount for kill -9" 0 sf mount "$P" "$R"
pid=$(pid_of "$R")
kill -9 "$pid"
sleep 0.3
check "no stuck process after kill -9" sh -c "! [ -d /proc/$pid ] || grep -q '^State:.*Z' /proc/$pid/status"
check "access to the dead mount fails, does not hang" sh -c "! timeout 5 ls '$R' >/dev/null 2>&1; test \$? -ne 124"
check "list shows it dead" sh -c "'$SIMFS' list | grep -q ' dead\$'"
expect_rc "umount after kill -9" 0 sf umount "$R"
check "ROOT is free again" sh -c "! grep -q ' $R ' /proc/self/mountinfo"
check "the killed instance's files are gone (its log was empty)" run_dir_empty
expect_rc "mount again after kill -9" 0 sf mount "$P" "$R"
check "content intact" test "$(cat "$R/f")" = data
# a killed daemon whose state is then reused by a new mount directly (no umount in between)
pid=$(pid_of "$R")
kill -9 "$pid"
sleep 0.3
expect_rc "mount over a dead instance cleans it up" 0 sf mount "$P" "$R"
expect_rc "umount" 0 sf umount "$R"
check "and nothing is left in the run directory" run_dir_empty
# a killed daemon that had logged something: its log stays, to be read
expect_rc "mount for kill -9 with a log" 0 sf mount "$P" "$R"
pid=$(pid_of "$R")
echo "simfs: something worth reading" >>"$(ls "$SIMFS_RUN_DIR"/*.log)"
kill -9 "$pid"
sleep 0.3
expect_rc "umount after kill -9" 0 sf umount "$R"
check "a log with something in it is kept" grep -q 'worth reading' "$SIMFS_RUN_DIR"/*.log
rm -f "$SIMFS_RUN_DIR"/*.log

# ---- quota already enforced elsewhere ----
"$VZQUOTA" -q on 556 -p "$P" >/dev/null
expect_rc "mount with quota" 0 sf mount "$P" "$R" -o quota=556
mkdir -p "$T/r2"
one_line "the same quota twice" 6 sf mount "$P" "$T/r2" -o quota=556
check "vzquota stat reaches the daemon" "$VZQUOTA" stat 556
expect_rc "umount with quota" 0 sf umount "$R"

# ---- a quota file kept next to the tree (vzquota -R) ----
PQ="$T/private dir/557"
mkdir -p "$PQ" "$T/r3"
echo data >"$PQ/f"
"$VZQUOTA" -q init 557 -R -p "$PQ" -b 1000 -B 2000 -i 100 -I 200 -e 60 -n 60 >/dev/null &&
	"$VZQUOTA" -q on 557 -R -p "$PQ" >/dev/null || not_ok "vzquota init/on -R"
check "the quota file is next to the tree, not in the quota directory" test ! -e "$VZQ_DIR/quota.557"
expect_rc "mount with a quota kept next to the tree" 0 sf mount "$PQ" "$T/r3" -o quota=557
check "it is enforced" sh -c "! dd if=/dev/zero of='$T/r3/big' bs=1M count=3 status=none 2>/dev/null"
check "vzquota stat -R reaches the daemon" "$VZQUOTA" stat 557 -R -p "$PQ"
expect_rc "umount" 0 sf umount "$T/r3"
"$VZQUOTA" -q off 557 -R -p "$PQ" >/dev/null && "$VZQUOTA" -q drop 557 -R -p "$PQ" >/dev/null || not_ok "vzquota off/drop -R"
check "nothing of ours is mounted" sh -c "! grep ' fuse.simfs ' /proc/self/mountinfo | grep -q ' $T/'"
finish
