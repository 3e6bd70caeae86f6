/* Unit tests of the on-disk format: the header codec, CHS geometry, what ploop_delta_create writes
 * (checked against the upstream images of ploop-format.md §1.2-1.5), and the size/GUID parsers. */
#include <endian.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "../../ploop/lib/internal.h"

#define KIB 1024ull
#define MIB (1024ull * KIB)
#define GIB (1024ull * MIB)
#define TIB (1024ull * GIB)

/* The header of `ploop init -s 100M -t none -v 2` (ploop-format.md §1.2, verified upstream). */
static const uint8_t upstream_100m_header[64] = {
	0x57, 0x69, 0x74, 0x68, 0x6f, 0x75, 0x46, 0x72, 0x65, 0x53, 0x70, 0x61, 0x63, 0x45, 0x78, 0x74,
	0x02, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x90, 0x01, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00,
	0x64, 0x00, 0x00, 0x00, 0x00, 0x20, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x08, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
};

static int read_at(const char *path, void *buf, size_t len, uint64_t off)
{
	int fd = open(path, O_RDONLY);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = pread(fd, buf, len, (off_t)off);
	close(fd);
	return n == (ssize_t)len ? 0 : -1;
}

static uint64_t file_size(const char *path)
{
	struct stat st;

	return stat(path, &st) ? UINT64_MAX : (uint64_t)st.st_size;
}

static bool file_exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0;
}

static uint64_t peek_u64(const char *path, uint64_t off)
{
	uint64_t v = 0;

	if (read_at(path, &v, 8, off))
		return UINT64_MAX;
	return le64toh(v);
}

static bool all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

/* ---- header codec -------------------------------------------------------------------------------- */

TEST(format_header_encode_is_little_endian_at_spec_offsets)
{
	struct ploop_pvd_header h = { 0 };
	uint8_t raw[64];

	memcpy(h.m_Sig, PLOOP_SIG_V2, PLOOP_SIG_LEN);
	h.m_Type = 0x04030201;
	h.m_Heads = 0x14131211;
	h.m_Cylinders = 0x24232221;
	h.m_Sectors = 0x34333231;
	h.m_Size = 0x44434241;
	h.m_SizeInSectors = 0x5857565554535251ull;
	h.m_DiskInUse = 0x64636261;
	h.m_FirstBlockOffset = 0x74737271;
	h.m_Flags = 0x84838281;
	h.m_FormatExtensionOffset = 0x9897969594939291ull;
	ploop_header_encode(&h, raw);

	CHECK(!memcmp(raw, PLOOP_SIG_V2, 16));
	/* Every field at its ploop-format.md §1.2 offset, least significant byte first. */
	static const struct {
		unsigned off, len;
		uint8_t first;
	} fields[] = {
		{ 16, 4, 0x01 }, { 20, 4, 0x11 }, { 24, 4, 0x21 }, { 28, 4, 0x31 }, { 32, 4, 0x41 },
		{ 36, 8, 0x51 }, { 44, 4, 0x61 }, { 48, 4, 0x71 }, { 52, 4, 0x81 }, { 56, 8, 0x91 },
	};
	for (size_t i = 0; i < ARRAY_SIZE(fields); i++)
		for (unsigned b = 0; b < fields[i].len; b++)
			CHECK_EQ(raw[fields[i].off + b], fields[i].first + b);
}

TEST(format_header_codec_round_trip)
{
	struct ploop_pvd_header h = { 0 }, back;
	uint8_t raw[64], raw2[64];

	memcpy(h.m_Sig, PLOOP_SIG_V1, PLOOP_SIG_LEN);
	h.m_Type = PLOOP_IMAGE_TYPE;
	h.m_Heads = 16;
	h.m_Cylinders = 123456;
	h.m_Sectors = 256;
	h.m_Size = 0xdeadbeef;
	h.m_SizeInSectors = 0x123456789abcdefull;
	h.m_DiskInUse = PLOOP_DISK_IN_USE;
	h.m_FirstBlockOffset = 0x80000000u;
	h.m_Flags = PLOOP_FLAG_EMPTY | PLOOP_FLAG_FMT_CONVERT;
	h.m_FormatExtensionOffset = UINT64_MAX - 1;
	ploop_header_encode(&h, raw);
	ploop_header_decode(raw, &back);
	CHECK(!memcmp(&h, &back, sizeof(h)));
	ploop_header_encode(&back, raw2);
	CHECK(!memcmp(raw, raw2, 64));
}

