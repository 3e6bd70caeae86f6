/* Test helper: writes and reads a ploop image through libploop's chain (as a mounted device would),
 * and holds an image set's lock, so shell tests can put data into deltas and race the tool. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../ploop/ploop.h"

static int die(const struct ploop_error *err)
{
	fprintf(stderr, "ploop-io: %s\n", err->msg);
	return err->status ? err->status : 1;
}

static int open_image(const char *path, unsigned flags, struct ploop_chain **c, int *lock, struct ploop_error *err)
{
	struct ploop_descriptor *dd = NULL;

	*lock = -1;
	if (!ploop_is_descriptor_path(path))
		return ploop_chain_open_files(&path, 1, false, 0, flags, c, err);
	if (ploop_lock_descriptor(path, flags & PLOOP_OPEN_RDWR, lock, err) || ploop_descriptor_read(path, &dd, err) ||
	    ploop_descriptor_open_chain(dd, NULL, flags, c, err)) {
		ploop_descriptor_free(dd);
		return err->status;
	}
	ploop_descriptor_free(dd);
	return 0;
}

int main(int argc, char **argv)
{
	struct ploop_error err = { 0 };
	struct ploop_chain *c;
	static char buf[1 << 20];
	unsigned long long off, len = ~0ULL;
	int lock;

	if (argc == 4 && !strcmp(argv[1], "hold")) {
		if (open_image(argv[2], PLOOP_OPEN_RDWR, &c, &lock, &err))
			return die(&err);
		printf("locked\n");
		fflush(stdout);
		sleep((unsigned)atoi(argv[3]));
		ploop_chain_close(c, NULL);
		return 0;
	}
	if (argc < 4 || (strcmp(argv[1], "write") && strcmp(argv[1], "read"))) {
		fprintf(stderr, "usage: ploop-io write IMAGE OFFSET [LENGTH] < data\n"
				"       ploop-io read IMAGE OFFSET LENGTH > data\n"
				"       ploop-io hold IMAGE SECONDS\n");
		return 2;
	}
	off = strtoull(argv[3], NULL, 0);
	if (argc > 4)
		len = strtoull(argv[4], NULL, 0);
	if (!strcmp(argv[1], "read")) {
		if (open_image(argv[2], 0, &c, &lock, &err))
			return die(&err);
		while (len) {
			size_t n = len < sizeof(buf) ? len : sizeof(buf);

			if (ploop_chain_read(c, buf, n, off, &err) || fwrite(buf, 1, n, stdout) != n)
				return die(&err);
			off += n;
			len -= n;
		}
		ploop_chain_close(c, NULL);
		return 0;
	}
	if (open_image(argv[2], PLOOP_OPEN_RDWR, &c, &lock, &err))
		return die(&err);
	while (len) {
		size_t want = len < sizeof(buf) ? len : sizeof(buf);
		size_t n = fread(buf, 1, want, stdin);

		if (!n)
			break;
		if (ploop_chain_write(c, buf, n, off, &err))
			return die(&err);
		off += n;
		len -= n;
	}
	if (ploop_chain_flush(c, &err) || ploop_chain_close(c, &err))
		return die(&err);
	return 0;
}
