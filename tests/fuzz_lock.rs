//! The fuzz crate (`fuzz/`, outside the workspace: it needs cargo-fuzz's flags) has a Cargo.lock
//! of its own. It must pin every package it shares with the workspace to a version the
//! workspace's Cargo.lock ships: the harnesses then exercise the dependencies the gateway is built
//! with, and a fuzz run does not float to newer releases (rustls 0.23.48 deprecated the provider
//! path the gateway uses, which an unpinned fuzz build picked up).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Package name → the versions a Cargo.lock holds of it.
fn locked_versions(path: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for block in text.split("[[package]]").skip(1) {
        let field = |key: &str| {
            block.lines().find_map(|l| {
                l.strip_prefix(key)
                    .and_then(|rest| rest.trim().strip_prefix('='))
                    .map(|v| v.trim().trim_matches('"').to_owned())
            })
        };
        let (Some(name), Some(version)) = (field("name "), field("version ")) else {
            panic!("{}: a [[package]] without name or version", path.display());
        };
        out.entry(name).or_default().insert(version);
    }
    out
}

#[test]
fn the_fuzz_lock_pins_the_workspace_versions() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let workspace = locked_versions(&root.join("Cargo.lock"));
    let fuzz = locked_versions(&root.join("fuzz/Cargo.lock"));
    assert!(
        fuzz.contains_key("libfuzzer-sys") && fuzz.contains_key("sagw-gateway"),
        "fuzz/Cargo.lock is not the fuzz crate's lock"
    );
    let drifted: Vec<String> = fuzz
        .iter()
        .filter_map(|(name, versions)| {
            let shipped = workspace.get(name)?;
            let extra: Vec<&String> = versions.difference(shipped).collect();
            (!extra.is_empty()).then(|| format!("{name}: fuzz {extra:?}, workspace {shipped:?}"))
        })
        .collect();
    assert!(
        drifted.is_empty(),
        "fuzz/Cargo.lock has versions the workspace does not ship; seed it again from the \
         workspace's lock: `cp Cargo.lock fuzz/Cargo.lock && cargo metadata --format-version 1 \
         --manifest-path fuzz/Cargo.toml >/dev/null`\n{}",
        drifted.join("\n")
    );
}
