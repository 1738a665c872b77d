/*-------------------------------------------------------------------------
 *
 * token.c
 *		The MDM server key pair and the ABM server token envelope (OpenSSL),
 *		and the SQL functions that use them: ade_public_key(),
 *		ade_import_key(), ade_add_token(), and the backups an admin takes
 *		before uninstalling, ade_export_key() and ade_export_tokens().
 *
 * Owns: generating the RSA-2048 key pair and its self-signed certificate,
 * importing a key pair, decrypting the .p7m that ABM hands out (S/MIME, CMS
 * EnvelopedData, RSA key transport, AES content) into its five fields, and
 * storing a token (ade_keypair, abm_tokens, ade_token_secrets via SPI);
 * and the way back: the key pair as one PEM file that ade_import_key()
 * takes, each stored token as the .p7m ABM would hand out for this key pair
 * (CMS EnvelopedData to our certificate, S/MIME), which ade_add_token()
 * takes, after a reinstall with the key pair imported back.
 *
 * Every OpenSSL object of a call is held in a TokenScope that hangs from a
 * memory context with a reset callback: whether the call returns or an ERROR
 * jumps out, the objects are freed.  Errors never quote the token's content.
 *
 * Copyright (c) 2026, the ade authors
 *
 * IDENTIFICATION
 *	  src/token.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <openssl/bio.h>
#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "ade.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(ade_public_key);
PG_FUNCTION_INFO_V1(ade_import_key);
PG_FUNCTION_INFO_V1(ade_import_key_bytea);
PG_FUNCTION_INFO_V1(ade_add_token);
PG_FUNCTION_INFO_V1(ade_is_der_certificate);
PG_FUNCTION_INFO_V1(ade_export_key);
PG_FUNCTION_INFO_V1(ade_export_tokens);

/* the OpenSSL objects of one call, freed by a memory-context reset callback */
typedef struct TokenScope
{
	MemoryContext cxt;
	MemoryContextCallback cb;
	EVP_PKEY   *pkey;
	X509	   *cert;
	BIO		   *in;
	BIO		   *out;
	CMS_ContentInfo *cms;
	STACK_OF(X509) *recipients; /* holds s->cert, does not own it */
} TokenScope;

static void
scope_release(void *arg)
{
	TokenScope *s = (TokenScope *) arg;

	EVP_PKEY_free(s->pkey);
	X509_free(s->cert);
	BIO_free(s->in);
	BIO_free(s->out);
	CMS_ContentInfo_free(s->cms);
	sk_X509_free(s->recipients);
	s->recipients = NULL;
	s->pkey = NULL;
	s->cert = NULL;
	s->in = s->out = NULL;
	s->cms = NULL;
	ERR_clear_error();
}

static TokenScope *
scope_begin(void)
{
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext, "ade token",
											  ALLOCSET_SMALL_SIZES);
	TokenScope *s = MemoryContextAllocZero(cxt, sizeof(TokenScope));

	s->cxt = cxt;
	s->cb.func = scope_release;
	s->cb.arg = s;
	MemoryContextRegisterResetCallback(cxt, &s->cb);
	return s;
}

static void
scope_end(TokenScope *s)
{
	MemoryContextDelete(s->cxt);
}

/* the PEM text of what was written to a memory BIO, palloc'd */
static char *
bio_to_cstring(BIO *bio)
{
	char	   *data;
	long		len = BIO_get_mem_data(bio, &data);

	return pnstrdup(data, len);
}

static void
ssl_fail(const char *what)
{
	unsigned long e = ERR_get_error();
	char		buf[256];

	ERR_error_string_n(e, buf, sizeof(buf));
	ERR_clear_error();
	ereport(ERROR,
			(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
			 errmsg("could not %s", what),
			 errdetail("OpenSSL: %s.", AdeRedact(buf))));
}

