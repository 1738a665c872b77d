-- Kept records (ade_rejected_records) are never lost to another token's
-- news or to an older record, one row per serial and token holds the
-- latest, a record without a serial is kept once, a record no index can
-- hold or a NUL in a page stops nothing, the retry keeps to the run's
-- budget, and a run that keeps records says so (review of issue 12).
\ir setup.psql
\! test/add-token.sh Acme CK_acme
\! test/add-token.sh Beta CK_beta
SELECT id AS acme FROM abm_tokens WHERE consumer_key = 'CK_acme' \gset
SELECT id AS beta FROM abm_tokens WHERE consumer_key = 'CK_beta' \gset
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT plan(17);
SET ade.failed_retry_interval = '1h';
-- the application refuses one model name
ALTER TABLE hosts ADD CONSTRAINT app_no_refused CHECK (hardware_model IS DISTINCT FROM 'refused');

-- K1 with Beta; Beta's modification of it is refused and kept
\! echo '[{"serial_number": "K1", "device_family": "Mac"}]' > "$ADE_TEST_TMP/k1.json"
\! echo '[{"serial_number": "K1", "model": "refused"}]' > "$ADE_TEST_TMP/k1r.json"
\! python3 test/mockctl.py devices CK_beta --add-json "$ADE_TEST_TMP/k1.json" --op-date 2099-01-01T10:00:00Z
SELECT count(*) FROM ade_sync() \g /dev/null
\! python3 test/mockctl.py devices CK_beta --modify-json "$ADE_TEST_TMP/k1r.json" --op-date 2099-01-01T10:00:10Z
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT is((SELECT (token_id, op_date) FROM ade_rejected_records WHERE hardware_serial = 'K1'),
  (:'beta'::bigint, '2099-01-01T10:00:10Z'::timestamptz), 'Beta''s refused record is kept with its op_date');
-- Acme says it deleted K1, a device it does not hold: that changes nothing,
-- and Beta's kept record stays
\! python3 test/mockctl.py devices CK_acme --delete K1 --op-date 2099-01-01T10:00:20Z
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT is((SELECT count(*)::int FROM ade_rejected_records WHERE hardware_serial = 'K1'), 1,
  'a delete by a token that does not hold the device leaves another token''s kept record');
-- Acme adds K1 with a record older than Beta's kept one: Acme takes the
-- device (its record is newer than what was applied), and Beta's newer kept
-- record stays, to be tried again
\! python3 test/mockctl.py devices CK_acme --add-json "$ADE_TEST_TMP/k1.json" --op-date 2099-01-01T10:00:05Z
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT is((SELECT abm_token_id FROM host_dep_assignments WHERE hardware_serial = 'K1'), :'acme'::bigint,
  'Acme''s add, newer than what was applied, takes the device');
SELECT is((SELECT count(*)::int FROM ade_rejected_records WHERE hardware_serial = 'K1' AND token_id = :beta), 1,
  'another token''s kept record newer than the record that applied stays');
-- the cause is gone: the retry applies Beta's record, the newest of all
ALTER TABLE hosts DROP CONSTRAINT app_no_refused;
UPDATE ade_rejected_records SET retry_at = now() WHERE hardware_serial = 'K1';
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT is((SELECT (d.abm_token_id, h.hardware_model) FROM host_dep_assignments d JOIN hosts h ON h.id = d.host_id WHERE d.hardware_serial = 'K1'),
  (:'beta'::bigint, 'refused'::text), 'the kept record, once it applies, gives the device to the token with the newest record');
SELECT is((SELECT count(*)::int FROM ade_rejected_records WHERE hardware_serial = 'K1'), 0, 'and leaves ade_rejected_records');

-- one row per serial and token: the latest refused record of K2 replaces
-- the earlier one, and an older record retried never undoes a newer one
ALTER TABLE hosts ADD CONSTRAINT app_no_refused CHECK (hardware_model IS NULL OR hardware_model NOT LIKE 'no %');
\! echo '[{"serial_number": "K2", "device_family": "Mac"}]' > "$ADE_TEST_TMP/k2.json"
\! echo '[{"serial_number": "K2", "model": "no 1"}]' > "$ADE_TEST_TMP/k2a.json"
\! echo '[{"serial_number": "K2", "model": "no 2"}]' > "$ADE_TEST_TMP/k2b.json"
\! python3 test/mockctl.py devices CK_acme --add-json "$ADE_TEST_TMP/k2.json" --op-date 2099-01-02T10:00:00Z
SELECT count(*) FROM ade_sync() \g /dev/null
\! python3 test/mockctl.py devices CK_acme --modify-json "$ADE_TEST_TMP/k2a.json" --op-date 2099-01-02T10:00:01Z
SELECT count(*) FROM ade_sync() \g /dev/null
\! python3 test/mockctl.py devices CK_acme --modify-json "$ADE_TEST_TMP/k2b.json" --op-date 2099-01-02T10:00:02Z
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT is((SELECT array_agg(record->>'model') FROM ade_rejected_records WHERE hardware_serial = 'K2'), ARRAY['no 2'],
  'a token''s later refused record of a serial replaces its earlier one: one kept row, the latest');
