/* Crash and I/O-error injection: every operation is interrupted at each of its file-changing steps,
 * as a process death followed by a power loss (unsynced writes randomly lost) and as a single
 * transient error. After the recovery that every command runs first, the image set must check
 * clean, hold the content from before or after the operation, and accept further work. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "faultio.h"
#include "harness.h"

#define DD "img/DiskDescriptor.xml"
#define CS 64			/* 32 KiB clusters keep fixtures small */
#define DISK (2u << 20)

static int write_pattern(uint64_t off, size_t len, uint64_t seed)
{
	struct ploop_error err = { 0 };
	struct ploop_descriptor *dd = NULL;
	struct ploop_chain *c = NULL;
	uint8_t *buf = malloc(len);
	int r;

	fill_pattern(buf, len, seed);
	r = ploop_descriptor_read(DD, &dd, &err);
	if (!r)
		r = ploop_descriptor_open_chain(dd, NULL, PLOOP_OPEN_RDWR, &c, &err);
	if (!r)
		r = ploop_chain_write(c, buf, len, off, &err);
	if (c && ploop_chain_close(c, &err) && !r)
		r = err.status;
	if (r)
		fprintf(stderr, "  fixture write: %s\n", err.msg);
	ploop_descriptor_free(dd);
	free(buf);
	return r;
}

static int snap(void)
{
	struct ploop_error err = { 0 };

	return ploop_snapshot(DD, NULL, NULL, &err);
}

static int base_image(int version)
{
	struct ploop_create_params p = { .size_sectors = DISK / 512, .cluster_sectors = CS, .version = version };
	struct ploop_error err = { 0 };

	if (system("rm -rf img") || mkdir("img", 0755))
		return -1;
	if (ploop_init_image("img/root.hds", &p, &err))
		return -1;
	/* Clusters 1..3 and 10, part of 20: data right after the BAT cluster. */
	return write_pattern(32768, 3 * 32768, 1) || write_pattern(10 * 32768, 32768, 2) ||
	       write_pattern(20 * 32768 + 100, 5000, 3);
}

/* base <- top: the top overwrites, extends and adds clusters. */
static int two_levels(void)
{
	return base_image(2) || snap() || write_pattern(2 * 32768 + 1000, 40000, 4) ||
	       write_pattern(30 * 32768, 2 * 32768, 5) || write_pattern(10 * 32768, 32768, 6);
}

static int three_levels(void)
{
	return two_levels() || snap() || write_pattern(5000, 100, 7) || write_pattern(40 * 32768, 32768, 8);
}

static int one_level(void)
{
	return base_image(2);
}

static int two_levels_v1(void)
{
	return base_image(1) || snap() || write_pattern(2 * 32768 + 1000, 40000, 4);
}

/* The guid of the image at @level (0 = base) of the top's chain. */
static void guid_at(int level, char out[PLOOP_GUID_BUF])
{
	struct ploop_descriptor *dd = NULL;
	struct ploop_error err = { 0 };
	int idx[PLOOP_MAX_CHAIN], n;

	out[0] = '\0';
	if (!ploop_descriptor_read(DD, &dd, &err) && !ploop_descriptor_chain(dd, NULL, idx, &n, &err) && level < n)
		strcpy(out, dd->images[idx[level]].guid);
	ploop_descriptor_free(dd);
}

static char target[PLOOP_GUID_BUF];

static int op_snapshot(struct ploop_error *err)
{
	return ploop_snapshot(DD, NULL, NULL, err);
}

static int op_merge_top(struct ploop_error *err)
{
	return ploop_snapshot_merge(DD, NULL, false, err);
}

static int op_merge_all(struct ploop_error *err)
{
	return ploop_snapshot_merge(DD, NULL, true, err);
}

static int op_delete_middle(struct ploop_error *err)
{
	return ploop_snapshot_delete(DD, target, NULL, err);
}

static int op_delete_top_parent_leaf(struct ploop_error *err)
{
	return ploop_snapshot_delete(DD, PLOOP_TOP_GUID, NULL, err);
}

