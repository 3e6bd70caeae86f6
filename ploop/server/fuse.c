/* The FUSE face of ploopd: one regular file (the root inode, mounted over a regular file) whose
 * reads, writes, fsync and fallocate go to the data path. Opened with direct I/O and parallel
 * direct writes, so a loop device with direct I/O reaches us without a page cache in between. */
#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fuse.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "loop.h"
#include "server.h"

#define MAX_IO DEV_MAX_IO

static struct srv *srv_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	(void)userdata;
	conn->max_write = MAX_IO;
	conn->max_readahead = 0;
	/* Requests a loop device keeps in flight at queue depth 32 and more. */
	conn->max_background = 128;
	conn->congestion_threshold = 96;
	if (conn->capable & FUSE_CAP_ASYNC_DIO)
		conn->want |= FUSE_CAP_ASYNC_DIO;
	conn->want &= ~(unsigned)FUSE_CAP_WRITEBACK_CACHE;
}

static void fill_attr(struct srv *s, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = FUSE_ROOT_ID;
	st->st_mode = S_IFREG | (s->ro ? 0400 : 0600);
	st->st_nlink = 1;
	st->st_size = (off_t)s->size;
	st->st_blksize = 4096;
	st->st_blocks = (blkcnt_t)(s->size / 512);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stat st;

	(void)fi;
	if (ino != FUSE_ROOT_ID) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	fill_attr(srv_of(req), &st);
	fuse_reply_attr(req, &st, 1.0);
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set, struct fuse_file_info *fi)
{
	struct srv *s = srv_of(req);
	struct stat st;

	(void)ino;
	(void)fi;
	/* The size belongs to the image (ploop resize); timestamps and modes are not kept. */
	if ((to_set & FUSE_SET_ATTR_SIZE) && (uint64_t)attr->st_size != s->size) {
		fuse_reply_err(req, EPERM);
		return;
	}
	fill_attr(s, &st);
	fuse_reply_attr(req, &st, 1.0);
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	(void)parent;
	(void)name;
	fuse_reply_err(req, ENOENT);
}

/* libfuse 3.14 cannot ask for parallel direct writes; the open reply is built here instead. */
static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct srv *s = srv_of(req);
	struct fuse_open_out out = { 0 };

	(void)ino;
	if (s->ro && (fi->flags & O_ACCMODE) != O_RDONLY) {
		fuse_reply_err(req, EROFS);
		return;
	}
	out.open_flags = FOPEN_DIRECT_IO | FOPEN_PARALLEL_DIRECT_WRITES;
	fuse_reply_buf(req, (const char *)&out, sizeof(out));
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	struct srv *s = srv_of(req);
	uint8_t *buf = dev_reply_buffer(MAX_IO);
	int r;

	(void)ino;
	(void)fi;
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	if ((uint64_t)off >= s->size) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	if (size > MAX_IO)
		size = MAX_IO;
	if ((uint64_t)off + size > s->size)
		size = (size_t)(s->size - (uint64_t)off);
	r = dev_read(s, buf, size, (uint64_t)off);
	if (r)
		fuse_reply_err(req, -r);
	else
		fuse_reply_buf(req, (const char *)buf, size);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	struct srv *s = srv_of(req);
	int r;

	(void)ino;
	(void)fi;
	/* As a block device: a write across the end is cut short there, one at the end fails. */
	if ((uint64_t)off >= s->size) {
		fuse_reply_err(req, ENOSPC);
		return;
	}
	if (size > s->size - (uint64_t)off)
		size = (size_t)(s->size - (uint64_t)off);
	r = dev_write(s, buf, size, (uint64_t)off);
	if (r)
		fuse_reply_err(req, -r);
	else
		fuse_reply_write(req, size);
}

static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	fuse_reply_err(req, 0);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	(void)ino;
	(void)datasync;
	(void)fi;
	fuse_reply_err(req, -dev_flush(srv_of(req)));
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	fuse_reply_err(req, 0);
}

