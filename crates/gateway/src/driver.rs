//! The tokio driver: listeners, one task per connection, the UDP socket, the flow table, and the
//! core task that owns the sans-IO [`Edge`] and executes its actions.
//!
//! Every connection task and the UDP receiver send [`Event`]s to the core task over one bounded
//! channel (backpressure: a flood slows its own readers, not the core). The core task sends bytes
//! to connections through their bounded write queues; a connection whose queue is full is closed
//! as too slow rather than buffering without limit.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use sagw_proxy::{
    Action, ClientAuth, Edge, EdgeConfig, Flow, FlowId, Inbound, LocalAddrs, NoAuth, Now, Report,
    Secret, SendToken, Target, Transport,
};
use sagw_sip::{Frame, KeepAliveKind, Message, ParseError, StreamFramer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{Level, debug, info, trace, warn};

use crate::config::{CertSource, Settings};
use crate::logging::redacted;
use crate::metrics::{self, Metrics};
use crate::tls::{self, CertInfo};

/// The UDP socket's flow id (connections get ids from 1 up).
const UDP_FLOW: FlowId = FlowId(0);

/// Start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not bind.
    #[error("cannot listen on {what} {addr}: {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// TLS set-up failed.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// No randomness for the proxy secret.
    #[error("system random source unavailable")]
    Random,
    /// The authentication stage could not be set up.
    #[error("authentication: {0}")]
    Auth(#[from] crate::auth::AuthSetupError),
}

enum Event {
    Inbound(Inbound),
    Closed(FlowId),
    Connected((Transport, SocketAddr)),
    ConnectFailed((Transport, SocketAddr)),
}

struct ConnHandle {
    tx: mpsc::Sender<Vec<u8>>,
    kill: watch::Sender<bool>,
    remote: SocketAddr,
    transport: Transport,
}

#[derive(Default)]
struct FlowTable {
    by_id: HashMap<FlowId, ConnHandle>,
    by_addr: HashMap<(Transport, SocketAddr), FlowId>,
}

struct Shared {
    settings: Settings,
    metrics: Arc<Metrics>,
    events: mpsc::Sender<Event>,
    flows: Mutex<FlowTable>,
    next_flow: AtomicU64,
    connections: AtomicUsize,
    shutdown: watch::Receiver<bool>,
    tls_client: Option<Arc<rustls::ClientConfig>>,
}

/// A running gateway.
pub struct Running {
    /// Bound UDP address.
    pub udp: Option<SocketAddr>,
    /// Bound TCP address.
    pub tcp: Option<SocketAddr>,
    /// Bound TLS address.
    pub tls: Option<SocketAddr>,
    /// Bound metrics address.
    pub metrics_addr: Option<SocketAddr>,
    /// The TLS certificate in use.
    pub cert: Option<CertInfo>,
    /// The registry.
    pub metrics: Arc<Metrics>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("udp", &self.udp)
            .field("tcp", &self.tcp)
            .field("tls", &self.tls)
            .field("metrics_addr", &self.metrics_addr)
            .finish()
    }
}

impl Running {
    /// Stop accepting, close connections and wait for the tasks (bounded by `grace`).
    pub async fn shutdown(self, grace: std::time::Duration) {
        let _ = self.shutdown.send(true);
        let all = futures_join(self.tasks);
        let _ = tokio::time::timeout(grace, all).await;
    }
}

async fn futures_join(tasks: Vec<JoinHandle<()>>) {
    for t in tasks {
        if !t.is_finished() {
            let _ = t.await;
        }
    }
}

fn fresh_secret() -> Result<[u8; 32], StartError> {
    use ring::rand::SecureRandom;
    let mut s = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut s)
        .map_err(|_| StartError::Random)?;
    Ok(s)
}

