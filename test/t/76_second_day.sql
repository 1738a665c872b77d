-- What an admin meets on the second day (issue 20), each failing on 0.4:
-- DROP EXTENSION ade refused while it holds tokens, the key pair or hosts,
-- with what would go and how to keep it; the backups (ade_export_key(),
-- ade_export_tokens()) taken back by a new install without a new download;
-- a NULL profile an error and clearing explicit (ade_clear_profile());
-- one platform vocabulary (macos = darwin); errors that say what to do.
\ir setup.psql
SELECT plan(79);
-- the hint of the error a statement raises
CREATE FUNCTION pg_temp.hint_of(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE h text;
BEGIN
  EXECUTE q;
  RETURN NULL;
EXCEPTION WHEN others THEN
  GET STACKED DIAGNOSTICS h = PG_EXCEPTION_HINT;
  RETURN h;
END $$;

-- ---- uninstalling ----------------------------------------------------
SELECT lives_ok('DROP EXTENSION ade', 'a fresh install, holding nothing, drops without a word');
CREATE EXTENSION ade;
\! test/add-token.sh Uninstall CK_u76
SELECT id AS tok FROM abm_tokens WHERE consumer_key = 'CK_u76' \gset
\! test/add-token.sh Uninstall2 CK_u76b
\! test/add-token.sh Uninstall3 CK_u76c
\! python3 test/mockctl.py devices CK_u76 --generate 30 --families Mac,iPhone,iPad
SET ade.enroll_url = 'https://mdm.example.com/enroll';
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT ade_schedule() \g /dev/null
SELECT ade_public_key() AS cert \gset

SELECT throws_ok('DROP EXTENSION ade', '2BP01',
  'dropping extension ade would delete 3 ABM tokens, the MDM server''s key pair and 30 hosts and their ADE assignments',
  'DROP EXTENSION ade is refused while ade holds tokens, the key pair and hosts, and says what would go');
SELECT throws_ok('DROP EXTENSION ade CASCADE', '2BP01', NULL, 'with CASCADE too');
SELECT alike(pg_temp.hint_of('DROP EXTENSION ade'), '%ade_export_key()%ade_export_tokens()%SET ade.allow_drop = on%',
  'its hint names the backups and the way through');
SELECT throws_ok('DROP SCHEMA public CASCADE', '2BP01', NULL, 'a DROP SCHEMA ... CASCADE of ade''s schema is refused the same way');
SELECT is((SELECT count(*)::int FROM hosts), 30, 'nothing went: the hosts are there');
SELECT is((SELECT count(*)::int FROM cron.job WHERE jobname = 'ade_sync'), 1, 'and so is the job');
-- a refused drop in a transaction that goes on: nothing changed either
BEGIN;
SAVEPOINT s;
SELECT throws_ok('DROP EXTENSION ade', '2BP01', NULL, 'inside a transaction too');
ROLLBACK TO s;
COMMIT;
-- only a superuser may let it through
CREATE ROLE ade_t76_admin;
SET ROLE ade_t76_admin;
SELECT throws_ok('SET ade.allow_drop = on', '42501', NULL, 'ade.allow_drop is a superuser''s setting');
RESET ROLE;
DROP ROLE ade_t76_admin;

-- the backups
SELECT throws_ok('SELECT ade_export_key()', '42501', NULL, 'ade_reader may not export the key pair') FROM (SELECT set_config('role', 'ade_reader', false)) r;
RESET ROLE;
SELECT throws_ok('SET ROLE ade_reader; SELECT * FROM ade_export_tokens()', '42501', NULL, 'nor the tokens');
RESET ROLE;
DROP TABLE IF EXISTS public.t76_key, public.t76_tokens;
CREATE TABLE public.t76_key AS SELECT ade_export_key() AS pem;
CREATE TABLE public.t76_tokens AS SELECT * FROM ade_export_tokens();
SELECT ok((SELECT convert_from(pem, 'UTF8') LIKE '-----BEGIN PRIVATE KEY-----%-----END PRIVATE KEY-----%-----BEGIN CERTIFICATE-----%' FROM t76_key),
  'ade_export_key() gives the private key, then the certificate, as one PEM file');
SELECT is((SELECT substr(convert_from(pem, 'UTF8'), strpos(convert_from(pem, 'UTF8'), '-----BEGIN CERTIFICATE-----')) FROM t76_key), :'cert',
  'the certificate is the one ABM knows (ade_public_key())');
SELECT is((SELECT array_agg((token_id, org_name, consumer_key)::text ORDER BY token_id) FROM t76_tokens),
  (SELECT array_agg((id, org_name, consumer_key)::text ORDER BY id) FROM abm_tokens),
  'ade_export_tokens() gives each token, with its org and consumer key');
SELECT ok((SELECT bool_and(convert_from(token, 'UTF8') LIKE '%application/%pkcs7-mime%' AND position('consumer_secret' IN convert_from(token, 'UTF8')) = 0) FROM t76_tokens),
  'as S/MIME encrypted files: no secret in the clear');

-- a scripted teardown: SET ade.allow_drop = on, and the drop says what went
\set drop_out `psql -d "$ADE_TEST_DB" -XAtq -c 'SET ade.allow_drop = on' -c 'DROP EXTENSION ade CASCADE' 2>&1`
SELECT alike(:'drop_out'::text, '%NOTICE:  dropping extension ade, and with it 3 ABM tokens, the MDM server''s key pair, 30 hosts and their ADE assignments and the pg_cron job ade_sync%',
  'with ade.allow_drop on the drop goes through, and a NOTICE says what went with it');
SELECT is((SELECT count(*)::int FROM pg_extension WHERE extname = 'ade'), 0, 'ade is gone');
SELECT is((SELECT count(*)::int FROM cron.job WHERE jobname = 'ade_sync'), 0, 'and its job with it');
SELECT is((SELECT count(*)::int FROM pg_event_trigger) + (SELECT count(*)::int FROM pg_proc WHERE proname LIKE 'ade\_%'), 0,
  'nothing of ade is left: no event trigger, no function');

-- reinstall, and take the backups back: no new download from ABM
CREATE EXTENSION ade;
SELECT is((SELECT ade_import_key(pem) FROM t76_key), :'cert', 'ade_import_key() takes the backup whole, and keeps its certificate');
SELECT is(ade_public_key(), :'cert', 'the certificate ABM knows is back');
SELECT is((SELECT count(ade_add_token(token))::int FROM t76_tokens), 3, 'ade_add_token() takes each exported token back');
SELECT is((SELECT array_agg(org_name ORDER BY org_name) FROM abm_tokens), '{Uninstall,Uninstall2,Uninstall3}', 'as the same organisations');
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT is((SELECT count(*)::int FROM hosts), 30, 'and the next sync brings its devices back');
SELECT is((SELECT count(*)::int FROM ade_status WHERE attention = 'ok'), 3, 'every token is ok');
DROP TABLE public.t76_key, public.t76_tokens;

-- a key pair alone, or hosts alone, are worth a refusal too
SET ade.allow_drop = on;
DROP EXTENSION ade;
RESET ade.allow_drop;
CREATE EXTENSION ade;
INSERT INTO hosts (hardware_serial, platform) VALUES ('APPHOST1', 'darwin');
SELECT throws_ok('DROP EXTENSION ade', '2BP01', 'dropping extension ade would delete 1 host and its ADE assignment',
  'hosts alone (the application''s rows) are not dropped unknowingly');
DELETE FROM hosts;
SELECT ade_public_key() \g /dev/null
SELECT throws_ok('DROP EXTENSION ade', '2BP01', 'dropping extension ade would delete the MDM server''s key pair',
  'nor is a key pair alone (its certificate is at ABM)');
SELECT throws_ok('SELECT ade_import_key(NULL)', '22004', 'private_key must not be null',
  'ade_import_key(NULL) is an error (a file that was not read)');
\set null_key `psql -d "$ADE_TEST_DB" -XAtq -c 'SELECT ade_import_key(NULL)' 2>&1 | grep -c WARNING || true`
SELECT is(:'null_key'::int, 0, 'with no WARNING that a key was exposed: none was');

-- DROP OWNED BY the role that installed ade takes ade with it: refused too
-- (a database of its own, installed by a superuser role made for it)
DROP DATABASE IF EXISTS ade_t76;
DROP ROLE IF EXISTS ade_t76_owner;
CREATE ROLE ade_t76_owner SUPERUSER LOGIN;
CREATE DATABASE ade_t76 OWNER ade_t76_owner;
\set owned `psql -d ade_t76 -U ade_t76_owner -XAtq -c 'CREATE EXTENSION ade' -c 'SELECT ade_public_key()' -o /dev/null && psql -d ade_t76 -XAtq -c 'DROP OWNED BY ade_t76_owner' 2>&1; psql -d ade_t76 -XAtq -c "SELECT count(*) FROM pg_extension WHERE extname = 'ade'"`
SELECT alike(:'owned'::text, 'ERROR:  dropping extension ade would delete the MDM server''s key pair%1',
  'DROP OWNED BY the extension''s owner is refused while ade holds its key pair');
DROP DATABASE ade_t76;
DROP ROLE ade_t76_owner;

-- found by the review of this issue, each failing before its fix
-- the drop also reached through what ade depends on, or whoever owns its schema
BEGIN;
SAVEPOINT s;
SELECT throws_ok('DROP EXTENSION plpgsql CASCADE', '2BP01', NULL,
  'DROP EXTENSION plpgsql CASCADE (ade''s functions go with the language) is refused too');
ROLLBACK TO s;
COMMIT;
SELECT is((SELECT count(*)::int FROM pg_extension WHERE extname IN ('ade', 'plpgsql')), 2, 'both are still there');
CREATE ROLE ade_t76_schema_owner;
ALTER SCHEMA public OWNER TO ade_t76_schema_owner;
BEGIN;
SAVEPOINT s;
SELECT throws_ok('DROP OWNED BY ade_t76_schema_owner CASCADE', '2BP01', NULL,
  'DROP OWNED BY the owner of ade''s schema is refused too');
ROLLBACK TO s;
SELECT throws_ok('DROP OWNED BY ade_t76_schema_owner', '2BP01', 'cannot drop schema public because other objects depend on it',
  'without CASCADE it takes nothing along: PostgreSQL''s own refusal, not the guard''s (second review)');
ROLLBACK TO s;
COMMIT;
ALTER SCHEMA public OWNER TO pg_database_owner;
DROP ROLE ade_t76_schema_owner;
-- a damaged certificate in a key backup is refused, not replaced by a new one
DROP TABLE IF EXISTS public.t76_pem;
CREATE TABLE public.t76_pem AS SELECT convert_from(ade_export_key(), 'UTF8') AS pem;
SELECT ade_public_key() AS cert76 \gset
SELECT throws_ok($$SELECT ade_import_key(convert_to(left(pem, length(pem) - 200), 'UTF8')) FROM t76_pem$$, '22023',
  'the private key''s file holds more than the key, and no certificate that can be read', 'a key backup whose certificate is cut short is refused');
SELECT is(ade_public_key(), :'cert76', 'and the key pair is left as it was');
SELECT throws_ok($$SELECT ade_import_key(convert_to(left(pem, strpos(pem, '-----BEGIN CERTIFICATE-----') + 16), 'UTF8')) FROM t76_pem$$, '22023',
  NULL, 'so is one cut inside the certificate''s header (second review)');
SELECT throws_ok($$SELECT ade_import_key(convert_to(replace(pem, 'BEGIN CERTIFICATE-----' || chr(10) || 'MII', 'BEGIN X509 CERTIFICATE-----' || chr(10) || 'XXX'), 'UTF8')) FROM t76_pem$$, '22023',
  NULL, 'and one whose certificate is damaged under another header');
SELECT is(ade_public_key(), :'cert76', 'the key pair is still as it was');
\set keyonly `psql -d "$ADE_TEST_DB" -XAtq -c "SELECT length(ade_import_key(convert_to(substr(pem, 1, strpos(pem, '-----BEGIN CERTIFICATE-----') - 1), 'UTF8'))) FROM t76_pem" 2>&1 | grep -c 'NOTICE:  no certificate came with the key' || true`
SELECT is(:'keyonly'::int, 1, 'a key with no certificate is taken, with a NOTICE that a new certificate was made');
SELECT isnt(ade_public_key(), :'cert76', 'and a new one it is');
DROP TABLE public.t76_pem;
-- a token with no finite expiry: refused when added, never a crash when exported
\! test/add-token.sh NoExpiry CK_inf76 --access-token-expiry infinity > "$ADE_TEST_TMP/inf76.out" 2>&1 || true
\set inf `grep -c 'is not a date' "$ADE_TEST_TMP/inf76.out" || true`
SELECT is(:'inf'::int, 1, 'ade_add_token() refuses a token whose expiry is not a date');
\! test/add-token.sh Expiry CK_exp76
BEGIN;
UPDATE abm_tokens SET renew_at = NULL WHERE consumer_key = 'CK_exp76';
SELECT throws_ok('SELECT * FROM ade_export_tokens()', '22004', NULL,
  'ade_export_tokens() of a token with no expiry is an error, not a crash');
ROLLBACK;

-- ---- profiles: a NULL never clears, clearing is explicit ---------------
SET ade.allow_drop = on;
DROP EXTENSION ade;
RESET ade.allow_drop;
CREATE EXTENSION ade;
\! test/add-token.sh Profiles CK_p76
SELECT id AS ptok FROM abm_tokens WHERE consumer_key = 'CK_p76' \gset
\! python3 test/mockctl.py devices CK_p76 --generate 12 --families Mac,iPhone,iPad
SELECT ade_set_profile('{"profile_name": "Org", "url": "https://mdm.example.com/enroll"}') \g /dev/null
SELECT ade_set_profile('{"profile_name": "Token", "url": "https://mdm.example.com/enroll"}', token_id => :ptok) \g /dev/null
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT throws_ok('SELECT ade_set_profile(NULL)', '22004', 'profile is NULL', 'ade_set_profile(NULL) is an error');
SELECT alike(pg_temp.hint_of('SELECT ade_set_profile(NULL)'), '%ade_clear_profile()%', 'whose hint says how to clear');
SELECT throws_ok(format('SELECT ade_set_profile((SELECT profile FROM ade_profiles WHERE false), token_id => %s)', :ptok), '22004', 'profile is NULL',
  'a lookup that found no profile clears nothing');
SELECT is((SELECT count(*)::int FROM ade_profiles), 2, 'both profiles are still there');
SELECT is(ade_clear_profile(token_id => :ptok), true, 'ade_clear_profile(token_id => ...) clears that scope');
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT is((SELECT array_agg(DISTINCT d.profile_uuid) FROM host_dep_assignments d WHERE d.deleted_at IS NULL),
  (SELECT array_agg(x.profile_uuid) FROM ade_profile_definitions x WHERE x.profile_key = md5('{"profile_name": "Org", "url": "https://mdm.example.com/enroll"}'::jsonb::text)),
  'and the next sync gives its devices the next profile in the order (the organisation''s)');
SELECT is(ade_clear_profile(token_id => :ptok), false, 'clearing a scope that has no profile returns false');
SELECT throws_ok('SELECT ade_clear_profile(token_id => NULL)', '22004', NULL, 'a NULL scope is an error for clearing too');
SELECT is(ade_clear_profile(), true, 'ade_clear_profile() with no argument clears the organisation default');
SELECT is((SELECT count(*)::int FROM ade_profiles), 0, 'no profile is left');
\set notice `psql -d "$ADE_TEST_DB" -XAtq -c 'SELECT ade_clear_profile()' 2>&1`
SELECT alike(:'notice'::text, '%NOTICE:  no profile is set for that scope: nothing cleared%f', 'a clear that finds nothing says so');

-- one platform vocabulary: macos is darwin
SELECT lives_ok($$SELECT ade_set_profile('{"profile_name": "Macs", "url": "https://mdm.example.com/enroll"}', platform => 'macos')$$,
  'ade_set_profile(platform => ''macos'') is taken');
SELECT is((SELECT platform FROM ade_profiles), 'darwin', 'as darwin, hosts.platform''s word');
SELECT is(ade_clear_profile(platform => 'darwin'), true, 'and cleared by either name');
SELECT throws_ok($$SELECT ade_set_profile('{"profile_name": "x", "url": "https://mdm.example.com/enroll"}', platform => 'windows')$$,
  '22023', 'unknown platform "windows"', 'an unknown platform is an error');
SELECT alike(pg_temp.hint_of($$SELECT ade_set_profile('{"profile_name": "x", "url": "https://mdm.example.com/enroll"}', platform => 'windows')$$),
  '%darwin (or macos)%', 'whose hint gives both names');

-- ade_set_assign_profiles(): a lookup that finds nothing is an error, not UPDATE 0
SELECT throws_ok($$SELECT ade_set_assign_profiles((SELECT id FROM abm_tokens WHERE org_name = 'Typo'), false)$$,
  '22004', 'token_id is null', 'ade_set_assign_profiles() with a name that matched nothing is an error');
SELECT throws_ok('SELECT ade_set_assign_profiles(987654, false)', 'P0002', 'abm token 987654 does not exist', 'and with an unknown id');
SELECT ade_set_assign_profiles(:ptok, false) \g /dev/null
SELECT is((SELECT assign_profiles FROM abm_tokens WHERE id = :ptok), false, 'it turns assignment off');
SELECT ade_set_assign_profiles(:ptok, true) \g /dev/null
SELECT is((SELECT assign_profiles FROM abm_tokens WHERE id = :ptok), true, 'and on again');

-- errors that say what to do
SELECT alike(pg_temp.hint_of(format('SELECT ade_set_default_teams(%s, macos => 987654, ios => NULL, ipados => NULL)', :ptok)),
  'SELECT id, name FROM teams%', 'an unknown default team says where the teams are');
SET ade.allow_drop = on;
DROP EXTENSION ade;
RESET ade.allow_drop;
CREATE TABLE public.hosts (id int);
SELECT throws_ok('CREATE EXTENSION ade', '42P07', 'schema public already has table hosts',
  'CREATE EXTENSION ade in a schema that has a hosts table names it');
SELECT alike(pg_temp.hint_of('CREATE EXTENSION ade'), '%CREATE EXTENSION ade SCHEMA mdm%', 'and says to install into a schema of its own');
DROP TABLE public.hosts;
CREATE EXTENSION ade;
-- the list of names that check looks for is every relation ade makes
\set install_script `cat sql/ade--0.5.sql`
SELECT is((SELECT array_agg(c.relname::text ORDER BY c.relname) FROM pg_class c
            WHERE c.oid IN (SELECT d.objid FROM pg_depend d WHERE d.deptype = 'e' AND d.classid = 'pg_class'::regclass
                              AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'ade'))
               OR c.oid IN (SELECT i.indexrelid FROM pg_index i JOIN pg_depend d ON d.objid = i.indrelid AND d.deptype = 'e'
                              AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'ade'))),
          (SELECT array_agg(n ORDER BY n) FROM unnest(regexp_split_to_array(
             regexp_replace(substring(:'install_script' FROM 'ARRAY\[(.*?)\]::pg_catalog.name'), '[''\s]', '', 'g'), ',')) n),
  'the names CREATE EXTENSION checks first are exactly the relations it makes');

