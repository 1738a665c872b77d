/*-------------------------------------------------------------------------
 *
 * schedule.sql
 *		Source of the ade install script: the pg_cron job.
 *
 * Owns ade_schedule() and ade_unschedule(): the pg_cron job ade_sync that
 * runs CALL ade_sync_job() (every minute by default: ade_sync() committing
 * each page, sync.sql), and its removal when the extension is dropped,
 * also in a database restored where pg_cron is not installed.  pg_cron is optional at install time: only
 * these functions need it, and they say so with a hint when it is missing.
 *
 * IDENTIFICATION
 *	  src/schema/schedule.sql
 *
 *-------------------------------------------------------------------------
 */

-- The job's command.  It names ade's schema (quoted), and calls
-- ade_sync_job() there only while ade is installed in that very schema (its
-- oid, and its name still naming it): a role that owns the schema (the
-- database owner owns public) and drops it, ade with it, then makes a
-- schema and a procedure of those names, gets nothing run by the job's
-- superuser.  (Renaming ade's schema is refused: ade_schema_guard.)
CREATE FUNCTION ade_job_command() RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
	SELECT format('DO $ade$ BEGIN IF EXISTS (SELECT FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) e.extnamespace WHERE e.extname OPERATOR(pg_catalog.=) ''ade'' AND n.oid OPERATOR(pg_catalog.=) %s AND n.nspname OPERATOR(pg_catalog.=) %L) THEN CALL %I.ade_sync_job(); END IF; END $ade$',
				  n.oid::bigint, n.nspname, n.nspname)
	  FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
	 WHERE e.extname = 'ade'
$fn$;
COMMENT ON FUNCTION ade_job_command() IS
	'internal: the pg_cron job''s command: CALL ade_sync_job() in ade''s schema, only while ade is installed there';

-- Registers (idempotently) the job ade_sync.  It also creates, outside the
-- extension, an sql_drop event trigger that unschedules the job when the
-- extension is dropped (an event trigger that belongs to the extension would
-- not fire then).
CREATE FUNCTION ade_schedule(schedule text DEFAULT '* * * * *') RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	jid bigint;
	v_fn regprocedure;
	-- its name, not @extschema@: %I quotes it once
	v_schema name := (SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
					   WHERE e.extname = 'ade');
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') THEN
		RAISE EXCEPTION 'pg_cron is not installed in this database'
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'Add pg_cron to shared_preload_libraries, set cron.database_name to this database, restart, then CREATE EXTENSION pg_cron.';
	END IF;
	EXECUTE 'SELECT cron.schedule($1, $2, $3)' INTO jid
		USING 'ade_sync', schedule, @extschema@.ade_job_command();

	-- The cleanup function is made here, outside the extension (an event
	-- trigger of the extension's own would not fire when it is dropped).
	-- A role with CREATE on the schema could have made one of that name
	-- first, to run its body as whoever next drops anything: one that
	-- belongs to neither the extension's owner nor a superuser is refused,
	-- never taken over.
	v_fn := to_regprocedure(format('%I.ade_cron_cleanup()', v_schema));
	IF v_fn IS NOT NULL AND NOT EXISTS (
		SELECT 1 FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner
		 WHERE p.oid = v_fn
		   AND (r.rolsuper OR p.proowner = (SELECT e.extowner FROM pg_extension e WHERE e.extname = 'ade')))
	THEN
		RAISE EXCEPTION 'function %.ade_cron_cleanup() exists and belongs to %, not to the extension''s owner',
			quote_ident(v_schema), (SELECT p.proowner::regrole FROM pg_proc p WHERE p.oid = v_fn)
			USING ERRCODE = 'insufficient_privilege',
				  HINT = 'A role with CREATE on the schema made it; ade_schedule() does not take it over. Check it, drop it, and call ade_schedule() again.';
	END IF;
	EXECUTE format($f$
		CREATE %s FUNCTION %I.ade_cron_cleanup() RETURNS event_trigger
		LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $body$
		BEGIN
			IF EXISTS (SELECT 1 FROM pg_event_trigger_dropped_objects()
						WHERE object_type = 'extension' AND object_identity = 'ade') THEN
				-- a dump restored where pg_cron is not installed brings
				-- this trigger along, and no job
				IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') THEN
					EXECUTE 'SELECT count(cron.unschedule(j.jobid)) FROM cron.job j WHERE j.jobname = $1'
						USING 'ade_sync';
				END IF;
				DROP EVENT TRIGGER ade_cron_cleanup;
				DROP FUNCTION %I.ade_cron_cleanup();
			END IF;
		END
		$body$ $f$, CASE WHEN v_fn IS NULL THEN '' ELSE 'OR REPLACE' END, v_schema, v_schema);
	EXECUTE format('REVOKE ALL ON FUNCTION %I.ade_cron_cleanup() FROM PUBLIC', v_schema);
	IF NOT EXISTS (SELECT 1 FROM pg_event_trigger
					WHERE evtname = 'ade_cron_cleanup'
					  AND evtfoid = to_regprocedure(format('%I.ade_cron_cleanup()', v_schema))) THEN
		IF EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = 'ade_cron_cleanup') THEN
			EXECUTE 'DROP EVENT TRIGGER ade_cron_cleanup';
		END IF;
		EXECUTE format('CREATE EVENT TRIGGER ade_cron_cleanup ON sql_drop EXECUTE FUNCTION %I.ade_cron_cleanup()',
					   v_schema);
	END IF;
	RETURN jid;
END
$$;
COMMENT ON FUNCTION ade_schedule(text) IS
	'registers the pg_cron job ade_sync (CALL ade_sync_job(), every minute by default); idempotent';

CREATE FUNCTION ade_unschedule() RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	found_job boolean := false;
	v_schema name := (SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
					   WHERE e.extname = 'ade');
BEGIN
	IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') THEN
		EXECUTE 'SELECT count(cron.unschedule(j.jobid)) > 0 FROM cron.job j WHERE j.jobname = $1'
			INTO found_job USING 'ade_sync';
	END IF;
	IF EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = 'ade_cron_cleanup') THEN
		EXECUTE 'DROP EVENT TRIGGER ade_cron_cleanup';
	END IF;
	IF to_regprocedure(format('%I.ade_cron_cleanup()', v_schema)) IS NOT NULL THEN
		EXECUTE format('DROP FUNCTION %I.ade_cron_cleanup()', v_schema);
	END IF;
	RETURN found_job;
