/*
 * test_conf.c - licproxy.yaml parsing: values, defaults, overrides, key
 * resolution, and the exact FILE:LINE:COL text of every kind of error.
 */
#include <sys/stat.h>

#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "conf.h"
#include "log.h"

#define KEY_A	"Abcdefghij0123456789KLMNOPQRSTuvwxyz0123"
#define KEY_B	"ZZZZZZZZZZ0123456789KLMNOPQRSTuvwxyz9999"

static char	dir[256];
static char	cpath[512];	/* the config file of each test */
static char	err[8192];

/* Write text with every '@' replaced by the test directory. */
static const char *
put(const char *name, const char *text, mode_t mode)
{
	static char	 path[512];
	FILE		*fp;

	snprintf(path, sizeof path, "%s/%s", dir, name);
	fp = fopen(path, "w");
	assert_non_null(fp);
	for (; *text != '\0'; text++) {
		if (*text == '@')
			fputs(dir, fp);
		else
			fputc(*text, fp);
	}
	assert_int_equal(fclose(fp), 0);
	assert_int_equal(chmod(path, mode), 0);
	return path;
}

static struct conf *
load(const char *yaml, const struct conf_overrides *ov, int check_files)
{
	snprintf(cpath, sizeof cpath, "%s", put("c.yaml", yaml, 0600));
	memset(err, 'x', sizeof err);
	return conf_load(cpath, ov, check_files ? CONF_FILES | CONF_TLS : 0,
	    err, sizeof err);
}

/* Load must fail with exactly want, where '%' stands for the config path
 * and '@' for the test directory. */
static void
load_fails(const char *yaml, const struct conf_overrides *ov, int check,
    const char *want)
{
	char		 exp[8192];
	size_t		 o = 0;
	struct conf	*cf;

	cf = load(yaml, ov, check);
	if (cf != NULL)
		conf_free(cf);
	assert_null(cf);
	for (; *want != '\0' && o < sizeof exp - PATH_MAX; want++) {
		if (*want == '%')
			o += snprintf(exp + o, sizeof exp - o, "%s", cpath);
		else if (*want == '@')
			o += snprintf(exp + o, sizeof exp - o, "%s", dir);
		else
			exp[o++] = *want;
	}
	exp[o] = '\0';
	assert_string_equal(err, exp);
}

/*
 * Real keys for the checks that load them (conf_check_tls, conf_check_key):
 * cert + tlskey (a P-256 pair), otherkey (another P-256 key), sk (an
 * Ed25519 private key) and pub1, pub2 (its public half), made once.
 */
