/* libFuzzer target: the input is a delta file, opened, looked up, read and checked in memory (small inputs are
 * also repaired, written, grown and merged, on copies); every answer is checked against the raw bytes. */
#include <endian.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "memio.h"

#define IMG "img"		/* the input, never modified */
#define IMG_RW "img-rw"		/* a copy for operations that write */
#define TOP "top"		/* a fresh delta over the input */
#define SMALL_INPUT (256u << 10)	/* inputs up to this size also get the writing operations */
#define MAX_READ (256u << 10)
/* The harness's own loops over every byte or cluster are not what the fuzzer should steer by. */
#define VERIFIER __attribute__((no_sanitize("coverage"), noinline))

struct input {
	const uint8_t *data;
	size_t size;
	uint64_t hash;
	/* header fields as the format defines them, decoded here independently of the library */
	int version;		/* 1, 2, 0: no ploop signature (or shorter than a header) */
	uint32_t cluster_sectors, bat_entries, disk_in_use, first_block_offset, flags;
	uint64_t size_sectors;
};

__attribute__((format(printf, 3, 4), noreturn)) static void violated(int line, const char *cond, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "\nfuzz_delta.c:%d: invariant violated: %s\n  ", line, cond);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	abort();
}

#define REQUIRE(cond, ...)                                                          \
	do {                                                                        \
		if (!(cond))                                                        \
			violated(__LINE__, #cond, __VA_ARGS__);                     \
	} while (0)

static uint32_t le32_at(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, 4);
	return le32toh(v);
}

static uint64_t le64_at(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return le64toh(v);
}

VERIFIER static void decode_input(struct input *in, const uint8_t *data, size_t size)
{
	uint64_t h = 0xcbf29ce484222325ull;

	memset(in, 0, sizeof(*in));
	in->data = data;
	in->size = size;
	for (size_t i = 0; i < size; i++)
		h = (h ^ data[i]) * 0x100000001b3ull;
	in->hash = h ^ (h >> 29);
	if (size < 64)
		return;
	if (!memcmp(data, PLOOP_SIG_V1, PLOOP_SIG_LEN))
		in->version = 1;
	else if (!memcmp(data, PLOOP_SIG_V2, PLOOP_SIG_LEN))
		in->version = 2;
	in->cluster_sectors = le32_at(data + 28);
	in->bat_entries = le32_at(data + 32);
	in->size_sectors = in->version == 1 ? le32_at(data + 36) : le64_at(data + 36);
	in->disk_in_use = le32_at(data + 44);
	in->first_block_offset = le32_at(data + 48);
	in->flags = le32_at(data + 52);
}

/* Raw BAT entry for virtual cluster @v (0 past the end of the input). */
static uint32_t raw_entry(const struct input *in, uint64_t v)
{
	uint64_t off = 64 + v * 4;

	return off + 4 <= in->size ? le32_at(in->data + off) : 0;
}

/* A few numbers derived from the input, for choices that should vary between inputs. */
static uint64_t pick(const struct input *in, int k)
{
	uint64_t x = in->hash + (uint64_t)k * 0x9e3779b97f4a7c15ull;

	x ^= x >> 31;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	return x;
}

/* Every failure is reported as one line with its status; successes leave the error clean. */
static void check_result(const char *what, int r, const struct ploop_error *err)
{
	if (!r) {
		REQUIRE(err->status == 0, "%s returned 0 but recorded status %d: %s", what, err->status, err->msg);
		return;
	}
	REQUIRE(r == err->status, "%s returned %d but recorded status %d", what, r, err->status);
	REQUIRE(r > 0 && r < 64, "%s returned %d", what, r);
	REQUIRE(memchr(err->msg, '\0', sizeof(err->msg)) != NULL, "%s: message is not terminated", what);
	REQUIRE(err->msg[0] != '\0', "%s failed with status %d and no message", what, r);
	REQUIRE(strchr(err->msg, '\n') == NULL, "%s: message is more than one line: %s", what, err->msg);
}

static void on_report(void *ctx, const char *msg)
{
	REQUIRE(msg && memchr(msg, '\0', 4096), "check reported a bad line");
	REQUIRE(strchr(msg, '\n') == NULL, "check reported more than one line: %s", msg);
	++*(int *)ctx;
}

VERIFIER static void require_unchanged(const struct input *in, const char *after)
{
	const uint8_t *data;
	uint64_t len;

	REQUIRE(memio_get(IMG, &data, &len), "the input file disappeared after %s", after);
	REQUIRE(len == in->size && (!len || !memcmp(data, in->data, len)), "%s modified the input file", after);
	REQUIRE(memio_ro_writes() == 0, "%s tried to write through a read-only file", after);
}

/* ---- one delta ---- */

VERIFIER static uint64_t cluster_bytes(const struct ploop_delta_info *i)
{
	return (uint64_t)i->cluster_sectors * PLOOP_SECTOR_SIZE;
}

VERIFIER static uint64_t vclusters_of(const struct ploop_delta_info *i)
{
	return i->size_sectors / i->cluster_sectors + (i->size_sectors % i->cluster_sectors != 0);
}

