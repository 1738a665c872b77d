-- Reconcile (issue 22, items 6 to 8): devices ABM drops with no deleted
-- event (a release or a move made in ABM's portal) stop looking live.  A
-- full fetch beside the sync, with a cursor of its own, soft-deletes every
-- live device of the token it does not list (reason 'reconciled'), counted
-- in ade_sync_runs; it runs every ade.reconcile_interval or when asked
-- (ade_request_reconcile(), refused within ade.min_refetch_interval),
-- spreads over runs within ade.max_sync_seconds, and never loses an event
-- of the sync cursor.  Then the migration deadline.
\ir setup.psql
\! test/add-token.sh Acme CK_rc
\! test/add-token.sh Beta CK_rc2
SELECT id AS acme FROM abm_tokens WHERE consumer_key = 'CK_rc' \gset
SELECT id AS beta FROM abm_tokens WHERE consumer_key = 'CK_rc2' \gset
\! python3 test/mockctl.py devices CK_rc --generate 60 --prefix R >/dev/null
\! python3 test/mockctl.py devices CK_rc2 --generate 3 --prefix Z >/dev/null
SET ade.page_size = 20;
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT count(*) FROM ade_sync() \g /dev/null
CREATE FUNCTION pg_temp.state_of(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE q;
  RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
  RETURN SQLSTATE || ' ' || SQLERRM;
END $$;
SELECT plan(43);

SELECT is((SELECT count(*)::int FROM host_dep_assignments WHERE deleted_at IS NULL AND abm_token_id = :acme), 60, 'the token holds 60 live devices');
SELECT ok((SELECT reconciled_at IS NOT NULL FROM abm_tokens WHERE id = :acme), 'its first full fetch counts as its first reconcile');

-- no reconcile is due: a run does no full fetch
\! python3 test/mockctl.py log-clear
SELECT count(*) FROM ade_sync(:acme) \g /dev/null
\set n `python3 test/mockctl.py logcount 'POST /server/devices'`
SELECT is(:'n'::int, 0, 'a run with no reconcile due fetches nothing');

-- ABM drops three devices with no event; a sync does not see it
\! python3 test/mockctl.py devices CK_rc --drop R00000001,R00000030,R00000059 >/dev/null
SELECT count(*) FROM ade_sync(:acme) \g /dev/null
SELECT is((SELECT count(*)::int FROM host_dep_assignments WHERE deleted_at IS NULL AND abm_token_id = :acme), 60,
  'a sync does not see devices ABM dropped with no event');

-- asked for: the next run reconciles
SELECT ade_request_reconcile(:acme) \g /dev/null
SELECT ok((SELECT reconcile = 'asked for: the next run starts it' FROM ade_status WHERE token_id = :acme), 'ade_status says a reconcile was asked for');
SELECT ok(pg_temp.state_of(format('SELECT ade_request_reconcile(%s)', :acme)) ~ '^55000 a reconcile of abm token \d+ was asked for 00:00:00 ago; ask again in 01:00:00$',
  'asked again at once: refused with the time left');
SELECT ok(pg_temp.state_of('SELECT ade_request_reconcile(NULL)') LIKE '22004%', 'a NULL token is an error');
SELECT ok(pg_temp.state_of('SELECT ade_request_reconcile(-5)') LIKE 'P0002%', 'an unknown token is an error');
SELECT cursor AS cur0 FROM abm_tokens WHERE id = :acme \gset
CREATE TEMP TABLE r1 AS SELECT * FROM ade_sync(:acme);
SELECT is((SELECT error FROM r1), NULL, 'the reconcile run succeeds');
SELECT results_eq($$SELECT hardware_serial, deleted_reason FROM host_dep_assignments WHERE deleted_at IS NOT NULL ORDER BY 1$$,
  $$VALUES ('R00000001', 'reconciled'), ('R00000030', 'reconciled'), ('R00000059', 'reconciled')$$,
  'the devices ABM no longer lists are soft-deleted, reason reconciled');
SELECT is((SELECT reconciled FROM ade_sync_runs WHERE token_id = :acme ORDER BY id DESC LIMIT 1), 3, 'ade_sync_runs counts them');
SELECT ok((SELECT note LIKE '%reconcile done: 3 devices%' FROM ade_sync_runs WHERE token_id = :acme ORDER BY id DESC LIMIT 1), 'and its note says so');
SELECT is((SELECT count(*)::int FROM hosts WHERE hardware_serial IN ('R00000001', 'R00000030', 'R00000059')), 3, 'their host rows stay');
SELECT is((SELECT cursor FROM abm_tokens WHERE id = :acme), :'cur0', 'the sync cursor is untouched by the reconcile');
SELECT is((SELECT (reconcile, devices_reconciled) FROM ade_status WHERE token_id = :acme), (NULL::text, 3::bigint), 'ade_status: none under way, 3 reconciled');
SELECT is((SELECT count(*)::int FROM host_dep_assignments WHERE abm_token_id = :beta AND deleted_at IS NULL), 3, 'the other token is untouched');
SET ade.min_refetch_interval = 0;
SELECT is(pg_temp.state_of(format('SELECT ade_request_reconcile(%s)', :acme)), 'ok', 'ade.min_refetch_interval = 0 lets it be asked again');
UPDATE abm_tokens SET reconcile_due = false WHERE id = :acme;
RESET ade.min_refetch_interval;

-- a device soft-deleted this way and seen again comes back like any added device
\! printf '%s' '[{"serial_number": "R00000030", "device_family": "Mac"}]' > "$ADE_TEST_TMP/rc_add.json" && python3 test/mockctl.py devices CK_rc --add-json "$ADE_TEST_TMP/rc_add.json" >/dev/null
SELECT count(*) FROM ade_sync(:acme) \g /dev/null
SELECT is((SELECT (deleted_at, deleted_reason) FROM host_dep_assignments WHERE hardware_serial = 'R00000030'),
  (NULL::timestamptz, NULL::text), 'a reconciled device ABM adds again is live again, its reason gone');

-- by itself every ade.reconcile_interval, spread over runs, with the sync's
-- events applied meanwhile (ABM slow: 300 ms a request, 20 devices a page,
-- a run of 1 s)
\! python3 test/mockctl.py devices CK_rc --drop R00000002,R00000003 >/dev/null
UPDATE abm_tokens SET reconciled_at = now() - interval '1441 minutes' WHERE id = :acme;
\! python3 test/mockctl.py latency 300 >/dev/null
SET ade.max_sync_seconds = 1;
SELECT max(id) AS r2id FROM ade_sync_runs \gset
CREATE TEMP TABLE r2 AS SELECT * FROM ade_sync(:acme);
SELECT ok((SELECT reconcile LIKE 'under way since %' FROM ade_status WHERE token_id = :acme), 'a reconcile due by ade.reconcile_interval started, and is under way');
SELECT ok((SELECT reconcile_cursor IS NOT NULL FROM abm_tokens WHERE id = :acme), 'with a cursor of its own');
SELECT is((SELECT count(*)::int FROM host_dep_assignments WHERE hardware_serial IN ('R00000002', 'R00000003') AND deleted_at IS NULL), 2,
  'nothing is soft-deleted before its last page');
-- meanwhile ABM deletes one device (an event) and adds one
\! python3 test/mockctl.py devices CK_rc --delete R00000010 --generate 1 --prefix NEW >/dev/null
SELECT count(*) FROM ade_sync(:acme) \g /dev/null
SELECT count(*) FROM ade_sync(:acme) \g /dev/null
SELECT count(*) FROM ade_sync(:acme) \g /dev/null
SELECT count(*) FROM ade_sync(:acme) \g /dev/null
RESET ade.max_sync_seconds;
\! python3 test/mockctl.py latency 0 >/dev/null
SELECT count(*) FROM ade_sync(:acme) \g /dev/null
SELECT ok((SELECT reconcile IS NULL AND reconciled_at > now() - interval '1 minute' FROM ade_status WHERE token_id = :acme), 'the reconcile ended over several runs');
SELECT ok((SELECT min(id) FROM ade_sync_runs WHERE token_id = :acme AND note LIKE '%reconcile under way%' AND id > :'r2id')
           < (SELECT max(id) FROM ade_sync_runs WHERE token_id = :acme AND note LIKE '%reconcile done%'), 'spread over runs');
SELECT results_eq($$SELECT hardware_serial, deleted_reason FROM host_dep_assignments WHERE hardware_serial IN ('R00000002', 'R00000003', 'R00000010') ORDER BY 1$$,
  $$VALUES ('R00000002', 'reconciled'), ('R00000003', 'reconciled'), ('R00000010', 'deleted')$$,
  'dropped devices reconciled; the device ABM deleted meanwhile deleted by its event');
SELECT ok((SELECT deleted_at IS NULL FROM host_dep_assignments WHERE hardware_serial = 'NEW00000000'), 'the device ABM added meanwhile is live');
\set truth `python3 test/mockctl.py truth`
SELECT is((SELECT jsonb_object_agg(d.hardware_serial, t.consumer_key ORDER BY d.hardware_serial)
             FROM host_dep_assignments d JOIN abm_tokens t ON t.id = d.abm_token_id WHERE d.deleted_at IS NULL),
          :'truth'::jsonb, 'the live assignments are exactly ABM''s devices');

-- a device whose stored record is newer than the reconcile's page (ABM's
-- clock ahead of ours, or an event of the same second) is listed all the
-- same: not soft-deleted
\! printf '%s' '[{"serial_number": "R00000050", "color": "RED"}]' > "$ADE_TEST_TMP/rc_fut.json" && python3 test/mockctl.py devices CK_rc --modify-json "$ADE_TEST_TMP/rc_fut.json" --op-date "$(date -u -d '+10 min' +%Y-%m-%dT%H:%M:%SZ)" >/dev/null
SELECT count(*) FROM ade_sync(:acme) \g /dev/null
SELECT ok((SELECT op_date > now() + interval '5 min' FROM host_dep_assignments WHERE hardware_serial = 'R00000050'), 'a device with a record dated ahead of the reconcile');
SET ade.min_refetch_interval = 0;
SELECT ade_request_reconcile(:acme) \g /dev/null
RESET ade.min_refetch_interval;
SELECT count(*) FROM ade_sync(:acme) \g /dev/null
SELECT is((SELECT (deleted_at, reconciled_at > now() - interval '1 minute') FROM host_dep_assignments, abm_tokens
            WHERE hardware_serial = 'R00000050' AND abm_tokens.id = :acme), (NULL::timestamptz, true),
  'is listed by the reconcile, and stays live');

-- off: ade.reconcile_interval = 0
UPDATE abm_tokens SET reconciled_at = now() - interval '30 days' WHERE id = :acme;
SET ade.reconcile_interval = 0;
\! python3 test/mockctl.py log-clear
SELECT count(*) FROM ade_sync(:acme) \g /dev/null
\set n `python3 test/mockctl.py logcount 'POST /server/devices'`
SELECT is(:'n'::int, 0, 'ade.reconcile_interval = 0: no reconcile by itself');
RESET ade.reconcile_interval;
UPDATE abm_tokens SET reconciled_at = now() WHERE id = :acme;

-- a reconcile keeps to its token's share of the run: a slow full list
-- (ABM hangs the reconcile's page) never holds up the next token's sync
\! python3 test/mockctl.py devices CK_rc2 --generate 1 --prefix FAIR >/dev/null
SET ade.min_refetch_interval = 0;
SELECT ade_request_reconcile(:acme) \g /dev/null
RESET ade.min_refetch_interval;
\! python3 test/mockctl.py fault '{"path": "/server/devices", "consumer_key": "CK_rc", "hang_seconds": 5, "times": 1}' >/dev/null
SET ade.max_sync_seconds = 2;
CREATE TEMP TABLE r5 AS SELECT * FROM ade_sync();
RESET ade.max_sync_seconds;
\! python3 test/mockctl.py faults-clear >/dev/null
SELECT is((SELECT (added, error) FROM r5 WHERE token_id = :beta), (1, NULL::text), 'the next token''s sync has its share: its new device is in');
SELECT ok((SELECT reconcile IS NOT NULL FROM ade_status WHERE token_id = :acme), 'the reconcile waits for the next run');
SELECT count(*) FROM ade_sync(:acme) \g /dev/null
SELECT ok((SELECT reconcile IS NULL FROM ade_status WHERE token_id = :acme), 'which ends it');

-- what a reconcile under way has not listed yet is not "listed" because
-- something else wrote its row meanwhile (a hold, an assignment answer)
\! python3 test/mockctl.py fault '{"path": "/server/devices", "consumer_key": "CK_rc", "skip": 1, "status": 500, "body": "INTERNAL_ERROR", "times": 8}' >/dev/null
SET ade.min_refetch_interval = 0;
SELECT ade_request_reconcile(:acme) \g /dev/null
RESET ade.min_refetch_interval;
SET ade.max_retries = 0;
SELECT count(*) FROM ade_sync(:acme) \g /dev/null
RESET ade.max_retries;
\! python3 test/mockctl.py faults-clear >/dev/null
SELECT ok((SELECT reconcile LIKE 'under way%' FROM ade_status WHERE token_id = :acme), 'a reconcile stopped after its first page');
\! python3 test/mockctl.py devices CK_rc --drop R00000055 >/dev/null
SELECT ade_hold_device('R00000055') \g /dev/null
SELECT count(*) FROM ade_sync(:acme) \g /dev/null
SELECT is((SELECT deleted_reason FROM host_dep_assignments WHERE hardware_serial = 'R00000055'), 'reconciled',
  'a device ABM dropped meanwhile is soft-deleted, though a hold wrote its row during the reconcile');
SELECT ade_clear_device_profile('R00000055') \g /dev/null

-- a reconcile asked for while one is under way (after a release that may
-- have been done, say) is a reconcile of its own: the one under way does
-- not answer for it
\! python3 test/mockctl.py fault '{"path": "/server/devices", "consumer_key": "CK_rc", "skip": 1, "status": 500, "body": "INTERNAL_ERROR", "times": 8}' >/dev/null
SET ade.min_refetch_interval = 0;
SELECT ade_request_reconcile(:acme) \g /dev/null
SET ade.max_retries = 0;
SELECT count(*) FROM ade_sync(:acme) \g /dev/null
RESET ade.max_retries;
\! python3 test/mockctl.py faults-clear >/dev/null
SELECT ade_request_reconcile(:acme) \g /dev/null
RESET ade.min_refetch_interval;
\! python3 test/mockctl.py devices CK_rc --drop R00000012 >/dev/null
SELECT count(*) FROM ade_sync(:acme) \g /dev/null
SELECT ok((SELECT reconcile_due FROM abm_tokens WHERE id = :acme), 'the reconcile under way ended; the one asked meanwhile is still due');
SELECT count(*) FROM ade_sync(:acme) \g /dev/null
SELECT is((SELECT deleted_reason FROM host_dep_assignments WHERE hardware_serial = 'R00000012'), 'reconciled',
  'and the next run does it');

-- a device added by an event and dropped, both before a reconcile, in
-- one run of one transaction (SELECT ade_sync(): now() is the same for
-- the event and the reconcile): soft-deleted all the same
\! python3 test/mockctl.py devices CK_rc --generate 1 --prefix LATE >/dev/null
\! python3 test/mockctl.py devices CK_rc --drop LATE00000000 >/dev/null
SET ade.min_refetch_interval = 0;
SELECT ade_request_reconcile(:acme) \g /dev/null
RESET ade.min_refetch_interval;
SELECT count(*) FROM ade_sync(:acme) \g /dev/null
SELECT is((SELECT deleted_reason FROM host_dep_assignments WHERE hardware_serial = 'LATE00000000'), 'reconciled',
  'a device added and dropped before the reconcile, in the same transaction, is soft-deleted');

-- a reconcile that ends in a transaction begun before it started (another
-- session's run started it) soft-deletes nothing ABM lists
CREATE EXTENSION IF NOT EXISTS dblink;
SELECT format('host=%s port=%s dbname=%s user=%s', split_part(current_setting('unix_socket_directories'), ',', 1),
              current_setting('port'), current_database(), current_user) AS cs \gset
SELECT dblink_connect('early', :'cs') \g /dev/null
SELECT dblink_exec('early', 'SET client_min_messages = error') \g /dev/null
SELECT dblink_exec('early', 'BEGIN') \g /dev/null
SELECT * FROM dblink('early', 'SELECT now()') AS x(t timestamptz) \g /dev/null
SELECT pg_sleep(0.2) \g /dev/null
\! python3 test/mockctl.py fault '{"path": "/server/devices", "consumer_key": "CK_rc", "skip": 1, "status": 500, "body": "INTERNAL_ERROR", "times": 8}' >/dev/null
SET ade.min_refetch_interval = 0;
SELECT ade_request_reconcile(:acme) \g /dev/null
RESET ade.min_refetch_interval;
SET ade.max_retries = 0;
SELECT count(*) FROM ade_sync(:acme) \g /dev/null
RESET ade.max_retries;
\! python3 test/mockctl.py faults-clear >/dev/null
SELECT * FROM dblink('early', 'SELECT count(*) FROM ade_sync(' || :acme || ')') AS x(n bigint) \g /dev/null
SELECT dblink_exec('early', 'COMMIT') \g /dev/null
SELECT dblink_disconnect('early') \g /dev/null
SELECT ok((SELECT reconcile IS NULL FROM ade_status WHERE token_id = :acme), 'the reconcile ended in the transaction begun before it');
\set truth `python3 test/mockctl.py truth`
SELECT is((SELECT jsonb_object_agg(d.hardware_serial, t.consumer_key ORDER BY d.hardware_serial)
             FROM host_dep_assignments d JOIN abm_tokens t ON t.id = d.abm_token_id WHERE d.deleted_at IS NULL),
          :'truth'::jsonb, 'and soft-deleted nothing ABM lists: the live assignments are ABM''s devices');

-- a token removed and added back (restored in place, its cursor kept)
-- still reconciles by itself
\set p7m `base64 -w0 "$ADE_TEST_TMP/CK_rc2.p7m"`
SELECT ade_remove_token(:beta) \g /dev/null
SELECT ade_add_token(decode(:'p7m', 'base64')) \g /dev/null
SELECT count(*) FROM ade_sync(:beta) \g /dev/null
\! python3 test/mockctl.py devices CK_rc2 --drop Z00000001 >/dev/null
UPDATE abm_tokens SET created_at = now() - interval '2 days', reconciled_at = NULL WHERE id = :beta;
SELECT count(*) FROM ade_sync(:beta) \g /dev/null
SELECT is((SELECT deleted_reason FROM host_dep_assignments WHERE hardware_serial = 'Z00000001'), 'reconciled',
  'a token added back after its removal reconciles by ade.reconcile_interval too');

-- migration deadline: from the device's record, queryable, counted
\! printf '%s' '[{"serial_number": "R00000040", "mdm_migration_deadline": "'"$(date -u -d '+3 days' +%Y-%m-%dT%H:%M:%SZ)"'"}, {"serial_number": "R00000041", "mdm_migration_deadline": "'"$(date -u -d '+30 days' +%Y-%m-%dT%H:%M:%SZ)"'"}, {"serial_number": "R00000042", "mdm_migration_deadline": "not a date"}]' > "$ADE_TEST_TMP/rc_mig.json" && python3 test/mockctl.py devices CK_rc --modify-json "$ADE_TEST_TMP/rc_mig.json" >/dev/null
CREATE TEMP TABLE r3 AS SELECT * FROM ade_sync(:acme);
SELECT is((SELECT modified FROM r3), 3, 'the three records apply (an unreadable deadline is no error)');
SELECT results_eq($$SELECT hardware_serial FROM host_dep_assignments WHERE mdm_migration_deadline IS NOT NULL ORDER BY mdm_migration_deadline$$,
  $$VALUES ('R00000040'), ('R00000041')$$, 'mdm_migration_deadline is a column to sort on');
SELECT is((SELECT migration_due_7_days FROM ade_status WHERE token_id = :acme), 1::bigint, 'ade_status counts the devices due in the next 7 days');

SELECT * FROM finish();
