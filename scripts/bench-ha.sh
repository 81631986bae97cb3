#!/usr/bin/env bash
# High-availability failover benchmark (issue 16): the VIP's holder loses
# power, how long until new connections succeed again, for xlb's election,
# keepalived + HAProxy and keepalived + nftables DNAT, side by side on the
# K3s docs' layout. Writes perf/results/ha-failover.md (and .json).
# Namespaces are pid-tagged and removed at the end (also on failure or Ctrl-C).
# Usage: sudo scripts/bench-ha.sh [--quick] [--failovers N] [--contenders xlb,haproxy,nft] [--keep-logs]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lab/bench-prep.sh
bench_prepare xlb-control
exec python3 scripts/lab/ha_bench.py "$@"
