/* Internal definitions shared by the files of libploop: the delta and chain structures, error and
 * logging helpers, and the cleanup attributes that keep early returns leak-free. */
#ifndef PLOOP_INTERNAL_H
#define PLOOP_INTERNAL_H

#include "../../common/openfile.h"
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../ploop.h"
#include "../ploop_format.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define PLOOP_PAGE 4096u
/* The name a filled delta (import) has until it is complete: DELTA.import */
#define PLOOP_IMPORT_SUFFIX ".import"

/* ---- errors and logging ---- */
/* Records an error in @err unless it already holds one (the first, most specific, wins);
 * returns the status of the error @err holds. */
__attribute__((format(printf, 4, 5)))
int ploop_fail(struct ploop_error *err, int status, int errnum, const char *fmt, ...);
__attribute__((format(printf, 2, 3)))
void ploop_log(int level, const char *fmt, ...);
#define PLOG(...) ploop_log(1, __VA_ARGS__)
#define PNOTICE(...) ploop_log(0, __VA_ARGS__)

/* ---- cleanup helpers ---- */
static inline void cleanup_freep(void *p)
{
	free(*(void **)p);
}
#define cleanup_free __attribute__((cleanup(cleanup_freep)))

/* ---- io ---- */
/* (pio_open opens with open_regular_file: a FIFO or the like is -OPEN_ENOTREG.) */
/* "PATH: cannot open: ..." or "PATH: not a regular file" for a pio_open result @r, exit PLOOP_ERR_OPEN. */
int pio_fail_open(struct ploop_error *err, int r, const char *path);
int pio_open(const char *path, int flags, mode_t mode, struct ploop_file **out);
void pio_close(struct ploop_file *f);
int pio_read_full(struct ploop_file *f, void *buf, size_t len, uint64_t off);	/* -EIO on short read */
int pio_read(struct ploop_file *f, void *buf, size_t len, uint64_t off);	/* zero-fills past EOF */
int pio_write(struct ploop_file *f, const void *buf, size_t len, uint64_t off);
int pio_sync(struct ploop_file *f);
int pio_size(struct ploop_file *f, uint64_t *size);
int pio_truncate(struct ploop_file *f, uint64_t size);
int pio_allocate(struct ploop_file *f, uint64_t off, uint64_t len);
int pio_copy(struct ploop_file *src, uint64_t soff, struct ploop_file *dst, uint64_t doff, uint64_t len);
int pio_lock(struct ploop_file *f, bool exclusive);
void pio_writeback(struct ploop_file *f, uint64_t off, uint64_t len);
int pio_rename(const char *from, const char *to);
int pio_link(const char *from, const char *to);
int pio_unlink(const char *path);
int pio_sync_dir(const char *dir);
int pio_sync_parent(const char *path);

/* ---- bulk transfers (pipeline.c) ---- */
struct pio_pipe;
struct pio_slot;
/* Gets each read in submission order; may queue writes of parts of @buf with pio_pipe_write. */
typedef int (*pio_consume_fn)(void *ctx, struct pio_pipe *p, struct pio_slot *s, uint8_t *buf, size_t len,
			      uint64_t off, uint64_t tag);
/* PIO_PIPE_DURABLE: the caller syncs what it writes, into space already allocated: aligned writes go
 * straight to the disk (O_DIRECT), others start write-back as they complete, so disk writes overlap
 * the reads still to come instead of piling up for the final fsync. */
#define PIO_PIPE_DURABLE 0x1
int pio_pipe_new(unsigned depth, size_t chunk, unsigned flags, pio_consume_fn consume, void *ctx,
		 struct pio_pipe **out);
/* Reads [off, off+len) of @f (len <= chunk; @f NULL: a buffer of zeros) for the consumer. */
int pio_pipe_read(struct pio_pipe *p, struct ploop_file *f, uint64_t off, size_t len, uint64_t tag);
int pio_pipe_write(struct pio_pipe *p, struct pio_slot *s, const void *buf, size_t len, struct ploop_file *f,
		   uint64_t off);
/* Waits for everything queued; returns the first error (-errno). Called after an error too, so
 * that the writes queued before it complete (their own errors are not reported twice). */
