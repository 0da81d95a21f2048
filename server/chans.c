/*
 * chans.c - accepts the workers' connections on the Unix socket the master
 * bound, frames their messages, and kills a worker that sends a bad frame:
 * a peer's bytes are never trusted more than a network client's.
 *
 * Only a worker of our own master is killed (the master restarts it); any
 * other peer that reached the socket (a local process of the service
 * user) is only dropped. The peer is held by a pidfd taken when it
 * connects, so a pid reused after the peer died is never signalled.
 * Such peers have no business here at all; at most CHANS_FOREIGN_MAX are
 * held at once (the rest are closed at accept), so a local process
 * cannot spend our descriptors or memory by connecting in a loop.
 */
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/syscall.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/listener.h>

#include "chans.h"
#include "ipc.h"
#include "log.h"

struct chan {
	LIST_ENTRY(chan)	 entry;
	uint64_t		 id;
	struct ipc_chan		*ch;
	pid_t			 peer;		/* 0: not one of our workers */
	int			 pidfd;		/* -1 unless peer is set */
};

#define CHANS_FOREIGN_MAX	4	/* peers that are none of our workers */

static void	chans_free(struct chan *);

static LIST_HEAD(, chan)	 chans = LIST_HEAD_INITIALIZER(chans);
static chans_msg_cb		 chans_cb;
static uint64_t			 chans_next_id;
static struct evconnlistener	*chans_listener;
static int			 chans_foreign;	/* held now */
static time_t			 chans_told;	/* a refusal last logged */

static void
chans_msg(struct ipc_chan *ch, const struct ipc_msg *m, void *arg)
{
	struct chan *c = arg;

	(void)ch;
	chans_cb(c->id, m);
}

static void
chans_closed(struct ipc_chan *ch, int bad, void *arg)
{
	struct chan *c = arg;

	(void)ch;
	if (bad && c->peer > 0 && c->pidfd != -1) {
		log_warnx("bad frame from worker pid %d: killing it",
		    (int)c->peer);
		syscall(SYS_pidfd_send_signal, c->pidfd, SIGKILL, NULL, 0);
	} else if (bad && c->peer > 0)
		log_warnx("bad frame from worker pid %d: channel closed (no "
		    "pidfd to kill it by)", (int)c->peer);
	LIST_REMOVE(c, entry);
	chans_free(c);
}

static void
chans_free(struct chan *c)
{
	ipc_chan_free(c->ch);
	if (c->pidfd != -1)
		close(c->pidfd);
	if (c->peer == 0)
		chans_foreign--;
	free(c);
}

/* The parent pid of pid from /proc/PID/stat, or -1. */
static pid_t
chans_ppid(pid_t pid)
{
	char	 path[64], buf[512], *p;
	FILE	*f;
	size_t	 n;
	int	 ppid;

	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	if ((f = fopen(path, "re")) == NULL)
		return -1;
	n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* the command name may hold spaces and parentheses: skip past it */
	if ((p = strrchr(buf, ')')) == NULL || sscanf(p + 1, " %*c %d",
	    &ppid) != 1)
		return -1;
	return ppid;
}

/*
 * Takes a pidfd for the connecting process and keeps it when that process
 * is a sibling: a child of the master that also started us.
 */
static void
chans_peer(struct chan *c, int fd)
{
	struct ucred	cred;
	socklen_t	len = sizeof cred;

	c->pidfd = -1;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == -1 ||
	    cred.pid <= 0)
		return;
	/*
	 * Without pidfd_open (valgrind 3.19 does not know it) a sibling is
	 * still told from a stranger, so our workers never count against
	 * CHANS_FOREIGN_MAX, but it cannot be killed safely (chans_closed).
	 */
	if ((c->pidfd = syscall(SYS_pidfd_open, cred.pid, 0)) == -1 &&
	    errno != ENOSYS)
		return;
	if (chans_ppid(cred.pid) != getppid()) {
		if (c->pidfd != -1)
			close(c->pidfd);
		c->pidfd = -1;
		return;
	}
	c->peer = cred.pid;
}

static void
chans_accept(struct evconnlistener *l, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	struct chan	*c;

	(void)l, (void)sa, (void)salen, (void)arg;
	if ((c = calloc(1, sizeof(*c))) == NULL) {
		close(fd);
		return;
	}
	chans_peer(c, fd);
	if (c->peer == 0 && chans_foreign >= CHANS_FOREIGN_MAX) {
		if (time(NULL) - chans_told >= 60) {
			chans_told = time(NULL);
			log_warnx("ipc: a process that is no worker of ours "
			    "connected with %d such already held: closed",
			    chans_foreign);
		}
		close(fd);
		free(c);
		return;
	}
	c->id = ++chans_next_id;
	if ((c->ch = ipc_chan_new(evconnlistener_get_base(l), fd, chans_msg,
	    chans_closed, c)) == NULL) {
		close(fd);
		if (c->pidfd != -1)
			close(c->pidfd);
		free(c);
		return;
	}
	if (c->peer == 0)
		chans_foreign++;
	LIST_INSERT_HEAD(&chans, c, entry);
}

int
chans_init(struct event_base *base, int listen_fd, chans_msg_cb cb)
{
	chans_cb = cb;
	chans_listener = evconnlistener_new(base, chans_accept, NULL,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, listen_fd);
	return chans_listener == NULL ? -1 : 0;
}

void
chans_send(uint64_t id, const struct ipc_msg *m)
{
	struct chan *c;

	LIST_FOREACH(c, &chans, entry)
		if (c->id == id) {
			ipc_chan_send(c->ch, m);
			return;
		}
}

void
chans_stop_listening(void)
{
	if (chans_listener != NULL)
		evconnlistener_free(chans_listener);
	chans_listener = NULL;
}

void
chans_close_all(void)
{
	struct chan *c;

	chans_stop_listening();
	while ((c = LIST_FIRST(&chans)) != NULL) {
		LIST_REMOVE(c, entry);
		chans_free(c);
	}
}
