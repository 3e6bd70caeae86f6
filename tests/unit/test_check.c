/* Unit tests of ploop_check_delta and ploop_check_descriptor: every rule of ploop-format.md §3.1 as
 * check.c implements it, what each flag repairs, and that read-only mode never changes a byte. */
#include <endian.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

#define CS 64u				/* cluster of the test images: 64 sectors */
#define CB (CS * 512u)			/* 32 KiB */
#define SLOT(v) (64 + 4 * (uint64_t)(v))	/* file offset of the BAT entry of virtual cluster v */

#define F_FORCE PLOOP_CHECK_FORCE
#define F_HARD PLOOP_CHECK_HARD
#define F_CLUSTERS PLOOP_CHECK_CLUSTERS
#define F_RDONLY PLOOP_CHECK_RDONLY
#define F_DROP PLOOP_CHECK_DROP_INUSE

/* ---- helpers ----------------------------------------------------------------------------------------------------- */

struct report {
	int n;
	bool bad_line;
	char line[32][256];
};

static void collect(void *ctx, const char *msg)
{
	struct report *r = ctx;

	if (!msg[0] || strchr(msg, '\n'))
		r->bad_line = true;
	if (r->n < 32)
		snprintf(r->line[r->n], sizeof(r->line[0]), "%s", msg);
	r->n++;
}

/* How many reported lines contain @s. */
static int lines_with(const struct report *r, const char *s)
{
	int k = 0;

	for (int i = 0; i < r->n && i < 32; i++)
		k += strstr(r->line[i], s) != NULL;
	return k;
}

static void dump(const struct report *r)
{
	for (int i = 0; i < r->n && i < 32; i++)
		fprintf(stderr, "    | %s\n", r->line[i]);
}

/* Runs the check; the error, if any, must be one line and agree with the return value. */
static int run_check(const char *path, unsigned flags, struct report *r)
{
	struct ploop_check_params p = { .flags = flags, .report = collect, .ctx = r };
	struct ploop_error e = { 0 };
	int rc;

	memset(r, 0, sizeof(*r));
	rc = ploop_check_delta(path, &p, &e);
	if (rc != e.status || (rc && (!e.msg[0] || strchr(e.msg, '\n')))) {
		fprintf(stderr, "  check %s: rc %d, status %d, message '%s'\n", path, rc, e.status, e.msg);
		return -1000;
	}
	if (r->bad_line) {
		fprintf(stderr, "  check %s: a report line is empty or has a newline\n", path);
		return -1001;
	}
	return rc;
}

static uint64_t file_size(const char *path)
{
	struct stat st;

	return stat(path, &st) ? UINT64_MAX : (uint64_t)st.st_size;
}

static int make_image(const char *path, uint64_t size_sectors, int version)
{
	struct ploop_create_params p = { .size_sectors = size_sectors, .cluster_sectors = CS, .version = version };
	struct ploop_error e = { 0 };

	if (ploop_delta_create(path, &p, &e)) {
		fprintf(stderr, "  create %s: %s\n", path, e.msg);
		return -1;
	}
	return 0;
}

/* Writes one whole cluster of pattern to each virtual cluster of @vs, in order. */
static int write_clusters(const char *path, const uint64_t *vs, int n)
{
	struct ploop_error e = { 0 };
	struct ploop_chain *c = NULL;
	uint8_t *buf = malloc(CB);
	int r = -1;

	if (!buf || ploop_chain_open_files(&path, 1, false, 0, PLOOP_OPEN_RDWR, &c, &e))
		goto out;
	for (int i = 0; i < n; i++) {
		fill_pattern(buf, CB, vs[i] + 1);
		if (ploop_chain_write(c, buf, CB, vs[i] * CB, &e))
			goto out;
	}
	r = 0;
out:
	if (ploop_chain_close(c, &e))
		r = -1;
	if (r)
		fprintf(stderr, "  write %s: %s\n", path, e.msg);
	free(buf);
	return r;
}

/* 4 MiB (128 clusters, one BAT cluster) with data in v = 3, 7, 100 at file clusters 1, 2, 3. */
static const uint64_t small_vs[] = { 3, 7, 100 };

static int make_small(const char *path, int version)
{
	if (make_image(path, 8192, version))
		return -1;
	return write_clusters(path, small_vs, 3);
}

struct snap {
	uint8_t *buf;
	size_t len;
};

static bool take(const char *path, struct snap *s)
{
	s->buf = read_file(path, &s->len);
	return s->buf != NULL;
}

/* Whether @path still holds exactly the bytes of @s (which is freed). */
static bool unchanged(const char *path, struct snap *s)
{
	size_t len = 0;
	uint8_t *now = read_file(path, &len);
	bool same = now && len == s->len && !memcmp(now, s->buf, len);

	if (!same)
		fprintf(stderr, "  %s changed (%zu -> %zu bytes)\n", path, s->len, len);
	free(now);
	free(s->buf);
	s->buf = NULL;
	return same;
}

/* A read-only check with @flags must return @want and leave every byte of @path alone. */
static bool rdonly_check_is(const char *path, unsigned flags, int want)
{
	struct report r;
	struct snap s;
	int rc;

	if (!take(path, &s))
		return false;
	rc = run_check(path, flags | F_RDONLY, &r);
	if (rc != want) {
		fprintf(stderr, "  read-only check of %s with flags %#x: rc %d, wanted %d\n", path, flags, rc, want);
		dump(&r);
		free(s.buf);
		return false;
	}
	return unchanged(path, &s);
}

