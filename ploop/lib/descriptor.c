/* DiskDescriptor.xml: parsing with every rule checked before anything is trusted (GUIDs, the
 * snapshot tree, file names confined to the image directory), and atomic replacement on write. */
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "internal.h"
#include "xml.h"

#define MAX_DESCRIPTOR_BYTES (1u << 20)

/* libxml2, set by the entry points below before any other function here runs. */
static const struct xml_api *X;

void ploop_descriptor_free(struct ploop_descriptor *dd)
{
	if (!dd)
		return;
	for (int i = 0; i < dd->n_images; i++) {
		free(dd->images[i].file);
		free(dd->images[i].path);
	}
	free(dd->images);
	free(dd->snapshots);
	free(dd->encryption_keyid);
	free(dd->path);
	free(dd->dir);
	free(dd);
}

int ploop_descriptor_find_image(const struct ploop_descriptor *dd, const char *guid)
{
	for (int i = 0; i < dd->n_images; i++)
		if (!strcmp(dd->images[i].guid, guid))
			return i;
	return -1;
}

int ploop_descriptor_find_snapshot(const struct ploop_descriptor *dd, const char *guid)
{
	for (int i = 0; i < dd->n_snapshots; i++)
		if (!strcmp(dd->snapshots[i].guid, guid))
			return i;
	return -1;
}

/* Number of snapshots whose parent is @guid; the first one's index in *first_child. */
int ploop_descriptor_children(const struct ploop_descriptor *dd, const char *guid, int *first_child)
{
	int n = 0;

	for (int i = 0; i < dd->n_snapshots; i++) {
		if (strcmp(dd->snapshots[i].parent, guid))
			continue;
		if (!n && first_child)
			*first_child = i;
		n++;
	}
	return n;
}

bool ploop_descriptor_raw_image(const struct ploop_descriptor *dd, int im)
{
	int s = dd->raw && im >= 0 && im < dd->n_images ? ploop_descriptor_find_snapshot(dd, dd->images[im].guid) : -1;

	return s >= 0 && !strcmp(dd->snapshots[s].parent, PLOOP_NONE_GUID);
}

int ploop_descriptor_chain(const struct ploop_descriptor *dd, const char *guid, int idx[], int *n,
			   struct ploop_error *err)
{
	int rev[PLOOP_MAX_CHAIN], depth = 0;
	const char *g = guid ? guid : dd->top_guid;

	while (strcmp(g, PLOOP_NONE_GUID)) {
		int s = ploop_descriptor_find_snapshot(dd, g), im = ploop_descriptor_find_image(dd, g);

		if (s < 0 || im < 0)
			return ploop_fail(err, PLOOP_ERR_NOSNAP, 0, "%s: no snapshot %s", dd->path, g);
		if (depth == PLOOP_MAX_CHAIN)
			return ploop_fail(err, PLOOP_ERR_DESCRIPTOR, 0, "%s: chain of %s is longer than %d images",
					  dd->path, guid ? guid : dd->top_guid, PLOOP_MAX_CHAIN);
		rev[depth++] = im;
		g = dd->snapshots[s].parent;
	}
	if (!depth)	/* the null GUID names the parent of the base, not a snapshot */
		return ploop_fail(err, PLOOP_ERR_NOSNAP, 0, "%s: no snapshot %s", dd->path, g);
	for (int i = 0; i < depth; i++)
		idx[i] = rev[depth - 1 - i];
	*n = depth;
	return 0;
}

int ploop_descriptor_open_chain(const struct ploop_descriptor *dd, const char *guid, unsigned flags,
				struct ploop_chain **out, struct ploop_error *err)
{
	int idx[PLOOP_MAX_CHAIN], n;
	const char *paths[PLOOP_MAX_CHAIN];
	struct ploop_chain *c;

	if (ploop_descriptor_chain(dd, guid, idx, &n, err))
		return err->status;
	for (int i = 0; i < n; i++)
		paths[i] = dd->images[idx[i]].path;
	if (ploop_chain_open_files(paths, n, dd->raw, dd->blocksize, flags, &c, err))
		return err->status;
	if (dd->blocksize && ploop_chain_cluster_bytes(c) != (uint64_t)dd->blocksize * PLOOP_SECTOR_SIZE) {
		uint32_t cs = ploop_chain_cluster_bytes(c) / PLOOP_SECTOR_SIZE;

		ploop_chain_close(c, NULL);
		return ploop_fail(err, PLOOP_ERR_DESCRIPTOR, 0,
				  "%s: Blocksize %" PRIu32 " does not match the images' cluster size of %" PRIu32
				  " sectors",
				  dd->path, dd->blocksize, cs);
	}
	*out = c;
	return 0;
}

/* ---- parsing ---------------------------------------------------------------------------------------- */

struct parse_ctx {
	struct ploop_descriptor *dd;
	struct ploop_error *err;
	const char *name;
	bool plain;		/* an image is <Type>Plain</Type> */
	bool compressed[4 * PLOOP_MAX_CHAIN];	/* by image: <Type>Compressed</Type> */
};

static xmlNode *child(xmlNode *parent, const char *name)
{
	for (xmlNode *n = parent ? parent->children : NULL; n; n = n->next)
		if (n->type == XML_ELEMENT_NODE && !strcmp((const char *)n->name, name))
			return n;
	return NULL;
}

static int count_children(xmlNode *parent, const char *name)
{
	int k = 0;

	for (xmlNode *n = parent ? parent->children : NULL; n; n = n->next)
		k += n->type == XML_ELEMENT_NODE && !strcmp((const char *)n->name, name);
	return k;
}

