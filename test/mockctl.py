#!/usr/bin/python3
"""mockctl.py - command-line client of test/mock_abm.py's control API.

Test tool of the `ade` PostgreSQL extension, for tests written in psql
(`\\! test/mockctl.py ...`) or shell. Python 3.11 standard library only; it
talks to loopback addresses only and ignores proxy settings.

The mock's base URL comes from --url or the environment variable ADE_MOCK_URL
(e.g. http://127.0.0.1:54321). Commands print nothing unless said; on failure
they print a message on stderr and exit non-zero.

    mockctl.py reset
    mockctl.py call METHOD PATH [JSON | @FILE]      prints the answer JSON
    mockctl.py token [--org NAME] [--consumer-key CK] [--consumer-secret S]
                     [--access-token T] [--access-secret S]
                     [--access-token-expiry ISO] [--admin-id A] [--server-name N]
                     [--server-uuid U] [--org-email E] [--org-phone P]
                     [--org-address A] [--org-type edu|org] [--org-id I]
                     [--org-id-hash H] [--facilitator-id F]
                     [--json OUT.json] [--p7m OUT.p7m --cert CERT.pem]
                     registers a token; writes the 5-field token JSON to
                     OUT.json (printed when neither --json nor --p7m is given)
    mockctl.py p7m --cert CERT.pem --json TOKEN.json --out OUT.p7m
                     the token file as ABM hands it out (S/MIME, AES-128)
    mockctl.py devices CK [--generate N [--prefix P] [--families Mac,iPhone,iPad]
                     [--start K]] [--add-json FILE] [--modify-json FILE]
                     [--delete S1,S2] [--events-json FILE] [--op-date ISO]
    mockctl.py fault JSON_RULE                      append one fault rule
    mockctl.py faults-clear
    mockctl.py latency MS [--jitter MS] [--consumer-key CK]
                     every ABM request (of that token, or all) answered after
                     MS +- jitter milliseconds; latency 0 turns it off
    mockctl.py assign CK S1=FAILED,S2=OMIT,S3=     [--retry-after N]
                     forced PUT /profile/devices answers (empty value clears)
    mockctl.py tokstate CK [--terms-expired true|false] [--rejected true|false]
                     [--expire-sessions] [--expire-cursors]
    mockctl.py state CK [same flags as tokstate]   with flags: tokstate;
                     without: prints GET /_mock/state JSON
    mockctl.py count "POST /devices/sync" [--client-id CID]  prints the integer count
                     (path without query string; a path with an id also
                     counts under its template: "GET /v1/orgDevices/{id}");
                     --client-id: that API account's requests only
    mockctl.py sent                                serials sent in PUT /profile/devices
                     since log-clear, sorted JSON list
    mockctl.py stats                               prints GET /_mock/stats JSON
    mockctl.py log [--path P] [--method M]         prints the request log JSON
    mockctl.py log-clear
    mockctl.py wait-port PORTFILE [--timeout 10] [--https] [--print-url]
                     waits for the port file and for GET /_mock/stats to answer

Apple's School and Business Manager API (test/mock_api.py); ORG is an
org_name: its MDM servers are its tokens' servers plus those api-server adds,
its devices every device its tokens hold plus those api-devices adds:
    mockctl.py api-account --org ORG [--client-id BUSINESSAPI.<uuid>|SCHOOLAPI.<uuid>]
                     [--key-id UUID] [--school] (--pem-out FILE [--pkcs8] |
                     --public-key PEM_FILE)
                     registers an API account; with --pem-out the mock makes
                     an EC P-256 key and FILE gets the private key (SEC1 "EC
                     PRIVATE KEY"; --pkcs8: PKCS#8 bytes under that label);
                     --public-key registers that key instead; prints
                     {"client_id", "key_id"} (the same client id again: a new key)
    mockctl.py api-accounts                        prints the accounts JSON
    mockctl.py api-remove CLIENT_ID                forgets an account (and its tokens)
    mockctl.py api-revoke CLIENT_ID                its access tokens answer 401 from now on
    mockctl.py api-settings [--token-lifetime S] [--activity-polls N]
                     [--activity-seconds S | --activity-by-polls]
                     [--download-seconds S] [--jti-reuse reject|allow]
                     prints the settings (defaults: 3600, 2 polls, 600, reject)
    mockctl.py api-server --org ORG --name NAME [--type MDM|APPLE_CONFIGURATOR|APPLE_MDM]
                     [--id ID]                     prints {"id", "name"}
    mockctl.py api-devices --org ORG [--generate N [--prefix P] [--start K]
                     [--server NAME|ID | --unassigned] [--family Mac|iPhone|iPad|...[,...]]]
                     [--release S1,S2] [--set-json JSON|@FILE] [--print]
                     generate: serials P%08d from K onto a server (a token's
                     server: into its device-assignment feed) or unassigned
                     (the default); release: out of the organisation;
                     set-json {serial: {attribute: value} | null}: attributes
                     over the made-up ones
    mockctl.py applecare SERIAL (--json JSON|@FILE | --clear)
                     the device's AppleCare coverage: a list of coverage
                     attribute objects ([] = none); --clear: the made-up one
    mockctl.py api-activity --org ORG [--fail S1,S2 | --fail S1=CODE,S2=]
                     [--next-failed N]             a forced per-device failure
                     (empty CODE clears); the next N activities end FAILED
    mockctl.py api-assertions [--client-id CID]    prints the assertions received
    mockctl.py api-state --org ORG                 prints GET /_mock/api/state JSON
    mockctl.py api-stats                           prints per-account counts JSON

CK is a consumer_key (an org_name works too). JSON files for --add-json and
--modify-json hold a list of device records (or one record).
"""

