//! How many server transactions each client holds (`max_transactions_per_client`).
//!
//! `max_transactions` bounds the transactions of everyone together; an answered UDP transaction
//! lives 32 s (Timer J), so one authenticated client that sent about 3 000 requests a second the
//! gateway answers itself (REGISTER, OPTIONS to the served domain) held all 100 000 of them, and
//! every other client got 503. Each client, the identity its requests proved (or, for those that
//! proved none, its source address), now holds at most its share. Requests from the servers
//! behind the gateway count only towards `max_transactions`.

use crate::Map;
use crate::hook::ClientKey;

/// The count of each client that holds a transaction now.
#[derive(Debug, Default)]
pub(super) struct ClientShares {
    held: Map<ClientKey, u32>,
}

impl ClientShares {
    /// Whether `client` holds `max` transactions already.
    pub(super) fn full(&self, client: ClientKey, max: usize) -> bool {
        self.held
            .get(&client)
            .is_some_and(|n| usize::try_from(*n).unwrap_or(usize::MAX) >= max)
    }

    /// A transaction of `client` begins.
    pub(super) fn take(&mut self, client: Option<ClientKey>) {
        if let Some(c) = client {
            let n = self.held.entry(c).or_insert(0);
            *n = n.saturating_add(1);
        }
    }

    /// A transaction of `client` is gone (ended, or its answer expired).
    pub(super) fn give_back(&mut self, client: Option<ClientKey>) {
        let Some(c) = client else { return };
        if let Some(n) = self.held.get_mut(&c) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.held.remove(&c);
            }
        }
    }

    /// Clients holding a transaction now.
    #[cfg(test)]
    pub(super) fn clients(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_is_full_at_its_share_and_gets_its_places_back() {
        let mut s = ClientShares::default();
        let alice = ClientKey::identity("sip:alice@example.com");
        let bob = ClientKey::identity("sip:bob@example.com");
        for _ in 0..3 {
            s.take(Some(alice));
        }
        s.take(Some(bob));
        s.take(None);
        assert!(s.full(alice, 3));
        assert!(!s.full(bob, 3));
        s.give_back(Some(alice));
        assert!(!s.full(alice, 3));
        s.give_back(Some(alice));
        s.give_back(Some(alice));
        s.give_back(Some(bob));
        s.give_back(None);
        assert_eq!(s.clients(), 0);
        // Once more than taken: nothing underflows.
        s.give_back(Some(alice));
        assert_eq!(s.clients(), 0);
    }

    #[test]
    fn identities_compare_as_sip_identities_and_sources_by_address() {
        assert_eq!(
            ClientKey::identity("sips:Alice@Example.com"),
            ClientKey::identity("sip:alice@example.com")
        );
        assert_ne!(
            ClientKey::identity("sip:alice@example.com"),
            ClientKey::identity("sip:bob@example.com")
        );
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert_eq!(
            ClientKey::source(ip("::ffff:192.0.2.1")),
            ClientKey::source(ip("192.0.2.1"))
        );
        assert_eq!(
            ClientKey::source(ip("2001:db8::1")),
            ClientKey::source(ip("2001:db8::ffff:2"))
        );
        // One /56, one site.
        assert_eq!(
            ClientKey::source(ip("2001:db8:0:1::1")),
            ClientKey::source(ip("2001:db8::1"))
        );
        assert_ne!(
            ClientKey::source(ip("2001:db8:0:100::1")),
            ClientKey::source(ip("2001:db8::1"))
        );
        assert_ne!(
            ClientKey::source(ip("192.0.2.1")),
            ClientKey::identity("192.0.2.1")
        );
        assert_ne!(
            ClientKey::asserted("sip:alice@example.com"),
            ClientKey::identity("sip:alice@example.com")
        );
        assert_eq!(
            ClientKey::asserted("sips:Alice@example.com"),
            ClientKey::asserted("sip:alice@example.com")
        );
    }
}
