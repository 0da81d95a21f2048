/* token.h - license keys, key ids and Ed25519-signed lease tokens (SPEC 2). */
#ifndef TOKEN_H
#define TOKEN_H

#include <stddef.h>
#include <stdint.h>
#include <openssl/evp.h>

#define TOKEN_KEY_LEN		40
#define TOKEN_KID_LEN		16	/* hex chars */
#define TOKEN_MAX_PRODUCTS	16
#define TOKEN_PRODUCT_MAX	32
/* product and metric names: 1-TOKEN_PRODUCT_MAX of these */
#define TOKEN_NAME_CHARS	"abcdefghijklmnopqrstuvwxyz0123456789_"
#define TOKEN_ISS_MAX		64
#define TOKEN_INSTANCE_MAX	64	/* X-Instance-Id: a seat's or a proxy's name */
#define TOKEN_XSTR(x)		TOKEN_STR(x)
#define TOKEN_STR(x)		#x
/* The rule of token_instance_valid, in words, for error messages. */
#define TOKEN_INSTANCE_FORM	"1-" TOKEN_XSTR(TOKEN_INSTANCE_MAX) \
				" of [A-Za-z0-9._-]"
#define TOKEN_MAX		2048	/* longest token we produce or accept */

enum lease_role { ROLE_MEMBER = 0, ROLE_PROXY = 1 };

struct lease {
	char		 kid[TOKEN_KID_LEN + 1];
	char		 status[16];		/* "active" */
	char		 products[TOKEN_MAX_PRODUCTS][TOKEN_PRODUCT_MAX + 1];
	int		 n_products;
	enum lease_role	 role;
	int64_t		 iat, rat, exp;
	char		 iss[TOKEN_ISS_MAX + 1];
};

/* 1 if s is exactly 40 of [A-Za-z0-9]. */
int	 token_key_valid(const char *s, size_t len);
/* An instance name (X-Instance-Id, --instance): TOKEN_INSTANCE_FORM. */
int	 token_instance_valid(const char *s, size_t len);
/* sha256 of the key; kid = first 16 lowercase hex chars of it. */
void	 token_key_hash(const char *key, size_t len, unsigned char sha[32]);
void	 token_kid_from_hash(const unsigned char sha[32],
	    char kid[TOKEN_KID_LEN + 1]);
/* n bytes as 2n lowercase hex digits + NUL: the one hex encoder. */
void	 token_hex(const unsigned char *in, size_t n, char *out);
/* 40 random [A-Za-z0-9] chars + NUL. */
int	 token_key_generate(char key[TOKEN_KEY_LEN + 1]);

const char *role_name(enum lease_role);
int	 role_parse(const char *, enum lease_role *);

/* base64url without padding. Return output length, or -1. */
int	 b64url_encode(const unsigned char *in, size_t len, char *out,
	    size_t outsz);
int	 b64url_decode(const char *in, size_t len, unsigned char *out,
	    size_t outsz);

/* Sign l with an Ed25519 private key into tok (NUL-terminated). */
int	 token_sign(const struct lease *l, EVP_PKEY *priv, char *tok,
	    size_t toksz);
/*
 * Verify tok against any of keys[0..n-1] and decode it into l.
 * Returns 0 when a key verifies and the payload matches the schema
 * (v == 1, all fields present and typed), -1 otherwise.
 */
int	 token_verify(const char *tok, size_t len, EVP_PKEY **keys, int n,
	    struct lease *l);
/* Decode without verifying (a token already verified before storing). */
int	 token_decode(const char *tok, size_t len, struct lease *l);

/* Ed25519 key files (PEM). */
int	 token_keygen(const char *path);	/* path 0600 + path.pub 0644 */
EVP_PKEY *token_load_private(const char *path);
EVP_PKEY *token_load_public(const char *path);
/* Authority id: first 16 hex of sha256 of the raw public key. */
int	 token_authority_id(EVP_PKEY *key, char id[TOKEN_KID_LEN + 1]);

#endif