/* What a successful open says about the header must be what the bytes say, and consistent. */
static void check_info(const struct input *in, struct ploop_delta *d, unsigned flags, struct ploop_delta_info *i)
{
	uint64_t cb;

	ploop_delta_get_info(d, i);
	REQUIRE(in->version && i->version == in->version, "version %d, signature says %d", i->version, in->version);
	REQUIRE(ploop_cluster_size_valid(i->cluster_sectors) && i->cluster_sectors == in->cluster_sectors,
		"cluster of %" PRIu32 " sectors, header says %" PRIu32, i->cluster_sectors, in->cluster_sectors);
	cb = cluster_bytes(i);
	REQUIRE(i->bat_entries == in->bat_entries, "%" PRIu32 " BAT entries, header says %" PRIu32, i->bat_entries,
		in->bat_entries);
	REQUIRE(i->size_sectors == in->size_sectors, "size %" PRIu64 ", header says %" PRIu64, i->size_sectors,
		in->size_sectors);
	REQUIRE(i->size_sectors > 0, "opened an image of size 0");
	REQUIRE(i->size_sectors <= (uint64_t)i->bat_entries * i->cluster_sectors,
		"virtual size %" PRIu64 " sectors is not covered by %" PRIu32 " BAT entries of %" PRIu32 " sectors",
		i->size_sectors, i->bat_entries, i->cluster_sectors);
	REQUIRE(i->file_size == in->size, "file size %" PRIu64 ", input has %zu bytes", i->file_size, in->size);
	REQUIRE(i->bat_clusters >= 1 && i->bat_clusters == in->first_block_offset / in->cluster_sectors,
		"%" PRIu32 " BAT clusters for first block offset %" PRIu32, i->bat_clusters, in->first_block_offset);
	REQUIRE((uint64_t)i->bat_clusters * cb <= i->file_size, "BAT area of %" PRIu32 " clusters is past EOF",
		i->bat_clusters);
	REQUIRE((PLOOP_MAP_OFFSET + (uint64_t)i->bat_entries) * 4 <= (uint64_t)i->bat_clusters * cb,
		"%" PRIu32 " BAT entries do not fit in %" PRIu32 " clusters", i->bat_entries, i->bat_clusters);
	REQUIRE(i->disk_in_use == in->disk_in_use && i->flags == in->flags, "in-use/flags differ from the header");
	if (!(flags & PLOOP_OPEN_ALLOW_DIRTY))
		REQUIRE(i->disk_in_use != PLOOP_DISK_IN_USE && !(i->flags & PLOOP_FLAG_FMT_CONVERT),
			"opened a dirty image without PLOOP_OPEN_ALLOW_DIRTY");
	if (!(flags & PLOOP_OPEN_HEADER_ONLY))
		REQUIRE(i->allocated_clusters <= vclusters_of(i) &&
				i->allocated_clusters <= i->file_size / cb - i->bat_clusters,
			"%" PRIu64 " allocated clusters", i->allocated_clusters);
}

/* Every lookup agrees with the raw BAT and lands inside the file, past the BAT, on a cluster of
 * its own. */
VERIFIER static void check_lookups(const struct input *in, struct ploop_delta *d, const struct ploop_delta_info *i)
{
	uint64_t cb = cluster_bytes(i), nv = vclusters_of(i), file_clusters = in->size / cb, allocated = 0, off;
	uint8_t *used = calloc(file_clusters / 8 + 1, 1);

	REQUIRE(used, "out of memory");
	for (uint64_t v = 0; v < nv; v++) {
		uint32_t e = raw_entry(in, v);
		uint64_t want, c;

		if (!ploop_delta_lookup(d, v, &off)) {
			REQUIRE(e == 0, "cluster %" PRIu64 " has BAT entry %#" PRIx32 " but lookup finds nothing", v,
				e);
			continue;
		}
		want = i->version == 1 ? (uint64_t)e * PLOOP_SECTOR_SIZE : (uint64_t)e * cb;
		REQUIRE(e != 0 && off == want,
			"cluster %" PRIu64 " at offset %" PRIu64 ", BAT entry %#" PRIx32 " says %" PRIu64, v, off, e,
			want);
		REQUIRE(off % cb == 0, "cluster %" PRIu64 " at unaligned offset %" PRIu64, v, off);
		REQUIRE(off >= (uint64_t)i->bat_clusters * cb, "cluster %" PRIu64 " at %" PRIu64 " is inside the BAT",
			v, off);
		REQUIRE(off + cb <= in->size, "cluster %" PRIu64 " at %" PRIu64 " + %" PRIu64 " is past EOF %zu", v,
			off, cb, in->size);
		c = off / cb;
		REQUIRE(!(used[c / 8] & (1u << (c % 8))),
			"file cluster %" PRIu64 " is mapped twice (cluster %" PRIu64 ")", c, v);
		used[c / 8] |= (uint8_t)(1u << (c % 8));
		allocated++;
	}
	free(used);
	REQUIRE(allocated == i->allocated_clusters, "info counts %" PRIu64 " allocated clusters, lookups find %" PRIu64,
		i->allocated_clusters, allocated);
	REQUIRE(!ploop_delta_lookup(d, nv, &off), "lookup past the virtual size succeeds");
	REQUIRE(!ploop_delta_lookup(d, i->bat_entries, &off), "lookup of cluster m_Size succeeds");
	REQUIRE(!ploop_delta_lookup(d, UINT64_MAX, &off), "lookup of cluster 2^64-1 succeeds");
}

/* Opens the input with @flags; on success checks it all and fills @info. */
static bool probe_open(const struct input *in, unsigned flags, struct ploop_delta_info *info)
{
	struct ploop_error err = { 0 };
	struct ploop_delta *d = NULL;
	int r = ploop_delta_open(IMG, flags, 0, 0, &d, &err);

	check_result("ploop_delta_open", r, &err);
	if (r) {
		REQUIRE(d == NULL, "failed open returned a delta");
		REQUIRE(memio_open_files() == 0, "failed open left a file open");
		return false;
	}
	check_info(in, d, flags, info);
	if (!(flags & PLOOP_OPEN_HEADER_ONLY))
		check_lookups(in, d, info);
	r = ploop_delta_close(d, &err);
	check_result("ploop_delta_close", r, &err);
	REQUIRE(r == 0, "closing a read-only delta failed: %s", err.msg);
	REQUIRE(memio_open_files() == 0, "close left a file open");
	return true;
}