static int
make_pki(void)
{
	char cmd[4 * PATH_MAX];

	snprintf(cmd, sizeof cmd, "(cd '%s' && umask 077 && "
	    "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1"
	    " -nodes -keyout tlskey -out cert -days 2 -subj /CN=t && "
	    "openssl genpkey -algorithm ec -pkeyopt ec_paramgen_curve:"
	    "prime256v1 -out otherkey && "
	    "openssl genpkey -algorithm ed25519 -out sk && "
	    "openssl pkey -in sk -pubout -out pub1 && cp pub1 pub2 && "
	    "chmod 644 cert pub1 pub2) >/dev/null 2>&1", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static int
setup(void **state)
{
	(void)state;
	unsetenv("LICPROXY_LICENSE_KEY");
	return 0;
}

static void
test_full_valid(void **state)
{
	struct conf *cf;

	(void)state;
	put("upca", "ca", 0644);	/* read when the uplink starts */
	put("lk", "\n  " KEY_A " \t\n\n", 0600);
	cf = load(
	    "mode: proxy\n"
	    "server:\n"
	    "  host: 127.0.0.1\n"
	    "  port: 9443\n"
	    "  status_host: 127.0.0.2\n"
	    "  status_port: 9089\n"
	    "  workers: 3\n"
	    "  tls_cert: @/cert\n"
	    "  tls_key: @/tlskey\n"
	    "  client_ca: @/cert\n"
	    "  max_body: 1MiB\n"
	    "  user: nobody\n"
	    "  max_connections: 100\n"
	    "  max_header: 8KiB\n"
	    "  header_timeout: 500ms\n"
	    "  body_timeout: 3s\n"
	    "  keepalive_timeout: 2m\n"
	    "  drain_timeout: 3s\n"
	    "license:\n"
	    "  server_url: [\"https://a.example.com\", "
	    "\"https://b.example.com:8443/base\"]\n"
	    "  key_file: @/lk\n"
	    "  ca_file: @/upca\n"
	    "  trusted_keys:\n"
	    "    - @/pub1\n"
	    "    - @/pub2\n"
	    "  timeout: 7s\n"
	    "  sync_interval: 2m\n"
	    "  negative_ttl: 0s\n"
	    "store:\n"
	    "  path: @/store\n"
	    "  max_size: 2GiB\n"
	    "authority:\n"
	    "  signing_key: @/sk\n"
	    "  lease_refresh: 90s\n"
	    "  lease_ttl: 1h\n"
	    "log:\n"
	    "  level: debug\n"
	    "  format: json\n"
	    "  file: @/log\n", NULL, 1);
	assert_non_null(cf);
	assert_string_equal(err, "");
	assert_string_equal(cf->path, cpath);
	assert_int_equal(cf->mode, CONF_PROXY);
	assert_string_equal(cf->server.host, "127.0.0.1");
	assert_int_equal(cf->server.port, 9443);
	assert_string_equal(cf->server.status_host, "127.0.0.2");
	assert_int_equal(cf->server.status_port, 9089);
	assert_int_equal(cf->server.workers, 3);
	assert_true(strstr(cf->server.tls_cert, "/cert") != NULL);
	assert_true(strstr(cf->server.tls_key, "/tlskey") != NULL);
	assert_true(strstr(cf->server.client_ca, "/cert") != NULL);
	assert_int_equal(cf->server.max_body, 1024 * 1024);
	assert_string_equal(cf->server.user, "nobody");
	assert_int_equal(cf->server.max_connections, 100);
	assert_int_equal(cf->server.max_header, 8192);
	assert_int_equal(cf->server.header_timeout_ms, 500);
	assert_int_equal(cf->server.body_timeout_ms, 3000);
	assert_int_equal(cf->server.keepalive_timeout_ms, 120000);
	assert_int_equal(cf->server.drain_timeout_ms, 3000);
	assert_int_equal(cf->license.n_server_url, 2);
	assert_string_equal(cf->license.server_url[0], "https://a.example.com");
	assert_string_equal(cf->license.server_url[1],
	    "https://b.example.com:8443/base");
	assert_true(strstr(cf->license.key_file, "/lk") != NULL);
	assert_true(strstr(cf->license.ca_file, "/upca") != NULL);
	assert_int_equal(cf->license.n_trusted_keys, 2);
	assert_true(strstr(cf->license.trusted_keys[1], "/pub2") != NULL);
	assert_int_equal(cf->license.timeout_ms, 7000);
	assert_int_equal(cf->license.sync_interval_ms, 120000);
	assert_int_equal(cf->license.negative_ttl_ms, 0);
	assert_string_equal(cf->license.key, KEY_A);	/* trimmed */
	assert_true(strstr(cf->store.path, "/store") != NULL);
	assert_int_equal(cf->store.max_size, 2ULL << 30);
	assert_true(strstr(cf->authority.signing_key, "/sk") != NULL);
	assert_int_equal(cf->authority.lease_refresh_s, 90);
	assert_int_equal(cf->authority.lease_ttl_s, 3600);
	assert_int_equal(cf->log.level, LOG_DEBUG);
	assert_int_equal(cf->log.json, 1);
	assert_true(strstr(cf->log.file, "/log") != NULL);
	conf_free(cf);
}

static void
test_defaults(void **state)
{
	struct conf	*cf;
	long		 ncpu = sysconf(_SC_NPROCESSORS_ONLN);

	(void)state;
	cf = load("# minimal\nmode: authority\nauthority:\n", NULL, 0);
	assert_non_null(cf);
	assert_int_equal(cf->mode, CONF_AUTHORITY);
	assert_string_equal(cf->server.host, "0.0.0.0");
	assert_int_equal(cf->server.port, 8443);
	assert_string_equal(cf->server.status_host, "0.0.0.0");
	assert_int_equal(cf->server.status_port, 8089);
	assert_int_equal(cf->server.workers, ncpu < 1 ? 1 : ncpu);
	assert_string_equal(cf->server.tls_cert, "/etc/licproxy/tls/server.crt");
	assert_string_equal(cf->server.tls_key, "/etc/licproxy/tls/server.key");
	assert_string_equal(cf->server.client_ca, "");
	assert_int_equal(cf->server.max_body, 256 * 1024);
	assert_null(cf->server.user);
	assert_int_equal(cf->server.max_connections, 4096);
	assert_int_equal(cf->server.max_header, 16 * 1024);
	assert_int_equal(cf->server.header_timeout_ms, 10000);
	assert_int_equal(cf->server.body_timeout_ms, 10000);
	assert_int_equal(cf->server.keepalive_timeout_ms, 60000);
	assert_int_equal(cf->server.drain_timeout_ms, 10000);
	assert_int_equal(cf->license.n_server_url, 0);
	assert_null(cf->license.key_file);
	assert_string_equal(cf->license.ca_file, "");
	assert_int_equal(cf->license.n_trusted_keys, 0);
	assert_int_equal(cf->license.timeout_ms, 5000);
	assert_int_equal(cf->license.sync_interval_ms, 60000);
	assert_int_equal(cf->license.negative_ttl_ms, 30000);
	assert_string_equal(cf->license.key, "");
	assert_string_equal(cf->store.path, "/var/lib/licproxy");
	assert_int_equal(cf->store.max_size, 1ULL << 30);
	assert_string_equal(cf->authority.signing_key,
	    "/etc/licproxy/authority.key");
	assert_int_equal(cf->authority.lease_refresh_s, 60);
	assert_int_equal(cf->authority.lease_ttl_s, 72 * 3600);
	assert_int_equal(cf->log.level, LOG_INFO);
	assert_int_equal(cf->log.json, 0);
	assert_null(cf->log.file);
	conf_free(cf);

	/* "workers: auto" is the same as leaving it out */
	cf = load("mode: authority\nserver:\n  workers: auto\n", NULL, 0);
	assert_non_null(cf);
	assert_int_equal(cf->server.workers, ncpu < 1 ? 1 : ncpu);
	conf_free(cf);
}

static void
test_port_range(void **state)
{
	(void)state;
	load_fails("mode: authority\nserver:\n  host: 0.0.0.0\n"
	    "  port: 99999\n", NULL, 0,
	    "%:4:9: server.port: must be 1-65535, got \"99999\"");
	load_fails("mode: authority\nserver:\n  status_port: 0\n", NULL, 0,
	    "%:3:16: server.status_port: must be 1-65535, got \"0\"");
	load_fails("mode: authority\nserver:\n  port: \"-1\"\n", NULL, 0,
	    "%:3:9: server.port: must be 1-65535, got \"-1\"");
}

static void
test_unknown_key(void **state)
{
	(void)state;
	load_fails("mode: authority\nserver:\n  prot: 1\n", NULL, 0,
	    "%:3:3: server.prot: unknown key");
	load_fails("mode: authority\n\nlogging:\n  level: info\n", NULL, 0,
	    "%:3:1: logging: unknown key");
	load_fails("mode: authority\nstore:\n    max_size: 1GiB\n"
	    "    max_size: 2GiB\n", NULL, 0,
	    "%:4:5: store.max_size: duplicate key");
}

static void
test_wrong_type(void **state)
{
	(void)state;
	load_fails("mode: authority\nserver:\n  port:\n    a: 1\n", NULL, 0,
	    "%:4:5: server.port: expected a single value, got a mapping");
	load_fails("mode: authority\nserver:\n  host: [a, b]\n", NULL, 0,
	    "%:3:9: server.host: expected a single value, got a list");
	load_fails("mode: authority\nserver:\n  port: http\n", NULL, 0,
	    "%:3:9: server.port: must be 1-65535, got \"http\"");
	load_fails("mode: authority\nlog: debug\n", NULL, 0,
	    "%:2:6: log: expected a mapping of keys, got a value");
	load_fails("- mode\n", NULL, 0,
	    "%:1:1: expected a mapping of sections at the top level, got a "
	    "list");
	load_fails("mode: authority\nlicense:\n  server_url: {a: b}\n", NULL,
	    0, "%:3:15: license.server_url: expected a URL or a list of "
	    "them, got a mapping");
}

static void
test_bad_values(void **state)
{
	(void)state;
	load_fails("mode: relay\n", NULL, 0,
	    "%:1:7: mode: must be proxy or authority, got \"relay\"");
	load_fails("mode: authority\nlicense:\n  server_url:\n"
	    "    - https://ok.example\n    - ftp://x\n", NULL, 0,
	    "%:5:7: license.server_url: must be an https:// URL, "
	    "got \"ftp://x\"");
	load_fails("mode: authority\nlicense:\n  server_url:\n"
	    "    - https://ok.example\n    - http://ok.example\n", NULL, 0,
	    "%:5:7: license.server_url: must be an https:// URL, "
	    "got \"http://ok.example\"");
	load_fails("mode: authority\nlicense:\n  server_url: \"https://\"\n",
	    NULL, 0, "%:3:15: license.server_url: must be an https:// URL, "
	    "got \"https://\"");
	load_fails("mode: authority\nserver:\n  tls_cert: \"\"\n", NULL, 0,
	    "%:3:13: server.tls_cert: must not be empty");
	load_fails("mode: authority\nserver:\n  max_connections: 0\n",
	    NULL, 0, "%:3:20: server.max_connections: must be 1-1048576, "
	    "got \"0\"");
	load_fails("mode: authority\nlicense:\n  timeout: 0s\n", NULL, 0,
	    "%:3:12: license.timeout: must be greater than 0, got \"0s\"");
	load_fails("mode: authority\nserver:\n  header_timeout: 600h\n",
	    NULL, 0, "%:3:19: server.header_timeout: must be less than "
	    "596h, got \"600h\"");
	/* An int of ms with room to round up to seconds (uplink Retry-After). */
	load_fails("mode: authority\nlicense:\n  timeout: 2147483647ms\n",
	    NULL, 0, "%:3:12: license.timeout: must be less than 596h, got "
	    "\"2147483647ms\"");
	load_fails("mode: authority\nauthority:\n  lease_ttl: 10000000000h\n",
	    NULL, 0, "%:3:14: authority.lease_ttl: must be at most 876000h "
	    "(100 years), got \"10000000000h\"");
	load_fails("mode: authority\nlicense:\n"
	    "  timeout: 99999999999999999999s\n", NULL, 0,
	    "%:3:12: license.timeout: must be at most 876000h (100 years), "
	    "got \"99999999999999999999s\"");
	load_fails("mode: authority\nserver:\n  max_body: 2GiB\n", NULL, 0,
	    "%:3:13: server.max_body: must be at most 1GiB (held in memory "
	    "per request), got \"2GiB\"");
	load_fails("mode: authority\nstore:\n  max_size: 99999999999GiB\n",
	    NULL, 0, "%:3:13: store.max_size: must be at most 16384GiB, got "
	    "\"99999999999GiB\"");
	load_fails("mode: authority\nserver:\n  max_body: 0\n", NULL, 0,
	    "%:3:13: server.max_body: must be a size greater than 0 (bytes, "
	    "KiB, MiB or GiB), got \"0\"");
	load_fails("mode: authority\nserver:\n  port: 9000\n"
	    "  status_port: 9000\n", NULL, 0,
	    "%:4:16: server.status_port: must differ from server.port "
	    "(9000)");
	load_fails("mode: authority\nauthority:\n  lease_refresh: 2h\n"
	    "  lease_ttl: 1h\n", NULL, 0,
	    "%:3:18: authority.lease_refresh: must not exceed "
	    "authority.lease_ttl");
	/* control characters in a value cannot split the output */
	load_fails("mode: \"a\\nb\"\n", NULL, 0,
	    "%:1:7: mode: must be proxy or authority, got \"a?b\"");
}

static void
test_multiple_errors(void **state)
{
	(void)state;
	load_fails(
	    "mode: authority\n"
	    "server:\n"
	    "  port: http\n"
	    "  workers: 0\n"
	    "  max_body: 10KB\n"
	    "  header_timeout: 5 s\n"
	    "  host: {a: 1}\n"
	    "  tls_cert: [x]\n"
	    "  bogus: 1\n"
	    "store:\n"
	    "  max_size: -1\n"
	    "authority:\n"
	    "  lease_ttl: 1500ms\n"
	    "log:\n"
	    "  level: loud\n"
	    "  format: xml\n"
	    "colour: red\n", NULL, 0,
	    "%:3:9: server.port: must be 1-65535, got \"http\"\n"
	    "%:4:12: server.workers: must be \"auto\" or 1-60, got \"0\"\n"
	    "%:5:13: server.max_body: must be a size greater than 0 (bytes, "
	    "KiB, MiB or GiB), got \"10KB\"\n"
	    "%:6:19: server.header_timeout: must be a duration such as "
	    "500ms, 30s, 5m or 72h, got \"5 s\"\n"
	    "%:7:9: server.host: expected a single value, got a mapping\n"
	    "%:8:13: server.tls_cert: expected a single value, got a list\n"
	    "%:9:3: server.bogus: unknown key\n"
	    "%:11:13: store.max_size: must be a size greater than 0 (bytes, "
	    "KiB, MiB or GiB), got \"-1\"\n"
	    "%:13:14: authority.lease_ttl: must be whole seconds, got "
	    "\"1500ms\"\n"
	    "%:15:10: log.level: must be error, warn, info or debug, got "
	    "\"loud\"\n"
	    "%:16:11: log.format: must be text or json, got \"xml\"\n"
	    "%:17:1: colour: unknown key");
}

static void
test_too_many_urls(void **state)
{
	char	yaml[2048];
	size_t	o;
	int	i;

	(void)state;
	o = snprintf(yaml, sizeof yaml, "mode: authority\nlicense:\n"
	    "  server_url:\n");
	for (i = 0; i < CONF_MAX_URLS + 1; i++)
		o += snprintf(yaml + o, sizeof yaml - o,
		    "    - https://h%d.example\n", i);
	/* entry 17 is on line 3 + 17 */
	load_fails(yaml, NULL, 0,
	    "%:20:7: license.server_url: at most 16 entries allowed");
}

static void
test_scalar_lists(void **state)
{
	struct conf *cf;

	(void)state;
	setenv("LICPROXY_LICENSE_KEY", KEY_A, 1);
	cf = load("license:\n  server_url: https://one.example\n"
	    "  trusted_keys: /k/one.pub\n", NULL, 0);
	assert_non_null(cf);
	assert_int_equal(cf->license.n_server_url, 1);
	assert_string_equal(cf->license.server_url[0], "https://one.example");
	assert_int_equal(cf->license.n_trusted_keys, 1);
	assert_string_equal(cf->license.trusted_keys[0], "/k/one.pub");
	conf_free(cf);
}

/* license.miss_*: defaults, values, and each bad entry at its place. */
static void
test_miss_keys(void **state)
{
	struct conf *cf;

	(void)state;
	setenv("LICPROXY_LICENSE_KEY", KEY_A, 1);
	cf = load("license:\n  server_url: https://one.example\n"
	    "  trusted_keys: /k\n", NULL, 0);
	assert_non_null(cf);
	assert_int_equal(cf->license.miss_rate, 50);
	assert_int_equal(cf->license.miss_burst, 200);
	assert_int_equal(cf->license.max_rejections, 100000);
	assert_int_equal(cf->license.n_miss_exempt, 0);
	conf_free(cf);
	cf = load("license:\n  server_url: https://one.example\n"
	    "  trusted_keys: /k\n  miss_rate: 5\n  miss_burst: 7\n"
	    "  max_rejections: 9\n"
	    "  miss_exempt:\n    - 10.0.0.0/8\n    - ::1\n", NULL, 0);
	assert_non_null(cf);
	assert_int_equal(cf->license.miss_rate, 5);
	assert_int_equal(cf->license.miss_burst, 7);
	assert_int_equal(cf->license.max_rejections, 9);
	assert_int_equal(cf->license.n_miss_exempt, 2);
	assert_int_equal(cf->license.miss_exempt[0].bits, 104);
	assert_int_equal(cf->license.miss_exempt[1].bits, 128);
	conf_free(cf);
	cf = load("license:\n  server_url: https://one.example\n"
	    "  trusted_keys: /k\n  miss_exempt: 192.0.2.1\n", NULL, 0);
	assert_non_null(cf);
	assert_int_equal(cf->license.n_miss_exempt, 1);
	conf_free(cf);
	load_fails("license:\n  server_url: https://one.example\n"
	    "  trusted_keys: /k\n  miss_rate: 0\n"
	    "  miss_exempt:\n    - 10.0.0.0/8\n    - 10.0.0.0/33\n"
	    "    - [1]\n", NULL, 0,
	    "%:4:14: license.miss_rate: must be 1-1048576, got \"0\"\n"
	    "%:7:7: license.miss_exempt: expected an IPv4 or IPv6 address or "
	    "CIDR such as 10.0.0.0/8 or 2001:db8::/32, got \"10.0.0.0/33\"\n"
	    "%:8:7: license.miss_exempt: expected an IPv4 or IPv6 address or "
	    "CIDR such as 10.0.0.0/8 or 2001:db8::/32, got a list");
}

static void
test_proxy_needs_upstream(void **state)
{
	(void)state;
	setenv("LICPROXY_LICENSE_KEY", KEY_A, 1);
	load_fails("mode: proxy\n", NULL, 0,
	    "%: license.server_url: proxy mode needs at least one upstream "
	    "URL\n"
	    "%: license.trusted_keys: proxy mode needs at least one public "
	    "key file");
	load_fails("license:\n  server_url: []\n  trusted_keys: /k\n",
	    NULL, 0, "%:2:15: license.server_url: proxy mode needs at least "
	    "one upstream URL");
}

static void
test_duration_parser(void **state)
{
	static const struct { const char *s; int64_t ms; } good[] = {
		{ "500ms", 500 }, { "30s", 30000 }, { "5m", 300000 },
		{ "72h", 259200000 }, { "45", 45000 }, { "0", 0 },
		{ "0ms", 0 }, { "876000h", 3153600000000LL },
		{ "3153600000000ms", 3153600000000LL },
	};
	static const char *bad[] = {
		"", "-5s", "+5s", " 5s", "5s ", "5 s", "5sec", "1.5h", "s",
		"5S", "5d", "0x10s", "99999999999999999999x",
	};
	/* Overflow or past 100 years: refused as too large, not wrapped. */
	static const char *huge[] = {
		"10000000000h", "876001h", "3153600000001ms",
		"9223372036854775807ms", "9223372036854775808ms",
		"9223372036854775807s", "99999999999999999999",
		"99999999999999999999999999999h",
	};
	int64_t	ms;
	size_t	i;

	(void)state;
	for (i = 0; i < sizeof good / sizeof good[0]; i++) {
		ms = -1;
		assert_int_equal(conf_parse_duration_ms(good[i].s, &ms), 0);
		assert_true(ms == good[i].ms);
	}
	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		ms = 12345;
		if (conf_parse_duration_ms(bad[i], &ms) != -1)
			fail_msg("accepted duration \"%s\"", bad[i]);
		assert_true(ms == 12345);
	}
	for (i = 0; i < sizeof huge / sizeof huge[0]; i++) {
		ms = 12345;
		if (conf_parse_duration_ms(huge[i], &ms) != -2)
			fail_msg("not too large: duration \"%s\"", huge[i]);
		assert_true(ms == 12345);
	}
}

static void
test_size_parser(void **state)
{
	static const struct { const char *s; uint64_t b; } good[] = {
		{ "256KiB", 262144 }, { "1MiB", 1048576 },
		{ "1GiB", 1073741824 }, { "123", 123 }, { "10B", 10 },
		{ "0", 0 }, { "16384GiB", 1ULL << 44 },
		{ "17592186044416", 1ULL << 44 },
	};
	static const char *bad[] = {
		"", "1KB", "1MB", "1kib", "1K", "-1", "1.5MiB", "KiB", " 1",
		"1 KiB", "1TiB", "18446744073709551616TiB",
	};
	static const char *huge[] = {
		"16385GiB", "17592186044417", "17179869183GiB",
		"18446744073709551615", "18446744073709551616",
		"17179869184GiB", "99999999999999999999999GiB",
	};
	uint64_t	b;
	size_t		i;

	(void)state;
	for (i = 0; i < sizeof good / sizeof good[0]; i++) {
		b = 1;
		assert_int_equal(conf_parse_size(good[i].s, &b), 0);
		assert_true(b == good[i].b);
	}
	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		b = 7;
		if (conf_parse_size(bad[i], &b) != -1)
			fail_msg("accepted size \"%s\"", bad[i]);
		assert_true(b == 7);
	}
	for (i = 0; i < sizeof huge / sizeof huge[0]; i++) {
		b = 7;
		if (conf_parse_size(huge[i], &b) != -2)
			fail_msg("not too large: size \"%s\"", huge[i]);
		assert_true(b == 7);
	}
}

