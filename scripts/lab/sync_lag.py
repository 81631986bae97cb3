#!/usr/bin/env python3
"""Connection sync's lag and bandwidth through the daemon (issue 17): new
flows per second into the VIP's holder, and how long each took to reach
the other member's workers.

The HA lab (halab.py) with two xlb nodes in a sync group whose roles are
set as kube-loxilb sets them (`--cluster --no-election`, lb-1 MASTER, lb-2
BACKUP), the K3s rule in DNAT (full NAT from one floating source holds at
most 20,000 flows per server: the pool, not sync, would be measured).
xlb-pktgen in the client's namespace sends TCP SYNs to VIP:6443,
every one from a client port not seen before (so each is a new flow on the
holder), at each rate in turn for a few seconds. For every rate the
benchmark reads, as deltas of the daemons' own metrics:
- lag: the BACKUP's `xlb_sync_lag_seconds` histogram (the holder's first
  packet of a flow → the flow handed to a worker on the BACKUP; both
  nodes share this machine's clock); percentiles are the upper bound of
  the bucket they fall in;
- delivered: the BACKUP's `xlb_sync_events_received_total{kind="open"}`
  against the SYNs sent;
- bandwidth: the holder's `xlb_sync_bytes_sent_total` (frames, TCP/IP
  headers aside) over the sending time, and per flow (closes of expired
  flows included);
- losses: either node's queue drops and refused deliveries.

Usage: sync_lag.py [--rates 1000,10000,100000] [--secs 3] [--out perf/results/sync-lag]
"""
import argparse
import datetime
import json
import os
import re
import time

import halab
from halab import CLIENT, FLOATING, LBS, PORT, SERVERS, VIP, BenchError, in_ns, run

PKTGEN = os.path.join(halab.ROOT, os.environ.get("PKTGEN_BIN", "target/release/xlb-pktgen"))
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)$")


def metrics(ns):
    """The daemon's metrics in `ns` as {"name{labels}": value}."""
    r = in_ns(ns, "curl", "-s", "-m", "2", "http://127.0.0.1:11111/netlox/v1/metrics", check=False)
    out = {}
    for line in r.stdout.splitlines():
        m = SAMPLE.match(line.strip())
        if m:
            try:
                out[m.group(1)] = float(m.group(2))
            except ValueError:
                pass
    return out


def delta(after, before, name):
    return after.get(name, 0.0) - before.get(name, 0.0)


def lag_percentiles(after, before, qs):
    """Upper bucket bounds (seconds) holding the `qs` quantiles of the lags
    observed between the two scrapes; None where no lag was observed."""
    bounds = []
    for k in after:
        m = re.match(r'^xlb_sync_lag_seconds_bucket\{le="([^"]+)"\}$', k)
        if m:
            le = float("inf") if m.group(1) == "+Inf" else float(m.group(1))
            bounds.append((le, delta(after, before, k)))
    bounds.sort()
    total = bounds[-1][1] if bounds else 0
    if total <= 0:
        return [None for _ in qs]
    return [next(le for le, n in bounds if n >= q * total) for q in qs]


def start_xlb(lab, node):
    d = os.path.join(lab.dir, f"lb{node + 1}")
    env = dict(os.environ, XLB_CLUSTER_KEY=halab.KEY, NO_COLOR="1")
    p = lab.spawn(node, [halab.XLB, "run", "--iface", "eth0", "--cluster", ",".join(LBS[:2]),
                         "--self", str(node), "--no-election", "--config-path", d,
                         "--api", "127.0.0.1:11111", "--conntrack-buckets", str(1 << 17)],
                  f"lb{node + 1}/xlb.log", env=env)
    lab.wait(lambda: p.poll() is not None or "xlb_sync_peer_up" in "".join(metrics(lab.lbs[node])),
             30, f"xlb on lb{node + 1} did not answer")
    if p.poll() is not None:
        raise BenchError(f"xlb on lb{node + 1} exited: {tail(lab, node)}")


