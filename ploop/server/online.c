/* The commands a running ploopd takes on its control socket: status, flush, stop, and the online
 * image operations -- snapshot, merge/delete, resize, compact -- done without unmounting, each in
 * the same crash-safe order as its offline counterpart. */
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/sysmacros.h>
#include <sys/stat.h>

#include "loop.h"
#include "server.h"

__attribute__((format(printf, 4, 5)))
static int reply_err(char *reply, size_t len, int code, const char *fmt, ...)
{
	va_list ap;
	int n = snprintf(reply, len, "err %d ", code);

	va_start(ap, fmt);
	vsnprintf(reply + n, len - (size_t)n, fmt, ap);
	va_end(ap);
	for (char *c = reply; *c; c++)
		if (*c == '\n')
			*c = ' ';
	slog("%s", reply);
	return code;
}

static int reply_error(char *reply, size_t len, const struct ploop_error *err)
{
	return reply_err(reply, len, err->status ? err->status : PLOOP_ERR_DEVICE, "%s", err->msg);
}

/* A delta the server could not lock for writing is held by a snapshot view: the message names it. */
static void name_views(struct srv *s, struct ploop_error *err)
{
	char views[1024];

	if (err->status == PLOOP_ERR_LOCK && ploop_describe_views(s->dd_path, views, sizeof(views)))
		snprintf(err->msg + strlen(err->msg), sizeof(err->msg) - strlen(err->msg), "; %s", views);
}

static struct ploop_delta *top_delta(struct srv *s)
{
	return s->chain->deltas[s->chain->depth - 1];
}

/* ---- freezing the filesystem on our device ------------------------------------------------------ */

/* Freezes the filesystem on our device, if one is mounted: its dirty data and journal are written,
 * and writers wait, until thawed (see fs_freeze: a child does it, never a server thread). */
static void freeze(struct srv *s, struct freezer *fz)
{
	char dir[4096];
	struct stat st;
	int r;

	fz->pid = -1;
	if (stat(s->part, &st))
		return;
	/* Only where ours is what shows: at a directory with another filesystem mounted over it,
	 * FIFREEZE would freeze that one. */
	switch (ploop_find_mount(st.st_rdev, dir, sizeof(dir))) {
	case PLOOP_NOT_MOUNTED:
		return;
	case PLOOP_MOUNT_COVERED:
		slog("not frozen: another filesystem is mounted over %s", dir);
		return;
	case PLOOP_MOUNT_SHOWS:
		break;
	}
	r = fs_freeze(dir, st.st_rdev, fz);
	if (r)
		slog("cannot freeze %s: %s", dir, strerror(-r));
}

static void thaw(struct freezer *fz)
{
	int r = fs_thaw(fz);

	if (r)
		slog("cannot thaw: %s", strerror(-r));
}

/* ---- helpers ----------------------------------------------------------------------------------- */

/* The name the kernel has for the file open as @fd (NULL if it has none: it was removed). */
static char *name_of_open(int fd)
{
	char link[64], path[PATH_MAX];
	ssize_t len;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	len = readlink(link, path, sizeof(path) - 1);
	if (len <= 0 || path[0] != '/')
		return NULL;
	path[len] = '\0';
	return strstr(path, " (deleted)") ? NULL : strdup(path);
}

/* Whether @path names the file open as @fd: it leads to it, or is its name with something mounted
 * over it (which hides the file, and keeps it from being removed, not from being served). */
static bool names_open_file(const char *path, int fd)
{
	struct stat named, open;
	cleanup_free char *name = NULL;

	if (!stat(path, &named) && !fstat(fd, &open) && named.st_dev == open.st_dev && named.st_ino == open.st_ino)
		return true;
	name = name_of_open(fd);
	return name && !strcmp(name, path);
}

/* Whether the chain @dd names (levels @idx) is, file for file, the one the server has open. */
static bool names_served_chain(struct srv *s, const struct ploop_descriptor *dd, const int idx[], int n)
{
	if (n != s->chain->depth)
		return false;
	for (int i = 0; i < n; i++)
		if (!names_open_file(dd->images[idx[i]].path, s->chain->deltas[i]->file->fd))
			return false;
	return true;
}

/* The descriptor at @path and its top's chain, if that is the served chain (else *@dd is NULL). */
static void read_dd_at(struct srv *s, const char *path, struct ploop_descriptor **dd, int idx[], int *n)
{
	struct ploop_error none = { 0 };

	if (ploop_descriptor_read(path, dd, &none) || ploop_descriptor_chain(*dd, NULL, idx, n, &none) ||
	    !names_served_chain(s, *dd, idx, *n)) {
		ploop_descriptor_free(*dd);
		*dd = NULL;
	}
}