TEST(format_header_decode_upstream_100m)
{
	struct ploop_pvd_header h;

	ploop_header_decode(upstream_100m_header, &h);
	CHECK_EQ(ploop_header_version(&h), 2);
	CHECK_EQ(h.m_Type, 2);
	CHECK_EQ(h.m_Heads, 16);
	CHECK_EQ(h.m_Cylinders, 400);
	CHECK_EQ(h.m_Sectors, 2048);
	CHECK_EQ(h.m_Size, 100);
	CHECK_EQ(h.m_SizeInSectors, 204800);
	CHECK_EQ(ploop_header_size_sectors(&h, 2), 204800);
	CHECK_EQ(h.m_DiskInUse, 0);
	CHECK_EQ(h.m_FirstBlockOffset, 2048);
	CHECK_EQ(h.m_Flags, PLOOP_FLAG_EMPTY);
	CHECK_EQ(h.m_FormatExtensionOffset, 0);
}

TEST(format_header_init_matches_upstream_100m)
{
	struct ploop_pvd_header h;
	uint8_t raw[64];

	ploop_header_init(&h, 2, 204800, 2048);
	ploop_header_encode(&h, raw);
	CHECK(!memcmp(raw, upstream_100m_header, 64));
}

TEST(format_header_version_and_v1_size)
{
	struct ploop_pvd_header h = { 0 };

	CHECK_EQ(ploop_header_version(&h), 0);
	memcpy(h.m_Sig, PLOOP_SIG_V1, PLOOP_SIG_LEN);
	CHECK_EQ(ploop_header_version(&h), 1);
	memcpy(h.m_Sig, PLOOP_SIG_V2, PLOOP_SIG_LEN);
	CHECK_EQ(ploop_header_version(&h), 2);
	memcpy(h.m_Sig, "WithoutFreeSpacE", PLOOP_SIG_LEN);
	CHECK_EQ(ploop_header_version(&h), 0);
	memcpy(h.m_Sig, "withoutFreeSpace", PLOOP_SIG_LEN);
	CHECK_EQ(ploop_header_version(&h), 0);

	/* v1 keeps a u32 size; the "Unused" half above it is ignored. */
	h.m_SizeInSectors = 0xabcdef0100012000ull;
	CHECK_EQ(ploop_header_size_sectors(&h, 1), 0x00012000);
	CHECK_EQ(ploop_header_size_sectors(&h, 2), 0xabcdef0100012000ull);
}

TEST(format_bat_encode)
{
	uint32_t e = 0;

	CHECK_EQ(ploop_bat_encode(2, 256, 7, &e), 0);
	CHECK_EQ(e, 7);
	CHECK_EQ(ploop_bat_encode(1, 256, 7, &e), 0);
	CHECK_EQ(e, 7 * 256);
	/* 0xffffffff must never be written, and nothing above it fits. */
	CHECK_EQ(ploop_bat_encode(2, 64, 0xfffffffeu, &e), 0);
	CHECK_EQ(e, 0xfffffffeu);
	CHECK(ploop_bat_encode(2, 64, 0xffffffffu, &e) < 0);
	CHECK(ploop_bat_encode(2, 64, 0x100000000ull, &e) < 0);
	CHECK_EQ(ploop_bat_encode(1, 2048, 0x1fffff, &e), 0);
	CHECK_EQ(e, 0x1fffffu * 2048);
	CHECK(ploop_bat_encode(1, 2048, 0x200000, &e) < 0);
}

TEST(format_bat_clusters)
{
	/* ceil((16 + entries) * 4 / cluster_bytes), ploop-format.md §1.3. */
	CHECK_EQ(ploop_bat_clusters(100, MIB), 1);
	CHECK_EQ(ploop_bat_clusters(262128, MIB), 1);
	CHECK_EQ(ploop_bat_clusters(262129, MIB), 2);
	CHECK_EQ(ploop_bat_clusters(327680, 32 * KIB), 41);
	CHECK_EQ(ploop_bat_clusters(2097152, MIB), 9);
	CHECK_EQ(ploop_bat_clusters(0, 32 * KIB), 1);
}

/* ---- geometry ------------------------------------------------------------------------------------ */

static int chs_is(uint64_t s, uint32_t cyl, uint32_t heads, uint32_t secs)
{
	uint32_t c = 0, h = 0, n = 0;

	ploop_chs(s, &c, &h, &n);
	if (c == cyl && h == heads && n == secs)
		return 1;
	fprintf(stderr, "  CHS(%llu) = %u/%u/%u, wanted %u/%u/%u\n", (unsigned long long)s, c, h, n, cyl, heads,
		secs);
	return 0;
}

