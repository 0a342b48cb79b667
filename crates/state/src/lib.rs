//! `sagw-state`: what a pool of gateways shares (docs/pools.md).
//!
//! * [`PoolKey`]: the pool key file and the keys derived from it (flow tokens, NTLM challenges,
//!   Digest nonces, sealing), with a [`PoolKey::fingerprint`] gateways compare through the store.
//! * [`Sealer`]: ChaCha20-Poly1305 sealing of SA records ([`seal::sa_aad`]).
//! * [`Store`]: the Redis (standalone or Cluster) client: SAs with an owner and a generation,
//!   claims, conditional checkpoints, revocations, the Kerberos replay check, registrar bindings,
//!   and the [`StoreEvent`]s other gateways publish.
//! * `testing` (feature `testing`): real `redis-server` processes for tests.

pub mod events;
pub mod keys;
pub mod redis_store;
pub mod seal;
#[cfg(feature = "testing")]
pub mod testing;

pub use events::{EVENTS_CHANNEL, StoreEvent};
pub use keys::{DerivedKey, KeyFileError, PoolKey};
pub use redis_store::{
    Binding, Checkpoint, CheckpointResult, Claimed, EventReceiver, Store, StoreConfig, StoreError,
};
pub use seal::{SealError, Sealer, sa_aad};

/// A gateway's name in the pool as the store and the events carry it: 1 to 64 ASCII letters,
/// digits and `- _ . :` (the rule of `state.node_id`).
pub fn valid_node_id(node: &str) -> bool {
    !node.is_empty()
        && node.len() <= 64
        && node
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}
