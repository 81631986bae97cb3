#!/usr/bin/env python3
"""High-availability failover, side by side (issue 16): how long new
connections to the VIP fail when the node holding it loses power, for xlb's
election and for the two keepalived pairs the K3s docs and their readers use.

Run through scripts/bench-ha.sh (builds xlb, needs root). The K3s docs'
layout on one bridge: client 10.10.10.2, balancers lb-1 .98, lb-2 .99,
lb-3 .97, API servers .50-.52 on :6443 (scripts/lab/backend.py), VIP
10.10.10.100:6443. Contenders, each on a fresh copy of that layout:
  xlb         three `xlb run --cluster ... --self N` (full NAT from the
              floating 10.10.10.101, which moves with the holder)
  haproxy     keepalived (VRRP, advert_int 1, priorities 150/100/50) moving
              the VIP on eth0, HAProxy in TCP mode on every balancer
  nft         the same keepalived, an nftables DNAT of VIP:6443 to the
              servers (numgen round robin) and masquerade on every balancer
Per failover: a client opens a new connection every 20 ms (one HTTP request,
200 ms timeout); at a random point of a second the holder loses power
(processes frozen, links down, killed); the client's outage is measured as
control/tests/e2e/ha.rs's outage() does; then the node is powered back on (a
reboot's clean slate: addresses, XDP, nftables and conntrack flushed;
daemons restarted) and the connections failed during its return are
counted. Once per contender a node that holds nothing loses power instead
(and comes back), and the holder is cut off from the other balancers (not
from the client) for PARTITION seconds while the client's ARP requests show
who claims the VIP: two nodes at once is split brain. xlb runs with openraft's info lines on (RUST_LOG, unless
set), which say where a slow election's time went.

usage: ha_bench.py [--quick] [--failovers N] [--contenders xlb,haproxy,nft]
                   [--out FILE] [--keep-logs]
       ha_bench.py --report FILE.json [--out FILE]   (the Markdown again)
       ha_bench.py --client VIP PORT   (the client, run inside its namespace)"""
import http.client
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time

import halab
from halab import (PORT, ROOT, VIP, Client, HaproxyPair, Lab, NftPair, Xlb,
                   bench_main, failures, guard, keep_logs, ms, outage, pct, power_on,
                   run, save_report, wait_moved, wait_stable)

EVERY = 0.02
TIMEOUT = 0.2
# After a node's return is stable, how long its failures are still counted:
# longer than keepalived's master-down interval (3 adverts plus skew), so a
# node that would take the VIP back shows within it.
SETTLE = 4.0
# How long the holder is cut off from the other balancers in the partition
# phase: longer than keepalived's master-down interval, so its split brain
# shows.
PARTITION = 8.0
# The partition phase's ARP requests for the VIP: one per interval, and a
# moment with two different senders of claims within one interval is split
# brain.
ARP_EVERY = 0.01
# How long the client must see only successes before the outage counts as over.
CLEAN = 1.0
CLIENT_MAX_SECS = 120.0


# ------------------------------------------------------------------ client

def client_main(vip, port):
    """A new connection every EVERY seconds, each on its own thread so a
    lost SYN delays no later attempt; one JSON line per attempt as it ends,
    [start, backend or null, error or null]. Stops when stdin closes, or
    after CLIENT_MAX_SECS."""
    lock = threading.Lock()
    stop = threading.Event()

    def attempt(start):
        try:
            conn = http.client.HTTPConnection(vip, port, timeout=TIMEOUT)
            conn.request("GET", "/")
            who = conn.getresponse().read().decode().strip()
            conn.close()
            line = json.dumps([start, who, None])
        except (OSError, http.client.HTTPException) as e:
            line = json.dumps([start, None, repr(e)])
        with lock:
            print(line, flush=True)

    def wait_stdin():
        sys.stdin.read()
        stop.set()

    threading.Thread(target=wait_stdin, daemon=True).start()
    end = time.time() + CLIENT_MAX_SECS
    threads = []
    next_at = time.time()
    while not stop.is_set() and time.time() < end:
        t = threading.Thread(target=attempt, args=(time.time(),), daemon=True)
        t.start()
        threads.append(t)
        threads = [t for t in threads if t.is_alive()]
        next_at += EVERY
        delay = next_at - time.time()
        if delay < 0:  # late (a loaded machine): skip the missed slots, no burst
            next_at, delay = time.time(), 0
        stop.wait(delay)
    for t in threads:
        t.join(TIMEOUT * 3)


