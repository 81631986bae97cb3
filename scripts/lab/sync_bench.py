#!/usr/bin/env python3
"""Connection sync under failover, side by side (issue 17): how many
established connections break when the node holding the VIP loses power,
by age and protocol, for xlb and for the keepalived pairs.

Run through scripts/bench-sync.sh (builds xlb, needs root). The lab is
ha_bench.py's (halab.py: the K3s docs' layout, three balancers), with the
servers' UDP echo on :9000 and a UDP rule for it. Contenders, each on a
fresh copy of the layout:
  xlb         three `xlb run --cluster ... --self N`, full NAT from the
              floating 10.10.10.101; the TCP rule VIP:6443 and a UDP rule
              VIP:9000 (round robin)
  conntrackd  keepalived moving the VIP and the floating 10.10.10.101;
              nftables DNAT of VIP:6443/tcp and VIP:9000/udp to the servers
              and SNAT to 10.10.10.101; conntrackd (FTFW, multicast on eth0)
              syncing the kernel's connection table, driven by keepalived's
              notify as conntrackd's primary-backup.sh does
  haproxy     keepalived + HAProxy in TCP mode (no UDP)
One client runs through all of a contender's failovers. It holds long-lived
connections: it opens a TCP one (HTTP/1.1 keep-alive to VIP:6443, a request
every 100 ms) and a UDP flow (to VIP:9000, a datagram every 100 ms) every
~0.25 s, each for a random lifetime of up to LIFE s, so that at any moment
some are younger than 1 s, some 1-10 s and some older than 10 s; and, as
ha_bench.py's client, a new short connection every 20 ms (200 ms timeout)
whose failures give the takeover's outage. Per failover, at a random point
of a second the holder loses power (as ha_bench.py does), the client keeps
every connection alive then open for at least WINDOW s, the dead node comes
back (a reboot's clean slate) once WINDOW s have passed, and the next
failover waits until LIFE s after the outage ended, so the ages spread
again. A connection or flow established at the kill is *broken* if, in the
WINDOW s after it, it gets an error, an answer from another backend, or no
answer for more than STALL s.

usage: sync_bench.py [--quick] [--failovers N] [--contenders xlb,conntrackd,haproxy]
                     [--out FILE] [--keep-logs]
       sync_bench.py --report FILE.json [--out FILE]   (the Markdown again)
       sync_bench.py --client VIP PORT UDP_PORT SECONDS [--no-udp]
                     (the client, run inside its namespace)"""
import asyncio
import json
import os
import random
import re
import sys
import threading
import time

import halab
from halab import (PORT, ROOT, UDP_PORT, VIP, Client, HaproxyPair, Lab, NftPair,
                   Xlb, bench_main, failures, guard, keep_logs, ms, outage, pct,
                   power_on, run, save_report, versions, wait_moved, wait_stable)

# The new short connections: as ha_bench.py's client.
EVERY = 0.02
TIMEOUT = 0.2
CLEAN = 1.0
# The long-lived connections: one of each protocol opened every OPEN_EVERY
# s (± half), for a random lifetime of up to LIFE s; a request or datagram
# every TICK s.
OPEN_EVERY = 0.25
LIFE = 25.0
TICK = 0.1
# Opening a long connection (connect and first answer) fails after this.
OPEN_TIMEOUT = 3.0
# A request on a long connection is given this long before it is an error:
# longer than WINDOW, so a request sent at the kill is retransmitted across
# any takeover and its fate (answered, reset, another backend) is seen;
# the definition of broken uses STALL.
REQUEST_TIMEOUT = 12.0
# Broken: no answer for more than this (a client with a 3 s timeout per
# request gives up).
STALL = 3.0
# After a kill, how long connections alive then are kept open and watched.
WINDOW = 10.0
# Gaps between answers shorter than this are not recorded.
GAP_MIN = 0.5
# A new stable group waits this long after a return before the next kill.
SETTLE = 4.0
AGES = (("< 1 s", 0.0, 1.0), ("1–10 s", 1.0, 10.0), ("> 10 s", 10.0, float("inf")))


