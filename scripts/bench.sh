#!/usr/bin/env bash
# Side-by-side benchmark (issue 6) on one namespaced topology, every
# contender on the same core placement:
#   udp:   UDP 64 B / 1024 flows: xlb, a minimal AF_XDP forwarder, nftables DNAT
#   tcp:   wrk against nginx backends: conn/s, req/s and latency at a fixed rate,
#          direct / xlb full NAT / xlb DNAT / nftables / HAProxy / nginx stream
#   flows: 1M tracked flows, and a SYN flood next to established flows (xlb daemon)
# Writes perf/results/{summary,udp64-1024flows,tcp,flows}.md (+ JSON, SVG, PNG).
# Namespaces are pid-tagged; processes and namespaces are removed by the
# harness (also on failure and Ctrl-C). About 10 minutes on 2 cores.
# Usage: sudo scripts/bench.sh [--quick] [--suites udp,tcp,flows] [xlb-perf bench options...]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lab/bench-prep.sh
bench_prepare xlb-perf xlb-control
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
exec target/release/xlb-perf bench --xlb-bin target/release/xlb "$@"
