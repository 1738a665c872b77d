-- Rule 9 and item 4 of the sync issue: two ade_sync() at once never process
-- one token twice and never wait for each other; a busy token is skipped and
-- reported "busy".
\ir setup.psql
\! test/add-token.sh Acme CK_acme
\! test/add-token.sh Beta CK_beta
SELECT id AS acme FROM abm_tokens WHERE consumer_key = 'CK_acme' \gset
SELECT id AS beta FROM abm_tokens WHERE consumer_key = 'CK_beta' \gset
SELECT plan(11);

-- another session holds Acme: this run skips it without waiting, and says so
\! psql -d "$ADE_TEST_DB" -Xqc "BEGIN; SELECT 1 FROM abm_tokens WHERE consumer_key = 'CK_acme' FOR UPDATE; SELECT pg_sleep(3); COMMIT;" >/dev/null 2>&1 &
SELECT ok(pg_temp.wait_for($$SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE query LIKE '%pg_sleep(3)%' AND state = 'active' AND pid <> pg_backend_pid())$$, 10),
  'another session holds the Acme token');
SELECT clock_timestamp() AS t0 \gset
CREATE TEMP TABLE r1 AS SELECT * FROM ade_sync();
SELECT cmp_ok(clock_timestamp() - :'t0'::timestamptz, '<', interval '2 s', 'ade_sync() does not wait for a busy token');
SELECT is((SELECT error FROM r1 WHERE token_id = :acme), 'busy', 'the busy token is reported busy');
SELECT is((SELECT error FROM r1 WHERE token_id = :beta), NULL, 'the other token syncs');
SELECT is((SELECT error FROM ade_sync_runs WHERE token_id = :acme), 'busy', 'the history row says busy');
SELECT is((SELECT last_error FROM abm_tokens WHERE id = :acme), NULL, 'a busy skip does not mark the token as failed');

-- two runs at once over two slow tokens: each token is processed by exactly one
SELECT pg_temp.wait_for($$SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE query LIKE '%pg_sleep(3)%' AND pid <> pg_backend_pid())$$, 10) \g /dev/null
\! python3 test/mockctl.py devices CK_acme --generate 500 --prefix A
\! python3 test/mockctl.py devices CK_beta --generate 500 --prefix B
\! python3 test/mockctl.py tokstate CK_acme --expire-cursors
\! python3 test/mockctl.py tokstate CK_beta --expire-cursors
\! python3 test/mockctl.py fault '{"path": "/server/devices", "hang_seconds": 0.3, "times": -1}'
DELETE FROM ade_sync_runs;
\! psql -d "$ADE_TEST_DB" -Xqc "SET ade.page_size = 100; SELECT * FROM ade_sync()" >"$ADE_TEST_TMP/concurrent.out" 2>&1 &
SELECT pg_temp.wait_for($$SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE query LIKE '%SELECT * FROM ade_sync()%' AND state = 'active' AND pid <> pg_backend_pid())$$, 10) \g /dev/null
SET ade.page_size = 100;
CREATE TEMP TABLE r2 AS SELECT * FROM ade_sync();
RESET ade.page_size;
SELECT pg_temp.wait_for($$SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE query LIKE '%SELECT * FROM ade_sync()%' AND pid <> pg_backend_pid())$$, 30) \g /dev/null
\! python3 test/mockctl.py faults-clear
SELECT is((SELECT count(*)::int FROM ade_sync_runs a JOIN ade_sync_runs b
             ON a.token_id = b.token_id AND a.id < b.id AND a.error IS NULL AND b.error IS NULL
            AND tstzrange(a.started_at, a.finished_at) && tstzrange(b.started_at, b.finished_at)), 0,
  'two runs at once never process the same token at the same time');
SELECT cmp_ok((SELECT count(*)::int FROM ade_sync_runs WHERE error = 'busy'), '>=', 1,
  'the run that came second skipped the token the first one held');
SELECT results_eq('SELECT token_id, sum(added)::int FROM ade_sync_runs GROUP BY 1 ORDER BY 1',
  format('VALUES (%s::bigint, 500), (%s::bigint, 500)', :acme, :beta),
  'each device was added exactly once, by one of the two runs');
SELECT is((SELECT count(*)::int FROM host_dep_assignments WHERE deleted_at IS NULL), 1000,
  'every device of both tokens is there once');
SELECT is((SELECT count(*)::int FROM ade_sync_runs WHERE error IS NOT NULL AND error <> 'busy'), 0,
  'no run failed (no deadlock)');

SELECT * FROM finish();
