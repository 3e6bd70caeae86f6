/* libploop: ploop v1/v2 delta images, delta chains and DiskDescriptor.xml, offline.
 * This header is the whole public API; the `ploop` tool and the tests use nothing else. */
#ifndef PLOOP_H
#define PLOOP_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "ploop_format.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Results ------------------------------------------------------------------------------------
 * Every function that can fail returns 0 or one of these codes (upstream's SYSEXIT_* values, which
 * are also the exit codes of the tool) and fills a struct ploop_error with one line saying what
 * went wrong and with which file. */
enum ploop_status {
	PLOOP_OK = 0,
	PLOOP_ERR_CREAT = 1,
	PLOOP_ERR_DEVICE = 2,		/* the loop device or the server */
	PLOOP_ERR_OPEN = 4,
	PLOOP_ERR_MALLOC = 5,
	PLOOP_ERR_READ = 6,
	PLOOP_ERR_WRITE = 7,
	PLOOP_ERR_FORMAT = 11,		/* SYSEXIT_PLOOPFMT: the image is corrupt or not a ploop image */
	PLOOP_ERR_SYS = 12,
	PLOOP_ERR_LOOP = 14,
	PLOOP_ERR_FSTAT = 15,
	PLOOP_ERR_FSYNC = 16,
	PLOOP_ERR_BUSY = 17,		/* SYSEXIT_EBUSY: an interrupted version conversion */
	PLOOP_ERR_FTRUNCATE = 19,
	PLOOP_ERR_FALLOCATE = 20,
	PLOOP_ERR_MOUNT = 21,
	PLOOP_ERR_UMOUNT = 22,
	PLOOP_ERR_LOCK = 23,		/* another process holds the image */
	PLOOP_ERR_MKFS = 24,
	PLOOP_ERR_RESIZE_FS = 26,
	PLOOP_ERR_MKDIR = 27,
	PLOOP_ERR_RENAME = 28,
	PLOOP_ERR_RELOC = 30,
	PLOOP_ERR_UNLINK = 35,
	PLOOP_ERR_IN_USE = 37,		/* SYSEXIT_PLOOPINUSE: the dirty marker is set */
	PLOOP_ERR_PARAM = 38,		/* bad arguments */
	PLOOP_ERR_DESCRIPTOR = 39,	/* DiskDescriptor.xml is malformed or inconsistent */
	PLOOP_ERR_DEV_NOT_MOUNTED = 40,	/* the image set is not mounted */
	PLOOP_ERR_FSCK = 41,
	PLOOP_ERR_NOSNAP = 43,		/* no such snapshot */
	PLOOP_ERR_UMOUNT_BUSY = 46,	/* the filesystem is in use */
	PLOOP_ERR_NO_KMOD = 60,		/* mount --kernel: the dm-ploop target is not loaded */
};

/* The status of a failed write (-errno @r): no space left is 20, as upstream's failed fallocate. */
static inline int ploop_write_status(int r)
{
	return r == -ENOSPC ? PLOOP_ERR_FALLOCATE : PLOOP_ERR_WRITE;
}

struct ploop_error {
	int status;	/* enum ploop_status */
	int err;	/* errno behind it, or 0 */
	char msg[1024];
};

/* Library messages for the tool (never printed by the library itself): level 0 is a notice the user
 * should see (a deferred operation, a repair), 1 and up are verbose progress. */
typedef void (*ploop_log_fn)(int level, const char *msg, void *ctx);
void ploop_set_log(ploop_log_fn fn, void *ctx);

/* ---- I/O seam -----------------------------------------------------------------------------------
 * Every byte the library reads or writes, and every file it creates, renames or removes, goes
 * through this table, so the same code runs over plain files, in memory (fuzzing) or over a
 * fault-injecting double (crash tests). Functions return >= 0 or -errno. */
struct ploop_file {
	const struct ploop_io_ops *ops;
	int fd;
	void *priv;
};