/* Text of element @name under @parent, with surrounding blanks removed (NULL if absent). */
static char *child_text(xmlNode *parent, const char *name)
{
	xmlNode *n = child(parent, name);
	xmlChar *t;
	char *s, *b, *e;

	if (!n)
		return NULL;
	t = X->NodeGetContent(n);
	if (!t)
		return strdup("");
	for (b = (char *)t; *b == ' ' || *b == '\t' || *b == '\n' || *b == '\r'; b++)
		;
	e = b + strlen(b);
	while (e > b && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r'))
		e--;
	s = strndup(b, (size_t)(e - b));
	X->Free(t);
	return s;
}

/* Numeric element (strtoul base 0, as upstream); absent leaves *v untouched. */
static int get_number(struct parse_ctx *c, xmlNode *parent, const char *name, uint64_t max, uint64_t *v)
{
	cleanup_free char *s = child_text(parent, name);
	unsigned long long n;
	char *end;

	if (!s)
		return 0;
	errno = 0;
	n = strtoull(s, &end, 0);
	if (!*s || *end || errno || s[0] == '-' || n > max)
		return ploop_fail(c->err, PLOOP_ERR_DESCRIPTOR, 0, "%s: <%s> is not a valid number: '%.40s'", c->name,
				  name, s);
	*v = n;
	return 0;
}

static int get_guid(struct parse_ctx *c, xmlNode *parent, const char *name, char out[PLOOP_GUID_BUF])
{
	cleanup_free char *s = child_text(parent, name);

	if (!s)
		return ploop_fail(c->err, PLOOP_ERR_DESCRIPTOR, 0, "%s: <%s> is missing in <%s>", c->name, name,
				  (const char *)parent->name);
	if (strlen(s) != PLOOP_GUID_LEN || ploop_parse_guid(s, out))
		return ploop_fail(c->err, PLOOP_ERR_DESCRIPTOR, 0, "%s: <%s> '%.60s' is not a GUID", c->name, name, s);
	return 0;
}

/* A <File> stays inside the descriptor's directory: relative, no "..", no control characters. */
static int check_file_name(struct parse_ctx *c, const char *f)
{
	const char *p = f;

	if (!*f)
		return ploop_fail(c->err, PLOOP_ERR_DESCRIPTOR, 0, "%s: empty <File>", c->name);
	if (f[0] == '/')
		return ploop_fail(c->err, PLOOP_ERR_DESCRIPTOR, 0,
				  "%s: <File> '%.200s' is an absolute path; image files must be inside the "
				  "descriptor's directory",
				  c->name, f);
	for (const char *s = f; *s; s++)
		if ((unsigned char)*s < 0x20)
			return ploop_fail(c->err, PLOOP_ERR_DESCRIPTOR, 0, "%s: <File> holds a control character",
					  c->name);
	while (*p) {
		size_t n = strcspn(p, "/");

		if ((n == 2 && !strncmp(p, "..", 2)))
			return ploop_fail(c->err, PLOOP_ERR_DESCRIPTOR, 0,
					  "%s: <File> '%.200s' leaves the descriptor's directory", c->name, f);
		p += n;
		while (*p == '/')
			p++;
	}
	if (strlen(f) >= PATH_MAX)
		return ploop_fail(c->err, PLOOP_ERR_DESCRIPTOR, 0, "%s: <File> is too long", c->name);
	return 0;
}

/* Length of the UTF-8 sequence at @s if it encodes a character XML 1.0 allows at or above 0x20
 * (no surrogates, no U+FFFE/U+FFFF, nothing past U+10FFFF, no overlong form), else 0. */
static size_t xml_char_len(const unsigned char *s)
{
	uint32_t c;
	size_t n;

	if (*s < 0x20)
		return 0;
	if (*s < 0x80)
		return 1;
	if (*s >= 0xc2 && *s <= 0xdf)
		n = 2, c = *s & 0x1f;
	else if (*s >= 0xe0 && *s <= 0xef)
		n = 3, c = *s & 0x0f;
	else if (*s >= 0xf0 && *s <= 0xf4)
		n = 4, c = *s & 0x07;
	else
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		c = c << 6 | (s[i] & 0x3f);
	}
	if ((n == 3 && c < 0x800) || (n == 4 && (c < 0x10000 || c > 0x10ffff)) || (c >= 0xd800 && c <= 0xdfff) ||
	    c == 0xfffe || c == 0xffff)
		return 0;
	return n;
}

/*
 * The file name of a new set's image (init, import, restore-descriptor) as DiskDescriptor.xml will
 * name it: refused (bad arguments) unless reading the descriptor back gives the same name, which
 * trims blanks and refuses control characters, and XML holds only UTF-8 text.
 */
int ploop_check_new_file_name(const char *name, struct ploop_error *err)
{
	size_t len = strlen(name);

	if (!len || !strcmp(name, PLOOP_DESCRIPTOR_NAME))
		return ploop_fail(err, PLOOP_ERR_PARAM, 0, "'%s': not a valid image file name", name);
	for (const unsigned char *c = (const unsigned char *)name; *c; c++)
		if (*c < 0x20 || *c == 0x7f)
			return ploop_fail(err, PLOOP_ERR_PARAM, 0,
					  "'%s': an image file name cannot hold control characters", name);
	for (size_t i = 0, n; i < len; i += n)
		if (!(n = xml_char_len((const unsigned char *)name + i)))
			return ploop_fail(err, PLOOP_ERR_PARAM, 0,
					  "the image file name is not UTF-8 text, which DiskDescriptor.xml (XML) "
					  "cannot hold");
	if (name[0] == ' ' || name[len - 1] == ' ')
		return ploop_fail(err, PLOOP_ERR_PARAM, 0,
				  "'%s': an image file name cannot begin or end with a blank (DiskDescriptor.xml "
				  "would not keep it)",
				  name);
	if (len >= PATH_MAX)
		return ploop_fail(err, PLOOP_ERR_PARAM, 0, "an image file name is too long");
	return 0;
}

/* Equality of two relative names after dropping "." components and repeated slashes. */
static bool same_file_name(const char *a, const char *b)
{
	for (;;) {
		for (;;) {
			while (*a == '/')
				a++;
			while (*b == '/')
				b++;
			if (a[0] == '.' && (a[1] == '/' || !a[1]))
				a++;
			else if (b[0] == '.' && (b[1] == '/' || !b[1]))
				b++;
			else
				break;
		}
		if (!*a || !*b)
			return !*a && !*b;
		if (*a != *b)
			return false;
		while (*a && *a != '/' && *a == *b) {
			a++;
			b++;
		}
		if ((*a && *a != '/') || (*b && *b != '/'))
			return false;
	}
}

