-- The application's statements inside an open run (issue 18, items 1 and
-- 2): a run stopped at a chosen point (the mock hangs its second page),
-- the application role the README names (mdm_app, DML on hosts) in a
-- connection of its own (dblink), as READ COMMITTED and REPEATABLE READ.
--
-- - a host whose device ABM deleted in the open run stays deleted, whether
--   the application deletes it or changes its serial meanwhile;
-- - CALL ade_sync_job() (what pg_cron runs) commits each page: an
--   application statement waits for one page at most, never for the run;
-- - SELECT ade_sync() is one transaction: the application's statements
--   wait for it, and none fails (no deadlock), whatever order a bulk
--   statement takes its rows in;
-- - a run waiting for hosts never queues in front of the application.
\ir setup.psql
CREATE EXTENSION IF NOT EXISTS dblink;
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'mdm_app') THEN
    EXECUTE 'DROP OWNED BY mdm_app'; EXECUTE 'DROP ROLE mdm_app';
  END IF;
END $$;
CREATE ROLE mdm_app LOGIN;
GRANT ade_reader TO mdm_app;
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON hosts TO mdm_app;
GRANT USAGE ON SEQUENCE hosts_id_seq TO mdm_app;
SELECT format('host=%s port=%s dbname=%s', split_part(current_setting('unix_socket_directories'), ',', 1),
              current_setting('port'), current_database()) AS cs \gset
SELECT dblink_connect('run', :'cs' || ' user=' || current_user) \g /dev/null
SELECT dblink_connect('app', :'cs' || ' user=mdm_app') \g /dev/null
SELECT dblink_connect('app2', :'cs' || ' user=mdm_app') \g /dev/null
SELECT dblink_exec('run', 'SET client_min_messages = warning') \g /dev/null
-- an application statement that waits behind a run fails the test, never hangs it
SELECT dblink_exec('app', $$SET statement_timeout = '5s'$$), dblink_exec('app2', $$SET statement_timeout = '5s'$$) \g /dev/null
SELECT dblink_exec('run', 'SET ade.page_size = 1') \g /dev/null

-- app_ms(sql): runs sql as mdm_app, returns how long it took (ms)
-- (a statement that fails counts as one that never ended)
CREATE FUNCTION pg_temp.app_ms(q text, conn text DEFAULT 'app') RETURNS int LANGUAGE plpgsql AS $$
DECLARE t0 timestamptz := clock_timestamp();
BEGIN
  PERFORM dblink_exec(conn, q);
  RETURN (extract(epoch FROM clock_timestamp() - t0) * 1000)::int;
EXCEPTION WHEN OTHERS THEN
  RAISE WARNING 'as mdm_app: %', SQLERRM;
  RETURN 2147483647;
