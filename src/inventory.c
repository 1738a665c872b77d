/*-------------------------------------------------------------------------
 *
 * inventory.c
 *		What the runs do with the Business / School Manager API: read the
 *		organisation's inventory, its AppleCare coverage, and start and
 *		poll the activities that move devices between MDM servers.
 *
 * Owns: ade_inventory_sync(), ade_refresh_applecare(),
 * ade_assign_devices(), ade_unassign_devices(), and AdeApiRun() (the
 * accounts' share of a run of ade_sync()).  It asks ABM through api.c;
 * every page, answer and decision about rows is one SQL statement of
 * src/schema/api.sql.
 *
 * Design notes:
 *
 * - Steps.  Each part of an account's run (its activities polled, some
 *   AppleCare, each inventory page) is a step of its own (AdeTrySubxact):
 *   committed at once in the pg_cron job, its memory freed after.  One
 *   device or activity ABM refuses is that one's error, never the step's.
 *
 * - The end of a pass (released devices, the drift of live assignments),
 *   which takes hosts under the lock rule with the application, comes
 *   after every request of the run, within its deadline, never before one.
 *   ade_inventory_sync() waits for a run under way (the run lock).
 *
 * - Budget.  Within a run, an account's steps keep to its share of
 *   ade.max_sync_seconds: no page is started with less than twice the time
 *   the last one took.
 *
 * - A 5xx or no answer to the POST that starts an activity is never sent
 *   again (it may have started): it is kept as an activity of status
 *   UNKNOWN, and the next inventory shows where the devices are.
 *
 * Copyright (c) 2026, the ade authors
 *
 * IDENTIFICATION
 *	  src/inventory.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "ade.h"
#include "api.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(ade_inventory_sync);
PG_FUNCTION_INFO_V1(ade_refresh_applecare);
PG_FUNCTION_INFO_V1(ade_assign_devices);
PG_FUNCTION_INFO_V1(ade_unassign_devices);

#define PAGE_LIMIT "1000"
#define POLLS_PER_RUN 20

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
	ApiSpiCheck(rc, SPI_OK_SELECT, "ade_api_inventory_state");
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
	ApiRequest(c, "GET", path, NULL, &ans);
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
		ApiSpiCheck(rc, SPI_OK_UPDATE, "abm_api_accounts");
		n->note = psprintf("ABM refused the inventory's cursor (GET %s: HTTP 400, %s): the inventory begins again",
						   path, ApiErrorWords(ans.body));
		return;
	}
	else if (ans.status != 200)
		ApiRaise(&ans, psprintf("GET %s", path));
	pargs[0] = Int64GetDatum(c->account_id);
	pargs[1] = CStringGetTextDatum(phase);
	if (server)
		pargs[2] = CStringGetTextDatum(server);
	else
		pnulls[2] = 'n';
	pargs[3] = CStringGetTextDatum(body);
	rc = AdeExec("SELECT devices, servers, done FROM %s.ade_api_inventory_page($1, $2, $3, $4::jsonb)",
				 4, ptypes, pargs, pnulls, false, 1);
	ApiSpiCheck(rc, SPI_OK_SELECT, "ade_api_inventory_page");
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
 * JSON is that key's failure, never another's; $4 each key's error).  An
 * answer that is not 200 or 404 is the key's error, not the step's: one
 * device or activity ABM refuses never stops the others.  A pause stops it.
 */