static void
test_overrides(void **state)
{
	struct conf_overrides	 ov = { 0 };
	struct conf		*cf;

	(void)state;
	ov.host = "10.1.1.1";
	ov.port = 1443;
	ov.status_port = 1089;
	ov.license_key = KEY_B;
	ov.upstream[0] = "https://up1.example";
	ov.upstream[1] = "https://up2.example:8080";
	ov.n_upstream = 2;
	ov.store = "/srv/licstore";
	ov.workers = 7;
	setenv("LICPROXY_LICENSE_KEY", KEY_A, 1);
	cf = load("server:\n  host: 1.2.3.4\n  port: 5\n  workers: 2\n"
	    "license:\n  server_url: [https://a, https://b, https://c]\n"
	    "  trusted_keys: [/k]\nstore:\n  path: /x\n", &ov, 0);
	assert_non_null(cf);
	assert_string_equal(cf->server.host, "10.1.1.1");
	assert_int_equal(cf->server.port, 1443);
	assert_int_equal(cf->server.status_port, 1089);
	assert_int_equal(cf->server.workers, 7);
	assert_string_equal(cf->store.path, "/srv/licstore");
	assert_int_equal(cf->license.n_server_url, 2);
	assert_string_equal(cf->license.server_url[0], "https://up1.example");
	assert_string_equal(cf->license.server_url[1],
	    "https://up2.example:8080");
	assert_null(cf->license.server_url[2]);
	/* --license-key wins over the environment */
	assert_string_equal(cf->license.key, KEY_B);
	conf_free(cf);
}

