/* The data path of ploopd: reads resolve through the chain, writes go to the top delta in place
 * or into newly allocated clusters (whole-cluster copy-up from lower deltas under a per-cluster
 * lock), all I/O of one request submitted to the thread's io_uring at once. The BAT entry of a new
 * cluster is set once its data is written and reaches the disk at the next flush, after the data
 * is durable. */
#include <fcntl.h>
#include <inttypes.h>
#include <linux/falloc.h>
#include <liburing.h>
#include <stdio.h>
#include <sys/stat.h>

#include "server.h"

#define RING_DEPTH 64
#define PREALLOC_BYTES (16u << 20)	/* the top grows by this much at a time */

/* ---- per-thread I/O -------------------------------------------------------------------------- */

struct io_req {
	int fd;
	bool write;
	uint8_t *buf;
	size_t len, done;
	uint64_t off;
};

struct io_ctx {
	struct io_uring ring;
	uint8_t *cluster_buf;	/* one cluster, for copy-up */
	size_t cluster_len;
	uint8_t *reply_buf;	/* a request's worth, for read replies */
	uint8_t *bounce_buf;	/* a request's worth, to align write payloads for direct I/O */
	struct io_ctx *next;	/* in the pool */
};

/* Rings outlive the threads that used them: libfuse starts and ends worker threads as the load
 * changes, and a ring per thread start would be a descriptor per request burst. A thread takes a
 * ring from the pool on its first request and gives it back when it ends. */
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static struct io_ctx *pool;
static pthread_key_t ctx_key;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;
static __thread struct io_ctx *tio;

static void ctx_release(void *p)
{
	struct io_ctx *io = p;

	pthread_mutex_lock(&pool_lock);
	io->next = pool;
	pool = io;
	pthread_mutex_unlock(&pool_lock);
}

static void make_key(void)
{
	pthread_key_create(&ctx_key, ctx_release);
}

static struct io_ctx *io_ctx(void)
{
	struct io_ctx *io;

	if (tio)
		return tio;
	pthread_once(&key_once, make_key);
	pthread_mutex_lock(&pool_lock);
	io = pool;
	if (io)
		pool = io->next;
	pthread_mutex_unlock(&pool_lock);
	if (!io) {
		io = calloc(1, sizeof(*io));
		if (!io)
			return NULL;
		if (io_uring_queue_init(RING_DEPTH, &io->ring, 0)) {
			free(io);
			return NULL;
		}
	}
	tio = io;
	pthread_setspecific(ctx_key, io);
	return io;
}

static uint8_t *cluster_buffer(struct io_ctx *io, size_t len)
{
	if (io->cluster_len < len) {
		free(io->cluster_buf);
		io->cluster_buf = NULL;
		if (posix_memalign((void **)&io->cluster_buf, 4096, len))
			return NULL;
		io->cluster_len = len;
	}
	return io->cluster_buf;
}

void *dev_reply_buffer(size_t len)
{
	struct io_ctx *io = io_ctx();

	if (!io)
		return NULL;
	if (!io->reply_buf && posix_memalign((void **)&io->reply_buf, 4096, len))
		io->reply_buf = NULL;
	return io->reply_buf;
}

/* The O_DIRECT twin of a delta's descriptor, opened on first use with the alignment it needs
 * probed (512, else 4096); -1 where the filesystem has no direct I/O. */
static pthread_mutex_t dio_lock = PTHREAD_MUTEX_INITIALIZER;

static int direct_fd(struct ploop_delta *d)
{
	int fd = __atomic_load_n(&d->dio_fd, __ATOMIC_ACQUIRE);

	if (fd != -2)
		return fd;
	pthread_mutex_lock(&dio_lock);
	if (d->dio_fd == -2) {
		char path[64];
		void *probe = NULL;

		snprintf(path, sizeof(path), "/proc/self/fd/%d", d->file->fd);
		fd = open(path, (d->rw ? O_RDWR : O_RDONLY) | O_DIRECT | O_CLOEXEC);
		if (fd >= 0 && !posix_memalign(&probe, 4096, 4096)) {
			if (pread(fd, probe, 512, 0) == 512)
				d->dio_align = 512;
			else if (pread(fd, probe, 4096, 0) == 4096)
				d->dio_align = 4096;
		}
		free(probe);
		if (fd >= 0 && !d->dio_align) {
			close(fd);
			fd = -1;
		}
		__atomic_store_n(&d->dio_fd, fd < 0 ? -1 : fd, __ATOMIC_RELEASE);
	}
	fd = d->dio_fd;
	pthread_mutex_unlock(&dio_lock);
	return fd;
}

