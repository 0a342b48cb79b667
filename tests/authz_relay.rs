//! Issue 12, points 2, 4 and 5, at the socket: what a client (signed in or not) can make the
//! gateway send elsewhere. Each test failed on the code before the fix named in its comment.
//!
//! * Point 2, reflector: a response that matches no transaction of ours is not forwarded to
//!   whatever its second Via names.
//! * Point 4: a response to a request the gateway sent to bob is taken only from bob's flow.
//! * Point 8: OPTIONS for the served domain itself is answered by the gateway, signed.
//! * Point 5: a signed-in client's Route to an address that is no next hop gets 403, and the
//!   gateway opens no connection there.
//! * Found by the `proxy_edge` fuzz campaign (issue 17): a request from another address that
//!   reuses the Via of a client's transaction is not taken as its retransmission.

mod auth_support;

use std::time::Duration;

use auth_support::{Client, DOMAIN, GwOptions, addr, config, gateway, unique, verified};
use sagw_client::AuthScheme;
use sagw_client::session::RngSend;
use sagw_client::transport::{Connection, TransportKind};
use sagw_sip::Message;
use tokio::net::{TcpListener, UdpSocket};
use tokio::time::{Instant, timeout};

async fn signed_in(gw: &sagw_gateway::Running, user: &str) -> Client {
    let mut c = Client::connect(
        gw,
        TransportKind::Tcp,
        config(user, &format!("{user}-pw"), AuthScheme::Ntlm, 4),
    )
    .await;
    let (r, _) = c.sign_in().await;
    r.unwrap_or_else(|f| panic!("{user}: {f}\n{}", c.trace()));
    c
}

/// True when `listener` gets a connection within `limit`.
async fn connected(listener: &TcpListener, limit: Duration) -> bool {
    timeout(limit, listener.accept()).await.is_ok()
}

/// Fixed by "edge: a client's Route names only next hops or operator-listed targets": before it
/// the gateway connected to the internal address and forwarded the request there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_route_to_an_internal_address_gets_403_and_no_connection() {
    let gw = gateway(GwOptions::default()).await;
    let internal = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let internal_addr = internal.local_addr().expect("addr");
    let mut alice = signed_in(&gw, "alice").await;
    let mut msg = alice
        .ep
        .request(
            "MESSAGE",
            &format!("sip:bob@{DOMAIN}"),
            Some(("text/plain".into(), b"to the inside".to_vec())),
            alice.rng.as_rng(),
        )
        .expect("request");
    // Route is not part of the MS-SIPAE signature: the request stays validly signed.
    msg.push_header("Route", &format!("<sip:{internal_addr};transport=tcp;lr>"));
    let (r, _) = alice.drive(msg).await;
    let done = r.unwrap_or_else(|f| panic!("MESSAGE: {f}\n{}", alice.trace()));
    assert_eq!(done.status, 403, "{done:?}");
    assert!(verified(&done.signature), "the refusal is signed: {done:?}");
    assert!(
        !connected(&internal, Duration::from_millis(500)).await,
        "the gateway connected to {internal_addr} for a client"
    );
}

/// A next hop that loose-routes as Kamailio's `loose_route()` does: a request's top Route (its
/// own) popped, its Via added, relayed to the next Route, which names the gateway (its UDP
/// listener); the response relayed back, its Via removed. Returns the status codes of the
/// responses the gateway sent it.
async fn loose_routing_hop(hop: UdpSocket, gw_udp: std::net::SocketAddr) -> Vec<u16> {
    let mut buf = vec![0u8; 65_535];
    let mut statuses = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Ok(Ok((n, _))) = tokio::time::timeout_at(deadline, hop.recv_from(&mut buf)).await {
        let Ok(mut m) = Message::parse(&buf[..n]) else {
            continue;
        };
        if m.is_request() {
            let rest: Vec<String> = m
                .header_values("Route")
                .skip(1)
                .map(str::to_owned)
                .collect();
            m.remove_header("Route");
            for r in &rest {
                m.push_header("Route", r);
            }
            let via = format!(
                "SIP/2.0/UDP {};branch=z9hG4bKkam{}",
                hop.local_addr().expect("addr"),
                unique()
            );
            m.insert_header(0, "Via", &via);
        } else {
            statuses.push(m.status_code().unwrap_or(0));
            let top_via = m.header_all_indexed("Via").next().map(|(i, _)| i);
            if let Some(i) = top_via {
                m.remove_header_at(i);
            }
            if m.status_code().is_some_and(|c| c >= 200) {
                let _ = hop.send_to(&m.to_bytes(), gw_udp).await;
                break;
            }
        }
        let _ = hop.send_to(&m.to_bytes(), gw_udp).await;
    }
    statuses
}

