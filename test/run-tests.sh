#!/usr/bin/env bash
# test/run-tests.sh: every test of ade in one command (`make test`), from a
# fresh machine.
#
# 1. installs what is missing (Debian packages, when root);
# 2. builds and installs the extension (PGXS);
# 3. makes two throwaway clusters, each with a mock ABM of its own
#    (test/mock_abm.py on a free loopback port), as the postgres user
#    (PostgreSQL refuses to run as root), with shared_preload_libraries =
#    'pg_cron,ade' (as the README says), TCP off, a private socket
#    directory, ade.abm_url pointing at its mock;
# 4. runs two groups of suites at once, one on each cluster.  A cluster
#    runs its group one suite after the other: the pgTAP files share the
#    cluster's state (its mock and the faults set there, ALTER SYSTEM,
#    roles, pg_cron's database, DROP EXTENSION ade).
#    Cluster 1: pg_regress (make installcheck), the runner's self-test
#    (test/runner_selftest.sh, a cluster of its own), the mock ABM's
#    self-test (test/mock_abm.py --self-test: its OAuth vector, cursors and
#    device calls), the self-test of its School and Business Manager API
#    (test/mock_api_selftest.py: a mock of its own, no cluster; counted as
#    one), and the pgTAP files not in CLUSTER2 below.
#    Cluster 2: the pgTAP files of CLUSTER2, then the model-based test
#    (test/model_test.py), the fuzz of untrusted input (test/input_fuzz.py)
#    and the stress test of the application racing open runs
#    (test/stress_open_run.py, about 45 s), each with a fixed seed and
#    counted as one.  Each cluster runs its suites in the order one cluster
#    ran them all before (the pgTAP files by name, then the randomized
#    tests);
# 5. prints one line per suite (pgTAP file, pg_regress, randomized test):
#    ok or FAILED, its count, its seconds; a failing suite's failures,
#    diagnostics and stderr follow its line.  Every suite's whole output is
#    in WORK/logs/NAME.log;
# 6. stops everything it started, whatever happened, and ends with one line
#    "N passed, N failed" (each pg_regress test, each pgTAP assertion, each
#    randomized test and the self-test count); exits non-zero on any
#    failure, a suite that dies mid-plan or never reports included.
#
# Environment: ADE_SHARED (default: ../shared beside the checkout) holds the
# fixtures; the tests that need them skip cleanly when it is absent.
# ADE_KEEP=1 keeps the work directory (logs, clusters) for a look afterwards.
# ADE_PORT (default 54329) is cluster 1's port, cluster 2's is the next one.
# ADE_TEST_FILES="FILE.sql ...": those pgTAP files only, on cluster 1 alone
# (nothing else runs; the self-test runs the runner so).
set -uo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
. test/lib.sh

# the pgTAP files cluster 2 runs before the randomized tests, chosen so that
# both clusters take about as long (each suite's line says how long it took)
CLUSTER2=(06_install_equals_upgrade 07_dump_restore 31_run_budget 60_schedule 95_failover
  22_cross_token_ties 27_reconcile 28_api_assertion 29_api 29_api_review 29_api_scale 83_second_review
  84_fourth_review 95_keys_and_trust 98_demo)

fail_early() { echo "$1" >&2; echo "0 passed, 1 failed"; exit 1; }

ade_install_packages || fail_early "could not install the packages"
ade_build || fail_early "the build failed"

