-- Records of two tokens about one device, with the same op_date (ABM's
-- op_date has whole seconds), split over pages: the model-based test found
-- that a device that left token B for token A in the same second as other
-- records of B (a burst: modified, deleted, added, modified; then the move)
-- ended soft-deleted when A was synced first.  Within one token's stream
-- the order is reliable; across tokens only a later op_date is: a record
-- of a token that does not hold a live device must be strictly newer than
-- what was applied to take it over.
\ir setup.psql
\! test/add-token.sh Acme CK_acme
\! test/add-token.sh Beta CK_beta
SELECT id AS acme FROM abm_tokens WHERE consumer_key = 'CK_acme' \gset
SELECT id AS beta FROM abm_tokens WHERE consumer_key = 'CK_beta' \gset
-- the first runs: empty fetches; what follows comes as sync records
SELECT count(*) FROM ade_sync() \g /dev/null
\! echo '[{"serial_number": "T1", "device_family": "Mac"}]' > "$ADE_TEST_TMP/t1.json"
\! python3 test/mockctl.py devices CK_beta --add-json "$ADE_TEST_TMP/t1.json" --op-date 2099-11-01T10:00:00Z
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT plan(9);
SELECT is((SELECT abm_token_id FROM host_dep_assignments WHERE hardware_serial = 'T1'), :'beta'::bigint, 'Beta holds T1');

-- in one second: Beta's burst, then T1 moves to Acme
\! echo '[{"serial_number": "T1", "model": "burst 1"}]' > "$ADE_TEST_TMP/m1.json"
\! python3 test/mockctl.py devices CK_beta --modify-json "$ADE_TEST_TMP/m1.json" --op-date 2099-11-01T10:00:05Z
\! python3 test/mockctl.py devices CK_beta --delete T1 --op-date 2099-11-01T10:00:05Z
\! python3 test/mockctl.py devices CK_beta --add-json "$ADE_TEST_TMP/t1.json" --op-date 2099-11-01T10:00:05Z
\! python3 test/mockctl.py devices CK_beta --modify-json "$ADE_TEST_TMP/m1.json" --op-date 2099-11-01T10:00:05Z
\! python3 test/mockctl.py devices CK_beta --delete T1 --op-date 2099-11-01T10:00:05Z
\! python3 test/mockctl.py devices CK_acme --add-json "$ADE_TEST_TMP/t1.json" --op-date 2099-11-01T10:00:05Z
SET ade.page_size = 3;
-- Acme first (ade_sync() goes by token id), then Beta's pages
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT is((SELECT (abm_token_id, deleted_at IS NULL) FROM host_dep_assignments WHERE hardware_serial = 'T1'), (:'acme'::bigint, true),
  'a device that moved to Acme in the same second as Beta''s other records stays live with Acme');

-- the other order: Beta synced first, then Acme
\! echo '[{"serial_number": "T2", "device_family": "Mac"}]' > "$ADE_TEST_TMP/t2.json"
\! python3 test/mockctl.py devices CK_beta --add-json "$ADE_TEST_TMP/t2.json" --op-date 2099-11-01T11:00:00Z
SELECT count(*) FROM ade_sync() \g /dev/null
\! python3 test/mockctl.py devices CK_beta --delete T2 --op-date 2099-11-01T11:00:05Z
\! python3 test/mockctl.py devices CK_acme --add-json "$ADE_TEST_TMP/t2.json" --op-date 2099-11-01T11:00:05Z
SELECT count(*) FROM ade_sync(:beta) \g /dev/null
SELECT count(*) FROM ade_sync(:acme) \g /dev/null
SELECT is((SELECT (abm_token_id, deleted_at IS NULL) FROM host_dep_assignments WHERE hardware_serial = 'T2'), (:'acme'::bigint, true),
  'a device deleted by Beta and added by Acme in the same second is live with Acme, Beta synced first');
-- and a device moved back in the same second: Acme to Beta and back
\! python3 test/mockctl.py devices CK_acme --delete T2 --op-date 2099-11-01T11:00:09Z
\! python3 test/mockctl.py devices CK_beta --add-json "$ADE_TEST_TMP/t2.json" --op-date 2099-11-01T11:00:09Z
\! python3 test/mockctl.py devices CK_beta --delete T2 --op-date 2099-11-01T11:00:09Z
\! python3 test/mockctl.py devices CK_acme --add-json "$ADE_TEST_TMP/t2.json" --op-date 2099-11-01T11:00:09Z
SET ade.page_size = 1;
SELECT count(*) FROM ade_sync(:beta) \g /dev/null
SELECT count(*) FROM ade_sync(:acme) \g /dev/null
SELECT is((SELECT (abm_token_id, deleted_at IS NULL) FROM host_dep_assignments WHERE hardware_serial = 'T2'), (:'acme'::bigint, true),
  'a device moved away and back in one second ends with the token that holds it');
RESET ade.page_size;

