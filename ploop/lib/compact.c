/* ploop compact: give the space of deleted files back. Mounted: FITRIM makes the filesystem
 * discard its free blocks (the server drops and punches whole free clusters), then the server
 * moves tail clusters into the holes and truncates. Unmounted: the ext4 block bitmap is read
 * through the chain with libext2fs (loaded on first use), whole free clusters of the top leave it,
 * and the same tail relocation follows. */
#include <dlfcn.h>
#include <endian.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include <ext2fs/ext2fs.h>

#include "internal.h"

/* ---- libext2fs over a chain ---------------------------------------------------------------------- */

static struct {
	errcode_t (*open2)(const char *name, const char *io_options, int flags, int superblock,
			   unsigned int block_size, io_manager manager, ext2_filsys *ret_fs);
	errcode_t (*read_block_bitmap)(ext2_filsys fs);
	int (*test_range2)(ext2fs_block_bitmap bitmap, blk64_t block, unsigned int num);
	errcode_t (*close_free)(ext2_filsys *fs);
} e2;

static int load_ext2fs(struct ploop_error *err)
{
	void *h;

	if (e2.open2)
		return 0;
	h = dlopen("libext2fs.so.2", RTLD_NOW | RTLD_LOCAL);
	if (!h)
		return ploop_fail(err, PLOOP_ERR_SYS, 0, "cannot load libext2fs.so.2 (e2fsprogs): %s", dlerror());
	*(void **)&e2.open2 = dlsym(h, "ext2fs_open2");
	*(void **)&e2.read_block_bitmap = dlsym(h, "ext2fs_read_block_bitmap");
	*(void **)&e2.test_range2 = dlsym(h, "ext2fs_test_block_bitmap_range2");
	*(void **)&e2.close_free = dlsym(h, "ext2fs_close_free");
	if (!e2.open2 || !e2.read_block_bitmap || !e2.test_range2 || !e2.close_free) {
		e2.open2 = NULL;
		return ploop_fail(err, PLOOP_ERR_SYS, 0, "libext2fs.so.2 lacks the functions compact needs");
	}
	return 0;
}

/* The chain and where the filesystem starts in it, for the I/O manager below (one at a time). */
static struct ploop_chain *fs_chain;
static uint64_t fs_offset;

static errcode_t chain_io_open(const char *name, int flags, io_channel *channel);

static errcode_t chain_io_close(io_channel io)
{
	if (--io->refcount > 0)
		return 0;
	free(io->name);
	free(io);
	return 0;
}

static errcode_t chain_io_set_blksize(io_channel io, int blksize)
{
	io->block_size = blksize;
	return 0;
}

static errcode_t chain_io_read64(io_channel io, unsigned long long block, int count, void *data)
{
	struct ploop_error err = { 0 };
	uint64_t len = count < 0 ? (uint64_t)-count : (uint64_t)count * (uint64_t)io->block_size;
	uint64_t off = fs_offset + block * (uint64_t)io->block_size;

	if (off + len > ploop_chain_size(fs_chain))
		return EXT2_ET_SHORT_READ;
	return ploop_chain_read(fs_chain, data, len, off, &err) ? EXT2_ET_SHORT_READ : 0;
}

static errcode_t chain_io_read(io_channel io, unsigned long block, int count, void *data)
{
	return chain_io_read64(io, block, count, data);
}

static errcode_t chain_io_write(io_channel io, unsigned long block, int count, const void *data)
{
	(void)io;
	(void)block;
	(void)count;
	(void)data;
	return EXT2_ET_RO_FILSYS;
}

static errcode_t chain_io_write64(io_channel io, unsigned long long block, int count, const void *data)
{
	return chain_io_write(io, (unsigned long)block, count, data);
}

static errcode_t chain_io_flush(io_channel io)
{
	(void)io;
	return 0;
}

static struct struct_io_manager chain_io_manager = {
	.magic = EXT2_ET_MAGIC_IO_MANAGER,
	.name = "ploop chain",
	.open = chain_io_open,
	.close = chain_io_close,
	.set_blksize = chain_io_set_blksize,
	.read_blk = chain_io_read,
	.write_blk = chain_io_write,
	.flush = chain_io_flush,
	.read_blk64 = chain_io_read64,
	.write_blk64 = chain_io_write64,
};

