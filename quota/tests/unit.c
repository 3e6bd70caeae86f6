/* Unit tests of libvzquota: the limit rules of section 1.7, grace bookkeeping, the time syntax,
 * the codec (round trip, every byte flipped, truncation), records and merges. Prints ok/not ok. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../quota.h"
#include "../lib/internal.h"

static int failures;

#define CHECK(name, cond)                                                                          \
	do {                                                                                       \
		if (cond)                                                                          \
			printf("ok %s\n", name);                                                   \
		else {                                                                             \
			printf("not ok %s (%s:%d: %s)\n", name, __FILE__, __LINE__, #cond);        \
			failures++;                                                                \
		}                                                                                  \
	} while (0)

static struct vzq_quota base(void)
{
	struct vzq_quota q;

	memset(&q, 0, sizeof(q));
	q.stat.bsoft = 1000;
	q.stat.bhard = 2000;
	q.stat.isoft = 10;
	q.stat.ihard = 20;
	q.grace.bexpire = 100;
	q.grace.iexpire = 50;
	return q;
}

static void test_first_level(void)
{
	struct vzq_quota q = base();
	struct vzq_charge c = { .bytes = 1000, .inodes = 10 };
	time_t now = 1000000;

	CHECK("l1: up to soft passes", vzq_check(&q, &c, now) == 0);
	vzq_apply(&q, &c, now);
	CHECK("l1: at soft no grace", q.stat.btime == 0 && q.stat.itime == 0);
	c = (struct vzq_charge){ .bytes = 1 };
	CHECK("l1: over soft without grace end passes", vzq_check(&q, &c, now) == 0);
	vzq_apply(&q, &c, now);
	CHECK("l1: over soft starts grace", q.stat.btime == now + 100 && q.stat.itime == 0);
	CHECK("l1: within grace passes", vzq_check(&q, &c, now + 99) == 0);
	CHECK("l1: grace expired fails", vzq_check(&q, &c, now + 100) == -EDQUOT);
	c = (struct vzq_charge){ .bytes = 999 };
	CHECK("l1: exactly hard passes", vzq_check(&q, &c, now) == 0);
	c = (struct vzq_charge){ .bytes = 1000 };
	CHECK("l1: over hard fails", vzq_check(&q, &c, now) == -EDQUOT);
	c = (struct vzq_charge){ .bytes = -1000000, .inodes = -5 };
	CHECK("l1: frees always pass", vzq_check(&q, &c, now + 1000) == 0);
	vzq_apply(&q, &c, now);
	CHECK("l1: free clamps at zero, ends grace", q.stat.bcurrent == 0 && q.stat.btime == 0 && q.stat.icurrent == 5);
	c = (struct vzq_charge){ .inodes = 16 };
	CHECK("l1: inode hard", vzq_check(&q, &c, now) == -EDQUOT);
	c = (struct vzq_charge){ .inodes = 6 };
	vzq_apply(&q, &c, now);
	CHECK("l1: inode grace starts", q.stat.itime == now + 50);
	c = (struct vzq_charge){ .inodes = 1 };
	CHECK("l1: inode grace expired", vzq_check(&q, &c, now + 50) == -EDQUOT);

	struct vzq_quota z;
	memset(&z, 0, sizeof(z));
	c = (struct vzq_charge){ .bytes = 1 };
	CHECK("l1: zero limit means zero (bytes)", vzq_check(&z, &c, now) == -EDQUOT);
	c = (struct vzq_charge){ .inodes = 1 };
	CHECK("l1: zero limit means zero (inodes)", vzq_check(&z, &c, now) == -EDQUOT);
	c = (struct vzq_charge){ 0 };
	CHECK("l1: empty charge passes", vzq_check(&z, &c, now) == 0);
}

static void test_second_level(void)
{
	struct vzq_quota q = base();
	struct vzq_charge c = { .bytes = 500, .inodes = 1, .uid = 1000, .gid = 100 };
	struct vzq_error err = { 0 };
	time_t now = 5000;

	q.stat.bhard = q.stat.bsoft = 1u << 30;
	q.flags = VZQ_FLAG_UGID_ON;
	q.ugid_limit = 10;
	q.ugid_grace[VZQ_USER].bexpire = 10;
	q.ugid_grace[VZQ_GROUP].bexpire = 20;
	CHECK("l2: no record means no limit", vzq_check(&q, &c, now) == 0);
	struct vzq_ugid *u = vzq_ugid_get(&q, VZQ_USER, 1000, true, &err);
	CHECK("l2: record created", u && u->id == 1000 && u->type == VZQ_USER && q.n_ugid == 1);
	u->stat.bsoft = 400;	/* hard 0: no hard limit */
	CHECK("l2: over soft starts grace, passes", vzq_check(&q, &c, now) == 0);
	vzq_apply(&q, &c, now);
	u = vzq_ugid_get(&q, VZQ_USER, 1000, false, NULL);
	struct vzq_ugid *g = vzq_ugid_get(&q, VZQ_GROUP, 100, false, NULL);
	CHECK("l2: apply charges user and group", u && g && u->stat.bcurrent == 500 && g->stat.bcurrent == 500 &&
						 g->stat.icurrent == 1);
	CHECK("l2: user grace uses the user interval", u->stat.btime == now + 10);
	CHECK("l2: group without limits has no grace", g->stat.btime == 0);
	CHECK("l2: zero hard is no limit", vzq_check(&q, &c, now + 9) == 0);
	CHECK("l2: user grace expired fails", vzq_check(&q, &c, now + 10) == -EDQUOT);
	g->stat.bhard = 900;
	u->stat.bsoft = 0;
	CHECK("l2: zero soft is no limit", vzq_check(&q, &(struct vzq_charge){ .bytes = 400, .gid = 100 }, now + 100) == 0);
	CHECK("l2: group hard fails", vzq_check(&q, &(struct vzq_charge){ .bytes = 401, .gid = 100 }, now) == -EDQUOT);
	q.flags = 0;
	CHECK("l2: second level off ignores records", vzq_check(&q, &(struct vzq_charge){ .bytes = 401, .gid = 100 }, now) == 0);
	vzq_quota_free(&q);
}