static void
test_overrides_bad(void **state)
{
	struct conf_overrides ov = { 0 };

	(void)state;
	ov.port = 70000;
	ov.workers = -1;
	ov.upstream[0] = "http://x";
	ov.n_upstream = 1;
	ov.license_key = "short";
	load_fails("license:\n  trusted_keys: /k\n", &ov, 0,
	    "%: server.port (--port): must be 1-65535, got 70000\n"
	    "%: server.workers (--workers): must be 1-60, got -1\n"
	    "%: license.server_url (--upstream): must be an https:// URL, "
	    "got \"http://x\"\n"
	    "%: license.server_url: proxy mode needs at least one upstream "
	    "URL\n"
	    "%: --license-key: a license key is exactly 40 characters of "
	    "[A-Za-z0-9]");
}

static void
test_key_file_trimmed(void **state)
{
	struct conf *cf;

	(void)state;
	put("key", " \r\n\t" KEY_A "\r\n  \n", 0600);
	cf = load("license:\n  server_url: https://u\n  trusted_keys: /k\n"
	    "  key_file: @/key\n", NULL, 0);
	assert_non_null(cf);
	assert_string_equal(cf->license.key, KEY_A);
	conf_free(cf);

	/* the environment wins over the file */
	setenv("LICPROXY_LICENSE_KEY", KEY_B, 1);
	cf = load("license:\n  server_url: https://u\n  trusted_keys: /k\n"
	    "  key_file: @/key\n", NULL, 0);
	assert_non_null(cf);
	assert_string_equal(cf->license.key, KEY_B);
	conf_free(cf);
}

