# test/lib.sh: shell functions shared by test/run-tests.sh (`make test`)
# and test/demo.sh (`make demo`): install what is missing, build, start the
# mock ABM, create and start a cluster with pg_cron.  Source it; it defines
# functions and a few variables only.

PGVER=15
# ADE_PGBIN: another PostgreSQL 15 installation (e.g. a relocated copy) to build and test against
PGBIN=${ADE_PGBIN:-/usr/lib/postgresql/$PGVER/bin}
PYTHON=/usr/bin/python3
ADE_PACKAGES="postgresql-$PGVER postgresql-client-$PGVER postgresql-server-dev-$PGVER
  postgresql-$PGVER-cron postgresql-$PGVER-pgtap libtap-parser-sourcehandler-pgtap-perl
  libcurl4-openssl-dev libssl-dev python3 python3-hypothesis python3-psycopg2 python3-cryptography
  openssl make gcc bc strace procps
  postgresql-$PGVER-auto-failover"

log() { printf '== %s\n' "$*"; }

# run a command as the postgres user when we are root (PostgreSQL refuses
# root), from / : a checkout in a directory only root can enter (root's home)
# would make runuser print "could not change directory" into the output.
# Every path handed to it is absolute.
as_pg() {
  if [[ $(id -u) -eq 0 ]]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}