static int
get_each(ApiClient *c, char **keys, uint64 count, const char *path_fmt, const char *store,
		 ApiCounts *n)
{
	Datum	   *k = palloc(sizeof(Datum) * Max(count, 1));
	Datum	   *v = palloc(sizeof(Datum) * Max(count, 1));
	bool	   *vnull = palloc(sizeof(bool) * Max(count, 1));
	Datum	   *e = palloc(sizeof(Datum) * Max(count, 1));
	bool	   *enull = palloc(sizeof(bool) * Max(count, 1));
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
		ApiRequest(c, "GET", path, NULL, &ans);
		if (ans.paused)
		{
			n->paused = true;
			break;
		}
		k[done] = CStringGetTextDatum(keys[i]);
		vnull[done] = ans.status != 200;
		enull[done] = ans.status == 200 || ans.status == 404;
		if (!vnull[done])
			v[done] = CStringGetTextDatum(ans.body);
		if (!enull[done])
			e[done] = CStringGetTextDatum(psprintf("GET %s: %s", path,
												   ans.status > 0 ? psprintf("HTTP %ld, %s", ans.status, ApiErrorWords(ans.body))
												   : ans.status < 0 ? "a body that is not valid UTF-8" : "no answer"));
		done++;
		took = GetCurrentTimestamp() - start;
	}
	if (done > 0)
	{
		Oid			types[4] = {INT8OID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID};
		Datum		args[4];
		int			rc;
		int			lb = 1;

		args[0] = Int64GetDatum(c->account_id);
		args[1] = PointerGetDatum(construct_array(k, done, TEXTOID, -1, false, TYPALIGN_INT));
		args[2] = PointerGetDatum(construct_md_array(v, vnull, 1, &done, &lb, TEXTOID, -1, false, TYPALIGN_INT));
		args[3] = PointerGetDatum(construct_md_array(e, enull, 1, &done, &lb, TEXTOID, -1, false, TYPALIGN_INT));
		rc = AdeExec(store, 4, types, args, NULL, false, 1);
		ApiSpiCheck(rc, SPI_OK_SELECT, store);
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
	ApiSpiCheck(rc, SPI_OK_SELECT, "abm_org_devices");
	list = spi_texts(&count);
	n->applecare += get_each(c, list, count, "/v1/orgDevices/%s/appleCareCoverage",
							 "SELECT %s.ade_api_store_applecare($1, $2, $3, $4)", n);
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
	ApiSpiCheck(rc, SPI_OK_SELECT, "abm_device_activities");
	ids = spi_texts(&count);
	n->activities += get_each(c, ids, count, "/v1/orgDeviceActivities/%s",
							  "SELECT %s.ade_api_store_activities($1, $2, $3, $4)", n);
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

	s->client = ApiClientOpen(s->account_id);
}

static void
activities_step(void *arg)
{
	AccountStep *s = (AccountStep *) arg;

	poll_activities(s->client, &s->n);
	ApiStoreToken(s->client);
}

static void
page_step(void *arg)
{
	AccountStep *s = (AccountStep *) arg;

	inventory_page(s->client, s->force, &s->n, &s->more);
	ApiStoreToken(s->client);
}

static void
applecare_step(void *arg)
{
	AccountStep *s = (AccountStep *) arg;

	applecare(s->client, NULL, &s->n);
	ApiStoreToken(s->client);
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
	ApiSpiCheck(rc, SPI_OK_UPDATE, "abm_api_accounts.last_error");
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
		char	   *side = NULL;

		s.client->deadline = deadline;

		/*
		 * Activities and AppleCare: one device or activity refused stops
		 * nothing, and neither step failing stops the inventory (its error
		 * is kept when the inventory has none)
		 */
		if (step(activities_step, &s, pagecxt, &side) && !s.n.paused && ade_applecare_per_run > 0)
			(void) step(applecare_step, &s, pagecxt, &side);
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
		if (msg == NULL)
			msg = side;
		ApiClientClose(s.client);
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
	ApiSpiCheck(rc, SPI_OK_SELECT, "ade_api_finish_pass");
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
	ApiSpiCheck(rc, SPI_OK_SELECT, "abm_api_accounts");
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

	ApiNotNull(fcinfo, 0, "serials", "ade_refresh_applecare()");
	AdeRefuseOnStandby("ade_refresh_applecare()");
	serials = PG_GETARG_ARRAYTYPE_P(0);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	ids = account_ids(&n);
	for (i = 0; i < n; i++)
	{
		ApiClient  *c = ApiClientOpen(ids[i]);
		ApiCounts	counts;

		memset(&counts, 0, sizeof(counts));
		applecare(c, serials, &counts);
		ApiStoreToken(c);
		ApiClientClose(c);
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

	ApiNotNull(fcinfo, 0, "serials", fn);
	ApiNotNull(fcinfo, 1, "mdm_server", fn);
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
	ApiSpiCheck(rc, SPI_OK_SELECT, "ade_api_activity_request");
	account_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	server_id = TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	body = TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
	c = ApiClientOpen(account_id);
	ApiRequest(c, "POST", "/v1/orgDeviceActivities", body, &ans);
	ApiStoreToken(c);
	ApiClientClose(c);
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
		ApiRaise(&ans, psprintf("POST /v1/orgDeviceActivities (%s)", type));
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
			sargs[5] = CStringGetTextDatum(ans.status ? psprintf("HTTP %ld: %s", ans.status, ApiErrorWords(ans.body))
										   : "no answer");
		}
		else
		{
			sargs[4] = CStringGetTextDatum(ans.body);
			snulls[5] = 'n';
		}
		rc = AdeExec("SELECT %s.ade_api_store_new_activity($1, $2, $3, $4, $5::jsonb, $6)",
					 6, stypes, sargs, snulls, false, 1);
		ApiSpiCheck(rc, SPI_OK_SELECT, "ade_api_store_new_activity");
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
