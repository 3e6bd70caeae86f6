/* Whole-image operations on a descriptor: init, snapshot, merge, delete, switch, grow,
 * restore-descriptor and file-list merge, with recovery of operations a crash interrupted.
 * Every change is ordered so that the descriptor on disk always names a consistent chain. */
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <sys/stat.h>

#include "internal.h"

void ploop_set_release(struct image_set *s)
{
	ploop_descriptor_free(s->dd);
	ploop_unlock_descriptor(s->lock_fd);
	s->dd = NULL;
	s->lock_fd = -1;
}

static int reload(struct image_set *s, const char *dd_path, struct ploop_error *err)
{
	ploop_descriptor_free(s->dd);
	s->dd = NULL;
	return ploop_descriptor_read(dd_path, &s->dd, err);
}

/* Every image of the set is a ploop delta (or the raw base) with the descriptor's cluster size.
 * A descriptor without <Blocksize> or <Disk_size> (both optional upstream) gets them from the images. */
static int validate_images(struct ploop_descriptor *dd, struct ploop_error *err)
{
	int top = ploop_descriptor_find_image(dd, dd->top_guid);

	for (int i = 0; i < dd->n_images; i++) {
		struct ploop_delta *d;

		if (ploop_descriptor_raw_image(dd, i))
			continue;
		if (ploop_delta_open(dd->images[i].path, PLOOP_OPEN_HEADER_ONLY | PLOOP_OPEN_ALLOW_DIRTY | PLOOP_OPEN_NOLOCK,
				     0, 0, &d, err))
			return err->status;
		if (!dd->blocksize)
			dd->blocksize = d->cluster_sectors;
		if (!dd->disk_size && i == top) {
			dd->disk_size = dd->end = d->size_sectors;
		}
		if (dd->blocksize && d->cluster_sectors != dd->blocksize)
			ploop_fail(err, PLOOP_ERR_DESCRIPTOR, 0,
				   "%s: cluster size %" PRIu32 " differs from Blocksize %" PRIu32 " in %s", d->path,
				   d->cluster_sectors, dd->blocksize, dd->path);
		ploop_delta_close(d, NULL);
		if (err->status)
			return err->status;
	}
	return 0;
}

/* The running server of the image set's top, if there is one. */
static bool mounted(const char *dd_path, struct ploop_instance *in)
{
	struct ploop_error e = { 0 };

	return !ploop_find_instance(dd_path, NULL, in, &e) && in->alive;
}

/* Locks, recovers interrupted operations, reads; the old top-GUID form becomes upstream's fixed one. */
int ploop_set_open(struct image_set *s, const char *dd_path, struct ploop_error *err)
{
	struct ploop_instance in;

	s->dd = NULL;
	s->lock_fd = -1;
	{
		struct ploop_error e = { 0 };

		/* (a kernel mapping counts as not mounted while its device is suspended for an offline
		 * operation of ours: see kernel_call) */
		if (!ploop_find_instance(dd_path, NULL, &in, &e) && (in.alive || !in.kernel))
			return ploop_fail(err, PLOOP_ERR_BUSY, 0, "%s %s (%s): %s", dd_path,
					  in.alive ? "is mounted" : "was mounted by a server that is gone", in.device,
					  in.alive ? "this needs it unmounted (ploop umount)"
						   : "ploop umount cleans up after it");
	}
	if (ploop_lock_descriptor(dd_path, true, &s->lock_fd, err))
		return err->status;
	s->rec.n = 0;
	if (ploop_recover_locked(dd_path, &s->rec, err) || reload(s, dd_path, err) || validate_images(s->dd, err)) {
		ploop_set_release(s);
		return err->status;
	}
	if (strcmp(s->dd->top_guid, PLOOP_TOP_GUID) && ploop_descriptor_find_snapshot(s->dd, PLOOP_TOP_GUID) < 0)
		ploop_descriptor_rename_guid(s->dd, s->dd->top_guid, PLOOP_TOP_GUID);
	return 0;
}

int ploop_unlink_file(const char *path, struct ploop_error *err)
{
	int r = pio_unlink(path);

	if (r && r != -ENOENT)
		return ploop_fail(err, PLOOP_ERR_UNLINK, -r, "%s: cannot remove", path);
	r = pio_sync_parent(path);
	if (r)
		return ploop_fail(err, PLOOP_ERR_FSYNC, -r, "%s: cannot sync the directory", path);
	return 0;
}

/* ---- merging deltas --------------------------------------------------------------------------------- */

/* A run of clusters that moves as one transfer: consecutive in the disk and in both files. */
struct merge_run {
	int level;		/* source */
	uint64_t v, n;		/* first virtual cluster, count */
	uint64_t soff, doff;	/* byte offsets of the first cluster */
	bool fresh;		/* destination clusters newly allocated (their BAT entries are to be set) */
};

typedef int (*merge_run_fn)(void *ctx, const struct merge_run *run);

/* Calls @fn for the maximal runs of the disk's first @vclusters clusters held by @src (top first:
 * the first holding one wins), mapped into @dst in place or, for clusters @dst lacks, to
 * consecutive clusters from @next. */
static int merge_walk(struct ploop_delta *dst, struct ploop_delta *const *src, int n, uint64_t vclusters,
		      uint64_t next, merge_run_fn fn, void *ctx)
{
	uint64_t cs = dst->cluster_bytes;
	struct merge_run run = { .level = -1 };
	int r;

	for (uint64_t v = 0; v <= vclusters; v++) {
		uint64_t soff = 0, doff = 0;
		int level = -1;
		bool fresh = false;

		for (int i = 0; i < n && level < 0 && v < vclusters; i++)
			if (ploop_delta_lookup(src[i], v, &soff))
				level = i;
		if (level >= 0) {
			if (dst->raw) {
				doff = v * cs;
			} else if (!ploop_delta_lookup(dst, v, &doff)) {
				doff = next++ * cs;
				fresh = true;
			}
			if (run.level == level && run.fresh == fresh && soff == run.soff + run.n * cs &&
			    doff == run.doff + run.n * cs) {
				run.n++;
				continue;
			}
		}
		if (run.level >= 0 && (r = fn(ctx, &run)))
			return r;
		run = (struct merge_run){ .level = level, .v = v, .n = 1, .soff = soff, .doff = doff, .fresh = fresh };
	}
	return 0;
}

struct merge_ctx {
	struct ploop_delta *dst;
	struct ploop_delta *const *src;
	struct pio_pipe *pipe;
};

static int merge_consume(void *ctx, struct pio_pipe *p, struct pio_slot *s, uint8_t *buf, size_t len, uint64_t off,
			 uint64_t doff)
{
	struct merge_ctx *m = ctx;

	return pio_pipe_write(p, s, buf, len, m->dst->file, doff);
}

static int merge_queue(void *ctx, const struct merge_run *run)
{
	struct merge_ctx *m = ctx;
	uint64_t len = run->n * m->dst->cluster_bytes;

	if (m->dst->raw && run->doff + len > m->dst->file_size)
		m->dst->file_size = run->doff + len;
	for (uint64_t done = 0; done < len;) {
		size_t piece = len - done < PIO_PIPE_CHUNK ? (size_t)(len - done) : PIO_PIPE_CHUNK;
		int r = pio_pipe_read(m->pipe, m->src[run->level]->file, run->soff + done, piece, run->doff + done);

		if (r)
			return r;
		done += piece;
	}
	return 0;
}

static int merge_set_entries(void *ctx, const struct merge_run *run)
{
	struct merge_ctx *m = ctx;

	for (uint64_t i = 0; run->fresh && i < run->n; i++)
		ploop_delta_set_entry(m->dst, run->v + i, (uint32_t)(run->doff / m->dst->cluster_bytes + i));
	return 0;
}

