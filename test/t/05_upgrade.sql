-- Upgrades: install the previous version's script (0.1, kept in sql/), put
-- data in, ALTER EXTENSION ade UPDATE, and the data is intact and the new
-- version's features work on it.
\ir setup.psql
DROP EXTENSION ade;
CREATE EXTENSION ade VERSION '0.1';
\! test/add-token.sh Acme CK_acme
SELECT id AS acme FROM abm_tokens WHERE consumer_key = 'CK_acme' \gset
\! python3 test/mockctl.py devices CK_acme --generate 500 --families Mac,iPhone,iPad
SET ade.enroll_url = 'https://mdm.example.com/enroll';
SELECT count(*) FROM ade_sync() \g /dev/null
\! python3 test/mockctl.py devices CK_acme --delete S00000001,S00000002
SELECT ade_set_profile('{"profile_name": "iOS", "url": "https://mdm.example.com/ios"}', platform => 'ios') \g /dev/null
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT plan(15);
SELECT is((SELECT extversion FROM pg_extension WHERE extname = 'ade'), '0.1', 'version 0.1 is installed from its own script');

CREATE TEMP TABLE before_hosts AS SELECT * FROM hosts;
CREATE TEMP TABLE before_asg AS SELECT * FROM host_dep_assignments;
CREATE TEMP TABLE before_tok AS SELECT id, consumer_key, org_name, mode, cursor, renew_at FROM abm_tokens;
CREATE TEMP TABLE before_misc AS SELECT (SELECT count(*) FROM ade_sync_runs) AS runs, (SELECT count(*) FROM ade_profiles) AS profiles,
  (SELECT count(*) FROM ade_profile_definitions) AS defs, (SELECT extconfig FROM pg_extension WHERE extname = 'ade') AS extconfig;

SELECT ok((SELECT bool_and(consumer_secret LIKE 'ade1:%' AND access_secret LIKE 'ade1:%') FROM ade_token_secrets)
      AND (SELECT private_key LIKE 'ade1:%' FROM ade_keypair), 'before the update, the secrets are sealed as 0.1 to 0.3 did (a key file each)');
-- 0.3 put hosts back with their ids and left the sequence behind them
-- (TRUNCATE hosts RESTART IDENTITY): as it left it
SELECT setval('hosts_id_seq', 1) \g /dev/null
ALTER EXTENSION ade UPDATE;
SELECT ok((SELECT last_value FROM hosts_id_seq) >= (SELECT max(id) FROM hosts),
  'the update moves the id sequence past every host id (0.3 could leave it behind)');
SELECT ok((SELECT bool_and(consumer_secret LIKE 'ade2:%' AND access_token LIKE 'ade2:%' AND access_secret LIKE 'ade2:%'
                            AND coalesce(session_token LIKE 'ade2:%', true)) FROM ade_token_secrets)
      AND (SELECT private_key LIKE 'ade2:%' FROM ade_keypair),
  'the update re-seals every secret with a data key of ade_secret_keys (envelope encryption, bound to its place)');
SELECT is((SELECT extversion FROM pg_extension WHERE extname = 'ade'), (SELECT default_version FROM pg_available_extensions WHERE name = 'ade'),
  'ALTER EXTENSION ade UPDATE goes through every step to the current version');
SELECT set_eq('SELECT id, hardware_serial, hardware_model, platform, created_at, updated_at FROM hosts',
  'SELECT id, hardware_serial, hardware_model, platform, created_at, updated_at FROM before_hosts', 'the hosts are intact');
SELECT set_eq('SELECT host_id, hardware_serial, abm_token_id, added_at, deleted_at, profile_uuid, assign_profile_response,
                       response_updated_at, retry_at, needs_assign, device, op_date, updated_at FROM host_dep_assignments',
  'SELECT * FROM before_asg', 'the assignments are intact, soft-deleted ones too');
SELECT set_eq('SELECT id, consumer_key, org_name, mode, cursor, renew_at FROM abm_tokens', 'SELECT * FROM before_tok', 'the token, its cursor and mode are intact');
SELECT is((SELECT (runs, profiles, defs, extconfig <@ (SELECT extconfig FROM pg_extension WHERE extname = 'ade')) FROM before_misc),
  ((SELECT count(*) FROM ade_sync_runs), (SELECT count(*) FROM ade_profiles), (SELECT count(*) FROM ade_profile_definitions), true),
  'the run history, the profiles, their definitions and the dump registrations are intact');
SELECT lives_ok(format('SELECT ade_refresh_account(%s)', :acme), 'the sealed secrets still open: the token answers');
SELECT is((SELECT attention FROM ade_status WHERE token_id = :acme), 'ok', 'the new status column works on the old data');
SELECT is((SELECT count(*)::int FROM ade_last_runs(2)), 2, 'ade_last_runs() (0.2) is there');
SELECT is((SELECT count(*)::int FROM hosts WHERE team_id IS NOT NULL), 0, 'hosts.team_id (0.3) is there, no host in a team yet');
\! python3 test/mockctl.py devices CK_acme --generate 5 --prefix N
\! python3 test/mockctl.py log-clear
CREATE TEMP TABLE r AS SELECT * FROM ade_sync();
SELECT is((SELECT (added, assigned, error) FROM r), (5, 5, NULL::text), 'the sync goes on after the update: new devices added and assigned');
\set puts `python3 test/mockctl.py logcount 'PUT /profile/devices'`
SELECT is(:'puts'::int, 2, 'and only the new devices are sent (one batch per profile: Macs and iPads, iPhones)');
SELECT * FROM finish();
