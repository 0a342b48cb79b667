//! Failure paths over real sockets: next hop down, CANCEL, hostile or broken peers, limits.

mod support;

use std::time::Duration;

use support::{Client, Kind, gateway, scrape, scrape_until, unique};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

async fn dead_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
    // dropped here: nothing listens on it any more
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_hop_down_gives_503_with_retry_after() {
    let p1 = dead_port().await;
    let p2 = dead_port().await;
    let gw = gateway(&format!(
        "[proxy]\nnext_hops = [\"tcp:127.0.0.1:{p1}\", \"tcp:127.0.0.1:{p2}\"]\nretry_after_secs = 7\n"
    ))
    .await;
    let mut alice = Client::connect(&gw, Kind::Tcp, "alice").await;
    assert_eq!(alice.register().await.status(), Some(200));
    // Not registered here: goes to the next hops, both refuse the connection.
    alice
        .send(&alice.request(
            "INVITE",
            "carol",
            "z9hG4bKnh1",
            &format!("nh-{}", unique()),
            1,
            "",
        ))
        .await;
    let r = alice.recv_where("final", |m| m.status() >= Some(200)).await;
    assert_eq!(r.status(), Some(503), "{r:?}");
    assert_eq!(r.header("Retry-After"), Some("7"));
    // The same client keeps being served.
    alice
        .send(&alice.request(
            "MESSAGE",
            "alice",
            "z9hG4bKnh2",
            &format!("nh-{}", unique()),
            1,
            "x",
        ))
        .await;
    let m = alice
        .recv_where("MESSAGE to self", |m| m.method() == Some("MESSAGE"))
        .await;
    alice.send(&m.reply(200, "OK", "s", "")).await;
    assert_eq!(
        alice
            .recv_where("200", |m| m.status().is_some())
            .await
            .status(),
        Some(200)
    );
    let page = scrape_until(
        &gw,
        &["sagw_transactions_total{method=\"INVITE\",status=\"503\"} 1"],
    )
    .await;
    assert!(
        page.contains("sagw_transactions_total{method=\"INVITE\",status=\"503\"} 1"),
        "{page}"
    );
    gw.shutdown(support::WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_hop_fail_over_reaches_the_live_one() {
    let dead = dead_port().await;
    let live = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let live_port = live.local_addr().unwrap().port();
    let gw = gateway(&format!(
        "[proxy]\nnext_hops = [\"tcp:127.0.0.1:{dead}\", \"udp:127.0.0.1:{live_port}\"]\n"
    ))
    .await;
    let mut alice = Client::connect(&gw, Kind::Tcp, "alice").await;
    alice
        .send(&alice.request(
            "MESSAGE",
            "carol",
            "z9hG4bKfo1",
            &format!("fo-{}", unique()),
            1,
            "hi",
        ))
        .await;
    let mut buf = vec![0u8; 65536];
    let (n, from) = tokio::time::timeout(support::WAIT, live.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let req = support::Msg::parse(&buf[..n]).unwrap();
    assert_eq!(req.method(), Some("MESSAGE"));
    live.send_to(req.reply(202, "Accepted", "srv", "").as_bytes(), from)
        .await
        .unwrap();
    let r = alice.recv_where("final", |m| m.status() >= Some(200)).await;
    assert_eq!(r.status(), Some(202));
    gw.shutdown(support::WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_reaches_the_callee_and_ends_with_487() {
    let gw = gateway("").await;
    let mut alice = Client::connect(&gw, Kind::Tcp, "alice").await;
    let mut bob = Client::connect(&gw, Kind::Udp, "bob").await;
    alice.register().await;
    bob.register().await;
    let call = format!("cancel-{}", unique());
    let invite = alice.request("INVITE", "bob", "z9hG4bKcan1", &call, 5, "");
    alice.send(&invite).await;
    let inv = bob
        .recv_where("INVITE", |m| m.method() == Some("INVITE"))
        .await;
    bob.send(&inv.reply(180, "Ringing", "bt", "")).await;
    alice.recv_where("180", |m| m.status() == Some(180)).await;
    let cancel = invite
        .replacen("INVITE sip:", "CANCEL sip:", 1)
        .replace("5 INVITE", "5 CANCEL");
    alice.send(&cancel).await;
    let c_ok = alice
        .recv_where("200 CANCEL", |m| m.cseq_method() == "CANCEL")
        .await;
    assert_eq!(c_ok.status(), Some(200));
    let c = bob
        .recv_where("CANCEL", |m| m.method() == Some("CANCEL"))
        .await;
    assert_eq!(
        c.all("Via")[0],
        inv.all("Via")[0],
        "CANCEL uses the INVITE's branch"
    );
    bob.send(&c.reply(200, "OK", "bt", "")).await;
    bob.send(&inv.reply(487, "Request Terminated", "bt", ""))
        .await;
    let ack = bob.recv_where("ACK", |m| m.method() == Some("ACK")).await;
    assert_eq!(ack.header("CSeq"), Some("5 ACK"));
    let term = alice.recv_where("487", |m| m.status() == Some(487)).await;
    assert_eq!(term.cseq_method(), "INVITE");
    gw.shutdown(support::WAIT).await;
}

/// A client that is served normally, to show others are unaffected by a bad peer.
async fn still_served(c: &mut Client) {
    let opt = format!(
        "OPTIONS sip:{gw} SIP/2.0\r\nVia: {}\r\nFrom: <sip:{u}@example.com>;tag=o\r\nTo: <sip:{gw}>\r\n\
Call-ID: opt-{n}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        c.via(&format!("z9hG4bKopt{}", unique())),
        gw = c.server,
        u = c.user,
        n = unique()
    );
    c.send(&opt).await;
    let r = c
        .recv_where("OPTIONS answer", |m| m.cseq_method() == "OPTIONS")
        .await;
    assert_eq!(r.status(), Some(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_peers_are_closed_while_others_are_served() {
    let gw = gateway("").await;
    let mut good = Client::connect(&gw, Kind::Tcp, "good").await;
    still_served(&mut good).await;

    // Garbage: closed.
    let mut bad = Client::connect(&gw, Kind::Tcp, "garbage").await;
    bad.send_bytes(b"\x16\x03\x01 GARBAGE GARBAGE\r\n\r\n")
        .await;
    assert!(
        bad.closed_within(Duration::from_secs(2)).await,
        "garbage closes the connection"
    );
    still_served(&mut good).await;

    // Oversized (limit 4096 in the test config): closed.
    let mut big = Client::connect(&gw, Kind::Tcp, "big").await;
    let body = "x".repeat(5000);
    big.send(&big.request("MESSAGE", "good", "z9hG4bKbig", "big", 1, &body))
        .await;
    assert!(
        big.closed_within(Duration::from_secs(2)).await,
        "oversized closes the connection"
    );

    // Too many headers: closed.
    let mut many = Client::connect(&gw, Kind::Tcp, "many").await;
    let mut text = String::from("OPTIONS sip:127.0.0.1 SIP/2.0\r\n");
    for i in 0..300 {
        text.push_str(&format!("X-H{i}: 1\r\n"));
    }
    text.push_str("Content-Length: 0\r\n\r\n");
    many.send(&text).await;
    assert!(many.closed_within(Duration::from_secs(2)).await);

    // Slow: one byte every 150 ms never completes a message within message_timeout (1 s).
    let mut slow = TcpStream::connect(gw.tcp.unwrap()).await.unwrap();
    let started = tokio::time::Instant::now();
    let mut closed = false;
    for b in b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bKslow\r\n"
        .iter()
    {
        if slow.write_all(&[*b]).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
        if started.elapsed() > Duration::from_secs(4) {
            break;
        }
    }
    let mut probe = [0u8; 16];
    let eof = closed
        || matches!(
            tokio::time::timeout(
                Duration::from_secs(2),
                tokio::io::AsyncReadExt::read(&mut slow, &mut probe)
            )
            .await,
            Ok(Ok(0)) | Ok(Err(_))
        );
    assert!(eof, "slow sender closed");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "closed by the message timeout, not later"
    );
    still_served(&mut good).await;

    // Half-open: connects and says nothing; closed after the idle timeout (2 s).
    let mut silent = Client::connect(&gw, Kind::Tcp, "silent").await;
    assert!(
        silent.closed_within(Duration::from_secs(4)).await,
        "idle connection closed"
    );
    // A TLS port peer that never handshakes: closed after the handshake timeout (1 s).
    let mut raw = TcpStream::connect(gw.tls.unwrap()).await.unwrap();
    let r = tokio::time::timeout(
        Duration::from_secs(3),
        tokio::io::AsyncReadExt::read(&mut raw, &mut probe),
    )
    .await;
    assert!(
        matches!(r, Ok(Ok(0)) | Ok(Err(_))),
        "handshake timeout closes: {r:?}"
    );

    // UDP: an oversized datagram is dropped, a malformed one too; the socket keeps working.
    let mut u = Client::connect(&gw, Kind::Udp, "udp").await;
    u.send(&u.request("MESSAGE", "good", "z9hG4bKbigu", "bigu", 1, &body))
        .await;
    u.send_bytes(b"NOT SIP AT ALL\r\n\r\n").await;
    assert!(u.recv_within(Duration::from_millis(300)).await.is_none());
    still_served(&mut u).await;

    let limits = [
        "message_size",
        "headers",
        "message_timeout",
        "idle_timeout",
        "tls_handshake_timeout",
        "udp_size",
    ];
    let lines: Vec<String> = limits
        .iter()
        .map(|l| format!("sagw_limit_hits_total{{limit=\"{l}\"}}"))
        .collect();
    let page = scrape_until(&gw, &lines.iter().map(String::as_str).collect::<Vec<_>>()).await;
    for limit in limits {
        assert!(
            page.contains(&format!("sagw_limit_hits_total{{limit=\"{limit}\"}}")),
            "{limit} missing: {page}"
        );
    }
    assert!(page.contains("sagw_parse_errors_total{transport=\"tcp\"}"));
    gw.shutdown(support::WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_framing_keepalive_pipelining_and_partial_input() {
    let gw = gateway("").await;
    let mut c = Client::connect(&gw, Kind::Tls, "pipe").await;
    // RFC 5626 ping gets a pong.
    c.send_bytes(b"\r\n\r\n").await;
    c.expect_pong().await;
    // Two requests in one write, the third split in two writes.
    let gwa = c.server;
    let opt = |n: u32| {
        format!(
            "OPTIONS sip:{gwa} SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:9;branch=z9hG4bKp{n}\r\nFrom: <sip:p@x>;tag=p\r\n\
To: <sip:127.0.0.1>\r\nCall-ID: pipe-{n}\r\nCSeq: {n} OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
    };
    c.send(&format!("{}{}", opt(1), opt(2))).await;
    let third = opt(3);
    let (a, b) = third.split_at(40);
    c.send(a).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    c.send(b).await;
    for n in 1..=3 {
        let r = c.recv().await;
        assert_eq!(r.status(), Some(200));
        assert_eq!(r.header("CSeq"), Some(format!("{n} OPTIONS").as_str()));
    }
    gw.shutdown(support::WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls12_and_tls13_both_accepted() {
    let gw = gateway("").await;
    for v in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let s = support::tls_connect(&gw, &[v]).await.expect("handshake");
        assert_eq!(s.get_ref().1.protocol_version(), Some(v.version));
    }
    let fp = &gw.cert.as_ref().unwrap().fingerprint;
    assert_eq!(fp.len(), 95);
    gw.shutdown(support::WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_forwards_zero_and_unknown_user() {
    let gw = gateway("").await;
    let mut c = Client::connect(&gw, Kind::Udp, "mf").await;
    let req = c
        .request("MESSAGE", "nobody", "z9hG4bKmf0", "mf0", 1, "")
        .replace("Max-Forwards: 70", "Max-Forwards: 0");
    c.send(&req).await;
    assert_eq!(c.recv().await.status(), Some(483));
    c.send(&c.request("MESSAGE", "nobody", "z9hG4bKmf1", "mf1", 1, ""))
        .await;
    assert_eq!(c.recv().await.status(), Some(404));
    gw.shutdown(support::WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_mode_registers_upstream_with_path_and_routes_back() {
    use tokio::io::AsyncReadExt;
    let registrar = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = registrar.local_addr().unwrap().port();
    let gw = gateway(&format!(
        "[proxy]\nmode = \"edge\"\nnext_hops = [\"tcp:127.0.0.1:{port}\"]\n"
    ))
    .await;
    let mut alice = Client::connect(&gw, Kind::Tls, "alice").await;
    let reg = tokio::spawn(async move { alice.register().await.status().map(|s| (s, alice)) });
    // The fake registrar: one connection from the gateway, one REGISTER on it.
    let (mut up, _) = tokio::time::timeout(support::WAIT, registrar.accept())
        .await
        .unwrap()
        .unwrap();
    let mut buf = vec![0u8; 65536];
    let mut have = 0;
    let req = loop {
        let n = up.read(&mut buf[have..]).await.unwrap();
        assert!(n > 0);
        have += n;
        if let Some(m) = support::Msg::parse(&buf[..have]) {
            break m;
        }
    };
    assert_eq!(req.method(), Some("REGISTER"));
    let path = req.header("Path").expect("Path added").to_owned();
    assert!(path.contains(";lr;ob>"), "{path}");
    up.write_all(req.reply(200, "OK", "reg", "").as_bytes())
        .await
        .unwrap();
    let (status, mut alice) = reg.await.unwrap().unwrap();
    assert_eq!(status, 200);
    // The registrar sends a request for alice along the Path: it arrives over alice's TLS flow.
    let msg = format!(
        "MESSAGE sip:alice@{} SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:{port};branch=z9hG4bKup1\r\nRoute: {path}\r\n\
Max-Forwards: 70\r\nFrom: <sip:bob@example.com>;tag=b\r\nTo: <sip:alice@example.com>\r\nCall-ID: up-1\r\n\
CSeq: 1 MESSAGE\r\nContent-Length: 2\r\n\r\nhi",
        alice.local
    );
    up.write_all(msg.as_bytes()).await.unwrap();
    let got = alice
        .recv_where("MESSAGE", |m| m.method() == Some("MESSAGE"))
        .await;
    assert_eq!(got.body, b"hi");
    assert_eq!(got.header("Route"), None);
    alice.send(&got.reply(200, "OK", "a", "")).await;
    let mut have = 0;
    let resp = loop {
        let n = tokio::time::timeout(support::WAIT, up.read(&mut buf[have..]))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        have += n;
        if let Some(m) = support::Msg::parse(&buf[..have]) {
            break m;
        }
    };
    assert_eq!(resp.status(), Some(200));
    assert_eq!(resp.all("Via").len(), 1);
    gw.shutdown(support::WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_refuses_extra_connections() {
    let gw = support::gateway_with_connections("", 2).await;
    let mut a = Client::connect(&gw, Kind::Tcp, "a").await;
    let mut b = Client::connect(&gw, Kind::Tcp, "b").await;
    still_served(&mut a).await;
    still_served(&mut b).await;
    let mut c = Client::connect(&gw, Kind::Tcp, "c").await;
    assert!(
        c.closed_within(Duration::from_secs(2)).await,
        "third connection refused"
    );
    still_served(&mut a).await;
    drop(b);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut d = Client::connect(&gw, Kind::Tcp, "d").await;
    still_served(&mut d).await;
    let page = scrape(&gw).await;
    assert!(
        page.contains("sagw_limit_hits_total{limit=\"connections\"} 1"),
        "{page}"
    );
    assert!(
        page.contains("sagw_connections{transport=\"tcp\"} 2"),
        "{page}"
    );
    gw.shutdown(support::WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_next_hop_is_verified_against_the_configured_ca() {
    use rustls_pki_types::pem::PemObject;
    use tokio::io::AsyncReadExt;
    // A next hop with its own self-signed certificate for 127.0.0.1.
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .self_signed(&pair)
        .unwrap();
    let ca = std::env::temp_dir().join(format!(
        "sagw-hop-ca-{}-{}.pem",
        std::process::id(),
        unique()
    ));
    std::fs::write(&ca, cert.pem()).unwrap();
    let server_cfg = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls_pki_types::PrivateKeyDer::from_pem_slice(pair.serialize_pem().as_bytes()).unwrap(),
    )
    .unwrap();
    let server_cfg2 = server_cfg.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hop = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(server_cfg))
            .accept(tcp)
            .await
            .unwrap();
        let mut buf = vec![0u8; 65536];
        let mut have = 0;
        let req = loop {
            let n = tls.read(&mut buf[have..]).await.unwrap();
            assert!(n > 0);
            have += n;
            if let Some(m) = support::Msg::parse(&buf[..have]) {
                break m;
            }
        };
        assert_eq!(req.method(), Some("MESSAGE"));
        assert!(
            req.all("Via")[0].starts_with("SIP/2.0/TLS "),
            "{:?}",
            req.all("Via")
        );
        tls.write_all(req.reply(200, "OK", "hop", "").as_bytes())
            .await
            .unwrap();
        tls.flush().await.unwrap();
        // Keep the connection until the test ends.
        let _ = tls.read(&mut buf).await;
    });
    let dir = std::env::temp_dir().join(format!("sagw-it-hop-{}-{}", std::process::id(), unique()));
    let text = format!(
        "[listen]\nudp = \"\"\ntcp = \"127.0.0.1:0\"\ntls = \"\"\n[tls]\ngenerated_dir = \"{}\"\nnext_hop_ca = \"{}\"\n\
[proxy]\nnext_hops = [\"tls:127.0.0.1:{port}\"]\n[metrics]\nlisten = \"\"\n[auth]\nenabled = false\n",
        dir.display(),
        ca.display()
    );
    let settings = sagw_gateway::Config::parse(&text)
        .unwrap()
        .validate()
        .unwrap();
    let gw = sagw_gateway::start(settings).await.unwrap();
    let mut alice = Client::connect(&gw, Kind::Tcp, "alice").await;
    alice
        .send(&alice.request(
            "MESSAGE",
            "carol",
            "z9hG4bKtlshop",
            &format!("th-{}", unique()),
            1,
            "hi",
        ))
        .await;
    let r = alice.recv_where("final", |m| m.status() >= Some(200)).await;
    assert_eq!(r.status(), Some(200));
    gw.shutdown(support::WAIT).await;
    hop.abort();

    // A CA that did not sign the next hop's certificate: the handshake fails, the client gets 503.
    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let other = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .self_signed(&other)
        .unwrap();
    std::fs::write(&ca, other.pem()).unwrap();
    let impostor = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let iport = impostor.local_addr().unwrap().port();
    let imp = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = impostor.accept().await else {
                return;
            };
            let acceptor =
                tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(server_cfg2.clone()));
            tokio::spawn(async move {
                let _ = acceptor.accept(tcp).await;
            });
        }
    });
    let text = text.replace(&format!("127.0.0.1:{port}"), &format!("127.0.0.1:{iport}"));
    let settings = sagw_gateway::Config::parse(&text)
        .unwrap()
        .validate()
        .unwrap();
    let gw = sagw_gateway::start(settings).await.unwrap();
    let mut alice = Client::connect(&gw, Kind::Tcp, "alice").await;
    alice
        .send(&alice.request(
            "MESSAGE",
            "carol",
            "z9hG4bKtlsbad",
            &format!("tb-{}", unique()),
            1,
            "hi",
        ))
        .await;
    let r = alice.recv_where("final", |m| m.status() >= Some(200)).await;
    assert_eq!(r.status(), Some(503));
    gw.shutdown(support::WAIT).await;
    imp.abort();
    let _ = std::fs::remove_file(&ca);
}

/// A peer that sends nothing but RFC 5626 pings, as fast as it can, and reads its pongs: each
/// ping had a write of its own on the core thread (and over TLS a record), 362 of them for a
/// segment, so a few MB/s from one host took the core thread from everyone. The pings of a read
/// pass now get one pong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_pings_gets_one_pong_a_read() {
    use tokio::io::AsyncReadExt;
    let gw = gateway("").await;
    let to = gw.tcp.expect("tcp listener");
    let mut s = TcpStream::connect(to).await.expect("connect");
    let from = s.local_addr().expect("local address");
    let pings = 2000;
    let mut bytes = b"\r\n\r\n".repeat(pings);
    bytes.extend_from_slice(
        format!(
            "OPTIONS sip:{to} SIP/2.0\r\nVia: SIP/2.0/TCP {from};branch=z9hG4bKpf1\r\nFrom: <sip:p@x>;tag=p\r\n\
To: <sip:{to}>\r\nCall-ID: pings-{}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
            unique()
        )
        .as_bytes(),
    );
    s.write_all(&bytes).await.expect("write");
    let mut got = Vec::new();
    let mut chunk = [0u8; 16384];
    let answered = tokio::time::timeout(support::WAIT, async {
        while !got.windows(7).any(|w| w == b"SIP/2.0") {
            let n = s.read(&mut chunk).await.expect("read");
            assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    assert!(answered.is_ok(), "no answer to the OPTIONS");
    let pongs = got
        .iter()
        .take_while(|b| **b == b'\r' || **b == b'\n')
        .count()
        / 2;
    assert!(pongs >= 1, "the pings are answered");
    assert!(
        pongs <= 20,
        "{pongs} pongs for {pings} pings sent in one write"
    );
    gw.shutdown(support::WAIT).await;
}
