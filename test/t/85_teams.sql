-- Teams: a new host lands in its token's default team for its platform
-- (tvOS and visionOS follow iOS) and keeps its team; a team's profile comes
-- first; moving a live host to a team with another profile assigns that
-- profile on the next sync (and to one with the same profile, nothing);
-- deleting a team sets its hosts and tokens to no team and their devices
-- fall back; ade_status and ade_team_status count hosts per team.
\ir setup.psql
\! test/add-token.sh Acme CK_acme
\! test/add-token.sh Beta CK_beta
SELECT id AS acme FROM abm_tokens WHERE consumer_key = 'CK_acme' \gset
SELECT id AS beta FROM abm_tokens WHERE consumer_key = 'CK_beta' \gset
INSERT INTO teams (name) VALUES ('Staff Macs'), ('Phones'), ('Classroom iPads'), ('Beta Macs') RETURNING id \g /dev/null
SELECT id AS macs FROM teams WHERE name = 'Staff Macs' \gset
SELECT id AS phones FROM teams WHERE name = 'Phones' \gset
SELECT id AS ipads FROM teams WHERE name = 'Classroom iPads' \gset
SELECT id AS betamacs FROM teams WHERE name = 'Beta Macs' \gset
SELECT ade_set_default_teams(:acme, :macs, :phones, :ipads) \g /dev/null
SELECT ade_set_default_teams(:beta, :betamacs, NULL, NULL) \g /dev/null
SET ade.enroll_url = 'https://mdm.example.com/enroll';
\! python3 test/mockctl.py devices CK_acme --generate 50 --families Mac,iPhone,iPad,AppleTV,Vision
SELECT plan(23);

SELECT throws_ok($$SELECT ade_set_default_teams(999, NULL, NULL, NULL)$$, 'P0002', 'abm token 999 does not exist', 'default teams need a token that exists');
SELECT throws_ok(format('SELECT ade_set_default_teams(%s, 999, NULL, NULL)', :acme), '23503', NULL, 'and teams that exist');

-- 2. new hosts land in the default team of their platform
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT results_eq($$SELECT h.platform, t.name, count(*)::int FROM hosts h LEFT JOIN teams t ON t.id = h.team_id GROUP BY 1, 2 ORDER BY 1$$,
  $$VALUES ('darwin', 'Staff Macs', 10), ('ios', 'Phones', 10), ('ipados', 'Classroom iPads', 10), ('tvos', 'Phones', 10), ('visionos', 'Phones', 10)$$,
  'each new host lands in its token''s default team for its platform; tvOS and visionOS follow iOS');
SELECT throws_ok($$UPDATE hosts SET team_id = 999$$, '23503', 'team 999 does not exist', 'a host can only be put in a team that exists');

-- an existing host keeps its team when ABM reports it again, after a move to another token too
UPDATE hosts SET team_id = :ipads WHERE hardware_serial = 'S00000000';
\! echo '[{"serial_number": "S00000000", "model": "Mac mini (renamed)"}]' > "$ADE_TEST_TMP/mod.json"
\! python3 test/mockctl.py devices CK_acme --modify-json "$ADE_TEST_TMP/mod.json"
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT is((SELECT (hardware_model, team_id) FROM hosts WHERE hardware_serial = 'S00000000'), ('Mac mini (renamed)'::text, :'ipads'::bigint),
  'a host keeps its team when ABM reports it again');
\! echo '[{"serial_number": "S00000005", "device_family": "Mac", "model": "MacBook Air"}]' > "$ADE_TEST_TMP/move.json"
\! python3 test/mockctl.py devices CK_acme --delete S00000005 && python3 test/mockctl.py devices CK_beta --add-json "$ADE_TEST_TMP/move.json"
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT is((SELECT (d.abm_token_id, h.team_id) FROM hosts h JOIN host_dep_assignments d ON d.host_id = h.id WHERE h.hardware_serial = 'S00000005'),
  (:'beta'::bigint, :'macs'::bigint), 'and keeps it after a move to another token');
-- the delete trigger: a re-made host keeps the team it had (0.4; 0.3 put it
-- in its token's default team, and the old team's profile stayed at Apple)
DELETE FROM hosts WHERE hardware_serial IN ('S00000000', 'S00000005');
SELECT results_eq($$SELECT hardware_serial, team_id FROM hosts WHERE hardware_serial IN ('S00000000', 'S00000005') ORDER BY 1$$,
  format('VALUES (%L, %s::bigint), (%L, %s::bigint)', 'S00000000', :ipads, 'S00000005', :macs),
  'a host re-made by the delete trigger keeps the team it had');

-- 3. the team's profile comes first
SELECT ade_set_profile('{"profile_name": "acme", "url": "https://mdm.example.com/acme"}', token_id => :acme) \g /dev/null
SELECT ade_set_profile('{"profile_name": "acme ios", "url": "https://mdm.example.com/acme-ios"}', token_id => :acme, platform => 'ios') \g /dev/null
SELECT ade_set_profile('{"profile_name": "phones", "url": "https://mdm.example.com/phones"}', team_id => :phones) \g /dev/null
SELECT throws_ok(format($$SELECT ade_set_profile('{"profile_name": "x", "url": "u"}', token_id => %s, team_id => %s)$$, :acme, :phones),
  '22023', 'a team profile applies to every token and platform of the team', 'a team profile is set for the team alone');
