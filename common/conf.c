/*
 * conf.c - licproxy.yaml into one struct conf: the defaults, the file
 * (conf_yaml.c), the command-line overrides, then the checks
 * (conf_check.c), every problem collected with its position (conf_err.c).
 */
#include <sys/stat.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <yaml.h>

#include "conf.h"
#include "conf_int.h"
#include "file.h"
#include "log.h"

#define CONF_DEFAULT_PATH	"/etc/licproxy/licproxy.yaml"

static void
conf_defaults(struct cctx *c)
{
	struct conf *cf = c->cf;

	cf->mode = CONF_PROXY;
	conf_setstr(c, &cf->server.host, "0.0.0.0");
	cf->server.port = 8443;
	conf_setstr(c, &cf->server.status_host, "0.0.0.0");
	cf->server.status_port = 8089;
	cf->server.workers = conf_ncpu();
	conf_setstr(c, &cf->server.tls_cert, "/etc/licproxy/tls/server.crt");
	conf_setstr(c, &cf->server.tls_key, "/etc/licproxy/tls/server.key");
	conf_setstr(c, &cf->server.client_ca, "");
	cf->server.max_body = 256 * 1024;
	cf->server.max_connections = 4096;
	cf->server.max_header = 16 * 1024;
	cf->server.header_timeout_ms = 10 * 1000;
	cf->server.body_timeout_ms = 10 * 1000;
	cf->server.keepalive_timeout_ms = 60 * 1000;
	cf->server.drain_timeout_ms = 10 * 1000;
	conf_setstr(c, &cf->license.ca_file, "");
	cf->license.timeout_ms = 5 * 1000;
	cf->license.sync_interval_ms = 60 * 1000;
	cf->license.negative_ttl_ms = 30 * 1000;
	cf->license.max_rejections = 100000;
	cf->license.miss_rate = 50;
	cf->license.miss_burst = 200;
	cf->usage.dedup_window_s = 24 * 3600;
	cf->seats.ttl_s = 5 * 60;
	conf_setstr(c, &cf->store.path, "/var/lib/licproxy");
	cf->store.max_size = 1ULL << 30;
	conf_setstr(c, &cf->authority.signing_key,
	    "/etc/licproxy/authority.key");
	cf->authority.lease_refresh_s = 60;
	cf->authority.lease_ttl_s = 72 * 3600;
	cf->authority.seat_grant_ttl_s = 72 * 3600;
	cf->log.level = LOG_INFO;
	cf->log.json = 0;
}

static void
conf_ov_port(struct cctx *c, int port, int *field, enum slot s,
    const char *what)
{
	if (port == 0)
		return;
	if (port < 1 || port > 65535) {
		conf_errp(c, NULL, "%s: must be 1-65535, got %d", what, port);
		return;
	}
	*field = port;
	memset(&c->pos[s], 0, sizeof c->pos[s]);
}

static void
conf_overrides(struct cctx *c, const struct conf_overrides *ov)
{
	struct conf	*cf = c->cf;
	int		 i;

	if (ov->host != NULL)
		conf_setstr(c, &cf->server.host, ov->host);
	conf_ov_port(c, ov->port, &cf->server.port, S_PORT,
	    "server.port (--port)");
	conf_ov_port(c, ov->status_port, &cf->server.status_port,
	    S_STATUS_PORT, "server.status_port (--status-port)");
	if (ov->store != NULL && *ov->store == '\0')
		conf_errp(c, NULL, "store.path (--store): must not be empty");
	else if (ov->store != NULL)
		conf_setstr(c, &cf->store.path, ov->store);
	if (ov->workers < 0 || ov->workers > CONF_MAX_WORKERS)
		conf_errp(c, NULL, "server.workers (--workers): must be "
		    "1-60, got %d", ov->workers);
	else if (ov->workers > 0)
		cf->server.workers = ov->workers;
	if (ov->n_upstream < 0 || ov->n_upstream > CONF_MAX_URLS) {
		conf_errp(c, NULL, "license.server_url (--upstream): at most "
		    "%d entries allowed", CONF_MAX_URLS);
		return;
	}
	if (ov->n_upstream == 0)
		return;
	conf_list_clear(cf, 1);
	memset(&c->pos[S_SERVER_URL], 0, sizeof c->pos[S_SERVER_URL]);
	for (i = 0; i < ov->n_upstream; i++)
		if (conf_list_item(c, "license.server_url (--upstream)", 1,
		    cf->license.n_server_url, ov->upstream[i], NULL) == 0)
			cf->license.n_server_url++;
}

