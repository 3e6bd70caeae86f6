// SPDX-License-Identifier: GPL-2.0
/*
 * dm-ploop: serves a chain of ploop v2 deltas (OpenVZ image format) as a
 * device-mapper target.  Table line:
 *
 *   <start> <len> ploop <cluster_log> [raw@]<path0> <path1> ... <pathN>
 *
 * path0 is the base, pathN the top.  Only the base may be a raw file.  The
 * top is opened read-write when the table is, every lower delta read-only.
 * The files are opened by path in the context of the process that loads the
 * table and accessed through their filesystem (vfs_iter_read/write), so that
 * the top can grow as clusters are allocated.  All I/O runs in one ordered
 * worker, which keeps the cluster map free of races: a write to a cluster of
 * a lower delta copies the whole cluster up into a freshly appended cluster
 * of the top, syncs the data, and only then writes the BAT entry.  A flush or
 * FUA from above syncs the top file.
 *
 * Messages: "merge" copies every cluster of delta N-1 (the one below the top)
 * into the top and drops that delta from the chain.  One merge runs at a
 * time, never on a suspended device; a suspend interrupts a running one.
 */
#include <linux/module.h>
#include <linux/init.h>
#include <linux/bio.h>
#include <linux/device-mapper.h>
#include <linux/errseq.h>
#include <linux/fs.h>
#include <linux/file.h>
#include <linux/mutex.h>
#include <linux/sched/mm.h>
#include <linux/slab.h>
#include <linux/uio.h>
#include <linux/vmalloc.h>
#include <linux/workqueue.h>

#include "ploop_format.h"

#define DM_MSG_PREFIX "ploop"

/* Clusters merged per batch: one data sync, then their BAT entries. */
#define PLOOP_MERGE_BATCH 64
/* BAT entries read per chunk at load time (1 MiB). */
#define PLOOP_BAT_CHUNK (1U << 18)
/* The map holds 5 bytes per cluster in arrays kvmalloc can allocate. */
#define PLOOP_MAX_MAP_CLUSTERS ((u64)INT_MAX / sizeof(u32))

struct ploop_delta {
	struct file *file;
	char *path;
	bool raw;
	u32 l2_size;		/* virtual clusters this delta describes */
	u64 file_clusters;	/* file size in clusters (rounded down) */
};

struct ploop_target {
	struct dm_target *ti;
	unsigned int cluster_log;	/* log2 of the cluster size in sectors */
	u64 cluster_bytes;
	bool writable;
	int nr_deltas;
	struct ploop_delta deltas[PLOOP_MAX_CHAIN];
	u32 l2_size;		/* virtual clusters of the top and of the map */
	u32 *map_phys;		/* per virtual cluster: cluster in its delta */
	u8 *map_level;		/* ... and which delta holds it */
	u64 next_free;		/* next cluster to append to the top */
	u32 hdr_flags;		/* top header m_Flags as on disk */
	void *cluster_buf;	/* one cluster, for copy-up and merge */
	struct mutex lock;	/* map, next_free, cluster_buf, deltas */
	struct mutex merge_lock;	/* held by the one running merge */
	bool suspending;	/* set from presuspend to resume */
	bool loaded;		/* the map was built once (ctr succeeded) */
	bool map_stale;		/* build the map again at resume */
	spinlock_t bio_lock;
	struct bio_list bios;
	struct workqueue_struct *wq;
	struct work_struct work;
	atomic64_t nr_reads;
	atomic64_t nr_writes;
	atomic64_t nr_allocs;
	atomic64_t nr_cows;
	atomic64_t nr_flushes;
	int merge_error;
	/*
	 * The top's writeback errors as the flushes from above saw them.  Our
	 * own syncs (an allocation's, a merge's, suspend's, a FUA's) consume
	 * the error of the file: the next flush must still report it.
	 */
	errseq_t flush_err;
};

static int ploop_read_at(struct file *file, void *buf, size_t len, loff_t pos)
{
	ssize_t r = kernel_read(file, buf, len, &pos);

	if (r < 0)
		return r;
	if (r < len)
		memset(buf + r, 0, len - r);
	return 0;
}

static int ploop_write_at(struct file *file, const void *buf, size_t len,
			  loff_t pos)
{
	ssize_t r = kernel_write(file, buf, len, &pos);

	if (r < 0)
		return r;
	return r == len ? 0 : -ENOSPC;
}

/*
 * Gives back what a failed append added to the top (a short write, or a
 * fallocate that failed half-way): the file stays a whole number of
 * clusters, and next_free, not advanced, matches it.
 */
static void ploop_truncate(struct file *file, loff_t size)
{
	long r;

	if (i_size_read(file_inode(file)) <= size)
		return;
	r = vfs_truncate(&file->f_path, size);
	if (r)
		DMERR("cannot truncate the top back to %lld: %ld",
		      (long long)size, r);
}

