//! Servers trusted by their TLS certificate (issue 14: "a peer is trusted by its certificate, not
//! its address"), over real sockets. The gateway asks TLS clients for a certificate without
//! requiring one; a certificate signed by `tls.peer_ca` naming a host of
//! `proxy.trusted_peer_names` makes the connection a trusted peer's. The observable is what a
//! trusted peer gets and a client does not: a request it sends to a signed-in user is delivered
//! without a challenge (signed by the gateway with the user's SA), where a client is challenged.
//! All peers connect from 127.0.0.1, so nothing here is decided by address.

mod auth_support;
mod dns_support;

use std::sync::Arc;
use std::time::Duration;

use auth_support::{Client, GwOptions, config, gateway, gateway_settings, unique, verified};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sagw_client::AuthScheme;
use sagw_gateway::Running;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

struct Ca {
    cert: rcgen::Certificate,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

fn ca(name: &str) -> Ca {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.distinguished_name.push(rcgen::DnType::CommonName, name);
    let cert = p.self_signed(&key).expect("CA");
    Ca {
        cert,
        issuer: rcgen::Issuer::new(p, key),
    }
}

/// A certificate for `name`, signed by `ca`, and its key.
fn identity(ca: &Ca, name: &str) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let key = rcgen::KeyPair::generate().expect("key");
    let p = rcgen::CertificateParams::new(vec![name.to_owned()]).expect("params");
    let cert = p.signed_by(&key, &ca.issuer).expect("leaf");
    (
        cert.der().clone(),
        PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
    )
}

/// A registrar-mode gateway with `[auth]` on (NTLM and Digest; alice, bob, carol), trusting certificates of
/// `pool` that name fe1.pool.example.com.
async fn gateway_trusting(pool: &Ca) -> (Running, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_path = dir.path().join("pool-ca.pem");
    std::fs::write(&ca_path, pool.cert.pem()).expect("write CA");
    let (mut settings, _) = gateway_settings(GwOptions::default());
    // What `[tls] peer_ca` and `[proxy] trusted_peer_names` give, checked by the same
    // validation the configuration file goes through.
    let text = format!(
        "[listen]\nudp = \"\"\ntcp = \"\"\ntls = \"127.0.0.1:0\"\n[tls]\npeer_ca = \"{}\"\n[proxy]\ntrusted_peer_names = [\"fe1.pool.example.com\"]\n[auth]\nenabled = false\n",
        ca_path.display()
    );
    settings.peer_trust = sagw_gateway::Config::parse(&text)
        .expect("parses")
        .validate()
        .expect("valid")
        .peer_trust;
    assert!(settings.peer_trust.is_some());
    let gw = sagw_gateway::start(settings).await.expect("gateway starts");
    (gw, dir)
}

/// A raw TLS connection to the gateway presenting `cert` (or none).
struct Peer {
    s: tokio_rustls::client::TlsStream<TcpStream>,
    buf: Vec<u8>,
}

impl Peer {
    async fn connect(
        gw: &Running,
        cert: Option<(CertificateDer<'static>, PrivateKeyDer<'static>)>,
    ) -> Peer {
        let tcp = TcpStream::connect(gw.tls.expect("tls"))
            .await
            .expect("connect");
        Peer::handshake(gw, tcp, cert).await
    }

