//! Raw SIP test clients over real sockets. Messages are written as text and parsed here with a
//! deliberately small, independent parser: the tests must not share the gateway's code paths.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sagw_gateway::{Config, Running};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

pub const WAIT: Duration = Duration::from_secs(5);

static COUNTER: AtomicU64 = AtomicU64::new(1);

/// Runs the calling test `test` (its full name) again in a network namespace of its own whose
/// loopback has a real network's MTU, and returns true in that run (go on with the test) and
/// false in the calling one once that run passed. Why: on loopback's 64 KiB MTU a TCP receiver
/// opens its window only when its queue is nearly empty, so a sender that never pauses is paused
/// all the same, and what a flood does to the gateway on a real network does not happen. Needs
/// root (`unshare --net`) and `ip` (iproute2, scripts/setup-debian.sh).
pub fn rerun_in_netns(test: &str, mtu: u32) -> bool {
    const IN_NETNS: &str = "SAGW_TEST_IN_NETNS";
    if std::env::var_os(IN_NETNS).is_some() {
        return true;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let status = std::process::Command::new("unshare")
        .args(["--net", "--", "sh", "-c"])
        .arg(format!(
            "ip link set lo mtu {mtu} up && exec \"$0\" --exact {test} --test-threads 1"
        ))
        .arg(&exe)
        .env(IN_NETNS, "1")
        .status()
        .expect("unshare (util-linux) runs");
    assert!(
        status.success(),
        "{test} failed in a network namespace whose loopback has a {mtu}-byte MTU ({status}; \
         its output is above; `unshare --net` needs root)"
    );
    false
}

pub fn unique() -> u64 {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// A gateway on ephemeral loopback ports with short timers; `extra` is appended TOML.
pub async fn gateway(extra: &str) -> Running {
    gateway_with_connections(extra, 1000).await
}

/// [`gateway`] with a connection limit.
pub async fn gateway_with_connections(extra: &str, max_conn: usize) -> Running {
    let dir = std::env::temp_dir().join(format!("sagw-it-{}-{}", std::process::id(), unique()));
    let text = format!(
        r#"
[log]
level = "warn"
[listen]
udp = "127.0.0.1:0"
tcp = "127.0.0.1:0"
tls = "127.0.0.1:0"
[tls]
generated_dir = "{}"
handshake_timeout_secs = 1
[timers]
t1_ms = 50
t2_ms = 400
fail_over_ms = 300
[limits]
max_message_bytes = 4096
idle_timeout_secs = 2
message_timeout_secs = 1
max_connections = {max_conn}
[metrics]
listen = "127.0.0.1:0"
{extra}
{auth}
"#,
        dir.display(),
        // These tests are about the proxy; authentication has its own (tests/auth.rs).
        auth = if extra.contains("[auth]") {
            ""
        } else {
            "[auth]\nenabled = false"
        },
    );
    // `extra` may only add sections not written above (TOML has no table merging).
    let cfg = Config::parse(&text).expect("test config parses");
    let settings = cfg.validate().expect("test config valid");
    sagw_gateway::start(settings).await.expect("gateway starts")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Udp,
    Tcp,
    Tls,
}

impl Kind {
    pub fn via(self) -> &'static str {
        match self {
            Kind::Udp => "UDP",
            Kind::Tcp => "TCP",
            Kind::Tls => "TLS",
        }
    }
    pub fn param(self) -> &'static str {
        match self {
            Kind::Udp => "udp",
            Kind::Tcp => "tcp",
            Kind::Tls => "tls",
        }
    }
}

