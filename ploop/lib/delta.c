/* One delta file: the header/BAT codec, validation of everything read from disk, creation, and
 * the in-memory BAT with its crash-safe write-back (data durable before the entries that point at it). */
#include <endian.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/falloc.h>
#include <stdio.h>

#include "internal.h"

/* ---- codec ---------------------------------------------------------------------------------------- */

void ploop_header_decode(const void *raw, struct ploop_pvd_header *h)
{
	memcpy(h, raw, sizeof(*h));
	h->m_Type = le32toh(h->m_Type);
	h->m_Heads = le32toh(h->m_Heads);
	h->m_Cylinders = le32toh(h->m_Cylinders);
	h->m_Sectors = le32toh(h->m_Sectors);
	h->m_Size = le32toh(h->m_Size);
	h->m_SizeInSectors = le64toh(h->m_SizeInSectors);
	h->m_DiskInUse = le32toh(h->m_DiskInUse);
	h->m_FirstBlockOffset = le32toh(h->m_FirstBlockOffset);
	h->m_Flags = le32toh(h->m_Flags);
	h->m_FormatExtensionOffset = le64toh(h->m_FormatExtensionOffset);
}

void ploop_header_encode(const struct ploop_pvd_header *h, void *raw)
{
	struct ploop_pvd_header o = *h;

	o.m_Type = htole32(h->m_Type);
	o.m_Heads = htole32(h->m_Heads);
	o.m_Cylinders = htole32(h->m_Cylinders);
	o.m_Sectors = htole32(h->m_Sectors);
	o.m_Size = htole32(h->m_Size);
	o.m_SizeInSectors = htole64(h->m_SizeInSectors);
	o.m_DiskInUse = htole32(h->m_DiskInUse);
	o.m_FirstBlockOffset = htole32(h->m_FirstBlockOffset);
	o.m_Flags = htole32(h->m_Flags);
	o.m_FormatExtensionOffset = htole64(h->m_FormatExtensionOffset);
	memcpy(raw, &o, sizeof(o));
}

int ploop_header_version(const struct ploop_pvd_header *h)
{
	if (!memcmp(h->m_Sig, PLOOP_SIG_V2, PLOOP_SIG_LEN))
		return 2;
	if (!memcmp(h->m_Sig, PLOOP_SIG_V1, PLOOP_SIG_LEN))
		return 1;
	return 0;
}

uint64_t ploop_header_size_sectors(const struct ploop_pvd_header *h, int version)
{
	/* v1 keeps a u32 size; the next four bytes are unused and may hold anything. */
	return version == 1 ? (h->m_SizeInSectors & 0xffffffffu) : h->m_SizeInSectors;
}

/* The informational CHS geometry of upstream's ConvertToCHS. */
void ploop_chs(uint64_t s, uint32_t *cyl, uint32_t *heads, uint32_t *secs)
{
	static const uint32_t sec_try[] = { 63, 32, 16, 8 }, head_try[] = { 16, 8, 4, 2 };

	if (s > 1032192 && s < 16777216) {
		*secs = 63;
		*heads = 16;
		*cyl = (uint32_t)(s / (63 * 16));
		return;
	}
	for (size_t i = 0; i < ARRAY_SIZE(sec_try); i++) {
		if (s % sec_try[i])
			continue;
		for (size_t j = 0; j < ARRAY_SIZE(head_try); j++) {
			if ((s / sec_try[i]) % head_try[j])
				continue;
			*secs = sec_try[i];
			*heads = head_try[j];
			*cyl = (uint32_t)(s / sec_try[i] / head_try[j]);
			return;
		}
	}
	*secs = 1;
	*heads = 1;
	*cyl = (uint32_t)s;
}

void ploop_header_init(struct ploop_pvd_header *h, int version, uint64_t size_sectors, uint32_t cs)
{
	uint64_t entries = size_sectors / cs;
	uint32_t cyl, heads, secs;

	memset(h, 0, sizeof(*h));
	memcpy(h->m_Sig, version == 1 ? PLOOP_SIG_V1 : PLOOP_SIG_V2, PLOOP_SIG_LEN);
	h->m_Type = PLOOP_IMAGE_TYPE;
	ploop_chs(size_sectors, &cyl, &heads, &secs);
	h->m_Cylinders = cyl;
	h->m_Heads = heads;
	h->m_Sectors = cs;
	h->m_Size = (uint32_t)entries;
	h->m_SizeInSectors = size_sectors;
	h->m_FirstBlockOffset = (uint32_t)(ploop_bat_clusters(entries, (uint64_t)cs * PLOOP_SECTOR_SIZE) * cs);
	h->m_Flags = PLOOP_FLAG_EMPTY;
}

int ploop_bat_encode(int version, uint32_t cs, uint64_t cluster, uint32_t *entry)
{
	uint64_t e = version == 1 ? cluster * cs : cluster;

	if (e >= PLOOP_BAT_INVALID)
		return -EFBIG;
	*entry = (uint32_t)e;
	return 0;
}

/* ---- validation ------------------------------------------------------------------------------------ */

