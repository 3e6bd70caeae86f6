/* Unit tests of DiskDescriptor.xml: the upstream sample read and written back byte for byte, every
 * validation rule (each malformed case fails with PLOOP_ERR_DESCRIPTOR and one line), chain order. */
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

#define BASE_GUID "{75c9d1a6-e9ca-41f2-8106-2ce8595c5903}"
#define TOP_FILE "root.hds.{1a78b57e-ce39-4605-87d4-40cff8f4e3c9}"

/* `ploop snapshot` output of 1.15 (ploop-format.md §2, verified), as xmlDocFormatDump writes it. */
static const char sample_xml[] =
	"<?xml version=\"1.0\"?>\n"
	"<Parallels_disk_image>\n"
	"  <Disk_Parameters>\n"
	"    <Disk_size>131072</Disk_size>\n"
	"    <Cylinders>256</Cylinders>\n"
	"    <Heads>16</Heads>\n"
	"    <Sectors>32</Sectors>\n"
	"    <Padding>0</Padding>\n"
	"  </Disk_Parameters>\n"
	"  <StorageData>\n"
	"    <Storage>\n"
	"      <Start>0</Start>\n"
	"      <End>131072</End>\n"
	"      <Blocksize>2048</Blocksize>\n"
	"      <Image>\n"
	"        <GUID>" BASE_GUID "</GUID>\n"
	"        <Type>Compressed</Type>\n"
	"        <File>root.hds</File>\n"
	"      </Image>\n"
	"      <Image>\n"
	"        <GUID>" PLOOP_TOP_GUID "</GUID>\n"
	"        <Type>Compressed</Type>\n"
	"        <File>" TOP_FILE "</File>\n"
	"      </Image>\n"
	"    </Storage>\n"
	"  </StorageData>\n"
	"  <Snapshots>\n"
	"    <TopGUID>" PLOOP_TOP_GUID "</TopGUID>\n"
	"    <Shot>\n"
	"      <GUID>" BASE_GUID "</GUID>\n"
	"      <ParentGUID>" PLOOP_NONE_GUID "</ParentGUID>\n"
	"    </Shot>\n"
	"    <Shot>\n"
	"      <GUID>" PLOOP_TOP_GUID "</GUID>\n"
	"      <ParentGUID>" BASE_GUID "</ParentGUID>\n"
	"    </Shot>\n"
	"  </Snapshots>\n"
	"</Parallels_disk_image>\n";

/* ---- helpers ------------------------------------------------------------------------------------------- */

/* @src with the first occurrence of @from replaced by @to (malloc'd; NULL if @from is absent). */
static char *replace(const char *src, const char *from, const char *to)
{
	const char *at = strstr(src, from);
	size_t head, n;
	char *r;

	if (!at) {
		fprintf(stderr, "  replace: '%s' not in the template\n", from);
		return NULL;
	}
	head = (size_t)(at - src);
	n = strlen(src) - strlen(from) + strlen(to);
	r = malloc(n + 1);
	if (!r)
		return NULL;
	memcpy(r, src, head);
	strcpy(r + head, to);
	strcat(r, at + strlen(from));
	return r;
}

/* "{00000000-0000-4000-8000-<i in 12 hex digits>}", one stable buffer per @i (< 256). */
static const char *guid_n(int i)
{
	static char tab[256][PLOOP_GUID_BUF];

	snprintf(tab[i & 255], PLOOP_GUID_BUF, "{00000000-0000-4000-8000-%012x}", i);
	return tab[i & 255];
}

struct img {
	const char *guid, *type, *file;
};

struct shot {
	const char *guid, *parent, *extra;
};

/* A descriptor document from parts; NULL @top leaves out <TopGUID>. */
static char *build_xml(const char *params, const char *storage, const struct img *im, int ni,
		       const struct shot *sh, int ns, const char *top)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	if (!f)
		return NULL;
	fprintf(f, "<?xml version=\"1.0\"?>\n<Parallels_disk_image>\n  <Disk_Parameters>\n%s  </Disk_Parameters>\n",
		params ? params : "    <Disk_size>131072</Disk_size>\n");
	fprintf(f, "  <StorageData>\n    <Storage>\n%s",
		storage ? storage
			: "      <Start>0</Start>\n      <End>131072</End>\n      <Blocksize>2048</Blocksize>\n");
	for (int i = 0; i < ni; i++) {
		fprintf(f, "      <Image>\n        <GUID>%s</GUID>\n", im[i].guid);
		if (im[i].type)
			fprintf(f, "        <Type>%s</Type>\n", im[i].type);
		if (im[i].file)
			fprintf(f, "        <File>%s</File>\n", im[i].file);
		fprintf(f, "      </Image>\n");
	}
	fprintf(f, "    </Storage>\n  </StorageData>\n  <Snapshots>\n");
	if (top)
		fprintf(f, "    <TopGUID>%s</TopGUID>\n", top);
	for (int i = 0; i < ns; i++)
		fprintf(f, "    <Shot>\n      <GUID>%s</GUID>\n      <ParentGUID>%s</ParentGUID>\n%s    </Shot>\n",
			sh[i].guid, sh[i].parent, sh[i].extra ? sh[i].extra : "");
	fprintf(f, "  </Snapshots>\n</Parallels_disk_image>\n");
	fclose(f);
	return buf;
}

static int parse(const char *xml, struct ploop_descriptor **dd, struct ploop_error *e)
{
	return ploop_descriptor_parse(xml, strlen(xml), "DiskDescriptor.xml", dd, e);
}

/* Whether @xml is refused with PLOOP_ERR_DESCRIPTOR, one line of message and no descriptor. */
static bool rejected(const char *what, const char *xml)
{
	struct ploop_descriptor *dd = (void *)1;
	struct ploop_error e = { 0 };
	int r;

	if (!xml) {
		fprintf(stderr, "  %s: no document\n", what);
		return false;
	}
	r = parse(xml, &dd, &e);
	if (r != PLOOP_ERR_DESCRIPTOR || e.status != PLOOP_ERR_DESCRIPTOR || dd) {
		fprintf(stderr, "  %s: parse returned %d (%s), wanted %d\n", what, r, e.msg, PLOOP_ERR_DESCRIPTOR);
		if (!r)
			ploop_descriptor_free(dd);
		return false;
	}
	if (!e.msg[0] || strchr(e.msg, '\n')) {
		fprintf(stderr, "  %s: message is not one line: '%s'\n", what, e.msg);
		return false;
	}
	return true;
}

static bool rejected_free(const char *what, char *xml)
{
	bool r = rejected(what, xml);

	free(xml);
	return r;
}

static bool accepted(const char *what, const char *xml, struct ploop_descriptor **out)
{
	struct ploop_descriptor *dd = NULL;
	struct ploop_error e = { 0 };

	if (!xml || parse(xml, &dd, &e)) {
		fprintf(stderr, "  %s: %s\n", what, xml ? e.msg : "no document");
		return false;
	}
	if (out)
		*out = dd;
	else
		ploop_descriptor_free(dd);
	return true;
}

static bool accepted_free(const char *what, char *xml, struct ploop_descriptor **out)
{
	bool r = accepted(what, xml, out);

	free(xml);
	return r;
}

static char *cwd_join(const char *name)
{
	char dir[PATH_MAX], *r = NULL;

	if (!getcwd(dir, sizeof(dir)) || asprintf(&r, "%s/%s", dir, name) < 0)
		return NULL;
	return r;
}

static bool str_eq(const char *a, const char *b)
{
	return a == b || (a && b && !strcmp(a, b));
}

