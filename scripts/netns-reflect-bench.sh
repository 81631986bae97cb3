#!/usr/bin/env bash
# Measures the AF_XDP path on a veth pair: a UDP reflector (xlb runtime) in a
# "lb" namespace, a kernel UDP blaster in a "cl" namespace. Everything lives in
# two namespaces this script creates and always deletes (trap), so nothing
# leaks into the host. Usage: sudo scripts/netns-reflect-bench.sh [SECS] [busy]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
busy=${2:-}
id=$$
lb=xlbb-$id-lb cl=xlbb-$id-cl li=xb${id}l ci=xb${id}c
cleanup() { ip netns del "$lb" 2>/dev/null || true; ip netns del "$cl" 2>/dev/null || true; }
trap cleanup EXIT INT TERM

cargo build -q -p xlb-io --release --example reflect
bin=target/release/examples/reflect

ip netns add "$lb"; ip netns add "$cl"
ip -n "$lb" link set lo up; ip -n "$cl" link set lo up
ip -n "$lb" link add "$li" type veth peer name "$ci" netns "$cl"
for pair in "$lb $li 10.99.0.1/24" "$cl $ci 10.99.0.2/24"; do
  set -- $pair
  ip netns exec "$1" ethtool -K "$2" tx off >/dev/null
  ip -n "$1" addr add "$3" dev "$2"
  ip -n "$1" link set "$2" up
done
ip -n "$cl" route add 10.99.1.0/24 via 10.99.0.1

ip netns exec "$lb" "$bin" serve "$li" $((secs + 2)) $busy &
serve=$!
sleep 1
# Generator pinned to cpu0; the worker takes whatever core it was given.
ip netns exec "$cl" taskset -c 0 "$bin" blast "$secs"
wait "$serve"