/* The descriptor for one transfer: direct when buffer, offset and length are aligned for it (no
 * second copy of the disk in the host's page cache), else the buffered one. */
static int fd_for(struct ploop_delta *d, const void *buf, size_t len, uint64_t off)
{
	int fd = direct_fd(d);

	if (fd >= 0 && !((uintptr_t)buf % d->dio_align) && !(len % d->dio_align) && !(off % d->dio_align))
		return fd;
	return d->file->fd;
}

/* Runs every request to completion (short transfers resubmitted; reads past EOF give zeros). */
static int io_run(struct io_req *q, int n)
{
	struct io_ctx *io = io_ctx();
	int pending = 0, err = 0;

	if (!io)
		return -ENOMEM;
	for (int i = 0; i < n || pending;) {
		struct io_uring_sqe *sqe;
		struct io_uring_cqe *cqe;

		while (i < n && (sqe = io_uring_get_sqe(&io->ring))) {
			if (q[i].write)
				io_uring_prep_write(sqe, q[i].fd, q[i].buf, (unsigned)q[i].len, q[i].off);
			else
				io_uring_prep_read(sqe, q[i].fd, q[i].buf, (unsigned)q[i].len, q[i].off);
			io_uring_sqe_set_data(sqe, &q[i]);
			q[i].done = 0;
			pending++;
			i++;
		}
		if (io_uring_submit_and_wait(&io->ring, 1) < 0 && !err)
			err = -EIO;
		while (pending && io_uring_peek_cqe(&io->ring, &cqe) == 0) {
			struct io_req *r = io_uring_cqe_get_data(cqe);
			int res = cqe->res;

			io_uring_cqe_seen(&io->ring, cqe);
			pending--;
			if (res < 0) {
				if (!err)
					err = res;
				continue;
			}
			if (res == 0 && !r->write) {
				memset(r->buf + r->done, 0, r->len - r->done);
				continue;
			}
			if (res == 0) {
				if (!err)
					err = -EIO;
				continue;
			}
			r->done += (size_t)res;
			if (r->done < r->len) {
				/* Short transfer: resubmit the rest at once. */
				sqe = io_uring_get_sqe(&io->ring);
				if (!sqe) {
					io_uring_submit(&io->ring);
					sqe = io_uring_get_sqe(&io->ring);
				}
				if (r->write)
					io_uring_prep_write(sqe, r->fd, r->buf + r->done, (unsigned)(r->len - r->done),
							    r->off + r->done);
				else
					io_uring_prep_read(sqe, r->fd, r->buf + r->done, (unsigned)(r->len - r->done),
							   r->off + r->done);
				io_uring_sqe_set_data(sqe, r);
				pending++;
			}
		}
	}
	return err;
}

static int fd_for(struct ploop_delta *d, const void *buf, size_t len, uint64_t off);

/* One transfer on a delta's data, direct I/O where it can be. */
static int io_one(struct ploop_delta *d, bool write, void *buf, size_t len, uint64_t off)
{
	struct io_req q = { .fd = fd_for(d, buf, len, off), .write = write, .buf = buf, .len = len, .off = off };

	return io_run(&q, 1);
}

/* ---- cluster locks ------------------------------------------------------------------------------ */

static void locks_init(struct cluster_lock_table *t)
{
	pthread_mutex_init(&t->mu, NULL);
	for (int i = 0; i < CLUSTER_LOCK_BUCKETS; i++) {
		pthread_cond_init(&t->cond[i], NULL);
		for (int k = 0; k < 4; k++)
			t->busy[i][k] = UINT64_MAX;
	}
}

static void cluster_lock(struct srv *s, uint64_t v)
{
	struct cluster_lock_table *t = &s->locks;
	unsigned b = (unsigned)(v % CLUSTER_LOCK_BUCKETS);

	pthread_mutex_lock(&t->mu);
	for (;;) {
		int held = 0, free_slot = -1;

		for (int k = 0; k < 4; k++) {
			if (t->busy[b][k] == v)
				held = 1;
			else if (t->busy[b][k] == UINT64_MAX && free_slot < 0)
				free_slot = k;
		}
		if (!held && free_slot >= 0) {
			t->busy[b][free_slot] = v;
			break;
		}
		pthread_cond_wait(&t->cond[b], &t->mu);
	}
	pthread_mutex_unlock(&t->mu);
}

