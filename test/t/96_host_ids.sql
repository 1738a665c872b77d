-- Host ids the application sets by hand (issue 19, item 3): with the grants
-- the README gives mdm_app, UPDATE hosts SET id = 9223372036854775807 made
-- the renumber trigger (as the owner) move hosts_id_seq to its end; every
-- host the sync inserted after failed ("reached maximum value"), every new
-- device was parked for good, and the application's own deletes of live
-- hosts failed (bigint out of range).  Ids above 2^62 - 1 are refused now.
\ir setup.psql
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'mdm_app') THEN
    EXECUTE 'DROP OWNED BY mdm_app'; EXECUTE 'DROP ROLE mdm_app';
  END IF;
END $$;
CREATE ROLE mdm_app LOGIN;
GRANT ade_reader TO mdm_app;
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON hosts TO mdm_app;
GRANT USAGE ON SEQUENCE hosts_id_seq TO mdm_app;
\! test/add-token.sh Acme CK_acme
\! python3 test/mockctl.py devices CK_acme --generate 3 --prefix I >/dev/null
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT plan(9);

SET ROLE mdm_app;
SELECT throws_ok($$UPDATE hosts SET id = 9223372036854775807 WHERE hardware_serial = 'I00000001'$$,
  '22003', 'host id 9223372036854775807 is out of range',
  'the application cannot give a host the largest id');
SELECT throws_ok($$INSERT INTO hosts (id, hardware_serial) VALUES (4611686018427387904, 'MINE1')$$,
  '22003', 'host id 4611686018427387904 is out of range', 'nor insert a host with an id above 2^62 - 1');
SELECT lives_ok($$UPDATE hosts SET id = 4611686018427387903 WHERE hardware_serial = 'I00000001'$$,
  'an id up to 2^62 - 1 is taken');
SELECT lives_ok($$DELETE FROM hosts WHERE hardware_serial = 'I00000001'$$,
  'and the host of that id can be deleted (it comes back: its device is live)');
RESET ROLE;
SELECT is((SELECT id FROM hosts WHERE hardware_serial = 'I00000001'), 4611686018427387903::bigint,
  'it came back with its id');

\! python3 test/mockctl.py devices CK_acme --generate 2 --start 10 --prefix I >/dev/null
SELECT is((SELECT error FROM ade_sync()), NULL, 'the sync still makes hosts for new devices');
SELECT is((SELECT count(*)::int FROM hosts WHERE hardware_serial IN ('I00000010', 'I00000011') AND id > 4611686018427387903), 2,
  'with ids past the one set by hand');
SELECT is((SELECT count(*)::int FROM ade_rejected_records), 0, 'and keeps no record aside');
SET ROLE mdm_app;
SELECT lives_ok($$UPDATE hosts SET id = nextval('hosts_id_seq') WHERE hardware_serial = 'I00000002'$$,
  'ids from the sequence are taken');
RESET ROLE;

SELECT * FROM finish();
DROP OWNED BY mdm_app;
DROP ROLE mdm_app;
