/* The control socket of ploopd: a root-only unix socket in the run directory; each message is
 * one command line, each reply one line ("ok ..." or "err CODE message"). One command per connection, one connection at a time. */
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>

#include "server.h"

static pthread_t thread;

/* Whether the peer of connection @c closed its end (what it sent is still there to read). */
static bool client_gone(int c)
{
	struct pollfd p = { .fd = c, .events = POLLRDHUP };

	return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

static void *control_loop(void *arg)
{
	const struct timeval idle = { .tv_sec = 5 };
	struct srv *s = arg;

	while (!s->stopping) {
		char line[4096], reply[4096];
		struct ucred cred;
		socklen_t clen = sizeof(cred);
		ssize_t n;
		int c = accept4(s->ctl_fd, NULL, NULL, SOCK_CLOEXEC);

		if (c < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		/* The socket is mode 0600 in a root-only directory; check the peer all the same. */
		if (getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cred, &clen) || cred.uid != 0) {
			close(c);
			continue;
		}
		/* A command comes right after the connect: a peer that sends nothing (or reads no
		 * reply) for 5 s is dropped, or every later command would wait behind it. */
		setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &idle, sizeof(idle));
		setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &idle, sizeof(idle));
		/* One command per connection: a client that kept one open would hold every other
		 * command back. */
		n = recv(c, line, sizeof(line) - 1, 0);
		/* A client that is gone gave up on its command (it found us stopped, or was killed):
		 * run later, it would surprise everyone - a umount nobody waits for any more took the
		 * set away after a SIGCONT. */
		if (n > 0 && client_gone(c)) {
			line[n] = '\0';
			slog("command dropped, its client has gone: %.100s", line);
			n = 0;
		}
		if (n > 0) {
			line[n] = '\0';
			line[strcspn(line, "\n")] = '\0';
			online_command(s, line, reply, sizeof(reply));
			send(c, reply, strlen(reply), MSG_NOSIGNAL);
		}
		close(c);
	}
	return NULL;
}

int control_start(struct srv *s, char *errbuf, size_t errlen)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };

	if (strlen(s->sock_path) >= sizeof(addr.sun_path)) {
		snprintf(errbuf, errlen, "%s: path too long", s->sock_path);
		return -ENAMETOOLONG;
	}
	strcpy(addr.sun_path, s->sock_path);
	s->ctl_fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (s->ctl_fd < 0) {
		snprintf(errbuf, errlen, "socket: %s", strerror(errno));
		return -errno;
	}
	unlink(s->sock_path);
	if (bind(s->ctl_fd, (struct sockaddr *)&addr, sizeof(addr)) || chmod(s->sock_path, 0600) ||
	    listen(s->ctl_fd, 8)) {
		snprintf(errbuf, errlen, "%s: %s", s->sock_path, strerror(errno));
		close(s->ctl_fd);
		s->ctl_fd = -1;
		return -errno;
	}
	if (pthread_create(&thread, NULL, control_loop, s)) {
		snprintf(errbuf, errlen, "cannot start the control thread");
		close(s->ctl_fd);
		s->ctl_fd = -1;
		unlink(s->sock_path);
		return -EAGAIN;
	}
	return 0;
}

void control_stop(struct srv *s)
{
	if (s->ctl_fd < 0)
		return;
	shutdown(s->ctl_fd, SHUT_RDWR);
	if (!pthread_equal(pthread_self(), thread))
		pthread_join(thread, NULL);
	close(s->ctl_fd);
	s->ctl_fd = -1;
	unlink(s->sock_path);
}
