/* ploopd: serves one image set (or a read-only snapshot of it) until told to stop. Started by
 * ploop mount, which waits on --ready-fd for "ok" or "err CODE message". */
#include <fcntl.h>
#include <endian.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>

#include "loop.h"
#include "server.h"

static struct srv S = { .ctl_fd = -1, .lock_fd = -1, .run_fd = -1 };
static pthread_t fuse_tid;
static bool fuse_thread_started;
static pthread_mutex_t stop_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t stop_cv = PTHREAD_COND_INITIALIZER;
static bool stop_requested;
static FILE *log_file;

void slog(const char *fmt, ...)
{
	va_list ap;
	time_t t = time(NULL);
	char ts[32];

	if (!log_file)
		return;
	strftime(ts, sizeof(ts), "%Y-%m-%d %H:%M:%S", localtime(&t));
	fprintf(log_file, "%s ", ts);
	va_start(ap, fmt);
	vfprintf(log_file, fmt, ap);
	va_end(ap);
	fputc('\n', log_file);
	fflush(log_file);
}

/* The library's notices (a delta checked after a crash, an interrupted merge completed) go to the
 * log; those of start-up come before the log can be opened (the run directory is ours only once the
 * image is locked) and wait for it. */
static char early_log[4096];

static void library_log(int level, const char *msg, void *ctx)
{
	size_t used = strlen(early_log);

	(void)ctx;
	if (level > 0)
		return;
	if (log_file)
		slog("%s", msg);
	else
		snprintf(early_log + used, sizeof(early_log) - used, "%s\n", msg);
}

static void open_log(const char *path)
{
	char *line = early_log, *nl;

	log_file = fopen(path, "ae");
	for (; (nl = strchr(line, '\n')); line = nl + 1) {
		*nl = '\0';
		slog("%s", line);
	}
	early_log[0] = '\0';
}

void server_request_stop(void)
{
	pthread_mutex_lock(&stop_mu);
	stop_requested = true;
	pthread_cond_signal(&stop_cv);
	pthread_mutex_unlock(&stop_mu);
}

/* 0 if nothing holds @dev, else PLOOP_ERR_UMOUNT_BUSY with what holds it in @msg. */
static int device_held(const char *dev, char *msg, size_t len)
{
	int fd = open(dev, O_RDONLY | O_EXCL | O_CLOEXEC);
	pid_t pid;

	if (fd >= 0)
		close(fd);
	else if (errno == EBUSY) {
		snprintf(msg, len, "%s is in use (mounted elsewhere or claimed)", dev);
		return PLOOP_ERR_UMOUNT_BUSY;
	}
	pid = device_opener(dev);
	if (pid) {
		snprintf(msg, len, "%s is open in process %d", dev, (int)pid);
		return PLOOP_ERR_UMOUNT_BUSY;
	}
	return 0;
}

/*
 * Makes the devices free to detach: the filesystem this server mounted, then any other mount of the
 * partition or the whole device (ploop umount unmounts what is on the device, as upstream), and
 * refuses while anything still holds them open - detaching then would pull the image from under it.
 */
int server_release(struct srv *s, char *msg, size_t len)
{
	static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
	const char *devs[2] = { s->part, s->device };
	char dir[4096];
	int code = 0;

	pthread_mutex_lock(&mu);
	/* Only if what is seen there is ours: another filesystem may be mounted over it (or in its
	 * place, ours unmounted by hand); the loop below finds ours wherever it is. */
	if (s->mount_dir[0] &&
	    (ploop_fs_shows_device(s->mount_dir, devs[0]) || ploop_fs_shows_device(s->mount_dir, devs[1]))) {
		int r = fs_umount(s->mount_dir);

		if (r) {
			code = r == -EBUSY ? PLOOP_ERR_UMOUNT_BUSY : PLOOP_ERR_UMOUNT;
			snprintf(msg, len, "cannot unmount %s: %s", s->mount_dir,
				 r == -EBUSY ? "it is in use" : strerror(-r));
			goto out;
		}
		s->mount_dir[0] = '\0';
		server_write_state(s);
	}
	for (int i = 0; i < 2 && !code; i++) {
		int r = fs_umount_device(devs[i], dir, sizeof(dir));

		if (r == -EXDEV) {
			code = PLOOP_ERR_UMOUNT_BUSY;
			snprintf(msg, len, PLOOP_COVERED_FMT, devs[i], dir);
		} else if (r) {
			code = r == -EBUSY ? PLOOP_ERR_UMOUNT_BUSY : PLOOP_ERR_UMOUNT;
			snprintf(msg, len, "cannot unmount %s from %s: %s", devs[i], dir,
				 r == -EBUSY ? "it is in use" : strerror(-r));
		} else {
			/* A holder may be passing through (a probe of the device the unmount set off,
			 * udev's blkid), and after much fsync'd I/O the kernel may keep the unmounted
			 * filesystem's claim a few seconds (2.4 s seen on a plain loop device): asked
			 * again for up to 10 s before the device is called in use. */
			for (int tries = 0; (code = device_held(devs[i], msg, len)) && tries < 100; tries++)
				usleep(100 * 1000);
		}
	}
out:
	pthread_mutex_unlock(&mu);
	return code;
}