int pio_pipe_finish(struct pio_pipe *p);
/* Submits what is still queued and waits for it before the buffers go. */
void pio_pipe_free(struct pio_pipe *p);
#define PIO_PIPE_DEPTH 16
#define PIO_PIPE_CHUNK (1u << 20)

/* ---- deltas ---- */
struct ploop_delta {
	char *path;
	struct ploop_file *file;
	bool rw;
	bool raw;
	bool marked_dirty;		/* this open set m_DiskInUse and clears it on close */
	int version;			/* 1, 2; 0 for raw */
	struct ploop_pvd_header hdr;	/* host-endian copy */
	uint32_t cluster_sectors;
	uint64_t cluster_bytes;
	uint64_t size_sectors;		/* virtual size */
	uint32_t bat_entries;		/* m_Size */
	uint32_t vclusters;		/* clusters covering size_sectors (<= bat_entries) */
	uint32_t l1_size;		/* clusters of header + BAT (the first data cluster) */
	uint64_t file_size;
	uint32_t *bat;			/* per virtual cluster: file cluster index, 0 = hole */
	uint64_t alloc_head;		/* next cluster to append */
	uint8_t *dirty_pages;		/* BAT pages (4 KiB of the file) changed since the last flush */
	size_t n_pages;
	bool header_dirty;
	bool data_unsynced;
	/* For the server's data path: an O_DIRECT descriptor of the file (-2: not opened yet,
	 * -1: none, the filesystem has no direct I/O) and the alignment it needs. */
	int dio_fd;
	unsigned dio_align;
};

/* Codec: the only place that reads or writes raw header bytes. */
void ploop_header_decode(const void *raw, struct ploop_pvd_header *h);
void ploop_header_encode(const struct ploop_pvd_header *h, void *raw);
int ploop_header_version(const struct ploop_pvd_header *h);	/* 1, 2, 0 = not ploop */
uint64_t ploop_header_size_sectors(const struct ploop_pvd_header *h, int version);
void ploop_header_init(struct ploop_pvd_header *h, int version, uint64_t size_sectors, uint32_t cluster_sectors);
void ploop_chs(uint64_t sectors, uint32_t *cyl, uint32_t *heads, uint32_t *secs);
/* Validates a decoded header against the file size; fills geometry fields of @d. */
int ploop_header_validate(struct ploop_delta *d, struct ploop_error *err);
/* Raw on-disk BAT entry for @cluster in @version, or an error if it cannot be represented. */
int ploop_bat_encode(int version, uint32_t cluster_sectors, uint64_t cluster, uint32_t *entry);

int ploop_delta_write_header(struct ploop_delta *d, struct ploop_error *err);
int ploop_delta_set_dirty(struct ploop_delta *d, bool dirty, struct ploop_error *err);
int ploop_delta_load_bat(struct ploop_delta *d, struct ploop_error *err);
/* Refuses (PLOOP_ERR_PARAM) a size the delta could not grow to; nothing is read or written. */
int ploop_delta_check_size(const struct ploop_delta *d, uint64_t size_sectors, struct ploop_error *err);
void ploop_delta_set_entry(struct ploop_delta *d, uint64_t v, uint32_t cluster);
/* Data was written to the delta: it needs a sync, and it is no longer empty (CIF_Empty). */
void ploop_delta_note_data(struct ploop_delta *d);
/* Whether the file ends at its BAT: CIF_Empty's meaning to 1.15's check. */
bool ploop_delta_empty_by_size(const struct ploop_delta *d);
int ploop_delta_flush(struct ploop_delta *d, struct ploop_error *err);
/* Reserves @n clusters at the end of the file and returns the first index. With @fill the space is
 * allocated now (reads as zeros); without, the caller writes every one of them whole next. */
int ploop_delta_alloc(struct ploop_delta *d, uint64_t n, bool fill, uint64_t *first, struct ploop_error *err);
/* ploop_delta_grow (to @size_sectors, or no grow at that size) that also allocates @extra clusters
 * (filled, contiguous, the first in *first) in the one allocation it makes before it changes
 * anything: out of space, nothing changes. */
