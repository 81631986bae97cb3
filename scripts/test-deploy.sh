#!/usr/bin/env bash
# Tests of what deploys xlb, each against a namespaced lab on this machine
# (scripts/lab.sh's two-arm topology, under a prefix of this run's own):
#
#   deb    build the Debian package (deploy/deb/build.sh), install it,
#          check its files, `systemd-analyze verify` the unit, start it:
#          with systemd when it is PID 1, else its ExecStart by hand as
#          systemd would (scripts/lab/run_unit.py: the unit's capabilities
#          and NOTIFY_SOCKET; READY=1 only with XDP attached), send traffic
#          through the VIP, stop it, remove the package
#   image  build the container image (deploy/image/build.sh) and run its
#          entrypoint in the lab: podman in the balancer's namespace where
#          podman can run containers, else a chroot into the image's
#          exported file system
#   k8s    validate deploy/k8s/ against the Kubernetes schemas
#          (deploy/k8s/validate.sh), and check that a broken manifest fails
#
#   sudo scripts/test-deploy.sh [deb|image|k8s|all]
#
# XLB_DEPLOY_BIN: the binary to package (default: a debug build, which
# `cargo test` has already made; the release profile's link takes minutes).
set -euo pipefail
cd "$(dirname "$0")/.."

what=${1:-all}
P=xd$$
export XLB_LAB=$P
LB=$P-lb CLIENT=$P-client VIP=10.10.100.1
work=$(mktemp -d)
installed_here=0

