//! Sans-IO SIP edge proxy: routing, Via/Record-Route/Path, transactions, registrar.
//!
//! The [`Edge`] state machine is driven the quinn-proto way: the driver hands it received
//! messages ([`Edge::handle_inbound`]), delivery failures ([`Edge::send_failed`]), closed flows
//! ([`Edge::flow_closed`]) and timeouts ([`Edge::handle_timeout`] at [`Edge::poll_timeout`]),
//! each with the current time ([`Now`]), and drains [`Action`]s ([`Edge::poll_action`]). There are
//! no sockets, no clocks and no RNG here: identifiers come from a caller-provided [`Secret`].
//!
//! What the proxy does (RFC 3261 §16 as an edge needs it):
//! * own Via on top with a unique `z9hG4bK` branch carrying a loop-detection hash (482), `received`
//!   and `rport` stamped on the client's Via (RFC 3581), Max-Forwards (483);
//! * transaction-stateful forwarding: 100 Trying for INVITE, retransmission absorption and
//!   UDP retransmission (Timers A/E/G), timeouts (408, Timer C), CANCEL matched to its INVITE,
//!   hop-by-hop ACK for non-2xx, stateless forwarding of 2xx ACKs and stray 2xx responses;
//! * double Record-Route (RFC 5658) with HMAC-protected flow tokens (RFC 5626 style) so in-dialog
//!   requests reach a client over the connection it used, even behind NAT;
//! * an embedded registrar ([`Registrar`]) storing the flow, `+sip.instance` and MS `epid` with
//!   each binding, requests to an AOR forked in parallel to every binding (first 2xx wins, the
//!   rest are cancelled, else the best failure), or, in [`Mode::Edge`], REGISTER forwarded with a
//!   Path header;
//! * next hops with fail-over and active OPTIONS probing (down after N failures in a row, up on the
//!   first answer); all down -> 503 with Retry-After at once; host names in a Route are resolved
//!   by the driver on request ([`Action::Resolve`], [`Edge::resolved`]);
//! * the authentication hook ([`ClientAuth`]): every message from a client passes an inbound
//!   stage, every message to a client an outbound stage that runs last.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod config;
mod edge;
mod edit;
pub mod hook;
mod registrar;
mod token;
mod types;
pub mod uri;

/// Hash map for the core's tables. Their keys are mostly client-controlled (AORs, contacts,
/// branches, Call-IDs), so the hasher must be randomly seeded or a client could send keys that all
/// collide (HashDoS). SipHash-1-3 (std's default) is that, but it was ~6 % of a REGISTER's
/// instructions; foldhash's `RandomState` is several times cheaper on short strings and still
/// seeded at random (a per-process seed plus a per-map one), so collisions cannot be computed
/// offline. It is not a cryptographic hash; the tables are also bounded (transactions by
/// `max_transactions`, bindings by the clients' own registrations).
pub(crate) type Map<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Hash set with the hasher of [`Map`], for the same reason.
pub(crate) type Set<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;

pub use config::{
    EdgeConfig, Intake, LiveSettings, LocalAddrs, Mode, NextHop, ProbeConfig, RouteTarget, Timers,
};
pub use edge::Edge;
pub use edit::{build_response, reason_phrase};
pub use hook::{
    Answering, AuthNote, ClientAuth, ClientKey, InboundContext, InboundVerdict, NoAuth,
    OutboundContext, OutboundKind, OutboundVerdict, SaEndpoint, source_key,
};
pub use registrar::{
    Binding, BindingInfo, BindingRecord, Registrar, RegistrarConfig, RemoteBinding,
    RemoteBindingError,
};
pub use token::{Secret, Unique, push_hex};
pub use types::{
    Action, BindingChange, DropReason, Flow, FlowId, HopHealth, HopStatus, Inbound, LimitKind, Now,
    Report, ResolveId, ResolveRequest, SendToken, Stats, Target, Transport, on_grid,
};
