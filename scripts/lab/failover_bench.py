#!/usr/bin/env python3
"""Failover time (issue 5): how long after a backend dies xlb stops sending
new connections to it, against the probe budget it was configured with.

Run through scripts/bench-failover.sh (builds xlb, needs root). For each
(probeDuration, inactiveReTries) the K3s HA guide's files are loaded with
their addresses moved into the lab; a client opens a new connection to
VIP:6443 every 50 ms; backend 2's server is killed. Measured per run:
  detected  kill -> endpoint "inactive" in GET /config/loadbalancer/all
  avoided   kill -> the last new connection that failed (after it, every
            new connection succeeded: xlb avoids the dead backend)
  failed    new connections that failed after the kill
Budget = retries x duration + 1 s (the tcp probe's connect timeout).

usage: failover_bench.py [--quick] [--out FILE]"""
import json
import os
import signal
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.chdir(ROOT)
QUICK = "--quick" in sys.argv
OUT = sys.argv[sys.argv.index("--out") + 1] if "--out" in sys.argv else "perf/results/failover.md"
PREFIX = f"xfb{os.getpid() % 10000}"
ENV = dict(os.environ, XLB_LAB=PREFIX)
VIP = "10.10.100.1"
BACKENDS = ["10.10.2.11", "10.10.2.12", "10.10.2.13"]
XLB = os.environ.get("XLB_BIN", "target/release/xlb")
CFG = f"/tmp/{PREFIX}-cfg"
CONFIGS = [(1, 1), (1, 2), (2, 2)] + ([] if QUICK else [(10, 2)])
if os.environ.get("FAILOVER_CONFIGS"):  # e.g. "1:2,2:2" (duration:retries)
    CONFIGS = [tuple(int(x) for x in c.split(":")) for c in os.environ["FAILOVER_CONFIGS"].split(",")]
REPEATS = 1 if QUICK else 3

servers = {}
xlb = None


def ns(role):
    return f"{PREFIX}-{role}"