ALTER TABLE hosts DROP CONSTRAINT app_no_refused;
UPDATE ade_rejected_records SET retry_at = now() WHERE hardware_serial = 'K2';
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT is((SELECT hardware_model FROM hosts WHERE hardware_serial = 'K2'), 'no 2', 'the retry applies the latest record, not an earlier one');

-- a record without a serial, sent twice, is kept once
\! echo '[{"op_type": "added", "op_date": "2099-01-03T00:00:00Z", "model": "no serial"}]' > "$ADE_TEST_TMP/ns.json"
\! python3 test/mockctl.py devices CK_acme --events-json "$ADE_TEST_TMP/ns.json"
SELECT count(*) FROM ade_sync() \g /dev/null
\! python3 test/mockctl.py devices CK_acme --events-json "$ADE_TEST_TMP/ns.json"
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT is((SELECT count(*)::int FROM ade_rejected_records WHERE hardware_serial IS NULL), 1,
  'the same record without a serial, sent twice, is kept once');

-- a serial too long for a btree, and a NUL in a page: the rest applies
\! python3 -c 'import json, random, string; r = random.Random(1); print(json.dumps([{"serial_number": "L" + "".join(r.choice(string.ascii_letters + string.digits) for _ in range(3999)), "op_type": "added", "op_date": "2099-01-04T00:00:00Z", "device_family": "Mac"}, {"serial_number": "K3", "op_type": "added", "op_date": "2099-01-04T00:00:00Z", "device_family": "Mac"}]))' > "$ADE_TEST_TMP/long.json"
\! python3 test/mockctl.py devices CK_acme --events-json "$ADE_TEST_TMP/long.json"
CREATE TEMP TABLE r1 AS SELECT * FROM ade_sync(:acme);
SELECT is((SELECT (added, error) FROM r1), (1, NULL::text), 'a serial of 4000 bytes (more than a btree holds) does not stop its page: the other record applies');
SELECT is((SELECT (length(hardware_serial), sqlstate) FROM ade_rejected_records WHERE length(hardware_serial) > 100), (4000, '54000'::text),
  'the long serial is kept, with its reason');
\! printf '[{"serial_number": "K4", "op_type": "added", "op_date": "2099-01-05T00:00:00Z", "device_family": "Mac", "model": "a\\u0000b"}, {"serial_number": "K5", "op_type": "added", "op_date": "2099-01-05T00:00:00Z", "device_family": "Mac"}]' > "$ADE_TEST_TMP/nul.json"
\! python3 test/mockctl.py devices CK_acme --events-json "$ADE_TEST_TMP/nul.json"
CREATE TEMP TABLE r2 AS SELECT * FROM ade_sync(:acme);
SELECT is((SELECT (added, error) FROM r2), (2, NULL::text), 'a page with a NUL (\u0000) in a record applies');
SELECT is((SELECT hardware_model FROM hosts WHERE hardware_serial = 'K4'), E'a\uFFFDb', 'the NUL becomes U+FFFD, the replacement character');

-- a run that keeps records says so
ALTER TABLE hosts ADD CONSTRAINT app_no_m CHECK (hardware_serial NOT LIKE 'M%');
\! python3 test/mockctl.py devices CK_acme --generate 3 --prefix M --families Mac
SELECT count(*) FROM ade_sync(:acme) \g /dev/null
SELECT alike((SELECT note FROM ade_sync_runs WHERE token_id = :acme ORDER BY id DESC LIMIT 1),
  '%3 device records could not be applied%ade_rejected_records%', 'the run''s note says how many records it kept');
ALTER TABLE hosts DROP CONSTRAINT app_no_m;

-- the retry keeps to the time it is given
UPDATE ade_rejected_records SET retry_at = now() WHERE hardware_serial LIKE 'M%';
SELECT is(ade_retry_rejected(:acme, clock_timestamp()), 0, 'a retry with no time left applies nothing');
SELECT is((SELECT count(*)::int FROM ade_rejected_records WHERE hardware_serial LIKE 'M%'), 3, 'and the records wait');
SELECT is(ade_retry_rejected(:acme, clock_timestamp() + interval '1 minute'), 3, 'with time, they apply');
RESET ade.failed_retry_interval;
SELECT * FROM finish();