static void *signal_thread(void *arg)
{
	sigset_t *set = arg;
	char msg[4200];
	int sig;

	for (;;) {
		if (sigwait(set, &sig))
			continue;
		slog("signal %d: stopping", sig);
		/* A signal stops what it can: the devices are let go only if nobody uses them. */
		if (!server_release(&S, msg, sizeof(msg)))
			server_request_stop();
		else
			slog("%s; still serving", msg);
	}
	return NULL;
}

static void *fuse_thread(void *arg)
{
	fuse_run(arg);
	return NULL;
}

int server_write_state(struct srv *s)
{
	char path[4200], tmp[4300];
	struct stat base;
	FILE *f;

	snprintf(path, sizeof(path), "%s/state", s->run_dir);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	f = fopen(tmp, "we");
	if (!f)
		return -errno;
	fprintf(f, "pid=%d\nro=%d\ndescriptor=%s\nguid=%s\ndevice=%s\npart=%s\nmount=%s\nfstype=%s\noptions=%s\nfile=%s\n",
		(int)getpid(), s->ro, s->dd_path, s->guid, s->device, s->part, s->mount_dir, s->fstype, s->mount_opts,
		s->disk_path);
	/* The identity of the set: the base delta's file, whatever its path is now (see ploop_find_instance). */
	if (s->chain && !fstat(s->chain->deltas[0]->file->fd, &base))
		fprintf(f, "base=%llu:%llu\n", (unsigned long long)base.st_dev, (unsigned long long)base.st_ino);
	if (fclose(f) || rename(tmp, path))
		return -errno;
	return 0;
}

/*
 * Undoes what start-up set up, in reverse order: at the stop and at a failed start alike. Each step
 * undoes only what was done (a device attached, a thread started, the chain opened...).
 */
static void server_teardown(struct srv *s)
{
	struct ploop_error err = { 0 };
	char path[4200];

	s->stopping = true;
	/* Something may have opened a device since it was released: the image is served until the
	 * kernel lets the device go at its last close. */
	for (int i = 0; i < 2; i++) {
		const char *dev = i ? s->device : s->part;

		if (!dev[0] || (i == 0 && !strcmp(s->part, s->device)))
			continue;
		while (loop_detach(dev) == -EBUSY)
			slog("%s is still in use; waiting for its last close", dev);
	}
	if (s->chain && (dev_flush(s) || dev_trim_tail(s)))
		slog("final flush failed");
	fuse_stop(s);
	if (fuse_thread_started)
		pthread_join(fuse_tid, NULL);
	control_stop(s);
	if (ploop_chain_close(s->chain, &err))
		slog("closing the image: %s", err.msg);
	s->chain = NULL;
	ploop_unlock_descriptor(s->lock_fd);
	s->lock_fd = -1;
	/* What the run directory holds is ours once the image is (not a dead server's leftovers);
	 * the directory itself while we hold its lock. */
	if (s->owns_run_dir) {
		unlink(s->disk_path);
		snprintf(path, sizeof(path), "%s/state", s->run_dir);
		unlink(path);
		slog("stopped");
		snprintf(path, sizeof(path), "%s/log", s->run_dir);
		unlink(path);
	}
	if (s->run_fd >= 0) {
		rmdir(s->run_dir);
		close(s->run_fd);
		s->run_fd = -1;
	}
}

/* Reports a start-up failure to ploop mount once what was set up is undone, and exits with its code. */
__attribute__((noreturn, format(printf, 3, 4)))
static void fail_start(int ready_fd, int code, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	for (char *c = msg; *c; c++)
		if (*c == '\n')
			*c = ' ';
	slog("start failed: %s", msg);
	server_teardown(&S);
	if (ready_fd >= 0)
		dprintf(ready_fd, "err %d %s\n", code, msg);
	exit(code);
}

/*
 * One server per run directory, whatever the image lock allows (read-only views share it). A server
 * that fails to start removes the directory it held; one that opened it meanwhile makes it again.
 */
