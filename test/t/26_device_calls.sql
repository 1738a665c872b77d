-- The device calls of issue 22, against the mock ABM: details (POST
-- /devices), profile removal (DELETE /profile/devices), release (POST
-- /devices/disown), activation lock escrow (POST /device/activationlock):
-- per-serial answers returned and stored, through the token that holds
-- each serial, batches of at most 1000, errors in words, a pause ABM asks
-- for kept, the escrow key nowhere, and the application's statements while
-- a call is open.
\ir setup.psql
CREATE EXTENSION IF NOT EXISTS dblink;
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'mdm_app') THEN
    EXECUTE 'DROP OWNED BY mdm_app'; EXECUTE 'DROP ROLE mdm_app';
  END IF;
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'nobody_dc') THEN
    EXECUTE 'DROP OWNED BY nobody_dc'; EXECUTE 'DROP ROLE nobody_dc';
  END IF;
END $$;
CREATE ROLE mdm_app LOGIN;
GRANT ade_reader TO mdm_app;
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON hosts TO mdm_app;
GRANT USAGE ON SEQUENCE hosts_id_seq TO mdm_app;
CREATE ROLE nobody_dc LOGIN;
SELECT format('host=%s port=%s dbname=%s', split_part(current_setting('unix_socket_directories'), ',', 1),
              current_setting('port'), current_database()) AS cs \gset
SELECT dblink_connect('call', :'cs' || ' user=' || current_user) \g /dev/null
SELECT dblink_connect('app', :'cs' || ' user=mdm_app') \g /dev/null
SELECT dblink_exec('call', 'SET client_min_messages = error') \g /dev/null
SELECT dblink_exec('app', $$SET statement_timeout = '5s'$$) \g /dev/null
CREATE FUNCTION pg_temp.app_ms(q text) RETURNS int LANGUAGE plpgsql AS $$
DECLARE t0 timestamptz := clock_timestamp();
BEGIN
  PERFORM dblink_exec('app', q);
  RETURN (extract(epoch FROM clock_timestamp() - t0) * 1000)::int;
EXCEPTION WHEN OTHERS THEN
  RAISE WARNING 'as mdm_app: %', SQLERRM;
  RETURN 2147483647;
