#!/usr/bin/env python3
"""Run xlb.service's ExecStart by hand, as systemd would, where systemd is
not PID 1: the unit's environment file and Environment overrides, its
capability bounding set, ambient set and NoNewPrivileges (util-linux
setpriv), LimitMEMLOCK where this process may raise it, Type=notify with
NOTIFY_SOCKET pointing at a socket this script reads, in a lab namespace.

It checks what the unit promises: READY=1 arrives, and at that moment the
XDP program is attached to every interface and GET /readyz answers 200;
traffic from the client namespace through the VIP is answered (the lab's
client.py); an XDP program detached by hand turns /readyz to 503 naming
the interface; SIGTERM brings STOPPING=1 and a clean exit with the XDP
programs detached.

  run_unit.py --unit PATH --netns LB_NS --client-ns CLIENT_NS --vip VIP \
      [--env KEY=VALUE ...] [--api 127.0.0.1:11111]

Exit 0 when every check passed.
"""
import argparse
import json
import os
import re
import resource
import shlex
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def fail(msg):
    print(f"run_unit: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def service_section(path):
    """The [Service] settings: name -> list of values (in file order)."""
    out, section = {}, None
    with open(path) as f:
        for raw in f:
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                section = line
                continue
            if section == "[Service]" and "=" in line:
                k, v = line.split("=", 1)
                out.setdefault(k.strip(), []).append(v.strip())
    return out


def env_file(path):
    env = {}
    with open(path) as f:
        for raw in f:
            line = raw.strip()
            if not line or line[0] in "#;" or "=" not in line:
                continue
            k, v = line.split("=", 1)
            env[k.strip()] = v.strip().strip('"')
    return env


def expand(exec_start, env):
    """systemd's ExecStart expansion: `${X}` is one word, `$X` alone splits
    on whitespace (an empty one gives no word)."""
    argv = []
    for word in shlex.split(exec_start):
        m = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
        if m:
            argv.extend(env.get(m.group(1), "").split())
            continue
        argv.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env.get(m.group(1), ""), word))
    return argv


def caps(values):
    names = " ".join(values).split()
    return ",".join("+" + n.lower().removeprefix("cap_") for n in names)


def nsx(ns, *args, **kw):
    return subprocess.run(["ip", "netns", "exec", ns, *args], capture_output=True, text=True, **kw)


def xdp_attached(ns, iface):
    out = subprocess.run(["ip", "-n", ns, "-j", "link", "show", "dev", iface],
                         capture_output=True, text=True, check=True).stdout
    return "xdp" in json.loads(out)[0]