static int parse_images(struct parse_ctx *c, xmlNode *storage)
{
	struct ploop_descriptor *dd = c->dd;
	int n = count_children(storage, "Image");

	if (!n)
		return ploop_fail(c->err, PLOOP_ERR_DESCRIPTOR, 0, "%s: no <Image> in <Storage>", c->name);
	if (n > 4 * PLOOP_MAX_CHAIN)
		return ploop_fail(c->err, PLOOP_ERR_DESCRIPTOR, 0, "%s: too many images (%d)", c->name, n);
	dd->images = calloc((size_t)n, sizeof(*dd->images));
	if (!dd->images)
		return ploop_fail(c->err, PLOOP_ERR_MALLOC, ENOMEM, "%s", c->name);
	for (xmlNode *x = storage->children; x; x = x->next) {
		struct ploop_image_entry *im;
		cleanup_free char *type = NULL;

		if (x->type != XML_ELEMENT_NODE || strcmp((const char *)x->name, "Image"))
			continue;
		im = &dd->images[dd->n_images++];
		if (get_guid(c, x, "GUID", im->guid))
			return c->err->status;
		if (ploop_descriptor_find_image(dd, im->guid) != dd->n_images - 1)
			return ploop_fail(c->err, PLOOP_ERR_DESCRIPTOR, 0, "%s: image %s is listed twice", c->name,
					  im->guid);
		type = child_text(x, "Type");
		/* Upstream types every image of a raw set Plain (snapshot, snapshot-merge), and any
		 * Plain image makes the set raw: the raw file is the base, the others are deltas. */
		if (type && !strcmp(type, "Plain"))
			c->plain = true;
		else if (type && !strcmp(type, "Compressed"))
			c->compressed[dd->n_images - 1] = true;
		else if (type)
			return ploop_fail(c->err, PLOOP_ERR_DESCRIPTOR, 0, "%s: image %s has unknown <Type> '%.40s'",
					  c->name, im->guid, type);
		im->file = child_text(x, "File");
		if (!im->file)
			return ploop_fail(c->err, PLOOP_ERR_DESCRIPTOR, 0, "%s: image %s has no <File>", c->name,
					  im->guid);
		if (check_file_name(c, im->file))
			return c->err->status;
		for (int j = 0; j < dd->n_images - 1; j++)
			if (same_file_name(dd->images[j].file, im->file))
				return ploop_fail(c->err, PLOOP_ERR_DESCRIPTOR, 0,
						  "%s: file '%.200s' is used by two images", c->name, im->file);
		im->path = ploop_join(dd->dir, im->file);
		if (!im->path)
			return ploop_fail(c->err, PLOOP_ERR_MALLOC, ENOMEM, "%s", c->name);
	}
	dd->raw = c->plain;
	return 0;
}

static int parse_snapshots(struct parse_ctx *c, xmlNode *snaps)
{
	struct ploop_descriptor *dd = c->dd;
	int n = count_children(snaps, "Shot");
	cleanup_free char *top = child_text(snaps, "TopGUID");

	dd->snapshots = calloc((size_t)(n ? n : 1), sizeof(*dd->snapshots));
	if (!dd->snapshots)
		return ploop_fail(c->err, PLOOP_ERR_MALLOC, ENOMEM, "%s", c->name);
	for (xmlNode *x = snaps->children; x; x = x->next) {
		struct ploop_snapshot_entry *s;

		if (x->type != XML_ELEMENT_NODE || strcmp((const char *)x->name, "Shot"))
			continue;
		s = &dd->snapshots[dd->n_snapshots++];
		if (get_guid(c, x, "GUID", s->guid) || get_guid(c, x, "ParentGUID", s->parent))
			return c->err->status;
		if (ploop_descriptor_find_snapshot(dd, s->guid) != dd->n_snapshots - 1)
			return ploop_fail(c->err, PLOOP_ERR_DESCRIPTOR, 0, "%s: snapshot %s is listed twice", c->name,
					  s->guid);
		if (!strcmp(s->guid, PLOOP_NONE_GUID) || !strcmp(s->guid, s->parent))
			return ploop_fail(c->err, PLOOP_ERR_DESCRIPTOR, 0, "%s: snapshot %s has an invalid GUID/parent",
					  c->name, s->guid);
		if (child(x, "TemporaryZeroSwap"))
			s->temporary = PLOOP_TEMP_ZERO_SWAP;
		else if (child(x, "TemporaryZero"))
			s->temporary = PLOOP_TEMP_ZERO;
		else if (child(x, "Temporary"))
			s->temporary = PLOOP_TEMP;
	}
	/* Old single-image descriptors may lack a <Shot>: the image is the base and the top. */
	if (!dd->n_snapshots && dd->n_images == 1) {
		strcpy(dd->snapshots[0].guid, dd->images[0].guid);
		strcpy(dd->snapshots[0].parent, PLOOP_NONE_GUID);
		dd->n_snapshots = 1;
	}
	if (top) {
		if (strlen(top) != PLOOP_GUID_LEN || ploop_parse_guid(top, dd->top_guid))
			return ploop_fail(c->err, PLOOP_ERR_DESCRIPTOR, 0, "%s: <TopGUID> '%.60s' is not a GUID", c->name,
					  top);
	} else if (ploop_descriptor_find_snapshot(dd, PLOOP_TOP_GUID) >= 0) {
		strcpy(dd->top_guid, PLOOP_TOP_GUID);
	} else if (dd->n_snapshots == 1) {
		strcpy(dd->top_guid, dd->snapshots[0].guid);
	} else {
		return ploop_fail(c->err, PLOOP_ERR_DESCRIPTOR, 0, "%s: no <TopGUID>", c->name);
	}
	return 0;
}