int ploop_header_validate(struct ploop_delta *d, struct ploop_error *err)
{
	const struct ploop_pvd_header *h = &d->hdr;
	uint64_t cs_bytes, vclusters, capacity;

	d->version = ploop_header_version(h);
	if (!d->version)
		return ploop_fail(err, PLOOP_ERR_FORMAT, 0, "%s: not a ploop image (wrong signature)", d->path);
	if (h->m_Type != PLOOP_IMAGE_TYPE)
		return ploop_fail(err, PLOOP_ERR_FORMAT, 0, "%s: wrong image type %" PRIu32, d->path, h->m_Type);
	if (!ploop_cluster_size_valid(h->m_Sectors))
		return ploop_fail(err, PLOOP_ERR_FORMAT, 0, "%s: wrong cluster size %" PRIu32 " sectors", d->path,
				  h->m_Sectors);
	if (!h->m_FirstBlockOffset || h->m_FirstBlockOffset % h->m_Sectors)
		return ploop_fail(err, PLOOP_ERR_FORMAT, 0, "%s: wrong first block offset %" PRIu32, d->path,
				  h->m_FirstBlockOffset);
	d->cluster_sectors = h->m_Sectors;
	d->cluster_bytes = cs_bytes = (uint64_t)h->m_Sectors * PLOOP_SECTOR_SIZE;
	d->size_sectors = ploop_header_size_sectors(h, d->version);
	d->bat_entries = h->m_Size;
	d->l1_size = h->m_FirstBlockOffset / h->m_Sectors;
	if (!d->size_sectors)
		return ploop_fail(err, PLOOP_ERR_FORMAT, 0, "%s: virtual size is zero", d->path);
	vclusters = d->size_sectors / h->m_Sectors + (d->size_sectors % h->m_Sectors != 0);
	if (vclusters > h->m_Size)
		return ploop_fail(err, PLOOP_ERR_FORMAT, 0,
				  "%s: size of %" PRIu64 " sectors needs %" PRIu64 " BAT entries, header has %" PRIu32,
				  d->path, d->size_sectors, vclusters, h->m_Size);
	d->vclusters = (uint32_t)vclusters;
	capacity = (uint64_t)d->l1_size * cs_bytes / 4;
	if ((uint64_t)h->m_Size + PLOOP_MAP_OFFSET > capacity)
		return ploop_fail(err, PLOOP_ERR_FORMAT, 0,
				  "%s: BAT of %" PRIu32 " entries does not fit before the first block offset", d->path,
				  h->m_Size);
	if (d->file_size < (uint64_t)d->l1_size * cs_bytes)
		return ploop_fail(err, PLOOP_ERR_FORMAT, 0,
				  "%s: file of %" PRIu64 " bytes is shorter than its header and BAT (%" PRIu64 " bytes)",
				  d->path, d->file_size, (uint64_t)d->l1_size * cs_bytes);
	return 0;
}

/* File cluster of a raw BAT entry, or an error naming what is wrong with it. @used marks clusters
 * already referenced (may be NULL). */
static int bat_entry_cluster(const struct ploop_delta *d, uint64_t v, uint32_t e, uint64_t *cluster,
			     struct ploop_error *err)
{
	uint64_t c;

	if (e == PLOOP_BAT_INVALID)
		return ploop_fail(err, PLOOP_ERR_FORMAT, 0, "%s: BAT entry %" PRIu64 " is 0xffffffff", d->path, v);
	if (d->version == 1) {
		if (e % d->cluster_sectors)
			return ploop_fail(err, PLOOP_ERR_FORMAT, 0,
					  "%s: BAT entry %" PRIu64 " (sector %" PRIu32 ") is not cluster-aligned",
					  d->path, v, e);
		c = e / d->cluster_sectors;
	} else {
		c = e;
	}
	if (c < d->l1_size)
		return ploop_fail(err, PLOOP_ERR_FORMAT, 0,
				  "%s: BAT entry %" PRIu64 " points into the header/BAT area (cluster %" PRIu64 ")",
				  d->path, v, c);
	if ((c + 1) * d->cluster_bytes > d->file_size)
		return ploop_fail(err, PLOOP_ERR_FORMAT, 0,
				  "%s: BAT entry %" PRIu64 " points to cluster %" PRIu64 " beyond the end of the file",
				  d->path, v, c);
	*cluster = c;
	return 0;
}

uint64_t ploop_delta_bat_bytes(const struct ploop_delta *d)
{
	return PLOOP_MAP_OFFSET * 4 + (uint64_t)d->vclusters * 4;
}

/* Reads and validates every BAT entry of the virtual size: holes, alignment, header area, end of
 * file and duplicates. Entries past the virtual size are padding and never used. */
int ploop_delta_load_bat(struct ploop_delta *d, struct ploop_error *err)
{
	uint64_t bytes = ploop_delta_bat_bytes(d), file_clusters = d->file_size / d->cluster_bytes;
	cleanup_free uint8_t *raw = NULL;
	cleanup_free uint8_t *used = NULL;
	int r;

	if (d->bat || d->raw)
		return 0;
	raw = malloc(bytes);
	used = calloc(file_clusters / 8 + 1, 1);
	d->bat = calloc((size_t)d->vclusters + 1, sizeof(uint32_t));
	d->n_pages = (bytes + PLOOP_PAGE - 1) / PLOOP_PAGE;
	d->dirty_pages = calloc(d->n_pages / 8 + 1, 1);
	if (!raw || !used || !d->bat || !d->dirty_pages)
		return ploop_fail(err, PLOOP_ERR_MALLOC, ENOMEM, "%s: BAT of %" PRIu32 " entries", d->path,
				  d->vclusters);
	r = pio_read_full(d->file, raw, bytes, 0);
	if (r)
		return ploop_fail(err, PLOOP_ERR_READ, -r, "%s: cannot read the BAT", d->path);
	for (uint64_t v = 0; v < d->vclusters; v++) {
		uint32_t e;
		uint64_t c = 0;

		memcpy(&e, raw + 64 + v * 4, 4);
		e = le32toh(e);
		if (e == PLOOP_BAT_HOLE)
			continue;
		if (bat_entry_cluster(d, v, e, &c, err))
			return err->status;
		if (used[c / 8] & (1u << (c % 8)))
			return ploop_fail(err, PLOOP_ERR_FORMAT, 0,
					  "%s: cluster %" PRIu64 " is used more than once (BAT entry %" PRIu64 ")",
					  d->path, c, v);
		used[c / 8] |= (uint8_t)(1u << (c % 8));
		d->bat[v] = (uint32_t)c;
	}
	return 0;
}

