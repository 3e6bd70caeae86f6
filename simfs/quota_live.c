/* The live holder of a vzquota id: usage kept exact in memory under a mutex, written back to the
 * quota file every ~2 s when it changed and at a clean stop, and the answers to the tools'
 * requests (sync, reload, path, status) on the live socket. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "simfs.h"

#define SYNC_INTERVAL_MS 2000

struct qlive {
	uint32_t id;
	char fname[4096];
	char *root_dir;
	pthread_mutex_t lock;
	struct vzq_quota q;	/* under lock */
	bool dirty;		/* usage changed since the last write-back */
	int lock_fd, listen_fd;
	int stop_pipe[2];
	pthread_t writer, listener;
	bool threads;
	pthread_mutex_t file_lock;	/* one write-back at a time */
	void (*sync_fn)(void *ctx, bool all);	/* before a write-back (qlive_on_sync) */
	void *sync_ctx;
};

void qlive_on_sync(struct qlive *ql, void (*fn)(void *ctx, bool all), void *ctx)
{
	ql->sync_fn = fn;
	ql->sync_ctx = ctx;
}

static void bring_up_to_date(struct qlive *ql, bool all)
{
	if (ql->sync_fn)
		ql->sync_fn(ql->sync_ctx, all);
}

static time_t now(void)
{
	return time(NULL);
}

/* Opens the file read-write, retrying while a tool holds it (a few seconds at most). */
static int open_rdwr(struct qlive *ql, struct vzq_handle **h, struct vzq_quota *fq, struct vzq_error *err)
{
	for (int i = 0; i < 200; i++) {
		int r = vzq_open(ql->fname, VZQ_RDWR, h, fq, err);

		if (r != VZQ_ERR_LOCKED)
			return r;
		usleep(25000);
	}
	return VZQ_ERR_LOCKED;
}

/* Writes the live usage into the file; @flags_set/@flags_clear change its flags too. */
static int write_back(struct qlive *ql, uint32_t flags_set, uint32_t flags_clear, struct vzq_error *err)
{
	struct vzq_handle *h;
	struct vzq_quota fq;
	int r;

	pthread_mutex_lock(&ql->file_lock);
	r = open_rdwr(ql, &h, &fq, err);
	if (r) {
		pthread_mutex_unlock(&ql->file_lock);
		return r;
	}
	pthread_mutex_lock(&ql->lock);
	r = vzq_merge_usage(&fq, &ql->q, err);
	ql->dirty = false;
	pthread_mutex_unlock(&ql->lock);
	if (!r) {
		fq.flags = (fq.flags | flags_set) & ~flags_clear;
		r = vzq_write(h, &fq, err);
	}
	if (r) {
		pthread_mutex_lock(&ql->lock);
		ql->dirty = true;
		pthread_mutex_unlock(&ql->lock);
	}
	vzq_close(h);
	vzq_quota_free(&fq);
	pthread_mutex_unlock(&ql->file_lock);
	return r;
}

static int reload(struct qlive *ql, struct vzq_error *err)
{
	struct vzq_handle *h;
	struct vzq_quota fq;
	int r = vzq_open(ql->fname, VZQ_RDONLY, &h, &fq, err);

	if (r)
		return r;
	pthread_mutex_lock(&ql->lock);
	r = vzq_merge_limits(&ql->q, &fq, now(), err);
	pthread_mutex_unlock(&ql->lock);
	vzq_close(h);
	vzq_quota_free(&fq);
	return r;
}

