-- What a fourth review (issues 12-14) found, each a test that failed before
-- its fix: a token added back while an application deletes one of its
-- hosts leaves no live device without a host; a device ABM deleted while
-- the token was away does not stay live when the kept cursor has expired;
-- a profile ABM refused is sent again after ade.failed_retry_interval (the
-- built-in one too, which cannot be "set again"), and after a restore;
-- a "devices" list stored before 0.4 never reaches Apple; and what a fifth
-- and a sixth review found of those fixes (6-12).
\ir setup.psql
\! test/add-token.sh Acme CK_acme
SELECT id AS acme FROM abm_tokens WHERE consumer_key = 'CK_acme' \gset
\! python3 test/mockctl.py devices CK_acme --generate 10 --families Mac,iPhone
SET ade.enroll_url = 'https://mdm.example.com/enroll';
SELECT count(*) FROM ade_sync() \g /dev/null
DROP ROLE IF EXISTS ade_t84_app;
CREATE ROLE ade_t84_app LOGIN;
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON hosts TO ade_t84_app;
GRANT USAGE ON SEQUENCE hosts_id_seq TO ade_t84_app;
SELECT plan(19);

-- 1. the restore and an application's delete of a host at the same time:
-- the delete commits while ade_add_token() runs
SELECT ade_remove_token(:acme) \g /dev/null
\! psql -XAtq -U ade_t84_app -d "$ADE_TEST_DB" -c "BEGIN; DELETE FROM hosts WHERE hardware_serial = 'S00000005'; SELECT pg_sleep(2); COMMIT;" >/dev/null 2>&1 &
SELECT pg_temp.wait_for($$SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE usename = 'ade_t84_app' AND wait_event = 'PgSleep')$$, 10) \g /dev/null
\! test/add-token.sh Acme CK_acme
SELECT pg_temp.wait_for($$SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE usename = 'ade_t84_app')$$, 10) \g /dev/null
SELECT is((SELECT count(*)::int FROM host_dep_assignments d LEFT JOIN hosts h ON h.id = d.host_id
            WHERE d.deleted_at IS NULL AND h.id IS NULL), 0,
  'a host deleted while its token is added back leaves no live device without a host');
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT is((SELECT count(*)::int FROM host_dep_assignments d JOIN hosts h ON h.id = d.host_id AND h.hardware_serial = d.hardware_serial
            WHERE d.abm_token_id = :acme AND d.deleted_at IS NULL), 10,
  'and the next sync has every device of ABM live on a host, the deleted one''s made again');

-- 2. ABM deleted a device while the token was away, and the kept cursor
-- expired before it said so
SELECT ade_remove_token(:acme) \g /dev/null
\! python3 test/mockctl.py devices CK_acme --delete S00000003
\! python3 test/mockctl.py tokstate CK_acme --expire-cursors
\! test/add-token.sh Acme CK_acme
SELECT is((SELECT restored_at IS NOT NULL FROM abm_tokens WHERE id = :acme), true,
  'a token restored with its cursor is marked as restored until a page of that cursor answers');
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT is((SELECT deleted_at IS NOT NULL FROM host_dep_assignments WHERE hardware_serial = 'S00000003'), true,
  'a device ABM deleted while the token was away is soft-deleted again by the full fetch that an expired cursor forced');
SELECT is((SELECT (devices_live, restored_at IS NULL) FROM ade_status s JOIN abm_tokens t ON t.id = s.token_id WHERE s.token_id = :acme),
  (9::bigint, true), 'and the token holds what ABM holds, no longer marked');
-- a restore whose cursor answers: the mark goes (a later full fetch
-- leaves what it does not list alone again, rule 7)
SELECT ade_remove_token(:acme) \g /dev/null
\! test/add-token.sh Acme CK_acme
SELECT is((SELECT attention FROM ade_status WHERE token_id = :acme), 'ok',
  'a restored token keeps when it last synced: attention does not say "never synced"');
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT is((SELECT restored_at IS NULL FROM abm_tokens WHERE id = :acme), true,
  'a page of the kept cursor that answers clears the mark');

-- 3. a refused profile is sent again after ade.failed_retry_interval, and
-- the built-in one's words say so (it cannot be "set again")
\! python3 test/mockctl.py fault '{"method": "POST", "path": "/profile", "status": 400, "body": "CONFIG_URL_REQUIRED", "times": -1}'
SET ade.enroll_url = 'https://mdm.example.com/enroll2';
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT is((SELECT attention FROM ade_status WHERE token_id = :acme),
  'ABM refused the enrollment profile "Automatic enrollment" (HTTP 400 CONFIG_URL_REQUIRED): its devices wait; fix it with ade.enroll_url; unchanged, it is sent again after ade.failed_retry_interval',
  'the built-in profile refused: attention names ade.enroll_url and when it is sent again');
