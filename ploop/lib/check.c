/* `ploop check`: every consistency rule of a delta (header, size alignment, dirty and conversion
 * markers, each BAT slot, duplicate clusters), reported one finding per line; repairs only what
 * the flags allow, and nothing at all in read-only mode. Exit codes follow upstream. */
#include <dirent.h>
#include <endian.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>

#include "internal.h"

struct check {
	const struct ploop_check_params *p;
	struct ploop_delta d;		/* header fields only; the BAT is read raw here */
	bool rdonly;
	int fatal;			/* problems that are not repaired */
	int skipped;			/* repairable problems left alone in read-only mode */
	bool bat_changed;
	uint64_t end;			/* past the last cluster the BAT names (l1_size at least) */
};

__attribute__((format(printf, 2, 3)))
static void report(struct check *c, const char *fmt, ...)
{
	char buf[512];
	va_list ap;

	if (!c->p->report)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	c->p->report(c->p->ctx, buf);
}

/* A repairable problem: fixed unless read-only. Returns whether to apply the fix. */
static bool soft_fix(struct check *c)
{
	if (c->rdonly) {
		report(c, "  Skipped (read-only)");
		c->skipped++;
		return false;
	}
	return true;
}

/* A problem fixed only with -F (the fix drops the entry, and with it, data). */
static bool hard_fix(struct check *c)
{
	if ((c->p->flags & PLOOP_CHECK_HARD) && !c->rdonly) {
		report(c, "  Fixed: entry cleared");
		return true;
	}
	report(c, "  FATAL");
	c->fatal++;
	return false;
}

static int check_raw(struct check *c, struct ploop_error *err)
{
	uint64_t cs = (uint64_t)c->p->raw_cluster_sectors * PLOOP_SECTOR_SIZE;

	if (!ploop_cluster_size_valid(c->p->raw_cluster_sectors))
		return ploop_fail(err, PLOOP_ERR_PARAM, 0, "a raw check needs a valid cluster size (-b)");
	/* A notice, not an error: 1.15 accepts such a raw image (with -f, -r and -F too), and so do
	 * restore-descriptor -f raw and the check of its set: its last cluster is partial, nothing
	 * is out of place. */
	if (c->d.file_size % cs)
		report(c, "Raw image size %" PRIu64 " is not a multiple of the cluster size %" PRIu64, c->d.file_size,
		       cs);
	return 0;
}

/* Every slot of every BAT cluster, padding included. */
static int check_bat(struct check *c, uint8_t *bat, uint64_t bytes, struct ploop_error *err)
{
	struct ploop_delta *d = &c->d;
	uint64_t file_clusters = d->file_size / d->cluster_bytes, refs = 0, leaked = 0, first_leak = 0;
	cleanup_free uint8_t *used = calloc(file_clusters / 8 + 1, 1);
	bool clusters = c->p->flags & PLOOP_CHECK_CLUSTERS;

	if (!used)
		return ploop_fail(err, PLOOP_ERR_MALLOC, ENOMEM, "%s", d->path);
	for (uint64_t off = 64; off + 4 <= bytes; off += 4) {
		uint64_t v = (off - 64) / 4, cl;
		uint32_t e;

		memcpy(&e, bat + off, 4);
		e = le32toh(e);
		if (e == PLOOP_BAT_HOLE)
			continue;
		if (v >= d->vclusters) {
			report(c, "Data cluster (%" PRIu32 ") beyond block device size in BAT slot %" PRIu64, e, v);
			if (soft_fix(c)) {
				memset(bat + off, 0, 4);
				c->bat_changed = true;
			}
			continue;
		}
		if (e == PLOOP_BAT_INVALID || (d->version == 1 && e % d->cluster_sectors)) {
			report(c, "Invalid BAT entry %#" PRIx32 " for cluster %" PRIu64 " (not a cluster offset)", e, v);
			if (hard_fix(c)) {
				memset(bat + off, 0, 4);
				c->bat_changed = true;
			}
			continue;
		}
		cl = d->version == 1 ? e / d->cluster_sectors : e;
		if ((cl + 1) * d->cluster_bytes > d->file_size) {
			report(c, "Data cluster %" PRIu64 " beyond EOF, vsec=%" PRIu64, cl, v * d->cluster_sectors);
			if (hard_fix(c)) {
				memset(bat + off, 0, 4);
				c->bat_changed = true;
			}
			continue;
		}
		if (cl + 1 > c->end)
			c->end = cl + 1;
		if (!clusters)
			continue;
		if (cl < d->l1_size || (used[cl / 8] & (1u << (cl % 8)))) {
			report(c, "Block %" PRIu64 " is used more than once, vsec=%" PRIu64 "%s", cl, v * d->cluster_sectors,
			       cl < d->l1_size ? " (it is part of the header and BAT)" : "");
			report(c, "  FATAL");
			c->fatal++;
			continue;
		}
		used[cl / 8] |= (uint8_t)(1u << (cl % 8));
		refs++;
	}
	if (clusters) {
		/* (Past c->end, the tail: see ploop_check_delta.) */
		for (uint64_t cl = d->l1_size; cl < file_clusters && cl < c->end; cl++) {
			if (used[cl / 8] & (1u << (cl % 8)))
				continue;
			if (!leaked++)
				first_leak = cl;
		}
		if (leaked)
			report(c, "%" PRIu64 " unreferenced cluster(s) (holes), the first at block %" PRIu64
				  "; they are harmless",
			       leaked, first_leak);
	}
	return 0;
}

