//! SAs in the pool: publication, claims, checkpoints, revocations and ownership checks.

use redis::{ServerErrorKind, Value};

use super::codec::{corrupt, opt_bytes, parse_u32, parse_u64};
use super::conn::Batch;
use super::keys::{sa_key, user_key};
use super::{
    Checkpoint, CheckpointOutcome, CheckpointResult, ClaimAt, Claimed, PublishOutcome,
    RevokeOutcome, SaProgress, Store, StoreError, server_error,
};
use crate::events::{EVENTS_CHANNEL, StoreEvent, parse_opaque};
use crate::valid_node_id;

impl Store {
    /// Publishes a newly established SA owned by `owner` at generation `generation`, expiring at
    /// `hard_expiry_unix`; adds it to its identity's set (whose expiry only grows). Also how an
    /// owner publishes again what a store that restarted empty lost. Refused with
    /// [`PublishOutcome::Taken`] when the opaque names another identity's SA or tombstone: the
    /// opaque then leaves the identity's set again. `progress`, the owner's window and idle
    /// deadline, replaces what the record held (nothing: a claimer starts from a fresh window).
    #[allow(clippy::too_many_arguments)]
    pub async fn publish_sa(
        &self,
        opaque: u32,
        identity: &str,
        sealed_rec: &[u8],
        owner: &str,
        generation: u32,
        hard_expiry_unix: u64,
        progress: Option<SaProgress<'_>>,
    ) -> Result<PublishOutcome, StoreError> {
        if !valid_node_id(owner) {
            return Err(StoreError::Invalid("node id"));
        }
        let member = format!("{opaque:08X}");
        let ukey = user_key(identity);
        let mut pipe = redis::pipe();
        // The set first: if the SA's write fails, an opaque without SA is harmless. The other
        // order would leave an SA its identity's revocation cannot find. The set and the SA are
        // in two Cluster slots, so one script cannot write both; a member naming another user's
        // SA (a refused publication, until the SREM below) is harmless too, because a revocation
        // through the set ends only that identity's SAs (REVOKE_SA checks the user).
        pipe.cmd("SADD").arg(&ukey).arg(&member).ignore();
        pipe.cmd("EXPIREAT")
            .arg(&ukey)
            .arg(hard_expiry_unix)
            .arg("NX")
            .ignore();
        pipe.cmd("EXPIREAT")
            .arg(&ukey)
            .arg(hard_expiry_unix)
            .arg("GT")
            .ignore();
        let outcome = self
            .run(async {
                let mut c = self.conn();
                pipe.exec_async(&mut c)
                    .await
                    .map_err(|e| StoreError::from_redis(&e))?;
                let published: i64 = self
                    .inner
                    .scripts
                    .publish_sa
                    .key(sa_key(opaque))
                    .arg(sealed_rec)
                    .arg(owner)
                    .arg(generation)
                    .arg(identity)
                    .arg(hard_expiry_unix)
                    .arg(progress.map_or(&[][..], |p| p.win))
                    .arg(progress.map_or(0, |p| p.idle))
                    .invoke_async(&mut c)
                    .await
                    .map_err(|e| StoreError::from_redis(&e))?;
                Ok(match published {
                    1 => PublishOutcome::Published,
                    0 => PublishOutcome::Revoked,
                    3 => PublishOutcome::Taken,
                    _ => PublishOutcome::Moved,
                })
            })
            .await?;
        if outcome == PublishOutcome::Taken {
            // Best effort: a member left behind is skipped by revoke_identity (see above).
            let _ = self
                .run(async {
                    let mut c = self.conn();
                    redis::cmd("SREM")
                        .arg(&ukey)
                        .arg(&member)
                        .exec_async(&mut c)
                        .await
                        .map_err(|e| StoreError::from_redis(&e))
                })
                .await;
        }
        Ok(outcome)
    }

    /// Claims the SA for `node`: bumps its generation, makes `node` its owner, returns the record
    /// and the last window, and publishes `moved`. `None`: the store does not know the SA.
    pub async fn claim_sa(&self, opaque: u32, node: &str) -> Result<Option<Claimed>, StoreError> {
        match self.claim(opaque, node, None).await? {
            ClaimAt::Taken(c) => Ok(Some(c)),
            ClaimAt::Unknown => Ok(None),
            ClaimAt::Moved => Err(StoreError::Corrupt(
                "claim: moved without a condition".into(),
            )),
        }
    }

    /// [`claim_sa`](Self::claim_sa) only while the SA is still at `generation`, the one
    /// [`peek_sa`](Self::peek_sa) read: a gateway claims an SA only after a message verified
    /// against what it read, and nobody moved it meanwhile.
    pub async fn claim_sa_at(
        &self,
        opaque: u32,
        node: &str,
        generation: u32,
    ) -> Result<ClaimAt, StoreError> {
        self.claim(opaque, node, Some(generation)).await
    }

