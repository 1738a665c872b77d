-- Security: who can read and call what; pinned search_path against hostile
-- objects; http only to loopback and TLS always verified; secrets sealed at
-- rest with a key file of the data directory (a dump alone carries no
-- working token; the same server restores it; rotation).
\ir setup.psql
\! test/add-token.sh Acme CK_acme
SELECT id AS acme FROM abm_tokens WHERE consumer_key = 'CK_acme' \gset
\! python3 test/mockctl.py devices CK_acme --generate 300 --families Mac,iPhone,iPad
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT plan(38);

-- an ordinary role: no secret, no function that uses one, no setting
CREATE ROLE ade_test_nobody;
CREATE ROLE ade_test_reader IN ROLE ade_reader;
SELECT ok(NOT has_table_privilege('ade_test_nobody', 'ade_token_secrets', 'SELECT')
      AND NOT has_table_privilege('ade_test_nobody', 'ade_keypair', 'SELECT')
      AND NOT has_table_privilege('ade_test_nobody', 'abm_tokens', 'SELECT'),
  'an ordinary role cannot read token secrets, session tokens or the private key');
SELECT ok(NOT has_function_privilege('ade_test_nobody', 'ade_sync()', 'EXECUTE')
      AND NOT has_function_privilege('ade_test_nobody', 'ade_add_token(bytea)', 'EXECUTE')
      AND NOT has_function_privilege('ade_test_nobody', 'ade_public_key()', 'EXECUTE')
      AND NOT has_function_privilege('ade_test_nobody', 'ade_refresh_account(bigint)', 'EXECUTE')
      AND NOT has_function_privilege('ade_test_nobody', 'ade_rotate_secret_key()', 'EXECUTE')
      AND NOT has_function_privilege('ade_test_nobody', 'ade_set_profile(jsonb, bigint, text, bigint)', 'EXECUTE'),
  'an ordinary role cannot call the functions that use them');
SET ROLE ade_test_nobody;
SELECT throws_ok($$SET ade.abm_url = 'https://evil.example'$$, '42501', NULL, 'an ordinary role cannot change ade.abm_url');
SELECT throws_ok($$SELECT * FROM ade_token_secrets$$, '42501', NULL, 'an ordinary role is refused the secrets table');
RESET ROLE;
SET ROLE ade_test_reader;
SELECT lives_ok($$SELECT count(*) FROM hosts; SELECT count(*) FROM host_dep_assignments; SELECT count(*) FROM ade_status; SELECT count(*) FROM ade_sync_runs$$,
  'ade_reader reads hosts, assignments, the status view and the run history');
SELECT throws_ok($$SELECT * FROM abm_tokens$$, '42501', NULL, 'ade_reader cannot read the tokens table');
SELECT throws_ok($$SELECT * FROM ade_profiles$$, '42501', NULL, 'nor the profiles');
RESET ROLE;
DROP ROLE ade_test_nobody;
DROP ROLE ade_test_reader;

-- search_path: only trigger functions are SECURITY DEFINER (so that a role
-- allowed to write hosts sees the special case work), and
-- ade_secret_status() (for ade_status, which ade_reader reads); none of
-- them can be called by PUBLIC; every function with a body pins search_path
SELECT is((SELECT count(*)::int FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.classid = 'pg_proc'::regclass
            WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'ade') AND p.prosecdef
              AND ((p.prorettype NOT IN ('trigger'::regtype, 'event_trigger'::regtype) AND p.proname NOT IN ('ade_secret_status', 'ade_profile_problem', 'ade_job_problem', 'ade_problems', 'ade_node_problem', 'ade_api_server_token'))
                   OR has_function_privilege('public', p.oid, 'EXECUTE'))), 0,
  'the only SECURITY DEFINER functions are trigger and event trigger functions, ade_secret_status(), ade_node_problem(), ade_profile_problem(), ade_job_problem() (for ade_status), ade_api_server_token() (for ade_devices) and ade_problems(), none executable by PUBLIC');
