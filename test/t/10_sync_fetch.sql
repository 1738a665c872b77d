-- Sync rule 1 (fetch, then sync), the cursor, ade.page_size,
-- ade.max_sync_seconds, and ABM's cursor codes.
\ir setup.psql
\! test/add-token.sh Acme CK_acme
SELECT id AS acme FROM abm_tokens WHERE consumer_key = 'CK_acme' \gset
\! python3 test/mockctl.py devices CK_acme --generate 2500 --families Mac,iPhone,iPad,iPod,AppleTV,Vision
SELECT plan(28);

CREATE TEMP TABLE r1 AS SELECT * FROM ade_sync();
SELECT is((SELECT count(*)::int FROM r1), 1, 'ade_sync() returns one row per token');
SELECT is((SELECT mode FROM r1), 'sync', 'the first run fetches to the end, then the token is in sync mode');
SELECT is((SELECT pages FROM r1), 4, '2500 devices at 1000 a page: three fetch pages and one sync page');
SELECT is((SELECT added FROM r1), 2500, 'every fetched device counts as added');
SELECT is((SELECT error FROM r1), NULL, 'a clean run reports no error');
\set serials `python3 test/mockctl.py state CK_acme | python3 -c 'import json,sys; print(json.dumps(sorted(json.load(sys.stdin)["devices"])))'`
SELECT results_eq('SELECT hardware_serial FROM hosts ORDER BY 1',
  format('SELECT jsonb_array_elements_text(%L::jsonb) ORDER BY 1', :'serials'),
  'the hosts are exactly the devices ABM lists, each once');
SELECT is((SELECT count(*)::int FROM host_dep_assignments WHERE abm_token_id = :acme AND deleted_at IS NULL), 2500,
  'every device has a live assignment held by its token');
\set families `python3 test/mockctl.py state CK_acme | python3 -c 'import json,sys; d=json.load(sys.stdin)["devices"]; print(json.dumps({s: r["device_family"] for s, r in d.items()}))'`
SELECT results_eq(
  format($$SELECT h.platform, count(*)::int FROM hosts h JOIN jsonb_each_text(%L::jsonb) f(serial, family) ON f.serial = h.hardware_serial
           GROUP BY 1 ORDER BY 1$$, :'families'),
  format($$SELECT CASE f.family WHEN 'Mac' THEN 'darwin' WHEN 'iPhone' THEN 'ios' WHEN 'iPod' THEN 'ios'
                  WHEN 'iPad' THEN 'ipados' WHEN 'AppleTV' THEN 'tvos' WHEN 'Vision' THEN 'visionos' END, count(*)::int
             FROM jsonb_each_text(%L::jsonb) f(serial, family) GROUP BY 1 ORDER BY 1$$, :'families'),
  'rule 8: each host''s platform follows its device_family (Mac, iPhone, iPod, iPad, AppleTV, Vision)');
SELECT is(ade_platform('Watch'), 'darwin', 'rule 8: a device_family never seen before maps to darwin');
SELECT isnt((SELECT cursor FROM abm_tokens WHERE id = :acme), NULL, 'the cursor is stored with the pages');
SELECT is((SELECT count(*)::int FROM ade_sync_runs WHERE token_id = :acme), 1, 'the run left one ade_sync_runs row');
SELECT ok((SELECT last_sync_at IS NOT NULL AND last_error IS NULL FROM abm_tokens WHERE id = :acme),
  'the run set last_sync_at and cleared last_error');

-- the next run sends the stored cursor to /devices/sync and finds nothing to do
SELECT cursor AS stored_cursor FROM abm_tokens WHERE id = :acme \gset
\! python3 test/mockctl.py log-clear
CREATE TEMP TABLE r2 AS SELECT * FROM ade_sync();
\set sent `python3 test/mockctl.py log --path /devices/sync | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"][-1]["body"]["cursor"])'`
SELECT is(:'sent'::text, :'stored_cursor'::text, 'the next run sends the stored cursor');
SELECT is((SELECT (pages, added, modified, deleted) FROM r2), (1, 0, 0, 0), 'a run with nothing new is one page and changes nothing');
\set nreq `python3 test/mockctl.py log | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["requests"]))'`
SELECT is(:nreq, 1, 'a run with nothing new sends one request (the session is reused)');

-- ade.page_size: the limit sent, and the number of pages
\! test/add-token.sh Beta CK_beta
SELECT id AS beta FROM abm_tokens WHERE consumer_key = 'CK_beta' \gset
\! python3 test/mockctl.py devices CK_beta --generate 700 --prefix B
SET ade.page_size = 300;
\! python3 test/mockctl.py log-clear
CREATE TEMP TABLE r3 AS SELECT * FROM ade_sync(:beta);
RESET ade.page_size;
SELECT is((SELECT (pages, added) FROM r3), (4, 700), 'ade.page_size 300: 700 devices in three fetch pages, then one sync page');
\set limits `python3 test/mockctl.py log | python3 -c 'import json,sys; print(sorted({r["body"]["limit"] for r in json.load(sys.stdin)["requests"] if isinstance(r["body"], dict)}))'`
SELECT is(:'limits'::text, '[300]', 'every page request asks for ade.page_size devices');

