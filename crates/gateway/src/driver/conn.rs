//! Connection tasks: accepting (PROXY header, TLS handshake, then the connection is handed to
//! the core thread), opening connections to next hops, and each such connection's reader and
//! writer side by side.

use std::future::Future;
use std::task::Poll;

use super::*;

/// A TCP connection to `addr`, from `source` when the gateway listens on a specific address of
/// that family: servers that trust the gateway by its address (a pool's other gateways, a next
/// hop's `trusted_peers`) see the address it listens on, not whatever the kernel picks.
pub(super) async fn connect_from(
    source: Option<IpAddr>,
    addr: SocketAddr,
) -> std::io::Result<TcpStream> {
    match source {
        Some(ip) if ip.is_ipv4() == addr.is_ipv4() && !ip.is_unspecified() => {
            let sock = if ip.is_ipv4() {
                tokio::net::TcpSocket::new_v4()?
            } else {
                tokio::net::TcpSocket::new_v6()?
            };
            sock.bind(SocketAddr::new(ip, 0))?;
            sock.connect(addr).await
        }
        _ => TcpStream::connect(addr).await,
    }
}

pub(super) async fn connect_task(key: (Transport, SocketAddr), shared: Arc<Shared>) {
    let (transport, addr) = key;
    let limit = shared.settings.load().handshake_timeout;
    let result = tokio::time::timeout(limit, async {
        let tcp = connect_from(shared.outbound_source, addr).await.ok()?;
        let _ = tcp.set_nodelay(true);
        match transport {
            Transport::Tls => {
                // Verified by the name it was configured or resolved under, else its address.
                let host = shared
                    .hop_names
                    .lock()
                    .ok()
                    .and_then(|n| n.get(&key).map(|h| h.name.clone()))
                    .filter(|name| !name.is_empty());
                let Some((cfg, name)) =
                    shared.outbound_tls.load().for_target(host.as_deref(), addr)
                else {
                    warn!(%addr, "TLS next hop: no CA configured for it (tls.next_hop_ca)");
                    return None;
                };
                let tls = match tokio_rustls::TlsConnector::from(cfg)
                    .connect(name.clone(), tcp)
                    .await
                {
                    Ok(t) => t,
                    Err(e) => {
                        // A wrong name, an unknown CA, a refused client certificate: the
                        // operator needs to see which.
                        warn!(%addr, server_name = ?name, error = %e, "TLS to next hop failed");
                        return None;
                    }
                };
                Some(spawn_outbound(tls, addr, Transport::Tls, &shared))
            }
            _ => Some(spawn_outbound(tcp, addr, Transport::Tcp, &shared)),
        }
    })
    .await;
    let ev = match result {
        Ok(Some(_)) => Event::Connected(key),
        _ => Event::ConnectFailed(key),
    };
    shared.post(ev).await;
}

