//! Stateless nonces: the nonce carries its issue time and a MAC, so any node holding the key can
//! check it without shared state.
//!
//! Layout (32 bytes, base64url without padding = 43 characters, safe inside a quoted-string):
//! `LE64(node << 48 | unix milliseconds) || salt(8) || HMAC-SHA256(key, LABEL || ts || salt || realm)[..16]`.
//! Milliseconds rather than seconds so the replay table's eviction watermark (which compares
//! issue times) hardly ever ties with a fresh nonce.
//!
//! The top 16 bits of the time word name the node of a pool that issued the nonce (48 bits of
//! milliseconds last until the year 10889). They are under the MAC like the time, so a nonce
//! cannot be moved to another node by editing them. Node 0, a single gateway, leaves them zero:
//! its nonces are exactly those of the format before node ids existed.
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
/// Bits of the time word that hold the issue time; the node id sits above them.
const MILLIS_BITS: u32 = 48;
const MILLIS_MASK: u64 = (1 << MILLIS_BITS) - 1;
/// Encoded length of every nonce this crate mints.
pub const NONCE_LEN: usize = 43;
const _: () = assert!(matches!(
    base64::encoded_len(RAW_LEN, false),
    Some(NONCE_LEN)
));

/// A nonce as minted, its text held inline: one is minted for every challenge and every
/// `nextnonce`, and it is only ever written into a header value.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Nonce([u8; NONCE_LEN]);

impl Nonce {
    pub fn as_str(&self) -> &str {
        // Base64url characters only: always UTF-8.
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

impl std::ops::Deref for Nonce {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for Nonce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for Nonce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

/// Server secret for nonce MACs. Share it between the nodes of a pool: each then recognises the
/// others' nonces as genuine and answers them as stale rather than forged.
pub struct NonceKey {
    bytes: [u8; 32],
    /// HMAC keyed once: every nonce minted or checked starts from a copy of it instead of
    /// hashing the key's inner and outer blocks again (two of the four SHA-256 compressions of
    /// a nonce MAC). The flow-token MAC of the proxy keeps its key the same way.
    keyed: Hmac<Sha256>,
}

impl NonceKey {
    /// Wraps 32 secret random bytes (the caller owns the RNG).
    pub fn new(bytes: [u8; 32]) -> Self {
        // HMAC accepts keys of any length, so this cannot fail; the fallback is unreachable but
        // keeps the function total without a panic path.
        let keyed = <Hmac<Sha256> as KeyInit>::new_from_slice(&bytes)
            .unwrap_or_else(|_| <Hmac<Sha256> as KeyInit>::new(&Default::default()));
        NonceKey { bytes, keyed }
    }

    fn mac(&self) -> Hmac<Sha256> {
        self.keyed.clone()
    }
}

impl From<[u8; 32]> for NonceKey {
    fn from(bytes: [u8; 32]) -> Self {
        NonceKey::new(bytes)
    }
}

impl std::fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NonceKey(<redacted>)")
    }
}

impl Drop for NonceKey {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

fn unix_millis(t: SystemTime) -> u64 {
    // A clock before 1970 is a host misconfiguration; clamping keeps nonce minting total and such
    // nonces simply look expired.
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What an authenticated nonce says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Issued {
    pub at: SystemTime,
    /// The node that minted it (see [`crate::DigestConfig::node_id`]).
    pub node: u16,
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

pub(crate) fn make(
    key: &NonceKey,
    realm: &str,
    node: u16,
    now: SystemTime,
    salt: [u8; 8],
) -> Nonce {
    let word = (u64::from(node) << MILLIS_BITS) | unix_millis(now).min(MILLIS_MASK);
    let ts = word.to_le_bytes();
    let t = tag(key, &ts, &salt, realm);
    let mut raw = [0u8; RAW_LEN];
    for (dst, src) in raw
        .iter_mut()
        .zip(ts.iter().chain(salt.iter()).chain(t.iter()))
    {
        *dst = *src;
    }
    let mut text = [b'A'; NONCE_LEN];
    // Cannot fail: RAW_LEN bytes take exactly NONCE_LEN characters (asserted above). Were it to,
    // the `A`s left would read as a nonce whose MAC fails, never as a valid one.
    let _ = URL_SAFE_NO_PAD.encode_slice(raw, &mut text);
    Nonce(text)
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

fn issued_of(ts: [u8; 8]) -> Option<Issued> {
    let word = u64::from_le_bytes(ts);
    let at = UNIX_EPOCH.checked_add(Duration::from_millis(word & MILLIS_MASK))?;
    // The shift leaves 16 bits: the conversion cannot fail.
    let node = u16::try_from(word >> MILLIS_BITS).ok()?;
    Some(Issued { at, node })
}

fn time_of(ts: [u8; 8]) -> Option<SystemTime> {
    issued_of(ts).map(|i| i.at)
}

/// Authenticates a nonce and returns its issue time and issuing node.
pub(crate) fn check(key: &NonceKey, realm: &str, nonce: &str) -> Option<Issued> {
    let (ts, salt, got) = decode(nonce)?;
    let want = tag(key, &ts, &salt, realm);
    if bool::from(want.ct_eq(&got)) {
        issued_of(ts)
    } else {
        None
    }
}

/// Issue time read from a nonce **without** authenticating it: only for nonces that already
/// passed [`check`] (the replay counter runs after `verify`).
pub(crate) fn issued_unverified(nonce: &str) -> Option<SystemTime> {
    decode(nonce).and_then(|(ts, _, _)| time_of(ts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at_ms(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    /// Node 0 mints what the format before node ids minted: a single gateway's nonces, and
    /// nonces handed out before an upgrade, keep verifying. The expected value is the old
    /// layout computed by hand (time word without node bits).
    #[test]
    fn node_zero_is_the_old_format() {
        let key = NonceKey::new([3; 32]);
        let now = at_ms(1_700_000_000_123);
        let ts = 1_700_000_000_123u64.to_le_bytes();
        let salt = [5; 8];
        let t = tag(&key, &ts, &salt, "r");
        let old = URL_SAFE_NO_PAD.encode([ts.as_slice(), &salt, &t].concat());
        assert_eq!(make(&key, "r", 0, now, salt).as_str(), old);
        assert_eq!(check(&key, "r", &old), Some(Issued { at: now, node: 0 }));
    }

    #[test]
    fn node_id_round_trips_under_the_mac() {
        let key = NonceKey::new([3; 32]);
        let now = at_ms(1_700_000_000_123);
        for node in [1u16, 2, 0x1234, u16::MAX] {
            let n = make(&key, "r", node, now, [9; 8]);
            assert_eq!(n.len(), NONCE_LEN);
            assert_eq!(check(&key, "r", &n), Some(Issued { at: now, node }));
            assert_eq!(issued_unverified(&n), Some(now));
            // Rewriting the node id (the top bytes of the time word) breaks the MAC.
            let mut raw = URL_SAFE_NO_PAD.decode(n.as_str()).unwrap();
            raw[7] ^= 0x01;
            let forged = URL_SAFE_NO_PAD.encode(&raw);
            assert_eq!(check(&key, "r", &forged), None);
        }
    }
}
