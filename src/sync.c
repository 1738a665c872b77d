/*-------------------------------------------------------------------------
 *
 * sync.c
 *		ade_sync(): the device sync loop of every ABM token.
 *
 * Owns: the order of work in a run (prune history, then per token: lock,
 * records kept aside that are due again, fetch or sync pages, profile
 * assignment, reconcile pages, record the run), the handling of ABM's cursor codes, the time
 * budget, and the per-token and per-page subtransactions.  The row work of
 * a page is one SQL statement (ade_apply_page() in src/schema/sync.sql,
 * over jsonb_array_elements of the page); this file only moves pages from
 * HTTP to that statement.
 *
 * Requests side by side: the loop does one token and one page at a time,
 * but their requests to ABM are sent ahead (ahead.c): each token's first
 * page when the run starts (send_ahead(), with the stored cursor and
 * session), and the page after each page that says more_to_follow
 * (next_page()), up to ade.max_concurrent_requests in flight.  abm.c takes
 * such an answer only for the very request the loop makes; so the loop,
 * and everything below, is as it was when it asked one request at a time.
 *
 * The time budget: ade.max_sync_seconds bounds the whole run, over every
 * token, HTTP retries and the assignment included, so that a run fits in
 * pg_cron's minute.  Each token gets a fair share of what is left when its
 * turn comes (what is left, divided by the tokens still to go; a token that
 * needs less hands the rest on): it starts no new page and no new
 * assignment batch after its share, and no request runs past the end of
 * the run (abm.c cuts its timeouts to the time left).  Running out of time
 * is not an error: the run's row says so in its note, and the next run goes
 * on from the stored cursor.
 *
 * Transactions and locking:
 *
 * - The cursor and the devices of a page are written by the same
 *   statement, so a run that dies loses nothing and skips nothing; the next
 *   run goes on from the stored cursor.
 * - SELECT ade_sync() is one transaction, the caller's.  CALL
 *   ade_sync_job() (what pg_cron runs) commits each step that succeeds:
 *   each page, each profile definition and assignment batch, each token's
 *   history row (subxact.c), so that the application's statements on hosts
 *   wait for one page at most, never for the rest of the run (coexist.c).
 *   Between its steps it holds the run lock and nothing else: each step
 *   claims the token again.
 * - Each token runs in a subtransaction (a procedure's run: each of its
 *   steps), and each page in a nested one.  An
 *   ABM or HTTP failure on a page rolls back that page only: the pages before
 *   it stay, the error is recorded on the token and in ade_sync_runs, and the
 *   other tokens still sync.  Cancels, statement timeouts and terminations
 *   are never swallowed: they abort the whole run, which then leaves no
 *   ade_sync_runs row (cron.job_run_details says why).
 * - One run at a time per database: a run takes a lock that only a run can
 *   take (claim.c), of the transaction, or of the session for the
 *   procedure (released however it ends), without waiting; a second
 *   ade_sync() at the same time reports every token "busy" and returns at
 *   once.  Two runs over different tokens would each hold the rows of
 *   their pages until they commit, and a device moving between their
 *   tokens would make them deadlock.
 * - A token is claimed (claim.c) with SELECT ... FOR UPDATE SKIP LOCKED on its
 *   abm_tokens row: a session that holds it (ade_add_token() renewing it,
 *   say) makes the run skip it and report it "busy", never wait for it.
 *   In one transaction the claim is held to the end, and taken after hosts
 *   (the lock order of coexist.c); a run that commits its steps claims it
 *   again in each step that writes, after hosts, and checks that the
 *   cursor it asked ABM with is still the stored one.
 *
 * Copyright (c) 2026, the ade authors
 *
 * IDENTIFICATION
 *	  src/sync.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "ade.h"
#include "catalog/pg_type.h"
#include "commands/defrem.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "storage/lock.h"
#include "storage/proc.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(ade_sync_all);
PG_FUNCTION_INFO_V1(ade_sync_one);
PG_FUNCTION_INFO_V1(ade_sync_job);

/* what one token's run did; one output row and one ade_sync_runs row */
typedef struct TokenRun
{
	MemoryContext cxt;			/* lives for the token's run; pages use a child */
	int64		token_id;
	char	   *org_name;
	char	   *mode;
	char	   *cursor;
	int			pages;
	int			added;
	int			modified;
	int			deleted;
	int			skipped;
	int			assigned;
	int			failed;
	int			requests;
	int			fetched;		/* devices of fetch pages, for progress */
	int			reconciled;		/* live devices a reconcile soft-deleted */
	TimestampTz started_at;
	TimestampTz deadline;		/* the token's share of the run's budget */
	char	   *error;			/* NULL on success */
	AdeAbmKind	error_kind;
	bool		busy;
	char	   *note;
} TokenRun;


#define OUT_OF_TIME "ade.max_sync_seconds reached; the next run goes on from the stored cursor"

/*
 * How a step takes its token (the lock order of coexist.c: hosts, then the
 * token; nothing held while ABM answers a run that commits its steps)
 */
typedef enum ClaimHow
{
	CLAIM_READ,					/* read its state, lock nothing */
	CLAIM_TOKEN,				/* FOR UPDATE SKIP LOCKED, hosts not taken */
	CLAIM_HOSTS,				/* hosts first, then the token */
} ClaimHow;

static SPIPlanPtr apply_plan = NULL;
static char *apply_plan_schema = NULL;

/* add a note to the run's (several things can be worth saying) */
static void
add_note(TokenRun *run, const char *note)
{
	if (run->note == NULL)
		run->note = MemoryContextStrdup(run->cxt, note);
	else if (strstr(run->note, note) == NULL)
		run->note = MemoryContextStrdup(run->cxt, psprintf("%s; %s", run->note, note));
}

static void
spi_check(int rc, int expected, const char *what)
{
	if (rc != expected)
		elog(ERROR, "%s failed: %s", what, SPI_result_code_string(rc));
}

/* the saved plan of ade_apply_page(), re-made if the schema changed */
static SPIPlanPtr
get_apply_plan(void)
{
	const char *schema = AdeSchema();

	if (apply_plan == NULL || strcmp(apply_plan_schema, schema) != 0)
	{
		Oid			argtypes[6] = {INT8OID, JSONBOID, BOOLOID, TEXTOID, TEXTOID, TEXTOID};
		char	   *sql;
		SPIPlanPtr	plan;

		if (apply_plan)
		{
			SPI_freeplan(apply_plan);
			apply_plan = NULL;
		}
		sql = psprintf("SELECT added, modified, deleted, skipped FROM %s.ade_apply_page($1, $2, $3, $4, $5, $6)",
					   schema);
		plan = SPI_prepare(sql, 6, argtypes);
		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		if (SPI_keepplan(plan) != 0)
			elog(ERROR, "SPI_keepplan failed");
		apply_plan = plan;
		if (apply_plan_schema)
			pfree(apply_plan_schema);
		apply_plan_schema = MemoryContextStrdup(TopMemoryContext, schema);
	}
	return apply_plan;
}

