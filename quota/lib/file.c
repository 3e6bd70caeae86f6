/* The quota file: where it is, opening it under its lock, reading it through the codec, replacing
 * it atomically (tmp + fsync + rename + fsync of the directory), removing it. */
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "../../common/openfile.h"
#include "internal.h"

struct vzq_handle {
	int fd;		/* the file we hold the lock on (-1: none) */
	int mode;
	bool created;	/* made empty by this open: removed by close unless written */
	char fname[PATH_MAX];
};

static const char *default_dir(void)
{
	const char *dir = getenv("VZQ_DIR");

	return dir && *dir ? dir : "/var/vzquota";
}

int vzq_file_name(uint32_t id, const char *file, bool relative, const char *path, char *out, size_t len,
		  struct vzq_error *err)
{
	int n;

	if (file) {
		n = snprintf(out, len, "%s", file);
	} else if (relative) {
		char copy1[PATH_MAX], copy2[PATH_MAX];

		if (!path || !*path)
			return vzq_fail(err, VZQ_ERR_NOPATH, 0, "quota %u: -R needs the tree path (-p)", id);
		if (strlen(path) >= sizeof(copy1))
			return vzq_fail(err, VZQ_ERR_USAGE, ENAMETOOLONG, "%.64s...", path);
		strcpy(copy1, path);
		strcpy(copy2, path);
		n = snprintf(out, len, "%s/quota.%s", dirname(copy1), basename(copy2));
	} else {
		n = snprintf(out, len, "%s/quota.%u", default_dir(), id);
	}
	if (n < 0 || (size_t)n >= len)
		return vzq_fail(err, VZQ_ERR_USAGE, ENAMETOOLONG, "quota file name of quota %u", id);
	return 0;
}

/* Creates the default quota directory (as vzquota's package does) when a new file is to go there. */
static void make_default_dir(const char *fname)
{
	const char *dir = default_dir();
	size_t n = strlen(dir);

	if (!strncmp(fname, dir, n) && fname[n] == '/' && !strchr(fname + n + 1, '/'))
		mkdir(dir, 0700);
}

void vzq_quota_free(struct vzq_quota *q)
{
	if (!q)
		return;
	free(q->path);
	free(q->ugid);
	vzq_ugid_index_free(q);
	q->path = NULL;
	q->ugid = NULL;
	q->n_ugid = 0;
	q->ugid_cap = 0;
}

static int read_all(int fd, const char *fname, unsigned char **out, size_t *len, struct vzq_error *err)
{
	struct stat st;
	unsigned char *buf;
	size_t done = 0;

	if (fstat(fd, &st) < 0)
		return vzq_fail(err, VZQ_ERR_FILE, errno, "%s", fname);
	if (!S_ISREG(st.st_mode))
		return vzq_fail(err, VZQ_ERR_FILE, 0, "%s: not a regular file", fname);
	/* the largest legal file: 2^24 records of 80 bytes and a path */
	if (st.st_size > (off_t)(1u << 24) * 80 + 8192)
		return vzq_fail(err, VZQ_ERR_FILE, 0, "%s: corrupt quota file: %lld bytes", fname,
				(long long)st.st_size);
	/* a file grown past what its header says is refused before it is read whole */
	unsigned char head[VZQ_HEAD_MAX];
	ssize_t got = pread(fd, head, sizeof(head), 0);
	uint64_t declared = got > 0 ? vzq_declared_size(head, got) : 0;

	if (declared && (uint64_t)st.st_size > declared)
		return vzq_fail(err, VZQ_ERR_FILE, 0, "%s: corrupt quota file: %lld bytes, past the %" PRIu64 " its header says",
				fname, (long long)st.st_size, declared);
	buf = malloc(st.st_size ? st.st_size : 1);
	if (!buf)
		return vzq_fail(err, VZQ_ERR_SYS, ENOMEM, "%s", fname);
	while (done < (size_t)st.st_size) {
		ssize_t n = pread(fd, buf + done, st.st_size - done, done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			free(buf);
			return vzq_fail(err, VZQ_ERR_FILE, errno, "%s: read", fname);
		}
		if (n == 0)
			break;
		done += n;
	}
	*out = buf;
	*len = done;
	return 0;
}