/* The snapshots form a forest rooted at NONE that matches the images one to one. */
static int check_tree(struct parse_ctx *c)
{
	struct ploop_descriptor *dd = c->dd;
	int top;

	if (dd->n_images != dd->n_snapshots)
		return ploop_fail(c->err, PLOOP_ERR_DESCRIPTOR, 0, "%s: %d images but %d snapshots", c->name,
				  dd->n_images, dd->n_snapshots);
	for (int i = 0; i < dd->n_snapshots; i++) {
		const struct ploop_snapshot_entry *s = &dd->snapshots[i];
		const char *g = s->guid;
		int steps = 0;

		if (ploop_descriptor_find_image(dd, s->guid) < 0)
			return ploop_fail(c->err, PLOOP_ERR_DESCRIPTOR, 0, "%s: snapshot %s has no <Image>", c->name,
					  s->guid);
		while (strcmp(g, PLOOP_NONE_GUID)) {
			int k = ploop_descriptor_find_snapshot(dd, g);

			if (k < 0)
				return ploop_fail(c->err, PLOOP_ERR_DESCRIPTOR, 0,
						  "%s: snapshot %s has unknown parent %s", c->name, s->guid, g);
			if (++steps > dd->n_snapshots)
				return ploop_fail(c->err, PLOOP_ERR_DESCRIPTOR, 0,
						  "%s: ParentGUID links of %s form a cycle", c->name, s->guid);
			g = dd->snapshots[k].parent;
		}
		if (steps > PLOOP_MAX_CHAIN)
			return ploop_fail(c->err, PLOOP_ERR_DESCRIPTOR, 0, "%s: chain of %s is longer than %d images",
					  c->name, s->guid, PLOOP_MAX_CHAIN);
	}
	top = ploop_descriptor_find_snapshot(dd, dd->top_guid);
	if (top < 0)
		return ploop_fail(c->err, PLOOP_ERR_DESCRIPTOR, 0, "%s: <TopGUID> %s is not a snapshot", c->name,
				  dd->top_guid);
	if (dd->snapshots[top].temporary)
		return ploop_fail(c->err, PLOOP_ERR_DESCRIPTOR, 0, "%s: the top snapshot %s is marked temporary",
				  c->name, dd->top_guid);
	if (ploop_descriptor_children(dd, dd->top_guid, NULL))
		return ploop_fail(c->err, PLOOP_ERR_DESCRIPTOR, 0, "%s: the top image %s has child snapshots", c->name,
				  dd->top_guid);
	if (dd->raw) {
		/* Neither tool writes that (upstream types every image alike, we type the base Plain):
		 * a ploop delta read as a raw disk would be served as garbage and merged into. */
		for (int i = 0; i < dd->n_images; i++)
			if (c->compressed[i] && ploop_descriptor_raw_image(dd, i))
				return ploop_fail(c->err, PLOOP_ERR_DESCRIPTOR, 0,
						  "%s: a Plain image makes the set raw, but its base %s is Compressed",
						  c->name, dd->images[i].guid);
		if (dd->preallocated)
			return ploop_fail(c->err, PLOOP_ERR_DESCRIPTOR, 0, "%s: a Plain image cannot be Preallocated",
					  c->name);
		if (!dd->blocksize)
			return ploop_fail(c->err, PLOOP_ERR_DESCRIPTOR, 0, "%s: a Plain image needs <Blocksize>", c->name);
	}
	{
		int bases = 0;

		for (int i = 0; i < dd->n_snapshots; i++)
			bases += !strcmp(dd->snapshots[i].parent, PLOOP_NONE_GUID);
		if (bases != 1)
			return ploop_fail(c->err, PLOOP_ERR_DESCRIPTOR, 0, "%s: %d base images (must be exactly one)",
					  c->name, bases);
	}
	return 0;
}

static int parse_doc(struct parse_ctx *c, xmlNode *root)
{
	struct ploop_descriptor *dd = c->dd;
	xmlNode *params = child(root, "Disk_Parameters"), *sd = child(root, "StorageData"), *storage,
		*snaps = child(root, "Snapshots"), *enc;
	uint64_t v;

	if (!params || !sd || !snaps)
		return ploop_fail(c->err, PLOOP_ERR_DESCRIPTOR, 0,
				  "%s: <Disk_Parameters>, <StorageData> and <Snapshots> are required", c->name);
	if (count_children(sd, "Storage") != 1)
		return ploop_fail(c->err, PLOOP_ERR_DESCRIPTOR, 0, "%s: exactly one <Storage> is supported", c->name);
	storage = child(sd, "Storage");
	if (get_number(c, params, "Disk_size", UINT64_MAX / 1024, &dd->disk_size) ||
	    get_number(c, params, "Padding", UINT64_MAX, &dd->padding) ||
	    get_number(c, params, "Max_delta_size", UINT64_MAX, &dd->max_delta_size))
		return c->err->status;
	v = 0;
	if (get_number(c, params, "Cylinders", UINT32_MAX, &v))
		return c->err->status;
	dd->cylinders = (uint32_t)v;
	v = 0;
	if (get_number(c, params, "Heads", UINT32_MAX, &v))
		return c->err->status;
	dd->heads = (uint32_t)v;
	v = 0;
	if (get_number(c, params, "Sectors", UINT32_MAX, &v))
		return c->err->status;
	dd->sectors = (uint32_t)v;
	enc = child(params, "Encryption");
	if (enc && !(dd->encryption_keyid = child_text(enc, "KeyId")))
		return ploop_fail(c->err, PLOOP_ERR_DESCRIPTOR, 0, "%s: <Encryption> without <KeyId>", c->name);
	if (get_number(c, storage, "Start", UINT64_MAX, &dd->start) ||
	    get_number(c, storage, "End", UINT64_MAX, &dd->end))
		return c->err->status;
	v = 0;
	if (get_number(c, storage, "Blocksize", UINT32_MAX, &v))
		return c->err->status;
	dd->blocksize = (uint32_t)v;
	if (child(storage, "Blocksize") && !ploop_cluster_size_valid(dd->blocksize))
		return ploop_fail(c->err, PLOOP_ERR_DESCRIPTOR, 0, "%s: <Blocksize> %" PRIu32 " is not valid", c->name,
				  dd->blocksize);
	v = 0;
	if (get_number(c, storage, "Preallocated", 1, &v))
		return c->err->status;
	dd->preallocated = v;
	if (parse_images(c, storage) || parse_snapshots(c, snaps) || check_tree(c))
		return c->err->status;
	return 0;
}

static void silent_xml_error(void *ctx, const char *msg, ...)
{
	(void)ctx;
	(void)msg;
}

int ploop_descriptor_parse(const char *xml, size_t len, const char *path, struct ploop_descriptor **out,
			   struct ploop_error *err)
{
	struct ploop_descriptor *dd = calloc(1, sizeof(*dd));
	struct parse_ctx c = { .dd = dd, .err = err, .name = path };
	char *dir;
	xmlDoc *doc;
	xmlNode *root;

