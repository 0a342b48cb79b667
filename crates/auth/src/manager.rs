//! The SA manager: established SAs by `opaque` and by (identity, epid), and the `opaque`s of NTLM
//! final legs recently used, so that each is used once.
//!
//! Established SAs sit in 64 mutex-guarded shards so that lookups on different SAs rarely contend;
//! the value is an `Arc`, so signing and verifying run outside any lock. A second index by identity
//! bounds how many SAs one user holds ([`SaManager::with_max_per_identity`]) and lets an operator
//! end all of a user's SAs at once ([`SaManager::revoke_identity`]). Nothing is kept for a
//! handshake in progress (see [`crate::handshake`]): the only handshake table is the bounded set of
//! final legs that succeeded within their acceptance period, written after the NTLMv2 proof
//! verified.

use std::collections::hash_map::{Entry, RandomState};
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::counters::{Counters, ExpiryKind};
use crate::pool::{EndedSa, JournalTable, PoolJournal};
use crate::rng::Rng;
use crate::sa::{Opaque, SaScheme, SecurityAssociation};

const SHARDS: usize = 64;

/// The hasher of the tables whose keys no client chooses: `opaque`s (drawn at random by a gateway
/// of the pool; a final leg claims one only once its proof verified against the challenge issued
/// for it) and the manager's own SipHash values of identities and endpoints (uniform to anyone
/// without the manager's key). Nobody can aim keys at one bucket, so std's SipHash bought nothing
/// here but its cost: an NTLM final leg hashes into these tables up to ten times (about 130
/// instructions each under SipHash). The client-chosen strings themselves stay under the keyed
/// SipHash ([`SaManager::endpoint_key`]): a collision of those keys would let one endpoint replace
/// another's SA.
type Fast = foldhash::fast::RandomState;
type FastMap<K, V> = HashMap<K, V, Fast>;
type FastSet<T> = HashSet<T, Fast>;

fn fast_map<K, V>() -> FastMap<K, V> {
    HashMap::with_hasher(Fast::default())
}

/// Feeds `s` ASCII-lower-cased to `h`, a block at a time: one `write` per 64 bytes rather than
/// one per byte (SipHash streams, so the blocks hash as the whole lower-cased string would).
fn hash_lowercase(h: &mut impl Hasher, s: &str) {
    let mut block = [0u8; 64];
    for chunk in s.as_bytes().chunks(block.len()) {
        let out = &mut block[..chunk.len()];
        for (o, c) in out.iter_mut().zip(chunk) {
            *o = c.to_ascii_lowercase();
        }
        h.write(out);
    }
}

/// An established SA, shared between the manager and whoever signs or verifies with it.
pub type SaHandle = Arc<SecurityAssociation>;

/// Result of looking an SA up.
#[derive(Debug)]
pub enum SaLookup {
    /// The SA, live at the time of the lookup.
    Live(SaHandle),
    /// It existed but its time is up (removed now).
    Expired,
    /// No SA of that opaque (or, by endpoint, of that identity and epid) here: never made, revoked,
    /// expired and already removed, or held by another gateway of the pool.
    Unknown,
}

/// Why a final leg may not create its SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalLegRefusal {
    /// Its `opaque` names a live SA or was used by a final leg within its acceptance period.
    AlreadyUsed,
    /// The table of recently used `opaque`s is full (only successful final legs fill it).
    Full,
}

/// `opaque`s of NTLM final legs that succeeded, until their challenge can no longer verify.
struct RecentFinalLegs {
    /// The opaques in `fifo`. Each is there once: an opaque is claimed only while absent from
    /// here, and leaves here only with its entry of `fifo`, so the set needs no deadline of its
    /// own (a quarter of the memory of a map to the deadline, and less to hash and move).
    used: FastSet<u32>,
    /// (until, opaque) in insertion order, until: Unix seconds until which the opaque stays used.
    /// Challenges of the current and the previous window are taken, so this is in expiry order to
    /// within one window: an entry may outstay its time by that much, never leave early.
    fifo: VecDeque<(u64, u32)>,
}

impl RecentFinalLegs {
    fn purge(&mut self, now: u64) {
        while let Some(&(until, opaque)) = self.fifo.front() {
            if until > now {
                break;
            }
            self.fifo.pop_front();
            self.used.remove(&opaque);
        }
    }
}

