//! One client's share of what the gateway keeps for everyone, over UDP sockets with the tables
//! made small in the configuration.
//!
//! - Digest nonces: before, the nonce-count table (100 000 nonces, hard-coded) was shared by
//!   everyone and evicted the oldest nonce when full: one account that took a fresh nonce for
//!   every request evicted every other user's, whose next request on it was then answered
//!   `stale=true` (and whose 2xx ACK, which cannot be challenged, was dropped).
//! - Transactions: before, one authenticated client that sent requests the gateway answers itself
//!   (each kept 64*T1 for retransmissions) held all of `proxy.max_transactions`, and every other
//!   client got 503.

mod auth_support;

use std::net::SocketAddr;
use std::time::Duration;

use auth_support::{DOMAIN, GwOptions, gateway, unique};
use sagw_digest::Ha1;
use sagw_digest::client::{Challenge, authorize, parse_header};
use sagw_sip::Message;
use tokio::net::UdpSocket;

/// A Digest user on its own UDP socket, writing REGISTERs by hand.
struct User {
    name: &'static str,
    sock: UdpSocket,
    to: SocketAddr,
    cseq: u32,
}

impl User {
    async fn new(name: &'static str, to: SocketAddr) -> User {
        let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        User {
            name,
            sock,
            to,
            cseq: 0,
        }
    }

    async fn register(&mut self, authorization: Option<&str>) -> Message {
        self.cseq += 1;
        let local = self.sock.local_addr().expect("local");
        let mut text = format!(
            "REGISTER sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{n}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:{user}@{DOMAIN}>;tag={n}\r\nTo: <sip:{user}@{DOMAIN}>\r\n\
             Call-ID: share-{user}@{local}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:{user}@{local}>\r\n\
             Expires: 600\r\n",
            n = unique(),
            user = self.name,
            cseq = self.cseq,
        );
        if let Some(a) = authorization {
            text.push_str(&format!("Authorization: {a}\r\n"));
        }
        text.push_str("Content-Length: 0\r\n\r\n");
        self.sock
            .send_to(text.as_bytes(), self.to)
            .await
            .expect("send");
        let mut buf = vec![0u8; 65_536];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), self.sock.recv_from(&mut buf))
            .await
            .expect("answered within 5 s")
            .expect("recv");
        Message::parse(&buf[..n]).expect("response parses")
    }

    /// A fresh challenge's MD5 Digest offer.
    async fn challenge(&mut self) -> String {
        let r = self.register(None).await;
        assert_eq!(r.status_code(), Some(401));
        r.header_all("WWW-Authenticate")
            .find(|v| v.starts_with("Digest") && v.contains("MD5"))
            .expect("an MD5 Digest challenge")
            .to_owned()
    }

    /// A REGISTER answering `challenge` with count `nc`.
    async fn answer(&mut self, challenge: &str, nc: u32) -> Message {
        let p = parse_header(challenge).expect("challenge parses");
        let ch = Challenge::from_params(p.pairs()).expect("challenge params");
        let password = format!("{}-pw", self.name);
        let ha1 = Ha1::compute(ch.algorithm.base(), self.name, ch.realm, &password);
        let uri = format!("sip:{DOMAIN}");
        let cnonce = format!("cn{}", unique());
        let credentials = authorize(&ch, self.name, &ha1, "REGISTER", &uri, &cnonce, nc)
            .expect("authorize")
            .header_value();
        self.register(Some(&credentials)).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_digest_user_cannot_make_another_users_nonces_stale() {
    let gw = gateway(GwOptions {
        schemes: &["digest"],
        auth_extra: "digest_max_tracked_nonces = 64\ndigest_max_nonces_per_identity = 8\n",
        ..GwOptions::default()
    })
    .await;
    let to = gw.udp.expect("udp");
    let mut alice = User::new("alice", to).await;
    let mut bob = User::new("bob", to).await;

    let alices = alice.challenge().await;
    assert_eq!(alice.answer(&alices, 1).await.status_code(), Some(200));

    // bob takes a fresh nonce for every REGISTER, three times the whole table.
    for i in 0..192 {
        let ch = bob.challenge().await;
        let r = bob.answer(&ch, 1).await;
        assert_eq!(r.status_code(), Some(200), "bob's REGISTER {i}");
    }

    // alice goes on with her nonce: still tracked, so her next count is taken...
    let r = alice.answer(&alices, 2).await;
    assert_eq!(
        r.status_code(),
        Some(200),
        "alice's nonce was made stale by bob's: {:?}",
        r.header_all("WWW-Authenticate").collect::<Vec<_>>()
    );
    // ...and a count she used is still a replay, not a fresh start.
    let r = alice.answer(&alices, 2).await;
    assert_eq!(r.status_code(), Some(401));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_cannot_hold_every_transaction() {
    let (mut settings, _) = auth_support::gateway_settings(GwOptions {
        schemes: &["digest"],
        ..GwOptions::default()
    });
    // Answers live 64*T1 = 3.2 s here (t1_ms = 50): bob's 200 REGISTERs are all within it.
    settings.max_transactions = 200;
    settings.max_transactions_per_client = 50;
    let gw = sagw_gateway::start(settings).await.expect("gateway starts");
    let to = gw.udp.expect("udp");
    let mut bob = User::new("bob", to).await;
    let ch = bob.challenge().await;
    let mut refused = 0;
    for nc in 1..=200 {
        match bob.answer(&ch, nc).await.status_code() {
            Some(200) => {}
            Some(503) => refused += 1,
            other => panic!("bob's REGISTER {nc}: {other:?}"),
        }
    }
    let mut alice = User::new("alice", to).await;
    let ch = alice.challenge().await;
    let r = alice.answer(&ch, 1).await;
    assert_eq!(
        r.status_code(),
        Some(200),
        "alice after bob's {refused} refused REGISTERs: {:?}",
        r.header("Retry-After")
    );
    assert_eq!(refused, 150, "bob holds his share, 50, and no more");
    // His places come back with Timer J (64*T1 = 3.2 s, on the clean-up grid).
    tokio::time::sleep(std::time::Duration::from_millis(4500)).await;
    let ch = bob.challenge().await;
    assert_eq!(bob.answer(&ch, 1).await.status_code(), Some(200));
}
