"""mock_api_state.py - the state of the Apple School and Business Manager API
that test/mock_abm.py fakes beside the device-assignment service (issue 24;
the wire as /work/shared/design/abm-api.md describes it).

It owns: the API accounts (client id, key id, EC P-256 public key, the org
they belong to), the access tokens given to them, the client assertions
received (each one, with what its check found), per-account request counts,
and per organisation what only this API knows: the MDM servers added with
POST /_mock/api/servers, the devices no token holds, the devices released
from the organisation, attribute overrides, the device activities and the
per-serial failures forced on them; AppleCare coverage set per serial; the
settings (token lifetime, when activities complete, ...).

An organisation is an org_name of test/mock_state.py's tokens.  What its
tokens hold is read from there, live, never copied: each token is one MDM
server of the organisation (id: its account's server_uuid in upper case
without dashes, name: its server_name), and every device in a token's feed
(Org.devices) is a device of the organisation assigned to that server.  An
activity that moves a device onto or off a token's server changes that
token's feed as the device-assignment mock does for a device added or
deleted (an "added" or a "deleted" event), so ade_sync() sees the move.

No HTTP here (test/mock_api.py answers it).  Python standard library, and
Debian's python3-cryptography for the EC keys and ES256 signatures, imported
when first needed: without it the rest of the mock works and the API answers
500."""

import base64
import bisect
import datetime
import hashlib
import json
import re
import secrets
import time
import uuid

from mock_state import COLORS, FAMILY_MODELS, ControlError, iso, st_now

AUDIENCE = "https://account.apple.com/auth/oauth2/v2/token"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_ASSERTION_SECONDS = 180 * 86400       # exp - iat must stay below this
IAT_SKEW_SECONDS = 300                    # an iat this far in the future is refused
DEFAULT_PAGE = 100
MAX_PAGE = 1000
CLIENT_ID_RE = re.compile(r"^(BUSINESSAPI|SCHOOLAPI)\.[0-9a-fA-F-]{1,64}$")

DEFAULT_SETTINGS = {
    "token_lifetime": 3600,     # seconds an access token lasts (and its expires_in)
    "activity_polls": 2,        # the Nth GET of an activity finds it finished ...
    "activity_seconds": None,   # ... or, when set, this many seconds after its POST
    "download_seconds": 600,    # how long an activity's downloadUrl works
    "jti_reuse": "reject",      # reject | allow: a jti seen before, while its exp is ahead
    "clock_offset": 0,          # seconds the token endpoint's clock is ahead of this machine's
}

# API families (productFamily) and what a device of each looks like
PRODUCT_TYPES = {
    "Mac": ["Mac16,2", "Mac15,3", "Mac14,2", "Mac14,3", "Mac16,5", "Mac14,13"],
    "iPhone": ["iPhone16,1", "iPhone16,2", "iPhone15,4", "iPhone14,6"],
    "iPad": ["iPad16,3", "iPad13,16", "iPad13,18", "iPad14,1"],
    "AppleTV": ["AppleTV14,1"],
    "Watch": ["Watch7,1", "Watch7,3"],
    "Vision": ["RealityDevice14,1"],
    "iPod": ["iPod9,1"],
}
EXTRA_MODELS = {"Watch": [("Apple Watch Series 9", "WATCH S9 GPS 41MM MIDNIGHT")]}
CAPACITIES = ["64GB", "128GB", "256GB", "512GB", "1TB"]
PURCHASE_TYPES = ["RESELLER"] * 6 + ["APPLE"] * 3 + ["MANUALLY_ADDED"]
MIGRATION = [None] * 9 + ["REQUESTED", "STARTED", "SUCCESS", "FAILED"]

_crypto = None


def crypto():
    """The cryptography modules we need, or a ControlError(500) saying how to get them."""
    global _crypto
    if _crypto is None:
        try:
            from cryptography.exceptions import InvalidSignature
            from cryptography.hazmat.primitives import hashes, serialization
            from cryptography.hazmat.primitives.asymmetric import ec
            from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
        except ImportError:
            raise ControlError(500, "the API mock needs Debian's python3-cryptography "
                               "(apt-get install python3-cryptography)")
        _crypto = {"ec": ec, "hashes": hashes, "ser": serialization,
                   "InvalidSignature": InvalidSignature, "dss": encode_dss_signature}
    return _crypto


