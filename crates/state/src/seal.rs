//! Sealing: what the store and snapshots hold of an SA is encrypted and authenticated under the
//! pool's seal key (ChaCha20-Poly1305, RFC 8439).
//!
//! Format: `version (1 byte, 0x01) || nonce (12 random bytes) || ciphertext || tag (16 bytes)`.
//! The version byte and the caller's AAD are both authenticated (AEAD AAD = `version || aad`). An
//! SA record is sealed with AAD = `sagw-sa-v1` followed by its opaque ([`sa_aad`]), so a record
//! copied under another opaque does not open.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use sagw_auth::Rng;
use zeroize::Zeroizing;

use crate::keys::DerivedKey;

/// The format written by [`Sealer::seal`].
pub const SEAL_VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Bytes a sealed value has beyond its plaintext.
pub const SEAL_OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;

/// Why sealed bytes did not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("sealed value too short ({0} bytes)")]
    TooShort(usize),
    #[error("sealed value of unknown version {0}")]
    UnknownVersion(u8),
    /// Wrong key, wrong AAD, or altered bytes: AEAD authentication failed.
    #[error("sealed value does not authenticate (other pool key, other AAD, or altered)")]
    Forged,
}

/// The AAD of an SA record: `sagw-sa-v1` and the opaque (4 bytes, big-endian).
pub fn sa_aad(opaque: u32) -> [u8; 14] {
    let mut a = [0u8; 14];
    a[..10].copy_from_slice(b"sagw-sa-v1");
    a[10..].copy_from_slice(&opaque.to_be_bytes());
    a
}

/// Seals and opens with one key. Cheap to clone; the key schedule is zeroed on drop.
#[derive(Clone)]
pub struct Sealer {
    cipher: ChaCha20Poly1305,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(<redacted>)")
    }
}

impl Sealer {
    /// A sealer under `key` (normally [`crate::PoolKey::seal_key`]).
    pub fn new(key: &DerivedKey) -> Sealer {
        Sealer {
            cipher: ChaCha20Poly1305::new(key.expose().into()),
        }
    }

    fn aad(aad: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(1 + aad.len());
        v.push(SEAL_VERSION);
        v.extend_from_slice(aad);
        v
    }

    /// Seals `plaintext` with a fresh random nonce from `rng` (which must be a CSPRNG outside
    /// tests: a repeated nonce under one key breaks ChaCha20-Poly1305).
    pub fn seal(&self, aad: &[u8], plaintext: &[u8], rng: &mut impl Rng) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let full_aad = Self::aad(aad);
        let ct = match self.cipher.encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: plaintext,
                aad: &full_aad,
            },
        ) {
            Ok(ct) => ct,
            // Only fails for plaintexts over 256 GiB.
            Err(_) => unreachable!("ChaCha20-Poly1305 plaintext length limit"),
        };
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len());
        out.push(SEAL_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// Opens what [`Sealer::seal`] wrote under the same key and AAD.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(SealError::TooShort(sealed.len()));
        }
        let (version, rest) = (sealed[0], &sealed[1..]);
        if version != SEAL_VERSION {
            return Err(SealError::UnknownVersion(version));
        }
        let (nonce, ct) = rest.split_at(NONCE_LEN);
        let mut n = [0u8; NONCE_LEN];
        n.copy_from_slice(nonce);
        let full_aad = Self::aad(aad);
        self.cipher
            .decrypt(
                &Nonce::from(n),
                Payload {
                    msg: ct,
                    aad: &full_aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| SealError::Forged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PoolKey;
    use sagw_auth::XorShiftRng;

    fn sealer(b: u8) -> Sealer {
        Sealer::new(&PoolKey::from_bytes([b; 32]).seal_key())
    }

    #[test]
    fn round_trip_and_fresh_nonces() {
        let s = sealer(1);
        let mut rng = XorShiftRng::new(9);
        let aad = sa_aad(0x357E_6F72);
        let a = s.seal(&aad, b"session keys", &mut rng);
        let b = s.seal(&aad, b"session keys", &mut rng);
        assert_eq!(a.len(), b"session keys".len() + SEAL_OVERHEAD);
        assert_eq!(a[0], SEAL_VERSION);
        assert_ne!(a, b, "each seal draws its own nonce");
        assert_eq!(&s.open(&aad, &a).expect("opens")[..], b"session keys");
        assert_eq!(&s.open(&aad, &b).expect("opens")[..], b"session keys");
        assert_eq!(
            &s.open(b"", &s.seal(b"", b"", &mut rng)).expect("empty")[..],
            b""
        );
    }

    #[test]
    fn wrong_aad_key_or_any_altered_byte_is_refused() {
        let s = sealer(1);
        let mut rng = XorShiftRng::new(3);
        let sealed = s.seal(&sa_aad(1), b"secret", &mut rng);
        assert_eq!(s.open(&sa_aad(2), &sealed), Err(SealError::Forged));
        assert_eq!(sealer(2).open(&sa_aad(1), &sealed), Err(SealError::Forged));
        for i in 1..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 0x01;
            assert_eq!(s.open(&sa_aad(1), &t), Err(SealError::Forged), "byte {i}");
        }
        let mut v = sealed.clone();
        v[0] = 2;
        assert_eq!(s.open(&sa_aad(1), &v), Err(SealError::UnknownVersion(2)));
        assert_eq!(
            s.open(&sa_aad(1), &sealed[..SEAL_OVERHEAD - 1]),
            Err(SealError::TooShort(SEAL_OVERHEAD - 1))
        );
        assert_eq!(
            s.open(&sa_aad(1), &sealed[..sealed.len() - 1]),
            Err(SealError::Forged)
        );
        assert_eq!(format!("{s:?}"), "Sealer(<redacted>)");
    }
}