/* A writable check with @flags must return @want without touching the file. */
static bool check_keeps(const char *path, unsigned flags, int want)
{
	struct report r;
	struct snap s;
	int rc;

	if (!take(path, &s))
		return false;
	rc = run_check(path, flags, &r);
	if (rc != want) {
		fprintf(stderr, "  check of %s with flags %#x: rc %d, wanted %d\n", path, flags, rc, want);
		dump(&r);
		free(s.buf);
		return false;
	}
	return unchanged(path, &s);
}

/* Every combination of the flags a read-only check may get. */
static bool rdonly_never_writes(const char *path)
{
	static const unsigned combos[] = { 0, F_FORCE, F_FORCE | F_CLUSTERS, F_HARD | F_CLUSTERS,
					   F_FORCE | F_DROP, F_HARD | F_DROP | F_CLUSTERS };
	struct report r;

	for (size_t i = 0; i < sizeof(combos) / sizeof(combos[0]); i++) {
		struct snap s;

		if (!take(path, &s))
			return false;
		if (run_check(path, combos[i] | F_RDONLY, &r) < 0) {
			free(s.buf);
			return false;
		}
		if (!unchanged(path, &s)) {
			fprintf(stderr, "  ... by a read-only check with flags %#x\n", combos[i]);
			return false;
		}
	}
	return true;
}

static bool opens(const char *path)
{
	struct ploop_error e = { 0 };
	struct ploop_delta *d;

	if (ploop_delta_open(path, 0, 0, 0, &d, &e)) {
		fprintf(stderr, "  open %s: %s\n", path, e.msg);
		return false;
	}
	ploop_delta_close(d, NULL);
	return true;
}

/* ---- clean images ------------------------------------------------------------------------------------------------ */

TEST(check_clean_image_is_skipped_without_force)
{
	struct report r;

	CHECK(!make_small("a.hds", 2));
	CHECK(check_keeps("a.hds", 0, 0));
	CHECK_EQ(run_check("a.hds", 0, &r), 0);
	CHECK_EQ(lines_with(&r, "clean"), 1);
	/* Skipped means not looked at: a clean image with a bad entry passes too (upstream). */
	CHECK(!patch_u32("a.hds", SLOT(50), 99));
	CHECK(check_keeps("a.hds", 0, 0));
	CHECK(check_keeps("a.hds", F_CLUSTERS, 0));
	CHECK(rdonly_check_is("a.hds", 0, 0));
}

TEST(check_force_passes_valid_image)
{
	static const unsigned combos[] = { F_FORCE, F_FORCE | F_CLUSTERS, F_HARD, F_HARD | F_CLUSTERS,
					   F_FORCE | F_DROP, F_FORCE | F_RDONLY, F_FORCE | F_CLUSTERS | F_RDONLY };
	struct report r;

	CHECK(!make_small("a.hds", 2));
	CHECK(!make_small("b.hds", 1));
	CHECK(!make_image("c.hds", 8192, 2));
	for (size_t i = 0; i < sizeof(combos) / sizeof(combos[0]); i++) {
		CHECK(check_keeps("a.hds", combos[i], 0));
		CHECK(check_keeps("b.hds", combos[i], 0));
		CHECK(check_keeps("c.hds", combos[i], 0));
		/* No findings at all on a consistent image. */
		CHECK_EQ(run_check("a.hds", combos[i], &r), 0);
		CHECK_EQ(r.n, 0);
	}
}

TEST(check_force_passes_grown_image)
{
	struct ploop_delta *d;
	struct report r;

	CHECK(!make_small("a.hds", 2));
	CHECK_OK(ploop_delta_open("a.hds", PLOOP_OPEN_RDWR, 0, 0, &d, err));
	CHECK_OK(ploop_delta_grow(d, 1048576, err));
	CHECK_OK(ploop_delta_close(d, err));
	CHECK(check_keeps("a.hds", F_FORCE | F_CLUSTERS, 0));
	/* The relocated clusters became BAT: nothing leaked, nothing to report. */
	CHECK_EQ(run_check("a.hds", F_FORCE | F_CLUSTERS, &r), 0);
	CHECK_EQ(r.n, 0);
}

/* ---- header rules ------------------------------------------------------------------------------------------------ */

static bool header_rejected(uint64_t off, uint32_t v)
{
	bool ok;

	unlink("h.hds");
	if (make_small("h.hds", 2) || patch_u32("h.hds", off, v))
		return false;
	ok = check_keeps("h.hds", F_HARD | F_CLUSTERS | F_DROP, PLOOP_ERR_FORMAT) &&
	     check_keeps("h.hds", 0, PLOOP_ERR_FORMAT) && rdonly_check_is("h.hds", F_FORCE, PLOOP_ERR_FORMAT);
	if (!ok)
		fprintf(stderr, "  ... header u32 at %llu = %#x\n", (unsigned long long)off, v);
	return ok;
}

TEST(check_header_rules)
{
	CHECK(header_rejected(0, 0x64636261));			/* signature */
	CHECK(header_rejected(16, 3));				/* m_Type */
	CHECK(header_rejected(28, 100));			/* cluster size */
	CHECK(header_rejected(28, 32));
	CHECK(header_rejected(48, 0));				/* first block offset 0 */
	CHECK(header_rejected(48, CS + 1));			/* ... not a cluster multiple */
	CHECK(header_rejected(32, 100));			/* m_Size below the size */
	CHECK(header_rejected(36, 0));				/* no size */
}

TEST(check_file_too_short)
{
	CHECK(!make_small("a.hds", 2));
	CHECK(!truncate("a.hds", 40));
	CHECK(check_keeps("a.hds", F_FORCE, PLOOP_ERR_FORMAT));
	CHECK(rdonly_check_is("a.hds", F_FORCE, PLOOP_ERR_FORMAT));
	CHECK(!truncate("a.hds", CB - 1));
	CHECK(check_keeps("a.hds", F_FORCE, PLOOP_ERR_FORMAT));
}

