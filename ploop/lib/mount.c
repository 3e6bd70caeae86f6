/* The client side of mounted image sets: starting a server (ploopd) and waiting until it serves,
 * finding servers by descriptor, device or mount point, talking to their control sockets, and
 * stopping them -- or cleaning up after one that died. */
#include <dirent.h>
#include <endian.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/loop.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>

#include "../../common/mountinfo.h"
#include "internal.h"

void ploop_instance_id(const char *dd_realpath, const char *guid, char id[17])
{
	uint64_t h = 0xcbf29ce484222325ULL;	/* FNV-1a */

	for (const char *p = dd_realpath; *p; p++)
		h = (h ^ (uint8_t)*p) * 0x100000001b3ULL;
	h = (h ^ 0xff) * 0x100000001b3ULL;
	for (const char *p = guid ? guid : ""; *p; p++)
		h = (h ^ (uint8_t)*p) * 0x100000001b3ULL;
	snprintf(id, 17, "%016llx", (unsigned long long)h);
}

static void sleep_ms(int ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/* The state letter of a task from its /proc stat file ('R', 'S', 'D', 'T', 'Z'...), or 0 if it is
 * gone. */
static char task_state(const char *stat_path)
{
	char buf[256], *close_paren;
	int fd = open(stat_path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	close_paren = strrchr(buf, ')');
	return close_paren && close_paren[1] ? close_paren[2] : 0;
}

/* Whether any thread of @pid is in one of @states (state letters), or, with @negate, in none of
 * them (a thread that is gone is in none). */
static bool any_thread(int pid, const char *states, bool negate)
{
	char path[64];
	struct dirent *e;
	bool found = false;
	DIR *tasks;

	snprintf(path, sizeof(path), "/proc/%d/task", pid);
	tasks = opendir(path);
	if (!tasks)
		return false;
	while (!found && (e = readdir(tasks))) {
		char stat_path[400], st;

		if (e->d_name[0] == '.')
			continue;
		snprintf(stat_path, sizeof(stat_path), "/proc/%d/task/%s/stat", pid, e->d_name);
		st = task_state(stat_path);
		if (st)
			found = (strchr(states, st) != NULL) != negate;
	}
	closedir(tasks);
	return found;
}

/* Whether @pid runs: any of its threads is not a zombie. (A zombie does not run: nobody may be
 * reaping it. Its group leader turns zombie while other threads still exit, holding the process's
 * files - and with them its image locks - until the last is gone.) */
static bool pid_running(int pid)
{
	return pid > 0 && !kill(pid, 0) && any_thread(pid, "Z", true);
}

/* ---- state files ------------------------------------------------------------------------------- */

static void copy_field(char *dst, size_t len, const char *val)
{
	snprintf(dst, len, "%s", val);
}

static int read_state(const char *id, struct ploop_instance *in)
{
	char path[PATH_MAX], line[8400];
	FILE *f;

	memset(in, 0, sizeof(*in));
	snprintf(in->id, sizeof(in->id), "%s", id);
	snprintf(path, sizeof(path), "%s/%s/state", PLOOP_RUN_DIR, id);
	f = fopen(path, "re");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		char *eq = strchr(line, '=');

		if (!eq)
			continue;
		*eq++ = '\0';
		eq[strcspn(eq, "\n")] = '\0';
		if (!strcmp(line, "pid"))
			in->pid = atoi(eq);
		else if (!strcmp(line, "ro"))
			in->ro = atoi(eq);
		else if (!strcmp(line, "descriptor"))
			copy_field(in->descriptor, sizeof(in->descriptor), eq);
		else if (!strcmp(line, "guid"))
			copy_field(in->guid, sizeof(in->guid), eq);
		else if (!strcmp(line, "device"))
			copy_field(in->device, sizeof(in->device), eq);
		else if (!strcmp(line, "part"))
			copy_field(in->part, sizeof(in->part), eq);
		else if (!strcmp(line, "mount"))
			copy_field(in->mount, sizeof(in->mount), eq);
		else if (!strcmp(line, "fstype"))
			copy_field(in->fstype, sizeof(in->fstype), eq);
		else if (!strcmp(line, "options"))
			copy_field(in->options, sizeof(in->options), eq);
		else if (!strcmp(line, "file"))
			copy_field(in->file, sizeof(in->file), eq);
		else if (!strcmp(line, "kernel"))
			in->kernel = atoi(eq);
		else if (!strcmp(line, "base")) {
			unsigned long long dev, ino;

			if (sscanf(eq, "%llu:%llu", &dev, &ino) == 2) {
				in->base_dev = dev;
				in->base_ino = ino;
			}
		}
	}
	fclose(f);
	return 0;
}

/* A connection to a server's control socket; -EAGAIN when the server does not take connections
 * (stopped or hung with its backlog full: a blocking connect would wait for it for ever, and every
 * command that looks at the mounted sets with it). */
static int connect_instance(const char *id)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

	if (fd < 0)
		return -errno;
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s/%s/control", PLOOP_RUN_DIR, id);
	if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) ||
	    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)) {
		int e = errno;

		close(fd);
		return -e;
	}
	return fd;
}

/* A server is alive if its process exists and its socket accepts a connection, or would but for
 * a full backlog (a hung server is not a dead one: nothing of it may be cleaned up). */
static bool instance_alive(const struct ploop_instance *in)
{
	int fd;

	if (!pid_running(in->pid))
		return false;
	fd = connect_instance(in->id);
	if (fd == -EAGAIN)
		return true;
	if (fd < 0)
		return false;
	close(fd);
	return true;
}

/* The name of a server's base delta as the server has it open (the set's directory may have been
 * renamed since the mount): false if it has none. */
static bool server_base_path(const struct ploop_instance *in, char *path, size_t len)
{
	char fds[64], link[PATH_MAX];
	struct dirent *e;
	bool found = false;
	DIR *d;

	if (!in->base_ino || in->pid <= 0 || in->kernel)
		return false;
	snprintf(fds, sizeof(fds), "/proc/%d/fd", in->pid);
	d = opendir(fds);
	while (d && (e = readdir(d))) {
		struct stat st;
		ssize_t n;

		snprintf(link, sizeof(link), "%s/%s", fds, e->d_name);
		if (e->d_name[0] == '.' || stat(link, &st) || st.st_ino != in->base_ino || st.st_dev != in->base_dev)
			continue;
		n = readlink(link, path, len - 1);
		if (n > 0) {
			path[n] = '\0';
			found = path[0] == '/' && !strstr(path, " (deleted)");
		}
		break;
	}
	if (d)
		closedir(d);
	return found;
}

/* The descriptor of a server's set as it is named now: beside its base delta (a set's images are
 * all in its directory). */
static void current_descriptor(struct ploop_instance *in)
{
	const char *name = strrchr(in->descriptor, '/');
	char base[PATH_MAX], *slash;

	if (!name || !server_base_path(in, base, sizeof(base)) || !(slash = strrchr(base, '/')) ||
	    (size_t)(slash - base) + strlen(name) >= sizeof(base))
		return;
	strcpy(slash, name);
	/* (a base moved out of its set's directory by itself leaves the set where it was) */
	if (!access(base, F_OK))
		snprintf(in->descriptor, sizeof(in->descriptor), "%s", base);
}

/* The device of the filesystem mounted at @dir (the last mounted there, which is what shows), or 0. */
static dev_t device_mounted_at(const char *dir)
{
	char line[8192];
	dev_t dev = 0;
	FILE *f = fopen("/proc/self/mountinfo", "re");

	while (f && fgets(line, sizeof(line), f)) {
		unsigned maj, min;
		char field[4096], d[4096];

		if (sscanf(line, "%*d %*d %u:%u %*s %4095s", &maj, &min, field) != 3)
			continue;
		mountinfo_unescape(field, d, sizeof(d));
		if (!strcmp(d, dir))
			dev = makedev(maj, min);
	}
	if (f)
		fclose(f);
	return dev;
}

