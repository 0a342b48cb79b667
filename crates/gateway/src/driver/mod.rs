//! The driver: tokio tasks for listeners, handshakes and connections to next hops, the flow
//! table, and the core thread that owns the sans-IO [`Edge`], reads and writes the UDP sockets
//! and the accepted connections itself and executes the core's actions.
//!
//! Why a thread of its own rather than a tokio task: on UDP, the bulk of SIP traffic, every
//! datagram used to cross two tasks (a receiver task, then the core task), and each hand-off cost
//! a wake-up and often a context switch; these dominated the gateway's CPU per message in the sipp
//! benchmark. The core thread waits in one `epoll` (mio) on the UDP sockets, the accepted
//! connections, a waker and the next timer, drains what is queued in one go and answers on the
//! same thread.
//!
//! Accepted TCP and TLS connections (where Lync-style clients live) go the same way once their
//! PROXY header and TLS handshake are done in a task: the task hands the socket and the TLS
//! session to the core (`Event::Adopt`), which frames, answers and writes them itself
//! (`core_stream`), so a message on a stream costs no channel, no write queue and no wake-up of a
//! worker. A connection the peer does not read keeps at most `limits.write_queue_messages`
//! messages and `limits.write_queue_bytes` bytes waiting, and is closed when the socket has not
//! taken what waits within `limits.write_timeout_secs`; its reads, idle and slow-message timers
//! go on meanwhile (the core's sweep checks them).
//!
//! Connections the gateway opens to next hops stay tokio tasks (see `conn::connection`): they
//! send `Event`s over one bounded channel (backpressure: a flood slows its own readers, not the
//! core), wake the core only when it is asleep, and take the core's bytes through bounded write
//! queues, their reader and writer side by side so that a blocked write never stops the reads.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use arc_swap::{ArcSwap, ArcSwapOption};
use sagw_proxy::{
    Action, ClientAuth, Edge, Flow, FlowId, Inbound, Intake, LocalAddrs, NoAuth, Now, Report,
    Secret, SendToken, Target, Transport,
};
use sagw_sip::{Frame, KeepAliveKind, Message, ParseError, StreamFramer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{Level, debug, info, trace, warn};

use crate::config::{CertSource, Settings};
use crate::listener::{BoundListener, ListenerId};
use crate::logging::redacted;
use crate::metrics::Metrics;
use crate::peer_trust::{PeerTrust, PeerVerdict};
use crate::per_ip::{Admission, IpSlot, PerIp};
use crate::proxy_protocol::{self, Balancers};
use crate::tls::{self, CertInfo};

mod conn;
mod control;
mod core_connections;
mod core_stream;
mod core_thread;
mod setup;
mod udp_batch;

use conn::*;
use control::{AuthLive, Control, GatewayControl};
use core_thread::*;
pub use setup::{AuthSeams, start, start_with_auth, start_with_kerberos_backend, start_with_seams};

/// mio tokens of the core thread: the waker, then one per UDP socket (token 1 + its index).
const WAKE_TOKEN: mio::Token = mio::Token(0);
/// Datagrams read in one pass before the event channel and the timers get their turn.
const UDP_BUDGET: usize = 256;
/// Events taken from the channel in one pass before UDP and the timers get their turn.
const EVENT_BUDGET: usize = 256;
/// The core sleeps until the next timer rounded up to this grid. Every UDP transaction leaves
/// timers behind (Timer J or K, retransmissions), each at its own instant: without the grid the
/// core woke once per timer, as often as it woke for messages. SIP's timers are in hundreds of
/// milliseconds (T1 = 500 ms), so firing up to 4 ms late is immaterial.
const TIMER_GRID: std::time::Duration = std::time::Duration::from_millis(4);

/// Start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not bind.
    #[error("cannot listen on {what} {addr}: {source}")]
    Bind {
        /// Which listener (its name and transport) or endpoint.
        what: String,
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
    /// `[state]` could not be set up.
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    /// The core thread's poller could not be created.
    #[error("cannot start the core thread: {0}")]
    Core(std::io::Error),
    /// The DNS resolver could not be set up.
    #[error(transparent)]
    Resolver(#[from] crate::resolver::ResolverError),
    /// `proxy.core_cpu` names a CPU this process may not run on.
    #[error(
        "config key `proxy.core_cpu`: CPU {cpu} is not one this process may run on ({allowed})"
    )]
    CoreCpu {
        /// The configured CPU.
        cpu: usize,
        /// The CPUs the process may use.
        allowed: String,
    },
}