SELECT is((SELECT array_agg(p.proname ORDER BY p.proname) FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.classid = 'pg_proc'::regclass
            WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'ade')
              AND p.proname NOT IN ('ade_platform', 'ade_oauth_signature', 'ade_record_error')
              -- a procedure with a SET clause cannot commit: ade_sync_job()
              -- pins it in each of its transactions (src/sync.c)
              AND p.prokind <> 'p'
              AND NOT coalesce('search_path=pg_catalog, pg_temp' = ANY (p.proconfig), false)), NULL,
  'every ade function but three pure ones pins search_path to pg_catalog, pg_temp');

-- hostile objects in public, first on the search_path, change nothing
CREATE FUNCTION public.ade_hostile_eq(text, text) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT false';
CREATE OPERATOR public.= (LEFTARG = text, RIGHTARG = text, FUNCTION = public.ade_hostile_eq);
CREATE FUNCTION public.jsonb_array_elements(jsonb) RETURNS SETOF jsonb LANGUAGE sql AS 'SELECT NULL::jsonb WHERE false';
CREATE FUNCTION public.md5(text) RETURNS text LANGUAGE sql AS $$SELECT 'hostile'$$;
CREATE FUNCTION public.coalesce_hostile() RETURNS int LANGUAGE sql AS 'SELECT 1';
CREATE FUNCTION public.now() RETURNS timestamptz LANGUAGE sql AS $$SELECT 'epoch'::timestamptz$$;
\! python3 test/mockctl.py devices CK_acme --generate 40 --prefix HX --families Mac,iPhone
\! python3 test/mockctl.py devices CK_acme --delete S00000001,S00000002
SET search_path = public, pg_catalog;
SET ade.enroll_url = 'https://mdm.example.com/enroll';
CREATE TEMP TABLE h1 AS SELECT * FROM ade_sync();
SELECT ade_set_profile('{"profile_name": "p", "url": "https://mdm.example.com/p"}', platform => 'ios') \g /dev/null
CREATE TEMP TABLE h2 AS SELECT * FROM ade_sync();
DELETE FROM hosts WHERE hardware_serial LIKE 'HX%';
RESET search_path;
SELECT is((SELECT (added, deleted, error) FROM h1), (40, 2, NULL::text), 'with hostile = , jsonb_array_elements, md5 and now() first on the search_path, the sync adds and deletes as usual');
SELECT is((SELECT (assigned, error) FROM h1), (338, NULL::text), 'and assigns the default profile');
SELECT is((SELECT (assigned, error) FROM h2), (119, NULL::text), 'and a platform profile set under that search_path reaches the iPhones');
SELECT is((SELECT count(*)::int FROM hosts WHERE hardware_serial LIKE 'HX%'), 40, 'and the host-delete trigger keeps the live hosts');
SELECT is((SELECT count(*)::int FROM host_dep_assignments WHERE added_at > 'epoch'::timestamptz + interval '1 year'), 340, 'now() is the real one');
\set label 'hostile objects on the search_path'
\ir same_as_abm.psql
DROP OPERATOR public.= (text, text);
DROP FUNCTION public.ade_hostile_eq(text, text), public.jsonb_array_elements(jsonb), public.md5(text),
  public.coalesce_hostile(), public.now();

-- http only to loopback: refused at SET, before any connection
\! python3 test/mockctl.py log-clear
SELECT throws_ok($$SET ade.abm_url = 'http://0.0.0.0:9'$$, '22023', NULL, 'http:// to 0.0.0.0 is refused when it is set');
SELECT throws_ok($$SET ade.abm_url = 'http://10.0.0.1:9'$$, '22023', NULL, 'http:// to a private address is refused when it is set');
SELECT lives_ok($$SELECT ade_refresh_account(1)$$, 'the loopback mock is still in use');