static int lock_run_dir(struct srv *s)
{
	for (int tries = 0; tries < 100; tries++) {
		struct stat held, named;
		int fd;

		if ((mkdir(PLOOP_RUN_DIR, 0700) && errno != EEXIST) || (mkdir(s->run_dir, 0700) && errno != EEXIST))
			return -errno;
		fd = open(s->run_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0 && errno == ENOENT)
			continue;
		if (fd < 0)
			return -errno;
		if (flock(fd, LOCK_EX | LOCK_NB)) {
			int e = errno;

			close(fd);
			return e == EWOULDBLOCK ? -EBUSY : -e;
		}
		if (!fstat(fd, &held) && !stat(s->run_dir, &named) && held.st_ino == named.st_ino &&
		    held.st_dev == named.st_dev) {
			s->run_fd = fd;
			return 0;
		}
		close(fd);
	}
	return -EAGAIN;
}

/*
 * Checks and opens the chain (ploop_mount_prepare: interrupted operations completed, deltas a crash
 * left dirty checked), the top marked in use while served. The lock is shared once serving: snapshot
 * views of the set may come, offline writers may not.
 */
static int open_image(struct srv *s, struct ploop_error *err)
{
	struct ploop_descriptor *dd = NULL;
	int idx[PLOOP_MAX_CHAIN], n;
	const char *guid = s->guid[0] ? s->guid : NULL;
	struct flock fl = { .l_type = F_RDLCK, .l_whence = SEEK_SET };
	int r;

	if (ploop_mount_prepare(s->dd_path, guid, s->ro, &s->lock_fd, &dd, idx, &n, err))
		return err->status;
	if (ploop_descriptor_open_chain(dd, guid, s->ro ? PLOOP_OPEN_ALLOW_DIRTY : PLOOP_OPEN_RDWR | PLOOP_OPEN_MARK_DIRTY,
					&s->chain, err))
		goto out;
	dev_set_chain(s, s->chain);
	r = dev_trim_unreferenced(s);
	if (r)	/* space not given back: no reason to refuse the mount */
		slog("%s: cannot truncate its unreferenced tail: %s", s->chain->deltas[s->chain->depth - 1]->path,
		     strerror(-r));
	if (!guid)
		strcpy(s->guid, "");
	fcntl(s->lock_fd, F_OFD_SETLK, &fl);
out:
	ploop_descriptor_free(dd);
	return err->status;
}

/*
 * The device the filesystem is on: with a GPT (as upstream lays it out: entries at LBA 2), a loop
 * device of its own over partition 1; else the disk device itself. Called again after the table
 * changed (init, resize).
 */
int server_attach_partition(struct srv *s, char *msg, size_t len)
{
	uint8_t sec[512 * 3];
	uint64_t entries, first, last;
	bool separate = s->part[0] && strcmp(s->part, s->device);

	if (s->size < sizeof(sec) || dev_read(s, sec, sizeof(sec), 0) || memcmp(sec + 512, "EFI PART", 8)) {
		if (separate)
			loop_detach(s->part);
		snprintf(s->part, sizeof(s->part), "%.63s", s->device);
		return 0;
	}
	memcpy(&entries, sec + 512 + 72, 8);
	memcpy(&first, sec + 1024 + 32, 8);
	memcpy(&last, sec + 1024 + 40, 8);
	entries = le64toh(entries);
	first = le64toh(first);
	last = le64toh(last);
	if (entries != 2 || !first || last < first || (last + 1) * 512 > s->size) {
		snprintf(msg, len, "%s: partition table not laid out as ploop does", s->dd_path);
		return -EINVAL;
	}
	if (separate)
		return loop_set_size(s->part, first * 512, (last - first + 1) * 512);
	return loop_attach(s->disk_path, s->ro, first * 512, (last - first + 1) * 512, s->part, sizeof(s->part), msg,
			   len);
}

