#!/usr/bin/env bash
# Runs every cargo-fuzz target for N seconds (default 60). Needs cargo-fuzz (cargo install cargo-fuzz);
# the only toolchain here is stable, so RUSTC_BOOTSTRAP enables the sanitizer flags cargo-fuzz passes.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${1:-60}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
for t in $(cargo fuzz list); do
  echo "== fuzz $t for ${secs}s"
  RUSTC_BOOTSTRAP=1 cargo fuzz run "$t" -- -max_total_time="$secs" 2>&1 | grep -E "^(Done|#[0-9]+ +DONE)|ERROR|panicked" || true
done