/* A kernel-mapped set whose device is suspended while an offline operation of ours rewrites its chain
 * (snapshot, merge, delete: see kernel_call): it counts as not mounted meanwhile. */
static const char *kernel_offline_id;

static int load_instance(const char *id, struct ploop_instance *out)
{
	int r = read_state(id, out);
	struct stat st;

	if (!r && out->kernel)
		out->alive = !stat(out->device, &st) && S_ISBLK(st.st_mode) &&
			     !(kernel_offline_id && !strcmp(kernel_offline_id, id));
	else if (!r)
		out->alive = instance_alive(out);
	if (!r && out->alive && !out->kernel)
		current_descriptor(out);
	/* Its mount point while its filesystem is what is mounted there: not once that was unmounted
	 * by hand (or moved, or covered), when the directory may hold another set's. */
	if (!r && out->mount[0]) {
		dev_t at = device_mounted_at(out->mount);

		if (!at || ((stat(out->device, &st) || st.st_rdev != at) &&
			    (!out->part[0] || stat(out->part, &st) || st.st_rdev != at)))
			out->mount[0] = '\0';
	}
	return r;
}

static int kernel_call(const struct ploop_instance *in, const char *cmd, struct ploop_error *err);

/* Whether any thread of @pid is stopped (SIGSTOP, or a tracer's stop): it takes no requests until it
 * is continued, however long that is. */
static bool pid_stopped(int pid)
{
	return any_thread(pid, "Tt", false);
}

/*
 * Waits for the reply on @fd. A command may rightly take long (an online merge of a big delta, a
 * compact), so there is no time limit; instead, every second without a reply, the server is looked
 * at: a stopped one (its connection sits in the backlog, or its command waits for it) or one that
 * is gone answers no more. -ETIME: stopped; -EPIPE: gone.
 */
static ssize_t wait_reply(const struct ploop_instance *in, int fd, char *buf, size_t len)
{
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int r = poll(&p, 1, 1000);

		if (r < 0 && errno != EINTR)
			return -errno;
		if (r > 0) {
			ssize_t n = recv(fd, buf, len, MSG_DONTWAIT);

			if (n >= 0 || (errno != EAGAIN && errno != EINTR))
				return n < 0 ? -errno : n;
			continue;
		}
		if (!pid_running(in->pid))
			return -EPIPE;
		if (pid_stopped(in->pid))
			return -ETIME;
	}
}

/* Sends @cmd to the server and reads its reply; *@lost says whether a failure is the server's
 * answer or no answer at all (refused, reset or closed connection: a server that died). A stopped
 * server fails the command at once (in a second or so) and, once continued, does not run it: it
 * finds the connection closed (control.c). */
static int call_server(const struct ploop_instance *in, const char *cmd, char *reply, size_t len, bool *lost,
		       struct ploop_error *err)
{
	char buf[4096];
	ssize_t n;
	int fd;

	*lost = true;
	fd = connect_instance(in->id);
	/* A full backlog of a server that runs: it is busy (a client that sends nothing holds it for
	 * up to 5 s, and a burst of `ploop list` queues behind), and its queue moves. One that is
	 * stopped is given up on at once. */
	for (int i = 0; fd == -EAGAIN && i < 80 && pid_running(in->pid) && !pid_stopped(in->pid); i++) {
		sleep_ms(100);
		fd = connect_instance(in->id);
	}
	if (fd == -EAGAIN) {
		*lost = false;	/* alive, but not taking requests */
		return ploop_fail(err, PLOOP_ERR_DEVICE, 0,
				  "the server of %s (pid %d) takes no requests: it is stopped or hung", in->descriptor,
				  in->pid);
	}
	if (fd < 0)
		return ploop_fail(err, PLOOP_ERR_DEVICE, -fd, "the server of %s does not answer", in->descriptor);
	if (send(fd, cmd, strlen(cmd), MSG_NOSIGNAL) < 0) {
		close(fd);
		return ploop_fail(err, PLOOP_ERR_DEVICE, errno, "the server of %s", in->descriptor);
	}
	n = wait_reply(in, fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n == -ETIME) {
		*lost = false;
		return ploop_fail(err, PLOOP_ERR_DEVICE, 0,
				  "the server of %s (pid %d) takes no requests: it is stopped or hung", in->descriptor,
				  in->pid);
	}
	if (n <= 0)
		return ploop_fail(err, PLOOP_ERR_DEVICE, n < 0 && n != -EPIPE ? (int)-n : 0,
				  "the server of %s closed the connection", in->descriptor);
	*lost = false;
	buf[n] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	if (!strncmp(buf, "ok", 2)) {
		if (reply)
			snprintf(reply, len, "%s", buf[2] == ' ' ? buf + 3 : "");
		return 0;
	}
	if (!strncmp(buf, "err ", 4)) {
		char *msg = NULL;
		long code = strtol(buf + 4, &msg, 10);

		return ploop_fail(err, code > 0 && code < 256 ? (int)code : PLOOP_ERR_DEVICE, 0, "%s",
				  msg && *msg ? msg + 1 : "failed");
	}
	return ploop_fail(err, PLOOP_ERR_DEVICE, 0, "the server of %s replied '%.100s'", in->descriptor, buf);
}

int ploop_instance_call(const struct ploop_instance *in, const char *cmd, char *reply, size_t len,
			struct ploop_error *err)
{
	bool lost;

	if (in->kernel) {
		if (reply && len)
			reply[0] = '\0';
		return kernel_call(in, cmd, err);
	}
	return call_server(in, cmd, reply, len, &lost, err);
}

/* Whether a server found alive still serves its set. One killed a moment ago still runs while its
 * threads exit, and answers no more (its connection refused, reset or closed): it is waited for (up
 * to 5 s), and then it is a dead one. */
static bool still_serving(const struct ploop_instance *in)
{
	struct ploop_error e = { 0 };
	bool lost;

	if (!in->alive)
		return false;
	if (in->kernel || !call_server(in, "status", NULL, 0, &lost, &e) || !lost)
		return true;
	for (int i = 0; i < 500 && pid_running(in->pid); i++)
		sleep_ms(10);
	return pid_running(in->pid);
}

/* ---- finding instances ----------------------------------------------------------------------- */

int ploop_list_instances(int (*fn)(void *ctx, const struct ploop_instance *in), void *ctx, struct ploop_error *err)
{
	DIR *d = opendir(PLOOP_RUN_DIR);
	struct dirent *e;
	int r = 0;

	if (!d)
		return errno == ENOENT ? 0 : ploop_fail(err, PLOOP_ERR_SYS, errno, "%s", PLOOP_RUN_DIR);
	while (!r && (e = readdir(d))) {
		struct ploop_instance in;

		if (strlen(e->d_name) != 16 || load_instance(e->d_name, &in))
			continue;
		r = fn(ctx, &in);
	}
	closedir(d);
	return r;
}

struct describe_ctx {
	const char *descriptor;
	char *buf;
	size_t len, used;
	bool views_only;
};

static int describe_one(void *ctx, const struct ploop_instance *in)
{
	struct describe_ctx *d = ctx;

	if (!in->alive || strcmp(in->descriptor, d->descriptor) || d->used >= d->len || (d->views_only && !in->guid[0]))
		return 0;
	if (in->guid[0])
		d->used += (size_t)snprintf(d->buf + d->used, d->len - d->used,
					    "%ssnapshot %s is mounted %s (%s; ploop snapshot-umount -u %s)",
					    d->used ? "; " : "", in->guid, in->ro ? "read-only" : "read-write", in->device,
					    in->guid);
	else
		d->used += (size_t)snprintf(d->buf + d->used, d->len - d->used, "%sthe set is mounted (%s)",
					    d->used ? "; " : "", in->device);
	return 0;
}

