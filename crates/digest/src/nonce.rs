//! Stateless nonces: the nonce carries its issue time and a MAC, so any node holding the key can
//! check it without shared state.
//!
//! Layout (32 bytes, base64url without padding = 43 characters, safe inside a quoted-string):
//! `LE64(unix milliseconds) || salt(8) || HMAC-SHA256(key, LABEL || ts || salt || realm)[..16]`.
//! Milliseconds rather than seconds so the replay table's eviction watermark (which compares
//! issue times) hardly ever ties with a fresh nonce.
//! The realm is bound so a nonce from one realm's challenge cannot be replayed against another
//! realm served with the same key; the label separates this MAC from any other use of the key.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

const LABEL: &[u8] = b"sagw-digest-nonce-v1\0";
const RAW_LEN: usize = 32;
const TAG_LEN: usize = 16;
/// Encoded length of every nonce this crate mints.
pub const NONCE_LEN: usize = 43;

/// Server secret for nonce MACs. Share it between nodes that must accept each other's nonces.
pub struct NonceKey([u8; 32]);

impl NonceKey {
    /// Wraps 32 secret random bytes (the caller owns the RNG).
    pub fn new(bytes: [u8; 32]) -> Self {
        NonceKey(bytes)
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC accepts keys of any length, so this cannot fail; the fallback is unreachable but
        // keeps the function total without a panic path.
        <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .unwrap_or_else(|_| <Hmac<Sha256> as KeyInit>::new(&Default::default()))
    }
}

impl From<[u8; 32]> for NonceKey {
    fn from(bytes: [u8; 32]) -> Self {
        NonceKey(bytes)
    }
}

impl std::fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NonceKey(<redacted>)")
    }
}

impl Drop for NonceKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

fn unix_millis(t: SystemTime) -> u64 {
    // A clock before 1970 is a host misconfiguration; clamping keeps nonce minting total and such
    // nonces simply look expired.
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn tag(key: &NonceKey, ts: &[u8; 8], salt: &[u8; 8], realm: &str) -> [u8; TAG_LEN] {
    let mut mac = key.mac();
    mac.update(LABEL);
    mac.update(ts);
    mac.update(salt);
    mac.update(realm.as_bytes());
    let full = mac.finalize().into_bytes();
    let mut out = [0u8; TAG_LEN];
    for (dst, src) in out.iter_mut().zip(full.iter()) {
        *dst = *src;
    }
    out
}

pub(crate) fn make(key: &NonceKey, realm: &str, now: SystemTime, salt: [u8; 8]) -> String {
    let ts = unix_millis(now).to_le_bytes();
    let t = tag(key, &ts, &salt, realm);
    let mut raw = [0u8; RAW_LEN];
    for (dst, src) in raw
        .iter_mut()
        .zip(ts.iter().chain(salt.iter()).chain(t.iter()))
    {
        *dst = *src;
    }
    URL_SAFE_NO_PAD.encode(raw)
}

/// Splits a nonce into (timestamp bytes, salt, tag) without authenticating it.
fn decode(nonce: &str) -> Option<([u8; 8], [u8; 8], [u8; TAG_LEN])> {
    if nonce.len() != NONCE_LEN {
        return None;
    }
    let mut raw = [0u8; RAW_LEN + 3];
    let n = URL_SAFE_NO_PAD.decode_slice(nonce, &mut raw).ok()?;
    if n != RAW_LEN {
        return None;
    }
    let mut ts = [0u8; 8];
    let mut salt = [0u8; 8];
    let mut t = [0u8; TAG_LEN];
    let mut it = raw.iter();
    for dst in ts.iter_mut().chain(salt.iter_mut()).chain(t.iter_mut()) {
        *dst = *it.next()?;
    }
    Some((ts, salt, t))
}

fn time_of(ts: [u8; 8]) -> Option<SystemTime> {
    UNIX_EPOCH.checked_add(Duration::from_millis(u64::from_le_bytes(ts)))
}

/// Authenticates a nonce and returns its issue time.
pub(crate) fn check(key: &NonceKey, realm: &str, nonce: &str) -> Option<SystemTime> {
    let (ts, salt, got) = decode(nonce)?;
    let want = tag(key, &ts, &salt, realm);
    if bool::from(want.ct_eq(&got)) {
        time_of(ts)
    } else {
        None
    }
}

/// Issue time read from a nonce **without** authenticating it: only for nonces that already
/// passed [`check`] (the replay counter runs after `verify`).
pub(crate) fn issued_unverified(nonce: &str) -> Option<SystemTime> {
    decode(nonce).and_then(|(ts, _, _)| time_of(ts))
}
