-- A token whose requests hang gets its share of the run, not the whole run:
-- a request sent ahead is waited for no longer than the loop would wait for
-- its own (attack review of issue 21, F1).
\ir setup.psql
SELECT plan(3);
\! for i in 1 2 3; do test/add-token.sh "H $i" CK_h$i >/dev/null; python3 test/mockctl.py devices CK_h$i --generate 10 --prefix HA$i >/dev/null; done
\! python3 test/mockctl.py fault '{"path": "/server/devices", "consumer_key": "CK_h1", "hang_seconds": 20, "times": 1}' >/dev/null
SET ade.max_sync_seconds = 6; SET ade.max_retries = 0;   -- ade.max_concurrent_requests: default 32
CREATE TEMP TABLE r AS SELECT * FROM ade_sync();
SELECT is((SELECT sum(added)::int FROM r WHERE token_id <> (SELECT min(id) FROM abm_tokens)), 20,
  'tokens 2 and 3 sync although token 1 hangs (as with max_concurrent_requests = 1)');
SELECT cmp_ok((SELECT duration_ms FROM ade_sync_runs ORDER BY id LIMIT 1)::numeric, '<', 2600::numeric,
  'token 1 gets its share (6 s / 3 tokens), not the whole run');
SELECT ok((SELECT count(*) FROM ade_sync_runs WHERE note LIKE '%max_sync_seconds reached%') = 1,
  'only the hung token runs out of time');
SELECT * FROM finish();
