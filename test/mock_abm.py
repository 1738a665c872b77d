#!/usr/bin/python3
"""mock_abm.py - an in-memory fake of Apple's device-assignment web service (ABM/ASM).

Test tool of the `ade` PostgreSQL extension. It speaks the part of the ABM API
that ade uses (OAuth 1.0a session, account, fetch, sync, profile define and
assign, and the device calls of 0.5: details, profile removal, disown,
activation lock) and has a control API under /_mock/ with which tests register tokens,
change devices, inject faults and read what the client sent.  This file is
the HTTP side (Apple's calls, the control API, faults as they are served);
what it serves from, the organisations and their devices, cursors, rules
and the request log, is test/mock_state.py.  On the same port it also
serves Apple's School and Business Manager API (OAuth 2 client assertions,
/v1/orgDevices, /v1/mdmServers, /v1/orgDeviceActivities, AppleCare):
test/mock_api.py answers it, from test/mock_api_state.py; an organisation
there is an org_name here, and what its tokens hold is its devices.
Python 3.11 standard library, and Debian's python3-cryptography for the
School and Business Manager API only; it binds to loopback only.

Run:
    /usr/bin/python3 test/mock_abm.py [--host 127.0.0.1] [--port 0]
        [--port-file PATH] [--tls-cert PEM --tls-key PEM] [--quiet]
    /usr/bin/python3 test/mock_abm.py --self-test      # exits 0 / 1

--port 0 picks a free port; once listening, the port number is written to
--port-file (temp file + rename). With --tls-cert/--tls-key it serves https.
SIGTERM / SIGINT stop it. test/mockctl.py is a CLI over the control API.

ABM endpoints (need User-Agent "pg-ade/...", X-Server-Protocol-Version: 10,
and on POST/PUT Content-Type: application/json;charset=UTF8, else 400
MISSING_HEADER):
    GET  /session                  OAuth 1.0a HMAC-SHA1 -> {"auth_session_token"}
    GET  /account                  -> account fields
    POST /server/devices           {"cursor"?, "limit"?} full fetch
    POST /devices/sync             {"cursor", "limit"?} changes
    POST /profile                  define -> {"profile_uuid"}
    PUT  /profile/devices          {"profile_uuid", "devices": [...]} assign
    GET  /profile?profile_uuid=U   the stored profile
    POST /devices                  {"devices": [serials]} details -> {"devices": {serial:
                                   {record..., "response_status"} or {"response_status":
                                   "NOT_ACCESSIBLE"}}}
    DELETE /profile/devices        {"devices": [...]} remove -> {"devices": {serial: SUCCESS |
                                   NOT_ACCESSIBLE | FAILED}} (a "modified" event, profile empty)
    POST /devices/disown           {"devices": [...]} release -> the same shape; the device
                                   leaves the organisation with no "deleted" event
    POST /device/activationlock    {"device", "escrow_key"?, "lost_message"?} ->
                                   {"serial_number", "response_status"}
Errors are bare codes in a text/plain body (token_rejected, signature_invalid,
T_C_NOT_SIGNED, UNAUTHORIZED, EXPIRED_CURSOR, INVALID_CURSOR,
EXHAUSTED_CURSOR, CURSOR_REQUIRED, CONFIG_NAME_REQUIRED, CONFIG_URL_REQUIRED,
DEVICE_LIMIT_EXCEEDED, INVALID_PROFILE, MALFORMED_REQUEST_BODY, NOT_FOUND).

School and Business Manager API endpoints (test/mock_api.py's header has
their rules; none needs the headers above):
    POST /auth/oauth2/token, /auth/oauth2/v2/token   client assertion -> access token
    GET  /v1/orgDevices, /v1/orgDevices/{serial}, .../relationships/assignedServer,
         .../appleCareCoverage, /v1/mdmServers, /v1/mdmServers/{id},
         /v1/mdmServers/{id}/relationships/devices, /v1/orgDeviceActivities/{id}
    POST /v1/orgDeviceActivities   ASSIGN_DEVICES | UNASSIGN_DEVICES
    GET  /activity-logs/{id}.csv   an activity's downloadUrl
An organisation's MDM servers: one per token of that org_name (id: its
server_uuid in upper case without dashes; name: its server_name), then
those POST /_mock/api/servers adds.  Its devices: every device its tokens
hold (on that token's server), then those POST /_mock/api/devices adds (on a
server that is no token, or on none).  An activity that moves a device onto
a token's server adds it to that token's feed ("added" event); off it
deletes it ("deleted" event), as POST /_mock/devices does.

Control API (no auth, JSON in and out, not header-checked, not logged).
"consumer_key" in a body may also be given as an org_name; errors are
{"error": "..."} with status 400 (bad body) or 404 (unknown org / endpoint).
    POST /_mock/reset              forget everything
    POST /_mock/tokens             {consumer_key?, consumer_secret?, access_token?,
                                    access_secret?, access_token_expiry?, org_name?,
                                    admin_id?, server_name?, server_uuid?, org_email?,
                                    org_phone?, org_address?, org_type?, org_id?,
                                    org_id_hash?, facilitator_id?, urls?,
                                    terms_expired?, rejected?}
                                   -> {"token": {5 fields}, "account": {...}}
    GET  /_mock/tokens             -> {"tokens": [{"token", "account", "flags"}]}
    POST /_mock/tokens/state       {consumer_key, terms_expired?, rejected?,
                                    expire_sessions?, expire_cursors?}
                                   -> {"terms_expired", "rejected", "sessions", "generation"}
    POST /_mock/devices            {consumer_key, generate?: {count, prefix="S",
                                    families=["Mac","iPhone","iPad"], start=0, digits=8},
                                    add?: [records], modify?: [partial records],
                                    delete?: [serials] | "S1,S2", drop?: [serials] (gone
                                    with no deleted event), events?: [raw records],
                                    op_date?, fill?: true}
                                   -> {"devices": count, "seq": last event seq}
    POST /_mock/clock              {"now": ISO 8601 | null} ABM's "now" for op_dates,
                                   echoes and fetched_until (null: the real time)
    POST /_mock/faults             {"rules": [rule, ...]} (or one rule) -> {"rules": n}
    GET  /_mock/faults             -> {"rules": [rules with what is left of skip/times]}
    POST /_mock/faults/clear
    POST /_mock/latency            {"ms": N, "jitter_ms"?: J, "consumer_key"?: CK,
                                    "client_id"?: an API account}
                                   every ABM request (of that token's org or
                                   API account, or all) is answered after N ms +- J (uniform),
                                   as Apple's round trips are, not loopback's;
                                   {"ms": 0} turns it off (as does reset)
    POST /_mock/assign_responses   {consumer_key, responses: {serial: FAILED|THROTTLED|
                                    NOT_ACCESSIBLE|SUCCESS|OMIT|null}, retry_after_seconds?}
    POST /_mock/echoes             {consumer_key, mode?: now|late|never, flush?: true}
                                   how ABM echoes a SUCCESS assignment back as a
                                   "modified" event: at once (the default), held
                                   back until a flush (late: the event as it was,
                                   op_date the assignment's), or never (the device
                                   record changes, no event) -> {"mode", "pending", "flushed"}
    GET  /_mock/held               -> {"held": {name: requests waiting}} (hold rules)
    POST /_mock/release            {name?} let the requests a hold rule holds go on
                                   (every hold when no name) -> {"released": [names]}
    GET  /_mock/log[?path=P&method=M] -> {"requests": [{seq, method, path, query,
                                    consumer_key, status, session, authorization,
                                    user_agent, content_type, body, time, fault?}]}
    POST /_mock/log/clear
    GET  /_mock/stats              -> {"counts": {"POST /devices/sync": n, ...},
                                    "requests": n, "serve_seconds": s}
    GET  /_mock/state?consumer_key=CK -> {"devices": {serial: record},
                                    "profiles": {uuid: profile}, "sessions": n,
                                    "seq": last event seq, "generation": g,
                                    "terms_expired", "rejected", "forced": {serial: answer},
                                    "retry_after_seconds"}
  The School and Business Manager API's ("org" is an org_name):
    POST /_mock/api/accounts       {org, client_id?, key_id?, school?, public_key_pem? |
                                    pkcs8?} -> {client_id, key_id, org, scope,
                                    private_key_pem (when the mock made the key)}
                                   (the same client_id again: a new key, same counts)
    GET  /_mock/api/accounts       -> {"accounts": [{client_id, key_id, org, scope,
                                    public_key_pem, created}]}
    POST /_mock/api/accounts/remove {client_id}
    POST /_mock/api/revoke         {client_id} its live access tokens answer 401
                                   from now on -> {"revoked": n}
    POST /_mock/api/settings       {token_lifetime?: s (3600), activity_polls?: n (2:
                                    the 2nd GET finds it finished), activity_seconds?:
                                    s | null (null: by polls; else finished s after
                                    the POST, without a poll), download_seconds?: s
                                    (600), jti_reuse?: reject | allow} -> {"settings"}
    GET  /_mock/api/assertions[?client_id=C] -> {"assertions": [{seq, time,
                                    client_id, grant_type, scope, client_assertion_type,
                                    header, claims, signature_bytes, assertion, ok, error}]}
    POST /_mock/api/assertions/clear
    POST /_mock/api/servers        {org, name, type?: MDM, id?} -> {"id", "name"}
    POST /_mock/api/devices        {org, generate?: {count, prefix="A", start=0,
                                    digits=8, families=["Mac","iPhone","iPad"],
                                    server?: name or id (a token's: into its feed;
                                    none: unassigned)}, release?: [serials] (out of
                                    the org: gone from lists, releasedFromOrgDateTime
                                    on the single GET; a token's device leaves its
                                    feed with no event, as disown), set?: {serial:
                                    {attribute: value} | null}} -> {"devices": n, ...}
    POST /_mock/api/applecare      {serial, coverage: [attributes...] | null (the
                                    made-up one: a third ACTIVE ending within 90
                                    days, a third INACTIVE, a third none)}
    POST /_mock/api/activity_faults {org, fail?: {serial: code | null} | [serials],
                                    next_failed?: n} forced per-device failures
                                    (COMPLETED_WITH_ERROR); the next n activities
                                    end FAILED, nothing moved
    GET  /_mock/api/state?org=ORG  -> {servers, devices: {serial: {server, token}},
                                    released, overrides, activities, fail, accounts}
    GET  /_mock/api/stats          -> {"counts": {client_id: {"GET /v1/orgDevices": n,
                                    "GET /v1/orgDevices/{id}": n, ...}}, "tokens": {client_id:
                                    live access tokens}}
    GET  /_mock/api/tokens         -> {"tokens": [{access_token, client_id, expires, revoked}]}
  API requests are logged (with "client_id") and counted in /_mock/stats as
  "METHOD /path" (no query string) and, for a path with an id, also under
  its template ("GET /v1/orgDevices/{id}/appleCareCoverage").

Fault rule keys (all optional): method, path (exact or fnmatch pattern),
consumer_key, client_id (an API account's client id or org name: its token
and /v1 requests only), skip (0), times (1; -1 = forever), status, body (text or JSON),
headers, hang_seconds, cut_body, truncate_json, json_drop, repeat_cursor,
rotate_session, pad_bytes, body_b64 (the body as base64: any bytes, invalid
UTF-8 included), hold (a name: the request waits, before it is answered,
until POST /_mock/release of that name, the client goes away, or
hold_seconds, default 120, pass; then the rest of the rule applies). The first matching live rule wins; a rule still
skipping lets the request go on to the next rules.
"""

