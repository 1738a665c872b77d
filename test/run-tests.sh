#!/usr/bin/env bash
# test/run-tests.sh: every test of ade in one command (`make test`), from a
# fresh machine.
#
# 1. installs what is missing (Debian packages, when root);
# 2. builds and installs the extension (PGXS);
# 3. creates a throwaway cluster as the postgres user (PostgreSQL refuses to
#    run as root) with shared_preload_libraries = 'pg_cron', on a private
#    socket directory with TCP off, and ade.abm_url pointing at
# 4. the mock ABM (test/mock_abm.py) on a free loopback port;
# 5. runs pg_regress (make installcheck) and the pgTAP files (pg_prove);
# 6. stops everything it started, whatever happened, and ends with one line
#    "N passed, N failed"; exits non-zero on any failure.
#
# Environment: ADE_SHARED (default: ../shared beside the checkout) holds the
# fixtures; tests that need them skip cleanly when it is absent.
set -uo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

PGVER=15
PGBIN=/usr/lib/postgresql/$PGVER/bin
PACKAGES="postgresql-$PGVER postgresql-client-$PGVER postgresql-server-dev-$PGVER
  postgresql-$PGVER-cron postgresql-$PGVER-pgtap libtap-parser-sourcehandler-pgtap-perl
  libcurl4-openssl-dev libssl-dev python3 openssl make gcc"

log() { printf '== %s\n' "$*"; }

# ---- 1. packages ----
missing=()
for p in $PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "missing Debian packages: ${missing[*]} (run as root to install them)" >&2
    echo "0 passed, 1 failed"
    exit 1
  fi
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || { echo "apt-get install failed" >&2; echo "0 passed, 1 failed"; exit 1; }
fi
PYTHON=/usr/bin/python3

# ---- 2. build ----
export PG_CONFIG=$PGBIN/pg_config
log "building"
make -s PG_CONFIG="$PG_CONFIG" >/dev/null || { echo "build failed"; echo "0 passed, 1 failed"; exit 1; }
make -s PG_CONFIG="$PG_CONFIG" install >/dev/null || { echo "install failed"; echo "0 passed, 1 failed"; exit 1; }

# ---- 3. cluster and 4. mock ----
work=$(mktemp -d /tmp/ade-test.XXXXXX)
chmod 755 "$work"
mkdir -p "$work/data" "$work/sock" "$work/tmp" "$work/log"
chmod 777 "$work/tmp"
as_pg() {
  if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}
if [[ $(id -u) -eq 0 ]]; then
  chown postgres: "$work/data" "$work/sock" "$work/log"
  DBUSER=postgres
else
  DBUSER=$(id -un)
fi
mock_pid=
cleanup() {
  as_pg "$PGBIN/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1
  [[ -n $mock_pid ]] && kill "$mock_pid" 2>/dev/null
  [[ -n ${tls_pid:-} ]] && kill "$tls_pid" 2>/dev/null
  wait 2>/dev/null
  if [[ ${keep:-0} -eq 1 ]]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "starting the mock ABM"
$PYTHON test/mock_abm.py --port 0 --port-file "$work/mock.port" --quiet >"$work/mock.log" 2>&1 &
mock_pid=$!
$PYTHON test/mockctl.py wait-port "$work/mock.port" --timeout 15 \
  || { cat "$work/mock.log"; echo "0 passed, 1 failed"; exit 1; }
export ADE_MOCK_URL="http://127.0.0.1:$(cat "$work/mock.port")"

log "creating a throwaway cluster in $work"
as_pg "$PGBIN/initdb" -D "$work/data" -U "$DBUSER" -A trust --no-sync -E UTF8 --locale=C.UTF-8 >"$work/initdb.log" 2>&1 \
  || { cat "$work/initdb.log"; echo "0 passed, 1 failed"; exit 1; }
PORT=54329
cat >>"$work/data/postgresql.conf" <<EOF
port = $PORT
listen_addresses = ''
unix_socket_directories = '$work/sock'
shared_preload_libraries = 'pg_cron'
cron.database_name = 'ade_regress'
cron.use_background_workers = on
max_worker_processes = 20
fsync = off
synchronous_commit = off
ade.abm_url = '$ADE_MOCK_URL'
ade.retry_backoff = 50
EOF
as_pg "$PGBIN/pg_ctl" -D "$work/data" -l "$work/log/server.log" -w -t 60 start >/dev/null \
  || { cat "$work/log/server.log"; echo "0 passed, 1 failed"; exit 1; }

export PGHOST=$work/sock PGPORT=$PORT PGUSER=$DBUSER PGDATABASE=ade_regress
export ADE_TEST_TMP=$work/tmp ADE_TEST_DB=ade_regress
shared=${ADE_SHARED:-$top/../shared}
if [[ -f $shared/fixtures/apple-test-token/server-token.p7m ]]; then
  export ADE_FIXTURES=$(cd "$shared/fixtures/apple-test-token" && pwd)
else
  export ADE_FIXTURES=
  log "no fixtures at $shared: the tests that need them skip"
fi
"$PGBIN/createdb" ade_regress || { echo "0 passed, 1 failed"; exit 1; }
"$PGBIN/psql" -qX -c 'CREATE EXTENSION pg_cron' >/dev/null || { echo "0 passed, 1 failed"; exit 1; }

# ---- 5. tests ----
passed=0 failed=0

log "pg_regress"
make -s PG_CONFIG="$PG_CONFIG" installcheck 2>&1 | tee "$work/regress.out"
r_ok=$(grep -cE '\.\.\. ok( |$)' "$work/regress.out" || true)
r_fail=$(grep -cE '\.\.\. FAILED' "$work/regress.out" || true)
if [[ -f regression.diffs ]] && [[ $r_fail -gt 0 ]]; then
  echo "---- regression.diffs (head) ----"; head -150 regression.diffs
fi
if [[ $r_ok -eq 0 && $r_fail -eq 0 ]]; then r_fail=1; fi
passed=$((passed + r_ok)); failed=$((failed + r_fail))

log "pgTAP (pg_prove)"
if compgen -G "test/t/*.sql" >/dev/null; then
  pg_prove --verbose --ext .sql -d ade_regress test/t/ >"$work/prove.out" 2>&1
  prove_rc=$?
  grep -vE '^ok ' "$work/prove.out" | grep -vE '^\s*$' | head -100
  t_ok=$(grep -cE '^ok [0-9]' "$work/prove.out" || true)
  t_fail=$(grep -cE '^not ok [0-9]' "$work/prove.out" || true)
  if [[ $prove_rc -ne 0 && $t_fail -eq 0 ]]; then t_fail=1; fi
  passed=$((passed + t_ok)); failed=$((failed + t_fail))
fi

if [[ $failed -gt 0 ]]; then
  echo "---- server log (tail) ----"; tail -40 "$work/log/server.log"
fi
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
