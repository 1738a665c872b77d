/*-------------------------------------------------------------------------
 *
 * devices.c
 *		The device calls of the device-assignment API (0.5): details
 *		(POST /devices), profile removal (DELETE /profile/devices), release
 *		(POST /devices/disown) and activation lock escrow
 *		(POST /device/activationlock).
 *
 * Owns the order of work of a device call and its protocol: which token
 * each serial goes through (the one that holds it; for details of a serial
 * nobody holds, every token: ade_device_targets()), batches of at most
 * 1000 serials, each batch a subtransaction of its own (a failed batch
 * costs that batch, never the answers of the others), and the request
 * bodies.  What an answer does to the tables is SQL
 * (ade_store_device_answers() in src/schema/devices.sql).
 *
 * Details, removal and release take the run lock first (claim.c), waiting
 * for a run under way to end: no run assigns a profile a removal is taking
 * away, or applies a page older than a record details store, while the
 * call is open (a run that starts meanwhile reports its tokens busy).
 * Every call to Apple comes first, holding no lock the application
 * meets; then every answer is stored, under the one lock rule with the
 * application (coexist.c), in one statement per batch.  So an application
 * statement on hosts waits for those statements (and the rest of the
 * caller's transaction) at most, never for Apple; and a call that is
 * cancelled stores nothing (Apple did what it answered: a release shows in
 * the next reconcile, a removal in the device's next record).
 *
 * A release or an escrow is not safe to send twice (the second answer,
 * NOT_ACCESSIBLE or DEVICE_ALREADY_LOCKED, would hide that the first was
 * done): once it reached ABM it is not resent (client->once, abm.c).  A
 * release batch that got no answer is kept as "may have been released",
 * never raised, and the token reconciles on its next run.
 *
 * What is answered is returned, a row per serial; a serial that got no
 * answer has a null response_status, a WARNING says why, and
 * ade_device_actions keeps the error.  A call of which no batch was
 * answered raises the error, unless ABM asked for a pause (429 or 503 with
 * Retry-After): that is kept for every later call and run (pause.c), and
 * said in a WARNING.
 *
 * The escrow key of an activation lock is a secret: it goes into the
 * request body and nowhere else; the body is wiped after the call, and an
 * error message that would quote it (ABM's answer, excerpted) has it
 * replaced.
 *
 * Copyright (c) 2026, the ade authors
 *
 * IDENTIFICATION
 *	  src/devices.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xlog.h"
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
#include "utils/jsonb.h"
#include "utils/memutils.h"

PG_FUNCTION_INFO_V1(ade_device_details);
PG_FUNCTION_INFO_V1(ade_remove_profile);
PG_FUNCTION_INFO_V1(ade_release_devices);
PG_FUNCTION_INFO_V1(ade_escrow_activation_lock);

#define DEVICE_BATCH 1000		/* Apple's limit per call */

typedef struct DeviceAction
{
	const char *name;			/* ade_device_actions.action */
	const char *method;
	const char *path;
} DeviceAction;

static const DeviceAction DETAILS = {"details", "POST", "/devices"};
static const DeviceAction REMOVE = {"remove_profile", "DELETE", "/profile/devices"};
static const DeviceAction RELEASE = {"release", "POST", "/devices/disown"};
static const DeviceAction LOCK = {"activation_lock", "POST", "/device/activationlock"};

/* one batch of serials of one token, and what became of it */
typedef struct Batch
{
	int64		token_id;
	Datum		serials;		/* text[] */
	char	   *body;			/* the request */
	Jsonb	   *answer;			/* NULL: none */
	char	   *error;			/* why none */
	bool		unsure;			/* a release that may have been done all the same */
} Batch;

typedef struct CallStep
{
	AdeAbmClient *client;
	const DeviceAction *action;
	Batch	   *batch;
	const char *secret;			/* scrubbed from messages (the escrow key) */
} CallStep;

static void
spi_check(int rc, int expected, const char *what)
{
	if (rc != expected)
		elog(ERROR, "%s failed: %s", what, SPI_result_code_string(rc));
}

