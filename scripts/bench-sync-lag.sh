#!/usr/bin/env bash
# Connection-sync lag and bandwidth through the daemon (issue 17): new flows
# per second (TCP SYNs from xlb-pktgen) into the VIP's holder of a
# two-node sync group, and the lag until each reaches the other node's
# workers, at 1k, 10k and 100k new flows/s. Writes perf/results/sync-lag.md
# (and .json). Namespaces are pid-tagged and removed at the end (also on
# failure or Ctrl-C). ~1 min.
# Usage: sudo scripts/bench-sync-lag.sh [--rates 1000,10000,100000] [--secs 3]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lab/bench-prep.sh
bench_prepare xlb-control xlb-perf
exec python3 scripts/lab/sync_lag.py "$@"