/// Wakes the core thread when it sleeps in `epoll`: set by the core just before it sleeps, so a
/// sender writes the eventfd once per sleep instead of once per event.
struct CoreWake {
    sleeping: AtomicBool,
    waker: mio::Waker,
}

impl CoreWake {
    fn notify(&self) {
        // Pairs with the core's store-then-check of the channel (a store-buffering pattern: the
        // fences order the channel's own atomics against `sleeping`): either the core sees the
        // event before sleeping, or this swap sees `sleeping` and wakes it.
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.sleeping.swap(false, Ordering::SeqCst) {
            let _ = self.waker.wake();
        }
    }

    fn force(&self) {
        let _ = self.waker.wake();
    }
}

enum Event {
    Inbound(Inbound),
    /// A deferred sign-in a worker finished (Kerberos, domain NTLM), with its request.
    AuthJob(Box<crate::auth_jobs::Done>),
    /// The store task's answer (pools).
    Pool(crate::pool::PoolEvent),
    Closed(FlowId),
    Connected((Transport, SocketAddr)),
    ConnectFailed((Transport, SocketAddr)),
    /// The targets of a name the core asked for (RFC 3263), in the order to try them.
    Resolved(sagw_proxy::ResolveId, Vec<crate::resolver::Resolved>),
    /// The configured next hops, resolved again.
    NextHops(Vec<crate::hops::HopOrigin>),
    /// A connection the gateway opened (to a next hop) closed.
    OutboundClosed((Transport, SocketAddr)),
    /// A question from the admin API.
    Admin(crate::admin::CoreQuery),
    /// An accepted connection, set up: from now on the core reads and writes it.
    Adopt(Box<core_stream::Adopted>),
}

struct ConnHandle {
    io: ConnIo,
    remote: SocketAddr,
    transport: Transport,
}

/// Who reads and writes a connection.
enum ConnIo {
    /// Its own task (connections the gateway opened): the core queues bytes for its writer,
    /// and closes it through `kill`.
    Task {
        tx: mpsc::Sender<Vec<u8>>,
        kill: watch::Sender<bool>,
    },
    /// The core thread (accepted connections, once set up: see `core_stream`).
    Core,
}

/// Who set a connection up, for the address table.
enum IoKind {
    Opened,
    Accepted,
}

#[derive(Default)]
struct FlowTable {
    by_id: HashMap<FlowId, ConnHandle>,
    by_addr: HashMap<(Transport, SocketAddr), FlowId>,
}

struct Shared {
    /// The settings in effect: a reload (driver/control.rs) swaps them whole; a connection takes
    /// those in effect when it opens.
    settings: ArcSwap<Settings>,
    metrics: Arc<Metrics>,
    events: mpsc::Sender<Event>,
    wake: Arc<CoreWake>,
    runtime: tokio::runtime::Handle,
    flows: Mutex<FlowTable>,
    next_flow: AtomicU64,
    connections: AtomicUsize,
    /// `limits.max_connections_per_ip`, for accepted connections.
    per_ip: Arc<PerIp>,
    shutdown: watch::Receiver<bool>,
    /// Client certificates, CAs and names for TLS to next hops; swapped by a reload.
    outbound_tls: arc_swap::ArcSwap<crate::tls_client::OutboundTls>,
    /// The host name each next-hop target was configured or resolved under: a TLS connection
    /// to it verifies that name (and sends it as SNI).
    hop_names: Mutex<HashMap<(Transport, SocketAddr), HopName>>,
    /// RFC 3263 resolution (next hops by name, names in a Route).
    resolver: Arc<crate::resolver::Resolver>,
    /// The next hops' state, as the core thread last published it.
    hop_table: Arc<crate::hops::HopTable>,
    /// Wakes the next-hop watcher: a reload changed what the names are.
    resolve_again: tokio::sync::Notify,
    /// Open, or draining: the accept tasks stop when it turns to draining.
    intake: watch::Receiver<Intake>,
    /// While draining, the server transactions still waiting for a final answer, as the core
    /// thread last counted them ([`control::NOT_COUNTED`] until it has).
    in_progress: AtomicUsize,
    /// The TLS listeners' certificate and settings: a reload swaps it, each handshake takes the
    /// one in effect (connections already open keep theirs).
    tls_server: ArcSwapOption<rustls::ServerConfig>,
    /// Servers trusted by their TLS certificate (`tls.peer_ca`, `proxy.trusted_peer_names`): a
    /// reload swaps it, each handshake is judged by the one in effect, and the core judges the
    /// connections trusted before again (`Core::judge_trusted_peers_again`).
    peers: ArcSwapOption<PeerTrust>,
    /// The address the first TCP listener is bound to: where opened connections leave from.
    outbound_source: Option<IpAddr>,
    /// Connections read and written by the core with bytes their sockets have not taken yet
    /// (the drain waits for them as for the tasks' write queues).
    core_backlogged: AtomicUsize,
}