-- ---- monitoring: ade_problems(), one row per problem --------------------
SET ade.allow_drop = on;
DROP EXTENSION ade;
RESET ade.allow_drop;
CREATE EXTENSION ade;
\! python3 test/mockctl.py reset
\! test/add-token.sh Good CK_good76
\! test/add-token.sh Bad CK_bad76
SET ade.enroll_url = 'https://mdm.example.com/enroll';
SELECT is((SELECT array_agg(problem ORDER BY org_name) FROM ade_problems()), '{never_synced,never_synced}',
  'ade_problems(): each token never synced is a row');
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT is((SELECT count(*)::int FROM ade_problems()), 0, 'no row when all is well');
\! python3 test/mockctl.py fault '{"path": "/devices/sync", "consumer_key": "CK_bad76", "status": 503, "times": -1}' >/dev/null
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT is((SELECT (org_name, problem) FROM ade_problems()), ('Bad'::text, 'last_run_failed'::text),
  'a token whose runs fail at ABM is a row (while the call itself "succeeded")');
SELECT ok((SELECT detail LIKE 'ABM failed POST /devices/sync (HTTP 503)%'
                  AND since = (SELECT min(started_at) FROM ade_sync_runs r WHERE r.org_name = 'Bad' AND r.error IS NOT NULL)
             FROM ade_problems()),
  'with ABM''s error, since the first failed run');
