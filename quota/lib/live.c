/* The live holder (a simfs daemon enforcing the quota): its lock, its request socket, and the
 * merges by which it and the tools share the quota file without overwriting each other's fields. */
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "internal.h"

const char *vzq_run_dir(void)
{
	const char *d = getenv("VZQ_RUN_DIR");
	return d && *d ? d : "/run/vzquota";
}

static int run_path(uint32_t id, const char *suffix, char *out, size_t len, struct vzq_error *err)
{
	if ((size_t)snprintf(out, len, "%s/%u.%s", vzq_run_dir(), id, suffix) >= len)
		return vzq_fail(err, VZQ_ERR_SYS, ENAMETOOLONG, "%s/%u.%s", vzq_run_dir(), id, suffix);
	return 0;
}

static int make_run_dir(struct vzq_error *err)
{
	if (mkdir(vzq_run_dir(), 0700) < 0 && errno != EEXIST)
		return vzq_fail(err, VZQ_ERR_SYS, errno, "%s", vzq_run_dir());
	return 0;
}

int vzq_live_acquire(uint32_t id, int *lock_fd, struct vzq_error *err)
{
	char path[PATH_MAX];
	int fd;

	*lock_fd = -1;
	if (make_run_dir(err) || run_path(id, "live", path, sizeof(path), err))
		return err->status;
	for (;;) {
		struct stat fst, pst;

		fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
		if (fd < 0)
			return vzq_fail(err, VZQ_ERR_SYS, errno, "%s", path);
		/* A tool clearing a gone holder's files holds a shared lock for a moment: wait that out. */
		for (int i = 0; flock(fd, LOCK_EX | LOCK_NB) < 0; i++) {
			int e = errno;

			if (e == EWOULDBLOCK && i < 20) {
				usleep(5000);
				continue;
			}
			close(fd);
			if (e == EWOULDBLOCK)
				return vzq_fail(err, VZQ_ERR_LOCKED, 0, "quota %u is already served by another process", id);
			return vzq_fail(err, VZQ_ERR_SYS, e, "%s: lock", path);
		}
		/* vzq_live_forget may have removed the file between our open and our lock: a lock on a
		 * file nobody else can find would be no lock at all. Take the one at the path. */
		if (!fstat(fd, &fst) && !stat(path, &pst) && fst.st_dev == pst.st_dev && fst.st_ino == pst.st_ino)
			break;
		close(fd);
	}
	*lock_fd = fd;
	return 0;
}

void vzq_live_release(int lock_fd)
{
	if (lock_fd >= 0)
		close(lock_fd);	/* the lock goes with the last descriptor; the file stays (no unlink race) */
}

/* Removes the socket of @id, and with @lock_file its live lock file, if nobody holds the live
 * lock. Our shared lock keeps a holder from starting (it takes the lock before it binds the
 * socket) while we remove its files, and does not make vzq_live_held (shared too) see a holder. */
static void live_remove(uint32_t id, bool lock_file)
{
	char path[PATH_MAX], sock[PATH_MAX];
	int fd;

	if (run_path(id, "live", path, sizeof(path), NULL) || run_path(id, "sock", sock, sizeof(sock), NULL))
		return;
	/* No lock file: no holder has been here since a drop removed its files (a holder creates it
	 * before its socket, so a socket now may be one being bound: left alone). */
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	if (!flock(fd, LOCK_SH | LOCK_NB)) {
		unlink(sock);
		/* a holder that opened it meanwhile takes the new one (vzq_live_acquire) */
		if (lock_file)
			unlink(path);
	}
	close(fd);
}

void vzq_live_forget(uint32_t id)
{
	live_remove(id, true);
}

void vzq_live_clear(uint32_t id)
{
	live_remove(id, false);
}

