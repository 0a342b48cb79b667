//! Setting up `[state]` at start (docs/pools.md): the pool key and the keys derived from it, the
//! Redis store of a pool, and the snapshot of a single gateway.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use sagw_auth::SecurityCore;
use sagw_state::redis_store::redact_url;
use sagw_state::{NodeHold, PoolKey, Sealer, Store, StoreConfig, StoreError};
use tracing::{info, warn};

use crate::state_config::{StateBackend, StateSettings};

/// Redis: how long the first contact may take at start before the gateway goes on without it.
const FIRST_CONTACT: std::time::Duration = std::time::Duration::from_secs(2);

/// Why `[state]` could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The pool key file.
    #[error("state.key_file: {0}")]
    Key(String),
    /// The Redis store.
    #[error("state store {urls}: {why}")]
    Store {
        /// The URLs, without credentials.
        urls: String,
        /// What went wrong.
        why: String,
    },
    /// Another running gateway of the pool has this node id.
    #[error(
        "another running gateway of the pool has state.node_id = \"{node}\" (it holds it in the store, and held it for {waited_secs} s more): give every gateway a node_id of its own"
    )]
    NodeTaken {
        /// The node id.
        node: String,
        /// How long this start waited for the hold to lapse.
        waited_secs: u64,
    },
}

/// How long a gateway's hold on its node id lasts without being extended (every second, by the
/// store task): a gateway killed without letting go keeps its id this long, and a start under
/// that id waits it out.
pub const NODE_HOLD: std::time::Duration = std::time::Duration::from_secs(10);

/// Keys and the pool, as set up at start.
pub struct StateSetup {
    /// The pool key (every other key derives from it).
    pub key: PoolKey,
    /// Seals SA records and snapshots.
    pub sealer: Arc<Sealer>,
    /// The Redis store of a pool.
    pub store: Option<Store>,
    /// Memory backend: the snapshot file.
    pub snapshot: Option<PathBuf>,
    /// This run's hold on its node id in the store (drawn at each start).
    pub instance: String,
}

impl StateSetup {
    /// Loads (or creates) the pool key and, for a pool, opens the store and checks that the pool
    /// shares this key. A store that cannot be reached does not stop the start: the gateway
    /// serves from memory and joins the pool when the store is back.
    pub async fn open(s: &StateSettings) -> Result<StateSetup, StateError> {
        let instance = instance_id();
        let key =
            PoolKey::load_or_create(&s.key_file).map_err(|e| StateError::Key(e.to_string()))?;
        let sealer = Arc::new(Sealer::new(&key));
        let (store, snapshot) = match &s.backend {
            StateBackend::Memory { snapshot } => (None, snapshot.clone()),
            StateBackend::Redis {
                urls,
                cluster,
                password_file,
                command_timeout,
                ..
            } => {
                let shown = urls
                    .iter()
                    .map(|u| redact_url(u))
                    .collect::<Vec<_>>()
                    .join(",");
                let err = |why: String| StateError::Store {
                    urls: shown.clone(),
                    why,
                };
                let cfg = StoreConfig {
                    urls: urls.clone(),
                    cluster: *cluster,
                    password_file: password_file.clone(),
                    connect_timeout: (*command_timeout * 4).min(FIRST_CONTACT),
                    command_timeout: *command_timeout,
                };
                let store = Store::open(&cfg).map_err(|e| err(e.to_string()))?;
                match store.check_pool_key(&key.fingerprint()).await {
                    Ok(()) => info!(store = %shown, cluster, "state shared through Redis"),
                    Err(e @ (StoreError::KeyMismatch { .. } | StoreError::Auth(_))) => {
                        return Err(err(e.to_string()));
                    }
                    Err(e) => {
                        warn!(store = %shown, error = %e, "state store unreachable at start: serving from memory until it is back")
                    }
                }
                (Some(store), None)
            }
        };
        Ok(StateSetup {
            key,
            sealer,
            store,
            snapshot,
            instance,
        })
    }

    /// Takes `node` for this run in the pool's store (nothing without one): see [`hold_node`].
    pub async fn hold_node(&self, node: &str) -> Result<(), StateError> {
        match &self.store {
            Some(store) => hold_node(store, node, &self.instance).await,
            None => Ok(()),
        }
    }

