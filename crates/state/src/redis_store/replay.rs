//! The pool-wide Kerberos replay check, and the registry through which the Kerberos workers
//! (plain threads, not tasks) make it.

use std::time::Duration;

use redis::Value;

use super::codec::corrupt;
use super::keys::krb_key;
use super::{Store, StoreError};

impl Store {
    /// The pool-wide Kerberos replay check: `true` the first time `key` (a hash of an
    /// authenticator) is seen in the pool, `false` after; remembered for `ttl`.
    pub async fn kerberos_first_use(
        &self,
        key: &[u8; 32],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let v: Value = self
            .run(async {
                let mut c = self.conn();
                redis::cmd("SET")
                    .arg(krb_key(key))
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(ms)
                    .query_async(&mut c)
                    .await
                    .map_err(|e| StoreError::from_redis(&e))
            })
            .await?;
        match v {
            Value::Okay => Ok(true),
            Value::Nil => Ok(false),
            other => Err(corrupt("SET NX", &other)),
        }
    }
}

/// The pool-wide Kerberos replay check for the Kerberos workers: [`Store::kerberos_first_use`]
/// run on the store's tokio runtime, the calling (worker) thread waiting at most the command
/// timeout. Call it from a plain thread, not from a task of that runtime.
#[derive(Clone, Debug)]
pub struct StoreReplayRegistry {
    store: Store,
    runtime: tokio::runtime::Handle,
}

impl StoreReplayRegistry {
    /// `runtime`: the runtime the store's connections live on.
    pub fn new(store: Store, runtime: tokio::runtime::Handle) -> StoreReplayRegistry {
        StoreReplayRegistry { store, runtime }
    }
}

impl sagw_auth::KerberosReplayRegistry for StoreReplayRegistry {
    fn first_use(&self, key: &[u8; 32], ttl: Duration) -> sagw_auth::ReplayCheck {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let store = self.store.clone();
        let key = *key;
        self.runtime.spawn(async move {
            let _ = tx.send(store.kerberos_first_use(&key, ttl).await);
        });
        // The call is bounded by the command timeout already; the margin covers scheduling.
        let wait = self.store.command_timeout() + Duration::from_millis(200);
        match rx.recv_timeout(wait) {
            Ok(Ok(true)) => sagw_auth::ReplayCheck::First,
            Ok(Ok(false)) => sagw_auth::ReplayCheck::Replayed,
            Ok(Err(_)) | Err(_) => sagw_auth::ReplayCheck::Unavailable,
        }
    }
}
