/* The unit-test harness: runs each registered case in a child process inside a fresh temporary
 * directory, prints "ok"/"not ok" lines, and exits non-zero if any case failed. */
#include <endian.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

#define MAX_TESTS 512

static struct {
	const char *name;
	test_fn fn;
} tests[MAX_TESTS];
static int n_tests;
bool harness_failed;

void harness_register(const char *name, test_fn fn)
{
	if (n_tests < MAX_TESTS) {
		tests[n_tests].name = name;
		tests[n_tests++].fn = fn;
	}
}

void harness_fail(const char *file, int line, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "  %s:%d: ", file, line);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	harness_failed = true;
}

static int run_one(int i)
{
	char dir[] = "/tmp/ploop-unit.XXXXXX";
	int status;
	pid_t pid;

	if (!mkdtemp(dir))
		return -1;
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid == 0) {
		if (chdir(dir))
			_exit(3);
		tests[i].fn();
		fflush(stderr);
		_exit(harness_failed ? 1 : 0);
	}
	waitpid(pid, &status, 0);
	{
		char cmd[64];

		snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
		if (system(cmd))
			fprintf(stderr, "  cannot remove %s\n", dir);
	}
	if (WIFSIGNALED(status))
		fprintf(stderr, "  %s: killed by signal %d\n", tests[i].name, WTERMSIG(status));
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
	int failed = 0, ran = 0;

	setvbuf(stdout, NULL, _IOLBF, 0);
	for (int i = 0; i < n_tests; i++) {
		if (argc > 1 && !strstr(tests[i].name, argv[1]))
			continue;
		ran++;
		if (run_one(i)) {
			printf("not ok %s\n", tests[i].name);
			failed++;
		} else {
			printf("ok %s\n", tests[i].name);
		}
	}
	fprintf(stderr, "%d of %d unit tests failed\n", failed, ran);
	return failed ? 1 : 0;
}

void fill_pattern(void *buf, size_t len, uint64_t seed)
{
	uint64_t x = seed * 0x9E3779B97F4A7C15ULL + 1;
	uint8_t *p = buf;

	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		p[i] = (uint8_t)x;
	}
}

int write_file(const char *path, const void *buf, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = write(fd, buf, len);
	close(fd);
	return n == (ssize_t)len ? 0 : -1;
}

void *read_file(const char *path, size_t *len)
{
	struct stat st;
	int fd = open(path, O_RDONLY);
	void *buf;

	if (fd < 0 || fstat(fd, &st)) {
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (buf && read(fd, buf, (size_t)st.st_size) != st.st_size) {
		free(buf);
		buf = NULL;
	}
	close(fd);
	*len = (size_t)st.st_size;
	return buf;
}

uint8_t *chain_contents(struct ploop_chain *c)
{
	struct ploop_error err = { 0 };
	uint8_t *buf = malloc(ploop_chain_size(c));

	if (buf && ploop_chain_read(c, buf, ploop_chain_size(c), 0, &err)) {
		fprintf(stderr, "  chain read: %s\n", err.msg);
		free(buf);
		return NULL;
	}
	return buf;
}

uint8_t *descriptor_contents(const char *dd_path, size_t *len)
{
	struct ploop_error err = { 0 };
	struct ploop_descriptor *dd = NULL;
	struct ploop_chain *c = NULL;
	uint8_t *buf = NULL;

	if (ploop_descriptor_read(dd_path, &dd, &err) ||
	    ploop_descriptor_open_chain(dd, NULL, PLOOP_OPEN_ALLOW_DIRTY, &c, &err)) {
		fprintf(stderr, "  %s\n", err.msg);
		ploop_descriptor_free(dd);
		return NULL;
	}
	buf = chain_contents(c);
	*len = ploop_chain_size(c);
	ploop_chain_close(c, NULL);
	ploop_descriptor_free(dd);
	return buf;
}

int descriptor_chunks(const char *dd_path, size_t *len, chunk_fn *fn, void *arg)
{
	enum { CHUNK = 1 << 20 };
	struct ploop_error err = { 0 };
	struct ploop_descriptor *dd = NULL;
	struct ploop_chain *c = NULL;
	uint8_t *buf = malloc(CHUNK);
	int r = -1;

	*len = 0;
	if (!buf || ploop_descriptor_read(dd_path, &dd, &err) ||
	    ploop_descriptor_open_chain(dd, NULL, PLOOP_OPEN_ALLOW_DIRTY, &c, &err)) {
		fprintf(stderr, "  %s\n", err.msg);
		goto out;
	}
	*len = ploop_chain_size(c);
	for (size_t off = 0; off < *len; off += CHUNK) {
		size_t n = *len - off < CHUNK ? *len - off : CHUNK;

		if (ploop_chain_read(c, buf, n, off, &err)) {
			fprintf(stderr, "  chain read: %s\n", err.msg);
			goto out;
		}
		if (fn(buf, off, n, arg))
			break;
	}
	r = 0;
out:
	if (c)
		ploop_chain_close(c, NULL);
	ploop_descriptor_free(dd);
	free(buf);
	return r;
}

struct compare {
	const uint8_t *want;
	size_t len, first_diff;
	bool differs;
};

static int compare_chunk(const uint8_t *buf, size_t off, size_t n, void *arg)
{
	struct compare *c = arg;
	size_t i = 0;

	if (off + n > c->len || !memcmp(buf, c->want + off, n))
		return off + n > c->len;
	while (buf[i] == c->want[off + i])
		i++;
	c->first_diff = off + i;
	c->differs = true;
	return 1;
}

int descriptor_compare(const char *dd_path, const uint8_t *want, size_t len, size_t *first_diff)
{
	struct compare c = { .want = want, .len = len };
	size_t got = 0;

	if (descriptor_chunks(dd_path, &got, compare_chunk, &c))
		return -1;
	if (got != len) {
		fprintf(stderr, "  size %zu vs %zu\n", got, len);
		return -1;
	}
	*first_diff = c.first_diff;
	return c.differs;
}

int patch_file(const char *path, uint64_t off, const void *bytes, size_t len)
{
	int fd = open(path, O_WRONLY);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = pwrite(fd, bytes, len, (off_t)off);
	close(fd);
	return n == (ssize_t)len ? 0 : -1;
}

int patch_u32(const char *path, uint64_t off, uint32_t v)
{
	v = htole32(v);
	return patch_file(path, off, &v, 4);
}

uint32_t peek_u32(const char *path, uint64_t off)
{
	uint32_t v = 0;
	int fd = open(path, O_RDONLY);

	if (fd >= 0) {
		if (pread(fd, &v, 4, (off_t)off) != 4)
			v = 0;
		close(fd);
	}
	return le32toh(v);
}
