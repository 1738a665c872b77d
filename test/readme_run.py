#!/usr/bin/python3
"""readme_run.py README.md WORK_DIR [--db NAME] [--before-token CMD]: every
example of README.md, in order, as an admin runs them: each statement of a
```sql block in a psql session of its own (psql -c), each ```sh block with
bash (-e, -o pipefail) in WORK_DIR.  Indented blocks (installing, the two
commands) are not examples to run.

The README's example token directory (/var/lib/postgresql/abm/) is WORK_DIR,
which holds Example_Token.p7m; --db NAME stands for the README's database
mdm (a test cluster whose pg_cron database has another name).  CMD (a shell
command) runs once, right before the first statement that adds a token: on
a fresh install it makes the token file for the key pair the runbook just
made, as ABM would.

A statement that changes nothing (UPDATE 0, DELETE 0) fails like an error:
the README must not show an example that silently does nothing.  Prints
"ok N" (N examples run), or the first that failed with its output, and
exits non-zero.  The connection comes from the PG* environment."""
import os
import re
import subprocess
import sys

args = sys.argv[1:]
readme, work = args[0], args[1]
opts = dict(zip(args[2::2], args[3::2]))
db = opts.get("--db", "mdm")
before_token = opts.get("--before-token")
text = open(readme, encoding="utf-8").read()


def adapt(block):
    block = block.replace("/var/lib/postgresql/abm/", work.rstrip("/") + "/")
    return re.sub(r"(psql\b[^\n]*?)-d mdm\b", lambda m: m.group(1) + "-d " + db, block)


examples = []                           # (kind, text)
for kind, body in re.findall(r"^```(sql|sh)\n(.*?)^```", text, flags=re.S | re.M):
    body = adapt(body)
    if kind == "sh":
        examples.append(("sh", body))
        continue
    cur = []
    for line in body.splitlines():
        if not cur and not line.strip():
            continue
        cur.append(line)
        if line.rstrip().endswith(";"):
            examples.append(("sql", "\n".join(cur)))
            cur = []
    if cur:
        examples.append(("sql", "\n".join(cur)))

env = dict(os.environ, PGDATABASE=db)
for i, (kind, ex) in enumerate(examples, 1):
    if before_token and "ade_add_token(" in ex:
        subprocess.run(before_token, shell=True, check=True)
        before_token = None
    if kind == "sql":
        cmd = ["psql", "-d", db, "-XAt", "-v", "ON_ERROR_STOP=1", "-c", ex]
    else:
        cmd = ["bash", "-e", "-o", "pipefail", "-c", ex]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=work, env=env)
    silent = re.search(r"^(UPDATE|DELETE) 0$", r.stdout, flags=re.M)
    if r.returncode != 0 or silent:
        print("example %d (%s) %s:\n%s\n%s%s" % (i, kind, "changed nothing" if silent else "failed",
                                                ex, r.stdout[-2000:], r.stderr.strip()[-2000:]))
        sys.exit(1)
print("ok %d" % len(examples))
