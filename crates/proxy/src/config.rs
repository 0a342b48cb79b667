//! Settings of the proxy core (the driver builds them from its TOML file).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::registrar::RegistrarConfig;
use crate::token::Secret;
use crate::types::Transport;

/// Where out-of-dialog requests from clients go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// REGISTER is handled by the embedded registrar; requests for registered AORs go to their
    /// bindings, other requests to the next hops (404 when there are none).
    #[default]
    Registrar,
    /// Pure edge: REGISTER and every out-of-dialog request go to the next hops; registrations
    /// get a Path header so the registrar sends requests for the client back through this edge.
    Edge,
}

/// A next hop: one target (an address and a transport). A next hop configured by name is
/// resolved by the driver into one or more of these ([`crate::Edge::set_next_hops`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NextHop {
    /// Transport towards it.
    pub transport: Transport,
    /// Its address.
    pub addr: SocketAddr,
}

/// Active health probing of the next hops (SIP OPTIONS, as Kamailio's dispatcher does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeConfig {
    /// Time between two probes of one target; `None`: no probing (a failed hop is skipped for
    /// [`EdgeConfig::retry_after`] after one failure, then tried again).
    pub interval: Option<Duration>,
    /// Consecutive failures (probes or transactions) after which a probed hop is down. It is up
    /// again on the first good answer.
    pub failures_down: u32,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            interval: None,
            failures_down: 3,
        }
    }
}

/// An address a client's `Route` may name besides the next hops (see
/// [`EdgeConfig::client_routes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteTarget {
    /// This address and port.
    Addr(SocketAddr),
    /// Any port of this address.
    Host(IpAddr),
}

impl RouteTarget {
    /// True when `addr` is this target.
    pub fn matches(&self, addr: SocketAddr) -> bool {
        match *self {
            RouteTarget::Addr(a) => a == addr,
            RouteTarget::Host(ip) => ip == addr.ip(),
        }
    }
}

/// How this proxy names itself in Via, Record-Route and Path, and recognises its own URIs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalAddrs {
    /// Host written in our headers (an IP address or a name that resolves to this host).
    pub host: String,
    /// Other names or addresses that mean this proxy in a Route or Request-URI.
    pub aliases: Vec<String>,
    /// Listening ports per transport (`None`: not listening).
    pub udp: Option<u16>,
    /// TCP port.
    pub tcp: Option<u16>,
    /// TLS port.
    pub tls: Option<u16>,
    /// Ports of further listeners (a driver may have several per transport): ours in a Route or
    /// Request-URI. Headers we write name the ports above.
    pub extra_ports: Vec<u16>,
}

impl LocalAddrs {
    /// The port we advertise for `transport` (falls back to another listener's port).
    pub fn port(&self, transport: Transport) -> u16 {
        let own = match transport {
            Transport::Udp => self.udp,
            Transport::Tcp => self.tcp,
            Transport::Tls => self.tls,
        };
        own.or(self.tcp)
            .or(self.udp)
            .or(self.tls)
            .unwrap_or(transport.default_port())
    }

    /// True when `host[:port]` names this proxy.
    pub fn is_local(&self, host: &str, port: Option<u16>, transport: Option<Transport>) -> bool {
        let host_ok = host.eq_ignore_ascii_case(&self.host)
            || self.aliases.iter().any(|a| a.eq_ignore_ascii_case(host));
        if !host_ok {
            return false;
        }
        let port = port.unwrap_or(transport.unwrap_or(Transport::Udp).default_port());
        [self.udp, self.tcp, self.tls].contains(&Some(port)) || self.extra_ports.contains(&port)
    }
}

/// RFC 3261 timer values and proxy time limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// T1, RTT estimate (500 ms).
    pub t1: Duration,
    /// T2, maximum non-INVITE retransmit interval (4 s).
    pub t2: Duration,
    /// T4, time a message may stay in the network (5 s).
    pub t4: Duration,
    /// Timer C, INVITE proceeding limit at a proxy (> 3 min).
    pub timer_c: Duration,
    /// How long to wait for any answer from a next hop before trying the next one.
    pub fail_over: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            timer_c: Duration::from_secs(181),
            fail_over: Duration::from_secs(4),
        }
    }
}

impl Timers {
    /// 64*T1: transaction timeout (Timers B, F, H, J).
    pub fn timeout(&self) -> Duration {
        self.t1.saturating_mul(64)
    }
}

