//! Stateless NTLM handshakes: a first leg (`gssapi-data=""`) costs the gateway no memory.
//!
//! Connectionless NTLM in [MS-SIPAE] has three legs: the client's empty token, the server's
//! CHALLENGE_MESSAGE under a fresh `opaque`, and the client's AUTHENTICATE_MESSAGE naming that
//! `opaque`. The acceptor needs, at the third leg, every byte of the CHALLENGE it sent: the 8-byte
//! server challenge enters NTProofStr, and the whole message enters the MIC when the client sends
//! one. Everything in it but two fields is constant per configuration (flags, TargetInfo names,
//! version); the two are made recomputable from what the third leg carries:
//!
//! * the **server challenge** is `HMAC-SHA256(key, opaque ‖ window ‖ epid)` cut to 8 bytes, where
//!   the key is 32 random bytes drawn at start (a pool of gateways would share it), the window is
//!   the number of the coarse time window (30 s by default) the challenge was issued in, and the
//!   epid is the client endpoint's From `epid`;
//! * the **MsvAvTimestamp** (only when configured) is the start of that window.
//!
//! The `opaque` itself is random, with its top two bits set to the window number modulo 4 (as TCP
//! SYN cookies carry their time counter), so the third leg names its window: a final leg is taken
//! in the window of its challenge and the next one (between one and two windows after the
//! challenge), and one that comes later is refused as a timed-out handshake before any work.
//!
//! One-time use is enforced when the SA is created: a final leg whose `opaque` names a live SA, or
//! was used by a successful final leg within its acceptance period, is refused
//! ([`SaManager::claim_final_leg`](crate::SaManager::claim_final_leg)). That table is written only
//! after the NTLMv2 proof verified, which a flood of first legs cannot produce.
//!
//! Recorded flows replay a real server's challenge, which no MAC reproduces: they swap the MAC
//! for [`RecordedChallenges`] (the challenge the recording used, for its `opaque` and epid).

use std::fmt;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::date::unix_secs;
use crate::manager::SaManager;
use crate::rng::Rng;
use crate::sa::Opaque;

/// Domain separation for the challenge MAC (the key could one day serve another purpose).
const LABEL: &[u8] = b"sagw/ntlm-server-challenge/v1\0";

/// Bits of the `opaque` that carry the window number (modulo 4).
const TAG_SHIFT: u32 = 30;
const RANDOM_BITS: u32 = (1 << TAG_SHIFT) - 1;

/// Computes the server challenge of a handshake from what its final leg echoes: `opaque`, the
/// endpoint's epid, and the window the challenge was issued in. Must be a keyed pseudo-random
/// function: anyone who can predict a challenge can have a victim's client answer it elsewhere.
pub trait ChallengeSource: Send + Sync {
    /// The 8-byte NTLM server challenge for `opaque`, `epid` and handshake window number `window`;
    /// the same inputs must always give the same challenge.
    fn server_challenge(&self, opaque: Opaque, epid: &str, window: u64) -> [u8; 8];
}

/// The production [`ChallengeSource`]: HMAC-SHA256 under a 32-byte secret, the key schedule done
/// once (a challenge costs two SHA-256 blocks, plus the epid's length).
#[derive(Clone)]
pub struct ChallengeKey {
    mac: Hmac<Sha256>,
}

impl ChallengeKey {
    /// The MAC under `key`: 32 secret bytes, shared by the gateways that must take each other's
    /// final legs ([`crate::NtlmSettings::challenge_key`]).
    pub fn new(key: &[u8; 32]) -> Self {
        // HMAC takes keys of any length, so the fallback is unreachable; it keeps the function
        // total without a panic path.
        let mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
            .unwrap_or_else(|_| <Hmac<Sha256> as KeyInit>::new(&Default::default()));
        ChallengeKey { mac }
    }
}

impl fmt::Debug for ChallengeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChallengeKey(..)")
    }
}

impl ChallengeSource for ChallengeKey {
    fn server_challenge(&self, opaque: Opaque, epid: &str, window: u64) -> [u8; 8] {
        let mut m = self.mac.clone();
        m.update(LABEL);
        m.update(&opaque.0.to_be_bytes());
        m.update(&window.to_be_bytes());
        // Last, so no length prefix is needed to keep the encoding unambiguous.
        m.update(epid.as_bytes());
        let tag = m.finalize().into_bytes();
        let mut out = [0u8; 8];
        out.copy_from_slice(&tag[..8]);
        out
    }
}

