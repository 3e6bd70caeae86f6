/* Unit tests of single deltas: every validation rule of ploop_delta_open, image locking, the dirty
 * and CIF_Empty markers, and offline grow including the relocation of data out of a growing BAT. */
#include <endian.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

#define CS 64u				/* cluster of the test images: 64 sectors */
#define CB (CS * 512u)			/* 32 KiB */
#define SLOT(v) (64 + 4 * (uint64_t)(v))	/* file offset of the BAT entry of virtual cluster v */

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

/* Writes one whole cluster of pattern (seed = v + 1) to each virtual cluster of @vs, in order, so
 * that the i-th of them lands in file cluster l1 + i of an empty image. */
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

/* Whether cluster @v of the single-delta image @path reads as pattern v + 1 (or zeros when !@data). */
static bool cluster_is(struct ploop_chain *c, uint64_t v, bool data)
{
	struct ploop_error e = { 0 };
	uint8_t *want = calloc(1, CB), *got = malloc(CB);
	bool ok;

	if (data)
		fill_pattern(want, CB, v + 1);
	ok = want && got && !ploop_chain_read(c, got, CB, v * CB, &e) && !memcmp(got, want, CB);
	if (!ok)
		fprintf(stderr, "  cluster %llu does not hold %s %s\n", (unsigned long long)v,
			data ? "its pattern" : "zeros",
			e.msg);
	free(want);
	free(got);
	return ok;
}

static int open_rc(const char *path, unsigned flags)
{
	struct ploop_error e = { 0 };
	struct ploop_delta *d = NULL;
	int r = ploop_delta_open(path, flags, 0, 0, &d, &e);

	if (!r)
		ploop_delta_close(d, NULL);
	else if (!e.msg[0] || strchr(e.msg, '\n'))
		return -1000;	/* every failure names its cause in one line */
	return r;
}

/* ---- the images the tests start from are valid ---------------------------------------------------- */

TEST(delta_open_valid_image_info)
{
	struct ploop_delta *d;
	struct ploop_delta_info info;
	uint64_t off = 0;

	CHECK(!make_small("a.hds", 2));
	CHECK_OK(ploop_delta_open("a.hds", 0, 0, 0, &d, err));
	ploop_delta_get_info(d, &info);
	CHECK_EQ(info.version, 2);
	CHECK_EQ(info.size_sectors, 8192);
	CHECK_EQ(info.cluster_sectors, CS);
	CHECK_EQ(info.bat_entries, 128);
	CHECK_EQ(info.bat_clusters, 1);
	CHECK_EQ(info.file_size, 4 * CB);
	CHECK_EQ(info.allocated_clusters, 3);
	CHECK_EQ(info.disk_in_use, 0);
	CHECK_EQ(info.flags, 0);
	for (int i = 0; i < 3; i++) {
		CHECK(ploop_delta_lookup(d, small_vs[i], &off));
		CHECK_EQ(off, (uint64_t)(i + 1) * CB);
	}
	CHECK(!ploop_delta_lookup(d, 0, &off));
	CHECK(!ploop_delta_lookup(d, 127, &off));
	CHECK(!ploop_delta_lookup(d, 128, &off));
	CHECK_OK(ploop_delta_close(d, err));
}

TEST(delta_open_missing_file)
{
	struct ploop_delta *d;

	CHECK_FAILS(PLOOP_ERR_OPEN, ploop_delta_open("nope.hds", 0, 0, 0, &d, err));
	CHECK(d == NULL);
}

/* ---- header rules: one test per rule ---------------------------------------------------------------- */

TEST(delta_open_wrong_signature)
{
	struct ploop_delta *d;

	CHECK(!make_small("a.hds", 2));
	CHECK(!patch_file("a.hds", 15, "x", 1));
	CHECK_FAILS(PLOOP_ERR_FORMAT, ploop_delta_open("a.hds", 0, 0, 0, &d, err));
	CHECK(d == NULL);
	/* A mix of the two signatures is neither. */
	CHECK(!patch_file("a.hds", 0, "WithoutFreSpacEx", 16));
	CHECK_FAILS(PLOOP_ERR_FORMAT, ploop_delta_open("a.hds", 0, 0, 0, &d, err));
	CHECK_FAILS(PLOOP_ERR_FORMAT,
		    ploop_delta_open("a.hds", PLOOP_OPEN_HEADER_ONLY | PLOOP_OPEN_ALLOW_DIRTY, 0, 0, &d, err));
}

TEST(delta_open_wrong_type)
{
	static const uint32_t bad[] = { 0, 1, 3, 0x02000000, UINT32_MAX };

	CHECK(!make_small("a.hds", 2));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		CHECK(!patch_u32("a.hds", 16, bad[i]));
		CHECK_EQ(open_rc("a.hds", 0), PLOOP_ERR_FORMAT);
		CHECK_EQ(open_rc("a.hds", PLOOP_OPEN_HEADER_ONLY), PLOOP_ERR_FORMAT);
	}
	CHECK(!patch_u32("a.hds", 16, 2));
	CHECK_EQ(open_rc("a.hds", 0), 0);
}

TEST(delta_open_invalid_cluster_size)
{
	static const uint32_t bad[] = { 0, 32, 63, 65, 96, 262144, UINT32_MAX };

	CHECK(!make_small("a.hds", 2));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		CHECK(!patch_u32("a.hds", 28, bad[i]));
		CHECK_EQ(open_rc("a.hds", 0), PLOOP_ERR_FORMAT);
	}
}

TEST(delta_open_first_block_offset_zero)
{
	CHECK(!make_small("a.hds", 2));
	CHECK(!patch_u32("a.hds", 48, 0));
	CHECK_EQ(open_rc("a.hds", 0), PLOOP_ERR_FORMAT);
	CHECK_EQ(open_rc("a.hds", PLOOP_OPEN_HEADER_ONLY), PLOOP_ERR_FORMAT);
}

