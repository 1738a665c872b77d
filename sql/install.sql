-- install: CREATE EXTENSION ade creates the tables, the status view and the
-- functions of the spec; secrets are readable by no ordinary role; ade_reader
-- reads hosts, host_dep_assignments, ade_status and ade_sync_runs only; every
-- data table is registered with pg_extension_config_dump.
SET client_min_messages = warning;
SET ade.allow_drop = on;
DROP EXTENSION IF EXISTS ade CASCADE;
RESET ade.allow_drop;
CREATE EXTENSION ade;
RESET client_min_messages;

-- the objects of the spec
SELECT c.relname, c.relkind
  FROM pg_depend d JOIN pg_class c ON c.oid = d.objid AND d.classid = 'pg_class'::regclass
 WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'ade')
   AND c.relkind IN ('r', 'v')
 ORDER BY 1;
SELECT p.proname, pg_get_function_identity_arguments(p.oid) AS args
  FROM pg_depend d JOIN pg_proc p ON p.oid = d.objid AND d.classid = 'pg_proc'::regclass
 WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'ade')
 ORDER BY 1, 2;

-- every data table (and its sequence) survives pg_dump
SELECT c::regclass AS dumped FROM pg_extension, unnest(extconfig) AS c WHERE extname = 'ade' ORDER BY c::regclass::text;

-- ade_reader exists once, whatever happens to the extension
SELECT count(*) FROM pg_roles WHERE rolname = 'ade_reader';

-- privileges: no PUBLIC access to any table; ade_reader reads four things only
SELECT c.relname,
       has_table_privilege('ade_reader', c.oid, 'SELECT') AS reader_select,
       has_table_privilege('ade_reader', c.oid, 'INSERT') AS reader_insert,
       has_table_privilege('public', c.oid, 'SELECT') AS public_select
  FROM pg_class c
 WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'v')
   AND c.relname IN ('abm_tokens', 'ade_token_secrets', 'ade_keypair', 'hosts',
                     'host_dep_assignments', 'ade_sync_runs', 'ade_status')
 ORDER BY 1;

-- the functions that use secrets or ABM are not executable by PUBLIC
SELECT p.proname, bool_or(has_function_privilege('public', p.oid, 'EXECUTE')) AS public_execute
  FROM pg_proc p
 WHERE p.pronamespace = 'public'::regnamespace AND p.proname LIKE 'ade\_%'
 GROUP BY 1 ORDER BY 1;

-- an ordinary role is refused the secrets and the functions
CREATE ROLE ade_test_nobody;
CREATE ROLE ade_test_reader IN ROLE ade_reader;
SET ROLE ade_test_nobody;
SELECT * FROM ade_token_secrets;
SELECT * FROM ade_keypair;
SELECT * FROM hosts;
SELECT ade_public_key();
SELECT * FROM ade_sync();
RESET ROLE;
SET ROLE ade_test_reader;
SELECT count(*) FROM hosts;
SELECT count(*) FROM host_dep_assignments;
SELECT count(*) FROM ade_status;
SELECT count(*) FROM ade_sync_runs;
SELECT * FROM abm_tokens;
SELECT * FROM ade_token_secrets;
SELECT ade_public_key();
RESET ROLE;
DROP ROLE ade_test_nobody;
DROP ROLE ade_test_reader;

-- a team profile needs a team that exists
SELECT ade_set_profile('{"profile_name": "x", "url": "https://mdm.example/enroll"}', team_id => 1);

-- the extension installs into another schema too, and drops cleanly
DROP EXTENSION ade;
CREATE SCHEMA mdm;
CREATE EXTENSION ade SCHEMA mdm;
SELECT count(*) FROM mdm.hosts;
SELECT mdm.ade_platform('iPad');
DROP EXTENSION ade;
DROP SCHEMA mdm;
CREATE EXTENSION ade;
