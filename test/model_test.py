#!/usr/bin/python3
"""test/model_test.py: a randomized, model-based test of ade (issue 12).

A reference model, written apart from the SQL, of what ABM (the mock)
holds and what the tables must then say, driven by random sequences of
steps (Hypothesis' stateful testing, which shrinks a failure to the
shortest sequence that shows it):

- in ABM: devices added (also serials the application made a host for
  first), modified, deleted, moved between tokens, several records of one
  serial in one page; a profile reported pushed, or another MDM's profile
  UUID; assignments echoed back at once, late (with the assignment's
  op_date) or never; assignment answers forced (FAILED, THROTTLED,
  NOT_ACCESSIBLE); cursors expired; EXHAUSTED_CURSOR (a fetch's last page
  lost on its way);
- an application role: hosts deleted, truncated, re-serialed, moved between
  teams, inserted (also before ABM reports the serial), their model,
  platform and id edited;
- the admin: teams made and deleted, default teams and profiles (every
  scope) set, changed and removed, ade.enroll_url on and off, tokens added,
  renewed and removed; a pg_dump restored (pg_restore -1) into another
  database, where the example goes on; examples that begin under ade 0.4
  and are upgraded (ALTER EXTENSION ade UPDATE);
- time: a clock that moves every due time ade stored (answers' retry_at, a
  token's pause, a refused profile, kept records) back by 10 minutes, an
  hour or a day;
- ade_sync() runs: alone, two at once, or through a fault (5xx, a hang, a
  cut body, a repeated cursor, truncated JSON, 429 with a short and a long
  Retry-After, 401, T_C_NOT_SIGNED, INVALID_CURSOR, a failing or refused
  (400, 429) PUT /profile/devices or POST /profile);
- runs held open at a request (the mock holds it), by CALL ade_sync_job()
  or SELECT ade_sync(), while the application deletes, truncates,
  re-serials, moves, inserts and edits hosts; then released, cancelled
  (pg_cancel_backend), timed out (statement_timeout) or terminated
  (pg_terminate_backend).

After every step: every live assignment has its host (same id, same
serial), one host per serial.  After every sync without a fault, run until
it sends nothing more (at most 4 runs): no run has an error; the live
assignments are exactly ABM's devices of the active tokens, each held by
its token; every host is where the model says (its team: a host made by
the sync lands in its token's default team, keeps it afterwards, and moves
only when the application moves it or its team goes); every live device
either holds at ABM the profile the model computes for it, or has a stored
answer that says why not (FAILED or THROTTLED with a due time, or
NOT_ACCESSIBLE waiting for ABM).  After every run: no serial is sent in
PUT /profile/devices twice without a change in between (a change of the
device at ABM, of its team, of a profile, a token, a fault, or an answer
that was not SUCCESS).  A profile ABM refused (400 on POST /profile) and a
token a 429 paused excuse their devices until the model's clock passes
them; then they must hold their profile.  After the clock moves: every
device whose FAILED or THROTTLED answer is due by the model's clock is
really sent again in the runs that follow.  Beside an open run: no
application statement fails; under CALL ade_sync_job() they finish while
the run is held at ABM; a host the application deleted, whose device ABM
had deleted before the run, stays deleted; the hosts it touched are in a
team the model allows; then the syncs settle and all of the above holds.
A dump/restore and an upgrade are followed by a settle: nothing lost,
nothing sent again.  The last lines count what the new steps really did.

Most of the new steps find nothing to do once the syncs have settled
(nothing is sent then), so they first make their target reachable: a due
retry, a late echo and a refused POST /profile or PUT /profile/devices
(refused_by_abm, and sync_through_fault when primed) first make a device
ade must send (ABM reports another MDM's profile on it) or a profile ABM
has never seen; an open run first gets what reaches its hold point (a
second page of changes, an expired cursor, a new profile, a device to
send).  A PUT answered INVALID_PROFILE defines the profile again when a
device took its UUID; one no device took is kept as refused, like a 400 on
POST /profile.  The bounded run fails when one of REQUIRED (the held open
runs, each way and each ending; due retries checked; 429, 400 and
INVALID_PROFILE on PUT; 400 on POST /profile; late echoes; dump/restore;
upgrade from 0.4) never happened: coverage cannot rot silently.  --fuzz
prints the counts of every batch and checks the totals at the end.

    model_test.py                 a bounded run with a fixed seed (make test)
    model_test.py --fuzz MINUTES  random seeds until the time is up (make fuzz)
    model_test.py --seed N        one batch with seed N (a replay)
    ... --no-coverage             do not fail when a REQUIRED step never happened
                                  (a short replay: --examples 3 --steps 10)

Environment: PGHOST, PGPORT, PGUSER, ADE_TEST_DB (a database with pg_cron
and the ade library installed), ADE_MOCK_URL (test/mock_abm.py).  The last
line is "N passed, N failed" (N steps checked, 0 or 1 failure).
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time

import psycopg2
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant,
                                 precondition, rule, run_state_machine_as_test)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mockctl  # noqa: E402
from testdb import connect, q  # noqa: E402

MOCK = os.environ.get("ADE_MOCK_URL", "")
APP = "ade_model_app"
TOKENS = ("A", "B", "C")
FAMILIES = ("Mac", "iPhone", "iPad", "AppleTV", "Vision")
PLATFORM = {"Mac": "darwin", "iPhone": "ios", "iPad": "ipados", "AppleTV": "tvos", "Vision": "visionos"}
DEFAULT_SLOT = {"darwin": "macos", "ios": "ios", "ipados": "ipados", "tvos": "ios", "visionos": "ios"}
ENROLL = "https://mdm.example.com/enroll"
BUILTIN = {"profile_name": "Automatic enrollment", "url": ENROLL, "is_supervised": True,
           "is_mdm_removable": False, "await_device_configured": True}
FAULTS = (
    {"path": "/devices/sync", "status": 503, "body": "SERVICE_UNAVAILABLE", "times": -1},
    {"path": "/server/devices", "skip": 1, "status": 503, "body": "SERVICE_UNAVAILABLE", "times": -1},
    {"path": "/devices/sync", "hang_seconds": 2, "times": 1},
    {"path": "/devices/sync", "cut_body": True, "times": -1},
    {"path": "/devices/sync", "repeat_cursor": True, "times": 1},
    {"path": "/devices/sync", "truncate_json": True, "times": 1},
    {"method": "PUT", "path": "/profile/devices", "status": 503, "body": "SERVICE_UNAVAILABLE", "times": -1},
    {"method": "PUT", "path": "/profile/devices", "cut_body": True, "times": 1},
    {"method": "POST", "path": "/profile", "status": 500, "body": "INTERNAL", "times": -1},
    # 429 with a short Retry-After (waited out in the run) and a long one
    # (the token is left for a later run)
    {"path": "/devices/sync", "status": 429, "body": "", "headers": {"Retry-After": "1"}, "times": 1},
    {"path": "/devices/sync", "status": 429, "body": "", "headers": {"Retry-After": "3600"}, "times": -1},
    # a session ABM forgot (a new session, the page again); terms not signed
    {"path": "/devices/sync", "status": 401, "body": "UNAUTHORIZED", "times": 1},
    {"path": "/devices/sync", "skip": 1, "status": 403, "body": "T_C_NOT_SIGNED", "times": -1},
    # a cursor ABM does not take: a full fetch in the run
    {"path": "/devices/sync", "status": 400, "body": "INVALID_CURSOR", "times": 1},
    # POST /profile refused with a 400: the profile is kept as refused
    {"method": "POST", "path": "/profile", "status": 400, "body": "CONFIG_URL_REQUIRED", "times": -1},
    # PUT /profile/devices refused: INVALID_PROFILE once (defined again),
    # any 400 for the run, a 429 past ade.max_retry_wait (the token pauses)
    {"method": "PUT", "path": "/profile/devices", "status": 400, "body": "INVALID_PROFILE", "times": 1},
    {"method": "PUT", "path": "/profile/devices", "status": 400, "body": "MALFORMED_REQUEST_BODY", "times": -1},
    {"method": "PUT", "path": "/profile/devices", "status": 429, "body": "", "headers": {"Retry-After": "3600"},
     "times": 1},
)
INVALID_CURSOR = 13           # FAULTS index: a full fetch follows
INVALID_PROFILE = 15          # FAULTS index: PUT /profile/devices 400 INVALID_PROFILE once
PRIMED = (14, 15, 16, 17)     # FAULTS of POST /profile and PUT /profile/devices refused
FAULT_SEEN = {15: "PUT /profile/devices refused (400 INVALID_PROFILE)",
              16: "PUT /profile/devices refused (400)"}
FAILED_RETRY = 3600           # ade.failed_retry_interval (the default)
THROTTLE_RETRY = 7200         # the mock's retry_after_seconds of a THROTTLED answer
PAUSE = 3600                  # the Retry-After of a 429 on PUT /profile/devices
MARGIN = 300                  # real seconds an example may take: a due time this
                              # close to the model's clock is neither due nor not
# Where a run is held open (a request the mock holds until it is released)
HOLDS = (
    {"path": "/devices/sync"},
    {"path": "/devices/sync"},        # twice: the one point every run of a synced token reaches
    {"path": "/devices/sync", "skip": 1},
    {"path": "/server/devices"},
    {"method": "POST", "path": "/profile"},
    {"method": "PUT", "path": "/profile/devices"},
)
# What the application does while a run is open
APP_STEPS = ("delete", "delete_all", "truncate", "reserial", "move_team", "insert", "insert_future",
             "edit_model", "edit_platform", "renumber")
# Tolerations of ade defects found by this test: each OFF by default, so
# that the failure shows; the report of issue 18 describes them.
TOLERATE = set(filter(None, os.environ.get("ADE_MODEL_TOLERATE", "").split(",")))

STEPS = {"n": 0}
SEEN = {}                      # what the new steps really did, counted (printed at the end)


def seen(what):
    SEEN[what] = SEEN.get(what, 0) + 1
DB = os.environ.get("ADE_TEST_DB", "ade_regress")
PGBIN = os.environ.get("ADE_PGBIN", "/usr/lib/postgresql/15/bin")


def connect_to(db, user=None):
    conn = psycopg2.connect(dbname=db, user=user or os.environ.get("PGUSER"),
                            host=os.environ.get("PGHOST"), port=os.environ.get("PGPORT"))
    conn.autocommit = True
    return conn


def ctl(method, path, body=None):
    return mockctl.request(MOCK, method, path, body)


class Fixture:
    """What every example shares: a key pair, and a token file per token
    name made for it (so that no example waits for RSA or openssl)."""

    def __init__(self):
        d = tempfile.mkdtemp(prefix="ade-model.")
        key, cert = os.path.join(d, "key.pem"), os.path.join(d, "cert.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                        "-out", cert, "-days", "3650", "-subj", "/CN=ade model test"],
                       check=True, capture_output=True)
        self.key = open(key).read()
        self.cert = open(cert).read()
        self.tokens = {}
        for name in TOKENS:
            tok = {"consumer_key": "CK_model_" + name, "consumer_secret": "CS_model_" + name,
                   "access_token": "AT_model_" + name, "access_secret": "AS_model_" + name,
                   "access_token_expiry": "2099-01-01T00:00:00Z"}
            out = os.path.join(d, name + ".p7m")
            mockctl.build_p7m(cert, mockctl.token_json_bytes(tok), out)
            self.tokens[name] = (tok, open(out, "rb").read())
        admin = connect()
        with admin.cursor() as c:
            c.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (APP,))
            if c.fetchone() is None:
                c.execute("CREATE ROLE %s LOGIN" % APP)
        admin.close()


SESSION = ("SET client_min_messages = error", "SET ade.page_size = 3", "SET ade.max_retries = 1",
           "SET ade.retry_backoff = 10")


class AdeMachine(RuleBasedStateMachine):
    fixture = None

    def __init__(self):
        super().__init__()
        self.db = DB
        self.connect_all()
        self.install()
        self.restored = False
        ctl("POST", "/_mock/reset", {})
        self.tokens = {}          # name -> {"id": db id, "active": bool}
        self.abm = {}             # serial -> {"org": token name, "family": family}
        self.hosts = {}           # serial -> team name or None: every host row
        self.creators = {}        # serial -> tokens whose records may have made its host
        self.teams = {}           # name -> id
        self.defaults = {}        # token -> {"macos"|"ios"|"ipados": team name or None}
        self.removed = {}         # token removed -> what adding it back restores
        self.profiles = {}        # scope -> profile
        self.enroll = False
        self.forced = {}          # serial -> forced answer at ABM
        self.gen = {}             # serial -> generation of its own changes
        self.world = 0            # generation of changes that may touch any device
        self.last_put = {}        # serial -> (gen, world, answered SUCCESS)
        self.log_seq = 0
        self.counter = 0
        self.clock = 0
        # every serial ever made, in order: what the application's steps draw
        # from (the hosts a faulty sync made depend on timing, and a draw
        # must not, so that a failure replays)
        self.serials = []
        # A full fetch (after EXPIRED_CURSOR) lists what ABM holds; a device
        # deleted since the last sync is not listed, and "a device that a
        # full re-fetch no longer lists is left as it is" (rule 7): such
        # ghosts may stay live with their token.
        self.unsynced_deletes = {}  # token -> serials it deleted since the last settle
        self.ghosts = {}            # token -> serials that may stay live with it
        self.expired = set()        # tokens whose cursor expired, not refetched yet
        self.deleted_from = {}      # serial -> the token ABM deleted it from last
        # time: the database's due times move back by what the model's
        # clock moves forward (advance_clock)
        self.mclock = 0
        self.cooldown = {}          # serial -> when its FAILED/THROTTLED answer is due again
        self.refused = {}           # (token, profile json) -> until when ABM's refusal holds
        self.paused = {}            # token -> until when a 429 on PUT holds its assignments
        self.plat_edited = set()    # serials whose host platform the application changed
        self.future = []            # serials of hosts the application made before ABM has them
        self.echo = {}              # token -> how ABM echoes assignments (now, late, never)
        self.late_sent = {}         # token -> serials whose echo ABM holds back

    def connect_all(self):
        """the sessions of the admin, the application, a second admin (two
        runs at once) and the open runs, to self.db"""
        for name in ("admin", "app", "other", "runner"):
            old = getattr(self, name, None)
            if old is not None:
                try:
                    old.close()
                except Exception:
                    pass
        self.admin = connect_to(self.db)
        self.app = connect_to(self.db, APP)
        self.other = connect_to(self.db)
        self.runner = connect_to(self.db)           # the open runs' session
        for conn in (self.admin, self.other, self.runner):
            for s in SESSION:
                q(conn, s)
        q(self.app, "SET statement_timeout = '20s'")   # a statement that hangs fails the test

    def install(self, version=None):
        q(self.admin, "SET ade.allow_drop = on; DROP EXTENSION IF EXISTS ade CASCADE; RESET ade.allow_drop")
        q(self.admin, "CREATE EXTENSION ade" + (" VERSION '%s'" % version if version else ""))
        q(self.admin, "SELECT ade_import_key(%s, %s)", (self.fixture.key, self.fixture.cert))
        q(self.admin, "GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON hosts TO %s" % APP)
        q(self.admin, "GRANT USAGE ON SEQUENCE hosts_id_seq TO %s" % APP)
        q(self.admin, "RESET ade.enroll_url")

    def teardown(self):
        try:
            ctl("POST", "/_mock/release", {})
            ctl("POST", "/_mock/faults/clear", {})
        except Exception:
            pass
        for conn in (self.admin, self.app, self.other, self.runner):
            try:
                conn.close()
            except Exception:
                pass

    # ---- helpers

    def new_serial(self, prefix="S"):
        self.counter += 1
        serial = "%s%05d" % (prefix, self.counter)
        self.serials.append(serial)
        return serial

    def touch(self, serial):
        self.gen[serial] = self.gen.get(serial, 0) + 1

    def registered(self):
        return sorted(self.tokens)

    def active(self):
        return sorted(n for n, t in self.tokens.items() if t["active"])

    def ck(self, name):
        return "CK_model_" + name

    def platform(self, serial):
        return PLATFORM[self.abm[serial]["family"]] if serial in self.abm else None

    def default_team(self, token, platform):
        return self.defaults.get(token, {}).get(DEFAULT_SLOT[platform])

    def expected_profile(self, token, team, platform):
        if team is not None and ("team", team) in self.profiles:
            return self.profiles[("team", team)]
        for scope in (("tokplat", token, platform), ("tok", token), ("plat", platform), ("org",)):
            if scope in self.profiles:
                return self.profiles[scope]
        return BUILTIN if self.enroll else None

    def db_hosts(self):
        return {s: t for s, t in q(self.admin, "SELECT h.hardware_serial, tm.name FROM hosts h "
                                               "LEFT JOIN teams tm ON tm.id = h.team_id")}

    def db_live(self):
        """serial -> (token consumer key, host id) of every live assignment"""
        return {s: (ck, h) for s, ck, h in q(self.admin, """
            SELECT d.hardware_serial, t.consumer_key, d.host_id FROM host_dep_assignments d
              LEFT JOIN abm_tokens t ON t.id = d.abm_token_id WHERE d.deleted_at IS NULL""")}

    def tick(self):
        """The op_date of a step's ABM events: a second later than the last
        step's, and never before now.  ABM's op_date has whole seconds, and
        two records of different tokens in one second cannot be ordered by
        anyone; the records of one step (a move: deleted here, added there)
        share theirs, as in ABM.  The mock's clock follows (a model step is
        quicker than a second), so that echoes and fetched_until keep to it."""
        self.clock = max(int(time.time()), self.clock + 1)
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.clock))
        ctl("POST", "/_mock/clock", {"now": when})   # ABM's one clock: echoes, fetched_until
        return when

    def abm_put(self, token, add=None, modify=None, delete=None, op_date=None):
        body = {"consumer_key": self.ck(token), "op_date": op_date or self.tick()}
        for rec in (add or []) + (modify or []):    # ABM's record puts ABM's platform back
            self.plat_edited.discard(rec["serial_number"])
        if add:
            body["add"] = add
        if modify:
            body["modify"] = modify
        if delete:
            body["delete"] = delete
        ctl("POST", "/_mock/devices", body)

    def unsynced_delete(self, org, s):
        """a delete the token's sync has not seen yet; one made between an
        expired cursor and its full fetch is never seen"""
        if org in self.expired:
            self.ghosts.setdefault(org, set()).add(s)
        else:
            self.unsynced_deletes.setdefault(org, set()).add(s)

    def unforce(self, s):
        if s in self.forced:
            ctl("POST", "/_mock/assign_responses", {"consumer_key": self.ck(self.abm[s]["org"]),
                                                      "responses": {s: None}})
            del self.forced[s]

    # ---- helpers that make a step's target reachable (a due retry, a
    # refused PUT or POST /profile, a late echo, a hold point): without them
    # the step mostly finds nothing to do (nothing is sent once settled)

    def db_paused(self):
        """tokens whose assignments a 429 paused (ade's own record)"""
        return {name for name in self.active() if q(self.admin,
                "SELECT assign_not_before > now() FROM abm_tokens WHERE id = %s",
                (self.tokens[name]["id"],))[0][0]}

    def eligible(self, token=None, unforced=False):
        """devices ade must send at once when something changes them: of an
        active token not paused, their profile known and not refused"""
        paused = self.db_paused()
        out = []
        for s in sorted(self.abm):
            t = self.abm[s]["org"]
            if (token and t != token) or not self.tokens.get(t, {}).get("active") or t in paused \
                    or self.paused.get(t, -1e9) > self.mclock - MARGIN or s in self.plat_edited \
                    or (unforced and (s in self.forced or s in self.cooldown)):
                continue
            prof = self.expected_profile(t, self.hosts.get(s), self.platform(s))
            if prof is None or self.refused.get((t, json.dumps(prof, sort_keys=True)), -1e9) > self.mclock - MARGIN:
                continue
            out.append(s)
        return out

    def effective_scope(self, token, team, platform):
        """the scope whose profile a device gets (tokplat when none has one)"""
        if team is not None and ("team", team) in self.profiles:
            return ("team", team)
        for scope in (("tokplat", token, platform), ("tok", token), ("plat", platform), ("org",)):
            if scope in self.profiles:
                return scope
        return ("tokplat", token, platform)

    def put_profile(self, scope, prof):
        """ade_set_profile() of a scope (prof None: ade_clear_profile()), and the model"""
        args = {}
        if scope[0] == "plat":
            args = {"platform": scope[1]}
        elif scope[0] == "tok":
            args = {"token_id": self.tokens[scope[1]]["id"]}
        elif scope[0] == "tokplat":
            args = {"token_id": self.tokens[scope[1]]["id"], "platform": scope[2]}
        elif scope[0] == "team":
            args = {"team_id": self.teams[scope[1]]}
        named = "".join(", %s => %%(%s)s" % (k, k) for k in args)
        if prof is None:
            q(self.admin, "SELECT ade_clear_profile(%s)" % named[2:], args)
        else:
            args["profile"] = json.dumps(prof)
            q(self.admin, "SELECT ade_set_profile(%%(profile)s::jsonb%s)" % named, args)
        if prof is None:
            self.profiles.pop(scope, None)
        else:
            self.profiles[scope] = prof
            key = json.dumps(prof, sort_keys=True)    # set again: sent again, whatever ABM said
            for k in [k for k in self.refused if k[1] == key]:
                del self.refused[k]
        self.world += 1

    def fresh_profile(self, s):
        """a profile ABM has never seen for device s (its token must POST
        /profile before it sends s), set where s takes its profile from"""
        token = self.abm[s]["org"]
        self.counter += 1
        self.put_profile(self.effective_scope(token, self.hosts.get(s), self.platform(s)),
                         {"profile_name": "H%d" % self.counter, "url": ENROLL})

    def make_eligible(self, token, unforced=False):
        """a device of token that ade sends when it changes (one is added,
        or given a profile, when there is none); None when its assignments
        are paused"""
        if token in self.db_paused() or self.paused.get(token, -1e9) > self.mclock - MARGIN:
            return None
        cands = self.eligible(token, unforced)
        if cands:
            return cands[0]
        mine = [s for s in sorted(self.abm) if self.abm[s]["org"] == token and s not in self.plat_edited
                and not (unforced and s in self.forced)]
        if not mine:
            self.abm_add_to(token, ["iPhone"])
            mine = [self.serials[-1]]
        self.fresh_profile(mine[0])
        return mine[0]

    def need_assign(self, s):
        """ABM reports another MDM's profile on device s: ade sends its own
        again (unless s waits for a cooldown)"""
        rec = {"serial_number": s, "profile_uuid": "OTHER-MDM-%d" % self.counter, "profile_status": "assigned"}
        self.counter += 1
        self.touch(s)
        self.abm_put(self.abm[s]["org"], modify=[rec])

    def sync_once(self, conn=None):
        rows = q(conn or self.admin, "SELECT token_id, error FROM ade_sync()")
        return rows

    def read_puts(self, rolled_back=False, sent_to=None):
        """The PUT /profile/devices the mock got since the last look: no
        serial is sent twice without a change in between.  Returns how many
        requests changed something at ABM (PUTs and POST /profile).  Keeps
        what ABM answered (each serial's cooldown), which profiles it
        refused, and which tokens a 429 paused.  rolled_back: the run's
        transaction did not commit (what ABM answered was not stored).
        sent_to: a set that gets every serial sent."""
        log = ctl("GET", "/_mock/log")["requests"]
        new = [r for r in log if r["seq"] > self.log_seq]
        if new:
            self.log_seq = max(r["seq"] for r in new)
        self.new_log = new
        sent = 0
        for r in new:
            org = (r.get("consumer_key") or "").replace("CK_model_", "")
            if r["path"] == "/server/devices" and r.get("status") == 400 and r.get("fault") is None:
                seen("EXHAUSTED_CURSOR answered")
            if r["method"] == "POST" and r["path"] == "/profile":
                sent += 1
                if r.get("status") == 400 and isinstance(r.get("body"), dict) and not rolled_back:
                    seen("POST /profile refused (400)")
                    self.refused[(org, json.dumps(r["body"], sort_keys=True))] = self.mclock + FAILED_RETRY
            if r["method"] != "PUT" or r["path"] != "/profile/devices" or not isinstance(r.get("body"), dict):
                continue
            sent += 1
            if r.get("status") == 429:
                seen("429 on PUT /profile/devices")
            if r.get("status") == 429 and not rolled_back:
                self.paused[org] = self.mclock + PAUSE
            answered = r.get("status") == 200 and r.get("fault") is None
            for s in r["body"].get("devices") or []:
                if sent_to is not None:
                    sent_to.add(s)
                key = (self.gen.get(s, 0), self.world)
                prev = self.last_put.get(s)
                assert not (prev and prev[:2] == key and prev[2]), \
                    "serial %s was sent in PUT /profile/devices again with no change since it was assigned" % s
                success = answered and not rolled_back and self.forced.get(s) in (None, "SUCCESS") \
                    and s in self.abm and self.abm[s]["org"] == org
                self.last_put[s] = key + (success,)
                if success and self.echo.get(org, "now") == "now":
                    self.echo_record(s)
                elif success and self.echo.get(org) == "late":
                    self.late_sent.setdefault(org, set()).add(s)
                if rolled_back or not answered:
                    self.cooldown[s] = None           # not known: never checked as due
                elif self.forced.get(s) == "FAILED":
                    self.cooldown[s] = self.mclock + FAILED_RETRY
                elif self.forced.get(s) == "THROTTLED":
                    self.cooldown[s] = self.mclock + THROTTLE_RETRY
                else:
                    self.cooldown.pop(s, None)
        return sent

    def echo_record(self, s):
        """ABM's echo of an assignment is a record of the device: it puts
        ABM's platform back on a host whose platform the application edited
        (a change: its profile may change with it)"""
        if s in self.plat_edited:
            self.plat_edited.discard(s)
            self.touch(s)

    def flush_echoes(self, name, mode):
        flushed = ctl("POST", "/_mock/echoes", {"consumer_key": self.ck(name), "mode": mode, "flush": True})["flushed"]
        for s in sorted(self.late_sent.pop(name, set())):
            if s in self.abm and self.abm[s]["org"] == name:
                self.echo_record(s)
        self.echo[name] = mode
        if flushed:
            seen("late echoes delivered")

    def adopt_new_hosts(self):
        """Hosts the sync made that the model did not know yet: each must be
        in the default team (now) of a token whose records could have made
        it; the model adopts them."""
        db = self.db_hosts()
        for s, team in db.items():
            if s in self.hosts:
                continue
            creators = self.creators.get(s, set())
            allowed = {self.default_team(t, PLATFORM[f]) for t in creators
                       for f in ([self.abm[s]["family"]] if s in self.abm else FAMILIES)}
            assert creators and team in allowed, \
                "host %s was made in team %r; the model allows %r (records from %r)" % (s, team, allowed, creators)
            self.hosts[s] = team
            self.creators.pop(s, None)

    def settle(self, conn=None, sent_to=None):
        """ade_sync() until a run sends nothing to ABM (at most 4 runs, and
        one more per serial forced to answer THROTTLED: such an answer ends
        its run's assignments, and the serial waits its retry time, so it
        ends at most one run); no run may fail."""
        throttled = sum(1 for a in self.forced.values() if a == "THROTTLED")
        for i in range(4 + throttled):
            rows = self.sync_once(conn)
            self.adopt_new_hosts()
            errors = [(t, e) for t, e in rows if e is not None]
            assert not errors, "a sync without a fault failed: %r" % errors
            if self.read_puts(sent_to=sent_to) == 0:
                for name in self.active():    # every event of theirs is applied now
                    self.unsynced_deletes.pop(name, None)
                    self.expired.discard(name)
                return
        raise AssertionError("the assignment does not settle: run %d still sent something to ABM" % (4 + throttled))

    def check_synced(self):
        """What the tables must say once a sync without a fault has settled."""
        want = {s: self.ck(d["org"]) for s, d in self.abm.items()
                if d["org"] in self.tokens and self.tokens[d["org"]]["active"]}
        live = self.db_live()
        have = {s: ck for s, (ck, h) in live.items()}
        ghosts = {(s, self.ck(t)) for t, ss in self.ghosts.items() for s in ss if s not in want}
        missing = set(want.items()) - set(have.items())
        extra = set(have.items()) - set(want.items()) - ghosts
        assert not missing and not extra, "live assignments differ from ABM: missing %r, extra %r" % (
            sorted(missing), sorted(extra))
        db = self.db_hosts()
        assert db == self.hosts, "hosts differ from the model: %r" % sorted(
            set(db.items()) ^ set(self.hosts.items()), key=str)
        rows = {s: (resp, due, needs) for s, resp, due, needs in q(self.admin, """
            SELECT hardware_serial, assign_profile_response, retry_at > now(), needs_assign
              FROM host_dep_assignments WHERE deleted_at IS NULL""")}
        states = {}
        for name in self.active():
            st_ = ctl("GET", "/_mock/state?consumer_key=" + self.ck(name))
            states[name] = st_
        plats = dict(q(self.admin, "SELECT hardware_serial, platform FROM hosts"))
        flags = q(self.admin, "SELECT count(*) FILTER (WHERE terms_expired OR token_invalid) FROM abm_tokens")[0][0]
        assert flags == 0, "a sync without a fault left terms_expired or token_invalid set"
        for s, ck in want.items():
            token = ck.replace("CK_model_", "")
            if s not in self.plat_edited:
                assert plats.get(s) == self.platform(s), "host %s has platform %r, ABM says %r" % (
                    s, plats.get(s), self.platform(s))
            else:
                continue    # its profile's scope is the application's platform until ABM sends it again
            prof = self.expected_profile(token, self.hosts.get(s), self.platform(s))
            if prof is None:
                continue
            dev = states[token]["devices"].get(s, {})
            held = states[token]["profiles"].get(dev.get("profile_uuid") or "")
            if dev.get("profile_status") in ("assigned", "pushed") and held == prof:
                continue
            if self.refused.get((token, json.dumps(prof, sort_keys=True)), -1e9) > self.mclock - MARGIN:
                continue    # ABM refused its profile, not long ago: it waits
            if self.paused.get(token, -1e9) > self.mclock - MARGIN:
                continue    # a 429 paused its token's assignments
            resp, due, needs = rows.get(s, (None, None, None))
            assert (resp in ("FAILED", "THROTTLED") and due) or (resp == "NOT_ACCESSIBLE" and not needs), \
                "device %s of %s holds %r at ABM, not its profile %r, and its answer is %r (due %r)" % (
                    s, token, held, prof.get("profile_name"), resp, due)

    # ---- the start of every example: tokens with devices, synced

    @initialize(n=st.integers(1, 3), families=st.lists(st.sampled_from(FAMILIES), max_size=8),
                from_04=st.booleans())
    def start(self, n, families, from_04):
        """tokens with devices, synced; with from_04 the first sync runs
        under ade 0.4 and the extension is upgraded (ALTER EXTENSION ade
        UPDATE) before the first check: nothing is lost, nothing sent again"""
        if from_04:
            self.install("0.4")
        for name in TOKENS[:n]:
            self.add_token(name)
            if families:
                self.abm_add_to(name, families)
        if from_04:
            q(self.admin, "SET ade.enroll_url = %s", (ENROLL,))
            rows = self.sync_once()
            assert not [r for r in rows if r[1] is not None], "a sync under ade 0.4 failed: %r" % rows
            q(self.admin, "RESET ade.enroll_url")
            self.read_puts()
            self.adopt_new_hosts()
            # the devices sent under 0.4 hold the built-in profile: with
            # ade.enroll_url reset, none is sent again
            q(self.admin, "ALTER EXTENSION ade UPDATE")
            assert q(self.admin, "SELECT extversion FROM pg_extension WHERE extname = 'ade'")[0][0] == "0.5"
            seen("upgrade from 0.4")
        self.sync()

    # ---- every step

    @invariant()
    def live_assignments_have_their_hosts(self):
        STEPS["n"] += 1
        bad = q(self.admin, """
            SELECT d.hardware_serial FROM host_dep_assignments d
             WHERE d.deleted_at IS NULL
               AND NOT EXISTS (SELECT 1 FROM hosts h WHERE h.id = d.host_id AND h.hardware_serial = d.hardware_serial)""")
        assert not bad, "live assignments without their host: %r" % bad
        dup = q(self.admin, "SELECT hardware_serial FROM hosts GROUP BY 1 HAVING count(*) > 1")
        assert not dup, "serials with two hosts: %r" % dup

    # ---- tokens

    @rule(name=st.sampled_from(TOKENS))
    def add_token(self, name):
        tok, p7m = self.fixture.tokens[name]
        if name not in self.tokens:
            ctl("POST", "/_mock/tokens", dict(tok, org_name="Org " + name))
            ctl("POST", "/_mock/assign_responses", {"consumer_key": self.ck(name), "responses": {},
                                                      "retry_after_seconds": THROTTLE_RETRY})
        tid = q(self.admin, "SELECT ade_add_token(%s)", (psycopg2.Binary(p7m),))[0][0]
        t = self.tokens.get(name)
        if t and t["active"]:
            assert t["id"] == tid, "renewing a token must keep its id"
        if t and not t["active"]:
            # removed, added back: in place, with its profiles and default
            # teams (those whose team still exists)
            assert t["id"] == tid, "a token added back must get its id back"
            for k in [k for k in self.refused if k[0] == name]:
                del self.refused[k]               # its profiles are sent again
            kept = self.removed.pop(name, {})
            self.profiles.update(kept.get("profiles", {}))
            if kept.get("defaults") is not None:
                self.defaults[name] = {k: (v[0] if v and self.teams.get(v[0]) == v[1] else None)
                                       for k, v in kept["defaults"].items()}
        self.tokens[name] = {"id": tid, "active": True}
        for s, d in self.abm.items():       # a first fetch lists its devices
            if d["org"] == name:
                self.creators.setdefault(s, set()).add(name)
        self.world += 1

    @precondition(lambda self: self.active())
    @rule(data=st.data())
    def remove_token(self, data):
        name = data.draw(st.sampled_from(self.active()))
        q(self.admin, "SELECT ade_remove_token(%s)", (self.tokens[name]["id"],))
        self.tokens[name]["active"] = False
        # its profiles and default teams go with it, until it is added back
        kept = {"profiles": {}, "defaults": None}
        for scope in [sc for sc in self.profiles if sc[0] in ("tok", "tokplat") and sc[1] == name]:
            kept["profiles"][scope] = self.profiles.pop(scope)
        if name in self.defaults:
            kept["defaults"] = {k: ((v, self.teams[v]) if v is not None else None)
                                for k, v in self.defaults[name].items()}
        self.removed[name] = kept
        self.defaults.pop(name, None)
        left = q(self.admin, "SELECT count(*) FROM host_dep_assignments WHERE abm_token_id = %s AND deleted_at IS NULL",
                 (self.tokens[name]["id"],))[0][0]
        assert left == 0, "a removed token still holds live devices"
        self.world += 1

    # ---- ABM

    @precondition(lambda self: self.tokens)
    @rule(data=st.data(), families=st.lists(st.sampled_from(FAMILIES), min_size=1, max_size=4),
          future=st.booleans())
    def abm_add(self, data, families, future):
        """devices new to ABM; with future, first the serials the
        application made hosts for before ABM had them (the sync matches
        them: the host keeps its id and team, and gets ABM's platform)"""
        self.abm_add_to(data.draw(st.sampled_from(self.registered())), families, future)

    def abm_add_to(self, name, families, future=False):
        recs = []
        for family in families:
            if future and self.future:
                s = self.future.pop(0)
            else:
                s = self.new_serial()
            self.abm[s] = {"org": name, "family": family}
            self.creators.setdefault(s, set()).add(name)
            self.touch(s)
            recs.append({"serial_number": s, "device_family": family})
        self.abm_put(name, add=recs)

    @precondition(lambda self: self.abm)
    @rule(data=st.data(), removed=st.booleans())
    def abm_modify(self, data, removed):
        s = data.draw(st.sampled_from(sorted(self.abm)))
        rec = {"serial_number": s, "model": "renamed %d" % self.counter}
        if removed:                         # someone took the profile off in ABM
            rec.update(profile_status="removed", profile_uuid="")
        self.counter += 1
        self.touch(s)
        self.abm_put(self.abm[s]["org"], modify=[rec])

    @precondition(lambda self: self.abm)
    @rule(data=st.data())
    def abm_delete(self, data):
        s = data.draw(st.sampled_from(sorted(self.abm)))
        org = self.abm[s]["org"]
        self.unforce(s)
        del self.abm[s]
        self.touch(s)
        self.deleted_from[s] = org
        self.abm_put(org, delete=[s])
        self.unsynced_delete(org, s)

    @precondition(lambda self: self.abm)
    @rule(data=st.data())
    def abm_drop(self, data):
        """ABM drops a device with no deleted event (a release or a move
        made in its web portal): a sync never sees it, and it may stay live
        with its token (a ghost) until a reconcile (issue 22)"""
        s = data.draw(st.sampled_from(sorted(self.abm)))
        org = self.abm[s]["org"]
        self.unforce(s)
        del self.abm[s]
        self.touch(s)
        ctl("POST", "/_mock/devices", {"consumer_key": self.ck(org), "drop": [s]})
        self.ghosts.setdefault(org, set()).add(s)

    @precondition(lambda self: self.active())
    @rule(data=st.data())
    def reconcile(self, data):
        """ade_request_reconcile(): once the runs settle, the token's live
        devices are exactly ABM's: its ghosts are soft-deleted, and no
        device ABM holds is lost (check_synced)"""
        name = data.draw(st.sampled_from(self.active()))
        q(self.admin, "SET ade.min_refetch_interval = 0")
        q(self.admin, "SELECT ade_request_reconcile(id) FROM abm_tokens WHERE consumer_key = %s", (self.ck(name),))
        q(self.admin, "RESET ade.min_refetch_interval")
        self.settle()
        done = q(self.admin, "SELECT NOT reconcile_due AND reconcile_cursor IS NULL FROM abm_tokens "
                             "WHERE consumer_key = %s", (self.ck(name),))[0][0]
        assert done, "a reconcile asked for did not end once the runs settled"
        if self.ghosts.get(name):
            seen("ghosts reconciled")
        self.ghosts.pop(name, None)
        self.unsynced_deletes.pop(name, None)
        self.check_synced()

    @precondition(lambda self: self.abm and len(self.tokens) > 1)
    @rule(data=st.data())
    def abm_move(self, data):
        s = data.draw(st.sampled_from(sorted(self.abm)))
        to = data.draw(st.sampled_from([t for t in self.registered() if t != self.abm[s]["org"]]))
        fam = self.abm[s]["family"]
        self.unforce(s)
        when = self.tick()
        self.abm_put(self.abm[s]["org"], delete=[s], op_date=when)
        self.unsynced_delete(self.abm[s]["org"], s)
        self.abm_put(to, add=[{"serial_number": s, "device_family": fam}], op_date=when)
        self.abm[s] = {"org": to, "family": fam}
        self.creators.setdefault(s, set()).add(to)
        self.touch(s)

    @precondition(lambda self: self.abm)
    @rule(data=st.data(), readd=st.booleans())
    def abm_burst(self, data, readd):
        """Several records of one serial in a row (one page, usually)."""
        s = data.draw(st.sampled_from(sorted(self.abm)))
        org, fam = self.abm[s]["org"], self.abm[s]["family"]
        when = self.tick()
        self.abm_put(org, modify=[{"serial_number": s, "model": "burst 1"}], op_date=when)
        if readd:
            self.abm_put(org, delete=[s], op_date=when)
            self.abm_put(org, add=[{"serial_number": s, "device_family": fam}], op_date=when)
            self.creators.setdefault(s, set()).add(org)
        self.abm_put(org, modify=[{"serial_number": s, "model": "burst 2"}], op_date=when)
        self.touch(s)

    @precondition(lambda self: self.abm)
    @rule(data=st.data(), answer=st.sampled_from(("FAILED", "THROTTLED", "NOT_ACCESSIBLE", None)))
    def force_answer(self, data, answer):
        s = data.draw(st.sampled_from(sorted(self.abm)))
        ctl("POST", "/_mock/assign_responses", {"consumer_key": self.ck(self.abm[s]["org"]),
                                                  "responses": {s: answer}})
        if answer is None:
            self.forced.pop(s, None)
        else:
            self.forced[s] = answer

    @precondition(lambda self: self.active())
    @rule(data=st.data())
    def expire_cursors(self, data):
        self.expire_cursors_of(data.draw(st.sampled_from(self.active())))

    def expire_cursors_of(self, name):
        ctl("POST", "/_mock/tokens/state", {"consumer_key": self.ck(name), "expire_cursors": True})
        self.full_fetch_coming(name)

    def full_fetch_coming(self, name):
        for s, d in self.abm.items():       # the full fetch lists them again
            if d["org"] == name:
                self.creators.setdefault(s, set()).add(name)
        # and misses the deletes it had not seen yet, or that come before it
        self.ghosts.setdefault(name, set()).update(self.unsynced_deletes.pop(name, set()))
        self.expired.add(name)

    @precondition(lambda self: self.abm)
    @rule(data=st.data(), other_mdm=st.booleans())
    def abm_profile_status(self, data, other_mdm):
        """ABM reports a device's profile pushed (our UUID: nothing to send,
        and the serial is not touched, so that a send is caught), or
        assigned with another MDM's profile UUID (ours goes back on)."""
        s = data.draw(st.sampled_from(sorted(self.abm)))
        org = self.abm[s]["org"]
        dev = ctl("GET", "/_mock/state?consumer_key=" + self.ck(org))["devices"].get(s, {})
        if other_mdm:
            rec = {"serial_number": s, "profile_uuid": "OTHER-MDM-%d" % self.counter,
                   "profile_status": "assigned"}
            self.counter += 1
            self.touch(s)
        elif dev.get("profile_status") == "assigned" and dev.get("profile_uuid"):
            rec = {"serial_number": s, "profile_uuid": dev["profile_uuid"], "profile_status": "pushed"}
        else:
            return
        self.abm_put(org, modify=[rec])

    @precondition(lambda self: self.tokens)
    @rule(data=st.data(), mode=st.sampled_from(("now", "late", "never")), flush=st.booleans())
    def abm_echoes(self, data, mode, flush):
        """How ABM echoes a SUCCESS assignment back: at once, late (held
        back until a flush, then with the op_date of the assignment), or
        never.  An echo is ABM telling what ade did: no change, nothing to
        send again."""
        name = data.draw(st.sampled_from(self.registered()))
        if flush:
            self.flush_echoes(name, mode)
        else:
            ctl("POST", "/_mock/echoes", {"consumer_key": self.ck(name), "mode": mode})
            self.echo[name] = mode

    @rule(seconds=st.sampled_from((600, FAILED_RETRY + 2 * MARGIN, 86400 + 2 * MARGIN)))
    def advance_clock(self, seconds):
        """Time passes: every due time ade stored (an answer's retry_at, a
        token's pause after a 429 (abm_tokens and ade_rate_limits), a
        refused profile's definition time, a kept record's retry_at) moves
        back by seconds.  Then the sync
        settles, and each device whose FAILED or THROTTLED answer is now
        due (by the model's own clock) must have been sent again: a due
        retry happens, it is not only scheduled."""
        for sql in ("UPDATE host_dep_assignments SET retry_at = retry_at - make_interval(secs => %s) "
                    "WHERE retry_at IS NOT NULL",
                    "UPDATE abm_tokens SET assign_not_before = assign_not_before - make_interval(secs => %s) "
                    "WHERE assign_not_before IS NOT NULL",
                    "UPDATE ade_profile_definitions SET defined_at = defined_at - make_interval(secs => %s) "
                    "WHERE refusal IS NOT NULL",
                    "UPDATE ade_rejected_records SET retry_at = retry_at - make_interval(secs => %s) "
                    "WHERE retry_at IS NOT NULL",
                    # the pauses ABM asked for (0.5: a 429's Retry-After kept per kind)
                    "UPDATE ade_rate_limits SET paused_until = paused_until - make_interval(secs => %s)"):
            q(self.admin, sql, (seconds,))
        self.mclock += seconds
        due = set()
        for s, when in self.cooldown.items():
            if when is None or when > self.mclock - MARGIN or s not in self.abm or s in self.plat_edited:
                continue
            token = self.abm[s]["org"]
            if not self.tokens.get(token, {}).get("active") or self.paused.get(token, -1e9) > self.mclock - MARGIN:
                continue
            prof = self.expected_profile(token, self.hosts.get(s), self.platform(s))
            if prof is None or self.refused.get((token, json.dumps(prof, sort_keys=True)), -1e9) > self.mclock - MARGIN:
                continue
            due.add(s)
        sent = set()
        self.settle(sent_to=sent)
        if due:
            seen("due retries checked")
        missing = due - sent
        assert not missing, "devices whose FAILED/THROTTLED answer is due were not sent again: %r" % sorted(missing)
        self.check_synced()

    @precondition(lambda self: self.active())
    @rule(data=st.data(), answer=st.sampled_from(("FAILED", "THROTTLED")),
          seconds=st.sampled_from((FAILED_RETRY + 2 * MARGIN, 86400 + 2 * MARGIN)))
    def due_retry(self, data, answer, seconds):
        """A device ABM answers FAILED or THROTTLED (sent because ABM
        reports another MDM's profile on it), then the clock passes its due
        time: advance_clock checks that it is really sent again."""
        s = self.make_eligible(data.draw(st.sampled_from(self.active())), unforced=True)
        if s is None:
            return
        ctl("POST", "/_mock/assign_responses", {"consumer_key": self.ck(self.abm[s]["org"]),
                                                  "responses": {s: answer}})
        self.forced[s] = answer
        self.need_assign(s)
        self.settle()
        self.check_synced()
        if answer == "THROTTLED":
            seconds = 86400 + 2 * MARGIN
        self.advance_clock(seconds)

    @precondition(lambda self: self.active())
    @rule(data=st.data(), after=st.sampled_from(("now", "late", "never")))
    def late_echo(self, data, after):
        """ABM echoes an assignment late: a device is sent (another MDM's
        profile at ABM) and answered SUCCESS while its token's echoes are
        held back; the syncs settle; then the echo arrives, with the
        assignment's op_date, and nothing is sent again."""
        name = data.draw(st.sampled_from(self.active()))
        s = self.make_eligible(name, unforced=True)
        if s is None:
            return
        ctl("POST", "/_mock/echoes", {"consumer_key": self.ck(name), "mode": "late"})
        self.echo[name] = "late"
        self.need_assign(s)
        self.settle()
        self.check_synced()
        self.flush_echoes(name, after)
        self.settle()
        self.check_synced()

    # ---- the application

    @precondition(lambda self: self.serials)
    @rule(data=st.data(), everything=st.booleans())
    def app_delete(self, data, everything):
        live = self.db_live()
        db = self.db_hosts()
        if everything:
            q(self.app, "DELETE FROM hosts")
            gone = list(db)
        else:
            s = data.draw(st.sampled_from(self.serials))
            q(self.app, "DELETE FROM hosts WHERE hardware_serial = %s", (s,))
            gone = [s] if s in db else []
        self.forget_hosts(gone, live)

    @rule(restart=st.booleans())
    def app_truncate(self, restart):
        """TRUNCATE hosts by the application; with RESTART IDENTITY by the
        admin (PostgreSQL wants the sequence's owner for that)."""
        live = self.db_live()
        db = self.db_hosts()
        if restart:
            q(self.admin, "TRUNCATE hosts RESTART IDENTITY")
        else:
            q(self.app, "TRUNCATE hosts")
        self.forget_hosts(list(db), live)

    def forget_hosts(self, gone, live):
        """hosts taken away: those of live assignments come back, same team"""
        for s in gone:
            if s not in live:
                self.hosts.pop(s, None)
        db = self.db_hosts()
        for s in gone:
            if s in live:
                assert s in db and db[s] == self.hosts.get(s), \
                    "host %s of a live device was not made again in its team (%r, want %r)" % (
                        s, db.get(s), self.hosts.get(s))

    @precondition(lambda self: self.serials)
    @rule(data=st.data())
    def app_reserial(self, data):
        s = data.draw(st.sampled_from(self.serials))
        live = self.db_live()
        new = self.new_serial("R")
        q(self.app, "UPDATE hosts SET hardware_serial = %s WHERE hardware_serial = %s", (new, s))
        if s not in self.hosts:
            return
        team = self.hosts.pop(s)
        self.hosts[new] = team
        if s in live:
            self.hosts[s] = team              # the device gets a host of its own again

    @precondition(lambda self: self.serials)
    @rule(data=st.data())
    def app_move_team(self, data):
        s = data.draw(st.sampled_from(self.serials))
        team = data.draw(st.sampled_from(sorted(self.teams) + [None]))
        q(self.app, "UPDATE hosts SET team_id = %s WHERE hardware_serial = %s",
          (self.teams.get(team), s))
        if s not in self.hosts:
            return
        if self.hosts[s] != team:
            self.touch(s)
        self.hosts[s] = team

    @rule()
    def app_insert(self):
        s = self.new_serial("M")  # never a serial of ABM's
        q(self.app, "INSERT INTO hosts (hardware_serial, platform) VALUES (%s, 'darwin')", (s,))
        self.hosts[s] = None

    @rule(data=st.data())
    def app_insert_future(self, data):
        """a host the application makes before ABM reports its serial
        (abm_add with future adds it to ABM later)"""
        s = self.new_serial("F")
        team = data.draw(st.sampled_from(sorted(self.teams) + [None]))
        q(self.app, "INSERT INTO hosts (hardware_serial, platform, team_id) VALUES (%s, 'darwin', %s)",
          (s, self.teams.get(team)))
        self.hosts[s] = team
        self.future.append(s)

    @precondition(lambda self: self.serials)
    @rule(data=st.data(), what=st.sampled_from(("model", "platform", "id")))
    def app_edit(self, data, what):
        """the application edits a host: its model, its platform (ABM's
        next record of the device puts ABM's back), its id (the assignment
        follows)"""
        s = data.draw(st.sampled_from(self.serials))
        self.app_edit_sql(what, s, data.draw(st.sampled_from(sorted(set(PLATFORM.values())))))

    def app_edit_sql(self, what, s, platform="ios"):
        if what == "model":
            q(self.app, "UPDATE hosts SET hardware_model = 'edited by the application' WHERE hardware_serial = %s",
              (s,))
        elif what == "platform":
            n = q(self.app, "UPDATE hosts SET platform = %s WHERE hardware_serial = %s RETURNING id",
                  (platform, s))
            if n:
                self.plat_edited.add(s)
        else:
            # an id from the sequence, as the README says: an id of the
            # application's own making (id + 1000000) can be one the sequence
            # handed out since a renumbering moved it past (the application's
            # own collision, not ade's)
            q(self.app, "UPDATE hosts SET id = nextval('hosts_id_seq') WHERE hardware_serial = %s", (s,))

    @precondition(lambda self: self.active())
    @rule(data=st.data())
    def exhausted_cursor(self, data):
        """EXHAUSTED_CURSOR: a full fetch whose last page ABM served but ade
        never got (cut on its way); the page again gets EXHAUSTED_CURSOR,
        and the fetch must start again: no device skipped."""
        name = data.draw(st.sampled_from(self.active()))
        self.expire_cursors_of(name)
        count = sum(1 for d in self.abm.values() if d["org"] == name)
        pages = max(1, -(-count // 3))
        ctl("POST", "/_mock/faults", {"rules": [{"path": "/server/devices", "consumer_key": self.ck(name),
                                                  "skip": pages - 1, "cut_body": True, "times": 1}]})
        try:
            self.sync_once()
        finally:
            ctl("POST", "/_mock/faults/clear", {})
        self.adopt_new_hosts()
        self.read_puts()
        self.settle()
        self.check_synced()

    @precondition(lambda self: self.active())
    @rule(data=st.data(), hold=st.sampled_from(range(len(HOLDS))),
          ending=st.sampled_from(("release", "cancel", "timeout", "terminate")),
          steps=st.lists(st.sampled_from(APP_STEPS), min_size=1, max_size=3))
    def open_run_job(self, data, hold, ending, steps):
        """open_run by CALL ade_sync_job()"""
        self.open_run(data, True, hold, ending, steps)

    @precondition(lambda self: self.active())
    @rule(data=st.data(), hold=st.sampled_from(range(len(HOLDS))),
          ending=st.sampled_from(("release", "cancel", "timeout", "terminate")),
          steps=st.lists(st.sampled_from(APP_STEPS), min_size=1, max_size=3))
    def open_run_select(self, data, hold, ending, steps):
        """open_run by SELECT ade_sync()"""
        self.open_run(data, False, hold, ending, steps)

    def reach_hold(self, token, hold):
        """make the run reach the hold point: a second page of changes, an
        expired cursor (a full fetch), a profile ABM has never seen (POST
        /profile), a device ade must send (PUT /profile/devices); a token
        whose assignments a 429 paused is held at its first fetch instead"""
        spec = HOLDS[hold]
        if spec["path"] == "/devices/sync" and spec.get("skip"):
            mine = [s for s in sorted(self.abm) if self.abm[s]["org"] == token][:4]
            for s in mine:
                self.touch(s)
                self.counter += 1
                self.abm_put(token, modify=[{"serial_number": s, "model": "paged %d" % self.counter}])
            if len(mine) < 4:
                self.abm_add_to(token, ["iPhone", "Mac", "iPad", "AppleTV"][len(mine):])
        elif spec["path"] == "/server/devices":
            self.expire_cursors_of(token)
        elif spec["path"].startswith("/profile"):
            s = self.make_eligible(token)
            if s is None:
                return 0
            if spec["method"] == "POST":
                self.fresh_profile(s)
            else:
                self.need_assign(s)
        return hold

    def open_run(self, data, job, hold, ending, steps):
        """A run held open at a request (the mock holds it) while the
        application deletes, truncates, re-serials, moves, inserts and
        edits hosts; then the request goes on, or the run is cancelled,
        times out or its backend is terminated.  CALL ade_sync_job()
        commits each step: the application's statements finish while the
        run is held (they never wait for a round trip to Apple).  SELECT
        ade_sync() is one transaction: they wait for it.  No application
        statement fails; hosts the application deleted whose device ABM
        deleted before the run stay deleted; the next syncs settle."""
        token = data.draw(st.sampled_from(self.active()))
        hold = self.reach_hold(token, hold)
        rule_ = dict(HOLDS[hold], hold="open", times=1, consumer_key=self.ck(token))
        ctl("POST", "/_mock/faults", {"rules": [rule_]})
        q(self.runner, "SET ade.enroll_url = %s" % ("'%s'" % ENROLL if self.enroll else "DEFAULT"))
        pid = q(self.runner, "SELECT pg_backend_pid()")[0][0]
        if ending == "timeout":
            q(self.runner, "SET statement_timeout = '1s'")
        gone_before = {s for s in self.serials if s not in self.abm}   # deleted at ABM before the run
        out = {}

        def run():
            try:
                if job:
                    q(self.runner, "CALL ade_sync_job()")
                    out["rows"] = []
                else:
                    out["rows"] = q(self.runner, "SELECT token_id, error FROM ade_sync()")
            except Exception as e:      # noqa: BLE001 - judged below
                out["error"] = e
        runner = threading.Thread(target=run)
        runner.start()
        end = time.time() + 5
        held = False
        while time.time() < end and runner.is_alive():
            if ctl("GET", "/_mock/held")["held"].get("open"):
                held = True
                break
            time.sleep(0.02)
        # the application's statements, drawn now (a replay draws the same)
        plan = []
        for kind in steps:
            s = data.draw(st.sampled_from(self.serials)) if self.serials else None
            team = data.draw(st.sampled_from(sorted(self.teams) + [None]))
            plat = data.draw(st.sampled_from(sorted(set(PLATFORM.values()))))
            plan.append((kind, s, team, plat))
        app_out = {"done": [], "touched": set(), "deleted": set()}

        def app():
            try:
                for kind, s, team, plat in plan:
                    self.open_app_step(kind, s, team, plat, app_out)
                    app_out["done"].append(kind)
            except Exception as e:      # noqa: BLE001 - judged below
                app_out["error"] = e
        appt = threading.Thread(target=app)
        appt.start()
        appt.join(3 if job else 0.5)
        finished_while_held = not appt.is_alive() and held and runner.is_alive()
        if ending == "cancel":
            q(self.admin, "SELECT pg_cancel_backend(%s)", (pid,))
        elif ending == "terminate":
            q(self.admin, "SELECT pg_terminate_backend(%s)", (pid,))
        if ending != "timeout":
            ctl("POST", "/_mock/release", {"name": "open"})
        runner.join(30)
        ctl("POST", "/_mock/release", {})
        assert not runner.is_alive(), "a run held open did not end"
        appt.join(30)
        assert not appt.is_alive(), "an application statement did not end after the run"
        ctl("POST", "/_mock/faults/clear", {})
        assert "error" not in app_out, "an application statement failed beside an open run (%s, %s): %s" % (
            "CALL ade_sync_job()" if job else "SELECT ade_sync()", ending, app_out["error"])
        seen("open run %s, %s%s" % ("job" if job else "ade_sync()", ending, "" if held else " (not held)"))
        if app_out["done"]:
            seen("application statements in an open run")
        if job and held:
            assert finished_while_held, \
                "an application statement waited for CALL ade_sync_job() held at a request to ABM"
        err = out.get("error")
        if err is not None:
            stopped = ending in ("cancel", "timeout", "terminate")
            assert stopped, "the held run failed: %s" % err
        if ending == "terminate" or self.runner.closed:
            try:
                self.runner.close()
            except Exception:
                pass
            self.runner = connect_to(self.db)
            for x in SESSION:
                q(self.runner, x)
        else:
            q(self.runner, "RESET statement_timeout")
        rows = out.get("rows") or []
        bad = [(t, e) for t, e in rows if e is not None and e != "busy"]
        assert ending != "release" or not bad, "a run held open and released failed: %r" % bad
        self.read_puts(rolled_back=ending != "release" or bool(bad))
        stay = set()
        if held and HOLDS[hold]["path"].startswith("/profile") and (job or ending == "release") \
                and token not in self.expired:
            # the held request came after every page of its token: a device
            # ABM deleted from it before the run is soft-deleted by then
            stay = {s for s in app_out["deleted"] & gone_before
                    if self.deleted_from.get(s) == token and s not in self.ghosts.get(token, set())}
        self.adopt_open_run(app_out, stay)
        self.settle()
        self.check_synced()

    def open_app_step(self, kind, s, team, plat, out):
        """one application statement inside an open run; what it touched
        goes to out (the model learns the outcome after the run)"""
        tid = self.teams.get(team)
        if kind == "delete" and s:
            q(self.app, "DELETE FROM hosts WHERE hardware_serial = %s", (s,))
            out["touched"].add(s)
            out["deleted"].add(s)
        elif kind == "delete_all":
            gone = [r[0] for r in q(self.app, "DELETE FROM hosts RETURNING hardware_serial")]
            out["touched"].update(gone)
            out["deleted"].update(gone)
        elif kind == "truncate":
            out["touched"].update(self.hosts)
            out["touched"].add("*")           # every host, also those the run made
            q(self.app, "TRUNCATE hosts")
        elif kind == "reserial" and s:
            new = self.new_serial("R")
            q(self.app, "UPDATE hosts SET hardware_serial = %s WHERE hardware_serial = %s", (new, s))
            out["touched"].update((s, new))
            out.setdefault("renamed", {})[new] = s
        elif kind == "move_team" and s:
            q(self.app, "UPDATE hosts SET team_id = %s WHERE hardware_serial = %s", (tid, s))
            out["touched"].add(s)
            out.setdefault("moved", {})[s] = team
        elif kind == "insert":
            m = self.new_serial("M")
            q(self.app, "INSERT INTO hosts (hardware_serial, platform) VALUES (%s, 'darwin')", (m,))
            out["touched"].add(m)
            out.setdefault("moved", {})[m] = None
        elif kind == "insert_future":
            f = self.new_serial("F")
            q(self.app, "INSERT INTO hosts (hardware_serial, platform, team_id) VALUES (%s, 'darwin', %s)",
              (f, tid))
            self.future.append(f)
            out["touched"].add(f)
            out.setdefault("moved", {})[f] = team
        elif kind in ("edit_model", "edit_platform", "renumber") and s:
            self.app_edit_sql({"edit_model": "model", "edit_platform": "platform", "renumber": "id"}[kind], s, plat)

    def adopt_open_run(self, app_out, stay_deleted):
        """After an open run: the hosts the application's statements touched
        are what the database says, within what the model allows (a host
        kept has its team from before or the one the application gave it; a
        host made again by the sync is in a default team; a device ABM
        deleted before the run, whose host the application deleted while
        the run was held after its pages, has no host)."""
        db = self.db_hosts()
        back = sorted(stay_deleted & set(db))
        assert not back, "hosts the application deleted while their device was soft-deleted came back: %r" % back
        touched = set(app_out["touched"])
        if "*" in touched:
            touched |= set(db) | set(self.hosts)
            touched.discard("*")
        old = dict(self.hosts)          # the teams before the run, whatever this loop adopts
        for s in sorted(touched):
            before = old.get(s, "<none>")
            if s in db:
                was = app_out.get("renamed", {}).get(s)     # a re-serialed host keeps its team
                allowed = {before, app_out.get("moved", {}).get(s, before), old.get(was, "<none>"),
                           app_out.get("moved", {}).get(was, "<none>")}
                for x in (s, was):          # a host the run made (and the application re-serialed)
                    if x is None:
                        continue
                    allowed |= {self.default_team(t, PLATFORM[f]) for t in self.creators.get(x, set()) | (
                        {self.abm[x]["org"]} if x in self.abm else set())
                        for f in ([self.abm[x]["family"]] if x in self.abm else FAMILIES)}
                assert db[s] in allowed, "host %s is in team %r after an open run; the model allows %r" % (
                    s, db[s], allowed)
                if db[s] != before:
                    self.touch(s)
                self.hosts[s] = db[s]
                self.creators.pop(s, None)
            else:
                self.hosts.pop(s, None)
        self.adopt_new_hosts()
    # ---- the admin

    @precondition(lambda self: len(self.teams) < 4)
    @rule()
    def create_team(self):
        name = "T%d" % self.counter
        self.counter += 1
        self.teams[name] = q(self.admin, "INSERT INTO teams (name) VALUES (%s) RETURNING id", (name,))[0][0]

    @precondition(lambda self: self.teams)
    @rule(data=st.data())
    def delete_team(self, data):
        name = data.draw(st.sampled_from(sorted(self.teams)))
        q(self.admin, "DELETE FROM teams WHERE id = %s", (self.teams.pop(name),))
        for s, t in self.hosts.items():
            if t == name:
                self.hosts[s] = None
                self.touch(s)
        for d in self.defaults.values():
            for k, v in d.items():
                if v == name:
                    d[k] = None
        self.profiles.pop(("team", name), None)
        self.world += 1

    @precondition(lambda self: self.active())
    @rule(data=st.data())
    def set_default_teams(self, data):
        name = data.draw(st.sampled_from(self.active()))
        choice = st.sampled_from(sorted(self.teams) + [None])
        d = {k: data.draw(choice) for k in ("macos", "ios", "ipados")}
        q(self.admin, "SELECT ade_set_default_teams(%s, %s, %s, %s)",
          (self.tokens[name]["id"],) + tuple(self.teams.get(d[k]) for k in ("macos", "ios", "ipados")))
        self.defaults[name] = d

    @rule(data=st.data(), variant=st.integers(0, 2), clear=st.booleans())
    def set_profile(self, data, variant, clear):
        kinds = ["org", "plat"] + (["tok", "tokplat"] if self.active() else []) + (["team"] if self.teams else [])
        kind = data.draw(st.sampled_from(kinds))
        if kind == "plat":
            scope = ("plat", data.draw(st.sampled_from(sorted(set(PLATFORM.values())))))
        elif kind == "tok":
            scope = ("tok", data.draw(st.sampled_from(self.active())))
        elif kind == "tokplat":
            t = data.draw(st.sampled_from(self.active()))
            scope = ("tokplat", t, data.draw(st.sampled_from(sorted(set(PLATFORM.values())))))
        elif kind == "team":
            scope = ("team", data.draw(st.sampled_from(sorted(self.teams))))
        else:
            scope = ("org",)
        self.put_profile(scope, None if clear else {"profile_name": "P%d" % variant, "url": ENROLL})

    @rule(on=st.booleans())
    def enroll_url(self, on):
        if on:
            q(self.admin, "SET ade.enroll_url = %s", (ENROLL,))
        else:
            q(self.admin, "RESET ade.enroll_url")
        self.enroll = on
        self.world += 1

    @precondition(lambda self: not self.restored)
    @rule()
    def dump_restore(self):
        """pg_dump of the database, pg_restore -1 into another one (without
        pg_cron, which lives only in cron.database_name), and everything goes
        on there: after a sync the tables are what the model says, and no
        serial is sent again (once per example: it takes a second or two)"""
        self.restored = True
        target = DB + "_b" if self.db == DB else DB
        d = tempfile.mkdtemp(prefix="ade-model-dump.")
        dump, lst = os.path.join(d, "db.dump"), os.path.join(d, "list")
        env = dict(os.environ, PGDATABASE=self.db)
        subprocess.run([PGBIN + "/pg_dump", "-Fc", "-f", dump, self.db], check=True, env=env,
                       capture_output=True)
        toc = subprocess.run([PGBIN + "/pg_restore", "-l", dump], check=True, capture_output=True,
                             text=True).stdout
        with open(lst, "w") as fh:
            fh.write("\n".join(line for line in toc.splitlines() if "pg_cron" not in line and " cron " not in line))
        for conn in (self.admin, self.app, self.other, self.runner):
            conn.close()
        root = connect_to("postgres")
        q(root, 'DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % target)
        q(root, 'CREATE DATABASE "%s"' % target)
        root.close()
        r = subprocess.run([PGBIN + "/pg_restore", "-1", "-L", lst, "-d", target, dump], env=env,
                           capture_output=True, text=True)
        assert r.returncode == 0, "pg_restore -1 failed: %s" % r.stderr
        self.db = target
        self.connect_all()
        seen("dump/restore")
        if self.enroll:
            q(self.admin, "SET ade.enroll_url = %s", (ENROLL,))
        self.settle()
        self.check_synced()

    # ---- syncs

    @rule()
    def sync(self):
        self.settle()
        self.check_synced()

    @precondition(lambda self: self.active())
    @rule(data=st.data())
    def sync_one_token(self, data):
        """ade_sync(token_id) of one token, then every token settles."""
        name = data.draw(st.sampled_from(self.active()))
        rows = q(self.admin, "SELECT token_id, error FROM ade_sync(%s)", (self.tokens[name]["id"],))
        assert [e for t, e in rows] == [None], "ade_sync(%s) failed: %r" % (name, rows)
        self.adopt_new_hosts()
        self.read_puts()
        self.settle()
        self.check_synced()

    @precondition(lambda self: self.active())
    @rule()
    def two_syncs_at_once(self):
        """Two ade_sync() at the same time: no token twice, no error but busy."""
        q(self.other, "SET ade.enroll_url = %s" % ("'%s'" % ENROLL if self.enroll else "DEFAULT"))
        out = {}

        def run(key, conn):
            try:
                out[key] = self.sync_once(conn)
            except Exception as e:          # noqa: BLE001 - reported below
                out[key] = e
        threads = [threading.Thread(target=run, args=(k, c)) for k, c in (("a", self.admin), ("b", self.other))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for key, rows in out.items():
            assert not isinstance(rows, Exception), "a concurrent ade_sync() raised: %s" % rows
            errors = [(t, e) for t, e in rows if e not in (None, "busy")]
            assert not errors, "a concurrent ade_sync() failed: %r" % errors
        self.adopt_new_hosts()
        self.read_puts()
        self.settle()
        self.check_synced()

    @rule(data=st.data(), fault=st.sampled_from(range(len(FAULTS))), primed=st.booleans())
    def sync_through_fault(self, data, fault, primed):
        """One run through a fault: it may fail; nothing may be lost.  With
        primed, a fault of POST /profile or PUT /profile/devices first gets
        a request to hit: a device of an active token that ade must send
        (another MDM's profile at ABM), and for POST /profile a profile ABM
        has never seen."""
        self.through_fault(data, fault, primed)

    @rule(data=st.data(), fault=st.sampled_from(PRIMED))
    def refused_by_abm(self, data, fault):
        """sync_through_fault, primed, of the faults of POST /profile and
        PUT /profile/devices alone (400, INVALID_PROFILE, 429)"""
        self.through_fault(data, fault, True)

    def through_fault(self, data, fault, primed):
        rule_ = FAULTS[fault]
        if primed and rule_["path"].startswith("/profile") and self.active():
            s = self.make_eligible(data.draw(st.sampled_from(self.active())))
            if s is not None:
                if rule_["path"] == "/profile":
                    self.fresh_profile(s)
                else:
                    self.need_assign(s)
        ctl("POST", "/_mock/faults", {"rules": [rule_]})
        if fault == INVALID_CURSOR:               # any token may meet it: a full fetch
            for name in self.active():
                self.full_fetch_coming(name)
        hang = rule_.get("hang_seconds")
        if hang:
            q(self.admin, "SET ade.http_timeout = '300ms'")
        try:
            self.sync_once()
        finally:
            ctl("POST", "/_mock/faults/clear", {})
            if hang:
                q(self.admin, "RESET ade.http_timeout")
        self.adopt_new_hosts()
        self.read_puts()
        log = self.new_log
        if any(r.get("fault") is not None for r in log) and fault in FAULT_SEEN:
            seen(FAULT_SEEN[fault])
        for i, r in enumerate(log):
            if fault != INVALID_PROFILE or r.get("fault") is None or r["method"] != "PUT":
                continue
            # ABM no longer knows the UUID: defined again in the run when a
            # device took it; a UUID no device took is kept as refused (as a
            # 400 on POST /profile), defined again after failed_retry_interval
            org = (r.get("consumer_key") or "").replace("CK_model_", "")
            again = any(x["method"] == "POST" and x["path"] == "/profile" and x.get("status") == 200
                        and x.get("consumer_key") == r.get("consumer_key") for x in log[i + 1:])
            seen("INVALID_PROFILE: %s" % ("defined again" if again else "kept as refused"))
            if again:
                # a new UUID for the profile: the devices that held the lost
                # one get it (a change for each of them)
                self.world += 1
            if not again:
                prof = ctl("GET", "/_mock/state?consumer_key=" + self.ck(org))["profiles"].get(
                    (r.get("body") or {}).get("profile_uuid") or "")
                if prof is not None:
                    self.refused[(org, json.dumps(prof, sort_keys=True))] = self.mclock + FAILED_RETRY


# What the bounded run (and a whole --fuzz) must have seen at least once: a
# step that never does what it is for is a hole in the test, not a pass.
REQUIRED = tuple("open run %s, %s" % (how, end) for how in ("job", "ade_sync()")
                 for end in ("release", "cancel", "timeout", "terminate")) + (
    "application statements in an open run", "due retries checked", "429 on PUT /profile/devices",
    "POST /profile refused (400)", "PUT /profile/devices refused (400 INVALID_PROFILE)",
    "late echoes delivered", "dump/restore", "upgrade from 0.4", "ghosts reconciled")


def seen_line(counts):
    return "; ".join("%s %d" % kv for kv in sorted(counts.items()))


def run(seed, examples, steps):
    machine = type("AdeMachine_%d" % seed, (AdeMachine,), {})
    machine._hypothesis_internal_use_seed = seed
    run_state_machine_as_test(machine, settings=settings(
        max_examples=examples, stateful_step_count=steps, deadline=None, database=None,
        phases=(Phase.generate, Phase.shrink),
        suppress_health_check=list(HealthCheck)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fuzz", type=float, metavar="MINUTES", help="random seeds until the time is up")
    ap.add_argument("--seed", type=int, help="one batch with this seed (a replay)")
    ap.add_argument("--examples", type=int, default=40)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--no-coverage", action="store_true",
                    help="do not fail when a required step never happened (short replays)")
    a = ap.parse_args()
    if not MOCK:
        sys.exit("model_test: ADE_MOCK_URL is not set")
    AdeMachine.fixture = Fixture()
    seeds = [a.seed if a.seed is not None else 20261129]
    end = time.time() + 60 * a.fuzz if a.fuzz else None
    if end and a.seed is None:
        seeds = []
    batch = 0
    try:
        while True:
            if end:
                if time.time() >= end:
                    break
                seed = a.seed if a.seed is not None else random.SystemRandom().randrange(1 << 31)
            else:
                if batch >= len(seeds):
                    break
                seed = seeds[batch]
            batch += 1
            print("== model test: seed %d, %d examples of up to %d steps (replay: test/model_test.py --seed %d "
                  "--examples %d --steps %d, or make fuzz ADE_FUZZ_SEED=%d)" % (
                      seed, a.examples, a.steps, seed, a.examples, a.steps, seed), flush=True)
            before = dict(SEEN)
            run(seed, a.examples, a.steps)
            if end:
                print("model test: seed %d seen: %s" % (seed, seen_line(
                    {k: v - before.get(k, 0) for k, v in SEEN.items() if v > before.get(k, 0)})), flush=True)
            if a.seed is not None and end:
                break
    except Exception as e:
        import traceback
        for sub in getattr(e, "exceptions", [e]):
            print("".join(traceback.format_exception(sub)), flush=True)
        print("model test FAILED after %d steps: %s" % (STEPS["n"], e), flush=True)
        print("%d passed, 1 failed" % STEPS["n"])
        sys.exit(1)
    print("model test: %d steps in %d batches, every invariant held" % (STEPS["n"], batch))
    print("model test: seen: " + seen_line(SEEN))
    never = [k for k in REQUIRED if not SEEN.get(k)]
    if never and not a.no_coverage:
        print("model test FAILED: these steps never did what they are for (the test no longer "
              "covers them): %s" % "; ".join(never), flush=True)
        print("%d passed, 1 failed" % STEPS["n"])
        sys.exit(1)
    print("%d passed, 0 failed" % STEPS["n"])


if __name__ == "__main__":
    main()
