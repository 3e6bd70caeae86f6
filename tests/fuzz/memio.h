/* An in-memory struct ploop_io_ops for the fuzzers: a few named files held in memory, so libploop
 * parses fuzz input as a file without touching the disk, with growth capped so huge sizes fail. */
#ifndef MEMIO_H
#define MEMIO_H

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../ploop/ploop.h"

#define MEMIO_MAX_NAMES 16
#define MEMIO_MAX_OPEN 64
#define MEMIO_PATH_MAX 512
/* All files together: a write, truncate or allocate past this fails with -ENOSPC ("disk full"). */
#define MEMIO_MAX_BYTES (64ull << 20)

#define MEMIO_API __attribute__((unused)) static

struct memio_inode {
	uint8_t *data;
	uint64_t size;
	uint64_t cap;		/* bytes allocated at data */
	int links;		/* names pointing here */
	int opens;		/* handles open on it */
};

struct memio_name {
	char path[MEMIO_PATH_MAX];
	struct memio_inode *ino;	/* NULL: free slot */
};

struct memio_handle {
	struct ploop_file file;		/* what the library sees; priv points back here */
	struct memio_inode *ino;
	bool in_use, readable, writable;
	int lock;			/* 0 none, 1 shared, 2 exclusive */
};

static const struct ploop_io_ops memio_ops;
static struct memio_name memio_names[MEMIO_MAX_NAMES];
static struct memio_handle memio_handles[MEMIO_MAX_OPEN];
static uint64_t memio_total;		/* sum of the sizes of every live inode */
static long memio_ro_write_attempts;	/* writes through handles opened read-only */

static struct memio_name *memio_lookup(const char *path)
{
	for (int i = 0; i < MEMIO_MAX_NAMES; i++)
		if (memio_names[i].ino && !strcmp(memio_names[i].path, path))
			return &memio_names[i];
	return NULL;
}

static void memio_drop_inode(struct memio_inode *ino)
{
	if (ino->links || ino->opens)
		return;
	memio_total -= ino->size;
	free(ino->data);
	free(ino);
}

/* Sets the size of @ino to @size, zero-filling any growth; -ENOSPC past the global cap. */
static int memio_resize(struct memio_inode *ino, uint64_t size)
{
	if (size > ino->size && size - ino->size > MEMIO_MAX_BYTES - memio_total)
		return -ENOSPC;
	if (size > ino->cap) {
		uint64_t cap = ino->cap ? ino->cap : 4096;
		uint8_t *p;

		while (cap < size)
			cap *= 2;
		if (cap > MEMIO_MAX_BYTES)
			cap = MEMIO_MAX_BYTES;
		p = realloc(ino->data, (size_t)cap);
		if (!p)
			return -ENOMEM;
		ino->data = p;
		ino->cap = cap;
	}
	if (size > ino->size)
		memset(ino->data + ino->size, 0, (size_t)(size - ino->size));
	memio_total = memio_total - ino->size + size;
	ino->size = size;
	return 0;
}

static struct memio_name *memio_new_name(const char *path, struct memio_inode *ino)
{
	for (int i = 0; i < MEMIO_MAX_NAMES; i++) {
		if (memio_names[i].ino)
			continue;
		snprintf(memio_names[i].path, sizeof(memio_names[i].path), "%s", path);
		memio_names[i].ino = ino;
		ino->links++;
		return &memio_names[i];
	}
	return NULL;
}

static void memio_remove_name(struct memio_name *n)
{
	struct memio_inode *ino = n->ino;

	n->ino = NULL;
	n->path[0] = '\0';
	ino->links--;
	memio_drop_inode(ino);
}

static struct memio_handle *memio_of(struct ploop_file *f)
{
	return f->priv;
}

/* ---- the table ---- */