# ------------------------------------------------------------------ client

def error_name(e):
    return type(e).__name__ if not str(e) else f"{type(e).__name__}({e})"


class LongClient:
    """The client (see the module's doc): one JSON line per new short
    connection as it ends, [start, backend or null, error or null], and one
    per long connection or flow as it ends: {"p": "tcp"|"udp", "start",
    "first" (first answer, null: never opened), "backend", "last" (last
    answer), "end", "gaps": [[from, to], ...] (answers more than GAP_MIN s
    apart; a gap that lasted until the end, too), "err": [time, error] or
    null, "moved": [time, backend] or null (an answer from another backend
    ends it)}. stdin: "hold T" keeps every connection open now open until at
    least T; end of input stops it. Bounded by SECONDS."""

    def __init__(self, vip, port, udp_port, secs, udp):
        self.vip, self.port, self.udp_port, self.udp = vip, port, udp_port, udp
        self.deadline = time.time() + min(secs, 3600.0)
        self.hold_until = 0.0
        self.request = f"GET / HTTP/1.1\r\nHost: {vip}\r\n\r\n".encode()

    @staticmethod
    def emit(item):
        print(json.dumps(item), flush=True)

    def running(self):
        return not self.stop.is_set() and time.time() < self.deadline

    def stdin(self, loop):
        for line in sys.stdin:
            if line.startswith("hold "):
                t = float(line.split()[1])
                loop.call_soon_threadsafe(lambda t=t: setattr(
                    self, "hold_until", max(self.hold_until, t)))
        loop.call_soon_threadsafe(self.stop.set)

    async def ask(self, reader, writer):
        writer.write(self.request)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        if head.split(b" ", 2)[1:2] != [b"200"]:
            raise ValueError(f"answer {head[:40]!r}")
        length = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
        body = await reader.readexactly(int(length.group(1)) if length else 0)
        return body.decode().strip()

    async def short(self, start):
        writer = None
        try:
            async with asyncio.timeout(TIMEOUT):
                reader, writer = await asyncio.open_connection(self.vip, self.port)
                who = await self.ask(reader, writer)
            self.emit([start, who, None])
        except Exception as e:  # noqa: BLE001 - every failure is a failed attempt
            self.emit([start, None, error_name(e)])
        finally:
            if writer:
                writer.close()

    @staticmethod
    def record(proto, start):
        return {"p": proto, "start": start, "first": None, "backend": None, "last": None,
                "end": None, "gaps": [], "err": None, "moved": None}

    def answered(self, rec, who):
        """An answer on a long connection; False once it came from another
        backend than the first."""
        now = time.time()
        if rec["first"] is None:
            rec["first"], rec["backend"] = now, who
        elif now - rec["last"] > GAP_MIN:
            rec["gaps"].append([rec["last"], now])
        rec["last"] = now
        if who != rec["backend"]:
            rec["moved"] = [now, who]
            return False
        return True

    def finish(self, rec):
        now = time.time()
        if rec["last"] is not None and now - rec["last"] > GAP_MIN:
            rec["gaps"].append([rec["last"], now])
        rec["end"] = now
        self.emit(rec)

    def keep(self, rec, end):
        return self.running() and time.time() < max(end, self.hold_until)

    async def hold_tcp(self, start, end):
        rec = self.record("tcp", start)
        writer = None
        try:
            async with asyncio.timeout(OPEN_TIMEOUT):
                reader, writer = await asyncio.open_connection(self.vip, self.port)
                who = await self.ask(reader, writer)
            self.answered(rec, who)
            while self.keep(rec, end):
                await asyncio.sleep(TICK)
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    who = await self.ask(reader, writer)
                if not self.answered(rec, who):
                    break
        except Exception as e:  # noqa: BLE001 - every failure ends the connection
            rec["err"] = [time.time(), error_name(e)]
        finally:
            if writer:
                writer.close()
            self.finish(rec)

    async def hold_udp(self, start, end):
        rec = self.record("udp", start)
        client = self

        class Flow(asyncio.DatagramProtocol):
            def datagram_received(self, data, _addr):
                if rec["moved"] is None:
                    client.answered(rec, data.decode(errors="replace").split(" ", 1)[0])

            def error_received(self, exc):
                if rec["err"] is None:
                    rec["err"] = [time.time(), error_name(exc)]

        transport = None
        try:
            transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
                Flow, remote_addr=(self.vip, self.udp_port))
            while rec["err"] is None and rec["moved"] is None:
                now = time.time()
                if rec["first"] is None and now - start > OPEN_TIMEOUT:
                    break
                if rec["first"] is not None and not self.keep(rec, end):
                    break
                transport.sendto(b"ping")
                await asyncio.sleep(TICK)
        except OSError as e:
            rec["err"] = [time.time(), error_name(e)]
        finally:
            if transport:
                transport.close()
            self.finish(rec)

    async def main(self):
        loop = asyncio.get_running_loop()
        self.stop = asyncio.Event()
        threading.Thread(target=self.stdin, args=(loop,), daemon=True).start()
        tasks = set()

        def spawn(coro):
            t = asyncio.ensure_future(coro)
            tasks.add(t)
            t.add_done_callback(tasks.discard)

        next_short = next_long = time.time()
        while self.running():
            now = time.time()
            if now >= next_short:
                spawn(self.short(now))
                # Late (a loaded machine): skip the missed slots, no burst.
                next_short = max(next_short + EVERY, now)
            if now >= next_long:
                spawn(self.hold_tcp(now, now + random.uniform(0, LIFE)))
                if self.udp:
                    spawn(self.hold_udp(now, now + random.uniform(0, LIFE)))
                next_long = now + random.uniform(OPEN_EVERY / 2, OPEN_EVERY * 1.5)
            await asyncio.sleep(max(0.0, min(next_short, next_long) - time.time()))
        if tasks:
            await asyncio.wait(tasks, timeout=REQUEST_TIMEOUT + 2)