/// Information about one SA for operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaInfo {
    /// The SA's name on the wire.
    pub opaque: Opaque,
    /// NTLM or Kerberos.
    pub scheme: SaScheme,
    /// The SIP identity it proves.
    pub identity: String,
    /// The client endpoint's `epid` (may be empty).
    pub epid: String,
    /// Unix seconds of its handshake.
    pub created: u64,
    /// Unix seconds at which it ends as things stand: the earlier of the hard and the idle
    /// deadline ([`SecurityAssociation::expiry`]); a message its client signs moves the idle one.
    pub expiry: u64,
    /// The last `snum` the gateway signed with (0: nothing signed yet).
    pub snum: u32,
}

/// Limits the manager enforces.
#[derive(Debug, Clone, Copy)]
pub struct ManagerLimits {
    /// NTLM final legs remembered at most for one-time use (the successful ones of the last two
    /// handshake windows); when full, further final legs are refused until entries expire.
    pub recent_final_legs_max: usize,
}

/// One shard of the identity index: hash(identity) -> that identity's SAs.
type IdentityShard = FastMap<u64, Vec<Indexed>>;

/// An SA in the identity index, with its endpoint key: an SA ended for its identity's cap or with
/// its identity leaves the endpoint table without hashing its identity and epid again.
struct Indexed {
    endpoint: u64,
    sa: SaHandle,
}

/// What establishing an SA did.
#[derive(Debug)]
pub struct Established {
    /// The SA now live.
    pub handle: SaHandle,
    /// The SA the same endpoint (identity and epid) held before, now ended.
    pub replaced: Option<Opaque>,
    /// SAs of the same identity ended to keep it within its cap, least recently used first.
    pub evicted: Vec<Opaque>,
}

/// A new SA refused because another SA holds its opaque (given back, unused).
#[derive(Debug)]
pub struct OpaqueTaken(pub SaHandle);

/// What [`SaManager::install`] does when another SA holds the opaque.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnTaken {
    /// A handshake's new SA: refused.
    Refuse,
    /// An SA taken in from the pool, which the store holds under the opaque: it wins.
    Displace,
}

/// The established SAs of a gateway, by `opaque`, by endpoint (identity and epid) and by identity,
/// with the one-time-use table of NTLM final legs. Shared by every thread (`&self` everywhere).
pub struct SaManager {
    shards: Box<[Mutex<FastMap<u32, SaHandle>>]>,
    /// hash(identity, epid) -> opaque, sharded like `shards` by the hash.
    endpoints: Box<[Mutex<FastMap<u64, u32>>]>,
    /// hash(identity) -> that identity's SAs, sharded by the hash. Lock order: an identity shard
    /// may be held while an SA or endpoint shard is taken, never the other way round.
    identities: Box<[Mutex<IdentityShard>]>,
    hasher: RandomState,
    recent: Mutex<RecentFinalLegs>,
    limits: ManagerLimits,
    max_per_identity: usize,
    /// What a pool must learn from this gateway; `None` for a gateway on its own.
    journal: Option<Mutex<JournalTable>>,
}

impl SaManager {
    /// An empty manager: no journal, no cap per identity.
    pub fn new(limits: ManagerLimits) -> Self {
        SaManager {
            shards: (0..SHARDS).map(|_| Mutex::new(fast_map())).collect(),
            endpoints: (0..SHARDS).map(|_| Mutex::new(fast_map())).collect(),
            identities: (0..SHARDS).map(|_| Mutex::new(fast_map())).collect(),
            hasher: RandomState::new(),
            recent: Mutex::new(RecentFinalLegs {
                used: HashSet::with_hasher(Fast::default()),
                fifo: VecDeque::new(),
            }),
            limits,
            max_per_identity: usize::MAX,
            journal: None,
        }
    }

    /// Keeps the pool journal ([`crate::pool`]): SAs made, moved on and ended here.
    pub fn with_journal(mut self) -> Self {
        self.enable_journal();
        self
    }

    /// [`with_journal`](Self::with_journal) on a manager already built.
    pub fn enable_journal(&mut self) {
        self.journal
            .get_or_insert_with(|| Mutex::new(JournalTable::default()));
    }

    /// Whether the pool journal is kept (the gateway is in a pool).
    pub fn journal_enabled(&self) -> bool {
        self.journal.is_some()
    }

    /// What the pool must learn since the last call (empty without a journal).
    pub fn drain_journal(&self) -> PoolJournal {
        match &self.journal {
            Some(j) => j.lock().drain(),
            None => PoolJournal::default(),
        }
    }

    fn journal(&self, f: impl FnOnce(&mut JournalTable)) {
        if let Some(j) = &self.journal {
            f(&mut j.lock());
        }
    }