static int op_switch(struct ploop_error *err)
{
	return ploop_snapshot_switch(DD, target, false, err);
}

static int op_grow(struct ploop_error *err)
{
	return ploop_grow(DD, false, (64u << 20) / 512, err);
}

/* Past 8176 clusters of 32 KiB the BAT needs a second cluster (64M above does not): the grow moves
 * data cluster 1 out of its way. */
#define BIG_DISK (300u << 20)

static int op_grow_big(struct ploop_error *err)
{
	return ploop_grow(DD, false, BIG_DISK / 512, err);
}

/* Offline shrink of the image (resize's part after resize2fs, which leaves no data past the new end,
 * as this fixture has none): clusters past the end dropped, header and descriptor made smaller. */
static int op_shrink(struct ploop_error *err)
{
	return ploop_shrink(DD, (DISK / 2) / 512, err);
}

static int op_to_v1(struct ploop_error *err)
{
	return ploop_convert_version(DD, 1, err);
}

static int op_to_v2(struct ploop_error *err)
{
	return ploop_convert_version(DD, 2, err);
}

static int op_preallocate(struct ploop_error *err)
{
	return ploop_convert_mode(DD, PLOOP_MODE_PREALLOCATED, err);
}

static int op_to_raw(struct ploop_error *err)
{
	return ploop_convert_mode(DD, PLOOP_MODE_RAW, err);
}

/* Writes through the chain: copy-up of partial clusters, new clusters, in-place overwrite. */
static int op_writes(struct ploop_error *err)
{
	struct ploop_descriptor *dd = NULL;
	struct ploop_chain *c = NULL;
	uint8_t buf[3 * 32768];
	int r;

	r = ploop_descriptor_read(DD, &dd, err);
	if (!r)
		r = ploop_descriptor_open_chain(dd, NULL, PLOOP_OPEN_RDWR, &c, err);
	ploop_descriptor_free(dd);
	if (r)
		return r;
	fill_pattern(buf, sizeof(buf), 99);
	r = ploop_chain_write(c, buf, 700, 32768 + 50, err);		/* copy-up from the base */
	if (!r)
		r = ploop_chain_write(c, buf, sizeof(buf), 50 * 32768, err);	/* new clusters */
	if (!r)
		r = ploop_chain_write(c, buf + 7, 1000, 30 * 32768 + 3, err);	/* in place in the top */
	if (!r)
		r = ploop_chain_flush(c, err);
	if (ploop_chain_close(c, err) && !r)
		r = err->status;
	return r;
}

static uint8_t *contents(size_t *len)
{
	return descriptor_contents(DD, len);
}

/* Every 32 KiB cluster holds its content from before or from after. */
static bool per_cluster_old_or_new(const uint8_t *got, const uint8_t *before, const uint8_t *after, size_t len)
{
	for (size_t off = 0; off < len; off += 32768) {
		size_t n = len - off < 32768 ? len - off : 32768;

		if (memcmp(got + off, before + off, n) && memcmp(got + off, after + off, n))
			return false;
	}
	return true;
}

/* What a recovered set holds, judged a MiB at a time against the content before and after. */
struct judge {
	const uint8_t *before, *after;
	size_t blen, alen;
	bool is_before, is_after, old_or_new;	/* old_or_new: per cluster */
};

static int judge_chunk(const uint8_t *buf, size_t off, size_t n, void *arg)
{
	struct judge *j = arg;

	if (j->is_before)
		j->is_before = off + n <= j->blen && !memcmp(buf, j->before + off, n);
	if (j->is_after)
		j->is_after = off + n <= j->alen && !memcmp(buf, j->after + off, n);
	if (j->old_or_new)
		j->old_or_new = off + n <= j->blen && off + n <= j->alen &&
				per_cluster_old_or_new(buf, j->before + off, j->after + off, n);
	return !j->is_before && !j->is_after && !j->old_or_new;
}

