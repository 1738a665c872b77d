-- Hardening from the security review (issue 13), each failing on 0.3: the
-- proxy (superuser-only to read, never plain http), what ABM sends (a
-- session token that would add a header, a bounded retry_after_seconds,
-- error excerpts that stay valid UTF-8, parser details that would quote a
-- secret), secrets bound to their table, column and row, a rotation that
-- waits for a renewal instead of undoing it, a session under a deleted key
-- treated as absent, and the MDM key taken as bytes (a server file), never
-- prompting for a password.
\ir setup.psql
\! test/add-token.sh Acme CK_acme
\! test/add-token.sh Beta CK_beta
SELECT id AS acme FROM abm_tokens WHERE consumer_key = 'CK_acme' \gset
SELECT id AS beta FROM abm_tokens WHERE consumer_key = 'CK_beta' \gset
\! python3 test/mockctl.py devices CK_acme --generate 5 --families Mac
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT plan(33);
-- the whole error a statement raises: message, detail, hint and context
CREATE FUNCTION pg_temp.error_of(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE m text; d text; h text; c text; s text;
BEGIN
  EXECUTE q;
  RETURN NULL;
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS s = RETURNED_SQLSTATE, m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL,
                          h = PG_EXCEPTION_HINT, c = PG_EXCEPTION_CONTEXT;
  RETURN concat_ws(' | ', s, m, d, h, c);
END $$;

-- ade.proxy: only superusers read it (it may hold user:password)
SET ade.proxy = 'http://user:secret@127.0.0.1:9';
DROP ROLE IF EXISTS ade_test_nobody;
CREATE ROLE ade_test_nobody;
SET ROLE ade_test_nobody;
SELECT throws_ok('SHOW ade.proxy', '42501', NULL, 'an ordinary role cannot SHOW ade.proxy');
SELECT throws_ok($$SELECT current_setting('ade.proxy')$$, '42501', NULL, 'nor read it with current_setting()');
SELECT is((SELECT count(*)::int FROM pg_settings WHERE name = 'ade.proxy'), 0, 'nor see it in pg_settings');
RESET ROLE;
DROP ROLE ade_test_nobody;
-- plain http never goes through a proxy (the OAuth header and the session
-- would cross it unencrypted): refused before any connection
\! python3 test/mockctl.py log-clear
SELECT throws_ok(format('SELECT ade_refresh_account(%s)', :acme), '22023',
  'refusing to send a plain http request to ABM through ade.proxy',
  'with ade.proxy set, a plain http ABM URL is refused');
RESET ade.proxy;
SELECT lives_ok(format('SELECT ade_refresh_account(%s)', :acme), 'without the proxy, the same call works');

-- a session token that would add a header of ABM's choosing is refused
\! python3 test/mockctl.py tokstate CK_acme --expire-sessions >/dev/null
\! python3 test/mockctl.py fault '{"path": "/session", "status": 200, "body": {"auth_session_token": "abc\r\nX-Injected: 1"}, "times": 1}'
\! python3 test/mockctl.py log-clear
SELECT alike(pg_temp.error_of(format('SELECT ade_refresh_account(%s)', :acme)),
  '%ABM answered GET /session with an auth_session_token that cannot go into a header%',
  'a session token with CR LF in it is refused');
\set carried `python3 test/mockctl.py log | python3 -c 'import json, sys; print(sum(1 for r in json.load(sys.stdin)["requests"] if (r.get("session") or "").startswith("abc") or "X-Injected" in json.dumps(r)))'`
SELECT is(:'carried'::int, 0, 'and no request carries it');
\! python3 test/mockctl.py faults-clear

-- the answer of GET /session that is not JSON: the parser's detail would
-- quote the session token, so no part of the error carries it
\! python3 test/mockctl.py tokstate CK_acme --expire-sessions >/dev/null
\! python3 test/mockctl.py fault '{"path": "/session", "status": 200, "body": "{\"auth_session_token\": \"SESSION-SECRET-4711", "times": 1}'
SELECT error_of AS sess_err FROM pg_temp.error_of(format('SELECT ade_refresh_account(%s)', :acme)) \gset
SELECT alike(:'sess_err'::text, '%the answer of GET /session is not valid JSON%', 'an answer of GET /session that is not JSON is refused');
SELECT unalike(:'sess_err'::text, '%SESSION-SECRET-4711%', 'and the error, its detail and context hold no part of it');
\! python3 test/mockctl.py faults-clear
-- the same for the decrypted token
\! printf '{"consumer_key": "CK_x", "consumer_secret": "TOKEN-SECRET-0815' > "$ADE_TEST_TMP/bad.json"
\! psql -d "$ADE_TEST_DB" -XAtqc "SELECT ade_public_key()" > "$ADE_TEST_TMP/cert.pem" && python3 test/mockctl.py p7m --cert "$ADE_TEST_TMP/cert.pem" --json "$ADE_TEST_TMP/bad.json" --out "$ADE_TEST_TMP/bad.p7m"
\set badp7m `base64 -w0 "$ADE_TEST_TMP/bad.p7m"`
SELECT error_of AS tok_err FROM pg_temp.error_of(format($$SELECT ade_add_token(decode(%L, 'base64'))$$, :'badp7m')) \gset
SELECT alike(:'tok_err'::text, '22P02 | %not valid JSON%', 'a token whose plaintext is not JSON is refused');
SELECT unalike(:'tok_err'::text, '%TOKEN-SECRET-0815%', 'and the error holds no part of it');
\set inlog `grep -c -e SESSION-SECRET-4711 -e TOKEN-SECRET-0815 "$ADE_SERVER_LOG" || true`
SELECT is(:'inlog'::int, 0, 'nor does the server log');

-- retry_after_seconds is a bounded whole number: a huge one is the default
SET ade.enroll_url = 'https://mdm.example.com/enroll';
\! python3 test/mockctl.py assign CK_acme S00000000=THROTTLED --retry-after 99999999999999 >/dev/null
SELECT count(*) FROM ade_sync(:acme) \g /dev/null
SELECT ok((SELECT retry_at BETWEEN now() + interval '23 hours' AND now() + interval '25 hours'
             FROM host_dep_assignments WHERE hardware_serial = 'S00000000'),
  'a retry_after_seconds past any bound gives the default cooldown (24 hours)');
\! python3 test/mockctl.py assign CK_acme S00000000= >/dev/null
RESET ade.enroll_url;

-- an ABM error body cut in a multibyte character, and one that is not
-- UTF-8, are stored as valid UTF-8 (a dump of ade_sync_runs restores)
\! python3 test/mockctl.py fault "{\"path\": \"/devices/sync\", \"consumer_key\": \"CK_acme\", \"status\": 400, \"body_b64\": \"$(python3 -c 'import base64; print(base64.b64encode(b"x" * 79 + "\u20ac\u20ac".encode() + b"\xff\xfe tail").decode())')\", \"times\": 1}"
SELECT count(*) FROM ade_sync(:acme) \g /dev/null
SELECT ok((SELECT error LIKE 'ABM answered POST /devices/sync with HTTP 400: xxx%'
                  AND convert_from(convert_to(error, 'UTF8'), 'UTF8') = error
             FROM ade_sync_runs WHERE token_id = :acme ORDER BY id DESC LIMIT 1),
  'an error body cut in a multibyte character is stored as valid UTF-8');
\! python3 test/mockctl.py fault "{\"path\": \"/devices/sync\", \"consumer_key\": \"CK_acme\", \"status\": 400, \"body_b64\": \"$(python3 -c 'import base64; print(base64.b64encode(b"bad \xff\xfe\xc3 bytes").decode())')\", \"times\": 1}"
SELECT count(*) FROM ade_sync(:acme) \g /dev/null
SELECT is((SELECT error FROM ade_sync_runs WHERE token_id = :acme ORDER BY id DESC LIMIT 1),
  'ABM answered POST /devices/sync with HTTP 400: bad ??? bytes', 'bytes that are not UTF-8 are replaced');
\! python3 test/mockctl.py faults-clear

-- secrets are bound to their table, column and row: swapped, they do not open
UPDATE ade_token_secrets SET access_secret = consumer_secret WHERE token_id = :acme;
SELECT alike(pg_temp.error_of(format('SELECT ade_refresh_account(%s)', :acme)),
  'XX001 | a stored ade secret (ade_token_secrets.access_secret:' || :acme || ') cannot be opened: it does not open%',
  'a secret copied into another column does not open, and the error names where it is');
UPDATE ade_token_secrets a SET consumer_secret = b.consumer_secret, access_secret = b.access_secret
  FROM ade_token_secrets b WHERE a.token_id = :acme AND b.token_id = :beta;
SELECT alike(pg_temp.error_of(format('SELECT ade_refresh_account(%s)', :acme)),
  'XX001 | a stored ade secret (ade_token_secrets.consumer_secret:' || :acme || ') cannot be opened%',
  'a secret copied from another token''s row does not open either');
-- put right by adding the token again
\! test/add-token.sh Acme CK_acme
SELECT lives_ok(format('SELECT ade_refresh_account(%s)', :acme), 'adding the token again puts it right');

-- a rotation waits for a renewal in progress, and re-seals what it wrote
-- (0.3 re-sealed what it had read before, and gave the old secrets back)
\! python3 test/mockctl.py token --org Acme --consumer-key CK_acme --json "$ADE_TEST_TMP/renew.json" --p7m "$ADE_TEST_TMP/renew.p7m" --cert "$ADE_TEST_TMP/cert.pem"
\! (printf '%s\n' 'BEGIN;' "SELECT ade_add_token(decode(:'p7m', 'base64'));" "SELECT pg_sleep(1.5), 'renewal';" 'COMMIT;' | psql -d "$ADE_TEST_DB" -XAtq -v ON_ERROR_STOP=1 -v p7m="$(base64 -w0 "$ADE_TEST_TMP/renew.p7m")" > "$ADE_TEST_TMP/renew.out" 2>&1 &)
SELECT ok(pg_temp.wait_for($$SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE query LIKE '%pg_sleep(1.5), ''renewal''%' AND pid <> pg_backend_pid())$$, 10),
  'a renewal is in progress');
