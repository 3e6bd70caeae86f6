/* O_NONBLOCK because a FIFO would otherwise hang open() until a writer (or reader) comes, which may
 * be never; the type is checked on the open descriptor (no race with a rename), and O_NONBLOCK is
 * dropped again for what is kept. */
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "openfile.h"

int open_regular_file(const char *path, int flags, mode_t mode, bool allow_blk)
{
	struct stat st;
	int fd = open(path, flags | O_NONBLOCK | O_CLOEXEC, mode);
	int fl, e;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st)) {
		e = -errno;
	} else if (!S_ISREG(st.st_mode) && !(allow_blk && S_ISBLK(st.st_mode))) {
		e = -OPEN_ENOTREG;
	} else {
		fl = fcntl(fd, F_GETFL);
		if (fl >= 0 && fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) == 0)
			return fd;
		e = -errno;
	}
	close(fd);
	return e;
}
