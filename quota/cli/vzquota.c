/* vzquota: the command line of libvzquota, compatible with OpenVZ's vzquota (commands, options,
 * exit codes, output). Parses, calls the library, prints; the quota itself lives in quota/lib. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../quota.h"

#define VERSION "3.0-vzq"

static int verbose = 1;	/* 0 with -q, 2+ with -v */
static bool batch;

enum cmd { C_INIT, C_ON, C_OFF, C_DROP, C_SETLIMIT, C_SETLIMIT2, C_RELOAD2, C_STAT, C_SHOW };
static const char *const cmd_names[] = { "init", "on", "off", "drop", "setlimit", "setlimit2", "reload2", "stat",
					 "show" };

/* What the command line says. has_* for each optional limit. */
struct opts {
	enum cmd cmd;
	uint32_t id;
	const char *path, *file;
	bool relative, force, ugid_info, nocheck;
	bool has_bsoft, has_bhard, has_isoft, has_ihard, has_bexp, has_iexp, has_sub, has_ugid_limit;
	uint64_t bsoft, bhard, isoft, ihard;
	int64_t bexp, iexp;
	bool sub;
	uint32_t ugid_limit;
	/* setlimit2 */
	int set2_type;	/* VZQ_USER / VZQ_GROUP, -2 if not given */
	bool set2_grace;	/* -t: the type's grace times (-u if no type given) */
	uint32_t set2_id;
	const char *pos[8];
	int npos;
};

/* Warnings are held back until the command is done: printed if it succeeded (or reported what it
 * was asked, exit 9 or 10), dropped if it failed, so that an error is exactly one line. */
static char *warnings;
static size_t warnings_len;

static void held(const char *kind, const char *fmt, va_list ap)
{
	char line[1200];
	char *n;
	int len;

	if (verbose < 1)
		return;
	len = vsnprintf(line, sizeof(line), fmt, ap);
	if (len < 0)
		return;
	if ((size_t)len >= sizeof(line))
		len = sizeof(line) - 1;
	n = realloc(warnings, warnings_len + len + 32);
	if (!n)
		return;
	warnings = n;
	warnings_len += sprintf(warnings + warnings_len, "vzquota: (%s) %s\n", kind, line);
}

__attribute__((format(printf, 1, 2))) static void warnx_(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	held("warning", fmt, ap);
	va_end(ap);
}

/* Held back as the warnings are: a note on what the command did. */
__attribute__((format(printf, 1, 2))) static void notice(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	held("notice", fmt, ap);
	va_end(ap);
}

static int flush_warnings(int rc)
{
	if (warnings && (rc == 0 || rc == VZQ_ERR_UGID_OFF || rc == VZQ_ERR_DIRTY))
		fputs(warnings, stderr);
	free(warnings);
	warnings = NULL;
	warnings_len = 0;
	return rc;
}

__attribute__((format(printf, 1, 2))) static void info(const char *fmt, ...)
{
	va_list ap;

	if (verbose < 2)
		return;
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

__attribute__((format(printf, 2, 3))) static int fail(int status, const char *fmt, ...)
{
	va_list ap;

	char msg[2048];

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	/* one line, whatever an argument it quotes holds */
	for (char *c = msg; *c; c++)
		if ((unsigned char)*c < 0x20 || *c == 0x7f)
			*c = '?';
	fprintf(stderr, "vzquota: %s\n", msg);
	return status;
}

static int lib_fail(const struct vzq_error *err)
{
	return fail(err->status ? err->status : VZQ_ERR_INTERNAL, "%s", err->msg[0] ? err->msg : "failed");
}

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: vzquota [options] command quotaid [command-options]\n"
		"Options: -h/--help, -V/--version, -q/--quiet, -v/--verbose (repeatable), -b/--batch\n"
		"  (batch output of stat, show); short ones combine (-qb)\n"
		"Commands (each also takes -p/--path path and -c/--quota-file file or -R/--relative):\n"
		"  init      quotaid -p path -b bsoft -B bhard -i isoft -I ihard -e bgrace -n igrace\n"
		"            [-s 0|1] [-u ugid_limit]                    create the quota file, count usage\n"
		"  on        quotaid [-f] [--nocheck] [limits]           turn quota on\n"
		"  off       quotaid [-f]                                turn quota off\n"
		"  drop      quotaid [-f]                                remove the quota file\n"
		"  setlimit  quotaid [-f] [limits]                       change limits\n"
		"  setlimit2 quotaid -u|-g id bsoft bhard isoft ihard    uid/gid limits\n"
		"  setlimit2 quotaid [-u|-g] -t bgrace igrace            user (default) or group grace\n"
		"  reload2   quotaid                                     push uid/gid limits to simfs\n"
		"  stat      quotaid [-f] [-t/--user-group]              usage now\n"
		"  show      quotaid [-t/--user-group]                   what the quota file says\n"
		"Limits: -b/--block-softlimit, -B/--block-hardlimit (1k blocks), -i/--inode-softlimit,\n"
		"  -I/--inode-hardlimit, -e/--block-exptime, -n/--inode-exptime (time: [[[dd:]hh:]mm:]ss\n"
		"  or N{h,d,w,m,y}), -s/--sub-quotas 0|1, -u/--ugid-limit N; -f/--force;\n"
		"  -r/--rsquash is accepted and ignored\n"
		"Environment: VZQ_DIR (default /var/vzquota), VZQ_RUN_DIR (default /run/vzquota)\n");
}

static int parse_u64(const char *s, uint64_t max, uint64_t *out)
{
	char *end;
	unsigned long long v;

	if (!s || *s < '0' || *s > '9')	/* no sign, no blank: strtoull would take them */
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || v > max)
		return -1;
	*out = v;
	return 0;
}

/* 1k blocks; vzctl's "unlimited" (LONG_MAX, or more) saturates at the largest byte count. */
static int parse_blocks(const char *s, uint64_t *bytes)
{
	uint64_t kib;

	if (parse_u64(s, UINT64_MAX, &kib))
		return -1;
	*bytes = kib > UINT64_MAX / 1024 ? UINT64_MAX : kib * 1024;
	return 0;
}

/* Inode counts are 32-bit (upstream's, and the kernel's): vzctl's "unlimited" (LONG_MAX) and
 * anything above saturates at UINT32_MAX, as upstream shows it. */
static int parse_inodes(const char *s, uint64_t *inodes)
{
	if (parse_u64(s, UINT64_MAX, inodes))
		return -1;
	if (*inodes > UINT32_MAX)
		*inodes = UINT32_MAX;
	return 0;
}