/// Accepts connections on one TCP or TLS listener. From the listener's `balancers` (when it has
/// some) a PROXY protocol header is read first and names the client; from anyone else the
/// connection is the client's own. Until shutdown, or until the gateway drains (the socket closes
/// with the task: new connections are refused, those open go on). Either way the client's address is admitted under
/// `limits.max_connections_per_ip`, TLS is handshaken, and the connection becomes a flow.
pub(super) async fn accept_task(
    listener: TcpListener,
    id: ListenerId,
    transport: Transport,
    balancers: Option<Balancers>,
    shared: Arc<Shared>,
) {
    let mut stop = shared.shutdown.clone();
    let mut intake = shared.intake.clone();
    loop {
        if *intake.borrow_and_update() == Intake::Draining {
            return;
        }
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
            _ = intake.changed() => continue,
        };
        let Ok((mut stream, remote)) = accepted else {
            // EMFILE and friends: back off instead of spinning.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        if shared.connections.load(Ordering::Relaxed) >= shared.settings.load().max_connections {
            shared.metrics.limit("connections");
            debug!(%remote, "connection limit reached: refusing");
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        // The certificate and the trusted peers in effect now: a reload swaps them for the
        // connections that follow.
        let (tls, peers) = match transport {
            Transport::Tls => (
                shared
                    .tls_server
                    .load_full()
                    .map(tokio_rustls::TlsAcceptor::from),
                shared.peers.load_full(),
            ),
            _ => (None, None),
        };
        if balancers.as_ref().is_some_and(|b| b.contains(remote.ip())) {
            // Every client behind the balancer shares its address: the per-address cap is for
            // the address the header names, so it is applied once the header is read.
            let setting_up = SettingUp::new(&shared);
            let shared = shared.clone();
            tokio::spawn(async move {
                let deadline =
                    tokio::time::Instant::now() + shared.settings.load().handshake_timeout;
                let Some(client) = proxied_client(&mut stream, remote, deadline, &shared).await
                else {
                    return;
                };
                let Some(slot) = admit(&shared, client) else {
                    return;
                };
                let how = SetUp {
                    listener: id,
                    tls,
                    peers,
                    deadline,
                };
                establish(stream, client, slot, how, setting_up).await;
            });
            continue;
        }
        // The slot is held from here to the end of the connection, TLS handshake included.
        let Some(slot) = admit(&shared, remote) else {
            drop(stream);
            continue;
        };
        if tls.is_none() {
            let how = Handover {
                listener: id,
                slot,
                trust: FlowTrust::ByAddress,
            };
            let shared = shared.clone();
            tokio::spawn(async move {
                hand_to_core(stream, None, remote, Transport::Tcp, how, &shared).await;
            });
            continue;
        }
        let setting_up = SettingUp::new(&shared);
        let deadline = tokio::time::Instant::now() + shared.settings.load().handshake_timeout;
        let how = SetUp {
            listener: id,
            tls,
            peers,
            deadline,
        };
        tokio::spawn(establish(stream, remote, slot, how, setting_up));
    }
}

/// A connection being set up (PROXY header, TLS handshake) counts against
/// `limits.max_connections` like an established one: half-open peers hold sockets too.
pub(super) struct SettingUp(Arc<Shared>);

impl SettingUp {
    fn new(shared: &Arc<Shared>) -> SettingUp {
        shared.connections.fetch_add(1, Ordering::Relaxed);
        SettingUp(shared.clone())
    }
}

