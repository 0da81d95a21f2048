/*
 * token.c - license keys, key ids and Ed25519-signed lease tokens (SPEC 2).
 *
 * A token is B64(payload) "." B64(signature); the payload is a msgpack map
 * that we pack in a fixed order but accept in any order. Tokens arrive from
 * the network, so the decoder never trusts a length it has not checked
 * against the bytes actually present.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <msgpack.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include "file.h"
#include "log.h"
#include "mpcheck.h"
#include "token.h"

#define TOKEN_SIG_LEN		64
#define TOKEN_NFIELDS		9
/* Largest payload a TOKEN_MAX token can carry, with room to spare. */
#define TOKEN_PAYLOAD_MAX	(TOKEN_MAX / 4 * 3)

static const char b64url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
static const char hexdigits[] = "0123456789abcdef";

/* ASCII only: isalnum() would follow the locale. */
static int
is_alnum(int c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	    (c >= '0' && c <= '9');
}

int
token_key_valid(const char *s, size_t len)
{
	size_t i;

	if (s == NULL || len != TOKEN_KEY_LEN)
		return 0;
	for (i = 0; i < len; i++)
		if (!is_alnum((unsigned char)s[i]))
			return 0;
	return 1;
}

int
token_instance_valid(const char *s, size_t len)
{
	size_t i;

	if (s == NULL || len == 0 || len > TOKEN_INSTANCE_MAX)
		return 0;
	for (i = 0; i < len; i++)
		if (!is_alnum((unsigned char)s[i]) && s[i] != '.' &&
		    s[i] != '_' && s[i] != '-')
			return 0;
	return 1;
}

void
token_key_hash(const char *key, size_t len, unsigned char sha[32])
{
	/* Only fails if libcrypto itself is broken; no key id is safe then. */
	if (EVP_Digest(key, len, sha, NULL, EVP_sha256(), NULL) != 1)
		fatalx("token_key_hash: SHA-256 failed");
}

void
token_hex(const unsigned char *in, size_t n, char *out)
{
	size_t i;

	for (i = 0; i < n; i++) {
		out[2 * i] = hexdigits[in[i] >> 4];
		out[2 * i + 1] = hexdigits[in[i] & 0x0f];
	}
	out[2 * n] = '\0';
}

void
token_kid_from_hash(const unsigned char sha[32], char kid[TOKEN_KID_LEN + 1])
{
	token_hex(sha, TOKEN_KID_LEN / 2, kid);
}

int
token_key_generate(char key[TOKEN_KEY_LEN + 1])
{
	static const char alnum[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
	unsigned char buf[64];
	size_t n = 0, i;

	while (n < TOKEN_KEY_LEN) {
		if (RAND_bytes(buf, sizeof(buf)) != 1)
			return -1;
		/* 248 = 4 * 62: dropping bytes above it avoids modulo bias. */
		for (i = 0; i < sizeof(buf) && n < TOKEN_KEY_LEN; i++)
			if (buf[i] < 248)
				key[n++] = alnum[buf[i] % 62];
	}
	key[n] = '\0';
	OPENSSL_cleanse(buf, sizeof(buf));
	return 0;
}

const char *
role_name(enum lease_role r)
{
	switch (r) {
	case ROLE_MEMBER:
		return "member";
	case ROLE_PROXY:
		return "proxy";
	}
	return "unknown";
}

int
role_parse(const char *s, enum lease_role *r)
{
	if (s == NULL)
		return -1;
	if (strcmp(s, "member") == 0)
		*r = ROLE_MEMBER;
	else if (strcmp(s, "proxy") == 0)
		*r = ROLE_PROXY;
	else
		return -1;
	return 0;
}

/*
 * Hand-written: EVP_EncodeBlock/DecodeBlock speak padded standard base64 and
 * the decoder skips whitespace, which would make tokens malleable.
 */
int
b64url_encode(const unsigned char *in, size_t len, char *out, size_t outsz)
{
	size_t olen, i, o = 0;
	uint32_t v;

	if (len > (size_t)INT_MAX / 4 * 3 - 3)
		return -1;
	olen = len / 3 * 4 + (len % 3 == 0 ? 0 : len % 3 + 1);
	if (outsz <= olen)
		return -1;
	for (i = 0; i + 2 < len; i += 3) {
		v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 |
		    in[i + 2];
		out[o++] = b64url_alphabet[v >> 18 & 63];
		out[o++] = b64url_alphabet[v >> 12 & 63];
		out[o++] = b64url_alphabet[v >> 6 & 63];
		out[o++] = b64url_alphabet[v & 63];
	}
	if (len - i > 0) {
		v = (uint32_t)in[i] << 16;
		if (len - i == 2)
			v |= (uint32_t)in[i + 1] << 8;
		out[o++] = b64url_alphabet[v >> 18 & 63];
		out[o++] = b64url_alphabet[v >> 12 & 63];
		if (len - i == 2)
			out[o++] = b64url_alphabet[v >> 6 & 63];
	}
	out[o] = '\0';
	return (int)o;
}

static int
b64url_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-')
		return 62;
	if (c == '_')
		return 63;
	return -1;
}