static void cluster_unlock(struct srv *s, uint64_t v)
{
	struct cluster_lock_table *t = &s->locks;
	unsigned b = (unsigned)(v % CLUSTER_LOCK_BUCKETS);

	pthread_mutex_lock(&t->mu);
	for (int k = 0; k < 4; k++)
		if (t->busy[b][k] == v)
			t->busy[b][k] = UINT64_MAX;
	pthread_cond_broadcast(&t->cond[b]);
	pthread_mutex_unlock(&t->mu);
}

/* ---- mapping ---------------------------------------------------------------------------------- */

static struct ploop_delta *top_delta(struct srv *s)
{
	return s->chain->deltas[s->chain->depth - 1];
}

/* File cluster of @v in delta @d, read once (another thread may be setting it). */
static uint32_t entry(const struct ploop_delta *d, uint64_t v)
{
	if (d->raw)
		return v * d->cluster_bytes < d->file_size ? 1 : 0;
	if (v >= d->vclusters)
		return 0;
	return __atomic_load_n(&d->bat[v], __ATOMIC_ACQUIRE);
}

/* The level holding @v at or below @from, and its byte offset; -1 for a hole. */
static int lookup(struct srv *s, int from, uint64_t v, uint64_t *off)
{
	for (int i = from; i >= 0; i--) {
		struct ploop_delta *d = s->chain->deltas[i];
		uint32_t e = entry(d, v);

		if (!e)
			continue;
		*off = d->raw ? v * d->cluster_bytes : (uint64_t)e * d->cluster_bytes;
		return i;
	}
	return -1;
}

/* Notes a write to @v for an online merge of the top in progress. */
static void note_write(struct srv *s, uint64_t v)
{
	uint8_t *bits = __atomic_load_n(&s->merge_dirty, __ATOMIC_ACQUIRE);

	if (bits)
		__atomic_fetch_or(&bits[v / 8], (uint8_t)(1u << (v % 8)), __ATOMIC_RELEASE);
}

static void set_entry(struct srv *s, uint64_t v, uint32_t cluster)
{
	struct ploop_delta *top = top_delta(s);

	pthread_mutex_lock(&s->bat_lock);
	__atomic_store_n(&top->bat[v], cluster, __ATOMIC_RELEASE);
	/* Noted under bat_lock: a merge either copied the BAT after this entry or sees the note. */
	note_write(s, v);
	top->dirty_pages[((64 + v * 4) / PLOOP_PAGE) / 8] |= (uint8_t)(1u << (((64 + v * 4) / PLOOP_PAGE) % 8));
	if (top->hdr.m_Flags & PLOOP_FLAG_EMPTY) {
		top->hdr.m_Flags &= ~PLOOP_FLAG_EMPTY;
		top->header_dirty = true;
	}
	pthread_mutex_unlock(&s->bat_lock);
}

/* Allocates @n clusters from @c on. A failed fallocate may still have grown the file (ext4 keeps
 * what it allocated before it ran out of space, and a size that is not a whole number of clusters):
 * nothing past @c is in use, so the file goes back to the size it had. */
static int prealloc(struct srv *s, struct ploop_delta *top, uint64_t c, uint64_t n)
{
	struct stat st;
	int e;

	if (!fallocate(top->file->fd, 0, (off_t)(c * s->cs), (off_t)(n * s->cs)))
		return 0;
	e = errno;
	if (!fstat(top->file->fd, &st) && (uint64_t)st.st_size > top->file_size &&
	    ftruncate(top->file->fd, (off_t)top->file_size))
		slog("%s: cannot truncate a failed allocation: %s", top->path, strerror(errno));
	return -e;
}