	*out = NULL;
	if (!dd)
		return ploop_fail(err, PLOOP_ERR_MALLOC, ENOMEM, "%s", path);
	X = ploop_xml(err);
	if (!X) {
		free(dd);
		return err->status;
	}
	dd->path = strdup(path);
	dir = ploop_dir_of(path);
	dd->dir = dir ? realpath(dir, NULL) : NULL;
	if (!dd->dir && dir)
		dd->dir = strdup(dir);
	free(dir);
	if (!dd->path || !dd->dir) {
		ploop_descriptor_free(dd);
		return ploop_fail(err, PLOOP_ERR_MALLOC, ENOMEM, "%s", path);
	}
	if (len > MAX_DESCRIPTOR_BYTES || len > INT_MAX) {
		ploop_descriptor_free(dd);
		return ploop_fail(err, PLOOP_ERR_DESCRIPTOR, 0, "%s: larger than %u bytes", path, MAX_DESCRIPTOR_BYTES);
	}
	X->SetGenericErrorFunc(NULL, silent_xml_error);
	doc = X->ReadMemory(xml, (int)len, path, NULL, XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
	if (!doc) {
		const xmlError *e = X->GetLastError();
		const char *m = e && e->message ? e->message : "parse error";
		size_t ml = strcspn(m, "\n");	/* libxml2's messages end with a newline */

		ploop_fail(err, PLOOP_ERR_DESCRIPTOR, 0, "%s: not well-formed XML (line %d): %.*s", path,
			   e ? e->line : 0, (int)(ml < 200 ? ml : 200), m);
		ploop_descriptor_free(dd);
		return err->status;
	}
	root = X->DocGetRootElement(doc);
	if (!root || parse_doc(&c, root)) {
		if (!root)
			ploop_fail(err, PLOOP_ERR_DESCRIPTOR, 0, "%s: empty document", path);
		X->FreeDoc(doc);
		ploop_descriptor_free(dd);
		return err->status;
	}
	X->FreeDoc(doc);
	*out = dd;
	return 0;
}

int ploop_descriptor_read(const char *path, struct ploop_descriptor **out, struct ploop_error *err)
{
	cleanup_free char *buf = NULL;
	struct stat st;
	ssize_t n;
	int fd = open_regular_file(path, O_RDONLY, 0, false);

	*out = NULL;
	if (fd == -OPEN_ENOTREG)
		return ploop_fail(err, PLOOP_ERR_DESCRIPTOR, 0, "%s: not a regular file", path);
	if (fd < 0)
		return ploop_fail(err, fd == -ENOENT ? PLOOP_ERR_DESCRIPTOR : PLOOP_ERR_OPEN, -fd,
				  "%s: cannot open", path);
	if (fstat(fd, &st)) {
		close(fd);
		return ploop_fail(err, PLOOP_ERR_FSTAT, errno, "%s: cannot stat", path);
	}
	if ((uint64_t)st.st_size > MAX_DESCRIPTOR_BYTES) {
		close(fd);
		return ploop_fail(err, PLOOP_ERR_DESCRIPTOR, 0, "%s: larger than %u bytes", path, MAX_DESCRIPTOR_BYTES);
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		close(fd);
		return ploop_fail(err, PLOOP_ERR_MALLOC, ENOMEM, "%s", path);
	}
	n = read(fd, buf, (size_t)st.st_size + 1);
	close(fd);
	if (n < 0)
		return ploop_fail(err, PLOOP_ERR_READ, errno, "%s: cannot read", path);
	return ploop_descriptor_parse(buf, (size_t)n, path, out, err);
}

/* ---- writing ------------------------------------------------------------------------------------------ */

static void add_text(xmlNode *parent, const char *name, const char *text)
{
	X->NewTextChild(parent, NULL, BAD_CAST name, BAD_CAST text);
}

static void add_number(xmlNode *parent, const char *name, uint64_t v)
{
	char buf[32];

	snprintf(buf, sizeof(buf), "%" PRIu64, v);
	add_text(parent, name, buf);
}

/* The document as upstream's xmlDocFormatDump writes it. */
static xmlDoc *build_doc(const struct ploop_descriptor *dd)
{
	xmlDoc *doc = X->NewDoc(BAD_CAST "1.0");
	xmlNode *root = X->NewNode(NULL, BAD_CAST "Parallels_disk_image"), *params, *storage, *snaps;

	X->DocSetRootElement(doc, root);
	params = X->NewChild(root, NULL, BAD_CAST "Disk_Parameters", NULL);
	add_number(params, "Disk_size", dd->disk_size);
	add_number(params, "Cylinders", dd->cylinders);
	add_number(params, "Heads", dd->heads);
	add_number(params, "Sectors", dd->sectors);
	add_number(params, "Padding", dd->padding);
	if (dd->max_delta_size)
		add_number(params, "Max_delta_size", dd->max_delta_size);
	if (dd->encryption_keyid)
		add_text(X->NewChild(params, NULL, BAD_CAST "Encryption", NULL), "KeyId", dd->encryption_keyid);
	storage = X->NewChild(X->NewChild(root, NULL, BAD_CAST "StorageData", NULL), NULL, BAD_CAST "Storage", NULL);
	add_number(storage, "Start", dd->start);
	add_number(storage, "End", dd->end);
	if (dd->blocksize)
		add_number(storage, "Blocksize", dd->blocksize);
	if (dd->preallocated)
		add_number(storage, "Preallocated", 1);
	for (int i = 0; i < dd->n_images; i++) {
		xmlNode *im = X->NewChild(storage, NULL, BAD_CAST "Image", NULL);

		/* Only the raw file is Plain: upstream reads the set as raw all the same, and the
		 * deltas' entries say what they are. */
		add_text(im, "GUID", dd->images[i].guid);
		add_text(im, "Type", ploop_descriptor_raw_image(dd, i) ? "Plain" : "Compressed");
		add_text(im, "File", dd->images[i].file);
	}
	snaps = X->NewChild(root, NULL, BAD_CAST "Snapshots", NULL);
	add_text(snaps, "TopGUID", dd->top_guid);
	for (int i = 0; i < dd->n_snapshots; i++) {
		static const char *const temp_name[] = { NULL, "Temporary", "TemporaryZero", "TemporaryZeroSwap" };
		xmlNode *shot = X->NewChild(snaps, NULL, BAD_CAST "Shot", NULL);

		add_text(shot, "GUID", dd->snapshots[i].guid);
		add_text(shot, "ParentGUID", dd->snapshots[i].parent);
		if (dd->snapshots[i].temporary)
			X->NewChild(shot, NULL, BAD_CAST temp_name[dd->snapshots[i].temporary], NULL);
	}
	return doc;
}

/* The first half of an atomic replace: @path.tmp written and durable. Nothing that names @path
 * changes; running out of space is PLOOP_ERR_FALLOCATE (as everywhere), and leaves no .tmp. */
static int write_tmp(const struct ploop_descriptor *dd, const char *path, struct ploop_error *err)
{
	xmlDoc *doc;
	xmlChar *text = NULL;
	int len = 0, r;
	cleanup_free char *tmp = NULL;
	struct ploop_file *f = NULL;

	X = ploop_xml(err);
	if (!X)
		return err->status;
	doc = build_doc(dd);
	X->DocDumpFormatMemory(doc, &text, &len, 1);
	X->FreeDoc(doc);
	if (!text || asprintf(&tmp, "%s.tmp", path) < 0) {
		X->Free(text);
		return ploop_fail(err, PLOOP_ERR_MALLOC, ENOMEM, "%s", path);
	}
	/* What we write must pass what we read: a bug must not turn into a broken image set. */
	{
		struct ploop_descriptor *check = NULL;
		struct ploop_error e = { 0 };

		if (ploop_descriptor_parse((const char *)text, (size_t)len, path, &check, &e)) {
			X->Free(text);
			return ploop_fail(err, PLOOP_ERR_DESCRIPTOR, 0, "refusing to write an inconsistent descriptor: %s",
					  e.msg);
		}
		/* ... and gives back the names written (its reader trims blanks). */
		for (int i = 0; i < dd->n_images && i < check->n_images; i++)
			if (strcmp(dd->images[i].file, check->images[i].file)) {
				r = ploop_fail(err, PLOOP_ERR_DESCRIPTOR, 0,
					       "refusing to write an inconsistent descriptor: %s: <File> '%.200s' "
					       "would read back as '%.200s'",
					       path, dd->images[i].file, check->images[i].file);
				ploop_descriptor_free(check);
				X->Free(text);
				return r;
			}
		ploop_descriptor_free(check);
	}
	r = pio_open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644, &f);
	if (r) {
		X->Free(text);
		return ploop_fail(err, r == -ENOSPC ? PLOOP_ERR_FALLOCATE : PLOOP_ERR_CREAT, -r, "%s: cannot create",
				  tmp);
	}
	r = pio_write(f, text, (size_t)len, 0);
	X->Free(text);
	if (!r)
		r = pio_sync(f);
	pio_close(f);
	if (r) {
		pio_unlink(tmp);
		return ploop_fail(err, ploop_write_status(r), -r, "%s: cannot write", tmp);
	}
	return 0;
}

