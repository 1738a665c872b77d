#!/usr/bin/python3
"""mock_api_selftest.py - the self-test of the mock's Apple School and Business
Manager API (test/mock_api.py, test/mock_api_state.py; issue 24).

Starts test/mock_abm.py on a free loopback port (as test/lib.sh does), drives
it with test/mockctl.py, signs its own client assertions with Debian's
python3-cryptography and proves: a good assertion gets an access token (a
SEC1 and a PKCS#8 key, form body or query string, /token and /v2/token); a
wrong key, a wrong kid, a wrong aud, an expired exp, exp - iat of 180 days, a
reused jti, a DER signature, the wrong scope each get 400 invalid_client, and
every assertion is recorded; 401 without, with an unknown, a revoked and an
expired access token; 406 for a wrong Accept; paging of 2,500 devices with
limit 1000 is 3 pages, no duplicate, none missing, with a device added and
one released between pages; every attribute abm-api.md lists; servers, a
device's server, AppleCare; activities finish after polls (or seconds) and
move devices in and out of a token's device-assignment feed (seen by a real
/devices/sync); a partly failed activity and its CSV; a forced FAILED one;
validation errors; a 429 with Retry-After, a 503 on the activity POST and a
hold pass through the fault rules; counts; 100,000 devices generate and page
fast.  Prints "N passed, N failed"; exits non-zero on a failure.
"""

import base64
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
PY = sys.executable or "/usr/bin/python3"

try:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
except ImportError:
    print("mock_api_selftest: needs python3-cryptography (apt-get install python3-cryptography)")
    print("0 passed, 1 failed")
    sys.exit(1)

from mock_state import oauth_enc, oauth_signature  # noqa: E402 (the device-assignment side's OAuth)

AUD = "https://account.apple.com/auth/oauth2/v2/token"
ATYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ATTRIBUTES = ("serialNumber", "addedToOrgDateTime", "updatedDateTime", "deviceModel", "productFamily",
              "productType", "deviceCapacity", "partNumber", "orderNumber", "orderDateTime", "color",
              "status", "imei", "meid", "eid", "wifiMacAddress", "bluetoothMacAddress",
              "ethernetMacAddress", "purchaseSourceType", "isMdmMigrationCapable",
              "mdmMigrationStatus", "mdmMigrationDeadlineDateTime")

passed = failed = 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print("ok     %s" % name)
    else:
        failed += 1
        print("FAILED %s%s" % (name, (": %s" % detail) if detail else ""))
    return ok


# ---------------------------------------------------------------- plumbing

