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
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') THEN
		RAISE EXCEPTION 'pg_cron is not installed in this database'
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'Add pg_cron to shared_preload_libraries, set cron.database_name to this database, restart, then CREATE EXTENSION pg_cron.';
	END IF;
	EXECUTE 'SELECT cron.schedule($1, $2, $3)' INTO jid
		USING 'ade_sync', schedule, format('CALL %I.ade_sync_job()', '@extschema@');

	-- The cleanup function is made here, outside the extension (an event
	-- trigger of the extension's own would not fire when it is dropped).
	-- A role with CREATE on the schema could have made one of that name
	-- first, to run its body as whoever next drops anything: one that
	-- belongs to neither the extension's owner nor a superuser is refused,
	-- never taken over.
	v_fn := to_regprocedure(format('%I.ade_cron_cleanup()', '@extschema@'));
	IF v_fn IS NOT NULL AND NOT EXISTS (
		SELECT 1 FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner
		 WHERE p.oid = v_fn
		   AND (r.rolsuper OR p.proowner = (SELECT e.extowner FROM pg_extension e WHERE e.extname = 'ade')))
	THEN
		RAISE EXCEPTION 'function %.ade_cron_cleanup() exists and belongs to %, not to the extension''s owner',
			'@extschema@', (SELECT p.proowner::regrole FROM pg_proc p WHERE p.oid = v_fn)
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
		$body$ $f$, CASE WHEN v_fn IS NULL THEN '' ELSE 'OR REPLACE' END, '@extschema@', '@extschema@');
	EXECUTE format('REVOKE ALL ON FUNCTION %I.ade_cron_cleanup() FROM PUBLIC', '@extschema@');
	IF NOT EXISTS (SELECT 1 FROM pg_event_trigger
					WHERE evtname = 'ade_cron_cleanup'
					  AND evtfoid = to_regprocedure(format('%I.ade_cron_cleanup()', '@extschema@'))) THEN
		IF EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = 'ade_cron_cleanup') THEN
			EXECUTE 'DROP EVENT TRIGGER ade_cron_cleanup';
		END IF;
		EXECUTE format('CREATE EVENT TRIGGER ade_cron_cleanup ON sql_drop EXECUTE FUNCTION %I.ade_cron_cleanup()',
					   '@extschema@');
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
BEGIN
	IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') THEN
		EXECUTE 'SELECT count(cron.unschedule(j.jobid)) > 0 FROM cron.job j WHERE j.jobname = $1'
			INTO found_job USING 'ade_sync';
	END IF;
	IF EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = 'ade_cron_cleanup') THEN
		EXECUTE 'DROP EVENT TRIGGER ade_cron_cleanup';
	END IF;
	IF to_regprocedure(format('%I.ade_cron_cleanup()', '@extschema@')) IS NOT NULL THEN
		EXECUTE format('DROP FUNCTION %I.ade_cron_cleanup()', '@extschema@');
	END IF;
	RETURN found_job;
END
$$;
COMMENT ON FUNCTION ade_unschedule() IS 'removes the pg_cron job ade_sync; false when there was none';

REVOKE ALL ON FUNCTION ade_schedule(text), ade_unschedule() FROM PUBLIC;