TEST(delta_open_first_block_offset_not_cluster_multiple)
{
	static const uint32_t bad[] = { 1, 32, 63, 65, 96, 127 };

	CHECK(!make_small("a.hds", 2));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		CHECK(!patch_u32("a.hds", 48, bad[i]));
		CHECK_EQ(open_rc("a.hds", 0), PLOOP_ERR_FORMAT);
	}
}

TEST(delta_open_larger_first_block_offset_is_accepted)
{
	/* Userspace tolerates a larger than minimal FBO (§1.3) when the file holds it; clusters below
	 * it then belong to the header/BAT area and no entry may point there. */
	CHECK(!make_image("a.hds", 8192, 2));
	CHECK(!patch_u32("a.hds", 48, 2 * CS));
	CHECK_EQ(open_rc("a.hds", 0), PLOOP_ERR_FORMAT);	/* the file is one cluster: too short */
	CHECK(!make_small("c.hds", 2));
	CHECK(!patch_u32("c.hds", 48, 2 * CS));
	CHECK_EQ(open_rc("c.hds", 0), PLOOP_ERR_FORMAT);	/* v=3 now points into the BAT area */
	CHECK(!patch_u32("c.hds", SLOT(3), 0));
	CHECK_EQ(open_rc("c.hds", 0), 0);
}

TEST(delta_open_m_size_too_small_for_size)
{
	CHECK(!make_small("a.hds", 2));
	CHECK(!patch_u32("a.hds", 32, 127));
	CHECK_EQ(open_rc("a.hds", 0), PLOOP_ERR_FORMAT);
	CHECK(!patch_u32("a.hds", 32, 0));
	CHECK_EQ(open_rc("a.hds", 0), PLOOP_ERR_FORMAT);
	/* A virtual size that is not a whole cluster still needs the cluster it touches. */
	CHECK(!patch_u32("a.hds", 32, 128));
	CHECK(!patch_u32("a.hds", 36, 8193));
	CHECK_EQ(open_rc("a.hds", 0), PLOOP_ERR_FORMAT);
	/* m_Size larger than needed is fine (slots past the size are padding). */
	CHECK(!patch_u32("a.hds", 36, 8192));
	CHECK(!patch_u32("a.hds", 32, 200));
	CHECK_EQ(open_rc("a.hds", 0), 0);
}

TEST(delta_open_zero_virtual_size)
{
	CHECK(!make_small("a.hds", 2));
	CHECK(!patch_u32("a.hds", 36, 0));
	CHECK_EQ(open_rc("a.hds", 0), PLOOP_ERR_FORMAT);
}

TEST(delta_open_v2_uses_the_whole_u64_size)
{
	/* Bytes 40..43 are the upper half of the v2 size: set, the size needs 2^32+ BAT entries. */
	CHECK(!make_small("a.hds", 2));
	CHECK(!patch_u32("a.hds", 40, 1));
	CHECK_EQ(open_rc("a.hds", 0), PLOOP_ERR_FORMAT);
}

TEST(delta_open_v1_ignores_the_unused_size_half)
{
	struct ploop_delta *d;
	struct ploop_delta_info info;

	CHECK(!make_small("a.hds", 1));
	CHECK(!patch_u32("a.hds", 40, 0xdeadbeef));
	CHECK_OK(ploop_delta_open("a.hds", 0, 0, 0, &d, err));
	ploop_delta_get_info(d, &info);
	CHECK_EQ(info.version, 1);
	CHECK_EQ(info.size_sectors, 8192);
	CHECK_EQ(info.allocated_clusters, 3);
	CHECK_OK(ploop_delta_close(d, err));
}

TEST(delta_open_bat_does_not_fit_before_fbo)
{
	/* 8177 entries + 16 header slots need a second 32 KiB BAT cluster; the FBO gives one. */
	CHECK(!make_small("a.hds", 2));
	CHECK(!patch_u32("a.hds", 32, 8177));
	CHECK_EQ(open_rc("a.hds", 0), PLOOP_ERR_FORMAT);
	CHECK_EQ(open_rc("a.hds", PLOOP_OPEN_HEADER_ONLY), PLOOP_ERR_FORMAT);
	/* Exactly full is fine. */
	CHECK(!patch_u32("a.hds", 32, 8176));
	CHECK_EQ(open_rc("a.hds", 0), 0);
	CHECK(!patch_u32("a.hds", 32, UINT32_MAX));
	CHECK_EQ(open_rc("a.hds", 0), PLOOP_ERR_FORMAT);
}

TEST(delta_open_file_shorter_than_bat_area)
{
	/* 512 MiB of 32 KiB clusters: 16384 entries, three BAT clusters. */
	CHECK(!make_image("a.hds", 1048576, 2));
	CHECK_EQ(file_size("a.hds"), 3 * CB);
	CHECK_EQ(open_rc("a.hds", 0), 0);
	CHECK(!truncate("a.hds", 3 * CB - 1));
	CHECK_EQ(open_rc("a.hds", 0), PLOOP_ERR_FORMAT);
	CHECK_EQ(open_rc("a.hds", PLOOP_OPEN_HEADER_ONLY), PLOOP_ERR_FORMAT);
	CHECK(!truncate("a.hds", CB));
	CHECK_EQ(open_rc("a.hds", 0), PLOOP_ERR_FORMAT);
	CHECK(!truncate("a.hds", 64));
	CHECK_EQ(open_rc("a.hds", 0), PLOOP_ERR_FORMAT);
}