/* Every field of two descriptors, paths included. */
static bool same_descriptor(const struct ploop_descriptor *a, const struct ploop_descriptor *b)
{
	bool same = a->disk_size == b->disk_size && a->cylinders == b->cylinders && a->heads == b->heads &&
		    a->sectors == b->sectors && a->padding == b->padding && a->start == b->start &&
		    a->end == b->end && a->blocksize == b->blocksize && a->preallocated == b->preallocated &&
		    a->raw == b->raw && a->max_delta_size == b->max_delta_size &&
		    str_eq(a->encryption_keyid, b->encryption_keyid) && !strcmp(a->top_guid, b->top_guid) &&
		    a->n_images == b->n_images && a->n_snapshots == b->n_snapshots && str_eq(a->dir, b->dir);

	for (int i = 0; same && i < a->n_images; i++)
		same = !strcmp(a->images[i].guid, b->images[i].guid) && str_eq(a->images[i].file, b->images[i].file) &&
		       str_eq(a->images[i].path, b->images[i].path);
	for (int i = 0; same && i < a->n_snapshots; i++)
		same = !strcmp(a->snapshots[i].guid, b->snapshots[i].guid) &&
		       !strcmp(a->snapshots[i].parent, b->snapshots[i].parent) &&
		       a->snapshots[i].temporary == b->snapshots[i].temporary;
	return same;
}

static bool file_is(const char *path, const char *text)
{
	size_t len = 0;
	char *buf = read_file(path, &len);
	bool same = buf && len == strlen(text) && !memcmp(buf, text, len);

	if (!same)
		fprintf(stderr, "  %s differs from the expected text:\n%.*s\n", path, buf ? (int)len : 0,
			buf ? buf : "");
	free(buf);
	return same;
}

static bool exists(const char *path)
{
	struct stat st;

	return !stat(path, &st);
}

/* ---- the upstream sample ---------------------------------------------------------------------------------- */

TEST(descriptor_parse_upstream_sample)
{
	struct ploop_descriptor *dd;
	char *path0 = cwd_join("root.hds"), *path1 = cwd_join(TOP_FILE);

	CHECK(path0 && path1);
	CHECK_OK(ploop_descriptor_parse(sample_xml, strlen(sample_xml), "DiskDescriptor.xml", &dd, err));
	CHECK_EQ(dd->disk_size, 131072);
	CHECK_EQ(dd->cylinders, 256);
	CHECK_EQ(dd->heads, 16);
	CHECK_EQ(dd->sectors, 32);
	CHECK_EQ(dd->padding, 0);
	CHECK_EQ(dd->start, 0);
	CHECK_EQ(dd->end, 131072);
	CHECK_EQ(dd->blocksize, 2048);
	CHECK(!dd->preallocated);
	CHECK(!dd->raw);
	CHECK_EQ(dd->max_delta_size, 0);
	CHECK(dd->encryption_keyid == NULL);
	CHECK(!strcmp(dd->top_guid, PLOOP_TOP_GUID));
	CHECK_EQ(dd->n_images, 2);
	CHECK_EQ(dd->n_snapshots, 2);
	CHECK(!strcmp(dd->images[0].guid, BASE_GUID));
	CHECK(!strcmp(dd->images[0].file, "root.hds"));
	CHECK(!strcmp(dd->images[0].path, path0));
	CHECK(!strcmp(dd->images[1].guid, PLOOP_TOP_GUID));
	CHECK(!strcmp(dd->images[1].file, TOP_FILE));
	CHECK(!strcmp(dd->images[1].path, path1));
	CHECK(!strcmp(dd->snapshots[0].guid, BASE_GUID));
	CHECK(!strcmp(dd->snapshots[0].parent, PLOOP_NONE_GUID));
	CHECK_EQ(dd->snapshots[0].temporary, PLOOP_TEMP_NONE);
	CHECK(!strcmp(dd->snapshots[1].guid, PLOOP_TOP_GUID));
	CHECK(!strcmp(dd->snapshots[1].parent, BASE_GUID));
	CHECK_EQ(dd->snapshots[1].temporary, PLOOP_TEMP_NONE);
	CHECK(!strcmp(dd->path, "DiskDescriptor.xml"));
	ploop_descriptor_free(dd);
	free(path0);
	free(path1);
}

TEST(descriptor_write_upstream_sample_is_text_identical)
{
	struct ploop_descriptor *dd;

	CHECK_OK(ploop_descriptor_parse(sample_xml, strlen(sample_xml), "DiskDescriptor.xml", &dd, err));
	CHECK_OK(ploop_descriptor_write(dd, "out.xml", err));
	CHECK(file_is("out.xml", sample_xml));
	CHECK(!exists("out.xml.tmp"));
	/* Replacing an existing file works the same way. */
	CHECK(!write_file("DiskDescriptor.xml", "junk", 4));
	CHECK_OK(ploop_descriptor_write(dd, "DiskDescriptor.xml", err));
	CHECK(file_is("DiskDescriptor.xml", sample_xml));
	CHECK(!exists("DiskDescriptor.xml.tmp"));
	ploop_descriptor_free(dd);
}

TEST(descriptor_read_resolves_paths_against_its_directory)
{
	struct ploop_descriptor *dd;
	char *want = cwd_join("sub/root.hds");

	CHECK(want);
	CHECK(!mkdir("sub", 0755));
	CHECK(!write_file("sub/DiskDescriptor.xml", sample_xml, strlen(sample_xml)));
	CHECK_OK(ploop_descriptor_read("sub/DiskDescriptor.xml", &dd, err));
	CHECK(!strcmp(dd->images[0].path, want));
	CHECK(!strcmp(dd->images[0].file, "root.hds"));
	CHECK(!strcmp(dd->path, "sub/DiskDescriptor.xml"));
	ploop_descriptor_free(dd);
	free(want);
}

TEST(descriptor_init_writes_upstream_text)
{
	static const char want[] =
		"<?xml version=\"1.0\"?>\n"
		"<Parallels_disk_image>\n"
		"  <Disk_Parameters>\n"
		"    <Disk_size>204800</Disk_size>\n"
		"    <Cylinders>400</Cylinders>\n"
		"    <Heads>16</Heads>\n"
		"    <Sectors>32</Sectors>\n"
		"    <Padding>0</Padding>\n"
		"  </Disk_Parameters>\n"
		"  <StorageData>\n"
		"    <Storage>\n"
		"      <Start>0</Start>\n"
		"      <End>204800</End>\n"
		"      <Blocksize>2048</Blocksize>\n"
		"      <Image>\n"
		"        <GUID>" PLOOP_TOP_GUID "</GUID>\n"
		"        <Type>Compressed</Type>\n"
		"        <File>root.hds</File>\n"
		"      </Image>\n"
		"    </Storage>\n"
		"  </StorageData>\n"
		"  <Snapshots>\n"
		"    <TopGUID>" PLOOP_TOP_GUID "</TopGUID>\n"
		"    <Shot>\n"
		"      <GUID>" PLOOP_TOP_GUID "</GUID>\n"
		"      <ParentGUID>" PLOOP_NONE_GUID "</ParentGUID>\n"
		"    </Shot>\n"
		"  </Snapshots>\n"
		"</Parallels_disk_image>\n";
	struct ploop_create_params p = { .size_sectors = 204800 };

	CHECK_OK(ploop_init_image("root.hds", &p, err));
	CHECK(file_is("DiskDescriptor.xml", want));
}

/* ---- accepted variants ------------------------------------------------------------------------------------- */