static void
test_key_env(void **state)
{
	struct conf *cf;

	(void)state;
	setenv("LICPROXY_LICENSE_KEY", KEY_A, 1);
	cf = load("license:\n  server_url: https://u\n  trusted_keys: /k\n",
	    NULL, 0);
	assert_non_null(cf);
	assert_string_equal(cf->license.key, KEY_A);
	conf_free(cf);

	/* a malformed key is refused without being echoed */
	setenv("LICPROXY_LICENSE_KEY", KEY_A "X", 1);
	load_fails("license:\n  server_url: https://u\n  trusted_keys: /k\n",
	    NULL, 0, "%: LICPROXY_LICENSE_KEY: a license key is exactly 40 "
	    "characters of [A-Za-z0-9]");
	assert_null(strstr(err, KEY_A));
}

static void
test_key_file_problems(void **state)
{
	struct conf *cf;

	(void)state;
	put("key644", KEY_A "\n", 0644);
	load_fails("license:\n  server_url: https://u\n  trusted_keys: /k\n"
	    "  key_file: @/key644\n", NULL, 0,
	    "%:4:13: license.key_file: @/key644: private key is readable by "
	    "group or others (mode 0644); chmod 600 @/key644");
	put("badkey", "not-a-key-" KEY_A "\n", 0600);
	load_fails("license:\n  server_url: https://u\n  trusted_keys: /k\n"
	    "  key_file: @/badkey\n", NULL, 0,
	    "%:4:13: license.key_file: \"@/badkey\" does not hold a license "
	    "key (a license key is exactly 40 characters of [A-Za-z0-9])");
	assert_null(strstr(err, KEY_A));
	load_fails("license:\n  server_url: https://u\n  trusted_keys: /k\n"
	    "  key_file: @/nokey\n", NULL, 0,
	    "%:4:13: license.key_file: cannot open \"@/nokey\": No such file "
	    "or directory");
	load_fails("license:\n  server_url: https://u\n  trusted_keys: /k\n"
	    "  key_file: @\n", NULL, 0,
	    "%:4:13: license.key_file: @: not a regular file");
	load_fails("license:\n  server_url: https://u\n  trusted_keys: /k\n",
	    NULL, 0, "%: license key required: set license.key_file, "
	    "LICPROXY_LICENSE_KEY or --license-key");
	/* authority mode has no key of its own */
	cf = load("mode: authority\n", NULL, 0);
	assert_non_null(cf);
	conf_free(cf);
}

