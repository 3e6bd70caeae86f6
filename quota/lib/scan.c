/* The usage walk (section 1.6): every object of the tree once (hard links once), allocated bytes
 * (st_blocks * 512: FIOQSIZE does not exist on a stock kernel for every fs), one inode each, and
 * never into another mount (a different mount id, which also catches bind mounts of the same fs). */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

struct inode_set {
	uint64_t *slots;	/* inode + 1; 0 = empty */
	size_t cap, used;
};

/* Adds @ino; returns 1 if it was new, 0 if seen, -1 out of memory. */
static int set_add(struct inode_set *s, uint64_t ino)
{
	uint64_t key = ino + 1;

	if (s->used * 2 >= s->cap) {
		size_t ncap = s->cap ? s->cap * 2 : 1024;
		uint64_t *n = calloc(ncap, sizeof(*n));
		if (!n)
			return -1;
		for (size_t i = 0; i < s->cap; i++) {
			if (!s->slots[i])
				continue;
			size_t j = (s->slots[i] * 0x9E3779B97F4A7C15ull) & (ncap - 1);
			while (n[j])
				j = (j + 1) & (ncap - 1);
			n[j] = s->slots[i];
		}
		free(s->slots);
		s->slots = n;
		s->cap = ncap;
	}
	size_t j = (key * 0x9E3779B97F4A7C15ull) & (s->cap - 1);
	while (s->slots[j]) {
		if (s->slots[j] == key)
			return 0;
		j = (j + 1) & (s->cap - 1);
	}
	s->slots[j] = key;
	s->used++;
	return 1;
}

struct walk {
	const char *root;
	uint64_t dev_major, dev_minor, mnt_id;
	bool have_mnt_id, ugid;
	struct inode_set links;
	struct vzq_quota *q;
	uint64_t bytes, inodes;
	struct vzq_error *err;
};

static int account(struct walk *w, const struct statx *st)
{
	uint64_t bytes = st->stx_blocks * 512;

	if (!S_ISDIR(st->stx_mode) && st->stx_nlink > 1) {
		int r = set_add(&w->links, st->stx_ino);
		if (r < 0)
			return vzq_fail(w->err, VZQ_ERR_SYS, ENOMEM, "%s: hard link table", w->root);
		if (r == 0)
			return 0;
	}
	w->bytes += bytes;
	w->inodes++;
	if (!w->ugid)
		return 0;
	/* one record at a time: adding one may move the others */
	for (uint32_t type = VZQ_USER; type <= VZQ_GROUP; type++) {
		struct vzq_ugid *u;

		if (vzq_ugid_add(w->q, type, type == VZQ_USER ? st->stx_uid : st->stx_gid, &u))
			return vzq_fail(w->err, VZQ_ERR_SYS, ENOMEM, "%s: uid/gid record", w->root);
		if (u) {	/* else over the ugid limit: not counted at the second level */
			u->stat.bcurrent += bytes;
			u->stat.icurrent++;
		}
	}
	return 0;
}

static int do_statx(int dirfd, const char *name, int flags, struct statx *st)
{
	return statx(dirfd, name, flags | AT_NO_AUTOMOUNT, STATX_BASIC_STATS | STATX_MNT_ID, st);
}

/*
 * The walk holds one directory open at a time and recurses on a heap stack, so no depth a tree
 * can reach (a container can nest directories without end) runs out of descriptors or stack:
 * each directory's names are read whole, then it is closed; a child is opened from it, and the
 * walk climbs back through "..", checked to be the directory it came from.
 */
struct frame {
	char **names;		/* entries not yet visited (read whole when the directory was entered) */
	size_t n, next;
	uint64_t ino, dev_major, dev_minor;	/* the directory itself, to check ".." against */
	char *rel;		/* its path under the root, for messages */
};

static void frame_free(struct frame *f)
{
	for (size_t i = f->next; i < f->n; i++)
		free(f->names[i]);
	free(f->names);
	free(f->rel);
}

/* Reads the names of directory @fd (not taken over) into @f. */
static int read_names(struct walk *w, int fd, struct frame *f)
{
	int dup_fd = dup(fd);
	DIR *d = dup_fd < 0 ? NULL : fdopendir(dup_fd);
	struct dirent *de;
	size_t cap = 0;
	int rc = 0;

	if (!d) {
		if (dup_fd >= 0)
			close(dup_fd);
		return vzq_fail(w->err, VZQ_ERR_SYS, errno, "%s/%s", w->root, f->rel);
	}
	for (;;) {
		errno = 0;
		de = readdir(d);
		if (!de) {
			if (errno)
				rc = vzq_fail(w->err, VZQ_ERR_SYS, errno, "%s/%s: readdir", w->root, f->rel);
			break;
		}
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (f->n == cap) {
			char **nn = realloc(f->names, (cap = cap ? cap * 2 : 16) * sizeof(*nn));

			if (!nn) {
				rc = vzq_fail(w->err, VZQ_ERR_SYS, ENOMEM, "%s", w->root);
				break;
			}
			f->names = nn;
		}
		if (!(f->names[f->n] = strdup(de->d_name))) {
			rc = vzq_fail(w->err, VZQ_ERR_SYS, ENOMEM, "%s", w->root);
			break;
		}
		f->n++;
	}
	closedir(d);
	return rc;
}

