//! The repository's scripts fail when what they check fails: scripts/fuzz-smoke.sh (which
//! `scripts/test.sh --slow` runs under `set -e`) exits non-zero when the fuzzer finds a crash.
//! cargo and cargo-fuzz are stand-ins here (a crash is what libFuzzer prints and its exit code),
//! so the script's own logic is what is tested, in a second, without a fuzzing toolchain.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

/// A fake `cargo` whose `cargo fuzz run` behaves as `run` says, and a fake `cargo-fuzz`.
fn fake_toolchain(dir: &Path, run: &str) {
    let cargo = format!(
        "#!/bin/sh\n# cargo fuzz build|run TARGET ...\ncase \"$2\" in\n  build) exit 0 ;;\n  run) {run} ;;\nesac\nexit 0\n"
    );
    for (name, body) in [
        ("cargo", cargo.as_str()),
        ("cargo-fuzz", "#!/bin/sh\nexit 0\n"),
    ] {
        let p = dir.join(name);
        std::fs::write(&p, body).expect("write fake tool");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
}

fn fuzz_smoke(bin: &Path, target: &str) -> std::process::Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/fuzz-smoke.sh");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new("bash")
        .arg(&script)
        .args(["1", target])
        .env("PATH", path)
        .output()
        .expect("run scripts/fuzz-smoke.sh")
}

#[test]
fn fuzz_smoke_exits_non_zero_when_the_fuzzer_finds_a_crash() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let target = format!("sagw-tests-fake-{}", std::process::id());
    let logs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/target/fuzz-smoke");

    fake_toolchain(
        tmp.path(),
        "echo '==1== ERROR: libFuzzer: deadly signal'; echo 'SUMMARY: libFuzzer: deadly signal'; exit 77",
    );
    let crashed = fuzz_smoke(tmp.path(), &target);
    let text = String::from_utf8_lossy(&crashed.stdout);
    assert_eq!(crashed.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!("FAILED: {target}: crashed while fuzzing")),
        "{text}"
    );
    assert!(text.contains("SUMMARY: libFuzzer: deadly signal"), "{text}");

    fake_toolchain(tmp.path(), "echo 'Done 1000 runs in 1 second(s)'; exit 0");
    let clean = fuzz_smoke(tmp.path(), &target);
    let text = String::from_utf8_lossy(&clean.stdout);
    assert!(clean.status.success(), "{text}");
    assert!(text.contains("without a crash"), "{text}");

    let _ = std::fs::remove_file(logs.join(format!("{target}.log")));
}

/// `scripts/test.sh --slow` runs the fuzz smoke as a plain command under `set -e`: nothing may
/// swallow its exit code.
#[test]
fn test_sh_lets_a_failed_fuzz_smoke_fail_the_run() {
    let test_sh =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/test.sh"))
            .expect("scripts/test.sh");
    assert!(test_sh.contains("set -euo pipefail"));
    let line = test_sh
        .lines()
        .find(|l| l.contains("scripts/fuzz-smoke.sh"))
        .expect("test.sh runs the fuzz smoke");
    assert_eq!(line.trim(), "scripts/fuzz-smoke.sh 30", "{line}");
}
