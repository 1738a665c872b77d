#!/usr/bin/env bash
# test/ca_narrowing.sh: is ade.ca_file, when set, the only trust anchor?
# In a mount namespace of its own (unshare -m, root only), the system's
# certificate store (/etc/ssl/certs, libcurl's default CA file and CA path)
# is replaced by one that trusts CA B only; a local https mock ABM has a
# certificate signed by CA B.  Then: ade.ca_file = CA B is accepted, no
# ade.ca_file (the system store) is accepted, and ade.ca_file = CA A must be
# refused, though the system store would trust the server.  Nothing outside
# the namespace changes.  Prints "b=<ok|refused> default=<ok|refused>
# a=<ok|refused>", or "skip: <why>".  Used by test/t/95_keys_and_trust.sql.
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
if [[ ${ADE_IN_NS:-} != 1 ]]; then
  [[ $(id -u) -eq 0 ]] || { echo "skip: needs root (a mount namespace)"; exit 0; }
  [[ -d /etc/ssl/certs ]] || { echo "skip: no /etc/ssl/certs"; exit 0; }
  unshare -m true 2>/dev/null || { echo "skip: no mount namespace here"; exit 0; }
  ADE_IN_NS=1 exec unshare -m --propagation private "$0" "$@"
fi
. test/lib.sh
work=$(mktemp -d "${TMPDIR:-/tmp}/ade-ca.XXXXXX")
chmod 755 "$work"
mkdir -p "$work/tmp" "$work/store"
chmod 777 "$work/tmp"
port=${ADE_CA_PORT:-54345}
mock=
cleanup() {
  ade_stop_cluster "$work/c"
  [[ -n $mock ]] && kill "$mock" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
for ca in a b; do
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=ade-test-ca-$ca" -keyout "ca_$ca.key" -out "ca_$ca.pem" 2>/dev/null
done
openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout tls.key -out tls.csr 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\n' >tls.ext
openssl x509 -req -in tls.csr -CA ca_b.pem -CAkey ca_b.key -CAcreateserial -days 2 -extfile tls.ext -out tls.pem 2>/dev/null
cp ca_b.pem store/ca-certificates.crt
cp ca_b.pem "store/$(openssl x509 -hash -noout -in ca_b.pem).0"
chmod 644 ca_a.pem ca_b.pem store/*
cd "$top"
# the system store, for this namespace only
mount --bind "$work/store" /etc/ssl/certs || { echo "skip: cannot mount over /etc/ssl/certs"; exit 0; }

setsid "$PYTHON" test/mock_abm.py --port 0 --port-file "$work/tls.port" --tls-cert "$work/tls.pem" \
  --tls-key "$work/tls.key" --quiet >/dev/null 2>&1 </dev/null &
mock=$!
"$PYTHON" test/mockctl.py wait-port "$work/tls.port" --https --timeout 15 >/dev/null || { echo "skip: no TLS mock"; exit 0; }
url="https://127.0.0.1:$(cat "$work/tls.port")"
ADE_MOCK_URL=$url ade_bare_cluster "$work/c" "$port" || { echo "skip: no cluster"; exit 0; }
user=postgres; [[ $(id -u) -ne 0 ]] && user=$(id -un)
q() { "$PGBIN/psql" -h "$work/c/sock" -p "$port" -U "$user" -d ade -XAtq -v ON_ERROR_STOP=1 "$@"; }
q -c 'SET client_min_messages = warning' -c 'CREATE EXTENSION ade' >/dev/null || exit 1
q -c 'SELECT ade_public_key()' >"$work/cert.pem" || exit 1
"$PYTHON" test/mockctl.py --url "$url" token --org 'CA Org' --consumer-key CK_ca \
  --json "$work/tmp/ca.json" --p7m "$work/tmp/ca.p7m" --cert "$work/cert.pem" >/dev/null || exit 1

# try SETTING: one call to the https mock under that ade.ca_file
try() {
  if q -c "$1" -c "$2" >/dev/null 2>"$work/err"; then echo ok; else echo refused; fi
}
b=$(try "SET ade.ca_file = '$work/ca_b.pem'" \
        "SELECT ade_add_token(decode('$(base64 -w0 "$work/tmp/ca.p7m")', 'base64'))")
default=$(try "RESET ade.ca_file" "SELECT ade_refresh_account(id) FROM abm_tokens")
a=$(try "SET ade.ca_file = '$work/ca_a.pem'" "SELECT ade_refresh_account(id) FROM abm_tokens")
echo "b=$b default=$default a=$a"
