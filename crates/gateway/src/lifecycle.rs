//! The seams between the gateway's control surfaces (signals, the admin API, `sagw admin`) and
//! what they act on: reloading the configuration, draining, and the next hops' state.
//!
//! Why traits here rather than calls into the driver: the admin API, the reload and the next-hop
//! prober are separate parts of the gateway; each implements or consumes one of these, and
//! `driver::start` wires them together.

use serde::Serialize;

/// What a reload did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ReloadReport {
    /// Settings now in effect that differ from before (config keys or sections, e.g.
    /// `tls.cert`, `proxy.next_hops`).
    pub applied: Vec<String>,
    /// Settings that changed in the file but take effect only after a restart (listen
    /// addresses, `[state]`): the running values stay.
    pub needs_restart: Vec<String>,
}

/// Why a reload changed nothing: the running configuration stays as it was.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct ReloadError(pub String);

/// Reload and drain, as the gateway's lifecycle offers them to its control surfaces.
pub trait Lifecycle: Send + Sync + 'static {
    /// Re-read the configuration file and apply what can change live. A broken file keeps the
    /// running configuration and says why.
    fn reload(&self) -> Result<ReloadReport, ReloadError>;
    /// Stop accepting new work: new connections refused, new requests answered 503 with
    /// Retry-After, transactions in progress finish.
    fn drain(&self);
    /// True once draining has begun (`/readyz` is then false).
    fn draining(&self) -> bool;
}

/// One next-hop target as the prober and the resolver see it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct HopState {
    /// As configured (`tls:pool.example.com`, `udp:10.0.0.5:5060`).
    pub configured: String,
    /// `udp`, `tcp` or `tls`.
    pub transport: String,
    /// The address in use (`ip:port`).
    pub addr: String,
    /// Up (serving), or down after consecutive failed probes or transactions.
    pub up: bool,
    /// Failed probes (or transactions) in a row.
    pub consecutive_failures: u32,
    /// Milliseconds since the last probe answered, if any did.
    pub last_ok_ms_ago: Option<u64>,
}

/// The next hops' state, for the admin API and metrics.
pub trait HopView: Send + Sync + 'static {
    /// Every target, in the order they are tried.
    fn hops(&self) -> Vec<HopState>;
}
