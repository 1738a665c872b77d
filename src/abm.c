/*-------------------------------------------------------------------------
 *
 * abm.c
 *		The ABM web-service client: headers, the session, retries, the
 *		classes of ABM's errors, and GET /account.
 *
 * Owns: what a request to ABM looks like (User-Agent, protocol version,
 * content type, X-ADM-Auth-Session), how a session is obtained (GET /session
 * signed with OAuth 1.0a, oauth.c), cached (ade_token_secrets.session_token,
 * so that the next call and the next backend reuse it; pg_cron starts a new
 * backend every minute) and renewed (on 401, on 403 FORBIDDEN, and when an
 * answer carries a new X-ADM-Auth-Session), how failures are retried (5xx,
 * 429 and broken connections, with exponential backoff, bounded by
 * ade.max_retries; a timeout is not retried), which answers ask for a
 * pause and which requests a pause holds back (pause.c keeps the pauses:
 * loaded with the token, stored in ade_rate_limits), the hand-over of an
 * answer sent ahead (ahead.c) to the request it was sent for, and how ABM's
 * bare error codes map onto SQLSTATEs.  It does not own the transport
 * (http.c), the parse of an answer (json.c) nor the sync (sync.c).
 *
 * Transactions: AdeAbmOpen() and AdeAbmSaveSession() read and write
 * ade_token_secrets through SPI; the caller has SPI connected.  A session
 * saved in a transaction that later rolls back is simply obtained again.
 *
 * No secret reaches a message: errors name the endpoint and ABM's code,
 * never a header or a credential.
 *
 * Copyright (c) 2026, the ade authors
 *
 * IDENTIFICATION
 *	  src/abm.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "ade.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

PG_FUNCTION_INFO_V1(ade_refresh_account);

AdeAbmKind	AdeAbmLastErrorKind = ABM_OK;
/* the Retry-After (seconds) of the last 429 raised, -1 when none */
int			AdeAbmLastRetryAfter = -1;

const char *
AdeAbmKindName(AdeAbmKind kind)
{
	switch (kind)
	{
		case ABM_OK:
			return "ok";
		case ABM_EXPIRED_CURSOR:
			return "EXPIRED_CURSOR";
		case ABM_INVALID_CURSOR:
			return "INVALID_CURSOR";
		case ABM_EXHAUSTED_CURSOR:
			return "EXHAUSTED_CURSOR";
		case ABM_CURSOR_REQUIRED:
			return "CURSOR_REQUIRED";
		case ABM_TERMS_NOT_SIGNED:
			return "T_C_NOT_SIGNED";
		case ABM_TOKEN_REJECTED:
			return "token_rejected";
		case ABM_UNAUTHORIZED:
			return "unauthorized";
		case ABM_THROTTLED:
			return "throttled";
		case ABM_SERVER_ERROR:
			return "server_error";
		case ABM_UNKNOWN_PROFILE:
			return "INVALID_PROFILE";
		case ABM_DEADLINE:
			return "deadline";
		case ABM_PAUSED:
			return "paused";
		case ABM_OTHER:
			return "error";
	}
	return "error";
}

/*
 * ABM answers errors with a bare code in the body, sometimes quoted.
 */
AdeAbmKind
AdeAbmClassify(long status, const char *body)
{
	char		code[64];
	const char *p = body ? body : "";
	size_t		n;

	if (status >= 200 && status < 300)
		return ABM_OK;

	while (*p == ' ' || *p == '"' || *p == '\n' || *p == '\r' || *p == '\t')
		p++;
	n = strcspn(p, "\" \r\n\t");
	if (n >= sizeof(code))
		n = sizeof(code) - 1;
	memcpy(code, p, n);
	code[n] = '\0';

	if (strcmp(code, "T_C_NOT_SIGNED") == 0)
		return ABM_TERMS_NOT_SIGNED;
	if (pg_strcasecmp(code, "token_rejected") == 0 ||
		pg_strcasecmp(code, "signature_invalid") == 0 ||
		pg_strcasecmp(code, "token_expired") == 0 ||
		pg_strcasecmp(code, "oauth_problem_adm_token_rejected") == 0)
		return ABM_TOKEN_REJECTED;
	if (strcmp(code, "EXPIRED_CURSOR") == 0)
		return ABM_EXPIRED_CURSOR;
	if (strcmp(code, "INVALID_CURSOR") == 0)
		return ABM_INVALID_CURSOR;
	if (strcmp(code, "EXHAUSTED_CURSOR") == 0)
		return ABM_EXHAUSTED_CURSOR;
	if (strcmp(code, "CURSOR_REQUIRED") == 0)
		return ABM_CURSOR_REQUIRED;
	/* a profile UUID ABM no longer knows (the profile was deleted there) */
	if (status == 400 && (strcmp(code, "INVALID_PROFILE") == 0 ||
						  strcmp(code, "INVALID_PROFILE_UUID") == 0 ||
						  strcmp(code, "PROFILE_NOT_FOUND") == 0))
		return ABM_UNKNOWN_PROFILE;
	if (status == 401 || (status == 403 && pg_strcasecmp(code, "FORBIDDEN") == 0))
		return ABM_UNAUTHORIZED;
	if (status == 429)
		return ABM_THROTTLED;
	if (status >= 500)
		return ABM_SERVER_ERROR;
	return ABM_OTHER;
}

