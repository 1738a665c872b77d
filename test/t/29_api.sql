-- The whole organisation (issue 24): Apple's Business/School Manager API
-- against the mock.  An API account (its EC key sealed, a first access
-- token proving it; a wrong key, client id or key bytes refused with
-- nothing stored); the inventory (servers, devices, each server's list)
-- by pages, resumed across runs, a 401 mid-way (one new token, the page
-- again), a 429 with Retry-After (a stored not_before, nothing sent before
-- it); ade_devices and the ade_status line; AppleCare on demand and per
-- run; activities (assign, partly failed, a 5xx on the POST not resent);
-- the drift of live assignments; the roles; a key rotation.  A 100,000
-- device inventory over several runs: 29_api_scale.
\ir setup.psql
\getenv mock ADE_MOCK_URL
\getenv tmp ADE_TEST_TMP
SELECT set_config('ade.abm_api_url', :'mock', false) \g /dev/null
SELECT set_config('ade.abm_token_url', :'mock' || '/auth/oauth2/token', false) \g /dev/null
SET ade.applecare_per_run = 0;
\! test/add-token.sh 'Org API' CK_api
\! python3 test/mockctl.py devices CK_api --generate 20 --prefix T >/dev/null
\! python3 test/mockctl.py api-server --org 'Org API' --name 'Other MDM' >/dev/null
\! python3 test/mockctl.py api-devices --org 'Org API' --generate 2500 --prefix U --unassigned >/dev/null
\set acct `python3 test/mockctl.py api-account --org 'Org API' --pem-out "$ADE_TEST_TMP/api.pem"`
\set pem `cat "$ADE_TEST_TMP/api.pem"`
\set wrong `python3 test/mockctl.py api-account --org 'Org API' --pem-out "$ADE_TEST_TMP/api2.pem" >/dev/null; cat "$ADE_TEST_TMP/api2.pem"`
SELECT :'acct'::jsonb->>'client_id' AS client_id, :'acct'::jsonb->>'key_id' AS key_id \gset
SELECT count(*) FROM ade_sync() \g /dev/null
CREATE FUNCTION pg_temp.state_of(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE q;
  RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
  RETURN SQLSTATE || ' ' || SQLERRM;
END $$;
SELECT plan(52);

-- ---- the account
SELECT alike(pg_temp.state_of(format('SELECT ade_add_api_account(%L, %L, convert_to(%L, ''UTF8''))',
                                     :'client_id', :'key_id', :'wrong')),
             '28000 ABM refused the API account%invalid_client%',
             'an account whose key is not the one ABM has for the key id is refused: invalid_client, said so');
SELECT alike(pg_temp.state_of(format('SELECT ade_add_api_account(%L, %L, convert_to(%L, ''UTF8''))',
                                     'BUSINESSAPI.00000000-0000-0000-0000-000000000000', :'key_id', :'pem')),
             '28000 ABM refused the API account%',
             'an unknown client id is refused');
SELECT alike(pg_temp.state_of(format('SELECT ade_add_api_account(%L, %L, %L::bytea)', :'client_id', :'key_id', '\x00ff')),
             '22023 %', 'key bytes that are no EC P-256 key are refused before anything is sent');
SELECT alike(pg_temp.state_of(format('SELECT ade_add_api_account(%L, %L, convert_to(%L, ''UTF8''))', 'MDMAPI.x', :'key_id', :'pem')),
             '22023 client_id must begin with BUSINESSAPI. or SCHOOLAPI.', 'a client id of no API is refused');
SELECT alike(pg_temp.state_of('SELECT ade_add_api_account(NULL, ''k'', ''\x00''::bytea)'), '22004 %', 'a NULL is an error');
SELECT is((SELECT count(*)::int FROM abm_api_accounts), 0, 'nothing refused was stored');
SELECT ade_add_api_account(:'client_id', :'key_id', convert_to(:'pem', 'UTF8')) AS account \gset
SELECT ok((SELECT private_key LIKE 'ade2:%' AND access_token LIKE 'ade2:%' AND position('PRIVATE KEY' IN private_key) = 0
             FROM abm_api_accounts WHERE id = :account), 'the key and the access token are stored sealed');
\set assertions `python3 test/mockctl.py api-assertions --client-id :client_id`
SELECT is((SELECT count(*)::int FROM jsonb_array_elements(CASE WHEN jsonb_typeof(:'assertions'::jsonb) = 'array' THEN :'assertions'::jsonb ELSE :'assertions'::jsonb->'assertions' END) a
            WHERE a->>'verdict' = 'ok' OR (a->>'ok')::boolean), 1, 'one good assertion was sent: the account was proven by a first access token');
SELECT is(ade_add_api_account(:'client_id', :'key_id', convert_to(:'pem', 'UTF8')), :account::bigint,
          'the same client id again keeps its account (the key replaced in place)');

-- an assertion the token endpoint finds expired (this server's clock an hour
-- behind Apple's): refused, saying so, and the hint names the clock
\! python3 test/mockctl.py api-settings --clock-offset 3600 >/dev/null
UPDATE abm_api_accounts SET access_token_expires_at = now() WHERE id = :account;
SELECT alike((SELECT error FROM ade_inventory_sync()), '%invalid_client%expired assertion%',
             'an expired client assertion is refused by the token endpoint, and the error says what ABM said');
SELECT alike(pg_temp.state_of(format('SELECT ade_add_api_account(%L, %L, convert_to(%L, ''UTF8''))', :'client_id', :'key_id', :'pem')),
             '28000 ABM refused the API account%', 'and an account cannot be added with it');
\! python3 test/mockctl.py api-settings --clock-offset 0 >/dev/null

-- ---- the inventory (across runs: 29_api_scale)
SELECT * FROM ade_inventory_sync() \g /dev/null
SELECT is((SELECT count(*)::int FROM abm_org_devices WHERE account_id = :account AND released_at IS NULL), 2520,
          'every device of the organisation is stored: the token''s 20 and 2500 on no server');
SELECT is((SELECT count(*)::int FROM abm_mdm_servers WHERE account_id = :account), 2, 'and both MDM servers');
SELECT is((SELECT count(*)::int FROM ade_devices WHERE assigned_to_us), 20, 'the token''s server is recognised as this database''s (by its uuid)');
SELECT is((SELECT count(*)::int FROM ade_devices WHERE live AND assigned_to_us), 20, 'and its devices are live hosts here');
SELECT ok((SELECT bool_and(product_family IS NOT NULL AND purchase_source_type IS NOT NULL) FROM abm_org_devices),
          'typed columns are filled from the attributes');
SELECT ok((SELECT count(*) > 0 FROM abm_org_devices WHERE extra ? 'futureAttribute'), 'an attribute ade has no column for is kept in extra');
SELECT ok((SELECT count(*) > 0 FROM abm_org_devices WHERE cardinality(ethernet_mac) >= 1), 'ethernetMacAddress as a string or an array is read');
SELECT is((SELECT org_devices_unassigned FROM ade_status WHERE api_account_id = :account), 2500::bigint, 'ade_status has a line for the account');
SELECT alike((SELECT attention FROM ade_status WHERE api_account_id = :account), '2500 devices of the organisation are on no MDM server%',
             'its attention says devices bought are on no server');
SELECT is((SELECT count(*)::int FROM ade_problems() WHERE problem = 'devices_on_no_server'), 1, 'and ade_problems() has a row for it');

-- a 401 in the middle of an inventory: one new token, the page again
\! python3 test/mockctl.py log-clear >/dev/null
\! python3 test/mockctl.py fault '{"path": "/v1/orgDevices", "status": 401, "skip": 1, "times": 1, "body": {"errors": [{"status": "401", "code": "UNAUTHORIZED", "title": "token expired"}]}}' >/dev/null
SELECT coalesce(string_agg(coalesce(error, ''), ','), '') AS error FROM ade_inventory_sync() \gset
SELECT is(:'error'::text, '', 'a 401 mid-inventory: the inventory completes');
\set tokens `python3 test/mockctl.py logcount 'POST /auth/oauth2/token'`
SELECT is(:'tokens'::int, 1, 'with one new access token');
SELECT is((SELECT count(*)::int FROM abm_org_devices WHERE released_at IS NULL), 2520, 'and nothing is lost or marked released');

-- a 429 with Retry-After: not_before stored, nothing sent before it
\! python3 test/mockctl.py log-clear >/dev/null
\! python3 test/mockctl.py fault '{"path": "/v1/orgDevices", "status": 429, "headers": {"Retry-After": "120"}, "skip": 1, "times": 1}' >/dev/null
SELECT coalesce(string_agg(error, ','), '') AS e429 FROM ade_inventory_sync() \gset
SELECT alike(:'e429'::text, 'ABM asked to wait%', 'a 429 mid-inventory stops it, saying so');
SELECT ok((SELECT not_before BETWEEN now() + interval '100 s' AND now() + interval '140 s' FROM abm_api_accounts WHERE id = :account),
          'and stores Retry-After as the account''s not_before');
\! python3 test/mockctl.py log-clear >/dev/null
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT * FROM ade_inventory_sync() \g /dev/null
\set sent `python3 test/mockctl.py logcount 'GET /v1/orgDevices'`
SELECT is(:'sent'::int, 0, 'nothing is sent to the account before not_before, by a run or ade_inventory_sync()');
SELECT alike((SELECT attention FROM ade_status WHERE api_account_id = :account), 'ABM asked to wait%', 'ade_status says so');
UPDATE abm_api_accounts SET not_before = now() - interval '1 s', last_error = NULL;
SELECT * FROM ade_inventory_sync() \g /dev/null
SELECT ok((SELECT inventory_at > now() - interval '1 minute' AND inventory_phase IS NULL FROM abm_api_accounts WHERE id = :account),
          'after it, the inventory goes on from where it stopped and completes');

-- ---- AppleCare
SELECT is(ade_refresh_applecare(ARRAY['U00000001', 'U00000002', 'U00000003', 'NOPE']), 3, 'ade_refresh_applecare() fetches the devices it knows, one request each');
SELECT is((SELECT count(*)::int FROM abm_org_devices WHERE applecare_checked_at IS NOT NULL), 3, 'their check is dated');
SET ade.applecare_per_run = 7;
UPDATE abm_api_accounts SET inventory_at = now();
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT is((SELECT count(*)::int FROM abm_org_devices WHERE applecare_checked_at IS NOT NULL), 10, 'a run fetches ade.applecare_per_run more, those never checked first');
SET ade.applecare_per_run = 0;
SELECT ok((SELECT count(*) > 0 FROM ade_devices WHERE applecare_status IS NOT NULL), 'ade_devices shows their AppleCare');

-- ---- activities
SELECT ade_assign_devices(ARRAY['U00000010', 'U00000011'], (SELECT server_name FROM abm_tokens WHERE consumer_key = 'CK_api')) AS act \gset
SELECT is((SELECT status FROM abm_device_activities WHERE id = :'act'), 'IN_PROGRESS', 'ade_assign_devices() starts an activity (server by name), recorded');
SELECT * FROM ade_inventory_sync() \g /dev/null
SELECT * FROM ade_inventory_sync() \g /dev/null
SELECT is((SELECT status || '/' || sub_status FROM abm_device_activities WHERE id = :'act'), 'COMPLETED/COMPLETED_WITH_SUCCESS', 'later runs poll it until it completes');
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT is((SELECT count(*)::int FROM ade_devices WHERE serial IN ('U00000010', 'U00000011') AND live), 2, 'the devices moved to this server are live hosts after the next sync');
\! python3 test/mockctl.py api-activity --org 'Org API' --fail U00000013 >/dev/null
SELECT ade_assign_devices(ARRAY['U00000012', 'U00000013'], (SELECT id FROM abm_mdm_servers WHERE server_name = 'Other MDM')) AS act2 \gset
SELECT * FROM ade_inventory_sync() \g /dev/null
SELECT * FROM ade_inventory_sync() \g /dev/null
SELECT is((SELECT status || '/' || sub_status FROM abm_device_activities WHERE id = :'act2'), 'COMPLETED/COMPLETED_WITH_ERROR', 'a partly failed activity is recorded as such (server by id)');
\! python3 test/mockctl.py log-clear >/dev/null
\! python3 test/mockctl.py fault '{"path": "/v1/orgDeviceActivities", "method": "POST", "status": 500, "times": 1}' >/dev/null
SELECT ade_unassign_devices(ARRAY['U00000010'], (SELECT server_name FROM abm_tokens WHERE consumer_key = 'CK_api')) AS act3 \gset
\set posts `python3 test/mockctl.py logcount 'POST /v1/orgDeviceActivities'`
SELECT is(:'posts'::int, 1, 'a 5xx on the POST that starts an activity is not sent again');
SELECT is((SELECT status FROM abm_device_activities WHERE id = :'act3'), 'UNKNOWN', 'it is kept as an activity of unknown outcome');
SELECT alike(pg_temp.state_of('SELECT ade_assign_devices(ARRAY[''U1''], ''no such server'')'), 'P0002 no MDM server has the id or name%', 'an unknown server is refused');
SELECT alike(pg_temp.state_of('SELECT ade_assign_devices(ARRAY[NULL::text], ''Other MDM'')'), '22023 %', 'a NULL serial is refused');

-- ---- drift: ABM shows a live device here on another server, or released
SELECT ade_assign_devices(ARRAY['T00000001'], 'Other MDM') AS act4 \gset
SELECT * FROM ade_inventory_sync() \g /dev/null
SELECT * FROM ade_inventory_sync() \g /dev/null
\! python3 test/mockctl.py api-devices --org 'Org API' --release T00000002 >/dev/null
SELECT * FROM ade_inventory_sync() \g /dev/null
SELECT is((SELECT deleted_reason FROM host_dep_assignments WHERE hardware_serial = 'T00000001'), 'another server',
          'a live device the inventory shows on another server is soft-deleted, saying so');
SELECT is((SELECT deleted_reason FROM host_dep_assignments WHERE hardware_serial = 'T00000002'), 'released from org',
          'a live device released from the organisation too (marked released, not deleted)');
SELECT ok((SELECT released_at IS NOT NULL FROM abm_org_devices WHERE serial = 'T00000002'), 'the released device''s row stays, marked');
SELECT is((SELECT string_agg(left(hardware_serial, 1), '' ORDER BY hardware_serial) FROM host_dep_assignments WHERE deleted_at IS NULL),
          repeat('T', 18) || 'UU', 'no other live device is touched (the 18 others, and the 2 assigned here)');

-- ---- roles and secrets
SET ROLE ade_reader;
SELECT ok((SELECT count(*) > 0 FROM (SELECT * FROM ade_devices) d), 'ade_reader reads ade_devices (SELECT *)');
SELECT ok((SELECT count(*) > 0 FROM (SELECT * FROM ade_status) d), 'and ade_status with the account''s line');
SELECT alike(pg_temp.state_of('SELECT * FROM abm_api_accounts'), '42501 %', 'but not abm_api_accounts');
SELECT alike(pg_temp.state_of('SELECT * FROM ade_inventory_sync()'), '42501 %', 'nor may it run the inventory');
RESET ROLE;

-- ---- a key rotation reseals the account's secrets; removal forgets it
SELECT ade_rotate_secret_key() \g /dev/null
SELECT is((SELECT count(*)::int FROM ade_secret_key_usage WHERE NOT current AND sealed_values > 0), 0, 'a rotation reseals the account''s key and token too');
SELECT is((SELECT error FROM ade_inventory_sync()), NULL, 'and the account still works');
SELECT ade_remove_api_account(:account) \g /dev/null
SELECT is((SELECT count(*)::int FROM abm_org_devices) + (SELECT count(*)::int FROM abm_mdm_servers), 0, 'ade_remove_api_account() forgets the account and its inventory');

SELECT * FROM finish();
