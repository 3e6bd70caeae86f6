/* Whole-image operations against an in-memory model of the disk: random writes interleaved with
 * snapshot, merge, delete, switch, grow and conversions must always read back as the model. */
#include <errno.h>
#include <stdlib.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

#define DD "img/DiskDescriptor.xml"

struct model {
	uint8_t *disk;
	size_t size;
	uint64_t seed;
};

static uint64_t rnd(struct model *m)
{
	m->seed ^= m->seed << 13;
	m->seed ^= m->seed >> 7;
	m->seed ^= m->seed << 17;
	return m->seed;
}

static int open_top(struct ploop_chain **c, struct ploop_error *err)
{
	struct ploop_descriptor *dd = NULL;
	int r = ploop_descriptor_read(DD, &dd, err);

	if (!r)
		r = ploop_descriptor_open_chain(dd, NULL, PLOOP_OPEN_RDWR, c, err);
	ploop_descriptor_free(dd);
	return r;
}

/* Writes a random range (sometimes cluster-aligned, sometimes a whole cluster run) to image and model. */
static int random_write(struct model *m, struct ploop_error *err)
{
	struct ploop_chain *c;
	size_t len = 1 + rnd(m) % (3 * 32768), off;
	uint8_t *buf;
	int r;

	if (rnd(m) % 3 == 0)
		len = 32768 * (1 + rnd(m) % 3);
	off = rnd(m) % (m->size - len);
	if (rnd(m) % 3 == 0)
		off &= ~(size_t)32767;
	buf = malloc(len);
	fill_pattern(buf, len, rnd(m));
	if (rnd(m) % 5 == 0)
		memset(buf, 0, len);	/* zero writes over data must stick */
	r = open_top(&c, err);
	if (!r)
		r = ploop_chain_write(c, buf, len, off, err);
	if (!r)
		r = ploop_chain_close(c, err);
	else
		ploop_chain_close(c, NULL);
	if (!r)
		memcpy(m->disk + off, buf, len);
	free(buf);
	return r;
}

static bool matches(struct model *m)
{
	size_t at;
	int r = descriptor_compare(DD, m->disk, m->size, &at);

	if (r > 0)
		fprintf(stderr, "  first difference at byte %zu\n", at);
	return r == 0;
}

static bool all_deltas_check(void)
{
	struct ploop_descriptor *dd = NULL;
	struct ploop_error err = { 0 };
	struct ploop_check_params p = { .flags = PLOOP_CHECK_FORCE | PLOOP_CHECK_CLUSTERS | PLOOP_CHECK_RDONLY };

	if (ploop_descriptor_read(DD, &dd, &err)) {
		fprintf(stderr, "  %s\n", err.msg);
		return false;
	}
	for (int i = 0; i < dd->n_images; i++) {
		if (dd->raw && !strcmp(dd->snapshots[ploop_descriptor_find_snapshot(dd, dd->images[i].guid)].parent,
				       PLOOP_NONE_GUID))
			continue;
		if (ploop_check_delta(dd->images[i].path, &p, &err)) {
			fprintf(stderr, "  check: %s\n", err.msg);
			ploop_descriptor_free(dd);
			return false;
		}
	}
	ploop_descriptor_free(dd);
	return true;
}

/* A GUID of the current chain other than the top (NULL if there is none). */
static bool pick_snapshot(struct model *m, char out[PLOOP_GUID_BUF], bool allow_base)
{
	struct ploop_descriptor *dd = NULL;
	struct ploop_error err = { 0 };
	int idx[PLOOP_MAX_CHAIN], n;
	bool found = false;

	if (ploop_descriptor_read(DD, &dd, &err) || ploop_descriptor_chain(dd, NULL, idx, &n, &err)) {
		ploop_descriptor_free(dd);
		return false;
	}
	if (n > (allow_base ? 1 : 2)) {
		int lo = allow_base ? 0 : 1;
		int k = lo + (int)(rnd(m) % (uint64_t)(n - 1 - lo));

		strcpy(out, dd->images[idx[k]].guid);
		found = true;
	}
	ploop_descriptor_free(dd);
	return found;
}