bool vzq_live_held(uint32_t id)
{
	char path[PATH_MAX];
	bool held = false;
	int fd;

	if (run_path(id, "live", path, sizeof(path), NULL))
		return false;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	if (flock(fd, LOCK_SH | LOCK_NB) < 0)
		held = errno == EWOULDBLOCK;
	close(fd);
	return held;
}

static int sock_addr(uint32_t id, struct sockaddr_un *sa, struct vzq_error *err)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	return run_path(id, "sock", sa->sun_path, sizeof(sa->sun_path), err);
}

int vzq_live_listen(uint32_t id, int *out, struct vzq_error *err)
{
	struct sockaddr_un sa;
	mode_t old;
	int fd, rc;

	*out = -1;
	if (make_run_dir(err) || sock_addr(id, &sa, err))
		return err->status;
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return vzq_fail(err, VZQ_ERR_SYS, errno, "socket");
	unlink(sa.sun_path);	/* left by a killed holder; we hold the live lock */
	old = umask(0077);
	rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old);
	if (rc < 0 || chmod(sa.sun_path, 0600) < 0 || listen(fd, 16) < 0) {
		rc = vzq_fail(err, VZQ_ERR_SYS, errno, "%s", sa.sun_path);
		close(fd);
		return rc;
	}
	*out = fd;
	return 0;
}

int vzq_live_request(uint32_t id, const char *req, char *reply, size_t len, struct vzq_error *err)
{
	struct sockaddr_un sa;
	char buf[1024];
	struct pollfd p;
	ssize_t n;
	int fd, rc;

	if (sock_addr(id, &sa, err))
		return err->status;
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return vzq_fail(err, VZQ_ERR_SYS, errno, "socket");
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;
		close(fd);
		if (e == ENOENT || e == ECONNREFUSED)
			return vzq_fail(err, VZQ_ERR_NOT_RUNNING, 0, "quota %u: no live holder answers", id);
		return vzq_fail(err, VZQ_ERR_SYS, e, "%s", sa.sun_path);
	}
	if (send(fd, req, strlen(req), MSG_NOSIGNAL) < 0) {
		rc = vzq_fail(err, VZQ_ERR_LIVE, errno, "quota %u: request %s", id, req);
		close(fd);
		return rc;
	}
	p.fd = fd;
	p.events = POLLIN;
	do
		rc = poll(&p, 1, 10000);
	while (rc < 0 && errno == EINTR);
	if (rc <= 0) {
		rc = vzq_fail(err, VZQ_ERR_LIVE, rc ? errno : ETIMEDOUT, "quota %u: request %s", id, req);
		close(fd);
		return rc;
	}
	n = recv(fd, buf, sizeof(buf) - 1, 0);
	close(fd);
	if (n <= 0)
		return vzq_fail(err, VZQ_ERR_LIVE, n < 0 ? errno : 0, "quota %u: no answer to %s", id, req);
	buf[n] = 0;
	if (!strncmp(buf, "ok", 2) && (buf[2] == 0 || buf[2] == ' ')) {
		if (reply)
			snprintf(reply, len, "%s", buf[2] ? buf + 3 : "");
		return 0;
	}
	if (!strncmp(buf, "error ", 6)) {
		char *msg = buf + 6;
		long code = strtol(msg, &msg, 10);

		while (*msg == ' ')
			msg++;
		/* the quota file the holder could not read or write (a full quota directory) is the
		 * file error it is when a tool meets it; anything else is the holder's failure */
		return vzq_fail(err, code == VZQ_ERR_FILE ? VZQ_ERR_FILE : VZQ_ERR_LIVE, 0, "quota %u: %s: %s", id, req,
				msg);
	}
	return vzq_fail(err, VZQ_ERR_LIVE, 0, "quota %u: %s: unexpected answer", id, req);
}