int ploop_delta_grow_alloc(struct ploop_delta *d, uint64_t size_sectors, uint64_t extra, uint64_t *first,
			   struct ploop_error *err);
uint64_t ploop_delta_bat_bytes(const struct ploop_delta *d);
/* Tail clusters into holes, then the file truncated (crash-safe order). */
int ploop_delta_compact(struct ploop_delta *d, uint64_t *moved, struct ploop_error *err);
int ploop_delta_drop_cluster(struct ploop_delta *d, uint64_t v, struct ploop_error *err);

/* ---- chains ---- */
/* Refuses (PLOOP_ERR_PARAM) a list naming one file twice, by name or through a hard link. */
int ploop_files_distinct(const char *const *paths, int n, struct ploop_error *err);
struct ploop_chain {
	int depth;
	struct ploop_delta *deltas[PLOOP_MAX_CHAIN];
	uint64_t size_bytes;
	uint64_t cluster_bytes;
	void *cow_buf;			/* one cluster, for copy-up */
};

/* ---- descriptor helpers ---- */
char *ploop_dir_of(const char *path);
char *ploop_join(const char *dir, const char *name);
/* Splits mount(8)-style @opts into mount(2) flags (applied to @flags, returned) and the
 * filesystem's own options (into @data, comma-separated). */
unsigned long ploop_mount_options(const char *opts, unsigned long flags, char *data, size_t len);
/* Whether @name (a file in the set's directory) is named as the set names its deltas, STEM.{GUID},
 * and the descriptor does not name it. */
bool ploop_descriptor_unnamed_delta(const struct ploop_descriptor *dd, const char *name);
int ploop_descriptor_new_delta_name(const struct ploop_descriptor *dd, char **file, char **path,
				    struct ploop_error *err);
int ploop_descriptor_add_image(struct ploop_descriptor *dd, const char *guid, const char *file,
			       const char *parent, struct ploop_error *err);
void ploop_descriptor_remove_image(struct ploop_descriptor *dd, const char *guid);
void ploop_descriptor_rename_guid(struct ploop_descriptor *dd, const char *from, const char *to);
int ploop_descriptor_store(const struct ploop_descriptor *dd, struct ploop_error *err);
/* ploop_descriptor_store in two steps, for a change of the images that must not be left without its
 * descriptor: prepare writes and syncs DiskDescriptor.xml.tmp (the step that can run out of space),
 * before the images change; commit renames it into place and syncs the directory (no new space);
 * abort removes the .tmp when the image change failed and nothing is to be described. */
int ploop_descriptor_prepare(const struct ploop_descriptor *dd, struct ploop_error *err);
int ploop_descriptor_commit(const struct ploop_descriptor *dd, struct ploop_error *err);
void ploop_descriptor_abort(const struct ploop_descriptor *dd);
bool ploop_descriptor_committed(const struct ploop_error *err);
/* The exclusive lock for a descriptor about to be created (init, import, restore-descriptor);
 * *@created: this call made the lock file. Released by ploop_unlock_new_descriptor, which removes
 * a lock file this call made if no descriptor came of it. */
int ploop_lock_new_descriptor(const char *dd_path, int *lock_fd, bool *created, struct ploop_error *err);
void ploop_unlock_new_descriptor(const char *dd_path, int lock_fd, bool created);
/* The lock of a read-write server while it starts: exclusive if nothing holds it (interrupted
 * operations may then be completed), else shared if only readers do (snapshot views of the set):
 * offline writers stay away either way. *@exclusive says which it got. */
int ploop_lock_descriptor_server(const char *dd_path, int *lock_fd, bool *exclusive, struct ploop_error *err);
/* An flock of DiskDescriptor.xml.lck, apart from the server's record lock: for a command that works
 * on a served set beside its server (release with ploop_unlock_descriptor). */
int ploop_lock_descriptor_op(const char *dd_path, int *lock_fd, struct ploop_error *err);
/* Fills a new delta (opened for writing, marked dirty) before it gets its name and descriptor. */
typedef int (*ploop_fill_fn)(struct ploop_delta *d, void *ctx, struct ploop_error *err);
/* A new image set: DELTA and its DiskDescriptor.xml (image.c). With @fill, DELTA is made and filled
 * as DELTA.import and named and described only once complete. */