struct ploop_io_ops {
	int (*open)(const char *path, int flags, mode_t mode, struct ploop_file **out);
	void (*close)(struct ploop_file *f);
	/* Full transfers: a short count only at end of file (pread). */
	ssize_t (*pread)(struct ploop_file *f, void *buf, size_t len, uint64_t off);
	ssize_t (*pwrite)(struct ploop_file *f, const void *buf, size_t len, uint64_t off);
	int (*sync)(struct ploop_file *f);
	int (*size)(struct ploop_file *f, uint64_t *size);
	int (*truncate)(struct ploop_file *f, uint64_t size);
	/* Make [off, off+len) allocated and reading as zeros where it was past EOF. */
	int (*allocate)(struct ploop_file *f, uint64_t off, uint64_t len);
	/* Hint: start writing back [off, off+len) now (the later sync has less to do). May be NULL. */
	int (*writeback)(struct ploop_file *f, uint64_t off, uint64_t len);
	/* Copy bytes between files; NULL means "use pread/pwrite". */
	ssize_t (*copy)(struct ploop_file *src, uint64_t soff, struct ploop_file *dst, uint64_t doff,
			size_t len);
	/* Non-blocking whole-file lock held until close: -EAGAIN when another holder conflicts. */
	int (*lock)(struct ploop_file *f, bool exclusive);
	int (*rename)(const char *from, const char *to);
	int (*link)(const char *from, const char *to);
	int (*unlink)(const char *path);
	int (*sync_dir)(const char *dir);
};

const struct ploop_io_ops *ploop_io_posix(void);
/* Process-wide table used for every file the library opens from now on (NULL: posix). */
void ploop_io_set(const struct ploop_io_ops *ops);
const struct ploop_io_ops *ploop_io_get(void);

/* ---- Sizes and GUIDs ---------------------------------------------------------------------------- */
#define PLOOP_GUID_LEN 38
#define PLOOP_GUID_BUF 39
#define PLOOP_TOP_GUID "{5fbaabe3-6958-40ff-92a7-860e329aab41}"
#define PLOOP_NONE_GUID "{00000000-0000-0000-0000-000000000000}"
#define PLOOP_DESCRIPTOR_NAME "DiskDescriptor.xml"

/* "N[KMGT]" (binary units) or a bare number of 512-byte sectors -> sectors. */
int ploop_parse_size(const char *s, uint64_t *sectors);
/* Accepts a GUID with or without braces, any case; writes the canonical lower-case braced form. */
int ploop_parse_guid(const char *s, char out[PLOOP_GUID_BUF]);
int ploop_new_guid(char out[PLOOP_GUID_BUF]);
bool ploop_cluster_size_valid(uint32_t cluster_sectors);

/* ---- Deltas ------------------------------------------------------------------------------------- */
enum ploop_image_mode {
	PLOOP_MODE_EXPANDED = 0,	/* ploop1: clusters allocated on write */
	PLOOP_MODE_PREALLOCATED,	/* ploop1 with every cluster allocated up front */
	PLOOP_MODE_RAW,			/* plain file of the disk size */
};

struct ploop_create_params {
	uint64_t size_sectors;		/* rounded up to a whole cluster */
	uint32_t cluster_sectors;	/* 0: 2048 (1 MiB) */
	int version;			/* 1 or 2; 0: 2 */
	enum ploop_image_mode mode;
	bool sparse;			/* raw only: leave the file sparse */
	/* For ploop_init_fs: */
	const char *fstype;		/* "ext4" */
	uint32_t fs_blocksize;		/* bytes; 0: 4096 */
	bool no_partition;		/* the filesystem on the whole disk, no GPT (upstream -P) */
};

