/* Bulk transfers with many requests in flight: an ordered read pipeline whose consumer may write
 * parts of each buffer elsewhere. Over plain files it runs on io_uring, reads and writes overlapping
 * (buffered: direct I/O measured slower on virtualised disks, see BENCHMARKS.md); over any other I/O
 * table, or without io_uring, the same consumer runs synchronously one chunk at a time. */
#include <fcntl.h>
#include <liburing.h>
#include <stdio.h>

#include "internal.h"

#define PIPE_ALIGN 4096u	/* buffer alignment */

enum req_kind { REQ_READ, REQ_WRITE };

struct pio_req {
	enum req_kind kind;
	struct pio_slot *slot;
	uint8_t *buf;
	size_t len, done;	/* short transfers resubmit the rest */
	uint64_t off;
	int fd;
};

enum slot_state { SLOT_FREE, SLOT_READING, SLOT_READY, SLOT_WRITING };

struct pio_slot {
	enum slot_state state;
	uint8_t *buf;
	struct pio_req read;
	uint64_t tag;		/* the caller's, handed back to the consumer */
	uint64_t seq;		/* reads reach the consumer in submission order */
	unsigned writes;	/* writes of this buffer still in flight */
};

struct pio_pipe {
	pio_consume_fn consume;
	void *ctx;
	unsigned depth;
	size_t chunk;
	struct pio_slot *slots;
	uint64_t next_seq, next_consume;
	bool uring;
	bool durable;
	struct io_uring ring;
	unsigned inflight;
	int error;		/* first -errno */
	struct {		/* O_DIRECT twins of plain descriptors, for reads; opened on first use */
		int fd, dio_fd;
	} dio[16];
	int n_dio;
};

static bool is_posix(const struct ploop_file *f)
{
	return f->ops == ploop_io_posix();
}

static void fail(struct pio_pipe *p, int e)
{
	if (!p->error)
		p->error = e;
}

/*
 * An O_DIRECT twin of the file's descriptor when offset and length allow direct I/O, else the
 * file's own. Measured here: buffered reads through io_uring run at a third of direct ones, and
 * buffered writes plus fsync at half of direct writes into allocated space (BENCHMARKS.md).
 */
static int direct_fd(struct pio_pipe *p, const struct ploop_file *f, uint64_t off, size_t len)
{
	char path[64];
	int d;

	if (off % PIPE_ALIGN || len % PIPE_ALIGN)
		return f->fd;
	for (int i = 0; i < p->n_dio; i++)
		if (p->dio[i].fd == f->fd)
			return p->dio[i].dio_fd >= 0 ? p->dio[i].dio_fd : f->fd;
	snprintf(path, sizeof(path), "/proc/self/fd/%d", f->fd);
	d = open(path, (fcntl(f->fd, F_GETFL) & O_ACCMODE) | O_DIRECT | O_CLOEXEC);
	if (p->n_dio == (int)ARRAY_SIZE(p->dio)) {
		if (d >= 0)
			close(d);
		return f->fd;
	}
	p->dio[p->n_dio].fd = f->fd;
	p->dio[p->n_dio++].dio_fd = d;
	return d >= 0 ? d : f->fd;
}

int pio_pipe_new(unsigned depth, size_t chunk, unsigned flags, pio_consume_fn consume, void *ctx,
		 struct pio_pipe **out)
{
	struct pio_pipe *p = calloc(1, sizeof(*p));
	const char *no_uring = getenv("PLOOP_NO_URING");

	*out = NULL;
	if (!p)
		return -ENOMEM;
	p->consume = consume;
	p->durable = flags & PIO_PIPE_DURABLE;
	p->ctx = ctx;
	p->depth = depth;
	p->chunk = chunk;
	p->slots = calloc(depth, sizeof(*p->slots));
	if (!p->slots) {
		free(p);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < depth; i++) {
		if (posix_memalign((void **)&p->slots[i].buf, PIPE_ALIGN, chunk)) {
			pio_pipe_free(p);
			return -ENOMEM;
		}
	}
	p->uring = !(no_uring && *no_uring) && io_uring_queue_init(depth * 4, &p->ring, 0) == 0;
	*out = p;
	return 0;
}

void pio_pipe_free(struct pio_pipe *p)
{
	if (!p)
		return;
	if (p->uring) {
		/* Requests still in flight (after an error) complete before their buffers go. Some may
		 * only be queued: a consumer's writes wait in the submission queue until the next reap,
		 * and a consumer that failed after queueing one never gets there. Unsubmitted, they would
		 * never complete and this wait would never end. */
		io_uring_submit(&p->ring);
		while (p->inflight) {
			struct io_uring_cqe *cqe;
			struct pio_req *q;
			int r = io_uring_wait_cqe(&p->ring, &cqe);

			if (r == -EINTR)
				continue;
			if (r)
				break;
			q = io_uring_cqe_get_data(cqe);
			io_uring_cqe_seen(&p->ring, cqe);
			p->inflight--;
			if (q->kind == REQ_WRITE)
				free(q);
		}
		io_uring_queue_exit(&p->ring);
	}
	for (unsigned i = 0; i < p->depth; i++)
		free(p->slots[i].buf);
	for (int i = 0; i < p->n_dio; i++)
		if (p->dio[i].dio_fd >= 0)
			close(p->dio[i].dio_fd);
	free(p->slots);
	free(p);
}

