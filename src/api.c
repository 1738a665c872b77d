/*-------------------------------------------------------------------------
 *
 * api.c
 *		The client of Apple's Business / School Manager API (abm-api.md):
 *		its accounts, their access tokens and its requests.
 *
 * Owns: ade_add_api_account(), ade_remove_api_account(), and what
 * src/inventory.c asks ABM through (api.h): a client opened on a stored
 * account, one request answered, its errors.  inventory.c owns what the
 * runs do with the answers.
 *
 * Design notes:
 *
 * - Tokens.  An access token comes from the token endpoint
 *   (ade.abm_token_url) for a client assertion (apijwt.c: an ES256 JWT of
 *   20 minutes, a new jti each time); it is stored sealed in
 *   abm_api_accounts, so every backend uses it until 5 minutes before it
 *   ends, and fetched again once on a 401.  The private key and the token
 *   live in a memory context of their own, wiped when it goes (however the
 *   transaction ends); the Authorization header and the assertion are
 *   wiped once sent.
 *
 * - Pauses.  A 429 or 503 with Retry-After (60 s without one), of the API
 *   or of the token endpoint, stores the account's not_before: no request
 *   of any kind is sent to that account before (ApiRequest() answers
 *   "paused" without sending).  GETs are sent again after a 5xx or a
 *   broken connection, twice; a POST never is (ans->unsure: it may have
 *   been done).
 *
 * Copyright (c) 2026, the ade authors
 *
 * IDENTIFICATION
 *	  src/api.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "ade.h"
#include "api.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(ade_add_api_account);
PG_FUNCTION_INFO_V1(ade_remove_api_account);

#define ASSERTION_SECONDS 1200	/* a client assertion lasts 20 minutes */
#define TOKEN_EARLY_SECONDS 300 /* a token is renewed 5 minutes before it ends */
#define DEFAULT_PAUSE_SECONDS 60	/* a 429 without Retry-After */

void
ApiSpiCheck(int rc, int want, const char *what)
{
	if (rc != want)
		elog(ERROR, "SPI failed (%s): %s", what, SPI_result_code_string(rc));
}

static long
ms_until(TimestampTz t)
{
	return (long) ((t - GetCurrentTimestamp()) / 1000);
}

/* ---- the client ---- */

static void
client_wipe(void *arg)
{
	ApiClient  *c = (ApiClient *) arg;

	if (c->pem)
		explicit_bzero(c->pem, c->pem_len);
	if (c->token)
		explicit_bzero(c->token, strlen(c->token));
}

static ApiClient *
client_new(const char *client_id, const char *key_id, const char *pem, int pem_len)
{
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext, "ade api client",
											  ALLOCSET_SMALL_SIZES);
	ApiClient  *c = MemoryContextAllocZero(cxt, sizeof(ApiClient));

	c->cxt = cxt;
	c->wipe.func = client_wipe;
	c->wipe.arg = c;
	MemoryContextRegisterResetCallback(cxt, &c->wipe);
	c->client_id = MemoryContextStrdup(cxt, client_id);
	c->key_id = MemoryContextStrdup(cxt, key_id);
	c->scope = MemoryContextStrdup(cxt, strncmp(client_id, "SCHOOLAPI.", 10) == 0 ? "school.api" : "business.api");
	c->pem = MemoryContextAlloc(cxt, pem_len + 1);
	memcpy(c->pem, pem, pem_len);
	c->pem[pem_len] = '\0';
	c->pem_len = pem_len;
	return c;
}

void
ApiClientClose(ApiClient *c)
{
	if (c->http)
		AdeHttpDestroy(c->http);
	MemoryContextDelete(c->cxt);
}

