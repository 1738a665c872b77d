-- What the review of issue 24 found, each failing before its fix: a page
-- of another shape than JSON:API's (data null, no meta) taken for the end
-- of the list released the organisation and soft-deleted live devices; a
-- server name shared with another organisation's token made a server
-- "ours"; a stored not_before ignored by AppleCare, polls and the activity
-- POST, and never kept after a 429 of the token endpoint; one activity
-- whose poll fails, or one device whose AppleCare fails, stopped
-- everything else; answers pasted into one JSON object let one body write
-- another device's coverage.
\ir setup.psql
\getenv mock ADE_MOCK_URL
SELECT set_config('ade.abm_api_url', :'mock', false) \g /dev/null
SELECT set_config('ade.abm_token_url', :'mock' || '/auth/oauth2/token', false) \g /dev/null
SET ade.applecare_per_run = 0;
\! test/add-token.sh 'Org R' CK_rev
\! python3 test/mockctl.py devices CK_rev --generate 20 --prefix T >/dev/null
\! python3 test/mockctl.py api-devices --org 'Org R' --generate 30 --prefix U --unassigned >/dev/null
\set acct `python3 test/mockctl.py api-account --org 'Org R' --pem-out "$ADE_TEST_TMP/rev.pem"`
\set pem `cat "$ADE_TEST_TMP/rev.pem"`
SELECT ade_add_api_account(:'acct'::jsonb->>'client_id', :'acct'::jsonb->>'key_id', convert_to(:'pem', 'UTF8')) AS account \gset
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT * FROM ade_inventory_sync() \g /dev/null
SELECT plan(18);
SELECT is((SELECT count(*)::int FROM abm_org_devices WHERE released_at IS NULL), 50, 'the organisation''s 50 devices are stored');

-- a page with data null, then one with no meta: errors, nothing released or drifted
\! python3 test/mockctl.py fault '{"path": "/v1/orgDevices", "status": 200, "body": {"data": null, "meta": {"paging": {"limit": 1000}}}, "times": 1}' >/dev/null
SELECT alike((SELECT error FROM ade_inventory_sync()), '%not a JSON:API page%', 'a page whose data is not an array is an error');
\! python3 test/mockctl.py fault '{"path": "/v1/orgDevices", "status": 200, "body": {"data": []}, "times": 1}' >/dev/null
SELECT alike((SELECT error FROM ade_inventory_sync()), '%not a JSON:API page%', 'and so is a page with no meta.paging');
SELECT * FROM ade_inventory_sync() \g /dev/null
SELECT is((SELECT count(*)::int FROM abm_org_devices WHERE released_at IS NOT NULL), 0, 'no device was marked released');
SELECT is((SELECT count(*)::int FROM host_dep_assignments WHERE deleted_at IS NULL), 20, 'no live device was soft-deleted');

-- a pass that lists far fewer devices (a list cut short): nothing released until the next agrees
\! python3 test/mockctl.py api-devices --org 'Org R' --release U00000001,U00000002,U00000003,U00000004,U00000005,U00000006,U00000007,U00000008,U00000009,U00000010,U00000011,U00000012 >/dev/null
SELECT alike((SELECT error FROM ade_inventory_sync()), '%did not list 12 of 50 devices%', 'a pass that lost more than a tenth of the devices says so');
SELECT is((SELECT count(*)::int FROM abm_org_devices WHERE released_at IS NOT NULL), 0, 'and marks none released');
-- a next pass that lists none at all (a well-formed empty list): not an
-- agreement, held back the same way
\! python3 test/mockctl.py fault '{"path": "/v1/orgDevices", "status": 200, "body": {"data": [], "meta": {"paging": {"limit": 1000}}}, "times": 1}' >/dev/null
UPDATE abm_api_accounts SET inventory_at = NULL;
SELECT alike((SELECT error FROM ade_inventory_sync()), '%did not list 50 of 50 devices%', 'a next pass that loses others too is held back, not taken for an agreement');
SELECT is((SELECT count(*)::int FROM abm_org_devices WHERE released_at IS NOT NULL) + (SELECT count(*)::int FROM host_dep_assignments WHERE deleted_at IS NOT NULL), 0,
          'nothing released, no live device soft-deleted');
UPDATE abm_api_accounts SET inventory_at = NULL;
SELECT * FROM ade_inventory_sync() \g /dev/null
SELECT is((SELECT count(*)::int FROM abm_org_devices WHERE released_at IS NOT NULL), 12, 'the next pass that agrees does');

-- a server of the organisation named as another organisation's token: not ours
\! test/add-token.sh 'Org Z' CK_other
UPDATE abm_tokens SET server_name = 'Shared Name' WHERE consumer_key = 'CK_other';
\! python3 test/mockctl.py api-server --org 'Org R' --name 'Shared Name' >/dev/null
\! python3 test/mockctl.py api-devices --org 'Org R' --generate 3 --prefix W --server 'Shared Name' >/dev/null
SELECT * FROM ade_inventory_sync() \g /dev/null
SELECT is((SELECT count(*)::int FROM ade_devices WHERE serial LIKE 'W%' AND assigned_to_us), 0,
          'a server whose name another organisation''s token (with a uuid) has is not this database''s');

