/* `ploop` commands on whole images: init, info, grow, convert, check, restore-descriptor, merge. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static int parse_version(const char *s, int *v)
{
	if (strcmp(s, "1") && strcmp(s, "2"))
		return fail(PLOOP_ERR_PARAM, "invalid format version '%s' (1 or 2)", s);
	*v = atoi(s);
	return 0;
}

static int parse_mode(const char *s, enum ploop_image_mode *m)
{
	if (!strcmp(s, "ploop1") || !strcmp(s, "expanded"))
		*m = PLOOP_MODE_EXPANDED;
	else if (!strcmp(s, "preallocated"))
		*m = PLOOP_MODE_PREALLOCATED;
	else if (!strcmp(s, "raw"))
		*m = PLOOP_MODE_RAW;
	else
		return fail(PLOOP_ERR_PARAM, "invalid image format '%s' (ploop1, expanded, preallocated or raw)", s);
	return 0;
}

int cmd_init(int argc, char **argv)
{
	static const struct option longopts[] = { { "sparse", no_argument, NULL, 'S' }, { 0 } };
	struct ploop_create_params p = { 0 };
	struct ploop_error err = { 0 };
	const char *fstype = NULL;
	int c;

	while ((c = getopt_long(argc, argv, "s:b:v:f:t:SB:P", longopts, NULL)) != -1) {
		switch (c) {
		case 's':
			if (parse_size_arg(optarg, &p.size_sectors))
				return PLOOP_ERR_PARAM;
			break;
		case 'b':
			if (parse_cluster_arg(optarg, &p.cluster_sectors))
				return PLOOP_ERR_PARAM;
			break;
		case 'v':
			if (parse_version(optarg, &p.version))
				return PLOOP_ERR_PARAM;
			break;
		case 'f':
			if (parse_mode(optarg, &p.mode))
				return PLOOP_ERR_PARAM;
			break;
		case 't':
			fstype = optarg;
			break;
		case 'S':
			p.sparse = true;
			break;
		case 'B': {
			uint64_t v;

			/* Sectors (or a suffix), as every size here; 1024, 2048 or 4096 cannot be sectors of
			 * a filesystem block: those are bytes. */
			if (ploop_parse_size(optarg, &v))
				v = 0;
			else if (v == 1024 || v == 2048 || v == 4096)
				v /= 512;
			if (v != 2 && v != 4 && v != 8)
				return fail(PLOOP_ERR_PARAM,
					    "invalid filesystem block size '%s' (1K, 2K or 4K: 1024, 2048 or 4096 bytes)",
					    optarg);
			p.fs_blocksize = (uint32_t)(v * 512);
			break;
		}
		case 'P':
			p.no_partition = true;
			break;
		default:
			return usage_error("invalid option");
		}
	}
	if (want_args(argc, 1))
		return PLOOP_ERR_PARAM;
	if (!p.size_sectors)
		return usage_error("-s SIZE is required");
	if (p.sparse && p.mode != PLOOP_MODE_RAW)
		return usage_error("--sparse applies to -f raw only");
	if (fstype && !strcmp(fstype, "none")) {
		if (ploop_init_image(argv[optind], &p, &err))
			return report_error(&err);
		return 0;
	}
	/* As upstream, ext4 unless told otherwise. */
	p.fstype = fstype ? fstype : "ext4";
	/* ext3 (upstream makes one when asked) is not made here: it would be ext4 under the name */
	if (strcmp(p.fstype, "ext4"))
		return fail(PLOOP_ERR_PARAM, "filesystem '%s' is not supported (ext4 or none)", p.fstype);
	if (ploop_init_fs(argv[optind], &p, &err))
		return report_error(&err);
	return 0;
}

int cmd_info(int argc, char **argv)
{
	struct ploop_error err = { 0 };
	struct ploop_descriptor *dd = NULL;
	struct ploop_delta_info info;
	struct ploop_delta *top;
	bool spec = false;
	int c, im, lock;

	while ((c = getopt(argc, argv, "s")) != -1) {
		if (c != 's')
			return usage_error("invalid option");
		spec = true;
	}
	if (want_args(argc, 1))
		return PLOOP_ERR_PARAM;
	if (!spec)
		return fail(PLOOP_ERR_PARAM, "filesystem usage is what df shows on the mounted image; -s prints the "
					     "image parameters");
	if (ploop_lock_descriptor(argv[optind], false, &lock, &err) || ploop_descriptor_read(argv[optind], &dd, &err))
		return report_error(&err);
	im = ploop_descriptor_find_image(dd, dd->top_guid);
	/* Header only, without a lock: it works on a mounted image too. */
	if (ploop_delta_open(dd->images[im].path,
			     PLOOP_OPEN_HEADER_ONLY | PLOOP_OPEN_ALLOW_DIRTY | PLOOP_OPEN_NOLOCK |
				     (dd->raw && dd->n_images == 1 ? PLOOP_OPEN_RAW : 0),
			     dd->blocksize, dd->disk_size, &top, &err)) {
		ploop_descriptor_free(dd);
		return report_error(&err);
	}
	ploop_delta_get_info(top, &info);
	printf("size:\t\t%llu\nblocksize:\t%u\nfmt_version:\t%d\n", (unsigned long long)info.size_sectors,
	       info.cluster_sectors, info.version);	/* 0 for a raw image, as upstream */
	ploop_delta_close(top, NULL);
	ploop_descriptor_free(dd);
	ploop_unlock_descriptor(lock);
	return 0;
}

