/* faultio: see faultio.h. Files are tracked by inode with a descriptor of our own, so undo works
 * after the library has closed or renamed them. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "faultio.h"
#include "harness.h"

struct undo {
	uint64_t off;
	size_t len;
	uint8_t *old;		/* bytes before the write (len of them, where the file had them) */
	uint64_t old_size;	/* file size before the operation */
};

struct tracked {
	dev_t dev;
	ino_t ino;
	int fd;
	struct undo *log;
	size_t n, cap;
};

static struct tracked files[256];
static int n_files;
static long op_count, fail_at;
static int fail_errno;
static bool fail_sticky, triggered;

static bool should_fail(void)
{
	op_count++;
	if (fail_at && (op_count == fail_at || (fail_sticky && op_count > fail_at))) {
		triggered = true;
		return true;
	}
	return false;
}

static struct tracked *track(int fd)
{
	struct stat st;

	if (fstat(fd, &st) || !S_ISREG(st.st_mode))
		return NULL;
	for (int i = 0; i < n_files; i++)
		if (files[i].dev == st.st_dev && files[i].ino == st.st_ino)
			return &files[i];
	if (n_files == (int)(sizeof(files) / sizeof(files[0])))
		return NULL;
	files[n_files].dev = st.st_dev;
	files[n_files].ino = st.st_ino;
	{
		char p[64];

		snprintf(p, sizeof(p), "/proc/self/fd/%d", fd);
		files[n_files].fd = open(p, O_RDWR | O_CLOEXEC);
	}
	return &files[n_files++];
}

static uint64_t file_size(int fd)
{
	struct stat st;

	return fstat(fd, &st) ? 0 : (uint64_t)st.st_size;
}

static void log_change(struct ploop_file *f, uint64_t off, size_t len)
{
	struct tracked *t = f->priv;
	struct undo *u;

	if (!t)
		return;
	if (t->n == t->cap) {
		t->cap = t->cap ? t->cap * 2 : 16;
		t->log = realloc(t->log, t->cap * sizeof(*t->log));
	}
	u = &t->log[t->n++];
	u->off = off;
	u->len = len;
	u->old_size = file_size(f->fd);
	u->old = len ? calloc(1, len) : NULL;
	if (len && pread(f->fd, u->old, len, (off_t)off) < 0)
		memset(u->old, 0, len);
}

static const struct ploop_io_ops faultio_ops;

static int fio_open(const char *path, int flags, mode_t mode, struct ploop_file **out)
{
	int r;

	if ((flags & O_CREAT) && should_fail())
		return -fail_errno;
	r = ploop_io_posix()->open(path, flags, mode, out);
	if (r)
		return r;
	(*out)->ops = &faultio_ops;
	(*out)->priv = (flags & (O_RDWR | O_WRONLY)) ? track((*out)->fd) : NULL;
	return 0;
}

static void fio_close(struct ploop_file *f)
{
	ploop_io_posix()->close(f);
}

static ssize_t fio_pread(struct ploop_file *f, void *buf, size_t len, uint64_t off)
{
	return ploop_io_posix()->pread(f, buf, len, off);
}

static ssize_t fio_pwrite(struct ploop_file *f, const void *buf, size_t len, uint64_t off)
{
	if (should_fail())
		return -fail_errno;
	log_change(f, off, len);
	return ploop_io_posix()->pwrite(f, buf, len, off);
}

static int fio_sync(struct ploop_file *f)
{
	struct tracked *t = f->priv;

	if (should_fail())
		return -fail_errno;
	if (t) {
		for (size_t i = 0; i < t->n; i++)
			free(t->log[i].old);
		t->n = 0;
	}
	return ploop_io_posix()->sync(f);
}

static int fio_size(struct ploop_file *f, uint64_t *size)
{
	return ploop_io_posix()->size(f, size);
}

static int fio_truncate(struct ploop_file *f, uint64_t size)
{
	if (should_fail())
		return -fail_errno;
	log_change(f, 0, 0);
	return ploop_io_posix()->truncate(f, size);
}

static int fio_allocate(struct ploop_file *f, uint64_t off, uint64_t len)
{
	if (should_fail())
		return -fail_errno;
	log_change(f, 0, 0);
	return ploop_io_posix()->allocate(f, off, len);
}

static int fio_lock(struct ploop_file *f, bool exclusive)
{
	return ploop_io_posix()->lock(f, exclusive);
}

static int fio_rename(const char *from, const char *to)
{
	return should_fail() ? -fail_errno : ploop_io_posix()->rename(from, to);
}

static int fio_link(const char *from, const char *to)
{
	return should_fail() ? -fail_errno : ploop_io_posix()->link(from, to);
}

static int fio_unlink(const char *path)
{
	return should_fail() ? -fail_errno : ploop_io_posix()->unlink(path);
}

static int fio_sync_dir(const char *dir)
{
	return should_fail() ? -fail_errno : ploop_io_posix()->sync_dir(dir);
}

static const struct ploop_io_ops faultio_ops = {
	.open = fio_open,
	.close = fio_close,
	.pread = fio_pread,
	.pwrite = fio_pwrite,
	.sync = fio_sync,
	.size = fio_size,
	.truncate = fio_truncate,
	.allocate = fio_allocate,
	.copy = NULL,
	.lock = fio_lock,
	.rename = fio_rename,
	.link = fio_link,
	.unlink = fio_unlink,
	.sync_dir = fio_sync_dir,
};

static void forget(void)
{
	for (int i = 0; i < n_files; i++) {
		for (size_t k = 0; k < files[i].n; k++)
			free(files[i].log[k].old);
		free(files[i].log);
		if (files[i].fd >= 0)
			close(files[i].fd);
	}
	memset(files, 0, sizeof(files));
	n_files = 0;
}

void faultio_install(void)
{
	forget();
	op_count = fail_at = 0;
	triggered = false;
	ploop_io_set(&faultio_ops);
}

void faultio_uninstall(void)
{
	forget();
	ploop_io_set(NULL);
}

void faultio_arm(long n, int errnum, bool sticky)
{
	op_count = 0;
	fail_at = n;
	fail_errno = errnum;
	fail_sticky = sticky;
	triggered = false;
}

bool faultio_triggered(void)
{
	return triggered;
}

long faultio_count(void)
{
	return op_count;
}

void faultio_crash(uint64_t seed)
{
	uint64_t x = seed * 0x9E3779B97F4A7C15ULL + 7;

	for (int i = 0; i < n_files; i++) {
		struct tracked *t = &files[i];

		for (size_t k = t->n; k-- > 0;) {
			struct undo *u = &t->log[k];

			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			if (t->fd < 0 || !(x & 1))
				continue;
			if (u->len && pwrite(t->fd, u->old, u->len, (off_t)u->off) < 0)
				continue;
			if (file_size(t->fd) > u->old_size && ftruncate(t->fd, (off_t)u->old_size))
				continue;
		}
	}
	forget();
	fail_at = 0;
}
