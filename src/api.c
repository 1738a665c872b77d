/*-------------------------------------------------------------------------
 *
 * api.c
 *		The Apple Business / School Manager API (abm-api.md): its accounts,
 *		their access tokens, its requests, and the inventory, AppleCare and
 *		activity steps that ade_sync() and the functions below run.
 *
 * Owns: ade_add_api_account(), ade_remove_api_account(),
 * ade_inventory_sync(), ade_refresh_applecare(), ade_assign_devices(),
 * ade_unassign_devices(), and AdeApiRun() (the accounts' share of a run of
 * ade_sync()).  C does the requests; every page, answer and decision about
 * rows is one SQL statement of src/schema/api.sql.
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
 * - Pauses.  A 429 or 503 with Retry-After (60 s without one) stores the
 *   account's not_before, in the caller's transaction: the runs ask nothing
 *   of that account before (the inventory resumes where it was).  GETs are
 *   sent again after a 5xx or a broken connection, twice; the POST that
 *   starts an activity never is (it may have started): an unclear answer is
 *   kept as an activity of status UNKNOWN, and the next inventory shows
 *   where the devices are.
 *
 * - Budget.  Within a run, an account's steps keep to its share of
 *   ade.max_sync_seconds: no page is started with less than twice the time
 *   the last one took.  A run that commits its steps (the pg_cron job)
 *   commits each page.
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
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(ade_add_api_account);
PG_FUNCTION_INFO_V1(ade_remove_api_account);
PG_FUNCTION_INFO_V1(ade_inventory_sync);
PG_FUNCTION_INFO_V1(ade_refresh_applecare);
PG_FUNCTION_INFO_V1(ade_assign_devices);
PG_FUNCTION_INFO_V1(ade_unassign_devices);

#define ASSERTION_SECONDS 1200	/* a client assertion lasts 20 minutes */
#define TOKEN_EARLY_SECONDS 300 /* a token is renewed 5 minutes before it ends */
#define DEFAULT_PAUSE_SECONDS 60	/* a 429 without Retry-After */
#define PAGE_LIMIT "1000"
#define MAX_ACTIVITY_SERIALS 1000
#define POLLS_PER_RUN 20

typedef struct ApiClient
{
	int64		account_id;		/* 0: not stored yet (ade_add_api_account) */
	char	   *client_id;
	char	   *key_id;
	char	   *scope;
	char	   *pem;			/* wiped when cxt goes */
	int			pem_len;
	char	   *token;			/* wiped when cxt goes */
	TimestampTz token_until;
	bool		token_new;		/* fetched here, not stored yet */
	TimestampTz not_before;		/* ABM asked to wait: nothing sent before */
	TimestampTz deadline;		/* the run's share; 0: the settings only */
	AdeHttp    *http;
	MemoryContext cxt;
	MemoryContextCallback wipe;
} ApiClient;

typedef struct ApiAnswer
{
	long		status;			/* 0: no answer (a broken connection) */
	char	   *body;
	size_t		len;
	bool		paused;			/* ABM asked to wait: not_before stored */
	bool		unsure;			/* a POST that may have been done */
} ApiAnswer;

/* what one account's steps did, for ade_inventory_sync() */
typedef struct ApiCounts
{
	int			devices;
	int			servers;
	int			applecare;
	int			activities;
	bool		paused;
	char	   *note;			/* what went wrong without an ERROR */
} ApiCounts;

static void
spi_check(int rc, int want, const char *what)
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

static void
client_close(ApiClient *c)
{
	if (c->http)
		AdeHttpDestroy(c->http);
	MemoryContextDelete(c->cxt);
}

/* a stored account, its key and token opened (SPI connected) */
static ApiClient *
client_open(int64 account_id)
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
	spi_check(rc, SPI_OK_SELECT, "abm_api_accounts");
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
	spi_check(rc, SPI_OK_UPDATE, "abm_api_accounts.not_before");
}

