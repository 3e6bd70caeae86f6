/* Test helper: writes a corpus of damaged copies of one valid ploop v2 image, one file per case
 * (each rule of the format broken in turn, truncations, garbage), for the bad-input tests. */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../ploop/ploop_format.h"

#define MAX_SOURCE_BYTES (1ull << 30)

/* The valid source image, decoded once. */
struct source {
	const uint8_t *buf;
	size_t len;
	uint32_t cs; /* cluster, sectors */
	uint64_t cs_bytes;
	uint32_t bat_entries; /* m_Size */
	uint64_t l1;	      /* header + BAT clusters */
	uint32_t used[2];     /* the first two allocated virtual clusters */
	uint32_t last;	      /* the virtual cluster stored at the highest file cluster */
};

/* One copy being damaged; it may grow (up to cap) or shrink. */
struct image {
	uint8_t *buf;
	size_t len;
	size_t cap;
	const struct source *src;
};

/* ---- little-endian access to the copy ---- */

#define HDR(field) offsetof(struct ploop_pvd_header, field)
#define SLOT(v) (64 + 4 * (size_t)(v)) /* file offset of the BAT entry of virtual cluster v */

static uint32_t get32(const struct image *im, size_t off)
{
	uint32_t v;

	memcpy(&v, im->buf + off, 4);
	return le32toh(v);
}

static void put32(struct image *im, size_t off, uint32_t v)
{
	v = htole32(v);
	memcpy(im->buf + off, &v, 4);
}

static void put64(struct image *im, size_t off, uint64_t v)
{
	v = htole64(v);
	memcpy(im->buf + off, &v, 8);
}

/* Deterministic bytes, so that a failing garbage case can be reproduced. */
static void fill_random(uint8_t *p, size_t n, uint64_t seed)
{
	uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;

	for (size_t i = 0; i < n; i++) {
		x ^= x >> 12;
		x ^= x << 25;
		x ^= x >> 27;
		p[i] = (uint8_t)((x * 0x2545f4914f6cdd1dull) >> 56);
	}
}

/* Truncates, or extends with zeros. */
static void set_length(struct image *im, size_t len)
{
	if (len > im->len)
		memset(im->buf + im->len, 0, len - im->len);
	im->len = len;
}

/* Rewrites the copy as the equivalent v1 delta: signature, entries in sectors. */
static void to_v1(struct image *im)
{
	memcpy(im->buf, PLOOP_SIG_V1, PLOOP_SIG_LEN);
	for (uint32_t v = 0; v < im->src->bat_entries; v++)
		put32(im, SLOT(v), get32(im, SLOT(v)) * im->src->cs);
}

/* ---- damage that needs more than one header field ---- */

static void bad_signature(struct image *im)
{
	memcpy(im->buf, "WithouFreSpacExT", PLOOP_SIG_LEN);
}

static void fbo_unaligned(struct image *im)
{
	put32(im, HDR(m_FirstBlockOffset), get32(im, HDR(m_FirstBlockOffset)) + 1);
}

/* A multiple of the cluster, so that only the size rules can catch it. */
static void fbo_huge(struct image *im)
{
	put32(im, HDR(m_FirstBlockOffset), UINT32_MAX / im->src->cs * im->src->cs);
}

static void msize_too_small(struct image *im)
{
	put32(im, HDR(m_Size), im->src->bat_entries - 1);
}

/* Size, m_Size and first block offset agree with each other, on a disk the file cannot hold. */
static void size_huge_consistent(struct image *im)
{
	uint64_t entries = UINT32_MAX;

	put32(im, HDR(m_Size), (uint32_t)entries);
	put64(im, HDR(m_SizeInSectors), entries * im->src->cs);
	put32(im, HDR(m_FirstBlockOffset), (uint32_t)(ploop_bat_clusters(entries, im->src->cs_bytes) * im->src->cs));
}

static void entry_past_eof(struct image *im)
{
	put32(im, SLOT(im->src->used[0]), (uint32_t)(im->len / im->src->cs_bytes));
}

static void entry_far_past_eof(struct image *im)
{
	put32(im, SLOT(im->src->used[0]), 0xfffffff0u);
}

