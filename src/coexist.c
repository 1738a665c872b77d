/*-------------------------------------------------------------------------
 *
 * coexist.c
 *		How a sync and the application that owns hosts share the tables.
 *
 * Owns the one rule both sides keep, and the two functions that carry it
 * out.  The rule: whatever ade writes that decides whether a host must stay
 * (an assignment made live or soft-deleted, a host made or re-pointed, a
 * profile answer stored) is written only while ade holds hosts in SHARE ROW
 * EXCLUSIVE mode.  That mode conflicts with the ROW EXCLUSIVE lock every
 * application statement on hosts takes (DELETE, UPDATE, INSERT; TRUNCATE
 * takes more), and with itself, and with nothing a reader takes.  So:
 *
 * - an application statement on hosts and a write of ade never interleave
 *   row by row: neither can hold some rows while waiting for others of the
 *   other side, and no deadlock between them can form, whatever order a
 *   bulk DELETE or UPDATE takes its rows in;
 * - while an application statement runs (and until its transaction ends),
 *   no write of ade is half done, and every one that was done is committed:
 *   the host triggers (hosts.sql) read the assignments as they are now
 *   (ade_live_hosts(), the latest snapshot, also under REPEATABLE READ and
 *   SERIALIZABLE), and never keep a host that ABM deleted in an open run;
 * - ade never queues for the lock (ade_lock_hosts() polls for it): a
 *   waiting request would make every later application statement on hosts
 *   wait behind it.  An application statement waits at most for one of
 *   ade's writes: one page (CALL ade_sync_job() commits each page), or the
 *   rest of the run for SELECT ade_sync(), which is one transaction.
 *
 * The host triggers themselves never take the lock: they run inside the
 * application's statement, which holds ROW EXCLUSIVE already.
 *
 * Copyright (c) 2026, the ade authors
 *
 * IDENTIFICATION
 *	  src/coexist.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

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
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(ade_lock_hosts);
PG_FUNCTION_INFO_V1(ade_live_hosts);

/* how long ade_lock_hosts() sleeps between two tries */
#define LOCK_POLL_MS 5

/* the end of the token's share of a run (sync.c), 0 outside a run */
TimestampTz AdeLockDeadline = 0;

/*
 * ade_lock_hosts() returns void: takes hosts in SHARE ROW EXCLUSIVE mode
 * for the rest of the transaction, without ever queueing for it.  Gives up
 * after lock_timeout, or at the end of the token's share of the run, with
 * lock_not_available, which the run records as the step's error.  A cancel
 * or statement_timeout stops the wait at once.
 */
Datum
ade_lock_hosts(PG_FUNCTION_ARGS)
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
	while (!ConditionalLockRelationOid(relid, ShareRowExclusiveLock))
	{
		if (until != 0 && GetCurrentTimestamp() >= until)
			ereport(ERROR,
					(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
					 errmsg("could not write hosts within lock_timeout: application transactions kept writing it"),
					 errdetail("ade waits for no application statement on hosts to be running before it writes, and never queues in front of one."),
					 errhint("An application transaction that wrote hosts and stays open holds it off; the next run goes on.")));
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 LOCK_POLL_MS, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	PG_RETURN_VOID();
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