impl Shared {
    /// A connection enters the flow table and the counts (accepted or opened, core's or task's).
    fn register_connection(&self, flow: &Flow, io: ConnIo) {
        let io_kind = match io {
            ConnIo::Task { .. } => IoKind::Opened,
            _ => IoKind::Accepted,
        };
        let key = (flow.transport, flow.remote);
        // What the gateway sends to a configured next hop goes over a connection it opened and
        // verified: one accepted from that address and port, even while the gateway has none of
        // its own, is never where such traffic goes.
        let configured_hop = self
            .hop_names
            .lock()
            .is_ok_and(|n| n.get(&key).is_some_and(|h| h.configured));
        if let Ok(mut t) = self.flows.lock() {
            t.by_id.insert(
                flow.id,
                ConnHandle {
                    io,
                    remote: flow.remote,
                    transport: flow.transport,
                },
            );
            // A connection the gateway opened (to a next hop, verified as configured) is where
            // its address's traffic goes; an accepted one from that address does not take its
            // place (a peer connecting from a TLS next hop's address and port, without the
            // certificate, took over what the gateway sent to that hop).
            if !(configured_hop && matches!(io_kind, IoKind::Accepted)) {
                note_address(&mut t.by_addr, key, flow.id, io_kind);
            }
        }
        self.connections.fetch_add(1, Ordering::Relaxed);
        self.metrics.connection_opened(flow.transport);
    }

    /// A connection leaves the flow table and the counts. The address entry is removed only if
    /// it is still this flow's: a newer connection from the same address may have taken it.
    fn unregister_connection(&self, flow: &Flow) {
        if let Ok(mut t) = self.flows.lock() {
            t.by_id.remove(&flow.id);
            if t.by_addr.get(&(flow.transport, flow.remote)) == Some(&flow.id) {
                t.by_addr.remove(&(flow.transport, flow.remote));
            }
        }
        self.connections.fetch_sub(1, Ordering::Relaxed);
        self.metrics.connection_closed(flow.transport);
    }

    /// Queue an event for the core thread (waiting while the channel is full) and wake it.
    /// False once the core has stopped.
    async fn post(&self, ev: Event) -> bool {
        let sent = self.events.send(ev).await.is_ok();
        self.wake.notify();
        sent
    }
}

/// A running gateway.
pub struct Running {
    /// Bound UDP address (the first UDP listener).
    pub udp: Option<SocketAddr>,
    /// Bound TCP address (the first TCP listener).
    pub tcp: Option<SocketAddr>,
    /// Bound TLS address (the first TLS listener).
    pub tls: Option<SocketAddr>,
    /// Every listener as bound, in [`ListenerId`] order.
    pub listeners: Vec<BoundListener>,
    /// Bound metrics address.
    pub metrics_addr: Option<SocketAddr>,
    /// Bound admin API address (`None`: off, or refused for want of a usable token file).
    pub admin_addr: Option<SocketAddr>,
    /// The TLS certificate in use.
    pub cert: Option<CertInfo>,
    /// The registry.
    pub metrics: Arc<Metrics>,
    /// The next hops' state ([`crate::lifecycle::HopView`]), for the admin API.
    pub hops: Arc<crate::hops::HopTable>,
    shutdown: watch::Sender<bool>,
    wake: Arc<CoreWake>,
    core_exit: watch::Receiver<Option<CoreExit>>,
    tasks: Vec<JoinHandle<()>>,
    save_on_stop: Option<SaveOnStop>,
    seams: Arc<crate::admin::ControlSeams>,
    /// Reload and drain.
    control: Arc<GatewayControl>,
}

/// What [`Running::save_state`] writes (memory backend).
struct SaveOnStop {
    core: Arc<sagw_auth::SecurityCore>,
    /// The credentials file in force, whose print goes with the SAs.
    users: Arc<crate::users::ReloadingStore>,
    path: std::path::PathBuf,
    sealer: Arc<sagw_state::Sealer>,
    /// The registrar's bindings (JSON), left here by the core thread as it stops.
    bindings: Arc<Mutex<Option<Vec<u8>>>>,
}

