/* Internal definitions shared by the files of libvzquota: error helper, cleanup attributes and the
 * codec boundary between struct vzq_quota and the bytes of a quota file. */
#ifndef VZQ_INTERNAL_H
#define VZQ_INTERNAL_H

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../quota.h"

/* Records an error in @err unless it already holds one; returns the status @err holds. */
__attribute__((format(printf, 4, 5)))
int vzq_fail(struct vzq_error *err, int status, int errnum, const char *fmt, ...);

static inline void vzq_cleanup_freep(void *p)
{
	free(*(void **)p);
}
#define cleanup_free __attribute__((cleanup(vzq_cleanup_freep)))

static inline void vzq_cleanup_closep(int *fd)
{
	if (*fd >= 0)
		close(*fd);
}
#define cleanup_close __attribute__((cleanup(vzq_cleanup_closep)))

/* codec.c: @buf of @len bytes (a whole file) into @q; VZQ_ERR_FILE with a message naming @fname if
 * anything is out of place. *legacy is set to the legacy version (1-3) or 0 for ours. */
int vzq_decode(const char *fname, const unsigned char *buf, size_t len, struct vzq_quota *q, int *legacy,
	       struct vzq_error *err);
/* The most bytes a quota file can have whose first @len bytes are @buf, as its header says (v1/v2
 * files may end with an 8-byte checksum); 0 when that takes more bytes or the file is no quota
 * file (vzq_decode says what is wrong). Lets a reader refuse a file grown past its header's size
 * without reading it. */
#define VZQ_HEAD_MAX 8192
uint64_t vzq_declared_size(const unsigned char *buf, size_t len);
/* @q into a new buffer (*out, *len) in our format. */
int vzq_encode(const struct vzq_quota *q, unsigned char **out, size_t *len, struct vzq_error *err);
uint32_t vzq_crc32c(uint32_t crc, const void *buf, size_t len);

/* The order of records in the file (and after vzq_ugid_sort): by (type, id). */
int vzq_ugid_cmp(uint32_t type_a, uint32_t id_a, uint32_t type_b, uint32_t id_b);

/* ugid.c: the record of (type, id) for a charge that adds usage, created if there is room for
 * it: fewer than ugid_limit records and no id refused since the last count. Else *out is NULL
 * and the quota is marked VZQ_FLAG_UGID_OVER: that id's usage is not counted at the second level.
 * 0, or -ENOMEM. */
int vzq_ugid_add(struct vzq_quota *q, uint32_t type, uint32_t id, struct vzq_ugid **out);
/* Removes record @u (of @q): the last record takes its place. */
void vzq_ugid_remove(struct vzq_quota *q, struct vzq_ugid *u);
/* Removes every record that holds neither usage nor limits. */
void vzq_ugid_prune(struct vzq_quota *q);
void vzq_ugid_index_free(struct vzq_quota *q);

#endif