import argparse
import ipaddress
import json
import os
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

TOKEN_FIELDS = ("consumer_key", "consumer_secret", "access_token",
                "access_secret", "access_token_expiry")
ACCOUNT_FLAGS = ("admin_id", "server_name", "server_uuid", "org_email", "org_phone",
                 "org_address", "org_type", "org_id", "org_id_hash", "facilitator_id")


class Fail(Exception):
    pass


def is_loopback(host):
    if host in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url):
    u = urllib.parse.urlsplit(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise Fail("bad mock URL %r" % url)
    if not is_loopback(u.hostname):
        raise Fail("refusing non-loopback mock URL %r" % url)
    return url.rstrip("/")


_OPENER = urllib.request.build_opener(
    urllib.request.ProxyHandler({}),          # never go through a proxy
    urllib.request.HTTPSHandler(context=ssl._create_unverified_context()))


def request(base, method, path, body=None, timeout=30):
    """One control call; returns the decoded JSON answer."""
    url = check_url(base) + path
    data = None
    headers = {}
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method.upper(), headers=headers)
    try:
        with _OPENER.open(req, timeout=timeout) as r:
            raw = r.read()
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            msg = json.loads(raw).get("error", raw.decode("utf-8", "replace"))
        except Exception:
            msg = raw.decode("utf-8", "replace")
        raise Fail("%s %s: HTTP %d: %s" % (method.upper(), path, e.code, msg))
    except (urllib.error.URLError, OSError) as e:
        raise Fail("%s %s: %s" % (method.upper(), path, getattr(e, "reason", e)))
    try:
        return json.loads(raw) if raw.strip() else None
    except ValueError:
        raise Fail("%s %s: answer is not JSON" % (method.upper(), path))


def base_url(args):
    url = args.url or os.environ.get("ADE_MOCK_URL")
    if not url:
        raise Fail("no mock URL: set ADE_MOCK_URL or pass --url")
    return url


def dump(obj):
    sys.stdout.write(json.dumps(obj, indent=1, sort_keys=False) + "\n")


def boolarg(v):
    s = str(v).strip().lower()
    if s in ("1", "t", "true", "yes", "on", "y"):
        return True
    if s in ("0", "f", "false", "no", "off", "n"):
        return False
    raise argparse.ArgumentTypeError("not a boolean: %r" % v)