/*
 * The largest disk a delta can describe: a cluster count that fits in 32 bits and, for a ploop
 * delta, a BAT that fits the header and whose entries can index the clusters of the disk (v1: a
 * disk of at most 2^32-1 sectors, §1.3). A v1 file that grows past what its sector entries can
 * address is refused at allocation, not here: 1.15 creates, grows and snapshots such disks. One rule
 * for create (init, snapshot), grow and resize, which checks it before it mounts or changes
 * anything. The first test also keeps the rounding up to a whole cluster from overflowing.
 */
static int check_size(const char *path, int version, bool raw, uint64_t cs, uint64_t size_sectors,
		      struct ploop_error *err)
{
	uint64_t vclusters, l1;

	if (size_sectors / cs >= UINT32_MAX)
		return ploop_fail(err, PLOOP_ERR_PARAM, 0, "%s: %" PRIu64 " sectors is too large", path, size_sectors);
	if (raw)
		return 0;
	vclusters = (size_sectors + cs - 1) / cs;
	l1 = ploop_bat_clusters(vclusters, cs * PLOOP_SECTOR_SIZE);
	if ((version == 1 && vclusters * cs > UINT32_MAX) || vclusters + l1 >= PLOOP_BAT_INVALID ||
	    l1 * cs > UINT32_MAX)
		return ploop_fail(err, PLOOP_ERR_PARAM, 0, "%s: %" PRIu64 " sectors is too large for format v%d",
				  path, vclusters * cs, version);
	return 0;
}

int ploop_delta_check_size(const struct ploop_delta *d, uint64_t size_sectors, struct ploop_error *err)
{
	return check_size(d->path, d->version, d->raw, d->cluster_sectors, size_sectors, err);
}

/* ---- create ---------------------------------------------------------------------------------------- */

/* Checks create parameters and fills defaults; computes the header. */
static int create_params_check(const char *path, const struct ploop_create_params *in,
			       struct ploop_create_params *p, struct ploop_pvd_header *h, struct ploop_error *err)
{
	*p = *in;
	if (!p->cluster_sectors)
		p->cluster_sectors = PLOOP_DEF_CLUSTER_SECTORS;
	if (!p->version)
		p->version = 2;
	if (p->version != 1 && p->version != 2)
		return ploop_fail(err, PLOOP_ERR_PARAM, 0, "%s: unknown format version %d", path, p->version);
	if (!ploop_cluster_size_valid(p->cluster_sectors))
		return ploop_fail(err, PLOOP_ERR_PARAM, 0,
				  "%s: cluster size %" PRIu32 " sectors is not a power of two in 64..131072", path,
				  p->cluster_sectors);
	if (!p->size_sectors)
		return ploop_fail(err, PLOOP_ERR_PARAM, 0, "%s: size must be greater than zero", path);
	if (check_size(path, p->version, p->mode == PLOOP_MODE_RAW, p->cluster_sectors, p->size_sectors, err))
		return err->status;
	p->size_sectors = (p->size_sectors + p->cluster_sectors - 1) / p->cluster_sectors * p->cluster_sectors;
	if (p->mode != PLOOP_MODE_RAW)
		ploop_header_init(h, p->version, p->size_sectors, p->cluster_sectors);
	return 0;
}

/* Writes the BAT of a preallocated image (v -> l1 + v) in large chunks. */
static int write_prealloc_bat(struct ploop_file *f, const struct ploop_pvd_header *h, int version, uint64_t l1)
{
	const size_t chunk = 1u << 20;
	cleanup_free uint32_t *buf = malloc(chunk);
	uint64_t off = 64, end = 64 + (uint64_t)h->m_Size * 4, v = 0;

	if (!buf)
		return -ENOMEM;
	while (off < end) {
		size_t n = (end - off) < chunk ? (size_t)(end - off) : chunk;
		uint32_t e = 0;

		for (size_t i = 0; i < n / 4; i++, v++) {
			ploop_bat_encode(version, h->m_Sectors, l1 + v, &e);
			buf[i] = htole32(e);
		}
		int r = pio_write(f, buf, n, off);

		if (r)
			return r;
		off += n;
	}
	return 0;
}

/* Writes @len zero bytes at @off. */
static int write_zeros(struct ploop_file *f, uint64_t off, uint64_t len)
{
	const size_t chunk = 1u << 20;
	cleanup_free uint8_t *zero = calloc(1, chunk);

	if (!zero)
		return -ENOMEM;
	while (len) {
		size_t n = len < chunk ? (size_t)len : chunk;
		int r = pio_write(f, zero, n, off);

		if (r)
			return r;
		off += n;
		len -= n;
	}
	return 0;
}