import argparse
import base64
import bisect
import fnmatch
import hmac
import json
import os
import random
import select
import signal
import socket
import socketserver
import ssl
import sys
import threading
import time
import traceback
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Apple's School and Business Manager API beside it (test/mock_api.py, its
# state test/mock_api_state.py)
import mock_api
from mock_api_state import ApiState
# the organisations, fault rules and request log (test/mock_state.py)
from mock_state import (
    ASSIGN_VALUES, DEFAULT_LIMIT, FIXTURE, JSON_TYPE, MAX_LIMIT, TEXT_TYPE, ControlError, State,
    decode_cursor, encode_cursor, is_loopback, oauth_enc, oauth_signature, parse_oauth_header,
    st_now)

# ---------------------------------------------------------------- ABM handlers
# Each runs under the state lock and returns (status, payload, extra_headers);
# payload is a dict/list (JSON) or str (bare error code, text/plain).

def h_session(st, req):
    params = parse_oauth_header(req.headers.get("Authorization"))
    if not params:
        return 401, "UNAUTHORIZED", None
    d = {}
    for k, v in params:
        d.setdefault(k, v)
    org = st.orgs.get(d.get("oauth_consumer_key", ""))
    if org is None or not hmac.compare_digest(
            d.get("oauth_token", "").encode(), org.token["access_token"].encode()):
        return 401, "token_rejected", None
    req.org = org
    if org.rejected:
        return 401, "token_rejected", None
    if d.get("oauth_signature_method") != "HMAC-SHA1" or d.get("oauth_version", "1.0") != "1.0":
        return 401, "signature_invalid", None
    sig = d.get("oauth_signature", "")
    signed = [(k, v) for k, v in params if k not in ("realm", "oauth_signature")]
    signed += urllib.parse.parse_qsl(req.query, keep_blank_values=True)
    host = req.headers.get("Host", "")
    scheme = req.server.scheme
    candidates = {host}
    norm = host.lower()
    if (scheme == "http" and norm.endswith(":80")) or (scheme == "https" and norm.endswith(":443")):
        norm = norm.rsplit(":", 1)[0]
    candidates.add(norm)
    ok = False
    for h in candidates:
        want = oauth_signature("GET", "%s://%s%s" % (scheme, h, req.req_path),
                               signed, org.token["consumer_secret"], org.token["access_secret"])
        if hmac.compare_digest(want.encode(), sig.encode()):
            ok = True
    if not ok:
        return 401, "signature_invalid", None
    nonce = d.get("oauth_nonce", "")
    if not nonce or nonce in org.nonces:
        return 401, "signature_invalid", None
    org.nonces.add(nonce)
    if org.terms_expired:
        return 403, "T_C_NOT_SIGNED", None
    return 200, {"auth_session_token": st.new_session(org)}, None


