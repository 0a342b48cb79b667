//! The edge proxy state machine (RFC 3261 §16 transaction-stateful proxy, §17 transactions).
//!
//! One `Edge` owns every table; its methods are spread over the modules below by concern.

mod accepted;
mod answered;
mod delivered;
mod forward;
mod hops;
mod reconfigure;
mod request;
mod response;
mod routing;
mod shares;
mod timers;
mod transaction;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use self::hops::HopSet;
use self::timers::{TimerEntry, TimerKind};
use self::transaction::{ClientTx, ServerTx};
use crate::config::{EdgeConfig, Intake};
use crate::hook::{ClientAuth, NoAuth};
use crate::registrar::{BindingRecord, Registrar, RemoteBinding, RemoteBindingError};
use crate::token::Ids;
use crate::types::{Action, Flow, FlowId, Inbound, LimitKind, Now, Report, Stats, Transport};
use crate::{Map, Set};

/// The sans-IO edge proxy: feed it messages, timeouts and delivery failures; drain [`Action`]s.
///
/// ```
/// use std::time::{Instant, SystemTime};
/// use sagw_proxy::{Edge, EdgeConfig, LocalAddrs, Secret, Now, Inbound, Flow, FlowId, Transport, Action};
/// let local = LocalAddrs { host: "192.0.2.10".into(), aliases: vec![], udp: Some(5060), tcp: Some(5060), tls: None, extra_ports: vec![] };
/// let mut edge = Edge::new(EdgeConfig::new(local, Secret::new([9; 32])));
/// let now = Now { mono: Instant::now(), wall: SystemTime::now() };
/// let flow = Flow { id: FlowId(1), transport: Transport::Tcp, remote: "198.51.100.7:40000".parse().unwrap() };
/// let msg = sagw_sip::Message::parse(b"OPTIONS sip:192.0.2.10 SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.1;branch=z9hG4bK1\r\n\
///     From: <sip:a@x>;tag=1\r\nTo: <sip:192.0.2.10>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").unwrap();
/// edge.handle_inbound(Inbound { message: msg, flow }, now);
/// let Some(Action::Send { message, .. }) = edge.poll_action() else { panic!() };
/// assert_eq!(message.status_code(), Some(200));
/// ```
pub struct Edge {
    cfg: EdgeConfig,
    auth: Box<dyn ClientAuth>,
    ids: Ids,
    registrar: Registrar,
    /// Boxed: a transaction is several hundred bytes and a UDP edge keeps ~100 000 of them
    /// (Timer J); inline, every insert moved the whole struct into a table far larger than the
    /// caches, and every probe walked it.
    server: Map<String, Box<ServerTx>>,
    /// Non-INVITE transactions answered here over UDP, kept only to repeat their answer until
    /// Timer J: counted with `server` (limits, statistics), each far smaller.
    answered: self::answered::Answers,
    /// Clients' INVITEs a 2xx accepted, by what the ACK of that 2xx names (see `accepted`).
    accepted: self::accepted::AcceptedInvites,
    /// Dialogs delivered to clients under another address than their own (see `delivered`).
    delivered: self::delivered::DeliveredDialogs,
    /// How many of `server` and `answered` each client holds.
    shares: self::shares::ClientShares,
    client: Map<String, Box<ClientTx>>,
    /// The client transactions sent over each stream flow, by key (some may have ended since:
    /// pruned as the list grows, checked when the flow closes): a closed connection fails its
    /// branches at once instead of at Timer C.
    stream_branches: Map<crate::types::FlowId, Vec<String>>,
    timers: BinaryHeap<Reverse<TimerEntry>>,
    timer_seq: u64,
    /// Clean-up timers, by their instant on the clean-up grid. Kept apart from the heap: there
    /// is one per finished transaction (128 000 at 4000 proxied MESSAGE/s over UDP; those
    /// answered here wait in `answered` instead), and in the heap every push and pop walked
    /// ~17 levels of a table far larger than the caches; here a timer joins the bucket of its
    /// grid step (~250 buckets for Timer J) and a due bucket is taken whole.
    cleanups: BTreeMap<Instant, Vec<TimerKind>>,
    /// Where the clean-up timers' grid starts (the first timer scheduled).
    cleanup_origin: Option<Instant>,
    actions: VecDeque<Action>,
    /// The next-hop targets' health, the probes, the requests waiting for a name.
    hops: HopSet,
    /// Open, or draining (see [`Edge::set_intake`]).
    intake: Intake,
    trusted_flows: TrustedFlows,
    request_bufs: self::request::RequestBufs,
}

/// What the driver said of stream flows beyond their addresses, for as long as each lives.
#[derive(Debug, Default)]
pub(crate) struct TrustedFlows {
    /// Peers verified as trusted servers when the flow was established (by their TLS
    /// certificate, see [`Edge::trust_stream_flow`]): servers like a
    /// [`EdgeConfig::trusted_peers`] address.
    servers: Set<FlowId>,
    /// TLS connections the gateway accepted ([`Edge::accepted_tls_flow`]): a TLS next hop's
    /// address and port do not make them a server's.
    accepted_tls: Set<FlowId>,
}

