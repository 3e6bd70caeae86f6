/* ploopd, the image server: one process per mounted image set, serving the delta chain as one
 * regular file through FUSE (a loop device turns it into a block device), and taking online
 * commands (snapshot, merge, resize, compact, status, stop) on a root-only control socket. */
#ifndef PLOOP_SERVER_H
#define PLOOP_SERVER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "../lib/internal.h"

/* Per-cluster locks for the slow paths (allocation, copy-up, discard) of one cluster at a time. */
#define CLUSTER_LOCK_BUCKETS 256

struct cluster_lock_table {
	pthread_mutex_t mu;
	pthread_cond_t cond[CLUSTER_LOCK_BUCKETS];
	uint64_t busy[CLUSTER_LOCK_BUCKETS][4];	/* up to 4 clusters per bucket; ~0 = free slot */
};

struct srv {
	/* The image set. */
	char *dd_path;
	char guid[PLOOP_GUID_BUF];	/* the image served (top, or a snapshot for read-only views) */
	bool ro;
	bool owns_run_dir;		/* the image is locked by this server: so is what its run directory holds */
	struct ploop_chain *chain;	/* levels 0 (base) .. depth-1 (top) */
	uint64_t size;			/* bytes */
	uint64_t cs;			/* cluster bytes */

	/* Data operations hold io_lock shared; changes of the chain or the size hold it exclusive. */
	pthread_rwlock_t io_lock;
	struct cluster_lock_table locks;
	pthread_mutex_t alloc_lock;	/* top delta: alloc_head, preallocated tail */
	uint64_t prealloc_end;		/* clusters [alloc_head, prealloc_end) are allocated, unused */
	pthread_mutex_t bat_lock;	/* top delta: BAT entries being set, dirty pages, header */
	pthread_mutex_t flush_lock;	/* one flush at a time */
	uint64_t writes_since_flush;
	/* While the top is merged into its parent online: clusters written meanwhile (a bitmap). */
	uint8_t *merge_dirty;
	/* A merge of the top into its parent began and has not switched the chain (it is under way,
	 * or failed and is left for recovery to redo): the parent's file may hold clusters the served
	 * chain does not show, which that merge would bring back if the top dropped its own. */
	bool parent_stale;
	int lock_fd;			/* DiskDescriptor.xml.lck, held shared while serving */

	/* Runtime. */
	char id[17];			/* names the run directory */
	char *run_dir;			/* /run/ploop/<id> */
	int run_fd;			/* run_dir, flock()ed: one server per run directory */
	char *disk_path;		/* <run_dir>/disk: the FUSE mount point, a regular file */
	char *sock_path;		/* <run_dir>/control */
	char device[64];		/* /dev/loopN once attached */
	char part[80];			/* the device holding the filesystem (loopNp1 or loopN) */
	char mount_dir[4096];		/* where the filesystem is mounted, if it is */
	char fstype[32];
	char mount_opts[1024];
	struct fuse_session *se;
	int ctl_fd;
	volatile bool stopping;
};

/* device.c: the data path. All return 0 or -errno. */
#define DEV_MAX_IO (1u << 20)	/* the largest FUSE request */
int dev_init(struct srv *s);
void dev_fini(struct srv *s);
int dev_read(struct srv *s, void *buf, size_t len, uint64_t off);
/* The calling thread's buffer for read replies (@len: the largest request; the same every call). */
void *dev_reply_buffer(size_t len);
int dev_write(struct srv *s, const void *buf, size_t len, uint64_t off);
int dev_flush(struct srv *s);
int dev_flush_locked(struct srv *s);	/* the caller holds io_lock */
/* Punch (discard: reads as zeros afterwards) or zero a range. */
int dev_discard(struct srv *s, uint64_t off, uint64_t len);
/* Under io_lock held exclusive: switch to a new chain (same or other size). */
void dev_set_chain(struct srv *s, struct ploop_chain *c);
/* Copies @v from the highest level at or below @below into the top, unless the top has it. */
int dev_copy_up(struct srv *s, uint64_t v, int below);
/* Allocated clusters of the top that hold nothing the disk reads: trims the file tail. */
int dev_trim_tail(struct srv *s);
int dev_trim_unreferenced(struct srv *s);

/* fuse.c */
int fuse_start(struct srv *s, char *errbuf, size_t errlen);
int fuse_run(struct srv *s);	/* until unmounted or stopped */
void fuse_stop(struct srv *s);
int fuse_size_changed(struct srv *s);	/* until the kernel sees the new size */

/* control.c */
int control_start(struct srv *s, char *errbuf, size_t errlen);
void control_stop(struct srv *s);

/* main.c */
__attribute__((format(printf, 1, 2)))
void slog(const char *fmt, ...);
int server_release(struct srv *s, char *msg, size_t len);
void server_request_stop(void);
int server_write_state(struct srv *s);
int server_attach_partition(struct srv *s, char *msg, size_t len);

/* online.c: the commands behind the control socket. Each writes one reply line into @reply. */
int online_command(struct srv *s, char *line, char *reply, size_t len);

#endif