impl Drop for SettingUp {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The place of a connection from `remote` under `limits.max_connections_per_ip`: `None` when
/// refused (counted), `Some(None)` when exempt.
fn admit(shared: &Shared, remote: SocketAddr) -> Option<Option<IpSlot>> {
    match shared.per_ip.admit(remote.ip()) {
        Admission::Counted(slot) => Some(Some(slot)),
        Admission::Exempt => Some(None),
        Admission::Refused => {
            shared.metrics.limit("connections_per_ip");
            debug!(%remote, "per-address connection limit reached: refusing");
            None
        }
    }
}

/// Reads the PROXY protocol header a balancer at `balancer` wrote before its client's bytes: the
/// client's address, or the balancer's own for its LOCAL connections (health checks). `None`
/// when the header is refused, late or missing: the connection is then closed (dropped).
async fn proxied_client(
    stream: &mut TcpStream,
    balancer: SocketAddr,
    deadline: tokio::time::Instant,
    shared: &Shared,
) -> Option<SocketAddr> {
    match tokio::time::timeout_at(deadline, proxy_protocol::read_header(stream)).await {
        Ok(Ok(proxy_protocol::Source::Client(client))) => {
            debug!(%balancer, %client, "PROXY protocol header: connection of a client");
            Some(client)
        }
        Ok(Ok(proxy_protocol::Source::Balancer)) => Some(balancer),
        Ok(Err(proxy_protocol::ReadError::Header(e))) => {
            // Only configured balancers get here: a refused header is a misconfiguration (a
            // balancer that does not send one, or sends v1 where it is not expected) worth
            // seeing at the default level.
            warn!(%balancer, error = %e, "PROXY protocol header refused: closing the connection");
            shared.metrics.limit("proxy_protocol_invalid");
            None
        }
        Ok(Err(proxy_protocol::ReadError::Io(e))) => {
            // A balancer's plain TCP health check connects and closes: nothing to report.
            debug!(%balancer, error = %e, "connection from a balancer ended before its PROXY protocol header");
            None
        }
        Err(_) => {
            warn!(%balancer, "no complete PROXY protocol header within tls.handshake_timeout_secs: closing the connection");
            shared.metrics.limit("proxy_protocol_timeout");
            None
        }
    }
}

/// How an accepted connection is set up: the listener it came to, the TLS acceptor in effect
/// when it was accepted (none on a TCP listener), whose certificates make a trusted peer, and
/// the time by which the handshake must be done.
struct SetUp {
    listener: ListenerId,
    tls: Option<tokio_rustls::TlsAcceptor>,
    peers: Option<Arc<PeerTrust>>,
    deadline: tokio::time::Instant,
}

/// The rest of an accepted connection's set-up: the TLS handshake (when the listener is a TLS
/// one) by the deadline, the peer certificate judged, then the flow.
async fn establish(
    stream: TcpStream,
    remote: SocketAddr,
    slot: Option<IpSlot>,
    how: SetUp,
    setting_up: SettingUp,
) {
    let SetUp {
        listener: id,
        tls,
        peers,
        deadline,
    } = how;
    let shared = setting_up.0.clone();
    let Some(acceptor) = tls else {
        drop(setting_up);
        let how = Handover {
            listener: id,
            slot,
            trust: FlowTrust::ByAddress,
        };
        hand_to_core(stream, None, remote, Transport::Tcp, how, &shared).await;
        return;
    };
    let hs = tokio::time::timeout_at(deadline, acceptor.accept(stream)).await;
    drop(setting_up);
    match hs {
        Ok(Ok(tls)) => {
            let verdict = match &peers {
                Some(p) => p.judge(tls.get_ref().1.peer_certificates()),
                None => PeerVerdict::NoCertificate,
            };
            let trust = match verdict {
                PeerVerdict::Trusted(name) => {
                    info!(%remote, peer = %name, "trusted peer by its TLS certificate");
                    FlowTrust::PeerCertificate
                }
                PeerVerdict::Untrusted(why) => {
                    debug!(%remote, reason = %why, "client certificate does not make a trusted peer: a client");
                    FlowTrust::ByAddress
                }
                PeerVerdict::NoCertificate => FlowTrust::ByAddress,
            };
            let (tcp, session) = tls.into_inner();
            let how = Handover {
                listener: id,
                slot,
                trust,
            };
            hand_to_core(
                tcp,
                Some(Box::new(session)),
                remote,
                Transport::Tls,
                how,
                &shared,
            )
            .await;
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
}

/// What an accepted connection takes to the core: the listener, its place under
/// `limits.max_connections_per_ip`, and how its peer is judged.
struct Handover {
    listener: ListenerId,
    slot: Option<IpSlot>,
    trust: FlowTrust,
}

/// Hands a set-up connection to the core thread, which reads and writes it from then on
/// (`core_stream`). It is in the flow table and counted from here, as a task's connection is.
async fn hand_to_core(
    stream: TcpStream,
    tls: Option<Box<rustls::ServerConnection>>,
    remote: SocketAddr,
    transport: Transport,
    how: Handover,
    shared: &Arc<Shared>,
) {
    // Non-blocking as tokio had it, out of tokio's reactor and into the core's epoll.
    let stream = match stream.into_std() {
        Ok(s) => s,
        Err(e) => {
            debug!(%remote, error = %e, "connection lost before the core took it");
            return;
        }
    };
    let id = how
        .listener
        .flow(shared.next_flow.fetch_add(1, Ordering::Relaxed));
    let flow = Flow {
        id,
        transport,
        remote,
    };
    shared.register_connection(&flow, ConnIo::Core);
    debug!(%remote, %transport, flow = id.0, "connection open");
    let adopted = core_stream::Adopted {
        stream,
        tls,
        flow,
        slot: how.slot,
        trust: how.trust,
    };
    if !shared.post(Event::Adopt(Box::new(adopted))).await {
        // The core has stopped: the connection closes with the event.
        shared.unregister_connection(&flow);
    }
}

/// How the proxy is to judge a flow's peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FlowTrust {
    /// By its address, as always: a next hop, a `proxy.trusted_peers` address, else a client.
    ByAddress,
    /// A trusted server: its TLS certificate names one of `proxy.trusted_peer_names`.
    PeerCertificate,
}

/// Registers a connection the gateway opened (to a next hop) in the flow table and starts its
/// task, which reads and writes it. Accepted connections are the core's instead
/// ([`hand_to_core`]).
pub(super) fn spawn_outbound<S>(
    stream: S,
    remote: SocketAddr,
    transport: Transport,
    shared: &Arc<Shared>,
) -> FlowId
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let listener = ListenerId::OUTBOUND;
    // The listener rides in the id (see crate::listener): the authentication stage reads it.
    let id = listener.flow(shared.next_flow.fetch_add(1, Ordering::Relaxed));
    let (tx, rx) = mpsc::channel(shared.settings.load().write_queue);
    let (kill_tx, kill_rx) = watch::channel(false);
    let flow = Flow {
        id,
        transport,
        remote,
    };
    shared.register_connection(&flow, ConnIo::Task { tx, kill: kill_tx });
    let shared = shared.clone();
    tokio::spawn(async move {
        debug!(%remote, %transport, flow = id.0, "connection open");
        let why = connection(stream, flow, rx, kill_rx, &shared).await;
        debug!(%remote, %transport, flow = id.0, reason = why.label(), "connection closed");
        shared.unregister_connection(&flow);
        shared.post(Event::Closed(id)).await;
        shared
            .post(Event::OutboundClosed((transport, remote)))
            .await;
    });
    id
}

pub(super) fn parse_limit_label(e: &ParseError) -> Option<&'static str> {
    match e {
        ParseError::TooLarge { .. } => Some("message_size"),
        ParseError::TooManyHeaders => Some("headers"),
        ParseError::LineTooLong { .. } => Some("line_length"),
        _ => None,
    }
}

