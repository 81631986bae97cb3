#!/usr/bin/env python3
"""The K3s HA guide's client, for failover tests: while a backend dies and
comes back, it keeps LONG HTTP/1.1 connections to the VIP open (a request on
each every 100 ms, like kubectl watches) and opens a NEW connection every
EVERY seconds (one request each, like kubectl calls).

usage: failover_client.py VIP PORT SECONDS [--long N] [--every S] [--timeout S]
                          [--long-timeout S] [--stagger S] [--udp N --udp-port P]

Prints one JSON document when done: every new connection as
[start (Unix time), backend or null, error or null], and per long connection
its backend, answers, the backends that answered, and its errors as
[time, error]. A long connection stops at its first error. Bounded: SECONDS
(at most 120), a timeout per request (default 3 s: past one lost SYN, whose
retransmission comes after 1 s).
--long-timeout: the long connections' timeout per request (default
--timeout): for connection-sync tests, longer than a takeover, so that a
request sent during one is retransmitted, not given up.
--stagger S: open the long connections one every S seconds, so that some
are young when something happens ("ready" after the first).
--udp N: also N long-lived UDP flows to the VIP's port P (a datagram every
100 ms on each, answered by the backend's echo), reported like the long
connections under "udp"; a lost answer is an error but not the flow's end."""
import http.client
import json
import socket
import sys
import threading
import time

vip, port, secs = sys.argv[1], int(sys.argv[2]), min(float(sys.argv[3]), 120.0)
opts = sys.argv[4:]
n_long = int(opts[opts.index("--long") + 1]) if "--long" in opts else 6
every = float(opts[opts.index("--every") + 1]) if "--every" in opts else 0.05
timeout = float(opts[opts.index("--timeout") + 1]) if "--timeout" in opts else 3.0
long_timeout = float(opts[opts.index("--long-timeout") + 1]) if "--long-timeout" in opts else timeout
stagger = float(opts[opts.index("--stagger") + 1]) if "--stagger" in opts else 0.0
n_udp = int(opts[opts.index("--udp") + 1]) if "--udp" in opts else 0
udp_port = int(opts[opts.index("--udp-port") + 1]) if "--udp-port" in opts else 9000
end = time.time() + secs


def ask(conn):
    conn.request("GET", "/")
    return conn.getresponse().read().decode().strip()


def hold(slot, i):
    """One long-lived connection: a request every 100 ms until the end."""
    time.sleep(i * stagger)
    try:
        conn = http.client.HTTPConnection(vip, port, timeout=long_timeout)
        slot["opened"] = time.time()
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


def hold_udp(slot, i):
    """One long-lived UDP flow: a datagram every 100 ms until the end, each
    answered by the backend's echo naming it."""
    time.sleep(i * stagger)
    fam = socket.AF_INET6 if ":" in vip else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.settimeout(long_timeout)
    s.connect((vip, udp_port))
    slot["opened"] = time.time()
    first = True
    while time.time() < end:
        try:
            s.send(b"ping")
            who = s.recv(256).decode().strip()
        except OSError as e:
            slot["errors"].append([time.time(), repr(e)])
            who = None
        if first:
            ready.release()
            first = False
        if who is not None:
            slot["answers"] += 1
            if slot["backend"] is None:
                slot["backend"] = who
            if who not in slot["seen"]:
                slot["seen"].append(who)
        time.sleep(0.1)
    s.close()


ready = threading.Semaphore(0)
slots = [{"backend": None, "answers": 0, "seen": [], "errors": []} for _ in range(n_long)]
udp_slots = [{"backend": None, "answers": 0, "seen": [], "errors": []} for _ in range(n_udp)]
threads = [threading.Thread(target=hold, args=(s, i), daemon=True) for i, s in enumerate(slots)]
threads += [threading.Thread(target=hold_udp, args=(s, i), daemon=True)
            for i, s in enumerate(udp_slots)]
for t in threads:
    t.start()
for _ in (threads[:1] if stagger else threads):
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
print(json.dumps({"new": new, "long": slots, "udp": udp_slots}))