def _limit(body):
    lim = body.get("limit", None)
    if lim is None:
        return DEFAULT_LIMIT
    if isinstance(lim, bool) or not isinstance(lim, (int, float)):
        if isinstance(lim, str) and lim.strip().isdigit():
            lim = int(lim)
        else:
            raise ValueError
    return max(1, min(MAX_LIMIT, int(lim)))


def _json_body(req):
    if req.body_json is None or not isinstance(req.body_json, dict):
        if not req.body_raw.strip():
            return {}
        return None
    return req.body_json


def h_account(st, req):
    return 200, st.account_json(req.org), None


def h_fetch(st, req):
    org = req.org
    body = _json_body(req)
    if body is None:
        return 400, "MALFORMED_REQUEST_BODY", None
    try:
        limit = _limit(body)
    except ValueError:
        return 400, "MALFORMED_REQUEST_BODY", None
    cur = body.get("cursor")
    if cur in (None, ""):
        last, start_seq = "", st.seq
        first = True
        org.fetches += 1
        fetch_id = org.fetches
    else:
        c = decode_cursor(cur)
        if c is None or c["o"] != org.id:
            return 400, "INVALID_CURSOR", None
        if c["g"] != org.generation:
            return 400, "EXPIRED_CURSOR", None
        fetch_id = c.get("f", 0)
        # as Apple documents it: "the cursor had returned all devices in
        # previous calls" -- a fetch's final cursor, and any cursor of a
        # fetch whose last page was served already (sent again by a client
        # that lost that page)
        if c["t"] != "fetch" or fetch_id in org.finished_fetches:
            return 400, "EXHAUSTED_CURSOR", None
        last, start_seq = c["l"], c["q"]
        first = False
    serials = org.sorted_serials()
    i = 0 if first else bisect.bisect_right(serials, last)
    page = serials[i:i + limit]
    more = i + limit < len(serials)
    devs = org.devices
    out = []
    for s in page:
        r = devs[s]
        if "op_type" in r or "op_date" in r:
            r = {k: v for k, v in r.items() if k not in ("op_type", "op_date")}
        out.append(r)
    if more:
        cursor = encode_cursor(org.id, "fetch", page[-1], start_seq, org.generation, fetch_id)
    else:
        org.finished_fetches.add(fetch_id)
        cursor = encode_cursor(org.id, "sync", "", start_seq, org.generation, fetch_id)
    return 200, {"devices": out, "cursor": cursor, "fetched_until": st_now(st),
                 "more_to_follow": more}, None


def h_sync(st, req):
    org = req.org
    body = _json_body(req)
    if body is None:
        return 400, "MALFORMED_REQUEST_BODY", None
    cur = body.get("cursor")
    if cur in (None, ""):
        return 400, "CURSOR_REQUIRED", None
    try:
        limit = _limit(body)
    except ValueError:
        return 400, "MALFORMED_REQUEST_BODY", None
    c = decode_cursor(cur)
    if c is None or c["o"] != org.id:
        return 400, "INVALID_CURSOR", None
    if c["g"] != org.generation:
        return 400, "EXPIRED_CURSOR", None
    if c["t"] != "sync":
        return 400, "INVALID_CURSOR", None
    i = bisect.bisect_right(org.event_seqs, c["q"])
    evs = org.events[i:i + limit]
    more = i + limit < len(org.events)
    out = []
    for seq, op, od, rec in evs:
        if op is None:            # raw event, verbatim
            out.append(rec)
        elif op == "deleted":
            out.append({"serial_number": rec["serial_number"], "op_type": op, "op_date": od})
        else:
            e = dict(rec)
            e["op_type"] = op
            e["op_date"] = od
            out.append(e)
    last = evs[-1][0] if evs else c["q"]
    return 200, {"devices": out,
                 "cursor": encode_cursor(org.id, "sync", "", last, org.generation),
                 "fetched_until": st_now(st), "more_to_follow": more}, None


def _assign(st, org, profile_uuid, serials):
    now = st_now(st)
    answer = {}
    throttled = False
    for s in serials:
        if not isinstance(s, str):
            continue
        forced = org.forced.get(s)
        if forced == "OMIT":
            continue
        if forced and forced != "SUCCESS":
            res = forced
        elif s in org.devices:
            res = "SUCCESS"
        else:
            res = "SUCCESS" if forced == "SUCCESS" else "NOT_ACCESSIBLE"
        if res == "SUCCESS" and s in org.devices:
            rec = dict(org.devices[s])
            rec["profile_uuid"] = profile_uuid
            rec["profile_status"] = "assigned"
            rec["profile_assign_time"] = now
            if org.echo == "now":
                st.put_device(org, rec, "modified", now)
            else:               # the device changes; its event comes late or never
                org.devices[s] = rec
                if org.echo == "late":
                    org.late_echoes.append((rec, now))
        if res == "THROTTLED":
            throttled = True
        answer[s] = res
    return answer, throttled