\! python3 test/mockctl.py faults-clear
SET ade.failed_retry_interval = 1;
SELECT pg_sleep(1.2) \g /dev/null
\! python3 test/mockctl.py log-clear
SELECT count(*) FROM ade_sync() \g /dev/null
\set posts `python3 test/mockctl.py logcount 'POST /profile'`
SELECT is((:'posts'::int, (SELECT attention FROM ade_status WHERE token_id = :acme)), (1, 'ok'::text),
  'after ade.failed_retry_interval the refused profile is sent again, and taken');
RESET ade.failed_retry_interval;

-- 4. a refusal does not come back with a restore
\! python3 test/mockctl.py fault '{"method": "POST", "path": "/profile", "status": 400, "body": "CONFIG_URL_REQUIRED", "times": -1}'
SET ade.enroll_url = 'https://mdm.example.com/enroll3';
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT ade_remove_token(:acme) \g /dev/null
\! python3 test/mockctl.py faults-clear
\! test/add-token.sh Acme CK_acme
\! python3 test/mockctl.py log-clear
SELECT count(*) FROM ade_sync() \g /dev/null
\set posts `python3 test/mockctl.py logcount 'POST /profile'`
SELECT is((:'posts'::int, (SELECT attention FROM ade_status WHERE token_id = :acme)), (1, 'ok'::text),
  'a token added back sends a profile ABM had refused again');

-- 5. a "devices" list stored before 0.4 (ade_set_profile() refuses one now)
INSERT INTO ade_profiles (token_id, platform, team_id, profile)
VALUES (:acme, 'darwin', NULL, '{"profile_name": "Old", "url": "https://mdm.example.com/old", "devices": ["S00000001"]}');
\! python3 test/mockctl.py log-clear
SELECT count(*) FROM ade_sync() \g /dev/null
\set bodies `python3 test/mockctl.py log --path /profile --method POST`
SELECT is((SELECT count(*)::int FROM jsonb_array_elements((:'bodies')::jsonb->'requests') r), 1, 'the stored profile is defined');
SELECT is((SELECT count(*)::int FROM jsonb_array_elements((:'bodies')::jsonb->'requests') r WHERE r->'body' ? 'devices'), 0,
  'without its "devices" list, which would make Apple assign those serials whatever their scope');

-- 6. (fifth review) removed again before the cursor of the first restore
-- answered (the full fetch its expired cursor forced cut after a page):
-- the second restore fetches everything, and what ABM deleted stays
-- deleted
SELECT ade_remove_token(:acme) \g /dev/null
\! python3 test/mockctl.py devices CK_acme --delete S00000004
\! python3 test/mockctl.py tokstate CK_acme --expire-cursors
\! test/add-token.sh Acme CK_acme
\! python3 test/mockctl.py fault '{"method": "POST", "path": "/server/devices", "skip": 1, "times": 1, "repeat_cursor": true}'
SET ade.page_size = 2;
SELECT count(*) FROM ade_sync() \g /dev/null
RESET ade.page_size;
\! python3 test/mockctl.py faults-clear
SELECT ade_remove_token(:acme) \g /dev/null
\! test/add-token.sh Acme CK_acme
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT is((SELECT deleted_at IS NOT NULL FROM host_dep_assignments WHERE hardware_serial = 'S00000004'), true,
  'a token removed and added back twice before its cursor answered does not keep a device ABM deleted');

-- 7. an application that deletes a host under REPEATABLE READ, with a
-- snapshot from before the restore: never a live device without a host,
-- and (0.5: the trigger reads the assignments as they are now) no
-- serialization failure either
SELECT ade_remove_token(:acme) \g /dev/null
\! psql -XAtq -U ade_t84_app -d "$ADE_TEST_DB" -c "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM hosts; SELECT pg_sleep(2); DELETE FROM hosts WHERE hardware_serial = 'S00000006'; COMMIT;" >"$ADE_TEST_TMP/rr.out" 2>&1 &
SELECT pg_temp.wait_for($$SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE usename = 'ade_t84_app' AND wait_event = 'PgSleep')$$, 10) \g /dev/null
\! test/add-token.sh Acme CK_acme
SELECT pg_temp.wait_for($$SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE usename = 'ade_t84_app')$$, 10) \g /dev/null
\set rr `grep -c 'could not serialize access' "$ADE_TEST_TMP/rr.out"`
SELECT is((:'rr'::int, (SELECT count(*)::int FROM host_dep_assignments d LEFT JOIN hosts h ON h.id = d.host_id
                         WHERE d.deleted_at IS NULL AND h.id IS NULL)), (0, 0),
  'a REPEATABLE READ delete of a host a restore revived does not fail, and no live device is left without a host');