    /// A message the SA's client signed verified, or its registration was granted: its window or
    /// idle deadline moved, which the pool learns at the next drain (once per SA per drain).
    pub fn note_progress(&self, sa: &SaHandle) {
        if self.journal.is_some() && sa.mark_journaled() {
            self.journal(|j| j.touched.push(sa.clone()));
        }
    }

    /// At most `n` SAs per identity (at least 1): establishing one more ends the identity's least
    /// recently used SA. Without it an identity's SAs are unbounded (one per epid it makes up).
    pub fn with_max_per_identity(mut self, n: usize) -> Self {
        self.max_per_identity = n.max(1);
        self
    }

    fn shard(&self, opaque: u32) -> &Mutex<FastMap<u32, SaHandle>> {
        &self.shards[(opaque as usize) % SHARDS]
    }

    /// [`keys`](Self::keys)' endpoint key alone.
    fn endpoint_key(&self, identity: &str, epid: &str) -> u64 {
        let mut h = self.hasher.build_hasher();
        hash_lowercase(&mut h, identity);
        0xFFu8.hash(&mut h);
        epid.hash(&mut h);
        h.finish()
    }

    /// The endpoint key and the identity key of `identity` and `epid`, which share the hashing of
    /// the identity: `H(identity ‖ 0xFF ‖ epid ‖ 0xFF)` and `H(identity ‖ 0xFE)`, the identity
    /// lower-cased (0xFF and 0xFE never occur in UTF-8, so neither input is another's).
    fn keys(&self, identity: &str, epid: &str) -> (u64, u64) {
        let mut h = self.hasher.build_hasher();
        // Identities compare without case (SIP URIs' user@host as clients spell them vary).
        hash_lowercase(&mut h, identity);
        let mut id = h.clone();
        0xFEu8.hash(&mut id);
        0xFFu8.hash(&mut h);
        epid.hash(&mut h);
        (h.finish(), id.finish())
    }

    fn endpoint_shard(&self, key: u64) -> &Mutex<FastMap<u64, u32>> {
        &self.endpoints[(key as usize) % SHARDS]
    }

    /// [`keys`](Self::keys)' identity key alone.
    fn identity_key(&self, identity: &str) -> u64 {
        let mut h = self.hasher.build_hasher();
        hash_lowercase(&mut h, identity);
        0xFEu8.hash(&mut h);
        h.finish()
    }

    fn identity_shard(&self, key: u64) -> &Mutex<IdentityShard> {
        &self.identities[(key as usize) % SHARDS]
    }

    /// Drops `sa` from the identity index.
    fn unindex_identity(&self, sa: &SecurityAssociation) {
        let key = self.identity_key(sa.identity());
        let mut ids = self.identity_shard(key).lock();
        if let Entry::Occupied(mut e) = ids.entry(key) {
            e.get_mut().retain(|h| h.sa.opaque() != sa.opaque());
            if e.get().is_empty() {
                e.remove();
            }
        }
    }

    /// A fresh `opaque` that names neither a live SA nor a recently used one.
    pub fn fresh_opaque(&self, rng: &mut dyn Rng) -> Opaque {
        self.fresh_opaque_shaped(rng, Opaque)
    }

    /// [`fresh_opaque`](Self::fresh_opaque) where `shape` makes the candidate from 32 random bits
    /// (NTLM sets the window tag).
    pub fn fresh_opaque_shaped(&self, rng: &mut dyn Rng, shape: impl Fn(u32) -> Opaque) -> Opaque {
        let mut b = [0u8; 4];
        rng.fill_bytes(&mut b);
        let mut raw = u32::from_be_bytes(b);
        // With a real RNG a collision is rare, but not negligible against the recently used set
        // (at 1 000 sign-ins a second it holds 60 000 of the 2^30 values of a window's tag: one
        // first leg in 18 000 would meet one, and its final leg be refused). A stuck RNG must not
        // spin forever, so walk on; the walk visits every value, so it ends while one is free.
        loop {
            let candidate = shape(raw);
            let taken = self.shard(candidate.0).lock().contains_key(&candidate.0)
                || self.recent.lock().used.contains(&candidate.0);
            if !taken {
                return candidate;
            }
            raw = raw.wrapping_add(0x9E37_79B9);
        }
    }