int qlive_start(uint32_t id, const char *private_dir, const char *root_dir, struct qlive **out, char *msg,
		size_t len)
{
	struct qlive *ql = calloc(1, sizeof(*ql));
	struct vzq_error err = { 0 };
	struct vzq_handle *h = NULL;
	int r, code = SIMFS_ERR_QUOTA;

	if (!ql) {
		snprintf(msg, len, "out of memory");
		return SIMFS_ERR_SYS;
	}
	ql->id = id;
	ql->lock_fd = ql->listen_fd = -1;
	ql->stop_pipe[0] = ql->stop_pipe[1] = -1;
	pthread_mutex_init(&ql->lock, NULL);
	pthread_mutex_init(&ql->file_lock, NULL);
	ql->root_dir = strdup(root_dir);
	if (!ql->root_dir || vzq_file_name(id, NULL, false, NULL, ql->fname, sizeof(ql->fname), &err)) {
		snprintf(msg, len, "quota %u: %s", id, err.msg[0] ? err.msg : "out of memory");
		goto fail;
	}
	/* Not in the quota directory: kept next to the tree (vzquota -R, quota.NAME), if it is there. */
	if (access(ql->fname, F_OK) && errno == ENOENT) {
		char rel[sizeof(ql->fname)];
		struct vzq_error e2 = { 0 };

		if (!vzq_file_name(id, NULL, true, private_dir, rel, sizeof(rel), &e2) && !access(rel, F_OK))
			snprintf(ql->fname, sizeof(ql->fname), "%s", rel);
	}
	r = vzq_live_acquire(id, &ql->lock_fd, &err);
	if (r) {
		if (r == VZQ_ERR_LOCKED) {
			code = SIMFS_ERR_QUOTA_BUSY;
			snprintf(msg, len, "quota %u is already enforced by another simfs", id);
		} else {
			snprintf(msg, len, "quota %u: %s", id, err.msg);
		}
		goto fail;
	}
	r = open_rdwr(ql, &h, &ql->q, &err);
	if (r) {
		snprintf(msg, len, "%s", err.msg[0] ? err.msg : "quota file busy");
		goto fail;
	}
	if (!(ql->q.flags & VZQ_FLAG_ON)) {
		code = SIMFS_ERR_QUOTA_OFF;
		snprintf(msg, len, "quota %u is off: run vzquota on %u", id, id);
		goto fail;
	}
	if (ql->q.path && ql->q.path[0]) {
		char *real = realpath(ql->q.path, NULL);
		bool same = real && !strcmp(real, private_dir);

		free(real);
		if (!same) {
			snprintf(msg, len, "quota %u is for %s, not %s", id, ql->q.path, private_dir);
			goto fail;
		}
	}
	/* A file left LIVE by a killed daemon, or marked dirty: its usage cannot be trusted. */
	if (ql->q.flags & (VZQ_FLAG_DIRTY | VZQ_FLAG_LIVE)) {
		r = vzq_scan(private_dir, &ql->q, now(), &err);
		if (r) {
			snprintf(msg, len, "quota %u: rescan of %s: %s", id, private_dir, err.msg);
			goto fail;
		}
	}
	vzq_update_grace(&ql->q, now());
	/* SERVED stays after our stop: vzquota off then trusts the usage we wrote back */
	ql->q.flags |= VZQ_FLAG_LIVE | VZQ_FLAG_SERVED;
	ql->q.flags &= ~VZQ_FLAG_DIRTY;
	r = vzq_write(h, &ql->q, &err);
	if (r) {
		snprintf(msg, len, "%s", err.msg);
		goto fail;
	}
	vzq_close(h);
	*out = ql;
	return 0;
fail:
	if (h)
		vzq_close(h);
	if (ql->lock_fd >= 0) {
		vzq_live_release(ql->lock_fd);
		/* No quota file (a wrong id, or dropped meanwhile): the lock file we created names a
		 * quota that does not exist; it goes, as vzquota drop removes it. */
		if (access(ql->fname, F_OK) && errno == ENOENT)
			vzq_live_forget(id);
	}
	vzq_quota_free(&ql->q);
	free(ql->root_dir);
	free(ql);
	return code;
}

static void *writer_main(void *arg)
{
	struct qlive *ql = arg;
	struct pollfd p = { .fd = ql->stop_pipe[0], .events = POLLIN };

	while (poll(&p, 1, SYNC_INTERVAL_MS) == 0 || (p.revents == 0)) {
		struct vzq_error err;
		bool dirty;

		bring_up_to_date(ql, false);
		pthread_mutex_lock(&ql->lock);
		dirty = ql->dirty;
		pthread_mutex_unlock(&ql->lock);
		if (dirty && write_back(ql, 0, 0, &err))
			fprintf(stderr, "simfs: quota %u: write-back: %s\n", ql->id, err.msg);
	}
	return NULL;
}

static void answer(struct qlive *ql, int fd)
{
	char req[64], reply[4200];
	struct vzq_error err = { 0 };
	ssize_t n = recv(fd, req, sizeof(req) - 1, 0);
	int r = 0;

	if (n <= 0)
		return;
	req[n] = 0;
	while (n > 0 && (req[n - 1] == '\n' || req[n - 1] == 0))
		req[--n] = 0;
	if (!strcmp(req, VZQ_REQ_SYNC)) {
		bring_up_to_date(ql, true);
		r = write_back(ql, 0, 0, &err);
		snprintf(reply, sizeof(reply), "ok");
	} else if (!strcmp(req, VZQ_REQ_RELOAD)) {
		r = reload(ql, &err);
		snprintf(reply, sizeof(reply), "ok");
	} else if (!strcmp(req, VZQ_REQ_PATH)) {
		snprintf(reply, sizeof(reply), "ok %s", ql->root_dir);
	} else if (!strcmp(req, VZQ_REQ_USAGE)) {
		bring_up_to_date(ql, true);
		pthread_mutex_lock(&ql->lock);
		snprintf(reply, sizeof(reply), "ok %llu %llu %lld %lld", (unsigned long long)ql->q.stat.bcurrent,
			 (unsigned long long)ql->q.stat.icurrent, (long long)ql->q.stat.btime,
			 (long long)ql->q.stat.itime);
		pthread_mutex_unlock(&ql->lock);
	} else if (!strcmp(req, VZQ_REQ_STATUS)) {
		pthread_mutex_lock(&ql->lock);
		snprintf(reply, sizeof(reply), "ok %d %u", (ql->q.flags & VZQ_FLAG_UGID_ON) != 0, ql->q.ugid_limit);
		pthread_mutex_unlock(&ql->lock);
	} else {
		r = VZQ_ERR_USAGE;
		snprintf(err.msg, sizeof(err.msg), "unknown request '%.40s'", req);
	}
	if (r)
		snprintf(reply, sizeof(reply), "error %d %s", r, err.msg);
	send(fd, reply, strlen(reply), MSG_NOSIGNAL);
}

