-- What a first-time admin hits (issue 14), each command run the way an
-- admin runs it (its own psql -c, a new session) where that matters:
-- settings in a fresh session, a scope that must not widen on a NULL,
-- profiles Apple would refuse, a profile ABM refuses, a token removed and
-- added back, files in and out, errors that point to the fix.
\ir setup.psql
\! test/add-token.sh Acme CK_acme
SELECT id AS acme FROM abm_tokens WHERE consumer_key = 'CK_acme' \gset
\! python3 test/mockctl.py devices CK_acme --generate 30 --families Mac,iPhone,iPad
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT plan(43);
CREATE FUNCTION pg_temp.error_of(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE m text; s text;
BEGIN
  EXECUTE q;
  RETURN NULL;
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS s = RETURNED_SQLSTATE, m = MESSAGE_TEXT;
  RETURN s || ' ' || m;
END $$;

-- 1. settings from a fresh session (the library preloaded, as the README says)
\set altered `psql -d "$ADE_TEST_DB" -XAtqc "ALTER SYSTEM SET ade.enroll_url = 'https://mdm.example.com/enroll'" 2>&1 && psql -d "$ADE_TEST_DB" -XAtqc "SELECT pg_reload_conf()" >/dev/null && sleep 0.5 && psql -d "$ADE_TEST_DB" -XAtqc "SHOW ade.enroll_url" 2>&1`
SELECT is(:'altered'::text, 'https://mdm.example.com/enroll', 'ALTER SYSTEM SET and SHOW of an ade setting work in a new session');
\! psql -d "$ADE_TEST_DB" -XAtqc "ALTER SYSTEM RESET ade.enroll_url" && psql -d "$ADE_TEST_DB" -XAtqc "SELECT pg_reload_conf()" >/dev/null
SELECT throws_ok($$SET ade.enroll_url = 'not a url'$$, '22023', NULL, 'an enrollment URL devices cannot reach is refused when it is set');
SELECT throws_ok($$SET ade.enroll_url = 'http://mdm.example.com/enroll'$$, '22023', NULL, 'plain http is refused but to a loopback host');
SELECT lives_ok($$SET ade.enroll_url = 'http://127.0.0.1:9/enroll'$$, 'http to a loopback test server is allowed');
RESET ade.enroll_url;

-- 2. a NULL never widens a scope
SELECT is(pg_temp.error_of($$SELECT ade_set_profile('{"profile_name": "p", "url": "https://mdm.example.com/e"}',
                                 token_id => (SELECT id FROM abm_tokens WHERE org_name = 'Typo'), platform => 'ipados')$$),
  '22004 token_id is NULL: a scope argument passed as NULL never means "any"',
  'a token_id that a lookup did not find is an error, not "every token"');
SELECT throws_ok($$SELECT ade_set_profile('{"profile_name": "p", "url": "https://mdm.example.com/e"}', NULL)$$, '22004', NULL,
  'a NULL token_id passed by position too');
SELECT throws_ok($$SELECT ade_set_profile('{"profile_name": "p", "url": "https://mdm.example.com/e"}', team_id => NULL)$$, '22004', NULL,
  'a NULL team_id too');
SELECT is((SELECT count(*)::int FROM ade_profiles), 0, 'and nothing is stored');
SELECT throws_ok($$SELECT ade_set_profile('{"profile_name": "p", "url": "https://mdm.example.com/e"}', token_id => 9999)$$, 'P0002',
  'abm token 9999 does not exist', 'an unknown token is an error that says so');
SELECT lives_ok($$SELECT ade_set_profile('{"profile_name": "iPads", "url": "https://mdm.example.com/e"}', platform => 'ipados')$$,
  'every token''s iPads: the token_id left out');
SELECT is((SELECT (token_id, platform) FROM ade_profiles), (NULL::bigint, 'ipados'::text), 'stored for every token');
SELECT ade_clear_profile(platform => 'ipados') \g /dev/null

-- 3. profiles Apple would refuse
SELECT is(pg_temp.error_of($$SELECT ade_set_profile('{"profile_name": "x", "url": "not a url"}')$$),
  '22023 the profile''s url "not a url" cannot be used: it is not a valid URL', 'a url that is not one is refused');
SELECT is(pg_temp.error_of($$SELECT ade_set_profile('{"profile_name": "x", "url": 5}')$$),
  '22023 profile key "url" must be a string, not 5', '"url": 5 is "url must be a string", not "has no url"');
SELECT is(pg_temp.error_of($$SELECT ade_set_profile('{"profile_name": "x", "url": "http://mdm.example.com/e"}')$$),
  '22023 the profile''s url "http://mdm.example.com/e" cannot be used: plain http is allowed only to a loopback host (127.0.0.0/8, ::1, localhost)',
  'plain http to a host devices reach over the network is refused');
SELECT is(pg_temp.error_of($$SELECT ade_set_profile('{"profile_name": "x", "url": "https://mdm.example.com/e", "is_supervised": "yes"}')$$),
  '22023 profile key "is_supervised" must be true or false, not "yes"', 'a boolean of Apple''s must be one');
SELECT is(pg_temp.error_of($$SELECT ade_set_profile('{"profile_name": "x", "url": "https://mdm.example.com/e", "skip_setup_items": ["Siri", "Sirri"]}')$$),
  '22023 skip_setup_items has "Sirri", which is not a Setup Assistant pane Apple knows', 'an unknown Setup Assistant pane is refused');
SELECT is(pg_temp.error_of($$SELECT ade_set_profile('{"profile_name": "x", "url": "https://mdm.example.com/e", "anchor_certs": ["bm90IGEgY2VydA=="]}')$$),
  '22023 an entry of anchor_certs is not a base64 DER certificate', 'an anchor certificate that is not one is refused');
\! cd "$ADE_TEST_TMP" && openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=anchor -keyout anchor.key -out anchor.pem 2>/dev/null && openssl x509 -in anchor.pem -outform DER | base64 -w0 > anchor.b64
\set anchor `cat "$ADE_TEST_TMP/anchor.b64"`
SELECT lives_ok(format($$SELECT ade_set_profile(jsonb_build_object('profile_name', 'x', 'url', 'https://mdm.example.com/e',
                        'anchor_certs', jsonb_build_array(%L), 'language', 'en', 'region', 'US',
                        'skip_setup_items', jsonb_build_array('Siri', 'TOS')), platform => 'tvos')$$, :'anchor'),
  'a profile with a DER anchor certificate, language, region and known panes is taken');
SELECT is(pg_temp.error_of($$SELECT ade_set_profile('{"profile_name": "x", "url": "https:/mdm.example.com/e"}')$$),
  '22023 the profile''s url "https:/mdm.example.com/e" cannot be used: it is not an absolute URL (scheme://host/...)',
  'a url that is not absolute (libcurl would fix it up, the profile would not) is refused');
SELECT is(pg_temp.error_of($$SELECT ade_set_profile('{"profile_name": "x", "url": "https:/mdm.example.com/e?next=https://x"}')$$),
  '22023 the profile''s url "https:/mdm.example.com/e?next=https://x" cannot be used: it is not an absolute URL (scheme://host/...)',
  'a url that is not absolute is refused even when its query holds a "://"');
SELECT is(pg_temp.error_of($$SELECT ade_set_profile('{"profile_name": "x", "url": "https://mdm.example.com:0/e"}')$$),
  '22023 the profile''s url "https://mdm.example.com:0/e" cannot be used: port 0 is not one',
  'a url with port 0 is refused');
SELECT is(pg_temp.error_of($$SELECT ade_set_profile('{"profile_name": "x", "url": "https://mdm..example.com/e"}')$$),
  '22023 the profile''s url "https://mdm..example.com/e" cannot be used: its host name is not one',
  'a host name with an empty label is refused');
SELECT is(pg_temp.error_of($$SELECT ade_set_profile('{"profile_name": "x", "url": "https://user:pw@mdm.example.com/e"}')$$),
  '22023 the profile''s url "https://user:pw@mdm.example.com/e" cannot be used: it holds a user or password', 'a url with a password is refused');
SELECT is(pg_temp.error_of($$SELECT ade_set_profile('{"profile_name": "x", "url": "https://mdm.example.com/e", "devices": ["S1"]}')$$),
  '22023 a profile may not name its own "devices"', 'a profile may not carry a device list of its own (it would escape its scope at Apple)');
SELECT is(pg_temp.error_of($$SELECT ade_set_profile('{"profile_name": "x", "url": "https://mdm.example.com/e", "language": "english"}')$$),
  '22023 the profile''s language "english" is not an ISO 639 code', 'a language that is not a code is refused');
\set unknown `psql -d "$ADE_TEST_DB" -XAtqc "SELECT ade_set_profile('{\"profile_name\": \"x\", \"url\": \"https://mdm.example.com/e\", \"colour\": \"red\"}', platform => 'tvos')" 2>&1 | head -1`
SELECT is(:'unknown'::text, 'WARNING:  the profile has a key Apple does not define: "colour"', 'a key Apple does not define is a WARNING, not silence');
SELECT ade_clear_profile(platform => 'tvos') \g /dev/null

-- 3b. a profile ABM refuses: attention quotes ABM, and it is not sent again
-- until set again (or after ade.failed_retry_interval: 84_fourth_review)
SELECT ade_set_profile('{"profile_name": "Refused", "url": "https://mdm.example.com/e"}') \g /dev/null
\! python3 test/mockctl.py fault '{"method": "POST", "path": "/profile", "status": 400, "body": "CONFIG_URL_REQUIRED", "times": -1}'
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT is((SELECT attention FROM ade_status WHERE token_id = :acme),
  'ABM refused the enrollment profile "Refused" (HTTP 400 CONFIG_URL_REQUIRED): its devices wait; fix it with ade_set_profile() (the next sync sends what is set); unchanged, it is sent again after ade.failed_retry_interval',
  'a profile ABM refuses reaches ade_status.attention, in ABM''s words');
\! python3 test/mockctl.py log-clear
SELECT count(*) FROM ade_sync() \g /dev/null
\set posts `python3 test/mockctl.py logcount 'POST /profile'`
SELECT is(:'posts'::int, 0, 'and the refused profile is not sent again, run after run, within ade.failed_retry_interval');
\! python3 test/mockctl.py faults-clear
SELECT ade_set_profile('{"profile_name": "Fixed", "url": "https://mdm.example.com/e"}') \g /dev/null
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT is((SELECT (attention, assigned) FROM ade_status WHERE token_id = :acme), ('ok'::text, 30::bigint),
  'the fixed profile is defined and assigned, and attention is ok again');
-- a proxy's 408 (or any failure but a 400) is no refusal: the next run sends it again
SELECT ade_set_profile('{"profile_name": "Again", "url": "https://mdm.example.com/e"}') \g /dev/null
\! python3 test/mockctl.py fault '{"method": "POST", "path": "/profile", "status": 408, "body": "", "times": 1}'
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT is((SELECT (attention, assigned) FROM ade_status WHERE token_id = :acme), ('ok'::text, 30::bigint),
  'a 408 on POST /profile is not kept as a refusal: the next run defines and assigns the profile');

-- 4. a token removed and added back
\set removed `psql -d "$ADE_TEST_DB" -XAtqc "SELECT ade_remove_token($(psql -d "$ADE_TEST_DB" -XAtqc "SELECT id FROM abm_tokens WHERE consumer_key = 'CK_acme'"))" 2>&1 | head -1`
SELECT alike(:'removed'::text, 'NOTICE:  abm token % (%) removed: 30 live devices soft-deleted', 'removing a token says how many devices it soft-deleted');
\! test/add-token.sh Acme CK_acme
SELECT is((SELECT id FROM abm_tokens WHERE consumer_key = 'CK_acme'), :'acme'::bigint, 'adding the same token back gives it its id back');
SELECT is((SELECT count(*)::int FROM host_dep_assignments WHERE abm_token_id = :acme AND deleted_at IS NULL), 30, 'and its devices are live again');
\! python3 test/mockctl.py log-clear
SELECT count(*) FROM ade_sync() \g /dev/null
\set fetches `python3 test/mockctl.py logcount 'POST /server/devices'`
\set puts `python3 test/mockctl.py logcount 'PUT /profile/devices'`
SELECT is((:'fetches'::int, :'puts'::int), (0, 0), 'the next sync goes on from its cursor (no full fetch) and assigns nothing again');

-- a removal in the same transaction as a sync that deleted a device: that
-- device does not come back with the token
\! python3 test/mockctl.py devices CK_acme --delete S00000000
\! psql -d "$ADE_TEST_DB" -XAtq -1 -c "SELECT count(*) FROM ade_sync()" -c "SELECT ade_remove_token(id) FROM abm_tokens WHERE consumer_key = 'CK_acme'" >/dev/null 2>&1
\! test/add-token.sh Acme CK_acme
SELECT is((SELECT deleted_at IS NOT NULL FROM host_dep_assignments WHERE hardware_serial = 'S00000000'), true,
  'a device a sync deleted in the removal''s transaction stays deleted when the token comes back');
-- a token whose device lost its host meanwhile comes back with a full
-- fetch: what ABM deleted meanwhile does not come back
SELECT ade_remove_token(:acme) \g /dev/null
DELETE FROM hosts WHERE hardware_serial = 'S00000002';
\! python3 test/mockctl.py devices CK_acme --delete S00000003
\! test/add-token.sh Acme CK_acme
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT is((SELECT (count(*) FILTER (WHERE hardware_serial = 'S00000003'), count(*) FILTER (WHERE hardware_serial = 'S00000002'))::text
             FROM host_dep_assignments WHERE abm_token_id = :acme AND deleted_at IS NULL), '(0,1)',
  'back with a full fetch: the device ABM deleted meanwhile stays deleted, the one that lost its host is back');
-- ABM's pause after a 429 outlives a removal
SELECT ade_set_profile('{"profile_name": "Paused", "url": "https://mdm.example.com/e"}') \g /dev/null
\! python3 test/mockctl.py fault '{"method": "PUT", "path": "/profile/devices", "status": 429, "body": "TOO_MANY_REQUESTS", "headers": {"Retry-After": "3600"}, "times": 1}'
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT ade_remove_token(:acme) \g /dev/null
\! test/add-token.sh Acme CK_acme
SELECT ok((SELECT assign_not_before > now() + interval '59 minutes' FROM abm_tokens WHERE id = :acme),
  'ABM''s pause of the assignment (429, Retry-After: 3600) is kept across a removal');
\! python3 test/mockctl.py faults-clear

-- 5. files in and out, as the README prints them
\set pem `psql -d "$ADE_TEST_DB" -XAtc "SELECT ade_public_key()" > "$ADE_TEST_TMP/mdm.pem" && openssl x509 -in "$ADE_TEST_TMP/mdm.pem" -noout && echo clean`
SELECT is(:'pem'::text, 'clean', 'psql -XAtc "SELECT ade_public_key()" > mdm.pem writes a certificate openssl reads');
\set oneliner `cd "$ADE_TEST_TMP" && echo "SELECT ade_add_token(decode(:'t', 'base64'))" | psql -d "$ADE_TEST_DB" -v t="$(base64 -w0 CK_acme.p7m)" -XAtq 2>&1`
SELECT is(:'oneliner'::text, :'acme', 'the README''s one-line client recipe adds a token');

-- 6. errors that point to the fix
SELECT is(pg_temp.error_of('SELECT ade_add_token(NULL)'), '22004 ade_add_token() needs the server token file, and got NULL',
  'ade_add_token(NULL) says that a token is needed');
\set hint `psql -d "$ADE_TEST_DB" -XAtqc "SELECT * FROM ade_sync(9999)" 2>&1 | grep HINT`
SELECT alike(:'hint'::text, 'HINT:  SELECT id, org_name FROM abm_tokens lists the tokens%', 'ade_sync(9999) hints how to see the tokens');
\set hint `psql -d "$ADE_TEST_DB" -XAtqc "SELECT ade_refresh_account(9999)" 2>&1 | grep HINT`
SELECT is(:'hint'::text, 'HINT:  SELECT id, org_name FROM abm_tokens lists the tokens.', 'so does ade_refresh_account(9999)');
SELECT is(pg_temp.error_of('SELECT ade_set_default_teams(NULL, NULL, NULL, NULL)'), '22004 token_id is null',
  'ade_set_default_teams with a NULL token says so (not "abm token <NULL> does not exist")');
SELECT * FROM finish();
