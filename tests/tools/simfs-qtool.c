/* Test helper of simfs: the usage a fresh scan finds in a tree, and the usage a quota file holds,
 * in the same format so that tests can compare them: "total BYTES INODES", then "user ID BYTES
 * INODES" and "group ID BYTES INODES" lines for the non-empty second-level records. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../quota/quota.h"

static void print(struct vzq_quota *q)
{
	vzq_ugid_sort(q);
	printf("total %llu %llu\n", (unsigned long long)q->stat.bcurrent, (unsigned long long)q->stat.icurrent);
	for (size_t i = 0; i < q->n_ugid; i++) {
		const struct vzq_ugid *u = &q->ugid[i];

		if (u->stat.bcurrent || u->stat.icurrent)
			printf("%s %u %llu %llu\n", u->type == VZQ_USER ? "user" : "group", u->id,
			       (unsigned long long)u->stat.bcurrent, (unsigned long long)u->stat.icurrent);
	}
}

int main(int argc, char **argv)
{
	struct vzq_error err = { 0 };
	struct vzq_quota q;
	struct vzq_handle *h;
	char fname[4096];

	memset(&q, 0, sizeof(q));
	if (argc == 3 && !strcmp(argv[1], "scan")) {
		q.flags = VZQ_FLAG_UGID_ON;
		q.ugid_limit = 100000;
		if (vzq_scan(argv[2], &q, time(NULL), &err)) {
			fprintf(stderr, "simfs-qtool: %s\n", err.msg);
			return 1;
		}
	} else if (argc == 3 && !strcmp(argv[1], "file")) {
		if (vzq_file_name((uint32_t)atoi(argv[2]), NULL, false, NULL, fname, sizeof(fname), &err) ||
		    vzq_open(fname, VZQ_RDONLY, &h, &q, &err)) {
			fprintf(stderr, "simfs-qtool: %s\n", err.msg);
			return 1;
		}
		vzq_close(h);
		printf("flags %u\n", q.flags);
	} else {
		fprintf(stderr, "usage: simfs-qtool scan PATH | file ID\n");
		return 2;
	}
	print(&q);
	vzq_quota_free(&q);
	return 0;
}
