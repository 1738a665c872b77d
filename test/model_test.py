#!/usr/bin/python3
"""test/model_test.py: a randomized, model-based test of ade (issue 12).

A reference model, written apart from the SQL, of what ABM (the mock)
holds and what the tables must then say, driven by random sequences of
steps (Hypothesis' stateful testing, which shrinks a failure to the
shortest sequence that shows it):

- in ABM: devices added, modified, deleted, moved between tokens, several
  records of one serial in one page; assignment answers forced (FAILED,
  THROTTLED, NOT_ACCESSIBLE); cursors expired;
- an application role: hosts deleted, truncated, re-serialed, moved between
  teams, inserted;
- the admin: teams made and deleted, default teams and profiles (every
  scope) set, changed and removed, ade.enroll_url on and off, tokens added,
  renewed and removed;
- ade_sync() runs: alone, two at once, or through a fault (5xx, a hang, a
  cut body, a repeated cursor, a failing PUT /profile/devices or
  POST /profile).

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
that was not SUCCESS).

    model_test.py                 a bounded run with a fixed seed (make test)
    model_test.py --fuzz MINUTES  random seeds until the time is up (make fuzz)
    model_test.py --seed N        one batch with seed N (a replay)

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
)

STEPS = {"n": 0}


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
        self.admin = connect()
        self.app = connect(APP)
        self.other = connect()
        for conn in (self.admin, self.other):
            for s in SESSION:
                q(conn, s)
        q(self.admin, "DROP EXTENSION IF EXISTS ade CASCADE")
        q(self.admin, "CREATE EXTENSION ade")
        q(self.admin, "SELECT ade_import_key(%s, %s)", (self.fixture.key, self.fixture.cert))
        q(self.admin, "GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON hosts TO %s" % APP)
        q(self.admin, "GRANT USAGE ON SEQUENCE hosts_id_seq TO %s" % APP)
        q(self.admin, "RESET ade.enroll_url")
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

    def teardown(self):
        for conn in (self.admin, self.app, self.other):
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

    def sync_once(self, conn=None):
        rows = q(conn or self.admin, "SELECT token_id, error FROM ade_sync()")
        return rows

    def read_puts(self):
        """The PUT /profile/devices the mock got since the last look: no
        serial is sent twice without a change in between.  Returns how many
        requests changed something at ABM (PUTs and POST /profile)."""
        log = ctl("GET", "/_mock/log")["requests"]
        new = [r for r in log if r["seq"] > self.log_seq]
        if new:
            self.log_seq = max(r["seq"] for r in new)
        sent = 0
        for r in new:
            if r["method"] == "POST" and r["path"] == "/profile":
                sent += 1
            if r["method"] != "PUT" or r["path"] != "/profile/devices" or not isinstance(r.get("body"), dict):
                continue
            sent += 1
            answered = r.get("status") == 200 and r.get("fault") is None
            org = (r.get("consumer_key") or "").replace("CK_model_", "")
            for s in r["body"].get("devices") or []:
                key = (self.gen.get(s, 0), self.world)
                prev = self.last_put.get(s)
                assert not (prev and prev[:2] == key and prev[2]), \
                    "serial %s was sent in PUT /profile/devices again with no change since it was assigned" % s
                success = answered and self.forced.get(s) in (None, "SUCCESS") \
                    and s in self.abm and self.abm[s]["org"] == org
                self.last_put[s] = key + (success,)
        return sent

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

    def settle(self, conn=None):
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
            if self.read_puts() == 0:
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
        for s, ck in want.items():
            token = ck.replace("CK_model_", "")
            prof = self.expected_profile(token, self.hosts.get(s), self.platform(s))
            if prof is None:
                continue
            dev = states[token]["devices"].get(s, {})
            held = states[token]["profiles"].get(dev.get("profile_uuid") or "")
            if dev.get("profile_status") in ("assigned", "pushed") and held == prof:
                continue
            resp, due, needs = rows.get(s, (None, None, None))
            assert (resp in ("FAILED", "THROTTLED") and due) or (resp == "NOT_ACCESSIBLE" and not needs), \
                "device %s of %s holds %r at ABM, not its profile %r, and its answer is %r (due %r)" % (
                    s, token, held, prof.get("profile_name"), resp, due)

    # ---- the start of every example: tokens with devices, synced

    @initialize(n=st.integers(1, 3), families=st.lists(st.sampled_from(FAMILIES), max_size=8))
    def start(self, n, families):
        for name in TOKENS[:n]:
            self.add_token(name)
            if families:
                self.abm_add_to(name, families)
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
        tid = q(self.admin, "SELECT ade_add_token(%s)", (psycopg2.Binary(p7m),))[0][0]
        t = self.tokens.get(name)
        if t and t["active"]:
            assert t["id"] == tid, "renewing a token must keep its id"
        if t and not t["active"]:
            # removed, added back: in place, with its profiles and default
            # teams (those whose team still exists)
            assert t["id"] == tid, "a token added back must get its id back"
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
    @rule(data=st.data(), families=st.lists(st.sampled_from(FAMILIES), min_size=1, max_size=4))
    def abm_add(self, data, families):
        self.abm_add_to(data.draw(st.sampled_from(self.registered())), families)

    def abm_add_to(self, name, families):
        recs = []
        for family in families:
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
        self.abm_put(org, delete=[s])
        self.unsynced_delete(org, s)

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
        name = data.draw(st.sampled_from(self.active()))
        ctl("POST", "/_mock/tokens/state", {"consumer_key": self.ck(name), "expire_cursors": True})
        for s, d in self.abm.items():       # the full fetch lists them again
            if d["org"] == name:
                self.creators.setdefault(s, set()).add(name)
        # and misses the deletes it had not seen yet, or that come before it
        self.ghosts.setdefault(name, set()).update(self.unsynced_deletes.pop(name, set()))
        self.expired.add(name)

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
        args = {}
        if kind == "plat":
            p = data.draw(st.sampled_from(sorted(set(PLATFORM.values()))))
            scope, args = ("plat", p), {"platform": p}
        elif kind == "tok":
            t = data.draw(st.sampled_from(self.active()))
            scope, args = ("tok", t), {"token_id": self.tokens[t]["id"]}
        elif kind == "tokplat":
            t = data.draw(st.sampled_from(self.active()))
            p = data.draw(st.sampled_from(sorted(set(PLATFORM.values()))))
            scope, args = ("tokplat", t, p), {"token_id": self.tokens[t]["id"], "platform": p}
        elif kind == "team":
            t = data.draw(st.sampled_from(sorted(self.teams)))
            scope, args = ("team", t), {"team_id": self.teams[t]}
        else:
            scope = ("org",)
        prof = None if clear else {"profile_name": "P%d" % variant, "url": ENROLL}
        named = "".join(", %s => %%(%s)s" % (k, k) for k in args)
        args["profile"] = json.dumps(prof) if prof else None
        q(self.admin, "SELECT ade_set_profile(%%(profile)s::jsonb%s)" % named, args)
        if prof is None:
            self.profiles.pop(scope, None)
        else:
            self.profiles[scope] = prof
        self.world += 1

    @rule(on=st.booleans())
    def enroll_url(self, on):
        if on:
            q(self.admin, "SET ade.enroll_url = %s", (ENROLL,))
        else:
            q(self.admin, "RESET ade.enroll_url")
        self.enroll = on
        self.world += 1

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

    @rule(fault=st.sampled_from(range(len(FAULTS))))
    def sync_through_fault(self, fault):
        """One run through a fault: it may fail; nothing may be lost."""
        ctl("POST", "/_mock/faults", {"rules": [FAULTS[fault]]})
        hang = FAULTS[fault].get("hang_seconds")
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
            run(seed, a.examples, a.steps)
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
    print("%d passed, 0 failed" % STEPS["n"])


if __name__ == "__main__":
    main()