static bool claim_token(TokenRun *run, ClaimHow how);

/*
 * Apply one page and store the cursor and mode with it (one statement).
 * devices may be NULL: only the cursor and mode change.  Returns false,
 * applying nothing, when the token was taken since the step read it: removed,
 * held by another session, or its cursor or mode changed.
 */
static bool
apply_page(TokenRun *run, Jsonb *devices, bool fetch, const char *cursor,
		   const char *mode, const char *fetched_until)
{
	Datum		args[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
	bool		isnull;
	int			rc;
	char	   *asked_mode = run->mode;
	char	   *asked_cursor = run->cursor;
	MemoryContext caller = CurrentMemoryContext;

	if (!claim_token(run, CLAIM_HOSTS) ||
		strcmp(run->mode, asked_mode) != 0 ||
		(run->cursor == NULL) != (asked_cursor == NULL) ||
		(run->cursor != NULL && strcmp(run->cursor, asked_cursor) != 0))
		return false;

	args[0] = Int64GetDatum(run->token_id);
	if (devices)
		args[1] = JsonbPGetDatum(devices);
	else
		nulls[1] = 'n';
	args[2] = BoolGetDatum(fetch);
	if (cursor)
		args[3] = CStringGetTextDatum(cursor);
	else
		nulls[3] = 'n';
	args[4] = CStringGetTextDatum(mode);
	if (fetched_until)
		args[5] = CStringGetTextDatum(fetched_until);
	else
		nulls[5] = 'n';

	rc = SPI_execute_plan(get_apply_plan(), args, nulls, false, 0);
	MemoryContextSwitchTo(caller);	/* not SPI's, which lives to the run's end */
	spi_check(rc, SPI_OK_SELECT, "ade_apply_page");
	if (SPI_processed == 1)
	{
		HeapTuple	t = SPI_tuptable->vals[0];
		TupleDesc	d = SPI_tuptable->tupdesc;

		run->added += DatumGetInt32(SPI_getbinval(t, d, 1, &isnull));
		run->modified += DatumGetInt32(SPI_getbinval(t, d, 2, &isnull));
		run->deleted += DatumGetInt32(SPI_getbinval(t, d, 3, &isnull));
		run->skipped += DatumGetInt32(SPI_getbinval(t, d, 4, &isnull));
	}
	SPI_freetuptable(SPI_tuptable);
	run->cursor = cursor ? MemoryContextStrdup(run->cxt, cursor) : NULL;
	run->mode = MemoryContextStrdup(run->cxt, mode);
	return true;
}

/*
 * Read the token's state (organisation, mode, cursor) into run, claimed as
 * how says.  Returns false when it is gone, or (claimed) another session
 * holds it.
 */
static bool
claim_token(TokenRun *run, ClaimHow how)
{
	Oid			argtypes[1] = {INT8OID};
	Datum		args[1] = {Int64GetDatum(run->token_id)};
	int			rc;
	bool		isnull;
	Datum		d;
	MemoryContext old;

	if (how == CLAIM_HOSTS)
		AdeLockHosts();
	if (how == CLAIM_READ)
		rc = AdeExec("SELECT org_name, mode, cursor FROM %s.abm_tokens WHERE id = $1",
					 1, argtypes, args, NULL, false, 1);
	else
		rc = AdeExec("SELECT org_name, mode, cursor FROM %s.abm_tokens WHERE id = $1 FOR UPDATE SKIP LOCKED",
					 1, argtypes, args, NULL, false, 1);
	spi_check(rc, SPI_OK_SELECT, "claiming the token");
	if (SPI_processed == 0)
		return false;
	/* in the token's memory: a page's is reset after it, a failed one too */
	old = MemoryContextSwitchTo(run->cxt);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	run->org_name = isnull ? NULL : TextDatumGetCString(d);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	run->mode = TextDatumGetCString(d);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull);
	run->cursor = isnull ? NULL : TextDatumGetCString(d);
	MemoryContextSwitchTo(old);
	SPI_freetuptable(SPI_tuptable);
	return true;
}

/*
 * Progress of a fetch, per page: a NOTICE to an interactive caller, a LOG
 * line for pg_cron's runs (nobody reads their NOTICEs).
 */
/* pg_cron runs jobs in background workers, or over libpq as "pg_cron" */
static bool
by_cron(void)
{
	return MyBackendType == B_BG_WORKER ||
		(application_name && strcmp(application_name, "pg_cron") == 0);
}

static void
report_progress(TokenRun *run, Jsonb *devices)
{
	bool		cron = by_cron();
	long		secs;
	int			usecs;

	run->fetched += JB_ROOT_COUNT(devices);
	TimestampDifference(run->started_at, GetCurrentTimestamp(), &secs, &usecs);
	ereport(cron ? LOG : NOTICE,
			(errmsg("ade: fetching \"%s\": page %d, %d devices so far, %.1f s",
					run->org_name ? run->org_name : "?", run->pages, run->fetched,
					secs + usecs / 1e6)));
}

/* a JSON request body {"limit": n, "cursor": "..."} */
static char *
page_request(const char *cursor)
{
	StringInfoData b;

	initStringInfo(&b);
	appendStringInfo(&b, "{\"limit\": %d", ade_page_size);
	if (cursor)
	{
		appendStringInfoString(&b, ", \"cursor\": ");
		escape_json(&b, cursor);
	}
	appendStringInfoChar(&b, '}');
	return b.data;
}

/*
 * What the loop will ask after this answer to a page request (ahead.c
 * sends it early): the next page of a fetch or sync that said
 * more_to_follow with a new cursor, or the first sync after a fetch's last
 * page.  A guess from a scan of the answer; the loop decides.
 */
static char *
next_page(const char *path, const char *request, const char *body, size_t len, char **next_path)
{
	bool		fetch = strcmp(path, "/server/devices") == 0;
	char	   *cursor;
	bool		more;
	char	   *next;

	if (!fetch && strcmp(path, "/devices/sync") != 0)
		return NULL;
	if (!AdeJsonPageCursor(body, len, &cursor, &more))
		return NULL;
	if (!more && !fetch)
		return NULL;
	next = page_request(cursor);
	/* the same cursor again: the loop ends the token (rule 3) */
	if (request != NULL && strcmp(next, request) == 0)
		return NULL;
	*next_path = more ? pstrdup(path) : pstrdup("/devices/sync");
	return next;
}