/* a self-signed certificate for pkey, valid for ten years */
static X509 *
make_certificate(TokenScope *s, EVP_PKEY *pkey)
{
	X509	   *cert = X509_new();
	X509_NAME  *name;
	unsigned char serial[16];

	s->cert = cert;
	if (cert == NULL)
		ssl_fail("create a certificate");
	if (!pg_strong_random(serial, sizeof(serial)))
		elog(ERROR, "could not generate random bytes");
	serial[0] &= 0x7F;
	{
		BIGNUM	   *bn = BN_bin2bn(serial, sizeof(serial), NULL);
		ASN1_INTEGER *ai = bn ? BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert)) : NULL;

		BN_free(bn);
		if (ai == NULL)
			ssl_fail("set the certificate serial");
	}
	if (!X509_set_version(cert, 2) ||
		!X509_gmtime_adj(X509_getm_notBefore(cert), 0) ||
		!X509_gmtime_adj(X509_getm_notAfter(cert), 10L * 365 * 24 * 3600) ||
		!X509_set_pubkey(cert, pkey))
		ssl_fail("fill the certificate");
	name = X509_get_subject_name(cert);
	if (!X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
									(const unsigned char *) "ade MDM server", -1, -1, 0) ||
		!X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
									(const unsigned char *) "ade", -1, -1, 0) ||
		!X509_set_issuer_name(cert, name))
		ssl_fail("name the certificate");
	if (X509_sign(cert, pkey, EVP_sha256()) == 0)
		ssl_fail("sign the certificate");
	return cert;
}

static char *
pem_private_key(TokenScope *s, EVP_PKEY *pkey)
{
	char	   *pem;

	s->out = BIO_new(BIO_s_mem());
	if (s->out == NULL ||
		!PEM_write_bio_PrivateKey(s->out, pkey, NULL, NULL, 0, NULL, NULL))
		ssl_fail("write the private key");
	pem = bio_to_cstring(s->out);
	BIO_free(s->out);
	s->out = NULL;
	return pem;
}

static char *
pem_certificate(TokenScope *s, X509 *cert)
{
	char	   *pem;

	s->out = BIO_new(BIO_s_mem());
	if (s->out == NULL || !PEM_write_bio_X509(s->out, cert))
		ssl_fail("write the certificate");
	pem = bio_to_cstring(s->out);
	BIO_free(s->out);
	s->out = NULL;
	return pem;
}

/* store the key pair (replacing any); SPI connected */
static void
store_keypair(const char *key_pem, const char *cert_pem, bool replace)
{
	Oid			argtypes[2] = {TEXTOID, TEXTOID};
	Datum		args[2] = {CStringGetTextDatum(AdeVaultSeal(key_pem, AdeVaultPlace("ade_keypair", "private_key", 1))),
	CStringGetTextDatum(cert_pem)};
	char	   *sql;
	int			rc;

	sql = psprintf("INSERT INTO %s.ade_keypair (id, private_key, certificate) VALUES (1, $1, $2) "
				   "ON CONFLICT (id) DO %s",
				   AdeSchema(),
				   replace ? "UPDATE SET private_key = excluded.private_key, "
				   "certificate = excluded.certificate, created_at = now()" : "NOTHING");
	rc = SPI_execute_with_args(sql, 2, argtypes, args, NULL, false, 0);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "SPI_execute_with_args failed: %s", SPI_result_code_string(rc));
}

/*
 * The stored key pair, or false; SPI connected.  key_pem NULL: the
 * certificate only (the private key is not opened: ade_public_key() needs
 * no secret, and works without the key-encryption key).
 */