static void test_records(void)
{
	struct vzq_quota q;
	struct vzq_error err = { 0 };
	bool sorted = true;

	memset(&q, 0, sizeof(q));
	for (uint32_t i = 0; i < 300; i++)
		vzq_ugid_get(&q, (i * 7) % 2, (i * 7919) % 1000, true, &err);
	vzq_ugid_sort(&q);
	for (size_t i = 1; i < q.n_ugid; i++)
		if (vzq_ugid_cmp(q.ugid[i - 1].type, q.ugid[i - 1].id, q.ugid[i].type, q.ugid[i].id) >= 0)
			sorted = false;
	CHECK("records: sorted and unique", sorted && q.n_ugid == 300);
	CHECK("records: lookup", vzq_ugid_get(&q, 1, (7 * 7919) % 1000, false, NULL) != NULL);
	CHECK("records: absent", vzq_ugid_get(&q, 0, 5000, false, NULL) == NULL);
	vzq_quota_free(&q);
}

/* Adds and removes records at random against a plain table of what must be there: the index
 * finds every record after every removal (backward-shift deletion, the last record moved). */
static void test_records_index(void)
{
	static unsigned char want[2][4096];
	struct vzq_quota q;
	struct vzq_error err = { 0 };
	unsigned int seed = 12345, bad = 0;
	size_t count = 0;

	memset(&q, 0, sizeof(q));
	memset(want, 0, sizeof(want));
	for (int step = 0; step < 200000; step++) {
		seed = seed * 1103515245u + 12345u;
		uint32_t type = (seed >> 8) & 1, id = (seed >> 12) % 4096;
		struct vzq_ugid *u = vzq_ugid_get(&q, type, id, false, NULL);

		if (!u != !want[type][id])
			bad++;
		if (u) {
			vzq_ugid_remove(&q, u);
			want[type][id] = 0;
			count--;
		} else if (vzq_ugid_get(&q, type, id, true, &err)) {
			want[type][id] = 1;
			count++;
		}
		if (q.n_ugid != count)
			bad++;
	}
	for (uint32_t t = 0; t < 2; t++)
		for (uint32_t id = 0; id < 4096; id++)
			if (!vzq_ugid_get(&q, t, id, false, NULL) != !want[t][id])
				bad++;
	CHECK("records: index agrees after 200000 random adds and removals", bad == 0);
	vzq_quota_free(&q);
}

