//! The core thread's side of a pool (docs/pools.md): which SAs this gateway owns, messages held
//! while an SA is fetched from the pool, and the journal handed to the store task.
//!
//! Nothing here waits for the store: the core thread sends commands to the store task and gets
//! its answers back as events. A message for an SA this gateway does not hold is kept aside while
//! the SA is claimed (bounded per SA, in total, and in claims at once), then handed to the proxy
//! as if it had just arrived.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use sagw_auth::pool::generation_snum_base;
use sagw_auth::{Opaque, SaRecord, SaResume, SaScheme, SecurityCore};
use sagw_proxy::Inbound;
use sagw_sip::{AuthHeader, Message};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};
use zeroize::Zeroizing;

/// Datagrams held for one SA being claimed: past them come retransmissions of what is held (its
/// answer answers them too) or a flood; a new request is sent again by its client.
const HELD_PER_SA: usize = 8;
/// Messages held for one SA being claimed that came over a stream, where nothing is sent again:
/// a client that moved here sends its burst at once (SUBSCRIBEs, a MESSAGE). Past them a message
/// goes on and is challenged (an SA this node does not hold), never dropped.
const HELD_PER_SA_STREAM: usize = 64;
/// Messages held in all.
const HELD_TOTAL: usize = 4096;
/// An opaque the pool did not know is not asked for again for this long.
const UNKNOWN_FOR: Duration = Duration::from_secs(5);
const UNKNOWN_MAX: usize = 65_536;
/// Write-behind cadence: the replay windows of SAs that moved on go to the store at most this
/// often, each SA's latest once. Per message it cost the owning node some 15 % more CPU per signed
/// round trip at 7 000/s (docs/BENCHMARKS.md); what it leaves open is a message verified in the
/// last 20 ms before another gateway claims the SA (docs/pools.md).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(20);

/// From the core thread to the store task.
pub enum StoreCommand {
    /// An SA this gateway owns: publish it (encoded record, to be sealed by the task) with where
    /// it stands (its replay window and idle deadline, which a claimer resumes from).
    Publish {
        opaque: u32,
        identity: String,
        record: Zeroizing<Vec<u8>>,
        generation: u32,
        hard_expiry: u64,
        window: Vec<u8>,
        idle_deadline: u64,
    },
    /// Read an SA from the store, changing nothing (a held message is verified against it
    /// before anything is claimed).
    Fetch { opaque: u32 },
    /// Become the SA's owner, if it is still at `generation` (the one fetched).
    Claim { opaque: u32, generation: u32 },
    /// What moved on SAs this gateway owns: written behind, each only while still owned.
    Checkpoint(Vec<Checkpoint>),
    /// SAs ended here, each with its identity when this gateway held it (the pool then ends
    /// only that identity's SA under the opaque); without, an operator's revocation by opaque.
    Revoke(Vec<(u32, Option<String>)>),
    /// Identities all of whose SAs ended here.
    RevokeIdentity(Vec<String>),
    /// The bindings this gateway holds for `aor` now (registrar mode): the store keeps them
    /// beside the other nodes' and drops this node's devices not listed.
    Bindings {
        aor: String,
        bindings: Vec<SharedBinding>,
    },
    /// Read every binding in the pool (at start).
    LoadBindings,
}

/// A binding as the pool shares it: enough for another gateway to reach the client through the
/// one holding its flow.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct SharedBinding {
    pub device: String,
    /// `<sip:TOKEN@host:port;transport=tcp;lr>` (see `Edge::pool_bindings`).
    pub route: String,
    /// The holding gateway's TCP listener.
    pub peer: SocketAddr,
    /// Unix seconds.
    pub expires_unix: u64,
    pub endpoint: Option<sagw_proxy::SaEndpoint>,
}

/// One SA's written-behind progress.
pub struct Checkpoint {
    pub opaque: u32,
    pub identity: String,
    pub generation: u32,
    pub window: Vec<u8>,
    pub idle_deadline: u64,
}

