#!/usr/bin/env bash
# test/standby.sh: does a standby have every key, after a rotation too?
# A primary with the extension, a standby made from it with pg_basebackup
# right away (before any secret), then on the primary a token (synced, so a
# session is stored) and ade_rotate_secret_key() (a new data key, in the
# database only), replayed, and the standby promoted: the promoted server must open every secret (the account is
# read, a sync runs) with nothing copied by hand.  Needs the mock ABM
# (ADE_MOCK_URL).  Prints "refresh=<ok|error> sync=<ok|error>"; "skip:
# <why>" when the clusters could not be made.  Used by
# test/t/95_keys_and_trust.sql.
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
. test/lib.sh
# never the default abm_url (Apple's): only the loopback mock
[[ ${ADE_MOCK_URL:-} == http://127.0.0.1:* ]] || { echo "skip: no mock ABM (ADE_MOCK_URL)"; exit 0; }
work=$(mktemp -d "${TMPDIR:-/tmp}/ade-standby.XXXXXX")
chmod 755 "$work"
mkdir -p "$work/tmp"; chmod 777 "$work/tmp"
pport=${ADE_STANDBY_PORT:-54341}
sport=$((pport + 1))
cleanup() {
  ade_stop_cluster "$work/s"
  ade_stop_cluster "$work/p"
  rm -rf "$work"
}
trap cleanup EXIT
user=postgres; [[ $(id -u) -ne 0 ]] && user=$(id -un)
ade_bare_cluster "$work/p" "$pport" || { echo "skip: no primary"; exit 0; }
p() { "$PGBIN/psql" -h "$work/p/sock" -p "$pport" -U "$user" -d ade -XAtq -v ON_ERROR_STOP=1 "$@"; }
s() { "$PGBIN/psql" -h "$work/s/sock" -p "$sport" -U "$user" -d ade -XAtq "$@"; }
p -c 'SET client_min_messages = warning' -c 'CREATE EXTENSION ade' >/dev/null || exit 1

# the standby, made right after the install, before any secret (the
# key-encryption key file is made by CREATE EXTENSION, and comes with the
# base backup)
mkdir -p "$work/s/sock"
[[ $(id -u) -eq 0 ]] && chown postgres: "$work/s" "$work/s/sock"
as_pg "$PGBIN/pg_basebackup" -h "$work/p/sock" -p "$pport" -U "$user" -D "$work/s/data" -R -X stream -c fast \
  >"$work/basebackup.log" 2>&1 || { echo "skip: pg_basebackup failed: $(tail -1 "$work/basebackup.log")"; exit 0; }
as_pg "$PGBIN/pg_ctl" -D "$work/s/data" -l "$work/s/server.log" -w -t 60 \
  -o "-c listen_addresses='' -k $work/s/sock -p $sport -c ade.abm_url=$ADE_MOCK_URL" start >/dev/null ||
  { echo "skip: the standby did not start"; exit 0; }

# a token, synced (a session stored), then a rotation, all on the primary
# and replayed on the standby; then promotion
PGHOST=$work/p/sock PGPORT=$pport PGUSER=$user ADE_TEST_DB=ade ADE_TEST_TMP=$work/tmp \
  test/add-token.sh 'Standby Org' CK_standby || exit 1
p -c 'SET client_min_messages = warning' -c 'SELECT count(*) FROM ade_sync()' >/dev/null || exit 1
p -c 'SELECT ade_rotate_secret_key()' >/dev/null || exit 1
lsn=$(p -c 'SELECT pg_current_wal_lsn()')
for _ in $(seq 1 200); do
  [[ $(s -c "SELECT pg_last_wal_replay_lsn() >= '$lsn'::pg_lsn") == t ]] && break
  sleep 0.05
done
ade_stop_cluster "$work/p"
as_pg "$PGBIN/pg_ctl" -D "$work/s/data" -w -t 60 promote >/dev/null || { echo "skip: no promotion"; exit 0; }

refresh=$(s -c "SELECT 'ok' FROM abm_tokens t, ade_refresh_account(t.id)" 2>&1)
sync=$(s -c "SELECT coalesce(error, 'ok') FROM ade_sync()" 2>&1)
[[ $refresh == ok ]] || { echo "refresh: $refresh" >&2; refresh=error; }
[[ $sync == ok ]] || { echo "sync: $sync" >&2; sync=error; }
echo "refresh=$refresh sync=$sync"