def load_json_file(path):
    try:
        with open(path, "rb") as fh:
            return json.load(fh)
    except (OSError, ValueError) as e:
        raise Fail("cannot read JSON from %s: %s" % (path, e))


def write_atomic(path, data):
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".mockctl.", dir=d)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)         # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def build_p7m(cert, token_json_bytes, out):
    """Encrypt the token JSON the way ABM does: a text/plain MIME entity with
    the JSON between BEGIN/END MESSAGE lines, CMS EnvelopedData (RSA key
    transport, AES-128-CBC, BER streaming), written as S/MIME with the same
    headers and 76-column base64 as the files ABM hands out."""
    import base64
    content = (b"Content-Type: text/plain;charset=UTF-8\r\n"
               b"Content-Transfer-Encoding: 7bit\r\n\r\n"
               b"-----BEGIN MESSAGE-----\n" + token_json_bytes.rstrip(b"\r\n") +
               b"\n-----END MESSAGE-----\n")
    with tempfile.TemporaryDirectory(prefix="mockctl.") as td:
        inp = os.path.join(td, "in.txt")
        der = os.path.join(td, "out.der")
        with open(inp, "wb") as fh:
            fh.write(content)
        # -binary keeps the LF line ends of the body (like Apple's files);
        # -stream gives indefinite-length BER, as in Apple's files.
        cmd = ["openssl", "smime", "-encrypt", "-binary", "-stream", "-aes128",
               "-outform", "DER", "-in", inp, "-out", der, cert]
        p = subprocess.run(cmd, capture_output=True)
        if p.returncode != 0:
            raise Fail("openssl smime -encrypt failed: %s" %
                       p.stderr.decode("utf-8", "replace").strip())
        with open(der, "rb") as fh:
            b64 = base64.b64encode(fh.read())
    lines = [b64[i:i + 76] for i in range(0, len(b64), 76)]
    data = (b'Content-Type: application/pkcs7-mime; name="smime.p7m"; smime-type=enveloped-data\n'
            b"Content-Transfer-Encoding: base64\n"
            b'Content-Disposition: attachment; filename="smime.p7m"\n'
            b"Content-Description: S/MIME Encrypted Message\n\n" + b"\n".join(lines) + b"\n")
    write_atomic(out, data)


def token_json_bytes(tok):
    return json.dumps({k: tok[k] for k in TOKEN_FIELDS}, separators=(",", ":")).encode()


# ---------------------------------------------------------------- commands

def cmd_reset(a):
    request(base_url(a), "POST", "/_mock/reset", {})


def cmd_call(a):
    body = None
    if a.json is not None:
        if a.json.startswith("@"):
            body = load_json_file(a.json[1:])
        else:
            try:
                body = json.loads(a.json)
            except ValueError as e:
                raise Fail("bad JSON argument: %s" % e)
    path = a.path if a.path.startswith("/") else "/" + a.path
    dump(request(base_url(a), a.method, path, body))


def cmd_token(a):
    body = {}
    if a.org:
        body["org_name"] = a.org
    for f in TOKEN_FIELDS + ACCOUNT_FLAGS:
        v = getattr(a, f, None)
        if v is not None:
            body[f] = v
    if a.p7m and not a.cert:
        raise Fail("--p7m needs --cert")
    ans = request(base_url(a), "POST", "/_mock/tokens", body)
    data = token_json_bytes(ans["token"])
    if a.json:
        write_atomic(a.json, data + b"\n")
    if a.p7m:
        build_p7m(a.cert, data, a.p7m)
    if not a.json and not a.p7m:
        sys.stdout.write(data.decode() + "\n")


def cmd_p7m(a):
    try:
        with open(a.json, "rb") as fh:
            data = fh.read()
    except OSError as e:
        raise Fail("cannot read %s: %s" % (a.json, e))
    build_p7m(a.cert, data, a.out)


def _records(path):
    v = load_json_file(path)
    return v if isinstance(v, list) else [v]