    /// Claims `opaque` for the SA of a final leg whose proof verified: refused when it names a live
    /// SA or was claimed before, until `until` (Unix seconds, when its challenge stops verifying).
    pub fn claim_final_leg(
        &self,
        opaque: Opaque,
        until: u64,
        now: u64,
    ) -> Result<(), FinalLegRefusal> {
        if self.shard(opaque.0).lock().contains_key(&opaque.0) {
            return Err(FinalLegRefusal::AlreadyUsed);
        }
        let mut r = self.recent.lock();
        r.purge(now);
        if r.used.contains(&opaque.0) {
            return Err(FinalLegRefusal::AlreadyUsed);
        }
        if r.used.len() >= self.limits.recent_final_legs_max {
            return Err(FinalLegRefusal::Full);
        }
        r.used.insert(opaque.0);
        r.fifo.push_back((until, opaque.0));
        Ok(())
    }

    /// How many final legs are remembered for one-time use.
    pub fn recent_final_legs(&self) -> usize {
        self.recent.lock().used.len()
    }

    /// Makes `sa` the endpoint's SA; an SA the same identity and epid held before is dropped (a new
    /// handshake from an endpoint replaces its SA), and so is the identity's least recently used SA
    /// when it would otherwise hold more than its cap.
    ///
    /// Refused, changing nothing, when another SA holds its opaque by now: the opaque was checked
    /// when it was drawn ([`fresh_opaque`](Self::fresh_opaque), [`claim_final_leg`](Self::claim_final_leg)),
    /// but another thread's handshake may have installed an SA under it since, and displacing
    /// that SA would leave it live in the other indexes and end it for its client unannounced.
    pub fn establish(
        &self,
        sa: SecurityAssociation,
        counters: &Counters,
    ) -> Result<Established, OpaqueTaken> {
        let established = self.install(Arc::new(sa), counters, OnTaken::Refuse)?;
        counters.sa_established(established.handle.scheme());
        self.journal(|j| j.established.push(established.handle.clone()));
        Ok(established)
    }

    /// Takes in an SA made on another gateway of the pool, or before a restart: it replaces what
    /// this gateway held for the same opaque or endpoint, as a new handshake would. Not counted as
    /// established, and not journaled as new (the pool has it).
    ///
    /// An SA held here under the same opaque is most often an older copy of this one. It may be
    /// another identity's only while this gateway's publication of it is on its way: the store
    /// refuses an SA whose opaque names another identity's SA or tombstone (docs/security.md
    /// B11e), and it holds this record, so that publication is refused (or was, and its answer
    /// is queued). The local SA is ended then as the refusal would end it: unannounced, so that
    /// nothing revokes the opaque in the pool, and the answer, when it comes, leaves this SA
    /// alone ([`forget_taken`](Self::forget_taken) checks the identity).
    pub fn adopt(&self, sa: SecurityAssociation, counters: &Counters) -> Established {
        let opaque = sa.opaque().0;
        let previous = self.shard(opaque).lock().remove(&opaque);
        if let Some(old) = previous {
            old.revoke();
            self.remove(&old);
        }
        match self.install(Arc::new(sa), counters, OnTaken::Displace) {
            Ok(established) => established,
            // OnTaken::Displace never refuses.
            Err(OpaqueTaken(handle)) => Established {
                handle,
                replaced: None,
                evicted: Vec::new(),
            },
        }
    }

    /// Drops an SA another gateway took over, without ending it (the pool still has it).
    pub fn forget(&self, opaque: Opaque) -> bool {
        let found = self.shard(opaque.0).lock().get(&opaque.0).cloned();
        match found {
            Some(sa) => {
                sa.revoke();
                self.remove(&sa);
                true
            }
            None => false,
        }
    }

    /// Drops `identity`'s SA under `opaque` because the pool refused it: the opaque names another
    /// identity's SA there (two gateways drew the same opaque, docs/security.md B11e). Not
    /// journaled: the pool must not revoke the opaque, which is the other identity's. An SA of
    /// another identity held here under the opaque (adopted from the pool since) stays.
    pub fn forget_taken(&self, opaque: Opaque, identity: &str) -> bool {
        let found = self.shard(opaque.0).lock().get(&opaque.0).cloned();
        match found {
            Some(sa) if sa.identity().eq_ignore_ascii_case(identity) => {
                sa.revoke();
                self.remove(&sa);
                true
            }
            _ => false,
        }
    }

    /// Ends an SA the pool says was revoked elsewhere (counted, not journaled again).
    pub fn revoke_from_pool(&self, opaque: Opaque, counters: &Counters) -> bool {
        let ended = self.forget(opaque);
        if ended {
            counters.sa_revoked();
        }
        ended
    }