/// For recorded-flow replays only: the server challenge a recording used, for the `opaque` and
/// epid it used (in any window); every other handshake gets the keyed MAC. A real server's
/// challenge cannot come out of a MAC, so this is how a capture's AUTHENTICATE verifies again.
pub struct RecordedChallenges {
    recorded: Vec<(Opaque, Box<str>, [u8; 8])>,
    otherwise: ChallengeKey,
}

impl RecordedChallenges {
    /// No recorded challenge yet; handshakes not recorded get the MAC under `otherwise_key`.
    pub fn new(otherwise_key: &[u8; 32]) -> Self {
        RecordedChallenges {
            recorded: Vec::new(),
            otherwise: ChallengeKey::new(otherwise_key),
        }
    }

    /// The challenge for `opaque` and `epid`.
    pub fn with(mut self, opaque: Opaque, epid: &str, server_challenge: [u8; 8]) -> Self {
        self.recorded.push((opaque, epid.into(), server_challenge));
        self
    }
}

impl ChallengeSource for RecordedChallenges {
    fn server_challenge(&self, opaque: Opaque, epid: &str, window: u64) -> [u8; 8] {
        self.recorded
            .iter()
            .find(|(o, e, _)| *o == opaque && **e == *epid)
            .map_or_else(
                || self.otherwise.server_challenge(opaque, epid, window),
                |(_, _, c)| *c,
            )
    }
}

/// Handshake windows: spans of `len` seconds numbered from the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeWindows {
    len: u64,
}

impl HandshakeWindows {
    /// Windows of `len` (at least a second).
    pub fn new(len: Duration) -> Self {
        HandshakeWindows {
            len: len.as_secs().max(1),
        }
    }

    /// The window `now` falls in.
    pub fn at(&self, now: SystemTime) -> u64 {
        unix_secs(now) / self.len
    }

    /// When window `n` began: the challenge's MsvAvTimestamp.
    pub fn start(&self, n: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(n.saturating_mul(self.len))
    }

    /// Unix seconds at which a challenge of window `n` stops being taken.
    pub fn accepted_until(&self, n: u64) -> u64 {
        n.saturating_add(2).saturating_mul(self.len)
    }

    /// `raw` random bits as the `opaque` of a challenge issued in window `n`.
    pub fn tag(raw: u32, n: u64) -> Opaque {
        Opaque((raw & RANDOM_BITS) | (((n & 3) as u32) << TAG_SHIFT))
    }

    /// The window a final leg's `opaque` was issued in, when it is the current or the previous
    /// one; `None` for a challenge that timed out (or never was ours).
    pub fn issued_in(&self, opaque: Opaque, now: SystemTime) -> Option<u64> {
        let n = self.at(now);
        let tag = u64::from(opaque.0 >> TAG_SHIFT);
        if tag == n & 3 {
            Some(n)
        } else if n > 0 && tag == (n - 1) & 3 {
            Some(n - 1)
        } else {
            None
        }
    }
}

/// A first leg's answer: what goes on the wire, nothing kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Issued {
    /// The handshake's name, tagged with its window: the client echoes it in the final leg.
    pub opaque: Opaque,
    /// The server challenge of the CHALLENGE_MESSAGE.
    pub server_challenge: [u8; 8],
    /// The MsvAvTimestamp of the CHALLENGE (when the acceptor includes one).
    pub timestamp: SystemTime,
}

/// A final leg's challenge, recomputed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recomputed {
    /// The server challenge the first leg sent for this `opaque` and epid.
    pub server_challenge: [u8; 8],
    /// The MsvAvTimestamp of its CHALLENGE: the start of its window (used only when the acceptor
    /// includes one).
    pub timestamp: SystemTime,
    /// Unix seconds until which this `opaque` must stay claimed once used.
    pub accepted_until: u64,
}

/// Issues and recomputes NTLM server challenges. Holds no per-handshake state.
pub struct NtlmHandshakes {
    windows: HandshakeWindows,
    /// Set at construction when the operator gives a key, else drawn from the caller's
    /// randomness at the first first leg.
    source: OnceLock<Box<dyn ChallengeSource>>,
}

impl fmt::Debug for NtlmHandshakes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NtlmHandshakes")
            .field("windows", &self.windows)
            .field("keyed", &self.source.get().is_some())
            .finish()
    }
}

impl NtlmHandshakes {
    /// Challenges in windows of `window`, under `key` when the operator gives one (else a key
    /// drawn at the first first leg, lost at restart).
    pub fn new(window: Duration, key: Option<&[u8; 32]>) -> Self {
        let source = OnceLock::new();
        if let Some(k) = key {
            let _ = source.set(Box::new(ChallengeKey::new(k)) as Box<dyn ChallengeSource>);
        }
        NtlmHandshakes {
            windows: HandshakeWindows::new(window),
            source,
        }
    }

