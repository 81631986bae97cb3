#!/usr/bin/env bash
# Side-by-side benchmark (issue 6): UDP 64 B / 1024 flows through xlb, a
# minimal AF_XDP forwarder and nftables DNAT on one namespaced topology.
# Writes perf/results/udp64-1024flows.{md,json,svg,png}. Namespaces are
# pid-tagged and removed by the harness (also on failure).
# Usage: sudo scripts/bench.sh [--quick] [xlb-perf bench options...]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
if [[ $(id -u) -ne 0 ]]; then
  echo "xlb: the benchmark creates network namespaces and attaches XDP: run as root" >&2
  exit 1
fi
cargo build -q -p xlb-perf --release
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
exec target/release/xlb-perf bench "$@"