-- 8. the restore does not hold up an application's update of its hosts
-- while it talks to ABM (a key share lock: deletes wait, updates do not)
SELECT ade_remove_token(:acme) \g /dev/null
\! python3 test/mockctl.py fault '{"method": "GET", "path": "/account", "hang_seconds": 3, "times": 1}'
\! (test/add-token.sh Acme CK_acme &)
SELECT pg_temp.wait_for($$SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE query LIKE '%ade_add_token%' AND state = 'active' AND pid <> pg_backend_pid())$$, 10) \g /dev/null
SELECT pg_sleep(0.5) \g /dev/null
\set upd `psql -XAtq -U ade_t84_app -d "$ADE_TEST_DB" -c "SET lock_timeout = '1s'" -c "UPDATE hosts SET hardware_model = hardware_model WHERE hardware_serial = 'S00000001'" 2>&1`
SELECT is(:'upd'::text, '', 'an application updates a host while its token is being added back, without waiting');
SELECT pg_temp.wait_for($$SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE query LIKE '%ade_add_token%' AND pid <> pg_backend_pid())$$, 10) \g /dev/null
\! python3 test/mockctl.py faults-clear
SELECT count(*) FROM ade_sync() \g /dev/null

-- 9. a device the full fetch lists but whose record is kept aside (an
-- application's trigger refuses it) is not taken for one ABM deleted
CREATE FUNCTION pg_temp.no_bad_model() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.hardware_model = 'Bad Model' THEN RAISE EXCEPTION 'no bad models'; END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER t84_no_bad_model BEFORE INSERT OR UPDATE ON hosts FOR EACH ROW EXECUTE FUNCTION pg_temp.no_bad_model();
SET client_min_messages = error;	-- the WARNINGs of records kept aside
SELECT ade_remove_token(:acme) \g /dev/null
\! echo '[{"serial_number": "S00000002", "model": "Bad Model"}]' > "$ADE_TEST_TMP/bad2.json"
\! python3 test/mockctl.py devices CK_acme --modify-json "$ADE_TEST_TMP/bad2.json"
\! python3 test/mockctl.py tokstate CK_acme --expire-cursors
\! test/add-token.sh Acme CK_acme
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT is((SELECT (d.deleted_at IS NULL, EXISTS (SELECT 1 FROM ade_rejected_records x WHERE x.hardware_serial = 'S00000002'))
             FROM host_dep_assignments d WHERE d.hardware_serial = 'S00000002'), (true, true),
  'a listed device whose record is kept aside stays live after the full fetch that follows a restore');

-- 10. (sixth review) an older kept record of a device ABM deleted while
-- the token was away does not keep that device live
\! echo '[{"serial_number": "S00000008", "model": "Bad Model"}]' > "$ADE_TEST_TMP/bad8.json"
\! python3 test/mockctl.py devices CK_acme --modify-json "$ADE_TEST_TMP/bad8.json"
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT ade_remove_token(:acme) \g /dev/null
\! python3 test/mockctl.py devices CK_acme --delete S00000008
\! python3 test/mockctl.py tokstate CK_acme --expire-cursors
\! test/add-token.sh Acme CK_acme
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT is((SELECT deleted_at IS NOT NULL FROM host_dep_assignments WHERE hardware_serial = 'S00000008'), true,
  'a kept record from before the restore does not keep a device ABM deleted live');
DROP TRIGGER t84_no_bad_model ON hosts;
SET client_min_messages = warning;

-- 11. a TRUNCATE of hosts under REPEATABLE READ (it would miss devices
-- made live after its snapshot) is refused, with the way out
\set trunc `psql -XAtq -U ade_t84_app -d "$ADE_TEST_DB" -c "BEGIN ISOLATION LEVEL REPEATABLE READ; TRUNCATE hosts; COMMIT;" 2>&1 | grep -e ERROR -e HINT | tr '\n' ' '`
SELECT is(:'trunc'::text, 'ERROR:  TRUNCATE hosts keeps the hosts of live devices only under READ COMMITTED HINT:  Run it in a READ COMMITTED transaction, or use DELETE FROM hosts. ',
  'TRUNCATE hosts under REPEATABLE READ is refused, with a hint');

-- 12. added back and synced in one transaction, the cursor expired: what
-- ABM deleted while the token was away does not stay live
SELECT ade_remove_token(:acme) \g /dev/null
\! python3 test/mockctl.py devices CK_acme --delete S00000007
\! python3 test/mockctl.py tokstate CK_acme --expire-cursors
\! psql -d "$ADE_TEST_DB" -XAtq -1 -c "SELECT ade_add_token(pg_read_binary_file('$ADE_TEST_TMP/CK_acme.p7m'))" -c "SELECT count(*) FROM ade_sync()" >/dev/null 2>&1
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT is((SELECT (deleted_at IS NOT NULL, (SELECT count(*)::int FROM abm_tokens WHERE id = :acme))
             FROM host_dep_assignments WHERE hardware_serial = 'S00000007'), (true, 1),
  'a restore and the full fetch after it in one transaction leave no device ABM deleted live');

DROP OWNED BY ade_t84_app;
DROP ROLE ade_t84_app;
SELECT * FROM finish();
