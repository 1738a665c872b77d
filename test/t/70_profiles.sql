-- Rule 10 and ade_set_profile(): the built-in default profile, scopes and
-- their order, one definition per (profile, token), batches of at most
-- 1000, every answer stored, cooldowns, no assignment loop, ingest-only
-- tokens, and the counts of ade_status.
\ir setup.psql
\! test/add-token.sh Acme CK_acme
\! test/add-token.sh Beta CK_beta
SELECT id AS acme FROM abm_tokens WHERE consumer_key = 'CK_acme' \gset
SELECT id AS beta FROM abm_tokens WHERE consumer_key = 'CK_beta' \gset
\! python3 test/mockctl.py devices CK_acme --generate 2500 --families Mac,iPhone,iPad
\! python3 test/mockctl.py devices CK_beta --generate 30 --prefix B --families Mac,iPhone,iPad
SELECT plan(38);

-- 1. no ade.enroll_url and no profile: devices are stored, nothing is assigned, the run says why
RESET ade.enroll_url;
CREATE TEMP TABLE r0 AS SELECT * FROM ade_sync(:acme);
SELECT is((SELECT (added, assigned) FROM r0), (2500, 0), 'without a profile the sync still stores the devices');
SELECT alike((SELECT note FROM ade_sync_runs WHERE token_id = :acme ORDER BY id DESC LIMIT 1),
  'no enrollment profile is set: the devices wait%', 'and the run row says why nothing was assigned');
SELECT is((SELECT pending FROM ade_status WHERE token_id = :acme), 2500::bigint, 'and ade_status counts them as pending');
\set puts `python3 test/mockctl.py logcount 'PUT /profile/devices'`
SELECT is(:'puts'::int, 0, 'no PUT /profile/devices was sent');

-- ade_set_profile(): validated, nothing stored on error
SELECT throws_ok($$SELECT ade_set_profile('[1, 2]')$$, '22023', 'the profile must be a JSON object, not array', 'a profile that is not an object is refused');
SELECT throws_ok($$SELECT ade_set_profile('{"url": "https://mdm.example/enroll"}')$$, '22023', 'the profile has no "profile_name"', 'a profile without profile_name is refused');
SELECT throws_ok($$SELECT ade_set_profile('{"profile_name": "x"}')$$, '22023', 'the profile has no "url"', 'a profile without url is refused');
SELECT throws_ok($$SELECT ade_set_profile('{"profile_name": "x", "url": "u"}', platform => 'android')$$, '22023', 'unknown platform "android"', 'an unknown platform is refused');
SELECT throws_ok($$SELECT ade_set_profile('{"profile_name": "x", "url": "u"}', token_id => 999)$$, 'P0002', 'abm token 999 does not exist', 'an unknown token is refused');
SELECT is((SELECT count(*)::int FROM ade_profiles), 0, 'nothing was stored');

-- 1. the built-in default profile, from ade.enroll_url
SET ade.enroll_url = 'https://mdm.example.com/enroll';
\! python3 test/mockctl.py log-clear
CREATE TEMP TABLE r1 AS SELECT * FROM ade_sync(:acme);
SELECT is((SELECT (assigned, failed) FROM r1), (2500, 0), 'with ade.enroll_url set, the next run assigns every waiting device');
\set profiles `python3 test/mockctl.py state CK_acme | python3 -c 'import json,sys; print(json.dumps(list(json.load(sys.stdin)["profiles"].values())))'`
SELECT is(((:'profiles'::jsonb)->0) - 'profile_uuid',
  '{"profile_name": "Automatic enrollment", "url": "https://mdm.example.com/enroll", "is_supervised": true, "is_mdm_removable": false, "await_device_configured": true}'::jsonb,
  'the built-in default: Automatic enrollment, the enroll URL, supervised, not removable, await device configured');
\set batches `python3 test/mockctl.py log --path /profile/devices | python3 -c 'import json,sys; print(json.dumps([len(r["body"]["devices"]) for r in json.load(sys.stdin)["requests"]]))'`
SELECT is(:'batches'::jsonb, '[1000, 1000, 500]', '2500 devices are sent in batches of at most 1000');
SELECT is((SELECT count(*)::int FROM host_dep_assignments WHERE assign_profile_response = 'SUCCESS' AND response_updated_at IS NOT NULL
             AND profile_uuid = (SELECT profile_uuid FROM ade_profile_definitions WHERE token_id = :acme)), 2500,
  'every serial''s answer and profile_uuid is stored on its assignment');

-- Beta gets the built-in default too
SELECT count(*) FROM ade_sync(:beta) \g /dev/null

-- 5. no loop: ABM echoes the assignments back as modified; three more runs send nothing
\! python3 test/mockctl.py log-clear
CREATE TEMP TABLE echo AS SELECT * FROM ade_sync(:acme);
SELECT is((SELECT modified FROM echo), 2500, 'ABM echoes every assignment back as modified');
SELECT count(*) FROM ade_sync(:acme) \g /dev/null
SELECT count(*) FROM ade_sync(:acme) \g /dev/null
SELECT count(*) FROM ade_sync(:acme) \g /dev/null
\set puts `python3 test/mockctl.py logcount 'PUT /profile/devices'`
\set posts `python3 test/mockctl.py logcount 'POST /profile'`
SELECT is(:'puts'::int, 0, 'the echoes and three more syncs send no PUT /profile/devices');
SELECT is(:'posts'::int, 0, 'nor define the profile again');

