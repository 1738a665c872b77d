-- ABM's rate limits kept across runs (issue 21): a 429 (or 503) with a
-- Retry-After that a run does not wait out pauses that token's requests of
-- that kind until then, stored in ade_rate_limits, so that the next run (a
-- new backend, as pg_cron's) sends none of them; the token's other kinds of
-- request and the other tokens go on; ade_status and ade_problems say so.
-- One section per kind of request: session, account, fetch, sync, define,
-- assign; then the forms of Retry-After (seconds, an HTTP date, an absurd
-- one, none).
\ir setup.psql
SELECT plan(43);
\! test/add-token.sh Paused CK_rl
\! test/add-token.sh Other CK_rl2
SELECT id AS rl FROM abm_tokens WHERE consumer_key = 'CK_rl' \gset
SELECT id AS rl2 FROM abm_tokens WHERE consumer_key = 'CK_rl2' \gset
\! python3 test/mockctl.py devices CK_rl --generate 4 --prefix RLA >/dev/null
\! python3 test/mockctl.py devices CK_rl2 --generate 4 --prefix RLB >/dev/null
SET ade.max_retries = 0;
SET ade.retry_backoff = '10ms';
SET ade.max_retry_wait = '2s';

-- fetch: a first fetch answered 429, Retry-After 600
\! python3 test/mockctl.py fault '{"path": "/server/devices", "consumer_key": "CK_rl", "status": 429, "body": "TOO_MANY_REQUESTS", "headers": {"Retry-After": "600"}, "times": 1}'
CREATE TEMP TABLE r1 AS SELECT * FROM ade_sync();
SELECT is((SELECT request || ' ' || status || ' ' || retry_after FROM ade_rate_limits WHERE token_id = :rl),
  'fetch 429 600', 'a 429 on POST /server/devices pauses the token''s fetch, stored');
SELECT ok((SELECT paused_until BETWEEN now() + interval '599 s' AND now() + interval '601 s'
             FROM ade_rate_limits WHERE token_id = :rl), 'until the time ABM asked for');
SELECT is((SELECT added FROM r1 WHERE token_id = :rl2), 4, 'the other token synced in the same run');
\! python3 test/mockctl.py log-clear
-- a new backend, as pg_cron's: nothing in memory carries the pause
\! psql -d "$ADE_TEST_DB" -XAtq -c "CALL ade_sync_job()" >/dev/null
CREATE TEMP TABLE r2 AS SELECT * FROM ade_sync_runs WHERE id = (SELECT max(id) FROM ade_sync_runs WHERE token_id = :rl);
\set fetches `python3 test/mockctl.py logcount 'POST /server/devices'`
SELECT is(:'fetches'::int, 0, 'the next run, in another backend, sends no POST /server/devices for it');
SELECT is((SELECT error FROM r2 WHERE token_id = :rl), NULL, 'that run is no failure: ABM asked for the pause');
SELECT ok((SELECT note FROM ade_sync_runs WHERE token_id = :rl ORDER BY id DESC LIMIT 1) LIKE '%wait until%fetch%',
  'its run''s note says why nothing was asked');
SELECT ok((SELECT paused ? 'fetch' FROM ade_status WHERE token_id = :rl), 'ade_status.paused shows the paused kind');
SELECT ok((SELECT attention LIKE 'ABM asked to wait%fetch until%' FROM ade_status WHERE token_id = :rl),
  'ade_status.attention says it');
SELECT is((SELECT problem FROM ade_problems() WHERE token_id = :rl AND problem = 'rate_limited'), 'rate_limited',
  'ade_problems() has a rate_limited row');
SET ROLE ade_reader;
SELECT is((SELECT count(*)::int FROM ade_rate_limits WHERE token_id = :rl), 1, 'ade_reader reads ade_rate_limits');
SELECT ok((SELECT paused IS NOT NULL FROM ade_status WHERE token_id = :rl), 'and ade_status.paused');
RESET ROLE;
-- the pause is over (as if the time had passed)
UPDATE ade_rate_limits SET paused_until = now() - interval '1 s' WHERE token_id = :rl;
CREATE TEMP TABLE r3 AS SELECT * FROM ade_sync(:rl);
SELECT is((SELECT (added, error) FROM r3), (4, NULL::text), 'once the pause is over the fetch goes on');
SELECT ok((SELECT paused IS NULL FROM ade_status WHERE token_id = :rl), 'and ade_status shows no pause');

-- sync: 503 with Retry-After as an HTTP date an hour ahead
\! python3 test/mockctl.py devices CK_rl --generate 1 --prefix RLC >/dev/null
\! python3 test/mockctl.py fault "{\"path\": \"/devices/sync\", \"consumer_key\": \"CK_rl\", \"status\": 503, \"body\": \"SERVICE_UNAVAILABLE\", \"headers\": {\"Retry-After\": \"$(LC_ALL=C date -u -d '+1 hour' '+%a, %d %b %Y %H:%M:%S GMT')\"}, \"times\": 1}" >/dev/null
CREATE TEMP TABLE r4 AS SELECT * FROM ade_sync(:rl);
SELECT is((SELECT request || ' ' || status FROM ade_rate_limits WHERE token_id = :rl AND paused_until > now()),
  'sync 503', 'a 503 with Retry-After as an HTTP date pauses the token''s sync');
SELECT ok((SELECT retry_after BETWEEN 3590 AND 3600 FROM ade_rate_limits WHERE token_id = :rl AND request = 'sync'),
  'the date is read as the seconds until it');
\! python3 test/mockctl.py log-clear
SELECT count(*) FROM ade_sync(:rl) \g /dev/null
\set syncs `python3 test/mockctl.py logcount 'POST /devices/sync'`
SELECT is(:'syncs'::int, 0, 'no POST /devices/sync until then');
UPDATE ade_rate_limits SET paused_until = now() - interval '1 s' WHERE token_id = :rl;
SELECT is((SELECT added FROM ade_sync(:rl)), 1, 'then the sync goes on');

-- session: no stored session, GET /session answered 429
UPDATE ade_token_secrets SET session_token = NULL WHERE token_id = :rl;
\! python3 test/mockctl.py fault '{"path": "/session", "consumer_key": "CK_rl", "status": 429, "body": "TOO_MANY_REQUESTS", "headers": {"Retry-After": "900"}, "times": 1}'
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT ok(EXISTS (SELECT FROM ade_rate_limits WHERE token_id = :rl AND request = 'session' AND paused_until > now()),
  'a 429 on GET /session pauses the token''s session requests');
\! python3 test/mockctl.py log-clear
SELECT count(*) FROM ade_sync() \g /dev/null
\set sessions `python3 test/mockctl.py logcount 'GET /session'`
\set all `python3 test/mockctl.py log | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["requests"]))'`
SELECT is(:'sessions'::int, 0, 'the next run asks for no session');
SELECT is(:'all'::int, 1, 'and sends only the other token''s request');
UPDATE ade_rate_limits SET paused_until = now() - interval '1 s' WHERE token_id = :rl;
SELECT is((SELECT error FROM ade_sync(:rl)), NULL, 'then a session is asked for and the sync goes on');

-- account: ade_refresh_account() answered 429
\! python3 test/mockctl.py fault '{"path": "/account", "consumer_key": "CK_rl", "status": 429, "body": "TOO_MANY_REQUESTS", "headers": {"Retry-After": "300"}, "times": 1}'
SET client_min_messages = error;
SELECT lives_ok($$SELECT ade_refresh_account($$ || :rl || $$)$$,
  'a 429 on GET /account is a WARNING of ade_refresh_account(), not an error');
SELECT ok(EXISTS (SELECT FROM ade_rate_limits WHERE token_id = :rl AND request = 'account' AND paused_until > now()),
  'and the account requests pause, stored with the call');
\! python3 test/mockctl.py log-clear
SELECT lives_ok($$SELECT ade_refresh_account(id) FROM abm_tokens ORDER BY id$$,
  'a refresh of every token goes on while one is paused');
\set accounts `python3 test/mockctl.py logcount 'GET /account'`
SELECT is(:'accounts'::int, 1, 'only the other token''s account was asked for');
SET client_min_messages = warning;
SELECT is((SELECT count(*)::int FROM ade_sync() WHERE token_id = :rl AND error IS NULL), 1,
  'the paused account does not stop the token''s sync');

-- define: POST /profile answered 429
SET ade.enroll_url = 'https://mdm.example.com/enroll';
\! python3 test/mockctl.py devices CK_rl --generate 2 --prefix RLD >/dev/null
\! python3 test/mockctl.py fault '{"method": "POST", "path": "/profile", "consumer_key": "CK_rl", "status": 429, "body": "TOO_MANY_REQUESTS", "headers": {"Retry-After": "1200"}, "times": 1}'
CREATE TEMP TABLE r5 AS SELECT * FROM ade_sync();
SELECT ok(EXISTS (SELECT FROM ade_rate_limits WHERE token_id = :rl AND request = 'define' AND paused_until > now()),
  'a 429 on POST /profile pauses the token''s profile definitions');
SELECT ok((SELECT assigned FROM r5 WHERE token_id = :rl2) > 0, 'the other token defines and assigns');
\! python3 test/mockctl.py log-clear
CREATE TEMP TABLE r6 AS SELECT * FROM ade_sync(:rl);
\set defines `python3 test/mockctl.py logcount 'POST /profile'`
SELECT is(:'defines'::int, 0, 'the next run sends no POST /profile for it');
SELECT is((SELECT error FROM r6), NULL, 'and records no failure');
UPDATE ade_rate_limits SET paused_until = now() - interval '1 s' WHERE token_id = :rl;
SELECT ok((SELECT assigned FROM ade_sync(:rl)) > 0, 'then the profile is defined and assigned');

-- assign: PUT /profile/devices answered 429
\! python3 test/mockctl.py devices CK_rl --generate 1 --prefix RLE >/dev/null
\! python3 test/mockctl.py fault '{"method": "PUT", "path": "/profile/devices", "consumer_key": "CK_rl", "status": 429, "body": "TOO_MANY_REQUESTS", "headers": {"Retry-After": "1800"}, "times": 1}'
SELECT count(*) FROM ade_sync(:rl) \g /dev/null
SELECT ok(EXISTS (SELECT FROM ade_rate_limits WHERE token_id = :rl AND request = 'assign' AND paused_until > now()),
  'a 429 on PUT /profile/devices pauses the token''s assignments');
\! python3 test/mockctl.py devices CK_rl --generate 1 --prefix RLF >/dev/null
\! python3 test/mockctl.py log-clear
CREATE TEMP TABLE r7 AS SELECT * FROM ade_sync(:rl);
\set puts `python3 test/mockctl.py logcount 'PUT /profile/devices'`
\set syncs `python3 test/mockctl.py logcount 'POST /devices/sync'`
SELECT is(:'puts'::int, 0, 'the next run sends no PUT /profile/devices');
SELECT is((:'syncs'::int, (SELECT added FROM r7)), (1, 1), 'but still syncs the token''s devices');

-- the forms of Retry-After
DELETE FROM ade_rate_limits;
UPDATE abm_tokens SET assign_not_before = NULL;
\! python3 test/mockctl.py devices CK_rl --generate 1 --prefix RLG >/dev/null
\! python3 test/mockctl.py fault '{"path": "/devices/sync", "consumer_key": "CK_rl", "status": 429, "body": "TOO_MANY_REQUESTS", "headers": {"Retry-After": "99999999999"}, "times": 1}'
SELECT count(*) FROM ade_sync(:rl) \g /dev/null
SELECT is((SELECT retry_after FROM ade_rate_limits WHERE token_id = :rl AND request = 'sync'), 86400,
  'an absurd Retry-After is bounded to a day');
\set bounded `grep -c "ABM asked token [0-9]* to wait more than 86400 s before POST /devices/sync; waiting 86400 s" "$ADE_SERVER_LOG" || true`
SELECT cmp_ok(:'bounded'::int, '>=', 1, 'and the bound is logged');
DELETE FROM ade_rate_limits;
\! python3 test/mockctl.py fault '{"path": "/devices/sync", "consumer_key": "CK_rl", "status": 429, "body": "TOO_MANY_REQUESTS", "headers": {"Retry-After": "soon"}, "times": 1}'
SELECT ok((SELECT error FROM ade_sync(:rl)) LIKE 'ABM throttled POST /devices/sync%', 'a Retry-After that is neither form: the 429 is an error');
SELECT is((SELECT count(*)::int FROM ade_rate_limits), 0, 'and no pause is made up');
SET ade.max_retries = 1;
\! python3 test/mockctl.py fault '{"path": "/devices/sync", "consumer_key": "CK_rl", "status": 429, "body": "TOO_MANY_REQUESTS", "headers": {"Retry-After": "1"}, "times": 1}'
SELECT is((SELECT error FROM ade_sync(:rl)), NULL, 'a Retry-After within ade.max_retry_wait is waited out in the run');
SELECT is((SELECT count(*)::int FROM ade_rate_limits), 0, 'and stores no pause');
SET ade.max_retries = 0;
\! python3 test/mockctl.py fault '{"path": "/devices/sync", "consumer_key": "CK_rl", "status": 429, "body": "TOO_MANY_REQUESTS", "headers": {"Retry-After": "1"}, "times": 1}'
SELECT count(*) FROM ade_sync(:rl) \g /dev/null
SELECT is((SELECT retry_after FROM ade_rate_limits WHERE request = 'sync'), 1,
  'with no retry left, even a short one is kept: the next run does not ask before it ends');
-- Retry-After: 0 (or a date gone by) with no retry left pauses nothing
DELETE FROM ade_rate_limits;
\! python3 test/mockctl.py fault '{"path": "/devices/sync", "consumer_key": "CK_rl", "status": 429, "body": "TOO_MANY_REQUESTS", "headers": {"Retry-After": "0"}, "times": 1}'
SELECT count(*) FROM ade_sync(:rl) \g /dev/null
SELECT is((SELECT count(*)::int FROM ade_rate_limits), 0, 'a Retry-After of 0 stores no pause');

-- the 0.5 library on an 0.4 schema (before ALTER EXTENSION ade UPDATE):
-- ade_refresh_account() keeps 0.4's answer to a 429, an error (it has
-- nowhere to keep the pause)
SET ade.allow_drop = on;
DROP EXTENSION ade CASCADE;
RESET ade.allow_drop;
CREATE EXTENSION ade VERSION '0.4';
\! python3 test/mockctl.py reset
\! test/add-token.sh Old CK_old >/dev/null
\! python3 test/mockctl.py fault '{"path": "/account", "consumer_key": "CK_old", "status": 429, "body": "TOO_MANY_REQUESTS", "headers": {"Retry-After": "600"}, "times": 1}'
SELECT throws_like($$SELECT ade_refresh_account((SELECT id FROM abm_tokens))$$, 'ABM throttled GET /account%',
  'on an 0.4 schema a 429 on ade_refresh_account() is the error it was');
SELECT * FROM finish();
