/*-------------------------------------------------------------------------
 *
 * assign.c
 *		Profile assignment (sync rule 10): define each (profile, token) at
 *		Apple once, send the devices that are due in batches of at most
 *		1000, and store every serial's answer.
 *
 * Owns: the order of the protocol calls (POST /profile, PUT
 * /profile/devices) and their bodies.  What is due, which profile applies,
 * and what an answer does to a row (cooldowns, FAILED for a serial missing
 * from the answer) are SQL: ade_assign_candidates(), ade_store_answers() and
 * ade_effective_profiles() in the install script.
 *
 * It runs after a token's pages, in the token's run, in a subtransaction of
 * its own (sync.c): an ABM failure here keeps the pages.  Calls to Apple are
 * not undone by a rollback; both are safe to send again (a profile defined
 * twice gets two UUIDs, the second one wins; an assignment sent twice is the
 * same assignment).  A THROTTLED answer ends the assignments of this run:
 * the rest stay due for the next one.
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
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"

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

/* POST /profile: define a profile for this token, store and return its UUID */
static char *
define_profile(AdeAbmClient *client, int64 token_id, const char *key)
{
	AdeAbmResponse resp;
	Jsonb	   *jb;
	char	   *uuid;
	char	   *profile;
	Oid			argtypes[3] = {INT8OID, TEXTOID, TEXTOID};
	Datum		args[3];
	char	   *sql;
	int			rc;

	/* the profile itself (a scope's or a team's), once per key */
	args[0] = Int64GetDatum(token_id);
	args[1] = CStringGetTextDatum(key);
	sql = psprintf("SELECT p.profile::text FROM (SELECT e.profile, e.profile_key FROM %s.ade_effective_profiles($1) e "
				   "UNION ALL SELECT x.profile, md5(x.profile::text) FROM %s.ade_profiles x "
				   "WHERE x.team_id IS NOT NULL) p WHERE p.profile_key = $2 LIMIT 1",
				   AdeSchema(), AdeSchema());
	rc = SPI_execute_with_args(sql, 2, argtypes, args, NULL, false, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "the profile to define vanished: %s", SPI_result_code_string(rc));
	profile = col_text(0, 1);
	SPI_freetuptable(SPI_tuptable);

	AdeAbmCall(client, "POST", "/profile", profile, &resp);
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
				   "DO UPDATE SET profile_uuid = excluded.profile_uuid, defined_at = now()",
				   AdeSchema());
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
	char	   *sql;
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
	ra = AdeJsonGetText(jb, "retry_after_seconds");
	if (ra != NULL)
		args[4] = Int32GetDatum(atoi(ra));
	else if (resp.retry_after >= 0)
		args[4] = Int32GetDatum(resp.retry_after);
	else
		nulls[4] = 'n';
	args[5] = Int32GetDatum(ade_failed_retry_interval);

	sql = psprintf("SELECT assigned, failed, throttled FROM %s.ade_store_answers($1, $2, $3, $4, $5, $6)",
				   AdeSchema());
	rc = SPI_execute_with_args(sql, 6, argtypes, args, nulls, false, 0);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "ade_store_answers failed: %s", SPI_result_code_string(rc));
	*assigned += DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	*failed += DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	throttled = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
	SPI_freetuptable(SPI_tuptable);
	return throttled;
}

/*
 * Assign the due devices of a token.  Adds to *assigned and *failed; returns
 * a note for the run history (why something waits), or NULL; how many
 * devices wait for a profile no scope defines is counted only when
 * count_waiting (the run stored something), to keep a run with nothing to
 * do cheap.  SPI connected.
 * Every query is run read-write (read_only = false) so that it sees the rows
 * this run wrote; a read-only one would see the snapshot of the call's start.
 */
char *
AdeAssignProfiles(AdeAbmClient *client, int64 token_id, bool count_waiting,
				  int *assigned, int *failed)
{
	Oid			argtypes[1] = {INT8OID};
	Datum		args[1] = {Int64GetDatum(token_id)};
	Candidate  *cands;
	char	   *sql;
	int			rc;
	int			n;
	int			i;
	int64		waiting;
	bool		isnull;
	MemoryContext batchcxt;

	/* an ingest-only token stores devices and assigns nothing */
	sql = psprintf("SELECT assign_profiles FROM %s.abm_tokens WHERE id = $1", AdeSchema());
	rc = SPI_execute_with_args(sql, 1, argtypes, args, NULL, false, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute_with_args failed: %s", SPI_result_code_string(rc));
	if (SPI_processed == 1 &&
		!DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)))
		return "assign_profiles is off for this token: devices are stored, not assigned";

	sql = psprintf("SELECT hardware_serial, profile_key, profile_uuid "
				   "FROM %s.ade_assign_candidates($1)", AdeSchema());
	rc = SPI_execute_with_args(sql, 1, argtypes, args, NULL, false, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute_with_args failed: %s", SPI_result_code_string(rc));
	n = (int) SPI_processed;
	cands = palloc(sizeof(Candidate) * Max(n, 1));
	for (i = 0; i < n; i++)
	{
		cands[i].serial = col_text(i, 1);
		cands[i].key = col_text(i, 2);
		cands[i].uuid = col_text(i, 3);
	}
	SPI_freetuptable(SPI_tuptable);

	/* define each profile not yet defined for this token (rows share a key) */
	for (i = 0; i < n; i++)
	{
		if (cands[i].uuid == NULL)
		{
			if (i > 0 && strcmp(cands[i - 1].key, cands[i].key) == 0)
				cands[i].uuid = cands[i - 1].uuid;
			else
				cands[i].uuid = define_profile(client, token_id, cands[i].key);
		}
	}

	/* batches of at most 1000 serials with one profile, each in its own memory */
	batchcxt = AllocSetContextCreate(CurrentMemoryContext, "ade assign batch",
									 ALLOCSET_DEFAULT_SIZES);
	i = 0;
	while (i < n)
	{
		int			j = i + 1;
		bool		throttled;
		MemoryContext old;

		while (j < n && j - i < ASSIGN_BATCH && strcmp(cands[j].key, cands[i].key) == 0)
			j++;
		old = MemoryContextSwitchTo(batchcxt);
		throttled = send_batch(client, token_id, cands, i, j, assigned, failed);
		MemoryContextSwitchTo(old);
		MemoryContextReset(batchcxt);
		if (throttled)
			return "ABM throttled the profile assignment; the rest is sent by a later run";
		i = j;
	}

	if (!count_waiting)
		return NULL;
	sql = psprintf("SELECT %s.ade_unassignable($1)", AdeSchema());
	rc = SPI_execute_with_args(sql, 1, argtypes, args, NULL, false, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "SPI_execute_with_args failed: %s", SPI_result_code_string(rc));
	waiting = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (waiting < 0)
		return "no enrollment profile is set: the devices wait (ade_status.pending); set ade.enroll_url or call ade_set_profile()";
	if (waiting > 0)
		return psprintf("no enrollment profile applies to " INT64_FORMAT " devices: set ade.enroll_url or call ade_set_profile()",
						waiting);
	return NULL;
}
