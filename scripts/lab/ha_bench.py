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
import datetime
import http.client
import json
import os
import random
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VIP = "10.10.10.100"
PORT = 6443
FLOATING = "10.10.10.101"
CLIENT = "10.10.10.2"
LBS = ["10.10.10.98", "10.10.10.99", "10.10.10.97"]
SERVERS = ["10.10.10.50", "10.10.10.51", "10.10.10.52"]
PRIORITIES = [150, 100, 50]
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
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT[\d:.]+Z)")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
TERM = re.compile(r"\bterm=(\d+)")


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
ARGS = sys.argv[1:]


def opt(name, default):
    return ARGS[ARGS.index(name) + 1] if name in ARGS else default


QUICK = "--quick" in ARGS
FAILOVERS = int(opt("--failovers", 3 if QUICK else 20))
CONTENDERS = opt("--contenders", "xlb,haproxy,nft").split(",")
OUT = opt("--out", "perf/results/ha-failover.md")
KEEP_LOGS = "--keep-logs" in ARGS
XLB = os.path.abspath(os.environ.get("XLB_BIN", "target/release/xlb"))
PREFIX = f"xhb{os.getpid() % 10000}"
WORK = tempfile.mkdtemp(prefix=f"{PREFIX}-")
KEY = secrets.token_hex(16)
# Every namespace this run made and has not removed yet: removed on any exit.
LIVE_NS = []


class BenchError(Exception):
    pass


def run(*args, check=True, timeout=20, env=None, input=None):
    r = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env,
                       input=input)
    if check and r.returncode != 0:
        raise BenchError(f"{' '.join(args)}: {r.stderr.strip() or r.stdout.strip()}")
    return r


def in_ns(ns, *args, **kw):
    return run("ip", "netns", "exec", ns, *args, **kw)


def signal_pid(pid, sig):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def netns_pids(ns):
    r = run("ip", "netns", "pids", ns, check=False)
    me = os.getpid()
    return [int(p) for p in r.stdout.split() if p.isdigit() and int(p) != me]


# ------------------------------------------------------------------ the lab

