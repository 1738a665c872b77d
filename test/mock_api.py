"""mock_api.py - Apple's School and Business Manager API (api-business.apple.com,
api-school.apple.com, and its token endpoint on account.apple.com) as
test/mock_abm.py serves it beside the device-assignment service, on the same
port, through the same fault rules, holds, latency, request log and counts
(issue 24; the wire as /work/shared/design/abm-api.md describes it).

This file owns the API's answers and its control calls (under /_mock/api/);
its state (accounts, tokens, servers, devices, activities, AppleCare) is
test/mock_api_state.py; mock_abm.py's Handler.abm() calls match(),
identify() and answer() for every path that owns() says is the API's.
None of these requests needs the device-assignment headers (User-Agent
pg-ade/..., X-Server-Protocol-Version).

    POST /auth/oauth2/token, /auth/oauth2/v2/token   fields in a form body
        (application/x-www-form-urlencoded) or the query string: grant_type=
        client_credentials, client_id, client_assertion_type=urn:ietf:params:
        oauth:client-assertion-type:jwt-bearer, client_assertion (an ES256 JWT:
        header alg ES256, kid = the key id; raw 64-byte r||s signature; claims
        sub = iss = client_id, aud = https://account.apple.com/auth/oauth2/v2/token
        exactly, exp > now, exp - iat < 180 days, iat at most 300 s ahead, jti
        not seen before while its exp is ahead), scope (business.api for
        BUSINESSAPI., school.api for SCHOOLAPI.)
        -> 200 {"access_token", "token_type": "Bearer", "expires_in", "scope"}
        or 400 {"error": "invalid_client", "error_description": what failed}
    Every /v1 call needs "Authorization: Bearer <access token>" (none, unknown,
    expired or revoked: 401 {"errors": [{"status": "401", "code":
    "UNAUTHORIZED", ...}]}) and an Accept that admits application/json (none,
    application/json, application/*, */*; anything else: 406 NOT_ACCEPTABLE);
    a query parameter a call does not take: 400 PARAMETER_ERROR.INVALID.
    GET  /v1/orgDevices?limit=&cursor=&fields[orgDevices]=   keyset pages by serial
    GET  /v1/orgDevices/{serial}[?fields[orgDevices]=]       with releasedFromOrgDateTime
    GET  /v1/orgDevices/{serial}/relationships/assignedServer   data null: unassigned
    GET  /v1/orgDevices/{serial}/appleCareCoverage
    GET  /v1/mdmServers?limit=&cursor=
    GET  /v1/mdmServers/{id}
    GET  /v1/mdmServers/{id}/relationships/devices?limit=&cursor=
    POST /v1/orgDeviceActivities        ASSIGN_DEVICES | UNASSIGN_DEVICES -> 201
    GET  /v1/orgDeviceActivities/{id}
    GET  /activity-logs/{id}.csv?expires=T   an activity's downloadUrl (no auth;
                                        403 after T): serialNumber,status,errorCode,errorMessage
Paging: limit default 100, 1..1000 (else 400 PARAMETER_ERROR.INVALID);
{"data", "links": {"self", "next"?}, "meta": {"paging": {"limit", "nextCursor"?,
"total"}}}.  Errors: {"errors": [{"id", "status", "code", "title", "detail",
"source"?}]}.

Control calls (JSON, as mock_abm.py's): see mock_abm.py's header.
"""

import json
import re
import time
import urllib.parse
import uuid

from mock_api_state import (
    DEFAULT_PAGE, DEFAULT_SETTINGS, MAX_PAGE, b64url, b64url_decode, iso_ms, page_after)
from mock_state import ControlError

