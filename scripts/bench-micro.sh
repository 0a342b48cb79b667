#!/usr/bin/env bash
# Runs every criterion benchmark (the sans-IO crates, the gateway's metrics) plus the SA memory count, and prints one line per
# figure ("name: median"), for docs/BENCHMARKS.md. Load from other processes inflates wall-clock
# figures: run it on a quiet machine, and compare each figure with its floor from the same run.
# Usage: scripts/bench-micro.sh [criterion args, default: --warm-up-time 2 --measurement-time 5]
set -euo pipefail
cd "$(dirname "$0")/.."
args=("$@")
[ ${#args[@]} -eq 0 ] && args=(--warm-up-time 2 --measurement-time 5)
echo "# $(date -u +%FT%TZ) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
for spec in "sagw-sip parse" "sagw-ntlm ntlm" "sagw-digest verify" "sagw-auth core" "sagw-kerberos kerberos" "sagw-proxy edge" "sagw-gateway metrics"; do
  set -- $spec
  cargo bench -q -p "$1" --bench "$2" -- "${args[@]}" 2>/dev/null | python3 -c '
import re, sys
name = None
for line in sys.stdin:
    m = re.match(r"^(\S.*?)\s+time:\s+\[\S+ \S+ (\S+ \S+)", line)
    if m:
        print(f"{m.group(1)}: {m.group(2)}"); name = None; continue
    m = re.match(r"^\s+time:\s+\[\S+ \S+ (\S+ \S+)", line)
    if m and name:
        print(f"{name}: {m.group(1)}"); name = None; continue
    if line.strip() and not line.startswith((" ", "Benchmarking", "Found", "Gnuplot", "Warning")):
        name = line.strip()
'
done
cargo bench -q -p sagw-auth --bench sa_memory 2>/dev/null | grep sa_memory
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
