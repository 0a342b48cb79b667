//! Sealing: SA records and snapshots leave the process only encrypted and authenticated
//! (ChaCha20-Poly1305 under the pool key's sealing key), so the store never sees a session key in
//! clear and a record cannot be moved to another SA (its opaque is associated data).
//!
//! Format: version byte 1, 12-byte random nonce, ciphertext and 16-byte tag.

use ring::aead::{self, Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::PoolKey;

const VERSION: u8 = 1;

/// Seals and opens with the pool's sealing key.
pub struct Sealer {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(<redacted>)")
    }
}

/// Why sealed bytes did not open.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("sealed data of an unknown version or too short")]
    Malformed,
    #[error("sealed with another key, for another use, or damaged")]
    Forged,
}

impl Sealer {
    pub fn new(key: &PoolKey) -> Self {
        let raw = Zeroizing::new(key.seal_key());
        // A 32-byte key is what ChaCha20-Poly1305 takes: this cannot fail.
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, raw.as_slice())
            .unwrap_or_else(|_| unreachable!("ChaCha20-Poly1305 takes 32-byte keys"));
        Sealer {
            key: LessSafeKey::new(unbound),
            rng: SystemRandom::new(),
        }
    }

    /// `plaintext` sealed, bound to `aad` (which [`open`](Self::open) must be given again).
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 12];
        // The system RNG failing is not recoverable; a fixed nonce would be far worse.
        if self.rng.fill(&mut nonce).is_err() {
            panic!("the system random source failed");
        }
        let mut out = Vec::with_capacity(1 + 12 + plaintext.len() + 16);
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        // The body is sealed in a buffer with room for the tag: appended to one sized for the
        // plaintext alone, it moved, and the freed copy of the plaintext (an SA's session key)
        // stayed in memory unwiped.
        let mut body: Zeroizing<Vec<u8>> =
            Zeroizing::new(Vec::with_capacity(plaintext.len() + aead::MAX_TAG_LEN));
        body.extend_from_slice(plaintext);
        let _ = self.key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut *body,
        );
        out.extend_from_slice(&body);
        out
    }

    /// The plaintext of `sealed`, if it was sealed with this key and `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        if sealed.len() < 1 + 12 + aead::MAX_TAG_LEN || sealed[0] != VERSION {
            return Err(SealError::Malformed);
        }
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&sealed[1..13]);
        let mut body = Zeroizing::new(sealed[13..].to_vec());
        let n = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut body,
            )
            .map_err(|_| SealError::Forged)?
            .len();
        body.truncate(n);
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_data_opens_only_with_its_key_and_associated_data() {
        let s = Sealer::new(&PoolKey::from_bytes([5; 32]));
        let sealed = s.seal(b"sa 1", b"session key");
        assert!(
            !sealed.windows(11).any(|w| w == b"session key"),
            "not in clear"
        );
        assert_eq!(
            s.open(b"sa 1", &sealed).expect("opens").as_slice(),
            b"session key"
        );
        assert_eq!(s.open(b"sa 2", &sealed).err(), Some(SealError::Forged));
        let other = Sealer::new(&PoolKey::from_bytes([6; 32]));
        assert_eq!(other.open(b"sa 1", &sealed).err(), Some(SealError::Forged));
        for i in 0..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 1;
            assert!(s.open(b"sa 1", &t).is_err(), "byte {i} flipped");
        }
        assert_eq!(s.open(b"", &[1, 2, 3]).err(), Some(SealError::Malformed));
        assert_ne!(
            s.seal(b"a", b"x"),
            s.seal(b"a", b"x"),
            "fresh nonce each time"
        );
    }
}