fn advertised_host(s: &Settings, bound: &[Option<SocketAddr>]) -> (String, Vec<String>) {
    let ips: Vec<IpAddr> = bound.iter().flatten().map(SocketAddr::ip).collect();
    let host = if !s.advertise.is_empty() {
        s.advertise.clone()
    } else {
        match ips.iter().find(|ip| !ip.is_unspecified()) {
            Some(IpAddr::V6(v6)) => format!("[{v6}]"),
            Some(ip) => ip.to_string(),
            None => {
                warn!(
                    "listening on a wildcard address and listen.advertise is empty: advertising 127.0.0.1; set listen.advertise to the address clients use"
                );
                "127.0.0.1".to_owned()
            }
        }
    };
    let mut aliases = s.aliases.clone();
    for ip in ips.iter().filter(|ip| !ip.is_unspecified()) {
        aliases.push(match ip {
            IpAddr::V6(v6) => format!("[{v6}]"),
            IpAddr::V4(v4) => v4.to_string(),
        });
    }
    if ips.iter().any(|ip| ip.is_unspecified() || ip.is_loopback()) {
        aliases.push("127.0.0.1".into());
        aliases.push("localhost".into());
    }
    aliases.retain(|a| !a.eq_ignore_ascii_case(&host));
    aliases.dedup();
    (host, aliases)
}