TEST(check_missing_file)
{
	struct report r;

	CHECK_EQ(run_check("nope.hds", F_FORCE, &r), PLOOP_ERR_OPEN);
	CHECK_EQ(run_check("nope.hds", F_FORCE | F_RDONLY, &r), PLOOP_ERR_OPEN);
}

/* ---- size alignment ---------------------------------------------------------------------------------------------- */

TEST(check_unaligned_size_without_force_fails)
{
	static const uint8_t tail[100] = { 0 };

	CHECK(!make_small("a.hds", 2));
	CHECK(!patch_file("a.hds", 4 * CB, tail, sizeof(tail)));
	CHECK(check_keeps("a.hds", 0, PLOOP_ERR_FORMAT));
	CHECK(check_keeps("a.hds", F_CLUSTERS | F_DROP, PLOOP_ERR_FORMAT));
}

TEST(check_unaligned_size_read_only)
{
	static const uint8_t tail[100] = { 0 };

	CHECK(!make_small("a.hds", 2));
	CHECK(!patch_file("a.hds", 4 * CB, tail, sizeof(tail)));
	CHECK(rdonly_check_is("a.hds", F_FORCE, PLOOP_ERR_FORMAT));
	CHECK(rdonly_check_is("a.hds", F_HARD, PLOOP_ERR_FORMAT));
	/* Read-only without -f: still an error, nothing was fixed. */
	CHECK(rdonly_check_is("a.hds", 0, PLOOP_ERR_FORMAT));
}

TEST(check_unaligned_size_extended_with_force)
{
	static const uint8_t tail[100] = { 0xaa };
	struct report r;
	uint8_t *buf;
	size_t len = 0;

	CHECK(!make_small("a.hds", 2));
	CHECK(!patch_file("a.hds", 4 * CB, tail, sizeof(tail)));
	CHECK_EQ(run_check("a.hds", F_FORCE, &r), 0);
	CHECK_EQ(lines_with(&r, "not aligned"), 1);
	CHECK_EQ(lines_with(&r, "Fixed"), 1);
	CHECK_EQ(file_size("a.hds"), 5 * CB);
	/* Extended, not rewritten: the partial tail is kept and the rest reads as zeros. */
	buf = read_file("a.hds", &len);
	CHECK(buf);
	CHECK_EQ(buf[4 * CB], 0xaa);
	for (size_t i = 4 * CB + 100; i < len; i++)
		CHECK(buf[i] == 0);
	free(buf);
	CHECK(check_keeps("a.hds", F_FORCE | F_CLUSTERS, 0));
	CHECK(opens("a.hds"));
}

/* ---- dirty and conversion markers -------------------------------------------------------------------------------- */

static int make_dirty(const char *path)
{
	if (make_small(path, 2))
		return -1;
	/* Flags beyond CIF_Empty too: -d zeroes the whole field, not just the bits it knows. */
	return patch_u32(path, 44, PLOOP_DISK_IN_USE) || patch_u32(path, 52, PLOOP_FLAG_EMPTY | 0x100) ||
	       patch_u32(path, 56, 5) ? -1 : 0;
}

TEST(check_dirty_without_drop)
{
	CHECK(!make_dirty("a.hds"));
	/* A dirty image is checked even without -f. */
	CHECK(check_keeps("a.hds", 0, PLOOP_ERR_IN_USE));
	CHECK(check_keeps("a.hds", F_FORCE | F_CLUSTERS, PLOOP_ERR_IN_USE));
	CHECK(rdonly_check_is("a.hds", F_FORCE, PLOOP_ERR_IN_USE));
	CHECK_EQ(peek_u32("a.hds", 44), PLOOP_DISK_IN_USE);
}

TEST(check_dirty_dropped)
{
	struct report r;

	CHECK(!make_dirty("a.hds"));
	CHECK_EQ(run_check("a.hds", F_DROP, &r), 0);
	CHECK_EQ(lines_with(&r, "dirty"), 1);
	CHECK_EQ(peek_u32("a.hds", 44), 0);
	CHECK_EQ(peek_u32("a.hds", 52), 0);
	CHECK_EQ(peek_u32("a.hds", 56), 0);
	CHECK_EQ(peek_u32("a.hds", 60), 0);
	/* Nothing else moved: the BAT still maps the data. */
	for (int i = 0; i < 3; i++)
		CHECK_EQ(peek_u32("a.hds", SLOT(small_vs[i])), i + 1);
	CHECK(opens("a.hds"));
	CHECK(check_keeps("a.hds", F_FORCE | F_CLUSTERS, 0));
}

TEST(check_dirty_drop_read_only_writes_nothing)
{
	struct report r;

	CHECK(!make_dirty("a.hds"));
	CHECK(rdonly_never_writes("a.hds"));
	/* Asked to drop it but not allowed to write: an error, not a silent success. */
	CHECK(run_check("a.hds", F_DROP | F_RDONLY, &r) > 0);
	CHECK_EQ(peek_u32("a.hds", 44), PLOOP_DISK_IN_USE);
}

TEST(check_dirty_with_fatal_entry_is_not_cleaned)
{
	CHECK(!make_dirty("a.hds"));
	CHECK(!patch_u32("a.hds", SLOT(50), 99));
	/* A fatal finding wins, and the marker stays: the image is still not trustworthy. */
	CHECK(check_keeps("a.hds", F_DROP, PLOOP_ERR_FORMAT));
	CHECK_EQ(peek_u32("a.hds", 44), PLOOP_DISK_IN_USE);
}

/* Clusters past the last one the BAT names (a crashed writer's): they go with the dirty flag, as
 * upstream trims the tail; a check that may not drop the flag, or may not write, only reports them. */