static void run_model(int version, uint32_t cs, int steps, uint64_t seed)
{
	struct ploop_create_params p = { .size_sectors = 8192, .cluster_sectors = cs, .version = version };
	struct model m = { .size = 8192 * 512, .seed = seed };
	char g[PLOOP_GUID_BUF];

	mkdir("img", 0755);
	m.disk = calloc(1, m.size);
	CHECK_OK(ploop_init_image("img/root.hds", &p, err));
	for (int step = 0; step < steps; step++) {
		unsigned op = (unsigned)(rnd(&m) % 16);

		if (op < 8) {
			CHECK_OK(random_write(&m, err));
		} else if (op < 10) {
			CHECK_OK(ploop_snapshot(DD, NULL, g, err));
		} else if (op == 10) {
			if (pick_snapshot(&m, g, false))
				CHECK_OK(ploop_snapshot_merge(DD, NULL, false, err));
		} else if (op == 11) {
			CHECK_OK(ploop_snapshot_merge(DD, NULL, true, err));
		} else if (op == 12) {
			if (pick_snapshot(&m, g, false))
				CHECK_OK(ploop_snapshot_delete(DD, g, NULL, err));
		} else if (op == 13) {
			if (pick_snapshot(&m, g, true))
				CHECK_OK(ploop_snapshot_merge(DD, g, false, err) == PLOOP_ERR_PARAM ? 0 : err->status);
		} else if (op == 14 && m.size < 64u << 20) {
			size_t grow = m.size + (rnd(&m) % 4 + 1) * (4u << 20);

			CHECK_OK(ploop_grow(DD, false, grow / 512, err));
			m.disk = realloc(m.disk, grow);
			memset(m.disk + m.size, 0, grow - m.size);
			m.size = grow;
		} else if (op == 15) {
			CHECK_OK(ploop_convert_version(DD, version == 1 ? 2 : 1, err));
			CHECK_OK(ploop_convert_version(DD, version, err));
		}
		if (!matches(&m)) {
			harness_fail(__FILE__, __LINE__, "content differs from the model after step %d (op %u)", step, op);
			return;
		}
		if (op >= 8)
			CHECK(all_deltas_check());
	}
	CHECK(all_deltas_check());
	free(m.disk);
}

TEST(model_v2_32k_clusters)
{
	run_model(2, 64, 200, 1);
}

TEST(model_v1_32k_clusters)
{
	run_model(1, 64, 120, 2);
}

TEST(model_v2_128k_clusters)
{
	run_model(2, 256, 120, 3);
}

/* A raw base under ploop deltas: writes go to the top, merges go back into the raw file. */
TEST(model_raw_base)
{
	struct ploop_create_params p = { .size_sectors = 8192, .cluster_sectors = 64, .mode = PLOOP_MODE_RAW };
	struct model m = { .size = 8192 * 512, .seed = 9 };
	char g[PLOOP_GUID_BUF];

	mkdir("img", 0755);
	m.disk = calloc(1, m.size);
	CHECK_OK(ploop_init_image("img/root.hds", &p, err));
	for (int i = 0; i < 20; i++)
		CHECK_OK(random_write(&m, err));
	CHECK(matches(&m));
	CHECK_OK(ploop_snapshot(DD, NULL, g, err));
	for (int i = 0; i < 20; i++)
		CHECK_OK(random_write(&m, err));
	CHECK(matches(&m));
	CHECK_OK(ploop_grow(DD, false, 16384, err));
	m.disk = realloc(m.disk, 16384 * 512);
	memset(m.disk + m.size, 0, 16384 * 512 - m.size);
	m.size = 16384 * 512;
	for (int i = 0; i < 10; i++)
		CHECK_OK(random_write(&m, err));
	CHECK_OK(ploop_snapshot_merge(DD, NULL, true, err));
	CHECK(matches(&m));
	{
		struct stat st;

		CHECK(stat("img/root.hds", &st) == 0 && (size_t)st.st_size >= m.size);
	}
	free(m.disk);
}