/// Bind everything and start serving, with the authentication stage `[auth]` describes (none when
/// it is disabled).
pub async fn start(settings: Settings) -> Result<Running, StartError> {
    let Some(a) = settings.auth.clone() else {
        warn!(
            "authentication is disabled ([auth] enabled = false): every request passes unauthenticated"
        );
        return start_inner(settings, Box::new(NoAuth), None).await;
    };
    let mut rng = crate::auth::OsRng::new()?;
    let (core, users) = crate::auth::build_core_with_store(&a, &mut rng)?;
    let core = Arc::new(core);
    let schemes: Vec<&str> = [
        (a.kerberos, "kerberos"),
        (a.ntlm, "ntlm"),
        (a.digest, "digest"),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .map(|(_, n)| *n)
    .collect();
    info!(schemes = ?schemes, realm = %a.realm, fqdn = %a.fqdn, "client authentication on");
    let stage = crate::auth::SecurityStage::new(core.clone(), Box::new(rng), a.director.clone())
        .with_listener_policy(a.listener_policy.clone());
    start_inner(settings, Box::new(stage), Some((core, users))).await
}

/// Bind everything and start serving, with `auth` as the client authentication stage.
pub async fn start_with_auth(
    settings: Settings,
    auth: Box<dyn ClientAuth>,
) -> Result<Running, StartError> {
    start_inner(settings, auth, None).await
}

async fn start_inner(
    settings: Settings,
    auth: Box<dyn ClientAuth>,
    core: Option<(
        Arc<sagw_auth::SecurityCore>,
        Arc<crate::users::ReloadingStore>,
    )>,
) -> Result<Running, StartError> {
    let bind_err = |what, addr| move |source| StartError::Bind { what, addr, source };
    let udp = match settings.udp {
        Some(a) => Some(Arc::new(bind_udp(a).map_err(bind_err("udp", a))?)),
        None => None,
    };
    let tcp = match settings.tcp {
        Some(a) => Some(TcpListener::bind(a).await.map_err(bind_err("tcp", a))?),
        None => None,
    };
    let tls_listener = match settings.tls {
        Some(a) => Some(TcpListener::bind(a).await.map_err(bind_err("tls", a))?),
        None => None,
    };
    let metrics_listener = match settings.metrics {
        Some(a) => Some(TcpListener::bind(a).await.map_err(bind_err("metrics", a))?),
        None => None,
    };
    let udp_addr = udp.as_ref().and_then(|s| s.local_addr().ok());
    let tcp_addr = tcp.as_ref().and_then(|s| s.local_addr().ok());
    let tls_addr = tls_listener.as_ref().and_then(|s| s.local_addr().ok());
    let metrics_addr = metrics_listener.as_ref().and_then(|s| s.local_addr().ok());

    let (cert, acceptor) = match &tls_listener {
        Some(_) => {
            let id = tls::load_identity(&settings.cert)?;
            let how = match (&settings.cert, id.info.generated_now) {
                (CertSource::Files { .. }, _) => "configured",
                (CertSource::Generated { .. }, true) => "generated now",
                (CertSource::Generated { .. }, false) => "generated earlier",
            };
            info!(
                path = %id.info.cert_path.display(),
                sha256 = %id.info.fingerprint,
                "TLS certificate ({how})"
            );
            let acceptor = tokio_rustls::TlsAcceptor::from(tls::server_config(&id)?);
            (Some(id.info.clone()), Some(acceptor))
        }
        None => (None, None),
    };
    let tls_client = match &settings.next_hop_ca {
        Some(ca) => Some(tls::client_config(ca)?),
        None => None,
    };

    let (host, aliases) = advertised_host(&settings, &[udp_addr, tcp_addr, tls_addr]);
    let local = LocalAddrs {
        host,
        aliases,
        udp: udp_addr.map(|a| a.port()),
        tcp: tcp_addr.map(|a| a.port()),
        tls: tls_addr.map(|a| a.port()),
    };
    let mut cfg = EdgeConfig::new(local.clone(), Secret::new(fresh_secret()?));
    cfg.mode = settings.mode;
    cfg.domains = settings.domains.clone();
    cfg.next_hops = settings.next_hops.clone();
    cfg.trusted_peers = settings.trusted_peers.clone();
    cfg.timers = settings.timers;
    cfg.retry_after = settings.retry_after;
    cfg.max_transactions = settings.max_transactions;
    cfg.registrar = settings.registrar.clone();
    let edge = Edge::with_auth(cfg, auth);

    let metrics = Arc::new(Metrics::default());
    if let Some((core, _)) = &core {
        let _ = metrics.auth.set(core.clone());
    }
    let (events_tx, events_rx) = mpsc::channel(8192);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        settings,
        metrics: metrics.clone(),
        events: events_tx,
        flows: Mutex::new(FlowTable::default()),
        next_flow: AtomicU64::new(1),
        connections: AtomicUsize::new(0),
        shutdown: shutdown_rx,
        tls_client,
    });

    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(core_task(
        edge,
        events_rx,
        shared.clone(),
        udp.clone(),
    )));
    if let Some(sock) = udp {
        tasks.push(tokio::spawn(udp_task(sock, shared.clone())));
    }
    if let Some(l) = tcp {
        tasks.push(tokio::spawn(accept_task(l, None, shared.clone())));
    }
    if let Some(l) = tls_listener {
        tasks.push(tokio::spawn(accept_task(l, acceptor, shared.clone())));
    }
    if let Some((core, users)) = core {
        // Housekeeping: expired SAs and handshakes leave memory even when nobody asks for them,
        // and users added with `sagw user add` take effect without a restart.
        let mut stop = shared.shutdown.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        core.expire(SystemTime::now());
                        users.reload_if_changed();
                    }
                    _ = stop.changed() => break,
                }
            }
        }));
    }
    if let Some(l) = metrics_listener {
        let m = metrics.clone();
        let mut stop = shared.shutdown.clone();
        tasks.push(tokio::spawn(async move {
            tokio::select! {
                () = metrics::serve(l, m) => {}
                _ = stop.changed() => {}
            }
        }));
    }
    info!(
        udp = ?udp_addr, tcp = ?tcp_addr, tls = ?tls_addr, metrics = ?metrics_addr,
        advertise = %local.host, mode = ?shared.settings.mode, next_hops = shared.settings.next_hops.len(),
        "sagw listening"
    );
    Ok(Running {
        udp: udp_addr,
        tcp: tcp_addr,
        tls: tls_addr,
        metrics_addr,
        cert,
        metrics,
        shutdown: shutdown_tx,
        tasks,
    })
}

/// The UDP socket, with a 4 MiB receive buffer: the default (~208 KiB) overflows under a burst of
/// a few thousand datagrams per second, and every drop costs a client retransmission.
fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let Err(e) = sock.set_recv_buffer_size(4 << 20) {
        warn!(error = %e, "cannot enlarge the UDP receive buffer");
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    UdpSocket::from_std(sock.into())
}

