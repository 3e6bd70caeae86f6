/* The limit rules of the OpenVZ kernel (section 1.7 of the userspace reference): hard limits
 * refuse, soft limits start a grace period and refuse once it has expired. The first level counts
 * a zero limit as zero; the second level (uid/gid records) as no limit. */
#include "internal.h"

static uint64_t add_clamped(uint64_t cur, int64_t delta)
{
	if (delta >= 0)
		return cur + (uint64_t)delta < cur ? UINT64_MAX : cur + (uint64_t)delta;
	return (uint64_t)-delta > cur ? 0 : cur - (uint64_t)-delta;
}

/* Over soft: first level always compares; the second only with a non-zero soft limit. */
static bool over(uint64_t cur, uint64_t soft, bool zero_unlimited)
{
	if (zero_unlimited && soft == 0)
		return false;
	return cur > soft;
}

static void grace_one(uint64_t cur, uint64_t soft, int64_t *end, int64_t expire, bool zero_unlimited, time_t now)
{
	if (!over(cur, soft, zero_unlimited))
		*end = 0;
	else if (*end == 0)
		*end = expire > INT64_MAX - (int64_t)now ? INT64_MAX : (int64_t)now + expire;	/* no overflow */
}

static void grace_stat(struct vzq_stat *s, const struct vzq_grace *g, bool zero_unlimited, time_t now)
{
	grace_one(s->bcurrent, s->bsoft, &s->btime, g->bexpire, zero_unlimited, now);
	grace_one(s->icurrent, s->isoft, &s->itime, g->iexpire, zero_unlimited, now);
}

void vzq_update_grace(struct vzq_quota *q, time_t now)
{
	grace_stat(&q->stat, &q->grace, false, now);
	for (size_t i = 0; i < q->n_ugid; i++) {
		struct vzq_ugid *u = &q->ugid[i];
		grace_stat(&u->stat, &q->ugid_grace[u->type & 1], true, now);
	}
}

/* One resource of one object: may @cur grow by @req? (@hard_only: under the hard limit is enough.) */
static bool allowed(uint64_t cur, int64_t req, uint64_t soft, uint64_t hard, int64_t end, bool zero_unlimited,
		    bool hard_only, time_t now)
{
	uint64_t want;

	if (req <= 0)
		return true;
	want = add_clamped(cur, req);
	if (!(zero_unlimited && hard == 0) && want > hard)
		return false;
	if (!hard_only && over(want, soft, zero_unlimited) && end != 0 && now >= end)
		return false;	/* grace expired; no end yet: the charge starts it */
	return true;
}

static bool stat_allows(const struct vzq_stat *s, const struct vzq_charge *c, bool zero_unlimited, bool hard_only,
			time_t now)
{
	return allowed(s->bcurrent, c->bytes, s->bsoft, s->bhard, s->btime, zero_unlimited, hard_only, now) &&
	       allowed(s->icurrent, c->inodes, s->isoft, s->ihard, s->itime, zero_unlimited, hard_only, now);
}

static struct vzq_ugid *find(const struct vzq_quota *q, uint32_t type, uint32_t id)
{
	return vzq_ugid_get((struct vzq_quota *)q, type, id, false, NULL);
}

static int check(const struct vzq_quota *q, const struct vzq_charge *c, bool level1, bool hard_only, time_t now)
{
	if (level1 && !stat_allows(&q->stat, c, false, hard_only, now))
		return -EDQUOT;
	if (q->flags & VZQ_FLAG_UGID_ON) {
		const struct vzq_ugid *u = find(q, VZQ_USER, c->uid);
		const struct vzq_ugid *g = find(q, VZQ_GROUP, c->gid);

		/* An absent record has no limits. */
		if (u && !stat_allows(&u->stat, c, true, hard_only, now))
			return -EDQUOT;
		if (g && !stat_allows(&g->stat, c, true, hard_only, now))
			return -EDQUOT;
	}
	return 0;
}

int vzq_check(const struct vzq_quota *q, const struct vzq_charge *c, time_t now)
{
	return check(q, c, true, false, now);
}

int vzq_check_hard(const struct vzq_quota *q, const struct vzq_charge *c)
{
	return check(q, c, true, true, 0);
}

static void charge_stat(struct vzq_stat *s, const struct vzq_charge *c, const struct vzq_grace *g,
			bool zero_unlimited, time_t now)
{
	s->bcurrent = add_clamped(s->bcurrent, c->bytes);
	s->icurrent = add_clamped(s->icurrent, c->inodes);
	grace_stat(s, g, zero_unlimited, now);
}

/* Charges @c to the record of (type, id); one that holds nothing afterwards is dropped. A charge
 * that adds usage creates the record if the limit leaves room (vzq_ugid_add); a free of an id
 * without a record has nothing to free (its usage was not counted). */
static int charge_record(struct vzq_quota *q, uint32_t type, uint32_t id, const struct vzq_charge *c, time_t now)
{
	struct vzq_ugid *u = vzq_ugid_get(q, type, id, false, NULL);

	if (!u && (c->bytes > 0 || c->inodes > 0) && vzq_ugid_add(q, type, id, &u))
		return -ENOMEM;
	if (!u)
		return 0;
	charge_stat(&u->stat, c, &q->ugid_grace[type], true, now);
	if (vzq_ugid_unused(u))
		vzq_ugid_remove(q, u);
	return 0;
}

int vzq_apply(struct vzq_quota *q, const struct vzq_charge *c, time_t now)
{
	charge_stat(&q->stat, c, &q->grace, false, now);
	if (!(q->flags & VZQ_FLAG_UGID_ON))
		return 0;
	/* one record at a time: adding or dropping one moves the others */
	if (charge_record(q, VZQ_USER, c->uid, c, now))
		return -ENOMEM;
	return charge_record(q, VZQ_GROUP, c->gid, c, now);
}

int vzq_move(struct vzq_quota *q, int64_t bytes, int64_t inodes, uid_t ouid, gid_t ogid, uid_t nuid, gid_t ngid,
	     time_t now)
{
	struct vzq_charge out = { -bytes, -inodes, ouid, ogid }, in = { bytes, inodes, nuid, ngid };
	const struct vzq_ugid *u, *g;
	int r = 0;

	if (!(q->flags & VZQ_FLAG_UGID_ON) || (ouid == nuid && ogid == ngid))
		return 0;
	/* Only the records that change are checked (a chgrp does not ask the owner's) and charged. */
	u = ouid != nuid ? find(q, VZQ_USER, nuid) : NULL;
	g = ogid != ngid ? find(q, VZQ_GROUP, ngid) : NULL;
	if ((u && !stat_allows(&u->stat, &in, true, false, now)) || (g && !stat_allows(&g->stat, &in, true, false, now)))
		return -EDQUOT;
	if (ouid != nuid && (charge_record(q, VZQ_USER, ouid, &out, now) || charge_record(q, VZQ_USER, nuid, &in, now)))
		r = -ENOMEM;
	if (!r && ogid != ngid &&
	    (charge_record(q, VZQ_GROUP, ogid, &out, now) || charge_record(q, VZQ_GROUP, ngid, &in, now)))
		r = -ENOMEM;
	return r;
}
