/* `ploop`: the command-line tool over libploop. Parses arguments, calls the library, prints;
 * every failure is one line on stderr and an upstream SYSEXIT_* exit code. */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

const char *prog_cmd = "";
static int verbosity;

static const struct command commands[] = {
	{ "init", cmd_init, "init -s SIZE [-b BLOCKSIZE] [-v 1|2] [-f ploop1|expanded|preallocated|raw] [--sparse] [-t ext4|none] [-B FSBLOCKSIZE] [-P] DELTA", false },
	{ "mount", cmd_mount, "mount [--kernel|-k] [-r] [-m DIR] [-t FSTYPE] [-o OPTIONS] [-u UUID|base] DiskDescriptor.xml", false },
	{ "umount", cmd_umount, "umount {-m DIR | -d DEVICE | [-u UUID] DiskDescriptor.xml}", false },
	{ "list", cmd_list, "list [-H] [-a]", true },
	{ "snapshot-mount", cmd_snapshot_mount, "snapshot-mount -u UUID -m DIR [-t FSTYPE] [-o OPTIONS] DiskDescriptor.xml", false },
	{ "snapshot-umount", cmd_snapshot_umount, "snapshot-umount {-u UUID DiskDescriptor.xml | -m DIR}", false },
	{ "resize", cmd_resize, "resize -s SIZE DiskDescriptor.xml", false },
	{ "compact", cmd_compact, "compact DiskDescriptor.xml", false },
	{ "info", cmd_info, "info -s DiskDescriptor.xml", true },
	{ "snapshot", cmd_snapshot, "snapshot [-u UUID] DiskDescriptor.xml", false },
	{ "snapshot-list", cmd_snapshot_list, "snapshot-list [-H] [-s] [-o uuid,parent_uuid,current,fname] [-u UUID] DiskDescriptor.xml", true },
	{ "snapshot-merge", cmd_snapshot_merge, "snapshot-merge [-u UUID | -A] DiskDescriptor.xml", false },
	{ "snapshot-delete", cmd_snapshot_delete, "snapshot-delete -u UUID DiskDescriptor.xml", false },
	{ "snapshot-switch", cmd_snapshot_switch, "snapshot-switch -u UUID [-D] DiskDescriptor.xml", false },
	{ "grow", cmd_grow, "grow -s SIZE {DiskDescriptor.xml | [-f raw] DELTA}", false },
	{ "convert", cmd_convert, "convert {-f preallocated|raw | -v 1|2} DiskDescriptor.xml", false },
	{ "check", cmd_check, "check [-f] [-F] [-c] [-r] [-s] [-d] [-R -b BLOCKSIZE] [-u UUID] {DELTA | DiskDescriptor.xml}", false },
	{ "restore-descriptor", cmd_restore_descriptor, "restore-descriptor [-f raw|ploop1|expanded] [-b BLOCKSIZE] DIR DELTA", false },
	{ "merge", cmd_merge, "merge [-f raw] TOP [MIDDLE...] BASE", false },
	{ "map", cmd_map, "map [-j] [-u UUID] {DiskDescriptor.xml | DELTA}", true },
	{ "export", cmd_export, "export [-u UUID] {DiskDescriptor.xml | DELTA} {OUTPUT | -}", false },
	{ "import", cmd_import, "import [-s SIZE] [-b BLOCKSIZE] [-v 1|2] {INPUT | -} DELTA", false },
};