/*
 * A short, secret-free excerpt of an error body for messages (and so for
 * ade_sync_runs.error and abm_tokens.last_error): at most 80 bytes, cut at
 * a character boundary (pg_mbcliplen), control characters as spaces, and
 * anything that is not valid in the database's encoding as '?', so that a
 * stored message never makes a dump unrestorable.
 */
static char *
body_excerpt(const char *body)
{
	StringInfoData out;
	const unsigned char *p;
	bool		utf8 = GetDatabaseEncoding() == PG_UTF8;

	if (body == NULL || body[0] == '\0')
		return pstrdup("(empty body)");
	initStringInfo(&out);
	for (p = (const unsigned char *) body; *p && out.len < 80;)
	{
		int			len = 1;

		if (*p < 0x20 || *p == 0x7F)
			appendStringInfoChar(&out, ' ');
		else if (*p < 0x80)
			appendStringInfoChar(&out, (char) *p);
		else if (utf8 && (len = pg_utf_mblen(p)) > 1 &&
				 strnlen((const char *) p, len) == (size_t) len &&
				 pg_utf8_islegal(p, len))
			appendBinaryStringInfo(&out, (const char *) p, len);
		else
		{
			appendStringInfoChar(&out, '?');
			len = 1;
		}
		p += len;
	}
	out.len = pg_mbcliplen(out.data, out.len, 80);
	out.data[out.len] = '\0';
	return out.data;
}

/* the excerpt of an answer's body, for messages and stored text */
char *
AdeAbmExcerpt(const char *body)
{
	return body_excerpt(body);
}

void
AdeAbmRaise(const AdeAbmResponse *resp, const char *what)
{
	AdeAbmLastErrorKind = resp->kind;
	AdeAbmLastRetryAfter = resp->kind == ABM_THROTTLED ? resp->retry_after : -1;

	switch (resp->kind)
	{
		case ABM_TERMS_NOT_SIGNED:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
					 errmsg("ABM refused %s: the terms and conditions are not accepted (T_C_NOT_SIGNED)", what),
					 errhint("An administrator must sign in to Apple Business Manager and accept the new terms.")));
			break;
		case ABM_TOKEN_REJECTED:
		case ABM_UNAUTHORIZED:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
					 errmsg("ABM rejected the server token on %s (HTTP %ld %s)",
							what, resp->status, body_excerpt(resp->body)),
					 errhint("Download a new server token from Apple Business Manager and pass it to ade_add_token().")));
			break;
		case ABM_THROTTLED:
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("ABM throttled %s (HTTP 429), retry after %d s",
							what, resp->retry_after),
					 errdetail("The next run goes on from the stored cursor.")));
			break;
		case ABM_SERVER_ERROR:
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("ABM failed %s (HTTP %ld) after %d retries",
							what, resp->status, resp->retries),
					 errdetail("The next run goes on from the stored cursor.")));
			break;
		default:
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_EXCEPTION),
					 errmsg("ABM answered %s with HTTP %ld: %s",
							what, resp->status, body_excerpt(resp->body))));
	}
	pg_unreachable();
}

/*
 * The run's time budget (ade.max_sync_seconds) ran out before or during a
 * request: not ABM's failure; the sync records it as a note, and the next
 * run goes on from the stored cursor.
 */
