//! Next hops over real sockets: RFC 3263 resolution against a local DNS server started by the test
//! (`dnsmasq`: SRV priorities with fail-over, a name in a Route), and mutual TLS to a next hop that
//! requires a client certificate and is verified by its name (a rustls server in the test, its
//! certificates made with rcgen).
//!
//! Without dnsmasq installed the tests skip loudly (with CI=true they fail).

mod dns_support;
mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sagw_gateway::{Config, Running};
use sagw_sip::{Frame, StreamFramer};
use support::{Client, Kind, unique};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(5);

/// A SIP server behind the gateway: answers every request but ACK with 200 and
/// `Server: <label>`, and notes what it received.
struct SipServer {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
    /// Client certificates the TLS server was shown, one entry per connection (true: one was).
    client_certs: Arc<Mutex<Vec<bool>>>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    label: &'static str,
    seen: Arc<Mutex<Vec<String>>>,
) {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut framer = StreamFramer::new(sagw_sip::Limits::default());
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let Ok(n) = rd.read(&mut buf).await else {
            return;
        };
        if n == 0 {
            return;
        }
        framer.push(&buf[..n]);
        while let Ok(Some(frame)) = framer.next_frame() {
            let Frame::Message(m) = frame else { continue };
            let Some(method) = m.method().map(str::to_owned) else {
                continue;
            };
            seen.lock().unwrap().push(method.clone());
            if method == "ACK" {
                continue;
            }
            let resp = sagw_proxy::build_response(
                &m,
                200,
                "OK",
                Some("srv"),
                &[("Server", label.to_owned())],
            )
            .unwrap();
            if wr.write_all(&resp.to_bytes()).await.is_err() {
                return;
            }
        }
    }
}

impl SipServer {
    async fn tcp(label: &'static str) -> SipServer {
        Self::start(label, None).await
    }