static int count_fresh(void *ctx, const struct merge_run *run)
{
	*(uint64_t *)ctx += run->fresh ? run->n : 0;
	return 0;
}

/* The size of the largest of @dst and @src, which must have @dst's cluster size. */
static int merge_max_size(const struct ploop_delta *dst, struct ploop_delta *const *src, int n, uint64_t *max_size,
			  struct ploop_error *err)
{
	*max_size = dst->size_sectors;
	for (int i = 0; i < n; i++) {
		if (src[i]->cluster_sectors != dst->cluster_sectors)
			return ploop_fail(err, PLOOP_ERR_FORMAT, 0, "%s: cluster size differs from %s", src[i]->path,
					  dst->path);
		if (src[i]->size_sectors > *max_size)
			*max_size = src[i]->size_sectors;
	}
	return 0;
}

static int reserve_raw_run(void *ctx, const struct merge_run *run)
{
	struct ploop_delta *dst = ctx;
	uint64_t end = run->doff + run->n * dst->cluster_bytes;

	/* Past the end of the file: the space of a grow is taken by the grow itself. */
	if (run->doff >= dst->file_size)
		return 0;
	if (end > dst->file_size)
		end = dst->file_size;
	return pio_allocate(dst->file, run->doff, end - run->doff);
}

/*
 * A raw @dst holds every cluster in place, so a merge into it allocates nothing the way a delta's
 * does: its space is the holes of a sparse file that the merge writes into. Those ranges are
 * allocated here, inside the file's size (which stays), before any data moves. Content does not
 * change: an allocated, unwritten range reads as zeros, as the hole did. Out of space, what was
 * allocated stays allocated (the next merge uses it) and the file reads as it did.
 */
int ploop_merge_reserve_raw(struct ploop_delta *dst, struct ploop_delta *const *src, int n, struct ploop_error *err)
{
	uint64_t max_size;
	int r;

	if (!dst->raw)
		return 0;
	if (merge_max_size(dst, src, n, &max_size, err))
		return err->status;
	r = merge_walk(dst, src, n, dst->vclusters, 0, reserve_raw_run, dst);
	if (r)
		return ploop_fail(err, ploop_write_status(r), -r,
				  "%s: cannot allocate the space of the merge", dst->path);
	return 0;
}

/* ploop_merge_prepare once the raw target's reservation is taken (merge_range takes it earlier). */
static int merge_allocate(struct ploop_delta *dst, struct ploop_delta *const *src, int n, uint64_t *first,
			  struct ploop_error *err)
{
	uint64_t max_size, cs = dst->cluster_sectors, need;

	*first = 0;
	if (merge_max_size(dst, src, n, &max_size, err))
		return err->status;
	/* What it lacks once as large as the largest source. */
	need = 0;
	merge_walk(dst, src, n, (max_size + cs - 1) / cs, 0, count_fresh, &need);
	if (max_size > dst->size_sectors)
		return ploop_delta_grow_alloc(dst, max_size, need, first, err);
	if (need && ploop_delta_alloc(dst, need, true, first, err))
		return err->status;
	return 0;
}

/*
 * The space a merge into @dst needs, taken before any data moves: @dst grown to the largest
 * source's size, and the clusters for what it lacks, in the one allocation of that grow (*first:
 * the first of them). Allocated up front, direct writes land in allocated space (an extending one
 * waits for all others) and the new clusters stay contiguous. Out of space, @dst is as it was.
 */
int ploop_merge_prepare(struct ploop_delta *dst, struct ploop_delta *const *src, int n, uint64_t *first,
			struct ploop_error *err)
{
	*first = 0;
	return ploop_merge_reserve_raw(dst, src, n, err) ? err->status : merge_allocate(dst, src, n, first, err);
}

/*
 * Copies every cluster held by @src (top first) into @dst, prepared by ploop_merge_prepare: in place
 * where @dst has the cluster, else into the clusters allocated from @first. Runs contiguous on both
 * sides move as large transfers with many in flight. BAT entries for the new clusters are set only
 * once all data is written, and reach the disk after it is durable.
 */
int ploop_merge_copy(struct ploop_delta *dst, struct ploop_delta *const *src, int n, uint64_t first,
		     struct ploop_error *err)
{
	struct merge_ctx m = { .dst = dst, .src = src };
	int r, fin;

	r = pio_pipe_new(PIO_PIPE_DEPTH, PIO_PIPE_CHUNK, PIO_PIPE_DURABLE, merge_consume, &m, &m.pipe);
	if (r)
		return ploop_fail(err, PLOOP_ERR_MALLOC, -r, "%s: merge buffers", dst->path);
	r = merge_walk(dst, src, n, dst->vclusters, first, merge_queue, &m);
	/* Also after an error: writes already queued complete before the caller closes @dst. */
	fin = pio_pipe_finish(m.pipe);
	if (!r)
		r = fin;
	pio_pipe_free(m.pipe);
	if (r)
		return ploop_fail(err, ploop_write_status(r), -r, "%s: cannot merge into it",
				  dst->path);
	dst->data_unsynced = true;
	merge_walk(dst, src, n, dst->vclusters, first, merge_set_entries, &m);
	return ploop_delta_flush(dst, err);
}

int ploop_merge_deltas(struct ploop_delta *dst, struct ploop_delta *const *src, int n, struct ploop_error *err)
{
	uint64_t first;

	if (ploop_merge_prepare(dst, src, n, &first, err))
		return err->status;
	return ploop_merge_copy(dst, src, n, first, err);
}

/* Refuses a merge of chain[a+1..b] into chain[a] if any of chain[a..b-1] has another child. */
int ploop_merge_check(const struct ploop_descriptor *dd, const int *chain, int a, int b, struct ploop_error *err)
{
	for (int i = a; i < b; i++) {
		const char *g = dd->images[chain[i]].guid;
		int k = ploop_descriptor_children(dd, g, NULL);

		if (k > 1)
			return ploop_fail(err, PLOOP_ERR_PARAM, 0,
					  "%s: snapshot %s has %d children; it cannot be merged with one of them", dd->path,
					  g, k);
	}
	return 0;
}

/* Before the data moves: chain[a..b-1] marked temporary, so a crash makes recovery redo the merge;
 * their markers as they were in @was (for ploop_merge_unmark). */
int ploop_merge_mark(struct ploop_descriptor *dd, const int *chain, int a, int b, enum ploop_temporary *was,
		     struct ploop_error *err)
{
	for (int i = a; i < b; i++) {
		int k = ploop_descriptor_find_snapshot(dd, dd->images[chain[i]].guid);
		struct ploop_snapshot_entry *sn = &dd->snapshots[k];

		was[i - a] = sn->temporary;
		sn->temporary = PLOOP_TEMP;
	}
	return ploop_descriptor_store(dd, err);
}

/* After the data is durable in chain[a]'s file: the merged image keeps the GUID of chain[b] and the
 * file of chain[a]; the entries of chain[a+1..b] go, and so do their files (once the descriptor no
 * longer names them). */
int ploop_merge_commit(struct ploop_descriptor *dd, const int *chain, int a, int b, char survivor[PLOOP_GUID_BUF],
		       struct ploop_error *err)
{
	char *remove[PLOOP_MAX_CHAIN] = { NULL };
	char guids[PLOOP_MAX_CHAIN][PLOOP_GUID_BUF], target[PLOOP_GUID_BUF];
	int nremove = 0;