/* replace every copy of needle in s (in place: the same length) */
static void
mask(char *s, const char *needle)
{
	size_t		n;
	char	   *p;

	if (s == NULL || needle == NULL || (n = strlen(needle)) == 0)
		return;
	while ((p = strstr(s, needle)) != NULL)
		memset(p, '*', n);
}

/* mask the secret in s, as it is and as a JSON string would quote it */
static void
scrub(char *s, const char *secret)
{
	StringInfoData q;

	if (s == NULL || secret == NULL || secret[0] == '\0')
		return;
	mask(s, secret);
	initStringInfo(&q);
	escape_json(&q, secret);
	q.data[q.len - 1] = '\0';	/* without its quotes */
	mask(s, q.data + 1);
	explicit_bzero(q.data, q.len);
	pfree(q.data);
}

/* the request body {"devices": [serials]} */
static char *
devices_body(Datum serials)
{
	ArrayType  *arr = DatumGetArrayTypeP(serials);
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	int			i;
	StringInfoData b;

	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	initStringInfo(&b);
	appendStringInfoString(&b, "{\"devices\": [");
	for (i = 0; i < n; i++)
	{
		if (i > 0)
			appendStringInfoString(&b, ", ");
		escape_json(&b, TextDatumGetCString(elems[i]));
	}
	appendStringInfoString(&b, "]}");
	return b.data;
}

/* one call to Apple and its answer, checked for the shape Apple documents */
static void
call_step(void *arg)
{
	CallStep   *cs = (CallStep *) arg;
	AdeAbmResponse resp;
	Jsonb	   *jb;
	char		what[64];

	snprintf(what, sizeof(what), "%s %s", cs->action->method, cs->action->path);
	cs->client->unsure = false;
	AdeAbmCall(cs->client, cs->action->method, cs->action->path, cs->batch->body, &resp);
	if (resp.kind != ABM_OK)
	{
		scrub(resp.body, cs->secret);
		AdeAbmRaise(&resp, what);
	}
	/* ABM answered 200: what fails below, it did */
	cs->client->unsure = true;
	scrub(resp.body, cs->secret);
	jb = AdeAbmParseJson(&resp, what);
	if (!JB_ROOT_IS_OBJECT(jb) ||
		(cs->action != &LOCK && (AdeJsonGetJsonb(jb, "devices") == NULL ||
								 !JB_ROOT_IS_OBJECT(AdeJsonGetJsonb(jb, "devices")))) ||
		(cs->action == &LOCK && AdeJsonGetText(jb, "response_status") == NULL))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("ABM answered %s with JSON that is not %s", what,
						cs->action == &LOCK ? "an object with \"response_status\""
						: "an object with a \"devices\" object")));
	cs->batch->answer = jb;
}

/*
 * Send every batch of one token (its client opened here).  After a failure
 * the token's other batches are not sent: the failure says why.
 */
static void
call_token(int64 token_id, Batch *batches, int nbatches, const DeviceAction *action,
		   const char *secret, AdeAbmClient **client_out, ErrorData **first)
{
	AdeAbmClient *client = AdeAbmOpen(token_id);
	char	   *stop = NULL;
	int			i;

	*client_out = client;
	/* a release or an escrow sent twice would be answered as if not done */
	client->once = (action == &RELEASE || action == &LOCK);
	for (i = 0; i < nbatches; i++)
	{
		CallStep	cs = {client, action, &batches[i], secret};
		ErrorData  *error;
		AdeAbmKind	kind;

		CHECK_FOR_INTERRUPTS();
		if (stop != NULL)
		{
			batches[i].error = stop;
			continue;
		}
		if (AdeTrySubxact(call_step, &cs, &error, &kind))
			continue;
		scrub(error->message, secret);
		scrub(error->detail, secret);
		scrub(error->hint, secret);
		scrub(error->context, secret);
		batches[i].error = pstrdup(error->message);
		stop = psprintf("not sent: %s", error->message);
		/* a pause ABM asked for is kept (pause.c), not raised */
		if (!((kind == ABM_PAUSED || AdePausedUntil(client, AdeAbmRequestKind(action->method, action->path)) != 0) &&
			  !(action == &RELEASE && client->unsure)))
		{
			/*
			 * A release that reached ABM and got no answer that says it
			 * was not done (a lost or cut answer, a 5xx, a 200 that is not
			 * Apple's shape) may have been done: said, and the token
			 * reconciles on its next run to find out.  Anything else (a
			 * 4xx, no session) is a plain failure.
			 */
			if (action == &RELEASE && client->unsure)
			{
				batches[i].unsure = true;
				batches[i].error = psprintf("ABM may have released these devices (its next run reconciles the token): %s",
											error->message);
				error->detail = pstrdup("ABM may have released these devices: the token's next run reconciles to find out.");
			}
			if (*first == NULL)
				*first = error;
		}
	}
}

