/*-------------------------------------------------------------------------
 *
 * uninstall.c
 *		What a DROP that takes ade with it may lose, and what it leaves.
 *
 * Owns ade_drop_guard(), the event trigger (a member of the extension) that
 * runs at the start of DROP EXTENSION, DROP SCHEMA and DROP OWNED.  When the
 * command would drop ade (DROP EXTENSION ade; DROP EXTENSION or DROP SCHEMA
 * ... CASCADE of something ade depends on, its schema or plpgsql; DROP
 * OWNED BY the role that owns ade or its schema) while ade holds ABM
 * tokens, the MDM server's key pair or hosts, it refuses, with an error that
 * says what would be lost and how to keep it (ade_export_key(),
 * ade_export_tokens(): README, Uninstalling), unless ade.allow_drop is on
 * (a superuser's decision, for scripted teardowns).  When the drop goes
 * ahead it says what goes (a NOTICE) and removes the pg_cron job ade_sync
 * in the same transaction, so nothing of ade's is left behind: no job that
 * would run in a database without ade, and no object outside the extension
 * that a later dump would carry (0.4's ade_cron_cleanup() was one).
 *
 * An event trigger that belongs to the extension fires at ddl_command_start
 * of the command that drops it (it is still there), not at sql_drop (it is
 * gone by then): hence ddl_command_start, and the parse tree to tell what
 * the command drops.  The function is SECURITY DEFINER: a database owner
 * who drops the schema ade lives in runs it, and it must read ade's tables
 * to count; it reads counts, nothing else, and writes only the unschedule.
 *
 * Copyright (c) 2026, the ade authors
 *
 * IDENTIFICATION
 *	  src/uninstall.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "ade.h"
#include "catalog/namespace.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_type.h"
#include "commands/event_trigger.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "nodes/parsenodes.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

PG_FUNCTION_INFO_V1(ade_drop_guard);


/*
 * Would dropping this extension or schema with CASCADE reach ade: ade
 * itself, or one of its members (dropping a member drops the extension)?
 * The objects that depend on it, followed through pg_depend: DROP
 * EXTENSION plpgsql CASCADE reaches ade's functions through the language.
 * SPI connected.
 */