    /// The TLS handshake over `tcp`, a connection to the gateway's TLS listener.
    async fn handshake(
        gw: &Running,
        tcp: TcpStream,
        cert: Option<(CertificateDer<'static>, PrivateKeyDer<'static>)>,
    ) -> Peer {
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(&gw.cert.as_ref().expect("cert").cert_path)
            .expect("gateway certificate")
        {
            roots.add(c.expect("pem")).expect("root");
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
        let cfg = match cert {
            Some((c, k)) => builder
                .with_client_auth_cert(vec![c], k)
                .expect("client cert"),
            None => builder.with_no_client_auth(),
        };
        let s = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(
                rustls_pki_types::ServerName::try_from("127.0.0.1").expect("name"),
                tcp,
            )
            .await
            .expect("TLS handshake (a certificate that does not verify still connects)");
        Peer { s, buf: Vec::new() }
    }

    /// Sends a MESSAGE to alice with no credentials; the first final response, or None.
    async fn message_alice(&mut self) -> Option<u16> {
        let local = self.s.get_ref().0.local_addr().expect("local");
        let n = unique();
        let text = format!(
            "MESSAGE sip:alice@example.com SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bKpeer{n};rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:fe1@pool.example.com>;tag=peer{n}\r\nTo: <sip:alice@example.com>\r\n\
Call-ID: peer-{n}\r\nCSeq: 1 MESSAGE\r\nContact: <sip:fe1@{local};transport=tls>\r\n\
Content-Type: text/plain\r\nContent-Length: 8\r\n\r\npeer {n:03}",
            n = n % 1000
        );
        self.s.write_all(text.as_bytes()).await.ok()?;
        self.s.flush().await.ok()?;
        let deadline = Instant::now() + auth_support::WAIT;
        let mut tmp = [0u8; 8192];
        loop {
            while self.buf.starts_with(b"\r\n") {
                self.buf.drain(..2);
            }
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                let cl: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.trim()
                            .eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                if self.buf.len() >= end + 4 + cl {
                    self.buf.drain(..end + 4 + cl);
                    let code: u16 = head
                        .strip_prefix("SIP/2.0 ")
                        .and_then(|r| r.get(..3))
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(0);
                    if code >= 200 {
                        return Some(code);
                    }
                    continue;
                }
            }
            match tokio::time::timeout_at(deadline, self.s.read(&mut tmp)).await {
                Ok(Ok(n)) if n > 0 => self.buf.extend_from_slice(&tmp[..n]),
                _ => return None,
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_is_trusted_by_a_listed_name_under_the_peer_ca_and_nothing_else() {
    let pool = ca("pool CA");
    let other = ca("another CA");
    let (gw, _dir) = gateway_trusting(&pool).await;

    // A client without a certificate connects over the same TLS listener and signs in.
    let mut alice =
        Client::connect_tls(&gw, config("alice", "alice-pw", AuthScheme::Ntlm, 4)).await;
    let (signed_in, _) = alice.sign_in().await;
    signed_in.unwrap_or_else(|f| panic!("alice signs in without a certificate: {f:?}"));

    // Everyone but the listed peer gets the client treatment: challenged, nothing delivered.
    let cases = [
        ("no certificate", None),
        (
            "an unlisted name under the peer CA",
            Some(identity(&pool, "fe9.pool.example.com")),
        ),
        (
            "the listed name under another CA",
            Some(identity(&other, "fe1.pool.example.com")),
        ),
    ];
    for (what, cert) in cases {
        let mut p = Peer::connect(&gw, cert).await;
        let code = p.message_alice().await;
        assert!(
            matches!(code, Some(401 | 407)),
            "{what}: challenged like a client, got {code:?}"
        );
        assert!(
            alice
                .next_request(Instant::now() + Duration::from_millis(300))
                .await
                .is_none(),
            "{what}: nothing reaches alice"
        );
    }

    // The listed name under the peer CA: a trusted peer. Its MESSAGE reaches alice unchallenged,
    // signed by the gateway with her SA, as a trusted server's would.
    let mut fe1 = Peer::connect(&gw, Some(identity(&pool, "fe1.pool.example.com"))).await;
    let (answer, got) = tokio::join!(fe1.message_alice(), async {
        let req = alice
            .next_request(Instant::now() + auth_support::WAIT)
            .await
            .expect("the trusted peer's MESSAGE reaches alice");
        let check = alice.verify(&req);
        let reply = alice.response(&req, 200, "OK", "alice");
        alice.conn.send(&reply).await.expect("answer");
        (req, check)
    });
    let (req, check) = got;
    assert_eq!(req.method(), Some("MESSAGE"));
    assert!(verified(&check), "signed for alice: {check:?}");
    assert_eq!(answer, Some(200), "alice's answer relayed to the peer");
}

/// A forged DNS answer for a TLS next hop's name (here the test's own DNS server says
/// `pool.test` is 127.0.0.2) does not make its author a trusted server: it connects to the TLS
/// listener from that address and the hop's port, without a certificate, and is challenged like
/// any client. Before, an accepted connection at a next hop's address and port was the next hop's,
/// and its MESSAGE reached a signed-in user unchallenged, signed with her SA (B8a: TLS is what
/// defeats a forged answer, and it was checked only on the connections the gateway opened).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_dns_answer_does_not_make_a_trusted_next_hop_of_its_author() {
    // The forger's socket: 127.0.0.2 and the port it names in its answer.
    let forger = tokio::net::TcpSocket::new_v4().expect("socket");
    forger
        .bind("127.0.0.2:0".parse().expect("addr"))
        .expect("bind 127.0.0.2");
    let port = forger.local_addr().expect("local").port();
    let Some(dns) = dns_support::dnsmasq(&["--host-record=pool.test,127.0.0.2".into()]) else {
        return;
    };
    let hops = [format!("tls:pool.test:{port}")];
    let dir = tempfile::tempdir().expect("tempdir");
    let hop_ca = dir.path().join("hop-ca.pem");
    std::fs::write(&hop_ca, ca("next hop CA").cert.pem()).expect("write CA");
    let gw = gateway(GwOptions {
        next_hops: &hops,
        nameserver: Some(dns.addr),
        next_hop_ca: Some(hop_ca),
        ..GwOptions::default()
    })
    .await;
    let mut alice =
        Client::connect_tls(&gw, config("alice", "alice-pw", AuthScheme::Ntlm, 4)).await;
    let (signed_in, _) = alice.sign_in().await;
    signed_in.unwrap_or_else(|f| panic!("alice signs in: {f:?}"));
    // The gateway resolves its next hops at start, in the background: the forger's address is
    // a next hop once the metrics name it (else a challenge would prove nothing).
    let target = format!("hop=\"tls:127.0.0.2:{port}\"");
    let deadline = Instant::now() + auth_support::WAIT;
    while !auth_support::http(&gw, "GET", "/metrics")
        .await
        .1
        .contains(&target)
    {
        assert!(Instant::now() < deadline, "{target} never resolved");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let tcp = forger
        .connect(gw.tls.expect("tls"))
        .await
        .expect("connect from 127.0.0.2");
    let mut p = Peer::handshake(&gw, tcp, None).await;
    let (code, reached) = tokio::join!(p.message_alice(), async {
        let req = alice
            .next_request(Instant::now() + Duration::from_millis(1500))
            .await?;
        let reply = alice.response(&req, 200, "OK", "alice");
        alice.conn.send(&reply).await.ok()?;
        Some(req)
    });
    assert!(
        reached.is_none(),
        "the forger's MESSAGE reached alice: {reached:?}"
    );
    assert!(
        matches!(code, Some(401 | 407)),
        "challenged like a client, got {code:?}"
    );
}

/// A reload that takes a name off `proxy.trusted_peer_names` revokes that server's trust at once:
/// its open connection is closed and its next one is a client's, challenged; a name added is
/// trusted from the next connection. Before, the names were fixed until a restart, and the
/// running list stayed while the reload reported it as needing one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_takes_a_name_off_the_list_closes_its_connections() {
    use sagw_gateway::reload::ConfigSource;
    use std::os::unix::fs::OpenOptionsExt;
    let pool = ca("pool CA");
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().display();
    std::fs::write(dir.path().join("pool-ca.pem"), pool.cert.pem()).expect("CA");
    let pair = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("params")
        .self_signed(&pair)
        .expect("certificate");
    std::fs::write(dir.path().join("cert.pem"), cert.pem()).expect("cert");
    let mut key = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dir.path().join("key.pem"))
        .expect("key file");
    std::io::Write::write_all(&mut key, pair.serialize_pem().as_bytes()).expect("key");
    let text = |names: &str| {
        format!(
            "[log]\nlevel = \"warn\"\n[listen]\nudp = \"\"\ntcp = \"\"\ntls = \"127.0.0.1:0\"\n\
             [tls]\ncert = \"{d}/cert.pem\"\nkey = \"{d}/key.pem\"\npeer_ca = \"{d}/pool-ca.pem\"\n\
             [proxy]\ncore_cpu = \"none\"\ntrusted_peer_names = [{names}]\n[metrics]\nlisten = \"\"\n\
             [auth]\nenabled = true\nschemes = [\"ntlm\"]\nsip_domain = \"{}\"\nfqdn = \"sagw.example.com\"\n\
             credentials = \"{d}/users\"\nnonce_key = \"{d}/nonce.key\"\n",
            auth_support::DOMAIN
        )
    };
    let path = dir.path().join("sagw.toml");
    std::fs::write(&path, text("\"fe1.pool.example.com\"")).expect("config");
    let source = ConfigSource {
        path: Some(path.clone()),
        ..ConfigSource::default()
    };
    let settings = source.load().expect("valid");
    sagw_gateway::users::add(
        settings.auth.as_ref().expect("auth"),
        "alice",
        "alice-pw",
        None,
    )
    .expect("user");
    let gw = sagw_gateway::start(source.load().expect("valid"))
        .await
        .expect("starts");
    gw.set_config_source(source);

    let mut alice =
        Client::connect_tls(&gw, config("alice", "alice-pw", AuthScheme::Ntlm, 4)).await;
    let (signed_in, _) = alice.sign_in().await;
    signed_in.unwrap_or_else(|f| panic!("alice signs in: {f:?}"));
    // Delivers `peer`'s MESSAGE to alice and answers it; `peer`'s final response.
    async fn through(peer: &mut Peer, alice: &mut Client) -> Option<u16> {
        let (answer, _) = tokio::join!(peer.message_alice(), async {
            if let Some(req) = alice
                .next_request(Instant::now() + Duration::from_secs(2))
                .await
            {
                let reply = alice.response(&req, 200, "OK", "alice");
                alice.conn.send(&reply).await.expect("answer");
            }
        });
        answer
    }

    let mut fe1 = Peer::connect(&gw, Some(identity(&pool, "fe1.pool.example.com"))).await;
    assert_eq!(
        through(&mut fe1, &mut alice).await,
        Some(200),
        "fe1 trusted"
    );

    // Connections fe1 and fe2 opened before the reload, whose handshakes end after it.
    let pending = TcpStream::connect(gw.tls.expect("tls"))
        .await
        .expect("connect");
    let pending_fe2 = TcpStream::connect(gw.tls.expect("tls"))
        .await
        .expect("connect");
    tokio::time::sleep(Duration::from_millis(200)).await;
    std::fs::write(&path, text("\"fe2.pool.example.com\"")).expect("config");
    let report = gw.reload().expect("reloaded");
    assert!(
        report
            .applied
            .iter()
            .any(|k| k == "proxy.trusted_peer_names")
            && report.needs_restart.is_empty(),
        "{report:?}"
    );
    // fe1's open connection is closed: its MESSAGE gets nothing, and nothing reaches alice.
    assert_eq!(fe1.message_alice().await, None, "fe1's connection closed");
    assert!(
        alice
            .next_request(Instant::now() + Duration::from_millis(300))
            .await
            .is_none(),
        "nothing from fe1 reaches alice"
    );
    // The handshake that was under way when the reload came is judged under the new names: a
    // client's (before, under the names in force when the connection was accepted: trusted).
    let mut late =
        Peer::handshake(&gw, pending, Some(identity(&pool, "fe1.pool.example.com"))).await;
    let code = late.message_alice().await;
    assert!(
        matches!(code, Some(401 | 407)),
        "fe1's handshake across the reload challenged: {code:?}"
    );
    assert!(
        alice
            .next_request(Instant::now() + Duration::from_millis(300))
            .await
            .is_none(),
        "nothing from that connection reaches alice"
    );
    // fe2's, under way when its name was added, is a trusted peer's.
    let mut fe2_early = Peer::handshake(
        &gw,
        pending_fe2,
        Some(identity(&pool, "fe2.pool.example.com")),
    )
    .await;
    assert_eq!(
        through(&mut fe2_early, &mut alice).await,
        Some(200),
        "fe2's handshake across the reload trusted"
    );
    // Its next connection is a client's; fe2 is trusted from its first.
    let mut again = Peer::connect(&gw, Some(identity(&pool, "fe1.pool.example.com"))).await;
    let code = again.message_alice().await;
    assert!(matches!(code, Some(401 | 407)), "fe1 challenged: {code:?}");
    let mut fe2 = Peer::connect(&gw, Some(identity(&pool, "fe2.pool.example.com"))).await;
    assert_eq!(
        through(&mut fe2, &mut alice).await,
        Some(200),
        "fe2 trusted"
    );
    gw.shutdown(Duration::from_secs(2)).await;
}
