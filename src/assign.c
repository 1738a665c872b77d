/*-------------------------------------------------------------------------
 *
 * assign.c
 *		Profile assignment (sync rule 10): define each (profile, token) at
 *		Apple once, send the devices that are due in batches of at most
 *		1000, and store every serial's answer.
 *
 * Owns: the order of the protocol calls (POST /profile, PUT
 * /profile/devices), their bodies, and what happens when one fails.  What
 * is due, which profile applies, and what an answer does to a row
 * (cooldowns, FAILED for a serial missing from the answer) are SQL:
 * ade_assign_candidates(), ade_device_profiles() and ade_store_answers()
 * (src/schema/profiles.sql).
 *
 * It runs after a token's pages, in the token's run.  Each call to Apple
 * and the storing of its answer is a subtransaction of its own
 * (AdeTrySubxact): a definition, or a batch's answers, are kept when a
 * later call fails, so that the next run neither defines the profile again
 * nor sends those devices again.  The first failure ends the assignments
 * of the run (ABM is in trouble, or throttles); the devices of a batch that
 * got no answer go to the back of the queue (ade_batch_unanswered()), so
 * that one bad batch never holds up the others, run after run.  No call
 * starts after the token's deadline (its share of ade.max_sync_seconds).
 * Calls to Apple are not undone by a rollback; both are safe to send again
 * (a profile defined twice gets two UUIDs, the second one wins; an
 * assignment sent twice is the same assignment).  A THROTTLED answer ends
 * the assignments of this run: the rest stay due for a later one.
 *
 * Copyright (c) 2026, the ade authors
 *
 * IDENTIFICATION
 *	  src/assign.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "ade.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "nodes/pg_list.h"
#include "nodes/value.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#define ASSIGN_BATCH 1000		/* Apple's limit per PUT /profile/devices */

typedef struct Candidate
{
	char	   *serial;
	char	   *key;
	char	   *uuid;			/* NULL until defined */
} Candidate;

static char *
col_text(int row, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, &isnull);

	return isnull ? NULL : TextDatumGetCString(d);
}

/*
 * Every step looks whether its token is still there before it asks ABM
 * (claim == false: locking nothing while Apple answers), and claims it
 * before it writes: after hosts when it writes assignments (the lock order
 * of coexist.c).
 */
static void
claim_or_fail(int64 token_id, bool claim, bool hosts)
{
	if (!(claim ? AdeClaimToken(token_id, hosts) : AdeTokenLive(token_id)))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("abm token " INT64_FORMAT " was removed or taken by another session during the run", token_id),
				 errhint("The next run assigns what is left.")));
}

