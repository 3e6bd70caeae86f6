/* The one-line error message of libploop and libvzquota: formatted, the errno text appended,
 * control bytes (quoted from files or arguments) replaced so that it stays one line. */
#ifndef COMMON_ERRMSG_H
#define COMMON_ERRMSG_H

#include <stdarg.h>
#include <stddef.h>

void errmsg_format(char *msg, size_t len, int errnum, const char *fmt, va_list ap);

#endif