END $$;
-- the SQLSTATE a statement raises, or 'ok'
CREATE FUNCTION pg_temp.state_of(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE q;
  RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
  RETURN SQLSTATE;
END $$;
CREATE FUNCTION pg_temp.message_of(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE q;
  RETURN NULL;
EXCEPTION WHEN OTHERS THEN
  RETURN SQLERRM;
END $$;

\! test/add-token.sh Acme CK_dc
\! test/add-token.sh Beta CK_dc2
SELECT id AS acme FROM abm_tokens WHERE consumer_key = 'CK_dc' \gset
SELECT id AS beta FROM abm_tokens WHERE consumer_key = 'CK_dc2' \gset
\! python3 test/mockctl.py devices CK_dc --generate 1600 --prefix D >/dev/null
\! python3 test/mockctl.py devices CK_dc2 --generate 3 --prefix B >/dev/null
-- B00000002 is Beta's at ABM, but this database does not know it yet
SELECT count(*) FROM ade_sync(:acme) \g /dev/null
SELECT count(*) FROM ade_sync(:acme) \g /dev/null
SET ade.max_retries = 0;
SET ade.retry_backoff = '10ms';
SET ade.max_retry_wait = '1s';
SELECT plan(90);

-- ---- details
\! python3 test/mockctl.py log-clear
\! printf '%s' '[{"serial_number": "D00000003", "color": "GOLD", "mdm_migration_deadline": "2030-01-02T03:04:05Z"}]' > "$ADE_TEST_TMP/dc_mod.json" && python3 test/mockctl.py devices CK_dc --modify-json "$ADE_TEST_TMP/dc_mod.json" >/dev/null
CREATE TEMP TABLE d1 AS SELECT * FROM ade_device_details(ARRAY['D00000003', 'D00000004', 'NOSUCH1', 'B00000002', 'D00000003']);
SELECT is((SELECT count(*)::int FROM d1), 4, 'details: one row per distinct serial');
SELECT is((SELECT (token_id, response_status, device->>'color') FROM d1 WHERE serial = 'D00000003'),
  (:acme::bigint, 'SUCCESS'::text, 'GOLD'::text), 'a held device: its token, SUCCESS and ABM''s record as it is now');
SELECT is((SELECT device->>'color' FROM host_dep_assignments WHERE hardware_serial = 'D00000003'), 'GOLD',
  'the stored record of a device held here is refreshed');
SELECT is((SELECT mdm_migration_deadline FROM host_dep_assignments WHERE hardware_serial = 'D00000003'),
  '2030-01-02 03:04:05+00'::timestamptz, 'and its migration deadline with it');
SELECT is((SELECT (token_id, response_status) FROM d1 WHERE serial = 'NOSUCH1'),
  (NULL::bigint, 'NOT_ACCESSIBLE'::text), 'a serial no token reaches: NOT_ACCESSIBLE, no token');
SELECT is((SELECT (token_id, response_status) FROM d1 WHERE serial = 'B00000002'),
  (:beta::bigint, 'SUCCESS'::text), 'a serial nobody here holds is asked of every token: the one that knows it answers');
SELECT ok(NOT EXISTS (SELECT 1 FROM host_dep_assignments WHERE hardware_serial = 'B00000002'),
  'and details add no device this database does not hold');
\set n `python3 test/mockctl.py logcount 'POST /devices'`
SELECT is(:'n'::int, 2, 'one POST /devices per token: the holder''s serials and the unheld ones together');
SELECT is((SELECT count(*)::int FROM ade_device_actions WHERE action = 'details'), 6,
  'every answer is kept in ade_device_actions (a serial asked of two tokens: two)');

-- 1000+ serials: batches of at most 1000
\! python3 test/mockctl.py log-clear
CREATE TEMP TABLE d2 AS
  SELECT * FROM ade_device_details(ARRAY(SELECT format('D%s', lpad(i::text, 8, '0')) FROM generate_series(0, 1499) i));
SELECT is((SELECT count(*)::int FROM d2 WHERE response_status = 'SUCCESS' AND token_id = :acme), 1500,
  'details of 1500 held serials: 1500 answers');
\set n `python3 test/mockctl.py logcount 'POST /devices'`
SELECT is(:'n'::int, 2, 'in two calls: at most 1000 serials each');
SELECT is(ade_check_serials('{}', 'serials'), '{}'::text[], 'an empty list is no error');
SELECT is((SELECT count(*)::int FROM ade_device_details('{}')), 0, 'and asks nothing');

-- bad input changes nothing and sends nothing
\! python3 test/mockctl.py log-clear
SELECT is(pg_temp.state_of($$SELECT * FROM ade_device_details(NULL)$$), '22004', 'a NULL list is an error (22004)');
SELECT is(pg_temp.state_of($$SELECT * FROM ade_device_details(ARRAY['D00000001', NULL])$$), '22023', 'a NULL serial is an error (22023)');
SELECT is(pg_temp.message_of($$SELECT * FROM ade_device_details(ARRAY['D1'' OR 1=1'])$$),
  'not a device serial number: ''D1'''' OR 1=1''', 'a serial with a quote is refused in words');
SELECT is(pg_temp.state_of($$SELECT * FROM ade_device_details(ARRAY[repeat('X', 65)])$$), '22023', 'so is one of 65 characters');
\set n `python3 test/mockctl.py logcount 'POST /devices'`
SELECT is(:'n'::int, 0, 'none of them reached ABM');

-- errors: none answered raises; a batch that failed after others is a WARNING
\! python3 test/mockctl.py fault '{"path": "/devices", "method": "POST", "status": 500, "body": "INTERNAL_ERROR", "times": 1}' >/dev/null
SELECT max(call_id) AS c0 FROM ade_device_actions \gset
SELECT ok(pg_temp.message_of($$SELECT * FROM ade_device_details(ARRAY['D00000005'])$$) LIKE 'ABM failed POST /devices (HTTP 500)%',
  'a call ABM fails is an error that says so');
SELECT is((SELECT count(*)::int FROM ade_device_actions WHERE call_id > :c0), 0, 'and keeps nothing');
\! python3 test/mockctl.py fault '{"path": "/devices", "method": "POST", "skip": 1, "status": 500, "body": "INTERNAL_ERROR", "times": 1}' >/dev/null
SET client_min_messages = error;
CREATE TEMP TABLE d3 AS
  SELECT * FROM ade_device_details(ARRAY(SELECT format('D%s', lpad(i::text, 8, '0')) FROM generate_series(0, 1199) i));
SET client_min_messages = warning;
SELECT is((SELECT count(*)::int FROM d3 WHERE response_status = 'SUCCESS'), 1000, 'the first batch''s answers are returned');
SELECT is((SELECT count(*)::int FROM d3 WHERE response_status IS NULL), 200, 'the failed batch''s serials: no response_status');
SELECT ok((SELECT bool_and(error LIKE 'ABM failed POST /devices (HTTP 500)%') FROM ade_device_actions a
            WHERE a.call_id = (SELECT max(call_id) FROM ade_device_actions) AND a.response_status IS NULL),
  'ade_device_actions keeps why they got none');

-- a serial missing from ABM's answer counts as FAILED
\! python3 test/mockctl.py assign CK_dc D00000006=OMIT >/dev/null
SELECT is((SELECT response_status FROM ade_device_details(ARRAY['D00000006'])), 'FAILED', 'a serial missing from the answer: FAILED');
\! python3 test/mockctl.py assign CK_dc D00000006= >/dev/null

-- a 429 with a long Retry-After: the pause is kept, the next call is not sent
\! python3 test/mockctl.py fault '{"path": "/devices", "method": "POST", "status": 429, "body": "TOO_MANY_REQUESTS", "headers": {"Retry-After": "600"}, "times": 1}' >/dev/null
SET client_min_messages = error;
CREATE TEMP TABLE d4 AS SELECT * FROM ade_device_details(ARRAY['D00000007']);
SET client_min_messages = warning;
SELECT is((SELECT response_status FROM d4), NULL, 'details ABM paused: no answer, no error');
SELECT is((SELECT request FROM ade_rate_limits WHERE token_id = :acme AND paused_until > now() + interval '590 s'), 'details',
  'the pause is stored for the token''s details calls');
\! python3 test/mockctl.py log-clear
SET client_min_messages = error;
SELECT count(*) FROM ade_device_details(ARRAY['D00000007']) \g /dev/null
SET client_min_messages = warning;
\set n `python3 test/mockctl.py logcount 'POST /devices'`
SELECT is(:'n'::int, 0, 'while it lasts, no details request is sent');
SELECT is((SELECT count(*)::int FROM ade_remove_profile(ARRAY['D00000008']) WHERE response_status = 'SUCCESS'), 1,
  'another kind of call of the token goes on');
DELETE FROM ade_rate_limits;

-- ---- remove a profile
SELECT ade_set_profile('{"profile_name": "Std", "url": "https://mdm.example.com/enroll"}') \g /dev/null
SELECT count(*) FROM ade_sync(:acme) \g /dev/null
SELECT count(*) FROM ade_sync(:acme) \g /dev/null
\! python3 test/mockctl.py assign CK_dc D00000011=NOT_ACCESSIBLE,D00000012=FAILED >/dev/null
CREATE TEMP TABLE r1 AS SELECT * FROM ade_remove_profile(ARRAY['D00000010', 'D00000011', 'D00000012']);
SELECT results_eq($$SELECT serial, response_status FROM r1 ORDER BY 1$$,
  $$VALUES ('D00000010', 'SUCCESS'), ('D00000011', 'NOT_ACCESSIBLE'), ('D00000012', 'FAILED')$$,
  'remove: each serial''s answer');
SELECT is((SELECT (profile_uuid, assign_profile_response) FROM host_dep_assignments WHERE hardware_serial = 'D00000010'),
  (NULL::text, NULL::text), 'a removed device holds no profile');
SELECT results_eq($$SELECT serial, hold, reason FROM ade_device_overrides ORDER BY 1$$,
  $$VALUES ('D00000008', true, 'profile removed'), ('D00000010', true, 'profile removed')$$,
  'and is held out of automatic assignment; the others are not');
\! python3 test/mockctl.py log-clear
CREATE TEMP TABLE r2 AS SELECT * FROM ade_sync(:acme);
SELECT is((SELECT modified FROM r2), 1, 'the next sync hears ABM''s record of the removal');
\set n `python3 test/mockctl.py logcount 'PUT /profile/devices'`
SELECT is(:'n'::int, 0, 'and does not assign the device again on its own');
SELECT is((SELECT needs_assign FROM host_dep_assignments WHERE hardware_serial = 'D00000010'), false, 'nor counts it pending');
SELECT ade_clear_device_profile('D00000010') \g /dev/null
SELECT is((SELECT assigned FROM ade_sync(:acme)), 1, 'ade_clear_device_profile(): the next run assigns it its profile');
\! python3 test/mockctl.py assign CK_dc D00000011=,D00000012= >/dev/null
\! python3 test/mockctl.py log-clear
SELECT is(pg_temp.message_of($$SELECT * FROM ade_remove_profile(ARRAY['D00000010', 'B00000002', 'ZZ1'])$$),
  '2 of the serials are not held by this database: B00000002, ZZ1', 'remove: serials not held here are refused by name');
\set n `python3 test/mockctl.py logcount 'DELETE /profile/devices'`
SELECT is(:'n'::int, 0, 'and nothing is sent, not even for the serial held here');

-- ---- release
\! python3 test/mockctl.py log-clear
SELECT is(pg_temp.message_of($$SELECT * FROM ade_release_devices(ARRAY['D00000020'])$$),
  'releasing devices takes them out of the organisation at Apple for good; nothing was sent', 'release without confirm is refused');
SELECT is(pg_temp.state_of($$SELECT * FROM ade_release_devices(ARRAY['D00000020'], false)$$), '55000', 'so with confirm => false');
SELECT is(pg_temp.state_of($$SELECT * FROM ade_release_devices(ARRAY['D00000020'], NULL)$$), '55000', 'and with a NULL confirm');
SELECT is(pg_temp.state_of($$SELECT * FROM ade_release_devices(ARRAY['B00000002'], confirm => true)$$), 'P0002',
  'a device this database does not hold is refused, confirmed or not');
\set n `python3 test/mockctl.py logcount 'POST /devices/disown'`
SELECT is(:'n'::int, 0, 'none of them reached ABM');
SELECT id AS h20 FROM hosts WHERE hardware_serial = 'D00000020' \gset
\! python3 test/mockctl.py assign CK_dc D00000022=FAILED >/dev/null
CREATE TEMP TABLE x1 AS SELECT * FROM ade_release_devices(ARRAY['D00000020', 'D00000021', 'D00000022'], confirm => true);
SELECT results_eq($$SELECT serial, token_id, response_status FROM x1 ORDER BY 1$$,
  format($$VALUES ('D00000020', %1$s::bigint, 'SUCCESS'), ('D00000021', %1$s, 'SUCCESS'), ('D00000022', %1$s, 'FAILED')$$, :acme),
  'release: each serial''s answer');
SELECT results_eq($$SELECT hardware_serial, deleted_at IS NOT NULL, deleted_reason FROM host_dep_assignments
                     WHERE hardware_serial IN ('D00000020', 'D00000021', 'D00000022') ORDER BY 1$$,
  $$VALUES ('D00000020', true, 'released'), ('D00000021', true, 'released'), ('D00000022', false, NULL)$$,
  'a released device''s assignment is soft-deleted (reason released); a FAILED one stays live');
SELECT is((SELECT id FROM hosts WHERE hardware_serial = 'D00000020'), :h20::bigint, 'its host row stays, with its id');
DELETE FROM hosts WHERE hardware_serial = 'D00000020';
SELECT ok(NOT EXISTS (SELECT 1 FROM hosts WHERE hardware_serial = 'D00000020'), 'and can then be deleted for good');
SELECT is((SELECT (added, deleted) FROM ade_sync(:acme)), (0, 0), 'the next sync brings nothing back (ABM sends no event for a release)');
\! python3 test/mockctl.py assign CK_dc D00000022= >/dev/null

-- a release whose answer was lost is not sent again (the second answer,
-- NOT_ACCESSIBLE, would hide that the first was done): kept as "may have
-- been released", and the token reconciles on its next run
\! python3 test/mockctl.py log-clear
\! python3 test/mockctl.py fault '{"path": "/devices/disown", "cut_body": true, "times": 1}' >/dev/null
SET ade.max_retries = 3;
SET client_min_messages = error;
CREATE TEMP TABLE x2 AS SELECT * FROM ade_release_devices(ARRAY['D00000023', 'D00000024'], confirm => true);
SET client_min_messages = warning;
RESET ade.max_retries;
SET ade.max_retries = 0;
\set n `python3 test/mockctl.py logcount 'POST /devices/disown'`
SELECT is(:'n'::int, 1, 'a release whose answer was cut is not sent again');
SELECT is((SELECT count(*)::int FROM x2 WHERE response_status IS NULL), 2, 'its devices have no response_status, not NOT_ACCESSIBLE');
SELECT ok((SELECT bool_and(error LIKE 'ABM may have released these devices%') FROM ade_device_actions
            WHERE hardware_serial IN ('D00000023', 'D00000024') AND action = 'release'), 'ade_device_actions says they may have been released');
SELECT is((SELECT reconcile_due FROM abm_tokens WHERE id = :acme), true, 'and the token reconciles on its next run');
CREATE TEMP TABLE x3 AS SELECT * FROM ade_sync(:acme);
SELECT is((SELECT count(*)::int FROM host_dep_assignments WHERE hardware_serial IN ('D00000023', 'D00000024') AND deleted_reason = 'reconciled'), 2,
  'which finds ABM released them, and soft-deletes them');

-- no run while a removal is under way: a run that starts meanwhile reports
-- its tokens busy, so it cannot assign a profile the call is taking away
\! python3 test/mockctl.py fault '{"path": "/profile/devices", "method": "DELETE", "hold": "rm1", "times": 1}' >/dev/null
SELECT dblink_send_query('call', $$SELECT count(*) FROM ade_remove_profile(ARRAY['D00000025'])$$) \g /dev/null
\set held `for i in $(seq 100); do python3 test/mockctl.py call GET /_mock/held | grep -q '"rm1": 1' && { echo 1; exit 0; }; sleep 0.1; done; echo 0`
SELECT is(:'held'::int, 1, 'a removal waits at ABM (held by the mock)');
SELECT is((SELECT error FROM ade_sync(:acme)), 'busy', 'a run meanwhile reports the token busy');
\! python3 test/mockctl.py call POST /_mock/release '{"name": "rm1"}' >/dev/null
SELECT is((SELECT x FROM dblink_get_result('call') AS r(x bigint)), 1::bigint, 'the removal ends');
SELECT * FROM dblink_get_result('call') AS r(x bigint) \g /dev/null

-- sent once, but a new session is asked for as often as ever: a release
-- answered 401 (not done) gets a session, retried after a 500, and is sent
-- again; a definite refusal is an error, not "may have been released"
\! python3 test/mockctl.py tokstate CK_dc --expire-sessions >/dev/null
\! python3 test/mockctl.py fault '{"path": "/session", "status": 500, "body": "INTERNAL_ERROR", "times": 1}' >/dev/null
SET ade.max_retries = 2;
SELECT is((SELECT response_status FROM ade_release_devices(ARRAY['D00000026'], confirm => true)), 'SUCCESS',
  'a release whose session had expired is sent again with a new one, got after a 500');
\! python3 test/mockctl.py tokstate CK_dc --terms-expired true >/dev/null
SELECT is(pg_temp.state_of($$SELECT * FROM ade_release_devices(ARRAY['D00000027'], confirm => true)$$), '28000',
  'a release ABM refuses (terms not accepted) is an error');
\! python3 test/mockctl.py tokstate CK_dc --terms-expired false >/dev/null
SELECT is((SELECT reconcile_due FROM abm_tokens WHERE id = :acme), false, 'and asks for no reconcile');
RESET ade.max_retries;
SET ade.max_retries = 0;

-- a call in a transaction that holds hosts does not wait for the run lock
-- another session holds (that one may be waiting for hosts: a deadlock no
-- detector would see)
\! python3 test/mockctl.py fault '{"path": "/profile/devices", "method": "DELETE", "hold": "rm2", "times": 1}' >/dev/null
SELECT dblink_send_query('call', $$SELECT count(*) FROM ade_remove_profile(ARRAY['D00000028'])$$) \g /dev/null
\set held `for i in $(seq 100); do python3 test/mockctl.py call GET /_mock/held | grep -q '"rm2": 1' && { echo 1; exit 0; }; sleep 0.1; done; echo 0`
SELECT is(:'held'::int, 1, 'one removal waits at ABM, holding the run lock');
BEGIN;
UPDATE hosts SET hardware_model = hardware_model WHERE hardware_serial = 'D00000029';
SELECT clock_timestamp() AS t0 \gset
SELECT is(pg_temp.state_of($$SELECT * FROM ade_device_details(ARRAY['D00000029'])$$), '55P03',
  'details in a transaction that wrote hosts: refused at once (55P03), not a wait');
SELECT ok(clock_timestamp() - :'t0'::timestamptz < interval '2 s', 'without waiting');
COMMIT;
\! python3 test/mockctl.py call POST /_mock/release '{"name": "rm2"}' >/dev/null
SELECT is((SELECT x FROM dblink_get_result('call') AS r(x bigint)), 1::bigint, 'the removal ends');
SELECT * FROM dblink_get_result('call') AS r(x bigint) \g /dev/null

-- nor in one that wrote or locked any row (here: asked a token to
-- reconcile): a run waits for that row at its end
\! python3 test/mockctl.py fault '{"path": "/profile/devices", "method": "DELETE", "hold": "rm3", "times": 1}' >/dev/null
SELECT dblink_send_query('call', $$SELECT count(*) FROM ade_remove_profile(ARRAY['D00000033'])$$) \g /dev/null
\set held `for i in $(seq 100); do python3 test/mockctl.py call GET /_mock/held | grep -q '"rm3": 1' && { echo 1; exit 0; }; sleep 0.1; done; echo 0`
BEGIN;
SET LOCAL ade.min_refetch_interval = 0;
SELECT ade_request_reconcile(:acme) \g /dev/null
SELECT is(pg_temp.state_of($$SELECT * FROM ade_device_details(ARRAY['D00000034'])$$), '55P03',
  'details after a write in the same transaction, while another call holds the run lock: refused at once');
COMMIT;
\! python3 test/mockctl.py call POST /_mock/release '{"name": "rm3"}' >/dev/null
SELECT is((SELECT x FROM dblink_get_result('call') AS r(x bigint)), 1::bigint, 'the other call ends');
SELECT * FROM dblink_get_result('call') AS r(x bigint) \g /dev/null
UPDATE abm_tokens SET reconcile_due = false WHERE id = :acme;

-- a 503 to a release may have been done: not resent after its Retry-After
\! python3 test/mockctl.py log-clear
\! python3 test/mockctl.py fault '{"path": "/devices/disown", "status": 503, "body": "SERVICE_UNAVAILABLE", "headers": {"Retry-After": "1"}, "times": 1}' >/dev/null
SET ade.max_retries = 3;
SET client_min_messages = error;
CREATE TEMP TABLE x4 AS SELECT * FROM ade_release_devices(ARRAY['D00000035'], confirm => true);
SET client_min_messages = warning;
SET ade.max_retries = 0;
\set n `python3 test/mockctl.py logcount 'POST /devices/disown'`
SELECT is(:'n'::int, 1, 'a release answered 503 with a Retry-After is not sent again');
SELECT is((SELECT (response_status, reconcile_due) FROM x4, abm_tokens WHERE abm_tokens.id = :acme),
  (NULL::text, true), 'it may have been done: no status, and the token reconciles');
DELETE FROM ade_rate_limits;
UPDATE abm_tokens SET reconcile_due = false WHERE id = :acme;

-- ---- activation lock
\! python3 test/mockctl.py assign CK_dc D00000031=ORG_NOT_SUPPORTED >/dev/null
SELECT is(ade_escrow_activation_lock('D00000030', 'ESCROWKEY-5f1d-secret', 'Return to IT'), 'SUCCESS', 'activation lock: SUCCESS');
SELECT is(ade_escrow_activation_lock('D00000030', 'ESCROWKEY-5f1d-secret'), 'DEVICE_ALREADY_LOCKED', 'again: DEVICE_ALREADY_LOCKED');
SELECT is(ade_escrow_activation_lock('D00000031', 'ESCROWKEY-5f1d-secret'), 'ORG_NOT_SUPPORTED', 'ORG_NOT_SUPPORTED is returned as such');
\set body `python3 test/mockctl.py log --path /device/activationlock | grep -c 'ESCROWKEY-5f1d-secret'`
SELECT ok(:'body'::int > 0, 'the escrow key went to ABM in the body');
SELECT is((SELECT count(*)::int FROM ade_device_actions WHERE action = 'activation_lock'), 3, 'each answer is kept');
SELECT ok(NOT EXISTS (SELECT 1 FROM ade_device_actions a WHERE a::text LIKE '%ESCROWKEY%'), 'without the key (SELECT * of every row)');
\! python3 test/mockctl.py fault '{"path": "/device/activationlock", "status": 400, "body": "INVALID_ESCROW_KEY ESCROWKEY-5f1d-secret", "times": 1}' >/dev/null
SELECT ok(pg_temp.message_of($$SELECT ade_escrow_activation_lock('D00000032', 'ESCROWKEY-5f1d-secret')$$) NOT LIKE '%ESCROWKEY-5f1d%',
  'an ABM error that quotes the key does not show it');
\! python3 test/mockctl.py fault '{"path": "/device/activationlock", "status": 400, "body": {"error": "INVALID_ESCROW_KEY", "key": "KEY-Q\"9999"}, "times": 1}' >/dev/null
SELECT ok(pg_temp.message_of($$SELECT ade_escrow_activation_lock('D00000032', 'KEY-Q"9999')$$) NOT LIKE '%9999%',
  'nor one that quotes it as a JSON string');
SELECT ok(pg_temp.message_of($$SELECT ade_escrow_activation_lock('D00000032', E'ESCROW\nKEY-hidden')$$) NOT LIKE '%hidden%',
  'nor does the error of a key with a control character');
SELECT is(pg_temp.state_of($$SELECT ade_escrow_activation_lock('B00000002', 'k')$$), 'P0002', 'a device not held here is refused');
\set inlog `grep -c 'ESCROWKEY-5f1d\|KEY-Q\|KEY-hidden' "$ADE_SERVER_LOG"`
SELECT is(:'inlog'::int, 0, 'no escrow key is in the server log');

-- ---- who may call and read
SET ROLE ade_reader;
SELECT is(pg_temp.state_of($$SELECT * FROM ade_device_details(ARRAY['D00000001'])$$), '42501', 'ade_reader may not call ABM');
SELECT is(pg_temp.state_of($$SELECT ade_hold_device('D00000001')$$), '42501', 'nor hold a device');
SELECT ok((SELECT count(*) FROM (SELECT * FROM ade_device_actions) x) > 0, 'ade_reader reads ade_device_actions (SELECT *)');
SELECT is(pg_temp.state_of($$SELECT * FROM ade_device_overrides$$), '42501',
  'but not ade_device_overrides: a pinned profile''s url may carry an enrollment secret, as ade_profiles may');
RESET ROLE;
SET ROLE nobody_dc;
SELECT is(pg_temp.state_of($$SELECT * FROM ade_device_actions$$), '42501', 'a role with no grant reads no device call');
SELECT is(pg_temp.state_of($$SELECT * FROM ade_release_devices(ARRAY['D00000040'], confirm => true)$$), '42501', 'nor releases one');
RESET ROLE;

-- ---- the application's statements while a call is open (ABM slow: 1.5 s
-- a request, 1200 serials in two batches)
\! python3 test/mockctl.py latency 1500 >/dev/null
SELECT dblink_send_query('call', $$SELECT count(*) FROM ade_release_devices(ARRAY(SELECT format('D%s', lpad(i::text, 8, '0')) FROM generate_series(100, 1299) i), confirm => true)$$) \g /dev/null
SELECT ok(pg_temp.wait_for($$SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE query LIKE 'SELECT count(*) FROM ade_release_devices%' AND state = 'active')$$, 5),
  'a release of 1200 devices is under way');
