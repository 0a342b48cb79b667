#!/usr/bin/env bash
# Usage: scripts/fuzz-smoke.sh [SECONDS] [TARGET...]
# Runs every cargo-fuzz target (`cargo fuzz list`, or the ones named) for SECONDS (default 60), one
# job each. For each target: build it, replay its saved regression inputs
# (fuzz/regressions/<target>/*, each once), then fuzz it from its corpus (fuzz/corpus/<target>/),
# with fuzz/<target>.dict when there is one. Prints a short summary per target; when a target
# fails to build, a regression input still crashes, or the fuzzer finds a crash (panic, sanitizer
# report, leak, timeout), it prints what broke and the tail of the log, goes on, and the script
# exits non-zero at the end.
# Logs: fuzz/target/fuzz-smoke/<target>.log (and <target>.regressions.log); crash inputs:
# fuzz/artifacts/<target>/.
#
# Needs cargo-fuzz (installed here when missing). RUSTC_BOOTSTRAP=1 lets a stable toolchain accept
# the -Z sanitizer flags cargo-fuzz passes (nightly works as well).
set -uo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${1:-60}"
shift $(($# > 0 ? 1 : 0))
tail_lines="${FUZZ_SMOKE_TAIL:-40}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked || exit 1
export RUSTC_BOOTSTRAP=1
logs=target/fuzz-smoke
mkdir -p "$logs"
if (($#)); then
  targets="$*"
elif ! targets=$(cargo fuzz list); then
  echo "fuzz-smoke: \`cargo fuzz list\` failed" >&2
  exit 1
fi
failed=()

# The lines that say what broke (a panic's message, a sanitizer's verdict, a compiler error), then
# the tail of the log.
report() { # target, what, log
  echo "FAILED: $1: $2 (log: fuzz/$3)"
  grep -a -m 3 -A 4 -E "panicked at|^error(\[|:)|ERROR: [A-Za-z]+Sanitizer|^SUMMARY: " "$3" | sed 's/^/  | /'
  echo "  last $tail_lines lines of the log:"
  tail -n "$tail_lines" "$3" | sed 's/^/    /'
  failed+=("$1 ($2)")
}

for t in $targets; do
  log="$logs/$t.log"
  : >"$log"
  echo "== fuzz $t for ${secs}s"
  if ! cargo fuzz build "$t" >>"$log" 2>&1; then
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
    if cargo fuzz run "$t" "${regressions[@]}" >"$rlog" 2>&1; then
      echo "   ${#regressions[@]} regression input(s) pass"
    else
      report "$t" "a regression input in fuzz/regressions/$t crashes" "$rlog"
    fi
  fi
  args=(-max_total_time="$secs")
  [[ -f "$t.dict" ]] && args+=(-dict="$t.dict")
  if cargo fuzz run "$t" -- "${args[@]}" >>"$log" 2>&1; then
    grep -E "^(Done|#[0-9]+[[:space:]]+DONE)" "$log" | sed 's/^/   /'
  else
    report "$t" "crashed while fuzzing" "$log"
  fi
done

if ((${#failed[@]})); then
  echo "fuzz-smoke: ${#failed[@]} failure(s):"
  printf '  %s\n' "${failed[@]}"
  exit 1
fi
echo "fuzz-smoke: every target ran ${secs}s without a crash"