	strcpy(survivor, dd->images[chain[b]].guid);
	strcpy(target, dd->images[chain[a]].guid);
	for (int i = a + 1; i <= b; i++) {
		remove[nremove++] = strdup(dd->images[chain[i]].path);
		strcpy(guids[i - a - 1], dd->images[chain[i]].guid);
	}
	for (int i = 0; i < b - a; i++)
		ploop_descriptor_remove_image(dd, guids[i]);
	ploop_descriptor_rename_guid(dd, target, survivor);
	dd->snapshots[ploop_descriptor_find_snapshot(dd, survivor)].temporary = PLOOP_TEMP_NONE;
	if (!ploop_descriptor_store(dd, err)) {
		for (int i = 0; i < nremove; i++)
			if (remove[i] && ploop_unlink_file(remove[i], err))
				break;
	}
	for (int i = 0; i < nremove; i++)
		free(remove[i]);
	return err->status;
}

/* Puts the temporary markers of chain[a..b-1] back as they were before this merge marked them, once
 * the target is clean again. Failing, they stay: the next command redoes the merge. */
void ploop_merge_unmark(struct ploop_descriptor *dd, const int *chain, int a, int b,
			const enum ploop_temporary *was)
{
	bool changed = false;

	for (int i = a; i < b; i++) {
		int sn = ploop_descriptor_find_snapshot(dd, dd->images[chain[i]].guid);

		changed |= dd->snapshots[sn].temporary != was[i - a];
		dd->snapshots[sn].temporary = was[i - a];
	}
	if (changed)
		ploop_descriptor_store(dd, &(struct ploop_error){ 0 });
}

/* Merges images chain[a+1..b] into chain[a] in files and descriptor. Steps: open and validate every
 * delta; mark a..b-1 temporary (a crash now re-runs this merge) and chain[a] in use; take the space
 * the merge needs; merge data; store the merged descriptor; remove the merged files. Without the
 * space, nothing has changed: chain[a] closes clean as it was and the markers this call set go.
 * Returns the surviving GUID in @survivor. */
static int merge_range(struct image_set *s, const int *chain, int a, int b, char survivor[PLOOP_GUID_BUF],
		       struct ploop_error *err)
{
	struct ploop_descriptor *dd = s->dd;
	struct ploop_delta *dst = NULL, *src[PLOOP_MAX_CHAIN] = { NULL };
	enum ploop_temporary was_temporary[PLOOP_MAX_CHAIN];
	int nsrc = 0, r = 0;
	uint64_t first = 0, old_size, old_file_size;
	bool unchanged = false;

	if (ploop_merge_check(dd, chain, a, b, err))
		return err->status;
	/* A delta a crash left in use (a killed merge or server) first gives back what lies past its
	 * last BAT entry: the merge allocates at the end of the file, after such clusters, which would
	 * then stay leaked for good (no longer at the tail, nothing trims them). */
	for (int i = a; i <= b; i++)
		if (!(i == 0 && dd->raw) && ploop_check_if_dirty(dd->images[chain[i]].path, true, err))
			return err->status;
	/* Nothing is changed before every delta has opened and passed validation. */
	PLOG("Merging %d image(s) into %s", b - a, dd->images[chain[a]].path);
	if (ploop_delta_open(dd->images[chain[a]].path,
			     PLOOP_OPEN_RDWR | PLOOP_OPEN_ALLOW_DIRTY | (a == 0 && dd->raw ? PLOOP_OPEN_RAW : 0),
			     dd->blocksize, 0, &dst, err))
		return err->status;
	for (int i = b; i > a; i--) {
		if (ploop_delta_open(dd->images[chain[i]].path, PLOOP_OPEN_ALLOW_DIRTY, 0, 0, &src[nsrc], err)) {
			r = err->status;
			goto out;
		}
		nsrc++;
	}
	/* A raw target's space is taken before the markers: it changes nothing that reads, so running
	 * out of it leaves the descriptor untouched. */
	r = ploop_merge_reserve_raw(dst, src, nsrc, err);
	if (!r)
		r = ploop_merge_mark(dd, chain, a, b, was_temporary, err);
	if (!r && !dst->raw) {
		r = ploop_delta_set_dirty(dst, true, err);
		dst->marked_dirty = !r;
	}
	old_size = dst->size_sectors;
	old_file_size = dst->file_size;
	if (!r && (r = merge_allocate(dst, src, nsrc, &first, err)))
		unchanged = dst->size_sectors == old_size && dst->file_size == old_file_size;
	if (!r)
		r = ploop_merge_copy(dst, src, nsrc, first, err);
out:
	for (int i = 0; i < nsrc; i++)
		ploop_delta_close(src[i], NULL);
	if (ploop_delta_close(dst, err))
		r = err->status;
	else if (unchanged)
		ploop_merge_unmark(dd, chain, a, b, was_temporary);
	if (r)
		return r;
	return ploop_merge_commit(dd, chain, a, b, survivor, err);
}

/* ---- recovery ------------------------------------------------------------------------------------------ */


/* Removes @path, a leftover of an interrupted command, if it exists and the set does not name it. */
static int drop_leftover(const struct ploop_descriptor *dd, const char *path, struct ploop_error *err)
{
	struct stat st;

	if (!path)
		return ploop_fail(err, PLOOP_ERR_MALLOC, ENOMEM, "%s", dd->path);
	for (int i = 0; i < dd->n_images; i++)
		if (!strcmp(dd->images[i].path, path))
			return 0;
	if (lstat(path, &st) || !S_ISREG(st.st_mode))
		return 0;
	PNOTICE("Removing %s, left by an interrupted command", path);
	return ploop_unlink_file(path, err);
}

/*
 * Whether @path, a file the descriptor does not name, is a new delta that a killed snapshot or
 * switch made but never described: named as the set names new deltas (STEM.{GUID}) and holding no
 * data -- its header not written yet (the header goes in last), or no BAT entry in use. A delta of
 * that name that holds data is left alone: recovery cannot tell it from one an operator keeps.
 */
static bool undescribed_new_delta(const struct ploop_descriptor *dd, const char *name, const char *path)
{
	uint8_t hdr[64];
	struct ploop_delta_info info;
	struct ploop_delta *d;
	struct ploop_file *f;
	bool empty;

	if (!ploop_descriptor_unnamed_delta(dd, name) || pio_open(path, O_RDONLY | O_NOFOLLOW, 0, &f))
		return false;
	empty = !pio_read(f, hdr, sizeof(hdr), 0);	/* zeros past the end */
	pio_close(f);
	for (size_t i = 0; i < sizeof(hdr) && empty; i++)
		empty = !hdr[i];
	if (empty)
		return true;
	if (ploop_delta_open(path, PLOOP_OPEN_ALLOW_DIRTY | PLOOP_OPEN_NOLOCK, 0, 0, &d, &(struct ploop_error){ 0 }))
		return false;
	ploop_delta_get_info(d, &info);
	ploop_delta_close(d, NULL);
	return !info.allocated_clusters;
}

/*
 * What a killed command leaves beside a set, once its interrupted operations are recovered (the
 * descriptor lock held alone, so no command is running): the new descriptor it had not put in place
 * yet (DiskDescriptor.xml.tmp), the raw copy of an image being converted (IMAGE.tmp: the descriptor
 * still names the image), header+BAT backups of a format conversion that never started or was
 * finished (IMAGE.idx: one still needed was used and removed by the recovery of conversions), and
 * the empty new delta of a snapshot or switch that never reached the descriptor.
 */