/* The second half: @path.tmp replaces @path, and the directory is synced. */
static int commit_tmp(const char *path, struct ploop_error *err)
{
	cleanup_free char *tmp = NULL;
	int r;

	if (asprintf(&tmp, "%s.tmp", path) < 0)
		return ploop_fail(err, PLOOP_ERR_MALLOC, ENOMEM, "%s", path);
	r = pio_rename(tmp, path);
	if (r) {
		pio_unlink(tmp);
		return ploop_fail(err, PLOOP_ERR_RENAME, -r, "%s: cannot replace", path);
	}
	r = pio_sync_parent(path);
	if (r)
		return ploop_fail(err, PLOOP_ERR_FSYNC, -r, "%s: replaced, but cannot sync the directory", path);
	return 0;
}

int ploop_descriptor_write(const struct ploop_descriptor *dd, const char *path, struct ploop_error *err)
{
	if (write_tmp(dd, path, err))
		return err->status;
	return commit_tmp(path, err);
}

int ploop_descriptor_prepare(const struct ploop_descriptor *dd, struct ploop_error *err)
{
	return write_tmp(dd, dd->path, err);
}

int ploop_descriptor_commit(const struct ploop_descriptor *dd, struct ploop_error *err)
{
	return commit_tmp(dd->path, err);
}

void ploop_descriptor_abort(const struct ploop_descriptor *dd)
{
	char *tmp = NULL;

	if (asprintf(&tmp, "%s.tmp", dd->path) >= 0) {
		pio_unlink(tmp);
		free(tmp);
	}
}

/* After a failed write: whether the new descriptor is nevertheless in place (only the directory
 * sync failed), so the caller must not undo what it describes. */
bool ploop_descriptor_committed(const struct ploop_error *err)
{
	return err->status == PLOOP_ERR_FSYNC;
}

/* Stores the descriptor where it was read from, with upstream's fixed top GUID. */
int ploop_descriptor_store(const struct ploop_descriptor *dd, struct ploop_error *err)
{
	return ploop_descriptor_write(dd, dd->path, err);
}

/* ---- editing -------------------------------------------------------------------------------------------- */

/* New deltas are named STEM.{GUID}, STEM being the base image's file name without a .{GUID} of
 * its own; returns the length of STEM. */
static size_t delta_stem(const struct ploop_descriptor *dd)
{
	const char *base = dd->images[0].file;
	size_t n = strlen(base);
	char g[PLOOP_GUID_BUF];

	if (n > PLOOP_GUID_LEN + 1 && base[n - PLOOP_GUID_LEN - 1] == '.' &&
	    !ploop_parse_guid(base + n - PLOOP_GUID_LEN, g))
		n -= PLOOP_GUID_LEN + 1;
	return n;
}

bool ploop_descriptor_unnamed_delta(const struct ploop_descriptor *dd, const char *name)
{
	size_t n = dd->n_images ? delta_stem(dd) : 0;
	char g[PLOOP_GUID_BUF];

	if (!dd->n_images || strlen(name) != n + 1 + PLOOP_GUID_LEN || strncmp(name, dd->images[0].file, n) ||
	    name[n] != '.' || name[n + 1] != '{' || ploop_parse_guid(name + n + 1, g))
		return false;
	return ploop_descriptor_find_file(dd, name) < 0;
}

