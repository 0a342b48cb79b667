//! Issue 15: the domain controller goes away while the gateway runs. Sign-ins that need the
//! domain get 503 with Retry-After (never a pass, never a final refusal), an SA established
//! before the outage keeps signing and verifying (signed traffic never asks the domain), and
//! once the DC is back sign-ins go through again. A DC of its own (this test stops it), with its
//! winbind pipe at the system path.

mod ad_support;
mod auth_support;

use std::time::{Duration, Instant};

use ad_support::{AdDc, AdDcOptions, Winbind};
use auth_support::{Client, GwOptions, config, gateway, http, metric, verified};
use sagw_client::transport::TransportKind;
use sagw_client::{AuthScheme, Failure};

fn domain_client(user: &str) -> sagw_client::EndpointConfig {
    let mut cfg = config(user, ad_support::PASSWORD, AuthScheme::Ntlm, 4);
    cfg.aor = format!("sip:{user}@{}", ad_support::DNS_DOMAIN);
    cfg.registrar = format!("sip:{}", ad_support::DNS_DOMAIN);
    cfg.domain = ad_support::NETBIOS_DOMAIN.into();
    cfg
}

async fn signed_options(c: &mut Client) {
    let (r, _) = c
        .request("OPTIONS", &format!("sip:{}", ad_support::DNS_DOMAIN), None)
        .await;
    let done = r.unwrap_or_else(|f| panic!("OPTIONS on the SA: {f}\n{}", c.trace()));
    assert!(verified(&done.signature), "{done:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dc_outage_gives_503_and_sign_ins_resume_when_it_is_back() {
    let Some(dc) = AdDc::start(AdDcOptions {
        winbind: Winbind::SystemSocket,
    }) else {
        return;
    };
    let gw = gateway(GwOptions {
        schemes: &["ntlm"],
        sip_domain: ad_support::DNS_DOMAIN,
        users: &[],
        auth_extra: "[auth.domain]\nntlm = \"winbind\"\nretry_after_secs = 4\n",
        ..GwOptions::default()
    })
    .await;
    let mut alice =
        Client::connect(&gw, TransportKind::Tcp, domain_client(ad_support::ALICE)).await;
    let (r, _) = alice.sign_in().await;
    r.unwrap_or_else(|f| panic!("alice before the outage: {f}\n{}", alice.trace()));
    signed_options(&mut alice).await;

    dc.stop();
    // A sign-in during the outage: 503 with the configured Retry-After, over TCP and UDP.
    for kind in [TransportKind::Tcp, TransportKind::Udp] {
        let mut erin = Client::connect(&gw, kind, domain_client(ad_support::ERIN)).await;
        let (r, seen) = erin.sign_in().await;
        match r {
            Err(Failure::Status { status: 503, .. }) => {}
            other => panic!("{kind:?} during the outage: 503 expected, got {other:?}"),
        }
        let last = seen.last().expect("the 503");
        assert_eq!(last.header("Retry-After"), Some("4"), "{last:?}");
        assert!(
            last.header("Authentication-Info").is_none(),
            "nothing verified, nothing signed"
        );
    }
    // The established SA does not need the domain.
    for _ in 0..3 {
        signed_options(&mut alice).await;
    }

    dc.start_again().expect("the DC starts again");
    // winbindd may need a moment after the DC answers: 503s until then, then a sign-in.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut erin =
            Client::connect(&gw, TransportKind::Tcp, domain_client(ad_support::ERIN)).await;
        let (r, _) = erin.sign_in().await;
        match r {
            Ok(done) => {
                assert!(verified(&done.signature));
                signed_options(&mut erin).await;
                break;
            }
            Err(Failure::Status { status: 503, .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(f) => panic!("after the DC came back: {f}\n{}", erin.trace()),
        }
    }
    signed_options(&mut alice).await;
    let (_, body) = http(&gw, "GET", "/metrics").await;
    assert!(
        metric(
            &body,
            "sagw_auth_handshake_failures_total{scheme=\"ntlm\",reason=\"domain_unavailable\"}"
        ) >= 2,
        "{body}"
    );
}
