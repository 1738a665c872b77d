-- A profile per device, or none (issue 22, item 3): a device pinned to a
-- profile gets it whatever its team, token and platform scopes say, keeps
-- it across a move to another token and its host being deleted and made
-- again, and is never assigned anything else while pinned; a held device
-- gets nothing; clearing either returns the device to its scope's profile
-- on the next run.  What ABM holds is read from the mock's own state.
\ir setup.psql
\! test/add-token.sh Acme CK_pin
\! test/add-token.sh Beta CK_pin2
SELECT id AS acme FROM abm_tokens WHERE consumer_key = 'CK_pin' \gset
SELECT id AS beta FROM abm_tokens WHERE consumer_key = 'CK_pin2' \gset
\! python3 test/mockctl.py devices CK_pin --generate 6 --prefix P --families Mac,iPhone,iPad >/dev/null
INSERT INTO teams (name) VALUES ('Staff') RETURNING id AS staff \gset
SELECT ade_set_profile('{"profile_name": "org", "url": "https://mdm.example.com/org"}') \g /dev/null
SELECT ade_set_profile('{"profile_name": "acme", "url": "https://mdm.example.com/acme"}', :acme) \g /dev/null
SELECT ade_set_profile('{"profile_name": "acme-mac", "url": "https://mdm.example.com/acme-mac"}', :acme, 'darwin') \g /dev/null
SELECT ade_set_profile('{"profile_name": "staff", "url": "https://mdm.example.com/staff"}', team_id => :staff) \g /dev/null
SELECT ade_set_profile('{"profile_name": "beta", "url": "https://mdm.example.com/beta"}', :beta) \g /dev/null
CREATE TEMP TABLE mock_state (ck text, st jsonb);
-- held by ABM: the name of the profile each device holds at the mock
CREATE FUNCTION pg_temp.held(serial text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  RETURN (SELECT s.st->'profiles'->(s.st->'devices'->serial->>'profile_uuid')->>'profile_name'
            FROM mock_state s WHERE s.st->'devices' ? serial LIMIT 1);
END $$;
SELECT plan(31);

-- pinned before ABM reports the device: the pin applies when it comes
SELECT ade_set_device_profile('P00000000', '{"profile_name": "vip", "url": "https://mdm.example.com/vip"}') \g /dev/null
SELECT ade_hold_device('P00000001') \g /dev/null
SELECT count(*) FROM ade_sync(:acme) \g /dev/null
\set st `python3 test/mockctl.py state CK_pin`
INSERT INTO mock_state VALUES ('CK_pin', :'st');
SELECT is(pg_temp.held('P00000000'), 'vip', 'a pinned Mac gets its own profile, not its (token, platform) scope''s');
SELECT is(pg_temp.held('P00000001'), NULL, 'a held device gets none');
SELECT is(pg_temp.held('P00000003'), 'acme-mac', 'another Mac gets its scope''s');
SELECT is(pg_temp.held('P00000002'), 'acme', 'an iPad its token''s');
SELECT is((SELECT needs_assign FROM host_dep_assignments WHERE hardware_serial = 'P00000001'), false, 'a held device is not pending');
SELECT results_eq($$SELECT serial, token_id, hold, profile->>'profile_name', reason, live FROM ade_device_overrides ORDER BY 1$$,
  format($$VALUES ('P00000000', %1$s::bigint, false, 'vip', 'pinned', true), ('P00000001', %1$s::bigint, true, NULL, 'held', true)$$, :acme),
  'ade_device_overrides shows the pin and the hold');
SELECT is((SELECT host_id FROM ade_device_overrides WHERE serial = 'P00000000'),
  (SELECT id FROM hosts WHERE hardware_serial = 'P00000000'), 'with the host');

-- the echoes, and more runs: nothing is sent again
\! python3 test/mockctl.py log-clear
SELECT count(*) FROM ade_sync(:acme) \g /dev/null
SELECT count(*) FROM ade_sync(:acme) \g /dev/null
\set sent `python3 test/mockctl.py sent`
SELECT is(:'sent'::jsonb, '[]', 'ABM''s echo of a pinned assignment is not sent again (no loop)');

-- the team's profile does not win over a pin
UPDATE hosts SET team_id = :staff WHERE hardware_serial IN ('P00000000', 'P00000001', 'P00000003');
\! python3 test/mockctl.py log-clear
SELECT count(*) FROM ade_sync(:acme) \g /dev/null
\set sent `python3 test/mockctl.py sent`
SELECT is(:'sent'::jsonb, '["P00000003"]', 'a move to a team with a profile: only the unpinned, unheld device is sent');
DELETE FROM mock_state;
\set st `python3 test/mockctl.py state CK_pin`
INSERT INTO mock_state VALUES ('CK_pin', :'st');
SELECT is(pg_temp.held('P00000000'), 'vip', 'the pinned one keeps its profile');
SELECT is(pg_temp.held('P00000003'), 'staff', 'the other gets the team''s');

-- the host deleted (and made again by the special case): the pin stays
DELETE FROM hosts WHERE hardware_serial = 'P00000000';
\! python3 test/mockctl.py log-clear
SELECT count(*) FROM ade_sync(:acme) \g /dev/null
\set sent `python3 test/mockctl.py sent`
SELECT is(:'sent'::jsonb, '[]', 'its host deleted and made again, the pinned device is not sent anything');
SELECT is((SELECT profile->>'profile_name' FROM ade_device_overrides WHERE serial = 'P00000000'), 'vip', 'and stays pinned');

-- a changed pin is sent
SELECT ade_set_device_profile('P00000000', '{"profile_name": "vip2", "url": "https://mdm.example.com/vip2"}') \g /dev/null
\! python3 test/mockctl.py log-clear
SELECT count(*) FROM ade_sync(:acme) \g /dev/null
\set sent `python3 test/mockctl.py sent`
SELECT is(:'sent'::jsonb, '["P00000000"]', 'a new profile pinned to a device is sent on the next run');

-- the device moves to another token: its pin goes with it
\! python3 test/mockctl.py devices CK_pin --delete P00000000 >/dev/null
\! printf '%s' '[{"serial_number": "P00000000", "device_family": "Mac"}]' > "$ADE_TEST_TMP/pin_add.json" && python3 test/mockctl.py devices CK_pin2 --add-json "$ADE_TEST_TMP/pin_add.json" >/dev/null
SELECT count(*) FROM ade_sync(:acme) \g /dev/null
SELECT count(*) FROM ade_sync(:beta) \g /dev/null
SELECT count(*) FROM ade_sync(:beta) \g /dev/null
DELETE FROM mock_state;
\set st `python3 test/mockctl.py state CK_pin2`
INSERT INTO mock_state VALUES ('CK_pin2', :'st');
SELECT is((SELECT abm_token_id FROM host_dep_assignments WHERE hardware_serial = 'P00000000'), :beta::bigint, 'the device moved to Beta');
SELECT is(pg_temp.held('P00000000'), 'vip2', 'and got its pinned profile there, not Beta''s');
SELECT is((SELECT token_id FROM ade_device_overrides WHERE serial = 'P00000000'), :beta::bigint, 'the view follows it');

-- a hold stops an assignment that was due
\! python3 test/mockctl.py devices CK_pin --generate 1 --prefix Q --families iPhone >/dev/null
\! python3 test/mockctl.py assign CK_pin Q00000000=FAILED >/dev/null
SELECT count(*) FROM ade_sync(:acme) \g /dev/null
SELECT is((SELECT assign_profile_response FROM host_dep_assignments WHERE hardware_serial = 'Q00000000'), 'FAILED', 'a device whose assignment failed');
\! python3 test/mockctl.py assign CK_pin Q00000000= >/dev/null
SELECT ade_hold_device('Q00000000') \g /dev/null
UPDATE host_dep_assignments SET retry_at = now() - interval '1 s' WHERE hardware_serial = 'Q00000000';
\! python3 test/mockctl.py log-clear
SELECT count(*) FROM ade_sync(:acme) \g /dev/null
\set sent `python3 test/mockctl.py sent`
SELECT is(:'sent'::jsonb, '[]', 'held, it is not sent again when its retry is due');
SELECT is((SELECT pending FROM ade_status WHERE token_id = :acme), 0::bigint, 'and ade_status counts nothing pending');
SELECT is((SELECT held FROM ade_status WHERE token_id = :acme), 2::bigint, 'but two held');

-- cleared: back to the scope's profile on the next run
SELECT ade_clear_device_profile('P00000001') \g /dev/null
SELECT ade_clear_device_profile('Q00000000') \g /dev/null
\! python3 test/mockctl.py log-clear
SELECT count(*) FROM ade_sync(:acme) \g /dev/null
\set sent `python3 test/mockctl.py sent`
SELECT is(:'sent'::jsonb, '["P00000001", "Q00000000"]', 'cleared holds: both are sent their profile on the next run');
DELETE FROM mock_state;
\set st `python3 test/mockctl.py state CK_pin`
INSERT INTO mock_state VALUES ('CK_pin', :'st');
SELECT is(pg_temp.held('P00000001'), 'staff', 'the team''s profile, as its scope says');
SELECT ade_clear_device_profile('P00000000') \g /dev/null
SELECT count(*) FROM ade_sync(:beta) \g /dev/null
DELETE FROM mock_state;
\set st `python3 test/mockctl.py state CK_pin2`
INSERT INTO mock_state VALUES ('CK_pin2', :'st');
SELECT is(pg_temp.held('P00000000'), 'staff', 'a cleared pin: the device gets its team''s profile at its new token');
SELECT is((SELECT count(*)::int FROM ade_device_overrides), 0, 'no override is left');

-- bad input changes nothing
SELECT throws_ok($$SELECT ade_set_device_profile('P00000002', NULL)$$, '22004', 'profile is NULL', 'a NULL profile is an error, never a clear');
SELECT throws_ok($$SELECT ade_set_device_profile(NULL, '{"profile_name": "x", "url": "https://mdm.example.com/x"}')$$, '22023',
  NULL, 'a NULL serial is an error');
SELECT throws_ok($$SELECT ade_set_device_profile('P00000002', '{"profile_name": "x"}')$$, '22023', NULL, 'a profile without url is refused');
SELECT throws_ok($$SELECT ade_hold_device('P 2')$$, '22023', NULL, 'a serial with a space is refused');
SELECT is((SELECT count(*)::int FROM ade_device_overrides), 0, 'none of them stored anything');
SELECT ade_clear_device_profile('P00000002') \g /dev/null
SELECT pass('clearing a device with nothing to clear is no error');

SELECT * FROM finish();