static bool
load_keypair(char **key_pem, char **cert_pem)
{
	char	   *sql;
	int			rc;
	bool		isnull;
	char	   *sealed;

	sql = psprintf("SELECT private_key, certificate FROM %s.ade_keypair WHERE id = 1",
				   AdeSchema());
	rc = SPI_execute(sql, false, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute failed: %s", SPI_result_code_string(rc));
	if (SPI_processed == 0)
		return false;
	/* both read before opening: the vault runs queries of its own */
	sealed = TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	*cert_pem = TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	if (key_pem != NULL)
		*key_pem = AdeVaultOpen(sealed, AdeVaultPlace("ade_keypair", "private_key", 1));
	return true;
}

/*
 * ade_public_key() returns text: the certificate, generated on first call.
 * Two first calls at once both generate; the first insert wins and both
 * return what was stored.
 */
Datum
ade_public_key(PG_FUNCTION_ARGS)
{
	MemoryContext caller = CurrentMemoryContext;
	char	   *cert_pem;
	text	   *result;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (!load_keypair(NULL, &cert_pem))
	{
		TokenScope *s = scope_begin();

		s->pkey = EVP_RSA_gen(2048);
		if (s->pkey == NULL)
			ssl_fail("generate an RSA key");
		make_certificate(s, s->pkey);
		store_keypair(pem_private_key(s, s->pkey), pem_certificate(s, s->cert), false);
		scope_end(s);
		if (!load_keypair(NULL, &cert_pem))
			elog(ERROR, "key pair vanished after it was stored");
	}
	MemoryContextSwitchTo(caller);
	result = cstring_to_text(cert_pem);
	SPI_finish();
	PG_RETURN_TEXT_P(result);
}

/*
 * OpenSSL asks for a password when a PEM key is encrypted: on the server's
 * terminal, unless a callback answers.  This one refuses, so that such a
 * key is a clean error.
 */
static int
no_password(char *buf, int size, int rwflag, void *u)
{
	return -1;
}

/*
 * Is there nothing but whitespace after the first PEM block (the key) of
 * this file?  Anything else, with no certificate that can be read, is a
 * damaged certificate (cut in its header, a header OpenSSL reads but with a
 * broken body) or a second key: never a reason to make a new certificate.
 */
static bool
only_key_in(const char *data, int len)
{
	const char *end = memmem(data, len, "-----END ", 9);
	const char *p;

	if (end == NULL)
		return true;
	p = memchr(end, '\n', len - (end - data));
	if (p == NULL)
		return true;
	for (; p < data + len; p++)
		if (!isspace((unsigned char) *p))
			return false;
	return true;
}

/*
 * Replace the key pair with a PEM private key (and its certificate, passed
 * apart or following the key in the same file as ade_export_key() writes
 * it; else a new self-signed one, which ABM then needs uploaded again);
 * returns the
 * certificate.  The key never goes into a message.
 */
static text *
import_key(const char *key, int keylen, const char *cert, int certlen)
{
	MemoryContext caller = CurrentMemoryContext;
	TokenScope *s;
	char	   *key_pem;
	char	   *cert_pem;
	text	   *result;

	s = scope_begin();
	s->in = BIO_new_mem_buf(key, keylen);
	if (s->in == NULL)
		ssl_fail("read the private key");
	s->pkey = PEM_read_bio_PrivateKey(s->in, NULL, no_password, NULL);
	if (s->pkey == NULL || EVP_PKEY_get_base_id(s->pkey) != EVP_PKEY_RSA)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("private_key is not an unencrypted PEM RSA private key"),
				 errhint("Decrypt an encrypted key first, e.g. with openssl pkey -in key.pem -out plain.pem.")));
	BIO_free(s->in);
	s->in = NULL;

	/* a backup of ade_export_key(): the certificate follows the key */
	if (cert == NULL)
	{
		s->in = BIO_new_mem_buf(key, keylen);
		s->cert = s->in ? PEM_read_bio_X509(s->in, NULL, no_password, NULL) : NULL;
		ERR_clear_error();
		BIO_free(s->in);
		s->in = NULL;
		if (s->cert == NULL && !only_key_in(key, keylen))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("the private key's file holds more than the key, and no certificate that can be read"),
					 errdetail("A new certificate would not be the one Apple Business Manager has: its tokens would not open."),
					 errhint("Use an intact copy of the file ade_export_key() wrote.")));
		if (s->cert != NULL && X509_check_private_key(s->cert, s->pkey) != 1)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("the certificate in the private key's file does not belong to the key")));
		if (s->cert == NULL)
			ereport(NOTICE,
					(errmsg("no certificate came with the key: a new self-signed one is made"),
					 errhint("Upload ade_public_key() to the MDM server in Apple Business Manager and download its tokens again.")));
	}
	if (cert != NULL)
	{
		s->in = BIO_new_mem_buf(cert, certlen);
		if (s->in == NULL)
			ssl_fail("read the certificate");
		s->cert = PEM_read_bio_X509(s->in, NULL, no_password, NULL);
		if (s->cert == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("certificate is not a PEM X.509 certificate")));
		if (X509_check_private_key(s->cert, s->pkey) != 1)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("certificate does not belong to private_key")));
	}
	else if (s->cert == NULL)
		make_certificate(s, s->pkey);

	key_pem = pem_private_key(s, s->pkey);
	cert_pem = pem_certificate(s, s->cert);
	scope_end(s);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	store_keypair(key_pem, cert_pem, true);
	explicit_bzero(key_pem, strlen(key_pem));
	MemoryContextSwitchTo(caller);
	result = cstring_to_text(cert_pem);
	SPI_finish();
	return result;
}

