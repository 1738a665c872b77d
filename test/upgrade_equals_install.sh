#!/usr/bin/env bash
# test/upgrade_equals_install.sh OUTDIR: does a fresh CREATE EXTENSION ade
# give the same extension as CREATE EXTENSION ade VERSION '0.1' followed by
# ALTER EXTENSION ade UPDATE?
#
# Each path runs in a new database of a throwaway cluster of its own (initdb
# as the postgres user when root), so that roles, which are cluster-wide,
# are made by the path itself and compared too.  Writes OUTDIR/fresh.txt and
# OUTDIR/upgraded.txt (test/describe_extension.sql of each) and prints
# `diff -u` of the two: nothing when they are equal.  Exits 0 either way,
# 2 when the clusters could not be made.  Used by
# test/t/06_install_equals_upgrade.sql; by hand: test/upgrade_equals_install.sh /tmp/eq
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
. test/lib.sh
out=$1
mkdir -p "$out"
work=$(mktemp -d "${TMPDIR:-/tmp}/ade-eq.XXXXXX")
chmod 755 "$work"
clusters=()
cleanup() {
  local d
  for d in "${clusters[@]}"; do as_pg "$PGBIN/pg_ctl" -D "$d/data" -m immediate stop >/dev/null 2>&1; done
  rm -rf "$work"
}
trap cleanup EXIT

# describe NAME SQL...: a new cluster, a database, the SQL, the description
describe() {
  local name=$1 d=$work/$1 user sql
  shift
  mkdir -p "$d/data" "$d/sock"
  if [[ $(id -u) -eq 0 ]]; then chown postgres: "$d" "$d/data" "$d/sock"; user=postgres; else user=$(id -un); fi
  as_pg "$PGBIN/initdb" -D "$d/data" -U "$user" -A trust --no-sync -E UTF8 --locale=C.UTF-8 >"$d/initdb.log" 2>&1 ||
    { cat "$d/initdb.log" >&2; exit 2; }
  clusters+=("$d")
  as_pg "$PGBIN/pg_ctl" -D "$d/data" -l "$d/server.log" -w -t 60 \
    -o "-c listen_addresses='' -k $d/sock -p 5432 -c fsync=off" start >/dev/null ||
    { cat "$d/server.log" >&2; exit 2; }
  "$PGBIN/createdb" -h "$d/sock" -p 5432 -U "$user" ade || exit 2
  for sql in "$@"; do
    "$PGBIN/psql" -h "$d/sock" -p 5432 -U "$user" -d ade -XAtq -v ON_ERROR_STOP=1 \
      -c 'SET client_min_messages = warning' -c "$sql" >/dev/null || exit 2
  done
  "$PGBIN/psql" -h "$d/sock" -p 5432 -U "$user" -d ade -X -f test/describe_extension.sql >"$out/$name.txt" || exit 2
}

describe fresh 'CREATE EXTENSION ade'
describe upgraded "CREATE EXTENSION ade VERSION '0.1'" 'ALTER EXTENSION ade UPDATE'
diff -u "$out/fresh.txt" "$out/upgraded.txt"
exit 0
