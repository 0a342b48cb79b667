//! The Redis store client (Redis 7 / Valkey, standalone or Cluster): the layout of docs/pools.md.
//!
//! | key | type | fields |
//! |---|---|---|
//! | `sagw:sa:{OPAQUE}` | hash, expires at the SA's hard end | `rec` (sealed record), `owner`, `generation`, `win`, `idle`, `user` (identity, to leave its set on revoke) |
//! | `sagw:user:{identity}` | set of `OPAQUE` | expires with its longest-lived SA |
//! | `sagw:krb:{hex}` | string, `SET NX PX` | a Kerberos authenticator seen |
//! | `sagw:reg:{aor}` | hash device → binding ([`Binding`], encoded below) | expires with its last binding |
//! | `sagw:regs` | set of AORs | index for [`Store::all_bindings`] |
//! | `sagw:pool-key-id` | string | the pool key's fingerprint |
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

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::Slot;
use redis::{
    Cmd, ErrorKind, IntoConnectionInfo, Pipeline, RedisError, Script, ServerErrorKind, Value,
};
use tokio::sync::mpsc;

use crate::events::{EVENTS_CHANNEL, StoreEvent, parse_opaque};
use crate::valid_node_id;

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
}

/// An SA this node has just claimed.
#[derive(Clone, PartialEq, Eq)]
pub struct Claimed {
    /// The sealed record, as published.
    pub sealed_rec: Vec<u8>,
    /// The SA's new generation (this node's).
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

/// What an owner learned about one SA, written behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub opaque: u32,
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

/// Events from [`Store::subscribe`].
pub type EventReceiver = mpsc::Receiver<StoreEvent>;

/// How many events wait for a slow receiver before they are dropped (and
/// [`StoreEvent::Resubscribed`] tells it so).
pub const EVENT_QUEUE: usize = 4096;

const KEY_POOL_ID: &str = "sagw:pool-key-id";
const KEY_REGS: &str = "sagw:regs";
const BINDING_VERSION: u8 = 1;

fn sa_key(opaque: u32) -> String {
    format!("sagw:sa:{{{opaque:08X}}}")
}

fn user_key(identity: &str) -> String {
    format!("sagw:user:{{{identity}}}")
}

fn reg_key(aor: &str) -> String {
    format!("sagw:reg:{{{aor}}}")
}

fn krb_key(key: &[u8; 32]) -> String {
    format!("sagw:krb:{{{}}}", sagw_hex::encode(key))
}

/// Publishes an SA: KEYS[1] the SA, ARGV rec, owner, generation, identity, expiry (unix seconds).
/// 1 written; 0 revoked; 2 another node holds it at this or a later generation (a node back from
/// a partition must not take back an SA claimed meanwhile).
const PUBLISH_SA: &str = r"
if redis.call('HEXISTS', KEYS[1], 'revoked') == 1 then return 0 end
local o = redis.call('HMGET', KEYS[1], 'owner', 'gen')
if o[2] and (tonumber(o[2]) > tonumber(ARGV[3]) or (tonumber(o[2]) == tonumber(ARGV[3]) and o[1] ~= ARGV[2])) then
  return 2
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'rec', ARGV[1], 'owner', ARGV[2], 'gen', ARGV[3], 'user', ARGV[4])
redis.call('EXPIREAT', KEYS[1], ARGV[5])
return 1
";

/// Claims an SA for ARGV[1] and publishes ARGV[2] .. gen .. ARGV[3] (the `moved` event around the
/// new generation). Nil when the SA is unknown.
const CLAIM_SA: &str = r"
if redis.call('HEXISTS', KEYS[1], 'rec') == 0 then return false end
local gen = redis.call('HINCRBY', KEYS[1], 'gen', 1)
local prev = redis.call('HGET', KEYS[1], 'owner')
redis.call('HSET', KEYS[1], 'owner', ARGV[1])
local f = redis.call('HMGET', KEYS[1], 'rec', 'win', 'idle')
redis.call('PUBLISH', ARGV[4], ARGV[2] .. gen .. ARGV[3])
return {f[1], gen, f[2], f[3], prev}
";

