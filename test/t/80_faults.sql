-- The fault suite: each fault of ABM, the network or the operators is
-- injected, the sync runs through it, the fault clears, the next sync runs,
-- and then the tables must equal a run without faults (same_as_abm.psql):
-- every device exactly once, live and held by its token, with its host;
-- nothing lost, nothing duplicated, no cursor ahead of its devices.  Last,
-- no secret may be found in the server log or in any table ordinary
-- bookkeeping shows.
\ir setup.psql
\! test/add-token.sh Acme CK_acme
\! test/add-token.sh Beta CK_beta
SELECT id AS acme FROM abm_tokens WHERE consumer_key = 'CK_acme' \gset
SELECT id AS beta FROM abm_tokens WHERE consumer_key = 'CK_beta' \gset
\! python3 test/mockctl.py devices CK_acme --generate 1500 --prefix A
\! python3 test/mockctl.py devices CK_beta --generate 800 --prefix B
SET ade.page_size = 500;
SET ade.retry_backoff = '10ms';
SET ade.max_retries = 2;
SELECT plan(77);

-- 1. 5xx on a page in the middle of a fetch: retried, given up after the bound
\! python3 test/mockctl.py fault '{"path": "/server/devices", "consumer_key": "CK_acme", "skip": 1, "status": 503, "body": "SERVICE_UNAVAILABLE", "times": -1}'
\! python3 test/mockctl.py log-clear
CREATE TEMP TABLE f1 AS SELECT * FROM ade_sync();
\set tries `python3 test/mockctl.py logcount 'POST /server/devices'`
SELECT alike((SELECT error FROM f1 WHERE token_id = :acme), 'ABM failed POST /server/devices (HTTP 503) after 2 retries',
  '503 mid-fetch: retried ade.max_retries times, then a clear error');
SELECT is((SELECT pages FROM f1 WHERE token_id = :acme), 1, '503 mid-fetch: the page before the fault is kept');
SELECT is((SELECT error FROM f1 WHERE token_id = :beta), NULL, '503 mid-fetch: the other token syncs');
\! python3 test/mockctl.py faults-clear
SELECT count(*) FROM ade_sync() \g /dev/null
\set label '503 mid-fetch'
\ir same_as_abm.psql

-- 1. 5xx in the middle of a sync; a short burst is retried within the run
\! python3 test/mockctl.py devices CK_acme --generate 700 --prefix A --start 1500
\! python3 test/mockctl.py devices CK_beta --delete B00000001,B00000002,B00000003
\! python3 test/mockctl.py fault '{"path": "/devices/sync", "consumer_key": "CK_acme", "skip": 1, "status": 502, "body": "BAD_GATEWAY", "times": -1}'
CREATE TEMP TABLE f2 AS SELECT * FROM ade_sync();
SELECT alike((SELECT error FROM f2 WHERE token_id = :acme), '%HTTP 502%', '502 mid-sync: a clear error');
SELECT is((SELECT (pages, added) FROM f2 WHERE token_id = :acme), (1, 500), '502 mid-sync: the page before is kept');
\! python3 test/mockctl.py faults-clear
\! python3 test/mockctl.py fault '{"path": "/devices/sync", "consumer_key": "CK_acme", "status": 500, "body": "INTERNAL", "times": 2}'
CREATE TEMP TABLE f3 AS SELECT * FROM ade_sync();
SELECT is((SELECT error FROM f3 WHERE token_id = :acme), NULL, '500 twice mid-sync: retried with backoff inside the run, which ends well');
\set label '5xx mid-sync'
\ir same_as_abm.psql
SELECT is((SELECT count(*)::int FROM host_dep_assignments WHERE deleted_at IS NOT NULL), 3, '5xx mid-sync: the three devices ABM deleted are soft-deleted');

-- 2. a hung answer: ade.http_timeout ends it
\! python3 test/mockctl.py devices CK_acme --generate 50 --prefix H
\! python3 test/mockctl.py fault '{"path": "/devices/sync", "consumer_key": "CK_acme", "hang_seconds": 20, "times": 1}'
SET ade.http_timeout = 300;
CREATE TEMP TABLE f4 AS SELECT * FROM ade_sync(:acme);
RESET ade.http_timeout;
SELECT alike((SELECT error FROM f4), 'ABM request POST /devices/sync timed out after 300 ms', 'a hung page: ade.http_timeout ends it with a clear error');
SELECT count(*) FROM ade_sync() \g /dev/null
\set label 'hung page, http_timeout'
\ir same_as_abm.psql

