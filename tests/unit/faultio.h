/* A fault-injecting double of libploop's I/O table for crash and error tests: it counts the
 * operations that change files, makes the Nth fail (once, or with every later one, as if the
 * process had died or the disk were full), and can simulate a power loss by undoing a random
 * subset of the writes that no fsync made durable. */
#ifndef FAULTIO_H
#define FAULTIO_H

#include <stdbool.h>
#include <stdint.h>

void faultio_install(void);
void faultio_uninstall(void);
/* The @n-th mutating operation from now (1-based) fails with @errnum; with @sticky every later
 * one fails too. n = 0 disarms. */
void faultio_arm(long n, int errnum, bool sticky);
bool faultio_triggered(void);
long faultio_count(void);
/* Power loss: each write since its file's last fsync is undone with probability 1/2 (newest
 * first), then the double forgets all history. */
void faultio_crash(uint64_t seed);

#endif