impl TrustedFlows {
    fn contains(&self, flow: &Flow) -> bool {
        // A UDP flow id names a socket shared by every peer: never trusted as a whole.
        flow.transport.is_reliable() && self.servers.contains(&flow.id)
    }
}

impl std::fmt::Debug for Edge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edge")
            .field("server_transactions", &self.server_transactions())
            .field("client_transactions", &self.client.len())
            .field("bindings", &self.registrar.len())
            .finish()
    }
}

/// True when `flow` belongs to a client rather than a next hop or trusted server.
fn is_client(cfg: &EdgeConfig, trusted: &TrustedFlows, flow: &Flow) -> bool {
    if trusted.contains(flow) {
        return false;
    }
    // A TLS next hop proves itself by its certificate on the connections the gateway opens to
    // it. A connection accepted from its address and port proved nothing: the address is
    // whatever DNS said the hop's name is, a forger's included, and any host may connect from
    // its own port 5061. Only a certificate or a `trusted_peers` address makes it a server's.
    if flow.transport == Transport::Tls && trusted.accepted_tls.contains(&flow.id) {
        return !is_trusted_peer(cfg, flow.remote);
    }
    !is_server(cfg, flow.transport, flow.remote)
}

/// True when `addr` over `transport` is a next hop or a trusted server.
fn is_server(cfg: &EdgeConfig, transport: Transport, addr: SocketAddr) -> bool {
    let canonical = crate::uri::canonical(addr);
    cfg.next_hops
        .iter()
        .any(|h| crate::uri::canonical(h.addr) == canonical && h.transport == transport)
        || is_trusted_peer(cfg, addr)
}

/// True when `addr` is one of [`EdgeConfig::trusted_peers`].
fn is_trusted_peer(cfg: &EdgeConfig, addr: SocketAddr) -> bool {
    let ip = crate::uri::canonical(addr).ip();
    cfg.trusted_peers.iter().any(|p| p.to_canonical() == ip)
}
impl Edge {
    /// A proxy with no authentication stage.
    pub fn new(cfg: EdgeConfig) -> Edge {
        Edge::with_auth(cfg, Box::new(NoAuth))
    }

