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
	struct pio_pipe *pipe;
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

/* Chunks reach the output in disk order: at their offset in a file, one after another in a stream. */
static int export_consume(void *ctx, struct pio_pipe *p, struct pio_slot *s, uint8_t *buf, size_t len, uint64_t off,
			  uint64_t vstart)
{
	struct export_ctx *x = ctx;

	if (x->stream)
		return write_all(x->out.fd, buf, len);
	return pio_pipe_write(p, s, buf, len, &x->out, vstart);
}

static int export_extent(void *ctx, const struct ploop_extent *e)
{
	struct export_ctx *x = ctx;
	struct ploop_file *src = e->level >= 0 ? x->c->deltas[e->level]->file : NULL;

	if (!src && !x->stream)
		return 0;	/* a hole of a sparse output file */
	for (uint64_t done = 0; done < e->length;) {
		size_t n = e->length - done < PIO_PIPE_CHUNK ? (size_t)(e->length - done) : PIO_PIPE_CHUNK;
		int r = pio_pipe_read(x->pipe, src, e->file_offset + done, n, e->start + done);

		if (r)
			return r;
		done += n;
	}
	return 0;
}

/* Writes the disk in large reads with many in flight; the output is not synced (as cp and qemu-img
 * convert: a backup tool syncs what it keeps). */
int ploop_export(struct ploop_chain *c, int fd, struct ploop_error *err)
{
	struct export_ctx x = { .c = c };
	struct ploop_error e = { 0 };
	struct stat st;
	int r;

	if (fstat(fd, &st))
		return ploop_fail(err, PLOOP_ERR_FSTAT, errno, "output");
	x.stream = !S_ISREG(st.st_mode);
	x.out.fd = fd;
	x.out.ops = ploop_io_posix();
	/* Only a non-empty file is truncated: ext4 flushes a file truncated to zero when it is closed. */
	if (!x.stream && st.st_size && ftruncate(fd, 0))
		return ploop_fail(err, PLOOP_ERR_FTRUNCATE, errno, "cannot truncate the output");
	r = pio_pipe_new(PIO_PIPE_DEPTH, PIO_PIPE_CHUNK, 0, export_consume, &x, &x.pipe);
	if (r)
		return ploop_fail(err, PLOOP_ERR_MALLOC, -r, "export buffers");
	/* The map stops at the first failed read; the pipe holds that error. */
	ploop_chain_map(c, export_extent, &x, &e);
	r = pio_pipe_finish(x.pipe);
	pio_pipe_free(x.pipe);
	if (r)
		return ploop_fail(err, ploop_write_status(r), -r, "cannot copy the disk");
	if (!x.stream && ftruncate(fd, (off_t)c->size_bytes))
		return ploop_fail(err, PLOOP_ERR_FTRUNCATE, errno, "cannot size the output");
	return 0;
}

static bool is_zero(const uint8_t *p, size_t n)
{
	return !n || (p[0] == 0 && !memcmp(p, p + 1, n - 1));
}

/* A non-seekable input as an I/O table entry: reads in order, whatever offset is asked. */
struct stream {
	struct ploop_file file;
	uint64_t pos;
	bool eof;
};