void
AdeAbmRaiseDeadline(const char *what)
{
	AdeAbmLastErrorKind = ABM_DEADLINE;
	ereport(ERROR,
			(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
			 errmsg("the run's time budget (ade.max_sync_seconds) ran out before %s was answered", what),
			 errdetail("The next run goes on from the stored cursor.")));
}

/* milliseconds from now until a deadline (negative: past) */
static long
ms_until(TimestampTz deadline)
{
	return (long) ((deadline - GetCurrentTimestamp()) / 1000);
}

static bool valid_session(const char *s);

/* ---- opening a client ---- */

static void
wipe(char *s)
{
	if (s)
		explicit_bzero(s, strlen(s));
}

/* wipe credentials that are no longer needed */
void
AdeAbmWipeCreds(AdeAbmCreds *creds)
{
	wipe(creds->consumer_secret);
	wipe(creds->access_token);
	wipe(creds->access_secret);
}

/*
 * Memory-context reset callback of a client: its credentials and session
 * are wiped however the context goes away, an ERROR included.
 */
static void
client_wipe(void *arg)
{
	AdeAbmClient *c = (AdeAbmClient *) arg;

	AdeAbmWipeCreds(&c->creds);
	wipe(c->session);
}

AdeAbmClient *
AdeAbmOpenCreds(const AdeAbmCreds *creds)
{
	AdeAbmClient *c = palloc0(sizeof(AdeAbmClient));

	c->cxt = CurrentMemoryContext;

	c->creds.consumer_key = pstrdup(creds->consumer_key);
	c->creds.consumer_secret = pstrdup(creds->consumer_secret);
	c->creds.access_token = pstrdup(creds->access_token);
	c->creds.access_secret = pstrdup(creds->access_secret);
	c->wipe.func = client_wipe;
	c->wipe.arg = c;
	MemoryContextRegisterResetCallback(c->cxt, &c->wipe);
	c->http = AdeHttpCreate();
	return c;
}

static char *
spi_text(int row, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, &isnull);

	return isnull ? NULL : TextDatumGetCString(d);
}

/* load a stored token's credentials, cached session and pauses (SPI connected) */
AdeAbmClient *
AdeAbmOpen(int64 token_id)
{
	Oid			argtypes[1] = {INT8OID};
	Datum		args[1] = {Int64GetDatum(token_id)};
	AdeAbmCreds creds;
	AdeAbmClient *c;
	char	   *session;
	int			rc;
	bool		isnull;
	Datum		kinds;
	Datum		untils;
	SPITupleTable *tt;

	/* the pauses ABM asked for (Retry-After) that have not ended */
	/* (an 0.4 schema the library runs against before the update has none) */
	if (AdeSqlAtLeast(0, 5))
		rc = AdeExec("SELECT t.consumer_key, s.consumer_secret, s.access_token, "
					 "s.access_secret, s.session_token, "
					 "ARRAY(SELECT r.request FROM %s.ade_rate_limits r "
					 "      WHERE r.token_id = t.id AND r.paused_until > now() ORDER BY r.request), "
					 "ARRAY(SELECT r.paused_until FROM %s.ade_rate_limits r "
					 "      WHERE r.token_id = t.id AND r.paused_until > now() ORDER BY r.request) "
					 "FROM %s.abm_tokens t JOIN %s.ade_token_secrets s ON s.token_id = t.id "
					 "WHERE t.id = $1", 1, argtypes, args, NULL, false, 1);
	else
		rc = AdeExec("SELECT t.consumer_key, s.consumer_secret, s.access_token, "
					 "s.access_secret, s.session_token, '{}'::text[], '{}'::timestamptz[] "
					 "FROM %s.abm_tokens t JOIN %s.ade_token_secrets s ON s.token_id = t.id "
					 "WHERE t.id = $1", 1, argtypes, args, NULL, false, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute_with_args failed: %s", SPI_result_code_string(rc));
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("abm token " INT64_FORMAT " does not exist", token_id),
				 errhint("SELECT id, org_name FROM abm_tokens lists the tokens.")));
	/* every column read before opening any: the vault runs queries of its own */
	tt = SPI_tuptable;
	creds.consumer_key = spi_text(0, 1);
	creds.consumer_secret = spi_text(0, 2);
	creds.access_token = spi_text(0, 3);
	creds.access_secret = spi_text(0, 4);
	session = spi_text(0, 5);
	kinds = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 6, &isnull);
	untils = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 7, &isnull);
	creds.consumer_secret = AdeVaultOpen(creds.consumer_secret,
										 AdeVaultPlace("ade_token_secrets", "consumer_secret", token_id));
	creds.access_token = AdeVaultOpen(creds.access_token,
									  AdeVaultPlace("ade_token_secrets", "access_token", token_id));
	creds.access_secret = AdeVaultOpen(creds.access_secret,
									   AdeVaultPlace("ade_token_secrets", "access_secret", token_id));
	c = AdeAbmOpenCreds(&creds);
	AdeAbmWipeCreds(&creds);
	c->token_id = token_id;
	{
		ArrayType  *ka = DatumGetArrayTypeP(kinds);
		ArrayType  *ua = DatumGetArrayTypeP(untils);
		Datum	   *kv;
		Datum	   *uv;
		int			nk;
		int			nu;
		int			i;

		deconstruct_array(ka, TEXTOID, -1, false, TYPALIGN_INT, &kv, NULL, &nk);
		deconstruct_array(ua, TIMESTAMPTZOID, sizeof(TimestampTz), FLOAT8PASSBYVAL,
						  TYPALIGN_DOUBLE, &uv, NULL, &nu);
		for (i = 0; i < nk && i < nu; i++)
			AdePauseNote(c, TextDatumGetCString(kv[i]), DatumGetTimestampTz(uv[i]), 0, 0, false);
	}
	/* the sealed values: nothing of the run's stays until it ends */
	SPI_freetuptable(tt);
	/* a session that does not open (sealed under a key since removed) is no session */
	if (session)
		c->session = AdeVaultTryOpen(session, AdeVaultPlace("ade_token_secrets", "session_token", token_id));
	return c;
}