if len(sys.argv) >= 6 and sys.argv[1] == "--client":
    asyncio.run(LongClient(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]),
                           float(sys.argv[5]), "--no-udp" not in sys.argv).main())
    sys.exit(0)


# ------------------------------------------------------------------ options

os.chdir(ROOT)
OPTS = halab.Options("xlb,conntrackd,haproxy", "perf/results/sync-failover.md")
FAILOVERS, OUT = OPTS.failovers, OPTS.out
halab.setup("xsb", "sync bench")


# ------------------------------------------------------------ contenders

class ConntrackdPair(NftPair):
    """keepalived + nftables DNAT, source NAT to the floating address that
    keepalived moves with the VIP, and conntrackd (FTFW) replicating the
    kernel's connection table to the other balancers: the textbook setup of
    conntrackd's own examples (conntrackd.conf of sync/ftfw, the notify
    actions of primary-backup.sh)."""
    name = "conntrackd"
    label = "keepalived + nftables + conntrackd (FTFW)"
    addresses = (VIP, halab.FLOATING)
    forwards = (("tcp", PORT), ("udp", UDP_PORT))
    source_nat = f"snat to {halab.FLOATING}"
    # primary-backup.sh's steps; conntrackd is started with the node (it
    # would start it on BACKUP if it were not running). Each step's end is
    # logged, to see where a takeover's time goes.
    on_state = """C="conntrackd -C {d}/conntrackd.conf"
step() {{ $C "$@"; echo "$(date +%s.%N) $STATE $* exit $?"; }}
STATE=$3
case "$3" in
MASTER) step -c; step -f; step -R; step -B ;;
BACKUP) step -t; step -n ;;
FAULT) step -t ;;
esac >> {d}/notify.log 2>&1
"""

    def start_forwarder(self, node, d):
        super().start_forwarder(node, d)
        cfg = os.path.join(d, "conntrackd.conf")
        ignore = "\n".join(f"            IPv4_address {a}" for a in ["127.0.0.1", *halab.LBS])
        with open(cfg, "w") as f:
            f.write(f"""Sync {{
    Mode FTFW {{
    }}
    Multicast {{
        IPv4_address 225.0.0.50
        Group 3780
        IPv4_interface {halab.LBS[node]}
        Interface eth0
        SndSocketBuffer 1249280
        RcvSocketBuffer 1249280
        Checksum on
    }}
}}
General {{
    HashSize 32768
    HashLimit 131072
    LogFile {d}/conntrackd.log
    Syslog off
    LockFile {d}/conntrackd.lock
    UNIX {{
        Path {d}/conntrackd.ctl
    }}
    NetlinkBufferSize 2097152
    NetlinkBufferSizeMaxGrowth 8388608
    Filter From Userspace {{
        Protocol Accept {{
            TCP
            UDP
        }}
        # The balancers' own traffic (the sync itself); the VIP and the
        # floating address are what is synced, unlike the example's
        # firewall, whose virtual addresses are its own.
        Address Ignore {{
{ignore}
        }}
    }}
}}
""")
        # A power loss leaves them behind, and conntrackd refuses to start
        # over a lock file.
        for stale in ("conntrackd.lock", "conntrackd.ctl"):
            try:
                os.unlink(os.path.join(d, stale))
            except FileNotFoundError:
                pass
        self.lab.spawn(node, ["conntrackd", "-C", cfg], f"lb{node + 1}/conntrackd.out")
        Lab.wait(lambda: halab.in_ns(self.lab.lbs[node], "conntrackd", "-C", cfg, "-s",
                                     check=False).returncode == 0,
                 10, f"conntrackd on lb{node + 1} did not answer")

    def caches(self, alive):
        """Per node: the entries of its internal cache (its own connections)
        and of its external cache (the ones synced from the others), and
        the sync messages it lost, from `conntrackd -s`."""
        out = {}
        for n in alive:
            r = halab.in_ns(self.lab.lbs[n], "conntrackd", "-C",
                            os.path.join(self.lab.dir, f"lb{n + 1}/conntrackd.conf"), "-s",
                            check=False)
            active = re.findall(r"current active connections:\s*(\d+)", r.stdout)
            lost = re.search(r"(\d+) Lost msgs", r.stdout)
            if len(active) >= 2:
                out[f"lb{n + 1}"] = [int(active[0]), int(active[1]),
                                     int(lost.group(1)) if lost else None]
        return out

    def steps(self, node):
        """(time, state, step, exit status) of the notify actions."""
        try:
            with open(os.path.join(self.lab.dir, f"lb{node + 1}/notify.log")) as f:
                return [(float(w[0]), w[1], w[2], int(w[-1])) for w in
                        (line.split() for line in f) if len(w) >= 5 and w[-2] == "exit"]
        except (OSError, ValueError):
            return []

    def phases(self, killed, new, survivors):
        out = super().phases(killed, new, survivors)
        for key, last in (("committed", "-c"), ("master_steps", "-B")):
            done = [t for t, s, step, _ in self.steps(new) if s == "MASTER" and t >= killed
                    and step == last]
            out[key] = min(done) - killed if done else None
        out["failed_steps"] = [f"{s} {step} exit {rc}" for t, s, step, rc in self.steps(new)
                               if t >= killed and rc != 0]
        return out


