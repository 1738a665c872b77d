-- pg_cron: ade_schedule() registers the job ade_sync (idempotent),
-- ade_unschedule() removes it, DROP EXTENSION ade leaves no orphan job, and
-- the scheduler itself runs the sync (recorded in cron.job_run_details and
-- ade_sync_runs).  Waits up to ~75 s for the scheduler.
\ir setup.psql
\! test/add-token.sh Acme CK_acme
\! python3 test/mockctl.py devices CK_acme --generate 20
SELECT plan(31);
-- the hint of the error a statement raises
CREATE FUNCTION pg_temp.hint_of(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE h text;
BEGIN
  EXECUTE q;
  RETURN NULL;
EXCEPTION WHEN others THEN
  GET STACKED DIAGNOSTICS h = PG_EXCEPTION_HINT;
  RETURN h;
END $$;

SELECT ade_schedule() AS jobid \gset
SELECT is((SELECT format('%s | %s | %s | %s', jobname, schedule, command, database) FROM cron.job WHERE jobname = 'ade_sync'),
  format('ade_sync | * * * * * | %s | %s', ade_job_command(), current_database()),
  'ade_schedule() registers the job ade_sync, every minute, in this database');
SELECT matches(ade_job_command(), '^DO .* IF EXISTS \(SELECT FROM pg_catalog.pg_extension .* THEN CALL public.ade_sync_job\(\); END IF; END \$ade\$$',
  'its command calls public.ade_sync_job() only while ade is installed in public');
SELECT is(ade_schedule(), :'jobid'::bigint, 'ade_schedule() again returns the same job');
SELECT is((SELECT count(*)::int FROM cron.job WHERE jobname = 'ade_sync'), 1, 'and adds no second one');
SELECT is(ade_schedule('*/5 * * * *'), :'jobid'::bigint, 'a new schedule updates the same job');
SELECT is((SELECT schedule FROM cron.job WHERE jobname = 'ade_sync'), '*/5 * * * *', 'with the new schedule');
SELECT is(ade_unschedule(), true, 'ade_unschedule() removes the job');
SELECT is((SELECT count(*)::int FROM cron.job WHERE jobname = 'ade_sync'), 0, 'no job is left');
SELECT is(ade_unschedule(), false, 'ade_unschedule() without a job returns false');

-- DROP EXTENSION removes the job too (the token and key pair go with it:
-- a teardown says so)
SELECT ade_schedule() \g /dev/null
SET ade.allow_drop = on;
DROP EXTENSION ade;
RESET ade.allow_drop;
SELECT is((SELECT count(*)::int FROM cron.job WHERE jobname = 'ade_sync'), 0, 'DROP EXTENSION ade leaves no orphan job');
SELECT is((SELECT count(*)::int FROM pg_event_trigger WHERE evtname = 'ade_cron_cleanup')
  + (SELECT count(*)::int FROM pg_proc WHERE proname = 'ade_cron_cleanup'), 0, 'nor its event trigger and function');

CREATE EXTENSION ade;

-- a role with CREATE on the schema makes ade_cron_cleanup() first (issue
-- 13, reproduced on 0.3: CREATE OR REPLACE kept it as the owner, and its
-- body then ran as whoever dropped anything): from 0.5 ade_schedule() makes
-- no such function; it leaves that one alone (not ade's: neither dropped
-- nor taken over) and attaches nothing to it
CREATE ROLE ade_test_squatter;
GRANT CREATE ON SCHEMA public TO ade_test_squatter;
SET ROLE ade_test_squatter;
CREATE FUNCTION public.ade_cron_cleanup() RETURNS event_trigger LANGUAGE plpgsql AS $$BEGIN RAISE NOTICE 'squatter ran'; END$$;
RESET ROLE;
SELECT lives_ok('SELECT ade_schedule()', 'ade_schedule() works beside a function ade_cron_cleanup() another role made');
SELECT is((SELECT count(*)::int FROM pg_event_trigger WHERE evtname = 'ade_cron_cleanup'), 0, 'and attaches no event trigger to it');
SELECT is((SELECT proowner::regrole::text FROM pg_proc WHERE proname = 'ade_cron_cleanup'), 'ade_test_squatter', 'nor takes it over');
SELECT is(ade_unschedule(), true, 'ade_unschedule() removes the job and leaves the function alone');
SELECT is((SELECT count(*)::int FROM pg_proc WHERE proname = 'ade_cron_cleanup'), 1, 'which is still there');
DROP FUNCTION public.ade_cron_cleanup();
REVOKE CREATE ON SCHEMA public FROM ade_test_squatter;
DROP ROLE ade_test_squatter;

-- the scheduler runs it
\! test/add-token.sh Acme CK_acme
SELECT ade_schedule() AS jobid \gset
CREATE FUNCTION pg_temp.wait_for_cron(secs int) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  FOR i IN 1 .. secs LOOP
    IF EXISTS (SELECT 1 FROM cron.job_run_details d JOIN cron.job j USING (jobid)
                WHERE j.jobname = 'ade_sync' AND d.status IN ('succeeded', 'failed'))
    THEN RETURN true; END IF;
    PERFORM pg_sleep(1);
  END LOOP;
  RETURN false;
END $$;
SELECT ok(pg_temp.wait_for_cron(75), 'the scheduler runs ade_sync within a minute');
SELECT is((SELECT status FROM cron.job_run_details d JOIN cron.job j USING (jobid) WHERE j.jobname = 'ade_sync' ORDER BY runid LIMIT 1),
  'succeeded', 'cron.job_run_details records the run as succeeded');
SELECT is((SELECT added FROM ade_sync_runs ORDER BY id LIMIT 1), 20, 'and ade_sync_runs holds the run, with the devices it added');
\set cronlog `grep -c 'LOG:  ade: fetching "Acme": page 1, 20 devices so far' "$ADE_SERVER_LOG" || true`
SELECT cmp_ok(:'cronlog'::int, '>=', 1, 'a pg_cron run reports its fetch progress as LOG lines in the server log');
-- a job run that failed (a database setting that breaks it, say: it leaves
-- no ade_sync_runs row) shows in attention, for ade_reader too, until a
-- later one succeeds (review of issue 19, finding 4)
INSERT INTO cron.job_run_details (jobid, job_pid, database, username, command, status, return_message, start_time, end_time)
SELECT jobid, 0, current_database(), 'dbo', command, 'failed', 'ERROR:  permission denied for schema mdm', now(), now()
  FROM cron.job WHERE jobname = 'ade_sync';
SET ROLE ade_reader;
SELECT is((SELECT attention FROM ade_status LIMIT 1),
  'the pg_cron job ade_sync fails: ERROR:  permission denied for schema mdm (cron.job_run_details)',
  'a failing run of the pg_cron job shows in attention, for ade_reader');
RESET ROLE;
INSERT INTO cron.job_run_details (jobid, job_pid, database, username, command, status, return_message, start_time, end_time)
SELECT jobid, 0, current_database(), current_user, command, 'succeeded', 'CALL', now() + interval '1 second', now() + interval '2 seconds'
  FROM cron.job WHERE jobname = 'ade_sync';
SELECT isnt((SELECT attention FROM ade_status LIMIT 1) LIKE 'the pg_cron job%', true, 'and no more once a later run succeeds');
SELECT ade_unschedule() \g /dev/null

-- a database scheduled under 0.4 updates to 0.5 (review of issue 18,
-- finding 2): the job runs ade_sync_job() from then on; 0.4's cleanup
-- trigger and function, made outside the extension, go (issue 20: a dump
-- would carry them), and the drop guard unschedules the job instead
SET ade.allow_drop = on;
DROP EXTENSION ade CASCADE;
RESET ade.allow_drop;
CREATE EXTENSION ade VERSION '0.4';
SELECT ade_schedule() \g /dev/null
SELECT lives_ok('ALTER EXTENSION ade UPDATE', 'ALTER EXTENSION ade UPDATE works in a database where ade_schedule() was called');
SELECT is((SELECT command FROM cron.job WHERE jobname = 'ade_sync'), ade_job_command(),
  'the update points the job at ade_sync_job()');
SELECT is((SELECT count(*)::int FROM pg_proc WHERE proname = 'ade_cron_cleanup')
  + (SELECT count(*)::int FROM pg_event_trigger WHERE evtname = 'ade_cron_cleanup'), 0,
  'and removes 0.4''s cleanup function and event trigger');
SELECT is((SELECT count(*)::int FROM cron.job WHERE jobname = 'ade_sync'), 1, 'the job stays');
SET ade.allow_drop = on;
DROP EXTENSION ade;
RESET ade.allow_drop;
SELECT is((SELECT count(*)::int FROM cron.job WHERE jobname = 'ade_sync'), 0,
  'and DROP EXTENSION ade of the updated extension removes it');
CREATE EXTENSION ade;

-- a schedule pg_cron cannot read: an error that says what it takes (issue 20)
SELECT throws_ok($$SELECT ade_schedule('every minute')$$, '22023', 'invalid schedule "every minute"',
  'a schedule pg_cron cannot read is an error that names it');
SELECT alike((SELECT pg_temp.hint_of($$SELECT ade_schedule('61 * * * *')$$)), '%''*/5 * * * *''%',
  'and its hint gives expressions that work');
SELECT throws_ok($$SELECT ade_schedule(NULL)$$, '22023', 'schedule is null', 'a NULL schedule is an error');
SELECT is((SELECT count(*)::int FROM cron.job WHERE jobname = 'ade_sync'), 0, 'and none schedules anything');

SELECT * FROM finish();
