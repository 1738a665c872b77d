#!/usr/bin/env bash
# test/schema_owner.sh: a database owner that is not a superuser runs
# nothing as anyone else through ade's schema, and ade works in a schema
# whose name needs quoting (issue 19, item 1).
#
# In PostgreSQL 15 the database owner owns schema public.  Against 0.4 it
# renamed public, made a public of its own with a function of the name a
# SECURITY DEFINER trigger calls, and became superuser when the application
# deleted a host; or it dropped public (ade with it) and made a procedure
# ade_sync_job() there for the pg_cron job's superuser to run.  Here, in
# databases of the harness's cluster:
#
# - ade_dbo (owned by a role that is not a superuser, ade in public): the
#   owner cannot rename public; after it drops public and makes a
#   public.ade_sync_job() of its own, the job's command (ade_job_command(),
#   run as the superuser pg_cron runs it as) runs nothing, and the owner is
#   no superuser;
# - ade_quoted (ade in schema "MDM Sync"): a token, a sync, a host deleted
#   and back, the job's command, ade_status, the schedule's cleanup
#   function, a rename refused.
#
# Prints one line per check, "ok NAME" or "not ok NAME: why"; used by
# test/t/94_schema_owner.sql.  Needs the harness's PG* environment,
# ADE_TEST_TMP and the mock (ade.abm_url of the cluster).
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
su=${PGUSER:-postgres}
p() {	# p DB ROLE psql-args...: as ROLE in DB
  local db=$1 role=$2
  shift 2
  PGOPTIONS="-c client_min_messages=warning" psql -U "$role" -d "$db" -XAtq -v ON_ERROR_STOP=1 "$@"
}
check() {	# check NAME ACTUAL EXPECTED
  if [[ "$2" == "$3" ]]; then echo "ok $1"; else echo "not ok $1: got '$2', wanted '$3'"; fi
}

p postgres "$su" -c 'SET client_min_messages = warning' \
  -c 'DROP DATABASE IF EXISTS ade_dbo' -c 'DROP DATABASE IF EXISTS ade_quoted' \
  -c 'DROP ROLE IF EXISTS ade_dbo' -c 'CREATE ROLE ade_dbo LOGIN' \
  -c 'CREATE DATABASE ade_dbo OWNER ade_dbo' -c 'CREATE DATABASE ade_quoted' >/dev/null ||
  { echo "not ok setup: databases"; exit 0; }

# 1. the database owner and schema public
p ade_dbo "$su" -c 'SET client_min_messages = warning' -c 'CREATE EXTENSION ade' >/dev/null ||
  { echo "not ok setup: CREATE EXTENSION ade in ade_dbo"; exit 0; }
check "in PostgreSQL 15 the database owner owns public (what the attack needs)" \
  "$(p ade_dbo ade_dbo -c "SELECT pg_has_role('ade_dbo', nspowner, 'USAGE') FROM pg_namespace WHERE nspname = 'public'")" t
out=$(p ade_dbo ade_dbo -c 'ALTER SCHEMA public RENAME TO ade_old' 2>&1)
check "the database owner cannot rename the schema ade is in" \
  "$(grep -c 'the schema of extension ade cannot be renamed' <<<"$out")" 1
out=$(p ade_dbo "$su" -c 'ALTER SCHEMA public RENAME TO ade_old' 2>&1)
check "nor can a superuser (every body names it)" "$(grep -c 'cannot be renamed' <<<"$out")" 1
check "public keeps its name" "$(p ade_dbo "$su" -c "SELECT extnamespace::regnamespace FROM pg_extension WHERE extname = 'ade'")" public
out=$(p ade_dbo ade_dbo -c 'ALTER SCHEMA public OWNER TO ade_dbo' 2>&1)
check "other changes of the schema still work" "$out" ""

cmd=$(p ade_dbo "$su" -c 'SELECT ade_job_command()')
p ade_dbo ade_dbo -c 'SET client_min_messages = warning' -c 'DROP SCHEMA public CASCADE' >/dev/null 2>&1
p ade_dbo ade_dbo -c 'CREATE SCHEMA IF NOT EXISTS public' \
  -c "CREATE PROCEDURE public.ade_sync_job() LANGUAGE plpgsql AS \$b\$BEGIN EXECUTE 'ALTER ROLE ade_dbo SUPERUSER'; END\$b\$" \
  -c 'GRANT USAGE ON SCHEMA public TO PUBLIC' >/dev/null 2>&1
