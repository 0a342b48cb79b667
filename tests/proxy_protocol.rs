//! The PROXY protocol behind a load balancer (issue 14), over real sockets: a gateway whose TCP
//! and TLS listeners take headers from one balancer address (127.0.0.2; the whole of 127/8 is
//! loopback on Linux, so a test can connect from several addresses). The client's address from a
//! balancer's header must be the one the gateway uses: the Via `received`/`rport` the proxy core
//! writes, and the per-address connection cap the driver applies. A header from any other address
//! must not be believed, a malformed one closes the connection, and TLS works behind a header.
//! One test puts a real HAProxy (`send-proxy-v2`) in front of the gateway.

mod haproxy_support;
mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sagw_gateway::{Config, Running};
use support::{Msg, WAIT, scrape, unique};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const BALANCER: &str = "127.0.0.2";
const OTHER: &str = "127.0.0.3";

/// A gateway on 127.0.0.1 whose TCP and TLS listeners expect PROXY headers from `balancers`,
/// one connection per client address, authentication off.
async fn gateway(balancers: &str) -> Running {
    let dir = std::env::temp_dir().join(format!("sagw-pp-{}-{}", std::process::id(), unique()));
    let text = format!(
        r#"
[log]
level = "warn"
[listen]
udp = ""
tcp = "127.0.0.1:0"
tls = "127.0.0.1:0"
[listen.proxy_protocol.tcp]
from = [{balancers}]
[listen.proxy_protocol.tls]
from = [{balancers}]
[tls]
generated_dir = "{}"
handshake_timeout_secs = 1
[limits]
max_connections_per_ip = 1
[metrics]
listen = "127.0.0.1:0"
[auth]
enabled = false
"#,
        dir.display()
    );
    let settings = Config::parse(&text)
        .expect("test config parses")
        .validate()
        .expect("test config valid");
    sagw_gateway::start(settings).await.expect("gateway starts")
}

/// A TCP connection from `from` (any port) to `to`.
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().expect("socket");
    s.bind(format!("{from}:0").parse().expect("address"))
        .expect("bind a loopback source address");
    s.connect(to).await.expect("connect")
}

/// A PROXY protocol v2 header (PROXY command, TCP over IPv4) naming `client`.
fn v2_header(client: SocketAddr, to: SocketAddr) -> Vec<u8> {
    let (SocketAddr::V4(c), SocketAddr::V4(d)) = (client, to) else {
        panic!("IPv4 only here");
    };
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&c.ip().octets());
    h.extend_from_slice(&d.ip().octets());
    h.extend_from_slice(&c.port().to_be_bytes());
    h.extend_from_slice(&d.port().to_be_bytes());
    h
}

/// The v2 LOCAL command: the balancer's own connection (a health check).
fn v2_local() -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x20, 0x00, 0, 0]);
    h
}

/// An OPTIONS to the gateway whose Via names a private address and asks for `rport`: the answer's
/// Via says where the gateway believes the request came from.
fn options(to: SocketAddr, transport: &str) -> String {
    format!(
        "OPTIONS sip:{to} SIP/2.0\r\nVia: SIP/2.0/{transport} 10.99.0.1:5060;branch=z9hG4bKpp{n};rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:probe@example.com>;tag=p{n}\r\nTo: <sip:{to}>\r\nCall-ID: pp-{n}\r\n\
CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        n = unique()
    )
}

trait Wire: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Wire for T {}

/// Sends an OPTIONS and returns the answer's top Via (None when the connection ends or nothing
/// comes back within [`WAIT`]).
async fn answered_via(s: &mut dyn Wire, to: SocketAddr, transport: &str) -> Option<String> {
    s.write_all(options(to, transport).as_bytes()).await.ok()?;
    s.flush().await.ok()?;
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        while buf.starts_with(b"\r\n") {
            buf.drain(..2);
        }
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let m = Msg::parse(&buf[..end + 4])?;
            assert_eq!(m.status(), Some(200), "{}", m.start);
            return m.header("Via").map(str::to_owned);
        }
        match tokio::time::timeout_at(deadline, s.read(&mut tmp)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&tmp[..n]),
            _ => return None,
        }
    }
}

/// Reads until the gateway closes the connection: what it wrote meanwhile, or None when it did
/// not close it within [`WAIT`].
async fn until_closed(s: &mut dyn Wire) -> Option<String> {
    let mut all = Vec::new();
    let mut tmp = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut tmp)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(String::from_utf8_lossy(&all).into_owned()),
            Ok(Ok(n)) => all.extend_from_slice(&tmp[..n]),
            Err(_) => return None,
        }
    }
}

fn received(via: &str) -> (String, String) {
    let param = |name: &str| {
        via.split(';')
            .find_map(|p| p.trim().strip_prefix(name)?.strip_prefix('='))
            .unwrap_or_default()
            .to_owned()
    };
    (param("received"), param("rport"))
}

