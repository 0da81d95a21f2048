/*
 * conf_check.c - the checks once every key is read: rules between keys
 * (ports, the mode's required keys), the license key's resolution from
 * flag, environment or key file, and the files the configuration names
 * (present, regular, private keys not readable by others, client
 * certificate and key a pair).
 */
#include <sys/stat.h>
#include <sys/un.h>

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <yaml.h>

#include "conf.h"
#include "conf_int.h"
#include "file.h"
#include "httpc.h"
#include "tls.h"
#include "token.h"

#define CONF_KEYFILE_MAX	4096

#define KEY_RULE	"a license key is exactly 40 characters of [A-Za-z0-9]"

int
conf_mode_private(const char *path, mode_t mode, char *err, size_t errlen)
{
	if ((mode & 077) == 0)
		return 0;
	if (err != NULL && errlen > 0)
		snprintf(err, errlen, "%s: private key is readable by group or "
		    "others (mode %04o); chmod 600 %s", path,
		    (unsigned)(mode & 07777), path);
	return -1;
}

int
conf_check_private(const char *path, char *err, size_t errlen)
{
	struct stat st;

	if (stat(path, &st) == -1) {
		if (err != NULL && errlen > 0)
			snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	return conf_mode_private(path, st.st_mode, err, errlen);
}

/* Reads and trims the key file into buf; the caller wipes buf. */
static int
conf_read_keyfile(struct cctx *c, const char *path, char *buf, size_t len)
{
	const struct cpos	*p = &c->pos[S_KEY_FILE];
	struct stat		 st = { 0 };
	char			 msg[1024];
	ssize_t			 n;
	size_t			 got = 0, s = 0;
	int			 fd, rv = -1;

	if ((fd = file_open(path, &st)) == -1) {
		conf_errp(c, p, "license.key_file: cannot open \"%s\": %s",
		    path, strerror(errno));
		return -1;
	}
	if (!S_ISREG(st.st_mode))
		snprintf(msg, sizeof msg, "%s: not a regular file", path);
	if (!S_ISREG(st.st_mode) ||
	    conf_mode_private(path, st.st_mode, msg, sizeof msg) == -1) {
		conf_errp(c, p, "license.key_file: %s", msg);
		goto done;
	}
	while (got < len - 1 && (n = read(fd, buf + got, len - 1 - got)) != 0) {
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			conf_errp(c, p, "license.key_file: cannot read \"%s\": "
			    "%s", path, strerror(errno));
			goto done;
		}
		got += (size_t)n;
	}
	while (got > 0 && strchr(" \t\r\n\v\f", buf[got - 1]) != NULL)
		got--;
	buf[got] = '\0';
	while (buf[s] != '\0' && strchr(" \t\r\n\v\f", buf[s]) != NULL)
		s++;
	memmove(buf, buf + s, got - s + 1);
	rv = 0;
 done:
	close(fd);
	return rv;
}

/* --license-key, then LICPROXY_LICENSE_KEY, then license.key_file. */
void
conf_resolve_key(struct cctx *c, const struct conf_overrides *ov)
{
	struct conf	*cf = c->cf;
	const char	*k = NULL, *src = NULL;
	char		 buf[CONF_KEYFILE_MAX];

	buf[0] = '\0';
	if (ov != NULL && ov->license_key != NULL) {
		k = ov->license_key;
		src = "--license-key";
	} else if ((k = getenv("LICPROXY_LICENSE_KEY")) != NULL && *k != '\0')
		src = "LICPROXY_LICENSE_KEY";
	else if (cf->license.key_file != NULL) {
		if (c->pos[S_KEY_FILE].bad || conf_read_keyfile(c,
		    cf->license.key_file, buf, sizeof buf) == -1)
			goto done;
		k = buf;
	} else {
		conf_errp(c, NULL, "license key required: set "
		    "license.key_file, LICPROXY_LICENSE_KEY or --license-key");
		goto done;
	}
	if (token_key_valid(k, strlen(k)))
		memcpy(cf->license.key, k, TOKEN_KEY_LEN + 1);
	else if (src != NULL)
		conf_errp(c, NULL, "%s: %s", src, KEY_RULE);
	else
		conf_errp(c, &c->pos[S_KEY_FILE], "license.key_file: \"%s\" "
		    "does not hold a license key (%s)", cf->license.key_file,
		    KEY_RULE);
 done:
	explicit_bzero(buf, sizeof buf);
}