SELECT ade_rotate_secret_key() \g /dev/null
\! python3 test/mockctl.py tokstate CK_acme --expire-sessions >/dev/null
SELECT lives_ok(format('SELECT ade_refresh_account(%s)', :acme),
  'after a rotation during a renewal, the renewed secrets are the ones kept (ABM takes them)');

-- a session sealed under a key that was deleted since is treated as
-- absent: a new one is opened; ade_secret_key_usage showed the key in use
SELECT session_token AS old_session FROM ade_token_secrets WHERE token_id = :acme \gset
SELECT substr(:'old_session', 6, 8) AS old_key \gset
SELECT ade_rotate_secret_key() \g /dev/null
UPDATE ade_token_secrets SET session_token = :'old_session' WHERE token_id = :acme;
SELECT is((SELECT sealed_values FROM ade_secret_key_usage WHERE key_id = :'old_key'), 1::bigint,
  'ade_secret_key_usage counts a session still sealed under an old key');
SELECT throws_ok(format('DELETE FROM ade_secret_keys WHERE id = %L', :'old_key'), '55006', NULL,
  'and that key cannot be deleted while the session uses it');
SELECT throws_ok(format('UPDATE ade_secret_keys SET id = ''deadbeef'' WHERE id = %L', :'old_key'), '55006', NULL,
  'nor renamed, which would orphan what it seals');