static int memio_open(const char *path, int flags, mode_t mode, struct ploop_file **out)
{
	struct memio_name *n;
	struct memio_handle *h = NULL;
	int acc = flags & O_ACCMODE;

	(void)mode;
	if (!path || !*path)
		return -ENOENT;
	if (strlen(path) >= MEMIO_PATH_MAX)
		return -ENAMETOOLONG;
	n = memio_lookup(path);
	if (n && (flags & O_CREAT) && (flags & O_EXCL))
		return -EEXIST;
	if (!n && !(flags & O_CREAT))
		return -ENOENT;
	if ((flags & O_TRUNC) && acc == O_RDONLY)
		return -EINVAL;
	for (int i = 0; i < MEMIO_MAX_OPEN && !h; i++)
		if (!memio_handles[i].in_use)
			h = &memio_handles[i];
	if (!h)
		return -EMFILE;
	if (!n) {
		struct memio_inode *ino = calloc(1, sizeof(*ino));

		if (!ino)
			return -ENOMEM;
		n = memio_new_name(path, ino);
		if (!n) {
			free(ino);
			return -ENOSPC;
		}
	}
	if (flags & O_TRUNC)
		memio_resize(n->ino, 0);
	memset(h, 0, sizeof(*h));
	h->in_use = true;
	h->ino = n->ino;
	h->readable = acc == O_RDONLY || acc == O_RDWR;
	h->writable = acc == O_WRONLY || acc == O_RDWR;
	h->file.ops = &memio_ops;
	h->file.fd = -1;
	h->file.priv = h;
	h->ino->opens++;
	*out = &h->file;
	return 0;
}

static void memio_close(struct ploop_file *f)
{
	struct memio_handle *h = memio_of(f);
	struct memio_inode *ino = h->ino;

	h->in_use = false;
	h->ino = NULL;
	ino->opens--;
	memio_drop_inode(ino);
}

static ssize_t memio_pread(struct ploop_file *f, void *buf, size_t len, uint64_t off)
{
	struct memio_handle *h = memio_of(f);
	uint64_t n;

	if (!h->readable)
		return -EBADF;
	if (off >= h->ino->size)
		return 0;
	n = h->ino->size - off < len ? h->ino->size - off : len;
	memcpy(buf, h->ino->data + off, (size_t)n);
	return (ssize_t)n;
}

static ssize_t memio_pwrite(struct ploop_file *f, const void *buf, size_t len, uint64_t off)
{
	struct memio_handle *h = memio_of(f);
	int r;

	if (!h->writable) {
		memio_ro_write_attempts++;
		return -EBADF;
	}
	if (off > MEMIO_MAX_BYTES || len > MEMIO_MAX_BYTES - off)
		return -ENOSPC;
	if (off + len > h->ino->size) {
		r = memio_resize(h->ino, off + len);
		if (r)
			return r;
	}
	memcpy(h->ino->data + off, buf, len);
	return (ssize_t)len;
}

static int memio_sync(struct ploop_file *f)
{
	(void)f;
	return 0;
}

static int memio_size(struct ploop_file *f, uint64_t *size)
{
	*size = memio_of(f)->ino->size;
	return 0;
}

static int memio_truncate(struct ploop_file *f, uint64_t size)
{
	struct memio_handle *h = memio_of(f);

	if (!h->writable) {
		memio_ro_write_attempts++;
		return -EBADF;
	}
	if (size > MEMIO_MAX_BYTES)
		return -ENOSPC;
	return memio_resize(h->ino, size);
}

static int memio_allocate(struct ploop_file *f, uint64_t off, uint64_t len)
{
	struct memio_handle *h = memio_of(f);

	if (!h->writable) {
		memio_ro_write_attempts++;
		return -EBADF;
	}
	if (!len)
		return -EINVAL;	/* as fallocate(2) */
	if (off > MEMIO_MAX_BYTES || len > MEMIO_MAX_BYTES - off)
		return -ENOSPC;
	return off + len > h->ino->size ? memio_resize(h->ino, off + len) : 0;
}

static int memio_lock(struct ploop_file *f, bool exclusive)
{
	struct memio_handle *h = memio_of(f);

	for (int i = 0; i < MEMIO_MAX_OPEN; i++) {
		const struct memio_handle *o = &memio_handles[i];

		if (o == h || !o->in_use || o->ino != h->ino || !o->lock)
			continue;
		if (exclusive || o->lock == 2)
			return -EAGAIN;
	}
	h->lock = exclusive ? 2 : 1;
	return 0;
}