static void usage(void)
{
	fprintf(stderr, "usage: ploopd [--ro] [--guid GUID] [--mount DIR [--fstype T] [--options O]] "
			"[--id ID] [--ready-fd FD] DiskDescriptor.xml\n");
	exit(PLOOP_ERR_PARAM);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "ro", no_argument, NULL, 'r' },	   { "guid", required_argument, NULL, 'g' },
		{ "mount", required_argument, NULL, 'm' }, { "fstype", required_argument, NULL, 't' },
		{ "options", required_argument, NULL, 'o' }, { "ready-fd", required_argument, NULL, 'f' },
		{ "id", required_argument, NULL, 'i' }, { 0 } };
	struct srv *s = &S;
	struct ploop_error err = { 0 };
	const char *mount_dir = NULL, *fstype = NULL, *opts = NULL;
	char msg[1024], path[4200];
	int ready_fd = -1, c;
	pthread_t sig_tid;
	sigset_t sigs;

	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'r': s->ro = true; break;
		case 'g':
			if (ploop_parse_guid(optarg, s->guid))
				usage();
			break;
		case 'm': mount_dir = optarg; break;
		case 't': fstype = optarg; break;
		case 'o': opts = optarg; break;
		case 'f': ready_fd = atoi(optarg); break;
		case 'i':
			if (strlen(optarg) != 16 || strspn(optarg, "0123456789abcdef") != 16)
				usage();
			snprintf(s->id, sizeof(s->id), "%s", optarg);
			break;
		default: usage();
		}
	}
	if (optind != argc - 1)
		usage();
	s->dd_path = realpath(argv[optind], NULL);
	if (!s->dd_path)
		fail_start(ready_fd, PLOOP_ERR_DESCRIPTOR, "%s: %s", argv[optind], strerror(errno));
	/* (ploop mount names it apart when another set's server has the name of this path.) */
	if (!s->id[0])
		ploop_instance_id(s->dd_path, s->guid, s->id);
	if (asprintf(&s->run_dir, "%s/%s", PLOOP_RUN_DIR, s->id) < 0 ||
	    asprintf(&s->disk_path, "%s/disk", s->run_dir) < 0 || asprintf(&s->sock_path, "%s/control", s->run_dir) < 0)
		fail_start(ready_fd, PLOOP_ERR_MALLOC, "out of memory");
	c = lock_run_dir(s);
	if (c == -EBUSY)
		fail_start(ready_fd, PLOOP_ERR_MOUNT, "%s is already being served", s->dd_path);
	if (c)
		fail_start(ready_fd, PLOOP_ERR_MKDIR, "%s: %s", s->run_dir, strerror(-c));

	/* Signals go to one thread; the others never see them. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);

	/* Set up in this order; server_teardown() undoes it in reverse, also when start-up fails. */
	dev_init(s);
	ploop_set_log(library_log, NULL);
	if (open_image(s, &err))
		fail_start(ready_fd, err.status, "%s", err.msg);
	/* The image is ours (locked): so is its run directory, and its log. */
	s->owns_run_dir = true;
	snprintf(path, sizeof(path), "%s/log", s->run_dir);
	open_log(path);
	slog("serving %s%s%s%s", s->dd_path, s->guid[0] ? " snapshot " : "", s->guid, s->ro ? " read-only" : "");
	{
		FILE *f = fopen(s->disk_path, "we");

		if (!f || fclose(f))
			fail_start(ready_fd, PLOOP_ERR_CREAT, "%s: %s", s->disk_path, strerror(errno));
	}
	if (fuse_start(s, msg, sizeof(msg)) || control_start(s, msg, sizeof(msg)))
		fail_start(ready_fd, PLOOP_ERR_DEVICE, "%s", msg);
	if (pthread_create(&fuse_tid, NULL, fuse_thread, s))
		fail_start(ready_fd, PLOOP_ERR_DEVICE, "cannot start the FUSE thread");
	fuse_thread_started = true;
	if (loop_attach(s->disk_path, s->ro, 0, 0, s->device, sizeof(s->device), msg, sizeof(msg)) ||
	    server_attach_partition(s, msg, sizeof(msg)))
		fail_start(ready_fd, PLOOP_ERR_LOOP, "%s", msg);
	if (mount_dir) {
		char *rd = realpath(mount_dir, NULL);

		if (!rd)
			fail_start(ready_fd, PLOOP_ERR_MOUNT, "%s: %s", mount_dir, strerror(errno));
		if (fs_mount(s->part, rd, fstype, opts, s->ro, msg, sizeof(msg))) {
			free(rd);
			fail_start(ready_fd, PLOOP_ERR_MOUNT, "%s", msg);
		}
		snprintf(s->mount_dir, sizeof(s->mount_dir), "%s", rd);
		snprintf(s->fstype, sizeof(s->fstype), "%s", fstype ? fstype : "ext4");
		snprintf(s->mount_opts, sizeof(s->mount_opts), "%s", opts ? opts : "");
		free(rd);
	}
	server_write_state(s);
	pthread_create(&sig_tid, NULL, signal_thread, &sigs);
	slog("ready: %s %s %s", s->device, s->part, s->mount_dir);
	if (ready_fd >= 0) {
		dprintf(ready_fd, "ok %s %s\n", s->device, s->part);
		close(ready_fd);
	}

	pthread_mutex_lock(&stop_mu);
	while (!stop_requested)
		pthread_cond_wait(&stop_cv, &stop_mu);
	pthread_mutex_unlock(&stop_mu);

	/* The filesystem is unmounted by whoever asked to stop; the rest happens here. */
	server_teardown(s);
	return 0;
}
