/* simfs: the command line (mount, umount, list) and the daemon's life: it mounts, reports ready
 * to the waiting parent, serves until unmounted or signalled, then writes its quota back. */
#include <ctype.h>
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../common/mountinfo.h"
#include "../common/fuse_ring.h"
#include "simfs.h"

static const char usage_text[] =
	"usage: simfs mount PRIVATE ROOT [-o OPTIONS]    serve PRIVATE at ROOT (daemon)\n"
	"       simfs umount [-l] ROOT                   stop serving ROOT (-l: lazily, even if busy)\n"
	"       simfs list                               instances: ROOT PRIVATE PID QUOTA STATE\n"
	"options (-o, comma separated):\n"
	"  quota=ID      enforce vzquota ID (it must be on: vzquota on ID); df shows its limits\n"
	"  ro | rw       read-only or read-write view (rw)\n"
	"  timeout=SEC   kernel entry/attribute cache lifetime (30); changes made on the host\n"
	"                directly in PRIVATE show after at most SEC s (0: at once, slower)\n"
	"  writeback     kernel writeback cache (with quota, a write over the limit then fails\n"
	"                at writeback or close instead of in write())\n"
	"  nowriteback   no writeback cache (default)\n"
	"  threads=N     at most N request threads on /dev/fuse, 1 to 1024 (16)\n"
	"  nouring       stay on /dev/fuse when the kernel offers FUSE over io_uring\n"
	"                (fuse.enable_uring=1), used otherwise: 4 threads per CPU, each bound to it\n"
	"  inode_fds=N   descriptors kept open for inodes the kernel remembers, 16 to 1048576 (half\n"
	"                of the open-files limit); beyond, they are reopened from file handles\n"
	"  foreground    stay in the foreground (mount only; for debugging)\n"
	"environment: SIMFS_RUN_DIR (default /run/simfs); VZQ_DIR, VZQ_RUN_DIR for the quota library\n"
	"exit codes: 0 ok, 1 system error, 2 bad arguments or options, 3 PRIVATE or ROOT missing or\n"
	"  not a directory, 4 ROOT is PRIVATE or inside it, 5 quota is off, 6 quota already enforced\n"
	"  by another simfs, 7 quota file missing or bad, 8 mount failed or ROOT already served,\n"
	"  9 ROOT is not served by simfs, 10 ROOT busy (umount -l), or another filesystem is\n"
	"  mounted over the simfs mount\n";

/* One line on stderr, whatever the paths in it hold. */
__attribute__((noreturn, format(printf, 2, 3))) static void die(int code, const char *fmt, ...)
{
	char msg[2 * PATH_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	for (char *c = msg; *c; c++)
		if (*c == '\n' || *c == '\r')
			*c = ' ';
	fprintf(stderr, "simfs: %s\n", msg);
	exit(code);
}

static const char *run_dir(void)
{
	const char *d = getenv("SIMFS_RUN_DIR");

	return d && d[0] ? d : "/run/simfs";
}

/* The state file of the instance serving @root. */
static void state_path(const char *root, char *out, size_t len)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (const unsigned char *p = (const unsigned char *)root; *p; p++)
		h = (h ^ *p) * 0x100000001b3ull;
	snprintf(out, len, "%s/%016llx.state", run_dir(), (unsigned long long)h);
}

struct state {
	pid_t pid;
	dev_t dev;	/* of its FUSE mount; 0 if not known */
	char private_dir[PATH_MAX], root[PATH_MAX], quota[32];
};