/*
 * Strict: no padding, no whitespace, and the unused low bits of the last
 * character must be zero, so each byte string has exactly one encoding.
 */
int
b64url_decode(const char *in, size_t len, unsigned char *out, size_t outsz)
{
	size_t olen, i, o = 0;
	uint32_t acc = 0;
	int d, bits = 0;

	if (len % 4 == 1 || len > (size_t)INT_MAX)
		return -1;
	olen = len / 4 * 3 + (len % 4 == 0 ? 0 : len % 4 - 1);
	if (olen > outsz)
		return -1;
	for (i = 0; i < len; i++) {
		if ((d = b64url_value((unsigned char)in[i])) == -1)
			return -1;
		acc = (acc << 6 | (uint32_t)d) & 0xffffff;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (unsigned char)(acc >> bits);
		}
	}
	if ((acc & ((1u << bits) - 1)) != 0)
		return -1;
	return (int)o;
}

/* True if s is a NUL-terminated string of 1..max-1 chars accepted by ok(). */
static int
str_ok(const char *s, size_t max, int (*ok)(int))
{
	size_t n, i;

	n = strnlen(s, max);
	if (n == 0 || n == max)
		return 0;
	for (i = 0; i < n; i++)
		if (!ok((unsigned char)s[i]))
			return 0;
	return 1;
}

