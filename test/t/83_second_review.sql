-- What a second review of issue 12 found, each a test that failed before
-- its fix: a hung ABM is an error of the token, not the run's budget; a
-- lone UTF-16 surrogate escape stops no token; a record that cannot apply
-- costs halves, not one statement per record, and the rest follows rule 4
-- (latest op_date); a token removed while a run adds its devices leaves no
-- live device behind; a device its holder's full fetch no longer lists goes
-- to the token whose record of the same second claims it; a host
-- renumbered by hand keeps its device; an op_date of infinity pins nothing.
\ir setup.psql
\! test/add-token.sh Acme CK_acme
\! test/add-token.sh Beta CK_beta
SELECT id AS acme FROM abm_tokens WHERE consumer_key = 'CK_acme' \gset
SELECT id AS beta FROM abm_tokens WHERE consumer_key = 'CK_beta' \gset
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT plan(12);

-- a hung ABM, with two tokens (each token's share shorter than
-- ade.http_timeout): an error on the token, not a note of the budget
SET ade.max_sync_seconds = 12;
SET ade.http_timeout = '30s';
\! python3 test/mockctl.py fault '{"path": "/devices/sync", "consumer_key": "CK_acme", "hang_seconds": 30, "times": 1}'
CREATE TEMP TABLE h1 AS SELECT * FROM ade_sync();
\! python3 test/mockctl.py faults-clear
SELECT alike((SELECT error FROM h1 WHERE token_id = :acme), 'ABM request POST /devices/sync got no answer within % ms, the time left of the run',
  'a request that had seconds and got no answer is an error of the token, though the budget cut its limit');
SELECT alike((SELECT last_error FROM abm_tokens WHERE id = :acme), 'ABM request POST /devices/sync got no answer%',
  'and the token says so');
RESET ade.max_sync_seconds;
RESET ade.http_timeout;

-- a lone surrogate escape in one record: the page applies
\! printf '[{"serial_number": "SU1", "op_type": "added", "op_date": "2099-02-01T00:00:00Z", "device_family": "Mac", "description": "bad \\ud800 x"}, {"serial_number": "SU2", "op_type": "added", "op_date": "2099-02-01T00:00:00Z", "device_family": "Mac", "description": "pair \\ud83d\\ude00"}]' > "$ADE_TEST_TMP/sur.json"
\! python3 test/mockctl.py devices CK_acme --events-json "$ADE_TEST_TMP/sur.json"
CREATE TEMP TABLE s1 AS SELECT * FROM ade_sync(:acme);
SELECT is((SELECT (added, error) FROM s1), (2, NULL::text), 'a lone surrogate escape (\ud800) stops no page');
SELECT is((SELECT (device->>'description') FROM host_dep_assignments WHERE hardware_serial = 'SU1') || '|' ||
          (SELECT (device->>'description') FROM host_dep_assignments WHERE hardware_serial = 'SU2'),
  E'bad \uFFFD x|pair \U0001F600', 'the lone one becomes U+FFFD, a pair stays what it says');

-- a page with one refused record: the others apply in halves, by rule 4
ALTER TABLE hosts ADD CONSTRAINT app_no_bad CHECK (hardware_serial NOT LIKE 'BAD%');
\! python3 -c 'import json; recs = [{"serial_number": "HV%03d" % i, "op_type": "added", "op_date": "2099-03-01T00:00:00Z", "device_family": "Mac"} for i in range(200)]; recs.insert(57, {"serial_number": "BAD1", "op_type": "added", "op_date": "2099-03-01T00:00:00Z", "device_family": "Mac"}); recs += [{"serial_number": "HV001", "op_type": "deleted", "op_date": "2099-03-01T00:00:09Z"}, {"serial_number": "HV001", "op_type": "modified", "op_date": "2099-03-01T00:00:05Z", "model": "older"}]; print(json.dumps(recs))' > "$ADE_TEST_TMP/halves.json"
\! python3 test/mockctl.py devices CK_acme --events-json "$ADE_TEST_TMP/halves.json"

CREATE TEMP TABLE v1 AS SELECT * FROM ade_sync(:acme);
SELECT is((SELECT count(*)::int FROM host_dep_assignments WHERE hardware_serial LIKE 'HV%' AND deleted_at IS NULL), 199,
  'the good records of the page apply around the refused one');
