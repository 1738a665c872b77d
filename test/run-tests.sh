#!/usr/bin/env bash
# test/run-tests.sh: every test of ade in one command (`make test`), from a
# fresh machine.
#
# 1. installs what is missing (Debian packages, when root);
# 2. builds and installs the extension (PGXS);
# 3. starts the mock ABM (test/mock_abm.py) on a free loopback port;
# 4. creates a throwaway cluster as the postgres user (PostgreSQL refuses to
#    run as root) with shared_preload_libraries = 'pg_cron,ade' (as the README
#    says), TCP off, on a
#    private socket directory, with ade.abm_url pointing at the mock;
# 5. runs pg_regress (make installcheck), the pgTAP files (pg_prove), the
#    model-based test (test/model_test.py), the fuzz of untrusted input
#    (test/input_fuzz.py) and the stress test of the application's
#    statements racing open runs (test/stress_open_run.py, about 45 s), the
#    last three with a fixed seed, each counting as one;
# 6. stops everything it started, whatever happened, and ends with one line
#    "N passed, N failed"; exits non-zero on any failure.
#
# Environment: ADE_SHARED (default: ../shared beside the checkout) holds the
# fixtures; the tests that need them skip cleanly when it is absent.
# ADE_KEEP=1 keeps the work directory (logs, cluster) for a look afterwards.
set -uo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
. test/lib.sh

fail_early() { echo "$1" >&2; echo "0 passed, 1 failed"; exit 1; }

ade_install_packages || fail_early "could not install the packages"
ade_build || fail_early "the build failed"

work=$(mktemp -d /tmp/ade-test.XXXXXX)
mkdir -p "$work/tmp"
chmod 777 "$work/tmp"
mock_pid=
cleanup() {
  ade_stop_cluster "$work"
  [[ -n $mock_pid ]] && kill "$mock_pid" 2>/dev/null
  if [[ ${ADE_KEEP:-0} -eq 1 ]]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "starting the mock ABM"
ade_start_mock "$work" || fail_early "the mock ABM did not start"
log "creating a throwaway cluster in $work"
ade_create_cluster "$work" 54329 ade_regress "fsync = off
synchronous_commit = off
ade.retry_backoff = 50" || fail_early "the cluster did not start"

export ADE_TEST_TMP=$work/tmp ADE_TEST_DB=ade_regress ADE_SERVER_LOG=$work/log/server.log
shared=${ADE_SHARED:-$top/../shared}
if [[ -f $shared/fixtures/apple-test-token/server-token.p7m ]]; then
  ADE_FIXTURES=$(cd "$shared/fixtures/apple-test-token" && pwd)
else
  ADE_FIXTURES=
  log "no fixtures at $shared: the tests that need them skip"
fi
export ADE_FIXTURES

passed=0 failed=0

log "pg_regress"
rm -f regression.diffs
make -s PG_CONFIG="$PG_CONFIG" installcheck 2>&1 | tee "$work/regress.out"
r_ok=$(grep -cE '\.\.\. ok( |$)' "$work/regress.out" || true)
r_fail=$(grep -cE '\.\.\. FAILED' "$work/regress.out" || true)
if [[ $r_fail -gt 0 && -f regression.diffs ]]; then
  echo "---- regression.diffs (head) ----"
  head -150 regression.diffs
fi
if [[ $r_ok -eq 0 && $r_fail -eq 0 ]]; then r_fail=1; fi
passed=$((passed + r_ok))
failed=$((failed + r_fail))

log "pgTAP (pg_prove)"
pg_prove --verbose --ext .sql -d ade_regress test/t/ >"$work/prove.out" 2>&1
prove_rc=$?
# all but the passing assertions: file names, failures, diagnostics, summary
grep -vE '^ok [0-9]' "$work/prove.out"
t_ok=$(grep -cE '^ok [0-9]' "$work/prove.out" || true)
t_fail=$(grep -cE '^not ok [0-9]' "$work/prove.out" || true)
if [[ $prove_rc -ne 0 && $t_fail -eq 0 ]]; then t_fail=1; fi
passed=$((passed + t_ok))
failed=$((failed + t_fail))

# a randomized test with a fixed seed, counted as one test
counted_as_one() {
  local name=$1 script=$2 out=$work/$2.out
  log "$name (test/$script, fixed seed)"
  "$PYTHON" "test/$script" >"$out" 2>&1
  local rc=$?
  tail -n 3 "$out"
  if [[ $rc -eq 0 ]]; then
    passed=$((passed + 1))
  else
    echo "---- $name ----"
    head -c 20000 "$out"
    failed=$((failed + 1))
  fi
}
counted_as_one "model-based test" model_test.py
counted_as_one "input fuzz" input_fuzz.py
counted_as_one "stress test: the application racing open runs" stress_open_run.py

if [[ $failed -gt 0 ]]; then
  echo "---- server log (tail) ----"
  tail -40 "$work/log/server.log"
fi
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