int ploop_delta_create(const char *path, const struct ploop_create_params *in, struct ploop_error *err)
{
	struct ploop_create_params p;
	struct ploop_pvd_header h;
	struct ploop_file *f = NULL;
	uint8_t page[sizeof(struct ploop_pvd_header)];
	uint64_t cs_bytes, l1;
	const char *what = "create";
	int r;

	if (create_params_check(path, in, &p, &h, err))
		return err->status;
	cs_bytes = (uint64_t)p.cluster_sectors * PLOOP_SECTOR_SIZE;
	r = pio_open(path, O_RDWR | O_CREAT | O_EXCL, 0600, &f);
	if (r)
		return ploop_fail(err, PLOOP_ERR_CREAT, -r, "%s: cannot create", path);

	if (p.mode == PLOOP_MODE_RAW) {
		what = "allocate";
		r = p.sparse ? pio_truncate(f, p.size_sectors * PLOOP_SECTOR_SIZE)
			     : pio_allocate(f, 0, p.size_sectors * PLOOP_SECTOR_SIZE);
		goto sync;
	}
	l1 = h.m_FirstBlockOffset / h.m_Sectors;
	what = "allocate";
	r = pio_allocate(f, 0, (l1 + (p.mode == PLOOP_MODE_PREALLOCATED ? h.m_Size : 0)) * cs_bytes);
	if (r)
		goto fail;
	what = "write";
	/* The BAT clusters are written whole, as upstream does: fallocated space is an unwritten
	 * extent, and BAT pages written into it later would leave parts of a cluster unwritten, which
	 * upstream's check rejects ("image is sparse"). The header goes in last: a file without it is
	 * not an image. */
	r = write_zeros(f, sizeof(h), l1 * cs_bytes - sizeof(h));
	if (r)
		goto fail;
	if (p.mode == PLOOP_MODE_PREALLOCATED) {
		r = write_prealloc_bat(f, &h, p.version, l1);
		if (r)
			goto fail;
	}
	ploop_header_encode(&h, page);
	r = pio_write(f, page, sizeof(h), 0);
sync:
	if (r)
		goto fail;
	what = "sync";
	r = pio_sync(f);
	if (r)
		goto fail;
	pio_close(f);
	r = pio_sync_parent(path);
	if (r) {
		pio_unlink(path);
		return ploop_fail(err, PLOOP_ERR_FSYNC, -r, "%s: cannot sync the directory", path);
	}
	PLOG("Created delta %s: %" PRIu64 " sectors, cluster %" PRIu32 ", v%d", path, p.size_sectors,
	     p.cluster_sectors, p.mode == PLOOP_MODE_RAW ? 0 : p.version);
	return 0;
fail:
	pio_close(f);
	pio_unlink(path);
	return ploop_fail(err, ploop_write_status(r), -r, "%s: cannot %s", path,
			  what);
}

/* ---- open / close -------------------------------------------------------------------------------- */

static void delta_free(struct ploop_delta *d)
{
	if (!d)
		return;
	if (d->dio_fd >= 0)
		close(d->dio_fd);
	pio_close(d->file);
	free(d->bat);
	free(d->dirty_pages);
	free(d->path);
	free(d);
}

int ploop_delta_write_header(struct ploop_delta *d, struct ploop_error *err)
{
	uint8_t raw[sizeof(struct ploop_pvd_header)];
	int r;

	ploop_header_encode(&d->hdr, raw);
	r = pio_write(d->file, raw, sizeof(raw), 0);
	if (r)
		return ploop_fail(err, ploop_write_status(r), -r, "%s: cannot write the header", d->path);
	d->header_dirty = false;
	return 0;
}

bool ploop_delta_empty_by_size(const struct ploop_delta *d)
{
	return d->file_size <= (uint64_t)d->hdr.m_FirstBlockOffset * PLOOP_SECTOR_SIZE;
}

/* Sets or clears the dirty marker durably (everything written before is made durable first). A
 * delta left clean says with CIF_Empty whether it holds anything: 1.15's check wants the flag set
 * exactly when the file ends at its BAT (a top whose only clusters were given back, or cut off as
 * a killed server's preallocated tail, is empty again), and rejects it otherwise (rc 7 read-only). */
int ploop_delta_set_dirty(struct ploop_delta *d, bool dirty, struct ploop_error *err)
{
	int r;

	if (dirty) {
		d->hdr.m_DiskInUse = PLOOP_DISK_IN_USE;
	} else {
		if (ploop_delta_flush(d, err))
			return err->status;
		d->hdr.m_DiskInUse = 0;
		if (!d->raw) {
			if (ploop_delta_empty_by_size(d))
				d->hdr.m_Flags |= PLOOP_FLAG_EMPTY;
			else
				d->hdr.m_Flags &= ~PLOOP_FLAG_EMPTY;
		}
	}
	if (ploop_delta_write_header(d, err))
		return err->status;
	r = pio_sync(d->file);
	if (r)
		return ploop_fail(err, PLOOP_ERR_FSYNC, -r, "%s: cannot sync", d->path);
	return 0;
}

int ploop_delta_open(const char *path, unsigned flags, uint32_t raw_cs, uint64_t raw_size,
		     struct ploop_delta **out, struct ploop_error *err)
{
	struct ploop_delta *d = calloc(1, sizeof(*d));
	uint8_t raw[sizeof(struct ploop_pvd_header)];
	int r;

	*out = NULL;
	if (!d || !(d->path = strdup(path))) {
		free(d);
		return ploop_fail(err, PLOOP_ERR_MALLOC, ENOMEM, "%s", path);
	}
	d->rw = flags & PLOOP_OPEN_RDWR;
	d->raw = flags & PLOOP_OPEN_RAW;
	d->dio_fd = -2;
	r = pio_open(path, d->rw ? O_RDWR : O_RDONLY, 0, &d->file);
	if (r) {
		pio_fail_open(err, r, path);
		goto fail;
	}
	if (!(flags & PLOOP_OPEN_NOLOCK)) {
		r = pio_lock(d->file, d->rw);
		if (r == -EAGAIN) {
			ploop_fail(err, PLOOP_ERR_LOCK, 0, "%s: image is locked by another process", path);
			goto fail;
		}
		if (r) {
			ploop_fail(err, PLOOP_ERR_LOCK, -r, "%s: cannot lock", path);
			goto fail;
		}
	}
	r = pio_size(d->file, &d->file_size);
	if (r) {
		ploop_fail(err, PLOOP_ERR_FSTAT, -r, "%s: cannot stat", path);
		goto fail;
	}

