//! The Redis store client (Redis 7 / Valkey, standalone or Cluster): the layout of docs/pools.md.
//!
//! | key | type | fields |
//! |---|---|---|
//! | `sagw:sa:{OPAQUE}` | hash, expires at the SA's hard end | `rec` (sealed record), `owner`, `generation`, `win`, `idle`, `user` (identity: to leave its set on revoke, and so that one user's publication or revocation never touches another's SA under the same opaque); a tombstone is `revoked` and `user` |
//! | `sagw:user:{identity}` | set of `OPAQUE` | expires with its longest-lived SA |
//! | `sagw:krb:{hex}` | string, `SET NX PX` | a Kerberos authenticator seen |
//! | `sagw:reg:{aor}` | hash device → binding ([`Binding`], encoded below) | expires with its last binding |
//! | `sagw:regs` | set of AORs | index for [`Store::all_bindings`] |
//! | `sagw:pool-key-id` | string | the pool key's fingerprint |
//! | `sagw:node:{node}` | string, `PX` | the running gateway (its instance, drawn at each start) that holds the node id |
//!
//! Every operation on one SA is one key, hence one Cluster slot: claims, checkpoints and revokes
//! are Lua scripts on that key (EVALSHA, loaded again on `NOSCRIPT`). What spans keys (an SA and
//! its identity's set, a binding and the index) is written key by key, in one pipeline, not
//! atomically: the order is chosen so that a failure halfway leaves a harmless extra entry (an
//! opaque in a user set whose SA is gone, an AOR in the index without bindings), which readers
//! skip and clean.
//!
//! Every call is bounded by `command_timeout` and fails with [`StoreError::Unavailable`] when the
//! store cannot be reached; the connection is re-established in the background (the
//! `ConnectionManager` for one server; the cluster client for a Cluster), so a call after the
//! store is back succeeds. [`Store::is_up`] is the outcome of the last call (`sagw_state_store_up`).
//!
//! Binding values: `0x01 | node length (1 byte) | node | expiry (u64 big-endian, unix seconds) |
//! the caller's bytes`. Redis 7.0 has no per-field expiry, so expired bindings are filtered when
//! read.

mod bindings;
mod codec;
mod conn;
mod keys;
mod node;
mod replay;
mod sa;
mod scripts;
mod subscriber;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use redis::{ErrorKind, RedisError, ServerErrorKind};

use conn::Conn;
use scripts::Scripts;

pub use node::NodeHold;
pub use replay::StoreReplayRegistry;
pub use subscriber::{EVENT_QUEUE, EventReceiver};

/// How the gateway reaches the store.
#[derive(Clone)]
pub struct StoreConfig {
    /// `redis://host:port` or `rediss://host:port` (TLS, system roots); `redis://:password@…` or
    /// `redis://user:password@…` for AUTH. With `cluster`, any of the cluster's nodes (the
    /// others are discovered).
    pub urls: Vec<String>,
    /// Redis Cluster instead of one server.
    pub cluster: bool,
    /// A file holding the password (first line), used instead of one in the URLs.
    pub password_file: Option<PathBuf>,
    /// Bound on opening a connection.
    pub connect_timeout: Duration,
    /// Bound on every call, connection included: past it the call fails with
    /// [`StoreError::Unavailable`].
    pub command_timeout: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            urls: vec!["redis://127.0.0.1:6379".into()],
            cluster: false,
            password_file: None,
            connect_timeout: Duration::from_secs(1),
            command_timeout: Duration::from_millis(500),
        }
    }
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreConfig")
            .field(
                "urls",
                &self.urls.iter().map(|u| redact_url(u)).collect::<Vec<_>>(),
            )
            .field("cluster", &self.cluster)
            .field("password_file", &self.password_file)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .finish()
    }
}

/// `url` with any password replaced by `***` (for logs and errors).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            format!("{scheme}://{user}:***@{host}{path}")
        }
        None => url.to_owned(),
    }
}