    fn install(
        &self,
        handle: SaHandle,
        counters: &Counters,
        on_taken: OnTaken,
    ) -> Result<Established, OpaqueTaken> {
        let opaque = handle.opaque().0;
        // The opaque first, so that a refusal changes nothing.
        let displaced = match self.shard(opaque).lock().entry(opaque) {
            Entry::Vacant(v) => {
                v.insert(handle.clone());
                None
            }
            Entry::Occupied(e) if Arc::ptr_eq(e.get(), &handle) => None,
            Entry::Occupied(_) if on_taken == OnTaken::Refuse => return Err(OpaqueTaken(handle)),
            Entry::Occupied(mut e) => Some(e.insert(handle.clone())),
        };
        if let Some(old) = displaced {
            // Out of its other indexes too (its opaque's entry is the new SA's now, which
            // remove_tables leaves alone), before the new SA takes its endpoint.
            old.revoke();
            self.remove(&old);
        }
        let (key, identity_key) = self.keys(handle.identity(), handle.epid());
        let previous = self.endpoint_shard(key).lock().insert(key, opaque);
        let mut replaced = None;
        if let Some(prev) = previous.filter(|p| *p != opaque)
            && let Some(old) = self.shard(prev).lock().remove(&prev)
        {
            old.revoke();
            self.unindex_identity(&old);
            counters.sa_replaced();
            replaced = Some(Opaque(prev));
            self.journal(|j| j.ended.push(EndedSa::of(&old)));
        }
        let (first, more) = self.index_identity(&handle, identity_key, key);
        let mut evicted = Vec::with_capacity(usize::from(first.is_some()) + more.len());
        for Indexed {
            endpoint,
            sa: victim,
        } in first.iter().chain(&more)
        {
            victim.revoke();
            self.remove_tables_keyed(victim, *endpoint);
            counters.sa_evicted_identity_cap();
            self.journal(|j| j.ended.push(EndedSa::of(victim)));
            evicted.push(victim.opaque());
        }
        Ok(Established {
            handle,
            replaced,
            evicted,
        })
    }

    /// Adds `handle` to its identity's SAs (`key`: its identity key, `endpoint`: its endpoint key);
    /// returns those that must go to keep the identity within
    /// its cap: the ones whose idle deadline is nearest (least recently used), never `handle`.
    /// Revoked SAs still listed (a race with their removal) are pruned first, uncounted.
    ///
    /// The first victim comes apart from the others: an identity at its cap loses one SA per new
    /// one, which then costs no allocation.
    fn index_identity(
        &self,
        handle: &SaHandle,
        key: u64,
        endpoint: u64,
    ) -> (Option<Indexed>, Vec<Indexed>) {
        let mut ids = self.identity_shard(key).lock();
        let list = ids.entry(key).or_default();
        list.retain(|h| !h.sa.is_revoked());
        // Most identities hold one or two SAs, and the list keeps the size it grew to: grown one
        // entry at a time it never holds room for more SAs than the identity had (a first push
        // would make room for four).
        list.reserve_exact(1);
        list.push(Indexed {
            endpoint,
            sa: handle.clone(),
        });
        let mut first = None;
        let mut victims = Vec::new();
        while list.len() > self.max_per_identity {
            let Some(i) = list
                .iter()
                .enumerate()
                .filter(|(_, h)| h.sa.opaque() != handle.opaque())
                .min_by_key(|(_, h)| (h.sa.idle_deadline(), h.sa.created()))
                .map(|(i, _)| i)
            else {
                break;
            };
            let victim = list.swap_remove(i);
            if first.is_none() {
                first = Some(victim);
            } else {
                victims.push(victim);
            }
        }
        (first, victims)
    }

    /// Finds a live SA; an expired one is removed on the way.
    pub fn lookup(&self, opaque: Opaque, now: u64, counters: &Counters) -> SaLookup {
        let found = self.shard(opaque.0).lock().get(&opaque.0).cloned();
        match found {
            None => SaLookup::Unknown,
            Some(sa) if sa.is_live(now) => SaLookup::Live(sa),
            Some(sa) => {
                self.remove(&sa);
                counters.sa_expired(Self::expiry_kind(&sa));
                SaLookup::Expired
            }
        }
    }