	if (d->raw) {
		if (!ploop_cluster_size_valid(raw_cs)) {
			ploop_fail(err, PLOOP_ERR_PARAM, 0, "%s: invalid cluster size %" PRIu32 " for a raw image",
				   path, raw_cs);
			goto fail;
		}
		d->cluster_sectors = raw_cs;
		d->cluster_bytes = (uint64_t)raw_cs * PLOOP_SECTOR_SIZE;
		d->size_sectors = raw_size ? raw_size : (d->file_size + PLOOP_SECTOR_SIZE - 1) / PLOOP_SECTOR_SIZE;
		if ((d->size_sectors + raw_cs - 1) / raw_cs > UINT32_MAX) {
			ploop_fail(err, PLOOP_ERR_PARAM, 0, "%s: raw image is too large", path);
			goto fail;
		}
		d->vclusters = d->bat_entries = (uint32_t)((d->size_sectors + raw_cs - 1) / raw_cs);
		*out = d;
		return 0;
	}

	r = pio_read_full(d->file, raw, sizeof(raw), 0);
	if (r) {
		ploop_fail(err, PLOOP_ERR_FORMAT, r == -EIO ? 0 : -r,
			   r == -EIO ? "%s: file is too short to be a ploop image" : "%s: cannot read the header",
			   path);
		goto fail;
	}
	ploop_header_decode(raw, &d->hdr);
	if (ploop_header_validate(d, err))
		goto fail;
	if (d->hdr.m_Flags & PLOOP_FLAG_FMT_CONVERT) {
		ploop_fail(err, PLOOP_ERR_BUSY, 0,
			   "%s: a format version conversion was interrupted (run ploop check DiskDescriptor.xml)",
			   path);
		goto fail;
	}
	if (d->hdr.m_DiskInUse == PLOOP_DISK_IN_USE && !(flags & PLOOP_OPEN_ALLOW_DIRTY)) {
		ploop_fail(err, PLOOP_ERR_IN_USE, 0,
			   "%s: image is marked in use: it is mounted, or was not closed cleanly (ploop check "
			   "-d clears the marker)",
			   path);
		goto fail;
	}
	d->alloc_head = d->file_size / d->cluster_bytes;
	if (!(flags & PLOOP_OPEN_HEADER_ONLY) && ploop_delta_load_bat(d, err))
		goto fail;
	if (d->rw && d->hdr.m_DiskInUse == PLOOP_DISK_CLOSED_V21) {
		/* A change tracking extension stops being true with the first write: drop it. */
		d->hdr.m_DiskInUse = 0;
		d->hdr.m_FormatExtensionOffset = 0;
		d->header_dirty = true;
	}
	if ((flags & PLOOP_OPEN_MARK_DIRTY) && d->rw) {
		if (ploop_delta_set_dirty(d, true, err))
			goto fail;
		d->marked_dirty = true;
	}
	*out = d;
	return 0;
fail:
	delta_free(d);
	return err->status;
}

int ploop_delta_close(struct ploop_delta *d, struct ploop_error *err)
{
	struct ploop_error local = { 0 };
	int r = 0;

	if (!d)
		return 0;
	if (!err)
		err = &local;
	if (d->rw && !d->raw) {
		if (d->marked_dirty)
			r = ploop_delta_set_dirty(d, false, err);
		else
			r = ploop_delta_flush(d, err);
	} else if (d->rw && d->data_unsynced) {
		int s = pio_sync(d->file);

		if (s)
			r = ploop_fail(err, PLOOP_ERR_FSYNC, -s, "%s: cannot sync", d->path);
	}
	delta_free(d);
	return r;
}

void ploop_delta_get_info(const struct ploop_delta *d, struct ploop_delta_info *o)
{
	memset(o, 0, sizeof(*o));
	o->version = d->raw ? 0 : d->version;
	o->size_sectors = d->size_sectors;
	o->cluster_sectors = d->cluster_sectors;
	o->bat_entries = d->bat_entries;
	o->bat_clusters = d->l1_size;
	o->file_size = d->file_size;
	o->disk_in_use = d->hdr.m_DiskInUse;
	o->flags = d->hdr.m_Flags;
	if (d->bat)
		for (uint64_t v = 0; v < d->vclusters; v++)
			o->allocated_clusters += d->bat[v] != 0;
	if (d->raw)
		o->allocated_clusters = (d->file_size + d->cluster_bytes - 1) / d->cluster_bytes;
}

bool ploop_delta_lookup(const struct ploop_delta *d, uint64_t v, uint64_t *off)
{
	if (v >= d->vclusters || (!d->raw && !d->bat))
		return false;
	if (d->raw) {
		*off = v * d->cluster_bytes;
		return *off < d->file_size;
	}
	if (!d->bat[v])
		return false;
	*off = (uint64_t)d->bat[v] * d->cluster_bytes;
	return true;
}

/* ---- BAT write-back ------------------------------------------------------------------------------- */

static void mark_entry_dirty(struct ploop_delta *d, uint64_t v)
{
	uint64_t page = (64 + v * 4) / PLOOP_PAGE;

	d->dirty_pages[page / 8] |= (uint8_t)(1u << (page % 8));
}

void ploop_delta_note_data(struct ploop_delta *d)
{
	d->data_unsynced = true;
	if (!d->raw && (d->hdr.m_Flags & PLOOP_FLAG_EMPTY)) {
		d->hdr.m_Flags &= ~PLOOP_FLAG_EMPTY;
		d->header_dirty = true;
	}
}

