#!/usr/bin/env bash
# test/demo.sh: the main job in one command (`make demo`), from nothing.
#
# Installs what is missing, builds, starts a local cluster with pg_cron in
# ADE_DEMO_DIR (default /tmp/ade-demo), starts the mock ABM holding a sample
# organisation of a few thousand Macs, iPhones and iPads, makes a token for
# the extension's own key (as ABM would) and adds it, schedules the sync
# every minute, runs it once, and prints the tokens, the hosts by platform
# and the last runs.  The cluster and the mock keep running; the last lines
# print the connection string and the stop command (`make demo-stop`).
#
#   test/demo.sh          set up (again, from scratch) and run
#   test/demo.sh stop     stop the cluster and the mock
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
. test/lib.sh

dir=${ADE_DEMO_DIR:-/tmp/ade-demo}
port=${ADE_DEMO_PORT:-54339}
devices=${ADE_DEMO_DEVICES:-3000}

stop() {
  [[ -d $dir/data ]] && ade_stop_cluster "$dir"
  [[ -f $dir/mock.pid ]] && { kill "$(cat "$dir/mock.pid")" 2>/dev/null || true; }
  rm -f "$dir/mock.pid"
  return 0
}

if [[ ${1:-} == stop ]]; then
  stop
  echo "stopped the demo cluster and mock in $dir"
  exit 0
fi

ade_install_packages
ade_build

log "starting afresh in $dir"
stop
rm -rf "$dir"
mkdir -p "$dir/tmp" "$dir/abm"
ade_start_mock "$dir"
# the README's names: database mdm (cron.database_name), org 'Example School'
ade_create_cluster "$dir" "$port" mdm
psql -qX -c 'CREATE EXTENSION ade'

log "ABM: a sample organisation with $devices devices"
"$PYTHON" test/mockctl.py token --org 'Example School' --consumer-key CK_demo \
  --admin-id it@example.edu --server-name 'Example MDM' --json "$dir/abm/Example_Token.json" >/dev/null
"$PYTHON" test/mockctl.py devices CK_demo --generate "$devices" --families Mac,iPhone,iPad,Mac,iPad,AppleTV
log "the token: ABM encrypts it to ade_public_key(); ade_add_token() takes the file"
psql -XAtq -c 'SELECT ade_public_key()' >"$dir/tmp/cert.pem"
"$PYTHON" test/mockctl.py p7m --cert "$dir/tmp/cert.pem" --json "$dir/abm/Example_Token.json" --out "$dir/abm/Example_Token.p7m"
chmod 755 "$dir/abm"; chmod 644 "$dir/abm/Example_Token.p7m"
echo "SELECT ade_add_token(decode(:'p7m', 'base64')) AS token_id" |
  psql -qX -v p7m="$(base64 -w0 "$dir/abm/Example_Token.p7m")"

log "scheduling the sync every minute (pg_cron) and running it once now"
psql -qX -c 'SELECT ade_schedule() AS cron_job_id'
psql -qX -c '\timing on' -c 'SELECT * FROM ade_sync()'

log "tokens"
psql -qX -c 'SELECT token_id, org_name, mode, last_sync_at::timestamp(0), days_until_expiry, devices_live, devices_deleted, pending, attention FROM ade_status'
log "hosts by platform"
psql -qX -c 'SELECT platform, count(*) AS hosts FROM hosts GROUP BY 1 ORDER BY 1'
log "last runs"
psql -qX -c 'SELECT id, token_id, mode, pages, added, modified, deleted, round(duration_ms) AS ms, error FROM ade_sync_runs ORDER BY id DESC LIMIT 5'

cat <<EOF

The cluster and the mock ABM keep running; pg_cron runs CALL ade_sync_job() every minute.
  connect:  psql "host=$dir/sock port=$port dbname=mdm user=$PGUSER"
  mock ABM: $ADE_MOCK_URL (python3 test/mockctl.py --url $ADE_MOCK_URL devices CK_demo --generate 10 --start $devices)
  token:    $dir/abm/Example_Token.p7m (the file ade_add_token() took; its JSON: Example_Token.json beside it)
  stop:     make demo-stop
EOF