/* Validates a delta's header against the chain and fills in @d. */
static int ploop_check_header(struct ploop_target *pt, struct ploop_delta *d,
			      struct ploop_pvd_header *hdr, bool top,
			      char **error)
{
	u32 sectors = le32_to_cpu(hdr->m_Sectors);
	u32 entries = le32_to_cpu(hdr->m_Size);
	u64 size = le64_to_cpu(hdr->m_SizeInSectors);
	u64 fbo = le32_to_cpu(hdr->m_FirstBlockOffset);
	u64 bat_clusters;

	if (!memcmp(hdr->m_Sig, PLOOP_SIG_V1, PLOOP_SIG_LEN)) {
		*error = "v1 deltas are not supported (convert to v2)";
		return -EOPNOTSUPP;
	}
	if (memcmp(hdr->m_Sig, PLOOP_SIG_V2, PLOOP_SIG_LEN)) {
		*error = "Not a ploop v2 delta (bad signature)";
		return -EINVAL;
	}
	if (le32_to_cpu(hdr->m_Type) != PLOOP_IMAGE_TYPE) {
		*error = "Wrong image type";
		return -EINVAL;
	}
	if (sectors != (1U << pt->cluster_log)) {
		*error = "Cluster size differs from the table's cluster_log";
		return -EINVAL;
	}
	if (!entries || size / sectors != entries) {
		*error = "Inconsistent size fields";
		return -EINVAL;
	}
	bat_clusters = ploop_bat_clusters(entries, pt->cluster_bytes);
	if (fbo != bat_clusters * sectors) {
		*error = "Custom FirstBlockOffset is not supported";
		return -EINVAL;
	}
	if (top && pt->writable && !pt->loaded &&
	    le32_to_cpu(hdr->m_DiskInUse) != PLOOP_DISK_IN_USE) {
		*error = "Writable top delta is not marked in use";
		return -ENOLCK;
	}
	if (le32_to_cpu(hdr->m_Flags) & PLOOP_FLAG_FMT_CONVERT) {
		*error = "Delta is in the middle of a format conversion";
		return -EBUSY;
	}
	if (d->file_clusters < bat_clusters) {
		*error = "Delta file is shorter than its BAT";
		return -EINVAL;
	}
	d->l2_size = entries;
	return 0;
}

/*
 * Reads a delta's BAT and records its clusters in the map wherever no upper
 * delta did.  The top's entries are also checked for duplicates.  The map
 * was sized by an earlier read of the top: a top whose size differs now
 * (written meanwhile) is refused, so that the map is never indexed beyond
 * its end.
 */
