#!/usr/bin/env bash
# xlb's built-in lab: network namespaces on this machine, three real backends,
# real traffic through a VIP.
#
#   sudo scripts/lab.sh            # = demo: build, bring the lab up, start xlb,
#                                  #   send traffic, show who answered, tear down
#   sudo scripts/lab.sh up         # topology and backends only (for tests)
#   sudo scripts/lab.sh down       # remove everything the lab made
#   sudo scripts/lab.sh demo --one-arm   # the one-arm topology below
#                                  #   (or XLB_LAB_TOPO=onearm, for up/demo)
#
# Two-arm topology (the default; prefix $XLB_LAB, default "xlb"):
#
#   [client] c0 10.10.1.2 ── lb0 10.10.1.1 [lb: xlb on lb0,lb1] lb1 10.10.2.1 ── [sw: br0] ─┬─ [be1] 10.10.2.11
#                                                                                          ├─ [be2] 10.10.2.12
#                                                                                          └─ [be3] 10.10.2.13
#   (and fd00:10:1::/64, fd00:10:2::/64 for IPv6). VIP 10.10.100.1: tcp/80 full NAT
#   round robin to :8080 (HTTP), udp/53 full NAT Maglev to :9000 (echo); see
#   configs/lab/lbconfig.txt.
#
# One-arm topology (like the loxilb K3s HA guide: VIP and servers in one subnet,
# xlb on one interface, replies come back to xlb because it source-NATs):
#
#   [client] c0 10.10.3.2 ──┐
#   [lb] lb0 10.10.3.1 ─────┤ [sw: br0]    VIP 10.10.3.100 (in the subnet):
#   [be1] 10.10.3.11 ───────┤   tcp/80 full NAT (mode 2, as the guide) round
#   [be2] 10.10.3.12 ───────┤   robin to :8080; udp/53 one-arm (mode 1) Maglev
#   [be3] 10.10.3.13 ───────┘   to :9000; see configs/lab-onearm/lbconfig.txt.
#   (and fd00:10:3::/64). No host routes through xlb: the backends reach the
#   client only via xlb's NAT.
set -euo pipefail
cd "$(dirname "$0")/.."

P=${XLB_LAB:-xlb}
CLIENT=$P-client LB=$P-lb SW=$P-sw
BACKENDS=("$P-be1" "$P-be2" "$P-be3")
QUEUES=${XLB_LAB_QUEUES:-1}
TOPO=${XLB_LAB_TOPO:-twoarm}
for arg in "$@"; do
  case $arg in
    --one-arm) TOPO=onearm ;;
    --two-arm) TOPO=twoarm ;;
  esac
done
case $TOPO in
  twoarm) VIP=10.10.100.1 IFACES=lb0,lb1 CONFIG=configs/lab ;;
  onearm) VIP=10.10.3.100 IFACES=lb0 CONFIG=configs/lab-onearm ;;
  *) echo "xlb lab: XLB_LAB_TOPO must be twoarm or onearm, not $TOPO" >&2; exit 2 ;;
esac
RUN=/run/$P-lab
XLB=${XLB_BIN:-target/release/xlb}

need_root() {
  if [[ $(id -u) -ne 0 ]]; then
    echo "xlb lab: needs root (network namespaces, XDP): sudo $0 $*" >&2
    exit 1
  fi
}

nsx() { ip netns exec "$@"; }

veth() { # veth NS_A IF_A NS_B IF_B
  local q=$((QUEUES * 1))
  ip -n "$1" link add "$2" numtxqueues "$q" numrxqueues "$q" type veth \
    peer name "$4" netns "$3" numtxqueues "$q" numrxqueues "$q"
  for side in "$1 $2" "$3 $4"; do
    set -- $side
    nsx "$1" ethtool -K "$2" tx off >/dev/null
    ip -n "$1" link set "$2" up
  done
}

down() {
  for ns in "$CLIENT" "$LB" "$SW" "${BACKENDS[@]}"; do
    if ip netns list | grep -qw "$ns"; then
      # Processes inside a namespace outlive it: stop them first.
      for pid in $(ip netns pids "$ns" 2>/dev/null); do kill "$pid" 2>/dev/null || true; done
      sleep 0.2
      for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
      ip netns del "$ns" 2>/dev/null || true
    fi
  done
  rm -rf "$RUN"
}

make_namespaces() {
  down
  mkdir -p "$RUN"
  for ns in "$CLIENT" "$LB" "$SW" "${BACKENDS[@]}"; do
    ip netns add "$ns"
    ip -n "$ns" link set lo up
  done
  ip -n "$SW" link add br0 type bridge
  nsx "$SW" sysctl -qw net.bridge.bridge-nf-call-iptables=0 net.bridge.bridge-nf-call-ip6tables=0 \
    net.bridge.bridge-nf-call-arptables=0 2>/dev/null || true
  ip -n "$SW" link set br0 up
}

start_backend() { # start_backend INDEX NAMESPACE ADDRESS_TO_PING
  nsx "$2" python3 scripts/lab/backend.py "backend-$1" >/dev/null 2>&1 &
  # Speak first, so the bridge learns where each backend is.
  nsx "$2" ping -c1 -W1 "$3" >/dev/null 2>&1 || true
}

wait_backends() {
  for be in "${BACKENDS[@]}"; do
    for _ in $(seq 50); do
      nsx "$be" python3 -c "import socket; socket.create_connection(('127.0.0.1', 8080), 0.2)" 2>/dev/null && break
      sleep 0.1
    done
  done
}

up() {
  case $TOPO in
    twoarm) up_two_arm ;;
    onearm) up_one_arm ;;
  esac
  echo "$TOPO" >"$RUN/topology"
}