/* DiskDescriptor.xml as upstream 1.15 may leave a raw set: every image typed Plain, and here the
 * base (the raw file) listed last. */
static int upstream_raw_descriptor(void)
{
	struct ploop_descriptor *dd = NULL;
	struct ploop_error err = { 0 };
	struct ploop_image_entry base;
	char *text, *out, *p, *o;
	size_t len = 0;
	int r;

	if (ploop_descriptor_read(DD, &dd, &err))
		return -1;
	base = dd->images[0];
	dd->images[0] = dd->images[dd->n_images - 1];
	dd->images[dd->n_images - 1] = base;
	r = ploop_descriptor_write(dd, DD, &err);
	ploop_descriptor_free(dd);
	text = r ? NULL : read_file(DD, &len);
	out = text ? malloc(len + 1) : NULL;
	if (!out) {
		free(text);
		return -1;
	}
	text[len] = '\0';
	for (p = text, o = out; *p;)
		if (!strncmp(p, "Compressed", 10)) {
			o = stpcpy(o, "Plain");
			p += 10;
		} else {
			*o++ = *p++;
		}
	r = write_file(DD, out, (size_t)(o - out));
	free(text);
	free(out);
	return r;
}

TEST(raw_base_listed_last_every_image_plain)
{
	struct ploop_create_params p = { .size_sectors = 8192, .cluster_sectors = 64, .mode = PLOOP_MODE_RAW };
	struct ploop_check_params q = { .flags = PLOOP_CHECK_FORCE | PLOOP_CHECK_CLUSTERS | PLOOP_CHECK_RDONLY };
	struct model m = { .size = 8192 * 512, .seed = 11 };
	struct ploop_descriptor *dd;
	char g[PLOOP_GUID_BUF];

	mkdir("img", 0755);
	m.disk = calloc(1, m.size);
	CHECK_OK(ploop_init_image("img/root.hds", &p, err));
	for (int i = 0; i < 10; i++)
		CHECK_OK(random_write(&m, err));
	CHECK_OK(ploop_snapshot(DD, NULL, g, err));
	for (int i = 0; i < 10; i++)
		CHECK_OK(random_write(&m, err));
	CHECK_OK(ploop_snapshot(DD, NULL, g, err));
	for (int i = 0; i < 10; i++)
		CHECK_OK(random_write(&m, err));
	CHECK(upstream_raw_descriptor() == 0);
	CHECK_OK(ploop_descriptor_read(DD, &dd, err));
	CHECK(dd->raw && ploop_descriptor_raw_image(dd, 2) && !strcmp(dd->images[2].file, "root.hds"));
	ploop_descriptor_free(dd);
	CHECK(matches(&m));
	CHECK_OK(ploop_check_descriptor(DD, NULL, &q, err));
	/* The deltas change format, the raw file stays as it is. */
	CHECK_OK(ploop_convert_version(DD, 1, err));
	CHECK(matches(&m) && all_deltas_check());
	CHECK_OK(ploop_convert_version(DD, 2, err));
	CHECK(matches(&m) && all_deltas_check());
	CHECK_OK(ploop_snapshot(DD, NULL, g, err));
	for (int i = 0; i < 10; i++)
		CHECK_OK(random_write(&m, err));
	CHECK(matches(&m));
	CHECK_OK(ploop_snapshot_merge(DD, NULL, true, err));
	CHECK(matches(&m));
	{
		size_t len;
		uint8_t *raw = read_file("img/root.hds", &len);

		CHECK(raw && len == m.size && !memcmp(raw, m.disk, len));
		free(raw);
	}
	free(m.disk);
}

