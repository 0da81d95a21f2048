/*
 * conf.c - licproxy.yaml into one struct conf.
 *
 * Every problem is collected, each with the position of the offending key or
 * value, so that check-config shows an operator all of them in one run
 * instead of one per edit.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <yaml.h>

#include "conf.h"
#include "file.h"
#include "token.h"
#include "httpc.h"
#include "log.h"

#define CONF_DEFAULT_PATH	"/etc/licproxy/licproxy.yaml"
#define CONF_KEYFILE_MAX	4096
#define CONF_MAX_CONNS		1048576
#define CONF_SHOW_MAX		80	/* longest value echoed in a message */

#define KEY_RULE	"a license key is exactly 40 characters of [A-Za-z0-9]"

/* Where a value came from; set == 0 means a default or an override. */
struct cpos {
	unsigned long	 line;
	unsigned long	 col;
	int		 set;
	int		 bad;	/* already reported: later checks skip it */
};

enum slot {
	S_NONE, S_MODE, S_USER, S_PORT, S_STATUS_PORT, S_TLS_CERT, S_TLS_KEY,
	S_CLIENT_CA,
	S_SERVER_URL, S_KEY_FILE, S_CA_FILE, S_TRUSTED, S_SIGNING_KEY,
	S_LEASE_REFRESH, S_CLIENT_CERT, S_CLIENT_KEY, S_MAX
};

struct cctx {
	const char	*file;
	char		*err;
	size_t		 errlen;
	size_t		 off;
	int		 nerr;
	struct conf	*cf;
	yaml_document_t	*doc;
	struct cpos	 pos[S_MAX];
	struct cpos	 trusted[CONF_MAX_TRUSTED];
};

enum ktype {
	K_SECTION, K_STR, K_OPTSTR, K_PORT, K_WORKERS, K_COUNT, K_SIZE,
	K_SIZE64, K_MS, K_SEC, K_URLS, K_KEYS, K_MODE, K_ENUM, K_CIDRS
};

#define F_NONEMPTY	0x01	/* "" is an error */
#define F_ZERO		0x02	/* a zero duration is allowed */

struct cenum {
	const char	*name;
	int		 val;
};

struct kdef {
	const char		*name;
	enum ktype		 type;
	size_t			 off;
	int			 flags;
	enum slot		 slot;
	const void		*aux;	/* sub-keys or enum table */
};

#define OFF(f)	offsetof(struct conf, f)

static const struct cenum modes[] = {
	{ "proxy", CONF_PROXY }, { "authority", CONF_AUTHORITY }, { NULL, 0 }
};
static const struct cenum levels[] = {
	{ "error", LOG_ERR }, { "warn", LOG_WARN }, { "info", LOG_INFO },
	{ "debug", LOG_DEBUG }, { NULL, 0 }
};
static const struct cenum formats[] = {
	{ "text", 0 }, { "json", 1 }, { NULL, 0 }
};
static const struct cenum bools[] = {
	{ "false", 0 }, { "true", 1 }, { NULL, 0 }
};

static const struct kdef server_keys[] = {
	{ "host", K_STR, OFF(server.host), F_NONEMPTY },
	{ "port", K_PORT, OFF(server.port), 0, S_PORT },
	{ "status_host", K_STR, OFF(server.status_host), F_NONEMPTY },
	{ "status_port", K_PORT, OFF(server.status_port), 0, S_STATUS_PORT },
	{ "workers", K_WORKERS, OFF(server.workers) },
	{ "tls_cert", K_STR, OFF(server.tls_cert), F_NONEMPTY, S_TLS_CERT },
	{ "tls_key", K_STR, OFF(server.tls_key), F_NONEMPTY, S_TLS_KEY },
	{ "client_ca", K_STR, OFF(server.client_ca), 0, S_CLIENT_CA },
	{ "max_body", K_SIZE, OFF(server.max_body) },
	{ "user", K_STR, OFF(server.user), 0, S_USER },
	{ "max_connections", K_COUNT, OFF(server.max_connections) },
	{ "max_header", K_SIZE, OFF(server.max_header) },
	{ "header_timeout", K_MS, OFF(server.header_timeout_ms) },
	{ "body_timeout", K_MS, OFF(server.body_timeout_ms) },
	{ "keepalive_timeout", K_MS, OFF(server.keepalive_timeout_ms), F_ZERO },
	{ "drain_timeout", K_MS, OFF(server.drain_timeout_ms), F_ZERO },
	{ NULL }
};