-- ade.max_sync_seconds: a slow fetch spans several runs and ends with every device once
\! test/add-token.sh Gamma CK_gamma
SELECT id AS gamma FROM abm_tokens WHERE consumer_key = 'CK_gamma' \gset
\! python3 test/mockctl.py devices CK_gamma --generate 1000 --prefix G
\! python3 test/mockctl.py fault '{"path": "/server/devices", "consumer_key": "CK_gamma", "hang_seconds": 0.4, "times": -1}'
SET ade.page_size = 100;
SET ade.max_sync_seconds = 1;
CREATE TEMP TABLE runs AS SELECT 1 AS n, * FROM ade_sync(:gamma);
SELECT is((SELECT mode FROM runs), 'fetch', 'a run that reaches ade.max_sync_seconds stops mid-fetch');
SELECT cmp_ok((SELECT pages FROM runs), '<', 10, 'and has not fetched every page');
INSERT INTO runs SELECT 2, * FROM ade_sync(:gamma);
INSERT INTO runs SELECT 3, * FROM ade_sync(:gamma);
INSERT INTO runs SELECT 4, * FROM ade_sync(:gamma);
INSERT INTO runs SELECT 5, * FROM ade_sync(:gamma);
INSERT INTO runs SELECT 6, * FROM ade_sync(:gamma);
RESET ade.page_size;
RESET ade.max_sync_seconds;
\! python3 test/mockctl.py faults-clear
SELECT is((SELECT mode FROM abm_tokens WHERE id = :gamma), 'sync', 'the next runs finish the fetch from the stored cursor');
SELECT is((SELECT count(*)::int FROM hosts WHERE hardware_serial LIKE 'G%'), 1000, 'after several runs every device is there');
SELECT is((SELECT sum(added)::int FROM runs), 1000, 'and each was added exactly once');

-- EXHAUSTED_CURSOR: a finished fetch goes on in sync mode
UPDATE abm_tokens SET mode = 'fetch' WHERE id = :acme;
CREATE TEMP TABLE r4 AS SELECT * FROM ade_sync(:acme);
SELECT is((SELECT (mode, error) FROM r4), ('sync'::text, NULL::text), 'EXHAUSTED_CURSOR on a finished fetch switches to sync mode without error');

-- EXPIRED_CURSOR: a full fetch again; a device ABM no longer lists is left as it is
\! python3 test/mockctl.py tokstate CK_acme --expire-cursors
\! python3 test/mockctl.py devices CK_acme --delete S00000007
\! python3 test/mockctl.py log-clear
CREATE TEMP TABLE r5 AS SELECT * FROM ade_sync(:acme);
\set fetches `python3 test/mockctl.py count 'POST /server/devices'`
SELECT ok(:fetches >= 3 AND (SELECT error FROM r5) IS NULL, 'EXPIRED_CURSOR starts a full fetch again, in the same run');
SELECT is((SELECT count(*)::int FROM host_dep_assignments WHERE abm_token_id = :acme), 2500, 'the re-fetch duplicates nothing');
SELECT is((SELECT deleted_at FROM host_dep_assignments WHERE hardware_serial = 'S00000007'), NULL,
  'rule 7: a device the re-fetch no longer lists is left as it is');

-- INVALID_CURSOR: a full fetch again
UPDATE abm_tokens SET cursor = 'not-a-cursor' WHERE id = :acme;
CREATE TEMP TABLE r6 AS SELECT * FROM ade_sync(:acme);
SELECT is((SELECT (mode, error) FROM r6), ('sync'::text, NULL::text), 'INVALID_CURSOR starts a full fetch again and ends in sync mode');

-- rule 3: the same cursor back with more_to_follow ends the run
\! python3 test/mockctl.py fault '{"path": "/devices/sync", "repeat_cursor": true, "times": -1}'
\! python3 test/mockctl.py log-clear
CREATE TEMP TABLE r7 AS SELECT * FROM ade_sync(:acme);
\! python3 test/mockctl.py faults-clear
\set syncs `python3 test/mockctl.py count 'POST /devices/sync'`
SELECT ok((SELECT error FROM r7) IS NULL AND (SELECT pages FROM r7) = 1,
  'rule 3: a repeated cursor with more_to_follow ends the run after one page, without looping');

SELECT * FROM finish();
