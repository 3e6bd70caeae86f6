/* Error reporting of libvzquota: the library fills a struct vzq_error and never prints. */
#include <stdio.h>

#include "internal.h"

int vzq_fail(struct vzq_error *err, int status, int errnum, const char *fmt, ...)
{
	va_list ap;
	size_t n;

	if (!err)
		return status;
	if (err->status)
		return err->status;
	err->status = status;
	err->err = errnum;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
	n = strlen(err->msg);
	if (errnum && n < sizeof(err->msg) - 4)
		snprintf(err->msg + n, sizeof(err->msg) - n, ": %s", strerror(errnum));
	/* One line, whatever bytes from a file or an argument the message quotes. */
	for (char *c = err->msg; *c; c++)
		if ((unsigned char)*c < 0x20 || *c == 0x7f)
			*c = '?';
	return status;
}