/* ---- chains ---- */

VERIFIER static bool all_zero(const uint8_t *p, uint64_t n)
{
	return !n || (p[0] == 0 && !memcmp(p, p + 1, n - 1));
}

/* Reads [off, off+len) through the chain and compares it with the files the lookups point at. */
VERIFIER static void read_and_verify(struct ploop_chain *c, uint64_t off, uint64_t len)
{
	struct ploop_error err = { 0 };
	uint64_t cb = ploop_chain_cluster_bytes(c), pos = 0;
	uint8_t *buf;
	int r;

	if (len > MAX_READ)
		len = MAX_READ;
	buf = malloc(len ? len : 1);
	REQUIRE(buf, "out of memory");
	r = ploop_chain_read(c, buf, len, off, &err);
	check_result("ploop_chain_read", r, &err);
	REQUIRE(r == 0, "in-range read of %" PRIu64 " bytes at %" PRIu64 " failed: %s", len, off, err.msg);
	while (pos < len) {
		uint64_t at = off + pos, v = at / cb, in = at % cb, n = cb - in < len - pos ? cb - in : len - pos, foff;
		int level = ploop_chain_lookup(c, v, &foff);

		REQUIRE(level >= -1 && level < ploop_chain_depth(c), "lookup returned level %d", level);
		if (level < 0) {
			REQUIRE(all_zero(buf + pos, n),
				"hole at %" PRIu64 " (%" PRIu64 " bytes) does not read as zeros", at, n);
		} else {
			const uint8_t *data;
			uint64_t size, fo = foff + in, inside;

			REQUIRE(memio_get(ploop_chain_path(c, level), &data, &size), "level %d has no file", level);
			/* Bytes past the end of the file (a raw base's partial cluster) read as zeros. */
			inside = fo >= size ? 0 : size - fo < n ? size - fo : n;
			REQUIRE((!inside || !memcmp(buf + pos, data + fo, inside)) &&
				    all_zero(buf + pos + inside, n - inside),
				"%" PRIu64 " bytes at %" PRIu64 " differ from level %d at file offset %" PRIu64, n, at,
				level, fo);
		}
		pos += n;
	}
	free(buf);
}

/* Reads outside the disk fail cleanly. */
static void check_read_bounds(struct ploop_chain *c)
{
	uint64_t size = ploop_chain_size(c);
	uint8_t buf[16];
	const struct {
		uint64_t off, len;
	} bad[] = { { size, 1 }, { size + 1, 0 }, { UINT64_MAX, 1 }, { 0, size + 1 }, { size ? size - 1 : 0, 2 } };

	for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
		struct ploop_error err = { 0 };
		int r;

		r = ploop_chain_read(c, buf, (size_t)bad[k].len, bad[k].off, &err);
		check_result("ploop_chain_read", r, &err);
		REQUIRE(r != 0,
			"read of %" PRIu64 " bytes at %" PRIu64 " past the end of a %" PRIu64 "-byte disk succeeded",
			bad[k].len, bad[k].off, size);
	}
}

/* The usual ranges: both ends, a cluster boundary, the first and last mapped cluster, and one
 * chosen by the input. */
VERIFIER static void read_ranges(const struct input *in, struct ploop_chain *c)
{
	uint64_t size = ploop_chain_size(c), cb = ploop_chain_cluster_bytes(c), nv = (size + cb - 1) / cb, off;
	uint64_t first = UINT64_MAX, last = UINT64_MAX, scan = nv < (1u << 20) ? nv : (1u << 20);

	if (!size)
		return;
	read_and_verify(c, 0, size < 4096 ? size : 4096);
	read_and_verify(c, size - (size < 4096 ? size : 4096), size < 4096 ? size : 4096);
	if (size > cb)
		read_and_verify(c, cb - 512, size - (cb - 512) < 1024 ? size - (cb - 512) : 1024);
	for (uint64_t v = 0; v < scan; v++) {
		if (ploop_chain_lookup(c, v, &off) < 0)
			continue;
		if (first == UINT64_MAX)
			first = v;
		last = v;
	}
	if (first != UINT64_MAX) {
		read_and_verify(c, first * cb, size - first * cb < cb ? size - first * cb : cb);
		read_and_verify(c, last * cb, size - last * cb < cb ? size - last * cb : cb);
	}
	off = pick(in, 1) % size;
	read_and_verify(c, off, (pick(in, 2) % 65536 + 1) < size - off ? pick(in, 2) % 65536 + 1 : size - off);
}