/// Writes the window and idle deadline if ARGV[1] still owns the SA at generation ARGV[2].
/// 1 written, 0 another owner or generation, 2 the store does not have it (lost, e.g. a restart
/// without persistence), 3 revoked.
const CHECKPOINT: &str = r"
local o = redis.call('HMGET', KEYS[1], 'owner', 'gen')
if o[1] == ARGV[1] and o[2] == ARGV[2] then
  redis.call('HSET', KEYS[1], 'win', ARGV[3], 'idle', ARGV[4])
  return 1
end
if redis.call('HEXISTS', KEYS[1], 'revoked') == 1 then return 3 end
if not o[1] then return 2 end
return 0
";

/// Replaces an SA by a tombstone until its end (8 hours when its end is unknown), so that its
/// owner, told by a checkpoint or a publication, ends it even if it missed the event; publishes
/// ARGV[2] on ARGV[1]; returns its identity (nil if it was gone).
const REVOKE_SA: &str = r"
local u = redis.call('HGET', KEYS[1], 'user')
local ttl = redis.call('PTTL', KEYS[1])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'revoked', 1)
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) else redis.call('EXPIRE', KEYS[1], 28800) end
redis.call('PUBLISH', ARGV[1], ARGV[2])
return u
";

/// Removes a binding and returns how many the AOR has left.
const REMOVE_BINDING: &str = r"
redis.call('HDEL', KEYS[1], ARGV[1])
return redis.call('HLEN', KEYS[1])
";

struct Scripts {
    publish_sa: Script,
    claim: Script,
    checkpoint: Script,
    revoke: Script,
    remove_binding: Script,
}

impl Scripts {
    fn new() -> Scripts {
        Scripts {
            publish_sa: Script::new(PUBLISH_SA),
            claim: Script::new(CLAIM_SA),
            checkpoint: Script::new(CHECKPOINT),
            revoke: Script::new(REVOKE_SA),
            remove_binding: Script::new(REMOVE_BINDING),
        }
    }
}

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> redis::RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
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

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn read_password_file(path: &PathBuf) -> Result<String, StoreError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| StoreError::Config(format!("password file {}: {e}", path.display())))?;
    let pw = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if pw.is_empty() {
        return Err(StoreError::Config(format!(
            "password file {} is empty",
            path.display()
        )));
    }
    Ok(pw.to_owned())
}

/// Commands sent together: one pipeline to one server; in a Cluster, one pipeline per slot, all
/// at once (a Cluster pipeline must stay in one slot). Replies come back in the order added;
/// an error reply is a `Value::ServerError` in its place.
#[derive(Default)]
struct Batch {
    cmds: Vec<(Option<Slot>, Cmd)>,
}

impl Batch {
    /// A command on `key` (`None`: a command without key, such as `PUBLISH`).
    fn add(&mut self, key: Option<&str>, cmd: Cmd) {
        self.cmds.push((key.map(Slot::for_key), cmd));
    }

    fn len(&self) -> usize {
        self.cmds.len()
    }
}

fn server_error(e: &redis::ServerError, what: &str) -> StoreError {
    StoreError::from_redis(&RedisError::from(e.clone())).context(what)
}

impl StoreError {
    fn context(self, what: &str) -> StoreError {
        match self {
            StoreError::Command(m) => StoreError::Command(format!("{what}: {m}")),
            other => other,
        }
    }
}