def h_profile_define(st, req):
    org = req.org
    body = req.body_json
    if not isinstance(body, dict):
        return 400, "MALFORMED_REQUEST_BODY", None
    if not isinstance(body.get("profile_name"), str) or not body["profile_name"]:
        return 400, "CONFIG_NAME_REQUIRED", None
    if not isinstance(body.get("url"), str) or not body["url"]:
        return 400, "CONFIG_URL_REQUIRED", None
    pid = uuid.uuid4().hex.upper()
    prof = dict(body)
    prof.pop("devices", None)
    org.profiles[pid] = prof
    out = {"profile_uuid": pid}
    devs = body.get("devices")
    if isinstance(devs, list) and devs:
        if len(devs) > MAX_LIMIT:
            return 400, "DEVICE_LIMIT_EXCEEDED", None
        out["devices"], _ = _assign(st, org, pid, devs)
    return 200, out, None


def h_profile_get(st, req):
    q = urllib.parse.parse_qs(req.query)
    pid = (q.get("profile_uuid") or [""])[0]
    prof = req.org.profiles.get(pid)
    if prof is None:
        return 404, "NOT_FOUND", None
    out = dict(prof)
    out["profile_uuid"] = pid
    return 200, out, None


def h_assign(st, req):
    org = req.org
    body = req.body_json
    if not isinstance(body, dict) or not isinstance(body.get("devices", []), list):
        return 400, "MALFORMED_REQUEST_BODY", None
    devs = body.get("devices") or []
    if len(devs) > MAX_LIMIT:
        return 400, "DEVICE_LIMIT_EXCEEDED", None
    pid = body.get("profile_uuid")
    if not isinstance(pid, str) or pid not in org.profiles:
        return 400, "INVALID_PROFILE", None
    answer, throttled = _assign(st, org, pid, devs)
    out = {"profile_uuid": pid, "devices": answer}
    if throttled and org.retry_after is not None:
        out["retry_after_seconds"] = org.retry_after
    return 200, out, None


def _serials(req):
    """The body's "devices" list of serials (at most MAX_LIMIT), or an error answer."""
    body = req.body_json
    if not isinstance(body, dict) or not isinstance(body.get("devices"), list) or not body["devices"]:
        return None, (400, "MALFORMED_REQUEST_BODY", None)
    devs = body["devices"]
    if len(devs) > MAX_LIMIT:
        return None, (400, "DEVICE_LIMIT_EXCEEDED", None)
    if not all(isinstance(d, str) for d in devs):
        return None, (400, "MALFORMED_REQUEST_BODY", None)
    return devs, None


def h_details(st, req):
    """POST /devices: each serial's record with response_status, or NOT_ACCESSIBLE."""
    devs, err = _serials(req)
    if err:
        return err
    org = req.org
    out = {}
    for s in devs:
        forced = org.forced.get(s)
        if forced == "OMIT":                # missing from the answer
            continue
        if s in org.devices and forced in (None, "SUCCESS"):
            rec = dict(org.devices[s])
            rec["response_status"] = "SUCCESS"
            out[s] = rec
        else:
            out[s] = {"response_status": forced if forced and forced != "SUCCESS" else "NOT_ACCESSIBLE"}
    return 200, {"devices": out}, None


def h_remove_profile(st, req):
    """DELETE /profile/devices: SUCCESS clears the device's profile (a modified event)."""
    devs, err = _serials(req)
    if err:
        return err
    org = req.org
    now = st_now(st)
    out = {}
    for s in devs:
        forced = org.forced.get(s)
        if forced == "OMIT":                # missing from the answer
            continue
        if forced and forced != "SUCCESS":
            out[s] = forced
        elif s in org.devices:
            rec = dict(org.devices[s])
            rec["profile_uuid"] = ""
            rec["profile_status"] = "empty"
            rec.pop("profile_assign_time", None)
            st.put_device(org, rec, "modified", now)
            out[s] = "SUCCESS"
        else:
            out[s] = "NOT_ACCESSIBLE"
    return 200, {"devices": out}, None


def h_disown(st, req):
    """POST /devices/disown: SUCCESS takes the device out of the organisation.

    As Apple often does, no "deleted" event follows (the device is simply no
    longer listed by a full fetch); never THROTTLED."""
    devs, err = _serials(req)
    if err:
        return err
    org = req.org
    out = {}
    for s in devs:
        forced = org.forced.get(s)
        if forced == "OMIT":                # missing from the answer
            continue
        if forced and forced not in ("SUCCESS", "THROTTLED"):
            out[s] = forced
        elif s in org.devices:
            del org.devices[s]
            org._sorted = None
            out[s] = "SUCCESS"
        else:
            out[s] = "NOT_ACCESSIBLE"
    return 200, {"devices": out}, None


ACTIVATION_LOCK_ANSWERS = ("SUCCESS", "NOT_ACCESSIBLE", "ORG_NOT_SUPPORTED", "DEVICE_ALREADY_LOCKED", "FAILED")


def h_activation_lock(st, req):
    """POST /device/activationlock {"device", "escrow_key"?, "lost_message"?}."""
    body = req.body_json
    if not isinstance(body, dict) or not isinstance(body.get("device"), str) or not body["device"]:
        return 400, "MALFORMED_REQUEST_BODY", None
    for k in ("escrow_key", "lost_message"):
        if k in body and not isinstance(body[k], str):
            return 400, "MALFORMED_REQUEST_BODY", None
    org = req.org
    s = body["device"]
    forced = org.forced.get(s)
    if forced in ACTIVATION_LOCK_ANSWERS:
        res = forced
    elif s not in org.devices:
        res = "NOT_ACCESSIBLE"
    elif org.devices[s].get("activation_locked"):
        res = "DEVICE_ALREADY_LOCKED"
    else:
        rec = dict(org.devices[s])
        rec["activation_locked"] = True
        org.devices[s] = rec            # no event: the device record Apple lists does not change
        res = "SUCCESS"
    return 200, {"serial_number": s, "response_status": res}, None


