//! Two clients register and call each other through a real gateway on loopback sockets.

mod support;

use support::{Client, Kind, Msg, gateway, unique};

/// REGISTER both, INVITE/180/200/ACK, BYE/200, then a MESSAGE, all through the gateway.
async fn call_flow(a_kind: Kind, b_kind: Kind) {
    let gw = gateway("").await;
    let mut alice = Client::connect(&gw, a_kind, "alice").await;
    let mut bob = Client::connect(&gw, b_kind, "bob").await;
    let r = alice.register().await;
    assert_eq!(r.status(), Some(200), "{r:?}");
    assert!(r.header("Contact").unwrap().contains("expires=600"));
    assert_eq!(bob.register().await.status(), Some(200));

    let call = format!("call-{}", unique());
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n";
    alice
        .send(&alice.request("INVITE", "bob", "z9hG4bKinv1", &call, 1, sdp))
        .await;
    let trying = alice.recv().await;
    assert_eq!(trying.status(), Some(100));

    let inv = bob
        .recv_where("INVITE", |m| m.method() == Some("INVITE"))
        .await;
    assert_eq!(inv.body, sdp.as_bytes(), "body forwarded unchanged");
    // Addressed to bob's address of record, it reaches him under the Contact he registered.
    let registered = bob.contact();
    assert_eq!(
        inv.start,
        format!("INVITE {} SIP/2.0", &registered[1..registered.len() - 1]),
    );
    let vias = inv.all("Via");
    assert_eq!(vias.len(), 2, "{vias:?}");
    assert!(vias[0].contains("branch=z9hG4bK"), "{vias:?}");
    assert!(vias[1].contains("received=127.0.0.1"), "{vias:?}");
    assert_eq!(inv.header("Max-Forwards"), Some("69"));
    assert_eq!(inv.all("Record-Route").len(), 2);

    bob.send(&inv.reply(180, "Ringing", "bt", "")).await;
    let ringing = alice.recv_where("180", |m| m.status() == Some(180)).await;
    assert_eq!(ringing.all("Via").len(), 1, "our Via is removed");
    let contact = format!("Contact: {}\r\n", bob.contact());
    bob.send(&inv.reply(200, "OK", "bt", &contact)).await;
    let ok = alice
        .recv_where("200 INVITE", |m| {
            m.status() == Some(200) && m.cseq_method() == "INVITE"
        })
        .await;
    let rr = ok.all("Record-Route");
    assert_eq!(rr.len(), 2);

    // ACK along the route set (Record-Route reversed), Request-URI = bob's Contact.
    let ack = format!(
        "ACK sip:bob@{} SIP/2.0\r\nVia: {}\r\nRoute: {}\r\nRoute: {}\r\nMax-Forwards: 70\r\n\
From: <sip:alice@example.com>;tag=talice\r\nTo: <sip:bob@example.com>;tag=bt\r\nCall-ID: {call}\r\n\
CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
        bob.local,
        alice.via("z9hG4bKack1"),
        rr[1],
        rr[0]
    );
    alice.send(&ack).await;
    let got = bob.recv_where("ACK", |m| m.method() == Some("ACK")).await;
    assert_eq!(got.header("Route"), None, "our Route entries are consumed");

    // BYE from bob along its route set (Record-Route order) to alice's Contact.
    let bye = format!(
        "BYE sip:alice@{} SIP/2.0\r\nVia: {}\r\nRoute: {}, {}\r\nMax-Forwards: 70\r\n\
From: <sip:bob@example.com>;tag=bt\r\nTo: <sip:alice@example.com>;tag=talice\r\nCall-ID: {call}\r\n\
CSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n",
        alice.local,
        bob.via("z9hG4bKbye1"),
        rr[0],
        rr[1]
    );
    bob.send(&bye).await;
    let got = alice.recv_where("BYE", |m| m.method() == Some("BYE")).await;
    alice.send(&got.reply(200, "OK", "x", "")).await;
    let bye_ok = bob
        .recv_where("200 BYE", |m| m.cseq_method() == "BYE")
        .await;
    assert_eq!(bye_ok.status(), Some(200));

    // MESSAGE alice -> bob and back.
    let mcall = format!("msg-{}", unique());
    alice
        .send(&alice.request("MESSAGE", "bob", "z9hG4bKmsg1", &mcall, 1, "hello bob"))
        .await;
    let m = bob
        .recv_where("MESSAGE", |m| m.method() == Some("MESSAGE"))
        .await;
    assert_eq!(m.body, b"hello bob");
    bob.send(&m.reply(200, "OK", "bm", "")).await;
    let r = alice
        .recv_where("200 MESSAGE", |m: &Msg| m.cseq_method() == "MESSAGE")
        .await;
    assert_eq!(r.status(), Some(200));

    let page = support::scrape_until(
        &gw,
        &[
            "sagw_transactions_total{method=\"MESSAGE\",status=\"200\"} 1",
            "sagw_transaction_duration_seconds_count{method=\"INVITE\"} 1",
        ],
    )
    .await;
    assert!(
        page.contains("sagw_messages_total{direction=\"in\",method=\"INVITE\",status=\"0\"}"),
        "{page}"
    );
    assert!(
        page.contains("sagw_transactions_total{method=\"MESSAGE\",status=\"200\"} 1"),
        "{page}"
    );
    assert!(page.contains("sagw_bindings{} 2"), "{page}");
    assert!(
        page.contains("sagw_transaction_duration_seconds_count{method=\"INVITE\"} 1"),
        "{page}"
    );
    gw.shutdown(support::WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_over_tcp() {
    call_flow(Kind::Tcp, Kind::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_over_tls() {
    call_flow(Kind::Tls, Kind::Tls).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_over_udp() {
    call_flow(Kind::Udp, Kind::Udp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_across_transports() {
    call_flow(Kind::Tls, Kind::Udp).await;
}
