-- token_bad_input: garbage, a token made for another key, a truncated file,
-- and a decrypted token that lacks a field each get a clear error, and
-- nothing is stored.
SET client_min_messages = warning;
SET ade.allow_drop = on;
DROP EXTENSION IF EXISTS ade CASCADE;
RESET ade.allow_drop;
CREATE EXTENSION ade;
RESET client_min_messages;
\! python3 test/mockctl.py reset
\getenv tmp ADE_TEST_TMP

-- before any key pair exists, no token can be for this server
SELECT ade_add_token('\x00'::bytea);
SELECT ade_public_key() IS NOT NULL AS have_key \gset

-- garbage and an empty file
SELECT ade_add_token(convert_to('this is not a token', 'UTF8'));
SELECT ade_add_token(''::bytea);
-- a token for another MDM server's key
\! openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=other -days 1 -keyout "$ADE_TEST_TMP/other.key" -out "$ADE_TEST_TMP/other.pem" 2>/dev/null
\! python3 test/mockctl.py token --org Other --consumer-key CK_other --json "$ADE_TEST_TMP/other.json"
\! python3 test/mockctl.py p7m --cert "$ADE_TEST_TMP/other.pem" --json "$ADE_TEST_TMP/other.json" --out "$ADE_TEST_TMP/other.p7m"
\set p7m `base64 -w0 "$ADE_TEST_TMP/other.p7m"`
SELECT ade_add_token(decode(:'p7m', 'base64'));
-- a token for this key, truncated
\! psql -d "$ADE_TEST_DB" -XAtqc 'select ade_public_key()' > "$ADE_TEST_TMP/cert.pem"
\! python3 test/mockctl.py p7m --cert "$ADE_TEST_TMP/cert.pem" --json "$ADE_TEST_TMP/other.json" --out "$ADE_TEST_TMP/mine.p7m"
\set p7m `base64 -w0 "$ADE_TEST_TMP/mine.p7m"`
SELECT ade_add_token(substring(decode(:'p7m', 'base64') from 1 for length(decode(:'p7m', 'base64')) / 2));
-- a token whose message lacks access_secret
\! echo '{"consumer_key":"CK_x","consumer_secret":"CS_x","access_token":"AT_x","access_token_expiry":"2030-01-01T00:00:00Z"}' > "$ADE_TEST_TMP/lacking.json"
\! python3 test/mockctl.py p7m --cert "$ADE_TEST_TMP/cert.pem" --json "$ADE_TEST_TMP/lacking.json" --out "$ADE_TEST_TMP/lacking.p7m"
\set p7m `base64 -w0 "$ADE_TEST_TMP/lacking.p7m"`
SELECT ade_add_token(decode(:'p7m', 'base64'));
-- a token ABM does not know (the account call is refused): not stored either
\! echo '{"consumer_key":"CK_unknown","consumer_secret":"CS_x","access_token":"AT_x","access_secret":"AS_x","access_token_expiry":"2030-01-01T00:00:00Z"}' > "$ADE_TEST_TMP/unknown.json"
\! python3 test/mockctl.py p7m --cert "$ADE_TEST_TMP/cert.pem" --json "$ADE_TEST_TMP/unknown.json" --out "$ADE_TEST_TMP/unknown.p7m"
\set p7m `base64 -w0 "$ADE_TEST_TMP/unknown.p7m"`
SELECT ade_add_token(decode(:'p7m', 'base64'));

-- nothing was stored
SELECT (SELECT count(*) FROM abm_tokens) AS tokens, (SELECT count(*) FROM ade_token_secrets) AS secrets;

-- the same file intact is accepted: the failures above were about the input
\! python3 test/mockctl.py token --org Other --consumer-key CK_other --json "$ADE_TEST_TMP/other.json"
\! python3 test/mockctl.py p7m --cert "$ADE_TEST_TMP/cert.pem" --json "$ADE_TEST_TMP/other.json" --out "$ADE_TEST_TMP/mine.p7m"
\set p7m `base64 -w0 "$ADE_TEST_TMP/mine.p7m"`
SELECT ade_add_token(decode(:'p7m', 'base64')) > 0 AS added;

-- bad keys for ade_import_key change nothing
SELECT private_key AS before_key FROM ade_keypair \gset
SELECT ade_import_key('not a key');
SELECT ade_import_key(pg_read_binary_file('/dev/null'));
\set otherkey `cat "$ADE_TEST_TMP/other.key"`
\set mycert `cat "$ADE_TEST_TMP/cert.pem"`
SELECT ade_import_key(convert_to(:'otherkey', 'UTF8'), convert_to(:'mycert', 'UTF8'));
SELECT private_key = :'before_key' AS key_unchanged FROM ade_keypair;