int ploop_create_set(const char *delta_path, const struct ploop_create_params *p, ploop_fill_fn fill, void *ctx,
		     struct ploop_error *err);
/* PLOOP_ERR_PARAM unless @name (no directory part) can be a new set's image as DiskDescriptor.xml
 * names it: not empty, not the descriptor's name, UTF-8 text without control characters, no blank
 * at either end (the reader trims those). */
int ploop_check_new_file_name(const char *name, struct ploop_error *err);
int ploop_descriptor_new(const char *dd_path, const char *file, const struct ploop_create_params *p,
			 struct ploop_descriptor **out, struct ploop_error *err);

/* ---- mounted image sets (mount.c) ---- */
/* The run directory name of the server of a descriptor (its real path) and snapshot GUID. */
void ploop_instance_id(const char *dd_realpath, const char *guid, char id[17]);
/* Where the filesystem on block device @rdev is mounted (from mountinfo, fs.c): PLOOP_MOUNT_COVERED
 * with @dir a directory where another filesystem is mounted over it (FIFREEZE, FITRIM or umount there
 * would reach that one: whatever needs it refuses, even if it shows elsewhere too), else
 * PLOOP_MOUNT_SHOWS with @dir the first directory where it is what shows, or PLOOP_NOT_MOUNTED. */
enum ploop_mount_found { PLOOP_NOT_MOUNTED, PLOOP_MOUNT_COVERED, PLOOP_MOUNT_SHOWS };
enum ploop_mount_found ploop_find_mount(dev_t rdev, char *dir, size_t len);
/* The same for the filesystem on @in's device (its partition's, with a GPT). */
enum ploop_mount_found ploop_mounted_at(const struct ploop_instance *in, char *dir, size_t len);
/* Stops the server of a set that is to be removed if this fails (init): as ploop_umount (which
 * waits up to 10 s for a holder of the device to let go); failing that, the server is stopped by
 * SIGKILL and cleaned up after as a dead one, and the error of the umount is returned. */
int ploop_umount_discard(const struct ploop_instance *in, struct ploop_error *err);
/*
 * Unmounting a directory takes off the TOPMOST mount there, which may be another filesystem mounted
 * over ours (another set's, a tmpfs): a directory found through our device, or remembered, is
 * unmounted only when the filesystem seen there is the one on our device (fs.c; ploopd uses these
 * too). Whether the filesystem seen at @dir is the one on block device @dev: */
bool ploop_fs_shows_device(const char *dir, const char *dev);
/* The message of the refusal (exit PLOOP_ERR_UMOUNT_BUSY): arguments @dev, @dir. */
#define PLOOP_COVERED_FMT "cannot unmount %s from %s: another filesystem is mounted over it"
/* Unmounts @dir if the filesystem seen there is on @dev or @dev2 (either may be NULL or "");
 * 0 when done (or nothing is mounted there), -EXDEV when another filesystem shows there (nothing
 * is done), else -errno of umount2. */
int ploop_umount_own(const char *dir, const char *dev, const char *dev2);
/*
 * What every mount does before it serves a chain (ploopd, and `mount --kernel`): takes the descriptor
 * lock (a read-write mount as ploop_lock_descriptor_server, a read-only one shared), completes
 * interrupted operations when it holds the set alone, reads the chain of @guid (NULL: the top),
 * refuses what cannot be served, and for a read-write mount checks and repairs the deltas a crash
 * left marked in use (check -f -d, as upstream's mount does). On success the caller holds
 * *@lock_fd and owns *@dd, whose chain is @idx[0..*@n).
 */
int ploop_mount_prepare(const char *dd_path, const char *guid, bool ro, int *lock_fd, struct ploop_descriptor **dd,
			int *idx, int *n, struct ploop_error *err);
/* The running servers of a descriptor, in words ("snapshot {...} is mounted read-only (/dev/loop3)"),
 * for messages that refuse something they hold; false when there is none. */
bool ploop_describe_servers(const char *dd_path, char *buf, size_t len);
/* The same for the snapshot views (read-only mounts of snapshots) only. */
bool ploop_describe_views(const char *dd_path, char *buf, size_t len);