TEST(delta_open_file_shorter_than_header)
{
	CHECK(!make_small("a.hds", 2));
	CHECK(!truncate("a.hds", 63));
	CHECK_EQ(open_rc("a.hds", 0), PLOOP_ERR_FORMAT);
	CHECK_EQ(open_rc("a.hds", PLOOP_OPEN_HEADER_ONLY | PLOOP_OPEN_ALLOW_DIRTY), PLOOP_ERR_FORMAT);
	CHECK(!truncate("a.hds", 0));
	CHECK_EQ(open_rc("a.hds", 0), PLOOP_ERR_FORMAT);
}

/* ---- BAT rules ---------------------------------------------------------------------------------------- */

TEST(delta_open_entry_past_eof)
{
	CHECK(!make_small("a.hds", 2));
	/* The file has clusters 0..3: 4 is the first one past the end. */
	CHECK(!patch_u32("a.hds", SLOT(50), 4));
	CHECK_EQ(open_rc("a.hds", 0), PLOOP_ERR_FORMAT);
	CHECK_EQ(open_rc("a.hds", PLOOP_OPEN_RDWR), PLOOP_ERR_FORMAT);
	/* Without the BAT the header alone is fine. */
	CHECK_EQ(open_rc("a.hds", PLOOP_OPEN_HEADER_ONLY), 0);
	CHECK(!patch_u32("a.hds", SLOT(50), 0x7fffffff));
	CHECK_EQ(open_rc("a.hds", 0), PLOOP_ERR_FORMAT);
	/* A cluster only partly inside the file is past the end too. */
	CHECK(!patch_u32("a.hds", SLOT(50), 0));
	CHECK(!truncate("a.hds", 4 * CB - 512));
	CHECK_EQ(open_rc("a.hds", 0), PLOOP_ERR_FORMAT);
	CHECK(!truncate("a.hds", 4 * CB));
	CHECK_EQ(open_rc("a.hds", 0), 0);
}

TEST(delta_open_v1_entry_past_eof)
{
	CHECK(!make_small("a.hds", 1));
	CHECK(!patch_u32("a.hds", SLOT(50), 4 * CS));
	CHECK_EQ(open_rc("a.hds", 0), PLOOP_ERR_FORMAT);
}

TEST(delta_open_entry_into_header_and_bat)
{
	/* Three BAT clusters: entries 1 and 2 point into the BAT. */
	static const uint64_t vs[] = { 0, 9000 };

	CHECK(!make_image("a.hds", 1048576, 2));
	CHECK(!write_clusters("a.hds", vs, 2));
	CHECK_EQ(open_rc("a.hds", 0), 0);
	CHECK_EQ(peek_u32("a.hds", SLOT(0)), 3);
	CHECK(!patch_u32("a.hds", SLOT(9000), 1));
	CHECK_EQ(open_rc("a.hds", 0), PLOOP_ERR_FORMAT);
	CHECK(!patch_u32("a.hds", SLOT(9000), 2));
	CHECK_EQ(open_rc("a.hds", 0), PLOOP_ERR_FORMAT);
	CHECK(!patch_u32("a.hds", SLOT(9000), 4));
	CHECK_EQ(open_rc("a.hds", 0), 0);
}

TEST(delta_open_v1_entry_into_header_and_bat)
{
	static const uint64_t vs[] = { 0 };

	CHECK(!make_image("a.hds", 1048576, 1));
	CHECK(!write_clusters("a.hds", vs, 1));
	CHECK_EQ(peek_u32("a.hds", SLOT(0)), 3 * CS);
	CHECK(!patch_u32("a.hds", SLOT(0), 2 * CS));
	CHECK_EQ(open_rc("a.hds", 0), PLOOP_ERR_FORMAT);
	CHECK(!patch_u32("a.hds", SLOT(0), CS));
	CHECK_EQ(open_rc("a.hds", 0), PLOOP_ERR_FORMAT);
}

TEST(delta_open_duplicate_entries)
{
	CHECK(!make_small("a.hds", 2));
	CHECK(!patch_u32("a.hds", SLOT(90), 2));	/* v=7 holds cluster 2 */
	CHECK_EQ(open_rc("a.hds", 0), PLOOP_ERR_FORMAT);
	CHECK_EQ(open_rc("a.hds", PLOOP_OPEN_RDWR), PLOOP_ERR_FORMAT);
	CHECK(!patch_u32("a.hds", SLOT(90), 0));
	CHECK(!patch_u32("a.hds", SLOT(3), 3));	/* now v=3 and v=100 share cluster 3 */
	CHECK_EQ(open_rc("a.hds", 0), PLOOP_ERR_FORMAT);
}

TEST(delta_open_v1_duplicate_entries)
{
	CHECK(!make_small("a.hds", 1));
	CHECK(!patch_u32("a.hds", SLOT(0), 3 * CS));
	CHECK_EQ(open_rc("a.hds", 0), PLOOP_ERR_FORMAT);
}

TEST(delta_open_v1_entry_not_cluster_aligned)
{
	static const uint32_t bad[] = { 1 * CS + 1, 2 * CS - 1, 3 * CS + 32, 1 };

	CHECK(!make_small("a.hds", 1));
	CHECK_EQ(peek_u32("a.hds", SLOT(3)), 1 * CS);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		CHECK(!patch_u32("a.hds", SLOT(3), bad[i]));
		CHECK_EQ(open_rc("a.hds", 0), PLOOP_ERR_FORMAT);
	}
	CHECK(!patch_u32("a.hds", SLOT(3), 1 * CS));
	CHECK_EQ(open_rc("a.hds", 0), 0);
}

TEST(delta_open_entry_invalid_marker)
{
	CHECK(!make_small("a.hds", 2));
	CHECK(!patch_u32("a.hds", SLOT(0), 0xffffffffu));
	CHECK_EQ(open_rc("a.hds", 0), PLOOP_ERR_FORMAT);
	CHECK(!make_small("b.hds", 1));
	CHECK(!patch_u32("b.hds", SLOT(127), 0xffffffffu));
	CHECK_EQ(open_rc("b.hds", 0), PLOOP_ERR_FORMAT);
}

