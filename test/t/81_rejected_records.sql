-- No record stops a token (issue 12, case 8): a device record the page
-- cannot apply (bad data, an application's constraint or trigger) does not
-- roll its page back run after run: the rest of the page applies, the
-- cursor moves on, the record is kept in ade_rejected_records with its
-- reason, ade_status says so, later runs try it again once its cause may
-- be gone, and a later record of the same serial replaces it.  Nothing is
-- dropped silently: a record without a serial is kept too.
\ir setup.psql
\! test/add-token.sh Acme CK_acme
SELECT id AS acme FROM abm_tokens WHERE consumer_key = 'CK_acme' \gset
\! python3 test/mockctl.py devices CK_acme --generate 10
SET ade.failed_retry_interval = '1s';
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT plan(16);

-- a page with a record whose op_date is not a date, among good ones
\! echo '[{"serial_number": "G1", "op_type": "added", "op_date": "2026-01-01T00:00:00Z", "device_family": "Mac"}, {"serial_number": "BAD1", "op_type": "added", "op_date": "not a date", "device_family": "Mac"}, {"op_type": "added", "op_date": "2026-01-01T00:00:00Z"}, {"serial_number": "G2", "op_type": "added", "op_date": "2026-01-01T00:00:00Z", "device_family": "iPad"}]' > "$ADE_TEST_TMP/ev.json"
\! python3 test/mockctl.py devices CK_acme --events-json "$ADE_TEST_TMP/ev.json"
CREATE TEMP TABLE r1 AS SELECT * FROM ade_sync();
SELECT is((SELECT (added, error) FROM r1), (2, NULL::text), 'the good records of the page apply, and the run has no error');
SELECT is((SELECT count(*)::int FROM hosts WHERE hardware_serial IN ('G1', 'G2')), 2, 'their hosts are there');
SELECT is((SELECT (hardware_serial, sqlstate, reason LIKE '%not a date%') FROM ade_rejected_records WHERE hardware_serial IS NOT NULL),
  ('BAD1'::text, '22007'::text, true), 'the bad record is kept, with its SQLSTATE and its reason');
SELECT is((SELECT (record->>'op_date', reason) FROM ade_rejected_records WHERE hardware_serial IS NULL),
  ('2026-01-01T00:00:00Z'::text, 'the record has no serial_number'::text), 'a record without a serial is kept too, never dropped');
SELECT is((SELECT skipped FROM ade_sync_runs ORDER BY id DESC LIMIT 1), 2, 'the run counts both as skipped');
SELECT alike((SELECT attention FROM ade_status), '2 device records from ABM could not be applied: see ade_rejected_records%',
  'ade_status.attention says so');
SELECT is((SELECT rejected FROM ade_status), 2::bigint, 'and counts them');
\! python3 test/mockctl.py log-clear
CREATE TEMP TABLE r2 AS SELECT * FROM ade_sync();
\set pages `python3 test/mockctl.py log --path /devices/sync | python3 -c 'import json,sys; print(sum(len(r["body"] and [1] or []) for r in json.load(sys.stdin)["requests"]))'`
SELECT is((SELECT (pages, added, error) FROM r2), (1, 0, NULL::text), 'the cursor moved on: the next run gets nothing new, and fails on nothing');

-- an application's constraint refuses some devices; the others apply
ALTER TABLE hosts ADD CONSTRAINT app_no_x CHECK (hardware_serial NOT LIKE 'X%');
\! python3 test/mockctl.py devices CK_acme --generate 3 --prefix X --families Mac
\! python3 test/mockctl.py devices CK_acme --generate 2 --prefix Y --families Mac
CREATE TEMP TABLE r3 AS SELECT * FROM ade_sync();
SELECT is((SELECT (added, error) FROM r3), (2, NULL::text), 'a constraint of the application refuses some records; the others apply');
SELECT is((SELECT count(*)::int FROM ade_rejected_records WHERE sqlstate = '23514' AND hardware_serial LIKE 'X%'), 3,
  'the refused ones are kept, with the constraint''s SQLSTATE');
-- the cause is fixed: a later run applies them
ALTER TABLE hosts DROP CONSTRAINT app_no_x;
SELECT pg_sleep(1.2) \g /dev/null
CREATE TEMP TABLE r4 AS SELECT * FROM ade_sync();
SELECT is((SELECT (count(*)::int, (SELECT error FROM r4)) FROM hosts WHERE hardware_serial LIKE 'X%'), (3, NULL::text), 'once the cause is gone, a later run applies the kept records');
SELECT is((SELECT count(*)::int FROM ade_rejected_records WHERE hardware_serial LIKE 'X%'), 0, 'and they leave ade_rejected_records');
SELECT is((SELECT (tries >= 2, reason LIKE '%not a date%') FROM ade_rejected_records WHERE hardware_serial = 'BAD1'), (true, true),
  'a record that still cannot apply stays, tried again, with its reason');

-- a later record of the same serial replaces a kept one
ALTER TABLE hosts ADD CONSTRAINT app_no_z CHECK (hardware_serial NOT LIKE 'Z%');
\! python3 test/mockctl.py devices CK_acme --generate 1 --prefix Z --families Mac
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT is((SELECT count(*)::int FROM ade_rejected_records WHERE hardware_serial LIKE 'Z%'), 1, 'a refused record is kept');
ALTER TABLE hosts DROP CONSTRAINT app_no_z;
\! echo '[{"serial_number": "Z00000000", "model": "Mac mini (renamed)"}]' > "$ADE_TEST_TMP/z.json"
\! python3 test/mockctl.py devices CK_acme --modify-json "$ADE_TEST_TMP/z.json"
SET ade.failed_retry_interval = '1h';
UPDATE ade_rejected_records SET retry_at = now() + interval '1 hour' WHERE hardware_serial LIKE 'Z%';
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT is((SELECT hardware_model FROM hosts WHERE hardware_serial = 'Z00000000'), 'Mac mini (renamed)', 'a later record of the same serial applies');
SELECT is((SELECT count(*)::int FROM ade_rejected_records WHERE hardware_serial LIKE 'Z%'), 0, 'and replaces the kept one');
RESET ade.failed_retry_interval;
SELECT * FROM finish();
