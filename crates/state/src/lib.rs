//! What a pool of sagw gateways shares (docs/pools.md): the pool key and the keys derived from
//! it ([`PoolKey`]), the sealing of SA records and snapshots ([`Sealer`]), and the Redis store
//! ([`Store`]: SAs with an owner and a generation, claims, conditional checkpoints, revocations,
//! the Kerberos replay check, registrar bindings, and the [`StoreEvent`]s gateways publish).
//! Feature `testing`: real `redis-server` processes for tests (module `testing`).

pub mod events;
pub mod keys;
pub mod redis_store;
pub mod seal;
#[cfg(feature = "testing")]
pub mod testing;

pub use events::{EVENTS_CHANNEL, StoreEvent};
pub use keys::{KeyError, PoolKey};
pub use redis_store::{
    Binding, Checkpoint, CheckpointOutcome, CheckpointResult, ClaimAt, Claimed, EventReceiver,
    NodeHold, PublishOutcome, RevokeOutcome, SaProgress, Store, StoreConfig, StoreError,
    StoreReplayRegistry,
};
pub use seal::{SealError, Sealer};

/// A gateway's name in the pool as the store and the events carry it: 1 to 64 ASCII letters,
/// digits and `- _ . :` (the rule of `state.node_id`).
pub fn valid_node_id(node: &str) -> bool {
    !node.is_empty()
        && node.len() <= 64
        && node
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}