static ssize_t stream_pread(struct ploop_file *f, void *buf, size_t len, uint64_t off)
{
	struct stream *st = f->priv;
	size_t done = 0;

	if (off != st->pos)
		return st->eof ? 0 : -ESPIPE;	/* past an end already seen: nothing more */
	while (done < len && !st->eof) {
		ssize_t n = read(f->fd, (uint8_t *)buf + done, len - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		st->eof = n == 0;
		done += (size_t)n;
	}
	st->pos += done;
	return (ssize_t)done;
}

static const struct ploop_io_ops stream_ops = { .pread = stream_pread };

struct import_ctx {
	struct ploop_delta *d;
	struct ploop_error *err;
};

/* Appends the clusters of a chunk that are not all zero, one allocation and write per run. */
static int import_consume(void *ctx, struct pio_pipe *p, struct pio_slot *s, uint8_t *buf, size_t len, uint64_t off,
			  uint64_t tag)
{
	struct import_ctx *m = ctx;
	struct ploop_delta *d = m->d;
	uint64_t cs = d->cluster_bytes, n = (len + cs - 1) / cs, v0 = off / cs;

	if (len % cs)
		memset(buf + len, 0, cs - len % cs);	/* the buffer holds whole clusters */
	for (uint64_t i = 0; i < n;) {
		uint64_t run = 0, first;
		int r;

		while (i + run < n && !is_zero(buf + (i + run) * cs, cs))
			run++;
		if (!run) {
			i++;
			continue;
		}
		if (ploop_delta_alloc(d, run, true, &first, m->err))
			return -EIO;
		r = pio_pipe_write(p, s, buf + i * cs, run * cs, d->file, first * cs);
		if (r)
			return r;
		/* On failure the whole image is removed: early entries never reach a kept file. */
		for (uint64_t k = 0; k < run; k++)
			ploop_delta_set_entry(d, v0 + i + k, (uint32_t)(first + k));
		i += run;
	}
	return 0;
}

static int import_data(int fd, bool is_stream, uint64_t size, struct ploop_delta *d, struct ploop_error *err)
{
	uint64_t cs = d->cluster_bytes, chunk = cs > PIO_PIPE_CHUNK ? cs : PIO_PIPE_CHUNK;
	unsigned depth = (unsigned)((256u << 20) / chunk);
	struct import_ctx m = { .d = d, .err = err };
	struct stream st = { .file = { .ops = &stream_ops, .fd = fd } };
	struct ploop_file in = { .ops = ploop_io_posix(), .fd = fd };
	struct ploop_file *src = is_stream ? &st.file : &in;
	struct pio_pipe *p;
	uint64_t off = 0;
	int r, fin;

	st.file.priv = &st;
	if (depth > PIO_PIPE_DEPTH)
		depth = PIO_PIPE_DEPTH;
	if (depth < 2)
		depth = 2;
	r = pio_pipe_new(depth, chunk, PIO_PIPE_DURABLE, import_consume, &m, &p);
	if (r)
		return ploop_fail(err, PLOOP_ERR_MALLOC, -r, "import buffers");
	while (off < size && !r) {
		uint64_t want = size - off < chunk ? size - off : chunk;

		if (!is_stream) {
			/* Holes of a sparse input are zeros: skip to the next data. */
			off_t data = lseek(fd, (off_t)off, SEEK_DATA);

			if (data < 0 && errno == ENXIO)
				break;
			if ((uint64_t)data / cs * cs > off) {
				off = (uint64_t)data / cs * cs;
				continue;
			}
		}
		r = pio_pipe_read(p, src, off, (size_t)want, 0);
		off += want;
	}
	/* Also after an error: what is queued or in flight completes (its errors after the first one
	 * are dropped by the pipe) before the image that receives it is removed. */
	fin = pio_pipe_finish(p);
	if (!r)
		r = fin;
	pio_pipe_free(p);
	if (err->status)
		return err->status;
	if (r)
		return ploop_fail(err, ploop_write_status(r), -r, "%s",
				  r == -ESPIPE ? "input is not readable in order" : "cannot copy the input");
	if (is_stream && st.pos < size)
		return ploop_fail(err, PLOOP_ERR_READ, 0, "input ended at %" PRIu64 " of %" PRIu64 " bytes",
				  st.pos, size);
	if (is_stream && !st.eof) {
		uint8_t more;
		ssize_t n;

		while ((n = read(fd, &more, 1)) < 0 && errno == EINTR)
			;
		if (n > 0)
			return ploop_fail(err, PLOOP_ERR_PARAM, 0, "the input is longer than -s %" PRIu64 " bytes",
					  size);
	}
	return 0;
}

struct import_fill {
	int fd;
	bool stream;
	uint64_t size;
};

static int import_fill(struct ploop_delta *d, void *ctx, struct ploop_error *err)
{
	struct import_fill *f = ctx;

	return import_data(f->fd, f->stream, f->size, d, err);
}

int ploop_import(int fd, uint64_t size, const char *delta_path, const struct ploop_create_params *in,
		 struct ploop_error *err)
{
	struct ploop_create_params p = *in;
	struct import_fill f = { .fd = fd };
	struct stat st;

	if (fstat(fd, &st))
		return ploop_fail(err, PLOOP_ERR_FSTAT, errno, "input");
	if (S_ISDIR(st.st_mode))
		return ploop_fail(err, PLOOP_ERR_OPEN, EISDIR, "input");
	f.stream = !S_ISREG(st.st_mode);
	if (!size) {
		if (f.stream)
			return ploop_fail(err, PLOOP_ERR_PARAM, 0, "the size of a stream must be given (-s)");
		size = (uint64_t)st.st_size;
	}
	if (!size)
		return ploop_fail(err, PLOOP_ERR_PARAM, 0, "the input is empty");
	if (!f.stream && (uint64_t)st.st_size > size)
		return ploop_fail(err, PLOOP_ERR_PARAM, 0,
				  "the input (%" PRIu64 " bytes) is larger than -s %" PRIu64 " bytes",
				  (uint64_t)st.st_size, size);
	if (p.mode != PLOOP_MODE_EXPANDED)
		return ploop_fail(err, PLOOP_ERR_PARAM, 0, "creates expanded (ploop1) images only");
	p.size_sectors = (size + PLOOP_SECTOR_SIZE - 1) / PLOOP_SECTOR_SIZE;
	f.size = size;
	return ploop_create_set(delta_path, &p, import_fill, &f, err);
}