/* a stored account, its key and token opened (SPI connected) */
ApiClient *
ApiClientOpen(int64 account_id)
{
	Oid			types[1] = {INT8OID};
	Datum		args[1] = {Int64GetDatum(account_id)};
	int			rc;
	bool		isnull;
	HeapTuple	tup;
	TupleDesc	td;
	char	   *sealed;
	char	   *pem;
	ApiClient  *c;

	rc = AdeExec("SELECT client_id, key_id, private_key, access_token, access_token_expires_at, not_before "
				 "FROM %s.abm_api_accounts WHERE id = $1", 1, types, args, NULL, true, 1);
	ApiSpiCheck(rc, SPI_OK_SELECT, "abm_api_accounts");
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("API account " INT64_FORMAT " does not exist", account_id),
				 errhint("SELECT id, client_id FROM abm_api_accounts lists them.")));
	tup = SPI_tuptable->vals[0];
	td = SPI_tuptable->tupdesc;
	sealed = TextDatumGetCString(SPI_getbinval(tup, td, 3, &isnull));
	pem = AdeVaultOpen(sealed, AdeVaultPlace("abm_api_accounts", "private_key", account_id));
	c = client_new(TextDatumGetCString(SPI_getbinval(tup, td, 1, &isnull)),
				   TextDatumGetCString(SPI_getbinval(tup, td, 2, &isnull)), pem, (int) strlen(pem));
	explicit_bzero(pem, strlen(pem));
	c->account_id = account_id;
	{
		Datum		nb = SPI_getbinval(tup, td, 6, &isnull);

		if (!isnull)
			c->not_before = DatumGetTimestampTz(nb);
	}
	{
		Datum		tok = SPI_getbinval(tup, td, 4, &isnull);
		Datum		until;
		bool		until_null;

		until = SPI_getbinval(tup, td, 5, &until_null);
		if (!isnull && !until_null)
		{
			char	   *plain = AdeVaultTryOpen(TextDatumGetCString(tok),
												AdeVaultPlace("abm_api_accounts", "access_token", account_id));

			if (plain)
			{
				c->token = MemoryContextStrdup(c->cxt, plain);
				c->token_until = DatumGetTimestampTz(until);
				explicit_bzero(plain, strlen(plain));
			}
		}
	}
	return c;
}

/* ---- URLs ---- */

static const char *
api_base(ApiClient *c)
{
	if (ade_abm_api_url && ade_abm_api_url[0])
		return ade_abm_api_url;
	return strcmp(c->scope, "school.api") == 0 ? "https://api-school.apple.com" : "https://api-business.apple.com";
}

static char *
join_url(const char *base, const char *path)
{
	size_t		n = strlen(base);

	while (n > 0 && base[n - 1] == '/')
		n--;
	return psprintf("%.*s%s", (int) n, base, path);
}

/* ---- pauses ---- */

/* store the account's not_before (ABM asked to wait) */
static void
note_pause(ApiClient *c, int seconds, long status)
{
	Oid			types[3] = {INT8OID, INT4OID, TEXTOID};
	Datum		args[3];
	int			rc;

	seconds = Min(Max(seconds, 1), ADE_MAX_RETRY_AFTER);
	c->not_before = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), seconds * 1000L);
	if (c->account_id == 0)
		return;
	args[0] = Int64GetDatum(c->account_id);
	args[1] = Int32GetDatum(seconds);
	args[2] = CStringGetTextDatum(psprintf("ABM asked to wait (HTTP %ld, Retry-After %d s)", status, seconds));
	rc = AdeExec("UPDATE %s.abm_api_accounts SET not_before = clock_timestamp() + make_interval(secs => $2), "
				 "last_error = $3, last_error_at = now(), updated_at = now() WHERE id = $1",
				 3, types, args, NULL, false, 0);
	ApiSpiCheck(rc, SPI_OK_UPDATE, "abm_api_accounts.not_before");
}

/* what ABM's error body says (JSON:API errors, or RFC 6749), in a few words */
char *
ApiErrorWords(const char *body)
{
	Oid			types[1] = {TEXTOID};
	Datum		args[1];
	int			rc;
	bool		isnull;
	Datum		d;

	args[0] = CStringGetTextDatum(body ? body : "");
	rc = AdeExec("SELECT %s.ade_api_error($1)", 1, types, args, NULL, true, 1);
	ApiSpiCheck(rc, SPI_OK_SELECT, "ade_api_error");
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return isnull ? pstrdup("no error in the body") : TextDatumGetCString(d);
}

/* ---- the access token ---- */

/* a random UUID (version 4) for a jti */
static char *
random_uuid(void)
{
	unsigned char b[16];

	if (!pg_strong_random(b, sizeof(b)))
		elog(ERROR, "could not generate random bytes");
	b[6] = (b[6] & 0x0f) | 0x40;
	b[8] = (b[8] & 0x3f) | 0x80;
	return psprintf("%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
					b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9],
					b[10], b[11], b[12], b[13], b[14], b[15]);
}

static long
timeout_ms(ApiClient *c)
{
	long		t = ade_http_timeout;

	if (c->deadline != 0)
		t = Min(t, Max(ms_until(c->deadline), 1000));
	return t;
}

/* the client's transfer, made on its first request */
static void
ensure_http(ApiClient *c)
{
	if (c->http == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(c->cxt);

		c->http = AdeHttpCreate();
		MemoryContextSwitchTo(old);
	}
}