static int ploop_load_delta(struct ploop_target *pt, int level, char **error)
{
	struct ploop_delta *d = &pt->deltas[level];
	bool top = level == pt->nr_deltas - 1;
	struct ploop_pvd_header *hdr;
	unsigned long *used = NULL;
	u64 bat_clusters, max_used;
	loff_t size = i_size_read(file_inode(d->file));
	__le32 *bat = NULL;
	u32 v, n;
	int r;

	d->file_clusters = size >> (pt->cluster_log + SECTOR_SHIFT);
	if (d->raw) {
		/* A partial last cluster would read as zeros and copy up so. */
		if (size & (pt->cluster_bytes - 1)) {
			*error = "Raw delta size is not a multiple of the cluster";
			return -EPROTO;
		}
		d->l2_size = min_t(u64, d->file_clusters, U32_MAX);
		if (top && d->l2_size != pt->l2_size) {
			*error = "Top delta size changed while loading";
			return -EAGAIN;
		}
		if (top)
			pt->next_free = d->file_clusters;
		n = min(d->l2_size, pt->l2_size);
		for (v = 0; v < n; v++) {
			if (pt->map_level[v] != U8_MAX)
				continue;
			pt->map_level[v] = level;
			pt->map_phys[v] = v;
		}
		return 0;
	}

	hdr = kmalloc(sizeof(*hdr), GFP_KERNEL);
	if (!hdr)
		return -ENOMEM;
	r = ploop_read_at(d->file, hdr, sizeof(*hdr), 0);
	if (r) {
		*error = "Cannot read delta header";
		goto out;
	}
	r = ploop_check_header(pt, d, hdr, top, error);
	if (r)
		goto out;
	if (size & (pt->cluster_bytes - 1)) {
		*error = "Delta file size is not a multiple of the cluster";
		r = -EPROTO;
		goto out;
	}
	if (top && d->l2_size != pt->l2_size) {
		*error = "Top delta size changed while loading";
		r = -EAGAIN;
		goto out;
	} else if (top) {
		pt->hdr_flags = le32_to_cpu(hdr->m_Flags);
	} else if (d->l2_size > pt->l2_size) {
		*error = "A lower delta is larger than the top";
		r = -EINVAL;
		goto out;
	}

	bat_clusters = ploop_bat_clusters(d->l2_size, pt->cluster_bytes);
	bat = kvmalloc_array(PLOOP_BAT_CHUNK, sizeof(*bat), GFP_KERNEL);
	if (!bat) {
		r = -ENOMEM;
		goto out;
	}
	if (d->file_clusters > U32_MAX) {
		*error = "Delta file is too large";
		r = -EFBIG;
		goto out;
	}
	if (top) {
		/*
		 * One bit per data cluster of the file; a sparse file can be
		 * huge, so it is bounded as the map is (at most 64 MiB).
		 */
		u64 data = d->file_clusters - bat_clusters;

		if (data > PLOOP_MAX_MAP_CLUSTERS) {
			*error = "Top delta file has too many clusters";
			r = -EFBIG;
			goto out;
		}
		used = kvcalloc(BITS_TO_LONGS(data + 1), sizeof(long),
				GFP_KERNEL | __GFP_NOWARN);
		if (!used) {
			*error = "Cannot allocate the used-cluster bitmap";
			r = -ENOMEM;
			goto out;
		}
	}
	max_used = bat_clusters;
	for (v = 0; v < d->l2_size; v++) {
		u32 e;

		if (v % PLOOP_BAT_CHUNK == 0) {
			n = min(d->l2_size - v, PLOOP_BAT_CHUNK);
			r = ploop_read_at(d->file, bat, n * sizeof(*bat),
					  sizeof(*hdr) + (loff_t)v * 4);
			if (r) {
				*error = "Cannot read BAT";
				goto out;
			}
		}
		e = le32_to_cpu(bat[v % PLOOP_BAT_CHUNK]);

		if (e == PLOOP_BAT_HOLE)
			continue;
		if (e == PLOOP_BAT_INVALID || e < bat_clusters ||
		    e >= d->file_clusters) {
			*error = "BAT entry points outside the data area";
			r = -EINVAL;
			goto out;
		}
		if (used) {
			if (test_and_set_bit(e - bat_clusters, used)) {
				*error = "Two BAT entries share a cluster";
				r = -EINVAL;
				goto out;
			}
			max_used = max_t(u64, max_used, (u64)e + 1);
		}
		if (pt->map_level[v] != U8_MAX)
			continue;
		pt->map_level[v] = level;
		pt->map_phys[v] = e;
	}
	if (top)
		pt->next_free = max_t(u64, max_used, d->file_clusters);
	r = 0;
out:
	kvfree(used);
	kvfree(bat);
	kfree(hdr);
	return r;
}

/* Builds the map from the BATs of the chain, top first. */
static int ploop_load_map(struct ploop_target *pt, char **error)
{
	int i, r;

	memset(pt->map_level, U8_MAX, pt->l2_size);
	for (i = pt->nr_deltas - 1; i >= 0; i--) {
		*error = "Cannot load delta";
		r = ploop_load_delta(pt, i, error);
		if (r) {
			DMERR("%s: %s (%d)", pt->deltas[i].path, *error, r);
			return r;
		}
	}
	return 0;
}

static void ploop_free_deltas(struct ploop_target *pt)
{
	int i;

	for (i = 0; i < pt->nr_deltas; i++) {
		if (pt->deltas[i].file)
			fput(pt->deltas[i].file);
		kfree(pt->deltas[i].path);
	}
	pt->nr_deltas = 0;
}

static void ploop_destroy(struct ploop_target *pt)
{
	if (pt->wq)
		destroy_workqueue(pt->wq);
	ploop_free_deltas(pt);
	kvfree(pt->map_phys);
	kvfree(pt->map_level);
	vfree(pt->cluster_buf);
	kfree(pt);
}

static void ploop_work(struct work_struct *work);