int ploop_check_delta(const char *path, const struct ploop_check_params *p, struct ploop_error *err)
{
	struct check c = { .p = p, .rdonly = p->flags & PLOOP_CHECK_RDONLY };
	struct ploop_delta *d = &c.d;
	uint8_t raw[sizeof(struct ploop_pvd_header)];
	cleanup_free uint8_t *bat = NULL;
	uint64_t bat_bytes;
	bool dirty, empty_wrong, want_empty;
	int r;

	d->path = (char *)path;
	r = pio_open(path, c.rdonly ? O_RDONLY : O_RDWR, 0, &d->file);
	if (r)
		return pio_fail_open(err, r, path);
	r = pio_lock(d->file, !c.rdonly);
	if (r) {
		ploop_fail(err, PLOOP_ERR_LOCK, r == -EAGAIN ? 0 : -r, "%s: image is locked by another process", path);
		goto out;
	}
	r = pio_size(d->file, &d->file_size);
	if (r) {
		ploop_fail(err, PLOOP_ERR_FSTAT, -r, "%s: cannot stat", path);
		goto out;
	}
	if (p->flags & PLOOP_CHECK_RAW) {
		check_raw(&c, err);
		goto out;
	}
	r = pio_read_full(d->file, raw, sizeof(raw), 0);
	if (r) {
		ploop_fail(err, PLOOP_ERR_FORMAT, 0, "%s: too short to hold a ploop header", path);
		goto out;
	}
	ploop_header_decode(raw, &d->hdr);
	/* The file may end in a partial cluster; the header rules see the whole-cluster part. */
	if (ploop_header_validate(d, err))
		goto out;

	if (d->file_size % d->cluster_bytes) {
		report(&c, "Image size %" PRIu64 " is not aligned to cluster %" PRIu64, d->file_size, d->cluster_bytes);
		if ((p->flags & (PLOOP_CHECK_FORCE | PLOOP_CHECK_HARD)) && !c.rdonly) {
			uint64_t to = (d->file_size / d->cluster_bytes + 1) * d->cluster_bytes;

			r = pio_allocate(d->file, d->file_size, to - d->file_size);
			if (r) {
				ploop_fail(err, PLOOP_ERR_FTRUNCATE, -r, "%s: cannot extend to a whole cluster", path);
				goto out;
			}
			report(&c, "  Fixed: extended to %" PRIu64 " bytes", to);
			d->file_size = to;
		} else {
			report(&c, "  Skipped");
			ploop_fail(err, PLOOP_ERR_FORMAT, 0, "%s: size is not aligned to the cluster (%s)", path,
				   c.rdonly ? "read-only check" : "-f extends it");
			goto out;
		}
	}
	dirty = d->hdr.m_DiskInUse == PLOOP_DISK_IN_USE;
	if (!dirty && !(p->flags & (PLOOP_CHECK_FORCE | PLOOP_CHECK_HARD)) && !c.skipped) {
		report(&c, "Image is clean, check is skipped");
		goto out;
	}
	if (d->hdr.m_Flags & PLOOP_FLAG_FMT_CONVERT) {
		ploop_fail(err, PLOOP_ERR_BUSY, 0,
			   "%s: image is in the middle of a format version conversion (check without -r of its "
			   "DiskDescriptor.xml, or any command that modifies the set, rolls it back)",
			   path);
		goto out;
	}

	bat_bytes = (uint64_t)d->l1_size * d->cluster_bytes;
	bat = malloc(bat_bytes);
	if (!bat) {
		ploop_fail(err, PLOOP_ERR_MALLOC, ENOMEM, "%s: BAT", path);
		goto out;
	}
	r = pio_read_full(d->file, bat, bat_bytes, 0);
	if (r) {
		ploop_fail(err, PLOOP_ERR_READ, -r, "%s: cannot read the BAT", path);
		goto out;
	}
	c.end = d->l1_size;
	if (check_bat(&c, bat, bat_bytes, err))
		goto out;
	if (c.bat_changed && !c.rdonly) {
		r = pio_write(d->file, bat + 64, bat_bytes - 64, 64);
		if (!r)
			r = pio_sync(d->file);
		if (r) {
			ploop_fail(err, ploop_write_status(r), -r, "%s: cannot write the repaired BAT", path);
			goto out;
		}
	}
	if (c.fatal) {
		ploop_fail(err, PLOOP_ERR_FORMAT, 0, "%s: fatal errors were found, the image is not repaired", path);
		goto out;
	}
	if (dirty && !(p->flags & PLOOP_CHECK_DROP_INUSE)) {
		ploop_fail(err, PLOOP_ERR_IN_USE, 0, "%s: dirty flag is set (ploop check -d clears it)", path);
		goto out;
	}
	/* Clusters past the last one the BAT names: what a writer that crashed allocated or preallocated
	 * (their entries never became durable). As upstream, they go with the dirty flag; else shown. */
	if (d->file_size > c.end * d->cluster_bytes) {
		uint64_t n = d->file_size / d->cluster_bytes - c.end;

		if (dirty && !c.rdonly && (p->flags & PLOOP_CHECK_DROP_INUSE)) {
			r = pio_truncate(d->file, c.end * d->cluster_bytes);
			if (!r)
				r = pio_sync(d->file);
			if (r) {
				ploop_fail(err, PLOOP_ERR_FTRUNCATE, -r, "%s: cannot trim the tail", path);
				goto out;
			}
			report(&c, "Trimmed the tail: %" PRIu64 " unreferenced cluster(s) at the end", n);
			d->file_size = c.end * d->cluster_bytes;
		} else if (dirty || (p->flags & PLOOP_CHECK_CLUSTERS)) {
			report(&c, "%" PRIu64 " unreferenced cluster(s) at the end, from block %" PRIu64 "%s", n, c.end,
			       dirty ? ": want to trim tail" : "; they are harmless");
		}
	}
	/* As 1.15: CIF_Empty set exactly when the file ends at its BAT (nothing allocated past it). */
	want_empty = ploop_delta_empty_by_size(d);
	empty_wrong = !(d->hdr.m_Flags & PLOOP_FLAG_EMPTY) != !want_empty;
	if (empty_wrong)
		report(&c, "CIF_Empty flag is incorrect");
	if (dirty || empty_wrong) {
		if (c.rdonly) {
			ploop_fail(err, PLOOP_ERR_WRITE, 0, "%s: %s, but the image is opened read-only", path,
				   dirty ? "dirty flag is set" : "CIF_Empty flag is incorrect");
			goto out;
		}
		if (dirty) {
			d->hdr.m_DiskInUse = 0;
			d->hdr.m_Flags = 0;
			d->hdr.m_FormatExtensionOffset = 0;
			report(&c, "Dropped the dirty flag");
		}
		d->hdr.m_Flags = (d->hdr.m_Flags & ~PLOOP_FLAG_EMPTY) | (want_empty ? PLOOP_FLAG_EMPTY : 0);
		if (ploop_delta_write_header(d, err))
			goto out;
		r = pio_sync(d->file);
		if (r) {
			ploop_fail(err, PLOOP_ERR_FSYNC, -r, "%s: cannot sync", path);
			goto out;
		}
	}
	if (c.skipped)
		ploop_fail(err, PLOOP_ERR_FORMAT, 0, "%s: problems were found and left alone (read-only check)", path);
out:
	pio_close(d->file);
	return err->status;
}