class Mock:
    def __init__(self, work):
        self.port_file = os.path.join(work, "mock.port")
        self.log = open(os.path.join(work, "mock.log"), "w")
        self.proc = subprocess.Popen([PY, os.path.join(HERE, "mock_abm.py"), "--port", "0",
                                      "--port-file", self.port_file, "--quiet"],
                                     stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.url = self.ctl("wait-port", self.port_file, "--timeout", "15", "--print-url", url=False).strip()
        self.port = int(self.url.rsplit(":", 1)[1])

    def ctl(self, *args, url=True, check=True):
        cmd = [PY, os.path.join(HERE, "mockctl.py")] + (["--url", self.url] if url else []) + list(args)
        p = subprocess.run(cmd, capture_output=True, text=True)
        if check and p.returncode != 0:
            raise RuntimeError("mockctl %s: %s" % (" ".join(args), p.stderr.strip()))
        return p.stdout

    def ctlj(self, *args):
        return json.loads(self.ctl(*args))

    def http(self, method, path, body=None, headers=None, timeout=30):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            if isinstance(body, (dict, list)):
                body = json.dumps(body).encode()
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            data = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, data
        finally:
            c.close()

    def api(self, method, path, token, body=None, accept="application/json", extra=None):
        h = {}
        if token is not None:
            h["Authorization"] = "Bearer " + token
        if accept is not None:
            h["Accept"] = accept
        if body is not None:
            h["Content-Type"] = "application/json"
        h.update(extra or {})
        st, hd, data = self.http(method, path, body, h)
        try:
            js = json.loads(data) if data else None
        except ValueError:
            js = None
        return st, hd, js, data

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def sign(key, kid, claims, alg="ES256", der=False, header=None):
    h = {"alg": alg, "kid": kid, "typ": "JWT"}
    h.update(header or {})
    si = b64u(json.dumps(h).encode()) + "." + b64u(json.dumps(claims).encode())
    sig = key.sign(si.encode(), ec.ECDSA(hashes.SHA256()))
    if not der:
        r, s = decode_dss_signature(sig)
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return si + "." + b64u(sig)


def claims(cid, **kw):
    now = int(time.time())
    c = {"sub": cid, "iss": cid, "aud": AUD, "iat": now, "exp": now + 1200, "jti": str(uuid.uuid4())}
    c.update(kw)
    return {k: v for k, v in c.items() if v is not None}


def token_request(m, cid, assertion, scope="business.api", path="/auth/oauth2/token", in_query=False):
    f = {"grant_type": "client_credentials", "client_id": cid, "client_assertion_type": ATYPE,
         "client_assertion": assertion, "scope": scope}
    enc = urllib.parse.urlencode(f)
    if in_query:
        st, hd, data = m.http("POST", path + "?" + enc)
    else:
        st, hd, data = m.http("POST", path, enc.encode(),
                              {"Content-Type": "application/x-www-form-urlencoded"})
    try:
        return st, json.loads(data)
    except ValueError:
        return st, {"body": data.decode("utf-8", "replace")}


def load_key(path):
    with open(path, "rb") as fh:
        return serialization.load_pem_private_key(fh.read(), None)


class Dep:
    """A device-assignment client of one token (OAuth 1.0a session, fetch, sync)."""
    HDR = {"User-Agent": "pg-ade/selftest", "X-Server-Protocol-Version": "10",
           "Content-Type": "application/json;charset=UTF8"}

    def __init__(self, m, tok):
        self.m, self.tok = m, tok
        params = [("oauth_consumer_key", tok["consumer_key"]), ("oauth_token", tok["access_token"]),
                  ("oauth_signature_method", "HMAC-SHA1"), ("oauth_timestamp", str(int(time.time()))),
                  ("oauth_nonce", uuid.uuid4().hex), ("oauth_version", "1.0")]
        sig = oauth_signature("GET", "http://127.0.0.1:%d/session" % m.port, params,
                              tok["consumer_secret"], tok["access_secret"])
        auth = "OAuth " + ", ".join('%s="%s"' % (k, oauth_enc(v)) for k, v in params + [("oauth_signature", sig)])
        h = dict(self.HDR, Authorization=auth)
        st, _, data = m.http("GET", "/session", headers=h)
        self.session = json.loads(data)["auth_session_token"]
        st, _, data = self.post("/server/devices", {"limit": 1000})
        self.cursor = data["cursor"]
        self.fetched = [d["serial_number"] for d in data["devices"]]

    def post(self, path, body):
        st, hd, data = self.m.http("POST", path, json.dumps(body).encode(),
                                   dict(self.HDR, **{"X-ADM-Auth-Session": self.session}))
        return st, hd, json.loads(data)

    def sync(self):
        """{serial: op_type} of the events since the last call."""
        st, _, data = self.post("/devices/sync", {"cursor": self.cursor})
        self.cursor = data["cursor"]
        return {d["serial_number"]: d["op_type"] for d in data["devices"]}


def all_pages(m, token, path, limit=1000, between=None):
    """Follow nextCursor; between(page_no) runs after each page but the last."""
    pages, cursor = [], None
    while True:
        q = {"limit": limit}
        if cursor:
            q["cursor"] = cursor
        st, hd, js, _ = m.api("GET", path + "?" + urllib.parse.urlencode(q), token)
        if st != 200:
            raise RuntimeError("%s: HTTP %d %s" % (path, st, js))
        pages.append(js)
        cursor = js["meta"]["paging"].get("nextCursor")
        if not cursor:
            return pages
        if between:
            between(len(pages))


# ---------------------------------------------------------------- the checks

def run(m, work):
    ctl, ctlj = m.ctl, m.ctlj
    # an organisation with a token (its server, three devices) and an API account
    tok = json.loads(ctl("token", "--org", "Self Org", "--consumer-key", "CK_self",
                         "--server-name", "Self ADE", "--server-uuid", "6f6c6c61-0000-4000-8000-00000000abcd"))
    ctl("devices", "CK_self", "--generate", "3", "--prefix", "TK")
    acc = ctlj("api-account", "--org", "Self Org", "--pem-out", os.path.join(work, "sec1.pem"))
    cid, kid = acc["client_id"], acc["key_id"]
    key = load_key(os.path.join(work, "sec1.pem"))
    with open(os.path.join(work, "sec1.pem")) as fh:
        check("--pem-out writes a SEC1 EC PRIVATE KEY", fh.read().startswith("-----BEGIN EC PRIVATE KEY-----"))
    check("client id and key id", cid.startswith("BUSINESSAPI.") and uuid.UUID(kid) is not None, acc)

    # ---- the token endpoint
    st, js = token_request(m, cid, sign(key, kid, claims(cid)))
    check("a good assertion gets a Bearer token", st == 200 and js.get("token_type") == "Bearer"
          and js.get("expires_in") == 3600 and js.get("scope") == "business.api" and js.get("access_token"), js)
    token = js.get("access_token")
    st, js = token_request(m, cid, sign(key, kid, claims(cid)), path="/auth/oauth2/v2/token", in_query=True)
    check("/v2/token with the fields in the query string", st == 200 and js.get("access_token"), js)

    acc8 = ctlj("api-account", "--org", "Self Org", "--pem-out", os.path.join(work, "pkcs8.pem"), "--pkcs8")
    with open(os.path.join(work, "pkcs8.pem")) as fh:
        pem8 = fh.read()
    der8 = base64.b64decode("".join(pem8.strip().splitlines()[1:-1]))
    ec_oid = b"\x06\x07\x2a\x86\x48\xce\x3d\x02\x01"        # id-ecPublicKey: a PKCS#8 AlgorithmIdentifier
    check("--pkcs8: PKCS#8 bytes under the EC PRIVATE KEY label",
          pem8.startswith("-----BEGIN EC PRIVATE KEY-----") and der8[:3] == b"\x30\x81\x87"
          and der8[3:6] == b"\x02\x01\x00" and ec_oid in der8[:40])
    key8 = load_key(os.path.join(work, "pkcs8.pem"))
    st, js = token_request(m, acc8["client_id"], sign(key8, acc8["key_id"], claims(acc8["client_id"])))
    check("the PKCS#8 key's assertion gets a token", st == 200, js)

    school = ctlj("api-account", "--org", "Self Org", "--school", "--pem-out", os.path.join(work, "school.pem"))
    skey = load_key(os.path.join(work, "school.pem"))
    st, js = token_request(m, school["client_id"], sign(skey, school["key_id"], claims(school["client_id"])),
                           scope="school.api")
    check("a SCHOOLAPI. account gets scope school.api", st == 200 and js.get("scope") == "school.api"
          and school["client_id"].startswith("SCHOOLAPI."), js)

    # an account registered with a public key the test made
    own = ec.generate_private_key(ec.SECP256R1())
    pub = os.path.join(work, "own.pub.pem")
    with open(pub, "wb") as fh:
        fh.write(own.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo))
    owna = ctlj("api-account", "--org", "Self Org", "--public-key", pub,
                "--client-id", "BUSINESSAPI.11111111-2222-4333-8444-555555555555", "--key-id", "kid-own")
    st, js = token_request(m, owna["client_id"], sign(own, "kid-own", claims(owna["client_id"])))
    check("an account registered with a given public key", st == 200
          and owna == {"client_id": "BUSINESSAPI.11111111-2222-4333-8444-555555555555", "key_id": "kid-own"}, js)

    other = ec.generate_private_key(ec.SECP256R1())
    now = int(time.time())
    reused = claims(cid)
    token_request(m, cid, sign(key, kid, reused))
    bad = [
        ("wrong key", sign(other, kid, claims(cid)), "signature"),
        ("wrong kid", sign(key, "not-the-kid", claims(cid)), "kid"),
        ("wrong aud", sign(key, kid, claims(cid, aud="https://account.apple.com/auth/oauth2/token")), "aud"),
        ("expired exp", sign(key, kid, claims(cid, iat=now - 3600, exp=now - 10)), "exp"),
        ("exp - iat of 180 days", sign(key, kid, claims(cid, iat=now, exp=now + 180 * 86400)), "180 days"),
        ("a reused jti", sign(key, kid, reused), "jti"),
        ("no jti", sign(key, kid, claims(cid, jti=None)), "jti"),
        ("sub not the client id", sign(key, kid, claims(cid, sub="someone")), "sub"),
        ("a DER signature", sign(key, kid, claims(cid), der=True), "64-byte"),
        ("alg ES384 in the header", sign(key, kid, claims(cid), alg="ES384"), "alg"),
    ]
    for name, jwt, word in bad:
        st, js = token_request(m, cid, jwt)
        check("400 invalid_client: %s" % name, st == 400 and js.get("error") == "invalid_client"
              and word in (js.get("error_description") or ""), (st, js))
    st, js = token_request(m, cid, sign(key, kid, claims(cid)), scope="school.api")
    check("400 invalid_client: the other scope", st == 400 and js.get("error") == "invalid_client", js)
    st, js = token_request(m, "BUSINESSAPI.00000000-0000-4000-8000-000000000000",
                           sign(key, kid, claims("BUSINESSAPI.00000000-0000-4000-8000-000000000000")))
    check("400 invalid_client: an unknown client id", st == 400 and js.get("error") == "invalid_client", js)
    ctl("api-settings", "--jti-reuse", "allow")
    st, js = token_request(m, cid, sign(key, kid, reused))
    check("jti_reuse allow: a cached assertion is taken again", st == 200, js)
    ctl("api-settings", "--jti-reuse", "reject")

    recs = ctlj("api-assertions", "--client-id", cid)["assertions"]
    oks = [r["ok"] for r in recs]
    check("every assertion is recorded, with its verdict",
          len(recs) == 1 + 1 + 1 + len(bad) + 1 + 1 and oks.count(True) == 4
          and all(r["error"] for r in recs if not r["ok"]) and recs[0]["header"]["kid"] == kid
          and recs[0]["claims"]["aud"] == AUD and recs[0]["signature_bytes"] == 64,
          [(r["ok"], r["error"]) for r in recs])

    # ---- Bearer and Accept
    st, hd, js, _ = m.api("GET", "/v1/mdmServers", None)
    check("401 without a token", st == 401 and js["errors"][0]["code"] == "UNAUTHORIZED"
          and js["errors"][0]["status"] == "401", js)
    st, hd, js, _ = m.api("GET", "/v1/mdmServers", "nonsense")
    check("401 with an unknown token", st == 401 and js["errors"][0]["code"] == "UNAUTHORIZED", js)
    st, hd, js, _ = m.api("GET", "/v1/mdmServers", token)
    check("200 with the token", st == 200 and hd.get("content-type", "").startswith("application/json"), (st, js))
    ctl("api-revoke", cid)
    st, hd, js, _ = m.api("GET", "/v1/mdmServers", token)
    check("401 with a revoked token", st == 401 and "revoked" in js["errors"][0].get("detail", ""), js)
    ctl("api-settings", "--token-lifetime", "1")
    st, js = token_request(m, cid, sign(key, kid, claims(cid)))
    short = js["access_token"]
    check("the token lifetime is settable", js.get("expires_in") == 1, js)
    time.sleep(1.2)
    st, hd, js, _ = m.api("GET", "/v1/mdmServers", short)
    check("401 with an expired token", st == 401 and "expired" in js["errors"][0].get("detail", ""), js)
    ctl("api-settings", "--token-lifetime", "3600")
    token = token_request(m, cid, sign(key, kid, claims(cid)))[1]["access_token"]
    st, hd, js, _ = m.api("GET", "/v1/mdmServers", token, accept="text/html")
    check("406 for Accept: text/html", st == 406 and js["errors"][0]["status"] == "406", (st, js))
    st1 = m.api("GET", "/v1/mdmServers", token, accept=None)[0]
    st2 = m.api("GET", "/v1/mdmServers", token, accept="*/*")[0]
    st3 = m.api("GET", "/v1/mdmServers", token, accept="application/json; charset=utf-8")[0]
    check("no Accept, */* and application/json;charset are fine", (st1, st2, st3) == (200, 200, 200),
          (st1, st2, st3))
    st, hd, js, _ = m.api("GET", "/v1/orgDevices?bogus=1", token)
    check("400 PARAMETER_ERROR.INVALID for an unknown parameter",
          st == 400 and js["errors"][0]["code"] == "PARAMETER_ERROR.INVALID", js)

    # ---- servers
    other_srv = ctlj("api-server", "--org", "Self Org", "--name", "Other MDM")["id"]
    tok_srv = "6F6C6C61000040008000" + "00000000ABCD"
    st, hd, js, _ = m.api("GET", "/v1/mdmServers?limit=1000", token)
    srv = {d["id"]: d["attributes"] for d in js["data"]}
    check("mdmServers: the token's server (its server_uuid) and the added one",
          srv.get(tok_srv, {}).get("serverName") == "Self ADE" and srv.get(other_srv, {}).get("serverName")
          == "Other MDM" and len(srv) == 2 and js["meta"]["paging"]["limit"] == 1000, js)
    st, hd, js, _ = m.api("GET", "/v1/mdmServers/%s/relationships/devices" % tok_srv, token)
    check("a token's server holds the token's devices",
          [d["id"] for d in js["data"]] == ["TK00000000", "TK00000001", "TK00000002"]
          and all(d["type"] == "orgDevices" for d in js["data"]), js)

    # ---- paging 2,500 devices (an organisation of their own)
    pa = ctlj("api-account", "--org", "Paging Org", "--pem-out", os.path.join(work, "paging.pem"))
    pkey = load_key(os.path.join(work, "paging.pem"))
    ptok = token_request(m, pa["client_id"], sign(pkey, pa["key_id"], claims(pa["client_id"])))[1]["access_token"]
    ctl("api-devices", "--org", "Paging Org", "--generate", "2500", "--prefix", "P", "--family", "Mac,iPhone,iPad")
    st, hd, js, _ = m.api("GET", "/v1/orgDevices", ptok)
    check("default limit 100, total 2500, links.next", len(js["data"]) == 100 and js["meta"]["paging"]["limit"] == 100
          and js["meta"]["paging"]["total"] == 2500 and "cursor=" in js["links"].get("next", ""), js["meta"])
    nxt = urllib.parse.urlsplit(js["links"]["next"])
    st, hd, js2, _ = m.api("GET", nxt.path + "?" + nxt.query, ptok)
    check("links.next gives the next page", st == 200 and js2["data"][0]["id"] == "P00000100", js2.get("meta"))
    st, hd, js, _ = m.api("GET", "/v1/orgDevices?limit=1001", ptok)
    check("limit 1001: 400 PARAMETER_ERROR", st == 400 and js["errors"][0]["code"].startswith("PARAMETER_ERROR")
          and js["errors"][0]["source"] == {"parameter": "limit"}, js)
    st, hd, js, _ = m.api("GET", "/v1/orgDevices?cursor=garbage", ptok)
    check("a bad cursor: 400", st == 400 and js["errors"][0]["source"] == {"parameter": "cursor"}, js)

    def between(n):
        if n == 1:      # one added after the cursor, one not yet served released
            ctl("api-devices", "--org", "Paging Org", "--generate", "1", "--prefix", "P", "--start", "9999999")
            ctl("api-devices", "--org", "Paging Org", "--release", "P00002200")
    pages = all_pages(m, ptok, "/v1/orgDevices", 1000, between)
    ids = [d["id"] for p in pages for d in p["data"]]
    want = ["P%08d" % i for i in range(2500) if i != 2200] + ["P09999999"]
    check("2,500 devices at limit 1000: 3 pages, no duplicate, none missing (one added, one released between)",
          len(pages) == 3 and len(ids) == len(set(ids)) and sorted(ids) == want
          and "nextCursor" not in pages[-1]["meta"]["paging"] and "next" not in pages[-1]["links"],
          (len(pages), len(ids), len(set(ids)), set(want) ^ set(ids)))
    devs = [d for p in pages for d in p["data"]]
    missing = [a for a in ATTRIBUTES if not all(a in d["attributes"] for d in devs)]
    eth = {type(d["attributes"]["ethernetMacAddress"]).__name__ for d in devs
           if d["attributes"]["productFamily"] == "Mac"}
    check("every attribute abm-api.md lists, on every device", not missing
          and all(("purchaseSourceId" in d["attributes"]) != ("purchaseSourceUid" in d["attributes"]) for d in devs)
          and all(d["type"] == "orgDevices" and d["id"] == d["attributes"]["serialNumber"] for d in devs)
          and not any("releasedFromOrgDateTime" in d["attributes"] for d in devs), missing)
    check("ethernetMacAddress a string on some Macs, an array on others", eth == {"str", "list"}, eth)
    check("an unknown attribute on some devices, purchaseSourceUid on some",
          0 < sum("futureAttribute" in d["attributes"] for d in devs) < len(devs)
          and 0 < sum("purchaseSourceUid" in d["attributes"] for d in devs) < len(devs))
    check("imei and meid are arrays", all(isinstance(d["attributes"]["imei"], list)
                                          and isinstance(d["attributes"]["meid"], list) for d in devs))
    st, hd, js, _ = m.api("GET", "/v1/orgDevices?limit=5&fields%5BorgDevices%5D=serialNumber,status", ptok)
    check("fields[orgDevices] narrows the attributes",
          st == 200 and all(set(d["attributes"]) == {"serialNumber", "status"} for d in js["data"]), js)

    # ---- one device, released, unknown
    st, hd, js, _ = m.api("GET", "/v1/orgDevices/P00000007", ptok)
    check("GET one device: releasedFromOrgDateTime null", st == 200
          and js["data"]["attributes"].get("releasedFromOrgDateTime", "absent") is None, js)
    st, hd, js, _ = m.api("GET", "/v1/orgDevices/P00002200", ptok)
    check("GET a released device: releasedFromOrgDateTime set",
          st == 200 and (js["data"]["attributes"].get("releasedFromOrgDateTime") or "").endswith("Z"), js)
    st, hd, js, _ = m.api("GET", "/v1/orgDevices/NOPE", ptok)
    check("GET an unknown device: 404 NOT_FOUND", st == 404 and js["errors"][0]["code"] == "NOT_FOUND", js)
    st, hd, js, _ = m.api("GET", "/v1/orgDevices/TK00000000", ptok)
    check("another organisation's device is not found", st == 404, js)

    # ---- a device's server
    st, hd, js, _ = m.api("GET", "/v1/orgDevices/TK00000001/relationships/assignedServer", token)
    check("assignedServer of a token's device", js["data"] == {"type": "mdmServers", "id": tok_srv}, js)
    ctl("api-devices", "--org", "Self Org", "--generate", "6", "--prefix", "UN", "--unassigned")
    st, hd, js, _ = m.api("GET", "/v1/orgDevices/UN00000000/relationships/assignedServer", token)
    check("assignedServer of an unassigned device: data null", st == 200 and js["data"] is None, js)
    st, hd, js, _ = m.api("GET", "/v1/orgDevices/UN00000000", token)
    check("an unassigned device's status", js["data"]["attributes"]["status"] == "UNASSIGNED", js)

    # ---- AppleCare
    kinds = {"active90": 0, "inactive": 0, "none": 0}
    for s in ["P%08d" % i for i in range(30)]:
        st, hd, js, _ = m.api("GET", "/v1/orgDevices/%s/appleCareCoverage" % s, ptok)
        items = [d["attributes"] for d in js["data"]]
        if not items:
            kinds["none"] += 1
        elif any(i["status"] == "ACTIVE" for i in items):
            end = [i["endDateTime"] for i in items if i["status"] == "ACTIVE"][0]
            left = (time.mktime(time.strptime(end, "%Y-%m-%dT%H:%M:%SZ")) - time.mktime(time.gmtime())) / 86400
            kinds["active90"] += 0 < left <= 90
        else:
            kinds["inactive"] += 1
    check("AppleCare: some ACTIVE ending within 90 days, some INACTIVE, some none",
          all(v > 0 for v in kinds.values()) and sum(kinds.values()) == 30, kinds)
    st, hd, js, _ = m.api("GET", "/v1/orgDevices/P00000001/appleCareCoverage", ptok)
    again = m.api("GET", "/v1/orgDevices/P00000001/appleCareCoverage", ptok)[2]
    check("AppleCare is the same on every call", js == again)
    ctl("applecare", "P00000001", "--json", json.dumps([{"status": "ACTIVE", "paymentType": "SUBSCRIPTION",
                                                         "description": "AppleCare for Business",
                                                         "agreementNumber": "A1", "startDateTime": None,
                                                         "endDateTime": "2030-01-01T00:00:00Z",
                                                         "contractCancelDateTime": None,
                                                         "isRenewable": True, "isCanceled": False}]))
    st, hd, js, _ = m.api("GET", "/v1/orgDevices/P00000001/appleCareCoverage", ptok)
    check("mockctl applecare sets it", [d["attributes"]["agreementNumber"] for d in js["data"]] == ["A1"]
          and js["data"][0]["type"] == "appleCareCoverage", js)

    # ---- activities: moves seen by the device-assignment feed
    dep = Dep(m, tok)
    check("the token's feed before", sorted(dep.fetched) == ["TK00000000", "TK00000001", "TK00000002"], dep.fetched)

    def activity(atype, server, serials, tk=None):
        body = {"data": {"type": "orgDeviceActivities", "attributes": {"activityType": atype},
                         "relationships": {"mdmServer": {"data": {"type": "mdmServers", "id": server}},
                                           "devices": {"data": [{"type": "orgDevices", "id": s}
                                                                for s in serials]}}}}
        return m.api("POST", "/v1/orgDeviceActivities", tk or token, body)

    st, hd, js, _ = activity("ASSIGN_DEVICES", tok_srv, ["UN00000000", "UN00000001", "TK00000000"])
    aid = js["data"]["id"] if st == 201 else None
    check("POST an ASSIGN_DEVICES activity: 201 IN_PROGRESS SUBMITTED", st == 201
          and js["data"]["type"] == "orgDeviceActivities"
          and js["data"]["attributes"]["status"] == "IN_PROGRESS"
          and js["data"]["attributes"]["subStatus"] == "SUBMITTED", js)
    check("no move before it finishes", dep.sync() == {})
    st, hd, js1, _ = m.api("GET", "/v1/orgDeviceActivities/%s" % aid, token)
    st, hd, js2, _ = m.api("GET", "/v1/orgDeviceActivities/%s" % aid, token)
    a1, a2 = js1["data"]["attributes"], js2["data"]["attributes"]
    check("it finishes on the second poll", a1["status"] == "IN_PROGRESS" and "downloadUrl" not in a1
          and a2["status"] == "COMPLETED" and a2["subStatus"] == "COMPLETED_WITH_SUCCESS"
          and a2.get("completedDateTime") and a2.get("downloadUrl"), (a1, a2))
    check("the assigned devices are added to the token's feed",
          dep.sync() == {"UN00000000": "added", "UN00000001": "added"})
    st, hd, js, _ = m.api("GET", "/v1/orgDevices/UN00000000/relationships/assignedServer", token)
    check("and the API says they are on the token's server", js["data"]["id"] == tok_srv, js)

    st, hd, js, _ = activity("UNASSIGN_DEVICES", tok_srv, ["TK00000002"])
    aid = js["data"]["id"]
    for _ in range(2):
        st, hd, js, _ = m.api("GET", "/v1/orgDeviceActivities/%s" % aid, token)
    check("UNASSIGN_DEVICES: the device leaves the feed (a deleted event)",
          js["data"]["attributes"]["subStatus"] == "COMPLETED_WITH_SUCCESS" and dep.sync() == {"TK00000002": "deleted"})
    st, hd, js, _ = m.api("GET", "/v1/orgDevices/TK00000002", token)
    check("and it is unassigned, still in the organisation", js["data"]["attributes"]["status"] == "UNASSIGNED", js)

    st, hd, js, _ = activity("ASSIGN_DEVICES", other_srv, ["TK00000001"])
    aid = js["data"]["id"]
    for _ in range(2):
        m.api("GET", "/v1/orgDeviceActivities/%s" % aid, token)
    st, hd, js, _ = m.api("GET", "/v1/mdmServers/%s/relationships/devices" % other_srv, token)
    check("moved to a server that is no token: deleted from the feed, on the other server",
          dep.sync() == {"TK00000001": "deleted"} and [d["id"] for d in js["data"]] == ["TK00000001"], js)

    # partly failed: an unknown serial and a forced failure
    ctl("api-activity", "--org", "Self Org", "--fail", "UN00000003=DEVICE_LOCKED")
    st, hd, js, _ = activity("ASSIGN_DEVICES", tok_srv, ["UN00000002", "NOPE0001", "UN00000003"])
    aid = js["data"]["id"]
    for _ in range(2):
        st, hd, js, _ = m.api("GET", "/v1/orgDeviceActivities/%s" % aid, token)
    a = js["data"]["attributes"]
    u = urllib.parse.urlsplit(a.get("downloadUrl", ""))
    st, hd, csv = m.http("GET", u.path + "?" + u.query)
    rows = [r.split(",") for r in csv.decode().strip().splitlines()]
    check("a partly failed activity: COMPLETED + COMPLETED_WITH_ERROR",
          a["status"] == "COMPLETED" and a["subStatus"] == "COMPLETED_WITH_ERROR", a)
    check("its downloadUrl is a CSV of per-device results",
          st == 200 and hd.get("content-type", "").startswith("text/csv")
          and rows[0] == ["serialNumber", "status", "errorCode", "errorMessage"]
          and {r[0]: (r[1], r[2]) for r in rows[1:]} == {"UN00000002": ("SUCCESS", ""),
                                                          "NOPE0001": ("FAILED", "NOT_FOUND"),
                                                          "UN00000003": ("FAILED", "DEVICE_LOCKED")}, rows)
    check("only the good device moved", dep.sync() == {"UN00000002": "added"})
    ctl("api-activity", "--org", "Self Org", "--fail", "UN00000003=")
    st, hd, _ = m.http("GET", u.path + "?expires=%d" % (time.time() - 5))
    check("an expired downloadUrl: 403", st == 403)

    ctl("api-activity", "--org", "Self Org", "--next-failed", "1")
    st, hd, js, _ = activity("ASSIGN_DEVICES", tok_srv, ["UN00000004"])
    aid = js["data"]["id"]
    for _ in range(2):
        st, hd, js, _ = m.api("GET", "/v1/orgDeviceActivities/%s" % aid, token)
    check("a forced FAILED activity: nothing moves", js["data"]["attributes"]["status"] == "FAILED"
          and dep.sync() == {}, js)

    ctl("api-settings", "--activity-seconds", "0.3")
    st, hd, js, _ = activity("ASSIGN_DEVICES", tok_srv, ["UN00000005"])
    aid = js["data"]["id"]
    time.sleep(0.5)
    check("activity_seconds: the move is there without a poll", dep.sync() == {"UN00000005": "added"})
    st, hd, js, _ = m.api("GET", "/v1/orgDeviceActivities/%s" % aid, token)
    check("and the first poll finds it COMPLETED", js["data"]["attributes"]["status"] == "COMPLETED", js)
    ctl("api-settings", "--activity-by-polls")

    # validation
    st, hd, js, _ = activity("SHRED_DEVICES", tok_srv, ["UN00000004"])
    check("an unknown activityType: 409 ENTITY_ERROR.ATTRIBUTE.INVALID",
          st == 409 and js["errors"][0]["code"] == "ENTITY_ERROR.ATTRIBUTE.INVALID", js)
    st, hd, js, _ = activity("ASSIGN_DEVICES", "0000", ["UN00000004"])
    check("an unknown server: 404 NOT_FOUND", st == 404 and js["errors"][0]["code"] == "NOT_FOUND", js)
    st, hd, js, _ = activity("ASSIGN_DEVICES", tok_srv, [])
    check("no devices: 400 PARAMETER_ERROR.REQUIRED",
          st == 400 and js["errors"][0]["code"] == "PARAMETER_ERROR.REQUIRED", js)
    st, hd, js, _ = m.api("GET", "/v1/orgDeviceActivities/%s" % uuid.uuid4(), token)
    check("an unknown activity: 404", st == 404, js)

    st, hd, js, _ = activity("ASSIGN_DEVICES", tok_srv, ["NOPE0002"])
    aid = js["data"]["id"]
    for _ in range(2):
        st, hd, js, _ = m.api("GET", "/v1/orgDeviceActivities/%s" % aid, token)
    check("an activity of one unknown serial: COMPLETED + COMPLETED_WITH_ERROR",
          (js["data"]["attributes"]["status"], js["data"]["attributes"]["subStatus"])
          == ("COMPLETED", "COMPLETED_WITH_ERROR"), js)

    # devices generated onto a token's server (by its name) join its feed
    ctl("api-devices", "--org", "Self Org", "--generate", "2", "--prefix", "GT", "--server", "Self ADE",
        "--family", "iPad")
    st, hd, js, _ = m.api("GET", "/v1/orgDevices/GT00000001", token)
    check("api-devices --server <a token's server name>: into its feed, iPads",
          dep.sync() == {"GT00000000": "added", "GT00000001": "added"}
          and js["data"]["attributes"]["productFamily"] == "iPad"
          and js["data"]["attributes"]["status"] == "ASSIGNED", js)
    ctl("api-devices", "--org", "Self Org", "--set-json", json.dumps({"GT00000001": {"color": "PINK",
                                                                                  "newThing": 1}}))
    st, hd, js, _ = m.api("GET", "/v1/orgDevices/GT00000001", token)
    check("--set-json sets attributes", js["data"]["attributes"]["color"] == "PINK"
          and js["data"]["attributes"]["newThing"] == 1, js)

    # ---- the fault rules
    ctl("fault", json.dumps({"path": "/v1/orgDevices", "status": 429, "headers": {"Retry-After": "7"},
                             "body": {"errors": [{"status": "429", "code": "RATE_LIMIT_EXCEEDED",
                                                  "title": "Too many requests"}]}}))
    st, hd, js, _ = m.api("GET", "/v1/orgDevices", token)
    st2 = m.api("GET", "/v1/orgDevices", token)[0]
    check("a 429 fault with Retry-After passes through, once", st == 429 and hd.get("retry-after") == "7"
          and js["errors"][0]["code"] == "RATE_LIMIT_EXCEEDED" and st2 == 200, (st, hd, js, st2))
    ctl("fault", json.dumps({"method": "POST", "path": "/v1/orgDeviceActivities", "status": 503,
                             "body": "Service Unavailable"}))
    before = len(ctlj("api-state", "--org", "Self Org")["activities"])
    st, hd, js, _ = activity("ASSIGN_DEVICES", tok_srv, ["UN00000004"])
    after = len(ctlj("api-state", "--org", "Self Org")["activities"])
    check("a 503 on the activity POST (no activity made)", st == 503 and before == after, (st, before, after))
    ctl("fault", json.dumps({"path": "/auth/oauth2/token", "status": 500, "client_id": pa["client_id"]}))
    st_other = token_request(m, cid, sign(key, kid, claims(cid)))[0]
    st_pa = token_request(m, pa["client_id"], sign(pkey, pa["key_id"], claims(pa["client_id"])))[0]
    check("a rule's client_id picks one account's requests", (st_other, st_pa) == (200, 500), (st_other, st_pa))
    ctl("fault", json.dumps({"path": "/v1/mdmServers", "hold": "h1"}))
    res = {}
    th = threading.Thread(target=lambda: res.update(st=m.api("GET", "/v1/mdmServers", token)[0]))
    th.start()
    held = {}
    for _ in range(100):
        held = json.loads(ctl("call", "GET", "/_mock/held"))["held"]
        if held.get("h1"):
            break
        time.sleep(0.05)
    ctl("call", "POST", "/_mock/release", '{"name": "h1"}')
    th.join(10)
    check("a hold holds an API request until released", held.get("h1") == 1 and res.get("st") == 200, (held, res))

    # ---- counts and the log
    n = int(ctl("count", "GET /v1/orgDevices"))
    n_cid = int(ctl("count", "GET /v1/orgDevices", "--client-id", cid))
    n_tmpl = int(ctl("count", "GET /v1/orgDevices/{id}/appleCareCoverage", "--client-id", pa["client_id"]))
    n_tok = int(ctl("count", "POST /auth/oauth2/token", "--client-id", cid))
    check("counts by method and path, per account, by template", n >= 6 and n_cid == 3 and n_tmpl == 33
          and n_tok >= 10, (n, n_cid, n_tmpl, n_tok))
    log = json.loads(ctl("log", "--path", "/v1/orgDeviceActivities"))["requests"]
    check("API requests are in the request log, with their client id",
          log and all(r["client_id"] == cid for r in log if r["status"] == 201), log[:1])

    secrets = ctl("secrets").split()
    check("mockctl secrets lists the API's access tokens and assertions (for leak tests)",
          token in secrets and recs[0]["assertion"] in secrets)

    # ---- the device-assignment side is as it was
    st, hd, data = m.http("GET", "/account")
    check("device-assignment calls still need their headers", st == 400 and data == b"MISSING_HEADER", data)

    # ---- 100,000 devices
    big = ctlj("api-account", "--org", "Big Org", "--pem-out", os.path.join(work, "big.pem"))
    bkey = load_key(os.path.join(work, "big.pem"))
    btok = token_request(m, big["client_id"], sign(bkey, big["key_id"], claims(big["client_id"])))[1]["access_token"]
    t0 = time.monotonic()
    ctl("api-devices", "--org", "Big Org", "--generate", "100000", "--prefix", "B")
    t_gen = time.monotonic() - t0
    t0 = time.monotonic()
    pages = all_pages(m, btok, "/v1/orgDevices", 1000)
    t_page = time.monotonic() - t0
    n = sum(len(p["data"]) for p in pages)
    print("# 100,000 devices: generated in %.1f s, 100 pages of 1000 in %.1f s" % (t_gen, t_page))
    check("100,000 devices generate in a few seconds and page fast", n == 100000 and len(pages) == 100
          and t_gen < 10 and t_page < 60, (n, len(pages), t_gen, t_page))

    ctl("reset")
    check("reset forgets the API too", json.loads(ctl("api-accounts"))["accounts"] == []
          and m.api("GET", "/v1/mdmServers", btok)[0] == 401)


def main():
    work = tempfile.mkdtemp(prefix="mock_api_selftest.")
    m = None
    try:
        m = Mock(work)
        run(m, work)
    except Exception as e:
        import traceback
        traceback.print_exc()
        check("the self-test ran to its end", False, repr(e))
    finally:
        if m is not None:
            m.stop()
            if failed:
                with open(os.path.join(work, "mock.log")) as fh:
                    tail = fh.read()[-3000:]
                if tail.strip():
                    print("---- mock log (tail) ----\n" + tail)
        shutil.rmtree(work, ignore_errors=True)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
