#!/usr/bin/env bash
# Installs what building and testing xlb needs on a fresh Debian 12 machine.
# Safe to run again: it installs only what is missing. Needs root.
set -euo pipefail

# ping/arping/curl/python3/openssl: the lab and the end-to-end tests;
# nftables: the kernel DNAT contender of `xlb-perf bench`; conntrack: flushing that contender's
# table between the flows suite's parts; librsvg2-bin: its PNG charts;
# wrk, nginx (+ its stream module) and haproxy: its TCP suite (client, backends, proxies);
# keepalived: the HA tests drive xlb nodes with it through `xlb notify`;
# conntrackd: the connection-sync benchmark's keepalived + nftables contender (FTFW);
# dpkg-dev (dpkg-shlibdeps), systemd (systemd-analyze), podman and python3-venv
# (kubernetes-validate): scripts/test-deploy.sh's package, unit, image and manifests;
# tmux: the `xlb top` test reads its screen from a tmux pane.
pkgs=(clang llvm libelf-dev zlib1g-dev pkg-config m4 iproute2 ethtool iputils-ping iputils-arping curl python3
  openssl nftables conntrack librsvg2-bin wrk nginx libnginx-mod-stream haproxy keepalived conntrackd
  dpkg-dev systemd podman python3-venv tmux)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "xlb: missing Debian packages: ${missing[*]} (run as root, or install them)" >&2
    exit 1
  fi
  echo "xlb: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