/// The value of one series on the metrics page (0 when absent), once it is at least `min` (or
/// after [`WAIT`]): counters move a moment after the connection closes.
async fn series_at_least(gw: &Running, name: &str, min: u64) -> u64 {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let page = scrape(gw).await;
        let n = page
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0);
        if n >= min || tokio::time::Instant::now() >= deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_balancers_header_names_the_client_for_the_core_and_the_per_address_cap() {
    let gw = gateway("\"127.0.0.2\"").await;
    let tcp = gw.tcp.expect("tcp");
    let client: SocketAddr = "203.0.113.9:40001".parse().unwrap();

    // The core sees the client from the header: received and rport are the header's.
    let mut a = connect_from(BALANCER, tcp).await;
    a.write_all(&v2_header(client, tcp)).await.unwrap();
    let via = answered_via(&mut a, tcp, "TCP").await.expect("answered");
    assert_eq!(
        received(&via),
        ("203.0.113.9".into(), "40001".into()),
        "{via}"
    );

    // The per-address cap (1 here) counts the client, not the balancer: the same client again
    // through the balancer is refused while `a` lives...
    let mut again = connect_from(BALANCER, tcp).await;
    again
        .write_all(&v2_header("203.0.113.9:40002".parse().unwrap(), tcp))
        .await
        .unwrap();
    let said = until_closed(&mut again).await.expect("refused: closed");
    assert!(said.is_empty(), "refused without an answer: {said}");
    assert!(
        series_at_least(
            &gw,
            "sagw_limit_hits_total{limit=\"connections_per_ip\"}",
            1
        )
        .await
            >= 1
    );
    // ...while another client behind the same balancer is served beside it, in v1 this time.
    let mut b = connect_from(BALANCER, tcp).await;
    b.write_all(b"PROXY TCP4 198.51.100.4 127.0.0.1 5555 5060\r\n")
        .await
        .unwrap();
    let via = answered_via(&mut b, tcp, "TCP").await.expect("answered");
    assert_eq!(received(&via), ("198.51.100.4".into(), "5555".into()));
    // The balancer's own connection (LOCAL, e.g. a health check) keeps the socket's address.
    let mut local = connect_from(BALANCER, tcp).await;
    let me = local.local_addr().unwrap();
    local.write_all(&v2_local()).await.unwrap();
    let via = answered_via(&mut local, tcp, "TCP")
        .await
        .expect("answered");
    assert_eq!(
        received(&via),
        (BALANCER.into(), me.port().to_string()),
        "{via}"
    );
    // `a` is still served over its connection.
    let via = answered_via(&mut a, tcp, "TCP")
        .await
        .expect("a still served");
    assert!(via.contains("received=203.0.113.9"), "{via}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_from_any_other_address_is_not_believed() {
    let gw = gateway("\"127.0.0.2\"").await;
    let tcp = gw.tcp.expect("tcp");
    let spoofed: SocketAddr = "203.0.113.50:4000".parse().unwrap();
    // A direct client on the same listener is served as itself.
    let mut direct = connect_from(OTHER, tcp).await;
    let me = direct.local_addr().unwrap();
    let via = answered_via(&mut direct, tcp, "TCP")
        .await
        .expect("a direct client is served");
    assert_eq!(received(&via), (OTHER.into(), me.port().to_string()));
    drop(direct);
    // A header from a non-balancer is not read as one: its bytes are the client's, unframeable
    // as SIP, and the connection is closed without the request being answered as the
    // address it names (binary v2 and text v1).
    let forgeries = [
        ("127.0.0.4", v2_header(spoofed, tcp)),
        (
            "127.0.0.6",
            b"PROXY TCP4 203.0.113.50 127.0.0.1 4000 5060\r\n".to_vec(),
        ),
    ];
    for (i, (from, header)) in forgeries.into_iter().enumerate() {
        let mut forged = connect_from(from, tcp).await;
        forged.write_all(&header).await.unwrap();
        forged
            .write_all(options(tcp, "TCP").as_bytes())
            .await
            .unwrap();
        let said = until_closed(&mut forged).await.expect("closed");
        assert!(!said.contains("SIP/2.0 200"), "answered: {said}");
        assert!(!said.contains("203.0.113.50"), "believed: {said}");
        // Read as SIP from a direct client: unframeable, counted as a parse error.
        assert!(
            series_at_least(
                &gw,
                "sagw_parse_errors_total{transport=\"tcp\"}",
                i as u64 + 1
            )
            .await
                > i as u64,
            "forgery {i} closed as unframeable SIP"
        );
    }
    // Also on the TLS listener: the header is not a ClientHello, the handshake fails.
    let tls = gw.tls.expect("tls");
    let mut forged = connect_from("127.0.0.7", tls).await;
    forged.write_all(&v2_header(spoofed, tls)).await.unwrap();
    let _ = until_closed(&mut forged).await.expect("closed");
    assert!(
        series_at_least(
            &gw,
            "sagw_limit_hits_total{limit=\"tls_handshake_failed\"}",
            1
        )
        .await
            >= 1
    );
    // And the spoofed address was never admitted: it holds no slot under the per-address cap,
    // so a real connection naming it through the balancer is served.
    let mut real = connect_from(BALANCER, tcp).await;
    real.write_all(&v2_header(spoofed, tcp)).await.unwrap();
    let via = answered_via(&mut real, tcp, "TCP").await.expect("answered");
    assert!(via.contains("received=203.0.113.50"), "{via}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_or_late_header_from_a_balancer_closes_the_connection() {
    let gw = gateway("\"127.0.0.0/30\"").await;
    let tcp = gw.tcp.expect("tcp");
    let mut bad_version = v2_header("192.0.2.1:1".parse().unwrap(), tcp);
    bad_version[12] = 0x31;
    let plain = options(tcp, "TCP");
    let cases: [&[u8]; 3] = [
        // No header at all: a balancer that was not told to send one.
        plain.as_bytes(),
        &bad_version,
        b"PROXY TCP4 not-an-address 127.0.0.1 1 5060\r\n",
    ];
    for (i, bytes) in cases.iter().enumerate() {
        let mut s = connect_from(BALANCER, tcp).await;
        s.write_all(bytes).await.unwrap();
        let said = until_closed(&mut s)
            .await
            .unwrap_or_else(|| panic!("case {i}: not closed"));
        assert!(said.is_empty(), "case {i}: answered {said}");
        assert!(
            series_at_least(
                &gw,
                "sagw_limit_hits_total{limit=\"proxy_protocol_invalid\"}",
                i as u64 + 1
            )
            .await
                > i as u64,
            "case {i} counted"
        );
    }
    // Half a header, then nothing: closed by the set-up deadline (1 s here).
    let mut s = connect_from(BALANCER, tcp).await;
    s.write_all(&v2_header("192.0.2.1:1".parse().unwrap(), tcp)[..20])
        .await
        .unwrap();
    assert!(
        until_closed(&mut s).await.is_some(),
        "closed at the deadline"
    );
    assert!(
        series_at_least(
            &gw,
            "sagw_limit_hits_total{limit=\"proxy_protocol_timeout\"}",
            1
        )
        .await
            >= 1
    );
}

fn tls_client(gw: &Running) -> tokio_rustls::TlsConnector {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let cert = &gw.cert.as_ref().expect("certificate").cert_path;
    for c in rustls_pki_types::CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_behind_a_header() {
    let gw = gateway("\"127.0.0.2\"").await;
    let tls = gw.tls.expect("tls");
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    // The header comes before the ClientHello: the balancer passes TLS through.
    let mut tcp = connect_from(BALANCER, tls).await;
    tcp.write_all(&v2_header("203.0.113.77:6000".parse().unwrap(), tls))
        .await
        .unwrap();
    let mut s = tls_client(&gw)
        .connect(name.clone(), tcp)
        .await
        .expect("TLS behind the header");
    let via = answered_via(&mut s, tls, "TLS").await.expect("answered");
    assert_eq!(received(&via), ("203.0.113.77".into(), "6000".into()));
    // A direct TLS client on the same listener needs no header.
    let tcp = connect_from(OTHER, tls).await;
    let me = tcp.local_addr().unwrap();
    let mut s = tls_client(&gw)
        .connect(name, tcp)
        .await
        .expect("direct TLS");
    let via = answered_via(&mut s, tls, "TLS").await.expect("answered");
    assert_eq!(received(&via), (OTHER.into(), me.port().to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_real_haproxy_with_send_proxy_v2() {
    let gw = gateway("\"127.0.0.2\"").await;
    let Some(haproxy) = haproxy_support::HaProxy::start(gw.tcp.expect("tcp"), BALANCER) else {
        return;
    };
    let client = "127.0.0.5";
    let mut s = connect_from(client, haproxy.addr).await;
    let me = s.local_addr().unwrap();
    // Addressed to the gateway (the balancer's address is not one of its names here).
    let via = answered_via(&mut s, gw.tcp.expect("tcp"), "TCP")
        .await
        .unwrap_or_else(|| panic!("no answer through HAProxy; its log:\n{}", haproxy.log()));
    // HAProxy connected from 127.0.0.2; the gateway saw the client behind it.
    assert_eq!(
        received(&via),
        (client.into(), me.port().to_string()),
        "{via}"
    );
    // A client that sends a header of its own through HAProxy: it comes after HAProxy's, as the
    // client's bytes, and is not believed.
    let gw_tcp = gw.tcp.expect("tcp");
    let mut forged = connect_from("127.0.0.6", haproxy.addr).await;
    forged
        .write_all(&v2_header("203.0.113.66:4000".parse().unwrap(), gw_tcp))
        .await
        .unwrap();
    forged
        .write_all(options(gw_tcp, "TCP").as_bytes())
        .await
        .unwrap();
    let said = until_closed(&mut forged).await.expect("closed");
    assert!(!said.contains("SIP/2.0 200"), "answered: {said}");
    assert!(!said.contains("203.0.113.66"), "believed: {said}");
}