static bool
cascade_reaches_ade(Oid classid, Oid objid, Oid ade)
{
	Oid			argtypes[3] = {OIDOID, OIDOID, OIDOID};
	Datum		args[3] = {ObjectIdGetDatum(classid), ObjectIdGetDatum(objid), ObjectIdGetDatum(ade)};
	bool		isnull;
	int			rc;

	rc = SPI_execute_with_args(
		"WITH RECURSIVE dep(classid, objid) AS ("
		"  SELECT $1, $2"
		"  UNION"
		"  SELECT d.classid, d.objid FROM pg_catalog.pg_depend d JOIN dep"
		"      ON d.refclassid OPERATOR(pg_catalog.=) dep.classid AND d.refobjid OPERATOR(pg_catalog.=) dep.objid"
		"   WHERE d.deptype OPERATOR(pg_catalog.=) ANY ('{n,a,e}'::pg_catalog.\"char\"[]))"
		"SELECT EXISTS (SELECT FROM dep"
		"                WHERE dep.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_extension'::pg_catalog.regclass"
		"                  AND dep.objid OPERATOR(pg_catalog.=) $3)"
		"    OR EXISTS (SELECT FROM dep JOIN pg_catalog.pg_depend e"
		"                 ON e.classid OPERATOR(pg_catalog.=) dep.classid AND e.objid OPERATOR(pg_catalog.=) dep.objid"
		"                WHERE e.deptype OPERATOR(pg_catalog.=) 'e'"
		"                  AND e.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_extension'::pg_catalog.regclass"
		"                  AND e.refobjid OPERATOR(pg_catalog.=) $3)",
		3, argtypes, args, NULL, true, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "SPI_execute_with_args failed: %s", SPI_result_code_string(rc));
	return DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * Does this DROP statement drop the extension ade?  DROP EXTENSION ade;
 * DROP EXTENSION or DROP SCHEMA ... CASCADE of anything ade depends on
 * (its schema, plpgsql); DROP OWNED BY the role that owns ade or its
 * schema.  SPI connected.
 */
static bool
drops_ade(Node *tree)
{
	Oid			ext = get_extension_oid("ade", true);
	ListCell   *lc;

	if (!OidIsValid(ext))
		return false;
	if (IsA(tree, DropStmt))
	{
		DropStmt   *d = (DropStmt *) tree;

		if (d->removeType == OBJECT_EXTENSION)
		{
			foreach(lc, d->objects)
			{
				Oid			target = get_extension_oid(strVal(lfirst(lc)), true);

				if (target == ext ||
					(OidIsValid(target) && d->behavior == DROP_CASCADE &&
					 cascade_reaches_ade(ExtensionRelationId, target, ext)))
					return true;
			}
		}
		else if (d->removeType == OBJECT_SCHEMA && d->behavior == DROP_CASCADE)
		{
			foreach(lc, d->objects)
			{
				Oid			target = get_namespace_oid(strVal(lfirst(lc)), true);

				if (OidIsValid(target) && cascade_reaches_ade(NamespaceRelationId, target, ext))
					return true;
			}
		}
	}
	else if (IsA(tree, DropOwnedStmt))
	{
		DropOwnedStmt *d = (DropOwnedStmt *) tree;
		Oid			owner = AdeExtensionOwner();
		HeapTuple	tup = SearchSysCache1(NAMESPACEOID, ObjectIdGetDatum(AdeSchemaOid()));
		Oid			schema_owner = InvalidOid;

		if (HeapTupleIsValid(tup))
		{
			schema_owner = ((Form_pg_namespace) GETSTRUCT(tup))->nspowner;
			ReleaseSysCache(tup);
		}
		foreach(lc, d->roles)
		{
			Oid			role = get_rolespec_oid(lfirst(lc), true);

			/* the schema's owner takes ade along only with CASCADE */
			if (role == owner || (role == schema_owner && d->behavior == DROP_CASCADE))
				return true;
		}
	}
	return false;
}

static int64
count_of(const char *sql)
{
	bool		isnull;
	int			rc = SPI_execute(sql, true, 1);

	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "SPI_execute failed: %s", SPI_result_code_string(rc));
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/* the pg_cron job ade_sync of this database, unscheduled; how many went */
static int64
unschedule_job(void)
{
	if (!OidIsValid(get_extension_oid("pg_cron", true)))
		return 0;
	return count_of("SELECT pg_catalog.count(cron.unschedule(j.jobid)) FROM cron.job j "
					"WHERE j.jobname OPERATOR(pg_catalog.=) 'ade_sync' "
					"AND j.database OPERATOR(pg_catalog.=) pg_catalog.current_database()");
}

/* "2 ABM tokens, the MDM server's key pair and 3 hosts": what is there */
static char *
what_goes(int64 tokens, int64 keypair, int64 hosts, int64 jobs)
{
	const char *item[4];
	int			n = 0;
	StringInfoData buf;
	int			i;

	if (tokens > 0)
		item[n++] = psprintf(INT64_FORMAT " ABM token%s", tokens, tokens == 1 ? "" : "s");
	if (keypair > 0)
		item[n++] = "the MDM server's key pair";
	if (hosts > 0)
		item[n++] = psprintf(INT64_FORMAT " host%s and %s ADE assignment%s", hosts, hosts == 1 ? "" : "s",
							 hosts == 1 ? "its" : "their", hosts == 1 ? "" : "s");
	if (jobs > 0)
		item[n++] = "the pg_cron job ade_sync";
	initStringInfo(&buf);
	for (i = 0; i < n; i++)
		appendStringInfo(&buf, "%s%s", i == 0 ? "" : (i == n - 1 ? " and " : ", "), item[i]);
	return buf.data;
}

/*
 * ade_drop_guard() returns event_trigger: refuses a drop that would lose
 * ade's tokens, key pair or hosts unknowingly; otherwise unschedules the
 * job.
 */
Datum
ade_drop_guard(PG_FUNCTION_ARGS)
{
	EventTriggerData *trig;
	const char *s;
	int64		tokens;
	int64		keypair;
	int64		hosts;
	int64		jobs;

	if (!CALLED_AS_EVENT_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_EVENT_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("ade_drop_guard() must be called as an event trigger")));
	trig = (EventTriggerData *) fcinfo->context;
	if (trig->parsetree == NULL)
		PG_RETURN_VOID();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (!drops_ade(trig->parsetree))
	{
		SPI_finish();
		PG_RETURN_VOID();
	}
	s = AdeSchema();
	tokens = count_of(psprintf("SELECT pg_catalog.count(*) FROM %s.abm_tokens", s));
	keypair = count_of(psprintf("SELECT pg_catalog.count(*) FROM %s.ade_keypair", s));
	hosts = count_of(psprintf("SELECT pg_catalog.count(*) FROM %s.hosts", s));

	if ((tokens > 0 || keypair > 0 || hosts > 0) && !ade_allow_drop)
		ereport(ERROR,
				(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
				 errmsg("dropping extension ade would delete %s",
						what_goes(tokens, keypair, hosts, 0)),
				 keypair > 0
				 ? errdetail("A new install makes a new key pair: its certificate would have to be uploaded to Apple Business Manager and every token downloaded again, unless this key pair is imported back.")
				 : 0,
				 errhint("Back up first: SELECT ade_export_key() and SELECT * FROM ade_export_tokens() (README, Uninstalling). "
						 "To drop it all the same, as a superuser: SET ade.allow_drop = on, then drop again.")));

	jobs = unschedule_job();
	if (tokens > 0 || keypair > 0 || hosts > 0 || jobs > 0)
		ereport(NOTICE,
				(errmsg("dropping extension ade, and with it %s",
						what_goes(tokens, keypair, hosts, jobs))));
	SPI_finish();
	PG_RETURN_VOID();
}