ROUTES = {
    ("GET", "/session"): h_session,
    ("GET", "/account"): h_account,
    ("POST", "/server/devices"): h_fetch,
    ("POST", "/devices/sync"): h_sync,
    ("POST", "/profile"): h_profile_define,
    ("GET", "/profile"): h_profile_get,
    ("PUT", "/profile/devices"): h_assign,
    ("POST", "/devices"): h_details,
    ("DELETE", "/profile/devices"): h_remove_profile,
    ("POST", "/devices/disown"): h_disown,
    ("POST", "/device/activationlock"): h_activation_lock,
}


# ---------------------------------------------------------------- control API

def c_reset(st, body, q):
    st.reset()
    st.api.reset()
    return {"ok": True}


def c_tokens(st, body, q):
    return st.register(body)


def c_tokens_list(st, body, q):
    return {"tokens": [{"token": dict(o.token), "account": dict(o.account),
                        "flags": {"terms_expired": o.terms_expired, "rejected": o.rejected}}
                       for o in st.orgs.values()]}


def c_token_state(st, body, q):
    org = st.org_for(body)
    if "terms_expired" in body:
        org.terms_expired = bool(body["terms_expired"])
    if "rejected" in body:
        org.rejected = bool(body["rejected"])
    if body.get("expire_sessions"):
        for t in st.org_sessions(org):
            del st.sessions[t]
    if body.get("expire_cursors"):
        org.generation += 1
    if body.get("forget_profiles"):
        # ABM no longer knows the profiles it defined (they were deleted)
        org.profiles.clear()
    return {"terms_expired": org.terms_expired, "rejected": org.rejected,
            "sessions": len(st.org_sessions(org)), "generation": org.generation}


def c_devices(st, body, q):
    return st.mutate_devices(body)


RULE_KEYS = {"method", "path", "consumer_key", "skip", "times", "status", "body",
             "headers", "hang_seconds", "cut_body", "truncate_json", "json_drop",
             "repeat_cursor", "rotate_session", "pad_bytes", "comment", "body_b64",
             "hold", "hold_seconds", "client_id"}


def c_clock(st, body, q):
    now = body.get("now")
    if now is not None and not isinstance(now, str):
        raise ControlError(400, "now must be an ISO 8601 string or null")
    st.vnow = now
    return {"now": st_now(st)}


def c_faults(st, body, q):
    rules = body.get("rules") if "rules" in body else [body]
    if not isinstance(rules, list):
        raise ControlError(400, "rules must be a list")
    for r in rules:
        if not isinstance(r, dict):
            raise ControlError(400, "a rule must be an object")
        bad = set(r) - RULE_KEYS
        if bad:
            raise ControlError(400, "unknown rule keys: %s" % ", ".join(sorted(bad)))
        r = dict(r)
        r.setdefault("skip", 0)
        r.setdefault("times", 1)
        if r.get("method"):
            r["method"] = r["method"].upper()
        if "headers" in r and not isinstance(r["headers"], dict):
            raise ControlError(400, "headers must be an object")
        if "json_drop" in r and isinstance(r["json_drop"], str):
            r["json_drop"] = [r["json_drop"]]
        r["hits"] = 0
        if r.get("hold") is not None:
            if not isinstance(r["hold"], str):
                raise ControlError(400, "hold must be a name")
            st.holds[r["hold"]] = threading.Event()
        st.rules.append(r)
    return {"rules": len(st.rules)}


def c_faults_list(st, body, q):
    return {"rules": st.rules}


def c_faults_clear(st, body, q):
    st.rules = []
    return {"rules": 0}


def c_assign_responses(st, body, q):
    org = st.org_for(body)
    resp = body.get("responses") or {}
    if not isinstance(resp, dict):
        raise ControlError(400, "responses must be an object")
    for s, v in resp.items():
        if v is None:
            org.forced.pop(s, None)
        elif v in ASSIGN_VALUES:
            org.forced[s] = v
        else:
            raise ControlError(400, "bad assign response %r" % (v,))
    if "retry_after_seconds" in body:
        org.retry_after = body["retry_after_seconds"]
    return {"responses": org.forced, "retry_after_seconds": org.retry_after}


def c_echoes(st, body, q):
    org = st.org_for(body)
    mode = body.get("mode")
    if mode is not None:
        if mode not in ("now", "late", "never"):
            raise ControlError(400, "mode must be now, late or never")
        org.echo = mode
    flushed = 0
    if body.get("flush"):
        for rec, od in org.late_echoes:
            # an echo of a device ABM no longer holds here is gone with it
            if rec["serial_number"] in org.devices:
                st.add_event(org, "modified", rec, od)
                flushed += 1
        org.late_echoes = []
    return {"mode": org.echo, "pending": len(org.late_echoes), "flushed": flushed}


def c_held(st, body, q):
    return {"held": {n: getattr(e, "waiting", 0) for n, e in st.holds.items() if not e.is_set()}}


def c_release(st, body, q):
    name = body.get("name")
    names = [name] if name is not None else list(st.holds)
    for n in names:
        if n in st.holds:
            st.holds[n].set()
    return {"released": names}


def c_latency(st, body, q):
    ms, jitter = body.get("ms"), body.get("jitter_ms", 0)
    if not isinstance(ms, (int, float)) or not isinstance(jitter, (int, float)) \
            or ms < 0 or jitter < 0 or jitter > ms or ms > 600000:
        raise ControlError(400, "ms and jitter_ms: numbers, 0 <= jitter_ms <= ms <= 600000")
    ck = body.get("consumer_key") or body.get("client_id")
    if ms == 0:
        st.latency.pop(ck, None)
    else:
        st.latency[ck] = (float(ms), float(jitter))
    return {"latency": {str(k): v for k, v in st.latency.items()}}


def c_log(st, body, q):
    reqs = st.log
    path = (q.get("path") or [None])[0]
    method = (q.get("method") or [None])[0]
    if path:
        reqs = [r for r in reqs if r["path"] == path]
    if method:
        reqs = [r for r in reqs if r["method"] == method.upper()]
    return {"requests": reqs}


def c_log_clear(st, body, q):
    st.log = []
    return {"ok": True}


def c_stats(st, body, q):
    return {"counts": st.counts, "requests": st.requests,
            "serve_seconds": round(st.serve_seconds, 6)}