static int
is_lowerhex(int c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

static int
is_product(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
}

/* Printable ASCII without space: these strings end up in logs and JSON. */
static int
is_graph(int c)
{
	return c > 0x20 && c < 0x7f;
}

/* The schema of SPEC 2, applied both before signing and after decoding. */
static int
lease_check(const struct lease *l)
{
	int i;

	if (strnlen(l->kid, sizeof(l->kid)) != TOKEN_KID_LEN ||
	    !str_ok(l->kid, sizeof(l->kid), is_lowerhex))
		return -1;
	if (!str_ok(l->status, sizeof(l->status), is_graph) ||
	    !str_ok(l->iss, sizeof(l->iss), is_graph))
		return -1;
	if (l->n_products < 0 || l->n_products > TOKEN_MAX_PRODUCTS)
		return -1;
	for (i = 0; i < l->n_products; i++)
		if (!str_ok(l->products[i], sizeof(l->products[i]),
		    is_product))
			return -1;
	if (l->role != ROLE_MEMBER && l->role != ROLE_PROXY)
		return -1;
	if (l->iat < 0 || l->iat > l->rat || l->rat > l->exp)
		return -1;
	return 0;
}

static int
pack_str(msgpack_packer *pk, const char *s)
{
	size_t n = strlen(s);

	if (msgpack_pack_str(pk, n) != 0 ||
	    msgpack_pack_str_body(pk, s, n) != 0)
		return -1;
	return 0;
}

/* Field order is part of the format: SPEC 2 lists it, we pack it so. */
static int
lease_pack(const struct lease *l, msgpack_sbuffer *sb)
{
	msgpack_packer pk;
	int i, rc = 0;

	msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
	rc |= msgpack_pack_map(&pk, TOKEN_NFIELDS);
	rc |= pack_str(&pk, "v") | msgpack_pack_int64(&pk, 1);
	rc |= pack_str(&pk, "kid") | pack_str(&pk, l->kid);
	rc |= pack_str(&pk, "sta") | pack_str(&pk, l->status);
	rc |= pack_str(&pk, "prd") | msgpack_pack_array(&pk, l->n_products);
	for (i = 0; i < l->n_products; i++)
		rc |= pack_str(&pk, l->products[i]);
	rc |= pack_str(&pk, "rol") | pack_str(&pk, role_name(l->role));
	rc |= pack_str(&pk, "iat") | msgpack_pack_int64(&pk, l->iat);
	rc |= pack_str(&pk, "rat") | msgpack_pack_int64(&pk, l->rat);
	rc |= pack_str(&pk, "exp") | msgpack_pack_int64(&pk, l->exp);
	rc |= pack_str(&pk, "iss") | pack_str(&pk, l->iss);
	return rc == 0 ? 0 : -1;
}

static int
is_ed25519(EVP_PKEY *k)
{
	return k != NULL && EVP_PKEY_is_a(k, "ED25519");
}

int
token_sign(const struct lease *l, EVP_PKEY *priv, char *tok, size_t toksz)
{
	msgpack_sbuffer	 sb;
	EVP_MD_CTX	*ctx = NULL;
	unsigned char	 sig[TOKEN_SIG_LEN];
	size_t		 siglen = sizeof(sig), lim;
	int		 n, m, ret = -1;

	msgpack_sbuffer_init(&sb);
	if (lease_check(l) == -1 || !is_ed25519(priv) || toksz < 2)
		goto fail;
	if (lease_pack(l, &sb) == -1)
		goto fail;
	if ((ctx = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestSignInit(ctx, NULL, NULL, NULL, priv) != 1 ||
	    EVP_DigestSign(ctx, sig, &siglen, (unsigned char *)sb.data,
	    sb.size) != 1 || siglen != TOKEN_SIG_LEN)
		goto fail;
	/* What we emit must also be what we accept. */
	lim = toksz < TOKEN_MAX + 1 ? toksz : TOKEN_MAX + 1;
	if ((n = b64url_encode((unsigned char *)sb.data, sb.size, tok,
	    lim - 1)) == -1)
		goto fail;
	tok[n] = '.';
	if ((m = b64url_encode(sig, siglen, tok + n + 1, lim - n - 1)) == -1)
		goto fail;
	ret = 0;
 fail:
	if (ret == -1) {
		if (toksz > 0)
			tok[0] = '\0';
		ERR_clear_error();
	}
	EVP_MD_CTX_free(ctx);
	msgpack_sbuffer_destroy(&sb);
	return ret;
}

/* Copies a msgpack str into dst, refusing what would not fit or hides a NUL. */
static int
obj_str(const msgpack_object *o, char *dst, size_t dstsz)
{
	if (o->type != MSGPACK_OBJECT_STR || o->via.str.size >= dstsz ||
	    memchr(o->via.str.ptr, '\0', o->via.str.size) != NULL)
		return -1;
	memcpy(dst, o->via.str.ptr, o->via.str.size);
	dst[o->via.str.size] = '\0';
	return 0;
}

static int
obj_time(const msgpack_object *o, int64_t *v)
{
	/* Negative numbers unpack as NEGATIVE_INTEGER and are refused here. */
	if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
	    o->via.u64 > INT64_MAX)
		return -1;
	*v = (int64_t)o->via.u64;
	return 0;
}

static int
f_v(const msgpack_object *o, struct lease *l)
{
	(void)l;
	return o->type == MSGPACK_OBJECT_POSITIVE_INTEGER &&
	    o->via.u64 == 1 ? 0 : -1;
}

static int
f_kid(const msgpack_object *o, struct lease *l)
{
	return obj_str(o, l->kid, sizeof(l->kid));
}

static int
f_sta(const msgpack_object *o, struct lease *l)
{
	return obj_str(o, l->status, sizeof(l->status));
}

static int
f_prd(const msgpack_object *o, struct lease *l)
{
	uint32_t i;

	if (o->type != MSGPACK_OBJECT_ARRAY ||
	    o->via.array.size > TOKEN_MAX_PRODUCTS)
		return -1;
	for (i = 0; i < o->via.array.size; i++)
		if (obj_str(&o->via.array.ptr[i], l->products[i],
		    sizeof(l->products[i])) == -1)
			return -1;
	l->n_products = (int)o->via.array.size;
	return 0;
}

static int
f_rol(const msgpack_object *o, struct lease *l)
{
	char s[8];

	if (obj_str(o, s, sizeof(s)) == -1)
		return -1;
	return role_parse(s, &l->role);
}

static int
f_iat(const msgpack_object *o, struct lease *l)
{
	return obj_time(o, &l->iat);
}

static int
f_rat(const msgpack_object *o, struct lease *l)
{
	return obj_time(o, &l->rat);
}

static int
f_exp(const msgpack_object *o, struct lease *l)
{
	return obj_time(o, &l->exp);
}

static int
f_iss(const msgpack_object *o, struct lease *l)
{
	return obj_str(o, l->iss, sizeof(l->iss));
}

static const struct field {
	const char	*name;
	int		(*parse)(const msgpack_object *, struct lease *);
} fields[TOKEN_NFIELDS] = {
	{ "v", f_v }, { "kid", f_kid }, { "sta", f_sta }, { "prd", f_prd },
	{ "rol", f_rol }, { "iat", f_iat }, { "rat", f_rat }, { "exp", f_exp },
	{ "iss", f_iss },
};

static int
field_index(const msgpack_object *k)
{
	int i;

	if (k->type != MSGPACK_OBJECT_STR)
		return -1;
	for (i = 0; i < TOKEN_NFIELDS; i++)
		if (strlen(fields[i].name) == k->via.str.size &&
		    memcmp(fields[i].name, k->via.str.ptr,
		    k->via.str.size) == 0)
			return i;
	return -1;
}

/* Exactly the nine known keys, each once, in any order. */
static int
lease_from_map(const msgpack_object *o, struct lease *l)
{
	const msgpack_object_kv	*kv;
	unsigned int		 seen = 0;
	uint32_t		 i;
	int			 f;

	if (o->type != MSGPACK_OBJECT_MAP || o->via.map.size != TOKEN_NFIELDS)
		return -1;
	for (i = 0; i < o->via.map.size; i++) {
		kv = &o->via.map.ptr[i];
		if ((f = field_index(&kv->key)) == -1 || (seen & 1u << f))
			return -1;
		seen |= 1u << f;
		if (fields[f].parse(&kv->val, l) == -1)
			return -1;
	}
	return lease_check(l);
}

static int
payload_decode(const unsigned char *p, size_t len, struct lease *out)
{
	msgpack_unpacked	 up;
	struct lease		 l;
	size_t			 off = 0;
	int			 ret = -1;

	msgpack_unpacked_init(&up);
	memset(&l, 0, sizeof(l));
	/* msgpack-c allocates what headers claim: prove they fit first. */
	if (len > INT32_MAX || mpcheck(p, len) != (int)len)
		goto fail;
	if (msgpack_unpack_next(&up, (const char *)p, len, &off) !=
	    MSGPACK_UNPACK_SUCCESS || off != len)
		goto fail;
	if (lease_from_map(&up.data, &l) == -1)
		goto fail;
	*out = l;
	ret = 0;
 fail:
	msgpack_unpacked_destroy(&up);
	return ret;
}

/* Splits and decodes both halves; the signature must be exactly 64 bytes. */
static int
token_split(const char *tok, size_t len, unsigned char *payload,
    size_t *plen, unsigned char sig[TOKEN_SIG_LEN])
{
	const char	*dot;
	int		 n;

	if (tok == NULL || len == 0 || len > TOKEN_MAX ||
	    (dot = memchr(tok, '.', len)) == NULL)
		return -1;
	n = b64url_decode(tok, dot - tok, payload, TOKEN_PAYLOAD_MAX);
	if (n <= 0)
		return -1;
	*plen = n;
	if (b64url_decode(dot + 1, len - (dot - tok) - 1, sig,
	    TOKEN_SIG_LEN) != TOKEN_SIG_LEN)
		return -1;
	return 0;
}

static int
sig_verify(EVP_PKEY *key, const unsigned char *p, size_t plen,
    const unsigned char sig[TOKEN_SIG_LEN])
{
	EVP_MD_CTX	*ctx;
	int		 ok = 0;

	if (!is_ed25519(key) || (ctx = EVP_MD_CTX_new()) == NULL)
		return 0;
	if (EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, key) == 1 &&
	    EVP_DigestVerify(ctx, sig, TOKEN_SIG_LEN, p, plen) == 1)
		ok = 1;
	else
		ERR_clear_error();	/* stale ones mislead SSL_get_error() */
	EVP_MD_CTX_free(ctx);
	return ok;
}

