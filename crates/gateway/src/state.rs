//! Setting up `[state]` at start (docs/pools.md): the pool key and the keys derived from it, and
//! the snapshot of a single gateway.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use sagw_auth::SecurityCore;
use sagw_state::{PoolKey, Sealer};
use tracing::{info, warn};

use crate::state_config::{StateBackend, StateSettings};

/// Why `[state]` could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The pool key file.
    #[error("state.key_file: {0}")]
    Key(String),
}

/// Keys and the pool, as set up at start.
pub struct StateSetup {
    /// The pool key (every other key derives from it).
    pub key: PoolKey,
    /// Seals SA records and snapshots.
    pub sealer: Arc<Sealer>,
    /// Memory backend: the snapshot file.
    pub snapshot: Option<PathBuf>,
}

impl StateSetup {
    /// Loads (or creates) the pool key.
    pub fn open(s: &StateSettings) -> Result<StateSetup, StateError> {
        let key =
            PoolKey::load_or_create(&s.key_file).map_err(|e| StateError::Key(e.to_string()))?;
        let sealer = Arc::new(Sealer::new(&key));
        let snapshot = match &s.backend {
            StateBackend::Memory { snapshot } => snapshot.clone(),
        };
        Ok(StateSetup {
            key,
            sealer,
            snapshot,
        })
    }

    /// Takes back the SAs a previous run saved (memory backend).
    pub fn restore(&self, core: &SecurityCore, now: SystemTime) -> Option<Vec<u8>> {
        let path = self.snapshot.as_ref()?;
        match crate::snapshot::take(path, &self.sealer) {
            Ok(None) => None,
            Ok(Some(snap)) => {
                let total = snap.sas.len();
                let mut restored = 0;
                for (record, resume) in snap.sas {
                    if core.adopt_sa(record, &resume, now).is_ok() {
                        restored += 1;
                    }
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
    path: &std::path::Path,
    sealer: &Sealer,
) -> Result<(), crate::snapshot::SnapshotError> {
    let snap = crate::snapshot::Snapshot {
        sas: crate::snapshot::collect(core, SystemTime::now()),
        bindings,
    };
    crate::snapshot::save(path, &snap, sealer)
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
