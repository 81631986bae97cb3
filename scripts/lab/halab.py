#!/usr/bin/env python3
"""The high-availability lab shared by the failover benchmarks (ha_bench.py,
sync_bench.py): the K3s docs' layout in network namespaces on one bridge,
the contenders that hold its VIP, and what both measure with.

The layout: client 10.10.10.2, balancers lb-1 .98, lb-2 .99, lb-3 .97, API
servers .50-.52 on :6443 (scripts/lab/backend.py, UDP echo on :9000 when
asked), VIP 10.10.10.100. Every namespace is named after the running
process (setup()'s tag + pid) and recorded in LIVE_NS the moment it exists,
so guard() removes all of them on every exit path.
Contenders: Xlb (three `xlb run --cluster` nodes), Keepalived (VRRP moving
the VIP) with HaproxyPair (HAProxy in TCP mode) or NftPair (nftables DNAT)
forwarding; their constructors take what the sync benchmark adds (a UDP
rule, the floating source address)."""
import datetime
import json
import os
import re
import secrets
import shutil
import signal
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
# backend.py's UDP echo port.
UDP_PORT = 9000
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT[\d:.]+Z)")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
TERM = re.compile(r"\bterm=(\d+)")

XLB = os.path.join(ROOT, os.environ.get("XLB_BIN", "target/release/xlb"))
KEY = secrets.token_hex(16)
# setup() names them: the namespaces' prefix, the run's scratch directory,
# what error messages start with.
PREFIX = WORK = None
WHAT = "lab"
# Every namespace this run made and has not removed yet: removed on any exit.
LIVE_NS = []


def setup(tag, what):
    """This run's names: namespaces `{tag}{pid}-…`, a scratch directory."""
    global PREFIX, WORK, WHAT
    PREFIX = f"{tag}{os.getpid() % 10000}"
    WORK = tempfile.mkdtemp(prefix=f"{PREFIX}-")
    WHAT = what


