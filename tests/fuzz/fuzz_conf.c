/*
 * fuzz_conf.c - libFuzzer target for the YAML configuration loader
 * (common/conf.c on libyaml). The input is the file, handed to conf_load
 * through a memfd so every path of the real loader runs.
 *
 * Besides memory safety it checks: a refused file always says why, one
 * "FILE:LINE:COL: message" or "FILE: message" per line within the error
 * buffer; an accepted one has its bounds (workers, ports, URLs, trusted
 * keys, exemptions) in range. The duration and size parsers the CLI shares
 * run on the raw bytes too.
 */
#include <sys/mman.h>

#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

#include "conf.h"
#include "fuzz.h"

/* The corpus's proxy configurations name this key file. */
#define KEY_FILE	"/tmp/licproxy-fuzz-conf.key"
#define KEY		"AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcd\n"

static void
put_key_file(void)
{
	int fd;

	unlink(KEY_FILE);
	CHECK((fd = open(KEY_FILE, O_WRONLY | O_CREAT | O_EXCL, 0600)) != -1);
	CHECK(write(fd, KEY, strlen(KEY)) == (ssize_t)strlen(KEY));
	close(fd);
}

static void
check_conf(const struct conf *cf)
{
	CHECK(cf->mode == CONF_PROXY || cf->mode == CONF_AUTHORITY);
	CHECK(cf->server.workers >= 1 &&
	    cf->server.workers <= CONF_MAX_WORKERS);
	CHECK(cf->server.port >= 0 && cf->server.port <= 65535);
	CHECK(cf->server.status_port >= 0 && cf->server.status_port <= 65535);
	CHECK(cf->license.n_server_url >= 0 &&
	    cf->license.n_server_url <= CONF_MAX_URLS);
	CHECK(cf->license.n_trusted_keys >= 0 &&
	    cf->license.n_trusted_keys <= CONF_MAX_TRUSTED);
	CHECK(cf->license.n_miss_exempt >= 0 &&
	    cf->license.n_miss_exempt <= CONF_MAX_EXEMPT);
	CHECK(cf->store.path != NULL && cf->store.path[0] != '\0');
	if (cf->mode == CONF_PROXY)
		CHECK(strlen(cf->license.key) == CONF_KEY_LEN);
}

static void
check_scalars(const uint8_t *data, size_t size)
{
	char		s[64];
	int64_t		ms;
	uint64_t	bytes;

	if (size >= sizeof(s))
		return;
	memcpy(s, data, size);
	s[size] = '\0';
	if (conf_parse_duration_ms(s, &ms) == 0)
		CHECK(ms >= 0);
	(void)conf_parse_size(s, &bytes);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int	 fd = -1;
	static char	 path[64];
	struct conf	*cf;
	char		 err[4096];

	(void)fuzz_key();
	if (fd == -1) {
		CHECK((fd = memfd_create("licproxy.yaml", 0)) != -1);
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		unsetenv("LICPROXY_LICENSE_KEY");
		put_key_file();
	}
	CHECK(ftruncate(fd, 0) == 0);
	CHECK(pwrite(fd, data, size, 0) == (ssize_t)size);
	check_scalars(data, size);
	cf = conf_load(path, NULL, 0, err, sizeof(err));
	if (cf == NULL) {
		CHECK(err[0] != '\0' && strnlen(err, sizeof(err)) < sizeof(err));
		CHECK(strncmp(err, path, strlen(path)) == 0);
		return 0;
	}
	check_conf(cf);
	conf_free(cf);
	return 0;
}
