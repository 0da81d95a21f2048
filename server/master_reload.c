/*
 * master_reload.c - a new generation without a stop: HUP reloads the
 * configuration (kept if the new one fails any check), USR2 hands the
 * listeners, the stats block and the children to a new image of the
 * binary (upgrade.c), which adopts them here. The previous generation
 * drains either way.
 */
#include <string.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "conf.h"
#include "log.h"
#include "master_int.h"
#include "proc.h"
#include "sdnotify.h"
#include "stats.h"
#include "tls.h"
#include "upgrade.h"

/*
 * A log.file the reload names anew, opened before anything is given up: a
 * reload that cannot open it is refused (-2). -1: nothing to switch to.
 * Back to standard error needs a restart: it was given up at start.
 */
static int
reload_log_open(const struct conf *o, const struct conf *n)
{
	int fd;

	if (n->log.file == NULL) {
		if (o->log.file != NULL)
			log_warnx("reload: log.file removed; logging to %s until "
			    "a restart", o->log.file);
		return -1;
	}
	if (o->log.file != NULL && strcmp(o->log.file, n->log.file) == 0)
		return -1;
	if ((fd = log_open(n->log.file)) == -1) {
		log_warn("reload failed, keeping the running configuration: "
		    "log.file %s", n->log.file);
		return -2;
	}
	return fd;
}

void
master_reload(struct master *m)
{
	struct conf	*ncf;
	SSL_CTX		*ntls;
	char		 err[4096];
	int		 lfd;

	sdnotify("RELOADING=1");
	log_info("reloading %s", m->cfpath);
	if ((ncf = conf_load(m->cfpath, &m->ov, CONF_FILES, err,
	    sizeof(err))) == NULL) {
		log_warnx("reload failed, keeping the running configuration:"
		    "\n%s", err);
		goto done;
	}
	if ((ntls = tls_server_ctx_new(ncf, err, sizeof(err))) == NULL) {
		log_warnx("reload failed, keeping the running configuration:"
		    " %s", err);
		conf_free(ncf);
		goto done;
	}
	if ((lfd = reload_log_open(m->cf, ncf)) == -2) {
		SSL_CTX_free(ntls);
		conf_free(ncf);
		goto done;
	}
	if (ncf->mode != m->cf->mode || strcmp(ncf->store.path,
	    m->cf->store.path) != 0 || master_rebind(m, ncf) == -1) {
		log_warnx("reload failed: mode and store.path need a restart,"
		    " listeners must be free; keeping the running configuration");
		if (lfd != -1)
			close(lfd);
		SSL_CTX_free(ntls);
		conf_free(ncf);
		goto done;
	}
	/* Before the new generation forks: its children inherit the log. */
	if (lfd != -1) {
		log_info("reload: logging to %s from now on", ncf->log.file);
		if (log_use(lfd) == -1)
			log_warn("reload: log.file %s", ncf->log.file);
	}
	SSL_CTX_free(m->tls);
	conf_free(m->cf);
	m->tls = ntls;
	m->cf = ncf;
	log_init(ncf->log.level, ncf->log.json, NULL);
	m->gen++;
	memset(m->fails, 0, sizeof(m->fails));
	memset(m->unready, 0, sizeof(m->unready));
	memset(m->not_before, 0, sizeof(m->not_before));
	if (master_new_ipc(m) == -1)
		log_warnx("reload: new workers share the old IPC socket");
	master_fill(m);
	master_retire_generation(m);
	log_info("reloaded: generation %d", m->gen);
done:
	sdnotify("READY=1");
}

/* USR2: hand the listeners, the stats block and the children to a new image. */
void
master_upgrade(struct master *m)
{
	struct upgrade_state	st;
	int			i;

	memset(&st, 0, sizeof(st));
	st.fd_tls = m->fd_tls;
	st.fd_status = m->fd_status;
	st.fd_ipc = m->fd_ipc;
	st.fd_stats = stats_fd();
	for (i = 0; i < MASTER_MAX_CHILDREN; i++)
		if (m->kids[i].pid != 0 && st.nkids < UPGRADE_MAX_KIDS) {
			st.kids[st.nkids].pid = m->kids[i].pid;
			st.kids[st.nkids++].role = m->kids[i].role;
		}
	sdnotify("RELOADING=1");
	upgrade_exec(&st);	/* returns only when the upgrade failed */
	sdnotify("READY=1");
}

/* The new image of a USR2 upgrade: take over instead of binding. */
int
master_adopt(struct master *m, const struct upgrade_state *st)
{
	int i;

	m->upgraded = 1;
	m->gen = 1;	/* the previous image's children are generation 0 */
	for (i = 0; i < st->nkids && i < MASTER_MAX_CHILDREN; i++) {
		m->kids[i].pid = st->kids[i].pid;
		m->kids[i].role = st->kids[i].role;
		m->kids[i].gen = 0;
		m->kids[i].started = proc_now_ms();
	}
	m->fd_tls = master_adopt_listener(st->fd_tls, m->cf->server.host,
	    m->cf->server.port);
	m->fd_status = master_adopt_listener(st->fd_status,
	    m->cf->server.status_host, m->cf->server.status_port);
	m->fd_ipc = st->fd_ipc;
	return master_new_ipc(m);
}

/* New generation up: drain the previous image's children, as a reload. */
void
master_upgraded(struct master *m)
{
	int i, n = 0;

	upgrade_commit();
	for (i = 0; i < MASTER_MAX_CHILDREN; i++)
		n += m->kids[i].pid != 0 && m->kids[i].gen != m->gen;
	master_retire_generation(m);
	log_info("upgraded to %s: %d processes of the previous binary"
	    " draining", LICPROXY_VERSION, n);
}