static void probe_chain(const struct input *in, bool opens, const struct ploop_delta_info *info)
{
	struct ploop_error err = { 0 };
	const char *paths[] = { IMG };
	struct ploop_chain *c = NULL;
	int r = ploop_chain_open_files(paths, 1, false, 0, PLOOP_OPEN_ALLOW_DIRTY, &c, &err);

	check_result("ploop_chain_open_files", r, &err);
	REQUIRE(!r == opens, "the chain %s where the delta %s", r ? "failed" : "opened", opens ? "opened" : "failed");
	if (r) {
		REQUIRE(memio_open_files() == 0, "failed chain open left a file open");
		return;
	}
	REQUIRE(ploop_chain_depth(c) == 1 && ploop_chain_delta(c, 0) && !ploop_chain_delta(c, 1) &&
			!ploop_chain_delta(c, -1) && !strcmp(ploop_chain_path(c, 0), IMG),
		"chain of one delta describes itself wrongly");
	REQUIRE(ploop_chain_size(c) == info->size_sectors * PLOOP_SECTOR_SIZE &&
			ploop_chain_cluster_bytes(c) == cluster_bytes(info),
		"chain size %" PRIu64 " / cluster %" PRIu32 " differ from the delta's", ploop_chain_size(c),
		ploop_chain_cluster_bytes(c));
	read_ranges(in, c);
	check_read_bounds(c);
	r = ploop_chain_close(c, &err);
	REQUIRE(r == 0, "closing a read-only chain failed: %s", err.msg);
	REQUIRE(memio_open_files() == 0, "chain close left a file open");
}

/* Any file opens as a raw image; its clusters map to themselves. */
static void probe_raw(const struct input *in)
{
	struct ploop_error err = { 0 };
	struct ploop_delta *d = NULL;
	struct ploop_delta_info i;
	const char *paths[] = { IMG };
	struct ploop_chain *c = NULL;
	uint64_t cb = 64 * PLOOP_SECTOR_SIZE, off;
	int r = ploop_delta_open(IMG, PLOOP_OPEN_RAW, 64, 0, &d, &err);

	REQUIRE(r == 0, "raw open of a %zu-byte file failed: %s", in->size, err.msg);
	ploop_delta_get_info(d, &i);
	REQUIRE(i.version == 0 && i.cluster_sectors == 64 && i.file_size == in->size &&
			i.size_sectors == (in->size + PLOOP_SECTOR_SIZE - 1) / PLOOP_SECTOR_SIZE &&
			i.allocated_clusters == (in->size + cb - 1) / cb,
		"raw info is wrong");
	for (uint64_t v = 0; v < 8; v++) {
		bool hit = ploop_delta_lookup(d, v, &off);

		REQUIRE(hit == (v * cb < in->size) && (!hit || off == v * cb), "raw lookup of cluster %" PRIu64, v);
	}
	ploop_delta_close(d, NULL);
	r = ploop_chain_open_files(paths, 1, true, 64, 0, &c, &err);
	REQUIRE(r == 0, "raw chain open failed: %s", err.msg);
	read_and_verify(c, 0, ploop_chain_size(c) < 8192 ? ploop_chain_size(c) : 8192);
	check_read_bounds(c);
	ploop_chain_close(c, NULL);
	REQUIRE(memio_open_files() == 0, "raw close left a file open");
}

/* ---- check ---- */

static int run_check(const char *path, unsigned flags, struct ploop_error *err)
{
	int lines = 0;
	struct ploop_check_params p = { .flags = flags, .raw_cluster_sectors = 64, .report = on_report, .ctx = &lines };
	int r = ploop_check_delta(path, &p, err);

	check_result("ploop_check_delta", r, err);
	REQUIRE(memio_open_files() == 0, "check left a file open");
	return r;
}

/* Read-only checks change nothing; one that finds nothing wrong means the image opens. */
static void probe_check_ro(const struct input *in)
{
	struct ploop_error err = { 0 };
	struct ploop_delta_info info;
	int r;

	r = run_check(IMG, PLOOP_CHECK_RDONLY | PLOOP_CHECK_FORCE | PLOOP_CHECK_CLUSTERS, &err);
	require_unchanged(in, "a read-only check");
	if (!r)
		REQUIRE(probe_open(in, 0, &info), "check -r -f -c passes but the image does not open");
	memset(&err, 0, sizeof(err));
	run_check(IMG, PLOOP_CHECK_RDONLY, &err);
	memset(&err, 0, sizeof(err));
	run_check(IMG, PLOOP_CHECK_RDONLY | PLOOP_CHECK_RAW, &err);
	require_unchanged(in, "a read-only check");
}

/* Mappings a repair kept are the ones the input had. */
VERIFIER static void check_repaired_mappings(const struct input *in, struct ploop_delta *d,
					     const struct ploop_delta_info *i)
{
	uint64_t nv = vclusters_of(i), off;

	for (uint64_t v = 0; v < nv; v++) {
		uint32_t e = raw_entry(in, v);

		if (!ploop_delta_lookup(d, v, &off))
			continue;
		REQUIRE(off == (i->version == 1 ? (uint64_t)e * PLOOP_SECTOR_SIZE : (uint64_t)e * cluster_bytes(i)),
			"check moved cluster %" PRIu64 " (entry %#" PRIx32 ") to %" PRIu64, v, e, off);
	}
}

/* A repair that reports success leaves an image that opens clean, passes a second check, and
 * keeps every mapping it did not drop. */
