//! Gateways with authentication on, and clients built on `sagw-client` (an implementation of the
//! client side independent of the gateway's code path), over real loopback sockets.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use sagw_client::sa::LegParams;
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

/// The admin API's bearer token in every test gateway (see [`write_admin_token`]).
pub const ADMIN_TOKEN: &str = "test-admin-token-3f9c1b";

/// Writes [`ADMIN_TOKEN`] to `dir/admin.token`, mode 0600 (the gateway refuses a token others
/// can read), and returns the `[admin]` section that uses it on an ephemeral loopback port.
pub fn write_admin_token(dir: &std::path::Path) -> String {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("admin.token");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .expect("admin token file");
    std::io::Write::write_all(&mut f, format!("{ADMIN_TOKEN}\n").as_bytes()).expect("token");
    format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n",
        path.display()
    )
}
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
    /// `[proxy] mode`: `registrar` (the embedded registrar) or `edge`.
    pub mode: &'a str,
    /// `[proxy] next_hops`, e.g. `udp:127.0.0.1:5060` (required in edge mode).
    pub next_hops: &'a [String],
    /// More `[auth]` lines.
    pub auth_extra: &'a str,
    /// `[dns] nameservers` (a test's DNS server), for next hops given by name.
    pub nameserver: Option<SocketAddr>,
    /// `[tls] next_hop_ca`, for `tls:` next hops.
    pub next_hop_ca: Option<PathBuf>,
    /// More `[proxy]` lines.
    pub proxy_extra: &'a str,
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
            mode: "registrar",
            next_hops: &[],
            auth_extra: "",
            nameserver: None,
            next_hop_ca: None,
            proxy_extra: "",
        }
    }
}

/// A gateway on ephemeral loopback ports, in-process, with `[auth]` on and its users added through
/// `sagw_gateway::users::add` (what `sagw user add` does).
pub async fn gateway(o: GwOptions<'_>) -> Running {
    gateway_and_auth(o).await.0
}

/// [`gateway`], also returning its `[auth]` settings (for `sagw user` operations while it runs).
pub async fn gateway_and_auth(
    o: GwOptions<'_>,
) -> (Running, sagw_gateway::auth_config::AuthSettings) {
    let (settings, auth) = gateway_settings(o);
    (
        sagw_gateway::start(settings).await.expect("gateway starts"),
        auth,
    )
}

