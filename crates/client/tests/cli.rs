//! The `sagw-client` binary and the load runner against the in-test server.

mod support;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use sagw_auth::SecurityCore;
use sagw_client::AuthScheme;
use sagw_client::load::{LoadConfig, Population, run};
use sagw_client::session::Timers;
use sagw_client::transport::TransportKind;
use support::{Quirks, Server};

fn server() -> Arc<Server> {
    Server::new(
        SecurityCore::new(support::ntlm_digest_config(), Arc::new(support::store())),
        Quirks::default(),
    )
}

fn population(schemes: Vec<AuthScheme>) -> Population {
    Population {
        user_pattern: "load{n}".into(),
        password_pattern: Some("load{n}-pw".into()),
        users: 20,
        first_user: 0,
        domain: "EXAMPLE".into(),
        sip_domain: support::SIP_DOMAIN.into(),
        schemes,
        version: 4,
        ccaches: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_counts_sign_ins_messages_and_failures() {
    let server = server();
    let addr = support::serve_tcp(server.clone(), None).await;
    let mut cfg = LoadConfig {
        server: addr,
        transport: TransportKind::Tcp,
        tls: None,
        population: population(vec![AuthScheme::Ntlm]),
        endpoints: 30,
        concurrency: 4,
        messages: 3,
        message_target: "sip:echo@example.test".into(),
        duration: Duration::from_secs(20),
        rate: None,
        message_rate: None,
        connection_per_endpoint: false,
        timers: Timers::default(),
        progress: false,
    };
    let s = run(cfg.clone()).await.expect("run");
    assert_eq!(s.sign_ins.ok, 30, "{}", s.render());
    assert_eq!(s.messages.ok, 90, "{}", s.render());
    assert_eq!(s.sign_ins.failed, 0);
    assert!(s.sign_ins.latency.p50_ms > 0.0);
    assert_eq!(s.by_scheme.get("NTLM"), Some(&30));
    let snap = server.core.counters().snapshot();
    assert_eq!(
        snap.scheme(sagw_auth::Scheme::Ntlm).handshakes_completed,
        30
    );

    // Users 20.. do not exist: those sign-ins fail as "rejected", the others succeed.
    cfg.population.users = 0;
    cfg.population.first_user = 10;
    cfg.endpoints = 20;
    cfg.messages = 0;
    cfg.population.schemes = vec![AuthScheme::Digest];
    let s = run(cfg).await.expect("run");
    assert_eq!(s.sign_ins.ok, 10, "{}", s.render());
    assert_eq!(
        s.sign_ins.failures.get("rejected"),
        Some(&10),
        "{}",
        s.render()
    );
    let json = serde_json::to_value(&s).expect("json");
    assert_eq!(json["sign_ins"]["ok"], 10);
}

/// Paced above what a slow edge serves: each sign-in's latency runs from its scheduled start, so the
/// queue that builds behind the slow answers is in the percentiles (coordinated omission).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_load_measures_latency_from_the_scheduled_start() {
    let delay = Duration::from_millis(100);
    let slow = Server::new(
        SecurityCore::new(support::ntlm_digest_config(), Arc::new(support::store())),
        Quirks {
            delay,
            ..Quirks::default()
        },
    );
    let addr = support::serve_tcp(slow, None).await;
    let cfg = LoadConfig {
        server: addr,
        transport: TransportKind::Tcp,
        tls: None,
        population: population(vec![AuthScheme::Ntlm]),
        endpoints: 6,
        concurrency: 1,
        messages: 0,
        message_target: "sip:echo@example.test".into(),
        duration: Duration::from_secs(20),
        // One every 50 ms offered; one sign-in (two round trips) takes at least 200 ms.
        rate: Some(20.0),
        message_rate: None,
        connection_per_endpoint: false,
        timers: Timers::default(),
        progress: false,
    };
    let s = run(cfg).await.expect("run");
    assert_eq!(s.sign_ins.ok, 6, "{}", s.render());
    // Sign-in k was due at 50k ms and started at 200k ms at the earliest: the last one's latency
    // is at least 200 * 5 + 200 - 250 = 950 ms, five times what the edge took to answer it.
    // Measured from its actual start it would be about 200 ms.
    assert!(s.sign_ins.latency.max_ms >= 900.0, "{}", s.render());
    assert!(s.sign_ins.latency.p50_ms >= 400.0, "{}", s.render());
    assert!(s.render().contains("from their scheduled start"));
}

/// `sagw-client load` exits 1 when any operation failed, not only when all did.
#[test]
fn load_exits_non_zero_when_any_sign_in_failed() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let addr = rt.block_on(support::serve_tcp(server(), None));
    let bin = env!("CARGO_BIN_EXE_sagw-client");
    let load = |first_user: &str| {
        Command::new(bin)
            .args(["load", "--server", &addr.to_string(), "--transport", "tcp"])
            .args(["--sip-domain", support::SIP_DOMAIN, "--domain", "EXAMPLE"])
            .args(["--scheme", "ntlm", "--endpoints", "4", "--concurrency", "2"])
            .args(["--first-user", first_user, "--no-progress", "--json"])
            .env_remove("SAGW_LOAD_PASSWORD_PATTERN")
            .output()
            .expect("run sagw-client load")
    };
    let all_good = load("0");
    let v: serde_json::Value = serde_json::from_slice(&all_good.stdout).expect("json summary");
    assert_eq!(v["sign_ins"]["ok"], 4);
    assert_eq!(all_good.status.code(), Some(0));

    // Users 18 and 19 exist, 20 and 21 do not: two of four sign-ins fail.
    let some_bad = load("18");
    let v: serde_json::Value = serde_json::from_slice(&some_bad.stdout).expect("json summary");
    assert_eq!(v["sign_ins"]["ok"], 2);
    assert_eq!(v["sign_ins"]["failed"], 2);
    assert_eq!(some_bad.status.code(), Some(1));
}

