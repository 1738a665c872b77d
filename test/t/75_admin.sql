-- What an MDM admin and a DBA see: ade_status.attention and the expiry
-- columns, ade_last_runs(), a WARNING in every run for a token that expires
-- soon or whose terms are unsigned, NOTIFY ade_hosts payloads (added, moved,
-- deleted, restored; batched, each under 8000 bytes), progress per fetch
-- page, and the pruning of the run history.
\ir setup.psql
\! test/add-token.sh Acme CK_acme
\! test/add-token.sh Soon CK_soon --access-token-expiry "$(date -u -d '+10 days' +%Y-%m-%dT%H:%M:%SZ)"
SELECT id AS acme FROM abm_tokens WHERE consumer_key = 'CK_acme' \gset
SELECT id AS soon FROM abm_tokens WHERE consumer_key = 'CK_soon' \gset
SELECT plan(25);
-- the WARNINGs of the token that expires soon are checked below, from another session
SET client_min_messages = error;

-- status at a glance
SELECT is((SELECT attention FROM ade_status WHERE token_id = :acme), 'never synced: run SELECT * FROM ade_sync() or ade_schedule()',
  'a token never synced says so');
\! python3 test/mockctl.py devices CK_acme --generate 30 --families Mac,iPhone,iPad
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT is((SELECT attention FROM ade_status WHERE token_id = :acme), 'no enrollment profile: set ade.enroll_url or call ade_set_profile()',
  'a token whose devices wait for a profile says so');
SELECT is((SELECT (expires_within_30_days, days_until_expiry BETWEEN 9 AND 10) FROM ade_status WHERE token_id = :soon), (true, true),
  'a token that expires within 30 days shows it, with the days left');
SELECT alike((SELECT attention FROM ade_status WHERE token_id = :soon), 'the token expires within 30 days%', 'and its attention says what to do');
SELECT is((SELECT (darwin, ios, ipados, devices_live) FROM ade_status WHERE token_id = :acme), (10::bigint, 10::bigint, 10::bigint, 30::bigint),
  'ade_status counts live devices by platform');
UPDATE abm_tokens SET terms_expired = true WHERE id = :acme;
SELECT alike((SELECT attention FROM ade_status WHERE token_id = :acme), 'terms not accepted%', 'unsigned terms show in attention');
UPDATE abm_tokens SET terms_expired = false, token_invalid = true WHERE id = :acme;
SELECT alike((SELECT attention FROM ade_status WHERE token_id = :acme), 'Apple rejects the token%', 'a rejected token shows in attention');
UPDATE abm_tokens SET token_invalid = false WHERE id = :acme;
SET ade.enroll_url = 'https://mdm.example.com/enroll';
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT is((SELECT attention FROM ade_status WHERE token_id = :acme), 'ok', 'a healthy token is ok');

-- the last runs
SELECT is((SELECT count(*)::int FROM ade_last_runs(3)), 3, 'ade_last_runs(3) gives three runs');
SELECT is((SELECT array_agg(id) FROM ade_last_runs(3)), (SELECT array_agg(id) FROM (SELECT id FROM ade_sync_runs ORDER BY id DESC LIMIT 3) r),
  'the newest ones, newest first');
SELECT ok(has_function_privilege('ade_reader', 'ade_last_runs(int)', 'EXECUTE'), 'ade_reader may call it');

-- a WARNING in every run for the token that expires soon, and for unsigned terms
\set warnings `psql -d "$ADE_TEST_DB" -XAtqc "SELECT count(*) FROM ade_sync()" 2>&1 >/dev/null | grep -c 'WARNING:  ade: the server token of "Soon" expires on'`
SELECT is(:'warnings'::int, 1, 'every ade_sync() warns of a token that expires within 30 days');
\! python3 test/mockctl.py tokstate CK_acme --terms-expired true --expire-sessions
\set warnings `psql -d "$ADE_TEST_DB" -XAtqc "SELECT count(*) FROM ade_sync()" 2>&1 >/dev/null | grep -c 'WARNING:  ade: the terms and conditions of "Acme" are not accepted'`
SELECT is(:'warnings'::int, 1, 'and of a token whose terms are not accepted');
\! python3 test/mockctl.py tokstate CK_acme --terms-expired false

