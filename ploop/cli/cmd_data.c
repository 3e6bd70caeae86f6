/* `ploop` commands that move disk contents: map, export, import. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

/* Opens the chain named by a DiskDescriptor.xml (up to @guid) or a single delta file, read-only,
 * holding the image set's shared lock in *lock. */
static int open_source(const char *path, const char *guid, struct ploop_chain **c, int *lock,
		       struct ploop_error *err)
{
	struct ploop_descriptor *dd = NULL;
	char g[PLOOP_GUID_BUF];

	*lock = -1;
	if (!ploop_is_descriptor_path(path)) {
		if (guid)
			return fail(PLOOP_ERR_PARAM, "-u applies to a DiskDescriptor.xml");
		if (ploop_chain_open_files(&path, 1, false, 0, PLOOP_OPEN_ALLOW_DIRTY, c, err))
			return report_error(err);
		return 0;
	}
	if (guid && ploop_parse_guid(guid, g))
		return fail(PLOOP_ERR_PARAM, "'%s' is not a GUID", guid);
	if (ploop_lock_descriptor(path, false, lock, err) || ploop_descriptor_read(path, &dd, err) ||
	    ploop_descriptor_open_chain(dd, guid ? g : NULL, PLOOP_OPEN_ALLOW_DIRTY, c, err)) {
		ploop_descriptor_free(dd);
		ploop_unlock_descriptor(*lock);
		return report_error(err);
	}
	ploop_descriptor_free(dd);
	return 0;
}

struct map_out {
	struct ploop_chain *c;
	bool json;
	bool first;
};

static void json_string(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch == '"' || ch == '\\')
			printf("\\%c", ch);
		else if (ch < 0x20)
			printf("\\u%04x", ch);
		else
			putchar(ch);
	}
	putchar('"');
}

static int print_extent(void *ctx, const struct ploop_extent *e)
{
	struct map_out *m = ctx;

	if (m->json) {
		printf("%s{ \"start\": %llu, \"length\": %llu, \"data\": %s", m->first ? "[\n" : ",\n",
		       (unsigned long long)e->start, (unsigned long long)e->length, e->level >= 0 ? "true" : "false");
		if (e->level >= 0) {
			printf(", \"level\": %d, \"offset\": %llu, \"file\": ", e->level,
			       (unsigned long long)e->file_offset);
			json_string(ploop_chain_path(m->c, e->level));
		}
		printf(" }");
	} else if (e->level >= 0) {
		printf("0x%-16llx 0x%-16llx %-5d 0x%-16llx %s\n", (unsigned long long)e->start,
		       (unsigned long long)e->length, e->level, (unsigned long long)e->file_offset,
		       ploop_chain_path(m->c, e->level));
	}
	m->first = false;
	return ferror(stdout) ? -1 : 0;
}

int cmd_map(int argc, char **argv)
{
	struct ploop_error err = { 0 };
	struct map_out m = { .first = true };
	const char *guid = NULL;
	int c, lock, r = 0;

	while ((c = getopt(argc, argv, "ju:")) != -1) {
		switch (c) {
		case 'j': m.json = true; break;
		case 'u': guid = optarg; break;
		default: return usage_error("invalid option");
		}
	}
	if (want_args(argc, 1))
		return PLOOP_ERR_PARAM;
	if ((r = open_source(argv[optind], guid, &m.c, &lock, &err)))
		return r;
	if (!m.json)
		printf("%-18s %-18s %-5s %-18s %s\n", "Offset", "Length", "Level", "File offset", "File");
	if (ploop_chain_map(m.c, print_extent, &m, &err))
		r = report_error(&err);
	else if (m.json)
		printf(m.first ? "[]\n" : "\n]\n");
	ploop_chain_close(m.c, NULL);
	ploop_unlock_descriptor(lock);
	return r;
}

int cmd_export(int argc, char **argv)
{
	struct ploop_error err = { 0 };
	struct ploop_chain *chain;
	const char *guid = NULL, *out;
	struct stat st;
	bool created = false;	/* only an output this command created is removed when it fails */
	int c, lock, fd, r = 0;

	while ((c = getopt(argc, argv, "u:")) != -1) {
		if (c != 'u')
			return usage_error("invalid option");
		guid = optarg;
	}
	if (want_args(argc, 2))
		return PLOOP_ERR_PARAM;
	out = argv[optind + 1];
	if (!strcmp(out, "-")) {
		fd = STDOUT_FILENO;
		if (isatty(fd))
			return fail(PLOOP_ERR_PARAM, "refusing to write a disk image to a terminal");
	} else if (!stat(out, &st) && S_ISBLK(st.st_mode)) {
		fd = open(out, O_WRONLY | O_CLOEXEC);
	} else {
		fd = open(out, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		created = fd >= 0;
	}
	if (fd < 0)
		return fail(errno == EEXIST ? PLOOP_ERR_PARAM : PLOOP_ERR_CREAT, "%s: %s", out, strerror(errno));
	r = open_source(argv[optind], guid, &chain, &lock, &err);
	if (!r) {
		if (ploop_export(chain, fd, &err))
			r = report_error(&err);
		ploop_chain_close(chain, NULL);
		ploop_unlock_descriptor(lock);
	}
	if (fd != STDOUT_FILENO && close(fd) && !r)
		r = fail(ploop_write_status(-errno), "%s: %s", out, strerror(errno));
	if (r && created)
		unlink(out);
	return r;
}

int cmd_import(int argc, char **argv)
{
	struct ploop_create_params p = { 0 };
	struct ploop_error err = { 0 };
	uint64_t size = 0;
	const char *in;
	struct stat st;
	int c, fd;

	while ((c = getopt(argc, argv, "s:b:v:")) != -1) {
		switch (c) {
		case 's':
			if (parse_size_arg(optarg, &size))
				return PLOOP_ERR_PARAM;
			break;
		case 'b':
			if (parse_cluster_arg(optarg, &p.cluster_sectors))
				return PLOOP_ERR_PARAM;
			break;
		case 'v':
			if (strcmp(optarg, "1") && strcmp(optarg, "2"))
				return fail(PLOOP_ERR_PARAM, "invalid format version '%s' (1 or 2)", optarg);
			p.version = optarg[0] - '0';
			break;
		default:
			return usage_error("invalid option");
		}
	}
	if (want_args(argc, 2))
		return PLOOP_ERR_PARAM;
	in = argv[optind];
	/* a FIFO is a stream, and open() waits for its writer: without -s, say so first */
	if (strcmp(in, "-") && !stat(in, &st)) {
		if (S_ISDIR(st.st_mode))
			return fail(PLOOP_ERR_OPEN, "%s: a directory, not a raw image", in);
		if (S_ISFIFO(st.st_mode) && !size)
			return fail(PLOOP_ERR_PARAM, "%s: the size of a stream must be given (-s)", in);
	}
	fd = strcmp(in, "-") ? open(in, O_RDONLY | O_CLOEXEC) : STDIN_FILENO;
	if (fd < 0)
		return fail(PLOOP_ERR_OPEN, "%s: %s", in, strerror(errno));
	if (ploop_import(fd, size * 512, argv[optind + 1], &p, &err)) {
		if (fd != STDIN_FILENO)
			close(fd);
		return report_error(&err);
	}
	if (fd != STDIN_FILENO)
		close(fd);
	return 0;
}