/// What went wrong with the store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached, or did not answer within the command timeout.
    #[error("state store unavailable: {0}")]
    Unavailable(String),
    /// The store refused our credentials.
    #[error("state store refused the credentials: {0}")]
    Auth(String),
    /// The store answered with an error.
    #[error("state store command failed: {0}")]
    Command(String),
    /// The store answered something this layout never writes.
    #[error("state store returned an unexpected reply: {0}")]
    Corrupt(String),
    /// The pool key fingerprint in the store is another key's: this gateway is not of this pool
    /// (or its key file is not the pool's).
    #[error(
        "the state store belongs to a pool with another key (its key fingerprint {stored}, ours {ours}): every gateway of a pool needs the same key file"
    )]
    KeyMismatch { stored: String, ours: String },
    /// The configuration cannot work (URL, password file).
    #[error("state store configuration: {0}")]
    Config(String),
    /// An argument the store layout cannot carry (e.g. a node id with a space).
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
}

impl StoreError {
    fn from_redis(e: &RedisError) -> StoreError {
        match e.kind() {
            ErrorKind::AuthenticationFailed => StoreError::Auth(e.to_string()),
            ErrorKind::Io | ErrorKind::ClusterConnectionNotFound => {
                StoreError::Unavailable(e.to_string())
            }
            ErrorKind::Server(
                ServerErrorKind::ClusterDown
                | ServerErrorKind::TryAgain
                | ServerErrorKind::MasterDown
                | ServerErrorKind::BusyLoading
                | ServerErrorKind::Moved
                | ServerErrorKind::Ask,
            ) => StoreError::Unavailable(e.to_string()),
            ErrorKind::Server(ServerErrorKind::NoPerm) => StoreError::Auth(e.to_string()),
            ErrorKind::Parse | ErrorKind::UnexpectedReturnType => {
                StoreError::Corrupt(e.to_string())
            }
            ErrorKind::InvalidClientConfig => StoreError::Config(e.to_string()),
            _ if e.is_io_error()
                || e.is_timeout()
                || e.is_connection_dropped()
                || e.is_connection_refusal() =>
            {
                StoreError::Unavailable(e.to_string())
            }
            // NOAUTH / WRONGPASS come back as plain server errors on some paths.
            _ if matches!(e.code(), Some("NOAUTH" | "WRONGPASS")) => {
                StoreError::Auth(e.to_string())
            }
            _ => StoreError::Command(e.to_string()),
        }
    }

    /// Whether the store counts as down after this error.
    fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }

    fn context(self, what: &str) -> StoreError {
        match self {
            StoreError::Command(m) => StoreError::Command(format!("{what}: {m}")),
            other => other,
        }
    }
}

fn server_error(e: &redis::ServerError, what: &str) -> StoreError {
    StoreError::from_redis(&RedisError::from(e.clone())).context(what)
}

/// How a claim conditional on a generation ended.
#[derive(Debug, PartialEq, Eq)]
pub enum ClaimAt {
    /// This node owns the SA now.
    Taken(Claimed),
    /// The SA is no longer at that generation: another gateway claimed it meanwhile. Nothing
    /// changed.
    Moved,
    /// The store does not know the SA (or it was revoked).
    Unknown,
}

/// An SA this node has just claimed, or (from [`Store::peek_sa`]) as the store holds it.
#[derive(Clone, PartialEq, Eq)]
pub struct Claimed {
    /// The sealed record, as published.
    pub sealed_rec: Vec<u8>,
    /// The SA's new generation (this node's); from a peek, its current one.
    pub generation: u32,
    /// The last window the previous owner wrote, if any.
    pub win: Option<Vec<u8>>,
    /// The last idle deadline the previous owner wrote (unix seconds), if any.
    pub idle: Option<u64>,
    /// Who owned it before (`None`: nobody had written an owner).
    pub prev_owner: Option<String>,
}

impl fmt::Debug for Claimed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Claimed")
            .field(
                "sealed_rec",
                &format_args!("<{} bytes>", self.sealed_rec.len()),
            )
            .field("gen", &self.generation)
            .field("win", &self.win.as_ref().map(Vec::len))
            .field("idle", &self.idle)
            .field("prev_owner", &self.prev_owner)
            .finish()
    }
}

