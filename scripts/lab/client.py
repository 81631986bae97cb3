#!/usr/bin/env python3
"""The lab client: HTTP requests (a new TCP connection each) and UDP
datagrams to a VIP; prints which backend answered and the rates.

usage: client.py VIP [http_requests] [udp_datagrams] [--json]
Bounded: stops after the counts or 20 s, whichever comes first."""
import collections
import http.client
import json
import socket
import sys
import time

vip = sys.argv[1]
n_http = int(sys.argv[2]) if len(sys.argv) > 2 else 30
n_udp = int(sys.argv[3]) if len(sys.argv) > 3 else 9
as_json = "--json" in sys.argv
deadline = time.monotonic() + 20
family = socket.AF_INET6 if ":" in vip else socket.AF_INET

http_seen, http_fail = collections.Counter(), 0
t0 = time.monotonic()
for i in range(n_http):
    if time.monotonic() > deadline:
        break
    try:
        c = http.client.HTTPConnection(vip, 80, timeout=2)
        c.request("GET", "/")
        who = c.getresponse().read().decode().strip()
        c.close()
        http_seen[who] += 1
        if not as_json and i < 6:
            print(f"  HTTP request {i + 1:3} -> answered by {who}")
    except OSError as e:
        http_fail += 1
        if not as_json:
            print(f"  HTTP request {i + 1:3} -> FAILED: {e}")
http_secs = time.monotonic() - t0

udp_seen, udp_fail = collections.Counter(), 0
for i in range(n_udp):
    if time.monotonic() > deadline:
        break
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.settimeout(2)
    try:
        s.sendto(f"hello {i}".encode(), (vip, 53))
        data, _ = s.recvfrom(2048)
        who = data.decode().split()[0]
        udp_seen[who] += 1
    except OSError:
        udp_fail += 1
    finally:
        s.close()

result = {
    "http": dict(http_seen), "http_failed": http_fail,
    "http_per_s": round(sum(http_seen.values()) / http_secs, 1) if http_secs else 0,
    "udp": dict(udp_seen), "udp_failed": udp_fail,
}
if as_json:
    print(json.dumps(result))
else:
    ok = sum(http_seen.values())
    print(f"  ... {ok} of {n_http} HTTP requests answered "
          f"({result['http_per_s']} connections/s, one new TCP connection each)")
    for who, n in sorted(http_seen.items()):
        print(f"      {who}: {n}")
    print(f"  UDP: {sum(udp_seen.values())} of {n_udp} datagrams echoed: "
          + ", ".join(f"{w}: {n}" for w, n in sorted(udp_seen.items())))
sys.exit(0 if http_fail == 0 and udp_fail == 0 else 1)