def start_server(i):
    servers[i] = subprocess.Popen(
        ["ip", "netns", "exec", ns(f"be{i}"), "python3", "scripts/lab/backend.py",
         f"backend-{i}", "--http-port", "6443", "--no-udp"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(50):
        r = subprocess.run(["ip", "netns", "exec", ns(f"be{i}"), "curl", "-s", "-m", "1",
                            f"http://{BACKENDS[i - 1]}:6443/"], capture_output=True)
        if r.returncode == 0:
            return
        time.sleep(0.1)
    raise SystemExit(f"backend {i} did not listen on :6443")


def stop_server(i):
    s = servers.pop(i, None)
    if s:
        s.kill()
        s.wait()


def api(path):
    r = subprocess.run(["ip", "netns", "exec", ns("lb"), "curl", "-s", "-m", "2",
                        f"http://127.0.0.1:11111/netlox/v1{path}"], capture_output=True, text=True)
    return json.loads(r.stdout) if r.returncode == 0 and r.stdout else None


def state_of(ip):
    got = api("/config/loadbalancer/all") or {}
    for rule in got.get("lbAttr", []):
        for e in rule.get("endpoints", []):
            if e.get("endpointIP") == ip:
                return e.get("state", "")
    return ""


def write_configs(period, retries):
    os.makedirs(CFG, exist_ok=True)
    # The guide's two servers extended to the lab's three backends, each one
    # added like the others (an endpoint and a probe entry).
    ep = json.load(open("configs/k3s-ha/EPconfig.txt"))
    ep["Attr"] = [dict(ep["Attr"][0]) for _ in BACKENDS]
    for e, b in zip(ep["Attr"], BACKENDS):
        e.update(hostName=b, name=f"{b}_{e['probeType']}_{e['probePort']}",
                 probeDuration=period, inactiveReTries=retries)
    json.dump(ep, open(f"{CFG}/EPconfig.txt", "w"))
    lb = json.load(open("configs/k3s-ha/lbconfig.txt"))
    rule = lb["lbAttr"][0]
    rule["serviceArguments"]["externalIP"] = VIP
    rule["endpoints"] = [dict(rule["endpoints"][0]) for _ in BACKENDS]
    for e, b in zip(rule["endpoints"], BACKENDS):
        e["endpointIP"] = b
    json.dump(lb, open(f"{CFG}/lbconfig.txt", "w"))


def start_xlb():
    global xlb
    log = open(f"{CFG}/xlb.log", "w")
    xlb = subprocess.Popen(["ip", "netns", "exec", ns("lb"), XLB, "run", "--iface", "lb0,lb1",
                            "--config-path", CFG, "--api", "127.0.0.1:11111"],
                           stdout=log, stderr=log)
    for _ in range(100):
        if api("/config/loadbalancer/all") is not None:
            return
        if xlb.poll() is not None:
            break
        time.sleep(0.1)
    raise SystemExit("xlb did not come up:\n" + open(f"{CFG}/xlb.log").read())


def stop_xlb():
    global xlb
    if xlb:
        xlb.send_signal(signal.SIGTERM)
        try:
            xlb.wait(10)
        except subprocess.TimeoutExpired:
            xlb.kill()
            xlb.wait()
        xlb = None


def one_run(period, retries):
    budget = retries * period + 1
    write_configs(period, retries)
    start_xlb()
    time.sleep(period + 0.5)
    secs = budget + 4
    client = subprocess.Popen(
        ["ip", "netns", "exec", ns("client"), "python3", "scripts/lab/failover_client.py",
         VIP, "6443", str(secs), "--long", "0", "--every", "0.05"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    client.stderr.readline()
    time.sleep(1)
    killed = time.time()
    stop_server(2)
    detected = None
    while time.time() - killed < budget * 3:
        if state_of(BACKENDS[1]) == "inactive":
            detected = time.time() - killed
            break
        time.sleep(0.05)
    out, _ = client.communicate(timeout=secs + 30)
    report = json.loads(out)
    after = [c for c in report["new"] if c[0] >= killed]
    failed = [c for c in after if c[1] is None]
    # Refused or reset: the dead backend was chosen. Timeouts are losses,
    # reported apart.
    refused = [c for c in failed if "imeout" not in c[2]]
    avoided = max((c[0] - killed for c in refused), default=0.0)
    start_server(2)
    stop_xlb()
    return {"detected": detected, "avoided": avoided, "failed": len(refused),
            "timeouts": len(failed) - len(refused), "new": len(after),
            "failures": [(round(c[0] - killed, 3), c[2]) for c in failed]}


def fmt(xs, unit="s"):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "never"
    if len(xs) == 1:
        return f"{xs[0]:.2f} {unit}"
    return f"{statistics.median(xs):.2f} {unit} ({min(xs):.2f}–{max(xs):.2f})"


def main():
    subprocess.run(["bash", "scripts/lab.sh", "up"], env=ENV, check=True,
                   stdout=subprocess.DEVNULL)
    for i in (1, 2, 3):
        start_server(i)
    rows = []
    for period, retries in CONFIGS:
        runs = [one_run(period, retries) for _ in range(REPEATS)]
        budget = retries * period + 1
        row = (f"| {period} s | {retries} | {budget} s | {fmt([r['detected'] for r in runs])} "
               f"| {fmt([r['avoided'] for r in runs])} "
               f"| {statistics.median([r['failed'] for r in runs]):.0f} of "
               f"{statistics.median([r['new'] for r in runs]):.0f} "
               f"| {sum(r['timeouts'] for r in runs)} |")
        print(row, flush=True)
        rows.append(row)
        for r in runs:
            if r["detected"] is None or r["detected"] > budget or r["avoided"] > budget:
                print(f"  over budget: {r}", flush=True)
    load = open("/proc/loadavg").read().split()[:3]
    doc = [
        "# Failover time: backend killed → new connections avoid it",
        "",
        f"`sudo scripts/bench-failover.sh{' --quick' if QUICK else ''}`, {REPEATS} run(s) per row, "
        f"median (min–max); load average at the end {' '.join(load)}, {os.cpu_count()} cores.",
        "The K3s HA guide's files (VIP:6443, full NAT, round robin, tcp probes), a new",
        "connection every 50 ms; backend 2's server is killed.",
        "",
        "| probeDuration | inactiveReTries | budget | detected | last refused new connection | refused new connections | timeouts (all runs) |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        "budget = retries × duration + 1 s probe timeout; *detected*: kill → `inactive` in GET;",
        "*last refused*: kill → the last new connection refused or reset (the dead backend",
        "chosen; none after it); *timeouts*: new connections unanswered within 3 s, a loss",
        "rather than a wrong choice, counted apart.",
    ]
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        f.write("\n".join(doc) + "\n")
    print(f"wrote {OUT}")


try:
    main()
finally:
    stop_xlb()
    for i in list(servers):
        stop_server(i)
    subprocess.run(["bash", "scripts/lab.sh", "down"], env=ENV, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    subprocess.run(["rm", "-rf", CFG])