/// How the core thread ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoreExit {
    /// Asked to (shutdown, or the gateway was dropped).
    Stopped,
    /// A bug: it panicked. The gateway no longer handles SIP.
    Panicked,
}

impl Drop for Running {
    fn drop(&mut self) {
        // The core is an OS thread, not a task: it does not end with the runtime, so tell it.
        let _ = self.shutdown.send(true);
        self.wake.force();
    }
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("udp", &self.udp)
            .field("tcp", &self.tcp)
            .field("tls", &self.tls)
            .field("metrics_addr", &self.metrics_addr)
            .field("admin_addr", &self.admin_addr)
            .finish()
    }
}

impl Running {
    /// The control surfaces the admin API acts through: attach the [`crate::lifecycle::Lifecycle`]
    /// (reload, drain, `/readyz`) and the [`crate::lifecycle::HopView`] (next hops) here.
    pub fn seams(&self) -> &Arc<crate::admin::ControlSeams> {
        &self.seams
    }

    /// Resolves when the core thread has ended, and how: `main` exits when it panicked instead
    /// of running on without SIP.
    pub async fn stopped(&self) -> CoreExit {
        let mut rx = self.core_exit.clone();
        loop {
            if let Some(exit) = *rx.borrow_and_update() {
                return exit;
            }
            if rx.changed().await.is_err() {
                return CoreExit::Panicked;
            }
        }
    }

    /// Reload and drain, for the control surfaces (the admin API).
    pub fn lifecycle(&self) -> Arc<dyn crate::lifecycle::Lifecycle> {
        self.control.clone()
    }

    /// Where [`reload`](Self::reload) re-reads the configuration from (`sagw` sets it to the
    /// file it started with); without one a reload fails and changes nothing.
    pub fn set_config_source(&self, source: crate::reload::ConfigSource) {
        self.control.set_source(source);
    }

    /// Re-reads the configuration and applies what can change live (SIGHUP).
    pub fn reload(&self) -> Result<crate::lifecycle::ReloadReport, crate::lifecycle::ReloadError> {
        use crate::lifecycle::Lifecycle;
        self.control.reload()
    }

    /// `proxy.drain_grace_secs` as in effect now.
    pub fn drain_grace(&self) -> std::time::Duration {
        self.control.drain_grace()
    }

    /// Resolves once draining has begun and nothing is left to finish: no server transaction
    /// waits for its final answer, and every answer queued for a connection was taken by its
    /// writer.
    pub async fn drained(&self) {
        self.control.drained().await;
    }

    /// Saves the SAs and bindings for the next start (`[state] backend = "memory"` with a
    /// snapshot; [`shutdown`](Self::shutdown) calls it once the core has stopped).
    fn save_state(&self) {
        if let Some(s) = &self.save_on_stop
            && let Err(e) = crate::state::save(
                &s.core,
                s.bindings
                    .lock()
                    .ok()
                    .and_then(|mut b| b.take())
                    .unwrap_or_default(),
                s.users.print(),
                &s.path,
                &s.sealer,
            )
        {
            tracing::error!(error = %e, "state not saved: clients sign in again after the restart");
        }
    }

    /// Stop accepting, close connections and wait for the tasks (bounded by `grace`).
    pub async fn shutdown(mut self, grace: std::time::Duration) {
        let _ = self.shutdown.send(true);
        self.wake.force();
        let tasks = std::mem::take(&mut self.tasks);
        let all = async {
            futures_join(tasks).await;
            self.stopped().await;
        };
        let _ = tokio::time::timeout(grace, all).await;
        self.save_state();
    }
}

async fn futures_join(tasks: Vec<JoinHandle<()>>) {
    for t in tasks {
        if !t.is_finished() {
            let _ = t.await;
        }
    }
}

/// The servers never capped per address (they still count towards `max_connections`): a next
/// hop behind one address must not be locked out by its own traffic.
fn exempt(settings: &Settings) -> Vec<IpAddr> {
    settings
        .next_hops
        .iter()
        .map(|h| h.addr.ip())
        .chain(settings.trusted_peers.iter().copied())
        .collect()
}

/// The targets of resolved next hops, for the core.
fn cfg_hops(origins: &[crate::hops::HopOrigin]) -> Vec<sagw_proxy::NextHop> {
    origins.iter().map(|o| o.resolved.hop).collect()
}

