/*-------------------------------------------------------------------------
 *
 * oauth.c
 *		OAuth 1.0a request signing (RFC 5849, HMAC-SHA1), as ABM's
 *		GET /session wants it.
 *
 * Owns: percent-encoding, the signature base string, the signature and the
 * Authorization header.  Pure functions of their arguments (the header
 * alone draws a timestamp and a nonce); no I/O, no tables.  The SQL function
 * ade_oauth_signature() exposes the signature so that a regression test can
 * check it against the fixture's test vector.
 *
 * ABM's /session request carries no query or body parameters, so the
 * normalized parameters are the six oauth_* ones, sorted.  The realm is not
 * signed.  The key is enc(consumer_secret) "&" enc(access_secret).
 *
 * Copyright (c) 2026, the ade authors
 *
 * IDENTIFICATION
 *	  src/oauth.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <time.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "ade.h"
#include "common/base64.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "port.h"
#include "utils/builtins.h"

PG_FUNCTION_INFO_V1(ade_oauth_signature);

/* RFC 5849 3.6: everything but ALPHA, DIGIT, '-', '.', '_', '~' is %XX */
char *
AdeOAuthEncode(const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	StringInfoData buf;
	const unsigned char *p;

	initStringInfo(&buf);
	for (p = (const unsigned char *) s; *p; p++)
	{
		if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
			(*p >= '0' && *p <= '9') ||
			*p == '-' || *p == '.' || *p == '_' || *p == '~')
			appendStringInfoChar(&buf, (char) *p);
		else
		{
			appendStringInfoChar(&buf, '%');
			appendStringInfoChar(&buf, hex[*p >> 4]);
			appendStringInfoChar(&buf, hex[*p & 0x0F]);
		}
	}
	return buf.data;
}

char *
AdeOAuthSignature(const char *method, const char *url,
				  const char *consumer_key, const char *consumer_secret,
				  const char *token, const char *token_secret,
				  int64 timestamp, const char *nonce)
{
	StringInfoData params;
	StringInfoData base;
	char	   *key;
	char	   *cs;
	char	   *ts;
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int maclen = 0;
	char	   *sig;
	int			siglen;

	/* the six oauth_* parameters, already in byte order of their names */
	initStringInfo(&params);
	appendStringInfo(&params, "oauth_consumer_key=%s", AdeOAuthEncode(consumer_key));
	appendStringInfo(&params, "&oauth_nonce=%s", AdeOAuthEncode(nonce));
	appendStringInfoString(&params, "&oauth_signature_method=HMAC-SHA1");
	appendStringInfo(&params, "&oauth_timestamp=" INT64_FORMAT, timestamp);
	appendStringInfo(&params, "&oauth_token=%s", AdeOAuthEncode(token));
	appendStringInfoString(&params, "&oauth_version=1.0");

	initStringInfo(&base);
	appendStringInfo(&base, "%s&%s&%s", method, AdeOAuthEncode(url),
					 AdeOAuthEncode(params.data));

	cs = AdeOAuthEncode(consumer_secret);
	ts = AdeOAuthEncode(token_secret);
	key = psprintf("%s&%s", cs, ts);
	/* no copy of a secret outlives the signature */
	explicit_bzero(cs, strlen(cs));
	explicit_bzero(ts, strlen(ts));

	/* one-shot HMAC: nothing is left allocated, whatever happens */
	if (HMAC(EVP_sha1(), key, (int) strlen(key),
			 (const unsigned char *) base.data, base.len, mac, &maclen) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not compute the oauth signature")));

	sig = palloc(pg_b64_enc_len(maclen) + 1);
	siglen = pg_b64_encode((const char *) mac, maclen, sig, pg_b64_enc_len(maclen));
	if (siglen < 0)
		elog(ERROR, "base64 encoding of the oauth signature failed");
	sig[siglen] = '\0';

	explicit_bzero(key, strlen(key));
	explicit_bzero(mac, sizeof(mac));
	return sig;
}

/*
 * The Authorization header value for a signed request, with a fresh
 * timestamp and nonce.
 */
char *
AdeOAuthHeader(const char *method, const char *url,
			   const char *consumer_key, const char *consumer_secret,
			   const char *token, const char *token_secret)
{
	uint8		raw[16];
	char		nonce[33];
	int64		ts = (int64) time(NULL);
	char	   *sig;
	int			i;

	if (!pg_strong_random(raw, sizeof(raw)))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate an oauth nonce")));
	for (i = 0; i < (int) sizeof(raw); i++)
		snprintf(nonce + 2 * i, 3, "%02x", raw[i]);

	sig = AdeOAuthSignature(method, url, consumer_key, consumer_secret,
							token, token_secret, ts, nonce);

	return psprintf("OAuth realm=\"ADM\", oauth_consumer_key=\"%s\", oauth_token=\"%s\", "
					"oauth_signature_method=\"HMAC-SHA1\", oauth_timestamp=\"" INT64_FORMAT "\", "
					"oauth_nonce=\"%s\", oauth_version=\"1.0\", oauth_signature=\"%s\"",
					AdeOAuthEncode(consumer_key), AdeOAuthEncode(token), ts, nonce,
					AdeOAuthEncode(sig));
}

/*
 * ade_oauth_signature(method, url, consumer_key, consumer_secret, token,
 *					   token_secret, timestamp, nonce) returns text
 */
Datum
ade_oauth_signature(PG_FUNCTION_ARGS)
{
	char	   *sig;

	sig = AdeOAuthSignature(text_to_cstring(PG_GETARG_TEXT_PP(0)),
							text_to_cstring(PG_GETARG_TEXT_PP(1)),
							text_to_cstring(PG_GETARG_TEXT_PP(2)),
							text_to_cstring(PG_GETARG_TEXT_PP(3)),
							text_to_cstring(PG_GETARG_TEXT_PP(4)),
							text_to_cstring(PG_GETARG_TEXT_PP(5)),
							PG_GETARG_INT64(6),
							text_to_cstring(PG_GETARG_TEXT_PP(7)));
	PG_RETURN_TEXT_P(cstring_to_text(sig));
}