/* Where the top delta the server has open is now, by its open file (the set's directory may have
 * been renamed since the mount): NULL if that cannot be told. */
static char *top_dir_now(struct srv *s)
{
	cleanup_free char *path = name_of_open(top_delta(s)->file->fd);

	return path ? ploop_dir_of(path) : NULL;
}

static int not_served(const char *path, struct ploop_error *err)
{
	return ploop_fail(err, PLOOP_ERR_DESCRIPTOR, 0,
			  "%s does not name the images this server has open (the set was moved or changed behind "
			  "its back): refused",
			  path);
}

/*
 * Before any online operation: the descriptor it acts on must be the one whose images are the very
 * files the server has open (device and inode of each delta), not just whatever now has the name the
 * set was mounted by -- its directory may have been renamed, and another set made under the old
 * name, which a snapshot would then have changed (its new delta becoming this server's top). A set
 * that was moved is followed: its descriptor, of the same name beside the top delta as that is named
 * now, is adopted with the deltas' new paths (the state file too, which ploop list shows). Anything
 * else is refused.
 */
static int follow_descriptor(struct srv *s, struct ploop_error *err)
{
	cleanup_free char *dir = top_dir_now(s);
	char *moved = dir ? ploop_join(dir, strrchr(s->dd_path, '/') + 1) : NULL;
	struct ploop_descriptor *dd = NULL;
	int idx[PLOOP_MAX_CHAIN], n;

	read_dd_at(s, s->dd_path, &dd, idx, &n);
	if (dd || !moved || !strcmp(moved, s->dd_path)) {
		bool served = dd;

		free(moved);
		ploop_descriptor_free(dd);
		return served ? 0 : not_served(s->dd_path, err);
	}
	read_dd_at(s, moved, &dd, idx, &n);
	if (!dd) {
		not_served(moved, err);
		free(moved);
		return err->status;
	}
	slog("the set was moved: %s is now %s", s->dd_path, moved);
	/* (The data path names deltas in its messages.) */
	pthread_rwlock_wrlock(&s->io_lock);
	free(s->dd_path);
	s->dd_path = moved;
	for (int i = 0; i < n; i++) {
		char *path = strdup(dd->images[idx[i]].path);

		if (path) {
			free(s->chain->deltas[i]->path);
			s->chain->deltas[i]->path = path;
		}
	}
	pthread_rwlock_unlock(&s->io_lock);
	ploop_descriptor_free(dd);
	server_write_state(s);
	return 0;
}

/* The descriptor of the served set and its top's chain (see follow_descriptor). */
static int read_dd(struct srv *s, struct ploop_descriptor **dd, int idx[], int *n, struct ploop_error *err)
{
	read_dd_at(s, s->dd_path, dd, idx, n);
	return *dd ? 0 : not_served(s->dd_path, err);
}

static void set_disk_size(struct ploop_descriptor *dd, uint64_t size)
{
	uint32_t secs;

	dd->disk_size = dd->end = size;
	ploop_chs(size, &dd->cylinders, &dd->heads, &secs);
	dd->sectors = (uint32_t)(size / ((uint64_t)dd->cylinders * dd->heads));
}

/* Lets go of (or takes back) this process's own lock on a delta file. */
static void delta_unlock(struct ploop_delta *d)
{
	struct flock fl = { .l_type = F_UNLCK, .l_whence = SEEK_SET };

	fcntl(d->file->fd, F_OFD_SETLK, &fl);
}

static void delta_relock(struct ploop_delta *d)
{
	struct flock fl = { .l_type = d->rw ? F_WRLCK : F_RDLCK, .l_whence = SEEK_SET };

	fcntl(d->file->fd, F_OFD_SETLK, &fl);
}

/* A delta the server wrote (flushed and marked clean) stays open as a lower, read-only one: nothing
 * writes it any more and its lock becomes shared. Nothing can fail here, unlike closing and opening
 * it again, so it is done once the descriptor no longer names it as the top. */
static void delta_make_readonly(struct ploop_delta *d)
{
	d->rw = false;
	delta_relock(d);	/* converts this descriptor's write lock to a read lock */
}

/* ---- status, stop, flush ------------------------------------------------------------------------ */

static int cmd_status(struct srv *s, char *reply, size_t len)
{
	snprintf(reply, len, "ok size=%" PRIu64 " depth=%d ro=%d device=%s part=%s mount=%s", s->size,
		 s->chain->depth, s->ro, s->device, s->part, s->mount_dir);
	return 0;
}

