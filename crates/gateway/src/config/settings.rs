//! What validation yields: the typed [`Settings`] the gateway runs with, and what it derives
//! from them for the sans-IO edge and for the warnings about trust that can be forged.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use sagw_proxy::{Mode, NextHop, RegistrarConfig, RouteTarget, Timers, Transport};

use crate::cpu::{CoreCpu, Workers};

/// Output format of the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event.
    Human,
    /// One JSON object per event.
    Json,
}

/// Where the TLS certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertSource {
    /// Operator-provided PEM files.
    Files {
        /// Chain.
        cert: PathBuf,
        /// Key.
        key: PathBuf,
    },
    /// Generated at first start and kept in this directory.
    Generated {
        /// Directory.
        dir: PathBuf,
        /// SANs.
        names: Vec<String>,
    },
}

/// Validated, typed settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Log filter directive.
    pub log_level: String,
    /// Log format.
    pub log_format: LogFormat,
    /// UDP listen address.
    pub udp: Option<SocketAddr>,
    /// TCP listen address.
    pub tcp: Option<SocketAddr>,
    /// TLS listen address.
    pub tls: Option<SocketAddr>,
    /// Every listener in [`crate::listener::ListenerId`] order: `[listen]`'s udp, tcp, tls (those
    /// set), then `[[listen.extra]]` in file order.
    pub listeners: Vec<crate::listener::ListenerSpec>,
    /// Advertised host (empty: derived from the listen addresses at start).
    pub advertise: String,
    /// Aliases.
    pub aliases: Vec<String>,
    /// Certificate.
    pub cert: CertSource,
    /// CA bundle for TLS next hops.
    pub next_hop_ca: Option<PathBuf>,
    /// TLS handshake limit.
    pub handshake_timeout: Duration,
    /// Proxy mode.
    pub mode: Mode,
    /// Served domains.
    pub domains: Vec<String>,
    /// The next hops given as addresses (`hops.specs` has them all, names included).
    pub next_hops: Vec<NextHop>,
    /// Trusted peers.
    pub trusted_peers: Vec<IpAddr>,
    /// Servers trusted by their TLS certificate (`tls.peer_ca`, `proxy.trusted_peer_names`).
    pub peer_trust: Option<crate::inbound_config::PeerTrustSettings>,
    /// Where a client's Route may lead besides the next hops.
    pub client_routes: Vec<RouteTarget>,
    /// Retry-After.
    pub retry_after: Duration,
    /// Transaction limit.
    pub max_transactions: usize,
    /// One client's share of it.
    pub max_transactions_per_client: usize,
    /// Where the core thread runs.
    pub core_cpu: CoreCpu,
    /// How many runtime worker threads run the connection tasks.
    pub workers: Workers,
    /// How long a drain waits for the transactions in progress before the gateway stops.
    pub drain_grace: Duration,
    /// Registrar.
    pub registrar: RegistrarConfig,
    /// Timers.
    pub timers: Timers,
    /// Connection limit.
    pub max_connections: usize,
    /// Accepted connections per source address (IPv6: per /56).
    pub max_connections_per_ip: usize,
    /// Message limits for the parser.
    pub sip_limits: sagw_sip::Limits,
    /// Idle limit.
    pub idle_timeout: Duration,
    /// Partial-message limit.
    pub message_timeout: Duration,
    /// Per-connection queue.
    pub write_queue: usize,
    /// Bytes waiting for one connection's socket.
    pub write_queue_bytes: usize,
    /// What all accepted connections' backlogs may hold together.
    pub write_backlog_total_bytes: usize,
    /// How long one write to a connection may take.
    pub write_timeout: Duration,
    /// Metrics endpoint.
    pub metrics: Option<SocketAddr>,
    /// Client authentication; `None` when `[auth] enabled = false`.
    pub auth: Option<crate::auth_config::AuthSettings>,
    /// Where SAs, bindings and keys live (docs/pools.md).
    pub state: crate::state_config::StateSettings,
    /// The admin API and the load balancers' SIP probes.
    pub admin: crate::admin_config::AdminSettings,
    /// Next hops (addresses and names), probing, DNS and outbound TLS.
    pub hops: crate::hop_config::HopSettings,
}

