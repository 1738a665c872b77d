-- The roles users really use (issue 12, case 7), each statement in its own
-- psql session as that role: an application granted DML on hosts can
-- delete, truncate, move and re-serial hosts and sees the special case work
-- (0.3: permission denied for table abm_tokens); ade_reader can SELECT *
-- from every view and table granted to it (0.3: SELECT * FROM ade_status
-- failed with permission denied for function ade_effective_profiles).
\ir setup.psql
\! test/add-token.sh Acme CK_acme
\! python3 test/mockctl.py devices CK_acme --generate 12 --families Mac,iPhone,iPad
SET ade.enroll_url = 'https://mdm.example.com/enroll';
SELECT count(*) FROM ade_sync() \g /dev/null
INSERT INTO teams (name) VALUES ('Lab') RETURNING id AS lab \gset
SELECT ade_set_profile('{"profile_name": "lab", "url": "https://mdm.example.com/lab"}', team_id => :lab) \g /dev/null
DROP ROLE IF EXISTS ade_test_app;
DROP ROLE IF EXISTS ade_test_reader;
CREATE ROLE ade_test_app LOGIN;
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON hosts TO ade_test_app;
GRANT USAGE ON SEQUENCE hosts_id_seq TO ade_test_app;
CREATE ROLE ade_test_reader LOGIN IN ROLE ade_reader;
SELECT plan(11);

-- the application
\set out `psql -XAtq -U ade_test_app -d "$ADE_TEST_DB" -c "DELETE FROM hosts WHERE hardware_serial = 'S00000000'" 2>&1`
SELECT is(:'out'::text, '', 'an application role granted DELETE on hosts deletes a live host without an error');
SELECT is((SELECT count(*)::int FROM hosts WHERE hardware_serial = 'S00000000'), 1, 'and the special case makes it again');
\set out `psql -XAtq -U ade_test_app -d "$ADE_TEST_DB" -c "TRUNCATE hosts" 2>&1`
SELECT is(:'out'::text, '', 'it truncates hosts without an error');
SELECT is((SELECT count(*)::int FROM hosts), 12, 'and the live hosts are made again');
\set out `psql -XAtq -U ade_test_app -d "$ADE_TEST_DB" -c "UPDATE hosts SET team_id = $(psql -XAtq -d "$ADE_TEST_DB" -c "SELECT id FROM teams WHERE name = 'Lab'") WHERE hardware_serial = 'S00000001'" 2>&1`
SELECT is(:'out'::text, '', 'it moves a host to another team');
\! python3 test/mockctl.py log-clear
SELECT count(*) FROM ade_sync() \g /dev/null
\set sent `python3 test/mockctl.py sent`
SELECT is(:'sent'::jsonb, '["S00000001"]', 'and the next sync sends the team''s profile');
\set out `psql -XAtq -U ade_test_app -d "$ADE_TEST_DB" -c "UPDATE hosts SET hardware_serial = 'APP-1' WHERE hardware_serial = 'S00000002'" 2>&1`
SELECT is(:'out'::text, '', 'it changes a host''s serial');
SELECT is((SELECT count(*)::int FROM hosts WHERE hardware_serial IN ('APP-1', 'S00000002')), 2,
  'and the device ABM assigns keeps a host of its own');
\set out `psql -XAtq -U ade_test_app -d "$ADE_TEST_DB" -c "INSERT INTO hosts (hardware_serial, platform) VALUES ('APP-2', 'darwin')" 2>&1`
SELECT is(:'out'::text, '', 'it inserts hosts of its own');

-- ade_reader: SELECT * from every relation granted to it, and ade_last_runs()
SELECT count(*) FROM ade_sync() \g /dev/null
\set readable `psql -XAtq -d "$ADE_TEST_DB" -c "SELECT string_agg(c.oid::regclass::text, ' ' ORDER BY c.relname) FROM pg_class c JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e' JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'ade' WHERE has_table_privilege('ade_reader', c.oid, 'SELECT')"`
\set out `for r in :readable; do psql -XAtq -U ade_test_reader -d "$ADE_TEST_DB" -c "SELECT '$r: ' || count(*) FROM (SELECT * FROM $r) x" 2>&1 | sed 's/: [0-9]*$/: ok/'; done | tr '\n' ' '`
SELECT is(:'out'::text, 'abm_applecare: ok abm_device_activities: ok abm_mdm_servers: ok abm_org_devices: ok ade_device_actions: ok ade_devices: ok ade_rate_limits: ok ade_rejected_records: ok ade_status: ok ade_sync_runs: ok ade_team_status: ok host_dep_assignments: ok hosts: ok ',
  'ade_reader can SELECT * from every view and table granted to it');
\set out `psql -XAtq -U ade_test_reader -d "$ADE_TEST_DB" -c "SELECT count(*) > 0 FROM ade_last_runs(5)" 2>&1`
SELECT is(:'out'::text, 't', 'and call ade_last_runs()');

REVOKE ALL ON hosts FROM ade_test_app;
REVOKE ALL ON SEQUENCE hosts_id_seq FROM ade_test_app;
DROP ROLE ade_test_app;
DROP ROLE ade_test_reader;
SELECT * FROM finish();