/* A new cluster at the end of the top; the file grows in large fallocated steps. */
static int alloc_cluster(struct srv *s, uint64_t *out)
{
	struct ploop_delta *top = top_delta(s);
	uint64_t c;
	uint32_t e;
	int r = 0;

	pthread_mutex_lock(&s->alloc_lock);
	if (top->alloc_head < top->l1_size)
		top->alloc_head = top->l1_size;
	c = top->alloc_head;
	/* A partial cluster at the end (a crash while the file grew) holds old bytes: a fresh cluster
	 * must read as zeros around what is written into it. */
	if (c * s->cs < top->file_size && top->file_size < (c + 1) * s->cs &&
	    fallocate(top->file->fd, FALLOC_FL_ZERO_RANGE, (off_t)(c * s->cs), (off_t)(top->file_size - c * s->cs))) {
		r = -errno;
	} else if (ploop_bat_encode(top->version, top->cluster_sectors, c, &e)) {
		r = -EFBIG;
	} else if (c >= s->prealloc_end) {
		uint64_t n = PREALLOC_BYTES / s->cs ? PREALLOC_BYTES / s->cs : 1;

		/* Short of room for the whole step, one cluster: only what was allocated counts as
		 * preallocated, or the next clusters would be written into holes of the file. */
		if (!prealloc(s, top, c, n))
			s->prealloc_end = c + n;
		else if (!(r = prealloc(s, top, c, 1)))
			s->prealloc_end = c + 1;
		if (!r && top->file_size < s->prealloc_end * s->cs)
			top->file_size = s->prealloc_end * s->cs;
	}
	if (!r) {
		top->alloc_head = c + 1;
		*out = c;
	}
	pthread_mutex_unlock(&s->alloc_lock);
	return r;
}

/* ---- reads ---------------------------------------------------------------------------------------- */

int dev_read(struct srv *s, void *buf, size_t len, uint64_t off)
{
	struct io_req q[64];
	uint8_t *p = buf;
	int n = 0, r = 0;

	if (off > s->size || len > s->size - off)
		return -EINVAL;
	pthread_rwlock_rdlock(&s->io_lock);
	while (len && !r) {
		uint64_t v = off / s->cs, in = off % s->cs, foff;
		size_t piece = (size_t)(s->cs - in < len ? s->cs - in : len);
		int level = lookup(s, s->chain->depth - 1, v, &foff);

		if (level < 0) {
			memset(p, 0, piece);
		} else {
			struct ploop_delta *d = s->chain->deltas[level];

			q[n++] = (struct io_req){ .fd = fd_for(d, p, piece, foff + in), .buf = p, .len = piece,
						  .off = foff + in };
			if (n == (int)ARRAY_SIZE(q)) {
				r = io_run(q, n);
				n = 0;
			}
		}
		p += piece;
		off += piece;
		len -= piece;
	}
	if (!r && n)
		r = io_run(q, n);
	pthread_rwlock_unlock(&s->io_lock);
	return r;
}

/* ---- writes --------------------------------------------------------------------------------------- */

/* A write to a cluster the top does not hold: allocate it, copying the lower data up first. A
 * cluster no delta holds is written whole too, zeros around the data, as upstream's kernel writes
 * it: its fallocated space is unwritten, and 1.15's check calls a cluster left partly unwritten
 * "sparse" (rc 11). */
static int write_new_cluster(struct srv *s, uint64_t v, uint64_t in, const uint8_t *data, size_t n)
{
	struct ploop_delta *top = top_delta(s);
	uint64_t foff, c;
	int level, r;

	cluster_lock(s, v);
	if (entry(top, v)) {
		/* Another writer allocated it meanwhile. */
		r = io_one(top, true, (void *)data, n, (uint64_t)entry(top, v) * s->cs + in);
		note_write(s, v);
		cluster_unlock(s, v);
		return r;
	}
	level = lookup(s, s->chain->depth - 2, v, &foff);
	r = alloc_cluster(s, &c);
	if (!r) {
		if (n == s->cs) {
			r = io_one(top, true, (void *)data, n, c * s->cs);
		} else {
			struct io_ctx *io = io_ctx();
			uint8_t *buf = io ? cluster_buffer(io, s->cs) : NULL;

			if (!buf)
				r = -ENOMEM;
			else if (level >= 0)
				r = io_one(s->chain->deltas[level], false, buf, s->cs, foff);
			else
				memset(buf, 0, s->cs);
			if (!r) {
				memcpy(buf + in, data, n);
				r = io_one(top, true, buf, s->cs, c * s->cs);
			}
		}
	}
	if (!r)
		set_entry(s, v, (uint32_t)c);
	cluster_unlock(s, v);
	return r;
}

