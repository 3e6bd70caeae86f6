/* On-disk layouts of the quota file: ours (fixed width, little endian, versioned, crc32c) and the
 * legacy vzquota v1/v2/v3 files of x86_64 hosts, which are only read. Only lib/codec.c uses these. */
#ifndef VZQ_QUOTA_FORMAT_H
#define VZQ_QUOTA_FORMAT_H

#include <stdint.h>

/* ---- ours ----
 * header (144) | path (path_len bytes, zero padded to 8) | n_ugid records (80 each) | trailer (8)
 * All integers little endian. The trailer's crc32c covers every byte before it. */
#define VZQF_MAGIC 0x46515a56u		/* "VZQF" */
#define VZQF_VERSION 1u
#define VZQF_TRAILER_MAGIC 0x444e4551u	/* "QEND" */
#define VZQF_MAX_PATH 4096u
#define VZQF_MAX_UGID (1u << 24)

struct vzqf_stat {
	uint64_t bcurrent, bsoft, bhard;
	int64_t btime;
	uint64_t icurrent, isoft, ihard;
	int64_t itime;
} __attribute__((packed));
_Static_assert(sizeof(struct vzqf_stat) == 64, "vzqf_stat");

struct vzqf_header {
	uint32_t magic;
	uint32_t version;
	uint32_t header_size;		/* sizeof(struct vzqf_header) */
	uint32_t id;
	uint32_t flags;			/* VZQ_FLAG_* */
	uint32_t ugid_limit;
	uint32_t n_ugid;
	uint32_t path_len;
	struct vzqf_stat stat;
	int64_t bexpire, iexpire;
	int64_t ugid_bexpire[2], ugid_iexpire[2];	/* user, group */
} __attribute__((packed));
_Static_assert(sizeof(struct vzqf_header) == 144, "vzqf_header");

struct vzqf_ugid {
	uint32_t id;
	uint32_t type;
	uint32_t flags;
	uint32_t reserved;		/* zero */
	struct vzqf_stat stat;
} __attribute__((packed));
_Static_assert(sizeof(struct vzqf_ugid) == 80, "vzqf_ugid");

struct vzqf_trailer {
	uint32_t crc;			/* crc32c of everything before the trailer */
	uint32_t magic;			/* VZQF_TRAILER_MAGIC */
} __attribute__((packed));
_Static_assert(sizeof(struct vzqf_trailer) == 8, "vzqf_trailer");

/* ---- legacy vzquota (kolyshkin/vzquota quota_io.h; native x86_64 layout, read only) ----
 * header (8) | stat (v1: 64, v2: 80, v3: 80) | size_t path_len | path |
 * v3 only: ugid_info (64) | records (72 each) | u64 xor checksum of every 64-bit word before it */
#define VZQL_MAGIC_V3 0xFEDCBC27u
#define VZQL_MAGIC_V2 0xFEDCBB00u
#define VZQL_MAGIC_V1 0xFEDCBA98u

struct vzql_header {
	uint32_t magic;
	uint32_t flags;
} __attribute__((packed));
_Static_assert(sizeof(struct vzql_header) == 8, "vzql_header");

struct vzql_dq_stat {
	uint64_t bhardlimit, bsoftlimit;
	int64_t btime;
	uint64_t bcurrent;
	uint32_t ihardlimit, isoftlimit;
	int64_t itime;
	uint32_t icurrent;
	uint32_t pad;
} __attribute__((packed));
_Static_assert(sizeof(struct vzql_dq_stat) == 56, "vzql_dq_stat");

struct vzql_dq_info {
	int64_t bexpire, iexpire;
	uint32_t flags;
	uint32_t pad;
} __attribute__((packed));
_Static_assert(sizeof(struct vzql_dq_info) == 24, "vzql_dq_info");

struct vzql_stat_v3 {
	struct vzql_dq_stat dq_stat;
	struct vzql_dq_info dq_info;
} __attribute__((packed));
_Static_assert(sizeof(struct vzql_stat_v3) == 80, "vzql_stat_v3");

struct vzql_stat_v2 {
	uint64_t bhardlimit, bsoftlimit;
	int64_t bexpire, btime;
	uint64_t bcurrent;
	uint32_t ihardlimit, isoftlimit, icurrent;
	uint32_t pad1;
	int64_t iexpire, itime;
	int32_t options;
	uint32_t pad2;
} __attribute__((packed));
_Static_assert(sizeof(struct vzql_stat_v2) == 80, "vzql_stat_v2");

struct vzql_stat_v1 {
	uint32_t bhardlimit, bsoftlimit;	/* 1 KiB blocks */
	int64_t bexpire, btime;
	uint32_t bcurrent;
	uint32_t ihardlimit, isoftlimit, icurrent;
	int64_t iexpire, itime;
	int32_t options;
	uint32_t pad;
} __attribute__((packed));
_Static_assert(sizeof(struct vzql_stat_v1) == 64, "vzql_stat_v1");

struct vzql_ugid_info {
	uint32_t limit, count, flags;
	uint32_t buf_size;		/* records that follow */
	struct vzql_dq_info info[2];	/* user, group */
} __attribute__((packed));
_Static_assert(sizeof(struct vzql_ugid_info) == 64, "vzql_ugid_info");

struct vzql_ugid {
	uint32_t id, type;
	struct vzql_dq_stat stat;
	uint32_t flags;
	uint32_t pad;
} __attribute__((packed));
_Static_assert(sizeof(struct vzql_ugid) == 72, "vzql_ugid");

#endif
