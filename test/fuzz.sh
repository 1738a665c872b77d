#!/usr/bin/env bash
# test/fuzz.sh: the long randomized runs (`make fuzz`), from a fresh machine.
#
# Sets up like test/run-tests.sh (packages, build, mock ABM, a throwaway
# cluster as postgres, stopped at the end whatever happens), then runs the
# model-based test (test/model_test.py) with random seeds for
# ADE_FUZZ_MINUTES (default 30), and the fuzz of untrusted input
# (test/input_fuzz.py: token files and ABM answers) for
# ADE_INPUT_FUZZ_MINUTES (default 10; 0 skips it), and the stress test of
# the application's statements racing open runs (test/stress_open_run.py)
# for ADE_STRESS_MINUTES (default 10; 0 skips it).  Each batch prints its
# seed; a failure prints the shortest sequence of steps that breaks an
# invariant (or the case) and how to replay it: ADE_FUZZ_SEED=<seed> make
# fuzz.  Ends with "N passed, N failed" (steps and cases checked).
set -uo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
. test/lib.sh

ade_install_packages || { echo "could not install the packages" >&2; exit 1; }
ade_build || { echo "the build failed" >&2; exit 1; }

work=$(mktemp -d /tmp/ade-fuzz.XXXXXX)
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

ade_start_mock "$work" || exit 1
ade_create_cluster "$work" 54331 ade_fuzz "fsync = off
synchronous_commit = off" || exit 1
export ADE_TEST_TMP=$work/tmp ADE_TEST_DB=ade_fuzz

minutes=${ADE_FUZZ_MINUTES:-30}
args=(--fuzz "$minutes")
[[ -n ${ADE_FUZZ_SEED:-} ]] && args+=(--seed "$ADE_FUZZ_SEED")
log "model-based test, random seeds, $minutes minutes"
"$PYTHON" test/model_test.py "${args[@]}" | tee "$work/model.out"
rc=${PIPESTATUS[0]}
read -r p1 f1 < <(tail -1 "$work/model.out" | sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\1 \2/p')
input_minutes=${ADE_INPUT_FUZZ_MINUTES:-10}
p2=0 f2=0
if [[ $input_minutes != 0 ]]; then
  iargs=(--minutes "$input_minutes")
  [[ -n ${ADE_FUZZ_SEED:-} ]] && iargs=(--seed "$ADE_FUZZ_SEED")
  log "input fuzz, random seeds, $input_minutes minutes"
  export ADE_SERVER_LOG=$work/log/server.log
  "$PYTHON" test/input_fuzz.py "${iargs[@]}" | tee "$work/input.out"
  rc2=${PIPESTATUS[0]}
  read -r p2 f2 < <(tail -1 "$work/input.out" | sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\1 \2/p')
  [[ $rc2 -ne 0 && ${f2:-0} -eq 0 ]] && f2=1
fi
stress_minutes=${ADE_STRESS_MINUTES:-10}
p3=0 f3=0
if [[ $stress_minutes != 0 ]]; then
  sargs=(--fuzz "$stress_minutes")
  [[ -n ${ADE_FUZZ_SEED:-} ]] && sargs=(--seed "$ADE_FUZZ_SEED" --seconds "$((stress_minutes * 60))")
  log "stress test (the application racing open runs), random seeds, $stress_minutes minutes"
  "$PYTHON" test/stress_open_run.py "${sargs[@]}" | tee "$work/stress.out"
  rc3=${PIPESTATUS[0]}
  read -r p3 f3 < <(tail -1 "$work/stress.out" | sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\1 \2/p')
  [[ $rc3 -ne 0 && ${f3:-0} -eq 0 ]] && f3=1
fi
[[ $rc -ne 0 && ${f1:-0} -eq 0 ]] && f1=1
echo "$(( ${p1:-0} + ${p2:-0} + ${p3:-0} )) passed, $(( ${f1:-0} + ${f2:-0} + ${f3:-0} )) failed"
[[ $(( ${f1:-0} + ${f2:-0} + ${f3:-0} )) -eq 0 ]]