-- 5. a profile removed in ABM, or replaced with another, is assigned again
\! echo '[{"serial_number": "S00000003", "profile_status": "removed", "profile_uuid": ""}, {"serial_number": "S00000004", "profile_uuid": "FOREIGN0000000000000000000000000", "profile_status": "assigned"}]' > "$ADE_TEST_TMP/mods.json"
\! python3 test/mockctl.py devices CK_acme --modify-json "$ADE_TEST_TMP/mods.json"
\! python3 test/mockctl.py log-clear
CREATE TEMP TABLE r2 AS SELECT * FROM ade_sync(:acme);
\set sent `python3 test/mockctl.py log --path /profile/devices | python3 -c 'import json,sys; print(json.dumps(sorted(s for r in json.load(sys.stdin)["requests"] for s in r["body"]["devices"])))'`
SELECT is(:'sent'::jsonb, '["S00000003", "S00000004"]', 'a removed profile and a foreign profile are assigned again, nothing else');

-- 2. scopes: (token, platform) > token > platform > organisation default > built-in
SELECT ade_set_profile('{"profile_name": "org", "url": "https://mdm.example.com/org"}') \g /dev/null
SELECT ade_set_profile('{"profile_name": "ios", "url": "https://mdm.example.com/ios"}', platform => 'ios') \g /dev/null
SELECT ade_set_profile('{"profile_name": "acme", "url": "https://mdm.example.com/acme"}', token_id => :acme) \g /dev/null
SELECT ade_set_profile('{"profile_name": "acme ipad", "url": "https://mdm.example.com/acme-ipad"}', token_id => :acme, platform => 'ipados') \g /dev/null
\! python3 test/mockctl.py log-clear
CREATE TEMP TABLE r3 AS SELECT * FROM ade_sync();
\set names `python3 test/mockctl.py state CK_acme > "$ADE_TEST_TMP/a.json"; python3 test/mockctl.py state CK_beta > "$ADE_TEST_TMP/b.json"; python3 -c 'import json,os; t=os.environ["ADE_TEST_TMP"]; out={}; [out.update({s: st["profiles"][d["profile_uuid"]]["profile_name"] for s, d in st["devices"].items() if d.get("profile_uuid")}) for st in (json.load(open(t + "/a.json")), json.load(open(t + "/b.json")))]; print(json.dumps(out))'`
SELECT results_eq(
  format($$SELECT h.platform || ' ' || (CASE WHEN d.abm_token_id = %s THEN 'acme' ELSE 'beta' END) || ': ' || n.name, count(*)::int
             FROM host_dep_assignments d JOIN hosts h ON h.id = d.host_id
             JOIN jsonb_each_text(%L::jsonb) n(serial, name) ON n.serial = d.hardware_serial
            GROUP BY 1 ORDER BY 1$$, :acme, :'names'),
  $$VALUES ('darwin acme: acme', 834), ('darwin beta: org', 10), ('ios acme: acme', 833), ('ios beta: ios', 10),
           ('ipados acme: acme ipad', 833), ('ipados beta: org', 10)$$,
  'a changed profile reaches every live device from the database: the most specific of (token, platform), token, platform, default');
\set posts `python3 test/mockctl.py logcount 'POST /profile'`
SELECT is(:'posts'::int, 4, 'each (profile, token) is defined once: acme, acme ipad, and org and ios for Beta');
SELECT is((SELECT count(*)::int FROM ade_profile_definitions), 2 + 4, 'each profile_uuid is stored: the built-in default for both tokens, and the four new');
\set fetches `python3 test/mockctl.py logcount 'POST /server/devices'`
SELECT is(:'fetches'::int, 0, 'without a re-fetch');
-- a changed profile is defined again and assigned again
SELECT ade_set_profile('{"profile_name": "acme v2", "url": "https://mdm.example.com/acme"}', token_id => :acme) \g /dev/null
\! python3 test/mockctl.py log-clear
CREATE TEMP TABLE r4 AS SELECT * FROM ade_sync(:acme);
SELECT is((SELECT assigned FROM r4), 1667, 'a changed token profile is defined again and sent to the Macs and iPhones that use it');
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT count(*) FROM ade_sync() \g /dev/null
\set puts `python3 test/mockctl.py logcount 'PUT /profile/devices'`
SELECT is(:'puts'::int, 2, 'and only once: two batches, then nothing');

