//! Which running gateway holds a node id: two gateways configured with one `state.node_id`
//! claimed each other's SAs as their own and lost each other's replay windows.

use std::time::Duration;

use super::keys::node_key;
use super::{Store, StoreError};
use crate::valid_node_id;

/// What [`Store::hold_node`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeHold {
    /// The node id is this instance's for the time asked.
    Held,
    /// Another instance holds it (its instance text).
    HeldByOther(String),
}

impl Store {
    /// Holds `node` for `instance` (a value drawn at each start) for `ttl`, or extends this
    /// instance's hold; [`NodeHold::HeldByOther`] when another instance holds it.
    pub async fn hold_node(
        &self,
        node: &str,
        instance: &str,
        ttl: Duration,
    ) -> Result<NodeHold, StoreError> {
        if !valid_node_id(node) {
            return Err(StoreError::Invalid("node id"));
        }
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let other: Option<String> = self
            .run(async {
                let mut c = self.conn();
                self.inner
                    .scripts
                    .hold_node
                    .key(node_key(node))
                    .arg(instance)
                    .arg(ms)
                    .invoke_async(&mut c)
                    .await
                    .map_err(|e| StoreError::from_redis(&e))
            })
            .await?;
        Ok(match other {
            None => NodeHold::Held,
            Some(o) => NodeHold::HeldByOther(o),
        })
    }

    /// Lets go of `node` when `instance` holds it (a graceful stop: the next start under that id
    /// need not wait for the hold to lapse).
    pub async fn release_node(&self, node: &str, instance: &str) -> Result<(), StoreError> {
        if !valid_node_id(node) {
            return Err(StoreError::Invalid("node id"));
        }
        self.run(async {
            let mut c = self.conn();
            let _: i64 = self
                .inner
                .scripts
                .release_node
                .key(node_key(node))
                .arg(instance)
                .invoke_async(&mut c)
                .await
                .map_err(|e| StoreError::from_redis(&e))?;
            Ok(())
        })
        .await
    }
}
