//! Values exchanged between the proxy core and its driver.

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use sagw_sip::Message;

/// Identifies one flow in the driver: a TCP/TLS connection, or the UDP socket a datagram used.
///
/// The driver allocates ids; the core only compares and stores them.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct FlowId(pub u64);

/// Transport protocol of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Transport {
    /// UDP datagrams.
    Udp,
    /// TCP stream.
    Tcp,
    /// TLS over TCP.
    Tls,
}

impl Transport {
    /// Via transport token (`UDP`, `TCP`, `TLS`).
    pub fn via_token(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }

    /// URI `transport=` parameter value.
    pub fn uri_param(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }

    /// Parse a Via or URI transport token (case-insensitive).
    pub fn from_token(token: &str) -> Option<Transport> {
        if token.eq_ignore_ascii_case("udp") {
            Some(Transport::Udp)
        } else if token.eq_ignore_ascii_case("tcp") {
            Some(Transport::Tcp)
        } else if token.eq_ignore_ascii_case("tls") {
            Some(Transport::Tls)
        } else {
            None
        }
    }

    /// True for connection-oriented transports, where the transport itself retransmits.
    pub fn is_reliable(self) -> bool {
        !matches!(self, Transport::Udp)
    }

    /// Default port (5060, or 5061 for TLS).
    pub fn default_port(self) -> u16 {
        match self {
            Transport::Tls => 5061,
            Transport::Udp | Transport::Tcp => 5060,
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.uri_param())
    }
}

/// A flow together with the peer address on it: enough to send back to the peer.
///
/// For UDP `id` names the socket and `remote` the peer; for streams `id` names the connection
/// (and `remote` is its peer address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Flow {
    /// The driver's flow id.
    pub id: FlowId,
    /// Transport of the flow.
    pub transport: Transport,
    /// The peer's address as seen by the socket (after NAT).
    pub remote: SocketAddr,
}

/// Where the driver must send a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Over this existing flow only (a client behind NAT can be reached no other way). For a
    /// stream flow that no longer exists the send fails.
    Flow(Flow),
    /// To this address: UDP datagram, or an existing connection to it, opened when there is none
    /// (next hops).
    Addr {
        /// Transport to use.
        transport: Transport,
        /// Destination.
        addr: SocketAddr,
    },
}

impl Target {
    /// Transport the message will use.
    pub fn transport(&self) -> Transport {
        match self {
            Target::Flow(f) => f.transport,
            Target::Addr { transport, .. } => *transport,
        }
    }

    /// Destination address.
    pub fn addr(&self) -> SocketAddr {
        match self {
            Target::Flow(f) => f.remote,
            Target::Addr { addr, .. } => *addr,
        }
    }
}

/// The current time as the caller sees it: the monotonic clock drives timers, the wall clock is
/// handed to the authentication stage (SA lifetimes and Digest nonces use `SystemTime`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time.
    pub mono: Instant,
    /// Wall-clock time.
    pub wall: SystemTime,
}

impl Now {
    /// `self` advanced by `d` on both clocks (tests drive time with it).
    pub fn after(self, d: Duration) -> Now {
        Now {
            mono: self.mono + d,
            wall: self.wall + d,
        }
    }
}

/// A message received by the driver.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// The parsed message.
    pub message: Message,
    /// The flow it arrived on.
    pub flow: Flow,
}

/// Opaque reference to the client transaction a send belongs to; handed back through
/// [`crate::Edge::send_failed`] when the driver cannot deliver.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SendToken(pub(crate) String);

/// Something the driver must do.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // Send is the common case; boxing it costs an allocation per message.
pub enum Action {
    /// Send a message.
    Send {
        /// Destination.
        to: Target,
        /// The message, ready for the wire.
        message: Message,
        /// Set when the core wants to know about a delivery failure (next hop unreachable, flow
        /// gone): pass it to [`crate::Edge::send_failed`].
        token: Option<SendToken>,
    },
    /// An event for metrics and logs.
    Report(Report),
    /// Resolve a host name (RFC 3263) and hand the targets back with
    /// [`crate::Edge::resolved`]: a request waits for them. The core never resolves itself.
    Resolve(ResolveRequest),
}