def cmd_devices(a):
    body = {"consumer_key": a.ck}
    if a.generate is not None:
        g = {"count": a.generate, "prefix": a.prefix, "start": a.start}
        if a.families:
            g["families"] = [f for f in a.families.split(",") if f]
        body["generate"] = g
    if a.add_json:
        body["add"] = _records(a.add_json)
    if a.modify_json:
        body["modify"] = _records(a.modify_json)
    if a.delete:
        body["delete"] = [s for s in a.delete.split(",") if s]
    if a.drop:
        body["drop"] = [s for s in a.drop.split(",") if s]
    if a.events_json:
        body["events"] = _records(a.events_json)
    if a.op_date:
        body["op_date"] = a.op_date
    if a.no_fill:
        body["fill"] = False
    ans = request(base_url(a), "POST", "/_mock/devices", body)
    if a.print:
        dump(ans)


def cmd_fault(a):
    text = a.rule
    if text.startswith("@"):                # @FILE: the rule is in a file (a large body)
        try:
            with open(text[1:]) as fh:
                text = fh.read()
        except OSError as e:
            raise Fail("cannot read %s: %s" % (text[1:], e))
    try:
        rule = json.loads(text)
    except ValueError as e:
        raise Fail("bad JSON rule: %s" % e)
    if not isinstance(rule, dict):
        raise Fail("a rule is a JSON object")
    request(base_url(a), "POST", "/_mock/faults", {"rules": [rule]})


def cmd_faults_clear(a):
    request(base_url(a), "POST", "/_mock/faults/clear", {})


def cmd_latency(a):
    body = {"ms": a.ms, "jitter_ms": a.jitter}
    if a.consumer_key:
        body["consumer_key"] = a.consumer_key
    request(base_url(a), "POST", "/_mock/latency", body)


def cmd_assign(a):
    resp = {}
    for item in a.responses.split(","):
        if not item:
            continue
        s, sep, v = item.partition("=")
        if not sep:
            raise Fail("expected SERIAL=VALUE, got %r" % item)
        resp[s] = v.upper() or None
    body = {"consumer_key": a.ck, "responses": resp}
    if a.retry_after is not None:
        body["retry_after_seconds"] = a.retry_after
    request(base_url(a), "POST", "/_mock/assign_responses", body)


def _tokstate_body(a):
    body = {"consumer_key": a.ck}
    if a.terms_expired is not None:
        body["terms_expired"] = a.terms_expired
    if a.rejected is not None:
        body["rejected"] = a.rejected
    if a.expire_sessions:
        body["expire_sessions"] = True
    if a.expire_cursors:
        body["expire_cursors"] = True
    if a.forget_profiles:
        body["forget_profiles"] = True
    return body


def cmd_tokstate(a):
    request(base_url(a), "POST", "/_mock/tokens/state", _tokstate_body(a))


def cmd_state(a):
    body = _tokstate_body(a)
    if len(body) > 1:
        request(base_url(a), "POST", "/_mock/tokens/state", body)
    else:
        dump(request(base_url(a), "GET",
                     "/_mock/state?" + urllib.parse.urlencode({"consumer_key": a.ck})))


def cmd_count(a):
    key = " ".join(a.key)
    if a.client_id:
        counts = request(base_url(a), "GET", "/_mock/api/stats").get("counts", {})
        if a.client_id not in counts:
            raise Fail("unknown client id %r" % a.client_id)
        sys.stdout.write("%d\n" % counts[a.client_id].get(key, 0))
        return
    st = request(base_url(a), "GET", "/_mock/stats")
    sys.stdout.write("%d\n" % st.get("counts", {}).get(key, 0))


# ---- Apple's School and Business Manager API

def json_arg(text):
    """A JSON argument, or @FILE holding one."""
    if text.startswith("@"):
        return load_json_file(text[1:])
    try:
        return json.loads(text)
    except ValueError as e:
        raise Fail("bad JSON argument: %s" % e)