/*
 * The first request of each token of the run, sent ahead with its stored
 * session (ahead.c): a token that has none, or whose pages ABM paused, is
 * left to the loop.
 */
static void
send_ahead(const int64 *ids, int n)
{
	Oid			argtypes[1] = {INT8ARRAYOID};
	Datum	   *elems = palloc(sizeof(Datum) * Max(n, 1));
	Datum		args[1];
	int			rc;
	int			i;
	int			order = 0;
	SPITupleTable *tt;
	uint64		rows;
	uint64		r;

	for (i = 0; i < n; i++)
		elems[i] = Int64GetDatum(ids[i]);
	args[0] = PointerGetDatum(construct_array(elems, n, INT8OID, sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	rc = AdeExec("SELECT t.id, t.mode, t.cursor, s.session_token "
										"FROM %s.abm_tokens t JOIN %s.ade_token_secrets s ON s.token_id = t.id "
										"WHERE t.id = ANY ($1) AND s.session_token IS NOT NULL "
										"AND NOT EXISTS (SELECT FROM %s.ade_rate_limits r WHERE r.token_id = t.id "
										"  AND r.paused_until > now() AND r.request IN ('session', 'fetch', 'sync')) "
										"ORDER BY t.id",
							   1, argtypes, args, NULL, true, 0);
	spi_check(rc, SPI_OK_SELECT, "reading the tokens' sessions");
	/* kept: the vault runs queries of its own */
	tt = SPI_tuptable;
	rows = SPI_processed;
	for (r = 0; r < rows; r++)
	{
		HeapTuple	t = tt->vals[r];
		TupleDesc	d = tt->tupdesc;
		bool		isnull;
		int64		id = DatumGetInt64(SPI_getbinval(t, d, 1, &isnull));
		char	   *mode = SPI_getvalue(t, d, 2);
		char	   *cursor = SPI_getvalue(t, d, 3);
		char	   *sealed = SPI_getvalue(t, d, 4);
		char	   *session;
		bool		fetch;

		/* its place in the run: ids is in the same order */
		while (order < n && ids[order] != id)
			order++;
		session = AdeVaultTryOpen(sealed, AdeVaultPlace("ade_token_secrets", "session_token", id));
		if (session == NULL)
			continue;
		fetch = strcmp(mode, "fetch") == 0 || cursor == NULL;
		AdeAbmAhead(id, session, order, "POST", fetch ? "/server/devices" : "/devices/sync",
					page_request(fetch && strcmp(mode, "fetch") != 0 ? NULL : cursor));
		explicit_bzero(session, strlen(session));
	}
	SPI_freetuptable(tt);
}

typedef enum PageOutcome
{
	PAGE_MORE,					/* go on with the next page */
	PAGE_DONE,					/* nothing more to fetch in this run */
	PAGE_TAKEN,					/* the token was taken since the step began */
} PageOutcome;

/*
 * Fetch and apply one page.  Cursor codes switch the mode; anything else
 * that is not a page raises.
 */
static PageOutcome
sync_one_page(TokenRun *run, AdeAbmClient *client, int *resets)
{
	bool		fetch = strcmp(run->mode, "fetch") == 0;
	const char *path = fetch ? "/server/devices" : "/devices/sync";
	AdeAbmResponse resp;
	Jsonb	   *jb;
	Jsonb	   *devices;
	char	   *cursor;
	char	   *fetched_until;
	bool		more;
	char		what[64];

	snprintf(what, sizeof(what), "POST %s", path);

	if (!fetch && run->cursor == NULL)
	{
		/* a sync needs a cursor: start over with a full fetch */
		if (!apply_page(run, NULL, true, NULL, "fetch", NULL))
			return PAGE_TAKEN;
		return PAGE_MORE;
	}

	AdeAbmCall(client, "POST", path, page_request(run->cursor), &resp);

	switch (resp.kind)
	{
		case ABM_OK:
			break;
		case ABM_EXHAUSTED_CURSOR:

			/*
			 * "The cursor had returned all devices in previous calls": the
			 * stored cursor of a fetch is never its final one (the last page
			 * stores sync mode with it), so ABM served pages after it that
			 * were not applied here (a run that lost them).  Going on with
			 * sync from it would skip their devices for good: fetch again.
			 */
			if (!fetch)
				AdeAbmRaise(&resp, what);
			/* FALLTHROUGH */
		case ABM_EXPIRED_CURSOR:
		case ABM_INVALID_CURSOR:
		case ABM_CURSOR_REQUIRED:
			/* start a full fetch again; at most twice per run */
			if (++(*resets) > 2)
				AdeAbmRaise(&resp, what);
			ereport(LOG,
					(errmsg("ade: token " INT64_FORMAT " got %s, starting a full fetch",
							run->token_id, AdeAbmKindName(resp.kind))));
			if (!apply_page(run, NULL, true, NULL, "fetch", NULL))
				return PAGE_TAKEN;
			add_note(run, psprintf("%s: full fetch started", AdeAbmKindName(resp.kind)));
			return PAGE_MORE;
		default:
			AdeAbmRaise(&resp, what);
	}

	jb = AdeAbmParseJson(&resp, what);
	devices = AdeJsonGetJsonb(jb, "devices");
	cursor = AdeJsonGetText(jb, "cursor");
	if (devices == NULL || !JB_ROOT_IS_ARRAY(devices) || JB_ROOT_IS_SCALAR(devices))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("ABM answered %s without a \"devices\" array", what)));
	if (cursor == NULL || cursor[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("ABM answered %s without a \"cursor\"", what)));
	more = AdeJsonGetBool(jb, "more_to_follow", false);
	fetched_until = AdeJsonGetText(jb, "fetched_until");

	run->pages++;
	if (fetch)
		report_progress(run, devices);
	if (fetch && !more)
	{
		/* the last fetch page: sync mode from now on */
		if (!apply_page(run, devices, true, cursor, "sync", fetched_until))
			return PAGE_TAKEN;
		return PAGE_MORE;
	}

	/* rule 3: the same cursor back with more_to_follow would loop forever */
	if (more && run->cursor != NULL && strcmp(cursor, run->cursor) == 0)
	{
		if (!apply_page(run, devices, fetch, cursor, run->mode, fetched_until))
			return PAGE_TAKEN;
		add_note(run, "ABM returned the same cursor with more_to_follow; run ended");
		return PAGE_DONE;
	}
	if (!apply_page(run, devices, fetch, cursor, run->mode, fetched_until))
		return PAGE_TAKEN;
	return more ? PAGE_MORE : PAGE_DONE;
}