SELECT throws_ok($$SELECT ade_set_profile('{"profile_name": "x", "url": "u"}', team_id => 999)$$, 'P0002', 'team 999 does not exist', 'for a team that exists');
\! python3 test/mockctl.py log-clear
SELECT count(*) FROM ade_sync() \g /dev/null
\set names `python3 test/mockctl.py state CK_acme | python3 -c 'import json,sys; st=json.load(sys.stdin); print(json.dumps({s: st["profiles"][d["profile_uuid"]]["profile_name"] for s, d in st["devices"].items() if d.get("profile_uuid")}))'`
SELECT results_eq(
  format($$SELECT coalesce(t.name, '-') || ' ' || h.platform || ': ' || n.name, count(*)::int
             FROM hosts h LEFT JOIN teams t ON t.id = h.team_id JOIN jsonb_each_text(%L::jsonb) n(serial, name) ON n.serial = h.hardware_serial
            GROUP BY 1 ORDER BY 1$$, :'names'),
  $$VALUES ('Classroom iPads darwin: acme', 1), ('Classroom iPads ipados: acme', 10), ('Phones ios: phones', 10), ('Phones tvos: phones', 10),
           ('Phones visionos: phones', 10), ('Staff Macs darwin: acme', 8)$$,
  'the team''s profile comes first (over (token, platform) for the iPhones), then (token, platform), then token');

-- 4. moving a live host to a team with another profile assigns it on the next sync, without a re-fetch
SELECT ade_set_profile('{"profile_name": "macs", "url": "https://mdm.example.com/macs"}', team_id => :macs) \g /dev/null
SELECT count(*) FROM ade_sync() \g /dev/null
\! python3 test/mockctl.py log-clear
UPDATE hosts SET team_id = :phones WHERE hardware_serial = 'S00000010';
SELECT count(*) FROM ade_sync() \g /dev/null
\set sent `python3 test/mockctl.py log --path /profile/devices | python3 -c 'import json,sys; print(json.dumps(sorted(s for r in json.load(sys.stdin)["requests"] for s in r["body"]["devices"])))'`
\set fetches `python3 test/mockctl.py logcount 'POST /server/devices'`
SELECT is(:'sent'::jsonb, '["S00000010"]', 'a Mac moved to the Phones team gets the Phones profile on the next sync');
SELECT is(:'fetches'::int, 0, 'from the database, without a re-fetch');
\set prof `python3 test/mockctl.py state CK_acme | python3 -c 'import json,sys; st=json.load(sys.stdin); print(st["profiles"][st["devices"]["S00000010"]["profile_uuid"]]["profile_name"])'`
SELECT is(:'prof'::text, 'phones', 'and ABM holds the Phones profile for it');
INSERT INTO teams (name) VALUES ('More Phones') RETURNING id AS morephones \gset
SELECT ade_set_profile('{"profile_name": "phones", "url": "https://mdm.example.com/phones"}', team_id => :morephones) \g /dev/null
SELECT count(*) FROM ade_sync() \g /dev/null
\! python3 test/mockctl.py log-clear
UPDATE hosts SET team_id = :morephones WHERE hardware_serial = 'S00000010';
SELECT count(*) FROM ade_sync() \g /dev/null
\set puts `python3 test/mockctl.py logcount 'PUT /profile/devices'`
SELECT is(:'puts'::int, 0, 'moving it to a team with the same profile sends nothing');

-- 5. deleting a team: its hosts and tokens have no team, their devices fall back
\! python3 test/mockctl.py log-clear
DELETE FROM teams WHERE id = :phones;
SELECT is((SELECT count(*)::int FROM hosts WHERE team_id = :phones), 0, 'deleting a team leaves no host in it');
SELECT is((SELECT count(*)::int FROM hosts WHERE hardware_serial LIKE 'S%' AND team_id IS NULL), 30, 'its hosts have no team');
SELECT is((SELECT ios_team_id FROM abm_tokens WHERE id = :acme), NULL, 'and the tokens that named it neither');
SELECT count(*) FROM ade_sync() \g /dev/null
\set prof `python3 test/mockctl.py state CK_acme | python3 -c 'import json,sys; st=json.load(sys.stdin); from collections import Counter; print(json.dumps(dict(Counter(st["profiles"][d["profile_uuid"]]["profile_name"] for s, d in st["devices"].items() if d["device_family"] in ("iPhone", "AppleTV", "Vision")))))'`
SELECT is(:'prof'::jsonb, '{"acme ios": 10, "acme": 20}', 'their devices fall back to the next profile: (token, platform) for iPhones, token for the rest');

-- 6. host counts per team
SELECT is((SELECT teams FROM ade_status WHERE token_id = :acme),
  format('{"(no team)": 30, "Staff Macs": 7, "More Phones": 1, "Classroom iPads": 11}', :acme)::jsonb,
  'ade_status counts each token''s live hosts per team');
SELECT results_eq($$SELECT name, hosts, ade_live, profile_name FROM ade_team_status ORDER BY name$$,
  $$VALUES ('Beta Macs', 0::bigint, 0::bigint, NULL::text), ('Classroom iPads', 11, 11, NULL), ('More Phones', 1, 1, 'phones'), ('Staff Macs', 8, 8, 'macs')$$,
  'ade_team_status shows each team''s hosts, live devices and profile');
-- 7. TRUNCATE teams CASCADE (the owner) fires no delete trigger: no host
-- and no token keeps a team that is gone
TRUNCATE teams CASCADE;
SELECT is((SELECT count(*)::int FROM hosts WHERE team_id IS NOT NULL), 0, 'after TRUNCATE teams, no host names a team');
SELECT is((SELECT count(*)::int FROM abm_tokens WHERE coalesce(macos_team_id, ios_team_id, ipados_team_id) IS NOT NULL), 0,
  'nor any token a default team');
SELECT lives_ok($$DELETE FROM hosts WHERE hardware_serial LIKE 'S%'$$, 'and deleting hosts that were in a team still works (they come back with no team)');
SELECT * FROM finish();