TEST(check_dirty_tail_trimmed_with_the_flag)
{
	static const uint8_t junk[100] = { 0xa5 };
	struct report r;

	CHECK(!make_dirty("a.hds"));
	/* Data in file clusters 1-3; 16 more clusters of a crashed writer's tail. */
	CHECK(!patch_file("a.hds", 20 * CB - sizeof(junk), junk, sizeof(junk)));
	CHECK_EQ(file_size("a.hds"), 20 * CB);
	CHECK(check_keeps("a.hds", F_FORCE | F_CLUSTERS, PLOOP_ERR_IN_USE));
	CHECK(rdonly_never_writes("a.hds"));
	CHECK(run_check("a.hds", F_DROP | F_CLUSTERS | F_RDONLY, &r) > 0);
	CHECK_EQ(lines_with(&r, "16 unreferenced cluster(s) at the end, from block 4: want to trim tail"), 1);
	CHECK_EQ(run_check("a.hds", F_DROP | F_CLUSTERS, &r), 0);
	CHECK_EQ(lines_with(&r, "Trimmed the tail: 16 unreferenced cluster(s) at the end"), 1);
	CHECK_EQ(file_size("a.hds"), 4 * CB);
	CHECK_EQ(peek_u32("a.hds", 44), 0);
	for (int i = 0; i < 3; i++)
		CHECK_EQ(peek_u32("a.hds", SLOT(small_vs[i])), i + 1);
	CHECK(check_keeps("a.hds", F_FORCE | F_CLUSTERS, 0));
	CHECK(opens("a.hds"));
}

TEST(check_clean_tail_is_only_shown)
{
	static const uint8_t junk[4] = { 1, 2, 3, 4 };
	struct report r;

	CHECK(!make_small("a.hds", 2));
	CHECK(!patch_file("a.hds", 6 * CB - sizeof(junk), junk, sizeof(junk)));
	CHECK(check_keeps("a.hds", F_FORCE | F_CLUSTERS | F_DROP, 0));
	CHECK_EQ(run_check("a.hds", F_FORCE | F_CLUSTERS, &r), 0);
	CHECK_EQ(lines_with(&r, "2 unreferenced cluster(s) at the end, from block 4; they are harmless"), 1);
	CHECK_EQ(file_size("a.hds"), 6 * CB);
}

TEST(check_closed_v21_is_clean)
{
	CHECK(!make_small("a.hds", 2));
	CHECK(!patch_u32("a.hds", 44, PLOOP_DISK_CLOSED_V21));
	/* HEAD treats only "Ynot" as dirty. */
	CHECK(check_keeps("a.hds", 0, 0));
	CHECK(check_keeps("a.hds", F_FORCE | F_CLUSTERS, 0));
}

TEST(check_conversion_flag)
{
	CHECK(!make_small("a.hds", 2));
	CHECK(!patch_u32("a.hds", 44, PLOOP_DISK_IN_USE));
	CHECK(!patch_u32("a.hds", 52, PLOOP_FLAG_FMT_CONVERT));
	CHECK(check_keeps("a.hds", 0, PLOOP_ERR_BUSY));
	CHECK(check_keeps("a.hds", F_DROP, PLOOP_ERR_BUSY));
	CHECK(check_keeps("a.hds", F_HARD | F_CLUSTERS | F_DROP, PLOOP_ERR_BUSY));
	CHECK(rdonly_check_is("a.hds", F_FORCE | F_DROP, PLOOP_ERR_BUSY));
	/* Forced on a clean image with the flag. */
	CHECK(!patch_u32("a.hds", 44, 0));
	CHECK(check_keeps("a.hds", F_FORCE, PLOOP_ERR_BUSY));
	CHECK(rdonly_never_writes("a.hds"));
}

/* ---- BAT entries ------------------------------------------------------------------------------------------------- */

TEST(check_padding_entries_zeroed)
{
	struct report r;

	CHECK(!make_small("a.hds", 2));
	CHECK(!patch_u32("a.hds", SLOT(128), 2));
	CHECK(!patch_u32("a.hds", SLOT(8175), 0xffffffffu));
	CHECK_EQ(run_check("a.hds", F_FORCE | F_CLUSTERS, &r), 0);
	CHECK_EQ(lines_with(&r, "beyond block device size"), 2);
	CHECK_EQ(lines_with(&r, "FATAL"), 0);
	CHECK_EQ(peek_u32("a.hds", SLOT(128)), 0);
	CHECK_EQ(peek_u32("a.hds", SLOT(8175)), 0);
	for (int i = 0; i < 3; i++)
		CHECK_EQ(peek_u32("a.hds", SLOT(small_vs[i])), i + 1);
	CHECK_EQ(run_check("a.hds", F_FORCE | F_CLUSTERS, &r), 0);
	CHECK_EQ(r.n, 0);
}

TEST(check_padding_entries_read_only)
{
	struct report r;

	CHECK(!make_small("a.hds", 2));
	CHECK(!patch_u32("a.hds", SLOT(200), 3));
	CHECK(rdonly_check_is("a.hds", F_FORCE, PLOOP_ERR_FORMAT));
	CHECK_EQ(run_check("a.hds", F_FORCE | F_RDONLY, &r), PLOOP_ERR_FORMAT);
	CHECK_EQ(lines_with(&r, "beyond block device size"), 1);
	CHECK_EQ(lines_with(&r, "Skipped"), 1);
	CHECK(rdonly_never_writes("a.hds"));
	/* Not looked at without -f. */
	CHECK(check_keeps("a.hds", 0, 0));
}

