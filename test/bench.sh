#!/usr/bin/env bash
# test/bench.sh: `make bench`, the sync measured against its floor.
#
# On a throwaway cluster and the mock ABM (loopback), every figure measured
# in the same run, printed as a table and written to bench-results.txt:
#
#  1. initial fetch of N devices (pages of 1000): seconds, devices/s, the
#     mock's own serving time, and the ratio to the floor: the same pages,
#     already fetched as text, loaded by one set-based SQL statement per page
#     into tables shaped like hosts and host_dep_assignments;
#  2. incremental sync of 1% changes (modified, added, deleted), and its floor;
#  3. no-op sync: median and p99 ms of 200 ade_sync() calls (pgbench), and
#     HTTP requests per call;
#  4. profile assignment of the N devices: requests and seconds;
#  5. the host-delete trigger: 10,000 hosts with live assignments deleted in
#     one statement, against 10,000 hosts without one;
#  6. the backend's peak private memory (RssAnon, sampled) during the fetch
#     of N and of 10*N (shared buffers are not the backend's own).
#
#  7. many tokens (database "many"), the mock at 150 ms +- 20 ms per request:
#     a no-op run of ADE_BENCH_TOKENS (300) tokens, side by side
#     (ade.max_concurrent_requests = 32) and one at a time (= 1);
#  8. a first fetch of 20 tokens x 5,000 devices, side by side and one at a
#     time (20 other tokens of the same size), against its floors: one such
#     token fetched alone (with the latency), and measure 1 (N devices by
#     one token, no latency).
#
# ADE_BENCH_N (default 100000) sets N; ADE_BENCH_BIG=0 skips the 10*N fetch;
# ADE_BENCH_MANY=0 skips 7 and 8.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
. test/lib.sh

N=${ADE_BENCH_N:-100000}
BIG=${ADE_BENCH_BIG:-1}
MANY=${ADE_BENCH_MANY:-1}
TOKENS=${ADE_BENCH_TOKENS:-300}
dir=/tmp/ade-bench
out=$top/bench-results.txt

ade_install_packages
ade_build
rm -rf "$dir"
mkdir -p "$dir/tmp"
chmod 777 "$dir/tmp"
mock_pid=
cleanup() {
  ade_stop_cluster "$dir"
  [[ -n $mock_pid ]] && kill "$mock_pid" 2>/dev/null
  return 0
}
trap cleanup EXIT
ade_start_mock "$dir"
ade_create_cluster "$dir" 54349 bench "max_wal_size = '4GB'
checkpoint_timeout = '30min'"
export ADE_TEST_TMP=$dir/tmp ADE_TEST_DB=bench
psql -qX -c 'CREATE EXTENSION ade'

q() { PGOPTIONS='-c client_min_messages=warning' psql -XAtq -v ON_ERROR_STOP=1 "$@"; }
serve() { "$PYTHON" test/mockctl.py stats | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["serve_seconds"])'; }
count() { "$PYTHON" test/mockctl.py logcount "$1"; }