/* store the token this client fetched, sealed, for every backend */
void
ApiStoreToken(ApiClient *c)
{
	Oid			types[3] = {INT8OID, TEXTOID, TIMESTAMPTZOID};
	Datum		args[3];
	int			rc;

	if (c->account_id == 0 || !c->token_new)
		return;
	args[0] = Int64GetDatum(c->account_id);
	args[1] = CStringGetTextDatum(AdeVaultSeal(c->token, AdeVaultPlace("abm_api_accounts", "access_token", c->account_id)));
	args[2] = TimestampTzGetDatum(c->token_until);
	rc = AdeExec("UPDATE %s.abm_api_accounts SET access_token = $2, access_token_expires_at = $3, "
				 "updated_at = now() WHERE id = $1", 3, types, args, NULL, false, 0);
	ApiSpiCheck(rc, SPI_OK_UPDATE, "abm_api_accounts.access_token");
	c->token_new = false;
}

/*
 * An access token for the account: the one stored while it has more than
 * 5 minutes left, else (or forced: after a 401) a new one from the token
 * endpoint.  A refusal is an ERROR that says what ABM said (never the
 * assertion or the key).
 */
static bool
get_token(ApiClient *c, bool force)
{
	TimestampTz now = GetCurrentTimestamp();
	int64		iat;
	char	   *assertion;
	StringInfoData body;
	const char *hdrs[2] = {"Content-Type: application/x-www-form-urlencoded", "Accept: application/json"};
	AdeHttpResult res;
	AdeAbmResponse resp;
	Jsonb	   *jb;
	char	   *tok;
	char	   *expires;
	long		secs;

	if (!force && c->token && c->token_until > TimestampTzPlusMilliseconds(now, TOKEN_EARLY_SECONDS * 1000L))
		return true;
	iat = (int64) ((now / USECS_PER_SEC) + ((POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY));
	assertion = AdeClientAssertion(c->client_id, c->key_id, c->pem, c->pem_len,
								   iat, iat + ASSERTION_SECONDS, random_uuid());
	initStringInfo(&body);
	appendStringInfo(&body, "grant_type=client_credentials&client_id=%s"
					 "&client_assertion_type=urn%%3Aietf%%3Aparams%%3Aoauth%%3Aclient-assertion-type%%3Ajwt-bearer"
					 "&client_assertion=%s&scope=%s",
					 AdeOAuthEncode(c->client_id), assertion, AdeOAuthEncode(c->scope));
	explicit_bzero(assertion, strlen(assertion));
	ensure_http(c);
	PG_TRY();
	{
		AdeHttpPerform(c->http, "POST", ade_abm_token_url, hdrs, 2, body.data,
					   timeout_ms(c), ade_connect_timeout, &res);
	}
	PG_FINALLY();
	{
		explicit_bzero(body.data, body.len);
	}
	PG_END_TRY();
	if (res.curl_code != 0)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("the API token endpoint could not be reached: %s", AdeRedact(res.curl_error)),
				 errhint("Check ade.abm_token_url and the network to it.")));
	if (res.status == 429 || res.status == 503)
	{
		/* kept (no ERROR, which would undo it): the caller stops, paused */
		note_pause(c, res.retry_after >= 0 ? res.retry_after : DEFAULT_PAUSE_SECONDS, res.status);
		if (c->account_id == 0)
			ereport(ERROR,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("the API token endpoint asked to wait (HTTP %ld, Retry-After %d s)", res.status, res.retry_after)));
		return false;
	}
	if (res.status != 200)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("ABM refused the API account %s: HTTP %ld, %s", c->client_id, res.status,
						ApiErrorWords(res.body)),
				 errdetail("The client assertion was signed with the key given for key id %s.", c->key_id),
				 errhint("Check the client id, the key id and the private key in ABM (Preferences > API; a key can be downloaded only once: make a new one if it is lost), and this server's clock: the assertion is valid for 20 minutes from now.")));
	memset(&resp, 0, sizeof(resp));
	resp.status = res.status;
	resp.body = res.body;
	resp.len = res.len;
	jb = AdeAbmParseSecretJson(&resp, "POST token", true);
	explicit_bzero(res.body, res.len);
	tok = AdeJsonGetText(jb, "access_token");
	expires = AdeJsonGetText(jb, "expires_in");
	if (tok == NULL || tok[0] == '\0' || strlen(tok) > 4096)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("the API token endpoint answered without an access token")));
	secs = expires ? strtol(expires, NULL, 10) : 3600;
	if (secs <= 0 || secs > 86400)
		secs = 3600;
	if (c->token)
		explicit_bzero(c->token, strlen(c->token));
	c->token = MemoryContextStrdup(c->cxt, tok);
	explicit_bzero(tok, strlen(tok));
	c->token_until = TimestampTzPlusMilliseconds(now, secs * 1000L);
	c->token_new = true;
	ApiStoreToken(c);
	return true;
}

