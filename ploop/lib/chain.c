/* A stack of deltas read as one disk: reads resolve through the chain (top-most delta holding a
 * cluster, else zeros); writes go to the top, allocating at the end of its file and copying whole
 * clusters up from lower deltas first. */
#include <inttypes.h>
#include <sys/stat.h>

#include "internal.h"

int ploop_chain_close(struct ploop_chain *c, struct ploop_error *err)
{
	int r = 0;

	if (!c)
		return 0;
	for (int i = c->depth - 1; i >= 0; i--) {
		int q = ploop_delta_close(c->deltas[i], err);

		if (!r)
			r = q;
	}
	free(c->cow_buf);
	free(c);
	return r;
}

/* One file twice in a chain (by name, or through a hard link) would be merged into itself, and
 * would otherwise be reported as locked by another process (our own lock on its first entry). */
int ploop_files_distinct(const char *const *paths, int n, struct ploop_error *err)
{
	struct stat st[PLOOP_MAX_CHAIN];

	for (int i = 0; i < n; i++) {
		if (stat(paths[i], &st[i]))
			st[i].st_ino = 0;	/* opening it will say why */
		for (int j = 0; j < i && st[i].st_ino; j++)
			if (st[j].st_ino == st[i].st_ino && st[j].st_dev == st[i].st_dev)
				return ploop_fail(err, PLOOP_ERR_PARAM, 0, "%s and %s are the same file", paths[j],
						  paths[i]);
	}
	return 0;
}

int ploop_chain_open_files(const char *const *paths, int n, bool raw_base, uint32_t raw_cs, unsigned flags,
			   struct ploop_chain **out, struct ploop_error *err)
{
	struct ploop_chain *c;
	struct ploop_delta *top;

	*out = NULL;
	if (n < 1 || n > PLOOP_MAX_CHAIN)
		return ploop_fail(err, PLOOP_ERR_PARAM, 0, "a chain holds 1 to %d images, not %d", PLOOP_MAX_CHAIN, n);
	if (ploop_files_distinct(paths, n, err))
		return err->status;
	c = calloc(1, sizeof(*c));
	if (!c)
		return ploop_fail(err, PLOOP_ERR_MALLOC, ENOMEM, "chain");
	/* Open the top first: a raw base takes its cluster size from it. */
	for (int i = n - 1; i >= 0; i--) {
		unsigned f = flags & (PLOOP_OPEN_ALLOW_DIRTY | PLOOP_OPEN_NOLOCK);
		uint32_t cs = raw_cs;

		if (i == n - 1)
			f |= flags & (PLOOP_OPEN_RDWR | PLOOP_OPEN_MARK_DIRTY);
		if (i == 0 && raw_base) {
			f |= PLOOP_OPEN_RAW;
			if (n > 1)
				cs = c->deltas[n - 1]->cluster_sectors;
		}
		if (ploop_delta_open(paths[i], f, cs, 0, &c->deltas[i], err)) {
			c->depth = n;
			ploop_chain_close(c, NULL);
			return err->status;
		}
	}
	c->depth = n;
	top = c->deltas[n - 1];
	for (int i = 0; i < n - 1; i++) {
		if (c->deltas[i]->cluster_sectors != top->cluster_sectors) {
			ploop_fail(err, PLOOP_ERR_FORMAT, 0,
				   "%s: cluster size %" PRIu32 " differs from the top delta's %" PRIu32,
				   c->deltas[i]->path, c->deltas[i]->cluster_sectors, top->cluster_sectors);
			ploop_chain_close(c, NULL);
			return err->status;
		}
	}
	c->cluster_bytes = top->cluster_bytes;
	c->size_bytes = top->size_sectors * PLOOP_SECTOR_SIZE;
	c->cow_buf = malloc(c->cluster_bytes);
	if (!c->cow_buf) {
		ploop_chain_close(c, NULL);
		return ploop_fail(err, PLOOP_ERR_MALLOC, ENOMEM, "chain");
	}
	*out = c;
	return 0;
}

uint64_t ploop_chain_size(const struct ploop_chain *c)
{
	return c->size_bytes;
}

uint32_t ploop_chain_cluster_bytes(const struct ploop_chain *c)
{
	return (uint32_t)c->cluster_bytes;
}

int ploop_chain_depth(const struct ploop_chain *c)
{
	return c->depth;
}

struct ploop_delta *ploop_chain_delta(const struct ploop_chain *c, int level)
{
	return level >= 0 && level < c->depth ? c->deltas[level] : NULL;
}

const char *ploop_chain_path(const struct ploop_chain *c, int level)
{
	return level >= 0 && level < c->depth ? c->deltas[level]->path : NULL;
}