static const struct kdef license_keys[] = {
	{ "server_url", K_URLS, 0, 0, S_SERVER_URL },
	{ "key_file", K_OPTSTR, OFF(license.key_file), 0, S_KEY_FILE },
	{ "ca_file", K_STR, OFF(license.ca_file), 0, S_CA_FILE },
	{ "client_cert", K_OPTSTR, OFF(license.client_cert), 0, S_CLIENT_CERT },
	{ "client_key", K_OPTSTR, OFF(license.client_key), 0, S_CLIENT_KEY },
	{ "trusted_keys", K_KEYS, 0, 0, S_TRUSTED },
	{ "timeout", K_MS, OFF(license.timeout_ms) },
	{ "sync_interval", K_MS, OFF(license.sync_interval_ms) },
	{ "negative_ttl", K_MS, OFF(license.negative_ttl_ms), F_ZERO },
	{ "max_rejections", K_COUNT, OFF(license.max_rejections) },
	{ "miss_rate", K_COUNT, OFF(license.miss_rate) },
	{ "miss_burst", K_COUNT, OFF(license.miss_burst) },
	{ "miss_exempt", K_CIDRS },
	{ NULL }
};

static const struct kdef usage_keys[] = {
	{ "dedup_window", K_SEC, OFF(usage.dedup_window_s) },
	{ NULL }
};

static const struct kdef seats_keys[] = {
	{ "ttl", K_SEC, OFF(seats.ttl_s) },
	{ NULL }
};

static const struct kdef store_keys[] = {
	{ "path", K_STR, OFF(store.path), F_NONEMPTY },
	{ "max_size", K_SIZE64, OFF(store.max_size) },
	{ NULL }
};

static const struct kdef authority_keys[] = {
	{ "signing_key", K_STR, OFF(authority.signing_key), F_NONEMPTY,
	    S_SIGNING_KEY },
	{ "lease_refresh", K_SEC, OFF(authority.lease_refresh_s), 0,
	    S_LEASE_REFRESH },
	{ "lease_ttl", K_SEC, OFF(authority.lease_ttl_s) },
	{ "seat_grant_ttl", K_SEC, OFF(authority.seat_grant_ttl_s) },
	{ NULL }
};

static const struct kdef log_keys[] = {
	{ "level", K_ENUM, OFF(log.level), 0, S_NONE, levels },
	{ "format", K_ENUM, OFF(log.json), 0, S_NONE, formats },
	{ "access", K_ENUM, OFF(log.access), 0, S_NONE, bools },
	{ "file", K_OPTSTR, OFF(log.file) },
	{ NULL }
};

static const struct kdef top_keys[] = {
	{ "mode", K_MODE, OFF(mode), 0, S_MODE, modes },
	{ "server", K_SECTION, 0, 0, S_NONE, server_keys },
	{ "license", K_SECTION, 0, 0, S_NONE, license_keys },
	{ "usage", K_SECTION, 0, 0, S_NONE, usage_keys },
	{ "seats", K_SECTION, 0, 0, S_NONE, seats_keys },
	{ "store", K_SECTION, 0, 0, S_NONE, store_keys },
	{ "authority", K_SECTION, 0, 0, S_NONE, authority_keys },
	{ "log", K_SECTION, 0, 0, S_NONE, log_keys },
	{ NULL }
};

static void	conf_section(struct cctx *, const char *, const struct kdef *,
		    yaml_node_t *);
static int	conf_is_null(const yaml_node_t *);

