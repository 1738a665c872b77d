-- http_safety: plain http to a non-loopback host is refused before any
-- connection (never a silent fallback to Apple); redirects are not followed; ade.http_timeout
-- ends a hung request; statement_timeout and pg_cancel_backend end it within
-- a second with their own SQLSTATE and message; an answer over
-- ade.max_response_bytes is a clear error; the backend is healthy after all
-- of it and has leaked no connection.
SET client_min_messages = warning;
SET ade.allow_drop = on;
DROP EXTENSION IF EXISTS ade CASCADE;
RESET ade.allow_drop;
CREATE EXTENSION ade;
RESET client_min_messages;
\! python3 test/mockctl.py reset
\! test/add-token.sh 'Acme' CK_acme
SELECT id AS acme FROM abm_tokens WHERE consumer_key = 'CK_acme' \gset
\set VERBOSITY default

-- a value not allowed is refused when it is set (the library is preloaded,
-- as the README says; without preloading, a value set before the library
-- loads is refused when it loads, and every request refuses until a valid
-- one is set: src/ade.c); the mock stays in use
\c
SET ade.abm_url = 'http://0.0.0.0:9';
SELECT ade_refresh_account(:acme);
SELECT ade_refresh_account(:acme);
SET ade.abm_url = 'http://0.0.0.0:9';
RESET ade.abm_url;
SELECT ade_refresh_account(:acme);

-- redirects are not followed
\! python3 test/mockctl.py fault '{"path": "/account", "status": 302, "headers": {"Location": "http://0.0.0.0:9/account"}, "body": "moved", "times": 1}'
SELECT ade_refresh_account(:acme);

-- ade.http_timeout ends a hung answer
\! python3 test/mockctl.py fault '{"path": "/account", "hang_seconds": 20, "times": 1}'
SET ade.http_timeout = 300;
SELECT clock_timestamp() AS t0 \gset
SELECT ade_refresh_account(:acme);
SELECT clock_timestamp() - :'t0' < interval '1.5 s' AS ended_by_http_timeout;
RESET ade.http_timeout;

-- statement_timeout ends it within a second, reported as a statement timeout
\! python3 test/mockctl.py fault '{"path": "/account", "hang_seconds": 20, "times": 1}'
SET statement_timeout = '400ms';
SELECT clock_timestamp() AS t0 \gset
SELECT ade_refresh_account(:acme);
RESET statement_timeout;
SELECT clock_timestamp() - :'t0' < interval '1.4 s' AS ended_within_a_second;

-- pg_cancel_backend ends it within a second, reported as a user cancel
\! python3 test/mockctl.py fault '{"path": "/account", "hang_seconds": 20, "times": 1}'
SELECT pg_backend_pid() AS me \gset
\! (sleep 0.5; psql -d "$ADE_TEST_DB" -XAtqc "select pg_cancel_backend($(psql -d "$ADE_TEST_DB" -XAtqc "select pid from pg_stat_activity where query like 'SELECT ade_refresh_account%' and state = 'active' limit 1"))" >/dev/null) &
SELECT clock_timestamp() AS t0 \gset
SELECT ade_refresh_account(:acme);
SELECT clock_timestamp() - :'t0' < interval '1.5 s' AS ended_within_a_second;

-- an answer larger than ade.max_response_bytes
\! python3 test/mockctl.py fault '{"path": "/account", "pad_bytes": 5000, "times": 1}'
SET ade.max_response_bytes = '4kB';
SELECT ade_refresh_account(:acme);
RESET ade.max_response_bytes;

-- the backend is healthy afterwards, and no connection was left open
SELECT count(*) AS fds FROM pg_ls_dir('/proc/' || pg_backend_pid() || '/fd') \gset
\! python3 test/mockctl.py fault '{"path": "/account", "hang_seconds": 20, "times": 5}'
SET statement_timeout = '200ms';
SELECT ade_refresh_account(:acme);
SELECT ade_refresh_account(:acme);
SELECT ade_refresh_account(:acme);
SELECT ade_refresh_account(:acme);
SELECT ade_refresh_account(:acme);
RESET statement_timeout;
SELECT ade_refresh_account(:acme);
SELECT count(*) <= :fds + 1 AS no_leaked_descriptors FROM pg_ls_dir('/proc/' || pg_backend_pid() || '/fd');
SELECT org_name FROM abm_tokens;
