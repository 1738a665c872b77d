#!/usr/bin/python3
"""test/hostile_roles.py: SQL-level hostility from the three roles that are
not superusers (issue 19): a database owner that is not a superuser, the
application role the README names (DML on hosts, its sequence), and a role
with LOGIN and no grant.  Used by test/t/93_hostile_roles.sql.

In a database of its own (ade_hostile, owned by hostile_owner; ade installed
by the superuser in public, a token at the mock with devices), each role
tries, step by step, what its rights allow: objects made in public before
and after the install (look-alike functions and operators, a squatted
name), the schema renamed, locks held on ade's tables and rows (the run
lock, the advisory lock of 0.4, rows of hosts FOR UPDATE), hostile rows in
hosts and teams (extreme ids, serials of other devices, huge and odd
strings, teams that do not exist), the id sequence moved, settings set per
role and per database (ALTER ROLE/DATABASE ... SET ade.*), forged NOTIFY
ade_hosts, reads of the secrets.  After each step the superuser syncs (CALL
ade_sync_job() and SELECT ade_sync(), with a device ABM adds meanwhile):

- every run applies its page (no error, the new device has its host), or,
  for a lock that a role's open transaction holds on purpose, says so and
  the next run after it lets go applies it;
- no role became superuser or a member of a role it was not;
- no secret was readable: ade_token_secrets, ade_keypair, ade_secret_keys,
  ade.proxy are refused to each role;
- every live assignment has its host.

Prints one line per check, "ok NAME" or "not ok NAME: why".  Needs the
harness's PG* environment, ADE_TEST_TMP and ADE_MOCK_URL.
"""
import os
import subprocess
import sys
import time

import psycopg2

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mockctl  # noqa: E402

DB = "ade_hostile"
SU = os.environ.get("PGUSER")
HERE = os.path.dirname(os.path.abspath(__file__))
ROLES = ("hostile_owner", "hostile_app", "hostile_nobody")
N = {"checks": 0}


def conn(user=None, db=DB):
    c = psycopg2.connect(dbname=db, user=user or SU, host=os.environ.get("PGHOST"),
                         port=os.environ.get("PGPORT"))
    c.autocommit = True
    return c


def q(c, sql, args=None):
    with c.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall() if cur.description else None


def check(name, ok, why=""):
    N["checks"] += 1
    print(("ok %s" % name) if ok else ("not ok %s: %s" % (name, why)))


def attempt(c, sql, args=None):
    """None when sql ran, else the SQLSTATE it failed with"""
    try:
        q(c, sql, args)
        return None
    except psycopg2.Error as e:
        return e.pgcode or "?"