static bool deltas_consistent(void)
{
	struct ploop_descriptor *dd = NULL;
	struct ploop_error err = { 0 };
	struct ploop_check_params p = { .flags = PLOOP_CHECK_FORCE | PLOOP_CHECK_CLUSTERS | PLOOP_CHECK_RDONLY };
	bool ok = true;

	if (ploop_descriptor_read(DD, &dd, &err)) {
		fprintf(stderr, "  %s\n", err.msg);
		return false;
	}
	for (int i = 0; i < dd->n_images && ok; i++) {
		memset(&err, 0, sizeof(err));
		if (dd->raw && i == 0)
			continue;
		if (ploop_check_delta(dd->images[i].path, &p, &err)) {
			fprintf(stderr, "  %s\n", err.msg);
			ok = false;
		}
	}
	/* The descriptor tells the disk's size as the top delta's header does. */
	if (ok && !(dd->raw && dd->n_images == 1)) {
		struct ploop_delta *top = NULL;

		memset(&err, 0, sizeof(err));
		if (ploop_delta_open(dd->images[ploop_descriptor_find_image(dd, dd->top_guid)].path,
				     PLOOP_OPEN_HEADER_ONLY | PLOOP_OPEN_ALLOW_DIRTY | PLOOP_OPEN_NOLOCK, 0, 0, &top, &err)) {
			fprintf(stderr, "  %s\n", err.msg);
			ok = false;
		} else {
			struct ploop_delta_info di;

			ploop_delta_get_info(top, &di);
			if (di.size_sectors != dd->disk_size) {
				fprintf(stderr, "  Disk_size %" PRIu64 " but the top delta holds %" PRIu64 " sectors\n",
					dd->disk_size, di.size_sectors);
				ok = false;
			}
		}
		ploop_delta_close(top, NULL);
	}
	ploop_descriptor_free(dd);
	return ok;
}

/* Whether the base of the set is still called root.hds, as every setup names it (a conversion to
 * raw keeps the name: it must not stay NAME.tmp). */
static bool base_name_kept(void)
{
	struct ploop_descriptor *dd = NULL;
	struct ploop_error err = { 0 };
	bool ok = false;
	int chain[PLOOP_MAX_CHAIN], n;

	if (!ploop_descriptor_read(DD, &dd, &err) && !ploop_descriptor_chain(dd, NULL, chain, &n, &err))
		ok = !strcmp(dd->images[chain[0]].file, "root.hds");
	if (!ok)
		fprintf(stderr, "  base: %s\n", dd && !err.msg[0] ? dd->images[chain[0]].file : err.msg);
	ploop_descriptor_free(dd);
	return ok;
}

static void remove_merged(char *name)
{
	char path[512];

	snprintf(path, sizeof(path), "img/%s", name);
	unlink(path);
	free(name);
}

/* Files in img/ the descriptor does not name (a killed command's debris), or NULL when none. */
static char *debris(void)
{
	struct ploop_descriptor *dd = NULL;
	struct ploop_error err = { 0 };
	char *out = NULL;
	struct dirent *e;
	DIR *dir;

	if (ploop_descriptor_read(DD, &dd, &err) || !(dir = opendir("img"))) {
		ploop_descriptor_free(dd);
		return strdup("(unreadable)");
	}
	while ((e = readdir(dir))) {
		bool named = !strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") ||
			     !strcmp(e->d_name, "DiskDescriptor.xml") || !strcmp(e->d_name, "DiskDescriptor.xml.lck");

		for (int i = 0; i < dd->n_images && !named; i++)
			named = !strcmp(dd->images[i].file, e->d_name);
		if (!named && !out)
			out = strdup(e->d_name);
	}
	closedir(dir);
	ploop_descriptor_free(dd);
	return out;
}

struct scenario {
	int (*setup)(void);
	int (*op)(struct ploop_error *err);
	int target_level;	/* -1: none; else the guid at that level becomes `target` */
	bool per_cluster;	/* unflushed writes: judge cluster by cluster */
	/* A stop between the descriptor that no longer names the merged delta and the removal of its
	 * file leaves that file (its data is in the set already): recovery does not remove a delta
	 * holding data that the descriptor does not name, as it cannot tell it from one an operator
	 * keeps there. */
	bool may_leave_merged;
};

