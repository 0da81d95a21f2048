/*
 * upchan.c - the worker's Unix socket to the uplink/issuer. It reconnects
 * every UPCHAN_RETRY_MS while the other side is away (for example while
 * it is respawned) and hands each answer (lease, seat or grant), or the
 * loss of the channel, to the callbacks worker.c gave it.
 */
#include <sys/socket.h>
#include <sys/un.h>

#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "ipc.h"
#include "log.h"
#include "proc.h"
#include "worker.h"

#define UPCHAN_RETRY_MS	200

static struct {
	struct ipc_chan	*ch;		/* NULL while reconnecting */
	struct event	*retry;
	uint32_t	 next_rid;
	void		(*answer)(const struct ipc_msg *);
	void		(*lost)(void);
} uc;

static void	upchan_connect(evutil_socket_t, short, void *);

static void
upchan_msg(struct ipc_chan *ch, const struct ipc_msg *m, void *arg)
{
	(void)ch, (void)arg;
	if (m->type == IPC_LEASE_RES || m->type == IPC_SEAT_RES ||
	    m->type == IPC_GRANT_RES)
		uc.answer(m);
}

static void
upchan_schedule(void)
{
	struct timeval tv = { 0, UPCHAN_RETRY_MS * 1000 };

	evtimer_add(uc.retry, &tv);
}

static void
upchan_closed(struct ipc_chan *ch, int bad, void *arg)
{
	(void)ch, (void)arg;
	if (bad)
		log_warnx("bad frame from the uplink");
	ipc_chan_free(uc.ch);
	uc.ch = NULL;
	uc.lost();
	upchan_schedule();
}

static void
upchan_connect(evutil_socket_t unused, short ev, void *arg)
{
	struct sockaddr_un	sun;
	int			fd;

	(void)unused, (void)ev, (void)arg;
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	memcpy(sun.sun_path, worker->env->ipc_path, sizeof(sun.sun_path));
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1) {
		if (fd != -1)
			close(fd);
		upchan_schedule();
		return;
	}
	evutil_make_socket_nonblocking(fd);
	uc.ch = ipc_chan_new(worker->base, fd, upchan_msg, upchan_closed, NULL);
	if (uc.ch == NULL) {
		close(fd);
		upchan_schedule();
	}
}

int
upchan_init(void (*answer)(const struct ipc_msg *), void (*lost)(void))
{
	uc.answer = answer;
	uc.lost = lost;
	if ((uc.retry = evtimer_new(worker->base, upchan_connect, NULL)) == NULL)
		return -1;
	upchan_connect(-1, 0, NULL);
	return 0;
}

int
upchan_send(const struct ipc_msg *m)
{
	if (uc.ch == NULL)
		return -1;
	return ipc_chan_send(uc.ch, m);
}

uint32_t
upchan_request(struct ipc_msg *m)
{
	if (++uc.next_rid == 0)
		uc.next_rid = 1;
	m->rid = uc.next_rid;
	return upchan_send(m) == -1 ? 0 : m->rid;
}

uint32_t
upchan_ask(const char *key)
{
	struct ipc_msg m;

	memset(&m, 0, sizeof(m));
	m.type = IPC_LEASE_REQ;
	memcpy(m.key, key, sizeof(m.key));
	return upchan_request(&m);
}