/* Deltas beside the set that its descriptor does not name: told, never touched (one holding data
 * is what a merge or delete stopped just before removing it leaves, or a copy an operator keeps). */
static void report_unnamed_deltas(const struct ploop_descriptor *dd)
{
	struct dirent *e;
	DIR *dir = opendir(dd->dir);

	while (dir && (e = readdir(dir))) {
		size_t len = strlen(e->d_name);

		if (ploop_descriptor_unnamed_delta(dd, e->d_name))
			PNOTICE("%s/%s is not in %s: left by an interrupted merge or delete, or kept there by hand; "
				"remove it if it is not needed",
				dd->dir, e->d_name, PLOOP_DESCRIPTOR_NAME);
		/* the image a killed import was filling: only an import of its name removes it */
		else if (len > sizeof(PLOOP_IMPORT_SUFFIX) - 1 &&
			 !strcmp(e->d_name + len - (sizeof(PLOOP_IMPORT_SUFFIX) - 1), PLOOP_IMPORT_SUFFIX) &&
			 ploop_descriptor_find_file(dd, e->d_name) < 0)
			PNOTICE("%s/%s is not in %s: the unfinished image of a killed ploop import; remove it",
				dd->dir, e->d_name, PLOOP_DESCRIPTOR_NAME);
	}
	if (dir)
		closedir(dir);
}

