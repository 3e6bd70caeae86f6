/* A stand-in for the simfs daemon in the vzquota tests: holds the live lock of a quota, marks its
 * file LIVE and SERVED, and answers requests: path (its argument), sync (writes usage
 * @bytes/@inodes into the file), reload (ok), status (no second level). Usage: vzq-fakelive ID
 * FILE MOUNTPOINT BYTES INODES. Stops on SIGTERM. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "../quota.h"

static int update(const char *file, const struct vzq_quota *live, uint32_t set, uint32_t clear)
{
	struct vzq_handle *h;
	struct vzq_quota q;
	struct vzq_error err = { 0 };
	int rc;

	if (vzq_open(file, VZQ_RDWR, &h, &q, &err)) {
		fprintf(stderr, "fakelive: %s\n", err.msg);
		return -1;
	}
	rc = vzq_merge_usage(&q, live, &err);
	q.flags = (q.flags | set) & ~clear;
	if (!rc)
		rc = vzq_write(h, &q, &err);
	if (rc)
		fprintf(stderr, "fakelive: %s\n", err.msg);
	vzq_close(h);
	vzq_quota_free(&q);
	return rc;
}

static volatile sig_atomic_t stop;
static void on_term(int sig)
{
	(void)sig;
	stop = 1;
}

int main(int argc, char **argv)
{
	struct vzq_quota live = { 0 };
	struct vzq_error err = { 0 };
	int lock, lfd;

	if (argc != 6)
		return 2;
	uint32_t id = (uint32_t)strtoul(argv[1], NULL, 10);
	live.stat.bcurrent = strtoull(argv[4], NULL, 10);
	live.stat.icurrent = strtoull(argv[5], NULL, 10);
	if (vzq_live_acquire(id, &lock, &err) || vzq_live_listen(id, &lfd, &err)) {
		fprintf(stderr, "fakelive: %s\n", err.msg);
		return err.status;
	}
	if (update(argv[2], &live, VZQ_FLAG_LIVE | VZQ_FLAG_SERVED, 0))
		return 1;
	struct sigaction sa = { .sa_handler = on_term };
	sigaction(SIGTERM, &sa, NULL);
	printf("ready\n");
	fflush(stdout);
	while (!stop) {
		char req[64], reply[4200];
		int c = accept(lfd, NULL, NULL);
		if (c < 0)
			continue;
		ssize_t n = recv(c, req, sizeof(req) - 1, 0);
		req[n > 0 ? n : 0] = 0;
		if (!strcmp(req, VZQ_REQ_PATH))
			snprintf(reply, sizeof(reply), "ok %s", argv[3]);
		else if (!strcmp(req, VZQ_REQ_SYNC))
			snprintf(reply, sizeof(reply), update(argv[2], &live, 0, 0) ? "error 4 sync failed" : "ok");
		else if (!strcmp(req, VZQ_REQ_RELOAD))
			snprintf(reply, sizeof(reply), "ok");
		else if (!strcmp(req, VZQ_REQ_STATUS))
			snprintf(reply, sizeof(reply), "ok 0 0");	/* no second level */
		else
			snprintf(reply, sizeof(reply), "error 2 unknown request");
		send(c, reply, strlen(reply), MSG_NOSIGNAL);
		close(c);
	}
	update(argv[2], &live, 0, VZQ_FLAG_LIVE);
	vzq_live_release(lock);
	return 0;
}
