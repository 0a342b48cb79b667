//! `sagw check-config` checks the files the gateway reads at start: the Kerberos keytab (readable,
//! holding sip/<fqdn> for the realm, through MIT GSS-API) and the `[state]` keys.
//!
//! The keytab is made with MIT's ktutil from a password (no KDC needed: the acceptor only needs
//! the key). Without ktutil (Debian: krb5-user, scripts/setup-debian.sh) the keytab test says so
//! and passes, except under CI=true, where that is a failure.

use std::path::Path;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_sagw");

fn check_config(dir: &Path, body: &str) -> Output {
    let cfg = dir.join("sagw.toml");
    std::fs::write(&cfg, body).expect("config");
    Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .arg("check-config")
        // No krb5.conf: the realm comes from auth.kerberos_realm.
        .env("KRB5_CONFIG", dir.join("no-krb5.conf"))
        .env_remove("KRB5_KTNAME")
        .env_remove("STATE_DIRECTORY")
        .output()
        .expect("run sagw check-config")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A keytab holding `principal`, or None when ktutil is missing.
fn keytab(dir: &Path, principal: &str) -> Option<std::path::PathBuf> {
    let path = dir.join("sagw.keytab");
    let script = format!(
        "addent -password -p {principal} -k 3 -e aes256-cts-hmac-sha1-96\nNot-a-real-pw-1\nwkt {}\nquit\n",
        path.display()
    );
    let mut child = match Command::new("ktutil")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            let why = format!("ktutil cannot run ({e}); Debian: krb5-user");
            assert!(
                !std::env::var("CI").is_ok_and(|v| v == "true"),
                "CI=true and {why}"
            );
            eprintln!("skipped: {why}");
            return None;
        }
    };
    std::io::Write::write_all(child.stdin.as_mut().expect("stdin"), script.as_bytes())
        .expect("ktutil script");
    assert!(child.wait().expect("ktutil").success());
    assert!(path.is_file(), "ktutil wrote no keytab");
    Some(path)
}

fn kerberos_config(dir: &Path, keytab: &Path, realm: &str, without: &str) -> String {
    format!(
        "[auth]\nschemes = [\"kerberos\", \"ntlm\"]\nfqdn = \"gw.example.com\"\n\
         kerberos_keytab = \"{}\"\nkerberos_realm = \"{realm}\"\nkerberos_without_keytab = \"{without}\"\n\
         credentials = \"{}\"\nnonce_key = \"{}\"\n[state]\nkey_file = \"{}\"\n",
        keytab.display(),
        dir.join("users").display(),
        dir.join("nonce.key").display(),
        dir.join("pool.key").display(),
    )
}

#[test]
fn check_config_checks_the_keytab_for_the_configured_realm() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let Some(kt) = keytab(tmp.path(), "sip/gw.example.com@EXAMPLE.COM") else {
        return;
    };

    let ok = check_config(
        tmp.path(),
        &kerberos_config(tmp.path(), &kt, "EXAMPLE.COM", "refuse"),
    );
    let out = text(&ok);
    assert!(ok.status.success(), "{out}");
    assert!(
        out.contains(&format!(
            "kerberos: the keytab ({}) holds sip/gw.example.com@EXAMPLE.COM",
            kt.display()
        )),
        "{out}"
    );
    assert!(out.contains("policy default: kerberos, ntlm"), "{out}");

    // Another realm: the keytab has no key for sip/gw.example.com@OTHER.COM. Under "refuse" the
    // policy offering Kerberos is the error, with MIT's reason; under "skip" a note says why.
    let other = check_config(
        tmp.path(),
        &kerberos_config(tmp.path(), &kt, "OTHER.COM", "refuse"),
    );
    let out = text(&other);
    assert_eq!(other.status.code(), Some(2), "{out}");
    assert!(
        out.contains("`auth.schemes`: offers kerberos, which the gateway cannot serve"),
        "{out}"
    );
    assert!(out.contains("sip/gw.example.com@OTHER.COM"), "{out}");
    let other = check_config(
        tmp.path(),
        &kerberos_config(tmp.path(), &kt, "OTHER.COM", "skip"),
    );
    let out = text(&other);
    assert!(other.status.success(), "{out}");
    assert!(
        out.contains("no usable key for sip/gw.example.com@OTHER.COM"),
        "{out}"
    );
    assert!(out.contains(&format!("klist -k {}", kt.display())), "{out}");

    // A keytab that is not there: refused, or a note under "skip".
    let missing = tmp.path().join("missing.keytab");
    let refused = check_config(
        tmp.path(),
        &kerberos_config(tmp.path(), &missing, "EXAMPLE.COM", "refuse"),
    );
    let out = text(&refused);
    assert_eq!(refused.status.code(), Some(2), "{out}");
    assert!(out.contains("which the gateway cannot serve"), "{out}");
    let skipped = check_config(
        tmp.path(),
        &kerberos_config(tmp.path(), &missing, "EXAMPLE.COM", "skip"),
    );
    let out = text(&skipped);
    assert!(skipped.status.success(), "{out}");
    assert!(
        out.contains("note: Kerberos is not offered (auth.kerberos_without_keytab = \"skip\")"),
        "{out}"
    );
    assert!(
        out.contains(&format!("keytab {} cannot be read", missing.display())),
        "{out}"
    );
    assert!(out.contains("policy default: ntlm"), "{out}");
}

#[test]
fn check_config_names_a_bad_realm_and_a_bad_state_key() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let kt = tmp.path().join("any.keytab");
    let bad_realm = check_config(
        tmp.path(),
        &kerberos_config(tmp.path(), &kt, "EXAMPLE COM", "skip"),
    );
    let out = text(&bad_realm);
    assert_eq!(bad_realm.status.code(), Some(2), "{out}");
    assert!(out.contains("`auth.kerberos_realm`"), "{out}");

    let key = tmp.path().join("pool.key");
    let body = format!(
        "[auth]\nenabled = false\n[state]\nkey_file = \"{}\"\nsnapshot = \"\"\n",
        key.display()
    );
    let fresh = check_config(tmp.path(), &body);
    let out = text(&fresh);
    assert!(fresh.status.success(), "{out}");
    assert!(out.contains("state: memory"), "{out}");
    assert!(out.contains("does not exist yet"), "{out}");
    assert!(!key.exists(), "check-config creates no key");

    std::fs::write(&key, b"too short").expect("key");
    let bad = check_config(tmp.path(), &body);
    let out = text(&bad);
    assert_eq!(bad.status.code(), Some(2), "{out}");
    assert!(out.contains("`state.key_file`"), "{out}");
}