END $$;
-- result(conn): the one-column result of what was sent on conn (dblink
-- wants a second call before the connection takes another command)
CREATE FUNCTION pg_temp.result(conn text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE r text;
BEGIN
  SELECT x.r INTO r FROM dblink_get_result(conn) AS x(r text);
  PERFORM * FROM dblink_get_result(conn) AS x(r text);
  RETURN r;
END $$;
-- the run holds hosts (a page being applied, or SELECT ade_sync()'s whole run)
CREATE FUNCTION pg_temp.run_holds_hosts() RETURNS boolean LANGUAGE sql AS $$
  SELECT EXISTS (SELECT 1 FROM pg_locks WHERE relation = 'hosts'::regclass
                  AND mode = 'ExclusiveLock' AND granted AND pid <> pg_backend_pid())
$$;

\! test/add-token.sh Acme CK_acme
SELECT id AS acme FROM abm_tokens WHERE consumer_key = 'CK_acme' \gset
\! python3 test/mockctl.py devices CK_acme --generate 20 --prefix A >/dev/null
CALL ade_sync_job();
CALL ade_sync_job();
SELECT plan(78);

SELECT is((SELECT count(*)::int FROM hosts), 20, 'CALL ade_sync_job() fetched the 20 devices');

-- 1. ABM deletes A00000001 and changes others; the run applies the delete
-- (page 1), then hangs on page 2.  The application deletes that host.
SELECT id AS a5 FROM hosts WHERE hardware_serial = 'A00000005' \gset
SELECT id AS a2 FROM hosts WHERE hardware_serial = 'A00000002' \gset
\! python3 test/mockctl.py devices CK_acme --delete A00000001 >/dev/null
\! python3 test/mockctl.py devices CK_acme --delete A00000002 >/dev/null
\! python3 test/mockctl.py devices CK_acme --generate 3 --prefix N >/dev/null
\! python3 test/mockctl.py fault '{"path": "/devices/sync", "skip": 2, "hang_seconds": 3, "times": 1}' >/dev/null
SELECT dblink_send_query('run', 'CALL ade_sync_job()') \g /dev/null
SELECT ok(pg_temp.wait_for($$SELECT count(*) = 2 FROM host_dep_assignments WHERE hardware_serial IN ('A00000001', 'A00000002') AND deleted_at IS NOT NULL$$, 5),
  'CALL ade_sync_job() commits each page: its first pages are there while the run is still open');
SELECT cmp_ok(pg_temp.app_ms($$DELETE FROM hosts WHERE hardware_serial = 'A00000001'$$), '<', 1000,
  'an application delete inside an open run waits for no more than a page');
SELECT cmp_ok(pg_temp.app_ms($$UPDATE hosts SET hardware_serial = 'X-A00000002' WHERE hardware_serial = 'A00000002'$$), '<', 1000,
  'an application re-serial inside an open run waits for no more than a page');
SELECT cmp_ok(pg_temp.app_ms($$DELETE FROM hosts WHERE hardware_serial = 'A00000005'$$), '<', 1000,
  'a delete of a live host inside an open run waits for no more than a page');
SELECT is((SELECT count(*)::int FROM hosts WHERE hardware_serial = 'A00000001'), 0,
  'the host of a device ABM deleted in the open run is not made again when the application deletes it');
SELECT is((SELECT id FROM hosts WHERE hardware_serial = 'A00000005'), :'a5'::bigint,
  'a live host the application deletes inside an open run comes back with its id');
SELECT ok(pg_temp.wait_for($$SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE query = 'CALL ade_sync_job()' AND state = 'active')$$, 10),
  'the run ends');
SELECT is(pg_temp.result('run'), 'CALL', 'the run ends without an error');
SELECT is((SELECT count(*)::int FROM hosts WHERE hardware_serial IN ('A00000001', 'A00000002')), 0,
  'after the run, no host stands for the devices ABM deleted (neither deleted nor re-serialed came back)');
SELECT is((SELECT id FROM hosts WHERE hardware_serial = 'X-A00000002'), :'a2'::bigint,
  'the re-serialed host keeps its id and its new serial');
SELECT is((SELECT count(*)::int FROM hosts WHERE hardware_serial LIKE 'N%'), 3, 'the devices ABM added meanwhile have hosts');

-- 2. REPEATABLE READ: the application's snapshot is older than the page
-- that soft-deleted A00000003; its delete neither fails nor keeps the host
\! python3 test/mockctl.py devices CK_acme --delete A00000003 >/dev/null
SELECT dblink_exec('app', 'BEGIN ISOLATION LEVEL REPEATABLE READ') \g /dev/null
SELECT ok((SELECT n FROM dblink('app', $$SELECT count(*)::int FROM hosts WHERE hardware_serial = 'A00000003'$$) AS x(n int)) = 1,
  'the application''s REPEATABLE READ snapshot is taken before the run, with the host');
CALL ade_sync_job();
SELECT lives_ok($$SELECT dblink_exec('app', 'DELETE FROM hosts WHERE hardware_serial = ''A00000003''')$$,
  'under REPEATABLE READ, deleting the host of a device a run soft-deleted since the snapshot does not fail');
SELECT dblink_exec('app', 'COMMIT') \g /dev/null
SELECT is((SELECT count(*)::int FROM hosts WHERE hardware_serial = 'A00000003'), 0,
  'and the host stays deleted (the trigger reads the assignments as they are now, not as of the snapshot)');

-- the same under SERIALIZABLE, with a live host in the same statement
\! python3 test/mockctl.py devices CK_acme --delete A00000009 >/dev/null
SELECT id AS a11 FROM hosts WHERE hardware_serial = 'A00000011' \gset
SELECT dblink_exec('app', 'BEGIN ISOLATION LEVEL SERIALIZABLE') \g /dev/null
SELECT * FROM dblink('app', 'SELECT count(*) FROM hosts') AS x(n bigint) \g /dev/null
CALL ade_sync_job();
SELECT lives_ok($$SELECT dblink_exec('app', 'DELETE FROM hosts WHERE hardware_serial IN (''A00000009'', ''A00000011'')')$$,
  'under SERIALIZABLE, the same delete does not fail either');
SELECT lives_ok($$SELECT dblink_exec('app', 'COMMIT')$$, 'and commits');
SELECT is((SELECT array_agg(hardware_serial || ':' || id) FROM hosts WHERE hardware_serial IN ('A00000009', 'A00000011')),
  ARRAY['A00000011:' || :'a11'],
  'the host of the device ABM deleted stays deleted, the live one is back with its id');

-- 3. SELECT ade_sync() is one transaction: ABM changes A00000010 (page 1)
-- and then A00000004 (page 2, after a hang); a bulk DELETE takes rows in
-- physical order (A00000004 before A00000010).  0.4 deadlocked here.
\! echo '[{"serial_number": "A00000010", "model": "Mac99,1"}, {"serial_number": "A00000004", "model": "Mac99,1"}]' > "$ADE_TEST_TMP/modify_24.json"
\! python3 test/mockctl.py devices CK_acme --modify-json "$ADE_TEST_TMP/modify_24.json" >/dev/null
\! python3 test/mockctl.py fault '{"path": "/devices/sync", "skip": 1, "hang_seconds": 2, "times": 1}' >/dev/null
SELECT dblink_send_query('run', 'SELECT count(*) FROM ade_sync()') \g /dev/null
SELECT ok(pg_temp.wait_for($$SELECT pg_temp.run_holds_hosts()$$, 5), 'SELECT ade_sync() holds hosts from its first page');
SELECT dblink_send_query('app', 'DELETE FROM hosts') \g /dev/null
SELECT ok(pg_temp.wait_for($$SELECT NOT pg_temp.run_holds_hosts()$$, 10), 'the run ends');
SELECT is(pg_temp.result('run'), '1', 'the run did not fail (no deadlock)');
SELECT lives_ok($$SELECT pg_temp.result('app')$$,
  'a bulk DELETE FROM hosts inside SELECT ade_sync() waits for it and does not fail');
SELECT is((SELECT count(*)::int FROM hosts), (SELECT count(*)::int FROM host_dep_assignments WHERE deleted_at IS NULL),
  'after the bulk delete, every live device has its host again, and nothing else');

-- 4. A run waiting for hosts never queues in front of the application: an
-- application transaction that wrote hosts stays open; the run polls; a
-- second application statement goes through at once.
\! python3 test/mockctl.py devices CK_acme --generate 2 --prefix Q >/dev/null
SELECT dblink_exec('app', 'BEGIN') \g /dev/null
SELECT dblink_exec('app', $$UPDATE hosts SET hardware_model = hardware_model WHERE hardware_serial = 'A00000006'$$) \g /dev/null
SELECT dblink_send_query('run', 'CALL ade_sync_job()') \g /dev/null
SELECT pg_sleep(0.3);
SELECT cmp_ok(pg_temp.app_ms($$DELETE FROM hosts WHERE hardware_serial = 'A00000007'$$, 'app2'), '<', 1000,
  'while a run waits to write hosts, another application statement on hosts does not wait behind it');
SELECT dblink_exec('app', 'COMMIT') \g /dev/null
SELECT ok(pg_temp.wait_for($$SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE query = 'CALL ade_sync_job()' AND state = 'active')$$, 10),
  'the run goes on once the application transaction ends');