/* setlimit2's grace form (-t, with -u or -g as the type, as upstream) takes no ugid: whether
 * the command line has -t decides whether -u/-g take an argument. */
static bool setlimit2_grace(int argc, char **argv)
{
	for (int i = 1; i < argc && strcmp(argv[i], "--"); i++) {
		const char *a = argv[i];

		if (a[0] == '-' && a[1] != '-' && strchr(a, 't') && strspn(a + 1, "ugtR") == strlen(a + 1))
			return true;
		/* --user-group, or as getopt_long takes it, abbreviated (--u alone is ambiguous) */
		if (strlen(a) >= 4 && !strncmp("--user-group", a, strlen(a)))
			return true;
	}
	return false;
}

enum { OPT_NOCHECK = 256 };

/* An argument that is no option: the quota id first, then the values of setlimit2. */
static int add_operand(struct opts *o, const char *a, bool *have_id)
{
	uint64_t v;

	if (!*have_id) {
		if (parse_u64(a, UINT32_MAX, &v))
			return fail(VZQ_ERR_USAGE, "bad quota id '%s'", a);
		o->id = (uint32_t)v;
		*have_id = true;
	} else if (o->npos < (int)(sizeof(o->pos) / sizeof(o->pos[0]))) {
		o->pos[o->npos++] = a;
	} else {
		return fail(VZQ_ERR_USAGE, "too many arguments");
	}
	return 0;
}

static int parse_args(int argc, char **argv, struct opts *o)
{
	static const struct option longs[] = {
		{ "block-softlimit", required_argument, NULL, 'b' },
		{ "block-hardlimit", required_argument, NULL, 'B' },
		{ "block-exptime", required_argument, NULL, 'e' },
		{ "inode-softlimit", required_argument, NULL, 'i' },
		{ "inode-hardlimit", required_argument, NULL, 'I' },
		{ "inode-exptime", required_argument, NULL, 'n' },
		{ "sub-quotas", required_argument, NULL, 's' },
		{ "ugid-limit", required_argument, NULL, 'u' },
		{ "quota-file", required_argument, NULL, 'c' },
		{ "relative", no_argument, NULL, 'R' },
		{ "force", no_argument, NULL, 'f' },
		{ "user-group", no_argument, NULL, 't' },
		{ "nocheck", no_argument, NULL, OPT_NOCHECK },
		{ "rsquash", required_argument, NULL, 'r' },
		{ "path", required_argument, NULL, 'p' },
		{ NULL, 0, NULL, 0 },
	};
	const char *shorts;
	bool have_id = false;
	int c;

	switch (o->cmd) {
	case C_INIT: shorts = "-:p:c:Rb:B:i:I:e:n:s:u:r:"; break;
	case C_ON:
	case C_SETLIMIT: shorts = "-:p:c:Rfb:B:i:I:e:n:s:u:r:"; break;
	case C_OFF:
	case C_DROP: shorts = "-:p:c:Rfr:"; break;
	case C_SETLIMIT2: shorts = setlimit2_grace(argc, argv) ? "-:p:c:Rugtr:" : "-:p:c:Ru:g:tr:"; break;
	case C_RELOAD2: shorts = "-:p:c:Rr:"; break;
	case C_STAT: shorts = "-:p:c:Rftr:"; break;
	default: shorts = "-:p:c:Rtr:"; break;
	}
	o->set2_type = -2;
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, shorts, longs, NULL)) != -1) {
		const char *a = optarg;
		uint64_t v;
		bool limits = o->cmd == C_INIT || o->cmd == C_ON || o->cmd == C_SETLIMIT;

		switch (c) {
		case 1:
			if (add_operand(o, a, &have_id))
				return VZQ_ERR_USAGE;
			break;
		case 'p': o->path = a; break;
		case 'c': o->file = a; break;
		case 'R': o->relative = true; break;
		case 'f': o->force = true; break;
		case 'r': break;	/* -r/--rsquash 0|1 (vzctl passes -r 0): accepted, as upstream, and ignored */
		case 'b':
			if (parse_blocks(a, &o->bsoft))
				return fail(VZQ_ERR_USAGE, "bad block soft limit '%s'", a);
			o->has_bsoft = true;
			break;
		case 'B':
			if (parse_blocks(a, &o->bhard))
				return fail(VZQ_ERR_USAGE, "bad block hard limit '%s'", a);
			o->has_bhard = true;
			break;
		case 'i':
			if (parse_inodes(a, &o->isoft))
				return fail(VZQ_ERR_USAGE, "bad inode soft limit '%s'", a);
			o->has_isoft = true;
			break;
		case 'I':
			if (parse_inodes(a, &o->ihard))
				return fail(VZQ_ERR_USAGE, "bad inode hard limit '%s'", a);
			o->has_ihard = true;
			break;
		case 'e':
			if (vzq_parse_time(a, &o->bexp))
				return fail(VZQ_ERR_USAGE, "bad block expiry time '%s'", a);
			o->has_bexp = true;
			break;
		case 'n':
			if (vzq_parse_time(a, &o->iexp))
				return fail(VZQ_ERR_USAGE, "bad inode expiry time '%s'", a);
			o->has_iexp = true;
			break;
		case 's':
			if (strcmp(a, "0") && strcmp(a, "1"))
				return fail(VZQ_ERR_USAGE, "-s takes 0 or 1, not '%s'", a);
			o->sub = a[0] == '1';
			o->has_sub = true;
			break;
		case 'u':
		case 'g':
			if (limits) {
				if (parse_u64(a, UINT32_MAX, &v))
					return fail(VZQ_ERR_USAGE, "bad ugid limit '%s'", a);
				o->ugid_limit = (uint32_t)v;
				o->has_ugid_limit = true;
				break;
			}
			if (o->set2_type != -2)
				return fail(VZQ_ERR_USAGE, "give one of -u, -g");
			if (a && parse_u64(a, UINT32_MAX, &v))	/* no argument with -t */
				return fail(VZQ_ERR_USAGE, "bad %s id '%s'", c == 'u' ? "user" : "group", a);
			o->set2_type = c == 'u' ? VZQ_USER : VZQ_GROUP;
			o->set2_id = a ? (uint32_t)v : 0;
			break;
		case 't':
			if (o->cmd == C_SETLIMIT2) {
				o->set2_grace = true;
			} else {
				o->ugid_info = true;
			}
			break;
		case OPT_NOCHECK:
			if (o->cmd != C_ON)
				return fail(VZQ_ERR_USAGE, "--nocheck is an option of on");
			o->nocheck = true;
			break;
		case ':': return fail(VZQ_ERR_USAGE, "option %s needs an argument", argv[optind - 1]);
		default:
			return fail(VZQ_ERR_USAGE, "%s: unknown option %s", cmd_names[o->cmd], argv[optind - 1]);
		}
	}
	for (; optind < argc; optind++)	/* after "--" */
		if (add_operand(o, argv[optind], &have_id))
			return VZQ_ERR_USAGE;
	if (!have_id)
		return fail(VZQ_ERR_USAGE, "%s: quota id missing", cmd_names[o->cmd]);
	if (o->file && o->relative)
		return fail(VZQ_ERR_USAGE, "-c and -R exclude each other");
	if (o->cmd == C_SETLIMIT2) {
		int want = o->set2_grace ? 2 : 4;

		if (o->set2_grace && o->set2_type == -2)
			o->set2_type = VZQ_USER;
		if (o->set2_type == -2)
			return fail(VZQ_ERR_USAGE, "setlimit2: give -u ID, -g ID or -t");
		if (o->npos != want)
			return fail(VZQ_ERR_USAGE, "setlimit2: %s takes %d values", o->set2_grace ? "-t" : "-u/-g",
				    want);
	} else if (o->npos) {
		return fail(VZQ_ERR_USAGE, "%s: unexpected argument '%s'", cmd_names[o->cmd], o->pos[0]);
	}
	if (o->cmd == C_INIT) {
		if (!o->path)
			return fail(VZQ_ERR_USAGE, "init: -p path is required");
		if (!(o->has_bsoft && o->has_bhard && o->has_isoft && o->has_ihard && o->has_bexp && o->has_iexp))
			return fail(VZQ_ERR_USAGE, "init: all of -b -B -i -I -e -n are required");
	}
	if (o->cmd == C_SETLIMIT && !(o->has_bsoft || o->has_bhard || o->has_isoft || o->has_ihard || o->has_bexp ||
				      o->has_iexp || o->has_sub || o->has_ugid_limit || o->path || o->force))
		return fail(VZQ_ERR_USAGE, "setlimit: nothing to set");
	return 0;
}