/// Most names remembered for TLS verification: targets come from DNS answers (a Route's name can
/// be a client's choice), so the table is bounded; a target past it is verified by its address,
/// which fails closed.
const MAX_HOP_NAMES: usize = 4096;

/// The name a TLS connection to a target verifies, and whether a configured next hop gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct HopName {
    /// Empty: verified by its address.
    pub(super) name: String,
    /// A configured next hop's (resolved from the configuration): no name a Route resolves to
    /// replaces it. Else a client's Route to a name with an A record at the next hop's address
    /// chose the name (and so the `[[tls.next_hop]]` settings) the next hop was verified by.
    pub(super) configured: bool,
}

/// Remember the name of each target (for TLS) and the entry it came from (for the admin API).
fn record_hop_names(
    shared: &Shared,
    origins: &mut HashMap<sagw_proxy::NextHop, String>,
    hops: &[crate::hops::HopOrigin],
) {
    origins.clear();
    for o in hops {
        origins.insert(o.resolved.hop, o.configured.clone());
    }
    let Ok(mut names) = shared.hop_names.lock() else {
        return;
    };
    // Next hops no longer configured are names like any other now.
    for n in names.values_mut() {
        n.configured = false;
    }
    for r in hops.iter().map(|o| &o.resolved) {
        names.insert(
            (r.hop.transport, r.hop.addr),
            HopName {
                name: r.name.clone(),
                configured: true,
            },
        );
    }
}

/// Names a Route resolved to: remembered for targets that are not configured next hops.
fn remember_names<'a>(
    shared: &Shared,
    resolved: impl Iterator<Item = &'a crate::resolver::Resolved>,
) {
    let Ok(mut names) = shared.hop_names.lock() else {
        return;
    };
    for r in resolved.filter(|r| !r.name.is_empty()) {
        remember_route_name(&mut names, (r.hop.transport, r.hop.addr), &r.name);
    }
}

/// `name`, which a Route resolved to, for `key`: never over a configured next hop's, and at most
/// [`MAX_HOP_NAMES`] of them.
fn remember_route_name(
    names: &mut HashMap<(Transport, SocketAddr), HopName>,
    key: (Transport, SocketAddr),
    name: &str,
) {
    let known = match names.get(&key) {
        Some(n) if n.configured => return,
        Some(_) => true,
        None => false,
    };
    if known || names.len() < MAX_HOP_NAMES {
        names.insert(
            key,
            HopName {
                name: name.to_owned(),
                configured: false,
            },
        );
    }
}

/// The address table's entry for a new connection: the gateway's own (opened) connection to an
/// address always takes it; an accepted one only when it is free.
fn note_address(
    by_addr: &mut HashMap<(Transport, SocketAddr), FlowId>,
    key: (Transport, SocketAddr),
    id: FlowId,
    kind: IoKind,
) {
    match kind {
        IoKind::Opened => {
            by_addr.insert(key, id);
        }
        IoKind::Accepted => {
            by_addr.entry(key).or_insert(id);
        }
    }
}

fn now() -> Now {
    Now {
        mono: Instant::now(),
        wall: SystemTime::now(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_accepted_connection_does_not_take_an_opened_ones_address() {
        let mut t = HashMap::new();
        let key = (Transport::Tls, "192.0.2.7:5061".parse().unwrap());
        note_address(&mut t, key, FlowId(1), IoKind::Opened);
        note_address(&mut t, key, FlowId(2), IoKind::Accepted);
        assert_eq!(t.get(&key), Some(&FlowId(1)));
        note_address(&mut t, key, FlowId(3), IoKind::Opened);
        assert_eq!(t.get(&key), Some(&FlowId(3)));
        let other = (Transport::Tcp, "192.0.2.8:40000".parse().unwrap());
        note_address(&mut t, other, FlowId(4), IoKind::Accepted);
        assert_eq!(t.get(&other), Some(&FlowId(4)));
    }

    #[test]
    fn a_route_name_never_replaces_a_configured_next_hops() {
        let mut names = HashMap::new();
        let hop = (Transport::Tls, "192.0.2.7:5061".parse().unwrap());
        names.insert(
            hop,
            HopName {
                name: String::new(),
                configured: true,
            },
        );
        remember_route_name(&mut names, hop, "evil.example");
        assert_eq!(names[&hop].name, "", "still verified by its address");
        let other = (Transport::Tls, "192.0.2.9:5061".parse().unwrap());
        remember_route_name(&mut names, other, "a.example");
        remember_route_name(&mut names, other, "b.example");
        assert_eq!(names[&other].name, "b.example");
    }
}