API_JSON = "application/json"
ACTIVITY_TYPES = ("ASSIGN_DEVICES", "UNASSIGN_DEVICES")
ORG_DEVICE_FIELDS = (
    "serialNumber", "addedToOrgDateTime", "releasedFromOrgDateTime", "updatedDateTime", "deviceModel",
    "productFamily", "productType", "deviceCapacity", "partNumber", "orderNumber", "orderDateTime",
    "color", "status", "imei", "meid", "eid", "wifiMacAddress", "bluetoothMacAddress",
    "ethernetMacAddress", "purchaseSourceId", "purchaseSourceUid", "purchaseSourceType",
    "isMdmMigrationCapable", "mdmMigrationStatus", "mdmMigrationDeadlineDateTime", "futureAttribute")


def owns(path):
    """Is this path the API's (not the device-assignment service's)?"""
    return path.startswith(("/v1/", "/auth/oauth2/", "/activity-logs/")) or path == "/v1"


# ---------------------------------------------------------------- helpers

def error(status, code, title, detail=None, source=None, headers=None):
    e = {"id": str(uuid.uuid4()), "status": str(status), "code": code, "title": title}
    if detail:
        e["detail"] = detail
    if source:
        e["source"] = source
    return status, {"errors": [e]}, headers


def base_url(req):
    host = req.headers.get("Host") or "%s:%d" % tuple(req.server.server_address[:2])
    return "%s://%s" % (req.server.scheme, host)


def query(req, allowed):
    """The query parameters -> (dict, None) or (None, error answer)."""
    out = {}
    for k, v in urllib.parse.parse_qsl(req.query, keep_blank_values=True):
        if k not in allowed:
            return None, error(400, "PARAMETER_ERROR.INVALID", "A parameter has an invalid value",
                               "'%s' is not a valid parameter here" % k, {"parameter": k})
        if k in out:
            return None, error(400, "PARAMETER_ERROR.INVALID", "A parameter has an invalid value",
                               "'%s' is given twice" % k, {"parameter": k})
        out[k] = v
    return out, None


def page_limit(p):
    v = p.get("limit")
    if v is None:
        return DEFAULT_PAGE, None
    if not re.fullmatch(r"[0-9]{1,9}", v) or not 1 <= int(v) <= MAX_PAGE:
        return None, error(400, "PARAMETER_ERROR.INVALID", "A parameter has an invalid value",
                           "'%s' is not a valid value for limit: an integer from 1 to %d" % (v, MAX_PAGE),
                           {"parameter": "limit"})
    return int(v), None


def cursor_out(org, kind, after):
    return b64url(json.dumps({"o": org.id, "k": kind, "a": after}, separators=(",", ":")).encode())


def cursor_in(p, org, kind):
    """-> (the key to page after, None) or (None, error answer)."""
    cur = p.get("cursor")
    if cur is None:
        return "", None
    raw = b64url_decode(cur) if cur else None
    try:
        c = json.loads(raw) if raw else None
    except ValueError:
        c = None
    if not isinstance(c, dict) or c.get("o") != org.id or c.get("k") != kind \
            or not isinstance(c.get("a"), (str, int)):
        return None, error(400, "PARAMETER_ERROR.INVALID", "A parameter has an invalid value",
                           "the cursor is not valid for this request", {"parameter": "cursor"})
    return c["a"], None


def fields_in(p):
    v = p.get("fields[orgDevices]")
    if v is None:
        return None, None
    names = [f for f in v.split(",") if f]
    bad = [f for f in names if f not in ORG_DEVICE_FIELDS]
    if bad or not names:
        return None, error(400, "PARAMETER_ERROR.INVALID", "A parameter has an invalid value",
                           "fields[orgDevices]: unknown field(s) %s" % ", ".join(bad or ["(none)"]),
                           {"parameter": "fields[orgDevices]"})
    return set(names), None


def paged(req, data, limit, next_cursor, total, p):
    base = base_url(req)
    self_url = base + req.req_path + ("?" + req.query if req.query else "")
    links = {"self": self_url}
    paging = {"limit": limit}
    if next_cursor:
        q = dict(p)
        q["cursor"] = next_cursor
        q.setdefault("limit", str(limit))
        links["next"] = base + req.req_path + "?" + urllib.parse.urlencode(q)
        paging["nextCursor"] = next_cursor
    if total is not None:
        paging["total"] = total
    return {"data": data, "links": links, "meta": {"paging": paging}}