fn now() -> Now {
    Now {
        mono: Instant::now(),
        wall: SystemTime::now(),
    }
}

// ----------------------------------------------------------------------------------------------
// Core task

/// Bytes waiting for a connection to a next hop, with the token to fail if it never opens.
type Queued = (Vec<u8>, Option<SendToken>);

struct Core {
    edge: Edge,
    shared: Arc<Shared>,
    udp: Option<Arc<UdpSocket>>,
    pending: HashMap<(Transport, SocketAddr), Vec<Queued>>,
}

async fn core_task(
    edge: Edge,
    mut events: mpsc::Receiver<Event>,
    shared: Arc<Shared>,
    udp: Option<Arc<UdpSocket>>,
) {
    let mut stop = shared.shutdown.clone();
    let mut core = Core {
        edge,
        shared,
        udp,
        pending: HashMap::new(),
    };
    loop {
        let deadline = core
            .edge
            .poll_timeout()
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + std::time::Duration::from_secs(3600));
        tokio::select! {
            ev = events.recv() => {
                let Some(ev) = ev else { break };
                core.handle(ev);
                // Batch what is already queued before publishing gauges.
                for _ in 0..64 {
                    match events.try_recv() {
                        Ok(ev) => core.handle(ev),
                        Err(_) => break,
                    }
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                core.edge.handle_timeout(now());
                core.run_actions();
            }
            _ = stop.changed() => break,
        }
        let s = core.edge.stats();
        let g = &core.shared.metrics.gauges;
        g.server_transactions
            .store(s.server_transactions as i64, Ordering::Relaxed);
        g.client_transactions
            .store(s.client_transactions as i64, Ordering::Relaxed);
        g.bindings.store(s.bindings as i64, Ordering::Relaxed);
    }
    debug!("core task stopped");
}

impl Core {
    fn handle(&mut self, ev: Event) {
        match ev {
            Event::Inbound(inb) => {
                self.edge.handle_inbound(inb, now());
            }
            Event::Closed(id) => self.edge.flow_closed(id),
            Event::Connected(key) => {
                let queued = self.pending.remove(&key).unwrap_or_default();
                for (bytes, token) in queued {
                    self.send_stream_addr(key, bytes, token);
                }
            }
            Event::ConnectFailed(key) => {
                let queued = self.pending.remove(&key).unwrap_or_default();
                warn!(transport = %key.0, addr = %key.1, "next hop unreachable");
                for (_, token) in queued {
                    self.shared.metrics.inc(
                        "sagw_send_failures_total",
                        format!("transport=\"{}\"", key.0),
                        1,
                    );
                    if let Some(t) = token {
                        self.edge.send_failed(&t, now());
                    }
                }
            }
        }
        self.run_actions();
    }

    fn run_actions(&mut self) {
        while let Some(action) = self.edge.poll_action() {
            match action {
                Action::Send { to, message, token } => self.send(to, &message, token),
                Action::Report(r) => self.report(r),
            }
        }
    }

    fn report(&self, r: Report) {
        let m = &self.shared.metrics;
        match r {
            Report::Transaction {
                method,
                status,
                elapsed,
            } => m.transaction(&method, status, elapsed),
            Report::Dropped(reason) => {
                m.inc(
                    "sagw_dropped_total",
                    format!("reason=\"{}\"", reason.label()),
                    1,
                );
            }
            Report::Limit(l) => m.limit(l.label()),
            Report::Binding { aor, change } => {
                debug!(%aor, ?change, "binding");
                let kind = match change {
                    sagw_proxy::BindingChange::Added => "added",
                    sagw_proxy::BindingChange::Refreshed => "refreshed",
                    sagw_proxy::BindingChange::Removed => "removed",
                };
                m.inc(
                    "sagw_bindings_changes_total",
                    format!("change=\"{kind}\""),
                    1,
                );
            }
        }
    }