/* The ugid limit: no record past it, the quota marked, no new record after a refusal until a
 * count; the first level counts everything. */
static void test_ugid_limit(void)
{
	struct vzq_quota q = base();
	time_t now = 5000;

	q.stat.bhard = q.stat.bsoft = 1u << 30;
	q.stat.ihard = q.stat.isoft = 1000;
	q.flags = VZQ_FLAG_UGID_ON;
	q.ugid_limit = 4;
	for (uint32_t i = 0; i < 10; i++)
		vzq_apply(&q, &(struct vzq_charge){ .bytes = 4096, .inodes = 1, .uid = 100 + i, .gid = 100 + i }, now);
	CHECK("limit: no record past the limit", q.n_ugid == 4);
	CHECK("limit: the quota says so", q.flags & VZQ_FLAG_UGID_OVER);
	CHECK("limit: the first level counts everything", q.stat.bcurrent == 40960 && q.stat.icurrent == 10);
	CHECK("limit: the ids that got a record are exact",
	      vzq_ugid_get(&q, VZQ_USER, 100, false, NULL) && vzq_ugid_get(&q, VZQ_GROUP, 100, false, NULL) &&
		      vzq_ugid_get(&q, VZQ_USER, 101, false, NULL)->stat.bcurrent == 4096 &&
		      !vzq_ugid_get(&q, VZQ_USER, 102, false, NULL));
	/* a free of an id without a record: nothing to free, no record */
	vzq_apply(&q, &(struct vzq_charge){ .bytes = -4096, .inodes = -1, .uid = 105, .gid = 105 }, now);
	CHECK("limit: a free of an uncounted id makes no record", q.n_ugid == 4 && q.stat.icurrent == 9);
	/* uid 100 gives up its usage: its record goes; the set stays fixed after the refusal */
	vzq_apply(&q, &(struct vzq_charge){ .bytes = -4096, .inodes = -1, .uid = 100, .gid = 100 }, now);
	CHECK("limit: a record at zero usage without limits is dropped", q.n_ugid == 2 &&
		      !vzq_ugid_get(&q, VZQ_USER, 100, false, NULL) && !vzq_ugid_get(&q, VZQ_GROUP, 100, false, NULL));
	vzq_apply(&q, &(struct vzq_charge){ .bytes = 4096, .inodes = 1, .uid = 200, .gid = 200 }, now);
	CHECK("limit: after a refusal no id gets a record", q.n_ugid == 2 && !vzq_ugid_get(&q, VZQ_USER, 200, false, NULL));
	/* a record with limits stays at zero usage */
	vzq_ugid_get(&q, VZQ_USER, 101, false, NULL)->stat.ihard = 5;
	vzq_apply(&q, &(struct vzq_charge){ .bytes = -4096, .inodes = -1, .uid = 101, .gid = 101 }, now);
	CHECK("limit: a record with limits stays at zero", q.n_ugid == 1 && vzq_ugid_get(&q, VZQ_USER, 101, false, NULL));

	/* limit 0 with the second level on: no records at all (upstream's -s 1 -u 0) */
	struct vzq_quota z = base();

	z.stat.bhard = z.stat.bsoft = 1u << 30;
	z.flags = VZQ_FLAG_UGID_ON;
	vzq_apply(&z, &(struct vzq_charge){ .bytes = 4096, .inodes = 1, .uid = 1, .gid = 1 }, now);
	CHECK("limit: 0 keeps no records", z.n_ugid == 0 && (z.flags & VZQ_FLAG_UGID_OVER) && z.stat.icurrent == 1);
	vzq_quota_free(&z);
	vzq_quota_free(&q);
}