int ploop_descriptor_find_file(const struct ploop_descriptor *dd, const char *file)
{
	for (int i = 0; i < dd->n_images; i++)
		if (!strcmp(dd->images[i].file, file))
			return i;
	return -1;
}

/* Name of a new delta: STEM plus ".{random}". */
int ploop_descriptor_new_delta_name(const struct ploop_descriptor *dd, char **file, char **path,
				    struct ploop_error *err)
{
	const char *base = dd->images[0].file;
	size_t n = delta_stem(dd);
	char g[PLOOP_GUID_BUF];

	if (ploop_new_guid(g))
		return ploop_fail(err, PLOOP_ERR_SYS, EIO, "cannot generate a GUID");
	*file = NULL;
	if (asprintf(file, "%.*s.%s", (int)n, base, g) < 0 || !(*path = ploop_join(dd->dir, *file))) {
		free(*file);
		return ploop_fail(err, PLOOP_ERR_MALLOC, ENOMEM, "%s", dd->path);
	}
	return 0;
}

int ploop_descriptor_add_image(struct ploop_descriptor *dd, const char *guid, const char *file, const char *parent,
			       struct ploop_error *err)
{
	struct ploop_image_entry *im = realloc(dd->images, (size_t)(dd->n_images + 1) * sizeof(*im));
	struct ploop_snapshot_entry *sn;

	if (!im)
		return ploop_fail(err, PLOOP_ERR_MALLOC, ENOMEM, "%s", dd->path);
	dd->images = im;
	sn = realloc(dd->snapshots, (size_t)(dd->n_snapshots + 1) * sizeof(*sn));
	if (!sn)
		return ploop_fail(err, PLOOP_ERR_MALLOC, ENOMEM, "%s", dd->path);
	dd->snapshots = sn;
	im = &dd->images[dd->n_images];
	memset(im, 0, sizeof(*im));
	strcpy(im->guid, guid);
	im->file = strdup(file);
	im->path = ploop_join(dd->dir, file);
	if (!im->file || !im->path) {
		free(im->file);
		free(im->path);
		return ploop_fail(err, PLOOP_ERR_MALLOC, ENOMEM, "%s", dd->path);
	}
	dd->n_images++;
	sn = &dd->snapshots[dd->n_snapshots++];
	memset(sn, 0, sizeof(*sn));
	strcpy(sn->guid, guid);
	strcpy(sn->parent, parent);
	return 0;
}

void ploop_descriptor_remove_image(struct ploop_descriptor *dd, const char *guid)
{
	int i = ploop_descriptor_find_image(dd, guid), s = ploop_descriptor_find_snapshot(dd, guid);

	if (i >= 0) {
		free(dd->images[i].file);
		free(dd->images[i].path);
		memmove(&dd->images[i], &dd->images[i + 1], (size_t)(dd->n_images - i - 1) * sizeof(dd->images[0]));
		dd->n_images--;
	}
	if (s >= 0) {
		memmove(&dd->snapshots[s], &dd->snapshots[s + 1],
			(size_t)(dd->n_snapshots - s - 1) * sizeof(dd->snapshots[0]));
		dd->n_snapshots--;
	}
}

/* Renames a GUID everywhere: image, snapshot, parent links and the top. */
void ploop_descriptor_rename_guid(struct ploop_descriptor *dd, const char *from, const char *to)
{
	char f[PLOOP_GUID_BUF];

	strcpy(f, from);
	for (int i = 0; i < dd->n_images; i++)
		if (!strcmp(dd->images[i].guid, f))
			strcpy(dd->images[i].guid, to);
	for (int i = 0; i < dd->n_snapshots; i++) {
		if (!strcmp(dd->snapshots[i].guid, f))
			strcpy(dd->snapshots[i].guid, to);
		if (!strcmp(dd->snapshots[i].parent, f))
			strcpy(dd->snapshots[i].parent, to);
	}
	if (!strcmp(dd->top_guid, f))
		strcpy(dd->top_guid, to);
}

/* A fresh single-image descriptor for @file with the geometry of @p (already normalised). */
int ploop_descriptor_new(const char *dd_path, const char *file, const struct ploop_create_params *p,
			 struct ploop_descriptor **out, struct ploop_error *err)
{
	struct ploop_descriptor *dd = calloc(1, sizeof(*dd));
	uint32_t secs;

	*out = NULL;
	if (!dd || !(dd->path = strdup(dd_path)) || !(dd->dir = ploop_dir_of(dd_path))) {
		ploop_descriptor_free(dd);
		return ploop_fail(err, PLOOP_ERR_MALLOC, ENOMEM, "%s", dd_path);
	}
	dd->disk_size = p->size_sectors;
	ploop_chs(p->size_sectors, &dd->cylinders, &dd->heads, &secs);
	dd->sectors = (uint32_t)(p->size_sectors / ((uint64_t)dd->cylinders * dd->heads));
	dd->end = p->size_sectors;
	dd->blocksize = p->cluster_sectors;
	dd->preallocated = p->mode == PLOOP_MODE_PREALLOCATED;
	dd->raw = p->mode == PLOOP_MODE_RAW;
	strcpy(dd->top_guid, PLOOP_TOP_GUID);
	if (ploop_descriptor_add_image(dd, PLOOP_TOP_GUID, file, PLOOP_NONE_GUID, err)) {
		ploop_descriptor_free(dd);
		return err->status;
	}
	*out = dd;
	return 0;
}

/* ---- locking ----------------------------------------------------------------------------------------------- */

/*
 * Writers hold DiskDescriptor.xml.lck exclusively (creating it, as upstream does). Readers take it
 * shared only if it exists: they never create files, and the shared locks they hold on every delta
 * keep writers of those deltas away anyway (so they work on read-only media). Only another holder
 * is PLOOP_ERR_LOCK, which callers may retry; a lock file a writer cannot open (a read-only
 * filesystem, permissions) is @open_status: PLOOP_ERR_CREAT for a new set, else PLOOP_ERR_OPEN.
 * With @op, the exclusive lock is an flock of the file instead (see ploop_lock_descriptor_op).
 * A path that is not a regular file (a directory given for a descriptor) is refused before any
 * lock file is made beside it. *@created (if not NULL): this call made the lock file. A lock file
 * may be removed by the process that made it and holds it (a new set that failed): a lock taken
 * on a file no longer at the path is no lock, so it is taken again on the file that is there.
 */
