#!/usr/bin/env bash
# test/kek_durable.sh: is the key-encryption key file made so that an OS
# crash cannot lose it while committed rows need it?  A throwaway cluster
# (fsync on) makes its key file (CREATE EXTENSION ade) under strace (every
# backend of the postmaster followed); the system calls must show the file opened with
# O_CREAT|O_EXCL under a temporary name, fsynced, linked to ade_kek.key
# (never overwriting), and the data directory fsynced after the link.
# Prints one word per check, "ok" or "no:<check>"; "skip: <why>" when strace
# cannot run here.  Used by test/t/95_keys_and_trust.sql.
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
. test/lib.sh
command -v strace >/dev/null || { echo "skip: no strace"; exit 0; }
work=$(mktemp -d "${TMPDIR:-/tmp}/ade-kek.XXXXXX")
chmod 755 "$work"
port=${ADE_KEK_PORT:-54347}
trace_pid=
cleanup() {
  [[ -n $trace_pid ]] && kill "$trace_pid" 2>/dev/null
  ade_stop_cluster "$work/c"
  rm -rf "$work"
}
trap cleanup EXIT
ade_bare_cluster "$work/c" "$port" "-c fsync=on" || { echo "skip: no cluster"; exit 0; }
user=postgres; [[ $(id -u) -ne 0 ]] && user=$(id -un)
q() { "$PGBIN/psql" -h "$work/c/sock" -p "$port" -U "$user" -d ade -XAtq -v ON_ERROR_STOP=1 -c "$@"; }
postmaster=$(head -1 "$work/c/data/postmaster.pid")
strace -f -qq -p "$postmaster" -e trace=openat,open,link,linkat,rename,renameat,renameat2,fsync,fdatasync \
  -o "$work/trace" 2>"$work/strace.err" &
trace_pid=$!
sleep 1
kill -0 "$trace_pid" 2>/dev/null || { echo "skip: strace cannot attach ($(head -1 "$work/strace.err"))"; exit 0; }
q 'CREATE EXTENSION ade' >/dev/null || exit 1     # the key file is made with the extension
sleep 0.5
kill "$trace_pid"; wait "$trace_pid" 2>/dev/null; trace_pid=
"$PYTHON" - "$work/trace" "$work/c/data" <<'PY'
import re, sys
lines = open(sys.argv[1]).read().splitlines()
datadir = sys.argv[2]
ev = []                      # (index, kind, detail)
fds = {}                     # (pid, fd) -> path
tmp = None
for i, l in enumerate(lines):
    m = re.match(r'(\d+)\s+(\w+)\((.*)\)\s+=\s+(-?\d+)', l)
    if not m:
        continue
    pid, call, args, ret = m.group(1), m.group(2), m.group(3), int(m.group(4))
    if call in ("openat", "open") and ret >= 0:
        path = re.findall(r'"([^"]*)"', args)[0]
        fds[(pid, ret)] = path
        if "ade_kek" in path and path != "ade_kek.key" and not path.endswith("/ade_kek.key"):
            tmp = path
            ev.append((i, "open_tmp", "O_EXCL" in args and "O_CREAT" in args))
        elif path.rstrip("/") in (datadir.rstrip("/"), "."):
            ev.append((i, "open_dir", ret))
    elif call in ("fsync", "fdatasync"):
        path = fds.get((pid, int(args.split(",")[0])), "")
        if tmp and path == tmp:
            ev.append((i, "fsync_tmp", ret == 0))
        elif path.rstrip("/") in (datadir.rstrip("/"), "."):
            ev.append((i, "fsync_dir", ret == 0))
    elif call in ("link", "linkat", "rename", "renameat", "renameat2") and "ade_kek.key" in args:
        ev.append((i, call, ret == 0))
def first(kind):
    return next((e for e in ev if e[1] == kind), None)
o, f, d = first("open_tmp"), first("fsync_tmp"), None
lk = next((e for e in ev if e[1] in ("link", "linkat")), None)
rn = next((e for e in ev if e[1].startswith("rename")), None)
if lk:
    d = next((e for e in ev if e[1] == "fsync_dir" and e[0] > lk[0] and e[2]), None)
out = []
out.append("ok" if o and o[2] else "no:o_excl")
out.append("ok" if o and f and f[2] and lk and o[0] < f[0] < lk[0] else "no:fsync_before_link")
out.append("ok" if lk and lk[2] and not rn else "no:link_not_rename")
out.append("ok" if d else "no:dir_fsync_after_link")
print(" ".join(out))
PY