/* A chown storm on one file: each move leaves the old owner's records empty, which go. */
static void test_move_drops(void)
{
	struct vzq_quota q = base();
	time_t now = 5000;

	q.stat.bhard = q.stat.bsoft = 1u << 30;
	q.flags = VZQ_FLAG_UGID_ON;
	q.ugid_limit = 100;
	vzq_apply(&q, &(struct vzq_charge){ .bytes = 8192, .inodes = 1, .uid = 0, .gid = 0 }, now);
	uid_t o = 0;
	int r = 0;

	for (uid_t n = 1000000; n < 1020000; n++, o = n - 1)
		r |= vzq_move(&q, 8192, 1, o, o, n, n, now);
	CHECK("move: 20000 chowns of one file pass", r == 0);
	CHECK("move: only the last owner's records are left", q.n_ugid == 2 && !(q.flags & VZQ_FLAG_UGID_OVER) &&
								vzq_ugid_get(&q, VZQ_USER, 1019999, false, NULL) &&
								vzq_ugid_get(&q, VZQ_GROUP, 1019999, false, NULL)->stat.bcurrent == 8192);
	CHECK("move: the first level is untouched", q.stat.bcurrent == 8192 && q.stat.icurrent == 1);
	/* a chgrp asks the new group only, and moves nothing for the owner */
	vzq_ugid_get(&q, VZQ_GROUP, 7, true, NULL)->stat.bhard = 4096;
	CHECK("move: over the new group's hard limit refused", vzq_move(&q, 8192, 1, o, o, o, 7, now) == -EDQUOT &&
								 vzq_ugid_get(&q, VZQ_GROUP, o, false, NULL)->stat.bcurrent == 8192);
	CHECK("move: a chgrp leaves the owner's record", vzq_move(&q, 4096, 1, o, o, o, 8, now) == 0 &&
								 vzq_ugid_get(&q, VZQ_USER, o, false, NULL)->stat.bcurrent == 8192 &&
								 vzq_ugid_get(&q, VZQ_GROUP, 8, false, NULL)->stat.bcurrent == 4096);
	vzq_quota_free(&q);
}

static void test_time(void)
{
	int64_t t;

	CHECK("time: seconds", vzq_parse_time("30", &t) == 0 && t == 30);
	CHECK("time: big leading field", vzq_parse_time("259200", &t) == 0 && t == 259200);
	CHECK("time: mm:ss", vzq_parse_time("12:00", &t) == 0 && t == 720);
	CHECK("time: dd:hh:mm:ss", vzq_parse_time("20:15:11:00", &t) == 0 && t == 20 * 86400 + 15 * 3600 + 11 * 60);
	CHECK("time: units", vzq_parse_time("2h", &t) == 0 && t == 7200 && vzq_parse_time("3D", &t) == 0 &&
				     t == 3 * 86400 && vzq_parse_time("1w", &t) == 0 && t == 7 * 86400 &&
				     vzq_parse_time("1m", &t) == 0 && t == 30 * 86400 && vzq_parse_time("1Y", &t) == 0 &&
				     t == 365 * 86400);
	CHECK("time: seconds out of range", vzq_parse_time("1:60", &t) == -EINVAL);
	CHECK("time: hours out of range", vzq_parse_time("1:24:00:00", &t) == -EINVAL);
	CHECK("time: leading minutes out of range", vzq_parse_time("99:00", &t) == -EINVAL &&
							vzq_parse_time("60:00", &t) == -EINVAL);
	CHECK("time: leading hours out of range", vzq_parse_time("25:00:00", &t) == -EINVAL &&
						      vzq_parse_time("24:00:00", &t) == -EINVAL);
	CHECK("time: leading fields in range", vzq_parse_time("59:59", &t) == 0 && t == 3599 &&
						   vzq_parse_time("23:59:59", &t) == 0 && t == 86399);
	CHECK("time: leading days unbounded", vzq_parse_time("400:00:00:00", &t) == 0 && t == 400 * 86400);
	CHECK("time: too many fields", vzq_parse_time("1:1:1:1:1", &t) == -EINVAL);
	CHECK("time: junk", vzq_parse_time("", &t) == -EINVAL && vzq_parse_time("1x", &t) == -EINVAL &&
				    vzq_parse_time("-1", &t) == -EINVAL && vzq_parse_time("1:", &t) == -EINVAL &&
				    vzq_parse_time("2hh", &t) == -EINVAL && vzq_parse_time("1:2h", &t) == -EINVAL);
	CHECK("time: overflow", vzq_parse_time("99999999999999999999", &t) == -EINVAL &&
				      vzq_parse_time("999999999999999y", &t) == -EINVAL);
}