void ploop_delta_set_entry(struct ploop_delta *d, uint64_t v, uint32_t cluster)
{
	d->bat[v] = cluster;
	mark_entry_dirty(d, v);
	if (cluster)
		ploop_delta_note_data(d);
}

static bool page_dirty(const struct ploop_delta *d, size_t p)
{
	return d->dirty_pages[p / 8] & (1u << (p % 8));
}

/* Encodes BAT bytes [start, end) of the file into @buf. */
static void encode_bat_range(const struct ploop_delta *d, uint64_t start, uint64_t end, uint8_t *buf)
{
	for (uint64_t off = start; off < end; off += 4) {
		uint32_t e = 0;

		ploop_bat_encode(d->version, d->cluster_sectors, d->bat[(off - 64) / 4], &e);
		e = htole32(e);
		memcpy(buf + (off - start), &e, 4);
	}
}

/* Makes data durable, then writes changed BAT pages (and the header), then makes them durable. */
int ploop_delta_flush(struct ploop_delta *d, struct ploop_error *err)
{
	uint64_t bat_end = ploop_delta_bat_bytes(d);
	bool meta = d->header_dirty;
	cleanup_free uint8_t *buf = NULL;
	size_t p = 0;
	int r;

	if (!d->rw)
		return 0;
	for (size_t i = 0; d->dirty_pages && i < d->n_pages && !meta; i++)
		meta = page_dirty(d, i);
	if (!meta && !d->data_unsynced)
		return 0;
	r = pio_sync(d->file);
	if (r)
		return ploop_fail(err, PLOOP_ERR_FSYNC, -r, "%s: cannot sync data", d->path);
	d->data_unsynced = false;
	if (!meta)
		return 0;
	while (d->dirty_pages && p < d->n_pages) {
		size_t q = p;
		uint64_t start, end;

		if (!page_dirty(d, p)) {
			p++;
			continue;
		}
		while (q < d->n_pages && page_dirty(d, q))
			q++;
		start = p ? (uint64_t)p * PLOOP_PAGE : 64;
		end = (uint64_t)q * PLOOP_PAGE < bat_end ? (uint64_t)q * PLOOP_PAGE : bat_end;
		free(buf);
		buf = malloc(end - start);
		if (!buf)
			return ploop_fail(err, PLOOP_ERR_MALLOC, ENOMEM, "%s", d->path);
		encode_bat_range(d, start, end, buf);
		r = pio_write(d->file, buf, end - start, start);
		if (r)
			return ploop_fail(err, ploop_write_status(r), -r, "%s: cannot write the BAT", d->path);
		for (size_t i = p; i < q; i++)
			d->dirty_pages[i / 8] &= (uint8_t)~(1u << (i % 8));
		p = q;
	}
	if (d->header_dirty && ploop_delta_write_header(d, err))
		return err->status;
	r = pio_sync(d->file);
	if (r)
		return ploop_fail(err, PLOOP_ERR_FSYNC, -r, "%s: cannot sync the BAT", d->path);
	return 0;
}

int ploop_delta_alloc(struct ploop_delta *d, uint64_t n, bool fill, uint64_t *first, struct ploop_error *err)
{
	uint32_t e;
	int r = 0;

	if (d->alloc_head < d->l1_size)
		d->alloc_head = d->l1_size;
	if (ploop_bat_encode(d->version, d->cluster_sectors, d->alloc_head + n - 1, &e))
		return ploop_fail(err, PLOOP_ERR_WRITE, EFBIG,
				  "%s: image file is full (format v%d cannot address more clusters)", d->path,
				  d->version);
	/* A partial cluster at the end of the file (a crash while it grew) holds old bytes: a cluster
	 * handed out filled must read as zeros. */
	if (fill && d->alloc_head * d->cluster_bytes < d->file_size)
		r = write_zeros(d->file, d->alloc_head * d->cluster_bytes,
				d->file_size - d->alloc_head * d->cluster_bytes);
	if (fill && !r)
		r = pio_allocate(d->file, d->alloc_head * d->cluster_bytes, n * d->cluster_bytes);
	if (r)
		return ploop_fail(err, ploop_write_status(r), -r,
				  "%s: cannot allocate %" PRIu64 " clusters", d->path, n);
	*first = d->alloc_head;
	d->alloc_head += n;
	if (d->file_size < d->alloc_head * d->cluster_bytes)
		d->file_size = d->alloc_head * d->cluster_bytes;
	return 0;
}

/* ---- grow ------------------------------------------------------------------------------------------- */

/* Moves the data cluster at file cluster @c (mapped by @v) to @to, a cluster allocated for it. */
static int relocate_cluster(struct ploop_delta *d, uint64_t v, uint64_t c, uint64_t to, struct ploop_error *err)
{
	int r;

	r = pio_copy(d->file, c * d->cluster_bytes, d->file, to * d->cluster_bytes, d->cluster_bytes);
	if (r)
		return ploop_fail(err, PLOOP_ERR_RELOC, -r, "%s: cannot relocate cluster %" PRIu64, d->path, c);
	d->data_unsynced = true;
	ploop_delta_set_entry(d, v, (uint32_t)to);
	return ploop_delta_flush(d, err);
}

static int grow_raw(struct ploop_delta *d, uint64_t size_sectors, struct ploop_error *err)
{
	uint64_t bytes = size_sectors * PLOOP_SECTOR_SIZE;
	int r;

	if (bytes > d->file_size) {
		r = pio_allocate(d->file, d->file_size, bytes - d->file_size);
		if (!r)
			r = pio_sync(d->file);
		if (r)
			return ploop_fail(err, PLOOP_ERR_FALLOCATE, -r, "%s: cannot grow", d->path);
		d->file_size = bytes;
	}
	d->size_sectors = size_sectors;
	d->vclusters = d->bat_entries = (uint32_t)((size_sectors + d->cluster_sectors - 1) / d->cluster_sectors);
	return 0;
}