/*
 * Run f(run, arg) in a subtransaction (subxact.c).  On an ordinary ERROR it
 * is rolled back and false returned; the error is recorded on run, unless
 * it was the time budget running out, which is a note.  Cancels and their
 * like are re-thrown.
 */
typedef struct RunStep
{
	void		(*f) (TokenRun *, void *);
	TokenRun   *run;
	void	   *arg;
} RunStep;

static void
run_step(void *arg)
{
	RunStep    *s = (RunStep *) arg;

	s->f(s->run, s->arg);
}

static bool
in_subxact(TokenRun *run, void (*f) (TokenRun *, void *), void *arg)
{
	RunStep		s = {f, run, arg};
	ErrorData  *edata;
	AdeAbmKind	kind;

	/* the requests sent ahead move on between the steps */
	AdeHttpPump();
	if (AdeTrySubxact(run_step, &s, &edata, &kind))
		return true;
	if (kind == ABM_DEADLINE)
		add_note(run, OUT_OF_TIME);
	else if (kind == ABM_PAUSED)
		add_note(run, edata->message);
	else
	{
		run->error = MemoryContextStrdup(run->cxt, edata->message);
		run->error_kind = kind;
	}
	return false;
}

typedef struct PageArgs
{
	AdeAbmClient *client;
	int		   *resets;
	PageOutcome outcome;
} PageArgs;

static void
page_step(TokenRun *run, void *arg)
{
	PageArgs   *pa = (PageArgs *) arg;

	/*
	 * A run that commits its pages holds the token only while it applies
	 * one (apply_page()), and nothing while ABM answers: a session that took
	 * it in between (a renewal, a removal) ends this token's pages.  In one
	 * transaction, which holds it, a read.
	 */
	if (!claim_token(run, CLAIM_READ) ||
		(pa->outcome = sync_one_page(run, pa->client, pa->resets)) == PAGE_TAKEN)
	{
		add_note(run, "the token was taken by another session during the run; the next run goes on");
		pa->outcome = PAGE_DONE;
	}
}

/*
 * The records of the token kept aside whose retry is due, tried again, in
 * chunks of RETRY_CHUNK_MS (each holds hosts for no longer: a step of its
 * own, committed in a run that commits), within a quarter of the token's
 * share of the run's time: new pages are what matters most.
 */
#define RETRY_CHUNK_MS 200

typedef struct RetryArgs
{
	TimestampTz until;			/* this chunk's end */
	bool		more;			/* out: the chunk ran out of time, not of records */
} RetryArgs;

static void
retry_chunk(TokenRun *run, void *arg)
{
	RetryArgs  *ra = (RetryArgs *) arg;
	Oid			argtypes[2] = {INT8OID, TIMESTAMPTZOID};
	Datum		args[2] = {Int64GetDatum(run->token_id), TimestampTzGetDatum(ra->until)};
	int			rc;

	ra->more = false;
	if (!AdeClaimToken(run->token_id, true))
		return;
	rc = AdeExec("SELECT %s.ade_retry_rejected($1, $2)", 2, argtypes, args, NULL, false, 1);
	spi_check(rc, SPI_OK_SELECT, "ade_retry_rejected");
	SPI_freetuptable(SPI_tuptable);
	ra->more = GetCurrentTimestamp() >= ra->until;
}

static void
retry_rejected(TokenRun *run)
{
	TimestampTz until = run->started_at + (run->deadline - run->started_at) / 4;
	RetryArgs	ra;
	Oid			argtypes[1] = {INT8OID};
	Datum		args[1] = {Int64GetDatum(run->token_id)};
	bool		due;
	int			rc;

	/* none due (the common case): hosts is not taken at all */
	rc = AdeExec("SELECT 1 FROM %s.ade_rejected_records "
										"WHERE token_id = $1 AND retry_at <= now() LIMIT 1",
							   1, argtypes, args, NULL, false, 1);
	spi_check(rc, SPI_OK_SELECT, "reading ade_rejected_records");
	due = SPI_processed == 1;
	SPI_freetuptable(SPI_tuptable);
	if (!due)
		return;
	do
	{
		ra.until = Min(until, TimestampTzPlusMilliseconds(GetCurrentTimestamp(), RETRY_CHUNK_MS));
		if (!in_subxact(run, retry_chunk, &ra))
			break;
	} while (ra.more && GetCurrentTimestamp() < until);
}

/*
 * Records this run kept aside (ade_rejected_records): said in the run's
 * note and in a WARNING with the last reason, so that a cause that hits
 * every record (an application's trigger, a constraint) is seen at once,
 * not only in ade_status.
 */
static void
report_kept(TokenRun *run)
{
	Oid			argtypes[1] = {INT8OID};
	Datum		args[1] = {Int64GetDatum(run->token_id)};
	char	   *reason = NULL;
	int			rc;

	if (run->skipped == 0)
		return;
	rc = AdeExec("SELECT reason FROM %s.ade_rejected_records "
										"WHERE token_id = $1 ORDER BY rejected_at DESC, id DESC LIMIT 1",
							   1, argtypes, args, NULL, false, 1);	/* sees the pages' rows */
	spi_check(rc, SPI_OK_SELECT, "reading ade_rejected_records");
	if (SPI_processed == 1)
		reason = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	add_note(run, psprintf("%d device record%s could not be applied; see ade_rejected_records",
						   run->skipped, run->skipped == 1 ? "" : "s"));
	ereport(WARNING,
			(errmsg_plural("%d device record of ABM token " INT64_FORMAT " could not be applied",
						   "%d device records of ABM token " INT64_FORMAT " could not be applied",
						   run->skipped, run->skipped, run->token_id),
			 reason ? errdetail("The last reason: %s", reason) : 0,
			 errhint("They are kept in ade_rejected_records and tried again after ade.failed_retry_interval; "
					 "the rest of their pages applied.")));
}

/*
 * No wait for a row lock (an application's transaction holding a host, say)
 * outlasts the token's share of the run: lock_timeout is the time left (or
 * the session's own, when shorter), until the token's run ends
 * (sync_token() restores it).
 */
