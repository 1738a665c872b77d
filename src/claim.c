/*-------------------------------------------------------------------------
 *
 * claim.c
 *		Who may write for a run: the run lock and a token's claim.
 *
 * Owns the two locks a run takes besides hosts (coexist.c):
 *
 * - the run lock, one run at a time per database: an advisory lock whose
 *   fourth key field no SQL function makes, so that only a run can hold it
 *   (0.4 took (1094993969, 0), which any role that can connect could hold
 *   and so stop every sync); of the transaction for SELECT ade_sync(), of
 *   the session for CALL ade_sync_job(), whose steps commit;
 * - a token's claim: its abm_tokens row FOR UPDATE SKIP LOCKED, never
 *   waited for, taken after hosts by a step that writes what the
 *   application's statements reach (the lock order of coexist.c).
 *
 * Copyright (c) 2026, the ade authors
 *
 * IDENTIFICATION
 *	  src/claim.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "ade.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "storage/lock.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"

/* the advisory lock of a run: its first key, "ADE1" */
#define ADE_RUN_KEY1 1094993969

static void
spi_check(int rc, int expected, const char *what)
{
	if (rc != expected)
		elog(ERROR, "%s failed: %s", what, SPI_result_code_string(rc));
}

/*
 * The run lock (see the header): an advisory lock of the database whose
 * fourth key field is ADE_RUN_FIELD4, which no SQL function can take
 * (pg_advisory_lock() and its kind use 1 and 2): only a run holds it, so
 * no role, a database owner or the table owner included, can hold every
 * run off (0.4 took (1094993969, 0), which any role could).  Of the
 * transaction for SELECT ade_sync(), of the session for the procedure (it
 * outlives the steps' commits; released however the run ends).
 */
#define ADE_RUN_FIELD4 7

static void
run_lock_tag(LOCKTAG *tag)
{
	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, (uint32) ADE_RUN_KEY1, 0, ADE_RUN_FIELD4);
}

void
AdeRunUnlock(void)
{
	LOCKTAG		tag;

	run_lock_tag(&tag);
	LockRelease(&tag, ExclusiveLock, true);
}

/*
 * Who holds the run lock: "a run or a device call (pid N)", or, when a prepared transaction
 * that ran SELECT ade_sync() holds it, NULL with *prepared set.
 */
char *
AdeRunLockHolder(bool *prepared)
{
	Oid			argtypes[2] = {OIDOID, OIDOID};
	Datum		args[2] = {ObjectIdGetDatum(MyDatabaseId), ObjectIdGetDatum((Oid) ADE_RUN_KEY1)};
	char	   *who = NULL;
	int			rc;

	*prepared = false;
	rc = SPI_execute_with_args("SELECT l.pid FROM pg_catalog.pg_locks l "
							   "WHERE l.locktype OPERATOR(pg_catalog.=) 'advisory' AND l.database OPERATOR(pg_catalog.=) $1 "
							   "AND l.classid OPERATOR(pg_catalog.=) $2 AND l.objid OPERATOR(pg_catalog.=) 0 "
							   "AND l.objsubid OPERATOR(pg_catalog.=) " CppAsString2(ADE_RUN_FIELD4) " AND l.granted LIMIT 1",
							   2, argtypes, args, NULL, true, 1);
	spi_check(rc, SPI_OK_SELECT, "reading pg_locks");
	if (SPI_processed == 1)
	{
		bool		isnull;
		Datum		pid = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

		if (isnull)
			*prepared = true;
		else
			who = psprintf("a run or a device call (pid %d)", DatumGetInt32(pid));
	}
	SPI_freetuptable(SPI_tuptable);
	return who;
}

/* Take the run lock without waiting: true when this run is the one. */
bool
AdeRunLock(bool session)
{
	LOCKTAG		tag;

	run_lock_tag(&tag);
	return LockAcquire(&tag, ExclusiveLock, session, true) != LOCKACQUIRE_NOT_AVAIL;
}