static int drop_leftovers(const struct ploop_descriptor *dd, struct ploop_error *err)
{
	cleanup_free char *dd_tmp = NULL;
	struct dirent *e;
	DIR *dir;

	if (asprintf(&dd_tmp, "%s.tmp", dd->path) < 0)
		dd_tmp = NULL;
	if (drop_leftover(dd, dd_tmp, err))
		return err->status;
	for (int i = 0; i < dd->n_images; i++) {
		cleanup_free char *tmp = NULL, *idx = NULL;

		if (asprintf(&tmp, "%s.tmp", dd->images[i].path) < 0)
			tmp = NULL;
		if (asprintf(&idx, "%s.idx", dd->images[i].path) < 0)
			idx = NULL;
		if (drop_leftover(dd, tmp, err) || drop_leftover(dd, idx, err))
			return err->status;
	}
	if (!dd->n_images || !(dir = opendir(dd->dir)))
		return 0;
	while ((e = readdir(dir)) && !err->status) {
		cleanup_free char *path = ploop_join(dd->dir, e->d_name);

		if (path && undescribed_new_delta(dd, e->d_name, path))
			drop_leftover(dd, path, err);
	}
	closedir(dir);
	return err->status;
}

/* Disk_size, End and the geometry of a descriptor for a disk of @size sectors. */
static void set_disk_size(struct ploop_descriptor *dd, uint64_t size)
{
	uint32_t secs;

	dd->disk_size = dd->end = size;
	ploop_chs(size, &dd->cylinders, &dd->heads, &secs);
	dd->sectors = (uint32_t)(size / ((uint64_t)dd->cylinders * dd->heads));
}

/*
 * A resize stopped between the top delta's header (written first) and the descriptor leaves
 * Disk_size at the old size. The header tells the size the image has -- a shrink has dropped the
 * clusters past its new end, a grow has made room -- so the descriptor follows it. A top that does
 * not open is left to the validation of the command that runs next.
 */
static int follow_top_size(struct ploop_descriptor *dd, const char *dd_path, struct ploop_error *err)
{
	int im = ploop_descriptor_find_image(dd, dd->top_guid);
	uint64_t size, bs = dd->blocksize;
	struct ploop_delta *top;

	if (im < 0 || !bs || !dd->disk_size || (dd->raw && dd->n_images == 1) ||
	    ploop_delta_open(dd->images[im].path, PLOOP_OPEN_HEADER_ONLY | PLOOP_OPEN_ALLOW_DIRTY | PLOOP_OPEN_NOLOCK,
			     0, 0, &top, &(struct ploop_error){ 0 }))
		return 0;
	size = top->size_sectors;
	ploop_delta_close(top, NULL);
	if ((size + bs - 1) / bs == (dd->disk_size + bs - 1) / bs)
		return 0;
	PNOTICE("%s: Disk_size %" PRIu64 " set to the top delta's %" PRIu64 " sectors (completing an interrupted resize)",
		dd_path, dd->disk_size, size);
	set_disk_size(dd, size);
	return ploop_descriptor_store(dd, err);
}

int ploop_recover_locked(const char *dd_path, struct ploop_recovery *rec, struct ploop_error *err)
{
	struct image_set s = { .lock_fd = -1 };
	bool progress = true;
	bool conv = false;

	if (reload(&s, dd_path, err))
		return err->status;
	if (ploop_recover_conversion(s.dd, &conv, err)) {
		ploop_descriptor_free(s.dd);
		return err->status;
	}
	while (progress) {
		progress = false;
		for (int i = 0; i < s.dd->n_snapshots && !progress; i++) {
			struct ploop_snapshot_entry *t = &s.dd->snapshots[i];
			int child = -1, k;

			if (!t->temporary)
				continue;
			if (t->temporary != PLOOP_TEMP) {
				ploop_fail(err, PLOOP_ERR_DESCRIPTOR, 0,
					   "%s: snapshot %s is in an online-merge state of another ploop version; finish "
					   "it with that version",
					   dd_path, t->guid);
				goto out;
			}
			k = ploop_descriptor_children(s.dd, t->guid, &child);
			if (k == 1) {
				int chain[PLOOP_MAX_CHAIN], n;

				char gone[PLOOP_GUID_BUF], survivor[PLOOP_GUID_BUF];

				PNOTICE("Completing the merge of snapshot %s into %s", s.dd->snapshots[child].guid,
					t->guid);
				strcpy(gone, t->guid);
				if (ploop_descriptor_chain(s.dd, s.dd->snapshots[child].guid, chain, &n, err) ||
				    merge_range(&s, chain, n - 2, n - 1, survivor, err))
					goto out;
				if (rec && rec->n < PLOOP_MAX_CHAIN) {
					strcpy(rec->gone[rec->n], gone);
					strcpy(rec->survivor[rec->n++], survivor);
				}
				progress = true;
			} else if (k == 0) {
				cleanup_free char *path = NULL;
				int im = ploop_descriptor_find_image(s.dd, t->guid);

				PNOTICE("Removing temporary snapshot %s", t->guid);
				path = strdup(s.dd->images[im].path);
				ploop_descriptor_remove_image(s.dd, t->guid);
				if (ploop_descriptor_store(s.dd, err) || ploop_unlink_file(path, err))
					goto out;
				progress = true;
			}
			if (progress && reload(&s, dd_path, err))
				goto out;
		}
	}
	if (!follow_top_size(s.dd, dd_path, err))
		drop_leftovers(s.dd, err);
out:
	ploop_descriptor_free(s.dd);
	return err->status;
}

int ploop_recover(const char *dd_path, struct ploop_error *err)
{
	int fd, r;

	if (ploop_lock_descriptor(dd_path, true, &fd, err))
		return err->status;
	r = ploop_recover_locked(dd_path, NULL, err);
	ploop_unlock_descriptor(fd);
	return r;
}

/* ---- init, snapshot, switch, delete, merge --------------------------------------------------------------- */

int ploop_create_set(const char *delta_path, const struct ploop_create_params *in, ploop_fill_fn fill, void *ctx,
		     struct ploop_error *err)
{
	cleanup_free char *dir = ploop_dir_of(delta_path);
	cleanup_free char *dd_path = NULL, *tmp = NULL;
	struct ploop_descriptor *dd = NULL;
	struct ploop_delta *d = NULL;
	struct ploop_create_params p = *in;
	const char *base = strrchr(delta_path, '/') ? strrchr(delta_path, '/') + 1 : delta_path;
	const char *made;	/* the file this call created, removed if it fails */
	struct stat st;
	bool lock_made = false;
	int lock = -1, r;

	if (fill && asprintf(&tmp, "%s" PLOOP_IMPORT_SUFFIX, delta_path) < 0)
		tmp = NULL;
	if (!dir || !(dd_path = ploop_join(dir, PLOOP_DESCRIPTOR_NAME)) || (fill && !tmp))
		return ploop_fail(err, PLOOP_ERR_MALLOC, ENOMEM, "%s", delta_path);
	if (ploop_check_new_file_name(base, err))
		return err->status;
	if (stat(dir, &st) || !S_ISDIR(st.st_mode))
		return ploop_fail(err, PLOOP_ERR_CREAT, errno ? errno : ENOTDIR, "%s: no such directory", dir);
	if (ploop_lock_new_descriptor(dd_path, &lock, &lock_made, err))
		return err->status;
	if (!stat(dd_path, &st) || (fill && !stat(delta_path, &st))) {
		ploop_fail(err, PLOOP_ERR_CREAT, EEXIST, "%s", stat(dd_path, &st) ? delta_path : dd_path);
		goto unlock;
	}
	if (!p.cluster_sectors)
		p.cluster_sectors = PLOOP_DEF_CLUSTER_SECTORS;
	/* A delta that is filled (import) is made as DELTA.import and gets its name and descriptor only
	 * once complete and closed: a killed fill leaves no set that looks whole (a stale DELTA.import
	 * goes with the next attempt). */
	made = fill ? tmp : delta_path;
	if (fill)
		pio_unlink(tmp);
	if (ploop_delta_create(made, &p, err))
		goto unlock;
	if (fill) {
		if (!ploop_delta_open(tmp, PLOOP_OPEN_RDWR | PLOOP_OPEN_MARK_DIRTY, 0, 0, &d, err))
			fill(d, ctx, err);
		if (!d || ploop_delta_close(d, err) || err->status)
			goto remove;
		r = pio_rename(tmp, delta_path);
		if (r) {
			ploop_fail(err, PLOOP_ERR_RENAME, -r, "%s: cannot rename to %s", tmp, delta_path);
			goto remove;
		}
		made = delta_path;
		r = pio_sync_parent(delta_path);
		if (r) {
			ploop_fail(err, PLOOP_ERR_FSYNC, -r, "%s: cannot sync the directory", delta_path);
			goto remove;
		}
	}
	p.size_sectors = (p.size_sectors + p.cluster_sectors - 1) / p.cluster_sectors * p.cluster_sectors;
	if (!ploop_descriptor_new(dd_path, base, &p, &dd, err))
		ploop_descriptor_write(dd, dd_path, err);
	ploop_descriptor_free(dd);
remove:
	if (err->status && !ploop_descriptor_committed(err))
		pio_unlink(made);
unlock:
	ploop_unlock_new_descriptor(dd_path, lock, lock_made);
	return err->status;
}