int dev_write(struct srv *s, const void *buf, size_t len, uint64_t off)
{
	struct io_req q[64];
	uint64_t qv[64];	/* the cluster of each */
	const uint8_t *p = buf;
	struct ploop_delta *top;
	int n = 0, r = 0;

	if (s->ro)
		return -EROFS;
	if (off > s->size || len > s->size - off)
		return -ENOSPC;
	if ((uintptr_t)p % 512 && !(off % 512) && !(len % 512) && len <= DEV_MAX_IO) {
		/* FUSE hands the data at an odd address: one copy makes direct I/O possible. */
		struct io_ctx *io = io_ctx();

		if (io && !io->bounce_buf && posix_memalign((void **)&io->bounce_buf, 4096, DEV_MAX_IO))
			io->bounce_buf = NULL;
		if (io && io->bounce_buf) {
			memcpy(io->bounce_buf, p, len);
			p = io->bounce_buf;
		}
	}
	pthread_rwlock_rdlock(&s->io_lock);
	top = top_delta(s);
	while (len && !r) {
		uint64_t v = off / s->cs, in = off % s->cs;
		size_t piece = (size_t)(s->cs - in < len ? s->cs - in : len);
		uint32_t e = entry(top, v);

		if (e || top->raw) {
			uint64_t foff = top->raw ? v * s->cs : (uint64_t)e * s->cs;

			/* Noted before and after the write: a merge that began meanwhile copies it again. */
			note_write(s, v);
			qv[n] = v;
			q[n++] = (struct io_req){ .fd = fd_for(top, p, piece, foff + in), .write = true, .buf = (uint8_t *)p,
						  .len = piece, .off = foff + in };
			if (n == (int)ARRAY_SIZE(q)) {
				r = io_run(q, n);
				for (int i = 0; i < n; i++)
					note_write(s, qv[i]);
				n = 0;
			}
		} else {
			r = write_new_cluster(s, v, in, p, piece);
		}
		p += piece;
		off += piece;
		len -= piece;
	}
	if (!r && n) {
		r = io_run(q, n);
		for (int i = 0; i < n; i++)
			note_write(s, qv[i]);
	}
	__atomic_add_fetch(&s->writes_since_flush, 1, __ATOMIC_RELEASE);
	pthread_rwlock_unlock(&s->io_lock);
	return r;
}

/* ---- flush ---------------------------------------------------------------------------------------- */

struct bat_run {
	uint64_t start, end;	/* bytes of the file */
	uint8_t *buf;
};

/* The dirty BAT pages of the top, encoded now (under bat_lock) and marked clean. */
static int snapshot_dirty(struct srv *s, struct bat_run **runs, int *nruns, uint8_t *hdr, bool *hdr_dirty)
{
	struct ploop_delta *d = top_delta(s);
	uint64_t bat_end = ploop_delta_bat_bytes(d);
	int n = 0, cap = 0;

	*runs = NULL;
	for (size_t p = 0; p < d->n_pages;) {
		size_t q = p;
		struct bat_run *r;

		if (!(d->dirty_pages[p / 8] & (1u << (p % 8)))) {
			p++;
			continue;
		}
		while (q < d->n_pages && (d->dirty_pages[q / 8] & (1u << (q % 8))))
			q++;
		if (n == cap) {
			cap = cap ? cap * 2 : 8;
			r = realloc(*runs, (size_t)cap * sizeof(*r));
			if (!r)
				return -ENOMEM;
			*runs = r;
		}
		r = &(*runs)[n];
		r->start = p ? (uint64_t)p * PLOOP_PAGE : 64;
		r->end = (uint64_t)q * PLOOP_PAGE < bat_end ? (uint64_t)q * PLOOP_PAGE : bat_end;
		r->buf = malloc(r->end - r->start);
		if (!r->buf)
			return -ENOMEM;
		for (uint64_t off = r->start; off < r->end; off += 4) {
			uint32_t e = 0;

			ploop_bat_encode(d->version, d->cluster_sectors, d->bat[(off - 64) / 4], &e);
			e = htole32(e);
			memcpy(r->buf + (off - r->start), &e, 4);
		}
		for (size_t i = p; i < q; i++)
			d->dirty_pages[i / 8] &= (uint8_t)~(1u << (i % 8));
		n++;
		p = q;
	}
	*nruns = n;
	*hdr_dirty = d->header_dirty;
	if (d->header_dirty) {
		ploop_header_encode(&d->hdr, hdr);
		d->header_dirty = false;
	}
	return 0;
}

