use std::fmt;

use subtle::ConstantTimeEq;
use zeroize::Zeroize;

use crate::crypto::{self, Direction, HmacMd5Key, Key16};
use crate::{NtlmError, flags};

/// The NTLM sequence number MS-SIPAE uses for every signature, in both directions. The SIP
/// `cnum`/`snum` counters are text inside the signed buffer, not the NTLM SeqNum.
pub const SIPAE_SEQ_NUM: u32 = 100;

const SEQ_LE: [u8; 4] = SIPAE_SEQ_NUM.to_le_bytes();
const SIGNATURE_VERSION: [u8; 4] = 1u32.to_le_bytes();

/// One direction's ESS signing material: the keyed HMAC-MD5 state of the SignKey and the
/// 8 keystream bytes of RC4(MD5(SealKey || LE32(100))), constant because the SeqNum is.
struct DirectionKeys {
    hmac: HmacMd5Key,
    mask: [u8; 8],
}

impl DirectionKeys {
    fn derive(exported_session_key: &Key16, negotiate_flags: u32, direction: Direction) -> Self {
        let sign_key = crypto::sign_key(exported_session_key, direction);
        let mask = if negotiate_flags & flags::NEGOTIATE_KEY_EXCH != 0 {
            let seal_key = crypto::seal_key(exported_session_key, negotiate_flags, direction);
            crypto::connectionless_keystream(&seal_key, SIPAE_SEQ_NUM)
        } else {
            [0; 8]
        };
        DirectionKeys {
            hmac: HmacMd5Key::new(sign_key.as_bytes()),
            mask,
        }
    }

    fn sign(&self, buffer: &[u8]) -> [u8; 16] {
        let checksum = self.hmac.mac(&[&SEQ_LE, buffer]);
        let mut out = [0u8; 16];
        out[..4].copy_from_slice(&SIGNATURE_VERSION);
        for ((o, c), m) in out[4..12].iter_mut().zip(&checksum).zip(&self.mask) {
            *o = c ^ m;
        }
        out[12..].copy_from_slice(&SEQ_LE);
        out
    }
}

impl Drop for DirectionKeys {
    fn drop(&mut self) {
        self.mask.zeroize();
    }
}

enum Keys {
    Ess {
        /// What the keys were derived from, kept so that the session can move to another
        /// gateway of a pool ([`NtlmSession::export`]).
        exported_session_key: [u8; 16],
        negotiate_flags: u32,
        client: DirectionKeys,
        server: DirectionKeys,
    },
    /// Without ESS both directions share one seal key; with a fresh RC4 state per message only
    /// keystream bytes 4..12 matter.
    NonEss { keystream: [u8; 8] },
}

/// Per-security-association NTLM state: signs and verifies MS-SIPAE signatures
/// (connectionless GSS_GetMIC, SeqNum 100). Immutable, `Send + Sync`, [`NtlmSession::SIZE`] bytes;
/// the user and domain are not stored (read them from the [`AuthenticateMessage`](crate::AuthenticateMessage)
/// that was accepted). Key material is zeroized on drop and not shown by `Debug`.
pub struct NtlmSession {
    keys: Keys,
}

impl NtlmSession {
    /// Size of a session in bytes (both directions' keys included).
    pub const SIZE: usize = std::mem::size_of::<NtlmSession>();

    /// Session keys from an ExportedSessionKey and the negotiated flags (ESS required).
    /// KEY_EXCH decides whether checksums are RC4-sealed; NEGOTIATE_128/56 the seal key strength.
    pub fn from_exported_session_key(
        exported_session_key: &Key16,
        negotiate_flags: u32,
    ) -> Result<Self, NtlmError> {
        if negotiate_flags & flags::NEGOTIATE_EXTENDED_SESSIONSECURITY == 0 {
            return Err(NtlmError::MissingFlags(
                flags::NEGOTIATE_EXTENDED_SESSIONSECURITY,
            ));
        }
        Ok(NtlmSession {
            keys: Keys::Ess {
                exported_session_key: *exported_session_key.as_bytes(),
                negotiate_flags,
                client: DirectionKeys::derive(
                    exported_session_key,
                    negotiate_flags,
                    Direction::ClientToServer,
                ),
                server: DirectionKeys::derive(
                    exported_session_key,
                    negotiate_flags,
                    Direction::ServerToClient,
                ),
            },
        })
    }

