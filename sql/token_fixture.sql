-- token_fixture: a real ABM server token (.p7m from the fixture) decrypts
-- with the fixture's key, imported with ade_import_key(); every field of the
-- fixture README comes out; the expired token is accepted with a WARNING.
-- Skips (expected/token_fixture_1.out) when ../shared is absent.
SET client_min_messages = warning;
SET ade.allow_drop = on;
DROP EXTENSION IF EXISTS ade CASCADE;
RESET ade.allow_drop;
CREATE EXTENSION ade;
RESET client_min_messages;
\getenv fixtures ADE_FIXTURES
SELECT :'fixtures' <> '' AS have_fixtures \gset
\if :have_fixtures
\set key `cat "$ADE_FIXTURES/server-key.pem"`
\set cert `cat "$ADE_FIXTURES/server-cert.pem"`
\set p7m `base64 -w0 "$ADE_FIXTURES/server-token.p7m"`
-- the mock ABM knows these credentials, as Apple would
\! python3 test/mockctl.py reset
\! python3 test/mockctl.py token --org 'Fixture Org' --consumer-key CK_75b2eb55cec9641e869a7d2c88b4bf1f7ffee504716571d191306385b8647ead9a4239ad6a2095ea0197feb46ce61399 --consumer-secret CS_810bb5ab05e53becb3bfbe40b3608a0c9039c457 --access-token AT_O8474885631Oe8ddece11c1a70077b340e281a2c4e2c4924a54cO1737111741803 --access-secret AS_97b944021a19633782a36c2a85038a46d6acaa06 --admin-id admin@fixture.example --server-name 'Fixture MDM' >/dev/null
-- import: the certificate returned is the fixture's, and ade_public_key() now returns it
SELECT rtrim(ade_import_key(convert_to(:'key', 'UTF8'), convert_to(:'cert', 'UTF8')), E'\n') = :'cert' AS imported_cert_is_fixture;
SELECT rtrim(ade_public_key(), E'\n') = :'cert' AS public_key_is_fixture;
SELECT ade_add_token(decode(:'p7m', 'base64')) AS token_id \gset
SELECT t.id = :token_id AS same_id,
       t.consumer_key = 'CK_75b2eb55cec9641e869a7d2c88b4bf1f7ffee504716571d191306385b8647ead9a4239ad6a2095ea0197feb46ce61399' AS consumer_key,
       t.renew_at = '2026-01-17T11:02:21Z'::timestamptz AS access_token_expiry,
       t.org_name, t.apple_id, t.server_name, t.mode, t.cursor IS NULL AS no_cursor
  FROM abm_tokens t;
-- the secrets are stored sealed: no column holds one in plain text
SELECT s.consumer_secret LIKE 'ade2:%' AND s.access_token LIKE 'ade2:%' AND s.access_secret LIKE 'ade2:%' AS sealed,
       strpos(s::text, 'CS_810bb5ab05e53becb3bfbe40b3608a0c9039c457') = 0
       AND strpos(s::text, 'AT_O8474885631Oe8ddece11c1a70077b340e281a2c4e2c4924a54cO1737111741803') = 0
       AND strpos(s::text, 'AS_97b944021a19633782a36c2a85038a46d6acaa06') = 0 AS no_plain_secret
  FROM ade_token_secrets s;
-- and they are the README's: the mock, which holds the README's values,
-- verified the OAuth signature made from the decrypted consumer_secret,
-- access_token and access_secret
\! python3 test/mockctl.py log --path /session | python3 -c 'import json,sys; r=json.load(sys.stdin)["requests"]; print("GET /session:", [x["status"] for x in r])'
-- the status view shows the token as expired
SELECT org_name, token_expired, days_until_expiry < 0 AS past_expiry FROM ade_status;
\else
\echo 'skipped: no fixtures (../shared is absent)'
\endif