TEST(format_chs_examples)
{
	/* 100 MiB: the verified header holds heads=16 cyl=400 (32 sectors per track). */
	CHECK(chs_is(204800, 400, 16, 32));
	/* The sample DiskDescriptor.xml of §2: 131072 -> 256/16/32. */
	CHECK(chs_is(131072, 256, 16, 32));
	/* Inside (1032192, 16777216): always 63 sectors, 16 heads, cyl = S / 1008 (floor). */
	CHECK(chs_is(2097152, 2080, 16, 63));
	CHECK(chs_is(1032193, 1024, 16, 63));
	CHECK(chs_is(16777215, 16644, 16, 63));
	/* The bounds themselves are outside the range and take the divisor search. */
	CHECK(chs_is(1032192, 1024, 16, 63));
	CHECK(chs_is(16777216, 32768, 16, 32));
	/* 63 first, then 32, 16, 8; heads 16, 8, 4, 2. */
	CHECK(chs_is(63 * 16 * 5, 5, 16, 63));
	CHECK(chs_is(63 * 8 * 3, 3, 8, 63));
	CHECK(chs_is(63 * 2 * 3, 3, 2, 63));
	CHECK(chs_is(32 * 4 * 3, 3, 4, 32));
	CHECK(chs_is(32 * 2 * 3, 3, 2, 32));
	/* 16 (or 8) sectors leave an odd quotient that no head count divides: the next candidate wins. */
	CHECK(chs_is(16 * 5, 5, 2, 8));
	CHECK(chs_is(8 * 2 * 7, 7, 2, 8));
	/* No divisor: (S, 1, 1). */
	CHECK(chs_is(7, 7, 1, 1));
	CHECK(chs_is(63 * 3, 189, 1, 1));
	CHECK(chs_is(8, 8, 1, 1));
	/* Large: 2 TiB = 2^32 sectors. */
	CHECK(chs_is(4294967296ull, 8388608, 16, 32));
}

TEST(format_created_header_carries_chs)
{
	struct ploop_create_params p = { .size_sectors = 2097152, .cluster_sectors = 256 };

	CHECK_OK(ploop_delta_create("a.hds", &p, err));
	CHECK_EQ(peek_u32("a.hds", 20), 16);
	CHECK_EQ(peek_u32("a.hds", 24), 2080);
	CHECK_EQ(peek_u32("a.hds", 28), 256);	/* the "sectors" slot holds the cluster size */
}

/* ---- ploop_delta_create ------------------------------------------------------------------------- */

TEST(format_create_100m_is_byte_exact)
{
	struct ploop_create_params p = { .size_sectors = 100 * MIB / 512, .cluster_sectors = 2048, .version = 2 };
	uint8_t *buf;
	size_t len = 0;

	CHECK_OK(ploop_delta_create("root.hds", &p, err));
	buf = read_file("root.hds", &len);
	CHECK(buf);
	CHECK_EQ(len, MIB);
	CHECK(!memcmp(buf, upstream_100m_header, 64));
	CHECK(all_zero(buf + 64, len - 64));
	free(buf);
}

TEST(format_create_defaults_are_v2_and_1m_clusters)
{
	struct ploop_create_params p = { .size_sectors = 100 * MIB / 512 };
	uint8_t hdr[64];

	CHECK_OK(ploop_delta_create("root.hds", &p, err));
	CHECK(!read_at("root.hds", hdr, 64, 0));
	CHECK(!memcmp(hdr, upstream_100m_header, 64));
	CHECK_EQ(file_size("root.hds"), MIB);
}

/* One row of the FBO/file-size table of ploop-format.md §1.3. */
static int check_geometry(const char *path, uint64_t size, uint32_t cs, uint32_t m_size, uint32_t fbo,
			  uint64_t fsize)
{
	struct ploop_create_params p = { .size_sectors = size / 512, .cluster_sectors = cs, .version = 2 };
	struct ploop_error e = { 0 };
	int bad = 0;

	if (ploop_delta_create(path, &p, &e)) {
		fprintf(stderr, "  create %s: %s\n", path, e.msg);
		return 0;
	}
	if (peek_u32(path, 28) != cs || peek_u32(path, 32) != m_size || peek_u64(path, 36) != size / 512 ||
	    peek_u32(path, 48) != fbo || peek_u32(path, 52) != PLOOP_FLAG_EMPTY || peek_u32(path, 44) != 0 ||
	    peek_u64(path, 56) != 0) {
		fprintf(stderr, "  %s: m_Sectors %u m_Size %u size %llu FBO %u flags %u\n", path, peek_u32(path, 28),
			peek_u32(path, 32), (unsigned long long)peek_u64(path, 36), peek_u32(path, 48),
			peek_u32(path, 52));
		bad = 1;
	}
	if (file_size(path) != fsize) {
		fprintf(stderr, "  %s: file size %llu, wanted %llu\n", path, (unsigned long long)file_size(path),
			(unsigned long long)fsize);
		bad = 1;
	}
	unlink(path);
	return !bad;
}