/* ---- GPT (gpt.c), on an open block device; sizes in sectors ---- */
int ploop_gpt_create(int fd, uint64_t size, uint32_t cs, struct ploop_error *err);
int ploop_gpt_partition(int fd, uint64_t *first, uint64_t *last, struct ploop_error *err);
int ploop_gpt_resize(int fd, uint64_t size, uint32_t cs, struct ploop_error *err);
uint64_t ploop_gpt_partition_end(uint64_t size, uint32_t cs);

/* ---- operations shared by several commands ---- */
/* Data of deltas src[0..n-1] (top first) merged into @dst (their common parent). */
int ploop_merge_deltas(struct ploop_delta *dst, struct ploop_delta *const *src_top_first, int n,
		       struct ploop_error *err);
/* The same in two steps: the space taken (out of space, @dst is as it was), then the data copied. */
int ploop_merge_prepare(struct ploop_delta *dst, struct ploop_delta *const *src_top_first, int n, uint64_t *first,
			struct ploop_error *err);
/* Of ploop_merge_prepare, the part for a raw @dst: the holes the merge writes into, allocated within
 * the file's size (nothing that reads changes). */
int ploop_merge_reserve_raw(struct ploop_delta *dst, struct ploop_delta *const *src_top_first, int n,
			    struct ploop_error *err);
int ploop_merge_copy(struct ploop_delta *dst, struct ploop_delta *const *src_top_first, int n, uint64_t first,
		     struct ploop_error *err);
/* Merges a crash left half done, as recovery completed them. */
struct ploop_recovery {
	int n;
	char gone[PLOOP_MAX_CHAIN][PLOOP_GUID_BUF];	/* the merged-into snapshot, whose GUID is gone */
	char survivor[PLOOP_MAX_CHAIN][PLOOP_GUID_BUF];	/* the child whose GUID the merged image keeps */
};
int ploop_recover_locked(const char *dd_path, struct ploop_recovery *rec, struct ploop_error *err);
/* The descriptor side of merging chain[a+1..b] into chain[a] (image.c). */
/* A v2 delta left marked in use by a crash is checked and repaired as `check -f -d` does (check.c):
 * its marker dropped, and the clusters past the last one its BAT names (a crashed writer's
 * unacknowledged data or preallocation) given back; with @compact (the caller holds the set alone:
 * no snapshot view reads it) unnamed clusters before that too, the last ones moved into them.
 * Nothing is done to a clean one. */
int ploop_check_if_dirty(const char *path, bool compact, struct ploop_error *err);
/* Puts the temporary markers of chain[a..b-1] back as they were (@was) before a merge that changed
 * nothing marked them (image.c). */
void ploop_merge_unmark(struct ploop_descriptor *dd, const int *chain, int a, int b,
			const enum ploop_temporary *was);
int ploop_merge_check(const struct ploop_descriptor *dd, const int *chain, int a, int b, struct ploop_error *err);
int ploop_merge_mark(struct ploop_descriptor *dd, const int *chain, int a, int b, enum ploop_temporary *was,
		     struct ploop_error *err);
int ploop_merge_commit(struct ploop_descriptor *dd, const int *chain, int a, int b, char survivor[PLOOP_GUID_BUF],
		       struct ploop_error *err);
/* An empty delta with the size, cluster and version of @like, named after the descriptor's base. */
int ploop_new_delta_like(struct ploop_descriptor *dd, const struct ploop_delta *like, char **file, char **path,
			 struct ploop_error *err);
int ploop_recover_conversion(struct ploop_descriptor *dd, bool *done, struct ploop_error *err);

/* The descriptor of an image set, locked and loaded for modification. */
struct image_set {
	struct ploop_descriptor *dd;
	int lock_fd;
	struct ploop_recovery rec;	/* what opening it completed */
};
int ploop_set_open(struct image_set *s, const char *dd_path, struct ploop_error *err);
void ploop_set_release(struct image_set *s);
/* Removes a file (absent is fine) and syncs its directory. */
int ploop_unlink_file(const char *path, struct ploop_error *err);

static inline bool is_power_of_2(uint64_t x)
{
	return x && !(x & (x - 1));
}

#endif
