/* Smallest end-to-end case: create, write through the chain, read back after reopening. */
#include <stdlib.h>

#include "harness.h"

TEST(smoke_write_reopen_read)
{
	struct ploop_create_params p = { .size_sectors = 16 * 2048, .cluster_sectors = 128 };
	struct ploop_chain *c;
	const char *path = "root.hds";
	uint8_t buf[100000], *all;

	fill_pattern(buf, sizeof(buf), 1);
	CHECK_OK(ploop_init_image(path, &p, err));
	CHECK_OK(ploop_chain_open_files(&path, 1, false, 0, PLOOP_OPEN_RDWR, &c, err));
	CHECK_OK(ploop_chain_write(c, buf, sizeof(buf), 12345, err));
	CHECK_OK(ploop_chain_close(c, err));
	CHECK_OK(ploop_chain_open_files(&path, 1, false, 0, 0, &c, err));
	all = chain_contents(c);
	CHECK(all);
	CHECK(!memcmp(all + 12345, buf, sizeof(buf)));
	for (size_t i = 0; i < 12345; i++)
		CHECK(all[i] == 0);
	free(all);
	CHECK_OK(ploop_chain_close(c, err));
}
