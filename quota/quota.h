/* libvzquota: vzquota-style disk quotas of one directory tree, kept in userspace - the quota file,
 * the usage scan, the limit rules, and the exchange with the simfs daemon that enforces them live. */
#ifndef VZQ_QUOTA_H
#define VZQ_QUOTA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * The model (../shared/docs/openvz-userspace.md section 1, adapted to a kernel without quota):
 *
 * - A quota id names one accounting tree. Its state lives in the quota file: limits, grace times,
 *   usage, the second-level (uid/gid) records, and flags. Default file /var/vzquota/quota.ID
 *   (vzquota's "VZ3" place; -R: next to the tree, "VZ4"). Our format is our own (fixed width,
 *   little endian, versioned, checksummed); legacy v1/v2/v3 vzquota files are read (import) and
 *   converted to ours on the first write.
 * - "On" (VZQ_FLAG_ON) means the quota is meant to be enforced: `vzquota on` sets it after a rescan
 *   if the usage cannot be trusted, `vzquota off` clears it.
 * - Enforcement happens in a simfs daemon that serves the tree with -o quota=ID (the role of the
 *   OpenVZ kernel). While it runs it is the "live" holder: it keeps usage exact in memory, holds
 *   the live lock (vzq_live_acquire) for its lifetime, sets VZQ_FLAG_LIVE in the file, writes its
 *   usage back (vzq_merge_usage) at least every few seconds while it changes and at a clean stop,
 *   then clears VZQ_FLAG_LIVE. A file that says LIVE while nobody holds the live lock was left by
 *   a killed daemon: its usage is rescanned by the next `vzquota on` or simfs mount.
 * - VZQ_FLAG_SERVED: a daemon served the quota since `vzquota on` (set with LIVE, kept after a
 *   clean stop, cleared by on). Nothing counts writes made into the tree while no daemon serves
 *   it, so `vzquota off` of a quota never SERVED counts the tree, as `stat` does then; once a
 *   daemon kept the usage, off trusts it.
 * - The file is the only channel between the tools and the daemon. Every change is made under the
 *   file lock (vzq_open with VZQ_RDWR) as read-modify-write: tools change limits, the daemon changes
 *   usage; neither overwrites the other's fields. After changing limits, a tool asks the daemon to
 *   adopt them (VZQ_REQ_RELOAD); before showing usage, it asks it to write it (VZQ_REQ_SYNC).
 */

/* Exit codes of vzquota (upstream's values); library functions return 0 or one of these. */
enum vzq_status {
	VZQ_OK = 0,
	VZQ_ERR_SYS = 1,	/* system error */
	VZQ_ERR_USAGE = 2,	/* bad arguments */
	VZQ_ERR_LIVE = 3,	/* the enforcing daemon refused or failed ("kernel call failed") */
	VZQ_ERR_FILE = 4,	/* quota file corrupt or unwritable */
	VZQ_ERR_RUNNING = 5,	/* already on */
	VZQ_ERR_NOT_RUNNING = 6,
	VZQ_ERR_LOCKED = 7,	/* another process holds the quota file */
	VZQ_ERR_MOUNTPOINT = 8,	/* the tree crosses a mount point */
	VZQ_ERR_UGID_OFF = 9,	/* stat -t: second level inactive */
	VZQ_ERR_DIRTY = 10,	/* show: usage in the file is not trustworthy */
	VZQ_ERR_NOFILE = 11,	/* no quota file */
	VZQ_ERR_INTERNAL = 12,
	VZQ_ERR_NOPATH = 13,	/* no tree path known */
};

struct vzq_error {
	int status;	/* enum vzq_status */
	int err;	/* errno behind it, or 0 */
	char msg[1024];
};

