#!/usr/bin/env bash
# The test command (README; .ci/run calls exactly this). Installs what it needs, then checks formatting,
# lints and runs every test. Slow suites (large loads, long soaks, fuzzing) run only with --slow.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null; then
  echo "test: cargo not found. sagw is built from source with a Rust toolchain (1.88 or newer):" >&2
  echo "      install one with rustup (https://rustup.rs), open a new shell, and run this again." >&2
  exit 1
fi
scripts/setup-debian.sh
# A one-shot build gains nothing from incremental caches, which took half the target dir's disk.
if [ "${CI:-}" = true ]; then export CARGO_INCREMENTAL=0; fi
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
if [ "${1:-}" = "--slow" ]; then
  # Each step's failure fails the run (set -e): the fuzz smoke exits non-zero on any crash, a
  # regression input that still crashes, or a target that does not build.
  # 100 000 NTLM first legs from one address, then a real user there signs in (~30 s in debug).
  cargo test --locked -p sagw-tests --test handshake_flood -- --ignored
  scripts/fuzz-smoke.sh 30
fi