/// Why a connection task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Closed {
    /// The peer closed it.
    Eof,
    /// Reading failed.
    ReadError,
    /// Writing failed.
    WriteError,
    /// One write did not complete within `limits.write_timeout_secs`: the peer does not read.
    WriteTimeout,
    /// Input that cannot be framed as SIP (or over a size limit).
    ParseError,
    /// Nothing received for `limits.idle_timeout_secs`.
    IdleTimeout,
    /// A partial message not completed within `limits.message_timeout_secs`.
    MessageTimeout,
    /// The core closed it (its write queue was full).
    Killed,
    /// A message would have taken the bytes waiting for its socket past
    /// `limits.write_queue_bytes`.
    BacklogBytes,
    /// What all accepted connections' backlogs hold passed `limits.write_backlog_total_bytes`,
    /// and this one came first in the order they are closed in (clients' first, the largest
    /// first).
    BacklogTotal,
    /// The core dropped its end of the write queue.
    QueueDropped,
    /// The gateway is stopping.
    Shutdown,
    /// A reload took away the trust its TLS certificate gave it.
    NoLongerTrusted,
}

impl Closed {
    pub(super) fn label(self) -> &'static str {
        match self {
            Closed::Eof => "eof",
            Closed::ReadError => "read error",
            Closed::WriteError => "write error",
            Closed::WriteTimeout => "write timeout",
            Closed::ParseError => "parse error",
            Closed::IdleTimeout => "idle timeout",
            Closed::MessageTimeout => "message timeout",
            Closed::Killed => "killed",
            Closed::BacklogBytes => "write queue bytes",
            Closed::BacklogTotal => "write backlog total",
            Closed::QueueDropped => "closed by core",
            Closed::Shutdown => "shutdown",
            Closed::NoLongerTrusted => "no longer trusted",
        }
    }
}

