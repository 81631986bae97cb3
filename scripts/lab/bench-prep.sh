# The lab benchmarks' preparation, sourced by scripts/bench*.sh from the
# repository's root: `bench_prepare PACKAGE...` checks for root (they create
# network namespaces and attach XDP), installs the Debian packages they use
# (scripts/deps.sh) and builds the named crates in release mode.
bench_prepare() {
  if [[ $(id -u) -ne 0 ]]; then
    echo "xlb: the benchmark creates network namespaces and attaches XDP: run as root" >&2
    exit 1
  fi
  scripts/deps.sh
  local pkgs=()
  for p in "$@"; do pkgs+=(-p "$p"); done
  cargo build -q --release --locked "${pkgs[@]}"
}
