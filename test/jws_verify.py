#!/usr/bin/python3
"""jws_verify.py - verify an ES256 compact JWS with the openssl command line.

Test tool of the `ade` PostgreSQL extension (test/t/28_api_assertion.sql):
it checks the client assertion src/apijwt.c makes without any of ade's code.
Python 3 standard library and the openssl command only.

    jws_verify.py JWS PUBLIC_KEY.pem

Prints `Verified OK` when the signature of JWS verifies with the public key
(openssl dgst -sha256 -verify), else what is wrong, and exits non-zero.

A JWS's ES256 signature is the raw 64 bytes r || s (RFC 7518 3.4); openssl
wants the DER ECDSA-Sig-Value, SEQUENCE { INTEGER r, INTEGER s }, with each
INTEGER minimal (leading zero bytes dropped, one zero byte added when the
top bit is set): converted here.  Temporary files go under $ADE_TEST_TMP
when it is set.
"""
import base64
import os
import re
import subprocess
import sys
import tempfile


def b64url(part):
    """base64url without padding, strictly (RFC 7515 2)"""
    if not re.fullmatch(r"[A-Za-z0-9_-]*", part) or len(part) % 4 == 1:
        raise ValueError("not base64url without padding: %r" % part[:20])
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def der_length(n):
    return bytes([n]) if n < 0x80 else bytes([0x81, n])


def der_integer(raw):
    raw = raw.lstrip(b"\0") or b"\0"
    if raw[0] & 0x80:
        raw = b"\0" + raw
    return b"\x02" + der_length(len(raw)) + raw


def raw_to_der(sig):
    body = der_integer(sig[:32]) + der_integer(sig[32:])
    return b"\x30" + der_length(len(body)) + body


def main():
    if len(sys.argv) != 3:
        print("usage: jws_verify.py JWS PUBLIC_KEY.pem", file=sys.stderr)
        return 2
    jws, pub = sys.argv[1], sys.argv[2]
    parts = jws.split(".")
    if len(parts) != 3:
        print("not a compact JWS: %d parts" % len(parts))
        return 1
    try:
        sig = b64url(parts[2])
        b64url(parts[0])
        b64url(parts[1])
    except ValueError as e:
        print(e)
        return 1
    if len(sig) != 64:
        print("the signature is %d bytes, not 64 (r || s)" % len(sig))
        return 1
    with tempfile.TemporaryDirectory(dir=os.environ.get("ADE_TEST_TMP") or None) as d:
        data = os.path.join(d, "input")
        der = os.path.join(d, "sig.der")
        with open(data, "wb") as f:
            f.write((parts[0] + "." + parts[1]).encode("ascii"))
        with open(der, "wb") as f:
            f.write(raw_to_der(sig))
        r = subprocess.run(["openssl", "dgst", "-sha256", "-verify", pub, "-signature", der, data],
                           capture_output=True, text=True)
    out = (r.stdout.strip() or r.stderr.strip()).splitlines()
    print(out[0] if out else "openssl said nothing (exit %d)" % r.returncode)
    return 0 if r.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