static void
bound_lock_waits(TokenRun *run)
{
	long		ms = (long) ((run->deadline - GetCurrentTimestamp()) / 1000);
	char		buf[32];

	/*
	 * A run that commits its steps cannot keep a setting of its own across
	 * them: its waits for hosts are bounded by AdeLockDeadline, and it
	 * waits for no row lock (it claims with SKIP LOCKED and writes only
	 * while it holds hosts: coexist.c)
	 */
	if (AdeCommitSteps)
		return;

	ms = Max(ms, 1);
	if (LockTimeout > 0)
		ms = Min(ms, (long) LockTimeout);
	snprintf(buf, sizeof(buf), "%ld", ms);
	(void) set_config_option("lock_timeout", buf, PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
}

/*
 * A reconcile (0.5): a full fetch of the token beside its sync, with a
 * cursor of its own (abm_tokens.reconcile_cursor), after the sync's pages
 * and the assignment, within the token's share of the run, going on in
 * later runs where it stopped.  After its last page the devices it did not
 * list are soft-deleted (ade_apply_reconcile_page() in sync.sql).  Due
 * every ade.reconcile_interval, or when asked (ade_request_reconcile()).
 * The sync cursor is never touched: no event is lost, however long it
 * takes.  A cursor ABM refuses starts the reconcile over, once a run.
 */
typedef struct ReconcileArgs
{
	AdeAbmClient *client;
	int			restarts;
	PageOutcome outcome;
	bool		active;			/* a reconcile is due or under way */
	bool		finished;		/* its last page was applied */
} ReconcileArgs;

static void
reconcile_step(TokenRun *run, void *arg)
{
	ReconcileArgs *ra = (ReconcileArgs *) arg;
	Oid			argtypes[6] = {INT8OID, TEXTOID, JSONBOID, TEXTOID, BOOLOID, TEXTOID};
	Datum		args[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
	int			rc;
	bool		isnull;
	char	   *asked = NULL;
	AdeAbmResponse resp;
	Jsonb	   *jb = NULL;
	Jsonb	   *devices = NULL;
	char	   *cursor = NULL;
	char	   *fetched_until = NULL;
	bool		more = false;
	const char *what = "POST /server/devices (reconcile)";

	ra->outcome = PAGE_DONE;
	args[0] = Int64GetDatum(run->token_id);
	args[1] = Int32GetDatum(ade_reconcile_interval);
	{
		Oid			st[2] = {INT8OID, INT4OID};

		rc = AdeExec("SELECT due, cursor FROM %s.ade_reconcile_state($1, $2)", 2, st, args, NULL, false, 1);
	}
	spi_check(rc, SPI_OK_SELECT, "ade_reconcile_state");
	if (SPI_processed != 1 ||
		!DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)) || isnull)
		return;
	asked = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	SPI_freetuptable(SPI_tuptable);
	ra->active = true;

	AdeAbmCall(ra->client, "POST", "/server/devices", page_request(asked), &resp);
	switch (resp.kind)
	{
		case ABM_OK:
			jb = AdeAbmParseJson(&resp, what);
			devices = AdeJsonGetJsonb(jb, "devices");
			cursor = AdeJsonGetText(jb, "cursor");
			if (devices == NULL || !JB_ROOT_IS_ARRAY(devices) || JB_ROOT_IS_SCALAR(devices))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
						 errmsg("ABM answered %s without a \"devices\" array", what)));
			if (cursor == NULL || cursor[0] == '\0')
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
						 errmsg("ABM answered %s without a \"cursor\"", what)));
			more = AdeJsonGetBool(jb, "more_to_follow", false);
			fetched_until = AdeJsonGetText(jb, "fetched_until");
			break;
		case ABM_EXHAUSTED_CURSOR:
		case ABM_EXPIRED_CURSOR:
		case ABM_INVALID_CURSOR:
		case ABM_CURSOR_REQUIRED:
			if (asked == NULL || ++ra->restarts > 1)
				AdeAbmRaise(&resp, what);
			/* start it over (cursor null) */
			break;
		default:
			AdeAbmRaise(&resp, what);
	}

	if (!claim_token(run, CLAIM_HOSTS))
	{
		ra->outcome = PAGE_TAKEN;
		return;
	}
	if (asked)
		args[1] = CStringGetTextDatum(asked);
	else
		nulls[1] = 'n';
	if (devices)
		args[2] = JsonbPGetDatum(devices);
	else
		nulls[2] = 'n';
	if (cursor)
		args[3] = CStringGetTextDatum(cursor);
	else
		nulls[3] = 'n';
	args[4] = BoolGetDatum(more);
	if (fetched_until)
		args[5] = CStringGetTextDatum(fetched_until);
	else
		nulls[5] = 'n';
	rc = AdeExec("SELECT applied, listed, reconciled FROM %s.ade_apply_reconcile_page($1, $2, $3, $4, $5, $6)",
				 6, argtypes, args, nulls, false, 1);
	spi_check(rc, SPI_OK_SELECT, "ade_apply_reconcile_page");
	if (SPI_processed != 1 ||
		!DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)))
	{
		SPI_freetuptable(SPI_tuptable);
		ra->outcome = PAGE_TAKEN;
		return;
	}
	run->fetched += DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	run->reconciled += DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
	SPI_freetuptable(SPI_tuptable);
	if (cursor == NULL)
	{
		add_note(run, psprintf("reconcile: %s, started over", AdeAbmKindName(resp.kind)));
		ra->outcome = PAGE_MORE;
		return;
	}
	run->pages++;
	if (!more)
	{
		ra->finished = true;
		add_note(run, psprintf("reconcile done: %d devices ABM no longer lists soft-deleted", run->reconciled));
		return;
	}
	/* rule 3: the same cursor back with more_to_follow would loop forever */
	if (asked != NULL && strcmp(cursor, asked) == 0)
	{
		add_note(run, "ABM returned the same cursor with more_to_follow; run ended");
		return;
	}
	ra->outcome = PAGE_MORE;
}

/*
 * The reconcile's pages, in the time the token has left of its share (the
 * sync of the tokens after it comes first).  A page is not started when
 * the time left is less than twice what the last one took: a page cut by
 * the budget may have been served by ABM all the same, and a fetch cursor
 * ABM has served to its end answers EXHAUSTED_CURSOR, which starts the
 * reconcile over.  (Its pages are never sent ahead: ahead.c follows only
 * the chains that send_ahead() starts.)
 */