TEST(format_create_fbo_table_100m_2048)
{
	CHECK(check_geometry("a.hds", 100 * MIB, 2048, 100, 2048, MIB));
}

TEST(format_create_fbo_table_10g_64)
{
	CHECK(check_geometry("a.hds", 10 * GIB, 64, 327680, 2624, 1343488));
}

TEST(format_create_fbo_table_2t_2048)
{
	CHECK(check_geometry("a.hds", 2 * TIB, 2048, 2097152, 18432, 9 * MIB));
}

TEST(format_create_fbo_table_2t_64)
{
	CHECK(check_geometry("a.hds", 2 * TIB, 64, 67108864, 524352, 268468224));
}

TEST(format_create_empty_bat_spans_several_clusters)
{
	/* 10G/64: 41 BAT clusters, all zero after the header. */
	struct ploop_create_params p = { .size_sectors = 10 * GIB / 512, .cluster_sectors = 64 };
	uint8_t *buf;
	size_t len = 0;

	CHECK_OK(ploop_delta_create("a.hds", &p, err));
	buf = read_file("a.hds", &len);
	CHECK(buf);
	CHECK_EQ(len, 41 * 32 * KIB);
	CHECK(all_zero(buf + 64, len - 64));
	free(buf);
}

TEST(format_create_rounds_size_up_to_cluster)
{
	struct ploop_create_params p = { .size_sectors = 1000, .cluster_sectors = 64 };

	CHECK_OK(ploop_delta_create("a.hds", &p, err));
	CHECK_EQ(peek_u64("a.hds", 36), 1024);
	CHECK_EQ(peek_u32("a.hds", 32), 16);
	CHECK_EQ(peek_u32("a.hds", 48), 64);
	CHECK_EQ(file_size("a.hds"), 32 * KIB);
}

TEST(format_create_v1_and_v2_signatures)
{
	struct ploop_create_params p1 = { .size_sectors = 8192, .cluster_sectors = 128, .version = 1 };
	struct ploop_create_params p2 = { .size_sectors = 8192, .cluster_sectors = 128, .version = 2 };
	uint8_t h1[64], h2[64];

	CHECK_OK(ploop_delta_create("v1.hds", &p1, err));
	CHECK_OK(ploop_delta_create("v2.hds", &p2, err));
	CHECK(!read_at("v1.hds", h1, 64, 0));
	CHECK(!read_at("v2.hds", h2, 64, 0));
	CHECK(!memcmp(h1, "WithoutFreeSpace", 16));
	CHECK(!memcmp(h2, "WithouFreSpacExt", 16));
	/* Everything but the signature is the same; v1's upper size half stays zero. */
	CHECK(!memcmp(h1 + 16, h2 + 16, 48));
	CHECK_EQ(peek_u32("v1.hds", 36), 8192);
	CHECK_EQ(peek_u32("v1.hds", 40), 0);
	CHECK_EQ(file_size("v1.hds"), file_size("v2.hds"));
}

TEST(format_create_sets_mode_0600)
{
	struct ploop_create_params p = { .size_sectors = 8192, .cluster_sectors = 64 };
	struct stat st;

	CHECK_OK(ploop_delta_create("a.hds", &p, err));
	CHECK(!stat("a.hds", &st));
	CHECK_EQ(st.st_mode & 0777, 0600);
}