-- a full fetch tells what ABM held as of its fetched_until: older records of
-- another token do not take the device from it (the model-based test found
-- a device fetched by Acme and then taken by Beta's older records)
\! echo '[{"serial_number": "T3", "device_family": "Mac"}]' > "$ADE_TEST_TMP/t3.json"
\! echo '[{"serial_number": "T3", "model": "older"}]' > "$ADE_TEST_TMP/m3.json"
\! python3 test/mockctl.py devices CK_beta --add-json "$ADE_TEST_TMP/t3.json" --op-date 2026-11-01T12:00:00Z
\! python3 test/mockctl.py tokstate CK_acme --expire-cursors
\! python3 test/mockctl.py devices CK_beta --modify-json "$ADE_TEST_TMP/m3.json" --op-date 2026-11-01T12:00:01Z
\! python3 test/mockctl.py devices CK_beta --modify-json "$ADE_TEST_TMP/m3.json" --op-date 2026-11-01T12:00:01Z
\! python3 test/mockctl.py devices CK_beta --delete T3 --op-date 2026-11-01T12:00:02Z
\! python3 test/mockctl.py devices CK_acme --add-json "$ADE_TEST_TMP/t3.json" --op-date 2026-11-01T12:00:02Z
SET ade.page_size = 3;
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT is((SELECT (abm_token_id, deleted_at IS NULL) FROM host_dep_assignments WHERE hardware_serial = 'T3'), (:'acme'::bigint, true),
  'a device a full fetch found with Acme stays there when Beta''s older records come after');
RESET ade.page_size;

-- a device modified at Beta and moved to Acme in the same second: Acme's
-- add is kept until Beta's delete comes, then it takes the device; it
-- never ends with nobody holding it (review of issue 12)
\! echo '[{"serial_number": "T4", "device_family": "Mac"}]' > "$ADE_TEST_TMP/t4.json"
\! echo '[{"serial_number": "T4", "model": "modified"}]' > "$ADE_TEST_TMP/m4.json"
\! python3 test/mockctl.py devices CK_beta --add-json "$ADE_TEST_TMP/t4.json" --op-date 2099-11-01T13:00:00Z
SELECT count(*) FROM ade_sync() \g /dev/null
\! python3 test/mockctl.py devices CK_beta --modify-json "$ADE_TEST_TMP/m4.json" --op-date 2099-11-01T13:00:05Z
SELECT count(*) FROM ade_sync() \g /dev/null
\! python3 test/mockctl.py devices CK_beta --delete T4 --op-date 2099-11-01T13:00:05Z
\! python3 test/mockctl.py devices CK_acme --add-json "$ADE_TEST_TMP/t4.json" --op-date 2099-11-01T13:00:05Z
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT is((SELECT (abm_token_id, deleted_at IS NULL) FROM host_dep_assignments WHERE hardware_serial = 'T4'), (:'acme'::bigint, true),
  'a device Beta modified and then gave to Acme in one second is live with Acme');

-- the other way round: Acme adds and deletes T5, and Beta adds and modifies
-- it, all in one second; Beta is synced first, and Acme's records come
-- one per page: Acme's add must not take Beta's device for Acme's delete
-- to drop it
\! echo '[{"serial_number": "T5", "device_family": "Mac"}]' > "$ADE_TEST_TMP/t5.json"
\! echo '[{"serial_number": "T5", "model": "at Beta"}]' > "$ADE_TEST_TMP/m5.json"
\! python3 test/mockctl.py devices CK_acme --add-json "$ADE_TEST_TMP/t5.json" --op-date 2099-11-01T14:00:05Z
\! python3 test/mockctl.py devices CK_acme --delete T5 --op-date 2099-11-01T14:00:05Z
\! python3 test/mockctl.py devices CK_beta --add-json "$ADE_TEST_TMP/t5.json" --op-date 2099-11-01T14:00:05Z
\! python3 test/mockctl.py devices CK_beta --modify-json "$ADE_TEST_TMP/m5.json" --op-date 2099-11-01T14:00:05Z
SET ade.page_size = 1;
SELECT count(*) FROM ade_sync(:beta) \g /dev/null
SELECT count(*) FROM ade_sync(:acme) \g /dev/null
RESET ade.page_size;
SELECT is((SELECT (abm_token_id, deleted_at IS NULL) FROM host_dep_assignments WHERE hardware_serial = 'T5'), (:'beta'::bigint, true),
  'a device Acme added and deleted while Beta added and modified it, in one second, stays live with Beta');

-- and T4 goes on from Acme to Beta in one second, Beta (the taker) synced
-- first, while Acme's delete is still to come
\! python3 test/mockctl.py devices CK_acme --modify-json "$ADE_TEST_TMP/m4.json" --op-date 2099-11-01T15:00:00Z
SELECT count(*) FROM ade_sync() \g /dev/null
\! python3 test/mockctl.py devices CK_acme --delete T4 --op-date 2099-11-01T15:00:00Z
\! python3 test/mockctl.py devices CK_beta --add-json "$ADE_TEST_TMP/t4.json" --op-date 2099-11-01T15:00:00Z
SELECT count(*) FROM ade_sync(:beta) \g /dev/null
SELECT is((SELECT (abm_token_id, deleted_at IS NULL) FROM host_dep_assignments WHERE hardware_serial = 'T4'), (:'acme'::bigint, true),
  'until Acme''s delete comes, Acme keeps the device it holds');
SELECT count(*) FROM ade_sync(:acme) \g /dev/null
SELECT is((SELECT (abm_token_id, deleted_at IS NULL) FROM host_dep_assignments WHERE hardware_serial = 'T4'), (:'beta'::bigint, true),
  'the device goes to Beta when Acme''s delete of the same second comes after Beta''s add');
SELECT * FROM finish();
