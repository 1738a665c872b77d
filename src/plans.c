/*-------------------------------------------------------------------------
 *
 * plans.c
 *		Saved plans of the queries the C code runs again and again.
 *
 * Owns: one saved SPI plan per query text of the C code that a run makes
 * for every token (claiming it, reading its state, recording its run), so
 * that a run of many tokens parses and plans each once per backend, not
 * once per token.  A query text is a format whose only conversions are
 * "%s" for ade's schema (quoted); the plan is made again when the schema
 * is another.  PostgreSQL's plan cache re-plans a saved plan when a table
 * it reads changes or search_path is another than when it was made, so a
 * saved plan never resolves a name differently from a fresh one.
 *
 * Copyright (c) 2026, the ade authors
 *
 * IDENTIFICATION
 *	  src/plans.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "ade.h"
#include "executor/spi.h"
#include "utils/memutils.h"

#define MAX_PLANS 64

typedef struct SavedPlan
{
	const char *fmt;			/* the caller's query format (a literal) */
	char	   *schema;
	SPIPlanPtr	plan;
} SavedPlan;

static SavedPlan plans[MAX_PLANS];
static int	nplans = 0;

/*
 * Run query fmt (its "%s" are ade's schema) with these arguments through
 * its saved plan; as SPI_execute_with_args() does, the SPI_OK_* code.
 * The caller's memory context is current again afterwards: SPI leaves its
 * own procedure context current, which lives until SPI_finish(), and what a
 * run's page allocated after a query would pile up there page after page.
 */
int
AdeExec(const char *fmt, int nargs, Oid *types, Datum *args, const char *nulls,
		bool read_only, long count)
{
	const char *schema = AdeSchema();
	SavedPlan  *p = NULL;
	int			i;
	int			rc;
	MemoryContext caller = CurrentMemoryContext;

	for (i = 0; i < nplans; i++)
		if (plans[i].fmt == fmt)
		{
			p = &plans[i];
			break;
		}
	if (p == NULL && nplans < MAX_PLANS)
	{
		p = &plans[nplans++];
		p->fmt = fmt;
	}
	if (p == NULL)
	{
		rc = SPI_execute_with_args(psprintf(fmt, schema, schema, schema, schema),
								   nargs, types, args, nulls, read_only, count);
		MemoryContextSwitchTo(caller);
		return rc;
	}
	if (p->plan == NULL || strcmp(p->schema, schema) != 0)
	{
		SPIPlanPtr	plan;

		if (p->plan)
			SPI_freeplan(p->plan);
		p->plan = NULL;
		plan = SPI_prepare(psprintf(fmt, schema, schema, schema, schema), nargs, types);
		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		if (SPI_keepplan(plan) != 0)
			elog(ERROR, "SPI_keepplan failed");
		if (p->schema)
			pfree(p->schema);
		p->schema = MemoryContextStrdup(TopMemoryContext, schema);
		p->plan = plan;
	}
	rc = SPI_execute_plan(p->plan, args, nulls, read_only, count);
	MemoryContextSwitchTo(caller);
	return rc;
}
