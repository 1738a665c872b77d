#!/usr/bin/python3
"""bench_data.py - data for `make bench` (test/bench.sh), from the mock ABM.

    bench_data.py pages CK --limit 1000 --out FILE
        The devices the mock holds for CK, sorted by serial, as the pages of a
        full fetch: one JSON array of device records per line.  The floor of
        the benchmark loads these with one SQL statement per page.

    bench_data.py changes CK --percent 1 --out FILE
        Changes percent% of CK's devices at the mock (0.4% modified, 0.3%
        added, 0.3% deleted, in a fixed pseudo-random choice) and writes the
        same changes as the pages of a sync (records with op_type and
        op_date, 1000 a line), for the floor of the incremental sync.

The mock's URL comes from ADE_MOCK_URL, as for mockctl.py.
"""

import argparse
import json
import os
import random
import sys
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mockctl  # noqa: E402


def state(base, ck):
    return mockctl.request(base, "GET", "/_mock/state?" + urllib.parse.urlencode({"consumer_key": ck}))


def write_pages(records, limit, out):
    with open(out, "w") as f:
        for i in range(0, len(records), limit):
            f.write(json.dumps(records[i:i + limit], separators=(",", ":")) + "\n")


def cmd_pages(a, base):
    devices = state(base, a.ck)["devices"]
    write_pages([devices[s] for s in sorted(devices)], a.limit, a.out)


def cmd_changes(a, base):
    devices = state(base, a.ck)["devices"]
    serials = sorted(devices)
    rnd = random.Random(42)
    n = max(1, len(serials) * a.percent // 100)
    n_mod, n_add = n * 4 // 10, n * 3 // 10
    n_del = n - n_mod - n_add
    picked = rnd.sample(serials, n_mod + n_del)
    mods, dels = picked[:n_mod], picked[n_mod:]
    modify = [{"serial_number": s, "asset_tag": "bench-%d" % i, "color": "blue"} for i, s in enumerate(mods)]
    mockctl.request(base, "POST", "/_mock/devices", {
        "consumer_key": a.ck, "modify": modify, "delete": dels,
        "generate": {"count": n_add, "prefix": "BN", "families": ["Mac", "iPhone", "iPad"]}})
    after = state(base, a.ck)["devices"]
    when = "2026-11-29T00:00:00Z"
    recs = [dict(after[s], op_type="modified", op_date=when) for s in mods]
    recs += [dict(after[s], op_type="added", op_date=when) for s in sorted(after) if s.startswith("BN")]
    recs += [{"serial_number": s, "op_type": "deleted", "op_date": when} for s in dels]
    write_pages(recs, a.limit, a.out)
    print(len(recs))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default=os.environ.get("ADE_MOCK_URL"))
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("pages", "changes"):
        s = sub.add_parser(name)
        s.add_argument("ck")
        s.add_argument("--limit", type=int, default=1000)
        s.add_argument("--percent", type=int, default=1)
        s.add_argument("--out", required=True)
    a = p.parse_args()
    if not a.url:
        sys.exit("bench_data: set ADE_MOCK_URL or pass --url")
    {"pages": cmd_pages, "changes": cmd_changes}[a.cmd](a, a.url)


if __name__ == "__main__":
    main()