def c_state(st, body, q):
    ck = (q.get("consumer_key") or [None])[0]
    return st.snapshot(st.org_for({"consumer_key": ck}))


CONTROL = {
    ("POST", "/_mock/reset"): c_reset,
    ("POST", "/_mock/tokens"): c_tokens,
    ("GET", "/_mock/tokens"): c_tokens_list,
    ("POST", "/_mock/tokens/state"): c_token_state,
    ("POST", "/_mock/devices"): c_devices,
    ("POST", "/_mock/clock"): c_clock,
    ("POST", "/_mock/faults"): c_faults,
    ("GET", "/_mock/faults"): c_faults_list,
    ("POST", "/_mock/faults/clear"): c_faults_clear,
    ("POST", "/_mock/assign_responses"): c_assign_responses,
    ("POST", "/_mock/echoes"): c_echoes,
    ("GET", "/_mock/held"): c_held,
    ("POST", "/_mock/release"): c_release,
    ("POST", "/_mock/latency"): c_latency,
    ("GET", "/_mock/log"): c_log,
    ("POST", "/_mock/log/clear"): c_log_clear,
    ("GET", "/_mock/stats"): c_stats,
    ("GET", "/_mock/state"): c_state,
}
CONTROL.update(mock_api.CONTROL)       # /_mock/api/...: the School and Business Manager API