static bool describe(const char *dd_path, bool views_only, char *buf, size_t len)
{
	char *rp = realpath(dd_path, NULL);
	struct describe_ctx d = { .descriptor = rp, .buf = buf, .len = len, .views_only = views_only };
	struct ploop_error err = { 0 };

	if (len)
		buf[0] = '\0';
	if (rp)
		ploop_list_instances(describe_one, &d, &err);
	free(rp);
	return d.used > 0;
}

bool ploop_describe_servers(const char *dd_path, char *buf, size_t len)
{
	return describe(dd_path, false, buf, len);
}

bool ploop_describe_views(const char *dd_path, char *buf, size_t len)
{
	return describe(dd_path, true, buf, len);
}

/* The base delta of the chain of @guid ("": the top) of the set at @rp: its path, device and
 * inode; false if its descriptor does not tell. */
static bool named_base(const char *rp, const char *guid, char *path, size_t len, struct stat *st)
{
	struct ploop_descriptor *dd = NULL;
	struct ploop_error none = { 0 };
	int idx[PLOOP_MAX_CHAIN], n;
	bool named = false;

	if (!ploop_descriptor_read(rp, &dd, &none) &&
	    !ploop_descriptor_chain(dd, guid[0] ? guid : NULL, idx, &n, &none) && n > 0) {
		named = !stat(dd->images[idx[0]].path, st);
		if (named)
			snprintf(path, len, "%s", dd->images[idx[0]].path);
	}
	ploop_descriptor_free(dd);
	return named;
}

static bool serves(const struct ploop_instance *in, const struct stat *base)
{
	return in->base_ino == base->st_ino && in->base_dev == base->st_dev;
}

/* Whether @in serves the chain of the base at @path: the path leads to its file, or is the name
 * its server has it open by (something mounted over the file hides it, and keeps it from being
 * removed, not from being served). */
static bool serves_named(const struct ploop_instance *in, const char *path, const struct stat *base)
{
	char open_path[PATH_MAX];

	return serves(in, base) || (server_base_path(in, open_path, sizeof(open_path)) && !strcmp(open_path, path));
}

/*
 * Whether @in serves the set at @rp, whose chain's base is @base_path (@base; !@named: the
 * descriptor does not tell). A live server: its base is that very file, and it is named so now -
 * the set at @rp, not a set elsewhere whose base is a hard link of it (the server's descriptor is
 * where its base is named now, by current_descriptor). A dead server's leftovers belong to the
 * path it served, whatever became of its files. A kernel-mapped set: its base.
 */
static bool is_served(const struct ploop_instance *in, const char *rp, bool named, const char *base_path,
		      const struct stat *base)
{
	if (!in->alive || !named || !in->base_ino)
		return !strcmp(in->descriptor, rp);
	if (in->kernel)
		return serves(in, base);
	return serves_named(in, base_path, base) && !strcmp(in->descriptor, rp);
}

struct find_base {
	const char *rp, *guid, *base_path;
	const struct stat *base;
	bool named, found;
	struct ploop_instance *out;
};

static int match_base(void *ctx, const struct ploop_instance *in)
{
	struct find_base *f = ctx;

	if (strcmp(in->guid, f->guid) || !is_served(in, f->rp, f->named, f->base_path, f->base))
		return 0;
	*f->out = *in;
	f->found = true;
	return 1;
}

/*
 * The instance of the set at @rp (see is_served): by the chain's base delta, not the top (online
 * snapshots, merges and deletes change the top, and a server killed in the middle of one leaves its
 * state naming the old one). Its run directory is named by the path it was mounted by, which
 * another set may have now (the first one renamed, a new one made in its place), so every instance
 * is looked at when that one is not it. @out->descriptor is @rp.
 */
static bool find_served(const char *rp, const char *guid, struct ploop_instance *out)
{
	char base_path[PATH_MAX];
	struct stat base;
	bool named = named_base(rp, guid, base_path, sizeof(base_path), &base);
	struct find_base f = { .rp = rp, .guid = guid, .base_path = base_path, .base = &base, .named = named,
			       .out = out };
	struct ploop_error none = { 0 };
	char id[17];

	ploop_instance_id(rp, guid, id);
	if (!load_instance(id, out) && is_served(out, rp, named, base_path, &base))
		f.found = true;
	else
		ploop_list_instances(match_base, &f, &none);
	if (f.found)
		snprintf(out->descriptor, sizeof(out->descriptor), "%s", rp);
	return f.found;
}

int ploop_find_instance(const char *descriptor, const char *guid, struct ploop_instance *out, struct ploop_error *err)
{
	char *rp = realpath(descriptor, NULL);
	char g[PLOOP_GUID_BUF] = "";
	bool found;

	if (!rp)
		return ploop_fail(err, errno == ENOENT ? PLOOP_ERR_DESCRIPTOR : PLOOP_ERR_OPEN, errno, "%s", descriptor);
	if (guid && ploop_parse_guid(guid, g)) {
		free(rp);
		return ploop_fail(err, PLOOP_ERR_PARAM, 0, "'%s' is not a GUID", guid);
	}
	found = find_served(rp, g, out);
	free(rp);
	if (!found) {
		if (g[0])
			return ploop_fail(err, PLOOP_ERR_DEV_NOT_MOUNTED, 0, "snapshot %s of %s is not mounted", g,
					  descriptor);
		return ploop_fail(err, PLOOP_ERR_DEV_NOT_MOUNTED, 0, "%s is not mounted", descriptor);
	}
	return 0;
}

struct find_by {
	const char *what;
	dev_t rdev;
	struct ploop_instance *out;
	bool found;
};

static int match_instance(void *ctx, const struct ploop_instance *in)
{
	struct find_by *f = ctx;
	struct stat st;

	if (!strcmp(f->what, in->device) || !strcmp(f->what, in->part) || (in->mount[0] && !strcmp(f->what, in->mount)) ||
	    (f->rdev && ((!stat(in->device, &st) && st.st_rdev == f->rdev) ||
			 (in->part[0] && !stat(in->part, &st) && st.st_rdev == f->rdev)))) {
		*f->out = *in;
		f->found = true;
		return 1;
	}
	return 0;
}

int ploop_find_instance_by(const char *what, struct ploop_instance *out, struct ploop_error *err)
{
	char *rp = realpath(what, NULL);
	struct find_by f = { .what = rp ? rp : what, .out = out };
	struct stat st;

	/* A device, or a directory with one of them mounted on it, however it was mounted. */
	if (!stat(f.what, &st) && S_ISBLK(st.st_mode))
		f.rdev = st.st_rdev;
	else if (rp && !stat(rp, &st) && S_ISDIR(st.st_mode))
		f.rdev = device_mounted_at(rp);
	ploop_list_instances(match_instance, &f, err);
	free(rp);
	if (!f.found)
		return ploop_fail(err, PLOOP_ERR_DEV_NOT_MOUNTED, 0, "%s is not a mounted ploop device or mount point",
				  what);
	return 0;
}

/* ---- mount ---------------------------------------------------------------------------------------- */

static int server_path(char *out, size_t len)
{
	const char *env = getenv("PLOOPD");
	char self[PATH_MAX];
	ssize_t n;

	if (env && *env) {
		snprintf(out, len, "%s", env);
		return 0;
	}
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n > 0) {
		char *slash;

		self[n] = '\0';
		slash = strrchr(self, '/');
		if (slash) {
			*slash = '\0';
			if (snprintf(out, len, "%.*s/ploopd", (int)(len - 8), self) < (int)len && !access(out, X_OK))
				return 0;
		}
	}
	snprintf(out, len, "ploopd");
	return 0;
}

