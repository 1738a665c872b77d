-- A run's requests side by side (issue 21, ahead.c): with the mock at a
-- real round-trip time, a run of several tokens overlaps their requests,
-- and everything a one-at-a-time run guarantees still holds: a failed page
-- rolls back that page only, a 429 pauses its token only, one history row
-- per token and run, a token another session holds is "busy", cancel and
-- statement_timeout end the whole run at once, and afterwards the tables
-- hold exactly what ABM holds.  ade.max_concurrent_requests = 1 is the
-- one-at-a-time run.
\ir setup.psql
SELECT plan(30);
\! for i in 1 2 3 4 5; do test/add-token.sh "Par $i" CK_par$i >/dev/null; python3 test/mockctl.py devices CK_par$i --generate 25 --prefix PA$i >/dev/null; done
SELECT array_agg(id ORDER BY id) AS ids FROM abm_tokens \gset
SELECT id AS p2 FROM abm_tokens WHERE consumer_key = 'CK_par2' \gset
SELECT id AS p4 FROM abm_tokens WHERE consumer_key = 'CK_par4' \gset
SELECT id AS p5 FROM abm_tokens WHERE consumer_key = 'CK_par5' \gset
SET ade.page_size = 5;
SET ade.max_retries = 0;
\! python3 test/mockctl.py latency 100 --jitter 10 >/dev/null

-- a first fetch of five tokens: a 500 on token 2's third page, a 429 on token 4's first
\! python3 test/mockctl.py fault '{"path": "/server/devices", "consumer_key": "CK_par2", "skip": 2, "status": 500, "body": "INTERNAL_ERROR", "times": 1}'
\! python3 test/mockctl.py fault '{"path": "/server/devices", "consumer_key": "CK_par4", "status": 429, "body": "TOO_MANY_REQUESTS", "headers": {"Retry-After": "600"}, "times": 1}'
\! python3 test/mockctl.py log-clear
SELECT coalesce(max(id), 0) AS before FROM ade_sync_runs \gset
SELECT clock_timestamp() AS t0 \gset
CREATE TEMP TABLE p1 AS SELECT * FROM ade_sync();
SELECT extract(epoch FROM clock_timestamp() - :'t0'::timestamptz) * 1000 AS wall_ms \gset
\set reqs `python3 test/mockctl.py log | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["requests"]))'`
SELECT is((SELECT array_agg(added ORDER BY token_id) FROM p1), ARRAY[25, 10, 25, 0, 25],
  'every token fetched, but the pages after token 2''s failed one and token 4''s paused fetch');
SELECT alike((SELECT error FROM p1 WHERE token_id = :p2), 'ABM failed POST /server/devices (HTTP 500)%',
  'token 2''s failed page is its error');
SELECT is((SELECT count(*)::int FROM host_dep_assignments WHERE abm_token_id = :p2), 10,
  'the two pages before it are kept, the failed one is not applied');
SELECT alike((SELECT error FROM p1 WHERE token_id = :p4), 'ABM throttled POST /server/devices (HTTP 429)%',
  'token 4''s 429 is its error');
SELECT ok(EXISTS (SELECT FROM ade_rate_limits WHERE token_id = :p4 AND request = 'fetch'), 'and pauses its fetch');
SELECT is((SELECT count(*) FILTER (WHERE error IS NULL)::int FROM p1), 3, 'the other three tokens have no error');
SELECT is((SELECT array_agg(token_id ORDER BY token_id) FROM ade_sync_runs WHERE id > :before),
  :'ids'::bigint[], 'one ade_sync_runs row per token for the run');
SELECT cmp_ok(:wall_ms::numeric, '<', (:reqs * 100 / 2)::numeric,
  format('the run took less than half of its %s round trips of 100 ms one after another', :reqs));

-- the same, one request at a time
\! python3 test/mockctl.py faults-clear
DELETE FROM ade_rate_limits;
\! python3 test/mockctl.py tokstate CK_par1 --expire-cursors >/dev/null
\! python3 test/mockctl.py tokstate CK_par3 --expire-cursors >/dev/null
UPDATE abm_tokens SET mode = 'fetch', cursor = NULL WHERE consumer_key IN ('CK_par1', 'CK_par3');
\! python3 test/mockctl.py log-clear
SET ade.max_concurrent_requests = 1;
SELECT clock_timestamp() AS t0 \gset
CREATE TEMP TABLE p2 AS SELECT * FROM ade_sync();
SELECT extract(epoch FROM clock_timestamp() - :'t0'::timestamptz) * 1000 AS wall_ms \gset
\set reqs `python3 test/mockctl.py log | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["requests"]))'`
RESET ade.max_concurrent_requests;
SELECT is((SELECT count(*)::int FROM p2 WHERE error IS NULL), 5, 'ade.max_concurrent_requests = 1: every token syncs');
SELECT cmp_ok(:wall_ms::numeric, '>=', (:reqs * 90)::numeric,
  format('one request at a time: its %s round trips one after another', :reqs));
\set label 'after faults in a parallel run'
\ir same_as_abm.psql