/* Flags for opening deltas and chains. */
#define PLOOP_OPEN_RDWR 0x1		/* writable (the top delta only, in a chain) */
#define PLOOP_OPEN_ALLOW_DIRTY 0x2	/* accept an image whose dirty marker is set */
#define PLOOP_OPEN_HEADER_ONLY 0x4	/* do not load the BAT */
#define PLOOP_OPEN_NOLOCK 0x8		/* caller already serialises access */
#define PLOOP_OPEN_RAW 0x10		/* a plain raw file, not a ploop delta */
#define PLOOP_OPEN_MARK_DIRTY 0x20	/* set the dirty marker while open (whole-image operations) */

struct ploop_delta;

struct ploop_delta_info {
	int version;			/* 1, 2, or 0 for raw */
	uint64_t size_sectors;		/* virtual size */
	uint32_t cluster_sectors;
	uint32_t bat_entries;		/* m_Size */
	uint32_t bat_clusters;		/* header + BAT area, in clusters */
	uint64_t file_size;
	uint64_t allocated_clusters;	/* BAT entries in use */
	uint32_t disk_in_use;
	uint32_t flags;
};

int ploop_delta_create(const char *path, const struct ploop_create_params *p, struct ploop_error *err);
/* For PLOOP_OPEN_RAW, cluster_sectors and size_sectors describe the raw file (size 0: file size). */
int ploop_delta_open(const char *path, unsigned flags, uint32_t cluster_sectors, uint64_t size_sectors,
		     struct ploop_delta **out, struct ploop_error *err);
/* Flushes pending BAT updates, clears a dirty marker this open set, closes. NULL is a no-op. */
int ploop_delta_close(struct ploop_delta *d, struct ploop_error *err);
void ploop_delta_get_info(const struct ploop_delta *d, struct ploop_delta_info *out);
/* Whether this delta holds virtual cluster @v, and at which byte offset of its file. */
bool ploop_delta_lookup(const struct ploop_delta *d, uint64_t v, uint64_t *file_offset);
/* Grow one delta to @size_sectors (relocating data clusters out of the new BAT area). */
int ploop_delta_grow(struct ploop_delta *d, uint64_t size_sectors, struct ploop_error *err);

/* ---- Chains: a stack of deltas read as one disk --------------------------------------------------- */
struct ploop_chain;

/* @paths base first; only the top is opened writable (with PLOOP_OPEN_RDWR); @raw_base: paths[0] is
 * a plain file. The virtual size is the top's. */
int ploop_chain_open_files(const char *const *paths, int n, bool raw_base, uint32_t raw_cluster_sectors,
			   unsigned flags, struct ploop_chain **out, struct ploop_error *err);
int ploop_chain_close(struct ploop_chain *c, struct ploop_error *err);
uint64_t ploop_chain_size(const struct ploop_chain *c);		/* bytes */
uint32_t ploop_chain_cluster_bytes(const struct ploop_chain *c);
int ploop_chain_depth(const struct ploop_chain *c);
struct ploop_delta *ploop_chain_delta(const struct ploop_chain *c, int level);	/* 0 = base */
const char *ploop_chain_path(const struct ploop_chain *c, int level);
/* Level holding virtual cluster @v (-1: nowhere, reads as zeros) and the byte offset in that file. */
int ploop_chain_lookup(const struct ploop_chain *c, uint64_t v, uint64_t *file_offset);
int ploop_chain_read(struct ploop_chain *c, void *buf, size_t len, uint64_t off, struct ploop_error *err);
/* Writes go to the top delta: in place, into a newly allocated cluster, or by whole-cluster copy up. */
int ploop_chain_write(struct ploop_chain *c, const void *buf, size_t len, uint64_t off,
		      struct ploop_error *err);
/* Makes every completed write durable: data, flush, BAT, flush. */
int ploop_chain_flush(struct ploop_chain *c, struct ploop_error *err);

/* ---- DiskDescriptor.xml ------------------------------------------------------------------------- */
enum ploop_temporary { PLOOP_TEMP_NONE = 0, PLOOP_TEMP, PLOOP_TEMP_ZERO, PLOOP_TEMP_ZERO_SWAP };