/* Unmounts every mount of @in's filesystem (mounted by hand on more directories too), each only
 * while it is what shows at its directory (see ploop_umount_own). */
static int umount_everywhere(const struct ploop_instance *in, struct ploop_error *err)
{
	char dir[PATH_MAX];

	for (int i = 0; i < 64 && ploop_mounted_at(in, dir, sizeof(dir)); i++) {
		int r = ploop_umount_own(dir, in->part, NULL);

		if (r == -EXDEV)
			return ploop_fail(err, PLOOP_ERR_UMOUNT_BUSY, 0, PLOOP_COVERED_FMT, in->part, dir);
		if (r)
			return ploop_fail(err, PLOOP_ERR_UMOUNT_BUSY, -r, "%s: the filesystem on %s cannot be unmounted",
					  dir, in->part);
	}
	return 0;
}

/* Removes what a dead server left: filesystem mount, loop device, FUSE mount, run directory. */
static int cleanup_dead(const struct ploop_instance *in, struct ploop_error *err)
{
	char path[PATH_MAX];
	int r;

	/* Its mount point only if what is seen there is ours: another filesystem may be mounted over
	 * it (another set's), or in its place (ours unmounted by hand); umount_everywhere finds ours
	 * wherever it is. */
	if (in->mount[0] && (r = ploop_umount_own(in->mount, in->part, in->device)) && r != -EXDEV)
		return ploop_fail(err, PLOOP_ERR_UMOUNT_BUSY, -r,
				  "%s: the server of %s died, and its filesystem cannot be unmounted", in->mount,
				  in->descriptor);
	/* The device goes only once nothing is mounted on it. */
	if (umount_everywhere(in, err))
		return err->status;
	for (int i = 0; i < 2; i++) {
		const char *dev = i ? in->device : in->part;
		int fd = dev[0] ? open(dev, O_RDONLY | O_CLOEXEC) : -1;

		if (fd >= 0) {
			ioctl(fd, LOOP_CLR_FD, 0);
			close(fd);
		}
	}
	snprintf(path, sizeof(path), "%s/%s/disk", PLOOP_RUN_DIR, in->id);
	umount2(path, MNT_DETACH);
	unlink(path);
	snprintf(path, sizeof(path), "%s/%s/control", PLOOP_RUN_DIR, in->id);
	unlink(path);
	snprintf(path, sizeof(path), "%s/%s/state", PLOOP_RUN_DIR, in->id);
	unlink(path);
	snprintf(path, sizeof(path), "%s/%s/log", PLOOP_RUN_DIR, in->id);
	unlink(path);
	snprintf(path, sizeof(path), "%s/%s", PLOOP_RUN_DIR, in->id);
	rmdir(path);
	return 0;
}

/* ---- before a chain is served ------------------------------------------------------------------- */

/* Deltas of the chain left marked in use (a crash, a killed server, a host that went down under a
 * kernel mapping) are checked and repaired, holes compacted if the set is ours alone (@exclusive: a
 * snapshot view's server reads its deltas with their BAT in memory); a raw base has no marker. */
static int check_dirty_deltas(const struct ploop_descriptor *dd, const int *idx, int n, bool exclusive,
			      struct ploop_error *err)
{
	for (int i = 0; i < n; i++)
		if (!(dd->raw && i == 0) && ploop_check_if_dirty(dd->images[idx[i]].path, exclusive, err))
			return err->status;
	return 0;
}

int ploop_mount_prepare(const char *dd_path, const char *guid, bool ro, int *lock_fd, struct ploop_descriptor **dd,
			int *idx, int *n, struct ploop_error *err)
{
	bool exclusive = false;

	*lock_fd = -1;
	*dd = NULL;
	if (ro ? ploop_lock_descriptor(dd_path, false, lock_fd, err)
	       : ploop_lock_descriptor_server(dd_path, lock_fd, &exclusive, err))
		return err->status;
	if (exclusive && ploop_recover_locked(dd_path, NULL, err))
		goto fail;
	if (ploop_descriptor_read(dd_path, dd, err) || ploop_descriptor_chain(*dd, guid, idx, n, err))
		goto fail;
	/* A temporary snapshot with one child is an interrupted merge (with more, it waits for them). */
	for (int i = 0; i < (*dd)->n_snapshots && !ro && !exclusive; i++)
		if ((*dd)->snapshots[i].temporary && ploop_descriptor_children(*dd, (*dd)->snapshots[i].guid, NULL) == 1) {
			char holders[512];

			ploop_describe_servers(dd_path, holders, sizeof(holders));
			ploop_fail(err, PLOOP_ERR_LOCK, 0,
				   "%s: an interrupted merge is to be completed first, which needs the set to itself: %s",
				   dd_path, holders[0] ? holders : "another process holds it");
			goto fail;
		}
	if (guid && !ro && ploop_descriptor_children(*dd, guid, NULL) > 0) {
		ploop_fail(err, PLOOP_ERR_PARAM, 0, "%s: snapshot %s has children; it can be mounted read-only only",
			   dd_path, guid);
		goto fail;
	}
	if (!ro && check_dirty_deltas(*dd, idx, *n, exclusive, err))
		goto fail;
	return 0;
fail:
	ploop_descriptor_free(*dd);
	*dd = NULL;
	ploop_unlock_descriptor(*lock_fd);
	*lock_fd = -1;
	return err->status;
}

/* After a dead server is cleaned up: the deltas of the chain it served read-write are checked and
 * repaired now, as the next mount would (ploop_mount_prepare), so that the set is left as a clean
 * umount leaves it and offline commands work on it at once. A mount that finds a dead server does
 * the same before it starts a new one, which would otherwise meet the dying server's locks. */
static int repair_after_dead(const struct ploop_instance *in, struct ploop_error *err)
{
	struct ploop_descriptor *dd = NULL;
	struct ploop_error e = { 0 };
	int lock_fd = -1, idx[PLOOP_MAX_CHAIN], n;

	if (in->ro || in->guid[0])
		return 0;
	/* A server killed with requests in flight lets go of its files (and the locks on them) only
	 * once the kernel has torn down its io_uring, a moment after its last thread is gone. */
	for (int i = 0; ploop_mount_prepare(in->descriptor, NULL, false, &lock_fd, &dd, idx, &n, &e); i++) {
		if (e.status != PLOOP_ERR_LOCK || i == 250)
			return ploop_fail(err, e.status, 0,
					  "cleaned up after the dead server of %s, but its deltas are not repaired: %s",
					  in->descriptor, e.msg);
		e = (struct ploop_error){ 0 };
		sleep_ms(20);
	}
	ploop_descriptor_free(dd);
	ploop_unlock_descriptor(lock_fd);
	return 0;
}

static int umount_dead(const struct ploop_instance *in, struct ploop_error *err)
{
	return cleanup_dead(in, err) || repair_after_dead(in, err) ? err->status : 0;
}

/* ---- the kernel data path: the dm-ploop target (kernel/dm-ploop) ------------------------------------
 * `mount --kernel` maps the chain with `dmsetup create ploop-ID --table "0 SECTORS ploop LOG base ... top"`
 * after marking the top in use; umount removes the mapping and clears the marker. The state file has
 * kernel=1 and no server pid. */
#define KMOD_SYSFS "/sys/module/dm_ploop"