SELECT pg_temp.result('run') \g /dev/null
SELECT is((SELECT count(*)::int FROM hosts WHERE hardware_serial LIKE 'Q%'), 2, 'and applies its pages');

-- 5. A token removed while CALL ade_sync_job() is open: the run's later
-- steps claim it again, find it gone, and never bring its devices back
\! test/add-token.sh Beta CK_beta
SELECT id AS beta FROM abm_tokens WHERE consumer_key = 'CK_beta' \gset
\! python3 test/mockctl.py devices CK_beta --generate 4 --prefix B >/dev/null
CALL ade_sync_job(:beta);
\! python3 test/mockctl.py devices CK_beta --generate 3 --start 10 --prefix B >/dev/null
\! python3 test/mockctl.py fault '{"path": "/devices/sync", "consumer_key": "CK_beta", "skip": 1, "hang_seconds": 2, "times": 1}' >/dev/null
SELECT dblink_send_query('run', format('CALL ade_sync_job(%s)', :beta)) \g /dev/null
SELECT pg_sleep(0.5);
SELECT ade_remove_token(:beta) \g /dev/null
SELECT ok(pg_temp.wait_for(format($$SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE query = 'CALL ade_sync_job(%s)' AND state = 'active')$$, :beta), 10),
  'the run ends');
