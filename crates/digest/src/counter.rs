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
//! Each entry belongs to an *owner*, the identity whose credentials verified on it, and one owner
//! holds at most `per_owner` entries ([`NonceCounter::with_owner_share`]). Without that share one
//! account that fetched a fresh nonce per request filled the table alone, and its evictions made
//! every other user's nonces stale: their 2xx ACKs, which cannot be challenged, were dropped and
//! their calls failed. An owner over its share now evicts its own oldest entry, under a watermark
//! of its own, so filling the table takes `max_entries / per_owner` accounts. Entries are keyed by
//! nonce *and* owner, so one user's counts on a nonce never mark another's.
//!
//! The nonces are found in a hash map with a fixed seed: deterministic, no hidden RNG seeding. Its
//! keys cannot be chosen to collide: they are nonces this server made and MACed, recorded only once
//! their credentials verified. (A `BTreeMap` here cost a dozen string comparisons through cold
//! nodes per request once tens of thousands of nonces were live.) The expiry order stays a
//! `BTreeMap`: its keys grow with time, so inserts land at its end and purges take its start.
//!
//! Both maps hold the nonce's text inline: every nonce the table takes is [`NONCE_LEN`] bytes
//! (it decoded, or it verified), and a name kept in each map cost two allocations per new nonce.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::BuildHasher;
use std::time::{Duration, SystemTime};

use crate::nonce::NONCE_LEN;
use crate::server::VerifiedDigest;
use crate::{DigestError, nonce};

/// Width of the out-of-order window, in nonce counts.
pub const NC_WINDOW: u32 = 64;

/// Default of the share one owner may hold ([`NonceCounter::with_owner_share`]).
pub const DEFAULT_NONCES_PER_OWNER: usize = 1024;

/// A tracked nonce's text.
type Name = [u8; NONCE_LEN];

/// An owner: the fixed-seed hash of the identity whose credentials verified, ASCII case folded
/// (identities compare so: an operator who rewrites `sip:Alice@…` as `sip:alice@…` must not give
/// alice a second, empty share, on which her captured requests would be taken again). Identities
/// come from the operator's accounts, not from the peer, so they are not chosen to collide; two
/// that did would only share one share.
type Owner = u64;

fn owner_of(identity: &str) -> Owner {
    use std::hash::Hasher;
    let mut h = foldhash::fast::FixedState::default().build_hasher();
    // Folded on the stack, hashed a slice at a time: a byte at a time cost ~300 instructions a
    // request.
    let mut buf = [0u8; 64];
    for chunk in identity.as_bytes().chunks(buf.len()) {
        let folded = &mut buf[..chunk.len()];
        folded.copy_from_slice(chunk);
        folded.make_ascii_lowercase();
        h.write(folded);
    }
    h.finish()
}

/// A tracked use: a nonce as one owner uses it.
type Key = (Name, Owner);

/// One owner's entries, oldest recorded first. Removals elsewhere (expiry, the table's own
/// eviction) leave their keys here; `live` counts those still tracked, and stale keys are skipped
/// when this owner evicts, or dropped when they outnumber the live ones.
#[derive(Debug, Default)]
struct Share {
    order: VecDeque<(Key, (SystemTime, u64))>,
    live: usize,
    /// Newest issue time among this owner's entries it evicted while they were still valid.
    watermark: Option<SystemTime>,
}

impl Share {
    /// Until when the watermark is needed: while a nonce under it can still verify (`None`: not
    /// at `now`, or there is none).
    fn needed_until(&self, lifetime: Duration, now: SystemTime) -> Option<SystemTime> {
        self.watermark
            .and_then(|w| w.checked_add(lifetime))
            .filter(|until| *until >= now)
    }
}

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
    per_owner: usize,
    lifetime: Duration,
    entries: HashMap<Key, Entry, foldhash::fast::FixedState>,
    by_expiry: BTreeMap<(SystemTime, u64), Key>,
    owners: HashMap<Owner, Share, foldhash::fast::FixedState>,
    /// Owners whose share was kept empty for its watermark, with when that watermark's nonces can
    /// no longer verify: the share goes then, if the owner did not come back.
    emptied: VecDeque<(SystemTime, Owner)>,
    seq: u64,
    /// Newest issue time among entries evicted before they expired.
    watermark: Option<SystemTime>,
}