static void probe_check_rw(const struct input *in)
{
	unsigned flags = PLOOP_CHECK_FORCE | PLOOP_CHECK_HARD | PLOOP_CHECK_CLUSTERS;
	struct ploop_error err = { 0 };
	struct ploop_delta *d = NULL;
	struct ploop_delta_info i;
	const uint8_t *data;
	uint64_t size;
	int r;

	if (pick(in, 3) & 1)
		flags |= PLOOP_CHECK_DROP_INUSE;
	REQUIRE(memio_put(IMG_RW, in->data, in->size) == 0, "cannot copy the input");
	r = run_check(IMG_RW, flags, &err);
	REQUIRE(memio_ro_writes() == 0, "check wrote through a read-only file");
	if (r)
		goto out;
	r = ploop_delta_open(IMG_RW, 0, 0, 0, &d, &err);
	REQUIRE(r == 0, "check -f -F -c repaired the image but it does not open: %s", err.msg);
	ploop_delta_get_info(d, &i);
	REQUIRE(memio_get(IMG_RW, &data, &size), "the checked file disappeared");
	/* Extended to a whole cluster at most; a dirty image whose flag was dropped may lose its
	 * unreferenced tail (the mappings are checked below). */
	if ((flags & PLOOP_CHECK_DROP_INUSE) && in->disk_in_use == PLOOP_DISK_IN_USE)
		REQUIRE(size % cluster_bytes(&i) == 0 && size < in->size + cluster_bytes(&i),
			"check left a file of %" PRIu64 " bytes from %zu", size, in->size);
	else
		REQUIRE(size % cluster_bytes(&i) == 0 && size >= in->size && size - in->size < cluster_bytes(&i),
			"check left a file of %" PRIu64 " bytes from %zu", size, in->size);
	check_repaired_mappings(in, d, &i);
	ploop_delta_close(d, NULL);
	memset(&err, 0, sizeof(err));
	r = run_check(IMG_RW, PLOOP_CHECK_RDONLY | PLOOP_CHECK_FORCE | PLOOP_CHECK_CLUSTERS, &err);
	REQUIRE(r == 0, "a second check after a successful repair fails: %s", err.msg);
out:
	REQUIRE(memio_open_files() == 0, "left a file open");
	memio_unlink(IMG_RW);
}

/* ---- writing through a snapshot ---- */

/* A fresh top delta over the input: reads fall through to it, a write lands on the top (copying
 * the cluster up), the input stays as it was, and everything survives a close and reopen. */
static void probe_write(const struct input *in, const struct ploop_delta_info *info)
{
	struct ploop_create_params cp = { .size_sectors = info->size_sectors,
					  .cluster_sectors = info->cluster_sectors,
					  .version = pick(in, 4) & 1 ? 1 : 2,
					  .mode = PLOOP_MODE_EXPANDED };
	const char *paths[] = { IMG, TOP };
	struct ploop_error err = { 0 };
	struct ploop_chain *c = NULL;
	uint64_t size, cb = cluster_bytes(info), off, len, a, b;
	uint8_t *before, *after, *pattern;
	int r;

	r = ploop_delta_create(TOP, &cp, &err);
	check_result("ploop_delta_create", r, &err);
	REQUIRE(memio_open_files() == 0, "create left a file open");
	if (r)
		return;
	r = ploop_chain_open_files(paths, 2, false, 0, PLOOP_OPEN_RDWR | PLOOP_OPEN_ALLOW_DIRTY, &c, &err);
	REQUIRE(r == 0, "a chain of the input and a fresh top does not open: %s", err.msg);
	size = ploop_chain_size(c);
	REQUIRE(size >= info->size_sectors * PLOOP_SECTOR_SIZE && size - info->size_sectors * PLOOP_SECTOR_SIZE < cb,
		"top of %" PRIu64 " bytes over a base of %" PRIu64 " sectors", size, info->size_sectors);
	read_ranges(in, c);

	/* The write and the window around it that must read as before, with the write applied. */
	off = pick(in, 5) % size;
	len = pick(in, 6) % (2 * cb) + 1;
	if (len > size - off)
		len = size - off;
	a = off >= cb ? off - cb : 0;
	b = size - (off + len) > cb ? off + len + cb : size;
	before = malloc(b - a);
	after = malloc(b - a);
	pattern = malloc(len);
	REQUIRE(before && after && pattern, "out of memory");
	for (uint64_t k = 0; k < len; k++)
		pattern[k] = pick(in, 7) % 4 == 0 ? 0 : (uint8_t)(k * 31 + 7);
	r = ploop_chain_read(c, before, b - a, a, &err);
	REQUIRE(r == 0, "read before the write failed: %s", err.msg);
	r = ploop_chain_write(c, pattern, len, off, &err);
	check_result("ploop_chain_write", r, &err);
	REQUIRE(r == 0, "write of %" PRIu64 " bytes at %" PRIu64 " failed: %s", len, off, err.msg);
	memcpy(before + (off - a), pattern, len);
	r = ploop_chain_read(c, after, b - a, a, &err);
	REQUIRE(r == 0 && !memcmp(before, after, b - a), "the disk does not read back what was written at %" PRIu64,
		off);
	read_and_verify(c, a, b - a);
	r = ploop_chain_flush(c, &err);
	REQUIRE(r == 0, "flush failed: %s", err.msg);
	r = ploop_chain_close(c, &err);
	REQUIRE(r == 0, "close failed: %s", err.msg);
	REQUIRE(memio_open_files() == 0, "chain close left a file open");
	require_unchanged(in, "a write to the top delta");

	r = ploop_chain_open_files(paths, 2, false, 0, PLOOP_OPEN_ALLOW_DIRTY, &c, &err);
	REQUIRE(r == 0, "the chain does not reopen after a write: %s", err.msg);
	r = ploop_chain_read(c, after, b - a, a, &err);
	REQUIRE(r == 0 && !memcmp(before, after, b - a), "the write at %" PRIu64 " did not survive a reopen", off);
	read_and_verify(c, a, b - a);
	ploop_chain_close(c, NULL);
	r = run_check(TOP, PLOOP_CHECK_RDONLY | PLOOP_CHECK_FORCE | PLOOP_CHECK_CLUSTERS, &err);
	REQUIRE(r == 0, "the top delta written by the library does not pass check: %s", err.msg);
	free(before);
	free(after);
	free(pattern);
	memio_unlink(TOP);
}

