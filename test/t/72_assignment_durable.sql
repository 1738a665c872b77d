-- The assignment keeps what Apple answered (issue 12, case 2): each
-- PUT /profile/devices batch, and each profile definition, is stored on its
-- own, so that a failing batch (5xx after retries, a 429 past the wait
-- limit) loses nothing of the batches before it, the next run neither
-- defines the profile again nor sends those devices again, and a batch that
-- fails in every run goes to the back of the queue instead of holding up
-- the others for ever.  (0.3 ran the whole assignment in one
-- subtransaction: one failed batch rolled back every answer.)
\ir setup.psql
\! test/add-token.sh Acme CK_acme
SELECT id AS acme FROM abm_tokens WHERE consumer_key = 'CK_acme' \gset
\! python3 test/mockctl.py devices CK_acme --generate 3000 --families Mac,iPhone,iPad
SET ade.retry_backoff = 10;
SELECT plan(15);
-- the devices first, no profile yet
SELECT count(*) FROM ade_sync() \g /dev/null

-- a 503 on the third PUT, on every try
SELECT ade_set_profile('{"profile_name": "p", "url": "https://mdm.example.com/enroll"}') \g /dev/null
\! python3 test/mockctl.py fault '{"method": "PUT", "path": "/profile/devices", "skip": 2, "status": 503, "body": "SERVICE_UNAVAILABLE", "times": -1}'
\! python3 test/mockctl.py log-clear
CREATE TEMP TABLE r1 AS SELECT * FROM ade_sync();
SELECT alike((SELECT error FROM r1), 'ABM failed PUT /profile/devices (HTTP 503)%', 'the failing batch is reported');
SELECT is((SELECT assigned FROM r1), 2000, 'the two batches before it count as assigned');
SELECT is((SELECT count(*)::int FROM host_dep_assignments WHERE assign_profile_response = 'SUCCESS'), 2000,
  'and their answers are stored, though a later batch failed');
SELECT is((SELECT count(*)::int FROM ade_profile_definitions), 1, 'the profile''s definition is stored too');
\! python3 test/mockctl.py faults-clear
\! python3 test/mockctl.py log-clear
CREATE TEMP TABLE r2 AS SELECT * FROM ade_sync();
\set posts `python3 test/mockctl.py logcount 'POST /profile'`
SELECT is(:'posts'::int, 0, 'the next run does not define the profile again');
SELECT is((SELECT (assigned, error) FROM r2), (1000, NULL::text), 'and sends only the 1000 devices that got no answer');
SELECT is((SELECT count(*)::int FROM host_dep_assignments WHERE assign_profile_response = 'SUCCESS'), 3000, 'every device is assigned');

-- the second PUT of every run fails (a 503, no retries): each run still
-- gets further, the unanswered batch going to the back of the queue
SELECT ade_set_profile('{"profile_name": "p2", "url": "https://mdm.example.com/enroll"}') \g /dev/null
SET ade.max_retries = 0;
\! python3 test/mockctl.py fault '{"method": "PUT", "path": "/profile/devices", "skip": 1, "status": 503, "body": "SERVICE_UNAVAILABLE", "times": 1}'
CREATE TEMP TABLE t1 AS SELECT * FROM ade_sync();
\! python3 test/mockctl.py fault '{"method": "PUT", "path": "/profile/devices", "skip": 1, "status": 503, "body": "SERVICE_UNAVAILABLE", "times": 1}'
CREATE TEMP TABLE t2 AS SELECT * FROM ade_sync();
\! python3 test/mockctl.py fault '{"method": "PUT", "path": "/profile/devices", "skip": 1, "status": 503, "body": "SERVICE_UNAVAILABLE", "times": 1}'
CREATE TEMP TABLE t3 AS SELECT * FROM ade_sync();
RESET ade.max_retries;
SELECT is((SELECT assigned FROM t1) + (SELECT assigned FROM t2) + (SELECT assigned FROM t3), 3000,
  'with the second PUT of every run failing, three runs assign all 3000 devices');
