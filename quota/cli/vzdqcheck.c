/* vzdqcheck: the usage walk of vzquota on one tree, printed in 1k blocks and inodes. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "../quota.h"

int main(int argc, char **argv)
{
	struct vzq_quota q = { 0 };
	struct vzq_error err = { 0 };
	const char *path = NULL;
	int verbose = 1;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-v"))
			verbose = 2;
		else if (!strcmp(argv[i], "-q"))
			verbose = 0;
		else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			printf("Usage: vzdqcheck [-v|-q] path\n");
			return 0;
		} else if (argv[i][0] == '-' || path) {
			fprintf(stderr, "Usage: vzdqcheck [-v|-q] path\n");
			return VZQ_ERR_USAGE;
		} else
			path = argv[i];
	}
	if (!path) {
		fprintf(stderr, "Usage: vzdqcheck [-v|-q] path\n");
		return VZQ_ERR_USAGE;
	}
	if (verbose > 1)
		fprintf(stderr, "counting the usage of %s\n", path);
	if (vzq_scan(path, &q, time(NULL), &err)) {
		fprintf(stderr, "vzdqcheck: %s\n", err.msg);
		return err.status;
	}
	if (verbose)
		printf("quota usage for %s\n%11s %14s\n%11s %14llu\n%11s %14llu\n", path, "resource", "usage",
		       "1k-blocks", (unsigned long long)(q.stat.bcurrent / 1024), "inodes",
		       (unsigned long long)q.stat.icurrent);
	else
		printf("%llu %llu\n", (unsigned long long)(q.stat.bcurrent / 1024), (unsigned long long)q.stat.icurrent);
	vzq_quota_free(&q);
	return 0;
}
