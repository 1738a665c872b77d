/*-------------------------------------------------------------------------
 *
 * apijwt.c
 *		The client assertion of Apple's Business / School Manager API: a
 *		JWT signed with ES256 by the API account's EC P-256 private key.
 *
 * Owns: reading an API account's private key from its PEM bytes (SEC1
 * "EC PRIVATE KEY", PKCS#8 "PRIVATE KEY", and PKCS#8 bytes under the
 * "EC PRIVATE KEY" label, as Apple hands them out), refusing any other key
 * (another type or curve, an encrypted key, anything unreadable), and the
 * compact JWS of the assertion (RFC 7515, RFC 7519): header {"alg":
 * "ES256", "kid", "typ": "JWT"}, claims sub = iss = the client id, aud =
 * Apple's token endpoint, iat, exp, jti; base64url without padding; the
 * signature as JWS wants it (RFC 7518 3.4), the raw 64 bytes r || s,
 * converted from OpenSSL's DER ECDSA-Sig-Value.  Pure functions of their
 * arguments: no I/O, no tables, no clock (the caller chooses iat and exp).
 * It does not own the token request, the account's row or the sealing of
 * its key (the API account code does, through vault.c).  The SQL function
 * ade_client_assertion() exposes the assertion for tests.
 *
 * Every OpenSSL object of a call hangs from a memory context with a reset
 * callback: whether the call returns or an ERROR jumps out, they are freed
 * (and OpenSSL frees a private key's scalar cleansed).  No message quotes
 * the key or OpenSSL's reading of it: a refused key is described by its
 * type or curve name only.
 *
 * Copyright (c) 2026, the ade authors
 *
 * IDENTIFICATION
 *	  src/apijwt.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <openssl/bio.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>

#include "ade.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/memutils.h"

PG_FUNCTION_INFO_V1(ade_client_assertion);

/* the "aud" Apple wants, exactly (abm-api.md) */
#define API_AUDIENCE "https://account.apple.com/auth/oauth2/v2/token"

/* a P-256 coordinate, and so r and s of a signature, is 32 bytes */
#define P256_LEN 32

/* the OpenSSL objects of one call, freed by a memory-context reset callback */
typedef struct ApiKeyScope
{
	MemoryContext cxt;
	MemoryContextCallback cb;
	BIO		   *in;
	EVP_PKEY   *pkey;
	EVP_PKEY_CTX *check;
	EVP_MD_CTX *md;
	ECDSA_SIG  *sig;
} ApiKeyScope;

static void
scope_release(void *arg)
{
	ApiKeyScope *s = (ApiKeyScope *) arg;

	EVP_MD_CTX_free(s->md);
	ECDSA_SIG_free(s->sig);
	EVP_PKEY_CTX_free(s->check);
	EVP_PKEY_free(s->pkey);
	BIO_free(s->in);
	s->md = NULL;
	s->sig = NULL;
	s->check = NULL;
	s->pkey = NULL;
	s->in = NULL;
	ERR_clear_error();
}

static ApiKeyScope *
scope_begin(void)
{
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext, "ade api key",
											  ALLOCSET_SMALL_SIZES);
	ApiKeyScope *s = MemoryContextAllocZero(cxt, sizeof(ApiKeyScope));

	s->cxt = cxt;
	s->cb.func = scope_release;
	s->cb.arg = s;
	MemoryContextRegisterResetCallback(cxt, &s->cb);
	return s;
}

static void
scope_end(ApiKeyScope *s)
{
	MemoryContextDelete(s->cxt);
}

/* an encrypted key is refused, never prompted for */
static int
no_password(char *buf, int size, int rwflag, void *u)
{
	return -1;
}

/* the one refusal of a key; detail says why, without any of its bytes */
static void
pg_attribute_noreturn()
refuse_key(const char *detail, const char *hint)
{
	ERR_clear_error();
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("private_key is not an unencrypted PEM EC P-256 private key"),
			 errdetail_internal("%s", detail),
			 hint ? errhint("%s", hint) : 0));
}

static bool
pem_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

/*
 * The account's private key, checked: an EC key on P-256 whose public part
 * belongs to its private part.  Whitespace around the PEM text is skipped:
 * OpenSSL wants "-----BEGIN" at the start of a line.  OpenSSL itself takes
 * LF or CRLF line ends, a UTF-8 byte order mark before the first line, and
 * skips what comes before the key's block (such as the "EC PARAMETERS"
 * block of openssl ecparam -genkey).
 */
