#!/usr/bin/env python3
"""Who answers ARP for an address, over time: for the HA tests' split-brain
and announcement checks. Asks for ADDR on IFACE every INTERVAL seconds (a
broadcast ARP request, as any host on the segment would) and records every
ARP frame that claims ADDR: replies to anyone, and gratuitous ARP
(announcements: sender and target both ADDR).

usage: arp_watch.py IFACE ADDR SECONDS [--every S]

Prints "ready" on stderr once listening, then, when done, one JSON document:
{"asked": n, "claims": [[time (Unix), sender MAC, "reply" | "garp"], ...]}.
Bounded: SECONDS (at most 120), one request per interval (at least 5 ms)."""
import json
import socket
import struct
import sys
import time

iface, addr = sys.argv[1], sys.argv[2]
secs = min(float(sys.argv[3]), 120.0)
opts = sys.argv[4:]
every = max(float(opts[opts.index("--every") + 1]), 0.005) if "--every" in opts else 0.02

ETH_P_ARP = 0x0806
target = socket.inet_aton(addr)

sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
sock.bind((iface, 0))
sock.settimeout(0.005)
mac = sock.getsockname()[4][:6]
# Our own IPv4 address on IFACE is not needed: an ARP probe (sender 0.0.0.0)
# gets a reply like any request, and never updates anyone's cache.
request = (
    b"\xff" * 6 + mac + struct.pack("!H", ETH_P_ARP)
    + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1)
    + mac + b"\x00" * 4 + b"\x00" * 6 + target
)

claims = []
asked = 0
print("ready", file=sys.stderr, flush=True)
end = time.time() + secs
next_ask = time.time()
while True:
    now = time.time()
    if now >= end:
        break
    if now >= next_ask:
        sock.send(request)
        asked += 1
        next_ask += every
        if next_ask < now:
            next_ask = now + every
    try:
        frame = sock.recv(128)
    except socket.timeout:
        continue
    if len(frame) < 42:
        continue
    op = struct.unpack("!H", frame[20:22])[0]
    sha, spa, tpa = frame[22:28], frame[28:32], frame[38:42]
    if spa != target or sha == mac:
        continue
    kind = "reply" if op == 2 else ("garp" if tpa == target else None)
    if kind:
        claims.append([time.time(), sha.hex(":"), kind])
print(json.dumps({"asked": asked, "claims": claims}))