/* The input itself (a copy) written as a one-delta disk, the way a mount or `ploop-io write` does:
 * the write reads back, before and after a reopen, and the bytes around it do not change. */
static void probe_write_in_place(const struct input *in, const struct ploop_delta_info *info)
{
	const char *paths[] = { IMG_RW };
	struct ploop_error err = { 0 };
	struct ploop_chain *c = NULL;
	uint64_t size, cb = cluster_bytes(info), off, len, a, b;
	uint8_t *want, *got, *pattern;
	int r;

	REQUIRE(memio_put(IMG_RW, in->data, in->size) == 0, "cannot copy the input");
	r = ploop_chain_open_files(paths, 1, false, 0, PLOOP_OPEN_RDWR | PLOOP_OPEN_ALLOW_DIRTY, &c, &err);
	REQUIRE(r == 0, "the input opens read-only but not as a writable chain: %s", err.msg);
	size = ploop_chain_size(c);
	/* Somewhere chosen by the input, or in the last cluster of the disk. */
	off = pick(in, 10) & 1 ? pick(in, 11) % size : size - 1 - pick(in, 11) % (size < cb ? size : cb);
	len = pick(in, 12) % cb + 1;
	if (len > size - off)
		len = size - off;
	a = off >= cb ? off - cb : 0;
	b = size - (off + len) > cb ? off + len + cb : size;
	want = malloc(b - a);
	got = malloc(b - a);
	pattern = malloc(len);
	REQUIRE(want && got && pattern, "out of memory");
	for (uint64_t k = 0; k < len; k++)
		pattern[k] = (uint8_t)(k * 13 + 1) | 1;
	r = ploop_chain_read(c, want, b - a, a, &err);
	REQUIRE(r == 0, "read before the write failed: %s", err.msg);
	r = ploop_chain_write(c, pattern, len, off, &err);
	check_result("ploop_chain_write", r, &err);
	if (r) {
		/* Allowed only when the file cannot grow (v1 addressing, the memory cap). */
		REQUIRE(r == PLOOP_ERR_WRITE || r == PLOOP_ERR_FALLOCATE, "write failed with status %d: %s", r,
			err.msg);
		ploop_chain_close(c, NULL);
		goto out;
	}
	memcpy(want + (off - a), pattern, len);
	r = ploop_chain_read(c, got, b - a, a, &err);
	REQUIRE(r == 0 && !memcmp(want, got, b - a),
		"the disk does not read back %" PRIu64 " bytes written at %" PRIu64, len, off);
	r = ploop_chain_close(c, &err);
	REQUIRE(r == 0, "close after a write failed: %s", err.msg);
	REQUIRE(memio_open_files() == 0, "chain close left a file open");
	r = ploop_chain_open_files(paths, 1, false, 0, PLOOP_OPEN_ALLOW_DIRTY, &c, &err);
	REQUIRE(r == 0, "the image does not reopen after a write: %s", err.msg);
	r = ploop_chain_read(c, got, b - a, a, &err);
	REQUIRE(r == 0 && !memcmp(want, got, b - a),
		"%" PRIu64 " bytes written at %" PRIu64 " did not survive a reopen", len, off);
	read_and_verify(c, a, b - a);
	ploop_chain_close(c, NULL);
out:
	REQUIRE(memio_open_files() == 0, "left a file open");
	free(want);
	free(got);
	free(pattern);
	memio_unlink(IMG_RW);
}

/* ---- merge ---- */

/* The mapped clusters of a chain and what they read as. */
struct disk_image {
	uint64_t size, cb, n;
	uint64_t *v;
	uint8_t *data;		/* n clusters of cb bytes (the last one of the disk may be short, zero-padded) */
};

static void capture(struct ploop_chain *c, struct disk_image *img)
{
	uint64_t off, nv;

	img->size = ploop_chain_size(c);
	img->cb = ploop_chain_cluster_bytes(c);
	nv = (img->size + img->cb - 1) / img->cb;
	img->n = 0;
	for (uint64_t v = 0; v < nv; v++)
		img->n += ploop_chain_lookup(c, v, &off) >= 0;
	img->v = calloc(img->n + 1, sizeof(*img->v));
	img->data = calloc(img->n + 1, img->cb);
	REQUIRE(img->v && img->data, "out of memory");
	for (uint64_t v = 0, k = 0; v < nv; v++) {
		struct ploop_error err = { 0 };
		uint64_t len = img->size - v * img->cb < img->cb ? img->size - v * img->cb : img->cb;
		int r;

		if (ploop_chain_lookup(c, v, &off) < 0)
			continue;
		img->v[k] = v;
		r = ploop_chain_read(c, img->data + k * img->cb, len, v * img->cb, &err);
		REQUIRE(r == 0, "read of cluster %" PRIu64 " failed: %s", v, err.msg);
		k++;
	}
}