class Lab:
    """One copy of the K3s layout: namespaces named after this process,
    every one of them removed by close(), whatever happened before."""

    def __init__(self, name):
        self.name = name
        self.dir = os.path.join(WORK, name)
        os.makedirs(self.dir)
        self.procs = {}  # node -> [Popen]
        self.servers = []

    def build(self):
        self.sw = self.add_ns("sw")
        run("ip", "-n", self.sw, "link", "add", "br0", "type", "bridge")
        for k in ("iptables", "ip6tables", "arptables"):
            in_ns(self.sw, "sysctl", "-qw", f"net.bridge.bridge-nf-call-{k}=0", check=False)
        run("ip", "-n", self.sw, "link", "set", "br0", "up")
        self.client = self.attach("client", "pc", CLIENT)
        self.lbs = [self.attach(f"lb{i + 1}", f"pl{i + 1}", a) for i, a in enumerate(LBS)]
        srv = [self.attach(f"s{i + 1}", f"ps{i + 1}", a) for i, a in enumerate(SERVERS)]
        for i, ns in enumerate(srv):
            log = open(os.path.join(self.dir, f"s{i + 1}.log"), "w")
            self.servers.append(subprocess.Popen(
                ["ip", "netns", "exec", ns, "python3", "scripts/lab/backend.py",
                 f"backend-{i + 1}", "--http-port", str(PORT), "--no-udp"],
                stdout=log, stderr=log))
            # Speak first, so the segment learns where each server is.
            in_ns(ns, "ping", "-c", "1", "-W", "1", CLIENT, check=False)
        for s in SERVERS:
            self.wait(lambda s=s: in_ns(self.client, "curl", "-s", "-m", "1",
                                        f"http://{s}:{PORT}/", check=False).returncode == 0,
                      10, f"server {s} did not answer")

    def add_ns(self, role):
        name = f"{PREFIX}-{role}"
        LIVE_NS.append(name)
        run("ip", "netns", "add", name)
        run("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def attach(self, role, port, addr):
        ns = self.add_ns(role)
        run("ip", "-n", self.sw, "link", "add", port, "type", "veth",
            "peer", "name", "eth0", "netns", ns)
        run("ip", "-n", self.sw, "link", "set", port, "master", "br0")
        # Test hosts on veth: no partial checksums (as the test kit does).
        in_ns(self.sw, "ethtool", "-K", port, "tx", "off", check=False)
        in_ns(ns, "ethtool", "-K", "eth0", "tx", "off", check=False)
        run("ip", "-n", self.sw, "link", "set", port, "up")
        run("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
        run("ip", "-n", ns, "link", "set", "eth0", "up")
        return ns

    @staticmethod
    def wait(cond, limit, what):
        deadline = time.time() + limit
        while time.time() < deadline:
            if cond():
                return
            time.sleep(0.1)
        raise BenchError(what)

    def spawn(self, node, args, log, env=None):
        f = open(os.path.join(self.dir, log), "a")
        p = subprocess.Popen(["ip", "netns", "exec", self.lbs[node], *args],
                             stdout=f, stderr=f, env=env)
        self.procs.setdefault(node, []).append(p)
        return p

    def has_vip(self, node):
        r = run("ip", "-n", self.lbs[node], "-4", "-o", "addr", "show", check=False)
        return f" {VIP}/" in r.stdout

    def power_loss(self, node):
        """Processes frozen first, so none sees its links go down; then the
        links; then the processes killed."""
        ns = self.lbs[node]
        pids = netns_pids(ns)
        for p in pids:
            signal_pid(p, signal.SIGSTOP)
        links = json.loads(run("ip", "-n", ns, "-j", "link", "show").stdout)
        for link in links:
            if link["ifname"] != "lo":
                run("ip", "-n", ns, "link", "set", link["ifname"], "down")
        for p in pids:
            signal_pid(p, signal.SIGKILL)
        for p in self.procs.pop(node, []):
            p.kill()
            p.wait(10)

    def cut(self, node, others, heal=False):
        """Drop every frame between `node`'s port and the `others`' on the
        bridge (both ways); the client still reaches everyone. `heal`
        undoes it."""
        if not heal and not getattr(self, "cut_table", False):
            in_ns(self.sw, "nft", "-f", "-", input=(
                "table bridge xhbcut {\n set cut { type ifname . ifname; }\n"
                " chain forward {\n  type filter hook forward priority 0; policy accept;\n"
                "  iifname . oifname @cut drop\n }\n}\n"))
            self.cut_table = True
        pairs = ", ".join(f"pl{a + 1} . pl{b + 1}" for o in others
                          for a, b in ((node, o), (o, node)))
        in_ns(self.sw, "nft", "delete" if heal else "add", "element", "bridge", "xhbcut",
              "cut", f"{{ {pairs} }}")

    def reboot_state(self, node):
        """What a reboot leaves: only the configured address, no XDP program,
        no nftables rules, an empty connection table; links up."""
        ns = self.lbs[node]
        run("ip", "-n", ns, "addr", "flush", "dev", "lo", "scope", "global")
        run("ip", "-n", ns, "addr", "flush", "dev", "eth0")
        run("ip", "-n", ns, "link", "set", "dev", "eth0", "xdp", "off", check=False)
        in_ns(ns, "nft", "flush", "ruleset", check=False)
        in_ns(ns, "conntrack", "-F", check=False)
        run("ip", "-n", ns, "addr", "add", f"{LBS[node]}/24", "dev", "eth0")
        run("ip", "-n", ns, "link", "set", "lo", "up")
        run("ip", "-n", ns, "link", "set", "eth0", "up")

    def close(self):
        procs = [p for ps in self.procs.values() for p in ps] + self.servers
        self.procs, self.servers = {}, []
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        remove_namespaces()


def remove_namespaces():
    """Kill what runs in this run's namespaces, then delete them."""
    for ns in reversed(LIVE_NS):
        for p in netns_pids(ns):
            signal_pid(p, signal.SIGKILL)
    for ns in reversed(LIVE_NS):
        r = run("ip", "netns", "del", ns, check=False)
        if r.returncode != 0:
            print(f"ha bench: could not remove namespace {ns}: {r.stderr.strip()}",
                  file=sys.stderr)
    LIVE_NS.clear()


# ------------------------------------------------------------ contenders

class Xlb:
    """Three xlb nodes electing the holder (docs/ha.md, the K3s example)."""
    name = "xlb"
    label = "xlb election (3 nodes, Raft with leases)"

    def __init__(self, lab):
        self.lab = lab
        rule = {"serviceArguments": {"externalIP": VIP, "port": PORT, "protocol": "tcp",
                                     "sel": 0, "mode": 2, "name": "k3s-api"},
                "endpoints": [{"endpointIP": s, "targetPort": PORT, "weight": 1}
                              for s in SERVERS]}
        for i in range(3):
            d = os.path.join(lab.dir, f"lb{i + 1}")
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, "lbconfig.txt"), "w") as f:
                json.dump({"lbAttr": [rule]}, f)

    def start(self, node):
        d = os.path.join(self.lab.dir, f"lb{node + 1}")
        # openraft's own info lines (elections and votes only, quiet in
        # between) say where a slow takeover's time went.
        env = dict(os.environ, XLB_CLUSTER_KEY=KEY, NO_COLOR="1",
                   RUST_LOG=os.environ.get("RUST_LOG", "info,openraft=info"))
        p = self.lab.spawn(node, [XLB, "run", "--iface", "eth0", "--snat-addrs", FLOATING,
                                  "--cluster", ",".join(LBS), "--self", str(node),
                                  "--config-path", d, "--api", "127.0.0.1:11111"],
                           f"lb{node + 1}/xlb.log", env=env)
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.state(node) is not None:
                return
            if p.poll() is not None:
                break
            time.sleep(0.1)
        raise BenchError(f"xlb on lb{node + 1} did not answer:\n{self.log_tail(node)}")

    def state(self, node):
        r = in_ns(self.lab.lbs[node], "curl", "-s", "-m", "1",
                  "http://127.0.0.1:11111/netlox/v1/config/cistate/all", check=False)
        try:
            for inst in json.loads(r.stdout)["Attr"]:
                if inst["instance"] == "llb-inst0":
                    return inst["state"]
        except (ValueError, KeyError, TypeError):
            pass
        return None

    def holds_all(self, node):
        r = run("ip", "-n", self.lab.lbs[node], "-4", "-o", "addr", "show", "dev", "lo",
                check=False)
        return f" {FLOATING}/" in r.stdout

    def log_lines(self, node):
        try:
            with open(os.path.join(self.lab.dir, f"lb{node + 1}/xlb.log")) as f:
                return [ANSI.sub("", line) for line in f]
        except OSError:
            return []

    def log_tail(self, node):
        return "".join(self.log_lines(node)[-20:])

    def timed(self, node, marker):
        """The times of the node's log lines containing `marker`."""
        out = []
        for line in self.log_lines(node):
            m = LOG_TIME.match(line)
            if m and marker in line:
                out.append((datetime.datetime.fromisoformat(
                    m.group(1).replace("Z", "+00:00")).timestamp(), line))
        return out

    def events(self, node):
        """(time, reason, term) of the node's role changes."""
        out = []
        for t, line in self.timed(node, "cluster role: "):
            term = TERM.search(line)
            out.append((t, line.split("cluster role: ", 1)[1].strip(),
                        int(term.group(1)) if term else None))
        return out

    def slowed(self, node, killed):
        """Whether openraft would delay this node's next candidacy when the
        holder died: it had seen a greater log than its own (a vote it asked
        for was refused by log) since it last campaigned. openraft then adds
        `smaller_log_timeout` (2 × the longest election timeout) to its
        election timeout, until it campaigns again."""
        # A restart clears it: only this process's lines count, from its
        # Raft's initialisation (whose vote is answered before xlb logs
        # "election started").
        up = max((t for t, _ in self.timed(node, "received RaftMsg::Initialize")
                  if t < killed), default=0)
        seen = [t for t, _ in self.timed(node, "seen a greater log id") if up <= t < killed]
        tried = [t for t, _ in self.timed(node, "do trigger election") if up <= t < killed]
        return bool(seen) and (not tried or max(seen) > max(tried))

    def phases(self, killed, new, survivors):
        """Where the takeover's time went, from the survivors' logs: the
        first survivor to give up on the dead holder, the new holder's
        election, how many Raft terms it took (more than one: a split vote,
        or a candidate refused within a leader lease), and how many
        survivors openraft held back (see `slowed`)."""
        ev = {n: self.events(n) for n in survivors}
        after = [e for n in survivors for e in ev[n] if e[0] >= killed]
        detected = min((t for t, r, _ in after if not r.startswith("another member holds")),
                       default=None)
        elected = min(((t, term) for t, r, term in ev[new]
                       if t >= killed and r.startswith("elected")), default=None)
        before = max((term for n in survivors for t, _, term in ev[n]
                      if t < killed and term is not None), default=None)
        return {"detected": None if detected is None else detected - killed,
                "elected": None if elected is None else elected[0] - killed,
                "terms": None if elected is None or before is None or elected[1] is None
                else elected[1] - before,
                "held_back": sum(self.slowed(n, killed) for n in survivors)}


