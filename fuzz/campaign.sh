#!/usr/bin/env bash
# Usage: [RUNS=10000000] [BASELINE_SECS=120] [MAX_SECS=N] fuzz/campaign.sh TARGET
# A documented fuzzing campaign on one target (issue 17; figures in docs/BENCHMARKS.md "Fuzzing"):
#  1. baseline: BASELINE_SECS seconds from an empty corpus, no seeds, no dictionary (what random
#     bytes reach);
#  2. the campaign: RUNS executions (default 10 M) from the committed seeds (fuzz/seeds/TARGET/)
#     with the dictionary (fuzz/dict/TARGET.dict), one job, libFuzzer's own corpus in
#     fuzz/target/campaign/TARGET/corpus (kept for the next campaign); MAX_SECS bounds it in time
#     as well (for a slow target in a limited window: the table then shows fewer executions).
# Prints, for each, the executions, the edges covered (libFuzzer's `cov`), the features (`ft`),
# the corpus size, the time and the rate, and a Markdown table row for docs/BENCHMARKS.md. Exits
# non-zero on any crash, timeout or memory overrun (the input is in fuzz/artifacts/TARGET/).
# Build flags and per-input limits: fuzz/env.sh. Run it niced beside other work:
#   RUNS=10000000 nice -n 10 fuzz/campaign.sh sip_message
set -uo pipefail
cd "$(dirname "$0")"
t="${1:?usage: fuzz/campaign.sh TARGET}"
runs="${RUNS:-10000000}"
base_secs="${BASELINE_SECS:-120}"
# shellcheck source=env.sh
source ./env.sh || exit 1
dir="target/campaign/$t"
mkdir -p "$dir/corpus"
cargo fuzz build "${FUZZ_BUILD[@]}" "$t" >"$dir/build.log" 2>&1 || {
  tail -n 30 "$dir/build.log"
  exit 1
}

# stat::number_of_executed_units, and cov/ft/corp of the last status line, from a log.
summary() { # log
  local execs cov ft corp
  execs=$(grep -a -o 'stat::number_of_executed_units: [0-9]*' "$1" | awk '{print $2}' | tail -n 1)
  read -r cov ft corp < <(grep -a -E '^#[0-9]+' "$1" | tail -n 1 |
    sed -E 's/.*cov: ([0-9]+) ft: ([0-9]+) corp: ([0-9]+).*/\1 \2 \3/')
  echo "${execs:-?} ${cov:-?} ${ft:-?} ${corp:-?}"
}

run() { # name, log, args...
  local name="$1" log="$2"
  shift 2
  local start end rc
  start=$(date +%s)
  cargo fuzz run "${FUZZ_BUILD[@]}" "$t" "$@" >"$log" 2>&1
  rc=$?
  end=$(date +%s)
  read -r execs cov ft corp < <(summary "$log")
  secs=$((end - start))
  rate=$([[ "$execs" =~ ^[0-9]+$ ]] && ((secs > 0)) && echo $((execs / secs)) || echo "?")
  echo "$t $name: exit $rc, $execs execs in ${secs}s ($rate/s), cov $cov, ft $ft, corpus $corp (log: fuzz/$log)"
  if ((rc != 0)); then
    grep -a -m 3 -A 4 -E "panicked at|ERROR: libFuzzer|Test unit written to" "$log"
    exit "$rc"
  fi
}

rm -rf "$dir/baseline" && mkdir -p "$dir/baseline"
run "baseline, no seeds, no dictionary" "$dir/baseline.log" "$dir/baseline" -- \
  -max_total_time="$base_secs" "${FUZZ_LIMITS[@]}" -print_final_stats=1
base_cov=$cov
base_execs=$execs
seeds=()
[[ -d "seeds/$t" ]] && seeds=("seeds/$t")
# shellcheck disable=SC2046
run "campaign, seeds and dictionary" "$dir/campaign.log" "$dir/corpus" "${seeds[@]}" -- \
  -runs="$runs" ${MAX_SECS:+-max_total_time="$MAX_SECS"} "${FUZZ_LIMITS[@]}" $(fuzz_dict "$t") \
  -print_final_stats=1
bound="RUNS=$runs${MAX_SECS:+ MAX_SECS=$MAX_SECS}"
echo "| \`$t\` | $execs | $secs s ($rate/s) | $cov | $base_cov ($base_execs execs, ${base_secs} s) | no crash | \`$bound fuzz/campaign.sh $t\` |"
