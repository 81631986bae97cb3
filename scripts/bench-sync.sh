#!/usr/bin/env bash
# Connection-sync failover benchmark (issue 17): established connections
# (TCP keep-alive, UDP flows) of every age broken when the VIP's holder loses
# power, for xlb, keepalived + nftables + conntrackd (FTFW) and keepalived +
# HAProxy, on the HA benchmark's lab. Writes perf/results/sync-failover.md
# (and .json). Namespaces are pid-tagged and removed at the end (also on
# failure or Ctrl-C).
# Usage: sudo scripts/bench-sync.sh [--quick] [--failovers N] [--contenders xlb,conntrackd,haproxy] [--keep-logs]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lab/bench-prep.sh
bench_prepare xlb-control
exec python3 scripts/lab/sync_bench.py "$@"
