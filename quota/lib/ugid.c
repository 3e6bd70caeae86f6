/* The second-level (uid/gid) records of a quota: a hash index over the record array, so that a
 * lookup, an insert and a removal cost O(1) whatever the number of records, the cap of ugid_limit
 * on new records, and the dropping of records that hold neither usage nor limits. */
#include "../quota_format.h"
#include "internal.h"

struct vzq_ugid_index {
	const struct vzq_ugid *base;	/* the array it was built for, */
	size_t n;			/* and its length: another means a stale index */
	size_t mask;			/* slots - 1; slots a power of two, more than twice n */
	uint32_t *slot;			/* record index + 1; 0 = empty */
};

static size_t hash(const struct vzq_ugid_index *x, uint32_t type, uint32_t id)
{
	uint64_t key = ((uint64_t)type << 32 | id) * 0x9E3779B97F4A7C15ull;

	return (size_t)(key >> 32) & x->mask;
}

void vzq_ugid_index_free(struct vzq_quota *q)
{
	if (!q->ugid_index)
		return;
	free(q->ugid_index->slot);
	free(q->ugid_index);
	q->ugid_index = NULL;
}

static void index_put(struct vzq_ugid_index *x, const struct vzq_ugid *base, size_t i)
{
	size_t j = hash(x, base[i].type, base[i].id);

	while (x->slot[j])
		j = (j + 1) & x->mask;
	x->slot[j] = (uint32_t)i + 1;
}

/* The index of @q, (re)built for @want records when missing, stale or too small; NULL without
 * memory (lookups then fall back to a linear search). */
static struct vzq_ugid_index *index_of(struct vzq_quota *q, size_t want)
{
	struct vzq_ugid_index *x = q->ugid_index;
	size_t slots = 64;

	if (x && x->base == q->ugid && x->n == q->n_ugid && want * 2 < x->mask + 1)
		return x;
	while (slots <= want * 2)
		slots *= 2;
	if (!x) {
		x = calloc(1, sizeof(*x));
		if (!x)
			return NULL;
		q->ugid_index = x;
	}
	if (!x->slot || x->mask + 1 != slots) {
		free(x->slot);
		x->slot = malloc(slots * sizeof(*x->slot));
		if (!x->slot) {
			vzq_ugid_index_free(q);
			return NULL;
		}
		x->mask = slots - 1;
	}
	memset(x->slot, 0, slots * sizeof(*x->slot));
	for (size_t i = 0; i < q->n_ugid; i++)
		index_put(x, q->ugid, i);
	x->base = q->ugid;
	x->n = q->n_ugid;
	return x;
}

/* The slot of (type, id) in @x, or of the empty slot where it would go. */
static size_t index_find(const struct vzq_ugid_index *x, const struct vzq_ugid *base, uint32_t type, uint32_t id)
{
	size_t j = hash(x, type, id);

	while (x->slot[j]) {
		const struct vzq_ugid *u = &base[x->slot[j] - 1];

		if (u->type == type && u->id == id)
			break;
		j = (j + 1) & x->mask;
	}
	return j;
}

struct vzq_ugid *vzq_ugid_get(struct vzq_quota *q, uint32_t type, uint32_t id, bool create, struct vzq_error *err)
{
	struct vzq_ugid_index *x = index_of(q, q->n_ugid + (create ? 1 : 0));
	struct vzq_ugid *n;