/* what ABM's error body says (JSON:API errors, or RFC 6749), in a few words */
static char *
error_words(const char *body)
{
	Oid			types[1] = {TEXTOID};
	Datum		args[1];
	int			rc;
	bool		isnull;
	Datum		d;

	args[0] = CStringGetTextDatum(body ? body : "");
	rc = AdeExec("SELECT %s.ade_api_error($1)", 1, types, args, NULL, true, 1);
	spi_check(rc, SPI_OK_SELECT, "ade_api_error");
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
static void
store_token(ApiClient *c)
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
	spi_check(rc, SPI_OK_UPDATE, "abm_api_accounts.access_token");
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
						error_words(res.body)),
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
	store_token(c);
	return true;
}

/* ---- requests ---- */

/*
 * One request of the API, answered: GETs sent again (twice) after a 5xx or
 * a broken connection, once with a new token after a 401; a 429/503
 * pauses the account (ans->paused).  A POST is sent once: no clear answer
 * (a 5xx, a broken connection) sets ans->unsure.
 */
static void
api_request(ApiClient *c, const char *method, const char *path, const char *body, ApiAnswer *ans)
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
static void pg_attribute_noreturn()
api_raise(const ApiAnswer *ans, const char *what)
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
	ereport(ERROR,
			(errcode(ans->status == 404 ? ERRCODE_NO_DATA_FOUND : ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
			 errmsg("ABM answered %s with HTTP %ld: %s", what, ans->status, error_words(ans->body))));
}

/* ---- the inventory ---- */

static char *
with_cursor(const char *path, const char *cursor)
{
	if (cursor == NULL)
		return psprintf("%s?limit=" PAGE_LIMIT, path);
	return psprintf("%s?limit=" PAGE_LIMIT "&cursor=%s", path, AdeOAuthEncode(cursor));
}

static bool
time_for_another(ApiClient *c, TimestampTz last_took)
{
	if (c->deadline == 0)
		return true;
	return GetCurrentTimestamp() + 2 * last_took < c->deadline;
}

/*
 * One page of the account's inventory, one statement (force: begin a pass
 * now when none is under way).  *more: another page is due.
 */