class SyncXlb(Xlb):
    """xlb as in ha_bench.py, with the UDP rule too."""

    def __init__(self, lab):
        super().__init__(lab, udp=True)


CONTENDER_TYPES = {c.name: c for c in (SyncXlb, ConntrackdPair, HaproxyPair)}
# HAProxy in TCP mode does not forward UDP.
NO_UDP = {"haproxy"}


# ------------------------------------------------------------ measuring

class SyncClient(Client):
    """This file's client in the client's namespace: new short
    connections as ha_bench.py's, and the long ones' records."""

    def __init__(self, lab, udp, secs):
        self.long = []
        super().__init__(lab, ["python3", os.path.abspath(__file__), "--client", VIP,
                               str(PORT), str(UDP_PORT), str(secs),
                               *([] if udp else ["--no-udp"])],
                         EVERY, TIMEOUT, CLEAN)

    def parse(self, item):
        if isinstance(item, dict):
            with self.lock:
                self.long.append(item)
        else:
            super().parse(item)

    def hold(self, until):
        self.p.stdin.write(f"hold {until}\n")
        self.p.stdin.flush()

    def finish(self):
        attempts = super().finish()
        with self.lock:
            return attempts, list(self.long)


def one_failover(lab, c, alive, holder, client):
    """The holder loses power at a random point of a second; WINDOW s later
    it comes back. The times, and where the takeover's time went."""
    time.sleep(random.uniform(0.0, 1.0))
    caches = c.caches(alive) if hasattr(c, "caches") else None
    killed = time.time()
    client.hold(killed + WINDOW)
    lab.power_loss(holder)
    survivors = [n for n in alive if n != holder]
    new, moved = wait_moved(lab, c, survivors, killed)
    client.wait_clean(killed, 20, f"{c.name}: new connections kept failing")
    recovered = time.time()
    time.sleep(max(0.0, killed + WINDOW - time.time()))
    back = time.time()
    power_on(lab, c, holder)
    wait_stable(lab, c, alive, holder=new)
    return {"killed_at": killed, "back_at": back, "recovered_at": recovered,
            "victim": holder + 1, "new_holder": new + 1, "vip_moved": moved,
            "caches": caches,
            **c.phases(killed, new, survivors)}


