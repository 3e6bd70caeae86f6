/* libFuzzer target: the input is a DiskDescriptor.xml. A descriptor that parses must be consistent
 * (every chain resolves), must write (in memory) and must read back as the same descriptor. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "memio.h"

#define DD_DIR "/tmp/fuzzdir"
#define DD_PATH DD_DIR "/" PLOOP_DESCRIPTOR_NAME

__attribute__((format(printf, 3, 4), noreturn)) static void violated(int line, const char *cond, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "\nfuzz_descriptor.c:%d: invariant violated: %s\n  ", line, cond);
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

static bool is_canonical_guid(const char *g)
{
	char c[PLOOP_GUID_BUF];

	return strlen(g) == PLOOP_GUID_LEN && !ploop_parse_guid(g, c) && !strcmp(c, g);
}

/* The chain ending at snapshot @s resolves, base first, along the ParentGUID links. */
static void check_chain(const struct ploop_descriptor *dd, const char *guid)
{
	struct ploop_error err = { 0 };
	int idx[PLOOP_MAX_CHAIN], n = -1;
	int r = ploop_descriptor_chain(dd, guid, idx, &n, &err);
	const char *g = guid ? guid : dd->top_guid;

	check_result("ploop_descriptor_chain", r, &err);
	REQUIRE(r == 0, "the chain of %s does not resolve in a descriptor that parsed: %s", g, err.msg);
	REQUIRE(n >= 1 && n <= PLOOP_MAX_CHAIN, "chain of %s has %d images", g, n);
	REQUIRE(!strcmp(dd->images[idx[n - 1]].guid, g), "chain of %s ends at %s", g, dd->images[idx[n - 1]].guid);
	for (int k = 0; k < n; k++) {
		int s;

		REQUIRE(idx[k] >= 0 && idx[k] < dd->n_images, "chain of %s holds image index %d", g, idx[k]);
		s = ploop_descriptor_find_snapshot(dd, dd->images[idx[k]].guid);
		REQUIRE(s >= 0, "image %s of the chain has no snapshot", dd->images[idx[k]].guid);
		REQUIRE(!strcmp(dd->snapshots[s].parent, k ? dd->images[idx[k - 1]].guid : PLOOP_NONE_GUID),
			"chain of %s: %s follows %s but its parent is %s", g, dd->images[idx[k]].guid,
			k ? dd->images[idx[k - 1]].guid : "nothing", dd->snapshots[s].parent);
		for (int j = 0; j < k; j++)
			REQUIRE(idx[j] != idx[k], "chain of %s visits image %d twice", g, idx[k]);
	}
	if (dd->raw)
		REQUIRE(idx[0] == 0, "a raw set's chain of %s starts at image %d", g, idx[0]);
}

/* Relative names of one file: equal once "." components and repeated slashes are dropped. */
static bool same_file(const char *a, const char *b)
{
	for (;;) {
		size_t na, nb;

		while (*a == '/' || (a[0] == '.' && (a[1] == '/' || !a[1])))
			a += *a == '/' ? 1 : 1 + (a[1] == '/');
		while (*b == '/' || (b[0] == '.' && (b[1] == '/' || !b[1])))
			b += *b == '/' ? 1 : 1 + (b[1] == '/');
		na = strcspn(a, "/");
		nb = strcspn(b, "/");
		if (na != nb || strncmp(a, b, na))
			return false;
		if (!na)
			return true;
		a += na;
		b += nb;
	}
}

/* A GUID that no image or snapshot has (the fuzzer learns constants, so it is searched for). */
static void absent_guid(const struct ploop_descriptor *dd, char out[PLOOP_GUID_BUF])
{
	for (unsigned k = 0;; k++) {
		bool used = false;

		snprintf(out, PLOOP_GUID_BUF, "{0123abcd-0000-4000-8000-%012x}", k);
		for (int i = 0; i < dd->n_images && !used; i++)
			used = !strcmp(dd->images[i].guid, out);
		for (int i = 0; i < dd->n_snapshots && !used; i++)
			used = !strcmp(dd->snapshots[i].guid, out) || !strcmp(dd->snapshots[i].parent, out);
		if (!used)
			return;
	}
}