static void
inventory_page(ApiClient *c, bool force, ApiCounts *n, bool *more)
{
	Oid			stypes[3] = {INT8OID, INT4OID, BOOLOID};
	Datum		sargs[3];
	Oid			ptypes[4] = {INT8OID, TEXTOID, TEXTOID, TEXTOID};
	Datum		pargs[4];
	char		pnulls[4] = {' ', ' ', ' ', ' '};
	int			rc;
	bool		isnull;
	char	   *phase;
	char	   *server = NULL;
	char	   *cursor = NULL;
	char	   *path;
	char	   *body;
	ApiAnswer	ans;
	HeapTuple	tup;
	TupleDesc	td;
	Datum		d;

	*more = false;
	sargs[0] = Int64GetDatum(c->account_id);
	sargs[1] = Int32GetDatum(ade_inventory_interval);
	sargs[2] = BoolGetDatum(force);
	rc = AdeExec("SELECT phase, server, cursor FROM %s.ade_api_inventory_state($1, $2, $3)",
				 3, stypes, sargs, NULL, false, 1);
	spi_check(rc, SPI_OK_SELECT, "ade_api_inventory_state");
	if (SPI_processed == 0)
		return;
	tup = SPI_tuptable->vals[0];
	td = SPI_tuptable->tupdesc;
	phase = TextDatumGetCString(SPI_getbinval(tup, td, 1, &isnull));
	d = SPI_getbinval(tup, td, 2, &isnull);
	if (!isnull)
		server = TextDatumGetCString(d);
	d = SPI_getbinval(tup, td, 3, &isnull);
	if (!isnull)
		cursor = TextDatumGetCString(d);

	if (strcmp(phase, "servers") == 0)
		path = with_cursor("/v1/mdmServers", cursor);
	else if (strcmp(phase, "devices") == 0)
		path = with_cursor("/v1/orgDevices", cursor);
	else
		path = with_cursor(psprintf("/v1/mdmServers/%s/relationships/devices", AdeOAuthEncode(server)), cursor);
	api_request(c, "GET", path, NULL, &ans);
	if (ans.paused)
	{
		n->paused = true;
		return;
	}
	body = ans.body;
	if (ans.status == 404 && server != NULL)
		body = "{\"data\": []}";	/* a server gone meanwhile holds nothing */
	else if (ans.status == 400 && cursor != NULL)
	{
		/* a cursor ABM no longer takes: the pass begins again, next run */
		rc = AdeExec("UPDATE %s.abm_api_accounts SET inventory_phase = NULL, inventory_cursor = NULL, "
					 "inventory_server = NULL, inventory_started_at = NULL WHERE id = $1",
					 1, stypes, sargs, NULL, false, 0);
		spi_check(rc, SPI_OK_UPDATE, "abm_api_accounts");
		n->note = psprintf("ABM refused the inventory's cursor (GET %s: HTTP 400, %s): the inventory begins again",
						   path, error_words(ans.body));
		return;
	}
	else if (ans.status != 200)
		api_raise(&ans, psprintf("GET %s", path));
	pargs[0] = Int64GetDatum(c->account_id);
	pargs[1] = CStringGetTextDatum(phase);
	if (server)
		pargs[2] = CStringGetTextDatum(server);
	else
		pnulls[2] = 'n';
	pargs[3] = CStringGetTextDatum(body);
	rc = AdeExec("SELECT devices, servers, done FROM %s.ade_api_inventory_page($1, $2, $3, $4::jsonb)",
				 4, ptypes, pargs, pnulls, false, 1);
	spi_check(rc, SPI_OK_SELECT, "ade_api_inventory_page");
	tup = SPI_tuptable->vals[0];
	td = SPI_tuptable->tupdesc;
	if (strcmp(phase, "devices") == 0)
		n->devices += DatumGetInt32(SPI_getbinval(tup, td, 1, &isnull));
	n->servers += DatumGetInt32(SPI_getbinval(tup, td, 2, &isnull));
	*more = !DatumGetBool(SPI_getbinval(tup, td, 3, &isnull));
}

/* the serials (or activity ids) a query returned, copied out of SPI */
static char **
spi_texts(uint64 *count)
{
	char	  **list;
	uint64		i;

	*count = SPI_processed;
	list = palloc(sizeof(char *) * Max(*count, 1));
	for (i = 0; i < *count; i++)
	{
		bool		isnull;

		list[i] = TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
	}
	return list;
}

/*
 * GET path_fmt (with each key) for some keys, one request each, and store
 * every answer in one statement (store: sql over $1 the account, $2 the
 * keys, $3 the answers as text, each cast on its own: a body that is not
 * JSON is that key's failure, never another's).  An answer that is not
 * 200 or 404 is the key's error ("!" and why), not the step's: one device
 * or activity ABM refuses never stops the others.  A pause stops it.
 */