int
token_verify(const char *tok, size_t len, EVP_PKEY **keys, int n,
    struct lease *l)
{
	unsigned char	 payload[TOKEN_PAYLOAD_MAX], sig[TOKEN_SIG_LEN];
	size_t		 plen;
	int		 i;

	if (token_split(tok, len, payload, &plen, sig) == -1)
		return -1;
	/* Signature first: only an authority's bytes reach the decoder. */
	for (i = 0; i < n; i++)
		if (sig_verify(keys[i], payload, plen, sig))
			return payload_decode(payload, plen, l);
	return -1;
}

int
token_decode(const char *tok, size_t len, struct lease *l)
{
	unsigned char	 payload[TOKEN_PAYLOAD_MAX], sig[TOKEN_SIG_LEN];
	size_t		 plen;

	if (token_split(tok, len, payload, &plen, sig) == -1)
		return -1;
	return payload_decode(payload, plen, l);
}

/*
 * Creates path with exactly mode (umask aside) and writes one PEM into it.
 * Never over an existing file, nor through a symlink: the path may be an
 * authority's live signing key, and a lost one cannot be made again.
 */
static int
pem_write(const char *path, mode_t mode, EVP_PKEY *key, int private)
{
	FILE	*fp = NULL;
	int	 fd, ok, ret = -1;

	if ((fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW |
	    O_CLOEXEC, mode)) == -1) {
		if (errno == EEXIST)
			log_warnx("%s exists; remove it first", path);
		else
			log_warn("%s", path);
		return -1;
	}
	if (fchmod(fd, mode) == -1 || (fp = fdopen(fd, "w")) == NULL) {
		log_warn("%s", path);
		close(fd);
		goto fail;
	}
	ok = private ? PEM_write_PrivateKey(fp, key, NULL, NULL, 0, NULL,
	    NULL) : PEM_write_PUBKEY(fp, key);
	if (fclose(fp) != 0 || !ok) {
		log_warnx("%s: cannot write key", path);
		goto fail;
	}
	ret = 0;
 fail:
	if (ret == -1)
		unlink(path);
	return ret;
}