/* Opens a quota file (or its tmp file) without blocking on a FIFO or a device: anything but a
 * regular file is refused (VZQ_ERR_FILE), a symbolic link too: the file is replaced by a rename
 * over its name, which would put a file where the link was and leave the one it points at as it
 * was. Returns the descriptor, or -1 with @err filled (ENOENT: VZQ_ERR_NOFILE unless creating). */
static int open_regular(const char *fname, int flags, struct vzq_error *err)
{
	int fd = open_regular_file(fname, flags | O_NOFOLLOW, 0600, false);

	if (fd == -OPEN_ENOTREG)
		vzq_fail(err, VZQ_ERR_FILE, 0, "%s: not a regular file", fname);
	else if (fd == -ELOOP)
		vzq_fail(err, VZQ_ERR_FILE, 0, "%s: a symbolic link, not a regular file", fname);
	else if (fd == -ENOENT && !(flags & O_CREAT))
		vzq_fail(err, VZQ_ERR_NOFILE, 0, "%s: no quota file", fname);
	else if (fd < 0)
		vzq_fail(err, VZQ_ERR_FILE, -fd, "%s", fname);
	return fd < 0 ? -1 : fd;
}

/* Locks the file at @fname as it is now: a writer replaces it by rename, so after the lock the
 * descriptor must still be the file the name points at. */
static int open_locked(struct vzq_handle *h, int flags, struct vzq_error *err)
{
	for (int tries = 0; tries < 100; tries++) {
		struct stat a, b;
		int fd = open_regular(h->fname, flags, err);

		if (fd < 0) {
			if (err->err == EEXIST) {
				memset(err, 0, sizeof(*err));
				continue;	/* created by another between our tries */
			}
			return err->status;
		}
		if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
			int e = errno;
			close(fd);
			if (e == EWOULDBLOCK)
				return vzq_fail(err, VZQ_ERR_LOCKED, 0,
						"%s: another process holds the quota file", h->fname);
			return vzq_fail(err, VZQ_ERR_FILE, e, "%s: lock", h->fname);
		}
		if (fstat(fd, &a) == 0 && stat(h->fname, &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev) {
			h->fd = fd;
			h->created = (flags & O_EXCL) != 0;
			return 0;
		}
		close(fd);	/* replaced or removed meanwhile */
		flags &= ~O_EXCL;
	}
	return vzq_fail(err, VZQ_ERR_LOCKED, 0, "%s: the quota file keeps changing", h->fname);
}

/* Whether @fd is an empty regular file (see vzq_open). */
static bool is_empty(int fd)
{
	struct stat st;

	return fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size == 0;
}

int vzq_open(const char *fname, int mode, struct vzq_handle **out, struct vzq_quota *q, struct vzq_error *err)
{
	struct vzq_handle *h;
	unsigned char *buf = NULL;
	size_t len = 0;
	int legacy, rc;

	*out = NULL;
	memset(q, 0, sizeof(*q));
	h = calloc(1, sizeof(*h));
	if (!h)
		return vzq_fail(err, VZQ_ERR_SYS, ENOMEM, "%s", fname);
	h->fd = -1;
	h->mode = mode;
	if (strlen(fname) >= sizeof(h->fname)) {
		free(h);
		return vzq_fail(err, VZQ_ERR_USAGE, ENAMETOOLONG, "%.64s...", fname);
	}
	strcpy(h->fname, fname);

	if (mode & VZQ_RDWR) {
		rc = open_locked(h, O_RDWR, err);
		if (rc == VZQ_ERR_NOFILE && (mode & VZQ_CREATE)) {
			memset(err, 0, sizeof(*err));
			make_default_dir(fname);
			rc = open_locked(h, O_RDWR | O_CREAT | O_EXCL, err);
			if (rc == 0) {
				*out = h;
				return 0;
			}
		}
	} else {
		h->fd = open_regular(fname, O_RDONLY, err);
		rc = h->fd < 0 ? err->status : 0;
	}
	if (rc)
		goto fail;
	/* An empty file is the name an init creates to hold its lock while it counts, replaced by
	 * the counted file at the end: while that init runs, or after it was killed, there is no
	 * quota file yet. Whoever gets its lock knows the init is gone: init takes it over (and
	 * removes it again if it fails), any other writer removes the leftover. */
	if (is_empty(h->fd)) {
		if ((mode & VZQ_RDWR) && (mode & VZQ_CREATE)) {
			h->created = true;
			*out = h;
			return 0;
		}
		if ((mode & VZQ_RDWR) && !(mode & VZQ_REPLACE))
			unlink(fname);
		if (!(mode & VZQ_REPLACE)) {
			rc = vzq_fail(err, VZQ_ERR_NOFILE, 0, "%s: no quota file (the empty file of an unfinished init)",
				      fname);
			goto fail;
		}
	}
	if ((mode & VZQ_RDWR) && (mode & VZQ_REPLACE)) {
		*out = h;
		return 0;
	}
	rc = read_all(h->fd, fname, &buf, &len, err);
	if (rc)
		goto fail;
	rc = vzq_decode(fname, buf, len, q, &legacy, err);
	free(buf);
	if (rc)
		goto fail;
	if (!(mode & VZQ_RDWR)) {
		close(h->fd);
		h->fd = -1;
	}
	*out = h;
	return 0;
fail:
	vzq_close(h);
	return err->status;
}