/* File flags (the low three are vzquota's own). */
#define VZQ_FLAG_ON		0x1u	/* quota is on */
#define VZQ_FLAG_DIRTY		0x2u	/* usage must be recomputed */
#define VZQ_FLAG_UGID_ON	0x4u	/* second level requested */
#define VZQ_FLAG_LIVE		0x100u	/* a simfs daemon holds the quota (see above) */
#define VZQ_FLAG_SERVED		0x200u	/* a simfs daemon served it since on (see above) */
#define VZQ_FLAG_UGID_OVER	0x400u	/* the ugid limit was exceeded (see struct vzq_quota) */

/* Usage and limits of one accounting object: bytes (allocated, not apparent) and inodes. Grace
 * ends (btime/itime) are absolute times, 0 when usage is not over the soft limit. */
struct vzq_stat {
	uint64_t bcurrent, bsoft, bhard;
	int64_t btime;
	uint64_t icurrent, isoft, ihard;
	int64_t itime;
};

/* Grace intervals in seconds. */
struct vzq_grace {
	int64_t bexpire, iexpire;
};

enum vzq_ugid_type { VZQ_USER = 0, VZQ_GROUP = 1 };

#define VZQ_UGID_DIRTY 0x2u	/* usage of this record unknown (not loaded) */

struct vzq_ugid {
	uint32_t id;
	uint32_t type;		/* enum vzq_ugid_type */
	struct vzq_stat stat;	/* here a zero limit means no limit */
	uint32_t flags;
};

struct vzq_ugid_index;

/* A quota file's contents. */
struct vzq_quota {
	uint32_t id;
	uint32_t flags;			/* VZQ_FLAG_* */
	struct vzq_stat stat;		/* first level: a zero limit means zero */
	struct vzq_grace grace;
	char *path;			/* accounting tree (NULL or "" with -R: derived from the file name) */
	uint32_t ugid_limit;		/* max uid/gid records (vzquota -u; see below) */
	struct vzq_grace ugid_grace[2];	/* per type: user, group */
	size_t n_ugid;
	struct vzq_ugid *ugid;		/* in no particular order (vzq_ugid_sort: by type, id) */
	size_t ugid_cap;		/* records ugid has room for */
	struct vzq_ugid_index *ugid_index;	/* the library's lookup table; NULL until needed */
};

/*
 * The second level keeps at most ugid_limit records, user and group ones together (the OpenVZ
 * kernel's ugid_limit): a charge that adds usage for an id without a record creates one only
 * while there are fewer, and no id has been refused since the usage was last counted. A refused
 * id is not counted at the second level (the first level counts everything) and the quota is
 * marked VZQ_FLAG_UGID_OVER ("Ugid limit was exceeded: yes"); from then on no id gets a new
 * record, since one made later would miss the usage made meanwhile (the kernel's FIXED_SET),
 * until a count (vzq_scan, which `vzquota on` runs for such a quota) starts over. So a limit of 0
 * with the second level on keeps no records at all, as upstream's. A record that holds neither
 * usage nor limits is dropped, at once by charges and moves, and from every file written.
 */

/* ---- the quota file ------------------------------------------------------------------------- */

/* Where the quota file of @id is: @file if given; with @relative, next to @path (quota.NAME);
 * else /var/vzquota/quota.ID (VZQ_DIR overrides /var/vzquota, for tests). Writes into @out. */
int vzq_file_name(uint32_t id, const char *file, bool relative, const char *path, char *out, size_t len,
		  struct vzq_error *err);

#define VZQ_RDONLY 0
#define VZQ_RDWR 1	/* flock(LOCK_EX|LOCK_NB) held until vzq_close: VZQ_ERR_LOCKED if busy */
#define VZQ_CREATE 2	/* with VZQ_RDWR: create if missing */
#define VZQ_REPLACE 4	/* with VZQ_RDWR: lock only, do not read (init over a damaged file, drop -f);
			 * @q is returned empty */

struct vzq_handle;

/* Opens and reads @fname (ours or legacy; checksum verified: VZQ_ERR_FILE if bad, VZQ_ERR_NOFILE
 * if missing). An empty regular file is the lock name of an init still counting, or left by one
 * that was killed: VZQ_ERR_NOFILE too, except for VZQ_CREATE, which takes it over (removed by
 * vzq_close unless written); VZQ_RDWR without VZQ_REPLACE removes such a leftover (it got the lock:
 * its init is gone). */
