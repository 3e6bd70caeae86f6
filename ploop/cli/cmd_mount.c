/* `ploop` commands for mounted images: mount, umount, list, snapshot-mount, snapshot-umount,
 * resize, compact. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"

static int resolve_base(const char *dd_path, const char *uuid, char out[PLOOP_GUID_BUF])
{
	struct ploop_error err = { 0 };
	struct ploop_descriptor *dd = NULL;
	int idx[PLOOP_MAX_CHAIN], n;

	if (strcmp(uuid, "base")) {
		if (ploop_parse_guid(uuid, out))
			return fail(PLOOP_ERR_PARAM, "'%s' is not a GUID", uuid);
		return 0;
	}
	if (ploop_descriptor_read(dd_path, &dd, &err) || ploop_descriptor_chain(dd, NULL, idx, &n, &err)) {
		ploop_descriptor_free(dd);
		return report_error(&err);
	}
	strcpy(out, dd->images[idx[0]].guid);
	ploop_descriptor_free(dd);
	return 0;
}

/* Whether snapshot @guid has children (then it can be mounted read-only only, as upstream). */
static bool has_children(const char *dd_path, const char *guid)
{
	struct ploop_error err = { 0 };
	struct ploop_descriptor *dd = NULL;
	bool children = false;

	if (!ploop_descriptor_read(dd_path, &dd, &err))
		children = ploop_descriptor_children(dd, guid, NULL) > 0;
	ploop_descriptor_free(dd);
	return children;
}

/* Whether @guid names the top of the descriptor (then the normal, writable mount is meant). */
static bool is_top(const char *dd_path, const char *guid)
{
	struct ploop_error err = { 0 };
	struct ploop_descriptor *dd = NULL;
	bool top = false;

	if (!ploop_descriptor_read(dd_path, &dd, &err))
		top = !strcmp(dd->top_guid, guid);
	ploop_descriptor_free(dd);
	return top;
}

static void print_instance(const struct ploop_instance *in)
{
	printf("%s\n", in->device);
}

int cmd_mount(int argc, char **argv)
{
	struct ploop_mount_params p = { 0 };
	struct ploop_error err = { 0 };
	struct ploop_instance in;
	char guid[PLOOP_GUID_BUF];
	struct stat st;
	static const struct option longopts[] = { { "kernel", no_argument, NULL, 'k' }, { NULL, 0, NULL, 0 } };
	int c;

	while ((c = getopt_long(argc, argv, "rkm:t:o:u:", longopts, NULL)) != -1) {
		switch (c) {
		case 'r': p.ro = true; break;
		case 'k': p.kernel = true; break;	/* the dm-ploop target instead of the server */
		case 'm': p.mount_dir = optarg; break;
		case 't': p.fstype = optarg; break;
		case 'o': p.options = optarg; break;
		case 'u': p.guid = optarg; break;
		default: return usage_error("invalid option");
		}
	}
	if (want_args(argc, 1))
		return PLOOP_ERR_PARAM;
	p.descriptor = argv[optind];
	if (!ploop_is_descriptor_path(p.descriptor))
		return fail(PLOOP_ERR_PARAM, "%s: mount takes a DiskDescriptor.xml", p.descriptor);
	if (p.guid) {
		if (resolve_base(p.descriptor, p.guid, guid))
			return PLOOP_ERR_PARAM;
		if (is_top(p.descriptor, guid)) {
			p.guid = NULL;
		} else {
			/* A leaf snapshot (nothing over it) can be mounted read-write, as upstream. */
			if (!p.ro && has_children(p.descriptor, guid))
				return fail(PLOOP_ERR_PARAM, "snapshot %s has children: it can be mounted read-only (-r) only",
					    guid);
			p.guid = guid;
		}
	}
	if (p.mount_dir && (stat(p.mount_dir, &st) || !S_ISDIR(st.st_mode)))
		return fail(PLOOP_ERR_MKDIR, "%s: not a directory", p.mount_dir);
	if (ploop_mount(&p, &in, &err))
		return report_error(&err);
	print_instance(&in);
	return 0;
}