/* Runs dmsetup with @argv (NULL-terminated, argv[0] = "dmsetup"); 0 if it exited with 0. */
static int run_dmsetup(const char *const *argv)
{
	int status;
	pid_t pid = fork();

	if (pid < 0)
		return -errno;
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR);

		dup2(null, 0);
		dup2(null, 1);
		execvp("dmsetup", (char *const *)argv);
		_exit(127);
	}
	if (waitpid(pid, &status, 0) < 0)
		return -errno;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -EIO;
}

/* Sets or clears the dirty marker of a v2 delta (the target requires it on a writable top). */
static int set_disk_in_use(const char *path, bool in_use, struct ploop_error *err)
{
	struct ploop_pvd_header hdr;
	int fd = open(path, O_RDWR | O_CLOEXEC);
	uint32_t v = htole32(in_use ? PLOOP_DISK_IN_USE : 0);

	if (fd < 0)
		return ploop_fail(err, PLOOP_ERR_OPEN, errno, "%s", path);
	if (pread(fd, &hdr, sizeof(hdr), 0) != (ssize_t)sizeof(hdr) || memcmp(hdr.m_Sig, PLOOP_SIG_V2, PLOOP_SIG_LEN)) {
		close(fd);
		return ploop_fail(err, PLOOP_ERR_FORMAT, 0, "%s: not a ploop v2 delta (the kernel target takes v2 only)",
				  path);
	}
	if (pwrite(fd, &v, sizeof(v), offsetof(struct ploop_pvd_header, m_DiskInUse)) != (ssize_t)sizeof(v) ||
	    fsync(fd)) {
		int e = errno;

		close(fd);
		return ploop_fail(err, PLOOP_ERR_WRITE, e, "%s: cannot update the dirty marker", path);
	}
	close(fd);
	return 0;
}

static int write_kernel_state(const char *id, const char *descriptor, const char *guid, bool ro, const char *device,
			      const char *part, const char *mnt, const char *fstype, const char *options,
			      const char *top, struct ploop_error *err)
{
	char dir[PATH_MAX], path[PATH_MAX + 16], tmp[PATH_MAX + 16], base[PATH_MAX];
	struct stat st;
	FILE *f;

	mkdir(PLOOP_RUN_DIR, 0755);
	snprintf(dir, sizeof(dir), "%s/%s", PLOOP_RUN_DIR, id);
	if (mkdir(dir, 0700) && errno != EEXIST)
		return ploop_fail(err, PLOOP_ERR_MKDIR, errno, "%s", dir);
	snprintf(path, sizeof(path), "%s/state", dir);
	snprintf(tmp, sizeof(tmp), "%s/state.tmp", dir);
	f = fopen(tmp, "we");
	if (!f)
		return ploop_fail(err, PLOOP_ERR_CREAT, errno, "%s", tmp);
	fprintf(f, "pid=0\nkernel=1\nro=%d\ndescriptor=%s\nguid=%s\ndevice=%s\npart=%s\nmount=%s\nfstype=%s\n"
		"options=%s\nfile=%s\n", ro, descriptor, guid, device, part, mnt, fstype, options, top);
	if (named_base(descriptor, guid, base, sizeof(base), &st))	/* the set's identity (find_served) */
		fprintf(f, "base=%llu:%llu\n", (unsigned long long)st.st_dev, (unsigned long long)st.st_ino);
	if (fclose(f) || rename(tmp, path))
		return ploop_fail(err, PLOOP_ERR_WRITE, errno, "%s", path);
	return 0;
}

static void remove_kernel_state(const char *id)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/%s/state", PLOOP_RUN_DIR, id);
	unlink(path);
	snprintf(path, sizeof(path), "%s/%s", PLOOP_RUN_DIR, id);
	rmdir(path);
}

static int chain_table(const struct ploop_descriptor *dd, const int *idx, int n, char **table, char *top,
		       size_t top_len, bool *raw_only, struct ploop_error *err);
static int kernel_table(const char *descriptor, char **table, char *top, size_t top_len, bool *raw_only,
			struct ploop_error *err);

/*
 * The filesystem's device: with a GPT (what `ploop init -t ext4` makes) a linear map NAME-p1 over
 * partition 1, since device-mapper devices get no partitions of their own; else the device itself.
 */
static int kernel_partition(const char *name, const char *device, char *part, size_t len, struct ploop_error *err)
{
	char sec[8], table[128], pname[48];
	uint64_t first, last;
	int fd = open(device, O_RDONLY | O_CLOEXEC);
	bool gpt;

	snprintf(part, len, "%s", device);
	if (fd < 0)
		return ploop_fail(err, PLOOP_ERR_OPEN, errno, "%s", device);
	gpt = pread(fd, sec, sizeof(sec), 512) == (ssize_t)sizeof(sec) && !memcmp(sec, "EFI PART", 8);
	if (gpt && ploop_gpt_partition(fd, &first, &last, err)) {
		close(fd);
		return err->status;
	}
	close(fd);
	if (!gpt)
		return 0;
	snprintf(pname, sizeof(pname), "%s-p1", name);
	snprintf(table, sizeof(table), "0 %llu linear %s %llu", (unsigned long long)(last - first + 1), device,
		 (unsigned long long)first);
	{
		const char *argv[] = { "dmsetup", "create", pname, "--table", table, NULL };

		if (run_dmsetup(argv))
			return ploop_fail(err, PLOOP_ERR_DEVICE, 0, "%s: cannot map its partition (dmsetup create %s)",
					  device, pname);
	}
	snprintf(part, len, "/dev/mapper/%s", pname);
	return 0;
}

/* Removes the partition map (if any) and the device. */
static int kernel_remove(const char *name, const char *part)
{
	const char *argv_p[] = { "dmsetup", "remove", part + 12, NULL };
	const char *argv[] = { "dmsetup", "remove", name, NULL };

	if (strncmp(part, "/dev/mapper/", 12) == 0 && strcmp(part + 12, name) && run_dmsetup(argv_p))
		return -EBUSY;
	return run_dmsetup(argv);
}

/* Maps @table (freed here), the chain whose top is @top, and mounts and records it. */
static int kernel_map(const struct ploop_mount_params *p, const char *rp, const char *id, const char *guid, bool ro,
		      char *table, const char *top, bool raw_only, struct ploop_instance *out, struct ploop_error *err)
{
	char name[32], device[64], part[80];
	const char *fstype = p->fstype ? p->fstype : "ext4";
	bool mounted = false;
	int r;

	snprintf(name, sizeof(name), "ploop-%s", id);
	snprintf(device, sizeof(device), "/dev/mapper/%s", name);
	snprintf(part, sizeof(part), "%s", device);
	r = 0;
	if (!ro && !raw_only)
		r = set_disk_in_use(top, true, err);
	if (!r) {
		const char *argv[] = { "dmsetup", "create", name, "--table", table, ro ? "--readonly" : NULL, NULL };

		if (run_dmsetup(argv)) {
			struct ploop_error e2 = { 0 };

			if (!ro && !raw_only)
				set_disk_in_use(top, false, &e2);
			free(table);
			return ploop_fail(err, PLOOP_ERR_DEVICE, 0,
					  "%s: the dm-ploop target refused the chain (dmsetup create failed; see dmesg)",
					  p->descriptor);
		}
	}
	free(table);
	if (!r)
		r = kernel_partition(name, device, part, sizeof(part), err);
	if (!r && p->mount_dir) {
		if (mount(part, p->mount_dir, fstype, ro ? MS_RDONLY : 0, p->options ? p->options : ""))
			r = ploop_fail(err, PLOOP_ERR_MOUNT, errno, "%s on %s (%s)", part, p->mount_dir, fstype);
		else
			mounted = true;
	}
	if (!r)
		r = write_kernel_state(id, rp, guid, ro, device, part, p->mount_dir ? p->mount_dir : "", fstype,
				       p->options ? p->options : "", top, err);
	if (r) {
		struct ploop_error e2 = { 0 };

		/* Only what this mount mounted, and only while it is what shows there: a mount that
		 * failed (or never got that far) left whatever is on the directory (another set's
		 * filesystem) alone. */
		if (mounted)
			ploop_umount_own(p->mount_dir, part, NULL);
		kernel_remove(name, part);
		if (!ro && !raw_only)
			set_disk_in_use(top, false, &e2);
		return r;
	}
	if (load_instance(id, out))
		return ploop_fail(err, PLOOP_ERR_DEVICE, 0, "%s: mapped, but its state is unreadable", p->descriptor);
	return 0;
}