-- a key lost all the same (a restore without it): the trigger off, as if
ALTER TABLE ade_secret_keys DISABLE TRIGGER ade_secret_keys_in_use;
DELETE FROM ade_secret_keys WHERE id = :'old_key';
ALTER TABLE ade_secret_keys ENABLE TRIGGER ade_secret_keys_in_use;
SELECT is((SELECT error FROM ade_sync(:acme)), NULL, 'a session under a deleted key is treated as absent: the sync opens a new one');

-- the MDM key is taken as bytes (a server file read with
-- pg_read_binary_file), never as statement text, and never prompts
\! cd "$ADE_TEST_TMP" && openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=ade-import -keyout imp.key -out imp.pem 2>/dev/null && openssl pkey -in imp.key -aes256 -passout pass:x -out enc.key 2>/dev/null && chmod 644 imp.key imp.pem enc.key
\set impkey `echo "$ADE_TEST_TMP/imp.key"`
\set impcert `echo "$ADE_TEST_TMP/imp.pem"`
\set enckey `echo "$ADE_TEST_TMP/enc.key"`
\set pasted `echo "SELECT ade_import_key(:'k', :'c') IS NOT NULL" | psql -d "$ADE_TEST_DB" -XAtq -v k="$(cat "$ADE_TEST_TMP/imp.key")" -v c="$(cat "$ADE_TEST_TMP/imp.pem")" 2>&1 | head -1`
SELECT is(:'pasted'::text, 'WARNING:  the private key was passed as statement text',
  'a key pasted into the statement (text) works, with a WARNING that it was exposed');