SELECT pg_sleep(0.3) \g /dev/null
SELECT cmp_ok(pg_temp.app_ms($$DELETE FROM hosts WHERE hardware_serial = 'D00000150'$$), '<', 1000,
  'the application deletes a host of a device being released without waiting for ABM');
SELECT cmp_ok(pg_temp.app_ms($$UPDATE hosts SET hardware_model = 'x' WHERE hardware_serial = 'D00001500'$$), '<', 1000,
  'and updates another');
SELECT ok(EXISTS (SELECT 1 FROM hosts WHERE hardware_serial = 'D00000150'), 'the host of a live device came back (the special case)');
SELECT ok(pg_temp.wait_for($$SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE query LIKE 'SELECT count(*) FROM ade_release_devices%' AND state = 'active')$$, 15),
  'the call ends');
SELECT is((SELECT x FROM dblink_get_result('call') AS r(x bigint)), 1200::bigint, 'with a row per serial');
SELECT * FROM dblink_get_result('call') AS r(x bigint) \g /dev/null
\! python3 test/mockctl.py latency 0 >/dev/null
SELECT is((SELECT count(*)::int FROM host_dep_assignments WHERE deleted_reason = 'released'
            AND hardware_serial BETWEEN 'D00000100' AND 'D00001299'), 1200, 'every released device is soft-deleted');

SELECT * FROM finish();