static void test_codec(void)
{
	struct vzq_quota q = base(), r;
	struct vzq_error err = { 0 };
	unsigned char *buf;
	size_t len;
	int legacy, caught = 0, trunc_caught = 0;

	q.id = 77;
	q.flags = VZQ_FLAG_ON | VZQ_FLAG_UGID_ON;
	q.stat.bcurrent = 123456789012ull;
	q.stat.btime = 1700000000;
	q.ugid_limit = 99;
	q.ugid_grace[1].iexpire = 42;
	q.path = strdup("/vz/private/77");
	struct vzq_ugid *u = vzq_ugid_get(&q, VZQ_GROUP, 5, true, &err);
	u->stat.ihard = 7;
	u->flags = VZQ_UGID_DIRTY;
	CHECK("codec: encode", vzq_encode(&q, &buf, &len, &err) == 0);
	CHECK("codec: decode", vzq_decode("t", buf, len, &r, &legacy, &err) == 0 && legacy == 0);
	CHECK("codec: round trip", r.id == 77 && r.flags == q.flags && !memcmp(&r.stat, &q.stat, sizeof(q.stat)) &&
					   !memcmp(&r.grace, &q.grace, sizeof(q.grace)) && r.ugid_limit == 99 &&
					   r.ugid_grace[1].iexpire == 42 && !strcmp(r.path, q.path) && r.n_ugid == 1 &&
					   r.ugid[0].id == 5 && r.ugid[0].type == 1 && r.ugid[0].stat.ihard == 7 &&
					   r.ugid[0].flags == VZQ_UGID_DIRTY);
	vzq_quota_free(&r);
	for (size_t i = 0; i < len; i++) {
		buf[i] ^= 0x40;
		memset(&err, 0, sizeof(err));
		if (vzq_decode("t", buf, len, &r, &legacy, &err) == VZQ_ERR_FILE && strchr(err.msg, '\n') == NULL)
			caught++;
		buf[i] ^= 0x40;
	}
	CHECK("codec: every flipped byte is caught", caught == (int)len);
	for (size_t l = 0; l < len; l++) {
		memset(&err, 0, sizeof(err));
		if (vzq_decode("t", buf, l, &r, &legacy, &err) == VZQ_ERR_FILE)
			trunc_caught++;
	}
	CHECK("codec: every truncation is caught", trunc_caught == (int)len);
	free(buf);
	vzq_quota_free(&q);
}