SET statement_timeout = '10s';
SELECT throws_ok(format('SELECT ade_import_key(pg_read_binary_file(%L))', :'enckey'), '22023',
  'private_key is not an unencrypted PEM RSA private key',
  'an encrypted key is refused at once (no password prompt on the server)');
RESET statement_timeout;
SELECT lives_ok(format('SELECT ade_import_key(pg_read_binary_file(%L), pg_read_binary_file(%L))', :'impkey', :'impcert'),
  'a key and certificate read from server files are imported');
SELECT is(ade_public_key(), pg_read_file(:'impcert'), 'and the certificate is the one given');

-- an answer of millions of tiny values is refused before it is parsed
-- (parsing costs memory per value: gigabytes for a few megabytes)
\! python3 -c 'import json; print(json.dumps({"path": "/devices/sync", "consumer_key": "CK_acme", "status": 200, "body": "{\"devices\": [" + "{},"*300000 + "{}], \"more_to_follow\": false}", "times": 1}))' > "$ADE_TEST_TMP/many.json"
\! python3 test/mockctl.py fault "@$ADE_TEST_TMP/many.json"
SELECT alike((SELECT error FROM ade_sync(:acme)), 'ABM answered POST /devices/sync with JSON of more than 250000 values',
  'an answer of 300,000 empty objects is refused before it is parsed');
\! python3 test/mockctl.py faults-clear

-- a value of ade.abm_url that is not allowed, from the configuration
-- (ALTER SYSTEM, a reload): every request refuses it; none falls back to
-- Apple's URL (the setting's default)
\set conf `psql -d "$ADE_TEST_DB" -XAtqc "ALTER SYSTEM SET ade.abm_url = 'http://abm-mock.lan:8080'" && psql -d "$ADE_TEST_DB" -XAtqc "SELECT pg_reload_conf()" >/dev/null && sleep 0.5 && psql -d "$ADE_TEST_DB" -XAtqc "SELECT ade_refresh_account(id) FROM abm_tokens ORDER BY id LIMIT 1" 2>&1 | head -1; psql -d "$ADE_TEST_DB" -XAtqc "ALTER SYSTEM RESET ade.abm_url" && psql -d "$ADE_TEST_DB" -XAtqc "SELECT pg_reload_conf()" >/dev/null && sleep 0.5`
SELECT is(:'conf'::text, 'ERROR:  ade.abm_url is not allowed: plain http is allowed only to a loopback host (127.0.0.0/8, ::1, localhost)',
  'an ade.abm_url from the configuration that is not allowed refuses every request: no fallback to Apple');

-- the data keys cannot be truncated while they seal values
SELECT throws_ok('TRUNCATE ade_secret_keys', '55006', NULL, 'TRUNCATE of the data keys is refused while they seal values');
-- a NULL token id is an error, not a silent no-op
SELECT throws_ok('SELECT * FROM ade_sync(NULL::bigint)', '22004', 'token_id is NULL', 'ade_sync(NULL) is an error');
SELECT throws_ok('SELECT ade_refresh_account(NULL)', '22004', 'token_id is NULL', 'ade_refresh_account(NULL) is an error');
SELECT * FROM finish();