-- 2. statement_timeout ends a hung page within a second; the same session syncs afterwards
\! python3 test/mockctl.py devices CK_acme --generate 50 --prefix I
\! python3 test/mockctl.py fault '{"path": "/devices/sync", "consumer_key": "CK_acme", "hang_seconds": 20, "times": 1}'
SELECT clock_timestamp() AS t0 \gset
\set ON_ERROR_STOP 0
SET statement_timeout = '500ms';
SELECT * FROM ade_sync() \g /dev/null
RESET statement_timeout;
\set ON_ERROR_STOP 1
SELECT is(:'LAST_ERROR_SQLSTATE'::text, '57014', 'a hung page: statement_timeout cancels it (57014)');
SELECT cmp_ok(clock_timestamp() - :'t0'::timestamptz, '<', interval '1.5 s', 'within a second of the timeout');
SELECT count(*) FROM ade_sync() \g /dev/null
\set label 'hung page, statement_timeout, same session'
\ir same_as_abm.psql

-- 2. pg_cancel_backend ends it within a second; the same session syncs afterwards
\! python3 test/mockctl.py devices CK_acme --generate 50 --prefix J
\! python3 test/mockctl.py fault '{"path": "/devices/sync", "consumer_key": "CK_acme", "hang_seconds": 20, "times": 1}'
SELECT pg_backend_pid() AS me \gset
\setenv ADE_ME :me
\! (sleep 0.7; psql -d "$ADE_TEST_DB" -XAtqc "select pg_cancel_backend($ADE_ME)" >/dev/null) &
SELECT clock_timestamp() AS t0 \gset
\set ON_ERROR_STOP 0
SELECT * FROM ade_sync() \g /dev/null
\set ON_ERROR_STOP 1
SELECT is(:'LAST_ERROR_MESSAGE'::text, 'canceling statement due to user request', 'a hung page: pg_cancel_backend cancels it');
SELECT cmp_ok(clock_timestamp() - :'t0'::timestamptz, '<', interval '1.8 s', 'within a second of the cancel');
SELECT count(*) FROM ade_sync() \g /dev/null
\set label 'hung page, pg_cancel_backend, same session'
\ir same_as_abm.psql

-- 3. a connection cut mid-body (every try)
\! python3 test/mockctl.py devices CK_beta --generate 50 --prefix K
\! python3 test/mockctl.py fault '{"path": "/devices/sync", "consumer_key": "CK_beta", "cut_body": true, "times": -1}'
CREATE TEMP TABLE f5 AS SELECT * FROM ade_sync(:beta);
SELECT alike((SELECT error FROM f5), 'ABM request POST /devices/sync failed:%', 'a body cut short: a clear error after the retries');
\! python3 test/mockctl.py faults-clear
SELECT count(*) FROM ade_sync() \g /dev/null
\set label 'body cut short'
\ir same_as_abm.psql

-- 3. truncated JSON, invalid JSON, a 200 without devices, a 200 without cursor
\! python3 test/mockctl.py devices CK_beta --generate 50 --prefix L
\! python3 test/mockctl.py fault '{"path": "/devices/sync", "consumer_key": "CK_beta", "truncate_json": true, "times": 1}'
CREATE TEMP TABLE f6 AS SELECT * FROM ade_sync(:beta);
SELECT alike((SELECT error FROM f6), 'ABM answered POST /devices/sync with invalid JSON', 'truncated JSON: a clear error');
\! python3 test/mockctl.py fault '{"path": "/devices/sync", "consumer_key": "CK_beta", "status": 200, "body": "{\"devices\": [{\"serial_number\": \"X1\"}, oops", "times": 1}'
CREATE TEMP TABLE f7 AS SELECT * FROM ade_sync(:beta);
SELECT alike((SELECT error FROM f7), 'ABM answered POST /devices/sync with invalid JSON', 'invalid JSON: a clear error');
\! python3 test/mockctl.py fault '{"path": "/devices/sync", "consumer_key": "CK_beta", "json_drop": ["devices"], "times": 1}'
CREATE TEMP TABLE f8 AS SELECT * FROM ade_sync(:beta);
SELECT is((SELECT error FROM f8), 'ABM answered POST /devices/sync without a "devices" array', 'a 200 without devices: a clear error');
\! python3 test/mockctl.py fault '{"path": "/devices/sync", "consumer_key": "CK_beta", "json_drop": ["cursor"], "times": 1}'
CREATE TEMP TABLE f9 AS SELECT * FROM ade_sync(:beta);
SELECT is((SELECT error FROM f9), 'ABM answered POST /devices/sync without a "cursor"', 'a 200 without cursor: a clear error');
SELECT is((SELECT count(*)::int FROM hosts WHERE hardware_serial LIKE 'L%'), 0, 'bad answers store nothing');
SELECT count(*) FROM ade_sync() \g /dev/null
\set label 'bad JSON answers'
\ir same_as_abm.psql

