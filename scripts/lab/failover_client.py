#!/usr/bin/env python3
"""The K3s HA guide's client, for failover tests: while a backend dies and
comes back, it keeps LONG HTTP/1.1 connections to the VIP open (a request on
each every 100 ms, like kubectl watches) and opens a NEW connection every
EVERY seconds (one request each, like kubectl calls).

usage: failover_client.py VIP PORT SECONDS [--long N] [--every S] [--timeout S]

Prints one JSON document when done: every new connection as
[start (Unix time), backend or null, error or null], and per long connection
its backend, answers, the backends that answered, and its errors as
[time, error]. A long connection stops at its first error. Bounded: SECONDS
(at most 120), a timeout per request (default 3 s: past one lost SYN, whose
retransmission comes after 1 s)."""
import http.client
import json
import sys
import threading
import time

vip, port, secs = sys.argv[1], int(sys.argv[2]), min(float(sys.argv[3]), 120.0)
opts = sys.argv[4:]
n_long = int(opts[opts.index("--long") + 1]) if "--long" in opts else 6
every = float(opts[opts.index("--every") + 1]) if "--every" in opts else 0.05
timeout = float(opts[opts.index("--timeout") + 1]) if "--timeout" in opts else 3.0
end = time.time() + secs


def ask(conn):
    conn.request("GET", "/")
    return conn.getresponse().read().decode().strip()


def hold(slot):
    """One long-lived connection: a request every 100 ms until the end."""
    try:
        conn = http.client.HTTPConnection(vip, port, timeout=timeout)
        slot["backend"] = ask(conn)
        slot["answers"] = 1
        slot["seen"] = [slot["backend"]]
    except OSError as e:
        slot["errors"].append([time.time(), repr(e)])
        return
    finally:
        ready.release()
    while time.time() < end:
        time.sleep(0.1)
        try:
            who = ask(conn)
        except (OSError, http.client.HTTPException) as e:
            slot["errors"].append([time.time(), repr(e)])
            return
        slot["answers"] += 1
        if who not in slot["seen"]:
            slot["seen"].append(who)
    conn.close()


ready = threading.Semaphore(0)
slots = [{"backend": None, "answers": 0, "seen": [], "errors": []} for _ in range(n_long)]
threads = [threading.Thread(target=hold, args=(s,), daemon=True) for s in slots]
for t in threads:
    t.start()
for _ in threads:
    ready.acquire(timeout=5)
# Tell whoever waits on stderr that the long connections are up.
print("ready", file=sys.stderr, flush=True)

new = []
next_at = time.time()
while time.time() < end:
    started = time.time()
    try:
        conn = http.client.HTTPConnection(vip, port, timeout=timeout)
        who = ask(conn)
        conn.close()
        new.append([started, who, None])
    except (OSError, http.client.HTTPException) as e:
        new.append([started, None, repr(e)])
    next_at += every
    time.sleep(max(0.0, next_at - time.time()))

for t in threads:
    t.join(timeout=2)
print(json.dumps({"new": new, "long": slots}))