/* Enters directory @fd (whose statx is @st, path @rel, taken over) as a new frame on @stack. */
static int push_dir(struct walk *w, struct frame **stack, size_t *depth, size_t *cap, int fd,
		    const struct statx *st, char *rel)
{
	struct frame *f;

	if (*depth == *cap) {
		struct frame *ns = realloc(*stack, (*cap = *cap ? *cap * 2 : 64) * sizeof(*ns));

		if (!ns) {
			free(rel);
			return vzq_fail(w->err, VZQ_ERR_SYS, ENOMEM, "%s", w->root);
		}
		*stack = ns;
	}
	f = &(*stack)[(*depth)++];
	*f = (struct frame){ .ino = st->stx_ino, .dev_major = st->stx_dev_major, .dev_minor = st->stx_dev_minor,
			     .rel = rel };
	return read_names(w, fd, f);
}

/* @fd: the root directory (taken over). */
static int walk_tree(struct walk *w, int fd, const struct statx *root_st)
{
	struct frame *stack = NULL;
	size_t depth = 0, cap = 0;
	char *rel = strdup("");
	int rc = rel ? push_dir(w, &stack, &depth, &cap, fd, root_st, rel)
		     : vzq_fail(w->err, VZQ_ERR_SYS, ENOMEM, "%s", w->root);

	while (!rc && depth) {
		struct frame *f = &stack[depth - 1];
		struct statx st;

		if (f->next == f->n) {
			/* done here: back to the parent, which must be the directory we came from */
			frame_free(f);
			if (--depth == 0)
				break;
			struct frame *up = &stack[depth - 1];
			int parent = openat(fd, "..", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

			if (parent < 0 || do_statx(parent, "", AT_EMPTY_PATH, &st) < 0 || st.stx_ino != up->ino ||
			    st.stx_dev_major != up->dev_major || st.stx_dev_minor != up->dev_minor) {
				rc = vzq_fail(w->err, VZQ_ERR_SYS, parent < 0 ? errno : ESTALE,
					      "%s/%s: the tree was moved while it was counted", w->root, up->rel);
				if (parent >= 0)
					close(parent);
				break;
			}
			close(fd);
			fd = parent;
			continue;
		}
		char *name = f->names[f->next++];

		if (do_statx(fd, name, AT_SYMLINK_NOFOLLOW, &st) < 0) {
			if (errno != ENOENT)	/* else removed while we walk */
				rc = vzq_fail(w->err, VZQ_ERR_SYS, errno, "%s/%s%s%s", w->root, f->rel,
					      *f->rel ? "/" : "", name);
			free(name);
			continue;
		}
		if (st.stx_dev_major != w->dev_major || st.stx_dev_minor != w->dev_minor ||
		    (w->have_mnt_id && (st.stx_mask & STATX_MNT_ID) && st.stx_mnt_id != w->mnt_id)) {
			rc = vzq_fail(w->err, VZQ_ERR_MOUNTPOINT, 0, "%s: crossing mount point at %s/%s%s%s", w->root,
				      w->root, f->rel, *f->rel ? "/" : "", name);
			free(name);
			break;
		}
		rc = account(w, &st);
		if (rc || !S_ISDIR(st.stx_mode)) {
			free(name);
			continue;
		}
		int sub = openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		char *path = NULL;

		if (sub < 0) {
			if (errno != ENOENT)
				rc = vzq_fail(w->err, VZQ_ERR_SYS, errno, "%s/%s%s%s", w->root, f->rel,
					      *f->rel ? "/" : "", name);
			free(name);
			continue;
		}
		if (asprintf(&path, "%s%s%s", f->rel, *f->rel ? "/" : "", name) < 0) {
			close(sub);
			free(name);
			rc = vzq_fail(w->err, VZQ_ERR_SYS, ENOMEM, "%s", w->root);
			break;
		}
		free(name);
		/* the directory we enter is the one we counted (not swapped meanwhile) */
		struct statx sst;

		if (do_statx(sub, "", AT_EMPTY_PATH, &sst) < 0 || sst.stx_ino != st.stx_ino) {
			close(sub);
			rc = vzq_fail(w->err, VZQ_ERR_SYS, ESTALE, "%s/%s: the tree was moved while it was counted",
				      w->root, path);
			free(path);
			break;
		}
		close(fd);
		fd = sub;
		rc = push_dir(w, &stack, &depth, &cap, fd, &st, path);
	}
	while (depth)
		frame_free(&stack[--depth]);
	free(stack);
	close(fd);
	return rc;
}

/* The root of a tree, followed if a symlink; missing or not a directory: VZQ_ERR_NOPATH. */
static int open_tree(const char *path, struct vzq_error *err)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0)
		vzq_fail(err, errno == ENOENT || errno == ENOTDIR ? VZQ_ERR_NOPATH : VZQ_ERR_SYS, errno, "%s", path);
	return fd;
}