/* The kernel target takes no lock of ours: the descriptor lock is held while the chain is prepared
 * (as ploopd's start-up does it), mapped and recorded, so no offline writer and no other mount comes
 * in between; the state file then marks the set mounted. */
static int kernel_mount(const struct ploop_mount_params *p, const char *rp, const char *id, const char *guid,
			struct ploop_instance *out, struct ploop_error *err)
{
	struct ploop_descriptor *dd = NULL;
	struct ploop_instance old;
	int idx[PLOOP_MAX_CHAIN], n, lock;
	bool ro = p->ro || guid[0], raw_only = false;
	char top[4096], *table = NULL;

	if (access(KMOD_SYSFS, F_OK))
		return ploop_fail(err, PLOOP_ERR_NO_KMOD, 0,
				  "the dm-ploop kernel target is not loaded (insmod dm-ploop.ko, or mount without --kernel)");
	if (ploop_mount_prepare(rp, guid[0] ? guid : NULL, ro, &lock, &dd, idx, &n, err))
		return err->status;
	/* Mounted by another mount that had the lock before us. */
	if (!load_instance(id, &old) && old.alive)
		ploop_fail(err, PLOOP_ERR_MOUNT, 0, "%s is already mounted (device %s)", p->descriptor, old.device);
	else if (!chain_table(dd, idx, n, &table, top, sizeof(top), &raw_only, err))
		kernel_map(p, rp, id, guid, ro, table, top, raw_only, out, err);
	ploop_descriptor_free(dd);
	ploop_unlock_descriptor(lock);
	return err->status;
}

/* The top delta of the live table (a snapshot reload may have changed it since mount). */
static void kernel_live_top(const char *name, char *top, size_t len)
{
	char cmd[128], line[16384];
	FILE *f;

	snprintf(cmd, sizeof(cmd), "dmsetup table %s 2>/dev/null", name);
	f = popen(cmd, "re");
	if (!f)
		return;
	if (fgets(line, sizeof(line), f)) {
		char *last = strrchr(line, ' ');

		line[strcspn(line, "\n")] = '\0';
		if (last && last[1] == '/')
			snprintf(top, len, "%s", last + 1);
	}
	pclose(f);
}

/* The device-mapper name of a kernel-mapped set (its device is /dev/mapper/NAME). */
static const char *dm_name(const struct ploop_instance *in)
{
	const char *slash = strrchr(in->device, '/');

	return slash ? slash + 1 : in->device;
}

/*
 * A ploop command killed while the device was suspended: kernel_call suspends the device for the
 * whole of an operation and holds an flock of the set's run directory meanwhile. A device found
 * suspended while nobody holds that lock was left so by a command that died; the next command
 * finishes its work: interrupted operations completed, the table reloaded with the chain the
 * descriptor names (the operation may have finished offline and died before the reload), the top
 * marked in use, and the device resumed. If that fails, the device stays suspended (resuming the
 * old chain over a descriptor that moved on would write into a snapshot) and the error says so.
 */
static int kernel_op_lock(const struct ploop_instance *in, struct ploop_error *err)
{
	char dir[PATH_MAX];
	int fd;

	snprintf(dir, sizeof(dir), "%s/%s", PLOOP_RUN_DIR, in->id);
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		ploop_fail(err, PLOOP_ERR_OPEN, errno, "%s", dir);
		return -1;
	}
	if (flock(fd, LOCK_EX | LOCK_NB)) {
		close(fd);
		ploop_fail(err, PLOOP_ERR_LOCK, 0, "%s: another ploop command is working on it", in->device);
		return -1;
	}
	return fd;
}

static bool dm_suspended(const char *dev)
{
	char path[96], c = '0';
	struct stat st;
	int fd;

	if (!dev[0] || stat(dev, &st) || !S_ISBLK(st.st_mode))
		return false;
	snprintf(path, sizeof(path), "/sys/dev/block/%u:%u/dm/suspended", major(st.st_rdev), minor(st.st_rdev));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	if (read(fd, &c, 1) != 1)
		c = '0';
	close(fd);
	return c == '1';
}

static int stays_suspended(const struct ploop_instance *in, struct ploop_error *err)
{
	char msg[sizeof(err->msg)];
	int status = err->status;

	snprintf(msg, sizeof(msg), "%s", err->msg);
	*err = (struct ploop_error){ 0 };
	return ploop_fail(err, status, 0, "%s stays suspended: %s", in->device, msg);
}

/*
 * Loads the chain DiskDescriptor.xml names into the (suspended) device: its top marked in use, the
 * table reloaded, the new top recorded in the state file. @top gets that top ("" if it was not read).
 */
static int kernel_reload(const struct ploop_instance *in, char *top, size_t top_len, struct ploop_error *err)
{
	char *table = NULL;
	bool raw_only = false;

	top[0] = '\0';
	if (!kernel_table(in->descriptor, &table, top, top_len, &raw_only, err) &&
	    (raw_only || !set_disk_in_use(top, true, err))) {
		const char *reload[] = { "dmsetup", "reload", dm_name(in), "--table", table, NULL };

		if (run_dmsetup(reload))
			ploop_fail(err, PLOOP_ERR_DEVICE, 0, "%s: the target refused the chain (see dmesg)", in->device);
		else
			write_kernel_state(in->id, in->descriptor, "", false, in->device, in->part, in->mount, in->fstype,
					   in->options, top, err);
	}
	free(table);
	return err->status;
}

/* The work of a command that died with the read-write device suspended: its interrupted operation
 * completed, and the chain the descriptor then names loaded. */
static int finish_interrupted(const struct ploop_instance *in, struct ploop_error *err)
{
	char live[4096], top[4096] = "";
	int lock;

	snprintf(live, sizeof(live), "%s", in->file);
	kernel_live_top(dm_name(in), live, sizeof(live));
	if (ploop_lock_descriptor(in->descriptor, true, &lock, err))
		return stays_suspended(in, err);
	kernel_offline_id = in->id;
	if (!ploop_recover_locked(in->descriptor, NULL, err))
		kernel_reload(in, top, sizeof(top), err);
	kernel_offline_id = NULL;
	ploop_unlock_descriptor(lock);
	if (err->status)
		return stays_suspended(in, err);
	/* The old top, a lower delta now, is written no more. */
	if (strcmp(top, live) && !access(live, F_OK))
		set_disk_in_use(live, false, &(struct ploop_error){ 0 });
	return 0;
}

/* Called with the run directory's flock held (kernel_op_lock). A read-only mapping is never
 * suspended by us: it is just resumed. */