def iso_ms(ts):
    """Apple's API timestamps: UTC with milliseconds and a Z."""
    ts = float(ts)
    return datetime.datetime.fromtimestamp(int(ts), datetime.timezone.utc) \
        .strftime("%Y-%m-%dT%H:%M:%S") + ".%03dZ" % (int(ts * 1000) % 1000)


def parse_iso(s):
    """ISO 8601 with a Z (and maybe fractions) -> epoch seconds, None when it is not one."""
    if not isinstance(s, str):
        return None
    try:
        return datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def h64(serial, salt=""):
    """A stable 64-bit number per serial: every made-up attribute derives from it."""
    return int.from_bytes(hashlib.blake2b((salt + serial).encode(), digest_size=8).digest(), "big")


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text):
    """Strict base64url without padding (RFC 7515); None when it is not that."""
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9_-]*", text) or len(text) % 4 == 1:
        return None
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def server_id_of(token_org):
    """A token's MDM server id: its server_uuid, upper case, no dashes (Apple's
    ids are 32 hex digits); one made from its consumer key when it has none."""
    sid = str(token_org.account.get("server_uuid") or "").replace("-", "").upper()
    return sid or hashlib.sha1(token_org.consumer_key.encode()).hexdigest()[:32].upper()


def mac(h, k):
    return ":".join("%02X" % ((h >> (8 * ((i + k) % 8))) & 0xFF) for i in range(6))


# ---------------------------------------------------------------- accounts

class Account:
    def __init__(self, client_id, key_id, org, public_key, public_pem):
        self.client_id = client_id
        self.key_id = key_id
        self.org = org
        self.public_key = public_key
        self.public_pem = public_pem
        self.created = time.time()
        self.jtis = {}          # jti -> its exp (kept while ahead)
        self.counts = {}        # "GET /v1/orgDevices" -> n (and route templates)

    @property
    def scope(self):
        return "business.api" if self.client_id.startswith("BUSINESSAPI.") else "school.api"

    def json(self):
        return {"client_id": self.client_id, "key_id": self.key_id, "org": self.org,
                "scope": self.scope, "public_key_pem": self.public_pem,
                "created": iso(self.created)}


class ApiOrg:
    def __init__(self, name):
        self.name = name
        self.id = secrets.token_hex(6)      # goes into cursors
        self.servers = {}                   # id -> attributes (servers no token is)
        self.devices = {}                   # serial -> rec: devices no token holds
        self.released = {}                  # serial -> (rec, released epoch)
        self.over = {}                      # serial -> attribute overrides
        self.touched = {}                   # serial -> epoch its assignment last changed
        self.activities = {}                # id -> activity
        self.fail = {}                      # serial -> error code its activities end with
        self.next_failed = 0                # so many next activities end FAILED
        self.version = 0                    # bumps when self.devices' members or servers change
        self.cache = {}


# ---------------------------------------------------------------- state