port=${ADE_PORT:-54329}
work=$(mktemp -d /tmp/ade-test.XXXXXX)
chmod 755 "$work"
export ADE_LOGS=$work/logs ADE_RESULTS=$work/results
mkdir -p "$ADE_LOGS"
: >"$ADE_RESULTS"
groups=()
cleanup() {
  local p c
  # interrupted: the groups and what each runs now (the rest fails on the stopped cluster)
  for p in "${groups[@]}"; do pkill -P "$p" 2>/dev/null; kill "$p" 2>/dev/null; done
  for c in "$work"/c?; do
    [[ -d $c/data ]] && ade_stop_cluster "$c"
    [[ -f $c/mock.pid ]] && kill "$(cat "$c/mock.pid")" 2>/dev/null
  done
  [[ ${ADE_KEEP:-0} -eq 1 ]] || rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

shared=${ADE_SHARED:-$top/../shared}
if [[ -f $shared/fixtures/apple-test-token/server-token.p7m ]]; then
  ADE_FIXTURES=$(cd "$shared/fixtures/apple-test-token" && pwd)
else
  ADE_FIXTURES=
  log "no fixtures at $shared: the tests that need them skip"
fi
export ADE_FIXTURES

# the suites of each cluster, in order: a name each (its log is WORK/logs/NAME.log)
only=${ADE_TEST_FILES:-}
group1=() group2=()
for f in ${only:-test/t/*.sql}; do
  n=$(basename "$f" .sql)
  if [[ -z $only && " ${CLUSTER2[*]} " == *" $n "* ]]; then group2+=("$f"); else group1+=("$f"); fi
done
if [[ -z $only ]]; then
  group1=(pg_regress runner_selftest mock_selftest mock_api_selftest "${group1[@]}")
  group2=("${group2[@]}" model_test input_fuzz stress_open_run)
fi

# cluster_up N: the mock and the cluster N in WORK/cN, and the environment
# the suites read (PG*, ADE_MOCK_URL, ADE_TEST_DB, ADE_TEST_TMP, ADE_SERVER_LOG)
cluster_up() {
  local d=$work/c$1
  mkdir -p "$d/tmp" && chmod 777 "$d/tmp"
  ade_start_mock "$d" >"$d/setup.log" 2>&1 &&
    ade_create_cluster "$d" $((port + $1 - 1)) ade_regress "fsync = off
synchronous_commit = off
ade.retry_backoff = 50" >>"$d/setup.log" 2>&1 || return 1
  export ADE_CLUSTER=$1 ADE_TEST_DB=ade_regress ADE_TEST_TMP=$d/tmp ADE_SERVER_LOG=$d/log/server.log
}

# run_group N SUITE...: cluster N, then its suites one after the other
run_group() {
  local n=$1 s
  shift
  if ! cluster_up "$n"; then
    ADE_CLUSTER=$n ade_report "cluster_$n" 0 1 0 "did not start" <"$work/c$n/setup.log"
    return 1
  fi
  for s in "$@"; do
    case $s in
      pg_regress) ade_regress ;;
      runner_selftest) ade_counted_as_one runner_selftest test/runner_selftest.sh ;;
      mock_selftest) ade_counted_as_one mock_selftest "$PYTHON" test/mock_abm.py --self-test ;;
      mock_api_selftest) ade_counted_as_one mock_api_selftest "$PYTHON" test/mock_api_selftest.py ;;
      model_test | input_fuzz | stress_open_run) ade_counted_as_one "$s" "$PYTHON" "test/$s.py" ;;
      *) ade_prove "$s" ;;
    esac
  done
}

for s in "${group1[@]}" "${group2[@]}"; do basename "$s" .sql; done >"$work/expected"
log "work directory $work: each suite's output in logs/ (ADE_KEEP=1 keeps it)"
log "cluster 1: ${#group1[@]} suites${group2:+; cluster 2: ${#group2[@]} suites}; a line each as it ends"
run_group 1 "${group1[@]}" </dev/null &
groups+=($!)
if ((${#group2[@]})); then
  run_group 2 "${group2[@]}" </dev/null &
  groups+=($!)
fi
wait
groups=()

ade_tally "$work/expected"
if ((failed)); then
  for c in "$work"/c?; do
    [[ -f $c/log/server.log ]] || continue
    echo "---- server log of cluster ${c##*/c} (tail) ----"
    tail -40 "$c/log/server.log"
  done
fi
[[ ${ADE_KEEP:-0} -eq 1 ]] && echo "kept $work"
echo "$passed passed, $failed failed"
((failed == 0))