    async fn start(label: &'static str, tls: Option<tokio_rustls::TlsAcceptor>) -> SipServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let client_certs = Arc::new(Mutex::new(Vec::new()));
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::new(Mutex::new(Vec::new()));
        let (s, c, t) = (seen.clone(), client_certs.clone(), tasks.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (s, c) = (s.clone(), c.clone());
                let tls = tls.clone();
                let conn = tokio::spawn(async move {
                    match tls {
                        None => serve(stream, label, s).await,
                        Some(acceptor) => {
                            // A handshake that fails (no or a wrong client certificate) ends
                            // here: the gateway's request never reaches `serve`.
                            let Ok(tls) = acceptor.accept(stream).await else {
                                return;
                            };
                            let shown = tls.get_ref().1.peer_certificates().is_some();
                            c.lock().unwrap().push(shown);
                            serve(tls, label, s).await;
                        }
                    }
                });
                t.lock().unwrap().push(conn);
            }
        });
        tasks.lock().unwrap().push(accept);
        SipServer {
            addr,
            seen,
            client_certs,
            tasks,
        }
    }

    /// Closes every connection and goes on listening (the accept loop is the first task).
    fn close_connections(&self) {
        let mut tasks = self.tasks.lock().unwrap();
        for t in tasks.drain(1..) {
            t.abort();
        }
    }

    /// Stops listening and closes every connection: a dead server (connections refused).
    fn kill(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for SipServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A gateway without authentication whose resolver asks `dns`; `proxy` and `edit` complete it.
async fn gateway(dns: SocketAddr, proxy: &str, edit: impl FnOnce(&mut Config)) -> Running {
    let dir = std::env::temp_dir().join(format!("sagw-nh-{}-{}", std::process::id(), unique()));
    let text = format!(
        r#"
[log]
level = "warn"
[listen]
udp = "127.0.0.1:0"
tcp = "127.0.0.1:0"
tls = ""
[tls]
generated_dir = "{}"
handshake_timeout_secs = 2
[timers]
t1_ms = 50
t2_ms = 400
fail_over_ms = 300
[metrics]
listen = "127.0.0.1:0"
[dns]
nameservers = ["{dns}"]
[proxy]
{proxy}
[auth]
enabled = false
"#,
        dir.display()
    );
    let mut cfg = Config::parse(&text).expect("test config parses");
    edit(&mut cfg);
    let settings = cfg.validate().expect("test config valid");
    sagw_gateway::start(settings).await.expect("gateway starts")
}

/// A MESSAGE from `c`, with `route` as its Route header when given.
fn message(c: &Client, route: Option<&str>) -> String {
    let n = unique();
    let route = route
        .map(|r| format!("Route: <{r}>\r\n"))
        .unwrap_or_default();
    format!(
        "MESSAGE sip:bob@example.com SIP/2.0\r\nVia: {}\r\n{route}Max-Forwards: 70\r\n\
From: <sip:alice@example.com>;tag=a{n}\r\nTo: <sip:bob@example.com>\r\nCall-ID: nh-{n}\r\n\
CSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n",
        c.via(&format!("z9hG4bKnh{n}"))
    )
}

/// Sends a MESSAGE and returns the final answer, within `limit`.
async fn final_answer(c: &mut Client, route: Option<&str>, limit: Duration) -> support::Msg {
    let m = message(c, route);
    c.send(&m).await;
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let r = c
            .recv_within(left)
            .await
            .unwrap_or_else(|| panic!("no final answer within {limit:?}"));
        if r.status() >= Some(200) {
            return r;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_priorities_fail_over_to_the_lower_priority_hop() {
    let a = SipServer::tcp("hop-a").await;
    let b = SipServer::tcp("hop-b").await;
    // The pool as DNS describes it: a first (priority 10), b as the backup (priority 20).
    let Some(dns) = dns_support::dnsmasq(&[
        format!(
            "--srv-host=_sip._tcp.pool.test,a.pool.test,{},10,0",
            a.addr.port()
        ),
        format!(
            "--srv-host=_sip._tcp.pool.test,b.pool.test,{},20,0",
            b.addr.port()
        ),
        "--host-record=a.pool.test,127.0.0.1".into(),
        "--host-record=b.pool.test,127.0.0.1".into(),
    ]) else {
        return;
    };
    let gw = gateway(
        dns.addr,
        "next_hops = [\"sip:pool.test;transport=tcp\"]",
        |_| {},
    )
    .await;
    let hops: Vec<String> = sagw_gateway::lifecycle::HopView::hops(&*gw.hops)
        .into_iter()
        .map(|h| h.addr)
        .collect();
    assert_eq!(
        hops,
        [a.addr.to_string(), b.addr.to_string()],
        "the SRV records, in priority order"
    );
    let mut alice = Client::connect(&gw, Kind::Tcp, "alice").await;
    // Both up: the higher priority serves.
    let r = final_answer(&mut alice, None, WAIT).await;
    assert_eq!(r.status(), Some(200), "{r:?}");
    assert_eq!(r.header("Server"), Some("hop-a"));
    // a dies: requests reach b.
    a.kill();
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..2 {
        let r = final_answer(&mut alice, None, WAIT).await;
        assert_eq!(r.status(), Some(200), "{r:?}");
        assert_eq!(r.header("Server"), Some("hop-b"));
    }
    assert_eq!(a.seen(), ["MESSAGE"]);
    assert_eq!(b.seen(), ["MESSAGE", "MESSAGE"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_in_a_route_reaches_the_server_it_resolves_to() {
    let hop = SipServer::tcp("next-hop").await;
    let fe = SipServer::tcp("front-end-1").await;
    let Some(dns) = dns_support::dnsmasq(&["--host-record=fe1.pool.test,127.0.0.1".into()]) else {
        return;
    };
    let gw = gateway(
        dns.addr,
        &format!(
            "next_hops = [\"tcp:{}\"]\nclient_routes = [\"127.0.0.1\"]",
            hop.addr
        ),
        |_| {},
    )
    .await;
    let mut alice = Client::connect(&gw, Kind::Tcp, "alice").await;
    // A Record-Route naming one front-end server by name, as a pool writes it.
    let route = format!("sip:fe1.pool.test:{};transport=tcp;lr", fe.addr.port());
    let r = final_answer(&mut alice, Some(&route), WAIT).await;
    assert_eq!(r.status(), Some(200), "{r:?}");
    assert_eq!(r.header("Server"), Some("front-end-1"));
    assert_eq!(fe.seen(), ["MESSAGE"]);
    assert!(hop.seen().is_empty(), "not sent to the next hop instead");
    // A name that does not resolve is answered, not sent to the next hop.
    let r = final_answer(
        &mut alice,
        Some("sip:gone.pool.test;transport=tcp;lr"),
        WAIT,
    )
    .await;
    assert_eq!(r.status(), Some(503), "{r:?}");
    assert!(hop.seen().is_empty());
}

/// A CA, a server certificate for `server_name` and a client certificate, in `dir`.
struct Pki {
    ca: std::path::PathBuf,
    server_cert: Vec<CertificateDer<'static>>,
    server_key: PrivateKeyDer<'static>,
    client_cert: std::path::PathBuf,
    client_key: std::path::PathBuf,
    roots: rustls::RootCertStore,
}

fn pki(dir: &std::path::Path, server_name: &str) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    std::fs::create_dir_all(dir).unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "sagw test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec![server_name.to_owned()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let mut client_params = CertificateParams::new(vec!["edge.example.com".to_owned()]).unwrap();
    client_params
        .distinguished_name
        .push(DnType::CommonName, "edge.example.com");
    let client = client_params.signed_by(&client_key, &ca).unwrap();
    let p = Pki {
        ca: dir.join("ca.pem"),
        server_cert: vec![server.der().clone()],
        server_key: PrivateKeyDer::from_pem_slice(server_key.serialize_pem().as_bytes()).unwrap(),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client-key.pem"),
        roots: {
            let mut r = rustls::RootCertStore::empty();
            r.add(ca.der().clone()).unwrap();
            r
        },
    };
    std::fs::write(&p.ca, ca.pem()).unwrap();
    std::fs::write(&p.client_cert, client.pem()).unwrap();
    {
        // A private key: other users may not read it (the gateway refuses it otherwise).
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&p.client_key)
            .unwrap();
        std::io::Write::write_all(&mut f, client_key.serialize_pem().as_bytes()).unwrap();
    }
    p
}

/// A TLS SIP server that requires a client certificate issued by the test CA.
async fn mtls_server(p: &Pki) -> SipServer {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(p.roots.clone()),
        provider.clone(),
    )
    .build()
    .unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(p.server_cert.clone(), p.server_key.clone_key())
        .unwrap();
    SipServer::start(
        "pool-mtls",
        Some(tokio_rustls::TlsAcceptor::from(Arc::new(cfg))),
    )
    .await
}

/// The test PKI's CA for the next hops, and its client certificate for the gateway to present.
fn trust_and_present(c: &mut Config, p: &Pki) {
    c.tls.next_hop_ca = p.ca.display().to_string();
    c.tls.client_cert = p.client_cert.display().to_string();
    c.tls.client_key = p.client_key.display().to_string();
}

/// A TLS next hop found through SRV is verified against the domain it was configured as (RFC
/// 5922 §4.1), not the SRV target DNS returned: whoever can answer DNS queries must not pick the
/// name the gateway checks (one it holds a certificate for). Before, `sips:pool.test` with SRV
/// `fe1.pool.test` checked `fe1.pool.test`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_next_hop_found_by_srv_is_verified_as_the_configured_domain() {
    for (cert_for, expect) in [("pool.test", 200), ("fe1.pool.test", 503)] {
        let dir =
            std::env::temp_dir().join(format!("sagw-srv-{}-{}", std::process::id(), unique()));
        let p = pki(&dir, cert_for);
        let server = mtls_server(&p).await;
        let Some(dns) = dns_support::dnsmasq(&[
            format!(
                "--srv-host=_sips._tcp.pool.test,fe1.pool.test,{},10,0",
                server.addr.port()
            ),
            "--host-record=fe1.pool.test,127.0.0.1".into(),
        ]) else {
            return;
        };
        let gw = gateway(dns.addr, "next_hops = [\"sips:pool.test\"]", |c| {
            trust_and_present(c, &p)
        })
        .await;
        let mut alice = Client::connect(&gw, Kind::Tcp, "alice").await;
        let r = final_answer(&mut alice, None, WAIT).await;
        assert_eq!(
            r.status(),
            Some(expect),
            "a server certificate for {cert_for}: {r:?}"
        );
        drop(gw);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// A signed-in client's Route to another name with an address record at the next hop's address
/// (a name the client owns) does not change the name the next hop is verified by. Before, the
/// name the Route resolved to replaced the configured one for that address, so the next
/// connection to the next hop verified (and sent as SNI) the client's name: the real server
/// failed, and a server holding a certificate for the client's name would have passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_route_name_does_not_change_how_the_next_hop_is_verified() {
    let dir = std::env::temp_dir().join(format!("sagw-mtls-{}-{}", std::process::id(), unique()));
    let p = pki(&dir, "pool.test");
    let server = mtls_server(&p).await;
    // Answers that live an hour, as real ones do: the next hops are not resolved again (which
    // wrote the configured name back) during the test.
    let Some(dns) = dns_support::dnsmasq(&[
        "--host-record=pool.test,127.0.0.1".into(),
        "--host-record=other.test,127.0.0.1".into(),
        "--local-ttl=3600".into(),
    ]) else {
        return;
    };
    let port = server.addr.port();
    let gw = gateway(
        dns.addr,
        &format!("next_hops = [\"tls:pool.test:{port}\"]"),
        |c| trust_and_present(c, &p),
    )
    .await;
    let mut alice = Client::connect(&gw, Kind::Tcp, "alice").await;
    let r = final_answer(&mut alice, None, WAIT).await;
    assert_eq!(r.status(), Some(200), "{r:?}");
    let route = format!("sip:other.test:{port};transport=tls;lr");
    let _ = final_answer(&mut alice, Some(&route), WAIT).await;
    // The next hop's connections close; the next request opens a new one.
    server.close_connections();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = final_answer(&mut alice, None, WAIT).await;
    assert_eq!(
        r.status(),
        Some(200),
        "the next hop was verified by the client's name: {r:?}"
    );
    drop(gw);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_to_a_next_hop_verified_by_its_name() {
    let dir = std::env::temp_dir().join(format!("sagw-mtls-{}-{}", std::process::id(), unique()));
    let p = pki(&dir, "pool.test");
    let server = mtls_server(&p).await;
    let Some(dns) = dns_support::dnsmasq(&[
        "--host-record=pool.test,127.0.0.1".into(),
        "--host-record=other.test,127.0.0.1".into(),
    ]) else {
        return;
    };
    let port = server.addr.port();
    let with_client_cert = |c: &mut Config| trust_and_present(c, &p);

    // The next hop by its name: verified as pool.test, our client certificate accepted.
    let gw = gateway(
        dns.addr,
        &format!("next_hops = [\"tls:pool.test:{port}\"]"),
        with_client_cert,
    )
    .await;
    let mut alice = Client::connect(&gw, Kind::Tcp, "alice").await;
    let r = final_answer(&mut alice, None, WAIT).await;
    assert_eq!(r.status(), Some(200), "{r:?}");
    assert_eq!(r.header("Server"), Some("pool-mtls"));
    assert_eq!(*server.client_certs.lock().unwrap(), [true]);
    drop(gw);

    // Without a client certificate the server refuses the handshake: 503, nothing delivered.
    let gw = gateway(
        dns.addr,
        &format!("next_hops = [\"tls:pool.test:{port}\"]"),
        |c| c.tls.next_hop_ca = p.ca.display().to_string(),
    )
    .await;
    let mut alice = Client::connect(&gw, Kind::Tcp, "alice").await;
    let r = final_answer(&mut alice, None, WAIT).await;
    assert_eq!(r.status(), Some(503), "{r:?}");
    drop(gw);

    // The same server under another name: its certificate is for pool.test, so the gateway
    // refuses it (before sending anything).
    let gw = gateway(
        dns.addr,
        &format!("next_hops = [\"tls:other.test:{port}\"]"),
        with_client_cert,
    )
    .await;
    let mut alice = Client::connect(&gw, Kind::Tcp, "alice").await;
    let r = final_answer(&mut alice, None, WAIT).await;
    assert_eq!(r.status(), Some(503), "{r:?}");
    drop(gw);

    // A per-hop setting: the name to verify given for that host (here: right again).
    let gw = gateway(
        dns.addr,
        &format!("next_hops = [\"tls:other.test:{port}\"]"),
        |c| {
            with_client_cert(c);
            c.tls.next_hop = vec![sagw_gateway::hop_config::NextHopTlsSection {
                host: "other.test".into(),
                server_name: "pool.test".into(),
                ..Default::default()
            }];
        },
    )
    .await;
    let mut alice = Client::connect(&gw, Kind::Tcp, "alice").await;
    let r = final_answer(&mut alice, None, WAIT).await;
    assert_eq!(r.status(), Some(200), "{r:?}");
    assert_eq!(
        server.seen(),
        ["MESSAGE", "MESSAGE"],
        "only the verified ones arrived"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