def cmd_api_account(a):
    body = {"org": a.org}
    if a.client_id:
        body["client_id"] = a.client_id
    if a.key_id:
        body["key_id"] = a.key_id
    if a.school:
        body["school"] = True
    if bool(a.pem_out) == bool(a.public_key):
        raise Fail("give --pem-out FILE (the mock makes the key) or --public-key PEM_FILE")
    if a.public_key:
        if a.pkcs8:
            raise Fail("--pkcs8 goes with --pem-out")
        try:
            with open(a.public_key) as fh:
                body["public_key_pem"] = fh.read()
        except OSError as e:
            raise Fail("cannot read %s: %s" % (a.public_key, e))
    elif a.pkcs8:
        body["pkcs8"] = True
    ans = request(base_url(a), "POST", "/_mock/api/accounts", body)
    if a.pem_out:
        write_atomic(a.pem_out, ans["private_key_pem"].encode())
    sys.stdout.write(json.dumps({"client_id": ans["client_id"], "key_id": ans["key_id"]}) + "\n")


def cmd_api_accounts(a):
    dump(request(base_url(a), "GET", "/_mock/api/accounts"))


def cmd_api_remove(a):
    request(base_url(a), "POST", "/_mock/api/accounts/remove", {"client_id": a.client_id})


def cmd_api_revoke(a):
    request(base_url(a), "POST", "/_mock/api/revoke", {"client_id": a.client_id})


def cmd_api_settings(a):
    body = {}
    for k in ("token_lifetime", "activity_polls", "activity_seconds", "download_seconds", "jti_reuse",
              "clock_offset"):
        v = getattr(a, k)
        if v is not None:
            body[k] = v
    if a.activity_by_polls:
        body["activity_seconds"] = None
    dump(request(base_url(a), "POST", "/_mock/api/settings", body)["settings"])


def cmd_api_server(a):
    body = {"org": a.org, "name": a.name}
    if a.type:
        body["type"] = a.type
    if a.id:
        body["id"] = a.id
    sys.stdout.write(json.dumps(request(base_url(a), "POST", "/_mock/api/servers", body)) + "\n")


def cmd_api_devices(a):
    body = {"org": a.org}
    if a.generate is not None:
        g = {"count": a.generate, "prefix": a.prefix, "start": a.start}
        if a.family:
            g["families"] = [f for f in a.family.split(",") if f]
        if a.server and a.unassigned:
            raise Fail("--server or --unassigned, not both")
        if a.server:
            g["server"] = a.server
        body["generate"] = g
    elif a.server or a.unassigned or a.family:
        raise Fail("--server, --unassigned and --family go with --generate")
    if a.release:
        body["release"] = [s for s in a.release.split(",") if s]
    if a.set_json:
        body["set"] = json_arg(a.set_json)
    ans = request(base_url(a), "POST", "/_mock/api/devices", body)
    if a.print:
        dump(ans)


def cmd_applecare(a):
    if bool(a.json) == bool(a.clear):
        raise Fail("give --json JSON|@FILE or --clear")
    cov = None if a.clear else json_arg(a.json)
    request(base_url(a), "POST", "/_mock/api/applecare", {"serial": a.serial, "coverage": cov})


def cmd_api_activity(a):
    body = {"org": a.org}
    if a.fail:
        fail = {}
        for item in a.fail.split(","):
            if not item:
                continue
            s, sep, code = item.partition("=")
            fail[s] = (code or None) if sep else "DEVICE_NOT_ELIGIBLE"
        body["fail"] = fail
    if a.next_failed is not None:
        body["next_failed"] = a.next_failed
    request(base_url(a), "POST", "/_mock/api/activity_faults", body)


def cmd_api_assertions(a):
    path = "/_mock/api/assertions"
    if a.client_id:
        path += "?" + urllib.parse.urlencode({"client_id": a.client_id})
    dump(request(base_url(a), "GET", path))


def cmd_api_state(a):
    dump(request(base_url(a), "GET", "/_mock/api/state?" + urllib.parse.urlencode({"org": a.org})))


def cmd_api_stats(a):
    dump(request(base_url(a), "GET", "/_mock/api/stats"))