TEST(check_padding_past_m_size_in_larger_bat)
{
	/* Entries between the virtual size and m_Size are padding too. */
	CHECK(!make_small("a.hds", 2));
	CHECK(!patch_u32("a.hds", 32, 200));
	CHECK(!patch_u32("a.hds", SLOT(150), 1));
	CHECK(rdonly_check_is("a.hds", F_FORCE, PLOOP_ERR_FORMAT));
	{
		struct report r;

		CHECK_EQ(run_check("a.hds", F_FORCE, &r), 0);
		CHECK_EQ(lines_with(&r, "beyond block device size"), 1);
	}
	CHECK_EQ(peek_u32("a.hds", SLOT(150)), 0);
}

static void entry_fatal_case(int version, uint64_t v, uint32_t value)
{
	struct report r;

	CHECK(!make_small("a.hds", version));
	CHECK(!patch_u32("a.hds", SLOT(v), value));
	/* FATAL, kept as it is without -F. */
	CHECK(check_keeps("a.hds", F_FORCE, PLOOP_ERR_FORMAT));
	CHECK(check_keeps("a.hds", F_FORCE | F_CLUSTERS | F_DROP, PLOOP_ERR_FORMAT));
	CHECK_EQ(run_check("a.hds", F_FORCE, &r), PLOOP_ERR_FORMAT);
	CHECK_EQ(lines_with(&r, "FATAL"), 1);
	CHECK(r.n >= 2);
	CHECK(rdonly_never_writes("a.hds"));
	CHECK(rdonly_check_is("a.hds", F_HARD, PLOOP_ERR_FORMAT));
	/* -F drops the entry, and only that one. */
	CHECK_EQ(run_check("a.hds", F_HARD, &r), 0);
	CHECK_EQ(lines_with(&r, "Fixed"), 1);
	CHECK_EQ(peek_u32("a.hds", SLOT(v)), 0);
	for (int i = 0; i < 3; i++)
		if (small_vs[i] != v)
			CHECK_EQ(peek_u32("a.hds", SLOT(small_vs[i])), version == 1 ? (i + 1) * CS : (uint32_t)i + 1);
	CHECK(check_keeps("a.hds", F_FORCE | F_CLUSTERS, 0));
	CHECK(opens("a.hds"));
}

TEST(check_entry_past_eof)
{
	entry_fatal_case(2, 50, 4);
}

TEST(check_entry_far_past_eof)
{
	entry_fatal_case(2, 0, 0x7ffffff0u);
}

TEST(check_entry_past_eof_v1)
{
	entry_fatal_case(1, 50, 4 * CS);
}

TEST(check_entry_v1_not_cluster_aligned)
{
	entry_fatal_case(1, 3, CS + 1);
}

TEST(check_entry_v1_not_cluster_aligned_other)
{
	entry_fatal_case(1, 127, 3 * CS - 8);
}

TEST(check_entry_invalid_marker)
{
	entry_fatal_case(2, 3, 0xffffffffu);
}

TEST(check_duplicate_entries_need_clusters_flag)
{
	struct report r;

	CHECK(!make_small("a.hds", 2));
	CHECK(!patch_u32("a.hds", SLOT(90), 2));	/* v=7 holds cluster 2 */
	/* Without -c duplicates are not looked for. */
	CHECK(check_keeps("a.hds", F_FORCE, 0));
	CHECK_EQ(run_check("a.hds", F_FORCE | F_CLUSTERS, &r), PLOOP_ERR_FORMAT);
	CHECK_EQ(lines_with(&r, "more than once"), 1);
	CHECK_EQ(lines_with(&r, "FATAL"), 1);
	/* Never fixed, not even with -F. */
	CHECK(check_keeps("a.hds", F_FORCE | F_CLUSTERS, PLOOP_ERR_FORMAT));
	CHECK(check_keeps("a.hds", F_HARD | F_CLUSTERS, PLOOP_ERR_FORMAT));
	CHECK(check_keeps("a.hds", F_HARD | F_CLUSTERS | F_DROP, PLOOP_ERR_FORMAT));
	CHECK(rdonly_check_is("a.hds", F_FORCE | F_CLUSTERS, PLOOP_ERR_FORMAT));
	CHECK(rdonly_never_writes("a.hds"));
}

TEST(check_duplicate_entries_v1)
{
	CHECK(!make_small("a.hds", 1));
	CHECK(!patch_u32("a.hds", SLOT(0), 3 * CS));
	CHECK(check_keeps("a.hds", F_HARD | F_CLUSTERS, PLOOP_ERR_FORMAT));
	CHECK(rdonly_never_writes("a.hds"));
}

TEST(check_entry_into_bat_area)
{
	static const uint64_t vs[] = { 0 };
	struct report r;

	/* 512 MiB of 32 KiB clusters: three BAT clusters, v=0 in cluster 3. */
	CHECK(!make_image("a.hds", 1048576, 2));
	CHECK(!write_clusters("a.hds", vs, 1));
	CHECK(!patch_u32("a.hds", SLOT(9000), 1));
	CHECK(!patch_u32("a.hds", SLOT(12000), 2));
	CHECK_EQ(run_check("a.hds", F_FORCE | F_CLUSTERS, &r), PLOOP_ERR_FORMAT);
	CHECK_EQ(lines_with(&r, "header and BAT"), 2);
	CHECK_EQ(lines_with(&r, "FATAL"), 2);
	CHECK(check_keeps("a.hds", F_HARD | F_CLUSTERS, PLOOP_ERR_FORMAT));
	CHECK(rdonly_check_is("a.hds", F_FORCE | F_CLUSTERS, PLOOP_ERR_FORMAT));
	CHECK(rdonly_never_writes("a.hds"));
}