    /// The SA of an endpoint, for signing requests the gateway sends to it.
    pub fn lookup_endpoint(
        &self,
        identity: &str,
        epid: &str,
        now: u64,
        counters: &Counters,
    ) -> SaLookup {
        let key = self.endpoint_key(identity, epid);
        let Some(opaque) = self.endpoint_shard(key).lock().get(&key).copied() else {
            return SaLookup::Unknown;
        };
        match self.lookup(Opaque(opaque), now, counters) {
            SaLookup::Live(sa)
                if sa.epid() == epid && sa.identity().eq_ignore_ascii_case(identity) =>
            {
                SaLookup::Live(sa)
            }
            SaLookup::Live(_) => SaLookup::Unknown,
            other => other,
        }
    }

    fn expiry_kind(sa: &SecurityAssociation) -> ExpiryKind {
        if sa.idle_deadline() < sa.hard_expiry() {
            ExpiryKind::Idle
        } else {
            ExpiryKind::Lifetime
        }
    }

    fn remove(&self, sa: &SecurityAssociation) {
        self.remove_tables(sa);
        self.unindex_identity(sa);
    }

    /// Drops `sa` from the tables by opaque and by endpoint (not from the identity index).
    fn remove_tables(&self, sa: &SecurityAssociation) {
        self.remove_tables_keyed(sa, self.endpoint_key(sa.identity(), sa.epid()));
    }

    /// [`remove_tables`](Self::remove_tables) with `sa`'s endpoint key at hand.
    fn remove_tables_keyed(&self, sa: &SecurityAssociation, key: u64) {
        let opaque = sa.opaque().0;
        {
            let mut shard = self.shard(opaque).lock();
            // Only this SA: the opaque may name a newer one by now.
            if shard.get(&opaque).is_some_and(|h| std::ptr::eq(&**h, sa)) {
                shard.remove(&opaque);
            }
        }
        let mut ep = self.endpoint_shard(key).lock();
        if ep.get(&key) == Some(&opaque) {
            ep.remove(&key);
        }
    }

    /// Operator revocation. The SA stops verifying and signing at once. With a pool journal, an SA
    /// this gateway does not hold is revoked in the pool (true: the revocation was sent).
    pub fn revoke(&self, opaque: Opaque, counters: &Counters) -> bool {
        let found = self.shard(opaque.0).lock().get(&opaque.0).cloned();
        match found {
            Some(sa) => {
                sa.revoke();
                self.remove(&sa);
                counters.sa_revoked();
                self.journal(|j| j.ended.push(EndedSa::of(&sa)));
                true
            }
            // In a pool another gateway may hold it: the revocation goes to the pool.
            None if self.journal.is_some() => {
                self.journal(|j| {
                    j.ended.push(EndedSa {
                        opaque,
                        identity: None,
                    })
                });
                true
            }
            None => false,
        }
    }

    /// Ends every SA of `identity` at once (the user was removed, or their credentials changed).
    /// Returns how many.
    pub fn revoke_identity(&self, identity: &str, counters: &Counters) -> usize {
        self.journal(|j| j.ended_identities.push(identity.to_owned()));
        self.revoke_identity_here(identity, counters)
    }

    /// [`revoke_identity`](Self::revoke_identity) for an identity the pool revoked elsewhere (not
    /// journaled again).
    pub fn revoke_identity_from_pool(&self, identity: &str, counters: &Counters) -> usize {
        self.revoke_identity_here(identity, counters)
    }

    fn revoke_identity_here(&self, identity: &str, counters: &Counters) -> usize {
        let key = self.identity_key(identity);
        let sas: Vec<Indexed> = {
            let mut ids = self.identity_shard(key).lock();
            match ids.get_mut(&key) {
                Some(list) => {
                    let (theirs, others): (Vec<Indexed>, Vec<Indexed>) = list
                        .drain(..)
                        .partition(|h| h.sa.identity().eq_ignore_ascii_case(identity));
                    // A hash collision with another identity keeps the other's entries.
                    *list = others;
                    if list.is_empty() {
                        ids.remove(&key);
                    }
                    theirs
                }
                None => Vec::new(),
            }
        };
        let mut n = 0;
        for Indexed { endpoint, sa } in &sas {
            if sa.is_revoked() {
                continue;
            }
            sa.revoke();
            self.remove_tables_keyed(sa, *endpoint);
            counters.sa_revoked();
            n += 1;
        }
        n
    }