def guard(main):
    """Runs main() so that the namespaces and the scratch directory go
    whatever happens: an error, Ctrl-C, SIGTERM or SIGHUP."""
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
        raise SystemExit(f"{WHAT}: {e}")
    except KeyboardInterrupt:
        raise SystemExit(f"{WHAT}: interrupted")
    finally:
        remove_namespaces()
        shutil.rmtree(WORK, ignore_errors=True)


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
        self.cut_table = False  # the bridge's partition table exists

    def build(self, udp=False):
        """The bridge, the client, the balancers and the servers (with
        their UDP echo if `udp`), every server answering the client."""
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
                 f"backend-{i + 1}", "--http-port", str(PORT), *([] if udp else ["--no-udp"])],
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
        if not heal and not self.cut_table:
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

    def __init__(self, lab, udp=False):
        """`udp`: also a rule for the servers' UDP echo on VIP:UDP_PORT."""
        self.lab = lab
        rules = [("tcp", PORT, "k3s-api")] + ([("udp", UDP_PORT, "udp-echo")] if udp else [])
        attrs = [{"serviceArguments": {"externalIP": VIP, "port": port, "protocol": proto,
                                       "sel": 0, "mode": 2, "name": name},
                  "endpoints": [{"endpointIP": s, "targetPort": port, "weight": 1}
                                for s in SERVERS]}
                 for proto, port, name in rules]
        for i in range(3):
            d = os.path.join(lab.dir, f"lb{i + 1}")
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, "lbconfig.txt"), "w") as f:
                json.dump({"lbAttr": attrs}, f)

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
    what forwards on the holder is the subclass's. A subclass may move more
    addresses with it (`addresses`) and act on each state change
    (`on_state`: shell run by the notify script, the state in $3)."""
    addresses = (VIP,)
    on_state = ""

    def __init__(self, lab):
        self.lab = lab
        addresses = "\n        ".join(f"{a}/24" for a in self.addresses)
        for i in range(3):
            d = os.path.join(lab.dir, f"lb{i + 1}")
            os.makedirs(d, exist_ok=True)
            notify = os.path.join(d, "notify.sh")
            with open(notify, "w") as f:
                # keepalived appends TYPE NAME STATE PRIORITY.
                f.write(f'#!/bin/sh\necho "$(date +%s.%N) $3" >> {d}/state\n'
                        + self.on_state.format(d=d))
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
        {addresses}
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
    # What is forwarded, (protocol, port), and the source NAT towards the
    # servers: masquerade (the node's own address) or `snat to ADDRESS`.
    forwards = (("tcp", PORT),)
    source_nat = "masquerade"

    def start_forwarder(self, node, d):
        ns = self.lab.lbs[node]
        for k, v in (("net.ipv4.ip_forward", "1"),
                     # Requests come in and go out eth0: no redirects to the client.
                     ("net.ipv4.conf.all.send_redirects", "0"),
                     ("net.ipv4.conf.eth0.send_redirects", "0")):
            in_ns(ns, "sysctl", "-qw", f"{k}={v}")
        ruleset = os.path.join(d, "nat.nft")
        servers = ", ".join(f"{i} : {s}" for i, s in enumerate(SERVERS))
        dnat = "\n        ".join(
            f"ip daddr {VIP} {proto} dport {port} dnat to numgen inc mod {len(SERVERS)} "
            f"map {{ {servers} }}" for proto, port in self.forwards)
        snat = "\n        ".join(
            f'ct status dnat ip daddr {{ {", ".join(SERVERS)} }} {proto} dport {port} '
            f"{self.source_nat}" for proto, port in self.forwards)
        with open(ruleset, "w") as f:
            f.write(f"""table ip k3s_nat {{
    chain prerouting {{
        type nat hook prerouting priority dstnat; policy accept;
        {dnat}
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        {snat}
    }}
}}
""")
        in_ns(ns, "nft", "-f", ruleset)


# ------------------------------------------------------------ measuring

class Client:
    """A client (`argv`) in the client's namespace that opens a new
    connection every `every` seconds and prints one JSON line per attempt
    as it ends, [start, backend or null, error or null]; its attempts as
    (start, succeeded, error). A subclass's parse() takes other lines too.
    The client stops when its stdin closes."""

    def __init__(self, lab, argv, every, timeout, clean):
        self.every, self.timeout, self.clean = every, timeout, clean
        self.p = subprocess.Popen(
            ["ip", "netns", "exec", lab.client, *argv],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.attempts = []
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self.read, daemon=True)
        self.reader.start()

    def read(self):
        for line in self.p.stdout:
            try:
                self.parse(json.loads(line))
            except (ValueError, TypeError):
                continue

    def parse(self, item):
        start, who, err = item
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
        recent = [a for a in self.snapshot() if now - span - self.timeout <= a[0] < now - self.timeout]
        return (len(recent) >= span / self.every / 3 and all(a[1] for a in recent)
                and recent[0][0] >= since)

    def wait_clean(self, since, limit, what):
        Lab.wait(lambda: self.clean_since(since, self.clean), limit, what)

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


def wait_moved(lab, c, survivors, killed):
    """Which survivor holds the VIP once one does, and how long after
    `killed` it was seen there (polled every 20 ms, for 15 s at most)."""
    while time.time() <= killed + 15:
        h = holders(lab, survivors)
        if h:
            return h[0], time.time() - killed
        time.sleep(0.02)
    raise BenchError(f"{c.name}: nobody took the VIP over within 15 s")


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


def pct(xs, q):
    """Linear interpolation between the closest ranks (numpy's default)."""
    xs = sorted(xs)
    k = (len(xs) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def ms(x):
    return "–" if x is None else ("never" if x == float("inf") else f"{x * 1000:.0f} ms")


def versions():
    ka = run("keepalived", "--version", check=False)
    ka = (ka.stdout + ka.stderr).strip().splitlines()
    hp = run("haproxy", "-v", check=False).stdout.strip().splitlines()
    nft = run("nft", "--version", check=False).stdout.strip()
    return (f"{ka[0] if ka else 'keepalived ?'}, "
            f"{' '.join(hp[0].split()[:3]) if hp else 'HAProxy ?'}, {nft or 'nftables ?'}")


# ------------------------------------------------------------ the runs

class Options:
    """The benchmarks' command line: [--quick] [--failovers N]
    [--contenders A,B] [--out FILE] [--keep-logs], or --report FILE.json
    [--out FILE]."""

    def __init__(self, contenders, out):
        self.args = sys.argv[1:]
        self.quick = "--quick" in self.args
        self.failovers = int(self.opt("--failovers", 3 if self.quick else 20))
        self.contenders = self.opt("--contenders", contenders).split(",")
        self.out = self.opt("--out", out)
        self.keep_logs = "--keep-logs" in self.args

    def opt(self, name, default):
        return self.args[self.args.index(name) + 1] if name in self.args else default


def keep_logs(lab, name):
    """A copy of the lab's logs and configurations that outlives the run."""
    keep = f"/tmp/{PREFIX}-logs/{name}"
    # Not conntrackd's control sockets.
    shutil.copytree(lab.dir, keep, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.ctl"))
    print(f"  logs kept in {keep}")


def bench_main(opts, types, run_contender, write_report, script, extra):
    """Every contender of the command line through run_contender(name),
    then write_report(meta, results, raw) with the run's circumstances
    (`extra` added to them); or --report: the report again from its
    .json."""
    if "--report" in opts.args:
        with open(opts.opt("--report", "")) as f:
            saved = json.load(f)
        write_report(saved["meta"], saved["results"], raw=None)
        return
    for name in opts.contenders:
        if name not in types:
            raise SystemExit(f"unknown contender {name!r} ({', '.join(types)})")
    results = {}
    for name in opts.contenders:
        print(f"{name}: {opts.failovers} failovers", flush=True)
        results[name] = run_contender(name)
    args = opts.args
    shown = [a for i, a in enumerate(args)
             if a not in ("--out", "--keep-logs") and (i == 0 or args[i - 1] != "--out")]
    meta = {
        "command": " ".join([f"sudo {script}", *shown]),
        "date": datetime.date.today().isoformat(),
        "cores": os.cpu_count(),
        "cpu": next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                     if line.startswith("model name")), "?"),
        "kernel": os.uname().release,
        "load": " ".join(open("/proc/loadavg").read().split()[:3]),
        "versions": versions(),
        **extra,
    }
    write_report(meta, results, raw=os.path.splitext(opts.out)[0] + ".json")


def save_report(out, doc, meta, results, raw):
    """The Markdown `doc` (lines) in `out`; for a new run, its raw numbers
    in `raw` (.json)."""
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "w") as f:
        f.write("\n".join(doc) + "\n")
    if raw:
        with open(raw, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=1)
        print(f"wrote {out} and {raw}")
    else:
        print(f"wrote {out}")