static errcode_t chain_io_open(const char *name, int flags, io_channel *channel)
{
	io_channel io = calloc(1, sizeof(*io));

	(void)flags;
	if (!io || !(io->name = strdup(name))) {
		free(io);
		return EXT2_ET_NO_MEMORY;
	}
	io->magic = EXT2_ET_MAGIC_IO_CHANNEL;
	io->manager = &chain_io_manager;
	io->block_size = 1024;
	io->refcount = 1;
	*channel = io;
	return 0;
}

/* Byte offset of the filesystem: partition 1 of a GPT written by ploop, or the whole disk. */
static int fs_start(struct ploop_chain *c, uint64_t *off, struct ploop_error *err)
{
	uint8_t sec[512 * 3];
	uint64_t lba;

	*off = 0;
	if (ploop_chain_size(c) < sizeof(sec))
		return 0;
	if (ploop_chain_read(c, sec, sizeof(sec), 0, err))
		return err->status;
	if (memcmp(sec + 512, "EFI PART", 8))
		return 0;
	memcpy(&lba, sec + 512 + 72, 8);	/* the entries' LBA */
	lba = le64toh(lba);
	if (lba != 2)
		return ploop_fail(err, PLOOP_ERR_FORMAT, 0, "partition table not laid out by ploop");
	memcpy(off, sec + 1024 + 32, 8);	/* entry 1: first LBA */
	*off = le64toh(*off) * 512;
	return 0;
}

/* Drops from the top every cluster that holds only blocks the filesystem does not use. */
static int drop_free_clusters(struct ploop_chain *c, uint64_t *dropped, struct ploop_error *err)
{
	struct ploop_delta *top = ploop_chain_delta(c, ploop_chain_depth(c) - 1);
	uint64_t cs = ploop_chain_cluster_bytes(c), fs_bytes, bsz;
	ext2_filsys fs = NULL;
	errcode_t e;

	*dropped = 0;
	if (load_ext2fs(err) || fs_start(c, &fs_offset, err))
		return err->status;
	fs_chain = c;
	e = e2.open2("ploop", NULL, EXT2_FLAG_64BITS, 0, 0, &chain_io_manager, &fs);
	if (e)
		return ploop_fail(err, PLOOP_ERR_FORMAT, 0, "no ext4 filesystem found in the image (libext2fs error %ld)",
				  (long)e);
	if ((fs->super->s_feature_incompat & EXT3_FEATURE_INCOMPAT_RECOVER) || (fs->super->s_state & EXT2_ERROR_FS)) {
		e2.close_free(&fs);
		return ploop_fail(err, PLOOP_ERR_FSCK, 0,
				  "the filesystem needs recovery or has errors: mount it once, or run e2fsck, first");
	}
	e = e2.read_block_bitmap(fs);
	if (e) {
		e2.close_free(&fs);
		return ploop_fail(err, PLOOP_ERR_READ, 0, "cannot read the block bitmap (libext2fs error %ld)", (long)e);
	}
	bsz = fs->blocksize;
	fs_bytes = ((uint64_t)fs->super->s_blocks_count | ((uint64_t)fs->super->s_blocks_count_hi << 32)) * bsz;
	for (uint64_t v = 0; v < top->vclusters; v++) {
		uint64_t foff, start = v * cs, end = start + cs;
		bool free_cluster;

		if (!ploop_delta_lookup(top, v, &foff) || start < fs_offset)
			continue;	/* not ours, or in front of the filesystem (the partition table) */
		if (start - fs_offset >= fs_bytes) {
			/* Past the filesystem: free unless the backup partition table lives there. */
			free_cluster = end + cs <= ploop_chain_size(c) || fs_offset == 0;
		} else if (end - fs_offset > fs_bytes) {
			continue;
		} else {
			free_cluster = e2.test_range2(fs->block_map, (start - fs_offset) / bsz, (unsigned)(cs / bsz));
		}
		if (free_cluster) {
			if (ploop_delta_drop_cluster(top, v, err))
				break;
			(*dropped)++;
		}
	}
	e2.close_free(&fs);
	fs_chain = NULL;
	return err->status;
}

/* ---- compact ------------------------------------------------------------------------------------ */