int
token_keygen(const char *path)
{
	EVP_PKEY	*key = NULL;
	char		 pub[PATH_MAX];
	int		 n, ret = -1;

	n = snprintf(pub, sizeof(pub), "%s.pub", path);
	if (n < 0 || (size_t)n >= sizeof(pub)) {
		log_warnx("%s: path too long", path);
		return -1;
	}
	if ((key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519")) == NULL) {
		log_warnx("%s: Ed25519 key generation failed", path);
		return -1;
	}
	if (pem_write(path, 0600, key, 1) == -1)
		goto fail;
	if (pem_write(pub, 0644, key, 0) == -1) {
		unlink(path);
		goto fail;
	}
	ret = 0;
 fail:
	EVP_PKEY_free(key);
	return ret;
}

/* A daemon has no terminal to ask: encrypted keys are simply refused. */
static int
no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)u;
	return -1;
}

static EVP_PKEY *
pem_load(const char *path, int private)
{
	FILE		*fp;
	EVP_PKEY	*key;
	struct stat	 st;
	int		 fd;

	if ((fd = file_open(path, &st)) == -1) {
		log_warn("%s", path);
		return NULL;
	}
	if (!S_ISREG(st.st_mode) || (fp = fdopen(fd, "r")) == NULL) {
		log_warnx("%s: not a regular file", path);
		close(fd);
		return NULL;
	}
	key = private ? PEM_read_PrivateKey(fp, NULL, no_passphrase, NULL) :
	    PEM_read_PUBKEY(fp, NULL, no_passphrase, NULL);
	fclose(fp);
	ERR_clear_error();
	if (key == NULL) {
		log_warnx("%s: no PEM %s key", path,
		    private ? "private" : "public");
		return NULL;
	}
	if (!is_ed25519(key)) {
		log_warnx("%s: not an Ed25519 key", path);
		EVP_PKEY_free(key);
		return NULL;
	}
	return key;
}

EVP_PKEY *
token_load_private(const char *path)
{
	return pem_load(path, 1);
}

EVP_PKEY *
token_load_public(const char *path)
{
	return pem_load(path, 0);
}

int
token_authority_id(EVP_PKEY *key, char id[TOKEN_KID_LEN + 1])
{
	unsigned char	 raw[32], sha[32];
	size_t		 len = sizeof(raw);

	if (!is_ed25519(key) ||
	    EVP_PKEY_get_raw_public_key(key, raw, &len) != 1 ||
	    len != sizeof(raw))
		return -1;
	if (EVP_Digest(raw, len, sha, NULL, EVP_sha256(), NULL) != 1)
		return -1;
	token_hex(sha, 8, id);
	return 0;
}