    fn send(&mut self, to: Target, msg: &Message, token: Option<SendToken>) {
        if tracing::enabled!(target: "sagw::sip", Level::TRACE) {
            trace!(target: "sagw::sip", to = ?to, "send\n{}", redacted(msg));
        }
        self.shared.metrics.message("out", msg);
        let bytes = msg.to_bytes();
        match (to, to.transport()) {
            (_, Transport::Udp) => {
                let ok = bytes.len() <= 65_507
                    && self
                        .udp
                        .as_ref()
                        .is_some_and(|s| s.try_send_to(&bytes, to.addr()).is_ok());
                if !ok {
                    self.send_failure(Transport::Udp, token);
                }
            }
            (Target::Flow(f), t) => {
                if !self.write_flow(f.id, bytes) {
                    self.send_failure(t, token);
                }
            }
            (Target::Addr { transport, addr }, _) => {
                self.send_stream_addr((transport, addr), bytes, token);
            }
        }
    }

    fn send_failure(&mut self, t: Transport, token: Option<SendToken>) {
        self.shared
            .metrics
            .inc("sagw_send_failures_total", format!("transport=\"{t}\""), 1);
        if let Some(token) = token {
            self.edge.send_failed(&token, now());
        }
    }

    /// Queue bytes on a connection; false when it is gone or too slow (then it is closed).
    fn write_flow(&self, id: FlowId, bytes: Vec<u8>) -> bool {
        let Ok(table) = self.shared.flows.lock() else {
            return false;
        };
        let Some(h) = table.by_id.get(&id) else {
            return false;
        };
        match h.tx.try_send(bytes) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.shared.metrics.limit("write_queue");
                warn!(remote = %h.remote, transport = %h.transport, "write queue full: closing slow connection");
                let _ = h.kill.send(true);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    fn send_stream_addr(
        &mut self,
        key: (Transport, SocketAddr),
        bytes: Vec<u8>,
        token: Option<SendToken>,
    ) {
        let existing = self
            .shared
            .flows
            .lock()
            .ok()
            .and_then(|t| t.by_addr.get(&key).copied());
        if let Some(id) = existing {
            if !self.write_flow(id, bytes) {
                self.send_failure(key.0, token);
            }
            return;
        }
        if let Some(q) = self.pending.get_mut(&key) {
            q.push((bytes, token));
            return;
        }
        self.pending.insert(key, vec![(bytes, token)]);
        tokio::spawn(connect_task(key, self.shared.clone()));
    }
}

// ----------------------------------------------------------------------------------------------
// Connections

async fn connect_task(key: (Transport, SocketAddr), shared: Arc<Shared>) {
    let (transport, addr) = key;
    let limit = shared.settings.handshake_timeout;
    let result = tokio::time::timeout(limit, async {
        let tcp = TcpStream::connect(addr).await.ok()?;
        let _ = tcp.set_nodelay(true);
        match transport {
            Transport::Tls => {
                let cfg = shared.tls_client.clone()?;
                let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
                let tls = tokio_rustls::TlsConnector::from(cfg)
                    .connect(name, tcp)
                    .await
                    .ok()?;
                Some(spawn_connection(tls, addr, Transport::Tls, &shared))
            }
            _ => Some(spawn_connection(tcp, addr, Transport::Tcp, &shared)),
        }
    })
    .await;
    let ev = match result {
        Ok(Some(_)) => Event::Connected(key),
        _ => Event::ConnectFailed(key),
    };
    let _ = shared.events.send(ev).await;
}

async fn accept_task(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
) {
    let mut stop = shared.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
        };
        let Ok((stream, remote)) = accepted else {
            // EMFILE and friends: back off instead of spinning.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        if shared.connections.load(Ordering::Relaxed) >= shared.settings.max_connections {
            shared.metrics.limit("connections");
            debug!(%remote, "connection limit reached: refusing");
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        match &tls {
            None => {
                spawn_connection(stream, remote, Transport::Tcp, &shared);
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let shared = shared.clone();
                // Count the handshake against the limit too: half-open TLS peers hold sockets.
                shared.connections.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    let hs = tokio::time::timeout(
                        shared.settings.handshake_timeout,
                        acceptor.accept(stream),
                    )
                    .await;
                    shared.connections.fetch_sub(1, Ordering::Relaxed);
                    match hs {
                        Ok(Ok(tls)) => {
                            spawn_connection(tls, remote, Transport::Tls, &shared);
                        }
                        Ok(Err(e)) => {
                            debug!(%remote, error = %e, "TLS handshake failed");
                            shared.metrics.limit("tls_handshake_failed");
                        }
                        Err(_) => {
                            debug!(%remote, "TLS handshake timed out");
                            shared.metrics.limit("tls_handshake_timeout");
                        }
                    }
                });
            }
        }
    }
}

