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

int vzq_apply(struct vzq_quota *q, const struct vzq_charge *c, time_t now)
{
	charge_stat(&q->stat, c, &q->grace, false, now);
	if (q->flags & VZQ_FLAG_UGID_ON) {
		struct vzq_ugid *u = vzq_ugid_get(q, VZQ_USER, c->uid, true, NULL);
		if (!u)
			return -ENOMEM;
		charge_stat(&u->stat, c, &q->ugid_grace[VZQ_USER], true, now);
		/* the user record may have moved the array: look the group up afterwards */
		struct vzq_ugid *g = vzq_ugid_get(q, VZQ_GROUP, c->gid, true, NULL);
		if (!g)
			return -ENOMEM;
		charge_stat(&g->stat, c, &q->ugid_grace[VZQ_GROUP], true, now);
	}
	return 0;
}

int vzq_move(struct vzq_quota *q, int64_t bytes, int64_t inodes, uid_t ouid, gid_t ogid, uid_t nuid, gid_t ngid,
	     time_t now)
{
	struct vzq_charge out = { -bytes, -inodes, ouid, ogid }, in = { bytes, inodes, nuid, ngid };
	struct vzq_stat level1 = q->stat;
	int r;

	if (!(q->flags & VZQ_FLAG_UGID_ON) || (ouid == nuid && ogid == ngid))
		return 0;
	/* Free first, so that a record losing and gaining (only the gid changes) is checked once. */
	vzq_apply(q, &out, now);
	r = check(q, &in, false, false, now);
	if (r)
		in = (struct vzq_charge){ bytes, inodes, ouid, ogid };
	vzq_apply(q, &in, now);
	q->stat = level1;
	return r;
}