/// Everything the core needs.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// Own addresses.
    pub local: LocalAddrs,
    /// Registrar or pure edge.
    pub mode: Mode,
    /// Domains the embedded registrar serves (empty: any).
    pub domains: Vec<String>,
    /// Next hops in preference order, with fail-over (the initial set: the driver replaces it
    /// with [`crate::Edge::set_next_hops`] as names are resolved again).
    pub next_hops: Vec<NextHop>,
    /// Addresses treated as servers (not clients) whatever their port, besides the next hops.
    pub trusted_peers: Vec<IpAddr>,
    /// Where a client's `Route` may send a request, besides the next hops and this proxy's own
    /// flow tokens. Anything else gets 403: loopback, link-local, internal hosts and the
    /// gateway's own other ports are never reachable from a client unless listed here.
    pub client_routes: Vec<RouteTarget>,
    /// Timers.
    pub timers: Timers,
    /// Retry-After of the 503 sent when no next hop is reachable, and how long a failed next
    /// hop is skipped.
    pub retry_after: Duration,
    /// Live server transactions above which new requests get 503.
    pub max_transactions: usize,
    /// Of those, how many one client may hold (the identity its requests proved, else its
    /// source address: an IPv4 address, an IPv6 /56); one more request from it gets 503. A
    /// request from a next hop or trusted peer counts against a share of the identity its
    /// P-Asserted-Identity names, if any, apart from that identity's own requests. [`EdgeConfig::new`] sets 25 000, a quarter of its
    /// `max_transactions`: set both together.
    pub max_transactions_per_client: usize,
    /// Active probing of the next hops.
    pub probe: ProbeConfig,
    /// Registrar settings.
    pub registrar: RegistrarConfig,
    /// Keyed identifiers (branches, tags, flow tokens).
    pub secret: Secret,
    /// Load balancers whose OPTIONS to this proxy itself (no user part, no Route) are answered
    /// here without the authentication stage: 200, or 503 while draining. From any other address
    /// the same OPTIONS meets the stage as before.
    pub probers: Vec<IpAddr>,
}

/// The settings [`crate::Edge::reconfigure`] changes while transactions and bindings live on:
/// everything in [`EdgeConfig`] but the own addresses, the mode and the secret, which name flows
/// and tokens that clients and servers already hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSettings {
    /// See [`EdgeConfig::domains`].
    pub domains: Vec<String>,
    /// See [`EdgeConfig::next_hops`].
    pub next_hops: Vec<NextHop>,
    /// See [`EdgeConfig::trusted_peers`].
    pub trusted_peers: Vec<IpAddr>,
    /// See [`EdgeConfig::client_routes`].
    pub client_routes: Vec<RouteTarget>,
    /// See [`EdgeConfig::timers`].
    pub timers: Timers,
    /// See [`EdgeConfig::retry_after`].
    pub retry_after: Duration,
    /// See [`EdgeConfig::max_transactions`].
    pub max_transactions: usize,
    /// See [`EdgeConfig::max_transactions_per_client`].
    pub max_transactions_per_client: usize,
    /// See [`EdgeConfig::registrar`].
    pub registrar: RegistrarConfig,
    /// See [`EdgeConfig::probe`].
    pub probe: ProbeConfig,
}

/// Whether the proxy takes new work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Intake {
    /// Every request is handled.
    #[default]
    Open,
    /// The gateway is going away: new out-of-dialog requests get 503 with Retry-After;
    /// in-dialog requests, ACK, CANCEL, retransmissions and responses go on as before, so the
    /// transactions and dialogs in progress can finish.
    Draining,
}

impl EdgeConfig {
    /// Defaults around the given own addresses and secret.
    pub fn new(local: LocalAddrs, secret: Secret) -> EdgeConfig {
        EdgeConfig {
            local,
            mode: Mode::Registrar,
            domains: Vec::new(),
            next_hops: Vec::new(),
            trusted_peers: Vec::new(),
            client_routes: Vec::new(),
            timers: Timers::default(),
            retry_after: Duration::from_secs(30),
            max_transactions: 100_000,
            max_transactions_per_client: 25_000,
            probe: ProbeConfig::default(),
            registrar: RegistrarConfig::default(),
            secret,
            probers: Vec::new(),
        }
    }
}