def run_contender(name):
    lab = Lab(name)
    client = None
    try:
        lab.build(udp=True)
        c = CONTENDER_TYPES[name](lab)
        alive = [0, 1, 2]
        for n in alive:
            c.start(n)
        holder = wait_stable(lab, c, alive)
        client = SyncClient(lab, name not in NO_UDP, LIFE + FAILOVERS * (LIFE + 40) + 60)
        client.wait_clean(time.time(), 15, f"{c.name}: the client did not get through")
        # The ages spread as they will before every later kill.
        ready = time.time() + LIFE
        kills = []
        for i in range(FAILOVERS):
            time.sleep(max(0.0, ready - time.time()))
            k = one_failover(lab, c, alive, holder, client)
            holder = k["new_holder"] - 1
            kills.append(k)
            print(f"  {name} {i + 1}/{FAILOVERS}: lb{k['victim']} -> lb{k['new_holder']}, "
                  f"new connections clean again after {k['recovered_at'] - k['killed_at']:.2f} s "
                  "(1 s of successes, then the 200 ms timeout: the outage is in the report)",
                  flush=True)
            ready = max(k["recovered_at"] + LIFE, time.time() + SETTLE)
        attempts, long = client.finish()
        client = None
        return tally(kills, attempts, long)
    finally:
        if client:
            client.finish()
        if OPTS.keep_logs:
            keep_logs(lab, name)
        lab.close()


def failed_in(r, at):
    """Whether the long connection `r` ended in an error that belongs to
    the window from `at`: within it, or a request that was sent in it
    timing out later."""
    return bool(r["err"]) and at <= r["err"][0] and (
        r["err"][0] < at + WINDOW or (r["last"] or 0) < at + WINDOW)