up_one_arm() {
  make_namespaces
  veth "$SW" sc "$CLIENT" c0
  veth "$SW" slb "$LB" lb0
  ip -n "$SW" link set sc master br0
  ip -n "$SW" link set slb master br0
  ip -n "$CLIENT" addr add 10.10.3.2/24 dev c0
  ip -n "$CLIENT" addr add fd00:10:3::2/64 dev c0 nodad
  ip -n "$LB" addr add 10.10.3.1/24 dev lb0
  ip -n "$LB" addr add fd00:10:3::1/64 dev lb0 nodad
  local i=0
  for be in "${BACKENDS[@]}"; do
    i=$((i + 1))
    veth "$SW" "s$i" "$be" eth0
    ip -n "$SW" link set "s$i" master br0
    ip -n "$be" addr add "10.10.3.1$i/24" dev eth0
    ip -n "$be" addr add "fd00:10:3::1$i/64" dev eth0 nodad
    start_backend "$i" "$be" 10.10.3.1
  done
  nsx "$CLIENT" ping -c1 -W1 10.10.3.1 >/dev/null 2>&1 || true
  wait_backends
}

up_two_arm() {
  make_namespaces
  veth "$CLIENT" c0 "$LB" lb0
  veth "$LB" lb1 "$SW" sw0
  ip -n "$SW" link set sw0 master br0
  ip -n "$CLIENT" addr add 10.10.1.2/24 dev c0
  ip -n "$CLIENT" addr add fd00:10:1::2/64 dev c0 nodad
  ip -n "$CLIENT" route add default via 10.10.1.1
  ip -n "$CLIENT" -6 route add default via fd00:10:1::1
  ip -n "$LB" addr add 10.10.1.1/24 dev lb0
  ip -n "$LB" addr add fd00:10:1::1/64 dev lb0 nodad
  ip -n "$LB" addr add 10.10.2.1/24 dev lb1
  ip -n "$LB" addr add fd00:10:2::1/64 dev lb1 nodad
  local i=0
  for be in "${BACKENDS[@]}"; do
    i=$((i + 1))
    veth "$SW" "s$i" "$be" eth0
    ip -n "$SW" link set "s$i" master br0
    ip -n "$be" addr add "10.10.2.1$i/24" dev eth0
    ip -n "$be" addr add "fd00:10:2::1$i/64" dev eth0 nodad
    ip -n "$be" route add default via 10.10.2.1
    ip -n "$be" -6 route add default via fd00:10:2::1
    start_backend "$i" "$be" 10.10.2.1
  done
  wait_backends
}

start_xlb() { # start_xlb CONFIG_DIR [extra args]
  local cfg=$1
  shift
  nsx "$LB" "$XLB" run --iface "$IFACES" --config-path "$cfg" --api 127.0.0.1:11111 "$@" \
    >"$RUN/xlb.log" 2>&1 &
  echo $! >"$RUN/xlb.pid"
  for _ in $(seq 100); do
    if nsx "$LB" curl -sf http://127.0.0.1:11111/netlox/v1/config/loadbalancer/all >/dev/null 2>&1; then
      return 0
    fi
    if ! kill -0 "$(cat "$RUN/xlb.pid")" 2>/dev/null; then break; fi
    sleep 0.1
  done
  echo "xlb lab: xlb did not come up; its log:" >&2
  cat "$RUN/xlb.log" >&2
  return 1
}

demo() {
  # Ctrl-C or a kill: tear down and stop here (not go on with the demo).
  trap down EXIT
  trap 'echo "xlb lab: interrupted, cleaning up" >&2; exit 130' INT TERM
  scripts/deps.sh
  command -v ping >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iputils-ping >/dev/null; }
  if [[ ! -x $XLB || -n "$(find control dataplane io bpf -newer "$XLB" \( -name '*.rs' -o -name '*.[ch]' \) -print -quit 2>/dev/null)" ]]; then
    echo "== building xlb (release)"
    cargo build --release --locked -p xlb-control
  fi
  if [[ $TOPO == onearm ]]; then
    echo "== lab up (one-arm): client, balancer and three backends on one switch, one subnet (namespaces $P-*)"
  else
    echo "== lab up: client, balancer, switch and three backends (namespaces $P-*)"
  fi
  up
  echo "== xlb run --iface $IFACES --config-path $CONFIG (in $LB)"
  start_xlb "$CONFIG"
  nsx "$LB" "$XLB" get lb -o wide | sed 's/^/  /'
  echo "== client -> VIP $VIP (real kernels on both sides, xlb in between on AF_XDP)"
  local rc=0
  nsx "$CLIENT" python3 scripts/lab/client.py "$VIP" 60 9 || rc=$?
  echo "== what xlb saw"
  nsx "$LB" "$XLB" get lb | sed 's/^/  /'
  nsx "$LB" curl -s http://127.0.0.1:11111/netlox/v1/metrics \
    | grep -E '^xlb_worker_(rx|tx)_packets|^xlb_worker_drops' | sed 's/^/  /' || true
  if ((rc == 0)); then
    echo "== lab demo passed: every request went through the VIP and was answered"
  else
    echo "== lab demo FAILED (xlb log: $RUN/xlb.log)" >&2
    cat "$RUN/xlb.log" >&2
  fi
  return $rc
}

need_root "$@"
case "${1:-demo}" in
  up) up ;;
  down) down ;;
  demo) demo ;;
  --one-arm | --two-arm) demo ;;
  *) echo "usage: $0 [demo|up|down] [--one-arm]" >&2; exit 2 ;;
esac
