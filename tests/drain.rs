//! Graceful drain: on SIGTERM the gateway closes its listeners, answers new requests 503 with
//! Retry-After, lets the transactions in progress finish (within `proxy.drain_grace_secs`),
//! saves its state and exits; a second SIGTERM stops it at once.

mod auth_support;
mod lifecycle_support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use auth_support::{Client, DOMAIN, config, unique, verified};
use lifecycle_support::*;
use sagw_client::AuthScheme;
use sagw_client::transport::TransportKind;
use sagw_sip::Message;
use tokio::net::UdpSocket;

#[test]
#[ignore = "the body of a gateway process the tests start"]
fn lifecycle_node() {
    node_main();
}

/// A registrar with NTLM, a snapshot, and `hop` as its next hop (for the AORs it does not hold).
fn gateway_config(dir: &Path, hop: SocketAddr, grace_secs: u64) -> String {
    let d = dir.display();
    format!(
        r#"
[log]
level = "warn"
[listen]
udp = "127.0.0.1:0"
tcp = "127.0.0.1:0"
tls = ""
[proxy]
core_cpu = "none"
next_hops = ["udp:{hop}"]
retry_after_secs = 17
drain_grace_secs = {grace_secs}
[metrics]
listen = "127.0.0.1:0"
[auth]
enabled = true
schemes = ["ntlm"]
sip_domain = "{DOMAIN}"
fqdn = "sagw.example.com"
credentials = "{d}/users"
nonce_key = "{d}/nonce.key"
[state]
backend = "memory"
key_file = "{d}/pool.key"
snapshot = "{d}/state.snapshot"
"#
    )
}

async fn signed_in(addr: SocketAddr, user: &str) -> Client {
    let mut c = Client::connect_to(
        addr,
        TransportKind::Tcp,
        config(user, &format!("{user}-pw"), AuthScheme::Ntlm, 4),
    )
    .await;
    let (r, _) = c.sign_in().await;
    assert_eq!(r.expect("signed in").status, 200);
    c
}

/// The next request the fake next hop receives, and where from.
async fn next_request(hop: &UdpSocket) -> (Message, SocketAddr) {
    let mut buf = vec![0u8; 65_536];
    let (n, from) = tokio::time::timeout(WAIT, hop.recv_from(&mut buf))
        .await
        .expect("the next hop got the request")
        .expect("recv");
    let msg = Message::parse(&buf[..n]).expect("parses");
    (msg, from)
}