def verdict(r, at):
    """Why the long connection `r`, established at `at`, broke in the
    WINDOW s after it (None: it did not). "timeout" (no answer to a request
    in REQUEST_TIMEOUT s), "error" (any other: a reset, a refused
    connection, an ICMP error), "backend" (an answer from another backend),
    "stall" (answers from the same backend resumed, but after more than
    STALL s)."""
    until = at + WINDOW
    if failed_in(r, at):
        return "timeout" if r["err"][1].startswith("TimeoutError") else "error"
    if r["moved"] and at <= r["moved"][0] < until:
        return "backend"
    if any(b - a > STALL and a < until and b > at for a, b in r["gaps"]):
        return "stall"
    return None


def tally(kills, attempts, long):
    """Per failover and protocol, the long connections established at the
    kill by age bucket, [alive, broken], the reasons, and the outage of new
    connections; and the long connections broken outside every window."""
    for k in kills:
        at = k["killed_at"]
        k["outage"] = outage(attempts, at, k["back_at"])
        k["failed"] = failures(attempts, at, k["back_at"])
        k["ages"], k["reasons"] = {}, {}
        for r in long:
            if r["first"] is None or r["first"] >= at or r["end"] <= at:
                continue
            age = at - r["start"]
            bucket = next(b for b, lo, hi in AGES if lo <= age < hi)
            cell = k["ages"].setdefault(r["p"], {b: [0, 0] for b, _, _ in AGES})[bucket]
            cell[0] += 1
            why = verdict(r, at)
            if why:
                cell[1] += 1
                reasons = k["reasons"].setdefault(r["p"], {})
                reasons[why] = reasons.get(why, 0) + 1
                # When, after the kill (the answer from another backend, the
                # error): against the takeover's phases.
                ev = r["moved"] if why == "backend" else r["err"] if why != "stall" else None
                if ev:
                    k.setdefault("broke_after", []).append(round(ev[0] - at, 3))
    outside = {}
    for r in long:
        ev = r["err"] or r["moved"]
        if r["first"] is None or not ev:
            continue
        if not any(failed_in(r, k["killed_at"]) if r["err"]
                   else k["killed_at"] <= ev[0] < k["killed_at"] + WINDOW for k in kills):
            outside.setdefault(r["p"], []).append(ev[1] if r["err"] else f"backend {ev[1]}")
    opened = {p: sum(1 for r in long if r["p"] == p) for p in ("tcp", "udp")}
    not_opened = {p: sum(1 for r in long if r["p"] == p and r["first"] is None)
                  for p in ("tcp", "udp")}
    return {"runs": kills, "outside": outside, "opened": opened, "not_opened": not_opened}


# ------------------------------------------------------------ the report

def summed(res, proto):
    """{bucket: [alive, broken]} over every failover; None: not measured."""
    cells = [k["ages"][proto] for k in res["runs"] if proto in k["ages"]]
    if not cells:
        return None
    return {b: [sum(c[b][0] for c in cells), sum(c[b][1] for c in cells)] for b, _, _ in AGES}


def reasons(res, proto):
    out = {}
    for k in res["runs"]:
        for why, n in k["reasons"].get(proto, {}).items():
            out[why] = out.get(why, 0) + n
    return out


def rows(names, results):
    out = []
    for n in names:
        res = results[n]
        outs = [k["outage"] for k in res["runs"]]
        for proto in ("tcp", "udp"):
            s = summed(res, proto)
            if s is None or (proto == "udp" and n in NO_UDP):
                cells = ["n/a"] * (len(AGES) + 2)
                why = "–"
            else:
                alive = sum(v[0] for v in s.values())
                why = reasons(res, proto)
                cells = [f"{s[b][1]} / {s[b][0]}" for b, _, _ in AGES]
                cells.append(f"{sum(v[1] for v in s.values())} / {alive}")
                cells.append(f"{sum(c for w, c in why.items() if w != 'stall')} / {alive}")
                why = ", ".join(f"{w} {c}" for w, c in sorted(why.items())) or "–"
            outside = len(res["outside"].get(proto, []))
            out.append(f"| {CONTENDER_TYPES[n].label} | {proto.upper()} | {len(res['runs'])} | "
                       + " | ".join(cells) + f" | {why} | "
                       + (f"{outside}" if cells[0] != "n/a" else "n/a") + " | "
                       + f"{ms(pct(outs, 0.5))} | {ms(pct(outs, 0.99))} |")
    return out