/*
 * Everything written before the call is durable after it: the BAT pages as they are now are taken
 * first, then the data they point at is synced, then they are written and synced.
 */
int dev_flush(struct srv *s)
{
	int r;

	pthread_rwlock_rdlock(&s->io_lock);
	r = dev_flush_locked(s);
	pthread_rwlock_unlock(&s->io_lock);
	return r;
}

int dev_flush_locked(struct srv *s)
{
	struct ploop_delta *top;
	struct bat_run *runs = NULL;
	uint8_t hdr[sizeof(struct ploop_pvd_header)];
	bool hdr_dirty = false, wrote;
	int n = 0, r;

	if (s->ro)
		return 0;
	pthread_mutex_lock(&s->flush_lock);
	/* Writes count themselves once complete; a flush that finds none since the previous one began
	 * (which, holding flush_lock, is done) has no data to make durable. */
	wrote = __atomic_exchange_n(&s->writes_since_flush, 0, __ATOMIC_ACQ_REL) != 0;
	top = top_delta(s);
	pthread_mutex_lock(&s->bat_lock);
	r = top->raw ? 0 : snapshot_dirty(s, &runs, &n, hdr, &hdr_dirty);
	pthread_mutex_unlock(&s->bat_lock);
	if (!r && (wrote || n || hdr_dirty) && fdatasync(top->file->fd))
		r = -errno;
	for (int i = 0; i < n && !r; i++)
		r = pio_write(top->file, runs[i].buf, runs[i].end - runs[i].start, runs[i].start);
	if (!r && hdr_dirty)
		r = pio_write(top->file, hdr, sizeof(hdr), 0);
	if (!r && (n || hdr_dirty) && fdatasync(top->file->fd))
		r = -errno;
	if (r) {
		/* Not written: mark those pages dirty again so a later flush retries them. */
		pthread_mutex_lock(&s->bat_lock);
		for (int i = 0; i < n; i++)
			for (uint64_t pg = runs[i].start / PLOOP_PAGE; pg * PLOOP_PAGE < runs[i].end; pg++)
				top->dirty_pages[pg / 8] |= (uint8_t)(1u << (pg % 8));
		top->header_dirty |= hdr_dirty;
		pthread_mutex_unlock(&s->bat_lock);
		__atomic_add_fetch(&s->writes_since_flush, 1, __ATOMIC_RELEASE);
	}
	for (int i = 0; i < n; i++)
		free(runs[i].buf);
	free(runs);
	pthread_mutex_unlock(&s->flush_lock);
	return r;
}

/* ---- discard -------------------------------------------------------------------------------------- */

/*
 * Reads of the range give zeros afterwards. A whole cluster only the top holds leaves the BAT and
 * its space is punched out of the file (compact later moves tail clusters into such holes); where a
 * lower delta holds data, the top gets zeros written instead (also while the parent of the top may
 * hold the cluster unseen: see parent_stale).
 */
int dev_discard(struct srv *s, uint64_t off, uint64_t len)
{
	struct ploop_delta *top;
	uint8_t *zeros = NULL;
	int r = 0;

	if (s->ro)
		return -EROFS;
	if (off > s->size || len > s->size - off)
		return -EINVAL;
	pthread_rwlock_rdlock(&s->io_lock);
	top = top_delta(s);
	while (len && !r) {
		uint64_t v = off / s->cs, in = off % s->cs, foff;
		size_t piece = (size_t)(s->cs - in < len ? s->cs - in : len);
		uint32_t e;
		int lower;

		cluster_lock(s, v);
		e = top->raw ? 0 : entry(top, v);
		lower = lookup(s, s->chain->depth - 2, v, &foff);
		if (top->raw) {
			if (fallocate(top->file->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)piece))
				r = -errno;
		} else if (e && lower < 0 && piece == s->cs && !__atomic_load_n(&s->parent_stale, __ATOMIC_ACQUIRE)) {
			set_entry(s, v, 0);	/* (notes the write for a merge, too) */
			if (fallocate(top->file->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)((uint64_t)e * s->cs),
				      (off_t)s->cs))
				r = -errno;
		} else if (e || lower >= 0) {
			if (!zeros && !(zeros = calloc(1, s->cs)))
				r = -ENOMEM;
			cluster_unlock(s, v);
			if (!r) {
				pthread_rwlock_unlock(&s->io_lock);
				r = dev_write(s, zeros, piece, off);
				pthread_rwlock_rdlock(&s->io_lock);
				top = top_delta(s);
			}
			off += piece;
			len -= piece;
			continue;
		}
		cluster_unlock(s, v);
		off += piece;
		len -= piece;
	}
	free(zeros);
	__atomic_add_fetch(&s->writes_since_flush, 1, __ATOMIC_RELEASE);
	pthread_rwlock_unlock(&s->io_lock);
	return r;
}

