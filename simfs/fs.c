/* The filesystem of simfs: FUSE low-level operations over PRIVATE. Every inode is an O_PATH
 * descriptor and every host call is an *at() call relative to one, so no host path is ever
 * resolved again: symlinks, `..` and renames on either side cannot lead outside PRIVATE.
 * With a live quota, every operation that may allocate is checked and reserved before the host
 * call, then settled with the measured change of st_blocks. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sched.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "../common/fuse_ring.h"
#include "simfs.h"

#define BLOCK 4096LL

static struct simfs *fs_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static struct sinode *inode_of(fuse_req_t req, fuse_ino_t ino)
{
	if (ino == FUSE_ROOT_ID)
		return &fs_of(req)->root;
	return (struct sinode *)(uintptr_t)ino;
}

static int ifd(fuse_req_t req, fuse_ino_t ino)
{
	return inode_of(req, ino)->fd;
}

/* "/proc/self/fd/N": reopening an O_PATH descriptor through its magic link (no path walk). */
static void proc_name(char *buf, size_t len, int fd)
{
	snprintf(buf, len, "/proc/self/fd/%d", fd);
}

/* An open file's handle: the host descriptor, and whether it was opened O_DIRECT (pages written
 * back from the kernel's cache may come through it, and need no alignment). */
#define FH_DIRECT (1ull << 32)

static uint64_t fh_make(int fd, int flags)
{
	return (uint64_t)(unsigned)fd | ((flags & O_DIRECT) ? FH_DIRECT : 0);
}

static int fh_fd(const struct fuse_file_info *fi)
{
	return (int)(fi->fh & 0xffffffffu);
}

static int stat_fd(int fd, struct stat *st)
{
	return fstatat(fd, "", st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) ? -errno : 0;
}

static bool bad_name(const char *name)
{
	return !name[0] || strchr(name, '/') || !strcmp(name, ".") || !strcmp(name, "..");
}

/* ---- the inode table: (dev, ino) -> sinode ----------------------------------------------------- */

static size_t ihash(dev_t dev, ino_t ino, size_t size)
{
	uint64_t h = (uint64_t)ino * 0x9e3779b97f4a7c15ull ^ (uint64_t)dev;
	return (size_t)(h ^ (h >> 29)) & (size - 1);
}

static void itable_grow(struct simfs *fs)
{
	size_t nsize = fs->itable_size * 2;
	struct sinode **nt = calloc(nsize, sizeof(*nt));

	if (!nt)
		return;
	for (size_t i = 0; i < fs->itable_size; i++) {
		struct sinode *n = fs->itable[i], *next;

		for (; n; n = next) {
			size_t h = ihash(n->dev, n->ino, nsize);

			next = n->next;
			n->next = nt[h];
			nt[h] = n;
		}
	}
	free(fs->itable);
	fs->itable = nt;
	fs->itable_size = nsize;
}

/* The file handle of @fd, when its filesystem has them and it is PRIVATE's. */
static struct file_handle *handle_of(struct simfs *fs, int fd, dev_t dev)
{
	struct {
		struct file_handle fh;
		unsigned char bytes[MAX_HANDLE_SZ];
	} buf;
	struct file_handle *h;
	int mount_id;

	if (dev != fs->root.dev)
		return NULL;
	buf.fh.handle_bytes = MAX_HANDLE_SZ;
	if (name_to_handle_at(fd, "", &buf.fh, &mount_id, AT_EMPTY_PATH))
		return NULL;
	h = malloc(sizeof(*h) + buf.fh.handle_bytes);
	if (h)
		memcpy(h, &buf.fh, sizeof(*h) + buf.fh.handle_bytes);
	return h;
}

/* Closes descriptors of idle inodes that can be reopened, down to 7/8 of the limit (a sweep over
 * the table from where the last one stopped). Under itable_lock. */
static void evict_fds(struct simfs *fs)
{
	for (size_t scanned = 0; fs->open_fds > fs->max_fds / 8 * 7 && scanned < fs->itable_size; scanned++) {
		for (struct sinode *x = fs->itable[fs->evict_cursor & (fs->itable_size - 1)]; x; x = x->next) {
			/* The handle is taken when first needed: lookups do not pay for it. */
			if (x->fd >= 0 && !x->users && !x->handle && !x->no_handle &&
			    !(x->handle = handle_of(fs, x->fd, x->dev)))
				x->no_handle = true;
			if (x->fd >= 0 && !x->users && x->handle) {
				close(x->fd);
				x->fd = -1;
				fs->open_fds--;
			}
		}
		fs->evict_cursor = (fs->evict_cursor + 1) & (fs->itable_size - 1);
	}
}

/* Pins @n's descriptor for an operation (reopening it from its handle if it was closed). */
static struct sinode *iget(struct simfs *fs, struct sinode *n, int *err)
{
	if (n == &fs->root)
		return n;
	pthread_mutex_lock(&fs->itable_lock);
	if (n->fd < 0) {
		int fd = open_by_handle_at(fs->mount_fd, n->handle, O_PATH | O_CLOEXEC);

		if (fd < 0) {
			*err = errno;
			pthread_mutex_unlock(&fs->itable_lock);
			return NULL;
		}
		n->fd = fd;
		fs->open_fds++;
	}
	n->users++;
	if (fs->open_fds > fs->max_fds)
		evict_fds(fs);
	pthread_mutex_unlock(&fs->itable_lock);
	return n;
}

static void inode_free(struct simfs *fs, struct sinode *n);
static void true_up(struct simfs *fs, struct sinode *n, const struct stat *st);

/* Unpins; an inode the kernel forgot while we used it (it may, once we replied) goes now. */
static void iput(struct simfs *fs, struct sinode *n)
{
	bool gone;

	if (n == &fs->root)
		return;
	pthread_mutex_lock(&fs->itable_lock);
	gone = --n->users == 0 && n->forgotten;
	pthread_mutex_unlock(&fs->itable_lock);
	if (gone)
		inode_free(fs, n);
}

/* Finds or adds the inode of @fd (consumed) and counts one lookup. */
static struct sinode *inode_get(struct simfs *fs, int fd, const struct stat *st, int *err)
{
	struct sinode *n;
	size_t h;

	if (st->st_dev == fs->root.dev && st->st_ino == fs->root.ino) {
		close(fd);
		return &fs->root;
	}
	pthread_mutex_lock(&fs->itable_lock);
	h = ihash(st->st_dev, st->st_ino, fs->itable_size);
	for (n = fs->itable[h]; n; n = n->next)
		if (n->ino == st->st_ino && n->dev == st->st_dev)
			break;
	if (n) {
		n->nlookup++;
		if (n->fd < 0) {	/* closed for the limit: the new descriptor serves */
			n->fd = fd;
			fs->open_fds++;
			fd = -1;
		}
		pthread_mutex_unlock(&fs->itable_lock);
		if (fd >= 0)
			close(fd);
		return n;
	}
	n = calloc(1, sizeof(*n));
	if (!n) {
		pthread_mutex_unlock(&fs->itable_lock);
		close(fd);
		*err = ENOMEM;
		return NULL;
	}
	n->fd = fd;
	n->dev = st->st_dev;
	n->ino = st->st_ino;
	n->charged = (int64_t)st->st_blocks * 512;
	n->nlookup = 1;
	pthread_mutex_init(&n->qlock, NULL);
	n->next = fs->itable[h];
	fs->itable[h] = n;
	fs->open_fds++;
	if (++fs->itable_count > fs->itable_size)
		itable_grow(fs);
	/* Not this one: the caller has not counted it as used yet. */
	n->users++;
	if (fs->open_fds > fs->max_fds)
		evict_fds(fs);
	n->users--;
	pthread_mutex_unlock(&fs->itable_lock);
	return n;
}

static void inode_forget(struct simfs *fs, struct sinode *n, uint64_t count)
{
	struct sinode **p;

	if (n == &fs->root)
		return;
	pthread_mutex_lock(&fs->itable_lock);
	if (n->nlookup > count) {
		n->nlookup -= count;
		pthread_mutex_unlock(&fs->itable_lock);
		return;
	}
	for (p = &fs->itable[ihash(n->dev, n->ino, fs->itable_size)]; *p && *p != n; p = &(*p)->next)
		;
	if (*p)
		*p = n->next;
	fs->itable_count--;
	if (n->fd >= 0)
		fs->open_fds--;
	n->forgotten = true;
	if (n->users) {
		pthread_mutex_unlock(&fs->itable_lock);
		return;
	}
	pthread_mutex_unlock(&fs->itable_lock);
	inode_free(fs, n);
}

/* The inode (@dev, @ino) if the kernel knows it, pinned (iput() when done); else NULL. */
static struct sinode *itable_find(struct simfs *fs, dev_t dev, ino_t ino)
{
	struct sinode *n;