/* ---- the quota file of the command ---- */

static int quota_file(const struct opts *o, bool create, char *out, size_t len)
{
	struct vzq_error err = { 0 };
	struct stat st;

	if (o->file || o->relative || create) {
		if (vzq_file_name(o->id, o->file, o->relative, o->path, out, len, &err))
			return lib_fail(&err);
		return 0;
	}
	/* vzquota's lookup: the file next to -p if there is one, else the default place */
	if (o->path && !vzq_file_name(o->id, NULL, true, o->path, out, len, &err) && stat(out, &st) == 0)
		return 0;
	memset(&err, 0, sizeof(err));
	if (vzq_file_name(o->id, NULL, false, NULL, out, len, &err))
		return lib_fail(&err);
	return 0;
}

/* The tree of the quota: -p, else the stored path. */
static const char *tree_path(const struct opts *o, const struct vzq_quota *q)
{
	if (o->path)
		return o->path;
	if (q->path && *q->path)
		return q->path;
	return NULL;
}

static void apply_limits(const struct opts *o, struct vzq_quota *q)
{
	if (o->has_bsoft)
		q->stat.bsoft = o->bsoft;
	if (o->has_bhard)
		q->stat.bhard = o->bhard;
	if (o->has_isoft)
		q->stat.isoft = o->isoft;
	if (o->has_ihard)
		q->stat.ihard = o->ihard;
	if (o->has_bexp)
		q->grace.bexpire = o->bexp;
	if (o->has_iexp)
		q->grace.iexpire = o->iexp;
	if (o->has_ugid_limit)
		q->ugid_limit = o->ugid_limit;
	if (o->has_sub) {
		if (o->sub)
			q->flags |= VZQ_FLAG_UGID_ON;
		else
			q->flags &= ~VZQ_FLAG_UGID_ON;
	}
}

static int set_stored_path(const struct opts *o, struct vzq_quota *q)
{
	char real[PATH_MAX];
	char *p;

	if (!o->path)
		return 0;
	p = strdup(o->relative ? "" : realpath(o->path, real) ? real : o->path);
	if (!p)
		return fail(VZQ_ERR_SYS, "out of memory");
	free(q->path);
	q->path = p;
	return 0;
}

static void warn_limits(const struct vzq_quota *q)
{
	if (q->stat.bhard < q->stat.bsoft)
		warnx_("block hard limit %" PRIu64 " is below the soft limit %" PRIu64, q->stat.bhard / 1024,
		       q->stat.bsoft / 1024);
	if (q->stat.ihard < q->stat.isoft)
		warnx_("inode hard limit %" PRIu64 " is below the soft limit %" PRIu64, q->stat.ihard, q->stat.isoft);
	if (q->stat.bcurrent > q->stat.bsoft)
		warnx_("block usage %" PRIu64 " is over the soft limit %" PRIu64, q->stat.bcurrent / 1024,
		       q->stat.bsoft / 1024);
	if (q->stat.icurrent > q->stat.isoft)
		warnx_("inode usage %" PRIu64 " is over the soft limit %" PRIu64, q->stat.icurrent, q->stat.isoft);
	if (!(q->flags & VZQ_FLAG_UGID_ON))
		return;
	/* as upstream: the second level keeps no more records than the ugid limit, so none with 0 */
	if (!q->ugid_limit)
		warnx_("user/group quota is on with a ugid limit of 0: no uid/gid usage is counted (-u N)");
	else if (q->flags & VZQ_FLAG_UGID_OVER)
		warnx_("ugid limit %" PRIu32 " exceeded: uids/gids without a record are not counted", q->ugid_limit);
}

/* Where a live holder serves the tree, for messages. */
static void live_where(uint32_t id, char *out, size_t len)
{
	struct vzq_error err = { 0 };

	if (vzq_live_request(id, VZQ_REQ_PATH, out, len, &err) || !*out)
		snprintf(out, len, "(a simfs daemon)");
}

/* The second level the live holder of @id enforces (it keeps the one it started with): 0, or
 * the request's error. */