def notes(names, results):
    out = []
    for n in names:
        runs = results[n]["runs"]
        parts = []
        for key, what in (("elected", "the new holder elected / MASTER"),
                          ("committed", "conntrackd's commit done (-c)"),
                          ("master_steps", "its MASTER steps done (-c -f -R -B)"),
                          ("vip_moved", "the VIP on the new holder")):
            xs = [k[key] for k in runs if k.get(key) is not None]
            if xs:
                parts.append(f"{what} p50 {ms(pct(xs, 0.5))}, max {ms(max(xs))}")
        sizes = [(k["caches"][f"lb{k['victim']}"][0], v[1]) for k in runs
                 if k.get("caches") and f"lb{k['victim']}" in k["caches"]
                 for node, v in k["caches"].items() if node != f"lb{k['victim']}"]
        if sizes:
            lost = sum(v[2] or 0 for k in runs for v in (k.get("caches") or {}).values())
            parts.append("just before each kill the backups' external caches held "
                         + ", ".join(f"{e}" for _, e in sizes) + " entries against the holder's "
                         + ", ".join(sorted({f"{i}" for i, _ in sizes}, key=int))
                         + f" own (sync messages lost, all nodes: {lost})")
        broke = [t for k in runs for t in k.get("broke_after", [])]
        if broke:
            parts.append(f"errors and answers from another backend {ms(min(broke))} to "
                         f"{ms(max(broke))}, p50 {ms(pct(broke, 0.5))}")
        steps = sorted({s for k in runs for s in k.get("failed_steps", [])})
        if steps:
            parts.append("notify steps that failed: " + ", ".join(steps))
        outside = {p: sorted(set(e.split("(")[0] for e in es))
                   for p, es in results[n]["outside"].items()}
        if outside:
            parts.append("broken outside the windows: " + "; ".join(
                f"{p.upper()} {', '.join(es)}" for p, es in outside.items()))
        if parts:
            out.append(f"- {CONTENDER_TYPES[n].label}: " + "; ".join(parts) + ".")
    return out