/// From the store task to the core thread.
pub enum PoolEvent {
    /// The answer to a fetch: the SA as the store has it, opened.
    Fetched { opaque: u32, outcome: FetchOutcome },
    /// The answer to a claim: the SA with this gateway's new generation.
    Claimed { opaque: u32, outcome: ClaimOutcome },
    /// Another gateway took the SA over at `generation` (its `moved` event).
    Moved { opaque: u32, generation: u32 },
    /// The store says another gateway holds the SA now (a write-behind or publication refused).
    Disowned { opaque: u32 },
    /// Revoked on another gateway.
    Revoked { opaque: u32 },
    /// A publication refused: the opaque names another identity's SA in the pool (two gateways
    /// drew the same opaque). `identity`'s SA here ends, unannounced.
    Taken { opaque: u32, identity: String },
    /// The store does not have an SA this gateway owns (it restarted empty): publish it again.
    Lost { opaque: u32 },
    /// The store is back after a gap: publish again what this gateway owns.
    Republish,
    /// The other gateways' bindings of `aor` as the store has them now.
    RemoteBindings {
        aor: String,
        bindings: Vec<SharedBinding>,
    },
}

/// An SA as the store holds it: its record (opened), its generation, and where its last owner
/// left it.
pub struct PoolSa {
    pub record: SaRecord,
    pub generation: u32,
    pub window: Option<Vec<u8>>,
    pub idle_deadline: Option<u64>,
}

impl PoolSa {
    /// Where to go on from, as the owner of `generation`.
    fn resume(&self, snum_after: u32) -> SaResume {
        SaResume {
            snum_after,
            window: self.window.as_deref().and_then(|w| w.try_into().ok()),
            idle_deadline: self.idle_deadline,
        }
    }
}

/// How a fetch ended.
pub enum FetchOutcome {
    Found(PoolSa),
    Unknown,
    StoreDown,
}

/// How a claim ended.
pub enum ClaimOutcome {
    /// This gateway owns the SA now, at `PoolSa::generation`.
    Taken(PoolSa),
    /// Another gateway claimed it since the fetch: nothing changed.
    Moved,
    Unknown,
    StoreDown,
}

/// Messages held for one SA while it is fetched and claimed.
struct Held {
    messages: Vec<Inbound>,
    /// Fetches so far (another is made when a claim loses a race).
    fetches: u8,
}

/// A claim lost to another gateway's is tried again after a fresh fetch this many times in all.
const FETCHES_PER_CLAIM: u8 = 2;

/// The core thread's pool state.
pub struct PoolLink {
    core: Arc<SecurityCore>,
    commands: mpsc::UnboundedSender<StoreCommand>,
    store_up: Arc<AtomicBool>,
    /// Generation of every SA this gateway owns.
    owned: HashMap<u32, u32>,
    held: HashMap<u32, Held>,
    held_total: usize,
    max_claims: usize,
    unknown: HashMap<u32, Instant>,
    unknown_fifo: VecDeque<(Instant, u32)>,
    last_sweep: Instant,
    /// AORs whose local bindings changed since the last flush (registrar mode).
    dirty_aors: Vec<String>,
    /// Devices of other gateways installed per AOR.
    remote: HashMap<String, Vec<String>>,
    /// This gateway's TCP listener, where the others reach its clients.
    tcp: Option<SocketAddr>,
    metrics: Arc<crate::metrics::Metrics>,
    /// Replay windows and idle deadlines to write behind, the latest per SA.
    progress: HashMap<u32, Checkpoint>,
    last_checkpoint: Instant,
}

/// Counts for metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct PoolStats {
    pub owned: usize,
    pub held: usize,
}

