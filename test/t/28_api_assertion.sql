-- The client assertion of a Business/School Manager API account (issue 24,
-- src/apijwt.c): an ES256 JWT whose header and claims are exactly what
-- Apple wants, whose signature openssl verifies with the account's public
-- key (after the JWS r || s is turned into DER by test/jws_verify.py,
-- without ade's code), from a key as Apple hands it out (SEC1, PKCS#8, or
-- PKCS#8 under the "EC PRIVATE KEY" label; CRLF, whitespace around it);
-- every other key refused with 22023 and a message that quotes none of it,
-- without leaking what OpenSSL allocated; times Apple refuses, refused.
-- Keys are made here with the openssl command, in $ADE_TEST_TMP.
\ir setup.psql
SELECT plan(38);

\set d `echo "$ADE_TEST_TMP/api_assertion"`
\set made `rm -rf :'d' && mkdir -p :'d' && cd :'d' && openssl ecparam -name prime256v1 -genkey -noout -out sec1.pem 2>>openssl.log && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out pkcs8.pem 2>>openssl.log && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 2>>openssl.log | sed 's/ PRIVATE KEY-----/ EC PRIVATE KEY-----/' >pkcs8ec.pem && openssl ecparam -name prime256v1 -genkey -out params.pem 2>>openssl.log && echo ok`
\set made2 `cd :'d' && openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa.pem 2>>openssl.log && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out p384.pem 2>>openssl.log && openssl genpkey -algorithm ED25519 -out ed25519.pem 2>>openssl.log && openssl pkey -in sec1.pem -aes256 -passout pass:secret -out enc8.pem 2>>openssl.log && openssl ec -in sec1.pem -aes256 -passout pass:secret -out enc1.pem 2>>openssl.log && echo ok`
\set pubs `cd :'d' && for k in sec1 pkcs8 pkcs8ec params; do openssl pkey -in $k.pem -pubout -out $k.pub 2>>openssl.log || exit 1; done; openssl pkey -in sec1.pem -pubout -out sec1pub.pem 2>>openssl.log && echo ok`
-- the same key as sec1.pem with CRLF line ends; with spaces, tabs and blank
-- lines around it; after a UTF-8 byte order mark
\set variants `cd :'d' && sed 's/$/\r/' sec1.pem >crlf.pem && { printf '  \t'; cat sec1.pem; printf '\n\n  \n'; } >spaced.pem && { printf '\357\273\277'; cat sec1.pem; } >bom.pem && echo ok`
-- sec1.pem's private scalar with pkcs8.pem's public point (the last 65
-- bytes of a SEC1 P-256 key's DER): a damaged key
\set mixed `cd :'d' && openssl ec -in sec1.pem -outform DER -out a.der 2>>openssl.log && openssl ec -in pkcs8.pem -outform DER -out b.der 2>>openssl.log && { head -c -65 a.der; tail -c 65 b.der; } >mixed.der && { echo '-----BEGIN EC PRIVATE KEY-----'; base64 mixed.der; echo '-----END EC PRIVATE KEY-----'; } >mixed.pem && echo ok`
SELECT is(:'made' || :'made2' || :'pubs' || :'variants' || :'mixed', 'okokokokok', 'the test keys are made with the openssl command');

\set sec1 `base64 -w0 :'d'/sec1.pem`
\set pkcs8 `base64 -w0 :'d'/pkcs8.pem`
\set pkcs8ec `base64 -w0 :'d'/pkcs8ec.pem`
\set params `base64 -w0 :'d'/params.pem`
\set crlf `base64 -w0 :'d'/crlf.pem`
\set spaced `base64 -w0 :'d'/spaced.pem`
\set bom `base64 -w0 :'d'/bom.pem`
\set rsa `base64 -w0 :'d'/rsa.pem`
\set p384 `base64 -w0 :'d'/p384.pem`
\set ed25519 `base64 -w0 :'d'/ed25519.pem`
\set enc8 `base64 -w0 :'d'/enc8.pem`
\set enc1 `base64 -w0 :'d'/enc1.pem`
\set pubonly `base64 -w0 :'d'/sec1pub.pem`
\set mixedkey `base64 -w0 :'d'/mixed.pem`
SELECT is(h.labels, 'EC PRIVATE KEY|PRIVATE KEY|EC PRIVATE KEY|EC PARAMETERS',
          'the keys are labelled as Apple may hand them out: SEC1, PKCS#8, PKCS#8 under the EC label (and one after its EC PARAMETERS)')
  FROM (SELECT string_agg(substring(convert_from(decode(k, 'base64'), 'UTF8') FROM '-----BEGIN ([A-Z ]+)-----'), '|' ORDER BY n) AS labels
          FROM unnest(ARRAY[:'sec1', :'pkcs8', :'pkcs8ec', :'params']) WITH ORDINALITY AS u(k, n)) h;
-- the DER of a one-block PEM file given as base64
CREATE FUNCTION pg_temp.der(pem_b64 text) RETURNS bytea LANGUAGE sql IMMUTABLE STRICT AS $$
  SELECT decode(regexp_replace(convert_from(decode(pem_b64, 'base64'), 'UTF8'), '-----[^-]*-----|\s', '', 'g'), 'base64') $$;
SELECT ok(position('\x06072a8648ce3d0201'::bytea IN pg_temp.der(:'pkcs8ec')) BETWEEN 1 AND 16
          AND position('\x06072a8648ce3d0201'::bytea IN pg_temp.der(:'sec1')) = 0,
          'the key under the EC label holds PKCS#8 bytes (id-ecPublicKey at its start), the SEC1 key does not');

-- the SQLSTATE and message of a statement (format(sql, the key)) that fails
CREATE FUNCTION pg_temp.refusal_of(sql text, key_b64 text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE st text; m text;
BEGIN
  EXECUTE format(sql, decode(key_b64, 'base64'));
  RETURN 'accepted';
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, m = MESSAGE_TEXT;
  RETURN st || ' ' || m;
END $$;

-- base64url without padding, decoded here (not by ade)
CREATE FUNCTION pg_temp.b64url(t text) RETURNS bytea LANGUAGE sql IMMUTABLE STRICT AS $$
  SELECT decode(translate(t, '-_', '+/') || repeat('=', (4 - length(t) % 4) % 4), 'base64') $$;
-- part n of a JWS as text (NULL when it does not decode)
CREATE FUNCTION pg_temp.part(jws text, n int) RETURNS text LANGUAGE plpgsql IMMUTABLE STRICT AS $$
BEGIN
  RETURN convert_from(pg_temp.b64url(split_part(jws, '.', n)), 'UTF8');
EXCEPTION WHEN OTHERS THEN
  RETURN NULL;
END $$;
-- text as jsonb (NULL when it is not JSON)
CREATE FUNCTION pg_temp.js(t text) RETURNS jsonb LANGUAGE plpgsql IMMUTABLE STRICT AS $$
BEGIN
  RETURN t::jsonb;
EXCEPTION WHEN OTHERS THEN
  RETURN NULL;
END $$;
-- an assertion, or why it was refused (so that one refusal fails one test)
CREATE FUNCTION pg_temp.jwt(client_id text, key_id text, key bytea, iat bigint, exp bigint, jti text)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE st text; m text;
BEGIN
  RETURN ade_client_assertion(client_id, key_id, key, iat, exp, jti);
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, m = MESSAGE_TEXT;
  RETURN 'refused: ' || st || ' ' || m;
END $$;

-- one refusal: its SQLSTATE and detail, and whether message, detail, hint
-- or context quote any 12 characters of the key (its PEM body or its hex)
CREATE FUNCTION pg_temp.refusal(k bytea, OUT state text, OUT detail text, OUT quotes_key boolean)
LANGUAGE plpgsql AS $$
DECLARE
  m text; d text; h text; c text; said text; body text; hex text;
BEGIN
  PERFORM ade_client_assertion('BUSINESSAPI.c0ffee', 'kid-1', k, 1767225600, 1767226800, 'jti-1');
  state := 'accepted';
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL,
                          h = PG_EXCEPTION_HINT, c = PG_EXCEPTION_CONTEXT;
  detail := d;
  said := concat_ws(' ', m, d, h, c);
  body := regexp_replace(encode(k, 'escape'), '-----[^-]*-----|\s', '', 'g');
  hex := encode(k, 'hex');
  quotes_key := false;
  FOR i IN 1 .. greatest(length(body), length(hex)) - 11 LOOP
    IF (i <= length(body) - 11 AND position(substr(body, i, 12) IN said) > 0)
       OR (i <= length(hex) - 11 AND position(substr(hex, i, 12) IN said) > 0) THEN
      quotes_key := true;
    END IF;
  END LOOP;
END $$;

-- an assertion from the SEC1 key
SELECT pg_temp.jwt('BUSINESSAPI.9b1c2d3e-0000-4000-8000-000000000001', 'd136aa66-0c3b-4c1e-9f9a-1b2c3d4e5f60',
                   decode(:'sec1', 'base64'), 1767225600, 1767226800, 'jti-8c1f') AS jwt \gset
SELECT ok(:'jwt' ~ '^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$',
          'the assertion is three base64url parts, without padding, joined by dots');
SELECT is(pg_temp.part(:'jwt', 1), '{"alg":"ES256","kid":"d136aa66-0c3b-4c1e-9f9a-1b2c3d4e5f60","typ":"JWT"}',
          'its header is exactly {"alg":"ES256","kid":<key id>,"typ":"JWT"}');
SELECT is(pg_temp.part(:'jwt', 2),
          '{"sub":"BUSINESSAPI.9b1c2d3e-0000-4000-8000-000000000001","iss":"BUSINESSAPI.9b1c2d3e-0000-4000-8000-000000000001",'
          '"aud":"https://account.apple.com/auth/oauth2/v2/token","iat":1767225600,"exp":1767226800,"jti":"jti-8c1f"}',
          'its claims are exactly sub and iss the client id, aud Apple''s token endpoint, iat, exp and jti');
SELECT is(length(pg_temp.b64url(split_part(:'jwt', '.', 3))), 64, 'its signature is the raw 64 bytes r || s, not DER');
\set v `test/jws_verify.py :'jwt' :'d'/sec1.pub 2>&1`
SELECT is(:'v'::text, 'Verified OK', 'the signature of a SEC1 key''s assertion verifies with openssl and its public key');

-- the verifier can say no
\set v `test/jws_verify.py :'jwt' :'d'/pkcs8.pub 2>&1`
SELECT is(:'v'::text, 'Verification failure', 'the same signature does not verify with another key''s public key');
SELECT split_part(:'jwt', '.', 1) || '.' || rtrim(translate(replace(encode(convert_to(replace(pg_temp.part(:'jwt', 2),
         '"exp":1767226800', '"exp":1767226801'), 'UTF8'), 'base64'), E'\n', ''), '+/', '-_'), '=') || '.' || split_part(:'jwt', '.', 3) AS forged \gset
\set v `test/jws_verify.py :'forged' :'d'/sec1.pub 2>&1`
SELECT is(:'v'::text, 'Verification failure', 'the signature does not verify for claims changed by one second of exp');

-- every form of the key Apple hands out
SELECT pg_temp.jwt('SCHOOLAPI.1', 'k2', decode(:'pkcs8', 'base64'), 1767225600, 1767226800, 'j2') AS jwt8 \gset
\set v `test/jws_verify.py :'jwt8' :'d'/pkcs8.pub 2>&1`
SELECT is(:'v'::text, 'Verified OK', 'a PKCS#8 key ("PRIVATE KEY") signs an assertion that verifies');
SELECT pg_temp.jwt('SCHOOLAPI.1', 'k2', decode(:'pkcs8ec', 'base64'), 1767225600, 1767226800, 'j2') AS jwt8ec \gset
\set v `test/jws_verify.py :'jwt8ec' :'d'/pkcs8ec.pub 2>&1`
SELECT is(:'v'::text, 'Verified OK', 'PKCS#8 bytes under the "EC PRIVATE KEY" label, as Apple hands them out, sign an assertion that verifies');
SELECT pg_temp.jwt('SCHOOLAPI.1', 'k2', decode(:'params', 'base64'), 1767225600, 1767226800, 'j2') AS jwtp \gset
\set v `test/jws_verify.py :'jwtp' :'d'/params.pub 2>&1`
SELECT is(:'v'::text, 'Verified OK', 'a key after an "EC PARAMETERS" block (openssl ecparam -genkey) signs an assertion that verifies');

-- the file as an admin may have it
SELECT pg_temp.jwt('SCHOOLAPI.1', 'k2', decode(:'crlf', 'base64'), 1767225600, 1767226800, 'j2') AS jwtcrlf \gset
\set v `test/jws_verify.py :'jwtcrlf' :'d'/sec1.pub 2>&1`
SELECT is(:'v'::text, 'Verified OK', 'a key with CRLF line ends reads, and its assertion verifies');
SELECT pg_temp.jwt('SCHOOLAPI.1', 'k2', decode(:'spaced', 'base64'), 1767225600, 1767226800, 'j2') AS jwtsp \gset
\set v `test/jws_verify.py :'jwtsp' :'d'/sec1.pub 2>&1`
SELECT is(:'v'::text, 'Verified OK', 'a key with spaces and a tab before its BEGIN line and blank lines after it reads, and its assertion verifies');
SELECT pg_temp.jwt('SCHOOLAPI.1', 'k2', decode(:'bom', 'base64'), 1767225600, 1767226800, 'j2') AS jwtbom \gset
\set v `test/jws_verify.py :'jwtbom' :'d'/sec1.pub 2>&1`
SELECT is(:'v'::text, 'Verified OK', 'a key after a UTF-8 byte order mark (a file saved by a Windows editor) reads, and its assertion verifies');

-- ECDSA draws a new nonce every time
SELECT pg_temp.jwt('BUSINESSAPI.9b1c2d3e-0000-4000-8000-000000000001', 'd136aa66-0c3b-4c1e-9f9a-1b2c3d4e5f60',
                   decode(:'sec1', 'base64'), 1767225600, 1767226800, 'jti-8c1f') AS jwt2 \gset
SELECT ok(split_part(:'jwt', '.', 1) || split_part(:'jwt', '.', 2) = split_part(:'jwt2', '.', 1) || split_part(:'jwt2', '.', 2)
          AND split_part(:'jwt', '.', 3) <> split_part(:'jwt2', '.', 3),
          'two assertions of the same arguments have the same header and claims and different signatures');
\set v `test/jws_verify.py :'jwt2' :'d'/sec1.pub 2>&1`
SELECT is(:'v'::text, 'Verified OK', 'the second, different signature verifies too');

-- values JSON must escape
SELECT pg_temp.jwt(E'BUSINESSAPI."q\\\\b\nl\u00e9', E'kid"\\\\', decode(:'sec1', 'base64'),
                   1767225600, 1767226800, E'j\t"') AS jwtesc \gset
SELECT is(ARRAY[pg_temp.js(pg_temp.part(:'jwtesc', 1)) ->> 'kid', pg_temp.js(pg_temp.part(:'jwtesc', 2)) ->> 'sub',
                pg_temp.js(pg_temp.part(:'jwtesc', 2)) ->> 'iss', pg_temp.js(pg_temp.part(:'jwtesc', 2)) ->> 'jti'],
          ARRAY[E'kid"\\\\', E'BUSINESSAPI."q\\\\b\nl\u00e9', E'BUSINESSAPI."q\\\\b\nl\u00e9', E'j\t"'],
          'quotes, backslashes, control characters and non-ASCII in the values are escaped: header and claims are JSON that gives them back');
\set v `test/jws_verify.py :'jwtesc' :'d'/sec1.pub 2>&1`
SELECT is(:'v'::text, 'Verified OK', 'an assertion with escaped values verifies');

-- every other key: 22023, said without any of its bytes
SELECT is(r.state || ' ' || r.detail, '22023 It is a key of type RSA, not EC.', 'an RSA key is refused (22023)')
  FROM pg_temp.refusal(decode(:'rsa', 'base64')) r;
SELECT is(r.state || ' ' || r.detail, '22023 Its curve is secp384r1, not P-256 (prime256v1).', 'an EC key on P-384 is refused (22023)')
  FROM pg_temp.refusal(decode(:'p384', 'base64')) r;
SELECT is(r.state || ' ' || r.detail, '22023 It is a key of type ED25519, not EC.', 'an Ed25519 key is refused (22023)')
  FROM pg_temp.refusal(decode(:'ed25519', 'base64')) r;
SELECT is(r.state || ' ' || r.detail, '22023 No private key could be read from it: it is not PEM, or it is damaged or encrypted.',
          'garbage bytes are refused (22023)')
  FROM pg_temp.refusal('\x00ff13e7c0ffee5ba5eba11ddeadbeef0a2d2d2d2d2d424547494e0a'::bytea) r;
SELECT is(r.state || ' ' || r.detail, '22023 It is empty.', 'an empty bytea is refused (22023)')
  FROM pg_temp.refusal(''::bytea) r;
SELECT is(r.state || ' ' || r.detail, '22023 No private key could be read from it: it is not PEM, or it is damaged or encrypted.',
          'an encrypted PKCS#8 key is refused (22023), without asking for a password')
  FROM pg_temp.refusal(decode(:'enc8', 'base64')) r;
SELECT is(r.state || ' ' || r.detail, '22023 No private key could be read from it: it is not PEM, or it is damaged or encrypted.',
          'an encrypted SEC1 key (Proc-Type: 4,ENCRYPTED) is refused (22023), without asking for a password')
  FROM pg_temp.refusal(decode(:'enc1', 'base64')) r;
SELECT is(r.state || ' ' || r.detail, '22023 No private key could be read from it: it is not PEM, or it is damaged or encrypted.',
          'a public key alone is refused (22023)')
  FROM pg_temp.refusal(decode(:'pubonly', 'base64')) r;
SELECT is(r.state || ' ' || r.detail, '22023 It fails OpenSSL''s key check: its private and public parts do not belong together.',
          'a P-256 key whose public point is not its private scalar''s is refused (22023): it would sign what Apple cannot verify')
  FROM pg_temp.refusal(decode(:'mixedkey', 'base64')) r;
SELECT is(array_agg(n ORDER BY n) FILTER (WHERE (pg_temp.refusal(k)).quotes_key), NULL::text[],
          'no refusal quotes 12 characters of its key (PEM body or hex) in its message, detail, hint or context')
  FROM (VALUES ('rsa', decode(:'rsa', 'base64')), ('p384', decode(:'p384', 'base64')),
               ('ed25519', decode(:'ed25519', 'base64')), ('enc8', decode(:'enc8', 'base64')),
               ('enc1', decode(:'enc1', 'base64')), ('pubonly', decode(:'pubonly', 'base64')),
               ('mixed', decode(:'mixedkey', 'base64')),
               ('garbage', '\x00ff13e7c0ffee5ba5eba11ddeadbeef0a2d2d2d2d2d424547494e0a'::bytea)) AS t(n, k);

-- times and values Apple refuses
SELECT throws_ok(format($$SELECT ade_client_assertion('BUSINESSAPI.1', 'k', %L, 1767225600, 1767225600 + 15552000, 'j')$$,
                        decode(:'sec1', 'base64')),
                 '22023', 'exp of a client assertion must be less than 180 days after its iat',
                 'an assertion valid for 180 days (exp - iat = 15552000) is refused (22023)');
SELECT is(pg_temp.js(pg_temp.part(pg_temp.jwt('BUSINESSAPI.1', 'k', decode(:'sec1', 'base64'),
                                              1767225600, 1767225600 + 15551999, 'j'), 2)) ->> 'exp',
          (1767225600 + 15551999)::text, 'an assertion valid for one second less than 180 days is made');
SELECT throws_ok(format($$SELECT ade_client_assertion('BUSINESSAPI.1', 'k', %L, 1767225600, 1767225600, 'j')$$,
                        decode(:'sec1', 'base64')),
                 '22023', 'exp of a client assertion must be after its iat', 'exp = iat is refused (22023)');
SELECT throws_ok(format($$SELECT ade_client_assertion('BUSINESSAPI.1', 'k', %L, 1767225600, 1767225000, 'j')$$,
                        decode(:'sec1', 'base64')),
                 '22023', 'exp of a client assertion must be after its iat', 'exp before iat is refused (22023)');
SELECT throws_ok(format($$SELECT ade_client_assertion('BUSINESSAPI.1', 'k', %L, -9223372036854775807, 9223372036854775807, 'j')$$,
                        decode(:'sec1', 'base64')),
                 '22023', 'exp of a client assertion must be less than 180 days after its iat',
                 'exp - iat beyond bigint is refused, not wrapped around (22023)');
SELECT is(ARRAY[(pg_temp.refusal_of($$SELECT ade_client_assertion('', 'k', %L, 1767225600, 1767226800, 'j')$$, :'sec1')),
                (pg_temp.refusal_of($$SELECT ade_client_assertion('BUSINESSAPI.1', '', %L, 1767225600, 1767226800, 'j')$$, :'sec1')),
                (pg_temp.refusal_of($$SELECT ade_client_assertion('BUSINESSAPI.1', 'k', %L, 1767225600, 1767226800, '')$$, :'sec1'))],
          ARRAY['22023 client_id of a client assertion must not be empty', '22023 key_id of a client assertion must not be empty',
                '22023 jti of a client assertion must not be empty'],
          'an empty client_id, key_id or jti is refused (22023)');
SELECT is(ade_client_assertion('BUSINESSAPI.1', 'k', NULL, 1767225600, 1767226800, 'j'), NULL, 'a NULL argument gives NULL (STRICT)');

-- refusals and assertions in one session: what OpenSSL allocated is freed
-- on every path, the ERROR of a refusal included (the backend's private
-- memory, RssAnon, after a warm-up; OpenSSL 3 takes about 0.5 ms to read a
-- key, hence 3,000 and not more)
CREATE FUNCTION pg_temp.many(k bytea, n int) RETURNS int LANGUAGE plpgsql AS $$
DECLARE refused int := 0;
BEGIN
  FOR i IN 1 .. n LOOP
    BEGIN
      PERFORM ade_client_assertion('BUSINESSAPI.1', 'k', k, 1767225600, 1767226800, 'j');
    EXCEPTION WHEN invalid_parameter_value THEN
      refused := refused + 1;
    END;
  END LOOP;
  RETURN refused;
END $$;
SELECT pg_backend_pid() AS me \gset
SELECT pg_temp.many(decode(:'p384', 'base64'), 300) + pg_temp.many(decode(:'mixedkey', 'base64'), 300)
       + pg_temp.many(decode(:'sec1', 'base64'), 300) \g /dev/null
\set rss0 `awk '/^RssAnon:/ {print $2}' /proc/:me/status`
SELECT pg_temp.many(decode(:'p384', 'base64'), 3000) AS p384_refused,
       pg_temp.many(decode(:'mixedkey', 'base64'), 3000) AS mixed_refused,
       pg_temp.many(decode(:'sec1', 'base64'), 3000) AS sec1_refused \gset
\set rss1 `awk '/^RssAnon:/ {print $2}' /proc/:me/status`
SELECT ok(:p384_refused = 3000 AND :mixed_refused = 3000 AND :sec1_refused = 0
          AND :rss1 - :rss0 < 1024,
          format('3,000 refusals of a P-384 key, 3,000 of a damaged P-256 key and 3,000 assertions in one session take less than 1 MB more private memory (%s kB, then %s kB; a call that freed nothing would leak 2 to 3 kB each)',
                 :rss0, :rss1));
SELECT * FROM finish();