void
AdeAbmClose(AdeAbmClient *client)
{
	if (client)
	{
		AdeHttpDestroy(client->http);
		/* nothing of the token stays in the backend's memory after the run */
		AdeAbmWipeCreds(&client->creds);
		wipe(client->session);
	}
}

/* persist a new session so the next call and the next backend reuse it */
void
AdeAbmSaveSession(AdeAbmClient *client)
{
	Oid			argtypes[2] = {INT8OID, TEXTOID};
	Datum		args[2];
	char		nulls[2] = {' ', ' '};
	int			rc;

	if (!client->session_dirty || client->token_id == 0)
		return;
	args[0] = Int64GetDatum(client->token_id);
	if (client->session)
		args[1] = CStringGetTextDatum(AdeVaultSeal(client->session,
												   AdeVaultPlace("ade_token_secrets", "session_token",
																 client->token_id)));
	else
		nulls[1] = 'n';
	rc = AdeExec("UPDATE %s.ade_token_secrets SET session_token = $2, session_at = now() "
				   "WHERE token_id = $1", 2, argtypes, args, nulls, false, 0);
	if (rc != SPI_OK_UPDATE)
		elog(ERROR, "SPI_execute_with_args failed: %s", SPI_result_code_string(rc));
	client->session_dirty = false;
}

/* ---- requests ---- */

/* the full URL of an endpoint: ade.abm_url (checked now) without its trailing slashes, then path */
static char *
abm_url(const char *path)
{
	const char *base = AdeAbmBaseUrl();
	int			n = (int) strlen(base);

	while (n > 0 && base[n - 1] == '/')
		n--;
	return psprintf("%.*s%s", n, base, path);
}

/*
 * Sleep for ms, interruptibly, by the clock: a latch set meanwhile (a
 * signal to the backend) wakes the wait, but does not shorten the sleep.
 */
void
AdeSleep(int ms)
{
	TimestampTz end = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ms);
	long		left;

	while ((left = ms_until(end)) > 0)
	{
		CHECK_FOR_INTERRUPTS();
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Min(left, 100), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
	CHECK_FOR_INTERRUPTS();
}

static bool
transport_retryable(int curl_code)
{
	/* broken or refused connections, answers cut short; not timeouts */
	switch (curl_code)
	{
		case 7:					/* CURLE_COULDNT_CONNECT */
		case 18:				/* CURLE_PARTIAL_FILE */
		case 52:				/* CURLE_GOT_NOTHING */
		case 55:				/* CURLE_SEND_ERROR */
		case 56:				/* CURLE_RECV_ERROR */
			return true;
		default:
			return false;
	}
}