def write_report(meta, results, raw):
    """The table on stdout; OUT (Markdown) and, for a new run, its raw
    numbers in `raw` (.json), from which --report writes OUT again."""
    names = [n for n in CONTENDER_TYPES if n in results]
    header = ["| contender | protocol | failovers | "
              + " | ".join(f"broken / alive, age {b}" for b, _, _ in AGES)
              + " | all ages | state lost (not stalls), all ages | why broken "
              "| broken outside the windows | new-connection outage p50 | p99 |",
              "|---|---|---|" + "---|" * (len(AGES) + 6)]
    table = rows(names, results)
    print("\n".join(header + table))
    doc = [
        "# Connection sync: established connections broken when the VIP's holder loses power",
        "",
        f"`{meta['command']}`; {meta['date']}, {meta['cores']} cores ({meta['cpu']}), "
        f"kernel {meta['kernel']}, load average at the end {meta['load']}; {meta['versions']}.",
        "",
        "ha_bench.py's layout (the K3s docs', three balancers on one bridge, API servers",
        f".50–.52 on :6443, VIP {VIP}), the servers also echoing UDP on :{UDP_PORT}. One client per",
        "contender, through all its failovers, holds long-lived connections: every "
        f"~{meta['open_every_s']} s it opens",
        f"an HTTP/1.1 keep-alive connection to VIP:{PORT} and a UDP flow to VIP:{UDP_PORT} "
        f"(a request or datagram every {meta['tick_s'] * 1000:.0f} ms",
        f"on each), each for a random lifetime of up to {meta['life_s']:.0f} s; and a new "
        f"short connection every {meta['every_s'] * 1000:.0f} ms",
        f"({meta['timeout_s'] * 1000:.0f} ms timeout). At a random moment of a second the "
        "holder loses power (processes",
        "frozen, links down, killed); every long connection open then is kept open for "
        f"{meta['window_s']:.0f} s more;",
        f"after {meta['window_s']:.0f} s the node comes back (a reboot's clean slate), and "
        f"the next failover waits until {meta['life_s']:.0f} s",
        "after new connections succeeded again, so that the ages spread as before the first.",
        "",
        *header, *table,
        "",
        "*alive*: long connections and flows established (answered) before the kill and open "
        "at it, summed over",
        "the failovers, by their age at the kill. *broken*: of those, the ones that within "
        f"{meta['window_s']:.0f} s of the kill got an",
        "error (*timeout*: no answer to a request sent in the window within "
        f"{meta['request_timeout_s']:.0f} s; *error*: a reset,",
        "a refused connection, an ICMP error),",
        "an answer from another backend (*backend*), or no answer for more than "
        f"{meta['stall_s']:.0f} s (*stall*: the answers",
        "resumed, from the same backend: the state survived, but a client with a "
        f"{meta['stall_s']:.0f} s timeout would have given up).",
        "*state lost*: broken other than by a stall (the connection could not have survived "
        "with any timeout).",
        "*broken outside the windows*: long connections that got an error or another backend "
        "at any other time",
        "(a node's return, the run's steady state). *new-connection outage*: as in "
        "ha-failover.md (power loss →",
        "the first new connection that succeeded after the last that failed).",
        "",
        "Contenders, three balancers each on a fresh copy of the layout:",
        "- **xlb**: `xlb run --iface eth0 --snat-addrs 10.10.10.101 --cluster "
        "10.10.10.98,10.10.10.99,10.10.10.97 --self N`,",
        f"  the K3s rule and a UDP rule for VIP:{UDP_PORT} (round robin, full NAT from the "
        "floating 10.10.10.101).",
        "- **keepalived** (both pairs): as in ha-failover.md (VRRP, `advert_int 1`, priorities "
        "150/100/50, `nopreempt`).",
        "- **conntrackd**: keepalived moves the VIP and the floating 10.10.10.101 together;",
        f"  nftables DNATs VIP:{PORT}/tcp and VIP:{UDP_PORT}/udp to `numgen inc mod 3` over "
        "the servers and SNATs",
        "  them to 10.10.10.101 (the servers answer an address that moves with the VIP);",
        "  conntrackd (FTFW, multicast on eth0, the example configuration of its",
        "  documentation, TCP and UDP accepted) replicates the kernel's connection table;",
        "  keepalived's notify runs conntrackd's `primary-backup.sh` steps: on MASTER `-c` "
        "(commit the",
        "  external cache to the kernel), `-f`, `-R`, `-B`; on BACKUP `-t`, `-n` (resync "
        "from the master).",
        "- **HAProxy**: as in ha-failover.md (TCP mode: it terminates the connections; no UDP).",
        "",
        "Where the time went (power loss → …):",
        *notes(names, results),
        "",
        f"Every failover's numbers: `{os.path.basename(raw or OPTS.opt('--report', ''))}`; "
        "`scripts/lab/sync_bench.py --report` on it writes this file again.",
    ]
    save_report(OUT, doc, meta, results, raw)


def main():
    cd = run("conntrackd", "-v", check=False).stdout.split()
    bench_main(OPTS, CONTENDER_TYPES, run_contender, write_report, "scripts/bench-sync.sh", {
        "versions": versions() + (f", conntrackd {cd[4].rstrip('.')}" if len(cd) > 4 else ""),
        "every_s": EVERY, "timeout_s": TIMEOUT, "open_every_s": OPEN_EVERY, "life_s": LIFE,
        "tick_s": TICK, "window_s": WINDOW, "stall_s": STALL,
        "request_timeout_s": REQUEST_TIMEOUT,
    })


guard(main)