fn spawn_connection<S>(
    stream: S,
    remote: SocketAddr,
    transport: Transport,
    shared: &Arc<Shared>,
) -> FlowId
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let id = FlowId(shared.next_flow.fetch_add(1, Ordering::Relaxed));
    let (tx, rx) = mpsc::channel(shared.settings.write_queue);
    let (kill_tx, kill_rx) = watch::channel(false);
    if let Ok(mut t) = shared.flows.lock() {
        t.by_id.insert(
            id,
            ConnHandle {
                tx,
                kill: kill_tx,
                remote,
                transport,
            },
        );
        t.by_addr.insert((transport, remote), id);
    }
    shared.connections.fetch_add(1, Ordering::Relaxed);
    let gauge = match transport {
        Transport::Tls => &shared.metrics.gauges.connections_tls,
        _ => &shared.metrics.gauges.connections_tcp,
    };
    gauge.fetch_add(1, Ordering::Relaxed);
    shared.metrics.inc(
        "sagw_connections_total",
        format!("transport=\"{transport}\""),
        1,
    );
    let flow = Flow {
        id,
        transport,
        remote,
    };
    let shared = shared.clone();
    tokio::spawn(async move {
        debug!(%remote, %transport, flow = id.0, "connection open");
        let why = connection(stream, flow, rx, kill_rx, &shared).await;
        debug!(%remote, %transport, flow = id.0, reason = why, "connection closed");
        if let Ok(mut t) = shared.flows.lock() {
            t.by_id.remove(&id);
            if t.by_addr.get(&(transport, remote)) == Some(&id) {
                t.by_addr.remove(&(transport, remote));
            }
        }
        shared.connections.fetch_sub(1, Ordering::Relaxed);
        let gauge = match transport {
            Transport::Tls => &shared.metrics.gauges.connections_tls,
            _ => &shared.metrics.gauges.connections_tcp,
        };
        gauge.fetch_sub(1, Ordering::Relaxed);
        let _ = shared.events.send(Event::Closed(id)).await;
    });
    id
}

fn parse_limit_label(e: &ParseError) -> Option<&'static str> {
    match e {
        ParseError::TooLarge { .. } => Some("message_size"),
        ParseError::TooManyHeaders => Some("headers"),
        ParseError::LineTooLong { .. } => Some("line_length"),
        _ => None,
    }
}

