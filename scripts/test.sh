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
  # 100 000 NTLM first legs from one address, then a real user there signs in (~30 s in debug).
  cargo test --locked -p sagw-tests --test handshake_flood -- --ignored
  scripts/fuzz-smoke.sh 30
fi