/* The BAT of a preallocated image: every entry in order after the BAT clusters. */
static int check_prealloc(int version, uint64_t size_sectors, uint32_t cs)
{
	struct ploop_create_params p = { .size_sectors = size_sectors, .cluster_sectors = cs, .version = version,
					 .mode = PLOOP_MODE_PREALLOCATED };
	struct ploop_error e = { 0 };
	uint64_t entries = size_sectors / cs, cbytes = (uint64_t)cs * 512, l1 = ploop_bat_clusters(entries, cbytes);
	struct ploop_delta *d = NULL;
	struct stat st;
	uint8_t *buf;
	int ok = 1;

	if (ploop_delta_create("p.hds", &p, &e)) {
		fprintf(stderr, "  create: %s\n", e.msg);
		return 0;
	}
	/* The whole file is allocated: BAT plus one cluster per virtual cluster. */
	if (stat("p.hds", &st) || (uint64_t)st.st_size != (l1 + entries) * cbytes ||
	    (uint64_t)st.st_blocks * 512 < (l1 + entries) * cbytes) {
		fprintf(stderr, "  file size %llu (%llu allocated), wanted %llu\n", (unsigned long long)st.st_size,
			(unsigned long long)st.st_blocks * 512, (unsigned long long)((l1 + entries) * cbytes));
		return 0;
	}
	/* Still CIF_Empty (upstream keeps it set on preallocated images). */
	ok &= peek_u32("p.hds", 52) == PLOOP_FLAG_EMPTY;
	ok &= peek_u32("p.hds", 48) == l1 * cs;
	buf = malloc(l1 * cbytes + cbytes);
	if (!buf || read_at("p.hds", buf, (l1 + 1) * cbytes, 0)) {
		free(buf);
		return 0;
	}
	for (uint64_t v = 0; v < entries && ok; v++) {
		uint32_t raw;

		memcpy(&raw, buf + 64 + 4 * v, 4);
		raw = le32toh(raw);
		if (raw != (version == 1 ? (l1 + v) * cs : l1 + v)) {
			fprintf(stderr, "  v%d entry %llu = %u\n", version, (unsigned long long)v, raw);
			ok = 0;
		}
	}
	/* Padding after the last entry stays zero, and so does the first data cluster. */
	ok &= all_zero(buf + 64 + 4 * entries, l1 * cbytes - 64 - 4 * entries);
	ok &= all_zero(buf + l1 * cbytes, cbytes);
	free(buf);
	if (!ok)
		return 0;
	/* The library reads it back as fully allocated at those offsets. */
	if (ploop_delta_open("p.hds", 0, 0, 0, &d, &e)) {
		fprintf(stderr, "  open: %s\n", e.msg);
		return 0;
	}
	for (uint64_t v = 0; v < entries; v++) {
		uint64_t off = 0;

		if (!ploop_delta_lookup(d, v, &off) || off != (l1 + v) * cbytes)
			ok = 0;
	}
	ploop_delta_close(d, NULL);
	unlink("p.hds");
	return ok;
}

TEST(format_create_preallocated_v2_bat)
{
	CHECK(check_prealloc(2, 8192, 64));
}

TEST(format_create_preallocated_v1_bat)
{
	CHECK(check_prealloc(1, 8192, 64));
}

TEST(format_create_preallocated_multi_cluster_bat)
{
	/* 9000 entries need 2 BAT clusters of 32 KiB: entries continue across the boundary. */
	CHECK(check_prealloc(2, 9000 * 64, 64));
	CHECK(check_prealloc(1, 9000 * 64, 64));
}

TEST(format_create_raw_not_sparse)
{
	struct ploop_create_params p = { .size_sectors = 1000, .cluster_sectors = 64, .mode = PLOOP_MODE_RAW };
	struct stat st;
	uint8_t *buf;
	size_t len = 0;

	CHECK_OK(ploop_delta_create("raw.img", &p, err));
	CHECK(!stat("raw.img", &st));
	/* Rounded up to the cluster, allocated, reads as zeros: a plain disk, no header. */
	CHECK_EQ(st.st_size, 1024 * 512);
	CHECK((uint64_t)st.st_blocks * 512 >= 1024 * 512);
	buf = read_file("raw.img", &len);
	CHECK(buf);
	CHECK(all_zero(buf, len));
	free(buf);
}

TEST(format_create_raw_sparse)
{
	struct ploop_create_params p = { .size_sectors = 64 * MIB / 512, .cluster_sectors = 2048,
					 .mode = PLOOP_MODE_RAW, .sparse = true };
	struct stat st;

	CHECK_OK(ploop_delta_create("raw.img", &p, err));
	CHECK(!stat("raw.img", &st));
	CHECK_EQ(st.st_size, 64 * MIB);
	CHECK_EQ(st.st_blocks, 0);
}

TEST(format_create_raw_opens_as_raw)
{
	struct ploop_create_params p = { .size_sectors = 4096, .cluster_sectors = 256, .mode = PLOOP_MODE_RAW };
	struct ploop_delta *d;
	struct ploop_delta_info info;
	uint64_t off = 0;

	CHECK_OK(ploop_delta_create("raw.img", &p, err));
	/* A raw file is not a ploop delta. */
	CHECK_FAILS(PLOOP_ERR_FORMAT, ploop_delta_open("raw.img", 0, 0, 0, &d, err));
	CHECK_OK(ploop_delta_open("raw.img", PLOOP_OPEN_RAW, 256, 0, &d, err));
	ploop_delta_get_info(d, &info);
	CHECK_EQ(info.version, 0);
	CHECK_EQ(info.size_sectors, 4096);
	CHECK_EQ(info.bat_entries, 16);
	CHECK(ploop_delta_lookup(d, 15, &off));
	CHECK_EQ(off, 15 * 256 * 512);
	CHECK(!ploop_delta_lookup(d, 16, &off));
	CHECK_OK(ploop_delta_close(d, err));
}