/*
 * The whole file into memory, refused past CONF_MAX_FILE: libyaml then
 * reads a bounded string. st_size is only a first look; the read itself
 * stops one byte past the bound, for a file that grows meanwhile.
 */
static unsigned char *
conf_read(struct cctx *c, int fd, const struct stat *st, size_t *len)
{
	unsigned char	*buf;
	ssize_t		 n;

	*len = 0;
	if (st->st_size > CONF_MAX_FILE) {
		conf_errp(c, NULL, "larger than " CONF_MAX_FILE_STR " (%lld "
		    "bytes): not a configuration file", (long long)st->st_size);
		return NULL;
	}
	if ((buf = malloc(CONF_MAX_FILE + 1)) == NULL) {
		conf_errp(c, NULL, "out of memory");
		return NULL;
	}
	while (*len <= CONF_MAX_FILE && (n = read(fd, buf + *len,
	    CONF_MAX_FILE + 1 - *len)) != 0) {
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			conf_errp(c, NULL, "cannot read: %s", strerror(errno));
			goto fail;
		}
		*len += (size_t)n;
	}
	if (*len > CONF_MAX_FILE) {
		conf_errp(c, NULL, "larger than " CONF_MAX_FILE_STR ": not a "
		    "configuration file");
		goto fail;
	}
	return buf;
 fail:
	free(buf);
	return NULL;
}

struct conf *
conf_load(const char *path, const struct conf_overrides *ov, int check_files,
    char *err, size_t errlen)
{
	struct cctx	 c;
	struct conf	*cf = NULL;
	struct stat	 st;
	unsigned char	*buf = NULL;
	size_t		 len;
	int		 fd;

	if (path == NULL)
		path = CONF_DEFAULT_PATH;
	memset(&c, 0, sizeof c);
	c.file = path;
	c.err = err;
	c.errlen = errlen;
	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if ((cf = c.cf = calloc(1, sizeof *cf)) == NULL) {
		conf_errp(&c, NULL, "out of memory");
		goto fail;
	}
	conf_defaults(&c);
	conf_setstr(&c, &cf->path, path);
	if ((fd = file_open(path, &st)) == -1) {
		conf_errp(&c, NULL, "cannot open: %s", strerror(errno));
		goto fail;
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		conf_errp(&c, NULL, "not a configuration file (%s)",
		    S_ISDIR(st.st_mode) ? "a directory" : "not a regular file");
		goto fail;
	}
	buf = conf_read(&c, fd, &st, &len);
	close(fd);
	if (buf == NULL || conf_parse(&c, buf, len) == -1)
		goto fail;
	if (ov != NULL)
		conf_overrides(&c, ov);
	/* with the mode unknown, its checks would only add noise */
	if (!c.pos[S_MODE].bad)
		conf_check_mode(&c);
	if (!c.pos[S_MODE].bad && cf->mode == CONF_PROXY)
		conf_resolve_key(&c, ov);
	if (check_files && !c.pos[S_MODE].bad)
		conf_check_files(&c, check_files & CONF_TLS);
	if (c.nerr > 0)
		goto fail;
	free(buf);
	return cf;
 fail:
	conf_err_end(&c);
	free(buf);
	conf_free(cf);
	return NULL;
}

void
conf_free(struct conf *cf)
{
	if (cf == NULL)
		return;
	free(cf->path);
	conf_free_values(cf);
	explicit_bzero(cf->license.key, sizeof cf->license.key);
	free(cf);
}