	pthread_mutex_lock(&fs->itable_lock);
	for (n = fs->itable[ihash(dev, ino, fs->itable_size)]; n; n = n->next)
		if (n->ino == ino && n->dev == dev)
			break;
	if (n)
		n->users++;
	pthread_mutex_unlock(&fs->itable_lock);
	return n;
}

/* Gives back what an orphan still holds. Under n->qlock (or with no other user left). */
static void orphan_free(struct simfs *fs, struct sinode *n)
{
	struct qcharge c = { -n->orphan_bytes, -1, n->orphan_uid, n->orphan_gid };

	if (!n->orphan)
		return;
	qlive_apply(fs->quota, &c);
	n->orphan = false;
	n->orphan_bytes = 0;
}

/*
 * The last measure of @n before we stop knowing it (the kernel forgets it, the daemon stops): a
 * later lookup starts from the blocks it has then, so what its host allocates for it afterwards,
 * by itself, would never be charged. ext4 allocates a written file's extent tree at writeback: for
 * a file written since its last measure that is started first (sync_file_range: the blocks are
 * allocated as its pages are submitted; the disk is not waited for). No other user of @n.
 */
static void true_up_final(struct simfs *fs, struct sinode *n)
{
	char proc[64];
	struct stat st;
	int fd = n->fd, own = -1;

	if (n->orphan || n == &fs->root)
		return;
	if (fd < 0 && n->handle)
		fd = own = open_by_handle_at(fs->mount_fd, n->handle, O_PATH | O_CLOEXEC);
	if (fd >= 0 && !fstat(fd, &st) && st.st_nlink > 0) {
		if (n->wrote_at && S_ISREG(st.st_mode)) {
			int rfd;

			proc_name(proc, sizeof(proc), fd);
			rfd = open(proc, O_RDONLY | O_CLOEXEC);
			if (rfd >= 0) {
				sync_file_range(rfd, 0, 0, SYNC_FILE_RANGE_WRITE);
				close(rfd);
				fstat(fd, &st);
			}
		}
		true_up(fs, n, &st);
		n->wrote_at = 0;
	}
	if (own >= 0)
		close(own);
}

/* What the quota holds for @n when we stop knowing it: its last measure, and an orphan's charge
 * given back (its blocks go with our descriptor). */
static void quota_forget(struct simfs *fs, struct sinode *n)
{
	if (!fs->quota)
		return;
	true_up_final(fs, n);
	orphan_free(fs, n);
}

/* What the host has not written back this long after the last write, it writes back at the stop. */
#define TRUE_UP_RECENT 300

void simfs_quota_true_up(void *ctx, bool all)
{
	struct simfs *fs = ctx;
	struct sinode **list = NULL, **bigger;
	size_t n = 0, cap = 0;
	time_t since = all ? 0 : time(NULL) - TRUE_UP_RECENT;

	pthread_mutex_lock(&fs->itable_lock);
	for (size_t i = 0; i < fs->itable_size; i++)
		for (struct sinode *x = fs->itable[i]; x; x = x->next) {
			time_t wrote_at = __atomic_load_n(&x->wrote_at, __ATOMIC_RELAXED);

			if (!wrote_at || wrote_at < since)
				continue;
			if (n == cap) {
				cap = cap ? cap * 2 : 64;
				bigger = realloc(list, cap * sizeof(*list));
				if (!bigger)
					goto listed;
				list = bigger;
			}
			x->users++;	/* pinned: not freed under us if the kernel forgets it */
			list[n++] = x;
		}
listed:
	pthread_mutex_unlock(&fs->itable_lock);
	for (size_t i = 0; i < n; i++) {
		struct sinode *x = list[i];
		struct stat st;
		int err;

		if (iget(fs, x, &err)) {
			pthread_mutex_lock(&x->qlock);
			if (!fstat(x->fd, &st) && S_ISREG(st.st_mode))
				true_up(fs, x, &st);
			pthread_mutex_unlock(&x->qlock);
			iput(fs, x);
		}
		iput(fs, x);
	}
	free(list);
}

void simfs_quota_stop(struct simfs *fs)
{
	if (!fs->quota)
		return;
	pthread_mutex_lock(&fs->itable_lock);
	for (size_t i = 0; i < fs->itable_size; i++)
		for (struct sinode *n = fs->itable[i]; n; n = n->next)
			quota_forget(fs, n);
	pthread_mutex_unlock(&fs->itable_lock);
}

static void inode_free(struct simfs *fs, struct sinode *n)
{
	quota_forget(fs, n);
	if (n->fd >= 0)
		close(n->fd);
	free(n->handle);
	pthread_mutex_destroy(&n->qlock);
	free(n);
}

/* Looks @name up in @parent: fills @e and counts a lookup. Returns 0 or an errno. */
static int do_lookup(struct simfs *fs, struct sinode *parent, const char *name, struct fuse_entry_param *e)
{
	struct sinode *n;
	int fd, err = 0;

	memset(e, 0, sizeof(*e));
	e->attr_timeout = fs->timeout;
	e->entry_timeout = fs->timeout;
	fd = openat(parent->fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return errno;
	if (stat_fd(fd, &e->attr)) {
		err = errno;
		close(fd);
		return err;
	}
	n = inode_get(fs, fd, &e->attr, &err);
	if (!n)
		return err;
	e->ino = n == &fs->root ? FUSE_ROOT_ID : (fuse_ino_t)(uintptr_t)n;
	return 0;
}

/* ---- quota helpers ---------------------------------------------------------------------------- */

static int64_t alloc_bytes(const struct stat *st)
{
	return (int64_t)st->st_blocks * 512;
}

static int64_t blocks_of(int fd)
{
	struct stat st;

	return stat_fd(fd, &st) ? 0 : alloc_bytes(&st);
}

/* Settles a directory's growth (or shrink) measured around an operation. */
static void charge_dir_delta(struct simfs *fs, struct sinode *dir, int64_t before)
{
	struct stat st;
	struct qcharge c;

	if (stat_fd(dir->fd, &st) || alloc_bytes(&st) == before)
		return;
	c = (struct qcharge){ alloc_bytes(&st) - before, 0, st.st_uid, st.st_gid };
	qlive_apply(fs->quota, &c);
}

/* An inode without a link that is not an orphan (@st: its measure under n->qlock) holds nothing
 * in the quota: its last name went while it was not open and free_entry() gave its charge back.
 * It may still be reached afterwards - a truncate, chown or xattr change of a name looked up just
 * before it went, an open that lost the race with the unlink - and what it frees or takes then
 * must not be counted again. */
static bool detached(const struct sinode *n, const struct stat *st)
{
	return st->st_nlink == 0 && !n->orphan;
}

/* Settles a measured change of @n's blocks (@delta) against what was reserved for it, under
 * n->qlock (@st: its measure, for the owner): the quota, and what an orphan gives back at its
 * last close. */
static void settle_blocks(struct simfs *fs, struct sinode *n, int64_t delta, int64_t reserved, const struct stat *st)
{
	struct qcharge c = { detached(n, st) ? -reserved : delta - reserved, 0, st->st_uid, st->st_gid };

	qlive_apply(fs->quota, &c);
	n->charged += delta;
	__atomic_store_n(&n->wrote_at, time(NULL), __ATOMIC_RELAXED);
	if (n->orphan)
		n->orphan_bytes += delta;
}

/* Under n->qlock, before an operation measures @n (@st, just taken): blocks its host filesystem
 * allocated since the last measure, by itself, are charged now - over the limits if need be, they
 * are allocated already. Measured from @st instead, they would be given back when the file goes
 * without ever having been charged, and the usage would sink below the truth file after file.
 * Directories are measured around each change of their own (charge_dir_delta). */
static void true_up(struct simfs *fs, struct sinode *n, const struct stat *st)
{
	int64_t grown;

	if (!n || S_ISDIR(st->st_mode) || (grown = alloc_bytes(st) - n->charged) == 0)
		return;
	settle_blocks(fs, n, grown, 0, st);
}

/* ---- operations ------------------------------------------------------------------------------- */

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	struct simfs *fs = userdata;

	conn->max_write = 1 << 20;
	conn->max_readahead = 1 << 20;
	conn->max_background = 64;
	conn->congestion_threshold = 48;
	if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
		conn->want |= FUSE_CAP_PARALLEL_DIROPS;
	if (fs->writeback && (conn->capable & FUSE_CAP_WRITEBACK_CACHE))
		conn->want |= FUSE_CAP_WRITEBACK_CACHE;
	else
		conn->want &= ~(unsigned)FUSE_CAP_WRITEBACK_CACHE;
	if (conn->capable & FUSE_CAP_SPLICE_WRITE)
		conn->want |= FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE;
	conn->want &= ~(unsigned)FUSE_CAP_SPLICE_READ;
	/* We write as root (CAP_FSETID): the kernel must clear suid/sgid itself on write and chown,
	 * and on open(O_TRUNC) too, which it does only when it truncates through setattr (an atomic
	 * O_TRUNC of our open would keep the bits of a file another uid empties). */
	conn->want &= ~(unsigned)(FUSE_CAP_HANDLE_KILLPRIV | FUSE_CAP_ATOMIC_O_TRUNC);
	/* POSIX ACLs kept by the host are checked by the kernel (default_permissions alone checks
	 * the mode bits only, so an ACL that denies would be passed over), and a directory's default
	 * ACL applies to what is created in it instead of the umask: so the umask comes to us and the
	 * host applies it as POSIX says (do_make). */
	if ((conn->capable & FUSE_CAP_POSIX_ACL) && (conn->capable & FUSE_CAP_DONT_MASK)) {
		conn->want |= FUSE_CAP_POSIX_ACL | FUSE_CAP_DONT_MASK;
		fs->caller_umask = true;
	}
	/* Data changed on the host shows through when its mtime/size do. */
	if (conn->capable & FUSE_CAP_AUTO_INVAL_DATA)
		conn->want |= FUSE_CAP_AUTO_INVAL_DATA;
	if (conn->capable & FUSE_CAP_READDIRPLUS)
		conn->want |= FUSE_CAP_READDIRPLUS;
	conn->want &= ~(unsigned)FUSE_CAP_READDIRPLUS_AUTO;
	conn->time_gran = 1;
	fuse_ring_init(conn);
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param e;
	int err;

	if (bad_name(name)) {
		fuse_reply_err(req, strcmp(name, ".") && strcmp(name, "..") ? EINVAL : EPERM);
		return;
	}
	err = do_lookup(fs_of(req), inode_of(req, parent), name, &e);
	if (err == ENOENT) {
		/* Negative entries live as long as positive ones: every create goes through us and
		 * drops them; a name created on the host directly shows after the timeout. */
		memset(&e, 0, sizeof(e));
		e.entry_timeout = fs_of(req)->timeout;
		fuse_reply_entry(req, &e);
	} else if (err) {
		fuse_reply_err(req, err);
	} else {
		fuse_reply_entry(req, &e);
	}
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	inode_forget(fs_of(req), inode_of(req, ino), nlookup);
	fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	for (size_t i = 0; i < count; i++)
		inode_forget(fs_of(req), inode_of(req, forgets[i].ino), forgets[i].nlookup);
	fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stat st;
	int r;

	r = fi ? (fstat(fh_fd(fi), &st) ? -errno : 0) : stat_fd(ifd(req, ino), &st);
	if (r)
		fuse_reply_err(req, -r);
	else
		fuse_reply_attr(req, &st, fs_of(req)->timeout);
}

