//! The next hops as the rest of the gateway sees them: the snapshot of their state the core
//! thread publishes (for the admin API through [`HopView`], and for metrics), and the resolution
//! of the configured names into targets.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sagw_proxy::{HopHealth, HopStatus, NextHop};
use tracing::{info, warn};

use crate::lifecycle::{HopState, HopView};
use crate::resolver::{HopTarget, NextHopSpec, Resolved, Resolver};

/// One target and the configuration entry it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HopOrigin {
    /// The target, and the name it was found under.
    pub resolved: Resolved,
    /// The `proxy.next_hops` entry.
    pub configured: String,
}

/// The next hops' state, published by the core thread after every change, read from any thread.
#[derive(Debug, Default)]
pub struct HopTable {
    rows: Mutex<Vec<(HopStatus, String)>>,
}

impl HopTable {
    /// Replace the snapshot: `status` from the core, each target labelled with the entry it
    /// came from (`origins`).
    /// A target going down or coming back is logged here, where the previous state is at hand.
    pub fn publish(&self, status: Vec<HopStatus>, origins: &HashMap<NextHop, String>) {
        let rows: Vec<(HopStatus, String)> = status
            .into_iter()
            .map(|s| {
                let configured = origins
                    .get(&s.hop)
                    .cloned()
                    .unwrap_or_else(|| hop_label(&s.hop));
                (s, configured)
            })
            .collect();
        if let Ok(mut r) = self.rows.lock() {
            for (s, configured) in &rows {
                let before = r
                    .iter()
                    .find(|(o, _)| o.hop == s.hop)
                    .map(|(o, _)| o.health);
                match (before, s.health) {
                    (Some(HopHealth::Up) | None, HopHealth::Down) => warn!(
                        hop = %hop_label(&s.hop), next_hop = %configured,
                        failures = s.consecutive_failures, "next hop down"
                    ),
                    (Some(HopHealth::Down), HopHealth::Up) => info!(
                        hop = %hop_label(&s.hop), next_hop = %configured, "next hop up again"
                    ),
                    _ => {}
                }
            }
            *r = rows;
        }
    }

    /// The targets published for the `proxy.next_hops` entry `configured`, in order.
    pub fn targets_of(&self, configured: &str) -> Vec<NextHop> {
        self.rows
            .lock()
            .map(|r| {
                r.iter()
                    .filter(|(_, c)| c == configured)
                    .map(|(s, _)| s.hop)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `sagw_next_hop_up{hop="tls:10.0.0.5:5061",configured="sips:pool.example.com"} 1`, one
    /// series per target, Prometheus text format.
    pub fn render_metrics(&self) -> String {
        let mut out = String::new();
        let Ok(rows) = self.rows.lock() else {
            return out;
        };
        let name = "sagw_next_hop_up";
        let _ = writeln!(
            out,
            "# HELP {name} 1 while a next-hop target is up (answering probes or requests), 0 while down\n# TYPE {name} gauge"
        );
        for (s, configured) in rows.iter() {
            let up = u8::from(s.health == HopHealth::Up);
            let _ = writeln!(
                out,
                "{name}{{hop=\"{}\",configured=\"{}\"}} {up}",
                hop_label(&s.hop),
                escape(configured)
            );
        }
        let name = "sagw_next_hop_failures";
        let _ = writeln!(
            out,
            "# HELP {name} Failed probes or transactions in a row, per next-hop target\n# TYPE {name} gauge"
        );
        for (s, configured) in rows.iter() {
            let _ = writeln!(
                out,
                "{name}{{hop=\"{}\",configured=\"{}\"}} {}",
                hop_label(&s.hop),
                escape(configured),
                s.consecutive_failures
            );
        }
        out
    }
}

impl HopView for HopTable {
    fn hops(&self) -> Vec<HopState> {
        let now = Instant::now();
        let Ok(rows) = self.rows.lock() else {
            return Vec::new();
        };
        rows.iter()
            .map(|(s, configured)| HopState {
                configured: configured.clone(),
                transport: s.hop.transport.to_string(),
                addr: s.hop.addr.to_string(),
                up: s.health == HopHealth::Up,
                consecutive_failures: s.consecutive_failures,
                last_ok_ms_ago: s.last_ok.map(|t| {
                    u64::try_from(now.saturating_duration_since(t).as_millis()).unwrap_or(u64::MAX)
                }),
            })
            .collect()
    }
}

/// `transport:ip:port`.
pub fn hop_label(h: &NextHop) -> String {
    format!("{}:{}", h.transport, h.addr)
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Resolve every `proxy.next_hops` entry: the targets in configuration order (each name's in
/// RFC 3263 order), and when the earliest of the names' records expire (`None`: no names).
/// A name that does not resolve contributes nothing this time (and is retried sooner).
pub async fn resolve_all(
    specs: &[NextHopSpec],
    resolver: &Resolver,
) -> (Vec<HopOrigin>, Option<Instant>) {
    let mut out = Vec::new();
    let mut next: Option<Instant> = None;
    for s in specs {
        match &s.target {
            HopTarget::Addr(h) => out.push(HopOrigin {
                resolved: Resolved {
                    hop: *h,
                    name: String::new(),
                },
                configured: s.configured.clone(),
            }),
            HopTarget::Name(q) => {
                let r = resolver.resolve(q).await;
                if r.targets.is_empty() {
                    warn!(next_hop = %s.configured, "next hop does not resolve (NAPTR/SRV/A/AAAA): retried in 30 s");
                }
                next = Some(next.map_or(r.valid_until, |n| n.min(r.valid_until)));
                for t in r.targets {
                    if !out.iter().any(|o: &HopOrigin| o.resolved.hop == t.hop) {
                        out.push(HopOrigin {
                            resolved: t,
                            configured: s.configured.clone(),
                        });
                    }
                }
            }
        }
    }
    (out, next)
}

/// How long the first resolution at start may take before the gateway starts without the names
/// that did not answer (they are resolved again in the background).
pub const START_RESOLUTION_LIMIT: Duration = Duration::from_secs(10);
