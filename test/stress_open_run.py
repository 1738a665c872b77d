#!/usr/bin/python3
"""test/stress_open_run.py: the application's statements racing open runs
(issue 18).

Threads, each with a connection of its own:

- the runner (superuser) calls CALL ade_sync_job() back to back (what
  pg_cron runs: each page and assignment batch commits), and sometimes
  SELECT ade_sync() (one transaction); each run with a small page size
  (SET ade.page_size, 1 to 5) so that it has many pages, and some with the
  mock hanging a sync page or a profile assignment for a while, so that the
  run stays open with pages committed and more to come;
- a driver changes ABM (the mock) about once a second: devices added
  (new ones, serials the application made hosts for first, serials ABM
  deleted before), modified (a new model, which changes the host row; or
  only the colour or the profile, which changes no host row), deleted, and
  moved between tokens (a delete from one and an add to the other, in the
  same second);
- the application: --apps connections as mdm_app, granted what the README
  grants (DML on hosts, the id sequence), issuing random statements on
  hosts: single and bulk deletes, updates of serial, team, id, model and
  platform (single and bulk), inserts of serials ABM adds later, TRUNCATE;
  mostly READ COMMITTED (autocommit, and some transactions of two
  statements), some REPEATABLE READ transactions and (the first connection)
  SERIALIZABLE ones, which take their snapshot, wait a little (pages commit
  meanwhile), then write; a statement on one host most often names a device
  the driver changed a moment ago;
- a checker: every live assignment has its host (same id, same serial),
  read every half second; a sampler: which application statements wait
  for a lock, and for whom (pg_blocking_pids), every 100 ms.

Every application statement's duration and error (SQLSTATE, message,
context) is recorded.  An audit trigger of the test on hosts and
host_dep_assignments records every row written, by whom (application_name)
and in which transaction, with clock_timestamp().

After --seconds the application and the driver stop, the mock's faults are
cleared, and runs go on until one sends nothing to ABM (a couple of
CALL ade_sync_job() and at most 6 SELECT ade_sync(), with the default page
size).  Then:

1. every live assignment has a host with its id and serial; no serial has
   two hosts; none did at any time the checker looked;
2. the live assignments are exactly ABM's devices (mockctl truth), each
   held by its token;
3. every live device holds at ABM the profile of its host's team (the team
   profile of T2, else the organisation's), or its stored answer says why
   not (FAILED or THROTTLED with a due retry, NOT_ACCESSIBLE);
4. from the audit: a host is made again by an application statement (the
   delete, truncate or re-serial triggers) only for a device whose
   assignment was live then (hosts of soft-deleted devices are never made
   again); a live host deleted or truncated comes back in the same
   transaction with its id and team; a re-serialed live host leaves a host
   for the device in the same team; a renumbered live host takes its device
   along; the sync makes a host only with a live assignment;
5. no application statement failed, but for the expected ones, counted and
   shown apart: TRUNCATE hosts under REPEATABLE READ or SERIALIZABLE
   (refused by design, feature_not_supported), and under REPEATABLE READ
   or SERIALIZABLE a serialization failure (40001) on a host row that the
   sync changed (model or platform) or that another application
   connection changed after the transaction's snapshot (the audit says who
   wrote which row after the snapshot).  A 40001 whose only concurrent
   writer was the sync on an assignment row (never on the host row), a
   deadlock with the runner, or any other error fails the test (a
   deadlock between application connections alone, outside ade's
   triggers, is the application's own and shown apart);
6. no application statement waited longer than --max-wait seconds, but
   those that ran while a SELECT ade_sync() was open (one transaction: they
   may wait for it) and those seen waiting for other application
   connections only, both shown apart; the distributions are printed.

It was tried on purpose against builds of ade broken in three ways (a
private install, never committed): writes of a run without the lock on
hosts (checks 1 and 4 fail), the delete trigger reading the transaction's
snapshot instead of the latest (check 4), and CALL ade_sync_job() not
committing its steps (check 6).

    stress_open_run.py                        bounded, fixed seed (make test)
    stress_open_run.py --seconds 600 --seed N a long run, or a replay
    stress_open_run.py --fuzz MINUTES         runs of --seconds (default 300)
                                              with random seeds (make fuzz)

The threads race, so a seed fixes the choices, not their timing.
Environment: PGHOST, PGPORT, PGUSER, ADE_TEST_DB (a database with pg_cron
and the ade library), ADE_MOCK_URL (test/mock_abm.py).  The last line is
"N passed, N failed" (the checks made, and those that failed).
"""

import argparse
import bisect
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback

import psycopg2

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mockctl  # noqa: E402
from testdb import connect, q  # noqa: E402

MOCK = os.environ.get("ADE_MOCK_URL", "")
APP = "mdm_app"
TOKENS = ("A", "B", "C")
FAMILIES = ("Mac", "iPhone", "iPad", "AppleTV", "Vision")
PLATFORMS = ("darwin", "ios", "ipados", "tvos", "visionos")
ENROLL = "https://mdm.example.com/enroll"
PROFILE_ORG = {"profile_name": "stress: the organisation's", "url": ENROLL, "is_supervised": True}
PROFILE_T2 = {"profile_name": "stress: team T2's", "url": ENROLL, "is_supervised": True}
RUNNER = "stress-runner"
ADE_TRIGGERS = ("ade_hosts_reserialed", "ade_hosts_renumbered", "ade_hosts_team_moved",
                "ade_restore_hosts", "ade_hosts_after_delete", "ade_hosts_after_truncate",
                "ade_hosts_before_truncate", "ade_live_hosts", "ade_hosts_check_team",
                "ade_teams_after_delete", "ade_teams_lock_hosts", "ade_teams_renumbered")


def ctl(method, path, body=None):
    return mockctl.request(MOCK, method, path, body)


def ck(name):
    return "CK_stress_" + name


