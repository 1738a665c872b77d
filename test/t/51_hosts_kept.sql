-- The special case holds under any statement on hosts (issue 12, cases 5
-- and 6, and a serial changed by hand): a host made again keeps the team it
-- had (0.3 put it in its token's default team, and the old team's profile
-- stayed at Apple), by DELETE and by TRUNCATE; after TRUNCATE ... RESTART
-- IDENTITY, or any restart of the sequence, the next host made never
-- collides with an id put back (0.3: every page failed on hosts_pkey); a
-- host whose serial is changed by hand keeps its id, and the device ABM
-- assigns gets a host of its own again.
\ir setup.psql
\! test/add-token.sh Acme CK_acme
SELECT id AS acme FROM abm_tokens WHERE consumer_key = 'CK_acme' \gset
\! python3 test/mockctl.py devices CK_acme --generate 30 --families Mac,iPhone,iPad
SET ade.enroll_url = 'https://mdm.example.com/enroll';
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT count(*) FROM ade_sync() \g /dev/null
INSERT INTO teams (name) VALUES ('Lab'), ('Office') RETURNING id \g /dev/null
SELECT id AS lab FROM teams WHERE name = 'Lab' \gset
SELECT id AS office FROM teams WHERE name = 'Office' \gset
SELECT ade_set_default_teams(:acme, :office, :office, :office) \g /dev/null
SELECT ade_set_profile('{"profile_name": "lab", "url": "https://mdm.example.com/lab"}', team_id => :lab) \g /dev/null
UPDATE hosts SET team_id = :lab WHERE hardware_serial IN ('S00000000', 'S00000001', 'S00000002');
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT plan(14);

-- case 5: DELETE keeps the team, and nothing is sent again
SELECT id AS s0 FROM hosts WHERE hardware_serial = 'S00000000' \gset
\! python3 test/mockctl.py log-clear
DELETE FROM hosts WHERE hardware_serial = 'S00000000';
SELECT is((SELECT (id, team_id) FROM hosts WHERE hardware_serial = 'S00000000'), (:'s0'::bigint, :'lab'::bigint),
  'a host deleted while live is made again with its id and the team it had, not its token''s default team');
SELECT count(*) FROM ade_sync() \g /dev/null
\set sent `python3 test/mockctl.py sent`
SELECT is(:'sent'::jsonb, '[]', 'so the device keeps its team''s profile: nothing is sent');

-- TRUNCATE keeps the teams too
CREATE TEMP TABLE before AS SELECT id, hardware_serial, team_id FROM hosts;
TRUNCATE hosts;
SELECT set_eq('SELECT id, hardware_serial, team_id FROM hosts', 'SELECT * FROM before',
  'TRUNCATE hosts makes every live host again with its id and team');
SELECT is((SELECT count(*)::int FROM ade_truncated_hosts), 0, 'and leaves nothing behind in its scratch table');

-- case 6: TRUNCATE ... RESTART IDENTITY, then new devices; the device with
-- the highest host id was deleted in ABM: its soft-deleted assignment keeps
-- that id, which a new host must not get either
SELECT hardware_serial AS last_serial FROM hosts ORDER BY id DESC LIMIT 1 \gset
\! python3 test/mockctl.py devices CK_acme --delete $(psql -XAtq -d "$ADE_TEST_DB" -c 'SELECT hardware_serial FROM hosts ORDER BY id DESC LIMIT 1')
SELECT count(*) FROM ade_sync() \g /dev/null
DELETE FROM before WHERE hardware_serial = :'last_serial';
TRUNCATE hosts RESTART IDENTITY;
SELECT set_eq('SELECT id, hardware_serial, team_id FROM hosts', 'SELECT * FROM before',
  'TRUNCATE hosts RESTART IDENTITY makes the live hosts again with their ids');
SELECT cmp_ok((SELECT last_value FROM hosts_id_seq), '>=', (SELECT max(host_id) FROM host_dep_assignments),
  'and the id sequence is past every id put back, and every id a soft-deleted assignment keeps');
\! python3 test/mockctl.py devices CK_acme --generate 5 --prefix N
CREATE TEMP TABLE r1 AS SELECT * FROM ade_sync();
SELECT is((SELECT (added, error) FROM r1), (5, NULL::text), 'the next devices are added without colliding with an id put back');
INSERT INTO hosts (hardware_serial, platform) VALUES ('MANUAL-1', 'darwin');
SELECT is((SELECT count(*)::int FROM hosts WHERE hardware_serial = 'MANUAL-1'), 1, 'and an application''s own insert works too');

-- a sequence restarted by hand, then a DELETE that puts ids back
ALTER SEQUENCE hosts_id_seq RESTART;
DELETE FROM hosts WHERE hardware_serial LIKE 'S%';
INSERT INTO hosts (hardware_serial, platform) VALUES ('MANUAL-2', 'darwin');
SELECT is((SELECT count(*)::int FROM hosts WHERE hardware_serial = 'MANUAL-2'), 1,
  'after a DELETE puts ids back, the sequence is past them even when it was restarted');

-- a serial changed by hand
SELECT id AS s1 FROM hosts WHERE hardware_serial = 'S00000001' \gset
UPDATE hosts SET hardware_serial = 'RENAMED-1' WHERE hardware_serial = 'S00000001';
SELECT is((SELECT id FROM hosts WHERE hardware_serial = 'RENAMED-1'), :'s1'::bigint, 'a host whose serial is changed keeps its id and its new serial');
SELECT is((SELECT (h.team_id, d.deleted_at, h.id <> :s1) FROM hosts h JOIN host_dep_assignments d ON d.host_id = h.id
            WHERE h.hardware_serial = 'S00000001'), (:'lab'::bigint, NULL::timestamptz, true),
  'the device ABM assigns gets a host of its own again, in the same team, and its live assignment points at it');
\! python3 test/mockctl.py log-clear
SELECT count(*) FROM ade_sync() \g /dev/null
\set sent `python3 test/mockctl.py sent`
SELECT is(:'sent'::jsonb, '[]', 'and nothing is sent to Apple for it');

-- the host of a device ABM deleted gets a new serial by hand; then ABM adds
-- a device with that serial: it takes the host, and the old device's
-- soft-deleted row does not stand in its way
SELECT id AS s2 FROM hosts WHERE hardware_serial = 'S00000002' \gset
\! python3 test/mockctl.py devices CK_acme --delete S00000002
SELECT count(*) FROM ade_sync() \g /dev/null
UPDATE hosts SET hardware_serial = 'NEWDEV-1' WHERE hardware_serial = 'S00000002';
\! echo '[{"serial_number": "NEWDEV-1", "device_family": "Mac"}]' > "$ADE_TEST_TMP/nd.json"
\! python3 test/mockctl.py devices CK_acme --add-json "$ADE_TEST_TMP/nd.json"
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT is((SELECT (h.id, d.deleted_at) FROM hosts h JOIN host_dep_assignments d ON d.host_id = h.id WHERE h.hardware_serial = 'NEWDEV-1'),
  (:'s2'::bigint, NULL::timestamptz), 'a device added with the serial a host was given by hand is live on that host');
SELECT is((SELECT count(*)::int FROM ade_rejected_records), 0, 'no record was refused on the way');
SELECT * FROM finish();
