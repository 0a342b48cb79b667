//! One gateway restarting loses nothing (`[state] backend = "memory"`): SIGTERM saves every live
//! SA (sealed with the pool key) and the registrar's bindings to `state.snapshot`, and the next
//! start takes them back and removes the file, so a crash never restores stale state.
//!
//! File: the line `SAGW-SNAPSHOT 2\n`, then one sealed blob (ChaCha20-Poly1305 under the pool's
//! sealing key, the line as associated data) holding the SAs, the bindings and the SHA-256 of the
//! credentials file the users in force came from (an SA of a file user is taken back only if the
//! file is the same: removed users and changed passwords end their SAs, as a reload does). Mode
//! 0600, written to a temporary file and renamed. A version-1 file (no print) is read as one
//! whose credentials file changed.

use std::io::Write;
use std::path::Path;
use std::time::SystemTime;

use sagw_auth::replay::STATE_LEN;
use sagw_auth::{SaRecord, SaResume, SecurityCore};
use sagw_state::Sealer;
use tracing::{info, warn};
use zeroize::Zeroizing;

const MAGIC: &[u8] = b"SAGW-SNAPSHOT 2\n";
/// The version before the credentials print: read as a snapshot without one (its bindings and
/// Kerberos SAs come back, its NTLM SAs sign in again).
const MAGIC_V1: &[u8] = b"SAGW-SNAPSHOT 1\n";

/// Why a snapshot could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The file system said no.
    #[error("{path}: {source}")]
    Io {
        /// The snapshot file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// Not a snapshot, another pool key, or damaged.
    #[error("{path}: {why}")]
    Invalid {
        /// The snapshot file.
        path: String,
        /// What is wrong.
        why: String,
    },
}

/// What a snapshot holds.
#[derive(Default)]
pub struct Snapshot {
    /// Each SA with where it goes on from.
    pub sas: Vec<(SaRecord, SaResume)>,
    /// The registrar's bindings, as the proxy exported them (JSON).
    pub bindings: Vec<u8>,
    /// SHA-256 of the credentials file the users in force came from, when saved.
    pub credentials: Option<[u8; 32]>,
}

/// Every SA of `core` that can be moved, with its progress.
pub fn collect(core: &SecurityCore, now: SystemTime) -> Vec<(SaRecord, SaResume)> {
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut out = Vec::new();
    for sa in core.sas().handles() {
        if !sa.is_live(secs) {
            continue;
        }
        match core.export_sa(&sa) {
            Ok(record) => out.push((
                record,
                SaResume {
                    snum_after: sa.snum(),
                    window: Some(sa.window_bytes()),
                    idle_deadline: Some(sa.idle_deadline()),
                },
            )),
            Err(e) => warn!(opaque = %sa.opaque(), error = %e, "security association not saved"),
        }
    }
    out
}

fn encode(s: &Snapshot) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::new());
    out.extend_from_slice(&(s.sas.len() as u64).to_be_bytes());
    for (record, resume) in &s.sas {
        let r = record.encode();
        out.extend_from_slice(&(r.len() as u64).to_be_bytes());
        out.extend_from_slice(&r);
        out.extend_from_slice(&resume.snum_after.to_be_bytes());
        out.extend_from_slice(&resume.window.unwrap_or([0; STATE_LEN]));
        out.extend_from_slice(&resume.idle_deadline.unwrap_or(0).to_be_bytes());
    }
    out.extend_from_slice(&(s.bindings.len() as u64).to_be_bytes());
    out.extend_from_slice(&s.bindings);
    match &s.credentials {
        Some(print) => {
            out.push(1);
            out.extend_from_slice(print);
        }
        None => out.push(0),
    }
    out
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (h, t) = self.0.split_at(n);
        self.0 = t;
        Some(h)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)?.try_into().ok().map(u64::from_be_bytes)
    }
    fn len(&mut self) -> Option<usize> {
        usize::try_from(self.u64()?).ok()
    }
}