-- a token another session holds is busy; the others sync in the same run
\! for i in 1 2 3 4 5; do python3 test/mockctl.py devices CK_par$i --generate 6 --prefix PB$i >/dev/null; done
\! psql -d "$ADE_TEST_DB" -Xqc "BEGIN; SELECT 1 FROM abm_tokens WHERE consumer_key = 'CK_par5' FOR UPDATE; SELECT pg_sleep(2); COMMIT;" >/dev/null 2>&1 &
SELECT pg_temp.wait_for($$SELECT EXISTS (SELECT FROM pg_stat_activity WHERE query LIKE 'BEGIN; SELECT 1 FROM abm_tokens%' AND state = 'active')$$, 10);
SELECT cursor AS p5_cursor FROM abm_tokens WHERE id = :p5 \gset
CREATE TEMP TABLE p3 AS SELECT * FROM ade_sync();
SELECT is((SELECT error FROM p3 WHERE token_id = :p5), 'busy', 'a token another session holds is busy');
SELECT is((SELECT cursor FROM abm_tokens WHERE id = :p5), :'p5_cursor', 'and its cursor is untouched (its answer sent ahead is dropped)');
SELECT is((SELECT sum(added)::int FROM p3 WHERE token_id <> :p5), 24, 'the other four tokens synced their new devices');
SELECT pg_sleep(2.2);
SELECT is((SELECT added FROM ade_sync(:p5)), 6, 'the next run syncs it');

-- statement_timeout in the middle of a parallel run: the whole run ends at once
\! for i in 1 2 3 4 5; do python3 test/mockctl.py devices CK_par$i --generate 12 --prefix PC$i >/dev/null; done
\! python3 test/mockctl.py latency 1000 >/dev/null
\set tout `s=$(date +%s.%N); m=$(psql -d "$ADE_TEST_DB" -XAtq -c "SET ade.page_size = 5" -c "SET statement_timeout = '1500ms'" -c "SELECT count(*) FROM ade_sync()" 2>&1 | grep -o 'canceling statement due to statement timeout'); echo "$m|$(echo "$(date +%s.%N) - $s" | bc)"`
SELECT is(split_part(:'tout', '|', 1), 'canceling statement due to statement timeout',
  'statement_timeout ends a parallel run with its own error');
SELECT cmp_ok(split_part(:'tout', '|', 2)::numeric, '<', 2.6,
  'within a second of the timeout, though five requests were in flight');
SELECT is((SELECT count(*)::int FROM hosts WHERE hardware_serial LIKE 'PC%'), 0, 'and it kept nothing (one transaction)');
-- pg_cancel_backend in the middle of CALL ade_sync_job(): the pages it committed stay
\! for i in 1 2 3 4 5; do python3 test/mockctl.py devices CK_par$i --generate 12 --prefix PE$i >/dev/null; done
\set cout `(sleep 2.5; psql -d "$ADE_TEST_DB" -XAtqc "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = 'ade_par_job'" >/dev/null) & s=$(date +%s.%N); m=$(PGAPPNAME=ade_par_job psql -d "$ADE_TEST_DB" -XAtq -c "SET ade.page_size = 5" -c "CALL ade_sync_job()" 2>&1 | grep -o 'canceling statement due to user request'); echo "$m|$(echo "$(date +%s.%N) - $s" | bc)"`
SELECT is(split_part(:'cout', '|', 1), 'canceling statement due to user request',
  'a cancel ends a parallel CALL ade_sync_job()');
SELECT cmp_ok(split_part(:'cout', '|', 2)::numeric, '<', 3.6, 'within a second of the cancel');
SELECT cmp_ok((SELECT count(*)::int FROM hosts WHERE hardware_serial LIKE 'PC%' OR hardware_serial LIKE 'PE%'), '>', 0,
  'the pages it committed before the cancel stay');
\! python3 test/mockctl.py latency 0 >/dev/null
SELECT is((SELECT count(*)::int FROM ade_sync() WHERE error IS NULL), 5, 'the next run finishes the work');
\set label 'after a cancelled parallel run'
\ir same_as_abm.psql

-- the run's budget holds over every token: ade.max_sync_seconds with requests in flight
\! for i in 1 2 3 4 5; do python3 test/mockctl.py devices CK_par$i --generate 40 --prefix PD$i >/dev/null; done
\! python3 test/mockctl.py latency 400 >/dev/null
SET ade.max_sync_seconds = 1;
SELECT clock_timestamp() AS t0 \gset
CREATE TEMP TABLE p4 AS SELECT * FROM ade_sync();
SELECT cmp_ok(extract(epoch FROM clock_timestamp() - :'t0'::timestamptz)::numeric, '<', 1.6,
  'a run with requests in flight ends within ade.max_sync_seconds');
SELECT is((SELECT count(*)::int FROM p4 WHERE error IS NULL), 5, 'running out of time is no error');
SELECT ok((SELECT count(*) FROM ade_sync_runs WHERE note LIKE '%ade.max_sync_seconds reached%' AND started_at >= :'t0') > 0,
  'the runs'' notes say the budget ran out');
RESET ade.max_sync_seconds;
\! python3 test/mockctl.py latency 0 >/dev/null
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT count(*) FROM ade_sync() \g /dev/null
\set label 'after a run out of time'
\ir same_as_abm.psql
SELECT * FROM finish();