static int
get_each(ApiClient *c, char **keys, uint64 count, const char *path_fmt, const char *store,
		 ApiCounts *n)
{
	Datum	   *k = palloc(sizeof(Datum) * Max(count, 1));
	Datum	   *v = palloc(sizeof(Datum) * Max(count, 1));
	bool	   *vnull = palloc(sizeof(bool) * Max(count, 1));
	int			done = 0;
	uint64		i;
	TimestampTz took = 0;

	for (i = 0; i < count; i++)
	{
		ApiAnswer	ans;
		TimestampTz start = GetCurrentTimestamp();
		char	   *path;

		if (!time_for_another(c, took))
			break;
		path = psprintf(path_fmt, AdeOAuthEncode(keys[i]));
		api_request(c, "GET", path, NULL, &ans);
		if (ans.paused)
		{
			n->paused = true;
			break;
		}
		k[done] = CStringGetTextDatum(keys[i]);
		vnull[done] = false;
		if (ans.status == 200)
			v[done] = CStringGetTextDatum(ans.body);
		else if (ans.status == 404)
			vnull[done] = true;
		else
			v[done] = CStringGetTextDatum(psprintf("!GET %s: %s", path,
												   ans.status ? psprintf("HTTP %ld, %s", ans.status, error_words(ans.body))
												   : "no answer"));
		done++;
		took = GetCurrentTimestamp() - start;
	}
	if (done > 0)
	{
		Oid			types[3] = {INT8OID, TEXTARRAYOID, TEXTARRAYOID};
		Datum		args[3];
		int			rc;

		args[0] = Int64GetDatum(c->account_id);
		args[1] = PointerGetDatum(construct_array(k, done, TEXTOID, -1, false, TYPALIGN_INT));
		args[2] = PointerGetDatum(construct_md_array(v, vnull, 1, &done, (int[]) {1}, TEXTOID, -1, false, TYPALIGN_INT));
		rc = AdeExec(store, 3, types, args, NULL, false, 1);
		spi_check(rc, SPI_OK_SELECT, store);
	}
	return done;
}

/*
 * AppleCare of the given serials (NULL: the account's ade.applecare_per_run
 * devices checked longest ago), one GET each, stored in one statement.
 */
static void
applecare(ApiClient *c, ArrayType *serials, ApiCounts *n)
{
	Oid			types[3] = {INT8OID, INT4OID, TEXTARRAYOID};
	Datum		args[3];
	int			rc;
	uint64		count;
	char	  **list;

	args[0] = Int64GetDatum(c->account_id);
	args[1] = Int32GetDatum(ade_applecare_per_run);
	if (serials)
	{
		args[2] = PointerGetDatum(serials);
		rc = AdeExec("SELECT o.serial FROM %s.abm_org_devices o WHERE o.account_id = $1 "
					 "AND o.serial = ANY ($3) ORDER BY o.serial", 3, types, args, NULL, true, 0);
	}
	else
		rc = AdeExec("SELECT o.serial FROM %s.abm_org_devices o WHERE o.account_id = $1 "
					 "AND o.released_at IS NULL ORDER BY o.applecare_checked_at NULLS FIRST, o.serial LIMIT $2",
					 2, types, args, NULL, true, 0);
	spi_check(rc, SPI_OK_SELECT, "abm_org_devices");
	list = spi_texts(&count);
	n->applecare += get_each(c, list, count, "/v1/orgDevices/%s/appleCareCoverage",
							 "SELECT %s.ade_api_store_applecare($1, $2, $3)", n);
}

/* the account's activities not finished yet, polled; every answer in one statement */
static void
poll_activities(ApiClient *c, ApiCounts *n)
{
	Oid			types[2] = {INT8OID, INT4OID};
	Datum		args[2];
	int			rc;
	uint64		count;
	char	  **ids;

	args[0] = Int64GetDatum(c->account_id);
	args[1] = Int32GetDatum(POLLS_PER_RUN);
	rc = AdeExec("SELECT a.id FROM %s.abm_device_activities a WHERE a.account_id = $1 "
				 "AND a.status = 'IN_PROGRESS' ORDER BY a.polled_at NULLS FIRST, a.created_at LIMIT $2",
				 2, types, args, NULL, true, 0);
	spi_check(rc, SPI_OK_SELECT, "abm_device_activities");
	ids = spi_texts(&count);
	n->activities += get_each(c, ids, count, "/v1/orgDeviceActivities/%s",
							  "SELECT %s.ade_api_store_activities($1, $2, $3)", n);
}

/*
 * What a run does for one account, each part a step of its own
 * (AdeTrySubxact: in the pg_cron job each is committed at once): its
 * activities polled, the inventory's pages while time is left, AppleCare.
 */