static int read_state(const char *path, struct state *s)
{
	char line[PATH_MAX + 32];
	FILE *f = fopen(path, "re");

	if (!f)
		return -errno;
	memset(s, 0, sizeof(*s));
	while (fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = 0;
		if (!strncmp(line, "pid=", 4))
			s->pid = (pid_t)atoi(line + 4);
		else if (!strncmp(line, "private=", 8))
			snprintf(s->private_dir, sizeof(s->private_dir), "%.*s", (int)sizeof(s->private_dir) - 1, line + 8);
		else if (!strncmp(line, "root=", 5))
			snprintf(s->root, sizeof(s->root), "%.*s", (int)sizeof(s->root) - 1, line + 5);
		else if (!strncmp(line, "dev=", 4)) {
			unsigned maj, min;

			if (sscanf(line + 4, "%u:%u", &maj, &min) == 2)
				s->dev = makedev(maj, min);
		} else if (!strncmp(line, "quota=", 6))
			snprintf(s->quota, sizeof(s->quota), "%.*s", (int)sizeof(s->quota) - 1, line + 6);
	}
	fclose(f);
	return s->pid > 0 && s->root[0] ? 0 : -EINVAL;
}

/* The log next to state file @spath. */
static void log_path(const char *spath, char *out, size_t len)
{
	snprintf(out, len, "%.*s.log", (int)(strlen(spath) - 6), spath);
}

/* Removes the log of an instance that is over, unless something was logged (kept to be read). */
static void drop_empty_log(const char *spath)
{
	char lpath[PATH_MAX + 64];
	struct stat st;

	log_path(spath, lpath, sizeof(lpath));
	if (!stat(lpath, &st) && st.st_size == 0)
		unlink(lpath);
}

/* A decimal number (of an option, of a state file), strictly: digits only (no sign, space or base
 * prefix), no overflow, within [min, max]. */
static int parse_num(const char *v, unsigned long min, unsigned long max, unsigned long *out)
{
	unsigned long n;
	char *end;

	if (!isdigit((unsigned char)*v))
		return -1;
	errno = 0;
	n = strtoul(v, &end, 10);
	if (errno || *end || n < min || n > max)
		return -1;
	*out = n;
	return 0;
}

/* The files of an instance whose daemon is gone (killed): its state file, its log if empty, and
 * the request socket of its quota, unless a new holder of that quota is serving it. */
static void forget_instance(const char *spath, const struct state *s)
{
	unsigned long id;

	unlink(spath);
	drop_empty_log(spath);
	if (!parse_num(s->quota, 0, UINT32_MAX, &id))
		vzq_live_clear((uint32_t)id);
}

/* Alive and ours: a zombie (nobody reaps here) counts as dead. */
static bool daemon_alive(pid_t pid)
{
	char path[64], buf[512], *p;
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return false;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	if (!strstr(buf, "(simfs)"))
		return false;
	p = strrchr(buf, ')');
	return p && p[1] == ' ' && p[2] != 'Z' && p[2] != 'X';
}

/* The mounts at @root, from mountinfo, without touching it (a dead mount would hang a stat). */
struct mounts_at {
	bool any;		/* something is mounted at @root */
	dev_t top;		/* the device of the topmost (the one a path lookup sees) */
	bool top_simfs;		/* the topmost is a simfs mount */
	bool simfs;		/* a simfs mount is among them */
	bool dev;		/* the device asked for is among them */
};

static void mounts_at(const char *root, dev_t want, struct mounts_at *m)
{
	char line[3 * PATH_MAX];
	FILE *f = fopen("/proc/self/mountinfo", "r");

	memset(m, 0, sizeof(*m));
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		char mnt[PATH_MAX], *tok, *save = NULL, *sep, *devtok = NULL;
		unsigned maj, min;
		int i = 0;
		dev_t dev;

		for (tok = strtok_r(line, " ", &save); tok && i < 4; tok = strtok_r(NULL, " ", &save))
			if (++i == 3)
				devtok = tok;
		if (!tok || !devtok || sscanf(devtok, "%u:%u", &maj, &min) != 2)
			continue;
		mountinfo_unescape(tok, mnt, sizeof(mnt));
		if (strcmp(mnt, root))
			continue;
		/* later lines are later mounts: the last one at @root is on top */
		dev = makedev(maj, min);
		m->any = true;
		m->top = dev;
		if (want && dev == want)
			m->dev = true;
		sep = strstr(save ? save : "", " - ");
		m->top_simfs = sep && !strncmp(sep + 3, "fuse.simfs ", 11);
		if (m->top_simfs)
			m->simfs = true;
	}
	fclose(f);
}