static void
conf_errv(struct cctx *c, const struct cpos *p, const char *fmt, va_list ap)
{
	char	msg[1024];
	int	n;

	c->nerr++;
	if (c->err == NULL || c->errlen == 0 || c->off >= c->errlen - 1)
		return;
	vsnprintf(msg, sizeof msg, fmt, ap);
	if (p != NULL && p->set)
		n = snprintf(c->err + c->off, c->errlen - c->off,
		    "%s%s:%lu:%lu: %s", c->off ? "\n" : "", c->file,
		    p->line, p->col, msg);
	else
		n = snprintf(c->err + c->off, c->errlen - c->off, "%s%s: %s",
		    c->off ? "\n" : "", c->file, msg);
	if (n < 0)
		return;
	if ((size_t)n >= c->errlen - c->off)
		c->off = c->errlen - 1;
	else
		c->off += n;
}

static void __attribute__((format(printf, 3, 4)))
conf_errp(struct cctx *c, const struct cpos *p, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	conf_errv(c, p, fmt, ap);
	va_end(ap);
}

static struct cpos
conf_pos(const yaml_node_t *n)
{
	struct cpos p = { 0 };

	p.line = n->start_mark.line + 1;
	p.col = n->start_mark.column + 1;
	p.set = 1;
	return p;
}

static void __attribute__((format(printf, 3, 4)))
conf_errn(struct cctx *c, const yaml_node_t *n, const char *fmt, ...)
{
	struct cpos	p = conf_pos(n);
	va_list		ap;

	va_start(ap, fmt);
	conf_errv(c, &p, fmt, ap);
	va_end(ap);
}

/*
 * Copy user text for echoing in a message: a control character would split
 * the one-error-per-line output, and a huge value would hide the others.
 */
static const char *
conf_show(const char *s, char *buf, size_t len)
{
	size_t i;

	for (i = 0; s[i] != '\0' && i + 1 < len; i++)
		buf[i] = ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) ?
		    '?' : s[i];
	buf[i] = '\0';
	if (s[i] != '\0' && len > 4)
		memcpy(buf + len - 4, "...", 4);
	return buf;
}

static int
conf_setstr(struct cctx *c, char **dst, const char *s)
{
	char *d = NULL;

	if (s != NULL && (d = strdup(s)) == NULL) {
		conf_errp(c, NULL, "out of memory");
		return -1;
	}
	free(*dst);
	*dst = d;
	return 0;
}

static int
conf_ncpu(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	if (n < 1)
		return 1;
	/* auto on a big machine: as many as the shared stats block holds */
	return n > CONF_MAX_WORKERS ? CONF_MAX_WORKERS : (int)n;
}

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

