/* Error reporting of libvzquota: the library fills a struct vzq_error and never prints. */
#include <stdio.h>

#include "../../common/errmsg.h"
#include "internal.h"

int vzq_fail(struct vzq_error *err, int status, int errnum, const char *fmt, ...)
{
	va_list ap;

	if (!err)
		return status;
	if (err->status)
		return err->status;
	err->status = status;
	err->err = errnum;
	va_start(ap, fmt);
	errmsg_format(err->msg, sizeof(err->msg), errnum, fmt, ap);
	va_end(ap);
	return status;
}