TEST(convert_preallocated_and_raw_keep_content)
{
	struct ploop_create_params p = { .size_sectors = 8192, .cluster_sectors = 64 };
	struct model m = { .size = 8192 * 512, .seed = 5 };
	struct ploop_descriptor *dd;
	struct ploop_delta_info info;
	struct ploop_delta *d;

	mkdir("img", 0755);
	m.disk = calloc(1, m.size);
	CHECK_OK(ploop_init_image("img/root.hds", &p, err));
	for (int i = 0; i < 10; i++)
		CHECK_OK(random_write(&m, err));
	CHECK_OK(ploop_convert_mode(DD, PLOOP_MODE_PREALLOCATED, err));
	CHECK(matches(&m));
	CHECK_OK(ploop_delta_open("img/root.hds", 0, 0, 0, &d, err));
	ploop_delta_get_info(d, &info);
	CHECK_EQ(info.allocated_clusters, 8192 / 64);
	ploop_delta_close(d, NULL);
	CHECK_OK(ploop_descriptor_read(DD, &dd, err));
	CHECK(dd->preallocated);
	ploop_descriptor_free(dd);
	CHECK_OK(ploop_convert_mode(DD, PLOOP_MODE_RAW, err));
	CHECK(matches(&m));
	CHECK_OK(ploop_descriptor_read(DD, &dd, err));
	CHECK(dd->raw && !strcmp(dd->images[0].file, "root.hds"));
	ploop_descriptor_free(dd);
	{
		size_t len;
		uint8_t *raw = read_file("img/root.hds", &len);

		CHECK(raw && len == m.size && !memcmp(raw, m.disk, len));
		free(raw);
		CHECK(access("img/root.hds.tmp", F_OK) != 0);
	}
	free(m.disk);
}

/* An I/O table whose allocate fails part-way (ENOSPC) and keeps what it got, as a filesystem's
 * fallocate may: half the range, the file size grown to its end. */
static struct ploop_io_ops keep_partial_ops;

static int keep_partial_allocate(struct ploop_file *f, uint64_t off, uint64_t len)
{
	ploop_io_posix()->truncate(f, off + len / 2);
	return -ENOSPC;
}

static int keep_partial_open(const char *path, int flags, mode_t mode, struct ploop_file **out)
{
	int r = ploop_io_posix()->open(path, flags, mode, out);

	if (!r)
		(*out)->ops = &keep_partial_ops;
	return r;
}

/* A conversion to preallocated that runs out of space leaves the set as it was: the file at its
 * old size (nothing names the space it got) and the descriptor not saying preallocated. */
TEST(convert_preallocated_out_of_space_changes_nothing)
{
	struct ploop_create_params p = { .size_sectors = 8192, .cluster_sectors = 64 };
	struct model m = { .size = 8192 * 512, .seed = 7 };
	struct ploop_descriptor *dd;
	struct stat before, after;

	mkdir("img", 0755);
	m.disk = calloc(1, m.size);
	CHECK_OK(ploop_init_image("img/root.hds", &p, err));
	for (int i = 0; i < 10; i++)
		CHECK_OK(random_write(&m, err));
	CHECK(!stat("img/root.hds", &before));
	keep_partial_ops = *ploop_io_posix();
	keep_partial_ops.open = keep_partial_open;
	keep_partial_ops.allocate = keep_partial_allocate;
	ploop_io_set(&keep_partial_ops);
	CHECK_FAILS(PLOOP_ERR_FALLOCATE, ploop_convert_mode(DD, PLOOP_MODE_PREALLOCATED, err));
	ploop_io_set(NULL);
	CHECK(!stat("img/root.hds", &after));
	CHECK_EQ(after.st_size, before.st_size);
	CHECK_OK(ploop_descriptor_read(DD, &dd, err));
	CHECK(!dd->preallocated);
	ploop_descriptor_free(dd);
	CHECK(matches(&m));
	CHECK(all_deltas_check());
	free(m.disk);
}

