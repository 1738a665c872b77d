#!/usr/bin/python3
"""test/input_fuzz.py: a bounded fuzz run of what ade takes from outside (issue 13).

Two kinds of untrusted input, mutated at random from valid ones:

- token files: a valid .p7m for a token at the mock ABM (DER, and the
  S/MIME text Apple sends), with bits flipped, cut, grown, spliced, zeroed,
  replaced by random bytes, or made huge, into ade_add_token();
- ABM's answers: for GET /session, GET /account, POST /server/devices,
  POST /devices/sync, POST /profile and PUT /profile/devices, the mock
  (fault rules with body_b64 and headers) answers with mutated, truncated,
  deeply nested, oversized (past ade.max_response_bytes), mis-encoded or
  mistyped JSON, any status, and odd Retry-After and session headers, into
  ade_sync() (and ade_refresh_account()).

Each case must end in a clean result: ade_add_token() succeeds or raises an
error that is not an internal one (SQLSTATE class XX or 58); ade_sync()
returns its rows (a failure is recorded on the token, never raised); the
backend is alive after every case.  At the end: the server log has no
backend terminated by a signal, no PANIC and no failed assertion, and the
backend's peak memory stayed bounded (ade.max_response_bytes is set to
1 MB, and an answer of 3 MB was among the cases).

    input_fuzz.py                   a bounded run with a fixed seed (make test)
    input_fuzz.py --seed N --cases M
    input_fuzz.py --minutes M       random seeds until the time is up (make fuzz)

Environment: PGHOST, PGPORT, PGUSER, ADE_TEST_DB, ADE_MOCK_URL,
ADE_SERVER_LOG (the server log, to read at the end).  The last line is
"N passed, N failed" (N cases).
"""

import argparse
import base64
import json
import os
import random
import re
import sys
import tempfile
import time

import psycopg2

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mockctl  # noqa: E402
from testdb import connect, q  # noqa: E402

MOCK = os.environ.get("ADE_MOCK_URL", "")
CK = "CK_fuzz"
PEAK_LIMIT_KB = 400 * 1024          # the backend's VmHWM after every case
ROUTES = [("GET", "/session"), ("GET", "/account"), ("POST", "/server/devices"),
          ("POST", "/devices/sync"), ("POST", "/profile"), ("PUT", "/profile/devices")]
STATUSES = [200] * 6 + [400, 401, 403, 404, 429, 500, 503]


def ctl(method, path, body=None):
    return mockctl.request(MOCK, method, path, body)


# ---- mutations

def mutate_bytes(r, data):
    data = bytearray(data)
    kind = r.randrange(8)
    if kind == 0 and data:                  # flip bits
        for _ in range(r.randint(1, 8)):
            i = r.randrange(len(data))
            data[i] ^= 1 << r.randrange(8)
    elif kind == 1:                         # cut
        data = data[:r.randrange(len(data) + 1)]
    elif kind == 2:                         # insert random bytes
        i = r.randrange(len(data) + 1)
        data[i:i] = os.urandom(r.randint(1, 64)) if r.random() < 0.5 else bytes(r.getrandbits(8) for _ in range(r.randint(1, 64)))
    elif kind == 3 and data:                # zero or 0xff a span
        i = r.randrange(len(data))
        n = r.randint(1, 64)
        data[i:i + n] = bytes([r.choice((0, 0xFF))]) * len(data[i:i + n])
    elif kind == 4 and data:                # duplicate a span
        i = r.randrange(len(data))
        data[i:i] = data[i:i + r.randint(1, 256)]
    elif kind == 5:                         # random bytes
        data = bytearray(r.getrandbits(8) for _ in range(r.randint(0, 4096)))
    elif kind == 6 and len(data) > 2:       # swap two spans
        i, j = sorted(r.sample(range(len(data)), 2))
        data = data[:i] + data[j:] + data[i:j]
    else:                                   # one byte set to a random value
        if data:
            data[r.randrange(len(data))] = r.getrandbits(8)
    return bytes(data)