SELECT is(pg_temp.result('run'), 'CALL', 'a token removed in the middle of CALL ade_sync_job() is not an error of the run');
SELECT is((SELECT count(*)::int FROM host_dep_assignments WHERE abm_token_id = :beta AND deleted_at IS NULL), 0,
  'no device of a token removed in the middle of a run is live after it');

-- 6. An application transaction holds a host row FOR UPDATE (an ORM's
-- select-for-update, then save) while ABM changes that device: the run
-- waits for no application row lock (it writes only while no application
-- transaction holds hosts at all), nothing deadlocks, and nobody else
-- waits behind the run.  (Review of issue 18, finding 1.)
\! echo '[{"serial_number": "A00000012", "model": "Mac77,1"}]' > "$ADE_TEST_TMP/modify_24b.json"
\! python3 test/mockctl.py devices CK_acme --modify-json "$ADE_TEST_TMP/modify_24b.json" >/dev/null
SELECT dblink_exec('app', 'BEGIN') \g /dev/null
SELECT * FROM dblink('app', $$SELECT id FROM hosts WHERE hardware_serial = 'A00000012' FOR UPDATE$$) AS x(id bigint) \g /dev/null
SELECT dblink_send_query('run', 'CALL ade_sync_job()') \g /dev/null
SELECT pg_sleep(0.5);
SELECT cmp_ok(pg_temp.app_ms($$UPDATE hosts SET hardware_model = hardware_model WHERE hardware_serial = 'A00000013'$$, 'app2'), '<', 1000,
  'while an application transaction holds a host row, another application statement does not wait behind the run');
SELECT lives_ok($q$SELECT dblink_exec('app', $$UPDATE hosts SET hardware_model = 'mine' WHERE hardware_serial = 'A00000012'$$)$q$,
  'the transaction that holds the row updates it without a deadlock');
SELECT lives_ok($$SELECT dblink_exec('app', 'COMMIT')$$, 'and commits');
SELECT ok(pg_temp.wait_for($$SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE query = 'CALL ade_sync_job()' AND state = 'active')$$, 10),
  'the run ends');
SELECT is(pg_temp.result('run'), 'CALL', 'without an error');
SELECT is((SELECT hardware_model FROM hosts WHERE hardware_serial = 'A00000012'), 'Mac77,1',
  'and applies ABM''s change after the application''s');