/* ---- requests ---- */

/*
 * One request of the API, answered: GETs sent again (twice) after a 5xx or
 * a broken connection, once with a new token after a 401; a 429/503
 * pauses the account (ans->paused).  A POST is sent once: no clear answer
 * (a 5xx, a broken connection) sets ans->unsure.
 */
void
ApiRequest(ApiClient *c, const char *method, const char *path, const char *body, ApiAnswer *ans)
{
	bool		get = strcmp(method, "GET") == 0;
	volatile bool renewed = false;
	int			attempt;
	char	   *url;

	AdeRefuseOnStandby("every request to the Business/School Manager API");
	url = join_url(api_base(c), path);
	memset(ans, 0, sizeof(*ans));
	for (attempt = 0;; attempt++)
	{
		AdeHttpResult res;
		char	   *auth;
		const char *hdrs[3];

		CHECK_FOR_INTERRUPTS();
		/* ABM asked to wait: nothing is sent to this account before */
		if (c->not_before > GetCurrentTimestamp() || !get_token(c, false))
		{
			ans->paused = true;
			return;
		}
		ensure_http(c);
		auth = psprintf("Authorization: Bearer %s", c->token);
		hdrs[0] = auth;
		hdrs[1] = "Accept: application/json";
		hdrs[2] = "Content-Type: application/json";
		PG_TRY();
		{
			AdeHttpPerform(c->http, method, url, hdrs, body ? 3 : 2, body,
						   timeout_ms(c), ade_connect_timeout, &res);
		}
		PG_FINALLY();
		{
			explicit_bzero(auth, strlen(auth));
		}
		PG_END_TRY();
		ans->status = res.curl_code == 0 ? res.status : 0;
		ans->body = res.body;
		ans->len = res.len;
		/* a body that is not UTF-8 is no answer of ABM's (-1): never stored */
		if (ans->status == 200 && !pg_verifymbstr(res.body, (int) res.len, true))
		{
			ans->status = -1;
			ans->body = "";
			ans->len = 0;
		}
		if (ans->status == 401 && !renewed)
		{
			renewed = true;
			if (!get_token(c, true))
			{
				ans->paused = true;
				return;
			}
			continue;
		}
		if (ans->status == 429 || (ans->status == 503 && res.retry_after >= 0))
		{
			note_pause(c, res.retry_after >= 0 ? res.retry_after : DEFAULT_PAUSE_SECONDS, ans->status);
			ans->paused = true;
			return;
		}
		if (ans->status != 0 && ans->status < 500)
			return;
		if (!get)
		{
			ans->unsure = true;
			return;
		}
		if (attempt >= 2 || (c->deadline != 0 && ms_until(c->deadline) < 2000))
			return;
		AdeSleep(500 * (attempt + 1));
	}
}

/* an ERROR for an answer that is not the one expected */
void
ApiRaise(const ApiAnswer *ans, const char *what)
{
	if (ans->paused)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("ABM asked to wait before %s (HTTP %ld): nothing is sent to this account until then", what, ans->status),
				 errhint("abm_api_accounts.not_before says until when.")));
	if (ans->status == 0)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("ABM did not answer %s", what)));
	if (ans->status < 0)
		ereport(ERROR,
				(errcode(ERRCODE_CHARACTER_NOT_IN_REPERTOIRE),
				 errmsg("ABM answered %s with a body that is not valid UTF-8", what)));
	ereport(ERROR,
			(errcode(ans->status == 404 ? ERRCODE_NO_DATA_FOUND : ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
			 errmsg("ABM answered %s with HTTP %ld: %s", what, ans->status, ApiErrorWords(ans->body))));
}

/* ---- the SQL functions ---- */

void
ApiNotNull(FunctionCallInfo fcinfo, int arg, const char *name, const char *fn)
{
	if (PG_ARGISNULL(arg))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s of %s is NULL", name, fn)));
}