def page(r, n):
    devs = [{"serial_number": "FZ%06d" % r.randrange(10 ** 6), "model": "Mac mini",
             "device_family": r.choice(["Mac", "iPhone", "iPad", "AppleTV", None, 7]),
             "op_type": r.choice(["added", "modified", "deleted"]),
             "op_date": "2026-11-%02dT10:00:00Z" % r.randint(1, 28)} for _ in range(n)]
    return {"devices": devs, "cursor": "c%d" % r.randrange(10 ** 6), "more_to_follow": False,
            "fetched_until": "2026-11-29T10:00:00Z"}


def answer_body(r, method, path):
    """a body for this route: mutated valid JSON, or structural junk"""
    valid = {
        "/session": {"auth_session_token": "S%d" % r.randrange(10 ** 9)},
        "/account": {"server_name": "fuzz", "server_uuid": "U", "org_name": "Fuzz Org",
                     "admin_id": "a@example.com", "org_email": "e@example.com", "org_phone": "1",
                     "org_address": "x", "org_id": "1", "org_id_hash": "h", "org_type": "edu",
                     "facilitator_id": "f", "urls": []},
        "/server/devices": page(r, r.randint(0, 20)),
        "/devices/sync": page(r, r.randint(0, 20)),
        "/profile": {"profile_uuid": "P%d" % r.randrange(10 ** 6), "devices": {}},
        "/profile/devices": {"profile_uuid": "P1", "devices": {"FZ000001": "SUCCESS"},
                             "retry_after_seconds": r.choice([1, "2", -5, 10 ** 30, "x", None])},
    }[path]
    kind = r.randrange(12)
    text = json.dumps(valid)
    if kind <= 3:
        return mutate_bytes(r, text.encode())
    if kind == 4:
        n = r.choice([100, 1000, 100000])
        return ("[" * n + "]" * n).encode() if r.random() < 0.5 else ('{"a":' * n + "1" + "}" * n).encode()
    if kind == 5:                           # mistyped members
        v = dict(valid)
        for k in list(v)[:3]:
            v[k] = r.choice([None, 1, "s", [], {}, [1, None, "x"], 1e308, True])
        if "devices" in v and r.random() < 0.5:
            v["devices"] = [r.choice([None, 1, "s", [], {"serial_number": 5}, {"serial_number": None}])
                            for _ in range(r.randint(1, 10))]
        return json.dumps(v).encode()
    if kind == 6:                           # encodings
        return r.choice([b"\xff\xfe" + text.encode("utf-16-le"), text.encode()[:-3] + b"\xc3",
                         text.replace('"', '"\\u0000', 2).encode(), text.replace('"', '"\\ud800', 2).encode(),
                         text.replace("Mac", "M\xe9c").encode("latin-1", "replace")])
    if kind == 7:                           # numbers and strings past limits
        return r.choice([b'{"devices": [], "cursor": "' + b"c" * (2 << 20) + b'", "more_to_follow": false}',
                         b'{"retry_after_seconds": 1e999999, "devices": {}}',
                         b'{"devices": [{"serial_number": "' + b"S" * 300000 + b'"}], "more_to_follow": false}'])
    if kind == 8:
        return r.choice([b"", b"null", b"[]", b"{}", b"0", b"\"x\"", b"{" * 5, b"<html>no</html>"])
    if kind == 9:                           # duplicate keys
        return text.replace("{", '{"devices": 1, "cursor": null, ', 1).encode()
    return text.encode()                    # valid, with odd status or headers


def answer_headers(r):
    h = {}
    if r.random() < 0.3:
        h["Retry-After"] = r.choice(["0", "-1", "99999999999999999999", "Wed, 21 Oct 2015 07:28:00 GMT", "x", "1.5", " 3"])
    if r.random() < 0.2:
        h["X-ADM-Auth-Session"] = r.choice(["", "a b", "x" * 20000, "\x01\x02", "ok-session"])
    if r.random() < 0.1:
        h["Content-Type"] = r.choice(["text/html", "application/json; charset=latin1", ""])
    return h


# ---- the run

