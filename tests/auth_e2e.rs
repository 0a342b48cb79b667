//! Issue 7's end-to-end proof: the gateway (in-process, real loopback sockets, `[auth]` on)
//! against `sagw-client`, an independent implementation of the client side of [MS-SIPAE] and
//! Digest. Sign-ins with NTLM (versions 4 and 3), Digest and Kerberos (real MIT KDC) over TCP and
//! UDP; signed MESSAGE and INVITE dialogs between two clients through the gateway; refusals that
//! must not disturb other clients; the admin SA list and revocation; the auth metrics.

mod auth_support;
#[path = "../crates/kerberos/tests/support/mod.rs"]
mod kdc;

use std::time::Duration;

use auth_support::{
    Client, DOMAIN, Dialog, GwOptions, config, gateway, http, param, unique, verified, via_param,
};
use sagw_client::sa::LegParams;
use sagw_client::session::RngSend;
use sagw_client::transport::{Connection, TransportKind};
use sagw_client::{AuthScheme, Failure, SignatureCheck};
use sagw_sip::Message;

/// The MS-SIPAE wire facts of a sign-in: every challenge is a 401 with WWW-Authenticate and Date,
/// the final 200 carries a complete Authentication-Info and an Expires, and the client verified it.
fn assert_sipae_sign_in(c: &mut Client, scheme: &str, seen: &[Message], version: u8) {
    let (last, challenges) = seen.split_last().expect("responses");
    assert!(!challenges.is_empty(), "challenged first");
    for ch in challenges {
        assert_eq!(ch.status_code(), Some(401), "REGISTER challenged with 401");
        assert!(ch.header("Date").is_some(), "challenge carries Date");
        let offers: Vec<&str> = ch.header_all("WWW-Authenticate").collect();
        assert!(
            offers.iter().any(|o| o.starts_with(scheme)),
            "{scheme} offered: {offers:?}"
        );
    }
    assert_eq!(last.status_code(), Some(200));
    let info = last
        .header_all("Authentication-Info")
        .find(|v| v.starts_with(scheme))
        .unwrap_or_else(|| panic!("{scheme} Authentication-Info on the 200"));
    for p in ["realm", "targetname", "opaque", "snum", "srand", "rspauth"] {
        assert!(param(info, p).is_some(), "{p} in {info}");
    }
    assert_eq!(
        param(info, "opaque").as_deref(),
        c.ep.registration().and_then(|r| r.opaque.as_deref()),
        "the SA's opaque"
    );
    assert!(last.header("Expires").is_some(), "Expires on the 200");
    let reg = c.ep.registration().expect("registered");
    assert_eq!(reg.version, version);
    let t = c.trace();
    assert!(t.contains("signature OK on 200 to REGISTER"), "{t}");
}

