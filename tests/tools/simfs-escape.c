/* Test helper of simfs: run chrooted into a simfs ROOT, it tries to reach a file outside PRIVATE
 * (absolute host path HOSTPATH) through symlinks, `..` chains and a rename race, and prints one
 * "ok NAME" / "not ok NAME" line per attempt. Static, so that it runs in an empty chroot. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *host_dir;	/* the outside directory, as a host absolute path */
static volatile int stop;
static int failures;

static void result(const char *name, int escaped)
{
	printf("%s escape: %s\n", escaped ? "not ok" : "ok", name);
	failures += escaped;
}

/* Whether @path opens as the outside secret (its content starts with "SECRET"). */
static int reaches_secret(const char *path)
{
	char buf[8] = { 0 };
	int fd = open(path, O_RDONLY);

	if (fd < 0)
		return 0;
	ssize_t n = read(fd, buf, 6);

	close(fd);
	return n == 6 && !memcmp(buf, "SECRET", 6);
}

static void *renamer(void *arg)
{
	(void)arg;
	while (!stop) {
		rename("/race/a/b", "/race/c");
		rename("/race/c", "/race/a/b");
	}
	return NULL;
}

int main(int argc, char **argv)
{
	char path[8192];
	pthread_t t;
	int escaped = 0;

	if (argc != 2) {
		fprintf(stderr, "usage: simfs-escape HOST_OUTSIDE_DIR (run chrooted in ROOT)\n");
		return 2;
	}
	host_dir = argv[1];
	snprintf(path, sizeof(path), "%s/secret", host_dir);
	result("absolute host path", reaches_secret(path));
	snprintf(path, sizeof(path), "/../../../../../..%s/secret", host_dir);
	result("dot-dot chain from /", reaches_secret(path));
	symlink("/", "/esc");
	snprintf(path, sizeof(path), "/esc/../../..%s/secret", host_dir);
	result("symlink to / then dot-dot", reaches_secret(path));
	symlink("../../../../../../..", "/up");
	snprintf(path, sizeof(path), "/up%s/secret", host_dir);
	result("relative symlink climbing up", reaches_secret(path));
	/* hostlink: made on the host in PRIVATE, pointing at the outside directory by host path */
	result("host symlink to the outside dir", reaches_secret("/hostlink/secret"));
	int fd = open("/hostlink/planted", O_CREAT | O_WRONLY, 0644);

	if (fd >= 0)
		close(fd);
	snprintf(path, sizeof(path), "%s/planted", host_dir);
	result("create through a host symlink", fd >= 0 || access(path, F_OK) == 0);
	result("link to the outside file", link("/hostlink/secret", "/stolen") == 0);
	/* rename race: /race/a/b moves up and down while we climb from it */
	mkdir("/race", 0755);
	mkdir("/race/a", 0755);
	mkdir("/race/a/b", 0755);
	pthread_create(&t, NULL, renamer, NULL);
	snprintf(path, sizeof(path), "/race/a/b/../../../../../..%s/secret", host_dir);
	for (int i = 0; i < 20000 && !escaped; i++) {
		char p2[8300];

		escaped |= reaches_secret(path);
		snprintf(p2, sizeof(p2), "/race/a/b/../../../..%s/raced", host_dir);
		fd = open(p2, O_CREAT | O_WRONLY, 0644);
		if (fd >= 0) {
			close(fd);
		}
	}
	stop = 1;
	pthread_join(t, NULL);
	snprintf(path, sizeof(path), "%s/raced", host_dir);
	result("rename race", escaped || access(path, F_OK) == 0);
	return failures ? 1 : 0;
}
