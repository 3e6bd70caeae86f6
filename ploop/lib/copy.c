/* Moving whole disks: the allocation map of a chain, export of a chain (or one snapshot) to a raw
 * file or stream, and import of a raw file or stream into a new image that stores only data. */
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <sys/stat.h>

#include "internal.h"

int ploop_chain_map(struct ploop_chain *c, int (*fn)(void *ctx, const struct ploop_extent *e), void *ctx,
		    struct ploop_error *err)
{
	uint64_t cs = c->cluster_bytes, vmax = (c->size_bytes + cs - 1) / cs;
	struct ploop_extent e = { .level = -2 };

	for (uint64_t v = 0; v <= vmax; v++) {
		uint64_t off = 0;
		int level = v < vmax ? ploop_chain_lookup(c, v, &off) : -3;

		if (level == e.level && (level < 0 || off == e.file_offset + e.length)) {
			e.length += cs;
			continue;
		}
		if (e.level != -2) {
			if (e.start + e.length > c->size_bytes)
				e.length = c->size_bytes - e.start;
			if (fn(ctx, &e))
				return ploop_fail(err, PLOOP_ERR_SYS, 0, "map output failed");
		}
		e.start = v * cs;
		e.length = cs;
		e.level = level;
		e.file_offset = level >= 0 ? off : 0;
	}
	return 0;
}

struct export_ctx {
	struct ploop_chain *c;
	struct ploop_file out;
	bool stream;
	uint8_t *buf;
	size_t buf_len;
	struct ploop_error *err;
};

static int write_all(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int export_extent(void *ctx, const struct ploop_extent *e)
{
	struct export_ctx *x = ctx;
	struct ploop_file *src = e->level >= 0 ? x->c->deltas[e->level]->file : NULL;
	int r = 0;

	if (!x->stream) {
		if (!src)
			return 0;
		r = pio_copy(src, e->file_offset, &x->out, e->start, e->length);
		if (r)
			ploop_fail(x->err, r == -ENOSPC ? PLOOP_ERR_FALLOCATE : PLOOP_ERR_WRITE, -r,
				   "export: cannot copy from %s", x->c->deltas[e->level]->path);
		return r;
	}
	for (uint64_t done = 0; done < e->length && !r;) {
		size_t n = e->length - done < x->buf_len ? (size_t)(e->length - done) : x->buf_len;

		if (src) {
			r = pio_read(src, x->buf, n, e->file_offset + done);
			if (r) {
				ploop_fail(x->err, PLOOP_ERR_READ, -r, "%s: read error", x->c->deltas[e->level]->path);
				return r;
			}
		} else {
			memset(x->buf, 0, n);
		}
		r = write_all(x->out.fd, x->buf, n);
		if (r)
			ploop_fail(x->err, PLOOP_ERR_WRITE, -r, "export: cannot write the output");
		done += n;
	}
	return r;
}

int ploop_export(struct ploop_chain *c, int fd, struct ploop_error *err)
{
	struct export_ctx x = { .c = c, .err = err };
	struct stat st;
	int r;

	if (fstat(fd, &st))
		return ploop_fail(err, PLOOP_ERR_FSTAT, errno, "export: output");
	x.stream = !S_ISREG(st.st_mode);
	x.out.fd = fd;
	x.out.ops = ploop_io_posix();
	if (!x.stream && ftruncate(fd, 0))
		return ploop_fail(err, PLOOP_ERR_FTRUNCATE, errno, "export: cannot truncate the output");
	if (x.stream) {
		x.buf_len = 4u << 20;
		x.buf = malloc(x.buf_len);
		if (!x.buf)
			return ploop_fail(err, PLOOP_ERR_MALLOC, ENOMEM, "export");
	}
	r = ploop_chain_map(c, export_extent, &x, err);
	free(x.buf);
	if (r)
		return err->status;
	if (!x.stream) {
		if (ftruncate(fd, (off_t)c->size_bytes))
			return ploop_fail(err, PLOOP_ERR_FTRUNCATE, errno, "export: cannot size the output");
		if (fsync(fd))
			return ploop_fail(err, PLOOP_ERR_FSYNC, errno, "export: cannot sync the output");
	}
	return 0;
}

static bool is_zero(const uint8_t *p, size_t n)
{
	return !n || (p[0] == 0 && !memcmp(p, p + 1, n - 1));
}

/* Reads up to @len bytes at @off of the input; a stream must be read in order. */
static int input_read(int fd, bool stream, uint8_t *buf, size_t len, uint64_t off, size_t *got)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = stream ? read(fd, buf + done, len - done)
				   : pread(fd, buf + done, len - done, (off_t)(off + done));

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (!n)
			break;
		done += (size_t)n;
	}
	*got = done;
	return 0;
}