AUDIT_SQL = """
CREATE UNLOGGED TABLE stress_audit (
    seq bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    xid bigint NOT NULL DEFAULT txid_current(),
    who text NOT NULL DEFAULT current_setting('application_name'),
    depth int NOT NULL DEFAULT pg_trigger_depth(),
    tbl text NOT NULL, op text NOT NULL,
    id bigint, old_id bigint, serial text, old_serial text,
    model text, old_model text, platform text, old_platform text,
    team bigint, old_team bigint, live boolean, token bigint, needs boolean);
CREATE FUNCTION stress_audit_hosts() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        INSERT INTO public.stress_audit (tbl, op) VALUES ('hosts', 'TRUNCATE');
    ELSIF TG_OP = 'INSERT' THEN
        INSERT INTO public.stress_audit (tbl, op, id, serial, model, platform, team)
        VALUES ('hosts', 'INSERT', NEW.id, NEW.hardware_serial, NEW.hardware_model, NEW.platform, NEW.team_id);
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO public.stress_audit (tbl, op, id, old_id, serial, old_serial, model, old_model,
                                         platform, old_platform, team, old_team)
        VALUES ('hosts', 'UPDATE', NEW.id, OLD.id, NEW.hardware_serial, OLD.hardware_serial,
                NEW.hardware_model, OLD.hardware_model, NEW.platform, OLD.platform, NEW.team_id, OLD.team_id);
    ELSE
        INSERT INTO public.stress_audit (tbl, op, old_id, old_serial, old_model, old_platform, old_team)
        VALUES ('hosts', 'DELETE', OLD.id, OLD.hardware_serial, OLD.hardware_model, OLD.platform, OLD.team_id);
    END IF;
    RETURN NULL;
END $$;
CREATE FUNCTION stress_audit_asg() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO public.stress_audit (tbl, op, old_id, old_serial, live, token)
        VALUES ('asg', 'DELETE', OLD.host_id, OLD.hardware_serial, false, OLD.abm_token_id);
    ELSE
        INSERT INTO public.stress_audit (tbl, op, id, old_id, serial, live, token, needs)
        VALUES ('asg', TG_OP, NEW.host_id, CASE WHEN TG_OP = 'UPDATE' THEN OLD.host_id END,
                NEW.hardware_serial, NEW.deleted_at IS NULL, NEW.abm_token_id, NEW.needs_assign);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER a_stress_audit AFTER INSERT OR UPDATE OR DELETE ON hosts
    FOR EACH ROW EXECUTE FUNCTION stress_audit_hosts();
CREATE TRIGGER a_stress_audit_truncate BEFORE TRUNCATE ON hosts
    FOR EACH STATEMENT EXECUTE FUNCTION stress_audit_hosts();
CREATE TRIGGER zz_stress_audit AFTER INSERT OR UPDATE OR DELETE ON host_dep_assignments
    FOR EACH ROW EXECUTE FUNCTION stress_audit_asg();
"""


def pct(values, p):
    if not values:
        return 0.0
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))]