/* ---- structure ------------------------------------------------------------------------------------ */

int dev_copy_up(struct srv *s, uint64_t v, int below)
{
	struct ploop_delta *top = top_delta(s);
	uint8_t *buf;
	uint64_t foff, c;
	int level, r;

	cluster_lock(s, v);
	if (entry(top, v)) {
		cluster_unlock(s, v);
		return 0;
	}
	level = lookup(s, below, v, &foff);
	if (level < 0) {
		cluster_unlock(s, v);
		return 0;
	}
	buf = io_ctx() ? cluster_buffer(io_ctx(), s->cs) : NULL;
	r = buf ? io_one(s->chain->deltas[level], false, buf, s->cs, foff) : -ENOMEM;
	if (!r)
		r = alloc_cluster(s, &c);
	if (!r)
		r = io_one(top, true, buf, s->cs, c * s->cs);
	if (!r)
		set_entry(s, v, (uint32_t)c);
	cluster_unlock(s, v);
	return r;
}

/* Drops the preallocated, never used tail of the top file (the BAT must be flushed first). */
int dev_trim_tail(struct srv *s)
{
	struct ploop_delta *top = top_delta(s);
	int r = 0;

	if (s->ro || top->raw)
		return 0;
	pthread_mutex_lock(&s->alloc_lock);
	if (s->prealloc_end > top->alloc_head && ftruncate(top->file->fd, (off_t)(top->alloc_head * s->cs)))
		r = -errno;
	if (!r && s->prealloc_end > top->alloc_head) {
		s->prealloc_end = top->alloc_head;
		top->file_size = top->alloc_head * s->cs;
	}
	pthread_mutex_unlock(&s->alloc_lock);
	return r;
}

/* Gives back the clusters at the end of the top that no BAT entry names: the preallocated tail of a
 * server that crashed, data whose entry never became durable, the 128 MiB steps upstream's
 * dm-ploop grows files by. Nothing names them, so nothing is lost; new clusters are appended after
 * the last one in use again, as fresh (zero) space. For a read-write server, before any I/O. */
int dev_trim_unreferenced(struct srv *s)
{
	struct ploop_delta *top = top_delta(s);
	uint64_t end = top->l1_size, clusters = (top->file_size + s->cs - 1) / s->cs;
	int r;

	if (s->ro || top->raw)
		return 0;
	for (uint64_t v = 0; v < top->vclusters; v++)
		if (top->bat[v] >= end)
			end = (uint64_t)top->bat[v] + 1;
	if (clusters <= end)
		return 0;
	top->alloc_head = end;
	s->prealloc_end = clusters;
	r = dev_trim_tail(s);
	if (r) {
		/* Not given back: they hold old bytes, so new clusters come from past the end again. */
		top->alloc_head = clusters;
		s->prealloc_end = 0;
		return r;
	}
	slog("%s: %" PRIu64 " unreferenced cluster(s) at the end given back", top->path, clusters - end);
	return 0;
}

void dev_set_chain(struct srv *s, struct ploop_chain *c)
{
	s->chain = c;
	s->size = ploop_chain_size(c);
	s->cs = ploop_chain_cluster_bytes(c);
	s->prealloc_end = 0;
}

int dev_init(struct srv *s)
{
	pthread_rwlock_init(&s->io_lock, NULL);
	pthread_mutex_init(&s->alloc_lock, NULL);
	pthread_mutex_init(&s->bat_lock, NULL);
	pthread_mutex_init(&s->flush_lock, NULL);
	locks_init(&s->locks);
	return 0;
}

void dev_fini(struct srv *s)
{
	(void)s;
}