static void
test_check_files(void **state)
{
	(void)state;
	put("tlskey644", "k", 0644);
	put("sk640", "k", 0640);
	load_fails("mode: authority\nserver:\n  tls_cert: @/nocert\n"
	    "  tls_key: @/tlskey644\nauthority:\n  signing_key: @/sk640\n",
	    NULL, 1,
	    "%:3:13: server.tls_cert: cannot open \"@/nocert\": No such file "
	    "or directory\n"
	    "%:4:12: server.tls_key: @/tlskey644: private key is readable by "
	    "group or others (mode 0644); chmod 600 @/tlskey644\n"
	    "%:6:16: authority.signing_key: @/sk640: private key is readable "
	    "by group or others (mode 0640); chmod 600 @/sk640");
	/* proxy: trusted keys and CA files must exist; a directory is no file */
	setenv("LICPROXY_LICENSE_KEY", KEY_A, 1);
	load_fails("server:\n  tls_cert: @/cert\n  tls_key: @/tlskey\n"
	    "  client_ca: @\nlicense:\n  server_url: https://u\n"
	    "  ca_file: @/noca\n  trusted_keys:\n    - @/cert\n    - @/nopub\n",
	    NULL, 1,
	    "%:4:14: server.client_ca: \"@\" is not a regular file\n"
	    "%:7:12: license.ca_file: cannot open \"@/noca\": No such file or "
	    "directory\n"
	    "%:9:7: license.trusted_keys: @/cert: not an Ed25519 public key "
	    "(PEM)\n"
	    "%:10:7: license.trusted_keys: cannot open \"@/nopub\": No such "
	    "file or directory");
}