-- 7. REPEATABLE READ application transactions whose snapshot is older than
-- a committed assignment batch: moving a host to a team, re-serialing and
-- renumbering it do not fail (the triggers write the assignments as they
-- are now).  (Finding 3.)
SELECT ade_set_profile('{"profile_name": "Open run", "url": "https://mdm.example.org/enroll"}') \g /dev/null
INSERT INTO teams (name) VALUES ('Open run team');
SELECT id AS team FROM teams WHERE name = 'Open run team' \gset
CREATE FUNCTION pg_temp.rr_after_run(stmt text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  PERFORM dblink_exec('app', 'BEGIN ISOLATION LEVEL REPEATABLE READ');
  PERFORM * FROM dblink('app', 'SELECT count(*) FROM hosts') AS x(n bigint);
  PERFORM dblink_exec('run', 'CALL ade_sync_job()');
  BEGIN
    PERFORM dblink_exec('app', stmt);
    PERFORM dblink_exec('app', 'COMMIT');
    RETURN 'ok';
  EXCEPTION WHEN OTHERS THEN
    PERFORM dblink_exec('app', 'ROLLBACK');
    RETURN SQLERRM;
  END;
END $$;
\! python3 test/mockctl.py devices CK_acme --generate 1 --start 50 --prefix A >/dev/null
SELECT is(pg_temp.rr_after_run(format('UPDATE hosts SET team_id = %s WHERE hardware_serial = %L', :team, 'A00000013')), 'ok',
  'under REPEATABLE READ, a team move after an assignment batch committed does not fail');
\! python3 test/mockctl.py devices CK_acme --generate 1 --start 51 --prefix A >/dev/null
SELECT is(pg_temp.rr_after_run($$UPDATE hosts SET hardware_serial = 'Z-A00000014' WHERE hardware_serial = 'A00000014'$$), 'ok',
  'nor a re-serial');
\! python3 test/mockctl.py devices CK_acme --generate 1 --start 52 --prefix A >/dev/null
SELECT is(pg_temp.rr_after_run($$UPDATE hosts SET id = id + 100000 WHERE hardware_serial = 'A00000015'$$), 'ok',
  'nor a renumbering');
SELECT is((SELECT count(*)::int FROM host_dep_assignments d LEFT JOIN hosts h ON h.id = d.host_id AND h.hardware_serial = d.hardware_serial
            WHERE d.deleted_at IS NULL AND h.id IS NULL), 0, 'every live device has its host');

-- 8. A database whose default is REPEATABLE READ: each transaction of
-- CALL ade_sync_job() is READ COMMITTED all the same, so an application
-- delete while the run waits for ABM does not fail the page.  (Finding 7.)
\! echo '[{"serial_number": "A00000016", "model": "Mac78,1"}]' > "$ADE_TEST_TMP/modify_24c.json"
\! python3 test/mockctl.py devices CK_acme --modify-json "$ADE_TEST_TMP/modify_24c.json" >/dev/null
\! python3 test/mockctl.py fault '{"path": "/devices/sync", "hang_seconds": 1.5, "times": 1}' >/dev/null
SELECT dblink_exec('run', $$SET default_transaction_isolation = 'repeatable read'$$) \g /dev/null
SELECT dblink_send_query('run', 'CALL ade_sync_job()') \g /dev/null
SELECT pg_sleep(0.5);
SELECT dblink_exec('app', $$DELETE FROM hosts WHERE hardware_serial = 'A00000016'$$) \g /dev/null
SELECT ok(pg_temp.wait_for($$SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE query = 'CALL ade_sync_job()' AND state = 'active')$$, 10),
  'the run ends');
SELECT pg_temp.result('run') \g /dev/null
SELECT dblink_exec('run', 'RESET default_transaction_isolation') \g /dev/null
SELECT is((SELECT error FROM ade_sync_runs ORDER BY id DESC LIMIT 1), NULL,
  'under a default of REPEATABLE READ, a page is not lost to a serialization failure');
SELECT is((SELECT hardware_model FROM hosts WHERE hardware_serial = 'A00000016'), 'Mac78,1', 'it applied');

-- 9. A NULL from a lookup that found nothing is an error, never "every token"
SELECT throws_ok('CALL ade_sync_job(NULL)', '22004', NULL, 'CALL ade_sync_job(NULL) is an error, as ade_sync(NULL) is');

-- 10. An application that never stops writing hosts (8 connections, each
-- a transaction that updates a host and holds it 20 ms): the run still
-- finds a moment to write, well within its time, and no application
-- transaction fails.  (Finding 4: a run that only polled never did.)
\! echo '[{"serial_number": "A00000017", "model": "Mac79,1"}]' > "$ADE_TEST_TMP/modify_24d.json"
\! python3 test/mockctl.py devices CK_acme --modify-json "$ADE_TEST_TMP/modify_24d.json" >/dev/null
\! printf '%s\n' '\set hid random(1, 20)' 'BEGIN;' 'UPDATE hosts SET updated_at = now() WHERE id = :hid;' 'SELECT pg_sleep(0.02);' 'COMMIT;' > "$ADE_TEST_TMP/busy_app.sql"
\! (pgbench -n -U mdm_app -d "$ADE_TEST_DB" -c 8 -j 8 -T 6 -f "$ADE_TEST_TMP/busy_app.sql" > "$ADE_TEST_TMP/busy_app.out" 2>&1 &)
SELECT pg_sleep(1.5);
SET ade.max_sync_seconds = 4;
CALL ade_sync_job();
RESET ade.max_sync_seconds;
SELECT is((SELECT error FROM ade_sync_runs ORDER BY id DESC LIMIT 1), NULL,
  'a run beside an application that never stops writing hosts applies its page, within its time');