# ---------------------------------------------------------------- HTTP layer

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = 300               # idle keep-alive connections end after this

    # http.server calls do_<METHOD>
    def do_GET(self):
        self.dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_GET

    def version_string(self):
        return "mock-abm/1.0"

    def log_message(self, fmt, *args):
        if not self.server.quiet:
            sys.stderr.write("mock_abm: %s %s\n" % (self.address_string(), fmt % args))

    # ---- plumbing

    def read_body(self):
        te = self.headers.get("Transfer-Encoding", "")
        if "chunked" in te.lower():
            chunks = []
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    break
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
            return b"".join(chunks)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def send_bytes(self, status, body, ctype, headers=None, cut=False):
        if self.command == "HEAD":
            body = b""
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        if cut:
            self.send_header("Connection", "close")
        self.end_headers()
        if cut:
            self.wfile.write(body[:len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        else:
            self.wfile.write(body)

    def client_gone(self):
        sock = self.connection
        try:
            r, _, _ = select.select([sock], [], [], 0)
            if not r:
                return False
            data = socket.socket.recv(sock, 1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            # plain http: b'' = EOF; https: bytes now can only be a close alert
            return data == b"" or isinstance(sock, ssl.SSLSocket)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return True

    def hold(self, ev, seconds):
        """wait until ev is set (released), the client is gone (False), or
        seconds pass"""
        with self.server.state.lock:
            ev.waiting = getattr(ev, "waiting", 0) + 1
        try:
            end = time.monotonic() + float(seconds)
            while not ev.is_set() and time.monotonic() < end:
                if self.client_gone():
                    return False
                ev.wait(0.02)
            return True
        finally:
            with self.server.state.lock:
                ev.waiting -= 1

    def hang(self, seconds):
        end = time.monotonic() + float(seconds)
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return True
            if self.client_gone():
                return False
            time.sleep(min(0.05, left))

    # ---- dispatch

    def dispatch(self):
        parts = urllib.parse.urlsplit(self.path)
        self.req_path = parts.path or "/"
        self.query = parts.query
        try:
            self.body_raw = self.read_body()
        except (ValueError, OSError):
            self.close_connection = True
            return
        if self.req_path.startswith("/_mock/") or self.req_path == "/_mock":
            self.control()
        else:
            try:
                self.abm()
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                self.close_connection = True
            except Exception:
                traceback.print_exc()
                try:
                    self.send_bytes(500, b"INTERNAL_ERROR", TEXT_TYPE)
                except OSError:
                    pass
                self.close_connection = True

    def control(self):
        st = self.server.state
        try:
            body = json.loads(self.body_raw) if self.body_raw.strip() else {}
        except ValueError:
            body = None
        fn = CONTROL.get((self.command, self.req_path))
        try:
            if fn is None:
                raise ControlError(404, "unknown control endpoint %s %s" % (self.command, self.req_path))
            if not isinstance(body, dict):
                raise ControlError(400, "body must be a JSON object")
            q = urllib.parse.parse_qs(self.query)
            with st.lock:
                out = fn(st, body, q)
                data = json.dumps(out, separators=(",", ":")).encode()
            status = 200
        except ControlError as e:
            status, data = e.status, json.dumps({"error": e.message}).encode()
        except (ValueError, TypeError, KeyError) as e:
            status, data = 400, json.dumps({"error": "bad request: %s" % e}).encode()
        self.send_bytes(status, data, "application/json")

    def abm(self):
        st = self.server.state
        t0 = time.perf_counter()
        self.org = None
        raw = self.body_raw
        try:
            self.body_json = json.loads(raw) if raw.strip() else None
            logged_body = self.body_json
        except ValueError:
            self.body_json = None
            logged_body = raw.decode("utf-8", "replace")
        h = self.headers
        session = h.get("X-ADM-Auth-Session")
        # Apple's School and Business Manager API (test/mock_api.py): its own
        # auth, no device-assignment headers; everything else here is shared
        api = mock_api.owns(self.req_path)
        self.api_account = None
        if api:
            api_fn, api_args, keys = mock_api.match(self.command, self.req_path)
        else:
            keys = ["%s %s" % (self.command, self.req_path)]
        entry = {"seq": 0, "method": self.command, "path": self.req_path,
                 "query": self.query, "consumer_key": None, "client_id": None, "status": None,
                 "session": session, "authorization": h.get("Authorization") is not None,
                 "user_agent": h.get("User-Agent"), "content_type": h.get("Content-Type"),
                 "body": logged_body, "time": round(time.time(), 3)}
        with st.lock:
            st.log_seq += 1
            entry["seq"] = st.log_seq
            st.log.append(entry)
            for key in keys:
                st.counts[key] = st.counts.get(key, 0) + 1
            st.requests += 1
            if hasattr(st, "api"):
                st.api.tick()           # activities due by the clock finish first

        def finish(status, **extra):
            with st.lock:
                entry["status"] = status
                entry.update(extra)
                if self.org is not None:
                    entry["consumer_key"] = self.org.consumer_key
                st.serve_seconds += time.perf_counter() - t0 - hung

        hung = 0.0
        ct = (h.get("Content-Type") or "").replace(" ", "").lower()
        if not api and (not (h.get("User-Agent") or "").startswith("pg-ade/")
                        or (h.get("X-Server-Protocol-Version") or "").strip() != "10"
                        or (self.command in ("POST", "PUT") and ct != JSON_TYPE.lower())):
            self.send_bytes(400, b"MISSING_HEADER", TEXT_TYPE)
            finish(400)
            return

        route = ROUTES.get((self.command, self.req_path)) if not api else None
        # which org is this for, and does a fault rule apply
        with st.lock:
            if api:
                acc = mock_api.identify(st, self)
                if acc is not None:
                    entry["client_id"] = acc.client_id
                    for key in keys:
                        acc.counts[key] = acc.counts.get(key, 0) + 1
            elif self.req_path == "/session":
                p = parse_oauth_header(h.get("Authorization")) or []
                ck = dict(p).get("oauth_consumer_key")
                self.org = st.orgs.get(ck) if ck else None
            elif session is not None and session in st.sessions:
                self.org = st.orgs.get(st.sessions[session])
            rule, rule_idx = None, None
            for i, r in enumerate(st.rules):
                if r["times"] == 0:
                    continue
                if r.get("method") and r["method"] != self.command:
                    continue
                if r.get("path") and not (r["path"] == self.req_path
                                          or fnmatch.fnmatchcase(self.req_path, r["path"])):
                    continue
                if r.get("consumer_key") and (self.org is None or
                                              r["consumer_key"] not in (self.org.consumer_key,
                                                                        self.org.account.get("org_name"))):
                    continue
                if r.get("client_id") and (self.api_account is None or
                                           r["client_id"] not in (self.api_account.client_id,
                                                                  self.api_account.org)):
                    continue
                if r["skip"] > 0:
                    r["skip"] -= 1
                    continue
                if r["times"] > 0:
                    r["times"] -= 1
                r["hits"] += 1
                rule, rule_idx = dict(r), i
                break
            lat = st.latency.get(self.org.consumer_key if self.org is not None else
                                 self.api_account.client_id if self.api_account is not None else None) \
                or st.latency.get(None)
        fx = {"fault": rule_idx} if rule is not None else {}

        # the round trip of a real ABM: counted as waiting, not as serving
        if lat:
            th = time.perf_counter()
            alive = self.hang(max(0.0, lat[0] + random.uniform(-lat[1], lat[1])) / 1000.0)
            hung += time.perf_counter() - th
            if not alive:
                self.close_connection = True
                finish(None, disconnected=True, **fx)
                return

        if rule and rule.get("hold") is not None:
            ev = st.holds.get(rule["hold"])
            if ev is not None:
                th = time.perf_counter()
                alive = self.hold(ev, rule.get("hold_seconds", 120))
                hung += time.perf_counter() - th
                if not alive:
                    self.close_connection = True
                    finish(None, disconnected=True, **fx)
                    return

        if rule and rule.get("hang_seconds"):
            th = time.perf_counter()
            alive = self.hang(rule["hang_seconds"])
            hung = time.perf_counter() - th
            if not alive:
                self.close_connection = True
                finish(None, disconnected=True, **fx)
                return

        headers = {}
        ctype = TEXT_TYPE
        if rule and ("status" in rule or "body" in rule or "body_b64" in rule):
            status = int(rule.get("status", 200))
            payload = rule.get("body", "")
            if payload is None:
                payload = ""
            if "body_b64" in rule:
                payload = base64.b64decode(rule["body_b64"])
        elif rule and rule.get("repeat_cursor"):
            cur = self.body_json.get("cursor") if isinstance(self.body_json, dict) else None
            status, payload = 200, {"devices": [], "cursor": cur, "more_to_follow": True,
                                    "fetched_until": st_now(st)}
        elif api:
            with st.lock:
                status, payload, hx = mock_api.answer(st, self, api_fn, api_args)
                headers.update(hx or {})
                if isinstance(payload, (dict, list)):
                    if rule and isinstance(payload, dict):
                        for k in rule.get("json_drop") or []:
                            payload.pop(k, None)
                        if rule.get("pad_bytes"):
                            payload["padding"] = "x" * int(rule["pad_bytes"])
                    payload = json.dumps(payload, separators=(",", ":"))
                    ctype = mock_api.API_JSON
                else:
                    ctype = headers.pop("Content-Type", TEXT_TYPE)
        elif route is None:
            status, payload = 404, "NOT_FOUND"
        else:
            with st.lock:
                if route is h_session:
                    status, payload, hx = route(st, self)
                else:
                    org = self.org
                    if org is None:
                        status, payload, hx = 401, "UNAUTHORIZED", None
                    elif org.terms_expired:
                        status, payload, hx = 403, "T_C_NOT_SIGNED", None
                    elif org.rejected:
                        status, payload, hx = 401, "token_rejected", None
                    else:
                        status, payload, hx = route(st, self)
                headers.update(hx or {})
                if isinstance(payload, (dict, list)):
                    if rule and isinstance(payload, dict):
                        for k in rule.get("json_drop") or []:
                            payload.pop(k, None)
                        if rule.get("pad_bytes"):
                            payload["padding"] = "x" * int(rule["pad_bytes"])
                    payload = json.dumps(payload, separators=(",", ":"))
                    ctype = JSON_TYPE
                if rule and rule.get("rotate_session") and self.org is not None \
                        and session in st.sessions:
                    del st.sessions[session]
                    headers["X-ADM-Auth-Session"] = st.new_session(self.org)
        if isinstance(payload, (dict, list)):
            payload = json.dumps(payload, separators=(",", ":"))
            ctype = JSON_TYPE
        data = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
        if rule and rule.get("truncate_json"):
            data = data[:len(data) // 2]
        if rule and rule.get("headers"):
            headers.update(rule["headers"])
        cut = bool(rule and rule.get("cut_body"))
        self.send_bytes(status, data, ctype, headers, cut=cut)
        finish(status, **fx)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr, handler, state, ssl_ctx=None, quiet=False):
        if ":" in addr[0]:
            self.address_family = socket.AF_INET6
        self.state = state
        self.ssl_ctx = ssl_ctx
        self.scheme = "https" if ssl_ctx else "http"
        self.quiet = quiet
        super().__init__(addr, handler)

    def server_bind(self):
        # skip HTTPServer.server_bind's reverse DNS lookup
        socketserver.TCPServer.server_bind(self)
        self.server_name = self.server_address[0]
        self.server_port = self.server_address[1]

    def finish_request(self, request, client_address):
        if self.ssl_ctx is None:
            return super().finish_request(request, client_address)
        request.settimeout(15)
        try:
            tls = self.ssl_ctx.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as e:
            if not self.quiet:
                sys.stderr.write("mock_abm: TLS handshake failed: %s\n" % e)
            return
        tls.settimeout(None)
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            try:
                tls.close()
            except OSError:
                pass

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, ssl.SSLError, TimeoutError)):
            return
        super().handle_error(request, client_address)


# ---------------------------------------------------------------- self-test

def self_test():
    ok = True
    f = FIXTURE
    params = [("oauth_consumer_key", f["consumer_key"]), ("oauth_token", f["access_token"]),
              ("oauth_signature_method", "HMAC-SHA1"), ("oauth_timestamp", f["timestamp"]),
              ("oauth_nonce", f["nonce"]), ("oauth_version", "1.0")]
    sig = oauth_signature("GET", f["url"], params, f["consumer_secret"], f["access_secret"])
    print("fixture signature %s (want %s): %s" % (sig, f["signature"],
                                                  "ok" if sig == f["signature"] else "FAIL"))
    ok &= sig == f["signature"]
    # the header parser gives back what a client would send
    hdr = "OAuth realm=\"ADM\", " + ", ".join(
        '%s="%s"' % (k, oauth_enc(v)) for k, v in params + [("oauth_signature", sig)])
    parsed = parse_oauth_header(hdr)
    back = dict(parsed)
    signed = [(k, v) for k, v in parsed if k not in ("realm", "oauth_signature")]
    ok2 = (back.get("oauth_signature") == f["signature"] and back.get("realm") == "ADM"
           and oauth_signature("GET", f["url"], signed, f["consumer_secret"],
                               f["access_secret"]) == f["signature"])
    print("header parse round trip: %s" % ("ok" if ok2 else "FAIL"))
    ok &= ok2
    c = encode_cursor("abc", "fetch", "S001", 7, 2)
    ok3 = decode_cursor(c) == {"o": "abc", "t": "fetch", "l": "S001", "q": 7, "g": 2, "f": 0} \
        and decode_cursor("not a cursor!") is None
    print("cursor round trip: %s" % ("ok" if ok3 else "FAIL"))
    ok &= ok3
    # the device calls answer as Apple documents them
    import types
    from mock_state import Org, State
    st = State()
    org = Org("CK_self")
    st.orgs[org.consumer_key] = org
    for i in range(3):
        st.put_device(org, st.make_device(org, "S%d" % i, "Mac", i), "added", "2026-01-01T00:00:00Z")

    def call(h, body):
        return h(st, types.SimpleNamespace(org=org, body_json=body, query=""))
    det = call(h_details, {"devices": ["S0", "NOPE"]})[1]["devices"]
    rem = call(h_remove_profile, {"devices": ["S1", "NOPE"]})[1]["devices"]
    dis = call(h_disown, {"devices": ["S2"]})[1]["devices"]
    lock1 = call(h_activation_lock, {"device": "S0", "escrow_key": "k"})[1]
    lock2 = call(h_activation_lock, {"device": "S0"})[1]
    ok4 = (det["S0"]["response_status"] == "SUCCESS" and det["S0"]["serial_number"] == "S0"
           and det["NOPE"] == {"response_status": "NOT_ACCESSIBLE"}
           and call(h_details, {"devices": ["x"] * (MAX_LIMIT + 1)})[:2] == (400, "DEVICE_LIMIT_EXCEEDED")
           and rem == {"S1": "SUCCESS", "NOPE": "NOT_ACCESSIBLE"}
           and org.devices["S1"]["profile_status"] == "empty"
           and dis == {"S2": "SUCCESS"} and "S2" not in org.devices
           and lock1 == {"serial_number": "S0", "response_status": "SUCCESS"}
           and lock2["response_status"] == "DEVICE_ALREADY_LOCKED"
           and call(h_activation_lock, {"escrow_key": "k"})[:2] == (400, "MALFORMED_REQUEST_BODY"))
    print("device calls (details, remove profile, disown, activation lock): %s" % ("ok" if ok4 else "FAIL"))
    ok &= ok4
    return 0 if ok else 1


# ---------------------------------------------------------------- main

def main(argv=None):
    ap = argparse.ArgumentParser(description="Fake Apple Business Manager device-assignment API.")
    ap.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=0, help="port, 0 = a free one (default)")
    ap.add_argument("--port-file", help="write the port number here once listening")
    ap.add_argument("--tls-cert", help="PEM certificate: serve https")
    ap.add_argument("--tls-key", help="PEM private key for --tls-cert")
    ap.add_argument("--quiet", action="store_true", help="no per-request logging")
    ap.add_argument("--self-test", action="store_true", help="check the OAuth fixture vector and exit")
    a = ap.parse_args(argv)
    if a.self_test:
        return self_test()
    if not is_loopback(a.host):
        ap.error("refusing to bind to non-loopback address %s" % a.host)
    if bool(a.tls_cert) != bool(a.tls_key):
        ap.error("--tls-cert and --tls-key go together")
    ctx = None
    if a.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(a.tls_cert, a.tls_key)
    state = State()
    state.api = ApiState(state)
    srv = Server((a.host, a.port), Handler, state, ssl_ctx=ctx, quiet=a.quiet)
    port = srv.server_address[1]
    if a.port_file:
        tmp = "%s.tmp.%d" % (a.port_file, os.getpid())
        with open(tmp, "w") as fh:
            fh.write("%d\n" % port)
        os.replace(tmp, a.port_file)
    if not a.quiet:
        sys.stderr.write("mock_abm: listening on %s://%s:%d\n" % (srv.scheme, a.host, port))

    def stop(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, stop)
    try:
        srv.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()
        if a.port_file:
            try:
                with open(a.port_file) as fh:
                    if fh.read().strip() == str(port):
                        os.unlink(a.port_file)
            except OSError:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
