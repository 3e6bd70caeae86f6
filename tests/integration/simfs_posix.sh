#!/usr/bin/env bash
# POSIX behaviour of simfs, compared with the same operations on a host directory: ownership,
# modes (suid/sgid/sticky, sgid directories, suid dropped on write), permissions as another uid,
# hard links, symlinks, rename (over a file, across directories, RENAME_NOREPLACE/EXCHANGE),
# xattrs, device nodes, fifos and sockets, sparse files and SEEK_DATA/SEEK_HOLE, fallocate (plain,
# keep size, punch, zero; FUSE has no collapse/insert range), truncate, mmap, flock and POSIX locks, O_DIRECT, utimes, error
# codes, big directories, POSIX ACLs (checked, inherited, over the umask). Each step prints what it saw; the two transcripts must be identical.
source "$(dirname "$0")/../lib.sh"
source "$ROOT/tests/tools/simfs-lib.sh"
simfs_skip_unless_root simfs_posix

chmod 755 "$T"
H=$T/host P=$T/p R=$T/r
mkdir -p "$H" "$P" "$R"
cat >"$T/ops.sh" <<'OPS'
set -u
cd "$1"
s() { stat -c '%n %F %a %u:%g size=%s links=%h blocks=%b' "$@" 2>&1; }
e() { "$@" >/dev/null 2>"$T_ERR" && echo "ok: $*" || echo "fail: $* -> $(sed 's/.*: //' "$T_ERR")"; }
as1000() { setpriv --reuid 1000 --regid 1000 --clear-groups "$@"; }
py() { python3 -c "$@" 2>&1; }
T_ERR=$(mktemp)
echo "== ownership and modes"
mkdir d; echo hello >d/f; s d d/f
e chmod 4755 d/f; e chmod 2755 d; e chmod 1777 d; s d d/f
e chown 1000:1001 d/f; s d/f
e chown 1000 d; e chgrp 1002 d; s d
chmod 777 d
echo "== suid dropped on write by another uid"
echo x >d/suid; chmod 4777 d/suid; as1000 sh -c 'echo more >>d/suid'; s d/suid
echo "== sgid directory"
mkdir sg; chgrp 1234 sg; chmod 2777 sg; echo x >sg/f; mkdir sg/sub; as1000 touch sg/u; s sg/f sg/sub sg/u
echo "== permissions as uid 1000"
echo secret >root-only; chmod 600 root-only
e as1000 cat root-only; e as1000 sh -c 'echo x >root-only'
mkdir sticky; chmod 1777 sticky; echo x >sticky/rootfile
e as1000 rm -f sticky/rootfile; e as1000 touch sticky/mine; s sticky/mine; e as1000 rm sticky/mine
e as1000 mkdir noperm-dir; e as1000 chmod 777 root-only; e as1000 chown 1000 d/f
echo "== hard links"
echo data >l1; e ln l1 l2; e ln l1 d/l3; s l1 l2 d/l3; rm l1; s l2; e ln d l4
echo "== symlinks"
e ln -s l2 sl; e ln -s /nonexistent/x dangling; e ln -s ../.. up
readlink sl dangling up; s sl dangling; cat sl; e cat dangling
e chown -h 1000 sl; s sl
echo "== rename"
echo a >ra; echo b >rb; mkdir rd1 rd2; echo c >rd1/rc
e mv ra rb; cat rb; e mv rd1/rc rd2/; e mv rd1 rd2/; ls -R rd2 | sed 's/.*://'
e mv rd2 rd2/rd1/inside
py 'import ctypes,os
libc=ctypes.CDLL(None,use_errno=True)
def r2(a,b,f):
    res=libc.renameat2(-100,a.encode(),-100,b.encode(),f)
    print("renameat2",a,b,f,"->",os.strerror(ctypes.get_errno()) if res else "ok")
