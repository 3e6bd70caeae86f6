/* Conversions of an image set: format version v1 <-> v2 (with the .idx backup that makes a crash
 * roll back), and layout: expanded -> preallocated, ploop1 -> raw. */
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <sys/stat.h>

#include "internal.h"

/* ---- version conversion ------------------------------------------------------------------------------------ */

static char *idx_path(const char *image)
{
	char *p;

	return asprintf(&p, "%s.idx", image) < 0 ? NULL : p;
}

static int read_header(const char *path, struct ploop_pvd_header *h, struct ploop_error *err)
{
	struct ploop_file *f;
	uint8_t raw[sizeof(*h)];
	int r = pio_open(path, O_RDONLY, 0, &f);

	if (r)
		return pio_fail_open(err, r, path);
	r = pio_read_full(f, raw, sizeof(raw), 0);
	pio_close(f);
	if (r)
		return ploop_fail(err, PLOOP_ERR_FORMAT, 0, "%s: cannot read the header", path);
	ploop_header_decode(raw, h);
	return 0;
}

/* NAME becomes a second name of the copy at @tmp_path in one step: a link made beside it (NAME.tmp.new)
 * is renamed over it, so NAME is the old delta or the copy at every instant, never missing. */
static int link_over(const char *tmp_path, const char *path, struct ploop_error *err)
{
	cleanup_free char *beside = NULL;
	int r;

	if (asprintf(&beside, "%s.new", tmp_path) < 0)
		return ploop_fail(err, PLOOP_ERR_MALLOC, ENOMEM, "%s", path);
	pio_unlink(beside);	/* an earlier attempt's */
	r = pio_link(tmp_path, beside);
	if (!r) {
		r = pio_rename(beside, path);
		if (r)
			pio_unlink(beside);
	}
	if (!r)
		r = pio_sync_parent(path);
	if (r)
		return ploop_fail(err, PLOOP_ERR_RENAME, -r, "%s: cannot link to %s", tmp_path, path);
	return 0;
}

/*
 * A conversion to raw (to_raw below) stopped after the descriptor named the raw copy NAME.tmp is
 * finished: NAME (the old ploop delta, or already a second name of the copy) made a name of the
 * copy, the descriptor back to NAME, the name NAME.tmp removed. Without a NAME beside it, a raw
 * image called NAME.tmp is left as it is (nothing says it was ours; to_raw never leaves NAME
 * missing).
 */
static int finish_to_raw(struct ploop_descriptor *dd, bool *done, struct ploop_error *err)
{
	struct ploop_image_entry *im = &dd->images[0];
	size_t n = strlen(im->file);
	cleanup_free char *file = NULL, *path = NULL;
	struct ploop_pvd_header h;
	struct stat a, b;
	bool linked;
	char *swap;

	if (!dd->raw || dd->n_images != 1 || n <= 4 || strcmp(im->file + n - 4, ".tmp"))
		return 0;
	if (!(file = strndup(im->file, n - 4)) || !(path = strndup(im->path, strlen(im->path) - 4)))
		return ploop_fail(err, PLOOP_ERR_MALLOC, ENOMEM, "%s", dd->path);
	if (stat(im->path, &a) || lstat(path, &b) || !S_ISREG(b.st_mode))
		return 0;
	linked = a.st_dev == b.st_dev && a.st_ino == b.st_ino;
	if (!linked && (read_header(path, &h, &(struct ploop_error){ 0 }) || !ploop_header_version(&h)))
		return 0;
	PNOTICE("Completing the interrupted conversion of %s to raw", path);
	if (!linked && link_over(im->path, path, err))
		return err->status;
	/* The descriptor takes NAME; file and path keep NAME.tmp's, to remove it (and free them). */
	swap = im->file, im->file = file, file = swap;
	swap = im->path, im->path = path, path = swap;
	if (!ploop_descriptor_store(dd, err) && !ploop_unlink_file(path, err))
		*done = true;
	return err->status;
}

/* Whether @h, read from @path, is a valid header but for its flags: a damaged one that happens to
 * carry the conversion flag is no stopped conversion (what reads the image reports the damage). */
static bool header_valid(const char *path, const struct ploop_pvd_header *h)
{
	struct ploop_delta d = { .hdr = *h, .path = (char *)path };
	struct ploop_error e = { 0 };
	struct stat st;

	if (stat(path, &st))
		return false;
	d.file_size = (uint64_t)st.st_size;
	return !ploop_header_validate(&d, &e);
}