SELECT is((SELECT hardware_model FROM hosts WHERE hardware_serial = 'A00000017'), 'Mac79,1', 'the change is there');
SELECT pg_sleep(5);
\set busyfailed `grep -c 'number of failed transactions: 0 ' "$ADE_TEST_TMP/busy_app.out"`
SELECT is(:'busyfailed'::text, '1', 'and none of the application''s transactions failed');

-- 11. An application that manages teams too deletes a token's default team
-- in a transaction that wrote hosts first, while a run waits to write hosts
-- (CALL ade_sync_job()): the run holds no token row while it waits (hosts
-- first, then the token: src/coexist.c), so the foreign key from
-- abm_tokens that the delete reaches is free.  0.5 before this change
-- claimed the token first: deadlock, or a wait for the run's time.
GRANT SELECT, INSERT, UPDATE, DELETE ON teams TO mdm_app;
GRANT USAGE ON SEQUENCE teams_id_seq TO mdm_app;
INSERT INTO teams (name) VALUES ('Doomed 11') RETURNING id AS t11 \gset
SELECT ade_set_default_teams(:acme, :t11, :t11, :t11) \g /dev/null
\! python3 test/mockctl.py devices CK_acme --generate 1 --start 60 --prefix A >/dev/null
SELECT dblink_exec('app', 'BEGIN') \g /dev/null
SELECT dblink_exec('app', $$UPDATE hosts SET updated_at = now() WHERE hardware_serial = 'A00000018'$$) \g /dev/null
SELECT dblink_send_query('run', 'CALL ade_sync_job()') \g /dev/null
SELECT ok(pg_temp.wait_for($$SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE query = 'CALL ade_sync_job()' AND wait_event_type = 'Lock')$$, 5),
  'the run waits to write hosts behind the application''s open transaction');
SELECT cmp_ok(pg_temp.app_ms(format('DELETE FROM teams WHERE id = %s', :t11)), '<', 1000,
  'in that transaction, deleting the token''s default team neither fails nor waits for the run');
SELECT lives_ok($$SELECT dblink_exec('app', 'COMMIT')$$, 'and commits');
SELECT ok(pg_temp.wait_for($$SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE query = 'CALL ade_sync_job()' AND state = 'active')$$, 10),
  'the run ends');
SELECT is(pg_temp.result('run'), 'CALL', 'without an error');
SELECT is((SELECT error FROM ade_sync_runs ORDER BY id DESC LIMIT 1), NULL, 'and its page applied');
SELECT is((SELECT team_id FROM hosts WHERE hardware_serial = 'A00000060'), NULL,
  'the new device''s host has no team (its token''s default team is gone)');

-- 12. The same with SELECT ade_sync(), one transaction: it takes hosts
-- before it claims the token, so it never holds the token while it waits
INSERT INTO teams (name) VALUES ('Doomed 12') RETURNING id AS t12 \gset
SELECT ade_set_default_teams(:acme, :t12, :t12, :t12) \g /dev/null
\! python3 test/mockctl.py devices CK_acme --generate 1 --start 61 --prefix A >/dev/null
SELECT dblink_exec('app', 'BEGIN') \g /dev/null
SELECT dblink_exec('app', $$UPDATE hosts SET updated_at = now() WHERE hardware_serial = 'A00000018'$$) \g /dev/null
SELECT dblink_send_query('run', 'SELECT count(*) FROM ade_sync()') \g /dev/null
SELECT ok(pg_temp.wait_for($$SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE query = 'SELECT count(*) FROM ade_sync()' AND wait_event_type = 'Lock')$$, 5),
  'SELECT ade_sync() waits for hosts behind the application''s open transaction');
SELECT cmp_ok(pg_temp.app_ms(format('DELETE FROM teams WHERE id = %s', :t12)), '<', 1000,
  'in that transaction, deleting the token''s default team neither fails nor waits for SELECT ade_sync()');
SELECT lives_ok($$SELECT dblink_exec('app', 'COMMIT')$$, 'and commits');
SELECT ok(pg_temp.wait_for($$SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE query = 'SELECT count(*) FROM ade_sync()' AND state = 'active')$$, 10),
  'the run ends');