open("x1","w").write("one"); open("x2","w").write("two")
r2("x1","x2",1)
r2("x1","x2",2); print(open("x1").read(), open("x2").read())
r2("x1","x3",2)
r2("x1","x3",1); print(sorted(n for n in os.listdir(".") if n.startswith("x")))'
echo "== xattrs"
echo x >xa; mkdir xd
e setfattr -n user.a -v 1 xa; e setfattr -n user.big -v "$(head -c 3000 /dev/zero | tr '\0' z)" xa
e setfattr -n user.d -v dirval xd; e setfattr -n trusted.t -v t xa
getfattr -d -m - xa xd 2>&1 | grep -v '^$' | sed 's/user.big=.*/user.big=<3000>/'
e setfattr -x user.a xa; e setfattr -x user.nope xa; e getfattr -n user.nope xa
getfattr -d xa 2>&1 | grep -c user
as1000 /usr/bin/python3 -c 'import os; print("names uid 1000 sees:", sorted(os.listxattr("xa")))'
echo "== device nodes, fifos, sockets"
e mknod cdev c 1 3; e mknod bdev b 7 200; e mkfifo fifo; s cdev bdev fifo
stat -c '%n %t:%T' cdev bdev
e sh -c 'echo data >cdev'; e sh -c 'head -c 10 cdev | wc -c'
py 'import socket; s=socket.socket(socket.AF_UNIX); s.bind("sock"); print("bound")'; s sock
(echo through-fifo >fifo &) ; cat fifo
echo "== sparse files and SEEK_DATA/SEEK_HOLE"
e truncate -s 10M sp; s sp
e dd if=/dev/urandom of=sp bs=4k count=1 seek=1000 conv=notrunc status=none; s sp
py 'import os
fd=os.open("sp",os.O_RDONLY)
d=os.lseek(fd,0,os.SEEK_DATA); h=os.lseek(fd,d,os.SEEK_HOLE); print("data",d,"hole",h)'
echo "== fallocate"
e fallocate -l 1M fa; s fa; e fallocate -k -o 1M -l 1M fa; s fa
e fallocate -p -o 0 -l 512K fa; s fa; e fallocate -z -o 0 -l 64K fa; s fa
echo "== truncate"
head -c 100000 /dev/urandom >tr; e truncate -s 50000 tr; s tr; e truncate -s 200000 tr; s tr
cmp <(head -c 50000 tr) <(head -c 50000 tr) && echo same-prefix
head -c 50000 /dev/zero | cmp - <(tail -c 150000 tr | head -c 50000) && echo zero-tail
echo "== mmap"
py 'import mmap,os
fd=os.open("mm",os.O_RDWR|os.O_CREAT,0o644); os.ftruncate(fd,8192)
m=mmap.mmap(fd,8192); m[0:5]=b"hello"; m[4096:4101]=b"world"; m.flush(); m.close(); os.close(fd)
print(open("mm","rb").read().strip(b"\0").replace(b"\0",b"."))'
echo "== mmap of a file opened O_APPEND: pages go where they are, write() appends"
py 'import mmap,os
open("ma","wb").write(b"A"*8192)
fd=os.open("ma",os.O_RDWR|os.O_APPEND); m=mmap.mmap(fd,8192); m[0:4]=b"ZZZZ"; m.flush(); m.close()
os.write(fd,b"tail"); os.close(fd)
d=open("ma","rb").read(); print(len(d), d[:6], d[-6:])'
echo "== O_APPEND through a cached and an O_DIRECT descriptor"
py 'import mmap,os
fd1=os.open("ad",os.O_WRONLY|os.O_CREAT|os.O_APPEND,0o644); os.write(fd1,b"A"*4096)
fd2=os.open("ad",os.O_WRONLY|os.O_APPEND|os.O_DIRECT); b=mmap.mmap(-1,4096); b.write(b"B"*4096); os.write(fd2,b)
os.write(fd1,b"C"*4096); os.close(fd2); os.close(fd1)
d=open("ad","rb").read(); print(len(d), [d[i*4096:i*4096+1] for i in range(len(d)//4096)])'
echo "== locks"
: >lk
flock -n lk sleep 2 & sleep 0.5
e flock -n lk true
wait
py 'import fcntl,os,time
fd=os.open("lk",os.O_RDWR)
fcntl.lockf(fd,fcntl.LOCK_EX)
pid=os.fork()
if pid==0:
    fd2=os.open("lk",os.O_RDWR)
    try:
        fcntl.lockf(fd2,fcntl.LOCK_EX|fcntl.LOCK_NB); print("child got the lock")
    except OSError as e: print("child:",e.strerror)
    os._exit(0)
os.waitpid(pid,0)'
echo "== O_DIRECT"
head -c 1048576 /dev/urandom >src
e dd if=src of=dio bs=64k oflag=direct status=none; cmp src dio && echo direct-write-same
e dd if=dio of=/dev/null bs=64k iflag=direct status=none
echo "== times"
e touch -d @1234567890 d/f; e touch -a -d @1111111111 d/f; stat -c '%n %X %Y' d/f
e touch -h -d @1000000000 sl; stat -c '%n %Y' sl
echo "== errors"
e rmdir d; e rm d; e mkdir d; e ln -s x sl; e cat nothing; e mkdir nothing/x
py 'import os
try: os.open("l2",os.O_CREAT|os.O_EXCL|os.O_WRONLY)
except OSError as e: print("O_EXCL:",e.strerror)
try: os.open("sl",os.O_RDONLY|os.O_NOFOLLOW)
except OSError as e: print("O_NOFOLLOW:",e.strerror)
try: os.open("l2/x",os.O_RDONLY)
except OSError as e: print("ENOTDIR:",e.strerror)'
echo "== a chown that changes nothing still marks the ctime"
echo x >ct; c0=$(stat -c %Z ct); sleep 1.1; py 'import os; os.chown("ct", -1, -1)'
[ "$(stat -c %Z ct)" -gt "$c0" ] && echo "ctime moved" || echo "ctime kept"
echo "== big directory"
mkdir big; (cd big && seq 1 600 | xargs touch); ls big | wc -l; ls big | sort | md5sum
rm -r big; ls big 2>&1 | sed 's/.*: //'
echo "== an O_DIRECT O_APPEND write larger than a request (the kernel sends its parts at once)"
py 'import mmap,os
N=4<<20; b=mmap.mmap(-1,N)
for i in range(N//4096): b[i*4096:i*4096+8]=b"%08d"%i
fd=os.open("dapp",os.O_WRONLY|os.O_CREAT|os.O_APPEND|os.O_DIRECT,0o644); os.write(fd,b"") 
print(os.write(fd,b), os.write(fd,b)); os.close(fd)
d=open("dapp","rb").read(); print(len(d), d==b[:]+b[:])'
echo "== O_TRUNC by another uid clears suid and sgid"
# (sgid without group-exec stays through FUSE, whose kernel side clears it only with group-exec)
echo x >otr; chmod 6777 otr; as1000 sh -c ': >otr'; s otr
echo "== a write by root drops a file capability and keeps suid and sgid (CAP_FSETID)"
for m in 4755 2755 6755; do
	cp /usr/bin/true cap$m; chmod $m cap$m; e /usr/sbin/setcap cap_net_raw+ep cap$m
	echo >>cap$m; s cap$m; /usr/sbin/getcap cap$m | wc -l
done
echo x >chown-1; chmod 4755 chown-1; e chown -- -1:-1 chown-1; s chown-1
echo "== POSIX ACLs"
echo pub >deny; chmod 644 deny; e setfacl -m u:1000:--- deny; e as1000 cat deny
echo s >allow; chmod 600 allow; e setfacl -m u:1000:r allow; e as1000 cat allow; s allow
getfacl -cpn allow deny 2>&1
mkdir dacl; e setfacl -d -m u:1000:rwx dacl
(umask 077; touch dacl/f; mkdir dacl/sub); s dacl/f dacl/sub; getfacl -cpn dacl/f dacl/sub 2>&1
e as1000 sh -c 'echo w >dacl/f'
(umask 027; touch umasked; mkdir umasked-dir; mkfifo umasked-fifo); s umasked umasked-dir umasked-fifo
e setfacl -b allow; e as1000 cat allow; s allow
echo x >sgacl; chown 1000:0 sgacl; chmod 2775 sgacl; e as1000 setfacl -m u:2000:r sgacl; s sgacl
echo "== final listing"
find . -printf '%p %y %m %U:%G %s %n\n' | sort
rm -f "$T_ERR"
OPS

expect_rc "mount" 0 sf mount "$P" "$R"
bash "$T/ops.sh" "$H" >"$T/host.out" 2>&1
# like_host WHAT ROOT: the operations at ROOT print what they printed on the host directory.
like_host() {
	bash "$T/ops.sh" "$2" >"$T/run.out" 2>&1
	if diff -u "$T/host.out" "$T/run.out" >"$T/run.diff"; then
		ok "$1, every operation behaves as on the host"
	else
		not_ok "$1, simfs differs from the host:"
		sed 's/^/# /' "$T/run.diff"
	fi
}
bash "$T/ops.sh" "$R" >"$T/simfs.out" 2>&1
if diff -u "$T/host.out" "$T/simfs.out" >"$T/diff"; then
	ok "every operation behaves as on the host ($(grep -c . "$T/host.out") transcript lines)"
else
	not_ok "simfs differs from the host:"
	sed 's/^/# /' "$T/diff"
fi
# Sections one by one, so that a failure names the area.
grep '^== ' "$T/host.out" | sed 's/^== //' >"$T/sections"
while read -r name; do
	h=$(awk -v s="== $name" '$0 == s { on = 1; next } /^== / { on = 0 } on' "$T/host.out")
	m=$(awk -v s="== $name" '$0 == s { on = 1; next } /^== / { on = 0 } on' "$T/simfs.out")
	if [ "$h" = "$m" ]; then ok "posix: $name"; else not_ok "posix: $name"; fi
done <"$T/sections"
check "the simfs view is PRIVATE itself" bash -c "cd '$P' && find . -printf '%p %y %m %U:%G %s %n\n' | sort | cmp -s - <(cd '$R' && find . -printf '%p %y %m %U:%G %s %n\n' | sort)"
check "df without quota is the host's" test "$(stat -f -c '%b %S' "$R")" = "$(stat -f -c '%b %S' "$P")"
expect_rc "umount" 0 sf umount "$R"

# The same with the kernel's writeback cache (-o writeback): the kernel appends and extends files
# from its cache, and pages reach us later.
PW=$T/pw RW=$T/rw
mkdir -p "$PW" "$RW"
expect_rc "mount -o writeback" 0 sf mount "$PW" "$RW" -o writeback
like_host "with -o writeback" "$RW"
expect_rc "umount -o writeback" 0 sf umount "$RW"

# The same with a quota enforced (other code paths: charging, no writeback cache).
P2=$T/p2 R2=$T/r2
mkdir -p "$P2" "$R2"
quota_init 201 "$P2" 10000000 10000000 1000000 1000000 || not_ok "quota init"
expect_rc "mount with quota" 0 sf mount "$P2" "$R2" -o quota=201
like_host "with quota" "$R2"
a=$(quota_sync 201 && "$QTOOL" file 201 | grep -v '^flags') b=$("$QTOOL" scan "$P2")
if [ "$a" = "$b" ]; then ok "after all operations, usage equals a fresh scan"; else
	not_ok "after all operations, usage differs from a fresh scan (daemon: $(echo $a) / scan: $(echo $b))"
fi
expect_rc "umount with quota" 0 sf umount "$R2"

# The same under ASan+UBSan, with a quota and very few inode descriptors: most inodes are
# reopened from their file handles.
SAN_SIMFS=$ROOT/build/san/bin/simfs
P3=$T/p3 R3=$T/r3
mkdir -p "$P3" "$R3"
quota_init 301 "$P3" 10000000 10000000 1000000 1000000 || not_ok "quota init"
expect_rc "mount (ASan build) with quota and inode_fds=16" 0 timeout 60 "$SAN_SIMFS" mount "$P3" "$R3" -o quota=301,inode_fds=16
like_host "with 16 inode descriptors" "$R3"
st=$(grep -l "^root=$R3\$" "$SIMFS_RUN_DIR"/*.state)
pid=$(sed -n 's/^pid=//p' "$st")
# inode descriptors at most 16 (+ a few pinned by operations in flight), plus open files
check "the daemon holds few descriptors into PRIVATE after all that" \
	test "$(ls -l "/proc/$pid/fd" | grep -c " $P3")" -lt 40
a=$(quota_sync 301 && "$QTOOL" file 301 | grep -v '^flags') b=$("$QTOOL" scan "$P3")
check "usage equals a fresh scan (few descriptors)" test "$a" = "$b"
log=${st%.state}.log
expect_rc "umount (ASan build)" 0 sf umount "$R3"
check "no sanitizer report from the daemon" sh -c "! grep -q 'Sanitizer' '$log' 2>/dev/null"
finish
