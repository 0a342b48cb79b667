//! Replay protection for stateless nonces: per-nonce nonce-count tracking in bounded memory.
//!
//! Each nonce keeps the highest `nc` seen and a 64-bit bitmap of the 64 counts at and below it
//! (the IPsec anti-replay window, RFC 4303 §3.4.3), so requests sent concurrently on one nonce may
//! arrive out of order, while each (nonce, nc) pair is accepted once.
//!
//! Memory is bounded by `max_entries`. When the table is full the entry closest to expiry is
//! evicted; if it was still valid, its issue time raises a watermark and every *unknown* nonce
//! issued at or before the watermark is reported `Stale` from then on. A forgotten nonce therefore
//! can never be replayed: the client is simply sent a fresh one. The table holds only nonces whose
//! credentials verified, so filling it requires valid accounts.
//!
//! The nonces are found in a hash map with a fixed seed: deterministic, no hidden RNG seeding. Its
//! keys cannot be chosen to collide: they are nonces this server made and MACed, recorded only once
//! their credentials verified. (A `BTreeMap` here cost a dozen string comparisons through cold
//! nodes per request once tens of thousands of nonces were live.) The expiry order stays a
//! `BTreeMap`: its keys grow with time, so inserts land at its end and purges take its start.
//!
//! Both maps hold the nonce's text inline: every nonce the table takes is [`NONCE_LEN`] bytes
//! (it decoded, or it verified), and a name kept in each map cost two allocations per new nonce.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use crate::nonce::NONCE_LEN;
use crate::server::VerifiedDigest;
use crate::{DigestError, nonce};

/// Width of the out-of-order window, in nonce counts.
pub const NC_WINDOW: u32 = 64;

/// A tracked nonce's text.
type Name = [u8; NONCE_LEN];

#[derive(Debug)]
struct Entry {
    issued: SystemTime,
    expiry_key: (SystemTime, u64),
    max_nc: u32,
    /// Bit i set = nc `max_nc - i` seen.
    seen: u64,
}

/// Nonce-count tracker. Not shared: keep one per worker behind the caller's own lock or sharding.
#[derive(Debug)]
pub struct NonceCounter {
    max_entries: usize,
    lifetime: Duration,
    entries: HashMap<Name, Entry, foldhash::fast::FixedState>,
    by_expiry: BTreeMap<(SystemTime, u64), Name>,
    seq: u64,
    /// Newest issue time among entries evicted before they expired.
    watermark: Option<SystemTime>,
}

impl NonceCounter {
    /// `lifetime` must equal the server's `nonce_lifetime`: entries are dropped once their nonce
    /// could no longer verify. `max_entries` is raised to at least 1.
    pub fn new(max_entries: usize, lifetime: Duration) -> Self {
        NonceCounter {
            max_entries: max_entries.max(1),
            lifetime,
            entries: HashMap::with_hasher(foldhash::fast::FixedState::default()),
            by_expiry: BTreeMap::new(),
            seq: 0,
            watermark: None,
        }
    }

    /// Every nonce issued at or before `start` is stale from the first use on, as if it had been
    /// evicted: the counts of nonces a server issued before it started again are gone with its
    /// memory, and a captured request on one would be taken again.
    pub fn stale_before(mut self, start: SystemTime) -> Self {
        self.watermark = Some(self.watermark.map_or(start, |w| w.max(start)));
        self
    }

    /// Number of nonces currently tracked.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Records a use of `nonce` with count `nc`. Call only after [`crate::DigestServer::verify`]
    /// accepted the credentials: the issue time is read from the nonce without re-checking its MAC.
    ///
    /// Errors: `Replay` for a pair already seen, `NcOutOfWindow` for a count more than
    /// [`NC_WINDOW`] below the highest seen, `Stale` for an expired nonce or one possibly evicted,
    /// `BadNonce` if the nonce is not in this crate's format.
    pub fn check_and_record(
        &mut self,
        nonce: &str,
        nc: u32,
        now: SystemTime,
    ) -> Result<(), DigestError> {
        let issued = nonce::issued_unverified(nonce).ok_or(DigestError::BadNonce)?;
        self.record(nonce, issued, nc, now)
    }

    /// [`Self::check_and_record`] for verified credentials.
    pub fn check_verified(
        &mut self,
        verified: &VerifiedDigest<'_>,
        now: SystemTime,
    ) -> Result<(), DigestError> {
        self.record(verified.nonce, verified.nonce_issued, verified.nc, now)
    }

    fn record(
        &mut self,
        nonce: &str,
        issued: SystemTime,
        nc: u32,
        now: SystemTime,
    ) -> Result<(), DigestError> {
        // Nonces that decoded or verified are all NONCE_LEN bytes; one of another length never
        // gets here, and is refused as decoding it would be.
        let name = Name::try_from(nonce.as_bytes()).map_err(|_| DigestError::BadNonce)?;
        self.purge(now);
        let expiry = issued
            .checked_add(self.lifetime)
            .ok_or(DigestError::BadNonce)?;
        if now > expiry {
            return Err(DigestError::Stale);
        }
        if let Some(e) = self.entries.get_mut(&name) {
            return mark(e, nc);
        }
        if self.watermark.is_some_and(|w| issued <= w) {
            return Err(DigestError::Stale);
        }
        while self.entries.len() >= self.max_entries {
            self.evict_first(now);
        }
        self.seq = self.seq.wrapping_add(1);
        let key = (expiry, self.seq);
        self.by_expiry.insert(key, name);
        self.entries.insert(
            name,
            Entry {
                issued,
                expiry_key: key,
                max_nc: nc,
                seen: 1,
            },
        );
        Ok(())
    }

    /// Drops entries whose nonce can no longer verify.
    fn purge(&mut self, now: SystemTime) {
        while let Some(entry) = self.by_expiry.first_entry() {
            if entry.key().0 >= now {
                break;
            }
            let name = entry.remove();
            self.entries.remove(&name);
        }
    }

    fn evict_first(&mut self, now: SystemTime) {
        let Some((key, name)) = self.by_expiry.pop_first() else {
            // Unreachable while both maps are kept in step; clearing restores the invariant.
            self.entries.clear();
            return;
        };
        if let Some(e) = self.entries.remove(&name) {
            if key.0 >= now {
                self.watermark = Some(self.watermark.map_or(e.issued, |w| w.max(e.issued)));
            }
            debug_assert_eq!(e.expiry_key, key);
        }
    }
}

fn mark(e: &mut Entry, nc: u32) -> Result<(), DigestError> {
    if nc > e.max_nc {
        let shift = nc - e.max_nc;
        e.seen = if shift >= NC_WINDOW {
            0
        } else {
            e.seen << shift
        } | 1;
        e.max_nc = nc;
        return Ok(());
    }
    let back = e.max_nc - nc;
    if back >= NC_WINDOW {
        return Err(DigestError::NcOutOfWindow);
    }
    let bit = 1u64 << back;
    if e.seen & bit != 0 {
        return Err(DigestError::Replay);
    }
    e.seen |= bit;
    Ok(())
}