SELECT is(pg_temp.result('run'), '1', 'without an error');
SELECT is((SELECT count(*)::int FROM hosts WHERE hardware_serial = 'A00000061' AND team_id IS NULL), 1,
  'and its device has a host, with no team');

-- 13. A statement that deletes a team takes hosts first: while a run holds
-- hosts, it waits before it locks any team or token row (so that a run
-- writing a host of that team never waits for it in turn)
INSERT INTO teams (name) VALUES ('Doomed 13') RETURNING id AS t13 \gset
SELECT dblink_exec('run', 'BEGIN') \g /dev/null
SELECT dblink_exec('run', 'LOCK TABLE hosts IN EXCLUSIVE MODE') \g /dev/null
SELECT dblink_send_query('app', format('DELETE FROM teams WHERE id = %s', :t13)) \g /dev/null
SELECT ok(pg_temp.wait_for($$SELECT EXISTS (SELECT 1 FROM pg_locks l JOIN pg_stat_activity a USING (pid)
                                            WHERE a.usename = 'mdm_app' AND l.relation = 'hosts'::regclass AND NOT l.granted)$$, 5),
  'DELETE FROM teams waits for hosts while ade holds it');
SELECT is((SELECT count(*)::int FROM pg_locks l JOIN pg_stat_activity a USING (pid)
            WHERE a.usename = 'mdm_app' AND l.locktype = 'tuple'), 0, 'and holds no row meanwhile');
SELECT dblink_exec('run', 'COMMIT') \g /dev/null
SELECT lives_ok($$SELECT pg_temp.result('app')$$, 'it goes on once ade is done');
SELECT is((SELECT count(*)::int FROM teams WHERE id = :t13), 0, 'and deletes the team');

-- 14. ABM answers an assignment while the application moves the device's
-- host to a team with another profile (the run holds nothing while ABM
-- answers): the device stays due, and the next run gives it the new team's
-- profile.  (Stress test: the answer used to clear the mark of the move.)
INSERT INTO teams (name) VALUES ('Moved 14') RETURNING id AS t14 \gset
SELECT ade_set_default_teams(:acme, NULL, NULL, NULL) \g /dev/null
SELECT ade_set_profile('{"profile_name": "Team 14", "url": "https://mdm.example.org/enroll14"}', team_id => :t14) \g /dev/null
CALL ade_sync_job();
\! python3 test/mockctl.py devices CK_acme --generate 1 --start 62 --prefix A >/dev/null
\! python3 test/mockctl.py fault '{"method": "PUT", "path": "/profile/devices", "hang_seconds": 2, "times": 1}' >/dev/null
SELECT dblink_send_query('run', 'CALL ade_sync_job()') \g /dev/null
SELECT ok(pg_temp.wait_for($$SELECT EXISTS (SELECT 1 FROM hosts WHERE hardware_serial = 'A00000062')
                                AND EXISTS (SELECT 1 FROM pg_stat_activity WHERE query = 'CALL ade_sync_job()' AND wait_event_type IS NULL AND state = 'active')$$, 5),
  'the run sends the new device''s assignment');
SELECT pg_sleep(0.3);
SELECT cmp_ok(pg_temp.app_ms(format($$UPDATE hosts SET team_id = %s WHERE hardware_serial = 'A00000062'$$, :t14)), '<', 1000,
  'moving its host to another team while ABM answers does not wait for the run');
SELECT ok(pg_temp.wait_for($$SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE query = 'CALL ade_sync_job()' AND state = 'active')$$, 10),
  'the run ends');
SELECT pg_temp.result('run') \g /dev/null
SELECT is((SELECT needs_assign FROM host_dep_assignments WHERE hardware_serial = 'A00000062'), true,
  'the answer for the old profile leaves the moved device due');
CALL ade_sync_job();
SELECT is((SELECT d.profile_uuid FROM host_dep_assignments d WHERE d.hardware_serial = 'A00000062'),
          (SELECT m.profile_uuid FROM ade_device_profiles(:acme) m WHERE m.team_id = :t14 AND m.platform = 'darwin'),
  'the next run gives it its new team''s profile');

