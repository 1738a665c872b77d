/*-------------------------------------------------------------------------
 *
 * subxact.c
 *		Running one step of a sync in a subtransaction of its own, the way
 *		ade contains failures.
 *
 * Owns the rule of which errors a step may contain and which must end the
 * whole run: an ordinary ERROR (ABM refused, HTTP failed, bad data) rolls
 * back the step only, and the caller records it and goes on; a cancel, a
 * statement timeout, a termination, a shutdown or running out of memory is
 * never swallowed: it is re-thrown, so that the run ends with its true
 * reason and SQLSTATE (pg_cron's cron.job_run_details shows it).
 *
 * The sync loop (sync.c) runs each token and each page in such a step; the
 * assignment (assign.c) runs each profile definition and each batch in one,
 * so that what Apple has answered is kept even when a later call fails.
 *
 * In a run that may commit (CALL ade_sync_job(): AdeCommitSteps), a step
 * that succeeds at the top level of the transaction is committed at once:
 * each page, each assignment batch holds its rows and the lock on hosts
 * (coexist.c) only while it is applied, never to the end of the run.
 *
 * Copyright (c) 2026, the ade authors
 *
 * IDENTIFICATION
 *	  src/subxact.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "ade.h"
#include "executor/spi.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/resowner.h"

/* set by a run that may commit (sync.c): commit each top-level step */
bool		AdeCommitSteps = false;

/*
 * search_path = pg_catalog, pg_temp for the rest of this transaction: what
 * a SET clause gives a function, for a run that commits (a procedure with
 * a SET clause cannot).  Each transaction of the run calls it.
 */
void
AdePinSearchPath(void)
{
	(void) set_config_option("search_path", "pg_catalog, pg_temp", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_LOCAL, true, 0, false);
}

/*
 * Commit, and start the next transaction of the run as the last one:
 * search_path pinned, and READ COMMITTED whatever the default: each step
 * takes its snapshot before it waits for ABM and for hosts (coexist.c), and
 * under REPEATABLE READ a page would fail to serialize on a host the
 * application changed meanwhile.
 */
void
AdeCommit(void)
{
	SPI_commit();
	(void) set_config_option("transaction_isolation", "read committed", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SET, true, 0, false);
	AdePinSearchPath();
}

/* is this error one that must end the whole run (never swallowed)? */
static bool
must_rethrow(ErrorData *edata)
{
	return edata->sqlerrcode == ERRCODE_QUERY_CANCELED ||
		edata->sqlerrcode == ERRCODE_ADMIN_SHUTDOWN ||
		edata->sqlerrcode == ERRCODE_CRASH_SHUTDOWN ||
		edata->sqlerrcode == ERRCODE_CANNOT_CONNECT_NOW ||
		edata->sqlerrcode == ERRCODE_OUT_OF_MEMORY ||
		edata->elevel >= FATAL;
}

/*
 * Run step(arg) in a subtransaction.  Returns true when it succeeded.  On an
 * ordinary ERROR the subtransaction is rolled back and false returned, with
 * the error (copied into the caller's memory context) in *error and the
 * class of the ABM error it was, if any, in *kind; cancels and their like
 * are re-thrown.  SPI stays connected across it, as PL/pgSQL does.
 */
bool
AdeTrySubxact(void (*step) (void *), void *arg, ErrorData **error, AdeAbmKind *kind)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;

	/* the class of an ABM error raised in here, not of an earlier one */
	AdeAbmLastErrorKind = ABM_OK;
	AdeAbmLastRetryAfter = -1;
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		step(arg);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		/* always undo our subtransaction first, as PL/pgSQL does */
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		if (must_rethrow(edata))
			ReThrowError(edata);
		*error = edata;
		*kind = AdeAbmLastErrorKind;
		return false;
	}
	PG_END_TRY();
	if (AdeCommitSteps && GetCurrentTransactionNestLevel() == 1)
	{
		/*
		 * Outside the PG_TRY: a failure to commit ends the run.  A new
		 * transaction follows, with a resource owner of its own.
		 */
		AdeCommit();
		MemoryContextSwitchTo(cxt);
	}
	return true;
}