TEST(descriptor_minimal)
{
	/* Only Disk_size, Blocksize and one Image; no Shot (accepted by 1.15, §2.1). */
	static const char xml[] = "<?xml version=\"1.0\"?>\n"
				  "<Parallels_disk_image><Disk_Parameters><Disk_size>2048</Disk_size></Disk_Parameters>"
				  "<StorageData><Storage><Blocksize>2048</Blocksize>"
				  "<Image><GUID>" PLOOP_TOP_GUID "</GUID><File>root.hds</File></Image>"
				  "</Storage></StorageData><Snapshots/></Parallels_disk_image>";
	struct ploop_descriptor *dd;
	int idx[4], n = 0;

	CHECK_OK(ploop_descriptor_parse(xml, strlen(xml), "DiskDescriptor.xml", &dd, err));
	CHECK_EQ(dd->disk_size, 2048);
	CHECK_EQ(dd->blocksize, 2048);
	CHECK_EQ(dd->cylinders, 0);
	CHECK_EQ(dd->end, 0);
	CHECK(!dd->raw);
	CHECK_EQ(dd->n_images, 1);
	CHECK_EQ(dd->n_snapshots, 1);
	CHECK(!strcmp(dd->top_guid, PLOOP_TOP_GUID));
	CHECK(!strcmp(dd->snapshots[0].guid, PLOOP_TOP_GUID));
	CHECK(!strcmp(dd->snapshots[0].parent, PLOOP_NONE_GUID));
	CHECK_OK(ploop_descriptor_chain(dd, NULL, idx, &n, err));
	CHECK_EQ(n, 1);
	CHECK_EQ(idx[0], 0);
	/* It can be written out and read back. */
	CHECK_OK(ploop_descriptor_write(dd, "DiskDescriptor.xml", err));
	ploop_descriptor_free(dd);
	CHECK_OK(ploop_descriptor_read("DiskDescriptor.xml", &dd, err));
	CHECK_EQ(dd->n_snapshots, 1);
	ploop_descriptor_free(dd);
}

TEST(descriptor_minimal_old_guid)
{
	/* The lone image of an old descriptor is base and top whatever its GUID. */
	static const char xml[] = "<Parallels_disk_image><Disk_Parameters><Disk_size>2048</Disk_size></Disk_Parameters>"
				  "<StorageData><Storage><Blocksize>2048</Blocksize>"
				  "<Image><GUID>" BASE_GUID "</GUID><File>root.hds</File></Image>"
				  "</Storage></StorageData><Snapshots></Snapshots></Parallels_disk_image>";
	struct ploop_descriptor *dd;

	CHECK(accepted("minimal with an old GUID", xml, &dd));
	CHECK(!strcmp(dd->top_guid, BASE_GUID));
	CHECK_EQ(dd->n_snapshots, 1);
	CHECK(!strcmp(dd->snapshots[0].parent, PLOOP_NONE_GUID));
	ploop_descriptor_free(dd);
}

TEST(descriptor_missing_top_guid_with_topdelta)
{
	char *xml = replace(sample_xml, "    <TopGUID>" PLOOP_TOP_GUID "</TopGUID>\n", "");
	struct ploop_descriptor *dd;

	CHECK(accepted_free("no TopGUID", xml, &dd));
	CHECK(!strcmp(dd->top_guid, PLOOP_TOP_GUID));
	ploop_descriptor_free(dd);
}

TEST(descriptor_missing_top_guid_without_topdelta)
{
	/* Two images, neither is TOPDELTA, no TopGUID: nothing says which one is the top. */
	struct img im[] = { { guid_n(1), "Compressed", "a" }, { guid_n(2), "Compressed", "b" } };
	struct shot sh[] = { { guid_n(1), PLOOP_NONE_GUID, NULL }, { guid_n(2), guid_n(1), NULL } };

	CHECK(rejected_free("no TopGUID, no TOPDELTA", build_xml(NULL, NULL, im, 2, sh, 2, NULL)));
}

TEST(descriptor_old_format_top_guid)
{
	const char *top = "{aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee}";
	struct img im[] = { { BASE_GUID, "Compressed", "root.hds" }, { top, "Compressed", "root.hds.1" } };
	struct shot sh[] = { { BASE_GUID, PLOOP_NONE_GUID, NULL }, { top, BASE_GUID, NULL } };
	struct ploop_descriptor *dd, *again;
	int idx[4], n = 0;

	CHECK(accepted_free("old-format TopGUID", build_xml(NULL, NULL, im, 2, sh, 2, top), &dd));
	CHECK(!strcmp(dd->top_guid, top));
	CHECK_OK(ploop_descriptor_chain(dd, NULL, idx, &n, err));
	CHECK_EQ(n, 2);
	CHECK_EQ(idx[0], 0);
	CHECK_EQ(idx[1], 1);
	CHECK_OK(ploop_descriptor_write(dd, "DiskDescriptor.xml", err));
	CHECK_OK(ploop_descriptor_read("DiskDescriptor.xml", &again, err));
	CHECK(same_descriptor(dd, again));
	ploop_descriptor_free(again);
	ploop_descriptor_free(dd);
}

TEST(descriptor_root_name_not_checked)
{
	char *a = replace(sample_xml, "<Parallels_disk_image>", "<Virtuozzo_disk_image>");
	char *b = a ? replace(a, "</Parallels_disk_image>", "</Virtuozzo_disk_image>") : NULL;

	free(a);
	CHECK(accepted_free("Virtuozzo root", b, NULL));
}

TEST(descriptor_guid_case_and_blanks)
{
	/* GUIDs compare case-insensitively and are stored lower case; text is trimmed. */
	char *a = replace(sample_xml, "<GUID>" BASE_GUID "</GUID>\n        <Type>",
			  "<GUID>\n  {75C9D1A6-E9CA-41F2-8106-2CE8595C5903}\t</GUID>\n        <Type>");
	char *b = a ? replace(a, "<File>root.hds</File>", "<File>  root.hds\n</File>") : NULL;
	char *c = b ? replace(b, "<Disk_size>131072", "<Disk_size> 131072 ") : NULL;
	struct ploop_descriptor *dd;

	free(a);
	free(b);
	CHECK(accepted_free("upper-case GUID", c, &dd));
	CHECK(!strcmp(dd->images[0].guid, BASE_GUID));
	CHECK(!strcmp(dd->images[0].file, "root.hds"));
	CHECK_EQ(dd->disk_size, 131072);
	CHECK_EQ(ploop_descriptor_find_image(dd, BASE_GUID), 0);
	ploop_descriptor_free(dd);
}

TEST(descriptor_numbers_strtoul_base_0)
{
	/* strtoul(..., 0) as upstream: hex and octal are numbers too. */
	char *a = replace(sample_xml, "<Blocksize>2048</Blocksize>", "<Blocksize>0x800</Blocksize>");
	char *b = a ? replace(a, "<Heads>16</Heads>", "<Heads>020</Heads>") : NULL;
	struct ploop_descriptor *dd;

	free(a);
	CHECK(accepted_free("hex/octal numbers", b, &dd));
	CHECK_EQ(dd->blocksize, 2048);
	CHECK_EQ(dd->heads, 16);
	ploop_descriptor_free(dd);
}

TEST(descriptor_file_names_inside_the_directory)
{
	static const char *const ok[] = { "..hidden", "a..b", "x..", "./root.hds.2", "sub/dir/f", "a b.hds" };

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		struct ploop_descriptor *dd = NULL;
		char *tag = NULL;

		CHECK(asprintf(&tag, "<File>%s</File>", ok[i]) > 0);
		CHECK(accepted_free(ok[i], replace(sample_xml, "<File>" TOP_FILE "</File>", tag), &dd));
		free(tag);
		CHECK(!strcmp(dd->images[1].file, ok[i]));
		ploop_descriptor_free(dd);
	}
}

/* ---- malformed documents ------------------------------------------------------------------------------------ */

TEST(descriptor_rejects_not_xml)
{
	CHECK(rejected("plain text", "hello, world"));
	CHECK(rejected("binary", "\x01\x02\x03\xff"));
	CHECK(rejected("truncated", "<?xml version=\"1.0\"?>\n<Parallels_disk_image>\n  <Disk_Parameters>\n"));
	CHECK(rejected("declaration only", "<?xml version=\"1.0\"?>\n"));
	CHECK(rejected("mismatched tags", "<a><b></a></b>"));
	{
		size_t n = strlen(sample_xml) - 10;
		char *cut = strndup(sample_xml, n);

		CHECK(rejected_free("sample cut short", cut));
	}
}