int ploop_init_image(const char *delta_path, const struct ploop_create_params *p, struct ploop_error *err)
{
	return ploop_create_set(delta_path, p, NULL, NULL, err);
}

/*
 * Creates an empty delta like @like (size, cluster, version) at a new name; returns file and path.
 * New deltas hold whole clusters: a disk whose size is not a multiple of the cluster (as QEMU may
 * make them) grows to the next one, and the descriptor says so.
 */
int ploop_new_delta_like(struct ploop_descriptor *dd, const struct ploop_delta *like, char **file, char **path,
			 struct ploop_error *err)
{
	struct ploop_create_params p = {
		.size_sectors = like->size_sectors,
		.cluster_sectors = like->cluster_sectors,
		.version = like->raw ? 2 : like->version,
	};

	if (ploop_descriptor_new_delta_name(dd, file, path, err))
		return err->status;
	if (ploop_delta_create(*path, &p, err)) {
		free(*file);
		free(*path);
		*file = *path = NULL;
		return err->status;
	}
	p.size_sectors = (p.size_sectors + p.cluster_sectors - 1) / p.cluster_sectors * p.cluster_sectors;
	if (p.size_sectors != dd->disk_size)
		set_disk_size(dd, p.size_sectors);
	return 0;
}

/* Opens the header of the top delta (exclusively: nobody may be writing it). */
static int open_top_header(struct ploop_descriptor *dd, struct ploop_delta **top, struct ploop_error *err)
{
	int im = ploop_descriptor_find_image(dd, dd->top_guid);
	bool raw = dd->raw && dd->n_images == 1;

	return ploop_delta_open(dd->images[im].path, PLOOP_OPEN_RDWR | PLOOP_OPEN_HEADER_ONLY | (raw ? PLOOP_OPEN_RAW : 0),
				dd->blocksize, raw ? dd->disk_size : 0, top, err);
}

int ploop_snapshot(const char *dd_path, const char *guid, char out_guid[PLOOP_GUID_BUF], struct ploop_error *err)
{
	struct image_set s;
	struct ploop_delta *top = NULL;
	char g[PLOOP_GUID_BUF];
	cleanup_free char *file = NULL;
	cleanup_free char *path = NULL;

	if (guid ? ploop_parse_guid(guid, g) : ploop_new_guid(g))
		return ploop_fail(err, PLOOP_ERR_PARAM, 0, "'%s' is not a GUID", guid);
	if (!strcmp(g, PLOOP_TOP_GUID) || !strcmp(g, PLOOP_NONE_GUID))
		return ploop_fail(err, PLOOP_ERR_PARAM, 0, "%s is reserved", g);
	{
		struct ploop_instance in;
		char cmd[64];

		if (mounted(dd_path, &in)) {
			/* Online: the server freezes the filesystem and switches to the new top. */
			snprintf(cmd, sizeof(cmd), "snapshot %s", g);
			if (ploop_instance_call(&in, cmd, NULL, 0, err))
				return err->status;
			if (out_guid)
				strcpy(out_guid, g);
			return 0;
		}
	}
	if (ploop_set_open(&s, dd_path, err))
		return err->status;
	if (ploop_descriptor_find_snapshot(s.dd, g) >= 0) {
		ploop_fail(err, PLOOP_ERR_PARAM, 0, "%s: snapshot %s already exists", dd_path, g);
		goto out;
	}
	if (s.dd->n_images >= PLOOP_MAX_CHAIN) {
		ploop_fail(err, PLOOP_ERR_PARAM, 0, "%s: too many snapshots (%d images)", dd_path, s.dd->n_images);
		goto out;
	}
	if (open_top_header(s.dd, &top, err) || ploop_new_delta_like(s.dd, top, &file, &path, err))
		goto out;
	ploop_descriptor_rename_guid(s.dd, PLOOP_TOP_GUID, g);
	strcpy(s.dd->top_guid, PLOOP_TOP_GUID);
	if (ploop_descriptor_add_image(s.dd, PLOOP_TOP_GUID, file, g, err) || ploop_descriptor_store(s.dd, err)) {
		if (!ploop_descriptor_committed(err))
			pio_unlink(path);
		goto out;
	}
	if (out_guid)
		strcpy(out_guid, g);
out:
	ploop_delta_close(top, NULL);
	ploop_set_release(&s);
	return err->status;
}

int ploop_snapshot_switch(const char *dd_path, const char *guid, bool keep_top, struct ploop_error *err)
{
	struct image_set s;
	struct ploop_delta *snap = NULL;
	char g[PLOOP_GUID_BUF], old_top_path[4096] = "";
	cleanup_free char *file = NULL;
	cleanup_free char *path = NULL;
	int sn;

	if (!guid || ploop_parse_guid(guid, g))
		return ploop_fail(err, PLOOP_ERR_PARAM, 0, "'%s' is not a GUID", guid ? guid : "");
	if (ploop_set_open(&s, dd_path, err))
		return err->status;
	sn = ploop_descriptor_find_snapshot(s.dd, g);
	if (sn < 0) {
		ploop_fail(err, PLOOP_ERR_PARAM, 0, "%s: no snapshot %s", dd_path, g);
		goto out;
	}
	if (!strcmp(g, s.dd->top_guid) || s.dd->snapshots[sn].temporary) {
		ploop_fail(err, PLOOP_ERR_PARAM, 0, "%s: cannot switch to %s: it is the current top or temporary",
			   dd_path, g);
		goto out;
	}
	/* the new top is as large as the snapshot was (a grow since then is rolled back too) */
	{
		int im = ploop_descriptor_find_image(s.dd, g);
		bool raw = ploop_descriptor_raw_image(s.dd, im);

		if (ploop_delta_open(s.dd->images[im].path, PLOOP_OPEN_HEADER_ONLY | (raw ? PLOOP_OPEN_RAW : 0),
				     s.dd->blocksize, 0, &snap, err) ||
		    ploop_new_delta_like(s.dd, snap, &file, &path, err))
			goto out;
	}
	snprintf(old_top_path, sizeof(old_top_path), "%s",
		 s.dd->images[ploop_descriptor_find_image(s.dd, s.dd->top_guid)].path);
	if (keep_top) {
		char kept[PLOOP_GUID_BUF];

		ploop_new_guid(kept);
		ploop_descriptor_rename_guid(s.dd, PLOOP_TOP_GUID, kept);
		old_top_path[0] = '\0';
	} else {
		ploop_descriptor_remove_image(s.dd, PLOOP_TOP_GUID);
	}
	if (ploop_descriptor_add_image(s.dd, PLOOP_TOP_GUID, file, g, err)) {
		pio_unlink(path);
		goto out;
	}
	strcpy(s.dd->top_guid, PLOOP_TOP_GUID);
	if (ploop_descriptor_store(s.dd, err)) {
		if (!ploop_descriptor_committed(err))
			pio_unlink(path);
		goto out;
	}
	if (old_top_path[0])
		ploop_unlink_file(old_top_path, err);
out:
	ploop_delta_close(snap, NULL);
	ploop_set_release(&s);
	return err->status;
}