def cmd_logcount(a):
    """Requests of e.g. "PUT /profile/devices" since the last log-clear."""
    method, _, path = " ".join(a.key).partition(" ")
    q = urllib.parse.urlencode({"method": method, "path": path})
    log = request(base_url(a), "GET", "/_mock/log?" + q)
    sys.stdout.write("%d\n" % len(log.get("requests", [])))


def cmd_sent(a):
    """The serials sent in PUT /profile/devices since the last log-clear, as a
    sorted JSON list (a serial sent twice is there twice)."""
    log = request(base_url(a), "GET", "/_mock/log?" + urllib.parse.urlencode(
        {"method": "PUT", "path": "/profile/devices"}))
    serials = [s for r in log.get("requests", []) if isinstance(r.get("body"), dict)
               for s in r["body"].get("devices") or []]
    sys.stdout.write(json.dumps(sorted(serials)) + "\n")


def cmd_truth(a):
    """What ABM holds now, as ade should have it: {serial: consumer_key} of
    every device of every org."""
    base = base_url(a)
    out = {}
    for t in request(base, "GET", "/_mock/tokens").get("tokens", []):
        ck = t["token"]["consumer_key"]
        st = request(base, "GET", "/_mock/state?" + urllib.parse.urlencode({"consumer_key": ck}))
        for serial in st.get("devices", {}):
            out[serial] = ck
    sys.stdout.write(json.dumps(out, sort_keys=True) + "\n")


def cmd_secrets(a):
    """Every secret ABM gave out: token secrets and session tokens seen in the
    log, the API's access tokens and the client assertions it received (for
    tests that look for leaks), one per line."""
    base = base_url(a)
    seen = set()
    for t in request(base, "GET", "/_mock/tokens").get("tokens", []):
        for k in ("consumer_secret", "access_token", "access_secret"):
            seen.add(t["token"][k])
    for t in request(base, "GET", "/_mock/api/tokens").get("tokens", []):
        seen.add(t["access_token"])
    for r in request(base, "GET", "/_mock/api/assertions").get("assertions", []):
        if r.get("assertion"):
            seen.add(r["assertion"])
    for r in request(base, "GET", "/_mock/log").get("requests", []):
        if r.get("session"):
            seen.add(r["session"])
    sys.stdout.write("".join(x + "\n" for x in sorted(seen) if x))


def cmd_stats(a):
    dump(request(base_url(a), "GET", "/_mock/stats"))


def cmd_log(a):
    q = {}
    if a.path:
        q["path"] = a.path
    if a.method:
        q["method"] = a.method
    path = "/_mock/log" + ("?" + urllib.parse.urlencode(q) if q else "")
    dump(request(base_url(a), "GET", path))


def cmd_log_clear(a):
    request(base_url(a), "POST", "/_mock/log/clear", {})