    /// The SA as the store has it, changing nothing: the record, its current generation, the last
    /// window and idle deadline written, and its owner (as `prev_owner`). `None`: unknown (or
    /// revoked).
    pub async fn peek_sa(&self, opaque: u32) -> Result<Option<Claimed>, StoreError> {
        let reply: Value = self
            .run(async {
                let mut c = self.conn();
                redis::cmd("HMGET")
                    .arg(sa_key(opaque))
                    .arg(&["rec", "gen", "win", "idle", "owner"])
                    .query_async(&mut c)
                    .await
                    .map_err(|e| StoreError::from_redis(&e))
            })
            .await?;
        let items = match reply {
            Value::Array(items) if items.len() == 5 => items,
            other => return Err(corrupt("peek", &other)),
        };
        if matches!(items.first(), Some(Value::Nil)) {
            return Ok(None);
        }
        Self::claimed_from(items, "peek").map(Some)
    }

    async fn claim(
        &self,
        opaque: u32,
        node: &str,
        generation: Option<u32>,
    ) -> Result<ClaimAt, StoreError> {
        if !valid_node_id(node) {
            return Err(StoreError::Invalid("node id"));
        }
        let expected = generation.map(|g| g.to_string()).unwrap_or_default();
        let reply: Value = self
            .run(async {
                let mut c = self.conn();
                self.inner
                    .scripts
                    .claim
                    .key(sa_key(opaque))
                    .arg(node)
                    .arg(format!("1 moved {opaque:08X} "))
                    .arg(format!(" {node}"))
                    .arg(EVENTS_CHANNEL)
                    .arg(&expected)
                    .invoke_async(&mut c)
                    .await
                    .map_err(|e| StoreError::from_redis(&e))
            })
            .await?;
        let items = match reply {
            Value::Nil | Value::Boolean(false) => return Ok(ClaimAt::Unknown),
            Value::Int(-1) if generation.is_some() => return Ok(ClaimAt::Moved),
            Value::Array(items) if items.len() == 5 => items,
            other => return Err(corrupt("claim", &other)),
        };
        Self::claimed_from(items, "claim").map(ClaimAt::Taken)
    }

    /// A claim's or a peek's five fields: record, generation, window, idle deadline, owner.
    fn claimed_from(items: Vec<Value>, what: &str) -> Result<Claimed, StoreError> {
        let mut it = items.into_iter();
        let (rec, generation, win, idle, prev) =
            match (it.next(), it.next(), it.next(), it.next(), it.next()) {
                (Some(a), Some(b), Some(c), Some(d), Some(e)) => (a, b, c, d, e),
                _ => return Err(StoreError::Corrupt(format!("{what}: short reply"))),
            };
        let sealed_rec = opt_bytes(rec, what)?
            .ok_or_else(|| StoreError::Corrupt(format!("{what}: no record")))?;
        // The claim script returns the generation as an integer, HMGET as a string.
        let generation = match generation {
            Value::Int(g) => u32::try_from(g)
                .map_err(|_| StoreError::Corrupt(format!("{what}: generation {g}")))?,
            Value::BulkString(b) => parse_u32(&b, "generation")?,
            other => return Err(corrupt(what, &other)),
        };
        let win = opt_bytes(win, what)?;
        let idle = opt_bytes(idle, what)?
            .map(|b| parse_u64(&b, "idle"))
            .transpose()?;
        let prev_owner = opt_bytes(prev, what)?
            .map(|b| String::from_utf8(b).map_err(|_| StoreError::Corrupt("owner".into())))
            .transpose()?;
        Ok(Claimed {
            sealed_rec,
            generation,
            win,
            idle,
            prev_owner,
        })
    }