static void *listener_main(void *arg)
{
	struct qlive *ql = arg;

	for (;;) {
		struct pollfd p[2] = { { .fd = ql->stop_pipe[0], .events = POLLIN },
				       { .fd = ql->listen_fd, .events = POLLIN } };
		int fd;

		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (p[0].revents)
			break;
		if (!p[1].revents)
			continue;
		fd = accept4(ql->listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		struct timeval tv = { 5, 0 };

		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		answer(ql, fd);
		close(fd);
	}
	return NULL;
}

int qlive_run(struct qlive *ql, char *msg, size_t len)
{
	struct vzq_error err = { 0 };
	sigset_t all, old;
	int r;

	r = vzq_live_listen(ql->id, &ql->listen_fd, &err);
	if (r) {
		snprintf(msg, len, "quota %u: %s", ql->id, err.msg);
		return SIMFS_ERR_QUOTA;
	}
	if (pipe2(ql->stop_pipe, O_CLOEXEC)) {
		snprintf(msg, len, "pipe: %s", strerror(errno));
		return SIMFS_ERR_SYS;
	}
	/* Signals go to the FUSE loop's thread, never to ours. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	r = pthread_create(&ql->writer, NULL, writer_main, ql);
	if (!r) {
		r = pthread_create(&ql->listener, NULL, listener_main, ql);
		if (r) {
			close(ql->stop_pipe[1]);
			ql->stop_pipe[1] = -1;
			pthread_join(ql->writer, NULL);
		}
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r) {
		snprintf(msg, len, "pthread_create: %s", strerror(r));
		return SIMFS_ERR_SYS;
	}
	ql->threads = true;
	return 0;
}

void qlive_quiesce(struct qlive *ql)
{
	if (!ql->threads)
		return;
	close(ql->stop_pipe[1]);
	pthread_join(ql->writer, NULL);
	pthread_join(ql->listener, NULL);
	ql->threads = false;
}

void qlive_stop(struct qlive *ql)
{
	struct vzq_error err = { 0 };
	char sock[4200];

	qlive_quiesce(ql);
	if (ql->listen_fd >= 0) {
		snprintf(sock, sizeof(sock), "%s/%u.sock", vzq_run_dir(), ql->id);
		unlink(sock);
		close(ql->listen_fd);
	}
	if (write_back(ql, 0, VZQ_FLAG_LIVE, &err))
		fprintf(stderr, "simfs: quota %u: final write-back: %s (the next mount rescans)\n", ql->id, err.msg);
	vzq_live_release(ql->lock_fd);
	if (ql->stop_pipe[0] >= 0)
		close(ql->stop_pipe[0]);
	vzq_quota_free(&ql->q);
	free(ql->root_dir);
	free(ql);
}

int qlive_reserve(struct qlive *ql, const struct qcharge *c, int64_t slack)
{
	struct vzq_charge vc = { c->bytes, c->inodes, c->uid, c->gid };
	struct vzq_charge all = { c->bytes + slack, c->inodes, c->uid, c->gid };
	time_t t = now();
	int r;

	if (!all.bytes && !all.inodes)
		return 0;
	pthread_mutex_lock(&ql->lock);
	r = vzq_check(&ql->q, &vc, t);
	if (!r && slack)
		r = vzq_check_hard(&ql->q, &all);
	if (!r) {
		r = vzq_apply(&ql->q, &all, t);
		ql->dirty = true;
	}
	pthread_mutex_unlock(&ql->lock);
	return r;
}

void qlive_apply(struct qlive *ql, const struct qcharge *c)
{
	struct vzq_charge vc = { c->bytes, c->inodes, c->uid, c->gid };

	if (!c->bytes && !c->inodes)
		return;
	pthread_mutex_lock(&ql->lock);
	vzq_apply(&ql->q, &vc, now());
	ql->dirty = true;
	pthread_mutex_unlock(&ql->lock);
}

int qlive_move(struct qlive *ql, int64_t bytes, int64_t inodes, uid_t ouid, gid_t ogid, uid_t nuid, gid_t ngid)
{
	int r;

	if (ouid == nuid && ogid == ngid)
		return 0;
	pthread_mutex_lock(&ql->lock);
	r = vzq_move(&ql->q, bytes, inodes, ouid, ogid, nuid, ngid, now());
	ql->dirty = true;
	pthread_mutex_unlock(&ql->lock);
	return r;
}

void qlive_usage(struct qlive *ql, struct vzq_stat *st)
{
	pthread_mutex_lock(&ql->lock);
	*st = ql->q.stat;
	pthread_mutex_unlock(&ql->lock);
}