def cmd_wait_port(a):
    deadline = time.monotonic() + a.timeout
    last = "port file %s not there" % a.portfile
    while True:
        try:
            with open(a.portfile) as fh:
                port = int(fh.read().strip())
            url = "%s://127.0.0.1:%d" % ("https" if a.https else "http", port)
            request(url, "GET", "/_mock/stats", timeout=2)
            if a.print_url:
                sys.stdout.write(url + "\n")
            return
        except (OSError, ValueError) as e:
            last = str(e)
        except Fail as e:
            last = str(e)
        if time.monotonic() >= deadline:
            raise Fail("mock not up after %gs: %s" % (a.timeout, last))
        time.sleep(0.05)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Control the ABM mock (test/mock_abm.py).")
    ap.add_argument("--url", help="mock base URL (default: $ADE_MOCK_URL)")
    sub = ap.add_subparsers(dest="cmd", required=True)

    sub.add_parser("reset").set_defaults(fn=cmd_reset)

    p = sub.add_parser("call", help="raw control call, prints the answer")
    p.add_argument("method")
    p.add_argument("path")
    p.add_argument("json", nargs="?")
    p.set_defaults(fn=cmd_call)

    p = sub.add_parser("token", help="register a token")
    p.add_argument("--org", help="org_name")
    for f in TOKEN_FIELDS + ACCOUNT_FLAGS:
        p.add_argument("--" + f.replace("_", "-"), dest=f)
    p.add_argument("--json", help="write the 5-field token JSON here")
    p.add_argument("--p7m", help="also write the encrypted token file here (needs --cert)")
    p.add_argument("--cert", help="MDM server certificate for --p7m")
    p.set_defaults(fn=cmd_token)

    p = sub.add_parser("p7m", help="encrypt a token JSON into a .p7m")
    p.add_argument("--cert", required=True)
    p.add_argument("--json", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_p7m)

    p = sub.add_parser("devices", help="change an org's devices")
    p.add_argument("ck")
    p.add_argument("--generate", type=int)
    p.add_argument("--prefix", default="S")
    p.add_argument("--families")
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--add-json")
    p.add_argument("--modify-json")
    p.add_argument("--delete")
    p.add_argument("--drop", help="serials gone with no deleted event (a release or move made in ABM)")
    p.add_argument("--events-json", help="raw event records appended verbatim")
    p.add_argument("--op-date")
    p.add_argument("--no-fill", action="store_true", help="store added records as given")
    p.add_argument("--print", action="store_true", help="print the answer")
    p.set_defaults(fn=cmd_devices)

    p = sub.add_parser("fault", help="append one fault rule")
    p.add_argument("rule", help="a JSON rule, or @FILE holding one")
    p.set_defaults(fn=cmd_fault)
    sub.add_parser("faults-clear").set_defaults(fn=cmd_faults_clear)
    p = sub.add_parser("latency", help="a round-trip time for every ABM request")
    p.add_argument("ms", type=float)
    p.add_argument("--jitter", type=float, default=0.0)
    p.add_argument("--consumer-key")
    p.set_defaults(fn=cmd_latency)

    p = sub.add_parser("assign", help="force PUT /profile/devices answers")
    p.add_argument("ck")
    p.add_argument("responses", help="S1=FAILED,S2=THROTTLED,S3=OMIT,S4= (empty clears)")
    p.add_argument("--retry-after", type=int)
    p.set_defaults(fn=cmd_assign)

    for name, fn in (("tokstate", cmd_tokstate), ("state", cmd_state)):
        p = sub.add_parser(name)
        p.add_argument("ck")
        p.add_argument("--terms-expired", type=boolarg)
        p.add_argument("--rejected", type=boolarg)
        p.add_argument("--expire-sessions", action="store_true")
        p.add_argument("--expire-cursors", action="store_true")
        p.add_argument("--forget-profiles", action="store_true")
        p.set_defaults(fn=fn)

    p = sub.add_parser("count", help='print the count of e.g. "POST /devices/sync"')
    p.add_argument("key", nargs="+")
    p.add_argument("--client-id", help="that API account's requests only")
    p.set_defaults(fn=cmd_count)

    # Apple's School and Business Manager API
    p = sub.add_parser("api-account", help="register an API account (prints client_id, key_id)")
    p.add_argument("--org", required=True, help="org_name: the organisation")
    p.add_argument("--client-id")
    p.add_argument("--key-id")
    p.add_argument("--school", action="store_true", help="a SCHOOLAPI. client id (scope school.api)")
    p.add_argument("--pem-out", help="the mock makes the key pair; the private key PEM goes here")
    p.add_argument("--pkcs8", action="store_true", help="PKCS#8 bytes under the EC PRIVATE KEY label")
    p.add_argument("--public-key", help="register this public key PEM instead")
    p.set_defaults(fn=cmd_api_account)
    sub.add_parser("api-accounts").set_defaults(fn=cmd_api_accounts)
    for name, fn in (("api-remove", cmd_api_remove), ("api-revoke", cmd_api_revoke)):
        p = sub.add_parser(name)
        p.add_argument("client_id")
        p.set_defaults(fn=fn)
    p = sub.add_parser("api-settings", help="token lifetime, when activities finish, ...")
    p.add_argument("--token-lifetime", type=int)
    p.add_argument("--activity-polls", type=int)
    p.add_argument("--activity-seconds", type=float)
    p.add_argument("--activity-by-polls", action="store_true", help="activities finish by polls again")
    p.add_argument("--download-seconds", type=int)
    p.add_argument("--jti-reuse", choices=("reject", "allow"))
    p.add_argument("--clock-offset", type=float,
                   help="seconds the token endpoint's clock runs ahead (an assertion it finds expired)")
    p.set_defaults(fn=cmd_api_settings)
    p = sub.add_parser("api-server", help="add an MDM server (not a token) to an organisation")
    p.add_argument("--org", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--type", choices=("MDM", "APPLE_CONFIGURATOR", "APPLE_MDM"))
    p.add_argument("--id")
    p.set_defaults(fn=cmd_api_server)
    p = sub.add_parser("api-devices", help="devices of an organisation no token holds; releases")
    p.add_argument("--org", required=True)
    p.add_argument("--generate", type=int)
    p.add_argument("--prefix", default="A")
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--server", help="onto this server (name or id)")
    p.add_argument("--unassigned", action="store_true", help="on no server (the default)")
    p.add_argument("--family", help="Mac, iPhone, iPad, AppleTV, Watch, Vision (a list: in turn)")
    p.add_argument("--release", help="serials released from the organisation")
    p.add_argument("--set-json", help="{serial: {attribute: value} | null}, or @FILE")
    p.add_argument("--print", action="store_true")
    p.set_defaults(fn=cmd_api_devices)
    p = sub.add_parser("applecare", help="set a device's AppleCare coverage")
    p.add_argument("serial")
    p.add_argument("--json", help="a list of coverage attribute objects, or @FILE")
    p.add_argument("--clear", action="store_true", help="back to the made-up coverage")
    p.set_defaults(fn=cmd_applecare)
    p = sub.add_parser("api-activity", help="force device activity failures")
    p.add_argument("--org", required=True)
    p.add_argument("--fail", help="S1,S2 or S1=CODE,S2= (empty clears)")
    p.add_argument("--next-failed", type=int, help="the next N activities end FAILED")
    p.set_defaults(fn=cmd_api_activity)
    p = sub.add_parser("api-assertions")
    p.add_argument("--client-id")
    p.set_defaults(fn=cmd_api_assertions)
    p = sub.add_parser("api-state")
    p.add_argument("--org", required=True)
    p.set_defaults(fn=cmd_api_state)
    sub.add_parser("api-stats").set_defaults(fn=cmd_api_stats)
    p = sub.add_parser("truth", help="print {serial: consumer_key} of every device ABM holds")
    p.set_defaults(fn=cmd_truth)
    p = sub.add_parser("secrets", help="print every token secret, session token, API access token "
                       "and client assertion ABM gave out or got")
    p.set_defaults(fn=cmd_secrets)
    p = sub.add_parser("logcount", help='print how many e.g. "PUT /profile/devices" the log holds (since log-clear)')
    p.add_argument("key", nargs="+")
    p.set_defaults(fn=cmd_logcount)
    sub.add_parser("stats").set_defaults(fn=cmd_stats)
    sub.add_parser("sent", help="print the serials sent in PUT /profile/devices since log-clear, "
                   "as a sorted JSON list").set_defaults(fn=cmd_sent)

    p = sub.add_parser("log")
    p.add_argument("--path")
    p.add_argument("--method")
    p.set_defaults(fn=cmd_log)
    sub.add_parser("log-clear").set_defaults(fn=cmd_log_clear)

    p = sub.add_parser("wait-port")
    p.add_argument("portfile")
    p.add_argument("--timeout", type=float, default=10)
    p.add_argument("--https", action="store_true")
    p.add_argument("--print-url", action="store_true")
    p.set_defaults(fn=cmd_wait_port)

    a = ap.parse_args(argv)
    try:
        a.fn(a)
    except Fail as e:
        sys.stderr.write("mockctl: %s\n" % e)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