/* ---- invalid create parameters ----------------------------------------------------------------------- */

TEST(format_create_rejects_bad_cluster_sizes)
{
	static const uint32_t bad[] = { 1, 32, 63, 65, 100, 96, 3000, 262144, 0x80000000u, UINT32_MAX };

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		struct ploop_create_params p = { .size_sectors = 8192, .cluster_sectors = bad[i] };

		CHECK_FAILS(PLOOP_ERR_PARAM, ploop_delta_create("a.hds", &p, err));
		CHECK(!file_exists("a.hds"));
	}
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		struct ploop_create_params p = { .size_sectors = 8192, .cluster_sectors = bad[i],
						 .mode = PLOOP_MODE_RAW };

		CHECK_FAILS(PLOOP_ERR_PARAM, ploop_delta_create("a.img", &p, err));
		CHECK(!file_exists("a.img"));
	}
}

TEST(format_create_rejects_size_zero)
{
	struct ploop_create_params p = { .size_sectors = 0, .cluster_sectors = 64 };
	struct ploop_create_params r = { .size_sectors = 0, .cluster_sectors = 64, .mode = PLOOP_MODE_RAW };

	CHECK_FAILS(PLOOP_ERR_PARAM, ploop_delta_create("a.hds", &p, err));
	CHECK_FAILS(PLOOP_ERR_PARAM, ploop_delta_create("a.img", &r, err));
	CHECK(!file_exists("a.hds"));
	CHECK(!file_exists("a.img"));
}

TEST(format_create_rejects_unknown_version)
{
	static const int bad[] = { 3, -1, 100 };

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		struct ploop_create_params p = { .size_sectors = 8192, .cluster_sectors = 64, .version = bad[i] };

		CHECK_FAILS(PLOOP_ERR_PARAM, ploop_delta_create("a.hds", &p, err));
		CHECK(!file_exists("a.hds"));
	}
}

TEST(format_create_v1_size_limit)
{
	/* A v1 disk is at most 2^32-1 sectors (§1.3): 2 TiB is not, v2 can. */
	struct ploop_create_params p = { .size_sectors = 2 * TIB / 512, .cluster_sectors = 2048, .version = 1 };

	CHECK_FAILS(PLOOP_ERR_PARAM, ploop_delta_create("a.hds", &p, err));
	CHECK(!file_exists("a.hds"));
	p.size_sectors = 4 * TIB / 512;
	CHECK_FAILS(PLOOP_ERR_PARAM, ploop_delta_create("a.hds", &p, err));
	/* The largest whole number of clusters below that is accepted, as 1.15's init -v 1 does, and
	 * as grow accepts it: 2097151 clusters behind 9 BAT clusters. Its last clusters have no u32
	 * sector offset; a file that grows that far is refused at allocation. */
	p.size_sectors = 2097151ull * 2048;
	CHECK_OK(ploop_delta_create("a.hds", &p, err));
	CHECK_EQ(peek_u32("a.hds", 36), 2097151u * 2048);
	CHECK_EQ(peek_u32("a.hds", 40), 0);
	CHECK_EQ(peek_u32("a.hds", 48), 9 * 2048);
}

TEST(format_create_v2_size_limit)
{
	/* 2^32 - 1 entries leave no room for the BAT: the last cluster index would be 0xffffffff. */
	struct ploop_create_params p = { .size_sectors = 0xffffffffull * 64, .cluster_sectors = 64, .version = 2 };

	CHECK_FAILS(PLOOP_ERR_PARAM, ploop_delta_create("a.hds", &p, err));
	CHECK(!file_exists("a.hds"));
	p.size_sectors = UINT64_MAX - 10;
	CHECK_FAILS(PLOOP_ERR_PARAM, ploop_delta_create("a.hds", &p, err));
	p.size_sectors = UINT64_MAX / 2 + 1;
	p.mode = PLOOP_MODE_RAW;
	CHECK_FAILS(PLOOP_ERR_PARAM, ploop_delta_create("a.img", &p, err));
	CHECK(!file_exists("a.hds"));
	CHECK(!file_exists("a.img"));
}