class Keepalived:
    """keepalived (Debian's) on the three balancers moving the VIP on eth0;
    what forwards on the holder is the subclass's."""

    def __init__(self, lab):
        self.lab = lab
        for i in range(3):
            d = os.path.join(lab.dir, f"lb{i + 1}")
            os.makedirs(d, exist_ok=True)
            notify = os.path.join(d, "notify.sh")
            with open(notify, "w") as f:
                # keepalived appends TYPE NAME STATE PRIORITY.
                f.write(f'#!/bin/sh\necho "$(date +%s.%N) $3" >> {d}/state\n')
            os.chmod(notify, 0o755)
            with open(os.path.join(d, "keepalived.conf"), "w") as f:
                f.write(f"""global_defs {{
    script_user root
}}
vrrp_instance k3s_api {{
    # Every node starts as BACKUP, without preemption: a node that comes
    # back does not take the VIP back (xlb's election does not either).
    state BACKUP
    nopreempt
    interface eth0
    virtual_router_id 51
    priority {PRIORITIES[i]}
    advert_int 1
    virtual_ipaddress {{
        {VIP}/24
    }}
    notify "{notify}"
}}
""")

    def start(self, node):
        d = os.path.join(self.lab.dir, f"lb{node + 1}")
        self.start_forwarder(node, d)
        open(os.path.join(d, "state"), "w").close()
        self.lab.spawn(node, ["keepalived", "--dont-fork", "--log-console", "--vrrp",
                              "--use-file", f"{d}/keepalived.conf",
                              "--pid", f"{d}/keepalived.pid", "--vrrp_pid", f"{d}/vrrp.pid"],
                       f"lb{node + 1}/keepalived.log")
        Lab.wait(lambda: self.state(node) is not None, 10,
                 f"keepalived on lb{node + 1} reported no state")

    def transitions(self, node):
        try:
            with open(os.path.join(self.lab.dir, f"lb{node + 1}/state")) as f:
                return [(float(t), s) for t, s in (line.split() for line in f if line.strip())]
        except (OSError, ValueError):
            return []

    def state(self, node):
        t = self.transitions(node)
        return t[-1][1] if t else None

    def holds_all(self, node):
        return True

    def log_tail(self, node):
        try:
            with open(os.path.join(self.lab.dir, f"lb{node + 1}/keepalived.log")) as f:
                return "".join(f.readlines()[-20:])
        except OSError:
            return ""

    def phases(self, killed, new, survivors):
        master = min((t for t, s in self.transitions(new) if s == "MASTER" and t >= killed),
                     default=None)
        return {"detected": None, "elected": None if master is None else master - killed}