/// A parsed message (test-side).
#[derive(Debug, Clone)]
pub struct Msg {
    pub start: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Msg {
    pub fn parse(data: &[u8]) -> Option<Msg> {
        let text = std::str::from_utf8(data).ok()?;
        let end = text.find("\r\n\r\n")?;
        let mut lines = text[..end].split("\r\n");
        let start = lines.next()?.to_owned();
        let headers = lines
            .map(|l| {
                let (n, v) = l.split_once(':').unwrap_or((l, ""));
                (n.trim().to_owned(), v.trim().to_owned())
            })
            .collect();
        Some(Msg {
            start,
            headers,
            body: data[end + 4..].to_vec(),
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(", ").map(str::to_owned).collect::<Vec<_>>())
            .collect()
    }

    pub fn status(&self) -> Option<u16> {
        self.start
            .strip_prefix("SIP/2.0 ")
            .and_then(|r| r.get(..3))
            .and_then(|c| c.parse().ok())
    }

    pub fn method(&self) -> Option<&str> {
        (!self.start.starts_with("SIP/")).then(|| self.start.split(' ').next().unwrap_or(""))
    }

    pub fn cseq_method(&self) -> String {
        self.header("CSeq")
            .and_then(|c| c.split_whitespace().nth(1))
            .unwrap_or("")
            .to_owned()
    }

    /// A response to this request, as a UA would write it.
    pub fn reply(&self, code: u16, reason: &str, to_tag: &str, extra: &str) -> String {
        let mut s = format!("SIP/2.0 {code} {reason}\r\n");
        for (n, v) in &self.headers {
            if n.eq_ignore_ascii_case("Via") || n.eq_ignore_ascii_case("Record-Route") {
                s.push_str(&format!("{n}: {v}\r\n"));
            }
        }
        s.push_str(&format!("From: {}\r\n", self.header("From").unwrap_or("")));
        let to = self.header("To").unwrap_or("");
        if to.contains(";tag=") || code == 100 {
            s.push_str(&format!("To: {to}\r\n"));
        } else {
            s.push_str(&format!("To: {to};tag={to_tag}\r\n"));
        }
        s.push_str(&format!(
            "Call-ID: {}\r\n",
            self.header("Call-ID").unwrap_or("")
        ));
        s.push_str(&format!("CSeq: {}\r\n", self.header("CSeq").unwrap_or("")));
        s.push_str(extra);
        s.push_str("Content-Length: 0\r\n\r\n");
        s
    }
}

enum Conn {
    Udp(UdpSocket, SocketAddr),
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// A raw SIP user agent on one socket.
pub struct Client {
    conn: Conn,
    pub kind: Kind,
    pub user: String,
    pub local: SocketAddr,
    /// The gateway's address for this client's transport.
    pub server: SocketAddr,
    buf: Vec<u8>,
}

pub fn tls_client_config(
    cert: &Path,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

pub async fn tls_connect(
    gw: &Running,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let cfg = tls_client_config(&gw.cert.as_ref().unwrap().cert_path, versions);
    let tcp = TcpStream::connect(gw.tls.unwrap()).await?;
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1")
        .unwrap()
        .to_owned();
    tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
}

impl Client {
    pub async fn connect(gw: &Running, kind: Kind, user: &str) -> Client {
        let (conn, local) = match kind {
            Kind::Udp => {
                let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
                let local = s.local_addr().unwrap();
                (Conn::Udp(s, gw.udp.unwrap()), local)
            }
            Kind::Tcp => {
                let s = TcpStream::connect(gw.tcp.unwrap()).await.unwrap();
                let local = s.local_addr().unwrap();
                (Conn::Tcp(s), local)
            }
            Kind::Tls => {
                let s = tls_connect(gw, &[&rustls::version::TLS13, &rustls::version::TLS12])
                    .await
                    .unwrap();
                let local = s.get_ref().0.local_addr().unwrap();
                (Conn::Tls(Box::new(s)), local)
            }
        };
        let server = match kind {
            Kind::Udp => gw.udp.unwrap(),
            Kind::Tcp => gw.tcp.unwrap(),
            Kind::Tls => gw.tls.unwrap(),
        };
        Client {
            conn,
            kind,
            user: user.to_owned(),
            local,
            server,
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, text: &str) {
        self.send_bytes(text.as_bytes()).await;
    }

    pub async fn send_bytes(&mut self, b: &[u8]) {
        match &mut self.conn {
            Conn::Udp(s, to) => {
                s.send_to(b, *to).await.unwrap();
            }
            Conn::Tcp(s) => s.write_all(b).await.unwrap(),
            Conn::Tls(s) => {
                s.write_all(b).await.unwrap();
                s.flush().await.unwrap();
            }
        }
    }

    async fn read_more(&mut self) -> std::io::Result<usize> {
        let mut tmp = vec![0u8; 65536];
        let n = match &mut self.conn {
            Conn::Udp(s, _) => s.recv_from(&mut tmp).await?.0,
            Conn::Tcp(s) => s.read(&mut tmp).await?,
            Conn::Tls(s) => s.read(&mut tmp).await?,
        };
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(n)
    }

    fn take_frame(&mut self) -> Option<Vec<u8>> {
        while self.buf.starts_with(b"\r\n") {
            self.buf.drain(..2);
        }
        let end = self.buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let head = String::from_utf8_lossy(&self.buf[..end]).to_string();
        let cl = head
            .split("\r\n")
            .find_map(|l| {
                let (n, v) = l.split_once(':')?;
                (n.trim().eq_ignore_ascii_case("content-length") || n.trim() == "l")
                    .then(|| v.trim().parse::<usize>().ok())?
            })
            .unwrap_or(0);
        if self.buf.len() < end + cl {
            return None;
        }
        Some(self.buf.drain(..end + cl).collect())
    }

    /// Read the RFC 5626 pong (a single CRLF) that must come next.
    pub async fn expect_pong(&mut self) {
        while self.buf.len() < 2 {
            let n = tokio::time::timeout(WAIT, self.read_more())
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "closed instead of pong");
        }
        assert_eq!(&self.buf[..2], b"\r\n", "pong");
        self.buf.drain(..2);
    }

    /// The next message, or None on timeout / EOF.
    pub async fn recv_within(&mut self, limit: Duration) -> Option<Msg> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(f) = self.take_frame() {
                return Msg::parse(&f);
            }
            match tokio::time::timeout_at(deadline, self.read_more()).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return None,
            }
        }
    }

    pub async fn recv(&mut self) -> Msg {
        self.recv_within(WAIT)
            .await
            .unwrap_or_else(|| panic!("{}: no message within {WAIT:?}", self.user))
    }

    /// Next message that is not a 100 Trying (and not a retransmission filter: UDP tests may
    /// see retransmissions, which callers skip with this too).
    pub async fn recv_where(&mut self, what: &str, f: impl Fn(&Msg) -> bool) -> Msg {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv_within(left).await {
                Some(m) if f(&m) => return m,
                Some(_) => continue,
                None => panic!("{}: no {what} within {WAIT:?}", self.user),
            }
        }
    }