typedef struct AccountStep
{
	ApiClient  *client;
	int64		account_id;
	bool		force;
	bool		more;
	ApiCounts	n;
} AccountStep;

static void
open_step(void *arg)
{
	AccountStep *s = (AccountStep *) arg;

	s->client = client_open(s->account_id);
}

static void
activities_step(void *arg)
{
	AccountStep *s = (AccountStep *) arg;

	poll_activities(s->client, &s->n);
	store_token(s->client);
}

static void
page_step(void *arg)
{
	AccountStep *s = (AccountStep *) arg;

	inventory_page(s->client, s->force, &s->n, &s->more);
	store_token(s->client);
}

static void
applecare_step(void *arg)
{
	AccountStep *s = (AccountStep *) arg;

	applecare(s->client, NULL, &s->n);
	store_token(s->client);
}

/* the account's last error, kept (or cleared) */
static void
note_error(int64 account_id, const char *error)
{
	Oid			types[2] = {INT8OID, TEXTOID};
	Datum		args[2];
	char		nulls[2] = {' ', error ? ' ' : 'n'};
	int			rc;

	args[0] = Int64GetDatum(account_id);
	args[1] = error ? CStringGetTextDatum(error) : (Datum) 0;
	rc = AdeExec("UPDATE %s.abm_api_accounts SET last_error = $2, "
				 "last_error_at = CASE WHEN $2 IS NULL THEN last_error_at ELSE now() END WHERE id = $1",
				 2, types, args, nulls, false, 0);
	spi_check(rc, SPI_OK_UPDATE, "abm_api_accounts.last_error");
}

/* one step; false (and *msg) when it failed */
static bool
step(void (*f) (void *), AccountStep *s, MemoryContext cxt, char **msg)
{
	ErrorData  *error = NULL;
	AdeAbmKind	kind;
	MemoryContext old = MemoryContextSwitchTo(cxt);
	bool		ok = AdeTrySubxact(f, s, &error, &kind);

	MemoryContextSwitchTo(old);
	if (!ok)
		*msg = pstrdup(error->message);
	return ok;
}

/*
 * One account's part of a run (force: begin an inventory now).  An ABM or
 * data error is kept as the account's last_error (and returned), never the
 * run's end; a pause ABM asked for was kept by note_pause().
 */
static char *
run_account(int64 account_id, bool force, TimestampTz deadline, ApiCounts *n)
{
	AccountStep s;
	char	   *msg = NULL;
	MemoryContext outer = CurrentMemoryContext;
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext, "ade api account",
											  ALLOCSET_DEFAULT_SIZES);
	MemoryContext pagecxt = AllocSetContextCreate(cxt, "ade api page", ALLOCSET_DEFAULT_SIZES);

	memset(&s, 0, sizeof(s));
	s.account_id = account_id;
	if (step(open_step, &s, cxt, &msg))
	{
		TimestampTz took = 0;

		s.client->deadline = deadline;
		/* activities and AppleCare: one device or activity refused stops nothing */
		if (step(activities_step, &s, pagecxt, &msg) && !s.n.paused && ade_applecare_per_run > 0)
			(void) step(applecare_step, &s, pagecxt, &msg);
		MemoryContextReset(pagecxt);
		s.force = force;
		while (msg == NULL && !s.n.paused)
		{
			TimestampTz start = GetCurrentTimestamp();

			if (!time_for_another(s.client, took))
				break;
			if (!step(page_step, &s, pagecxt, &msg))
				break;
			if (s.n.note != NULL)
			{
				msg = MemoryContextStrdup(outer, s.n.note);
				break;
			}
			MemoryContextReset(pagecxt);
			s.force = false;	/* a pass is under way: no other begins */
			took = GetCurrentTimestamp() - start;
			if (!s.more)
				break;
		}
		client_close(s.client);
	}
	MemoryContextDelete(cxt);
	if (!s.n.paused)
		note_error(account_id, msg);
	*n = s.n;
	return msg;
}

