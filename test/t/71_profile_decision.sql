-- One decision of which profile a device should have, used by the page
-- apply and by the assignment alike (issue 12, cases 1 and 3): a host with
-- no team, whose token's default team has a profile, is assigned once and
-- never again when ABM echoes the assignment back (0.3 judged "ours" by the
-- default team and sent the platform's profile: a loop); a device that was
-- NOT_ACCESSIBLE is sent again when ABM reports it in any record, modified
-- included.
\ir setup.psql
\! test/add-token.sh Acme CK_acme
SELECT id AS acme FROM abm_tokens WHERE consumer_key = 'CK_acme' \gset
\! python3 test/mockctl.py devices CK_acme --generate 6 --families Mac,iPhone,iPad
SET ade.enroll_url = 'https://mdm.example.com/enroll';
SELECT plan(12);

-- hosts made before the token had default teams: no team, the built-in profile
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT is((SELECT count(*)::int FROM hosts WHERE team_id IS NULL), 6, 'the hosts were made with no team');
INSERT INTO teams (name) VALUES ('Staff') RETURNING id AS staff \gset
SELECT ade_set_profile('{"profile_name": "staff", "url": "https://mdm.example.com/staff"}', team_id => :staff) \g /dev/null
SELECT ade_set_default_teams(:acme, :staff, :staff, :staff) \g /dev/null

-- the echoes of the first assignment, and three more runs: nothing is sent
\! python3 test/mockctl.py log-clear
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT count(*) FROM ade_sync() \g /dev/null
\set sent `python3 test/mockctl.py sent`
SELECT is(:'sent'::jsonb, '[]', 'a host with no team keeps the profile it has when its token gets a default team with a profile: no assignment loop');
SELECT is((SELECT count(*)::int FROM hosts WHERE team_id IS NULL), 6, 'and keeps having no team');

-- a new device lands in the default team and gets its profile, once
\! python3 test/mockctl.py devices CK_acme --generate 1 --prefix N --families Mac
\! python3 test/mockctl.py log-clear
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT count(*) FROM ade_sync() \g /dev/null
\set sent `python3 test/mockctl.py sent`
SELECT is(:'sent'::jsonb, '["N00000000"]', 'a new device lands in the default team and is sent its profile once');
\set prof `python3 test/mockctl.py state CK_acme | python3 -c 'import json,sys; st=json.load(sys.stdin); print(st["profiles"][st["devices"]["N00000000"]["profile_uuid"]]["profile_name"])'`
SELECT is(:'prof'::text, 'staff', 'the team''s profile');

-- a host moved out of its team to no team: its platform's profile, once
UPDATE hosts SET team_id = NULL WHERE hardware_serial = 'N00000000';
\! python3 test/mockctl.py log-clear
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT count(*) FROM ade_sync() \g /dev/null
\set sent `python3 test/mockctl.py sent`
SELECT is(:'sent'::jsonb, '["N00000000"]', 'a host moved to no team gets its platform''s profile once, and no loop follows');
\set prof `python3 test/mockctl.py state CK_acme | python3 -c 'import json,sys; st=json.load(sys.stdin); print(st["profiles"][st["devices"]["N00000000"]["profile_uuid"]]["profile_name"])'`
SELECT is(:'prof'::text, 'Automatic enrollment', 'the platform''s profile (here the built-in default)');

-- a host moved to a team with the profile it already holds: nothing sent
INSERT INTO teams (name) VALUES ('Also automatic') RETURNING id AS auto \gset
SELECT ade_set_profile(format('{"profile_name": "Automatic enrollment", "url": "%s", "is_supervised": true, "is_mdm_removable": false, "await_device_configured": true}',
                              current_setting('ade.enroll_url'))::jsonb, team_id => :auto) \g /dev/null
UPDATE hosts SET team_id = :auto WHERE hardware_serial = 'N00000000';
\! python3 test/mockctl.py log-clear
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT count(*) FROM ade_sync() \g /dev/null
\set sent `python3 test/mockctl.py sent`
SELECT is(:'sent'::jsonb, '[]', 'a move to a team whose profile the device holds already sends nothing');

-- case 3: NOT_ACCESSIBLE, then ABM reports the device again as modified
\! python3 test/mockctl.py assign CK_acme S00000001=NOT_ACCESSIBLE
UPDATE hosts SET team_id = :staff WHERE hardware_serial = 'S00000001';
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT is((SELECT assign_profile_response FROM host_dep_assignments WHERE hardware_serial = 'S00000001'), 'NOT_ACCESSIBLE',
  'a device can answer NOT_ACCESSIBLE');
\! python3 test/mockctl.py assign CK_acme S00000001=
\! python3 test/mockctl.py log-clear
SELECT count(*) FROM ade_sync() \g /dev/null
\set sent `python3 test/mockctl.py sent`
SELECT is(:'sent'::jsonb, '[]', 'it waits while ABM says nothing new of it');
\! echo '[{"serial_number": "S00000001", "model": "iPhone 15 (renamed)"}]' > "$ADE_TEST_TMP/mod1.json"
\! python3 test/mockctl.py devices CK_acme --modify-json "$ADE_TEST_TMP/mod1.json"
SELECT count(*) FROM ade_sync() \g /dev/null
\set sent `python3 test/mockctl.py sent`
SELECT is(:'sent'::jsonb, '["S00000001"]', 'a device that was NOT_ACCESSIBLE is sent again when ABM reports it as modified');
SELECT is((SELECT assign_profile_response FROM host_dep_assignments WHERE hardware_serial = 'S00000001'), 'SUCCESS',
  'and its new answer is stored');
SELECT * FROM finish();
