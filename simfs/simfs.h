/* simfs: a FUSE bind view of a host directory (PRIVATE) at ROOT, with vzquota enforcement.
 * Internal interfaces between the filesystem (fs.c), the live quota (quota_live.c) and the CLI. */
#ifndef SIMFS_H
#define SIMFS_H

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "../quota/quota.h"

/* Exit codes of `simfs` (documented in --help). */
enum simfs_status {
	SIMFS_OK = 0,
	SIMFS_ERR_SYS = 1,		/* system error */
	SIMFS_ERR_USAGE = 2,		/* bad arguments or options */
	SIMFS_ERR_DIR = 3,		/* PRIVATE or ROOT missing or not a directory */
	SIMFS_ERR_NESTED = 4,		/* ROOT is PRIVATE or inside it */
	SIMFS_ERR_QUOTA_OFF = 5,	/* quota ID is off (vzquota on ID first) */
	SIMFS_ERR_QUOTA_BUSY = 6,	/* another daemon enforces quota ID */
	SIMFS_ERR_QUOTA = 7,		/* quota file missing, corrupt or unwritable */
	SIMFS_ERR_MOUNT = 8,		/* the FUSE mount failed, or ROOT is already served */
	SIMFS_ERR_NOT_MOUNTED = 9,	/* umount: ROOT is not a simfs mount of ours */
	SIMFS_ERR_BUSY = 10,		/* umount: ROOT is in use (try -l), or covered */
};

/* One object of PRIVATE the kernel knows: an O_PATH descriptor, never a path. */
struct sinode {
	int fd;				/* -1 while closed (reopened from the handle) */
	struct file_handle *handle;	/* taken before fd is first closed early */
	unsigned users;			/* operations using fd now: it is not closed under them */
	bool forgotten;			/* out of the table; freed when the last user goes */
	bool no_handle;			/* name_to_handle_at failed: never closed early */
	dev_t dev;
	ino_t ino;
	uint64_t nlookup;		/* under fs->itable_lock, as are fd, users */
	pthread_mutex_t qlock;		/* serializes measure-operate-measure for quota charging */
	/* Under qlock, with a quota: open files of this inode, and whether its last name went while
	 * it was open. Such an orphan keeps its blocks and inode charged (to orphan_uid/gid) until
	 * its last file is released, as with kernel quota. */
	unsigned opens;
	/* Under qlock, with a quota, for a file: the allocated bytes the quota holds for it (its
	 * st_blocks at the last measure). Its host filesystem may allocate more later, by itself
	 * (ext4 allocates extent-tree blocks when it writes the data back, after the write that
	 * caused them): the next measure charges that (true_up), so what is given back when the
	 * file goes was charged before. */
	int64_t charged;
	time_t wrote_at;		/* when last written, 0 if not since its last measure (true_up_final) */
	bool orphan;
	int64_t orphan_bytes;
	uid_t orphan_uid;
	gid_t orphan_gid;
	/* size and mtime at the last open: unchanged -> the page cache is kept */
	off_t open_size;
	struct timespec open_mtime;
	bool open_seen;
	struct sinode *next;
};

struct qlive;

struct simfs {
	char *private_dir;	/* realpath of PRIVATE */
	char *root_dir;		/* realpath of ROOT */
	struct sinode root;
	int proc_fd;		/* /proc/self/fd */
	bool ro;
	bool writeback;		/* kernel writeback cache (off with quota: EDQUOT must reach write()) */
	bool caller_umask;	/* the kernel leaves the umask to us (POSIX ACLs: see op_init) */
	double timeout;		/* entry and attribute timeout, seconds */
	pthread_mutex_t itable_lock;
	struct sinode **itable;
	size_t itable_size, itable_count;
	/* The kernel may remember more inodes than we may hold descriptors: beyond max_fds, the
	 * descriptors of idle inodes are closed and reopened from their file handles when needed. */
	int mount_fd;		/* PRIVATE, O_RDONLY: for open_by_handle_at */
	size_t open_fds, max_fds, evict_cursor;
	struct qlive *quota;	/* NULL: a plain bind view */
	struct fuse_session *se;
};

extern const struct fuse_lowlevel_ops simfs_ops;
/* When the session is over, before the usage is written back: every inode still known measured
 * once more (a written file's writeback started first), the charge of orphans whose files were
 * never released given back (their blocks go with our descriptors). */
void simfs_quota_stop(struct simfs *fs);
/* Charges what the host allocated by itself for files written since they were last measured (the
 * extent tree ext4 allocates at writeback), now rather than at their next operation or when they
 * are forgotten: called (with the struct simfs) before the usage is shown (@all: every such file) or
 * written back periodically (those written in the last minutes, which the host writes back). It
 * does not start their writeback (true_up_final does, at the end): what is not allocated yet is not
 * counted yet. */
void simfs_quota_true_up(void *fs, bool all);

/* ---- quota_live.c: the live holder of a vzquota id -------------------------------------------- */

/* Opens quota @id for @private_dir: checks ON, takes the live lock, rescans if DIRTY or LIVE,
 * marks the file LIVE and SERVED. Returns a SIMFS_ERR_* with @msg on failure. */
int qlive_start(uint32_t id, const char *private_dir, const char *root_dir, struct qlive **out, char *msg,
		size_t len);
/* Starts the writer (every ~2 s when changed) and the request listener threads. */
int qlive_run(struct qlive *q, char *msg, size_t len);
/* Stops the writer and the listener (no more sync callbacks), before the inodes go. */
void qlive_quiesce(struct qlive *q);
/* Final write-back, clears LIVE, releases the lock. */
void qlive_stop(struct qlive *q);
/* @fn(@ctx, @all) brings the usage up to date before it is written back or shown (@all: for a
 * tool asking for it): simfs_quota_true_up. */
void qlive_on_sync(struct qlive *q, void (*fn)(void *ctx, bool all), void *ctx);

/* A pending charge: reserved against the limits before the host call, settled after it. */
struct qcharge {
	int64_t bytes, inodes;
	uid_t uid;
	gid_t gid;
};
/* Checks and reserves @c, and @slack bytes on top: -EDQUOT if it may not be made. The slack is
 * what may come besides (a directory growing by a block): it must fit under the hard limits, not
 * under a soft limit past its grace. */
int qlive_reserve(struct qlive *q, const struct qcharge *c, int64_t slack);
/* Applies a change unconditionally (frees, measured deltas, undoing a reservation). */
void qlive_apply(struct qlive *q, const struct qcharge *c);
/* Moves @bytes + @inodes from (ouid, ogid) to (nuid, ngid): -EDQUOT if the destination may not
 * take them (nothing changes then). */
int qlive_move(struct qlive *q, int64_t bytes, int64_t inodes, uid_t ouid, gid_t ogid, uid_t nuid, gid_t ngid);
/* First-level usage and soft limits, for statfs. */
void qlive_usage(struct qlive *q, struct vzq_stat *st);

#endif
