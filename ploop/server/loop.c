/* Loop devices and the filesystem on them: attach the served file with direct I/O and partition
 * scanning, find the filesystem (GPT partition 1 or the whole device), mount, unmount, detach. */
#include <dirent.h>
#include <fcntl.h>
#include <linux/loop.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <linux/fs.h>
#include <signal.h>
#include <sched.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>
#include <time.h>

#include "server.h"
#include "loop.h"

static void sleep_ms(int ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/*
 * The server must never itself wait for I/O on the device it serves: if it is killed while one of
 * its threads waits so (in mount, umount, FIFREEZE), that thread cannot die, so the process keeps
 * its /dev/fuse descriptor, so the wait is never answered - a process stuck for good. Such calls run
 * in a child holding none of our descriptors: when we die, the FUSE connection is aborted and the
 * child's wait ends with an error.
 *
 * The child shares our memory (CLONE_VM: no page tables to copy or tear down, which costs
 * milliseconds in a server with many threads and buffers) but not our descriptor table, and runs
 * on a stack of its own. It makes system calls only.
 */
#define CHILD_STACK (64 * 1024)

struct child {
	pid_t pid;
	void *stack;
};

static int child_start(struct child *c, int (*fn)(void *), void *arg)
{
	c->stack = mmap(NULL, CHILD_STACK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
	if (c->stack == MAP_FAILED) {
		c->stack = NULL;
		return -errno;
	}
	c->pid = clone(fn, (char *)c->stack + CHILD_STACK, CLONE_VM | SIGCHLD, arg);
	if (c->pid < 0) {
		int e = errno;

		munmap(c->stack, CHILD_STACK);
		c->stack = NULL;
		return -e;
	}
	return 0;
}

/* Waits for the child; its exit status is an errno value (0: done). */
static int child_wait(struct child *c)
{
	int st, r;

	while (waitpid(c->pid, &st, __WALL) < 0)
		if (errno != EINTR) {
			r = -errno;
			goto out;
		}
	r = WIFEXITED(st) ? -WEXITSTATUS(st) : -EINTR;
out:
	munmap(c->stack, CHILD_STACK);
	c->stack = NULL;
	c->pid = -1;
	return r;
}

/* In the child: no descriptor of ours but @keep_below and up, default signal handling. */
static void drop_descriptors(unsigned keep_below)
{
	struct sigaction sa = { .sa_handler = SIG_IGN };
	sigset_t none;

	sigaction(SIGPIPE, &sa, NULL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	close_range(keep_below, ~0U, 0);
}

struct mount_call {
	const char *dev, *dir, *type, *opts;
	unsigned long flags;
	bool umount;
};

static int mount_child(void *arg)
{
	struct mount_call *m = arg;

	drop_descriptors(3);
	if (m->umount)
		_exit(umount2(m->dir, 0) ? errno : 0);
	_exit(mount(m->dev, m->dir, m->type, m->flags, m->opts) ? errno : 0);
}

static int detached_mount_call(struct mount_call *m)
{
	struct child c;
	int r = child_start(&c, mount_child, m);

	return r ? r : child_wait(&c);
}

static int detached_mount(const char *dev, const char *dir, const char *type, unsigned long flags,
			  const char *opts)
{
	struct mount_call m = { .dev = dev, .dir = dir, .type = type, .opts = opts, .flags = flags };

	return detached_mount_call(&m);
}

static int detached_umount(const char *dir)
{
	struct mount_call m = { .dir = dir, .umount = true };

	return detached_mount_call(&m);
}

/*
 * The freezer child freezes the filesystem at @dir, reports, and thaws when told to - or when we
 * die (its end of the command pipe reads EOF), so a dead server never leaves a filesystem frozen.
 * Its descriptors: 3 the command pipe, 4 the result pipe.
 */
struct freeze_call {
	const char *dir;
	dev_t dev;
	int cmd, res;
};

static int freezer_child(void *arg)
{
	struct freeze_call *f = arg;
	struct stat st;
	int fd, e = 0;
	char r;

	/* The pipes to 3 and 4 through numbers above both and above 4 (fixed ones collided with the
	 * pipes of a server holding about 100 descriptors: the result went into the command pipe, and
	 * the server, reading EOF, took a freeze that had succeeded for a failure and left it). */
	int hi = (f->cmd > f->res ? f->cmd : f->res) + 1;
	int c = fcntl(f->cmd, F_DUPFD, hi > 5 ? hi : 5), s = fcntl(f->res, F_DUPFD, hi > 5 ? hi : 5);

	if (c < 0 || s < 0 || dup2(c, 3) < 0 || dup2(s, 4) < 0)
		_exit(EBADF);
	drop_descriptors(5);
	/* The directory is ours only if it is on our device still: unmounted since it was found,
	 * it is a directory of the filesystem below, which must not be frozen. Open, it keeps ours
	 * from going (a lazy unmount leaves the descriptor on it). */
	fd = open(f->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st))
		e = errno;
	else if (st.st_dev != f->dev)
		e = ESTALE;
	else if (ioctl(fd, FIFREEZE, 0))
		e = errno;
	r = (char)e;
	if (write(4, &r, 1) != 1) {
		if (!e)	/* a freeze nobody knows of would stay for good */
			ioctl(fd, FITHAW, 0);
		_exit(e ? e : EIO);
	}
	if (e)
		_exit(e);
	while (read(3, &r, 1) < 0 && errno == EINTR)
		;
	e = ioctl(fd, FITHAW, 0) ? errno : 0;
	r = (char)e;
	(void)!write(4, &r, 1);
	_exit(e);
}

/* A child whose exit we have not collected yet: the freezer, once it has reported its thaw. */
static struct child reap_later = { .pid = -1 };
static pthread_mutex_t reap_lock = PTHREAD_MUTEX_INITIALIZER;

static void reap_pending(void)
{
	pthread_mutex_lock(&reap_lock);
	if (reap_later.pid > 0)
		child_wait(&reap_later);
	pthread_mutex_unlock(&reap_lock);
}

static char result_byte(int fd)
{
	char r;
	ssize_t n;

	while ((n = read(fd, &r, 1)) < 0 && errno == EINTR)
		;
	return n == 1 ? r : (char)EIO;
}

int fs_freeze(const char *dir, dev_t dev, struct freezer *fz)
{
	struct freeze_call f = { .dir = dir, .dev = dev };
	struct child c;
	int cmd[2], res[2], r;

	fz->pid = -1;
	reap_pending();
	if (pipe2(cmd, O_CLOEXEC))
		return -errno;
	if (pipe2(res, O_CLOEXEC)) {
		r = -errno;
		close(cmd[0]);
		close(cmd[1]);
		return r;
	}
	f.cmd = cmd[0];
	f.res = res[1];
	r = child_start(&c, freezer_child, &f);
	close(cmd[0]);
	close(res[1]);
	if (r) {
		close(cmd[1]);
		close(res[0]);
		return r;
	}
	fz->pid = c.pid;
	fz->stack = c.stack;
	fz->cmd = cmd[1];
	fz->res = res[0];
	r = result_byte(fz->res);
	if (r) {
		close(fz->cmd);
		close(fz->res);
		child_wait(&c);
		fz->pid = -1;
		return -r;
	}
	return 0;
}

int fs_thaw(struct freezer *fz)
{
	char r = 0;

	if (fz->pid <= 0)
		return 0;
	(void)!write(fz->cmd, &r, 1);
	r = result_byte(fz->res);
	close(fz->cmd);
	close(fz->res);
	/* Thawed: the child only has to exit now; collect it later, not on the caller's time. */
	pthread_mutex_lock(&reap_lock);
	if (reap_later.pid > 0)
		child_wait(&reap_later);
	reap_later = (struct child){ .pid = fz->pid, .stack = fz->stack };
	pthread_mutex_unlock(&reap_lock);
	fz->pid = -1;
	return -r;
}

static int read_sysfs(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = read(fd, buf, len - 1);
	close(fd);
	if (n < 0)
		return -EIO;
	buf[n] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	return 0;
}

int loop_attach(const char *file, bool ro, uint64_t offset, uint64_t sizelimit, char *dev, size_t devlen, char *err,
		size_t errlen)
{
	struct loop_config cfg = { .block_size = 0 };
	int ctl, fd = -1, lfd = -1, nr = -1, r = 0;
	char sys[128], val[16];

	ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
	if (ctl < 0) {
		snprintf(err, errlen, "/dev/loop-control: %s", strerror(errno));
		return -errno;
	}
	fd = open(file, (ro ? O_RDONLY : O_RDWR) | O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		snprintf(err, errlen, "%s: %s", file, strerror(errno));
		goto out;
	}
	cfg.fd = (uint32_t)fd;
	/* No partition scan: many kernels (this project's CI among them) have no partition table
	 * support; the filesystem in partition 1 gets a loop device of its own, at its offset. */
	cfg.info.lo_flags = LO_FLAGS_DIRECT_IO | (ro ? LO_FLAGS_READ_ONLY : 0);
	cfg.info.lo_offset = offset;
	cfg.info.lo_sizelimit = sizelimit;
	/* Another process may take the free device first: retry with the next one. */
	for (int attempt = 0; attempt < 16; attempt++) {
		nr = ioctl(ctl, LOOP_CTL_GET_FREE);
		if (nr < 0) {
			r = -errno;
			snprintf(err, errlen, "no free loop device: %s", strerror(errno));
			goto out;
		}
		snprintf(dev, devlen, "/dev/loop%d", nr);
		lfd = open(dev, (ro ? O_RDONLY : O_RDWR) | O_CLOEXEC);
		if (lfd < 0) {
			r = -errno;
			snprintf(err, errlen, "%s: %s", dev, strerror(errno));
			goto out;
		}
		if (!ioctl(lfd, LOOP_CONFIGURE, &cfg)) {
			r = 0;
			break;
		}
		r = -errno;
		close(lfd);
		lfd = -1;
		if (r != -EBUSY) {
			snprintf(err, errlen, "%s: cannot attach: %s", dev, strerror(-r));
			goto out;
		}
	}
	if (r) {
		snprintf(err, errlen, "no loop device could be attached: %s", strerror(-r));
		goto out;
	}
	snprintf(sys, sizeof(sys), "/sys/block/loop%d/loop/dio", nr);
	if (read_sysfs(sys, val, sizeof(val)) || strcmp(val, "1")) {
		/* Without direct I/O the page cache would hold a second copy of every block. */
		ioctl(lfd, LOOP_CLR_FD, 0);
		r = -EOPNOTSUPP;
		snprintf(err, errlen, "%s: the kernel refused direct I/O on the served file", dev);
	}
out:
	if (lfd >= 0)
		close(lfd);
	if (fd >= 0)
		close(fd);
	close(ctl);
	return r;
}

/* Detaches and waits until the device has let go of the file (the FUSE release has arrived). */
int loop_detach(const char *dev)
{
	char sys[160], val[16];
	const char *name = strrchr(dev, '/') ? strrchr(dev, '/') + 1 : dev;
	int fd = open(dev, O_RDONLY | O_CLOEXEC);
	int r = 0;

	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	if (ioctl(fd, LOOP_CLR_FD, 0) && errno != ENXIO)
		r = -errno;
	close(fd);
	snprintf(sys, sizeof(sys), "/sys/block/%s/loop/backing_file", name);
	/* Busy, the kernel only marks the device to be let go at its last close. */
	for (int i = 0; !r; i++) {
		if (read_sysfs(sys, val, sizeof(val)))
			break;
		if (i == 500)
			r = -EBUSY;
		sleep_ms(10);
	}
	return r;
}

/* Sets offset and size limit (0: to the end) of an attached device, and its capacity again. */
static int loop_set_size_here(const char *dev, uint64_t offset, uint64_t sizelimit)
{
	struct loop_info64 info;
	int fd = open(dev, O_RDONLY | O_CLOEXEC);
	int r = 0;

	if (fd < 0)
		return -errno;
	if (ioctl(fd, LOOP_GET_STATUS64, &info)) {
		r = -errno;
	} else if (info.lo_offset != offset || info.lo_sizelimit != sizelimit) {
		info.lo_offset = offset;
		info.lo_sizelimit = sizelimit;
		if (ioctl(fd, LOOP_SET_STATUS64, &info))
			r = -errno;
	}
	if (!r && ioctl(fd, LOOP_SET_CAPACITY, 0))
		r = -errno;
	close(fd);
	return r;
}

/* New capacity (LOOP_SET_STATUS64 and LOOP_SET_CAPACITY wait for the device's I/O, which we serve):
 * in a child, as mount. */
struct size_call {
	const char *path;
	uint64_t offset, sizelimit;
	int64_t end;
};

static int loop_size_child(void *arg)
{
	struct size_call *c = arg;

	drop_descriptors(3);
	_exit(-loop_set_size_here(c->path, c->offset, c->sizelimit));
}

int loop_set_size(const char *dev, uint64_t offset, uint64_t sizelimit)
{
	struct size_call c = { .path = dev, .offset = offset, .sizelimit = sizelimit };
	struct child ch;
	int r = child_start(&ch, loop_size_child, &c);

	return r ? r : child_wait(&ch);
}

/* The size the kernel gives @path, a file of our own FUSE mount: opening (and closing: FLUSH) it
 * waits for us, so a child does it. */
static int file_size_child(void *arg)
{
	struct size_call *c = arg;
	int fd, r = 0;

	drop_descriptors(3);
	fd = open(c->path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		_exit(errno);
	c->end = lseek(fd, 0, SEEK_END);
	if (c->end < 0)
		r = errno;
	close(fd);
	_exit(r);
}

int served_file_size(const char *path, int64_t *end)
{
	struct size_call c = { .path = path };
	struct child ch;
	int r = child_start(&ch, file_size_child, &c);

	if (!r)
		r = child_wait(&ch);
	if (!r)
		*end = c.end;
	return r;
}

int fs_mount(const char *dev, const char *dir, const char *fstype, const char *opts, bool ro, char *err,
	     size_t errlen)
{
	const char *type = fstype && *fstype ? fstype : "ext4";
	char data[1024];
	unsigned long flags = ploop_mount_options(opts, ro ? MS_RDONLY : 0, data, sizeof(data));
	int r;

	if (ro)
		flags |= MS_RDONLY;
	r = detached_mount(dev, dir, type, flags, data);
	/* A read-only view of an ext4 left unclean cannot replay its journal: it is shown as it is. */
	if (r == -EROFS && (flags & MS_RDONLY) && !strncmp(type, "ext", 3)) {
		char o[1040];

		snprintf(o, sizeof(o), "%s%snoload", data, *data ? "," : "");
		r = detached_mount(dev, dir, type, flags, o);
	}
	if (r) {
		snprintf(err, errlen, "cannot mount %s on %s: %s", dev, dir, strerror(-r));
		return r;
	}
	return 0;
}

int fs_umount(const char *dir)
{
	int r = detached_umount(dir);

	if (r == -EINVAL || r == -ENOENT)
		return 0;	/* not mounted */
	return r;
}

int fs_umount_device(const char *dev, char *dir, size_t len)
{
	struct stat st;

	if (stat(dev, &st))
		return errno == ENOENT ? 0 : -errno;
	/* Mounted on several directories (bind mounts): each goes. Bounded, in case one comes back. */
	for (int i = 0; i < 64 && ploop_find_mount(st.st_rdev, dir, len) != PLOOP_NOT_MOUNTED; i++) {
		int r;

		/* Another filesystem mounted over ours there (another set's): unmounting the directory
		 * would take that one off instead. */
		if (!ploop_fs_shows_device(dir, dev))
			return -EXDEV;
		r = fs_umount(dir);

		if (r)
			return r;
	}
	return 0;
}

pid_t device_opener(const char *dev)
{
	struct stat st, fst;
	struct dirent *p, *e;
	pid_t found = 0, self = getpid();
	DIR *procs;

	if (stat(dev, &st))
		return 0;
	procs = opendir("/proc");
	while (procs && !found && (p = readdir(procs))) {
		char path[300];
		pid_t pid = (pid_t)atoi(p->d_name);
		DIR *fds;

		if (pid <= 0 || pid == self)
			continue;
		snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
		fds = opendir(path);
		while (fds && !found && (e = readdir(fds))) {
			if (e->d_name[0] == '.' || fstatat(dirfd(fds), e->d_name, &fst, 0))
				continue;
			if (S_ISBLK(fst.st_mode) && fst.st_rdev == st.st_rdev)
				found = pid;
		}
		if (fds)
			closedir(fds);
	}
	if (procs)
		closedir(procs);
	return found;
}
