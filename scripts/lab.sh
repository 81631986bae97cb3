#!/usr/bin/env bash
# The built-in lab: namespaces, backends, real traffic through a VIP.
set -euo pipefail
echo "xlb lab: not yet — the AF_XDP I/O and the lab land with the I/O work (issue 3)." >&2
exit 2
