-- The run lock (issue 19, item 2): one run at a time, on a lock that only a
-- run can take.  A role with LOGIN and no grant at all held the advisory
-- lock of 0.4, (1094993969, 0), and every run, pg_cron's included,
-- reported every token "busy" for as long as its session lived.
--
-- - the advisory lock of 0.4, and every advisory key an SQL function makes
--   of those numbers, held by a role with no grant, stop nothing;
-- - two runs at once: the second reports "busy", and its note names the
--   run in progress.
-- (The database owner's ANALYZE, which would hold a lock on a table of
-- ade's, is tried in test/hostile_roles.py.)
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
SELECT plan(8);

-- 1. advisory locks held by a role with no grant: 0.4's, and the 64-bit
-- keys that split into the same numbers
SELECT is((SELECT b FROM dblink('nobody', $q$SELECT concat(pg_advisory_lock(1094993969, 0), pg_advisory_lock(1094993969, 7),
  pg_advisory_lock((1094993969::bigint << 32)), pg_advisory_lock(1094993969::bigint), pg_advisory_lock(7::bigint << 32 | 1094993969))$q$) AS x(b text)), '',
  'a role with no grant takes the advisory lock a run of 0.4 took, and its look-alikes');
SELECT is((SELECT error FROM ade_sync()), NULL, 'SELECT ade_sync() runs all the same');
CALL ade_sync_job();
SELECT is((SELECT error FROM ade_sync_runs ORDER BY id DESC LIMIT 1), NULL, 'and so does CALL ade_sync_job()');
SELECT is((SELECT count(*)::int FROM hosts WHERE hardware_serial LIKE 'L%'), 3, 'and syncs');
SELECT * FROM dblink('nobody', 'SELECT pg_advisory_unlock_all()::text') AS x(r text) \g /dev/null

-- 2. two runs at once: the second is "busy", and says which run holds it
\! python3 test/mockctl.py fault '{"path": "/devices/sync", "hang_seconds": 2, "times": 1}' >/dev/null
SELECT dblink_send_query('other', 'CALL ade_sync_job()') \g /dev/null
SELECT pg_temp.wait_for($$SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 7 AND granted)$$, 5) \g /dev/null
SELECT (SELECT pid FROM pg_stat_activity WHERE query = 'CALL ade_sync_job()' AND pid <> pg_backend_pid()) AS runner \gset
SELECT is((SELECT error FROM ade_sync()), 'busy', 'a run while another is open reports busy');
SELECT is((SELECT note FROM ade_sync_runs ORDER BY id DESC LIMIT 1), format('a run or a device call (pid %s) is in progress', :runner),
  'and its note names the run in progress');
SELECT ok(pg_temp.wait_for($$SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE query = 'CALL ade_sync_job()' AND state = 'active')$$, 10),
  'the first run ends');
SELECT * FROM dblink_get_result('other') AS x(r text) \g /dev/null
SELECT * FROM dblink_get_result('other') AS x(r text) \g /dev/null
SELECT is((SELECT error FROM ade_sync()), NULL, 'and the next run syncs');

SELECT dblink_disconnect('nobody'), dblink_disconnect('other') \g /dev/null
SELECT * FROM finish();
DROP OWNED BY ade_nobody;
DROP ROLE ade_nobody;