/// One connection: a reader (frame, hand messages to the core, note pings, enforce the idle and
/// slow-message timers) and a writer (queued messages and pongs, each write bounded by the write
/// timeout) run side by side in this one task, with the core's kill and the shutdown beside them.
///
/// Why side by side rather than one loop: a write awaited inside the loop's read branch (as it once
/// was) stopped everything else while the peer did not read, so a peer that sent CRLF pings and
/// never read kept its connection for ever; neither the timers nor the kill ran. Here the futures
/// are polled independently: a blocked write stops only the writer, and the first of them to end
/// ends the connection. One task, not two: no hand-off between tasks per message.
pub(super) async fn connection<S>(
    stream: S,
    flow: Flow,
    mut rx: mpsc::Receiver<Vec<u8>>,
    mut kill: watch::Receiver<bool>,
    shared: &Arc<Shared>,
) -> Closed
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (rd, mut wr) = tokio::io::split(stream);
    let pong = PongOwed::default();
    let mut stop = shared.shutdown.clone();
    // The limits in effect when the connection opened (a reload applies to the next ones).
    let settings = shared.settings.load_full();
    let why = tokio::select! {
        why = read_loop(rd, flow, &pong, shared, &settings) => why,
        why = write_loop(&mut wr, &mut rx, &pong, settings.write_timeout) => why,
        _ = kill.changed() => Closed::Killed,
        _ = stop.changed() => Closed::Shutdown,
    };
    match why {
        Closed::WriteTimeout => shared.metrics.limit("write_timeout"),
        Closed::IdleTimeout => shared.metrics.limit("idle_timeout"),
        Closed::MessageTimeout => shared.metrics.limit("message_timeout"),
        Closed::Shutdown => {
            // A close_notify for TLS, a FIN for TCP; bounded, the peer may not be reading.
            let _ = tokio::time::timeout(settings.write_timeout, wr.shutdown()).await;
        }
        _ => {}
    }
    why
}

/// The reading half: frames messages for the core, asks the writer for pongs, and closes the
/// connection when it is idle or a message takes too long to arrive. Never writes.
pub(super) async fn read_loop<R>(
    mut rd: R,
    flow: Flow,
    pong: &PongOwed,
    shared: &Shared,
    s: &Settings,
) -> Closed
where
    R: AsyncRead + Unpin,
{
    let mut framer = StreamFramer::new(s.sip_limits.clone());
    let mut buf = vec![0u8; 16 * 1024];
    let mut last_rx = tokio::time::Instant::now();
    let mut partial_since: Option<tokio::time::Instant> = None;
    let deadline = |last_rx: tokio::time::Instant, partial: Option<tokio::time::Instant>| {
        let idle_at = last_rx + s.idle_timeout;
        partial.map_or(idle_at, |p| idle_at.min(p + s.message_timeout))
    };
    // One timer for the connection's life, armed lazily: a message does not move it (arming a
    // timer per read was a timer-wheel insertion and removal per message); when it fires the
    // real deadline is worked out and, if still ahead, the timer is armed for it. Only a
    // partial message, whose limit may come before the idle one, moves it earlier.
    let timer = tokio::time::sleep_until(deadline(last_rx, None));
    tokio::pin!(timer);
    loop {
        let n = tokio::select! {
            r = rd.read(&mut buf) => match r {
                Ok(0) => return Closed::Eof,
                Ok(n) => n,
                Err(_) => return Closed::ReadError,
            },
            () = &mut timer => {
                let now = tokio::time::Instant::now();
                if partial_since.is_some_and(|p| p + s.message_timeout <= now) {
                    return Closed::MessageTimeout;
                }
                let due = deadline(last_rx, partial_since);
                if due <= now {
                    return Closed::IdleTimeout;
                }
                timer.as_mut().reset(due);
                continue;
            }
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
                    // Waits while the core's channel is full: backpressure on this peer's reads,
                    // by design. The writer and the other branches keep running meanwhile.
                    if !shared.post(Event::Inbound(Inbound { message, flow })).await {
                        return Closed::Shutdown;
                    }
                }
                Ok(Some(Frame::KeepAlive(KeepAliveKind::Ping))) => pong.owe(),
                Ok(Some(Frame::KeepAlive(KeepAliveKind::Pong))) => {}
                Ok(None) => break,
                Err(e) => {
                    shared.metrics.parse_error(flow.transport);
                    if let Some(l) = parse_limit_label(&e) {
                        shared.metrics.limit(l);
                    }
                    debug!(remote = %flow.remote, error = %e, "unframeable input: closing");
                    return Closed::ParseError;
                }
            }
        }
        // A lone CRLF may be held back by the framer (pong or half a ping): not a partial message.
        if framer.buffered() > 4 {
            if partial_since.is_none() {
                partial_since = Some(last_rx);
                let due = deadline(last_rx, partial_since);
                if due < timer.deadline() {
                    timer.as_mut().reset(due);
                }
            }
        } else {
            partial_since = None;
        }
    }
}