static int live_ugid(uint32_t id, bool *on, uint32_t *limit, struct vzq_error *err)
{
	char reply[64];
	unsigned int o, l;
	int rc = vzq_live_request(id, VZQ_REQ_STATUS, reply, sizeof(reply), err);

	if (rc)
		return rc;
	if (sscanf(reply, "%u %u", &o, &l) != 2) {
		err->status = VZQ_ERR_LIVE;
		snprintf(err->msg, sizeof(err->msg), "quota %u: status: unexpected answer '%s'", id, reply);
		return err->status;
	}
	*on = o != 0;
	*limit = l;
	return 0;
}

/* The first-level usage the live holder of @id keeps now: 0, or the request's error. */
static int live_usage(uint32_t id, struct vzq_stat *st, struct vzq_error *err)
{
	char reply[128];
	unsigned long long b, i;
	long long bt, it;
	int rc = vzq_live_request(id, VZQ_REQ_USAGE, reply, sizeof(reply), err);

	if (rc)
		return rc;
	if (sscanf(reply, "%llu %llu %lld %lld", &b, &i, &bt, &it) != 4) {
		err->status = VZQ_ERR_LIVE;
		snprintf(err->msg, sizeof(err->msg), "quota %u: usage: unexpected answer '%s'", id, reply);
		return err->status;
	}
	st->bcurrent = b;
	st->icurrent = i;
	st->btime = bt;
	st->itime = it;
	return 0;
}

/* Asks the simfs daemon serving the quota, if any, to adopt the limits just written. If it refuses,
 * @undo (when not NULL) puts the file back as it was. */
static int reload_live(const struct opts *o, void (*undo)(const struct opts *o))
{
	struct vzq_error err = { 0 };

	if (!vzq_live_held(o->id))
		return 0;
	if (vzq_live_request(o->id, VZQ_REQ_RELOAD, NULL, 0, &err)) {
		if (!undo)
			return fail(VZQ_ERR_LIVE, "limits written, but the simfs daemon did not adopt them: %s", err.msg);
		undo(o);
		return fail(VZQ_ERR_LIVE, "quota %u: %s; the quota file is left as it was", o->id, err.msg);
	}
	info("simfs daemon of quota %u reloaded the limits", o->id);
	return 0;
}

static int scan(const char *path, struct vzq_quota *q)
{
	struct vzq_error err = { 0 };

	if (!path)
		return fail(VZQ_ERR_NOPATH, "quota %u: no tree path known, use -p", q->id);
	info("counting the usage of %s", path);
	if (vzq_scan(path, q, time(NULL), &err))
		return lib_fail(&err);
	return 0;
}

/* ---- output ---- */

/* A time as upstream prints grace (time2str with TF_ROUND): rounded to the minute, then Ndays if
 * a day or more, else hh:mm. */
static void time_round(int64_t t, char *buf, size_t len)
{
	int64_t minutes = t > INT64_MAX - 30 ? t / 60 : (t + 30) / 60;

	if (minutes / 60 / 24)
		snprintf(buf, len, "%" PRId64 "days", minutes / 60 / 24);
	else
		snprintf(buf, len, "%02" PRId64 ":%02" PRId64, minutes / 60, minutes % 60);
}

/* Time left of a grace period: empty if none, "none" if over. */
static void grace_left(int64_t end, char *buf, size_t len)
{
	int64_t now = time(NULL);

	if (!end)
		buf[0] = 0;
	else if (end <= now)
		snprintf(buf, len, "none");
	else
		time_round(end - now, buf, len);
}

/* A grace interval: empty if none. */
static void interval(int64_t t, char *buf, size_t len)
{
	if (!t)
		buf[0] = 0;
	else
		time_round(t, buf, len);
}

static char over_mark(uint64_t cur, uint64_t soft, uint64_t hard)
{
	return (soft && cur > soft) || (hard && cur > hard) ? '*' : ' ';
}

static void print_status(const struct vzq_quota *q)
{
	const struct vzq_stat *s = &q->stat;
	int64_t btime = s->bcurrent <= s->bsoft ? 0 : s->btime;
	int64_t itime = s->icurrent <= s->isoft ? 0 : s->itime;
	char buf[32];

	if (batch) {
		printf("%14" PRIu64 " %14" PRIu64 " %14" PRIu64 " %14" PRId64 " %14" PRId64 "\n", s->bcurrent / 1024,
		       s->bsoft / 1024, s->bhard / 1024, btime, q->grace.bexpire);
		printf("%14" PRIu64 " %14" PRIu64 " %14" PRIu64 " %14" PRId64 " %14" PRId64 "\n", s->icurrent, s->isoft,
		       s->ihard, itime, q->grace.iexpire);
		return;
	}
	printf("%11s %14s  %14s %14s %8s\n", "resource", "usage", "softlimit", "hardlimit", "grace");
	grace_left(btime, buf, sizeof(buf));
	printf("%11s %14" PRIu64 "%c %14" PRIu64 " %14" PRIu64 " %8s\n", "1k-blocks", s->bcurrent / 1024,
	       over_mark(s->bcurrent, s->bsoft, s->bhard), s->bsoft / 1024, s->bhard / 1024, buf);
	grace_left(itime, buf, sizeof(buf));
	printf("%11s %14" PRIu64 "%c %14" PRIu64 " %14" PRIu64 " %8s\n", "inodes", s->icurrent,
	       over_mark(s->icurrent, s->isoft, s->ihard), s->isoft, s->ihard, buf);
}

/* @configured: -1 unknown (stat -f); @active: second level enforced now. Records are listed in
 * (type, id) order. */