/* Whether @root is a mount point of a simfs FUSE mount. */
static bool is_simfs_mount(const char *root)
{
	struct mounts_at m;

	mounts_at(root, 0, &m);
	return m.simfs;
}

/* The absolute path of @path without resolving its last component (ROOT may be a dead mount:
 * a stat there would fail or hang). */
static int abs_path_no_follow(const char *path, char *out, size_t len)
{
	char *a = strdup(path), *b = strdup(path), *dir, *base, *rdir;
	int r = 0;

	if (!a || !b) {
		free(a);
		free(b);
		return -ENOMEM;
	}
	dir = dirname(a);
	base = basename(b);
	if (!strcmp(base, ".") || !strcmp(base, "..") || !strcmp(base, "/")) {
		rdir = realpath(path, NULL);
		if (!rdir)
			r = -errno;
		else
			snprintf(out, len, "%s", rdir);
	} else {
		rdir = realpath(dir, NULL);
		if (!rdir)
			r = -errno;
		else
			snprintf(out, len, "%s%s%s", rdir, strcmp(rdir, "/") ? "/" : "", base);
	}
	free(rdir);
	free(a);
	free(b);
	return r;
}

/* ROOT as an absolute path: abs_path_no_follow(), then symlinks in its last component followed
 * (mounting follows them: the mount is at their target) - by readlink only, which does not reach
 * into a filesystem mounted there (a dead one would fail, a stuck one hang). */
static int root_path(const char *arg, char *out, size_t len)
{
	char link[PATH_MAX], next[2 * PATH_MAX + 2];
	int r = abs_path_no_follow(arg, out, len);

	for (int i = 0; !r && i < 40; i++) {
		ssize_t n = readlink(out, link, sizeof(link) - 1);
		const char *slash = strrchr(out, '/');

		if (n < 0)
			return 0;
		link[n] = 0;
		if (link[0] == '/')
			snprintf(next, sizeof(next), "%s", link);
		else
			snprintf(next, sizeof(next), "%.*s/%s", (int)(slash - out), out, link);
		r = abs_path_no_follow(next, out, len);
	}
	return r ? r : -ELOOP;
}

/* Mount and umount of one ROOT exclude each other (flock of a lock file beside its state file),
 * from the check that it is not served until the daemon has written its state: two mounts at
 * once stacked two daemons, one of them in no state file. */
static int lock_root(const char *spath)
{
	char lpath[PATH_MAX + 64];
	int fd;

	if (mkdir(run_dir(), 0755) && errno != EEXIST)
		die(SIMFS_ERR_SYS, "%s: %s", run_dir(), strerror(errno));
	snprintf(lpath, sizeof(lpath), "%.*s.lock", (int)(strlen(spath) - 6), spath);
	fd = open(lpath, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0 || flock(fd, LOCK_EX))
		die(SIMFS_ERR_SYS, "%s: %s", lpath, strerror(errno));
	return fd;
}

/*
 * Takes away the dead mount a killed daemon left at @root (@dev, if known): only if it is what ROOT
 * shows, as umount2() takes the topmost mount, which may be another filesystem mounted over it since.
 * @found: a dead mount was there. -EBUSY if another filesystem covers it.
 */
static int detach_dead(const char *root, dev_t dev, bool *found)
{
	struct mounts_at m;

	mounts_at(root, dev, &m);
	*found = dev ? m.dev : m.simfs;
	if (!*found)
		return 0;
	if (!m.top_simfs || (dev && m.top != dev))
		return -EBUSY;
	umount2(root, MNT_DETACH);
	return 0;
}

/* ---- the daemon ------------------------------------------------------------------------------- */

struct mount_opts {
	bool quota, ro, foreground, nouring;
	int writeback;	/* -1: default */
	uint32_t quota_id;
	double timeout;
	unsigned threads;
	size_t inode_fds;
};