TEST(check_several_findings_one_line_each)
{
	struct report r;

	CHECK(!make_small("a.hds", 2));
	CHECK(!patch_u32("a.hds", SLOT(200), 1));	/* padding */
	CHECK(!patch_u32("a.hds", SLOT(50), 40));	/* past EOF */
	CHECK(!patch_u32("a.hds", SLOT(60), 3));	/* duplicate of v=100 */
	CHECK(!make_small("b.hds", 1));
	CHECK(!patch_u32("b.hds", SLOT(0), 65));	/* v1, not aligned */
	CHECK(!patch_u32("b.hds", SLOT(1), 0xffffffffu));
	CHECK(rdonly_check_is("a.hds", F_FORCE | F_CLUSTERS, PLOOP_ERR_FORMAT));
	CHECK_EQ(run_check("a.hds", F_FORCE | F_CLUSTERS | F_RDONLY, &r), PLOOP_ERR_FORMAT);
	CHECK_EQ(lines_with(&r, "beyond block device size"), 1);
	CHECK_EQ(lines_with(&r, "beyond EOF"), 1);
	CHECK_EQ(lines_with(&r, "more than once"), 1);
	CHECK_EQ(lines_with(&r, "FATAL"), 2);
	CHECK_EQ(lines_with(&r, "Skipped"), 1);
	CHECK_EQ(r.n, 6);
	/* Both bad v1 entries are reported, not just the first. */
	CHECK_EQ(run_check("b.hds", F_FORCE | F_RDONLY, &r), PLOOP_ERR_FORMAT);
	CHECK_EQ(lines_with(&r, "FATAL"), 2);
	/* A NULL report callback is fine. */
	{
		struct ploop_check_params p = { .flags = F_FORCE | F_CLUSTERS | F_RDONLY };

		CHECK_FAILS(PLOOP_ERR_FORMAT, ploop_check_delta("a.hds", &p, err));
	}
	CHECK(rdonly_never_writes("a.hds"));
	CHECK(rdonly_never_writes("b.hds"));
}

/* ---- CIF_Empty --------------------------------------------------------------------------------------------------- */

TEST(check_cif_empty_on_non_empty_image)
{
	struct report r;

	CHECK(!make_small("a.hds", 2));
	CHECK(!patch_u32("a.hds", 52, PLOOP_FLAG_EMPTY));
	/* 1.15: a write error in read-only mode. */
	CHECK(rdonly_check_is("a.hds", F_FORCE, PLOOP_ERR_WRITE));
	CHECK(rdonly_never_writes("a.hds"));
	CHECK_EQ(run_check("a.hds", F_FORCE, &r), 0);
	CHECK_EQ(lines_with(&r, "CIF_Empty"), 1);
	CHECK_EQ(peek_u32("a.hds", 52), 0);
	CHECK(check_keeps("a.hds", F_FORCE | F_CLUSTERS, 0));
}

TEST(check_cif_empty_on_empty_image_is_right)
{
	CHECK(!make_image("a.hds", 8192, 2));
	CHECK(check_keeps("a.hds", F_FORCE | F_CLUSTERS, 0));
	CHECK(rdonly_check_is("a.hds", F_FORCE | F_CLUSTERS, 0));
	CHECK_EQ(peek_u32("a.hds", 52), PLOOP_FLAG_EMPTY);
}

TEST(check_cif_empty_only_padding_set)
{
	/* A stray padding slot is not data: the image is still empty once it is zeroed. */
	CHECK(!make_image("a.hds", 8192, 2));
	CHECK(!patch_u32("a.hds", SLOT(300), 1));
	CHECK_EQ(peek_u32("a.hds", 52), PLOOP_FLAG_EMPTY);
	{
		struct report r;

		CHECK_EQ(run_check("a.hds", F_FORCE, &r), 0);
		CHECK_EQ(lines_with(&r, "CIF_Empty"), 0);
	}
	CHECK_EQ(peek_u32("a.hds", 52), PLOOP_FLAG_EMPTY);
	CHECK_EQ(peek_u32("a.hds", SLOT(300)), 0);
}

/* ---- locks ------------------------------------------------------------------------------------------------------- */

TEST(check_respects_image_locks)
{
	struct ploop_delta *d;
	struct report r;

	CHECK(!make_small("a.hds", 2));
	CHECK_OK(ploop_delta_open("a.hds", PLOOP_OPEN_RDWR, 0, 0, &d, err));
	CHECK_EQ(run_check("a.hds", F_FORCE, &r), PLOOP_ERR_LOCK);
	CHECK_EQ(run_check("a.hds", F_FORCE | F_RDONLY, &r), PLOOP_ERR_LOCK);
	CHECK_OK(ploop_delta_close(d, err));
	CHECK_OK(ploop_delta_open("a.hds", 0, 0, 0, &d, err));
	CHECK_EQ(run_check("a.hds", F_FORCE | F_RDONLY, &r), 0);
	CHECK_EQ(run_check("a.hds", F_FORCE, &r), PLOOP_ERR_LOCK);
	CHECK_OK(ploop_delta_close(d, err));
}

/* ---- raw --------------------------------------------------------------------------------------------------------- */

