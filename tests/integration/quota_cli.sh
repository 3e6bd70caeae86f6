#!/usr/bin/env bash
# vzquota and vzdqcheck: every command, option errors and their exit codes, output layout, time
# syntax, what the walk counts (hard links once, sparse files as allocated, no mount crossing), the
# file lock, and the exchange with a live holder (tests/fakelive.c stands in for simfs).
# runner: isolated (touches nothing another test looks at: tests/run may run it beside them)
source "$(dirname "$0")/../lib.sh"
VZQ=${VZQ:-$ROOT/build/san/bin/vzquota}
DQCHECK=$ROOT/build/bin/vzdqcheck
FAKELIVE=$ROOT/build/bin/vzq-fakelive
for tool in "$VZQ" "$DQCHECK" "$FAKELIVE"; do
	[ -x "$tool" ] || { not_ok "setup: $tool is not built (make)"; finish; }
done
export VZQ_DIR=$T/var VZQ_RUN_DIR=$T/run
mkdir -p "$VZQ_DIR" "$T/tree/d"
TREE=$T/tree
LIM=(-b 1000 -B 2000 -i 100 -I 200 -e 1d -n 2h)
q() { "$VZQ" "$@"; }

# ---- init, show, on, stat, off, drop ----
printf 'x%.0s' $(seq 1 5000) >"$TREE/d/file"
expect_rc "init" 0 q init 101 -p "$TREE" "${LIM[@]}"
check "init writes the default file" test -s "$VZQ_DIR/quota.101"
usage=$("$DQCHECK" -q "$TREE")
out=$(q show 101)
check "show layout header" test "$(echo "$out" | head -1)" = "$(printf '%11s %14s  %14s %14s %8s' resource usage softlimit hardlimit grace)"
blocks=${usage% *} inodes=${usage#* }
check "show blocks row" test "$(echo "$out" | sed -n 2p)" = "$(printf '%11s %14s%c %14s %14s %8s' 1k-blocks "$blocks" ' ' 1000 2000 '')"
check "show inodes row (root, d, file)" test "$inodes" = 3 -a "$(echo "$out" | sed -n 3p)" = "$(printf '%11s %14s%c %14s %14s %8s' inodes 3 ' ' 100 200 '')"
expect_rc "stat when off: 6" 6 q stat 101
expect_rc "off when off: 6" 6 q off 101
expect_rc "on" 0 q on 101
expect_rc "on again: 5" 5 q on 101
expect_rc "init while on: 5" 5 q init 101 -p "$TREE" "${LIM[@]}"
expect_rc "drop while on: 5" 5 q drop 101
echo more >"$TREE/d/new"
b=$(q -b stat 101 | awk 'NR==2 {print $1}')
check "stat counts the tree now" test "$b" = 4
check "stat wrote the usage" test "$(q -b show 101 | awk 'NR==2 {print $1}')" = 4
expect_rc "setlimit" 0 q setlimit 101 -b 1 -i 2 -e 0
check "setlimit warns of usage over the new soft limits, as init and on" sh -c "grep -Eq '[(]warning[)] block usage [0-9]+ is over the soft limit 1$' '$T/.stderr' && grep -q '(warning) inode usage 4 is over the soft limit 2' '$T/.stderr'"
out=$(q stat 101)
check "over soft is marked, grace none when expired" bash -c "echo '$out' | sed -n 2p | grep -q '^  1k-blocks *[0-9]*\* *1 *2000 *none\$'"
check "grace left as hh:mm" bash -c "echo '$out' | sed -n 3p | grep -Eq '^ *inodes *4\* *2 *200 *0(2:00|1:59)\$'"
expect_rc "setlimit -p (no rescan)" 0 q setlimit 101 -p "$TREE"
expect_rc "setlimit nothing: 2" 2 q setlimit 101
expect_rc "init -f (not an init option): 2" 2 q init 102 -p "$TREE" -b 1 -B 2 -i 1 -I 2 -e 0 -n 0 -f
expect_rc "setlimit2 without -s 1: 6" 6 q setlimit2 101 -u 1000 10 20 30 40
expect_rc "setlimit -s 1 -u 100" 0 q setlimit 101 -s 1 -u 100
expect_rc "setlimit2 -u" 0 q setlimit2 101 -u 1000 10 20 30 40
expect_rc "setlimit2 -g" 0 q setlimit2 101 -g 50 1 2 3 4
expect_rc "setlimit2 -t" 0 q setlimit2 101 -t 1d 2h
check "setlimit2 -t sets the user grace only (upstream)" bash -c "'$VZQ' -b show 101 -t | grep -Eq '^group 0 0 '"
expect_rc "setlimit2 -g -t: the group grace" 0 q setlimit2 101 -g -t 3h 1d
expect_rc "setlimit2 -t -g: the same" 0 q setlimit2 101 -t -g 3h 1d
check "setlimit2 -g -t set the group's and left the user's" bash -c "'$VZQ' -b show 101 -t | grep -Eq '^group 10800 86400 ' && '$VZQ' -b show 101 -t | grep -Eq '^ user 86400 7200 '"
expect_rc "setlimit2 -u -t: the user grace" 0 q setlimit2 101 -u -t 1d 2h
expect_rc "setlimit2 -u -g -t: 2" 2 q setlimit2 101 -u -g -t 1d 2h
# --user-group is -t, abbreviated too: -u then takes no id, so an id given is one value too many
expect_rc "setlimit2 -u 5 --user-group: 2" 2 q setlimit2 101 -u 5 --user-group 1h 1h
expect_rc "setlimit2 -u --user-group: the user grace" 0 q setlimit2 101 -u --user-group 1d 2h
expect_rc "setlimit2 -g --user: the group grace" 0 q setlimit2 101 -g --user 3h 1d
# operands after "--"
expect_rc "stat -- ID" 0 q stat -- 101
expect_rc "setlimit2 -u -- ID values: 2 (-u takes the --)" 2 q setlimit2 -u -- 101 1000 10 20 30 40
expect_rc "setlimit2 ID -u UID -- values" 0 q setlimit2 101 -u 1000 -- 10 20 30 40
expect_rc "setlimit2 -g ID -t: 2" 2 q setlimit2 101 -g 50 -t 1d 2h
expect_rc "setlimit2 bad value: 2" 2 q setlimit2 101 -u 1000 10 20 x 40
expect_rc "setlimit2 missing values: 2" 2 q setlimit2 101 -u 1000 10 20
out=$(q show 101 -t)
check "show -t records" bash -c "echo '$out' | grep -q '^1000 *user 1k-blocks *0 *10 *20'"
check "show -t group record" bash -c "echo '$out' | grep -q '^50 *group *inodes *0 *3 *4'"
check "show -t grace times (as upstream: Ndays or hh:mm)" bash -c "echo '$out' | grep -q '^ user *1days *02:00 ' && echo '$out' | grep -q '^group *03:00 *1days '"
out=$(q -b show 101 -t)
check "batch -t status lines" bash -c "echo '$out' | sed -n 3p | grep -qx '1 1'"
expect_rc "reload2 (not live)" 0 q reload2 101
expect_rc "stat -t when ugid on" 0 q stat 101 -t
expect_rc "setlimit -s 0" 0 q setlimit 101 -s 0
expect_rc "stat -t when ugid off: 9" 9 q stat 101 -t
expect_rc "off" 0 q off 101
expect_rc "drop" 0 q drop 101
check "drop removed the file" test ! -e "$VZQ_DIR/quota.101"
expect_rc "show missing file: 11" 11 q show 101
expect_rc "on missing file: 11" 11 q on 101

# ---- the ugid limit: the second level keeps at most -u N records (user and group ones); with
# -u 0 it keeps none, as upstream's ----
expect_rc "init -s 1 without -u" 0 q init 117 -p "$TREE" "${LIM[@]}" -s 1
check "init warns that a ugid limit of 0 counts no uid/gid" grep -q "user/group quota is on with a ugid limit of 0" "$T/.stderr"
out=$(q show 117 -t)
check "-u 0: no records, the limit exceeded" bash -c "echo '$out' | grep -qx 'Ugids: loaded 0, total 0, limit 0' && echo '$out' | grep -qx 'Ugid limit was exceeded: yes'"
expect_rc "init -s 1 -u 1 (the tree has uid 0 and gid 0)" 0 q init 117 -p "$TREE" "${LIM[@]}" -s 1 -u 1
check "init warns of the exceeded limit" grep -q "ugid limit 1 exceeded" "$T/.stderr"
expect_rc "on" 0 q on 117
out=$(q show 117 -t)
check "one record, the limit exceeded" bash -c "echo '$out' | grep -qx 'Ugids: loaded 1, total 1, limit 1' && echo '$out' | grep -qx 'Ugid limit was exceeded: yes' && echo '$out' | grep -q '^0 *user *inodes *4 '"
check "batch: the exceeded line is 1" test "$(q -b show 117 -t | sed -n 5p)" = 1
expect_rc "setlimit2 of a new id past the limit: 3" 3 q setlimit2 117 -u 1000 10 20 30 40
check "it says why" grep -q "ugid limit (1 records) leaves no room for user 1000" "$T/.stderr"
expect_rc "setlimit -u 10" 0 q setlimit 117 -u 10
expect_rc "off" 0 q off 117
expect_rc "on recounts a quota whose limit was exceeded" 0 q on 117
out=$(q show 117 -t)
check "room for both now" bash -c "echo '$out' | grep -qx 'Ugids: loaded 2, total 2, limit 10' && echo '$out' | grep -qx 'Ugid limit was exceeded: no'"
expect_rc "setlimit2 within the limit" 0 q setlimit2 117 -u 1000 10 20 30 40
expect_rc "off" 0 q off 117
expect_rc "drop" 0 q drop 117

# ---- options and their errors ----
expect_rc "-h" 0 q -h
expect_rc "-V" 0 q -V
expect_rc "no command: 2" 2 q
expect_rc "unknown command: 2" 2 q frobnicate 1
expect_rc "unknown global option: 2" 2 q -Z show 1
expect_rc "no id: 2" 2 q show
expect_rc "bad id: 2" 2 q show 12x
expect_rc "id too big: 2" 2 q show 4294967296
expect_rc "init without limits: 2" 2 q init 102 -p "$TREE" -b 1 -B 2
expect_rc "init without path: 2" 2 q init 102 "${LIM[@]}"
expect_rc "bad block limit: 2" 2 q init 102 -p "$TREE" -b -5 -B 2 -i 1 -I 2 -e 1 -n 1
expect_rc "bad time: 2" 2 q init 102 -p "$TREE" -b 1 -B 2 -i 1 -I 2 -e 1:61 -n 1
expect_rc "-s 2: 2" 2 q init 102 -p "$TREE" -b 1 -B 2 -i 1 -I 2 -e 1 -n 1 -s 2
expect_rc "-c with -R: 2" 2 q show 102 -c "$T/x" -R
# numbers are digits only: no sign, and no blank of any kind (strtoull would skip them)
expect_rc "id with a leading tab: 2" 2 q show $'\t102'
expect_rc "id with a leading newline: 2" 2 q show $'\n102'
expect_rc "limit with a leading tab: 2" 2 q setlimit 102 -b $'\t7'
# an argument quoted in an error is shown on the one line, its control characters as '?'
one_line "id with a newline: 2, one line" 2 q show $'102\n'
one_line "limit with a newline: 2, one line" 2 q setlimit 102 -b $'5\n'
expect_rc "unknown command option: 2" 2 q off 102 -b 5
expect_rc "--nocheck outside on: 2" 2 q off 102 --nocheck
expect_rc "init with long options" 0 q init 102 --path "$TREE" --block-softlimit 10 --block-hardlimit 20 \
	--inode-softlimit 30 --inode-hardlimit 40 --block-exptime 1:00:00:00 --inode-exptime 3w --sub-quotas 1 --ugid-limit 5
check "long options stored" test "$(q -b show 102 | tr -s ' ' | tr '\n' ' ')" = " $blocks 10 20 0 86400 4 30 40 0 1814400 " \
	-o "$(q -b show 102 | awk 'NR==2{print $5}')" = 1814400
expect_rc "combined global options (-qb)" 0 q -qb show 102
check "-qb is batch output" test "$(q -qb show 102 | wc -l)" = 2
expect_rc "combined with an unknown one: 2" 2 q -qZ show 102
expect_rc "-vvq" 0 q -vvq show 102
# grace as upstream prints it (time2str, TF_ROUND): rounded to the minute, Ndays or hh:mm
expect_rc "init with a grace of 3599 s, over both soft limits" 0 q init 116 -p "$TREE" -b 1 -B 100000 -i 1 -I 1000 -e 3599 -n 59:59 -s 1 -u 100
out=$(q show 116)
check "grace left is rounded: 3599 s shows 01:00" bash -c "echo '$out' | sed -n 2,3p | grep -c ' 01:00\$' | grep -qx 2"
expect_rc "on" 0 q on 116
expect_rc "setlimit2 -t 5 3723" 0 q setlimit2 116 -t 5 3723
expect_rc "setlimit2 -g -t 2h 1d" 0 q setlimit2 116 -g -t 2h 1d
out=$(q show 116 -t)
check "grace times as upstream: 00:00 01:02, 02:00 1days" bash -c "echo '$out' | grep -Eq '^ user +00:00 +01:02 +0h\$' && echo '$out' | grep -Eq '^group +02:00 +1days +0h\$'"
expect_rc "off" 0 q off 116
expect_rc "setlimit with a hard limit below the soft one" 0 q setlimit 102 -i 50 -I 40
check "setlimit warns of it" grep -q "(warning) inode hard limit 40 is below the soft limit 50" "$T/.stderr"
for spec in "30:30" "259200:259200" "59:59:3599" "23:59:59:86399" "12:00:720" "1:02:03:3723" "2:03:04:05:183845" "5h:18000" "2d:172800" "1W:604800" "1m:2592000" "1y:31536000"; do
	t=${spec%:*} want=${spec##*:}
	q setlimit 102 -e "$t" >/dev/null 2>&1
	check "time $t" test "$(q -b show 102 | awk 'NR==1{print $5}')" = "$want"
done
for bad in 1:60 1:25:00:00 99:00 25:00:00 x 1.5h "" 1:2:3:4:5 5q; do
	expect_rc "bad time '$bad': 2" 2 q setlimit 102 -e "$bad"
done
expect_rc "-R init next to the tree" 0 q init 103 -R -p "$TREE" "${LIM[@]}"
check "-R file is quota.NAME next to the tree" test -s "$T/quota.tree"
expect_rc "-R show finds it with -p" 0 q show 103 -p "$TREE"
# on needs the tree, as upstream's (its quotactl takes the mount point): a -R file stores none
expect_rc "on of a -R file by -c, no tree known: 13" 13 q on 103 -c "$T/quota.tree"
check "on without a tree left the file off" bash -c "'$VZQ' show 103 -c '$T/quota.tree' >/dev/null 2>&1; test \$? = 0"
expect_rc "on of a -R file with -p" 0 q on 103 -R -p "$TREE"
expect_rc "off of it" 0 q off 103 -R -p "$TREE"
expect_rc "-c file" 0 q init 104 -c "$T/custom" -p "$TREE" "${LIM[@]}"
expect_rc "-c show" 0 q show 104 -c "$T/custom"
expect_rc "drop -c" 0 q drop 104 -c "$T/custom"

# ---- errors are one line, and change nothing ----
q init 110 -p "$TREE" "${LIM[@]}" >/dev/null 2>&1
cp "$VZQ_DIR/quota.110" "$T/q110"
touch "$T/regular"
# -p is checked as init checks it, by every command, before anything is written
for p in "$T/nope" "$T/regular"; do
	one_line "init -p ${p##*/}: 13" 13 q init 111 -p "$p" "${LIM[@]}"
	for cmd in setlimit on off stat show drop; do
		extra=()
		[ $cmd = setlimit ] && extra=(-b 5)
		one_line "$cmd -p ${p##*/}: 13" 13 q $cmd 110 -p "$p" "${extra[@]}"
		check "$cmd -p ${p##*/} left the file alone" cmp -s "$VZQ_DIR/quota.110" "$T/q110"
	done
done
check "no file for the refused init" test ! -e "$VZQ_DIR/quota.111"
expect_rc "setlimit -p of a real tree still works" 0 q setlimit 110 -p "$TREE"
# a directory in place of the quota file: init refuses it, one line, no warning first
mkdir "$VZQ_DIR/quota.112"
one_line "init over a directory: 4" 4 q init 112 -p "$TREE" "${LIM[@]}"
check "init over a directory names it" grep -q "quota.112" "$T/.err"
check "the directory is left" test -d "$VZQ_DIR/quota.112"
rmdir "$VZQ_DIR/quota.112"
# the warnings of a command that then fails (full disk) are not printed
mkdir -p "$T/full"
if mount -t tmpfs -o size=64k tmpfs "$T/full" 2>/dev/null; then
	at_exit "umount -l '$T/full'"
	VZQ_DIR=$T/full q init 113 -p "$TREE" "${LIM[@]}" >/dev/null 2>&1
	cp "$T/full/quota.113" "$T/q113"
	dd if=/dev/zero of="$T/full/fill" bs=4k 2>/dev/null
	# warnings pending: the file exists, hard below soft, usage over soft
	one_line "init on a full disk: 4, no warnings" 4 env VZQ_DIR="$T/full" "$VZQ" init 113 -p "$TREE" -b 0 -B 0 -i 2 -I 1 -e 1 -n 1
	check "init on a full disk left the file alone" cmp -s "$T/full/quota.113" "$T/q113"
	one_line "setlimit on a full disk: 4, no warnings" 4 env VZQ_DIR="$T/full" "$VZQ" setlimit 113 -b 0 -i 2 -I 1
	check "setlimit on a full disk left the file alone" cmp -s "$T/full/quota.113" "$T/q113"
	umount "$T/full"
else
	not_ok "full disk: cannot mount a tmpfs here"
fi
# off -f proceeds with an unreadable file (upstream): no simfs serves it, so it is not running
q init 115 -p "$TREE" "${LIM[@]}" >/dev/null 2>&1 && q on 115 >/dev/null 2>&1
printf 'garbage' | dd of="$VZQ_DIR/quota.115" bs=1 seek=40 conv=notrunc status=none
cp "$VZQ_DIR/quota.115" "$T/q115"
one_line "off of a corrupt file: 4" 4 q off 115
one_line "off -f of a corrupt file: 6, one line" 6 q off 115 -f
check "off -f says the file is left as it is" grep -q "quota.115.*left as it is" "$T/.err"
check "off -f left the corrupt file alone" cmp -s "$VZQ_DIR/quota.115" "$T/q115"
out=$(q init 110 -p "$TREE" "${LIM[@]}" 2>&1 >/dev/null)
check "the warning of a successful init is printed" bash -c "echo '$out' | grep -q '(warning).*quota.110.*overwritten'"
# unknown options and missing arguments: one line, exit 2; bare vzquota and --help print the usage
one_line "--bogus: one line" 2 q --bogus
check "--bogus names the option" grep -q "unknown option '--bogus'" "$T/.err"
one_line "-x before the command: one line" 2 q -x show 110
one_line "options but no command: one line" 2 q -q
one_line "unknown command: one line" 2 q frobnicate 110
one_line "unknown option of a command: one line" 2 q show 110 --bogus
one_line "missing argument: one line" 2 q show 110 -p
expect_rc "no arguments: usage, exit 2" 2 q
check "no arguments prints the usage" bash -c "'$VZQ' 2>&1 | grep -q '^Usage: vzquota'"
expect_rc "--help: exit 0" 0 q --help
for opt in -V --version --path --quota-file --relative --force --user-group --nocheck --rsquash --sub-quotas --ugid-limit; do
	check "--help names $opt" bash -c "'$VZQ' --help | grep -q -- '$opt\\b'"
done

# ---- the walk ----
mkdir -p "$T/w/sub"
head -c 40000 /dev/urandom >"$T/w/a"
ln "$T/w/a" "$T/w/sub/hard1"
ln "$T/w/a" "$T/w/hard2"
truncate -s 1G "$T/w/sparse"
ln -s a "$T/w/link"
want_kb=$(( ($(stat -c %b "$T/w") + $(stat -c %b "$T/w/sub") + $(stat -c %b "$T/w/a") + $(stat -c %b "$T/w/sparse") + $(stat -c %b "$T/w/link")) * 512 / 1024 ))
check "vzdqcheck: hard links once, sparse as allocated" test "$("$DQCHECK" -q "$T/w")" = "$want_kb 5"
check "vzdqcheck: text output" bash -c "'$DQCHECK' '$T/w' | grep -q '1k-blocks *$want_kb\$'"
expect_rc "vzdqcheck: missing path" 13 "$DQCHECK" "$T/nope"
if mkdir -p "$T/w/mnt" && mount -t tmpfs -o size=1M tmpfs "$T/w/mnt" 2>/dev/null; then
	at_exit "umount -l '$T/w/mnt'"
	expect_rc "tmpfs inside the tree: 8" 8 "$DQCHECK" "$T/w"
	expect_rc "init over a mount point: 8" 8 q init 105 -p "$T/w" "${LIM[@]}"
	check "failed init leaves no file" test ! -e "$VZQ_DIR/quota.105"
	umount "$T/w/mnt"
	mkdir -p "$T/w/bind" "$T/other"
	mount --bind "$T/other" "$T/w/bind"
	at_exit "umount -l '$T/w/bind'"
	expect_rc "bind mount of the same fs inside the tree: 8" 8 "$DQCHECK" "$T/w"
	umount "$T/w/bind"
else
	not_ok "mount point: cannot mount a tmpfs here"
fi

# ---- a count that fails (a mount point met half way) changes nothing: off warns, marks the quota
# dirty and writes it, with the uid/gid records as they were, not zeroed or dropped half way ----
mkdir -p "$T/half"
for d in a b c d e f g h; do
	mkdir "$T/half/$d"
	head -c 40960 /dev/zero >"$T/half/$d/x"
	chown 6000 "$T/half/$d/x"
done
expect_rc "init -s 1 of 8 files of uid 6000" 0 q init 118 -p "$T/half" "${LIM[@]}" -b 100000 -B 200000 -s 1 -u 100
expect_rc "on" 0 q on 118
# the records of uid 6000: id, type, resource, usage, limits (not the status, loaded while on)
rec118() { q -b show 118 -t 2>/dev/null | grep '^6000 ' | tr -s ' ' | cut -d' ' -f1-6; }
before=$(rec118)
check "uid 6000: 320 KiB, 8 inodes" test "$(echo "$before" | awk '{ printf "%s ", $4 }')" = "320 8 "
if mount -t tmpfs -o size=1M tmpfs "$T/half/e" 2>/dev/null; then
	at_exit "umount -l '$T/half/e'"
	cp "$VZQ_DIR/quota.118" "$T/q118"
	expect_rc "stat over a mount point: 8" 8 q stat 118
	check "stat over a mount point left the file alone" cmp -s "$VZQ_DIR/quota.118" "$T/q118"
	expect_rc "off over a mount point: done, the quota marked dirty" 0 q off 118
	check "off warned that it did not count" grep -q "crossing mount point.*usage not counted, quota marked dirty" "$T/.stderr"
	expect_rc "show: dirty (10)" 10 q show 118
	check "the records are as before the failed count ($(echo $before))" test "$(rec118)" = "$before"
	umount "$T/half/e"
	expect_rc "on recounts the dirty quota" 0 q on 118
	check "the same records then" test "$(rec118)" = "$before"
	expect_rc "off" 0 q off 118
else
	not_ok "failed count: cannot mount a tmpfs here"
fi

# ---- lock ----
q init 106 -p "$TREE" "${LIM[@]}" >/dev/null 2>&1
flock -n "$VZQ_DIR/quota.106" sleep 3 &
sleep 0.3
expect_rc "lock held: 7" 7 q on 106
expect_rc "lock held, show still reads" 0 q show 106
wait
expect_rc "lock released" 0 q on 106

# ---- live holder ----
"$FAKELIVE" 106 "$VZQ_DIR/quota.106" /vz/root/106 3072000 77 >"$T/fl.out" 2>&1 &
FL=$!
at_exit "kill $FL"
for _ in $(seq 50); do grep -q ready "$T/fl.out" && break; sleep 0.1; done
expect_rc "off while live: 3" 3 q off 106
check "off names the simfs mount" bash -c "'$VZQ' off 106 2>&1 | grep -q 'mounted by simfs at /vz/root/106'"
expect_rc "drop while live: 3" 3 q drop 106 -f
expect_rc "on while live: 5" 5 q on 106
check "stat asks the daemon to sync" test "$(q -b stat 106 | awk 'NR==1{print $1} NR==2{print $1}' | tr '\n' ' ')" = "3000 77 "
expect_rc "setlimit while live (reload)" 0 q setlimit 106 -b 5000
expect_rc "reload2 while live" 0 q reload2 106
kill $FL; wait $FL 2>/dev/null
expect_rc "off after the daemon stopped" 0 q off 106
check "off after a daemon served the quota keeps the usage it wrote" test "$(q -b show 106 | awk 'NR==1{print $1}')" = 3000

# ---- usage written while no simfs serves the quota ----
# vzctl create untars into the tree with the quota on and no simfs, then turns it off: off counts.
mkdir -p "$T/untar/d"
expect_rc "init for writes without simfs" 0 q init 109 -p "$T/untar" -b 1000000 -B 1100000 -i 10000 -I 11000 -e 259200 -n 259200 -s 0
expect_rc "on" 0 q on 109
dd if=/dev/zero of="$T/untar/big" bs=1M count=20 status=none
: >"$T/untar/d/f"
expect_rc "off" 0 q off 109
check "off counted what was written while no simfs served the quota" \
	test "$(q -b show 109 | awk 'NR<=2{print $1}' | xargs)" = "$("$DQCHECK" -q "$T/untar")"
expect_rc "on again" 0 q on 109 -p "$T/untar"
rm "$T/untar/big"
expect_rc "off with -p" 0 q off 109 -p "$T/untar"
check "off counted the removal too" test "$(q -b show 109 | awk 'NR<=2{print $1}' | xargs)" = "$("$DQCHECK" -q "$T/untar")"

# ---- what vzctl passes ----
# vzctl starts a container with `on ID -r 0 ... -s 1 -u N` and gives "unlimited" as LONG_MAX 1k blocks.
mkdir -p "$T/vz/d"
printf 'x%.0s' $(seq 1 5000) >"$T/vz/d/f"
chown 1001 "$T/vz/d/f"
LONGMAX=9223372036854775807
expect_rc "init -s 0 with LONG_MAX block limits (vzctl's unlimited)" 0 q init 107 -p "$T/vz" -b $LONGMAX -B $LONGMAX -i 100 -I 200 -e 259200 -n 259200 -s 0
expect_rc "init with LONG_MAX inode limits" 0 q init 114 -p "$T/vz" -b 100 -B 200 -i $LONGMAX -I $LONGMAX -e 1 -n 1
check "init's inode limits saturate" test "$(q -b show 114 | awk 'NR==2{print $2, $3}')" = "4294967295 4294967295"
expect_rc "on with inode limits past 32 bits" 0 q on 114 -I 4294967296
check "on's inode limits saturate" test "$(q -b show 114 | awk 'NR==2{print $3}')" = 4294967295
expect_rc "setlimit with more than LONG_MAX (saturates)" 0 q setlimit 107 -B 9223372036854775907
expect_rc "on -r 0 -s 1 -u 100 (as vzctl)" 0 q on 107 -r 0 -s 1 -u 100 -b $LONGMAX
check "turning the second level on counted uid 1001's usage" bash -c "'$VZQ' stat 107 -t | grep -Eq '^ *1001 +(user +)?1k-blocks +8 '"
expect_rc "setlimit -r 0" 0 q setlimit 107 -r 0 -i 150
# inode limits are 32-bit counts: vzctl's unlimited (LONG_MAX) and more saturate, as upstream shows
expect_rc "setlimit -i LONG_MAX -I 2^64-1" 0 q setlimit 107 -i $LONGMAX -I 18446744073709551615
check "inode limits saturate at 4294967295" test "$(q -b show 107 | awk 'NR==2{print $2, $3}')" = "4294967295 4294967295"
expect_rc "setlimit2 with inode limits past 32 bits" 0 q setlimit2 107 -u 1001 0 0 $LONGMAX 18446744073709551615
check "setlimit2's inode limits saturate too" bash -c "'$VZQ' show 107 -t | grep -Eq '^1001 +user +inodes +[0-9]+ +4294967295 +4294967295'"
expect_rc "off" 0 q off 107
# A grace time beyond any date: the grace end saturates, and the file stays readable.
expect_rc "init with a grace of 292471208677 years, over the soft limit" 0 q init 108 -p "$T/vz" -b 1 -B 2000 -i 100 -I 200 -e 292471208677y -n 1h
expect_rc "the file it wrote reads back" 0 q show 108
expect_rc "on" 0 q on 108
expect_rc "show after on" 0 q show 108

# ---- a tree deeper than the descriptors and stack a walk may take ----
mkdir -p "$T/deep"
python3 -c '
import os, sys
os.chdir(sys.argv[1])
for i in range(3000):
    os.mkdir("d"); os.chdir("d")
open("f", "w").write("x")
' "$T/deep"
check "vzdqcheck of 3000 nested directories with 32 descriptors" bash -c "ulimit -n 32; test \"\$('$DQCHECK' -q '$T/deep' | tr '\n' ' ')\" = '12008 3002 '"
rm -rf "$T/deep"
finish