/* Appends the clusters of @buf that are not all zero, one allocation per run of them. */
static int import_chunk(struct ploop_delta *d, const uint8_t *buf, uint64_t v0, uint64_t nclusters,
			struct ploop_error *err)
{
	uint64_t cs = d->cluster_bytes;

	for (uint64_t i = 0; i < nclusters;) {
		uint64_t run = 0, first;
		int r;

		while (i + run < nclusters && !is_zero(buf + (i + run) * cs, cs))
			run++;
		if (!run) {
			i++;
			continue;
		}
		if (ploop_delta_alloc(d, run, false, &first, err))
			return err->status;
		r = pio_write(d->file, buf + i * cs, run * cs, first * cs);
		if (r)
			return ploop_fail(err, r == -ENOSPC ? PLOOP_ERR_FALLOCATE : PLOOP_ERR_WRITE, -r,
					  "%s: cannot write", d->path);
		d->data_unsynced = true;
		for (uint64_t k = 0; k < run; k++)
			ploop_delta_set_entry(d, v0 + i + k, (uint32_t)(first + k));
		i += run;
	}
	return 0;
}

static int import_data(int fd, bool stream, uint64_t size, struct ploop_delta *d, struct ploop_error *err)
{
	uint64_t cs = d->cluster_bytes, chunk = cs > (16u << 20) ? cs : (16u << 20);
	cleanup_free uint8_t *buf = malloc(chunk);
	uint64_t off = 0;

	if (!buf)
		return ploop_fail(err, PLOOP_ERR_MALLOC, ENOMEM, "import buffer");
	while (off < size) {
		uint64_t want = size - off < chunk ? size - off : chunk;
		size_t got = 0;
		int r;

		if (!stream) {
			/* Holes of a sparse input are zeros: skip to the next data. */
			off_t data = lseek(fd, (off_t)off, SEEK_DATA);

			if (data < 0 && errno == ENXIO)
				break;
			if (data > (off_t)off) {
				off = (uint64_t)data / cs * cs;
				continue;
			}
		}
		if (!stream)
			posix_fadvise(fd, (off_t)(off + want), (off_t)chunk, POSIX_FADV_WILLNEED);
		r = input_read(fd, stream, buf, want, off, &got);
		if (r)
			return ploop_fail(err, PLOOP_ERR_READ, -r, "import: cannot read the input at %" PRIu64, off);
		if (got < want)
			return ploop_fail(err, PLOOP_ERR_READ, 0, "import: input ended at %" PRIu64 " of %" PRIu64 " bytes",
					  off + got, size);
		if (want % cs)
			memset(buf + want, 0, cs - want % cs);
		if (import_chunk(d, buf, off / cs, (want + cs - 1) / cs, err))
			return err->status;
		off += want;
	}
	return 0;
}

int ploop_import(int fd, uint64_t size, const char *delta_path, const struct ploop_create_params *in,
		 struct ploop_error *err)
{
	struct ploop_create_params p = *in;
	struct ploop_delta *d = NULL;
	cleanup_free char *dir = ploop_dir_of(delta_path);
	cleanup_free char *dd_path = dir ? ploop_join(dir, PLOOP_DESCRIPTOR_NAME) : NULL;
	struct stat st;
	bool stream;

	if (!dd_path)
		return ploop_fail(err, PLOOP_ERR_MALLOC, ENOMEM, "%s", delta_path);
	if (fstat(fd, &st))
		return ploop_fail(err, PLOOP_ERR_FSTAT, errno, "import: input");
	stream = !S_ISREG(st.st_mode);
	if (!size) {
		if (stream)
			return ploop_fail(err, PLOOP_ERR_PARAM, 0, "import: the size of a stream must be given (-s)");
		size = (uint64_t)st.st_size;
	}
	if (!size)
		return ploop_fail(err, PLOOP_ERR_PARAM, 0, "import: the input is empty");
	if (p.mode != PLOOP_MODE_EXPANDED)
		return ploop_fail(err, PLOOP_ERR_PARAM, 0, "import: creates expanded (ploop1) images only");
	p.size_sectors = (size + PLOOP_SECTOR_SIZE - 1) / PLOOP_SECTOR_SIZE;
	if (ploop_init_image(delta_path, &p, err))
		return err->status;
	if (!ploop_delta_open(delta_path, PLOOP_OPEN_RDWR | PLOOP_OPEN_MARK_DIRTY, 0, 0, &d, err))
		import_data(fd, stream, size, d, err);
	if (d && ploop_delta_close(d, err) == 0 && !err->status)
		return 0;
	/* Nothing half-made stays behind. */
	pio_unlink(delta_path);
	pio_unlink(dd_path);
	return err->status;
}