static int ploop_ctr(struct dm_target *ti, unsigned int argc, char **argv)
{
	struct ploop_target *pt;
	struct inode *top_inode;
	unsigned int cluster_log;
	u64 max_clusters;
	char dummy;
	int i, j, r;

	if (argc < 2) {
		ti->error = "Need <cluster_log> <base> ... <top>";
		return -EINVAL;
	}
	if (argc - 1 > PLOOP_MAX_CHAIN) {
		ti->error = "Too many deltas";
		return -EINVAL;
	}
	if (sscanf(argv[0], "%u%c", &cluster_log, &dummy) != 1 ||
	    cluster_log < ilog2(PLOOP_MIN_CLUSTER_SECTORS) ||
	    cluster_log > ilog2(PLOOP_MAX_CLUSTER_SECTORS)) {
		ti->error = "Invalid cluster_log";
		return -EINVAL;
	}

	pt = kzalloc(sizeof(*pt), GFP_KERNEL);
	if (!pt) {
		ti->error = "Cannot allocate context";
		return -ENOMEM;
	}
	pt->ti = ti;
	pt->cluster_log = cluster_log;
	pt->cluster_bytes = (u64)SECTOR_SIZE << cluster_log;
	pt->writable = dm_table_get_mode(ti->table) & FMODE_WRITE;
	mutex_init(&pt->lock);
	mutex_init(&pt->merge_lock);
	spin_lock_init(&pt->bio_lock);
	bio_list_init(&pt->bios);
	INIT_WORK(&pt->work, ploop_work);
	atomic64_set(&pt->nr_reads, 0);
	atomic64_set(&pt->nr_writes, 0);
	atomic64_set(&pt->nr_allocs, 0);
	atomic64_set(&pt->nr_cows, 0);
	atomic64_set(&pt->nr_flushes, 0);

	for (i = 1; i < argc; i++) {
		struct ploop_delta *d = &pt->deltas[pt->nr_deltas];
		bool top = i == argc - 1;
		const char *path = argv[i];
		int flags = O_LARGEFILE;

		if (!strncmp(path, "raw@", 4)) {
			if (i != 1) {
				ti->error = "Only the base delta may be raw";
				r = -EINVAL;
				goto bad;
			}
			d->raw = true;
			path += 4;
		}
		flags |= (top && pt->writable) ? O_RDWR : O_RDONLY;
		d->path = kstrdup(path, GFP_KERNEL);
		if (!d->path) {
			r = -ENOMEM;
			goto bad;
		}
		pt->nr_deltas++;
		d->file = filp_open(path, flags, 0);
		if (IS_ERR(d->file)) {
			r = PTR_ERR(d->file);
			d->file = NULL;
			ti->error = "Cannot open delta";
			goto bad;
		}
		if (!S_ISREG(file_inode(d->file)->i_mode)) {
			ti->error = "Delta is not a regular file";
			r = -EINVAL;
			goto bad;
		}
		for (j = 0; j < pt->nr_deltas - 1; j++) {
			if (file_inode(pt->deltas[j].file) ==
			    file_inode(d->file)) {
				ti->error = "A delta appears twice in the chain";
				r = -EINVAL;
				goto bad;
			}
		}
	}

	/* The top's header decides the size of the map. */
	{
		struct ploop_delta *top = &pt->deltas[pt->nr_deltas - 1];
		struct ploop_pvd_header hdr;
		loff_t size = i_size_read(file_inode(top->file));

		if (top->raw) {
			max_clusters = size >> (cluster_log + SECTOR_SHIFT);
		} else {
			r = ploop_read_at(top->file, &hdr, sizeof(hdr), 0);
			if (r) {
				ti->error = "Cannot read top header";
				goto bad;
			}
			max_clusters = le32_to_cpu(hdr.m_Size);
			if (le32_to_cpu(hdr.m_Sectors) != (1U << cluster_log)) {
				ti->error = "Cluster size differs from the table's cluster_log";
				r = -EINVAL;
				goto bad;
			}
		}
		if (!max_clusters || max_clusters > U32_MAX) {
			ti->error = "Invalid top delta size";
			r = -EINVAL;
			goto bad;
		}
		if (max_clusters > PLOOP_MAX_MAP_CLUSTERS) {
			ti->error = "Disk has too many clusters for the map";
			r = -EFBIG;
			goto bad;
		}
		/* Before sizing the map by it: the file must hold that BAT. */
		if (!top->raw &&
		    ploop_bat_clusters(max_clusters, pt->cluster_bytes) *
		    pt->cluster_bytes > size) {
			ti->error = "Delta file is shorter than its BAT";
			r = -EINVAL;
			goto bad;
		}
		pt->l2_size = max_clusters;
	}
	pt->map_phys = kvcalloc(pt->l2_size, sizeof(u32), GFP_KERNEL);
	pt->map_level = kvmalloc(pt->l2_size, GFP_KERNEL);
	pt->cluster_buf = vmalloc(pt->cluster_bytes);
	if (!pt->map_phys || !pt->map_level || !pt->cluster_buf) {
		ti->error = "Cannot allocate the cluster map";
		r = -ENOMEM;
		goto bad;
	}
	r = ploop_load_map(pt, &ti->error);
	if (r)
		goto bad;
	if (ti->len > ((u64)pt->l2_size << cluster_log)) {
		ti->error = "Device is larger than the top delta";
		r = -EINVAL;
		goto bad;
	}

	pt->wq = alloc_workqueue("dm-" DM_MSG_PREFIX, WQ_MEM_RECLAIM, 1);
	if (!pt->wq) {
		ti->error = "Cannot allocate workqueue";
		r = -ENOMEM;
		goto bad;
	}
	r = dm_set_target_max_io_len(ti, 1U << cluster_log);
	if (r) {
		ti->error = "Cannot set max I/O length";
		goto bad;
	}
	top_inode = file_inode(pt->deltas[pt->nr_deltas - 1].file);
	pt->flush_err = errseq_sample(&top_inode->i_mapping->wb_err);
	/*
	 * Another table of this device (a reload without a suspend first) may
	 * be writing the top while we read it: an allocation of its extends the
	 * file before we look and writes its BAT entry after we read that part
	 * of the BAT, and the sizes then agree at resume.  Build the map again
	 * at resume, when that table is suspended and synced.
	 */
	if (atomic_read(&top_inode->i_writecount) > (pt->writable ? 1 : 0))
		pt->map_stale = true;
	ti->num_flush_bios = 1;
	ti->flush_supported = true;
	ti->num_discard_bios = 0;
	ti->private = pt;
	pt->loaded = true;
	return 0;
bad:
	ploop_destroy(pt);
	return r;
}

