/* The codec boundary of the quota file: our format (quota_format.h) both ways, the legacy vzquota
 * v1/v2/v3 files one way. Every field is validated here, before anything else trusts it. */
#include <endian.h>
#include <inttypes.h>
#include <stdio.h>

#include "../quota_format.h"
#include "internal.h"

/* ---- crc32c (Castagnoli, reflected), table driven ---- */
static uint32_t crc_table[256];

__attribute__((constructor)) static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
		crc_table[i] = c;
	}
}

uint32_t vzq_crc32c(uint32_t crc, const void *buf, size_t len)
{
	const unsigned char *p = buf;

	crc = ~crc;
	while (len--)
		crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

int vzq_ugid_cmp(uint32_t type_a, uint32_t id_a, uint32_t type_b, uint32_t id_b)
{
	if (type_a != type_b)
		return type_a < type_b ? -1 : 1;
	if (id_a != id_b)
		return id_a < id_b ? -1 : 1;
	return 0;
}

static int ugid_sort_cmp(const void *a, const void *b)
{
	const struct vzq_ugid *x = a, *y = b;
	return vzq_ugid_cmp(x->type, x->id, y->type, y->id);
}

static int ugid_ptr_cmp(const void *a, const void *b)
{
	return ugid_sort_cmp(*(const struct vzq_ugid *const *)a, *(const struct vzq_ugid *const *)b);
}

static uint64_t pad8(uint64_t n)
{
	return (n + 7) & ~(uint64_t)7;
}

#define CORRUPT(...) vzq_fail(err, VZQ_ERR_FILE, 0, __VA_ARGS__)

static int check_time(const char *fname, const char *what, int64_t t, struct vzq_error *err)
{
	if (t < 0)
		return CORRUPT("%s: corrupt quota file: negative %s %" PRId64, fname, what, t);
	return 0;
}

static int check_stat(const char *fname, const struct vzq_stat *s, struct vzq_error *err)
{
	if (check_time(fname, "block grace end", s->btime, err) ||
	    check_time(fname, "inode grace end", s->itime, err))
		return err->status;
	/* inode limits are 32-bit, as upstream's and the command line's */
	if (s->isoft > UINT32_MAX || s->ihard > UINT32_MAX)
		return CORRUPT("%s: corrupt quota file: inode limit above 2^32", fname);
	return 0;
}

static int set_path(const char *fname, struct vzq_quota *q, const unsigned char *p, uint64_t len,
		    struct vzq_error *err)
{
	if (len == 0)
		return 0;
	if (memchr(p, 0, len))
		return CORRUPT("%s: corrupt quota file: NUL byte in the stored path", fname);
	q->path = malloc(len + 1);
	if (!q->path)
		return vzq_fail(err, VZQ_ERR_SYS, ENOMEM, "%s", fname);
	memcpy(q->path, p, len);
	q->path[len] = 0;
	return 0;
}

/* Records: sorted and unique by (type, id) after this. */
static int finish_records(const char *fname, struct vzq_quota *q, struct vzq_error *err)
{
	if (q->n_ugid > 1)
		qsort(q->ugid, q->n_ugid, sizeof(*q->ugid), ugid_sort_cmp);
	for (size_t i = 0; i < q->n_ugid; i++) {
		if (check_stat(fname, &q->ugid[i].stat, err))
			return err->status;
		if (i && !ugid_sort_cmp(&q->ugid[i - 1], &q->ugid[i]))
			return CORRUPT("%s: corrupt quota file: two records of %s %" PRIu32, fname,
				       q->ugid[i].type ? "group" : "user", q->ugid[i].id);
	}
	return 0;
}

static void stat_from_disk(struct vzq_stat *s, const struct vzqf_stat *d)
{
	s->bcurrent = le64toh(d->bcurrent);
	s->bsoft = le64toh(d->bsoft);
	s->bhard = le64toh(d->bhard);
	s->btime = (int64_t)le64toh(d->btime);
	s->icurrent = le64toh(d->icurrent);
	s->isoft = le64toh(d->isoft);
	s->ihard = le64toh(d->ihard);
	s->itime = (int64_t)le64toh(d->itime);
}

static void stat_to_disk(struct vzqf_stat *d, const struct vzq_stat *s)
{
	d->bcurrent = htole64(s->bcurrent);
	d->bsoft = htole64(s->bsoft);
	d->bhard = htole64(s->bhard);
	d->btime = (int64_t)htole64((uint64_t)s->btime);
	d->icurrent = htole64(s->icurrent);
	d->isoft = htole64(s->isoft);
	d->ihard = htole64(s->ihard);
	d->itime = (int64_t)htole64((uint64_t)s->itime);
}

static int decode_ours(const char *fname, const unsigned char *buf, size_t len, struct vzq_quota *q,
		       struct vzq_error *err)
{
	struct vzqf_header h;
	struct vzqf_trailer t;
	uint64_t path_len, n_ugid, want;
	uint32_t flags;

	if (len < sizeof(h) + sizeof(t))
		return CORRUPT("%s: corrupt quota file: truncated (%zu bytes)", fname, len);
	memcpy(&h, buf, sizeof(h));
	if (le32toh(h.version) != VZQF_VERSION)
		return CORRUPT("%s: unsupported quota file version %" PRIu32, fname, le32toh(h.version));
	if (le32toh(h.header_size) != sizeof(h))
		return CORRUPT("%s: corrupt quota file: header size %" PRIu32, fname, le32toh(h.header_size));
	path_len = le32toh(h.path_len);
	n_ugid = le32toh(h.n_ugid);
	if (path_len > VZQF_MAX_PATH)
		return CORRUPT("%s: corrupt quota file: path length %" PRIu64, fname, path_len);
	if (n_ugid > VZQF_MAX_UGID)
		return CORRUPT("%s: corrupt quota file: %" PRIu64 " records", fname, n_ugid);
	want = vzq_declared_size(buf, len);
	if (want != len)
		return CORRUPT("%s: corrupt quota file: %zu bytes where its header says %" PRIu64
			       "%s", fname, len, want, len < want ? " (truncated)" : "");
	memcpy(&t, buf + len - sizeof(t), sizeof(t));
	if (le32toh(t.magic) != VZQF_TRAILER_MAGIC)
		return CORRUPT("%s: corrupt quota file: bad trailer", fname);
	if (vzq_crc32c(0, buf, len - sizeof(t)) != le32toh(t.crc))
		return CORRUPT("%s: corrupt quota file: checksum mismatch", fname);

	flags = le32toh(h.flags);
	if (flags & ~(VZQ_FLAG_ON | VZQ_FLAG_DIRTY | VZQ_FLAG_UGID_ON | VZQ_FLAG_LIVE | VZQ_FLAG_SERVED |
		      VZQ_FLAG_UGID_OVER))
		return CORRUPT("%s: corrupt quota file: unknown flags 0x%" PRIx32, fname, flags);
	q->id = le32toh(h.id);
	q->flags = flags;
	q->ugid_limit = le32toh(h.ugid_limit);
	stat_from_disk(&q->stat, &h.stat);
	q->grace.bexpire = (int64_t)le64toh(h.bexpire);
	q->grace.iexpire = (int64_t)le64toh(h.iexpire);
	for (int i = 0; i < 2; i++) {
		q->ugid_grace[i].bexpire = (int64_t)le64toh(h.ugid_bexpire[i]);
		q->ugid_grace[i].iexpire = (int64_t)le64toh(h.ugid_iexpire[i]);
		if (check_time(fname, "grace interval", q->ugid_grace[i].bexpire, err) ||
		    check_time(fname, "grace interval", q->ugid_grace[i].iexpire, err))
			return err->status;
	}
	if (check_stat(fname, &q->stat, err) || check_time(fname, "grace interval", q->grace.bexpire, err) ||
	    check_time(fname, "grace interval", q->grace.iexpire, err))
		return err->status;
	if (set_path(fname, q, buf + sizeof(h), path_len, err))
		return err->status;
	for (uint64_t i = path_len; i < pad8(path_len); i++)
		if (buf[sizeof(h) + i])
			return CORRUPT("%s: corrupt quota file: path padding is not zero", fname);

	if (n_ugid) {
		q->ugid = calloc(n_ugid, sizeof(*q->ugid));
		if (!q->ugid)
			return vzq_fail(err, VZQ_ERR_SYS, ENOMEM, "%s", fname);
		q->ugid_cap = n_ugid;
	}
	const unsigned char *r = buf + sizeof(h) + pad8(path_len);
	for (uint64_t i = 0; i < n_ugid; i++, r += sizeof(struct vzqf_ugid)) {
		struct vzqf_ugid d;
		struct vzq_ugid *u = &q->ugid[i];

		memcpy(&d, r, sizeof(d));
		u->id = le32toh(d.id);
		u->type = le32toh(d.type);
		u->flags = le32toh(d.flags);
		if (u->type > VZQ_GROUP || d.reserved || (u->flags & ~(0x1u | VZQ_UGID_DIRTY)))
			return CORRUPT("%s: corrupt quota file: bad record %" PRIu64, fname, i);
		stat_from_disk(&u->stat, &d.stat);
		q->n_ugid++;
		if (i && vzq_ugid_cmp(q->ugid[i - 1].type, q->ugid[i - 1].id, u->type, u->id) >= 0)
			return CORRUPT("%s: corrupt quota file: records out of order at %" PRIu64, fname, i);
	}
	return finish_records(fname, q, err);
}

/* Legacy files are native x86_64 little endian: the same byte order as ours. */
static void stat_from_legacy(struct vzq_stat *s, const struct vzql_dq_stat *d)
{
	s->bhard = le64toh(d->bhardlimit);
	s->bsoft = le64toh(d->bsoftlimit);
	s->btime = (int64_t)le64toh(d->btime);
	s->bcurrent = le64toh(d->bcurrent);
	s->ihard = le32toh(d->ihardlimit);
	s->isoft = le32toh(d->isoftlimit);
	s->itime = (int64_t)le64toh(d->itime);
	s->icurrent = le32toh(d->icurrent);
}

static int decode_legacy(const char *fname, const unsigned char *buf, size_t len, struct vzq_quota *q,
			 uint32_t magic, int *version, struct vzq_error *err)
{
	struct vzql_header h;
	size_t stat_size = magic == VZQL_MAGIC_V1 ? sizeof(struct vzql_stat_v1) : sizeof(struct vzql_stat_v3);
	uint64_t path_len, off;

	*version = magic == VZQL_MAGIC_V3 ? 3 : magic == VZQL_MAGIC_V2 ? 2 : 1;
	if (len < sizeof(h) + stat_size + 8)
		return CORRUPT("%s: corrupt legacy quota file (v%d): truncated (%zu bytes)", fname, *version,
			       len);
	memcpy(&h, buf, sizeof(h));
	q->flags = le32toh(h.flags);
	if (q->flags & ~(VZQ_FLAG_ON | VZQ_FLAG_DIRTY | VZQ_FLAG_UGID_ON))
		return CORRUPT("%s: corrupt legacy quota file: unknown flags 0x%" PRIx32, fname, q->flags);
	/* Left on by the OpenVZ host (its container ran, or the host went down): nothing serves it
	 * here, and its usage is of that moment. Off and dirty: the next `on` counts the tree. */
	if (q->flags & VZQ_FLAG_ON)
		q->flags = (q->flags & ~VZQ_FLAG_ON) | VZQ_FLAG_DIRTY;
	off = sizeof(h) + stat_size;
	memcpy(&path_len, buf + off, 8);
	path_len = le64toh(path_len);
	off += 8;
	if (path_len > VZQF_MAX_PATH || path_len > len - off)
		return CORRUPT("%s: corrupt legacy quota file: path length %" PRIu64, fname, path_len);

	if (magic == VZQL_MAGIC_V3) {
		struct vzql_stat_v3 st;
		struct vzql_ugid_info info;
		uint64_t n, want, sum = 0, word;

		/* The checksum first: XOR of the 64-bit words before it, the last one zero padded. */
		if (len < off + path_len + sizeof(info) + 8)
			return CORRUPT("%s: corrupt legacy quota file (v3): truncated (%zu bytes)", fname, len);
		memcpy(&info, buf + off + path_len, sizeof(info));
		n = le32toh(info.buf_size);
		want = vzq_declared_size(buf, len);
		if (want != len)
			return CORRUPT("%s: corrupt legacy quota file (v3): %zu bytes where it says %" PRIu64 "%s",
				       fname, len, want, len < want ? " (truncated)" : "");
		for (size_t i = 0; i < len - 8; i += 8) {
			word = 0;
			memcpy(&word, buf + i, len - 8 - i < 8 ? len - 8 - i : 8);
			sum ^= word;
		}
		memcpy(&word, buf + len - 8, 8);
		if (sum != word)
			return CORRUPT("%s: corrupt legacy quota file (v3): checksum mismatch", fname);

		memcpy(&st, buf + sizeof(h), sizeof(st));
		stat_from_legacy(&q->stat, &st.dq_stat);
		q->grace.bexpire = (int64_t)le64toh(st.dq_info.bexpire);
		q->grace.iexpire = (int64_t)le64toh(st.dq_info.iexpire);
		q->ugid_limit = le32toh(info.limit);
		for (int i = 0; i < 2; i++) {
			q->ugid_grace[i].bexpire = (int64_t)le64toh(info.info[i].bexpire);
			q->ugid_grace[i].iexpire = (int64_t)le64toh(info.info[i].iexpire);
			if (check_time(fname, "grace interval", q->ugid_grace[i].bexpire, err) ||
			    check_time(fname, "grace interval", q->ugid_grace[i].iexpire, err))
				return err->status;
		}
		if (n) {
			q->ugid = calloc(n, sizeof(*q->ugid));
			if (!q->ugid)
				return vzq_fail(err, VZQ_ERR_SYS, ENOMEM, "%s", fname);
			q->ugid_cap = n;
		}
		const unsigned char *r = buf + off + path_len + sizeof(info);
		for (uint64_t i = 0; i < n; i++, r += sizeof(struct vzql_ugid)) {
			struct vzql_ugid d;
			struct vzq_ugid *u = &q->ugid[q->n_ugid];

			memcpy(&d, r, sizeof(d));
			u->id = le32toh(d.id);
			u->type = le32toh(d.type);
			u->flags = le32toh(d.flags);
			if (u->type > VZQ_GROUP || (u->flags & ~(0x1u | VZQ_UGID_DIRTY)))
				return CORRUPT("%s: corrupt legacy quota file: bad record %" PRIu64, fname, i);
			u->flags &= VZQ_UGID_DIRTY;	/* "loaded" meant: in the old kernel */
			stat_from_legacy(&u->stat, &d.stat);
			/* one with neither usage nor limits is no record (upstream drops it on reading) */
			if (vzq_ugid_unused(u))
				memset(u, 0, sizeof(*u));
			else
				q->n_ugid++;
		}
	} else {
		/* v1/v2: no checksum was ever verified by vzquota; some writers appended one. */
		uint64_t most = vzq_declared_size(buf, len);

		if (len != most - 8 && len != most)
			return CORRUPT("%s: corrupt legacy quota file (v%d): %zu bytes for a path of %" PRIu64,
				       fname, *version, len, path_len);
		if (magic == VZQL_MAGIC_V2) {
			struct vzql_stat_v2 st;

			memcpy(&st, buf + sizeof(h), sizeof(st));
			q->stat.bhard = le64toh(st.bhardlimit);
			q->stat.bsoft = le64toh(st.bsoftlimit);
			q->stat.btime = (int64_t)le64toh(st.btime);
			q->stat.bcurrent = le64toh(st.bcurrent);
			q->stat.ihard = le32toh(st.ihardlimit);
			q->stat.isoft = le32toh(st.isoftlimit);
			q->stat.icurrent = le32toh(st.icurrent);
			q->stat.itime = (int64_t)le64toh(st.itime);
			q->grace.bexpire = (int64_t)le64toh(st.bexpire);
			q->grace.iexpire = (int64_t)le64toh(st.iexpire);
		} else {
			struct vzql_stat_v1 st;

			memcpy(&st, buf + sizeof(h), sizeof(st));
			q->stat.bhard = (uint64_t)le32toh(st.bhardlimit) * 1024;
			q->stat.bsoft = (uint64_t)le32toh(st.bsoftlimit) * 1024;
			q->stat.btime = (int64_t)le64toh(st.btime);
			q->stat.bcurrent = (uint64_t)le32toh(st.bcurrent) * 1024;
			q->stat.ihard = le32toh(st.ihardlimit);
			q->stat.isoft = le32toh(st.isoftlimit);
			q->stat.icurrent = le32toh(st.icurrent);
			q->stat.itime = (int64_t)le64toh(st.itime);
			q->grace.bexpire = (int64_t)le64toh(st.bexpire);
			q->grace.iexpire = (int64_t)le64toh(st.iexpire);
		}
		/* vzquota forces a recount when it converts a one-level file */
		q->flags |= VZQ_FLAG_DIRTY;
	}
	if (check_stat(fname, &q->stat, err) || check_time(fname, "grace interval", q->grace.bexpire, err) ||
	    check_time(fname, "grace interval", q->grace.iexpire, err))
		return err->status;
	if (set_path(fname, q, buf + off, path_len, err))
		return err->status;
	return finish_records(fname, q, err);
}

uint64_t vzq_declared_size(const unsigned char *buf, size_t len)
{
	uint32_t magic;
	uint64_t path_len, off;

	if (len < 4)
		return 0;
	memcpy(&magic, buf, 4);
	magic = le32toh(magic);
	if (magic == VZQF_MAGIC) {
		struct vzqf_header h;

		if (len < sizeof(h))
			return 0;
		memcpy(&h, buf, sizeof(h));
		path_len = le32toh(h.path_len);
		if (path_len > VZQF_MAX_PATH || le32toh(h.n_ugid) > VZQF_MAX_UGID)
			return 0;
		return sizeof(h) + pad8(path_len) + (uint64_t)le32toh(h.n_ugid) * sizeof(struct vzqf_ugid) +
		       sizeof(struct vzqf_trailer);
	}
	if (magic != VZQL_MAGIC_V3 && magic != VZQL_MAGIC_V2 && magic != VZQL_MAGIC_V1)
		return 0;
	off = sizeof(struct vzql_header) +
	      (magic == VZQL_MAGIC_V1 ? sizeof(struct vzql_stat_v1) : sizeof(struct vzql_stat_v3));
	if (len < off + 8)
		return 0;
	memcpy(&path_len, buf + off, 8);
	path_len = le64toh(path_len);
	off += 8;
	if (path_len > VZQF_MAX_PATH)
		return 0;
	if (magic != VZQL_MAGIC_V3)
		return off + path_len + 8;
	struct vzql_ugid_info info;

	if (len < off + path_len + sizeof(info))
		return 0;
	memcpy(&info, buf + off + path_len, sizeof(info));
	return off + path_len + sizeof(info) + (uint64_t)le32toh(info.buf_size) * sizeof(struct vzql_ugid) + 8;
}

int vzq_decode(const char *fname, const unsigned char *buf, size_t len, struct vzq_quota *q, int *legacy,
	       struct vzq_error *err)
{
	uint32_t magic;
	int rc;

	memset(q, 0, sizeof(*q));
	*legacy = 0;
	if (len < 4)
		return CORRUPT("%s: corrupt quota file: truncated (%zu bytes)", fname, len);
	memcpy(&magic, buf, 4);
	magic = le32toh(magic);
	if (magic == VZQF_MAGIC)
		rc = decode_ours(fname, buf, len, q, err);
	else if (magic == VZQL_MAGIC_V3 || magic == VZQL_MAGIC_V2 || magic == VZQL_MAGIC_V1)
		rc = decode_legacy(fname, buf, len, q, magic, legacy, err);
	else
		rc = CORRUPT("%s: not a quota file (magic 0x%08" PRIx32 ")", fname, magic);
	if (rc)
		vzq_quota_free(q);
	return rc;
}

int vzq_encode(const struct vzq_quota *q, unsigned char **out, size_t *len, struct vzq_error *err)
{
	size_t path_len = q->path ? strlen(q->path) : 0;
	struct vzqf_header h;
	struct vzqf_trailer t;
	unsigned char *buf, *p;
	const struct vzq_ugid **recs = NULL;
	size_t size, n = 0;

	if (path_len > VZQF_MAX_PATH)
		return vzq_fail(err, VZQ_ERR_USAGE, ENAMETOOLONG, "quota path %.64s...", q->path);
	if (q->n_ugid > VZQF_MAX_UGID)
		return vzq_fail(err, VZQ_ERR_INTERNAL, 0, "too many uid/gid records (%zu)", q->n_ugid);
	/* The file keeps the records sorted, without those that hold neither usage nor limits. */
	if (q->n_ugid) {
		recs = malloc(q->n_ugid * sizeof(*recs));
		if (!recs)
			return vzq_fail(err, VZQ_ERR_SYS, ENOMEM, "quota file buffer");
	}
	for (size_t i = 0; i < q->n_ugid; i++)
		if (!vzq_ugid_unused(&q->ugid[i]))
			recs[n++] = &q->ugid[i];
	if (n > 1)
		qsort(recs, n, sizeof(*recs), ugid_ptr_cmp);
	size = sizeof(h) + pad8(path_len) + n * sizeof(struct vzqf_ugid) + sizeof(t);
	buf = calloc(1, size);
	if (!buf) {
		free(recs);
		return vzq_fail(err, VZQ_ERR_SYS, ENOMEM, "quota file buffer");
	}
	memset(&h, 0, sizeof(h));
	h.magic = htole32(VZQF_MAGIC);
	h.version = htole32(VZQF_VERSION);
	h.header_size = htole32(sizeof(h));
	h.id = htole32(q->id);
	h.flags = htole32(q->flags);
	h.ugid_limit = htole32(q->ugid_limit);
	h.n_ugid = htole32((uint32_t)n);
	h.path_len = htole32((uint32_t)path_len);
	stat_to_disk(&h.stat, &q->stat);
	h.bexpire = (int64_t)htole64((uint64_t)q->grace.bexpire);
	h.iexpire = (int64_t)htole64((uint64_t)q->grace.iexpire);
	for (int i = 0; i < 2; i++) {
		h.ugid_bexpire[i] = (int64_t)htole64((uint64_t)q->ugid_grace[i].bexpire);
		h.ugid_iexpire[i] = (int64_t)htole64((uint64_t)q->ugid_grace[i].iexpire);
	}
	memcpy(buf, &h, sizeof(h));
	p = buf + sizeof(h);
	if (path_len)
		memcpy(p, q->path, path_len);
	p += pad8(path_len);
	for (size_t i = 0; i < n; i++, p += sizeof(struct vzqf_ugid)) {
		struct vzqf_ugid d;

		memset(&d, 0, sizeof(d));
		d.id = htole32(recs[i]->id);
		d.type = htole32(recs[i]->type);
		d.flags = htole32(recs[i]->flags);
		stat_to_disk(&d.stat, &recs[i]->stat);
		memcpy(p, &d, sizeof(d));
	}
	free(recs);
	t.crc = htole32(vzq_crc32c(0, buf, size - sizeof(t)));
	t.magic = htole32(VZQF_TRAILER_MAGIC);
	memcpy(p, &t, sizeof(t));
	*out = buf;
	*len = size;
	return 0;
}