SELECT is((SELECT array_agg(problem ORDER BY problem) FROM ade_problems('0 seconds') WHERE org_name = 'Bad'),
  '{last_run_failed,no_successful_run}', 'and no successful run for the time asked');
SELECT is((SELECT count(*)::int FROM ade_problems('0 seconds') WHERE org_name = 'Good'), 1,
  'the good token only once its last success is older than that');
SET ROLE ade_reader;
SELECT is((SELECT count(*)::int FROM ade_problems()), 1, 'ade_reader may call it (SELECT * of it)');
RESET ROLE;
\! python3 test/mockctl.py faults-clear >/dev/null
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT is((SELECT count(*)::int FROM ade_problems()), 0, 'the row goes with the next good run');

-- devices that no scope gives a profile are a row, whatever else is wrong
RESET ade.enroll_url;
SELECT ade_set_profile('{"profile_name": "Phones", "url": "https://mdm.example.com/enroll"}', platform => 'ios') \g /dev/null
\! python3 test/mockctl.py devices CK_good76 --generate 6 --families Mac,iPhone,iPad --prefix NP76 >/dev/null
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT is((SELECT attention FROM ade_status WHERE org_name = 'Good'), 'ok', '(attention says ok: a profile exists for some platforms)');
SELECT is((SELECT detail FROM ade_problems() WHERE org_name = 'Good' AND problem = 'no_profile'),
  '4 devices wait for a profile none of the scopes gives them: set ade.enroll_url or call ade_set_profile()',
  'ade_problems() names the devices no scope covers (the Macs and iPads)');
UPDATE abm_tokens SET renew_at = now() + interval '10 days' WHERE org_name = 'Good';
SELECT is((SELECT array_agg(problem ORDER BY problem) FROM ade_problems() WHERE org_name = 'Good'), '{no_profile,token_expiring}',
  'and still does beside another problem');
-- default teams leave the hosts that exist where they are, and say so
INSERT INTO teams (name) VALUES ('T76');
\set teams_notice `psql -d "$ADE_TEST_DB" -XAtq -c "SELECT ade_set_default_teams((SELECT id FROM abm_tokens WHERE org_name = 'Good'), macos => (SELECT id FROM teams WHERE name = 'T76'), ios => NULL, ipados => NULL)" 2>&1`
SELECT alike(:'teams_notice'::text, '%NOTICE:  the 6 hosts this token has keep their teams%',
  'ade_set_default_teams() says the hosts that exist keep their teams');

SELECT * FROM finish();