static int kernel_unstick(const struct ploop_instance *in, struct ploop_error *err)
{
	bool has_part = !strncmp(in->part, "/dev/mapper/", 12) && strcmp(in->part, in->device);
	bool dev = dm_suspended(in->device), part = has_part && dm_suspended(in->part);
	const char *resume[] = { "dmsetup", "resume", dm_name(in), NULL };
	const char *resume_part[] = { "dmsetup", "resume", in->part + 12, NULL };

	if (!dev && !part)
		return 0;
	PNOTICE("%s was left suspended by a ploop command that did not finish: finishing its work", in->device);
	if (dev && !in->ro && !in->guid[0] && finish_interrupted(in, err))
		return err->status;
	if (dev && run_dmsetup(resume))
		return ploop_fail(err, PLOOP_ERR_DEVICE, 0, "%s: dmsetup resume failed", in->device);
	if (part && run_dmsetup(resume_part))
		return ploop_fail(err, PLOOP_ERR_DEVICE, 0, "%s: dmsetup resume failed", in->part);
	return 0;
}

static int kernel_umount_locked(const struct ploop_instance *in, struct ploop_error *err)
{
	const char *name = dm_name(in);
	char top[4096];

	snprintf(top, sizeof(top), "%s", in->file);
	if (in->alive) {
		if (umount_everywhere(in, err))
			return err->status;
		kernel_live_top(name, top, sizeof(top));
		if (kernel_remove(name, in->part[0] ? in->part : in->device))
			return ploop_fail(err, PLOOP_ERR_UMOUNT, 0, "%s: dmsetup remove failed (device busy?)",
					  in->device);
	}
	if (!in->ro && set_disk_in_use(top, false, err) && err->status != PLOOP_ERR_FORMAT)
		return err->status;
	remove_kernel_state(in->id);
	return 0;
}

static int kernel_umount(const struct ploop_instance *in, struct ploop_error *err)
{
	int lock = -1;

	if (in->alive && ((lock = kernel_op_lock(in, err)) < 0 || kernel_unstick(in, err))) {
		if (lock >= 0)
			close(lock);
		return err->status;
	}
	kernel_umount_locked(in, err);
	if (lock >= 0)
		close(lock);
	return err->status;
}

/* The chain of the descriptor as a table line, and its top (@top and @raw_only may be NULL). */
static int chain_table(const struct ploop_descriptor *dd, const int *idx, int n, char **table, char *top,
		       size_t top_len, bool *raw_only, struct ploop_error *err)
{
	size_t len = 64, off;
	int log = 0;

	while ((1u << log) < dd->blocksize)
		log++;
	for (int i = 0; i < n; i++) {
		const char *path = dd->images[idx[i]].path;

		if (strpbrk(path, " \t\n"))
			return ploop_fail(err, PLOOP_ERR_PARAM, 0, "%s: a device-mapper table cannot name a file with blanks",
					  path);
		len += strlen(path) + 8;
	}
	*table = malloc(len);
	if (!*table)
		return ploop_fail(err, PLOOP_ERR_MALLOC, ENOMEM, "table");
	off = (size_t)snprintf(*table, len, "0 %llu ploop %d", (unsigned long long)dd->disk_size, log);
	for (int i = 0; i < n; i++)
		off += (size_t)snprintf(*table + off, len - off, " %s%s", i == 0 && dd->raw ? "raw@" : "",
					dd->images[idx[i]].path);
	if (top)
		snprintf(top, top_len, "%s", dd->images[idx[n - 1]].path);
	if (raw_only)
		*raw_only = n == 1 && dd->raw;
	return 0;
}

/* The table of the top's chain as the descriptor now has it (after an operation on a mapped set). */
static int kernel_table(const char *descriptor, char **table, char *top, size_t top_len, bool *raw_only,
			struct ploop_error *err)
{
	struct ploop_descriptor *dd = NULL;
	int idx[PLOOP_MAX_CHAIN], n;

	if (!ploop_descriptor_read(descriptor, &dd, err) && !ploop_descriptor_chain(dd, NULL, idx, &n, err))
		chain_table(dd, idx, n, table, top, top_len, raw_only, err);
	ploop_descriptor_free(dd);
	return err->status;
}

/* Whether the chain DiskDescriptor.xml names is no longer the one of table @before (or cannot be
 * told: then it may have moved). */
static bool chain_moved(const char *descriptor, const char *before)
{
	struct ploop_error e = { 0 };
	char *now = NULL;
	bool moved = kernel_table(descriptor, &now, NULL, 0, NULL, &e) || strcmp(now, before);

	free(now);
	return moved;
}

/*
 * What the server does online, done for a kernel-mapped set: suspend the device (the filesystem on
 * it is frozen and the target syncs the top), run the same operation offline on the chain, mark the
 * new top in use, reload the table with the new chain and resume. On failure the old table resumes
 * -- unless the operation changed the chain: then the device stays suspended (see kernel_unstick).
 */
static int kernel_call_locked(const struct ploop_instance *in, const char *cmd, struct ploop_error *err)
{
	const char *name = dm_name(in);
	char op[32] = "", arg[PLOOP_GUID_BUF + 8] = "", top[4096], new_top[4096] = "";
	const char *suspend[] = { "dmsetup", "suspend", name, NULL };
	const char *resume[] = { "dmsetup", "resume", name, NULL };
	/* A filesystem on the partition map is frozen by suspending that map first. */
	bool has_part = !strncmp(in->part, "/dev/mapper/", 12) && strcmp(in->part, in->device);
	const char *suspend_part[] = { "dmsetup", "suspend", in->part + 12, NULL };
	const char *resume_part[] = { "dmsetup", "resume", in->part + 12, NULL };
	struct ploop_error e2 = { 0 };
	char *before = NULL;
	int r;

	sscanf(cmd, "%31s %46s", op, arg);
	if (in->ro || in->guid[0])
		return ploop_fail(err, PLOOP_ERR_PARAM, 0, "%s: a read-only kernel mapping cannot %s", in->device, op);
	if (strcmp(op, "snapshot") && strcmp(op, "merge") && strcmp(op, "merge-all") && strcmp(op, "delete"))
		return ploop_fail(err, PLOOP_ERR_PARAM, 0, "%s: '%s' is not supported on a kernel mapping (mount without --kernel)",
				  in->device, op);
	snprintf(top, sizeof(top), "%s", in->file);
	kernel_live_top(name, top, sizeof(top));
	if (has_part && run_dmsetup(suspend_part))
		return ploop_fail(err, PLOOP_ERR_DEVICE, 0, "%s: dmsetup suspend failed", in->part);
	if (run_dmsetup(suspend)) {
		if (has_part)
			run_dmsetup(resume_part);
		return ploop_fail(err, PLOOP_ERR_DEVICE, 0, "%s: dmsetup suspend failed", in->device);
	}
	r = kernel_table(in->descriptor, &before, NULL, 0, NULL, err);
	if (!r)
		r = set_disk_in_use(top, false, err);
	if (!r) {
		kernel_offline_id = in->id;
		if (!strcmp(op, "snapshot"))
			r = ploop_snapshot(in->descriptor, arg, NULL, err);
		else if (!strcmp(op, "delete"))
			r = ploop_snapshot_delete(in->descriptor, arg, NULL, err);
		else
			r = ploop_snapshot_merge(in->descriptor, strcmp(arg, "-") ? arg : NULL, !strcmp(op, "merge-all"),
						 err);
		kernel_offline_id = NULL;
	}
	if (!r)
		r = kernel_reload(in, new_top, sizeof(new_top), err);
	if (r && before && chain_moved(in->descriptor, before)) {
		/* The old table must not go on: its top may be a snapshot now, or merged and unlinked.
		 * The next command on the set (kernel_unstick) retries the reload. */
		free(before);
		return stays_suspended(in, err);
	}
	free(before);
	if (r && strcmp(new_top, top))
		set_disk_in_use(top, true, &e2);	/* the old table goes on: its top is in use again */
	if (run_dmsetup(resume) && !r)
		r = ploop_fail(err, PLOOP_ERR_DEVICE, 0, "%s: dmsetup resume failed", in->device);
	if (has_part && run_dmsetup(resume_part) && !r)
		r = ploop_fail(err, PLOOP_ERR_DEVICE, 0, "%s: dmsetup resume failed", in->part);
	return r;
}

