"""mock_state.py - the state of test/mock_abm.py, Apple's device-assignment
web service faked in memory: the organisations (tokens, accounts, devices
and their event log, profiles, cursors), the fault rules, the request log,
and the helpers they need (OAuth 1.0a, cursors, clock).  mock_abm.py answers
HTTP (Apple's calls and the /_mock/ control API) over one State; this file
holds no HTTP.  Python standard library only."""

import base64
import datetime
import hashlib
import hmac
import ipaddress
import json
import re
import secrets
import threading
import time
import urllib.parse
import uuid

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
JSON_TYPE = "application/json;charset=UTF8"
TEXT_TYPE = "text/plain;charset=UTF8"

ACCOUNT_FIELDS = ("org_name", "admin_id", "server_name", "server_uuid",
                  "org_email", "org_phone", "org_address", "org_type",
                  "org_id", "org_id_hash", "facilitator_id", "urls")
TOKEN_FIELDS = ("consumer_key", "consumer_secret", "access_token",
                "access_secret", "access_token_expiry")
ASSIGN_VALUES = ("SUCCESS", "FAILED", "THROTTLED", "NOT_ACCESSIBLE", "OMIT",
                 # the answers of POST /device/activationlock only
                 "ORG_NOT_SUPPORTED", "DEVICE_ALREADY_LOCKED")

FAMILY_OS = {"Mac": "OSX", "iPhone": "iOS", "iPad": "iOS", "iPod": "iOS",
             "AppleTV": "tvOS", "Vision": "visionOS"}
FAMILY_MODELS = {
    "Mac": [("MacBook Pro 14-inch", "MBP 14.2 SPG/M3 PRO/18GB/512GB"),
            ("MacBook Air 13-inch", "MBA 13.6 MDN/M2/8GB/256GB"),
            ("iMac 24-inch", "IMAC 24 BLU/M3/8GB/256GB"),
            ("Mac mini", "MAC MINI/M2/8GB/256GB"),
            ("MacBook Pro 16-inch", "MBP 16.2 SLV/M3 MAX/36GB/1TB"),
            ("Mac Studio", "MAC STUDIO/M2 MAX/32GB/512GB")],
    "iPhone": [("iPhone 15", "IPHONE 15 BLACK 128GB-USA"),
               ("iPhone 15 Pro", "IPHONE 15 PRO NATURAL 256GB-USA"),
               ("iPhone 14", "IPHONE 14 MIDNIGHT 128GB-USA"),
               ("iPhone SE", "IPHONE SE STARLIGHT 64GB-USA")],
    "iPad": [("iPad Pro 11-inch", "IPAD PRO 11 WI-FI 256GB SPACE GRAY"),
             ("iPad Air", "IPAD AIR WI-FI 64GB BLUE"),
             ("iPad (10th generation)", "IPAD 10.9 WI-FI 64GB SILVER"),
             ("iPad mini", "IPAD MINI WI-FI 64GB PURPLE")],
    "iPod": [("iPod touch (7th generation)", "IPOD TOUCH 32GB SPACE GRAY")],
    "AppleTV": [("Apple TV 4K", "APPLE TV 4K WI-FI 64GB")],
    "Vision": [("Apple Vision Pro", "APPLE VISION PRO 256GB")],
}
COLORS = ["SPACE GRAY", "SILVER", "MIDNIGHT", "STARLIGHT", "BLUE", "BLACK"]

FIXTURE = {  # /work/shared/fixtures/apple-test-token/README.md
    "consumer_key": "CK_75b2eb55cec9641e869a7d2c88b4bf1f7ffee504716571d191306385"
                    "b8647ead9a4239ad6a2095ea0197feb46ce61399",
    "consumer_secret": "CS_810bb5ab05e53becb3bfbe40b3608a0c9039c457",
    "access_token": "AT_O8474885631Oe8ddece11c1a70077b340e281a2c4e2c4924a54cO1737111741803",
    "access_secret": "AS_97b944021a19633782a36c2a85038a46d6acaa06",
    "url": "https://mdmenrollment.apple.com/session",
    "timestamp": "1700000000",
    "nonce": "4572616e48616d6d65724c61686176",
    "signature": "kFeXBjGUEQxcj2UNfkKmB2C/lDc=",
}