static void
conf_check_file(struct cctx *c, const char *key, const char *path,
    const struct cpos *p, int private)
{
	struct stat	st;
	char		msg[1024];

	if (path == NULL || *path == '\0' || p->bad)
		return;
	if (stat(path, &st) == -1)
		conf_errp(c, p, "%s: cannot open \"%s\": %s", key, path,
		    strerror(errno));
	else if (!S_ISREG(st.st_mode))
		conf_errp(c, p, "%s: \"%s\" is not a regular file", key, path);
	else if (private &&
	    conf_mode_private(path, st.st_mode, msg, sizeof msg) == -1)
		conf_errp(c, p, "%s: %s", key, msg);
}

/*
 * A client key that is not the certificate's would fail only at the first
 * upstream handshake. (The CA bundle's content is checked when the uplink
 * starts.)
 */
static void
conf_check_upstream_tls(struct cctx *c, int nerr)
{
	struct conf		*cf = c->cf;
	struct httpc_opts	 o = { NULL, cf->license.client_cert,
	    cf->license.client_key, 0 };
	char			 msg[1024];

	if ((o.client_cert == NULL) != (o.client_key == NULL)) {
		conf_errp(c, &c->pos[o.client_cert == NULL ? S_CLIENT_KEY :
		    S_CLIENT_CERT], "license.client_cert and "
		    "license.client_key: set both or neither");
		return;
	}
	/* Not again for a file already reported missing or exposed. */
	if (o.client_cert == NULL || c->pos[S_CLIENT_CERT].bad ||
	    c->pos[S_CLIENT_KEY].bad || c->nerr > nerr)
		return;
	if (httpc_check(&o, msg, sizeof msg) == -1)
		conf_errp(c, &c->pos[S_CLIENT_KEY], "license.client_key: %s",
		    msg);
}

/*
 * log.file must be a file the master can open for appending, else serve
 * fails after check-config said OK, and a reload could not switch to it.
 * Tried without creating it: check-config must leave no file behind; a
 * missing file needs a directory it may be created in.
 */
static void
conf_check_log(struct cctx *c)
{
	const char	*path = c->cf->log.file;
	char		 dir[4096];
	int		 fd;

	if (path == NULL || c->pos[S_LOG_FILE].bad)
		return;
	fd = open(path, O_WRONLY | O_APPEND | O_NONBLOCK | O_NOCTTY |
	    O_CLOEXEC);
	if (fd != -1) {
		close(fd);
		return;
	}
	if (errno == ENOENT) {
		snprintf(dir, sizeof dir, "%s", path);
		if (access(dirname(dir), W_OK | X_OK) == 0)
			return;
	}
	conf_errp(c, &c->pos[S_LOG_FILE], "log.file: cannot open \"%s\": %s",
	    path, strerror(errno));
}

/*
 * The certificate and key load and match, as the master will load them:
 * otherwise check-config says OK and serve exits 2. Only when every TLS
 * file passed its own checks (nerr unchanged since), so no file is
 * reported twice; the error is put at the key tls_server_ctx_new names.
 */
static void
conf_check_tls(struct cctx *c, int nerr)
{
	static const struct { enum slot slot; const char *key; } at[] = {
		{ S_TLS_KEY, "server.tls_key:" },
		{ S_CLIENT_CA, "server.client_ca:" },
	};
	SSL_CTX	*ctx;
	char	 msg[1024];
	size_t	 i;
	int	 slot = S_TLS_CERT;

	if (c->nerr > nerr || c->pos[S_TLS_CERT].bad || c->pos[S_TLS_KEY].bad)
		return;
	if ((ctx = tls_server_ctx_new(c->cf, msg, sizeof msg)) != NULL) {
		SSL_CTX_free(ctx);
		return;
	}
	for (i = 0; i < sizeof(at) / sizeof(at[0]); i++)
		if (strncmp(msg, at[i].key, strlen(at[i].key)) == 0)
			slot = at[i].slot;
	conf_errp(c, &c->pos[slot], "%s", msg);
}

/* A key file that is there and private must also hold an Ed25519 key. */
static void
conf_check_key(struct cctx *c, const char *key, const char *path,
    const struct cpos *p, int private, int nerr)
{
	EVP_PKEY *k;

	if (c->nerr > nerr || path == NULL || p->bad)
		return;
	if ((k = private ? token_load_private(path) :
	    token_load_public(path)) != NULL) {
		EVP_PKEY_free(k);
		return;
	}
	conf_errp(c, p, "%s: %s: not an Ed25519 %s key (PEM)", key, path,
	    private ? "private" : "public");
}