static int kernel_call(const struct ploop_instance *in, const char *cmd, struct ploop_error *err)
{
	int lock = kernel_op_lock(in, err);

	if (lock < 0)
		return err->status;
	if (!kernel_unstick(in, err))
		kernel_call_locked(in, cmd, err);
	close(lock);
	return err->status;
}

int ploop_mount(const struct ploop_mount_params *p, struct ploop_instance *out, struct ploop_error *err)
{
	char server[PATH_MAX], id[17], msg[4096], g[PLOOP_GUID_BUF] = "";
	char *rp = realpath(p->descriptor, NULL);
	const char *argv[20];
	int pipefd[2], argc = 0, status;
	struct ploop_instance old;
	size_t got = 0;
	pid_t pid;

	if (!rp)
		return ploop_fail(err, errno == ENOENT ? PLOOP_ERR_DESCRIPTOR : PLOOP_ERR_OPEN, errno, "%s", p->descriptor);
	if (p->guid && ploop_parse_guid(p->guid, g)) {
		free(rp);
		return ploop_fail(err, PLOOP_ERR_PARAM, 0, "'%s' is not a GUID", p->guid);
	}
	if (find_served(rp, g, &old)) {
		if (still_serving(&old)) {
			free(rp);
			return ploop_fail(err, PLOOP_ERR_MOUNT, 0, "%s is already mounted (device %s)", p->descriptor,
					  old.device);
		}
		PNOTICE("The server of %s died; cleaning up before mounting again", p->descriptor);
		if (umount_dead(&old, err)) {
			free(rp);
			return err->status;
		}
	}
	ploop_instance_id(rp, g, id);
	for (int salt = 1; !load_instance(id, &old); salt++) {
		char *salted = NULL;

		if (!still_serving(&old)) {
			PNOTICE("The server of %s died; cleaning up before mounting again", old.descriptor);
			if (umount_dead(&old, err)) {
				free(rp);
				return err->status;
			}
			break;
		}
		/* Another set's, mounted from this path before it was renamed (and another before
		 * that...): this one is named apart, and found by its base as they are. */
		if (salt > 1000 || asprintf(&salted, "%s\n%d", rp, salt) < 0) {
			free(rp);
			return ploop_fail(err, PLOOP_ERR_MOUNT, 0, "%s: too many sets mounted from this path",
					  p->descriptor);
		}
		ploop_instance_id(salted, g, id);
		free(salted);
	}
	if (p->kernel && g[0] && !p->ro) {
		free(rp);
		return ploop_fail(err, PLOOP_ERR_PARAM, 0, "%s: the kernel target maps a snapshot read-only (-r) only",
				  p->descriptor);
	}
	if (p->kernel) {
		int r = kernel_mount(p, rp, id, g, out, err);

		free(rp);
		return r;
	}
	server_path(server, sizeof(server));
	argv[argc++] = server;
	if (p->ro)
		argv[argc++] = "--ro";
	if (g[0]) {
		argv[argc++] = "--guid";
		argv[argc++] = g;
	}
	if (p->mount_dir) {
		argv[argc++] = "--mount";
		argv[argc++] = p->mount_dir;
	}
	if (p->fstype) {
		argv[argc++] = "--fstype";
		argv[argc++] = p->fstype;
	}
	if (p->options) {
		argv[argc++] = "--options";
		argv[argc++] = p->options;
	}
	argv[argc++] = "--id";
	argv[argc++] = id;
	argv[argc++] = "--ready-fd";
	argv[argc++] = "3";
	argv[argc++] = rp;
	argv[argc] = NULL;
	if (pipe2(pipefd, O_CLOEXEC)) {
		free(rp);
		return ploop_fail(err, PLOOP_ERR_SYS, errno, "pipe");
	}
	pid = fork();
	if (pid < 0) {
		free(rp);
		return ploop_fail(err, PLOOP_ERR_SYS, errno, "fork");
	}
	if (pid == 0) {
		/* Twice, so the server is nobody's child to reap. */
		int null = open("/dev/null", O_RDWR);

		if (fork())
			_exit(0);
		setsid();
		dup2(pipefd[1], 3);
		dup2(null, 0);
		dup2(null, 1);
		dup2(null, 2);
		execvp(server, (char *const *)argv);
		dprintf(3, "err %d cannot run %s: %s\n", PLOOP_ERR_DEVICE, server, strerror(errno));
		_exit(127);
	}
	close(pipefd[1]);
	waitpid(pid, &status, 0);
	for (;;) {
		ssize_t n = read(pipefd[0], msg + got, sizeof(msg) - 1 - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
		if (got == sizeof(msg) - 1)
			break;
	}
	close(pipefd[0]);
	msg[got] = '\0';
	msg[strcspn(msg, "\n")] = '\0';
	free(rp);
	if (!strncmp(msg, "err ", 4)) {
		char *text = NULL;
		long code = strtol(msg + 4, &text, 10);

		return ploop_fail(err, code > 0 && code < 256 ? (int)code : PLOOP_ERR_DEVICE, 0, "%s",
				  text && *text ? text + 1 : "the server failed");
	}
	if (strncmp(msg, "ok", 2))
		return ploop_fail(err, PLOOP_ERR_DEVICE, 0, "the server for %s exited without starting", p->descriptor);
	if (load_instance(id, out))
		return ploop_fail(err, PLOOP_ERR_DEVICE, 0, "the server for %s started but left no state", p->descriptor);
	return 0;
}

int ploop_umount_discard(const struct ploop_instance *in, struct ploop_error *err)
{
	struct ploop_error e = { 0 };
	struct ploop_instance now;

	/* as the server has it now: a partition it attached since is in its state */
	if (!load_instance(in->id, &now))
		in = &now;

	/* (the server waits up to 10 s for a holder of the device to let go) */
	if (!ploop_umount(in, &e))
		return 0;
	*err = e;
	if (in->kernel || !pid_running(in->pid))
		return err->status;
	kill(in->pid, SIGKILL);
	for (int i = 0; i < 500 && pid_running(in->pid); i++)
		sleep_ms(10);
	memset(&e, 0, sizeof(e));
	if (!pid_running(in->pid))
		cleanup_dead(in, &e);
	return err->status;
}

int ploop_umount(const struct ploop_instance *in, struct ploop_error *err)
{
	bool lost;

	if (in->kernel)
		return kernel_umount(in, err);
	if (!in->alive) {
		PNOTICE("The server of %s is not running; cleaning up what it left", in->descriptor);
		return umount_dead(in, err);
	}
	if (call_server(in, "stop", NULL, 0, &lost, err)) {
		/* No answer: a server killed a moment ago still runs while its threads exit, and may
		 * have accepted the connection. Once it is gone, it is cleaned up after as a dead one. */
		if (!lost)
			return err->status;
		for (int i = 0; i < 500 && pid_running(in->pid); i++)
			sleep_ms(10);
		if (pid_running(in->pid))
			return err->status;
		PNOTICE("The server of %s died; cleaning up what it left", in->descriptor);
		*err = (struct ploop_error){ 0 };
		return umount_dead(in, err);
	}
	/* The server exits once its data is durable and its image closed. */
	for (int i = 0; i < 3000 && pid_running(in->pid); i++)
		sleep_ms(10);
	if (pid_running(in->pid))
		return ploop_fail(err, PLOOP_ERR_UMOUNT, 0, "the server of %s (pid %d) did not exit", in->descriptor,
				  in->pid);
	return 0;
}