class World:
    def __init__(self):
        pg = conn(db="postgres")
        for sql in ("DROP DATABASE IF EXISTS %s WITH (FORCE)" % DB,) + tuple("DROP ROLE IF EXISTS %s" % r for r in ROLES):
            q(pg, sql)
        for r in ROLES:
            q(pg, "CREATE ROLE %s LOGIN" % r)
        q(pg, "CREATE DATABASE %s OWNER hostile_owner" % DB)
        pg.close()
        self.c = {r: None for r in ROLES}
        # before the install: the owner makes look-alikes in public
        own = conn("hostile_owner")
        q(own, "CREATE FUNCTION public.ade_lock_hosts(int) RETURNS void LANGUAGE sql AS 'SELECT NULL'")
        q(own, "CREATE FUNCTION public.ade_run_latest(text, text) RETURNS bigint LANGUAGE plpgsql AS "
               "$$BEGIN EXECUTE 'ALTER ROLE hostile_owner SUPERUSER'; RETURN 0; END$$")
        q(own, "CREATE FUNCTION public.lower(text) RETURNS text LANGUAGE plpgsql AS "
               "$$BEGIN EXECUTE 'ALTER ROLE hostile_owner SUPERUSER'; RETURN $1; END$$")
        own.close()
        self.su = conn()
        q(self.su, "SET client_min_messages = error")
        q(self.su, "CREATE EXTENSION ade")
        q(self.su, "GRANT ade_reader TO hostile_app")
        q(self.su, "GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON hosts TO hostile_app")
        q(self.su, "GRANT USAGE ON SEQUENCE hosts_id_seq TO hostile_app")
        q(self.su, "SELECT ade_set_profile(%s)", ('{"profile_name": "h", "url": "https://mdm.example.org/enroll"}',))
        self.ck = "CK_hostile_%d" % os.getpid()
        env = dict(os.environ, ADE_TEST_DB=DB)
        subprocess.run([os.path.join(HERE, "add-token.sh"), "Hostile", self.ck], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        self.next = 0
        self.add_devices(5)
        self.sync("setup")
        for r in ROLES:
            self.c[r] = conn(r)

    def add_devices(self, n):
        recs = [{"serial_number": "HX%05d" % (self.next + i), "device_family": "Mac"} for i in range(n)]
        self.next += n
        mockctl.request(os.environ["ADE_MOCK_URL"], "POST", "/_mock/devices",
                        {"consumer_key": self.ck, "add": recs})
        return recs[-1]["serial_number"]

    def sync(self, step):
        """a device ABM adds, CALL ade_sync_job() then SELECT ade_sync(): both apply"""
        s1 = self.add_devices(1)
        q(self.su, "CALL ade_sync_job()")
        err1 = q(self.su, "SELECT error FROM ade_sync_runs ORDER BY id DESC LIMIT 1")[0][0]
        s2 = self.add_devices(1)
        err2 = [r[0] for r in q(self.su, "SELECT error FROM ade_sync()")]
        have = q(self.su, "SELECT count(*) FROM hosts WHERE hardware_serial IN (%s, %s)", (s1, s2))[0][0]
        return err1, err2, have

    def after(self, step):
        err1, err2, have = self.sync(step)
        check("%s: CALL ade_sync_job() after it applies its page" % step, err1 is None, err1)
        check("%s: SELECT ade_sync() after it too" % step, err2 == [None], err2)
        check("%s: the devices ABM added have their hosts" % step, have == 2, "%d of 2" % have)
        bad = q(self.su, "SELECT r.rolname FROM pg_roles r WHERE r.rolname = ANY(%s) AND (r.rolsuper OR r.rolcreaterole "
                         "OR EXISTS (SELECT 1 FROM pg_auth_members m WHERE m.member = r.oid "
                         "AND m.roleid <> 'ade_reader'::regrole))", (list(ROLES),))
        check("%s: no role became superuser or a member of another role" % step, not bad, bad)
        lost = q(self.su, "SELECT count(*) FROM host_dep_assignments d WHERE d.deleted_at IS NULL AND NOT EXISTS "
                          "(SELECT 1 FROM hosts h WHERE h.id = d.host_id AND h.hardware_serial = d.hardware_serial)")[0][0]
        check("%s: every live assignment has its host" % step, lost == 0, "%d without" % lost)

    def secrets_refused(self):
        for r in ROLES:
            c = self.c[r]
            for sql in ("SELECT * FROM ade_token_secrets", "SELECT * FROM ade_keypair",
                        "SELECT * FROM ade_secret_keys", "SHOW ade.proxy"):
                check("%s cannot run %s" % (r, sql), attempt(c, sql) == "42501", "it could")


def main():
    w = World()
    own, app, nobody = w.c["hostile_owner"], w.c["hostile_app"], w.c["hostile_nobody"]
    w.after("look-alikes made in public by the database owner before the install")

    # the owner after the install
    check("the owner cannot rename public (ade's schema)",
          attempt(own, "ALTER SCHEMA public RENAME TO ade_old") is not None, "it could")
    for sql in ("CREATE FUNCTION public.ade_restore_hosts(bigint[], text[], text[], int[]) RETURNS int "
                "LANGUAGE plpgsql AS $$BEGIN EXECUTE 'ALTER ROLE hostile_owner SUPERUSER'; RETURN 0; END$$",
                "CREATE OPERATOR public.= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = int8eq)",
                "CREATE TABLE public.ade_run_lock_x (x int)"):
        attempt(own, sql)
    w.after("look-alikes made in public by the database owner after the install")
    # the triggers on teams call ade_run_latest() with literals: typed, so an
    # overload (text, text) of the owner's never wins (it did for NULL)
    q(w.su, "INSERT INTO teams (name) VALUES ('h1'), ('h2')")
    q(w.su, "UPDATE teams SET id = id + 100 WHERE name = 'h1'")
    q(w.su, "DELETE FROM teams WHERE name = 'h2'")
    q(w.su, "TRUNCATE teams CASCADE")
    w.after("the admin renumbering, deleting and truncating teams beside the owner's overloads")
    check("the owner cannot set ade.abm_url for the database",
          attempt(own, "ALTER DATABASE %s SET ade.abm_url = 'http://127.0.0.1:9/'" % DB) == "42501", "it could")
    check("nor ade.* for itself", attempt(own, "ALTER ROLE hostile_owner SET ade.page_size = 1") == "42501",
          "it could")
    attempt(own, "CREATE SCHEMA evil")
    attempt(own, "CREATE FUNCTION evil.ade_sync_job() RETURNS void LANGUAGE sql AS 'SELECT NULL'")
    check("the owner may set the database's search_path",
          attempt(own, "ALTER DATABASE %s SET search_path = evil, public" % DB) is None, "it could not")
    w.su.close()
    w.su = conn()
    q(w.su, "SET client_min_messages = error")
    q(w.su, "SET search_path = public")
    job = q(w.su, "SELECT public.ade_job_command()")[0][0]
    q(w.su, "RESET search_path")
    check("the job's command, under the search_path the owner set, runs", attempt(w.su, job) is None, "it failed")
    q(w.su, "SET search_path = public")
    w.after("the owner's search_path for the database")
    attempt(own, "ALTER DATABASE %s RESET search_path" % DB)
    # the owner may ANALYZE every table, in a transaction that stays open:
    # the run's own lock is none a statement can take (0.5 in development
    # locked a table, which this held)
    q(own, "BEGIN")
    q(own, "ANALYZE abm_tokens, ade_sync_runs, host_dep_assignments, ade_profiles")
    w.after("the owner's ANALYZE of ade's tables, held open")
    q(own, "ROLLBACK")
    attempt(own, "VACUUM FULL ade_sync_runs")
    w.after("the owner's VACUUM FULL of ade's tables")

    # the role with no grant
    q(nobody, "SELECT pg_advisory_lock(1094993969, 0)")
    check("a role with no grant cannot lock ade's tables",
          attempt(nobody, "BEGIN; LOCK TABLE abm_tokens; COMMIT") == "42501", "it could")
    attempt(nobody, "ROLLBACK")
    check("nor read the tokens", attempt(nobody, "SELECT * FROM abm_tokens FOR UPDATE") == "42501", "it could")
    check("nor make functions in public", attempt(nobody, "CREATE FUNCTION public.ade_x() RETURNS int "
                                                          "LANGUAGE sql AS 'SELECT 1'") == "42501", "it could")
    check("nor set ade.* for itself", attempt(nobody, "ALTER ROLE hostile_nobody SET ade.abm_url = "
                                                      "'http://127.0.0.1:9/'") == "42501", "it could")
    listener = conn("hostile_app")
    q(listener, "LISTEN ade_hosts")
    live = q(w.su, "SELECT host_id, hardware_serial FROM host_dep_assignments WHERE deleted_at IS NULL "
                   "ORDER BY host_id LIMIT 1")[0]
    q(nobody, "SELECT pg_notify('ade_hosts', %s)",
      ('{"event": "deleted", "hosts": [{"id": %d, "serial": "%s"}]}' % live,))
    time.sleep(0.2)
    listener.poll()
    forged = [n for n in listener.notifies if n.pid == nobody.get_backend_pid()]
    check("a role with no grant can forge a NOTIFY ade_hosts (what the README warns of)", len(forged) == 1,
          "%d heard" % len(forged))
    # the README's listener: what is true is what the tables say
    rows = q(listener, "SELECT d.host_id, h.id IS NOT NULL AS present, d.deleted_at IS NOT NULL AS deleted "
                       "FROM host_dep_assignments d LEFT JOIN hosts h ON h.id = d.host_id WHERE d.host_id = ANY(%s)",
             ([live[0]],))
    check("the README's listener query finds the host a forged payload calls deleted present and live",
          rows == [(live[0], True, False)], rows)
    listener.close()
    w.after("a role with no grant holding the advisory lock of 0.4, forging a NOTIFY")
    q(nobody, "SELECT pg_advisory_unlock_all()")

    # the application role
    for sql, want in (("UPDATE hosts SET id = 9223372036854775807 WHERE hardware_serial = 'HX00001'", "22003"),
                      ("INSERT INTO hosts (id, hardware_serial) VALUES (9223372036854775806, 'MINE1')", "22003"),
                      ("SELECT setval('hosts_id_seq', 9223372036854775806)", "42501"),
                      ("UPDATE hosts SET team_id = 424242 WHERE hardware_serial = 'HX00002'", "23503"),
                      ("UPDATE hosts SET hardware_serial = 'HX00004' WHERE hardware_serial = 'HX00003'", "23505"),
                      ("ALTER ROLE hostile_app SET ade.page_size = 1", "42501"),
                      ("CREATE TRIGGER t BEFORE INSERT ON hosts FOR EACH ROW EXECUTE FUNCTION suppress_redundant_updates_trigger()",
                       "42501")):
        check("the application role: %s refused (%s)" % (sql[:60], want), attempt(app, sql) == want,
              "got %s" % attempt(app, sql))
    for sql in ("INSERT INTO hosts (hardware_serial, hardware_model, platform) VALUES "
                "(repeat('Z', 5000), repeat('m', 100000), 'not a platform')",
                "INSERT INTO hosts (hardware_serial) VALUES ('HX%05d')" % (w.next + 1),   # a serial ABM adds next
                "INSERT INTO hosts (hardware_serial) VALUES (E'\\u00e9\\u2028')",
                "UPDATE hosts SET id = 4611686018427387903 WHERE hardware_serial = 'HX00001'",
                "SELECT nextval('hosts_id_seq') FROM generate_series(1, 1000)",
                "UPDATE hosts SET hardware_serial = hardware_serial || '-x' WHERE hardware_serial = 'HX00000'"):
        attempt(app, sql)
    w.after("hostile rows and ids from the application role")
    attempt(app, "DELETE FROM hosts")
    attempt(app, "TRUNCATE hosts")
    w.after("the application role deleting and truncating everything")
    # a row held FOR UPDATE by an open transaction: the run waits within its
    # time, says why, and the next one applies
    q(app, "BEGIN")
    q(app, "SELECT id FROM hosts WHERE hardware_serial = 'HX00002' FOR UPDATE")
    q(w.su, "SET ade.max_sync_seconds = 2")
    w.add_devices(1)
    q(w.su, "CALL ade_sync_job()")
    err = q(w.su, "SELECT error FROM ade_sync_runs ORDER BY id DESC LIMIT 1")[0][0]
    check("a run beside an application transaction that holds hosts says why it waited",
          err is None or "other sessions kept it" in err or "max_sync_seconds" in (err or ""), err)
    q(app, "ROLLBACK")
    q(w.su, "RESET ade.max_sync_seconds")
    w.after("an application transaction holding a host row, ended")

    # the application locks hosts itself and holds it: the run cannot write,
    # and says who keeps it (attention); once it lets go, the next run applies
    q(app, "BEGIN")
    q(app, "LOCK TABLE hosts IN ACCESS EXCLUSIVE MODE")
    q(w.su, "SET ade.max_sync_seconds = 2")
    w.add_devices(1)
    q(w.su, "CALL ade_sync_job()")
    err = q(w.su, "SELECT error FROM ade_sync_runs ORDER BY id DESC LIMIT 1")[0][0] or ""
    check("a run beside an application that locks hosts names the session that keeps it",
          "pid %d (role hostile_app" % app.get_backend_pid() in err, err)
    pid = app.get_backend_pid()
    q(app, "ROLLBACK")
    att = q(w.su, "SELECT attention FROM ade_status")[0][0] or ""
    check("and ade_status.attention shows it (once hosts can be read again)", "pid %d" % pid in att, att)
    q(w.su, "RESET ade.max_sync_seconds")
    w.after("an application that locked hosts, and let go")

    w.secrets_refused()
    for c in list(w.c.values()) + [w.su]:
        c.close()
    pg = conn(db="postgres")
    q(pg, "DROP DATABASE %s WITH (FORCE)" % DB)
    for r in ROLES:
        q(pg, "DROP ROLE %s" % r)
    pg.close()


if __name__ == "__main__":
    try:
        main()
    except Exception as e:                  # a step that could not run is a failed check
        print("not ok the hostile roles' steps ran to the end: %s" % str(e).replace("\n", " ")[:300])
