/* FUSE over io_uring under a libfuse 3.14 session (see fuse_ring.h). Kernel ABI 7.42: each ring
 * entry is a header buffer (struct ring_req_header) and a payload buffer registered with
 * FUSE_IO_URING_CMD_REGISTER; a request arrives as the completion of that command, and the reply
 * goes back with FUSE_IO_URING_CMD_COMMIT_AND_FETCH, which also waits for the next request. */
#include "fuse_ring.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <linux/fuse.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/* Kernel ABI 7.42 (include/uapi/linux/fuse.h), newer than the headers this builds against. */
#define RING_FLAG2_OVER_IO_URING (1u << (41 - 32))	/* FUSE_OVER_IO_URING, in flags2 */
#define RING_INIT_EXT (1u << 30)			/* FUSE_INIT_EXT: flags2 is valid */
#define RING_MAX_PAGES (1u << 22)			/* FUSE_MAX_PAGES */
#define RING_CMD_REGISTER 1u
#define RING_CMD_COMMIT_AND_FETCH 2u
#define RING_OP_SZ 128

struct ring_ent_in_out {
	uint64_t flags;
	uint64_t commit_id;	/* the request's unique, echoed in the commit */
	uint32_t payload_sz;	/* bytes valid in the payload buffer, either way */
	uint32_t padding;
	uint64_t reserved;
};

struct ring_req_header {
	char in_out[128];	/* fuse_in_header on arrival, fuse_out_header on commit */
	char op_in[RING_OP_SZ];	/* the request's first argument (its fixed-size struct) */
	struct ring_ent_in_out ent;
};
_Static_assert(sizeof(struct ring_req_header) == 288, "fuse_uring_req_header");

struct ring_cmd_req {		/* in the 80-byte command area of a 128-byte SQE */
	uint64_t flags;
	uint64_t commit_id;
	uint16_t qid;
	uint8_t padding[6];
};
_Static_assert(sizeof(struct ring_cmd_req) == 24, "fuse_uring_cmd_req");

/* Room before the payload to rebuild a request as /dev/fuse would deliver it (header + first
 * argument + payload, contiguous), and to keep the payload page-aligned for direct I/O. */
#define RING_SLACK 4096

struct ring_thread {
	pthread_t tid;
	bool running;
	unsigned qid;
	struct io_uring ring;
	struct ring_req_header *hdr;
	uint8_t *buf;		/* RING_SLACK + payload */
	uint8_t *payload;
	size_t payload_len;
	struct iovec iov[2];
	uint64_t unique;	/* the request in service */
	bool replied;
};

static struct {
	struct fuse_session *se;
	int fd;
	bool enable;
	bool pin;
	bool kernel_offers;	/* the INIT request carried FUSE_OVER_IO_URING */
	bool requested;		/* ... and our INIT reply asked for it */
	unsigned per_queue, nqueues;
	struct ring_thread *threads;
	unsigned nthreads;
	int stop_fd;		/* an eventfd every thread polls: written, they all leave */
	struct fuse_custom_io io;
} R = { .fd = -1, .stop_fd = -1 };

#define RING_STOP_TAG 1ull	/* user_data of the stop poll (commands carry 0) */

static __thread struct ring_thread *cur;
static __thread bool init_reply_next;

/* ---- the ring threads --------------------------------------------------------------------------- */

static void prep_cmd(struct ring_thread *t, struct io_uring_sqe *sqe, uint32_t op, uint64_t commit_id)
{
	struct ring_cmd_req *req;

	if (!sqe)
		return;	/* cannot happen: one command at a time on a ring of 4 */
	req = (struct ring_cmd_req *)sqe->cmd;
	memset(sqe, 0, 128);
	sqe->opcode = IORING_OP_URING_CMD;
	sqe->fd = R.fd;
	sqe->cmd_op = op;
	if (op == RING_CMD_REGISTER) {
		sqe->addr = (uint64_t)(uintptr_t)t->iov;
		sqe->len = 2;
	}
	req->commit_id = commit_id;
	req->qid = (uint16_t)t->qid;
}