/* the arguments of either declaration (bytea and text share their layout) */
static text *
import_key_args(FunctionCallInfo fcinfo)
{
	struct varlena *key;
	struct varlena *cert = NULL;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("private_key must not be null"),
				 errhint("Pass the key file's bytes, e.g. pg_read_binary_file('/path/to/key.pem').")));
	key = PG_GETARG_VARLENA_PP(0);
	if (!PG_ARGISNULL(1))
		cert = PG_GETARG_VARLENA_PP(1);
	return import_key(VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key),
					  cert ? VARDATA_ANY(cert) : NULL,
					  cert ? VARSIZE_ANY_EXHDR(cert) : 0);
}

/*
 * ade_import_key(private_key bytea, certificate bytea default null) returns
 * text: the key file's bytes (pg_read_binary_file(), or COPY), never
 * statement text.
 */
Datum
ade_import_key_bytea(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(import_key_args(fcinfo));
}

/*
 * ade_import_key(private_key text, certificate text default null) returns
 * text: the only declaration of 0.3 and before; from 0.4 the form a key
 * pasted into the statement takes (a quoted literal resolves to text).  It
 * works, and says what that exposed: an error would be worse, as the server
 * log would then quote the statement.
 */
Datum
ade_import_key(PG_FUNCTION_ARGS)
{
	/* a NULL is a file that was not read: nothing was exposed */
	if (!PG_ARGISNULL(0) && AdeSqlAtLeast(0, 4))
		ereport(WARNING,
				(errmsg("the private key was passed as statement text"),
				 errdetail("The statement, key included, may be in pg_stat_activity, pg_stat_statements and the statement log."),
				 errhint("Pass the key file's bytes instead: ade_import_key(pg_read_binary_file('/path/to/key.pem'), ...); "
						 "consider the key exposed and make a new key pair.")));
	PG_RETURN_TEXT_P(import_key_args(fcinfo));
}

/*
 * The JSON of a decrypted token: ABM wraps it in a MIME entity, between
 * -----BEGIN MESSAGE----- and -----END MESSAGE-----.  Without those markers
 * (a token encrypted by hand), the outermost {...} of the plaintext.
 */
static char *
token_message(char *text)
{
	static const char begin[] = "-----BEGIN MESSAGE-----";
	static const char end[] = "-----END MESSAGE-----";
	char	   *b = strstr(text, begin);
	char	   *e;

	if (b != NULL)
	{
		b += sizeof(begin) - 1;
		e = strstr(b, end);
		if (e == NULL)
			return NULL;
		*e = '\0';
		return b;
	}
	b = strchr(text, '{');
	e = strrchr(text, '}');
	if (b == NULL || e == NULL || e < b)
		return NULL;
	e[1] = '\0';
	return b;
}

/*
 * Decrypt a server token file with the stored key pair into its fields.
 * SPI connected.  Raises a clear error for anything that is not a token for
 * this key.
 */
