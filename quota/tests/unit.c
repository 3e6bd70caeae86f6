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
	for (size_t i = 1; i < q.n_ugid; i++)
		if (vzq_ugid_cmp(q.ugid[i - 1].type, q.ugid[i - 1].id, q.ugid[i].type, q.ugid[i].id) >= 0)
			sorted = false;
	CHECK("records: sorted and unique", sorted && q.n_ugid == 300);
	CHECK("records: lookup", vzq_ugid_get(&q, 1, (7 * 7919) % 1000, false, NULL) != NULL);
	CHECK("records: absent", vzq_ugid_get(&q, 0, 5000, false, NULL) == NULL);
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
	      vzq_merge_limits(&live, &file, 1000, &err) == 0 && (live.flags & VZQ_FLAG_UGID_ON) && live.ugid_limit == 0);
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
	test_time();
	test_codec();
	test_merge();
	test_live();
	return failures ? 1 : 0;
}