/* the headers of a request to ABM; auth (a session or OAuth header) last */
static int
abm_headers(const char *body, const char *auth, const char **hdr)
{
	int			nh = 0;

	hdr[nh++] = "User-Agent: " ADE_USER_AGENT;
	hdr[nh++] = "X-Server-Protocol-Version: 10";
	if (body)
		hdr[nh++] = "Content-Type: application/json;charset=UTF8";
	if (auth)
		hdr[nh++] = auth;
	return nh;
}

/*
 * A request the run expects a token to make, sent ahead (ahead.c) with its
 * stored session: the same request AdeAbmCall() would send with that
 * session, so that its answer can be taken for it.  The caller leaves out
 * tokens whose kind of request is paused.
 */
void
AdeAbmAhead(int64 token_id, const char *session, int order, const char *method,
			const char *path, const char *body)
{
	const char *hdr[4];
	int			nh;
	char	   *auth;
	const char *base = AdeAbmBaseUrl();
	int			n = (int) strlen(base);

	if (session == NULL || !valid_session(session))
		return;
	while (n > 0 && base[n - 1] == '/')
		n--;
	auth = psprintf("X-ADM-Auth-Session: %s", session);
	nh = abm_headers(body, auth, hdr);
	AdeAheadQueue(token_id, order, method, pnstrdup(base, n), path, body, hdr, nh);
	explicit_bzero(auth, strlen(auth));
}

/*
 * One raw request with retries of transport failures, 5xx and 429s that
 * ask for a short wait.  Raises on transport failure that outlasts the
 * retries.  No request runs past client->deadline: its timeouts are cut to
 * the time left, a retry that would start after it is not made, and a
 * request it cuts short is reported as the budget running out
 * (AdeAbmRaiseDeadline), not as ABM's timeout.  *retries says how many
 * times the request was sent again.
 *
 * A request of a kind ABM paused (an earlier 429 or 503 with a Retry-After,
 * stored in ade_rate_limits) is not sent; a 429 or 503 whose Retry-After is
 * not waited out here pauses its kind (AdeAbmSavePauses() stores it).  The
 * first attempt takes the answer of the same request sent ahead, if the run
 * sent it (ahead.c).  A client whose requests are not safe to send twice
 * (client->once: a release, an escrow) does not resend one that reached
 * ABM, and client->unsure says whether it may have been done.
 */