/* A delta whose header still carries the conversion flag is restored from its .idx copy (written
 * and synced before the flag was set); every other delta is consistent in the version it has. */
int ploop_recover_conversion(struct ploop_descriptor *dd, bool *done, struct ploop_error *err)
{
	*done = false;
	if (finish_to_raw(dd, done, err))
		return err->status;
	for (int i = 0; i < dd->n_images; i++) {
		cleanup_free char *idx = NULL;
		struct ploop_pvd_header h;
		struct ploop_file *src = NULL, *dst = NULL;
		uint64_t size;
		int r;

		if (ploop_descriptor_raw_image(dd, i))
			continue;
		if (read_header(dd->images[i].path, &h, err))
			return err->status;
		if (!ploop_header_version(&h) || !(h.m_Flags & PLOOP_FLAG_FMT_CONVERT) ||
		    !header_valid(dd->images[i].path, &h))
			continue;
		idx = idx_path(dd->images[i].path);
		if (!idx)
			return ploop_fail(err, PLOOP_ERR_MALLOC, ENOMEM, "%s", dd->path);
		PNOTICE("Rolling back the interrupted format conversion of %s", dd->images[i].path);
		r = pio_open(idx, O_RDONLY, 0, &src);
		if (r)
			return ploop_fail(err, PLOOP_ERR_BUSY, -r,
					  "%s: conversion was interrupted and its backup %s cannot be opened",
					  dd->images[i].path, idx);
		r = pio_size(src, &size);
		if (!r)
			r = pio_open(dd->images[i].path, O_RDWR, 0, &dst);
		if (!r)
			r = pio_copy(src, 0, dst, 0, size);
		if (!r)
			r = pio_sync(dst);
		pio_close(src);
		pio_close(dst);
		if (r)
			return ploop_fail(err, ploop_write_status(r), -r, "%s: cannot restore from %s",
					  dd->images[i].path, idx);
		if (ploop_unlink_file(idx, err))
			return err->status;
		*done = true;
	}
	return 0;
}

/* Rewrites every BAT entry of one delta for @version (header and BAT only; data stays). */
static int convert_delta(struct ploop_delta *d, int version, struct ploop_error *err)
{
	for (uint64_t v = 0; v < d->vclusters; v++) {
		uint32_t e;

		if (d->bat[v] && ploop_bat_encode(version, d->cluster_sectors, d->bat[v], &e))
			return ploop_fail(err, PLOOP_ERR_PARAM, 0,
					  "%s: cluster %" PRIu32 " lies beyond what format v%d can address", d->path,
					  d->bat[v], version);
		if (d->bat[v])
			ploop_delta_set_entry(d, v, d->bat[v]);
	}
	for (size_t p = 0; p < d->n_pages; p++)
		d->dirty_pages[p / 8] |= (uint8_t)(1u << (p % 8));
	d->version = version;
	memcpy(d->hdr.m_Sig, version == 1 ? PLOOP_SIG_V1 : PLOOP_SIG_V2, PLOOP_SIG_LEN);
	if (version == 1)
		d->hdr.m_SizeInSectors &= 0xffffffffu;
	d->header_dirty = true;
	return 0;
}

/*
 * v1 <-> v2 (§1.12): back up header+BAT of every delta to .idx, flag all deltas, rewrite the entries
 * and signatures, clear the flags, drop the backups. Until the last flag is cleared, recovery rolls
 * every delta back from its backup; after that, only stale backups remain to be removed.
 */
