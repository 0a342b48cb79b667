//! pidgin-sipe, a real Lync-style client, against the gateway on its embedded default
//! configuration (only ports and paths changed), over TLS as such clients connect: it signs in with
//! NTLM and validates the gateway's signature; a second client's MESSAGE reaches it signed, it
//! validates that signature and shows the message, and its signed 200 goes back and verifies.

mod auth_support;
mod sipe_support;

use std::time::Duration;

use auth_support::{Client, config, default_config, loopback};
use sagw_client::{AuthScheme, SignatureCheck};
use sipe_support::{Finch, finch};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pidgin_sipe_signs_in_over_tls_and_takes_a_signed_message() {
    let Some(bin) = finch() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let settings = sagw_gateway::Config::parse(&default_config(dir.path(), None))
        .expect("default parses")
        .validate()
        .expect("default valid");
    let auth = settings.auth.clone().expect("auth on by default");
    for (u, p) in [("alice", "alice-pw"), ("bob", "bob-pw")] {
        sagw_gateway::users::add(&auth, u, p, None).expect("user added");
    }
    let gw = sagw_gateway::start(settings).await.expect("gateway starts");
    let cert = gw.cert.as_ref().expect("certificate").cert_path.clone();

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
    let (r, _) = bob.sign_in().await;
    let done = r.unwrap_or_else(|f| panic!("bob: {f}\n{}", bob.trace()));
    assert_eq!(done.status, 200);
    let text = "hello from bob, signed";
    let (r, _) = bob
        .request(
            "MESSAGE",
            "sip:alice@example.com",
            Some(("text/plain", text)),
        )
        .await;
    let done = r.unwrap_or_else(|f| panic!("bob -> alice: {f}\n{}", bob.trace()));
    assert_eq!(done.status, 200, "{done:?}");
    assert!(
        matches!(done.signature, SignatureCheck::Verified { .. }),
        "alice's 200 as the gateway signed it for bob: {done:?}"
    );
    alice
        .showed_signed_message("sip:bob@example.com", text)
        .await;
    drop(alice);
    gw.shutdown(Duration::from_secs(2)).await;
}