/* the serials of the call by token, in batches; the rows to return after */
static Batch *
plan_batches(Datum serials, bool any, int *nbatches)
{
	Oid			argtypes[2] = {TEXTARRAYOID, BOOLOID};
	Datum		args[2] = {serials, BoolGetDatum(any)};
	int			rc;
	uint64		r;
	Batch	   *out;
	int			n = 0;
	int			cap = 8;
	SPITupleTable *tt;
	uint64		rows;
	MemoryContext caller = CurrentMemoryContext;

	rc = AdeExec("SELECT token_id, serials FROM %s.ade_device_targets($1, $2)",
				 2, argtypes, args, NULL, true, 0);
	spi_check(rc, SPI_OK_SELECT, "ade_device_targets");
	tt = SPI_tuptable;
	rows = SPI_processed;
	out = MemoryContextAlloc(caller, sizeof(Batch) * cap);
	for (r = 0; r < rows; r++)
	{
		bool		isnull;
		int64		token_id = DatumGetInt64(SPI_getbinval(tt->vals[r], tt->tupdesc, 1, &isnull));
		ArrayType  *arr = DatumGetArrayTypeP(SPI_getbinval(tt->vals[r], tt->tupdesc, 2, &isnull));
		Datum	   *elems;
		bool	   *nulls;
		int			ne;
		int			from;

		deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &ne);
		for (from = 0; from < ne; from += DEVICE_BATCH)
		{
			int			cnt = Min(DEVICE_BATCH, ne - from);
			MemoryContext old = MemoryContextSwitchTo(caller);
			int			k;
			Datum	   *part = palloc(sizeof(Datum) * cnt);

			if (n == cap)
			{
				cap *= 2;
				out = repalloc(out, sizeof(Batch) * cap);
			}
			for (k = 0; k < cnt; k++)
				part[k] = PointerGetDatum(PG_DETOAST_DATUM_COPY(elems[from + k]));
			out[n].token_id = token_id;
			out[n].serials = PointerGetDatum(construct_array(part, cnt, TEXTOID, -1, false, TYPALIGN_INT));
			out[n].body = NULL;
			out[n].answer = NULL;
			out[n].error = NULL;
			out[n].unsure = false;
			n++;
			MemoryContextSwitchTo(old);
		}
	}
	SPI_freetuptable(tt);
	*nbatches = n;
	return out;
}

/* store what each batch got (one statement per batch), under the lock rule */
static void
store_batches(int64 call_id, const DeviceAction *action, Batch *batches, int n)
{
	Oid			argtypes[6] = {INT8OID, TEXTOID, INT8OID, TEXTARRAYOID, JSONBOID, TEXTOID};
	int			i;

	for (i = 0; i < n; i++)
	{
		Datum		args[6];
		char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
		int			rc;

		args[0] = Int64GetDatum(call_id);
		args[1] = CStringGetTextDatum(action->name);
		args[2] = Int64GetDatum(batches[i].token_id);
		args[3] = batches[i].serials;
		if (batches[i].answer)
			args[4] = JsonbPGetDatum(batches[i].answer);
		else
			nulls[4] = 'n';
		if (batches[i].error)
			args[5] = CStringGetTextDatum(batches[i].error);
		else
			nulls[5] = 'n';
		rc = AdeExec("SELECT %s.ade_store_device_answers($1, $2, $3, $4, $5, $6)",
					 6, argtypes, args, nulls, false, 0);
		spi_check(rc, SPI_OK_SELECT, "ade_store_device_answers");
	}
}