/// A client's Route set that bounces off the next hop back into the gateway: alice may name the
/// next hop, and after it the gateway and an internal address. The next hop pops its own entry
/// and relays the request to the gateway. Before, the gateway, taking a request from the next
/// hop's address for the next hop's own, popped the entry alice wrote for it and connected to
/// the internal address (the Redis state store on loopback, say).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_route_set_bounced_off_the_next_hop_reaches_no_internal_address() {
    let hop = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let hop_addr = hop.local_addr().expect("addr");
    let hops = [format!("udp:{hop_addr}")];
    let gw = gateway(GwOptions {
        next_hops: &hops,
        ..GwOptions::default()
    })
    .await;
    let gw_udp = addr(&gw, TransportKind::Udp);
    let internal = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let internal_addr = internal.local_addr().expect("addr");
    let mut alice = signed_in(&gw, "alice").await;
    let mut msg = alice
        .ep
        .request(
            "MESSAGE",
            &format!("sip:bob@{DOMAIN}"),
            Some(("text/plain".into(), b"FLUSHALL\r\n".to_vec())),
            alice.rng.as_rng(),
        )
        .expect("request");
    msg.push_header(
        "Route",
        &format!(
            "<sip:{hop_addr};transport=udp;lr>, <sip:{gw_udp};transport=udp;lr>, \
             <sip:{internal_addr};transport=tcp;lr>"
        ),
    );
    let relaying = tokio::spawn(loose_routing_hop(hop, gw_udp));
    let (r, _) = alice.drive(msg).await;
    assert!(
        !connected(&internal, Duration::from_millis(500)).await,
        "the gateway connected to {internal_addr} for alice, through the next hop"
    );
    let statuses = relaying.await.expect("hop task");
    assert!(
        statuses.contains(&403),
        "the bounced request is refused: {statuses:?}"
    );
    let done = r.unwrap_or_else(|f| panic!("MESSAGE: {f}\n{}", alice.trace()));
    assert_eq!(done.status, 403, "{done:?}");
}

/// Fixed by "edge: a client's stray response is not reflected": before it the gateway sent the
/// response to the address in its second Via, over UDP and by opening a TCP connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stray_response_from_anyone_is_not_reflected() {
    let gw = gateway(GwOptions::default()).await;
    let gw_udp = addr(&gw, TransportKind::Udp);
    let victim_udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let victim_tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let attacker = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    for (transport, victim) in [
        ("UDP", victim_udp.local_addr().expect("addr")),
        ("TCP", victim_tcp.local_addr().expect("addr")),
    ] {
        for method in ["MESSAGE", "INVITE"] {
            let stray = format!(
                "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP {gw_udp};branch=z9hG4bKsgw0123456789ab.{n}\r\n\
                 Via: SIP/2.0/{transport} {victim};branch=z9hG4bKv{n}\r\n\
                 From: <sip:a@{DOMAIN}>;tag=1\r\nTo: <sip:b@{DOMAIN}>;tag=2\r\nCall-ID: stray{n}\r\n\
                 CSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n",
                n = unique()
            );
            attacker
                .send_to(stray.as_bytes(), gw_udp)
                .await
                .expect("send");
        }
    }
    let mut buf = [0u8; 2048];
    assert!(
        timeout(Duration::from_millis(500), victim_udp.recv_from(&mut buf))
            .await
            .is_err(),
        "a stray response was reflected over UDP"
    );
    assert!(
        !connected(&victim_tcp, Duration::from_millis(200)).await,
        "the gateway opened a connection for a stray response"
    );
}