static void
reconcile_pages(TokenRun *run, AdeAbmClient *client, MemoryContext pagecxt)
{
	ReconcileArgs ra = {client, 0, PAGE_DONE, false, false};
	int64		last_ms = 0;

	for (;;)
	{
		bool		ok;
		MemoryContext old;
		TimestampTz t0 = GetCurrentTimestamp();

		if (t0 >= run->deadline ||
			(last_ms > 0 && (run->deadline - t0) / 1000 < 2 * last_ms))
			break;
		bound_lock_waits(run);
		old = MemoryContextSwitchTo(pagecxt);
		ok = in_subxact(run, reconcile_step, &ra);
		MemoryContextSwitchTo(old);
		MemoryContextReset(pagecxt);
		if (!ok || ra.outcome != PAGE_MORE)
			break;
		last_ms = (GetCurrentTimestamp() - t0) / 1000;
	}
	if (ra.active && !ra.finished)
		add_note(run, "reconcile under way: the next run goes on");
	if (ra.outcome == PAGE_TAKEN)
		add_note(run, "the token was taken by another session during the run; the next run goes on");
}

/* the token claimed, its client opened (in the run's memory) */
static void
start_step(TokenRun *run, void *arg)
{
	AdeAbmClient **client = (AdeAbmClient **) arg;

	/*
	 * One transaction holds hosts and the token to its end: hosts first.  A
	 * run that commits its steps claims the token here only to see whether
	 * another session holds it; the step waits for nothing after.
	 */
	if (!claim_token(run, AdeCommitSteps ? CLAIM_TOKEN : CLAIM_HOSTS))
	{
		run->busy = true;
		run->error = "busy";
		return;
	}
	*client = AdeAbmOpen(run->token_id);
}

/* the session ABM gave and the pauses it asked for, kept for the next run and backend */
static void
save_session_step(TokenRun *run, void *arg)
{
	AdeAbmSaveSession((AdeAbmClient *) arg);
	AdeAbmSavePauses((AdeAbmClient *) arg);
}

static void
token_step(TokenRun *run, void *arg)
{
	AdeAbmClient *client = NULL;
	int			resets = 0;
	MemoryContext pagecxt;
	AdeAssignResult ar;

	if (!in_subxact(run, start_step, &client) || client == NULL)
		return;
	/* a failure here is recorded, and the pages still come */
	bound_lock_waits(run);
	if (AdeSqlAtLeast(0, 4))
		retry_rejected(run);
	/* no request of this token outlasts its share of the run's time */
	client->deadline = run->deadline;

	/* each page's memory (answer, jsonb, queries) is freed after the page */
	pagecxt = AllocSetContextCreate(CurrentMemoryContext, "ade sync page",
									ALLOCSET_DEFAULT_SIZES);
	for (;;)
	{
		PageArgs	pa = {client, &resets, PAGE_DONE};
		bool		ok;
		MemoryContext old;

		if (GetCurrentTimestamp() >= run->deadline)
		{
			add_note(run, OUT_OF_TIME);
			break;
		}
		bound_lock_waits(run);
		old = MemoryContextSwitchTo(pagecxt);
		ok = in_subxact(run, page_step, &pa);
		MemoryContextSwitchTo(old);
		MemoryContextReset(pagecxt);
		if (!ok || pa.outcome == PAGE_DONE)
			break;
	}
	report_kept(run);
	bound_lock_waits(run);

	/*
	 * Rule 10: profiles for what is due, even after a failed page; each call
	 * to Apple in a subtransaction of its own (assign.c), so that nothing
	 * here undoes the pages.  The first failure is the one to report.
	 */
	AdeAssignProfiles(client, run->token_id, run->added + run->modified > 0,
					  run->deadline, &ar);
	run->assigned += ar.assigned;
	run->failed += ar.failed;
	if (ar.out_of_time)
		add_note(run, OUT_OF_TIME);
	if (ar.note)
		add_note(run, ar.note);
	if (run->error == NULL && ar.error != NULL)
	{
		run->error = MemoryContextStrdup(run->cxt, ar.error->message);
		run->error_kind = ar.error_kind;
	}
	/* a reconcile, with what time is left, when all else went well */
	if (run->error == NULL && AdeSqlAtLeast(0, 5))
		reconcile_pages(run, client, pagecxt);
	MemoryContextDelete(pagecxt);
	run->requests = client->requests;
	(void) in_subxact(run, save_session_step, client);
	AdeAbmClose(client);
}

/* text datum or null */
static void
set_text(Datum *v, char *n, int i, const char *s)
{
	if (s)
	{
		v[i] = CStringGetTextDatum(s);
		n[i] = ' ';
	}
	else
		n[i] = 'n';
}

/*
 * Write the run's ade_sync_runs row and the token's state (outside the
 * token's subtransaction, so that a failure is recorded too).
 */
static void
finish_run(TokenRun *run)
{
	Oid			argtypes[16] = {INT8OID, TEXTOID, INT4OID, INT4OID, INT4OID, INT4OID,
		INT4OID, INT4OID, INT4OID, INT4OID, TIMESTAMPTZOID, TEXTOID, TEXTOID, BOOLOID, TEXTOID, INT4OID};
	Datum		args[16];
	char		nulls[16];
	int			rc;

	memset(nulls, ' ', sizeof(nulls));
	args[0] = Int64GetDatum(run->token_id);
	set_text(args, nulls, 1, run->mode);
	args[2] = Int32GetDatum(run->pages);
	args[3] = Int32GetDatum(run->added);
	args[4] = Int32GetDatum(run->modified);
	args[5] = Int32GetDatum(run->deleted);
	args[6] = Int32GetDatum(run->skipped);
	args[7] = Int32GetDatum(run->assigned);
	args[8] = Int32GetDatum(run->failed);
	args[9] = Int32GetDatum(run->requests);
	args[10] = TimestampTzGetDatum(run->started_at);
	set_text(args, nulls, 11, run->error);
	set_text(args, nulls, 12, run->busy ? "busy" :
			 run->error ? AdeAbmKindName(run->error_kind) : "ok");
	args[13] = BoolGetDatum(run->busy);
	set_text(args, nulls, 14, run->note);
	args[15] = Int32GetDatum(run->reconciled);

	if (AdeSqlAtLeast(0, 5))
		rc = AdeExec("SELECT org_name, mode FROM %s.ade_finish_run($1, $2, $3, $4, $5, $6, $7, "
					 "$8, $9, $10, $11, $12, $13, $14, $15, $16)", 16, argtypes, args, nulls, false, 0);
	else						/* the SQL of 0.4 */
		rc = AdeExec("SELECT org_name, mode FROM %s.ade_finish_run($1, $2, $3, $4, $5, $6, $7, "
					 "$8, $9, $10, $11, $12, $13, $14, $15)", 15, argtypes, args, nulls, false, 0);
	spi_check(rc, SPI_OK_SELECT, "ade_finish_run");
	if (SPI_processed == 1)
	{
		bool		isnull;
		Datum		d;

		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		run->org_name = isnull ? NULL : TextDatumGetCString(d);
		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
		run->mode = isnull ? NULL : TextDatumGetCString(d);
	}
	SPI_freetuptable(SPI_tuptable);
}

