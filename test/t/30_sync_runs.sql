-- Run history and token state (rule 9): a row per token per committed run;
-- T_C_NOT_SIGNED sets terms_expired, a rejected token sets token_invalid, a
-- success clears both; one failing token does not stop the others; 5xx are
-- retried with backoff inside the run and given up after a bound, keeping
-- the pages before; a cancelled run leaves no row and loses nothing.
\ir setup.psql
\! test/add-token.sh Acme CK_acme
\! test/add-token.sh Beta CK_beta
SELECT id AS acme FROM abm_tokens WHERE consumer_key = 'CK_acme' \gset
SELECT id AS beta FROM abm_tokens WHERE consumer_key = 'CK_beta' \gset
\! python3 test/mockctl.py devices CK_acme --generate 300 --prefix A
\! python3 test/mockctl.py devices CK_beta --generate 300 --prefix B
SELECT plan(22);

-- terms not signed on Acme: recorded, and Beta still syncs
\! python3 test/mockctl.py tokstate CK_acme --terms-expired true --expire-sessions
CREATE TEMP TABLE r1 AS SELECT * FROM ade_sync();
SELECT alike((SELECT error FROM r1 WHERE token_id = :acme), '%T_C_NOT_SIGNED%', 'the run row of a token whose terms are unsigned says so');
SELECT is((SELECT (terms_expired, token_invalid) FROM abm_tokens WHERE id = :acme), (true, false), 'T_C_NOT_SIGNED sets terms_expired');
SELECT alike((SELECT last_error FROM abm_tokens WHERE id = :acme), '%T_C_NOT_SIGNED%', 'and last_error');
SELECT is((SELECT (error, added) FROM r1 WHERE token_id = :beta), (NULL::text, 300), 'one failing token does not stop the others');
SELECT is((SELECT count(*)::int FROM ade_sync_runs), 2, 'every run leaves a row per token, failed or not');
SELECT is((SELECT error FROM ade_sync_runs WHERE token_id = :acme), (SELECT error FROM r1 WHERE token_id = :acme), 'the history row holds the error');

-- a rejected token
\! python3 test/mockctl.py tokstate CK_acme --terms-expired false --rejected true --expire-sessions
CREATE TEMP TABLE r2 AS SELECT * FROM ade_sync(:acme);
SELECT is((SELECT token_invalid FROM abm_tokens WHERE id = :acme), true, 'a rejected token sets token_invalid');

-- success clears both
\! python3 test/mockctl.py tokstate CK_acme --rejected false
CREATE TEMP TABLE r3 AS SELECT * FROM ade_sync(:acme);
SELECT is((SELECT (terms_expired, token_invalid, last_error) FROM abm_tokens WHERE id = :acme), (false, false, NULL::text),
  'a successful run clears terms_expired, token_invalid and last_error');
SELECT is((SELECT added FROM r3), 300, 'and syncs what it could not before');

-- 503 once in the middle of a fetch: retried inside the run
\! python3 test/mockctl.py devices CK_acme --generate 500 --prefix C
\! python3 test/mockctl.py tokstate CK_acme --expire-cursors
\! python3 test/mockctl.py fault '{"path": "/server/devices", "consumer_key": "CK_acme", "skip": 1, "status": 503, "body": "SERVICE_UNAVAILABLE", "times": 1}'
\! python3 test/mockctl.py log-clear
SET ade.page_size = 200;
CREATE TEMP TABLE r4 AS SELECT * FROM ade_sync(:acme);
\set statuses `python3 test/mockctl.py log --path /server/devices | python3 -c 'import json,sys; print([r["status"] for r in json.load(sys.stdin)["requests"]])'`
SELECT is(:'statuses'::text, '[200, 503, 200, 200, 200]', 'a 503 in the middle of a fetch is retried within the run');
SELECT is((SELECT (error, mode) FROM r4), (NULL::text, 'sync'::text), 'and the run ends well');

-- 502 forever on the third page: given up after ade.max_retries; pages before are kept
\! python3 test/mockctl.py tokstate CK_acme --expire-cursors
\! python3 test/mockctl.py fault '{"path": "/server/devices", "consumer_key": "CK_acme", "skip": 2, "status": 502, "body": "BAD_GATEWAY", "times": -1}'
\! python3 test/mockctl.py log-clear
SET ade.max_retries = 2;
CREATE TEMP TABLE r5 AS SELECT * FROM ade_sync(:acme);
\set tries `python3 test/mockctl.py count 'POST /server/devices'`
SELECT is((SELECT pages FROM r5), 2, 'a page that keeps failing ends the run after the pages before it');
SELECT alike((SELECT error FROM r5), '%HTTP 502%', 'the error names the HTTP status');
SELECT is((SELECT mode FROM abm_tokens WHERE id = :acme), 'fetch', 'the token stays in fetch mode');
SELECT cursor AS kept_cursor FROM abm_tokens WHERE id = :acme \gset
\! python3 test/mockctl.py log --path /server/devices | python3 -c 'import json,sys; r=json.load(sys.stdin)["requests"]; print("# statuses:", [x["status"] for x in r])'
\! python3 test/mockctl.py faults-clear
\! python3 test/mockctl.py log-clear
CREATE TEMP TABLE r6 AS SELECT * FROM ade_sync(:acme);
RESET ade.max_retries;
\set sent `python3 test/mockctl.py log --path /server/devices | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"][0]["body"]["cursor"])'`
SELECT is(:'sent'::text, :'kept_cursor'::text, 'the next run goes on from the stored cursor');
SELECT is((SELECT (error, mode) FROM r6), (NULL::text, 'sync'::text), 'and finishes the fetch');
SELECT is((SELECT count(*)::int FROM hosts WHERE hardware_serial LIKE 'A%' OR hardware_serial LIKE 'C%'), 800, 'every Acme device is there');
SELECT is((SELECT count(*)::int FROM host_dep_assignments WHERE abm_token_id = :acme AND deleted_at IS NULL), 800, 'each exactly once');

-- a cancelled run (statement_timeout on a hung page) leaves no row and no change
\! python3 test/mockctl.py devices CK_acme --generate 10 --prefix D
\! python3 test/mockctl.py fault '{"path": "/devices/sync", "consumer_key": "CK_acme", "hang_seconds": 10, "times": 1}'
SELECT count(*) AS runs_before FROM ade_sync_runs \gset
SELECT cursor AS cursor_before FROM abm_tokens WHERE id = :acme \gset
\set ON_ERROR_STOP 0
SET statement_timeout = '500ms';
SELECT * FROM ade_sync() \g /dev/null
RESET statement_timeout;
\set ON_ERROR_STOP 1
SELECT is(:'LAST_ERROR_SQLSTATE'::text, '57014', 'a statement timeout ends a hung run with its own SQLSTATE, not as an ABM error');
SELECT is((SELECT count(*) FROM ade_sync_runs), :'runs_before'::bigint, 'a cancelled run leaves no ade_sync_runs row');
SELECT is((SELECT cursor FROM abm_tokens WHERE id = :acme), :'cursor_before', 'a cancelled run moves no cursor');
CREATE TEMP TABLE r7 AS SELECT * FROM ade_sync(:acme);
SELECT is((SELECT (error, added) FROM r7), (NULL::text, 10), 'the backend is healthy and the next run gets what was missed');

SELECT * FROM finish();
