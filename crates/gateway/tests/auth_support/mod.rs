//! Gateways with authentication on, and clients built on `sagw-client` (an implementation of the
//! client side independent of the gateway's code path), over real loopback sockets.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use sagw_client::session::RngSend;
use sagw_client::transport::{Connection, TransportKind};
use sagw_client::util::OsRng;
use sagw_client::{
    AuthScheme, Completed, Endpoint, EndpointConfig, Failure, LocalAddr, Password, SignatureCheck,
    Step,
};
use sagw_gateway::{Config, Running};
use sagw_sip::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

pub const WAIT: Duration = Duration::from_secs(5);
pub const DOMAIN: &str = "example.com";

static COUNTER: AtomicU64 = AtomicU64::new(1);

pub fn unique() -> u64 {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// What differs between the test gateways.
pub struct GwOptions<'a> {
    pub schemes: &'a [&'a str],
    pub version: u8,
    pub sip_domain: &'a str,
    pub fqdn: &'a str,
    pub keytab: Option<PathBuf>,
    pub users: &'a [(&'a str, &'a str)],
}

impl Default for GwOptions<'_> {
    fn default() -> Self {
        GwOptions {
            schemes: &["ntlm", "digest"],
            version: 4,
            sip_domain: DOMAIN,
            fqdn: "sagw.example.com",
            keytab: None,
            users: &[
                ("alice", "alice-pw"),
                ("bob", "bob-pw"),
                ("carol", "carol-pw"),
            ],
        }
    }
}