/* Top-most level at or below @from holding @v. */
static int lookup_below(const struct ploop_chain *c, int from, uint64_t v, uint64_t *off)
{
	for (int i = from; i >= 0; i--)
		if (ploop_delta_lookup(c->deltas[i], v, off))
			return i;
	return -1;
}

int ploop_chain_lookup(const struct ploop_chain *c, uint64_t v, uint64_t *off)
{
	return lookup_below(c, c->depth - 1, v, off);
}

int ploop_chain_read(struct ploop_chain *c, void *buf, size_t len, uint64_t off, struct ploop_error *err)
{
	uint8_t *p = buf;

	if (off > c->size_bytes || len > c->size_bytes - off)
		return ploop_fail(err, PLOOP_ERR_PARAM, 0, "read of %zu bytes at %" PRIu64 " is past the end", len, off);
	while (len) {
		uint64_t v = off / c->cluster_bytes, in = off % c->cluster_bytes, foff;
		size_t n = (size_t)(c->cluster_bytes - in < len ? c->cluster_bytes - in : len);
		int level = ploop_chain_lookup(c, v, &foff);

		if (level < 0) {
			memset(p, 0, n);
		} else {
			int r = pio_read(c->deltas[level]->file, p, n, foff + in);

			if (r)
				return ploop_fail(err, PLOOP_ERR_READ, -r, "%s: read error", c->deltas[level]->path);
		}
		p += n;
		off += n;
		len -= n;
	}
	return 0;
}

static bool all_zero(const uint8_t *p, size_t n)
{
	return !n || (p[0] == 0 && !memcmp(p, p + 1, n - 1));
}

/* One write inside one cluster of the top delta. */
static int write_in_cluster(struct ploop_chain *c, uint64_t v, uint64_t in, const uint8_t *p, size_t n,
			    struct ploop_error *err)
{
	struct ploop_delta *top = c->deltas[c->depth - 1];
	uint64_t foff, lower_off, cl;
	int lower, r;

	if (top->raw || ploop_delta_lookup(top, v, &foff)) {
		if (top->raw)
			foff = v * c->cluster_bytes;
		r = pio_write(top->file, p, n, foff + in);
		if (r)
			return ploop_fail(err, ploop_write_status(r), -r,
					  "%s: write error", top->path);
		if (top->raw && foff + in + n > top->file_size)
			top->file_size = foff + in + n;
		ploop_delta_note_data(top);
		return 0;
	}
	lower = lookup_below(c, c->depth - 2, v, &lower_off);
	if (lower < 0 && all_zero(p, n))
		return 0;	/* a hole already reads as zeros */
	if (n < c->cluster_bytes) {
		/* Copy-up: the whole cluster moves to the top, then the write lands on the copy. A new
		 * cluster is written whole too, zeros around the data: no partly unwritten clusters. */
		if (lower >= 0)
			r = pio_read(c->deltas[lower]->file, c->cow_buf, c->cluster_bytes, lower_off);
		else
			r = (memset(c->cow_buf, 0, c->cluster_bytes), 0);
		if (r)
			return ploop_fail(err, PLOOP_ERR_READ, -r, "%s: read error", c->deltas[lower]->path);
		memcpy((uint8_t *)c->cow_buf + in, p, n);
		p = c->cow_buf;
		in = 0;
		n = c->cluster_bytes;
	}
	if (ploop_delta_alloc(top, 1, false, &cl, err))
		return err->status;
	r = pio_write(top->file, p, n, cl * c->cluster_bytes + in);
	if (r)
		return ploop_fail(err, ploop_write_status(r), -r, "%s: write error",
				  top->path);
	top->data_unsynced = true;
	ploop_delta_set_entry(top, v, (uint32_t)cl);
	return 0;
}

int ploop_chain_write(struct ploop_chain *c, const void *buf, size_t len, uint64_t off, struct ploop_error *err)
{
	const uint8_t *p = buf;

	if (!c->deltas[c->depth - 1]->rw)
		return ploop_fail(err, PLOOP_ERR_PARAM, 0, "%s: opened read-only", c->deltas[c->depth - 1]->path);
	if (off > c->size_bytes || len > c->size_bytes - off)
		return ploop_fail(err, PLOOP_ERR_PARAM, 0, "write of %zu bytes at %" PRIu64 " is past the end", len,
				  off);
	while (len) {
		uint64_t v = off / c->cluster_bytes, in = off % c->cluster_bytes;
		size_t n = (size_t)(c->cluster_bytes - in < len ? c->cluster_bytes - in : len);

		if (write_in_cluster(c, v, in, p, n, err))
			return err->status;
		p += n;
		off += n;
		len -= n;
	}
	return 0;
}

int ploop_chain_flush(struct ploop_chain *c, struct ploop_error *err)
{
	return ploop_delta_flush(c->deltas[c->depth - 1], err);
}