static int64
next_call_id(void)
{
	int			rc;
	bool		isnull;
	int64		id;

	rc = AdeExec("SELECT nextval('%s.ade_device_call_seq')", 0, NULL, NULL, NULL, false, 1);
	spi_check(rc, SPI_OK_SELECT, "nextval");
	id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_freetuptable(SPI_tuptable);
	return id;
}

/* the checked serials of argument 0: distinct, sorted */
static Datum
checked_serials(FunctionCallInfo fcinfo, const char *what)
{
	Oid			argtypes[2] = {TEXTARRAYOID, TEXTOID};
	Datum		args[2];
	char		nulls[2] = {' ', ' '};
	int			rc;
	bool		isnull;
	Datum		d;

	if (PG_ARGISNULL(0))
		nulls[0] = 'n';
	else
		args[0] = PG_GETARG_DATUM(0);
	args[1] = CStringGetTextDatum(what);
	rc = AdeExec("SELECT %s.ade_check_serials($1, $2)", 2, argtypes, args, nulls, true, 1);
	spi_check(rc, SPI_OK_SELECT, "ade_check_serials");
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return PointerGetDatum(PG_DETOAST_DATUM_COPY(d));
}

/*
 * A device call for every serial of argument 0, through the token that
 * holds each (any: details, every token for a serial nobody holds).  A
 * call of which no batch was answered raises its error (a pause: a
 * WARNING); otherwise each failure is a WARNING.  Returns the call's id.
 */
static int64
device_call(FunctionCallInfo fcinfo, const DeviceAction *action, bool any,
			Batch **batches_out, int *nbatches_out)
{
	Datum		serials = checked_serials(fcinfo, "serials");
	int			nb;
	Batch	   *batches;
	AdeAbmClient **clients;
	ErrorData  *first = NULL;
	bool		answered = false;
	bool		unsure = false;
	int64		call_id;
	int			i;
	int			from;

	/*
	 * No run while ABM is asked and its answers are stored: a run would
	 * assign a profile this call removes, or apply a page older than a
	 * record this call stores.  Then the tokens that hold the serials now.
	 */
	AdeRunLockWait(psprintf("ade_%s()", action == &DETAILS ? "device_details" :
							action == &REMOVE ? "remove_profile" : "release_devices"));
	batches = plan_batches(serials, any, &nb);
	clients = palloc0(sizeof(AdeAbmClient *) * Max(nb, 1));
	for (i = 0; i < nb; i++)
		batches[i].body = devices_body(batches[i].serials);

	/* every call first, holding nothing; a token's batches are adjacent */
	for (from = 0; from < nb;)
	{
		int			to = from;

		while (to < nb && batches[to].token_id == batches[from].token_id)
			to++;
		call_token(batches[from].token_id, batches + from, to - from, action, NULL,
				   &clients[from], &first);
		from = to;
	}

	/* then what came back, and the sessions and pauses ABM gave */
	call_id = next_call_id();
	store_batches(call_id, action, batches, nb);
	for (i = 0; i < nb; i++)
	{
		answered = answered || batches[i].answer != NULL;
		unsure = unsure || batches[i].unsure;
		if (batches[i].unsure)
		{
			Oid			argtypes[1] = {INT8OID};
			Datum		args[1] = {Int64GetDatum(batches[i].token_id)};

			spi_check(AdeExec("UPDATE %s.abm_tokens SET reconcile_due = true, reconcile_asked_at = clock_timestamp() WHERE id = $1",
							  1, argtypes, args, NULL, false, 0), SPI_OK_UPDATE, "asking for a reconcile");
		}
		if (clients[i])
		{
			AdeAbmSaveSession(clients[i]);
			AdeAbmSavePauses(clients[i]);
			AdeAbmClose(clients[i]);
		}
	}
	/* (a release that may have been done is kept: a WARNING says so) */
	if (!answered && first != NULL && !unsure)
		ReThrowError(first);
	for (i = 0; i < nb; i++)
		if (batches[i].error && strncmp(batches[i].error, "not sent: ", 10) != 0)
			ereport(WARNING,
					(errmsg("%s", batches[i].error),
					 errdetail("%d serials of abm token " INT64_FORMAT " got no answer; ade_device_actions keeps why.",
							   ArrayGetNItems(ARR_NDIM(DatumGetArrayTypeP(batches[i].serials)),
											  ARR_DIMS(DatumGetArrayTypeP(batches[i].serials))),
							   batches[i].token_id)));
	*batches_out = batches;
	*nbatches_out = nb;
	return call_id;
}