void
AdeTokenDecrypt(const char *data, size_t len, AdeTokenFile *out)
{
	TokenScope *s;
	char	   *key_pem;
	char	   *cert_pem;
	char	   *plain;
	char	   *json;
	Jsonb	   *jb;
	static const char *const fields[] = {"consumer_key", "consumer_secret",
	"access_token", "access_secret", "access_token_expiry"};
	char	   *val[5];
	int			i;

	if (!load_keypair(&key_pem, &cert_pem))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("this server has no key pair yet, so no token can be for it"),
				 errhint("Call ade_public_key(), upload the certificate to Apple Business Manager, and download the token again.")));

	s = scope_begin();

	s->in = BIO_new_mem_buf(key_pem, -1);
	s->pkey = s->in ? PEM_read_bio_PrivateKey(s->in, NULL, no_password, NULL) : NULL;
	explicit_bzero(key_pem, strlen(key_pem));
	if (s->pkey == NULL)
		ssl_fail("read the stored private key");
	BIO_free(s->in);
	s->in = BIO_new_mem_buf(cert_pem, -1);
	s->cert = s->in ? PEM_read_bio_X509(s->in, NULL, no_password, NULL) : NULL;
	if (s->cert == NULL)
		ssl_fail("read the stored certificate");
	BIO_free(s->in);

	/* S/MIME as ABM hands it out; DER or PEM CMS as a courtesy */
	s->in = BIO_new_mem_buf(data, (int) len);
	if (s->in == NULL)
		ssl_fail("read the token");
	s->cms = SMIME_read_CMS(s->in, NULL);
	if (s->cms == NULL)
	{
		ERR_clear_error();
		BIO_free(s->in);
		s->in = BIO_new_mem_buf(data, (int) len);
		s->cms = s->in ? d2i_CMS_bio(s->in, NULL) : NULL;
	}
	if (s->cms == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the token file is not an ABM server token"),
				 errdetail("It is not an S/MIME encrypted message, or it is truncated."),
				 errhint("Pass the .p7m file exactly as Apple Business Manager hands it out, e.g. with pg_read_binary_file().")));

	s->out = BIO_new(BIO_s_mem());
	if (s->out == NULL)
		ssl_fail("decrypt the token");
	if (CMS_decrypt(s->cms, s->pkey, s->cert, NULL, s->out, 0) != 1)
	{
		ERR_clear_error();
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the token file was not encrypted for this server's key"),
				 errdetail("It cannot be decrypted with the key pair whose certificate ade_public_key() returns."),
				 errhint("Upload ade_public_key() to the MDM server in Apple Business Manager and download its token again.")));
	}
	plain = bio_to_cstring(s->out);
	scope_end(s);

	json = token_message(plain);
	if (json == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the decrypted token holds no JSON message")));
	{
		AdeAbmResponse r = {0};

		r.body = json;
		r.len = strlen(json);
		jb = AdeAbmParseSecretJson(&r, "the decrypted token", true);
	}
	explicit_bzero(plain, strlen(plain));
	for (i = 0; i < 5; i++)
	{
		val[i] = AdeJsonGetText(jb, fields[i]);
		if (val[i] == NULL || val[i][0] == '\0')
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("the decrypted token lacks \"%s\"", fields[i])));
	}
	out->creds.consumer_key = val[0];
	out->creds.consumer_secret = val[1];
	out->creds.access_token = val[2];
	out->creds.access_secret = val[3];
	out->expiry = val[4];
}

/*
 * ade_add_token(token bytea) returns bigint
 *
 * Decrypts, checks the token with GET /account, stores it.  The same
 * consumer_key renews the stored token in place: same id, cursor kept, the
 * invalid flag cleared.
 */