-- TLS: a local https mock with its own CA, trusted through ade.ca_file or refused
\! cd "$ADE_TEST_TMP" && openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=ade-test-ca -keyout ca.key -out ca.pem 2>/dev/null && openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout tls.key -out tls.csr 2>/dev/null && printf 'subjectAltName=IP:127.0.0.1\n' > tls.ext && openssl x509 -req -in tls.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile tls.ext -out tls.pem 2>/dev/null && chmod 644 ca.pem
\! rm -f "$ADE_TEST_TMP/tls.port"; setsid python3 test/mock_abm.py --port 0 --port-file "$ADE_TEST_TMP/tls.port" --tls-cert "$ADE_TEST_TMP/tls.pem" --tls-key "$ADE_TEST_TMP/tls.key" --quiet >/dev/null 2>&1 & echo $! > "$ADE_TEST_TMP/tls.pid"
\! python3 test/mockctl.py wait-port "$ADE_TEST_TMP/tls.port" --https --timeout 10 >/dev/null
\set tlsurl `echo "https://127.0.0.1:$(cat "$ADE_TEST_TMP/tls.port")"`
\setenv ADE_TLS_URL :tlsurl
\! psql -d "$ADE_TEST_DB" -XAtqc "SELECT ade_public_key()" > "$ADE_TEST_TMP/cert.pem"; python3 test/mockctl.py --url "$ADE_TLS_URL" token --org 'TLS Org' --consumer-key CK_tls --json "$ADE_TEST_TMP/tls.json" --p7m "$ADE_TEST_TMP/tls.p7m" --cert "$ADE_TEST_TMP/cert.pem"
\set p7m `base64 -w0 "$ADE_TEST_TMP/tls.p7m"`
SET ade.abm_url = :'tlsurl';
SELECT throws_ok(format('SELECT ade_add_token(decode(%L, ''base64''))', :'p7m'), '08006', NULL,
  'a TLS peer that fails verification (unknown CA) is refused');
SELECT is((SELECT count(*)::int FROM abm_tokens WHERE consumer_key = 'CK_tls'), 0, 'and nothing is stored');
\set cafile `echo "$ADE_TEST_TMP/ca.pem"`
SET ade.ca_file = :'cafile';
SELECT lives_ok(format('SELECT ade_add_token(decode(%L, ''base64''))', :'p7m'), 'the same peer, trusted through ade.ca_file, is accepted');
SELECT is((SELECT org_name FROM abm_tokens WHERE consumer_key = 'CK_tls'), 'TLS Org', 'and the token is stored from its account');
RESET ade.ca_file;
RESET ade.abm_url;
SELECT ade_remove_token(id) FROM abm_tokens WHERE consumer_key = 'CK_tls' \g /dev/null
\! kill $(cat "$ADE_TEST_TMP/tls.pid") 2>/dev/null

-- secrets at rest: one key-encryption key file in the data directory, mode 0600
SELECT setting AS datadir FROM pg_settings WHERE name = 'data_directory' \gset
\setenv ADE_DATADIR :datadir
\set keymode `stat -c '%a %U' "$ADE_DATADIR"/ade_kek.key`
SELECT is(:'keymode'::text, '600 postgres', 'the key-encryption key file is in the data directory, mode 0600, the server''s own');
SELECT ok((SELECT bool_and(consumer_secret LIKE 'ade2:%' AND access_token LIKE 'ade2:%' AND access_secret LIKE 'ade2:%' AND session_token LIKE 'ade2:%') FROM ade_token_secrets)
      AND (SELECT private_key LIKE 'ade2:%' FROM ade_keypair), 'every stored secret is sealed');

-- pg_dump alone carries no secret in clear; a restore on the same server works
\! pg_dump -d "$ADE_TEST_DB" -e ade > "$ADE_TEST_TMP/dump.sql"
\set plain_in_dump `python3 test/mockctl.py secrets > "$ADE_TEST_TMP/s.txt"; grep -c -F -f "$ADE_TEST_TMP/s.txt" "$ADE_TEST_TMP/dump.sql" || true`
SELECT is(:'plain_in_dump'::int, 0, 'a pg_dump holds no token secret or session in clear');
\! dropdb --if-exists ade_restored 2>/dev/null; createdb ade_restored && pg_dump -Fc -d "$ADE_TEST_DB" -e ade | pg_restore -d ade_restored 2>"$ADE_TEST_TMP/restore.err"
\set restored `psql -d ade_restored -XAtqc "SELECT 'ok' FROM abm_tokens t, ade_refresh_account(t.id) r" -c "SELECT count(*) FROM hosts" 2>&1 | tr '\n' ' '`
SELECT is(:'restored'::text, 'ok 340 ', 'a dump restored on the same server works: the token answers, the hosts are there');

