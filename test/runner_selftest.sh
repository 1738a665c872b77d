#!/usr/bin/env bash
# test/runner_selftest.sh: what `make test` prints, tried on three pgTAP
# files made here (issue 20, item 6).  test/run-tests.sh runs them alone
# (ADE_TEST_FILES), with its own cluster and mock, and what it printed must
# be:
#
# - a passing file that writes an expected WARNING and an expected
#   "ERROR:  canceling statement" on stderr: its one line, and neither of
#   them (they are in its log);
# - a failing file: its line says FAILED, then the failing assertion and
#   pgTAP's diagnostics;
# - a file that dies mid-plan (psql stops at an error): FAILED, with its
#   stderr and pg_prove's "Bad plan";
# - one "N passed, N failed" line, the last, counting each assertion and
#   one failure for the file that died; and a non-zero exit status.
#
# Prints "ok N - ..." / "not ok N - ..." and exits non-zero on any failure.
# Run by test/run-tests.sh on cluster 1 (its ports are PGPORT + 2; any
# other port works as well).
set -uo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top" || exit 1
d=$(mktemp -d /tmp/ade-selftest.XXXXXX)
chmod 755 "$d"
trap 'rm -rf "$d"' EXIT

cat >"$d/a_passes.sql" <<'EOF'
\set QUIET 1
\set ON_ERROR_STOP 1
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(2);
SELECT ok(true, 'first');
DO $$ BEGIN RAISE WARNING 'an expected warning of a passing file'; END $$;
\! psql -Xq -c "SET statement_timeout = 10" -c "SELECT pg_sleep(1)" >/dev/null
SELECT ok(true, 'second');
SELECT * FROM finish();
EOF
cat >"$d/b_fails.sql" <<'EOF'
\set QUIET 1
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(3);
SELECT ok(true, 'before');
SELECT is(1, 2, 'one is two');
SELECT ok(true, 'after');
SELECT * FROM finish();
EOF
cat >"$d/c_dies.sql" <<'EOF'
\set QUIET 1
\set ON_ERROR_STOP 1
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(4);
SELECT ok(true, 'one');
SELECT ok(true, 'two');
SELECT 1 / 0;
SELECT ok(true, 'three');
SELECT ok(true, 'four');
SELECT * FROM finish();
EOF

ADE_TEST_FILES="$d/a_passes.sql $d/b_fails.sql $d/c_dies.sql" ADE_PORT=$((${PGPORT:-54329} + 2)) \
  ADE_KEEP=1 test/run-tests.sh >"$d/out" 2>&1 </dev/null
rc=$?
kept=$(sed -n 's/^kept //p' "$d/out")
if [[ -n $kept && -d $kept ]]; then
  cp "$kept"/logs/*.log "$d/" 2>/dev/null
  rm -rf "$kept"
fi

n=0 bad=0
check() { # check DESCRIPTION COMMAND...
  local what=$1
  shift
  n=$((n + 1))
  if "$@"; then echo "ok $n - $what"; else echo "not ok $n - $what"; bad=$((bad + 1)); fi
}
# what the suites' lines and blocks say: the output above the server log's
# tail (printed on a failure, it holds every statement's error)
sed '/^---- server log/,$d' "$d/out" >"$d/shown"
has() { grep -qE -- "$1" "$d/shown"; }
hasnt() { ! grep -qE -- "$1" "$d/shown"; }

check "the runner exits non-zero (exit status $rc)" test "$rc" -ne 0
check "one summary line" test "$(grep -cE '[0-9]+ passed, [0-9]+ failed' "$d/out")" -eq 1
check "it is the last line, and counts each assertion and the file that died: 6 passed, 2 failed" \
  test "$(tail -n 1 "$d/out")" = "6 passed, 2 failed"
check "the passing file: one line" has '^ok +a_passes +2 assertions'
check "its expected WARNING is not printed" hasnt 'an expected warning'
check "nor its expected ERROR" hasnt 'canceling statement'
check "both are in its log" grep -q 'an expected warning' "$d/a_passes.log"
check "the failing file: FAILED" has '^FAILED +b_fails +2 of 3 passed'
check "its failing assertion" has '^ +not ok 2 - one is two'
check "its diagnostics" has '^ +# +have: 1'
check "the file that died: FAILED" has '^FAILED +c_dies +2 of 4 passed'
check "its stderr" has 'division by zero'
check "pg_prove's verdict on its plan" has 'planned 4 tests but ran 2'
check "no passing assertion is printed" hasnt '^ *ok [0-9]'
check "the server log's tail follows the failures" grep -q '^---- server log of cluster 1' "$d/out"

if ((bad)); then
  echo "---- what the runner printed ----"
  sed 's/^/| /' "$d/out"
fi
echo "$((n - bad)) of $n checks of the runner's output passed"
((bad == 0))