/* POST /profile: define a profile for this token, store and return its UUID */
static char *
define_profile(AdeAbmClient *client, int64 token_id, const char *key, char **refusal)
{
	AdeAbmResponse resp;
	Jsonb	   *jb;
	char	   *uuid;
	char	   *profile;
	Oid			argtypes[3] = {INT8OID, TEXTOID, TEXTOID};
	Datum		args[3];
	char	   *sql;
	int			rc;

	/*
	 * A profile ABM refused is sent again after ade.failed_retry_interval
	 * (ABM's side may have changed), at once when set again; a changed one
	 * is another key.
	 */
	args[0] = Int64GetDatum(token_id);
	args[1] = CStringGetTextDatum(key);
	if (AdeSqlAtLeast(0, 4))
	{
		Oid			rtypes[3] = {INT8OID, TEXTOID, INT4OID};

		args[2] = Int32GetDatum(ade_failed_retry_interval);
		rc = AdeExec("SELECT refusal FROM %s.ade_profile_definitions "
					   "WHERE token_id = $1 AND profile_key = $2 AND refusal IS NOT NULL "
					   "AND defined_at > now() - make_interval(secs => $3)", 3, rtypes, args, NULL, false, 1);
		if (rc != SPI_OK_SELECT)
			elog(ERROR, "SPI_execute_with_args failed: %s", SPI_result_code_string(rc));
		if (SPI_processed == 1)
		{
			*refusal = col_text(0, 1);
			SPI_freetuptable(SPI_tuptable);
			return NULL;
		}
		SPI_freetuptable(SPI_tuptable);
	}

	/*
	 * The profile itself (a scope's or a team's), once per key; never with
	 * a "devices" list (ade_set_profile() refuses one; one stored before
	 * 0.4 would make Apple assign those serials whatever their scope).
	 */
	if (AdeSqlAtLeast(0, 5))	/* a scope's, a team's, or a device's own */
		rc = AdeExec("SELECT (p.profile - 'devices')::text FROM ("
					 "SELECT m.profile, m.profile_key FROM %s.ade_device_profiles($1) m "
					 "UNION ALL SELECT y.profile, md5(y.profile::text) FROM %s.ade_device_pins y "
					 "WHERE y.profile IS NOT NULL) p WHERE p.profile_key = $2 LIMIT 1",
					 2, argtypes, args, NULL, false, 1);
	else if (AdeSqlAtLeast(0, 4))
		rc = AdeExec("SELECT (m.profile - 'devices')::text FROM %s.ade_device_profiles($1) m "
					 "WHERE m.profile_key = $2 LIMIT 1", 2, argtypes, args, NULL, false, 1);
	else						/* the SQL of 0.3 and before */
		rc = AdeExec("SELECT p.profile::text FROM (SELECT e.profile, e.profile_key FROM %s.ade_effective_profiles($1) e "
					   "UNION ALL SELECT x.profile, md5(x.profile::text) FROM %s.ade_profiles x "
					   "WHERE x.team_id IS NOT NULL) p WHERE p.profile_key = $2 LIMIT 1", 2, argtypes, args, NULL, false, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "the profile to define vanished: %s", SPI_result_code_string(rc));
	profile = col_text(0, 1);
	SPI_freetuptable(SPI_tuptable);

	AdeAbmCall(client, "POST", "/profile", profile, &resp);
	/* what is stored is the token's alone: hosts is not needed */
	claim_or_fail(token_id, true, false);

	/*
	 * A 400: ABM refuses this profile (CONFIG_URL_REQUIRED, a reason).  Any
	 * other failure (a proxy's 404 or 408, a 5xx) is the run's error and the
	 * next run sends it again.  Kept as refused, with ABM's
	 * words, for ade_status.attention; its devices wait.
	 */
	if (resp.status == 400 && (resp.kind == ABM_OTHER || resp.kind == ABM_UNKNOWN_PROFILE) &&
		AdeSqlAtLeast(0, 4))
	{
		*refusal = psprintf("HTTP %ld %s", resp.status, AdeAbmExcerpt(resp.body));
		args[2] = CStringGetTextDatum(*refusal);
		rc = AdeExec("INSERT INTO %s.ade_profile_definitions (token_id, profile_key, profile_uuid, refusal) "
					   "VALUES ($1, $2, NULL, $3) ON CONFLICT (token_id, profile_key) "
					   "DO UPDATE SET profile_uuid = NULL, refusal = excluded.refusal, defined_at = now()", 3, argtypes, args, NULL, false, 0);
		if (rc != SPI_OK_INSERT)
			elog(ERROR, "SPI_execute_with_args failed: %s", SPI_result_code_string(rc));
		return NULL;
	}
	if (resp.kind != ABM_OK)
		AdeAbmRaise(&resp, "POST /profile");
	jb = AdeAbmParseJson(&resp, "POST /profile");
	uuid = AdeJsonGetText(jb, "profile_uuid");
	if (uuid == NULL || uuid[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("ABM answered POST /profile without a profile_uuid")));

	args[0] = Int64GetDatum(token_id);
	args[1] = CStringGetTextDatum(key);
	args[2] = CStringGetTextDatum(uuid);
	sql = psprintf("INSERT INTO %s.ade_profile_definitions (token_id, profile_key, profile_uuid) "
				   "VALUES ($1, $2, $3) ON CONFLICT (token_id, profile_key) "
				   "DO UPDATE SET profile_uuid = excluded.profile_uuid, defined_at = now()%s",
				   AdeSchema(), AdeSqlAtLeast(0, 4) ? ", refusal = NULL" : "");
	rc = SPI_execute_with_args(sql, 3, argtypes, args, NULL, false, 0);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "SPI_execute_with_args failed: %s", SPI_result_code_string(rc));
	return uuid;
}

