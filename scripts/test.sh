#!/usr/bin/env bash
# The test command (README; .ci/run calls exactly this). Installs what it needs, then checks formatting,
# lints and runs every test. Slow suites (large loads, long soaks, fuzzing) run only with --slow.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-debian.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
if [ "${1:-}" = "--slow" ]; then
  scripts/fuzz-smoke.sh 30
fi