static void entry_in_bat(struct image *im)
{
	put32(im, SLOT(im->src->used[0]), (uint32_t)im->src->l1 - 1);
}

static void entry_duplicate(struct image *im)
{
	put32(im, SLOT(im->src->used[1]), get32(im, SLOT(im->src->used[0])));
}

static void entry_invalid(struct image *im)
{
	put32(im, SLOT(im->src->used[0]), PLOOP_BAT_INVALID);
}

static void v1_valid(struct image *im)
{
	to_v1(im);
}

static void v1_misaligned(struct image *im)
{
	to_v1(im);
	put32(im, SLOT(im->src->used[0]), get32(im, SLOT(im->src->used[0])) + 1);
}

/* v1 keeps a u32 size; the high half of the v2 field is unused and may hold anything. */
static void v1_size_high_bits(struct image *im)
{
	to_v1(im);
	put32(im, HDR(m_SizeInSectors) + 4, 0xdeadbeefu);
}

/* What an interrupted v1<->v2 conversion leaves: both markers (and here no .idx backup). */
static void convert_flag(struct image *im)
{
	put32(im, HDR(m_DiskInUse), PLOOP_DISK_IN_USE);
	put32(im, HDR(m_Flags), get32(im, HDR(m_Flags)) | PLOOP_FLAG_FMT_CONVERT);
}

static void empty_flag(struct image *im)
{
	put32(im, HDR(m_Flags), get32(im, HDR(m_Flags)) | PLOOP_FLAG_EMPTY);
}

/* The first slot after the BAT points at a real data cluster: readers must not use it. */
static void nonzero_padding(struct image *im)
{
	put32(im, SLOT(im->src->bat_entries), get32(im, SLOT(im->src->used[0])));
}

static void unused_slot_past_eof(struct image *im)
{
	put32(im, SLOT(im->src->bat_entries), 0x7fffffff);
}

/* A v2.1 "closed with change tracking" marker whose extension lies past the end of the file. */
static void v21_extension_past_eof(struct image *im)
{
	put32(im, HDR(m_DiskInUse), PLOOP_DISK_CLOSED_V21);
	put64(im, HDR(m_FormatExtensionOffset), 1ull << 40);
}

/* A cluster nobody references at the end (what a crash between data and BAT write leaves). */
static void leaked_cluster(struct image *im)
{
	size_t at = im->len;

	set_length(im, at + im->src->cs_bytes);
	memset(im->buf + at, 0xa5, im->src->cs_bytes);
}

/* An interrupted file extension: a partial cluster at the end. */
static void unaligned_size(struct image *im)
{
	size_t at = im->len;

	set_length(im, at + 1000);
	memset(im->buf + at, 0x5a, 1000);
}

static void truncate_0(struct image *im)
{
	set_length(im, 0);
}

static void truncate_10(struct image *im)
{
	set_length(im, 10);
}

static void truncate_63(struct image *im)
{
	set_length(im, 63);
}

static void truncate_64(struct image *im)
{
	set_length(im, 64);
}

static void truncate_mid_bat(struct image *im)
{
	set_length(im, im->src->cs_bytes + im->src->cs_bytes / 2);
}

static void truncate_after_bat(struct image *im)
{
	set_length(im, im->src->l1 * im->src->cs_bytes);
}

static void truncate_mid_data(struct image *im)
{
	set_length(im, get32(im, SLOT(im->src->last)) * im->src->cs_bytes + im->src->cs_bytes / 2);
}

static void all_zeros(struct image *im)
{
	memset(im->buf, 0, im->len);
}

static void garbage(struct image *im, size_t len, uint64_t seed)
{
	set_length(im, len);
	fill_random(im->buf, len, seed);
}

static void garbage_1(struct image *im)
{
	garbage(im, 1, 1);
}

static void garbage_512(struct image *im)
{
	garbage(im, 512, 2);
}

static void garbage_64k(struct image *im)
{
	garbage(im, 65536, 3);
}

static void garbage_1m(struct image *im)
{
	garbage(im, 1 << 20, 4);
}

