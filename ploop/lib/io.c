/* The I/O seam: the posix implementation of struct ploop_io_ops and the pio_* wrappers through
 * which the rest of the library does all of its file access. */
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdio.h>
#include <sys/stat.h>

#include "internal.h"

static const struct ploop_io_ops *current_ops;

int pio_fail_open(struct ploop_error *err, int r, const char *path)
{
	if (r == -OPEN_ENOTREG)
		return ploop_fail(err, PLOOP_ERR_OPEN, 0, "%s: not a regular file", path);
	return ploop_fail(err, PLOOP_ERR_OPEN, -r, "%s: cannot open", path);
}

static int posix_open(const char *path, int flags, mode_t mode, struct ploop_file **out)
{
	struct ploop_file *f = calloc(1, sizeof(*f));

	if (!f)
		return -ENOMEM;
	f->fd = open_regular_file(path, flags, mode, true);	/* a raw image may be a device */
	if (f->fd < 0) {
		int e = f->fd;

		free(f);
		return e;
	}
	f->ops = ploop_io_posix();
	*out = f;
	return 0;
}

static void posix_close(struct ploop_file *f)
{
	close(f->fd);
	free(f);
}

static ssize_t posix_pread(struct ploop_file *f, void *buf, size_t len, uint64_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pread(f->fd, (char *)buf + done, len - done, (off_t)(off + done));

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break;
		done += (size_t)n;
	}
	return (ssize_t)done;
}

static ssize_t posix_pwrite(struct ploop_file *f, const void *buf, size_t len, uint64_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pwrite(f->fd, (const char *)buf + done, len - done, (off_t)(off + done));

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO;
		done += (size_t)n;
	}
	return (ssize_t)done;
}

static int posix_sync(struct ploop_file *f)
{
	return fsync(f->fd) ? -errno : 0;
}

static int posix_size(struct ploop_file *f, uint64_t *size)
{
	struct stat st;

	if (fstat(f->fd, &st))
		return -errno;
	if (S_ISBLK(st.st_mode)) {
		off_t end = lseek(f->fd, 0, SEEK_END);

		if (end < 0)
			return -errno;
		*size = (uint64_t)end;
	} else {
		*size = (uint64_t)st.st_size;
	}
	return 0;
}

static int posix_truncate(struct ploop_file *f, uint64_t size)
{
	return ftruncate(f->fd, (off_t)size) ? -errno : 0;
}

/* fallocate keeps images non-sparse (unwritten extents are not holes); filesystems without it get
 * a plain size extension, which reads as zeros too. */
static int posix_allocate(struct ploop_file *f, uint64_t off, uint64_t len)
{
	struct stat st, now;
	int e;

	if (fstat(f->fd, &st))
		return -errno;
	if (!fallocate(f->fd, 0, (off_t)off, (off_t)len))
		return 0;
	e = errno;
	if (e != EOPNOTSUPP && e != ENOSYS) {
		/* A fallocate that fails part-way (ENOSPC) keeps what it got and the size it reached:
		 * the file goes back to its size, so an image never ends in a partial cluster. */
		if (!fstat(f->fd, &now) && now.st_size > st.st_size && ftruncate(f->fd, st.st_size))
			return -errno;
		return -e;
	}
	if ((uint64_t)st.st_size < off + len && ftruncate(f->fd, (off_t)(off + len)))
		return -errno;
	return 0;
}

static int posix_writeback(struct ploop_file *f, uint64_t off, uint64_t len)
{
	return sync_file_range(f->fd, (off_t)off, (off_t)len, SYNC_FILE_RANGE_WRITE) ? -errno : 0;
}

static ssize_t posix_copy(struct ploop_file *src, uint64_t soff, struct ploop_file *dst, uint64_t doff,
			  size_t len)
{
	loff_t in = (loff_t)soff, out = (loff_t)doff;
	size_t done = 0;

	while (done < len) {
		ssize_t n = copy_file_range(src->fd, &in, dst->fd, &out, len - done, 0);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return done ? (ssize_t)done : -errno;
		}
		if (n == 0)
			break;
		done += (size_t)n;
	}
	return (ssize_t)done;
}

static int posix_lock(struct ploop_file *f, bool exclusive)
{
	struct flock fl = { .l_type = exclusive ? F_WRLCK : F_RDLCK, .l_whence = SEEK_SET };

	if (fcntl(f->fd, F_OFD_SETLK, &fl)) {
		if (errno == EACCES)
			return -EAGAIN;
		return -errno;
	}
	return 0;
}

static int posix_rename(const char *from, const char *to)
{
	return rename(from, to) ? -errno : 0;
}

static int posix_link(const char *from, const char *to)
{
	return link(from, to) ? -errno : 0;
}

static int posix_unlink(const char *path)
{
	return unlink(path) ? -errno : 0;
}