static void reply_error(struct ring_thread *t, int err)
{
	struct fuse_out_header oh = { .len = sizeof(oh), .error = -err, .unique = t->unique };

	memcpy(t->hdr->in_out, &oh, sizeof(oh));
	t->hdr->ent.payload_sz = 0;
	t->replied = true;
}

/* One request: rebuilt contiguous in front of its payload and run by libfuse's dispatcher, whose
 * reply lands in this entry (ring_writev). */
static void serve(struct ring_thread *t)
{
	struct fuse_in_header ih;
	uint32_t psz = t->hdr->ent.payload_sz;
	size_t opsz;
	uint8_t *start;

	memcpy(&ih, t->hdr->in_out, sizeof(ih));
	t->unique = ih.unique;
	t->replied = false;
	if (ih.len < sizeof(ih) + (size_t)psz || psz > t->payload_len ||
	    (opsz = ih.len - sizeof(ih) - psz) > RING_OP_SZ) {
		reply_error(t, EIO);
		return;
	}
	start = t->payload - opsz - sizeof(ih);
	memcpy(start, &ih, sizeof(ih));
	memcpy(start + sizeof(ih), t->hdr->op_in, opsz);
	struct fuse_buf fb = { .size = ih.len, .mem = start };
	cur = t;
	fuse_session_process_buf(R.se, &fb);
	cur = NULL;
	if (!t->replied)
		reply_error(t, EIO);
}

static void *ring_main(void *arg)
{
	struct ring_thread *t = arg;
	struct io_uring_sqe *sqe;
	sigset_t all;
	cpu_set_t cpus;

	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	/* Requests issued on CPU qid come to this queue: serve them there, no cross-CPU wakeup. */
	if (R.pin) {
		CPU_ZERO(&cpus);
		CPU_SET(t->qid, &cpus);
		sched_setaffinity(0, sizeof(cpus), &cpus);
	}
	sqe = io_uring_get_sqe(&t->ring);
	prep_cmd(t, sqe, RING_CMD_REGISTER, 0);
	sqe = io_uring_get_sqe(&t->ring);
	if (sqe) {
		io_uring_prep_poll_add(sqe, R.stop_fd, POLLIN);
		io_uring_sqe_set_data64(sqe, RING_STOP_TAG);
	}
	for (;;) {
		struct io_uring_cqe *cqe;
		int r = io_uring_submit_and_wait(&t->ring, 1);
		bool stop;

		if (r < 0 && r != -EINTR)
			break;
		if (io_uring_peek_cqe(&t->ring, &cqe))
			continue;
		r = cqe->res;
		stop = cqe->user_data == RING_STOP_TAG;
		io_uring_cqe_seen(&t->ring, cqe);
		if (stop || r < 0)
			break;	/* told to stop, or -ENOTCONN: the connection is gone */
		serve(t);
		sqe = io_uring_get_sqe(&t->ring);
		prep_cmd(t, sqe, RING_CMD_COMMIT_AND_FETCH, t->unique);
	}
	return NULL;
}

static void free_threads(void)
{
	for (unsigned i = 0; i < R.nthreads; i++) {
		struct ring_thread *t = &R.threads[i];

		if (t->ring.ring_fd > 0)
			io_uring_queue_exit(&t->ring);
		free(t->hdr);
		free(t->buf);
	}
	free(R.threads);
	R.threads = NULL;
	R.nthreads = 0;
}

static unsigned possible_cpus(void)
{
	FILE *f = fopen("/sys/devices/system/cpu/possible", "re");
	unsigned a, b, n = 0;
	int c;

	if (!f)
		return 0;
	/* "0-1", "0", "0-3,8-11" */
	while (fscanf(f, "%u", &a) == 1) {
		b = a;
		c = fgetc(f);
		if (c == '-' && fscanf(f, "%u", &b) == 1)
			c = fgetc(f);
		n += b - a + 1;
		if (c != ',')
			break;
	}
	fclose(f);
	return n;
}

/* Everything that can fail is done before the INIT reply asks for the ring: once it has, the
 * kernel holds every request until each queue has an entry registered. */
