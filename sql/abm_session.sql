-- abm_session: every request carries the headers of the spec; the ABM
-- session is obtained once and reused across calls and across backends;
-- it is renewed on a 401 and when an answer carries a new
-- X-ADM-Auth-Session; ABM's error codes are classified (T_C_NOT_SIGNED,
-- token_rejected, signature_invalid) into clear errors.
SET client_min_messages = warning;
SET ade.allow_drop = on;
DROP EXTENSION IF EXISTS ade CASCADE;
RESET ade.allow_drop;
CREATE EXTENSION ade;
RESET client_min_messages;
\! python3 test/mockctl.py reset
\! test/add-token.sh 'Acme' CK_acme
SELECT id AS acme FROM abm_tokens WHERE consumer_key = 'CK_acme' \gset

-- headers of the spec, on every request (the mock refuses a request without them)
\! python3 test/mockctl.py log | python3 -c 'import json,sys; r=json.load(sys.stdin)["requests"]; print(sorted({(x["method"], x["path"], x["user_agent"], x["status"]) for x in r}))'

-- the session of ade_add_token is reused: no new GET /session
\! python3 test/mockctl.py log-clear
SELECT ade_refresh_account(:acme);
SELECT ade_refresh_account(:acme);
\c
SELECT ade_refresh_account(:acme);
\! python3 test/mockctl.py count 'GET /session'
\! python3 test/mockctl.py count 'GET /account'

-- ABM expires the session: a 401, a new session, the call succeeds
\! python3 test/mockctl.py tokstate CK_acme --expire-sessions
SELECT ade_refresh_account(:acme);
\! python3 test/mockctl.py count 'GET /session'

-- ABM rotates the session in a response header: the new one is kept and used
\! python3 test/mockctl.py fault '{"path": "/account", "rotate_session": true, "times": 1}'
SELECT ade_refresh_account(:acme);
SELECT ade_refresh_account(:acme);
\c
SELECT ade_refresh_account(:acme);
\! python3 test/mockctl.py count 'GET /session'
-- each GET /account: its status, and whether it sent the same session as the one before
\! python3 test/mockctl.py log --path /account | python3 -c 'import json,sys; r=json.load(sys.stdin)["requests"]; print([(x["status"], "same" if i and x["session"] == r[i-1]["session"] else "new") for i, x in enumerate(r)])'

-- terms and conditions not accepted: on /session and on a call
\! python3 test/mockctl.py tokstate CK_acme --terms-expired true
SELECT ade_refresh_account(:acme);
\! python3 test/mockctl.py tokstate CK_acme --expire-sessions
SELECT ade_refresh_account(:acme);
\! python3 test/mockctl.py tokstate CK_acme --terms-expired false

-- a token that ABM rejects
\! python3 test/mockctl.py tokstate CK_acme --rejected true --expire-sessions
SELECT ade_refresh_account(:acme);
\! python3 test/mockctl.py tokstate CK_acme --rejected false

-- a wrong signature (ABM holds another secret for this key)
\! python3 test/mockctl.py token --org Acme --consumer-key CK_acme --consumer-secret CS_changed_at_apple --access-token "$(python3 -c 'import json,os; print(json.load(open(os.environ["ADE_TEST_TMP"] + "/CK_acme.json"))["access_token"])')" --access-secret "$(python3 -c 'import json,os; print(json.load(open(os.environ["ADE_TEST_TMP"] + "/CK_acme.json"))["access_secret"])')" >/dev/null
\! python3 test/mockctl.py tokstate CK_acme --expire-sessions
SELECT ade_refresh_account(:acme);
\! python3 test/mockctl.py log --path /session | python3 -c 'import json,sys; r=json.load(sys.stdin)["requests"]; print("last GET /session:", r[-1]["status"], r[-1]["authorization"])'

-- no secret is in any message above: this file's expected output has none,
-- and the test below checks the stored error text too
SELECT ade_refresh_account(12345);