/// Where an SA's owner stands with it, published with the SA: its replay window and idle
/// deadline. An owner publishing again what it holds (its link to the store came back, or the
/// store restarted empty) must not leave the record without them: the next claimer would start
/// from a fresh window and take once more every message the owner had verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaProgress<'a> {
    /// The replay window's bytes.
    pub win: &'a [u8],
    /// Idle deadline, unix seconds.
    pub idle: u64,
}

/// What an owner learned about one SA, written behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub opaque: u32,
    /// Whose SA it is (`publish_sa`'s `user`): a checkpoint writes only over that user's record.
    pub user: String,
    /// This node (the owner it believes it is).
    pub node: String,
    /// The generation it owns.
    pub generation: u32,
    /// The replay window's bytes.
    pub win: Vec<u8>,
    /// Idle deadline, unix seconds.
    pub idle: u64,
}

/// What became of a publication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishOutcome {
    /// The store has it, owned by the publisher.
    Published,
    /// Revoked in the pool: the publisher ends it.
    Revoked,
    /// Another node holds it at this or a later generation: the publisher drops its copy.
    Moved,
    /// The opaque names another identity's SA, live or revoked (two gateways drew the same
    /// opaque): the store keeps the first, and the publisher ends its own at once, without
    /// revoking anything in the pool (docs/security.md B11e).
    Taken,
}

/// What became of a revocation of one SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeOutcome {
    /// The store had the SA: it is a tombstone now, and `revoke` was published.
    Revoked,
    /// The store did not have it (ended, lost, or never published): a tombstone all the same,
    /// and `revoke` published, for a node that may still hold it.
    Absent,
    /// The opaque names another identity's SA or tombstone: nothing changed, nothing published.
    OtherUser,
}

/// What became of one checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointOutcome {
    /// Written: the node still owns the SA at that generation.
    Written,
    /// Another node claimed it since: the caller drops its copy.
    Moved,
    /// The store does not have it (it lost it, e.g. restarted without persistence): the owner
    /// publishes it again.
    Missing,
    /// Revoked in the pool: the caller ends it.
    Revoked,
}

/// Whether a checkpoint was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointResult {
    pub opaque: u32,
    pub outcome: CheckpointOutcome,
}

/// A registrar binding as the store holds it.
#[derive(Clone, PartialEq, Eq)]
pub struct Binding {
    pub aor: String,
    pub device: String,
    /// The node that holds the client's flow.
    pub node: String,
    /// Unix seconds.
    pub expires_unix: u64,
    /// The registrar's own encoding of the binding.
    pub value: Vec<u8>,
}

impl fmt::Debug for Binding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Binding")
            .field("aor", &self.aor)
            .field("device", &self.device)
            .field("node", &self.node)
            .field("expires_unix", &self.expires_unix)
            .field("value", &format_args!("<{} bytes>", self.value.len()))
            .finish()
    }
}

struct Inner {
    conn: Conn,
    /// One per configured URL, for the pub/sub connection.
    pubsub_clients: Vec<redis::Client>,
    connect_timeout: Duration,
    command_timeout: Duration,
    up: AtomicBool,
    scripts: Scripts,
}

/// The store. Cheap to clone (one shared connection); every call is bounded by the command timeout.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("cluster", &matches!(self.inner.conn, Conn::Cluster(_)))
            .field("up", &self.is_up())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("redis://:s3cret@10.0.0.1:6379/0"),
            "redis://:***@10.0.0.1:6379/0"
        );
        assert_eq!(
            redact_url("rediss://gw:s3cret@r.example:6380"),
            "rediss://gw:***@r.example:6380"
        );
        assert_eq!(redact_url("redis://10.0.0.1"), "redis://10.0.0.1");
        let cfg = StoreConfig {
            urls: vec!["redis://:hunter2@h:1".into()],
            ..StoreConfig::default()
        };
        assert!(!format!("{cfg:?}").contains("hunter2"));
    }
}