static void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len, struct fuse_file_info *fi)
{
	struct srv *s = srv_of(req);

	(void)ino;
	(void)fi;
	if (off < 0 || len <= 0 || (uint64_t)off >= s->size) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if ((uint64_t)len > s->size - (uint64_t)off)
		len = (off_t)(s->size - (uint64_t)off);
	if (mode == 0) {
		/* Every byte of the disk is already there to write. */
		fuse_reply_err(req, 0);
	} else if (mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) {
		/* Discard and write-zeroes from the loop device: both read back as zeros. */
		fuse_reply_err(req, -dev_discard(s, (uint64_t)off, (uint64_t)len));
	} else {
		fuse_reply_err(req, EOPNOTSUPP);
	}
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct statvfs st = { .f_bsize = 4096, .f_frsize = 4096, .f_namemax = 255 };

	(void)ino;
	fuse_reply_statfs(req, &st);
}

static const struct fuse_lowlevel_ops ops = {
	.init = op_init,
	.lookup = op_lookup,
	.getattr = op_getattr,
	.setattr = op_setattr,
	.open = op_open,
	.read = op_read,
	.write = op_write,
	.flush = op_flush,
	.release = op_release,
	.fsync = op_fsync,
	.statfs = op_statfs,
	.fallocate = op_fallocate,
};

int fuse_start(struct srv *s, char *errbuf, size_t errlen)
{
	char opts[512];
	char *argv[] = { "ploopd", "-o", opts, NULL };
	struct fuse_args args = FUSE_ARGS_INIT(3, argv);

	snprintf(opts, sizeof(opts), "fsname=ploop-%s,subtype=ploop,default_permissions%s", s->id, s->ro ? ",ro" : "");
	s->se = fuse_session_new(&args, &ops, sizeof(ops), s);
	if (!s->se) {
		snprintf(errbuf, errlen, "cannot create the FUSE session");
		return -EIO;
	}
	if (fuse_session_mount(s->se, s->disk_path)) {
		snprintf(errbuf, errlen, "%s: cannot mount FUSE (is /dev/fuse there?)", s->disk_path);
		fuse_session_destroy(s->se);
		s->se = NULL;
		return -EIO;
	}
	return 0;
}

int fuse_run(struct srv *s)
{
	struct fuse_loop_config *cfg = fuse_loop_cfg_create();
	int r;

	fuse_loop_cfg_set_clone_fd(cfg, 1);
	/* Idle workers stay: starting and ending threads per burst costs more than they do. */
	fuse_loop_cfg_set_max_threads(cfg, 64);
	fuse_loop_cfg_set_idle_threads(cfg, 64);
	r = fuse_session_loop_mt(s->se, cfg);
	fuse_loop_cfg_destroy(cfg);
	return r;
}

void fuse_stop(struct srv *s)
{
	if (!s->se)
		return;
	fuse_session_exit(s->se);
	fuse_session_unmount(s->se);
}

/*
 * The kernel keeps the file's size, and cuts direct reads at it (a loop device fails what is cut
 * with EIO). After a resize an invalidation alone is not enough under load: the kernel drops the
 * attributes of a GETATTR during which a write completed, and keeps the old size. So the size is
 * read back through the file (lseek to the end, which holds the inode lock: no new write starts
 * meanwhile) until the kernel has the new one.
 */
int fuse_size_changed(struct srv *s)
{
	int r = -EAGAIN;

	if (!s->se)
		return 0;
	/* Never opened here: a server killed while one of its threads waits on its own FUSE file
	 * (the open, or the FLUSH of the close at exit) can never exit (see loop.c). */
	for (int tries = 0; tries < 500; tries++) {
		int64_t end = -1;

		fuse_lowlevel_notify_inval_inode(s->se, FUSE_ROOT_ID, -1, 0);
		r = served_file_size(s->disk_path, &end);
		if (r)
			break;
		if (end == (int64_t)s->size)
			break;
		r = -EAGAIN;
		if (tries >= 10)
			usleep(2000);
	}
	return r;
}
