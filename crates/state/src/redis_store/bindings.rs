//! Registrar bindings: one hash per AOR, and the index of AORs.

use std::time::{SystemTime, UNIX_EPOCH};

use super::codec::{decode_bindings, encode_binding};
use super::conn::Batch;
use super::keys::{KEY_REGS, reg_key};
use super::{Binding, Store, StoreError};
use crate::events::{EVENTS_CHANNEL, StoreEvent};
use crate::valid_node_id;

impl Store {
    /// Adds or refreshes a binding of `aor` held by `node`, and publishes `binding`.
    pub async fn put_binding(
        &self,
        aor: &str,
        device: &str,
        value: &[u8],
        node: &str,
        expires_unix: u64,
    ) -> Result<(), StoreError> {
        if !valid_node_id(node) {
            return Err(StoreError::Invalid("node id"));
        }
        if aor.is_empty() {
            return Err(StoreError::Invalid("empty AOR"));
        }
        let key = reg_key(aor);
        let enc = encode_binding(node, expires_unix, value);
        let mut cmds = Batch::default();
        let mut hset = redis::cmd("HSET");
        hset.arg(&key).arg(device).arg(enc);
        cmds.add(Some(&key), hset);
        for cond in ["NX", "GT"] {
            let mut exp = redis::cmd("EXPIREAT");
            exp.arg(&key).arg(expires_unix).arg(cond);
            cmds.add(Some(&key), exp);
        }
        // The index after the binding: an AOR indexed without bindings is skipped and tidied.
        let mut sadd = redis::cmd("SADD");
        sadd.arg(KEY_REGS).arg(aor);
        cmds.add(Some(KEY_REGS), sadd);
        publish_binding_event(&mut cmds, aor, node);
        self.run(self.exec_batch_ok(&cmds, "put binding")).await?;
        Ok(())
    }

    /// Removes `node`'s binding of `device`, and publishes `binding`. Another node's binding of
    /// the device is left: the client registered there since `node` read the AOR, and the write
    /// of a node tidying what it no longer holds must not remove it.
    pub async fn remove_binding(
        &self,
        aor: &str,
        device: &str,
        node: &str,
    ) -> Result<(), StoreError> {
        if !valid_node_id(node) {
            return Err(StoreError::Invalid("node id"));
        }
        let left: i64 = self
            .run(async {
                let mut c = self.conn();
                self.inner
                    .scripts
                    .remove_binding
                    .key(reg_key(aor))
                    .arg(device)
                    .arg(node)
                    .invoke_async(&mut c)
                    .await
                    .map_err(|e| StoreError::from_redis(&e))
            })
            .await?;
        let mut cmds = Batch::default();
        if left == 0 {
            let mut srem = redis::cmd("SREM");
            srem.arg(KEY_REGS).arg(aor);
            cmds.add(Some(KEY_REGS), srem);
        }
        publish_binding_event(&mut cmds, aor, node);
        self.run(self.exec_batch_ok(&cmds, "remove binding"))
            .await?;
        Ok(())
    }

    /// The live bindings of `aor` (expired ones are left out).
    pub async fn bindings_of(&self, aor: &str) -> Result<Vec<Binding>, StoreError> {
        let fields: Vec<(Vec<u8>, Vec<u8>)> = self
            .run(async {
                let mut c = self.conn();
                redis::cmd("HGETALL")
                    .arg(reg_key(aor))
                    .query_async(&mut c)
                    .await
                    .map_err(|e| StoreError::from_redis(&e))
            })
            .await?;
        Ok(decode_bindings(aor, fields, now_unix()))
    }

    /// Every live binding in the pool (for a node that starts or resyncs).
    pub async fn all_bindings(&self) -> Result<Vec<Binding>, StoreError> {
        let aors: Vec<Vec<u8>> = self
            .run(async {
                let mut c = self.conn();
                redis::cmd("SMEMBERS")
                    .arg(KEY_REGS)
                    .query_async(&mut c)
                    .await
                    .map_err(|e| StoreError::from_redis(&e))
            })
            .await?;
        let aors: Vec<String> = aors
            .into_iter()
            .filter_map(|a| String::from_utf8(a).ok())
            .collect();
        if aors.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmds = Batch::default();
        for a in &aors {
            let key = reg_key(a);
            let mut c = redis::cmd("HGETALL");
            c.arg(&key);
            cmds.add(Some(&key), c);
        }
        let all = self.run(self.exec_batch_ok(&cmds, "all bindings")).await?;
        let now = now_unix();
        let mut out = Vec::new();
        let mut gone = Vec::new();
        for (aor, v) in aors.iter().zip(all) {
            let fields: Vec<(Vec<u8>, Vec<u8>)> = redis::from_redis_value(v)
                .map_err(|e| StoreError::Corrupt(format!("bindings of an AOR: {e}")))?;
            if fields.is_empty() {
                gone.push(aor.as_str());
            }
            out.extend(decode_bindings(aor, fields, now));
        }
        if !gone.is_empty() {
            // Index entries whose bindings all expired: tidy, best effort.
            let _ = self
                .run(async {
                    let mut c = self.conn();
                    redis::cmd("SREM")
                        .arg(KEY_REGS)
                        .arg(&gone)
                        .exec_async(&mut c)
                        .await
                        .map_err(|e| StoreError::from_redis(&e))
                })
                .await;
        }
        Ok(out)
    }
}

/// Adds the `binding` event of `node`'s change to `aor` to a batch.
fn publish_binding_event(cmds: &mut Batch, aor: &str, node: &str) {
    let ev = StoreEvent::Binding {
        aor: aor.into(),
        node: node.into(),
    };
    if let Some(ev) = ev.encode() {
        let mut publish = redis::cmd("PUBLISH");
        publish.arg(EVENTS_CHANNEL).arg(ev);
        cmds.add(None, publish);
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