async fn signed_messages(c: &mut Client, n: usize) {
    for i in 0..n {
        let (r, _) = c
            .request(
                "MESSAGE",
                &format!("sip:carol@{DOMAIN}"),
                Some(("text/plain", &format!("hello {i}"))),
            )
            .await;
        let done = r.unwrap_or_else(|f| panic!("MESSAGE {i}: {f}\n{}", c.trace()));
        // carol is not registered: the gateway's own signed 480 (or 404) comes back to us, signed.
        assert!(done.status >= 200, "{done:?}");
        assert!(verified(&done.signature), "server signature: {done:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ntlm_versions_4_and_3_over_tcp_and_udp() {
    for version in [4u8, 3] {
        let gw = gateway(GwOptions {
            version,
            ..GwOptions::default()
        })
        .await;
        for kind in [TransportKind::Tcp, TransportKind::Udp] {
            let mut c = Client::connect(
                &gw,
                kind,
                config("alice", "alice-pw", AuthScheme::Ntlm, version),
            )
            .await;
            let (r, seen) = c.sign_in().await;
            let done = r.unwrap_or_else(|f| panic!("v{version} {kind:?}: {f}\n{}", c.trace()));
            assert_eq!(done.status, 200);
            assert!(verified(&done.signature), "{done:?}");
            assert_eq!(seen.len(), 3, "offer, CHALLENGE, 200");
            assert_sipae_sign_in(&mut c, "NTLM", &seen, version);
            signed_messages(&mut c, 2).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ntlm_and_digest_over_tls() {
    let gw = gateway(GwOptions::default()).await;
    for (user, scheme) in [("alice", AuthScheme::Ntlm), ("bob", AuthScheme::Digest)] {
        let mut c = Client::connect_tls(&gw, config(user, &format!("{user}-pw"), scheme, 4)).await;
        let (r, seen) = c.sign_in().await;
        let done = r.unwrap_or_else(|f| panic!("{scheme:?} over TLS: {f}\n{}", c.trace()));
        assert_eq!(done.status, 200);
        assert!(verified(&done.signature), "{done:?}");
        if scheme == AuthScheme::Ntlm {
            assert_sipae_sign_in(&mut c, "NTLM", &seen, 4);
        }
        signed_messages(&mut c, 1).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_over_udp_and_tcp() {
    let gw = gateway(GwOptions::default()).await;
    for kind in [TransportKind::Udp, TransportKind::Tcp] {
        let mut c =
            Client::connect(&gw, kind, config("bob", "bob-pw", AuthScheme::Digest, 4)).await;
        let (r, seen) = c.sign_in().await;
        let done = r.unwrap_or_else(|f| panic!("{kind:?}: {f}\n{}", c.trace()));
        assert_eq!(done.status, 200);
        let (last, challenges) = seen.split_last().expect("responses");
        assert_eq!(challenges.len(), 1);
        assert_eq!(challenges[0].status_code(), Some(401));
        assert!(challenges[0].header("Date").is_some());
        let www: Vec<&str> = challenges[0].header_all("WWW-Authenticate").collect();
        assert!(www.iter().any(|v| v.starts_with("Digest")), "{www:?}");
        let info = last
            .header("Authentication-Info")
            .expect("Authentication-Info on the 200");
        // RFC 3261 Authentication-Info has no scheme token.
        assert!(
            param(&format!("Digest {info}"), "rspauth").is_some(),
            "{info}"
        );
        assert!(last.header("Expires").is_some());
        assert!(verified(&done.signature), "rspauth checked: {done:?}");
        signed_messages(&mut c, 2).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kerberos_against_the_test_kdc() {
    let Some(k) = kdc::kdc(kdc::KdcOptions::default()) else {
        return;
    };
    let gw = gateway(GwOptions {
        schemes: &["kerberos", "ntlm"],
        fqdn: kdc::AES_FQDN,
        keytab: Some(k.aes_keytab.clone()),
        sip_domain: "example.test",
        ..GwOptions::default()
    })
    .await;
    let dir = sagw_client::kinit::CcacheDir::new().expect("ccache dir");
    let ccache = dir
        .kinit(
            &format!("{}@{}", kdc::ALICE, kdc::REALM),
            &sagw_client::Password::new(kdc::ALICE_PW),
        )
        .expect("kinit");
    for (kind, mutual) in [(TransportKind::Tcp, false), (TransportKind::Udp, true)] {
        let mut cfg = config("alice", "", AuthScheme::Kerberos, 4);
        cfg.aor = "sip:alice@example.test".into();
        cfg.registrar = "sip:example.test".into();
        cfg.password = None;
        cfg.ccache = Some(ccache.clone());
        cfg.mutual = mutual;
        let mut c = Client::connect(&gw, kind, cfg).await;
        let (r, seen) = c.sign_in().await;
        let done = r.unwrap_or_else(|f| panic!("{kind:?}: {f}\n{}", c.trace()));
        assert_eq!(done.status, 200);
        assert!(verified(&done.signature), "{done:?}");
        assert_sipae_sign_in(&mut c, "Kerberos", &seen, 4);
        let (r, _) = c.request("OPTIONS", "sip:example.test", None).await;
        let done = r.unwrap_or_else(|f| panic!("OPTIONS: {f}\n{}", c.trace()));
        assert!(verified(&done.signature), "{done:?}");
    }
}

async fn signed_in(gw: &sagw_gateway::Running, user: &str, scheme: AuthScheme) -> Client {
    let mut c = Client::connect(
        gw,
        TransportKind::Tcp,
        config(user, &format!("{user}-pw"), scheme, 4),
    )
    .await;
    let (r, _) = c.sign_in().await;
    r.unwrap_or_else(|f| panic!("{user}: {f}\n{}", c.trace()));
    c
}

/// A MESSAGE from `a` to bob, built and signed by `a`'s endpoint, not sent.
fn message_for_bob(a: &mut Client) -> Message {
    a.ep.request(
        "MESSAGE",
        &format!("sip:bob@{DOMAIN}"),
        Some(("text/plain".into(), b"hi bob".to_vec())),
        a.rng.as_rng(),
    )
    .expect("MESSAGE built and signed")
}

/// What a serving client received: each request, its signature check, whether it answered.
type Served = Vec<(Message, SignatureCheck, bool)>;

/// `c` answers (and verifies) up to `until` requests for 5 s in the background; it comes back
/// with what it received.
fn serving(mut c: Client, until: usize) -> tokio::task::JoinHandle<(Client, Served)> {
    tokio::spawn(async move {
        let got = c.serve(Duration::from_secs(5), until).await;
        (c, got)
    })
}

/// Bob, signed in over UDP, gets a MESSAGE and his 200 is lost: the gateway retransmits the
/// MESSAGE (Timer E), and bob, who keeps a replay window of the gateway's `snum`s as [MS-SIP]
/// 3.1.5.1 has clients do, must find the copy signed afresh. Before, the copy carried the first
/// signature again: bob dropped it as a replay, never answered, and alice got 408 for a message
/// bob had shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_retransmitted_to_a_udp_client_is_signed_again() {
    let gw = gateway(GwOptions::default()).await;
    let mut a = signed_in(&gw, "alice", AuthScheme::Ntlm).await;
    let mut b = Client::connect(
        &gw,
        TransportKind::Udp,
        config("bob", "bob-pw", AuthScheme::Ntlm, 4),
    )
    .await;
    let (r, _) = b.sign_in().await;
    r.unwrap_or_else(|f| panic!("bob: {f}\n{}", b.trace()));
    let bob = tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + auth_support::WAIT;
        let first = b.next_request(deadline).await.expect("the MESSAGE");
        let first_check = b.verify(&first);
        // Bob's 200 to the first copy is lost: he waits for the retransmission.
        let again = b.next_request(deadline).await.expect("a retransmission");
        let again_check = b.verify(&again);
        let branch = |m: &Message| via_param(m, "branch");
        assert_eq!(branch(&first), branch(&again), "the same transaction");
        if verified(&again_check) {
            let ok = b.response(&again, 200, "OK", "bob");
            b.conn.send(&ok).await.expect("answer");
        }
        (first_check, again_check)
    });
    let m = message_for_bob(&mut a);
    let (r, _) = a.drive(m).await;
    let (first, again) = bob.await.expect("bob");
    assert!(verified(&first), "{first:?}");
    assert!(
        verified(&again),
        "the retransmitted copy verifies for bob: {again:?}"
    );
    let done = r.unwrap_or_else(|f| panic!("MESSAGE: {f}\n{}", a.trace()));
    assert_eq!(done.status, 200);
}

/// A request whose To names another endpoint's epid (a caller's choice, or a request meant for
/// another device of the same user) is delivered to bob's endpoint signed with his SA; bob
/// answers from the To he was given, and his signed 200 must reach the caller. Before, the
/// epid was kept, bob's 200 named it, the gateway took it for another endpoint's answer and
/// dropped it, and the caller got 408 for a message bob had shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_naming_another_epid_in_to_is_answered_through_the_gateway() {
    let gw = gateway(GwOptions::default()).await;
    let mut a = signed_in(&gw, "alice", AuthScheme::Ntlm).await;
    let b = signed_in(&gw, "bob", AuthScheme::Ntlm).await;
    let bob_epid = b.epid();
    let b_task = serving(b, 1);
    let mut m = message_for_bob(&mut a);
    // The signature's buffer has To's URI and tag, not its epid: alice's signature still holds.
    let to = format!("{};epid=0badc0de", m.header("To").expect("To"));
    m.set_header("To", &to);
    let (r, _) = a.drive(m).await;
    let (_, got) = b_task.await.expect("bob");
    assert_eq!(got.len(), 1, "bob received the MESSAGE");
    let (msg, check, answered) = &got[0];
    assert!(verified(check), "{check:?}");
    assert!(*answered);
    let to = msg.to().expect("To");
    assert_eq!(
        to.param("epid"),
        Some(bob_epid.as_str()),
        "delivered naming the endpoint it went to"
    );
    let done = r.unwrap_or_else(|f| panic!("MESSAGE: {f}\n{}", a.trace()));
    assert_eq!(done.status, 200);
    assert!(verified(&done.signature), "{done:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_and_call_between_two_signed_in_clients() {
    let gw = gateway(GwOptions::default()).await;
    let mut a = signed_in(&gw, "alice", AuthScheme::Ntlm).await;
    let b = signed_in(&gw, "bob", AuthScheme::Ntlm).await;

    // MESSAGE A -> B: B verifies the gateway's signature and answers signed; A gets a signed 200.
    let b_task = serving(b, 1);
    let (r, _) = a
        .request(
            "MESSAGE",
            &format!("sip:bob@{DOMAIN}"),
            Some(("text/plain", "hi bob")),
        )
        .await;
    let done = r.unwrap_or_else(|f| panic!("MESSAGE: {f}\n{}", a.trace()));
    let (b, got) = b_task.await.expect("b");
    assert_eq!(got.len(), 1, "B received the MESSAGE");
    let (msg, check, answered) = &got[0];
    assert_eq!(msg.method(), Some("MESSAGE"));
    assert!(
        verified(check),
        "B verifies the gateway's signature: {check:?}"
    );
    assert!(*answered);
    assert!(
        msg.header("Authorization").is_none() && msg.header("Proxy-Authorization").is_none(),
        "A's credentials are not forwarded"
    );
    assert_eq!(
        msg.header("P-Asserted-Identity"),
        Some(format!("<sip:alice@{DOMAIN}>").as_str())
    );
    assert_eq!(done.status, 200);
    assert!(verified(&done.signature), "A verifies the 200: {done:?}");

    // INVITE / 200 / ACK / BYE.
    let b_task = serving(b, 3);
    let (r, seen) = a
        .request(
            "INVITE",
            &format!("sip:bob@{DOMAIN}"),
            Some(("application/sdp", "v=0\r\n")),
        )
        .await;
    let done = r.unwrap_or_else(|f| panic!("INVITE: {f}\n{}", a.trace()));
    assert_eq!(done.status, 200);
    assert!(verified(&done.signature), "A verifies the INVITE's 200");
    let ok = seen.last().expect("200").clone();
    let dialog = Dialog::caller(&ok);
    let ack = dialog.request(&mut a, "ACK", 1);
    // The same ACK unsigned first: an SA client signs everything, its ACKs too, and the edge
    // naming the INVITE it acknowledges (for Digest clients' ACKs) changes nothing for it. Were
    // it relayed, B would see two ACKs among its three messages.
    let mut unsigned = ack.clone();
    assert_eq!(
        unsigned.remove_headers(["Authorization", "Proxy-Authorization"]),
        1
    );
    a.conn.send(&unsigned).await.expect("unsigned ACK");
    a.conn.send(&ack).await.expect("ACK");
    let bye = dialog.request(&mut a, "BYE", 2);
    let bye_ok = a
        .send_raw(&bye, Duration::from_secs(3))
        .await
        .expect("BYE answered");
    assert_eq!(bye_ok.status_code(), Some(200));
    let check = a.ep.sa_mut().expect("SA").verify(&bye_ok);
    assert!(verified(&check), "A verifies the BYE's 200: {check:?}");
    let (_b, got) = b_task.await.expect("b");
    let methods: Vec<_> = got
        .iter()
        .map(|(m, _, _)| m.method().unwrap_or(""))
        .collect();
    assert_eq!(methods, ["INVITE", "ACK", "BYE"]);
    for (m, check, _) in &got {
        assert!(verified(check), "B verifies {:?}: {check:?}", m.method());
    }
}

fn is_challenge(m: &Option<Message>) -> bool {
    m.as_ref()
        .is_some_and(|m| matches!(m.status_code(), Some(401 | 407)))
}

fn credentials_header(m: &Message) -> &'static str {
    if m.header("Authorization").is_some() {
        "Authorization"
    } else {
        "Proxy-Authorization"
    }
}

/// A bystander keeps being served between refusals.
async fn still_serving(c: &mut Client) {
    let (r, _) = c.request("OPTIONS", &format!("sip:{DOMAIN}"), None).await;
    let done = r.unwrap_or_else(|f| panic!("bystander: {f}\n{}", c.trace()));
    // The embedded registrar has no user at the bare domain (404): what matters is that the
    // gateway answered, signed, on the bystander's SA.
    assert!(done.status >= 200, "{done:?}");
    assert!(verified(&done.signature), "{done:?}");
}

async fn sa_count(gw: &sagw_gateway::Running) -> usize {
    let (status, body) = http(gw, "GET", "/admin/sas").await;
    assert!(status.contains("200"), "{status}");
    let list: Vec<serde_json::Value> = serde_json::from_str(&body).expect("a JSON list");
    list.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_leave_other_clients_served() {
    let gw = gateway(GwOptions::default()).await;
    let mut by = signed_in(&gw, "carol", AuthScheme::Ntlm).await;
    let mut a = signed_in(&gw, "alice", AuthScheme::Ntlm).await;
    let sas = sa_count(&gw).await;
    assert_eq!(sas, 2);

    // Wrong password: challenged again, no SA.
    for scheme in [AuthScheme::Ntlm, AuthScheme::Digest] {
        let mut w =
            Client::connect(&gw, TransportKind::Tcp, config("bob", "wrong", scheme, 4)).await;
        let (r, seen) = w.sign_in().await;
        match r {
            Err(Failure::Rejected { status, .. }) => assert_eq!(status, 401),
            other => panic!("{scheme:?} wrong password: {other:?}"),
        }
        assert_eq!(seen.last().and_then(|m| m.status_code()), Some(401));
        assert_eq!(sa_count(&gw).await, sas, "no SA for a wrong password");
        still_serving(&mut by).await;
    }

    let target = format!("sip:carol@{DOMAIN}");
    // Tampered signature.
    let mut m =
        a.ep.request("OPTIONS", &target, None, a.rng.as_rng())
            .expect("request");
    let h = credentials_header(&m);
    let v = m.header(h).expect("credentials").to_owned();
    let resp = param(&v, "response").expect("response");
    let flipped: String = resp
        .chars()
        .enumerate()
        .map(|(i, ch)| {
            if i == 20 {
                if ch == '0' { '1' } else { '0' }
            } else {
                ch
            }
        })
        .collect();
    m.set_header(h, &v.replace(&resp, &flipped));
    assert!(
        is_challenge(&a.send_raw(&m, Duration::from_secs(2)).await),
        "tampered"
    );
    still_serving(&mut by).await;

    // Replayed cnum: a valid signed request, then the same one again as a new transaction.
    let mut m =
        a.ep.request("OPTIONS", &format!("sip:{DOMAIN}"), None, a.rng.as_rng())
            .expect("request");
    let first = a.send_raw(&m, Duration::from_secs(2)).await;
    assert!(
        first.as_ref().is_some_and(|r| r.status_code() == Some(200)),
        "original accepted (and answered by the registrar, for its own domain): {first:?}"
    );
    let via = m
        .header("Via")
        .expect("via")
        .replace("branch=z9hG4bK", "branch=z9hG4bKreplay");
    m.set_header("Via", &via);
    assert!(
        is_challenge(&a.send_raw(&m, Duration::from_secs(2)).await),
        "replayed cnum"
    );
    still_serving(&mut by).await;

    // Unsigned request after the SA.
    let mut m =
        a.ep.request("OPTIONS", &format!("sip:{DOMAIN}"), None, a.rng.as_rng())
            .expect("request");
    m.remove_header("Authorization");
    m.remove_header("Proxy-Authorization");
    assert!(
        is_challenge(&a.send_raw(&m, Duration::from_secs(2)).await),
        "unsigned"
    );
    still_serving(&mut by).await;

    // A From of another user, correctly signed with alice's SA: 403.
    let mut m =
        a.ep.request("MESSAGE", &target, None, a.rng.as_rng())
            .expect("request");
    let from = m
        .header("From")
        .expect("From")
        .replace("sip:alice@", "sip:bob@");
    m.set_header("From", &from);
    a.sign_again(&mut m);
    let r = a.send_raw(&m, Duration::from_secs(2)).await;
    assert_eq!(r.as_ref().and_then(|r| r.status_code()), Some(403), "{r:?}");
    still_serving(&mut by).await;

    // ACK and CANCEL without credentials are not challenged.
    let mut raw = Connection::connect(
        auth_support::addr(&gw, TransportKind::Udp),
        TransportKind::Udp,
        None,
    )
    .await
    .expect("udp");
    let local = raw.local_addr();
    for method in ["ACK", "CANCEL"] {
        let text = format!(
            "{method} sip:carol@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKnc{n};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:mallory@{DOMAIN}>;tag=m{n}\r\nTo: <sip:carol@{DOMAIN}>\r\n\
             Call-ID: nc-{n}\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n",
            n = unique()
        );
        raw.send(&Message::parse(text.as_bytes()).expect("parse"))
            .await
            .expect("send");
        let got = tokio::time::timeout(Duration::from_millis(600), raw.recv()).await;
        if let Ok(Ok(m)) = got {
            assert!(
                !matches!(m.status_code(), Some(401 | 407)),
                "{method} challenged: {m:?}"
            );
        }
    }
    let (_, metrics) = http(&gw, "GET", "/metrics").await;
    let discarded = metrics
        .lines()
        .find(|l| l.starts_with("sagw_auth_sa_events_total{event=\"discarded_ack_cancel\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<u64>().ok());
    assert_eq!(
        discarded,
        Some(2),
        "ACK and CANCEL dropped, not challenged:\n{metrics}"
    );
    still_serving(&mut by).await;
    still_serving(&mut a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_lists_and_revokes_sas_and_metrics_count() {
    let gw = gateway(GwOptions::default()).await;
    let mut a = signed_in(&gw, "alice", AuthScheme::Ntlm).await;
    let mut b = signed_in(&gw, "bob", AuthScheme::Ntlm).await;
    let opaque =
        a.ep.registration()
            .and_then(|r| r.opaque.clone())
            .expect("opaque");
    let (_, list) = http(&gw, "GET", "/admin/sas").await;
    let rows: Vec<serde_json::Value> = serde_json::from_str(&list).expect("a JSON list");
    let row = rows
        .iter()
        .find(|r| r["opaque"] == opaque.as_str())
        .unwrap_or_else(|| panic!("{opaque} listed:\n{list}"));
    assert_eq!(row["identity"], format!("sip:alice@{DOMAIN}"), "{row}");
    assert_eq!(row["epid"], a.ep.config().epid.as_str(), "{row}");
    assert_eq!(row["scheme"], "NTLM", "{row}");

    let (status, body) = http(&gw, "POST", &format!("/admin/sas/{opaque}/revoke")).await;
    assert!(status.contains("200"), "{status} {body}");
    let (status, _) = http(&gw, "POST", &format!("/admin/sas/{opaque}/revoke")).await;
    assert!(
        status.contains("404"),
        "a second revoke finds nothing: {status}"
    );
    let (_, list) = http(&gw, "GET", "/admin/sas").await;
    assert!(!list.contains(&opaque), "{list}");

    let (r, seen) = a.request("OPTIONS", &format!("sip:{DOMAIN}"), None).await;
    match r {
        Err(Failure::SaRejected { .. }) => {}
        other => panic!("revoked SA: {other:?}\n{}", a.trace()),
    }
    let ch = seen.last().expect("challenge");
    assert!(matches!(ch.status_code(), Some(401 | 407)));
    assert!(
        ch.header_all("WWW-Authenticate")
            .chain(ch.header_all("Proxy-Authenticate"))
            .any(|v| v.starts_with("NTLM")),
        "a fresh NTLM challenge"
    );
    still_serving(&mut b).await;
    // The client can sign in again.
    let (r, _) = a.sign_in().await;
    r.unwrap_or_else(|f| panic!("sign in again: {f}"));

    let (_, metrics) = http(&gw, "GET", "/metrics").await;
    let value = |prefix: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{prefix} in\n{metrics}"))
    };
    assert_eq!(value("sagw_auth_sa_events_total{event=\"revoked\"}"), 1.0);
    assert_eq!(value("sagw_auth_security_associations "), 2.0);
    assert!(
        value("sagw_auth_signatures_total{scheme=\"ntlm\",direction=\"signed\"}") >= 3.0,
        "{metrics}"
    );
    assert!(value("sagw_auth_signatures_total{scheme=\"ntlm\",direction=\"verified\"}") >= 1.0);
}

/// Credentials meant for this gateway never reach the servers behind it, even when they do not
/// parse: a signed request that carries, before its own valid credentials, an NTLM header of our
/// realm with a duplicate parameter and a Digest header of our realm ending in a comma is
/// authenticated by the valid one, and the forwarded request carries no credentials header at all
/// (a next hop's more lenient parser would otherwise read someone's captured credentials for the
/// gateway's realm beside the identity the gateway asserts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_of_ours_that_do_not_parse_are_not_forwarded() {
    let gw = gateway(GwOptions::default()).await;
    let mut a = signed_in(&gw, "alice", AuthScheme::Ntlm).await;
    let b = signed_in(&gw, "bob", AuthScheme::Ntlm).await;
    let b_task = serving(b, 1);
    let mut msg = message_for_bob(&mut a);
    let at = (0..msg.header_count())
        .find(|&i| {
            msg.header_at(i).is_some_and(|h| {
                h.name.eq_ignore_ascii_case("Authorization")
                    || h.name.eq_ignore_ascii_case("Proxy-Authorization")
            })
        })
        .expect("the signed request's credentials");
    let realm = param(msg.header_at(at).expect("credentials").value, "realm").expect("its realm");
    msg.insert_header(
        at,
        "Proxy-Authorization",
        "Digest username=\"bob\", realm=\"example.com\", nonce=\"n\", uri=\"sip:example.com\", \
         response=\"00\",",
    );
    msg.insert_header(
        at,
        "Authorization",
        &format!(
            "NTLM qop=\"auth\", realm=\"{realm}\", opaque=\"0\", targetname=\"gw\", crand=\"1\", \
             cnum=\"99\", response=\"00\", response=\"11\""
        ),
    );
    let (r, _) = a.drive(msg).await;
    let done = r.unwrap_or_else(|f| panic!("MESSAGE: {f}\n{}", a.trace()));
    assert_eq!(done.status, 200, "authenticated by its valid credentials");
    let (_b, got) = b_task.await.expect("b");
    let (fwd, _, _) = got.first().expect("bob received the MESSAGE");
    let left: Vec<String> = fwd
        .headers()
        .filter(|h| {
            h.name.eq_ignore_ascii_case("Authorization")
                || h.name.eq_ignore_ascii_case("Proxy-Authorization")
        })
        .map(|h| format!("{}: {}", h.name, h.value))
        .collect();
    assert!(left.is_empty(), "forwarded credentials: {left:?}");
}

/// bob calls carol, carol rings; alice, signed in, sends a CANCEL of her own signing (her From,
/// a Call-ID and CSeq of her choice) that carries bob's INVITE Via, which anyone the INVITE
/// reached has seen. It is not hers to cancel: carol's phone keeps ringing (no CANCEL reaches
/// it), and alice gets no 200, which the gateway would sign with bob's SA over her Call-ID and
/// CSeq.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_with_another_clients_invite_via_is_not_acted_on() {
    let gw = gateway(GwOptions::default()).await;
    let mut alice = signed_in(&gw, "alice", AuthScheme::Ntlm).await;
    let mut bob = signed_in(&gw, "bob", AuthScheme::Ntlm).await;
    let mut carol = signed_in(&gw, "carol", AuthScheme::Ntlm).await;
    let invite = bob
        .ep
        .request(
            "INVITE",
            &format!("sip:carol@{DOMAIN}"),
            Some(("application/sdp".into(), b"v=0\r\n".to_vec())),
            bob.rng.as_rng(),
        )
        .expect("INVITE built and signed");
    bob.conn.send(&invite).await.expect("INVITE sent");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let got = carol
        .next_request(deadline)
        .await
        .expect("carol gets the INVITE");
    assert_eq!(got.method(), Some("INVITE"));
    let ringing = carol.response(&got, 180, "Ringing", "c1");
    carol.conn.send(&ringing).await.expect("180 sent");
    let bobs_via = invite.header("Via").expect("bob's Via").to_owned();
    let text = format!(
        "CANCEL sip:carol@{DOMAIN} SIP/2.0\r\nVia: {bobs_via}\r\nMax-Forwards: 70\r\n\
From: <sip:alice@{DOMAIN}>;tag=x1;epid={}\r\nTo: <sip:carol@{DOMAIN}>\r\n\
Call-ID: chosen-by-alice\r\nCSeq: 4242 CANCEL\r\nContent-Length: 0\r\n\r\n",
        alice.epid()
    );
    let mut cancel = Message::parse(text.as_bytes()).expect("CANCEL parses");
    alice
        .ep
        .sa_mut()
        .expect("alice's SA")
        .sign(&mut cancel, LegParams::default(), alice.rng.as_rng())
        .expect("signed by alice");
    alice.conn.send(&cancel).await.expect("CANCEL sent");
    let soon = tokio::time::Instant::now() + Duration::from_millis(1500);
    let to_carol = carol.next_request(soon).await;
    assert!(
        to_carol.is_none(),
        "carol got {:?}",
        to_carol.map(|m| m.start_line().to_owned())
    );
    let to_alice = alice.next_response(soon).await;
    assert!(
        to_alice.is_none(),
        "alice got {:?}",
        to_alice.map(|m| m.start_line().to_owned())
    );
}

/// `c`, signed in as `user`, registers a binding of its own AOR with `contact` (signed; the
/// gateway accepts it).
async fn registers_contact(c: &mut Client, user: &str, contact: &str) {
    let aor = format!("sip:{user}@{DOMAIN}");
    let mut reg =
        c.ep.request("REGISTER", &aor, None, c.rng.as_rng())
            .expect("REGISTER built");
    reg.set_header("Contact", contact);
    reg.set_header("Expires", "600");
    c.sign_again(&mut reg);
    let r = c.send_raw(&reg, Duration::from_secs(2)).await;
    assert_eq!(
        r.as_ref().and_then(|r| r.status_code()),
        Some(200),
        "the client's own REGISTER is accepted: {r:?}"
    );
}

/// The start line of a request `c` receives within `wait`, if any.
async fn next_request_within(c: &mut Client, wait: Duration) -> Option<String> {
    let until = tokio::time::Instant::now() + wait;
    c.next_request(until)
        .await
        .map(|m| m.start_line().to_owned())
}

/// carol received a MESSAGE from alice; the flow token in its Via (`sgf`) names alice's
/// connection. Used as a Route, it takes carol's out-of-dialog request nowhere near alice (before,
/// straight to alice's connection, past the registrar, signed for alice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flow_token_in_a_via_routes_no_request() {
    let gw = gateway(GwOptions::default()).await;
    let mut alice = signed_in(&gw, "alice", AuthScheme::Ntlm).await;
    let mut carol = signed_in(&gw, "carol", AuthScheme::Ntlm).await;
    let to = format!("sip:carol@{DOMAIN}");
    let (_, received) = tokio::join!(
        alice.request("MESSAGE", &to, Some(("text/plain", "hello"))),
        carol.serve(Duration::from_secs(5), 1)
    );
    let (msg, _, _) = received.first().expect("carol got alice's MESSAGE");
    let sgf = via_param(msg, "sgf").expect("the gateway's flow token in its Via");
    let mut m = carol
        .ep
        .request(
            "MESSAGE",
            &format!("sip:nobody@{DOMAIN}"),
            Some(("text/plain".into(), b"by alice's Via token".to_vec())),
            carol.rng.as_rng(),
        )
        .expect("a MESSAGE");
    m.set_header(
        "Route",
        &format!(
            "<sip:{sgf}@{};transport=tcp;lr>",
            gw.tcp.expect("tcp listener")
        ),
    );
    carol.sign_again(&mut m);
    let _ = carol.send_raw(&m, Duration::from_secs(2)).await;
    if let Some(got) = next_request_within(&mut alice, Duration::from_millis(500)).await {
        panic!(
            "carol's request reached alice by her Via token: {:?}",
            Some(got)
        );
    }
}

/// alice registers, after bob, the very contact bob's client registered (his device address):
/// a MESSAGE addressed to that contact is not delivered to her (before, the latest registration
/// of a contact took the requests addressed to it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_registered_again_by_another_user_does_not_take_his_requests() {
    let gw = gateway(GwOptions::default()).await;
    let mut bob = signed_in(&gw, "bob", AuthScheme::Ntlm).await;
    let mut alice = signed_in(&gw, "alice", AuthScheme::Ntlm).await;
    let mut carol = signed_in(&gw, "carol", AuthScheme::Ntlm).await;
    let bobs = bob
        .ep
        .start_register(bob.rng.as_rng())
        .expect("a REGISTER of bob's")
        .header("Contact")
        .expect("bob's Contact")
        .to_owned();
    let device = bobs
        .trim()
        .trim_start_matches('<')
        .split(['>', ';'])
        .next()
        .expect("a URI")
        .to_owned();
    registers_contact(&mut alice, "alice", &bobs).await;
    let (r, _) = carol
        .request("MESSAGE", &device, Some(("text/plain", "for bob's phone")))
        .await;
    let _ = r;
    if let Some(got) = next_request_within(&mut alice, Duration::from_millis(500)).await {
        panic!(
            "a MESSAGE to bob's device ({device}) reached alice: {:?}",
            Some(got)
        );
    }
}

/// alice, signed in, registers a second binding of her own AOR whose Contact is bob's AOR. bob is
/// not registered: a MESSAGE to him is not delivered to alice (before b765bf1 the registered
/// contact took every request for bob).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_naming_another_users_address_takes_none_of_his_requests() {
    let gw = gateway(GwOptions::default()).await;
    let mut alice = signed_in(&gw, "alice", AuthScheme::Ntlm).await;
    let mut carol = signed_in(&gw, "carol", AuthScheme::Ntlm).await;
    registers_contact(&mut alice, "alice", &format!("<sip:bob@{DOMAIN}>")).await;
    let (r, _) = carol
        .request(
            "MESSAGE",
            &format!("sip:bob@{DOMAIN}"),
            Some(("text/plain", "for bob")),
        )
        .await;
    let done = r.unwrap_or_else(|f| panic!("carol -> bob: {f}\n{}", carol.trace()));
    assert!(
        done.status >= 400,
        "a MESSAGE to unregistered bob is not delivered: {done:?}"
    );
    if let Some(got) = next_request_within(&mut alice, Duration::from_millis(500)).await {
        panic!("alice got {:?}", Some(got));
    }
}

/// A CHALLENGE_MESSAGE as an attacker's own server would send it to a victim: the gateway's
/// server challenge, and a TargetInfo that makes the victim name `target` (MsvAvTargetName, as
/// Windows adds for the service it believes it reaches: `cifs/fileserver`).
fn relayed_challenge(gateway_challenge: &[u8], target: Option<&str>) -> Vec<u8> {
    let u16_at = |at: usize| u16::from_le_bytes([gateway_challenge[at], gateway_challenge[at + 1]]);
    let u32_at = |at: usize| {
        u32::from_le_bytes(gateway_challenge[at..at + 4].try_into().expect("4 bytes")) as usize
    };
    let info_len = usize::from(u16_at(40));
    let info_at = u32_at(44);
    let info = &gateway_challenge[info_at..info_at + info_len];
    // The gateway's AV pairs without their MsvAvEOL, then ours.
    let mut av = info[..info.len() - 4].to_vec();
    if let Some(t) = target {
        let name: Vec<u8> = t.encode_utf16().flat_map(u16::to_le_bytes).collect();
        av.extend_from_slice(&9u16.to_le_bytes());
        av.extend_from_slice(&(name.len() as u16).to_le_bytes());
        av.extend_from_slice(&name);
    }
    av.extend_from_slice(&[0, 0, 0, 0]);
    let mut out = gateway_challenge[..56].to_vec();
    // No TargetName; the TargetInfo right after the header.
    out[12..20].copy_from_slice(&[0, 0, 0, 0, 56, 0, 0, 0]);
    out[40..42].copy_from_slice(&(av.len() as u16).to_le_bytes());
    out[42..44].copy_from_slice(&(av.len() as u16).to_le_bytes());
    out[44..48].copy_from_slice(&56u32.to_le_bytes());
    out.extend_from_slice(&av);
    out
}

/// NTLM relay: an attacker starts a sign-in as alice, takes the gateway's server challenge to a
/// service alice's computer authenticates to (an SMB share behind a UNC link, say), and sends
/// the AUTHENTICATE it gets back as its own final leg. That message proves alice's password for
/// that challenge, but not to whom: the attacker, without the session key, cannot sign. Before,
/// the gateway took such a final leg as alice's REGISTER (an unsigned final leg was a version-3
/// client's, whatever version the gateway asked for), binding the attacker's Contact, and took
/// it under version 3 even when alice's computer had named another service in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ntlm_sign_in_relayed_from_another_service_is_refused() {
    use base64::Engine as _;
    use sagw_ntlm::initiator::{ClientInputs, Credentials, MicPolicy, authenticate};
    let b64 = base64::engine::general_purpose::STANDARD;
    let nt = sagw_ntlm::NtHash::from_password("alice-pw");
    // (gateway's version, what the final leg claims, the service the victim named, accepted)
    let cases: [(u8, u8, Option<&str>, bool); 5] = [
        (4, 3, None, false),
        (4, 4, None, false),
        (3, 3, Some("cifs/fileserver.example.com"), false),
        // Under version 3 an unsigned final leg stays a version-3 client's, which names this
        // gateway or nothing: the test's relay itself works.
        (3, 3, Some("sip/sagw.example.com"), true),
        (3, 3, None, true),
    ];
    for (gw_version, claimed, target, accepted) in cases {
        let gw = gateway(GwOptions {
            version: gw_version,
            ..GwOptions::default()
        })
        .await;
        let mut mallory = Client::connect(
            &gw,
            TransportKind::Tcp,
            config("alice", "unknown", AuthScheme::Ntlm, claimed),
        )
        .await;
        let local = mallory.conn.local_addr();
        let epid = format!("{:010x}", unique());
        let call = format!("relay-{}", unique());
        let register = |cseq: u32, auth: &str| {
            let text = format!(
                "REGISTER sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/TCP {local};branch=z9hG4bKrelay{cseq}\r\n\
Max-Forwards: 70\r\nFrom: <sip:alice@{DOMAIN}>;tag=r{cseq};epid={epid}\r\nTo: <sip:alice@{DOMAIN}>\r\n\
Call-ID: {call}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:mallory@{local};transport=tcp>\r\n\
Expires: 600\r\nAuthorization: {auth}\r\nContent-Length: 0\r\n\r\n"
            );
            Message::parse(text.as_bytes()).expect("REGISTER parses")
        };
        let first = format!(
            "NTLM qop=\"auth\", realm=\"SIP Communications Service\", targetname=\"sagw.example.com\", \
version={claimed}, gssapi-data=\"\""
        );
        let challenge = mallory
            .send_raw(&register(1, &first), Duration::from_secs(5))
            .await
            .expect("the first leg is answered");
        assert_eq!(challenge.status_code(), Some(401));
        let offer = challenge
            .header_values("WWW-Authenticate")
            .find(|v| v.starts_with("NTLM") && v.contains("opaque"))
            .expect("an NTLM CHALLENGE")
            .to_owned();
        let opaque = param(&offer, "opaque").expect("opaque");
        let ours = b64
            .decode(param(&offer, "gssapi-data").expect("gssapi-data"))
            .expect("base64");

        // Alice's computer answers the attacker's server.
        let victim = authenticate(
            &relayed_challenge(&ours, target),
            &Credentials {
                user: "alice",
                domain: "EXAMPLE",
                nt_hash: &nt,
            },
            &ClientInputs {
                workstation: "ALICE-PC",
                client_challenge: [0x42; 8],
                timestamp: std::time::SystemTime::now(),
                random_session_key: [0x17; 16],
                version: [10, 0, 0x61, 0x4A, 0, 0, 0, 0x0F],
                mic: MicPolicy::Omit,
            },
        )
        .expect("the victim's AUTHENTICATE");

        let last = format!(
            "NTLM qop=\"auth\", realm=\"SIP Communications Service\", targetname=\"sagw.example.com\", \
version={claimed}, opaque=\"{opaque}\", gssapi-data=\"{}\"",
            b64.encode(&victim.message)
        );
        let answer = mallory
            .send_raw(&register(2, &last), Duration::from_secs(5))
            .await
            .expect("the final leg is answered");
        let case = format!("gateway v{gw_version}, final leg v{claimed}, target {target:?}");
        if accepted {
            assert_eq!(answer.status_code(), Some(200), "{case}: {answer:?}");
        } else {
            assert_ne!(answer.status_code(), Some(200), "{case}: {answer:?}");
            assert_eq!(answer.status_code(), Some(401), "{case}: {answer:?}");
        }
        drop(gw);
    }
}

/// A called client's 2xx to INVITE is retransmitted by its own UAS core until the ACK arrives
/// (RFC 3261 §13.3.1.4), on any transport: the copies are the same signed message, the same
/// `cnum`. The gateway dropped every copy after the first as a replay, so a caller whose first
/// 200 was lost on its UDP link never got one (the callee then gave up on the ACK and hung up).
/// A copy of a 2xx to INVITE is now relayed when its signature verifies; any other replayed
/// message is still dropped (`crates/auth/tests/ntlm_sa.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callees_retransmitted_2xx_reaches_the_caller() {
    let gw = gateway(GwOptions::default()).await;
    let mut a = signed_in(&gw, "alice", AuthScheme::Ntlm).await;
    let mut b = signed_in(&gw, "bob", AuthScheme::Ntlm).await;
    let invite =
        a.ep.request(
            "INVITE",
            &format!("sip:bob@{DOMAIN}"),
            Some(("application/sdp".into(), b"v=0\r\n".to_vec())),
            a.rng.as_rng(),
        )
        .expect("INVITE");
    a.conn.send(&invite).await.expect("send INVITE");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let got = b.next_request(deadline).await.expect("B gets the INVITE");
    assert_eq!(got.method(), Some("INVITE"));
    let ok = b.response(&got, 200, "OK", "bt");
    b.conn.send(&ok).await.expect("200");
    b.conn.send(&ok).await.expect("the same 200 again");
    let mut oks = Vec::new();
    while let Some(m) = a
        .next_response(tokio::time::Instant::now() + Duration::from_secs(2))
        .await
    {
        if m.status_code() == Some(200) {
            oks.push(m);
        }
    }
    assert_eq!(
        oks.len(),
        2,
        "the caller gets the 200 and its retransmission"
    );
    // And the caller's ACK for each copy: the same ACK twice (§13.2.2.4), both relayed.
    let dialog = Dialog::caller(&oks[0]);
    let ack = dialog.request(&mut a, "ACK", 1);
    a.conn.send(&ack).await.expect("ACK");
    a.conn.send(&ack).await.expect("the same ACK again");
    let mut acks = 0;
    while let Some(m) = b
        .next_request(tokio::time::Instant::now() + Duration::from_secs(2))
        .await
    {
        if m.method() == Some("ACK") {
            acks += 1;
        }
    }
    assert_eq!(acks, 2, "the callee gets the ACK and its retransmission");
}
