#!/usr/bin/env bash
# Runs the gateway on its embedded default configuration (config/default.toml), installing what the
# build needs first (headers and libclang, no KDC: the embedded default signs users in with Digest,
# and Kerberos needs only a keytab, never a KDC on the gateway's host).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null; then
  echo "run: cargo not found. sagw is built from source with a Rust toolchain (1.88 or newer):" >&2
  echo "     install one with rustup (https://rustup.rs), open a new shell, and run this again." >&2
  exit 1
fi
scripts/setup-debian.sh --build
exec cargo run --release --locked -p sagw-gateway -- "$@"