    /// A session without extended session security, from its (shared) seal key
    /// ([MS-NLMP] 3.4.4.1; OCS 2007 / auth version 2). Its signatures are forgeable by anyone who
    /// saw one signed message (see the crate docs); the acceptor never produces such a session.
    pub fn non_ess_from_seal_key(seal_key: &[u8]) -> Result<Self, NtlmError> {
        let mut ks = [0u8; 12];
        crypto::rc4k(seal_key, &mut ks)?;
        let mut keystream = [0u8; 8];
        keystream.copy_from_slice(&ks[4..]);
        ks.zeroize();
        Ok(NtlmSession {
            keys: Keys::NonEss { keystream },
        })
    }

    /// The ExportedSessionKey and negotiated flags this session was made from, which
    /// [`from_exported_session_key`](Self::from_exported_session_key) turns back into the same
    /// session (on another gateway of a pool). Key material: seal it before it leaves the process.
    /// `None` for a non-ESS session, which the acceptor never makes.
    pub fn export(&self) -> Option<(Key16, u32)> {
        match &self.keys {
            Keys::Ess {
                exported_session_key,
                negotiate_flags,
                ..
            } => Some((Key16::from_bytes(*exported_session_key), *negotiate_flags)),
            Keys::NonEss { .. } => None,
        }
    }

    /// Whether this session uses extended session security.
    pub fn is_ess(&self) -> bool {
        matches!(self.keys, Keys::Ess { .. })
    }

    fn sign_dir(&self, direction: Direction, buffer: &[u8]) -> [u8; 16] {
        match &self.keys {
            Keys::Ess { client, server, .. } => match direction {
                Direction::ClientToServer => client.sign(buffer),
                Direction::ServerToClient => server.sign(buffer),
            },
            Keys::NonEss { keystream } => {
                crypto::non_ess_signature(keystream, SIPAE_SEQ_NUM, buffer)
            }
        }
    }

    fn verify_dir(
        &self,
        direction: Direction,
        buffer: &[u8],
        signature: &[u8],
    ) -> Result<(), NtlmError> {
        let expected = self.sign_dir(direction, buffer);
        // `ct_eq` on slices of different lengths is false without looking at the contents.
        if bool::from(expected.as_slice().ct_eq(signature)) {
            Ok(())
        } else {
            Err(NtlmError::BadSignature)
        }
    }

    /// Signature of a message the server sends (server-to-client keys, SeqNum 100), for
    /// `rspauth=`.
    pub fn sign_as_server(&self, buffer: &[u8]) -> [u8; 16] {
        self.sign_dir(Direction::ServerToClient, buffer)
    }

    /// Verifies the 16-byte signature of a client message (`response=`), in constant time.
    pub fn verify_from_client(&self, buffer: &[u8], signature: &[u8]) -> Result<(), NtlmError> {
        self.verify_dir(Direction::ClientToServer, buffer, signature)
    }

    /// [`verify_from_client`](Self::verify_from_client) with the signature in hex (either case).
    pub fn verify_from_client_hex(
        &self,
        buffer: &[u8],
        signature_hex: &str,
    ) -> Result<(), NtlmError> {
        self.verify_from_client(buffer, &signature_from_hex(signature_hex)?)
    }

    /// Signature of a message the client sends (client-to-server keys, SeqNum 100).
    pub fn sign_as_client(&self, buffer: &[u8]) -> [u8; 16] {
        self.sign_dir(Direction::ClientToServer, buffer)
    }

    /// Verifies the 16-byte signature of a server message (`rspauth=`), in constant time.
    pub fn verify_from_server(&self, buffer: &[u8], signature: &[u8]) -> Result<(), NtlmError> {
        self.verify_dir(Direction::ServerToClient, buffer, signature)
    }
}

// Sessions live in the SA table for hours: keep them within the ~120-byte budget (84 bytes of
// signing state, 20 to move the session to another gateway).
const _: () = assert!(NtlmSession::SIZE <= 120);

impl Drop for NtlmSession {
    fn drop(&mut self) {
        match &mut self.keys {
            Keys::NonEss { keystream } => keystream.zeroize(),
            Keys::Ess {
                exported_session_key,
                ..
            } => exported_session_key.zeroize(),
        }
    }
}