struct ploop_image_entry {
	char guid[PLOOP_GUID_BUF];
	char *file;		/* as written in the XML, relative to the descriptor's directory */
	char *path;		/* resolved path */
};

struct ploop_snapshot_entry {
	char guid[PLOOP_GUID_BUF];
	char parent[PLOOP_GUID_BUF];
	enum ploop_temporary temporary;
};

struct ploop_descriptor {
	char *path;		/* the XML file */
	char *dir;		/* its directory */
	uint64_t disk_size;	/* sectors */
	uint32_t cylinders, heads, sectors;
	uint64_t padding;
	uint64_t start, end;
	uint32_t blocksize;	/* cluster size, sectors */
	bool preallocated;
	bool raw;		/* <Type>Plain</Type>: the base is a raw file */
	uint64_t max_delta_size;
	char *encryption_keyid;
	char top_guid[PLOOP_GUID_BUF];
	int n_images;
	struct ploop_image_entry *images;
	int n_snapshots;
	struct ploop_snapshot_entry *snapshots;
};

int ploop_descriptor_read(const char *path, struct ploop_descriptor **out, struct ploop_error *err);
/* Parses XML text; @dir resolves <File> names. Validates everything (see README: rules). */
int ploop_descriptor_parse(const char *xml, size_t len, const char *path, struct ploop_descriptor **out,
			   struct ploop_error *err);
/* Atomic replace: write @path.tmp, fsync, rename, fsync the directory. PLOOP_ERR_FSYNC means only
 * the last step failed: the new descriptor is in place. */
int ploop_descriptor_write(const struct ploop_descriptor *dd, const char *path, struct ploop_error *err);
void ploop_descriptor_free(struct ploop_descriptor *dd);
int ploop_descriptor_find_image(const struct ploop_descriptor *dd, const char *guid);
int ploop_descriptor_find_snapshot(const struct ploop_descriptor *dd, const char *guid);
/* The image whose <File> is @file (a name in the descriptor's directory), or -1. */
int ploop_descriptor_find_file(const struct ploop_descriptor *dd, const char *file);
/* Number of snapshots whose parent is @guid; the first one's index in *first_child (may be NULL). */
int ploop_descriptor_children(const struct ploop_descriptor *dd, const char *guid, int *first_child);
/* Image @im is the raw file of a raw set: its base, wherever the descriptor lists it. */
bool ploop_descriptor_raw_image(const struct ploop_descriptor *dd, int im);
/* Image indexes of the chain ending at @guid (NULL: the top), base first. */
int ploop_descriptor_chain(const struct ploop_descriptor *dd, const char *guid, int idx[], int *n,
			   struct ploop_error *err);
/* Opens the chain ending at @guid (NULL: the top) of a descriptor already read. */
int ploop_descriptor_open_chain(const struct ploop_descriptor *dd, const char *guid, unsigned flags,
				struct ploop_chain **out, struct ploop_error *err);

/* Exclusive (modify) or shared (read) lock of an existing image set: DiskDescriptor.xml.lck beside
 * it. A reader does not create the lock file. */
int ploop_lock_descriptor(const char *dd_path, bool exclusive, int *lock_fd, struct ploop_error *err);
void ploop_unlock_descriptor(int lock_fd);

/* ---- Whole-image operations (offline) -------------------------------------------------------------
 * Each takes the descriptor lock, first completes any operation a crash interrupted (merges of
 * <Temporary/> snapshots, v1<->v2 conversion), and leaves the set consistent at every instant. */
int ploop_init_image(const char *delta_path, const struct ploop_create_params *p, struct ploop_error *err);
/* ploop_init_image, then a GPT (unless p->no_partition) and mkfs through a mounted device, as
 * upstream init -t ext4. A failure removes what was made. */
int ploop_init_fs(const char *delta_path, const struct ploop_create_params *p, struct ploop_error *err);
/* Resizes disk, partition and filesystem: grows online when mounted (or mounts the device to do
 * it); shrinks offline only (resize2fs down, then the image loses the clusters past the end). */