static int cmd_stop(struct srv *s, char *reply, size_t len)
{
	char msg[4200];
	int code = server_release(s, msg, sizeof(msg));

	if (code)
		return reply_err(reply, len, code, "%s", msg);
	server_request_stop();
	snprintf(reply, len, "ok");
	return 0;
}

/* ---- snapshot ----------------------------------------------------------------------------------- */

/*
 * Freeze the filesystem, stop I/O, make the top durable, create and open the new delta, mark the
 * old top clean, store the descriptor naming the new top, switch writes to it, resume, thaw. Every
 * step that can fail comes before the descriptor is stored and is undone on failure, so the server
 * goes on with the old chain; after it, the old top only becomes read-only in place (no reopen). A
 * crash before the descriptor is stored leaves the old top in charge; after, the new (empty) one.
 */
static int cmd_snapshot(struct srv *s, const char *arg, char *reply, size_t len)
{
	struct ploop_error err = { 0 };
	struct ploop_descriptor *dd = NULL;
	struct ploop_delta *top, *newtop = NULL;
	char g[PLOOP_GUID_BUF];
	char *file = NULL, *path = NULL;
	int idx[PLOOP_MAX_CHAIN], n;
	struct freezer frozen;
	bool was_marked;

	if (s->ro)
		return reply_err(reply, len, PLOOP_ERR_PARAM, "%s is mounted read-only", s->dd_path);
	if (*arg && strcmp(arg, "-") ? ploop_parse_guid(arg, g) : ploop_new_guid(g))
		return reply_err(reply, len, PLOOP_ERR_PARAM, "'%s' is not a GUID", arg);
	if (!strcmp(g, PLOOP_TOP_GUID) || !strcmp(g, PLOOP_NONE_GUID))
		return reply_err(reply, len, PLOOP_ERR_PARAM, "%s is reserved", g);
	freeze(s, &frozen);
	pthread_rwlock_wrlock(&s->io_lock);
	top = top_delta(s);
	was_marked = top->marked_dirty;
	if (dev_flush_locked(s) || dev_trim_tail(s)) {
		ploop_fail(&err, PLOOP_ERR_FSYNC, EIO, "%s: cannot flush the top delta", top->path);
		goto out;
	}
	if (read_dd(s, &dd, idx, &n, &err))
		goto out;
	if (ploop_descriptor_find_snapshot(dd, g) >= 0) {
		ploop_fail(&err, PLOOP_ERR_PARAM, 0, "%s: snapshot %s already exists", s->dd_path, g);
		goto out;
	}
	if (dd->n_images >= PLOOP_MAX_CHAIN) {
		ploop_fail(&err, PLOOP_ERR_PARAM, 0, "%s: too many snapshots", s->dd_path);
		goto out;
	}
	if (ploop_new_delta_like(dd, top, &file, &path, &err))
		goto out;
	if (ploop_delta_open(path, PLOOP_OPEN_RDWR | PLOOP_OPEN_MARK_DIRTY, 0, 0, &newtop, &err))
		goto drop_new;
	/* (A raw top has no header, and no dirty marker to clear.) */
	if (was_marked) {
		if (ploop_delta_set_dirty(top, false, &err))
			goto drop_new;
		top->marked_dirty = false;
	}
	ploop_descriptor_rename_guid(dd, PLOOP_TOP_GUID, g);
	strcpy(dd->top_guid, PLOOP_TOP_GUID);
	if ((ploop_descriptor_add_image(dd, PLOOP_TOP_GUID, file, g, &err) || ploop_descriptor_store(dd, &err)) &&
	    !ploop_descriptor_committed(&err)) {
		if (was_marked && !ploop_delta_set_dirty(top, true, &(struct ploop_error){ 0 }))
			top->marked_dirty = true;
		goto drop_new;
	}
	/* The descriptor names the new top now: from here on, the old one is never written. */
	delta_make_readonly(top);
	s->chain->deltas[s->chain->depth++] = newtop;
	newtop = NULL;
	s->prealloc_end = 0;
	s->parent_stale = false;	/* the new top's parent is the old top, as the server sees it */
	memset(&err, 0, sizeof(err));
	goto out;
drop_new:
	ploop_delta_close(newtop, NULL);
	unlink(path);
out:
	pthread_rwlock_unlock(&s->io_lock);
	thaw(&frozen);
	ploop_descriptor_free(dd);
	free(file);
	free(path);
	if (err.status)
		return reply_error(reply, len, &err);
	slog("snapshot %s: new top %s", g, top_delta(s)->path);
	snprintf(reply, len, "ok %s", g);
	return 0;
}