static void print_ugid_status(struct vzq_quota *q, int configured, bool active)
{
	static const char *const type_names[] = { "user", "group" };
	size_t total = q->n_ugid, loaded = 0;
	/* "exceeded" is the kernel's FIXED_SET: an id was refused a record (or more records than
	 * the limit are kept, after the limit was lowered) */
	bool exceeded = (q->flags & VZQ_FLAG_UGID_OVER) || total > q->ugid_limit;
	char b1[32], b2[32];

	vzq_ugid_sort(q);
	/* loaded: what the enforcing side holds, every record but those whose usage is unknown */
	for (size_t i = 0; active && i < total; i++)
		loaded += !(q->ugid[i].flags & VZQ_UGID_DIRTY);
	if (batch) {
		printf("%d %d\n", configured, active ? 1 : 0);
		printf("%zu %zu %u\n", loaded, total, q->ugid_limit);
		printf("%d\n", exceeded ? 1 : 0);
	} else {
		printf("User/group quota: %s,%s\n", configured < 0 ? "-" : configured ? "on" : "off",
		       active ? "active" : "inactive");
		printf("%sUgids: loaded %zu, total %zu, limit %u\n", total > q->ugid_limit ? "*" : "", loaded, total,
		       q->ugid_limit);
		printf("Ugid limit was exceeded: %s\n", exceeded ? "yes" : "no");
		printf("\nUser/group grace times and quotafile flags:\n");
		printf("%5s %14s %14s %10s\n", "type", "block_exp_time", "inode_exp_time", "dqi_flags");
	}
	for (int t = 0; t < 2; t++) {
		if (batch) {
			printf("%5s %" PRId64 " %" PRId64 " %9Xh\n", type_names[t], q->ugid_grace[t].bexpire,
			       q->ugid_grace[t].iexpire, 0u);
			continue;
		}
		interval(q->ugid_grace[t].bexpire, b1, sizeof(b1));
		interval(q->ugid_grace[t].iexpire, b2, sizeof(b2));
		printf("%5s %14s %14s %9Xh\n", type_names[t], b1, b2, 0u);
	}
	if (!total)
		return;
	if (!batch) {
		printf("\nUser/group objects:\n");
		printf("%-11s %5s %9s %11s %11s %11s %8s %6s\n", "ID", "type", "resource", "usage", "softlimit",
		       "hardlimit", "grace", "status");
	}
	for (size_t i = 0; i < total; i++) {
		const struct vzq_ugid *u = &q->ugid[i];
		const struct vzq_stat *s = &u->stat;
		bool dirty = u->flags & VZQ_UGID_DIRTY;
		bool is_loaded = active && !dirty;
		char status[32];
		int64_t t;

		if (batch)
			snprintf(status, sizeof(status), "%d %d", is_loaded, dirty);
		else
			snprintf(status, sizeof(status), "%s%s%s", is_loaded ? "loaded" : "",
				 is_loaded && dirty ? "," : "", dirty ? "dirty" : "");
		t = s->bcurrent < s->bsoft ? 0 : s->btime;
		if (batch)
			snprintf(b1, sizeof(b1), "%" PRId64, t);
		else
			grace_left(t, b1, sizeof(b1));
		printf("%-11u %5s %9s %11" PRIu64 " %11" PRIu64 " %11" PRIu64 " %8s %6s\n", u->id,
		       type_names[u->type & 1], "1k-blocks", s->bcurrent / 1024, s->bsoft / 1024, s->bhard / 1024, b1,
		       status);
		t = s->icurrent < s->isoft ? 0 : s->itime;
		if (batch)
			snprintf(b1, sizeof(b1), "%" PRId64, t);
		else
			grace_left(t, b1, sizeof(b1));
		printf("%-11u %5s %9s %11" PRIu64 " %11" PRIu64 " %11" PRIu64 " %8s %6s\n", u->id,
		       type_names[u->type & 1], "inodes", s->icurrent, s->isoft, s->ihard, b1, status);
	}
}

/* ---- commands ---- */

struct session {
	char fname[PATH_MAX];
	struct vzq_handle *h;
	struct vzq_quota q;
	struct vzq_error err;
};

static int open_quota(const struct opts *o, struct session *s, int mode)
{
	int rc = quota_file(o, (mode & VZQ_CREATE) != 0, s->fname, sizeof(s->fname));

	if (rc)
		return rc;
	info("quota file %s", s->fname);
	/* A simfs serving the quota holds the file for a moment while it writes usage back: wait for
	 * that (up to 2 s); another vzquota holding it is refused at once (exit 7), as upstream. */
	for (int tries = 0; vzq_open(s->fname, mode, &s->h, &s->q, &s->err); tries++) {
		if (s->err.status != VZQ_ERR_LOCKED || tries >= 200 || !vzq_live_held(o->id))
			return lib_fail(&s->err);
		memset(&s->err, 0, sizeof(s->err));
		usleep(10000);
	}
	return 0;
}

static void close_quota(struct session *s)
{
	vzq_close(s->h);
	vzq_quota_free(&s->q);
	s->h = NULL;
}

static int write_quota(struct session *s, uint32_t id)
{
	s->q.id = id;
	if (vzq_write(s->h, &s->q, &s->err))
		return lib_fail(&s->err);
	return 0;
}

static int cmd_init(const struct opts *o)
{
	struct session s = { 0 };
	struct vzq_handle *h;
	struct vzq_quota old;
	struct vzq_error err = { 0 };
	int rc;

	if (vzq_live_held(o->id))
		return fail(VZQ_ERR_RUNNING, "quota %u is running (served by simfs)", o->id);
	rc = quota_file(o, true, s.fname, sizeof(s.fname));
	if (rc)
		return rc;
	/* An existing, readable file: refuse if running, else overwrite it (with a warning, printed
	 * once it is done). A damaged file is overwritten too; anything but a regular file is not:
	 * the second open refuses it with exit 4. */
	if (vzq_open(s.fname, VZQ_RDONLY, &h, &old, &err) == 0) {
		bool on = old.flags & VZQ_FLAG_ON;
		vzq_close(h);
		vzq_quota_free(&old);
		if (on)
			return fail(VZQ_ERR_RUNNING, "quota %u is running; turn it off first", o->id);
		warnx_("quota file %s existed and was overwritten", s.fname);
	} else if (err.status != VZQ_ERR_NOFILE) {
		warnx_("%s; it was overwritten", err.msg);
	}
	if (vzq_open(s.fname, VZQ_RDWR | VZQ_CREATE | VZQ_REPLACE, &s.h, &s.q, &s.err))
		return lib_fail(&s.err);
	s.q.id = o->id;
	apply_limits(o, &s.q);
	rc = set_stored_path(o, &s.q);
	if (!rc)
		rc = scan(o->path, &s.q);
	if (!rc) {
		warn_limits(&s.q);
		rc = write_quota(&s, o->id);
	}
	close_quota(&s);	/* a file this command created and did not write is removed */
	return rc;
}

