//! The deployment operators run: the gateway in `mode = "edge"` in front of a real registrar
//! (Kamailio, `tests/kamailio/registrar.cfg`, its only next hop), and a real Lync-style client,
//! pidgin-sipe in finch, signing in through it over TLS with NTLM. Kamailio's 200 to sipe's
//! REGISTER reaches sipe signed by the gateway and sipe validates it; bob (the project's client)
//! sends sipe a MESSAGE through the gateway and Kamailio (lookup, then back over the gateway's
//! Path and sipe's connection): sipe validates the gateway's signature on it and shows it, and its
//! 200 comes back to bob, signed for his SA, and verifies.
//!
//! Without Kamailio or finch installed the test skips loudly (with CI=true it fails).

mod auth_support;
mod kamailio_support;
mod sipe_support;

use std::time::Duration;

use auth_support::{Client, DOMAIN, GwOptions, config, gateway, loopback};
use sagw_client::{AuthScheme, SignatureCheck};
use sipe_support::{Finch, finch};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pidgin_sipe_behind_an_edge_with_kamailio_takes_a_signed_message() {
    // Both checks first: under CI=true either one missing fails here.
    let Some(bin) = finch() else {
        return;
    };
    let Some(kam) = kamailio_support::kamailio() else {
        return;
    };
    let hops = [kam.next_hop()];
    let gw = gateway(GwOptions {
        mode: "edge",
        next_hops: &hops,
        ..GwOptions::default()
    })
    .await;
    let cert = gw.cert.as_ref().expect("certificate").cert_path.clone();

    // alice is pidgin-sipe: her REGISTER goes to Kamailio, whose 200 the gateway signs for her SA.
    let alice = Finch::start(&bin, "alice", "alice-pw", loopback(gw.tls), &cert);
    alice
        .wait_log(
            &[
                "sip_transport_input: signature of incoming message validated",
                "process_register_response: got 200",
            ],
            Duration::from_secs(20),
        )
        .await;

    let mut bob = Client::connect_tls(&gw, config("bob", "bob-pw", AuthScheme::Ntlm, 4)).await;
    let (r, seen) = bob.sign_in().await;
    let done = r.unwrap_or_else(|f| panic!("bob: {f}\n{}", bob.trace()));
    assert_eq!(done.status, 200);
    let ok = seen.last().expect("bob's 200");
    assert!(
        ok.header("Server")
            .is_some_and(|s| s.to_ascii_lowercase().contains("kamailio")),
        "bob's REGISTER was answered by Kamailio, not by the gateway:\n{}",
        String::from_utf8_lossy(&ok.to_bytes())
    );

    let text = "hello from bob through Kamailio, signed";
    let (r, seen) = bob
        .request(
            "MESSAGE",
            &format!("sip:alice@{DOMAIN}"),
            Some(("text/plain", text)),
        )
        .await;
    let done = r.unwrap_or_else(|f| panic!("bob -> alice: {f}\n{}", bob.trace()));
    assert_eq!(
        done.status,
        200,
        "{done:?}\n{}",
        seen.last()
            .map(|m| String::from_utf8_lossy(&m.to_bytes()).into_owned())
            .unwrap_or_default()
    );
    assert!(
        matches!(done.signature, SignatureCheck::Verified { .. }),
        "alice's 200 as the gateway signed it for bob: {done:?}"
    );
    let log = alice
        .showed_signed_message(&format!("sip:bob@{DOMAIN}"), text)
        .await;
    // Both went through Kamailio (its script logs every request it receives, prefixed with
    // `{method cseq call-id}`): sipe's REGISTER, by its Call-ID, and bob's MESSAGE, by his.
    let register_call_id = log
        .lines()
        .find_map(|l| {
            let (_, rest) = l.split_once("<transaction timeout><")?;
            let (id, what) = rest.split_once("><")?;
            what.contains("REGISTER>").then(|| id.to_owned())
        })
        .expect("sipe logged its REGISTER transaction");
    let message_call_id = seen
        .last()
        .and_then(|m| m.header("Call-ID"))
        .expect("Call-ID of bob's 200")
        .to_owned();
    let kam_log = std::fs::read_to_string(&kam.log).unwrap_or_default();
    for (call_id, line) in [
        (&register_call_id, format!("REGISTER sip:{DOMAIN} from")),
        (&message_call_id, format!("MESSAGE sip:alice@{DOMAIN} from")),
    ] {
        assert!(
            kam_log
                .lines()
                .any(|l| l.contains(&format!(" {call_id}}}")) && l.contains(&line)),
            "Kamailio received {line:?} with Call-ID {call_id}; its log:\n{}",
            kam.tail(30)
        );
    }
    drop(alice);
    gw.shutdown(Duration::from_secs(2)).await;
    drop(kam);
}
