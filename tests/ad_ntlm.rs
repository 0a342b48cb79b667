//! Issue 15: NTLM verified by the domain. A real Samba AD DC (tests/ad_support, its winbind pipe
//! at the system path where libwbclient finds it) verifies the NTLMv2 responses the project's
//! client (`sagw-client`) sends to an in-process gateway with `[auth.domain] ntlm = "winbind"`
//! and an empty credentials file: sign-ins over TCP and UDP with signed traffic after them, and
//! the domain's refusals (wrong password, disabled, expired, must change, password expired,
//! unknown, machine account, locked out) as 401s with their own reasons.

mod ad_support;
mod auth_support;

use std::time::{Duration, Instant};

use ad_support::{AdDc, Winbind};
use auth_support::{Client, GwOptions, config, gateway, http, metric, verified};
use sagw_client::transport::TransportKind;
use sagw_client::{AuthScheme, Failure};

fn dc() -> Option<&'static AdDc> {
    ad_support::shared(Winbind::SystemSocket)
}

async fn domain_gateway(
    file_users: &'static [(&'static str, &'static str)],
) -> sagw_gateway::Running {
    gateway(GwOptions {
        schemes: &["ntlm"],
        sip_domain: ad_support::DNS_DOMAIN,
        users: file_users,
        auth_extra: "[auth.domain]\nntlm = \"winbind\"\nworkers = 2\n",
        ..GwOptions::default()
    })
    .await
}

/// A client of the domain: `user@example.test`, NTLM domain `EXAMPLE`.
fn domain_client(user: &str, password: &str) -> sagw_client::EndpointConfig {
    let mut cfg = config(user, password, AuthScheme::Ntlm, 4);
    cfg.aor = format!("sip:{}@{}", user.to_lowercase(), ad_support::DNS_DOMAIN);
    cfg.registrar = format!("sip:{}", ad_support::DNS_DOMAIN);
    cfg.domain = ad_support::NETBIOS_DOMAIN.into();
    cfg
}

/// Signs `user` in over `kind`; the 200 and an OPTIONS after it must be signed and verify.
/// Returns how long the sign-in took.
async fn sign_in_ok(gw: &sagw_gateway::Running, kind: TransportKind, user: &str) -> Duration {
    let mut c = Client::connect(gw, kind, domain_client(user, ad_support::PASSWORD)).await;
    let t = Instant::now();
    let (r, _) = c.sign_in().await;
    let took = t.elapsed();
    let done = r.unwrap_or_else(|f| panic!("{user} over {kind:?}: {f}\n{}", c.trace()));
    assert_eq!(done.status, 200);
    assert!(verified(&done.signature), "the 200's signature: {done:?}");
    let (r, _) = c
        .request("OPTIONS", &format!("sip:{}", ad_support::DNS_DOMAIN), None)
        .await;
    let done = r.unwrap_or_else(|f| panic!("OPTIONS: {f}\n{}", c.trace()));
    assert!(verified(&done.signature), "OPTIONS answer signed: {done:?}");
    took
}

/// Signs `user` in with `password` and expects a fresh challenge (401).
async fn refused(gw: &sagw_gateway::Running, user: &str, password: &str) {
    let mut c = Client::connect(gw, TransportKind::Tcp, domain_client(user, password)).await;
    let (r, _) = c.sign_in().await;
    match r {
        Err(Failure::Rejected { status: 401, .. }) => {}
        other => panic!("{user}: a 401 expected, got {other:?}\n{}", c.trace()),
    }
}

fn failures(body: &str, reason: &str) -> u64 {
    metric(
        body,
        &format!("sagw_auth_handshake_failures_total{{scheme=\"ntlm\",reason=\"{reason}\"}}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domain_users_sign_in_over_tcp_and_udp() {
    let Some(_dc) = dc() else {
        return;
    };
    // Only frank is in the credentials file (with a password the domain does not know): he is
    // verified from the file, everybody else by the domain.
    let gw = domain_gateway(&[("frank", "file-only-pw")]).await;
    let mut domain_times = Vec::new();
    for kind in [TransportKind::Tcp, TransportKind::Udp] {
        domain_times.push(sign_in_ok(&gw, kind, ad_support::ALICE).await);
    }
    domain_times.push(sign_in_ok(&gw, TransportKind::Tcp, ad_support::ERIN).await);
    // The file comes first: frank's file password works, the domain's does not.
    let mut frank = Client::connect(
        &gw,
        TransportKind::Tcp,
        domain_client(ad_support::FRANK, "file-only-pw"),
    )
    .await;
    let t = Instant::now();
    let (r, _) = frank.sign_in().await;
    let file_time = t.elapsed();
    r.unwrap_or_else(|f| panic!("frank from the file: {f}\n{}", frank.trace()));
    refused(&gw, ad_support::FRANK, ad_support::PASSWORD).await;
    let (_, body) = http(&gw, "GET", "/metrics").await;
    assert_eq!(
        metric(&body, "sagw_domain_ntlm_jobs_total{outcome=\"done\"}"),
        3,
        "three domain sign-ins, none for the file's user: {body}"
    );
    assert_eq!(failures(&body, "wrong_password"), 1);
    println!(
        "sign-in (REGISTER, two round trips) through winbind: {domain_times:?}; from the file: {file_time:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_domains_refusals_keep_their_reasons() {
    let Some(_dc) = dc() else {
        return;
    };
    let gw = domain_gateway(&[]).await;
    refused(&gw, ad_support::ALICE, "Wrong-passw0rd").await;
    refused(&gw, ad_support::BOB, ad_support::PASSWORD).await;
    refused(&gw, ad_support::CAROL, ad_support::PASSWORD).await;
    refused(&gw, ad_support::DAVE, ad_support::PASSWORD).await;
    refused(&gw, ad_support::GINA, ad_support::PASSWORD).await;
    refused(&gw, "nobody-here", ad_support::PASSWORD).await;
    // The DC's own computer account: never a SIP user, refused before winbind is asked.
    refused(&gw, "DC1$", ad_support::PASSWORD).await;
    let (_, body) = http(&gw, "GET", "/metrics").await;
    for (reason, n) in [
        ("wrong_password", 1),
        ("account_disabled", 1),
        ("password_must_change", 1),
        ("account_expired", 1),
        ("password_expired", 1),
        ("unknown_user", 1),
        ("domain_refused", 1),
    ] {
        assert_eq!(failures(&body, reason), n, "{reason}\n{body}");
    }
    assert_eq!(
        metric(
            &body,
            "sagw_auth_handshakes_total{scheme=\"ntlm\",outcome=\"completed\"}"
        ),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passwords_lock_a_domain_account_out() {
    let Some(_dc) = dc() else {
        return;
    };
    let gw = domain_gateway(&[]).await;
    // The domain's lockout policy counts the gateway's failed logons like any other: anyone who
    // knows an account name can lock it out (docs/security.md B14).
    for _ in 0..ad_support::LOCKOUT_THRESHOLD {
        refused(&gw, ad_support::LOCKOUT_USER, "Wrong-passw0rd").await;
    }
    refused(&gw, ad_support::LOCKOUT_USER, ad_support::PASSWORD).await;
    let (_, body) = http(&gw, "GET", "/metrics").await;
    assert_eq!(
        failures(&body, "wrong_password"),
        u64::from(ad_support::LOCKOUT_THRESHOLD)
    );
    assert_eq!(failures(&body, "account_locked_out"), 1, "{body}");
}