static int compact_offline(const char *dd_path, uint64_t *freed, struct ploop_error *err)
{
	struct image_set s;
	struct ploop_chain *c = NULL;
	struct ploop_delta *top;
	uint64_t dropped = 0, moved = 0, before;

	if (ploop_set_open(&s, dd_path, err))
		return err->status;
	if (ploop_descriptor_open_chain(s.dd, NULL, PLOOP_OPEN_RDWR | PLOOP_OPEN_MARK_DIRTY, &c, err))
		goto out;
	top = ploop_chain_delta(c, ploop_chain_depth(c) - 1);
	if (top->raw) {
		ploop_fail(err, PLOOP_ERR_PARAM, 0, "%s: a raw image cannot be compacted", dd_path);
		goto out;
	}
	before = top->file_size;
	if (drop_free_clusters(c, &dropped, err) || ploop_delta_compact(top, &moved, err))
		goto out;
	PLOG("compact: %" PRIu64 " free clusters dropped, %" PRIu64 " moved", dropped, moved);
	if (freed)
		*freed = before - top->file_size;
out:
	ploop_chain_close(c, err);
	ploop_set_release(&s);
	return err->status;
}

/* Whether the served top has a parent. */
static int has_snapshots(const char *dd_path, bool *yes, struct ploop_error *err)
{
	struct ploop_descriptor *dd = NULL;
	int idx[PLOOP_MAX_CHAIN], n = 0;

	if (ploop_descriptor_read(dd_path, &dd, err) || ploop_descriptor_chain(dd, NULL, idx, &n, err)) {
		ploop_descriptor_free(dd);
		return err->status;
	}
	ploop_descriptor_free(dd);
	*yes = n > 1;
	return 0;
}

/*
 * Mounted: FITRIM makes ext4 discard its free blocks, and the server punches whole clusters the
 * top holds out of its file; then tail clusters move into the holes. With snapshots nothing is
 * given back, as with upstream's dm-ploop (discard on a single delta only): the loop device sends a
 * write-zeroes as the same punch as a discard, so what a snapshot holds must read back as zeros and
 * the server writes them into the top - trimming would grow the image. Unmounted, compact works
 * from the ext4 block bitmap instead and needs no discard.
 */
static int compact_online(const struct ploop_instance *in, uint64_t *freed, struct ploop_error *err)
{
	char dir[4096], reply[256];
	unsigned long long before = 0, after = 0;
	bool snapshots = false;

	if (has_snapshots(in->descriptor, &snapshots, err))
		return err->status;
	if (snapshots) {
		PNOTICE("%s has snapshots: nothing is given back while it is mounted (merge them, or compact it "
		     "unmounted)", in->descriptor);
		return 0;
	}
	switch (ploop_mounted_at(in, dir, sizeof(dir))) {
	case PLOOP_MOUNT_COVERED:
		/* FITRIM where ours is what shows: at a directory with another filesystem mounted over
		 * it, that one would be trimmed. */
		return ploop_fail(err, PLOOP_ERR_UMOUNT_BUSY, 0,
				  "%s: another filesystem is mounted over the filesystem of %s: cannot trim it", dir,
				  in->part);
	case PLOOP_MOUNT_SHOWS: {
		struct fstrim_range range = { .start = 0, .len = UINT64_MAX, .minlen = 0 };
		struct stat dev, at;
		int fd;

		fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		/* Still ours, once open (unmounted since it was found, the directory is one of the
		 * filesystem below, which must not be trimmed): else nothing to trim, as unmounted. */
		if (fd >= 0 && (stat(in->part, &dev) || fstat(fd, &at) || at.st_dev != dev.st_rdev)) {
			close(fd);
			return ploop_fail(err, PLOOP_ERR_UMOUNT_BUSY, 0,
					  "%s: the filesystem of %s was unmounted meanwhile: not trimmed, run compact again",
					  dir, in->part);
		}
		/* Blocks freed in a transaction not yet committed are not free to FITRIM: commit first. */
		if (fd < 0 || syncfs(fd) || ioctl(fd, FITRIM, &range)) {
			int e = errno;

			if (fd >= 0)
				close(fd);
			return ploop_fail(err, PLOOP_ERR_SYS, e, "%s: FITRIM", dir);
		}
		close(fd);
		break;
	}
	case PLOOP_NOT_MOUNTED:
		break;
	}
	if (ploop_instance_call(in, "compact", reply, sizeof(reply), err))
		return err->status;
	sscanf(reply, "moved=%*u before=%llu after=%llu", &before, &after);
	if (freed)
		*freed = before > after ? before - after : 0;
	return 0;
}

int ploop_compact(const char *dd_path, uint64_t *freed, struct ploop_error *err)
{
	struct ploop_instance in;
	struct ploop_error none = { 0 };

	if (freed)
		*freed = 0;
	if (!ploop_find_instance(dd_path, NULL, &in, &none) && in.alive)
		return compact_online(&in, freed, err);
	return compact_offline(dd_path, freed, err);
}