static void garbage_after_signature(struct image *im)
{
	fill_random(im->buf + PLOOP_SIG_LEN, im->len - PLOOP_SIG_LEN, 5);
}

static void garbage_bat(struct image *im)
{
	fill_random(im->buf + 64, im->src->l1 * im->src->cs_bytes - 64, 6);
}

/* ---- the manifest ---- */

/* A case either sets one header field to a constant (field, size, value) or calls apply. */
struct corruption {
	const char *name;
	const char *what;
	void (*apply)(struct image *im);
	size_t field;
	size_t size;
	uint64_t value;
};

#define SET(f, v) NULL, HDR(f), sizeof(((struct ploop_pvd_header *)0)->f), (v)
#define CALL(fn) fn, 0, 0, 0

/* clang-format off */
static const struct corruption cases[] = {
	/* header: each rule of §1.2 and §3.1 step 1 */
	{ "bad-signature", "m_Sig is neither v1 nor v2", CALL(bad_signature) },
	{ "bad-type", "m_Type is 3, not 2", SET(m_Type, 3) },
	{ "cluster-not-pow2", "m_Sectors 100 is not a power of two", SET(m_Sectors, 100) },
	{ "cluster-too-small", "m_Sectors 32 is below 64", SET(m_Sectors, PLOOP_MIN_CLUSTER_SECTORS / 2) },
	{ "cluster-too-large", "m_Sectors 262144 is above 131072", SET(m_Sectors, PLOOP_MAX_CLUSTER_SECTORS * 2) },
	{ "cluster-zero", "m_Sectors is 0", SET(m_Sectors, 0) },
	{ "fbo-zero", "m_FirstBlockOffset is 0", SET(m_FirstBlockOffset, 0) },
	{ "fbo-unaligned", "m_FirstBlockOffset is not a multiple of the cluster", CALL(fbo_unaligned) },
	{ "fbo-huge", "m_FirstBlockOffset is far past the end of the file", CALL(fbo_huge) },
	{ "msize-too-small", "m_Size is one entry short of the virtual size", CALL(msize_too_small) },
	{ "msize-huge", "m_Size 2^32-1: the BAT does not fit before the first block", SET(m_Size, UINT32_MAX) },
	{ "size-zero", "m_SizeInSectors is 0", SET(m_SizeInSectors, 0) },
	{ "size-huge", "m_SizeInSectors is 2^63", SET(m_SizeInSectors, 1ull << 63) },
	{ "size-max", "m_SizeInSectors is 2^64-1 (rounding it up to clusters overflows)", SET(m_SizeInSectors, UINT64_MAX) },
	{ "size-huge-consistent", "a self-consistent header for 2^32-1 clusters in a small file", CALL(size_huge_consistent) },
	/* BAT entries: §1.3 and §3.1 step 5 */
	{ "entry-past-eof", "a BAT entry points at the first cluster past the end of the file", CALL(entry_past_eof) },
	{ "entry-far-past-eof", "a BAT entry is 0xfffffff0", CALL(entry_far_past_eof) },
	{ "entry-in-bat", "a BAT entry points into the header/BAT clusters", CALL(entry_in_bat) },
	{ "entry-duplicate", "two BAT entries point at the same cluster", CALL(entry_duplicate) },
	{ "entry-ffffffff", "a BAT entry is 0xffffffff", CALL(entry_invalid) },
	{ "v1-valid", "control: the source converted to a valid v1 image", CALL(v1_valid) },
	{ "v1-misaligned", "a v1 BAT entry that is not a multiple of the cluster", CALL(v1_misaligned) },
	{ "v1-size-high-bits", "a v1 image with garbage in the unused high half of the size", CALL(v1_size_high_bits) },
	/* markers and flags: §1.7, §1.8 */
	{ "dirty", "m_DiskInUse is set (in use, or not closed cleanly)", SET(m_DiskInUse, PLOOP_DISK_IN_USE) },
	{ "convert-flag", "CIF_FmtVersionConvert and m_DiskInUse set: an interrupted conversion", CALL(convert_flag) },
	{ "empty-flag", "CIF_Empty set on an image that holds data", CALL(empty_flag) },
	{ "v21-extension-past-eof", "a v2.1 marker with its format extension past the end", CALL(v21_extension_past_eof) },
	{ "nonzero-padding", "a BAT slot beyond the virtual size points at a data cluster", CALL(nonzero_padding) },
	{ "unused-slot-past-eof", "a BAT slot beyond the virtual size points past the end", CALL(unused_slot_past_eof) },
	/* file length: §1.1 */
	{ "leaked-cluster", "an unreferenced cluster at the end of the file", CALL(leaked_cluster) },
	{ "unaligned-size", "the file ends in a partial cluster", CALL(unaligned_size) },
	{ "truncated-0", "empty file", CALL(truncate_0) },
	{ "truncated-10", "10 bytes: not even a signature", CALL(truncate_10) },
	{ "truncated-63", "63 bytes: one byte short of a header", CALL(truncate_63) },
	{ "truncated-64", "64 bytes: a header and nothing else", CALL(truncate_64) },
	{ "truncated-mid-bat", "cut in the middle of the second BAT cluster", CALL(truncate_mid_bat) },
	{ "truncated-after-bat", "header and BAT only: every entry points past the end", CALL(truncate_after_bat) },
	{ "truncated-mid-data", "cut in the middle of the last data cluster", CALL(truncate_mid_data) },
	/* garbage */
	{ "all-zeros", "the right length, all zero bytes", CALL(all_zeros) },
	{ "garbage-1", "1 random byte", CALL(garbage_1) },
	{ "garbage-512", "512 random bytes", CALL(garbage_512) },
	{ "garbage-64k", "64 KiB of random bytes", CALL(garbage_64k) },
	{ "garbage-1m", "1 MiB of random bytes", CALL(garbage_1m) },
	{ "garbage-after-signature", "a valid v2 signature, then random bytes", CALL(garbage_after_signature) },
	{ "garbage-bat", "a valid header over a BAT of random bytes", CALL(garbage_bat) },
};
/* clang-format on */