static int cmd_on(const struct opts *o)
{
	struct session s = { 0 };
	bool rescan, stale_live;
	int rc;

	if (vzq_live_held(o->id))
		return fail(VZQ_ERR_RUNNING, "quota %u is already running (served by simfs)", o->id);
	rc = open_quota(o, &s, VZQ_RDWR);
	if (rc)
		return rc;
	stale_live = s.q.flags & VZQ_FLAG_LIVE;	/* left by a simfs that is gone (we checked the lock) */
	if ((s.q.flags & VZQ_FLAG_ON) && !stale_live) {
		close_quota(&s);
		return fail(VZQ_ERR_RUNNING, "quota %u is already running", o->id);
	}
	rescan = o->force || (s.q.flags & VZQ_FLAG_DIRTY) || stale_live ||
		 (o->path && !o->relative && (!s.q.path || strcmp(s.q.path, o->path)));
	if (o->path && !o->relative) {
		char real[PATH_MAX];
		/* the same tree spelled differently is no change */
		if (realpath(o->path, real) && s.q.path && !strcmp(real, s.q.path))
			rescan = o->force || (s.q.flags & VZQ_FLAG_DIRTY) || stale_live;
		rc = set_stored_path(o, &s.q);
	}
	bool ugid_was_on = s.q.flags & VZQ_FLAG_UGID_ON;
	uint32_t old_limit = s.q.ugid_limit;

	apply_limits(o, &s.q);
	/* Per-uid/gid usage is counted only while the second level is on: turned on, it is counted.
	 * Ids refused a record (the ugid limit was exceeded) were not counted: counted now, every id
	 * may get room again (as upstream's on recounts a quota whose records it could not load). */
	if ((s.q.flags & VZQ_FLAG_UGID_ON) &&
	    (!ugid_was_on || (old_limit == 0 && s.q.ugid_limit) || (s.q.flags & VZQ_FLAG_UGID_OVER)))
		rescan = true;
	/* as upstream, on needs the tree (its quotactl takes the mount point), counted or not (a -p
	 * was checked before anything was read) */
	if (!rc && !o->path) {
		struct vzq_error err = { 0 };

		if (!s.q.path || !*s.q.path)
			rc = fail(VZQ_ERR_NOPATH, "quota %u: no tree path known, use -p", o->id);
		else if (vzq_check_tree(s.q.path, &err))
			rc = lib_fail(&err);
	}
	if (!rc && rescan && !o->nocheck) {
		if (stale_live)
			info("quota %u was left live by a simfs daemon that is gone: recounting", o->id);
		rc = scan(tree_path(o, &s.q), &s.q);
	}
	if (!rc) {
		s.q.flags |= VZQ_FLAG_ON;
		s.q.flags &= ~(VZQ_FLAG_LIVE | VZQ_FLAG_SERVED);
		vzq_update_grace(&s.q, time(NULL));
		warn_limits(&s.q);
		rc = write_quota(&s, o->id);
	}
	close_quota(&s);
	if (!rc && verbose >= 1 && !batch)
		printf("Quota is on for id %u\n", o->id);
	return rc;
}

static int refuse_live(uint32_t id, const char *what)
{
	char where[PATH_MAX];

	live_where(id, where, sizeof(where));
	return fail(VZQ_ERR_LIVE, "cannot %s quota %u: the tree is mounted by simfs at %s; unmount it first", what,
		    id, where);
}

/* The count of off. A tree it cannot count does not keep the quota on (a container would not
 * stop): without a path the usage stays as it was, after a failed count the next on recounts. */
static void off_count(const struct opts *o, struct vzq_quota *q)
{
	const char *path = tree_path(o, q);
	struct vzq_error err = { 0 };

	if (!path) {
		warnx_("quota %u: no tree path known, usage not counted (use -p)", q->id);
		return;
	}
	info("counting the usage of %s", path);
	if (vzq_scan(path, q, time(NULL), &err)) {
		warnx_("%s; usage not counted, quota marked dirty", err.msg);
		q->flags |= VZQ_FLAG_DIRTY;
	}
}

static int cmd_off(const struct opts *o)
{
	struct session s = { 0 };
	int rc;

	if (vzq_live_held(o->id))
		return refuse_live(o->id, "turn off");
	vzq_live_clear(o->id);	/* the socket of a simfs that was killed */
	rc = quota_file(o, false, s.fname, sizeof(s.fname));
	if (rc)
		return rc;
	/* -f: proceed even if the file is unreadable (upstream). With no simfs serving the quota
	 * there is nothing to turn off, and a file we could not read is never written. */
	if (o->force && vzq_open(s.fname, VZQ_RDONLY, &s.h, &s.q, &s.err) == VZQ_ERR_FILE)
		return fail(VZQ_ERR_NOT_RUNNING, "(warning) %s; left as it is, quota %u is not running", s.err.msg,
			    o->id);
	if (s.h)
		close_quota(&s);
	memset(&s.err, 0, sizeof(s.err));
	rc = open_quota(o, &s, VZQ_RDWR);
	if (rc)
		return rc;
	/* a simfs that started between our check and our lock marked the file LIVE: not stale */
	if (vzq_live_held(o->id)) {
		close_quota(&s);
		return refuse_live(o->id, "turn off");
	}
	if (!(s.q.flags & VZQ_FLAG_ON)) {
		close_quota(&s);
		return fail(VZQ_ERR_NOT_RUNNING, "quota %u is not running", o->id);
	}
	if (s.q.flags & VZQ_FLAG_LIVE) {	/* left by a killed daemon: its usage is stale */
		s.q.flags = (s.q.flags & ~VZQ_FLAG_LIVE) | VZQ_FLAG_DIRTY;
	} else if (!(s.q.flags & VZQ_FLAG_SERVED)) {
		/* no daemon kept the usage since on (vzctl create untars so): what was written
		 * into the tree is counted now, as upstream's off pulls the final usage */
		off_count(o, &s.q);
	}
	s.q.flags &= ~VZQ_FLAG_ON;
	rc = write_quota(&s, o->id);
	close_quota(&s);
	if (!rc && verbose >= 1 && !batch)
		printf("Quota is off for id %u\n", o->id);
	return rc;
}

static int cmd_drop(const struct opts *o)
{
	struct session s = { 0 };
	int rc;

	if (vzq_live_held(o->id))
		return refuse_live(o->id, "drop");
	rc = quota_file(o, false, s.fname, sizeof(s.fname));
	if (rc)
		return rc;
	if (vzq_open(s.fname, VZQ_RDWR, &s.h, &s.q, &s.err)) {
		if (!(o->force && s.err.status == VZQ_ERR_FILE))
			return lib_fail(&s.err);
		warnx_("%s; removing it anyway (-f)", s.err.msg);
		memset(&s.err, 0, sizeof(s.err));
		if (vzq_open(s.fname, VZQ_RDWR | VZQ_REPLACE, &s.h, &s.q, &s.err))
			return lib_fail(&s.err);
	} else if ((s.q.flags & VZQ_FLAG_ON) && !o->force) {
		close_quota(&s);
		return fail(VZQ_ERR_RUNNING, "quota %u is running; turn it off first (or -f)", o->id);
	}
	rc = vzq_unlink(s.h, &s.err) ? lib_fail(&s.err) : 0;
	close_quota(&s);
	if (!rc)
		vzq_live_forget(o->id);
	return rc;
}