int ploop_convert_version(const char *dd_path, int version, struct ploop_error *err)
{
	struct image_set s;
	struct ploop_delta *d[PLOOP_MAX_CHAIN] = { NULL };
	int n = 0, r = 0;

	if (version != 1 && version != 2)
		return ploop_fail(err, PLOOP_ERR_PARAM, 0, "format version must be 1 or 2");
	if (ploop_set_open(&s, dd_path, err))
		return err->status;
	for (int i = 0; i < s.dd->n_images; i++) {
		if (ploop_descriptor_raw_image(s.dd, i))
			continue;
		if (ploop_delta_open(s.dd->images[i].path, PLOOP_OPEN_RDWR, 0, 0, &d[n], err))
			goto out;
		if (version == 1 && d[n]->size_sectors > UINT32_MAX) {
			ploop_fail(err, PLOOP_ERR_PARAM, 0, "%s: %" PRIu64 " sectors is too large for format v1",
				   d[n]->path, d[n]->size_sectors);
			n++;
			goto out;
		}
		n++;
	}
	if (!n) {	/* as convert -f refuses it */
		ploop_fail(err, PLOOP_ERR_PARAM, 0, "%s: a raw image has no format version to convert", dd_path);
		goto out;
	}
	for (int i = 0; i < n; i++) {
		cleanup_free char *idx = idx_path(d[i]->path);
		struct ploop_file *f = NULL;
		uint64_t len = (uint64_t)d[i]->l1_size * d[i]->cluster_bytes;

		if (d[i]->version == version)
			continue;
		if (!idx) {
			ploop_fail(err, PLOOP_ERR_MALLOC, ENOMEM, "%s", dd_path);
			goto out;
		}
		r = pio_open(idx, O_WRONLY | O_CREAT | O_TRUNC, 0600, &f);
		if (!r)
			r = pio_copy(d[i]->file, 0, f, 0, len);
		if (!r)
			r = pio_sync(f);
		pio_close(f);
		if (!r)
			r = pio_sync_parent(idx);
		if (r) {
			pio_unlink(idx);
			ploop_fail(err, ploop_write_status(r), -r, "%s: cannot back up header and BAT", idx);
			goto out;
		}
	}
	for (int i = 0; i < n; i++) {
		if (d[i]->version == version)
			continue;
		d[i]->hdr.m_Flags |= PLOOP_FLAG_FMT_CONVERT;
		if (ploop_delta_set_dirty(d[i], true, err))
			goto out;
	}
	for (int i = 0; i < n; i++)
		if (d[i]->version != version && (convert_delta(d[i], version, err) || ploop_delta_flush(d[i], err)))
			goto out;
	for (int i = 0; i < n; i++) {
		cleanup_free char *idx = NULL;

		if (d[i]->version != version && !(d[i]->hdr.m_Flags & PLOOP_FLAG_FMT_CONVERT))
			continue;
		d[i]->hdr.m_Flags &= ~PLOOP_FLAG_FMT_CONVERT;
		if (d[i]->hdr.m_DiskInUse && ploop_delta_set_dirty(d[i], false, err))
			goto out;
		idx = idx_path(d[i]->path);
		if (idx && ploop_unlink_file(idx, err))
			goto out;
	}
out:
	for (int i = 0; i < n; i++)
		ploop_delta_close(d[i], NULL);
	if (err->status && ploop_recover_locked(dd_path, NULL, &(struct ploop_error){ 0 }))
		PNOTICE("%s: conversion failed; it will be rolled back by the next operation", dd_path);
	ploop_set_release(&s);
	return err->status;
}


/* ---- layout conversion -------------------------------------------------------------------------- */

/* Every cluster gets a place in the file; new ones are fallocated, so they read as the zeros they
 * were. The BAT entries are written after the space exists. A failure leaves the image as it was
 * (no entry changed, the file at its old size) and the descriptor without <Preallocated>. */
static int to_preallocated(struct image_set *s, struct ploop_error *err)
{
	struct ploop_delta *d;
	uint64_t missing = 0, first, old_size, now;

	if (ploop_delta_open(s->dd->images[0].path, PLOOP_OPEN_RDWR | PLOOP_OPEN_MARK_DIRTY, 0, 0, &d, err))
		return err->status;
	old_size = d->file_size;
	for (uint64_t v = 0; v < d->vclusters; v++)
		missing += !d->bat[v];
	if (missing && !ploop_delta_alloc(d, missing, true, &first, err)) {
		for (uint64_t v = 0; v < d->vclusters; v++)
			if (!d->bat[v])
				ploop_delta_set_entry(d, v, (uint32_t)first++);
	} else if (missing && !pio_size(d->file, &now) && now > old_size) {
		/* An allocation that failed part-way may have kept what it got (posix_allocate gives it
		 * back itself, another I/O table may not): no entry names it, so the file goes back to
		 * its old size. */
		pio_truncate(d->file, old_size);
	}
	if (ploop_delta_close(d, err) || err->status)
		return err->status;
	s->dd->preallocated = true;
	return ploop_descriptor_store(s->dd, err);
}

