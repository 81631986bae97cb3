#!/usr/bin/env bash
# Runs every xlb test: format and lint checks, the dependency tree's licences,
# bans and sources (deny.toml), unit/property/golden tests, the end-to-end
# tests in network namespaces (root required), and a fuzz smoke run.
# Usage: sudo scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh

if [[ $(id -u) -ne 0 ]]; then
  echo "xlb: the end-to-end tests create network namespaces and attach XDP programs: run as root" >&2
  exit 1
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo deny (licences, bans, sources; see deny.toml for advisories)"
if ! cargo deny --version >/dev/null 2>&1; then
  echo "== installing cargo-deny"
  cargo install --locked cargo-deny
fi
cargo deny check licenses bans sources
echo "== cargo test (unit, property, golden, end-to-end)"
# In parallel: every test has its own namespaces, and the few that must not
# overlap take a lock of the test kit themselves.
cargo test --workspace --locked
echo "== deployment: the Debian package and its unit, the container image, the Kubernetes manifests"
scripts/test-deploy.sh all
echo "== fuzz smoke (every target in dataplane/fuzz, ${FUZZ_SECONDS:-15}s each)"
FUZZ_SECONDS=${FUZZ_SECONDS:-15} scripts/fuzz-smoke.sh
echo "== all xlb tests passed"