static int cmd_setlimit(const struct opts *o)
{
	struct session s = { 0 };
	int rc;

	rc = open_quota(o, &s, VZQ_RDWR);
	if (rc)
		return rc;
	bool ugid_was_on = s.q.flags & VZQ_FLAG_UGID_ON;
	uint32_t old_limit = s.q.ugid_limit;

	apply_limits(o, &s.q);
	rc = set_stored_path(o, &s.q);
	if (o->force)
		s.q.flags |= VZQ_FLAG_DIRTY;	/* the next on recounts */
	/* uid/gid usage that nobody counted: the next start counts it (a simfs serving the quota
	 * keeps its second level as it started) */
	if ((s.q.flags & VZQ_FLAG_UGID_ON) && (!ugid_was_on || (old_limit == 0 && s.q.ugid_limit)))
		s.q.flags |= VZQ_FLAG_DIRTY;
	if (vzq_live_held(o->id) && (ugid_was_on != !!(s.q.flags & VZQ_FLAG_UGID_ON) || old_limit != s.q.ugid_limit))
		notice("quota %u: the second-level change takes effect at the next start (simfs mount)", o->id);
	vzq_update_grace(&s.q, time(NULL));
	if (!rc) {
		warn_limits(&s.q);
		rc = write_quota(&s, o->id);
	}
	close_quota(&s);
	return rc ? rc : reload_live(o, NULL);
}

/* A record setlimit2 made for a simfs daemon that then had no room for it (its table is fuller than
 * the file was): taken out of the file again, which is then as it was. */
static void unmake_record(const struct opts *o)
{
	struct session s = { 0 };
	struct vzq_ugid *u;

	if (open_quota(o, &s, VZQ_RDWR))
		return;
	u = vzq_ugid_get(&s.q, (uint32_t)o->set2_type, o->set2_id, false, NULL);
	if (u) {	/* without limits or usage, a record is not written */
		u->stat.bsoft = u->stat.bhard = u->stat.isoft = u->stat.ihard = 0;
		write_quota(&s, o->id);
	}
	close_quota(&s);
}

static int cmd_setlimit2(const struct opts *o)
{
	struct session s = { 0 };
	bool created = false;
	int64_t t[2];
	uint64_t v[4];
	int rc;

	if (o->set2_grace) {
		for (int i = 0; i < 2; i++)
			if (vzq_parse_time(o->pos[i], &t[i]))
				return fail(VZQ_ERR_USAGE, "setlimit2: bad time '%s'", o->pos[i]);
	} else {
		for (int i = 0; i < 4; i++)
			if (i < 2 ? parse_blocks(o->pos[i], &v[i]) : parse_inodes(o->pos[i], &v[i]))
				return fail(VZQ_ERR_USAGE, "setlimit2: bad limit '%s'", o->pos[i]);
	}
	/* the records a simfs daemon keeps, in the file first: the room for a new one is counted there */
	if (vzq_live_held(o->id) && vzq_live_request(o->id, VZQ_REQ_SYNC, NULL, 0, &s.err))
		return lib_fail(&s.err);
	rc = open_quota(o, &s, VZQ_RDWR);
	if (rc)
		return rc;
	if (!(s.q.flags & VZQ_FLAG_ON) || !(s.q.flags & VZQ_FLAG_UGID_ON)) {
		close_quota(&s);
		return fail(VZQ_ERR_NOT_RUNNING, "quota %u: %s", o->id,
			    !(s.q.flags & VZQ_FLAG_ON) ? "quota is not running" : "user/group quota is off (-s 1)");
	}
	/* as upstream: the second level must be active, not only requested for the next start */
	if (vzq_live_held(o->id)) {
		bool active;
		uint32_t limit;

		if (live_ugid(o->id, &active, &limit, &s.err)) {
			close_quota(&s);
			return lib_fail(&s.err);
		}
		if (!active) {
			close_quota(&s);
			return fail(VZQ_ERR_NOT_RUNNING,
				    "quota %u: user/group quota is not active in simfs (it starts at the next mount)",
				    o->id);
		}
	}
	if (o->set2_grace) {
		s.q.ugid_grace[o->set2_type].bexpire = t[0];
		s.q.ugid_grace[o->set2_type].iexpire = t[1];
	} else {
		struct vzq_ugid *u = vzq_ugid_get(&s.q, (uint32_t)o->set2_type, o->set2_id, false, NULL);

		/* a new record within the ugid limit, as the kernel's set_dqblk */
		if (!u && (s.q.n_ugid >= s.q.ugid_limit || (s.q.flags & VZQ_FLAG_UGID_OVER))) {
			close_quota(&s);
			return fail(VZQ_ERR_LIVE, "quota %u: the ugid limit (%u records) leaves no room for %s %u", o->id,
				    s.q.ugid_limit, o->set2_type == VZQ_USER ? "user" : "group", o->set2_id);
		}
		if (!u) {
			u = vzq_ugid_get(&s.q, (uint32_t)o->set2_type, o->set2_id, true, &s.err);
			if (!u) {
				close_quota(&s);
				return lib_fail(&s.err);
			}
			u->flags |= VZQ_UGID_DIRTY;	/* its usage was not counted */
			created = true;
		}
		u->stat.bsoft = v[0];
		u->stat.bhard = v[1];
		u->stat.isoft = v[2];
		u->stat.ihard = v[3];
	}
	vzq_update_grace(&s.q, time(NULL));
	rc = write_quota(&s, o->id);
	close_quota(&s);
	return rc ? rc : reload_live(o, created ? unmake_record : NULL);
}

static int cmd_reload2(const struct opts *o)
{
	struct session s = { 0 };
	int rc = open_quota(o, &s, VZQ_RDONLY);

	if (rc)
		return rc;
	close_quota(&s);
	return reload_live(o, NULL);
}