/// A server the gateway trusts by the source address of its messages, where that address can be
/// forged: over UDP anyone who can send the gateway a datagram can write any source address (a
/// TCP connection needs the handshake, which an attacker off the path cannot complete).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpoofableTrust {
    /// A `proxy.trusted_peers` address while a UDP listener is open: a datagram from it skips
    /// client authentication.
    TrustedPeer(IpAddr),
    /// A UDP `proxy.next_hops` entry: datagrams from its address and port are taken as the next
    /// hop's (requests to clients, responses).
    UdpNextHop(SocketAddr),
    /// A `proxy.next_hops` name without `;transport=tcp`/`tls` or `sips:`: DNS may resolve it to
    /// UDP targets (A records alone do), trusted as [`SpoofableTrust::UdpNextHop`] then.
    NextHopNameMaybeUdp(String),
}

impl std::fmt::Display for SpoofableTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpoofableTrust::TrustedPeer(ip) => write!(
                f,
                "proxy.trusted_peers: messages from {ip} skip client authentication, and a UDP \
                 listener is open: anyone who can reach it can forge {ip} as the source of a \
                 datagram and be trusted as that server. Reach trusted servers over TCP or TLS \
                 only (close the UDP listeners or filter spoofed sources at the network edge), \
                 or trust them by their TLS certificate instead (tls.peer_ca, \
                 proxy.trusted_peer_names)"
            ),
            SpoofableTrust::UdpNextHop(addr) => write!(
                f,
                "proxy.next_hops: udp:{addr} is trusted by its source address and port, which \
                 anyone who can send the gateway a datagram can forge to pass requests and \
                 responses as the next hop's. Prefer tcp: or tls: next hops (mutual TLS for \
                 servers is planned), or filter spoofed sources at the network edge"
            ),
            SpoofableTrust::NextHopNameMaybeUdp(name) => write!(
                f,
                "proxy.next_hops: {name} may resolve to UDP targets (RFC 3263: A records alone, \
                 or NAPTR/SRV records for UDP), each then trusted by a source address and port \
                 anyone who can send the gateway a datagram can forge. Name the transport \
                 (;transport=tcp, sips:) or filter spoofed sources at the network edge"
            ),
        }
    }
}

impl Settings {
    /// What the sans-IO edge is configured with: these settings, the addresses the gateway
    /// advertises, the flow-token key and the next hops as resolved. One place, so that a bench
    /// or test edge (`examples/digest_flow.rs`) runs as the gateway's does.
    pub fn edge_config(
        &self,
        local: sagw_proxy::LocalAddrs,
        flow_token_key: sagw_proxy::Secret,
        next_hops: Vec<NextHop>,
    ) -> sagw_proxy::EdgeConfig {
        let mut cfg = sagw_proxy::EdgeConfig::new(local, flow_token_key);
        cfg.mode = self.mode;
        cfg.domains = self.domains.clone();
        cfg.next_hops = next_hops;
        cfg.probe = self.hops.probe;
        cfg.trusted_peers = self.trusted_peers.clone();
        cfg.client_routes = self.client_routes.clone();
        cfg.timers = self.timers;
        cfg.retry_after = self.retry_after;
        cfg.max_transactions = self.max_transactions;
        cfg.max_transactions_per_client = self.max_transactions_per_client;
        cfg.registrar = self.registrar.clone();
        cfg.probers = self.admin.sip_probers.clone();
        cfg
    }

