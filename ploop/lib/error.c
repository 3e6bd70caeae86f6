/* Error reporting and optional logging for libploop: the library fills a struct ploop_error and
 * hands verbose messages to a callback; it never prints. */
#include <stdio.h>

#include "../../common/errmsg.h"
#include "internal.h"

static ploop_log_fn log_fn;
static void *log_ctx;

void ploop_set_log(ploop_log_fn fn, void *ctx)
{
	log_fn = fn;
	log_ctx = ctx;
}

void ploop_log(int level, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;

	if (!log_fn)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	log_fn(level, buf, log_ctx);
}

/* Records the first error of an operation; later calls (from cleanup paths) keep it. */
int ploop_fail(struct ploop_error *err, int status, int errnum, const char *fmt, ...)
{
	va_list ap;

	if (!err || err->status)
		return err && err->status ? err->status : status;
	err->status = status;
	err->err = errnum;
	va_start(ap, fmt);
	errmsg_format(err->msg, sizeof(err->msg), errnum, fmt, ap);
	va_end(ap);
	return status;
}
