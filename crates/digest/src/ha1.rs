//! HA1 = H(username ":" realm ":" password): what the user store keeps instead of passwords.

use zeroize::Zeroize;

use crate::DigestError;
use crate::algorithm::{Algorithm, DigestBytes, Hasher, HexBuf};

/// HA1 for one hash function. Password-equivalent for Digest, so it is wiped on drop and never
/// printed by `Debug`.
#[derive(Clone)]
pub struct Ha1 {
    /// Always a base (non `-sess`) algorithm.
    algorithm: Algorithm,
    bytes: [u8; 32],
}

impl Ha1 {
    /// Computes `H(username:realm:password)`. For a `-sess` algorithm this is the base HA1 of the
    /// same hash function: the session key is derived per request from it.
    pub fn compute(alg: Algorithm, username: &str, realm: &str, password: &str) -> Ha1 {
        let d = Hasher::colon_joined(
            alg,
            &[username.as_bytes(), realm.as_bytes(), password.as_bytes()],
        );
        Ha1::from_digest(alg, &d)
    }

    /// Parses a stored HA1 (hex, either case; 32 digits for MD5, 64 for the SHA-2 functions).
    pub fn from_hex(alg: Algorithm, hex: &str) -> Result<Ha1, DigestError> {
        let mut ha1 = Ha1 {
            algorithm: alg.base(),
            bytes: [0; 32],
        };
        let len = alg.output_len();
        let dst = ha1.bytes.get_mut(..len).ok_or(DigestError::InvalidHa1)?;
        let hex = hex.trim();
        if sagw_hex::decode_to_slice(hex, dst).is_err() {
            return Err(DigestError::InvalidHa1);
        }
        Ok(ha1)
    }

    /// Lower-case hex, the form stored per (realm, algorithm).
    pub fn to_hex(&self) -> String {
        HexBuf::encode(self.as_bytes()).as_str().to_owned()
    }

    /// The hash function this HA1 belongs to (never a `-sess` variant).
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub(crate) fn from_digest(alg: Algorithm, d: &DigestBytes) -> Ha1 {
        let mut bytes = [0u8; 32];
        for (dst, src) in bytes.iter_mut().zip(d.as_bytes()) {
            *dst = *src;
        }
        Ha1 {
            algorithm: alg.base(),
            bytes,
        }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..self.algorithm.output_len()).unwrap_or(&[])
    }

    /// The HA1 that enters the response for `alg`: this one, or for `-sess`
    /// `H(hex(HA1) ":" nonce ":" cnonce)` (RFC 7616 §3.4.2).
    pub(crate) fn effective(&self, alg: Algorithm, nonce: &str, cnonce: &str) -> DigestBytes {
        if alg.is_sess() {
            let hex = HexBuf::encode(self.as_bytes());
            Hasher::colon_joined(alg, &[hex.as_bytes(), nonce.as_bytes(), cnonce.as_bytes()])
        } else {
            DigestBytes::copy_of(self.as_bytes())
        }
    }
}

impl std::fmt::Debug for Ha1 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ha1")
            .field("algorithm", &self.algorithm)
            .field("bytes", &"<redacted>")
            .finish()
    }
}

impl Drop for Ha1 {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

/// The `username` a client sends with `userhash=true`: hex `H(username ":" realm)`
/// (RFC 7616 §3.4.4). A user store that accepts hashed usernames indexes users by this value.
pub fn userhash(alg: Algorithm, username: &str, realm: &str) -> String {
    Hasher::colon_joined(alg, &[username.as_bytes(), realm.as_bytes()])
        .to_hex()
        .as_str()
        .to_owned()
}