static int prepare_threads(const struct fuse_init_out *out)
{
	size_t pages = (out->flags & RING_MAX_PAGES) ? out->max_pages : 32;
	size_t payload = (size_t)out->max_write;

	if (payload < pages * 4096)
		payload = pages * 4096;
	if (payload < 8192)
		payload = 8192;
	R.nqueues = possible_cpus();
	if (!R.nqueues || R.nqueues > 1024) {
		return -1;
	}
	if (R.stop_fd < 0 && (R.stop_fd = eventfd(0, EFD_CLOEXEC)) < 0)
		return -1;
	R.nthreads = R.nqueues * R.per_queue;
	R.threads = calloc(R.nthreads, sizeof(*R.threads));
	if (!R.threads) {
		R.nthreads = 0;
		return -1;
	}
	for (unsigned i = 0; i < R.nthreads; i++) {
		struct ring_thread *t = &R.threads[i];
		void *h = NULL, *b = NULL;

		t->qid = i / R.per_queue;
		t->payload_len = payload;
		t->ring.ring_fd = -1;
		if (posix_memalign(&h, 64, sizeof(*t->hdr)) || posix_memalign(&b, 4096, RING_SLACK + payload)) {
			free(h);
			free(b);
			free_threads();
			return -1;
		}
		t->hdr = h;
		t->buf = b;
		t->payload = t->buf + RING_SLACK;
		t->iov[0] = (struct iovec){ t->hdr, sizeof(*t->hdr) };
		t->iov[1] = (struct iovec){ t->payload, payload };
		if (io_uring_queue_init(4, &t->ring, IORING_SETUP_SQE128)) {
			t->ring.ring_fd = -1;
			free_threads();
			return -1;
		}
	}
	return 0;
}

/* A registration the kernel refuses turns the ring off for the connection (requests held for it
 * go to /dev/fuse again): used when a thread could not start. */
static void refuse_ring(void)
{
	struct io_uring ring;
	struct io_uring_cqe *cqe;
	struct ring_thread fake = { .qid = 0xffff };

	if (io_uring_queue_init(2, &ring, IORING_SETUP_SQE128))
		return;
	prep_cmd(&fake, io_uring_get_sqe(&ring), RING_CMD_REGISTER, 0);
	if (io_uring_submit_and_wait(&ring, 1) >= 0 && !io_uring_peek_cqe(&ring, &cqe))
		io_uring_cqe_seen(&ring, cqe);
	io_uring_queue_exit(&ring);
}

static void start_threads(void)
{
	for (unsigned i = 0; i < R.nthreads; i++) {
		struct ring_thread *t = &R.threads[i];

		if (pthread_create(&t->tid, NULL, ring_main, t)) {
			refuse_ring();
			return;
		}
		t->running = true;
	}
}

/* ---- the session's I/O -------------------------------------------------------------------------- */

static ssize_t ring_read(int fd, void *buf, size_t len, void *userdata)
{
	ssize_t r = read(fd, buf, len);
	const struct fuse_in_header *ih = buf;

	(void)userdata;
	if (r >= (ssize_t)(sizeof(*ih) + 20) && ih->opcode == FUSE_INIT) {
		const uint32_t *in = (const uint32_t *)(ih + 1);	/* major, minor, max_readahead, flags, flags2 */

		R.kernel_offers = (in[3] & RING_INIT_EXT) && (in[4] & RING_FLAG2_OVER_IO_URING);
	}
	return r;
}

static ssize_t init_reply(int fd, struct iovec *iov, int count)
{
	const struct fuse_out_header *oh = iov[0].iov_base;
	ssize_t r;

	if (!oh->error && count >= 2 && iov[1].iov_len >= offsetof(struct fuse_init_out, flags2) + 4) {
		struct fuse_init_out *out = iov[1].iov_base;

		if (!prepare_threads(out)) {
			out->flags |= RING_INIT_EXT;
			out->flags2 |= RING_FLAG2_OVER_IO_URING;
			R.requested = true;
		}
	}
	r = writev(fd, iov, count);
	if (R.requested) {
		if (r < 0) {
			free_threads();
			R.requested = false;
		} else {
			start_threads();
		}
	}
	return r;
}