static int sync_dir_of(const char *fname, struct vzq_error *err)
{
	char copy[PATH_MAX];
	int fd, rc = 0;

	strcpy(copy, fname);
	fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return vzq_fail(err, VZQ_ERR_FILE, errno, "%s: directory", fname);
	if (fsync(fd) < 0)
		rc = vzq_fail(err, VZQ_ERR_FILE, errno, "%s: fsync of the directory", fname);
	close(fd);
	return rc;
}

int vzq_write(struct vzq_handle *h, const struct vzq_quota *q, struct vzq_error *err)
{
	char tmp[PATH_MAX + 16];
	unsigned char *buf = NULL;
	size_t len, done = 0;
	int fd, rc;

	if (!h || h->fd < 0 || !(h->mode & VZQ_RDWR))
		return vzq_fail(err, VZQ_ERR_INTERNAL, 0, "quota file not opened for writing");
	rc = vzq_encode(q, &buf, &len, err);
	if (rc)
		return rc;
	if (snprintf(tmp, sizeof(tmp), "%s.tmp", h->fname) >= (int)sizeof(tmp)) {
		free(buf);
		return vzq_fail(err, VZQ_ERR_FILE, ENAMETOOLONG, "%s", h->fname);
	}
	/* We hold the lock of the file: nobody else writes the tmp file. */
	fd = open_regular(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, err);
	if (fd < 0) {
		free(buf);
		return err->status;
	}
	/* Locked before it gets the name: whoever opens the new file finds it held. */
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		rc = vzq_fail(err, VZQ_ERR_FILE, errno, "%s: lock", tmp);
		goto fail;
	}
	while (done < len) {
		ssize_t n = write(fd, buf + done, len - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = vzq_fail(err, VZQ_ERR_FILE, errno, "%s: write", tmp);
			goto fail;
		}
		done += n;
	}
	if (fsync(fd) < 0) {
		rc = vzq_fail(err, VZQ_ERR_FILE, errno, "%s: fsync", tmp);
		goto fail;
	}
	if (rename(tmp, h->fname) < 0) {
		rc = vzq_fail(err, VZQ_ERR_FILE, errno, "%s: rename into place", tmp);
		goto fail;
	}
	free(buf);
	close(h->fd);
	h->fd = fd;
	h->created = false;
	return sync_dir_of(h->fname, err);
fail:
	free(buf);
	close(fd);
	unlink(tmp);
	return rc;
}

void vzq_close(struct vzq_handle *h)
{
	if (!h)
		return;
	if (h->created && h->fd >= 0)
		unlink(h->fname);
	if (h->fd >= 0)
		close(h->fd);
	free(h);
}

int vzq_unlink(struct vzq_handle *h, struct vzq_error *err)
{
	if (!h || h->fd < 0 || !(h->mode & VZQ_RDWR))
		return vzq_fail(err, VZQ_ERR_INTERNAL, 0, "quota file not opened for writing");
	if (unlink(h->fname) < 0)
		return vzq_fail(err, VZQ_ERR_FILE, errno, "%s: unlink", h->fname);
	h->created = false;
	return sync_dir_of(h->fname, err);
}