static void usage(FILE *f)
{
	fprintf(f, "Usage: ploop [-v] COMMAND [OPTIONS] ARGS\n\nCommands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(f, "  %s\n", commands[i].usage);
	fprintf(f, "\nSIZE is N[KMGT] (binary units) or a number of 512-byte sectors; BLOCKSIZE is in sectors or\n"
		   "N[KM]. Exit codes are upstream ploop's (README.md lists them).\n");
}

int report_error(const struct ploop_error *err)
{
	fprintf(stderr, "ploop %s: %s\n", prog_cmd, err->msg[0] ? err->msg : "failed");
	return err->status ? err->status : 1;
}

int fail(int status, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "ploop %s: ", prog_cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return status;
}

int usage_error(const char *msg)
{
	char opt[64];

	/* getopt reports an unknown option or a missing option argument as '?', with the option in optopt. */
	if (!strcmp(msg, "invalid option") && optopt) {
		snprintf(opt, sizeof(opt), "option -%c is unknown or needs an argument", optopt);
		msg = opt;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (!strcmp(commands[i].name, prog_cmd))
			return fail(PLOOP_ERR_PARAM, "%s (usage: ploop %s)", msg, commands[i].usage);
	return fail(PLOOP_ERR_PARAM, "%s", msg);
}

int parse_size_arg(const char *s, uint64_t *sectors)
{
	if (ploop_parse_size(s, sectors) || !*sectors)
		return usage_error("invalid size");
	return 0;
}

/* Cluster sizes are given in sectors (upstream -b) or with a unit (e.g. 1M). */
int parse_cluster_arg(const char *s, uint32_t *sectors)
{
	uint64_t v;

	if (ploop_parse_size(s, &v) || v > UINT32_MAX || !ploop_cluster_size_valid((uint32_t)v))
		return fail(PLOOP_ERR_PARAM, "invalid block size '%s': a power of two from 64 to 131072 sectors "
					     "(32K to 64M)",
			    s);
	*sectors = (uint32_t)v;
	return 0;
}

int want_args(int argc, int n)
{
	if (argc - optind < n)
		return usage_error("missing argument");
	if (argc - optind > n)
		return usage_error("too many arguments");
	return 0;
}

static void log_message(int level, const char *msg, void *ctx)
{
	(void)ctx;
	if (level <= verbosity)
		printf("%s\n", msg);
}

/* What a listing printed must have reached its output: on a full disk it fails (a short listing
 * would be taken for the whole). A reader that went away (EPIPE: `ploop list | head -1`) is no error,
 * and a command that changed something is not made to say it failed. */
static int flush_output(const struct command *cmd, int r)
{
	if (!fflush(stdout) && !ferror(stdout))
		return r;
	if (r || errno == EPIPE || !cmd->listing)
		return r;
	return fail(ploop_write_status(-errno), "cannot write the output: %s", strerror(errno));
}

int main(int argc, char **argv)
{
	int i = 1;

	signal(SIGPIPE, SIG_IGN);
	opterr = 0;	/* one line of our own per error, not getopt's as well */
	while (i < argc && argv[i][0] == '-' && argv[i][1]) {
		if (strspn(argv[i] + 1, "v") == strlen(argv[i] + 1))
			verbosity += (int)strlen(argv[i] + 1);	/* -v, -vv, -vvv */
		else if (!strncmp(argv[i], "-v", 2) && argv[i][2] >= '0' && argv[i][2] <= '9')
			verbosity = atoi(argv[i] + 2);
		else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			usage(stdout);
			return 0;
		} else {
			fprintf(stderr, "ploop: unknown option '%s' (ploop help lists the commands)\n", argv[i]);
			return PLOOP_ERR_PARAM;
		}
		i++;
	}
	if (i >= argc) {
		fprintf(stderr, "ploop: no command given (ploop help lists the commands)\n");
		return PLOOP_ERR_PARAM;
	}
	if (!strcmp(argv[i], "help")) {
		usage(stdout);
		return 0;
	}
	ploop_set_log(log_message, NULL);
	for (size_t c = 0; c < sizeof(commands) / sizeof(commands[0]); c++) {
		if (strcmp(commands[c].name, argv[i]))
			continue;
		prog_cmd = commands[c].name;
		if (i + 1 < argc && (!strcmp(argv[i + 1], "-h") || !strcmp(argv[i + 1], "--help"))) {
			printf("usage: ploop %s\n", commands[c].usage);
			return 0;
		}
		optind = 1;
		return flush_output(&commands[c], commands[c].run(argc - i, argv + i));
	}
	fprintf(stderr, "ploop: unknown command '%s' (ploop help lists the commands)\n", argv[i]);
	return PLOOP_ERR_PARAM;
}
