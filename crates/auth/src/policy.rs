//! Challenge policies: which schemes a request is offered (and accepted with), the Digest
//! algorithms in order and the Digest realm. The core's own configuration is policy 0
//! ([`PolicyId::DEFAULT`]); a caller that serves several kinds of client (per listener, per client
//! kind) registers more with [`crate::SecurityCore::add_policy`] and names one per request.
//!
//! The challenge family (401 or 407) is not part of a policy here: it depends on the method and
//! is passed per request as a [`crate::ChallengePolicy`], so a caller can combine the two freely.

use crate::counters::Scheme;

/// A set of schemes. A bit mask, so a policy check on every request costs no allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SchemeSet(u8);

impl SchemeSet {
    /// No scheme.
    pub const EMPTY: SchemeSet = SchemeSet(0);
    /// Every scheme (what the core serves is then the limit).
    pub const ALL: SchemeSet = SchemeSet(0b111);

    fn bit(s: Scheme) -> u8 {
        match s {
            Scheme::Kerberos => 1,
            Scheme::Ntlm => 2,
            Scheme::Digest => 4,
        }
    }

    /// This set plus `s`.
    #[must_use]
    pub fn with(self, s: Scheme) -> SchemeSet {
        SchemeSet(self.0 | Self::bit(s))
    }

    /// True when `s` is in the set.
    pub fn contains(self, s: Scheme) -> bool {
        self.0 & Self::bit(s) != 0
    }

    /// True when no scheme is in the set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The schemes in challenge order (Kerberos, NTLM, Digest: the order clients try them).
    pub fn iter(self) -> impl Iterator<Item = Scheme> {
        [Scheme::Kerberos, Scheme::Ntlm, Scheme::Digest]
            .into_iter()
            .filter(move |s| self.contains(*s))
    }
}

impl FromIterator<Scheme> for SchemeSet {
    fn from_iter<I: IntoIterator<Item = Scheme>>(iter: I) -> Self {
        iter.into_iter().fold(SchemeSet::EMPTY, SchemeSet::with)
    }
}

/// Names a registered policy. Small and `Copy`: the caller resolves it once per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PolicyId(pub(crate) u16);

impl PolicyId {
    /// The core's own configuration: every scheme it serves, its Digest realm and algorithms.
    pub const DEFAULT: PolicyId = PolicyId(0);

    /// The index, for the caller's tables and logs.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// Digest as one policy offers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestOffer {
    /// Realm of the challenges, required in the credentials; the HA1 values of the credential
    /// store are per realm, so a user needs one for every realm they meet.
    pub realm: String,
    /// Algorithms offered, one challenge each, in this order (clients that take the first one
    /// they know need the strongest first; clients that stop at the first one they do not know
    /// need one they know first).
    pub algorithms: Vec<sagw_digest::Algorithm>,
}

/// What one policy offers, and accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthPolicy {
    /// Schemes challenged with and accepted; credentials of any other scheme are ignored (the
    /// request is challenged again), so a policy is enforced, not only advertised.
    pub schemes: SchemeSet,
    /// Digest realm and algorithms; `None`: the core's own Digest settings.
    pub digest: Option<DigestOffer>,
}

/// What a registered policy offers, as the core challenges with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyOffer<'a> {
    /// The schemes offered (those of the policy the core serves).
    pub schemes: SchemeSet,
    /// The Digest realm, when Digest is offered.
    pub digest_realm: Option<&'a str>,
    /// The Digest algorithms in challenge order (empty when Digest is not offered).
    pub digest_algorithms: &'a [sagw_digest::Algorithm],
}

/// Why a policy cannot be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The policy offers nothing.
    #[error("offers no scheme")]
    Empty,
    /// The core has no acceptor for a scheme the policy offers.
    #[error("offers {} but the gateway does not serve it", .0.label())]
    NotServed(Scheme),
    /// Digest settings the Digest server refuses.
    #[error("digest: {0}")]
    Digest(String),
    /// More policies than a [`PolicyId`] can name.
    #[error("too many policies")]
    TooMany,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_hold_what_was_put_in_and_iterate_in_challenge_order() {
        let s: SchemeSet = [Scheme::Digest, Scheme::Kerberos].into_iter().collect();
        assert!(s.contains(Scheme::Digest) && s.contains(Scheme::Kerberos));
        assert!(!s.contains(Scheme::Ntlm));
        assert_eq!(
            s.iter().collect::<Vec<_>>(),
            [Scheme::Kerberos, Scheme::Digest]
        );
        assert!(SchemeSet::EMPTY.is_empty());
        assert_eq!(SchemeSet::ALL.iter().count(), 3);
    }
}
