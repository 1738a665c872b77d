#!/usr/bin/python3
"""readme_fresh.py README.md TOKEN_DIR [--before-token CMD]: every statement
of every ```sql block of README.md, in order, each in a psql session of its
own (psql -c), the way an admin pastes them one by one.  The README's
example token path is replaced by TOKEN_DIR.  CMD (a shell command) runs
once, right before the first statement that adds a token: on a fresh
install it makes the token file for the key pair the runbook just made, as
ABM would.  Prints "ok N" (N statements), or the first statement
that failed with its error, and exits non-zero.  Used by
test/t/99_readme.sql; the connection comes from the PG* environment and
ADE_TEST_DB."""
import os
import re
import subprocess
import sys

readme, token_dir = sys.argv[1], sys.argv[2]
before_token = sys.argv[4] if len(sys.argv) > 4 and sys.argv[3] == "--before-token" else None
text = open(readme, encoding="utf-8").read()
blocks = re.findall(r"^```sql\n(.*?)^```", text, flags=re.S | re.M)
stmts = []
for b in blocks:
    b = b.replace("/var/lib/postgresql/abm/", token_dir.rstrip("/") + "/")
    cur = []
    for line in b.splitlines():
        if not cur and not line.strip():
            continue
        cur.append(line)
        if line.rstrip().endswith(";"):
            stmts.append("\n".join(cur))
            cur = []
    if cur:
        stmts.append("\n".join(cur))
db = os.environ.get("ADE_TEST_DB") or os.environ.get("PGDATABASE")
for i, s in enumerate(stmts, 1):
    if before_token and "ade_add_token(" in s:
        subprocess.run(before_token, shell=True, check=True)
        before_token = None
    r = subprocess.run(["psql", "-d", db, "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", s],
                       capture_output=True, text=True)
    if r.returncode != 0:
        print("statement %d failed: %s\n%s" % (i, s, r.stderr.strip()))
        sys.exit(1)
print("ok %d" % len(stmts))