Datum
ade_add_token(PG_FUNCTION_ARGS)
{
	bytea	   *file;
	AdeTokenFile tok;
	AdeAbmClient *client;
	TimestampTz expiry;
	Oid			tokargtypes[2] = {TEXTOID, TIMESTAMPTZOID};
	Oid			secargtypes[4] = {INT8OID, TEXTOID, TEXTOID, TEXTOID};
	Datum		args[4];
	char	   *sql;
	int			rc;
	bool		isnull;
	int64		id;
	Jsonb	   *account;

	/* it asks ABM, then stores: never on a standby */
	AdeRefuseOnStandby("ade_add_token()");

	/* a NULL is a file that was not read (a wrong path in a subquery, say) */
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("ade_add_token() needs the server token file, and got NULL"),
				 errhint("Pass the .p7m file's bytes, e.g. ade_add_token(pg_read_binary_file('/path/to/token.p7m')).")));
	file = PG_GETARG_BYTEA_PP(0);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	AdeTokenDecrypt(VARDATA_ANY(file), VARSIZE_ANY_EXHDR(file), &tok);

	expiry = DatumGetTimestampTz(DirectFunctionCall3(timestamptz_in,
													 CStringGetDatum(tok.expiry),
													 ObjectIdGetDatum(InvalidOid),
													 Int32GetDatum(-1)));
	if (TIMESTAMP_NOT_FINITE(expiry))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the token's access_token_expiry is not a date: %s", tok.expiry),
				 errhint("ABM's tokens expire a year after they are made; download the token again.")));
	if (expiry < GetCurrentTimestamp())
		ereport(WARNING,
				(errmsg("the ABM server token expired on %s", timestamptz_to_str(expiry)),
				 errdetail("It is stored anyway; only Apple decides whether it still works."),
				 errhint("Download a renewed token from Apple Business Manager and pass it to ade_add_token().")));

	/*
	 * Prove the token works (GET /account) before anything is written: a
	 * restore holds hosts from its first write to the commit (coexist.c),
	 * and no application statement waits for a round trip to Apple.
	 */
	client = AdeAbmOpenCreds(&tok.creds);
	PG_TRY();
	{
		account = AdeAbmFetchAccount(client);
	}
	PG_CATCH();
	{
		AdeAbmWipeCreds(&tok.creds);
		PG_RE_THROW();
	}
	PG_END_TRY();

	/* renewed in place, restored in place after ade_remove_token(), or new */
	if (AdeSqlAtLeast(0, 4))
		sql = psprintf("SELECT %s.ade_token_row($1, $2)", AdeSchema());
	else
		sql = psprintf("INSERT INTO %s.abm_tokens AS t (consumer_key, renew_at) VALUES ($1, $2) "
					   "ON CONFLICT (consumer_key) DO UPDATE SET renew_at = excluded.renew_at, "
					   "token_invalid = false, terms_expired = false, updated_at = now() "
					   "RETURNING t.id", AdeSchema());
	args[0] = CStringGetTextDatum(tok.creds.consumer_key);
	args[1] = TimestampTzGetDatum(expiry);
	rc = SPI_execute_with_args(sql, 2, tokargtypes, args, NULL, false, 0);
	if ((rc != SPI_OK_INSERT_RETURNING && rc != SPI_OK_SELECT) || SPI_processed != 1)
		elog(ERROR, "SPI_execute_with_args failed: %s", SPI_result_code_string(rc));
	id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));

	/* sealed, each bound to its place (the token's id, the column) */
	args[0] = Int64GetDatum(id);
	args[1] = CStringGetTextDatum(AdeVaultSeal(tok.creds.consumer_secret,
											   AdeVaultPlace("ade_token_secrets", "consumer_secret", id)));
	args[2] = CStringGetTextDatum(AdeVaultSeal(tok.creds.access_token,
											   AdeVaultPlace("ade_token_secrets", "access_token", id)));
	args[3] = CStringGetTextDatum(AdeVaultSeal(tok.creds.access_secret,
											   AdeVaultPlace("ade_token_secrets", "access_secret", id)));
	sql = psprintf("INSERT INTO %s.ade_token_secrets AS s (token_id, consumer_secret, "
				   "access_token, access_secret) VALUES ($1, $2, $3, $4) "
				   "ON CONFLICT (token_id) DO UPDATE SET consumer_secret = excluded.consumer_secret, "
				   "access_token = excluded.access_token, access_secret = excluded.access_secret, "
				   "session_token = NULL, session_at = NULL",
				   AdeSchema());
	rc = SPI_execute_with_args(sql, 4, secargtypes, args, NULL, false, 0);
	if (rc != SPI_OK_INSERT || SPI_processed != 1)
		elog(ERROR, "SPI_execute_with_args failed: %s", SPI_result_code_string(rc));

	AdeAbmWipeCreds(&tok.creds);
	AdeAbmStoreAccount(id, account);
	client->token_id = id;
	AdeAbmSaveSession(client);
	AdeAbmClose(client);

	SPI_finish();
	PG_RETURN_INT64(id);
}