static int posix_sync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int r = 0;

	if (fd < 0)
		return -errno;
	if (fsync(fd))
		r = -errno;
	close(fd);
	return r;
}

static const struct ploop_io_ops posix_ops = {
	.open = posix_open,
	.close = posix_close,
	.pread = posix_pread,
	.pwrite = posix_pwrite,
	.sync = posix_sync,
	.size = posix_size,
	.truncate = posix_truncate,
	.allocate = posix_allocate,
	.writeback = posix_writeback,
	.copy = posix_copy,
	.lock = posix_lock,
	.rename = posix_rename,
	.link = posix_link,
	.unlink = posix_unlink,
	.sync_dir = posix_sync_dir,
};

const struct ploop_io_ops *ploop_io_posix(void)
{
	return &posix_ops;
}

void ploop_io_set(const struct ploop_io_ops *ops)
{
	current_ops = ops;
}

const struct ploop_io_ops *ploop_io_get(void)
{
	return current_ops ? current_ops : &posix_ops;
}

int pio_open(const char *path, int flags, mode_t mode, struct ploop_file **out)
{
	return ploop_io_get()->open(path, flags, mode, out);
}

void pio_close(struct ploop_file *f)
{
	if (f)
		f->ops->close(f);
}

int pio_read(struct ploop_file *f, void *buf, size_t len, uint64_t off)
{
	ssize_t n = f->ops->pread(f, buf, len, off);

	if (n < 0)
		return (int)n;
	if ((size_t)n < len)
		memset((char *)buf + n, 0, len - (size_t)n);
	return 0;
}

int pio_read_full(struct ploop_file *f, void *buf, size_t len, uint64_t off)
{
	ssize_t n = f->ops->pread(f, buf, len, off);

	if (n < 0)
		return (int)n;
	return (size_t)n == len ? 0 : -EIO;
}

int pio_write(struct ploop_file *f, const void *buf, size_t len, uint64_t off)
{
	ssize_t n = f->ops->pwrite(f, buf, len, off);

	if (n < 0)
		return (int)n;
	return (size_t)n == len ? 0 : -EIO;
}

int pio_sync(struct ploop_file *f)
{
	return f->ops->sync(f);
}

int pio_size(struct ploop_file *f, uint64_t *size)
{
	return f->ops->size(f, size);
}

int pio_truncate(struct ploop_file *f, uint64_t size)
{
	return f->ops->truncate(f, size);
}

int pio_allocate(struct ploop_file *f, uint64_t off, uint64_t len)
{
	return f->ops->allocate(f, off, len);
}

/* Copies through the table's copy hook when both files use it, else through a bounce buffer. */
int pio_copy(struct ploop_file *src, uint64_t soff, struct ploop_file *dst, uint64_t doff, uint64_t len)
{
	const size_t chunk = 8u << 20;
	void *buf = NULL;
	int r = 0;

	if (src->ops->copy && src->ops == dst->ops) {
		while (len) {
			size_t n = len > (1u << 30) ? (1u << 30) : (size_t)len;
			ssize_t c = src->ops->copy(src, soff, dst, doff, n);

			if (c == -EXDEV || c == -EOPNOTSUPP || c == -ENOSYS || c == -EINVAL || c == 0)
				break;
			if (c < 0)
				return (int)c;
			soff += (uint64_t)c;
			doff += (uint64_t)c;
			len -= (uint64_t)c;
		}
		if (!len)
			return 0;
	}
	buf = malloc(len < chunk ? len : chunk);
	if (!buf)
		return -ENOMEM;
	while (len) {
		size_t n = len < chunk ? (size_t)len : chunk;

		r = pio_read(src, buf, n, soff);
		if (!r)
			r = pio_write(dst, buf, n, doff);
		if (r)
			break;
		soff += n;
		doff += n;
		len -= n;
	}
	free(buf);
	return r;
}

void pio_writeback(struct ploop_file *f, uint64_t off, uint64_t len)
{
	if (f->ops->writeback)
		f->ops->writeback(f, off, len);
}

int pio_lock(struct ploop_file *f, bool exclusive)
{
	return f->ops->lock ? f->ops->lock(f, exclusive) : 0;
}

int pio_rename(const char *from, const char *to)
{
	return ploop_io_get()->rename(from, to);
}

int pio_link(const char *from, const char *to)
{
	return ploop_io_get()->link(from, to);
}

int pio_unlink(const char *path)
{
	return ploop_io_get()->unlink(path);
}

int pio_sync_dir(const char *dir)
{
	return ploop_io_get()->sync_dir(dir);
}

int pio_sync_parent(const char *path)
{
	char *dir = ploop_dir_of(path);
	int r;

	if (!dir)
		return -ENOMEM;
	r = pio_sync_dir(dir);
	free(dir);
	return r;
}