/* Runs @s once undisturbed, then interrupted at every step; returns the number of failures. */
static int crash_scenario(const char *name, const struct scenario *s)
{
	struct ploop_error err = { 0 };
	uint8_t *before = NULL, *after = NULL;
	size_t blen = 0, alen = 0;
	long total;
	int failures = 0;

	if (s->setup()) {
		harness_fail(__FILE__, __LINE__, "%s: setup failed", name);
		return 1;
	}
	if (s->target_level >= 0)
		guid_at(s->target_level, target);
	before = contents(&blen);
	faultio_install();
	faultio_arm(0, 0, false);
	if (s->op(&err)) {
		faultio_uninstall();
		harness_fail(__FILE__, __LINE__, "%s: undisturbed run failed: %s", name, err.msg);
		return 1;
	}
	total = faultio_count();
	faultio_uninstall();
	after = contents(&alen);
	if (!before || !after) {
		harness_fail(__FILE__, __LINE__, "%s: cannot read contents", name);
		return 1;
	}

	for (long n = 1; n <= total; n++) {
		for (int mode = 0; mode < 2; mode++) {
			bool crash = mode == 0;
			int rc;

			memset(&err, 0, sizeof(err));
			if (s->setup())
				return failures + 1;
			faultio_install();
			faultio_arm(n, crash ? EIO : ENOSPC, crash);
			rc = s->op(&err);
			if (crash)
				faultio_crash((uint64_t)n * 7919);
			faultio_uninstall();
			if (rc && (!err.msg[0] || strchr(err.msg, '\n'))) {
				harness_fail(__FILE__, __LINE__, "%s step %ld: error without a one-line message", name, n);
				failures++;
			}

			/* What the next command does: recover, and the operator's `ploop check DiskDescriptor.xml`. */
			memset(&err, 0, sizeof(err));
			if (ploop_recover(DD, &err)) {
				harness_fail(__FILE__, __LINE__, "%s step %ld (%s): recovery failed: %s", name, n,
					     crash ? "crash" : "error", err.msg);
				failures++;
				continue;
			}
			{
				struct ploop_check_params p = { .flags = PLOOP_CHECK_FORCE };

				memset(&err, 0, sizeof(err));
				if (ploop_check_descriptor(DD, NULL, &p, &err)) {
					harness_fail(__FILE__, __LINE__, "%s step %ld (%s): check failed: %s", name, n,
						     crash ? "crash" : "error", err.msg);
					failures++;
					continue;
				}
			}
			if (!deltas_consistent()) {
				harness_fail(__FILE__, __LINE__, "%s step %ld (%s): inconsistent delta", name, n,
					     crash ? "crash" : "error");
				failures++;
				continue;
			}
			if (!base_name_kept()) {
				harness_fail(__FILE__, __LINE__, "%s step %ld (%s): the base lost its name", name, n,
					     crash ? "crash" : "error");
				failures++;
				continue;
			}
			{
				char *left = debris();

				if (left && s->may_leave_merged && !strncmp(left, "root.hds.{", 10))
					remove_merged(left);
				else if (left) {
					harness_fail(__FILE__, __LINE__, "%s step %ld (%s): %s left behind", name, n,
						     crash ? "crash" : "error", left);
					failures++;
					free(left);
					continue;
				}
			}
			{
				struct judge j = { before, after, blen, alen, true, true, s->per_cluster };
				size_t glen = 0;

				if (descriptor_chunks(DD, &glen, judge_chunk, &j) ||
				    !((glen == blen && (j.is_before || (glen == alen && j.old_or_new))) ||
				      (glen == alen && j.is_after))) {
					harness_fail(__FILE__, __LINE__,
						     "%s step %ld (%s): content is neither before nor after", name, n,
						     crash ? "crash" : "error");
					failures++;
				} else if (!rc && !crash && !(glen == alen && j.is_after)) {
					harness_fail(__FILE__, __LINE__,
						     "%s step %ld: reported success but content is old", name, n);
					failures++;
				}
			}
			/* The set accepts further work. */
			memset(&err, 0, sizeof(err));
			if (ploop_snapshot(DD, NULL, NULL, &err) || ploop_snapshot_merge(DD, NULL, false, &err)) {
				harness_fail(__FILE__, __LINE__, "%s step %ld: image set unusable afterwards: %s", name, n,
					     err.msg);
				failures++;
			}
			if (failures > 5)
				return failures;
		}
	}
	fprintf(stderr, "  %s: %ld steps interrupted twice each\n", name, total);
	free(before);
	free(after);
	return failures;
}