    /// A proxy whose client messages pass `auth` (see [`crate::hook`]).
    pub fn with_auth(cfg: EdgeConfig, auth: Box<dyn ClientAuth>) -> Edge {
        Edge {
            hops: HopSet::new(&cfg.next_hops),
            ids: Ids::new(cfg.secret.clone()),
            registrar: Registrar::new(cfg.registrar.clone()),
            cfg,
            auth,
            server: Map::default(),
            answered: Default::default(),
            accepted: Default::default(),
            delivered: Default::default(),
            shares: Default::default(),
            client: Map::default(),
            stream_branches: Map::default(),
            timers: BinaryHeap::new(),
            timer_seq: 0,
            cleanups: BTreeMap::new(),
            cleanup_origin: None,
            actions: VecDeque::new(),
            intake: Intake::Open,
            trusted_flows: TrustedFlows::default(),
            request_bufs: self::request::RequestBufs::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &EdgeConfig {
        &self.cfg
    }

    /// The location service.
    pub fn registrar(&self) -> &Registrar {
        &self.registrar
    }

    /// Server transactions, whole or kept as their answer alone: what the limit and the
    /// statistics count.
    fn server_transactions(&self) -> usize {
        self.server.len() + self.answered.len()
    }

    /// Live state counts.
    pub fn stats(&self) -> Stats {
        Stats {
            server_transactions: self.server_transactions(),
            client_transactions: self.client.len(),
            bindings: self.registrar.len(),
        }
    }

    /// The next action for the driver.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Edge::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.timers.peek().map(|Reverse(e)| e.at),
            self.cleanups.first_key_value().map(|(at, _)| *at),
            self.answered.next_expiry(),
            self.registrar.next_expiry(),
            self.hops.deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// True when `flow` belongs to a client rather than a next hop or trusted server.
    pub fn is_client(&self, flow: &Flow) -> bool {
        is_client(&self.cfg, &self.trusted_flows, flow)
    }

    /// The driver verified the peer of stream flow `id` as a trusted server when the connection
    /// was established (e.g. its TLS certificate names a trusted peer): what arrives over it, and
    /// what is sent over it, is a server's, as from a [`EdgeConfig::trusted_peers`] address,
    /// until [`Edge::flow_closed`]. Call it before handing the proxy the flow's first message.
    /// Has no effect on UDP flows (their id names a socket every peer shares).
    pub fn trust_stream_flow(&mut self, id: FlowId) {
        self.trusted_flows.servers.insert(id);
    }

    /// Whether stream flow `id` was trusted with [`Edge::trust_stream_flow`].
    pub fn is_trusted_stream_flow(&self, id: FlowId) -> bool {
        self.trusted_flows.servers.contains(&id)
    }

    /// The driver accepted TLS flow `id` (a connection a peer opened, not one the gateway opened
    /// to a next hop and verified): it is a server's only by its certificate
    /// ([`Edge::trust_stream_flow`]) or a [`EdgeConfig::trusted_peers`] address, never by being
    /// at a TLS next hop's address and port. Call it before handing the proxy the flow's first
    /// message.
    pub fn accepted_tls_flow(&mut self, id: FlowId) {
        self.trusted_flows.accepted_tls.insert(id);
    }

    /// A stream flow closed: its registrations are useless now (the client must re-register).
    pub fn flow_closed(&mut self, flow: crate::types::FlowId, now: Now) {
        self.fail_branches_over(flow, now);
        self.trusted_flows.servers.remove(&flow);
        self.trusted_flows.accepted_tls.remove(&flow);
        self.registrar.flow_closed(flow);
        self.delivered.flow_closed(flow);
        self.report_binding_changes();
        self.prune_stale_timers();
    }

    /// Every live local binding as plain data, for a snapshot (see
    /// [`Registrar::export_bindings`]).
    pub fn export_bindings(&self, now: Now) -> Vec<BindingRecord> {
        self.registrar.export_bindings(now)
    }

    /// Restores bindings saved by [`Edge::export_bindings`] before a restart (see
    /// [`Registrar::import_bindings`]); the caller leaves out those over stream flows, which did
    /// not survive. Returns how many were restored.
    pub fn import_bindings(&mut self, records: Vec<BindingRecord>, now: Now) -> usize {
        self.registrar.import_bindings(records, now)
    }

    /// The live local bindings of `aor` as the other nodes of a pool install them: each with the
    /// Route that reaches its client through this gateway (`<sip:TOKEN@host:port;transport=tcp;lr>`,
    /// the token naming the client's flow and the SA endpoint the REGISTER proved, under this
    /// gateway's MAC: the other nodes share the key, and this gateway acts only on its own
    /// tokens). Empty when the gateway has no TCP listener (nodes talk over TCP).
    pub fn pool_bindings(&self, aor: &str, now: Now) -> Vec<(BindingRecord, String)> {
        if self.cfg.local.tcp.is_none() {
            return Vec::new();
        }
        self.registrar
            .export_aor(aor, now)
            .into_iter()
            .map(|r| {
                let token = self.ids.flow_token(&r.flow, r.endpoint.as_ref());
                let route = self.our_uri(Transport::Tcp, Some(&token), "");
                (r, route)
            })
            .collect()
    }

    /// Installs the binding of `device` under `aor` that another node of the pool holds: a
    /// request for the AOR is forked to it too, sent to `binding.peer` with `binding.node_route`
    /// on top and the Request-URI unchanged. It is not signed here (the outbound stage is for
    /// clients; the other node signs it for its client). A live local binding of the same device
    /// takes precedence. The peer must be a next hop or in [`crate::EdgeConfig::trusted_peers`]
    /// (as every node of the pool must be for the others): its responses are not a client's.
    pub fn install_remote_binding(
        &mut self,
        aor: &str,
        device: &str,
        binding: RemoteBinding,
        now: Now,
    ) -> Result<(), RemoteBindingError> {
        let (transport, addr) = binding.peer;
        if !is_server(&self.cfg, transport, addr) {
            return Err(RemoteBindingError::UntrustedPeer);
        }
        self.registrar
            .install_remote_binding(aor, device, binding, now)
    }

    /// Removes a remote binding installed by [`Edge::install_remote_binding`]; false when there
    /// was none.
    pub fn remove_remote_binding(&mut self, aor: &str, device: &str) -> bool {
        self.registrar.remove_remote_binding(aor, device)
    }

    fn report(&mut self, r: Report) {
        self.actions.push_back(Action::Report(r));
    }

    fn report_binding_changes(&mut self) {
        let Edge {
            registrar, actions, ..
        } = self;
        actions.extend(
            registrar
                .drain_changes()
                .map(|(aor, change)| Action::Report(Report::Binding { aor, change })),
        );
        for _ in 0..self.registrar.take_evictions() {
            self.report(Report::Limit(LimitKind::BindingsPerAor));
        }
    }

    /// Process one message from the network.
    pub fn handle_inbound(&mut self, inbound: Inbound, now: Now) {
        self.start_probes(now.mono);
        let Inbound { message, flow } = inbound;
        let from_client = self.is_client(&flow);
        if message.is_request() {
            self.on_request(message, flow, from_client, now);
        } else {
            self.on_response(message, flow, from_client, now);
        }
        self.prune_stale_timers();
    }
}

/// A TCP flow from one client address, `id` telling connections apart: for the tables' unit
/// tests (`accepted`, `delivered`).
#[cfg(test)]
pub(crate) fn test_flow(id: u64) -> Flow {
    Flow {
        id: FlowId(id),
        transport: Transport::Tcp,
        remote: "198.51.100.1:40001".parse().unwrap(),
    }
}
