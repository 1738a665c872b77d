/*-------------------------------------------------------------------------
 *
 * coexist.c
 *		How a sync and the application that owns hosts share the tables.
 *
 * Owns the one rule both sides keep, and the functions that carry it out.
 * The rule: whatever ade writes that decides whether a host must stay (an
 * assignment made live or soft-deleted, a host made or re-pointed, a
 * profile answer stored) is written only while ade holds hosts in
 * EXCLUSIVE mode.  That mode conflicts with every lock an application
 * statement takes on hosts, reading ones aside: ROW EXCLUSIVE (DELETE,
 * UPDATE, INSERT), ROW SHARE (SELECT ... FOR UPDATE or FOR SHARE, and the
 * FOR KEY SHARE of a foreign key to hosts), and TRUNCATE's; plain SELECTs
 * go on.  So:
 *
 * - ade never waits for a row an application transaction holds, nor the
 *   other way round: neither side can hold some rows while waiting for
 *   others of the other side, and no deadlock between them can form,
 *   whatever order a bulk DELETE or UPDATE takes its rows in;
 * - while an application statement runs (and until its transaction ends),
 *   no write of ade is half done, and every one that was done is committed:
 *   the host triggers (hosts.sql) read and write the assignments as they
 *   are now (ade_live_hosts(), ade_run_latest(): the latest snapshot, also
 *   under REPEATABLE READ and SERIALIZABLE), and never keep a host that
 *   ABM deleted in an open run;
 * - an application statement waits at most for one of ade's writes: one
 *   page (CALL ade_sync_job() commits each page), or the rest of the run
 *   for SELECT ade_sync(), which is one transaction.
 *
 * How ade takes the lock (ade_lock_hosts()): first without waiting; when
 * application transactions hold hosts, it queues for at most QUEUE_MS,
 * which claims the first moment none does (between two transactions of an
 * application that never stops writing, a gap a poll would miss), and
 * steps out of the queue after it: an application statement that arrives
 * meanwhile waits at most that long behind ade.  Then it tries again,
 * until lock_timeout or the end of the token's share of the run.
 *
 * The host triggers themselves never take the lock: they run inside the
 * application's statement, which holds ROW EXCLUSIVE already.
 *
 * The order: hosts first, everything else after.  An application
 * statement reaches ade's rows too: deleting a team sets the default teams
 * of abm_tokens to null (a foreign key) and frees its hosts.  So neither
 * side may hold one of those rows while it waits for hosts:
 *
 * - a run claims its token (abm_tokens, FOR UPDATE SKIP LOCKED: never
 *   waiting) only after it holds hosts, in a step that writes what the
 *   application reaches (AdeClaimToken(id, true)); before a request to ABM
 *   it only looks whether the token is still there (AdeTokenLive()), so that
 *   it holds nothing while Apple answers.  A step that writes nothing the
 *   application reaches (a profile's UUID, a run's history) may claim the
 *   token alone: it then waits for no lock the application holds;
 * - a statement that deletes or updates teams takes hosts first (ROW
 *   EXCLUSIVE, the trigger ade_teams_lock_hosts in teams.sql), before any
 *   team row: without it, the team's row locked and the token's row wanted
 *   by the statement, and the token claimed and a host of that team being
 *   written by ade, would wait for each other.
 *
 * Copyright (c) 2026, the ade authors
 *
 * IDENTIFICATION
 *	  src/coexist.c
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
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(ade_lock_hosts);
PG_FUNCTION_INFO_V1(ade_live_hosts);
PG_FUNCTION_INFO_V1(ade_run_latest);

/* how long ade_lock_hosts() queues for hosts at a time, and rests between */
#define QUEUE_MS 50
#define REST_MS 5

/* the end of the token's share of a run (sync.c), 0 outside a run */
TimestampTz AdeLockDeadline = 0;

/*
 * Queue for the lock for at most ms: true when it was granted.  The wait
 * runs in a subtransaction of its own, under a lock_timeout of ms, so
 * that giving up leaves nothing behind; any other error is re-thrown.
 */