TEST(check_raw_size)
{
	struct ploop_check_params p = { .flags = PLOOP_CHECK_RAW | F_FORCE, .raw_cluster_sectors = CS };
	static const uint8_t tail[1] = { 0 };
	uint8_t junk[CB];

	/* Content is not looked at: a raw file with anything in it passes if its size is right. */
	fill_pattern(junk, sizeof(junk), 9);
	CHECK(!write_file("a.img", junk, sizeof(junk)));
	CHECK_OK(ploop_check_delta("a.img", &p, err));
	p.flags |= F_RDONLY;
	CHECK_OK(ploop_check_delta("a.img", &p, err));
	/* A partial last cluster is noticed and accepted, as 1.15 does, and left as it is. */
	CHECK(!patch_file("a.img", CB, tail, 1));
	for (unsigned f = 0; f < 4; f++) {
		struct report r = { 0 };
		struct ploop_check_params q = { .flags = PLOOP_CHECK_RAW | (f & 1 ? F_FORCE : 0) | (f & 2 ? F_RDONLY : 0),
						.raw_cluster_sectors = CS,
						.report = collect,
						.ctx = &r };

		CHECK_OK(ploop_check_delta("a.img", &q, err));
		CHECK_EQ(lines_with(&r, "not a multiple of the cluster size"), 1);
		CHECK_EQ(file_size("a.img"), CB + 1);
	}
	/* A cluster size is required and must be valid. */
	p.raw_cluster_sectors = 0;
	CHECK_FAILS(PLOOP_ERR_PARAM, ploop_check_delta("a.img", &p, err));
	p.raw_cluster_sectors = 100;
	CHECK_FAILS(PLOOP_ERR_PARAM, ploop_check_delta("a.img", &p, err));
	/* 64 KiB clusters: a 32 KiB file is not a whole cluster, and is accepted all the same. */
	CHECK(!truncate("a.img", CB));
	p.raw_cluster_sectors = 2 * CS;
	CHECK_OK(ploop_check_delta("a.img", &p, err));
}

TEST(check_raw_of_created_raw_image)
{
	struct ploop_create_params cp = { .size_sectors = 4096, .cluster_sectors = 256, .mode = PLOOP_MODE_RAW };
	struct ploop_check_params p = { .flags = PLOOP_CHECK_RAW, .raw_cluster_sectors = 256 };

	CHECK_OK(ploop_delta_create("a.img", &cp, err));
	CHECK_OK(ploop_check_delta("a.img", &p, err));
	/* The same file checked as a ploop delta is not one. */
	p.flags = F_FORCE | F_RDONLY;
	CHECK_FAILS(PLOOP_ERR_FORMAT, ploop_check_delta("a.img", &p, err));
}

/* ---- the descriptor form ----------------------------------------------------------------------------------------- */

struct set {
	char path[3][256];	/* base, middle, top */
	char guid[3][PLOOP_GUID_BUF];
};

static int write_top(uint64_t v)
{
	struct ploop_error e = { 0 };
	struct ploop_descriptor *dd = NULL;
	struct ploop_chain *c = NULL;
	uint8_t *buf = malloc(CB);
	int r = -1;

	if (!buf || ploop_descriptor_read("DiskDescriptor.xml", &dd, &e) ||
	    ploop_descriptor_open_chain(dd, NULL, PLOOP_OPEN_RDWR, &c, &e))
		goto out;
	fill_pattern(buf, CB, v + 1);
	if (ploop_chain_write(c, buf, CB, v * CB, &e))
		goto out;
	r = 0;
out:
	if (ploop_chain_close(c, &e))
		r = -1;
	ploop_descriptor_free(dd);
	free(buf);
	if (r)
		fprintf(stderr, "  write: %s\n", e.msg);
	return r;
}

/* base (v=1) <- middle (v=2) <- top (v=3), 4 MiB of 32 KiB clusters. */
static int make_set(struct set *s)
{
	struct ploop_create_params p = { .size_sectors = 8192, .cluster_sectors = CS };
	struct ploop_error e = { 0 };
	struct ploop_descriptor *dd = NULL;
	int idx[4], n = 0;

	if (ploop_init_image("root.hds", &p, &e) || write_top(1) ||
	    ploop_snapshot("DiskDescriptor.xml", NULL, s->guid[0], &e) || write_top(2) ||
	    ploop_snapshot("DiskDescriptor.xml", NULL, s->guid[1], &e) || write_top(3) ||
	    ploop_descriptor_read("DiskDescriptor.xml", &dd, &e) || ploop_descriptor_chain(dd, NULL, idx, &n, &e) ||
	    n != 3) {
		fprintf(stderr, "  make_set: %s (n %d)\n", e.msg, n);
		ploop_descriptor_free(dd);
		return -1;
	}
	for (int i = 0; i < 3; i++)
		snprintf(s->path[i], sizeof(s->path[i]), "%s", dd->images[idx[i]].path);
	strcpy(s->guid[2], PLOOP_TOP_GUID);
	ploop_descriptor_free(dd);
	return 0;
}

static int check_dd(const char *guid, unsigned flags, struct report *r)
{
	struct ploop_check_params p = { .flags = flags, .report = collect, .ctx = r };
	struct ploop_error e = { 0 };
	int rc;

	memset(r, 0, sizeof(*r));
	rc = ploop_check_descriptor("DiskDescriptor.xml", guid, &p, &e);
	if (rc != e.status || (rc && (!e.msg[0] || strchr(e.msg, '\n')))) {
		fprintf(stderr, "  check DiskDescriptor.xml: rc %d, status %d, message '%s'\n", rc, e.status, e.msg);
		return -1000;
	}
	return rc;
}

TEST(check_descriptor_clean_chain)
{
	struct set s;
	struct snap before[3];
	struct report r;

	CHECK(!make_set(&s));
	for (int i = 0; i < 3; i++) {
		CHECK(check_keeps(s.path[i], F_FORCE | F_CLUSTERS, 0));
		CHECK(take(s.path[i], &before[i]));
	}
	CHECK_EQ(check_dd(NULL, 0, &r), 0);
	CHECK_EQ(check_dd(NULL, F_FORCE, &r), 0);
	CHECK_EQ(check_dd(NULL, F_FORCE | F_RDONLY, &r), 0);
	for (int i = 0; i < 3; i++)
		CHECK(unchanged(s.path[i], &before[i]));
}