int vzq_open(const char *fname, int mode, struct vzq_handle **h, struct vzq_quota *q, struct vzq_error *err);
/* Replaces the file with @q (tmp + fsync + rename + fsync of the directory). Needs VZQ_RDWR. */
int vzq_write(struct vzq_handle *h, const struct vzq_quota *q, struct vzq_error *err);
void vzq_close(struct vzq_handle *h);
void vzq_quota_free(struct vzq_quota *q);
/* Removes the file (vzquota drop). */
int vzq_unlink(struct vzq_handle *h, struct vzq_error *err);

/* The record of (type, id), created (zero limits, zero usage) if @create, whatever ugid_limit says.
 * NULL if absent or out of memory (then err is set). The pointer holds until records are added or
 * removed. */
struct vzq_ugid *vzq_ugid_get(struct vzq_quota *q, uint32_t type, uint32_t id, bool create, struct vzq_error *err);
/* Orders the records by (type, id), as the file and the listings have them. */
void vzq_ugid_sort(struct vzq_quota *q);
/* Whether a record holds neither usage nor limits (such records are dropped). */
bool vzq_ugid_unused(const struct vzq_ugid *u);

/* ---- usage scan ----------------------------------------------------------------------------- */

/* Walks @path like vzquota (section 1.6): the root and everything under it, lstat, hard links
 * once, allocated bytes, never crossing a mount point (VZQ_ERR_MOUNTPOINT). Replaces the usage of
 * @q (first level; with VZQ_FLAG_UGID_ON also every uid/gid record, creating records as the ugid
 * limit allows: VZQ_FLAG_UGID_OVER is cleared first, and set again if an id finds no room) and
 * clears VZQ_FLAG_DIRTY. Records that hold neither usage nor limits are dropped. Grace ends are then brought in line (vzq_update_grace).
 * A count that fails leaves @q as it was (the second level is counted into a copy). */
int vzq_scan(const char *path, struct vzq_quota *q, time_t now, struct vzq_error *err);
/* Checks that @path is a tree vzq_scan() can count (exists, is a directory), as init needs:
 * VZQ_ERR_NOPATH if missing or not a directory, VZQ_ERR_SYS for other errors. */
int vzq_check_tree(const char *path, struct vzq_error *err);

/* ---- limit rules ---------------------------------------------------------------------------- */

/* Sets or clears grace ends after usage or limits changed: over soft with no end -> now + expire;
 * not over soft -> 0. */
void vzq_update_grace(struct vzq_quota *q, time_t now);

/* A change of usage by @bytes and @inodes (either may be negative) for an object owned by
 * @uid/@gid. */
struct vzq_charge {
	int64_t bytes, inodes;
	uid_t uid;
	gid_t gid;
};

/* Whether the charge is allowed (the kernel rules of section 1.7): 0, or -EDQUOT when it would go
 * over a hard limit, or over a soft limit whose grace has expired. Frees (negative) always pass.
 * Changes nothing. */
int vzq_check(const struct vzq_quota *q, const struct vzq_charge *c, time_t now);
/* The same against the hard limits only (soft limits and grace do not refuse). */
int vzq_check_hard(const struct vzq_quota *q, const struct vzq_charge *c);
/* Applies a charge (after vzq_check said yes, or unconditionally for frees and for usage that
 * already exists), starting grace periods as limits are crossed. Records are created as the ugid
 * limit allows and dropped once they hold nothing (see struct vzq_quota); -ENOMEM if one cannot be. */
int vzq_apply(struct vzq_quota *q, const struct vzq_charge *c, time_t now);
/* Moves @bytes and @inodes from the records of @ouid/@ogid to those of @nuid/@ngid (chown): 0, or
 * -EDQUOT (nothing moved) when the second level refuses them. The first level, whose usage does not
 * change, is neither checked nor touched (its grace goes on). */