int ploop_resize(const char *dd_path, uint64_t size_sectors, struct ploop_error *err);
/* The image part of shrinking: a single-delta image drops every cluster past @size_sectors. */
int ploop_shrink(const char *dd_path, uint64_t size_sectors, struct ploop_error *err);
/* Gives free space back: unused clusters of the top leave the BAT and the file, tail clusters move
 * into holes and the file is truncated. Mounted: FITRIM through the filesystem, then the server;
 * unmounted: the ext4 block bitmap read through the chain. *freed (may be NULL): bytes the file lost. */
int ploop_compact(const char *dd_path, uint64_t *freed, struct ploop_error *err);
int ploop_recover(const char *dd_path, struct ploop_error *err);
int ploop_snapshot(const char *dd_path, const char *guid, char out_guid[PLOOP_GUID_BUF],
		   struct ploop_error *err);
/* Merge @guid (NULL: the top) into its parent; @all: every snapshot of the top's chain into the base. */
int ploop_snapshot_merge(const char *dd_path, const char *guid, bool all, struct ploop_error *err);
int ploop_snapshot_delete(const char *dd_path, const char *guid, bool *marked_temporary, struct ploop_error *err);
/* Replace the top with a fresh delta over @guid; @keep_top keeps the old top as a snapshot. */
int ploop_snapshot_switch(const char *dd_path, const char *guid, bool keep_top, struct ploop_error *err);
/* @path: a DiskDescriptor.xml (grows the top delta and the descriptor) or a single delta file
 * (@raw: a plain raw file). */
int ploop_grow(const char *path, bool raw, uint64_t size_sectors, struct ploop_error *err);
/* Whether @path names a DiskDescriptor.xml (it ends in ".xml", as upstream decides) rather than an
 * image file. */
bool ploop_is_descriptor_path(const char *path);
int ploop_convert_version(const char *dd_path, int version, struct ploop_error *err);
int ploop_convert_mode(const char *dd_path, enum ploop_image_mode mode, struct ploop_error *err);
int ploop_restore_descriptor(const char *dir, const char *delta_path, bool raw, uint32_t cluster_sectors,
			     struct ploop_error *err);
/* Merge an explicit list of files, top first and base last, into the base; nothing is removed. */
int ploop_merge_files(const char *const *paths_top_first, int n, bool raw_base, uint32_t raw_cluster_sectors,
		      struct ploop_error *err);

/* ---- Check and repair (upstream `ploop check`) ----------------------------------------------------- */
#define PLOOP_CHECK_FORCE 0x1		/* -f: check a clean image too */
#define PLOOP_CHECK_HARD 0x2		/* -F: also apply fixes that drop data (bad BAT entries) */
#define PLOOP_CHECK_CLUSTERS 0x4	/* -c: duplicate and overlapping clusters */
#define PLOOP_CHECK_RDONLY 0x8		/* -r: never write */
#define PLOOP_CHECK_DROP_INUSE 0x10	/* -d: clear the dirty marker */
#define PLOOP_CHECK_RAW 0x20		/* -R: a raw image, only its size is checked */

struct ploop_check_params {
	unsigned flags;
	uint32_t raw_cluster_sectors;	/* -b for -R */
	void (*report)(void *ctx, const char *msg);	/* one line per finding (may be NULL) */
	void *ctx;
};

int ploop_check_delta(const char *path, const struct ploop_check_params *p, struct ploop_error *err);
/* Every delta of the chain (up to @guid, NULL: top), lower ones read-only; -c and -d forced. */
int ploop_check_descriptor(const char *dd_path, const char *guid, const struct ploop_check_params *p,
			   struct ploop_error *err);

/* ---- Allocation map, export and import --------------------------------------------------------------- */
struct ploop_extent {
	uint64_t start;		/* virtual byte offset */
	uint64_t length;
	int level;		/* delta holding it (0 = base), -1: unallocated, reads as zeros */
	uint64_t file_offset;	/* in that delta's file */
};