-- without the key-encryption key file (another server) the secrets do not open, with a clear error
\! mkdir -p "$ADE_TEST_TMP/keys" && mv "$ADE_DATADIR"/ade_kek.key "$ADE_TEST_TMP/keys/"
\set nokey `psql -d ade_restored -XAtqc "SELECT ade_refresh_account(1)" 2>&1 | head -1`
\set attention `psql -d ade_restored -XAtqc "SELECT attention FROM ade_status" 2>&1 | head -1`
\set pubkey `psql -d ade_restored -XAtqc "SELECT ade_public_key() LIKE '-----BEGIN CERTIFICATE-----%'" 2>&1`
\set rotate `psql -d ade_restored -XAtqc "SELECT ade_rotate_secret_key()" 2>&1 | head -1; test -e "$ADE_DATADIR"/ade_kek.key && echo planted || echo none`
\! mv "$ADE_TEST_TMP"/keys/ade_kek.key "$ADE_DATADIR"/
SELECT is(:'nokey'::text, 'ERROR:  the ade key-encryption key file ade_kek.key is missing from the data directory',
  'without the key file a restored token does not work, and the error says which file to copy');
SELECT alike(:'attention'::text, 'the key-encryption key file ade_kek.key is missing from the data directory%',
  'ade_status.attention names the missing file');
SELECT is(:'pubkey'::text, 't', 'ade_public_key() needs no secret: it works without the key file');
SELECT alike(:'rotate'::text, 'ERROR:  the ade key-encryption key file ade_kek.key is missing%none',
  'a rotation without the key file fails, and plants no new key file (it would open none of the data keys)');
\set withkey `psql -d ade_restored -XAtqc "SELECT 'ok' FROM ade_refresh_account(1) r" 2>&1`
SELECT is(:'withkey'::text, 'ok', 'with the key file copied back, it works');
\! dropdb ade_restored

-- rotation: a new data key in the database, every secret re-sealed with it,
-- no file made; the old key may go once nothing uses it
SELECT substr(consumer_secret, 6, 8) AS old_id FROM ade_token_secrets LIMIT 1 \gset
\set files_before `ls "$ADE_DATADIR" | grep -c '^ade_' || true`
SELECT ade_rotate_secret_key() AS new_id \gset
\set files_after `ls "$ADE_DATADIR" | grep -c '^ade_' || true`
SELECT isnt(:'new_id'::text, :'old_id'::text, 'ade_rotate_secret_key() makes a new key');
SELECT ok((SELECT bool_and(consumer_secret LIKE 'ade2:' || :'new_id' || ':%' AND session_token LIKE 'ade2:' || :'new_id' || ':%') FROM ade_token_secrets)
      AND (SELECT private_key LIKE 'ade2:' || :'new_id' || ':%' FROM ade_keypair), 'and re-seals every secret with it');
SELECT is(:'files_after'::int, :'files_before'::int, 'a rotation makes no file: a standby has every key');
SELECT results_eq(format($$SELECT key_id, current, sealed_values FROM ade_secret_key_usage WHERE key_id IN (%L, %L) ORDER BY current$$, :'old_id', :'new_id'),
  format($$VALUES (%L, false, 0::bigint), (%L, true, 5::bigint)$$, :'old_id', :'new_id'),
  'ade_secret_key_usage lists every key: the old one seals nothing now');
SELECT throws_ok(format('DELETE FROM ade_secret_keys WHERE id = %L', :'new_id'), '55006', NULL,
  'a data key that still seals values cannot be deleted');
DELETE FROM ade_secret_keys WHERE id = :'old_id';
\set after `psql -d "$ADE_TEST_DB" -XAtqc "SELECT 'ok' FROM ade_refresh_account(1) r" 2>&1`
SELECT is(:'after'::text, 'ok', 'after the old key is deleted, a new backend still opens every secret');

SELECT * FROM finish();