/* chown/chgrp with usage moved between the uid/gid records. */
static int do_chown(struct simfs *fs, struct sinode *n, uid_t uid, gid_t gid)
{
	struct stat st;
	int r;

	if (!fs->quota)
		return fchownat(n->fd, "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) ? -errno : 0;
	pthread_mutex_lock(&n->qlock);
	r = stat_fd(n->fd, &st);
	if (!r) {
		true_up(fs, n, &st);
		uid_t nu = uid == (uid_t)-1 ? st.st_uid : uid;
		gid_t ng = gid == (gid_t)-1 ? st.st_gid : gid;
		/* Hard links: the inode counts once, whatever its link count. */
		int64_t bytes = alloc_bytes(&st);

		/* Its last name went: the owners hold nothing of it to move. */
		if (detached(n, &st)) {
			r = fchownat(n->fd, "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) ? -errno : 0;
			goto unlock;
		}
		r = qlive_move(fs->quota, bytes, 1, st.st_uid, st.st_gid, nu, ng);
		if (!r && fchownat(n->fd, "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW)) {
			r = -errno;
			qlive_move(fs->quota, bytes, 1, nu, ng, st.st_uid, st.st_gid);
		} else if (!r && n->orphan) {
			n->orphan_uid = nu;
			n->orphan_gid = ng;
		}
	}
unlock:
	pthread_mutex_unlock(&n->qlock);
	return r;
}

static int do_truncate(struct simfs *fs, struct sinode *n, struct fuse_file_info *fi, off_t size)
{
	char proc[64];
	int fd = -1, r = 0;
	struct stat before, after;

	if (fs->quota)
		pthread_mutex_lock(&n->qlock);
	if (fs->quota && stat_fd(n->fd, &before)) {
		r = -errno;
		goto out;
	}
	if (fs->quota)
		true_up(fs, n, &before);
	if (fi) {
		fd = fh_fd(fi);
	} else {
		proc_name(proc, sizeof(proc), n->fd);
		fd = open(proc, O_WRONLY | O_CLOEXEC);
		if (fd < 0) {
			r = -errno;
			goto out;
		}
	}
	if (ftruncate(fd, size))
		r = -errno;
	if (!fi)
		close(fd);
	if (fs->quota && !stat_fd(n->fd, &after))
		settle_blocks(fs, n, alloc_bytes(&after) - alloc_bytes(&before), 0, &after);
out:
	if (fs->quota)
		pthread_mutex_unlock(&n->qlock);
	return r;
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int valid, struct fuse_file_info *fi)
{
	struct simfs *fs = fs_of(req);
	struct sinode *n = inode_of(req, ino);
	char proc[64];
	int r = 0;

	if (valid & FUSE_SET_ATTR_MODE) {
		if (fi) {
			r = fchmod(fh_fd(fi), attr->st_mode) ? -errno : 0;
		} else {
			proc_name(proc, sizeof(proc), n->fd);
			r = chmod(proc, attr->st_mode) ? -errno : 0;
		}
		if (r)
			goto out;
	}
	if (valid & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
		r = do_chown(fs, n, (valid & FUSE_SET_ATTR_UID) ? attr->st_uid : (uid_t)-1,
			     (valid & FUSE_SET_ATTR_GID) ? attr->st_gid : (gid_t)-1);
		if (r)
			goto out;
	}
	if (valid & FUSE_SET_ATTR_SIZE) {
		r = do_truncate(fs, n, fi, attr->st_size);
		if (r)
			goto out;
	}
	if (valid & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME)) {
		struct timespec tv[2];

		tv[0].tv_sec = 0;
		tv[0].tv_nsec = UTIME_OMIT;
		tv[1] = tv[0];
		if (valid & FUSE_SET_ATTR_ATIME_NOW)
			tv[0].tv_nsec = UTIME_NOW;
		else if (valid & FUSE_SET_ATTR_ATIME)
			tv[0] = attr->st_atim;
		if (valid & FUSE_SET_ATTR_MTIME_NOW)
			tv[1].tv_nsec = UTIME_NOW;
		else if (valid & FUSE_SET_ATTR_MTIME)
			tv[1] = attr->st_mtim;
		if (fi)
			r = futimens(fh_fd(fi), tv) ? -errno : 0;
		else
			r = utimensat(n->fd, "", tv, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) ? -errno : 0;
		if (r)
			goto out;
	}
	/* A setattr that changes nothing (chown(f, -1, -1), or the kernel after it removed a file
	 * capability on a write) changes the ctime, which the kernel leaves to us. A chmod to the
	 * mode the file has does that and, by root, keeps suid and sgid; a chown(-1, -1) of the host
	 * file would clear them (a write by root keeps them on the host). Symlinks have no mode to
	 * set: for them, the chown. */
	if (!(valid & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID | FUSE_SET_ATTR_SIZE |
		       FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME))) {
		struct stat cur;

		r = stat_fd(n->fd, &cur);
		if (!r && !S_ISLNK(cur.st_mode)) {
			proc_name(proc, sizeof(proc), n->fd);
			r = chmod(proc, cur.st_mode & 07777) ? -errno : 0;
		} else if (!r) {
			r = fchownat(n->fd, "", (uid_t)-1, (gid_t)-1, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) ? -errno : 0;
		}
	}
out:
	if (r)
		fuse_reply_err(req, -r);
	else
		op_getattr(req, ino, fi);
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	char buf[PATH_MAX + 1];
	ssize_t len = readlinkat(ifd(req, ino), "", buf, sizeof(buf));

	if (len < 0)
		fuse_reply_err(req, errno);
	else if (len >= (ssize_t)sizeof(buf))
		fuse_reply_err(req, ENAMETOOLONG);
	else {
		buf[len] = 0;
		fuse_reply_readlink(req, buf);
	}
}

/* Open files per inode, for the orphan rule of free_entry(). */
static void file_opened(struct simfs *fs, struct sinode *n)
{
	if (!fs->quota || n == &fs->root)
		return;
	pthread_mutex_lock(&n->qlock);
	/* Opened after its last name went (the open, or the create, lost the race with the unlink):
	 * its charge was given back, yet its blocks stay until its last release, and it may be
	 * written. It is charged again, as an orphan, until then. */
	if (!n->opens++ && !n->orphan) {
		struct stat st;

		if (!stat_fd(n->fd, &st) && detached(n, &st)) {
			struct qcharge c = { alloc_bytes(&st), 1, st.st_uid, st.st_gid };

			qlive_apply(fs->quota, &c);
			n->charged = alloc_bytes(&st);
			n->orphan = true;
			n->orphan_bytes = alloc_bytes(&st);
			n->orphan_uid = st.st_uid;
			n->orphan_gid = st.st_gid;
		}
	}
	pthread_mutex_unlock(&n->qlock);
}

static void file_closed(struct simfs *fs, struct sinode *n)
{
	if (!fs->quota || n == &fs->root)
		return;
	pthread_mutex_lock(&n->qlock);
	if (n->opens && !--n->opens)
		orphan_free(fs, n);
	pthread_mutex_unlock(&n->qlock);
}

enum mk_kind { MK_NODE, MK_DIR, MK_SYMLINK, MK_FILE };

/* What a new object may take before it is measured: a directory has its first block, a symlink
 * too long for the inode (ext4 keeps up to 59 bytes there) a block of its own. */
static int64_t make_worst_case(enum mk_kind kind, const char *link)
{
	if (kind == MK_DIR)
		return BLOCK;
	if (kind == MK_SYMLINK && strlen(link) >= 60)
		return ((int64_t)strlen(link) + BLOCK) / BLOCK * BLOCK;
	return 0;
}

/* The umask of the calling thread, for the host's creations that follow (0: the daemon's own).
 * Each request thread gets a umask of its own the first time (unshare(CLONE_FS)); false if it
 * cannot, and then the caller applies the mask itself. */
static bool thread_umask(mode_t mask)
{
	static __thread int own;	/* 0 unknown, 1 own umask, -1 shared */

	if (!own)
		own = unshare(CLONE_FS) ? -1 : 1;
	if (own < 0)
		return false;
	umask(mask);
	return true;
}

/* Creates @name in @parent as the caller (owner fixed up after a root create), charging one
 * inode and the worst case of blocks before, the measured blocks after. For MK_FILE the file is
 * opened (fi->fh) and counted open. Replies to @req. */
/* Settles the reservation @res with what the operation turned out to cost (@c; NULL: nothing). For
 * the owner reserved for, one change: undoing the reservation first would drop a uid/gid record it
 * had just made, and at the ugid limit the second level has no room to make it again. */
static void settle(struct simfs *fs, const struct qcharge *res, const struct qcharge *c)
{
	struct qcharge undo = { -res->bytes, -res->inodes, res->uid, res->gid };

	if (c && c->uid == res->uid && c->gid == res->gid) {
		struct qcharge net = { c->bytes - res->bytes, c->inodes - res->inodes, c->uid, c->gid };

		qlive_apply(fs->quota, &net);
		return;
	}
	qlive_apply(fs->quota, &undo);
	if (c)
		qlive_apply(fs->quota, c);
}

static void do_make(fuse_req_t req, fuse_ino_t parent_ino, const char *name, enum mk_kind kind, mode_t mode,
		    dev_t rdev, const char *link, struct fuse_file_info *fi)
{
	struct simfs *fs = fs_of(req);
	struct sinode *parent = inode_of(req, parent_ino);
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct fuse_entry_param e;
	struct stat pst, st;
	struct qcharge res = { make_worst_case(kind, link), 1, ctx->uid, ctx->gid }, room;
	int r = 0, fd = -1, err;
	gid_t gid;

	if (bad_name(name)) {
		fuse_reply_err(req, EEXIST);
		return;
	}
	if (fs->ro) {
		fuse_reply_err(req, EROFS);
		return;
	}
	if (fs->quota)
		pthread_mutex_lock(&parent->qlock);
	if (stat_fd(parent->fd, &pst)) {
		r = -errno;
		goto out;
	}
	gid = (pst.st_mode & S_ISGID) ? pst.st_gid : ctx->gid;
	res.gid = gid;
	/* The directory may grow by a block for the new name: that must fit under the hard limits of
	 * the directory's owner, who is charged for it (charge_dir_delta), not of the caller. */
	room = (struct qcharge){ 0, 0, pst.st_uid, pst.st_gid };
	if (fs->quota) {
		r = qlive_reserve(fs->quota, &res, 0);
		if (!r && (r = qlive_reserve(fs->quota, &room, BLOCK))) {
			struct qcharge undo = { -res.bytes, -res.inodes, res.uid, res.gid };

			qlive_apply(fs->quota, &undo);
		}
		if (r)
			goto out;
	}
	/* The host applies the caller's umask unless the directory has a default ACL. */
	if (fs->caller_umask && !thread_umask(ctx->umask))
		mode &= ~ctx->umask;
	switch (kind) {
	case MK_DIR:
		r = mkdirat(parent->fd, name, mode) ? -errno : 0;
		break;
	case MK_NODE:
		r = mknodat(parent->fd, name, mode, rdev) ? -errno : 0;
		break;
	case MK_SYMLINK:
		r = symlinkat(link, parent->fd, name) ? -errno : 0;
		break;
	case MK_FILE: {
		int flags = (int)fi->flags | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;

		/* An O_CREAT without O_EXCL on an existing name: the kernel looked it up first, so
		 * EEXIST only races with the host. */
		if (fs->writeback && (flags & O_ACCMODE) == O_WRONLY)
			flags = (flags & ~O_ACCMODE) | O_RDWR;
		fd = openat(parent->fd, name, flags & ~O_APPEND, mode);
		r = fd < 0 ? -errno : 0;
		break;
	}
	}
	if (fs->caller_umask)
		thread_umask(0);
	if (r) {
		if (fs->quota) {
			struct qcharge undo = { -res.bytes, -res.inodes, res.uid, res.gid };
			struct qcharge unroom = { -BLOCK, 0, room.uid, room.gid };

			qlive_apply(fs->quota, &undo);
			qlive_apply(fs->quota, &unroom);
		}
		goto out;
	}
	err = do_lookup(fs, parent, name, &e);
	if (!err && (e.attr.st_uid != ctx->uid || e.attr.st_gid != gid)) {
		/* Created as root: the object goes to the caller, through its own descriptor. */
		struct sinode *n = e.ino == FUSE_ROOT_ID ? &fs->root : (struct sinode *)(uintptr_t)e.ino;
		char proc[64];

		if (!iget(fs, n, &err)) {
			inode_forget(fs, n, 1);
			goto made;
		}
		/* the mode as created (umask or default ACL applied): chown dropped its suid/sgid */
		if (fchownat(n->fd, "", ctx->uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) == 0 &&
		    kind != MK_SYMLINK && kind != MK_DIR && (e.attr.st_mode & (S_ISUID | S_ISGID))) {
			proc_name(proc, sizeof(proc), n->fd);
			chmod(proc, e.attr.st_mode & 07777);
		}
		stat_fd(n->fd, &e.attr);
		iput(fs, n);
	}
made:
	if (fs->quota) {
		struct qcharge unroom = { -BLOCK, 0, room.uid, room.gid }, c;

		if (!err) {
			st = e.attr;
			c = (struct qcharge){ alloc_bytes(&st), 1, st.st_uid, st.st_gid };
		}
		settle(fs, &res, err ? NULL : &c);
		qlive_apply(fs->quota, &unroom);
		charge_dir_delta(fs, parent, alloc_bytes(&pst));
	}
	if (err) {
		r = -err;
		if (fd >= 0)
			close(fd);
		goto out;
	}
	if (fs->quota)
		pthread_mutex_unlock(&parent->qlock);
	if (kind == MK_FILE) {
		struct sinode *n = (struct sinode *)(uintptr_t)e.ino;

		fi->fh = fh_make(fd, (int)fi->flags);
		fi->keep_cache = 0;
		fi->noflush = 1;
		if (n != &fs->root) {
			n->open_seen = true;
			n->open_size = e.attr.st_size;
			n->open_mtime = e.attr.st_mtim;
		}
		file_opened(fs, n);
		if (fuse_reply_create(req, &e, fi) == -ENOENT) {
			close(fd);
			file_closed(fs, n);
		}
	} else {
		fuse_reply_entry(req, &e);
	}
	return;
out:
	if (fs->quota)
		pthread_mutex_unlock(&parent->qlock);
	fuse_reply_err(req, -r);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	do_make(req, parent, name, MK_NODE, mode, rdev, NULL, NULL);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	do_make(req, parent, name, MK_DIR, mode, 0, NULL, NULL);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	do_make(req, parent, name, MK_SYMLINK, 0777, 0, link, NULL);
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, struct fuse_file_info *fi)
{
	do_make(req, parent, name, MK_FILE, mode, 0, NULL, fi);
}

/* The inode of @name in @dir (whose stat is @st), pinned and with its quota lock held, when @name
 * is the last link of a non-directory the kernel knows, which may be open; @st is read again
 * under the lock. NULL otherwise. */
static struct sinode *lock_last_link(struct simfs *fs, int dir, const char *name, struct stat *st)
{
	struct sinode *n;
	struct stat now;

	if (S_ISDIR(st->st_mode) || st->st_nlink != 1 || !(n = itable_find(fs, st->st_dev, st->st_ino)))
		return NULL;
	pthread_mutex_lock(&n->qlock);
	if (!fstatat(dir, name, &now, AT_SYMLINK_NOFOLLOW)) {
		*st = now;
		if (now.st_ino == n->ino && now.st_dev == n->dev)
			return n;
	}
	pthread_mutex_unlock(&n->qlock);
	iput(fs, n);
	return NULL;
}

static void unlock_inode(struct simfs *fs, struct sinode *n)
{
	if (!n)
		return;
	pthread_mutex_unlock(&n->qlock);
	iput(fs, n);
}

/* The usage an entry (@st) gives back when it goes: a directory, or the last link of anything
 * else - unless that is open (@n from lock_last_link()): the orphan stays charged until its
 * last release, as its blocks stay allocated until then. */
static void free_entry(struct simfs *fs, const struct stat *st, struct sinode *n)
{
	struct qcharge c;

	if (!S_ISDIR(st->st_mode) && st->st_nlink > 1)
		return;
	if (n && n->opens) {
		n->orphan = true;
		n->orphan_bytes = alloc_bytes(st);
		n->orphan_uid = st->st_uid;
		n->orphan_gid = st->st_gid;
		return;
	}
	c = (struct qcharge){ -alloc_bytes(st), -1, st->st_uid, st->st_gid };
	qlive_apply(fs->quota, &c);
}

static void do_remove(fuse_req_t req, fuse_ino_t parent_ino, const char *name, int flags)
{
	struct simfs *fs = fs_of(req);
	struct sinode *parent = inode_of(req, parent_ino);
	struct stat st;
	int64_t pbytes = 0;
	int r;

	if (bad_name(name)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (fs->ro) {
		fuse_reply_err(req, EROFS);
		return;
	}
	if (!fs->quota) {
		r = unlinkat(parent->fd, name, flags) ? errno : 0;
		fuse_reply_err(req, r);
		return;
	}
	pthread_mutex_lock(&parent->qlock);
	pbytes = blocks_of(parent->fd);
	if (fstatat(parent->fd, name, &st, AT_SYMLINK_NOFOLLOW)) {
		r = errno;
	} else {
		struct sinode *n = lock_last_link(fs, parent->fd, name, &st);

		true_up(fs, n, &st);
		r = unlinkat(parent->fd, name, flags) ? errno : 0;
		if (!r)
			free_entry(fs, &st, n);
		unlock_inode(fs, n);
		charge_dir_delta(fs, parent, pbytes);
	}
	pthread_mutex_unlock(&parent->qlock);
	fuse_reply_err(req, r);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	do_remove(req, parent, name, 0);
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	do_remove(req, parent, name, AT_REMOVEDIR);
}

/* Two parent locks in a stable order (by address), one when they are the same. */
static void lock_two(struct sinode *a, struct sinode *b)
{
	if (a == b) {
		pthread_mutex_lock(&a->qlock);
	} else if (a < b) {
		pthread_mutex_lock(&a->qlock);
		pthread_mutex_lock(&b->qlock);
	} else {
		pthread_mutex_lock(&b->qlock);
		pthread_mutex_lock(&a->qlock);
	}
}

static void unlock_two(struct sinode *a, struct sinode *b)
{
	pthread_mutex_unlock(&a->qlock);
	if (a != b)
		pthread_mutex_unlock(&b->qlock);
}

static void op_rename(fuse_req_t req, fuse_ino_t parent_ino, const char *name, fuse_ino_t newparent_ino,
		      const char *newname, unsigned int flags)
{
	struct simfs *fs = fs_of(req);
	struct sinode *p = inode_of(req, parent_ino), *np = inode_of(req, newparent_ino), *tn = NULL;
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	/* RENAME_WHITEOUT leaves a new inode (a 0/0 character device) at the old name. */
	struct qcharge wh = { 0, (flags & RENAME_WHITEOUT) ? 1 : 0, ctx->uid, ctx->gid };
	/* A name new to the target directory may grow it by a block, charged to its owner. */
	struct qcharge room = { 0 };
	struct stat target, npst;
	bool had_target, roomed = false;
	int64_t pb, npb;
	int r;

	if (bad_name(name) || bad_name(newname)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (fs->ro) {
		fuse_reply_err(req, EROFS);
		return;
	}
	if (!fs->quota) {
		r = renameat2(p->fd, name, np->fd, newname, flags) ? errno : 0;
		fuse_reply_err(req, r);
		return;
	}
	lock_two(p, np);
	had_target = !(flags & RENAME_EXCHANGE) && !fstatat(np->fd, newname, &target, AT_SYMLINK_NOFOLLOW);
	r = -qlive_reserve(fs->quota, &wh, 0);
	if (!r && !had_target && !(flags & RENAME_EXCHANGE)) {
		r = -stat_fd(np->fd, &npst);
		if (!r) {
			room = (struct qcharge){ 0, 0, npst.st_uid, npst.st_gid };
			r = -qlive_reserve(fs->quota, &room, BLOCK);
			roomed = !r;
		}
		if (r) {
			struct qcharge undo = { 0, -wh.inodes, wh.uid, wh.gid };

			qlive_apply(fs->quota, &undo);
		}
	}
	if (r) {
		unlock_two(p, np);
		fuse_reply_err(req, r);
		return;
	}
	pb = blocks_of(p->fd);
	npb = blocks_of(np->fd);
	if (had_target) {
		tn = lock_last_link(fs, np->fd, newname, &target);
		true_up(fs, tn, &target);
	}
	r = renameat2(p->fd, name, np->fd, newname, flags) ? errno : 0;
	if (!r && had_target) {
		struct stat src;

		/* Renaming a name onto another link of the same inode removes nothing. */
		if (fstatat(np->fd, newname, &src, AT_SYMLINK_NOFOLLOW) ||
		    src.st_ino != target.st_ino || src.st_dev != target.st_dev)
			free_entry(fs, &target, tn);
	}
	unlock_inode(fs, tn);
	if (roomed) {
		struct qcharge undo = { -BLOCK, 0, room.uid, room.gid };

		qlive_apply(fs->quota, &undo);
	}
	if (wh.inodes) {
		struct qcharge c;
		struct stat w;
		bool made = !r && !fstatat(p->fd, name, &w, AT_SYMLINK_NOFOLLOW);

		if (made)
			c = (struct qcharge){ alloc_bytes(&w), 1, w.st_uid, w.st_gid };
		settle(fs, &wh, made ? &c : NULL);
	}
	charge_dir_delta(fs, p, pb);
	if (np != p)
		charge_dir_delta(fs, np, npb);
	unlock_two(p, np);
	fuse_reply_err(req, r);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent_ino, const char *newname)
{
	struct simfs *fs = fs_of(req);
	struct sinode *n = inode_of(req, ino), *np = inode_of(req, newparent_ino);
	/* The directory may grow by a block for the new name, charged to its owner. */
	struct qcharge room = { 0 };
	struct stat npst;
	struct fuse_entry_param e;
	char proc[64];
	int64_t npb = 0;
	int r;

	if (bad_name(newname)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (fs->ro) {
		fuse_reply_err(req, EROFS);
		return;
	}
	if (fs->quota) {
		pthread_mutex_lock(&np->qlock);
		r = stat_fd(np->fd, &npst);
		if (!r) {
			npb = alloc_bytes(&npst);
			room = (struct qcharge){ 0, 0, npst.st_uid, npst.st_gid };
			r = qlive_reserve(fs->quota, &room, BLOCK);
		}
		if (r) {
			pthread_mutex_unlock(&np->qlock);
			fuse_reply_err(req, -r);
			return;
		}
	}
	/* linkat(AT_EMPTY_PATH) needs CAP_DAC_READ_SEARCH, which we have as root; the magic link
	 * is the fallback. */
	r = linkat(n->fd, "", np->fd, newname, AT_EMPTY_PATH) ? -errno : 0;
	if (r == -ENOENT || r == -EPERM) {
		proc_name(proc, sizeof(proc), n->fd);
		r = linkat(AT_FDCWD, proc, np->fd, newname, AT_SYMLINK_FOLLOW) ? -errno : 0;
	}
	if (!r)
		r = -do_lookup(fs, np, newname, &e);
	if (fs->quota) {
		struct qcharge undo = { -BLOCK, 0, room.uid, room.gid };

		qlive_apply(fs->quota, &undo);
		charge_dir_delta(fs, np, npb);
		pthread_mutex_unlock(&np->qlock);
	}
	if (r)
		fuse_reply_err(req, -r);
	else
		fuse_reply_entry(req, &e);
}

/* ---- files ------------------------------------------------------------------------------------ */

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct simfs *fs = fs_of(req);
	struct sinode *n = inode_of(req, ino);
	int flags = (int)fi->flags & ~O_NOFOLLOW, fd;
	char proc[64];
	struct stat st;

	if (fs->ro && (flags & O_ACCMODE) != O_RDONLY) {
		fuse_reply_err(req, EROFS);
		return;
	}
	/* The kernel reads pages of write-only files in writeback mode. O_APPEND stays off the host
	 * descriptor: pages written back from a shared mapping may come through it, and they go
	 * where they belong (op_write_buf appends the writes of write()). */
	if (fs->writeback && (flags & O_ACCMODE) == O_WRONLY)
		flags = (flags & ~O_ACCMODE) | O_RDWR;
	/* The kernel truncates through setattr (no atomic O_TRUNC, op_init): with its accounting, and
	 * the suid/sgid bits cleared as they must be. */
	flags &= ~(O_APPEND | O_TRUNC);
	proc_name(proc, sizeof(proc), n->fd);
	fd = open(proc, (flags & ~O_CREAT) | O_CLOEXEC);
	if (fd < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	fi->fh = fh_make(fd, flags);
	/* The page cache stays while the file is unchanged since its last open. */
	if (fs->timeout > 0 && !fstat(fd, &st) && n != &fs->root) {
		fi->keep_cache = n->open_seen && n->open_size == st.st_size &&
				 n->open_mtime.tv_sec == st.st_mtim.tv_sec && n->open_mtime.tv_nsec == st.st_mtim.tv_nsec;
		n->open_seen = true;
		n->open_size = st.st_size;
		n->open_mtime = st.st_mtim;
	}
	fi->noflush = 1;
	file_opened(fs, n);
	if (fuse_reply_open(req, fi) == -ENOENT) {
		close(fd);
		file_closed(fs, n);
	}
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stat st;
	struct sinode *n = inode_of(req, ino);

	/* Written through this descriptor: what is in the page cache is what we wrote. */
	if ((fi->flags & O_ACCMODE) != O_RDONLY && n != &fs_of(req)->root && !fstat(fh_fd(fi), &st)) {
		n->open_size = st.st_size;
		n->open_mtime = st.st_mtim;
	}
	close(fh_fd(fi));
	file_closed(fs_of(req), n);
	fuse_reply_err(req, 0);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	struct fuse_bufvec buf = FUSE_BUFVEC_INIT(size);
	uint8_t *ring = fuse_ring_reply_buffer(size);

	(void)ino;
	if (ring) {
		/* On the ring the data is read straight into the reply: one copy, as with splice. */
		size_t got = 0;

		while (got < size) {
			ssize_t n = pread(fh_fd(fi), ring + got, size - got, off + (off_t)got);

			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && !got) {
				fuse_reply_err(req, errno);
				return;
			}
			if (n <= 0)
				break;
			got += (size_t)n;
		}
		fuse_reply_buf(req, (const char *)ring, got);
		return;
	}
	buf.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	buf.buf[0].fd = fh_fd(fi);
	buf.buf[0].pos = off;
	fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
}

/* Bytes of [start, end) that @fd has as data, by SEEK_DATA/SEEK_HOLE (for filesystems without
 * an extent map; these may report preallocated space as holes, which only overestimates). */
static int64_t data_by_seek(int fd, int64_t start, int64_t end)
{
	int64_t got = 0;

	for (int64_t pos = start; pos < end;) {
		off_t d = lseek(fd, pos, SEEK_DATA), h;

		if (d < 0)
			return errno == ENXIO ? got : 0;
		if (d >= end)
			break;
		h = lseek(fd, d, SEEK_HOLE);
		if (h < 0)
			return 0;
		got += (h < end ? h : end) - d;
		pos = h;
	}
	return got;
}

/* Bytes of [start, end) that @fd has allocated (written, preallocated or waiting for delayed
 * allocation), from its extent map; 0 when that cannot be told. */
static int64_t allocated_in(int fd, int64_t start, int64_t end)
{
	enum { N = 32 };
	union {
		struct fiemap fm;
		char bytes[sizeof(struct fiemap) + N * sizeof(struct fiemap_extent)];
	} u;
	int64_t got = 0;

	for (int64_t pos = start; pos < end;) {
		uint32_t i;

		memset(&u.fm, 0, sizeof(u.fm));
		u.fm.fm_start = (uint64_t)pos;
		u.fm.fm_length = (uint64_t)(end - pos);
		u.fm.fm_extent_count = N;
		if (ioctl(fd, FS_IOC_FIEMAP, &u.fm))
			return data_by_seek(fd, start, end);
		for (i = 0; i < u.fm.fm_mapped_extents; i++) {
			const struct fiemap_extent *x = &u.fm.fm_extents[i];
			int64_t a = (int64_t)x->fe_logical, b = a + (int64_t)x->fe_length;

			if (a < pos)
				a = pos;
			if (b > end)
				b = end;
			/* Data kept inside the inode takes a block once it grows. */
			if (b > a && !(x->fe_flags & FIEMAP_EXTENT_DATA_INLINE))
				got += b - a;
			pos = b > pos ? b : pos;
			if (x->fe_flags & FIEMAP_EXTENT_LAST)
				return got;
		}
		if (u.fm.fm_mapped_extents < N)
			break;
	}
	return got;
}

/* Worst-case new allocation of writing [off, off+len) to @fd: the range in whole blocks, less
 * what of it is allocated already (from the extent map). Past the end of the file (appends, the
 * common case) the whole range counts without asking, unless the file holds more blocks than its
 * size covers: then space may be preallocated there (fallocate -n), and writing into it is free. */
static int64_t write_worst_case(int fd, const struct stat *st, off_t off, size_t len)
{
	int64_t start = off / BLOCK * BLOCK, end = ((int64_t)off + (int64_t)len + BLOCK - 1) / BLOCK * BLOCK;
	int64_t alloc_end = (st->st_size + BLOCK - 1) / BLOCK * BLOCK;

	if (end <= start)
		return 0;
	if (!alloc_bytes(st) || (start >= alloc_end && alloc_bytes(st) <= alloc_end))
		return end - start;
	return end - start - allocated_in(fd, start, end);
}

/* Writes @in to the host file. The request's data sits unaligned in our buffer: for a file opened
 * with O_DIRECT it goes through an aligned copy - unless it is a page the kernel writes back from its
 * cache through that handle (any length): then through a descriptor of its own without O_DIRECT. */
static ssize_t write_data(struct fuse_bufvec *out, struct fuse_bufvec *in, struct fuse_file_info *fi)
{
	size_t size = fuse_buf_size(in);
	struct fuse_bufvec mem = FUSE_BUFVEC_INIT(size);
	ssize_t r;
	void *buf;

	if (!(fi->fh & FH_DIRECT))
		return fuse_buf_copy(out, in, 0);
	if (fi->writepage) {
		char proc[64];
		int fd, direct = out->buf[0].fd;

		proc_name(proc, sizeof(proc), direct);
		fd = open(proc, O_WRONLY | O_CLOEXEC);
		if (fd < 0)
			return -errno;
		out->buf[0].fd = fd;
		r = fuse_buf_copy(out, in, 0);
		out->buf[0].fd = direct;
		close(fd);
		return r;
	}
	if (posix_memalign(&buf, 4096, size ? size : 1))
		return -ENOMEM;
	mem.buf[0].mem = buf;
	r = fuse_buf_copy(&mem, in, 0);
	if (r >= 0) {
		r = pwrite(out->buf[0].fd, buf, (size_t)r, out->buf[0].pos);
		if (r < 0)
			r = -errno;
	}
	free(buf);
	return r;
}

static void op_write_buf(fuse_req_t req, fuse_ino_t ino, struct fuse_bufvec *in, off_t off,
			 struct fuse_file_info *fi)
{
	struct simfs *fs = fs_of(req);
	struct sinode *n = inode_of(req, ino);
	size_t size = fuse_buf_size(in);
	struct fuse_bufvec out = FUSE_BUFVEC_INIT(size);
	struct stat before, after;
	struct qcharge res = { 0 };
	ssize_t r;

	/* write() on an O_APPEND file appends to what the host file has; pages written back (from
	 * a shared mapping) go to their offset. With the writeback cache the kernel appends itself
	 * (the file's end may still be in its cache): its offset stands. So it does for O_DIRECT: the
	 * kernel sends the parts of a large write at once, each at the offset it gave it from the
	 * size it knows (appended one after the other, the parts would overwrite or swap places). */
	bool append = !fs->writeback && (fi->flags & O_APPEND) && !(fi->flags & O_DIRECT) && !fi->writepage;

	out.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	out.buf[0].fd = fh_fd(fi);
	out.buf[0].pos = off;
	if (!fs->quota) {
		if (append) {
			if (fstat(fh_fd(fi), &before)) {
				fuse_reply_err(req, errno);
				return;
			}
			out.buf[0].pos = before.st_size;
		}
		r = write_data(&out, in, fi);
		if (r < 0)
			fuse_reply_err(req, (int)-r);
		else
			fuse_reply_write(req, (size_t)r);
		return;
	}
	pthread_mutex_lock(&n->qlock);
	if (fstat(fh_fd(fi), &before)) {
		r = -errno;
		goto out;
	}
	true_up(fs, n, &before);
	if (append)
		out.buf[0].pos = off = before.st_size;
	res = (struct qcharge){ write_worst_case(fh_fd(fi), &before, off, size), 0, before.st_uid, before.st_gid };
	r = qlive_reserve(fs->quota, &res, 0);
	if (r)
		goto out;
	r = write_data(&out, in, fi);
	if (fstat(fh_fd(fi), &after))
		after = before;
	settle_blocks(fs, n, alloc_bytes(&after) - alloc_bytes(&before), res.bytes, &before);
out:
	pthread_mutex_unlock(&n->qlock);
	if (r < 0)
		fuse_reply_err(req, (int)-r);
	else
		fuse_reply_write(req, (size_t)r);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	int r = datasync ? fdatasync(fh_fd(fi)) : fsync(fh_fd(fi));

	fuse_reply_err(req, r ? errno : 0);
}

static void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len, struct fuse_file_info *fi)
{
	struct simfs *fs = fs_of(req);
	struct sinode *n = inode_of(req, ino);
	struct stat before, after;
	struct qcharge res = { 0 };
	int r = 0;

	if (fs->quota) {
		pthread_mutex_lock(&n->qlock);
		if (fstat(fh_fd(fi), &before)) {
			r = -errno;
			goto out;
		}
		true_up(fs, n, &before);
		if (!(mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_COLLAPSE_RANGE)))
			res = (struct qcharge){ write_worst_case(fh_fd(fi), &before, off, (size_t)len), 0,
						before.st_uid, before.st_gid };
		if (mode & FALLOC_FL_INSERT_RANGE)
			res.bytes = (len + BLOCK - 1) / BLOCK * BLOCK;
		r = qlive_reserve(fs->quota, &res, 0);
		if (r)
			goto out;
	}
	r = fallocate(fh_fd(fi), mode, off, len) ? -errno : 0;
	if (fs->quota) {
		if (fstat(fh_fd(fi), &after))
			after = before;
		settle_blocks(fs, n, alloc_bytes(&after) - alloc_bytes(&before), res.bytes, &before);
	}
out:
	if (fs->quota)
		pthread_mutex_unlock(&n->qlock);
	fuse_reply_err(req, -r);
}

static void op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, struct fuse_file_info *fi)
{
	off_t r = lseek(fh_fd(fi), off, whence);

	if (r < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_lseek(req, r);
}

/* ---- directories ------------------------------------------------------------------------------ */

struct sdir {
	DIR *dp;
	off_t offset;
	struct dirent *entry;
};

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct simfs *fs = fs_of(req);
	struct sdir *d = calloc(1, sizeof(*d));
	int fd;

	if (!d) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	fd = openat(ifd(req, ino), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || !(d->dp = fdopendir(fd))) {
		int err = errno;

		if (fd >= 0)
			close(fd);
		free(d);
		fuse_reply_err(req, err);
		return;
	}
	fi->fh = (uint64_t)(uintptr_t)d;
	if (fs->timeout > 0) {
		fi->cache_readdir = 1;
		fi->keep_cache = 1;
	}
	if (fuse_reply_open(req, fi) == -ENOENT) {
		closedir(d->dp);
		free(d);
	}
}

