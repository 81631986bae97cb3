#!/usr/bin/env bash
# Failover-time benchmark (issue 5): kill a backend's server, measure how long
# until xlb marks it down and new connections stop failing, against the probe
# budget (retries × probeDuration + 1 s). Writes perf/results/failover.md.
# Namespaces are pid-tagged and removed at the end (also on failure).
# Usage: sudo scripts/bench-failover.sh [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lab/bench-prep.sh
bench_prepare xlb-control
exec python3 scripts/lab/failover_bench.py "$@"