END
$$;
COMMENT ON FUNCTION ade_unschedule() IS 'removes the pg_cron job ade_sync; false when there was none';

-- The schema keeps its name: every function body, trigger and the job name
-- it (what the install wrote for @extschema@).  Renamed, a role that can
-- create a schema of the old name (the database owner, who owns public)
-- would have ade's triggers and the job's superuser run its functions: a
-- statement that renames ade's schema is refused, whoever runs it.
CREATE FUNCTION ade_schema_guard() RETURNS event_trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF NOT EXISTS (SELECT FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
					WHERE e.extname = 'ade' AND quote_ident(n.nspname) = $q$@extschema@$q$) THEN
		RAISE EXCEPTION 'the schema of extension ade cannot be renamed'
			USING ERRCODE = 'feature_not_supported',
				  DETAIL = 'ade''s functions, triggers and pg_cron job name their schema.',
				  HINT = 'To move ade to another schema: pg_dump the database, DROP EXTENSION ade, CREATE EXTENSION ade SCHEMA <new>, and restore the data.';
	END IF;
END
$$;
COMMENT ON FUNCTION ade_schema_guard() IS 'event trigger: refuses to rename the schema ade is installed in';
CREATE EVENT TRIGGER ade_schema_guard ON ddl_command_end WHEN TAG IN ('ALTER SCHEMA')
	EXECUTE FUNCTION ade_schema_guard();

REVOKE ALL ON FUNCTION ade_schedule(text), ade_unschedule(), ade_job_command(), ade_schema_guard() FROM PUBLIC;