class HaproxyPair(Keepalived):
    name = "haproxy"
    label = "keepalived + HAProxy (TCP mode)"

    def start_forwarder(self, node, d):
        cfg = os.path.join(d, "haproxy.cfg")
        servers = "\n".join(f"    server server-{i + 1} {s}:{PORT} check"
                            for i, s in enumerate(SERVERS))
        with open(cfg, "w") as f:
            # The K3s docs' frontend and backend; one thread and a small
            # maxconn for a 2-core machine shared by six balancer daemons.
            f.write(f"""global
    maxconn 4096
    nbthread 1
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend k3s-frontend
    bind *:{PORT}
    mode tcp
    default_backend k3s-backend
backend k3s-backend
    mode tcp
    option tcp-check
    balance roundrobin
    default-server inter 10s downinter 5s
{servers}
""")
        self.lab.spawn(node, ["haproxy", "-db", "-f", cfg], f"lb{node + 1}/haproxy.log")
        Lab.wait(lambda: f":{PORT} " in in_ns(self.lab.lbs[node], "ss", "-Hltn",
                                               check=False).stdout,
                 10, f"haproxy on lb{node + 1} did not listen")


class NftPair(Keepalived):
    name = "nft"
    label = "keepalived + nftables DNAT"

    def start_forwarder(self, node, d):
        ns = self.lab.lbs[node]
        for k, v in (("net.ipv4.ip_forward", "1"),
                     # Requests come in and go out eth0: no redirects to the client.
                     ("net.ipv4.conf.all.send_redirects", "0"),
                     ("net.ipv4.conf.eth0.send_redirects", "0")):
            in_ns(ns, "sysctl", "-qw", f"{k}={v}")
        ruleset = os.path.join(d, "nat.nft")
        servers = ", ".join(f"{i} : {s}" for i, s in enumerate(SERVERS))
        with open(ruleset, "w") as f:
            f.write(f"""table ip k3s_nat {{
    chain prerouting {{
        type nat hook prerouting priority dstnat; policy accept;
        ip daddr {VIP} tcp dport {PORT} dnat to numgen inc mod {len(SERVERS)} map {{ {servers} }}
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        ct status dnat ip daddr {{ {", ".join(SERVERS)} }} tcp dport {PORT} masquerade
    }}
}}
""")
        in_ns(ns, "nft", "-f", ruleset)