TEST(snapshot_switch_and_keep)
{
	struct ploop_create_params p = { .size_sectors = 4096, .cluster_sectors = 64 };
	struct model m = { .size = 4096 * 512, .seed = 11 };
	uint8_t *at_snap;
	char g[PLOOP_GUID_BUF];
	struct ploop_descriptor *dd;

	mkdir("img", 0755);
	m.disk = calloc(1, m.size);
	CHECK_OK(ploop_init_image("img/root.hds", &p, err));
	for (int i = 0; i < 5; i++)
		CHECK_OK(random_write(&m, err));
	CHECK_OK(ploop_snapshot(DD, NULL, g, err));
	for (int i = 0; i < 5; i++)
		CHECK_OK(random_write(&m, err));
	CHECK_OK(ploop_snapshot(DD, NULL, g, err));
	at_snap = malloc(m.size);
	memcpy(at_snap, m.disk, m.size);
	for (int i = 0; i < 5; i++)
		CHECK_OK(random_write(&m, err));
	CHECK_OK(ploop_snapshot_switch(DD, g, true, err));
	memcpy(m.disk, at_snap, m.size);
	CHECK(matches(&m));
	CHECK_OK(ploop_descriptor_read(DD, &dd, err));
	CHECK_EQ(dd->n_images, 4);	/* base, g, the kept old top, the new top */
	CHECK_EQ(ploop_descriptor_children(dd, g, NULL), 2);
	ploop_descriptor_free(dd);
	/* A snapshot with two children cannot be merged into either; delete defers it. */
	CHECK_FAILS(PLOOP_ERR_PARAM, ploop_snapshot_merge(DD, NULL, true, err));
	CHECK_OK(ploop_snapshot_delete(DD, g, NULL, err));
	CHECK_OK(ploop_descriptor_read(DD, &dd, err));
	CHECK(dd->snapshots[ploop_descriptor_find_snapshot(dd, g)].temporary == PLOOP_TEMP);
	ploop_descriptor_free(dd);
	CHECK(matches(&m));
	free(at_snap);
	free(m.disk);
}

TEST(refusals)
{
	struct ploop_create_params p = { .size_sectors = 4096, .cluster_sectors = 64 };
	char g[PLOOP_GUID_BUF], base[PLOOP_GUID_BUF];
	struct ploop_descriptor *dd;

	mkdir("img", 0755);
	CHECK_OK(ploop_init_image("img/root.hds", &p, err));
	CHECK_FAILS(PLOOP_ERR_CREAT, ploop_init_image("img/other.hds", &p, err));
	CHECK_FAILS(PLOOP_ERR_PARAM, ploop_snapshot_merge(DD, NULL, false, err));
	CHECK_OK(ploop_snapshot(DD, "{11111111-2222-3333-4444-555555555555}", g, err));
	CHECK_FAILS(PLOOP_ERR_PARAM, ploop_snapshot(DD, "11111111-2222-3333-4444-555555555555", g, err));
	CHECK_FAILS(PLOOP_ERR_PARAM, ploop_snapshot(DD, "not-a-guid", g, err));
	CHECK_FAILS(PLOOP_ERR_PARAM, ploop_snapshot(DD, PLOOP_TOP_GUID, g, err));
	CHECK_OK(ploop_descriptor_read(DD, &dd, err));
	strcpy(base, dd->snapshots[0].guid);
	ploop_descriptor_free(dd);
	CHECK_FAILS(PLOOP_ERR_NOSNAP, ploop_snapshot_delete(DD, "{99999999-2222-3333-4444-555555555555}", NULL, err));
	CHECK_FAILS(PLOOP_ERR_PARAM, ploop_snapshot_merge(DD, "{99999999-2222-3333-4444-555555555555}", false, err));
	CHECK_FAILS(PLOOP_ERR_PARAM, ploop_snapshot_switch(DD, PLOOP_TOP_GUID, false, err));
	CHECK_FAILS(PLOOP_ERR_PARAM, ploop_grow(DD, false, 2048, err));
	CHECK_FAILS(PLOOP_ERR_PARAM, ploop_convert_mode(DD, PLOOP_MODE_RAW, err));	/* two images */
	/* Deleting a base with one child merges the child into it (as upstream); a lone base stays. */
	CHECK_OK(ploop_snapshot_delete(DD, base, NULL, err));
	CHECK_OK(ploop_descriptor_read(DD, &dd, err));
	CHECK_EQ(dd->n_images, 1);
	CHECK(!strcmp(dd->images[0].guid, PLOOP_TOP_GUID) && !strcmp(dd->images[0].file, "root.hds"));
	ploop_descriptor_free(dd);
	CHECK_FAILS(PLOOP_ERR_PARAM, ploop_snapshot_delete(DD, PLOOP_TOP_GUID, NULL, err));
}

