//! The pool key: 32 random bytes in a file that every gateway of a pool shares (docs/pools.md), and
//! the keys derived from it with HKDF-SHA256, one label each. The file's key never leaves this
//! module; what the gateway uses are the derived keys, and what it may show or store is the
//! [`PoolKey::fingerprint`].

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

/// Length of the pool key and of every derived key.
pub const KEY_LEN: usize = 32;

const SALT: &[u8] = b"sagw pool key v1";
const LABEL_FLOW_TOKEN: &[u8] = b"sagw/v1/flow-token";
const LABEL_NTLM_CHALLENGE: &[u8] = b"sagw/v1/ntlm-challenge";
const LABEL_DIGEST_NONCE: &[u8] = b"sagw/v1/digest-nonce";
const LABEL_SEAL: &[u8] = b"sagw/v1/seal";
const LABEL_FINGERPRINT: &[u8] = b"sagw/v1/fingerprint";

/// Why the pool key file could not be used. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("pool key file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "pool key file {path}: mode {mode:03o} lets group or others read it; it must be 0600 (chmod 600 {path})"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("pool key file {path}: {len} bytes, expected exactly {KEY_LEN} (raw random bytes)")]
    Length { path: PathBuf, len: u64 },
    #[error("pool key file {path}: no randomness from the OS to create it: {reason}")]
    Random { path: PathBuf, reason: String },
}

/// The pool's shared secret. Redacted in `Debug`, zeroed on drop.
#[derive(Clone)]
pub struct PoolKey(Zeroizing<[u8; KEY_LEN]>);

impl fmt::Debug for PoolKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PoolKey(<redacted>, fingerprint {})", self.fingerprint())
    }
}