-- NOTIFY ade_hosts: added (long serials: several notifications), moved, deleted, restored
\! python3 test/mockctl.py devices CK_acme --generate 400 --prefix LONGSERIAL-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa- --families Mac
\set nfile `echo "$ADE_TEST_TMP/notify.out"`
LISTEN ade_hosts;
\o :nfile
SELECT count(*) FROM ade_sync(:acme);
\o
\set added `python3 test/notify_payloads.py "$ADE_TEST_TMP/notify.out"`
SELECT cmp_ok(((:'added'::jsonb)->>'notifications')::int, '>', 1, 'a page of hosts with long serials is split into several notifications');
SELECT cmp_ok(((:'added'::jsonb)->>'max_bytes')::int, '<', 8000, 'each payload stays under 8000 bytes');
SELECT is((:'added'::jsonb)->'events', '{"added": 400}', 'every added host is announced once, as added');
SELECT set_eq(format('SELECT jsonb_array_elements_text(%L::jsonb)::bigint', (:'added'::jsonb)->'ids'),
  $$SELECT id FROM hosts WHERE hardware_serial LIKE 'LONGSERIAL%'$$, 'with its host id');
\! echo '[{"serial_number": "S00000001", "device_family": "iPhone", "model": "iPhone 15"}]' > "$ADE_TEST_TMP/move.json"
\! python3 test/mockctl.py devices CK_acme --delete S00000001 && python3 test/mockctl.py devices CK_soon --add-json "$ADE_TEST_TMP/move.json"
\! python3 test/mockctl.py devices CK_acme --delete S00000002
\o :nfile
SELECT count(*) FROM ade_sync(:soon);
SELECT count(*) FROM ade_sync(:acme);
DELETE FROM hosts WHERE hardware_serial IN ('S00000003', 'S00000004');
SELECT 1;
\o
\set other `python3 test/notify_payloads.py "$ADE_TEST_TMP/notify.out"`
SELECT is((:'other'::jsonb)->'events', '{"moved": 1, "deleted": 1, "restored": 2}',
  'a move, a soft-delete and two hosts restored by the trigger are announced, nothing else');
SELECT is((:'other'::jsonb)->'serials', '{"moved": ["S00000001"], "deleted": ["S00000002"], "restored": ["S00000003", "S00000004"]}',
  'each with its serial');
SELECT is((:'other'::jsonb)->'moved_token', to_jsonb(:soon), 'a moved host names the token that holds it now');
\! test/add-token.sh Fresh CK_fresh
\! python3 test/mockctl.py devices CK_fresh --generate 250
SET ade.page_size = 100;
\o :nfile
SELECT count(*) FROM ade_sync((SELECT id FROM abm_tokens WHERE consumer_key = 'CK_fresh'));
\o
RESET ade.page_size;
\set fresh `python3 test/notify_payloads.py "$ADE_TEST_TMP/notify.out"`
SELECT is(((:'fresh'::jsonb)->>'notifications', (:'fresh'::jsonb)->'events'), ('1'::text, '{"fetched": 250}'::jsonb),
  'a full fetch of three pages is announced once, with its count, not host by host');
UNLISTEN ade_hosts;

-- progress per fetch page: NOTICE to an interactive caller
\! test/add-token.sh Big CK_big
\! python3 test/mockctl.py devices CK_big --generate 450
\set notices `psql -d "$ADE_TEST_DB" -Xqc "SET ade.page_size = 100" -c "SELECT count(*) FROM ade_sync((SELECT id FROM abm_tokens WHERE consumer_key = 'CK_big'))" 2>&1 >/dev/null | grep -c 'NOTICE:  ade: fetching "Big": page'`
SELECT is(:'notices'::int, 5, 'a fetch reports progress per page (450 devices at 100 a page: 5 NOTICEs)');
\set last `psql -d "$ADE_TEST_DB" -Xqc "SET ade.page_size = 100" -c "UPDATE abm_tokens SET mode = 'fetch', cursor = NULL WHERE consumer_key = 'CK_big'" -c "SELECT count(*) FROM ade_sync((SELECT id FROM abm_tokens WHERE consumer_key = 'CK_big'))" 2>&1 >/dev/null | grep 'NOTICE:  ade: fetching' | tail -1 | sed -E 's/[0-9]+\.[0-9] s$/N s/'`
SELECT is(:'last'::text, 'NOTICE:  ade: fetching "Big": page 5, 450 devices so far, N s', 'with the org, the pages, the devices so far and the time');

-- the run history keeps ade.runs_retention and prunes the rest itself
INSERT INTO ade_sync_runs (token_id, started_at, finished_at) VALUES (:acme, now() - interval '2 hours', now() - interval '2 hours');
SELECT count(*) AS runs_before FROM ade_sync_runs \gset
SET ade.runs_retention = '1h';
SELECT count(*) FROM ade_sync(:acme) \g /dev/null
RESET ade.runs_retention;
SELECT is((SELECT count(*)::int FROM ade_sync_runs WHERE started_at < now() - interval '1 hour'), 0, 'runs older than ade.runs_retention are pruned by ade_sync()');
SELECT is((SELECT count(*)::int FROM ade_sync_runs), :'runs_before'::int, 'and the newer ones kept (one pruned, one added)');

SELECT * FROM finish();