    /// True when the peer closed the connection within `limit` (bytes received meanwhile are
    /// discarded).
    pub async fn closed_within(&mut self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.read_more()).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => self.buf.clear(),
                Err(_) => return false,
            }
        }
    }

    pub fn via(&self, branch: &str) -> String {
        format!(
            "SIP/2.0/{} {};branch={branch};rport",
            self.kind.via(),
            self.local
        )
    }

    pub fn contact(&self) -> String {
        format!(
            "<sip:{}@{};transport={}>",
            self.user,
            self.local,
            self.kind.param()
        )
    }

    pub async fn register(&mut self) -> Msg {
        let b = format!("z9hG4bKreg{}", unique());
        let text = format!(
            "REGISTER sip:example.com SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\n\
From: <sip:{u}@example.com>;tag=r{n};epid=ep{u}\r\nTo: <sip:{u}@example.com>\r\nCall-ID: reg-{u}-{n}\r\n\
CSeq: 1 REGISTER\r\nContact: {}\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n",
            self.via(&b),
            self.contact(),
            u = self.user,
            n = unique()
        );
        self.send(&text).await;
        self.recv_where("REGISTER response", |m| {
            m.cseq_method() == "REGISTER" && m.status() >= Some(200)
        })
        .await
    }

    /// An out-of-dialog request to `to_user`.
    pub fn request(
        &self,
        method: &str,
        to_user: &str,
        branch: &str,
        call_id: &str,
        cseq: u32,
        body: &str,
    ) -> String {
        let ctype = if body.is_empty() {
            String::new()
        } else if method == "INVITE" {
            "Content-Type: application/sdp\r\n".to_owned()
        } else {
            "Content-Type: text/plain\r\n".to_owned()
        };
        format!(
            "{method} sip:{to_user}@example.com SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\n\
From: <sip:{u}@example.com>;tag=t{u}\r\nTo: <sip:{to_user}@example.com>\r\nCall-ID: {call_id}\r\n\
CSeq: {cseq} {method}\r\nContact: {}\r\n{ctype}Content-Length: {}\r\n\r\n{body}",
            self.via(branch),
            self.contact(),
            body.len(),
            u = self.user
        )
    }
}

/// The metrics page once it contains every one of `lines` (or the last page after [`WAIT`]).
/// Counters are updated by the core thread after it has handed the messages on, so a client can
/// see its answer a moment before the matching series moves.
pub async fn scrape_until(gw: &Running, lines: &[&str]) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let page = scrape(gw).await;
        if lines.iter().all(|l| page.contains(l)) || tokio::time::Instant::now() >= deadline {
            return page;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Raw HTTP GET of the metrics page (the server keeps HTTP/1.1 connections open: this one asks
/// it to close after the answer, which is read to the end).
pub async fn scrape(gw: &Running) -> String {
    let mut s = TcpStream::connect(gw.metrics_addr.unwrap()).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(WAIT, s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    out
}