-- 4. an answer over ade.max_response_bytes: a clear error, and no memory blow-up
\! python3 test/mockctl.py devices CK_beta --generate 400 --prefix M
SET ade.max_response_bytes = '64kB';
CREATE TEMP TABLE f10 AS SELECT * FROM ade_sync(:beta);
RESET ade.max_response_bytes;
SELECT is((SELECT error FROM f10), 'ABM response is larger than ade.max_response_bytes (65536 bytes)', 'a page over the size cap: a clear error');
SELECT (regexp_match(pg_read_file('/proc/' || pg_backend_pid() || '/status'), 'VmHWM:\s+(\d+)'))[1]::int AS hwm0 \gset
\! python3 test/mockctl.py fault '{"path": "/devices/sync", "consumer_key": "CK_beta", "pad_bytes": 60000000, "times": 1}'
SET ade.max_response_bytes = '1MB';
CREATE TEMP TABLE f11 AS SELECT * FROM ade_sync(:beta);
RESET ade.max_response_bytes;
SELECT alike((SELECT error FROM f11), 'ABM response is larger than ade.max_response_bytes%', 'a 60 MB answer over a 1 MB cap: a clear error');
SELECT cmp_ok((regexp_match(pg_read_file('/proc/' || pg_backend_pid() || '/status'), 'VmHWM:\s+(\d+)'))[1]::int - :hwm0, '<', 10240,
  'and the backend''s peak memory grew by less than 10 MB');
SELECT count(*) FROM ade_sync() \g /dev/null
\set label 'oversized answers'
\ir same_as_abm.psql

-- 5. 429: a short Retry-After is waited out within the run; a long one leaves the token for later
\! python3 test/mockctl.py devices CK_acme --generate 20 --prefix N
\! python3 test/mockctl.py fault '{"path": "/devices/sync", "consumer_key": "CK_acme", "status": 429, "body": "TOO_MANY_REQUESTS", "headers": {"Retry-After": "1"}, "times": 1}'
SELECT clock_timestamp() AS t0 \gset
CREATE TEMP TABLE f12 AS SELECT * FROM ade_sync(:acme);
SELECT is((SELECT (error, added) FROM f12), (NULL::text, 20), '429 with Retry-After: 1 is waited out within the run');
SELECT cmp_ok(clock_timestamp() - :'t0'::timestamptz, '>=', interval '1 s', 'the run waited the second ABM asked for');
\! python3 test/mockctl.py devices CK_acme --generate 20 --prefix O
\! python3 test/mockctl.py fault '{"path": "/devices/sync", "consumer_key": "CK_acme", "status": 429, "body": "TOO_MANY_REQUESTS", "headers": {"Retry-After": "3600"}, "times": 1}'
CREATE TEMP TABLE f13 AS SELECT * FROM ade_sync(:acme);
SELECT alike((SELECT error FROM f13), 'ABM throttled POST /devices/sync (HTTP 429), retry after 3600 s', '429 with a long Retry-After leaves the token for a later run');
SELECT is((SELECT request || ' ' || status || ' ' || retry_after FROM ade_rate_limits WHERE token_id = :acme),
  'sync 429 3600', 'the long Retry-After is stored: the token''s sync requests pause');
\! python3 test/mockctl.py log-clear
CREATE TEMP TABLE f13b AS SELECT * FROM ade_sync(:acme);
\set syncs `python3 test/mockctl.py logcount 'POST /devices/sync'`
SELECT is(:'syncs'::int, 0, 'the next run sends no POST /devices/sync while the pause lasts');
SELECT is((SELECT error FROM f13b), NULL, 'and that run is no failure: ABM asked for it');
-- the hour is over
DELETE FROM ade_rate_limits WHERE token_id = :acme;
SELECT count(*) FROM ade_sync() \g /dev/null
\set label '429'
\ir same_as_abm.psql

-- 5. the session expires between pages (401): a new session, the page again, the run goes on
\! python3 test/mockctl.py tokstate CK_acme --expire-cursors
\! python3 test/mockctl.py fault '{"path": "/server/devices", "consumer_key": "CK_acme", "skip": 2, "status": 401, "body": "UNAUTHORIZED", "times": 1}'
\! python3 test/mockctl.py log-clear
CREATE TEMP TABLE f14 AS SELECT * FROM ade_sync(:acme);
\set sessions `python3 test/mockctl.py logcount 'GET /session'`
SELECT is((SELECT error FROM f14), NULL, 'a 401 between pages: the run goes on');
SELECT is(:'sessions'::int, 1, 'after one new GET /session');
\set label 'session expiry between pages'
\ir same_as_abm.psql