TEST(descriptor_rejects_empty)
{
	struct ploop_descriptor *dd;

	CHECK_FAILS(PLOOP_ERR_DESCRIPTOR, ploop_descriptor_parse("", 0, "DiskDescriptor.xml", &dd, err));
	CHECK(!write_file("DiskDescriptor.xml", "", 0));
	CHECK_FAILS(PLOOP_ERR_DESCRIPTOR, ploop_descriptor_read("DiskDescriptor.xml", &dd, err));
	CHECK(dd == NULL);
	CHECK(rejected("blank", "   \n\n"));
	CHECK(rejected("empty root", "<Parallels_disk_image/>"));
}

TEST(descriptor_read_missing_or_not_a_file)
{
	struct ploop_descriptor *dd;

	CHECK_FAILS(PLOOP_ERR_DESCRIPTOR, ploop_descriptor_read("nope.xml", &dd, err));
	CHECK(!mkdir("dir.xml", 0755));
	CHECK_FAILS(PLOOP_ERR_DESCRIPTOR, ploop_descriptor_read("dir.xml", &dd, err));
}

TEST(descriptor_rejects_huge_file)
{
	size_t n = (1u << 20) + 100;
	char *big = malloc(n);
	struct ploop_descriptor *dd;

	CHECK(big);
	memset(big, ' ', n);
	memcpy(big + n - strlen(sample_xml), sample_xml, strlen(sample_xml));
	CHECK(!write_file("DiskDescriptor.xml", big, n));
	free(big);
	CHECK_FAILS(PLOOP_ERR_DESCRIPTOR, ploop_descriptor_read("DiskDescriptor.xml", &dd, err));
}

TEST(descriptor_rejects_missing_sections)
{
	const char *params = strstr(sample_xml, "  <Disk_Parameters>");
	const char *params_end = strstr(sample_xml, "  <StorageData>");
	const char *sd_end = strstr(sample_xml, "  <Snapshots>");
	const char *snaps_end = strstr(sample_xml, "</Parallels_disk_image>");
	char *x;

	CHECK(params && params_end && sd_end && snaps_end);
	CHECK(asprintf(&x, "%.*s%s", (int)(params - sample_xml), sample_xml, params_end) > 0);
	CHECK(rejected_free("no Disk_Parameters", x));
	CHECK(asprintf(&x, "%.*s%s", (int)(params_end - sample_xml), sample_xml, sd_end) > 0);
	CHECK(rejected_free("no StorageData", x));
	CHECK(asprintf(&x, "%.*s%s", (int)(sd_end - sample_xml), sample_xml, snaps_end) > 0);
	CHECK(rejected_free("no Snapshots", x));
	/* StorageData without Storage. */
	x = replace(sample_xml, "<Storage>", "<Storagex>");
	CHECK(x);
	CHECK(rejected_free("no Storage", replace(x, "</Storage>", "</Storagex>")));
	free(x);
}

TEST(descriptor_rejects_two_storages)
{
	CHECK(rejected_free("two Storage",
			    replace(sample_xml, "  </StorageData>",
				    "    <Storage><Blocksize>2048</Blocksize></Storage>\n  </StorageData>")));
}

TEST(descriptor_rejects_no_image)
{
	struct shot sh[] = { { PLOOP_TOP_GUID, PLOOP_NONE_GUID, NULL } };

	CHECK(rejected_free("no Image", build_xml(NULL, NULL, NULL, 0, sh, 1, PLOOP_TOP_GUID)));
	CHECK(rejected_free("no Image, no Shot", build_xml(NULL, NULL, NULL, 0, NULL, 0, NULL)));
}

TEST(descriptor_rejects_bad_guid_syntax)
{
	static const char *const bad[] = {
		"{75c9d1a6-e9ca-41f2-8106-2ce8595c590}",	/* short */
		"{75c9d1a6-e9ca-41f2-8106-2ce8595c59033}",	/* long */
		"75c9d1a6-e9ca-41f2-8106-2ce8595c5903",		/* braces are required in the XML */
		"{75c9d1a6-e9ca-41f2-8106-2ce8595c590z}",	/* not hex */
		"{75c9d1a6_e9ca-41f2-8106-2ce8595c5903}",	/* separator */
		"",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char tag[128];

		/* In turn: the image GUID, the snapshot GUID, a ParentGUID, the TopGUID. */
		snprintf(tag, sizeof(tag), "<GUID>%s</GUID>\n        <Type>", bad[i]);
		CHECK(rejected_free(bad[i], replace(sample_xml, "<GUID>" BASE_GUID "</GUID>\n        <Type>", tag)));
		snprintf(tag, sizeof(tag), "<GUID>%s</GUID>\n      <ParentGUID>" PLOOP_NONE_GUID, bad[i]);
		CHECK(rejected_free(bad[i], replace(sample_xml, "<GUID>" BASE_GUID "</GUID>\n      <ParentGUID>"
								PLOOP_NONE_GUID, tag)));
		snprintf(tag, sizeof(tag), "<ParentGUID>%s</ParentGUID>", bad[i]);
		CHECK(rejected_free(bad[i], replace(sample_xml, "<ParentGUID>" BASE_GUID "</ParentGUID>", tag)));
		snprintf(tag, sizeof(tag), "<TopGUID>%s</TopGUID>", bad[i]);
		CHECK(rejected_free(bad[i], replace(sample_xml, "<TopGUID>" PLOOP_TOP_GUID "</TopGUID>", tag)));
	}
	/* A missing GUID or ParentGUID element. */
	CHECK(rejected_free("no image GUID",
			    replace(sample_xml, "<GUID>" BASE_GUID "</GUID>\n        <Type>", "<Type>")));
	CHECK(rejected_free("no ParentGUID",
			    replace(sample_xml, "<ParentGUID>" BASE_GUID "</ParentGUID>", "")));
}

TEST(descriptor_rejects_duplicate_guids)
{
	struct img im2[] = { { guid_n(1), NULL, "a" }, { guid_n(1), NULL, "b" } };
	struct shot sh2[] = { { guid_n(1), PLOOP_NONE_GUID, NULL }, { guid_n(2), guid_n(1), NULL } };
	struct img im3[] = { { guid_n(1), NULL, "a" }, { guid_n(2), NULL, "b" } };
	struct shot sh3[] = { { guid_n(1), PLOOP_NONE_GUID, NULL }, { guid_n(1), PLOOP_NONE_GUID, NULL } };
	/* Duplicates that differ only in case are still duplicates. */
	struct img im4[] = { { "{0000000A-0000-4000-8000-000000000001}", NULL, "a" },
			     { "{0000000a-0000-4000-8000-000000000001}", NULL, "b" } };

	CHECK(rejected_free("duplicate image", build_xml(NULL, NULL, im2, 2, sh2, 2, guid_n(2))));
	CHECK(rejected_free("duplicate snapshot", build_xml(NULL, NULL, im3, 2, sh3, 2, guid_n(2))));
	CHECK(rejected_free("duplicate image by case", build_xml(NULL, NULL, im4, 2, sh2, 2, guid_n(2))));
}