TEST(check_descriptor_drops_dirty_top)
{
	struct set s;
	struct snap base, middle;
	struct report r;

	CHECK(!make_set(&s));
	CHECK(!patch_u32(s.path[2], 44, PLOOP_DISK_IN_USE));
	CHECK(take(s.path[0], &base));
	CHECK(take(s.path[1], &middle));
	/* -d is implied by the descriptor form. */
	CHECK_EQ(check_dd(NULL, 0, &r), 0);
	CHECK_EQ(peek_u32(s.path[2], 44), 0);
	CHECK(unchanged(s.path[0], &base));
	CHECK(unchanged(s.path[1], &middle));
	CHECK(check_keeps(s.path[2], F_FORCE | F_CLUSTERS, 0));
}

TEST(check_descriptor_dirty_top_read_only)
{
	struct set s;
	struct snap top;
	struct report r;

	CHECK(!make_set(&s));
	CHECK(!patch_u32(s.path[2], 44, PLOOP_DISK_IN_USE));
	CHECK(take(s.path[2], &top));
	CHECK(check_dd(NULL, F_RDONLY, &r) > 0);
	CHECK(unchanged(s.path[2], &top));
}

TEST(check_descriptor_checks_lower_deltas_read_only)
{
	struct set s;
	struct snap base;
	struct report r;

	CHECK(!make_set(&s));
	/* The base gets an entry past its end: fatal, and -F may not fix it in a lower delta. */
	CHECK(!patch_u32(s.path[0], SLOT(50), 40));
	CHECK(take(s.path[0], &base));
	CHECK_EQ(check_dd(NULL, F_FORCE, &r), PLOOP_ERR_FORMAT);
	CHECK(lines_with(&r, "beyond EOF") >= 1);
	CHECK_EQ(check_dd(NULL, F_HARD, &r), PLOOP_ERR_FORMAT);
	CHECK(unchanged(s.path[0], &base));
}

TEST(check_descriptor_forces_cluster_check)
{
	struct set s;
	struct snap middle;
	struct report r;

	CHECK(!make_set(&s));
	/* A duplicate in the middle delta is found although -c is not passed. */
	CHECK_EQ(peek_u32(s.path[1], SLOT(2)), 1);
	CHECK(!patch_u32(s.path[1], SLOT(90), 1));
	CHECK(take(s.path[1], &middle));
	CHECK_EQ(check_dd(NULL, F_FORCE, &r), PLOOP_ERR_FORMAT);
	CHECK_EQ(lines_with(&r, "more than once"), 1);
	CHECK(unchanged(s.path[1], &middle));
}

TEST(check_descriptor_repairs_top_only)
{
	struct set s;
	struct snap middle;
	struct report r;

	CHECK(!make_set(&s));
	CHECK(!patch_u32(s.path[2], SLOT(300), 1));	/* padding in the top: repaired */
	CHECK(!patch_u32(s.path[1], SLOT(300), 1));	/* padding in the middle: read-only */
	CHECK(take(s.path[1], &middle));
	CHECK_EQ(check_dd(NULL, F_FORCE, &r), PLOOP_ERR_FORMAT);
	CHECK_EQ(peek_u32(s.path[2], SLOT(300)), 0);
	CHECK(unchanged(s.path[1], &middle));
	CHECK_EQ(lines_with(&r, "Skipped"), 1);
}

TEST(check_descriptor_up_to_guid)
{
	struct set s;
	struct snap top;
	struct report r;

	CHECK(!make_set(&s));
	/* Only base and middle are checked; the middle is the writable end of that chain. */
	CHECK(!patch_u32(s.path[2], SLOT(50), 40));
	CHECK(!patch_u32(s.path[1], 44, PLOOP_DISK_IN_USE));
	CHECK(take(s.path[2], &top));
	CHECK_EQ(check_dd(s.guid[1], F_FORCE, &r), 0);
	CHECK_EQ(peek_u32(s.path[1], 44), 0);
	CHECK(unchanged(s.path[2], &top));
	CHECK_EQ(check_dd(NULL, F_FORCE, &r), PLOOP_ERR_FORMAT);
	/* Unbraced GUIDs are fine; bad and unknown ones are not. */
	{
		char bare[PLOOP_GUID_BUF];

		snprintf(bare, sizeof(bare), "%.36s", s.guid[0] + 1);
		CHECK_EQ(check_dd(bare, F_FORCE, &r), 0);
	}
	CHECK_EQ(check_dd("not-a-guid", F_FORCE, &r), PLOOP_ERR_PARAM);
	CHECK_EQ(check_dd("{11111111-2222-4333-8444-555555555555}", F_FORCE, &r), PLOOP_ERR_NOSNAP);
}

TEST(check_descriptor_blocksize_mismatch)
{
	struct set s;
	struct report r;
	char *xml, *at, *fixed = NULL;
	size_t len = 0;

	CHECK(!make_set(&s));
	xml = read_file("DiskDescriptor.xml", &len);
	CHECK(xml);
	xml[len] = '\0';
	at = strstr(xml, "<Blocksize>64</Blocksize>");
	CHECK(at);
	*at = '\0';
	CHECK(asprintf(&fixed, "%s<Blocksize>128</Blocksize>%s", xml, at + strlen("<Blocksize>64</Blocksize>")) > 0);
	CHECK(!write_file("DiskDescriptor.xml", fixed, strlen(fixed)));
	free(fixed);
	free(xml);
	CHECK_EQ(check_dd(NULL, F_FORCE, &r), PLOOP_ERR_DESCRIPTOR);
	CHECK_EQ(check_dd(NULL, F_FORCE | F_RDONLY, &r), PLOOP_ERR_DESCRIPTOR);
}

TEST(check_descriptor_missing)
{
	struct report r;

	CHECK_EQ(check_dd(NULL, F_FORCE, &r), PLOOP_ERR_DESCRIPTOR);
}