    /// Replaces how challenges are computed (recorded-flow replays).
    pub fn set_source(&mut self, source: Box<dyn ChallengeSource>) {
        self.source = OnceLock::new();
        let _ = self.source.set(source);
    }

    /// The window arithmetic in use (window length, tags, acceptance deadlines).
    pub fn windows(&self) -> HandshakeWindows {
        self.windows
    }

    fn source(&self, rng: &mut dyn Rng) -> &dyn ChallengeSource {
        self.source
            .get_or_init(|| {
                let mut key = [0u8; 32];
                rng.fill_bytes(&mut key);
                Box::new(ChallengeKey::new(&key))
            })
            .as_ref()
    }

    /// Leg 2: a fresh `opaque` (random, tagged with the window, naming no live or recently used
    /// SA) and its challenge.
    pub fn issue(&self, sas: &SaManager, epid: &str, now: SystemTime, rng: &mut dyn Rng) -> Issued {
        let n = self.windows.at(now);
        let source = self.source(rng);
        let opaque = sas.fresh_opaque_shaped(rng, |raw| HandshakeWindows::tag(raw, n));
        Issued {
            opaque,
            server_challenge: source.server_challenge(opaque, epid, n),
            timestamp: self.windows.start(n),
        }
    }

    /// Leg 3: the challenge `opaque` was issued with for `epid`, if it is still in time. A final
    /// leg for a challenge never issued gets a challenge the client never saw, and its NTLMv2
    /// proof fails.
    pub fn recompute(&self, opaque: Opaque, epid: &str, now: SystemTime) -> Option<Recomputed> {
        let n = self.windows.issued_in(opaque, now)?;
        // No key yet: no first leg was answered since start, so this challenge is not ours.
        let source = self.source.get()?;
        Some(Recomputed {
            server_challenge: source.server_challenge(opaque, epid, n),
            timestamp: self.windows.start(n),
            accepted_until: self.windows.accepted_until(n),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_tag_the_opaque_and_take_the_current_and_previous_window() {
        let w = HandshakeWindows::new(Duration::from_secs(30));
        let t = UNIX_EPOCH + Duration::from_secs(1_267_438_088);
        let n = w.at(t);
        assert_eq!(n, 42_247_936);
        // The recorded OCS opaque 2BDBAC9D has 00 in its top bits, and so has window n.
        assert_eq!(HandshakeWindows::tag(0x2BDB_AC9D, n), Opaque(0x2BDB_AC9D));
        let o = HandshakeWindows::tag(0xFFFF_FFFF, n);
        assert_eq!(w.issued_in(o, t), Some(n));
        assert_eq!(w.issued_in(o, t + Duration::from_secs(30)), Some(n));
        assert_eq!(w.issued_in(o, t + Duration::from_secs(60)), None);
        assert_eq!(w.issued_in(o, t + Duration::from_secs(90)), None);
        assert_eq!(w.issued_in(o, t - Duration::from_secs(30)), None);
        assert_eq!(w.accepted_until(n), (n + 2) * 30);
        assert_eq!(w.start(n), UNIX_EPOCH + Duration::from_secs(n * 30));
    }

    #[test]
    fn the_challenge_depends_on_every_input_and_the_key() {
        let k = ChallengeKey::new(&[1; 32]);
        let base = k.server_challenge(Opaque(7), "abc", 5);
        assert_eq!(base, k.server_challenge(Opaque(7), "abc", 5));
        assert_ne!(base, k.server_challenge(Opaque(8), "abc", 5));
        assert_ne!(base, k.server_challenge(Opaque(7), "abd", 5));
        assert_ne!(base, k.server_challenge(Opaque(7), "abc", 6));
        assert_ne!(
            base,
            ChallengeKey::new(&[2; 32]).server_challenge(Opaque(7), "abc", 5)
        );
        assert_eq!(format!("{k:?}"), "ChallengeKey(..)");
    }

    #[test]
    fn recorded_challenges_pin_one_handshake_only() {
        let r = RecordedChallenges::new(&[1; 32]).with(Opaque(7), "abc", [9; 8]);
        assert_eq!(r.server_challenge(Opaque(7), "abc", 5), [9; 8]);
        assert_eq!(r.server_challenge(Opaque(7), "abc", 99), [9; 8]);
        assert_eq!(
            r.server_challenge(Opaque(7), "abd", 5),
            ChallengeKey::new(&[1; 32]).server_challenge(Opaque(7), "abd", 5)
        );
    }
}
