/* See errmsg.h. */
#include "errmsg.h"

#include <stdio.h>
#include <string.h>

void errmsg_format(char *msg, size_t len, int errnum, const char *fmt, va_list ap)
{
	size_t n;

	vsnprintf(msg, len, fmt, ap);
	n = strlen(msg);
	if (errnum && n + 4 < len)
		snprintf(msg + n, len - n, ": %s", strerror(errnum));
	for (char *c = msg; *c; c++)
		if ((unsigned char)*c < 0x20 || *c == 0x7f)
			*c = '?';
}
