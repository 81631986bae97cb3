#!/usr/bin/env bash
# Failover-time benchmark (issue 5): kill a backend's server, measure how long
# until xlb marks it down and new connections stop failing, against the probe
# budget (retries × probeDuration + 1 s). Writes perf/results/failover.md.
# Namespaces are pid-tagged and removed at the end (also on failure).
# Usage: sudo scripts/bench-failover.sh [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $(id -u) -ne 0 ]]; then
  echo "xlb: the benchmark creates network namespaces and attaches XDP: run as root" >&2
  exit 1
fi
scripts/deps.sh
cargo build -q --release --locked -p xlb-control
exec python3 scripts/lab/failover_bench.py "$@"
