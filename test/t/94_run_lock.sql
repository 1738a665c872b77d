-- The run lock (issue 19, item 2): one run at a time, on a lock that no role
-- but ade's owner may take.  A role with LOGIN and no grant at all held the
-- advisory lock of 0.4, (1094993969, 0), and every run, pg_cron's included,
-- reported every token "busy" for as long as its session lived.
--
-- - the advisory lock of 0.4, held by a role with no grant, stops nothing;
-- - that role can neither lock nor read ade_run_lock;
-- - two runs at once: the second reports "busy" (a run holds the lock);
-- - a session that is not a run holding the lock (a superuser's LOCK
--   TABLE) makes the run fail with an error that names its pid, which
--   ade_status.attention shows.
\ir setup.psql
CREATE EXTENSION IF NOT EXISTS dblink;
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ade_nobody') THEN
    EXECUTE 'DROP OWNED BY ade_nobody'; EXECUTE 'DROP ROLE ade_nobody';
  END IF;
END $$;
CREATE ROLE ade_nobody LOGIN;
SELECT format('host=%s port=%s dbname=%s', split_part(current_setting('unix_socket_directories'), ',', 1),
              current_setting('port'), current_database()) AS cs \gset
SELECT dblink_connect('nobody', :'cs' || ' user=ade_nobody') \g /dev/null
SELECT dblink_connect('other', :'cs' || ' user=' || current_user) \g /dev/null
\! test/add-token.sh Acme CK_acme
SELECT id AS acme FROM abm_tokens WHERE consumer_key = 'CK_acme' \gset
\! python3 test/mockctl.py devices CK_acme --generate 3 --prefix L >/dev/null
SELECT plan(10);

-- 1. the advisory lock of 0.4, held by a role with no grant
SELECT is((SELECT b FROM dblink('nobody', 'SELECT pg_advisory_lock(1094993969, 0)::text') AS x(b text)), '',
  'a role with no grant takes the advisory lock a run of 0.4 took');
SELECT is((SELECT error FROM ade_sync()), NULL, 'SELECT ade_sync() runs all the same');
CALL ade_sync_job();
SELECT is((SELECT error FROM ade_sync_runs ORDER BY id DESC LIMIT 1), NULL, 'and so does CALL ade_sync_job()');
SELECT is((SELECT count(*)::int FROM hosts WHERE hardware_serial LIKE 'L%'), 3, 'and syncs');
SELECT * FROM dblink('nobody', 'SELECT pg_advisory_unlock_all()::text') AS x(r text) \g /dev/null

-- 2. that role cannot take or read the run lock
SELECT throws_ok($$SELECT dblink_exec('nobody', 'BEGIN; LOCK TABLE ade_run_lock IN SHARE UPDATE EXCLUSIVE MODE; COMMIT')$$,
  '42501', NULL, 'a role with no grant cannot lock ade_run_lock');
SELECT dblink_exec('nobody', 'ROLLBACK') \g /dev/null
SELECT throws_ok($$SELECT * FROM dblink('nobody', 'SELECT count(*) FROM ade_run_lock') AS x(n bigint)$$,
  '42501', NULL, 'nor read it');

-- 3. two runs at once: the second is "busy"
\! python3 test/mockctl.py fault '{"path": "/devices/sync", "hang_seconds": 2, "times": 1}' >/dev/null
SELECT dblink_send_query('other', 'CALL ade_sync_job()') \g /dev/null
SELECT pg_sleep(0.5);
SELECT is((SELECT error FROM ade_sync()), 'busy', 'a run while another is open reports busy');
SELECT pg_temp.wait_for($$SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE query = 'CALL ade_sync_job()' AND state = 'active')$$, 10) \g /dev/null
SELECT * FROM dblink_get_result('other') AS x(r text) \g /dev/null
SELECT * FROM dblink_get_result('other') AS x(r text) \g /dev/null

-- 4. a session that is not a run holds the lock
SELECT dblink_exec('other', 'BEGIN') \g /dev/null
SELECT dblink_exec('other', 'LOCK TABLE ade_run_lock IN SHARE UPDATE EXCLUSIVE MODE') \g /dev/null
SELECT (SELECT pid FROM dblink('other', 'SELECT pg_backend_pid()') AS x(pid int)) AS holder \gset
SELECT matches((SELECT error FROM ade_sync()), format('^the run lock is held by pid %s \(role .*\), which is not a sync run', :holder),
  'a run finds the lock held by a session that is not a run: an error naming its pid');
SELECT matches((SELECT attention FROM ade_status WHERE token_id = :acme), format('pid %s', :holder),
  'ade_status.attention shows it');
SELECT dblink_exec('other', 'COMMIT') \g /dev/null
SELECT is((SELECT error FROM ade_sync()), NULL, 'once that session lets go, the next run syncs');

SELECT dblink_disconnect('nobody'), dblink_disconnect('other') \g /dev/null
SELECT * FROM finish();
DROP OWNED BY ade_nobody;
DROP ROLE ade_nobody;