fn decode(b: &[u8], with_print: bool) -> Option<Snapshot> {
    let mut r = Reader(b);
    let count = r.u64()?;
    let mut sas = Vec::new();
    for _ in 0..count {
        let len = r.len()?;
        let record = SaRecord::decode(r.take(len)?).ok()?;
        let snum_after = u32::from_be_bytes(r.take(4)?.try_into().ok()?);
        let window: [u8; STATE_LEN] = r.take(STATE_LEN)?.try_into().ok()?;
        let idle = r.u64()?;
        sas.push((
            record,
            SaResume {
                snum_after,
                window: Some(window),
                idle_deadline: (idle != 0).then_some(idle),
            },
        ));
    }
    let len = r.len()?;
    let bindings = r.take(len)?.to_vec();
    let credentials = if with_print {
        match r.take(1)? {
            [0] => None,
            [1] => Some(r.take(32)?.try_into().ok()?),
            _ => return None,
        }
    } else {
        None
    };
    r.0.is_empty().then_some(Snapshot {
        sas,
        bindings,
        credentials,
    })
}

/// Writes `snap` to `path` (mode 0600, atomically).
pub fn save(path: &Path, snap: &Snapshot, sealer: &Sealer) -> Result<(), SnapshotError> {
    let io = |source| SnapshotError::Io {
        path: path.display().to_string(),
        source,
    };
    let sealed = sealer.seal(MAGIC, &encode(snap));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp).map_err(io)?;
    f.write_all(MAGIC).map_err(io)?;
    f.write_all(&sealed).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    info!(path = %path.display(), sas = snap.sas.len(), "state saved");
    Ok(())
}

/// Reads and removes the snapshot at `path`; `Ok(None)` when there is none.
pub fn take(path: &Path, sealer: &Sealer) -> Result<Option<Snapshot>, SnapshotError> {
    let invalid = |why: &str| SnapshotError::Invalid {
        path: path.display().to_string(),
        why: why.to_owned(),
    };
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(SnapshotError::Io {
                path: path.display().to_string(),
                source,
            });
        }
    };
    // Whatever it holds is used once: a later crash must not bring back what was revoked since.
    let _ = std::fs::remove_file(path);
    let (magic, sealed) = [MAGIC, MAGIC_V1]
        .into_iter()
        .find_map(|m| bytes.strip_prefix(m).map(|rest| (m, rest)))
        .ok_or_else(|| invalid("not a sagw snapshot"))?;
    let plain = sealer
        .open(magic, sealed)
        .map_err(|_| invalid("sealed with another pool key, or damaged"))?;
    decode(&plain, magic == MAGIC)
        .map(Some)
        .ok_or_else(|| invalid("damaged contents"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_round_trips_and_refuses_another_key() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("s");
        let key = sagw_state::PoolKey::from_bytes([3; 32]);
        let sealer = Sealer::new(&key);
        let snap = Snapshot {
            sas: Vec::new(),
            bindings: b"[]".to_vec(),
            credentials: Some([9; 32]),
        };
        save(&path, &snap, &sealer).expect("saved");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let back = take(&path, &sealer).expect("read").expect("there");
        assert_eq!(back.bindings, b"[]");
        assert_eq!(back.credentials, Some([9; 32]));
        assert!(!path.exists(), "used once");
        // A version-1 file (written before the credentials print): read, without one.
        let mut v1 = MAGIC_V1.to_vec();
        let mut body = encode(&snap).to_vec();
        body.truncate(body.len() - 33);
        v1.extend(sealer.seal(MAGIC_V1, &body));
        std::fs::write(&path, v1).expect("v1 written");
        let back = take(&path, &sealer).expect("read").expect("there");
        assert_eq!(
            (back.bindings.as_slice(), back.credentials),
            (&b"[]"[..], None)
        );
        save(&path, &snap, &sealer).expect("saved");
        let other = Sealer::new(&sagw_state::PoolKey::from_bytes([4; 32]));
        assert!(take(&path, &other).is_err());
        assert!(take(&path, &sealer).expect("gone").is_none());
    }
}