    /// Drops every SA whose time is up, and forgets final legs whose challenge can no longer verify; call it every few seconds. Returns how many
    /// established SAs went.
    pub fn expire(&self, now: u64, counters: &Counters) -> usize {
        let mut dead = Vec::new();
        for shard in self.shards.iter() {
            shard.lock().retain(|_, sa| {
                let live = sa.is_live(now);
                if !live {
                    dead.push(sa.clone());
                }
                live
            });
        }
        for sa in &dead {
            let key = self.endpoint_key(sa.identity(), sa.epid());
            let mut ep = self.endpoint_shard(key).lock();
            if ep.get(&key) == Some(&sa.opaque().0) {
                ep.remove(&key);
            }
            drop(ep);
            self.unindex_identity(sa);
            counters.sa_expired(Self::expiry_kind(sa));
        }
        self.recent.lock().purge(now);
        dead.len()
    }

    /// Whether this gateway holds an SA of that opaque (live or not yet expired away).
    pub fn contains(&self, opaque: Opaque) -> bool {
        self.shard(opaque.0).lock().contains_key(&opaque.0)
    }

    /// The SA of that opaque, live or not.
    pub fn get(&self, opaque: Opaque) -> Option<SaHandle> {
        self.shard(opaque.0).lock().get(&opaque.0).cloned()
    }

    /// Every SA held, for a snapshot.
    pub fn handles(&self) -> Vec<SaHandle> {
        let mut out = Vec::with_capacity(self.len());
        for shard in self.shards.iter() {
            out.extend(shard.lock().values().cloned());
        }
        out
    }