/*
 * PUT /profile/devices for cands[from..to) (one profile) and store the
 * answers.  Returns true when ABM throttled.
 */
static bool
send_batch(AdeAbmClient *client, int64 token_id, Candidate *cands, int from, int to,
		   int *assigned, int *failed)
{
	StringInfoData body;
	AdeAbmResponse resp;
	Jsonb	   *jb;
	char	   *ra;
	Datum	   *elems;
	ArrayType  *serials;
	Oid			argtypes[6] = {INT8OID, TEXTOID, TEXTARRAYOID, JSONBOID, INT4OID, INT4OID};
	Datum		args[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
	int			rc;
	int			i;
	bool		isnull;
	bool		throttled;

	initStringInfo(&body);
	appendStringInfoString(&body, "{\"profile_uuid\": ");
	escape_json(&body, cands[from].uuid);
	appendStringInfoString(&body, ", \"devices\": [");
	elems = palloc(sizeof(Datum) * (to - from));
	for (i = from; i < to; i++)
	{
		if (i > from)
			appendStringInfoString(&body, ", ");
		escape_json(&body, cands[i].serial);
		elems[i - from] = CStringGetTextDatum(cands[i].serial);
	}
	appendStringInfoString(&body, "]}");

	AdeAbmCall(client, "PUT", "/profile/devices", body.data, &resp);
	if (resp.kind != ABM_OK)
		AdeAbmRaise(&resp, "PUT /profile/devices");
	claim_or_fail(token_id, true, true);
	jb = AdeAbmParseJson(&resp, "PUT /profile/devices");
	if (!JB_ROOT_IS_OBJECT(jb))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("ABM answered PUT /profile/devices with JSON that is not an object")));

	serials = construct_array(elems, to - from, TEXTOID, -1, false, TYPALIGN_INT);
	args[0] = Int64GetDatum(token_id);
	args[1] = CStringGetTextDatum(cands[from].uuid);
	args[2] = PointerGetDatum(serials);
	args[3] = JsonbPGetDatum(jb);
	/* a whole number of seconds, at most a week; anything else: the default */
	ra = AdeJsonGetText(jb, "retry_after_seconds");
	if (ra != NULL)
	{
		char	   *end;
		long		v;

		errno = 0;
		v = strtol(ra, &end, 10);
		if (errno == 0 && end != ra && *end == '\0' && v >= 0 && v <= 7 * 86400)
			args[4] = Int32GetDatum((int32) v);
		else
			nulls[4] = 'n';
	}
	else if (resp.retry_after >= 0)
		args[4] = Int32GetDatum(resp.retry_after);
	else
		nulls[4] = 'n';
	args[5] = Int32GetDatum(ade_failed_retry_interval);

	rc = AdeExec("SELECT assigned, failed, throttled FROM %s.ade_store_answers($1, $2, $3, $4, $5, $6)", 6, argtypes, args, nulls, false, 0);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "ade_store_answers failed: %s", SPI_result_code_string(rc));
	*assigned += DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	*failed += DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	throttled = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
	SPI_freetuptable(SPI_tuptable);
	return throttled;
}

/* the steps of the assignment, each run in a subtransaction of its own */
typedef struct DefineStep
{
	AdeAbmClient *client;
	int64		token_id;
	const char *key;
	char	   *uuid;			/* out: NULL when ABM refused the profile */
	char	   *refusal;		/* out: ABM's words, when it refused it */
} DefineStep;