/* the end of an account's pass (finish_pass_step), its note */
typedef struct FinishStep
{
	int64		account_id;
	char	   *note;
} FinishStep;

static void
finish_pass_step(void *arg)
{
	FinishStep *f = (FinishStep *) arg;
	Oid			types[1] = {INT8OID};
	Datum		args[1] = {Int64GetDatum(f->account_id)};
	int			rc;
	bool		isnull;
	Datum		d;

	rc = AdeExec("SELECT note FROM %s.ade_api_finish_pass($1)", 1, types, args, NULL, false, 1);
	spi_check(rc, SPI_OK_SELECT, "ade_api_finish_pass");
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (!isnull)
		f->note = TextDatumGetCString(d);
}

/*
 * The end of an account's pass, when its pages are all read: the drift
 * takes hosts (the lock rule with the application, within deadline), so it
 * comes after every request of the run, never before one.  A failure or a
 * note is the account's last error.
 */
static char *
finish_account(int64 account_id, TimestampTz deadline, char *error)
{
	FinishStep	f = {account_id, NULL};
	char	   *msg = NULL;
	TimestampTz saved = AdeLockDeadline;

	AdeLockDeadline = deadline;
	PG_TRY();
	{
		ErrorData  *e = NULL;
		AdeAbmKind	kind;

		if (!AdeTrySubxact(finish_pass_step, &f, &e, &kind))
			msg = pstrdup(e->message);
		else if (f.note)
			msg = f.note;
	}
	PG_FINALLY();
	{
		AdeLockDeadline = saved;
	}
	PG_END_TRY();
	if (msg != NULL)
		note_error(account_id, msg);
	return msg ? msg : error;
}


static int64 *
account_ids(int *n)
{
	int			rc;
	int			i;
	int64	   *ids;

	rc = AdeExec("SELECT id FROM %s.abm_api_accounts ORDER BY id", 0, NULL, NULL, NULL, true, 0);
	spi_check(rc, SPI_OK_SELECT, "abm_api_accounts");
	*n = (int) SPI_processed;
	ids = palloc(sizeof(int64) * Max(*n, 1));
	for (i = 0; i < *n; i++)
	{
		bool		isnull;

		ids[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
	}
	return ids;
}

/* how many API accounts there are (a run gives them a share) */
int
AdeApiAccounts(void)
{
	int			n;

	(void) account_ids(&n);
	return n;
}

/*
 * The accounts' share of a run of ade_sync() (SPI connected): each polls
 * its activities, reads its inventory when due and some AppleCare, within
 * an equal part of the time left until deadline.
 */
void
AdeApiRun(TimestampTz deadline)
{
	int			n;
	int			i;
	int64	   *ids = account_ids(&n);

	for (i = 0; i < n; i++)
	{
		TimestampTz now = GetCurrentTimestamp();
		ApiCounts	counts;

		if (now >= deadline)
			break;
		(void) run_account(ids[i], false, now + (deadline - now) / (n - i), &counts);
	}
	/* the passes whose pages are all read end after every request */
	for (i = 0; i < n; i++)
		(void) finish_account(ids[i], deadline, NULL);
}

/* ---- the SQL functions ---- */

static void
not_null(FunctionCallInfo fcinfo, int arg, const char *name, const char *fn)
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

	not_null(fcinfo, 0, "client_id", "ade_add_api_account()");
	not_null(fcinfo, 1, "key_id", "ade_add_api_account()");
	not_null(fcinfo, 2, "private_key", "ade_add_api_account()");
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
	spi_check(rc, SPI_OK_SELECT, "abm_api_accounts id");
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
		spi_check(rc, SPI_OK_INSERT, "abm_api_accounts");
	}
	c->token_new = false;
	client_close(c);
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

	not_null(fcinfo, 0, "account_id", "ade_remove_api_account()");
	args[0] = PG_GETARG_DATUM(0);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	rc = AdeExec("DELETE FROM %s.abm_api_accounts WHERE id = $1", 1, types, args, NULL, false, 0);
	spi_check(rc, SPI_OK_DELETE, "abm_api_accounts");
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("API account " INT64_FORMAT " does not exist", DatumGetInt64(args[0])),
				 errhint("SELECT id, client_id FROM abm_api_accounts lists them.")));
	SPI_finish();
	PG_RETURN_VOID();
}

