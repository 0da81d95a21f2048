/*
 * tls.c - server TLS context. Built in the master (before privileges are
 * dropped, so the key file may stay root-only) and inherited by workers.
 */
#include <string.h>

#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#include "conf.h"
#include "tls.h"

/* 16 name + 32 HMAC + 32 AES, OpenSSL's layout for SSL_CTRL_SET_TLSEXT_TICKET_KEYS */
static unsigned char	tls_ticket_keys[80];
static int		tls_ticket_ready;

int
tls_init(void)
{
	if (RAND_bytes(tls_ticket_keys, sizeof(tls_ticket_keys)) != 1)
		return -1;
	tls_ticket_ready = 1;
	return 0;
}

/* "KEY: PATH: what: OpenSSL's reason", KEY the configuration key's name. */
static void
tls_err(char *err, size_t errlen, const char *key, const char *what,
    const char *path)
{
	unsigned long	e = ERR_get_error();
	char		buf[256];

	ERR_error_string_n(e, buf, sizeof(buf));
	snprintf(err, errlen, "%s: %s: %s: %s", key, path, what,
	    e ? buf : "failed");
	ERR_clear_error();
}

static int
tls_client_ca(SSL_CTX *ctx, const char *ca, char *err, size_t errlen)
{
	STACK_OF(X509_NAME) *names;

	if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1) {
		tls_err(err, errlen, "server.client_ca", "cannot load client CA",
		    ca);
		return -1;
	}
	if ((names = SSL_load_client_CA_file(ca)) != NULL)
		SSL_CTX_set_client_CA_list(ctx, names);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER |
	    SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	return 0;
}

SSL_CTX *
tls_server_ctx_new(const struct conf *cf, char *err, size_t errlen)
{
	SSL_CTX *ctx;

	if ((ctx = SSL_CTX_new(TLS_server_method())) == NULL) {
		tls_err(err, errlen, "server", "SSL_CTX_new", "tls");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	/*
	 * A client may half-close TCP after its request (no close_notify):
	 * treat that as an orderly end of its input, so the answer can still
	 * be written, instead of a fatal "unexpected EOF".
	 */
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION |
	    SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_IGNORE_UNEXPECTED_EOF);
	/* TLS 1.2: forward-secret AEAD suites only. */
	SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20");
	/*
	 * RELEASE_BUFFERS: an idle keep-alive connection holds no 34 KiB of
	 * record buffers (measured: keeping them saves ~1,300 instructions
	 * per request, 4 %, not worth that memory). ACCEPT_MOVING_WRITE_BUFFER:
	 * a worker's SSL_write that would block is retried from its output
	 * queue, whose bytes may have moved (worker/conn_out.c).
	 */
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS |
	    SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	/*
	 * One read(2) takes every record the kernel holds, not a header and
	 * then a body: the worker reads until SSL_has_pending says OpenSSL
	 * holds nothing more, so a pipelined request is never left inside.
	 */
	SSL_CTX_set_read_ahead(ctx, 1);
	if (SSL_CTX_use_certificate_chain_file(ctx, cf->server.tls_cert) != 1) {
		tls_err(err, errlen, "server.tls_cert", "cannot load certificate",
		    cf->server.tls_cert);
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, cf->server.tls_key,
	    SSL_FILETYPE_PEM) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
		tls_err(err, errlen, "server.tls_key", "cannot load private key",
		    cf->server.tls_key);
		goto fail;
	}
	if (cf->server.client_ca != NULL && cf->server.client_ca[0] != '\0' &&
	    tls_client_ca(ctx, cf->server.client_ca, err, errlen) == -1)
		goto fail;
	if (tls_ticket_ready)
		SSL_CTX_set_tlsext_ticket_keys(ctx, tls_ticket_keys,
		    sizeof(tls_ticket_keys));
	/*
	 * TLS 1.3: one ticket per connection, not OpenSSL's two; a client
	 * gets a fresh one on each connection, resumed ones too, and the
	 * second cost 170,000 instructions (6 %) of every full handshake.
	 */
	SSL_CTX_set_num_tickets(ctx, 1);
	SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"licproxy",
	    8);
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}