/*
 * ade_add_api_account(client_id text, key_id text, private_key bytea)
 * returns bigint: the key checked, a first access token fetched (a wrong
 * key, key id or client id: an ERROR, nothing stored), then the account
 * stored (the same client id again: its key replaced in place), the key
 * and the token sealed.
 */
Datum
ade_add_api_account(PG_FUNCTION_ARGS)
{
	char	   *client_id;
	char	   *key_id;
	bytea	   *key;
	ApiClient  *c;
	Oid			types[5] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID, TIMESTAMPTZOID};
	Datum		args[5];
	int			rc;
	bool		isnull;
	int64		id;

	ApiNotNull(fcinfo, 0, "client_id", "ade_add_api_account()");
	ApiNotNull(fcinfo, 1, "key_id", "ade_add_api_account()");
	ApiNotNull(fcinfo, 2, "private_key", "ade_add_api_account()");
	AdeRefuseOnStandby("ade_add_api_account()");
	client_id = text_to_cstring(PG_GETARG_TEXT_PP(0));
	key_id = text_to_cstring(PG_GETARG_TEXT_PP(1));
	key = PG_GETARG_BYTEA_PP(2);
	if (strncmp(client_id, "BUSINESSAPI.", 12) != 0 && strncmp(client_id, "SCHOOLAPI.", 10) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("client_id must begin with BUSINESSAPI. or SCHOOLAPI."),
				 errhint("ABM (or ASM) > Preferences > API shows the account's client id.")));
	AdeApiKeyCheck(VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key));

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	c = client_new(client_id, key_id, VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key));
	get_token(c, true);

	/* the row: the same client id again keeps its id (and its inventory) */
	args[0] = CStringGetTextDatum(client_id);
	rc = AdeExec("SELECT coalesce((SELECT a.id FROM %s.abm_api_accounts a WHERE a.client_id = $1 FOR UPDATE), "
				 "nextval(pg_catalog.format('%%I.abm_api_accounts_id_seq', '%s')::regclass))",
				 1, types, args, NULL, false, 1);
	ApiSpiCheck(rc, SPI_OK_SELECT, "abm_api_accounts id");
	id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	c->account_id = id;
	args[1] = CStringGetTextDatum(key_id);
	args[2] = CStringGetTextDatum(c->scope);
	args[3] = CStringGetTextDatum(AdeVaultSeal(c->pem, AdeVaultPlace("abm_api_accounts", "private_key", id)));
	{
		Oid			itypes[7] = {INT8OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TIMESTAMPTZOID};
		Datum		iargs[7];

		iargs[0] = Int64GetDatum(id);
		iargs[1] = args[0];
		iargs[2] = args[1];
		iargs[3] = args[2];
		iargs[4] = args[3];
		iargs[5] = CStringGetTextDatum(AdeVaultSeal(c->token, AdeVaultPlace("abm_api_accounts", "access_token", id)));
		iargs[6] = TimestampTzGetDatum(c->token_until);
		rc = AdeExec("INSERT INTO %s.abm_api_accounts AS a (id, client_id, key_id, scope, private_key, "
					 "access_token, access_token_expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7) "
					 "ON CONFLICT (client_id) DO UPDATE SET key_id = excluded.key_id, "
					 "private_key = excluded.private_key, access_token = excluded.access_token, "
					 "access_token_expires_at = excluded.access_token_expires_at, not_before = NULL, "
					 "last_error = NULL, updated_at = now()",
					 7, itypes, iargs, NULL, false, 0);
		ApiSpiCheck(rc, SPI_OK_INSERT, "abm_api_accounts");
	}
	c->token_new = false;
	ApiClientClose(c);
	SPI_finish();
	PG_RETURN_INT64(id);
}

/* ade_remove_api_account(account_id bigint) returns void: it and its inventory */
Datum
ade_remove_api_account(PG_FUNCTION_ARGS)
{
	Oid			types[1] = {INT8OID};
	Datum		args[1];
	int			rc;

	ApiNotNull(fcinfo, 0, "account_id", "ade_remove_api_account()");
	args[0] = PG_GETARG_DATUM(0);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	rc = AdeExec("DELETE FROM %s.abm_api_accounts WHERE id = $1", 1, types, args, NULL, false, 0);
	ApiSpiCheck(rc, SPI_OK_DELETE, "abm_api_accounts");
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("API account " INT64_FORMAT " does not exist", DatumGetInt64(args[0])),
				 errhint("SELECT id, client_id FROM abm_api_accounts lists them.")));
	SPI_finish();
	PG_RETURN_VOID();
}