    /// SAs held, expired ones not yet removed included.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    /// No SA held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every SA held, by `opaque`, for operators (admin listing); no key material.
    pub fn list(&self) -> Vec<SaInfo> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            for sa in shard.lock().values() {
                out.push(SaInfo {
                    opaque: sa.opaque(),
                    scheme: sa.scheme(),
                    identity: sa.identity().to_owned(),
                    epid: sa.epid().to_owned(),
                    created: sa.created(),
                    expiry: sa.expiry(),
                    snum: sa.snum(),
                });
            }
        }
        out.sort_by_key(|i| i.opaque);
        out
    }

    /// Pre-sizes the tables for `n` SAs (avoids rehash pauses when loading many SAs at once).
    pub fn reserve(&self, n: usize) {
        let per = n / SHARDS + 1;
        for s in self.shards.iter() {
            s.lock().reserve(per);
        }
        for s in self.endpoints.iter() {
            s.lock().reserve(per);
        }
        for s in self.identities.iter() {
            s.lock().reserve(per);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shared_pass_gives_the_keys_of_the_single_ones() {
        let m = SaManager::new(ManagerLimits {
            recent_final_legs_max: 8,
        });
        for (identity, epid) in [
            ("sip:alice@example.com", "01234567ab"),
            ("SIP:Alice@Example.COM", ""),
            (&*"sip:long@example.com".repeat(9), "e"),
        ] {
            let (endpoint, id) = m.keys(identity, epid);
            assert_eq!(endpoint, m.endpoint_key(identity, epid));
            assert_eq!(id, m.identity_key(identity));
            assert_eq!(id, m.identity_key(&identity.to_ascii_lowercase()));
            assert_ne!(endpoint, id);
        }
    }

    #[test]
    fn a_claimed_opaque_stays_used_until_its_entry_leaves() {
        let m = SaManager::new(ManagerLimits {
            recent_final_legs_max: 2,
        });
        let (a, b, c) = (Opaque(1), Opaque(2), Opaque(3));
        // b's deadline is earlier than a's but it sits behind a: it outstays its time.
        assert_eq!(m.claim_final_leg(a, 130, 100), Ok(()));
        assert_eq!(m.claim_final_leg(b, 110, 100), Ok(()));
        assert_eq!(m.claim_final_leg(c, 140, 100), Err(FinalLegRefusal::Full));
        assert_eq!(
            m.claim_final_leg(b, 150, 120),
            Err(FinalLegRefusal::AlreadyUsed)
        );
        assert_eq!(m.recent_final_legs(), 2);
        // At 130 both go; each may be claimed again, once.
        assert_eq!(m.claim_final_leg(b, 190, 130), Ok(()));
        assert_eq!(m.recent_final_legs(), 1);
        assert_eq!(m.claim_final_leg(a, 190, 130), Ok(()));
        assert_eq!(
            m.claim_final_leg(a, 190, 131),
            Err(FinalLegRefusal::AlreadyUsed)
        );
        m.expire(190, &Counters::default());
        assert_eq!(m.recent_final_legs(), 0);
    }

    fn sa(opaque: u32, identity: &str, epid: &str, now: u64) -> SecurityAssociation {
        let key = sagw_ntlm::Key16::from_bytes([7; 16]);
        let flags = sagw_ntlm::flags::NEGOTIATE_EXTENDED_SESSIONSECURITY;
        let session =
            sagw_ntlm::NtlmSession::from_exported_session_key(&key, flags).expect("ESS session");
        SecurityAssociation::new(crate::sa::NewSa {
            opaque: Opaque(opaque),
            version: 4,
            identity: identity.to_owned(),
            epid: epid.to_owned(),
            mechanism: crate::sa::Mechanism::Ntlm(session),
            now,
            hard_expiry: now + 3600,
            idle_ttl: 900,
            final_token: None,
        })
    }

    #[test]
    fn an_sa_ended_for_its_identity_leaves_the_endpoint_table() {
        let counters = Counters::default();
        let m = SaManager::new(ManagerLimits {
            recent_final_legs_max: 8,
        })
        .with_max_per_identity(2);
        let now = 1_767_603_600;
        let est = |opaque, identity, epid, t| {
            m.establish(sa(opaque, identity, epid, t), &counters)
                .expect("a free opaque")
        };
        est(1, "sip:Alice@example.com", "e1", now);
        est(2, "sip:alice@example.com", "e2", now + 1);
        let third = est(3, "SIP:ALICE@EXAMPLE.COM", "e3", now + 2);
        assert_eq!(third.evicted, vec![Opaque(1)]);
        let found = |epid| match m.lookup_endpoint("sip:alice@example.com", epid, now, &counters) {
            SaLookup::Live(sa) => Some(sa.opaque()),
            _ => None,
        };
        assert_eq!(found("e1"), None);
        assert_eq!(
            (found("e2"), found("e3")),
            (Some(Opaque(2)), Some(Opaque(3)))
        );
        assert_eq!(m.revoke_identity("sip:ALICE@example.com", &counters), 2);
        assert_eq!((found("e2"), found("e3"), m.len()), (None, None, 0));
        assert!(m.endpoints.iter().all(|s| s.lock().is_empty()));
        assert!(m.identities.iter().all(|s| s.lock().is_empty()));
    }

    /// Two SAs under one opaque (docs/security.md B11e): a handshake's new SA never displaces
    /// another's, an SA taken in from the pool does (the store holds it), and the pool's refusal
    /// of the displaced one, when it comes, leaves the adopted SA alone.
    #[test]
    fn an_opaque_names_one_sa_and_a_refusal_ends_only_its_own() {
        let counters = Counters::default();
        let mut m = SaManager::new(ManagerLimits {
            recent_final_legs_max: 8,
        });
        m.enable_journal();
        let now = 1_767_603_600;
        let live = |m: &SaManager| match m.lookup(Opaque(7), now, &counters) {
            SaLookup::Live(sa) => Some(sa.identity().to_owned()),
            _ => None,
        };
        assert!(
            m.establish(sa(7, "sip:alice@example.com", "a", now), &counters)
                .is_ok()
        );
        let refused = m.establish(sa(7, "sip:bob@example.com", "b", now), &counters);
        assert!(refused.is_err(), "bob's SA displaced alice's");
        assert_eq!(live(&m).as_deref(), Some("sip:alice@example.com"));
        assert_eq!(m.len(), 1);
        assert!(m.drain_journal().established.len() == 1, "only alice's");

        // The pool's refusal of bob's SA (Taken) does not end alice's.
        assert!(!m.forget_taken(Opaque(7), "sip:bob@example.com"));
        assert_eq!(live(&m).as_deref(), Some("sip:alice@example.com"));

        // Adopted from the pool, carol's SA under the opaque wins over alice's local one, which
        // ends unannounced; alice's refusal then leaves carol's SA.
        let adopted = m.adopt(sa(7, "sip:carol@example.com", "c", now), &counters);
        assert_eq!(adopted.handle.identity(), "sip:carol@example.com");
        assert_eq!(live(&m).as_deref(), Some("sip:carol@example.com"));
        assert!(
            m.drain_journal().ended.is_empty(),
            "nothing revoked in the pool"
        );
        assert!(!m.forget_taken(Opaque(7), "sip:alice@example.com"));
        assert!(m.forget_taken(Opaque(7), "SIP:Carol@example.com"));
        assert_eq!(live(&m), None);
        assert!(m.endpoints.iter().all(|s| s.lock().is_empty()));
        assert_eq!(m.revoke_identity("sip:alice@example.com", &counters), 0);
    }
}
