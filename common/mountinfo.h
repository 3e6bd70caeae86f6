/* /proc/self/mountinfo fields, for libploop and simfs. */
#ifndef COMMON_MOUNTINFO_H
#define COMMON_MOUNTINFO_H

#include <stddef.h>

/* A path field of mountinfo into @out (@len bytes, always terminated): the kernel escapes blanks,
 * tabs, newlines and backslashes in it as octal (\040). */
void mountinfo_unescape(const char *in, char *out, size_t len);

#endif