TEST(descriptor_rejects_parent_cycles)
{
	const char *a = guid_n(1), *b = guid_n(2), *c = guid_n(3), *x = guid_n(4), *t = guid_n(5);
	struct img im[] = { { a, NULL, "a" }, { b, NULL, "b" }, { c, NULL, "c" }, { x, NULL, "x" }, { t, NULL, "t" } };
	/* a <-> b */
	struct shot two[] = { { a, b, NULL }, { b, a, NULL } };
	/* a -> b -> c -> a */
	struct shot three[] = { { a, c, NULL }, { b, a, NULL }, { c, b, NULL } };
	/* A valid chain x <- t beside a detached a <-> b cycle. */
	struct shot detached[] = { { x, PLOOP_NONE_GUID, NULL }, { t, x, NULL }, { a, b, NULL }, { b, a, NULL } };
	struct img imd[] = { { x, NULL, "x" }, { t, NULL, "t" }, { a, NULL, "a" }, { b, NULL, "b" } };
	/* Its own parent. */
	struct shot self[] = { { a, a, NULL } };

	CHECK(rejected_free("2-cycle", build_xml(NULL, NULL, im, 2, two, 2, b)));
	CHECK(rejected_free("3-cycle", build_xml(NULL, NULL, im, 3, three, 3, c)));
	CHECK(rejected_free("detached cycle", build_xml(NULL, NULL, imd, 4, detached, 4, t)));
	CHECK(rejected_free("self parent", build_xml(NULL, NULL, im, 1, self, 1, a)));
}

TEST(descriptor_rejects_unknown_parent)
{
	struct img im[] = { { guid_n(1), NULL, "a" }, { guid_n(2), NULL, "b" } };
	struct shot sh[] = { { guid_n(1), PLOOP_NONE_GUID, NULL }, { guid_n(2), guid_n(9), NULL } };

	CHECK(rejected_free("unknown parent", build_xml(NULL, NULL, im, 2, sh, 2, guid_n(2))));
}

TEST(descriptor_rejects_snapshot_image_mismatch)
{
	struct img im2[] = { { guid_n(1), NULL, "a" }, { guid_n(2), NULL, "b" } };
	struct img im3[] = { { guid_n(1), NULL, "a" }, { guid_n(2), NULL, "b" }, { guid_n(3), NULL, "c" } };
	struct shot sh2[] = { { guid_n(1), PLOOP_NONE_GUID, NULL }, { guid_n(2), guid_n(1), NULL } };
	struct shot sh3[] = { { guid_n(1), PLOOP_NONE_GUID, NULL }, { guid_n(2), guid_n(1), NULL },
			      { guid_n(3), guid_n(2), NULL } };
	struct shot other[] = { { guid_n(1), PLOOP_NONE_GUID, NULL }, { guid_n(4), guid_n(1), NULL } };

	/* A snapshot without an image: one more Shot, or a Shot whose GUID no Image has. */
	CHECK(rejected_free("snapshot without image", build_xml(NULL, NULL, im2, 2, sh3, 3, guid_n(3))));
	CHECK(rejected_free("snapshot without image, same count", build_xml(NULL, NULL, im2, 2, other, 2, guid_n(4))));
	/* An image without a snapshot. */
	CHECK(rejected_free("image without snapshot", build_xml(NULL, NULL, im3, 3, sh2, 2, guid_n(2))));
	CHECK(rejected_free("two images, no shots", build_xml(NULL, NULL, im2, 2, NULL, 0, guid_n(2))));
}

TEST(descriptor_rejects_bad_top)
{
	struct img im[] = { { guid_n(1), NULL, "a" }, { guid_n(2), NULL, "b" } };
	struct shot sh[] = { { guid_n(1), PLOOP_NONE_GUID, NULL }, { guid_n(2), guid_n(1), NULL } };
	static const char *const temp[] = { "      <Temporary/>\n", "      <TemporaryZero/>\n",
					    "      <TemporaryZeroSwap/>\n" };

	CHECK(rejected_free("unknown TopGUID", build_xml(NULL, NULL, im, 2, sh, 2, guid_n(3))));
	CHECK(rejected_free("TopGUID NONE", build_xml(NULL, NULL, im, 2, sh, 2, PLOOP_NONE_GUID)));
	/* The top must be a leaf. */
	CHECK(rejected_free("top with a child", build_xml(NULL, NULL, im, 2, sh, 2, guid_n(1))));
	for (int i = 0; i < 3; i++) {
		struct shot t[] = { { guid_n(1), PLOOP_NONE_GUID, NULL }, { guid_n(2), guid_n(1), temp[i] } };
		struct ploop_descriptor *dd = NULL;

		CHECK(rejected_free(temp[i], build_xml(NULL, NULL, im, 2, t, 2, guid_n(2))));
		/* Below the top each marker is fine and kept. */
		struct shot u[] = { { guid_n(1), PLOOP_NONE_GUID, temp[i] }, { guid_n(2), guid_n(1), NULL } };

		CHECK(accepted_free(temp[i], build_xml(NULL, NULL, im, 2, u, 2, guid_n(2)), &dd));
		CHECK_EQ(dd->snapshots[0].temporary, PLOOP_TEMP + i);
		ploop_descriptor_free(dd);
	}
}

TEST(descriptor_rejects_invalid_blocksize)
{
	static const char *const bad[] = { "0", "32", "100", "2047", "262144", "4294967296", "-2048" };

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char tag[64];

		snprintf(tag, sizeof(tag), "<Blocksize>%s</Blocksize>", bad[i]);
		CHECK(rejected_free(bad[i], replace(sample_xml, "<Blocksize>2048</Blocksize>", tag)));
	}
}

TEST(descriptor_rejects_non_numeric_numbers)
{
	static const char *const fields[] = { "Disk_size", "Cylinders", "Heads", "Sectors", "Padding", "Start",
					      "End", "Blocksize" };
	static const char *const bad[] = { "abc", "12abc", "1.5", "", " ", "-1", "1e3", "0x", "12 34" };

	for (size_t f = 0; f < sizeof(fields) / sizeof(fields[0]); f++) {
		char *open_tag = NULL, *close_tag = NULL;
		const char *at, *end;

		CHECK(asprintf(&open_tag, "<%s>", fields[f]) > 0 && asprintf(&close_tag, "</%s>", fields[f]) > 0);
		at = strstr(sample_xml, open_tag);
		end = at ? strstr(at, close_tag) : NULL;
		CHECK(at && end);
		for (size_t b = 0; b < sizeof(bad) / sizeof(bad[0]); b++) {
			char *x = NULL, what[64];

			CHECK(asprintf(&x, "%.*s%s%s", (int)(at - sample_xml) + (int)strlen(open_tag), sample_xml,
				       bad[b], end) > 0);
			snprintf(what, sizeof(what), "%s '%s'", fields[f], bad[b]);
			CHECK(rejected_free(what, x));
		}
		free(open_tag);
		free(close_tag);
	}
	/* Out of range for the field. */
	CHECK(rejected_free("Heads > u32", replace(sample_xml, "<Heads>16</Heads>", "<Heads>4294967296</Heads>")));
	CHECK(rejected_free("Disk_size > u64",
			    replace(sample_xml, "<Disk_size>131072", "<Disk_size>18446744073709551616")));
	CHECK(rejected_free("Preallocated 2",
			    replace(sample_xml, "<Blocksize>2048</Blocksize>",
				    "<Blocksize>2048</Blocksize><Preallocated>2</Preallocated>")));
	CHECK(rejected_free("Preallocated yes",
			    replace(sample_xml, "<Blocksize>2048</Blocksize>",
				    "<Blocksize>2048</Blocksize><Preallocated>yes</Preallocated>")));
}

static bool file_rejected(const char *file)
{
	char *tag = NULL;
	bool r;

	if (asprintf(&tag, "<File>%s</File>", file) < 0)
		return false;
	r = rejected_free(file, replace(sample_xml, "<File>" TOP_FILE "</File>", tag));
	free(tag);
	return r;
}

TEST(descriptor_rejects_absolute_file)
{
	CHECK(file_rejected("/etc/passwd"));
	CHECK(file_rejected("/tmp/root.hds"));
	CHECK(file_rejected("//root.hds"));
}