/* @c holds exactly the clusters of @img, with the same bytes (a larger @c has only holes beyond). */
static void compare_capture(struct ploop_chain *c, const struct disk_image *img, const char *when)
{
	uint64_t size = ploop_chain_size(c), nv = (size + img->cb - 1) / img->cb, off, k = 0;
	uint8_t *buf = malloc(img->cb);

	REQUIRE(buf, "out of memory");
	REQUIRE(size >= img->size, "%s: the disk shrank from %" PRIu64 " to %" PRIu64 " bytes", when, img->size, size);
	for (uint64_t v = 0; v < nv; v++) {
		struct ploop_error err = { 0 };
		bool mapped = ploop_chain_lookup(c, v, &off) >= 0;
		uint64_t len = size - v * img->cb < img->cb ? size - v * img->cb : img->cb;

		if (k < img->n && img->v[k] == v) {
			REQUIRE(mapped, "%s: cluster %" PRIu64 " was lost", when, v);
			REQUIRE(ploop_chain_read(c, buf, len, v * img->cb, &err) == 0, "%s: read failed: %s", when,
				err.msg);
			if (len > img->size - v * img->cb)
				len = img->size - v * img->cb;
			REQUIRE(!memcmp(buf, img->data + k * img->cb, len), "%s: cluster %" PRIu64 " changed", when, v);
			k++;
		} else {
			REQUIRE(!mapped, "%s: cluster %" PRIu64 " (a hole) is mapped", when, v);
		}
	}
	free(buf);
}

static void free_capture(struct disk_image *img)
{
	free(img->v);
	free(img->data);
}

/* Writes a pattern somewhere chosen by the input into the top of @paths. */
static void scribble(const struct input *in, const char *const *paths, int n, int salt)
{
	struct ploop_error err = { 0 };
	struct ploop_chain *c = NULL;
	uint64_t size, off, len;
	uint8_t *pattern;
	int r = ploop_chain_open_files(paths, n, false, 0, PLOOP_OPEN_RDWR | PLOOP_OPEN_ALLOW_DIRTY, &c, &err);

	REQUIRE(r == 0, "cannot open the chain to write: %s", err.msg);
	size = ploop_chain_size(c);
	off = pick(in, salt) % size;
	len = pick(in, salt + 1) % (2 * ploop_chain_cluster_bytes(c)) + 1;
	if (len > size - off)
		len = size - off;
	pattern = malloc(len);
	REQUIRE(pattern, "out of memory");
	for (uint64_t k = 0; k < len; k++)
		pattern[k] = (uint8_t)(k * 7 + salt) | 0x80;
	r = ploop_chain_write(c, pattern, len, off, &err);
	REQUIRE(r == 0, "write of %" PRIu64 " bytes at %" PRIu64 " to a fresh top failed: %s", len, off, err.msg);
	r = ploop_chain_close(c, &err);
	REQUIRE(r == 0, "close after a write failed: %s", err.msg);
	free(pattern);
}

/* Merges @paths (top first) and checks the result against what the chain read before: the base
 * afterwards, or on failure the unmerged chain. */
static void merge_and_compare(const char *top, const char *base, const char *what)
{
	const char *chain[] = { base, top }, *merge[] = { top, base }, *single[] = { base };
	struct ploop_error err = { 0 };
	struct ploop_chain *c = NULL;
	struct disk_image before;
	int r;

	r = ploop_chain_open_files(chain, 2, false, 0, PLOOP_OPEN_ALLOW_DIRTY, &c, &err);
	REQUIRE(r == 0, "%s: the chain does not open: %s", what, err.msg);
	capture(c, &before);
	ploop_chain_close(c, NULL);
	r = ploop_merge_files(merge, 2, false, 0, &err);
	check_result("ploop_merge_files", r, &err);
	REQUIRE(memio_open_files() == 0, "merge left a file open");
	if (r) {
		/* Refusing is fine (a dirty image, a size v1 cannot address); changing what the disk
		 * reads is not. */
		r = ploop_chain_open_files(chain, 2, false, 0, PLOOP_OPEN_ALLOW_DIRTY, &c, &err);
		REQUIRE(r == 0, "%s: the chain does not open after a failed merge: %s", what, err.msg);
		compare_capture(c, &before, "after a failed merge");
	} else {
		r = ploop_chain_open_files(single, 1, false, 0, PLOOP_OPEN_ALLOW_DIRTY, &c, &err);
		REQUIRE(r == 0, "%s: the merged image does not open: %s", what, err.msg);
		compare_capture(c, &before, what);
	}
	ploop_chain_close(c, NULL);
	free_capture(&before);
	REQUIRE(memio_open_files() == 0, "left a file open");
}

/* The input as merge target (under a fresh top, sometimes larger: the merge grows it), and as merge
 * source (over a fresh base, sometimes smaller). */
static void probe_merge(const struct input *in, const struct ploop_delta_info *info)
{
	uint64_t cs = info->cluster_sectors;
	struct ploop_create_params cp = { .cluster_sectors = info->cluster_sectors, .version = 2 };
	const char *over[] = { IMG_RW, TOP }, *under[] = { TOP };
	struct ploop_error err = { 0 };
	int r;

	/* Into a copy of the input. */
	REQUIRE(memio_put(IMG_RW, in->data, in->size) == 0, "cannot copy the input");
	cp.size_sectors = info->size_sectors + (pick(in, 20) & 1 ? 0 : (1 + pick(in, 21) % 64) * cs);
	cp.version = pick(in, 22) & 1 ? 1 : 2;
	r = ploop_delta_create(TOP, &cp, &err);
	if (!r) {
		scribble(in, over, 2, 23);
		merge_and_compare(TOP, IMG_RW, "merge of a fresh top into the input");
	}
	memio_unlink(TOP);
	memio_unlink(IMG_RW);

	/* From the input itself (read-only) into a fresh base. */
	memset(&err, 0, sizeof(err));
	cp.size_sectors = pick(in, 24) & 1 ? info->size_sectors : (info->size_sectors / cs / 2 + 1) * cs;
	cp.version = pick(in, 25) & 1 ? 1 : 2;
	r = ploop_delta_create(IMG_RW, &cp, &err);
	if (!r) {
		under[0] = IMG_RW;
		scribble(in, under, 1, 26);
		merge_and_compare(IMG, IMG_RW, "merge of the input into a fresh base");
	}
	memio_unlink(IMG_RW);
	require_unchanged(in, "a merge from the input");
}