/// One connection: read, frame, answer pings, write queued messages, enforce the time limits.
/// Returns why it ended.
async fn connection<S>(
    stream: S,
    flow: Flow,
    mut rx: mpsc::Receiver<Vec<u8>>,
    mut kill: watch::Receiver<bool>,
    shared: &Arc<Shared>,
) -> &'static str
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let s = &shared.settings;
    let mut framer = StreamFramer::new(s.sip_limits.clone());
    let mut buf = vec![0u8; 16 * 1024];
    let mut stop = shared.shutdown.clone();
    let mut last_rx = tokio::time::Instant::now();
    let mut partial_since: Option<tokio::time::Instant> = None;
    loop {
        let idle_at = last_rx + s.idle_timeout;
        let deadline = match partial_since {
            Some(p) => idle_at.min(p + s.message_timeout),
            None => idle_at,
        };
        tokio::select! {
            r = rd.read(&mut buf) => {
                let n = match r {
                    Ok(0) => return "eof",
                    Ok(n) => n,
                    Err(_) => return "read error",
                };
                last_rx = tokio::time::Instant::now();
                framer.push(buf.get(..n).unwrap_or(&[]));
                loop {
                    match framer.next_frame() {
                        Ok(Some(Frame::Message(message))) => {
                            partial_since = None;
                            shared.metrics.message("in", &message);
                            if tracing::enabled!(target: "sagw::sip", Level::TRACE) {
                                trace!(target: "sagw::sip", remote = %flow.remote, transport = %flow.transport, "recv\n{}", redacted(&message));
                            }
                            if shared.events.send(Event::Inbound(Inbound { message, flow })).await.is_err() {
                                return "shutdown";
                            }
                        }
                        Ok(Some(Frame::KeepAlive(KeepAliveKind::Ping))) => {
                            if wr.write_all(b"\r\n").await.is_err() {
                                return "write error";
                            }
                        }
                        Ok(Some(Frame::KeepAlive(KeepAliveKind::Pong))) => {}
                        Ok(None) => break,
                        Err(e) => {
                            shared.metrics.inc("sagw_parse_errors_total", format!("transport=\"{}\"", flow.transport), 1);
                            if let Some(l) = parse_limit_label(&e) {
                                shared.metrics.limit(l);
                            }
                            debug!(remote = %flow.remote, error = %e, "unframeable input: closing");
                            return "parse error";
                        }
                    }
                }
                // A lone CRLF may be held back by the framer (pong or half a ping): not a
                // partial message.
                if framer.buffered() > 4 {
                    partial_since.get_or_insert(last_rx);
                } else {
                    partial_since = None;
                }
            }
            m = rx.recv() => {
                let Some(bytes) = m else { return "closed by core" };
                if wr.write_all(&bytes).await.is_err() {
                    return "write error";
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                if partial_since.is_some_and(|p| p + s.message_timeout <= tokio::time::Instant::now()) {
                    shared.metrics.limit("message_timeout");
                    return "message timeout";
                }
                shared.metrics.limit("idle_timeout");
                return "idle timeout";
            }
            _ = kill.changed() => return "killed",
            _ = stop.changed() => {
                let _ = wr.shutdown().await;
                return "shutdown";
            }
        }
    }
}

// ----------------------------------------------------------------------------------------------
// UDP

async fn udp_task(sock: Arc<UdpSocket>, shared: Arc<Shared>) {
    let mut stop = shared.shutdown.clone();
    let limits = shared.settings.sip_limits.clone();
    let mut buf = vec![0u8; 65_536];
    loop {
        let r = tokio::select! {
            r = sock.recv_from(&mut buf) => r,
            _ = stop.changed() => return,
        };
        // ICMP errors from earlier sends surface here on some systems: not fatal.
        let Ok((n, remote)) = r else { continue };
        let Some(data) = buf.get(..n) else { continue };
        if n > limits.max_message_bytes {
            shared.metrics.limit("udp_size");
            continue;
        }
        if data.iter().all(|b| matches!(b, b'\r' | b'\n' | 0)) {
            // Keep-alive datagram (CRLF or NUL padding): nothing to do.
            continue;
        }
        let message = match Message::parse_with(data, &limits) {
            Ok(m) => m,
            Err(e) => {
                shared
                    .metrics
                    .inc("sagw_parse_errors_total", "transport=\"udp\"".into(), 1);
                if let Some(l) = parse_limit_label(&e) {
                    shared.metrics.limit(l);
                }
                debug!(%remote, error = %e, "unparsable datagram dropped");
                continue;
            }
        };
        shared.metrics.message("in", &message);
        if tracing::enabled!(target: "sagw::sip", Level::TRACE) {
            trace!(target: "sagw::sip", %remote, transport = "udp", "recv\n{}", redacted(&message));
        }
        let flow = Flow {
            id: UDP_FLOW,
            transport: Transport::Udp,
            remote,
        };
        if shared
            .events
            .send(Event::Inbound(Inbound { message, flow }))
            .await
            .is_err()
        {
            return;
        }
    }
}