TEST(descriptor_rejects_dotdot_file)
{
	CHECK(file_rejected("../x"));
	CHECK(file_rejected("a/../../x"));
	CHECK(file_rejected(".."));
	CHECK(file_rejected("a/.."));
	CHECK(file_rejected("a/../b"));
	CHECK(file_rejected("./../x"));
	CHECK(file_rejected("a//..//x"));
}

TEST(descriptor_rejects_empty_or_missing_file)
{
	CHECK(file_rejected(""));
	CHECK(file_rejected("   "));
	CHECK(file_rejected("a&#10;b"));	/* a control character */
	CHECK(rejected_free("no File", replace(sample_xml, "<File>" TOP_FILE "</File>", "")));
}

TEST(descriptor_rejects_two_images_one_file)
{
	CHECK(file_rejected("root.hds"));
}

TEST(descriptor_rejects_two_images_one_file_spelled_differently)
{
	/* "./root.hds" names the same file as the base's "root.hds". */
	CHECK(file_rejected("./root.hds"));
	CHECK(file_rejected(".//root.hds"));
}

TEST(descriptor_rejects_unknown_type)
{
	CHECK(rejected_free("Type Expanded", replace(sample_xml, "<Type>Compressed</Type>", "<Type>Expanded</Type>")));
	CHECK(rejected_free("Type plain", replace(sample_xml, "<Type>Compressed</Type>", "<Type>plain</Type>")));
}

TEST(descriptor_rejects_two_bases)
{
	struct img im[] = { { guid_n(1), NULL, "a" }, { guid_n(2), NULL, "b" } };
	struct shot sh[] = { { guid_n(1), PLOOP_NONE_GUID, NULL }, { guid_n(2), PLOOP_NONE_GUID, NULL } };

	CHECK(rejected_free("two bases", build_xml(NULL, NULL, im, 2, sh, 2, guid_n(2))));
}

/* A linear chain of @n images, base first; the top is TOPDELTA. */
static char *chain_xml(int n)
{
	struct img *im = calloc((size_t)n, sizeof(*im));
	struct shot *sh = calloc((size_t)n, sizeof(*sh));
	char (*g)[PLOOP_GUID_BUF] = calloc((size_t)n, PLOOP_GUID_BUF);
	char (*f)[16] = calloc((size_t)n, 16);
	char *x = NULL;

	if (im && sh && g && f) {
		for (int i = 0; i < n; i++) {
			if (i == n - 1)
				strcpy(g[i], PLOOP_TOP_GUID);
			else
				snprintf(g[i], PLOOP_GUID_BUF, "{00000000-0000-4000-8000-%012x}", i + 1);
			snprintf(f[i], 16, "f%d", i);
			im[i] = (struct img){ g[i], "Compressed", f[i] };
			sh[i] = (struct shot){ g[i], i ? g[i - 1] : PLOOP_NONE_GUID, NULL };
		}
		x = build_xml(NULL, NULL, im, n, sh, n, PLOOP_TOP_GUID);
	}
	free(im);
	free(sh);
	free(g);
	free(f);
	return x;
}

TEST(descriptor_chain_length_limit)
{
	struct ploop_descriptor *dd;
	int idx[PLOOP_MAX_CHAIN], n = 0;

	CHECK(accepted_free("128 images", chain_xml(PLOOP_MAX_CHAIN), &dd));
	CHECK_OK(ploop_descriptor_chain(dd, NULL, idx, &n, err));
	CHECK_EQ(n, PLOOP_MAX_CHAIN);
	for (int i = 0; i < n; i++)
		CHECK_EQ(idx[i], i);
	ploop_descriptor_free(dd);
	CHECK(rejected_free("129 images", chain_xml(PLOOP_MAX_CHAIN + 1)));
	CHECK(rejected_free("200 images", chain_xml(200)));
}

TEST(descriptor_plain_only_as_base)
{
	struct img base_plain[] = { { guid_n(1), "Plain", "a" }, { guid_n(2), "Compressed", "b" } };
	struct shot sh[] = { { guid_n(1), PLOOP_NONE_GUID, NULL }, { guid_n(2), guid_n(1), NULL } };
	struct ploop_descriptor *dd;

	CHECK(accepted_free("Plain base", build_xml(NULL, NULL, base_plain, 2, sh, 2, guid_n(2)), &dd));
	CHECK(dd->raw);
	ploop_descriptor_free(dd);
}

/* Upstream's snapshot and snapshot-merge of a raw set type every image Plain: any Plain image makes
 * the set raw, and the raw file is its base, wherever it is listed. */
TEST(descriptor_every_image_plain)
{
	struct img im[] = { { guid_n(1), "Plain", "d.raw" }, { guid_n(2), "Plain", "d.raw.{1}" },
			    { PLOOP_TOP_GUID, "Plain", "d.raw.{2}" } };
	struct shot sh[] = { { guid_n(1), PLOOP_NONE_GUID, NULL }, { guid_n(2), guid_n(1), NULL },
			     { PLOOP_TOP_GUID, guid_n(2), NULL } };
	struct ploop_descriptor *dd;
	int idx[4], n = 0;

	CHECK(accepted_free("three Plain images", build_xml(NULL, NULL, im, 3, sh, 3, PLOOP_TOP_GUID), &dd));
	CHECK(dd->raw);
	CHECK(ploop_descriptor_raw_image(dd, 0));
	CHECK(!ploop_descriptor_raw_image(dd, 1));
	CHECK(!ploop_descriptor_raw_image(dd, 2));
	CHECK_OK(ploop_descriptor_chain(dd, NULL, idx, &n, err));
	CHECK_EQ(n, 3);
	CHECK_EQ(idx[0], 0);
	ploop_descriptor_free(dd);
}

TEST(descriptor_plain_base_listed_last)
{
	struct img all_plain[] = { { PLOOP_TOP_GUID, "Plain", "d.raw.{2}" }, { guid_n(2), "Plain", "d.raw.{1}" },
				   { guid_n(1), "Plain", "d.raw" } };
	struct img base_plain[] = { { PLOOP_TOP_GUID, "Compressed", "d.raw.{2}" },
				    { guid_n(2), "Compressed", "d.raw.{1}" }, { guid_n(1), "Plain", "d.raw" } };
	struct shot sh[] = { { PLOOP_TOP_GUID, guid_n(2), NULL }, { guid_n(2), guid_n(1), NULL },
			     { guid_n(1), PLOOP_NONE_GUID, NULL } };
	struct ploop_descriptor *dd;
	int idx[4], n = 0;

	CHECK(accepted_free("all Plain, base last", build_xml(NULL, NULL, all_plain, 3, sh, 3, PLOOP_TOP_GUID), &dd));
	CHECK(dd->raw);
	CHECK(!ploop_descriptor_raw_image(dd, 0));
	CHECK(!ploop_descriptor_raw_image(dd, 1));
	CHECK(ploop_descriptor_raw_image(dd, 2));
	CHECK_OK(ploop_descriptor_chain(dd, NULL, idx, &n, err));
	CHECK_EQ(n, 3);
	CHECK_EQ(idx[0], 2);
	CHECK_EQ(idx[2], 0);
	ploop_descriptor_free(dd);
	CHECK(accepted_free("Plain base last", build_xml(NULL, NULL, base_plain, 3, sh, 3, PLOOP_TOP_GUID), &dd));
	CHECK(dd->raw && ploop_descriptor_raw_image(dd, 2) && !ploop_descriptor_raw_image(dd, 0));
	ploop_descriptor_free(dd);
}