/*
 * ade_is_der_certificate(der bytea) returns boolean: is this one X.509
 * certificate in DER, nothing before or after it (a profile's anchor_certs
 * and supervising_host_certs, profiles.sql)?
 */
Datum
ade_is_der_certificate(PG_FUNCTION_ARGS)
{
	bytea	   *der = PG_GETARG_BYTEA_PP(0);
	const unsigned char *p = (const unsigned char *) VARDATA_ANY(der);
	const unsigned char *start = p;
	long		len = VARSIZE_ANY_EXHDR(der);
	X509	   *cert = d2i_X509(NULL, &p, len);
	bool		ok = cert != NULL && p - start == len;

	X509_free(cert);
	ERR_clear_error();
	PG_RETURN_BOOL(ok);
}

/*
 * ade_export_key() returns bytea: the key pair as one PEM file, the private
 * key then its certificate: a backup that ade_import_key(file) takes back
 * whole (the same certificate, so ABM's tokens still open).  It is the
 * key that every token is encrypted to: the owner's only, kept like the
 * database's own backups.
 */
Datum
ade_export_key(PG_FUNCTION_ARGS)
{
	MemoryContext caller = CurrentMemoryContext;
	char	   *key_pem;
	char	   *cert_pem;
	size_t		klen;
	size_t		clen;
	bytea	   *result;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (!load_keypair(&key_pem, &cert_pem))
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("this server has no key pair yet"),
				 errhint("ade_public_key() makes one; until then there is nothing to back up.")));
	klen = strlen(key_pem);
	clen = strlen(cert_pem);
	result = MemoryContextAlloc(caller, VARHDRSZ + klen + clen);
	SET_VARSIZE(result, VARHDRSZ + klen + clen);
	memcpy(VARDATA(result), key_pem, klen);
	memcpy(VARDATA(result) + klen, cert_pem, clen);
	explicit_bzero(key_pem, klen);
	SPI_finish();
	PG_RETURN_BYTEA_P(result);
}

/*
 * The .p7m ABM would hand out for this token JSON: the MIME entity Apple
 * wraps it in, enveloped (CMS, AES-256) to the stored certificate, written
 * as S/MIME.  palloc'd in the caller's context; the plaintext is the
 * caller's to wipe.
 */
static bytea *
token_envelope(TokenScope *s, const char *content, size_t len)
{
	char	   *data;
	long		n;
	bytea	   *out;

	s->recipients = sk_X509_new_null();
	if (s->recipients == NULL || !sk_X509_push(s->recipients, s->cert))
		ssl_fail("list the certificate");
	s->in = BIO_new_mem_buf(content, (int) len);
	if (s->in == NULL)
		ssl_fail("read the token");
	s->cms = CMS_encrypt(s->recipients, s->in, EVP_aes_256_cbc(), CMS_BINARY);
	if (s->cms == NULL)
		ssl_fail("encrypt the token");
	s->out = BIO_new(BIO_s_mem());
	if (s->out == NULL || !SMIME_write_CMS(s->out, s->cms, NULL, CMS_BINARY))
		ssl_fail("write the token");
	n = BIO_get_mem_data(s->out, &data);
	out = palloc(VARHDRSZ + n);
	SET_VARSIZE(out, VARHDRSZ + n);
	memcpy(VARDATA(out), data, n);
	return out;
}

/*
 * ade_export_tokens() returns table(token_id, org_name, consumer_key,
 * renew_at, token bytea): each stored token as the file ABM would hand out
 * for this server's key pair, which ade_add_token() takes back (once the
 * same key pair is there: ade_export_key()).  Encrypted to that key, it
 * opens for nobody without it.
 */