/*
 * A token that expires within 30 days, or whose terms are not accepted, is
 * worth a WARNING in every run: somebody must act in ABM.
 */
static void
warn_token(TokenRun *run)
{
	Oid			argtypes[1] = {INT8OID};
	Datum		args[1] = {Int64GetDatum(run->token_id)};
	int			rc;
	bool		isnull;
	bool		terms;
	Datum		renew;
	bool		renew_null;

	rc = AdeExec("SELECT terms_expired, renew_at, renew_at < now() + interval '30 days' "
				   "FROM %s.abm_tokens WHERE id = $1", 1, argtypes, args, NULL, false, 1);
	spi_check(rc, SPI_OK_SELECT, "reading the token's state");
	if (SPI_processed != 1)
		return;
	terms = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	renew = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &renew_null);
	if (terms)
		ereport(WARNING,
				(errmsg("ade: the terms and conditions of \"%s\" are not accepted: ABM refuses to sync it",
						run->org_name ? run->org_name : "?"),
				 errhint("An administrator must sign in to Apple Business Manager and accept the new terms.")));
	if (!renew_null &&
		DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull)))
		ereport(WARNING,
				(errmsg("ade: the server token of \"%s\" %s on %s",
						run->org_name ? run->org_name : "?",
						DatumGetTimestampTz(renew) < GetCurrentTimestamp() ? "expired" : "expires",
						timestamptz_to_str(DatumGetTimestampTz(renew))),
				 errhint("Renew it in Apple Business Manager and pass the new file to ade_add_token().")));
	SPI_freetuptable(SPI_tuptable);
}

/*
 * A full fetch is announced once per run, not host by host: NOTIFY payloads
 * wait in memory until the run commits, and pages are subtransactions whose
 * memory a notification would keep alive.  Listeners re-read the token.
 */
static void
notify_fetched(TokenRun *run)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		args[1];
	int			rc;

	if (run->fetched == 0)
		return;
	args[0] = CStringGetTextDatum(psprintf("{\"event\": \"fetched\", \"token_id\": " INT64_FORMAT ", \"hosts\": %d}",
										   run->token_id, run->fetched));
	rc = SPI_execute_with_args("SELECT pg_catalog.pg_notify('ade_hosts', $1)", 1, argtypes, args,
							   NULL, false, 1);
	spi_check(rc, SPI_OK_SELECT, "NOTIFY ade_hosts");
	SPI_freetuptable(SPI_tuptable);
}

static void
sync_token(TokenRun *run, bool alone, const char *holder, bool prepared)
{
	if (!alone && prepared)
	{
		/* no run will ever let go of it: a failure the admin must see */
		run->error = "the run lock is held by a prepared transaction that ran SELECT ade_sync(): "
			"end it with COMMIT PREPARED or ROLLBACK PREPARED (pg_prepared_xacts)";
		run->error_kind = ABM_OTHER;
		finish_run(run);
		return;
	}
	if (!alone)
	{
		run->busy = true;
		run->error = "busy";
		if (holder)
			add_note(run, psprintf("%s is in progress", holder));
		finish_run(run);
		return;
	}
	AdeLockDeadline = run->deadline;
	if (AdeCommitSteps)
		token_step(run, NULL);	/* each of its steps commits */
	else
	{
		/* lock_timeout as set by bound_lock_waits() ends with the token */
		int			nest = NewGUCNestLevel();

		(void) in_subxact(run, token_step, NULL);
		AtEOXact_GUC(true, nest);
	}
	AdeAheadDrop(run->token_id);
	finish_run(run);
	if (!run->busy)
	{
		notify_fetched(run);
		warn_token(run);
	}
	if (AdeCommitSteps)
		AdeCommit();
}

static void
emit(ReturnSetInfo *rsinfo, TokenRun *run)
{
	Datum		values[10];
	bool		nulls[10] = {false};

	values[0] = Int64GetDatum(run->token_id);
	if (run->org_name)
		values[1] = CStringGetTextDatum(run->org_name);
	else
		nulls[1] = true;
	if (run->mode)
		values[2] = CStringGetTextDatum(run->mode);
	else
		nulls[2] = true;
	values[3] = Int32GetDatum(run->pages);
	values[4] = Int32GetDatum(run->added);
	values[5] = Int32GetDatum(run->modified);
	values[6] = Int32GetDatum(run->deleted);
	values[7] = Int32GetDatum(run->assigned);
	values[8] = Int32GetDatum(run->failed);
	if (run->error)
		values[9] = CStringGetTextDatum(run->error);
	else
		nulls[9] = true;
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
}

/*
 * The run: every token (or only), one after another.  rsinfo NULL: a
 * procedure's run (commit), which returns nothing (ade_sync_runs has it).
 */