static void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset, struct fuse_file_info *fi,
		       bool plus)
{
	struct simfs *fs = fs_of(req);
	struct sdir *d = (struct sdir *)(uintptr_t)fi->fh;
	char *buf = malloc(size), *p = buf;
	size_t rem = size;
	int err = 0;

	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	if (offset != d->offset) {
		seekdir(d->dp, offset);
		d->entry = NULL;
		d->offset = offset;
	}
	for (;;) {
		struct fuse_entry_param e;
		size_t len;
		off_t next;

		if (!d->entry) {
			errno = 0;
			d->entry = readdir(d->dp);
			if (!d->entry) {
				err = errno;
				break;
			}
		}
		next = d->entry->d_off;
		if (plus) {
			const char *name = d->entry->d_name;

			if (!strcmp(name, ".") || !strcmp(name, "..")) {
				memset(&e, 0, sizeof(e));
				e.attr.st_ino = d->entry->d_ino;
				e.attr.st_mode = (mode_t)d->entry->d_type << 12;
			} else {
				err = do_lookup(fs, inode_of(req, ino), name, &e);
				if (err == ENOENT) {	/* gone on the host meanwhile */
					err = 0;
					d->entry = NULL;
					d->offset = next;
					continue;
				}
				if (err)
					break;
			}
			len = fuse_add_direntry_plus(req, p, rem, name, &e, next);
			if (len > rem) {
				if (e.ino)
					inode_forget(fs, inode_of(req, e.ino), 1);
				break;
			}
		} else {
			struct stat st = { .st_ino = d->entry->d_ino, .st_mode = (mode_t)d->entry->d_type << 12 };

			len = fuse_add_direntry(req, p, rem, d->entry->d_name, &st, next);
			if (len > rem)
				break;
		}
		p += len;
		rem -= len;
		d->entry = NULL;
		d->offset = next;
	}
	if (err && rem == size)
		fuse_reply_err(req, err);
	else
		fuse_reply_buf(req, buf, size - rem);
	free(buf);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset, struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, offset, fi, false);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset, struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, offset, fi, true);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct sdir *d = (struct sdir *)(uintptr_t)fi->fh;

	closedir(d->dp);
	free(d);
	fuse_reply_err(req, 0);
}