/* ---- merge -------------------------------------------------------------------------------------- */

/* Copies, for the clusters marked in @bits, the current data of @src into @dst (zeros where @src no
 * longer holds the cluster: it was discarded meanwhile). */
static int merge_remaining(struct ploop_delta *dst, struct ploop_delta *src, const uint8_t *bits,
			   struct ploop_error *err)
{
	uint8_t *buf = malloc(src->cluster_bytes);
	int r = 0;

	if (!buf)
		return ploop_fail(err, PLOOP_ERR_MALLOC, ENOMEM, "merge");
	for (uint64_t v = 0; v < src->vclusters && !r; v++) {
		uint64_t soff, doff;
		bool have_src, have_dst;

		if (!(bits[v / 8] & (1u << (v % 8))))
			continue;
		have_src = ploop_delta_lookup(src, v, &soff);
		have_dst = ploop_delta_lookup(dst, v, &doff);
		if (!have_src && !have_dst)
			continue;
		if (have_src)
			r = pio_read(src->file, buf, src->cluster_bytes, soff);
		else
			memset(buf, 0, src->cluster_bytes);
		if (!r && !have_dst) {
			uint64_t c;

			if (ploop_delta_alloc(dst, 1, true, &c, err)) {
				r = -EIO;
				break;
			}
			doff = c * dst->cluster_bytes;
			r = pio_write(dst->file, buf, dst->cluster_bytes, doff);
			if (!r)
				ploop_delta_set_entry(dst, v, (uint32_t)c);
		} else if (!r) {
			r = pio_write(dst->file, buf, dst->cluster_bytes, doff);
		}
		dst->data_unsynced = true;
	}
	free(buf);
	if (r && !err->status)
		ploop_fail(err, ploop_write_status(r), -r, "%s: cannot merge into it", dst->path);
	return err->status ? err->status : ploop_delta_flush(dst, err);
}

/*
 * Merges the delta at level @gl into the one below it, while serving. As offline: the parent is
 * marked temporary first (a crash makes recovery redo the merge), the data goes into the parent's
 * file, then the descriptor drops the child. If the child is the top, writes go on meanwhile and
 * the clusters they touch are copied once more with I/O stopped; the parent then becomes the top.
 */