# Debian packages the project needs, installed when missing (as root)
ade_install_packages() {
  local missing=() p
  for p in $ADE_PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  if [[ $(id -u) -ne 0 ]]; then
    echo "missing Debian packages: ${missing[*]} (run as root to install them)" >&2
    return 1
  fi
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# make && make install against PostgreSQL 15
ade_build() {
  export PG_CONFIG=$PGBIN/pg_config
  log "building and installing the extension"
  # one build at a time (a lock on the Makefile): test/run-tests.sh's groups
  # run a build of their own (make demo, the runner's self-test)
  (
    flock 9 && make -s -j2 PG_CONFIG="$PG_CONFIG" >/dev/null && make -s PG_CONFIG="$PG_CONFIG" install >/dev/null
  ) 9<Makefile
}

# ade_start_mock DIR: the mock ABM on a free loopback port; sets ADE_MOCK_URL, mock_pid
ade_start_mock() {
  local dir=$1
  rm -f "$dir/mock.port"
  setsid "$PYTHON" test/mock_abm.py --port 0 --port-file "$dir/mock.port" --quiet \
    >"$dir/mock.log" 2>&1 </dev/null &
  mock_pid=$!
  echo "$mock_pid" >"$dir/mock.pid"
  "$PYTHON" test/mockctl.py wait-port "$dir/mock.port" --timeout 15 || { cat "$dir/mock.log"; return 1; }
  export ADE_MOCK_URL="http://127.0.0.1:$(cat "$dir/mock.port")"
}

# ade_create_cluster DIR PORT DBNAME [EXTRA_CONF]: initdb as postgres in
# DIR/data, TCP off, socket in DIR/sock, pg_cron and ade preloaded (as the
# README says), pg_cron for DBNAME,
# ade.abm_url = the mock, EXTRA_CONF lines appended; starts it, creates
# DBNAME with pg_cron, exports PGHOST/PGPORT/PGUSER/PGDATABASE
ade_create_cluster() {
  local dir=$1 port=$2 db=$3 extra=${4:-} user
  mkdir -p "$dir/data" "$dir/sock" "$dir/log"
  chmod 755 "$dir"
  if [[ $(id -u) -eq 0 ]]; then
    chown postgres: "$dir/data" "$dir/sock" "$dir/log"
    user=postgres
  else
    user=$(id -un)
  fi
  as_pg "$PGBIN/initdb" -D "$dir/data" -U "$user" -A trust --no-sync -E UTF8 --locale=C.UTF-8 \
    >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log"; return 1; }
  cat >>"$dir/data/postgresql.conf" <<EOF
port = $port
listen_addresses = ''
unix_socket_directories = '$dir/sock'
shared_preload_libraries = 'pg_cron,ade'
cron.database_name = '$db'
cron.use_background_workers = on
max_worker_processes = 20
ade.abm_url = '$ADE_MOCK_URL'
$extra
EOF
  as_pg "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/log/server.log" -w -t 60 start >/dev/null ||
    { cat "$dir/log/server.log"; return 1; }
  export PGHOST=$dir/sock PGPORT=$port PGUSER=$user PGDATABASE=$db
  "$PGBIN/createdb" "$db" && "$PGBIN/psql" -qX -c 'CREATE EXTENSION pg_cron' >/dev/null
}

# ade_stop_cluster DIR (nothing to do when it is not running)
ade_stop_cluster() {
  as_pg "$PGBIN/pg_ctl" -D "$1/data" -m fast stop >/dev/null 2>&1 || true
}

# ade_bare_cluster DIR PORT [SERVER OPTIONS]: a cluster of its own for a
# test script (initdb as postgres when root), no TCP, socket in DIR/sock,
# log in DIR/server.log, ade.abm_url = the mock; started, with a database
# "ade".  Stop it with ade_stop_cluster DIR.
ade_bare_cluster() {
  local d=$1 port=$2 user
  shift 2
  mkdir -p "$d/data" "$d/sock"
  chmod 755 "$d"
  if [[ $(id -u) -eq 0 ]]; then chown postgres: "$d" "$d/data" "$d/sock"; user=postgres; else user=$(id -un); fi
  as_pg "$PGBIN/initdb" -D "$d/data" -U "$user" -A trust --no-sync -E UTF8 --locale=C.UTF-8 >"$d/initdb.log" 2>&1 ||
    { cat "$d/initdb.log" >&2; return 1; }
  as_pg "$PGBIN/pg_ctl" -D "$d/data" -l "$d/server.log" -w -t 60 \
    -o "-c listen_addresses='' -k $d/sock -p $port ${ADE_MOCK_URL:+-c ade.abm_url=$ADE_MOCK_URL} $*" start >/dev/null ||
    { cat "$d/server.log" >&2; return 1; }
  "$PGBIN/createdb" -h "$d/sock" -p "$port" -U "$user" ade
}

# ---- the runner's reporting (test/run-tests.sh) ----
# Every suite's whole output (stdout and stderr) goes to $ADE_LOGS/NAME.log.
# The terminal gets one line per suite: ok or FAILED, what it counted, its
# seconds and the cluster it ran on ($ADE_CLUSTER); a failing suite's line
# is followed, indented, by what it takes to debug it from the printed
# output alone.  Each suite appends "NAME PASSED FAILED" to $ADE_RESULTS;
# ade_tally adds them up.  The two clusters' suites end at any time: a line
# and its block are printed at once, under a lock.

# ade_report NAME PASSED FAILED SECONDS WHAT: record and print a suite's
# result; when it failed, the details read from stdin follow its line
ade_report() {
  local name=$1 passed=$2 failed=$3 secs=$4 what=$5 block
  echo "$name $passed $failed" >>"$ADE_RESULTS"
  block=$(printf '%-7s %-30s %-24s %4d s  cluster %s' "$( ((failed)) && echo FAILED || echo ok)" \
    "$name" "$what" "$secs" "${ADE_CLUSTER:-1}")
  if ((failed)); then
    block+=$'\n'$(sed 's/^/    /')$'\n'"    (all of it: $ADE_LOGS/$name.log)"
  fi
  {
    flock 9
    printf '%s\n' "$block"
  } 9>>"$ADE_RESULTS.lock"
}

# ade_prove FILE: one pgTAP file (pg_prove); each assertion counts.  A file
# that pg_prove fails with no failing assertion (it died mid-plan, ran
# another number of tests than it planned, psql failed) counts one failure.
ade_prove() {
  local file=$1 name log t0=$SECONDS rc ok bad skipped plan what
  name=$(basename "$file" .sql)
  log=$ADE_LOGS/$name.log
  pg_prove --verbose --nocolor --ext .sql -d "$ADE_TEST_DB" "$file" >"$log" 2>&1
  rc=$?
  ok=$(grep -cE '^ok [0-9]' "$log")
  bad=$(grep -cE '^not ok [0-9]' "$log")
  skipped=$(grep -ciE '^ok [0-9]+.*# skip' "$log")
  plan=$(sed -n 's/^1\.\.\([0-9]*\).*/\1/p' "$log" | head -1)
  if ((rc != 0 && bad == 0)); then bad=1; fi
  if ((bad)); then
    what="$ok of ${plan:-no plan} passed"
  else
    what="$ok assertions"
    ((skipped)) && what+=" ($skipped skipped)"
  fi
  # all but the passing assertions: the failures, pgTAP's diagnostics, psql's
  # stderr (where the passing files' expected errors are), pg_prove's verdict
  grep -vE '^ok [0-9]' "$log" | head -n 400 |
    ade_report "$name" "$ok" "$bad" $((SECONDS - t0)) "$what"
}

# ade_regress: pg_regress (make installcheck); each test counts
ade_regress() {
  local log=$ADE_LOGS/pg_regress.log t0=$SECONDS ok bad
  rm -f regression.diffs
  make -s PG_CONFIG="$PG_CONFIG" installcheck >"$log" 2>&1
  ok=$(grep -cE '\.\.\. ok( |$)' "$log")
  bad=$(grep -cE '\.\.\. FAILED' "$log")
  if ((ok + bad == 0)); then bad=1; fi
  {
    grep -vE '\.\.\. ok( |$)' "$log" | head -n 100
    [[ -f regression.diffs ]] && { echo "---- regression.diffs (head) ----"; head -150 regression.diffs; }
  } | ade_report pg_regress "$ok" "$bad" $((SECONDS - t0)) "$((ok + bad)) tests$( ((bad)) && echo ", $bad failed")"
}

# ade_counted_as_one NAME CMD...: a suite that counts as one test (its exit status)
ade_counted_as_one() {
  local name=$1 log=$ADE_LOGS/$1.log t0=$SECONDS rc
  shift
  "$@" >"$log" 2>&1
  rc=$?
  # its last lines, less its own "N passed, N failed" (the runner's is the only one)
  tail -n 200 "$log" | grep -vE '^[0-9]+ passed, [0-9]+ failed$' |
    ade_report "$name" $((rc == 0)) $((rc != 0)) $((SECONDS - t0)) "$( ((rc)) && echo "exit status $rc" || echo "1 suite")"
}

# ade_tally EXPECTED: sets passed and failed from $ADE_RESULTS; each suite
# named in the file EXPECTED that never reported (its group crashed, was
# killed) is printed and counts as one failure
ade_tally() {
  local name p f
  passed=0 failed=0
  while read -r name p f; do
    passed=$((passed + p)) failed=$((failed + f))
  done <"$ADE_RESULTS"
  while read -r name; do
    if ! grep -q "^$name " "$ADE_RESULTS"; then
      printf '%-7s %-30s %s\n' FAILED "$name" "no result: its group stopped before it"
      failed=$((failed + 1))
    fi
  done <"$1"
}
