/* `ploop` snapshot commands: snapshot, snapshot-list, snapshot-merge, snapshot-delete, snapshot-switch. */
#include <string.h>

#include "cli.h"

static int only_dd_arg(int argc)
{
	return want_args(argc, 1);
}

int cmd_snapshot(int argc, char **argv)
{
	struct ploop_error err = { 0 };
	char guid[PLOOP_GUID_BUF];
	const char *want = NULL;
	int c;

	while ((c = getopt(argc, argv, "u:")) != -1) {
		if (c != 'u')
			return usage_error("invalid option");
		want = optarg;
	}
	if (only_dd_arg(argc))
		return PLOOP_ERR_PARAM;
	if (ploop_snapshot(argv[optind], want, guid, &err))
		return report_error(&err);
	printf("ploop snapshot %s has been successfully created\n", guid);
	return 0;
}

enum field { F_UUID, F_PARENT, F_CURRENT, F_FNAME };
static const struct {
	const char *name, *title;
	int width;
} fields[] = {
	[F_UUID] = { "uuid", "UUID", 38 },
	[F_PARENT] = { "parent_uuid", "PARENT_UUID", 38 },
	[F_CURRENT] = { "current", "C", 1 },
	[F_FNAME] = { "fname", "FNAME", 32 },
};

static int parse_fields(const char *s, enum field *out, int *n)
{
	char buf[256];

	if (strlen(s) >= sizeof(buf))
		return -1;
	strcpy(buf, s);
	*n = 0;
	for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
		size_t i;

		for (i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
			if (!strcmp(tok, fields[i].name))
				break;
		if (i == sizeof(fields) / sizeof(fields[0]) || *n == 8)
			return -1;
		out[(*n)++] = (enum field)i;
	}
	return *n ? 0 : -1;
}

/* Upstream's layout: fixed-width columns, the current image marked '*', in descriptor order. */
int cmd_snapshot_list(int argc, char **argv)
{
	struct ploop_error err = { 0 };
	struct ploop_descriptor *dd = NULL;
	enum field cols[8] = { F_PARENT, F_CURRENT, F_UUID, F_FNAME };
	int ncols = 4, c, lock, chain[PLOOP_MAX_CHAIN], nchain = 0;
	bool header = true, snap_view = false;
	const char *only = NULL;
	char only_guid[PLOOP_GUID_BUF], current[PLOOP_GUID_BUF];

	while ((c = getopt(argc, argv, "Hso:u:")) != -1) {
		switch (c) {
		case 'H': header = false; break;
		case 's': snap_view = true; break;
		case 'o':
			if (parse_fields(optarg, cols, &ncols))
				return fail(1, "invalid field list '%s' (uuid,parent_uuid,current,fname)",
					    optarg);	/* upstream's exit code for an unknown field */
			break;
		case 'u': only = optarg; break;
		default: return usage_error("invalid option");
		}
	}
	if (only_dd_arg(argc))
		return PLOOP_ERR_PARAM;
	if (only && ploop_parse_guid(only, only_guid))
		return fail(PLOOP_ERR_PARAM, "'%s' is not a GUID", only);
	if (ploop_lock_descriptor(argv[optind], false, &lock, &err) || ploop_descriptor_read(argv[optind], &dd, &err))
		return report_error(&err);
	strcpy(current, dd->top_guid);
	if (snap_view) {
		int s = ploop_descriptor_find_snapshot(dd, dd->top_guid);

		strcpy(current, dd->snapshots[s].parent);
	}
	if (only && ploop_descriptor_chain(dd, only_guid, chain, &nchain, &err)) {
		ploop_descriptor_free(dd);
		report_error(&err);
		return 1;	/* upstream's exit code for an unknown UUID here */
	}
	if (header) {
		for (int i = 0; i < ncols; i++)
			printf("%-*s ", fields[cols[i]].width, fields[cols[i]].title);
		putchar('\n');
	}
	/* All snapshots in descriptor order, or with -u the chain from UUID down to the base. */
	for (int k = 0; k < (only ? nchain : dd->n_snapshots); k++) {
		int s = only ? ploop_descriptor_find_snapshot(dd, dd->images[chain[nchain - 1 - k]].guid) : k;
		const struct ploop_snapshot_entry *sn = &dd->snapshots[s];
		int im = ploop_descriptor_find_image(dd, sn->guid);

		if (snap_view && !strcmp(sn->guid, dd->top_guid))
			continue;
		for (int i = 0; i < ncols; i++) {
			const char *v = "";

			switch (cols[i]) {
			case F_UUID: v = sn->guid; break;
			case F_PARENT: v = sn->parent; break;
			case F_CURRENT: v = strcmp(sn->guid, current) ? "" : "*"; break;
			case F_FNAME: v = dd->images[im].path; break;
			}
			if (i + 1 < ncols)
				printf("%-*s ", fields[cols[i]].width, v);
			else
				printf("%s\n", v);
		}
	}
	ploop_descriptor_free(dd);
	ploop_unlock_descriptor(lock);
	return 0;
}

int cmd_snapshot_merge(int argc, char **argv)
{
	struct ploop_error err = { 0 };
	const char *guid = NULL;
	bool all = false;
	int c;

	while ((c = getopt(argc, argv, "u:A")) != -1) {
		switch (c) {
		case 'u': guid = optarg; break;
		case 'A': all = true; break;
		default: return usage_error("invalid option");
		}
	}
	if (only_dd_arg(argc))
		return PLOOP_ERR_PARAM;
	if (all && guid)
		return usage_error("-u and -A exclude each other");
	if (ploop_snapshot_merge(argv[optind], guid, all, &err))
		return report_error(&err);
	printf("ploop snapshot has been successfully merged\n");
	return 0;
}

int cmd_snapshot_delete(int argc, char **argv)
{
	struct ploop_error err = { 0 };
	const char *guid = NULL;
	bool marked;
	int c;

	while ((c = getopt(argc, argv, "u:")) != -1) {
		if (c != 'u')
			return usage_error("invalid option");
		guid = optarg;
	}
	if (only_dd_arg(argc))
		return PLOOP_ERR_PARAM;
	if (!guid)
		return usage_error("-u UUID is required");
	if (ploop_snapshot_delete(argv[optind], guid, &marked, &err))
		return report_error(&err);
	if (!marked)	/* else it said it is marked temporary */
		printf("ploop snapshot %s has been successfully deleted\n", guid);
	return 0;
}

int cmd_snapshot_switch(int argc, char **argv)
{
	struct ploop_error err = { 0 };
	const char *guid = NULL;
	bool keep = false;
	int c;

	while ((c = getopt(argc, argv, "u:D")) != -1) {
		switch (c) {
		case 'u': guid = optarg; break;
		case 'D': keep = true; break;
		default: return usage_error("invalid option");
		}
	}
	if (only_dd_arg(argc))
		return PLOOP_ERR_PARAM;
	if (!guid)
		return usage_error("-u UUID is required");
	if (ploop_snapshot_switch(argv[optind], guid, keep, &err))
		return report_error(&err);
	printf("ploop snapshot has been successfully switched\n");
	return 0;
}
