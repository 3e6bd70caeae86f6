/* open(2) for the files libploop and libvzquota read and write (images, descriptors, lock and quota
 * files): never blocks on a FIFO put in place of one, and refuses what is not a regular file. */
#ifndef COMMON_OPENFILE_H
#define COMMON_OPENFILE_H

#include <errno.h>
#include <stdbool.h>
#include <sys/types.h>

/* The answer for a FIFO, socket, character device or directory where a file was expected: no
 * errno names it (BSD's EFTYPE would). */
#define OPEN_ENOTREG EMEDIUMTYPE

/* open(@path, @flags | O_CLOEXEC, @mode) of a regular file (or a block device with @allow_blk):
 * the descriptor, without O_NONBLOCK; or -errno, -OPEN_ENOTREG for anything else. */
int open_regular_file(const char *path, int flags, mode_t mode, bool allow_blk);

#endif