static void submit(struct pio_pipe *p, struct pio_req *q)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&p->ring);

	if (!sqe) {
		io_uring_submit(&p->ring);
		sqe = io_uring_get_sqe(&p->ring);
	}
	if (q->kind == REQ_READ)
		io_uring_prep_read(sqe, q->fd, q->buf + q->done, (unsigned)(q->len - q->done), q->off + q->done);
	else
		io_uring_prep_write(sqe, q->fd, q->buf + q->done, (unsigned)(q->len - q->done), q->off + q->done);
	io_uring_sqe_set_data(sqe, q);
	p->inflight++;
}

/* Hands ready reads to the consumer in submission order. */
static void consume_ready(struct pio_pipe *p)
{
	for (bool progress = true; progress;) {
		progress = false;
		for (unsigned i = 0; i < p->depth; i++) {
			struct pio_slot *s = &p->slots[i];
			int r;

			if (s->state != SLOT_READY || s->seq != p->next_consume)
				continue;
			p->next_consume++;
			s->state = SLOT_WRITING;
			if (!p->error) {
				r = p->consume(p->ctx, p, s, s->buf, s->read.len, s->read.off, s->tag);
				if (r)
					fail(p, r);
			}
			if (!s->writes)
				s->state = SLOT_FREE;
			progress = true;
		}
	}
}

static void complete(struct pio_pipe *p, struct pio_req *q, int res)
{
	struct pio_slot *s = q->slot;

	if (res < 0 || (res == 0 && q->kind == REQ_WRITE)) {
		fail(p, res < 0 ? res : -EIO);
		q->done = q->len;
	} else if (res == 0) {
		/* End of file: the rest reads as zeros. */
		memset(q->buf + q->done, 0, q->len - q->done);
		q->done = q->len;
	} else {
		q->done += (size_t)res;
	}
	if (q->done < q->len) {
		submit(p, q);
		return;
	}
	if (q->kind == REQ_READ) {
		s->state = SLOT_READY;
	} else {
		if (p->durable)
			sync_file_range(q->fd, (off_t)q->off, (off_t)q->len, SYNC_FILE_RANGE_WRITE);
		free(q);
		if (!--s->writes && s->state == SLOT_WRITING)
			s->state = SLOT_FREE;
	}
}

/* Processes completions (waiting for one if @wait and anything is in flight), then the consumer. */
static void reap(struct pio_pipe *p, bool wait)
{
	struct io_uring_cqe *cqe;

	io_uring_submit(&p->ring);
	while (p->inflight) {
		int r = wait ? io_uring_wait_cqe(&p->ring, &cqe) : io_uring_peek_cqe(&p->ring, &cqe);
		struct pio_req *q;

		if (r == -EINTR)
			continue;
		if (r)
			break;
		wait = false;
		q = io_uring_cqe_get_data(cqe);
		r = cqe->res;
		io_uring_cqe_seen(&p->ring, cqe);
		p->inflight--;
		complete(p, q, r);
	}
	io_uring_submit(&p->ring);
	consume_ready(p);
}

int pio_pipe_read(struct pio_pipe *p, struct ploop_file *f, uint64_t off, size_t len, uint64_t tag)
{
	struct pio_slot *s = NULL;
	int r;

	if (len > p->chunk)
		return -EINVAL;
	if (p->error)
		return p->error;
	if (!p->uring || (f && !is_posix(f))) {
		/* Synchronous: drain what is in flight, then the consumer sees this chunk at once. */
		if (p->uring && pio_pipe_finish(p))
			return p->error;
		s = &p->slots[0];
		s->state = SLOT_WRITING;
		r = f ? pio_read(f, s->buf, len, off) : (memset(s->buf, 0, len), 0);
		if (!r)
			r = p->consume(p->ctx, p, s, s->buf, len, off, tag);
		s->state = SLOT_FREE;
		if (r)
			fail(p, r);
		return p->error;
	}
	while (!s) {
		for (unsigned i = 0; i < p->depth && !s; i++)
			if (p->slots[i].state == SLOT_FREE)
				s = &p->slots[i];
		if (!s)
			reap(p, true);
		if (p->error)
			return p->error;
	}
	s->state = SLOT_READING;
	s->tag = tag;
	s->seq = p->next_seq++;
	s->writes = 0;
	s->read = (struct pio_req){ .kind = REQ_READ, .slot = s, .buf = s->buf, .len = len, .off = off };
	if (!f) {
		memset(s->buf, 0, len);
		s->state = SLOT_READY;
		consume_ready(p);
		return p->error;
	}
	s->read.fd = direct_fd(p, f, off, len);
	submit(p, &s->read);
	reap(p, false);
	return p->error;
}

/* From the consumer: write @len bytes of the slot's buffer at @buf to @f at @off. The buffer stays
 * the slot's until the write completes. */
int pio_pipe_write(struct pio_pipe *p, struct pio_slot *s, const void *buf, size_t len, struct ploop_file *f,
		   uint64_t off)
{
	struct pio_req *q;

	if (!p->uring || !is_posix(f) || (uintptr_t)buf % PIPE_ALIGN)
		return pio_write(f, buf, len, off);
	q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	*q = (struct pio_req){ .kind = REQ_WRITE, .slot = s, .buf = (uint8_t *)buf, .len = len, .off = off,
			       .fd = p->durable ? direct_fd(p, f, off, len) : f->fd };
	s->writes++;
	submit(p, q);
	return 0;
}

int pio_pipe_finish(struct pio_pipe *p)
{
	if (p->uring)
		while (p->inflight || p->next_consume < p->next_seq)
			reap(p, true);
	return p->error;
}