int ploop_check_descriptor(const char *dd_path, const char *guid, const struct ploop_check_params *p,
			   struct ploop_error *err)
{
	struct ploop_descriptor *dd = NULL;
	int idx[PLOOP_MAX_CHAIN], n, lock = -1;
	char g[PLOOP_GUID_BUF];
	bool rdonly = p->flags & PLOOP_CHECK_RDONLY, live = false;
	struct ploop_instance in;
	struct ploop_error none = { 0 };

	if (guid && ploop_parse_guid(guid, g))
		return ploop_fail(err, PLOOP_ERR_PARAM, 0, "'%s' is not a GUID", guid);
	live = !ploop_find_instance(dd_path, NULL, &in, &none) && in.alive;
	/* A mapped set (the kernel target takes no lock of ours) is being written: a repair,
	 * dropping its marker or trimming its tail, would race the writer. */
	if (live && !rdonly)
		return ploop_fail(err, PLOOP_ERR_BUSY, 0, "%s is mounted (%s): check it unmounted, or a snapshot read-only (-r -u UUID)",
				  dd_path, in.device);
	if (ploop_lock_descriptor(dd_path, !rdonly, &lock, err))
		return err->status;
	if (ploop_descriptor_read(dd_path, &dd, err))
		goto out;
	/* An interrupted merge leaves its target marked in use, an interrupted format conversion its
	 * deltas flagged, which a delta's read-only check can only report: a check that may write
	 * completes the merge or rolls the conversion back first, as every modifying command does. */
	if (!rdonly) {
		ploop_descriptor_free(dd);
		dd = NULL;
		if (ploop_recover_locked(dd_path, NULL, err) || ploop_descriptor_read(dd_path, &dd, err))
			goto out;
	}
	for (int i = 0; rdonly && i < dd->n_snapshots; i++)
		if (dd->snapshots[i].temporary && ploop_descriptor_children(dd, dd->snapshots[i].guid, NULL) == 1)
			PNOTICE("%s: the merge into snapshot %s was interrupted; the next command that modifies the "
				"set (or check without -r) completes it",
				dd_path, dd->snapshots[i].guid);
	if (ploop_descriptor_chain(dd, guid ? g : NULL, idx, &n, err))
		goto out;
	/* Read-only, the lower deltas of a mounted set can be checked (the server only reads them),
	 * its top cannot: it is being written (a dirty marker, clusters past the last BAT entry). */
	if (live && !in.ro && idx[n - 1] == ploop_descriptor_find_image(dd, dd->top_guid)) {
		ploop_fail(err, PLOOP_ERR_BUSY, 0,
			   "%s is mounted (%s): its top delta is being written; check it unmounted, or a snapshot (-u UUID)",
			   dd_path, in.device);
		goto out;
	}
	for (int i = 0; i < n; i++) {
		struct ploop_check_params q = *p;
		struct ploop_error e = { 0 };
		bool raw = dd->raw && i == 0;

		q.flags |= PLOOP_CHECK_CLUSTERS | PLOOP_CHECK_DROP_INUSE;
		if (i < n - 1)
			q.flags |= PLOOP_CHECK_RDONLY;
		if (raw) {
			q.flags |= PLOOP_CHECK_RAW;
			q.raw_cluster_sectors = dd->blocksize;
		}
		if (!raw && dd->blocksize) {
			struct ploop_delta *d;

			if (ploop_delta_open(dd->images[idx[i]].path,
					     PLOOP_OPEN_HEADER_ONLY | PLOOP_OPEN_ALLOW_DIRTY | PLOOP_OPEN_NOLOCK, 0, 0, &d,
					     &e) == 0) {
				if (d->cluster_sectors != dd->blocksize)
					ploop_fail(&e, PLOOP_ERR_DESCRIPTOR, 0,
						   "%s: cluster size %" PRIu32 " differs from Blocksize %" PRIu32
						   " in %s",
						   d->path, d->cluster_sectors, dd->blocksize, dd_path);
				ploop_delta_close(d, NULL);
			}
			e.status = e.status == PLOOP_ERR_DESCRIPTOR ? e.status : 0;
		}
		if (!e.status)
			ploop_check_delta(dd->images[idx[i]].path, &q, &e);
		if (e.status && !err->status)
			*err = e;
	}
	if (!guid)
		report_unnamed_deltas(dd);
out:
	ploop_descriptor_free(dd);
	ploop_unlock_descriptor(lock);
	return err->status;
}

