#!/usr/bin/env bash
# test/add-token.sh ORG CONSUMER_KEY [more `mockctl.py token` flags]
#
# For tests: registers a token for organisation ORG at the mock ABM, encrypts
# it to the extension's own certificate (ade_public_key()) exactly as ABM
# does, and adds it with ade_add_token() in a session of its own.  Uses the
# PG* environment and ADE_TEST_TMP; prints nothing unless something fails.
set -euo pipefail
org=$1 ck=$2
shift 2
here=$(cd "$(dirname "$0")" && pwd)
d=${ADE_TEST_TMP:-$(mktemp -d)}
py=python3
# pg_regress unsets PGDATABASE: the harness exports ADE_TEST_DB
db=${ADE_TEST_DB:-${PGDATABASE:-}}
[[ -x /usr/bin/python3 ]] && py=/usr/bin/python3
psql -d "$db" -XAtq -v ON_ERROR_STOP=1 -c "SELECT ade_public_key()" >"$d/cert.pem"
"$py" "$here/mockctl.py" token --org "$org" --consumer-key "$ck" "$@" \
  --json "$d/$ck.json" --p7m "$d/$ck.p7m" --cert "$d/cert.pem"
echo "SELECT ade_add_token(decode(:'p7m', 'base64'))" |
  psql -d "$db" -XAtq -v ON_ERROR_STOP=1 -v p7m="$(base64 -w0 "$d/$ck.p7m")" >"$d/$ck.out" 2>&1 ||
  { cat "$d/$ck.out" >&2; exit 1; }
