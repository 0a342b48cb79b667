//! Issue 12, points 1, 3 and the identity items of 8: a signed-in user acts only as themselves,
//! and the gateway signs only with the SA a message was verified with. The gateway in-process on
//! loopback sockets; the clients are `sagw-client` (an implementation of the client side
//! independent of the gateway's code path), driven as an attacker would drive them.

mod auth_support;
#[path = "../crates/kerberos/tests/support/mod.rs"]
mod kdc;

use std::time::Duration;

use auth_support::{Client, DOMAIN, GwOptions, WAIT, config, gateway, http, unique, verified};
use sagw_client::sa::LegParams;
use sagw_client::session::RngSend;
use sagw_client::transport::{Connection, TransportKind};
use sagw_client::{AuthScheme, EndpointConfig};
use sagw_gateway::Running;
use sagw_sip::Message;

fn text(m: &Message) -> String {
    String::from_utf8_lossy(&m.to_bytes()).into_owned()
}

/// One row of `GET /admin/sas`.
#[derive(Debug, Clone)]
struct SaRow {
    epid: String,
    expiry: u64,
}

async fn sas(gw: &Running) -> Vec<SaRow> {
    let (status, body) = http(gw, "GET", "/admin/sas").await;
    assert!(status.contains("200"), "{status}");
    body.lines()
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            SaRow {
                epid: f[3].to_owned(),
                expiry: f[5].parse().expect("expiry"),
            }
        })
        .collect()
}

async fn sa_of(gw: &Running, c: &Client) -> Option<SaRow> {
    let epid = c.epid();
    sas(gw).await.into_iter().find(|r| r.epid == epid)
}

async fn signed_in_with(gw: &Running, kind: TransportKind, cfg: EndpointConfig) -> Client {
    let who = cfg.aor.clone();
    let mut c = Client::connect(gw, kind, cfg).await;
    let (r, _) = c.sign_in().await;
    let done = r.unwrap_or_else(|f| panic!("{who}: sign-in failed: {f}\n{}", c.trace()));
    assert_eq!(done.status, 200);
    c
}

async fn signed_in(gw: &Running, user: &str, scheme: AuthScheme) -> Client {
    signed_in_with(
        gw,
        TransportKind::Tcp,
        config(user, &format!("{user}-pw"), scheme, 4),
    )
    .await
}

/// Re-signs `m` after an edit (SA schemes; Digest credentials do not cover the headers).
fn resign(c: &mut Client, m: &mut Message) {
    if let Some(sa) = c.ep.sa_mut() {
        sa.sign(m, LegParams::default(), c.rng.as_rng())
            .expect("signed");
    }
}

/// Point 3: a refusal is signed only with an SA the request itself was verified against, and
/// nothing unauthenticated moves an SA's idle deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_signed_only_with_the_sa_that_verified_the_request() {
    let gw = gateway(GwOptions::default()).await;
    let bob = signed_in(&gw, "bob", AuthScheme::Ntlm).await;
    let mut alice = signed_in(&gw, "alice", AuthScheme::Ntlm).await;
    let before = sa_of(&gw, &bob).await.expect("bob's SA");
    // Deadlines are whole seconds: let one pass so that a refresh would show.
    tokio::time::sleep(Duration::from_millis(1_100)).await;

    // An unauthenticated sender naming bob (his AOR and epid, both public) in requests the core
    // refuses before any verification: NTLM first legs from one address until the pending
    // handshakes of that address are at their limit (503). No answer may carry bob's signature
    // over a Call-ID and CSeq the sender chose.
    let mut raw = Connection::connect(
        auth_support::addr(&gw, TransportKind::Tcp),
        TransportKind::Tcp,
        None,
    )
    .await
    .expect("connect");
    let local = raw.local_addr();
    let mut statuses = Vec::new();
    for i in 0..40 {
        let n = unique();
        let t = format!(
            "REGISTER sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/TCP {local};branch=z9hG4bKor{n};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:bob@{DOMAIN}>;tag=o{n};epid={epid}\r\nTo: <sip:bob@{DOMAIN}>\r\n\
             Call-ID: chosen-by-mallory-{i}\r\nCSeq: 7{i} REGISTER\r\nContact: <sip:{local};transport=tcp>\r\n\
             Authorization: NTLM qop=\"auth\", realm=\"SIP Communications Service\", targetname=\"sagw.example.com\", gssapi-data=\"\", version=4\r\n\
             Content-Length: 0\r\n\r\n",
            epid = bob.epid(),
        );
        raw.send(&Message::parse(t.as_bytes()).expect("parse"))
            .await
            .expect("send");
        let r = tokio::time::timeout(WAIT, raw.recv())
            .await
            .expect("answered in time")
            .expect("a response");
        assert!(
            r.header("Authentication-Info").is_none()
                && r.header("Proxy-Authentication-Info").is_none(),
            "an unauthenticated request gets no signature of bob's SA:\n{}",
            text(&r)
        );
        statuses.push(r.status_code().unwrap_or(0));
    }
    assert!(
        statuses.iter().all(|s| matches!(s, 401 | 503)),
        "challenged, or refused at the pending limit: {statuses:?}"
    );
    let after = sa_of(&gw, &bob).await.expect("bob's SA");
    assert_eq!(
        after.expiry, before.expiry,
        "unauthenticated requests naming bob do not extend his SA's life"
    );

    // A request alice signed with her SA but whose From names bob: 403, signed with alice's SA
    // (the one that verified it), so her client can read the refusal.
    let mut m = alice
        .ep
        .request(
            "MESSAGE",
            &format!("sip:carol@{DOMAIN}"),
            None,
            alice.rng.as_rng(),
        )
        .expect("request");
    let from = m
        .header("From")
        .expect("From")
        .replace("sip:alice@", "sip:bob@");
    m.set_header("From", &from);
    resign(&mut alice, &mut m);
    let r = alice.send_raw(&m, WAIT).await.expect("an answer");
    assert_eq!(r.status_code(), Some(403), "{}", text(&r));
    let check = alice.verify(&r);
    assert!(
        verified(&check),
        "the 403 is signed with alice's SA: {check:?}\n{}",
        text(&r)
    );
}