/// The writing half: queued messages first, then an owed pong; each write (and its flush, which
/// pushes TLS records out) must complete within `limit`, else the peer is not reading.
pub(super) async fn write_loop<W>(
    wr: &mut W,
    rx: &mut mpsc::Receiver<Vec<u8>>,
    pong: &PongOwed,
    limit: std::time::Duration,
) -> Closed
where
    W: AsyncWrite + Unpin,
{
    loop {
        let next = std::future::poll_fn(|cx| match rx.poll_recv(cx) {
            Poll::Ready(Some(bytes)) => Poll::Ready(Some(Some(bytes))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => pong.poll_take(cx).map(|()| Some(None)),
        })
        .await;
        let Some(message) = next else {
            return Closed::QueueDropped;
        };
        let bytes: &[u8] = message.as_deref().unwrap_or(b"\r\n");
        let mut write = std::pin::pin!(async {
            wr.write_all(bytes).await?;
            wr.flush().await
        });
        // Most writes complete at once (the socket's buffer takes them): the write timer, a
        // clock read and a timer-wheel entry, is set only for a write that has to wait.
        let first = std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await;
        let done = match first {
            Poll::Ready(r) => Ok(r),
            Poll::Pending => tokio::time::timeout(limit, write).await,
        };
        match done {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Closed::WriteError,
            Err(_) => return Closed::WriteTimeout,
        }
    }
}

/// A pong owed to the peer. A ping owes it one; pings that arrive while a pong is still owed
/// (the peer does not read them) are answered by that one, so pongs never pile up in memory,
/// whatever the peer sends. A flag and the writer's waker rather than a `Notify`: the writer
/// looks for a pong each time its queue runs empty, once a message, and a `Notify` took a lock
/// to enqueue its waiter and another to take it out again.
#[derive(Default)]
pub(super) struct PongOwed {
    owed: AtomicBool,
    writer: atomic_waker::AtomicWaker,
}

impl PongOwed {
    fn owe(&self) {
        self.owed.store(true, Ordering::Release);
        self.writer.wake();
    }

    /// Ready (and no longer owed) when a pong is owed; else the writer is woken by the next
    /// [`PongOwed::owe`].
    fn poll_take(&self, cx: &mut std::task::Context<'_>) -> Poll<()> {
        if self.owed.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        self.writer.register(cx.waker());
        // A ping between the check and the registration woke no one: look again.
        if self.owed.swap(false, Ordering::AcqRel) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}