/*
 * ade_inventory_sync() returns table(account_id, devices, servers,
 * applecare, activities, error): one inventory of every account now
 * (begun now where none is under way; within ade.max_sync_seconds), its
 * activities polled and its AppleCare budget.
 */
Datum
ade_inventory_sync(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int			n;
	int			i;
	int64	   *ids;
	TimestampTz deadline;
	ApiCounts  *counts;
	char	  **errors;

	AdeRefuseOnStandby("ade_inventory_sync()");
	InitMaterializedSRF(fcinfo, 0);
	/* never beside a run (the drift and a run's pages take the same rows) */
	AdeRunLockWait("ade_inventory_sync()");
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	ids = account_ids(&n);
	counts = palloc0(sizeof(ApiCounts) * Max(n, 1));
	errors = palloc0(sizeof(char *) * Max(n, 1));
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ade_max_sync_seconds * 1000L);
	for (i = 0; i < n; i++)
	{
		TimestampTz now = GetCurrentTimestamp();

		errors[i] = run_account(ids[i], true, now + Max(deadline - now, 0) / (n - i), &counts[i]);
	}
	/* the ends of the passes, each taking hosts, after every request */
	for (i = 0; i < n; i++)
		errors[i] = finish_account(ids[i], deadline, errors[i]);
	for (i = 0; i < n; i++)
	{
		Datum		values[6];
		bool		nulls[6] = {false, false, false, false, false, false};
		char	   *error = errors[i];

		if (error == NULL && counts[i].paused)
			error = "ABM asked to wait (abm_api_accounts.not_before): the inventory goes on after";
		values[0] = Int64GetDatum(ids[i]);
		values[1] = Int32GetDatum(counts[i].devices);
		values[2] = Int32GetDatum(counts[i].servers);
		values[3] = Int32GetDatum(counts[i].applecare);
		values[4] = Int32GetDatum(counts[i].activities);
		if (error)
			values[5] = CStringGetTextDatum(error);
		else
			nulls[5] = true;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	SPI_finish();
	return (Datum) 0;
}

/*
 * ade_refresh_applecare(serials text[]) returns int: the coverage of these
 * devices (known to an account's inventory) fetched now, one request each;
 * how many were.  A pause ABM asks for ends it early (a WARNING).
 */
Datum
ade_refresh_applecare(PG_FUNCTION_ARGS)
{
	ArrayType  *serials;
	int			n;
	int			i;
	int64	   *ids;
	int			done = 0;

	not_null(fcinfo, 0, "serials", "ade_refresh_applecare()");
	AdeRefuseOnStandby("ade_refresh_applecare()");
	serials = PG_GETARG_ARRAYTYPE_P(0);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	ids = account_ids(&n);
	for (i = 0; i < n; i++)
	{
		ApiClient  *c = client_open(ids[i]);
		ApiCounts	counts;

		memset(&counts, 0, sizeof(counts));
		applecare(c, serials, &counts);
		store_token(c);
		client_close(c);
		done += counts.applecare;
		if (counts.paused)
		{
			ereport(WARNING,
					(errmsg("ABM asked to wait: the AppleCare of %d devices was fetched, not the rest", done),
					 errhint("abm_api_accounts.not_before says until when.")));
			break;
		}
	}
	SPI_finish();
	PG_RETURN_INT32(done);
}