/* Everything a successful parse promises. */
static void check_descriptor(const struct ploop_descriptor *dd)
{
	struct ploop_error err = { 0 };
	int idx[PLOOP_MAX_CHAIN], n, top, children = 0, bases = 0;
	size_t dirlen = strlen(dd->dir);
	char absent[PLOOP_GUID_BUF];

	REQUIRE(!strcmp(dd->path, DD_PATH), "path %s", dd->path);
	REQUIRE(dd->n_images >= 1 && dd->n_images == dd->n_snapshots, "%d images, %d snapshots", dd->n_images,
		dd->n_snapshots);
	REQUIRE(dd->blocksize == 0 || ploop_cluster_size_valid(dd->blocksize), "Blocksize %" PRIu32, dd->blocksize);
	if (dd->raw)
		REQUIRE(dd->blocksize && !dd->preallocated, "raw set with Blocksize %" PRIu32 ", preallocated %d",
			dd->blocksize, dd->preallocated);
	REQUIRE(is_canonical_guid(dd->top_guid), "top GUID '%s'", dd->top_guid);
	for (int i = 0; i < dd->n_images; i++) {
		const struct ploop_image_entry *im = &dd->images[i];

		REQUIRE(is_canonical_guid(im->guid), "image GUID '%s'", im->guid);
		REQUIRE(ploop_descriptor_find_image(dd, im->guid) == i, "image %s is not found at %d", im->guid, i);
		REQUIRE(ploop_descriptor_find_snapshot(dd, im->guid) >= 0, "image %s has no snapshot", im->guid);
		REQUIRE(im->file && im->path && im->file[0] && im->file[0] != '/', "image %s file '%s'", im->guid,
			im->file ? im->file : "(null)");
		/* The resolved path stays inside the descriptor's directory. */
		REQUIRE(!strncmp(im->path, dd->dir, dirlen) && im->path[dirlen] == '/' &&
				!strcmp(im->path + dirlen + 1, im->file),
			"image %s: file '%s' resolves to '%s' outside %s", im->guid, im->file, im->path, dd->dir);
		REQUIRE(strcmp(im->file, "..") && strncmp(im->file, "../", 3) && !strstr(im->file, "/../") &&
				(strlen(im->file) < 3 || strcmp(im->file + strlen(im->file) - 3, "/..")),
			"image %s: file '%s' leaves the directory", im->guid, im->file);
		for (int j = 0; j < i; j++)
			REQUIRE(!same_file(dd->images[j].file, im->file), "file '%s' and '%s' are the same file",
				dd->images[j].file, im->file);
	}
	for (int i = 0; i < dd->n_snapshots; i++) {
		const struct ploop_snapshot_entry *s = &dd->snapshots[i];

		REQUIRE(is_canonical_guid(s->guid) && is_canonical_guid(s->parent), "snapshot '%s' parent '%s'",
			s->guid, s->parent);
		REQUIRE(ploop_descriptor_find_snapshot(dd, s->guid) == i, "snapshot %s is not found at %d", s->guid, i);
		REQUIRE(strcmp(s->guid, PLOOP_NONE_GUID) && strcmp(s->guid, s->parent), "snapshot %s parent %s",
			s->guid, s->parent);
		REQUIRE(s->temporary >= PLOOP_TEMP_NONE && s->temporary <= PLOOP_TEMP_ZERO_SWAP, "temporary %d",
			(int)s->temporary);
		bases += !strcmp(s->parent, PLOOP_NONE_GUID);
		children += !strcmp(s->parent, dd->top_guid);
		check_chain(dd, s->guid);
	}
	REQUIRE(bases == 1, "%d base images", bases);
	top = ploop_descriptor_find_snapshot(dd, dd->top_guid);
	REQUIRE(top >= 0 && !dd->snapshots[top].temporary && !children, "top %s: index %d, %d children", dd->top_guid,
		top, children);
	check_chain(dd, NULL);
	absent_guid(dd, absent);
	REQUIRE(ploop_descriptor_find_image(dd, absent) < 0 && ploop_descriptor_find_snapshot(dd, absent) < 0,
		"found %s, which is not there", absent);
	n = -1;
	REQUIRE(ploop_descriptor_chain(dd, absent, idx, &n, &err) == PLOOP_ERR_NOSNAP,
		"the chain of unknown %s resolves", absent);
}

static bool same_str(const char *a, const char *b)
{
	return a == b || (a && b && !strcmp(a, b));
}

