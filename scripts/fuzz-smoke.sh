#!/usr/bin/env bash
# Usage: scripts/fuzz-smoke.sh [SECONDS] [TARGET...]
# Runs every cargo-fuzz target (`cargo fuzz list`, or the ones named) for SECONDS (default 60), one
# job each. For each target: build it, replay its saved regression inputs
# (fuzz/regressions/<target>/*, each once), then fuzz it from its grown corpus
# (fuzz/corpus/<target>/, written to) and its committed seeds (fuzz/seeds/<target>/, read only),
# with its dictionary (fuzz/dict/<target>.dict). Build flags and limits: fuzz/env.sh (no sanitizer;
# per input -timeout=10 s and -rss_limit_mb=2048, FUZZ_TIMEOUT / FUZZ_RSS_MB override).
#
# A target fails when it does not build, a regression input still crashes, or fuzzing finds a
# crash: a panic (every harness invariant is an assert), a timeout, memory over the limit, or a
# run that overstays SECONDS + FUZZ_SMOKE_GRACE (default 300 s; killed, so the script cannot
# hang). It then prints what broke and the tail of the log, goes on with the next target, and the
# script exits non-zero at the end. libFuzzer keeps the crashing input in fuzz/artifacts/<target>/.
# Logs: fuzz/target/fuzz-smoke/<target>.log (and <target>.regressions.log).
set -uo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${1:-60}"
shift $(($# > 0 ? 1 : 0))
tail_lines="${FUZZ_SMOKE_TAIL:-40}"
grace="${FUZZ_SMOKE_GRACE:-300}"
# shellcheck source=../fuzz/env.sh
source ./env.sh || exit 1
logs=target/fuzz-smoke
mkdir -p "$logs"
if (($#)); then
  targets="$*"
elif ! targets=$(cargo fuzz list); then
  echo "fuzz-smoke: \`cargo fuzz list\` failed" >&2
  exit 1
fi
failed=()

# The lines that say what broke (a panic's message, libFuzzer's verdict, a compiler error), then
# the tail of the log.
report() { # target, what, log
  echo "FAILED: $1: $2 (log: fuzz/$3)"
  grep -a -m 3 -A 4 -E "panicked at|^error(\[|:)|ERROR: libFuzzer|ERROR: [A-Za-z]+Sanitizer|^SUMMARY: |^artifact_prefix|Test unit written to" "$3" | sed 's/^/  | /'
  echo "  last $tail_lines lines of the log:"
  tail -n "$tail_lines" "$3" | sed 's/^/    /'
  failed+=("$1 ($2)")
}

for t in $targets; do
  log="$logs/$t.log"
  : >"$log"
  echo "== fuzz $t for ${secs}s"
  if ! cargo fuzz build "${FUZZ_BUILD[@]}" "$t" >>"$log" 2>&1; then
    report "$t" "does not build" "$log"
    continue
  fi
  regressions=()
  if [[ -d "regressions/$t" ]]; then
    while IFS= read -r -d '' f; do regressions+=("$f"); done \
      < <(find "regressions/$t" -type f -print0 | sort -z)
  fi
  if ((${#regressions[@]})); then
    # Files, not a directory: libFuzzer runs each once and stops at the first crash.
    rlog="$logs/$t.regressions.log"
    if timeout -k 10 "$grace" cargo fuzz run "${FUZZ_BUILD[@]}" "$t" "${regressions[@]}" -- "${FUZZ_LIMITS[@]}" >"$rlog" 2>&1; then
      echo "   ${#regressions[@]} regression input(s) pass"
    else
      report "$t" "a regression input in fuzz/regressions/$t crashes" "$rlog"
    fi
  fi
  mkdir -p "corpus/$t"
  seeds=()
  [[ -d "seeds/$t" ]] && seeds=("seeds/$t")
  # shellcheck disable=SC2046
  timeout -k 10 $((secs + grace)) cargo fuzz run "${FUZZ_BUILD[@]}" "$t" "corpus/$t" "${seeds[@]}" -- \
    -max_total_time="$secs" "${FUZZ_LIMITS[@]}" $(fuzz_dict "$t") -print_final_stats=1 >>"$log" 2>&1
  rc=$?
  if ((rc == 0)); then
    grep -a -E "^(Done|#[0-9]+[[:space:]]+DONE)" "$log" | sed 's/^/   /'
  elif ((rc == 124 || rc == 137)); then
    report "$t" "still running after $((secs + grace))s (killed)" "$log"
  else
    report "$t" "crashed while fuzzing (exit $rc)" "$log"
  fi
done

if ((${#failed[@]})); then
  echo "fuzz-smoke: ${#failed[@]} failure(s):"
  printf '  %s\n' "${failed[@]}"
  exit 1
fi
echo "fuzz-smoke: every target ran ${secs}s without a crash"
