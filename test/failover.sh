#!/usr/bin/env bash
# test/failover.sh: the primary dies in the middle of a sync, a standby
# takes over, nothing is lost (issue 23), on pg_auto_failover.
#
# A monitor and two nodes on loopback ports, as the postgres user, each
# with ade and pg_cron preloaded as the README says; the formation is
# built first and ade installed after (the natural order).  On the
# primary: a first sync of a few thousand devices, a key rotation, the
# sync scheduled every minute (Debian's pg_cron 1.4 takes no seconds); devices
# added, modified and deleted at the mock; the primary killed hard while a
# scheduled sync, its first page committed, waits for ABM for its second;
# the monitor promotes the standby; the
# scheduled sync runs there by itself; then hosts and assignments equal
# ABM's devices, no serial twice, every secret opens, no run is stuck; the
# old primary rejoins as a standby, where ade_status and hosts read and
# ade_sync() refuses.  Needs the mock ABM (ADE_MOCK_URL) and pg_autoctl
# (Debian postgresql-15-auto-failover).  Prints one line of key=value
# (down= the seconds from the kill to the first successful run on the new
# primary); "skip: <why>" when it cannot run here.
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
. test/lib.sh
[[ ${ADE_MOCK_URL:-} == http://127.0.0.1:* ]] || { echo "skip: no mock ABM (ADE_MOCK_URL)"; exit 0; }
command -v pg_autoctl >/dev/null || { echo "skip: no pg_autoctl (postgresql-15-auto-failover)"; exit 0; }
work=$(mktemp -d "${TMPDIR:-/tmp}/ade-failover.XXXXXX")
chmod 755 "$work"
mkdir -p "$work/sock" "$work/tmp"; chmod 777 "$work/tmp"
[[ $(id -u) -eq 0 ]] && chown postgres: "$work" "$work/sock"
user=postgres; [[ $(id -u) -ne 0 ]] && user=$(id -un)
base=${ADE_FAILOVER_PORT:-54371}
mport=$base; port1=$((base + 1)); port2=$((base + 2))
MON="postgres://autoctl_node@127.0.0.1:$mport/pg_auto_failover?sslmode=disable"
pids=()
# pg_autoctl with its own configuration, none of the test harness's PG* settings
autoenv=(env -u PGHOST -u PGPORT -u PGUSER -u PGDATABASE -u PGDATA XDG_CONFIG_HOME="$work/config"
         XDG_DATA_HOME="$work/share" PATH="$PGBIN:/usr/bin:/bin" HOME="$work")
auto() { as_pg "${autoenv[@]}" pg_autoctl "$@"; }
runas=(); [[ $(id -u) -eq 0 ]] && runas=(runuser -u postgres --)
run_node() {  # run_node DIR: pg_autoctl run, in the background, a process group of its own
  setsid bash -c 'exec "$@"' _ "${runas[@]}" "${autoenv[@]}" pg_autoctl run --pgdata "$1" \
    >>"$1.run.log" 2>&1 < /dev/null &
  echo $! >"$1.pgid"
  pids+=($!)
}
kill_node() {  # kill_node DIR: its pg_autoctl and the postgres it runs, hard
  [[ -f $1.pgid ]] && kill -9 -- "-$(cat "$1.pgid")" 2>/dev/null
  as_pg "$PGBIN/pg_ctl" -D "$1" -m immediate stop >/dev/null 2>&1
  rm -f "$1.pgid"
}
cleanup() {
  local d
  for d in "$work/n1" "$work/n2" "$work/mon"; do kill_node "$d"; done
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
  pkill -9 -f "pg_autoctl.*$work" 2>/dev/null
  [[ ${ADE_KEEP:-0} -eq 1 ]] || rm -rf "$work"
}
trap cleanup EXIT
q() { local port=$1; shift; "$PGBIN/psql" -h 127.0.0.1 -p "$port" -U "$user" -d ade -XAtq "$@"; }
monq() { "$PGBIN/psql" -h 127.0.0.1 -p "$mport" -U autoctl_node -d pg_auto_failover -XAtq -c "$1"; }
wait_for() {  # wait_for SECONDS CMD...: true once CMD succeeds
  local end=$((SECONDS + $1)); shift
  while ((SECONDS < end)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  return 1
}
state_is() { [[ $(monq "SELECT reportedstate FROM pgautofailover.node WHERE nodename = '$1'") == "$2" ]]; }
conf() {  # conf DIR: ade and pg_cron preloaded, as the README says; small memory
  cat >>"$1/postgresql.conf" <<EOF
shared_preload_libraries = 'pg_stat_statements,pg_cron,ade'
cron.database_name = 'ade'
cron.use_background_workers = on
max_worker_processes = 20
shared_buffers = '64MB'
unix_socket_directories = '$work/sock'
ade.abm_url = '$ADE_MOCK_URL'
ade.max_sync_seconds = 20
ade.replicate_key = on
EOF
}

# ---- the formation first: monitor, primary, secondary
auto create monitor --pgdata "$work/mon" --pgport "$mport" --hostname 127.0.0.1 --listen 127.0.0.1 --auth trust --no-ssl \
  >"$work/mon.create.log" 2>&1 || { echo "skip: no monitor: $(tail -1 "$work/mon.create.log")"; exit 0; }
echo "shared_buffers = '64MB'" >>"$work/mon/postgresql.conf"
run_node "$work/mon"
wait_for 60 monq "SELECT 1" || { echo "skip: the monitor did not start"; exit 0; }
auto create postgres --pgdata "$work/n1" --pgport "$port1" --hostname 127.0.0.1 --listen 127.0.0.1 --name node1 \
  --dbname ade --monitor "$MON" --auth trust --no-ssl >"$work/n1.create.log" 2>&1 ||
  { echo "skip: no node1: $(tail -1 "$work/n1.create.log")"; exit 0; }
conf "$work/n1"
run_node "$work/n1"
wait_for 90 state_is node1 single || { echo "skip: node1 never single"; exit 0; }
auto create postgres --pgdata "$work/n2" --pgport "$port2" --hostname 127.0.0.1 --listen 127.0.0.1 --name node2 \
  --dbname ade --monitor "$MON" --auth trust --no-ssl >"$work/n2.create.log" 2>&1 ||
  { echo "skip: no node2: $(tail -1 "$work/n2.create.log")"; exit 0; }
run_node "$work/n2"
wait_for 120 state_is node2 secondary || { echo "skip: node2 never secondary"; exit 0; }
wait_for 60 state_is node1 primary || { echo "skip: node1 never primary"; exit 0; }

# ---- ade installed after, on the primary
q "$port1" -c 'CREATE EXTENSION IF NOT EXISTS pg_cron' -c 'CREATE EXTENSION ade' >/dev/null || exit 1
PGHOST=127.0.0.1 PGPORT=$port1 PGUSER=$user ADE_TEST_DB=ade ADE_TEST_TMP=$work/tmp \
  test/add-token.sh 'Failover Org' CK_failover || exit 1
python3 test/mockctl.py devices CK_failover --generate 3000 --prefix F >/dev/null
q "$port1" -c 'SET client_min_messages = warning' -c 'SELECT count(*) FROM ade_sync()' >/dev/null || exit 1
q "$port1" -c 'SELECT count(*) FROM ade_sync()' >/dev/null
q "$port1" -c 'SELECT ade_rotate_secret_key()' >/dev/null || exit 1

# ---- ABM changes (29 events: pages of 10 from now on); the first scheduled
# sync applies its first page, commits it, and is held at ABM for the
# second; the primary dies.  Scheduled after the changes and the hold, so
# that no run can take the changes before the one that dies.
q "$port1" -c 'ALTER DATABASE ade SET ade.page_size = 10' >/dev/null || exit 1
printf '%s' '[{"serial_number": "F00000005", "color": "RED"}, {"serial_number": "F00000006", "color": "BLUE"}]' >"$work/tmp/mod.json"
python3 test/mockctl.py devices CK_failover --generate 25 --prefix G --modify-json "$work/tmp/mod.json" \
  --delete F00000001,F00000002 >/dev/null
python3 test/mockctl.py fault '{"path": "/devices/sync", "hold": "dying", "skip": 1, "times": 1}' >/dev/null
q "$port1" -c "SELECT ade_schedule()" >/dev/null || exit 1
held() { python3 test/mockctl.py call GET /_mock/held | grep -q '"dying": 1'; }
wait_for 90 held || { echo "skip: no scheduled sync reached ABM"; exit 0; }
# the dying run committed its first page (and no more) before it was killed
paged=$(q "$port1" -c "SELECT count(*) FROM hosts WHERE hardware_serial LIKE 'G%'")
kill_node "$work/n1"
killed=$SECONDS
python3 test/mockctl.py call POST /_mock/release '{"name": "dying"}' >/dev/null

# ---- the monitor promotes node2; the scheduled sync runs there by itself
primary2() { [[ $(q "$port2" -c 'SELECT pg_is_in_recovery()') == f ]]; }
wait_for 120 primary2 && promoted=ok || promoted=error
promoted_after=$((SECONDS - killed))
ran() {  # a run without error finished on node2 since the kill
  [[ $(q "$port2" -c "SELECT count(*) FROM ade_sync_runs WHERE error IS NULL AND finished_at > now() - make_interval(secs => $((SECONDS - killed)))") -gt 0 ]]
}
wait_for 180 ran && synced=ok || synced=error
down=$((SECONDS - killed))
# let a run apply what ABM changed, then compare
sleep 5
equal=error
truth=$(python3 test/mockctl.py truth)
have=$(q "$port2" -c "SELECT coalesce(jsonb_object_agg(d.hardware_serial, t.consumer_key), '{}') FROM host_dep_assignments d JOIN abm_tokens t ON t.id = d.abm_token_id WHERE d.deleted_at IS NULL")
python3 -c '
import json, sys
want = {k: v for k, v in json.loads(sys.argv[1]).items() if v == "CK_failover"}
have = json.loads(sys.argv[2])
missing = sorted(set(want.items()) - set(have.items()))
extra = sorted(set(have.items()) - set(want.items()))
if missing or extra:
    print("assignments differ from ABM: missing %r, extra %r" % (missing[:10], extra[:10]), file=sys.stderr)
    sys.exit(1)' "$truth" "$have" && equal=ok
twice=$(q "$port2" -c "SELECT count(*) FROM (SELECT hardware_serial FROM hosts GROUP BY 1 HAVING count(*) > 1) x")
secrets=error
[[ $(q "$port2" -c "SELECT 'ok' FROM abm_tokens t, ade_refresh_account(t.id)" 2>&1) == ok ]] && secrets=ok
stuck=$(q "$port2" -c "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%ade_sync%' AND state = 'active' AND now() - query_start > interval '60 s'")

# ---- the old primary rejoins as a standby, with the new primary's key
run_node "$work/n1"
wait_for 180 state_is node1 secondary && rejoined=ok || rejoined=error
as_pg cmp -s "$work/n1/ade_kek.key" "$work/n2/ade_kek.key" || rejoined=other_key
reads=error
[[ -n $(q "$port1" -c "SELECT attention FROM ade_status" 2>/dev/null) && \
   $(q "$port1" -c "SELECT count(*) FROM hosts" 2>/dev/null) -gt 0 ]] && reads=ok
standby_sync=$(q "$port1" -c "SELECT count(*) FROM ade_sync()" 2>&1)
[[ $standby_sync == *"this server is a standby"* ]] && standby_sync=refused || standby_sync=error
echo "paged=$paged promoted=$promoted synced=$synced equal=$equal twice=$twice secrets=$secrets stuck=$stuck rejoined=$rejoined reads=$reads standby_sync=$standby_sync down=${down}s promoted_after=${promoted_after}s"