int cmd_grow(int argc, char **argv)
{
	struct ploop_error err = { 0 };
	uint64_t size = 0;
	bool raw = false;
	int c;

	while ((c = getopt(argc, argv, "s:f:")) != -1) {
		switch (c) {
		case 's':
			if (parse_size_arg(optarg, &size))
				return PLOOP_ERR_PARAM;
			break;
		case 'f':
			if (strcmp(optarg, "raw"))
				return fail(PLOOP_ERR_PARAM, "-f takes only raw here");
			raw = true;
			break;
		default:
			return usage_error("invalid option");
		}
	}
	if (want_args(argc, 1))
		return PLOOP_ERR_PARAM;
	if (!size)
		return usage_error("-s SIZE is required");
	if (ploop_grow(argv[optind], raw, size, &err))
		return report_error(&err);
	return 0;
}

int cmd_convert(int argc, char **argv)
{
	struct ploop_error err = { 0 };
	enum ploop_image_mode mode = PLOOP_MODE_EXPANDED;
	int c, version = 0;
	bool have_mode = false;

	while ((c = getopt(argc, argv, "f:v:")) != -1) {
		switch (c) {
		case 'f':
			if (parse_mode(optarg, &mode))
				return PLOOP_ERR_PARAM;
			have_mode = true;
			break;
		case 'v':
			if (parse_version(optarg, &version))
				return PLOOP_ERR_PARAM;
			break;
		default:
			return usage_error("invalid option");
		}
	}
	if (want_args(argc, 1))
		return PLOOP_ERR_PARAM;
	if (have_mode == !!version)
		return usage_error("give exactly one of -f and -v");
	if (version ? ploop_convert_version(argv[optind], version, &err) : ploop_convert_mode(argv[optind], mode, &err))
		return report_error(&err);
	return 0;
}

static void print_finding(void *ctx, const char *msg)
{
	(void)ctx;
	printf("%s\n", msg);
}

int cmd_check(int argc, char **argv)
{
	struct ploop_check_params p = { .report = print_finding };
	struct ploop_error err = { 0 };
	const char *guid = NULL;
	int c;

	while ((c = getopt(argc, argv, "fFcrsdRb:u:SD")) != -1) {
		switch (c) {
		case 'f': p.flags |= PLOOP_CHECK_FORCE; break;
		case 'F': p.flags |= PLOOP_CHECK_FORCE | PLOOP_CHECK_HARD; break;
		case 'c': p.flags |= PLOOP_CHECK_CLUSTERS; break;
		case 'r': p.flags |= PLOOP_CHECK_RDONLY; break;
		case 'd': p.flags |= PLOOP_CHECK_DROP_INUSE; break;
		case 'R': p.flags |= PLOOP_CHECK_RAW; break;
		case 's': p.report = NULL; break;
		case 'b':
			if (parse_cluster_arg(optarg, &p.raw_cluster_sectors))
				return PLOOP_ERR_PARAM;
			break;
		case 'u': guid = optarg; break;
		case 'S':
		case 'D':
			return fail(PLOOP_ERR_PARAM, "-%c is not supported: images written here are never sparse, and "
						     "defragmentation is ploop compact's job",
				    c);
		default:
			return usage_error("invalid option");
		}
	}
	if (want_args(argc, 1))
		return PLOOP_ERR_PARAM;
	if ((p.flags & PLOOP_CHECK_RAW) && !p.raw_cluster_sectors)
		return usage_error("-R needs -b BLOCKSIZE");
	if ((p.flags & PLOOP_CHECK_RAW) || !ploop_is_descriptor_path(argv[optind])) {
		if (guid)
			return usage_error("-u applies to a DiskDescriptor.xml");
		if (ploop_check_delta(argv[optind], &p, &err))
			return report_error(&err);
		return 0;
	}
	if (ploop_check_descriptor(argv[optind], guid, &p, &err))
		return report_error(&err);
	return 0;
}

int cmd_restore_descriptor(int argc, char **argv)
{
	struct ploop_error err = { 0 };
	uint32_t cs = 0;
	bool raw = false;
	int c;

	while ((c = getopt(argc, argv, "f:b:")) != -1) {
		switch (c) {
		case 'f':
			if (!strcmp(optarg, "raw"))
				raw = true;
			else if (strcmp(optarg, "ploop1") && strcmp(optarg, "expanded"))
				return fail(PLOOP_ERR_PARAM, "invalid image format '%s' (raw or ploop1)", optarg);
			break;
		case 'b':
			if (parse_cluster_arg(optarg, &cs))
				return PLOOP_ERR_PARAM;
			break;
		default:
			return usage_error("invalid option");
		}
	}
	if (want_args(argc, 2))
		return PLOOP_ERR_PARAM;
	if (ploop_restore_descriptor(argv[optind], argv[optind + 1], raw, cs, &err))
		return report_error(&err);
	return 0;
}

int cmd_merge(int argc, char **argv)
{
	struct ploop_error err = { 0 };
	bool raw = false;
	int c;

	while ((c = getopt(argc, argv, "f:")) != -1) {
		if (c != 'f' || strcmp(optarg, "raw"))
			return usage_error("invalid option");
		raw = true;
	}
	if (argc - optind < 2)
		return usage_error("needs at least two images, top first and base last");
	if (ploop_merge_files((const char *const *)argv + optind, argc - optind, raw, 0, &err))
		return report_error(&err);
	return 0;
}
