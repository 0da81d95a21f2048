/*
 * chans.c - accepts the workers' connections on the Unix socket the master
 * bound, frames their messages, and kills a worker that sends a bad frame:
 * a peer's bytes are never trusted more than a network client's.
 */
#include <sys/queue.h>
#include <sys/socket.h>

#include <signal.h>
#include <stdlib.h>
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
	pid_t			 peer;
};

static LIST_HEAD(, chan)	 chans = LIST_HEAD_INITIALIZER(chans);
static chans_msg_cb		 chans_cb;
static uint64_t			 chans_next_id;
static struct evconnlistener	*chans_listener;

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
	if (bad && c->peer > 0) {
		log_warnx("bad frame from worker pid %d: killing it",
		    (int)c->peer);
		kill(c->peer, SIGKILL);
	}
	LIST_REMOVE(c, entry);
	ipc_chan_free(c->ch);
	free(c);
}

static void
chans_accept(struct evconnlistener *l, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	struct ucred	 cred;
	socklen_t	 len = sizeof(cred);
	struct chan	*c;

	(void)l, (void)sa, (void)salen, (void)arg;
	if ((c = calloc(1, sizeof(*c))) == NULL) {
		close(fd);
		return;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0)
		c->peer = cred.pid;
	c->id = ++chans_next_id;
	if ((c->ch = ipc_chan_new(evconnlistener_get_base(l), fd, chans_msg,
	    chans_closed, c)) == NULL) {
		close(fd);
		free(c);
		return;
	}
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
		ipc_chan_free(c->ch);
		free(c);
	}
}