/*
 * Start an activity: the server by id or name (one of the accounts'), the
 * serials (1 to 1000, known to that account's inventory or not: ABM says).
 * Returns the activity's id; an unclear answer is kept as an UNKNOWN
 * activity (a WARNING says so) and never sent again.
 */
static Datum
start_activity(FunctionCallInfo fcinfo, const char *type, const char *fn)
{
	ArrayType  *serials;
	char	   *server;
	Oid			types[3] = {TEXTOID, TEXTARRAYOID, TEXTOID};
	Datum		args[3];
	int			rc;
	bool		isnull;
	int64		account_id;
	char	   *server_id;
	char	   *body;
	ApiClient  *c;
	ApiAnswer	ans;
	char	   *id;

	not_null(fcinfo, 0, "serials", fn);
	not_null(fcinfo, 1, "mdm_server", fn);
	AdeRefuseOnStandby(fn);
	serials = PG_GETARG_ARRAYTYPE_P(0);
	server = text_to_cstring(PG_GETARG_TEXT_PP(1));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	args[0] = CStringGetTextDatum(server);
	args[1] = PointerGetDatum(serials);
	args[2] = CStringGetTextDatum(type);
	rc = AdeExec("SELECT account_id, server_id, body FROM %s.ade_api_activity_request($1, $2, $3)",
				 3, types, args, NULL, true, 1);
	spi_check(rc, SPI_OK_SELECT, "ade_api_activity_request");
	account_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	server_id = TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	body = TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
	c = client_open(account_id);
	api_request(c, "POST", "/v1/orgDeviceActivities", body, &ans);
	store_token(c);
	client_close(c);
	if (ans.paused)
	{
		/* no ERROR: the pause ABM asked for is kept (not_before) */
		ereport(WARNING,
				(errmsg("ABM asked to wait: no %s activity was started", type),
				 errhint("abm_api_accounts.not_before says until when; call it again after.")));
		SPI_finish();
		PG_RETURN_NULL();
	}
	if (!ans.unsure && ans.status != 201 && ans.status != 200)
		api_raise(&ans, psprintf("POST /v1/orgDeviceActivities (%s)", type));
	{
		Oid			stypes[6] = {INT8OID, TEXTOID, TEXTOID, TEXTARRAYOID, TEXTOID, TEXTOID};
		Datum		sargs[6];
		char		snulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};

		sargs[0] = Int64GetDatum(account_id);
		sargs[1] = CStringGetTextDatum(type);
		sargs[2] = CStringGetTextDatum(server_id);
		sargs[3] = PointerGetDatum(serials);
		if (ans.unsure)
		{
			snulls[4] = 'n';
			sargs[5] = CStringGetTextDatum(ans.status ? psprintf("HTTP %ld: %s", ans.status, error_words(ans.body))
										   : "no answer");
		}
		else
		{
			sargs[4] = CStringGetTextDatum(ans.body);
			snulls[5] = 'n';
		}
		rc = AdeExec("SELECT %s.ade_api_store_new_activity($1, $2, $3, $4, $5::jsonb, $6)",
					 6, stypes, sargs, snulls, false, 1);
		spi_check(rc, SPI_OK_SELECT, "ade_api_store_new_activity");
		id = TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	}
	if (ans.unsure)
		ereport(WARNING,
				(errmsg("ABM gave no clear answer to the %s activity: it may have started, and is not sent again", type),
				 errdetail("Kept as activity %s, status UNKNOWN.", id),
				 errhint("The next inventory (ade_inventory_sync()) shows which server holds the devices.")));
	SPI_finish();
	PG_RETURN_TEXT_P(cstring_to_text(id));
}

Datum
ade_assign_devices(PG_FUNCTION_ARGS)
{
	return start_activity(fcinfo, "ASSIGN_DEVICES", "ade_assign_devices()");
}

Datum
ade_unassign_devices(PG_FUNCTION_ARGS)
{
	return start_activity(fcinfo, "UNASSIGN_DEVICES", "ade_unassign_devices()");
}