static void
abm_send(AdeAbmClient *client, const char *method, const char *path,
		 const char *body, const char *auth, AdeHttpResult *res, int *retries)
{
	const char *hdr[4];
	int			nh;
	char	   *url = abm_url(path);
	char	   *what = psprintf("%s %s", method, path);
	const char *kind = AdeAbmRequestKind(method, path);
	int			attempt;
	/* sent once (a new session is always safe to ask for again) */
	bool		once = client->once && strcmp(path, "/session") != 0;

	nh = abm_headers(body, auth, hdr);

	for (attempt = 0;; attempt++)
	{
		bool		retry = false;
		int			wait_ms = ade_retry_backoff << Min(attempt, 16);
		long		timeout = ade_http_timeout;
		long		connect = ade_connect_timeout;
		bool		cut = false;
		TimestampTz paused = AdePausedUntil(client, kind);

		*retries = attempt;
		if (paused != 0)
			AdePauseRefuse(client, what, kind, paused);
		if (client->deadline != 0)
		{
			long		left = ms_until(client->deadline);

			if (left <= 0)
				AdeAbmRaiseDeadline(what);
			if (left < timeout)
			{
				timeout = left;
				cut = true;
			}
			connect = Min(connect, timeout);
		}

		client->requests++;
		if (attempt > 0 || client->token_id == 0 ||
			!AdeAheadTake(client->token_id, method, path, body, auth, timeout, res))
			AdeHttpPerform(client->http, method, url, hdr, nh, body, timeout, connect, res);
		/* a request not safe to send twice: may it have been done? */
		if (once)
			client->unsure = res->curl_code != 0 ? res->connected : res->status >= 500;

		if (res->curl_code != 0)
		{
			/*
			 * The run's deadline, when it has come and the request started
			 * with little time left (the run's work used the budget).  A
			 * request that had seconds and got no answer is ABM's fault,
			 * reported as an error on the token, even when the budget cut
			 * its limit: else a hung ABM would never show as an error.
			 */
			if (res->timed_out && cut && res->connected && timeout < 5000 &&
				ms_until(client->deadline) <= 50)
				AdeAbmRaiseDeadline(what);
			if (res->timed_out && cut && res->connected)
				ereport(ERROR,
						(errcode(ERRCODE_CONNECTION_FAILURE),
						 errmsg("ABM request %s got no answer within %ld ms, the time left of the run", what, timeout),
						 errhint("ade.max_sync_seconds bounds a whole run (its share per token); ade.http_timeout one request.")));
			if (res->timed_out && !res->connected)
				ereport(ERROR,
						(errcode(ERRCODE_CONNECTION_FAILURE),
						 errmsg("ABM request %s could not connect within %ld ms", what, connect),
						 errhint("ade.connect_timeout sets the limit; check the network path to ade.abm_url.")));
			if (res->timed_out)
				ereport(ERROR,
						(errcode(ERRCODE_CONNECTION_FAILURE),
						 errmsg("ABM request %s timed out after %ld ms", what, timeout),
						 errhint("ade.http_timeout sets the limit.")));
			/*
			 * A request that is not safe to send twice (client->once) is
			 * not sent again once it reached ABM: the first may have done
			 * it, and the second's answer would say otherwise
			 */
			if (!transport_retryable(res->curl_code) || attempt >= ade_max_retries ||
				(once && res->connected))
				ereport(ERROR,
						(errcode(ERRCODE_CONNECTION_FAILURE),
						 errmsg("ABM request %s failed: %s", what, res->curl_error)));
			retry = true;
		}
		else if ((res->status == 429 || res->status == 503) && res->retry_after >= 0)
		{
			if (res->retry_after_bounded)
				ereport(LOG,
						(errmsg("ade: ABM asked token " INT64_FORMAT " to wait more than %d s before %s; waiting %d s",
								client->token_id, ADE_MAX_RETRY_AFTER, what, ADE_MAX_RETRY_AFTER)));
			/* (a 503 to a request sent once may have been done: not resent) */
			if (attempt < ade_max_retries && res->retry_after <= ade_max_retry_wait &&
				!(once && res->status >= 500))
			{
				retry = true;
				wait_ms = Max(wait_ms, res->retry_after * 1000);
			}
			else if (res->retry_after > 0)
			{
				/* not waited out here: the kind waits, stored, for every run */
				AdePauseNote(client, kind,
							   TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														   (int64) res->retry_after * 1000),
							   (int) res->status, res->retry_after, true);
				return;
			}
		}
		else if (res->status >= 500 && attempt < ade_max_retries && !once)
			retry = true;
		else if (res->status == 429 && attempt < ade_max_retries)
			retry = true;		/* no Retry-After: the backoff */
		if (!retry)
			return;
		/* a retry that would start after the deadline is not made */
		if (client->deadline != 0 && ms_until(client->deadline) <= wait_ms)
		{
			if (res->curl_code != 0)
				ereport(ERROR,
						(errcode(ERRCODE_CONNECTION_FAILURE),
						 errmsg("ABM request %s failed: %s", what, res->curl_error),
						 errdetail("The run's time budget (ade.max_sync_seconds) left no time to retry.")));
			return;
		}
		ereport(DEBUG1,
				(errmsg("retrying ABM request %s in %d ms (attempt %d)",
						what, wait_ms, attempt + 1)));
		AdeSleep(wait_ms);
	}
}

/*
 * Can this session token go into a header?  Visible ASCII only, no space,
 * no control character (a CR or LF would add a header of ABM's choosing).
 */
static bool
valid_session(const char *s)
{
	size_t		n = strlen(s);
	size_t		i;

	if (n == 0 || n > 4096)
		return false;
	for (i = 0; i < n; i++)
		if ((unsigned char) s[i] <= 0x20 || (unsigned char) s[i] >= 0x7F)
			return false;
	return true;
}

/*
 * The token of an answer of the shape Apple gives, {"auth_session_token":
 * "<visible ASCII, no quote or backslash>"} (spaces around the parts
 * allowed), copied once into cxt; NULL for any other shape.  No JSON
 * parser's copy of it is made (they are freed, never wiped): this one is
 * wiped when the run is done (AdeAbmClose()).
 */