/* Calls @fn for maximal runs of clusters held by the same delta at consecutive file offsets. */
int ploop_chain_map(struct ploop_chain *c, int (*fn)(void *ctx, const struct ploop_extent *e), void *ctx,
		    struct ploop_error *err);
/* Writes the virtual disk to @fd; holes are skipped when @fd is seekable (the output is truncated
 * to the disk size) and written as zeros otherwise. */
int ploop_export(struct ploop_chain *c, int fd, struct ploop_error *err);
/* Creates a new image at @delta_path (+ DiskDescriptor.xml beside it) from a raw stream of
 * @size_bytes (0: the size of a regular file @fd), storing only clusters that are not all zero. */
int ploop_import(int fd, uint64_t size_bytes, const char *delta_path, const struct ploop_create_params *p,
		 struct ploop_error *err);

/* ---- Mounted image sets --------------------------------------------------------------------------
 * A mounted image set is served by its own process (ploopd): the chain as a file through FUSE, a
 * loop device over it, and optionally the filesystem inside mounted somewhere. Each server has a run
 * directory (/run/ploop/ID) with its state and a root-only control socket. */
#define PLOOP_RUN_DIR "/run/ploop"

struct ploop_instance {
	char id[17];
	int pid;
	bool alive;			/* the server answers on its socket */
	bool ro;
	char descriptor[4096];
	char guid[PLOOP_GUID_BUF];	/* empty: the read-write top */
	char device[64];		/* /dev/loopN */
	char part[80];			/* the device holding the filesystem */
	char mount[4096];		/* where it is mounted, or empty */
	char fstype[32];		/* with which type and options, if the server mounted it */
	char options[1024];
	char file[4096];		/* the FUSE file the loop device reads; kernel: the top delta */
	bool kernel;			/* served by the dm-ploop kernel target, not a server */
	/* The file of the chain's base delta: what identifies the set, whatever its path is now (online
	 * snapshots, merges and deletes change the top, never the base). 0: not recorded. */
	uint64_t base_dev, base_ino;
};

struct ploop_mount_params {
	const char *descriptor;
	const char *guid;		/* NULL: the top; else a snapshot (read-only) */
	bool ro;
	const char *mount_dir;		/* NULL: attach the device only */
	const char *fstype;		/* NULL: ext4 */
	const char *options;		/* filesystem mount options, or NULL */
	bool kernel;			/* map the chain with the dm-ploop target (device only) */
};

/* The server's path: $PLOOPD, else ploopd beside the running program, else ploopd in $PATH. */
int ploop_mount(const struct ploop_mount_params *p, struct ploop_instance *out, struct ploop_error *err);
/* Unmounts the filesystem, detaches the device, flushes and stops the server. A dead server's
 * leftovers (mounts, device, run directory) are cleaned up instead. */
int ploop_umount(const struct ploop_instance *inst, struct ploop_error *err);
/* The instance serving @descriptor (@guid NULL: its read-write top): 0, or PLOOP_ERR_DEV_NOT_MOUNTED.
 * It is the one whose served top is the file @descriptor names, wherever it was mounted from. */
int ploop_find_instance(const char *descriptor, const char *guid, struct ploop_instance *out,
			struct ploop_error *err);
/* The instance whose device, partition or mount point is @what. */
int ploop_find_instance_by(const char *what, struct ploop_instance *out, struct ploop_error *err);
int ploop_list_instances(int (*fn)(void *ctx, const struct ploop_instance *inst), void *ctx,
			 struct ploop_error *err);
/* One command to a running server; the reply line (after "ok ") in @reply. */
int ploop_instance_call(const struct ploop_instance *inst, const char *cmd, char *reply, size_t len,
			struct ploop_error *err);

#ifdef __cplusplus
}
#endif
#endif