int vzq_check_tree(const char *path, struct vzq_error *err)
{
	int fd = open_tree(path, err);

	if (fd < 0)
		return err->status;
	close(fd);
	return 0;
}

/* The records a count starts from: @q's with their usage zeroed, those left with nothing (no
 * limits) dropped, every id given room again (UGID_OVER cleared). A copy, so that a count that
 * fails leaves @q as it was. */
static int scratch_records(const struct vzq_quota *q, struct vzq_quota *s, struct vzq_error *err)
{
	*s = (struct vzq_quota){ .id = q->id, .flags = q->flags & ~VZQ_FLAG_UGID_OVER, .ugid_limit = q->ugid_limit };
	if (!q->n_ugid)
		return 0;
	s->ugid = malloc(q->n_ugid * sizeof(*s->ugid));
	if (!s->ugid)
		return vzq_fail(err, VZQ_ERR_SYS, ENOMEM, "uid/gid records");
	memcpy(s->ugid, q->ugid, q->n_ugid * sizeof(*s->ugid));
	s->n_ugid = s->ugid_cap = q->n_ugid;
	for (size_t i = 0; i < s->n_ugid; i++) {
		s->ugid[i].stat.bcurrent = 0;
		s->ugid[i].stat.icurrent = 0;
	}
	vzq_ugid_prune(s);
	return 0;
}

int vzq_scan(const char *path, struct vzq_quota *q, time_t now, struct vzq_error *err)
{
	/* the second level is counted into @counted, and replaces @q's only if the whole walk
	 * succeeded: a caller that goes on after a failure (vzquota off writes the file, marked
	 * dirty) must not keep records zeroed or dropped half way */
	struct vzq_quota counted = { 0 };
	struct walk w = { .root = path, .q = &counted, .err = err, .ugid = (q->flags & VZQ_FLAG_UGID_ON) != 0 };
	struct statx st;
	int fd, rc;

	if (!path || !*path)
		return vzq_fail(err, VZQ_ERR_NOPATH, 0, "quota %u: no tree path known (-p)", q->id);
	fd = open_tree(path, err);
	if (fd < 0)
		return err->status;
	/* What the page cache holds is counted as the host will store it: ext4 reserves the blocks of
	 * delayed data in st_blocks, but allocates the index blocks of a file's extents only when it
	 * writes the data, and nothing charges those later (upstream forces the allocation,
	 * EXT4_IOC_ALLOC_DA_BLKS, file by file; one syncfs of the tree's filesystem does it for all).
	 * A writeback error it reports is some file's, not the count's: counted as it is. */
	(void)syncfs(fd);
	if (do_statx(fd, "", AT_EMPTY_PATH, &st) < 0) {
		close(fd);
		return vzq_fail(err, VZQ_ERR_SYS, errno, "%s", path);
	}
	w.dev_major = st.stx_dev_major;
	w.dev_minor = st.stx_dev_minor;
	w.have_mnt_id = (st.stx_mask & STATX_MNT_ID) != 0;
	w.mnt_id = st.stx_mnt_id;
	/* counted from scratch: only records with limits stay, and every id may get room */
	if (w.ugid && scratch_records(q, &counted, err)) {
		close(fd);
		return err->status;
	}
	rc = account(&w, &st);
	if (rc) {
		close(fd);
		free(w.links.slots);
		vzq_quota_free(&counted);
		return rc;
	}
	rc = walk_tree(&w, fd, &st);
	free(w.links.slots);
	if (rc) {
		vzq_quota_free(&counted);
		return rc;
	}
	q->stat.bcurrent = w.bytes;
	q->stat.icurrent = w.inodes;
	q->flags &= ~VZQ_FLAG_DIRTY;
	if (w.ugid) {
		for (size_t i = 0; i < counted.n_ugid; i++)
			counted.ugid[i].flags &= ~VZQ_UGID_DIRTY;
		/* records that have neither usage nor limits are dropped (as vzquota does) */
		vzq_ugid_prune(&counted);
		vzq_ugid_index_free(q);
		free(q->ugid);
		q->ugid = counted.ugid;
		q->n_ugid = counted.n_ugid;
		q->ugid_cap = counted.ugid_cap;
		q->ugid_index = counted.ugid_index;
		q->flags = (q->flags & ~VZQ_FLAG_UGID_OVER) | (counted.flags & VZQ_FLAG_UGID_OVER);
	} else {
		vzq_ugid_prune(q);
	}
	vzq_update_grace(q, now);
	return 0;
}