/// The settings [`gateway`] starts with, its users added.
pub fn gateway_settings(
    o: GwOptions<'_>,
) -> (
    sagw_gateway::Settings,
    sagw_gateway::auth_config::AuthSettings,
) {
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
    let next_hops = o
        .next_hops
        .iter()
        .map(|h| format!("\"{h}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let admin = write_admin_token(&dir);
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
{next_hop_ca}
[proxy]
mode = "{mode}"
next_hops = [{next_hops}]
{proxy_extra}
[timers]
t1_ms = 50
t2_ms = 400
[metrics]
listen = "127.0.0.1:0"
{admin}
{dns}
[auth]
enabled = true
schemes = [{schemes}]
sip_domain = "{domain}"
fqdn = "{fqdn}"
version = {version}
credentials = "{dir}/users"
nonce_key = "{dir}/nonce.key"
kerberos_keytab = "{keytab}"
{auth_extra}
"#,
        dir = dir.display(),
        domain = o.sip_domain,
        fqdn = o.fqdn,
        version = o.version,
        mode = o.mode,
        auth_extra = o.auth_extra,
        proxy_extra = o.proxy_extra,
        next_hop_ca = o
            .next_hop_ca
            .as_ref()
            .map(|p| format!("next_hop_ca = \"{}\"", p.display()))
            .unwrap_or_default(),
        dns = o
            .nameserver
            .map(|ns| format!("[dns]\nnameservers = [\"{ns}\"]"))
            .unwrap_or_default(),
    );
    let settings = Config::parse(&text)
        .expect("test config parses")
        .validate()
        .expect("test config valid");
    let auth = settings.auth.clone().expect("auth on");
    for (u, p) in o.users {
        sagw_gateway::users::add(&auth, u, p, None).expect("user added");
    }
    (settings, auth)
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

/// `n` signed MESSAGEs from a signed-in client, 10 ms apart, each answer's signature verified.
/// Returns when each was answered and how long it took (while sign-ins wait on a slow Kerberos
/// acceptor or domain, these must stay fast).
pub async fn signed_messages(
    c: &mut Client,
    domain: &str,
    n: usize,
) -> Vec<(std::time::Instant, Duration)> {
    let mut out = Vec::new();
    for i in 0..n {
        let t = std::time::Instant::now();
        let (r, _) = c
            .request(
                "MESSAGE",
                &format!("sip:carol@{domain}"),
                Some(("text/plain", &format!("hello {i}"))),
            )
            .await;
        let done = r.unwrap_or_else(|f| panic!("MESSAGE {i}: {f}\n{}", c.trace()));
        assert!(verified(&done.signature), "{done:?}");
        out.push((std::time::Instant::now(), t.elapsed()));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    out
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
        Self::connect_from(None, to, kind, cfg).await
    }

    /// [`connect_to`](Self::connect_to) from the address `source` (127.0.0.2: another host).
    pub async fn connect_from(
        source: Option<std::net::IpAddr>,
        to: SocketAddr,
        kind: TransportKind,
        cfg: EndpointConfig,
    ) -> Client {
        let conn = Connection::connect_from(source, to, kind, None)
            .await
            .expect("connect");
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

    /// Signs in, keeping the last request of the sign-in (the REGISTER with an NTLM final leg,
    /// or with Digest credentials): that request, and whether the sign-in ended in a 200. What
    /// a tap on the client's link captures, for replay tests.
    pub async fn sign_in_keeping_the_last_request(&mut self) -> (Message, bool) {
        let mut m = self
            .ep
            .start_register(self.rng.as_rng())
            .expect("first REGISTER");
        loop {
            let answer = self
                .send_raw(&m, Duration::from_secs(5))
                .await
                .expect("an answer");
            if answer.status_code() == Some(200) {
                return (m, true);
            }
            match self
                .ep
                .on_response(&answer, SystemTime::now(), self.rng.as_rng())
            {
                Step::Send(next) => m = next,
                _ => return (m, false),
            }
        }
    }

    /// `m` (built by the endpoint, then edited) signed again with the client's SA, its
    /// credentials header replaced.
    pub fn sign_again(&mut self, m: &mut Message) {
        m.remove_header("Authorization");
        m.remove_header("Proxy-Authorization");
        self.ep
            .sa_mut()
            .expect("an SA to sign with")
            .sign(m, LegParams::default(), self.rng.as_rng())
            .expect("signed");
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

    /// Over `kind` with `cfg`, signed in (a 200); a failure panics with the client's trace.
    pub async fn signed_in(gw: &Running, kind: TransportKind, cfg: EndpointConfig) -> Client {
        let who = cfg.aor.clone();
        let mut c = Client::connect(gw, kind, cfg).await;
        let (r, _) = c.sign_in().await;
        let done = r.unwrap_or_else(|f| panic!("{who}: sign-in failed: {f}\n{}", c.trace()));
        assert_eq!(done.status, 200);
        c
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
            let m = self.next_response(deadline).await?;
            if m.status_code().is_some_and(|c| c >= 200) {
                return Some(m);
            }
        }
    }

    /// The next response received before `deadline` (None: nothing, or the connection closed).
    /// Requests the gateway sends meanwhile are answered by the endpoint.
    pub async fn next_response(&mut self, deadline: Instant) -> Option<Message> {
        loop {
            match timeout_at(deadline, self.conn.recv()).await {
                Ok(Ok(m)) if m.is_request() => {
                    let a = self.ep.answer(&m, self.rng.as_rng());
                    if let Some(r) = a.response {
                        let _ = self.conn.send(&r).await;
                    }
                }
                Ok(Ok(m)) => return Some(m),
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

/// Raw HTTP/1.1 on the admin listener (paths under `/admin`, with the bearer token) or the
/// metrics listener; returns (status line, body).
pub async fn http(gw: &Running, method: &str, path: &str) -> (String, String) {
    http_as(gw, ADMIN_TOKEN, method, path).await
}

/// [`http`] with `token` as the admin API's bearer token.
pub async fn http_as(gw: &Running, token: &str, method: &str, path: &str) -> (String, String) {
    let (addr, auth) = if path.starts_with("/admin") {
        (
            gw.admin_addr.expect("admin API"),
            format!("Authorization: Bearer {token}\r\n"),
        )
    } else {
        (gw.metrics_addr.expect("metrics"), String::new())
    };
    let mut s = TcpStream::connect(addr).await.expect("http connect");
    s.write_all(
        format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
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

/// The `/metrics` page at `addr`, read to the end (the listener keeps HTTP/1.1 connections open:
/// this one asks it to close after the answer).
pub async fn metrics_of(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).await.expect("metrics");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut out = String::new();
    tokio::time::timeout(WAIT, s.read_to_string(&mut out))
        .await
        .expect("metrics in time")
        .expect("read");
    out
}

/// The value of `series` on a metrics page, 0 when absent (a gauge without labels may be rendered
/// `name{} v`).
pub fn metric(body: &str, series: &str) -> u64 {
    body.lines()
        .find_map(|l| {
            let rest = l.strip_prefix(series)?;
            let rest = rest.strip_prefix("{}").unwrap_or(rest);
            rest.strip_prefix(' ')?.trim().parse().ok()
        })
        .unwrap_or(0)
}

/// The auth parameter `name` of a header value (`NTLM realm="x", opaque="y"`).
pub fn param(value: &str, name: &str) -> Option<String> {
    sagw_sip::AuthHeader::parse(value)
        .ok()?
        .param(name)
        .map(str::to_owned)
}

/// A signature that verified.
pub fn verified(c: &SignatureCheck) -> bool {
    matches!(c, SignatureCheck::Verified { .. })
}

/// One request a client received: how its signature checked out and what the client answered.
#[derive(Debug, Clone)]
pub struct Received {
    pub request: Message,
    pub check: SignatureCheck,
    pub response: Option<Message>,
}

impl Received {
    pub fn method(&self) -> &str {
        self.request.method().unwrap_or("")
    }
}

/// A client over `kind` (TLS trusting the gateway's certificate).
pub async fn connect(gw: &Running, kind: TransportKind, cfg: EndpointConfig) -> Client {
    match kind {
        TransportKind::Tls => Client::connect_tls(gw, cfg).await,
        k => Client::connect(gw, k, cfg).await,
    }
}

impl Client {
    /// The Contact URI the endpoint puts in its requests (`sip:127.0.0.1:port;transport=tcp`).
    pub fn contact(&self) -> String {
        format!(
            "sip:{};transport={}",
            self.conn.local_addr(),
            self.conn.kind().via().to_ascii_lowercase()
        )
    }

    pub fn epid(&self) -> String {
        self.ep.config().epid.clone()
    }

    /// A response to `req` built as a user agent does (RFC 3261 §8.2.6): Via, From, Call-ID and
    /// CSeq copied; To with `to_tag` (unless it has one) and our epid; for a 1xx/2xx to INVITE the
    /// Record-Route copied and our Contact (§12.1.1); signed with the SA when there is one.
    pub fn response(&mut self, req: &Message, code: u16, reason: &str, to_tag: &str) -> Message {
        let mut s = format!("SIP/2.0 {code} {reason}\r\n");
        for v in req.header_all("Via") {
            s.push_str(&format!("Via: {v}\r\n"));
        }
        let mut to = req.header("To").expect("To").to_owned();
        let to_na = req.to().expect("To parses");
        if to_na.param("epid").is_none() {
            to.push_str(&format!(";epid={}", self.epid()));
        }
        if to_na.tag().is_none() {
            to.push_str(&format!(";tag={to_tag}"));
        }
        s.push_str(&format!(
            "From: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\n",
            req.header("From").expect("From"),
            req.call_id().expect("Call-ID"),
            req.header("CSeq").expect("CSeq"),
        ));
        if req.method() == Some("INVITE") && code > 100 && code < 300 {
            for rr in req.header_all("Record-Route") {
                s.push_str(&format!("Record-Route: {rr}\r\n"));
            }
            s.push_str(&format!("Contact: <{}>\r\n", self.contact()));
        }
        s.push_str("Content-Length: 0\r\n\r\n");
        let mut m = Message::parse(s.as_bytes()).expect("response parses");
        if let Some(sa) = self.ep.sa_mut() {
            sa.sign(&mut m, LegParams::default(), self.rng.as_rng())
                .expect("response signed");
        }
        m
    }

    /// The next request received before `deadline` (responses are skipped); None on timeout or a
    /// closed connection.
    pub async fn next_request(&mut self, deadline: Instant) -> Option<Message> {
        loop {
            match timeout_at(deadline, self.conn.recv()).await {
                Ok(Ok(m)) if m.is_request() => return Some(m),
                Ok(Ok(_)) => {}
                _ => return None,
            }
        }
    }

    /// Verifies `req` with the SA (Unsigned without one).
    pub fn verify(&mut self, req: &Message) -> SignatureCheck {
        match self.ep.sa_mut() {
            Some(sa) => sa.verify(req),
            None => SignatureCheck::Unsigned,
        }
    }

    /// Acts as a user agent for `how_long` or until `until` requests were received: each new
    /// request is verified and answered 200 (to an INVITE with Record-Route and Contact, so a
    /// dialog can be set up through record-routing proxies; an ACK gets nothing); a retransmission
    /// gets the same answer again without a second check (its `snum` was consumed).
    ///
    /// Unlike a Lync client, an UNSIGNED request is answered too: the check is recorded for the
    /// test to assert on, and the rest of the exchange can still be observed. A request whose
    /// signature is bad is dropped, as a client does.
    pub async fn serve_ua(&mut self, how_long: Duration, until: usize) -> Vec<Received> {
        let end = Instant::now() + how_long;
        let mut out: Vec<Received> = Vec::new();
        let mut answered: Vec<(String, Message)> = Vec::new();
        while out.len() < until {
            let Some(m) = self.next_request(end).await else {
                break;
            };
            let key = transaction_key(&m);
            if let Some((_, r)) = answered.iter().find(|(k, _)| *k == key) {
                let r = r.clone();
                let _ = self.conn.send(&r).await;
                continue;
            }
            let check = self.verify(&m);
            let response = match (&check, m.method()) {
                (SignatureCheck::Bad(_), _) | (_, Some("ACK")) => None,
                _ => Some(self.response(&m, 200, "OK", &format!("ua{}", unique()))),
            };
            if let Some(r) = &response {
                self.conn.send(r).await.expect("send answer");
                answered.push((key, r.clone()));
            }
            out.push(Received {
                request: m,
                check,
                response,
            });
        }
        out
    }
}

/// Call-ID, CSeq and top Via branch: what makes a retransmission the same request.
fn transaction_key(m: &Message) -> String {
    let branch = m
        .header("Via")
        .and_then(|v| v.split(";branch=").nth(1))
        .map(|b| b.split(';').next().unwrap_or(b))
        .unwrap_or("");
    format!(
        "{}|{}|{branch}",
        m.call_id().unwrap_or(""),
        m.header("CSeq").unwrap_or("")
    )
}

/// One side of a dialog (RFC 3261 §12.1): what its in-dialog requests carry.
#[derive(Debug, Clone)]
pub struct Dialog {
    pub call_id: String,
    /// Our From (with our tag).
    pub local: String,
    /// Their To (with their tag).
    pub remote: String,
    /// The Request-URI: the peer's Contact.
    pub target: String,
    /// Route headers, in order.
    pub routes: Vec<String>,
}

fn contact_uri(m: &Message) -> Option<String> {
    m.header("Contact")
        .and_then(|c| sagw_sip::parse_name_addr(c).ok())
        .map(|na| na.uri.to_owned())
}

impl Dialog {
    /// The caller's side, from the 2xx it received: the route set is the Record-Route reversed,
    /// the target the callee's Contact (its To URI when the 2xx has none).
    pub fn caller(ok: &Message) -> Dialog {
        let mut routes: Vec<String> = ok
            .header_values("Record-Route")
            .map(str::to_owned)
            .collect();
        routes.reverse();
        Dialog {
            call_id: ok.call_id().expect("Call-ID").to_owned(),
            local: ok.header("From").expect("From").to_owned(),
            remote: ok.header("To").expect("To").to_owned(),
            target: contact_uri(ok).unwrap_or_else(|| ok.to().expect("To").uri.to_owned()),
            routes,
        }
    }

    /// The callee's side, from the INVITE it received and the 2xx it sent: the route set is the
    /// Record-Route in order, the target the caller's Contact.
    pub fn callee(invite: &Message, ok: &Message) -> Dialog {
        Dialog {
            call_id: invite.call_id().expect("Call-ID").to_owned(),
            local: ok.header("To").expect("To").to_owned(),
            remote: invite.header("From").expect("From").to_owned(),
            target: contact_uri(invite).expect("INVITE Contact"),
            routes: invite
                .header_values("Record-Route")
                .map(str::to_owned)
                .collect(),
        }
    }

    /// An in-dialog request from `c`, signed with its SA (the endpoint builds only out-of-dialog
    /// requests).
    pub fn request(&self, c: &mut Client, method: &str, cseq: u32) -> Message {
        let local = c.conn.local_addr();
        let via = c.conn.kind().via();
        let mut s = format!(
            "{method} {target} SIP/2.0\r\nVia: SIP/2.0/{via} {local};branch=z9hG4bK{method}{n};rport\r\n\
             Max-Forwards: 70\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n",
            target = self.target,
            from = self.local,
            to = self.remote,
            call_id = self.call_id,
            n = unique(),
        );
        for r in &self.routes {
            s.push_str(&format!("Route: {r}\r\n"));
        }
        s.push_str(&format!("Contact: <{}>\r\n", c.contact()));
        s.push_str("Content-Length: 0\r\n\r\n");
        let mut m = Message::parse(s.as_bytes()).expect("in-dialog request parses");
        let sa = c.ep.sa_mut().expect("SA");
        sa.sign(&mut m, LegParams::default(), c.rng.as_rng())
            .expect("signed");
        m
    }
}

/// The client goes on over a new connection to `addr` (same endpoint, same SA).
pub async fn move_to(c: &mut Client, addr: SocketAddr, kind: TransportKind) {
    let conn = Connection::connect(addr, kind, None)
        .await
        .expect("connect");
    c.ep.set_local(LocalAddr {
        transport: conn.kind().via(),
        addr: conn.local_addr().to_string(),
    });
    c.conn = conn;
}

/// The `snum` of the server's signature on the last of `msgs`.
pub fn snum(msgs: &[Message]) -> u32 {
    let last = msgs.last().expect("a response");
    let v = last
        .header("Authentication-Info")
        .or_else(|| last.header("Proxy-Authentication-Info"))
        .expect("signed");
    param(v, "snum").expect("snum").parse().expect("number")
}

/// Whether one of `msgs` is a 401 or 407 (a new handshake was asked for).
pub fn challenged(msgs: &[Message]) -> bool {
    msgs.iter()
        .any(|m| matches!(m.status_code(), Some(401) | Some(407)))
}

/// The embedded default, with ephemeral ports and temp paths: nothing else changed.
pub fn default_config(dir: &std::path::Path, keytab: Option<&std::path::Path>) -> String {
    let mut text = sagw_gateway::config::DEFAULT_TOML.to_owned();
    let dir = dir.display().to_string();
    let keytab = keytab.map(|k| k.display().to_string()).unwrap_or_default();
    for (from, to) in [
        ("udp = \"0.0.0.0:5060\"", "udp = \"0.0.0.0:0\"".to_owned()),
        ("tcp = \"0.0.0.0:5060\"", "tcp = \"0.0.0.0:0\"".to_owned()),
        ("tls = \"0.0.0.0:5061\"", "tls = \"0.0.0.0:0\"".to_owned()),
        (
            "listen = \"127.0.0.1:9464\"",
            "listen = \"127.0.0.1:0\"".to_owned(),
        ),
        (
            "listen = \"127.0.0.1:5089\"",
            "listen = \"127.0.0.1:0\"".to_owned(),
        ),
        ("\"sagw-data", format!("\"{dir}")),
        (
            "kerberos_keytab = \"\"",
            format!("kerberos_keytab = \"{keytab}\""),
        ),
    ] {
        assert!(text.contains(from), "the default has {from}");
        text = text.replace(from, &to);
    }
    text
}

/// The gateway listens on every interface (as the default does); clients use loopback.
pub fn loopback(a: Option<SocketAddr>) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], a.expect("listener").port()))
}

/// Parameter `name` of the top Via of `m`.
pub fn via_param(m: &Message, name: &str) -> Option<String> {
    let prefix = format!("{name}=");
    m.header("Via")?
        .split(';')
        .find_map(|p| p.trim().strip_prefix(prefix.as_str()))
        .map(str::to_owned)
}