/* Whether opening the set already completed the merge the caller asks for: @guid (the survivor of a
 * merge into its parent) or, with @gone, @guid is the merged-into snapshot that disappeared. */
static bool recovered(const struct image_set *s, const char *guid, bool gone)
{
	for (int i = 0; i < s->rec.n; i++)
		if (!strcmp(gone ? s->rec.gone[i] : s->rec.survivor[i], guid))
			return true;
	return false;
}

int ploop_snapshot_merge(const char *dd_path, const char *guid, bool all, struct ploop_error *err)
{
	struct image_set s;
	int chain[PLOOP_MAX_CHAIN], n;
	char g[PLOOP_GUID_BUF], survivor[PLOOP_GUID_BUF];

	if (guid && ploop_parse_guid(guid, g))
		return ploop_fail(err, PLOOP_ERR_PARAM, 0, "'%s' is not a GUID", guid);
	{
		struct ploop_instance in;
		char cmd[64];

		if (mounted(dd_path, &in)) {
			snprintf(cmd, sizeof(cmd), "%s %s", all ? "merge-all" : "merge", guid ? g : "-");
			return ploop_instance_call(&in, cmd, NULL, 0, err);
		}
	}
	if (ploop_set_open(&s, dd_path, err))
		return err->status;
	if (!guid)
		strcpy(g, s.dd->top_guid);
	if (all) {
		if (!ploop_descriptor_chain(s.dd, NULL, chain, &n, err) && n > 1)
			merge_range(&s, chain, 0, n - 1, survivor, err);
		goto out;
	}
	if (recovered(&s, g, false)) {
		PNOTICE("The interrupted merge of %s into its parent has been completed", g);
		goto out;
	}
	if (ploop_descriptor_find_snapshot(s.dd, g) < 0) {
		ploop_fail(err, PLOOP_ERR_PARAM, 0, "%s: no snapshot %s", dd_path, g);
		goto out;
	}
	if (ploop_descriptor_chain(s.dd, g, chain, &n, err))
		goto out;
	if (n == 1) {
		ploop_fail(err, PLOOP_ERR_PARAM, 0, "%s: %s is the base image; it has no parent to merge into",
			   dd_path, g);
		goto out;
	}
	merge_range(&s, chain, n - 2, n - 1, survivor, err);
out:
	ploop_set_release(&s);
	return err->status;
}

/* Removes a snapshot with no children: its file and entry; a deleted top's parent becomes the top. */
static int delete_leaf(struct image_set *s, int sn, struct ploop_error *err)
{
	struct ploop_descriptor *dd = s->dd;
	char g[PLOOP_GUID_BUF], parent[PLOOP_GUID_BUF];
	cleanup_free char *path = NULL;

	strcpy(g, dd->snapshots[sn].guid);
	strcpy(parent, dd->snapshots[sn].parent);
	if (!strcmp(parent, PLOOP_NONE_GUID))
		return ploop_fail(err, PLOOP_ERR_PARAM, 0, "%s: unable to delete the base image %s", dd->path, g);
	if (!strcmp(g, dd->top_guid) && ploop_descriptor_children(dd, parent, NULL) > 1)
		return ploop_fail(err, PLOOP_ERR_PARAM, 0,
				  "%s: the top's parent %s has other children; switch to a snapshot instead", dd->path,
				  parent);
	path = strdup(dd->images[ploop_descriptor_find_image(dd, g)].path);
	if (!path)
		return ploop_fail(err, PLOOP_ERR_MALLOC, ENOMEM, "%s", dd->path);
	ploop_descriptor_remove_image(dd, g);
	if (!strcmp(g, dd->top_guid))
		ploop_descriptor_rename_guid(dd, parent, PLOOP_TOP_GUID);
	if (ploop_descriptor_store(dd, err))
		return err->status;
	return ploop_unlink_file(path, err);
}

static void notice_temporary(const char *guid, int children)
{
	PNOTICE("Snapshot %s has %d children; it is marked temporary and will be merged when only one is left", guid,
		children);
}

int ploop_snapshot_delete(const char *dd_path, const char *guid, bool *marked, struct ploop_error *err)
{
	struct image_set s;
	char g[PLOOP_GUID_BUF], survivor[PLOOP_GUID_BUF];
	int chain[PLOOP_MAX_CHAIN], n, sn, child = -1, k;

	if (marked)
		*marked = false;
	if (!guid || ploop_parse_guid(guid, g))
		return ploop_fail(err, PLOOP_ERR_PARAM, 0, "'%s' is not a GUID", guid ? guid : "");
	{
		struct ploop_instance in;
		char cmd[64];

		if (mounted(dd_path, &in)) {
			char reply[64];

			snprintf(cmd, sizeof(cmd), "delete %s", g);
			if (ploop_instance_call(&in, cmd, reply, sizeof(reply), err))
				return err->status;
			if (sscanf(reply, "temporary %d", &k) == 1) {
				notice_temporary(g, k);
				if (marked)
					*marked = true;
			}
			return 0;
		}
	}
	if (ploop_set_open(&s, dd_path, err))
		return err->status;
	if (recovered(&s, g, true)) {
		PNOTICE("The interrupted deletion of %s has been completed", g);
		goto out;
	}
	sn = ploop_descriptor_find_snapshot(s.dd, g);
	if (sn < 0) {
		ploop_fail(err, PLOOP_ERR_NOSNAP, 0, "%s: no snapshot %s", dd_path, g);
		goto out;
	}
	k = ploop_descriptor_children(s.dd, g, &child);
	if (k == 0) {
		delete_leaf(&s, sn, err);
	} else if (k == 1) {
		/* The only child's data goes into this snapshot's file; the child's GUID survives. */
		if (!ploop_descriptor_chain(s.dd, s.dd->snapshots[child].guid, chain, &n, err))
			merge_range(&s, chain, n - 2, n - 1, survivor, err);
	} else if (s.dd->snapshots[sn].temporary) {
		ploop_fail(err, PLOOP_ERR_CREAT, 0, "%s: snapshot %s is already marked temporary: it is merged when "
			   "only one of its %d children is left", dd_path, g, k);	/* 1.15 exits 1 */
	} else {
		/* As upstream: deleted once all but one of its children are gone. */
		s.dd->snapshots[sn].temporary = PLOOP_TEMP;
		if (!ploop_descriptor_store(s.dd, err)) {
			notice_temporary(g, k);
			if (marked)
				*marked = true;
		}
	}
out:
	ploop_set_release(&s);
	return err->status;
}

/* ---- grow ---------------------------------------------------------------------------------------------------- */

/* As upstream: a path naming a descriptor ends in ".xml"; anything else is an image file. */
bool ploop_is_descriptor_path(const char *path)
{
	size_t n = strlen(path);

	return n >= 4 && !strcmp(path + n - 4, ".xml");
}

/* A file given as raw (-f raw) that starts with a ploop signature is a delta: written as raw, its
 * header and BAT would be overwritten by data. PLOOP_ERR_PARAM naming what to do instead. */