TEST(descriptor_plain_delta_makes_the_base_raw)
{
	/* Only a delta says Plain and the base has no <Type>: the set is raw all the same (upstream),
	 * and the base is the raw file. */
	struct img second[] = { { guid_n(1), NULL, "a" }, { guid_n(2), "Plain", "b" } };
	struct img first[] = { { guid_n(2), "Plain", "b" }, { guid_n(1), NULL, "a" } };
	struct shot sh[] = { { guid_n(1), PLOOP_NONE_GUID, NULL }, { guid_n(2), guid_n(1), NULL } };
	struct ploop_descriptor *dd;

	CHECK(accepted_free("Plain top", build_xml(NULL, NULL, second, 2, sh, 2, guid_n(2)), &dd));
	CHECK(dd->raw && ploop_descriptor_raw_image(dd, 0) && !ploop_descriptor_raw_image(dd, 1));
	ploop_descriptor_free(dd);
	CHECK(accepted_free("Plain top first", build_xml(NULL, NULL, first, 2, sh, 2, guid_n(2)), &dd));
	CHECK(dd->raw && ploop_descriptor_raw_image(dd, 1) && !ploop_descriptor_raw_image(dd, 0));
	ploop_descriptor_free(dd);
}

TEST(descriptor_rejects_plain_delta_over_compressed_base)
{
	/* The base says it is a ploop delta, another image makes the set raw: neither tool writes
	 * that, and reading the delta as a raw disk would serve (and merge into) garbage. */
	struct img second[] = { { guid_n(1), "Compressed", "a" }, { guid_n(2), "Plain", "b" } };
	struct img first[] = { { guid_n(2), "Plain", "b" }, { guid_n(1), "Compressed", "a" } };
	struct shot sh[] = { { guid_n(1), PLOOP_NONE_GUID, NULL }, { guid_n(2), guid_n(1), NULL } };

	CHECK(rejected_free("Plain top", build_xml(NULL, NULL, second, 2, sh, 2, guid_n(2))));
	CHECK(rejected_free("Plain top first", build_xml(NULL, NULL, first, 2, sh, 2, guid_n(2))));
}

TEST(descriptor_rejects_plain_inconsistencies)
{
	struct img im[] = { { guid_n(1), "Plain", "a" } };
	struct shot sh[] = { { guid_n(1), PLOOP_NONE_GUID, NULL } };
	struct img im2[] = { { guid_n(2), "Plain", "b" }, { guid_n(1), NULL, "a" } };
	struct shot sh2[] = { { guid_n(1), PLOOP_NONE_GUID, NULL }, { guid_n(2), guid_n(1), NULL } };

	CHECK(rejected_free("Plain without Blocksize",
			    build_xml(NULL, "      <Start>0</Start>\n", im, 1, sh, 1, guid_n(1))));
	CHECK(rejected_free("Plain and Preallocated",
			    build_xml(NULL, "      <Blocksize>2048</Blocksize><Preallocated>1</Preallocated>\n", im, 1,
				      sh, 1, guid_n(1))));
	CHECK(rejected_free("Plain delta without Blocksize",
			    build_xml(NULL, "      <Start>0</Start>\n", im2, 2, sh2, 2, guid_n(2))));
}

TEST(descriptor_rejects_encryption_without_keyid)
{
	CHECK(rejected_free("Encryption without KeyId",
			    replace(sample_xml, "<Padding>0</Padding>", "<Padding>0</Padding><Encryption/>")));
}

/* ---- chain and lookups --------------------------------------------------------------------------------------- */

TEST(descriptor_chain_order_base_first)
{
	const char *a = guid_n(1), *b = guid_n(2), *c = guid_n(3), *d2 = guid_n(4);
	/* Listed out of order, with a second branch d2 off the base. */
	struct img im[] = { { c, NULL, "c" }, { PLOOP_TOP_GUID, NULL, "top" }, { d2, NULL, "d" }, { a, NULL, "a" },
			    { b, NULL, "b" } };
	struct shot sh[] = { { PLOOP_TOP_GUID, c, NULL }, { b, a, NULL }, { d2, a, NULL }, { c, b, NULL },
			     { a, PLOOP_NONE_GUID, NULL } };
	struct ploop_descriptor *dd;
	int idx[8], n = 0;

	CHECK(accepted_free("scrambled chain", build_xml(NULL, NULL, im, 5, sh, 5, PLOOP_TOP_GUID), &dd));
	CHECK_EQ(ploop_descriptor_find_image(dd, a), 3);
	CHECK_EQ(ploop_descriptor_find_image(dd, PLOOP_TOP_GUID), 1);
	CHECK_EQ(ploop_descriptor_find_image(dd, guid_n(7)), -1);
	CHECK_EQ(ploop_descriptor_find_snapshot(dd, a), 4);
	CHECK_EQ(ploop_descriptor_find_snapshot(dd, PLOOP_TOP_GUID), 0);
	CHECK_EQ(ploop_descriptor_find_snapshot(dd, PLOOP_NONE_GUID), -1);
	CHECK_EQ(ploop_descriptor_find_snapshot(dd, guid_n(7)), -1);

	CHECK_OK(ploop_descriptor_chain(dd, NULL, idx, &n, err));
	CHECK_EQ(n, 4);
	CHECK_EQ(idx[0], 3);	/* a */
	CHECK_EQ(idx[1], 4);	/* b */
	CHECK_EQ(idx[2], 0);	/* c */
	CHECK_EQ(idx[3], 1);	/* top */
	CHECK_OK(ploop_descriptor_chain(dd, b, idx, &n, err));
	CHECK_EQ(n, 2);
	CHECK_EQ(idx[0], 3);
	CHECK_EQ(idx[1], 4);
	CHECK_OK(ploop_descriptor_chain(dd, d2, idx, &n, err));
	CHECK_EQ(n, 2);
	CHECK_EQ(idx[0], 3);
	CHECK_EQ(idx[1], 2);
	CHECK_OK(ploop_descriptor_chain(dd, a, idx, &n, err));
	CHECK_EQ(n, 1);
	CHECK_EQ(idx[0], 3);
	CHECK_FAILS(PLOOP_ERR_NOSNAP, ploop_descriptor_chain(dd, guid_n(7), idx, &n, err));
	ploop_descriptor_free(dd);
}

TEST(descriptor_chain_sample)
{
	struct ploop_descriptor *dd;
	int idx[4], n = 0;

	CHECK_OK(ploop_descriptor_parse(sample_xml, strlen(sample_xml), "DiskDescriptor.xml", &dd, err));
	CHECK_OK(ploop_descriptor_chain(dd, NULL, idx, &n, err));
	CHECK_EQ(n, 2);
	CHECK_EQ(idx[0], 0);
	CHECK_EQ(idx[1], 1);
	CHECK_OK(ploop_descriptor_chain(dd, PLOOP_TOP_GUID, idx, &n, err));
	CHECK_EQ(n, 2);
	CHECK_OK(ploop_descriptor_chain(dd, BASE_GUID, idx, &n, err));
	CHECK_EQ(n, 1);
	CHECK_EQ(idx[0], 0);
	ploop_descriptor_free(dd);
}

/* ---- round trip and refusal to write -------------------------------------------------------------------------- */