int vzq_move(struct vzq_quota *q, int64_t bytes, int64_t inodes, uid_t ouid, gid_t ogid, uid_t nuid, gid_t ngid,
	     time_t now);

/* ---- the live holder (simfs) ---------------------------------------------------------------- */

/* The run directory of live quotas: /run/vzquota (VZQ_RUN_DIR overrides, for tests). */
const char *vzq_run_dir(void);

/* Takes the live lock of @id (a flock on RUN_DIR/ID.live held until vzq_live_release):
 * VZQ_ERR_LOCKED if another process holds it. */
int vzq_live_acquire(uint32_t id, int *lock_fd, struct vzq_error *err);
void vzq_live_release(int lock_fd);
/* Whether a process holds the live lock of @id now. */
bool vzq_live_held(uint32_t id);
/* Removes the live lock file and the request socket of @id, unless someone holds the lock: for a
 * quota that was dropped, or that a holder found missing (no quota file). */
void vzq_live_forget(uint32_t id);
/* Removes the request socket left by a holder of @id that is gone (killed), unless someone holds
 * the live lock now. The lock file stays while the quota exists. */
void vzq_live_clear(uint32_t id);

/* Copies the usage fields (first level current + grace ends, and, if @live has the second level
 * on, every record's current, grace ends, and flags) of @live into @file, keeping @file's limits,
 * grace intervals, flags and path. Records in @live missing from @file are added; records of @file
 * that @live does not have hold no usage (their limits stay, else they go). VZQ_FLAG_UGID_OVER
 * is the holder's. */
int vzq_merge_usage(struct vzq_quota *file, const struct vzq_quota *live, struct vzq_error *err);
/* Copies the limits (first level, every record's, grace intervals) of @file into @live, keeping
 * @live's usage, flags and second-level state (UGID_ON, ugid_limit: a change of them takes effect
 * at the holder's next start); then updates grace ends. Limits for an id @live has no record of
 * need one within the ugid limit: if there is no room, the other limits are copied and the answer
 * is VZQ_ERR_LIVE naming that id. */
int vzq_merge_limits(struct vzq_quota *live, const struct vzq_quota *file, time_t now, struct vzq_error *err);

/* Requests from the tools to the live holder, over a SOCK_SEQPACKET socket RUN_DIR/ID.sock
 * (mode 0600). The request is one word; the reply is "ok" or "error CODE MESSAGE". */
#define VZQ_REQ_SYNC "sync"	/* write your usage into the file now */
#define VZQ_REQ_RELOAD "reload"	/* the file's limits changed: adopt them */
#define VZQ_REQ_PATH "path"	/* reply "ok MOUNTPOINT": where the tree is served */
#define VZQ_REQ_STATUS "status"	/* reply "ok UGID_ON UGID_LIMIT": the second level it enforces */
#define VZQ_REQ_USAGE "usage"	/* reply "ok BYTES INODES BTIME ITIME": the first-level usage it holds
				 * (for stat when it cannot write it into the file) */

/* Sends @req to the live holder of @id and waits (at most 10 s) for its reply. VZQ_ERR_NOT_RUNNING
 * if none listens; if it answers an error, VZQ_ERR_FILE when the holder could not read or write the
 * quota file (its code), else VZQ_ERR_LIVE, with its message. @reply may be NULL. */
int vzq_live_request(uint32_t id, const char *req, char *reply, size_t len, struct vzq_error *err);
/* Listening socket for a live holder (the daemon accepts on it and answers). */
int vzq_live_listen(uint32_t id, int *fd, struct vzq_error *err);

/* ---- text formats --------------------------------------------------------------------------- */

/* vzquota time syntax: [[[dd:]hh:]mm:]ss, or N followed by h, d, w, m (30 days) or y (365 days). */
int vzq_parse_time(const char *s, int64_t *seconds);

#ifdef __cplusplus
}
#endif

#endif