def one(req, data):
    return {"data": data, "links": {"self": base_url(req) + req.req_path}}


def not_found(kind, ident):
    return error(404, "NOT_FOUND", "The specified resource does not exist",
                 "There is no resource of type '%s' with id '%s'" % (kind, ident))


def org_of(st, acc):
    return st.api.org(acc.org)


# ---------------------------------------------------------------- the token endpoint

def token_params(req):
    """The token request's fields (query string and form body) -> (dict, None) or (None, why)."""
    pairs = urllib.parse.parse_qsl(req.query, keep_blank_values=True)
    if req.body_raw.strip():
        ct = (req.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ct != "application/x-www-form-urlencoded":
            return None, "Content-Type must be application/x-www-form-urlencoded"
        try:
            pairs += urllib.parse.parse_qsl(req.body_raw.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            return None, "the form body is not UTF-8"
    out = {}
    for k, v in pairs:
        if k in out:
            return None, "parameter %s given twice" % k
        out[k] = v
    return out, None


def h_token(st, req):
    hx = {"Cache-Control": "no-store", "Pragma": "no-cache"}
    params, why = req.token_params, req.token_params_error
    if params is None:
        return 400, {"error": "invalid_client", "error_description": why}, hx
    acc, why = st.api.check_assertion(params)
    if why is not None:
        return 400, {"error": "invalid_client", "error_description": why}, hx
    tok, life = st.api.issue_token(acc)
    return 200, {"access_token": tok, "token_type": "Bearer", "expires_in": life, "scope": acc.scope}, hx


# ---------------------------------------------------------------- /v1

def h_org_devices(st, req, acc):
    p, e = query(req, ("limit", "cursor", "fields[orgDevices]"))
    if e:
        return e
    limit, e = page_limit(p)
    if e:
        return e
    fields, e = fields_in(p)
    if e:
        return e
    api = st.api
    org = org_of(st, acc)
    after, e = cursor_in(p, org, "orgDevices")
    if e:
        return e
    toks = api.token_orgs(org.name)
    serials = api.all_serials(org, toks)
    page, more = page_after(serials, after, limit)
    data = [api.device_object(org, s, toks, fields=fields) for s in page]
    return 200, paged(req, data, limit, cursor_out(org, "orgDevices", page[-1]) if more else None,
                      len(serials), p), None


def h_org_device(st, req, acc, serial):
    p, e = query(req, ("fields[orgDevices]",))
    if e:
        return e
    fields, e = fields_in(p)
    if e:
        return e
    api = st.api
    org = org_of(st, acc)
    d = api.device_object(org, serial, api.token_orgs(org.name), single=True, fields=fields)
    if d is None:
        return not_found("orgDevices", serial)
    return 200, one(req, d), None


def h_assigned_server(st, req, acc, serial):
    p, e = query(req, ())
    if e:
        return e
    api = st.api
    org = org_of(st, acc)
    toks = api.token_orgs(org.name)
    if api.device_object(org, serial, toks) is None:
        return not_found("orgDevices", serial)
    sid = api.device_server(org, serial, toks)
    base = base_url(req)
    return 200, {"data": {"type": "mdmServers", "id": sid} if sid else None,
                 "links": {"self": base + req.req_path,
                           "related": base + "/v1/orgDevices/%s/assignedServer" % urllib.parse.quote(serial)}}, None


def h_applecare(st, req, acc, serial):
    p, e = query(req, ("limit", "fields[appleCareCoverage]"))
    if e:
        return e
    limit, e = page_limit(p)
    if e:
        return e
    api = st.api
    org = org_of(st, acc)
    if api.device_object(org, serial, api.token_orgs(org.name)) is None:
        return not_found("orgDevices", serial)
    items = api.applecare_for(serial)
    data = [{"type": "appleCareCoverage", "id": "%s-%d" % (serial, i + 1), "attributes": a}
            for i, a in enumerate(items[:limit])]
    return 200, paged(req, data, limit, None, len(items), p), None


def server_object(api, org, req, sid, attrs, token, toks):
    a = dict(attrs)
    a["status"] = "ACTIVE"
    a["deviceCount"] = len(api.server_serials(org, sid, token, toks))
    return {"type": "mdmServers", "id": sid, "attributes": a,
            "relationships": {"devices": {"links": {
                "self": base_url(req) + "/v1/mdmServers/%s/relationships/devices" % sid}}}}


def h_servers(st, req, acc):
    p, e = query(req, ("limit", "cursor", "fields[mdmServers]"))
    if e:
        return e
    limit, e = page_limit(p)
    if e:
        return e
    api = st.api
    org = org_of(st, acc)
    after, e = cursor_in(p, org, "mdmServers")
    if e:
        return e
    toks = api.token_orgs(org.name)
    servers = sorted(api.servers(org), key=lambda s: s[0])
    ids = [s[0] for s in servers]
    page, more = page_after(ids, after, limit)
    byid = {s[0]: s for s in servers}
    data = [server_object(api, org, req, sid, byid[sid][1], byid[sid][2], toks) for sid in page]
    return 200, paged(req, data, limit, cursor_out(org, "mdmServers", page[-1]) if more else None,
                      len(ids), p), None


def h_server(st, req, acc, sid):
    p, e = query(req, ("fields[mdmServers]",))
    if e:
        return e
    api = st.api
    org = org_of(st, acc)
    s = next((s for s in api.servers(org) if s[0] == sid), None)
    if s is None:
        return not_found("mdmServers", sid)
    return 200, one(req, server_object(api, org, req, sid, s[1], s[2], api.token_orgs(org.name))), None


def h_server_devices(st, req, acc, sid):
    p, e = query(req, ("limit", "cursor"))
    if e:
        return e
    limit, e = page_limit(p)
    if e:
        return e
    api = st.api
    org = org_of(st, acc)
    s = next((s for s in api.servers(org) if s[0] == sid), None)
    if s is None:
        return not_found("mdmServers", sid)
    after, e = cursor_in(p, org, "srv:" + sid)
    if e:
        return e
    toks = api.token_orgs(org.name)
    serials = api.server_serials(org, sid, s[2], toks)
    page, more = page_after(serials, after, limit)
    data = [{"type": "orgDevices", "id": x} for x in page]
    return 200, paged(req, data, limit, cursor_out(org, "srv:" + sid, page[-1]) if more else None,
                      len(serials), p), None


def activity_object(req, act):
    a = {"status": act["status"], "subStatus": act["subStatus"], "createdDateTime": iso_ms(act["created"])}
    if act["done"]:
        a["completedDateTime"] = iso_ms(act["completed"])
        a["downloadUrl"] = base_url(req) + "/activity-logs/%s.csv?expires=%d" % (
            act["id"], int(time.time() + float(req.server.state.api.settings["download_seconds"])))
    # (the link is made anew on each GET, as Apple's short-lived links are)
    return {"type": "orgDeviceActivities", "id": act["id"], "attributes": a,
            "links": {"self": base_url(req) + "/v1/orgDeviceActivities/" + act["id"]}}


def h_activity_create(st, req, acc):
    p, e = query(req, ())
    if e:
        return e
    ct = (req.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if ct != "application/json":
        return error(415, "UNSUPPORTED_MEDIA_TYPE", "The request body must be application/json",
                     "Content-Type was %r" % req.headers.get("Content-Type"))

    def bad(status, code, pointer, detail):
        title = {"PARAMETER_ERROR.REQUIRED": "A required parameter is missing",
                 "PARAMETER_ERROR.INVALID": "The request body is invalid",
                 "ENTITY_ERROR.ATTRIBUTE.INVALID": "An attribute value is invalid"}.get(code, code)
        return error(status, code, title, detail, {"pointer": pointer})
    try:
        body = json.loads(req.body_raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return bad(400, "PARAMETER_ERROR.INVALID", "", "the body is not JSON")
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict):
        return bad(400, "PARAMETER_ERROR.REQUIRED", "/data", "data is required")
    if data.get("type") != "orgDeviceActivities":
        return bad(409, "ENTITY_ERROR.ATTRIBUTE.INVALID", "/data/type", "type must be orgDeviceActivities")
    attrs = data.get("attributes")
    atype = attrs.get("activityType") if isinstance(attrs, dict) else None
    if atype is None:
        return bad(400, "PARAMETER_ERROR.REQUIRED", "/data/attributes/activityType", "activityType is required")
    if atype not in ACTIVITY_TYPES:
        return bad(409, "ENTITY_ERROR.ATTRIBUTE.INVALID", "/data/attributes/activityType",
                   "activityType must be one of %s" % ", ".join(ACTIVITY_TYPES))
    rel = data.get("relationships")
    rel = rel if isinstance(rel, dict) else {}
    srv = (rel.get("mdmServer") or {}).get("data") if isinstance(rel.get("mdmServer"), dict) else None
    if not isinstance(srv, dict) or srv.get("id") in (None, ""):
        return bad(400, "PARAMETER_ERROR.REQUIRED", "/data/relationships/mdmServer/data",
                   "the mdmServer relationship is required")
    if srv.get("type") != "mdmServers" or not isinstance(srv.get("id"), str):
        return bad(409, "ENTITY_ERROR.ATTRIBUTE.INVALID", "/data/relationships/mdmServer/data",
                   "mdmServer must be {\"type\": \"mdmServers\", \"id\": string}")
    devs = (rel.get("devices") or {}).get("data") if isinstance(rel.get("devices"), dict) else None
    if not isinstance(devs, list) or not devs:
        return bad(400, "PARAMETER_ERROR.REQUIRED", "/data/relationships/devices/data",
                   "a non-empty devices relationship is required")
    serials = []
    for i, d in enumerate(devs):
        if not isinstance(d, dict) or d.get("type") != "orgDevices" or not isinstance(d.get("id"), str) \
                or not d["id"]:
            return bad(409, "ENTITY_ERROR.ATTRIBUTE.INVALID", "/data/relationships/devices/data/%d" % i,
                       "each device must be {\"type\": \"orgDevices\", \"id\": serial}")
        if d["id"] not in serials:
            serials.append(d["id"])
    api = st.api
    org = org_of(st, acc)
    server = next((s for s in api.servers(org) if s[0] == srv["id"]), None)
    if server is None:
        return error(404, "NOT_FOUND", "The specified resource does not exist",
                     "There is no resource of type 'mdmServers' with id '%s'" % srv["id"],
                     {"pointer": "/data/relationships/mdmServer/data/id"})
    act = api.create_activity(org, atype, server, serials, acc.client_id)
    obj = activity_object(req, act)
    return 201, {"data": obj, "links": {"self": obj["links"]["self"]}}, {"Location": obj["links"]["self"]}


def h_activity(st, req, acc, aid):
    p, e = query(req, ("fields[orgDeviceActivities]",))
    if e:
        return e
    org = org_of(st, acc)
    act = org.activities.get(aid)
    if act is None or time.time() - act["created"] > 30 * 86400:
        return not_found("orgDeviceActivities", aid)
    st.api.poll(act)
    return 200, one(req, activity_object(req, act)), None


def h_activity_log(st, req, aid):
    q = dict(urllib.parse.parse_qsl(req.query))
    act = None
    for org in st.api.orgs.values():
        act = org.activities.get(aid) or act
    if act is None or not act["done"]:
        return 404, "NoSuchKey", {"Content-Type": "text/plain"}
    try:
        expires = int(q.get("expires", ""))
    except ValueError:
        return 403, "AccessDenied", {"Content-Type": "text/plain"}
    if time.time() > expires:
        return 403, "Request has expired", {"Content-Type": "text/plain"}
    return 200, st.api.activity_csv(act), {"Content-Type": "text/csv"}


# (method, path pattern, handler, template: the per-route count key)
ROUTES = [
    ("POST", r"/auth/oauth2/token", h_token, None),
    ("POST", r"/auth/oauth2/v2/token", h_token, None),
    ("GET", r"/v1/orgDevices", h_org_devices, None),
    ("GET", r"/v1/orgDevices/([^/]+)", h_org_device, "/v1/orgDevices/{id}"),
    ("GET", r"/v1/orgDevices/([^/]+)/relationships/assignedServer", h_assigned_server,
     "/v1/orgDevices/{id}/relationships/assignedServer"),
    ("GET", r"/v1/orgDevices/([^/]+)/appleCareCoverage", h_applecare, "/v1/orgDevices/{id}/appleCareCoverage"),
    ("GET", r"/v1/mdmServers", h_servers, None),
    ("GET", r"/v1/mdmServers/([^/]+)", h_server, "/v1/mdmServers/{id}"),
    ("GET", r"/v1/mdmServers/([^/]+)/relationships/devices", h_server_devices,
     "/v1/mdmServers/{id}/relationships/devices"),
    ("POST", r"/v1/orgDeviceActivities", h_activity_create, None),
    ("GET", r"/v1/orgDeviceActivities/([^/]+)", h_activity, "/v1/orgDeviceActivities/{id}"),
    ("GET", r"/activity-logs/([^/]+)\.csv", h_activity_log, "/activity-logs/{id}.csv"),
]
_ROUTES = [(m, re.compile(p + r"\Z"), fn, t) for m, p, fn, t in ROUTES]


def match(method, path):
    """-> (handler or None, path arguments, count keys): the request's
    "METHOD /path" and, for a path with an id, "METHOD /template" too."""
    keys = ["%s %s" % (method, path)]
    for m, rx, fn, tmpl in _ROUTES:
        mo = rx.match(path)
        if mo:
            if tmpl:
                keys.append("%s %s" % (method, tmpl))
            if m != method and not (method == "HEAD" and m == "GET"):
                return None, (), keys
            return fn, tuple(urllib.parse.unquote(a) for a in mo.groups()), keys
    return None, (), keys


def identify(st, req):
    """Which API account a request is for (its Bearer token's; at the token
    endpoint its client_id field's): sets req.api_account (or None) and
    req.api_auth_error; returns the account."""
    api = st.api
    req.api_account, req.api_auth_error = None, None
    req.token_params, req.token_params_error = None, None
    if req.req_path.startswith("/auth/oauth2/"):
        req.token_params, req.token_params_error = token_params(req)
        if req.token_params:
            req.api_account = api.accounts.get(req.token_params.get("client_id"))
    elif req.req_path.startswith("/v1"):
        auth = (req.headers.get("Authorization") or "").strip()
        mo = re.fullmatch(r"(?i)bearer +(\S+)", auth)
        if not auth:
            req.api_auth_error = "no Authorization header"
        elif not mo:
            req.api_auth_error = "Authorization is not Bearer <access token>"
        else:
            req.api_account, req.api_auth_error = api.token_account(mo.group(1))
    return req.api_account


def accepts_json(value):
    if value is None or not value.strip():
        return True
    for part in value.split(","):
        bits = [b.strip() for b in part.split(";")]
        mt = bits[0].lower()
        q = 1.0
        for b in bits[1:]:
            if b.lower().startswith("q="):
                try:
                    q = float(b[2:])
                except ValueError:
                    q = 0.0
        if q > 0 and mt in ("application/json", "application/*", "*/*"):
            return True
    return False


def answer(st, req, fn, args):
    """The answer (status, payload, headers) of an API request whose route
    matched; under the state lock."""
    if fn is None:
        if req.req_path.startswith("/auth/"):
            return 404, {"error": "not_found"}, None
        return error(404, "NOT_FOUND", "The specified resource does not exist",
                     "The path %s %s is not part of this API" % (req.command, req.req_path))
    if fn is h_token:
        try:
            return fn(st, req)
        except ControlError as e:       # no python3-cryptography
            return 500, {"error": "server_error", "error_description": e.message}, None
    if fn is h_activity_log:
        return fn(st, req, *args)
    acc = req.api_account
    if acc is None:
        return error(401, "UNAUTHORIZED", "Authentication credentials are missing or invalid.",
                     req.api_auth_error or "unknown", headers={"WWW-Authenticate": 'Bearer realm="api"'})
    if not accepts_json(req.headers.get("Accept")):
        return error(406, "NOT_ACCEPTABLE", "The requested media type is not acceptable",
                     "Accept was %r; this API answers application/json" % req.headers.get("Accept"))
    return fn(st, req, acc, *args)


# ---------------------------------------------------------------- control calls

def _serials(v, what):
    if v is None:
        return []
    if isinstance(v, str):
        return [s for s in v.split(",") if s]
    if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
        raise ControlError(400, "%s takes serials" % what)
    return v


def c_accounts(st, body, q):
    return st.api.add_account(body)


def c_accounts_list(st, body, q):
    return {"accounts": [a.json() for a in st.api.accounts.values()]}


def c_accounts_remove(st, body, q):
    st.api.remove_account(body.get("client_id"))
    return {"ok": True}


def c_revoke(st, body, q):
    return {"revoked": st.api.revoke(body.get("client_id"))}


def c_settings(st, body, q):
    s = st.api.settings
    for k, v in body.items():
        if k not in DEFAULT_SETTINGS:
            raise ControlError(400, "unknown setting %r (%s)" % (k, ", ".join(DEFAULT_SETTINGS)))
        if k == "jti_reuse":
            if v not in ("reject", "allow"):
                raise ControlError(400, "jti_reuse: reject or allow")
        elif k == "clock_offset":
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise ControlError(400, "clock_offset: a number of seconds")
        elif k == "activity_seconds":
            if v is not None and (not isinstance(v, (int, float)) or v < 0):
                raise ControlError(400, "activity_seconds: a number >= 0, or null (count polls)")
        elif not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
            raise ControlError(400, "%s: a number >= 0" % k)
        s[k] = v
    return {"settings": s}


def c_assertions(st, body, q):
    cid = (q.get("client_id") or [None])[0]
    out = [a for a in st.api.assertions if cid is None or a["client_id"] == cid]
    return {"assertions": out}


def c_assertions_clear(st, body, q):
    st.api.assertions = []
    return {"ok": True}


def c_servers(st, body, q):
    org = st.api.org(body.get("org"))
    sid = st.api.add_server(org, body.get("name"), body.get("type") or "MDM", body.get("id"))
    return {"id": sid, "name": body.get("name")}


def c_devices(st, body, q):
    api = st.api
    org = api.org(body.get("org"))
    out = {}
    gen = body.get("generate")
    if gen is not None:
        if not isinstance(gen, dict):
            raise ControlError(400, "generate must be an object")
        fams = gen.get("families") or ["Mac", "iPhone", "iPad"]
        if isinstance(fams, str):
            fams = [f for f in fams.split(",") if f]
        server = None
        if gen.get("server"):
            server = api.find_server(org, gen["server"])
            if server is None:
                raise ControlError(404, "org %r has no server %r" % (org.name, gen["server"]))
        out["generated"] = api.generate(org, int(gen.get("count", 0)), str(gen.get("prefix", "A")),
                                        int(gen.get("start", 0)), int(gen.get("digits", 8)), fams, server)
    if "release" in body:
        out["released"] = api.release(org, _serials(body["release"], "release"))
    sets = body.get("set")
    if sets is not None:
        if not isinstance(sets, dict) or not all(isinstance(v, dict) or v is None for v in sets.values()):
            raise ControlError(400, "set: {serial: {attribute: value} | null}")
        for s, v in sets.items():
            if v is None:
                org.over.pop(s, None)
            else:
                org.over.setdefault(s, {}).update(v)
    toks = api.token_orgs(org.name)
    out["devices"] = len(api.all_serials(org, toks))
    return out


def c_applecare(st, body, q):
    serial = body.get("serial")
    if not isinstance(serial, str) or not serial:
        raise ControlError(400, "serial required")
    cov = body.get("coverage")
    if cov is None:
        st.api.applecare.pop(serial, None)
        return {"serial": serial, "coverage": st.api.applecare_for(serial)}
    if isinstance(cov, dict):
        cov = [cov]
    if not isinstance(cov, list) or not all(isinstance(c, dict) for c in cov):
        raise ControlError(400, "coverage: a list of coverage attribute objects, or null")
    st.api.applecare[serial] = [c.get("attributes", c) if isinstance(c.get("attributes"), dict) else c
                                for c in cov]
    return {"serial": serial, "coverage": st.api.applecare_for(serial)}


def c_activity_faults(st, body, q):
    org = st.api.org(body.get("org"))
    fail = body.get("fail") or {}
    if isinstance(fail, (list, str)):
        fail = {s: "DEVICE_NOT_ELIGIBLE" for s in _serials(fail, "fail")}
    if not isinstance(fail, dict):
        raise ControlError(400, "fail: {serial: error code | null} or serials")
    for s, code in fail.items():
        if code is None:
            org.fail.pop(s, None)
        else:
            org.fail[s] = str(code)
    if "next_failed" in body:
        n = body["next_failed"]
        if not isinstance(n, int) or n < 0:
            raise ControlError(400, "next_failed: an integer >= 0")
        org.next_failed = n
    return {"fail": org.fail, "next_failed": org.next_failed}


def c_state(st, body, q):
    name = (q.get("org") or [None])[0]
    st.api.tick()
    return st.api.snapshot(st.api.org(name, create=False))


def c_tokens(st, body, q):
    return {"tokens": [{"access_token": t, "client_id": v["client_id"], "expires": iso_ms(v["expires"]),
                        "revoked": v["revoked"]} for t, v in st.api.tokens.items()]}


def c_stats(st, body, q):
    return {"counts": {a.client_id: a.counts for a in st.api.accounts.values()},
            "tokens": {a.client_id: sum(1 for t in st.api.tokens.values()
                                        if t["client_id"] == a.client_id and not t["revoked"]
                                        and t["expires"] > time.time())
                       for a in st.api.accounts.values()}}


CONTROL = {
    ("POST", "/_mock/api/accounts"): c_accounts,
    ("GET", "/_mock/api/accounts"): c_accounts_list,
    ("POST", "/_mock/api/accounts/remove"): c_accounts_remove,
    ("POST", "/_mock/api/revoke"): c_revoke,
    ("POST", "/_mock/api/settings"): c_settings,
    ("GET", "/_mock/api/assertions"): c_assertions,
    ("POST", "/_mock/api/assertions/clear"): c_assertions_clear,
    ("POST", "/_mock/api/servers"): c_servers,
    ("POST", "/_mock/api/devices"): c_devices,
    ("POST", "/_mock/api/applecare"): c_applecare,
    ("POST", "/_mock/api/activity_faults"): c_activity_faults,
    ("GET", "/_mock/api/state"): c_state,
    ("GET", "/_mock/api/stats"): c_stats,
    ("GET", "/_mock/api/tokens"): c_tokens,
}