/* Writes the whole disk of delta @d as a raw file at @path (holes as zeros, file not sparse). */
static int write_raw_copy(struct ploop_delta *d, const char *path, struct ploop_error *err)
{
	struct ploop_file *f = NULL;
	uint64_t bytes = d->size_sectors * PLOOP_SECTOR_SIZE;
	int r;

	pio_unlink(path);
	r = pio_open(path, O_RDWR | O_CREAT | O_EXCL, 0600, &f);
	if (r)
		return ploop_fail(err, PLOOP_ERR_CREAT, -r, "%s: cannot create", path);
	r = pio_allocate(f, 0, bytes);
	for (uint64_t v = 0; !r && v < d->vclusters;) {
		uint64_t off, run = 1, len;

		if (!ploop_delta_lookup(d, v, &off)) {
			v++;
			continue;
		}
		while (v + run < d->vclusters && d->bat[v + run] == d->bat[v] + run)
			run++;
		len = run * d->cluster_bytes;
		if (v * d->cluster_bytes + len > bytes)
			len = bytes - v * d->cluster_bytes;
		r = pio_copy(d->file, off, f, v * d->cluster_bytes, len);
		v += run;
	}
	if (!r)
		r = pio_sync(f);
	pio_close(f);
	if (!r)
		r = pio_sync_parent(path);
	if (r) {
		pio_unlink(path);
		return ploop_fail(err, ploop_write_status(r), -r, "%s: cannot write",
				  path);
	}
	return 0;
}

/*
 * ploop1 -> raw, keeping the file name. The descriptor names a complete image at every instant:
 * raw copy at NAME.tmp; descriptor -> NAME.tmp (Plain); NAME replaced by a second name of the copy
 * (link_over); descriptor -> NAME; NAME.tmp removed.
 */
static int to_raw(struct image_set *s, struct ploop_error *err)
{
	struct ploop_descriptor *dd = s->dd;
	struct ploop_image_entry *im = &dd->images[0];
	cleanup_free char *orig_file = strdup(im->file);
	cleanup_free char *orig_path = strdup(im->path);
	cleanup_free char *tmp_file = NULL;
	cleanup_free char *tmp_path = NULL;
	struct ploop_delta *d;
	int r;

	if (!orig_file || !orig_path || asprintf(&tmp_file, "%s.tmp", im->file) < 0 ||
	    asprintf(&tmp_path, "%s.tmp", im->path) < 0)
		return ploop_fail(err, PLOOP_ERR_MALLOC, ENOMEM, "%s", dd->path);
	if (ploop_delta_open(orig_path, 0, 0, 0, &d, err))
		return err->status;
	r = write_raw_copy(d, tmp_path, err);
	ploop_delta_close(d, NULL);
	if (r)
		return r;
	free(im->file);
	free(im->path);
	im->file = strdup(tmp_file);
	im->path = strdup(tmp_path);
	if (!im->file || !im->path)
		return ploop_fail(err, PLOOP_ERR_MALLOC, ENOMEM, "%s", dd->path);
	dd->raw = true;
	dd->preallocated = false;
	if (ploop_descriptor_store(dd, err) || link_over(tmp_path, orig_path, err))
		return err->status;
	free(im->file);
	free(im->path);
	im->file = strdup(orig_file);
	im->path = strdup(orig_path);
	if (!im->file || !im->path)
		return ploop_fail(err, PLOOP_ERR_MALLOC, ENOMEM, "%s", dd->path);
	if (ploop_descriptor_store(dd, err))
		return err->status;
	return ploop_unlink_file(tmp_path, err);
}

int ploop_convert_mode(const char *dd_path, enum ploop_image_mode mode, struct ploop_error *err)
{
	struct image_set s;

	if (mode != PLOOP_MODE_PREALLOCATED && mode != PLOOP_MODE_RAW)
		return ploop_fail(err, PLOOP_ERR_PARAM, 0, "convert -f takes preallocated or raw");
	if (ploop_set_open(&s, dd_path, err))
		return err->status;
	if (s.dd->raw)
		ploop_fail(err, PLOOP_ERR_PARAM, 0, "%s: raw images cannot be converted", dd_path);
	else if (s.dd->n_images > 1)
		ploop_fail(err, PLOOP_ERR_PARAM, 0, "%s: has %d images; merge the snapshots first (snapshot-merge -A)",
			   dd_path, s.dd->n_images);
	else if (mode == PLOOP_MODE_PREALLOCATED)
		to_preallocated(&s, err);
	else
		to_raw(&s, err);
	ploop_set_release(&s);
	return err->status;
}