/* the call's rows (ade_device_call_result()) into the function's result */
static void
return_rows(FunctionCallInfo fcinfo, int64 call_id, int ncols)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Oid			argtypes[1] = {INT8OID};
	Datum		args[1] = {Int64GetDatum(call_id)};
	int			rc;
	uint64		r;

	rc = AdeExec("SELECT serial, token_id, response_status, device FROM %s.ade_device_call_result($1)",
				 1, argtypes, args, NULL, false, 0);
	spi_check(rc, SPI_OK_SELECT, "ade_device_call_result");
	for (r = 0; r < SPI_processed; r++)
	{
		Datum		values[4];
		bool		nulls[4];
		int			c;

		for (c = 0; c < ncols; c++)
			values[c] = SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, c + 1, &nulls[c]);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	SPI_freetuptable(SPI_tuptable);
}

static Datum
device_function(FunctionCallInfo fcinfo, const DeviceAction *action, bool any, int ncols)
{
	Batch	   *batches;
	int			nb;
	int64		call_id;

	/* a device call asks ABM and then stores: never on a standby */
	AdeRefuseOnStandby(action == &DETAILS ? "ade_device_details()" :
					  action == &REMOVE ? "ade_remove_profile()" : "ade_release_devices()");

	InitMaterializedSRF(fcinfo, 0);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	call_id = device_call(fcinfo, action, any, &batches, &nb);
	return_rows(fcinfo, call_id, ncols);
	SPI_finish();
	return (Datum) 0;
}

/*
 * ade_device_details(serials text[]) returns table(serial, token_id,
 * response_status, device): POST /devices
 */
Datum
ade_device_details(PG_FUNCTION_ARGS)
{
	return device_function(fcinfo, &DETAILS, true, 4);
}

/* ade_remove_profile(serials text[]) returns table(serial, token_id, response_status) */
Datum
ade_remove_profile(PG_FUNCTION_ARGS)
{
	return device_function(fcinfo, &REMOVE, false, 3);
}

/*
 * ade_release_devices(serials text[], confirm boolean default false):
 * POST /devices/disown, which Apple cannot undo: refused unless confirm
 */
Datum
ade_release_devices(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(1) || !PG_GETARG_BOOL(1))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("releasing devices takes them out of the organisation at Apple for good; nothing was sent"),
				 errdetail("Apple cannot undo a release: the device must be added to Apple Business Manager again by its reseller or with Apple Configurator."),
				 errhint("Call ade_release_devices(serials, confirm => true).")));
	return device_function(fcinfo, &RELEASE, false, 3);
}

/* text of a nullable argument, checked: printable, at most max bytes */
static char *
checked_text(FunctionCallInfo fcinfo, int argno, const char *name, int max, bool secret)
{
	char	   *s;
	const unsigned char *p;

	if (PG_ARGISNULL(argno))
		return NULL;
	s = text_to_cstring(PG_GETARG_TEXT_PP(argno));
	if (s[0] == '\0' || (int) strlen(s) > max)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be 1 to %d bytes", name, max),
				 secret ? errdetail("It is not shown.") : 0));
	for (p = (const unsigned char *) s; *p; p++)
		if (*p < 0x20 || *p == 0x7F)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s has a control character", name),
					 secret ? errdetail("It is not shown.") : 0));
	return s;
}

