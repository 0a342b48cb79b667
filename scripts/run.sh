#!/usr/bin/env bash
# Runs the gateway on its embedded default configuration (config/default.toml), installing what the
# build needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-debian.sh
exec cargo run --release --locked -p sagw-gateway -- "$@"