def tail(lab, node):
    try:
        with open(os.path.join(lab.dir, f"lb{node + 1}/xlb.log")) as f:
            return "".join(f.readlines()[-15:])
    except OSError:
        return ""


def set_role(lab, node, state):
    body = json.dumps({"instance": "llb-inst0", "state": state, "vip": FLOATING})
    r = in_ns(lab.lbs[node], "curl", "-s", "-m", "2", "-X", "POST", "-H",
              "Content-Type: application/json", "-d", body,
              "http://127.0.0.1:11111/netlox/v1/config/cistate")
    if '"Success"' not in r.stdout:
        raise BenchError(f"cistate {state} on lb{node + 1}: {r.stdout}")


def one_rate(lab, rate, secs, base):
    """Send `rate` new flows/s for `secs` from clients at 10.10.10.`base`+;
    what the daemons' metrics say about them."""
    flows = int(rate * secs)
    # At most 50,000 client ports per source address.
    ips = max(1, -(-flows // 50_000))
    holder, backup = lab.lbs[0], lab.lbs[1]
    m0, m1 = metrics(holder), metrics(backup)
    r = in_ns(lab.client, PKTGEN, "tx", "--json", "-q", "--iface", "eth0", "--dst",
              f"{VIP}:{PORT}", "--proto", "syn", "--src-ip", f"10.10.10.{base}",
              "--src-ips", str(ips), "--sport", "10000", "--flows", str(flows),
              "--count", str(flows), "--rate", str(rate), "--duration", str(secs + 5),
              timeout=secs + 30)
    tx = json.loads(r.stdout)["tx"]
    # Let the last events cross and the histograms settle.
    time.sleep(1.0)
    a0, a1 = metrics(holder), metrics(backup)
    opens = delta(a1, m1, 'xlb_sync_events_received_total{kind="open"}')
    sent_secs = tx["secs"] or secs
    nbytes = delta(a0, m0, "xlb_sync_bytes_sent_total")
    p50, p90, p99, p999 = lag_percentiles(a1, m1, [0.5, 0.9, 0.99, 0.999])
    lags = delta(a1, m1, "xlb_sync_lag_seconds_count")
    return {
        "rate": rate,
        "secs": round(sent_secs, 3),
        "syns_sent": tx["packets"],
        "sent_per_sec": round(tx["packets"] / sent_secs) if sent_secs else 0,
        "opens_received": int(opens),
        "lags_measured": int(lags),
        "lag_mean_ms": round(1000 * delta(a1, m1, "xlb_sync_lag_seconds_sum") / lags, 3)
        if lags else None,
        "lag_p50_ms": p50 and p50 * 1000,
        "lag_p90_ms": p90 and p90 * 1000,
        "lag_p99_ms": p99 and p99 * 1000,
        "lag_p999_ms": p999 and p999 * 1000,
        "sync_bytes": int(nbytes),
        "sync_mbit_per_sec": round(8 * nbytes / sent_secs / 1e6, 2) if sent_secs else 0,
        "bytes_per_flow": round(nbytes / opens, 1) if opens else None,
        "queue_dropped": int(delta(a0, m0, "xlb_sync_queue_dropped_total")),
        "delivery_refused": int(delta(a1, m1, "xlb_sync_delivery_refused_total")),
        "holder_drops": drops(a0, m0),
    }


def drops(after, before):
    """Frames the node dropped between two scrapes, by reason (every
    worker's together)."""
    out = {}
    for k in after:
        m = re.match(r'^xlb_worker_drops_total\{.*reason="([^"]+)".*\}$', k)
        if m and delta(after, before, k) > 0:
            out[m.group(1)] = out.get(m.group(1), 0) + int(delta(after, before, k))
    return out


def fmt_ms(v):
    if v is None:
        return "–"
    return "> 5000" if v == float("inf") else f"≤ {v:g}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rates", default="1000,10000,100000")
    ap.add_argument("--secs", type=float, default=3.0)
    ap.add_argument("--out", default="perf/results/sync-lag")
    opts = ap.parse_args()
    rates = [int(r) for r in opts.rates.split(",")]
    halab.setup("xsl", "sync lag bench")
    lab = halab.Lab("lag")
    lab.build(udp=False)
    rule = {"serviceArguments": {"externalIP": VIP, "port": PORT, "protocol": "tcp",
                                 "sel": 0, "mode": 0, "name": "k3s-api"},
            "endpoints": [{"endpointIP": s, "targetPort": PORT, "weight": 1} for s in SERVERS]}
    for node in (0, 1):
        d = os.path.join(lab.dir, f"lb{node + 1}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "lbconfig.txt"), "w") as f:
            json.dump({"lbAttr": [rule]}, f)
        start_xlb(lab, node)
    set_role(lab, 1, "BACKUP")
    set_role(lab, 0, "MASTER")
    lab.wait(lambda: lab.has_vip(0), 5, "lb-1 did not take the VIP")
    up = 'xlb_sync_peer_up{peer="%s:%d"}'
    lab.wait(lambda: metrics(lab.lbs[0]).get(up % (LBS[1], 11113)) == 1.0, 10,
             "the sync link did not come up")
    # The client learns the VIP's MAC (pktgen reads the neighbour table;
    # the holder's kernel answers ping for the VIP it holds). In DNAT the
    # servers answer the clients directly, so no connection is tried here.
    try:
        lab.wait(lambda: in_ns(lab.client, "ping", "-c", "1", "-W", "1", VIP,
                               check=False).returncode == 0, 10, "the VIP did not answer ping")
    except BenchError as e:
        raise BenchError(f"{e}; lb-1's log:\n{tail(lab, 0)}") from e
    results = []
    for i, rate in enumerate(rates):
        res = one_rate(lab, rate, opts.secs, 100 + 40 * i)
        print(json.dumps(res), flush=True)
        results.append(res)
    lab.close()
    load = os.getloadavg()
    doc = {"when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "command": "sudo scripts/bench-sync-lag.sh " + " ".join(
               f"--{k} {v}" for k, v in (("rates", opts.rates), ("secs", opts.secs))),
           "loadavg": load, "results": results}
    with open(opts.out + ".json", "w") as f:
        json.dump(doc, f, indent=1)
    with open(opts.out + ".md", "w") as f:
        f.write("# Connection sync: lag and bandwidth through the daemon\n\n")
        f.write(f"`{doc['command']}` ({doc['when']}, load average "
                f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}, {os.cpu_count()} CPUs).\n\n")
        f.write("Two xlb nodes (`--cluster --no-election`, lb-1 MASTER, lb-2 BACKUP), TCP SYNs "
                "from new client ports into VIP:6443 (DNAT, round robin) at each rate. "
                "Lag: the holder's first packet → the flow handed to a BACKUP worker; "
                "percentiles are the upper bound of their histogram bucket. Bandwidth: sync "
                "frames the holder sent (TCP/IP headers aside).\n\n")
        f.write("| new flows/s asked | sent/s | flows on the BACKUP | lag p50 | p90 | p99 | p99.9 | "
                "mean | sync bandwidth | bytes per flow | queue drops |\n")
        f.write("|---|---|---|---|---|---|---|---|---|---|---|\n")
        for r in results:
            f.write(f"| {r['rate']:,} | {r['sent_per_sec']:,} | {r['opens_received']:,} / "
                    f"{r['syns_sent']:,} | {fmt_ms(r['lag_p50_ms'])} ms | "
                    f"{fmt_ms(r['lag_p90_ms'])} ms | {fmt_ms(r['lag_p99_ms'])} ms | "
                    f"{fmt_ms(r['lag_p999_ms'])} ms | {r['lag_mean_ms']} ms | "
                    f"{r['sync_mbit_per_sec']} Mbit/s | {r['bytes_per_flow']} | "
                    f"{r['queue_dropped'] + r['delivery_refused']} |\n")
    print(f"wrote {opts.out}.md and .json")


if __name__ == "__main__":
    halab.guard(main)
