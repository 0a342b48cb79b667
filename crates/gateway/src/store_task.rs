//! The store task (`[state] backend = "redis"`): the only code that talks to Redis. It takes the
//! core thread's commands ([`StoreCommand`]), seals and opens SA records with the pool key, and
//! passes what the pool says (claims answered, SAs moved or revoked elsewhere, the store back
//! after a gap) to the core thread as events. The core thread never waits for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sagw_auth::SaRecord;
use sagw_state::{
    CheckpointOutcome, ClaimAt, PublishOutcome, SaProgress, Sealer, Store, StoreEvent,
};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use crate::pool::{ClaimOutcome, FetchOutcome, PoolEvent, PoolSa, SharedBinding, StoreCommand};

/// What the task needs.
pub struct StoreTask {
    /// The pool's store.
    pub store: Store,
    /// Seals and opens SA records (pool key).
    pub sealer: Arc<Sealer>,
    /// This gateway's node id.
    pub node: String,
    /// This run's hold on it (`StateSetup::instance`): extended every second, let go at the end.
    pub instance: String,
    /// Whether the store answers; the core thread holds no message while it does not.
    pub up: Arc<AtomicBool>,
    /// Where `sagw_state_*` go.
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// The associated data an SA record is sealed with: the record cannot be moved to another
/// opaque.
pub fn sa_aad(opaque: u32) -> Vec<u8> {
    let mut aad = b"sagw-sa-v1".to_vec();
    aad.extend_from_slice(&opaque.to_be_bytes());
    aad
}

impl StoreTask {
    /// This gateway's bindings of `aor`, replacing those it published before.
    async fn put_bindings(
        &self,
        aor: &str,
        bindings: &[SharedBinding],
    ) -> Result<(), sagw_state::StoreError> {
        for old in self.store.bindings_of(aor).await? {
            if old.node == self.node && !bindings.iter().any(|b| b.device == old.device) {
                self.store
                    .remove_binding(aor, &old.device, &self.node)
                    .await?;
            }
        }
        for b in bindings {
            let value = serde_json::to_vec(b).unwrap_or_default();
            self.store
                .put_binding(aor, &b.device, &value, &self.node, b.expires_unix)
                .await?;
        }
        Ok(())
    }

    /// Another gateway's bindings of `aor` changed: hand the core what the store has now.
    async fn remote_bindings(&self, aor: String, post: &Arc<impl Fn(PoolEvent) + Send + Sync>) {
        match self.store.bindings_of(&aor).await {
            Ok(list) => {
                let bindings = list
                    .into_iter()
                    .filter(|b| b.node != self.node)
                    .filter_map(|b| serde_json::from_slice::<SharedBinding>(&b.value).ok())
                    .collect();
                post(PoolEvent::RemoteBindings { aor, bindings });
            }
            Err(e) => debug!(aor = %aor, error = %e, "the pool's bindings not read"),
        }
    }