static void ploop_dtr(struct dm_target *ti)
{
	struct ploop_target *pt = ti->private;

	flush_workqueue(pt->wq);
	if (pt->writable)
		vfs_fsync(pt->deltas[pt->nr_deltas - 1].file, 0);
	ploop_destroy(pt);
}

static inline struct ploop_delta *ploop_top(struct ploop_target *pt)
{
	return &pt->deltas[pt->nr_deltas - 1];
}

/* Transfers the bio's data to or from @file at @pos. */
static int ploop_bio_rw(struct file *file, struct bio *bio, loff_t pos,
			bool write)
{
	unsigned int size = bio->bi_iter.bi_size, nr_bvec = 0;
	struct bvec_iter iter;
	struct iov_iter i;
	struct bio_vec bv;
	ssize_t r;

	bio_for_each_bvec(bv, bio, iter)
		nr_bvec++;
	iov_iter_bvec(&i, write ? ITER_SOURCE : ITER_DEST,
		      __bvec_iter_bvec(bio->bi_io_vec, bio->bi_iter), nr_bvec,
		      size);
	i.iov_offset = bio->bi_iter.bi_bvec_done;
	if (write) {
		file_start_write(file);
		r = vfs_iter_write(file, &i, &pos, 0);
		file_end_write(file);
	} else {
		r = vfs_iter_read(file, &i, &pos, 0);
	}
	if (r < 0)
		return r;
	if (r == size)
		return 0;
	if (write)
		return -ENOSPC;
	/* Short read: past the end of a raw base, which reads as zeros. */
	while (i.count) {
		size_t z = iov_iter_zero(i.count, &i);

		if (!z)
			return -EIO;
	}
	return 0;
}

/* Writes the BAT entry of virtual cluster @v of the top (and clears CIF_Empty). */
static int ploop_write_bat(struct ploop_target *pt, u32 v, u32 phys)
{
	struct file *file = ploop_top(pt)->file;
	__le32 e = cpu_to_le32(phys);
	int r;

	r = ploop_write_at(file, &e, sizeof(e),
			   sizeof(struct ploop_pvd_header) + (loff_t)v * 4);
	if (r || !(pt->hdr_flags & PLOOP_FLAG_EMPTY))
		return r;
	e = cpu_to_le32(pt->hdr_flags & ~PLOOP_FLAG_EMPTY);
	r = ploop_write_at(file, &e, sizeof(e),
			   offsetof(struct ploop_pvd_header, m_Flags));
	/* Cleared in memory only once on disk: a failed write is retried. */
	if (!r)
		pt->hdr_flags &= ~PLOOP_FLAG_EMPTY;
	return r;
}

/*
 * Fills cluster_buf with the current content of virtual cluster @v (zeros
 * when no delta holds it).
 */
static int ploop_read_cluster(struct ploop_target *pt, u32 v)
{
	u8 level = pt->map_level[v];

	if (level == U8_MAX) {
		memset(pt->cluster_buf, 0, pt->cluster_bytes);
		return 0;
	}
	return ploop_read_at(pt->deltas[level].file, pt->cluster_buf,
			     pt->cluster_bytes,
			     (loff_t)pt->map_phys[v] * pt->cluster_bytes);
}

/* Copies the bio's data into cluster_buf at byte offset @off. */
static void ploop_copy_from_bio(struct ploop_target *pt, struct bio *bio,
				u64 off)
{
	struct bvec_iter iter;
	struct bio_vec bv;
	char *dst = pt->cluster_buf + off;

	bio_for_each_segment(bv, bio, iter) {
		memcpy_from_bvec(dst, &bv);
		dst += bv.bv_len;
	}
}

/*
 * A write to a cluster the top does not hold: append a cluster to the top,
 * fill it with the old content (copy-up) overlaid by the bio, make it
 * durable, then point the BAT at it.  A cluster no delta holds is written
 * whole too, zeros around the bio: a cluster left partly unwritten is what
 * ploop 1.15's check calls sparse.
 */
