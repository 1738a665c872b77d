-- The whole organisation at scale (issue 24): an inventory of 100,000
-- devices is read by the scheduled runs (CALL ade_sync_job(), what pg_cron
-- runs: each page committed at once), each within its
-- share of ade.max_sync_seconds, over as many runs as it takes, and ends
-- with every device stored once and none marked released.
\ir setup.psql
\getenv mock ADE_MOCK_URL
SELECT set_config('ade.abm_api_url', :'mock', false) \g /dev/null
SELECT set_config('ade.abm_token_url', :'mock' || '/auth/oauth2/token', false) \g /dev/null
SET ade.applecare_per_run = 0;
\! test/add-token.sh 'Org Scale' CK_scale
\! python3 test/mockctl.py devices CK_scale --generate 10 --prefix S >/dev/null
\! python3 test/mockctl.py api-devices --org 'Org Scale' --generate 100000 --prefix V --unassigned >/dev/null
\set acct `python3 test/mockctl.py api-account --org 'Org Scale' --pem-out "$ADE_TEST_TMP/scale.pem"`
\set pem `cat "$ADE_TEST_TMP/scale.pem"`
SELECT ade_add_api_account(:'acct'::jsonb->>'client_id', :'acct'::jsonb->>'key_id', convert_to(:'pem', 'UTF8')) AS account \gset
SELECT plan(5);
SET ade.max_sync_seconds = 3;
CREATE TEMP TABLE runs (n int, took interval, phase text, devices bigint);
DO $$
DECLARE t0 timestamptz;
BEGIN
  FOR i IN 1 .. 40 LOOP
    t0 := clock_timestamp();
    CALL public.ade_sync_job();
    INSERT INTO runs SELECT i, clock_timestamp() - t0, a.inventory_phase,
           (SELECT count(*) FROM public.abm_org_devices) FROM public.abm_api_accounts a;
    EXIT WHEN (SELECT inventory_at IS NOT NULL FROM public.abm_api_accounts);
  END LOOP;
END $$;
SELECT ok((SELECT inventory_at IS NOT NULL FROM abm_api_accounts WHERE id = :account), 'the inventory of 100,000 devices completes, run after run');
SELECT cmp_ok((SELECT count(*)::int FROM runs), '>', 2, 'over several runs (' || (SELECT count(*) FROM runs) || ')');
SELECT cmp_ok((SELECT max(took) FROM runs), '<', interval '6 s', 'each within ade.max_sync_seconds (3 s) and one page');
SELECT is((SELECT count(*)::int FROM abm_org_devices WHERE account_id = :account AND released_at IS NULL), 100010,
          'every device is stored, the token''s 10 and the 100,000 on no server');
SELECT is((SELECT count(DISTINCT serial)::int FROM abm_org_devices), 100010, 'each once');
SELECT * FROM finish();
