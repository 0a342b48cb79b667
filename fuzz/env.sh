# Sourced by scripts/fuzz-smoke.sh and fuzz/campaign.sh (from fuzz/): how the targets are built
# and run, in one place, so the smoke runs, the campaigns and a by-hand `cargo fuzz run` reuse one
# build (a different flag rebuilds every dependency, ~20 min here).
#
# No sanitizer (`-s none`): the crates under test forbid unsafe code (sip, ntlm, proxy, gateway;
# auth has none), so AddressSanitizer has nothing of ours to check, while it halves the execution
# rate and lengthens the build. What fails a run is a panic (every harness invariant is an
# assert), a timeout (-timeout) or memory over -rss_limit_mb. Debug assertions and overflow checks
# stay on (cargo-fuzz's default). Override with FUZZ_SANITIZER=address.
# RUSTC_BOOTSTRAP=1 lets the stable toolchain accept the -Z flags cargo-fuzz passes.
export RUSTC_BOOTSTRAP=1
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
unset CARGO_TARGET_DIR
FUZZ_BUILD=(-s "${FUZZ_SANITIZER:-none}")
# Per-input time limit (s) and memory limit (MB): over either is a failure (libFuzzer keeps the input).
FUZZ_LIMITS=(-timeout="${FUZZ_TIMEOUT:-10}" -rss_limit_mb="${FUZZ_RSS_MB:-2048}")

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked || return 1

# libFuzzer options for TARGET: its dictionary.
fuzz_dict() {
  [[ -f "dict/$1.dict" ]] && echo "-dict=dict/$1.dict"
}
