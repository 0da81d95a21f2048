/*
 * conf_yaml.c - the YAML tree walked against one table of known keys per
 * section: each value is checked for its type and bounds and stored in
 * struct conf, and each problem is reported at its position (conf_err.c).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "conf.h"
#include "conf_int.h"
#include "log.h"

#define CONF_MAX_CONNS		1048576

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
	{ "path", K_STR, OFF(store.path), F_NONEMPTY, S_STORE_PATH },
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
	{ "file", K_OPTSTR, OFF(log.file), 0, S_LOG_FILE },
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

/* A scalar v that breaks rule: the message quotes what was given. */
static int
conf_refuse(struct cctx *c, const char *path, yaml_node_t *v,
    const char *rule)
{
	char buf[CONF_SHOW_MAX];

	conf_errn(c, v, "%s: %s, got \"%s\"", path, rule,
	    conf_show((const char *)v->data.scalar.value, buf, sizeof buf));
	return -1;
}

static int
conf_int(struct cctx *c, const char *path, yaml_node_t *v, int *field,
    int64_t min, int64_t max, const char *rule)
{
	const char	*p = (const char *)v->data.scalar.value;
	uint64_t	 n;

	if (conf_parse_uint(&p, &n) != 0 || *p != '\0' ||
	    n < (uint64_t)min || n > (uint64_t)max)
		return conf_refuse(c, path, v, rule);
	*field = (int)n;
	return 0;
}

/* Stores a size into field; else returns the rule it breaks. */
static const char *
conf_size(const struct kdef *k, const char *s, void *field)
{
	const char	*rule = NULL;
	uint64_t	 n;
	int		 rv;

	if ((rv = conf_parse_size(s, &n)) == -1 || (rv == 0 && n == 0))
		rule = "must be a size greater than 0 (bytes, KiB, MiB or GiB)";
	else if (rv == -2)
		rule = "must be at most " CONF_MAX_SIZE_STR;
	else if (k->type == K_SIZE && n > CONF_MAX_MEM_SIZE)
		rule = "must be at most " CONF_MAX_MEM_SIZE_STR " (held in "
		    "memory per request)";
	else if (k->type == K_SIZE)
		*(size_t *)field = (size_t)n;
	else
		*(uint64_t *)field = n;
	return rule;
}

/* Stores a duration into field; else returns the rule it breaks. */
static const char *
conf_dur(const struct kdef *k, const char *s, void *field)
{
	const char	*rule = NULL;
	int64_t		 ms = 0;
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
	else if (k->type == K_MS)
		*(int *)field = (int)ms;
	else
		*(int64_t *)field = ms / 1000;
	return rule;
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

static int
conf_scalar(struct cctx *c, const char *path, const struct kdef *k,
    yaml_node_t *v, void *field)
{
	const char	*s = (const char *)v->data.scalar.value;
	const char	*rule;
	int		 rv, e = 0;

	switch (k->type) {
	case K_STR:
	case K_OPTSTR:
		return conf_str(c, path, k, v, field);
	case K_PORT:
		return conf_int(c, path, v, field, 1, 65535, "must be 1-65535");
	case K_WORKERS:
		if (strcmp(s, "auto") == 0) {
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
		rule = conf_size(k, s, field);
		return rule == NULL ? 0 : conf_refuse(c, path, v, rule);
	case K_MS:
	case K_SEC:
		rule = conf_dur(k, s, field);
		return rule == NULL ? 0 : conf_refuse(c, path, v, rule);
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
int
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

void
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

/*
 * Refuses nesting deeper than CONF_MAX_DEPTH before the document is built.
 * The depth is counted on libyaml's own tokens, not on a second reading of
 * the bytes: a hand-written pre-scan is another YAML grammar, and where it
 * disagrees with libyaml (a quote inside a plain scalar, a block scalar)
 * it could hide brackets from the count. Stopping at the first token too
 * deep keeps the scan linear: libyaml's cost per token grows with the
 * depth it has reached, and it never looks more than 1024 characters
 * ahead. A syntax error is left to conf_parse, which reports it.
 */
static int
conf_depth_ok(struct cctx *c, const unsigned char *buf, size_t len)
{
	yaml_parser_t	p;
	yaml_token_t	t;
	struct cpos	pos = { 0 };
	int		depth = 0, rv = 0, done = 0;

	if (!yaml_parser_initialize(&p)) {
		conf_errp(c, NULL, "out of memory");
		return -1;
	}
	yaml_parser_set_input_string(&p, buf, len);
	while (!done && yaml_parser_scan(&p, &t)) {
		done = t.type == YAML_STREAM_END_TOKEN;
		if (t.type == YAML_FLOW_SEQUENCE_START_TOKEN ||
		    t.type == YAML_FLOW_MAPPING_START_TOKEN ||
		    t.type == YAML_BLOCK_SEQUENCE_START_TOKEN ||
		    t.type == YAML_BLOCK_MAPPING_START_TOKEN)
			depth++;
		else if (t.type == YAML_FLOW_SEQUENCE_END_TOKEN ||
		    t.type == YAML_FLOW_MAPPING_END_TOKEN ||
		    t.type == YAML_BLOCK_END_TOKEN)
			depth--;
		if (depth > CONF_MAX_DEPTH) {
			pos.line = t.start_mark.line + 1;
			pos.col = t.start_mark.column + 1;
			pos.set = 1;
			conf_errp(c, &pos, "nested deeper than %d levels",
			    CONF_MAX_DEPTH);
			rv = -1;
			done = 1;
		}
		yaml_token_delete(&t);
	}
	yaml_parser_delete(&p);
	return rv;
}

/* -1 only when the YAML itself is unusable: later checks would just echo it */
int
conf_parse(struct cctx *c, const unsigned char *buf, size_t len)
{
	yaml_parser_t	 p;
	yaml_document_t	 doc, extra;
	yaml_node_t	*root;
	int		 rv = -1, loaded = 0;

	if (conf_depth_ok(c, buf, len) == -1)
		return -1;
	if (!yaml_parser_initialize(&p)) {
		conf_errp(c, NULL, "out of memory");
		return -1;
	}
	yaml_parser_set_input_string(&p, buf, len);
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

/* The strings that the keys of a table store; sections are walked in turn. */
static void
conf_free_keys(struct conf *cf, const struct kdef *keys)
{
	const struct kdef *k;

	for (k = keys; k->name != NULL; k++)
		if (k->type == K_SECTION)
			conf_free_keys(cf, k->aux);
		else if (k->type == K_STR || k->type == K_OPTSTR)
			free(*(char **)((char *)cf + k->off));
}

/*
 * conf_free's part: every string a key stores, found from the same tables
 * that fill them, so a new string key cannot be forgotten here.
 */
void
conf_free_values(struct conf *cf)
{
	conf_free_keys(cf, top_keys);
	conf_list_clear(cf, 1);
	conf_list_clear(cf, 0);
}