static int ploop_alloc_write(struct ploop_target *pt, struct bio *bio, u32 v,
			     u64 off)
{
	struct file *file = ploop_top(pt)->file;
	loff_t old_size = i_size_read(file_inode(file));
	u64 phys = pt->next_free;
	loff_t pos = phys * pt->cluster_bytes;
	int r;

	if (phys >= U32_MAX)
		return -ENOSPC;
	if (bio->bi_iter.bi_size == pt->cluster_bytes) {
		r = ploop_bio_rw(file, bio, pos, true);
	} else {
		if (pt->map_level[v] != U8_MAX)
			atomic64_inc(&pt->nr_cows);
		r = ploop_read_cluster(pt, v);
		if (!r) {
			ploop_copy_from_bio(pt, bio, off);
			r = ploop_write_at(file, pt->cluster_buf,
					   pt->cluster_bytes, pos);
		}
	}
	if (!r)
		r = vfs_fsync_range(file, pos, pos + pt->cluster_bytes - 1, 1);
	if (r) {
		/* Nothing points at the cluster yet: give it back. */
		ploop_truncate(file, old_size);
		return r;
	}
	/* The cluster is used from now on, even if we fail below (a leak). */
	pt->next_free++;
	r = ploop_write_bat(pt, v, phys);
	if (r)
		return r;
	pt->map_level[v] = pt->nr_deltas - 1;
	pt->map_phys[v] = phys;
	atomic64_inc(&pt->nr_allocs);
	return 0;
}

static void ploop_handle_bio(struct ploop_target *pt, struct bio *bio)
{
	sector_t sector = dm_target_offset(pt->ti, bio->bi_iter.bi_sector);
	u64 v = sector >> pt->cluster_log;
	u64 off = (sector & ((1U << pt->cluster_log) - 1)) << SECTOR_SHIFT;
	struct ploop_delta *top;
	int r = 0;
	u8 level;

	mutex_lock(&pt->lock);
	top = ploop_top(pt);
	if (bio->bi_opf & REQ_PREFLUSH) {
		atomic64_inc(&pt->nr_flushes);
		if (pt->writable) {
			int err;

			r = vfs_fsync(top->file, 1);
			err = errseq_check_and_advance(&top->file->f_mapping->wb_err,
						       &pt->flush_err);
			if (!r)
				r = err;
		}
		if (r || !bio_sectors(bio))
			goto out;
	}
	if (v >= pt->l2_size) {
		r = -EIO;
		goto out;
	}
	level = pt->map_level[v];
	switch (bio_op(bio)) {
	case REQ_OP_READ:
		atomic64_inc(&pt->nr_reads);
		if (level == U8_MAX)
			zero_fill_bio(bio);
		else
			r = ploop_bio_rw(pt->deltas[level].file, bio,
					 (loff_t)pt->map_phys[v] *
					 pt->cluster_bytes + off, false);
		break;
	case REQ_OP_WRITE:
		atomic64_inc(&pt->nr_writes);
		if (!pt->writable)
			r = -EROFS;
		else if (level == pt->nr_deltas - 1)
			r = ploop_bio_rw(top->file, bio,
					 (loff_t)pt->map_phys[v] *
					 pt->cluster_bytes + off, true);
		else
			r = ploop_alloc_write(pt, bio, v, off);
		if (!r && (bio->bi_opf & REQ_FUA))
			r = vfs_fsync(top->file, 1);
		break;
	default:
		r = -EOPNOTSUPP;
	}
out:
	mutex_unlock(&pt->lock);
	if (r && r != -EOPNOTSUPP)
		DMERR_LIMIT("I/O error %d at sector %llu", r,
			    (unsigned long long)sector);
	bio->bi_status = errno_to_blk_status(r);
	bio_endio(bio);
}

static void ploop_work(struct work_struct *work)
{
	struct ploop_target *pt = container_of(work, struct ploop_target, work);
	struct bio_list list;
	unsigned int noio;
	struct bio *bio;

	noio = memalloc_noio_save();
	spin_lock_irq(&pt->bio_lock);
	list = pt->bios;
	bio_list_init(&pt->bios);
	spin_unlock_irq(&pt->bio_lock);
	while ((bio = bio_list_pop(&list)))
		ploop_handle_bio(pt, bio);
	memalloc_noio_restore(noio);
}

/* File I/O may block and recurse into the block layer: always defer it. */
static int ploop_map(struct dm_target *ti, struct bio *bio)
{
	struct ploop_target *pt = ti->private;
	unsigned long flags;

	spin_lock_irqsave(&pt->bio_lock, flags);
	bio_list_add(&pt->bios, bio);
	spin_unlock_irqrestore(&pt->bio_lock, flags);
	queue_work(pt->wq, &pt->work);
	return DM_MAPIO_SUBMITTED;
}

/* Drops delta @level from the chain; nothing in the map may point at it. */
static void ploop_drop_delta(struct ploop_target *pt, int level)
{
	u32 v;

	fput(pt->deltas[level].file);
	kfree(pt->deltas[level].path);
	memmove(&pt->deltas[level], &pt->deltas[level + 1],
		(pt->nr_deltas - level - 1) * sizeof(pt->deltas[0]));
	pt->nr_deltas--;
	memset(&pt->deltas[pt->nr_deltas], 0, sizeof(pt->deltas[0]));
	for (v = 0; v < pt->l2_size; v++)
		if (pt->map_level[v] != U8_MAX && pt->map_level[v] > level)
			pt->map_level[v]--;
}

