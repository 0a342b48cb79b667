//! The pool key: 32 bytes every gateway of a pool shares, from a file the operator distributes.
//! Every key the gateway uses across processes derives from it with HKDF-SHA256 under its own
//! label, so one file is all there is to copy and no key is ever put in the store.

use std::io::{Read, Write};
use std::path::Path;

use ring::hkdf;
use zeroize::{Zeroize, Zeroizing};

/// The pool key. Zeroized on drop; `Debug` shows nothing of it.
pub struct PoolKey([u8; 32]);

/// Why the key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {why}")]
    File { path: String, why: String },
    #[error("the system random source failed")]
    Random,
}

impl std::fmt::Debug for PoolKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PoolKey(<redacted>)")
    }
}

impl Drop for PoolKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

impl PoolKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        PoolKey(bytes)
    }

    /// Reads the key, or creates it (32 random bytes, mode 0600) when the file does not exist.
    /// A file readable by others, or not exactly 32 bytes long, is refused.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyError> {
        secret_file(path).map(|k| PoolKey(*k))
    }

    fn derive<const N: usize>(&self, label: &[u8]) -> [u8; N] {
        let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, b"sagw pool key v1");
        let prk = salt.extract(&self.0);
        let info = [label];
        let mut out = [0u8; N];
        // N is a compile-time constant far below HKDF's 255 x 32 byte limit.
        if let Ok(okm) = prk.expand(&info, Len(N)) {
            let _ = okm.fill(&mut out);
        }
        out
    }

    /// Key of the HMAC in flow tokens (Record-Route, Path, Via `sgf`).
    pub fn flow_token_key(&self) -> [u8; 32] {
        self.derive(b"flow-token")
    }

    /// Key of the NTLM challenge MAC (stateless first legs).
    pub fn ntlm_challenge_key(&self) -> [u8; 32] {
        self.derive(b"ntlm-challenge")
    }

    /// Key of the Digest nonce MAC, for a pool.
    pub fn digest_nonce_key(&self) -> [u8; 32] {
        self.derive(b"digest-nonce")
    }

    /// Key that seals SA records and snapshots.
    pub fn seal_key(&self) -> [u8; 32] {
        self.derive(b"seal")
    }

    /// Safe to show and to store: gateways compare it to find out they share the key.
    pub fn fingerprint(&self) -> String {
        let f: [u8; 16] = self.derive(b"fingerprint");
        sagw_hex::encode(f)
    }
}

/// A 32-byte secret kept in a file (the pool key, a Digest nonce key): read, or created with 32
/// random bytes and mode 0600 when the file does not exist. A file readable by others, or not
/// exactly 32 bytes long, is refused. Gateways starting at once agree on one secret.
pub fn secret_file(path: &Path) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    let err = |why: String| KeyError::File {
        path: path.display().to_string(),
        why,
    };
    match std::fs::File::open(path) {
        Ok(mut f) => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = f
                    .metadata()
                    .map_err(|e| err(e.to_string()))?
                    .permissions()
                    .mode();
                if mode & 0o077 != 0 {
                    return Err(err(format!(
                        "readable by other users (mode {:o}); chmod 600",
                        mode & 0o777
                    )));
                }
            }
            let mut buf = Vec::with_capacity(33);
            Read::by_ref(&mut f)
                .take(33)
                .read_to_end(&mut buf)
                .map_err(|e| err(e.to_string()))?;
            let Ok(key) = <[u8; 32]>::try_from(buf.as_slice()) else {
                buf.zeroize();
                return Err(err("a pool key is exactly 32 bytes".into()));
            };
            buf.zeroize();
            Ok(Zeroizing::new(key))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut key = [0u8; 32];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
                .map_err(|_| KeyError::Random)?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
            }
            // Written whole under a unique name, then linked into place: two gateways (or
            // tests) starting at once never read a half-written key, and the one that links
            // second takes the first one's key.
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let tmp = path.with_extension(format!("tmp{}.{n}", std::process::id()));
            let _ = std::fs::remove_file(&tmp);
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            opts.open(&tmp)
                .and_then(|mut f| f.write_all(&key).and_then(|()| f.sync_all()))
                .map_err(|e| err(e.to_string()))?;
            let linked = std::fs::hard_link(&tmp, path);
            let _ = std::fs::remove_file(&tmp);
            key.zeroize();
            match linked {
                Ok(()) => secret_file(path),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => secret_file(path),
                Err(e) => Err(err(e.to_string())),
            }
        }
        Err(e) => Err(err(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_file_is_created_once_private_and_checked() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("sub/pool.key");
        let a = PoolKey::load_or_create(&path).expect("created");
        let b = PoolKey::load_or_create(&path).expect("read");
        assert_eq!(a.fingerprint(), b.fingerprint());
        // What gateways compare in the store: 32 lower-case hex digits.
        let print = a.fingerprint();
        assert_eq!(print.len(), 32);
        assert!(
            print
                .bytes()
                .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
            assert!(
                PoolKey::load_or_create(&path).is_err(),
                "world-readable key refused"
            );
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        }
        // Many starting at once (parallel tests, gateways of one host) agree on one key.
        let race = dir.path().join("race/pool.key");
        let prints: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| PoolKey::load_or_create(&race).expect("key").fingerprint()))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .collect()
        });
        assert!(prints.windows(2).all(|w| w[0] == w[1]), "one key for all");
        std::fs::write(&path, [1u8; 31]).expect("write");
        assert!(PoolKey::load_or_create(&path).is_err(), "short key refused");
        assert!(!format!("{a:?}").contains(&a.fingerprint()));
    }

    #[test]
    fn derived_keys_differ_per_label_and_per_pool_key() {
        let k = PoolKey::from_bytes([1; 32]);
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
        }
        assert_ne!(
            k.flow_token_key(),
            PoolKey::from_bytes([2; 32]).flow_token_key()
        );
        assert_eq!(
            k.flow_token_key(),
            PoolKey::from_bytes([1; 32]).flow_token_key()
        );
    }
}