#define N_CASES (sizeof(cases) / sizeof(cases[0]))

/* ---- driver ---- */

static int load_source(const char *path, struct source *s, uint8_t **buf)
{
	struct ploop_pvd_header h;
	struct stat st;
	uint64_t max_cluster = 0;
	int fd = open(path, O_RDONLY), n_used = 0;

	if (fd < 0 || fstat(fd, &st)) {
		fprintf(stderr, "mkcorrupt: %s: %s\n", path, strerror(errno));
		return -1;
	}
	if ((uint64_t)st.st_size < sizeof(h) || (uint64_t)st.st_size > MAX_SOURCE_BYTES) {
		fprintf(stderr, "mkcorrupt: %s: size %lld is not that of a usable source image\n", path,
			(long long)st.st_size);
		close(fd);
		return -1;
	}
	s->len = (size_t)st.st_size;
	*buf = malloc(s->len);
	if (!*buf || read(fd, *buf, s->len) != (ssize_t)s->len) {
		fprintf(stderr, "mkcorrupt: %s: cannot read\n", path);
		close(fd);
		return -1;
	}
	close(fd);
	s->buf = *buf;
	memcpy(&h, s->buf, sizeof(h));
	s->cs = le32toh(h.m_Sectors);
	s->cs_bytes = (uint64_t)s->cs * PLOOP_SECTOR_SIZE;
	s->bat_entries = le32toh(h.m_Size);
	if (memcmp(h.m_Sig, PLOOP_SIG_V2, PLOOP_SIG_LEN) || s->cs < PLOOP_MIN_CLUSTER_SECTORS ||
	    s->cs > PLOOP_MAX_CLUSTER_SECTORS || (s->cs & (s->cs - 1)) || s->len % s->cs_bytes) {
		fprintf(stderr, "mkcorrupt: %s: the source must be a valid v2 image\n", path);
		return -1;
	}
	s->l1 = le32toh(h.m_FirstBlockOffset) / s->cs;
	/* Every case needs something to break: a second BAT cluster, padding, two data clusters. */
	if (s->l1 < 2 || s->l1 * s->cs_bytes / 4 <= PLOOP_MAP_OFFSET + (uint64_t)s->bat_entries ||
	    s->l1 * s->cs_bytes > s->len) {
		fprintf(stderr,
			"mkcorrupt: %s: needs a BAT of two or more clusters with padding after it "
			"(e.g. 512M with 32K clusters)\n",
			path);
		return -1;
	}
	for (uint32_t v = 0; v < s->bat_entries; v++) {
		uint32_t e;

		memcpy(&e, s->buf + SLOT(v), 4);
		e = le32toh(e);
		if (!e)
			continue;
		if (n_used < 2)
			s->used[n_used] = v;
		n_used++;
		if (e > max_cluster) {
			max_cluster = e;
			s->last = v;
		}
	}
	if (n_used < 2 || max_cluster >= s->len / s->cs_bytes) {
		fprintf(stderr, "mkcorrupt: %s: needs two or more allocated clusters, all inside the file\n", path);
		return -1;
	}
	return 0;
}