/*
 * Copies every cluster held by the delta below the top into the top, then
 * drops that delta.  Runs in batches so that I/O keeps flowing; each batch
 * syncs its data before writing its BAT entries.
 */
static int ploop_merge(struct ploop_target *pt)
{
	u32 batch_v[PLOOP_MERGE_BATCH], batch_phys[PLOOP_MERGE_BATCH];
	int lower, top_level, n, i, r = 0;
	unsigned int noio;
	struct file *file;
	u32 v = 0;

	/*
	 * Device-mapper does not serialise messages, and a merge on a
	 * suspended device would change the top under a table loaded
	 * meanwhile: refuse both.  The chain changes only here, so it is
	 * read once.
	 */
	if (!mutex_trylock(&pt->merge_lock)) {
		DMERR("merge refused: a merge is already running");
		return -EBUSY;
	}
	/*
	 * The merge holds pt->lock, which the I/O path needs, across file
	 * I/O that allocates: as in the worker, reclaim must not issue I/O
	 * (to a filesystem on this very device) that would wait for it.
	 */
	noio = memalloc_noio_save();
	mutex_lock(&pt->lock);
	lower = pt->nr_deltas - 2;
	top_level = pt->nr_deltas - 1;
	file = ploop_top(pt)->file;
	if (pt->suspending || dm_suspended(pt->ti))
		r = -EBUSY;
	mutex_unlock(&pt->lock);
	if (r) {
		DMERR("merge refused: the device is suspended");
		goto out;
	}
	if (lower < 0 || !pt->writable) {
		DMERR("merge needs a writable top over at least one delta");
		r = -EINVAL;
		goto out;
	}
	DMINFO("merging %s into %s", pt->deltas[lower].path,
	       pt->deltas[top_level].path);
	while (!r && v < pt->l2_size) {
		u64 first_free;
		loff_t old_size;

		mutex_lock(&pt->lock);
		first_free = pt->next_free;
		old_size = i_size_read(file_inode(file));
		if (pt->suspending) {
			/* What is merged stays merged: the map says so. */
			mutex_unlock(&pt->lock);
			DMERR("merge interrupted by a suspend");
			r = -EINTR;
			break;
		}
		for (n = 0; v < pt->l2_size && n < PLOOP_MERGE_BATCH; v++) {
			u64 phys = pt->next_free;

			if (pt->map_level[v] != lower)
				continue;
			if (phys >= U32_MAX) {
				r = -ENOSPC;
				break;
			}
			r = ploop_read_cluster(pt, v);
			if (!r)
				r = ploop_write_at(file, pt->cluster_buf,
						   pt->cluster_bytes,
						   phys * pt->cluster_bytes);
			if (r)
				break;
			pt->next_free++;
			batch_v[n] = v;
			batch_phys[n++] = phys;
		}
		if (!r && n)
			r = vfs_fsync(file, 1);
		if (r) {
			/* No BAT entry of this batch was written. */
			ploop_truncate(file, old_size);
			pt->next_free = first_free;
			n = 0;
		}
		for (i = 0; !r && i < n; i++) {
			r = ploop_write_bat(pt, batch_v[i], batch_phys[i]);
			if (r)
				break;
			pt->map_level[batch_v[i]] = top_level;
			pt->map_phys[batch_v[i]] = batch_phys[i];
		}
		mutex_unlock(&pt->lock);
		cond_resched();
	}
	if (r) {
		if (r != -EINTR)
			DMERR("merge failed: %d", r);
		pt->merge_error = r;
		goto out;
	}
	mutex_lock(&pt->lock);
	r = vfs_fsync(file, 0);
	if (!r) {
		DMINFO("merged; %s is no longer used", pt->deltas[lower].path);
		ploop_drop_delta(pt, lower);
	}
	mutex_unlock(&pt->lock);
	pt->merge_error = r;
out:
	memalloc_noio_restore(noio);
	mutex_unlock(&pt->merge_lock);
	return r;
}

static int ploop_message(struct dm_target *ti, unsigned int argc, char **argv,
			 char *result, unsigned int maxlen)
{
	struct ploop_target *pt = ti->private;

	if (argc == 1 && !strcasecmp(argv[0], "merge"))
		return ploop_merge(pt);
	DMWARN("unrecognised message '%s'", argc ? argv[0] : "");
	return -EINVAL;
}