-- 5. a rotated session header on a page: the next pages use the new session
\! python3 test/mockctl.py tokstate CK_acme --expire-cursors
\! python3 test/mockctl.py fault '{"path": "/server/devices", "consumer_key": "CK_acme", "skip": 1, "rotate_session": true, "times": 1}'
\! python3 test/mockctl.py log-clear
CREATE TEMP TABLE f15 AS SELECT * FROM ade_sync(:acme);
\set rot `python3 test/mockctl.py log --path /server/devices | python3 -c 'import json,sys; r=json.load(sys.stdin)["requests"]; print(len({x["session"] for x in r}), [x["status"] for x in r])'`
SELECT is((SELECT error FROM f15), NULL, 'a rotated session header: the run goes on');
SELECT is(:'rot'::text, '2 [200, 200, 200, 200, 200]', 'the pages after the rotation use the new session, none is refused');
\set label 'rotated session'
\ir same_as_abm.psql

-- 5. T_C_NOT_SIGNED on a page
\! python3 test/mockctl.py devices CK_beta --generate 20 --prefix P
\! python3 test/mockctl.py fault '{"path": "/devices/sync", "consumer_key": "CK_beta", "status": 403, "body": "T_C_NOT_SIGNED", "times": 1}'
CREATE TEMP TABLE f16 AS SELECT * FROM ade_sync(:beta);
SELECT is((SELECT terms_expired FROM abm_tokens WHERE id = :beta), true, 'T_C_NOT_SIGNED on a page sets terms_expired');
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT is((SELECT terms_expired FROM abm_tokens WHERE id = :beta), false, 'and the next good run clears it');
\set label 'T_C_NOT_SIGNED on a page'
\ir same_as_abm.psql

-- 6. EXPIRED_CURSOR in the middle of a sync, with changes pending
\! python3 test/mockctl.py devices CK_acme --generate 30 --prefix Q
\! python3 test/mockctl.py tokstate CK_acme --expire-cursors
CREATE TEMP TABLE f17 AS SELECT * FROM ade_sync(:acme);
SELECT is((SELECT (error, mode) FROM f17), (NULL::text, 'sync'::text), 'EXPIRED_CURSOR mid-sync: a full fetch in the same run');
\set label 'EXPIRED_CURSOR mid-sync'
\ir same_as_abm.psql

-- 7. the backend killed in the middle of a run
\! python3 test/mockctl.py devices CK_acme --generate 600 --prefix R
\! python3 test/mockctl.py tokstate CK_acme --expire-cursors
\! python3 test/mockctl.py fault '{"path": "/server/devices", "consumer_key": "CK_acme", "skip": 2, "hang_seconds": 20, "times": 1}'
\! PGAPPNAME=ade_victim psql -d "$ADE_TEST_DB" -Xqc "SET ade.page_size = 500; SELECT * FROM ade_sync()" >/dev/null 2>&1 &
SELECT ok(pg_temp.wait_for($$SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name = 'ade_victim' AND state = 'active')$$, 10),
  'a run has started');
SELECT pg_sleep(1.5) \g /dev/null
SELECT pg_stat_clear_snapshot() \g /dev/null
SELECT ok(EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name = 'ade_victim' AND state = 'active'),
  'and is still in it 1.5 s later, on a hung page');
SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'ade_victim' \g /dev/null
SELECT ok(pg_temp.wait_for($$SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name = 'ade_victim')$$, 10),
  'pg_terminate_backend ends it');
\! python3 test/mockctl.py faults-clear
CREATE TEMP TABLE f18 AS SELECT * FROM ade_sync();
SELECT is((SELECT count(*)::int FROM f18 WHERE error IS NOT NULL), 0, 'the next run finishes the work');
\set label 'backend killed mid-run'
\ir same_as_abm.psql