-- 3 and 4: FAILED, THROTTLED, NOT_ACCESSIBLE, and a serial missing from the answer
SET ade.failed_retry_interval = '2s';
\! python3 test/mockctl.py assign CK_beta B00000000=FAILED,B00000001=THROTTLED,B00000002=NOT_ACCESSIBLE,B00000003=OMIT --retry-after 8
SELECT ade_set_profile('{"profile_name": "beta", "url": "https://mdm.example.com/beta"}', token_id => :beta) \g /dev/null
CREATE TEMP TABLE r5 AS SELECT * FROM ade_sync(:beta);
SELECT results_eq($$SELECT hardware_serial, assign_profile_response FROM host_dep_assignments WHERE hardware_serial IN ('B00000000', 'B00000001', 'B00000002', 'B00000003', 'B00000004') ORDER BY 1$$,
  $$VALUES ('B00000000', 'FAILED'), ('B00000001', 'THROTTLED'), ('B00000002', 'NOT_ACCESSIBLE'), ('B00000003', 'FAILED'), ('B00000004', 'SUCCESS')$$,
  'each serial''s answer is stored; a serial missing from the answer is FAILED');
SELECT is((SELECT (assigned, failed) FROM r5), (26, 4), 'ade_sync() counts assigned and failed');
SELECT ok((SELECT retry_at BETWEEN now() + interval '1 s' AND now() + interval '3 s' FROM host_dep_assignments WHERE hardware_serial = 'B00000000'),
  'FAILED is due again after ade.failed_retry_interval');
SELECT ok((SELECT retry_at BETWEEN now() + interval '7 s' AND now() + interval '9 s' FROM host_dep_assignments WHERE hardware_serial = 'B00000001'),
  'THROTTLED is due again after retry_after_seconds');
SELECT is((SELECT (assigned, pending, failed, throttled, not_accessible) FROM ade_status WHERE token_id = :beta), (26::bigint, 3::bigint, 2::bigint, 1::bigint, 1::bigint),
  'ade_status counts assigned, pending, failed, throttled and not accessible');
\! python3 test/mockctl.py assign CK_beta B00000000=,B00000001=,B00000002=,B00000003=
\! python3 test/mockctl.py log-clear
SELECT count(*) FROM ade_sync(:beta) \g /dev/null
\set puts `python3 test/mockctl.py logcount 'PUT /profile/devices'`
SELECT is(:'puts'::int, 0, 'nothing is retried before its cooldown ends');
SELECT pg_sleep(8.2) \g /dev/null
CREATE TEMP TABLE r6 AS SELECT * FROM ade_sync(:beta);
\set sent `python3 test/mockctl.py log --path /profile/devices | python3 -c 'import json,sys; print(json.dumps(sorted(s for r in json.load(sys.stdin)["requests"] for s in r["body"]["devices"])))'`
SELECT is(:'sent'::jsonb, '["B00000000", "B00000001", "B00000003"]', 'due retries are sent by a later run; NOT_ACCESSIBLE is not retried');
SELECT count(*) FROM ade_sync(:beta) \g /dev/null
SELECT count(*) FROM ade_sync(:beta) \g /dev/null
SELECT is((SELECT assign_profile_response FROM host_dep_assignments WHERE hardware_serial = 'B00000002'), 'NOT_ACCESSIBLE',
  'NOT_ACCESSIBLE stays as it is while ABM says nothing new of the device');
\! echo '[{"serial_number": "B00000002", "device_family": "Mac", "model": "Mac mini"}]' > "$ADE_TEST_TMP/readd.json"; python3 test/mockctl.py devices CK_beta --add-json "$ADE_TEST_TMP/readd.json"
\! python3 test/mockctl.py log-clear
SELECT count(*) FROM ade_sync(:beta) \g /dev/null
\set sent `python3 test/mockctl.py log --path /profile/devices | python3 -c 'import json,sys; print(json.dumps(sorted(s for r in json.load(sys.stdin)["requests"] for s in r["body"]["devices"])))'`
SELECT is(:'sent'::jsonb, '["B00000002"]', 'NOT_ACCESSIBLE is retried once ABM reports the device again as added');
SELECT is((SELECT assign_profile_response FROM host_dep_assignments WHERE hardware_serial = 'B00000002'), 'SUCCESS', 'and its new answer is stored');
RESET ade.failed_retry_interval;

-- 6. an ingest-only token stores devices and assigns nothing until turned on
UPDATE abm_tokens SET assign_profiles = false WHERE id = :beta;
\! python3 test/mockctl.py devices CK_beta --generate 5 --prefix M --families Mac
\! python3 test/mockctl.py log-clear
CREATE TEMP TABLE r7 AS SELECT * FROM ade_sync(:beta);
\set puts `python3 test/mockctl.py logcount 'PUT /profile/devices'`
SELECT is((SELECT (added, assigned) FROM r7), (5, 0), 'an ingest-only token stores its new devices');
SELECT is(:'puts'::int, 0, 'and sends no assignment');
SELECT is((SELECT pending FROM ade_status WHERE token_id = :beta), 5::bigint, 'they wait, counted as pending');
UPDATE abm_tokens SET assign_profiles = true WHERE id = :beta;
CREATE TEMP TABLE r8 AS SELECT * FROM ade_sync(:beta);
SELECT is((SELECT assigned FROM r8), 5, 'turning assign_profiles on assigns the waiting devices on the next sync');

SELECT * FROM finish();