static int online_merge(struct srv *s, int gl, char survivor[PLOOP_GUID_BUF], struct ploop_error *err)
{
	struct ploop_descriptor *dd = NULL;
	struct ploop_delta *parent, *child, *dst = NULL, snap;
	uint32_t *bat_copy = NULL;
	int idx[PLOOP_MAX_CHAIN], n, a = gl - 1;
	bool is_top = gl == s->chain->depth - 1, raw;
	enum ploop_temporary was_temporary;

	if (gl < 1 || gl >= s->chain->depth)
		return ploop_fail(err, PLOOP_ERR_PARAM, 0, "nothing to merge into");
	if (read_dd(s, &dd, idx, &n, err) || ploop_merge_check(dd, idx, a, gl, err))
		goto out;
	parent = s->chain->deltas[a];
	child = s->chain->deltas[gl];
	raw = parent->raw;
	/* The parent is written: nobody else may hold it (a read-only snapshot mount would). */
	delta_unlock(parent);
	if (ploop_delta_open(parent->path, PLOOP_OPEN_RDWR | PLOOP_OPEN_ALLOW_DIRTY | (raw ? PLOOP_OPEN_RAW : 0),
			     parent->cluster_sectors, 0, &dst, err)) {
		delta_relock(parent);
		name_views(s, err);
		goto out;
	}
	/* A parent smaller than its child grows, and a BAT that needs more clusters moves the data
	 * clusters in its way, under the reads the parent serves meanwhile: that is done unmounted. */
	if (!raw && child->size_sectors > dst->size_sectors) {
		uint64_t entries = (child->size_sectors + dst->cluster_sectors - 1) / dst->cluster_sectors;

		if (ploop_bat_clusters(entries, dst->cluster_bytes) > dst->l1_size) {
			ploop_fail(err, PLOOP_ERR_BUSY, 0,
				   "%s: the parent's BAT must grow over data clusters it serves: merge it unmounted",
				   s->dd_path);
			goto out;
		}
	}
	if (is_top) {
		/* Before any data moves; discards under way finish first. */
		pthread_rwlock_wrlock(&s->io_lock);
		s->parent_stale = true;
		pthread_rwlock_unlock(&s->io_lock);
	}
	if (ploop_merge_mark(dd, idx, a, gl, &was_temporary, err))
		goto out;
	if (!raw) {
		if (ploop_delta_set_dirty(dst, true, err))
			goto out;
		dst->marked_dirty = true;
	}

	/* Pass 1, I/O going on: the child as it is now. */
	snap = *child;
	if (is_top) {
		uint8_t *bits = calloc(child->vclusters / 8 + 1, 1);

		bat_copy = malloc(((size_t)child->vclusters + 1) * sizeof(uint32_t));
		if (!bits || !bat_copy) {
			free(bits);
			ploop_fail(err, PLOOP_ERR_MALLOC, ENOMEM, "merge");
			goto out;
		}
		pthread_mutex_lock(&s->bat_lock);
		memcpy(bat_copy, child->bat, (size_t)child->vclusters * sizeof(uint32_t));
		__atomic_store_n(&s->merge_dirty, bits, __ATOMIC_RELEASE);
		pthread_mutex_unlock(&s->bat_lock);
		snap.bat = bat_copy;
	}
	{
		struct ploop_delta *src = &snap;
		uint64_t first, old_size = dst->size_sectors, old_file_size = dst->file_size;

		if (ploop_merge_prepare(dst, &src, 1, &first, err)) {
			/* Out of space before any data moved: the parent closes clean as it was and the
			 * marker goes, as offline (else every later command would redo this merge). */
			if (dst->size_sectors == old_size && dst->file_size == old_file_size) {
				int closed = ploop_delta_close(dst, &(struct ploop_error){ 0 });

				dst = NULL;
				delta_relock(parent);
				if (!closed) {
					ploop_merge_unmark(dd, idx, a, gl, &was_temporary);
					pthread_rwlock_wrlock(&s->io_lock);
					s->parent_stale = false;	/* nothing moved into it */
					pthread_rwlock_unlock(&s->io_lock);
				}
			}
			goto out;
		}
		if (ploop_merge_copy(dst, &src, 1, first, err))
			goto out;
	}

	/* Pass 2, I/O stopped: what was written meanwhile; then the chain changes. */
	pthread_rwlock_wrlock(&s->io_lock);
	if (is_top) {
		uint8_t *bits = s->merge_dirty;

		__atomic_store_n(&s->merge_dirty, NULL, __ATOMIC_RELEASE);
		if (dev_flush_locked(s) || merge_remaining(dst, child, bits, err)) {
			free(bits);
			pthread_rwlock_unlock(&s->io_lock);
			goto out;
		}
		free(bits);
	} else {
		/* The parent stays a lower delta: clean and durable before the commit, read-only after it
		 * (in place: nothing may fail once the descriptor has dropped the child). */
		if (dst->marked_dirty ? ploop_delta_set_dirty(dst, false, err) : ploop_delta_flush(dst, err)) {
			pthread_rwlock_unlock(&s->io_lock);
			goto out;
		}
		dst->marked_dirty = false;
	}
	/* Once the descriptor is stored the merge is done, even if the child's file could not be
	 * removed (or the directory synced): the chain must switch, or writes would go on into a file
	 * the descriptor no longer names. The error is still reported. */
	if (ploop_merge_commit(dd, idx, a, gl, survivor, err) && err->status != PLOOP_ERR_UNLINK &&
	    !ploop_descriptor_committed(err)) {
		pthread_rwlock_unlock(&s->io_lock);
		goto out;
	}
	/* The child's file is gone from the descriptor and the disk; close it without writing. */
	child->rw = false;
	ploop_delta_close(child, NULL);
	ploop_delta_close(parent, NULL);
	if (is_top) {
		s->prealloc_end = 0;	/* the parent, open for writing, is the top now */
		s->parent_stale = false;
	} else {
		delta_make_readonly(dst);
	}
	s->chain->deltas[a] = dst;
	dst = NULL;
	memmove(&s->chain->deltas[gl], &s->chain->deltas[gl + 1],
		(size_t)(s->chain->depth - gl - 1) * sizeof(s->chain->deltas[0]));
	s->chain->depth--;
	pthread_rwlock_unlock(&s->io_lock);
out:
	if (s->merge_dirty) {
		free(s->merge_dirty);
		s->merge_dirty = NULL;
	}
	if (dst) {
		ploop_delta_close(dst, NULL);
		delta_relock(s->chain->deltas[a]);
	}
	free(bat_copy);
	ploop_descriptor_free(dd);
	return err->status;
}