    /// Runs until the command channel closes (the core thread ended).
    pub async fn run(
        self,
        mut commands: mpsc::UnboundedReceiver<StoreCommand>,
        post: impl Fn(PoolEvent) + Send + Sync + 'static,
    ) {
        let post = Arc::new(post);
        let mut events = self.store.subscribe();
        let mut probe = tokio::time::interval(Duration::from_secs(1));
        // What failed while the store was down is covered by the republish when it is back.
        let mut was_up = true;
        let mut subscribed = false;
        let mut events_open = true;
        let mut told_taken: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                cmd = commands.recv() => {
                    let Some(cmd) = cmd else { break };
                    self.command(cmd, &post).await;
                }
                ev = events.recv(), if events_open => {
                    let Some(first) = ev else {
                        events_open = false;
                        continue;
                    };
                    // Take what else is queued: a burst of binding events for one AOR is read
                    // once, and the others' own events are not read at all.
                    let mut aors = std::collections::BTreeSet::new();
                    let mut next = Some(first);
                    while let Some(ev) = next.take() {
                        match ev {
                            StoreEvent::Revoked(opaque) => post(PoolEvent::Revoked { opaque }),
                            StoreEvent::Moved { opaque, node, generation } => {
                                if node != self.node {
                                    post(PoolEvent::Moved { opaque, generation });
                                }
                            }
                            // The first one only says the subscription is live; a later one
                            // follows a gap, in which the store may have restarted empty.
                            StoreEvent::Resubscribed if !subscribed => subscribed = true,
                            StoreEvent::Resubscribed => post(PoolEvent::Republish),
                            // This task fell behind a burst: binding events may be lost, so the
                            // others' bindings are read again. Missed revocations and moves meet
                            // tombstones and generations at the next write; nothing is published
                            // again (that would feed the burst).
                            StoreEvent::Lagged => {
                                self.command(StoreCommand::LoadBindings, &post).await;
                            }
                            StoreEvent::Binding { aor, node } => {
                                if node != self.node {
                                    aors.insert(aor);
                                }
                            }
                        }
                        if aors.len() < 1024 {
                            next = events.try_recv().ok();
                        }
                    }
                    for aor in aors {
                        self.remote_bindings(aor, &post).await;
                    }
                }
                _ = probe.tick() => {
                    let up = self.store.ping().await.is_ok();
                    if up {
                        self.hold_node(&mut told_taken).await;
                    }
                    self.up.store(up, Ordering::Relaxed);
                    self.metrics
                        .gauges
                        .store_up
                        .store(i64::from(up), Ordering::Relaxed);
                    if up && !was_up {
                        info!("state store reachable again");
                        post(PoolEvent::Republish);
                    } else if !up && was_up {
                        warn!("state store unreachable: signed traffic goes on from memory, new sign-ins stay local until it is back");
                    }
                    was_up = up;
                }
            }
        }
        // Let go of the node id: a start under it need not wait for the hold to lapse.
        if let Err(e) = self.store.release_node(&self.node, &self.instance).await {
            debug!(error = %e, "node id not let go: its hold lapses by itself");
        }
        debug!("store task stopped");
    }

    /// Extends this run's hold on its node id. Another run holding it (its hold taken while the
    /// store did not answer ours) is another gateway with this node id: said every 30 s.
    async fn hold_node(&self, told: &mut Option<tokio::time::Instant>) {
        match self
            .store
            .hold_node(&self.node, &self.instance, crate::state::NODE_HOLD)
            .await
        {
            Ok(sagw_state::NodeHold::Held) => *told = None,
            Ok(sagw_state::NodeHold::HeldByOther(_)) => {
                if told.is_none_or(|t| t.elapsed() >= Duration::from_secs(30)) {
                    error!(node = %self.node, "another running gateway of the pool has this state.node_id: the two take each other's security associations; give every gateway a node_id of its own");
                    *told = Some(tokio::time::Instant::now());
                }
            }
            Err(e) => debug!(error = %e, "node id hold not extended"),
        }
    }

    fn count_claim(&self, result: &str) {
        self.metrics
            .inc("sagw_state_claims_total", format!("result=\"{result}\""), 1);
    }

    /// An SA read from the store, opened with the pool key; `None` (counted as `unreadable`)
    /// when it does not open or decode.
    fn open(&self, opaque: u32, c: sagw_state::Claimed) -> Option<PoolSa> {
        let record = self
            .sealer
            .open(&sa_aad(opaque), &c.sealed_rec)
            .ok()
            .and_then(|plain| SaRecord::decode(&plain).ok());
        let Some(record) = record else {
            warn!(
                opaque = format!("{opaque:08X}"),
                "an SA in the store does not open with this gateway's pool key: is state.key_file the same on every gateway?"
            );
            self.count_claim("unreadable");
            return None;
        };
        Some(PoolSa {
            record,
            generation: c.generation,
            window: c.win,
            idle_deadline: c.idle,
        })
    }

    async fn command(
        &self,
        cmd: StoreCommand,
        post: &Arc<impl Fn(PoolEvent) + Send + Sync + 'static>,
    ) {
        match cmd {
            StoreCommand::Publish {
                opaque,
                identity,
                record,
                generation,
                hard_expiry,
                window,
                idle_deadline,
            } => {
                let sealed = self.sealer.seal(&sa_aad(opaque), &record);
                match self
                    .store
                    .publish_sa(
                        opaque,
                        &identity,
                        &sealed,
                        &self.node,
                        generation,
                        hard_expiry,
                        Some(SaProgress {
                            win: &window,
                            idle: idle_deadline,
                        }),
                    )
                    .await
                {
                    Ok(PublishOutcome::Published) => {}
                    // Revoked in the pool meanwhile (this gateway missed the event).
                    Ok(PublishOutcome::Revoked) => post(PoolEvent::Revoked { opaque }),
                    // Claimed by another gateway while this one was cut off from the store.
                    Ok(PublishOutcome::Moved) => post(PoolEvent::Disowned { opaque }),
                    // Another user's SA holds the opaque in the pool: this one ends here.
                    Ok(PublishOutcome::Taken) => {
                        self.metrics.inc(
                            "sagw_state_opaque_collisions_total",
                            "op=\"publish\"".into(),
                            1,
                        );
                        post(PoolEvent::Taken { opaque, identity })
                    }
                    Err(e) => {
                        debug!(error = %e, "SA not published (store down): published again when it is back");
                        self.metrics
                            .inc("sagw_state_errors_total", "op=\"publish\"".into(), 1);
                    }
                }
            }
            StoreCommand::Fetch { opaque } => {
                let outcome = match self.store.peek_sa(opaque).await {
                    Ok(Some(c)) => match self.open(opaque, c) {
                        Some(sa) => FetchOutcome::Found(sa),
                        None => FetchOutcome::Unknown,
                    },
                    Ok(None) => {
                        self.count_claim("unknown");
                        FetchOutcome::Unknown
                    }
                    Err(e) => {
                        debug!(error = %e, "fetch failed");
                        self.count_claim("store_down");
                        FetchOutcome::StoreDown
                    }
                };
                post(PoolEvent::Fetched { opaque, outcome });
            }
            StoreCommand::Claim { opaque, generation } => {
                let outcome = match self.store.claim_sa_at(opaque, &self.node, generation).await {
                    Ok(ClaimAt::Taken(c)) => match self.open(opaque, c) {
                        Some(sa) => {
                            self.count_claim("taken");
                            ClaimOutcome::Taken(sa)
                        }
                        None => ClaimOutcome::Unknown,
                    },
                    Ok(ClaimAt::Moved) => {
                        self.count_claim("moved");
                        ClaimOutcome::Moved
                    }
                    Ok(ClaimAt::Unknown) => {
                        self.count_claim("unknown");
                        ClaimOutcome::Unknown
                    }
                    Err(e) => {
                        debug!(error = %e, "claim failed");
                        self.count_claim("store_down");
                        ClaimOutcome::StoreDown
                    }
                };
                post(PoolEvent::Claimed { opaque, outcome });
            }
            StoreCommand::Checkpoint(batch) => {
                let items: Vec<sagw_state::Checkpoint> = batch
                    .into_iter()
                    .map(|c| sagw_state::Checkpoint {
                        opaque: c.opaque,
                        user: c.identity,
                        node: self.node.clone(),
                        generation: c.generation,
                        win: c.window,
                        idle: c.idle_deadline,
                    })
                    .collect();
                match self.store.checkpoint(&items).await {
                    Ok(results) => {
                        for r in results {
                            match r.outcome {
                                CheckpointOutcome::Written => {}
                                // Another gateway claimed it: this copy verifies nothing more.
                                CheckpointOutcome::Moved => {
                                    post(PoolEvent::Disowned { opaque: r.opaque })
                                }
                                // Revoked while this gateway missed the event.
                                CheckpointOutcome::Revoked => {
                                    post(PoolEvent::Revoked { opaque: r.opaque })
                                }
                                // The store lost it (restarted empty): publish it again.
                                CheckpointOutcome::Missing => {
                                    post(PoolEvent::Lost { opaque: r.opaque })
                                }
                            }
                        }
                    }
                    Err(e) => {
                        debug!(error = %e, "checkpoint not written");
                        self.metrics
                            .inc("sagw_state_errors_total", "op=\"checkpoint\"".into(), 1);
                    }
                }
            }
            StoreCommand::Revoke(opaques) => {
                for (o, identity) in opaques {
                    let revoked = match identity {
                        // Only this identity's SA: after a collision of opaques the pool's SA
                        // under `o` may be another user's.
                        Some(i) => self.store.revoke_sa_of(o, &i).await.map(drop),
                        None => self.store.revoke_sa(o).await.map(drop),
                    };
                    if let Err(e) = revoked {
                        warn!(error = %e, "revocation not shared with the pool (store down)");
                        self.metrics
                            .inc("sagw_state_errors_total", "op=\"revoke\"".into(), 1);
                    }
                }
            }
            StoreCommand::Bindings { aor, bindings } => {
                if let Err(e) = self.put_bindings(&aor, &bindings).await {
                    debug!(error = %e, "bindings not shared with the pool");
                    self.metrics
                        .inc("sagw_state_errors_total", "op=\"binding\"".into(), 1);
                }
            }
            StoreCommand::LoadBindings => match self.store.all_bindings().await {
                Ok(all) => {
                    let mut by_aor: std::collections::BTreeMap<String, Vec<SharedBinding>> =
                        std::collections::BTreeMap::new();
                    for b in all {
                        if b.node == self.node {
                            continue;
                        }
                        if let Ok(shared) = serde_json::from_slice::<SharedBinding>(&b.value) {
                            by_aor.entry(b.aor).or_default().push(shared);
                        }
                    }
                    for (aor, bindings) in by_aor {
                        post(PoolEvent::RemoteBindings { aor, bindings });
                    }
                }
                Err(e) => debug!(error = %e, "the pool's bindings not read"),
            },
            StoreCommand::RevokeIdentity(identities) => {
                for i in identities {
                    match self.store.revoke_identity(&i).await {
                        Ok(ended) => {
                            info!(identity = %i, sas = ended.len(), "identity revoked in the pool")
                        }
                        Err(e) => {
                            warn!(identity = %i, error = %e, "revocation not shared with the pool (store down)");
                            self.metrics
                                .inc("sagw_state_errors_total", "op=\"revoke\"".into(), 1);
                        }
                    }
                }
            }
        }
    }
}