static int lock_descriptor(const char *dd_path, bool exclusive, bool create, bool op, int open_status, int *lock_fd,
			   bool *created, struct ploop_error *err)
{
	cleanup_free char *lck = NULL;
	struct flock fl = { .l_type = exclusive ? F_WRLCK : F_RDLCK, .l_whence = SEEK_SET };
	struct stat st, now;
	bool made;
	int fd;

	*lock_fd = -1;
	if (created)
		*created = false;
	if (stat(dd_path, &st)) {
		if (!create)
			return ploop_fail(err, errno == ENOENT ? PLOOP_ERR_DESCRIPTOR : PLOOP_ERR_OPEN, errno, "%s",
					  dd_path);
	} else if (!S_ISREG(st.st_mode)) {
		return ploop_fail(err, create ? open_status : PLOOP_ERR_DESCRIPTOR, 0,
				  "%s: not a regular file (a DiskDescriptor.xml is expected)", dd_path);
	}
	if (asprintf(&lck, "%s.lck", dd_path) < 0)
		return ploop_fail(err, PLOOP_ERR_MALLOC, ENOMEM, "%s", dd_path);
	for (int tries = 0;; tries++) {
		made = false;
		fd = -EEXIST;
		if (exclusive) {
			fd = open_regular_file(lck, O_RDWR | O_CREAT | O_EXCL, 0600, false);
			made = fd >= 0;
		}
		if (fd == -EEXIST)
			fd = open_regular_file(lck, exclusive ? O_RDWR | O_CREAT : O_RDONLY, 0600, false);
		if (fd == -OPEN_ENOTREG)
			return ploop_fail(err, PLOOP_ERR_OPEN, 0, "%s: not a regular file", lck);
		if (fd < 0 && !exclusive)
			return 0;
		if (fd < 0)
			return ploop_fail(err, open_status, -fd, "%s: cannot open the lock file", lck);
		if (op ? flock(fd, LOCK_EX | LOCK_NB) : fcntl(fd, F_OFD_SETLK, &fl)) {
			int e = errno;

			close(fd);
			if (e == EAGAIN || e == EACCES) {
				char holders[512];

				if (op)
					return ploop_fail(err, PLOOP_ERR_LOCK, 0,
							  "%s: image is locked: another resize is under way", dd_path);
				if (ploop_describe_servers(dd_path, holders, sizeof(holders)))
					return ploop_fail(err, PLOOP_ERR_LOCK, 0, "%s: image is locked: %s", dd_path,
							  holders);
				return ploop_fail(err, PLOOP_ERR_LOCK, 0, "%s: image is locked by another process",
						  dd_path);
			}
			return ploop_fail(err, PLOOP_ERR_SYS, e, "%s: cannot lock", lck);
		}
		if (!fstat(fd, &st) && !stat(lck, &now) && st.st_dev == now.st_dev && st.st_ino == now.st_ino)
			break;
		/* Removed (or replaced) by the process that held it before we locked it. */
		close(fd);
		if (tries == 100)
			return ploop_fail(err, PLOOP_ERR_LOCK, 0, "%s: the lock file keeps changing", lck);
	}
	if (created)
		*created = made;
	*lock_fd = fd;
	return 0;
}

int ploop_lock_descriptor(const char *dd_path, bool exclusive, int *lock_fd, struct ploop_error *err)
{
	return lock_descriptor(dd_path, exclusive, false, false, PLOOP_ERR_OPEN, lock_fd, NULL, err);
}

int ploop_lock_new_descriptor(const char *dd_path, int *lock_fd, bool *created, struct ploop_error *err)
{
	return lock_descriptor(dd_path, true, true, false, PLOOP_ERR_CREAT, lock_fd, created, err);
}

/* Removes the lock file while still holding it, if this process made it (@created) and no set came
 * of it (no descriptor at @dd_path: a failed init, import or restore-descriptor), so that nothing is
 * left beside what failed. Whoever opened the file meanwhile finds, once it has locked it, that it is
 * no longer at the path, and locks the one there instead. */
void ploop_unlock_new_descriptor(const char *dd_path, int lock_fd, bool created)
{
	cleanup_free char *lck = NULL;
	struct stat st;
	int e = errno;	/* callers report theirs after this */

	if (lock_fd >= 0 && created && stat(dd_path, &st) && errno == ENOENT && asprintf(&lck, "%s.lck", dd_path) >= 0)
		unlink(lck);
	ploop_unlock_descriptor(lock_fd);
	errno = e;
}

int ploop_lock_descriptor_server(const char *dd_path, int *lock_fd, bool *exclusive, struct ploop_error *err)
{
	*exclusive = true;
	if (!lock_descriptor(dd_path, true, true, false, PLOOP_ERR_OPEN, lock_fd, NULL, err) ||
	    err->status != PLOOP_ERR_LOCK)
		return err->status;
	/* Held: by readers (snapshot views of the set), which a shared lock lets in, or by a writer. */
	*exclusive = false;
	*err = (struct ploop_error){ 0 };
	return lock_descriptor(dd_path, false, false, false, PLOOP_ERR_OPEN, lock_fd, NULL, err);
}

/*
 * A command that works on a set while its server serves it (a mounted resize: the server grows the
 * disk, the command the partition table and the filesystem) cannot take the lock the server holds
 * shared: it takes an flock of the same file, which record locks do not see, so that two such
 * commands do not interleave. Another holder is PLOOP_ERR_LOCK, as for the descriptor lock.
 */
int ploop_lock_descriptor_op(const char *dd_path, int *lock_fd, struct ploop_error *err)
{
	return lock_descriptor(dd_path, true, false, true, PLOOP_ERR_OPEN, lock_fd, NULL, err);
}

void ploop_unlock_descriptor(int lock_fd)
{
	if (lock_fd >= 0)
		close(lock_fd);
}