CONTENDER_TYPES = {c.name: c for c in (Xlb, HaproxyPair, NftPair)}


# ------------------------------------------------------------ measuring

class Client:
    """The client in its namespace; its attempts as they end."""

    def __init__(self, lab):
        self.p = subprocess.Popen(
            ["ip", "netns", "exec", lab.client, "python3", os.path.abspath(__file__),
             "--client", VIP, str(PORT)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.attempts = []
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self.read, daemon=True)
        self.reader.start()

    def read(self):
        for line in self.p.stdout:
            try:
                start, who, err = json.loads(line)
            except ValueError:
                continue
            with self.lock:
                self.attempts.append((start, who is not None, err))

    def snapshot(self):
        with self.lock:
            return sorted(self.attempts)

    def clean_since(self, since, span):
        """Whether every attempt started in the last `span` seconds (and
        already ended) succeeded, with at least a few of them, and all after
        `since`."""
        now = time.time()
        recent = [a for a in self.snapshot() if now - span - TIMEOUT <= a[0] < now - TIMEOUT]
        return (len(recent) >= span / EVERY / 3 and all(a[1] for a in recent)
                and recent[0][0] >= since)

    def wait_clean(self, since, limit, what):
        Lab.wait(lambda: self.clean_since(since, CLEAN), limit, what)

    def finish(self):
        try:
            self.p.stdin.close()
        except OSError:
            pass
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        self.reader.join(5)
        return self.snapshot()


def outage(attempts, at, until):
    """control/tests/e2e/ha.rs's outage(): from `at` to the start of the
    first answered connection after the last failed one (0 if none failed),
    over the attempts started in [at, until)."""
    after = [a for a in attempts if at <= a[0] < until]
    fails = [i for i, a in enumerate(after) if not a[1]]
    if not fails:
        return 0.0
    nxt = fails[-1] + 1
    return after[nxt][0] - at if nxt < len(after) else float("inf")


def failures(attempts, start, end):
    return sum(1 for a in attempts if start <= a[0] < end and not a[1])


def holders(lab, alive):
    return [n for n in alive if lab.has_vip(n)]


def wait_stable(lab, c, alive, holder=None, limit=30.0):
    """Exactly one live node holds the VIP (`holder` if given) and says
    MASTER; every other live node says BACKUP. Which node holds."""
    deadline = time.time() + limit
    while time.time() < deadline:
        h = holders(lab, alive)
        if len(h) == 1 and (holder is None or h[0] == holder) and c.holds_all(h[0]):
            states = {n: c.state(n) for n in alive}
            if states[h[0]] == "MASTER" and all(states[n] == "BACKUP" for n in alive if n != h[0]):
                return h[0]
        time.sleep(0.1)
    tails = "\n".join(f"--- lb{n + 1} ({c.state(n)}) ---\n{c.log_tail(n)}" for n in alive)
    raise BenchError(f"{c.name}: no stable group within {limit:.0f} s (holders "
                     f"{holders(lab, alive)})\n{tails}")


def power_on(lab, c, node):
    lab.reboot_state(node)
    c.start(node)


def one_failover(lab, c, alive, holder, victim):
    """Power loss of `victim` (the holder, or a node holding nothing) under
    the client, then its return. What the client saw."""
    client = Client(lab)
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
            deadline = killed + 15
            while moved is None:
                if time.time() > deadline:
                    raise BenchError(f"{c.name}: nobody took the VIP over within 15 s")
                h = holders(lab, survivors)
                if h:
                    new, moved = h[0], time.time() - killed
                else:
                    time.sleep(0.02)
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
    client = Client(lab)
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
        if KEEP_LOGS:
            keep = f"/tmp/{PREFIX}-logs/{name}"
            shutil.copytree(lab.dir, keep, dirs_exist_ok=True)
            print(f"  logs kept in {keep}")
        lab.close()


def pct(xs, q):
    """Linear interpolation between the closest ranks (numpy's default)."""
    xs = sorted(xs)
    k = (len(xs) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def ms(x):
    return "–" if x is None else ("never" if x == float("inf") else f"{x * 1000:.0f} ms")


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


def versions():
    ka = run("keepalived", "--version", check=False)
    ka = (ka.stdout + ka.stderr).strip().splitlines()
    hp = run("haproxy", "-v", check=False).stdout.strip().splitlines()
    nft = run("nft", "--version", check=False).stdout.strip()
    return (f"{ka[0] if ka else 'keepalived ?'}, "
            f"{' '.join(hp[0].split()[:3]) if hp else 'HAProxy ?'}, {nft or 'nftables ?'}")


def main():
    if "--report" in ARGS:
        with open(opt("--report", "")) as f:
            saved = json.load(f)
        write_report(saved["meta"], saved["results"], raw=None)
        return
    for name in CONTENDERS:
        if name not in CONTENDER_TYPES:
            raise SystemExit(f"unknown contender {name!r} (xlb, haproxy, nft)")
    results = {}
    for name in CONTENDERS:
        print(f"{name}: {FAILOVERS} failovers", flush=True)
        results[name] = run_contender(name)
    shown = [a for i, a in enumerate(ARGS)
             if a not in ("--out", "--keep-logs") and (i == 0 or ARGS[i - 1] != "--out")]
    meta = {
        "command": " ".join(["sudo scripts/bench-ha.sh", *shown]),
        "date": datetime.date.today().isoformat(),
        "cores": os.cpu_count(),
        "cpu": next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                     if line.startswith("model name")), "?"),
        "kernel": os.uname().release,
        "load": " ".join(open("/proc/loadavg").read().split()[:3]),
        "versions": versions(),
        "every_s": EVERY, "timeout_s": TIMEOUT, "settle_s": SETTLE,
    }
    write_report(meta, results, raw=os.path.splitext(OUT)[0] + ".json")


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
        "", f"Every failover's numbers: `{os.path.basename(raw or opt('--report', ''))}`; "
        f"`scripts/lab/ha_bench.py --report` on it writes this file again."]
    os.makedirs(os.path.dirname(OUT) or ".", exist_ok=True)
    with open(OUT, "w") as f:
        f.write("\n".join(doc) + "\n")
    if raw:
        with open(raw, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=1)
        print(f"wrote {OUT} and {raw}")
    else:
        print(f"wrote {OUT}")


def on_signal(signum, _frame):
    raise SystemExit(f"stopped by signal {signum}")


# Ctrl-C raises KeyboardInterrupt even where SIGINT was inherited ignored
# (a background job).
signal.signal(signal.SIGINT, signal.default_int_handler)
signal.signal(signal.SIGTERM, on_signal)
signal.signal(signal.SIGHUP, on_signal)
try:
    main()
except BenchError as e:
    raise SystemExit(f"ha bench: {e}")
except KeyboardInterrupt:
    raise SystemExit("ha bench: interrupted")
finally:
    remove_namespaces()
    shutil.rmtree(WORK, ignore_errors=True)