static char *
plain_session_answer(const char *body, size_t len, MemoryContext cxt)
{
	const char *p = body;
	const char *end = body + len;
	const char *tok;
	const char *key = "\"auth_session_token\"";
	char	   *out;

#define SKIP_SPACE() while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')) p++
	SKIP_SPACE();
	if (p >= end || *p++ != '{')
		return NULL;
	SKIP_SPACE();
	if ((size_t) (end - p) < strlen(key) || strncmp(p, key, strlen(key)) != 0)
		return NULL;
	p += strlen(key);
	SKIP_SPACE();
	if (p >= end || *p++ != ':')
		return NULL;
	SKIP_SPACE();
	if (p >= end || *p++ != '"')
		return NULL;
	tok = p;
	while (p < end && *p > ' ' && *p < 127 && *p != '"' && *p != '\\')
		p++;
	if (p >= end || *p != '"' || p == tok || p - tok > 4096)
		return NULL;
	out = MemoryContextAlloc(cxt, p - tok + 1);
	memcpy(out, tok, p - tok);
	out[p - tok] = '\0';
	p++;
	SKIP_SPACE();
	if (p >= end || *p++ != '}')
	{
		wipe(out);
		return NULL;
	}
	SKIP_SPACE();
	if (p != end)
	{
		wipe(out);
		return NULL;
	}
#undef SKIP_SPACE
	return out;
}

static void
abm_new_session(AdeAbmClient *client)
{
	AdeHttpResult res;
	AdeAbmResponse resp;
	char	   *url = abm_url("/session");
	char	   *auth;
	Jsonb	   *jb;
	char	   *tok;

	auth = psprintf("Authorization: %s",
					AdeOAuthHeader("GET", url,
								   client->creds.consumer_key, client->creds.consumer_secret,
								   client->creds.access_token, client->creds.access_secret));
	abm_send(client, "GET", "/session", NULL, auth, &res, &resp.retries);
	explicit_bzero(auth, strlen(auth));	/* the OAuth header: signed with the secrets */

	resp.status = res.status;
	resp.body = res.body;
	resp.len = res.len;
	resp.retry_after = res.retry_after;
	resp.kind = AdeAbmClassify(res.status, res.body);
	if (resp.kind == ABM_UNAUTHORIZED)
		resp.kind = ABM_TOKEN_REJECTED;		/* a fresh signature was refused */
	if (resp.kind != ABM_OK)
		AdeAbmRaise(&resp, "GET /session");

	/* the answer Apple gives, read without a parser's copies */
	tok = plain_session_answer(res.body, res.len, client->cxt);
	if (tok != NULL)
	{
		explicit_bzero(res.body, res.len);
		client->session = tok;
		client->session_dirty = true;
		return;
	}
	jb = AdeAbmParseSecretJson(&resp, "the answer of GET /session", true);
	tok = AdeJsonGetText(jb, "auth_session_token");
	if (tok == NULL || tok[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("ABM answered GET /session without auth_session_token")));
	if (!valid_session(tok))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("ABM answered GET /session with an auth_session_token that cannot go into a header"),
				 errdetail("It is empty, over 4096 bytes, or has spaces or control characters; it is not shown.")));
	client->session = MemoryContextStrdup(client->cxt, tok);
	client->session_dirty = true;
	/* its other copies: the value, the parsed answer, the answer itself */
	wipe(tok);
	explicit_bzero(VARDATA(jb), VARSIZE(jb) - VARHDRSZ);
	explicit_bzero(res.body, res.len);
}

/*
 * An authenticated ABM call.  Returns the classified answer; the caller
 * decides what a non-OK kind means (cursor codes are not errors to the
 * sync).  Session trouble is handled here: no session yet, 401 or 403
 * FORBIDDEN (new session, once), a rotated session header.
 */
void
AdeAbmCall(AdeAbmClient *client, const char *method, const char *path,
		   const char *body, AdeAbmResponse *resp)
{
	AdeHttpResult res;
	int			tries;

	for (tries = 0;; tries++)
	{
		char	   *auth;

		if (client->session == NULL)
			abm_new_session(client);
		auth = psprintf("X-ADM-Auth-Session: %s", client->session);
		abm_send(client, method, path, body, auth, &res, &resp->retries);
		explicit_bzero(auth, strlen(auth));

		/* a rotated session that cannot go into a header is not taken */
		if (res.session_header && valid_session(res.session_header) &&
			strcmp(res.session_header, client->session) != 0)
		{
			wipe(client->session);
			client->session = MemoryContextStrdup(client->cxt, res.session_header);
			client->session_dirty = true;
		}
		wipe(res.session_header);

		resp->status = res.status;
		resp->body = res.body;
		resp->len = res.len;
		resp->retry_after = res.retry_after;
		resp->kind = AdeAbmClassify(res.status, res.body);

		if (resp->kind == ABM_UNAUTHORIZED && tries == 0)
		{
			wipe(client->session);
			client->session = NULL;
			continue;
		}
		if (resp->kind == ABM_UNAUTHORIZED)
			resp->kind = ABM_TOKEN_REJECTED;
		return;
	}
}

