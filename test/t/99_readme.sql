-- The README's runbook: every ```sql and ```sh block of README.md, in
-- order, on a fresh install, against the mock ABM, so that the
-- documentation cannot rot (test/readme_run.py; 98_demo.sql runs them
-- against make demo).  The README's token path is a file this test makes
-- as ABM would (for the key pair that ade_public_key() makes, the one the
-- README uploads).
\ir setup.psql
SELECT plan(7);
-- the README makes the role mdm_app: none may be left from another run
DO $$ BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'mdm_app') THEN
    EXECUTE 'DROP OWNED BY mdm_app'; EXECUTE 'DROP ROLE mdm_app';
  END IF;
END $$;
SELECT ade_public_key() \g /dev/null
\! psql -d "$ADE_TEST_DB" -XAtqc 'SELECT ade_public_key()' > "$ADE_TEST_TMP/cert.pem"
\! python3 test/mockctl.py token --org 'Example School' --consumer-key CK_example --json "$ADE_TEST_TMP/example.json" --p7m "$ADE_TEST_TMP/Example_Token.p7m" --cert "$ADE_TEST_TMP/cert.pem"
\! chmod 644 "$ADE_TEST_TMP/Example_Token.p7m"
\! python3 test/mockctl.py devices CK_example --generate 120 --families Mac,iPhone,iPad
\set nblocks `grep -cE '^.{3}(sql|sh)$' README.md`
SELECT cmp_ok(:'nblocks'::int, '>=', 14, 'the README has its runbook''s examples');
-- every statement, each in a new session (psql -c), as an admin pastes
-- them one by one, on a fresh install (settings in a fresh session need the
-- library preloaded, as the README says); the token file is made again for
-- the key pair the runbook makes, right before the runbook adds the token
SET ade.allow_drop = on;
DROP EXTENSION ade CASCADE;
RESET ade.allow_drop;
\set fresh `python3 test/readme_run.py README.md "$ADE_TEST_TMP" --db "$ADE_TEST_DB" --before-token 'psql -d "$ADE_TEST_DB" -XAtqc "SELECT ade_public_key()" > "$ADE_TEST_TMP/cert.pem" && python3 test/mockctl.py p7m --cert "$ADE_TEST_TMP/cert.pem" --json "$ADE_TEST_TMP/example.json" --out "$ADE_TEST_TMP/Example_Token.p7m" && chmod 644 "$ADE_TEST_TMP/Example_Token.p7m"' 2>&1`
SELECT alike(:'fresh'::text, 'ok %', 'every example of the README runs, each statement in a session of its own, as an admin pastes them');
SELECT is((SELECT org_name FROM abm_tokens), 'Example School', 'the runbook added the token (and its Uninstalling section added it back)');
SELECT is((SELECT count(*)::int FROM cron.job WHERE jobname = 'ade_sync'), 1, 'and scheduled the sync');
SELECT count(*) FROM ade_sync() \g /dev/null
-- (less the one device step 10 releases: ABM no longer has it)
SELECT is((SELECT count(*)::int FROM hosts), 119, 'its sync stores the devices ABM still has');
SELECT is((SELECT assigned FROM ade_status), 119::bigint, 'and assigns them a profile');
-- the README's settings table names every setting, and only those
\set readme_settings `python3 test/readme_sql.py README.md --settings`
SELECT is(:'readme_settings'::text, (SELECT string_agg(name, ',' ORDER BY name) FROM pg_settings WHERE name LIKE 'ade.%'),
  'the README''s settings table lists exactly the settings the library defines');
DROP OWNED BY mdm_app;
DROP ROLE mdm_app;
SELECT ade_unschedule() \g /dev/null
ALTER SYSTEM RESET ade.enroll_url;
SELECT pg_reload_conf() \g /dev/null
SELECT * FROM finish();