static void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	int fd = dirfd(((struct sdir *)(uintptr_t)fi->fh)->dp);
	int r = datasync ? fdatasync(fd) : fsync(fd);

	fuse_reply_err(req, r ? errno : 0);
}

/* ---- statfs (section 1.10: the soft limits, shrunk to what the host really has) ---------------- */

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct simfs *fs = fs_of(req);
	struct statvfs sv;
	struct vzq_stat q;

	if (fstatvfs(fs->root.fd, &sv)) {
		fuse_reply_err(req, errno);
		return;
	}
	if (fs->quota) {
		uint64_t bs = sv.f_frsize ? sv.f_frsize : sv.f_bsize;
		uint64_t bfree, adj, ifree, iadj;

		qlive_usage(fs->quota, &q);
		bfree = q.bsoft > q.bcurrent ? (q.bsoft - q.bcurrent) / bs : 0;
		adj = bfree > sv.f_bfree ? bfree - sv.f_bfree : 0;
		sv.f_blocks = q.bsoft / bs - adj;
		sv.f_bavail = sv.f_bavail < bfree ? sv.f_bavail : bfree;
		sv.f_bfree = bfree - adj;
		sv.f_frsize = bs;
		ifree = q.isoft > q.icurrent ? q.isoft - q.icurrent : 0;
		iadj = ifree > sv.f_ffree ? ifree - sv.f_ffree : 0;
		sv.f_files = q.isoft - iadj;
		sv.f_ffree = ifree - iadj;
		sv.f_favail = sv.f_ffree;
	}
	fuse_reply_statfs(req, &sv);
}

