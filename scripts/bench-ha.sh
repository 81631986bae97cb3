#!/usr/bin/env bash
# High-availability failover benchmark (issue 16): the VIP's holder loses
# power, how long until new connections succeed again, for xlb's election,
# keepalived + HAProxy and keepalived + nftables DNAT, side by side on the
# K3s docs' layout. Writes perf/results/ha-failover.md (and .json).
# Namespaces are pid-tagged and removed at the end (also on failure or Ctrl-C).
# Usage: sudo scripts/bench-ha.sh [--quick] [--failovers N] [--contenders xlb,haproxy,nft] [--keep-logs]
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $(id -u) -ne 0 ]]; then
  echo "xlb: the benchmark creates network namespaces and attaches XDP: run as root" >&2
  exit 1
fi
scripts/deps.sh
cargo build -q --release --locked -p xlb-control
# scripts/bench-sync.sh runs its benchmark on the same preparation.
exec python3 "scripts/lab/${XLB_HA_BENCH:-ha_bench.py}" "$@"