/* The instance named by -m DIR, -d DEV, or a DiskDescriptor.xml (with -u: a snapshot view). */
static int find_target(int argc, char **argv, const char *dir, const char *dev, const char *uuid,
		       struct ploop_instance *in)
{
	struct ploop_error err = { 0 };
	char guid[PLOOP_GUID_BUF];

	if (dir || dev) {
		if (argc - optind > 0)
			return usage_error("-m and -d take no DiskDescriptor.xml");
		if (ploop_find_instance_by(dir ? dir : dev, in, &err))
			return report_error(&err);
		return 0;
	}
	if (want_args(argc, 1))
		return PLOOP_ERR_PARAM;
	if (uuid && resolve_base(argv[optind], uuid, guid))
		return PLOOP_ERR_PARAM;
	if (ploop_find_instance(argv[optind], uuid && !is_top(argv[optind], guid) ? guid : NULL, in, &err))
		return report_error(&err);
	return 0;
}

int cmd_umount(int argc, char **argv)
{
	struct ploop_error err = { 0 };
	struct ploop_instance in;
	const char *dir = NULL, *dev = NULL, *uuid = NULL;
	int c, r;

	while ((c = getopt(argc, argv, "m:d:u:")) != -1) {
		switch (c) {
		case 'm': dir = optarg; break;
		case 'd': dev = optarg; break;
		case 'u': uuid = optarg; break;
		default: return usage_error("invalid option");
		}
	}
	r = find_target(argc, argv, dir, dev, uuid, &in);
	if (r)
		return r;
	if (ploop_umount(&in, &err))
		return report_error(&err);
	return 0;
}

/* Instances are gathered first so that every column is as wide as its longest entry. */
struct list_ctx {
	struct ploop_instance *in;
	int n, cap;
};

static int list_gather(void *ctx, const struct ploop_instance *in)
{
	struct list_ctx *l = ctx;

	if (l->n == l->cap) {
		int cap = l->cap ? 2 * l->cap : 16;
		struct ploop_instance *grown = realloc(l->in, (size_t)cap * sizeof(*grown));

		if (!grown)
			return -ENOMEM;
		l->in = grown;
		l->cap = cap;
	}
	l->in[l->n++] = *in;
	return 0;
}

static const char *list_mode(const struct ploop_instance *in)
{
	return !in->alive ? "DEAD" : in->ro ? "ro" : "rw";
}

static const char *list_mount(const struct ploop_instance *in)
{
	return in->mount[0] ? in->mount : "-";
}

static int column(int width, const char *s)
{
	int n = (int)strlen(s);

	return n > width ? n : width;
}

static void list_print(const struct list_ctx *l, bool header)
{
	int wdev = 6, wpart = 9, wpid = 3, wmode = 4, wmount = 5;
	char pid[16];

	for (int i = 0; i < l->n; i++) {
		snprintf(pid, sizeof(pid), "%d", l->in[i].pid);
		wdev = column(wdev, l->in[i].device);
		wpart = column(wpart, l->in[i].part);
		wpid = column(wpid, pid);
		wmode = column(wmode, list_mode(&l->in[i]));
		wmount = column(wmount, list_mount(&l->in[i]));
	}
	if (header && l->n)
		printf("%-*s  %-*s  %-*s  %-*s  %-*s  %s\n", wdev, "DEVICE", wpart, "PARTITION", wpid, "PID", wmode,
		       "MODE", wmount, "MOUNT", "DESCRIPTOR");
	for (int i = 0; i < l->n; i++) {
		const struct ploop_instance *in = &l->in[i];

		printf("%-*s  %-*s  %-*d  %-*s  %-*s  %s%s%s%s\n", wdev, in->device, wpart, in->part, wpid, in->pid,
		       wmode, list_mode(in), wmount, list_mount(in), in->descriptor, in->guid[0] ? " (snapshot " : "",
		       in->guid, in->guid[0] ? ")" : "");
	}
}