/// A gateway on ephemeral loopback ports, in-process, with `[auth]` on and its users added through
/// `sagw_gateway::users::add` (what `sagw user add` does).
pub async fn gateway(o: GwOptions<'_>) -> Running {
    let dir = std::env::temp_dir().join(format!("sagw-e2e-{}-{}", std::process::id(), unique()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let schemes = o
        .schemes
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let keytab = o
        .keytab
        .as_ref()
        .map(|k| k.display().to_string())
        .unwrap_or_default();
    let text = format!(
        r#"
[log]
level = "warn"
[listen]
udp = "127.0.0.1:0"
tcp = "127.0.0.1:0"
tls = "127.0.0.1:0"
[tls]
generated_dir = "{dir}"
[timers]
t1_ms = 50
t2_ms = 400
[metrics]
listen = "127.0.0.1:0"
[auth]
enabled = true
schemes = [{schemes}]
sip_domain = "{domain}"
fqdn = "{fqdn}"
version = {version}
credentials = "{dir}/users"
nonce_key = "{dir}/nonce.key"
kerberos_keytab = "{keytab}"
"#,
        dir = dir.display(),
        domain = o.sip_domain,
        fqdn = o.fqdn,
        version = o.version,
    );
    let settings = Config::parse(&text)
        .expect("test config parses")
        .validate()
        .expect("test config valid");
    let auth = settings.auth.clone().expect("auth on");
    for (u, p) in o.users {
        sagw_gateway::users::add(&auth, u, p, None).expect("user added");
    }
    sagw_gateway::start(settings).await.expect("gateway starts")
}

pub fn addr(gw: &Running, kind: TransportKind) -> SocketAddr {
    match kind {
        TransportKind::Udp => gw.udp.expect("udp"),
        TransportKind::Tcp => gw.tcp.expect("tcp"),
        TransportKind::Tls => gw.tls.expect("tls"),
    }
}

pub fn rng() -> OsRng {
    OsRng::new().expect("os rng")
}

/// One client: its connection, its endpoint, its randomness.
pub struct Client {
    pub conn: Connection,
    pub ep: Endpoint,
    pub rng: OsRng,
}

pub fn config(user: &str, password: &str, scheme: AuthScheme, version: u8) -> EndpointConfig {
    let epid = format!("{:010x}", unique() * 0x1_0001 + 0xa0_0000_0000);
    let mut cfg = EndpointConfig::new(user, DOMAIN, &epid);
    cfg.domain = "EXAMPLE".into();
    cfg.password = Some(Password::new(password));
    cfg.schemes = vec![scheme];
    cfg.version = version;
    cfg.expires = Some(600);
    cfg
}

impl Client {
    pub async fn connect(gw: &Running, kind: TransportKind, cfg: EndpointConfig) -> Client {
        Self::connect_to(addr(gw, kind), kind, cfg).await
    }

    /// Over TCP or UDP to `to` (e.g. one of several listeners of a transport).
    pub async fn connect_to(to: SocketAddr, kind: TransportKind, cfg: EndpointConfig) -> Client {
        let conn = Connection::connect(to, kind, None).await.expect("connect");
        let ep = Endpoint::new(
            cfg,
            LocalAddr {
                transport: conn.kind().via(),
                addr: conn.local_addr().to_string(),
            },
        )
        .with_trace();
        Client {
            conn,
            ep,
            rng: rng(),
        }
    }

    /// Over TLS, trusting the gateway's generated certificate.
    pub async fn connect_tls(gw: &Running, cfg: EndpointConfig) -> Client {
        let cert = gw.cert.as_ref().expect("certificate").cert_path.clone();
        let connector =
            sagw_client::transport::tls_connector(&sagw_client::transport::TlsOptions {
                trust: sagw_client::transport::TlsTrust::Pem(cert),
                server_name: "127.0.0.1".into(),
            })
            .expect("tls config");
        let conn = Connection::connect(
            addr(gw, TransportKind::Tls),
            TransportKind::Tls,
            Some((&connector, "127.0.0.1")),
        )
        .await
        .expect("tls connect");
        let ep = Endpoint::new(
            cfg,
            LocalAddr {
                transport: conn.kind().via(),
                addr: conn.local_addr().to_string(),
            },
        )
        .with_trace();
        Client {
            conn,
            ep,
            rng: rng(),
        }
    }

    pub fn trace(&mut self) -> String {
        self.ep
            .take_events()
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Signs in and returns every message received on the way.
    pub async fn sign_in(&mut self) -> (Result<Completed, Failure>, Vec<Message>) {
        let first = match self.ep.start_register(self.rng.as_rng()) {
            Ok(m) => m,
            Err(f) => return (Err(f), Vec::new()),
        };
        self.drive(first).await
    }

    /// A request built and signed by the endpoint.
    pub async fn request(
        &mut self,
        method: &str,
        target: &str,
        body: Option<(&str, &str)>,
    ) -> (Result<Completed, Failure>, Vec<Message>) {
        let body = body.map(|(t, b)| (t.to_owned(), b.as_bytes().to_vec()));
        match self.ep.request(method, target, body, self.rng.as_rng()) {
            Ok(m) => self.drive(m).await,
            Err(f) => (Err(f), Vec::new()),
        }
    }

    /// Sends `first` and feeds every response to the endpoint until the transaction ends, like
    /// `sagw_client::session::drive`, but keeping what was received (and retransmitting on UDP).
    pub async fn drive(&mut self, first: Message) -> (Result<Completed, Failure>, Vec<Message>) {
        let mut seen = Vec::new();
        let mut pending = first;
        let udp = self.conn.kind() == TransportKind::Udp;
        let mut deadline = Instant::now() + WAIT;
        let mut interval = Duration::from_millis(100);
        if let Err(e) = self.conn.send(&pending).await {
            return (Err(Failure::Transport(e.to_string())), seen);
        }
        let mut retransmit = Instant::now() + interval;
        loop {
            let wake = if udp {
                retransmit.min(deadline)
            } else {
                deadline
            };
            let msg = match timeout_at(wake, self.conn.recv()).await {
                Ok(Ok(m)) => m,
                Ok(Err(e)) => return (Err(Failure::Transport(e.to_string())), seen),
                Err(_) => {
                    if Instant::now() >= deadline {
                        return (Err(Failure::Timeout { secs: 5 }), seen);
                    }
                    let _ = self.conn.send(&pending).await;
                    interval = (interval * 2).min(Duration::from_millis(400));
                    retransmit = Instant::now() + interval;
                    continue;
                }
            };
            if msg.is_request() {
                let a = self.ep.answer(&msg, self.rng.as_rng());
                if let Some(r) = a.response {
                    let _ = self.conn.send(&r).await;
                }
                continue;
            }
            seen.push(msg.clone());
            let mut step = self
                .ep
                .on_response(&msg, SystemTime::now(), self.rng.as_rng());
            while let Step::NeedKerberosTicket {
                service_fqdn,
                ccache,
                mutual,
            } = step
            {
                let t = tokio::task::spawn_blocking(move || {
                    sagw_kerberos::initiator::initiate_with(
                        &service_fqdn,
                        ccache.as_deref(),
                        sagw_kerberos::initiator::InitiatorOptions {
                            mutual: if mutual {
                                sagw_kerberos::initiator::Mutual::Requested
                            } else {
                                sagw_kerberos::initiator::Mutual::NotRequested
                            },
                            sequencing: sagw_kerberos::initiator::Sequencing::Off,
                        },
                    )
                })
                .await
                .expect("initiator task");
                step = self
                    .ep
                    .on_kerberos_ticket(t, SystemTime::now(), self.rng.as_rng());
            }
            match step {
                Step::Wait | Step::NeedKerberosTicket { .. } => {}
                Step::Send(m) => {
                    pending = m;
                    if let Err(e) = self.conn.send(&pending).await {
                        return (Err(Failure::Transport(e.to_string())), seen);
                    }
                    deadline = Instant::now() + WAIT;
                    interval = Duration::from_millis(100);
                    retransmit = Instant::now() + interval;
                }
                Step::Done(c) => return (Ok(c), seen),
                Step::Failed(f) => return (Err(f), seen),
            }
        }
    }

    /// Sends a raw message and returns the first final response (None: nothing within `limit`).
    /// Requests the gateway sends meanwhile are answered by the endpoint.
    pub async fn send_raw(&mut self, msg: &Message, limit: Duration) -> Option<Message> {
        self.conn.send(msg).await.expect("send");
        let deadline = Instant::now() + limit;
        loop {
            match timeout_at(deadline, self.conn.recv()).await {
                Ok(Ok(m)) if m.is_request() => {
                    let a = self.ep.answer(&m, self.rng.as_rng());
                    if let Some(r) = a.response {
                        let _ = self.conn.send(&r).await;
                    }
                }
                Ok(Ok(m)) if m.status_code().is_some_and(|c| c >= 200) => return Some(m),
                Ok(Ok(_)) => {}
                _ => return None,
            }
        }
    }

    /// Receives requests for `how_long` (or until `until` of them were seen), answering each with
    /// the endpoint; returns each request, its signature check and whether it was answered.
    pub async fn serve(
        &mut self,
        how_long: Duration,
        until: usize,
    ) -> Vec<(Message, SignatureCheck, bool)> {
        let end = Instant::now() + how_long;
        let mut out = Vec::new();
        while out.len() < until {
            let Ok(Ok(m)) = timeout_at(end, self.conn.recv()).await else {
                break;
            };
            if !m.is_request() {
                continue;
            }
            let a = self.ep.answer(&m, self.rng.as_rng());
            let answered = a.response.is_some();
            if let Some(r) = a.response {
                self.conn.send(&r).await.expect("send answer");
            }
            out.push((m, a.check, answered));
        }
        out
    }
}

/// Raw HTTP/1.1 on the metrics listener; returns (status line, body).
pub async fn http(gw: &Running, method: &str, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(gw.metrics_addr.expect("metrics"))
        .await
        .expect("metrics connect");
    s.write_all(
        format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .expect("write");
    let mut out = String::new();
    tokio::time::timeout(WAIT, s.read_to_string(&mut out))
        .await
        .expect("metrics answer in time")
        .expect("read");
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (
        head.lines().next().unwrap_or("").to_owned(),
        body.to_owned(),
    )
}

/// The auth parameter `name` of a header value (`NTLM realm="x", opaque="y"`).
pub fn param(value: &str, name: &str) -> Option<String> {
    sagw_sip::AuthHeader::parse(value)
        .ok()?
        .param(name)
        .map(str::to_owned)
}