/* The reply of the request this thread serves: header to the entry's header, arguments to its
 * payload (in place when the handler built them there). */
static ssize_t stage_reply(struct ring_thread *t, struct iovec *iov, int count)
{
	size_t total = 0, pos = 0, hdr = 0;

	for (int i = 0; i < count; i++) {
		const uint8_t *p = iov[i].iov_base;
		size_t n = iov[i].iov_len;

		total += n;
		if (hdr < sizeof(struct fuse_out_header)) {
			size_t h = sizeof(struct fuse_out_header) - hdr < n ? sizeof(struct fuse_out_header) - hdr : n;

			memcpy(t->hdr->in_out + hdr, p, h);
			hdr += h;
			p += h;
			n -= h;
		}
		if (!n)
			continue;
		if (pos + n > t->payload_len) {
			reply_error(t, EIO);
			return (ssize_t)total;
		}
		if (t->payload + pos != p)
			memcpy(t->payload + pos, p, n);
		pos += n;
	}
	t->hdr->ent.payload_sz = (uint32_t)pos;
	t->replied = true;
	return (ssize_t)total;
}

static ssize_t ring_writev(int fd, struct iovec *iov, int count, void *userdata)
{
	struct ring_thread *t = cur;

	(void)userdata;
	if (init_reply_next) {
		init_reply_next = false;
		return init_reply(fd, iov, count);
	}
	if (t && count > 0 && iov[0].iov_len >= sizeof(struct fuse_out_header) &&
	    ((const struct fuse_out_header *)iov[0].iov_base)->unique == t->unique && !t->replied)
		return stage_reply(t, iov, count);
	return writev(fd, iov, count);
}

/* ---- API ------------------------------------------------------------------------------------------ */

int fuse_ring_attach(struct fuse_session *se, unsigned threads_per_queue, bool pin, bool enable)
{
	R.pin = pin;
	R.se = se;
	R.enable = enable;
	R.per_queue = threads_per_queue ? threads_per_queue : 1;
	if (!enable)
		return 0;
	/* Our own descriptor of the connection: the ring threads may still commit after libfuse has
	 * closed the session's, and must not hit a reused number. */
	R.fd = fcntl(fuse_session_fd(se), F_DUPFD_CLOEXEC, 3);
	if (R.fd < 0)
		return -errno;
	R.io.read = ring_read;
	R.io.writev = ring_writev;
	if (fuse_session_custom_io(se, &R.io, fuse_session_fd(se))) {
		close(R.fd);
		R.fd = -1;
		return -EINVAL;
	}
	return 0;
}

void fuse_ring_init(struct fuse_conn_info *conn)
{
	if (!R.enable || !R.kernel_offers)
		return;
	/* A spliced reply would go to /dev/fuse, where the kernel does not look for ring requests. */
	conn->want &= ~(unsigned)(FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE | FUSE_CAP_SPLICE_READ);
	init_reply_next = true;
}

/*
 * The session is over and unmounted, but the connection lives while our descriptor and the
 * threads' pending commands hold /dev/fuse: the threads would go on serving the clients of the
 * detached mount. They are told to stop (each finishes the request it is in), joined, and their
 * rings closed, which cancels the commands; closing the last descriptor then ends the connection,
 * and the clients get ENOTCONN, as with /dev/fuse.
 */
void fuse_ring_detach(void)
{
	if (R.stop_fd >= 0)
		(void)eventfd_write(R.stop_fd, 1);
	for (unsigned i = 0; i < R.nthreads; i++) {
		struct ring_thread *t = &R.threads[i];
		struct timespec until;

		if (!t->running)
			continue;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += 30;
		if (pthread_timedjoin_np(t->tid, NULL, &until))
			return;	/* stuck in a request: the process exit ends it */
		t->running = false;
	}
	free_threads();
	if (R.fd >= 0)
		close(R.fd);
	R.fd = -1;
	if (R.stop_fd >= 0)
		close(R.stop_fd);
	R.stop_fd = -1;
}

void *fuse_ring_reply_buffer(size_t len)
{
	return cur && len <= cur->payload_len ? cur->payload : NULL;
}
