/* conf.h - licproxy.yaml parsed into one immutable struct. */
#ifndef CONF_H
#define CONF_H

#include <stddef.h>
#include <stdint.h>

#include "cidr.h"
#include "token.h"

#define CONF_MAX_URLS		16
#define CONF_MAX_TRUSTED	16
#define CONF_MAX_EXEMPT		64	/* license.miss_exempt entries */
/* Two generations (during a reload) plus uplinks fit STATS_MAX_SLOTS. */
#define CONF_MAX_WORKERS	60

/*
 * Upper bounds for every duration and size (larger values are refused, not
 * wrapped): 100 years keeps any lease time a 4-digit-year RFC 3339 date;
 * 16 TiB is far beyond any store and inside the address space LMDB maps;
 * 1 GiB bounds what one request may hold in memory (max_body, max_header).
 */
#define CONF_MAX_DURATION_MS	(100ULL * 365 * 24 * 3600 * 1000)
#define CONF_MAX_DURATION_STR	"876000h (100 years)"
#define CONF_MAX_SIZE		(1ULL << 44)
#define CONF_MAX_SIZE_STR	"16384GiB"
#define CONF_MAX_MEM_SIZE	(1ULL << 30)
#define CONF_MAX_MEM_SIZE_STR	"1GiB"
/* Keys held as int ms: below INT_MAX with room to round up to seconds. */
#define CONF_MAX_MS		(596LL * 3600 * 1000)
#define CONF_MAX_MS_STR		"596h"

enum conf_mode { CONF_PROXY = 0, CONF_AUTHORITY = 1 };

struct conf {
	char		*path;		/* file it came from */
	enum conf_mode	 mode;

	struct {
		char	*host;
		int	 port;
		char	*status_host;
		int	 status_port;
		int	 workers;	/* "auto" resolved to online CPUs */
		char	*tls_cert;
		char	*tls_key;
		char	*client_ca;	/* NULL or "" = no mTLS */
		size_t	 max_body;
		char	*user;		/* NULL or "" = do not drop */
		/* bounds (not in SPEC's sample; defaults apply) */
		int	 max_connections;	/* per worker, default 4096 */
		size_t	 max_header;		/* default 16KiB */
		int	 header_timeout_ms;	/* default 10s */
		int	 body_timeout_ms;	/* default 10s, from end of head */
		int	 keepalive_timeout_ms;	/* default 60s */
		int	 drain_timeout_ms;	/* default 10s */
	} server;

	struct {
		char	*server_url[CONF_MAX_URLS];
		int	 n_server_url;
		char	*key_file;
		char	*ca_file;
		char	*client_cert;		/* NULL = no client certificate */
		char	*client_key;		/* set with client_cert */
		char	*trusted_keys[CONF_MAX_TRUSTED];
		int	 n_trusted_keys;
		int	 timeout_ms;		/* default 5s */
		int	 sync_interval_ms;	/* default 60s */
		int	 negative_ttl_ms;	/* default 30s */
		int	 max_rejections;	/* default 100000 */
		int	 miss_rate;		/* per s per address, default 50 */
		int	 miss_burst;		/* default 200 */
		struct cidr miss_exempt[CONF_MAX_EXEMPT];
		int	 n_miss_exempt;
		/* resolved at load: --license-key, LICPROXY_LICENSE_KEY, key_file */
		char	 key[TOKEN_KEY_LEN + 1];
	} license;

	struct {
		int64_t	 dedup_window_s;	/* default 24h */
	} usage;

	struct {
		int64_t	 ttl_s;			/* default 5m */
	} seats;

	struct {
		char	*path;
		uint64_t max_size;		/* default 1GiB */
	} store;

	struct {
		char	*signing_key;
		int64_t	 lease_refresh_s;	/* default 60 */
		int64_t	 lease_ttl_s;		/* default 72h */
		int64_t	 seat_grant_ttl_s;	/* default 72h */
	} authority;

	struct {
		int	 level;			/* enum log_level */
		int	 json;
		int	 access;		/* one line per TLS request */
		char	*file;			/* NULL = stderr */
	} log;
};

/* Command-line overrides (SPEC section 6); NULL/0 fields are unset. */
struct conf_overrides {
	const char	*host;
	int		 port;
	int		 status_port;
	const char	*license_key;
	const char	*upstream[CONF_MAX_URLS];
	int		 n_upstream;
	const char	*store;
	int		 workers;
};

/*
 * Parse and validate path. On error returns NULL and writes every problem
 * found, one "FILE:LINE:COL: message" per line, into err.
 * check_files: CONF_FILES verifies that referenced files exist, private
 * keys are not group/other readable and key files hold Ed25519 keys (serve
 * and check-config); CONF_TLS also loads the certificate and its key as
 * the master will (check-config: serve reports that at error level, as a
 * startup error, when it makes the context).
 */
#define CONF_FILES	1
#define CONF_TLS	2
struct conf	*conf_load(const char *path, const struct conf_overrides *ov,
		    int check_files, char *err, size_t errlen);
void		 conf_free(struct conf *);

/*
 * Helpers shared with the CLI; return 0 on success, -1 on a bad value, -2 on
 * one too large (overflow, or past CONF_MAX_DURATION_MS / CONF_MAX_SIZE).
 */
int		 conf_parse_duration_ms(const char *s, int64_t *ms);
int		 conf_parse_size(const char *s, uint64_t *bytes);
/*
 * The Unix socket between the workers and the uplink/issuer, in the store:
 * its path into buf (a sun_path), or -1 when it does not fit.
 */
#define CONF_IPC_SOCK		"ipc.sock"
int		 conf_ipc_path(const char *store, char *buf, size_t len);
/* -1 and a message naming path if group/other may read it. */
int		 conf_check_private(const char *path, char *err, size_t errlen);

#endif