int ploop_check_if_dirty(const char *path, bool compact, struct ploop_error *err)
{
	struct ploop_check_params cp = { .flags = PLOOP_CHECK_FORCE | PLOOP_CHECK_DROP_INUSE };
	struct ploop_delta *d;
	uint64_t moved = 0;
	bool dirty;

	if (ploop_delta_open(path, PLOOP_OPEN_HEADER_ONLY | PLOOP_OPEN_ALLOW_DIRTY, 0, 0, &d, err))
		return err->status;
	dirty = d->hdr.m_DiskInUse == PLOOP_DISK_IN_USE;
	ploop_delta_close(d, NULL);
	if (!dirty)
		return 0;
	PNOTICE("%s was not closed cleanly: checking it", path);
	if (ploop_check_delta(path, &cp, err) || !compact)
		return err->status;
	/* Clusters a crash left allocated but not yet named by the BAT, before the last one it names
	 * (a batch of a merge whose entries were being written), are given back too: the last
	 * clusters move into them and the file is cut. */
	if (ploop_delta_open(path, PLOOP_OPEN_RDWR | PLOOP_OPEN_MARK_DIRTY, 0, 0, &d, err))
		return err->status;
	ploop_delta_compact(d, &moved, err);
	ploop_delta_close(d, err);
	if (!err->status && moved)
		PNOTICE("%s: %" PRIu64 " cluster(s) moved into the holes a crash left", path, moved);
	return err->status;
}