int vzq_merge_usage(struct vzq_quota *file, const struct vzq_quota *live, struct vzq_error *err)
{
	file->stat.bcurrent = live->stat.bcurrent;
	file->stat.icurrent = live->stat.icurrent;
	file->stat.btime = live->stat.btime;
	file->stat.itime = live->stat.itime;
	/* a holder without the second level counts no uid/gid usage: the file's records (and the
	 * DIRTY of a second level requested meanwhile) stay for the next start */
	if (!(live->flags & VZQ_FLAG_UGID_ON))
		return 0;
	file->flags = (file->flags & ~VZQ_FLAG_UGID_OVER) | (live->flags & VZQ_FLAG_UGID_OVER);
	/* a record the holder does not have holds no usage (dropped at zero, or never made): only
	 * its limits stay, if it has any */
	for (size_t i = 0; i < file->n_ugid;) {
		struct vzq_ugid *f = &file->ugid[i];

		if (vzq_ugid_get((struct vzq_quota *)live, f->type, f->id, false, NULL)) {
			i++;
			continue;
		}
		f->stat.bcurrent = f->stat.icurrent = 0;
		f->stat.btime = f->stat.itime = 0;
		if (vzq_ugid_unused(f))
			vzq_ugid_remove(file, f);	/* the last takes its place: look at i again */
		else
			i++;
	}
	for (size_t i = 0; i < live->n_ugid; i++) {
		const struct vzq_ugid *l = &live->ugid[i];
		struct vzq_ugid *f = vzq_ugid_get(file, l->type, l->id, true, err);
		if (!f)
			return err->status;
		f->stat.bcurrent = l->stat.bcurrent;
		f->stat.icurrent = l->stat.icurrent;
		f->stat.btime = l->stat.btime;
		f->stat.itime = l->stat.itime;
		f->flags = l->flags;
	}
	return 0;
}

int vzq_merge_limits(struct vzq_quota *live, const struct vzq_quota *file, time_t now, struct vzq_error *err)
{
	live->stat.bsoft = file->stat.bsoft;
	live->stat.bhard = file->stat.bhard;
	live->stat.isoft = file->stat.isoft;
	live->stat.ihard = file->stat.ihard;
	live->grace = file->grace;
	live->ugid_grace[0] = file->ugid_grace[0];
	live->ugid_grace[1] = file->ugid_grace[1];
	/* The second level (UGID_ON, ugid_limit) stays as the holder started: turned on now, it
	 * would count uid/gid usage from zero; the file keeps the request (and DIRTY) for the
	 * next start, as upstream's kernel does. */
	const struct vzq_ugid *refused = NULL;

	/* a holder without the second level has no use for them */
	for (size_t i = 0; (live->flags & VZQ_FLAG_UGID_ON) && i < file->n_ugid; i++) {
		const struct vzq_ugid *f = &file->ugid[i];
		struct vzq_ugid *l = vzq_ugid_get(live, f->type, f->id, false, NULL);

		/* limits of an id without a record need one, within the ugid limit (as the kernel's
		 * set_dqblk, which refuses but does not fix the set); limits taken away from a record
		 * without usage drop it */
		if (!l && vzq_ugid_unused(f))
			continue;
		if (!l && (live->n_ugid >= live->ugid_limit || (live->flags & VZQ_FLAG_UGID_OVER))) {
			refused = f;
			continue;
		}
		if (!l && !(l = vzq_ugid_get(live, f->type, f->id, true, err)))
			return err->status;
		l->stat.bsoft = f->stat.bsoft;
		l->stat.bhard = f->stat.bhard;
		l->stat.isoft = f->stat.isoft;
		l->stat.ihard = f->stat.ihard;
		if (vzq_ugid_unused(l))
			vzq_ugid_remove(live, l);
	}
	vzq_update_grace(live, now);
	if (refused)
		return vzq_fail(err, VZQ_ERR_LIVE, 0,
				"the ugid limit (%u records) leaves no room for the limits of %s %u", live->ugid_limit,
				refused->type == VZQ_USER ? "user" : "group", refused->id);
	return 0;
}
