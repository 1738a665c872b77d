-- token_end_to_end: ade_public_key() makes a key pair once; a token that ABM
-- encrypts to that certificate (openssl smime -encrypt -aes128) is added
-- end to end: decrypted, checked with GET /account, stored with the account's
-- org_name, apple_id and server_name.  The same consumer_key again renews the
-- token in place (same id, cursor kept).  ade_remove_token() deletes it with
-- its secrets and soft-deletes its live assignments.
SET client_min_messages = warning;
SET ade.allow_drop = on;
DROP EXTENSION IF EXISTS ade CASCADE;
RESET ade.allow_drop;
CREATE EXTENSION ade;
RESET client_min_messages;
\! python3 test/mockctl.py reset
\getenv tmp ADE_TEST_TMP

-- the key pair is made on first call and is the same afterwards
SELECT ade_public_key() AS cert \gset
SELECT :'cert' LIKE '-----BEGIN CERTIFICATE-----%' AS is_pem, ade_public_key() = :'cert' AS stable;
SELECT private_key LIKE 'ade2:%' AS key_stored_sealed, strpos(private_key, 'PRIVATE KEY') = 0 AS no_plain_key FROM ade_keypair;
\! psql -d "$ADE_TEST_DB" -XAtqc 'select ade_public_key()' | openssl x509 -noout -text | grep -Eo 'Public-Key: \(2048 bit\)|Signature Algorithm: sha256WithRSAEncryption' | sort -u

-- ABM makes a token for this certificate
\o :tmp/cert.pem
\qecho :cert
\o
\! python3 test/mockctl.py token --org 'Acme Schools' --consumer-key CK_acme --admin-id it@acme.example --server-name 'Acme MDM' --json "$ADE_TEST_TMP/acme.json"
-- the message as ABM wraps it, encrypted as ABM does
\! (printf 'Content-Type: text/plain;charset=UTF-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n-----BEGIN MESSAGE-----\n'; cat "$ADE_TEST_TMP/acme.json"; printf '\n-----END MESSAGE-----\n') > "$ADE_TEST_TMP/acme.msg"
\! openssl smime -encrypt -aes128 -in "$ADE_TEST_TMP/acme.msg" -out "$ADE_TEST_TMP/acme.p7m" "$ADE_TEST_TMP/cert.pem"
\set p7m `base64 -w0 "$ADE_TEST_TMP/acme.p7m"`
SELECT ade_add_token(decode(:'p7m', 'base64')) AS acme \gset
SELECT id = :acme AS id, consumer_key, org_name, apple_id, server_name, mode,
       renew_at > now() AS not_expired, token_invalid, terms_expired
  FROM abm_tokens;
-- the server cannot read the client's files: the client hands the JSON over
-- the secrets are stored sealed, and are the token's: ABM (the mock) accepted
-- the signature made from them
\set tokjson `cat "$ADE_TEST_TMP/acme.json"`
SELECT strpos(s::text, (:'tokjson'::jsonb)->>'consumer_secret') = 0
       AND strpos(s::text, (:'tokjson'::jsonb)->>'access_token') = 0
       AND strpos(s::text, (:'tokjson'::jsonb)->>'access_secret') = 0 AS no_plain_secret,
       s.session_token LIKE 'ade2:%' AS session_cached_sealed
  FROM ade_token_secrets s;
\! python3 test/mockctl.py log --path /session | python3 -c 'import json,sys; r=json.load(sys.stdin)["requests"]; print("GET /session:", [x["status"] for x in r])'

-- renewal: a new token file for the same consumer_key keeps the id and cursor
-- (this one encrypts the bare JSON, without ABM's MIME wrapper: accepted too)
UPDATE abm_tokens SET cursor = 'kept-cursor', mode = 'sync', token_invalid = true;
\! python3 test/mockctl.py token --org 'Acme Schools' --consumer-key CK_acme --server-name 'Acme MDM 2' --json "$ADE_TEST_TMP/acme2.json"
\! openssl smime -encrypt -aes128 -in "$ADE_TEST_TMP/acme2.json" -out "$ADE_TEST_TMP/acme2.p7m" "$ADE_TEST_TMP/cert.pem"
\set p7m `base64 -w0 "$ADE_TEST_TMP/acme2.p7m"`
SELECT ade_add_token(decode(:'p7m', 'base64')) = :acme AS same_id;
\set tokjson `cat "$ADE_TEST_TMP/acme2.json"`
SELECT count(*) AS tokens, min(cursor) AS cursor, min(mode) AS mode,
       bool_and(NOT token_invalid) AS valid_again, min(server_name) AS server_name
  FROM abm_tokens;
-- the new secrets are the ones used now (the mock knows only the new ones)
\! python3 test/mockctl.py tokstate CK_acme --expire-sessions
SELECT ade_refresh_account(:acme);

-- remove: secrets go, live assignments become soft-deleted and keep the token id
INSERT INTO hosts (id, hardware_serial, platform) VALUES (1, 'C02LIVE', 'darwin');
INSERT INTO host_dep_assignments (host_id, hardware_serial, abm_token_id) VALUES (1, 'C02LIVE', :acme);
SELECT ade_remove_token(:acme);
SELECT count(*) AS tokens FROM abm_tokens;
SELECT count(*) AS secrets FROM ade_token_secrets;
SELECT hardware_serial, abm_token_id = :acme AS kept_token_id, deleted_at IS NOT NULL AS soft_deleted
  FROM host_dep_assignments;
SELECT ade_remove_token(:acme);