cleanup() {
  scripts/lab.sh down >/dev/null 2>&1 || true
  if ((installed_here)); then dpkg --purge xlb >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bin() {
  if [[ -z ${XLB_DEPLOY_BIN:-} ]]; then
    cargo build --locked -q -p xlb-control >&2
    XLB_DEPLOY_BIN=target/debug/xlb
  fi
  echo "$XLB_DEPLOY_BIN"
}

# The lab's rules, with the API where the test reaches it.
lab_opts="--config-path $PWD/configs/lab --api 127.0.0.1:11111"

test_deb() {
  echo "== deb: build"
  if dpkg-query -W -f='${Status}' xlb 2>/dev/null | grep -q "install ok installed"; then
    echo "xlb deb test: a package named xlb is installed already; not replacing it" >&2
    return 1
  fi
  local deb
  deb=$(deploy/deb/build.sh --bin "$(bin)" --out "$work")
  dpkg-deb --info "$deb" | sed -n 's/^ \(Package\|Version\|Depends\):/  \1:/p'
  echo "== deb: install"
  installed_here=1
  dpkg -i "$deb" >/dev/null
  for f in /usr/bin/xlb /lib/systemd/system/xlb.service /etc/loxilb/xlb.env \
    /usr/share/man/man1/xlb.1.gz /usr/share/man/man1/xlb-run.1.gz \
    /usr/share/bash-completion/completions/xlb /usr/share/zsh/vendor-completions/_xlb \
    /usr/share/fish/vendor_completions.d/xlb.fish /usr/share/doc/xlb/copyright; do
    [[ -f $f ]] || { echo "xlb deb test: $f not installed" >&2; return 1; }
  done
  dpkg-query -W -f='${Conffiles}\n' xlb | grep -q '/etc/loxilb/xlb.env' \
    || { echo "xlb deb test: /etc/loxilb/xlb.env is not a conffile" >&2; return 1; }
  zcat /usr/share/man/man1/xlb.1.gz | grep -q '^\.TH xlb 1' \
    || { echo "xlb deb test: xlb.1 is not a man page" >&2; return 1; }
  bash -c 'source /usr/share/bash-completion/completions/xlb && complete -p xlb' >/dev/null \
    || { echo "xlb deb test: the bash completion does not load" >&2; return 1; }
  echo "  files, conffile, man page and completions in place"
  echo "== deb: systemd-analyze verify xlb.service"
  local v
  v=$(systemd-analyze verify /lib/systemd/system/xlb.service 2>&1) || {
    echo "$v" >&2
    return 1
  }
  # It warns without failing; a warning about this unit is a failure here.
  if grep -i 'xlb.service' <<<"$v"; then return 1; fi
  echo "  clean"
  scripts/lab.sh up >/dev/null
  if [[ $(cat /proc/1/comm) == systemd ]]; then
    echo "== deb: systemctl start xlb (in the lab's balancer namespace, through a drop-in)"
    install -d /run/systemd/system/xlb.service.d
    cat >/run/systemd/system/xlb.service.d/lab.conf <<CONF
[Service]
NetworkNamespacePath=/run/netns/$LB
Environment=XLB_IFACE=lb0,lb1 "XLB_OPTS=$lab_opts"
CONF
    systemctl daemon-reload
    systemctl start xlb # returns once READY=1 came (Type=notify)
    ip -n "$LB" link show lb0 | grep -q xdp || { echo "xlb deb test: active without XDP on lb0" >&2; return 1; }
    [[ $(ip netns exec "$LB" curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:11111/readyz) == 200 ]]
    ip netns exec "$CLIENT" python3 scripts/lab/client.py "$VIP" 30 6
    systemctl stop xlb
    rm -rf /run/systemd/system/xlb.service.d
    systemctl daemon-reload
  else
    echo "== deb: PID 1 is $(cat /proc/1/comm), not systemd: the unit's ExecStart by hand, as systemd would"
    python3 scripts/lab/run_unit.py --unit /lib/systemd/system/xlb.service --netns "$LB" \
      --client-ns "$CLIENT" --vip "$VIP" --env XLB_IFACE=lb0,lb1 --env "XLB_OPTS=$lab_opts"
  fi
  scripts/lab.sh down >/dev/null
  echo "== deb: remove"
  dpkg --purge xlb >/dev/null
  installed_here=0
  for f in /usr/bin/xlb /lib/systemd/system/xlb.service /etc/loxilb/xlb.env; do
    [[ ! -e $f ]] || { echo "xlb deb test: $f left after purge" >&2; return 1; }
  done
  echo "== deb: passed"
}

test_image() {
  echo "== image: build"
  local image rootfs=$work/rootfs entry
  image=$(deploy/image/build.sh --bin "$(bin)")
  echo "  $(podman image inspect --format '{{.Id}} {{.Size}} bytes' "$image" | cut -c1-12,65-) $image"
  scripts/lab.sh up >/dev/null
  if podman run --rm --network none "$image" --version >"$work/podman.err" 2>&1; then
    echo "== image: podman run, in the lab's balancer namespace"
    python3 scripts/lab/run_image.py --engine podman --image "$image" --netns "$LB" \
      --client-ns "$CLIENT" --vip "$VIP" --volume "$PWD/configs/lab:/etc/loxilb:ro" \
      -- --iface lb0,lb1 --api 127.0.0.1:11111
  else
    # A sandbox without CAP_SYS_RESOURCE, say: crun cannot set the
    # container's rlimits.
    echo "== image: podman cannot run containers here ($(tail -1 "$work/podman.err"))"
    echo "== image: its exported file system, its entrypoint in a chroot in the lab's balancer namespace"
    mkdir -p "$rootfs"
    local c
    c=$(podman create "$image")
    podman export "$c" | tar -x -C "$rootfs"
    podman rm "$c" >/dev/null
    entry=$(podman image inspect --format '{{index .Config.Entrypoint 0}}' "$image")
    python3 scripts/lab/run_image.py --engine chroot --image "$rootfs" --entrypoint "$entry" \
      --netns "$LB" --client-ns "$CLIENT" --vip "$VIP" --volume "$PWD/configs/lab:/etc/loxilb:ro" \
      -- --iface lb0,lb1 --api 127.0.0.1:11111
  fi
  scripts/lab.sh down >/dev/null
  podman rmi -f "$image" >/dev/null 2>&1 || true
  echo "== image: passed"
}

test_k8s() {
  echo "== k8s: validate deploy/k8s against the Kubernetes schemas"
  deploy/k8s/validate.sh deploy/k8s/*.yaml
  echo "== k8s: broken manifests must fail"
  local broken
  for broken in 's/hostNetwork: true/hostNetwork: "yes"/' 's/hostNetwork:/hostNetwrok:/' 's/containerPort: 11111/containerPort: "api"/'; do
    sed "$broken" deploy/k8s/loxilb.yaml >"$work/broken.yaml"
    if deploy/k8s/validate.sh "$work/broken.yaml" >/dev/null 2>&1; then
      echo "xlb k8s test: loxilb.yaml edited with $broken passed validation" >&2
      return 1
    fi
  done
  echo "  all three rejected"
  echo "== k8s: passed"
}

case $what in
  deb) test_deb ;;
  image) test_image ;;
  k8s) test_k8s ;;
  all) test_deb && test_image && test_k8s ;;
  *) echo "usage: $0 [deb|image|k8s|all]" >&2; exit 2 ;;
esac
