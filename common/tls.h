/* tls.h - the server-side TLS context, made in the master before forking. */
#ifndef TLS_H
#define TLS_H

#include <stddef.h>
#include <openssl/ssl.h>

struct conf;

/*
 * Certificate chain, key, TLS 1.2 minimum, ECDHE suites, optional client
 * certificates. Session-ticket keys are made once per master (tls_init) and
 * set on every context, so resumption works across workers and reloads.
 */
int	 tls_init(void);
SSL_CTX	*tls_server_ctx_new(const struct conf *, char *err, size_t errlen);

#endif