static int cmd_stat(const struct opts *o)
{
	struct session s = { 0 };
	bool live = vzq_live_held(o->id), configured, active, held_usage = false;
	struct vzq_stat usage;
	int rc;

again:
	if (live && vzq_live_request(o->id, VZQ_REQ_SYNC, NULL, 0, &s.err)) {
		struct vzq_error uerr = { 0 };

		/* The daemon could not write its usage into the file (a full quota directory):
		 * upstream's stat reads the kernel's numbers and needs no room, so ask the daemon for
		 * the ones it holds; the file still has the limits, and the uid/gid usage as last
		 * written back. */
		if (s.err.status != VZQ_ERR_FILE || live_usage(o->id, &usage, &uerr))
			return lib_fail(&s.err);
		warnx_("%s; the usage shown is the simfs daemon's%s", s.err.msg,
		       o->ugid_info ? ", the uid/gid usage as last written back" : "");
		memset(&s.err, 0, sizeof(s.err));
		held_usage = true;
	}
	/* live: the daemon wrote its usage; else count it now (nobody kept it) and, without -f, keep it */
	rc = open_quota(o, &s, live || o->force ? VZQ_RDONLY : VZQ_RDWR);
	if (rc)
		return rc;
	/* a simfs started meanwhile: it keeps the usage (and its LIVE must stay in the file) */
	if (!live && vzq_live_held(o->id)) {
		close_quota(&s);
		live = true;
		goto again;
	}
	if (!(s.q.flags & VZQ_FLAG_ON)) {
		close_quota(&s);
		return fail(VZQ_ERR_NOT_RUNNING, "quota accounting is off for id %u, try vzquota show %u", o->id, o->id);
	}
	if (!live) {
		rc = scan(tree_path(o, &s.q), &s.q);
		if (!rc && !o->force) {
			/* counted: a killed daemon's LIVE no longer applies (the scan cleared DIRTY) */
			s.q.flags &= ~VZQ_FLAG_LIVE;
			rc = write_quota(&s, o->id);
		}
	}
	if (held_usage) {
		s.q.stat.bcurrent = usage.bcurrent;
		s.q.stat.icurrent = usage.icurrent;
		s.q.stat.btime = usage.btime;
		s.q.stat.itime = usage.itime;
	}
	configured = active = s.q.flags & VZQ_FLAG_UGID_ON;
	/* a daemon enforces the second level it started with, whatever the file asks now */
	if (!rc && live && o->ugid_info && live_ugid(o->id, &active, &s.q.ugid_limit, &s.err))
		rc = lib_fail(&s.err);
	if (!rc) {
		print_status(&s.q);
		if (o->ugid_info) {
			print_ugid_status(&s.q, o->force ? -1 : configured, active);
			if (!active)
				rc = VZQ_ERR_UGID_OFF;
		}
	}
	close_quota(&s);
	return rc;
}

static int cmd_show(const struct opts *o)
{
	struct session s = { 0 };
	int rc = open_quota(o, &s, VZQ_RDONLY);

	if (rc)
		return rc;
	if (s.q.flags & VZQ_FLAG_ON)
		warnx_("quota is running, so data reported from quota file may not reflect current values");
	print_status(&s.q);
	if (o->ugid_info)
		print_ugid_status(&s.q, (s.q.flags & VZQ_FLAG_UGID_ON) != 0,
				  (s.q.flags & VZQ_FLAG_ON) && (s.q.flags & VZQ_FLAG_UGID_ON));
	if (s.q.flags & VZQ_FLAG_DIRTY)
		rc = VZQ_ERR_DIRTY;
	close_quota(&s);
	return rc;
}

/* The letters of a global option argument: short ones combine, as getopt's do (-qb); a long one
 * is its letter; "" if unknown. */
static const char *global_letters(const char *a)
{
	static const char *const longs[][2] = {
		{ "--help", "h" }, { "--version", "V" }, { "--quiet", "q" }, { "--batch", "b" }, { "--verbose", "v" },
	};

	if (a[1] != '-')
		return a + 1;
	for (size_t k = 0; k < sizeof(longs) / sizeof(longs[0]); k++)
		if (!strcmp(a, longs[k][0]))
			return longs[k][1];
	return "";
}

int main(int argc, char **argv)
{
	struct opts o = { 0 };
	int i, rc;

	/* global options, before the command */
	for (i = 1; i < argc && argv[i][0] == '-'; i++) {
		const char *a = argv[i], *letters = global_letters(a);

		if (!*letters || strspn(letters, "hVqbv") != strlen(letters))
			return fail(VZQ_ERR_USAGE, "unknown option '%s' (vzquota --help for usage)", a);
		for (const char *l = letters; *l; l++) {
			switch (*l) {
			case 'h': usage(stdout); return 0;
			case 'V': printf("vzquota version %s\n", VERSION); return 0;
			case 'q': verbose = 0; break;
			case 'b': batch = true; break;
			default: verbose++; break;
			}
		}
	}
	if (verbose > 3)
		verbose = 3;
	if (argc < 2) {
		usage(stderr);	/* as upstream */
		return VZQ_ERR_USAGE;
	}
	if (i >= argc)
		return fail(VZQ_ERR_USAGE, "command missing (vzquota --help for usage)");
	for (o.cmd = 0; o.cmd <= C_SHOW; o.cmd++)
		if (!strcmp(argv[i], cmd_names[o.cmd]))
			break;
	if (o.cmd > C_SHOW)
		return fail(VZQ_ERR_USAGE, "unknown command '%s' (vzquota -h lists them)", argv[i]);
	rc = parse_args(argc - i, argv + i, &o);
	if (rc)
		return rc;
	/* -p is checked as init checks it, before anything is read or written: a missing tree or one
	 * that is not a directory is refused with 13, whatever the command */
	if (o.path) {
		struct vzq_error err = { 0 };

		if (vzq_check_tree(o.path, &err))
			return lib_fail(&err);
	}
	switch (o.cmd) {
	case C_INIT: rc = cmd_init(&o); break;
	case C_ON: rc = cmd_on(&o); break;
	case C_OFF: rc = cmd_off(&o); break;
	case C_DROP: rc = cmd_drop(&o); break;
	case C_SETLIMIT: rc = cmd_setlimit(&o); break;
	case C_SETLIMIT2: rc = cmd_setlimit2(&o); break;
	case C_RELOAD2: rc = cmd_reload2(&o); break;
	case C_STAT: rc = cmd_stat(&o); break;
	case C_SHOW: rc = cmd_show(&o); break;
	default: rc = fail(VZQ_ERR_INTERNAL, "internal error: command %d", (int)o.cmd); break;
	}
	return flush_warnings(rc);
}