/* Level of @guid in the served chain, -1 if it is not there. */
static int level_of(struct srv *s, const char *guid, struct ploop_error *err)
{
	struct ploop_descriptor *dd = NULL;
	int idx[PLOOP_MAX_CHAIN], n, level = -1;

	if (!read_dd(s, &dd, idx, &n, err)) {
		for (int i = 0; i < n; i++)
			if (!strcmp(dd->images[idx[i]].guid, guid))
				level = i;
		if (level < 0 && ploop_descriptor_find_snapshot(dd, guid) < 0)
			ploop_fail(err, PLOOP_ERR_PARAM, 0, "%s: no snapshot %s", s->dd_path, guid);	/* 38, as offline */
	}
	ploop_descriptor_free(dd);
	return level;
}

/* "merge GUID": GUID (default: the top) into its parent; "merge-all": everything into the base. */
static int cmd_merge(struct srv *s, const char *arg, bool all, char *reply, size_t len)
{
	struct ploop_error err = { 0 };
	char g[PLOOP_GUID_BUF], survivor[PLOOP_GUID_BUF];
	int gl;

	if (s->ro || s->guid[0])
		return reply_err(reply, len, PLOOP_ERR_PARAM, "%s is mounted read-only", s->dd_path);
	if (all) {
		while (s->chain->depth > 1 && !online_merge(s, 1, survivor, &err))
			;
		return err.status ? reply_error(reply, len, &err) : (snprintf(reply, len, "ok"), 0);
	}
	if (!*arg || !strcmp(arg, "-"))
		strcpy(g, PLOOP_TOP_GUID);
	else if (ploop_parse_guid(arg, g))
		return reply_err(reply, len, PLOOP_ERR_PARAM, "'%s' is not a GUID", arg);
	gl = level_of(s, g, &err);
	if (err.status)
		return reply_error(reply, len, &err);
	if (gl < 0)
		return reply_err(reply, len, PLOOP_ERR_PARAM, "%s: %s is not in the mounted chain (unmount to merge it)",
				 s->dd_path, g);
	if (gl == 0)
		return reply_err(reply, len, PLOOP_ERR_PARAM, "%s: %s is the base image; it has no parent to merge into",
				 s->dd_path, g);
	if (online_merge(s, gl, survivor, &err))
		return reply_error(reply, len, &err);
	slog("merged %s into its parent", g);
	snprintf(reply, len, "ok %s", survivor);
	return 0;
}

/* Removes leaf snapshot @g, which the server does not serve: its entry, then its file (as offline;
 * nobody may hold the file: a read-only view of it would). */
static int delete_unserved_leaf(struct srv *s, struct ploop_descriptor *dd, const char *g, struct ploop_error *err)
{
	int im = ploop_descriptor_find_image(dd, g);
	struct ploop_delta *d = NULL;
	char *path = strdup(dd->images[im].path);

	if (!path)
		return ploop_fail(err, PLOOP_ERR_MALLOC, ENOMEM, "%s", s->dd_path);
	if (!ploop_delta_open(path, PLOOP_OPEN_RDWR | PLOOP_OPEN_HEADER_ONLY | PLOOP_OPEN_ALLOW_DIRTY |
				      (ploop_descriptor_raw_image(dd, im) ? PLOOP_OPEN_RAW : 0),
			      dd->blocksize, 0, &d, err)) {
		ploop_descriptor_remove_image(dd, g);
		if (!ploop_descriptor_store(dd, err) || ploop_descriptor_committed(err))
			ploop_unlink_file(path, err);
		d->rw = false;	/* (only opened to hold its lock meanwhile) */
		ploop_delta_close(d, NULL);
	}
	name_views(s, err);
	free(path);
	return err->status;
}

/*
 * "delete GUID", as offline: a snapshot with two or more children is marked temporary (merged once
 * one is left); a leaf the server does not serve is removed; a snapshot of the served chain goes by
 * merging its only child into it. What cannot be done while mounted -- the running top, a snapshot
 * outside the served chain with one child -- is refused.
 */