class Run:
    def __init__(self, seed):
        self.r = random.Random(seed)
        self.seed = seed
        self.passed = 0
        self.hit = 0                    # answer cases whose mutated answer was served
        self.failures = []
        self.conn = connect()
        self.pid = q(self.conn, "SELECT pg_backend_pid()")[0][0]
        d = tempfile.mkdtemp(prefix="ade-input-fuzz.")
        cert = os.path.join(d, "cert.pem")
        with open(cert, "w") as fh:
            fh.write(q(self.conn, "SELECT ade_public_key()")[0][0])
        reg = ctl("POST", "/_mock/tokens", {"consumer_key": CK, "org_name": "Fuzz Org"})
        ctl("POST", "/_mock/devices", {"consumer_key": CK, "generate": {"count": 30, "prefix": "FZ"}})
        out = os.path.join(d, "t.p7m")
        mockctl.build_p7m(cert, mockctl.token_json_bytes(reg["token"]), out)
        self.p7m = open(out, "rb").read()
        q(self.conn, "SET ade.max_response_bytes = 1048576")
        q(self.conn, "SET ade.max_retries = 0")
        q(self.conn, "SET ade.http_timeout = '5s'")
        q(self.conn, "SET ade.enroll_url = 'https://mdm.example.com/enroll'")
        q(self.conn, "SET statement_timeout = '60s'")
        q(self.conn, "SELECT ade_remove_token(id) FROM abm_tokens WHERE consumer_key = %s", (CK,))
        self.token = q(self.conn, "SELECT ade_add_token(%s)", (psycopg2.Binary(self.p7m),))[0][0]

    def fail(self, what):
        self.failures.append(what)

    def alive(self, what):
        try:
            q(self.conn, "SELECT 1")
            return True
        except psycopg2.Error as e:
            self.fail("%s: the backend is gone (%s)" % (what, str(e).strip()))
            self.conn = connect()
            for s in ("SET ade.max_response_bytes = 1048576", "SET ade.max_retries = 0",
                      "SET ade.http_timeout = '5s'", "SET ade.enroll_url = 'https://mdm.example.com/enroll'",
                      "SET statement_timeout = '60s'"):
                q(self.conn, s)
            self.pid = q(self.conn, "SELECT pg_backend_pid()")[0][0]
            return False

    def p7m_case(self, i):
        r = self.r
        base = self.p7m
        if r.random() < 0.3:                # the S/MIME text form Apple sends
            base = (b"MIME-Version: 1.0\r\nContent-Disposition: attachment; filename=\"smime.p7m\"\r\n"
                    b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=\"smime.p7m\"\r\n"
                    b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(base))
        data = os.urandom(3 << 20) if r.random() < 0.02 else mutate_bytes(r, base)
        what = "p7m case %d (%d bytes)" % (i, len(data))
        try:
            q(self.conn, "SELECT ade_add_token(%s)", (psycopg2.Binary(data),))
        except psycopg2.Error as e:
            if e.pgcode is None or e.pgcode[:2] in ("XX", "58"):
                self.fail("%s: not a clean error: %s %s" % (what, e.pgcode, str(e).strip()[:300]))
        if self.alive(what):
            self.passed += 1

    def answer_case(self, i):
        r = self.r
        method, path = r.choice(ROUTES)
        big = r.random() < 0.03
        body = b'{"devices": [' + b'{"serial_number": "X"},' * ((3 << 20) // 24) + b'{}]}' if big else answer_body(r, method, path)
        rule = {"method": method, "path": path, "status": r.choice(STATUSES),
                "body_b64": base64.b64encode(body).decode(), "headers": answer_headers(r),
                "times": r.choice([1, 1, 2, -1])}
        what = "answer case %d: %s %s, status %d, %d bytes" % (i, method, path, rule["status"], len(body))
        ctl("POST", "/_mock/faults/clear")
        # what an earlier case left (ABM's pause after a 429, a flag) must not
        # keep this one from being asked
        q(self.conn, "UPDATE abm_tokens SET assign_not_before = NULL, token_invalid = false, "
                     "terms_expired = false WHERE id = %s", (self.token,))
        if path == "/session" or r.random() < 0.2:
            ctl("POST", "/_mock/tokens/state", {"consumer_key": CK, "expire_sessions": True})
        if path == "/server/devices" or r.random() < 0.1:
            ctl("POST", "/_mock/tokens/state", {"consumer_key": CK, "expire_cursors": True})
        if path in ("/profile", "/profile/devices"):
            q(self.conn, "DELETE FROM ade_profile_definitions WHERE token_id = %s", (self.token,))
            q(self.conn, "UPDATE host_dep_assignments SET needs_assign = true, retry_at = NULL, profile_uuid = NULL "
                         "WHERE abm_token_id = %s AND deleted_at IS NULL", (self.token,))
        ctl("POST", "/_mock/faults", rule)
        try:
            if path == "/account" and r.random() < 0.5:
                try:
                    q(self.conn, "SELECT ade_refresh_account(%s)", (self.token,))
                except psycopg2.Error as e:
                    if e.pgcode is None or e.pgcode[:2] in ("XX", "58"):
                        self.fail("%s: not a clean error: %s %s" % (what, e.pgcode, str(e).strip()[:300]))
            else:
                rows = q(self.conn, "SELECT token_id, error FROM ade_sync()")
                if big and path in ("/server/devices", "/devices/sync"):
                    errs = [e for _, e in rows if e]
                    if errs and not any("max_response_bytes" in e for e in errs) and rule["status"] == 200:
                        self.fail("%s: an answer past ade.max_response_bytes failed otherwise: %r" % (what, errs))
        except psycopg2.Error as e:
            self.fail("%s: ade_sync() raised %s %s" % (what, e.pgcode, str(e).strip()[:300]))
        finally:
            rules = ctl("GET", "/_mock/faults").get("rules") or []
            if rules and rules[0].get("hits"):
                self.hit += 1
            ctl("POST", "/_mock/faults/clear")
        if not self.alive(what):
            return
        peak = self.peak_kb()
        if peak is not None and peak > PEAK_LIMIT_KB:
            self.fail("%s: the backend's peak memory is %d kB" % (what, peak))
            return
        self.passed += 1

    def peak_kb(self):
        try:
            with open("/proc/%d/status" % self.pid) as fh:
                m = re.search(r"VmHWM:\s+(\d+) kB", fh.read())
                return int(m.group(1)) if m else None
        except OSError:
            return None


def server_log_trouble(since):
    path = os.environ.get("ADE_SERVER_LOG")
    if not path or not os.path.exists(path):
        return []
    with open(path, "rb") as fh:
        fh.seek(since)
        text = fh.read().decode("utf-8", "replace")
    return [l for l in text.splitlines()
            if re.search(r"terminated by signal|PANIC|TRAP:|was terminated|server process .* exited", l)][:5]


def one_batch(seed, cases):
    log = os.environ.get("ADE_SERVER_LOG")
    since = os.path.getsize(log) if log and os.path.exists(log) else 0
    run = Run(seed)
    for i in range(cases // 3):
        run.p7m_case(i)
    for i in range(cases - cases // 3):
        run.answer_case(i)
    for line in server_log_trouble(since):
        run.fail("server log: " + line)
    answers = cases - cases // 3
    print("   %d of %d mutated answers were served; the backend's peak memory: %s kB"
          % (run.hit, answers, run.peak_kb()), flush=True)
    if run.hit < answers // 2:
        run.fail("only %d of %d mutated answers were served: the run tests little" % (run.hit, answers))
    q(run.conn, "SELECT ade_remove_token(%s)", (run.token,))
    run.conn.close()
    return run.passed, run.failures


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--cases", type=int, default=150)
    ap.add_argument("--minutes", type=float, help="random seeds until this time is up")
    a = ap.parse_args()
    if not MOCK:
        sys.exit("ADE_MOCK_URL is not set")
    passed, failed = 0, 0
    end = time.time() + 60 * a.minutes if a.minutes else None
    seed = a.seed if a.seed is not None else (20261129 if end is None else random.SystemRandom().randrange(2 ** 31))
    while True:
        print("== input fuzz: seed %d, %d cases (replay: test/input_fuzz.py --seed %d --cases %d)"
              % (seed, a.cases, seed, a.cases), flush=True)
        p, fails = one_batch(seed, a.cases)
        passed += p
        failed += len(fails)
        for f in fails:
            print("FAIL " + f, flush=True)
        if end is None or time.time() >= end or fails:
            break
        seed = random.SystemRandom().randrange(2 ** 31)
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