static void ploop_status(struct dm_target *ti, status_type_t type,
			 unsigned int status_flags, char *result,
			 unsigned int maxlen)
{
	struct ploop_target *pt = ti->private;
	unsigned int sz = 0;
	int i;

	mutex_lock(&pt->lock);
	switch (type) {
	case STATUSTYPE_INFO:
		DMEMIT("%d v2 %u %s reads=%lld writes=%lld allocs=%lld",
		       pt->nr_deltas, 1U << pt->cluster_log,
		       pt->writable ? "rw" : "ro",
		       (long long)atomic64_read(&pt->nr_reads),
		       (long long)atomic64_read(&pt->nr_writes),
		       (long long)atomic64_read(&pt->nr_allocs));
		DMEMIT(" cows=%lld flushes=%lld merge=%d",
		       (long long)atomic64_read(&pt->nr_cows),
		       (long long)atomic64_read(&pt->nr_flushes),
		       pt->merge_error);
		break;
	case STATUSTYPE_TABLE:
		DMEMIT("%u", pt->cluster_log);
		for (i = 0; i < pt->nr_deltas; i++)
			DMEMIT(" %s%s", pt->deltas[i].raw ? "raw@" : "",
			       pt->deltas[i].path);
		break;
	case STATUSTYPE_IMA:
		DMEMIT_TARGET_NAME_VERSION(ti->type);
		DMEMIT(",cluster_log=%u,deltas=%d;", pt->cluster_log,
		       pt->nr_deltas);
		break;
	}
	mutex_unlock(&pt->lock);
}

/*
 * A running merge stops at its next batch: the suspend waits for the message
 * to return (device-mapper synchronises with it), and nothing may write the
 * top once the device is suspended.
 */
static void ploop_presuspend(struct dm_target *ti)
{
	struct ploop_target *pt = ti->private;

	mutex_lock(&pt->lock);
	pt->suspending = true;
	mutex_unlock(&pt->lock);
}

static void ploop_resume(struct dm_target *ti)
{
	struct ploop_target *pt = ti->private;

	mutex_lock(&pt->lock);
	pt->suspending = false;
	mutex_unlock(&pt->lock);
}

/*
 * This table may have been loaded while another table of the same top was
 * live and allocating (dmsetup reload without a suspend first); that one is
 * suspended and synced now.  All allocations append to the top, so a top
 * longer than this table's next_free was written by someone else: build the
 * map again, or the next allocation would reuse clusters in use.  So does a
 * top another table had open for writing while this one loaded (ctr): its
 * allocation may have been half-way (file extended, BAT entry not yet
 * written) when we read.
 */
static int ploop_preresume(struct dm_target *ti)
{
	struct ploop_target *pt = ti->private;
	struct file *file;
	unsigned int noio;
	char *error;
	int r = 0;

	mutex_lock(&pt->lock);
	file = ploop_top(pt)->file;
	if (!pt->map_stale && i_size_read(file_inode(file)) ==
	    pt->next_free * pt->cluster_bytes)
		goto out;
	pt->map_stale = true;
	noio = memalloc_noio_save();
	r = ploop_load_map(pt, &error);
	memalloc_noio_restore(noio);
	if (!r) {
		pt->map_stale = false;
		DMINFO("%s changed since the table was loaded: map rebuilt",
		       ploop_top(pt)->path);
	}
out:
	mutex_unlock(&pt->lock);
	return r;
}

/* Before a reload reads the chain again, everything must be on disk. */
static void ploop_postsuspend(struct dm_target *ti)
{
	struct ploop_target *pt = ti->private;

	flush_workqueue(pt->wq);
	if (pt->writable)
		vfs_fsync(ploop_top(pt)->file, 0);
}

/* The deltas are files, not devices: there is nothing to iterate. */
static int ploop_iterate_devices(struct dm_target *ti,
				 iterate_devices_callout_fn fn, void *data)
{
	return 0;
}

static void ploop_io_hints(struct dm_target *ti, struct queue_limits *limits)
{
	struct ploop_target *pt = ti->private;

	limits->io_opt = pt->cluster_bytes;
}

static struct target_type ploop_target_type = {
	.name            = "ploop",
	.version         = {1, 0, 0},
	.module          = THIS_MODULE,
	.ctr             = ploop_ctr,
	.dtr             = ploop_dtr,
	.map             = ploop_map,
	.presuspend      = ploop_presuspend,
	.presuspend_undo = ploop_resume,
	.postsuspend     = ploop_postsuspend,
	.preresume       = ploop_preresume,
	.resume          = ploop_resume,
	.status          = ploop_status,
	.message         = ploop_message,
	.iterate_devices = ploop_iterate_devices,
	.io_hints        = ploop_io_hints,
};

static int __init dm_ploop_init(void)
{
	int r = dm_register_target(&ploop_target_type);

	if (r < 0)
		DMERR("register failed %d", r);
	return r;
}

static void __exit dm_ploop_exit(void)
{
	dm_unregister_target(&ploop_target_type);
}

module_init(dm_ploop_init);
module_exit(dm_ploop_exit);

MODULE_DESCRIPTION(DM_NAME " target serving a chain of ploop v2 deltas");
MODULE_LICENSE("GPL");