/// Fixed by "edge: a client's response to a request we sent it must come back over that flow":
/// before it a response was matched by its branch alone, from any flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_is_taken_only_from_the_flow_the_request_went_to() {
    let gw = gateway(GwOptions::default()).await;
    let mut alice = signed_in(&gw, "alice").await;
    let mut bob = signed_in(&gw, "bob").await;
    let mut mallory = Connection::connect(addr(&gw, TransportKind::Tcp), TransportKind::Tcp, None)
        .await
        .expect("connect");
    let sending = tokio::spawn(async move {
        let (r, seen) = alice
            .request("MESSAGE", &format!("sip:bob@{DOMAIN}"), None)
            .await;
        (alice, r, seen)
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    let req = bob
        .next_request(deadline)
        .await
        .expect("bob gets the MESSAGE");
    // Another connection answers first, with a response bob signed (a stolen one, or bob's own
    // second connection): the gateway takes answers to bob's request from bob's flow only.
    let forged = bob.response(&req, 202, "Accepted", "forged");
    mallory.send(&forged).await.expect("send");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let real = bob.response(&req, 200, "OK", "real");
    bob.conn.send(&real).await.expect("send");
    let (mut alice, r, seen) = sending.await.expect("alice");
    let done = r.unwrap_or_else(|f| panic!("MESSAGE: {f}\n{}", alice.trace()));
    assert_eq!(
        done.status,
        200,
        "alice got {:?}",
        seen.iter().map(Message::status_code).collect::<Vec<_>>()
    );
    assert!(verified(&done.signature));
}

/// Issue 12 point 8: a signed-in client's `OPTIONS sip:<served domain>` (its keep-alive) is for
/// the registrar, so the gateway answers it, signed. Before the fix it got 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_for_the_domain_itself_gets_a_signed_200() {
    let gw = gateway(GwOptions::default()).await;
    let mut alice = signed_in(&gw, "alice").await;
    let (r, _) = alice
        .request("OPTIONS", &format!("sip:{DOMAIN}"), None)
        .await;
    let done = r.unwrap_or_else(|f| panic!("OPTIONS: {f}\n{}", alice.trace()));
    assert_eq!(done.status, 200, "{done:?}");
    assert!(verified(&done.signature), "{done:?}");
}

/// Found by the `proxy_edge` fuzz campaign (issue 17): a request from another address that
/// reuses the top Via (sent-by and branch) of a transaction a signed-in client opened was taken
/// as that transaction's retransmission, before authentication, and its last response was sent
/// again to the client. So anyone could make the gateway send to another peer (the next hop,
/// for a transaction it opened) with an unsigned datagram. Fixed by "edge: a retransmission
/// matches its transaction only from the flow that opened it".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_reusing_another_peers_transaction_is_not_answered_to_that_peer() {
    let gw = gateway(GwOptions::default()).await;
    let gw_udp = addr(&gw, TransportKind::Udp);
    let mut alice = Client::connect(
        &gw,
        TransportKind::Udp,
        config("alice", "alice-pw", AuthScheme::Ntlm, 4),
    )
    .await;
    let (r, _) = alice.sign_in().await;
    r.unwrap_or_else(|f| panic!("alice: {f}\n{}", alice.trace()));
    // A keep-alive OPTIONS for the served domain, answered (signed) by the gateway itself; over
    // UDP its answer is kept for Timer J (32 s) to absorb retransmissions (edge::answered).
    let options = alice
        .ep
        .request(
            "OPTIONS",
            &format!("sip:{DOMAIN}"),
            None,
            alice.rng.as_rng(),
        )
        .expect("request");
    let (r, _) = alice.drive(options.clone()).await;
    let done = r.unwrap_or_else(|f| panic!("OPTIONS: {f}\n{}", alice.trace()));
    assert_eq!(done.status, 200);
    let mut unsigned = options.clone();
    assert!(
        unsigned.remove_header("Authorization") + unsigned.remove_header("Proxy-Authorization") > 0
    );
    let mallory = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    // Alice's request word for word (a copy seen on the wire), then without its signature.
    for copy in [&options, &unsigned] {
        mallory
            .send_to(&copy.to_bytes(), gw_udp)
            .await
            .expect("send");
        let again = alice
            .next_response(Instant::now() + Duration::from_millis(500))
            .await;
        assert!(
            again.is_none(),
            "mallory's copy made the gateway answer alice again:\n{}",
            again
                .map(|m| String::from_utf8_lossy(&m.to_bytes()).into_owned())
                .unwrap_or_default()
        );
    }
    // Alice's own retransmission is still absorbed by her transaction's answer: she gets the 200
    // again.
    alice.conn.send(&options).await.expect("send");
    let resent = alice
        .next_response(Instant::now() + Duration::from_secs(2))
        .await
        .expect("alice's retransmission is answered");
    assert_eq!(resent.status_code(), Some(200));
}