# ---------------------------------------------------------------- helpers

def iso(ts=None):
    """ISO 8601 UTC with a Z, whole seconds (Apple's format)."""
    if ts is None:
        ts = time.time()
    return datetime.datetime.fromtimestamp(int(ts), datetime.timezone.utc) \
        .strftime("%Y-%m-%dT%H:%M:%SZ")


def oauth_enc(s):
    """RFC 5849 section 3.6 percent-encoding (unreserved: ALPHA DIGIT - . _ ~)."""
    return urllib.parse.quote(str(s).encode("utf-8"), safe="-._~")


def oauth_signature(method, base_url, params, consumer_secret, access_secret):
    """base64 HMAC-SHA1 signature of an OAuth 1.0a request (RFC 5849 3.4).

    params: list of (name, value) pairs, already decoded, without realm and
    oauth_signature."""
    pairs = sorted((oauth_enc(k), oauth_enc(v)) for k, v in params)
    norm = "&".join("%s=%s" % kv for kv in pairs)
    base = "&".join((method.upper(), oauth_enc(base_url), oauth_enc(norm)))
    key = oauth_enc(consumer_secret) + "&" + oauth_enc(access_secret)
    digest = hmac.new(key.encode("utf-8"), base.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


_AUTH_PARAM = re.compile(
    r'\s*([A-Za-z0-9_.\-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*(?:,|$)')


def parse_oauth_header(value):
    """Parse 'OAuth k="v", ...' into an ordered list of decoded (k, v); None if not OAuth."""
    if not value:
        return None
    value = value.strip()
    if value[:6].lower() != "oauth ":
        return None
    rest = value[6:]
    out = []
    pos = 0
    while pos < len(rest):
        m = _AUTH_PARAM.match(rest, pos)
        if not m or m.end() == pos:
            break
        raw = m.group(2) if m.group(2) is not None else m.group(3)
        raw = re.sub(r"\\(.)", r"\1", raw)
        out.append((urllib.parse.unquote(m.group(1)), urllib.parse.unquote(raw)))
        pos = m.end()
    return out


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def encode_cursor(org_id, kind, last, seq, gen, fetch_id=0):
    raw = json.dumps({"o": org_id, "t": kind, "l": last, "q": seq, "g": gen, "f": fetch_id},
                     separators=(",", ":"), sort_keys=True).encode("utf-8")
    return b64url(raw)


def decode_cursor(cursor):
    """-> dict with o, t, l, q, g or None when it does not decode."""
    if not isinstance(cursor, str) or not cursor or len(cursor) > 4096:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        c = json.loads(raw.decode("utf-8"))
    except Exception:
        return None
    if not isinstance(c, dict):
        return None
    if not (isinstance(c.get("o"), str) and c.get("t") in ("fetch", "sync")
            and isinstance(c.get("l"), str) and isinstance(c.get("q"), int)
            and isinstance(c.get("g"), int)):
        return None
    return c


def st_now(st):
    """ABM's "now": the real time, or the time a test set with
    POST /_mock/clock (one clock for op_dates, echoes and fetched_until)."""
    return st.vnow or iso()


def is_loopback(host):
    if host in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ControlError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


# ---------------------------------------------------------------- state

class Org:
    def __init__(self, consumer_key):
        self.consumer_key = consumer_key
        self.id = secrets.token_hex(6)          # goes into cursors
        self.token = {}
        self.account = {}
        self.terms_expired = False
        self.rejected = False
        self.devices = {}                       # serial -> record (never mutated)
        self._sorted = None                     # cached sorted serials
        self.event_seqs = []                    # parallel to events
        self.events = []                        # (seq, op_type, op_date, record)
        self.profiles = {}                      # uuid -> profile
        self.generation = 1
        self.fetches = 0                        # full fetches started
        self.finished_fetches = set()           # ... whose last page was served
        self.forced = {}                        # serial -> forced assign answer
        self.retry_after = None
        self.nonces = set()
        self.echo = "now"                       # now | late | never
        self.late_echoes = []                   # (record, op_date) held back

    def sorted_serials(self):
        if self._sorted is None:
            self._sorted = sorted(self.devices)
        return self._sorted

    def last_seq(self):
        return self.event_seqs[-1] if self.event_seqs else 0


class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        self.vnow = None         # a test's clock (POST /_mock/clock), else real time
        self.orgs = {}           # consumer_key -> Org
        self.sessions = {}       # session token -> consumer_key
        self.rules = []
        self.log = []
        self.log_seq = 0
        self.seq = 0             # global event seq
        self.counts = {}
        self.serve_seconds = 0.0
        self.requests = 0
        if hasattr(self, "holds"):
            for h in self.holds.values():
                h.set()
        self.holds = {}          # hold name -> threading.Event (set: released)
        self.latency = {}        # consumer_key or None (all) -> (ms, jitter_ms)

    # ---- orgs

    def org_for(self, body, key="consumer_key"):
        ck = body.get(key) if isinstance(body, dict) else None
        if not isinstance(ck, str) or not ck:
            raise ControlError(400, "%s required" % key)
        org = self.orgs.get(ck)
        if org is None:
            for o in self.orgs.values():
                if o.account.get("org_name") == ck:
                    return o
            raise ControlError(404, "unknown consumer_key %r" % ck)
        return org

    def register(self, body):
        ck = body.get("consumer_key") or "CK_" + secrets.token_hex(48)
        if not isinstance(ck, str):
            raise ControlError(400, "consumer_key must be a string")
        org = self.orgs.get(ck)
        new = org is None
        if new:
            org = Org(ck)
            self.orgs[ck] = org
        expiry = body.get("access_token_expiry") or iso(time.time() + 365 * 86400)
        org.token = {
            "consumer_key": ck,
            "consumer_secret": body.get("consumer_secret") or "CS_" + secrets.token_hex(20),
            "access_token": body.get("access_token") or "AT_" + secrets.token_hex(32),
            "access_secret": body.get("access_secret") or "AS_" + secrets.token_hex(20),
            "access_token_expiry": expiry,
        }
        for k in ("consumer_secret", "access_token", "access_secret", "access_token_expiry"):
            if not isinstance(org.token[k], str):
                raise ControlError(400, "%s must be a string" % k)
        acc = dict(org.account)
        if new:
            n = len(self.orgs)
            acc = {
                "org_name": "Mock Org %d" % n,
                "admin_id": "admin%d@example.com" % n,
                "server_name": "ade test server %d" % n,
                "server_uuid": str(uuid.uuid4()).upper(),
                "org_email": "it%d@example.com" % n,
                "org_phone": "+1 555 0100 %03d" % n,
                "org_address": "1 Infinite Loop, Cupertino CA 95014, US",
                "org_type": "org",
                "org_id": str(1000000 + secrets.randbelow(8999999)),
                "org_id_hash": secrets.token_hex(32),
                "facilitator_id": "facilitator%d@example.com" % n,
                "org_version": "v2",
                "urls": [],
            }
        for k in ACCOUNT_FIELDS:
            if k in body and body[k] is not None:
                acc[k] = body[k]
        if "urls" not in body or body.get("urls") is None:
            acc["urls"] = [{"uri": u, "http_method": m, "limit": lim} for u, m, lim in (
                ("/session", ["GET"], None), ("/account", ["GET"], None),
                ("/server/devices", ["POST"], {"default": 100, "maximum": 1000}),
                ("/devices/sync", ["POST"], {"default": 100, "maximum": 1000}),
                ("/profile", ["POST", "GET"], None),
                ("/profile/devices", ["PUT"], {"default": 1000, "maximum": 1000}))]
            for u in acc["urls"]:
                if u["limit"] is None:
                    del u["limit"]
        org.account = acc
        org.terms_expired = bool(body.get("terms_expired", org.terms_expired if not new else False))
        org.rejected = bool(body.get("rejected", False))
        return {"token": dict(org.token), "account": dict(org.account)}

    def account_json(self, org):
        return dict(org.account)

    # ---- sessions

    def new_session(self, org):
        tok = "%d|%s" % (int(time.time() * 1000), secrets.token_hex(32))
        self.sessions[tok] = org.consumer_key
        return tok

    def org_sessions(self, org):
        return [t for t, ck in self.sessions.items() if ck == org.consumer_key]

    # ---- devices and events

    def add_event(self, org, op_type, record, op_date):
        self.seq += 1
        org.event_seqs.append(self.seq)
        org.events.append((self.seq, op_type, op_date, record))

    def put_device(self, org, record, op_type, op_date):
        serial = record["serial_number"]
        if serial not in org.devices:
            org._sorted = None
        org.devices[serial] = record
        self.add_event(org, op_type, record, op_date)

    def make_device(self, org, serial, family, n):
        models = FAMILY_MODELS.get(family) or [(family or "Unknown", (family or "UNKNOWN").upper())]
        model, desc = models[n % len(models)]
        return {
            "serial_number": serial,
            "model": model,
            "description": desc,
            "color": COLORS[n % len(COLORS)],
            "asset_tag": "A%06d" % n if n % 3 == 0 else "",
            "profile_status": "empty",
            "profile_uuid": "",
            "device_assigned_date": iso(1704067200 + n * 60),
            "device_assigned_by": org.account.get("admin_id", "admin@example.com"),
            "os": FAMILY_OS.get(family, "iOS"),
            "device_family": family,
        }

    def mutate_devices(self, body):
        org = self.org_for(body)
        default_date = body.get("op_date") or st_now(self)
        fill = body.get("fill", True)

        def split(rec):
            if not isinstance(rec, dict):
                raise ControlError(400, "device records must be objects")
            rec = dict(rec)
            rec.pop("op_type", None)
            od = rec.pop("op_date", None) or default_date
            if "serial_number" not in rec or not isinstance(rec["serial_number"], str):
                raise ControlError(400, "device record without a string serial_number")
            return rec, od

        gen = body.get("generate")
        if gen:
            if not isinstance(gen, dict):
                raise ControlError(400, "generate must be an object")
            count = int(gen.get("count", 0))
            prefix = str(gen.get("prefix", "S"))
            fams = gen.get("families") or ["Mac", "iPhone", "iPad"]
            if isinstance(fams, str):
                fams = [f for f in fams.split(",") if f]
            start = int(gen.get("start", 0))
            digits = int(gen.get("digits", 8))
            for i in range(count):
                n = start + i
                fam = fams[i % len(fams)]
                rec = self.make_device(org, "%s%0*d" % (prefix, digits, n), fam, n)
                self.put_device(org, rec, "added", default_date)
        for rec in body.get("add") or []:
            rec, od = split(rec)
            if fill:
                base = self.make_device(org, rec["serial_number"],
                                        rec.get("device_family", "Mac"),
                                        len(org.devices))
                base.update(rec)
                rec = base
            self.put_device(org, rec, "added", od)
        for rec in body.get("modify") or []:
            rec, od = split(rec)
            old = org.devices.get(rec["serial_number"])
            if old is None:
                old = self.make_device(org, rec["serial_number"],
                                       rec.get("device_family", "Mac"),
                                       len(org.devices)) if fill else {}
            merged = dict(old)
            merged.update(rec)
            self.put_device(org, merged, "modified", od)
        dels = body.get("delete") or []
        if isinstance(dels, str):
            dels = [s for s in dels.split(",") if s]
        for s in dels:
            if not isinstance(s, str):
                raise ControlError(400, "delete takes serials")
            if s in org.devices:
                del org.devices[s]
                org._sorted = None
            self.add_event(org, "deleted", {"serial_number": s}, default_date)
        # gone with no "deleted" event, as ABM does when an admin releases or
        # reassigns a device in its web portal: only a full fetch shows it
        drops = body.get("drop") or []
        if isinstance(drops, str):
            drops = [s for s in drops.split(",") if s]
        for s in drops:
            if not isinstance(s, str):
                raise ControlError(400, "drop takes serials")
            if org.devices.pop(s, None) is not None:
                org._sorted = None
        for raw in body.get("events") or []:
            self.add_event(org, None, raw, None)
        return {"devices": len(org.devices), "seq": org.last_seq()}

    # ---- control snapshot

    def snapshot(self, org):
        return {
            "devices": org.devices,
            "profiles": org.profiles,
            "sessions": len(self.org_sessions(org)),
            "seq": org.last_seq(),
            "generation": org.generation,
            "terms_expired": org.terms_expired,
            "rejected": org.rejected,
            "forced": org.forced,
            "retry_after_seconds": org.retry_after,
        }
