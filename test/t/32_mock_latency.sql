-- The mock ABM's round-trip time (issue 21): every ABM request of a token
-- (or of all) answered after a set latency with jitter, so that benchmarks
-- see round trips as Apple's are, not loopback's; a test tool, proven here
-- against the runs' own timing.
\ir setup.psql
SELECT plan(4);
\! test/add-token.sh Slow CK_slow32
\! test/add-token.sh Fast CK_fast32
\! python3 test/mockctl.py devices CK_slow32 --generate 5 >/dev/null
\! python3 test/mockctl.py devices CK_fast32 --generate 5 >/dev/null
SELECT count(*) FROM ade_sync() \g /dev/null
\! python3 test/mockctl.py latency 200 --jitter 20 --consumer-key CK_slow32
\! python3 test/mockctl.py log-clear
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT r.requests AS slow_requests, r.duration_ms AS slow_ms FROM ade_sync_runs r
 WHERE r.org_name = 'Slow' ORDER BY r.id DESC LIMIT 1 \gset
SELECT r.duration_ms AS fast_ms FROM ade_sync_runs r WHERE r.org_name = 'Fast' ORDER BY r.id DESC LIMIT 1 \gset
SELECT cmp_ok(:slow_requests, '>=', 1, 'the slow token''s run asked ABM');
SELECT cmp_ok(:slow_ms::numeric, '>=', (:slow_requests * 180)::numeric, 'each of its requests took at least the latency less the jitter');
SELECT cmp_ok(:fast_ms::numeric, '<', 150::numeric, 'another token''s requests are not slowed');
\! python3 test/mockctl.py latency 0 --consumer-key CK_slow32
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT cmp_ok((SELECT r.duration_ms FROM ade_sync_runs r WHERE r.org_name = 'Slow' ORDER BY r.id DESC LIMIT 1)::numeric, '<', 150::numeric,
  'latency 0 turns it off');
SELECT * FROM finish();