impl PoolLink {
    pub fn new(
        core: Arc<SecurityCore>,
        commands: mpsc::UnboundedSender<StoreCommand>,
        store_up: Arc<AtomicBool>,
        max_claims: usize,
        tcp: Option<SocketAddr>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Self {
        PoolLink {
            core,
            commands,
            store_up,
            owned: HashMap::new(),
            held: HashMap::new(),
            held_total: 0,
            max_claims,
            unknown: HashMap::new(),
            unknown_fifo: VecDeque::new(),
            last_sweep: Instant::now(),
            dirty_aors: Vec::new(),
            remote: HashMap::new(),
            tcp,
            metrics,
            progress: HashMap::new(),
            last_checkpoint: Instant::now(),
        }
    }

    pub fn stats(&self) -> PoolStats {
        PoolStats {
            owned: self.owned.len(),
            held: self.held_total,
        }
    }

    /// A message from a client, before the proxy sees it: given back to go on now, or `None`
    /// when it is held until the SA it is signed with arrives from the pool.
    pub fn hold(&mut self, inbound: Inbound, now: Instant) -> Option<Inbound> {
        let Some(opaque) = signed_with(&inbound.message) else {
            return Some(inbound);
        };
        if self.core.sas().contains(Opaque(opaque)) || !self.store_up.load(Ordering::Relaxed) {
            return Some(inbound);
        }
        if let Some(held) = self.held.get_mut(&opaque) {
            let stream = inbound.flow.transport.is_reliable();
            let cap = if stream {
                HELD_PER_SA_STREAM
            } else {
                HELD_PER_SA
            };
            if held.messages.len() >= cap || self.held_total >= HELD_TOTAL {
                // UDP retransmissions of what is already held, or a flood: the held copy answers.
                // Over a stream nothing comes again: challenged rather than lost.
                return stream.then_some(inbound);
            }
            held.messages.push(inbound);
            self.held_total += 1;
            return None;
        }
        if self.unknown.get(&opaque).is_some_and(|until| *until > now)
            || self.held.len() >= self.max_claims
            || self.held_total >= HELD_TOTAL
        {
            return Some(inbound);
        }
        if self.commands.send(StoreCommand::Fetch { opaque }).is_err() {
            return Some(inbound);
        }
        self.held.insert(
            opaque,
            Held {
                messages: vec![inbound],
                fetches: 1,
            },
        );
        self.held_total += 1;
        None
    }

    /// The pool answered: returns the held messages, to be handed to the proxy now.
    pub fn on_event(&mut self, ev: PoolEvent, wall: SystemTime, now: Instant) -> Vec<Inbound> {
        match ev {
            PoolEvent::Fetched { opaque, outcome } => match outcome {
                FetchOutcome::Found(sa) => self.fetched(opaque, sa, wall, now),
                FetchOutcome::Unknown => {
                    self.remember_unknown(opaque, now);
                    self.release(opaque)
                }
                FetchOutcome::StoreDown => self.release(opaque),
            },
            PoolEvent::Claimed { opaque, outcome } => match outcome {
                ClaimOutcome::Taken(sa) => {
                    self.adopt(opaque, sa, wall, now);
                    self.release(opaque)
                }
                ClaimOutcome::Moved => {
                    // Another gateway claimed it since the fetch: read it again, and claim it if a
                    // held message still verifies.
                    match self.held.get_mut(&opaque) {
                        Some(h)
                            if h.fetches < FETCHES_PER_CLAIM
                                && self.commands.send(StoreCommand::Fetch { opaque }).is_ok() =>
                        {
                            h.fetches += 1;
                            Vec::new()
                        }
                        _ => self.release(opaque),
                    }
                }
                ClaimOutcome::Unknown => {
                    self.remember_unknown(opaque, now);
                    self.release(opaque)
                }
                ClaimOutcome::StoreDown => self.release(opaque),
            },
            PoolEvent::Moved { opaque, generation } => {
                if self.owned.get(&opaque).is_some_and(|g| *g < generation) {
                    self.disown(opaque);
                }
                Vec::new()
            }
            PoolEvent::Disowned { opaque } => {
                self.disown(opaque);
                Vec::new()
            }
            PoolEvent::Revoked { opaque } => {
                self.owned.remove(&opaque);
                if self.core.revoke_from_pool(Opaque(opaque)) {
                    info!(opaque = %Opaque(opaque), "security association revoked by the pool");
                }
                Vec::new()
            }
            PoolEvent::Taken { opaque, identity } => {
                // Only the refused SA goes: the opaque may name another identity's SA here by now
                // (adopted from the pool), which stays, and stays owned.
                if self.core.forget_taken_sa(Opaque(opaque), &identity) {
                    self.owned.remove(&opaque);
                    warn!(opaque = %Opaque(opaque), "a new security association drew an opaque another user holds in the pool: ended, the client signs in again");
                }
                Vec::new()
            }
            PoolEvent::Lost { opaque } => {
                if let (Some(generation), Some(sa)) =
                    (self.owned.get(&opaque), self.core.sas().get(Opaque(opaque)))
                {
                    self.publish(&sa, *generation);
                }
                Vec::new()
            }
            // Installed by the driver, which holds the proxy's registrar.
            PoolEvent::RemoteBindings { .. } => Vec::new(),
            PoolEvent::Republish => {
                self.republish();
                Vec::new()
            }
        }
    }

    /// The held messages of `opaque`, to be handed to the proxy now.
    fn release(&mut self, opaque: u32) -> Vec<Inbound> {
        let messages = self
            .held
            .remove(&opaque)
            .map(|h| h.messages)
            .unwrap_or_default();
        self.held_total = self.held_total.saturating_sub(messages.len());
        messages
    }

    /// The store has the SA: claim it only if a held message verifies against it, so that
    /// messages with a made-up signature move no SA (each claim bumps its generation and reopens
    /// the window the last owner had not written yet; docs/security.md B11c).
    fn fetched(&mut self, opaque: u32, sa: PoolSa, wall: SystemTime, now: Instant) -> Vec<Inbound> {
        let Some(snum_after) = generation_snum_base(sa.generation.saturating_add(1)) else {
            // No snum is left above the last owner's: taking it over would repeat numbers the
            // client has seen. The held messages meet no SA here and are challenged; the client
            // signs in again.
            self.past_the_last_generation(opaque, sa.generation, now);
            return self.release(opaque);
        };
        let resume = sa.resume(snum_after);
        let verified = self.held.get(&opaque).is_some_and(|h| {
            h.messages.iter().any(|m| {
                self.core
                    .verifies_with_record(&sa.record, &resume, &m.message, wall)
            })
        });
        if !verified {
            debug!(opaque = %Opaque(opaque), "no held message verifies with the pool's SA: not claimed");
            self.metrics
                .inc("sagw_state_claims_total", "result=\"unverified\"".into(), 1);
            return self.release(opaque);
        }
        if self
            .commands
            .send(StoreCommand::Claim {
                opaque,
                generation: sa.generation,
            })
            .is_err()
        {
            return self.release(opaque);
        }
        Vec::new()
    }

    /// The SA is not taken over (no `snum` is left above the last owner's): said once, and the
    /// opaque not asked for again for a while.
    fn past_the_last_generation(&mut self, opaque: u32, generation: u32, now: Instant) {
        warn!(opaque = %Opaque(opaque), generation, "security association not taken over: past the last generation (too many claims); its client must sign in again");
        self.remember_unknown(opaque, now);
    }

    /// This gateway claimed the SA: it verifies and signs for it from now on.
    fn adopt(&mut self, opaque: u32, sa: PoolSa, wall: SystemTime, now: Instant) {
        let Some(snum_after) = generation_snum_base(sa.generation) else {
            self.past_the_last_generation(opaque, sa.generation, now);
            return;
        };
        let resume = sa.resume(snum_after);
        let generation = sa.generation;
        let identity = sa.record.identity.clone();
        match self.core.adopt_sa(sa.record, &resume, wall) {
            Ok(_) => {
                self.owned.insert(opaque, generation);
                info!(opaque = %Opaque(opaque), identity = %identity, generation, "security association taken over from the pool");
            }
            Err(e) => {
                debug!(opaque = %Opaque(opaque), error = %e, "pool SA not taken in");
                self.remember_unknown(opaque, now);
            }
        }
    }

    /// Another gateway holds the SA now: this copy verifies and signs nothing more.
    fn disown(&mut self, opaque: u32) {
        self.owned.remove(&opaque);
        if self.core.forget_sa(Opaque(opaque)) {
            debug!(opaque = %Opaque(opaque), "security association moved to another gateway");
        }
    }

    fn remember_unknown(&mut self, opaque: u32, now: Instant) {
        while self.unknown.len() >= UNKNOWN_MAX {
            match self.unknown_fifo.pop_front() {
                Some((_, o)) => {
                    self.unknown.remove(&o);
                }
                None => break,
            }
        }
        let until = now + UNKNOWN_FOR;
        self.unknown.insert(opaque, until);
        self.unknown_fifo.push_back((until, opaque));
    }

    /// A local binding of `aor` changed: the pool learns its bindings at the next flush.
    pub fn binding_changed(&mut self, aor: &str) {
        if !self.dirty_aors.iter().any(|a| a == aor) {
            self.dirty_aors.push(aor.to_owned());
        }
    }

    /// AORs to publish, cleared.
    pub fn take_dirty_aors(&mut self) -> Vec<String> {
        std::mem::take(&mut self.dirty_aors)
    }

    /// Publishes the bindings of `aor` this gateway holds (`Edge::pool_bindings`). Without a
    /// TCP listener the others cannot reach its clients, and nothing is published.
    pub fn publish_bindings(&self, aor: String, local: Vec<(sagw_proxy::BindingRecord, String)>) {
        let Some(peer) = self.tcp else {
            return;
        };
        let bindings = local
            .into_iter()
            .map(|(r, route)| SharedBinding {
                device: r.device,
                route,
                peer,
                expires_unix: r.expires_unix,
                endpoint: r.endpoint,
            })
            .collect();
        let _ = self.commands.send(StoreCommand::Bindings { aor, bindings });
    }

    /// Asks for every binding in the pool (at start, and after a gap).
    pub fn load_bindings(&self) {
        let _ = self.commands.send(StoreCommand::LoadBindings);
    }

    /// The devices of `aor` installed from other gateways, replaced by `now_installed`; returns
    /// those to remove.
    pub fn replace_remote(&mut self, aor: &str, now_installed: Vec<String>) -> Vec<String> {
        let before = if now_installed.is_empty() {
            self.remote.remove(aor).unwrap_or_default()
        } else {
            self.remote
                .insert(aor.to_owned(), now_installed.clone())
                .unwrap_or_default()
        };
        before
            .into_iter()
            .filter(|d| !now_installed.contains(d))
            .collect()
    }

    /// When the core thread must call [`flush`](Self::flush) again though nothing arrives: the
    /// next checkpoint time, while progress waits for it.
    pub fn next_deadline(&self) -> Option<Instant> {
        (!self.progress.is_empty()).then(|| self.last_checkpoint + CHECKPOINT_EVERY)
    }

    /// Hands what the core journaled since the last call to the store task. Called after every
    /// pass of the core loop; costs a lock and nothing else when nothing happened.
    pub fn flush(&mut self, now: Instant) {
        let journal = self.core.drain_pool_journal();
        if !journal.is_empty() {
            for sa in &journal.established {
                self.owned.insert(sa.opaque().0, 0);
                self.publish(sa, 0);
            }
            for p in &journal.progressed {
                if let Some(generation) = self.owned.get(&p.opaque.0) {
                    // The latest state of each SA wins; written at the next checkpoint time.
                    self.progress.insert(
                        p.opaque.0,
                        Checkpoint {
                            opaque: p.opaque.0,
                            identity: p.identity.clone(),
                            generation: *generation,
                            window: p.window.to_vec(),
                            idle_deadline: p.idle_deadline,
                        },
                    );
                }
            }
            if !journal.ended.is_empty() {
                let ended: Vec<(u32, Option<String>)> = journal
                    .ended
                    .into_iter()
                    .map(|e| (e.opaque.0, e.identity))
                    .collect();
                for (o, _) in &ended {
                    self.owned.remove(o);
                }
                let _ = self.commands.send(StoreCommand::Revoke(ended));
            }
            if !journal.ended_identities.is_empty() {
                let _ = self
                    .commands
                    .send(StoreCommand::RevokeIdentity(journal.ended_identities));
            }
        }
        if now >= self.last_checkpoint + CHECKPOINT_EVERY {
            self.checkpoint(now);
        }
        if now.duration_since(self.last_sweep) > Duration::from_secs(30) {
            self.last_sweep = now;
            // SAs that idled out here leave the owned table too.
            let sas = self.core.sas();
            self.owned.retain(|o, _| sas.contains(Opaque(*o)));
            self.unknown.retain(|_, until| *until > now);
            self.unknown_fifo.retain(|(until, _)| *until > now);
        }
    }

    /// The core thread is stopping: what moved since the last write-behind goes to the store now
    /// (the store task sends it before it ends), not 20 ms later, when nobody would: the SAs'
    /// next gateways resume from the windows as this one left them.
    pub fn flush_before_stop(&mut self, now: Instant) {
        self.flush(now);
        self.checkpoint(now);
    }

    fn checkpoint(&mut self, now: Instant) {
        if self.progress.is_empty() {
            return;
        }
        self.last_checkpoint = now;
        let batch: Vec<Checkpoint> = self.progress.drain().map(|(_, c)| c).collect();
        let _ = self.commands.send(StoreCommand::Checkpoint(batch));
    }

    fn publish(&self, sa: &sagw_auth::SecurityAssociation, generation: u32) {
        match self.core.export_sa(sa) {
            Ok(record) => {
                let _ = self.commands.send(StoreCommand::Publish {
                    opaque: sa.opaque().0,
                    identity: sa.identity().to_owned(),
                    record: record.encode(),
                    generation,
                    hard_expiry: sa.hard_expiry(),
                    window: sa.window_bytes().to_vec(),
                    idle_deadline: sa.idle_deadline(),
                });
            }
            Err(e) => {
                warn!(opaque = %sa.opaque(), error = %e, "security association not shared with the pool")
            }
        }
    }

    /// The store was away: publish every SA this gateway owns again (it may have lost them, or
    /// missed revocations: the store task checks those before it writes).
    fn republish(&mut self) {
        let sas = self.core.sas();
        let mut n = 0;
        for (opaque, generation) in &self.owned {
            if let Some(sa) = sas.get(Opaque(*opaque)) {
                self.publish(&sa, *generation);
                n += 1;
            }
        }
        info!(
            sas = n,
            "state store back: security associations published again"
        );
    }
}

/// The opaque of a message signed with an SA (a request's or response's `Authorization` /
/// `Proxy-Authorization` with NTLM or Kerberos, `opaque` and a signature, no handshake token).
pub fn signed_with(msg: &Message) -> Option<u32> {
    for name in ["Proxy-Authorization", "Authorization"] {
        for v in msg.header_all(name) {
            let Ok(h) = AuthHeader::parse(v) else {
                continue;
            };
            if SaScheme::from_token(h.scheme).is_none() {
                continue;
            }
            if h.param("response").is_none() || h.param("gssapi-data").is_some() {
                continue;
            }
            if let Some(o) = h.param("opaque").and_then(Opaque::parse) {
                return Some(o.0);
            }
        }
    }
    None
}