static int refuse_delta_as_raw(const struct ploop_delta *d, const char *instead, struct ploop_error *err)
{
	uint8_t sig[PLOOP_SIG_LEN];
	int r = pio_read(d->file, sig, sizeof(sig), 0);	/* zeros past the end */

	if (r)
		return ploop_fail(err, PLOOP_ERR_READ, -r, "%s: cannot read", d->path);
	if (!memcmp(sig, PLOOP_SIG_V1, PLOOP_SIG_LEN) || !memcmp(sig, PLOOP_SIG_V2, PLOOP_SIG_LEN))
		return ploop_fail(err, PLOOP_ERR_PARAM, 0, "%s: a ploop delta, not a raw image: %s", d->path, instead);
	return 0;
}

/* A single file: a ploop delta, or with @raw a raw image -- which a ploop delta is not: grown as
 * raw, it would only get bytes appended that its header does not know about. */
static int grow_file(const char *path, bool raw, uint64_t size, struct ploop_error *err)
{
	struct ploop_delta *d;

	if (ploop_delta_open(path, PLOOP_OPEN_RDWR | (raw ? PLOOP_OPEN_RAW : 0), PLOOP_DEF_CLUSTER_SECTORS, 0, &d, err))
		return err->status;
	if (raw)
		refuse_delta_as_raw(d, "grow it without -f raw", err);
	if (!err->status)
		ploop_delta_grow(d, size, err);
	ploop_delta_close(d, err);
	return err->status;
}

/* The size the header of @top's file says now (0: unreadable), after a grow that failed part-way. */
static uint64_t size_on_disk(const struct ploop_delta *top)
{
	struct ploop_delta *d;
	struct ploop_error e = { 0 };
	uint64_t size;

	if (ploop_delta_open(top->path,
			     PLOOP_OPEN_HEADER_ONLY | PLOOP_OPEN_ALLOW_DIRTY | PLOOP_OPEN_NOLOCK |
				     (top->raw ? PLOOP_OPEN_RAW : 0),
			     top->cluster_sectors, 0, &d, &e))
		return 0;
	size = d->size_sectors;
	ploop_delta_close(d, NULL);
	return size;
}

/*
 * The new descriptor is written (DiskDescriptor.xml.tmp, synced) before the delta changes: running
 * out of space there changes nothing. Then the delta grows, and the descriptor is renamed into place
 * once the delta's header says the new size -- also when a later step fails (preallocating the new
 * clusters, the final flush): the grown delta is valid, and the same grow completes it.
 */
int ploop_grow(const char *path, bool raw, uint64_t size, struct ploop_error *err)
{
	struct image_set s;
	struct ploop_delta *top = NULL;
	uint64_t old_size, new_size = 0, actual = 0;
	bool prepared = false, grown = false;
	int im;

	if (raw && ploop_is_descriptor_path(path))
		return ploop_fail(err, PLOOP_ERR_PARAM, 0,
				  "%s: a DiskDescriptor.xml, not a raw image: grow it without -f raw", path);
	if (raw || !ploop_is_descriptor_path(path))
		return grow_file(path, raw, size, err);
	if (ploop_set_open(&s, path, err))
		return err->status;
	im = ploop_descriptor_find_image(s.dd, s.dd->top_guid);
	if (ploop_delta_open(s.dd->images[im].path,
			     PLOOP_OPEN_RDWR | (s.dd->raw && s.dd->n_images == 1 ? PLOOP_OPEN_RAW : 0), s.dd->blocksize,
			     s.dd->disk_size, &top, err))
		goto out;
	if (size < top->size_sectors) {
		ploop_fail(err, PLOOP_ERR_PARAM, 0,
			   "%s: cannot shrink from %" PRIu64 " to %" PRIu64 " sectors offline (ploop resize shrinks a "
			   "filesystem)",
			   path, top->size_sectors, size);
		goto out;
	}
	/* The size the grow will reach (a ploop delta's is a whole number of clusters), once it is
	 * known to be one the delta can hold: the rounding cannot overflow then. */
	if (ploop_delta_check_size(top, size, err))
		goto out;
	old_size = top->size_sectors;
	new_size = top->raw ? size : (size + top->cluster_sectors - 1) / top->cluster_sectors * top->cluster_sectors;
	set_disk_size(s.dd, new_size);
	if (ploop_descriptor_prepare(s.dd, err))
		goto out;
	prepared = true;
	if (ploop_delta_grow(top, size, err)) {
		/* The old header may still be in charge (it is, unless the failure came after the new one
		 * was written): the file says which. */
		grown = top->size_sectors != old_size && size_on_disk(top) == top->size_sectors;
		goto out;
	}
	grown = true;
	if (top->size_sectors != new_size) {
		ploop_fail(err, PLOOP_ERR_SYS, 0, "%s: grew to %" PRIu64 " sectors, not %" PRIu64, top->path,
			   top->size_sectors, new_size);
		goto out;
	}
	if (s.dd->preallocated && s.dd->n_images == 1 && !top->raw) {
		uint64_t missing = 0, first;

		for (uint64_t v = 0; v < top->vclusters; v++)
			missing += !top->bat[v];
		if (missing && !ploop_delta_alloc(top, missing, true, &first, err)) {
			for (uint64_t v = 0; v < top->vclusters; v++)
				if (!top->bat[v])
					ploop_delta_set_entry(top, v, (uint32_t)first++);
		}
	}
out:
	if (top)
		actual = top->size_sectors;
	ploop_delta_close(top, err);
	if (prepared && grown && actual == new_size) {
		ploop_descriptor_commit(s.dd, err);
	} else if (prepared) {
		ploop_descriptor_abort(s.dd);
		if (grown) {
			set_disk_size(s.dd, actual);
			ploop_descriptor_store(s.dd, err);
		}
	}
	ploop_set_release(&s);
	return err->status;
}

/* ---- shrink ----------------------------------------------------------------------------------------- */

/*
 * The image side of an offline shrink (the filesystem was shrunk first): a single-delta image drops
 * every cluster past the new end, its header gets the new size -- and the smaller minimal BAT area
 * when that shrinks, the clusters freed becoming data area -- then tail clusters fill the holes.
 */
int ploop_shrink(const char *dd_path, uint64_t size, struct ploop_error *err)
{
	struct image_set s;
	struct ploop_delta *d = NULL;
	uint64_t vcl, l1, moved;
	uint32_t cyl, heads, secs;

	if (ploop_set_open(&s, dd_path, err))
		return err->status;
	if (s.dd->n_images > 1) {
		ploop_fail(err, PLOOP_ERR_PARAM, 0, "%s: has snapshots; merge them (snapshot-merge -A) to shrink", dd_path);
		goto out;
	}
	size = (size + s.dd->blocksize - 1) / s.dd->blocksize * s.dd->blocksize;
	if (!size || size >= s.dd->disk_size) {
		ploop_fail(err, PLOOP_ERR_PARAM, 0, "%s: %" PRIu64 " sectors is not smaller than the disk", dd_path, size);
		goto out;
	}
	if (ploop_delta_open(s.dd->images[0].path, PLOOP_OPEN_RDWR | PLOOP_OPEN_MARK_DIRTY | (s.dd->raw ? PLOOP_OPEN_RAW : 0),
			     s.dd->blocksize, s.dd->disk_size, &d, err))
		goto out;
	if (d->raw) {
		int r = pio_truncate(d->file, size * PLOOP_SECTOR_SIZE);

		if (r)
			ploop_fail(err, PLOOP_ERR_FTRUNCATE, -r, "%s: cannot truncate", d->path);
		goto close;
	}
	vcl = size / d->cluster_sectors;
	for (uint64_t v = vcl; v < d->vclusters; v++)
		if (ploop_delta_drop_cluster(d, v, err))
			goto close;
	if (ploop_delta_flush(d, err))
		goto close;
	/* Entries past the new end are zero on disk now: they become padding. */
	l1 = ploop_bat_clusters(vcl, d->cluster_bytes);
	ploop_chs(size, &cyl, &heads, &secs);
	d->hdr.m_Cylinders = cyl;
	d->hdr.m_Heads = heads;
	d->hdr.m_Size = (uint32_t)vcl;
	d->hdr.m_SizeInSectors = size;
	if (l1 < d->l1_size)
		d->hdr.m_FirstBlockOffset = (uint32_t)(l1 * d->cluster_sectors);
	if (ploop_delta_write_header(d, err) || pio_sync(d->file)) {
		ploop_fail(err, PLOOP_ERR_FSYNC, EIO, "%s: cannot write the header", d->path);
		goto close;
	}
	d->size_sectors = size;
	d->vclusters = d->bat_entries = (uint32_t)vcl;
	d->l1_size = (uint32_t)(l1 < d->l1_size ? l1 : d->l1_size);
	d->n_pages = (ploop_delta_bat_bytes(d) + PLOOP_PAGE - 1) / PLOOP_PAGE;
	ploop_delta_compact(d, &moved, err);
close:
	if (ploop_delta_close(d, err) == 0 && !err->status) {
		set_disk_size(s.dd, size);
		ploop_descriptor_store(s.dd, err);
	}
out:
	ploop_set_release(&s);
	return err->status;
}

