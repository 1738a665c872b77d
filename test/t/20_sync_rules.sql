-- Sync rules 4 to 8 on hand-made pages: one record per serial (latest
-- op_date), added / modified / deleted, an unknown modified serial, moves
-- between tokens, records without a serial, odd serials, unknown families.
\ir setup.psql
\! test/add-token.sh Acme CK_acme
\! test/add-token.sh Beta CK_beta
SELECT id AS acme FROM abm_tokens WHERE consumer_key = 'CK_acme' \gset
SELECT id AS beta FROM abm_tokens WHERE consumer_key = 'CK_beta' \gset
-- both tokens finish their (empty) fetch first
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT plan(25);

\! python3 test/mockctl.py devices CK_acme --events-json test/data/rules_page1.json
CREATE TEMP TABLE p1 AS SELECT * FROM ade_sync(:acme);
SELECT is((SELECT pages FROM p1), 1, 'the hand-made page arrives as one sync page');
SELECT is((SELECT count(*)::int FROM hosts WHERE hardware_serial = 'R-ADD-DEL'), 0,
  'rule 4: added then deleted in one page: the later deleted wins and no host is made');
SELECT is((SELECT deleted_at IS NULL FROM host_dep_assignments WHERE hardware_serial = 'R-DEL-ADD'), true,
  'rule 4: the latest op_date wins, not the last position in the page');
SELECT is((SELECT platform FROM hosts WHERE hardware_serial = 'R-MOD-NEW'), 'ipados',
  'rule 6: a modified record of an unknown serial becomes a host');
SELECT is((SELECT abm_token_id FROM host_dep_assignments WHERE hardware_serial = 'R-MOD-NEW'), :'acme'::bigint,
  'rule 6: and its assignment is live and held by the token');
SELECT is((SELECT (added, modified, deleted) FROM p1), (5, 0, 0),
  'counts: five serials added (the unknown modified one among them), none modified or deleted');
SELECT is((SELECT skipped FROM ade_sync_runs WHERE token_id = :acme ORDER BY id DESC LIMIT 1), 2,
  'records without a serial (absent or empty) are skipped and counted');
SELECT is((SELECT count(*)::int FROM hosts WHERE hardware_serial = E'Q''"\\ü—1'), 1,
  'a serial with quotes, a backslash and non-ASCII is stored exactly');
SELECT is((SELECT (hardware_model, platform) FROM hosts WHERE hardware_serial = E'Q''"\\ü—1'), ('Odd "model"'::text, 'darwin'::text),
  'rule 8: an unknown device_family is stored as darwin, and the model exactly');
SELECT is((SELECT device->>'model' FROM host_dep_assignments WHERE hardware_serial = 'R-KEEP'), 'iMac',
  'the last device record from ABM is kept on the assignment');

SELECT id AS keep_id, created_at AS keep_created FROM hosts WHERE hardware_serial = 'R-KEEP' \gset
\! python3 test/mockctl.py devices CK_acme --events-json test/data/rules_page2.json
CREATE TEMP TABLE p2 AS SELECT * FROM ade_sync(:acme);
SELECT is((SELECT (added, modified, deleted) FROM p2), (0, 1, 1), 'counts: one modified, one deleted');
SELECT is((SELECT hardware_model FROM hosts WHERE hardware_serial = 'R-KEEP'), 'iMac Pro',
  'rule 6: modified updates what ABM says about the device');
SELECT is((SELECT id FROM hosts WHERE hardware_serial = 'R-KEEP'), :'keep_id'::bigint,
  'rule 6: the host keeps its id');
SELECT isnt((SELECT deleted_at FROM host_dep_assignments WHERE hardware_serial = 'R-DEL-ADD'), NULL,
  'rule 7: deleted soft-deletes the assignment');
SELECT is((SELECT count(*)::int FROM hosts WHERE hardware_serial = 'R-DEL-ADD'), 1,
  'rule 7: the host row stays');

-- a device moves from Acme to Beta
SELECT added_at AS move_added FROM host_dep_assignments WHERE hardware_serial = 'R-MOVE' \gset
SELECT host_id AS move_host FROM host_dep_assignments WHERE hardware_serial = 'R-MOVE' \gset
SELECT pg_sleep(0.01) \g /dev/null
\! python3 test/mockctl.py devices CK_beta --events-json test/data/rules_move_b.json
CREATE TEMP TABLE p3 AS SELECT * FROM ade_sync(:beta);
SELECT is((SELECT abm_token_id FROM host_dep_assignments WHERE hardware_serial = 'R-MOVE'), :'beta'::bigint,
  'rule 5: a device added by another token moves to it');
SELECT cmp_ok((SELECT added_at FROM host_dep_assignments WHERE hardware_serial = 'R-MOVE'), '>', :'move_added'::timestamptz,
  'rule 5: a move sets added_at to now');
SELECT is((SELECT count(*)::int FROM host_dep_assignments WHERE hardware_serial = 'R-MOVE'), 1,
  'a move re-points the one assignment row, it does not add one');
SELECT is((SELECT host_id FROM host_dep_assignments WHERE hardware_serial = 'R-MOVE'), :'move_host'::bigint,
  'a move keeps the host');

\! python3 test/mockctl.py devices CK_acme --events-json test/data/rules_move_a.json
CREATE TEMP TABLE p4 AS SELECT * FROM ade_sync(:acme);
SELECT is((SELECT (abm_token_id, deleted_at) FROM host_dep_assignments WHERE hardware_serial = 'R-MOVE'), (:'beta'::bigint, NULL::timestamptz),
  'rule 7: a later deleted from the old token does not touch the moved device');
SELECT is((SELECT deleted FROM p4), 0, 'and is not counted as a delete');
\! python3 test/mockctl.py devices CK_acme --events-json test/data/rules_move_a2.json
SELECT count(*) FROM ade_sync(:acme) \g /dev/null
SELECT is((SELECT (abm_token_id, device->>'model') FROM host_dep_assignments WHERE hardware_serial = 'R-MOVE'), (:'beta'::bigint, 'Apple TV 4K'::text),
  'an older modified record from the old token does not take the device back');

-- the same page applied twice changes nothing more (a run that died re-sends it)
SELECT count(*) AS hosts_before FROM hosts \gset
SELECT count(*) AS live_before FROM host_dep_assignments WHERE deleted_at IS NULL \gset
\set page1 `cat test/data/rules_page1.json`
SELECT count(*) FROM ade_apply_page(:acme, :'page1'::jsonb, false, (SELECT cursor FROM abm_tokens WHERE id = :acme), 'sync', NULL) \g /dev/null
SELECT is((SELECT count(*) FROM hosts), :'hosts_before'::bigint, 'applying a page again adds no host');
SELECT is((SELECT count(*) FROM host_dep_assignments WHERE deleted_at IS NULL), :'live_before'::bigint, 'applying a page again adds no assignment');
SELECT is((SELECT count(*)::int FROM (SELECT hardware_serial FROM hosts GROUP BY 1 HAVING count(*) > 1) d), 0, 'no serial is duplicated');

SELECT * FROM finish();