static EVP_PKEY *
read_key(ApiKeyScope *s, const char *pem, int pem_len)
{
	const char *p = pem;
	int			len = pem_len;
	char		name[64];
	size_t		namelen = 0;
	int			nid;

	if (p == NULL || len < 0)
		len = 0;
	while (len > 0 && pem_space(*p))
	{
		p++;
		len--;
	}
	while (len > 0 && pem_space(p[len - 1]))
		len--;
	if (len == 0)
		refuse_key("It is empty.", NULL);

	s->in = BIO_new_mem_buf(p, len);
	if (s->in == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory reading the private key")));
	s->pkey = PEM_read_bio_PrivateKey(s->in, NULL, no_password, NULL);
	BIO_free(s->in);
	s->in = NULL;
	ERR_clear_error();
	if (s->pkey == NULL)
		refuse_key("No private key could be read from it: it is not PEM, or it is damaged or encrypted.",
				   "Pass the bytes of the .pem file Apple Business Manager or Apple School Manager gave for the API account; "
				   "decrypt an encrypted key first, e.g. with openssl pkey -in key.pem -out plain.pem.");

	if (EVP_PKEY_get_base_id(s->pkey) != EVP_PKEY_EC)
	{
		const char *type = EVP_PKEY_get0_type_name(s->pkey);

		refuse_key(psprintf("It is a key of type %s, not EC.", type ? type : "unknown"), NULL);
	}
	if (EVP_PKEY_get_group_name(s->pkey, name, sizeof(name), &namelen) != 1)
		refuse_key("Its curve has no name (explicit parameters), not P-256.", NULL);
	nid = OBJ_sn2nid(name);
	if (nid == NID_undef)
		nid = EC_curve_nist2nid(name);
	if (nid != NID_X9_62_prime256v1)
		refuse_key(psprintf("Its curve is %s, not P-256 (prime256v1).", name), NULL);

	/* a damaged key would sign what Apple cannot verify: say so here */
	s->check = EVP_PKEY_CTX_new_from_pkey(NULL, s->pkey, NULL);
	if (s->check == NULL || EVP_PKEY_check(s->check) != 1)
		refuse_key("It fails OpenSSL's key check: its private and public parts do not belong together.", NULL);
	EVP_PKEY_CTX_free(s->check);
	s->check = NULL;
	ERR_clear_error();
	return s->pkey;
}

/*
 * ERROR unless pem (pem_len bytes, no terminating NUL needed) holds an
 * unencrypted EC P-256 private key that can sign a client assertion.
 */
void
AdeApiKeyCheck(const char *pem, int pem_len)
{
	ApiKeyScope *s = scope_begin();

	read_key(s, pem, pem_len);
	scope_end(s);
}

/* RFC 7515 2: base64url, no padding */
static void
append_b64url(StringInfo buf, const unsigned char *d, size_t len)
{
	static const char tab[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	size_t		i;

	for (i = 0; i + 2 < len; i += 3)
	{
		uint32		v = ((uint32) d[i] << 16) | ((uint32) d[i + 1] << 8) | d[i + 2];

		appendStringInfoChar(buf, tab[(v >> 18) & 63]);
		appendStringInfoChar(buf, tab[(v >> 12) & 63]);
		appendStringInfoChar(buf, tab[(v >> 6) & 63]);
		appendStringInfoChar(buf, tab[v & 63]);
	}
	if (len - i == 1)
	{
		uint32		v = (uint32) d[i] << 16;

		appendStringInfoChar(buf, tab[(v >> 18) & 63]);
		appendStringInfoChar(buf, tab[(v >> 12) & 63]);
	}
	else if (len - i == 2)
	{
		uint32		v = ((uint32) d[i] << 16) | ((uint32) d[i + 1] << 8);

		appendStringInfoChar(buf, tab[(v >> 18) & 63]);
		appendStringInfoChar(buf, tab[(v >> 12) & 63]);
		appendStringInfoChar(buf, tab[(v >> 6) & 63]);
	}
}

/* a JSON string of a server-encoded value: UTF-8, as JSON wants */
static void
append_json_string(StringInfo buf, const char *s)
{
	escape_json(buf, pg_server_to_any(s, (int) strlen(s), PG_UTF8));
}

static void
require_value(const char *value, const char *what)
{
	if (value == NULL || value[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s of a client assertion must not be empty", what)));
}

static void
pg_attribute_noreturn()
sign_fail(void)
{
	unsigned long e = ERR_get_error();
	const char *reason = e ? ERR_reason_error_string(e) : NULL;

	ERR_clear_error();
	ereport(ERROR,
			(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
			 errmsg("could not sign the client assertion"),
			 reason ? errdetail("OpenSSL: %s.", reason) : 0));
}

/*
 * ES256 (RFC 7518 3.4): ECDSA P-256 over SHA-256 of input, as the raw
 * r || s, each left-padded to 32 bytes.  OpenSSL signs in DER, with r and s
 * as minimal INTEGERs (shorter when they have leading zero bytes, a zero
 * byte longer when their top bit is set).
 */
static void
sign_es256(ApiKeyScope *s, const char *input, size_t len, unsigned char out[2 * P256_LEN])
{
	unsigned char der[128];		/* at most 72 bytes for P-256 */
	size_t		derlen = sizeof(der);
	const unsigned char *p = der;
	const BIGNUM *r;
	const BIGNUM *sv;

	s->md = EVP_MD_CTX_new();
	if (s->md == NULL ||
		EVP_DigestSignInit(s->md, NULL, EVP_sha256(), NULL, s->pkey) != 1 ||
		EVP_DigestSign(s->md, der, &derlen, (const unsigned char *) input, len) != 1)
		sign_fail();

	s->sig = d2i_ECDSA_SIG(NULL, &p, (long) derlen);
	if (s->sig == NULL || p != der + derlen)
		sign_fail();
	ECDSA_SIG_get0(s->sig, &r, &sv);
	if (BN_bn2binpad(r, out, P256_LEN) != P256_LEN ||
		BN_bn2binpad(sv, out + P256_LEN, P256_LEN) != P256_LEN)
		sign_fail();
}

/*
 * The client assertion of an API account, as a compact JWS (palloc'd in
 * the caller's memory context): signed by the private key in pem
 * (pem_len bytes), for client_id (sub and iss), key_id (kid), valid from
 * iat to exp (Unix seconds; exp after iat, less than 180 days after it),
 * jti unique per assertion.  ERROR (22023) for a key AdeApiKeyCheck()
 * refuses, an empty value, or such times.
 */
char *
AdeClientAssertion(const char *client_id, const char *key_id,
				   const char *pem, int pem_len,
				   int64 iat, int64 exp, const char *jti)
{
	ApiKeyScope *s;
	StringInfoData json;
	StringInfoData jws;
	unsigned char sig[2 * P256_LEN];

	require_value(client_id, "client_id");
	require_value(key_id, "key_id");
	require_value(jti, "jti");
	if (exp <= iat)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("exp of a client assertion must be after its iat"),
				 errdetail("iat is " INT64_FORMAT " and exp is " INT64_FORMAT ".", iat, exp)));
	/* exp > iat: their difference fits in a uint64 */
	if ((uint64) exp - (uint64) iat >= (uint64) ADE_API_ASSERTION_MAX_SECONDS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("exp of a client assertion must be less than 180 days after its iat"),
				 errdetail("Apple refuses an assertion valid for " INT64_FORMAT " seconds or more.",
						   ADE_API_ASSERTION_MAX_SECONDS)));

	initStringInfo(&jws);
	initStringInfo(&json);
	appendStringInfoString(&json, "{\"alg\":\"ES256\",\"kid\":");
	append_json_string(&json, key_id);
	appendStringInfoString(&json, ",\"typ\":\"JWT\"}");
	append_b64url(&jws, (const unsigned char *) json.data, json.len);
	appendStringInfoChar(&jws, '.');

	resetStringInfo(&json);
	appendStringInfoString(&json, "{\"sub\":");
	append_json_string(&json, client_id);
	appendStringInfoString(&json, ",\"iss\":");
	append_json_string(&json, client_id);
	appendStringInfoString(&json, ",\"aud\":\"" API_AUDIENCE "\"");
	appendStringInfo(&json, ",\"iat\":" INT64_FORMAT ",\"exp\":" INT64_FORMAT ",\"jti\":",
					 iat, exp);
	append_json_string(&json, jti);
	appendStringInfoChar(&json, '}');
	append_b64url(&jws, (const unsigned char *) json.data, json.len);
	pfree(json.data);

	/* the signing input is everything so far: header "." claims */
	s = scope_begin();
	read_key(s, pem, pem_len);
	sign_es256(s, jws.data, jws.len, sig);
	scope_end(s);

	appendStringInfoChar(&jws, '.');
	append_b64url(&jws, sig, sizeof(sig));
	return jws.data;
}

/*
 * ade_client_assertion(client_id text, key_id text, private_key bytea,
 *						iat bigint, exp bigint, jti text) returns text
 *
 * Internal, for tests: the assertion AdeClientAssertion() makes.
 */
Datum
ade_client_assertion(PG_FUNCTION_ARGS)
{
	bytea	   *key = PG_GETARG_BYTEA_PP(2);
	char	   *jws;

	jws = AdeClientAssertion(text_to_cstring(PG_GETARG_TEXT_PP(0)),
							 text_to_cstring(PG_GETARG_TEXT_PP(1)),
							 VARDATA_ANY(key), (int) VARSIZE_ANY_EXHDR(key),
							 PG_GETARG_INT64(3), PG_GETARG_INT64(4),
							 text_to_cstring(PG_GETARG_TEXT_PP(5)));
	PG_RETURN_TEXT_P(cstring_to_text(jws));
}