#define CRASH_TEST(name, ...)                                                         \
	TEST(crash_##name)                                                            \
	{                                                                             \
		static const struct scenario s = { __VA_ARGS__ };                     \
		CHECK_EQ(crash_scenario(#name, &s), 0);                               \
	}

CRASH_TEST(snapshot, .setup = one_level, .op = op_snapshot, .target_level = -1)
CRASH_TEST(merge_top, .setup = two_levels, .op = op_merge_top, .target_level = -1, .may_leave_merged = true)
CRASH_TEST(merge_all, .setup = three_levels, .op = op_merge_all, .target_level = -1, .may_leave_merged = true)
CRASH_TEST(delete_middle, .setup = three_levels, .op = op_delete_middle, .target_level = 1)
CRASH_TEST(delete_top, .setup = two_levels, .op = op_delete_top_parent_leaf, .target_level = -1, .may_leave_merged = true)
CRASH_TEST(switch, .setup = two_levels, .op = op_switch, .target_level = 0)
CRASH_TEST(grow_relocating, .setup = one_level, .op = op_grow, .target_level = -1)
CRASH_TEST(grow_bat_cluster, .setup = one_level, .op = op_grow_big, .target_level = -1)
CRASH_TEST(shrink, .setup = one_level, .op = op_shrink, .target_level = -1)
CRASH_TEST(convert_to_v1, .setup = two_levels, .op = op_to_v1, .target_level = -1)
CRASH_TEST(convert_to_v2, .setup = two_levels_v1, .op = op_to_v2, .target_level = -1)
CRASH_TEST(preallocate, .setup = one_level, .op = op_preallocate, .target_level = -1)
CRASH_TEST(to_raw, .setup = one_level, .op = op_to_raw, .target_level = -1)
CRASH_TEST(chain_writes, .setup = two_levels, .op = op_writes, .target_level = -1, .per_cluster = true)

/* import: a crash at any step leaves either no image set (a new import into the directory works),
 * or the whole one (in the last instants without its descriptor yet: restore-descriptor), never a
 * DiskDescriptor.xml over a partly imported disk. */
static int import_once(struct ploop_error *err)
{
	struct ploop_create_params p = { .cluster_sectors = CS, .version = 2 };
	int fd = open("imp.raw", O_RDONLY), r;

	r = ploop_import(fd, 0, "img/root.hds", &p, err);
	close(fd);
	return r;
}

TEST(crash_import)
{
	struct ploop_error err = { 0 };
	size_t len = DISK, glen = 0;
	uint8_t *in = calloc(1, len), *got;
	FILE *f;
	long total;
	struct stat st;

	fill_pattern(in, 5 * 32768, 11);
	fill_pattern(in + 20 * 32768, 3 * 32768 + 77, 12);
	fill_pattern(in + len - 32768, 32768, 13);
	f = fopen("imp.raw", "w");
	CHECK(f && fwrite(in, 1, len, f) == len);
	fclose(f);
	CHECK_EQ(system("rm -rf img && mkdir img"), 0);
	faultio_install();
	faultio_arm(0, 0, false);
	CHECK_EQ(import_once(&err), 0);
	total = faultio_count();
	faultio_uninstall();
	for (long n = 1; n <= total; n++) {
		memset(&err, 0, sizeof(err));
		CHECK_EQ(system("rm -rf img && mkdir img"), 0);
		faultio_install();
		faultio_arm(n, EIO, true);
		import_once(&err);
		faultio_crash((uint64_t)n * 7919);
		faultio_uninstall();
		memset(&err, 0, sizeof(err));
		if (stat(DD, &st) && !stat("img/root.hds", &st)) {
			/* Killed between the rename of the finished image and its descriptor: the image is
			 * whole, and restore-descriptor makes the set. */
			if (ploop_restore_descriptor("img", "img/root.hds", false, 0, &err)) {
				harness_fail(__FILE__, __LINE__, "import step %ld: restore-descriptor failed: %s", n,
					     err.msg);
				continue;
			}
		} else if (stat(DD, &st)) {
			/* Before-state: no set; importing again works. */
			if (import_once(&err)) {
				harness_fail(__FILE__, __LINE__, "import step %ld: import again failed: %s", n, err.msg);
				continue;
			}
		} else if (ploop_recover(DD, &err) ||
			   ploop_check_descriptor(DD, NULL, &(struct ploop_check_params){ .flags = PLOOP_CHECK_FORCE },
						  &err)) {
			harness_fail(__FILE__, __LINE__, "import step %ld: left a set that does not check: %s", n,
				     err.msg);
			continue;
		}
		got = contents(&glen);
		if (!got || glen != len || memcmp(got, in, len))
			harness_fail(__FILE__, __LINE__, "import step %ld: a set with partial contents", n);
		free(got);
	}
	fprintf(stderr, "  import: %ld steps interrupted\n", total);
	free(in);
	unlink("imp.raw");
}

/* What recovery removes beside a set, and what it leaves: only files named as the set names new
 * deltas that hold no data (a killed snapshot's or switch's delta); never a delta holding data or
 * any other file. */
TEST(recovery_debris)
{
	struct ploop_create_params p = { .size_sectors = DISK / 512, .cluster_sectors = CS, .version = 2 };
	struct ploop_error err = { 0 };
	struct stat st;
	int fd;

	CHECK_EQ(one_level(), 0);
	/* an empty new delta, one whose creation stopped before its header, one holding data, others */
	CHECK_EQ(ploop_delta_create("img/root.hds.{11111111-2222-3333-4444-555555555555}", &p, &err), 0);
	fd = open("img/root.hds.{22222222-2222-3333-4444-555555555555}", O_WRONLY | O_CREAT, 0600);
	CHECK(fd >= 0);
	CHECK_EQ(ftruncate(fd, 65536), 0);
	close(fd);
	CHECK_EQ(system("cp img/root.hds 'img/root.hds.{33333333-2222-3333-4444-555555555555}'"), 0);
	CHECK_EQ(ploop_delta_create("img/other.{44444444-2222-3333-4444-555555555555}", &p, &err), 0);
	CHECK_EQ(ploop_delta_create("img/root.hds.{5555}", &p, &err), 0);
	CHECK_EQ(system("echo notes >img/notes.txt"), 0);

	CHECK_EQ(ploop_recover(DD, &err), 0);
	CHECK(stat("img/root.hds.{11111111-2222-3333-4444-555555555555}", &st) && errno == ENOENT);
	CHECK(stat("img/root.hds.{22222222-2222-3333-4444-555555555555}", &st) && errno == ENOENT);
	CHECK_EQ(stat("img/root.hds.{33333333-2222-3333-4444-555555555555}", &st), 0);
	CHECK_EQ(stat("img/other.{44444444-2222-3333-4444-555555555555}", &st), 0);
	CHECK_EQ(stat("img/root.hds.{5555}", &st), 0);
	CHECK_EQ(stat("img/notes.txt", &st), 0);
	CHECK_EQ(stat("img/root.hds", &st), 0);
	CHECK(deltas_consistent());
}

/* A raw image that is called NAME.tmp with no NAME beside it is not a stopped conversion. */
TEST(recovery_raw_tmp_name_kept)
{
	struct ploop_create_params p = { .size_sectors = DISK / 512, .mode = PLOOP_MODE_RAW };
	struct ploop_error err = { 0 };
	struct stat st;

	CHECK_EQ(system("rm -rf img && mkdir img"), 0);
	CHECK_EQ(ploop_init_image("img/disk.tmp", &p, &err), 0);
	CHECK_EQ(ploop_recover(DD, &err), 0);
	CHECK_EQ(stat("img/disk.tmp", &st), 0);
	CHECK(stat("img/disk", &st) && errno == ENOENT);
}
