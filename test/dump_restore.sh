#!/usr/bin/env bash
# test/dump_restore.sh: does a dump made under each released version of ade
# restore where the current one is installed, with pg_restore -1, and sync
# there?  (issue 18, item 3)
#
# For each version (0.1 ... and the current one): a database with that
# version installed, a token of its own at the mock ABM with 30 devices,
# a profile, two syncs; pg_dump -Fc; a new database, pg_restore -1 (which
# creates the current version: pg_dump does not record the version); then
# there: the version, the hosts, a sync that works (the token's secrets
# open) and applies 5 more devices.  Then a scheduled database restored where
# pg_cron is not installed, whose DROP EXTENSION must work (item 4).
#
# Prints one line per check, "ok NAME" or "not ok NAME: why"; used by
# test/t/07_dump_restore.sql.  Needs ADE_MOCK_URL (the harness's mock).
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
. test/lib.sh
work=$(mktemp -d "${TMPDIR:-/tmp}/ade-dump.XXXXXX")
chmod 755 "$work"
port=${ADE_DUMP_PORT:-54363}
cleanup() { ade_stop_cluster "$work/c"; rm -rf "$work"; }
trap cleanup EXIT

current=$(sed -n "s/^default_version *= *'\(.*\)'/\1/p" ade.control)
versions="0.1 0.2 0.3 0.4"
[[ $current != 0.4 ]] && versions="$versions $current"

mkdir -p "$work/c"
ade_bare_cluster "$work/c" "$port" \
  "-c shared_preload_libraries=pg_cron,ade -c cron.database_name=cronsrc -c cron.use_background_workers=on -c max_worker_processes=20" \
  >/dev/null || { echo "not ok cluster: could not start"; exit 0; }
user=postgres; [[ $(id -u) -eq 0 ]] || user=$(id -un)
p() { local db=$1; shift; "$PGBIN/psql" -h "$work/c/sock" -p "$port" -U "$user" -d "$db" -XAtq -v ON_ERROR_STOP=1 "$@"; }
dbs() { "$PGBIN/$1" -h "$work/c/sock" -p "$port" -U "$user" "${@:2}"; }

check() {	# check NAME ACTUAL EXPECTED
  if [[ "$2" == "$3" ]]; then echo "ok $1"; else echo "not ok $1: got '$2', wanted '$3'"; fi
}

for v in $versions; do
  src=src_${v//./_} dst=dst_${v//./_} ck=CK_dump_${v//./_}_$$
  dbs createdb "$src" && dbs createdb "$dst" || { echo "not ok $v: createdb"; continue; }
  if ! {
    p "$src" -c 'SET client_min_messages = warning' -c "CREATE EXTENSION ade VERSION '$v'" &&
    p "$src" -c 'SELECT ade_public_key()' >"$work/cert_$v.pem" &&
    "$PYTHON" test/mockctl.py token --org "Dump $v" --consumer-key "$ck" \
      --json "$work/$ck.json" --p7m "$work/$ck.p7m" --cert "$work/cert_$v.pem" >/dev/null &&
    "$PYTHON" test/mockctl.py devices "$ck" --generate 30 --prefix "D${v//./}x" >/dev/null &&
    echo "SELECT ade_add_token(decode(:'p7m', 'base64'))" | p "$src" -v p7m="$(base64 -w0 "$work/$ck.p7m")" >/dev/null &&
    p "$src" -c 'SET client_min_messages = warning' \
      -c "SELECT ade_set_profile('{\"profile_name\": \"dump\", \"url\": \"https://mdm.example.org/enroll\"}')" \
      -c 'SELECT count(*) FROM ade_sync()' -c 'SELECT count(*) FROM ade_sync()' >/dev/null
  } 2>"$work/src_$v.err"; then
    echo "not ok $v: the source database: $(tr '\n' ' ' <"$work/src_$v.err" | cut -c1-300)"
    continue
  fi
  dbs pg_dump -Fc -f "$work/$v.dump" "$src" 2>"$work/dump_$v.err" ||
    { echo "not ok $v: pg_dump: $(head -c 300 "$work/dump_$v.err")"; continue; }
  if dbs pg_restore -1 -d "$dst" "$work/$v.dump" 2>"$work/restore_$v.err"; then
    echo "ok $v restores with pg_restore -1"
  else
    echo "not ok $v restores with pg_restore -1: $(grep -m2 ERROR "$work/restore_$v.err" | tr '\n' ' ' | cut -c1-400)"
    continue
  fi
  check "$v restored as the current version" "$(p "$dst" -c "SELECT extversion FROM pg_extension WHERE extname = 'ade'")" "$current"
  check "$v restored every host" "$(p "$dst" -c "SELECT count(*) FROM hosts WHERE hardware_serial LIKE 'D${v//./}x%'")" 30
  "$PYTHON" test/mockctl.py devices "$ck" --generate 5 --start 100 --prefix "D${v//./}x" >/dev/null
  "$PYTHON" test/mockctl.py log-clear >/dev/null
  check "$v syncs after the restore" \
    "$(p "$dst" -c 'SET client_min_messages = error' -c 'SELECT coalesce(error, $$none$$) FROM ade_sync()' 2>&1)" none
  check "$v applies new devices after the restore" "$(p "$dst" -c "SELECT count(*) FROM hosts WHERE hardware_serial LIKE 'D${v//./}x%'")" 35
  check "$v: after the restore only the new devices are sent a profile" \
    "$("$PYTHON" test/mockctl.py sent | "$PYTHON" -c 'import json,sys; print(len(json.load(sys.stdin)))')" 5
done

# item 4: a scheduled database, restored where pg_cron is not installed
if p postgres -c 'CREATE DATABASE cronsrc' >/dev/null 2>&1 && dbs createdb nocron; then
  p cronsrc -c 'SET client_min_messages = warning' -c 'CREATE EXTENSION pg_cron' -c 'CREATE EXTENSION ade' \
    -c 'SELECT ade_schedule()' >/dev/null 2>"$work/cron.err"
  dbs pg_dump -Fc -f "$work/cron.dump" cronsrc 2>>"$work/cron.err"
  # pg_cron's own objects cannot be made where it is not preloaded for that
  # database: the restore goes on past them, as an admin's would
  dbs pg_restore -d nocron "$work/cron.dump" >/dev/null 2>&1
  check "a scheduled database restored where pg_cron is absent has ade" \
    "$(p nocron -c "SELECT count(*) FROM pg_extension WHERE extname = 'ade'")" 1
  if out=$(p nocron -c 'DROP EXTENSION ade CASCADE' 2>&1); then
    echo "ok a scheduled database restored where pg_cron is absent can drop the extension"
  else
    echo "not ok a scheduled database restored where pg_cron is absent can drop the extension: $out"
  fi
else
  echo "not ok the pg_cron databases could not be made"
fi
exit 0