Datum
ade_export_tokens(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	MemoryContext caller = CurrentMemoryContext;
	char	   *cert_pem;
	char	   *sql;
	int			rc;
	uint64		i;
	uint64		n;
	SPITupleTable *rows;

	InitMaterializedSRF(fcinfo, 0);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (!load_keypair(NULL, &cert_pem))
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("this server has no key pair, so it holds no token")));
	sql = psprintf("SELECT t.id, t.org_name, t.consumer_key, t.renew_at, "
				   "pg_catalog.to_char(pg_catalog.timezone('UTC', t.renew_at), 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "
				   "s.consumer_secret, s.access_token, s.access_secret "
				   "FROM %s.abm_tokens t JOIN %s.ade_token_secrets s ON s.token_id OPERATOR(pg_catalog.=) t.id "
				   "ORDER BY t.id", AdeSchema(), AdeSchema());
	rc = SPI_execute(sql, true, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute failed: %s", SPI_result_code_string(rc));
	/* kept apart: opening a secret runs queries of the vault's own */
	rows = SPI_tuptable;
	n = SPI_processed;
	for (i = 0; i < n; i++)
	{
		HeapTuple	row = rows->vals[i];
		TupleDesc	desc = rows->tupdesc;
		bool		isnull;
		int64		id = DatumGetInt64(SPI_getbinval(row, desc, 1, &isnull));
		char	   *secret[3];
		static const char *const column[3] = {"consumer_secret", "access_token", "access_secret"};
		StringInfoData msg;
		TokenScope *s;
		Datum		values[5];
		bool		nulls[5] = {false, false, false, false, false};
		int			k;

		/* ade_add_token() stores a finite expiry only; a row edited by hand may hold none */
		if (SPI_getvalue(row, desc, 5) == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("abm token " INT64_FORMAT " has no expiry (renew_at), so it cannot be written as ABM's token file", id),
					 errhint("Set abm_tokens.renew_at to the expiry ABM shows for it, or download the token again.")));
		for (k = 0; k < 3; k++)
			secret[k] = AdeVaultOpen(SPI_getvalue(row, desc, 6 + k),
									 AdeVaultPlace("ade_token_secrets", column[k], id));
		/* sized once: a buffer that grew would leave an unwiped copy behind */
		initStringInfo(&msg);
		enlargeStringInfo(&msg, 8192);
		appendStringInfoString(&msg, "Content-Type: text/plain;charset=UTF-8\r\n"
							   "Content-Transfer-Encoding: 7bit\r\n\r\n"
							   "-----BEGIN MESSAGE-----\n{\"consumer_key\":");
		escape_json(&msg, SPI_getvalue(row, desc, 3));
		appendStringInfoString(&msg, ",\"consumer_secret\":");
		escape_json(&msg, secret[0]);
		appendStringInfoString(&msg, ",\"access_token\":");
		escape_json(&msg, secret[1]);
		appendStringInfoString(&msg, ",\"access_secret\":");
		escape_json(&msg, secret[2]);
		appendStringInfoString(&msg, ",\"access_token_expiry\":");
		escape_json(&msg, SPI_getvalue(row, desc, 5));
		appendStringInfoString(&msg, "}\n-----END MESSAGE-----\n");
		for (k = 0; k < 3; k++)
			explicit_bzero(secret[k], strlen(secret[k]));

		s = scope_begin();
		s->in = BIO_new_mem_buf(cert_pem, -1);
		s->cert = s->in ? PEM_read_bio_X509(s->in, NULL, no_password, NULL) : NULL;
		if (s->cert == NULL)
			ssl_fail("read the stored certificate");
		BIO_free(s->in);
		s->in = NULL;
		values[4] = PointerGetDatum(token_envelope(s, msg.data, msg.len));
		explicit_bzero(msg.data, msg.maxlen);
		scope_end(s);

		values[0] = Int64GetDatum(id);
		values[1] = SPI_getbinval(row, desc, 2, &nulls[1]);
		values[2] = SPI_getbinval(row, desc, 3, &nulls[2]);
		values[3] = SPI_getbinval(row, desc, 4, &nulls[3]);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	SPI_finish();
	MemoryContextSwitchTo(caller);
	return (Datum) 0;
}