-- ABM asked to wait: nothing is sent by any path
UPDATE abm_api_accounts SET not_before = now() + interval '10 minutes';
\! python3 test/mockctl.py log-clear >/dev/null
SELECT ade_refresh_applecare(ARRAY['U00000020']) \g /dev/null
SELECT coalesce(ade_assign_devices(ARRAY['U00000021'], (SELECT server_name FROM abm_tokens WHERE consumer_key = 'CK_rev')), 'null') AS paused_act \gset
SELECT * FROM ade_inventory_sync() \g /dev/null
\set sent `python3 test/mockctl.py call GET /_mock/log | python3 -c 'import json,sys; print(sum(1 for r in json.load(sys.stdin)["requests"] if r["path"].startswith("/v1/") or r["path"].startswith("/auth/")))'`
SELECT is(:'sent'::int, 0, 'while not_before is ahead, no AppleCare, activity, poll or inventory request is sent');
SELECT is(:'paused_act'::text, 'null', 'and an activity asked for meanwhile returns null (a WARNING says why)');
UPDATE abm_api_accounts SET not_before = NULL;

-- a 429 of the token endpoint: kept as not_before
UPDATE abm_api_accounts SET access_token_expires_at = now();
\! python3 test/mockctl.py fault '{"path": "/auth/oauth2/token", "status": 429, "headers": {"Retry-After": "90"}, "times": 1}' >/dev/null
SELECT * FROM ade_inventory_sync() \g /dev/null
SELECT ok((SELECT not_before > now() + interval '60 s' FROM abm_api_accounts), 'a 429 of the token endpoint is kept as the account''s not_before');
UPDATE abm_api_accounts SET not_before = NULL;

-- an activity whose poll ABM refuses, a device whose AppleCare it refuses,
-- a body that is not JSON: each is that one's failure, nothing else's
SELECT ade_assign_devices(ARRAY['U00000022'], 'Shared Name') AS act \gset
\setenv ACT :act
\! python3 test/mockctl.py fault "{\"path\": \"/v1/orgDeviceActivities/$ACT\", \"method\": \"GET\", \"status\": 403, \"times\": -1, \"body\": {\"errors\": [{\"status\": \"403\", \"code\": \"FORBIDDEN_ERROR\", \"title\": \"no\"}]}}" >/dev/null
\! python3 test/mockctl.py fault '{"path": "/v1/orgDevices/T00000003/appleCareCoverage", "status": 403, "times": -1}' >/dev/null
\! python3 -c 'import json; print(json.dumps({"path": "/v1/orgDevices/T00000001/appleCareCoverage", "status": 200, "body": "[" * 60000 + "]" * 60000, "times": -1}))' > "$ADE_TEST_TMP/deep.json"; python3 test/mockctl.py fault "$(cat "$ADE_TEST_TMP/deep.json")" >/dev/null
\! python3 test/mockctl.py fault '{"path": "/v1/orgDevices/T00000000/appleCareCoverage", "status": 200, "body_b64": "/3sgImRhdGEiOiBbXSB9", "times": -1}' >/dev/null
\! python3 test/mockctl.py fault '{"path": "/v1/orgDevices/T00000004/appleCareCoverage", "status": 200, "body": "{\"data\": []}, \"T00000005\": {\"data\": [{\"type\": \"appleCareCoverage\", \"id\": \"x\", \"attributes\": {\"status\": \"ACTIVE\", \"description\": \"INJECTED\"}}]}", "times": -1}' >/dev/null
UPDATE abm_api_accounts SET inventory_at = NULL;
\! python3 test/mockctl.py log-clear >/dev/null
SET ade.applecare_per_run = 5;
SELECT * FROM ade_inventory_sync() \g /dev/null
SET ade.applecare_per_run = 0;
\set pages `python3 test/mockctl.py logcount 'GET /v1/orgDevices'`
SELECT cmp_ok(:'pages'::int, '>', 0, 'an activity whose poll is refused, an AppleCare answer nested too deep to read or not UTF-8, do not stop the inventory');
SELECT alike((SELECT error FROM abm_device_activities WHERE id = :'act'), '%403%', 'the refused poll is kept with the activity');
SELECT is((SELECT count(*)::int FROM abm_org_devices WHERE applecare_checked_at IS NOT NULL AND serial IN ('T00000000', 'T00000001', 'T00000002', 'T00000003', 'T00000004')), 5,
          'a device whose AppleCare ABM refuses does not stop the others (and goes to the back of the queue)');
SELECT is((SELECT count(*)::int FROM abm_applecare WHERE description = 'INJECTED'), 0, 'one device''s answer never writes another device''s coverage');

SELECT * FROM finish();