SELECT is((SELECT count(*)::int FROM host_dep_assignments d
             JOIN ade_profile_definitions p ON p.profile_uuid = d.profile_uuid
            WHERE p.profile_key = md5('{"profile_name": "p2", "url": "https://mdm.example.com/enroll"}'::jsonb::text)), 3000,
  'every device holds the new profile');
\! python3 test/mockctl.py faults-clear

-- the run's deadline stops the loop: no batch starts after it
SELECT ade_set_profile('{"profile_name": "p3", "url": "https://mdm.example.com/enroll"}') \g /dev/null
SET ade.max_sync_seconds = 1;
\! python3 test/mockctl.py fault '{"method": "PUT", "path": "/profile/devices", "hang_seconds": 0.6, "times": -1}'
\! python3 test/mockctl.py log-clear
CREATE TEMP TABLE d1 AS SELECT * FROM ade_sync();
\set puts `python3 test/mockctl.py logcount 'PUT /profile/devices'`
SELECT cmp_ok(:'puts'::int, '<=', 2, 'with 1 s of budget and 0.6 s per PUT, at most two batches start');
SELECT is((SELECT (error, note LIKE 'ade.max_sync_seconds reached; the next run goes on from the stored cursor%') FROM ade_sync_runs ORDER BY id DESC LIMIT 1),
  (NULL::text, true), 'running out of time is a note, not an error');
\! python3 test/mockctl.py faults-clear
RESET ade.max_sync_seconds;

-- a 429 whose Retry-After is past the wait limit: no PUT for this token
-- until that time is over (ABM said when), not one per run
SELECT ade_set_profile('{"profile_name": "p4", "url": "https://mdm.example.com/enroll"}') \g /dev/null
\! python3 test/mockctl.py fault '{"method": "PUT", "path": "/profile/devices", "status": 429, "body": "TOO_MANY_REQUESTS", "headers": {"Retry-After": "3600"}, "times": 1}'
SELECT count(*) FROM ade_sync() \g /dev/null
\! python3 test/mockctl.py log-clear
SELECT count(*) FROM ade_sync() \g /dev/null
\set puts `python3 test/mockctl.py logcount 'PUT /profile/devices'`
SELECT is(:'puts'::int, 0, 'after a 429 with Retry-After: 3600, the next run sends no PUT /profile/devices');
SELECT ok((SELECT assign_not_before > now() + interval '59 minutes' FROM abm_tokens WHERE id = :acme),
  'the token''s assignment waits until the hour ABM asked for is over');
\! python3 test/mockctl.py devices CK_acme --generate 1 --prefix LATE --families Mac
\! python3 test/mockctl.py log-clear
SELECT count(*) FROM ade_sync() \g /dev/null
\set puts `python3 test/mockctl.py logcount 'PUT /profile/devices'`
SELECT is(:'puts'::int, 0, 'a device added meanwhile waits too (the pause is the token''s, not the batch''s)');
\! python3 test/mockctl.py faults-clear

-- a full fetch (an expired cursor) lists a FAILED device again: its
-- cooldown stays (0.3 ended every cooldown on a re-fetch)
UPDATE abm_tokens SET assign_not_before = NULL WHERE id = :acme;
DELETE FROM ade_rate_limits WHERE token_id = :acme;
\! python3 test/mockctl.py assign CK_acme LATE00000000=FAILED >/dev/null
SELECT count(*) FROM ade_sync() \g /dev/null
\! python3 test/mockctl.py assign CK_acme LATE00000000= >/dev/null
\! python3 test/mockctl.py tokstate CK_acme --expire-cursors >/dev/null
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT ok((SELECT assign_profile_response = 'FAILED' AND retry_at > now() + interval '50 minutes'
             FROM host_dep_assignments WHERE hardware_serial = 'LATE00000000'),
  'a full fetch keeps the cooldown of a FAILED device it lists again');
SELECT * FROM finish();