    /// Every warning about this configuration, logged at start and printed by `sagw
    /// check-config`: trust by a forgeable address ([`Settings::spoofable_trust`]), address trust
    /// beside certificate trust ([`Settings::address_trust_beside_names`]), a directory attribute
    /// users write themselves (`DirectoryConfig::self_writable_attribute`).
    pub fn warnings(&self) -> Vec<String> {
        let directory = self
            .auth
            .as_ref()
            .and_then(|a| a.directory.as_ref())
            .and_then(|d| d.self_writable_attribute());
        self.spoofable_trust()
            .iter()
            .map(ToString::to_string)
            .chain(
                self.address_trust_beside_names()
                    .iter()
                    .map(ToString::to_string),
            )
            .chain(directory)
            .chain(self.open_without_authentication())
            .chain(self.tcp_next_hops_not_trusted())
            .collect()
    }

    /// Edge mode with a next hop reached over TCP whose address is not a trusted peer: a server
    /// such as Kamailio (default `tcp_reuse_port = no`) sends the requests for the gateway's
    /// clients (IMs, calls, BYEs, NOTIFYs, through their Path) over a connection it opens itself,
    /// from an ephemeral port, which only `trusted_peers` makes a server's: without it every one
    /// of them was challenged and no client received anything.
    fn tcp_next_hops_not_trusted(&self) -> Vec<String> {
        if self.mode != Mode::Edge {
            return Vec::new();
        }
        self.next_hops
            .iter()
            .filter(|h| h.transport == Transport::Tcp)
            .filter(|h| {
                !self
                    .trusted_peers
                    .iter()
                    .any(|p| p.to_canonical() == h.addr.ip().to_canonical())
            })
            .map(|h| {
                format!(
                    "proxy.next_hops: tcp:{} is not in proxy.trusted_peers: the requests it sends your clients over a connection of its own (Kamailio's default) are challenged, and clients receive no IM, call or BYE; add \"{}\" to proxy.trusted_peers (no client may share that address)",
                    h.addr,
                    h.addr.ip()
                )
            })
            .collect()
    }

    /// Listeners anyone may reach while nothing is authenticated, and a metrics listener open
    /// beyond the host (it has no token; it shows the next hops and the load): a configuration
    /// made for a benchmark and started in production made the gateway an open relay into the
    /// servers behind it, with one line in the start log and nothing from `check-config`.
    fn open_without_authentication(&self) -> Vec<String> {
        let beyond = |a: &SocketAddr| !a.ip().is_loopback();
        let mut out = Vec::new();
        if self.auth.is_none() {
            let open: Vec<String> = self
                .listeners
                .iter()
                .filter(|l| beyond(&l.addr))
                .map(|l| format!("{} {}", l.name, l.addr))
                .collect();
            if !open.is_empty() {
                out.push(format!(
                    "authentication is disabled ([auth] enabled = false) and listeners are open beyond this host ({}): every request from anyone is relayed unauthenticated",
                    open.join(", ")
                ));
            }
        }
        if let Some(m) = self.metrics.filter(|m| beyond(m)) {
            out.push(format!(
                "metrics.listen = {m} is open beyond this host without a token: anyone who reaches it reads the next hops and the load"
            ));
        }
        out
    }

    /// Servers trusted by a source address that can be forged (see [`SpoofableTrust`]): logged
    /// as warnings at start and by `sagw check-config`.
    pub fn spoofable_trust(&self) -> Vec<SpoofableTrust> {
        let udp_listener = self.listeners.iter().any(|l| l.transport == Transport::Udp);
        let peers = self
            .trusted_peers
            .iter()
            .filter(|_| udp_listener)
            .map(|ip| SpoofableTrust::TrustedPeer(*ip));
        let hops = self
            .next_hops
            .iter()
            .filter(|h| h.transport == Transport::Udp)
            .map(|h| SpoofableTrust::UdpNextHop(h.addr));
        let names = self
            .hops
            .specs
            .iter()
            .filter_map(|spec| match &spec.target {
                crate::resolver::HopTarget::Name(q)
                    if !q.secure && matches!(q.transport, None | Some(Transport::Udp)) =>
                {
                    Some(SpoofableTrust::NextHopNameMaybeUdp(spec.configured.clone()))
                }
                _ => None,
            });
        peers.chain(hops).chain(names).collect()
    }
}