class Stress:
    def __init__(self, seed, seconds, apps, max_wait, log_path=None):
        self.seed = seed
        self.seconds = seconds
        self.napps = apps
        self.max_wait = max_wait
        self.log_path = log_path
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.stmts = []           # every application statement (dicts)
        self.runs = []            # every run of the runner (dicts)
        self.runner_errors = []   # exceptions the runner's calls raised
        self.thread_errors = []   # a thread of the test itself broke
        self.checker_bad = []     # what the checker saw wrong mid-run
        self.samples = []         # (time, {pid: blocking pids}) of the application's lock waits
        self.hosts_cache = []     # (id, serial) of hosts, refreshed by the checker
        self.abm = {}             # serial -> {"org": token, "family": f}: what ABM holds
        self.gone = []            # serials ABM deleted (may come back)
        self.future = []          # serials the application made hosts for, for ABM to add
        self.hot = []             # the serials the driver changed last
        self.clock = 0
        self.counter = 0
        self.app_pids = {}
        self.runner_pid = None
        self.checks = 0
        self.failures = []
        self.conns = []           # every connection, closed at the end
        self.changes = {}         # what the driver changed in ABM, counted

    # ---------------------------------------------------------------- setup

    def setup(self):
        d = tempfile.mkdtemp(prefix="ade-stress.")
        key, cert = os.path.join(d, "key.pem"), os.path.join(d, "cert.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                        "-out", cert, "-days", "3650", "-subj", "/CN=ade stress test"],
                       check=True, capture_output=True)
        admin = self.admin = self.connect("stress-admin")
        q(admin, "SET client_min_messages = error")
        q(admin, "SET ade.allow_drop = on; DROP EXTENSION IF EXISTS ade CASCADE; RESET ade.allow_drop")
        q(admin, "DROP TABLE IF EXISTS stress_audit")
        q(admin, "DROP FUNCTION IF EXISTS stress_audit_hosts(), stress_audit_asg()")
        q(admin, "CREATE EXTENSION ade")
        q(admin, "SELECT ade_import_key(%s, %s)", (open(key).read(), open(cert).read()))
        # the application role as the README makes it
        if not q(admin, "SELECT 1 FROM pg_roles WHERE rolname = %s", (APP,)):
            q(admin, "CREATE ROLE %s LOGIN" % APP)
        q(admin, "GRANT ade_reader TO %s" % APP)
        q(admin, "GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON hosts TO %s" % APP)
        q(admin, "GRANT USAGE ON SEQUENCE hosts_id_seq TO %s" % APP)
        # an application that manages teams too: it deletes them
        q(admin, "GRANT SELECT, DELETE ON teams TO %s" % APP)
        q(admin, AUDIT_SQL)
        self.teams = {}
        for name in ("T1", "T2", "T3"):
            self.teams[name] = q(admin, "INSERT INTO teams (name) VALUES (%s) RETURNING id", (name,))[0][0]
        ctl("POST", "/_mock/reset", {})
        self.tokens = {}
        for name in TOKENS:
            tok = {"consumer_key": ck(name), "consumer_secret": "CS_stress_" + name,
                   "access_token": "AT_stress_" + name, "access_secret": "AS_stress_" + name,
                   "access_token_expiry": "2099-01-01T00:00:00Z"}
            ctl("POST", "/_mock/tokens", dict(tok, org_name="Stress " + name))
            out = os.path.join(d, name + ".p7m")
            mockctl.build_p7m(cert, mockctl.token_json_bytes(tok), out)
            self.tokens[name] = q(admin, "SELECT ade_add_token(%s)",
                                  (psycopg2.Binary(open(out, "rb").read()),))[0][0]
        t = self.teams
        defaults = {"A": (t["T1"], t["T2"], None), "B": (t["T2"], None, t["T1"]), "C": (None, t["T3"], t["T2"])}
        self.defaults = {}      # token id -> default teams (macOS, iOS, iPadOS)
        for name, (mac, ios, ipad) in defaults.items():
            q(admin, "SELECT ade_set_default_teams(%s, %s, %s, %s)", (self.tokens[name], mac, ios, ipad))
            self.defaults[self.tokens[name]] = (mac, ios, ipad)
        # and the slot of each token that names no team there takes the
        # churned team: made by the admin (self.teams_churn), deleted by
        # the application (the foreign keys from abm_tokens, which the sync
        # writes, reached by the application's delete)
        self.churn_slot = {self.tokens["A"]: 2, self.tokens["B"]: 1, self.tokens["C"]: 0}
        self.churn_ids = set()
        self.new_churn_team(admin)
        q(admin, "SELECT ade_set_profile(%s::jsonb)", (json.dumps(PROFILE_ORG),))
        q(admin, "SELECT ade_set_profile(%s::jsonb, team_id => %s)", (json.dumps(PROFILE_T2), t["T2"]))
        rng = random.Random(self.seed)
        when = self.tick()
        for name in TOKENS:
            recs = []
            for _ in range(20):
                s = self.new_serial("G")
                fam = rng.choice(FAMILIES)
                self.abm[s] = {"org": name, "family": fam}
                recs.append({"serial_number": s, "device_family": fam})
            ctl("POST", "/_mock/devices", {"consumer_key": ck(name), "op_date": when, "add": recs})
        q(admin, "CALL ade_sync_job()")
        n = q(admin, "SELECT count(*) FROM host_dep_assignments WHERE deleted_at IS NULL")[0][0]
        if n != len(self.abm):
            raise AssertionError("the first run made %d live assignments of %d devices" % (n, len(self.abm)))
        shutil.rmtree(d, ignore_errors=True)

    def new_churn_team(self, conn):
        tid = q(conn, "INSERT INTO teams (name) VALUES (%s) RETURNING id", (self.new_serial("X"),))[0][0]
        self.churn_ids.add(tid)
        for tok, slot in self.churn_slot.items():
            teams = list(self.defaults[tok])
            teams[slot] = tid
            q(conn, "SELECT ade_set_default_teams(%s, %s, %s, %s)", (tok, *teams))

    def teams_churn(self, rng):
        """The admin makes the churned team again once the application has
        deleted it, and names it as the default again."""
        conn = self.connect("stress-teams")
        while not self.stop.is_set():
            if not q(conn, "SELECT 1 FROM teams WHERE name LIKE 'X%%'"):
                self.new_churn_team(conn)
            self.stop.wait(rng.uniform(0.5, 2.0))

    def connect(self, name, user=None):
        conn = connect(user)
        q(conn, "SET application_name = %s", (name,))
        self.conns.append(conn)
        return conn

    def new_serial(self, prefix):
        with self.lock:
            self.counter += 1
            return "%s%06d" % (prefix, self.counter)

    def tick(self):
        """ABM's op_date of a driver step: a second after the last step's,
        never before now; the mock's clock (echoes, fetched_until) follows,
        as in the model test."""
        self.clock = max(int(time.time()), self.clock + 1)
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.clock))
        ctl("POST", "/_mock/clock", {"now": when})
        return when

    # ---------------------------------------------------------------- threads

    def guard(self, name, fn, *args):
        try:
            fn(*args)
        except Exception:
            self.thread_errors.append((name, traceback.format_exc()))
            self.stop.set()

    def runner(self, rng):
        conn = self.connect(RUNNER)
        q(conn, "SET client_min_messages = error")
        q(conn, "SET ade.retry_backoff = 10")
        q(conn, "SET ade.max_sync_seconds = 20")
        self.runner_pid = conn.get_backend_pid()
        self.runner_conn = conn
        while not self.stop.is_set():
            kind = "sync" if rng.random() < 0.15 else "job"
            page = rng.randint(1, 5)
            q(conn, "SET ade.page_size = %d" % page)
            fault = None
            r = rng.random()
            if r < 0.30:
                fault = {"path": "/devices/sync", "skip": rng.randint(0, 4),
                         "hang_seconds": rng.choice((2, 3, 4)) if kind == "job" else 2, "times": 1}
            elif r < 0.40:
                fault = {"method": "PUT", "path": "/profile/devices", "skip": rng.randint(0, 2),
                         "hang_seconds": rng.choice((2, 3)) if kind == "job" else 2, "times": 1}
            if fault:
                ctl("POST", "/_mock/faults", {"rules": [fault]})
            run = {"kind": kind, "page": page, "fault": fault, "t0": time.time()}
            try:
                if kind == "job":
                    q(conn, "CALL ade_sync_job()")
                else:
                    run["rows"] = q(conn, "SELECT token_id, error FROM ade_sync()")
            except psycopg2.Error as e:
                run["error"] = "%s %s" % (e.pgcode, str(e).strip())
                self.runner_errors.append(run)
            run["t1"] = time.time()
            self.runs.append(run)
            if fault:
                ctl("POST", "/_mock/faults/clear", {})

    def driver(self, rng):
        steps = 0
        while not self.stop.is_set():
            t0 = time.time()
            self.driver_step(rng)
            steps += 1
            if steps % 20 == 0:
                ctl("POST", "/_mock/log/clear", {})
            self.stop.wait(max(0.0, rng.uniform(0.8, 1.2) - (time.time() - t0)))

    def driver_step(self, rng):
        when = self.tick()
        calls = {}      # (token, kind) -> records / serials

        def put(tok, kind, item):
            calls.setdefault((tok, kind), []).append(item)
        touched = set()
        n = len(self.abm)
        for _ in range(rng.randint(2, 6)):
            live = sorted(s for s in self.abm if s not in touched)
            r = rng.random()
            if n < 45:
                r = r * 0.35                         # grow
            elif n > 110:
                r = 0.35 + r * 0.65                  # shrink or churn
            if r < 0.15 or not live:                 # a new device
                s = self.new_serial("G")
                fam = rng.choice(FAMILIES)
                self.abm[s] = {"org": rng.choice(TOKENS), "family": fam}
                put(self.abm[s]["org"], "add", {"serial_number": s, "device_family": fam})
                self.count("added")
            elif r < 0.25:                           # a serial the application made a host for
                with self.lock:
                    s = self.future.pop(rng.randrange(len(self.future))) if self.future else None
                if s is None or s in self.abm or s in touched:
                    continue
                fam = rng.choice(FAMILIES)
                self.abm[s] = {"org": rng.choice(TOKENS), "family": fam}
                put(self.abm[s]["org"], "add", {"serial_number": s, "device_family": fam})
                self.count("added after the application made its host")
            elif r < 0.35:                           # a device ABM deleted comes back
                back = [s for s in self.gone if s not in self.abm and s not in touched]
                if not back:
                    continue
                s = rng.choice(back)
                self.gone.remove(s)
                fam = rng.choice(FAMILIES)
                self.abm[s] = {"org": rng.choice(TOKENS), "family": fam}
                put(self.abm[s]["org"], "add", {"serial_number": s, "device_family": fam})
                self.count("added again after a delete")
            elif r < 0.50:                           # a new model: the host row changes
                s = rng.choice(live)
                put(self.abm[s]["org"], "modify", {"serial_number": s, "model": "Model %d" % rng.randint(1, 9)})
                self.count("modified (model)")
            elif r < 0.62:                           # no host column changes
                s = rng.choice(live)
                rec = {"serial_number": s, "color": rng.choice(("RED", "GREEN", "GOLD"))}
                if rng.random() < 0.5:
                    rec.update(profile_status="removed", profile_uuid="")
                put(self.abm[s]["org"], "modify", rec)
                self.count("modified (no host column)")
            elif r < 0.80:                           # deleted
                s = rng.choice(live)
                put(self.abm[s]["org"], "delete", s)
                del self.abm[s]
                self.gone.append(s)
                self.count("deleted")
            else:                                    # moved to another token
                s = rng.choice(live)
                d = self.abm[s]
                to = rng.choice([t for t in TOKENS if t != d["org"]])
                put(d["org"], "delete", s)
                rec = {"serial_number": s, "device_family": d["family"]}
                if rng.random() < 0.5:
                    rec["model"] = "Model %d" % rng.randint(1, 9)
                put(to, "add", rec)
                self.abm[s] = {"org": to, "family": d["family"]}
                self.count("moved")
            touched.add(s)
        for (tok, kind), items in sorted(calls.items()):
            ctl("POST", "/_mock/devices", {"consumer_key": ck(tok), "op_date": when, kind: items})
        self.hot = (self.hot + sorted(touched))[-12:]

    def count(self, what):
        self.changes[what] = self.changes.get(what, 0) + 1

    def checker(self):
        conn = self.connect("stress-checker")
        while not self.stop.is_set():
            self.check_hosts(conn, mid_run=True)
            self.hosts_cache = q(conn, "SELECT id, hardware_serial FROM hosts")
            self.stop.wait(0.5)

    def sampler(self):
        conn = self.connect("stress-sampler")
        while not self.stop.is_set():
            rows = q(conn, "SELECT pid, pg_blocking_pids(pid) FROM pg_stat_activity "
                           "WHERE application_name LIKE 'stress-app-%%' AND wait_event_type = 'Lock'")
            if rows:
                self.samples.append((time.time(), {pid: tuple(blockers) for pid, blockers in rows}))
            self.stop.wait(0.1)

    # ---------------------------------------------------------------- the application

    def app(self, i, rng):
        conn = self.connect("stress-app-%d" % i, APP)
        self.app_pids[conn.get_backend_pid()] = "app-%d" % i
        me = "stress-app-%d" % i
        while not self.stop.is_set():
            r = rng.random()
            if i == 0 and r < 0.15:
                iso = "SERIALIZABLE"
            elif r < 0.35:
                iso = "REPEATABLE READ"
            elif r < 0.42:
                iso = "RC-TX"
            else:
                iso = "RC"
            if iso == "RC":
                self.app_stmt(conn, me, iso, self.pick_op(i, rng, iso), None)
            elif iso == "RC-TX":
                ops = [self.pick_op(i, rng, iso) for _ in range(rng.randint(1, 2))]
                # TRUNCATE first: one that follows a write of hosts in its
                # transaction upgrades its lock, and two such transactions
                # deadlock (the application's own doing, nothing of ade's)
                ops.sort(key=lambda op: op[0] != "truncate")
                self.app_tx(conn, me, iso, ops, rng)
            elif rng.random() < 0.03:
                # alone, for the same reason (and refused by design)
                self.app_tx(conn, me, iso, [("truncate", "TRUNCATE hosts", (), "true", ())], rng)
            else:
                # picked once the snapshot has grown old: most often a
                # device whose change a page applied since
                self.app_tx(conn, me, iso, [None] * rng.randint(1, 2), rng, i)
            self.stop.wait(rng.uniform(0, 0.04))

    def target(self, rng):
        """A serial for a statement on one host: most often one the driver
        changed at ABM a moment ago (its run may be open now), else any
        host's, or any device's, or none's."""
        r = rng.random()
        cache, hot = self.hosts_cache, self.hot
        if r < 0.4 and hot:
            return rng.choice(hot)
        if r < 0.8 and cache:
            return rng.choice(cache)[1]
        if r < 0.95:
            try:
                serials = list(self.abm)        # the driver changes it meanwhile
            except RuntimeError:
                serials = []
            if serials:
                return rng.choice(serials)
        return "NOSUCH%d" % rng.randint(1, 99)

    def pick_op(self, i, rng, iso):
        """(name, sql, args, where, where_args): where/where_args select the
        rows it writes (for the snapshot of a transaction)."""
        w = rng.random() * 100
        team = rng.choice((self.teams["T1"], self.teams["T2"], self.teams["T3"], None))
        k = rng.randint(2, 7)
        m = rng.randint(0, k - 1)
        mod = ("id %%%% %d = %d" % (k, m), ())   # %% for psycopg2's parameters
        if w < 18:
            s = self.target(rng)
            return ("delete", "DELETE FROM hosts WHERE hardware_serial = %s", (s,), "hardware_serial = %s", (s,))
        if w < 24:
            return ("delete bulk", "DELETE FROM hosts WHERE " + mod[0], (), mod[0], ())
        if w < 26:
            d = str(rng.randint(0, 9))
            return ("delete bulk", "DELETE FROM hosts WHERE hardware_serial LIKE %s", ("%" + d,),
                    "hardware_serial LIKE %s", ("%" + d,))
        if w < 27:
            return ("delete all", "DELETE FROM hosts", (), "true", ())
        if w < 38:
            s = self.target(rng)
            new = self.new_serial("R%d_" % i)
            return ("serial", "UPDATE hosts SET hardware_serial = %s WHERE hardware_serial = %s", (new, s),
                    "hardware_serial = %s", (s,))
        if w < 40:
            suffix = "-" + self.new_serial("r%d_" % i)
            return ("serial bulk", "UPDATE hosts SET hardware_serial = hardware_serial || %s WHERE " + mod[0],
                    (suffix,), mod[0], ())
        if w < 52:
            s = self.target(rng)
            return ("team", "UPDATE hosts SET team_id = %s WHERE hardware_serial = %s", (team, s),
                    "hardware_serial = %s", (s,))
        if w < 57:
            return ("team bulk", "UPDATE hosts SET team_id = %s WHERE " + mod[0], (team,), mod[0], ())
        if w < 65:
            s = self.target(rng)
            return ("id", "UPDATE hosts SET id = nextval('hosts_id_seq') WHERE hardware_serial = %s", (s,),
                    "hardware_serial = %s", (s,))
        if w < 67:
            return ("id bulk", "UPDATE hosts SET id = nextval('hosts_id_seq') WHERE " + mod[0], (), mod[0], ())
        if w < 72:
            s = self.target(rng)
            return ("model", "UPDATE hosts SET hardware_model = %s, updated_at = now() WHERE hardware_serial = %s",
                    ("edited by the application", s), "hardware_serial = %s", (s,))
        if w < 75:
            s = self.target(rng)
            return ("platform", "UPDATE hosts SET platform = %s WHERE hardware_serial = %s",
                    (rng.choice(PLATFORMS), s), "hardware_serial = %s", (s,))
        if w < 77:
            return ("model bulk", "UPDATE hosts SET hardware_model = hardware_model || '.' WHERE " + mod[0],
                    (), mod[0], ())
        if w < 78:
            return ("team delete", "DELETE FROM teams WHERE name LIKE 'X%%'", (), None, ())
        if w < 98.3 - (0 if iso == "RC" else 1.0):
            s = self.new_serial("F%d_" % i)
            return ("insert", "INSERT INTO hosts (hardware_serial, hardware_model, platform, team_id) "
                              "VALUES (%s, 'made by the application', %s, %s)",
                    (s, rng.choice(PLATFORMS), team), None, ())
        return ("truncate", "TRUNCATE hosts", (), "true", ())

    def execute(self, conn, rec, sql, args):
        t0 = time.time()
        try:
            with conn.cursor() as c:
                c.execute(sql, tuple(args))
            ok = True
        except psycopg2.Error as e:
            ok = False
            rec.update(sqlstate=e.pgcode, error=(e.pgerror or str(e)).strip(),
                       context=getattr(e.diag, "context", None), detail=getattr(e.diag, "message_detail", None))
        rec.update(t0=t0, t1=time.time())
        rec["wait"] = rec["t1"] - t0
        return ok

    def app_stmt(self, conn, me, iso, op, tx):
        name, sql, args = op[0], op[1], op[2]
        rec = {"who": me, "iso": iso, "op": name, "sql": sql, "args": list(args), "tx": tx,
               "pid": conn.get_backend_pid()}
        ok = self.execute(conn, rec, sql, args)
        self.stmts.append(rec)
        if ok and name == "insert":
            with self.lock:
                self.future.append(args[0])
        return ok, rec

    def app_tx(self, conn, me, iso, ops, rng, i=None):
        """A transaction of ops; under REPEATABLE READ or SERIALIZABLE it
        takes its snapshot first, waits a little (pages commit meanwhile),
        then picks each op (None: picked then) and reads the rows it is to
        write before it writes them (for the blame of a 40001)."""
        level = "READ COMMITTED" if iso == "RC-TX" else iso
        with conn.cursor() as c:
            c.execute("BEGIN ISOLATION LEVEL " + level)
        tx = {"iso": iso, "snapshot": None, "targets": [], "t_snap": None}
        snapshot = iso != "RC-TX" and ops[0] is None
        if snapshot:
            with conn.cursor() as c:
                c.execute("SELECT txid_current_snapshot()::text")
                tx["snapshot"], tx["t_snap"] = c.fetchone()[0], time.time()
            time.sleep(rng.uniform(0, 0.3))
        ok = True
        for op in ops:
            while op is None or (snapshot and op[0] == "truncate"):
                op = self.pick_op(i, rng, iso)
            if snapshot:
                with conn.cursor() as c:
                    c.execute("SELECT coalesce(array_agg(id), '{}'), coalesce(array_agg(hardware_serial), '{}') "
                              "FROM hosts WHERE " + (op[3] or "false"), tuple(op[4]))
                    ids, serials = c.fetchone()
                tx["targets"].append((list(ids), list(serials)))
            ok, rec = self.app_stmt(conn, me, iso, op, tx)
            if not ok:
                break
        if ok:
            rec = {"who": me, "iso": iso, "op": "commit", "sql": "COMMIT", "args": [], "tx": tx,
                   "pid": conn.get_backend_pid()}
            self.execute(conn, rec, "COMMIT", ())
            self.stmts.append(rec)
        else:
            with conn.cursor() as c:
                c.execute("ROLLBACK")

    # ---------------------------------------------------------------- checks

    def check(self, ok, what):
        self.checks += 1
        if not ok:
            self.failures.append(what)
        return ok

    def check_hosts(self, conn, mid_run=False):
        bad = q(conn, """
            SELECT d.hardware_serial, d.host_id FROM host_dep_assignments d
             WHERE d.deleted_at IS NULL
               AND NOT EXISTS (SELECT 1 FROM hosts h WHERE h.id = d.host_id AND h.hardware_serial = d.hardware_serial)""")
        dup = q(conn, "SELECT hardware_serial FROM hosts GROUP BY 1 HAVING count(*) > 1")
        if mid_run:
            if bad or dup:
                self.checker_bad.append((time.time(), bad, dup))
            return
        self.check(not bad, "live assignments without their host (serial, host id): %r" % bad)
        self.check(not dup, "serials with two hosts: %r" % dup)

    def settle(self):
        """Runs with the default page size until one sends nothing to ABM."""
        conn = self.runner_conn
        q(conn, "RESET ade.page_size")
        ctl("POST", "/_mock/faults/clear", {})
        self.tick()
        started = q(conn, "SELECT clock_timestamp()")[0][0]
        for _ in range(2):
            q(conn, "CALL ade_sync_job()")
        errors = q(conn, "SELECT token_id, error FROM ade_sync_runs WHERE started_at >= %s AND error IS NOT NULL",
                   (started,))
        self.check(not errors, "the final CALL ade_sync_job() runs failed: %r" % errors)
        for i in range(6):
            ctl("POST", "/_mock/log/clear", {})
            rows = q(conn, "SELECT token_id, error FROM ade_sync()")
            errors = [(t, e) for t, e in rows if e is not None]
            self.check(not errors, "a final SELECT ade_sync() failed: %r" % errors)
            log = ctl("GET", "/_mock/log")["requests"]
            sent = [r for r in log if (r["method"], r["path"]) in (("PUT", "/profile/devices"), ("POST", "/profile"))]
            if not sent:
                return i + 1
        self.check(False, "the runs do not settle: the 6th final run still sent something to ABM")
        return 6

    def check_truth(self):
        truth = {}
        states = {}
        for name in TOKENS:
            st = ctl("GET", "/_mock/state?consumer_key=" + ck(name))
            states[name] = st
            for s in st["devices"]:
                self.check(s not in truth, "the mock holds %s in two orgs" % s)
                truth[s] = ck(name)
        want = {s: ck(d["org"]) for s, d in self.abm.items()}
        self.check(truth == want, "the mock differs from the driver's ABM: %r" % sorted(
            set(truth.items()) ^ set(want.items())))
        live = dict(q(self.admin, """
            SELECT d.hardware_serial, t.consumer_key FROM host_dep_assignments d
              JOIN abm_tokens t ON t.id = d.abm_token_id WHERE d.deleted_at IS NULL"""))
        missing = sorted(set(truth.items()) - set(live.items()))
        extra = sorted(set(live.items()) - set(truth.items()))
        self.check(not missing and not extra,
                   "live assignments differ from ABM (mockctl truth): missing %r, extra %r" % (missing, extra))
        # every live device holds its team's profile, or its answer says why not
        rows = q(self.admin, """
            SELECT d.hardware_serial, t.consumer_key, h.team_id, d.assign_profile_response,
                   d.retry_at > now(), d.needs_assign
              FROM host_dep_assignments d JOIN abm_tokens t ON t.id = d.abm_token_id
              LEFT JOIN hosts h ON h.id = d.host_id
             WHERE d.deleted_at IS NULL""")
        wrong = []
        for s, key, team, resp, due, needs in rows:
            name = key.replace("CK_stress_", "")
            want_p = PROFILE_T2 if team == self.teams["T2"] else PROFILE_ORG
            dev = states[name]["devices"].get(s, {})
            held = states[name]["profiles"].get(dev.get("profile_uuid") or "")
            if dev.get("profile_status") in ("assigned", "pushed") and held is not None \
                    and held.get("profile_name") == want_p["profile_name"]:
                continue
            if (resp in ("FAILED", "THROTTLED") and due) or (resp == "NOT_ACCESSIBLE" and not needs):
                continue
            wrong.append((s, name, "team %s" % team, "holds %r" % (held or {}).get("profile_name"),
                          "wants %r" % want_p["profile_name"], "answer %s" % resp, "needs_assign %s" % needs))
        self.check(not wrong, "live devices without their team's profile at ABM and no answer saying why: %r"
                   % wrong[:10] + (" (%d in all)" % len(wrong) if len(wrong) > 10 else ""))

    def audit(self):
        rows = q(self.admin, """
            SELECT seq, extract(epoch FROM at)::float8, xid, who, depth, tbl, op, id, old_id, serial, old_serial,
                   team, old_team, live, token, platform FROM stress_audit ORDER BY at, seq""")
        cols = ("seq", "at", "xid", "who", "depth", "tbl", "op", "id", "old_id", "serial", "old_serial",
                "team", "old_team", "live", "token", "platform")
        rows = [dict(zip(cols, r)) for r in rows]
        self.audit_rows = len(rows)
        # the teams at the end: a host restored while its team was being
        # deleted by a transaction that then committed has no team, rightly
        teams_left = {t for (t,) in q(self.admin, "SELECT id FROM teams")}
        by_xid = {}
        for r in rows:
            by_xid.setdefault(r["xid"], []).append(r)
        # the sweep: the assignments as of each row written to hosts
        asg = {}                 # serial -> last asg row
        bad = []
        n_restored = n_live_deleted = n_reserial_live = n_truncates = 0

        def is_app(r):
            return r["who"].startswith("stress-app-")

        for r in rows:
            if r["tbl"] == "asg":
                asg[r["serial"] or r["old_serial"]] = r
                continue
            same = by_xid[r["xid"]]
            if r["op"] == "INSERT" and is_app(r) and r["depth"] >= 2:
                n_restored += 1
                a = asg.get(r["serial"])
                if a is None or not a["live"]:
                    bad.append("host %s (id %s) was made again by %s's statement (xid %s) although its device's "
                               "assignment was %s (last written by %s, xid %s)" % (
                                   r["serial"], r["id"], r["who"], r["xid"],
                                   "unknown" if a is None else "soft-deleted",
                                   a and a["who"], a and a["xid"]))
            elif r["op"] == "INSERT" and r["who"] == RUNNER:
                made = [x for x in same if x["tbl"] == "asg" and x["serial"] == r["serial"] and x["live"]]
                if not made:
                    bad.append("the sync made host %s (id %s, xid %s) without a live assignment in the same "
                               "transaction" % (r["serial"], r["id"], r["xid"]))
                else:
                    # a new host lands in its token's default team for its platform
                    tok = made[-1]["token"]
                    slot = {"darwin": 0, "ipados": 2}.get(r["platform"], 1)
                    want = self.defaults[tok][slot]
                    if slot == self.churn_slot[tok] and (r["team"] is None or r["team"] in self.churn_ids):
                        pass    # the churned team, or none while it was gone
                    elif r["team"] != want:
                        bad.append("the sync made host %s (%s, token %s) in team %s, not in the default team %s" % (
                            r["serial"], r["platform"], made[-1]["token"], r["team"], want))
            elif r["op"] == "DELETE" and is_app(r):
                a = asg.get(r["old_serial"])
                if a is not None and a["live"]:
                    n_live_deleted += 1
                    if a["id"] != r["old_id"]:
                        bad.append("a live assignment of %s pointed at host %s, not at host %s of its serial" % (
                            r["old_serial"], a["id"], r["old_id"]))
                    back = [x for x in same if x["tbl"] == "hosts" and x["op"] == "INSERT" and x["seq"] > r["seq"]
                            and x["id"] == r["old_id"] and x["serial"] == r["old_serial"]]
                    if not back:
                        bad.append("%s deleted host %s (id %s, xid %s) of a live device and it was not made again "
                                   "with its id in that transaction" % (r["who"], r["old_serial"], r["old_id"], r["xid"]))
                    elif back[0]["team"] != r["old_team"] and not (
                            back[0]["team"] is None and r["old_team"] not in teams_left):
                        bad.append("host %s (id %s) came back in team %s, not in its team %s" % (
                            r["old_serial"], r["old_id"], back[0]["team"], r["old_team"]))
            elif r["op"] == "UPDATE" and is_app(r) and r["depth"] == 1:
                a = asg.get(r["old_serial"])
                if a is None or not a["live"] or a["id"] != r["old_id"]:
                    continue
                if r["serial"] != r["old_serial"]:
                    n_reserial_live += 1
                    new = [x for x in same if x["tbl"] == "hosts" and x["op"] == "INSERT"
                           and x["serial"] == r["old_serial"]]
                    if not new:
                        bad.append("%s re-serialed host %s (id %s, xid %s) of a live device and the device got no "
                                   "host of its own in that transaction" % (r["who"], r["old_serial"], r["old_id"],
                                                                             r["xid"]))
                    elif new[-1]["team"] != r["old_team"]:
                        bad.append("the new host of re-serialed %s is in team %s, not %s" % (
                            r["old_serial"], new[-1]["team"], r["old_team"]))
                elif r["id"] != r["old_id"]:
                    moved = [x for x in same if x["tbl"] == "asg" and x["serial"] == r["old_serial"]
                             and x["id"] == r["id"]]
                    if not moved:
                        bad.append("%s renumbered host %s (id %s to %s, xid %s) and its live device stayed behind" % (
                            r["who"], r["old_serial"], r["old_id"], r["id"], r["xid"]))
            elif r["op"] == "TRUNCATE":
                n_truncates += 1
                back = {(x["id"], x["serial"]) for x in same if x["tbl"] == "hosts" and x["op"] == "INSERT"}
                for s, a in asg.items():
                    if a["live"] and (a["id"], s) not in back:
                        bad.append("TRUNCATE by %s (xid %s) did not make the host of live %s (id %s) again" % (
                            r["who"], r["xid"], s, a["id"]))
        self.audit_counts = dict(restored=n_restored, live_deleted=n_live_deleted,
                                 reserialed_live=n_reserial_live, truncates=n_truncates)
        self.check(not bad, "the audit of every write to hosts and the assignments: %d wrong: %s" % (
            len(bad), "; ".join(bad[:8])))

    def classify(self):
        """Each failed application statement: expected (by design, or a
        conflict on a host row someone else wrote after the snapshot), or
        not."""
        runner = self.runner_pid
        expected, unexpected = {}, []
        for rec in self.stmts:
            if "sqlstate" not in rec:
                continue
            st, iso, tx = rec["sqlstate"], rec["iso"], rec["tx"]
            why = None
            if st == "0A000" and rec["op"] == "truncate" and iso in ("REPEATABLE READ", "SERIALIZABLE"):
                why = "TRUNCATE refused under %s (by design)" % iso
            elif (st == "40001" and rec["op"] == "team delete" and iso in ("REPEATABLE READ", "SERIALIZABLE")
                  and "concurrent delete" in (rec.get("error") or "")
                  and not any(f in (rec.get("context") or "") for f in ADE_TRIGGERS)):
                # the churned team's row itself, deleted since the snapshot:
                # only the application connections delete teams (ade never
                # does), and the error is on the statement's own row
                why = "40001 on a team row another application connection deleted after the snapshot"
            elif st == "40001" and iso in ("REPEATABLE READ", "SERIALIZABLE") and tx and tx["snapshot"]:
                why = self.blame_40001(rec)
            elif st == "40P01":
                pids = {int(p) for p in re.findall(r"[Pp]rocess (\d+)", rec.get("detail") or "")}
                if runner in pids:
                    rec["blame"] = "a deadlock with the runner"
                elif pids and pids <= set(self.app_pids) and not any(
                        f in (rec.get("context") or "") for f in ADE_TRIGGERS):
                    # e.g. two transactions that read hosts, then TRUNCATE it
                    why = "deadlock between application connections (%s)" % ", ".join(sorted(set(
                        re.findall(r"waits for (\w+ on \w+)", rec.get("detail") or ""))))
            if why:
                expected.setdefault(why, []).append(rec)
            else:
                unexpected.append(rec)
        self.expected, self.unexpected = expected, unexpected

    def blame_40001(self, rec):
        tx = rec["tx"]
        ids = sorted({i for t in tx["targets"] for i in t[0]})
        serials = sorted({s for t in tx["targets"] for s in t[1]})
        rows = q(self.admin, """
            SELECT who, tbl, op, coalesce(serial, old_serial), old_model, model, old_platform, platform,
                   extract(epoch FROM at)::float8
              FROM stress_audit a
             WHERE NOT txid_visible_in_snapshot(a.xid, %(snap)s::txid_snapshot)
               AND a.who <> %(me)s AND a.at <= to_timestamp(%(t1)s)
               AND ((a.tbl = 'hosts' AND (a.id = ANY (%(ids)s) OR a.old_id = ANY (%(ids)s)))
                    OR (a.tbl = 'asg' AND (a.serial = ANY (%(serials)s) OR a.id = ANY (%(ids)s)
                                           OR a.old_id = ANY (%(ids)s))))
             ORDER BY a.at""", {"snap": tx["snapshot"], "me": rec["who"], "t1": rec["t1"] + 0.05,
                                  "ids": ids, "serials": serials})
        host_sync = [r for r in rows if r[1] == "hosts" and r[0] == RUNNER]
        host_app = [r for r in rows if r[1] == "hosts" and r[0] != RUNNER]
        asg_sync = [r for r in rows if r[1] == "asg" and r[0] == RUNNER]
        asg_app = [r for r in rows if r[1] == "asg" and r[0] != RUNNER]
        in_trigger = any(f in (rec.get("context") or "") for f in ADE_TRIGGERS)
        rec["blame"] = {"host rows by the sync": [r[3:8] for r in host_sync],
                        "host rows by the application": [r[:4] for r in host_app],
                        "assignment rows by the sync": [r[3] for r in asg_sync],
                        "assignment rows by the application": [r[:4] for r in asg_app],
                        "in an ade trigger": in_trigger}
        if not in_trigger:
            if host_sync:
                changed = {c for r in host_sync for c, o, n in (("model", r[4], r[5]), ("platform", r[6], r[7]))
                           if o != n} or {r[2] for r in host_sync}
                return "40001 on a host row the sync changed after the snapshot (%s)" % " and ".join(sorted(changed))
            if host_app:
                return "40001 on a host row another application connection changed after the snapshot"
        else:
            if asg_app and not asg_sync:
                return "40001 in an ade trigger on an assignment row another application connection changed"
            if host_app and not asg_sync:
                return "40001 in an ade trigger after another application connection changed the host"
        return None

    # ---------------------------------------------------------------- run

    def run(self):
        try:
            return self.run_()
        finally:
            for conn in self.conns:
                try:
                    conn.close()
                except Exception:
                    pass

    def run_(self):
        t_start = time.time()
        self.setup()
        t_setup = time.time() - t_start
        master = random.Random(self.seed)
        threads = [threading.Thread(target=self.guard, args=("runner", self.runner, random.Random(master.random()))),
                   threading.Thread(target=self.guard, args=("driver", self.driver, random.Random(master.random()))),
                   threading.Thread(target=self.guard, args=("checker", self.checker)),
                   threading.Thread(target=self.guard, args=("sampler", self.sampler)),
                   threading.Thread(target=self.guard, args=("teams", self.teams_churn,
                                                             random.Random(master.random())))]
        for i in range(self.napps):
            threads.append(threading.Thread(target=self.guard, args=("app-%d" % i, self.app, i,
                                                                     random.Random(master.random()))))
        for t in threads:
            t.start()
        self.stop.wait(self.seconds)
        t_race = time.time()
        self.stop.set()
        for t in threads:
            t.join(120)
        for name, tb in self.thread_errors:
            self.check(False, "thread %s of the test broke:\n%s" % (name, tb))
        if self.thread_errors:
            return self.report(t_start, t_setup, t_race, 0)
        final_runs = self.settle()
        self.check_hosts(self.admin)
        self.check(not self.checker_bad, "the checker saw live assignments without their host, or serials "
                   "twice, mid-run: %r" % self.checker_bad[:5])
        self.check_truth()
        self.audit()
        self.classify()
        self.check(not self.unexpected, "%d application statements failed: %s" % (
            len(self.unexpected), "\n  ".join(self.describe(r) for r in self.unexpected[:12])))
        self.check(not self.runner_errors, "the runner's calls raised: %r" % [
            (r["kind"], r["error"]) for r in self.runner_errors[:5]])
        return self.report(t_start, t_setup, t_race, final_runs)

    def describe(self, r):
        return "%s %s [%s] %s %r: %s %s%s%s" % (
            r["who"], r["iso"], r["op"], r["sql"], r["args"], r.get("sqlstate") or "ok", (r.get("error") or "").split("\n")[0],
            (" | context: " + " / ".join((r.get("context") or "").splitlines())) if r.get("context") else "",
            (" | blame: %s" % (r["blame"],)) if r.get("blame") else "")

    def report(self, t_start, t_setup, t_race, final_runs):
        runs = self.runs
        sync_windows = sorted((r["t0"], r["t1"]) for r in runs if r["kind"] == "sync")
        starts = [w[0] for w in sync_windows]

        def under_sync(rec):
            i = bisect.bisect_right(starts, rec["t1"])
            return any(w[1] >= rec["t0"] for w in sync_windows[max(0, i - 2):i])

        # who each statement was seen waiting for, through the chain of
        # waits (an application statement queued behind one that waits for
        # the runner waits for the runner too)
        times = [t for t, g in self.samples]

        def waited_for(r):
            out = set()
            for t, g in self.samples[bisect.bisect_left(times, r["t0"]):bisect.bisect_right(times, r["t1"])]:
                todo, seen = [r["pid"]], set()
                while todo:
                    p = todo.pop()
                    for b in g.get(p, ()):
                        if b not in seen:
                            seen.add(b)
                            todo.append(b)
                out |= {self.who_pid(b) for b in seen}
            return out
        for r in self.stmts:
            r["waited for"] = sorted(waited_for(r))
        inside = [r for r in self.stmts if under_sync(r)]
        for r in self.stmts:
            r["class"] = "inside" if under_sync(r) else \
                "others" if r["waited for"] and "the runner" not in r["waited for"] else "bounded"
        others = [r for r in self.stmts if r["class"] == "others"]
        bounded = [r for r in self.stmts if r["class"] == "bounded"]
        on_runner = [r for r in bounded if "the runner" in r["waited for"]]
        wb = [r["wait"] for r in bounded]
        job_runs = [r for r in runs if r["kind"] == "job"]
        job_d = [r["t1"] - r["t0"] for r in job_runs]
        sync_d = [r["t1"] - r["t0"] for r in runs if r["kind"] == "sync"]
        job_starts = [j["t0"] for j in job_runs]
        in_open_run = sum(1 for r in self.stmts
                          if job_runs and job_starts[0] <= r["t0"]
                          and job_runs[bisect.bisect_right(job_starts, r["t0"]) - 1]["t1"] >= r["t0"])
        by_iso, by_op = {}, {}
        for r in self.stmts:
            by_iso[r["iso"]] = by_iso.get(r["iso"], 0) + 1
            by_op[r["op"]] = by_op.get(r["op"], 0) + 1
        if wb:
            self.check(max(wb) < self.max_wait,
                       "an application statement waited %.3f s (bound %.1f s) outside SELECT ade_sync(): %s" % (
                           max(wb), self.max_wait, self.describe(max(bounded, key=lambda r: r["wait"]))))
        self.check(len(job_runs) >= 3, "only %d CALL ade_sync_job() runs raced the application" % len(job_runs))
        self.check(len(self.stmts) >= 50, "only %d application statements ran" % len(self.stmts))
        err_runs = q(self.admin, "SELECT coalesce(split_part(error, ':', 1), ''), count(*) FROM ade_sync_runs "
                                 "WHERE error IS NOT NULL GROUP BY 1 ORDER BY 2 DESC")
        pages = q(self.admin, "SELECT coalesce(sum(pages), 0), count(*) FROM ade_sync_runs")[0]
        print("== stress test: seed %d, %d s racing (setup %.1f s), %d application connection(s)" % (
            self.seed, self.seconds, t_setup, self.napps))
        print("runs: %d CALL ade_sync_job() (%.2f s median, %.2f s max), %d SELECT ade_sync() (%.2f s max), "
              "%d token runs with %d pages; %d with a hang; %d final runs to settle" % (
                  len(job_runs), pct(job_d, 50), max(job_d or [0]), len(sync_d), max(sync_d or [0]),
                  pages[1], pages[0], sum(1 for r in runs if r["fault"]), final_runs))
        if err_runs:
            print("token runs that recorded an error (not the application's): %s" % ", ".join(
                "%s x%d" % (e[:80], n) for e, n in err_runs))
        print("ABM: %d devices at the end; changes: %s" % (len(self.abm), ", ".join(
            "%s %d" % kv for kv in sorted(self.changes.items()))))
        print("application statements: %d (%s); by kind: %s" % (
            len(self.stmts), ", ".join("%s %d" % kv for kv in sorted(by_iso.items())),
            ", ".join("%s %d" % kv for kv in sorted(by_op.items()))))
        print("  %d of them started while a CALL ade_sync_job() was open" % in_open_run)

        def dist(rs):
            w = [r["wait"] for r in rs]
            return "%d statements: p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms" % (
                len(w), 1000 * pct(w, 50), 1000 * pct(w, 90), 1000 * pct(w, 99), 1000 * max(w or [0]))
        print("waits outside SELECT ade_sync() (bound %.0f ms): %s" % (1000 * self.max_wait, dist(bounded)))
        print("  seen waiting for the runner (sampled every 100 ms): %s" % dist(on_runner))
        print("waits for other application connections only (not bounded): %s" % dist(others))
        print("waits inside SELECT ade_sync() (one transaction: may wait for the whole run): %s" % dist(inside))
        for r in sorted(bounded, key=lambda r: -r["wait"])[:3]:
            print("  slowest: %.0f ms %s %s [%s] waited for %s" % (1000 * r["wait"], r["who"], r["iso"], r["op"],
                                                                    ", ".join(r["waited for"]) or "-"))
        if hasattr(self, "audit_counts"):
            print("audit: %d rows; application statements made %d hosts again (%d live hosts deleted, "
                  "%d re-serialed, %d TRUNCATE)" % (
                      self.audit_rows, self.audit_counts["restored"], self.audit_counts["live_deleted"],
                      self.audit_counts["reserialed_live"], self.audit_counts["truncates"]))
        if hasattr(self, "expected"):
            n_exp = sum(len(v) for v in self.expected.values())
            print("expected failures: %d" % n_exp)
            for why, recs in sorted(self.expected.items()):
                print("  %d x %s" % (len(recs), why))
            print("unexpected failures: %d" % len(self.unexpected))
        if self.log_path:
            with open(self.log_path, "w") as fh:
                for r in self.stmts:
                    fh.write(json.dumps({k: v for k, v in r.items() if k != "tx"}, default=str) + "\n")
        for f in self.failures:
            print("FAILED: " + f)
        print("stress test %s: %d application statements (%d failed as expected, %d not), %d runs, "
              "max wait %.0f ms outside SELECT ade_sync(), %.0f s in all" % (
                  "passed" if not self.failures else "FAILED", len(self.stmts),
                  sum(len(v) for v in getattr(self, "expected", {}).values()), len(getattr(self, "unexpected", [])),
                  len(runs), 1000 * max(wb or [0]), time.time() - t_start), flush=True)
        return not self.failures

    def who_pid(self, pid):
        if pid == self.runner_pid:
            return "the runner"
        return self.app_pids.get(pid, "pid %d" % pid)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, help="how long the application races the runs (default 40; "
                                                  "300 per run with --fuzz)")
    ap.add_argument("--seed", type=int, help="the seed of the choices (default: a fixed one)")
    ap.add_argument("--apps", type=int, default=2, help="application connections (default 2)")
    ap.add_argument("--max-wait", type=float, default=1.5,
                    help="longest wait of an application statement outside SELECT ade_sync(), seconds "
                         "(default 1.5; a hung run stays open 2 to 4 s)")
    ap.add_argument("--fuzz", type=float, metavar="MINUTES", help="runs with random seeds until the time is up")
    ap.add_argument("--log", help="write every application statement (JSON lines) here")
    a = ap.parse_args()
    if not MOCK:
        sys.exit("stress_open_run: ADE_MOCK_URL is not set")
    passed = failed = 0
    end = time.time() + 60 * a.fuzz if a.fuzz else None
    first = True
    while first or (end and time.time() < end - 30):
        seconds = a.seconds or (300 if a.fuzz else 40)
        if end:
            seconds = max(10, min(seconds, end - time.time() - 20))
        seed = a.seed if a.seed is not None and first else \
            (random.SystemRandom().randrange(1 << 31) if a.fuzz else 20261801)
        first = False
        print("== stress test: seed %d (replay: test/stress_open_run.py --seed %d --seconds %d --apps %d)" % (
            seed, seed, seconds, a.apps), flush=True)
        s = Stress(seed, seconds, a.apps, a.max_wait, a.log)
        try:
            ok = s.run()
        except Exception:
            traceback.print_exc()
            s.failures.append("the test broke")
            ok = False
        passed += s.checks - len(s.failures)
        failed += len(s.failures)
        if not ok or not end:
            break
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
