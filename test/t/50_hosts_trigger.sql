-- The special case: DELETE FROM hosts of hosts whose assignment is live
-- leaves a host row for each such serial, same id, as if just ingested;
-- hosts whose assignment is soft-deleted stay gone.  One row, and 10,000
-- rows in one statement; TRUNCATE too.
\ir setup.psql
\! test/add-token.sh Acme CK_acme
SELECT id AS acme FROM abm_tokens WHERE consumer_key = 'CK_acme' \gset
\! python3 test/mockctl.py devices CK_acme --generate 10050 --families Mac,iPhone,iPad
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT plan(16);
SELECT is((SELECT count(*)::int FROM hosts), 10050, 'the sync made 10,050 hosts');

-- one row
UPDATE hosts SET hardware_model = 'changed by hand', platform = 'tvos', created_at = now() - interval '1 day'
 WHERE hardware_serial = 'S00000001';
SELECT id AS one_id FROM hosts WHERE hardware_serial = 'S00000001' \gset
DELETE FROM hosts WHERE hardware_serial = 'S00000001';
SELECT is((SELECT id FROM hosts WHERE hardware_serial = 'S00000001'), :'one_id'::bigint,
  'deleting one host with a live assignment leaves a host row for that serial, with the same id');
SELECT is((SELECT (hardware_model, platform) FROM hosts WHERE hardware_serial = 'S00000001'),
  (SELECT (device->>'model', 'ios'::text) FROM host_dep_assignments WHERE hardware_serial = 'S00000001' AND device->>'device_family' = 'iPhone'),
  'model and platform come from the last ABM record');
SELECT cmp_ok((SELECT created_at FROM hosts WHERE hardware_serial = 'S00000001'), '>', now() - interval '1 minute',
  'created_at is now, as if just ingested');
SELECT is((SELECT (host_id, deleted_at) FROM host_dep_assignments WHERE hardware_serial = 'S00000001'),
  (:'one_id'::bigint, NULL::timestamptz), 'the assignment stays live and points at it');

-- soft-deleted assignments: their hosts stay deleted
\! python3 test/mockctl.py devices CK_acme --delete S00000002,S00000003,S00000004,S00000005,S00000006,S00000007,S00000008,S00000009,S00000010,S00000011,S00000012,S00000013,S00000014,S00000015,S00000016,S00000017,S00000018,S00000019,S00000020,S00000021,S00000022,S00000023,S00000024,S00000025,S00000026,S00000027,S00000028,S00000029,S00000030,S00000031,S00000032,S00000033,S00000034,S00000035,S00000036,S00000037,S00000038,S00000039,S00000040,S00000041,S00000042,S00000043,S00000044,S00000045,S00000046,S00000047,S00000048,S00000049,S00000050,S00000051
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT is((SELECT count(*)::int FROM host_dep_assignments WHERE deleted_at IS NOT NULL), 50, 'ABM deleted 50 devices: their assignments are soft-deleted');
DELETE FROM hosts WHERE hardware_serial = 'S00000002';
SELECT is((SELECT count(*)::int FROM hosts WHERE hardware_serial = 'S00000002'), 0,
  'deleting a host whose assignment is soft-deleted deletes it for good');

-- a host that is not from ADE
INSERT INTO hosts (hardware_serial, platform) VALUES ('MANUAL-1', 'darwin');
DELETE FROM hosts WHERE hardware_serial = 'MANUAL-1';
SELECT is((SELECT count(*)::int FROM hosts WHERE hardware_serial = 'MANUAL-1'), 0, 'a host without an ADE assignment is simply deleted');

-- 10,000 live and 49 soft-deleted in one statement
CREATE TEMP TABLE before AS SELECT id, hardware_serial FROM hosts h
 WHERE EXISTS (SELECT 1 FROM host_dep_assignments d WHERE d.host_id = h.id AND d.deleted_at IS NULL);
SELECT is((SELECT count(*)::int FROM before), 10000, '10,000 hosts have a live assignment');
DELETE FROM hosts;
SELECT is((SELECT count(*)::int FROM hosts), 10000, 'DELETE FROM hosts of 10,049 rows leaves exactly the 10,000 live ones');
SELECT set_eq('SELECT id, hardware_serial FROM hosts', 'SELECT id, hardware_serial FROM before',
  'each with its own id and serial');
SELECT is((SELECT count(*)::int FROM hosts h JOIN host_dep_assignments d ON d.host_id = h.id AND d.deleted_at IS NULL), 10000,
  'every live assignment points at a host');
SELECT is((SELECT count(*)::int FROM hosts WHERE hardware_serial BETWEEN 'S00000003' AND 'S00000051'), 0,
  'the hosts of soft-deleted assignments are gone');
SELECT results_eq('SELECT platform, count(*)::int FROM hosts GROUP BY 1 ORDER BY 1',
  $$SELECT CASE device->>'device_family' WHEN 'Mac' THEN 'darwin' WHEN 'iPhone' THEN 'ios' WHEN 'iPad' THEN 'ipados' END, count(*)::int
      FROM host_dep_assignments WHERE deleted_at IS NULL GROUP BY 1 ORDER BY 1$$, 'the re-made hosts have their platforms from ABM');

-- TRUNCATE fires no delete trigger: the truncate trigger does the same
TRUNCATE hosts;
SELECT set_eq('SELECT id, hardware_serial FROM hosts', 'SELECT id, hardware_serial FROM before',
  'TRUNCATE hosts leaves the live hosts too');

-- the sync goes on normally afterwards
\! python3 test/mockctl.py devices CK_acme --generate 5 --prefix N
SELECT is((SELECT added FROM ade_sync()), 5, 'the next sync adds new devices beside the re-made hosts');

SELECT * FROM finish();