static int write_case(const char *dir, const struct corruption *c, const struct source *s, struct image *im)
{
	char path[4096];
	size_t done = 0;
	int fd;

	memcpy(im->buf, s->buf, s->len);
	im->len = s->len;
	if (c->apply)
		c->apply(im);
	else if (c->size == 4)
		put32(im, c->field, (uint32_t)c->value);
	else
		put64(im, c->field, c->value);
	snprintf(path, sizeof(path), "%s/%s", dir, c->name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0) {
		fprintf(stderr, "mkcorrupt: %s: %s\n", path, strerror(errno));
		return -1;
	}
	while (done < im->len) {
		ssize_t n = write(fd, im->buf + done, im->len - done);

		if (n <= 0) {
			fprintf(stderr, "mkcorrupt: %s: %s\n", path, strerror(errno));
			close(fd);
			return -1;
		}
		done += (size_t)n;
	}
	if (close(fd)) {
		fprintf(stderr, "mkcorrupt: %s: %s\n", path, strerror(errno));
		return -1;
	}
	printf("%s\n", path);
	return 0;
}

static bool wanted(const char *name, int argc, char **argv)
{
	for (int a = 3; a < argc; a++)
		if (!strcmp(argv[a], name))
			return true;
	return argc == 3;
}

int main(int argc, char **argv)
{
	struct source s = { 0 };
	struct image im = { 0 };
	uint8_t *src = NULL;
	int rc = 0;

	if (argc == 2 && !strcmp(argv[1], "-l")) {
		for (size_t i = 0; i < N_CASES; i++)
			printf("%-24s %s\n", cases[i].name, cases[i].what);
		return 0;
	}
	if (argc < 3) {
		fprintf(stderr,
			"usage: mkcorrupt SOURCE OUTDIR [CASE...]  write damaged copies of SOURCE, print their paths\n"
			"       mkcorrupt -l                      list the cases\n"
			"SOURCE: a valid v2 image with a BAT of two or more clusters and two or more allocated\n"
			"clusters (e.g. ploop init -s 512M -b 64, then write a few clusters).\n");
		return 2;
	}
	for (int a = 3; a < argc; a++) {
		size_t i = 0;

		while (i < N_CASES && strcmp(cases[i].name, argv[a]))
			i++;
		if (i == N_CASES) {
			fprintf(stderr, "mkcorrupt: unknown case '%s' (mkcorrupt -l lists them)\n", argv[a]);
			return 2;
		}
	}
	if (load_source(argv[1], &s, &src)) {
		free(src);
		return 1;
	}
	/* Room for the cases that grow the file (a leaked cluster) or replace it (1 MiB of garbage). */
	im.cap = s.len + s.cs_bytes + (1u << 20);
	im.buf = malloc(im.cap);
	im.src = &s;
	if (!im.buf) {
		fprintf(stderr, "mkcorrupt: out of memory\n");
		free(src);
		return 1;
	}
	for (size_t i = 0; i < N_CASES && !rc; i++)
		if (wanted(cases[i].name, argc, argv) && write_case(argv[2], &cases[i], &s, &im))
			rc = 1;
	free(im.buf);
	free(src);
	return rc;
}
