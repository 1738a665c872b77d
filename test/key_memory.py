#!/usr/bin/python3
"""test/key_memory.py: key material stays in a backend no longer than it is
used (issue 19, item 5).  Used by test/t/95_key_memory.sql.

    key_memory.py TOKEN_JSON

TOKEN_JSON: the token a test added (test/add-token.sh writes it), with its
consumer_secret and access_secret.  As root (it reads other processes'
memory and traces them), against the harness's cluster (PG* environment,
ADE_TEST_DB):

1. a session runs ade_sync() and goes idle: its memory (every writable
   mapping, /proc/PID/mem) holds neither the key-encryption key (the bytes
   of ade_kek.key) nor the token's consumer or access secret;
2. a session of a role with ade_reader reads ade_status (SELECT *): it never
   opens ade_kek.key (strace of its openat calls), and its memory holds no
   KEK either.

Prints one line per check, "ok NAME" or "not ok NAME: why" (or "skip: why"
when it cannot look: not root, no strace).
"""
import json
import os
import re
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from testdb import connect, q  # noqa: E402


def writable_chunks(pid):
    """the contents of each writable mapping of pid, one bytes object each"""
    with open("/proc/%d/maps" % pid) as maps, open("/proc/%d/mem" % pid, "rb", 0) as mem:
        for line in maps:
            m = re.match(r"([0-9a-f]+)-([0-9a-f]+) (\S+)", line)
            if not m or "w" not in m.group(3):
                continue
            lo, hi = int(m.group(1), 16), int(m.group(2), 16)
            try:
                mem.seek(lo)
                yield mem.read(hi - lo)
            except (OSError, ValueError, OverflowError):
                continue


def memory_has(pid, needles):
    """which of needles (bytes) appear in a writable mapping of pid"""
    return {n for chunk in writable_chunks(pid) for n in needles if n in chunk}


def sessions_outside_curl(pid, tokens):
    """how many copies of tokens in pid's writable memory are not libcurl's
    copy of a request header (preceded by "X-ADM-Auth-Session: ")"""
    return sum(1 for chunk in writable_chunks(pid) for t in tokens
               for x in re.finditer(re.escape(t), chunk)
               if not chunk[max(0, x.start() - 20):x.start()].endswith(b"X-ADM-Auth-Session: "))


def check(name, ok, why=""):
    print(("ok %s" % name) if ok else ("not ok %s: %s" % (name, why)))


def main():
    if os.geteuid() != 0:
        print("skip: not root (reading another process's memory needs it)")
        return
    if shutil.which("strace") is None:
        print("skip: strace is not installed")
        return
    tok = json.load(open(sys.argv[1]))
    admin = connect()
    datadir = q(admin, "SHOW data_directory")[0][0]
    kek = open(os.path.join(datadir, "ade_kek.key"), "rb").read()
    secrets = {"the key-encryption key": kek,
               "the consumer secret": tok["consumer_secret"].encode(),
               "the access secret": tok["access_secret"].encode()}

    # 1. a session that ran a sync, idle; ABM made it take a new session
    # token first (GET /session), which a run rotates and stores
    mock = os.environ["ADE_MOCK_URL"]
    subprocess.run([sys.executable, os.path.join(HERE, "mockctl.py"), "--url", mock, "tokstate",
                    tok["consumer_key"], "--expire-sessions"], check=True, stdout=subprocess.DEVNULL)
    s = connect()
    q(s, "SET client_min_messages = warning")
    err = q(s, "SELECT string_agg(coalesce(error, 'ok'), ',') FROM ade_sync()")[0][0]
    check("the session's sync ran", err is not None and "ok" in err, repr(err))
    time.sleep(0.2)
    found = memory_has(s.get_backend_pid(), list(secrets.values()))
    for what, needle in secrets.items():
        check("after a sync, the idle backend holds no copy of %s" % what, needle not in found, "it does")
    # the session tokens ABM gave out: in ade's memory no more; libcurl's
    # copy of a request ("X-ADM-Auth-Session: <token>"), freed unwiped, is
    # what the README says remains
    sessions = [x.encode() for x in subprocess.run(
        [sys.executable, os.path.join(HERE, "mockctl.py"), "--url", mock, "secrets"],
        check=True, capture_output=True, text=True).stdout.split() if x.startswith("SESSION") or "|" in x]
    outside = sessions_outside_curl(s.get_backend_pid(), sessions)
    check("ABM gave the run a session token (the check looks for something)", len(sessions) > 0, "none")
    check("after a sync, ade's own memory holds no copy of a session token", not outside,
          "%d copies not in a request's header" % outside)

    # 2. a session that reads the status as ade_reader
    if not q(admin, "SELECT 1 FROM pg_roles WHERE rolname = 'ade_key_reader'"):
        q(admin, "CREATE ROLE ade_key_reader LOGIN")
    q(admin, "GRANT ade_reader TO ade_key_reader")
    r = connect("ade_key_reader")
    pid = r.get_backend_pid()
    out = os.path.join(os.environ.get("ADE_TEST_TMP", "/tmp"), "key_memory.strace")
    tr = subprocess.Popen(["strace", "-q", "-f", "-e", "trace=openat,open", "-o", out, "-p", str(pid)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)                         # attached
    rows = q(r, "SELECT * FROM ade_status")
    time.sleep(0.2)
    tr.terminate()
    tr.wait()
    traced = open(out).read()
    check("ade_reader reads ade_status (SELECT *)", len(rows) >= 1, "no row")
    check("the trace saw the status query's files (it works)", "openat" in traced or "open(" in traced,
          "nothing traced")
    check("reading ade_status never opens the key-encryption key file", "ade_kek.key" not in traced,
          [l for l in traced.splitlines() if "ade_kek.key" in l][:1])
    check("and that session's memory holds no key-encryption key", kek not in memory_has(pid, [kek]), "it does")
    r.close()
    s.close()
    q(admin, "DROP ROLE ade_key_reader")
    admin.close()


if __name__ == "__main__":
    main()
