-- The proxy password never reaches what ordinary roles read (issue 19,
-- item 4).  ade.proxy is superuser-only because it may hold
-- user:password@, but a value libcurl cannot parse (a password with an
-- unescaped @, an unsupported scheme, a bad port) made libcurl's error text
-- quote it whole, and 0.4 stored that text in ade_sync_runs.error and
-- abm_tokens.last_error, which ade_reader reads through ade_status, and
-- which pg_dump carries.  Every text of libcurl and OpenSSL now goes
-- through one function (AdeRedact(), src/http.c).
\ir setup.psql
\! test/add-token.sh Acme CK_acme
SELECT id AS acme FROM abm_tokens WHERE consumer_key = 'CK_acme' \gset
SELECT plan(9);
-- a URL that is https (only https goes through the proxy), never reached
SET ade.abm_url = 'https://127.0.0.1:9/';
SET ade.max_retries = 0;
CREATE TEMP TABLE forms (proxy text);
INSERT INTO forms VALUES
  ('http://user:s3cr3tPW@127.0.0.1:9'),          -- well formed: the proxy refuses the connection
  ('http://user:s3cr3t@PW@127.0.0.1:9'),         -- an unescaped @ in the password
  ('foo://user:s3cr3tPW@127.0.0.1:9'),           -- a scheme libcurl does not know
  ('socks9://user:s3cr3tPW@127.0.0.1:9'),
  ('user:s3cr3tPW@127.0.0.1:9'),                 -- no scheme
  ('http://user:s3cr3tPW@[::1'),                 -- a bracket never closed
  ('http://user:s3cr3t%40PW@127.0.0.1:99999'),   -- percent-encoded, a port out of range
  ('http://us3r:s3cr3tPW@127.0.0.1:9:9'),
  ('http://user:s3cr3tPW@'),
  ('foo://user:s3cr3tPW' || repeat('Zq7Xw9Kp', 40) || '@127.0.0.1:9'),   -- longer than libcurl's error buffer
  ('foo://' || repeat('u', 200) || ':s3cr3tPW' || repeat('x', 30) || '@127.0.0.1:9'), -- cut inside the password
  ('foo://u:' || repeat('s3cr3t', 60) || '@h');
CREATE TEMP TABLE seen (proxy text, error text);
DO $$
DECLARE f record;
BEGIN
  FOR f IN SELECT proxy FROM forms LOOP
    PERFORM set_config('ade.proxy', f.proxy, false);
    INSERT INTO seen SELECT f.proxy, s.error FROM ade_sync() s;
  END LOOP;
END $$;
RESET ade.proxy;
RESET ade.abm_url;

SELECT is((SELECT count(*)::int FROM seen WHERE error IS NOT NULL), 12, 'every form made the run fail');
SELECT ok((SELECT count(*) FROM seen WHERE error LIKE '%proxy%' OR error LIKE '%ade.proxy%' OR error LIKE '%connect%') > 0,
  'and the errors still say what went wrong');
SELECT is((SELECT count(*)::int FROM seen WHERE error ~ 's3cr|3tPW|PW@|%40PW|Zq7X|Xw9K'), 0,
  'no error ade_sync() returns quotes the password');
SELECT is((SELECT count(*)::int FROM ade_sync_runs WHERE error ~ 's3cr3t'), 0, 'no ade_sync_runs row holds it');
SELECT is((SELECT count(*)::int FROM abm_tokens WHERE last_error ~ 's3cr3t'), 0, 'nor abm_tokens.last_error');
SET ROLE ade_reader;
SELECT is((SELECT count(*)::int FROM ade_status s WHERE s::text ~ 's3cr3t'), 0, 'nor any column ade_reader reads in ade_status');
SELECT is((SELECT count(*)::int FROM ade_sync_runs s WHERE s::text ~ 's3cr3t'), 0, 'nor in ade_sync_runs (SELECT *)');
RESET ROLE;
SELECT ok((SELECT bool_or(error LIKE '%[ade.proxy]%') FROM seen), 'a quote of the whole setting shows its name instead');
\set inlog `grep -c -e s3cr3t "$ADE_SERVER_LOG" || true`
SELECT is(:'inlog'::int, 0, 'and the server log never shows the password');
SELECT * FROM finish();