-- 8. two, then four ade_sync() at once over four tokens while another session deletes hosts
\! test/add-token.sh Gamma CK_gamma
\! test/add-token.sh Delta CK_delta
\! python3 test/mockctl.py devices CK_gamma --generate 400 --prefix G
\! python3 test/mockctl.py devices CK_delta --generate 400 --prefix D
\! python3 test/mockctl.py fault '{"path": "/*devices*", "hang_seconds": 0.05, "times": -1}'
DELETE FROM ade_sync_runs;
-- (the sessions of each round start together, and the round ends when all
-- of them have: a check of pg_stat_activity could look before they begin)
\! for i in 1 2; do PGAPPNAME=ade_racer psql -d "$ADE_TEST_DB" -Xqc "SET ade.page_size = 100; SELECT * FROM ade_sync(); SELECT * FROM ade_sync(); SELECT * FROM ade_sync();" >"$ADE_TEST_TMP/racer2_$i.out" 2>&1 & done; PGAPPNAME=ade_deleter psql -d "$ADE_TEST_DB" -Xqc "DELETE FROM hosts WHERE id % 7 = 0; SELECT pg_sleep(0.2); DELETE FROM hosts WHERE id % 5 = 0; SELECT pg_sleep(0.2); DELETE FROM hosts WHERE hardware_serial LIKE 'G%';" >"$ADE_TEST_TMP/deleter2.out" 2>&1 & wait
SELECT ok(pg_temp.wait_for($$SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name IN ('ade_racer', 'ade_deleter'))$$, 60),
  'two concurrent syncs and a host deleter finish');
\! for i in 1 2 3 4; do PGAPPNAME=ade_racer psql -d "$ADE_TEST_DB" -Xqc "SET ade.page_size = 100; SELECT * FROM ade_sync(); SELECT * FROM ade_sync(); SELECT * FROM ade_sync();" >"$ADE_TEST_TMP/racer4_$i.out" 2>&1 & done; python3 test/mockctl.py devices CK_gamma --generate 300 --prefix G --start 400; python3 test/mockctl.py devices CK_delta --delete D00000001,D00000002; PGAPPNAME=ade_deleter psql -d "$ADE_TEST_DB" -Xqc "DELETE FROM hosts WHERE id % 3 = 0; SELECT pg_sleep(0.2); DELETE FROM hosts; SELECT pg_sleep(0.2); DELETE FROM hosts WHERE hardware_serial LIKE 'A%';" >"$ADE_TEST_TMP/deleter4.out" 2>&1 & wait
SELECT ok(pg_temp.wait_for($$SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name IN ('ade_racer', 'ade_deleter'))$$, 90),
  'four concurrent syncs and a host deleter finish');
\! python3 test/mockctl.py faults-clear
\set racer_errors `cat "$ADE_TEST_TMP"/racer*.out "$ADE_TEST_TMP"/deleter*.out | grep -c -E 'ERROR|deadlock' || true`
SELECT is(:'racer_errors'::int, 0, 'no session failed: no deadlock, no error');
SELECT is((SELECT count(*)::int FROM ade_sync_runs WHERE error IS NOT NULL AND error <> 'busy'), 0, 'no run recorded an error');
SELECT is((SELECT count(*)::int FROM ade_sync_runs a JOIN ade_sync_runs b
             ON a.token_id = b.token_id AND a.id < b.id AND a.error IS NULL AND b.error IS NULL
            AND tstzrange(a.started_at, a.finished_at) && tstzrange(b.started_at, b.finished_at)), 0,
  'no token was processed by two runs at the same time');
SELECT cmp_ok((SELECT count(*)::int FROM ade_sync_runs WHERE error = 'busy'), '>', 0, 'the runs did meet (some skipped a busy token)');
SELECT count(*) FROM ade_sync() \g /dev/null
\set label 'concurrent syncs while hosts are deleted'
\ir same_as_abm.psql

-- no secret in the server log, in the run history, or in any error
\! python3 test/mockctl.py secrets > "$ADE_TEST_TMP/secrets.txt"
\set nsecrets `wc -l < "$ADE_TEST_TMP/secrets.txt"`
SELECT cmp_ok(:'nsecrets'::int, '>=', 12, 'the mock handed out the secrets of four tokens and their sessions');
\set inlog `grep -c -F -f "$ADE_TEST_TMP/secrets.txt" "$ADE_SERVER_LOG" || true`
SELECT is(:'inlog'::int, 0, 'no token secret or session token appears in the server log');
\set secrets `python3 -c 'import json,os; print(json.dumps(open(os.environ["ADE_TEST_TMP"] + "/secrets.txt").read().split()))'`
SELECT is((SELECT count(*)::int FROM jsonb_array_elements_text(:'secrets'::jsonb) s(v)
            WHERE EXISTS (SELECT 1 FROM ade_sync_runs r WHERE strpos(r::text, s.v) > 0)
               OR EXISTS (SELECT 1 FROM abm_tokens t WHERE strpos(t::text, s.v) > 0)
               OR EXISTS (SELECT 1 FROM ade_token_secrets x WHERE strpos(x::text, s.v) > 0)), 0,
  'no secret appears in ade_sync_runs, abm_tokens, or (unsealed) in ade_token_secrets');

SELECT * FROM finish();