	if (x) {
		size_t j = index_find(x, q->ugid, type, id);

		if (x->slot[j])
			return &q->ugid[x->slot[j] - 1];
	} else {
		for (size_t i = 0; i < q->n_ugid; i++)
			if (q->ugid[i].type == type && q->ugid[i].id == id)
				return &q->ugid[i];
	}
	if (!create)
		return NULL;
	if (type > VZQ_GROUP) {
		vzq_fail(err, VZQ_ERR_INTERNAL, 0, "bad record type %u", type);
		return NULL;
	}
	if (!x || q->n_ugid >= VZQF_MAX_UGID) {
		vzq_fail(err, VZQ_ERR_SYS, ENOMEM, "uid/gid record");
		return NULL;
	}
	/* The table grows to the next power of two (at least 16) when full: a realloc per record
	 * would copy it every time where realloc never works in place (under ASan: 200,000 adds
	 * and removes of 4,096 ids took minutes). */
	if (q->n_ugid + 1 > q->ugid_cap) {
		size_t want = 16;

		while (want < q->n_ugid + 1)
			want *= 2;
		n = realloc(q->ugid, want * sizeof(*n));
		if (!n) {
			vzq_fail(err, VZQ_ERR_SYS, ENOMEM, "uid/gid record");
			return NULL;
		}
		q->ugid = n;
		q->ugid_cap = want;
	}
	n = q->ugid;
	memset(&n[q->n_ugid], 0, sizeof(*n));
	n[q->n_ugid].type = type;
	n[q->n_ugid].id = id;
	index_put(x, n, q->n_ugid);
	q->n_ugid++;
	x->base = n;
	x->n = q->n_ugid;
	return &n[q->n_ugid - 1];
}

int vzq_ugid_add(struct vzq_quota *q, uint32_t type, uint32_t id, struct vzq_ugid **out)
{
	struct vzq_error err = { 0 };

	*out = vzq_ugid_get(q, type, id, false, NULL);
	if (*out)
		return 0;
	/* A refused id may hold usage nobody counts: a record made for it later would start from
	 * zero. Until the next count, no id gets one (the kernel's FIXED_SET). */
	if (q->n_ugid >= q->ugid_limit || (q->flags & VZQ_FLAG_UGID_OVER)) {
		q->flags |= VZQ_FLAG_UGID_OVER;
		return 0;
	}
	*out = vzq_ugid_get(q, type, id, true, &err);
	return *out ? 0 : -ENOMEM;
}

bool vzq_ugid_unused(const struct vzq_ugid *u)
{
	const struct vzq_stat *s = &u->stat;

	return !s->bcurrent && !s->icurrent && !s->bsoft && !s->bhard && !s->isoft && !s->ihard;
}

void vzq_ugid_remove(struct vzq_quota *q, struct vzq_ugid *u)
{
	struct vzq_ugid_index *x = index_of(q, q->n_ugid);
	size_t i = (size_t)(u - q->ugid), last = q->n_ugid - 1;

	if (!x) {
		/* no memory for an index: keep the array whole, order does not matter */
		q->ugid[i] = q->ugid[last];
		q->n_ugid--;
		return;
	}
	/* Linear probing: empty the slot, then move back every entry of the run after it that its
	 * hash places at or before the hole (backward-shift deletion: no tombstones). */
	size_t hole = index_find(x, q->ugid, u->type, u->id), j = hole;

	x->slot[hole] = 0;
	for (;;) {
		j = (j + 1) & x->mask;
		if (!x->slot[j])
			break;
		const struct vzq_ugid *v = &q->ugid[x->slot[j] - 1];
		size_t home = hash(x, v->type, v->id);

		if (((j - home) & x->mask) >= ((j - hole) & x->mask)) {
			x->slot[hole] = x->slot[j];
			x->slot[j] = 0;
			hole = j;
		}
	}
	/* the last record takes the removed one's place */
	if (i != last) {
		x->slot[index_find(x, q->ugid, q->ugid[last].type, q->ugid[last].id)] = (uint32_t)i + 1;
		q->ugid[i] = q->ugid[last];
	}
	q->n_ugid--;
	x->n = q->n_ugid;
}

void vzq_ugid_prune(struct vzq_quota *q)
{
	size_t keep = 0;

	for (size_t i = 0; i < q->n_ugid; i++)
		if (!vzq_ugid_unused(&q->ugid[i]))
			q->ugid[keep++] = q->ugid[i];
	if (keep != q->n_ugid) {
		q->n_ugid = keep;
		vzq_ugid_index_free(q);
	}
}

static int ugid_sort_cmp(const void *a, const void *b)
{
	const struct vzq_ugid *x = a, *y = b;

	return vzq_ugid_cmp(x->type, x->id, y->type, y->id);
}

void vzq_ugid_sort(struct vzq_quota *q)
{
	if (q->n_ugid > 1)
		qsort(q->ugid, q->n_ugid, sizeof(*q->ugid), ugid_sort_cmp);
	vzq_ugid_index_free(q);
}
