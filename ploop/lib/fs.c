/* The filesystem inside an image: created at init (GPT + mkfs.ext4 through a mounted device, as
 * upstream), grown online or offline with the partition table (resize2fs), shrunk offline; and
 * the space it frees given back (compact): FITRIM online, the ext4 block bitmap read through the
 * chain offline. */
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>

#include "../../common/mountinfo.h"
#include "internal.h"

/* Runs a tool; an exit above @ok_exit fails @err with @status and the last line the tool printed. */
static int run_tool_upto(struct ploop_error *err, int status, int ok_exit, const char *const argv[])
{
	char out[4096] = "", *last, *nl;
	size_t got = 0;
	int pipefd[2], st;
	pid_t pid;

	if (pipe2(pipefd, O_CLOEXEC))
		return ploop_fail(err, PLOOP_ERR_SYS, errno, "pipe");
	pid = fork();
	if (pid < 0)
		return ploop_fail(err, PLOOP_ERR_SYS, errno, "fork");
	if (pid == 0) {
		int null = open("/dev/null", O_RDONLY);

		dup2(null, 0);
		dup2(pipefd[1], 1);
		dup2(pipefd[1], 2);
		execvp(argv[0], (char *const *)argv);
		dprintf(2, "cannot run %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	close(pipefd[1]);
	for (;;) {
		ssize_t n = read(pipefd[0], out + got, sizeof(out) - 1 - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
		if (got == sizeof(out) - 1) {
			/* Keep the tail: the last line is what says why. */
			memmove(out, out + sizeof(out) / 2, got - sizeof(out) / 2);
			got -= sizeof(out) / 2;
		}
	}
	close(pipefd[0]);
	out[got] = '\0';
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	PLOG("%s: exit %d", argv[0], WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	if (WIFEXITED(st) && WEXITSTATUS(st) <= ok_exit)
		return 0;
	while (got && (out[got - 1] == '\n' || out[got - 1] == ' '))
		out[--got] = '\0';
	last = out;
	while ((nl = strchr(last, '\n')) && nl[1])
		last = nl + 1;
	return ploop_fail(err, status, 0, "%s failed (exit %d): %.300s", argv[0], WIFEXITED(st) ? WEXITSTATUS(st) : -1,
			  *last ? last : "no output");
}

static int run_tool(struct ploop_error *err, int status, const char *const argv[])
{
	return run_tool_upto(err, status, 0, argv);
}

/* e2fsck -f -p of a filesystem that is not mounted: exit 1 is errors corrected (the journal of a
 * crashed filesystem replayed, say) and 2 the same with a reboot advised (for a mounted root only);
 * 4 and up are failures. */
static int check_fs(const char *part, struct ploop_error *err)
{
	const char *fsck[] = { "e2fsck", "-f", "-p", part, NULL };

	/* e2fsck opens the device exclusively, and just unmounted after much fsync'd I/O, it may
	 * stay claimed a few seconds ("Cannot continue, aborting"): given up to 10 s to be free */
	for (int i = 0; i < 100; i++) {
		int fd = open(part, O_RDONLY | O_EXCL | O_CLOEXEC);

		if (fd >= 0)
			close(fd);
		if (fd >= 0 || errno != EBUSY)
			break;
		usleep(100 * 1000);
	}
	return run_tool_upto(err, PLOOP_ERR_FSCK, 2, fsck);
}

/* ---- init -t ext4 -------------------------------------------------------------------------------- */

/* GPT (unless @no_partition) and mkfs.ext4 on the device of a freshly mounted, empty image. */
static int make_fs(const struct ploop_instance *in, const struct ploop_create_params *p, struct ploop_error *err)
{
	char part[96], bs[32], ext[128];
	uint64_t size_bytes = 0;
	int fd;

	fd = open(in->device, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return ploop_fail(err, PLOOP_ERR_DEVICE, errno, "%s", in->device);
	if (ioctl(fd, BLKGETSIZE64, &size_bytes)) {
		close(fd);
		return ploop_fail(err, PLOOP_ERR_DEVICE, errno, "%s: size", in->device);
	}
	if (!p->no_partition) {
		if (ploop_gpt_create(fd, size_bytes / 512, p->cluster_sectors ? p->cluster_sectors : PLOOP_DEF_CLUSTER_SECTORS,
				     err)) {
			close(fd);
			return err->status;
		}
		close(fd);
		if (ploop_instance_call(in, "partition", part, sizeof(part), err))
			return err->status;
	} else {
		close(fd);
		snprintf(part, sizeof(part), "%s", in->device);
	}
	snprintf(bs, sizeof(bs), "%u", p->fs_blocksize ? p->fs_blocksize : 4096);
	/* Room in the group descriptors to grow online to 16 TiB (4 KiB blocks) as upstream does;
	 * inode tables are initialised now, not by a kernel thread after every first mount. */
	snprintf(ext, sizeof(ext), "lazy_itable_init=0,lazy_journal_init=0,resize=%llu", 4294967295ULL);
	{
		const char *argv[16];
		int n = 0;

		argv[n++] = "mkfs.ext4";
		argv[n++] = "-q";
		argv[n++] = "-F";
		argv[n++] = "-b";
		argv[n++] = bs;
		if (size_bytes >= (1ULL << 30)) {
			/* upstream's journal; a smaller disk gets mkfs's own size */
			argv[n++] = "-J";
			argv[n++] = "size=128";
		}
		argv[n++] = "-E";
		argv[n++] = ext;
		argv[n++] = part;
		argv[n] = NULL;
		return run_tool(err, PLOOP_ERR_MKFS, argv);
	}
}

int ploop_init_fs(const char *delta_path, const struct ploop_create_params *p, struct ploop_error *err)
{
	cleanup_free char *dir = ploop_dir_of(delta_path);
	cleanup_free char *dd_path = dir ? ploop_join(dir, PLOOP_DESCRIPTOR_NAME) : NULL;
	struct ploop_mount_params mp = { .descriptor = dd_path };
	struct ploop_instance in;
	struct ploop_error e2 = { 0 };

	if (!dd_path)
		return ploop_fail(err, PLOOP_ERR_MALLOC, ENOMEM, "%s", delta_path);
	if (strcmp(p->fstype, "ext4"))
		return ploop_fail(err, PLOOP_ERR_PARAM, 0, "filesystem '%s' is not supported (ext4 or none)", p->fstype);
	if (ploop_init_image(delta_path, p, err))
		return err->status;
	if (!ploop_mount(&mp, &in, err)) {
		make_fs(&in, p, err);
		if (ploop_umount_discard(&in, &e2) && !err->status)
			*err = e2;
	}
	if (err->status) {
		/* As upstream: a failed init leaves nothing behind. */
		char lck[4200];

		unlink(delta_path);
		unlink(dd_path);
		snprintf(lck, sizeof(lck), "%s.lck", dd_path);
		unlink(lck);
	}
	return err->status;
}

/* ---- resize ---------------------------------------------------------------------------------------- */

/* Whether @dev holds the bytes @want at @off. */
static bool device_has_bytes(const char *dev, off_t off, const void *want, size_t len)
{
	uint8_t buf[16];
	int fd = open(dev, O_RDONLY | O_CLOEXEC);
	bool r;

	if (fd < 0)
		return false;
	r = len <= sizeof(buf) && pread(fd, buf, len, off) == (ssize_t)len && !memcmp(buf, want, len);
	close(fd);
	return r;
}

static bool device_has_gpt(const char *dev)
{
	return device_has_bytes(dev, 512, "EFI PART", 8);
}

/* An ext2/3/4 superblock at the start of @part (its magic, 0xEF53 little-endian, at byte 1080). */
static bool holds_ext_fs(const char *part)
{
	return device_has_bytes(part, 1080, "\x53\xef", 2);
}

enum ploop_mount_found ploop_find_mount(dev_t rdev, char *dir, size_t len)
{
	char line[8192], d[4096], here[4096];
	enum ploop_mount_found found = PLOOP_NOT_MOUNTED;
	FILE *f = fopen("/proc/self/mountinfo", "re");
	struct stat st;

	while (f && found != PLOOP_MOUNT_COVERED && fgets(line, sizeof(line), f)) {
		unsigned maj, min;

		if (sscanf(line, "%*d %*d %u:%u %*s %4095s", &maj, &min, d) != 3 || makedev(maj, min) != rdev)
			continue;
		mountinfo_unescape(d, here, sizeof(here));
		if (stat(here, &st) || st.st_dev != rdev)
			found = PLOOP_MOUNT_COVERED;
		else if (found)
			continue;
		else
			found = PLOOP_MOUNT_SHOWS;
		snprintf(dir, len, "%s", here);
	}
	if (f)
		fclose(f);
	return found;
}

enum ploop_mount_found ploop_mounted_at(const struct ploop_instance *in, char *dir, size_t len)
{
	struct stat st;

	if (stat(in->part, &st) || !S_ISBLK(st.st_mode))
		return PLOOP_NOT_MOUNTED;
	return ploop_find_mount(st.st_rdev, dir, len);
}

bool ploop_fs_shows_device(const char *dir, const char *dev)
{
	struct stat d, m;

	return dev && dev[0] && !stat(dev, &d) && S_ISBLK(d.st_mode) && !stat(dir, &m) && m.st_dev == d.st_rdev;
}

int ploop_umount_own(const char *dir, const char *dev, const char *dev2)
{
	if (!ploop_fs_shows_device(dir, dev) && !ploop_fs_shows_device(dir, dev2))
		return -EXDEV;
	if (umount2(dir, 0))
		return errno == EINVAL || errno == ENOENT ? 0 : -errno;
	return 0;
}

/* Online ext4 resize (EXT4_IOC_RESIZE_FS) takes CAP_SYS_RESOURCE, which containers and sandboxes
 * often drop even for root. */
static bool have_cap_sys_resource(void)
{
	char line[256];
	bool yes = false;
	FILE *f = fopen("/proc/self/status", "re");

	while (f && fgets(line, sizeof(line), f)) {
		unsigned long long caps;

		if (sscanf(line, "CapEff: %llx", &caps) == 1)
			yes = caps & (1ULL << 24);
	}
	if (f)
		fclose(f);
	return yes;
}

/* How many times the filesystem on block device @rdev is mounted (mountinfo), with the options of
 * the last mount in @opts as mount(8) takes them: the superblock's, then the mount's own (which
 * win: "ro" of a read-only mount over a superblock mounted "rw" elsewhere). */
static int count_mounts(dev_t rdev, char *opts, size_t len)
{
	char line[8192], mnt_opts[1024], sb_opts[1024];
	int n = 0;
	FILE *f = fopen("/proc/self/mountinfo", "re");

	while (f && fgets(line, sizeof(line), f)) {
		unsigned maj, min;
		const char *sep = strstr(line, " - ");

		if (sscanf(line, "%*d %*d %u:%u %*s %*s %1023s", &maj, &min, mnt_opts) != 3 ||
		    makedev(maj, min) != rdev || !sep || sscanf(sep, " - %*s %*s %1023s", sb_opts) != 1)
			continue;
		n++;
		snprintf(opts, len, "%s,%s", sb_opts, mnt_opts);
	}
	if (f)
		fclose(f);
	return n;
}

/*
 * Growing a mounted ext4 takes CAP_SYS_RESOURCE. Without it, as upstream's default, the filesystem is
 * unmounted, checked, grown and mounted again with the options it had (mounted by ploop or by hand).
 * It is unmounted before the disk grows: if it cannot be (something holds it, or it is mounted on
 * more directories than this one), the command is refused with nothing changed.
 */
static int umount_to_grow(const struct ploop_instance *in, const char *dir, char *opts, size_t len,
			  struct ploop_error *err)
{
	struct stat st;
	int n, r;

	if (stat(in->part, &st))
		return ploop_fail(err, PLOOP_ERR_DEVICE, errno, "%s", in->part);
	n = count_mounts(st.st_rdev, opts, len);
	if (n > 1)
		return ploop_fail(err, PLOOP_ERR_UMOUNT_BUSY, 0,
				  "%s: the filesystem is mounted on %d directories; without CAP_SYS_RESOURCE it grows "
				  "only unmounted: unmount the others first (nothing changed)",
				  dir, n);
	r = ploop_umount_own(dir, in->part, NULL);
	if (r == -EXDEV)
		return ploop_fail(err, PLOOP_ERR_UMOUNT_BUSY, 0, PLOOP_COVERED_FMT, in->part, dir);
	if (r)
		return ploop_fail(err, r == -EBUSY ? PLOOP_ERR_UMOUNT_BUSY : PLOOP_ERR_UMOUNT, -r,
				  "%s: without CAP_SYS_RESOURCE the filesystem grows only unmounted, and it cannot "
				  "be unmounted (nothing changed)",
				  dir);
	PNOTICE("%s: no online resize here (CAP_SYS_RESOURCE): unmounted to grow it", dir);
	return 0;
}

/*
 * Mounts the filesystem again after umount_to_grow. If it cannot be (its journal replay may need
 * space a full host does not have), the error says so - also after an earlier one, which stays the
 * exit code: the user must learn that the filesystem is no longer mounted - and the server forgets
 * the mount point, so that `ploop list` does not show it mounted.
 */
static int mount_again(const struct ploop_instance *in, const char *dir, const char *opts, struct ploop_error *err)
{
	const char *fstype = in->fstype[0] ? in->fstype : "ext4";
	char data[1024], why[sizeof(err->msg)];
	unsigned long flags = ploop_mount_options(opts, 0, data, sizeof(data));
	struct ploop_error none = { 0 };
	int e;

	if (!mount(in->part, dir, fstype, flags, data))
		return err->status;
	/* An option mountinfo shows that mount(2) does not take back (idmapped...): mounted at least
	 * as ploop mount would, and said so. */
	flags = ploop_mount_options(in->options, 0, data, sizeof(data));
	if (!mount(in->part, dir, fstype, flags, data)) {
		PNOTICE("%s: mounted again without some of its options (%s): they were refused", dir, opts);
		return err->status;
	}
	e = errno;
	ploop_instance_call(in, "unmounted", NULL, 0, &none);
	if (!err->status)
		return ploop_fail(err, PLOOP_ERR_MOUNT, e, "%s: the filesystem was left unmounted: cannot mount %s again",
				  dir, in->part);
	snprintf(why, sizeof(why), "%s", err->msg);
	snprintf(err->msg, sizeof(err->msg), "%.500s; %.300s: the filesystem was left unmounted: cannot mount %.60s again: %.80s",
		 why, dir, in->part, strerror(e));
	return err->status;
}

/* Grows the disk through its server, then the partition table and the filesystem (a disk with
 * none, made with -t none, just grows). */
static int grow_mounted(const struct ploop_instance *in, uint64_t size, uint32_t cs, struct ploop_error *err)
{
	char cmd[64], dir[4096], opts[2048] = "";
	const char *rs[] = { "resize2fs", in->part, NULL };
	enum ploop_mount_found where;
	bool fs_mounted, fs, remount;

	/* The server must answer before anything is done: a stopped one would hang the unmount (its
	 * filesystem's last writes wait for it, uninterruptibly), the fsck and even a read of the
	 * superblock. */
	if (!in->kernel && ploop_instance_call(in, "status", NULL, 0, err))
		return err->status;
	if (in->ro)
		return ploop_fail(err, PLOOP_ERR_PARAM, 0, "%s is mounted read-only", in->descriptor);
	where = ploop_mounted_at(in, dir, sizeof(dir));
	fs_mounted = where != PLOOP_NOT_MOUNTED;
	fs = fs_mounted || holds_ext_fs(in->part);
	remount = fs_mounted && !have_cap_sys_resource();
	/* A filesystem that does not check does not grow: found before the disk grows under it. */
	if (fs && !fs_mounted && check_fs(in->part, err))
		return err->status;
	/* Ours covered by another filesystem (another set's) at its directory: resize2fs would grow
	 * what is seen there, and the unmount to grow it would take the other one off. Refused before
	 * anything changes. */
	if (where == PLOOP_MOUNT_COVERED)
		return ploop_fail(err, PLOOP_ERR_UMOUNT_BUSY, 0, "%s: another filesystem is mounted over %s: cannot grow it",
				  dir, in->part);
	if (remount && umount_to_grow(in, dir, opts, sizeof(opts), err))
		return err->status;
	snprintf(cmd, sizeof(cmd), "resize %" PRIu64, size);
	if (ploop_instance_call(in, cmd, NULL, 0, err))
		goto out;
	if (device_has_gpt(in->device)) {
		int fd = open(in->device, O_RDWR | O_CLOEXEC);

		if (fd < 0) {
			ploop_fail(err, PLOOP_ERR_DEVICE, errno, "%s", in->device);
			goto out;
		}
		ploop_gpt_resize(fd, size, cs, err);
		close(fd);
		if (err->status || ploop_instance_call(in, "partition", NULL, 0, err))
			goto out;
	}
	if (!fs) {
		PNOTICE("%s holds no ext4 filesystem: the disk is resized, there is nothing else to grow", in->part);
		return 0;
	}
	if (!fs_mounted || remount) {
		if (!remount || !check_fs(in->part, err))
			run_tool(err, PLOOP_ERR_RESIZE_FS, rs);
	} else {
		struct ploop_error online = { 0 };

		if (run_tool(&online, PLOOP_ERR_RESIZE_FS, rs))
			ploop_fail(err, online.status, 0, "%s", online.msg);
	}
out:
	if (remount)
		mount_again(in, dir, opts, err);
	return err->status;
}

/* Shrinks the filesystem and partition on a mounted device whose filesystem is not mounted. */
static int shrink_fs(const struct ploop_instance *in, uint64_t size, uint32_t cs, struct ploop_error *err)
{
	bool gpt = device_has_gpt(in->device);
	uint64_t fs_end = gpt ? ploop_gpt_partition_end(size, cs) : size, first = 0, last;
	char fs_size[64];
	int fd;

	if (gpt) {
		fd = open(in->device, O_RDWR | O_CLOEXEC);
		if (fd < 0)
			return ploop_fail(err, PLOOP_ERR_DEVICE, errno, "%s", in->device);
		if (ploop_gpt_partition(fd, &first, &last, err)) {
			close(fd);
			return err->status;
		}
		close(fd);
	}
	if (!holds_ext_fs(in->part))
		return ploop_fail(err, PLOOP_ERR_PARAM, 0,
				  "%s holds no ext4 filesystem to shrink first: refused (the data past the new end "
				  "would be cut)",
				  in->part);
	if (fs_end <= first + 2048)
		return ploop_fail(err, PLOOP_ERR_PARAM, 0, "%" PRIu64 " sectors is too small for the filesystem", size);
	snprintf(fs_size, sizeof(fs_size), "%" PRIu64 "s", fs_end - first);
	{
		const char *rs[] = { "resize2fs", in->part, fs_size, NULL };

		if (check_fs(in->part, err) || run_tool(err, PLOOP_ERR_RESIZE_FS, rs))
			return err->status;
	}
	if (gpt) {
		fd = open(in->device, O_RDWR | O_CLOEXEC);
		if (fd < 0)
			return ploop_fail(err, PLOOP_ERR_DEVICE, errno, "%s", in->device);
		ploop_gpt_resize(fd, size, cs, err);
		close(fd);
		if (!err->status)
			ploop_instance_call(in, "partition", NULL, 0, err);
	}
	return err->status;
}

static int resize_locked(const char *dd_path, uint64_t size, struct ploop_error *err)
{
	struct ploop_descriptor *dd = NULL;
	struct ploop_instance in;
	struct ploop_error none = { 0 };
	struct ploop_delta *top;
	uint32_t cs;
	uint64_t cur;
	bool mounted;
	int t;

	if (ploop_descriptor_read(dd_path, &dd, err))
		return err->status;
	/* A size the top cannot grow to is refused here, before the device is served, fsck'ed or shrunk:
	 * found only by the grow itself, it left the filesystem touched (and wrapped around when rounded). */
	t = ploop_descriptor_find_image(dd, dd->top_guid);
	if (t < 0) {
		ploop_descriptor_free(dd);
		return ploop_fail(err, PLOOP_ERR_DESCRIPTOR, 0, "%s: no top image", dd_path);
	}
	if (ploop_delta_open(dd->images[t].path,
			     PLOOP_OPEN_HEADER_ONLY | PLOOP_OPEN_ALLOW_DIRTY | PLOOP_OPEN_NOLOCK |
				     (dd->raw && dd->n_images == 1 ? PLOOP_OPEN_RAW : 0),
			     dd->blocksize ? dd->blocksize : PLOOP_DEF_CLUSTER_SECTORS, 0, &top, err)) {
		ploop_descriptor_free(dd);
		return err->status;
	}
	ploop_delta_check_size(top, size, err);
	cs = top->cluster_sectors;
	ploop_delta_close(top, NULL);
	if (err->status) {
		ploop_descriptor_free(dd);
		return err->status;
	}
	cur = dd->disk_size;
	size = (size + cs - 1) / cs * cs;	/* cannot overflow: the size was checked */
	if (size < cur && dd->n_images > 1) {
		ploop_descriptor_free(dd);
		return ploop_fail(err, PLOOP_ERR_PARAM, 0, "%s: has snapshots; merge them (snapshot-merge -A) to shrink",
				  dd_path);
	}
	ploop_descriptor_free(dd);
	mounted = !ploop_find_instance(dd_path, NULL, &in, &none) && in.alive;
	/* The same size still grows a filesystem that does not fill its disk (an interrupted resize). */
	if (mounted) {
		if (size < cur)
			return ploop_fail(err, PLOOP_ERR_BUSY, 0,
					  "%s is mounted: shrinking needs it unmounted (ploop umount first)", dd_path);
		return grow_mounted(&in, size, cs, err);
	}
	/* Offline: serve the device for the filesystem tools, without mounting the filesystem. */
	{
		struct ploop_mount_params mp = { .descriptor = dd_path };
		struct ploop_error e2 = { 0 };

		if (ploop_mount(&mp, &in, err))
			return err->status;
		if (size >= cur)	/* the same size grows a filesystem short of its disk, as mounted */
			grow_mounted(&in, size, cs, err);
		else
			shrink_fs(&in, size, cs, err);
		ploop_umount(&in, &e2);
		if (err->status)
			return err->status;
		if (e2.status)
			return ploop_fail(err, e2.status, 0, "%s", e2.msg);
	}
	return size < cur ? ploop_shrink(dd_path, size, err) : 0;
}

/* Two resizes of one set interleaved (the server's grow, the partition table, resize2fs): the second
 * failed in e2fsck, or took the first one's size for a shrink. One at a time, for the whole of it. */
int ploop_resize(const char *dd_path, uint64_t size, struct ploop_error *err)
{
	int lock;

	if (ploop_lock_descriptor_op(dd_path, &lock, err))
		return err->status;
	resize_locked(dd_path, size, err);
	ploop_unlock_descriptor(lock);
	return err->status;
}