/// Identifies one name resolution the core asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResolveId(pub u64);

/// A host name to resolve the RFC 3263 way: the parts of the SIP URI that name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveRequest {
    /// Hand the answer back with this id.
    pub id: ResolveId,
    /// The host name, as written in the URI.
    pub host: String,
    /// The port, when the URI has one (then no SRV look-up, RFC 3263 §4.2).
    pub port: Option<u16>,
    /// The `transport` parameter (or TLS for `sips:`), when there is one (then no NAPTR).
    pub transport: Option<Transport>,
    /// A `sips:` URI: only TLS targets.
    pub secure: bool,
}

/// A next-hop target's health, as active probing (or, without it, failed transactions) judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HopHealth {
    /// Requests are sent to it.
    Up,
    /// Skipped: down after consecutive failures, until a probe (or the retry-after time, without
    /// probing) says otherwise.
    Down,
}

/// One next-hop target's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HopStatus {
    /// The target.
    pub hop: crate::config::NextHop,
    /// Up or down.
    pub health: HopHealth,
    /// Failed probes or transactions in a row.
    pub consecutive_failures: u32,
    /// When it last answered (a probe or a request), if ever.
    pub last_ok: Option<Instant>,
}

/// Observable events, for metrics and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// A proxied or locally answered transaction got its final response.
    Transaction {
        /// Request method.
        method: String,
        /// Final status code.
        status: u16,
        /// Time from the request's arrival to the final response.
        elapsed: Duration,
    },
    /// A message was dropped.
    Dropped(DropReason),
    /// A configured limit was hit.
    Limit(LimitKind),
    /// A next hop's state changed (a probe's outcome, a failed or answered transaction).
    Hop(HopStatus),
    /// A registrar binding was created, refreshed or removed.
    Binding {
        /// The address-of-record.
        aor: String,
        /// What happened.
        change: BindingChange,
    },
}

/// Why the core dropped a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// A response whose top Via is not ours.
    ResponseNotOurs,
    /// A response with no transaction and no way to route it.
    ResponseUnroutable,
    /// A request retransmission absorbed by its server transaction.
    Retransmission,
    /// The authentication stage said so.
    Auth,
    /// A message that fails RFC 3261 §8.1.1 checks and cannot be answered (ACK, responses).
    Invalid,
    /// A stray ACK or CANCEL response with nothing to do.
    Stray,
    /// A request that matches a server transaction another flow opened: RFC 3261 §17.2.3 matches
    /// on the top Via, which anyone can copy, so it is no retransmission of that transaction,
    /// and answering it would send to that transaction's peer.
    ForeignTransaction,
}

impl DropReason {
    /// Every reason, in declaration order: `reason as usize` indexes it (the gateway counts drops
    /// in a table of this size, without formatting a label per dropped message).
    pub const ALL: [DropReason; 7] = [
        DropReason::ResponseNotOurs,
        DropReason::ResponseUnroutable,
        DropReason::Retransmission,
        DropReason::Auth,
        DropReason::Invalid,
        DropReason::Stray,
        DropReason::ForeignTransaction,
    ];

    /// Short label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::ResponseNotOurs => "response_not_ours",
            DropReason::ResponseUnroutable => "response_unroutable",
            DropReason::Retransmission => "retransmission",
            DropReason::Auth => "auth",
            DropReason::Invalid => "invalid",
            DropReason::Stray => "stray",
            DropReason::ForeignTransaction => "foreign_transaction",
        }
    }
}

/// A limit of the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// Too many live transactions: new requests get 503.
    Transactions,
    /// One client holds its share of the live transactions: its new requests get 503.
    TransactionsPerClient,
    /// Too many bindings for one address-of-record: the oldest was evicted.
    BindingsPerAor,
    /// A new request while draining ([`crate::Intake::Draining`]): answered 503.
    Draining,
    /// Too many requests waiting for a name in a Route to be resolved: answered 503 (an ACK
    /// dropped).
    Resolutions,
}