-- 15. Under REPEATABLE READ, the application deletes a token's default team
-- after a run (which wrote the token's row, and put a new device's host in
-- that team) committed since its snapshot: the delete does not fail (a
-- foreign key's action would, on the token's row), and leaves no host in
-- the team it deleted (its own snapshot does not show the new host)
INSERT INTO teams (name) VALUES ('Doomed 15') RETURNING id AS t15 \gset
SELECT ade_set_default_teams(:acme, :t15, :t15, :t15) \g /dev/null
\! python3 test/mockctl.py devices CK_acme --generate 1 --start 63 --prefix A >/dev/null
SELECT dblink_exec('app', 'BEGIN ISOLATION LEVEL REPEATABLE READ') \g /dev/null
SELECT * FROM dblink('app', 'SELECT count(*) FROM hosts') AS x(n bigint) \g /dev/null
CALL ade_sync_job();
SELECT is((SELECT team_id FROM hosts WHERE hardware_serial = 'A00000063'), :'t15'::bigint,
  'a run puts the new device''s host in its token''s default team, after the application''s snapshot');
SELECT lives_ok(format($$SELECT dblink_exec('app', 'DELETE FROM teams WHERE id = %s')$$, :t15),
  'under REPEATABLE READ, deleting that team after the run does not fail');
SELECT lives_ok($$SELECT dblink_exec('app', 'COMMIT')$$, 'and commits');
SELECT is((SELECT count(*)::int FROM hosts WHERE team_id = :t15), 0,
  'no host is left in the deleted team, the one the run made since the snapshot neither');
SELECT is((SELECT array[macos_team_id, ios_team_id, ipados_team_id] FROM abm_tokens WHERE id = :acme),
  array[NULL, NULL, NULL]::bigint[], 'and the token names it as a default no more');

-- 16. A team given another id stays its tokens' default
INSERT INTO teams (name) VALUES ('Renumbered 16') RETURNING id AS t16 \gset
SELECT ade_set_default_teams(:acme, :t16, NULL, NULL) \g /dev/null
UPDATE teams SET id = id + 1000 WHERE id = :t16;
SELECT is((SELECT macos_team_id FROM abm_tokens WHERE id = :acme), :t16 + 1000::bigint,
  'a team given another id stays the default of the tokens that named it');
SELECT throws_ok(format('SELECT ade_set_default_teams(%s, %s, NULL, NULL)', :acme, :t16), '23503',
  format('team %s does not exist', :t16), 'and its old id is no team');
SELECT ade_set_default_teams(:acme, NULL, NULL, NULL) \g /dev/null

-- 17. One application connection deletes a live host of a team (a bulk
-- statement, still going), another deletes that team meanwhile: the delete
-- trigger makes the host again without waiting for the team's row (the team
-- being deleted, the host gets none), where a wait closed a circle with the
-- team's delete, which waits for the host's row (stress test: deadlock)
INSERT INTO teams (name) VALUES ('Doomed 17') RETURNING id AS t17 \gset
SELECT h.hardware_serial AS h17 FROM hosts h JOIN host_dep_assignments d ON d.host_id = h.id AND d.deleted_at IS NULL
 ORDER BY h.ctid LIMIT 1 \gset
SELECT hardware_serial AS later17 FROM hosts ORDER BY ctid DESC LIMIT 1 \gset
UPDATE hosts SET team_id = :t17 WHERE hardware_serial = :'h17';
SELECT dblink_send_query('app', format($$DELETE FROM hosts WHERE hardware_serial = %L
                                          OR (hardware_serial = %L AND pg_sleep(1.5)::text = 'never')$$, :'h17', :'later17')) \g /dev/null
SELECT pg_sleep(0.4);
SELECT cmp_ok(pg_temp.app_ms(format('DELETE FROM teams WHERE id = %s', :t17), 'app2'), '<', 5000,
  'deleting the team while another connection deletes its host does not fail');
SELECT lives_ok($$SELECT pg_temp.result('app')$$, 'nor does the delete of the host (no deadlock)');
SELECT is((SELECT count(*)::int FROM hosts WHERE hardware_serial = :'h17' AND team_id IS NULL), 1,
  'the live host is back, with no team (its team is gone)');

\! python3 test/mockctl.py faults-clear >/dev/null
SELECT dblink_disconnect('run'), dblink_disconnect('app'), dblink_disconnect('app2') \g /dev/null
SELECT * FROM finish();
DROP OWNED BY mdm_app;
DROP ROLE mdm_app;
