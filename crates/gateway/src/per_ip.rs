//! `limits.max_connections_per_ip`: how many accepted connections (TLS handshakes in progress
//! included) one source may hold, so that one host cannot take every one of `max_connections`.
//!
//! The cap is per source *address*, and many legitimate clients share one: an office or a hotel
//! behind one NAT address. The default (config/default.toml) is therefore a few hundred, not a
//! handful; see docs/configuration.md. IPv6 sources count per /56, the block one subscriber site usually gets (RFC 6177):
//! capping single IPv6 addresses would cost an attacker nothing (a host has 2^64 of them), nor
//! would capping /64s (a home's /56 holds 256), and a /56 is what a NAT'd IPv4 address is to an
//! office. Next hops and trusted
//! peers, servers the operator listed, are never capped (they still count towards
//! `max_connections`). Connections the gateway opens itself are not counted here.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The per-source counts. One entry per source that holds a connection now: at most
/// `max_connections` entries.
#[derive(Debug)]
pub struct PerIp {
    /// Atomic and locked: a configuration reload changes them while connections come in.
    max: std::sync::atomic::AtomicUsize,
    exempt: parking_lot::RwLock<Vec<IpAddr>>,
    counts: Mutex<HashMap<IpAddr, usize>>,
}

/// What [`PerIp::admit`] decided for a new connection.
#[derive(Debug)]
pub enum Admission {
    /// Counted: the slot is given back when this is dropped.
    Counted(IpSlot),
    /// A listed server: not counted.
    Exempt,
    /// The source holds `max` connections already: refuse this one.
    Refused,
}

/// One connection's place in [`PerIp`]; dropping it gives the place back.
#[derive(Debug)]
pub struct IpSlot {
    table: Arc<PerIp>,
    key: IpAddr,
}

/// The address a source is counted under: the proxy's grouping, which its client shares use too.
pub use sagw_proxy::source_key;

impl PerIp {
    /// At most `max` connections per source; the `exempt` addresses are never capped.
    pub fn new(max: usize, exempt: Vec<IpAddr>) -> Arc<PerIp> {
        Arc::new(PerIp {
            max: std::sync::atomic::AtomicUsize::new(max),
            exempt: parking_lot::RwLock::new(
                exempt.into_iter().map(|ip| ip.to_canonical()).collect(),
            ),
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// New limit and exempt servers (a configuration reload). Connections over a lowered limit
    /// stay; the source gets no new one until it is under the limit again.
    pub fn reconfigure(&self, max: usize, exempt: Vec<IpAddr>) {
        self.max.store(max, std::sync::atomic::Ordering::Relaxed);
        *self.exempt.write() = exempt.into_iter().map(|ip| ip.to_canonical()).collect();
    }

    /// Takes a place for a connection from `ip`, or says why not.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Admission {
        if self.exempt.read().contains(&ip.to_canonical()) {
            return Admission::Exempt;
        }
        let key = source_key(ip);
        // A poisoned lock means a panic while counting: refusing everything from then on would
        // turn a bug into an outage, so the counts are used as they are.
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.get(&key).copied().unwrap_or(0);
        if n >= self.max.load(std::sync::atomic::Ordering::Relaxed) {
            return Admission::Refused;
        }
        counts.insert(key, n + 1);
        Admission::Counted(IpSlot {
            table: self.clone(),
            key,
        })
    }

    /// Connections counted for the source `ip` now.
    pub fn count(&self, ip: IpAddr) -> usize {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.get(&source_key(ip)).copied().unwrap_or(0)
    }

    /// Sources holding at least one connection now.
    pub fn sources(&self) -> usize {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut counts = self.table.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_source_gets_max_places_and_gets_them_back() {
        let t = PerIp::new(2, vec![ip("10.0.0.9")]);
        let a = t.admit(ip("10.0.0.1"));
        let b = t.admit(ip("10.0.0.1"));
        assert!(matches!(a, Admission::Counted(_)) && matches!(b, Admission::Counted(_)));
        assert!(matches!(t.admit(ip("10.0.0.1")), Admission::Refused));
        assert!(matches!(t.admit(ip("10.0.0.2")), Admission::Counted(_)));
        // A listed server is never capped.
        for _ in 0..5 {
            assert!(matches!(t.admit(ip("10.0.0.9")), Admission::Exempt));
        }
        assert_eq!(t.count(ip("10.0.0.1")), 2);
        drop(a);
        assert_eq!(t.count(ip("10.0.0.1")), 1);
        let c = t.admit(ip("10.0.0.1"));
        assert!(matches!(c, Admission::Counted(_)));
        drop((b, c));
        // No entry is left behind for a source without connections.
        assert_eq!(t.sources(), 0);
    }

    #[test]
    fn a_reload_changes_the_cap_and_the_exempt_servers_and_keeps_the_counts() {
        let t = PerIp::new(3, vec![ip("10.0.0.9")]);
        let held: Vec<_> = (0..3).map(|_| t.admit(ip("10.0.0.1"))).collect();
        t.reconfigure(2, vec![ip("10.0.0.8")]);
        assert_eq!(
            t.count(ip("10.0.0.1")),
            3,
            "open connections keep their places"
        );
        assert!(matches!(t.admit(ip("10.0.0.1")), Admission::Refused));
        assert!(matches!(t.admit(ip("10.0.0.8")), Admission::Exempt));
        assert!(matches!(t.admit(ip("10.0.0.9")), Admission::Counted(_)));
        drop(held);
        assert_eq!(t.sources(), 0);
    }

    #[test]
    fn ipv6_counts_per_56_and_mapped_ipv4_as_ipv4() {
        assert_eq!(
            source_key(ip("2001:db8:1:2ff:aaaa:bbbb:cccc:dddd")),
            ip("2001:db8:1:200::")
        );
        assert_eq!(source_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        let t = PerIp::new(1, Vec::new());
        let _a = t.admit(ip("2001:db8:1:2::1"));
        assert!(matches!(t.admit(ip("2001:db8:1:2::2")), Admission::Refused));
        // Another /64 of the same /56: the same site.
        assert!(matches!(t.admit(ip("2001:db8:1:3::1")), Admission::Refused));
        assert!(matches!(
            t.admit(ip("2001:db8:1:100::1")),
            Admission::Counted(_)
        ));
        let _v4 = t.admit(ip("192.0.2.7"));
        assert!(matches!(
            t.admit(ip("::ffff:192.0.2.7")),
            Admission::Refused
        ));
    }
}