/*
 * What the files hold, reported with the rest in one run, each at its key:
 * a certificate and a key that do not match, a signing key that is not an
 * Ed25519 private key; and no certificate line twice for one file.
 */
static void
test_check_contents(void **state)
{
	char		 want[8192];
	struct conf	*cf;

	(void)state;
	cf = load("mode: authority\nserver:\n  tls_cert: @/cert\n"
	    "  tls_key: @/tlskey\nauthority:\n  signing_key: @/sk\n", NULL, 1);
	assert_non_null(cf);
	conf_free(cf);
	cf = load("mode: authority\nserver:\n  tls_cert: @/cert\n"
	    "  tls_key: @/otherkey\nauthority:\n  signing_key: @/tlskey\n",
	    NULL, 1);
	assert_null(cf);
	snprintf(want, sizeof want, "%s:4:12: server.tls_key: %s/otherkey: "
	    "cannot load private key: ", cpath, dir);
	assert_memory_equal(err, want, strlen(want));
	snprintf(want, sizeof want, "\n%s:6:16: authority.signing_key: "
	    "%s/tlskey: not an Ed25519 private key (PEM)", cpath, dir);
	assert_non_null(strstr(err, want));
	assert_string_equal(err + strlen(err) - strlen(want), want);
	/* a certificate that is not one: at tls_cert */
	put("junkcert", "-----BEGIN CERTIFICATE-----\nxx\n", 0644);
	cf = load("mode: authority\nserver:\n  tls_cert: @/junkcert\n"
	    "  tls_key: @/tlskey\nauthority:\n  signing_key: @/sk\n", NULL, 1);
	assert_null(cf);
	snprintf(want, sizeof want, "%s:3:13: server.tls_cert: %s/junkcert: "
	    "cannot load certificate: ", cpath, dir);
	assert_memory_equal(err, want, strlen(want));
	assert_null(strchr(err, '\n'));
}

