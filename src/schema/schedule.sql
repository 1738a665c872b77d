/*-------------------------------------------------------------------------
 *
 * schedule.sql
 *		Source of the ade install script: the pg_cron job.
 *
 * Owns ade_schedule() and ade_unschedule(): the pg_cron job ade_sync that
 * runs CALL ade_sync_job() (every minute by default: ade_sync() committing
 * each page, sync.sql); its removal when the extension is dropped is
 * ade_drop_guard()'s (uninstall.sql).  pg_cron is optional at install
 * time: only these functions need it, and they say so with a hint when it
 * is missing.
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

-- 0.4's ade_schedule() made, outside the extension, an sql_drop event
-- trigger ade_cron_cleanup and its function, to unschedule the job when the
-- extension is dropped.  ade_drop_guard() (below) does that now, as a
-- member of the extension, so nothing of ade's is left outside it for a
-- dump to carry: ade_schedule(), ade_unschedule() and the update to 0.5
-- remove what 0.4 left.  A function of that name that belongs to neither
-- the extension's owner nor a superuser is not ade's: left alone.
CREATE FUNCTION ade_drop_cron_cleanup() RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_fn regprocedure := to_regprocedure(format('%I.ade_cron_cleanup()',
		(SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
		  WHERE e.extname = 'ade')));
BEGIN
	IF EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = 'ade_cron_cleanup' AND evtfoid = v_fn) THEN
		EXECUTE 'DROP EVENT TRIGGER ade_cron_cleanup';
	END IF;
	IF v_fn IS NOT NULL AND EXISTS (
		SELECT 1 FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner
		 WHERE p.oid = v_fn
		   AND (r.rolsuper OR p.proowner = (SELECT e.extowner FROM pg_extension e WHERE e.extname = 'ade')))
	   AND NOT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtfoid = v_fn) THEN
		EXECUTE format('DROP FUNCTION %s', v_fn);
	END IF;
END
$$;
COMMENT ON FUNCTION ade_drop_cron_cleanup() IS
	'internal: removes the event trigger ade_cron_cleanup and its function that 0.4''s ade_schedule() made';

-- Registers (idempotently) the job ade_sync.  DROP EXTENSION ade removes
-- it (ade_drop_guard()).  pg_cron's own error for a schedule it cannot
-- read says only "invalid schedule": this one says what it takes.
CREATE FUNCTION ade_schedule(schedule text DEFAULT '* * * * *') RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	jid bigint;
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') THEN
		RAISE EXCEPTION 'pg_cron is not installed in this database'
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'Add pg_cron to shared_preload_libraries, set cron.database_name to this database, restart, then CREATE EXTENSION pg_cron.';
	END IF;
	IF schedule IS NULL OR btrim(schedule) = '' THEN
		RAISE EXCEPTION 'schedule is %', CASE WHEN schedule IS NULL THEN 'null' ELSE 'empty' END
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Omit it for every minute, or pass a cron expression such as ''*/5 * * * *''.';
	END IF;
	BEGIN
		EXECUTE 'SELECT cron.schedule($1, $2, $3)' INTO jid
			USING 'ade_sync', schedule, @extschema@.ade_job_command();
	EXCEPTION WHEN others THEN
		-- only pg_cron's refusal of the expression is reworded (OTHERS
		-- never catches a cancel or a timeout)
		IF SQLERRM NOT LIKE 'invalid schedule%' THEN
			RAISE;
		END IF;
		RAISE EXCEPTION 'invalid schedule "%"', schedule
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'pg_cron takes five fields: minute, hour, day of the month, month, day of the week.',
				  HINT = 'For example ''* * * * *'' (every minute, the default), ''*/5 * * * *'' (every five minutes), ''0 * * * *'' (hourly).';
	END;
	PERFORM @extschema@.ade_drop_cron_cleanup();
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
BEGIN
	IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') THEN
		EXECUTE 'SELECT count(cron.unschedule(j.jobid)) > 0 FROM cron.job j WHERE j.jobname = $1'
			INTO found_job USING 'ade_sync';
	END IF;
	PERFORM @extschema@.ade_drop_cron_cleanup();
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

REVOKE ALL ON FUNCTION ade_schedule(text), ade_unschedule(), ade_job_command(), ade_schema_guard(),
	ade_drop_cron_cleanup() FROM PUBLIC;
