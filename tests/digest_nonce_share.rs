//! One Digest user's nonces stay within that user's share of the gateway's nonce-count table.
//! Before, the table (100 000 nonces, hard-coded) was shared by everyone and evicted the oldest
//! nonce when full: one account that took a fresh nonce for every request evicted every other
//! user's, whose next request on it was then answered `stale=true` (and whose 2xx ACK, which cannot
//! be challenged, was dropped). Over UDP sockets, with the table made small in the configuration.

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
