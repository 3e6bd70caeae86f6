/* Loop devices and mounting, for ploopd (loop.c). All return 0 or -errno, with @err filled. */
#ifndef PLOOP_LOOP_H
#define PLOOP_LOOP_H

#include <stdbool.h>
#include <stddef.h>

#include <stdint.h>
#include <sys/types.h>

/* A loop device over [offset, offset+sizelimit) of @file (sizelimit 0: to the end). */
int loop_attach(const char *file, bool ro, uint64_t offset, uint64_t sizelimit, char *dev, size_t devlen, char *err,
		size_t errlen);
int loop_detach(const char *dev);
int loop_set_size(const char *dev, uint64_t offset, uint64_t sizelimit);
/* The size of @path, a file of our own FUSE mount, as the kernel sees it (read by a child). */
int served_file_size(const char *path, int64_t *end);
int fs_mount(const char *dev, const char *dir, const char *fstype, const char *opts, bool ro, char *err,
	     size_t errlen);
int fs_umount(const char *dir);
/* Unmounts every mount of block device @dev (the last directory tried is left in @dir). */
int fs_umount_device(const char *dev, char *dir, size_t len);
/* A filesystem frozen by a child process, which thaws it when told to or when the server dies. */
struct freezer {
	pid_t pid;
	void *stack;
	int cmd, res;
};
/* Freezes the filesystem of block device @dev mounted at @dir (-ESTALE if @dir is not on it). */
int fs_freeze(const char *dir, dev_t dev, struct freezer *fz);
int fs_thaw(struct freezer *fz);
/* A process (not this one) holding @dev open, or 0. */
pid_t device_opener(const char *dev);

#endif