/* ---- GET /account ---- */

/*
 * Fetch the account and store it on abm_tokens row token_id (SPI connected).
 */
void
AdeAbmUpdateAccount(AdeAbmClient *client, int64 token_id)
{
	AdeAbmStoreAccount(token_id, AdeAbmFetchAccount(client));
}

/* GET /account: what ABM says of the token's organisation and server */
Jsonb *
AdeAbmFetchAccount(AdeAbmClient *client)
{
	AdeAbmResponse resp;
	Jsonb	   *jb;

	AdeAbmCall(client, "GET", "/account", NULL, &resp);
	if (resp.kind != ABM_OK)
		AdeAbmRaise(&resp, "GET /account");
	jb = AdeAbmParseJson(&resp, "GET /account");
	if (!JB_ROOT_IS_OBJECT(jb))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("ABM answered GET /account with JSON that is not an object")));
	return jb;
}

/* store what GET /account answered on the token's row */
void
AdeAbmStoreAccount(int64 token_id, Jsonb *jb)
{
	Oid			argtypes[2] = {INT8OID, JSONBOID};
	Datum		args[2];
	int			rc;

	args[0] = Int64GetDatum(token_id);
	args[1] = JsonbPGetDatum(jb);
	rc = AdeExec("UPDATE %s.abm_tokens SET org_name = $2->>'org_name', "
				   "apple_id = $2->>'admin_id', server_name = $2->>'server_name', "
				   "server_uuid = $2->>'server_uuid', org_email = $2->>'org_email', "
				   "org_type = $2->>'org_type', updated_at = now() WHERE id = $1", 2, argtypes, args, NULL, false, 0);
	if (rc != SPI_OK_UPDATE)
		elog(ERROR, "SPI_execute_with_args failed: %s", SPI_result_code_string(rc));
}

typedef struct RefreshStep
{
	AdeAbmClient *client;
	int64		token_id;
} RefreshStep;

static void
refresh_step(void *arg)
{
	RefreshStep *ra = (RefreshStep *) arg;

	AdeAbmUpdateAccount(ra->client, ra->token_id);
}

/*
 * ade_refresh_account(token_id bigint) returns void: GET /account now.  A pause ABM asks for
 * (429 or 503 with Retry-After), or one it asked for before, is a WARNING,
 * not an ERROR: the pause is stored with this call's transaction.
 */
Datum
ade_refresh_account(PG_FUNCTION_ARGS)
{
	int64		token_id;
	AdeAbmClient *client;
	RefreshStep ra;
	ErrorData  *error;
	AdeAbmKind	kind;

	/* it asks ABM, then stores: never on a standby */
	AdeRefuseOnStandby("ade_refresh_account()");
	/* a NULL from a lookup that found nothing is an error, not a no-op */
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("token_id is NULL"),
				 errhint("SELECT id, org_name FROM abm_tokens lists the tokens.")));
	token_id = PG_GETARG_INT64(0);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	client = AdeAbmOpen(token_id);
	ra.client = client;
	ra.token_id = token_id;
	if (!AdeTrySubxact(refresh_step, &ra, &error, &kind))
	{
		bool		paused = false;
		int			i;

		for (i = 0; i < client->npauses; i++)
			paused = paused || client->pauses[i].unsaved;
		/* (an 0.4 schema has nowhere to keep it: the error, as 0.4 gave) */
		if ((!paused && kind != ABM_PAUSED) || !AdeSqlAtLeast(0, 5))
			ReThrowError(error);
		/*
		 * ABM asked for a pause: kept (this call's transaction commits),
		 * and said, so that a refresh of every token goes on with the rest
		 */
		AdeAbmSavePauses(client);
		ereport(WARNING,
				(errmsg("%s", error->message),
				 errdetail("The account of ABM token " INT64_FORMAT " was not refreshed.", token_id)));
	}
	AdeAbmSaveSession(client);
	AdeAbmClose(client);
	SPI_finish();
	PG_RETURN_VOID();
}
