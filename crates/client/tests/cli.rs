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