/* ---- grow ---- */

struct mapping {
	uint64_t v, off;
};

/* Every mapped cluster of @d holds what the input held at @m; the rest are holes. */
VERIFIER static void check_grown(const struct input *in, struct ploop_delta *d, const struct mapping *m, size_t nm,
			uint64_t old_nv, uint64_t cb, const char *when)
{
	struct ploop_delta_info i;
	const uint8_t *data;
	uint64_t size, off, nv;
	size_t k = 0;

	ploop_delta_get_info(d, &i);
	nv = vclusters_of(&i);
	REQUIRE(memio_get(IMG_RW, &data, &size), "the grown file disappeared");
	for (uint64_t v = 0; v < nv; v++) {
		bool hit = ploop_delta_lookup(d, v, &off);

		if (k < nm && m[k].v == v) {
			REQUIRE(hit, "%s: cluster %" PRIu64 " was lost", when, v);
			REQUIRE(off >= (uint64_t)i.bat_clusters * cb && off + cb <= size,
				"%s: cluster %" PRIu64 " at %" PRIu64 " is in the BAT or past EOF", when, v, off);
			REQUIRE(!memcmp(data + off, in->data + m[k].off, cb),
				"%s: data of cluster %" PRIu64 " changed (was at %" PRIu64 ", now at %" PRIu64 ")",
				when, v, m[k].off, off);
			k++;
		} else {
			REQUIRE(!hit, "%s: cluster %" PRIu64 " (a hole%s) is mapped to %" PRIu64, when, v,
				v >= old_nv ? " past the old size" : "", off);
		}
	}
	REQUIRE(k == nm, "%s: %zu of %zu mapped clusters remain", when, k, nm);
}

/* Grows a copy so that the BAT needs up to two more clusters (relocating data out of them). */
static void probe_grow(const struct input *in, const struct ploop_delta_info *info)
{
	struct ploop_error err = { 0 };
	struct ploop_delta *d = NULL;
	uint64_t cb = cluster_bytes(info), old_nv = vclusters_of(info), target_l1, target, off;
	struct mapping *m;
	size_t nm = 0;
	int r;

	REQUIRE(memio_put(IMG_RW, in->data, in->size) == 0, "cannot copy the input");
	r = ploop_delta_open(IMG_RW, PLOOP_OPEN_RDWR | PLOOP_OPEN_ALLOW_DIRTY, 0, 0, &d, &err);
	REQUIRE(r == 0, "the input opens read-only but not read-write: %s", err.msg);
	m = calloc(old_nv + 1, sizeof(*m));
	REQUIRE(m, "out of memory");
	for (uint64_t v = 0; v < old_nv; v++)
		if (ploop_delta_lookup(d, v, &off))
			m[nm++] = (struct mapping){ v, off };
	target_l1 = info->bat_clusters + pick(in, 8) % 3;
	target = (target_l1 * cb / 4 - PLOOP_MAP_OFFSET) * info->cluster_sectors;
	if (target <= info->size_sectors)
		target = info->size_sectors + 1 + pick(in, 9) % (4 * info->cluster_sectors);
	r = ploop_delta_grow(d, target, &err);
	check_result("ploop_delta_grow", r, &err);
	if (!r) {
		struct ploop_delta_info g;

		ploop_delta_get_info(d, &g);
		REQUIRE(g.size_sectors >= target && g.size_sectors - target < info->cluster_sectors &&
				g.size_sectors % info->cluster_sectors == 0,
			"grew to %" PRIu64 " sectors, asked for %" PRIu64, g.size_sectors, target);
		check_grown(in, d, m, nm, old_nv, cb, "after grow");
	}
	r = ploop_delta_close(d, &err);
	check_result("ploop_delta_close", r, &err);
	REQUIRE(memio_open_files() == 0, "left a file open");
	r = ploop_delta_open(IMG_RW, PLOOP_OPEN_ALLOW_DIRTY, 0, 0, &d, &err);
	REQUIRE(r == 0, "the image does not open after a grow: %s", err.msg);
	check_grown(in, d, m, nm, old_nv, cb, "after grow and reopen");
	ploop_delta_close(d, NULL);
	free(m);
	memio_unlink(IMG_RW);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	memio_install();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ploop_delta_info info, dirty_info;
	struct input in;
	bool clean, dirty;

	decode_input(&in, data, size);
	memio_reset();
	if (memio_put(IMG, data, size))
		return 0;
	clean = probe_open(&in, 0, &info);
	dirty = probe_open(&in, PLOOP_OPEN_ALLOW_DIRTY, &dirty_info);
	REQUIRE(!clean || dirty, "opens clean but not with PLOOP_OPEN_ALLOW_DIRTY");
	probe_open(&in, PLOOP_OPEN_ALLOW_DIRTY | PLOOP_OPEN_HEADER_ONLY, &info);
	probe_chain(&in, dirty, &dirty_info);
	probe_raw(&in);
	probe_check_ro(&in);
	require_unchanged(&in, "the read-only operations");
	if (size <= SMALL_INPUT) {
		probe_check_rw(&in);
		if (dirty) {
			probe_write(&in, &dirty_info);
			probe_write_in_place(&in, &dirty_info);
			probe_grow(&in, &dirty_info);
			probe_merge(&in, &dirty_info);
		}
	}
	require_unchanged(&in, "the operations on copies");
	memio_reset();
	return 0;
}