    /// Writes behind what owners learned, each write conditional on the node still owning the
    /// SA at that generation; one pipeline (one per slot in a Cluster). One result per
    /// checkpoint, in order.
    pub async fn checkpoint(
        &self,
        batch: &[Checkpoint],
    ) -> Result<Vec<CheckpointResult>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        if batch.iter().any(|c| !valid_node_id(&c.node)) {
            return Err(StoreError::Invalid("node id"));
        }
        let script = &self.inner.scripts.checkpoint;
        let mut cmds = Batch::default();
        for c in batch {
            let key = sa_key(c.opaque);
            let mut cmd = redis::cmd("EVALSHA");
            cmd.arg(script.get_hash())
                .arg(1)
                .arg(&key)
                .arg(&c.node)
                .arg(c.generation)
                .arg(&c.win[..])
                .arg(c.idle)
                .arg(&c.user);
            cmds.add(Some(&key), cmd);
        }
        let replies = self
            .run(async {
                let replies = self.exec_batch(&cmds).await?;
                let no_script = replies.iter().any(|v| {
                    matches!(v, Value::ServerError(e) if e.kind() == Some(ServerErrorKind::NoScript))
                });
                if !no_script {
                    return Ok(replies);
                }
                // A restarted server (or a Cluster node) without the script: load it (on every
                // master in a Cluster) and send again; writes refused with NOSCRIPT did nothing,
                // and the others are idempotent.
                let mut c = self.conn();
                script
                    .prepare_invoke()
                    .load_async(&mut c)
                    .await
                    .map_err(|e| StoreError::from_redis(&e))?;
                self.exec_batch(&cmds).await
            })
            .await?;
        batch
            .iter()
            .zip(replies)
            .map(|(c, v)| match v {
                Value::Int(n) => Ok(CheckpointResult {
                    opaque: c.opaque,
                    outcome: match n {
                        1 => CheckpointOutcome::Written,
                        2 => CheckpointOutcome::Missing,
                        3 => CheckpointOutcome::Revoked,
                        _ => CheckpointOutcome::Moved,
                    },
                }),
                Value::ServerError(e) => {
                    Err(server_error(&e, &format!("checkpoint {:08X}", c.opaque)))
                }
                other => Err(corrupt("checkpoint", &other)),
            })
            .collect()
    }

    /// Ends an SA in the pool, whoever's it is, and publishes `revoke` (even when the store no
    /// longer had it: a node may still hold it). `true` if the store had it. An operator's
    /// revocation by opaque (docs/pools.md); a gateway ending an SA it made or holds names its
    /// identity with [`revoke_sa_of`](Self::revoke_sa_of).
    pub async fn revoke_sa(&self, opaque: u32) -> Result<bool, StoreError> {
        Ok(self.revoke(opaque, None).await? == RevokeOutcome::Revoked)
    }

    /// Ends `identity`'s SA under `opaque` in the pool, as [`revoke_sa`](Self::revoke_sa) does;
    /// refused ([`RevokeOutcome::OtherUser`]: nothing changed, nothing published) when the opaque
    /// names another identity's SA or tombstone, as after a collision of opaques (docs/security.md
    /// B11e).
    pub async fn revoke_sa_of(
        &self,
        opaque: u32,
        identity: &str,
    ) -> Result<RevokeOutcome, StoreError> {
        self.revoke(opaque, Some(identity)).await
    }

    async fn revoke(
        &self,
        opaque: u32,
        identity: Option<&str>,
    ) -> Result<RevokeOutcome, StoreError> {
        let (outcome, user) = self.tombstone(opaque, identity).await?;
        if outcome == RevokeOutcome::OtherUser {
            return Ok(outcome);
        }
        // Leave the identity's set (another slot in a Cluster; a failure leaves a stale member,
        // which revoke_identity skips).
        if let Some(id) = user.as_deref().and_then(|u| std::str::from_utf8(u).ok()) {
            let key = user_key(id);
            let _ = self
                .run(async {
                    let mut c = self.conn();
                    redis::cmd("SREM")
                        .arg(key)
                        .arg(format!("{opaque:08X}"))
                        .exec_async(&mut c)
                        .await
                        .map_err(|e| StoreError::from_redis(&e))
                })
                .await;
        }
        Ok(outcome)
    }

    /// Replaces the SA by a tombstone and publishes `revoke` (the revoke script), unless
    /// `identity` is given and the opaque names another identity's SA; what became of it, and
    /// the identity the tombstone keeps.
    async fn tombstone(
        &self,
        opaque: u32,
        identity: Option<&str>,
    ) -> Result<(RevokeOutcome, Option<Vec<u8>>), StoreError> {
        let event = StoreEvent::Revoked(opaque).encode().unwrap_or_default();
        let reply: Value = self
            .run(async {
                let mut c = self.conn();
                self.inner
                    .scripts
                    .revoke
                    .key(sa_key(opaque))
                    .arg(EVENTS_CHANNEL)
                    .arg(&event)
                    .arg(identity.unwrap_or_default())
                    .invoke_async(&mut c)
                    .await
                    .map_err(|e| StoreError::from_redis(&e))
            })
            .await?;
        let items = match reply {
            Value::Array(items) => items,
            other => return Err(corrupt("revoke", &other)),
        };
        let mut it = items.into_iter();
        let outcome = match it.next() {
            Some(Value::Int(1)) => RevokeOutcome::Revoked,
            Some(Value::Int(0)) => RevokeOutcome::Absent,
            Some(Value::Int(-1)) => RevokeOutcome::OtherUser,
            other => return Err(corrupt("revoke", &other.unwrap_or(Value::Nil))),
        };
        let user = match it.next() {
            Some(v) => opt_bytes(v, "revoke")?,
            None => None,
        };
        Ok((outcome, user))
    }

    /// Ends every SA of `identity` in the pool and returns them: each replaced by a tombstone and
    /// published as `revoke`, as [`revoke_sa`](Self::revoke_sa) does. A tombstone is what makes a
    /// gateway that missed the event end the SA when its next checkpoint or publication meets it;
    /// an SA merely deleted came back as "lost", published again by its owner.
    pub async fn revoke_identity(&self, identity: &str) -> Result<Vec<u32>, StoreError> {
        let ukey = user_key(identity);
        let members: Vec<Vec<u8>> = self
            .run(async {
                let mut c = self.conn();
                redis::cmd("SMEMBERS")
                    .arg(&ukey)
                    .query_async(&mut c)
                    .await
                    .map_err(|e| StoreError::from_redis(&e))
            })
            .await?;
        let mut opaques: Vec<u32> = members
            .iter()
            .filter_map(|m| std::str::from_utf8(m).ok().and_then(parse_opaque))
            .collect();
        opaques.sort_unstable();
        opaques.dedup();
        let mut ended = Vec::with_capacity(opaques.len());
        for o in opaques {
            // A member whose SA already ended gets a tombstone too (harmless), but is not counted;
            // one naming another identity's SA (a publication refused as Taken whose SREM was
            // lost) is left alone.
            if self.tombstone(o, Some(identity)).await?.0 == RevokeOutcome::Revoked {
                ended.push(o);
            }
        }
        self.run(async {
            let mut c = self.conn();
            redis::cmd("DEL")
                .arg(&ukey)
                .exec_async(&mut c)
                .await
                .map_err(|e| StoreError::from_redis(&e))
        })
        .await?;
        Ok(ended)
    }

    /// The SA's owner and generation; `None` if the store does not have it.
    pub async fn sa_owner(&self, opaque: u32) -> Result<Option<(String, u32)>, StoreError> {
        let (owner, generation): (Option<Vec<u8>>, Option<Vec<u8>>) = self
            .run(async {
                let mut c = self.conn();
                redis::cmd("HMGET")
                    .arg(sa_key(opaque))
                    .arg("owner")
                    .arg("gen")
                    .query_async(&mut c)
                    .await
                    .map_err(|e| StoreError::from_redis(&e))
            })
            .await?;
        match (owner, generation) {
            (Some(o), Some(g)) => Ok(Some((
                String::from_utf8(o).map_err(|_| StoreError::Corrupt("owner".into()))?,
                parse_u32(&g, "gen")?,
            ))),
            (None, None) => Ok(None),
            _ => Err(StoreError::Corrupt(format!(
                "SA {opaque:08X} has an owner without a generation or the reverse"
            ))),
        }
    }

    /// Whether the store has the SA.
    pub async fn sa_exists(&self, opaque: u32) -> Result<bool, StoreError> {
        self.run(async {
            let mut c = self.conn();
            redis::cmd("HEXISTS")
                .arg(sa_key(opaque))
                .arg("rec")
                .query_async(&mut c)
                .await
                .map_err(|e| StoreError::from_redis(&e))
        })
        .await
    }

    /// Of the SAs `node` believes it owns at the given generations, those it no longer owns
    /// (gone, or claimed by another node, or at another generation). One pipeline (one per slot
    /// in a Cluster).
    pub async fn check_owned(
        &self,
        node: &str,
        held: &[(u32, u32)],
    ) -> Result<Vec<u32>, StoreError> {
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmds = Batch::default();
        for (o, _) in held {
            let key = sa_key(*o);
            let mut c = redis::cmd("HMGET");
            c.arg(&key).arg("owner").arg("gen");
            cmds.add(Some(&key), c);
        }
        let replies = self.run(self.exec_batch_ok(&cmds, "check owned")).await?;
        let mut lost = Vec::new();
        for ((opaque, generation), v) in held.iter().zip(replies) {
            let (owner, g): (Option<Vec<u8>>, Option<Vec<u8>>) = redis::from_redis_value(v)
                .map_err(|e| StoreError::Corrupt(format!("check owned: {e}")))?;
            let ours = owner.as_deref() == Some(node.as_bytes())
                && g.as_deref() == Some(generation.to_string().as_bytes());
            if !ours {
                lost.push(*opaque);
            }
        }
        Ok(lost)
    }
}