int cmd_list(int argc, char **argv)
{
	struct ploop_error err = { 0 };
	struct list_ctx l = { 0 };
	bool header = true;
	int c, r = 0;

	while ((c = getopt(argc, argv, "aH")) != -1) {
		switch (c) {
		case 'a': break;	/* every instance is listed */
		case 'H': header = false; break;
		default: return usage_error("invalid option");
		}
	}
	if (want_args(argc, 0))
		return PLOOP_ERR_PARAM;
	r = ploop_list_instances(list_gather, &l, &err);
	if (r == -ENOMEM)
		r = fail(PLOOP_ERR_MALLOC, "out of memory");
	else if (r)
		r = report_error(&err);
	else
		list_print(&l, header);
	free(l.in);
	return r;
}

int cmd_snapshot_mount(int argc, char **argv)
{
	struct ploop_mount_params p = { .ro = true };
	struct ploop_error err = { 0 };
	struct ploop_instance in;
	char guid[PLOOP_GUID_BUF];
	const char *uuid = NULL;
	int c;

	while ((c = getopt(argc, argv, "u:m:t:o:")) != -1) {
		switch (c) {
		case 'u': uuid = optarg; break;
		case 'm': p.mount_dir = optarg; break;
		case 't': p.fstype = optarg; break;
		case 'o': p.options = optarg; break;
		default: return usage_error("invalid option");
		}
	}
	if (want_args(argc, 1))
		return PLOOP_ERR_PARAM;
	if (!uuid)
		return usage_error("-u UUID is required");
	p.descriptor = argv[optind];
	if (resolve_base(p.descriptor, uuid, guid))
		return PLOOP_ERR_PARAM;
	if (is_top(p.descriptor, guid))
		return fail(PLOOP_ERR_PARAM, "%s is the top image, not a snapshot", guid);
	p.guid = guid;
	if (ploop_mount(&p, &in, &err))
		return report_error(&err);
	print_instance(&in);
	return 0;
}

int cmd_snapshot_umount(int argc, char **argv)
{
	struct ploop_error err = { 0 };
	struct ploop_instance in;
	const char *uuid = NULL, *dir = NULL;
	int c, r;

	while ((c = getopt(argc, argv, "u:m:")) != -1) {
		switch (c) {
		case 'u': uuid = optarg; break;
		case 'm': dir = optarg; break;
		default: return usage_error("invalid option");
		}
	}
	if (!uuid && !dir)
		return usage_error("-u UUID or -m DIR is required");
	r = find_target(argc, argv, dir, NULL, uuid, &in);
	if (r)
		return r;
	if (!in.guid[0])
		return fail(PLOOP_ERR_PARAM, "that is the image's own mount, not a snapshot mount (ploop umount)");
	if (ploop_umount(&in, &err))
		return report_error(&err);
	return 0;
}

int cmd_resize(int argc, char **argv)
{
	struct ploop_error err = { 0 };
	uint64_t size = 0;
	int c;

	while ((c = getopt(argc, argv, "s:")) != -1) {
		if (c != 's')
			return usage_error("invalid option");
		if (parse_size_arg(optarg, &size))
			return PLOOP_ERR_PARAM;
	}
	if (want_args(argc, 1))
		return PLOOP_ERR_PARAM;
	if (!size)
		return usage_error("-s SIZE is required");
	if (ploop_resize(argv[optind], size, &err))
		return report_error(&err);
	return 0;
}

int cmd_compact(int argc, char **argv)
{
	struct ploop_error err = { 0 };
	uint64_t freed = 0;

	if (getopt(argc, argv, "") != -1)
		return usage_error("invalid option");
	if (want_args(argc, 1))
		return PLOOP_ERR_PARAM;
	if (ploop_compact(argv[optind], &freed, &err))
		return report_error(&err);
	printf("compact: the image gave back %" PRIu64 " bytes\n", freed);
	return 0;
}
