/* FUSE over io_uring for a libfuse 3.14 low-level session: the kernel (6.14 and later, with
 * fuse.enable_uring=1) hands requests to per-CPU queues of ring entries instead of /dev/fuse reads,
 * and a request issued on one CPU is served by a thread of that CPU's queue. Used by simfs (ploopd
 * measured no gain from it, see BENCHMARKS.md).
 *
 * libfuse 3.14 knows nothing of it: the transport sits under the session as its custom I/O. It
 * asks for FUSE_OVER_IO_URING in the INIT reply, then feeds each request taken from a ring entry to
 * fuse_session_process_buf() and turns the reply written by the handler into the entry's commit.
 * Requests the kernel keeps on /dev/fuse (INIT, FORGET, INTERRUPT) and notifications still go
 * through libfuse's own loop. Every handler must reply from the thread that runs it. */
#ifndef COMMON_FUSE_RING_H
#define COMMON_FUSE_RING_H

#ifndef FUSE_USE_VERSION
#define FUSE_USE_VERSION 312
#endif
#include <fuse_lowlevel.h>
#include <stdbool.h>
#include <stddef.h>

/* Installs the transport on @se, mounted already (fuse_session_mount). @threads_per_queue: the
 * requests one CPU may have in service at once; @pin binds them to their CPU (fast wakeups for
 * synchronous callers, but one CPU for all of a queue's work). With @enable false, or when the kernel does not
 * offer the ring, the session runs on /dev/fuse as before. Returns 0 or -errno. One per process. */
int fuse_ring_attach(struct fuse_session *se, unsigned threads_per_queue, bool pin, bool enable);

/* From the init() operation of the file system: asks for the ring if the kernel offers it (and
 * turns off splice, which would bypass the ring). */
void fuse_ring_init(struct fuse_conn_info *conn);

/* After fuse_session_unmount(): waits for the ring threads (the kernel stops them when the
 * connection goes). */
void fuse_ring_detach(void);

/* The payload buffer of the ring entry the calling thread serves now (NULL off the ring): a read
 * handler that builds its reply there saves one copy of the data. */
void *fuse_ring_reply_buffer(size_t len);

#endif