# one fetch of n devices by a new token, in a new backend, its private memory
# (RssAnon: shared buffers excluded) sampled every 20 ms from outside;
# prints "seconds serve_seconds peak_private_kB"
fetch() {
  local ck=$1 n=$2 s0 t pid peak=0 kb
  test/add-token.sh "Bench $ck" "$ck"
  "$PYTHON" test/mockctl.py devices "$ck" --generate "$n" --prefix "${ck#CK_}" --families Mac,iPhone,iPad
  s0=$(serve)
  PGAPPNAME=ade_bench_fetch q >"$dir/tmp/fetch.out" <<EOF &
SET ade.max_sync_seconds = '1d';
SELECT clock_timestamp() AS t0 \gset
SELECT count(*) FROM ade_sync((SELECT id FROM abm_tokens WHERE consumer_key = '$ck')) \g /dev/null
SELECT round(extract(epoch FROM clock_timestamp() - :'t0')::numeric, 3);
EOF
  local job=$!
  pid=
  while [[ -z $pid ]] && kill -0 "$job" 2>/dev/null; do
    pid=$(q -c "SELECT pid FROM pg_stat_activity WHERE application_name = 'ade_bench_fetch'")
  done
  while kill -0 "$job" 2>/dev/null; do
    kb=$(awk '/^RssAnon:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    [[ -n $kb && $kb -gt $peak ]] && peak=$kb
    sleep 0.02
  done
  wait "$job"
  t=$(cat "$dir/tmp/fetch.out")
  echo "$t $(echo "$(serve) - $s0" | bc -l | xargs printf '%.3f') $peak"
}

log "1. initial fetch of $N devices"
read -r f_sec f_serve f_peak < <(fetch CK_main "$N")

log "   floor: the same pages, one statement each"
"$PYTHON" test/bench_data.py pages CK_main --out "$dir/tmp/fetch.pages"
floor_sql() {
  q <<EOF
CREATE TABLE IF NOT EXISTS floor_hosts (id bigserial PRIMARY KEY, hardware_serial text NOT NULL UNIQUE,
  hardware_model text, platform text NOT NULL, created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS floor_asg (host_id bigint PRIMARY KEY, hardware_serial text NOT NULL UNIQUE,
  abm_token_id bigint NOT NULL, added_at timestamptz NOT NULL DEFAULT now(), deleted_at timestamptz,
  device jsonb, op_date timestamptz, updated_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS floor_pages (kind text, n serial, body text);
CREATE OR REPLACE FUNCTION floor_page(p jsonb) RETURNS void LANGUAGE sql AS \$\$
  WITH r AS (
    SELECT e.rec, e.rec->>'serial_number' AS serial, coalesce(e.rec->>'op_type', 'added') AS op,
           (e.rec->>'op_date')::timestamptz AS op_date
      FROM jsonb_array_elements(p) e(rec)
  ), h AS (
    INSERT INTO floor_hosts AS h (hardware_serial, hardware_model, platform)
    SELECT serial, rec->>'model', CASE rec->>'device_family' WHEN 'iPhone' THEN 'ios' WHEN 'iPod' THEN 'ios'
           WHEN 'iPad' THEN 'ipados' WHEN 'AppleTV' THEN 'tvos' WHEN 'Vision' THEN 'visionos' ELSE 'darwin' END
      FROM r WHERE op <> 'deleted'
    ON CONFLICT (hardware_serial) DO UPDATE SET hardware_model = excluded.hardware_model,
       platform = excluded.platform, updated_at = now()
    RETURNING h.id, h.hardware_serial
  ), a AS (
    INSERT INTO floor_asg AS d (host_id, hardware_serial, abm_token_id, device, op_date)
    SELECT h.id, r.serial, 1, r.rec, r.op_date FROM r JOIN h ON h.hardware_serial = r.serial
    ON CONFLICT (hardware_serial) DO UPDATE SET deleted_at = NULL, device = excluded.device,
       op_date = excluded.op_date, updated_at = now()
  )
  UPDATE floor_asg d SET deleted_at = now(), updated_at = now()
    FROM r WHERE r.op = 'deleted' AND d.hardware_serial = r.serial AND d.deleted_at IS NULL
\$\$;
EOF
}
floor_run() {
  local kind=$1 file=$2
  q -c "\\copy floor_pages (body) FROM '$file' WITH (FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02')"
  q -c "UPDATE floor_pages SET kind = '$kind' WHERE kind IS NULL"
  q <<EOF
SELECT clock_timestamp() AS t0 \gset
SELECT count(floor_page(body::jsonb)) FROM (SELECT body FROM floor_pages WHERE kind = '$kind' ORDER BY n) p \g /dev/null
SELECT round(extract(epoch FROM clock_timestamp() - :'t0')::numeric, 3);
EOF
}
floor_sql
fl_sec=$(floor_run fetch "$dir/tmp/fetch.pages")

log "2. incremental sync of 1% changes"
changes=$("$PYTHON" test/bench_data.py changes CK_main --percent 1 --out "$dir/tmp/changes.pages")
s0=$(serve)
i_sec=$(q <<EOF
SELECT clock_timestamp() AS t0 \gset
SELECT count(*) FROM ade_sync((SELECT id FROM abm_tokens WHERE consumer_key = 'CK_main')) \g /dev/null
SELECT round(extract(epoch FROM clock_timestamp() - :'t0')::numeric, 3);
EOF
)
i_serve=$(echo "$(serve) - $s0" | bc -l | xargs printf '%.3f')
fi_sec=$(floor_run changes "$dir/tmp/changes.pages")

log "3. no-op sync, 200 calls"
"$PYTHON" test/mockctl.py log-clear
echo "SELECT count(*) FROM ade_sync();" >"$dir/tmp/noop.sql"
(cd "$dir/tmp" && "$PGBIN/pgbench" -n -f noop.sql -t 200 -c 1 --log --log-prefix=noop >/dev/null 2>&1)
read -r n_med n_p99 < <(cat "$dir"/tmp/noop.* | awk '{print $3/1000}' | sort -n |
  awk '{a[NR]=$1} END {printf "%.2f %.2f\n", a[int((NR+1)/2)], a[int(NR*0.99+0.5)]}')
n_tokens=$(q -c "SELECT count(*) FROM abm_tokens")
n_req=$(echo "scale=2; $("$PYTHON" test/mockctl.py log | "$PYTHON" -c 'import json,sys; print(len(json.load(sys.stdin)["requests"]))') / 200" | bc)

log "4. profile assignment of $N devices"
"$PYTHON" test/mockctl.py log-clear
a_sec=$(q <<EOF
SET ade.enroll_url = 'https://mdm.example.com/enroll';
SET ade.max_sync_seconds = '1d';
SELECT clock_timestamp() AS t0 \gset
SELECT count(*) FROM ade_sync((SELECT id FROM abm_tokens WHERE consumer_key = 'CK_main')) \g /dev/null
SELECT round(extract(epoch FROM clock_timestamp() - :'t0')::numeric, 3);
EOF
)
a_put=$(count 'PUT /profile/devices')
a_post=$(count 'POST /profile')

log "5. host-delete trigger, 10,000 hosts"
read -r t_live t_plain < <(q <<'EOF'
INSERT INTO hosts (hardware_serial, platform) SELECT 'PLAIN' || g, 'darwin' FROM generate_series(1, 10000) g;
SELECT clock_timestamp() AS t0 \gset
DELETE FROM hosts WHERE id IN (SELECT host_id FROM host_dep_assignments WHERE deleted_at IS NULL ORDER BY host_id LIMIT 10000);
SELECT clock_timestamp() AS t1 \gset
DELETE FROM hosts WHERE hardware_serial LIKE 'PLAIN%';
SELECT round(extract(epoch FROM :'t1'::timestamptz - :'t0')::numeric * 1000, 1) || ' ' ||
       round(extract(epoch FROM clock_timestamp() - :'t1')::numeric * 1000, 1);
EOF
)

if [[ $BIG -eq 1 ]]; then
  log "6. peak memory: fetch of $((10 * N)) devices"
  read -r b_sec b_serve b_peak < <(fetch CK_big $((10 * N)))
else
  b_sec=- b_serve=- b_peak=-
fi

# one run of ade_sync() over the tokens of database "many" with
# ade.max_concurrent_requests = $1, its wall seconds
many_run() {
  PGDATABASE=many q <<EOF
SET ade.max_sync_seconds = '1d';
SET ade.max_concurrent_requests = $1;
SELECT clock_timestamp() AS t0 \gset
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT round(extract(epoch FROM clock_timestamp() - :'t0')::numeric, 3);
EOF
}
if [[ $MANY -eq 1 ]]; then
  log "7. $TOKENS tokens, nothing changed, 150 ms per request"
  q -c "CREATE DATABASE many"
  PGDATABASE=many q -c "CREATE EXTENSION ade"
  for i in $(seq 1 "$TOKENS"); do ADE_TEST_DB=many test/add-token.sh "Many $i" "CK_m$i"; done
  many_run 32 >/dev/null   # the first fetch (empty), then sync mode
  many_run 32 >/dev/null
  "$PYTHON" test/mockctl.py latency 150 --jitter 20 >/dev/null
  m_runs=()
  "$PYTHON" test/mockctl.py log-clear
  for r in 1 2 3; do m_runs+=("$(many_run 32)"); done
  m_req=$(echo "scale=2; $("$PYTHON" test/mockctl.py log | "$PYTHON" -c 'import json,sys; print(len(json.load(sys.stdin)["requests"]))') / (3 * $TOKENS)" | bc)
  m_par=$(printf '%s\n' "${m_runs[@]}" | sort -n | sed -n 2p)
  m_one=$(many_run 1)

  log "8. first fetch of 20 tokens x 5,000 devices, 150 ms per request"
  # in a database of their own, so that only they take part
  "$PYTHON" test/mockctl.py latency 0 >/dev/null
  twenty() {
    local db=$1 from=$2 to=$3 conc=$4 i
    q -c "CREATE DATABASE $db"
    PGDATABASE=$db q -c "CREATE EXTENSION ade"
    for i in $(seq "$from" "$to"); do
      ADE_TEST_DB=$db test/add-token.sh "Twenty $i" "CK_t$i"
      "$PYTHON" test/mockctl.py devices "CK_t$i" --generate 5000 --prefix "T${i}x" --families Mac,iPhone,iPad >/dev/null
    done
    "$PYTHON" test/mockctl.py latency 150 --jitter 20 >/dev/null
    PGDATABASE=$db q <<EOF
SET ade.max_sync_seconds = '1d';
SET ade.max_concurrent_requests = $conc;
SELECT clock_timestamp() AS t0 \gset
SELECT count(*) FROM ade_sync() \g /dev/null
SELECT round(extract(epoch FROM clock_timestamp() - :'t0')::numeric, 3);
EOF
    "$PYTHON" test/mockctl.py latency 0 >/dev/null
  }
  t_alone=$(twenty alone 0 0 32)
  t_par=$(twenty side 1 20 32)
  t_one=$(twenty one 21 40 1)
fi

ratio() { echo "scale=2; $1 / $2" | bc; }
{
  echo "ade benchmark, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, PostgreSQL $(q -c 'SHOW server_version'), N = $N"
  echo
  printf '%-44s %s\n' "measure" "result"
  printf '%-44s %s\n' "--------------------------------------------" "------------------------------------------"
  printf '%-44s %s s, %s devices/s (mock serving: %s s)\n' "1. initial fetch of $N devices" "$f_sec" "$(echo "$N / $f_sec" | bc)" "$f_serve"
  printf '%-44s %s s; ratio %s (excluding the mock: %s)\n' "   floor (same pages, one statement each)" "$fl_sec" "$(ratio "$f_sec" "$fl_sec")" "$(ratio "$(echo "$f_sec - $f_serve" | bc)" "$fl_sec")"
  printf '%-44s %s s for %s changes (mock serving: %s s)\n' "2. incremental sync, 1% changed" "$i_sec" "$changes" "$i_serve"
  printf '%-44s %s s; ratio %s\n' "   floor" "$fi_sec" "$(ratio "$i_sec" "$fi_sec")"
  printf '%-44s median %s ms, p99 %s ms, %s HTTP requests per call (%s tokens)\n' "3. no-op sync, 200 calls" "$n_med" "$n_p99" "$n_req" "$n_tokens"
  printf '%-44s %s s, %s PUT /profile/devices, %s POST /profile\n' "4. profile assignment of $N devices" "$a_sec" "$a_put" "$a_post"
  printf '%-44s %s ms vs %s ms without assignments; ratio %s\n' "5. DELETE of 10,000 hosts (trigger)" "$t_live" "$t_plain" "$(ratio "$t_live" "$t_plain")"
  printf '%-44s %s kB for %s devices, %s kB for %s (that fetch: %s s)\n' "6. backend peak private memory in the fetch" "$f_peak" "$N" "$b_peak" "$((10 * N))" "$b_sec"
  if [[ $MANY -eq 1 ]]; then
    printf '%-44s %s s side by side (runs: %s), target <= 3 s; one at a time %s s; %s requests per token\n' \
      "7. no-op run of $TOKENS tokens, 150 ms RTT" "$m_par" "${m_runs[*]}" "$m_one" "$m_req"
    floor=$(echo "if ($t_alone > $f_sec) $t_alone else $f_sec" | bc)
    printf '%-44s %s s side by side; one at a time %s s; floors: one token alone %s s, %s devices without latency %s s; ratio %s (target <= 1.2)\n' \
      "8. first fetch, 20 tokens x 5,000, 150 ms RTT" "$t_par" "$t_one" "$t_alone" "$N" "$f_sec" "$(ratio "$t_par" "$floor")"
  fi
} | tee "$out"
echo
echo "written to $out"
