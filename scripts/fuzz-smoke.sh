#!/usr/bin/env bash
# Fuzz smoke run: every cargo-fuzz target in dataplane/fuzz/fuzz_targets/ (or
# only the ones named) for a bounded time each, starting from the seed frames
# in dataplane/fuzz/seeds/ (written by the builders; regenerated if missing).
#
# Usage: scripts/fuzz-smoke.sh [TARGET...]
#   FUZZ_SECONDS  time per target (default 20)
# Needs a nightly toolchain (`cargo +nightly`); installs cargo-fuzz if missing.
# A new target needs a [[bin]] entry in dataplane/fuzz/Cargo.toml
# (`cargo fuzz add NAME` writes both); this script then picks it up.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${FUZZ_SECONDS:-20}
fuzz=dataplane/fuzz

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "xlb: the fuzz smoke run needs a nightly toolchain (rustup toolchain install nightly)" >&2
  exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

if [[ -z "$(ls -A "$fuzz/seeds" 2>/dev/null)" ]]; then
  echo "== writing seed frames to $fuzz/seeds"
  XLB_FUZZ_SEEDS="$PWD/$fuzz/seeds" cargo test -p xlb-dataplane --lib -- --ignored write_fuzz_seeds
  XLB_FUZZ_SEEDS="$PWD/$fuzz/seeds" cargo test -p xlb-dataplane --test golden -- --ignored write_golden_fuzz_seeds
fi

targets=("$@")
if ((${#targets[@]} == 0)); then
  for f in "$fuzz"/fuzz_targets/*.rs; do
    targets+=("$(basename "$f" .rs)")
  done
fi

cd "$fuzz"
failed=()
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  cp -n seeds/* "corpus/$t/" 2>/dev/null || true
  echo "== fuzz $t for ${secs}s"
  if ! cargo +nightly fuzz run "$t" "corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1; then
    failed+=("$t")
  fi
done

if ((${#failed[@]})); then
  echo "xlb: fuzz targets failed: ${failed[*]} (crashing inputs in $fuzz/artifacts/)" >&2
  exit 1
fi
echo "xlb: fuzz smoke passed: ${targets[*]}"