impl NonceCounter {
    /// `lifetime` must equal the server's `nonce_lifetime`: entries are dropped once their nonce
    /// could no longer verify. `max_entries` is raised to at least 1. One owner may hold
    /// [`DEFAULT_NONCES_PER_OWNER`] of them (or all, if fewer).
    pub fn new(max_entries: usize, lifetime: Duration) -> Self {
        let max_entries = max_entries.max(1);
        NonceCounter {
            max_entries,
            per_owner: DEFAULT_NONCES_PER_OWNER.min(max_entries),
            lifetime,
            entries: HashMap::with_hasher(foldhash::fast::FixedState::default()),
            by_expiry: BTreeMap::new(),
            owners: HashMap::with_hasher(foldhash::fast::FixedState::default()),
            emptied: VecDeque::new(),
            seq: 0,
            watermark: None,
        }
    }

    /// How many entries one owner may hold (at least 1, at most the table): beyond it the owner's
    /// own oldest entry goes, and the owner's older unknown nonces are stale from then on.
    pub fn with_owner_share(mut self, per_owner: usize) -> Self {
        self.per_owner = per_owner.clamp(1, self.max_entries);
        self
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

    /// Owners holding a share now (entries, or a watermark still needed).
    pub fn owners(&self) -> usize {
        self.owners.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Records a use of `nonce` with count `nc` by `owner`, the identity the credentials proved
    /// (compare identities as the credential store does: pass the canonical one, not the user name
    /// as sent, or one account could spread itself over many shares). Call only after
    /// [`crate::DigestServer::verify`] accepted the credentials: the issue time is read from the
    /// nonce without re-checking its MAC.
    ///
    /// Errors: `Replay` for a pair already seen, `NcOutOfWindow` for a count more than
    /// [`NC_WINDOW`] below the highest seen, `Stale` for an expired nonce or one possibly evicted,
    /// `BadNonce` if the nonce is not in this crate's format.
    pub fn check_and_record(
        &mut self,
        nonce: &str,
        nc: u32,
        owner: &str,
        now: SystemTime,
    ) -> Result<(), DigestError> {
        let issued = nonce::issued_unverified(nonce).ok_or(DigestError::BadNonce)?;
        self.record(nonce, issued, nc, owner, now)
    }

    /// [`Self::check_and_record`] for verified credentials.
    pub fn check_verified(
        &mut self,
        verified: &VerifiedDigest<'_>,
        owner: &str,
        now: SystemTime,
    ) -> Result<(), DigestError> {
        self.record(
            verified.nonce,
            verified.nonce_issued,
            verified.nc,
            owner,
            now,
        )
    }

    fn record(
        &mut self,
        nonce: &str,
        issued: SystemTime,
        nc: u32,
        owner: &str,
        now: SystemTime,
    ) -> Result<(), DigestError> {
        // Nonces that decoded or verified are all NONCE_LEN bytes; one of another length never
        // gets here, and is refused as decoding it would be.
        let name = Name::try_from(nonce.as_bytes()).map_err(|_| DigestError::BadNonce)?;
        let owner = owner_of(owner);
        let key = (name, owner);
        self.purge(now);
        let expiry = issued
            .checked_add(self.lifetime)
            .ok_or(DigestError::BadNonce)?;
        if now > expiry {
            return Err(DigestError::Stale);
        }
        if let Some(e) = self.entries.get_mut(&key) {
            return mark(e, nc);
        }
        if self.watermark.is_some_and(|w| issued <= w) {
            return Err(DigestError::Stale);
        }
        let (owner_stale, owner_full) = self.owners.get(&owner).map_or((false, false), |share| {
            (
                share.watermark.is_some_and(|w| issued <= w),
                share.live >= self.per_owner,
            )
        });
        if owner_stale {
            return Err(DigestError::Stale);
        }
        if owner_full {
            self.evict_oldest_of(owner, now);
        }
        while self.entries.len() >= self.max_entries {
            self.evict_first(now);
        }
        self.seq = self.seq.wrapping_add(1);
        let expiry_key = (expiry, self.seq);
        self.by_expiry.insert(expiry_key, key);
        self.entries.insert(
            key,
            Entry {
                issued,
                expiry_key,
                max_nc: nc,
                seen: 1,
            },
        );
        let share = self.owners.entry(owner).or_default();
        share.order.push_back((key, expiry_key));
        share.live += 1;
        Ok(())
    }

    /// Drops entries whose nonce can no longer verify.
    fn purge(&mut self, now: SystemTime) {
        while let Some(entry) = self.by_expiry.first_entry() {
            if entry.key().0 >= now {
                break;
            }
            let key = entry.remove();
            self.entries.remove(&key);
            self.forget(key.1, now);
        }
        while let Some(&(until, owner)) = self.emptied.front() {
            if until >= now {
                break;
            }
            self.emptied.pop_front();
            let lifetime = self.lifetime;
            if self
                .owners
                .get(&owner)
                .is_some_and(|share| share.live == 0 && share.needed_until(lifetime, now).is_none())
            {
                self.owners.remove(&owner);
            }
        }
    }

    fn evict_first(&mut self, now: SystemTime) {
        let Some((expiry_key, key)) = self.by_expiry.pop_first() else {
            // Unreachable while the maps are kept in step; clearing restores the invariant.
            self.entries.clear();
            self.owners.clear();
            return;
        };
        if let Some(e) = self.entries.remove(&key) {
            if expiry_key.0 >= now {
                self.watermark = Some(self.watermark.map_or(e.issued, |w| w.max(e.issued)));
            }
            debug_assert_eq!(e.expiry_key, expiry_key);
        }
        self.forget(key.1, now);
    }

    /// The owner's oldest recorded entry goes; if it was still valid, the owner's watermark rises
    /// to its issue time. Other owners' entries and the table's watermark are untouched.
    fn evict_oldest_of(&mut self, owner: Owner, now: SystemTime) {
        let Some(share) = self.owners.get_mut(&owner) else {
            return;
        };
        while let Some((key, expiry_key)) = share.order.pop_front() {
            // Keys whose entry expired or the table evicted were left here: skip them.
            let live = self
                .entries
                .get(&key)
                .is_some_and(|e| e.expiry_key == expiry_key);
            if !live {
                continue;
            }
            if let Some(e) = self.entries.remove(&key) {
                self.by_expiry.remove(&expiry_key);
                if expiry_key.0 >= now {
                    share.watermark = Some(share.watermark.map_or(e.issued, |w| w.max(e.issued)));
                }
            }
            share.live -= 1;
            break;
        }
    }

    /// One of `owner`'s entries left the table by expiry or by the table's own eviction.
    fn forget(&mut self, owner: Owner, now: SystemTime) {
        let lifetime = self.lifetime;
        let Some(share) = self.owners.get_mut(&owner) else {
            return;
        };
        share.live = share.live.saturating_sub(1);
        if share.live == 0 {
            // The owner evicts its oldest *recorded* entry, whose nonce may be younger than one it
            // still holds: its watermark goes only once no nonce under it can verify. Until then
            // the share stays, empty; there is one per account at most.
            if let Some(until) = share.needed_until(lifetime, now) {
                share.order.clear();
                self.emptied.push_back((until, owner));
            } else {
                self.owners.remove(&owner);
            }
        } else if share.order.len() > 2 * share.live + 16 {
            // Keys of entries gone elsewhere are dropped here, so the queue stays within twice
            // what the owner holds.
            let entries = &self.entries;
            share.order.retain(|(key, expiry_key)| {
                entries
                    .get(key)
                    .is_some_and(|e| e.expiry_key == *expiry_key)
            });
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
