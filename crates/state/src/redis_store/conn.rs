//! The connection: one server behind a `ConnectionManager` or a Cluster client, pipelines (one per
//! slot in a Cluster), the command timeout and up/down record every call goes through, and the
//! calls a gateway makes at start (`PING`, the pool key check).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::Slot;
use redis::{Cmd, IntoConnectionInfo, Pipeline, Value};

use super::keys::KEY_POOL_ID;
use super::scripts::Scripts;
use super::{Inner, Store, StoreConfig, StoreError, redact_url, server_error};

#[derive(Clone)]
pub(super) enum Conn {
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
pub(super) struct Batch {
    cmds: Vec<(Option<Slot>, Cmd)>,
}

impl Batch {
    /// A command on `key` (`None`: a command without key, such as `PUBLISH`).
    pub(super) fn add(&mut self, key: Option<&str>, cmd: Cmd) {
        self.cmds.push((key.map(Slot::for_key), cmd));
    }

    fn len(&self) -> usize {
        self.cmds.len()
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
    pub(super) async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
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

    pub(super) fn conn(&self) -> Conn {
        self.inner.conn.clone()
    }

    /// Sends `batch` (not under [`Store::run`]: callers wrap it).
    pub(super) async fn exec_batch(&self, batch: &Batch) -> Result<Vec<Value>, StoreError> {
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
    pub(super) async fn exec_batch_ok(
        &self,
        batch: &Batch,
        what: &str,
    ) -> Result<Vec<Value>, StoreError> {
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
}