SELECT is((SELECT count(*)::int FROM host_dep_assignments WHERE hardware_serial = 'HV001' AND deleted_at IS NULL), 0,
  'and the latest record of a serial wins (rule 4: its delete), though an older one comes after it in the page');
ALTER TABLE hosts DROP CONSTRAINT app_no_bad;

-- ade_remove_token while a run adds the token's devices
SET ade.enroll_url = 'https://mdm.example.com/enroll';
\! python3 test/mockctl.py devices CK_beta --generate 3 --prefix R --families Mac
\! python3 test/mockctl.py fault '{"method": "PUT", "path": "/profile/devices", "hang_seconds": 3, "times": 1}'
\! (psql -d "$ADE_TEST_DB" -XAtq -c "SET ade.enroll_url = 'https://mdm.example.com/enroll'" -c "SELECT count(*) FROM ade_sync($(psql -d "$ADE_TEST_DB" -XAtqc "SELECT id FROM abm_tokens WHERE consumer_key = 'CK_beta'"))" > /dev/null 2>&1 &)
SELECT ok(pg_temp.wait_for($$SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE query LIKE '%FROM ade_sync(%' AND pid <> pg_backend_pid())$$, 10), 'a run is under way');
SELECT pg_sleep(1);
SELECT ade_remove_token(:beta) \g /dev/null
SELECT is((SELECT count(*)::int FROM host_dep_assignments WHERE abm_token_id = :beta AND deleted_at IS NULL), 0,
  'a token removed while a run adds its devices leaves none of them live');
\! python3 test/mockctl.py faults-clear
RESET ade.enroll_url;

-- a host renumbered by hand keeps its device
UPDATE hosts SET id = 900000 WHERE hardware_serial = 'HV002';
SELECT is((SELECT host_id FROM host_dep_assignments WHERE hardware_serial = 'HV002'), 900000::bigint,
  'a host whose id is changed by hand keeps its device: the assignment follows');
DELETE FROM hosts WHERE id = 900000;
SELECT is((SELECT count(*)::int FROM hosts WHERE id = 900000 AND hardware_serial = 'HV002'), 1,
  'and the special case holds for it (deleted, it comes back)');

-- an op_date of infinity does not pin a device
\! echo '[{"serial_number": "INF1", "op_type": "added", "op_date": "infinity", "device_family": "Mac"}]' > "$ADE_TEST_TMP/inf.json"
\! python3 test/mockctl.py devices CK_acme --events-json "$ADE_TEST_TMP/inf.json"
SELECT count(*) FROM ade_sync(:acme) \g /dev/null
\! python3 test/mockctl.py devices CK_acme --delete INF1 --op-date 2099-04-01T00:00:00Z
SELECT count(*) FROM ade_sync(:acme) \g /dev/null
SELECT is((SELECT deleted_at IS NOT NULL FROM host_dep_assignments WHERE hardware_serial = 'INF1'), true,
  'a record with op_date infinity does not make every later record stale');

-- the holder's delete lost with an expired cursor: its full fetch no longer
-- lists the device, and the tied record of the other token gets it
\! test/add-token.sh Beta CK_beta
\! echo '[{"serial_number": "X1", "device_family": "Mac"}]' > "$ADE_TEST_TMP/x1.json"
\! echo '[{"serial_number": "X1", "model": "m"}]' > "$ADE_TEST_TMP/x1m.json"
\! python3 test/mockctl.py devices CK_beta --add-json "$ADE_TEST_TMP/x1.json" --op-date 2099-05-01T00:00:00Z
SELECT count(*) FROM ade_sync() \g /dev/null
\! python3 test/mockctl.py devices CK_beta --modify-json "$ADE_TEST_TMP/x1m.json" --op-date 2099-05-01T00:00:05Z
SELECT count(*) FROM ade_sync() \g /dev/null
\! python3 test/mockctl.py devices CK_beta --delete X1 --op-date 2099-05-01T00:00:05Z
\! python3 test/mockctl.py devices CK_acme --add-json "$ADE_TEST_TMP/x1.json" --op-date 2099-05-01T00:00:05Z
\! python3 test/mockctl.py tokstate CK_beta --expire-cursors
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT is((SELECT (abm_token_id, deleted_at IS NULL) FROM host_dep_assignments WHERE hardware_serial = 'X1'), (:'acme'::bigint, true),
  'a device whose holder''s full fetch no longer lists it goes to the token whose record of the same second claims it');
SELECT * FROM finish();