static void test_merge(void)
{
	struct vzq_quota file = base(), live = base(), off = base();
	struct vzq_error err = { 0 };

	file.flags = VZQ_FLAG_ON | VZQ_FLAG_UGID_ON;
	live.flags = VZQ_FLAG_ON | VZQ_FLAG_LIVE | VZQ_FLAG_UGID_ON;
	live.stat.bcurrent = 5000;
	live.stat.btime = 77;
	live.ugid_limit = 100;
	vzq_ugid_get(&live, VZQ_USER, 3, true, &err)->stat.bcurrent = 42;
	file.stat.bsoft = 123;
	vzq_ugid_get(&file, VZQ_GROUP, 9, true, &err)->stat.ihard = 8;
	CHECK("merge: usage", vzq_merge_usage(&file, &live, &err) == 0 && file.stat.bcurrent == 5000 &&
				      file.stat.btime == 77 && file.stat.bsoft == 123 && file.n_ugid == 2 &&
				      vzq_ugid_get(&file, VZQ_USER, 3, false, NULL)->stat.bcurrent == 42);
	file.stat.bhard = 4000;
	CHECK("merge: limits", vzq_merge_limits(&live, &file, 1000, &err) == 0 && live.stat.bhard == 4000 &&
				       live.stat.bsoft == 123 && live.stat.bcurrent == 5000 &&
				       (live.flags & VZQ_FLAG_LIVE) && (live.flags & VZQ_FLAG_UGID_ON) &&
				       vzq_ugid_get(&live, VZQ_GROUP, 9, false, NULL)->stat.ihard == 8);
	/* the second level requested while a holder runs without it: taken at its next start */
	off.flags = VZQ_FLAG_ON | VZQ_FLAG_LIVE;
	off.stat.bcurrent = 6000;
	file.ugid_limit = 50;
	file.flags |= VZQ_FLAG_DIRTY;
	CHECK("merge: limits keep the holder's second level off",
	      vzq_merge_limits(&off, &file, 1000, &err) == 0 && off.stat.bhard == 4000 &&
		      !(off.flags & VZQ_FLAG_UGID_ON) && off.ugid_limit == 0);
	CHECK("merge: usage of a holder without it keeps the records and DIRTY",
	      vzq_merge_usage(&file, &off, &err) == 0 && file.stat.bcurrent == 6000 &&
		      (file.flags & (VZQ_FLAG_UGID_ON | VZQ_FLAG_DIRTY)) == (VZQ_FLAG_UGID_ON | VZQ_FLAG_DIRTY) &&
		      vzq_ugid_get(&file, VZQ_USER, 3, false, NULL)->stat.bcurrent == 42);
	file.flags &= ~VZQ_FLAG_UGID_ON;
	CHECK("merge: limits keep the holder's second level on",
	      vzq_merge_limits(&live, &file, 1000, &err) == 0 && (live.flags & VZQ_FLAG_UGID_ON) && live.ugid_limit == 100);
	/* the holder dropped a record at zero usage: the file's goes too (its limits would stay) */
	file.flags |= VZQ_FLAG_UGID_ON;
	vzq_ugid_get(&file, VZQ_USER, 77, true, &err)->stat.icurrent = 3;
	live.flags |= VZQ_FLAG_UGID_OVER;
	CHECK("merge: a record the holder dropped leaves the file, OVER comes along",
	      vzq_merge_usage(&file, &live, &err) == 0 && !vzq_ugid_get(&file, VZQ_USER, 77, false, NULL) &&
		      vzq_ugid_get(&file, VZQ_GROUP, 9, false, NULL) && (file.flags & VZQ_FLAG_UGID_OVER));
	/* limits for an id without a record, and no room for it */
	vzq_ugid_get(&file, VZQ_USER, 78, true, &err)->stat.bhard = 8192;
	memset(&err, 0, sizeof(err));
	CHECK("merge: limits past the ugid limit are refused, naming the id",
	      vzq_merge_limits(&live, &file, 1000, &err) == VZQ_ERR_LIVE && strstr(err.msg, "user 78") &&
		      !vzq_ugid_get(&live, VZQ_USER, 78, false, NULL));
	vzq_quota_free(&file);
	vzq_quota_free(&live);
	vzq_quota_free(&off);
}

static void test_live(void)
{
	char dir[] = "/tmp/vzq-unit.XXXXXX";
	struct vzq_error err = { 0 };
	int fd, fd2, lfd;

	if (!mkdtemp(dir)) {
		CHECK("live: temp dir", 0);
		return;
	}
	setenv("VZQ_RUN_DIR", dir, 1);
	CHECK("live: not held", !vzq_live_held(7));
	CHECK("live: acquire", vzq_live_acquire(7, &fd, &err) == 0);
	CHECK("live: held", vzq_live_held(7));
	CHECK("live: second acquire is locked", vzq_live_acquire(7, &fd2, &err) == VZQ_ERR_LOCKED);
	memset(&err, 0, sizeof(err));
	CHECK("live: nobody listens", vzq_live_request(7, VZQ_REQ_SYNC, NULL, 0, &err) == VZQ_ERR_NOT_RUNNING);
	memset(&err, 0, sizeof(err));
	CHECK("live: listen", vzq_live_listen(7, &lfd, &err) == 0);
	vzq_live_release(fd);
	CHECK("live: released", !vzq_live_held(7));
	close(lfd);
	char cmd[64];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd)) {
	}
}

int main(void)
{
	test_first_level();
	test_second_level();
	test_records();
	test_records_index();
	test_ugid_limit();
	test_move_drops();
	test_time();
	test_codec();
	test_merge();
	test_live();
	return failures ? 1 : 0;
}