class ApiState:
    def __init__(self, st):
        self.st = st            # test/mock_state.py's State: its lock, tokens, events
        self.reset()

    def reset(self):
        self.accounts = {}      # client_id -> Account
        self.tokens = {}        # access token -> {"client_id", "expires", "revoked"}
        self.assertions = []    # every client assertion received, with its verdict
        self.assertion_seq = 0
        self.orgs = {}          # org name -> ApiOrg
        self.applecare = {}     # serial -> coverage list set by a test
        self.settings = dict(DEFAULT_SETTINGS)
        self.pending = []       # unfinished activities (for activity_seconds)

    # ---- organisations

    def org(self, name, create=True):
        if not isinstance(name, str) or not name:
            raise ControlError(400, "org (an org_name) required")
        o = self.orgs.get(name)
        if o is None:
            if not create:
                raise ControlError(404, "unknown org %r" % name)
            o = self.orgs[name] = ApiOrg(name)
        return o

    def token_orgs(self, name):
        """The tokens (mock_state Orgs) of an organisation, in registration order."""
        return [o for o in self.st.orgs.values() if o.account.get("org_name") == name]

    def servers(self, org):
        """[(id, attributes, token Org or None)]: one per token, then the added ones."""
        out = []
        for t in self.token_orgs(org.name):
            created = parse_iso(t.account.get("created")) or 1704067200 + h64(t.consumer_key) % 8640000
            out.append((server_id_of(t), {
                "serverName": t.account.get("server_name") or t.consumer_key,
                "serverType": "MDM",
                "createdDateTime": iso_ms(created),
                "updatedDateTime": iso_ms(created + 60),
            }, t))
        for sid, attrs in org.servers.items():
            out.append((sid, attrs, None))
        return out

    def find_server(self, org, ref):
        """A server of org by id or by name -> (id, attributes, token Org or None), or None."""
        servers = self.servers(org)
        for s in servers:
            if s[0] == ref:
                return s
        for s in servers:
            if s[1]["serverName"] == ref:
                return s
        return None

    def add_server(self, org, name, stype="MDM", sid=None):
        if not isinstance(name, str) or not name:
            raise ControlError(400, "name required")
        if any(s[1]["serverName"] == name for s in self.servers(org)):
            raise ControlError(409, "org %r has a server named %r already" % (org.name, name))
        sid = sid or uuid.uuid4().hex.upper()
        if any(s[0] == sid for s in self.servers(org)):
            raise ControlError(409, "server id %r taken" % sid)
        now = time.time()
        org.servers[sid] = {"serverName": name, "serverType": stype,
                            "createdDateTime": iso_ms(now), "updatedDateTime": iso_ms(now)}
        org.version += 1
        return sid

    # ---- the organisation's devices

    def holder(self, org, serial, toks):
        """Who holds serial: (token Org, DEP record), (None, API record), or (None, None)."""
        for t in toks:
            r = t.devices.get(serial)
            if r is not None:
                return t, r
        return None, org.devices.get(serial)

    def all_serials(self, org, toks):
        """Every serial of the organisation, sorted; cached until a feed or the
        API devices change (a feed's sorted list is a new object when its
        members change, so the key compares by identity)."""
        key = (org.version, tuple(toks), tuple(t.sorted_serials() for t in toks))
        c = org.cache.get("all")
        if c is not None and c[0] == key:
            return c[1]
        s = set(org.devices)
        for t in toks:
            s.update(t.devices)
        out = sorted(s)
        org.cache["all"] = (key, out)
        return out

    def server_serials(self, org, sid, token, toks):
        """The sorted serials a server holds."""
        if token is not None:
            return token.sorted_serials()
        key = (org.version, tuple(toks), tuple(t.sorted_serials() for t in toks))
        c = org.cache.get(("srv", sid))
        if c is not None and c[0] == key:
            return c[1]
        out = sorted(s for s, r in org.devices.items()
                     if r["server"] == sid and not any(s in t.devices for t in toks))
        org.cache[("srv", sid)] = (key, out)
        return out

    def device_server(self, org, serial, toks):
        t, r = self.holder(org, serial, toks)
        if t is not None:
            return server_id_of(t)
        return r["server"] if r is not None else None

    def api_record(self, serial, family, n, server, added, over=None):
        return {"family": family, "n": n, "server": server, "added": added,
                "updated": added, "over": over or {}}

    def generate(self, org, count, prefix, start=0, digits=8, families=None, server=None):
        """count devices serial PREFIX%0{digits}d from start, onto server (a
        server tuple of servers()) or unassigned; -> how many."""
        fams = families or ["Mac", "iPhone", "iPad"]
        now = time.time()
        token = server[2] if server else None
        sid = server[0] if server else None
        st = self.st
        when = st_now(st)
        for i in range(count):
            n = start + i
            serial = "%s%0*d" % (prefix, digits, n)
            fam = fams[i % len(fams)]
            org.released.pop(serial, None)
            if token is not None:
                org.devices.pop(serial, None)
                st.put_device(token, st.make_device(token, serial, fam, n), "added", when)
            else:
                org.devices[serial] = self.api_record(serial, fam, n, sid, now - (h64(serial) % 86400000) / 1000.0)
        org.version += 1
        return count

    def release(self, org, serials):
        """Out of the organisation: gone from every list, releasedFromOrgDateTime
        set on GET /v1/orgDevices/{serial}.  A token's device leaves its feed
        with no event, as POST /devices/disown does."""
        toks = self.token_orgs(org.name)
        now = time.time()
        done = []
        for s in serials:
            t, r = self.holder(org, s, toks)
            if t is not None:
                rec = self.api_record(s, r.get("device_family") or "Mac", h64(s) % 1000,
                                      None, parse_iso(r.get("device_assigned_date")) or now,
                                      {"deviceModel": r.get("model"), "color": r.get("color")})
                for tt in toks:
                    if tt.devices.pop(s, None) is not None:
                        tt._sorted = None
            elif r is not None:
                rec = org.devices.pop(s)
                rec["server"] = None
            else:
                continue
            org.devices.pop(s, None)
            org.released[s] = (rec, now)
            done.append(s)
        org.version += 1
        return done

    # ---- what a device looks like on the wire

    def device_object(self, org, serial, toks, single=False, fields=None):
        """{"type": "orgDevices", "id", "attributes"} or None (unknown; released
        ones only when single)."""
        t, r = self.holder(org, serial, toks)
        released = None
        if t is not None:
            fam = r.get("device_family") or "Mac"
            added = parse_iso(r.get("device_assigned_date")) or 1704067200.0
            base = {"family": fam, "n": h64(serial) % 1000, "added": added + (h64(serial) % 1000) / 1000.0,
                    "updated": org.touched.get(serial, added + 3600.5),
                    "over": {"deviceModel": r.get("model"), "color": r.get("color")}}
            sid = server_id_of(t)
        elif r is not None:
            base, sid = r, r["server"]
        elif single and serial in org.released:
            base, released = org.released[serial]
            sid = None
        else:
            return None
        a = self.attributes(serial, base, sid)
        if single:
            a["releasedFromOrgDateTime"] = iso_ms(released) if released is not None else None
        a.update(org.over.get(serial) or {})
        if fields is not None:
            a = {k: v for k, v in a.items()
                 if k in fields or (k == "purchaseSourceUid" and "purchaseSourceId" in fields)}
        return {"type": "orgDevices", "id": serial, "attributes": a}

    def attributes(self, serial, base, server_id):
        h = h64(serial)
        fam = base["family"]
        models = FAMILY_MODELS.get(fam) or EXTRA_MODELS.get(fam) or [(fam, fam.upper())]
        model, desc = models[base.get("n", 0) % len(models)]
        over = {k: v for k, v in (base.get("over") or {}).items() if v}
        added = base["added"]
        cellular = fam == "iPhone" or (fam == "iPad" and h % 2 == 0) or (fam == "Watch" and h % 3 == 0)
        a = {
            "serialNumber": serial,
            "addedToOrgDateTime": iso_ms(added),
            "updatedDateTime": iso_ms(max(base.get("updated") or added, added)),
            "deviceModel": model,
            "productFamily": fam,
            "productType": (PRODUCT_TYPES.get(fam) or [fam + "1,1"])[h % len(PRODUCT_TYPES.get(fam) or [0])],
            "deviceCapacity": CAPACITIES[(h >> 4) % len(CAPACITIES)],
            "partNumber": "M%s%02d%s/A" % ("ABCDEFGHJKLMNPQRSTUVWXYZ"[(h >> 8) % 24], (h >> 13) % 100,
                                           ["LL", "B", "ZM", "D", "F"][(h >> 20) % 5]),
            "orderNumber": "%010d" % ((h >> 24) % 10 ** 10),
            "orderDateTime": iso(added - 86400 * (2 + (h >> 30) % 20)),
            "color": COLORS[(h >> 34) % len(COLORS)],
            "status": "ASSIGNED" if server_id else "UNASSIGNED",
            "imei": ["35%013d" % ((h >> 3) % 10 ** 13)] + (["35%013d" % ((h >> 5) % 10 ** 13)] if h % 5 == 0 else [])
            if cellular else [],
            "meid": ["35%012d" % ((h >> 7) % 10 ** 12)] if cellular and fam == "iPhone" and h % 4 == 0 else [],
            "eid": "890490320%023d" % ((h >> 9) % 10 ** 23) if cellular else "",
            "wifiMacAddress": mac(h, 0),
            "bluetoothMacAddress": mac(h, 1),
            "purchaseSourceType": PURCHASE_TYPES[(h >> 38) % len(PURCHASE_TYPES)],
            "isMdmMigrationCapable": fam in ("Mac", "iPhone", "iPad") and (h >> 42) % 4 != 0,
        }
        # ethernetMacAddress: a string or an array (Apple has sent both); null where there is none
        if fam == "Mac":
            a["ethernetMacAddress"] = mac(h, 2) if (h >> 44) % 3 == 0 else \
                [mac(h, 2)] + ([mac(h, 3)] if (h >> 44) % 3 == 2 else [])
        elif fam == "AppleTV":
            a["ethernetMacAddress"] = mac(h, 2)
        else:
            a["ethernetMacAddress"] = None
        # purchaseSourceId, once purchaseSourceUid in Apple's own example
        psid = "" if a["purchaseSourceType"] == "MANUALLY_ADDED" else "%07d" % ((h >> 46) % 10 ** 7)
        a["purchaseSourceUid" if h % 11 == 5 else "purchaseSourceId"] = psid
        mig = MIGRATION[(h >> 50) % len(MIGRATION)] if a["isMdmMigrationCapable"] and server_id else None
        a["mdmMigrationStatus"] = mig
        a["mdmMigrationDeadlineDateTime"] = iso(added + 86400 * (30 + (h >> 52) % 60)) \
            if mig in ("REQUESTED", "STARTED") else None
        # an attribute Apple added without notice, on some devices
        if h % 7 == 3:
            a["futureAttribute"] = {"kind": "mock", "value": h % 1000}
        a.update(over)
        return a

    # ---- AppleCare

    def applecare_for(self, serial):
        """The coverage items of a device: set by a test, else derived from the
        serial: a third ACTIVE (ends within 90 days; half of them also list an
        expired Limited Warranty), a third INACTIVE, a third none."""
        if serial in self.applecare:
            return [dict(x) for x in self.applecare[serial]]
        h = h64(serial, "applecare")
        day = int(time.time() // 86400) * 86400
        kind = h % 3
        items = []
        if kind == 0:
            end = day + 86400 * (1 + (h >> 3) % 89)
            items.append({"status": "ACTIVE",
                          "paymentType": ["PAID_UP_FRONT", "SUBSCRIPTION", "ABE_SUBSCRIPTION"][(h >> 10) % 3],
                          "description": "AppleCare+", "agreementNumber": "%012d" % ((h >> 12) % 10 ** 12),
                          "startDateTime": iso(end - 3 * 365 * 86400), "endDateTime": iso(end),
                          "contractCancelDateTime": None, "isRenewable": (h >> 20) % 2 == 0,
                          "isCanceled": False})
            if (h >> 22) % 2 == 0:
                items.append({"status": "INACTIVE", "paymentType": "NONE",
                              "description": "Limited Warranty", "agreementNumber": None,
                              "startDateTime": iso(end - 3 * 365 * 86400),
                              "endDateTime": iso(end - 2 * 365 * 86400),
                              "contractCancelDateTime": None, "isRenewable": False, "isCanceled": False})
        elif kind == 1:
            end = day - 86400 * (1 + (h >> 3) % 400)
            canceled = (h >> 30) % 5 == 0
            items.append({"status": "INACTIVE", "paymentType": "NONE" if not canceled else "PAID_UP_FRONT",
                          "description": "Limited Warranty" if not canceled else "AppleCare+",
                          "agreementNumber": None if not canceled else "%012d" % ((h >> 12) % 10 ** 12),
                          "startDateTime": iso(end - 365 * 86400), "endDateTime": iso(end),
                          "contractCancelDateTime": iso(end - 30 * 86400) if canceled else None,
                          "isRenewable": False, "isCanceled": canceled})
        return items

    # ---- access tokens and client assertions

    def add_account(self, body):
        c = crypto()
        org = body.get("org")
        self.org(org)
        school = bool(body.get("school"))
        cid = body.get("client_id") or "%s.%s" % ("SCHOOLAPI" if school else "BUSINESSAPI", uuid.uuid4())
        if not isinstance(cid, str) or not CLIENT_ID_RE.match(cid):
            raise ControlError(400, "client_id must be BUSINESSAPI.<uuid> or SCHOOLAPI.<uuid>")
        kid = body.get("key_id") or str(uuid.uuid4())
        if not isinstance(kid, str) or not kid:
            raise ControlError(400, "key_id must be a string")
        out = {"client_id": cid, "key_id": kid, "org": org}
        pem = body.get("public_key_pem")
        if pem is not None:
            if not isinstance(pem, str):
                raise ControlError(400, "public_key_pem must be a PEM string")
            try:
                if "PRIVATE KEY" in pem:
                    key = c["ser"].load_pem_private_key(pem.encode(), None).public_key()
                else:
                    key = c["ser"].load_pem_public_key(pem.encode())
            except (ValueError, TypeError) as e:
                raise ControlError(400, "cannot read the key: %s" % e)
            if not isinstance(key, c["ec"].EllipticCurvePublicKey) or key.curve.name != "secp256r1":
                raise ControlError(400, "the key must be an EC P-256 key")
        else:
            priv = c["ec"].generate_private_key(c["ec"].SECP256R1())
            key = priv.public_key()
            if body.get("pkcs8"):
                # PKCS#8 bytes under the SEC1 label, as Apple sometimes hands them out
                data = priv.private_bytes(c["ser"].Encoding.PEM, c["ser"].PrivateFormat.PKCS8,
                                          c["ser"].NoEncryption()).decode()
                data = data.replace("-----BEGIN PRIVATE KEY-----", "-----BEGIN EC PRIVATE KEY-----") \
                    .replace("-----END PRIVATE KEY-----", "-----END EC PRIVATE KEY-----")
            else:
                data = priv.private_bytes(c["ser"].Encoding.PEM, c["ser"].PrivateFormat.TraditionalOpenSSL,
                                          c["ser"].NoEncryption()).decode()
            out["private_key_pem"] = data
        pub_pem = key.public_bytes(c["ser"].Encoding.PEM,
                                   c["ser"].PublicFormat.SubjectPublicKeyInfo).decode()
        old = self.accounts.get(cid)
        acc = Account(cid, kid, org, key, pub_pem)
        if old is not None:                 # a new key for the same client id
            acc.counts = old.counts
            acc.jtis = old.jtis
        self.accounts[cid] = acc
        out["scope"] = acc.scope
        return out

    def remove_account(self, cid):
        if self.accounts.pop(cid, None) is None:
            raise ControlError(404, "unknown client_id %r" % cid)
        for t in [t for t, v in self.tokens.items() if v["client_id"] == cid]:
            del self.tokens[t]

    def revoke(self, cid):
        if cid not in self.accounts:
            raise ControlError(404, "unknown client_id %r" % cid)
        n = 0
        for v in self.tokens.values():
            if v["client_id"] == cid and not v["revoked"]:
                v["revoked"] = True
                n += 1
        return n

    def token_account(self, token):
        """(Account, None) for a live access token, else (None, why)."""
        v = self.tokens.get(token)
        if v is None:
            return None, "unknown access token"
        if v["revoked"]:
            return None, "access token revoked"
        if time.time() >= v["expires"]:
            return None, "access token expired"
        acc = self.accounts.get(v["client_id"])
        if acc is None:
            return None, "the API account is gone"
        return acc, None

    def issue_token(self, acc):
        tok = "mock_at_" + secrets.token_urlsafe(32)
        life = int(self.settings["token_lifetime"])
        self.tokens[tok] = {"client_id": acc.client_id, "expires": time.time() + life, "revoked": False}
        return tok, life

    def check_assertion(self, params):
        """The token request's fields -> (Account, None) or (Account or None,
        what failed).  Records the assertion."""
        rec = {"seq": 0, "time": round(time.time(), 3), "client_id": params.get("client_id"),
               "grant_type": params.get("grant_type"), "scope": params.get("scope"),
               "client_assertion_type": params.get("client_assertion_type"),
               "header": None, "claims": None, "signature_bytes": None,
               "assertion": params.get("client_assertion"), "ok": False, "error": None}
        self.assertion_seq += 1
        rec["seq"] = self.assertion_seq
        self.assertions.append(rec)
        acc, err = self._check(params, rec)
        rec["ok"] = err is None
        rec["error"] = err
        return acc, err

    def _check(self, p, rec):
        now = time.time() + float(self.settings["clock_offset"])
        if p.get("grant_type") != "client_credentials":
            return None, "grant_type must be client_credentials"
        if p.get("client_assertion_type") != ASSERTION_TYPE:
            return None, "client_assertion_type must be %s" % ASSERTION_TYPE
        cid = p.get("client_id")
        if not cid:
            return None, "client_id missing"
        acc = self.accounts.get(cid)
        if acc is None:
            return None, "unknown client_id"
        if p.get("scope") != acc.scope:
            return acc, "scope must be %s for this client_id" % acc.scope
        jwt = p.get("client_assertion")
        if not jwt:
            return acc, "client_assertion missing"
        parts = jwt.split(".")
        if len(parts) != 3:
            return acc, "client_assertion is not a compact JWS (three dot-separated parts)"
        raw = [b64url_decode(x) for x in parts]
        if any(x is None for x in raw):
            return acc, "client_assertion: a part is not base64url without padding"
        try:
            header = json.loads(raw[0])
            claims = json.loads(raw[1])
        except ValueError:
            return acc, "client_assertion: header or claims are not JSON"
        rec["header"], rec["claims"], rec["signature_bytes"] = header, claims, len(raw[2])
        if not isinstance(header, dict) or not isinstance(claims, dict):
            return acc, "client_assertion: header and claims must be JSON objects"
        if header.get("alg") != "ES256":
            return acc, "header alg must be ES256"
        if header.get("kid") != acc.key_id:
            return acc, "header kid is not this client's key id"
        if "typ" in header and header["typ"] != "JWT":
            return acc, "header typ must be JWT when present"
        if len(raw[2]) != 64:
            return acc, ("signature must be the raw 64-byte r||s (got %d bytes%s)"
                         % (len(raw[2]), ", a DER ECDSA_SIG?" if raw[2][:1] == b"\x30" else ""))
        c = crypto()
        r = int.from_bytes(raw[2][:32], "big")
        s = int.from_bytes(raw[2][32:], "big")
        try:
            acc.public_key.verify(c["dss"](r, s), (parts[0] + "." + parts[1]).encode("ascii"),
                                  c["ec"].ECDSA(c["hashes"].SHA256()))
        except c["InvalidSignature"]:
            return acc, "signature does not verify with this client's public key"
        if claims.get("iss") != cid:
            return acc, "iss must be the client_id"
        if claims.get("sub") != cid:
            return acc, "sub must be the client_id"
        if claims.get("aud") != AUDIENCE:
            return acc, "aud must be exactly %s" % AUDIENCE
        iat, exp = claims.get("iat"), claims.get("exp")
        num = (int, float)
        if not isinstance(iat, num) or isinstance(iat, bool):
            return acc, "iat missing or not a number"
        if not isinstance(exp, num) or isinstance(exp, bool):
            return acc, "exp missing or not a number"
        if exp <= now:
            return acc, "exp is not in the future (expired assertion)"
        if iat > now + IAT_SKEW_SECONDS:
            return acc, "iat is in the future"
        if exp - iat >= MAX_ASSERTION_SECONDS:
            return acc, "exp - iat must be less than 180 days"
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti:
            return acc, "jti missing"
        for k in [k for k, e in acc.jtis.items() if e <= now]:
            del acc.jtis[k]
        if jti in acc.jtis and self.settings["jti_reuse"] != "allow":
            return acc, "jti used before (a replayed assertion)"
        acc.jtis[jti] = exp
        return acc, None

    # ---- device activities

    def tick(self):
        """Finish the activities whose activity_seconds have passed (called on
        every request, so that a move is there for ade_sync() without a poll)."""
        secs = self.settings["activity_seconds"]
        if not self.pending or secs is None:
            return
        now = time.time()
        keep = []
        for act in self.pending:
            if act["done"]:
                continue
            if now - act["created"] >= secs:
                self.finish(act)
            else:
                keep.append(act)
        self.pending = keep

    def create_activity(self, org, atype, server, serials, client_id):
        now = time.time()
        act = {"id": str(uuid.uuid4()), "org": org.name, "activityType": atype,
               "server": server[0], "serials": serials, "client_id": client_id,
               "created": now, "polls": 0, "status": "IN_PROGRESS", "subStatus": "SUBMITTED",
               "completed": None, "results": None, "done": False,
               "forced_failed": org.next_failed > 0}
        if org.next_failed > 0:
            org.next_failed -= 1
        org.activities[act["id"]] = act
        self.pending = [a for a in self.pending if not a["done"]] + [act]
        return act

    def poll(self, act):
        act["polls"] += 1
        if act["done"]:
            return
        if self.settings["activity_seconds"] is None:
            if act["polls"] >= int(self.settings["activity_polls"]):
                self.finish(act)
            else:
                act["subStatus"] = "PROCESSING" if act["polls"] > 1 else "PRE_PROCESSING"
        else:
            self.tick()
            if not act["done"]:
                act["subStatus"] = "PROCESSING"

    def finish(self, act):
        org = self.orgs[act["org"]]
        now = time.time()
        act["done"] = True
        act["completed"] = now
        results = []
        if act["forced_failed"]:
            for s in act["serials"]:
                results.append((s, "FAILED", "INTERNAL_ERROR", "The activity failed"))
            act["status"], act["subStatus"] = "FAILED", "COMPLETED_WITH_FAILURE"
        else:
            toks = self.token_orgs(org.name)
            server = self.find_server(org, act["server"])
            for s in act["serials"]:
                results.append(self.move(org, toks, s, act["activityType"], server, now))
            # any device that failed (unknown, released, forced, not on the
            # server it should leave) makes it COMPLETED_WITH_ERROR, all of
            # them failing included; COMPLETED_WITH_FAILURE is a FAILED one's
            bad = sum(1 for r in results if r[1] != "SUCCESS")
            act["status"] = "COMPLETED"
            act["subStatus"] = "COMPLETED_WITH_SUCCESS" if bad == 0 else "COMPLETED_WITH_ERROR"
        act["results"] = results

    def move(self, org, toks, serial, atype, server, now):
        """One device of an activity -> (serial, SUCCESS | FAILED, code, message)."""
        if serial in org.fail:
            return (serial, "FAILED", org.fail[serial], "Forced by the test")
        if server is None:
            return (serial, "FAILED", "NOT_FOUND", "The device management service is gone")
        t, r = self.holder(org, serial, toks)
        if r is None:
            return (serial, "FAILED", "NOT_FOUND", "Device not found in the organization")
        cur = server_id_of(t) if t is not None else r["server"]
        sid, _, target_token = server
        if atype == "UNASSIGN_DEVICES":
            if cur != sid:
                return (serial, "FAILED", "DEVICE_NOT_ASSIGNED",
                        "The device is not assigned to this device management service")
            sid, target_token = None, None
        elif cur == sid:
            return (serial, "SUCCESS", "", "")
        when = st_now(self.st)
        # off its current server
        if t is not None:
            dep = r
            rec = self.api_record(serial, r.get("device_family") or "Mac", h64(serial) % 1000, None,
                                  parse_iso(r.get("device_assigned_date")) or now,
                                  {"deviceModel": r.get("model"), "color": r.get("color")})
            for tt in toks:
                if tt.devices.pop(serial, None) is not None:
                    tt._sorted = None
                    self.st.add_event(tt, "deleted", {"serial_number": serial}, when)
        else:
            dep, rec = None, r
        # onto the new one
        if target_token is not None:
            org.devices.pop(serial, None)
            new = self.st.make_device(target_token, serial, rec["family"], rec.get("n", 0))
            if dep is not None:
                for k in ("model", "description", "color", "asset_tag", "os", "device_family"):
                    if k in dep:
                        new[k] = dep[k]
            else:
                for k, dk in (("deviceModel", "model"), ("color", "color")):
                    if (rec.get("over") or {}).get(k):
                        new[dk] = rec["over"][k]
            new["device_assigned_date"] = iso(now)
            self.st.put_device(target_token, new, "added", when)
        else:
            rec["server"] = sid
            rec["updated"] = now
            org.devices[serial] = rec
        org.touched[serial] = now
        org.version += 1
        return (serial, "SUCCESS", "", "")

    def activity_csv(self, act):
        lines = ["serialNumber,status,errorCode,errorMessage"]
        for s, status, code, msg in act["results"] or []:
            lines.append(",".join('"%s"' % str(x).replace('"', '""') if ("," in str(x) or '"' in str(x))
                                  else str(x) for x in (s, status, code, msg)))
        return "\n".join(lines) + "\n"

    # ---- control views

    def snapshot(self, org):
        toks = self.token_orgs(org.name)
        devs = {}
        for s in self.all_serials(org, toks):
            t, r = self.holder(org, s, toks)
            devs[s] = {"server": server_id_of(t) if t is not None else r["server"],
                       "token": t.consumer_key if t is not None else None}
        return {
            "org": org.name,
            "servers": [{"id": sid, "token": t.consumer_key if t is not None else None, **attrs}
                        for sid, attrs, t in self.servers(org)],
            "devices": devs,
            "released": {s: iso_ms(ts) for s, (_, ts) in org.released.items()},
            "overrides": org.over,
            "activities": [self.activity_json(a) for a in org.activities.values()],
            "fail": org.fail, "next_failed": org.next_failed,
            "accounts": [a.client_id for a in self.accounts.values() if a.org == org.name],
        }

    def activity_json(self, a):
        return {"id": a["id"], "activityType": a["activityType"], "server": a["server"],
                "serials": a["serials"], "status": a["status"], "subStatus": a["subStatus"],
                "polls": a["polls"], "created": iso_ms(a["created"]),
                "completed": iso_ms(a["completed"]) if a["completed"] else None,
                "results": [list(r) for r in a["results"]] if a["results"] is not None else None,
                "client_id": a["client_id"]}


def page_after(serials, after, limit):
    """Keyset paging: the next limit serials after `after` -> (page, more)."""
    i = bisect.bisect_right(serials, after) if after else 0
    return serials[i:i + limit], i + limit < len(serials)