check "the owner made its own public.ade_sync_job() after dropping public, ade with it" \
  "$(p ade_dbo "$su" -c "SELECT count(*) FROM pg_proc WHERE proname = 'ade_sync_job' AND pronamespace = 'public'::regnamespace AND proowner = 'ade_dbo'::regrole")" 1
p ade_dbo "$su" -c "$cmd" >/dev/null 2>&1
check "the job's command, run as its superuser, runs nothing of the owner's" \
  "$(p ade_dbo "$su" -c "SELECT rolsuper FROM pg_roles WHERE rolname = 'ade_dbo'")" f
check "(a job of 0.4, CALL public.ade_sync_job(), would have: its command names the procedure)" \
  "$(grep -c 'CALL public.ade_sync_job()' <<<"$cmd")" 1

# 2. a schema whose name needs quoting
if ! {
  p ade_quoted "$su" -c 'SET client_min_messages = warning' -c 'CREATE SCHEMA "MDM Sync"' \
    -c 'CREATE EXTENSION ade SCHEMA "MDM Sync"' \
    -c 'ALTER DATABASE ade_quoted SET search_path = "MDM Sync", public' >/dev/null &&
  ADE_TEST_DB=ade_quoted test/add-token.sh Quoted "CK_quoted_$$" &&
  /usr/bin/python3 test/mockctl.py devices "CK_quoted_$$" --generate 5 --prefix QS >/dev/null &&
  p ade_quoted "$su" -c "SELECT \"MDM Sync\".ade_set_profile('{\"profile_name\": \"q\", \"url\": \"https://mdm.example.org/enroll\"}')" >/dev/null
} 2>"$ADE_TEST_TMP/quoted.err"; then
  echo "not ok quoted schema: setup: $(tr '\n' ' ' <"$ADE_TEST_TMP/quoted.err" | cut -c1-300)"
  exit 0
fi
check "in a quoted schema, ade_sync() syncs" \
  "$(p ade_quoted "$su" -c 'SELECT count(*) FILTER (WHERE error IS NULL) FROM "MDM Sync".ade_sync()')" 1
check "and makes the hosts" "$(p ade_quoted "$su" -c "SELECT count(*) FROM \"MDM Sync\".hosts WHERE hardware_serial LIKE 'QS%'")" 5
p ade_quoted "$su" -c "DELETE FROM \"MDM Sync\".hosts WHERE hardware_serial = 'QS00000001'" >/dev/null
check "a live host deleted comes back (the triggers)" \
  "$(p ade_quoted "$su" -c "SELECT count(*) FROM \"MDM Sync\".hosts WHERE hardware_serial = 'QS00000001'")" 1
qcmd=$(p ade_quoted "$su" -c 'SELECT "MDM Sync".ade_job_command()')
check "the job's command quotes the schema" "$(grep -c 'CALL "MDM Sync".ade_sync_job()' <<<"$qcmd")" 1
/usr/bin/python3 test/mockctl.py devices "CK_quoted_$$" --generate 1 --start 50 --prefix QS >/dev/null
out=$(p ade_quoted "$su" -c "$qcmd" 2>&1)
check "and runs" "$out" ""
check "and syncs" "$(p ade_quoted "$su" -c "SELECT count(*) FROM \"MDM Sync\".hosts WHERE hardware_serial = 'QS00000050'")" 1
check "ade_status reads well" "$(p ade_quoted "$su" -c 'SELECT attention FROM "MDM Sync".ade_status')" ok
out=$(p ade_quoted "$su" -c 'ALTER SCHEMA "MDM Sync" RENAME TO other' 2>&1)
check "a quoted schema cannot be renamed either" "$(grep -c 'cannot be renamed' <<<"$out")" 1

p postgres "$su" -c 'DROP DATABASE ade_dbo' -c 'DROP DATABASE ade_quoted' -c 'DROP ROLE ade_dbo' >/dev/null 2>&1
exit 0