void
conf_check_files(struct cctx *c, int tls)
{
	struct conf	*cf = c->cf;
	int		 i, nerr;

	errno = 0;
	if (cf->server.user != NULL && *cf->server.user != '\0' &&
	    !c->pos[S_USER].bad && getpwnam(cf->server.user) == NULL)
		conf_errp(c, &c->pos[S_USER], "server.user: no such user "
		    "\"%s\"", cf->server.user);

	nerr = c->nerr;
	conf_check_file(c, "server.tls_cert", cf->server.tls_cert,
	    &c->pos[S_TLS_CERT], 0);
	conf_check_file(c, "server.tls_key", cf->server.tls_key,
	    &c->pos[S_TLS_KEY], 1);
	conf_check_file(c, "server.client_ca", cf->server.client_ca,
	    &c->pos[S_CLIENT_CA], 0);
	if (tls)
		conf_check_tls(c, nerr);
	conf_check_log(c);
	if (cf->mode == CONF_AUTHORITY) {
		nerr = c->nerr;
		conf_check_file(c, "authority.signing_key",
		    cf->authority.signing_key, &c->pos[S_SIGNING_KEY], 1);
		conf_check_key(c, "authority.signing_key",
		    cf->authority.signing_key, &c->pos[S_SIGNING_KEY], 1, nerr);
		return;
	}
	conf_check_file(c, "license.ca_file", cf->license.ca_file,
	    &c->pos[S_CA_FILE], 0);
	nerr = c->nerr;
	conf_check_file(c, "license.client_cert", cf->license.client_cert,
	    &c->pos[S_CLIENT_CERT], 0);
	conf_check_file(c, "license.client_key", cf->license.client_key,
	    &c->pos[S_CLIENT_KEY], 1);
	conf_check_upstream_tls(c, nerr);
	for (i = 0; i < cf->license.n_trusted_keys; i++) {
		nerr = c->nerr;
		conf_check_file(c, "license.trusted_keys",
		    cf->license.trusted_keys[i], &c->trusted[i], 0);
		conf_check_key(c, "license.trusted_keys",
		    cf->license.trusted_keys[i], &c->trusted[i], 0, nerr);
	}
}

/* Found at serve's start otherwise, after check-config said OK. */
static void
conf_check_store(struct cctx *c)
{
	struct sockaddr_un	sun;

	if (c->pos[S_STORE_PATH].bad || conf_ipc_path(c->cf->store.path,
	    sun.sun_path, sizeof sun.sun_path) == 0)
		return;
	conf_errp(c, &c->pos[S_STORE_PATH], "store.path: too long: the "
	    "socket \"%s/" CONF_IPC_SOCK "\" made in it must fit a Unix "
	    "socket path (at most %zu bytes)", c->cf->store.path,
	    sizeof sun.sun_path - 1);
}

void
conf_check_mode(struct cctx *c)
{
	struct conf *cf = c->cf;

	conf_check_store(c);

	if (cf->server.port == cf->server.status_port &&
	    cf->server.host != NULL && cf->server.status_host != NULL &&
	    strcmp(cf->server.host, cf->server.status_host) == 0 &&
	    !c->pos[S_PORT].bad && !c->pos[S_STATUS_PORT].bad)
		conf_errp(c, &c->pos[S_STATUS_PORT], "server.status_port: "
		    "must differ from server.port (%d)", cf->server.port);
	if (cf->mode == CONF_AUTHORITY) {
		if (cf->authority.lease_refresh_s > cf->authority.lease_ttl_s)
			conf_errp(c, &c->pos[S_LEASE_REFRESH],
			    "authority.lease_refresh: must not exceed "
			    "authority.lease_ttl");
		return;
	}
	if (cf->license.n_server_url == 0 && !c->pos[S_SERVER_URL].bad)
		conf_errp(c, &c->pos[S_SERVER_URL], "license.server_url: "
		    "proxy mode needs at least one upstream URL");
	if (cf->license.n_trusted_keys == 0 && !c->pos[S_TRUSTED].bad)
		conf_errp(c, &c->pos[S_TRUSTED], "license.trusted_keys: "
		    "proxy mode needs at least one public key file");
}
