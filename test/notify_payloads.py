#!/usr/bin/python3
"""notify_payloads.py FILE - what psql printed of NOTIFY ade_hosts (lines
'Asynchronous notification "ade_hosts" with payload "..." received ...'),
summed up as JSON for test/t/75_admin.sql: notifications, max_bytes,
events {event: hosts}, ids (all host ids), serials {event: [serials]},
moved_token."""
import json
import re
import sys

pat = re.compile(r'^Asynchronous notification "ade_hosts" with payload "(.*)" received from server process with PID \d+\.$')
n, max_bytes, events, ids, serials, moved_token = 0, 0, {}, [], {}, None
for line in open(sys.argv[1], encoding="utf-8"):
    m = pat.match(line.rstrip("\n"))
    if not m:
        continue
    raw = m.group(1)
    n += 1
    max_bytes = max(max_bytes, len(raw.encode()))
    p = json.loads(raw)
    ev = p["event"]
    if isinstance(p["hosts"], int):     # a full fetch: {"event": "fetched", "token_id", "hosts": n}
        events[ev] = events.get(ev, 0) + p["hosts"]
        continue
    for h in p["hosts"]:
        events[ev] = events.get(ev, 0) + 1
        ids.append(h["id"])
        serials.setdefault(ev, []).append(h["serial"])
        if ev == "moved":
            moved_token = h["token_id"]
for v in serials.values():
    v.sort()
print(json.dumps({"notifications": n, "max_bytes": max_bytes, "events": events, "ids": ids,
                  "serials": serials, "moved_token": moved_token}))