/* Plain decimal only: no sign, no blanks, no hex; -2 on overflow. */
static int
conf_parse_uint(const char **sp, uint64_t *out)
{
	const char	*s = *sp;
	uint64_t	 v = 0;

	if (*s < '0' || *s > '9')
		return -1;
	for (; *s >= '0' && *s <= '9'; s++) {
		if (v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
			return -2;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	*sp = s;
	*out = v;
	return 0;
}

static int
conf_parse_unit(const char *s, const char *const *units,
    const uint64_t *mult, uint64_t max, uint64_t *out)
{
	uint64_t	v;
	size_t		i;
	int		rv;

	if (s == NULL || (rv = conf_parse_uint(&s, &v)) == -1)
		return -1;
	/* Too many digits: still "too large" if a unit follows. */
	while (rv == -2 && *s >= '0' && *s <= '9')
		s++;
	for (i = 0; units[i] != NULL; i++)
		if (strcmp(s, units[i]) == 0)
			break;
	if (units[i] == NULL)
		return -1;
	if (rv == -2 || v > max / mult[i])
		return -2;
	*out = v * mult[i];
	return 0;
}

int
conf_parse_duration_ms(const char *s, int64_t *ms)
{
	static const char *const units[] = { "", "ms", "s", "m", "h", NULL };
	static const uint64_t mult[] = { 1000, 1, 1000, 60000, 3600000 };
	uint64_t v;
	int	 rv;

	rv = conf_parse_unit(s, units, mult, CONF_MAX_DURATION_MS, &v);
	if (rv != 0)
		return rv;
	*ms = (int64_t)v;
	return 0;
}

int
conf_parse_size(const char *s, uint64_t *bytes)
{
	static const char *const units[] = { "", "B", "KiB", "MiB", "GiB",
	    NULL };
	static const uint64_t mult[] = { 1, 1, 1ULL << 10, 1ULL << 20,
	    1ULL << 30 };

	return conf_parse_unit(s, units, mult, CONF_MAX_SIZE, bytes);
}

static int
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

static const char *
conf_kind(const yaml_node_t *n)
{
	switch (n->type) {
	case YAML_MAPPING_NODE:
		return "a mapping";
	case YAML_SEQUENCE_NODE:
		return "a list";
	default:
		return "a value";
	}
}

static int
conf_int(struct cctx *c, const char *path, yaml_node_t *v, int *field,
    int64_t min, int64_t max, const char *rule)
{
	const char	*s = (const char *)v->data.scalar.value;
	const char	*p = s;
	uint64_t	 n;
	char		 buf[CONF_SHOW_MAX];

	if (conf_parse_uint(&p, &n) != 0 || *p != '\0' ||
	    n < (uint64_t)min || n > (uint64_t)max) {
		conf_errn(c, v, "%s: %s, got \"%s\"", path, rule,
		    conf_show(s, buf, sizeof buf));
		return -1;
	}
	*field = (int)n;
	return 0;
}

static int
conf_size(struct cctx *c, const char *path, const struct kdef *k,
    yaml_node_t *v, void *field)
{
	const char	*s = (const char *)v->data.scalar.value;
	const char	*rule = NULL;
	uint64_t	 n;
	char		 buf[CONF_SHOW_MAX];
	int		 rv;

	if ((rv = conf_parse_size(s, &n)) == -1 || (rv == 0 && n == 0))
		rule = "must be a size greater than 0 (bytes, KiB, MiB or GiB)";
	else if (rv == -2)
		rule = "must be at most " CONF_MAX_SIZE_STR;
	else if (k->type == K_SIZE && n > CONF_MAX_MEM_SIZE)
		rule = "must be at most " CONF_MAX_MEM_SIZE_STR " (held in "
		    "memory per request)";
	if (rule != NULL) {
		conf_errn(c, v, "%s: %s, got \"%s\"", path, rule,
		    conf_show(s, buf, sizeof buf));
		return -1;
	}
	if (k->type == K_SIZE)
		*(size_t *)field = (size_t)n;
	else
		*(uint64_t *)field = n;
	return 0;
}

static int
conf_dur(struct cctx *c, const char *path, const struct kdef *k,
    yaml_node_t *v, void *field)
{
	const char	*s = (const char *)v->data.scalar.value;
	const char	*rule = NULL;
	int64_t		 ms = 0;
	char		 buf[CONF_SHOW_MAX];
	int		 rv;

	if ((rv = conf_parse_duration_ms(s, &ms)) == -1)
		rule = "must be a duration such as 500ms, 30s, 5m or 72h";
	else if (rv == -2)
		rule = "must be at most " CONF_MAX_DURATION_STR;
	else if (ms == 0 && !(k->flags & F_ZERO))
		rule = "must be greater than 0";
	else if (k->type == K_MS && ms >= CONF_MAX_MS)
		rule = "must be less than " CONF_MAX_MS_STR;
	else if (k->type == K_SEC && ms % 1000 != 0)
		rule = "must be whole seconds";
	if (rule != NULL) {
		conf_errn(c, v, "%s: %s, got \"%s\"", path, rule,
		    conf_show(s, buf, sizeof buf));
		return -1;
	}
	if (k->type == K_MS)
		*(int *)field = (int)ms;
	else
		*(int64_t *)field = ms / 1000;
	return 0;
}

static int
conf_enum(struct cctx *c, const char *path, const struct kdef *k,
    yaml_node_t *v, int *out)
{
	const struct cenum	*e = k->aux;
	const char		*s = (const char *)v->data.scalar.value;
	char			 rule[128], buf[CONF_SHOW_MAX];
	size_t			 i, n, used;

	for (i = 0; e[i].name != NULL; i++)
		if (strcmp(s, e[i].name) == 0) {
			*out = e[i].val;
			return 0;
		}
	n = i;
	rule[0] = '\0';
	for (i = 0, used = 0; i < n && used < sizeof rule; i++)
		used += snprintf(rule + used, sizeof rule - used, "%s%s",
		    i == 0 ? "" : (i + 1 == n ? " or " : ", "), e[i].name);
	conf_errn(c, v, "%s: must be %s, got \"%s\"", path, rule,
	    conf_show(s, buf, sizeof buf));
	return -1;
}

static int
conf_str(struct cctx *c, const char *path, const struct kdef *k,
    yaml_node_t *v, char **field)
{
	const char *s = (const char *)v->data.scalar.value;

	if (*s == '\0' && (k->flags & F_NONEMPTY)) {
		conf_errn(c, v, "%s: must not be empty", path);
		return -1;
	}
	if (*s == '\0' && k->type == K_OPTSTR)
		s = NULL;
	return conf_setstr(c, field, s);
}

/*
 * https:// (keys and leases never cross a network in clear), a host, and
 * nothing that would break a request.
 */
static int
conf_url_ok(const char *s)
{
	const char	*h;
	size_t		 i;

	if (strncmp(s, "https://", 8) != 0)
		return 0;
	h = s + 8;
	if (*h == '\0' || *h == '/' || *h == ':' || *h == '?' || *h == '#')
		return 0;
	for (i = 0; s[i] != '\0'; i++)
		if ((unsigned char)s[i] <= 0x20 || s[i] == 0x7f)
			return 0;
	return 1;
}

static int
conf_scalar(struct cctx *c, const char *path, const struct kdef *k,
    yaml_node_t *v, void *field)
{
	int rv, e = 0;

	switch (k->type) {
	case K_STR:
	case K_OPTSTR:
		return conf_str(c, path, k, v, field);
	case K_PORT:
		return conf_int(c, path, v, field, 1, 65535, "must be 1-65535");
	case K_WORKERS:
		if (strcmp((const char *)v->data.scalar.value, "auto") == 0) {
			*(int *)field = conf_ncpu();
			return 0;
		}
		return conf_int(c, path, v, field, 1, CONF_MAX_WORKERS,
		    "must be \"auto\" or 1-60");
	case K_COUNT:
		return conf_int(c, path, v, field, 1, CONF_MAX_CONNS,
		    "must be 1-1048576");
	case K_SIZE:
	case K_SIZE64:
		return conf_size(c, path, k, v, field);
	case K_MS:
	case K_SEC:
		return conf_dur(c, path, k, v, field);
	case K_MODE:
		if ((rv = conf_enum(c, path, k, v, &e)) == 0)
			c->cf->mode = e == CONF_AUTHORITY ?
			    CONF_AUTHORITY : CONF_PROXY;
		return rv;
	case K_ENUM:
		return conf_enum(c, path, k, v, field);
	default:
		return -1;
	}
}

/* One list entry; i is its index, v its node (NULL for an override). */
static int
conf_list_item(struct cctx *c, const char *path, int urls, int i,
    const char *s, yaml_node_t *v)
{
	struct cpos	 p = { 0 };
	char		 buf[CONF_SHOW_MAX];

	if (v != NULL)
		p = conf_pos(v);
	if (urls && !conf_url_ok(s)) {
		conf_errp(c, &p, "%s: must be an https:// URL, got \"%s\"",
		    path, conf_show(s, buf, sizeof buf));
		return -1;
	}
	if (!urls && *s == '\0') {
		conf_errp(c, &p, "%s: must not be empty", path);
		return -1;
	}
	if (!urls)
		c->trusted[i] = p;
	if (conf_setstr(c, urls ? &c->cf->license.server_url[i] :
	    &c->cf->license.trusted_keys[i], s) == -1)
		return -1;
	return 0;
}

static void
conf_list_clear(struct conf *cf, int urls)
{
	char	**arr = urls ? cf->license.server_url : cf->license.trusted_keys;
	int	 *n = urls ? &cf->license.n_server_url :
		    &cf->license.n_trusted_keys;
	int	  i;

	for (i = 0; i < *n; i++) {
		free(arr[i]);
		arr[i] = NULL;
	}
	*n = 0;
}

/* server_url and trusted_keys: a list, or one plain value for one entry. */
static int
conf_list(struct cctx *c, const char *path, const struct kdef *k,
    yaml_node_t *v)
{
	yaml_node_item_t	*it;
	yaml_node_t		*n;
	int			 urls = k->type == K_URLS, max, *cnt, rv = 0;

	max = urls ? CONF_MAX_URLS : CONF_MAX_TRUSTED;
	cnt = urls ? &c->cf->license.n_server_url :
	    &c->cf->license.n_trusted_keys;
	conf_list_clear(c->cf, urls);
	if (v->type == YAML_MAPPING_NODE) {
		conf_errn(c, v, "%s: expected %s or a list of them, got a "
		    "mapping", path, urls ? "a URL" : "a file name");
		return -1;
	}
	if (v->type == YAML_SCALAR_NODE) {
		if (conf_list_item(c, path, urls, 0, (const char *)
		    v->data.scalar.value, v) == -1)
			return -1;
		*cnt = 1;
		return 0;
	}
	for (it = v->data.sequence.items.start;
	    it < v->data.sequence.items.top; it++) {
		n = yaml_document_get_node(c->doc, *it);
		if (*cnt == max) {
			conf_errn(c, n, "%s: at most %d entries allowed",
			    path, max);
			return -1;
		}
		if (n->type != YAML_SCALAR_NODE) {
			conf_errn(c, n, "%s: expected %s, got %s", path,
			    urls ? "a URL" : "a file name", conf_kind(n));
			rv = -1;
		} else if (conf_list_item(c, path, urls, *cnt,
		    (const char *)n->data.scalar.value, n) == -1)
			rv = -1;
		else
			(*cnt)++;
	}
	return rv;
}

/* One miss_exempt entry at node n. */
static int
conf_cidr_item(struct cctx *c, const char *path, yaml_node_t *n)
{
	int		*cnt = &c->cf->license.n_miss_exempt;
	const char	*s = NULL;
	char		 buf[CONF_SHOW_MAX];

	if (*cnt == CONF_MAX_EXEMPT) {
		conf_errn(c, n, "%s: at most %d entries allowed", path,
		    CONF_MAX_EXEMPT);
		return -1;
	}
	if (n->type == YAML_SCALAR_NODE)
		s = (const char *)n->data.scalar.value;
	if (s == NULL || cidr_parse(s, &c->cf->license.miss_exempt[*cnt]) ==
	    -1) {
		conf_errn(c, n, "%s: expected an IPv4 or IPv6 address or CIDR "
		    "such as 10.0.0.0/8 or 2001:db8::/32, got %s%s%s", path,
		    s ? "\"" : "", s ? conf_show(s, buf, sizeof buf) :
		    conf_kind(n), s ? "\"" : "");
		return -1;
	}
	(*cnt)++;
	return 0;
}

/* miss_exempt: a list of addresses or CIDRs, or one plain value. */
static int
conf_cidrs(struct cctx *c, const char *path, yaml_node_t *v)
{
	yaml_node_item_t	*it;
	int			 rv = 0;

	c->cf->license.n_miss_exempt = 0;
	if (conf_is_null(v))
		return 0;
	if (v->type != YAML_SEQUENCE_NODE)
		return conf_cidr_item(c, path, v);
	for (it = v->data.sequence.items.start;
	    it < v->data.sequence.items.top; it++)
		if (conf_cidr_item(c, path,
		    yaml_document_get_node(c->doc, *it)) == -1)
			rv = -1;
	return rv;
}

static int
conf_is_null(const yaml_node_t *v)
{
	return v->type == YAML_SCALAR_NODE && v->data.scalar.length == 0 &&
	    v->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
}

static void
conf_value(struct cctx *c, const char *path, const struct kdef *k,
    yaml_node_t *v)
{
	int rv = -1;

	if (k->type == K_SECTION) {
		/* "server:" with every key commented out is an empty section */
		if (v->type == YAML_MAPPING_NODE)
			conf_section(c, path, k->aux, v);
		else if (!conf_is_null(v))
			conf_errn(c, v, "%s: expected a mapping of keys, got %s",
			    path, conf_kind(v));
		return;
	}
	if (k->type == K_URLS || k->type == K_KEYS)
		rv = conf_list(c, path, k, v);
	else if (k->type == K_CIDRS)
		rv = conf_cidrs(c, path, v);
	else if (v->type != YAML_SCALAR_NODE)
		conf_errn(c, v, "%s: expected a single value, got %s", path,
		    conf_kind(v));
	else if (strlen((const char *)v->data.scalar.value) !=
	    v->data.scalar.length)
		conf_errn(c, v, "%s: must not contain a NUL character", path);
	else
		rv = conf_scalar(c, path, k, v, (char *)c->cf + k->off);
	if (k->slot != S_NONE) {
		c->pos[k->slot] = conf_pos(v);
		c->pos[k->slot].bad = rv == -1;
	}
}

static void
conf_section(struct cctx *c, const char *sect, const struct kdef *keys,
    yaml_node_t *map)
{
	yaml_node_pair_t	*pr;
	yaml_node_t		*kn, *vn;
	const char		*name;
	char			 path[128], shown[CONF_SHOW_MAX];
	uint32_t		 seen = 0;
	size_t			 i;

	for (pr = map->data.mapping.pairs.start;
	    pr < map->data.mapping.pairs.top; pr++) {
		kn = yaml_document_get_node(c->doc, pr->key);
		vn = yaml_document_get_node(c->doc, pr->value);
		if (kn->type != YAML_SCALAR_NODE) {
			conf_errn(c, kn, "%s: keys must be plain names, got %s",
			    sect ? sect : "top level", conf_kind(kn));
			continue;
		}
		name = (const char *)kn->data.scalar.value;
		for (i = 0; keys[i].name != NULL; i++)
			if (strcmp(keys[i].name, name) == 0)
				break;
		snprintf(path, sizeof path, "%s%s%s", sect ? sect : "",
		    sect ? "." : "", keys[i].name ? keys[i].name :
		    conf_show(name, shown, sizeof shown));
		if (keys[i].name == NULL)
			conf_errn(c, kn, "%s: unknown key", path);
		else if (seen & (1U << i))
			conf_errn(c, kn, "%s: duplicate key", path);
		else {
			seen |= 1U << i;
			conf_value(c, path, &keys[i], vn);
		}
	}
}

static void
conf_yaml_err(struct cctx *c, const yaml_parser_t *p)
{
	struct cpos	pos = { 0 };
	const char	*what = p->problem ? p->problem : "cannot parse";

	if (p->error == YAML_MEMORY_ERROR) {
		conf_errp(c, NULL, "out of memory");
		return;
	}
	if (p->error == YAML_READER_ERROR) {
		conf_errp(c, NULL, "%s at byte %zu", what, p->problem_offset);
		return;
	}
	pos.line = p->problem_mark.line + 1;
	pos.col = p->problem_mark.column + 1;
	pos.set = 1;
	if (p->context != NULL)
		conf_errp(c, &pos, "syntax error: %s %s", what, p->context);
	else
		conf_errp(c, &pos, "syntax error: %s", what);
}

/* -1 only when the YAML itself is unusable: later checks would just echo it */
static int
conf_parse(struct cctx *c, FILE *fp)
{
	yaml_parser_t	 p;
	yaml_document_t	 doc, extra;
	yaml_node_t	*root;
	int		 rv = -1, loaded = 0;

	if (!yaml_parser_initialize(&p)) {
		conf_errp(c, NULL, "out of memory");
		return -1;
	}
	yaml_parser_set_input_file(&p, fp);
	if (!yaml_parser_load(&p, &doc)) {
		conf_yaml_err(c, &p);
		goto done;
	}
	loaded = 1;
	c->doc = &doc;
	if ((root = yaml_document_get_root_node(&doc)) != NULL) {
		if (root->type == YAML_MAPPING_NODE)
			conf_section(c, NULL, top_keys, root);
		else if (!conf_is_null(root)) {
			conf_errn(c, root, "expected a mapping of sections at "
			    "the top level, got %s", conf_kind(root));
			goto done;
		}
	}
	if (!yaml_parser_load(&p, &extra)) {
		conf_yaml_err(c, &p);
		goto done;
	}
	if ((root = yaml_document_get_root_node(&extra)) != NULL)
		conf_errn(c, root, "only one YAML document is allowed");
	yaml_document_delete(&extra);
	rv = 0;
 done:
	c->doc = NULL;
	if (loaded)
		yaml_document_delete(&doc);
	yaml_parser_delete(&p);
	return rv;
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
static void
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

static void
conf_check_files(struct cctx *c)
{
	struct conf	*cf = c->cf;
	int		 i, nerr;

	errno = 0;
	if (cf->server.user != NULL && *cf->server.user != '\0' &&
	    !c->pos[S_USER].bad && getpwnam(cf->server.user) == NULL)
		conf_errp(c, &c->pos[S_USER], "server.user: no such user "
		    "\"%s\"", cf->server.user);

	conf_check_file(c, "server.tls_cert", cf->server.tls_cert,
	    &c->pos[S_TLS_CERT], 0);
	conf_check_file(c, "server.tls_key", cf->server.tls_key,
	    &c->pos[S_TLS_KEY], 1);
	conf_check_file(c, "server.client_ca", cf->server.client_ca,
	    &c->pos[S_CLIENT_CA], 0);
	if (cf->mode == CONF_AUTHORITY) {
		conf_check_file(c, "authority.signing_key",
		    cf->authority.signing_key, &c->pos[S_SIGNING_KEY], 1);
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
	for (i = 0; i < cf->license.n_trusted_keys; i++)
		conf_check_file(c, "license.trusted_keys",
		    cf->license.trusted_keys[i], &c->trusted[i], 0);
}

static void
conf_check_mode(struct cctx *c)
{
	struct conf *cf = c->cf;

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

struct conf *
conf_load(const char *path, const struct conf_overrides *ov, int check_files,
    char *err, size_t errlen)
{
	struct cctx	 c;
	struct conf	*cf = NULL;
	struct stat	 st;
	FILE		*fp = NULL;
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
	if ((fp = fdopen(fd, "r")) == NULL) {
		close(fd);
		conf_errp(&c, NULL, "cannot open: %s", strerror(errno));
		goto fail;
	}
	if (conf_parse(&c, fp) == -1)
		goto fail;
	if (ov != NULL)
		conf_overrides(&c, ov);
	/* with the mode unknown, its checks would only add noise */
	if (!c.pos[S_MODE].bad)
		conf_check_mode(&c);
	if (!c.pos[S_MODE].bad && cf->mode == CONF_PROXY)
		conf_resolve_key(&c, ov);
	if (check_files && !c.pos[S_MODE].bad)
		conf_check_files(&c);
	if (c.nerr > 0)
		goto fail;
	fclose(fp);
	return cf;
 fail:
	if (fp != NULL)
		fclose(fp);
	conf_free(cf);
	return NULL;
}

void
conf_free(struct conf *cf)
{
	int i;

	if (cf == NULL)
		return;
	free(cf->path);
	free(cf->server.host);
	free(cf->server.status_host);
	free(cf->server.tls_cert);
	free(cf->server.tls_key);
	free(cf->server.client_ca);
	free(cf->server.user);
	for (i = 0; i < cf->license.n_server_url; i++)
		free(cf->license.server_url[i]);
	for (i = 0; i < cf->license.n_trusted_keys; i++)
		free(cf->license.trusted_keys[i]);
	free(cf->license.key_file);
	free(cf->license.ca_file);
	free(cf->license.client_cert);
	free(cf->license.client_key);
	free(cf->store.path);
	free(cf->authority.signing_key);
	free(cf->log.file);
	explicit_bzero(cf->license.key, sizeof cf->license.key);
	free(cf);
}