TEST(format_create_refuses_existing_file)
{
	struct ploop_create_params p = { .size_sectors = 8192, .cluster_sectors = 64 };
	struct ploop_create_params r = { .size_sectors = 8192, .cluster_sectors = 64, .mode = PLOOP_MODE_RAW };
	static const char junk[] = "not an image, must survive";
	uint8_t *buf;
	size_t len = 0;

	CHECK(!write_file("a.hds", junk, sizeof(junk)));
	CHECK_FAILS(PLOOP_ERR_CREAT, ploop_delta_create("a.hds", &p, err));
	CHECK_FAILS(PLOOP_ERR_CREAT, ploop_delta_create("a.hds", &r, err));
	buf = read_file("a.hds", &len);
	CHECK(buf);
	CHECK_EQ(len, sizeof(junk));
	CHECK(!memcmp(buf, junk, len));
	free(buf);
	/* An existing image is not replaced either. */
	CHECK_OK(ploop_delta_create("b.hds", &p, err));
	CHECK_FAILS(PLOOP_ERR_CREAT, ploop_delta_create("b.hds", &p, err));
	CHECK_EQ(file_size("b.hds"), 32 * KIB);
}

TEST(format_create_in_missing_directory)
{
	struct ploop_create_params p = { .size_sectors = 8192, .cluster_sectors = 64 };

	CHECK_FAILS(PLOOP_ERR_CREAT, ploop_delta_create("nodir/a.hds", &p, err));
}

/* ---- size, GUID and cluster-size parsers ---------------------------------------------------------- */

static int size_is(const char *s, uint64_t want)
{
	uint64_t v = 0xdeadbeef;
	int r = ploop_parse_size(s, &v);

	if (r || v != want) {
		fprintf(stderr, "  parse_size(\"%s\") = %d, %llu; wanted %llu\n", s, r, (unsigned long long)v,
			(unsigned long long)want);
		return 0;
	}
	return 1;
}

static int size_rejected(const char *s)
{
	uint64_t v = 0xdeadbeef;
	int r = ploop_parse_size(s, &v);

	if (r >= 0 || v != 0xdeadbeef) {
		fprintf(stderr, "  parse_size(\"%s\") = %d, %llu; wanted an error\n", s, r, (unsigned long long)v);
		return 0;
	}
	return 1;
}

TEST(format_parse_size_units)
{
	CHECK(size_is("100M", 204800));
	CHECK(size_is("1G", 2097152));
	CHECK(size_is("1K", 2));
	CHECK(size_is("10G", 20971520));
	CHECK(size_is("2T", 4294967296ull));
	CHECK(size_is("100m", 204800));
	CHECK(size_is("1g", 2097152));
	/* A bare number counts sectors. */
	CHECK(size_is("2048", 2048));
	CHECK(size_is("1", 1));
	CHECK(size_is("0", 0));
	/* A byte count that is not a whole sector rounds up. */
	CHECK(size_is("1K", 2));
	CHECK(size_is("3K", 6));
}

TEST(format_parse_size_rejects_garbage)
{
	CHECK(size_rejected(""));
	CHECK(size_rejected("1.5G"));
	CHECK(size_rejected("M"));
	CHECK(size_rejected("G100"));
	CHECK(size_rejected("-1"));
	CHECK(size_rejected("-100M"));
	CHECK(size_rejected("+100M"));
	CHECK(size_rejected(" 100M"));
	CHECK(size_rejected("100M "));
	CHECK(size_rejected("100X"));
	CHECK(size_rejected("100MM"));
	CHECK(size_rejected("10 G"));
	CHECK(size_rejected("0x10"));
	CHECK(size_rejected("1e9"));
}

TEST(format_parse_size_overflow)
{
	/* More than 64 bits of sectors, and units that push the byte count past 2^64. */
	CHECK(size_rejected("18446744073709551616"));
	CHECK(size_rejected("99999999999999999999999"));
	CHECK(size_rejected("16777216T"));
	CHECK(size_rejected("17179869184G"));
	CHECK(size_rejected("18446744073709551615K"));
	/* Large but representable. */
	CHECK(size_is("1024T", 1024ull << 31));
}

static int guid_is(const char *s, const char *want)
{
	char out[PLOOP_GUID_BUF];
	int r;

	memset(out, 'x', sizeof(out));
	r = ploop_parse_guid(s, out);
	if (r || strcmp(out, want)) {
		fprintf(stderr, "  parse_guid(\"%s\") = %d \"%.39s\"\n", s, r, out);
		return 0;
	}
	return 1;
}

static int guid_rejected(const char *s)
{
	char out[PLOOP_GUID_BUF];

	if (ploop_parse_guid(s, out) >= 0) {
		fprintf(stderr, "  parse_guid(\"%s\") accepted\n", s);
		return 0;
	}
	return 1;
}