TEST(descriptor_round_trip_all_fields)
{
	const char *a = guid_n(1), *b = guid_n(2), *c = guid_n(3), *d2 = guid_n(4);
	struct img im[] = { { a, "Compressed", "root.hds" }, { b, "Compressed", "root.hds.b" },
			    { c, "Compressed", "sub/root.hds.c" }, { d2, "Compressed", "root.hds.d" },
			    { PLOOP_TOP_GUID, "Compressed", "root.hds.top" } };
	struct shot sh[] = { { a, PLOOP_NONE_GUID, NULL },
			     { b, a, "      <Temporary/>\n" },
			     { c, b, "      <TemporaryZero/>\n" },
			     { d2, a, "      <TemporaryZeroSwap/>\n" },
			     { PLOOP_TOP_GUID, c, NULL } };
	char *xml = build_xml("    <Disk_size>1048576</Disk_size>\n    <Cylinders>1040</Cylinders>\n"
			      "    <Heads>16</Heads>\n    <Sectors>63</Sectors>\n    <Padding>7</Padding>\n"
			      "    <Max_delta_size>123456789</Max_delta_size>\n"
			      "    <Encryption><KeyId>key-1 &amp; 2</KeyId></Encryption>\n",
			      "      <Start>5</Start>\n      <End>1048576</End>\n      <Blocksize>256</Blocksize>\n"
			      "      <Preallocated>1</Preallocated>\n",
			      im, 5, sh, 5, PLOOP_TOP_GUID);
	struct ploop_descriptor *one, *two;
	size_t len1 = 0, len2 = 0;
	char *text1, *text2;

	CHECK(accepted_free("rich descriptor", xml, &one));
	CHECK_EQ(one->disk_size, 1048576);
	CHECK_EQ(one->padding, 7);
	CHECK_EQ(one->start, 5);
	CHECK_EQ(one->blocksize, 256);
	CHECK(one->preallocated);
	CHECK_EQ(one->max_delta_size, 123456789);
	CHECK(one->encryption_keyid && !strcmp(one->encryption_keyid, "key-1 & 2"));
	CHECK_EQ(one->snapshots[1].temporary, PLOOP_TEMP);
	CHECK_EQ(one->snapshots[2].temporary, PLOOP_TEMP_ZERO);
	CHECK_EQ(one->snapshots[3].temporary, PLOOP_TEMP_ZERO_SWAP);
	CHECK_OK(ploop_descriptor_write(one, "DiskDescriptor.xml", err));
	CHECK_OK(ploop_descriptor_read("DiskDescriptor.xml", &two, err));
	CHECK(same_descriptor(one, two));
	/* Writing what was read gives the same text again. */
	text1 = read_file("DiskDescriptor.xml", &len1);
	CHECK(text1);
	CHECK_OK(ploop_descriptor_write(two, "DiskDescriptor.xml", err));
	text2 = read_file("DiskDescriptor.xml", &len2);
	CHECK(text2);
	CHECK_EQ(len1, len2);
	CHECK(!memcmp(text1, text2, len1));
	free(text1);
	free(text2);
	ploop_descriptor_free(one);
	ploop_descriptor_free(two);
}

TEST(descriptor_round_trip_raw)
{
	/* As we write it, and as upstream does: every image Plain, here with the base listed last. */
	struct img ours[] = { { guid_n(1), "Plain", "root.raw" }, { PLOOP_TOP_GUID, "Compressed", "root.hds.top" } };
	struct img upstream[] = { { PLOOP_TOP_GUID, "Plain", "root.hds.top" }, { guid_n(1), "Plain", "root.raw" } };
	const struct img *in[] = { ours, upstream };
	struct shot sh[] = { { guid_n(1), PLOOP_NONE_GUID, NULL }, { PLOOP_TOP_GUID, guid_n(1), NULL } };

	for (int i = 0; i < 2; i++) {
		struct ploop_descriptor *one, *two;
		size_t len = 0;
		char *text;

		CHECK(accepted_free("raw set", build_xml(NULL, NULL, in[i], 2, sh, 2, PLOOP_TOP_GUID), &one));
		CHECK(one->raw);
		CHECK_OK(ploop_descriptor_write(one, "DiskDescriptor.xml", err));
		CHECK_OK(ploop_descriptor_read("DiskDescriptor.xml", &two, err));
		CHECK(same_descriptor(one, two));
		text = read_file("DiskDescriptor.xml", &len);
		CHECK(text);
		text[len] = '\0';
		/* Only the base is Plain. */
		CHECK(strstr(text, "<Type>Plain</Type>\n        <File>root.raw</File>"));
		CHECK(strstr(text, "<Type>Compressed</Type>\n        <File>root.hds.top</File>"));
		free(text);
		ploop_descriptor_free(one);
		ploop_descriptor_free(two);
	}
}

/* Writes @dd to DiskDescriptor.xml (which holds the sample) expecting a refusal that leaves it alone. */
static bool write_refused(const struct ploop_descriptor *dd, const char *what)
{
	struct ploop_error e = { 0 };
	int r = ploop_descriptor_write(dd, "DiskDescriptor.xml", &e);

	if (r != PLOOP_ERR_DESCRIPTOR || !e.msg[0] || strchr(e.msg, '\n')) {
		fprintf(stderr, "  %s: write returned %d (%s)\n", what, r, e.msg);
		return false;
	}
	if (exists("DiskDescriptor.xml.tmp")) {
		fprintf(stderr, "  %s: left DiskDescriptor.xml.tmp behind\n", what);
		return false;
	}
	return file_is("DiskDescriptor.xml", sample_xml);
}

TEST(descriptor_write_refuses_inconsistent)
{
	struct ploop_descriptor *dd;
	char saved[PLOOP_GUID_BUF];

	CHECK(!write_file("DiskDescriptor.xml", sample_xml, strlen(sample_xml)));
	CHECK_OK(ploop_descriptor_read("DiskDescriptor.xml", &dd, err));

	/* A snapshot whose parent does not exist. */
	strcpy(saved, dd->snapshots[1].parent);
	strcpy(dd->snapshots[1].parent, "{11111111-2222-4333-8444-555555555555}");
	CHECK(write_refused(dd, "unknown parent"));
	strcpy(dd->snapshots[1].parent, saved);

	/* A top that is not a snapshot. */
	strcpy(dd->top_guid, "{11111111-2222-4333-8444-555555555555}");
	CHECK(write_refused(dd, "unknown top"));
	strcpy(dd->top_guid, PLOOP_TOP_GUID);

	/* A temporary top. */
	dd->snapshots[1].temporary = PLOOP_TEMP;
	CHECK(write_refused(dd, "temporary top"));
	dd->snapshots[1].temporary = PLOOP_TEMP_NONE;

	/* A cycle. */
	strcpy(dd->snapshots[0].parent, PLOOP_TOP_GUID);
	CHECK(write_refused(dd, "cycle"));
	strcpy(dd->snapshots[0].parent, PLOOP_NONE_GUID);

	/* Two images on one file, and a file outside the directory. */
	free(dd->images[1].file);
	dd->images[1].file = strdup("root.hds");
	CHECK(write_refused(dd, "shared file"));
	free(dd->images[1].file);
	dd->images[1].file = strdup("../escape.hds");
	CHECK(write_refused(dd, "file outside"));
	/* A name the reader would trim into another one. */
	free(dd->images[1].file);
	dd->images[1].file = strdup(" " TOP_FILE);
	CHECK(write_refused(dd, "leading blank"));
	free(dd->images[1].file);
	dd->images[1].file = strdup(TOP_FILE);

	/* An invalid Blocksize. */
	dd->blocksize = 1000;
	CHECK(write_refused(dd, "blocksize"));
	dd->blocksize = 2048;

	/* Repaired, it writes again. */
	CHECK_OK(ploop_descriptor_write(dd, "DiskDescriptor.xml", err));
	CHECK(file_is("DiskDescriptor.xml", sample_xml));
	ploop_descriptor_free(dd);
}

TEST(descriptor_write_refuses_without_creating)
{
	struct ploop_descriptor *dd;

	CHECK_OK(ploop_descriptor_parse(sample_xml, strlen(sample_xml), "DiskDescriptor.xml", &dd, err));
	strcpy(dd->snapshots[0].parent, dd->snapshots[0].guid);
	CHECK_FAILS(PLOOP_ERR_DESCRIPTOR, ploop_descriptor_write(dd, "new.xml", err));
	CHECK(!exists("new.xml"));
	CHECK(!exists("new.xml.tmp"));
	ploop_descriptor_free(dd);
}