if len(sys.argv) >= 4 and sys.argv[1] == "--client":
    client_main(sys.argv[2], int(sys.argv[3]))
    sys.exit(0)


# ------------------------------------------------------------------ options

os.chdir(ROOT)
OPTS = halab.Options("xlb,haproxy,nft", "perf/results/ha-failover.md")
FAILOVERS, OUT = OPTS.failovers, OPTS.out
halab.setup("xhb", "ha bench")
CONTENDER_TYPES = {c.name: c for c in (Xlb, HaproxyPair, NftPair)}


# ------------------------------------------------------------ measuring

def new_client(lab):
    """This file's client in the client's namespace."""
    return Client(lab, ["python3", os.path.abspath(__file__), "--client", VIP, str(PORT)],
                  EVERY, TIMEOUT, CLEAN)


def one_failover(lab, c, alive, holder, victim):
    """Power loss of `victim` (the holder, or a node holding nothing) under
    the client, then its return. What the client saw."""
    client = new_client(lab)
    started = time.time()
    try:
        client.wait_clean(started, 10, f"{c.name}: the client did not get through")
        # Anywhere in a VRRP advert interval (and many xlb heartbeats): the
        # steps before are timed, and would otherwise fall at one phase.
        time.sleep(random.uniform(0.0, 1.0))
        killed = time.time()
        lab.power_loss(victim)
        survivors = [n for n in alive if n != victim]
        new, moved = holder, None
        if victim == holder:
            new, moved = wait_moved(lab, c, survivors, killed)
            client.wait_clean(killed, 20, f"{c.name}: new connections kept failing")
        else:
            # Longer than keepalived's master-down interval and xlb's takeover.
            time.sleep(SETTLE + 1)
        back = time.time()
        power_on(lab, c, victim)
        wait_stable(lab, c, alive, holder=new)
        time.sleep(SETTLE)
        settled = time.time()
    finally:
        attempts = client.finish()
    phases = c.phases(killed, new, survivors) if victim == holder else {}
    return {
        "killed_at": killed, "victim": victim + 1, "new_holder": new + 1,
        "outage": outage(attempts, killed, back),
        "failed": failures(attempts, killed, back),
        "before": failures(attempts, started, killed),
        "returned_failed": failures(attempts, back, settled),
        "attempts": len([a for a in attempts if killed <= a[0] < settled]),
        "vip_moved": moved, **phases,
        "errors": sorted({a[2].split("(")[0] for a in attempts if a[2]}),
        # Each new connection that failed during the return: (start after
        # the power-on, error).
        "return_failures": [(round(a[0] - back, 3), a[2].split("(")[0]) for a in attempts
                            if not a[1] and back <= a[0] < settled],
        "back_at": back - killed,
    }


def split_brain(claims, start, end):
    """From the ARP watch's claims for the VIP: the time in [start, end)
    during which two nodes claimed it at once (two senders within one
    request interval), the time nobody did, and the order in which senders
    took turns."""
    bins = {}
    for t, mac, _kind in claims:
        if start <= t < end:
            bins.setdefault(int((t - start) / ARP_EVERY), set()).add(mac)
    n = int((end - start) / ARP_EVERY)
    two = sum(1 for b in bins.values() if len(b) > 1) * ARP_EVERY
    # Nobody: a gap of more than three intervals between claims.
    times = sorted(t for t, _m, _k in claims if start <= t < end)
    none = sum(b - a for a, b in zip([start] + times, times + [end]) if b - a > 3 * ARP_EVERY)
    # The set of nodes claiming it, per request interval; a change of set
    # is a turn ("lb1+lb2" is split brain).
    turns = []
    for b in sorted(bins):
        if not turns or turns[-1] != bins[b]:
            turns.append(bins[b])
    return two, none, turns, n