impl fmt::Debug for NtlmSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.keys {
            Keys::Ess { .. } => "ess",
            Keys::NonEss { .. } => "non-ess",
        };
        f.debug_struct("NtlmSession")
            .field("security", &kind)
            .finish_non_exhaustive()
    }
}

/// Upper-case hex of a signature (what OCS 2007 R2 and pidgin-sipe send; peers accept either case).
pub fn signature_to_hex(signature: &[u8; 16]) -> String {
    sagw_hex::encode_upper(signature)
}

/// Parses a 32-digit hex signature, either case. Anything else is [`NtlmError::BadSignature`].
///
/// Every signed message's `response` comes through here; `sagw_hex` takes exactly 32 digits, so
/// a `0x` prefix is refused.
pub fn signature_from_hex(signature_hex: &str) -> Result<[u8; 16], NtlmError> {
    sagw_hex::decode_to_array(signature_hex).map_err(|_| NtlmError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_case() {
        let sig = [
            0x01, 0x00, 0x00, 0x00, 0xe6, 0x15, 0x43, 0x8a, 0x91, 0x76, 0x61, 0xbe, 0x64, 0, 0, 0,
        ];
        let upper = signature_to_hex(&sig);
        assert_eq!(upper, "01000000E615438A917661BE64000000");
        assert_eq!(signature_from_hex(&upper).unwrap(), sig);
        assert_eq!(signature_from_hex(&upper.to_lowercase()).unwrap(), sig);
        assert_eq!(
            signature_from_hex("01000000E615438A917661BE6400000"),
            Err(NtlmError::BadSignature)
        );
        assert_eq!(
            signature_from_hex("01000000E615438A917661BE6400000G"),
            Err(NtlmError::BadSignature)
        );
        assert_eq!(
            signature_from_hex("é1000000E615438A917661BE6400000"),
            Err(NtlmError::BadSignature)
        );
        // Whole bytes of the wrong count, and a sign where a digit belongs.
        for wrong in [
            "",
            "01000000E615438A917661BE640000",
            "01000000E615438A917661BE6400000000",
            "+1000000E615438A917661BE64000000",
        ] {
            assert_eq!(signature_from_hex(wrong), Err(NtlmError::BadSignature));
        }
    }

    #[test]
    fn hex_parse_accepts_what_the_hex_crate_accepts() {
        let base = *b"01000000e615438A917661be64000000";
        // What the `hex` crate's `decode_to_slice` into 16 bytes accepted, written out
        // independently: 32 ASCII hex digits of either case, nothing else (no sign, no `0x`).
        let crate_decode = |s: &[u8]| {
            let digits: &[u8; 32] = s.try_into().ok()?;
            let mut out = [0u8; 16];
            for (o, pair) in out.iter_mut().zip(digits.chunks(2)) {
                let pair = std::str::from_utf8(pair).ok()?;
                if !pair.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return None;
                }
                *o = u8::from_str_radix(pair, 16).ok()?;
            }
            Some(out)
        };
        // Every byte value at every position of a valid signature.
        for at in 0..base.len() {
            for b in 0..=255u8 {
                let mut d = base;
                d[at] = b;
                let Ok(text) = std::str::from_utf8(&d) else {
                    continue;
                };
                assert_eq!(signature_from_hex(text).ok(), crate_decode(&d), "{text}");
            }
        }
        for len in 0..40 {
            let text = "a".repeat(len);
            assert_eq!(
                signature_from_hex(&text).ok(),
                crate_decode(text.as_bytes())
            );
        }
        // A `0x` prefix before 30 and 32 digits.
        for text in [
            "0x000000e615438A917661be64000000",
            "0X01000000e615438A917661be64000000",
            "0x01000000e615438A917661be64000000",
        ] {
            assert_eq!(signature_from_hex(text), Err(NtlmError::BadSignature));
            assert_eq!(crate_decode(text.as_bytes()), None);
        }
    }

    #[test]
    fn session_is_small_and_shareable() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<NtlmSession>();
        println!("size_of::<NtlmSession>() = {}", NtlmSession::SIZE);
    }

    #[test]
    fn debug_does_not_leak_keys() {
        let s = NtlmSession::from_exported_session_key(&Key16::from_bytes([7; 16]), 0x6298_8255)
            .unwrap();
        assert_eq!(format!("{s:?}"), "NtlmSession { security: \"ess\", .. }");
    }
}