/* ---- restore-descriptor and file-list merge -------------------------------------------------------------------- */

static uint32_t raw_cluster_guess(uint64_t bytes)
{
	/* The largest power of two from 32 KiB to 1 MiB dividing the size. */
	for (uint32_t cs = PLOOP_DEF_CLUSTER_SECTORS; cs >= PLOOP_MIN_CLUSTER_SECTORS; cs /= 2)
		if (bytes % ((uint64_t)cs * PLOOP_SECTOR_SIZE) == 0)
			return cs;
	return 0;
}

int ploop_restore_descriptor(const char *dir, const char *delta_path, bool raw, uint32_t cs, struct ploop_error *err)
{
	cleanup_free char *dd_path = ploop_join(dir, PLOOP_DESCRIPTOR_NAME);
	cleanup_free char *rdir = NULL;
	cleanup_free char *rdelta = NULL;
	cleanup_free char *ddir = NULL;
	struct ploop_create_params p = { 0 };
	struct ploop_descriptor *dd = NULL;
	struct ploop_delta *d = NULL;
	struct stat st;
	bool lock_made = false;
	int lock = -1;

	if (!dd_path)
		return ploop_fail(err, PLOOP_ERR_MALLOC, ENOMEM, "%s", dir);
	if (!(rdir = realpath(dir, NULL)))
		return ploop_fail(err, PLOOP_ERR_OPEN, errno, "%s", dir);
	if (!(rdelta = realpath(delta_path, NULL)))
		return ploop_fail(err, PLOOP_ERR_OPEN, errno, "%s", delta_path);
	ddir = ploop_dir_of(rdelta);
	if (!ddir || strcmp(ddir, rdir))
		return ploop_fail(err, PLOOP_ERR_PARAM, 0, "%s: the image must be in %s", delta_path, dir);
	if (ploop_check_new_file_name(strrchr(rdelta, '/') + 1, err))
		return err->status;
	if (ploop_lock_new_descriptor(dd_path, &lock, &lock_made, err))
		return err->status;
	if (!stat(dd_path, &st)) {
		ploop_unlock_new_descriptor(dd_path, lock, lock_made);
		return ploop_fail(err, PLOOP_ERR_CREAT, EEXIST, "%s", dd_path);
	}
	if (raw) {
		if (stat(rdelta, &st) || !S_ISREG(st.st_mode)) {
			ploop_unlock_new_descriptor(dd_path, lock, lock_made);
			return ploop_fail(err, PLOOP_ERR_OPEN, errno, "%s: not a regular file", delta_path);
		}
		p.cluster_sectors = cs ? cs : raw_cluster_guess((uint64_t)st.st_size);
		p.size_sectors = (uint64_t)st.st_size / PLOOP_SECTOR_SIZE;
		p.mode = PLOOP_MODE_RAW;
		/* The disk of a set is a whole number of clusters (a snapshot's top is): as upstream, a
		 * raw file of another size is refused, not taken for a disk that grows at the first
		 * snapshot. */
		if (cs && !ploop_cluster_size_valid(cs))
			ploop_fail(err, PLOOP_ERR_PARAM, 0, "invalid cluster size %" PRIu32, cs);
		else if (!p.size_sectors || (uint64_t)st.st_size % PLOOP_SECTOR_SIZE)
			ploop_fail(err, PLOOP_ERR_PARAM, 0, "%s: size %lld is not a whole number of 512-byte sectors",
				   delta_path, (long long)st.st_size);
		else if (!p.cluster_sectors)
			ploop_fail(err, PLOOP_ERR_PARAM, 0,
				   "%s: size %lld is not a multiple of 32 KiB, the smallest cluster size", delta_path,
				   (long long)st.st_size);
		else if (p.size_sectors % p.cluster_sectors)
			ploop_fail(err, PLOOP_ERR_PARAM, 0,
				   "%s: size %lld is not a multiple of the cluster size (%" PRIu64 " bytes)", delta_path,
				   (long long)st.st_size, (uint64_t)cs * PLOOP_SECTOR_SIZE);
		if (err->status) {
			ploop_unlock_new_descriptor(dd_path, lock, lock_made);
			return err->status;
		}
	} else {
		if (ploop_delta_open(rdelta, PLOOP_OPEN_HEADER_ONLY | PLOOP_OPEN_ALLOW_DIRTY, 0, 0, &d, err)) {
			ploop_unlock_new_descriptor(dd_path, lock, lock_made);
			return err->status;
		}
		p.size_sectors = d->size_sectors;
		p.cluster_sectors = d->cluster_sectors;
		p.version = d->version;
		ploop_delta_close(d, NULL);
	}
	if (!ploop_descriptor_new(dd_path, strrchr(rdelta, '/') + 1, &p, &dd, err))
		ploop_descriptor_write(dd, dd_path, err);
	ploop_descriptor_free(dd);
	ploop_unlock_new_descriptor(dd_path, lock, lock_made);
	return err->status;
}

int ploop_merge_files(const char *const *paths, int n, bool raw_base, uint32_t raw_cs, struct ploop_error *err)
{
	struct ploop_delta *dst = NULL, *src[PLOOP_MAX_CHAIN] = { NULL };
	int nsrc = 0;

	if (n < 2 || n > PLOOP_MAX_CHAIN)
		return ploop_fail(err, PLOOP_ERR_PARAM, 0, "merge needs 2 to %d images, top first and base last",
				  PLOOP_MAX_CHAIN);
	if (ploop_files_distinct(paths, n, err))
		return err->status;
	for (int i = 0; i < n - 1; i++) {
		if (ploop_delta_open(paths[i], 0, 0, 0, &src[nsrc], err))
			goto out;
		nsrc++;
	}
	if (ploop_delta_open(paths[n - 1], PLOOP_OPEN_RDWR | PLOOP_OPEN_MARK_DIRTY | (raw_base ? PLOOP_OPEN_RAW : 0),
			     raw_cs ? raw_cs : src[0]->cluster_sectors, 0, &dst, err))
		goto out;
	if (raw_base && refuse_delta_as_raw(dst, "merge into it without -f raw", err))
		goto out;
	ploop_merge_deltas(dst, src, nsrc, err);
out:
	for (int i = 0; i < nsrc; i++)
		ploop_delta_close(src[i], NULL);
	ploop_delta_close(dst, err);
	return err->status;
}