def one_partition(lab, c, alive, holder):
    """The holder cut off from the other balancers (not from the client)
    for PARTITION seconds, then healed. Who answered ARP for the VIP, and
    what the client saw."""
    others = [n for n in alive if n != holder]
    secs = 1 + PARTITION + SETTLE + 2
    watch = subprocess.Popen(
        ["ip", "netns", "exec", lab.client, "python3", "scripts/lab/arp_watch.py",
         "eth0", VIP, str(secs), "--every", str(ARP_EVERY)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watch.stderr.readline()  # "ready"
    client = new_client(lab)
    try:
        client.wait_clean(time.time(), 10, f"{c.name}: the client did not get through")
        cut = time.time()
        lab.cut(holder, others)
        time.sleep(PARTITION)
        healed = time.time()
        lab.cut(holder, others, heal=True)
        after = wait_stable(lab, c, alive)
        time.sleep(SETTLE)
        settled = time.time()
    finally:
        attempts = client.finish()
        try:
            out, _ = watch.communicate(timeout=secs + 30)
        except subprocess.TimeoutExpired:
            watch.kill()
            out, _ = watch.communicate()
    claims = json.loads(out)["claims"] if out.strip() else []
    two, none, turns, _ = split_brain(claims, cut, settled)
    macs = {}
    for n in alive:
        link = json.loads(run("ip", "-n", lab.lbs[n], "-j", "link", "show", "eth0").stdout)
        macs[link[0]["address"]] = f"lb{n + 1}"
    return {
        "cut_holder": holder + 1, "after_holder": after + 1, "seconds": PARTITION,
        "split_brain": two, "unanswered": none,
        "turns": ["+".join(sorted(macs.get(m, m) for m in t)) for t in turns],
        "failed": failures(attempts, cut, settled),
        "outage": outage(attempts, cut, settled),
        "healed_at": healed - cut,
    }


def run_contender(name):
    lab = Lab(name)
    try:
        lab.build()
        c = CONTENDER_TYPES[name](lab)
        alive = [0, 1, 2]
        for n in alive:
            c.start(n)
        holder = wait_stable(lab, c, alive)
        runs = []
        for i in range(FAILOVERS):
            r = one_failover(lab, c, alive, holder, holder)
            holder = r["new_holder"] - 1
            runs.append(r)
            print(f"  {name} {i + 1}/{FAILOVERS}: lb{r['victim']} -> lb{r['new_holder']}, "
                  f"outage {r['outage']:.3f} s, {r['failed']} failed, "
                  f"{r['returned_failed']} on return", flush=True)
        bystander = next(n for n in alive if n != holder)
        b = one_failover(lab, c, alive, holder, bystander)
        print(f"  {name} backup lb{bystander + 1} lost power: {b['failed']} failed, "
              f"{b['returned_failed']} on its return", flush=True)
        holder = wait_stable(lab, c, alive)
        p = one_partition(lab, c, alive, holder)
        print(f"  {name} holder lb{p['cut_holder']} cut off for {PARTITION:.0f} s: two nodes "
              f"answered ARP for {p['split_brain'] * 1000:.0f} ms, nobody for "
              f"{p['unanswered'] * 1000:.0f} ms, turns {' '.join(p['turns'][:12])}, "
              f"{p['failed']} new connections failed", flush=True)
        return {"runs": runs, "bystander": b, "partition": p}
    finally:
        if OPTS.keep_logs:
            keep_logs(lab, name)
        lab.close()


def row(name, res):
    runs = res["runs"]
    out = [r["outage"] for r in runs]
    failed = [r["failed"] for r in runs]
    moved = [r["vip_moved"] for r in runs if r["vip_moved"] is not None]
    return (f"| {CONTENDER_TYPES[name].label} | {len(runs)} | {ms(pct(out, 0.5))} "
            f"| {ms(pct(out, 0.99))} | {ms(max(out))} | {statistics.mean(failed):.1f} "
            f"| {max(failed)} | {sum(r['returned_failed'] for r in runs)} "
            f"| {res['bystander']['failed']} (+{res['bystander']['returned_failed']} on its return) "
            f"| {ms(pct(moved, 0.5)) if moved else '–'} |")


def phase_notes(name, res):
    runs = res["runs"]
    parts = []
    elected = ("the new holder was elected" if name == "xlb"
               else "the new holder's keepalived entered MASTER (its notify hook ran)")
    for key, what in (("detected", "a survivor gave up on the dead holder"),
                      ("elected", elected),
                      ("vip_moved", "the VIP was on the new holder (polled every 20 ms)"),
                      ("outage", "new connections succeeded again")):
        xs = [r[key] for r in runs if r.get(key) is not None]
        if xs:
            parts.append(f"{what} p50 {ms(pct(xs, 0.5))}, max {ms(max(xs))}")
    notes = [f"- {CONTENDER_TYPES[name].label}: " + "; ".join(parts) + "."]
    terms = [r for r in runs if r.get("terms") is not None]
    if terms:
        extra = [r for r in terms if r["terms"] > 1]
        notes.append(f"  {len(extra)} of {len(terms)} elections took more than one Raft term.")
    held = [r for r in runs if r.get("held_back") == 2]
    if any("held_back" in r for r in runs):
        rest = [r for r in runs if r.get("held_back", 0) < 2]
        notes.append(
            f"  In {len(held)} of {len(runs)} failovers openraft held both survivors back "
            "(each had seen a greater log since it last campaigned)"
            + (f": outage p50 {ms(pct([r['outage'] for r in held], 0.5))} there" if held else "")
            + (f", p50 {ms(pct([r['outage'] for r in rest], 0.5))} in the others" if rest else "")
            + ".")
    slow = [r for r in runs if "held_back" in r and r["outage"] > 1.0]
    if slow:
        notes.append(f"  {len(slow)} failovers took over 1 s; in {sum(r['held_back'] == 2 for r in slow)}"
                     " of them both survivors were held back.")
    return "\n".join(notes)


def main():
    bench_main(OPTS, CONTENDER_TYPES, run_contender, write_report, "scripts/bench-ha.sh",
               {"every_s": EVERY, "timeout_s": TIMEOUT, "settle_s": SETTLE})


def turns(ts):
    """The turns, or their first and last few with how many between."""
    if len(ts) > 9:
        ts = ts[:4] + [f"({len(ts) - 8} more)"] + ts[-4:]
    return " → ".join(ts)


def partition_rows(names, results):
    rows = ["| contender | two nodes answered (split brain) | nobody answered "
            "| turns | failed new conns |", "|---|---|---|---|---|"]
    for n in names:
        p = results[n].get("partition")
        if p:
            rows.append(f"| {CONTENDER_TYPES[n].label} | {ms(p['split_brain'])} "
                        f"| {ms(p['unanswered'])} | {turns(p['turns'])} | {p['failed']} |")
    return rows


def write_report(meta, results, raw):
    """The table on stdout; OUT (Markdown) and, for a new run, its raw
    numbers in `raw` (.json), from which --report writes OUT again."""
    names = [n for n in CONTENDER_TYPES if n in results]
    header = ["| contender | failovers | outage p50 | outage p99 | outage max "
              "| failed new conns per failover, mean | max | failed on return (all) "
              "| failed on a backup's power loss | VIP on the new holder, p50 |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    rows = [row(n, results[n]) for n in names]
    print("\n".join(header + rows + [""] + partition_rows(names, results)))
    every, timeout, settle = meta["every_s"], meta["timeout_s"], meta["settle_s"]
    n_runs = max(len(results[n]["runs"]) for n in names)
    doc = [
        "# High availability: the VIP's holder loses power → new connections succeed again",
        "",
        f"`{meta['command']}`; {meta['date']}, {meta['cores']} cores ({meta['cpu']}), "
        f"kernel {meta['kernel']}, load average at the end {meta['load']}; {meta['versions']}.",
        "",
        "The K3s docs' layout on one bridge: client 10.10.10.2, balancers lb-1 .98, lb-2 .99,",
        f"lb-3 .97, API servers .50–.52 on :6443, VIP {VIP}:6443. The client opens a new",
        f"connection every {every * 1000:.0f} ms (each on its own thread, one HTTP request, "
        f"{timeout * 1000:.0f} ms timeout).",
        "At a random moment of a second the holder loses power (processes frozen, links down,",
        "killed); once new connections succeed again, it comes back (addresses, XDP, nftables",
        "and conntrack flushed as a reboot would; daemons restarted) and the next failover",
        "kills the new holder.",
        "",
        *header, *rows,
        "",
        "*outage*: power loss → the start of the first new connection that succeeded after the",
        "last one that failed (`outage()` in `control/tests/e2e/ha.rs`), per failover; p99 is",
        f"interpolated between the closest ranks, so with {n_runs} failovers it lies near the max.",
        "*failed on return*: new connections failed from the power-on until the group was stable",
        f"(the returned node a backup, the VIP where it was) plus {settle:.0f} s, summed over every return.",
        "*backup's power loss*: a node holding nothing, once per contender, for "
        f"{settle + 1:.0f} s, then its return.",
        "*VIP on the new holder*: power loss → the VIP seen on another node (polled every 20 ms).",
        "",
        "Contenders, three balancers each on a fresh copy of the layout:",
        "- **xlb**: `xlb run --iface eth0 --snat-addrs 10.10.10.101 --cluster "
        "10.10.10.98,10.10.10.99,10.10.10.97 --self N`,",
        "  the K3s rule (round robin, full NAT from the floating 10.10.10.101).",
        "- **keepalived** (both pairs): VRRP, `advert_int 1`, `virtual_ipaddress "
        "10.10.10.100/24` on eth0,",
        "  priorities 150/100/50 on lb-1..3, every node `state BACKUP` with `nopreempt`. The K3s",
        "  docs' pair has two nodes, `state MASTER` on lb-1 and preemption: there a return is a",
        "  second failover. Here, as with xlb, the VIP stays where it is. No `track_script`",
        "  (`killall -0 haproxy` would see the other namespaces' HAProxy); a power loss stops",
        "  keepalived itself. A backup takes over 3 adverts plus (256 − priority)/256 s after",
        "  the last advert it heard: 3.41 s at 150, 3.61 s at 100.",
        "- **HAProxy**: the K3s docs' `mode tcp` frontend on :6443 and round-robin backend of the",
        "  three servers (`check`, `inter 10s`), on every balancer.",
        "- **nftables**: `ip nat` prerouting DNAT of VIP:6443 to `numgen inc mod 3` over the",
        "  servers, masquerade in postrouting, on every balancer.",
        "",
        "The holder cut off from the other balancers (the client still reaches every node) for",
        f"{PARTITION:.0f} s, then healed; ARP requests for the VIP from the client every "
        f"{ARP_EVERY * 1000:.0f} ms, from the cut to {settle:.0f} s after the group was stable again:",
        "",
        *partition_rows(names, results),
        "",
        "*two nodes answered*: time in which two different nodes claimed the VIP (ARP replies",
        f"or gratuitous ARP) within one {ARP_EVERY * 1000:.0f} ms request interval: split brain. "
        "*nobody answered*: gaps",
        f"of more than {3 * ARP_EVERY * 1000:.0f} ms without a claim. *turns*: the nodes that "
        "claimed it, in order (a + joins nodes that claimed it in the same interval).",
        "",
        "Where the time went (power loss → …):",
        *[phase_notes(n, results[n]) for n in names],
    ]
    if any(r.get("held_back") == 2 for n in names for r in results[n]["runs"]):
        doc += [
            "",
            "*Held back*: a restarted xlb initialises its Raft at once, with an empty log, and asks",
            "for votes; the others refuse by log, and openraft remembers that it has seen a greater",
            "log. Until that node next campaigns, openraft adds `smaller_log_timeout` (2 × the",
            "300 ms longest election timeout) to its election timeout. When both survivors carry",
            "that mark, whichever campaigns first does so 600 ms late (openraft's own info lines,",
            "`seen a greater log id` and `do trigger election`, show it).",
        ]
    odd = [(n, i + 1, r) for n in names
           for i, r in enumerate(results[n]["runs"] + [results[n]["bystander"]])
           if r["before"]]
    if odd:
        doc += ["", "New connections that failed before a power loss (a loaded machine):"]
        doc += [f"- {n} run {i}: {r['before']}" for n, i, r in odd]
    returns = [(n, i + 1, r) for n in names
               for i, r in enumerate(results[n]["runs"] + [results[n]["bystander"]])
               if r["returned_failed"]]
    if returns:
        doc += ["", "New connections that failed during a node's return (start after the power-on: error):"]
        doc += [f"- {n} run {i}: " + ", ".join(f"{t:.2f} s {e}" for t, e in r["return_failures"])
                for n, i, r in returns]
    errs = {n: sorted({e for r in results[n]["runs"] for e in r["errors"]}) for n in names}
    doc += ["", "Errors the client saw: " + "; ".join(
        f"{n}: {', '.join(e) or 'none'}" for n, e in errs.items()) + ".",
        "", f"Every failover's numbers: `{os.path.basename(raw or OPTS.opt('--report', ''))}`; "
        f"`scripts/lab/ha_bench.py --report` on it writes this file again."]
    save_report(OUT, doc, meta, results, raw)


guard(main)