/* ---- extended attributes (through the magic link: O_PATH descriptors have none) --------------- */

/* Whether the caller of @req is in group @gid (its own or a supplementary one). */
static bool caller_in_group(fuse_req_t req, gid_t gid)
{
	gid_t groups[256];
	int n;

	if (fuse_req_ctx(req)->gid == gid)
		return true;
	n = fuse_req_getgroups(req, 256, groups);
	for (int i = 0; i < n && i < 256; i++)
		if (groups[i] == gid)
			return true;
	return false;
}

/* An access ACL set by a caller outside the file's group clears its setgid bit, as the kernel's
 * posix_acl_update_mode does; the host, where we set it as root, keeps it (and the kernel's request
 * to clear it, FUSE_SETXATTR_ACL_KILL_SGID, does not reach us through libfuse 3.14). */
static void acl_kill_sgid(fuse_req_t req, int fd, const char *name)
{
	char proc[64];
	struct stat st;

	if (strcmp(name, "system.posix_acl_access") || fuse_req_ctx(req)->uid == 0 || stat_fd(fd, &st) ||
	    !(st.st_mode & S_ISGID) || caller_in_group(req, st.st_gid))
		return;
	proc_name(proc, sizeof(proc), fd);
	chmod(proc, st.st_mode & 07777 & ~S_ISGID);
}