static void
define_step(void *arg)
{
	DefineStep *d = (DefineStep *) arg;

	claim_or_fail(d->token_id, false, false);
	d->uuid = define_profile(d->client, d->token_id, d->key, &d->refusal);
}

typedef struct BatchStep
{
	AdeAbmClient *client;
	int64		token_id;
	Candidate  *cands;
	int			from;
	int			to;
	MemoryContext cxt;			/* the batch's memory, reset after it */
	int			assigned;		/* out */
	int			failed;			/* out */
	bool		throttled;		/* out */
	int			retry_after;	/* a failed batch's 429 Retry-After, or -1 */
} BatchStep;

static void
batch_step(void *arg)
{
	BatchStep  *b = (BatchStep *) arg;
	MemoryContext old = MemoryContextSwitchTo(b->cxt);

	claim_or_fail(b->token_id, false, false);
	b->throttled = send_batch(b->client, b->token_id, b->cands, b->from, b->to,
							  &b->assigned, &b->failed);
	MemoryContextSwitchTo(old);
}

/*
 * A UUID ABM says it does not know: was_known when a device holds it (ABM
 * took it once, and the profile was deleted there since); else it is kept
 * as refused, as define_profile() keeps a profile ABM refuses.
 */
typedef struct UnknownStep
{
	int64		token_id;
	const char *key;
	const char *uuid;
	bool		was_known;		/* out */
} UnknownStep;

static void
unknown_step(void *arg)
{
	UnknownStep *u = (UnknownStep *) arg;
	Oid			argtypes[3] = {INT8OID, TEXTOID, TEXTOID};
	Datum		args[3];
	int			rc;
	bool		isnull;

	claim_or_fail(u->token_id, true, false);
	if (!AdeSqlAtLeast(0, 4))
	{
		u->was_known = true;	/* the SQL of 0.3 keeps no refusal */
		return;
	}
	args[0] = Int64GetDatum(u->token_id);
	args[1] = CStringGetTextDatum(u->uuid);
	rc = AdeExec("SELECT EXISTS (SELECT 1 FROM %s.host_dep_assignments d WHERE d.abm_token_id = $1 "
				   "AND d.profile_uuid = $2 AND d.assign_profile_response = 'SUCCESS')", 2, argtypes, args, NULL, false, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "SPI_execute_with_args failed: %s", SPI_result_code_string(rc));
	u->was_known = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_freetuptable(SPI_tuptable);
	if (u->was_known)
		return;
	args[1] = CStringGetTextDatum(u->key);
	args[2] = CStringGetTextDatum(psprintf("PUT /profile/devices: ABM does not know the profile UUID %s it gave (INVALID_PROFILE)",
										   u->uuid));
	rc = AdeExec("UPDATE %s.ade_profile_definitions SET profile_uuid = NULL, refusal = $3, defined_at = now() "
				   "WHERE token_id = $1 AND profile_key = $2", 3, argtypes, args, NULL, false, 0);
	if (rc != SPI_OK_UPDATE)
		elog(ERROR, "SPI_execute_with_args failed: %s", SPI_result_code_string(rc));
}

/*
 * The devices that hold a UUID ABM no longer knows, once the profile is
 * defined again: due, to get the new one (ABM lost what they hold).
 */
typedef struct OrphansStep
{
	int64		token_id;
	const char *uuid;			/* the UUID ABM lost */
} OrphansStep;

static void
orphans_step(void *arg)
{
	OrphansStep *o = (OrphansStep *) arg;
	Oid			argtypes[2] = {INT8OID, TEXTOID};
	Datum		args[2];
	int			rc;

	claim_or_fail(o->token_id, true, true);
	args[0] = Int64GetDatum(o->token_id);
	args[1] = CStringGetTextDatum(o->uuid);
	rc = AdeExec("UPDATE %s.host_dep_assignments SET needs_assign = true, retry_at = NULL, "
										"updated_at = now() WHERE abm_token_id = $1 AND profile_uuid = $2 "
										"AND deleted_at IS NULL AND NOT needs_assign",
							   2, argtypes, args, NULL, false, 0);
	if (rc != SPI_OK_UPDATE)
		elog(ERROR, "SPI_execute_with_args failed: %s", SPI_result_code_string(rc));
}

