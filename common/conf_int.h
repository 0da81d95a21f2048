/*
 * conf_int.h - what the parts of the configuration loader share (conf.c,
 * conf_err.c, conf_yaml.c, conf_check.c, conf_values.c): the load context
 * and the steps one part calls in another. Not for the rest of licproxy,
 * which sees only conf.h.
 */
#ifndef CONF_INT_H
#define CONF_INT_H

#include <sys/types.h>

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <yaml.h>

#include "conf.h"

#define CONF_SHOW_MAX		80	/* longest value echoed in a message */
/*
 * Bounds on the file before libyaml builds a tree of it: its scanner
 * costs time quadratic in the nesting depth (60,000 '[' took 12 s), and a
 * reload runs in the master, which must keep supervising. licproxy.yaml
 * is a few KiB, three levels deep.
 */
#define CONF_MAX_FILE		(1024 * 1024)
#define CONF_MAX_FILE_STR	"1MiB"
#define CONF_MAX_DEPTH		64

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
	S_LEASE_REFRESH, S_CLIENT_CERT, S_CLIENT_KEY, S_STORE_PATH, S_LOG_FILE,
	S_MAX
};

struct cctx {
	const char	*file;
	char		*err;
	size_t		 errlen;
	size_t		 off;
	int		 nerr;
	int		 hidden;	/* errors that err had no room for */
	struct conf	*cf;
	yaml_document_t	*doc;
	struct cpos	 pos[S_MAX];
	struct cpos	 trusted[CONF_MAX_TRUSTED];
};

/* conf_err.c */
void		 conf_errp(struct cctx *, const struct cpos *, const char *, ...)
		    __attribute__((format(printf, 3, 4)));
void		 conf_errn(struct cctx *, const yaml_node_t *, const char *, ...)
		    __attribute__((format(printf, 3, 4)));
void		 conf_err_end(struct cctx *);
struct cpos	 conf_pos(const yaml_node_t *);
const char	*conf_show(const char *, char *, size_t);
int		 conf_setstr(struct cctx *, char **, const char *);

/* conf_values.c */
int		 conf_ncpu(void);
int		 conf_parse_uint(const char **, uint64_t *);
int		 conf_url_ok(const char *);

/* conf_yaml.c */
int		 conf_parse(struct cctx *, const unsigned char *, size_t);
int		 conf_list_item(struct cctx *, const char *, int, int,
		    const char *, yaml_node_t *);
void		 conf_list_clear(struct conf *, int);
void		 conf_free_values(struct conf *);

/* conf_check.c */
int		 conf_mode_private(const char *, mode_t, char *, size_t);
void		 conf_resolve_key(struct cctx *, const struct conf_overrides *);
void		 conf_check_files(struct cctx *, int tls);
void		 conf_check_mode(struct cctx *);

#endif