/*
 * Offline grow. The new BAT may need clusters that hold data: each such cluster is copied to the end
 * of the file and its entry repointed (durably) before the area is zeroed, and the header that makes
 * the area a BAT is written last. A crash at any point leaves the old, valid header in charge.
 * Everything the grow needs is allocated before anything moves, with @extra clusters for the caller
 * after it (*first_extra): running out of space fails there, with the file as it was (clusters
 * that had moved out would leave holes nothing gives back).
 */
static int grow_delta(struct ploop_delta *d, uint64_t size_sectors, uint64_t extra, uint64_t *first_extra,
		      struct ploop_error *err)
{
	uint64_t new_vclusters, new_l1, cs = d->cluster_sectors, old_bat_area;
	/* Clusters: of the future BAT area, inside the file and past its end; data clusters moving out. */
	uint64_t inside = 0, pad = 0, moves = 0, first = 0;
	cleanup_free uint64_t *owner = NULL;
	cleanup_free uint8_t *zero = NULL;
	uint32_t *bat;
	uint8_t *pages;
	size_t n_pages;
	int r;

	if (!d->rw)
		return ploop_fail(err, PLOOP_ERR_PARAM, 0, "%s: not opened for writing", d->path);
	if (ploop_delta_check_size(d, size_sectors, err))
		return err->status;
	size_sectors = (size_sectors + cs - 1) / cs * cs;
	if (size_sectors < d->size_sectors)
		return ploop_fail(err, PLOOP_ERR_PARAM, 0, "%s: cannot shrink from %" PRIu64 " to %" PRIu64 " sectors",
				  d->path, d->size_sectors, size_sectors);
	if (size_sectors == d->size_sectors)
		return extra ? ploop_delta_alloc(d, extra, true, first_extra, err) : 0;
	if (d->raw)	/* it maps every cluster in place: never @extra */
		return grow_raw(d, size_sectors, err);
	new_vclusters = size_sectors / cs;
	new_l1 = ploop_bat_clusters(new_vclusters, d->cluster_bytes);
	if (ploop_delta_load_bat(d, err))
		return err->status;

	bat = realloc(d->bat, (new_vclusters + 1) * sizeof(uint32_t));
	if (!bat)
		return ploop_fail(err, PLOOP_ERR_MALLOC, ENOMEM, "%s", d->path);
	memset(bat + d->vclusters, 0, (new_vclusters + 1 - d->vclusters) * sizeof(uint32_t));
	d->bat = bat;
	n_pages = (64 + new_vclusters * 4 + PLOOP_PAGE - 1) / PLOOP_PAGE;
	pages = realloc(d->dirty_pages, n_pages / 8 + 1);
	if (!pages)
		return ploop_fail(err, PLOOP_ERR_MALLOC, ENOMEM, "%s", d->path);
	memset(pages + d->n_pages / 8 + 1, 0, n_pages / 8 - d->n_pages / 8);
	d->dirty_pages = pages;

	if (!d->marked_dirty && ploop_delta_set_dirty(d, true, err))
		return err->status;

	if (new_l1 > d->l1_size) {
		inside = d->alloc_head < new_l1 ? d->alloc_head : new_l1;
		pad = new_l1 - inside;
		owner = calloc(new_l1 - d->l1_size, sizeof(*owner));
		if (!owner)
			return ploop_fail(err, PLOOP_ERR_MALLOC, ENOMEM, "%s", d->path);
		for (uint64_t v = 0; v < d->vclusters; v++)
			if (d->bat[v] >= d->l1_size && d->bat[v] < new_l1) {
				owner[d->bat[v] - d->l1_size] = v + 1;
				moves++;
			}
		/* The part of the future BAT area inside the file may have holes (clusters given back by
		 * a discard): the zeros written there must not run out of space after clusters moved. */
		r = inside > d->l1_size ? pio_allocate(d->file, d->l1_size * d->cluster_bytes,
						       (inside - d->l1_size) * d->cluster_bytes)
					: 0;
		if (r)
			return ploop_fail(err, ploop_write_status(r), -r,
					  "%s: cannot allocate the new BAT area", d->path);
	}
	/* One allocation: the rest of the future BAT area (new clusters never go there), a cluster for
	 * each one that moves out of it, and the caller's. */
	if (pad + moves + extra && ploop_delta_alloc(d, pad + moves + extra, true, &first, err))
		return err->status;
	if (extra)
		*first_extra = first + pad + moves;
	for (uint64_t c = d->l1_size, to = first + pad; c < inside; c++) {
		if (owner[c - d->l1_size] && relocate_cluster(d, owner[c - d->l1_size] - 1, c, to++, err))
			return err->status;
	}
	/* Zero every slot the new header will treat as a BAT entry beyond the old size, the padding
	 * of the old BAT clusters included: stale bytes there would become mappings. */
	old_bat_area = 64 + (uint64_t)d->vclusters * 4;
	zero = calloc(1, 1u << 20);
	if (!zero)
		return ploop_fail(err, PLOOP_ERR_MALLOC, ENOMEM, "%s", d->path);
	for (uint64_t off = old_bat_area, end = new_l1 * d->cluster_bytes; off < end;) {
		uint64_t n = end - off < (1u << 20) ? end - off : (1u << 20);

		r = pio_write(d->file, zero, n, off);
		if (r)
			return ploop_fail(err, ploop_write_status(r), -r, "%s: cannot clear the new BAT area", d->path);
		off += n;
	}
	r = pio_sync(d->file);
	if (r)
		return ploop_fail(err, PLOOP_ERR_FSYNC, -r, "%s: cannot sync", d->path);