TEST(delta_open_ignores_padding_slots)
{
	struct ploop_delta *d;
	struct ploop_delta_info info;
	uint64_t off;

	CHECK(!make_small("a.hds", 2));
	/* Slots 128.. are padding of the one BAT cluster: junk there is never used. */
	CHECK(!patch_u32("a.hds", SLOT(128), 0xffffffffu));
	CHECK(!patch_u32("a.hds", SLOT(129), 1));
	CHECK(!patch_u32("a.hds", SLOT(130), 99999));
	CHECK(!patch_u32("a.hds", SLOT(8175), 2));
	CHECK_OK(ploop_delta_open("a.hds", 0, 0, 0, &d, err));
	ploop_delta_get_info(d, &info);
	CHECK_EQ(info.allocated_clusters, 3);
	CHECK(!ploop_delta_lookup(d, 128, &off));
	CHECK(!ploop_delta_lookup(d, 129, &off));
	CHECK_OK(ploop_delta_close(d, err));
	/* Nor do slots past the virtual size when m_Size is larger than needed. */
	CHECK(!patch_u32("a.hds", 32, 200));
	CHECK(!patch_u32("a.hds", SLOT(150), 0xffffffffu));
	CHECK_EQ(open_rc("a.hds", 0), 0);
}

/* ---- markers -------------------------------------------------------------------------------------------- */

TEST(delta_open_dirty_marker)
{
	struct ploop_delta *d;
	struct ploop_delta_info info;

	CHECK(!make_small("a.hds", 2));
	CHECK(!patch_u32("a.hds", 44, PLOOP_DISK_IN_USE));
	CHECK_EQ(open_rc("a.hds", 0), PLOOP_ERR_IN_USE);
	CHECK_EQ(open_rc("a.hds", PLOOP_OPEN_RDWR), PLOOP_ERR_IN_USE);
	CHECK_EQ(open_rc("a.hds", PLOOP_OPEN_HEADER_ONLY), PLOOP_ERR_IN_USE);
	CHECK_OK(ploop_delta_open("a.hds", PLOOP_OPEN_ALLOW_DIRTY, 0, 0, &d, err));
	ploop_delta_get_info(d, &info);
	CHECK_EQ(info.disk_in_use, PLOOP_DISK_IN_USE);
	CHECK_EQ(info.allocated_clusters, 3);
	CHECK_OK(ploop_delta_close(d, err));
	/* Allowing a dirty image does not clear the marker. */
	CHECK_OK(ploop_delta_open("a.hds", PLOOP_OPEN_ALLOW_DIRTY | PLOOP_OPEN_RDWR, 0, 0, &d, err));
	CHECK_OK(ploop_delta_close(d, err));
	CHECK_EQ(peek_u32("a.hds", 44), PLOOP_DISK_IN_USE);
}

TEST(delta_open_closed_v21_marker)
{
	struct ploop_delta *d;

	CHECK(!make_small("a.hds", 2));
	CHECK(!patch_u32("a.hds", 44, PLOOP_DISK_CLOSED_V21));
	CHECK(!patch_u32("a.hds", 56, 4 * CS));
	/* "v2.1" is clean for HEAD; a read-only open keeps it ... */
	CHECK_OK(ploop_delta_open("a.hds", 0, 0, 0, &d, err));
	CHECK_OK(ploop_delta_close(d, err));
	CHECK_EQ(peek_u32("a.hds", 44), PLOOP_DISK_CLOSED_V21);
	CHECK_EQ(peek_u32("a.hds", 56), 4 * CS);
	/* ... a writable one drops it with the extension it vouches for. */
	CHECK_OK(ploop_delta_open("a.hds", PLOOP_OPEN_RDWR, 0, 0, &d, err));
	CHECK_OK(ploop_delta_close(d, err));
	CHECK_EQ(peek_u32("a.hds", 44), 0);
	CHECK_EQ(peek_u32("a.hds", 56), 0);
}

TEST(delta_open_conversion_in_progress)
{
	CHECK(!make_small("a.hds", 2));
	CHECK(!patch_u32("a.hds", 52, PLOOP_FLAG_FMT_CONVERT));
	CHECK_EQ(open_rc("a.hds", 0), PLOOP_ERR_BUSY);
	CHECK_EQ(open_rc("a.hds", PLOOP_OPEN_RDWR), PLOOP_ERR_BUSY);
	/* As the converter leaves it: dirty too. The interrupted conversion is the news. */
	CHECK(!patch_u32("a.hds", 44, PLOOP_DISK_IN_USE));
	CHECK(!patch_u32("a.hds", 52, PLOOP_FLAG_FMT_CONVERT | PLOOP_FLAG_EMPTY));
	CHECK_EQ(open_rc("a.hds", 0), PLOOP_ERR_BUSY);
	/* Its BAT may mix v1 and v2 entries: not even a reader that accepts dirty images gets it. */
	CHECK_EQ(open_rc("a.hds", PLOOP_OPEN_ALLOW_DIRTY), PLOOP_ERR_BUSY);
}

TEST(delta_mark_dirty_while_open)
{
	struct ploop_delta *d, *d2;

	CHECK(!make_small("a.hds", 2));
	CHECK_OK(ploop_delta_open("a.hds", PLOOP_OPEN_RDWR | PLOOP_OPEN_MARK_DIRTY, 0, 0, &d, err));
	CHECK_EQ(peek_u32("a.hds", 44), PLOOP_DISK_IN_USE);
	/* Another opener sees an image in use. */
	CHECK_FAILS(PLOOP_ERR_IN_USE, ploop_delta_open("a.hds", PLOOP_OPEN_NOLOCK, 0, 0, &d2, err));
	CHECK_OK(ploop_delta_close(d, err));
	CHECK_EQ(peek_u32("a.hds", 44), 0);
	CHECK_EQ(open_rc("a.hds", 0), 0);
}

