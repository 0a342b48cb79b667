//! The client against an in-test server built on the security core, over loopback: NTLM (version
//! 4 and 3), Digest, Kerberos (real MIT KDC), over TCP, UDP and TLS; signed requests both ways; and
//! the failure reasons an operator sees.

#[path = "../../kerberos/tests/support/mod.rs"]
mod kdc;
mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sagw_auth::SecurityCore;
use sagw_auth::kerberos_mit::MitKerberos;
use sagw_client::session::{Timers, request, sign_in};
use sagw_client::transport::{Connection, TlsOptions, TlsTrust, TransportKind, tls_connector};
use sagw_client::util::OsRng;
use sagw_client::{
    AuthScheme, Endpoint, EndpointConfig, Failure, LocalAddr, Password, SignatureCheck,
};
use support::{Quirks, Server};

fn timers() -> Timers {
    Timers {
        transaction: Duration::from_secs(5),
        t1: Duration::from_millis(100),
        t2: Duration::from_millis(400),
    }
}

fn ntlm_server(quirks: Quirks) -> Arc<Server> {
    Server::new(
        SecurityCore::new(support::ntlm_digest_config(), Arc::new(support::store())),
        quirks,
    )
}

fn config(user: &str, password: &str, schemes: &[AuthScheme], epid: &str) -> EndpointConfig {
    let mut cfg = EndpointConfig::new(user, support::SIP_DOMAIN, epid);
    cfg.domain = "EXAMPLE".into();
    cfg.password = Some(Password::new(password));
    cfg.schemes = schemes.to_vec();
    cfg
}

async fn connect(addr: SocketAddr, kind: TransportKind, tls: Option<TlsOptions>) -> Connection {
    let connector = tls.as_ref().map(|t| tls_connector(t).expect("tls config"));
    let name = tls
        .as_ref()
        .map(|t| t.server_name.clone())
        .unwrap_or_default();
    Connection::connect(addr, kind, connector.as_ref().map(|c| (c, name.as_str())))
        .await
        .expect("connect")
}

fn endpoint(cfg: EndpointConfig, conn: &Connection) -> Endpoint {
    Endpoint::new(
        cfg,
        LocalAddr {
            transport: conn.kind().via(),
            addr: conn.local_addr().to_string(),
        },
    )
    .with_trace()
}