static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value, size_t size, int flags)
{
	struct simfs *fs = fs_of(req);
	struct sinode *n = inode_of(req, ino);
	char proc[64];
	struct stat before;
	int r;

	if (fs->ro) {
		fuse_reply_err(req, EROFS);
		return;
	}
	proc_name(proc, sizeof(proc), n->fd);
	if (fs->quota) {
		pthread_mutex_lock(&n->qlock);
		if (stat_fd(n->fd, &before)) {
			r = errno;
			pthread_mutex_unlock(&n->qlock);
			fuse_reply_err(req, r);
			return;
		}
		true_up(fs, n, &before);
		/* An xattr may need a block of its own: that must fit under the hard limit, as a new
		 * name's directory block does. Most need none (they fit in the inode, or replace a
		 * value): over the soft limit, or past grace, they pass; what is allocated is charged. */
		struct qcharge res = { 0, 0, before.st_uid, before.st_gid };

		r = -qlive_reserve(fs->quota, &res, BLOCK);
		if (!r) {
			r = setxattr(proc, name, value, size, flags) ? errno : 0;
			settle_blocks(fs, n, blocks_of(n->fd) - alloc_bytes(&before), BLOCK, &before);
		}
		pthread_mutex_unlock(&n->qlock);
	} else {
		r = setxattr(proc, name, value, size, flags) ? errno : 0;
	}
	if (!r)
		acl_kill_sgid(req, n->fd, name);
	fuse_reply_err(req, r);
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	char proc[64];
	char *buf = NULL;
	ssize_t r;

	proc_name(proc, sizeof(proc), ifd(req, ino));
	if (size) {
		buf = malloc(size);
		if (!buf) {
			fuse_reply_err(req, ENOMEM);
			return;
		}
		r = getxattr(proc, name, buf, size);
		if (r < 0)
			fuse_reply_err(req, errno);
		else
			fuse_reply_buf(req, buf, (size_t)r);
		free(buf);
	} else {
		r = getxattr(proc, name, NULL, 0);
		if (r < 0)
			fuse_reply_err(req, errno);
		else
			fuse_reply_xattr(req, (size_t)r);
	}
}