/// Found by the `proxy_edge` fuzz campaign (issue 17): once the gateway's transaction for a
/// request it sent bob has ended, a 2xx to INVITE from bob's side is still relayed statelessly (a
/// UAS retransmits its 2xx until the ACK). Before the fix it was relayed unsigned: bob's SA was
/// looked up by the epid in the response's own To, so a copy without it went through; and what
/// was relayed reached alice unsigned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_invite_2xx_is_relayed_only_signed_by_the_callee() {
    let gw = gateway(GwOptions::default()).await;
    let mut alice = signed_in(&gw, "alice").await;
    let mut bob = signed_in(&gw, "bob").await;
    let calling = tokio::spawn(async move {
        let (r, _) = alice
            .request("INVITE", &format!("sip:bob@{DOMAIN}"), None)
            .await;
        (alice, r)
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    let invite = bob
        .next_request(deadline)
        .await
        .expect("bob gets the INVITE");
    let tag = format!("b{}", unique());
    let ok = bob.response(&invite, 200, "OK", &tag);
    bob.conn.send(&ok).await.expect("send");
    let (mut alice, r) = calling.await.expect("alice");
    let done = r.unwrap_or_else(|f| panic!("INVITE: {f}\n{}", alice.trace()));
    assert_eq!(done.status, 200);
    // The gateway's client transaction lingers 64*T1 (3.2 s with the tests' T1 of 50 ms) to take
    // retransmissions; after it the 2xx has no transaction to match.
    tokio::time::sleep(Duration::from_millis(3600)).await;
    let mut unsigned = ok.clone();
    assert!(
        unsigned.remove_header("Authorization") + unsigned.remove_header("Proxy-Authorization") > 0,
        "bob's 200 was signed"
    );
    let to = unsigned.header("To").expect("To").to_owned();
    let without_epid: String = to
        .split(';')
        .filter(|p| !p.trim_start().starts_with("epid="))
        .collect::<Vec<_>>()
        .join(";");
    unsigned.remove_header("To");
    unsigned.push_header("To", &without_epid);
    bob.conn.send(&unsigned).await.expect("send");
    let relayed = alice
        .next_response(Instant::now() + Duration::from_millis(700))
        .await;
    assert!(
        relayed.is_none(),
        "bob's unsigned late 2xx was relayed to alice:\n{}",
        relayed
            .map(|m| String::from_utf8_lossy(&m.to_bytes()).into_owned())
            .unwrap_or_default()
    );
    // Signed by bob, the same late 2xx still reaches the caller.
    let signed = bob.response(&invite, 200, "OK", &tag);
    bob.conn.send(&signed).await.expect("send");
    let relayed = alice
        .next_response(Instant::now() + Duration::from_secs(2))
        .await
        .expect("bob's signed late 2xx reaches alice");
    assert_eq!(relayed.status_code(), Some(200));
    assert_eq!(relayed.call_id(), ok.call_id());
    // And signed for alice, as the 2xx within the transaction was (a Lync client drops it else).
    let check = alice.verify(&relayed);
    assert!(verified(&check), "{check:?}");
}