/// Signs in, sends signed MESSAGEs, then an OPTIONS during which the server pushes a signed
/// MESSAGE that the client verifies and answers signed; the server verifies that answer.
async fn full_exchange(server: &Arc<Server>, conn: &mut Connection, ep: &mut Endpoint) {
    let mut rng = OsRng::new().expect("os rng");
    let done = sign_in(conn, ep, &mut rng, &timers())
        .await
        .unwrap_or_else(|f| panic!("sign-in failed: {f}\n{}", trace(ep)));
    assert_eq!(done.status, 200);
    assert!(
        matches!(done.signature, SignatureCheck::Verified { .. }),
        "{done:?}"
    );
    for i in 0..3 {
        let body = Some(("text/plain".to_owned(), format!("hi {i}").into_bytes()));
        let c = request(
            conn,
            ep,
            "MESSAGE",
            "sip:bob@example.test",
            body,
            &mut rng,
            &timers(),
        )
        .await
        .unwrap_or_else(|f| panic!("MESSAGE failed: {f}\n{}", trace(ep)));
        assert_eq!(c.status, 200);
        assert!(
            matches!(c.signature, SignatureCheck::Verified { .. }),
            "{c:?}"
        );
    }
    let before = server.verdicts.lock().len();
    let c = request(
        conn,
        ep,
        "OPTIONS",
        "sip:example.test",
        None,
        &mut rng,
        &timers(),
    )
    .await
    .unwrap_or_else(|f| panic!("OPTIONS failed: {f}\n{}", trace(ep)));
    assert_eq!(c.status, 200);
    let events = trace(ep);
    if ep
        .registration()
        .is_some_and(|r| r.scheme != AuthScheme::Digest)
    {
        assert!(
            events.contains("signature OK on incoming MESSAGE"),
            "{events}"
        );
        // The server checks our signed 200 asynchronously.
        for _ in 0..100 {
            if server.verdicts.lock().len() > before {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            server.verdicts.lock().get(before).map(String::as_str),
            Some("verified"),
            "the server verifies the client's signed answer"
        );
    }
}

fn trace(ep: &mut Endpoint) -> String {
    ep.take_events()
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn ntlm_version_4_over_tcp() {
    let server = ntlm_server(Quirks::default());
    let addr = support::serve_tcp(server.clone(), None).await;
    let mut conn = connect(addr, TransportKind::Tcp, None).await;
    let mut ep = endpoint(
        config("alice", "alice-pw", &[AuthScheme::Ntlm], "a1a1a1a1a1"),
        &conn,
    );
    full_exchange(&server, &mut conn, &mut ep).await;
    let snap = server.core.counters().snapshot();
    // 1 AUTHENTICATE leg signature + 3 MESSAGE + 1 OPTIONS + 1 answer.
    assert_eq!(snap.scheme(sagw_auth::Scheme::Ntlm).verified, 6);
}

#[tokio::test]
async fn ntlm_version_3_over_udp() {
    // A version-3 client signs from its next request: only a server set to version 3 takes its
    // unsigned final leg.
    let mut core = support::ntlm_digest_config();
    core.version = 3;
    let server = Server::new(
        SecurityCore::new(core, Arc::new(support::store())),
        Quirks::default(),
    );
    let addr = support::serve_udp(server.clone()).await;
    let mut conn = connect(addr, TransportKind::Udp, None).await;
    let mut cfg = config("bob", "bob-pw", &[AuthScheme::Ntlm], "b2b2b2b2b2");
    cfg.version = 3;
    let mut ep = endpoint(cfg, &conn);
    full_exchange(&server, &mut conn, &mut ep).await;
    assert_eq!(ep.registration().map(|r| r.version), Some(3));
}

#[tokio::test]
async fn digest_over_tcp_with_nextnonce() {
    let server = ntlm_server(Quirks::default());
    let addr = support::serve_tcp(server.clone(), None).await;
    let mut conn = connect(addr, TransportKind::Tcp, None).await;
    let mut ep = endpoint(
        config("alice", "alice-pw", &[AuthScheme::Digest], "d1d1d1d1d1"),
        &conn,
    );
    full_exchange(&server, &mut conn, &mut ep).await;
    let snap = server.core.counters().snapshot();
    // REGISTER + 3 MESSAGE + OPTIONS, each preemptively authorised with the last nextnonce.
    assert_eq!(
        snap.scheme(sagw_auth::Scheme::Digest).handshakes_completed,
        5
    );
}

#[tokio::test]
async fn ntlm_over_tls_with_a_pinned_certificate_and_insecure_mode() {
    let (pem, acceptor) = support::self_signed_tls();
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("gw.pem");
    std::fs::write(&ca, pem).expect("write pem");
    let server = ntlm_server(Quirks::default());
    let addr = support::serve_tcp(server.clone(), Some(acceptor)).await;
    for trust in [TlsTrust::Pem(ca.clone()), TlsTrust::Insecure] {
        let opts = TlsOptions {
            trust,
            server_name: "localhost".into(),
        };
        let mut conn = connect(addr, TransportKind::Tls, Some(opts)).await;
        let mut ep = endpoint(
            config("alice", "alice-pw", &[AuthScheme::Ntlm], "c3c3c3c3c3"),
            &conn,
        );
        full_exchange(&server, &mut conn, &mut ep).await;
    }
    // Another CA: the handshake fails with a certificate error.
    let (other_pem, _) = support::self_signed_tls();
    let other = dir.path().join("other.pem");
    std::fs::write(&other, other_pem).expect("write pem");
    let connector = tls_connector(&TlsOptions {
        trust: TlsTrust::Pem(other),
        server_name: "localhost".into(),
    })
    .expect("config");
    let err = Connection::connect(addr, TransportKind::Tls, Some((&connector, "localhost")))
        .await
        .expect_err("untrusted certificate");
    assert!(err.to_string().contains("TLS handshake"), "{err}");
}

#[tokio::test]
async fn failures_say_why() {
    // Wrong password.
    let server = ntlm_server(Quirks::default());
    let addr = support::serve_tcp(server.clone(), None).await;
    let mut rng = OsRng::new().expect("rng");
    let mut conn = connect(addr, TransportKind::Tcp, None).await;
    let mut ep = endpoint(
        config("alice", "nope", &[AuthScheme::Ntlm], "e1e1e1e1e1"),
        &conn,
    );
    let f = sign_in(&mut conn, &mut ep, &mut rng, &timers())
        .await
        .expect_err("wrong password");
    assert_eq!(f.label(), "rejected", "{f}");

    // Only Kerberos allowed, the server offers NTLM and Digest.
    let mut ep = endpoint(
        config("alice", "alice-pw", &[AuthScheme::Kerberos], "e2e2e2e2e2"),
        &conn,
    );
    let f = sign_in(&mut conn, &mut ep, &mut rng, &timers())
        .await
        .expect_err("no common scheme");
    assert!(
        matches!(&f, Failure::NoCommonScheme { offered, .. } if offered.contains(&"NTLM".to_owned())),
        "{f}"
    );

    // Server clock an hour ahead: the Date header shows it and NTLM fails for skew.
    let skewed = ntlm_server(Quirks {
        clock_offset: 3600,
        ..Quirks::default()
    });
    let addr = support::serve_tcp(skewed, None).await;
    let mut conn = connect(addr, TransportKind::Tcp, None).await;
    let mut ep = endpoint(
        config("alice", "alice-pw", &[AuthScheme::Ntlm], "e3e3e3e3e3"),
        &conn,
    );
    let f = sign_in(&mut conn, &mut ep, &mut rng, &timers())
        .await
        .expect_err("skew");
    assert_eq!(f.label(), "rejected-clock-skew", "{f}");
    let skew = ep.last_skew().expect("skew measured");
    assert!((3590..=3610).contains(&skew), "{skew}");

    // A server whose rspauth is wrong.
    let bad = ntlm_server(Quirks {
        tamper: true,
        ..Quirks::default()
    });
    let addr = support::serve_tcp(bad, None).await;
    let mut conn = connect(addr, TransportKind::Tcp, None).await;
    let mut ep = endpoint(
        config("alice", "alice-pw", &[AuthScheme::Ntlm], "e4e4e4e4e4"),
        &conn,
    );
    let f = sign_in(&mut conn, &mut ep, &mut rng, &timers())
        .await
        .expect_err("bad signature");
    assert_eq!(f.label(), "bad-server-signature", "{f}");

    // Nobody listening on UDP: retransmissions, then a timeout.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let silent = sock.local_addr().expect("addr");
    let mut conn = connect(silent, TransportKind::Udp, None).await;
    let mut ep = endpoint(
        config("alice", "alice-pw", &[AuthScheme::Ntlm], "e5e5e5e5e5"),
        &conn,
    );
    let t = Timers {
        transaction: Duration::from_millis(300),
        ..timers()
    };
    let f = sign_in(&mut conn, &mut ep, &mut rng, &t)
        .await
        .expect_err("timeout");
    assert_eq!(f.label(), "timeout", "{f}");
}

fn kerberos_server(k: &kdc::TestKdc) -> Arc<Server> {
    let mut kc = sagw_kerberos::KerberosConfig::new(kdc::AES_FQDN);
    kc.keytab = Some(k.aes_keytab.clone());
    kc.replay_cache = Some(k.rcache());
    let acceptor = sagw_kerberos::KerberosAcceptor::new(kc).expect("acceptor");
    let core = SecurityCore::new(support::ntlm_digest_config(), Arc::new(support::store()))
        .with_kerberos(Box::new(MitKerberos::new(acceptor)), None);
    Server::new(core, Quirks::default())
}

#[tokio::test]
async fn kerberos_with_a_password_over_tcp_and_mutual_over_udp() {
    let Some(k) = kdc::kdc(kdc::KdcOptions::default()) else {
        return;
    };
    let server = kerberos_server(k);
    // The password path: kinit into a private ccache.
    let dir = sagw_client::kinit::CcacheDir::new().expect("ccache dir");
    let ccache = dir
        .kinit(
            &format!("{}@{}", kdc::ALICE, kdc::REALM),
            &Password::new(kdc::ALICE_PW),
        )
        .expect("kinit");
    for (kind, mutual) in [(TransportKind::Tcp, false), (TransportKind::Udp, true)] {
        let addr = match kind {
            TransportKind::Udp => support::serve_udp(server.clone()).await,
            _ => support::serve_tcp(server.clone(), None).await,
        };
        let mut conn = connect(addr, kind, None).await;
        let mut cfg = config("alice", "", &[AuthScheme::Kerberos], "f1f1f1f1f1");
        cfg.password = None;
        cfg.ccache = Some(ccache.clone());
        cfg.mutual = mutual;
        let mut ep = endpoint(cfg, &conn);
        full_exchange(&server, &mut conn, &mut ep).await;
        let reg = ep.registration().expect("registered");
        assert_eq!(reg.scheme, AuthScheme::Kerberos);
        assert!(
            reg.opaque.is_some(),
            "opaque learned from Authentication-Info"
        );
    }
    // A wrong password fails in kinit, with MIT's words.
    let err = dir
        .kinit(
            &format!("{}@{}", kdc::BOB, kdc::REALM),
            &Password::new("wrong"),
        )
        .expect_err("wrong password");
    assert!(err.to_string().contains("kinit"), "{err}");
}

#[tokio::test]
async fn kerberos_for_an_unknown_service_names_the_spn() {
    let Some(k) = kdc::kdc(kdc::KdcOptions::default()) else {
        return;
    };
    // The server advertises a targetname the KDC does not know; the client's ticket request fails
    // before anything reaches the acceptor, so a stub acceptor is enough.
    struct NoSuchService;
    impl sagw_auth::KerberosBackend for NoSuchService {
        fn targetname(&self) -> &str {
            "sip/nosuch.example.test"
        }
        fn accept(
            &self,
            _: &[u8],
        ) -> Result<sagw_auth::KerberosAccepted, sagw_auth::KerberosRejection> {
            panic!("no AP-REQ can exist for an unknown service")
        }
    }
    let core = SecurityCore::new(support::ntlm_digest_config(), Arc::new(support::store()))
        .with_kerberos(Box::new(NoSuchService), None);
    let server = Server::new(core, Quirks::default());
    let addr = support::serve_tcp(server, None).await;
    let ccache = k.kinit(kdc::ALICE, kdc::ALICE_PW, None);
    let mut conn = connect(addr, TransportKind::Tcp, None).await;
    let mut cfg = config("alice", "", &[AuthScheme::Kerberos], "f2f2f2f2f2");
    cfg.ccache = Some(ccache);
    let mut ep = endpoint(cfg, &conn);
    let mut rng = OsRng::new().expect("rng");
    let f = sign_in(&mut conn, &mut ep, &mut rng, &timers())
        .await
        .expect_err("unknown SPN");
    assert_eq!(f.label(), "kerberos", "{f}");
    assert!(f.to_string().contains("nosuch"), "{f}");
}