impl PoolKey {
    /// A key from its bytes (tests, or a key the caller read elsewhere).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> PoolKey {
        PoolKey(Zeroizing::new(bytes))
    }

    /// Reads the key at `path`, or creates it (32 bytes from the OS, mode 0600, never over an
    /// existing file) when there is none. The parent directory is created (0700) when missing.
    /// A file that group or others may read, or of any other length, is refused.
    pub fn load_or_create(path: &Path) -> Result<PoolKey, KeyFileError> {
        let io_err = |source| KeyFileError::Io {
            path: path.to_path_buf(),
            source,
        };
        match Self::load(path) {
            Err(KeyFileError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
            other => return other,
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_err)?;
        }
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        getrandom::fill(&mut bytes[..]).map_err(|e| KeyFileError::Random {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
        match file {
            Ok(mut f) => {
                f.write_all(&bytes[..]).map_err(io_err)?;
                f.sync_all().map_err(io_err)?;
                Ok(PoolKey(bytes))
            }
            // Another process created it between our read and our create: use theirs.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Self::load(path),
            Err(e) => Err(io_err(e)),
        }
    }

    /// Reads the key at `path` (which must exist, mode 0600 or stricter, 32 bytes).
    pub fn load(path: &Path) -> Result<PoolKey, KeyFileError> {
        let io_err = |source| KeyFileError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = fs::File::open(path).map_err(io_err)?;
        let meta = file.metadata().map_err(io_err)?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyFileError::Permissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        if meta.len() != KEY_LEN as u64 {
            return Err(KeyFileError::Length {
                path: path.to_path_buf(),
                len: meta.len(),
            });
        }
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        file.read_exact(&mut bytes[..]).map_err(io_err)?;
        // The file must end there (it may have grown since the metadata was read).
        let mut probe = [0u8; 1];
        if file.read(&mut probe).map_err(io_err)? != 0 {
            return Err(KeyFileError::Length {
                path: path.to_path_buf(),
                len: KEY_LEN as u64 + 1,
            });
        }
        Ok(PoolKey(bytes))
    }

    fn derive(&self, label: &[u8]) -> DerivedKey {
        let hk = Hkdf::<Sha256>::new(Some(SALT), &self.0[..]);
        let mut out = [0u8; KEY_LEN];
        // 32 bytes is far below HKDF-SHA256's limit (255 × 32): expand cannot fail.
        if hk.expand(label, &mut out).is_err() {
            unreachable!("HKDF-SHA256 expands to 32 bytes");
        }
        let key = DerivedKey(out);
        out.zeroize();
        key
    }

    /// The key of the flow tokens in Record-Route and Path.
    pub fn flow_token_key(&self) -> DerivedKey {
        self.derive(LABEL_FLOW_TOKEN)
    }

    /// The key of the stateless NTLM challenges (first legs).
    pub fn ntlm_challenge_key(&self) -> DerivedKey {
        self.derive(LABEL_NTLM_CHALLENGE)
    }

    /// The key of the Digest nonces' MAC.
    pub fn digest_nonce_key(&self) -> DerivedKey {
        self.derive(LABEL_DIGEST_NONCE)
    }

    /// The key that seals SA records in the store and in snapshots ([`crate::Sealer`]).
    pub fn seal_key(&self) -> DerivedKey {
        self.derive(LABEL_SEAL)
    }

    /// 16 bytes (32 hex digits) that name this key without revealing anything about it or about
    /// the derived keys (an HKDF output under its own label): stored in `sagw:pool-key-id` so that
    /// gateways check they share the key, and fit for logs.
    pub fn fingerprint(&self) -> String {
        let k = self.derive(LABEL_FINGERPRINT);
        hex::encode(&k.0[..16])
    }
}

/// A key derived from the pool key. Redacted in `Debug`, zeroed on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct DerivedKey([u8; KEY_LEN]);

impl DerivedKey {
    /// The key's bytes, to hand to the MAC or cipher that uses it.
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl Drop for DerivedKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for DerivedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DerivedKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp() -> tempfile::TempDir {
        tempfile::tempdir().expect("tempdir")
    }

    #[test]
    fn created_once_with_mode_0600_then_read_back() {
        let dir = tmp();
        let path = dir.path().join("sub/pool.key");
        let a = PoolKey::load_or_create(&path).expect("create");
        let mode = fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(fs::metadata(&path).expect("meta").len(), 32);
        let b = PoolKey::load_or_create(&path).expect("load");
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.seal_key(), b.seal_key());
    }

    #[test]
    fn readable_by_others_or_wrong_length_is_refused_naming_the_file() {
        let dir = tmp();
        let path = dir.path().join("pool.key");
        fs::write(&path, [7u8; 32]).expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = PoolKey::load_or_create(&path).expect_err("0644 refused");
        assert!(matches!(e, KeyFileError::Permissions { mode: 0o644, .. }));
        assert!(e.to_string().contains(&path.display().to_string()));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(PoolKey::load_or_create(&path).is_ok());
        fs::write(&path, [7u8; 31]).expect("write");
        let e = PoolKey::load_or_create(&path).expect_err("short refused");
        assert!(matches!(e, KeyFileError::Length { len: 31, .. }));
        assert!(e.to_string().contains("pool.key"));
    }

    #[test]
    fn derived_keys_are_distinct_and_redacted() {
        let k = PoolKey::from_bytes([1u8; 32]);
        let keys = [
            k.flow_token_key(),
            k.ntlm_challenge_key(),
            k.digest_nonce_key(),
            k.seal_key(),
        ];
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
            assert_ne!(a.expose(), &[1u8; 32]);
            assert_eq!(format!("{a:?}"), "DerivedKey(<redacted>)");
        }
        let fp = k.fingerprint();
        assert_eq!(fp.len(), 32);
        assert_ne!(fp, PoolKey::from_bytes([2u8; 32]).fingerprint());
        let dbg = format!("{k:?}");
        assert!(dbg.contains("redacted") && !dbg.contains("0101"));
        // Pinned: a change of label or salt would split a pool mid-upgrade.
        assert_eq!(fp, "68b88f8967911f4363b003d34e3ba207");
    }
}