impl LimitKind {
    /// Short label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            LimitKind::Transactions => "transactions",
            LimitKind::TransactionsPerClient => "transactions_per_client",
            LimitKind::BindingsPerAor => "bindings_per_aor",
            LimitKind::Draining => "draining",
            LimitKind::Resolutions => "resolutions",
        }
    }
}

/// What happened to a binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingChange {
    /// New binding.
    Added,
    /// Existing binding refreshed.
    Refreshed,
    /// Removed by the client, by expiry or because its flow closed.
    Removed,
}

/// Live state counts, for gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Server transactions.
    pub server_transactions: usize,
    /// Client transactions.
    pub client_transactions: usize,
    /// Registrar bindings.
    pub bindings: usize,
}

/// `t + d` without the overflow panic of `Instant + Duration`: an absurd duration means "a year
/// from now", which is "never" for every timer here.
pub(crate) fn later(t: Instant, d: Duration) -> Instant {
    t.checked_add(d)
        .or_else(|| t.checked_add(Duration::from_secs(365 * 86_400)))
        .unwrap_or(t)
}

/// `at` rounded up to the grid of step `grid` through `origin`: the first grid point at or
/// after `at`, less than one step later. The grid extends both ways from `origin`. Timers that
/// share a grid point fall due together, so a driver wakes once for all of them.
pub fn on_grid(origin: Instant, at: Instant, grid: Duration) -> Instant {
    let step = grid.as_nanos().max(1);
    let rounded = if at >= origin {
        let steps = at.duration_since(origin).as_nanos().div_ceil(step);
        u64::try_from(steps.saturating_mul(step))
            .ok()
            .and_then(|n| origin.checked_add(Duration::from_nanos(n)))
    } else {
        let steps = origin.duration_since(at).as_nanos() / step;
        u64::try_from(steps.saturating_mul(step))
            .ok()
            .and_then(|n| origin.checked_sub(Duration::from_nanos(n)))
    };
    rounded.unwrap_or(at)
}

#[cfg(test)]
mod grid_tests {
    use super::*;

    #[test]
    fn on_grid_rounds_up_by_less_than_a_step_either_side_of_the_origin() {
        let g = Duration::from_millis(4);
        let o = Instant::now() + Duration::from_secs(10);
        assert_eq!(on_grid(o, o, g), o);
        assert_eq!(on_grid(o, o + Duration::from_nanos(1), g), o + g);
        assert_eq!(on_grid(o, o + g, g), o + g);
        for at in [
            o + Duration::from_millis(501),
            o - Duration::from_millis(501),
            o - Duration::from_nanos(1),
        ] {
            let r = on_grid(o, at, g);
            assert!(r >= at && r - at < g, "{at:?} -> {r:?}");
        }
        // Two instants 1 ms apart inside one step share a grid point.
        assert_eq!(
            on_grid(o, o + Duration::from_millis(9), g),
            on_grid(o, o + Duration::from_millis(10), g)
        );
        assert_eq!(
            on_grid(o, o - Duration::from_millis(7), g),
            on_grid(o, o - Duration::from_millis(6), g)
        );
    }
}

#[cfg(test)]
mod drop_reason_tests {
    use super::*;

    #[test]
    fn all_lists_every_reason_at_its_own_index_with_a_distinct_label() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{r:?}");
            // A reason added to the enum but not to ALL fails to compile in this match.
            match r {
                DropReason::ResponseNotOurs
                | DropReason::ResponseUnroutable
                | DropReason::Retransmission
                | DropReason::Auth
                | DropReason::Invalid
                | DropReason::Stray
                | DropReason::ForeignTransaction => {}
            }
        }
        let mut labels: Vec<_> = DropReason::ALL.iter().map(|r| r.label()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), DropReason::ALL.len());
    }
}