/*
 * ade_escrow_activation_lock(serial, escrow_key, lost_message) returns
 * text: POST /device/activationlock for a device held here; ABM's
 * response_status
 */
Datum
ade_escrow_activation_lock(PG_FUNCTION_ARGS)
{
	char	   *key;
	char	   *message;
	Datum		serials;
	Batch	   *batches;
	int			nb;
	AdeAbmClient *client = NULL;
	ErrorData  *first = NULL;
	StringInfoData b;
	char	   *status;
	ArrayType  *arr;
	Datum	   *elems;
	bool	   *enulls;
	int			ne;

	AdeRefuseOnStandby("ade_escrow_activation_lock()");
	key = checked_text(fcinfo, 1, "escrow_key", 1024, true);
	message = checked_text(fcinfo, 2, "lost_message", 1000, false);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("serial is NULL")));
	{
		/* (the serial as an array: the checks of every device call) */
		Datum		one = PG_GETARG_DATUM(0);
		Oid			argtypes[2] = {TEXTOID, TEXTOID};
		Datum		args[2] = {one, CStringGetTextDatum("serial")};
		int			rc;
		bool		isnull;

		rc = AdeExec("SELECT %s.ade_check_serials(ARRAY[$1], $2)", 2, argtypes, args, NULL, true, 1);
		spi_check(rc, SPI_OK_SELECT, "ade_check_serials");
		serials = PointerGetDatum(PG_DETOAST_DATUM_COPY(SPI_getbinval(SPI_tuptable->vals[0],
																	   SPI_tuptable->tupdesc, 1, &isnull)));
	}
	batches = plan_batches(serials, false, &nb);
	Assert(nb == 1);
	arr = DatumGetArrayTypeP(serials);
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &enulls, &ne);

	initStringInfo(&b);
	appendStringInfoString(&b, "{\"device\": ");
	escape_json(&b, TextDatumGetCString(elems[0]));
	if (key)
	{
		appendStringInfoString(&b, ", \"escrow_key\": ");
		escape_json(&b, key);
	}
	if (message)
	{
		appendStringInfoString(&b, ", \"lost_message\": ");
		escape_json(&b, message);
	}
	appendStringInfoChar(&b, '}');
	batches[0].body = b.data;

	PG_TRY();
	{
		call_token(batches[0].token_id, batches, 1, &LOCK, key, &client, &first);
	}
	PG_FINALLY();
	{
		/* the body and this copy of the key are wiped however the call ends */
		explicit_bzero(b.data, b.len);
		if (key)
			explicit_bzero(key, strlen(key));
	}
	PG_END_TRY();

	/* what is stored: the status alone, never what else ABM echoed */
	status = NULL;
	if (batches[0].answer)
	{
		status = AdeJsonGetText(batches[0].answer, "response_status");
		batches[0].answer = DatumGetJsonbP(DirectFunctionCall1(jsonb_in,
															   CStringGetDatum(psprintf("{\"response_status\": \"%s\"}",
																						strspn(status, "ABCDEFGHIJKLMNOPQRSTUVWXYZ_") == strlen(status) ? status : "FAILED"))));
		status = AdeJsonGetText(batches[0].answer, "response_status");
	}
	store_batches(next_call_id(), &LOCK, batches, 1);
	if (client)
	{
		AdeAbmSaveSession(client);
		AdeAbmSavePauses(client);
		AdeAbmClose(client);
	}
	if (status == NULL && first != NULL)
		ReThrowError(first);
	if (status == NULL)
		ereport(WARNING,
				(errmsg("%s", batches[0].error ? batches[0].error : "no answer"),
				 errdetail("The activation lock of %s was not escrowed.", TextDatumGetCString(elems[0]))));
	SPI_finish();
	if (status == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(status));
}