static void
sync_tokens(ReturnSetInfo *rsinfo, bool commit, bool one, int64 only)
{
	MemoryContext runcxt;
	char	   *sql;
	int			rc;
	int64	   *ids;
	int			n;
	int			i;
	TimestampTz run_deadline;
	bool		alone;
	char	   *holder;
	bool		prepared = false;
	int			accounts;

	/* a standby replays what the primary's runs did; it runs none */
	AdeRefuseOnStandby("ade_sync()");

	run_deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
											   (int64) ade_max_sync_seconds * 1000);

	if (SPI_connect_ext(commit ? SPI_OPT_NONATOMIC : 0) != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	/*
	 * Prune history older than ade.runs_retention: the cutoff a value the
	 * planner sees (a one-shot plan), so that the index on started_at finds
	 * the few old rows; an expression of now(), or a saved generic plan,
	 * expects a third of the table and scanned all of it, run after run.
	 */
	{
		Oid			argtypes[1] = {TIMESTAMPTZOID};
		Datum		args[1];

		args[0] = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp() -
									  (TimestampTz) ade_runs_retention * 60 * USECS_PER_SEC);
		rc = SPI_execute_with_args(psprintf("DELETE FROM %s.ade_sync_runs WHERE started_at < $1",
											AdeSchema()),
								   1, argtypes, args, NULL, false, 0);
		spi_check(rc, SPI_OK_DELETE, "pruning ade_sync_runs");
		/* answers to details calls go with it (the other device calls stay) */
		if (AdeSqlAtLeast(0, 5))
		{
			rc = SPI_execute_with_args(psprintf("DELETE FROM %s.ade_device_actions WHERE asked_at < $1 "
												"AND action = 'details'", AdeSchema()),
									   1, argtypes, args, NULL, false, 0);
			spi_check(rc, SPI_OK_DELETE, "pruning ade_device_actions");
		}
	}

	if (one)
	{
		Oid			argtypes[1] = {INT8OID};
		Datum		args[1] = {Int64GetDatum(only)};

		rc = AdeExec("SELECT id FROM %s.abm_tokens WHERE id = $1", 1, argtypes, args, NULL, true, 0);
		spi_check(rc, SPI_OK_SELECT, "listing tokens");
		if (SPI_processed == 0)
			ereport(ERROR,
					(errcode(ERRCODE_NO_DATA_FOUND),
					 errmsg("abm token " INT64_FORMAT " does not exist", only),
					 errhint("SELECT id, org_name FROM abm_tokens lists the tokens; ade_sync() with no argument syncs them all.")));
	}
	else
	{
		sql = psprintf("SELECT id FROM %s.abm_tokens ORDER BY id", AdeSchema());
		rc = SPI_execute(sql, true, 0);
		spi_check(rc, SPI_OK_SELECT, "listing tokens");
	}
	n = (int) SPI_processed;
	ids = palloc(sizeof(int64) * Max(n, 1));
	for (i = 0; i < n; i++)
	{
		bool		isnull;

		ids[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
	}

	/* the API accounts (api.c) take a share of the run, as one more token */
	accounts = (only == 0 && AdeSqlAtLeast(0, 5)) ? AdeApiAccounts() : 0;
	alone = AdeRunLock(commit);
	holder = alone ? NULL : AdeRunLockHolder(&prepared);
	runcxt = AllocSetContextCreate(CurrentMemoryContext, "ade sync token",
								   ALLOCSET_DEFAULT_SIZES);
	PG_TRY();
	{
		AdeRunCacheBegin();
		AdeCommitSteps = commit && alone;
		if (AdeCommitSteps)
			AdeCommit();		/* the pruning, and nothing held but the run lock */
		/* the tokens' requests side by side (ahead.c); 1: one at a time */
		if (alone && n > 0 && ade_max_concurrent_requests > 1 && AdeSqlAtLeast(0, 5))
		{
			AdeAheadBegin(ade_max_concurrent_requests, run_deadline, next_page);
			send_ahead(ids, n);
		}
		for (i = 0; i < n; i++)
		{
			MemoryContext old = MemoryContextSwitchTo(runcxt);
			TokenRun	run;

			memset(&run, 0, sizeof(run));
			run.cxt = runcxt;
			run.token_id = ids[i];
			run.started_at = GetCurrentTimestamp();
			/* a fair share of what is left: what is left over the tokens to go */
			run.deadline = run.started_at +
				Max(run_deadline - run.started_at, 0) / (n - i + (accounts > 0 ? 1 : 0));
			/*
			 * A job that runs SELECT ade_sync() (made before 0.5, or brought
			 * back by a dump): one transaction, which holds hosts to its end
			 */
			if (rsinfo && by_cron())
				add_note(&run, "pg_cron runs SELECT ade_sync(), one transaction: call ade_schedule() again to run CALL ade_sync_job()");
			sync_token(&run, alone, holder, prepared);
			if (rsinfo)
				emit(rsinfo, &run);
			MemoryContextSwitchTo(old);
			MemoryContextReset(runcxt);
		}
		/* the inventory and the rest of the API accounts, with what is left */
		if (accounts > 0 && alone)
			AdeApiRun(run_deadline);
	}
	PG_FINALLY();
	{
		AdeRunCacheEnd();
		AdeAheadEnd(NULL, NULL);
		AdeCommitSteps = false;
		AdeLockDeadline = 0;
		if (commit && alone)
			AdeRunUnlock();
	}
	PG_END_TRY();
	SPI_finish();
}

/* ade_sync() returns table(...): every token */
Datum
ade_sync_all(PG_FUNCTION_ARGS)
{
	InitMaterializedSRF(fcinfo, 0);
	sync_tokens((ReturnSetInfo *) fcinfo->resultinfo, false, false, 0);
	return (Datum) 0;
}

/* ade_sync(token_id bigint) returns table(...): one token */
Datum
ade_sync_one(PG_FUNCTION_ARGS)
{
	/* a NULL from a lookup that found nothing is an error, not a no-op */
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("token_id is NULL"),
				 errhint("SELECT id, org_name FROM abm_tokens lists the tokens; ade_sync() with no argument syncs them all.")));
	InitMaterializedSRF(fcinfo, 0);
	sync_tokens((ReturnSetInfo *) fcinfo->resultinfo, false, true, PG_GETARG_INT64(0));
	return (Datum) 0;
}

/*
 * CALL ade_sync_job() and CALL ade_sync_job(token_id bigint) (a NULL from
 * a lookup that found nothing is an error, as for ade_sync()): the run
 * pg_cron makes,
 * committing each step (see the header).  Called where it cannot commit
 * (in a transaction block, from a function) it is one transaction, as
 * SELECT ade_sync() is.  Its memory lives in the portal's, which outlives
 * the commits.
 */
Datum
ade_sync_job(PG_FUNCTION_ARGS)
{
	bool		commit = fcinfo->context && IsA(fcinfo->context, CallContext) &&
		!castNode(CallContext, fcinfo->context)->atomic;
	MemoryContext jobcxt;
	MemoryContext old;
	int			nest = 0;

	if (PG_NARGS() == 1 && PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("token_id is NULL"),
				 errhint("SELECT id, org_name FROM abm_tokens lists the tokens; CALL ade_sync_job() with no argument syncs them all.")));

	jobcxt = AllocSetContextCreate(commit && PortalContext ? PortalContext : CurrentMemoryContext,
								   "ade sync job", ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(jobcxt);

	/*
	 * search_path pinned as a SET clause would (a procedure with one cannot
	 * commit): in each transaction of a run that commits, else until the
	 * call returns
	 */
	if (commit)
		AdePinSearchPath();
	else
	{
		nest = NewGUCNestLevel();
		(void) set_config_option("search_path", "pg_catalog, pg_temp", PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
	}
	sync_tokens(NULL, commit, PG_NARGS() == 1, PG_NARGS() == 1 ? PG_GETARG_INT64(0) : 0);
	if (!commit)
		AtEOXact_GUC(true, nest);
	MemoryContextSwitchTo(old);
	MemoryContextDelete(jobcxt);
	PG_RETURN_VOID();
}
