#!/usr/bin/env python3
"""Run xlb's container image (its entrypoint, /usr/bin/xlb) in a lab
namespace and check it serves: podman with the container in the lab
balancer's network namespace and only the systemd unit's capabilities, or
(where podman cannot run containers) chroot into the image's exported
file system, running its entrypoint. Then
the checks of run_unit.py: /readyz 200 with XDP attached, traffic through
the VIP answered, and after SIGTERM a clean exit with XDP detached.

  run_image.py --engine podman|chroot --image NAME|ROOTFS --netns LB_NS \
      --client-ns CLIENT_NS --vip VIP -- XLB_RUN_ARGS... [--volume HOST:CTR:ro]
"""
import argparse
import os
import subprocess
import time

from run_unit import exited_cleanly, fail, readyz, reap, serving

# The systemd unit's capability set (deploy/systemd/xlb.service).
CAPS = "NET_ADMIN,NET_RAW,BPF,PERFMON,IPC_LOCK"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--engine", choices=["podman", "chroot"], required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--netns", required=True)
    ap.add_argument("--client-ns", required=True)
    ap.add_argument("--vip", required=True)
    ap.add_argument("--api", default="127.0.0.1:11111")
    ap.add_argument("--volume")
    ap.add_argument("--entrypoint", default="/usr/bin/xlb", help="chroot: the image's entrypoint")
    ap.add_argument("args", nargs="*")
    a = ap.parse_args()
    args = list(a.args)
    ifaces = args[args.index("--iface") + 1].split(",")
    name = f"xlb-test-{os.getpid()}"
    if a.engine == "podman":
        cmd = ["podman", "run", "--rm", "--name", name, "--network", f"ns:/run/netns/{a.netns}",
               "--cap-drop", "all", "--cap-add", CAPS]
        if a.volume:
            cmd += ["--volume", a.volume]
        cmd += [a.image, "run", *args]
    else:
        root = a.image
        host_cfg, ctr_cfg = a.volume.split(":")[:2] if a.volume else (None, None)
        mounts = [f"mount -t proc proc {root}/proc", f"mount -t sysfs sysfs {root}/sys",
                  f"mount --bind /dev {root}/dev"]
        if host_cfg:
            mounts.append(f"mount --bind -o ro {host_cfg} {root}{ctr_cfg}")
        # The container's capabilities, plus the one chroot itself needs.
        caps = ",".join("+" + c.lower() for c in (CAPS + ",SYS_CHROOT").split(","))
        script = (" && ".join(mounts) + f" && exec setpriv --bounding-set=-all,{caps} --inh-caps=-all"
                  f" --no-new-privs chroot {root} {a.entrypoint} run " + " ".join(args))
        cmd = ["ip", "netns", "exec", a.netns, "unshare", "--mount", "--propagation", "private",
               "sh", "-c", script]
    print("run_image: " + " ".join(cmd))
    log = open(f"/tmp/{name}.log", "w+")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    ok = False
    try:
        t0 = time.monotonic()
        while readyz(a.netns, a.api) != "200":
            if proc.poll() is not None:
                log.seek(0)
                fail(f"the image's xlb exited ({proc.returncode}) before it was ready:\n{log.read()}")
            if time.monotonic() - t0 > 60:
                fail("/readyz not 200 within 60 s")
            time.sleep(0.2)
        print(f"run_image: ready after {time.monotonic() - t0:.2f}s")
        serving(a.netns, a.client_ns, a.vip, ifaces, a.api, "/readyz 200")
        if a.engine == "podman":
            subprocess.run(["podman", "stop", "-t", "15", name], capture_output=True, check=False)
        else:
            proc.terminate()
        exited_cleanly(proc, log, a.netns, ifaces)
        print("run_image: SIGTERM: exit 0, XDP detached")
        ok = True
    finally:
        reap(proc, log, ok)
        log.close()
        os.unlink(log.name)


if __name__ == "__main__":
    main()