TEST(format_parse_guid_forms)
{
	const char *canon = "{75c9d1a6-e9ca-41f2-8106-2ce8595c5903}";

	CHECK(guid_is(canon, canon));
	CHECK(guid_is("75c9d1a6-e9ca-41f2-8106-2ce8595c5903", canon));
	CHECK(guid_is("{75C9D1A6-E9CA-41F2-8106-2CE8595C5903}", canon));
	CHECK(guid_is("75C9d1A6-e9Ca-41f2-8106-2CE8595c5903", canon));
	CHECK(guid_is(PLOOP_TOP_GUID, PLOOP_TOP_GUID));
	CHECK(guid_is(PLOOP_NONE_GUID, PLOOP_NONE_GUID));
	CHECK_EQ(strlen(canon), PLOOP_GUID_LEN);
}

TEST(format_parse_guid_rejects)
{
	/* Lengths. */
	CHECK(guid_rejected(""));
	CHECK(guid_rejected("{}"));
	CHECK(guid_rejected("{75c9d1a6-e9ca-41f2-8106-2ce8595c590}"));
	CHECK(guid_rejected("{75c9d1a6-e9ca-41f2-8106-2ce8595c59031}"));
	CHECK(guid_rejected("75c9d1a6-e9ca-41f2-8106-2ce8595c590"));
	CHECK(guid_rejected("75c9d1a6-e9ca-41f2-8106-2ce8595c59031"));
	CHECK(guid_rejected("{75c9d1a6-e9ca-41f2-8106-2ce8595c5903}}"));
	/* Characters. */
	CHECK(guid_rejected("{75c9d1a6-e9ca-41f2-8106-2ce8595c590g}"));
	CHECK(guid_rejected("{75c9d1a6-e9ca-41f2-8106-2ce8595c590 }"));
	CHECK(guid_rejected("{75c9d1a6-e9ca-41f2-8106+2ce8595c5903}"));
	CHECK(guid_rejected("{75c9d1a6e-9ca-41f2-8106-2ce8595c5903}"));
	CHECK(guid_rejected("{75c9d1a6-e9ca-41f2-81062-ce8595c5903}"));
	CHECK(guid_rejected("{75c9d1a6ee9ca041f208106a2ce8595c5903}"));
	CHECK(guid_rejected("-75c9d1a6-e9ca-41f2-8106-2ce8595c5903-"));
	/* Braces must be a pair around the whole GUID. */
	CHECK(guid_rejected("(75c9d1a6-e9ca-41f2-8106-2ce8595c5903)"));
	CHECK(guid_rejected("{75c9d1a6-e9ca-41f2-8106-2ce8595c5903x"));
	CHECK(guid_rejected("x75c9d1a6-e9ca-41f2-8106-2ce8595c5903}"));
	CHECK(guid_rejected("{75c9d1a6-e9ca-41f2-8106-2ce8595c5903"));
	CHECK(guid_rejected("75c9d1a6-e9ca-41f2-8106-2ce8595c5903}"));
}

TEST(format_new_guid_is_canonical_and_random)
{
	char a[PLOOP_GUID_BUF], b[PLOOP_GUID_BUF], c[PLOOP_GUID_BUF];

	CHECK_EQ(ploop_new_guid(a), 0);
	CHECK_EQ(ploop_new_guid(b), 0);
	CHECK(strcmp(a, b));
	CHECK(guid_is(a, a));
	CHECK_EQ(ploop_parse_guid(a, c), 0);
	CHECK(!strcmp(a, c));
	CHECK(a[15] == '4');	/* version 4 */
	CHECK(strchr("89ab", a[20]));
}

TEST(format_cluster_size_valid)
{
	for (uint32_t cs = 64; cs <= 131072; cs *= 2)
		CHECK(ploop_cluster_size_valid(cs));
	CHECK(!ploop_cluster_size_valid(0));
	CHECK(!ploop_cluster_size_valid(1));
	CHECK(!ploop_cluster_size_valid(2));
	CHECK(!ploop_cluster_size_valid(32));
	CHECK(!ploop_cluster_size_valid(63));
	CHECK(!ploop_cluster_size_valid(65));
	CHECK(!ploop_cluster_size_valid(96));
	CHECK(!ploop_cluster_size_valid(2047));
	CHECK(!ploop_cluster_size_valid(2049));
	CHECK(!ploop_cluster_size_valid(131071));
	CHECK(!ploop_cluster_size_valid(131073));
	CHECK(!ploop_cluster_size_valid(262144));
	CHECK(!ploop_cluster_size_valid(0x80000000u));
	CHECK(!ploop_cluster_size_valid(UINT32_MAX));
}