static int parse_opts(char *s, struct mount_opts *o, char *msg, size_t len)
{
	char *save = NULL;

	for (char *t = strtok_r(s, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		char *v = strchr(t, '='), *end;

		if (v)
			*v++ = 0;
		if (!strcmp(t, "quota") && v) {
			unsigned long id;

			if (parse_num(v, 0, UINT32_MAX, &id)) {
				snprintf(msg, len, "bad quota id '%s' (0 to %u)", v, UINT32_MAX);
				return -1;
			}
			o->quota = true;
			o->quota_id = (uint32_t)id;
		} else if (!strcmp(t, "ro") && !v) {
			o->ro = true;
		} else if (!strcmp(t, "rw") && !v) {
			o->ro = false;
		} else if (!strcmp(t, "writeback") && !v) {
			o->writeback = 1;
		} else if (!strcmp(t, "nowriteback") && !v) {
			o->writeback = 0;
		} else if (!strcmp(t, "foreground") && !v) {
			o->foreground = true;
		} else if (!strcmp(t, "nouring") && !v) {
			o->nouring = true;
		} else if (!strcmp(t, "timeout") && v) {
			/* plain decimal seconds only (a fraction allowed): no sign, exponent, space, hex, inf or nan */
			errno = 0;
			o->timeout = strtod(v, &end);
			if (!(isdigit((unsigned char)*v) || (*v == '.' && isdigit((unsigned char)v[1]))) ||
			    strspn(v, "0123456789.") != strlen(v) || errno || *end || !isfinite(o->timeout) ||
			    o->timeout < 0 || o->timeout > 1e7) {
				snprintf(msg, len, "bad timeout '%s' (0 to 10000000 seconds)", v);
				return -1;
			}
		} else if (!strcmp(t, "inode_fds") && v) {
			unsigned long n;

			if (parse_num(v, 16, 1048576, &n)) {
				snprintf(msg, len, "bad inode_fds '%s' (16 to 1048576)", v);
				return -1;
			}
			o->inode_fds = n;
		} else if (!strcmp(t, "threads") && v) {
			unsigned long n;

			if (parse_num(v, 1, 1024, &n)) {
				snprintf(msg, len, "bad threads '%s' (1 to 1024)", v);
				return -1;
			}
			o->threads = (unsigned)n;
		} else {
			snprintf(msg, len, "unknown option '%s%s%s'", t, v ? "=" : "", v ? v : "");
			return -1;
		}
	}
	return 0;
}

__attribute__((noreturn, format(printf, 3, 4))) static void fail_start(int ready_fd, int code, const char *fmt, ...)
{
	char msg[1200];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	for (char *c = msg; *c; c++)
		if (*c == '\n')
			*c = ' ';
	if (ready_fd >= 0)
		dprintf(ready_fd, "err %d %s\n", code, msg);
	else
		fprintf(stderr, "simfs: %s\n", msg);
	_exit(code);
}

static int write_state(const char *path, const struct simfs *fs, const struct mount_opts *o, dev_t dev)
{
	char tmp[PATH_MAX + 128];
	FILE *f;
	int fd;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	/* Its pid gets signalled and its ROOT unmounted: nobody but us may write it. The daemon runs
	 * with umask 0 (it creates files with the modes asked for), so the mode is explicit. */
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	if (fchmod(fd, 0644) || !(f = fdopen(fd, "w"))) {
		int e = errno;

		close(fd);
		return -e;
	}
	fprintf(f, "pid=%d\nprivate=%s\nroot=%s\n", (int)getpid(), fs->private_dir, fs->root_dir);
	if (dev)
		fprintf(f, "dev=%u:%u\n", major(dev), minor(dev));
	if (o->quota)
		fprintf(f, "quota=%u\n", o->quota_id);
	if (fclose(f) || rename(tmp, path))
		return -errno;
	return 0;
}

/* Runs in the forked child: everything up to the mount, then the loop. Never returns. */
__attribute__((noreturn)) static void run_daemon(struct simfs *fs, const struct mount_opts *o, int ready_fd,
						  int lock_fd)
{
	char msg[1200], opts[256], spath[PATH_MAX + 64];
	char *argv[] = { "simfs", "-o", opts, NULL };
	struct fuse_args args = FUSE_ARGS_INIT(3, argv);
	struct fuse_loop_config *cfg;
	struct mounts_at m;
	struct rlimit rl;
	struct stat st;
	dev_t mnt_dev;
	int r, log_fd;

	umask(0);
	/* One descriptor per inode the kernel remembers: as many as we may have. */
	if (!getrlimit(RLIMIT_NOFILE, &rl)) {
		rl.rlim_cur = rl.rlim_max;
		if (rl.rlim_cur < 1048576) {
			struct rlimit want = { 1048576, 1048576 };

			if (!setrlimit(RLIMIT_NOFILE, &want))
				rl = want;
		}
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	/* Half of the descriptors for inodes, the rest for open files and directories. */
	if (!o->inode_fds)
		fs->max_fds = rl.rlim_cur / 2 > 256 ? rl.rlim_cur / 2 : 256;
	else
		fs->max_fds = o->inode_fds;
	fs->mount_fd = open(fs->private_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	fs->root.fd = open(fs->private_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fs->mount_fd < 0 || fs->root.fd < 0 || fstat(fs->root.fd, &st))
		fail_start(ready_fd, SIMFS_ERR_DIR, "%s: %s", fs->private_dir, strerror(errno));
	fs->root.dev = st.st_dev;
	fs->root.ino = st.st_ino;
	fs->root.nlookup = 2;
	pthread_mutex_init(&fs->root.qlock, NULL);
	pthread_mutex_init(&fs->itable_lock, NULL);
	fs->itable_size = 4096;
	fs->itable = calloc(fs->itable_size, sizeof(*fs->itable));
	if (!fs->itable)
		fail_start(ready_fd, SIMFS_ERR_SYS, "out of memory");
	if (mkdir(run_dir(), 0755) && errno != EEXIST)
		fail_start(ready_fd, SIMFS_ERR_SYS, "%s: %s", run_dir(), strerror(errno));
	state_path(fs->root_dir, spath, sizeof(spath));
	if (o->quota) {
		r = qlive_start(o->quota_id, fs->private_dir, fs->root_dir, &fs->quota, msg, sizeof(msg));
		if (r)
			fail_start(ready_fd, r, "%s", msg);
		qlive_on_sync(fs->quota, simfs_quota_true_up, fs);
	}
	snprintf(opts, sizeof(opts), "default_permissions,allow_other,dev,suid,fsname=simfs,subtype=simfs%s",
		 fs->ro ? ",ro" : "");
	fs->se = fuse_session_new(&args, &simfs_ops, sizeof(simfs_ops), fs);
	if (!fs->se) {
		if (fs->quota)
			qlive_stop(fs->quota);
		fail_start(ready_fd, SIMFS_ERR_MOUNT, "cannot start a FUSE session");
	}
	if (fuse_session_mount(fs->se, fs->root_dir)) {
		if (fs->quota)
			qlive_stop(fs->quota);
		fail_start(ready_fd, SIMFS_ERR_MOUNT, "mount of %s failed", fs->root_dir);
	}
	/* Our mount, to tell it at the end from whatever may be at ROOT by then. */
	mounts_at(fs->root_dir, 0, &m);
	mnt_dev = m.simfs ? m.top : 0;
	/* Metadata requests come one at a time from each caller: served on the caller's CPU. */
	if (fuse_ring_attach(fs->se, 4, true, !o->nouring)) {
		fuse_session_unmount(fs->se);
		if (fs->quota)
			qlive_stop(fs->quota);
		fail_start(ready_fd, SIMFS_ERR_MOUNT, "cannot set up the FUSE transport");
	}
	if (fs->quota && (r = qlive_run(fs->quota, msg, sizeof(msg)))) {
		fuse_session_unmount(fs->se);
		qlive_stop(fs->quota);
		fail_start(ready_fd, r, "%s", msg);
	}
	if ((r = write_state(spath, fs, o, mnt_dev)) || fuse_set_signal_handlers(fs->se)) {
		fuse_session_unmount(fs->se);
		if (fs->quota)
			qlive_stop(fs->quota);
		fail_start(ready_fd, SIMFS_ERR_SYS, "%s: %s", spath, strerror(r ? -r : errno));
	}
	close(lock_fd);		/* the state tells now that ROOT is served */
	signal(SIGPIPE, SIG_IGN);
	/* Ready: the parent returns; our stderr becomes a log next to the state file. */
	if (ready_fd >= 0) {
		char lpath[PATH_MAX + 64];

		log_path(spath, lpath, sizeof(lpath));
		log_fd = open(lpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
		int null_fd = open("/dev/null", O_RDWR);

		if (null_fd >= 0) {
			dup2(null_fd, 0);
			dup2(null_fd, 1);
			dup2(log_fd >= 0 ? log_fd : null_fd, 2);
			close(null_fd);
		}
		if (log_fd >= 0)
			close(log_fd);
		dprintf(ready_fd, "ok\n");
		close(ready_fd);
	}
	cfg = fuse_loop_cfg_create();
	fuse_loop_cfg_set_clone_fd(cfg, 1);
	fuse_loop_cfg_set_max_threads(cfg, o->threads);
	fuse_loop_cfg_set_idle_threads(cfg, o->threads);
	fuse_session_loop_mt(fs->se, cfg);
	fuse_loop_cfg_destroy(cfg);
	fuse_remove_signal_handlers(fs->se);
	/* libfuse unmounts by path: only if ROOT still shows our mount. Detached (umount -l by hand
	 * while busy, then stopped), ROOT may be a plain directory again, or have another filesystem
	 * mounted on it by now, which must stay; our mount goes with the last of its users. */
	mounts_at(fs->root_dir, mnt_dev, &m);
	if (!mnt_dev || (m.any && m.top == mnt_dev))
		fuse_session_unmount(fs->se);
	else if (m.dev)
		fprintf(stderr, "simfs: %s: another filesystem is mounted over ours: ours stays beneath it, "
			"unserved\n", fs->root_dir);
	fuse_ring_detach();
	if (fs->quota) {
		qlive_quiesce(fs->quota);
		simfs_quota_stop(fs);
		qlive_stop(fs->quota);
	}
	unlink(spath);
	drop_empty_log(spath);
	fuse_session_destroy(fs->se);
	_exit(0);
}

static int cmd_mount(int argc, char **argv)
{
	struct mount_opts o = { .writeback = -1, .timeout = 30, .threads = 16 };
	static struct simfs fs;
	char msg[1200], spath[PATH_MAX + 64], root[PATH_MAX];
	const char *pos[2];
	int npos = 0, pfd[2], lock_fd, r;
	struct stat st;
	struct state s;
	size_t plen;
	pid_t pid;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-o")) {
			if (++i >= argc)
				die(SIMFS_ERR_USAGE, "-o needs options");
			if (parse_opts(argv[i], &o, msg, sizeof(msg)))
				die(SIMFS_ERR_USAGE, "%s", msg);
		} else if (!strncmp(argv[i], "-o", 2)) {
			if (parse_opts(argv[i] + 2, &o, msg, sizeof(msg)))
				die(SIMFS_ERR_USAGE, "%s", msg);
		} else if (argv[i][0] == '-' && argv[i][1]) {
			die(SIMFS_ERR_USAGE, "unknown option '%s' (see simfs --help)", argv[i]);
		} else if (npos < 2) {
			pos[npos++] = argv[i];
		} else {
			die(SIMFS_ERR_USAGE, "too many arguments (see simfs --help)");
		}
	}
	if (npos != 2)
		die(SIMFS_ERR_USAGE, "usage: simfs mount PRIVATE ROOT [-o OPTIONS]");
	fs.ro = o.ro;
	fs.timeout = o.timeout;
	fs.writeback = o.writeback > 0;
	fs.private_dir = realpath(pos[0], NULL);
	if (!fs.private_dir)
		die(SIMFS_ERR_DIR, "%s: %s", pos[0], strerror(errno));
	if (stat(fs.private_dir, &st) || !S_ISDIR(st.st_mode))
		die(SIMFS_ERR_DIR, "%s: not a directory", pos[0]);
	if ((r = root_path(pos[1], root, sizeof(root))))
		die(SIMFS_ERR_DIR, "%s: %s", pos[1], strerror(-r));
	/* The state file has a line per field. */
	if (strpbrk(fs.private_dir, "\n\r") || strpbrk(root, "\n\r"))
		die(SIMFS_ERR_USAGE, "a PRIVATE or ROOT path with a line break is not supported");
	state_path(root, spath, sizeof(spath));
	lock_fd = lock_root(spath);
	if (!read_state(spath, &s)) {
		bool dead_mount;

		if (daemon_alive(s.pid))
			die(SIMFS_ERR_MOUNT, "%s is already served (pid %d)", root, (int)s.pid);
		/* Left by a killed daemon: its dead mount goes first. */
		if (detach_dead(root, s.dev, &dead_mount))
			die(SIMFS_ERR_BUSY, "%s: another filesystem is mounted over the mount of a killed simfs; "
			    "unmount it first", root);
		forget_instance(spath, &s);
	} else if (is_simfs_mount(root)) {
		die(SIMFS_ERR_MOUNT, "%s is already a simfs mount", root);
	}
	fs.root_dir = realpath(root, NULL);
	if (!fs.root_dir)
		die(SIMFS_ERR_DIR, "%s: %s", pos[1], strerror(errno));
	if (stat(fs.root_dir, &st) || !S_ISDIR(st.st_mode))
		die(SIMFS_ERR_DIR, "%s: not a directory", pos[1]);
	plen = strlen(fs.private_dir);
	if (!strcmp(fs.root_dir, fs.private_dir) ||
	    (!strncmp(fs.root_dir, fs.private_dir, plen) && (fs.root_dir[plen] == '/' || plen == 1)))
		die(SIMFS_ERR_NESTED, "ROOT %s is inside PRIVATE %s", fs.root_dir, fs.private_dir);
	if (o.foreground)
		run_daemon(&fs, &o, -1, lock_fd);
	if (pipe2(pfd, O_CLOEXEC))
		die(SIMFS_ERR_SYS, "pipe: %s", strerror(errno));
	fflush(NULL);
	pid = fork();
	if (pid < 0)
		die(SIMFS_ERR_SYS, "fork: %s", strerror(errno));
	if (pid == 0) {
		close(pfd[0]);
		setsid();
		/* The directory we were started in may be unmounted while we run. */
		if (chdir("/"))
			_exit(SIMFS_ERR_SYS);
		run_daemon(&fs, &o, pfd[1], lock_fd);
	}
	close(pfd[1]);
	{
		char buf[1400];
		ssize_t n, got = 0;
		int code;

		while (got < (ssize_t)sizeof(buf) - 1 && (n = read(pfd[0], buf + got, sizeof(buf) - 1 - (size_t)got)) != 0) {
			if (n < 0) {
				if (errno == EINTR)
					continue;
				break;
			}
			got += n;
			if (memchr(buf, '\n', (size_t)got))
				break;
		}
		buf[got] = 0;
		buf[strcspn(buf, "\n")] = 0;
		if (!strcmp(buf, "ok"))
			return 0;
		if (sscanf(buf, "err %d", &code) == 1 && strchr(buf + 4, ' ')) {
			waitpid(pid, NULL, 0);
			die(code, "%s", strchr(buf + 4, ' ') + 1);
		}
		waitpid(pid, NULL, 0);
		die(SIMFS_ERR_SYS, "the daemon died while starting");
	}
}

static int cmd_umount(int argc, char **argv)
{
	char root[PATH_MAX], spath[PATH_MAX + 64];
	const char *arg = NULL;
	bool lazy = false;
	struct state s;
	bool have_state;
	int r;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-l"))
			lazy = true;
		else if (argv[i][0] == '-' && argv[i][1])
			die(SIMFS_ERR_USAGE, "unknown option '%s' (see simfs --help)", argv[i]);
		else if (!arg)
			arg = argv[i];
		else
			die(SIMFS_ERR_USAGE, "too many arguments (see simfs --help)");
	}
	if (!arg)
		die(SIMFS_ERR_USAGE, "usage: simfs umount [-l] ROOT");
	if ((r = root_path(arg, root, sizeof(root))))
		die(SIMFS_ERR_DIR, "%s: %s", arg, strerror(-r));
	state_path(root, spath, sizeof(spath));
	lock_root(spath);
	have_state = !read_state(spath, &s);
	if (!have_state || !daemon_alive(s.pid)) {
		/* A killed daemon: its mount is dead; take it away lazily. */
		bool mounted;

		if (detach_dead(root, have_state ? s.dev : 0, &mounted))
			die(SIMFS_ERR_BUSY, "%s: another filesystem is mounted over the simfs mount; unmount it first",
			    root);
		if (have_state)
			forget_instance(spath, &s);
		if (!mounted && !have_state)
			die(SIMFS_ERR_NOT_MOUNTED, "%s is not served by simfs", root);
		return 0;
	}
	if (s.dev) {
		struct mounts_at m;

		mounts_at(root, s.dev, &m);
		/* umount2 takes what a lookup of ROOT sees: never another filesystem */
		if (m.dev && m.top != s.dev)
			die(SIMFS_ERR_BUSY, "%s: another filesystem is mounted over the simfs mount; unmount it first",
			    root);
		if (!m.dev) {
			/* Detached by hand (umount -l while busy): stop the daemon, leave ROOT alone. */
			kill(s.pid, SIGTERM);
			goto wait;
		}
	}
	if (umount2(root, lazy ? MNT_DETACH : 0)) {
		if (errno == EBUSY)
			die(SIMFS_ERR_BUSY, "%s is busy (simfs umount -l detaches it anyway)", root);
		if (errno != EINVAL)
			die(SIMFS_ERR_SYS, "umount %s: %s", root, strerror(errno));
		/* Not mounted any more (someone ran umount): stop the daemon. */
		kill(s.pid, SIGTERM);
	}
wait:
	/* The daemon writes its quota back and exits; a lazily detached but busy mount keeps it. */
	for (int i = 0; i < (lazy ? 50 : 600) && daemon_alive(s.pid); i++)
		usleep(100000);
	if (!lazy && daemon_alive(s.pid)) {
		die(SIMFS_ERR_SYS, "daemon %d did not stop", (int)s.pid);
	}
	return 0;
}

static int cmd_list(void)
{
	DIR *d = opendir(run_dir());
	struct dirent *de;

	if (!d)
		return errno == ENOENT ? 0 : (die(SIMFS_ERR_SYS, "%s: %s", run_dir(), strerror(errno)), 0);
	while ((de = readdir(d))) {
		char path[PATH_MAX + 300];
		struct state s;
		size_t n = strlen(de->d_name);

		if (n < 7 || strcmp(de->d_name + n - 6, ".state"))
			continue;
		snprintf(path, sizeof(path), "%s/%s", run_dir(), de->d_name);
		if (read_state(path, &s))
			continue;
		printf("%s %s %d %s %s\n", s.root, s.private_dir, (int)s.pid, s.quota[0] ? s.quota : "-",
		       daemon_alive(s.pid) ? "running" : "dead");
	}
	closedir(d);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		die(SIMFS_ERR_USAGE, "missing command (see simfs --help)");
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		fputs(usage_text, stdout);
		return 0;
	}
	if (!strcmp(argv[1], "mount"))
		return cmd_mount(argc - 1, argv + 1);
	if (!strcmp(argv[1], "umount"))
		return cmd_umount(argc - 1, argv + 1);
	if (!strcmp(argv[1], "list")) {
		if (argc > 2)
			die(SIMFS_ERR_USAGE, "list: unexpected argument '%s' (see simfs --help)", argv[2]);
		return cmd_list();
	}
	die(SIMFS_ERR_USAGE, "unknown command '%s' (see simfs --help)", argv[1]);
}