static void
test_check_private(void **state)
{
	char		 msg[1024], want[1024];
	const char	*p;

	(void)state;
	p = put("priv", "k", 0600);
	assert_int_equal(conf_check_private(p, msg, sizeof msg), 0);
	p = put("priv", "k", 0604);
	assert_int_equal(conf_check_private(p, msg, sizeof msg), -1);
	snprintf(want, sizeof want, "%s: private key is readable by group or "
	    "others (mode 0604); chmod 600 %s", p, p);
	assert_string_equal(msg, want);
	p = put("priv", "k", 0400);
	assert_int_equal(conf_check_private(p, msg, sizeof msg), 0);
	snprintf(want, sizeof want, "%s/absent", dir);
	assert_int_equal(conf_check_private(want, msg, sizeof msg), -1);
	assert_non_null(strstr(msg, "No such file or directory"));
}

static void
test_missing_file(void **state)
{
	char		 path[PATH_MAX], want[PATH_MAX + 64];
	struct conf	*cf;

	(void)state;
	snprintf(path, sizeof path, "%s/nope.yaml", dir);
	cf = conf_load(path, NULL, 0, err, sizeof err);
	assert_null(cf);
	snprintf(want, sizeof want, "%s: cannot open: No such file or "
	    "directory", path);
	assert_string_equal(err, want);
	if (access("/etc/licproxy/licproxy.yaml", F_OK) == 0)
		return;
	assert_null(conf_load(NULL, NULL, 0, err, sizeof err));
	assert_string_equal(err, "/etc/licproxy/licproxy.yaml: cannot open: "
	    "No such file or directory");
}

static void
test_syntax_error(void **state)
{
	(void)state;
	load_fails("mode: authority\nserver:\n  port: 1\n host: x\n", NULL, 0,
	    "%:4:2: syntax error: did not find expected key while parsing a "
	    "block mapping");
	load_fails("mode: authority\nlicense:\n  server_url: [https://a\n",
	    NULL, 0, "%:4:1: syntax error: did not find expected ',' or ']' "
	    "while parsing a flow sequence");
	load_fails("mode: authority\n---\nmode: proxy\n", NULL, 0,
	    "%:3:1: only one YAML document is allowed");
}

static void
test_err_truncated(void **state)
{
	char		 small[24];
	struct conf	*cf;

	(void)state;
	load("mode: authority\nserver:\n  port: 0\n  workers: 0\n", NULL, 0);
	cf = conf_load(cpath, NULL, 0, small, sizeof small);
	assert_null(cf);
	assert_int_equal(strlen(small), sizeof small - 1);
	assert_null(conf_load(cpath, NULL, 0, NULL, 0));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_full_valid, setup),
		cmocka_unit_test_setup(test_defaults, setup),
		cmocka_unit_test_setup(test_port_range, setup),
		cmocka_unit_test_setup(test_unknown_key, setup),
		cmocka_unit_test_setup(test_wrong_type, setup),
		cmocka_unit_test_setup(test_bad_values, setup),
		cmocka_unit_test_setup(test_multiple_errors, setup),
		cmocka_unit_test_setup(test_too_many_urls, setup),
		cmocka_unit_test_setup(test_scalar_lists, setup),
		cmocka_unit_test_setup(test_miss_keys, setup),
		cmocka_unit_test_setup(test_proxy_needs_upstream, setup),
		cmocka_unit_test_setup(test_duration_parser, setup),
		cmocka_unit_test_setup(test_size_parser, setup),
		cmocka_unit_test_setup(test_overrides, setup),
		cmocka_unit_test_setup(test_overrides_bad, setup),
		cmocka_unit_test_setup(test_key_file_trimmed, setup),
		cmocka_unit_test_setup(test_key_env, setup),
		cmocka_unit_test_setup(test_key_file_problems, setup),
		cmocka_unit_test_setup(test_check_files, setup),
		cmocka_unit_test_setup(test_check_contents, setup),
		cmocka_unit_test_setup(test_check_private, setup),
		cmocka_unit_test_setup(test_missing_file, setup),
		cmocka_unit_test_setup(test_syntax_error, setup),
		cmocka_unit_test_setup(test_err_truncated, setup),
	};
	const char	*tmp = getenv("TMPDIR");
	int		 rv;
	char		 cmd[PATH_MAX + 16];

	snprintf(dir, sizeof dir, "%s/test_conf.XXXXXX", tmp ? tmp : "/tmp");
	if (mkdtemp(dir) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	if (make_pki() == -1) {
		fprintf(stderr, "test_conf: openssl could not make the keys\n");
		return 1;
	}
	rv = cmocka_run_group_tests(tests, NULL, NULL);
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
	return rv;
}