    /// Takes back the SAs a previous run saved (memory backend). NTLM SAs only if the
    /// credentials file is the one they were made under (`credentials`, its SHA-256 now): a user
    /// removed, or a password reset, while the gateway was down must not come back with the SA
    /// the old credentials made, as a reload would have ended it. Which NTLM SAs were a file
    /// user's cannot be told once the user is gone from the file (a domain account's look the
    /// same), so all of them sign in again; Kerberos SAs are never a file user's.
    pub fn restore(
        &self,
        core: &SecurityCore,
        credentials: Option<[u8; 32]>,
        now: SystemTime,
    ) -> Option<Vec<u8>> {
        let path = self.snapshot.as_ref()?;
        match crate::snapshot::take(path, &self.sealer) {
            Ok(None) => None,
            Ok(Some(snap)) => {
                let total = snap.sas.len();
                let same_file = snap.credentials.is_some() && snap.credentials == credentials;
                let mut restored = 0;
                for (record, resume) in snap.sas {
                    if !same_file && matches!(record.secret, sagw_auth::SaSecret::Ntlm { .. }) {
                        continue;
                    }
                    if core.adopt_sa(record, &resume, now).is_ok() {
                        restored += 1;
                    }
                }
                if !same_file {
                    info!(
                        "the credentials file changed since the last run: NTLM clients sign in again"
                    );
                }
                info!(path = %path.display(), restored, ended_meanwhile = total - restored, "security associations restored from the last run");
                Some(snap.bindings)
            }
            Err(e) => {
                warn!(error = %e, "snapshot not restored: clients sign in again");
                None
            }
        }
    }
}

/// Saves the SAs (and the bindings) for the next start (memory backend, on SIGTERM).
pub fn save(
    core: &SecurityCore,
    bindings: Vec<u8>,
    credentials: Option<[u8; 32]>,
    path: &std::path::Path,
    sealer: &Sealer,
) -> Result<(), crate::snapshot::SnapshotError> {
    let snap = crate::snapshot::Snapshot {
        sas: crate::snapshot::collect(core, SystemTime::now()),
        bindings,
        credentials,
    };
    crate::snapshot::save(path, &snap, sealer)
}

/// The number a node's Digest nonces carry: 1 to 65535 from its node id (0 is a gateway alone).
/// Two nodes of a pool meeting on one number (for 8 nodes, about 4 pools in 10 000) take each
/// other's nonces as their own: a Digest `Authorization` could then be replayed once on the other
/// (nonce counts are per node), as before nonces named their node. Set distinct `node_id`s.
pub fn digest_node(node_id: &str) -> u16 {
    let h = ring::digest::digest(&ring::digest::SHA256, node_id.as_bytes());
    let n = u16::from_be_bytes([h.as_ref()[0], h.as_ref()[1]]);
    n.max(1)
}

/// 16 random hex digits naming this run of the gateway in the store's node holds.
fn instance_id() -> String {
    sagw_hex::encode(run_random().to_be_bytes())
}

/// 64 bits that tell this run of the gateway from others (its node hold, where it starts
/// numbering connections), not a secret: from the system's randomness, else the clock's
/// nanoseconds (without randomness the start fails elsewhere; the clock keeps runs apart
/// meanwhile).
pub(crate) fn run_random() -> u64 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    if ring::rand::SystemRandom::new().fill(&mut b).is_ok() {
        return u64::from_le_bytes(b);
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}

/// Takes `node` for this run, waiting out the hold of a gateway that stopped without letting go
/// (killed: its hold lapses within [`NODE_HOLD`]); a hold still extended after that is another
/// running gateway's, and the start fails. A store that does not answer is left to the store
/// task, which holds the id once it is back.
async fn hold_node(store: &Store, node: &str, instance: &str) -> Result<(), StateError> {
    let started = std::time::Instant::now();
    let mut told = false;
    loop {
        match store.hold_node(node, instance, NODE_HOLD).await {
            Ok(NodeHold::Held) => return Ok(()),
            Ok(NodeHold::HeldByOther(_)) if started.elapsed() > NODE_HOLD + NODE_HOLD / 5 => {
                return Err(StateError::NodeTaken {
                    node: node.to_owned(),
                    waited_secs: started.elapsed().as_secs(),
                });
            }
            Ok(NodeHold::HeldByOther(_)) => {
                if !told {
                    warn!(node = %node, "the node id is held in the store by another run: waiting for it to lapse (a gateway that stopped without letting go), or for its holder to be found running");
                    told = true;
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            Err(e) => {
                warn!(node = %node, error = %e, "the node id could not be held at start: the store task holds it once the store answers");
                return Ok(());
            }
        }
    }
}

/// The node id: `state.node_id`, else the host name and the first SIP port configured.
pub fn node_id(settings: &crate::config::Settings) -> String {
    match settings.state.node_id.as_str() {
        "" => default_node_id(settings.listeners.first().map_or(0, |l| l.addr.port())),
        n => n.to_owned(),
    }
}

/// The default node id: the host name and the first SIP port.
pub fn default_node_id(port: u16) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "sagw".into());
    format!("{host}:{port}")
}