TEST(delta_mark_dirty_needs_rdwr)
{
	struct ploop_delta *d;
	uint8_t *before, *after;
	size_t lb = 0, la = 0;

	CHECK(!make_small("a.hds", 2));
	before = read_file("a.hds", &lb);
	CHECK(before);
	CHECK_OK(ploop_delta_open("a.hds", PLOOP_OPEN_MARK_DIRTY, 0, 0, &d, err));
	CHECK_EQ(peek_u32("a.hds", 44), 0);
	CHECK_OK(ploop_delta_close(d, err));
	after = read_file("a.hds", &la);
	CHECK(after);
	CHECK_EQ(la, lb);
	CHECK(!memcmp(before, after, la));
	free(before);
	free(after);
}

TEST(delta_cif_empty_cleared_by_first_write)
{
	static const uint64_t one[] = { 5 };
	struct ploop_delta *d;
	struct ploop_delta_info info;

	CHECK(!make_image("a.hds", 8192, 2));
	CHECK_EQ(peek_u32("a.hds", 52), PLOOP_FLAG_EMPTY);
	/* Opening writable and closing without a write keeps it. */
	CHECK_OK(ploop_delta_open("a.hds", PLOOP_OPEN_RDWR, 0, 0, &d, err));
	ploop_delta_get_info(d, &info);
	CHECK_EQ(info.flags, PLOOP_FLAG_EMPTY);
	CHECK_OK(ploop_delta_close(d, err));
	CHECK_EQ(peek_u32("a.hds", 52), PLOOP_FLAG_EMPTY);
	CHECK(!write_clusters("a.hds", one, 1));
	CHECK_EQ(peek_u32("a.hds", 52), 0);
	CHECK_EQ(peek_u32("a.hds", SLOT(5)), 1);
}

TEST(delta_cif_empty_kept_by_zero_write_to_hole)
{
	struct ploop_chain *c;
	const char *path = "a.hds";
	uint8_t zero[4096] = { 0 };

	CHECK(!make_image(path, 8192, 2));
	CHECK_OK(ploop_chain_open_files(&path, 1, false, 0, PLOOP_OPEN_RDWR, &c, err));
	CHECK_OK(ploop_chain_write(c, zero, sizeof(zero), 3 * CB + 100, err));
	CHECK_OK(ploop_chain_close(c, err));
	/* A hole reads as zeros already: nothing allocated, still empty. */
	CHECK_EQ(peek_u32(path, 52), PLOOP_FLAG_EMPTY);
	CHECK_EQ(peek_u32(path, SLOT(3)), 0);
	CHECK_EQ(file_size(path), CB);
}

TEST(delta_cif_empty_cleared_v1)
{
	static const uint64_t one[] = { 127 };

	CHECK(!make_image("a.hds", 8192, 1));
	CHECK(!write_clusters("a.hds", one, 1));
	CHECK_EQ(peek_u32("a.hds", 52), 0);
	CHECK_EQ(peek_u32("a.hds", SLOT(127)), 1 * CS);
}

/* ---- locking -------------------------------------------------------------------------------------------- */

TEST(delta_lock_readers_share)
{
	struct ploop_delta *a, *b;

	CHECK(!make_small("a.hds", 2));
	CHECK_OK(ploop_delta_open("a.hds", 0, 0, 0, &a, err));
	CHECK_OK(ploop_delta_open("a.hds", 0, 0, 0, &b, err));
	CHECK_OK(ploop_delta_close(a, err));
	CHECK_OK(ploop_delta_close(b, err));
}

TEST(delta_lock_writer_excludes_reader)
{
	struct ploop_delta *a, *b;

	CHECK(!make_small("a.hds", 2));
	CHECK_OK(ploop_delta_open("a.hds", PLOOP_OPEN_RDWR, 0, 0, &a, err));
	CHECK_FAILS(PLOOP_ERR_LOCK, ploop_delta_open("a.hds", 0, 0, 0, &b, err));
	CHECK(b == NULL);
	CHECK_OK(ploop_delta_close(a, err));
	/* Released on close. */
	CHECK_OK(ploop_delta_open("a.hds", 0, 0, 0, &b, err));
	CHECK_OK(ploop_delta_close(b, err));
}

TEST(delta_lock_reader_excludes_writer)
{
	struct ploop_delta *a, *b;

	CHECK(!make_small("a.hds", 2));
	CHECK_OK(ploop_delta_open("a.hds", 0, 0, 0, &a, err));
	CHECK_FAILS(PLOOP_ERR_LOCK, ploop_delta_open("a.hds", PLOOP_OPEN_RDWR, 0, 0, &b, err));
	CHECK_FAILS(PLOOP_ERR_LOCK,
		    ploop_delta_open("a.hds", PLOOP_OPEN_RDWR | PLOOP_OPEN_MARK_DIRTY, 0, 0, &b, err));
	/* The failed writer left no marker behind. */
	CHECK_EQ(peek_u32("a.hds", 44), 0);
	CHECK_OK(ploop_delta_close(a, err));
	CHECK_OK(ploop_delta_open("a.hds", PLOOP_OPEN_RDWR, 0, 0, &b, err));
	CHECK_OK(ploop_delta_close(b, err));
}

TEST(delta_lock_writers_exclude_each_other)
{
	struct ploop_delta *a, *b;

	CHECK(!make_small("a.hds", 2));
	CHECK_OK(ploop_delta_open("a.hds", PLOOP_OPEN_RDWR, 0, 0, &a, err));
	CHECK_FAILS(PLOOP_ERR_LOCK, ploop_delta_open("a.hds", PLOOP_OPEN_RDWR, 0, 0, &b, err));
	CHECK_OK(ploop_delta_close(a, err));
}

