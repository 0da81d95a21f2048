/*
 * master_listen.c - the master's sockets: the TLS and status listeners
 * (bound before any child, rebound on a reload only when the address
 * changed, adopted from the previous image on an upgrade) and the Unix
 * socket between the workers and the uplink/issuer, new per generation.
 */
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <netinet/in.h>

#include <netdb.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "log.h"
#include "master_int.h"

int
master_listen(const char *host, int port)
{
	struct addrinfo	 hints, *res = NULL;
	char		 sport[16];
	int		 fd = -1, one = 1, e;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	snprintf(sport, sizeof(sport), "%d", port);
	if ((e = getaddrinfo(host, sport, &hints, &res)) != 0) {
		log_errx("%s:%d: %s", host, port, gai_strerror(e));
		return -1;
	}
	fd = socket(res->ai_family, res->ai_socktype | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0);
	if (fd == -1 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == -1 ||
	    bind(fd, res->ai_addr, res->ai_addrlen) == -1 ||
	    listen(fd, 1024) == -1) {
		log_err("cannot listen on %s:%d", host, port);
		if (fd != -1)
			close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	return fd;
}

/* The workers' channel to the uplink/issuer: a Unix socket in the store. */
int
master_listen_ipc(struct master *m)
{
	struct sockaddr_un	 sun;
	struct passwd		*pw;
	int			 fd;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (conf_ipc_path(m->cf->store.path, sun.sun_path,
	    sizeof(sun.sun_path)) == -1) {
		log_errx("store.path %s: too long for a Unix socket",
		    m->cf->store.path);
		return -1;
	}
	unlink(sun.sun_path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1 || bind(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1 ||
	    chmod(sun.sun_path, 0600) == -1 || listen(fd, 128) == -1) {
		log_err("ipc socket %s", sun.sun_path);
		if (fd != -1)
			close(fd);
		return -1;
	}
	if ((pw = master_child_user(m)) != NULL &&
	    chown(sun.sun_path, pw->pw_uid, pw->pw_gid) == -1)
		log_warn("chown %s", sun.sun_path);
	memcpy(m->ipc_path, sun.sun_path, sizeof(m->ipc_path));
	return fd;
}

/*
 * A new generation gets its own IPC socket (same path): its workers can
 * reach only its uplink/issuer, never an old one about to go. The old
 * generation keeps its connections on the old socket.
 */
int
master_new_ipc(struct master *m)
{
	int fd;

	if ((fd = master_listen_ipc(m)) == -1)
		return -1;
	if (m->fd_ipc != -1)
		close(m->fd_ipc);
	m->fd_ipc = fd;
	return 0;
}

/* A listener for host:port, or -1 to keep fd when the address is the same. */
static int
master_relisten(const char *ohost, int oport, const char *host, int port,
    int *fd)
{
	*fd = -1;
	if (strcmp(ohost, host) == 0 && oport == port)
		return 0;
	return (*fd = master_listen(host, port)) == -1 ? -1 : 0;
}

/* Listener address changes: bind both new sockets before giving up any. */
int
master_rebind(struct master *m, const struct conf *ncf)
{
	const struct conf	*o = m->cf;
	int			 tls, st;

	if (master_relisten(o->server.host, o->server.port, ncf->server.host,
	    ncf->server.port, &tls) == -1)
		return -1;
	if (master_relisten(o->server.status_host, o->server.status_port,
	    ncf->server.status_host, ncf->server.status_port, &st) == -1) {
		if (tls != -1)
			close(tls);
		return -1;
	}
	if (tls != -1) {
		close(m->fd_tls);
		m->fd_tls = tls;
	}
	if (st != -1) {
		close(m->fd_status);
		m->fd_status = st;
	}
	return 0;
}

/*
 * The listener handed over by the previous image, or a new one when the
 * configuration now names another port and it is free (else the old one
 * stays: an upgrade must not stop serving).
 */
int
master_adopt_listener(int fd, const char *host, int port)
{
	struct sockaddr_storage	ss;
	socklen_t		len = sizeof(ss);
	int			have = -1, nfd;

	if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0)
		have = ntohs(ss.ss_family == AF_INET6 ?
		    ((struct sockaddr_in6 *)&ss)->sin6_port :
		    ((struct sockaddr_in *)&ss)->sin_port);
	if (have == port)
		return fd;
	if ((nfd = master_listen(host, port)) == -1) {
		log_warnx("upgrade: keeping the listener on port %d", have);
		return fd;
	}
	close(fd);
	return nfd;
}