static int cmd_delete(struct srv *s, const char *arg, char *reply, size_t len)
{
	struct ploop_error err = { 0 };
	struct ploop_descriptor *dd = NULL;
	char g[PLOOP_GUID_BUF], survivor[PLOOP_GUID_BUF];
	int idx[PLOOP_MAX_CHAIN], n, sn, children, gl = -1;

	if (s->ro || s->guid[0])
		return reply_err(reply, len, PLOOP_ERR_PARAM, "%s is mounted read-only", s->dd_path);
	if (ploop_parse_guid(arg, g))
		return reply_err(reply, len, PLOOP_ERR_PARAM, "'%s' is not a GUID", arg);
	if (read_dd(s, &dd, idx, &n, &err))
		goto out;
	sn = ploop_descriptor_find_snapshot(dd, g);
	if (sn < 0) {
		ploop_fail(&err, PLOOP_ERR_NOSNAP, 0, "%s: no snapshot %s", s->dd_path, g);
		goto out;
	}
	for (int i = 0; i < n; i++)
		if (!strcmp(dd->images[idx[i]].guid, g))
			gl = i;
	children = ploop_descriptor_children(dd, g, NULL);
	if (children > 1 && dd->snapshots[sn].temporary) {
		ploop_fail(&err, PLOOP_ERR_CREAT, 0, "%s: snapshot %s is already marked temporary: it is merged when "
			   "only one of its %d children is left", s->dd_path, g, children);	/* 1.15 exits 1 */
	} else if (children > 1) {
		/* As upstream: deleted once all but one of its children are gone. */
		dd->snapshots[sn].temporary = PLOOP_TEMP;
		if (!ploop_descriptor_store(dd, &err))
			snprintf(reply, len, "ok temporary %d", children);
	} else if (gl == n - 1) {
		ploop_fail(&err, PLOOP_ERR_PARAM, 0, "%s: %s is the running top; it cannot be deleted", s->dd_path, g);
	} else if (gl >= 0) {
		if (!online_merge(s, gl + 1, survivor, &err))
			snprintf(reply, len, "ok");
	} else if (!strcmp(dd->snapshots[sn].parent, PLOOP_NONE_GUID)) {
		ploop_fail(&err, PLOOP_ERR_PARAM, 0, "%s: unable to delete the base image %s", s->dd_path, g);
	} else if (children == 0) {
		if (!delete_unserved_leaf(s, dd, g, &err))
			snprintf(reply, len, "ok");
	} else {
		ploop_fail(&err, PLOOP_ERR_BUSY, 0,
			   "%s: %s is outside the mounted chain and has a child to merge into it; unmount to delete it",
			   s->dd_path, g);
	}
out:
	ploop_descriptor_free(dd);
	if (err.status)
		return reply_error(reply, len, &err);
	slog("deleted %s: %s", g, reply);
	return 0;
}

/* ---- resize ------------------------------------------------------------------------------------- */

/* Grows the disk (the filesystem is grown by the caller, which also rewrites the partition table). */
static int cmd_resize(struct srv *s, const char *arg, char *reply, size_t len)
{
	struct ploop_error err = { 0 };
	struct ploop_descriptor *dd = NULL;
	int idx[PLOOP_MAX_CHAIN], n;
	char *end;
	uint64_t size = strtoull(arg, &end, 10);

	if (s->ro || s->guid[0])
		return reply_err(reply, len, PLOOP_ERR_PARAM, "%s is mounted read-only", s->dd_path);
	if (!*arg || *end || !size)
		return reply_err(reply, len, PLOOP_ERR_PARAM, "resize: invalid size '%s'", arg);
	size = (size + s->cs / 512 - 1) / (s->cs / 512) * (s->cs / 512);
	if (size * 512 < s->size)
		return reply_err(reply, len, PLOOP_ERR_PARAM, "%s: shrinking needs the image unmounted", s->dd_path);
	if (size * 512 == s->size) {
		snprintf(reply, len, "ok %" PRIu64, size);
		return 0;
	}
	pthread_rwlock_wrlock(&s->io_lock);
	/* The preallocated tail goes first: the grown top allocates (and preallocates) anew from its
	 * last cluster, and nothing would ever truncate a tail it forgot. */
	if (dev_flush_locked(s) || dev_trim_tail(s))
		ploop_fail(&err, PLOOP_ERR_FSYNC, EIO, "cannot flush");
	else if (!read_dd(s, &dd, idx, &n, &err) && !ploop_delta_grow(top_delta(s), size, &err)) {
		set_disk_size(dd, size);
		if (!ploop_descriptor_store(dd, &err)) {
			s->size = size * 512;
			s->chain->size_bytes = s->size;
			s->prealloc_end = 0;
		}
	}
	pthread_rwlock_unlock(&s->io_lock);
	ploop_descriptor_free(dd);
	if (err.status)
		return reply_error(reply, len, &err);
	if (fuse_size_changed(s))
		return reply_err(reply, len, PLOOP_ERR_DEVICE, "%s: the kernel did not take the new size", s->disk_path);
	if (loop_set_size(s->device, 0, 0))
		return reply_err(reply, len, PLOOP_ERR_DEVICE, "%s: cannot set the new capacity", s->device);
	slog("grown to %" PRIu64 " sectors", size);
	snprintf(reply, len, "ok %" PRIu64, size);
	return 0;
}