	{
		uint32_t cyl, heads, secs;

		ploop_chs(size_sectors, &cyl, &heads, &secs);
		d->hdr.m_Cylinders = cyl;
		d->hdr.m_Heads = heads;
	}
	d->hdr.m_Size = (uint32_t)new_vclusters;
	d->hdr.m_SizeInSectors = size_sectors;
	if (new_l1 > d->l1_size)
		d->hdr.m_FirstBlockOffset = (uint32_t)(new_l1 * cs);
	d->size_sectors = size_sectors;
	d->vclusters = d->bat_entries = (uint32_t)new_vclusters;
	d->l1_size = (uint32_t)(new_l1 > d->l1_size ? new_l1 : d->l1_size);
	d->n_pages = n_pages;
	if (ploop_delta_write_header(d, err))
		return err->status;
	r = pio_sync(d->file);
	if (r)
		return ploop_fail(err, PLOOP_ERR_FSYNC, -r, "%s: cannot sync", d->path);
	if (!d->marked_dirty && ploop_delta_set_dirty(d, false, err))
		return err->status;
	PLOG("Grew %s to %" PRIu64 " sectors", d->path, size_sectors);
	return 0;
}

int ploop_delta_grow(struct ploop_delta *d, uint64_t size_sectors, struct ploop_error *err)
{
	return ploop_delta_grow_alloc(d, size_sectors, 0, NULL, err);
}

int ploop_delta_grow_alloc(struct ploop_delta *d, uint64_t size_sectors, uint64_t extra, uint64_t *first,
			   struct ploop_error *err)
{
	bool was_dirty = d->hdr.m_DiskInUse == PLOOP_DISK_IN_USE;
	int r = grow_delta(d, size_sectors, extra, first, err);

	/* A failed grow left the old header in charge: the image is as consistent as before. */
	if (r && !was_dirty && d->hdr.m_DiskInUse == PLOOP_DISK_IN_USE) {
		struct ploop_error e = { 0 };

		ploop_delta_set_dirty(d, false, &e);
	}
	return r;
}

/* ---- compaction ---------------------------------------------------------------------------------- */

/*
 * Moves the last clusters of the file into the holes before them (clusters no BAT entry names) and
 * truncates the file after the last one in use. Each batch of moves is copied and made durable,
 * then its entries are switched and made durable, before the old places are cut off. *moved gets
 * the number of clusters moved.
 */
int ploop_delta_compact(struct ploop_delta *d, uint64_t *moved, struct ploop_error *err)
{
	uint64_t end = d->alloc_head > d->l1_size ? d->alloc_head : d->l1_size, hole, last, n = 0;
	cleanup_free uint64_t *owner = NULL;
	cleanup_free uint8_t *buf = NULL;
	int r = 0;

	*moved = 0;
	if (!d->rw || d->raw)
		return ploop_fail(err, PLOOP_ERR_PARAM, 0, "%s: not a writable ploop delta", d->path);
	if (ploop_delta_load_bat(d, err) || ploop_delta_flush(d, err))
		return err->status;
	owner = calloc(end + 1, sizeof(*owner));
	buf = malloc(d->cluster_bytes);
	if (!owner || !buf)
		return ploop_fail(err, PLOOP_ERR_MALLOC, ENOMEM, "%s: compact", d->path);
	for (uint64_t v = 0; v < d->vclusters; v++)
		if (d->bat[v] && d->bat[v] < end)
			owner[d->bat[v]] = v + 1;
	hole = d->l1_size;
	last = end;	/* one past the highest cluster in use */
	for (;;) {
		while (last > d->l1_size && !owner[last - 1])
			last--;
		while (hole < last && owner[hole])
			hole++;
		if (hole >= last)
			break;
		r = pio_read(d->file, buf, d->cluster_bytes, (last - 1) * d->cluster_bytes);
		if (!r)
			r = pio_write(d->file, buf, d->cluster_bytes, hole * d->cluster_bytes);
		if (r)
			return ploop_fail(err, PLOOP_ERR_RELOC, -r, "%s: cannot move cluster %" PRIu64, d->path, last - 1);
		d->data_unsynced = true;
		owner[hole] = owner[last - 1];
		owner[last - 1] = 0;
		ploop_delta_set_entry(d, owner[hole] - 1, (uint32_t)hole);
		n++;
	}
	/* Data durable, then the entries naming its new places, then the old places go. */
	if (ploop_delta_flush(d, err))
		return err->status;
	if (last * d->cluster_bytes < d->file_size) {
		r = pio_truncate(d->file, last * d->cluster_bytes);
		if (!r)
			r = pio_sync(d->file);
		if (r)
			return ploop_fail(err, PLOOP_ERR_FTRUNCATE, -r, "%s: cannot truncate", d->path);
		d->file_size = last * d->cluster_bytes;
	}
	d->alloc_head = last;
	*moved = n;
	return 0;
}

/* Drops cluster @v from the BAT and gives its space back to the filesystem (the entry reaches the
 * disk at the next flush; until then the old entry reads the zeros of the punched range). */
int ploop_delta_drop_cluster(struct ploop_delta *d, uint64_t v, struct ploop_error *err)
{
	uint64_t c;

	if (!ploop_delta_lookup(d, v, &c) || d->raw)
		return 0;
	ploop_delta_set_entry(d, v, 0);
	if (fallocate(d->file->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)c, (off_t)d->cluster_bytes) &&
	    errno != EOPNOTSUPP)
		return ploop_fail(err, PLOOP_ERR_WRITE, errno, "%s: cannot punch cluster %" PRIu64, d->path, v);
	return 0;
}