#[test]
fn generate_writes_man_pages_and_completions() {
    let bin = env!("CARGO_BIN_EXE_sagw-client");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(bin)
        .args(["generate", "man"])
        .arg(dir.path())
        .output()
        .expect("generate man");
    assert!(out.status.success());
    for page in ["sagw-client.1", "sagw-client-probe.1", "sagw-client-load.1"] {
        assert!(dir.path().join(page).is_file(), "no {page}");
    }
    let main = std::fs::read_to_string(dir.path().join("sagw-client.1")).expect("page");
    assert!(main.contains("probe") && main.contains("load"), "{main}");
    let out = Command::new(bin)
        .args(["generate", "completions", "zsh"])
        .output()
        .expect("completions");
    let script = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && script.contains("#compdef sagw-client"));
    assert!(
        script.contains("probe") && script.contains("--rate"),
        "{script}"
    );
}

#[test]
fn probe_reports_and_exit_codes() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let addr = rt.block_on(support::serve_udp(server()));
    let bin = env!("CARGO_BIN_EXE_sagw-client");
    let run = |pw: &str, extra: &[&str]| {
        Command::new(bin)
            .args(["probe", "--server", &addr.to_string(), "--transport", "udp"])
            .args(["--sip-domain", support::SIP_DOMAIN, "--domain", "EXAMPLE"])
            .args([
                "--user",
                "alice",
                "--password-env",
                "PROBE_PW",
                "--timeout",
                "5",
            ])
            .args(extra)
            .env("PROBE_PW", pw)
            .output()
            .expect("run sagw-client")
    };
    let ok = run(
        "alice-pw",
        &["--message", "sip:bob@example.test", "--options"],
    );
    let text = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{text}");
    for needle in [
        "offered:",
        "NTLM realm=SIP Communications Service",
        "Date:",
        "NTLM CHALLENGE: opaque=",
        "SA established: NTLM",
        "signature OK on 200 to REGISTER",
        "signature OK on 200 to MESSAGE",
        "signature OK on 200 to OPTIONS",
        "POLICY MET (epid 0123456789, User-Agent sagw-client/",
        "): 401 with NTLM, Digest; Digest ",
        "RESULT: OK",
    ] {
        assert!(text.contains(needle), "missing `{needle}` in:\n{text}");
    }
    assert!(
        !text.contains("alice-pw"),
        "the password must not be printed"
    );

    let bad = run("wrong", &["--json"]);
    assert_eq!(bad.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&bad.stdout).expect("json report");
    assert_eq!(v["ok"], false);
    assert_eq!(v["failure_label"], "rejected");
    assert_eq!(v["policy_met"]["status"], 401);
    assert_eq!(
        v["policy_met"]["schemes"],
        serde_json::json!(["NTLM", "Digest"])
    );

    // As a standard SIP client: no epid in From, its own User-Agent.
    let plain = run(
        "alice-pw",
        &[
            "--scheme",
            "digest",
            "--epid",
            "none",
            "--user-agent",
            "baresip v1.0.0",
        ],
    );
    let text = String::from_utf8_lossy(&plain.stdout);
    assert!(plain.status.success(), "{text}");
    assert!(
        text.contains("POLICY MET (no epid, User-Agent baresip v1.0.0): 401 with "),
        "{text}"
    );

    let digest = run("alice-pw", &["--scheme", "digest"]);
    let text = String::from_utf8_lossy(&digest.stdout);
    assert!(digest.status.success(), "{text}");
    assert!(text.contains("using Digest"), "{text}");
}

/// A domain account signs in under the SIP address the directory (here the credentials store)
/// gives it, not sip:<account>@<domain>: `--sip-uri` registers that address.
#[test]
fn probe_registers_the_sign_in_address_given() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut store = support::store();
    let address = format!("sip:alice.sip@{}", support::SIP_DOMAIN);
    store.set_sip_identity("alice", &address).expect("identity");
    let server = Server::new(
        SecurityCore::new(support::ntlm_digest_config(), Arc::new(store)),
        Quirks::default(),
    );
    let addr = rt.block_on(support::serve_udp(server));
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_sagw-client"))
            .args(["probe", "--server", &addr.to_string(), "--transport", "udp"])
            .args(["--sip-domain", support::SIP_DOMAIN, "--domain", "EXAMPLE"])
            .args(["--scheme", "ntlm", "--user", "alice", "--timeout", "5"])
            .args(["--password-env", "PROBE_PW"])
            .args(extra)
            .env("PROBE_PW", "alice-pw")
            .output()
            .expect("run sagw-client")
    };
    let as_account = run(&[]);
    let text = String::from_utf8_lossy(&as_account.stdout);
    assert_eq!(as_account.status.code(), Some(1), "{text}");
    assert!(
        text.contains("403"),
        "sip:alice@ is not alice's address:\n{text}"
    );

    let as_address = run(&["--sip-uri", &address, "--options"]);
    let text = String::from_utf8_lossy(&as_address.stdout);
    assert!(as_address.status.success(), "{text}");
    assert!(text.contains("signature OK on 200 to OPTIONS"), "{text}");

    let typo = run(&["--sip-uri", "alice.sip@example.test"]);
    assert_eq!(
        typo.status.code(),
        Some(2),
        "clap's usage error for a bad --sip-uri"
    );
}