/* the first failure of the run is the one to report; the deadline is none */
static void
keep_error(AdeAssignResult *out, ErrorData *error, AdeAbmKind kind)
{
	if (kind == ABM_DEADLINE)
		out->out_of_time = true;
	else if (kind == ABM_PAUSED)
		out->note = pstrdup(error->message);	/* ABM's pause: not a failure */
	else if (out->error == NULL)
	{
		out->error = error;
		out->error_kind = kind;
	}
}

/* the devices of a batch that got no answer: to the back of the queue */
static void
unanswered_step(void *arg)
{
	BatchStep  *b = (BatchStep *) arg;
	Oid			argtypes[3] = {INT8OID, TEXTARRAYOID, INT4OID};
	Datum		args[3];
	char		nulls[3] = {' ', ' ', ' '};
	Datum	   *elems = palloc(sizeof(Datum) * (b->to - b->from));
	int			rc;
	int			i;

	claim_or_fail(b->token_id, true, true);
	for (i = b->from; i < b->to; i++)
		elems[i - b->from] = CStringGetTextDatum(b->cands[i].serial);
	args[0] = Int64GetDatum(b->token_id);
	args[1] = PointerGetDatum(construct_array(elems, b->to - b->from, TEXTOID, -1, false, TYPALIGN_INT));
	if (b->retry_after >= 0)
		args[2] = Int32GetDatum(b->retry_after);
	else
		nulls[2] = 'n';
	rc = AdeExec("SELECT %s.ade_batch_unanswered($1, $2, $3)", 3, argtypes, args, nulls, false, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute_with_args failed: %s", SPI_result_code_string(rc));
	SPI_freetuptable(SPI_tuptable);
}

/* whether the token assigns at all, and the devices that are due */
typedef struct CandidatesStep
{
	int64		token_id;
	bool		gone;			/* out: removed or taken since the run began */
	bool		off;			/* out: an ingest-only token */
	Candidate  *cands;			/* out */
	int			n;				/* out */
} CandidatesStep;

static void
candidates_step(void *arg)
{
	CandidatesStep *c = (CandidatesStep *) arg;
	Oid			argtypes[1] = {INT8OID};
	Datum		args[1] = {Int64GetDatum(c->token_id)};
	int			rc;
	int			i;
	bool		isnull;

	/*
	 * Read, not claimed: ade_assign_candidates() claims the token after
	 * hosts when it writes (the lock order of coexist.c), and answers
	 * nothing when another session holds it.  In one transaction, which
	 * holds it, the same.
	 */
	rc = AdeExec("SELECT assign_profiles FROM %s.abm_tokens WHERE id = $1", 1, argtypes, args, NULL, false, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute_with_args failed: %s", SPI_result_code_string(rc));
	/* the run's memory does not grow with its tokens: each result is freed */
	if (SPI_processed == 0)
	{
		SPI_freetuptable(SPI_tuptable);
		c->gone = true;
		return;
	}
	if (SPI_processed == 1 &&
		!DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)))
	{
		SPI_freetuptable(SPI_tuptable);
		c->off = true;
		return;
	}
	SPI_freetuptable(SPI_tuptable);

	rc = AdeExec("SELECT hardware_serial, profile_key, profile_uuid "
				   "FROM %s.ade_assign_candidates($1)", 1, argtypes, args, NULL, false, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute_with_args failed: %s", SPI_result_code_string(rc));
	c->n = (int) SPI_processed;
	c->cands = palloc(sizeof(Candidate) * Max(c->n, 1));
	for (i = 0; i < c->n; i++)
	{
		c->cands[i].serial = col_text(i, 1);
		c->cands[i].key = col_text(i, 2);
		c->cands[i].uuid = col_text(i, 3);
	}
	SPI_freetuptable(SPI_tuptable);
}

/* how many live devices wait for a profile that no scope defines */
typedef struct WaitingStep
{
	int64		token_id;
	int64		n;				/* out: -1 when no scope defines any */
} WaitingStep;

static void
waiting_step(void *arg)
{
	WaitingStep *w = (WaitingStep *) arg;
	Oid			argtypes[1] = {INT8OID};
	Datum		args[1] = {Int64GetDatum(w->token_id)};
	int			rc;
	bool		isnull;

	rc = AdeExec("SELECT %s.ade_unassignable($1)", 1, argtypes, args, NULL, false, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "SPI_execute_with_args failed: %s", SPI_result_code_string(rc));
	w->n = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_freetuptable(SPI_tuptable);
}

/*
 * Assign the due devices of a token, until deadline.  Fills *out: how many
 * were assigned and failed, a note for the run history (why something
 * waits), the first failure, and whether the deadline stopped it.  How many
 * devices wait for a profile no scope defines is counted only when
 * count_waiting (the run stored something), to keep a run with nothing to
 * do cheap.  SPI connected.  Every query is run read-write
 * (read_only = false) so that it sees the rows this run wrote; a read-only
 * one would see the snapshot of the call's start.
 */
void
AdeAssignProfiles(AdeAbmClient *client, int64 token_id, bool count_waiting,
				  TimestampTz deadline, AdeAssignResult *out)
{
	CandidatesStep step = {0};
	WaitingStep waiting = {0};
	Candidate  *cands;
	ErrorData  *error;
	AdeAbmKind	kind;
	int			n;
	int			i;
	MemoryContext batchcxt;
	List	   *redefined = NIL;	/* profile keys defined again this run */

	memset(out, 0, sizeof(*out));

	step.token_id = token_id;
	if (!AdeTrySubxact(candidates_step, &step, &error, &kind))
	{
		keep_error(out, error, kind);
		return;
	}
	if (step.gone)
	{
		out->note = "the token was removed or taken by another session during the run; nothing assigned";
		return;
	}
	if (step.off)
	{
		out->note = "assign_profiles is off for this token: devices are stored, not assigned";
		return;
	}
	cands = step.cands;
	n = step.n;

	/*
	 * Define each profile not yet defined for this token, once: every
	 * candidate of that key gets the UUID; a profile ABM refuses leaves its
	 * devices waiting and the others go on.
	 */
	for (i = 0; i < n; i++)
	{
		DefineStep	d = {client, token_id, cands[i].key, NULL, NULL};
		int			j;

		if (cands[i].uuid != NULL)
			continue;
		if (GetCurrentTimestamp() >= deadline)
		{
			out->out_of_time = true;
			break;
		}
		if (!AdeTrySubxact(define_step, &d, &error, &kind))
		{
			keep_error(out, error, kind);
			if (out->out_of_time)
				break;
			d.uuid = "";		/* failed: its devices are not sent */
		}
		else if (d.uuid == NULL)
		{
			/* refused (now or before): its devices wait, the others go on */
			out->note = psprintf("ABM refused an enrollment profile (%s): its devices wait; see ade_status.attention",
								 d.refusal);
			d.uuid = "";
		}
		for (j = i; j < n; j++)
			if (cands[j].uuid == NULL && strcmp(cands[j].key, cands[i].key) == 0)
				cands[j].uuid = d.uuid;
	}

	/* batches of at most 1000 serials with one profile, each in its own memory */
	batchcxt = AllocSetContextCreate(CurrentMemoryContext, "ade assign batch",
									 ALLOCSET_DEFAULT_SIZES);
	i = 0;
	while (i < n && !out->out_of_time)
	{
		BatchStep	b = {client, token_id, cands, i, i + 1, batchcxt, 0, 0, false, -1};
		bool		ok;

		while (b.to < n && b.to - i < ASSIGN_BATCH &&
			   strcmp(cands[b.to].key, cands[i].key) == 0)
			b.to++;
		if (cands[i].uuid == NULL || cands[i].uuid[0] == '\0')
		{
			/* not defined (refused, or no time was left to define it) */
			i = b.to;
			continue;
		}
		if (GetCurrentTimestamp() >= deadline)
		{
			out->out_of_time = true;
			break;
		}
		ok = AdeTrySubxact(batch_step, &b, &error, &kind);
		if (!ok && kind == ABM_UNKNOWN_PROFILE && !list_member(redefined, makeString(cands[i].key)))
		{
			/*
			 * ABM no longer knows the UUID stored for this profile (deleted
			 * there): define it again, once per run, and send the batch
			 * again with the new one; every run would fail the same way
			 * otherwise.  A UUID ABM never took (no device holds it) is
			 * kept as refused instead, and defined again only after
			 * ade.failed_retry_interval: no POST /profile every minute.
			 */
			DefineStep	d = {client, token_id, cands[i].key, NULL, NULL};
			UnknownStep u = {token_id, cands[i].key, cands[i].uuid, false};
			int			j;

			redefined = lappend(redefined, makeString(cands[i].key));
			MemoryContextReset(batchcxt);
			if (!AdeTrySubxact(unknown_step, &u, &error, &kind))
			{
				keep_error(out, error, kind);
				break;
			}
			if (!u.was_known)
			{
				out->note = psprintf("ABM does not know the enrollment profile it defined (%s): its devices wait; see ade_status.attention",
									 AdeAbmKindName(ABM_UNKNOWN_PROFILE));
				break;
			}
			ereport(LOG,
					(errmsg("ade: ABM no longer knows the profile UUID %s of token " INT64_FORMAT ": defining the profile again",
							cands[i].uuid, token_id)));
			if (AdeTrySubxact(define_step, &d, &error, &kind) && d.uuid != NULL)
			{
				OrphansStep o = {token_id, cands[i].uuid};

				/* a failure here leaves them for the next full fetch */
				(void) AdeTrySubxact(orphans_step, &o, &error, &kind);
				for (j = i; j < n; j++)
					if (strcmp(cands[j].key, cands[i].key) == 0)
						cands[j].uuid = d.uuid;
				continue;		/* the same batch, with the new UUID */
			}
			if (d.uuid == NULL && d.refusal != NULL)
				out->note = psprintf("ABM refused an enrollment profile (%s): its devices wait; see ade_status.attention",
									 d.refusal);
			else
				keep_error(out, error, kind);
			break;
		}
		if (!ok)
		{
			/*
			 * No answer: to the back of the queue, and no more this run; a
			 * 429 says when ABM takes more (ade_batch_unanswered()).
			 */
			b.retry_after = kind == ABM_THROTTLED || kind == ABM_PAUSED ? AdeAbmLastRetryAfter : -1;
			keep_error(out, error, kind);
			MemoryContextReset(batchcxt);
			if (AdeSqlAtLeast(0, 4) && !AdeTrySubxact(unanswered_step, &b, &error, &kind))
				keep_error(out, error, kind);
			break;
		}
		MemoryContextReset(batchcxt);
		out->assigned += b.assigned;
		out->failed += b.failed;
		if (b.throttled)
		{
			out->note = "ABM throttled the profile assignment; the rest is sent by a later run";
			break;
		}
		i = b.to;
	}
	MemoryContextDelete(batchcxt);

	if (out->note != NULL || out->error != NULL || out->out_of_time || !count_waiting)
		return;
	waiting.token_id = token_id;
	if (!AdeTrySubxact(waiting_step, &waiting, &error, &kind))
		keep_error(out, error, kind);
	else if (waiting.n < 0)
		out->note = "no enrollment profile is set: the devices wait (ade_status.pending); set ade.enroll_url or call ade_set_profile()";
	else if (waiting.n > 0)
		out->note = psprintf("no enrollment profile applies to " INT64_FORMAT " devices: set ade.enroll_url or call ade_set_profile()",
							 waiting.n);
}