/// The next hop's 200 for `req`.
fn ok_for(req: &Message) -> Vec<u8> {
    let mut out = String::from("SIP/2.0 200 OK\r\n");
    for h in req.headers() {
        if ["Via", "From", "Call-ID", "CSeq"]
            .iter()
            .any(|n| n.eq_ignore_ascii_case(h.name))
        {
            out.push_str(&format!("{}: {}\r\n", h.name, h.value));
        }
        if h.name.eq_ignore_ascii_case("To") {
            out.push_str(&format!("To: {};tag=hop{}\r\n", h.value, unique()));
        }
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out.into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_refuses_new_work_lets_the_transaction_in_progress_finish_then_saves_and_exits() {
    let dir = tempfile::tempdir().expect("dir");
    let hop = UdpSocket::bind("127.0.0.1:0").await.expect("next hop");
    let text = gateway_config(dir.path(), hop.local_addr().expect("hop"), 10);
    add_users(&text, &["alice", "bob"]);
    let mut node = Node::start(dir.path(), &text);
    let tcp = node.tcp.expect("tcp");
    let mut alice = signed_in(tcp, "alice").await;
    let mut bob = signed_in(tcp, "bob").await;

    // Alice's MESSAGE reaches the next hop, which holds its answer while the gateway drains.
    let to = format!("sip:carol@{DOMAIN}");
    let ((sent, _), ()) = tokio::join!(
        alice.request("MESSAGE", &to, Some(("text/plain", "before the drain"))),
        async {
            let (req, from) = next_request(&hop).await;
            assert_eq!(req.method(), Some("MESSAGE"));
            node.signal("TERM");
            // The listener closes: a new connection is refused.
            let deadline = Instant::now() + WAIT;
            while tokio::net::TcpStream::connect(tcp).await.is_ok() {
                assert!(Instant::now() < deadline, "still accepting connections");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // A new request on a connection opened before: 503 with Retry-After. (The
            // endpoint's `request` writes its target in To: bob's own AOR, or the stage's 403
            // for a REGISTER of another AOR would stand.)
            let (r, seen) = bob
                .request("REGISTER", &format!("sip:bob@{DOMAIN}"), None)
                .await;
            let refused = seen.last().expect("answered");
            assert_eq!(refused.status_code(), Some(503), "{r:?}");
            assert_eq!(refused.header("Retry-After").map(str::trim), Some("17"));
            // A signed-in client's MESSAGE: its 503 is signed with bob's SA (before, it went
            // unsigned, and a Lync-style client dropped it: the IM just disappeared).
            let (r, _) = bob
                .request("MESSAGE", &to, Some(("text/plain", "during the drain")))
                .await;
            let done = r.expect("answered");
            assert_eq!(done.status, 503);
            assert!(
                verified(&done.signature),
                "the 503 is signed for bob: {:?}",
                done.signature
            );
            // And over UDP.
            let udp = UdpSocket::bind("127.0.0.1:0").await.expect("udp");
            let local = udp.local_addr().expect("local");
            let invite = format!(
                "INVITE sip:carol@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{n};rport\r\nMax-Forwards: 70\r\nFrom: <sip:dave@{DOMAIN}>;tag={n}\r\nTo: <sip:carol@{DOMAIN}>\r\nCall-ID: drain-{n}\r\nCSeq: 1 INVITE\r\nContact: <sip:dave@{local}>\r\nContent-Length: 0\r\n\r\n",
                n = unique()
            );
            udp.send_to(invite.as_bytes(), node.udp.expect("udp"))
                .await
                .expect("send");
            let mut buf = vec![0u8; 65_536];
            let n = tokio::time::timeout(WAIT, udp.recv(&mut buf))
                .await
                .expect("answered")
                .expect("recv");
            let answer = Message::parse(&buf[..n]).expect("parses");
            assert_eq!(answer.status_code(), Some(503));
            assert!(answer.header("Retry-After").is_some());
            assert!(
                node.child.try_wait().expect("status").is_none(),
                "still running while alice's transaction is in progress"
            );
            // Now the next hop answers.
            hop.send_to(&ok_for(&req), from).await.expect("answer");
        }
    );
    let done = Instant::now();
    assert_eq!(
        sent.expect("the transaction in progress completed").status,
        200
    );
    let status = node
        .wait_exit(Duration::from_secs(5))
        .expect("exited once nothing was in progress");
    assert!(status.success(), "{status:?}");
    assert!(
        done.elapsed() < Duration::from_secs(5),
        "exited well within the 10 s grace"
    );
    assert!(
        dir.path().join("state.snapshot").exists(),
        "the state was saved"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grace_bounds_the_drain_and_a_second_sigterm_stops_at_once() {
    let dir = tempfile::tempdir().expect("dir");
    let hop = UdpSocket::bind("127.0.0.1:0").await.expect("next hop");
    let text = gateway_config(dir.path(), hop.local_addr().expect("hop"), 2);
    add_users(&text, &["alice", "bob"]);

    // A next hop that never answers: the drain ends with the grace.
    let mut node = Node::start(dir.path(), &text);
    let mut alice = signed_in(node.tcp.expect("tcp"), "alice").await;
    let carol = format!("sip:carol@{DOMAIN}");
    let request = alice.request("MESSAGE", &carol, None);
    let held = async {
        next_request(&hop).await;
        node.signal("TERM");
        let start = Instant::now();
        let status = node
            .wait_exit(Duration::from_secs(6))
            .expect("exited after the grace");
        (start.elapsed(), status)
    };
    let (_, (took, status)) = tokio::join!(request, held);
    assert!(status.success(), "{status:?}");
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(5),
        "the drain waited for the 2 s grace: {took:?}"
    );
    assert!(dir.path().join("state.snapshot").exists());

    // Again, with a second SIGTERM during the drain: it stops at once, state saved.
    std::fs::remove_file(dir.path().join("state.snapshot")).ok();
    // A next hop of its own: the first gateway's retransmissions of its MESSAGE
    // (Timer E, during its grace) are still queued on the old socket, and reading
    // one of those would signal this gateway before it holds a transaction.
    let hop = UdpSocket::bind("127.0.0.1:0").await.expect("next hop");
    let text = gateway_config(dir.path(), hop.local_addr().expect("hop"), 30);
    let mut node = Node::start(dir.path(), &text);
    let mut alice = signed_in(node.tcp.expect("tcp"), "alice").await;
    let carol = format!("sip:carol@{DOMAIN}");
    let request = alice.request("MESSAGE", &carol, None);
    let held = async {
        next_request(&hop).await;
        node.signal("TERM");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(node.child.try_wait().expect("status").is_none(), "draining");
        node.signal("TERM");
        let start = Instant::now();
        let status = node
            .wait_exit(Duration::from_secs(5))
            .expect("exited on the second signal");
        (start.elapsed(), status)
    };
    let (_, (took, status)) = tokio::join!(request, held);
    assert!(status.success(), "{status:?}");
    assert!(
        took < Duration::from_secs(3),
        "at once, not after 30 s: {took:?}"
    );
    assert!(dir.path().join("state.snapshot").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_drain_is_seen_by_the_control_surfaces() {
    let hop = UdpSocket::bind("127.0.0.1:0").await.expect("next hop");
    let text = format!(
        "[log]\nlevel = \"warn\"\n[listen]\nudp = \"127.0.0.1:0\"\ntcp = \"127.0.0.1:0\"\ntls = \"\"\n[proxy]\nmode = \"edge\"\nnext_hops = [\"udp:{}\"]\n[metrics]\nlisten = \"\"\n[auth]\nenabled = false\n",
        hop.local_addr().expect("hop")
    );
    let settings = sagw_gateway::Config::parse(&text)
        .expect("parses")
        .validate()
        .expect("valid");
    let gw = sagw_gateway::start(settings).await.expect("starts");
    let lifecycle = gw.lifecycle();
    assert!(!lifecycle.draining());
    let before = tokio::net::TcpStream::connect(gw.tcp.expect("tcp"))
        .await
        .expect("accepting before the drain");
    lifecycle.drain();
    assert!(lifecycle.draining(), "draining from the start of the drain");
    tokio::time::timeout(WAIT, gw.drained())
        .await
        .expect("nothing in progress: drained at once");
    let deadline = Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(gw.tcp.expect("tcp"))
        .await
        .is_ok()
    {
        assert!(Instant::now() < deadline, "the listener never closed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(before);
    gw.shutdown(Duration::from_secs(2)).await;
}