impl Store {
    /// A store handle from `config`. Opens nothing yet: the connection is made at the first call
    /// (and again whenever it is lost), so a gateway starts while the store is down. Fails only
    /// on a configuration that cannot work (URL, password file). Must be called within a tokio
    /// runtime.
    pub fn open(config: &StoreConfig) -> Result<Store, StoreError> {
        if config.urls.is_empty() {
            return Err(StoreError::Config("no store URL".into()));
        }
        let password = config
            .password_file
            .as_ref()
            .map(read_password_file)
            .transpose()?;
        let mut infos = Vec::with_capacity(config.urls.len());
        for url in &config.urls {
            let mut info = url.as_str().into_connection_info().map_err(|e| {
                StoreError::Config(format!(
                    "`{}`: not a Redis URL ({:?})",
                    redact_url(url),
                    e.kind()
                ))
            })?;
            if let Some(pw) = &password {
                let settings = info.redis_settings().clone().set_password(pw);
                info = info.set_redis_settings(settings);
            }
            infos.push(info);
        }
        let mut pubsub_clients = Vec::with_capacity(infos.len());
        for info in &infos {
            pubsub_clients
                .push(redis::Client::open(info.clone()).map_err(|e| StoreError::from_redis(&e))?);
        }
        let conn = if config.cluster {
            let mut b = ClusterClient::builder(infos)
                .connection_timeout(config.connect_timeout)
                .response_timeout(config.command_timeout)
                .retries(2)
                .min_retry_wait(20)
                .max_retry_wait(200);
            if let Some(pw) = &password {
                b = b.password(pw);
            }
            let client = b.build().map_err(|e| StoreError::from_redis(&e))?;
            let cfg = ClusterConfig::new()
                .set_connection_timeout(config.connect_timeout)
                .set_response_timeout(config.command_timeout);
            Conn::Cluster(client.get_pending_async_connection_with_config(cfg))
        } else {
            let client = pubsub_clients
                .first()
                .cloned()
                .ok_or_else(|| StoreError::Config("no store URL".into()))?;
            let cfg = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(config.connect_timeout))
                .set_response_timeout(Some(config.command_timeout))
                .set_number_of_retries(2)
                .set_min_delay(Duration::from_millis(20))
                .set_max_delay(Duration::from_millis(200));
            Conn::Single(
                ConnectionManager::new_lazy_with_config(client, cfg)
                    .map_err(|e| StoreError::from_redis(&e))?,
            )
        };
        Ok(Store {
            inner: Arc::new(Inner {
                conn,
                pubsub_clients,
                connect_timeout: config.connect_timeout,
                command_timeout: config.command_timeout,
                up: AtomicBool::new(false),
                scripts: Scripts::new(),
            }),
        })
    }

    /// [`Store::open`], then one `PING`: fails if the store cannot be reached now.
    pub async fn connect(config: &StoreConfig) -> Result<Store, StoreError> {
        let s = Store::open(config)?;
        s.ping().await?;
        Ok(s)
    }

    /// Whether the last call reached the store (`sagw_state_store_up`).
    pub fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::Relaxed)
    }

    /// The command timeout.
    pub fn command_timeout(&self) -> Duration {
        self.inner.command_timeout
    }

    /// Runs one call under the command timeout and records whether the store was reached.
    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, StoreError>>,
    {
        let r = match tokio::time::timeout(self.inner.command_timeout, f).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Unavailable(format!(
                "no answer within {} ms",
                self.inner.command_timeout.as_millis()
            ))),
        };
        match &r {
            Ok(_) => self.inner.up.store(true, Ordering::Relaxed),
            Err(e) if e.is_unavailable() => {
                if self.inner.up.swap(false, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "state store down");
                }
            }
            Err(_) => self.inner.up.store(true, Ordering::Relaxed),
        }
        r
    }

    fn conn(&self) -> Conn {
        self.inner.conn.clone()
    }

    /// Sends `batch` (not under [`Store::run`]: callers wrap it).
    async fn exec_batch(&self, batch: &Batch) -> Result<Vec<Value>, StoreError> {
        let pipeline = |cmds: &mut dyn Iterator<Item = &Cmd>| {
            let mut p = redis::pipe();
            for c in cmds {
                p.add_command(c.clone());
            }
            p.ignore_errors();
            p
        };
        let send = |p: Pipeline, n: usize| {
            let mut c = self.conn();
            async move {
                let v: Vec<Value> = p
                    .query_async(&mut c)
                    .await
                    .map_err(|e| StoreError::from_redis(&e))?;
                if v.len() != n {
                    return Err(StoreError::Corrupt(format!(
                        "{} replies to {n} commands",
                        v.len()
                    )));
                }
                Ok(v)
            }
        };
        if batch.cmds.is_empty() {
            return Ok(Vec::new());
        }
        if matches!(self.inner.conn, Conn::Single(_)) {
            let p = pipeline(&mut batch.cmds.iter().map(|(_, c)| c));
            return send(p, batch.len()).await;
        }
        // Cluster: group by slot, keeping each command's place.
        let mut groups: Vec<(Option<Slot>, Vec<usize>)> = Vec::new();
        for (i, (slot, _)) in batch.cmds.iter().enumerate() {
            match groups.iter_mut().find(|(s, _)| s == slot) {
                Some((_, idx)) => idx.push(i),
                None => groups.push((*slot, vec![i])),
            }
        }
        let sends = groups.iter().map(|(_, idx)| {
            let p = pipeline(&mut idx.iter().map(|&i| &batch.cmds[i].1));
            send(p, idx.len())
        });
        let results = futures_util::future::join_all(sends).await;
        let mut out = vec![Value::Nil; batch.len()];
        for ((_, idx), r) in groups.iter().zip(results) {
            for (&i, v) in idx.iter().zip(r?) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    /// [`Store::exec_batch`] where any error reply fails the whole call.
    async fn exec_batch_ok(&self, batch: &Batch, what: &str) -> Result<Vec<Value>, StoreError> {
        let v = self.exec_batch(batch).await?;
        if let Some(Value::ServerError(e)) = v.iter().find(|v| matches!(v, Value::ServerError(_))) {
            return Err(server_error(e, what));
        }
        Ok(v)
    }

    /// `PING`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.run(async {
            let mut c = self.conn();
            let v: Value = redis::cmd("PING")
                .query_async(&mut c)
                .await
                .map_err(|e| StoreError::from_redis(&e))?;
            match v {
                Value::SimpleString(_) | Value::BulkString(_) | Value::Okay => Ok(()),
                other => Err(StoreError::Corrupt(format!("PING answered {other:?}"))),
            }
        })
        .await
    }

    /// Checks that the store's pool holds the same key as ours: records `fingerprint` if no
    /// gateway has yet, else compares.
    pub async fn check_pool_key(&self, fingerprint: &str) -> Result<(), StoreError> {
        self.run(async {
            let mut c = self.conn();
            let set: Value = redis::cmd("SET")
                .arg(KEY_POOL_ID)
                .arg(fingerprint)
                .arg("NX")
                .query_async(&mut c)
                .await
                .map_err(|e| StoreError::from_redis(&e))?;
            if matches!(set, Value::Okay) {
                return Ok(());
            }
            let stored: Option<Vec<u8>> = redis::cmd("GET")
                .arg(KEY_POOL_ID)
                .query_async(&mut c)
                .await
                .map_err(|e| StoreError::from_redis(&e))?;
            match stored {
                Some(s) if s == fingerprint.as_bytes() => Ok(()),
                Some(s) => Err(StoreError::KeyMismatch {
                    stored: String::from_utf8_lossy(&s).into_owned(),
                    ours: fingerprint.to_owned(),
                }),
                // Deleted between the two commands: take it as ours next time.
                None => Err(StoreError::Command(
                    "pool key id vanished while checked; retry".into(),
                )),
            }
        })
        .await
    }

    /// Publishes a newly established SA owned by `owner` at generation `generation`, expiring at
    /// `hard_expiry_unix`; adds it to its identity's set (whose expiry only grows). Also how an
    /// owner publishes again what a store that restarted empty lost.
    pub async fn publish_sa(
        &self,
        opaque: u32,
        identity: &str,
        sealed_rec: &[u8],
        owner: &str,
        generation: u32,
        hard_expiry_unix: u64,
    ) -> Result<PublishOutcome, StoreError> {
        if !valid_node_id(owner) {
            return Err(StoreError::Invalid("node id"));
        }
        let member = format!("{opaque:08X}");
        let ukey = user_key(identity);
        let mut pipe = redis::pipe();
        // The set first: if the SA's write fails, an opaque without SA is harmless.
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
        self.run(async {
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
                .invoke_async(&mut c)
                .await
                .map_err(|e| StoreError::from_redis(&e))?;
            Ok(match published {
                1 => PublishOutcome::Published,
                0 => PublishOutcome::Revoked,
                _ => PublishOutcome::Moved,
            })
        })
        .await
    }

    /// Claims the SA for `node`: bumps its generation, makes `node` its owner, returns the record
    /// and the last window, and publishes `moved`. `None`: the store does not know the SA.
    pub async fn claim_sa(&self, opaque: u32, node: &str) -> Result<Option<Claimed>, StoreError> {
        if !valid_node_id(node) {
            return Err(StoreError::Invalid("node id"));
        }
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
                    .invoke_async(&mut c)
                    .await
                    .map_err(|e| StoreError::from_redis(&e))
            })
            .await?;
        let items = match reply {
            Value::Nil | Value::Boolean(false) => return Ok(None),
            Value::Array(items) if items.len() == 5 => items,
            other => return Err(corrupt("claim", &other)),
        };
        let mut it = items.into_iter();
        let (rec, generation, win, idle, prev) =
            match (it.next(), it.next(), it.next(), it.next(), it.next()) {
                (Some(a), Some(b), Some(c), Some(d), Some(e)) => (a, b, c, d, e),
                _ => return Err(StoreError::Corrupt("claim: short reply".into())),
            };
        let sealed_rec = opt_bytes(rec, "claim rec")?
            .ok_or_else(|| StoreError::Corrupt("claim: no record".into()))?;
        let generation = match generation {
            Value::Int(g) => u32::try_from(g)
                .map_err(|_| StoreError::Corrupt(format!("claim: generation {g}")))?,
            other => return Err(corrupt("claim gen", &other)),
        };
        let win = opt_bytes(win, "claim win")?;
        let idle = opt_bytes(idle, "claim idle")?
            .map(|b| parse_u64(&b, "idle"))
            .transpose()?;
        let prev_owner = opt_bytes(prev, "claim owner")?
            .map(|b| String::from_utf8(b).map_err(|_| StoreError::Corrupt("owner".into())))
            .transpose()?;
        Ok(Some(Claimed {
            sealed_rec,
            generation,
            win,
            idle,
            prev_owner,
        }))
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
                .arg(c.idle);
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

    /// Ends an SA in the pool and publishes `revoke` (even when the store no longer had it: a
    /// node may still hold it). `true` if the store had it.
    pub async fn revoke_sa(&self, opaque: u32) -> Result<bool, StoreError> {
        let event = StoreEvent::Revoked(opaque).encode().unwrap_or_default();
        let identity: Option<Vec<u8>> = self
            .run(async {
                let mut c = self.conn();
                self.inner
                    .scripts
                    .revoke
                    .key(sa_key(opaque))
                    .arg(EVENTS_CHANNEL)
                    .arg(&event)
                    .invoke_async(&mut c)
                    .await
                    .map_err(|e| StoreError::from_redis(&e))
            })
            .await?;
        let Some(identity) = identity else {
            return Ok(false);
        };
        // Leave the identity's set (another slot in a Cluster; a failure leaves a stale member,
        // which revoke_identity skips).
        if let Ok(id) = std::str::from_utf8(&identity) {
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
        Ok(true)
    }

    /// Ends every SA of `identity` in the pool (published as `revoke` each) and returns them.
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
        let mut cmds = Batch::default();
        for o in &opaques {
            let key = sa_key(*o);
            let mut del = redis::cmd("DEL");
            del.arg(&key);
            cmds.add(Some(&key), del);
        }
        let mut del = redis::cmd("DEL");
        del.arg(&ukey);
        cmds.add(Some(&ukey), del);
        for o in &opaques {
            if let Some(ev) = StoreEvent::Revoked(*o).encode() {
                let mut publish = redis::cmd("PUBLISH");
                publish.arg(EVENTS_CHANNEL).arg(ev);
                cmds.add(None, publish);
            }
        }
        self.run(self.exec_batch_ok(&cmds, "revoke identity"))
            .await?;
        Ok(opaques)
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
        let mut enc = Vec::with_capacity(10 + node.len() + value.len());
        enc.push(BINDING_VERSION);
        enc.push(node.len() as u8); // valid_node_id: at most 64 bytes
        enc.extend_from_slice(node.as_bytes());
        enc.extend_from_slice(&expires_unix.to_be_bytes());
        enc.extend_from_slice(value);
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

    /// Removes a binding (`node`'s) and publishes `binding`.
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

    /// Subscribes to the pool's events on a connection of its own, which reconnects by itself
    /// (through each configured URL in turn). [`StoreEvent::Resubscribed`] comes each time the
    /// subscription is established: first when it is live, then after every gap. The task ends
    /// when the receiver is dropped. Must be called within a tokio runtime.
    pub fn subscribe(&self) -> EventReceiver {
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let clients = self.inner.pubsub_clients.clone();
        let connect_timeout = self.inner.connect_timeout;
        let command_timeout = self.inner.command_timeout;
        tokio::spawn(subscriber(clients, connect_timeout, command_timeout, tx));
        rx
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

/// Sends `ev`, or notes that the receiver fell behind (events dropped); `false` when the
/// receiver is gone.
fn deliver(tx: &mpsc::Sender<StoreEvent>, lagged: &mut bool, ev: StoreEvent) -> bool {
    if *lagged {
        match tx.try_send(StoreEvent::Lagged) {
            Ok(()) => *lagged = false,
            Err(mpsc::error::TrySendError::Full(_)) => return true,
            Err(mpsc::error::TrySendError::Closed(_)) => return false,
        }
    }
    match tx.try_send(ev) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            tracing::warn!("state store events: receiver behind, events dropped");
            *lagged = true;
            true
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}

async fn subscriber(
    clients: Vec<redis::Client>,
    connect_timeout: Duration,
    command_timeout: Duration,
    tx: mpsc::Sender<StoreEvent>,
) {
    let ping_every = Duration::from_secs(1).max(command_timeout);
    let mut next = 0usize;
    let mut gap = false;
    let mut lagged = false;
    let mut backoff = Duration::from_millis(50);
    loop {
        if clients.is_empty() {
            return;
        }
        let client = &clients[next % clients.len()];
        next = next.wrapping_add(1);
        let opened = async {
            let ps = tokio::time::timeout(connect_timeout, client.get_async_pubsub())
                .await
                .map_err(|_| "connect timed out".to_owned())?
                .map_err(|e| e.to_string())?;
            let (mut sink, stream) = ps.split();
            tokio::time::timeout(command_timeout, sink.subscribe(EVENTS_CHANNEL))
                .await
                .map_err(|_| "subscribe timed out".to_owned())?
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((sink, stream))
        };
        let (mut sink, mut stream) = tokio::select! {
            _ = tx.closed() => return,
            r = opened => match r {
                Ok(s) => s,
                Err(e) => {
                    if !gap {
                        tracing::warn!(error = %e, "state store events: no subscription");
                    }
                    gap = true;
                    tokio::select! {
                        _ = tx.closed() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            }
        };
        backoff = Duration::from_millis(50);
        if gap {
            tracing::info!("state store events: subscribed again");
        }
        // Also the first time: the caller learns the subscription is live.
        if !deliver(&tx, &mut lagged, StoreEvent::Resubscribed) {
            return;
        }
        let mut ping = tokio::time::interval(ping_every);
        ping.tick().await;
        loop {
            tokio::select! {
                _ = tx.closed() => return,
                m = stream.next() => match m {
                    Some(msg) => match StoreEvent::decode(msg.get_payload_bytes()) {
                        Some(ev) => {
                            if !deliver(&tx, &mut lagged, ev) {
                                return;
                            }
                        }
                        None => tracing::debug!("state store events: unknown message ignored"),
                    },
                    None => break,
                },
                _ = ping.tick() => {
                    let alive = matches!(
                        tokio::time::timeout(command_timeout, sink.ping::<Value>()).await,
                        Ok(Ok(_))
                    );
                    if !alive {
                        break;
                    }
                    if lagged && !deliver(&tx, &mut lagged, StoreEvent::Lagged) {
                        return;
                    }
                }
            }
        }
        tracing::warn!("state store events: subscription lost");
        gap = true;
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

fn corrupt(what: &str, v: &Value) -> StoreError {
    StoreError::Corrupt(format!("{what}: {}", value_kind(v)))
}

fn value_kind(v: &Value) -> &'static str {
    match v {
        Value::Nil => "nil",
        Value::Int(_) => "integer",
        Value::BulkString(_) => "bulk string",
        Value::Array(_) => "array",
        Value::SimpleString(_) => "simple string",
        Value::Okay => "OK",
        Value::ServerError(_) => "error",
        _ => "other reply",
    }
}

fn opt_bytes(v: Value, what: &str) -> Result<Option<Vec<u8>>, StoreError> {
    match v {
        Value::Nil | Value::Boolean(false) => Ok(None),
        Value::BulkString(b) => Ok(Some(b)),
        Value::SimpleString(s) => Ok(Some(s.into_bytes())),
        Value::Int(n) => Ok(Some(n.to_string().into_bytes())),
        other => Err(corrupt(what, &other)),
    }
}

fn parse_u64(b: &[u8], what: &str) -> Result<u64, StoreError> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| StoreError::Corrupt(format!("{what} is not a number")))
}

fn parse_u32(b: &[u8], what: &str) -> Result<u32, StoreError> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| StoreError::Corrupt(format!("{what} is not a 32-bit number")))
}

fn decode_binding(aor: &str, device: Vec<u8>, v: &[u8]) -> Option<Binding> {
    let device = String::from_utf8(device).ok()?;
    let (&ver, rest) = v.split_first()?;
    if ver != BINDING_VERSION {
        return None;
    }
    let (&nlen, rest) = rest.split_first()?;
    let nlen = usize::from(nlen);
    if rest.len() < nlen + 8 {
        return None;
    }
    let (node, rest) = rest.split_at(nlen);
    let node = std::str::from_utf8(node).ok()?;
    let (exp, value) = rest.split_at(8);
    let mut e = [0u8; 8];
    e.copy_from_slice(exp);
    Some(Binding {
        aor: aor.to_owned(),
        device,
        node: node.to_owned(),
        expires_unix: u64::from_be_bytes(e),
        value: value.to_vec(),
    })
}

fn decode_bindings(aor: &str, fields: Vec<(Vec<u8>, Vec<u8>)>, now: u64) -> Vec<Binding> {
    let mut out = Vec::with_capacity(fields.len());
    for (device, v) in fields {
        match decode_binding(aor, device, &v) {
            Some(b) if b.expires_unix > now => out.push(b),
            Some(_) => {}
            None => tracing::debug!(aor, "state store: unreadable binding skipped"),
        }
    }
    out.sort_by(|a, b| a.device.cmp(&b.device));
    out
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

    #[test]
    fn keys_carry_hash_tags() {
        assert_eq!(sa_key(0x357E_6F72), "sagw:sa:{357E6F72}");
        assert_eq!(
            user_key("alice@example.com"),
            "sagw:user:{alice@example.com}"
        );
        assert_eq!(reg_key("sip:bob@x"), "sagw:reg:{sip:bob@x}");
        assert_eq!(krb_key(&[0xAB; 32]).len(), "sagw:krb:{}".len() + 64);
    }

    #[test]
    fn bindings_decode_and_refuse_garbage() {
        let mut enc = vec![1, 3];
        enc.extend_from_slice(b"gw1");
        enc.extend_from_slice(&100u64.to_be_bytes());
        enc.extend_from_slice(b"payload");
        let b = decode_binding("sip:a@x", b"dev".to_vec(), &enc).expect("decodes");
        assert_eq!(
            (b.node.as_str(), b.expires_unix, &b.value[..]),
            ("gw1", 100, &b"payload"[..])
        );
        assert!(decode_binding("a", b"d".to_vec(), &enc[..5]).is_none());
        assert!(decode_binding("a", b"d".to_vec(), &[]).is_none());
        assert!(decode_binding("a", b"d".to_vec(), &[2, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_none());
        assert!(decode_binding("a", vec![0xff], &enc).is_none());
        assert_eq!(
            decode_bindings("a", vec![(b"d".to_vec(), enc.clone())], 100).len(),
            0
        );
        assert_eq!(
            decode_bindings("a", vec![(b"d".to_vec(), enc)], 99).len(),
            1
        );
    }
}
