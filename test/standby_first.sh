#!/usr/bin/env bash
# test/standby_first.sh: a standby made BEFORE the extension (issue 23) gets
# the key-encryption key with nothing copied by hand.  A primary and a
# standby (pg_basebackup) with ade preloaded on both, as the README says,
# and no extension yet; then on the primary CREATE EXTENSION, a token
# (synced) and a rotation.  The standby must then have ade_kek.key, the
# same as the primary's (replayed from the WAL: kekwal.c), answer
# ade_status (a hot standby reads) and refuse ade_sync() and the device
# calls saying it is a standby (nothing sent to ABM); a standby that lost the file, or has
# another one, gets the primary's from its next run; promoted, it opens every secret.  Needs the mock ABM
# (ADE_MOCK_URL).  A standby without pg_cron preloaded, or without the key
# file, says so in its own ade_status.attention; what a crashed process
# left of a key file is removed as the key is replayed.
# Prints "kek=.. node=.. status=.. missing=.. standby_sync=.. standby_call=.. relog=..
# refresh=.. sync=.."; "skip: <why>" when the clusters could not be made.
# Used by test/t/95_keys_and_trust.sql.
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
. test/lib.sh
# never the default abm_url (Apple's): only the loopback mock
[[ ${ADE_MOCK_URL:-} == http://127.0.0.1:* ]] || { echo "skip: no mock ABM (ADE_MOCK_URL)"; exit 0; }
work=$(mktemp -d "${TMPDIR:-/tmp}/ade-standby1.XXXXXX")
chmod 755 "$work"
mkdir -p "$work/tmp"; chmod 777 "$work/tmp"
pport=${ADE_STANDBY_PORT:-54343}
sport=$((pport + 1))
cleanup() {
  ade_stop_cluster "$work/s"
  ade_stop_cluster "$work/p"
  rm -rf "$work"
}
trap cleanup EXIT
user=postgres; [[ $(id -u) -ne 0 ]] && user=$(id -un)
ade_bare_cluster "$work/p" "$pport" -c shared_preload_libraries=pg_cron,ade -c cron.database_name=ade \
  -c ade.replicate_key=on || { echo "skip: no primary"; exit 0; }
p() { "$PGBIN/psql" -h "$work/p/sock" -p "$pport" -U "$user" -d ade -XAtq -v ON_ERROR_STOP=1 "$@"; }
s() { "$PGBIN/psql" -h "$work/s/sock" -p "$sport" -U "$user" -d ade -XAtq "$@"; }
caught_up() {
  local lsn
  lsn=$(p -c 'SELECT pg_current_wal_lsn()')
  for _ in $(seq 1 200); do
    [[ $(s -c "SELECT pg_last_wal_replay_lsn() >= '$lsn'::pg_lsn") == t ]] && return 0
    sleep 0.05
  done
  return 1
}

# the standby first, before the extension exists anywhere
mkdir -p "$work/s/sock"
[[ $(id -u) -eq 0 ]] && chown postgres: "$work/s" "$work/s/sock"
as_pg "$PGBIN/pg_basebackup" -h "$work/p/sock" -p "$pport" -U "$user" -D "$work/s/data" -R -X stream -c fast \
  >"$work/basebackup.log" 2>&1 || { echo "skip: pg_basebackup failed: $(tail -1 "$work/basebackup.log")"; exit 0; }
start_standby() {  # start_standby PRELOAD
  as_pg "$PGBIN/pg_ctl" -D "$work/s/data" -l "$work/s/server.log" -w -t 60 \
    -o "-c listen_addresses='' -k $work/s/sock -p $sport -c shared_preload_libraries=$1 -c cron.database_name=ade -c ade.replicate_key=on -c ade.abm_url=$ADE_MOCK_URL" \
    start >/dev/null
}
# first without pg_cron: its ade_status must say so, before a failover needs it
start_standby ade || { echo "skip: the standby did not start"; exit 0; }

p -c 'SET client_min_messages = warning' -c 'CREATE EXTENSION pg_cron' -c 'CREATE EXTENSION ade' >/dev/null || exit 1
PGHOST=$work/p/sock PGPORT=$pport PGUSER=$user ADE_TEST_DB=ade ADE_TEST_TMP=$work/tmp \
  test/add-token.sh 'Standby Org' CK_standby1 || exit 1
p -c 'SET client_min_messages = warning' -c 'SELECT count(*) FROM ade_sync()' >/dev/null || exit 1
p -c 'SELECT ade_rotate_secret_key()' >/dev/null || exit 1
caught_up || { echo "skip: the standby did not catch up"; exit 0; }
node=$(s -c "SELECT attention FROM ade_status" 2>&1)
[[ $node == "pg_cron is not in shared_preload_libraries on this server"* ]] && node=said || echo "node: $node" >&2
as_pg "$PGBIN/pg_ctl" -D "$work/s/data" -w -t 60 stop >/dev/null
start_standby pg_cron,ade || { echo "skip: the standby did not start again"; exit 0; }
caught_up || { echo "skip: the standby did not catch up"; exit 0; }

kek=error
as_pg cmp -s "$work/p/data/ade_kek.key" "$work/s/data/ade_kek.key" && kek=ok
status=$(s -c "SELECT attention FROM ade_status" 2>&1)
[[ $status == ok || $status == "no sync for 10 minutes"* || $status == "never synced"* ]] && status=ok || echo "status: $status" >&2
standby_sync=$(s -c "SELECT count(*) FROM ade_sync()" 2>&1)
[[ $standby_sync == *"this server is a standby"* ]] && standby_sync=refused || echo "standby ade_sync: $standby_sync" >&2
standby_call=$(s -c "SELECT count(*) FROM ade_release_devices(ARRAY(SELECT hardware_serial FROM hosts LIMIT 1), confirm => true)" 2>&1)
[[ $standby_call == *"this server is a standby"* ]] && standby_call=refused || echo "standby release: $standby_call" >&2
# every other function that would ask ABM refuses before it sends anything
sent=$(python3 test/mockctl.py logcount "GET /account")
standby_ask=$(s -c "SELECT ade_refresh_account(id) FROM abm_tokens" 2>&1)
[[ $standby_ask == *"this server is a standby"* &&
   $(PGHOST=$work/s/sock PGPORT=$sport PGUSER=$user ADE_TEST_DB=ade ADE_TEST_TMP=$work/tmp \
       test/add-token.sh 'Standby Org 2' CK_standby2 2>&1) == *"this server is a standby"* &&
   $(python3 test/mockctl.py logcount "GET /account") == "$sent" ]] && standby_ask=refused ||
  echo "standby refresh/add: $standby_ask" >&2

# the standby loses the file: the primary's next run logs it again, also in a
# backend (a pool's) whose first run was with ade.replicate_key off
as_pg rm -f "$work/s/data/ade_kek.key"
# and a temporary file a crashed process left (4194305: above any pid_max) goes
as_pg sh -c "head -c 32 /dev/urandom > '$work/s/data/ade_kek.key.tmp.4194305'"
missing=$(s -c "SELECT attention FROM ade_status" 2>&1)
[[ $missing == *"missing from this standby's data directory"* ]] && missing=said || echo "missing: $missing" >&2
p -c 'SET client_min_messages = warning' -c 'SET ade.replicate_key = off' -c 'SELECT count(*) FROM ade_sync()' \
  -c 'SET ade.replicate_key = on' -c 'SELECT count(*) FROM ade_sync()' >/dev/null || exit 1
caught_up
relog=error
as_pg cmp -s "$work/p/data/ade_kek.key" "$work/s/data/ade_kek.key" &&
  ! as_pg test -e "$work/s/data/ade_kek.key.tmp.4194305" && relog=ok

# the standby has another key (put there by hand, say): the primary's next run replaces it
as_pg sh -c "head -c 32 /dev/urandom > '$work/s/data/ade_kek.key'"
p -c 'SET client_min_messages = warning' -c 'SELECT count(*) FROM ade_sync()' >/dev/null || exit 1
caught_up
replace=error
as_pg cmp -s "$work/p/data/ade_kek.key" "$work/s/data/ade_kek.key" && replace=ok
# a damaged one (10 bytes), and a link to nowhere (a volume not mounted):
# replaced, and the standby keeps running (no PANIC)
as_pg sh -c "head -c 10 /dev/urandom > '$work/s/data/ade_kek.key'"
p -c 'SET client_min_messages = warning' -c 'SELECT count(*) FROM ade_sync()' >/dev/null || exit 1
caught_up
as_pg cmp -s "$work/p/data/ade_kek.key" "$work/s/data/ade_kek.key" || replace=damaged_kept
as_pg rm -f "$work/s/data/ade_kek.key"
as_pg ln -s "$work/nowhere/ade_kek.key" "$work/s/data/ade_kek.key"
p -c 'SET client_min_messages = warning' -c 'SELECT count(*) FROM ade_sync()' >/dev/null || exit 1
caught_up || replace=standby_stopped
as_pg cmp -s "$work/p/data/ade_kek.key" "$work/s/data/ade_kek.key" && as_pg test ! -L "$work/s/data/ade_kek.key" ||
  replace=link_kept

# the primary loses its file while its data keys need it: the update that
# would make a new one refuses, and a new one made for another database's
# first install never replaces the standby's (the copy to restore)
as_pg cp -p "$work/p/data/ade_kek.key" "$work/tmp/kek.saved"
as_pg rm -f "$work/p/data/ade_kek.key"
lost=$(p -c 'SELECT ade_vault_init()' 2>&1)
[[ $lost == *"ade_kek.key is missing"* ]] && ! as_pg test -e "$work/p/data/ade_kek.key" && lost=refused ||
  echo "update without the key: $lost" >&2
"$PGBIN/createdb" -h "$work/p/sock" -p "$pport" -U "$user" ade2
"$PGBIN/psql" -h "$work/p/sock" -p "$pport" -U "$user" -d ade2 -XAtq -c 'SET client_min_messages = warning' -c 'CREATE EXTENSION ade' >/dev/null || exit 1
caught_up
as_pg cmp -s "$work/tmp/kek.saved" "$work/s/data/ade_kek.key" || lost=standby_replaced
# nor does the primary's next run, whose data key does not open with the new
# key, nor another database's install (which finds the new key)
p -c 'SET client_min_messages = warning' -c 'SELECT count(*) FROM ade_sync()' >/dev/null 2>&1
"$PGBIN/createdb" -h "$work/p/sock" -p "$pport" -U "$user" ade3
"$PGBIN/psql" -h "$work/p/sock" -p "$pport" -U "$user" -d ade3 -XAtq -c 'SET client_min_messages = warning' -c 'CREATE EXTENSION ade' >/dev/null
caught_up
as_pg cmp -s "$work/tmp/kek.saved" "$work/s/data/ade_kek.key" || lost=replaced_after_a_run
as_pg cp -p "$work/tmp/kek.saved" "$work/p/data/ade_kek.key"

# a reinstall (the extension dropped, the key file removed, the extension
# created again): the primary's new key is unproven and the standby keeps
# its own, until a token added seals a data key with the new one, which the
# standby then takes (promoted, it must open that token)
p -c 'SET client_min_messages = warning' -c 'SET ade.allow_drop = on' -c 'DROP EXTENSION ade CASCADE' >/dev/null || exit 1
as_pg rm -f "$work/p/data/ade_kek.key"
p -c 'SET client_min_messages = warning' -c 'CREATE EXTENSION ade' >/dev/null || exit 1
caught_up
reinstall=error
as_pg cmp -s "$work/tmp/kek.saved" "$work/s/data/ade_kek.key" && reinstall=kept_until_proven
PGHOST=$work/p/sock PGPORT=$pport PGUSER=$user ADE_TEST_DB=ade ADE_TEST_TMP=$work/tmp \
  test/add-token.sh 'Standby Org' CK_standby1 || exit 1
caught_up
[[ $reinstall == kept_until_proven ]] && as_pg cmp -s "$work/p/data/ade_kek.key" "$work/s/data/ade_kek.key" && reinstall=ok

ade_stop_cluster "$work/p"
# (the standby ran until here: one that stopped fails the test, never skips it)
as_pg "$PGBIN/pg_ctl" -D "$work/s/data" -w -t 60 promote >/dev/null || echo "the standby was not promoted" >&2
refresh=$(s -c "SELECT 'ok' FROM abm_tokens t, ade_refresh_account(t.id)" 2>&1)
sync=$(s -c 'SET client_min_messages = warning' -c "SELECT coalesce(error, 'ok') FROM ade_sync()" 2>&1)
[[ $refresh == ok ]] || { echo "refresh: $refresh" >&2; refresh=error; }
[[ $sync == ok ]] || { echo "sync: $sync" >&2; sync=error; }

# crash recovery on a primary never puts an old key back over one copied in
# since (a restore from pg_dump, say): the promoted server's runs log its key,
# another file is put in place, the server crashes before a checkpoint
s -c 'SET client_min_messages = warning' -c 'SELECT count(*) FROM ade_sync()' >/dev/null
as_pg sh -c "head -c 32 /dev/urandom > '$work/tmp/kek.copied'"
as_pg cp "$work/tmp/kek.copied" "$work/s/data/ade_kek.key"
as_pg "$PGBIN/pg_ctl" -D "$work/s/data" -m immediate stop >/dev/null 2>&1
start_standby pg_cron,ade && crash=kept || crash=not_started
[[ $crash == kept ]] && ! as_pg cmp -s "$work/tmp/kek.copied" "$work/s/data/ade_kek.key" && crash=replaced
echo "kek=$kek node=$node status=$status missing=$missing standby_sync=$standby_sync standby_call=$standby_call standby_ask=$standby_ask relog=$relog replace=$replace lost=$lost reinstall=$reinstall refresh=$refresh sync=$sync crash=$crash"
