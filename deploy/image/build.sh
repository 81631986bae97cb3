#!/usr/bin/env bash
# Builds xlb's container image (deploy/image/Containerfile, FROM scratch)
# offline: lays out a root file system holding the binary and the shared
# libraries `ldd` lists for it (copied, links resolved, at the paths the
# binary asks for), then builds the image with podman (Debian's package;
# its builder is buildah's library).
#
#   deploy/image/build.sh [--bin PATH] [--rootfs DIR] [--tag NAME]
#
# --bin defaults to target/release/xlb (built when missing); --rootfs to a
# temporary directory (removed after the build); --tag to
# localhost/xlb:VERSION. Prints the image's name, or the rootfs directory
# (given with --rootfs) when podman is not installed.
set -euo pipefail
cd "$(dirname "$0")/../.."

bin=target/release/xlb
rootfs=
tag=
while (($#)); do
  case $1 in
    --bin) bin=$2; shift 2 ;;
    --rootfs) rootfs=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    *) echo "usage: $0 [--bin PATH] [--rootfs DIR] [--tag NAME]" >&2; exit 2 ;;
  esac
done
if [[ $bin == target/release/xlb && ! -x $bin ]]; then
  cargo build --release --locked -p xlb-control >&2
fi
[[ -x $bin ]] || { echo "xlb image: no binary at $bin" >&2; exit 1; }
version=$("$bin" --version | awk '{print $2}')
tag=${tag:-localhost/xlb:$version}

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
keep_rootfs=1
if [[ -z $rootfs ]]; then
  rootfs=$ctx/rootfs
  keep_rootfs=0
fi
rm -rf "$rootfs"
install -D -m 0755 "$bin" "$rootfs/usr/bin/xlb"
strip --strip-debug "$rootfs/usr/bin/xlb"
# Every library the dynamic loader would map, and the loader itself.
ldd "$bin" | awk '/=> \//{print $3} /^\t\/[^ ]*ld-linux/{print $1}' | while read -r lib; do
  install -D -m 0755 "$(readlink -f "$lib")" "$rootfs$lib"
done
# Debian's loader path is /lib64/ld-linux-x86-64.so.2; usrmerge makes /lib64
# a link on the host, a directory here: either resolves.
install -d -m 0755 "$rootfs/etc/loxilb" "$rootfs/tmp" "$rootfs/proc" "$rootfs/sys" "$rootfs/dev"
chmod 1777 "$rootfs/tmp"
# `xlb` as the user it runs as (root) and nothing else.
echo 'root:x:0:0:root:/:/usr/bin/xlb' >"$rootfs/etc/passwd"
echo 'root:x:0:' >"$rootfs/etc/group"

if command -v podman >/dev/null; then
  [[ $rootfs == "$ctx/rootfs" ]] || cp -a "$rootfs" "$ctx/rootfs"
  podman build -q -f "$PWD/deploy/image/Containerfile" -t "$tag" "$ctx" >/dev/null
  echo "$tag"
elif ((keep_rootfs)); then
  echo "$rootfs"
else
  echo "xlb image: podman is not installed (apt-get install podman); --rootfs DIR keeps the layout alone" >&2
  exit 1
fi