/*
 * Take the run lock for the rest of the transaction, waiting for a run
 * that holds it to end (a scheduled run lasts ade.max_sync_seconds; a
 * little more is allowed), polled so that cancels and statement_timeout
 * act at once.  For the device calls that change what a run decides
 * (devices.c): no run is under way while they ask ABM and store its
 * answers, and none starts (it reports its tokens busy).
 */
void
AdeRunLockWait(const char *what)
{
	TimestampTz until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													((int64) ade_max_sync_seconds + 15) * 1000);
	Oid			hosts = get_relname_relid("hosts", AdeSchemaOid());
	bool		must_not_wait = false;
	LOCKTAG		tag;
	LOCKMODE	mode;

	/*
	 * A transaction that holds hosts, or wrote or locked any row (a token
	 * asked to reconcile, a host written), must not wait: the holder may be
	 * waiting for that (a run's page, its end on the token's row, another
	 * device call's answers), and a wait polled here is one PostgreSQL's
	 * deadlock detector never sees.
	 */
	if (OidIsValid(hosts))
	{
		SET_LOCKTAG_RELATION(tag, MyDatabaseId, hosts);
		for (mode = AccessShareLock + 1; mode <= MaxLockMode; mode++)
			must_not_wait = must_not_wait || LockHeldByMe(&tag, mode);
	}
	must_not_wait = must_not_wait || TransactionIdIsValid(GetTopTransactionIdIfAny());
	while (!AdeRunLock(false))
	{
		bool		prepared;
		char	   *holder;

		if (must_not_wait || GetCurrentTimestamp() >= until)
		{
			holder = AdeRunLockHolder(&prepared);
			ereport(ERROR,
					(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
					 must_not_wait ?
					 errmsg("%s cannot wait for the sync run or device call under way in a transaction that wrote or locked rows", what) :
					 errmsg("%s waited for the sync run or device call under way, and it did not end", what),
					 errdetail("%s holds the run lock.",
							   prepared ? "a prepared transaction that ran SELECT ade_sync()" :
							   holder ? holder : "a run"),
					 must_not_wait ?
					 errhint("Call it in a transaction of its own (or before anything that writes).") :
					 errhint("Try again once it has ended (ade_last_runs() shows the runs).")));
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 50,
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/*
 * Claim the token for the rest of the transaction (FOR UPDATE SKIP
 * LOCKED): false when it is gone or another session holds it.  With hosts,
 * hosts is taken first (AdeLockHosts()), for a step that writes what the
 * application's statements reach (the lock order of coexist.c).  A run that
 * commits its steps (CALL ade_sync_job()) holds the token only within a
 * step: each step that writes for it claims it first, so that a removal
 * committed between two steps is never undone.  In one transaction, which
 * holds both from the start, a no-op.
 */
bool
AdeClaimToken(int64 token_id, bool hosts)
{
	Oid			argtypes[1] = {INT8OID};
	Datum		args[1] = {Int64GetDatum(token_id)};
	int			rc;

	if (hosts)
		AdeLockHosts();
	rc = AdeExec("SELECT 1 FROM %s.abm_tokens WHERE id = $1 FOR UPDATE SKIP LOCKED",
							   1, argtypes, args, NULL, false, 1);
	spi_check(rc, SPI_OK_SELECT, "claiming the token");
	rc = (int) SPI_processed;
	SPI_freetuptable(SPI_tuptable);
	return rc == 1;
}

/*
 * Whether the token is still there, locking nothing: before a request to
 * ABM on its behalf, in a step that claims it (AdeClaimToken()) once the
 * answer is in, so that nothing is held while Apple answers.
 */
bool
AdeTokenLive(int64 token_id)
{
	Oid			argtypes[1] = {INT8OID};
	Datum		args[1] = {Int64GetDatum(token_id)};
	int			rc;

	rc = AdeExec("SELECT 1 FROM %s.abm_tokens WHERE id = $1",
							   1, argtypes, args, NULL, false, 1);
	spi_check(rc, SPI_OK_SELECT, "reading the token");
	rc = (int) SPI_processed;
	SPI_freetuptable(SPI_tuptable);
	return rc == 1;
}