static int memio_rename(const char *from, const char *to)
{
	struct memio_name *a = memio_lookup(from), *b = memio_lookup(to);

	if (!a)
		return -ENOENT;
	if (strlen(to) >= MEMIO_PATH_MAX)
		return -ENAMETOOLONG;
	if (b == a || (b && b->ino == a->ino))
		return 0;
	if (b)
		memio_remove_name(b);
	snprintf(a->path, sizeof(a->path), "%s", to);
	return 0;
}

static int memio_link(const char *from, const char *to)
{
	struct memio_name *a = memio_lookup(from);

	if (!a)
		return -ENOENT;
	if (memio_lookup(to))
		return -EEXIST;
	if (strlen(to) >= MEMIO_PATH_MAX)
		return -ENAMETOOLONG;
	return memio_new_name(to, a->ino) ? 0 : -ENOSPC;
}

static int memio_unlink(const char *path)
{
	struct memio_name *n = memio_lookup(path);

	if (!n)
		return -ENOENT;
	memio_remove_name(n);
	return 0;
}

static int memio_sync_dir(const char *dir)
{
	return dir && *dir ? 0 : -ENOENT;
}

static const struct ploop_io_ops memio_ops = {
	.open = memio_open,
	.close = memio_close,
	.pread = memio_pread,
	.pwrite = memio_pwrite,
	.sync = memio_sync,
	.size = memio_size,
	.truncate = memio_truncate,
	.allocate = memio_allocate,
	.copy = NULL,
	.lock = memio_lock,
	.rename = memio_rename,
	.link = memio_link,
	.unlink = memio_unlink,
	.sync_dir = memio_sync_dir,
};

/* ---- for the harness ---- */

MEMIO_API void memio_install(void)
{
	ploop_io_set(&memio_ops);
}

/* Handles still open: the library must have closed every file when a call returns. */
MEMIO_API int memio_open_files(void)
{
	int k = 0;

	for (int i = 0; i < MEMIO_MAX_OPEN; i++)
		k += memio_handles[i].in_use;
	return k;
}

MEMIO_API long memio_ro_writes(void)
{
	return memio_ro_write_attempts;
}

/* Forgets every file (and any handle a buggy caller left open). */
MEMIO_API void memio_reset(void)
{
	for (int i = 0; i < MEMIO_MAX_OPEN; i++) {
		if (memio_handles[i].in_use) {
			memio_handles[i].ino->opens--;
			memio_drop_inode(memio_handles[i].ino);
		}
		memset(&memio_handles[i], 0, sizeof(memio_handles[i]));
	}
	for (int i = 0; i < MEMIO_MAX_NAMES; i++)
		if (memio_names[i].ino)
			memio_remove_name(&memio_names[i]);
	memio_ro_write_attempts = 0;
}

/* Creates or replaces @path with @len bytes of @data. */
MEMIO_API int memio_put(const char *path, const void *data, size_t len)
{
	struct memio_name *n = memio_lookup(path);
	int r;

	if (n)
		memio_remove_name(n);
	if (strlen(path) >= MEMIO_PATH_MAX)
		return -ENAMETOOLONG;
	{
		struct memio_inode *ino = calloc(1, sizeof(*ino));

		if (!ino)
			return -ENOMEM;
		n = memio_new_name(path, ino);
		if (!n) {
			free(ino);
			return -ENOSPC;
		}
	}
	r = memio_resize(n->ino, len);
	if (r) {
		memio_remove_name(n);
		return r;
	}
	if (len)
		memcpy(n->ino->data, data, len);
	return 0;
}

/* Contents of @path (valid until the file next changes), or false when there is no such file. */
MEMIO_API bool memio_get(const char *path, const uint8_t **data, uint64_t *len)
{
	struct memio_name *n = memio_lookup(path);

	if (!n)
		return false;
	*data = n->ino->data;
	*len = n->ino->size;
	return true;
}

MEMIO_API bool memio_exists(const char *path)
{
	return memio_lookup(path) != NULL;
}

#endif
