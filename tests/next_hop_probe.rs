//! Active next-hop probing against a real registrar: the gateway in edge mode in front of Kamailio
//! (Debian `kamailio`, `tests/kamailio/registrar.cfg`), probing it with OPTIONS every second. Kamailio
//! is killed: sign-ins fail fast (503 at once, not a 408 after Timer F) once the probes mark it
//! down; it is restarted on the same port: sign-ins succeed again within two probe intervals.
//!
//! Without Kamailio installed the test skips loudly (with CI=true it fails).

mod auth_support;
mod kamailio_support;

use std::time::Duration;

use auth_support::{GwOptions, config, connect, gateway_settings, http};
use sagw_client::transport::TransportKind;
use sagw_client::{AuthScheme, Failure};
use sagw_gateway::Running;
use sagw_gateway::lifecycle::HopView;
use tokio::time::Instant;

const PROBE: Duration = Duration::from_secs(1);

/// The next hop's state as the admin API sees it.
fn hop_up(gw: &Running) -> bool {
    let hops = gw.hops.hops();
    assert_eq!(hops.len(), 1, "{hops:?}");
    hops[0].up
}

async fn wait_for(gw: &Running, up: bool, limit: Duration) -> Duration {
    let start = Instant::now();
    while hop_up(gw) != up {
        assert!(
            start.elapsed() < limit,
            "the next hop is not {} after {limit:?}: {:?}",
            if up { "up" } else { "down" },
            gw.hops.hops()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registrar_killed_and_restarted_fails_fast_then_serves_within_two_probe_intervals() {
    let Some(mut kam) = kamailio_support::kamailio() else {
        return;
    };
    let hops = [kam.next_hop()];
    let (mut settings, _) = gateway_settings(GwOptions {
        mode: "edge",
        next_hops: &hops,
        ..GwOptions::default()
    });
    settings.hops.probe = sagw_proxy::ProbeConfig {
        interval: Some(PROBE),
        failures_down: 2,
    };
    let gw = sagw_gateway::start(settings).await.expect("gateway starts");
    let ntlm = |u: &str| config(u, &format!("{u}-pw"), AuthScheme::Ntlm, 4);

    let mut alice = connect(&gw, TransportKind::Tcp, ntlm("alice")).await;
    let (r, _) = alice.sign_in().await;
    assert_eq!(r.expect("signed in through Kamailio").status, 200);
    assert!(hop_up(&gw));

    // Kamailio dies. Two probes in a row go unanswered: down within about two intervals.
    kam.stop();
    wait_for(&gw, false, 4 * PROBE).await;
    let (_, metrics) = http(&gw, "GET", "/metrics").await;
    let series = format!("sagw_next_hop_up{{hop=\"udp:{}\"", kam.addr());
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with(&series) && l.ends_with(" 0")),
        "{series} ... 0 in:\n{metrics}"
    );
    // A sign-in now fails at once with 503 (and Retry-After), not after a 32 s timeout.
    let mut bob = connect(&gw, TransportKind::Tcp, ntlm("bob")).await;
    let start = Instant::now();
    let (r, seen) = bob.sign_in().await;
    let took = start.elapsed();
    match r {
        Err(Failure::Status { status: 503, .. }) => {}
        other => panic!("expected 503, got {other:?}: {seen:?}"),
    }
    let last = seen.last().expect("the 503");
    assert!(last.header("Retry-After").is_some(), "{last:?}");
    assert!(took < Duration::from_secs(2), "the 503 took {took:?}");

    // Kamailio is back (on the same port): the next probe finds it, within two intervals.
    kam.restart().expect("Kamailio restarts");
    let back = wait_for(&gw, true, 2 * PROBE + Duration::from_millis(500)).await;
    let mut bob = connect(&gw, TransportKind::Tcp, ntlm("bob")).await;
    let (r, seen) = bob.sign_in().await;
    assert_eq!(
        r.unwrap_or_else(|f| panic!("sign-in after the restart failed: {f}: {seen:?}"))
            .status,
        200
    );
    eprintln!("next hop up again {back:?} after Kamailio answered");
}
