/* A small unit-test harness: TEST() registers a case, each case runs in its own process and
 * temporary directory, and results print as "ok NAME" / "not ok NAME" lines. */
#ifndef HARNESS_H
#define HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "../../ploop/ploop.h"

typedef void (*test_fn)(void);
void harness_register(const char *name, test_fn fn);
void harness_fail(const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
extern bool harness_failed;

#define TEST(name)                                                                  \
	static void name(void);                                                     \
	__attribute__((constructor)) static void register_##name(void)              \
	{                                                                           \
		harness_register(#name, name);                                      \
	}                                                                           \
	static void name(void)

#define CHECK(cond)                                                                 \
	do {                                                                        \
		if (!(cond)) {                                                      \
			harness_fail(__FILE__, __LINE__, "%s", #cond);               \
			return;                                                     \
		}                                                                   \
	} while (0)

#define CHECK_EQ(a, b)                                                              \
	do {                                                                        \
		long long _a = (long long)(a), _b = (long long)(b);                 \
		if (_a != _b) {                                                     \
			harness_fail(__FILE__, __LINE__, "%s == %s (%lld != %lld)", #a, #b, _a, _b); \
			return;                                                     \
		}                                                                   \
	} while (0)

/* A libploop call that must succeed; shows the library's message when it does not. */
#define CHECK_OK(call)                                                              \
	do {                                                                        \
		struct ploop_error _e = { 0 };                                      \
		struct ploop_error *err = &_e;                                      \
		int _r = (call);                                                    \
		if (_r) {                                                           \
			harness_fail(__FILE__, __LINE__, "%s: %d %s", #call, _r, _e.msg); \
			return;                                                     \
		}                                                                   \
	} while (0)

/* A libploop call that must fail with @status. */
#define CHECK_FAILS(status, call)                                                   \
	do {                                                                        \
		struct ploop_error _e = { 0 };                                      \
		struct ploop_error *err = &_e;                                      \
		int _r = (call);                                                    \
		if (_r != (status)) {                                               \
			harness_fail(__FILE__, __LINE__, "%s: got %d (%s), wanted %d", #call, _r, _e.msg, \
				     (int)(status));                                \
			return;                                                     \
		}                                                                   \
		if (!_e.msg[0] || strchr(_e.msg, '\n')) {                          \
			harness_fail(__FILE__, __LINE__, "%s: error message is not one line", #call); \
			return;                                                     \
		}                                                                   \
	} while (0)

/* Deterministic bytes for a seed. */
void fill_pattern(void *buf, size_t len, uint64_t seed);
int write_file(const char *path, const void *buf, size_t len);
/* Whole file into a malloc'd buffer (size in *len); NULL on error. */
void *read_file(const char *path, size_t *len);
/* Reads the whole virtual disk of a chain (malloc'd). */
uint8_t *chain_contents(struct ploop_chain *c);
/* Reads the disk of the top of a descriptor's chain; NULL on error (message printed). */
uint8_t *descriptor_contents(const char *dd_path, size_t *len);
/* Reads the disk of a descriptor's top a MiB at a time (size in *len) and hands each piece to @fn,
 * until @fn returns non-zero; -1 on error (message printed). */
typedef int chunk_fn(const uint8_t *buf, size_t off, size_t n, void *arg);
int descriptor_chunks(const char *dd_path, size_t *len, chunk_fn *fn, void *arg);
/* Compares the disk of a descriptor's top with @want a MiB at a time: 0 when equal, 1 when not
 * (first differing byte in *first_diff), -1 on error or a size mismatch (message printed). */
int descriptor_compare(const char *dd_path, const uint8_t *want, size_t len, size_t *first_diff);
/* Flips/sets bytes of a file at an offset. */
int patch_file(const char *path, uint64_t off, const void *bytes, size_t len);
int patch_u32(const char *path, uint64_t off, uint32_t v);
uint32_t peek_u32(const char *path, uint64_t off);

#endif