static void check_same(const struct ploop_descriptor *a, const struct ploop_descriptor *b)
{
	REQUIRE(a->disk_size == b->disk_size && a->cylinders == b->cylinders && a->heads == b->heads &&
			a->sectors == b->sectors && a->padding == b->padding && a->start == b->start &&
			a->end == b->end && a->blocksize == b->blocksize && a->preallocated == b->preallocated &&
			a->raw == b->raw && a->max_delta_size == b->max_delta_size,
		"disk parameters change in the round trip");
	REQUIRE(same_str(a->encryption_keyid, b->encryption_keyid), "KeyId '%s' becomes '%s'",
		a->encryption_keyid ? a->encryption_keyid : "(none)",
		b->encryption_keyid ? b->encryption_keyid : "(none)");
	REQUIRE(!strcmp(a->top_guid, b->top_guid), "top %s becomes %s", a->top_guid, b->top_guid);
	REQUIRE(a->n_images == b->n_images && a->n_snapshots == b->n_snapshots, "%d/%d images/snapshots become %d/%d",
		a->n_images, a->n_snapshots, b->n_images, b->n_snapshots);
	for (int i = 0; i < a->n_images; i++)
		REQUIRE(!strcmp(a->images[i].guid, b->images[i].guid) &&
			    !strcmp(a->images[i].file, b->images[i].file) &&
			    !strcmp(a->images[i].path, b->images[i].path),
			"image %d: %s '%s' becomes %s '%s'", i, a->images[i].guid, a->images[i].file, b->images[i].guid,
			b->images[i].file);
	for (int i = 0; i < a->n_snapshots; i++)
		REQUIRE(!strcmp(a->snapshots[i].guid, b->snapshots[i].guid) &&
				!strcmp(a->snapshots[i].parent, b->snapshots[i].parent) &&
				a->snapshots[i].temporary == b->snapshots[i].temporary,
			"snapshot %d: %s (parent %s, temporary %d) becomes %s (parent %s, temporary %d)", i,
			a->snapshots[i].guid, a->snapshots[i].parent, a->snapshots[i].temporary, b->snapshots[i].guid,
			b->snapshots[i].parent, b->snapshots[i].temporary);
}

/* Writes @dd through the I/O table (in memory) and returns a copy of the bytes written. */
static char *write_descriptor(const struct ploop_descriptor *dd, uint64_t *len)
{
	struct ploop_error err = { 0 };
	const uint8_t *data;
	char *copy;
	int r = ploop_descriptor_write(dd, DD_PATH, &err);

	check_result("ploop_descriptor_write", r, &err);
	REQUIRE(r == 0, "a descriptor that parsed does not write: %s", err.msg);
	REQUIRE(memio_open_files() == 0, "write left a file open");
	REQUIRE(!memio_exists(DD_PATH ".tmp"), "write left %s.tmp behind", DD_PATH);
	REQUIRE(memio_get(DD_PATH, &data, len), "write did not create %s", DD_PATH);
	REQUIRE(*len > 0, "write produced an empty file");
	copy = malloc(*len);
	REQUIRE(copy, "out of memory");
	memcpy(copy, data, *len);
	return copy;
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
	struct ploop_descriptor *dd = NULL, *again = NULL;
	struct ploop_error err = { 0 };
	char *text, *text2;
	uint64_t len, len2;
	int r;

	memio_reset();
	r = ploop_descriptor_parse((const char *)data, size, DD_PATH, &dd, &err);
	check_result("ploop_descriptor_parse", r, &err);
	if (r) {
		REQUIRE(dd == NULL, "a failed parse returned a descriptor");
		return 0;
	}
	check_descriptor(dd);

	text = write_descriptor(dd, &len);
	memset(&err, 0, sizeof(err));
	r = ploop_descriptor_parse(text, (size_t)len, DD_PATH, &again, &err);
	REQUIRE(r == 0, "the written descriptor does not parse: %s\n--- written:\n%.*s", err.msg, (int)len, text);
	check_descriptor(again);
	check_same(dd, again);

	/* Writing what was read back gives the same bytes: the writer is a fixed point. */
	text2 = write_descriptor(again, &len2);
	REQUIRE(len == len2 && !memcmp(text, text2, len), "a second write differs from the first");

	free(text);
	free(text2);
	ploop_descriptor_free(again);
	ploop_descriptor_free(dd);
	memio_reset();
	return 0;
}