/* A merge interrupted by a full disk is completed by the next command; asking again for the same
 * merge reports success instead of merging one level further. */
TEST(retried_merge_completes_once)
{
	struct ploop_create_params p = { .size_sectors = 4096, .cluster_sectors = 64 };
	struct ploop_descriptor *dd;
	char g1[PLOOP_GUID_BUF], g2[PLOOP_GUID_BUF];
	uint8_t buf[32768];
	struct ploop_chain *c;
	const char *top;
	int idx[PLOOP_MAX_CHAIN], n;

	mkdir("img", 0755);
	CHECK_OK(ploop_init_image("img/root.hds", &p, err));
	CHECK_OK(ploop_snapshot(DD, NULL, g1, err));
	CHECK_OK(ploop_snapshot(DD, NULL, g2, err));
	CHECK_OK(ploop_descriptor_read(DD, &dd, err));
	CHECK_OK(ploop_descriptor_chain(dd, NULL, idx, &n, err));
	top = dd->images[idx[n - 1]].path;
	fill_pattern(buf, sizeof(buf), 3);
	CHECK_OK(ploop_chain_open_files(&top, 1, false, 0, PLOOP_OPEN_RDWR, &c, err));
	CHECK_OK(ploop_chain_write(c, buf, sizeof(buf), 0, err));
	CHECK_OK(ploop_chain_close(c, err));
	/* As a failed merge of the top into g2 leaves it: g2 marked temporary. */
	dd->snapshots[ploop_descriptor_find_snapshot(dd, g2)].temporary = PLOOP_TEMP;
	CHECK_OK(ploop_descriptor_write(dd, DD, err));
	ploop_descriptor_free(dd);
	CHECK_OK(ploop_snapshot_merge(DD, NULL, false, err));
	CHECK_OK(ploop_descriptor_read(DD, &dd, err));
	CHECK_EQ(dd->n_images, 2);	/* base g1 and the top: merged once, not twice */
	CHECK(ploop_descriptor_find_snapshot(dd, g1) >= 0);
	ploop_descriptor_free(dd);
	CHECK_OK(ploop_snapshot_delete(DD, g2, NULL, err) == PLOOP_ERR_NOSNAP ? 0 : err->status);
}

TEST(import_export_roundtrip_and_sparse)
{
	struct ploop_create_params p = { .cluster_sectors = 64 };
	size_t size = 3 * 1048576 + 1000, len;
	uint8_t *raw = calloc(1, size), *back;
	struct ploop_delta_info info;
	struct ploop_delta *d;
	struct ploop_chain *c;
	const char *path = "img/root.hds";
	int fd;

	fill_pattern(raw + 100000, 50000, 1);
	fill_pattern(raw + size - 500, 500, 2);
	mkdir("img", 0755);
	CHECK(write_file("in.raw", raw, size) == 0);
	fd = open("in.raw", O_RDONLY);
	CHECK_OK(ploop_import(fd, 0, path, &p, err));
	close(fd);
	CHECK_OK(ploop_delta_open(path, 0, 0, 0, &d, err));
	ploop_delta_get_info(d, &info);
	/* 100000..150000 touches 2 clusters of 32 KiB; the tail one more. */
	CHECK_EQ(info.allocated_clusters, 3);
	CHECK_EQ(info.size_sectors, (size + 32767) / 32768 * 64);
	ploop_delta_close(d, NULL);
	CHECK_OK(ploop_chain_open_files(&path, 1, false, 0, 0, &c, err));
	fd = open("out.raw", O_WRONLY | O_CREAT | O_EXCL, 0600);
	CHECK_OK(ploop_export(c, fd, err));
	close(fd);
	ploop_chain_close(c, NULL);
	back = read_file("out.raw", &len);
	CHECK(back && len == (size + 32767) / 32768 * 32768);
	CHECK(!memcmp(back, raw, size));
	{
		struct stat st;

		CHECK(stat("out.raw", &st) == 0 && (uint64_t)st.st_blocks * 512 < 400000);
	}
	free(back);
	free(raw);
}