def readyz(ns, api):
    r = nsx(ns, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://{api}/readyz")
    return r.stdout.strip()


def serving(ns, client_ns, vip, ifaces, api, when):
    """What a started xlb must show `when` it says so: XDP attached to
    every interface, /readyz 200, and traffic through the VIP answered."""
    for i in ifaces:
        if not xdp_attached(ns, i):
            fail(f"{when} but no XDP program on {i}")
    code = readyz(ns, api)
    if code != "200":
        fail(f"{when} but GET /readyz answered {code}")
    print(f"run_unit: at {when} XDP is attached to {','.join(ifaces)} and /readyz answers 200")
    r = nsx(client_ns, "python3", os.path.join(HERE, "client.py"), vip, "30", "6", timeout=120)
    print(r.stdout.rstrip())
    if r.returncode != 0:
        fail(f"traffic through {vip} failed:\n{r.stderr}")


def exited_cleanly(proc, log, ns, ifaces):
    """After SIGTERM: exit 0 within 20 s, with every XDP program detached."""
    rc = proc.wait(timeout=20)
    if rc != 0:
        log.seek(0)
        fail(f"xlb exited {rc} after SIGTERM:\n{log.read()}")
    left = [i for i in ifaces if xdp_attached(ns, i)]
    if left:
        fail(f"XDP still attached to {left} after exit")


def reap(proc, log, ok):
    """Kill what is still running; show the end of its log if a check failed."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    if not ok:
        log.seek(0)
        sys.stderr.write(log.read()[-4000:])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--unit", required=True)
    ap.add_argument("--netns", required=True)
    ap.add_argument("--client-ns", required=True)
    ap.add_argument("--vip", required=True)
    ap.add_argument("--env", action="append", default=[])
    ap.add_argument("--api", default="127.0.0.1:11111")
    a = ap.parse_args()

    svc = service_section(a.unit)
    if svc.get("Type") != ["notify"]:
        fail(f"Type={svc.get('Type')}, not notify")
    env = {}
    for ef in svc.get("EnvironmentFile", []):
        optional = ef.startswith("-")
        ef = ef.lstrip("-")
        if os.path.exists(ef):
            env.update(env_file(ef))
        elif not optional:
            fail(f"EnvironmentFile {ef} missing")
    for kv in a.env:
        k, v = kv.split("=", 1)
        env[k] = v
    argv = expand(svc["ExecStart"][-1], env)
    bounding = caps(svc.get("CapabilityBoundingSet", []))
    ambient = caps(svc.get("AmbientCapabilities", []))
    if not bounding:
        fail("the unit sets no CapabilityBoundingSet")
    launcher = ["setpriv", f"--bounding-set=-all,{bounding}", f"--inh-caps=-all,{ambient}",
                f"--ambient-caps=-all,{ambient}"]
    if svc.get("NoNewPrivileges") == ["yes"]:
        launcher.append("--no-new-privs")
    cmd = ["ip", "netns", "exec", a.netns, *launcher, *argv]
    print("run_unit: " + " ".join(shlex.quote(c) for c in cmd))

    memlock = svc.get("LimitMEMLOCK", [None])[-1]

    def limits():
        if memlock == "infinity":
            try:
                resource.setrlimit(resource.RLIMIT_MEMLOCK, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
            except (ValueError, OSError):
                # No CAP_SYS_RESOURCE here (a sandbox): the unit's
                # CAP_IPC_LOCK is what lets the UMEM be locked then.
                pass

    tmp = tempfile.mkdtemp(prefix="xlb-notify-")
    sock_path = os.path.join(tmp, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("XLB_")}
    child_env.update(env)
    child_env["NOTIFY_SOCKET"] = sock_path
    log = open(os.path.join(tmp, "xlb.log"), "w+")
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=child_env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=limits)
    ifaces = env.get("XLB_IFACE", "").split(",")
    ok = False
    try:
        ready_at = None
        sock.settimeout(0.2)
        while ready_at is None:
            if proc.poll() is not None:
                log.seek(0)
                fail(f"xlb exited ({proc.returncode}) before READY=1:\n{log.read()}")
            if time.monotonic() - t0 > 60:
                fail("no READY=1 within 60 s")
            try:
                msg = sock.recv(4096).decode()
            except socket.timeout:
                continue
            print(f"run_unit: notify after {time.monotonic() - t0:.2f}s: {msg!r}")
            if "READY=1" in msg.split("\n"):
                ready_at = time.monotonic()
        # At READY=1: everything it promises is there already.
        serving(a.netns, a.client_ns, a.vip, ifaces, a.api, "READY=1")
        # An XDP program taken away by hand: /readyz must say so.
        gone = ifaces[-1]
        for mode in ("xdp", "xdpgeneric"):
            subprocess.run(["ip", "-n", a.netns, "link", "set", "dev", gone, mode, "off"], check=False)
        body = nsx(a.netns, "curl", "-s", "-w", " %{http_code}", f"http://{a.api}/readyz").stdout
        if not body.endswith(" 503") or gone not in body:
            fail(f"XDP detached from {gone} by hand, but /readyz answered {body}")
        print(f"run_unit: XDP detached from {gone} by hand: /readyz 503 naming it")
        proc.terminate()
        deadline = time.monotonic() + 15
        stopping = False
        while time.monotonic() < deadline and not stopping:
            try:
                stopping = "STOPPING=1" in sock.recv(4096).decode().split("\n")
            except socket.timeout:
                pass
        if not stopping:
            fail("SIGTERM brought no STOPPING=1")
        exited_cleanly(proc, log, a.netns, ifaces)
        print("run_unit: SIGTERM: STOPPING=1, exit 0, XDP detached")
        ok = True
    finally:
        reap(proc, log, ok)
        sock.close()
        log.close()
        for f in os.listdir(tmp):
            os.unlink(os.path.join(tmp, f))
        os.rmdir(tmp)


if __name__ == "__main__":
    main()