TEST(delta_lock_across_processes)
{
	struct ploop_delta *a;
	pid_t pid;
	int status;

	CHECK(!make_small("a.hds", 2));
	CHECK_OK(ploop_delta_open("a.hds", PLOOP_OPEN_RDWR, 0, 0, &a, err));
	pid = fork();
	if (pid == 0)
		_exit(open_rc("a.hds", 0) == PLOOP_ERR_LOCK && open_rc("a.hds", PLOOP_OPEN_NOLOCK) == 0 ? 0 : 1);
	CHECK(pid > 0);
	CHECK(waitpid(pid, &status, 0) == pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	CHECK_OK(ploop_delta_close(a, err));
}

TEST(delta_lock_nolock_bypasses)
{
	struct ploop_delta *a, *b, *c;

	CHECK(!make_small("a.hds", 2));
	CHECK_OK(ploop_delta_open("a.hds", PLOOP_OPEN_RDWR, 0, 0, &a, err));
	CHECK_OK(ploop_delta_open("a.hds", PLOOP_OPEN_NOLOCK, 0, 0, &b, err));
	CHECK_OK(ploop_delta_open("a.hds", PLOOP_OPEN_RDWR | PLOOP_OPEN_NOLOCK, 0, 0, &c, err));
	CHECK_OK(ploop_delta_close(c, err));
	CHECK_OK(ploop_delta_close(b, err));
	CHECK_OK(ploop_delta_close(a, err));
	/* A NOLOCK holder does not block a locking opener either. */
	CHECK_OK(ploop_delta_open("a.hds", PLOOP_OPEN_RDWR | PLOOP_OPEN_NOLOCK, 0, 0, &a, err));
	CHECK_OK(ploop_delta_open("a.hds", PLOOP_OPEN_RDWR, 0, 0, &b, err));
	CHECK_OK(ploop_delta_close(b, err));
	CHECK_OK(ploop_delta_close(a, err));
}

TEST(delta_lock_chain_write_blocks_reader)
{
	struct ploop_chain *c;
	const char *path = "a.hds";

	CHECK(!make_small(path, 2));
	CHECK_OK(ploop_chain_open_files(&path, 1, false, 0, PLOOP_OPEN_RDWR, &c, err));
	CHECK_EQ(open_rc(path, 0), PLOOP_ERR_LOCK);
	CHECK_OK(ploop_chain_close(c, err));
	CHECK_EQ(open_rc(path, 0), 0);
}

/* ---- grow ------------------------------------------------------------------------------------------------- */

/* Whether @path passes the strictest read-only check. */
static bool check_clean(const char *path)
{
	struct ploop_check_params p = {
		.flags = PLOOP_CHECK_FORCE | PLOOP_CHECK_CLUSTERS | PLOOP_CHECK_RDONLY,
	};
	struct ploop_error e = { 0 };

	if (ploop_check_delta(path, &p, &e)) {
		fprintf(stderr, "  check %s: %d %s\n", path, e.status, e.msg);
		return false;
	}
	return true;
}

struct extent_log {
	int n;
	struct ploop_extent e[16];
};

static int log_extent(void *ctx, const struct ploop_extent *e)
{
	struct extent_log *l = ctx;

	if (l->n < 16)
		l->e[l->n] = *e;
	l->n++;
	return 0;
}

/* Grows the 4 MiB image with data in v = 100, 5, 50, 0 (file clusters 1..4) to 512 MiB, whose BAT
 * needs clusters 0..2: the data in clusters 1 and 2 must move to the end of the file. */
static void grow_relocating(int version)
{
	static const uint64_t vs[] = { 100, 5, 50, 0 };
	const char *path = "a.hds";
	struct ploop_chain *c;
	struct ploop_delta *d;
	struct ploop_delta_info info;
	struct extent_log log = { 0 };
	uint64_t off = 0;

	CHECK(!make_image(path, 8192, version));
	CHECK(!write_clusters(path, vs, 4));
	CHECK(check_clean(path));
	CHECK_OK(ploop_chain_open_files(&path, 1, false, 0, 0, &c, err));
	for (int i = 0; i < 4; i++) {
		CHECK_EQ(ploop_chain_lookup(c, vs[i], &off), 0);
		CHECK_EQ(off, (uint64_t)(i + 1) * CB);
		CHECK(cluster_is(c, vs[i], true));
	}
	CHECK_OK(ploop_chain_close(c, err));

	CHECK_OK(ploop_delta_open(path, PLOOP_OPEN_RDWR, 0, 0, &d, err));
	CHECK_OK(ploop_delta_grow(d, 1048576, err));
	ploop_delta_get_info(d, &info);
	CHECK_EQ(info.size_sectors, 1048576);
	CHECK_EQ(info.bat_entries, 16384);
	CHECK_EQ(info.bat_clusters, 3);
	CHECK_EQ(info.allocated_clusters, 4);
	CHECK_OK(ploop_delta_close(d, err));

	/* The header describes the new size and BAT area. */
	CHECK_EQ(peek_u32(path, 32), 16384);
	CHECK_EQ(peek_u32(path, 36), 1048576);
	CHECK_EQ(peek_u32(path, 40), 0);
	CHECK_EQ(peek_u32(path, 48), 3 * CS);
	CHECK_EQ(peek_u32(path, 20), 16);
	CHECK_EQ(peek_u32(path, 24), 1040);
	CHECK_EQ(peek_u32(path, 44), 0);
	CHECK_EQ(peek_u32(path, 52), 0);
	/* v=100 and v=5 moved to clusters 5 and 6; v=50 and v=0 stayed. */
	CHECK_EQ(file_size(path), 7 * CB);
	CHECK_EQ(peek_u32(path, SLOT(100)), version == 1 ? 5 * CS : 5);
	CHECK_EQ(peek_u32(path, SLOT(5)), version == 1 ? 6 * CS : 6);
	CHECK_EQ(peek_u32(path, SLOT(50)), version == 1 ? 3 * CS : 3);
	CHECK_EQ(peek_u32(path, SLOT(0)), version == 1 ? 4 * CS : 4);
	CHECK(check_clean(path));

	CHECK_OK(ploop_chain_open_files(&path, 1, false, 0, 0, &c, err));
	CHECK_EQ(ploop_chain_size(c), 512ull << 20);
	for (int i = 0; i < 4; i++)
		CHECK(cluster_is(c, vs[i], true));
	CHECK(cluster_is(c, 1, false));
	CHECK(cluster_is(c, 127, false));
	CHECK(cluster_is(c, 128, false));
	CHECK(cluster_is(c, 8176, false));
	CHECK(cluster_is(c, 16383, false));
	/* Exactly the four clusters are mapped: the old BAT clusters hold no stray entries. */
	CHECK_OK(ploop_chain_map(c, log_extent, &log, err));
	CHECK(log.n <= 16);
	{
		int mapped = 0;

		for (int i = 0; i < log.n && i < 16; i++)
			if (log.e[i].level == 0)
				mapped += (int)(log.e[i].length / CB);
		CHECK_EQ(mapped, 4);
	}
	CHECK_OK(ploop_chain_close(c, err));
}

TEST(delta_grow_relocates_data_out_of_new_bat_v2)
{
	grow_relocating(2);
}

TEST(delta_grow_relocates_data_out_of_new_bat_v1)
{
	grow_relocating(1);
}

TEST(delta_grow_bat_area_past_eof)
{
	/* One data cluster: the new BAT's third cluster lies past the end of the file. */
	static const uint64_t vs[] = { 9 };
	const char *path = "a.hds";
	struct ploop_chain *c;
	struct ploop_delta *d;

	CHECK(!make_image(path, 8192, 2));
	CHECK(!write_clusters(path, vs, 1));
	CHECK_OK(ploop_delta_open(path, PLOOP_OPEN_RDWR, 0, 0, &d, err));
	CHECK_OK(ploop_delta_grow(d, 1048576, err));
	CHECK_OK(ploop_delta_close(d, err));
	CHECK_EQ(peek_u32(path, 48), 3 * CS);
	CHECK_EQ(peek_u32(path, SLOT(9)), 3);
	CHECK_EQ(file_size(path), 4 * CB);
	CHECK(check_clean(path));
	CHECK_OK(ploop_chain_open_files(&path, 1, false, 0, 0, &c, err));
	CHECK(cluster_is(c, 9, true));
	CHECK(cluster_is(c, 10, false));
	CHECK_OK(ploop_chain_close(c, err));
}

TEST(delta_grow_empty_image)
{
	const char *path = "a.hds";
	struct ploop_delta *d;

	CHECK(!make_image(path, 8192, 2));
	CHECK_OK(ploop_delta_open(path, PLOOP_OPEN_RDWR, 0, 0, &d, err));
	CHECK_OK(ploop_delta_grow(d, 1048576, err));
	CHECK_OK(ploop_delta_close(d, err));
	CHECK_EQ(peek_u32(path, 48), 3 * CS);
	CHECK_EQ(file_size(path), 3 * CB);
	CHECK(check_clean(path));
	CHECK_EQ(open_rc(path, 0), 0);
}

TEST(delta_grow_within_bat_cluster)
{
	/* 4 MiB -> 8 MiB: 256 entries still fit the first BAT cluster, nothing moves. */
	const char *path = "a.hds";
	struct ploop_chain *c;
	struct ploop_delta *d;

	CHECK(!make_small(path, 2));
	/* Junk in the padding must not turn into mappings when the size covers it. */
	CHECK(!patch_u32(path, SLOT(200), 2));
	CHECK_OK(ploop_delta_open(path, PLOOP_OPEN_RDWR, 0, 0, &d, err));
	CHECK_OK(ploop_delta_grow(d, 16384, err));
	CHECK_OK(ploop_delta_close(d, err));
	CHECK_EQ(peek_u32(path, 32), 256);
	CHECK_EQ(peek_u32(path, 36), 16384);
	CHECK_EQ(peek_u32(path, 48), CS);
	CHECK_EQ(peek_u32(path, SLOT(200)), 0);
	CHECK_EQ(file_size(path), 4 * CB);
	CHECK(check_clean(path));
	CHECK_OK(ploop_chain_open_files(&path, 1, false, 0, 0, &c, err));
	for (int i = 0; i < 3; i++)
		CHECK(cluster_is(c, small_vs[i], true));
	CHECK(cluster_is(c, 200, false));
	CHECK(cluster_is(c, 255, false));
	CHECK_OK(ploop_chain_close(c, err));
}

TEST(delta_grow_rounds_up_and_same_size_is_noop)
{
	const char *path = "a.hds";
	struct ploop_delta *d;
	uint8_t *before, *after;
	size_t lb = 0, la = 0;

	CHECK(!make_small(path, 2));
	before = read_file(path, &lb);
	CHECK(before);
	CHECK_OK(ploop_delta_open(path, PLOOP_OPEN_RDWR, 0, 0, &d, err));
	CHECK_OK(ploop_delta_grow(d, 8192, err));
	CHECK_OK(ploop_delta_grow(d, 8192 - 63, err));	/* rounds up to the current size */
	CHECK_OK(ploop_delta_close(d, err));
	after = read_file(path, &la);
	CHECK(after);
	CHECK_EQ(la, lb);
	CHECK(!memcmp(before, after, la));
	free(before);
	free(after);
	CHECK_OK(ploop_delta_open(path, PLOOP_OPEN_RDWR, 0, 0, &d, err));
	CHECK_OK(ploop_delta_grow(d, 8193, err));
	CHECK_OK(ploop_delta_close(d, err));
	CHECK_EQ(peek_u32(path, 36), 8192 + CS);
	CHECK_EQ(peek_u32(path, 32), 129);
}

TEST(delta_grow_keeps_marker_of_mark_dirty_open)
{
	const char *path = "a.hds";
	struct ploop_delta *d;

	CHECK(!make_small(path, 2));
	CHECK_OK(ploop_delta_open(path, PLOOP_OPEN_RDWR | PLOOP_OPEN_MARK_DIRTY, 0, 0, &d, err));
	CHECK_OK(ploop_delta_grow(d, 1048576, err));
	/* The whole-image operation that marked the image is still running. */
	CHECK_EQ(peek_u32(path, 44), PLOOP_DISK_IN_USE);
	CHECK_OK(ploop_delta_close(d, err));
	CHECK_EQ(peek_u32(path, 44), 0);
	CHECK(check_clean(path));
}

TEST(delta_grow_then_write_new_area)
{
	const char *path = "a.hds";
	struct ploop_chain *c;
	uint8_t buf[CB];

	CHECK(!make_small(path, 2));
	CHECK_OK(ploop_chain_open_files(&path, 1, false, 0, PLOOP_OPEN_RDWR, &c, err));
	CHECK_OK(ploop_delta_grow(ploop_chain_delta(c, 0), 1048576, err));
	CHECK_OK(ploop_chain_close(c, err));
	/* A chain opened after the grow sees the new size and can write anywhere in it. */
	CHECK_OK(ploop_chain_open_files(&path, 1, false, 0, PLOOP_OPEN_RDWR, &c, err));
	CHECK_EQ(ploop_chain_size(c), 512ull << 20);
	fill_pattern(buf, CB, 16383 + 1);
	CHECK_OK(ploop_chain_write(c, buf, CB, 16383ull * CB, err));
	fill_pattern(buf, CB, 1 + 1);
	CHECK_OK(ploop_chain_write(c, buf, CB, 1ull * CB, err));
	CHECK_OK(ploop_chain_close(c, err));
	CHECK(check_clean(path));
	CHECK_OK(ploop_chain_open_files(&path, 1, false, 0, 0, &c, err));
	CHECK(cluster_is(c, 16383, true));
	CHECK(cluster_is(c, 1, true));
	for (int i = 0; i < 3; i++)
		CHECK(cluster_is(c, small_vs[i], true));
	CHECK_OK(ploop_chain_close(c, err));
}

TEST(delta_grow_refuses_shrink)
{
	const char *path = "a.hds";
	struct ploop_delta *d;
	uint8_t *before, *after;
	size_t lb = 0, la = 0;

	CHECK(!make_small(path, 2));
	before = read_file(path, &lb);
	CHECK(before);
	CHECK_OK(ploop_delta_open(path, PLOOP_OPEN_RDWR, 0, 0, &d, err));
	CHECK_FAILS(PLOOP_ERR_PARAM, ploop_delta_grow(d, 8192 - CS, err));
	CHECK_FAILS(PLOOP_ERR_PARAM, ploop_delta_grow(d, 1, err));
	CHECK_OK(ploop_delta_close(d, err));
	after = read_file(path, &la);
	CHECK(after);
	CHECK_EQ(la, lb);
	CHECK(!memcmp(before, after, la));
	free(before);
	free(after);
}

TEST(delta_grow_needs_rdwr)
{
	struct ploop_delta *d;

	CHECK(!make_small("a.hds", 2));
	CHECK_OK(ploop_delta_open("a.hds", 0, 0, 0, &d, err));
	CHECK_FAILS(PLOOP_ERR_PARAM, ploop_delta_grow(d, 16384, err));
	CHECK_OK(ploop_delta_close(d, err));
	CHECK_EQ(peek_u32("a.hds", 36), 8192);
}

TEST(delta_grow_v1_limit)
{
	struct ploop_delta *d;

	CHECK(!make_small("a.hds", 1));
	CHECK_OK(ploop_delta_open("a.hds", PLOOP_OPEN_RDWR, 0, 0, &d, err));
	/* 2^32 sectors do not fit the u32 size of v1. */
	CHECK_FAILS(PLOOP_ERR_PARAM, ploop_delta_grow(d, 1ull << 32, err));
	CHECK_OK(ploop_delta_close(d, err));
	CHECK_EQ(peek_u32("a.hds", 36), 8192);
	CHECK_EQ(peek_u32("a.hds", 44), 0);
	CHECK(check_clean("a.hds"));
}

TEST(delta_grow_raw)
{
	struct ploop_create_params p = { .size_sectors = 4096, .cluster_sectors = CS, .mode = PLOOP_MODE_RAW };
	struct ploop_delta *d;
	struct ploop_delta_info info;

	CHECK_OK(ploop_delta_create("a.img", &p, err));
	CHECK_OK(ploop_delta_open("a.img", PLOOP_OPEN_RAW | PLOOP_OPEN_RDWR, CS, 0, &d, err));
	CHECK_OK(ploop_delta_grow(d, 8192, err));
	ploop_delta_get_info(d, &info);
	CHECK_EQ(info.size_sectors, 8192);
	CHECK_EQ(info.bat_entries, 128);
	CHECK_FAILS(PLOOP_ERR_PARAM, ploop_delta_grow(d, 4096, err));
	CHECK_OK(ploop_delta_close(d, err));
	CHECK_EQ(file_size("a.img"), 8192 * 512);
}