/* ---- compact ------------------------------------------------------------------------------------ */

/* Moves the clusters at the end of the top into the holes discards left, then truncates the file
 * (ploop_delta_compact, with I/O stopped). */
static int cmd_compact(struct srv *s, char *reply, size_t len)
{
	struct ploop_delta *top = top_delta(s);
	struct ploop_error err = { 0 };
	uint64_t before, moved = 0;

	if (s->ro || s->guid[0] || top->raw)
		return reply_err(reply, len, PLOOP_ERR_PARAM, "%s: nothing to compact (read-only or raw)", s->dd_path);
	pthread_rwlock_wrlock(&s->io_lock);
	if (dev_flush_locked(s) || dev_trim_tail(s))
		ploop_fail(&err, PLOOP_ERR_FSYNC, EIO, "%s: cannot flush", top->path);
	before = top->file_size;
	if (!err.status)
		ploop_delta_compact(top, &moved, &err);
	s->prealloc_end = top->alloc_head;
	pthread_rwlock_unlock(&s->io_lock);
	if (err.status)
		return reply_error(reply, len, &err);
	slog("compact: moved %" PRIu64 " clusters, file %" PRIu64 " -> %" PRIu64 " bytes", moved, before,
	     top->file_size);
	snprintf(reply, len, "ok moved=%" PRIu64 " before=%" PRIu64 " after=%" PRIu64, moved, before, top->file_size);
	return 0;
}

int online_command(struct srv *s, char *line, char *reply, size_t len)
{
	char *args = strchr(line, ' ');
	int r;

	if (args)
		*args++ = '\0';
	else
		args = "";
	slog("command: %s %s", line, args);
	if (!strcmp(line, "status"))
		return cmd_status(s, reply, len);
	if (!strcmp(line, "stop"))
		return cmd_stop(s, reply, len);
	/* Each of these acts on the descriptor: the one of the chain served, wherever it is now
	 * (followed here, before the command takes the I/O lock the adoption of new paths takes). */
	if (!strcmp(line, "snapshot") || !strcmp(line, "merge") || !strcmp(line, "merge-all") ||
	    !strcmp(line, "delete") || !strcmp(line, "resize")) {
		struct ploop_error err = { 0 };

		if (!s->ro && !s->guid[0] && follow_descriptor(s, &err))
			return reply_error(reply, len, &err);
	}
	if (!strcmp(line, "snapshot"))
		return cmd_snapshot(s, args, reply, len);
	if (!strcmp(line, "merge"))
		return cmd_merge(s, args, false, reply, len);
	if (!strcmp(line, "merge-all"))
		return cmd_merge(s, args, true, reply, len);
	if (!strcmp(line, "delete"))
		return cmd_delete(s, args, reply, len);
	if (!strcmp(line, "resize"))
		return cmd_resize(s, args, reply, len);
	if (!strcmp(line, "compact"))
		return cmd_compact(s, reply, len);
	if (!strcmp(line, "partition")) {
		char msg[512];

		if (server_attach_partition(s, msg, sizeof(msg)))
			return reply_err(reply, len, PLOOP_ERR_LOOP, "%s", msg);
		server_write_state(s);
		snprintf(reply, len, "ok %s", s->part);
		return 0;
	}
	/* A client unmounted the filesystem and could not mount it again (a resize without
	 * CAP_SYS_RESOURCE on a full host): the state, and `ploop list`, no longer name a mount point
	 * where nothing of ours is mounted. */
	if (!strcmp(line, "unmounted")) {
		if (s->mount_dir[0] && !ploop_fs_shows_device(s->mount_dir, s->part) &&
		    !ploop_fs_shows_device(s->mount_dir, s->device)) {
			slog("%s: the filesystem is no longer mounted there", s->mount_dir);
			s->mount_dir[0] = '\0';
			server_write_state(s);
		}
		snprintf(reply, len, "ok");
		return 0;
	}
	if (!strcmp(line, "flush")) {
		r = dev_flush(s);
		if (r)
			return reply_err(reply, len, PLOOP_ERR_FSYNC, "flush: %s", strerror(-r));
		snprintf(reply, len, "ok");
		return 0;
	}
	return reply_err(reply, len, PLOOP_ERR_PARAM, "unknown command '%.100s'", line);
}