static bool
queue_for(Oid relid, int ms)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	volatile bool got = false;
	char		buf[32];

	snprintf(buf, sizeof(buf), "%d", ms);
	BeginInternalSubTransaction(NULL);
	PG_TRY();
	{
		int			nest = NewGUCNestLevel();

		(void) set_config_option("lock_timeout", buf, PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
		LockRelationOid(relid, ExclusiveLock);
		AtEOXact_GUC(true, nest);
		ReleaseCurrentSubTransaction();	/* the lock goes to the transaction */
		got = true;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		if (edata->sqlerrcode != ERRCODE_LOCK_NOT_AVAILABLE)
			ReThrowError(edata);
		FreeErrorData(edata);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
	return got;
}

/*
 * Who holds hosts in a mode that keeps ade out, for the error that says
 * so (attention shows it): "pid N (role R, application A)", a few of them.
 */
static char *
hosts_holders(Oid relid)
{
	Oid			argtypes[2] = {OIDOID, OIDOID};
	Datum		args[2] = {ObjectIdGetDatum(MyDatabaseId), ObjectIdGetDatum(relid)};
	char	   *who = "no session holds it any more";
	int			rc;

	if (SPI_connect() != SPI_OK_CONNECT)
		return who;
	rc = SPI_execute_with_args("SELECT pg_catalog.string_agg(CASE WHEN x.pid IS NULL "
							   "THEN pg_catalog.format('prepared transaction %L (role %s): COMMIT PREPARED or ROLLBACK PREPARED it', "
							   "p.gid, coalesce(p.owner::text, '?')) "
							   "ELSE pg_catalog.format('pid %s (role %s, application %L)', x.pid, "
							   "coalesce(a.usename::text, '?'), coalesce(a.application_name, '')) END, ', ') "
							   "FROM (SELECT DISTINCT l.pid, l.virtualtransaction FROM pg_catalog.pg_locks l "
							   "WHERE l.locktype OPERATOR(pg_catalog.=) 'relation' AND l.database OPERATOR(pg_catalog.=) $1 "
							   "AND l.relation OPERATOR(pg_catalog.=) $2 AND l.granted "
							   "AND l.mode OPERATOR(pg_catalog.<>) 'AccessShareLock' "
							   "AND l.pid IS DISTINCT FROM pg_catalog.pg_backend_pid() LIMIT 3) x "
							   "LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid OPERATOR(pg_catalog.=) x.pid "
							   "LEFT JOIN pg_catalog.pg_prepared_xacts p ON x.pid IS NULL "
							   "AND x.virtualtransaction OPERATOR(pg_catalog.=) ('-1/' OPERATOR(pg_catalog.||) p.transaction::text)",
							   2, argtypes, args, NULL, true, 1);
	if (rc == SPI_OK_SELECT && SPI_processed == 1)
	{
		char	   *v = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

		if (v != NULL)
			who = MemoryContextStrdup(CurTransactionContext, v);
	}
	SPI_finish();
	return who;
}

/*
 * ade_lock_hosts() returns void: takes hosts in EXCLUSIVE mode for the
 * rest of the transaction (see the header for how).  Gives up after
 * lock_timeout, or at the end of the token's share of the run, with
 * lock_not_available, which the run records as the step's error.  A cancel
 * or statement_timeout stops the wait at once.
 */
Datum
ade_lock_hosts(PG_FUNCTION_ARGS)
{
	AdeLockHosts();
	PG_RETURN_VOID();
}

/* ade_lock_hosts(), for the C of a run (sync.c, assign.c) */
void
AdeLockHosts(void)
{
	Oid			relid = get_relname_relid("hosts", AdeSchemaOid());
	TimestampTz until = 0;

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("table hosts of extension ade does not exist")));
	if (LockTimeout > 0)
		until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), LockTimeout);
	if (AdeLockDeadline != 0 && (until == 0 || AdeLockDeadline < until))
		until = AdeLockDeadline;
	while (!ConditionalLockRelationOid(relid, ExclusiveLock))
	{
		long		left = QUEUE_MS;

		if (until != 0)
		{
			left = (long) ((until - GetCurrentTimestamp()) / 1000);
			if (left <= 0)
				ereport(ERROR,
						(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
						 errmsg("could not write hosts within lock_timeout or the run's time: other sessions kept it (%s)",
								hosts_holders(relid)),
						 errdetail("ade writes hosts only while no application transaction holds it, and never makes an application statement wait long behind it."),
						 errhint("An application transaction that holds hosts (a write, or SELECT ... FOR UPDATE) and stays open holds ade off; the next run goes on.")));
			left = Min(left, QUEUE_MS);
		}
		if (queue_for(relid, (int) left))
			break;
		/* let what queued behind us through */
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 REST_MS, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/*
 * ade_live_hosts(ids bigint[]) returns table(host_id bigint, hardware_serial
 * text, model text, platform text, token_id bigint): the hosts among ids
 * whose assignment is live now, with what the last ABM record says of the
 * device.  "Now" is the latest snapshot, not the transaction's: under
 * REPEATABLE READ or SERIALIZABLE a delete trigger must not keep a host
 * for a device that a page committed since soft-deleted (nor miss one it
 * made live).  The lock rule (above) makes that state stable while the
 * calling statement holds hosts.
 */
Datum
ade_live_hosts(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Oid			argtypes[1] = {INT8ARRAYOID};
	Datum		args[1];
	SPIPlanPtr	plan;
	uint64		i;
	int			rc;

	InitMaterializedSRF(fcinfo, 0);
	if (PG_ARGISNULL(0))
		return (Datum) 0;
	args[0] = PG_GETARG_DATUM(0);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	plan = SPI_prepare(psprintf("SELECT d.host_id, d.hardware_serial, d.device->>'model', "
								"%s.ade_platform(d.device->>'device_family'), d.abm_token_id "
								"FROM %s.host_dep_assignments d "
								"WHERE d.host_id = ANY ($1) AND d.deleted_at IS NULL",
								AdeSchema(), AdeSchema()),
					   1, argtypes);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	rc = SPI_execute_snapshot(plan, args, NULL, GetLatestSnapshot(), InvalidSnapshot,
							  true, false, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "reading the live assignments failed: %s", SPI_result_code_string(rc));
	for (i = 0; i < SPI_processed; i++)
	{
		Datum		values[5];
		bool		nulls[5];
		int			c;

		for (c = 0; c < 5; c++)
			values[c] = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, c + 1, &nulls[c]);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	SPI_finish();
	return (Datum) 0;
}

/* the plans of ade_run_latest(), by their text (a handful of statements) */
#define LATEST_PLANS 8
static struct
{
	char	   *sql;
	SPIPlanPtr	plan;
}			latest_plans[LATEST_PLANS];

/*
 * Run plan on the latest snapshot, in a subtransaction.  A row that a
 * session holding no lock on hosts changes and commits between the
 * snapshot and the write (a run's history on its token row, ade_sync_runs)
 * fails to serialize under REPEATABLE READ or SERIALIZABLE: the statement
 * runs again on a newer snapshot, which sees that change; a few times at
 * most.  Any other error is re-thrown at once.
 */
#define LATEST_TRIES 5

static uint64
execute_latest(SPIPlanPtr plan, Datum *args, char *nulls)
{
	volatile int tries;

	for (tries = 1;; tries++)
	{
		MemoryContext cxt = CurrentMemoryContext;
		ResourceOwner owner = CurrentResourceOwner;
		volatile uint64 n = 0;
		volatile bool done = false;

		BeginInternalSubTransaction(NULL);
		PG_TRY();
		{
			int			rc = SPI_execute_snapshot(plan, args, nulls, GetLatestSnapshot(),
												  InvalidSnapshot, false, true, 0);

			if (rc < 0)
				elog(ERROR, "a trigger's statement failed: %s", SPI_result_code_string(rc));
			n = SPI_processed;
			ReleaseCurrentSubTransaction();
			done = true;
		}
		PG_CATCH();
		{
			ErrorData  *edata;

			MemoryContextSwitchTo(cxt);
			edata = CopyErrorData();
			FlushErrorState();
			RollbackAndReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(cxt);
			CurrentResourceOwner = owner;
			if (edata->sqlerrcode != ERRCODE_T_R_SERIALIZATION_FAILURE || tries >= LATEST_TRIES)
				ReThrowError(edata);
			FreeErrorData(edata);
		}
		PG_END_TRY();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		if (done)
			return n;
		CHECK_FOR_INTERRUPTS();
	}
}

/*
 * ade_run_latest(sql text, args jsonb) returns bigint: runs one of the
 * triggers' statements on the assignments or the tokens' default teams (a
 * constant text of hosts.sql or teams.sql, its values in $1) as of the
 * latest snapshot (execute_latest()), and returns how
 * many rows it processed.  Under REPEATABLE READ or SERIALIZABLE, the
 * application's snapshot may be older than a page or an assignment batch
 * that committed since: a statement run on it would fail to serialize on a
 * row ade changed, or decide on a state that is gone.  The lock rule
 * (above) makes the latest state stable while the calling statement holds
 * hosts.  Only the trigger functions (owned by the extension's owner) call
 * it; EXECUTE is revoked from PUBLIC.
 */
Datum
ade_run_latest(PG_FUNCTION_ARGS)
{
	char	   *sql = text_to_cstring(PG_GETARG_TEXT_PP(0));
	Oid			argtypes[1] = {JSONBOID};
	Datum		args[1];
	char		nulls[1] = {' '};
	SPIPlanPtr	plan = NULL;
	int			i;
	uint64		n;

	if (PG_ARGISNULL(1))
		nulls[0] = 'n';
	else
		args[0] = PG_GETARG_DATUM(1);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	for (i = 0; i < LATEST_PLANS && latest_plans[i].sql != NULL; i++)
		if (strcmp(latest_plans[i].sql, sql) == 0)
		{
			plan = latest_plans[i].plan;
			break;
		}
	if (plan == NULL)
	{
		plan = SPI_prepare(sql, 1, argtypes);
		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		if (i < LATEST_PLANS && SPI_keepplan(plan) == 0)
		{
			latest_plans[i].sql = MemoryContextStrdup(TopMemoryContext, sql);
			latest_plans[i].plan = plan;
		}
	}
	n = execute_latest(plan, args, nulls);
	SPI_finish();
	PG_RETURN_INT64((int64) n);
}
