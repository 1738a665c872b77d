-- Answers of Apple's that 0.4 could not handle (issue 18, item 5), with a
-- mock that answers as Apple documents:
-- (a) EXHAUSTED_CURSOR ("the cursor had returned all devices in previous
--     calls") for a fetch cursor whose following pages were served but
--     never applied here: the fetch starts again, no device is skipped;
-- (b) PUT /profile/devices answering 400 INVALID_PROFILE because ABM no
--     longer knows the stored profile UUID: the profile is defined again,
--     once per run, and the batch sent again.
\ir setup.psql
SELECT plan(14);

-- (a) ten devices in two pages; the last page is served and cut on its
-- way: ABM takes the fetch as finished, ade never applied that page
\! test/add-token.sh Ex CK_ex
SELECT id AS ex FROM abm_tokens WHERE consumer_key = 'CK_ex' \gset
\! python3 test/mockctl.py devices CK_ex --generate 10 --prefix E >/dev/null
\! python3 test/mockctl.py fault '{"path": "/server/devices", "skip": 1, "cut_body": true, "times": 1}' >/dev/null
SET ade.page_size = 5;
SET ade.max_retries = 0;
CALL ade_sync_job(:ex);
SELECT is((SELECT count(*)::int FROM hosts WHERE hardware_serial LIKE 'E%'), 5,
  'the first page applied; the last one was lost on its way');
\! python3 test/mockctl.py log-clear >/dev/null
CALL ade_sync_job(:ex);
\set exhausted `python3 test/mockctl.py log | python3 -c 'import json,sys; print(sum(1 for r in json.load(sys.stdin)["requests"] if r["status"] == 400 and r["path"] == "/server/devices"))'`
SELECT is(:exhausted, 1, 'ABM answered the stored cursor with EXHAUSTED_CURSOR');
SELECT is((SELECT count(*)::int FROM hosts WHERE hardware_serial LIKE 'E%'), 10,
  'EXHAUSTED_CURSOR for a cursor whose later pages were never applied starts the fetch again: no device is skipped');
SELECT is((SELECT mode FROM abm_tokens WHERE id = :ex), 'sync', 'and the token goes on in sync mode');
SELECT is((SELECT error FROM ade_sync_runs WHERE token_id = :ex ORDER BY id DESC LIMIT 1), NULL,
  'without an error');
RESET ade.page_size;
RESET ade.max_retries;

-- (b) a profile ABM deleted on its side
\! test/add-token.sh Pr CK_pr
SELECT id AS pr FROM abm_tokens WHERE consumer_key = 'CK_pr' \gset
\! python3 test/mockctl.py devices CK_pr --generate 3 --prefix P >/dev/null
SET ade.enroll_url = 'https://mdm.example.org/enroll';
CALL ade_sync_job(:pr);
SELECT profile_uuid AS old_uuid FROM ade_profile_definitions WHERE token_id = :pr \gset
\! python3 test/mockctl.py tokstate CK_pr --forget-profiles
\! python3 test/mockctl.py devices CK_pr --generate 2 --prefix Q >/dev/null
\! python3 test/mockctl.py log-clear >/dev/null
CALL ade_sync_job(:pr);
\set defines `python3 test/mockctl.py logcount 'POST /profile'`
SELECT is(:defines, 1, 'a PUT /profile/devices refused with INVALID_PROFILE defines the profile again, once');
SELECT isnt((SELECT profile_uuid FROM ade_profile_definitions WHERE token_id = :pr), :'old_uuid',
  'the new UUID is stored');
SELECT is((SELECT count(*)::int FROM host_dep_assignments WHERE hardware_serial LIKE 'Q%' AND assign_profile_response = 'SUCCESS'), 2,
  'and the batch is sent again with it: the new devices hold the profile');
SELECT is((SELECT error FROM ade_sync_runs WHERE token_id = :pr ORDER BY id DESC LIMIT 1), NULL,
  'the run has no error');
SELECT is((SELECT count(*)::int FROM host_dep_assignments WHERE hardware_serial LIKE 'P%' AND needs_assign), 3,
  'the devices that held the lost UUID are due again (ABM lost what they hold)');
CALL ade_sync_job(:pr);
SELECT is((SELECT count(*)::int FROM host_dep_assignments d JOIN ade_profile_definitions p ON p.token_id = d.abm_token_id
            WHERE d.hardware_serial LIKE 'P%' AND d.profile_uuid = p.profile_uuid AND NOT d.needs_assign), 3,
  'and the next run gives them the new one');

-- ABM refuses the new UUID too: defined again once, then kept as refused
-- (a UUID no device ever held), and not defined again every run
\! python3 test/mockctl.py devices CK_pr --generate 1 --prefix R >/dev/null
\! python3 test/mockctl.py fault '{"path": "/profile/devices", "status": 400, "body": "INVALID_PROFILE", "times": -1}' >/dev/null
\! python3 test/mockctl.py log-clear >/dev/null
CALL ade_sync_job(:pr);
\set defines `python3 test/mockctl.py logcount 'POST /profile'`
SELECT ok(:defines = 1 AND (SELECT error FROM ade_sync_runs WHERE token_id = :pr ORDER BY id DESC LIMIT 1) LIKE '%INVALID_PROFILE%',
  'a profile ABM forgot again is defined again once in the run, and the run says why');
\! python3 test/mockctl.py log-clear >/dev/null
CALL ade_sync_job(:pr);
CALL ade_sync_job(:pr);
\set defines `python3 test/mockctl.py logcount 'POST /profile'`
SELECT is(:defines, 0, 'a UUID ABM never took is kept as refused: no POST /profile in the next runs');
SELECT ok((SELECT attention FROM ade_status WHERE token_id = :pr) LIKE '%INVALID_PROFILE%',
  'and ade_status.attention says so');
\! python3 test/mockctl.py faults-clear >/dev/null
RESET ade.enroll_url;

SELECT * FROM finish();