/* The names of a file's xattrs as the caller may see them: the host lists trusted.* to us (root),
 * the kernel would list them only to a caller with CAP_SYS_ADMIN - here, to uid 0. */
static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	bool privileged = fuse_req_ctx(req)->uid == 0;
	char proc[64], *buf = NULL;
	ssize_t r, kept = 0;

	proc_name(proc, sizeof(proc), ifd(req, ino));
	for (;;) {	/* the list may grow between the two calls */
		r = listxattr(proc, NULL, 0);
		if (r <= 0)
			break;
		free(buf);
		buf = malloc((size_t)r);
		if (!buf) {
			fuse_reply_err(req, ENOMEM);
			return;
		}
		r = listxattr(proc, buf, (size_t)r);
		if (r >= 0 || errno != ERANGE)
			break;
	}
	if (r < 0) {
		fuse_reply_err(req, errno);
		free(buf);
		return;
	}
	for (ssize_t i = 0, n; i < r; i += n) {
		n = (ssize_t)strnlen(buf + i, (size_t)(r - i - 1)) + 1;	/* each name ends with a NUL */
		if (privileged || strncmp(buf + i, "trusted.", 8)) {
			memmove(buf + kept, buf + i, (size_t)n);
			kept += n;
		}
	}
	if (!size)
		fuse_reply_xattr(req, (size_t)kept);
	else if ((size_t)kept > size)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, buf, (size_t)kept);
	free(buf);
}

static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	struct simfs *fs = fs_of(req);
	struct sinode *n = inode_of(req, ino);
	char proc[64];
	int64_t before = 0;
	int r;

	if (fs->ro) {
		fuse_reply_err(req, EROFS);
		return;
	}
	proc_name(proc, sizeof(proc), n->fd);
	if (fs->quota) {
		struct stat st;

		pthread_mutex_lock(&n->qlock);
		if (!stat_fd(n->fd, &st)) {
			true_up(fs, n, &st);
			before = alloc_bytes(&st);
		}
	}
	r = removexattr(proc, name) ? errno : 0;
	if (fs->quota) {
		struct stat st;

		if (!stat_fd(n->fd, &st))
			settle_blocks(fs, n, alloc_bytes(&st) - before, 0, &st);
		pthread_mutex_unlock(&n->qlock);
	}
	fuse_reply_err(req, r);
}

/* ---- descriptor pinning around the operations that use an inode's descriptor ------------------ */

#define PIN1(req, ino, n)                                        \
	struct simfs *pfs_ = fs_of(req);                         \
	int perr_ = 0;                                           \
	struct sinode *n = iget(pfs_, inode_of(req, ino), &perr_); \
	if (!n) {                                                \
		fuse_reply_err(req, perr_);                      \
		return;                                          \
	}

static void p_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	PIN1(req, parent, n);
	op_lookup(req, parent, name);
	iput(pfs_, n);
}

static void p_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	PIN1(req, ino, n);
	op_getattr(req, ino, fi);
	iput(pfs_, n);
}

static void p_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int valid, struct fuse_file_info *fi)
{
	PIN1(req, ino, n);
	op_setattr(req, ino, attr, valid, fi);
	iput(pfs_, n);
}

static void p_readlink(fuse_req_t req, fuse_ino_t ino)
{
	PIN1(req, ino, n);
	op_readlink(req, ino);
	iput(pfs_, n);
}

static void p_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	PIN1(req, parent, n);
	op_mknod(req, parent, name, mode, rdev);
	iput(pfs_, n);
}

static void p_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	PIN1(req, parent, n);
	op_mkdir(req, parent, name, mode);
	iput(pfs_, n);
}

static void p_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	PIN1(req, parent, n);
	op_symlink(req, link, parent, name);
	iput(pfs_, n);
}

static void p_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, struct fuse_file_info *fi)
{
	PIN1(req, parent, n);
	op_create(req, parent, name, mode, fi);
	iput(pfs_, n);
}

static void p_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	PIN1(req, parent, n);
	op_unlink(req, parent, name);
	iput(pfs_, n);
}

static void p_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	PIN1(req, parent, n);
	op_rmdir(req, parent, name);
	iput(pfs_, n);
}

static void p_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent, const char *newname,
		     unsigned int flags)
{
	PIN1(req, parent, n);
	struct sinode *np = iget(pfs_, inode_of(req, newparent), &perr_);

	if (!np)
		fuse_reply_err(req, perr_);
	else
		op_rename(req, parent, name, newparent, newname, flags);
	if (np)
		iput(pfs_, np);
	iput(pfs_, n);
}

static void p_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	PIN1(req, ino, n);
	struct sinode *np = iget(pfs_, inode_of(req, newparent), &perr_);

	if (!np)
		fuse_reply_err(req, perr_);
	else
		op_link(req, ino, newparent, newname);
	if (np)
		iput(pfs_, np);
	iput(pfs_, n);
}

static void p_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	PIN1(req, ino, n);
	op_open(req, ino, fi);
	iput(pfs_, n);
}

static void p_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	PIN1(req, ino, n);
	op_opendir(req, ino, fi);
	iput(pfs_, n);
}

static void p_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset, struct fuse_file_info *fi)
{
	PIN1(req, ino, n);
	op_readdirplus(req, ino, size, offset, fi);
	iput(pfs_, n);
}

static void p_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value, size_t size, int flags)
{
	PIN1(req, ino, n);
	op_setxattr(req, ino, name, value, size, flags);
	iput(pfs_, n);
}

static void p_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	PIN1(req, ino, n);
	op_getxattr(req, ino, name, size);
	iput(pfs_, n);
}

static void p_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	PIN1(req, ino, n);
	op_listxattr(req, ino, size);
	iput(pfs_, n);
}

static void p_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	PIN1(req, ino, n);
	op_removexattr(req, ino, name);
	iput(pfs_, n);
}

const struct fuse_lowlevel_ops simfs_ops = {
	.init = op_init,
	.lookup = p_lookup,
	.forget = op_forget,
	.forget_multi = op_forget_multi,
	.getattr = p_getattr,
	.setattr = p_setattr,
	.readlink = p_readlink,
	.mknod = p_mknod,
	.mkdir = p_mkdir,
	.symlink = p_symlink,
	.unlink = p_unlink,
	.rmdir = p_rmdir,
	.rename = p_rename,
	.link = p_link,
	.open = p_open,
	.read = op_read,
	.write_buf = op_write_buf,
	.release = op_release,
	.fsync = op_fsync,
	.opendir = p_opendir,
	.readdir = op_readdir,
	.readdirplus = p_readdirplus,
	.releasedir = op_releasedir,
	.fsyncdir = op_fsyncdir,
	.statfs = op_statfs,
	.setxattr = p_setxattr,
	.getxattr = p_getxattr,
	.listxattr = p_listxattr,
	.removexattr = p_removexattr,
	.create = p_create,
	.fallocate = op_fallocate,
	.lseek = op_lseek,
};
