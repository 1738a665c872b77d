-- ade.max_sync_seconds bounds the whole ade_sync() run, over every token,
-- HTTP retries and the assignment included (issue 12, case 4): each token
-- gets a fair share of the budget, no request runs past the end of the run
-- (its timeouts are cut to the time left), no retry starts after it, and
-- running out of time is a note, not an error.  0.3 gave each token the
-- whole budget: three tokens in a fetch took three budgets.
\ir setup.psql
\! test/add-token.sh Acme CK_acme
\! test/add-token.sh Beta CK_beta
\! test/add-token.sh Gamma CK_gamma
\! python3 test/mockctl.py devices CK_acme --generate 40
\! python3 test/mockctl.py devices CK_beta --generate 40 --prefix B
\! python3 test/mockctl.py devices CK_gamma --generate 40 --prefix G
SELECT plan(11);
SET ade.page_size = 2;
SET ade.max_sync_seconds = 3;
-- every fetch page takes 0.4 s: each token alone would need 8 s
\! python3 test/mockctl.py fault '{"path": "/server/devices", "hang_seconds": 0.4, "times": -1}'
SELECT clock_timestamp() AS t0 \gset
CREATE TEMP TABLE r1 AS SELECT * FROM ade_sync();
SELECT clock_timestamp() - :'t0'::timestamptz AS took \gset
SELECT cmp_ok(:'took'::interval, '<', interval '4.5 s', 'three tokens in a fetch: the run ends within its 3 s budget (and a margin), not three budgets');
SELECT is((SELECT count(*)::int FROM r1 WHERE pages > 0), 3, 'each token got a share of the budget and fetched pages');
SELECT is((SELECT count(*)::int FROM r1 WHERE error IS NULL AND mode = 'fetch'), 3, 'none failed: they stay in fetch mode');
SELECT is((SELECT count(*)::int FROM ade_sync_runs WHERE note LIKE 'ade.max_sync_seconds reached; the next run goes on from the stored cursor%'), 3,
  'each run row says the budget was reached');
\! python3 test/mockctl.py faults-clear
RESET ade.page_size;

-- one hung request is cut at the end of the run, not at ade.http_timeout
\! python3 test/mockctl.py fault '{"path": "/server/devices", "consumer_key": "CK_acme", "hang_seconds": 20, "times": 1}'
SET ade.http_timeout = '30s';
SELECT clock_timestamp() AS t0 \gset
CREATE TEMP TABLE r2 AS SELECT * FROM ade_sync();
SELECT clock_timestamp() - :'t0'::timestamptz AS took \gset
SELECT cmp_ok(:'took'::interval, '<', interval '4.5 s', 'a request that hangs is cut at the end of the run''s budget');
SELECT is((SELECT error FROM r2 WHERE org_name = 'Acme'), NULL, 'and that is not an error of the token');
\! python3 test/mockctl.py faults-clear

-- retries stop at the end of the run
SET ade.max_retries = 10;
SET ade.retry_backoff = '1s';
\! python3 test/mockctl.py fault '{"path": "/server/devices", "status": 503, "body": "SERVICE_UNAVAILABLE", "times": -1}'
SELECT clock_timestamp() AS t0 \gset
CREATE TEMP TABLE r3 AS SELECT * FROM ade_sync();
SELECT clock_timestamp() - :'t0'::timestamptz AS took \gset
SELECT cmp_ok(:'took'::interval, '<', interval '4.5 s', 'retries with backoff stop at the end of the run''s budget');
SELECT alike((SELECT error FROM r3 WHERE org_name = 'Acme'), 'ABM failed POST /server/devices (HTTP 503) after % retries',
  'the 503 that outlasted them is the error');
\! python3 test/mockctl.py faults-clear
RESET ade.max_retries;
RESET ade.retry_backoff;
RESET ade.http_timeout;

-- with the faults gone and the budget back, the next runs finish the fetch
RESET ade.max_sync_seconds;
CREATE TEMP TABLE r4 AS SELECT * FROM ade_sync();
SELECT is((SELECT count(*)::int FROM host_dep_assignments WHERE deleted_at IS NULL), 120,
  'and nothing was lost or skipped: the next run fetches the rest from the stored cursors');

-- an application holds a host's row: the run waits for it no longer than
-- its budget (lock_timeout), and the wait is an error of the token
\! echo '[{"serial_number": "S00000001", "model": "locked"}]' > "$ADE_TEST_TMP/lk.json"
\! python3 test/mockctl.py devices CK_acme --modify-json "$ADE_TEST_TMP/lk.json"
\! (psql -d "$ADE_TEST_DB" -XAtq -c "BEGIN" -c "SELECT 1 FROM hosts WHERE hardware_serial = 'S00000001' FOR UPDATE" -c "SELECT pg_sleep(12), 'holding'" -c "COMMIT" > /dev/null 2>&1 &)
SELECT ok(pg_temp.wait_for($$SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE query LIKE '%pg_sleep(12), ''holding''%' AND pid <> pg_backend_pid())$$, 10),
  'an application''s transaction holds a host');
SET ade.max_sync_seconds = 3;
SELECT clock_timestamp() AS t0 \gset
CREATE TEMP TABLE r5 AS SELECT * FROM ade_sync();
SELECT clock_timestamp() - :'t0'::timestamptz AS took \gset
RESET ade.max_sync_seconds;
SELECT cmp_ok(:'took'::interval, '<', interval '5 s', 'a run waits for a row lock no longer than its budget');
-- (the application's transaction ends before the next file drops the extension)
SELECT pg_temp.wait_for($$SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE query LIKE '%pg_sleep(12), ''holding''%' AND pid <> pg_backend_pid())$$, 20) \g /dev/null
SELECT * FROM finish();
