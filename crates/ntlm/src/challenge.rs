use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use subtle::ConstantTimeEq;

use crate::authenticate::{MIC_RANGE, NtResponse, SIGNATURE};
use crate::crypto::{self, HmacMd5Key, Key16, NtHash};
use crate::time::{filetime_from_system_time, ticks_diff_secs, ticks_since_1601};
use crate::{AuthenticateMessage, LegacyAuth, NtlmError, NtlmSession, flags};

/// The server's names, sent as AV pairs in the CHALLENGE_MESSAGE TargetInfo (the client copies
/// them into its NTLMv2 response, so they are covered by NTProofStr).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerIdentity {
    /// NetBIOS domain name (MsvAvNbDomainName), e.g. `COSMO`.
    pub netbios_domain: String,
    /// NetBIOS computer name (MsvAvNbComputerName), e.g. `COSMO-OCS-R2`.
    pub netbios_computer: String,
    /// DNS domain (MsvAvDnsDomainName); omitted when empty.
    pub dns_domain: String,
    /// DNS name of the server (MsvAvDnsComputerName); omitted when empty.
    pub dns_computer: String,
    /// DNS forest name (MsvAvDnsTreeName); omitted when empty.
    pub dns_tree: String,
}

/// Acceptor configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptorConfig {
    /// Names put in the CHALLENGE TargetInfo.
    pub identity: ServerIdentity,
    /// Largest accepted distance between the client timestamp and `now` (MS-SIP: 15 min for NTLM).
    pub max_clock_skew: Duration,
    /// Put an MsvAvTimestamp in the TargetInfo (Lync 2010+ do; OCS 2007 R2 did not). Modern
    /// Windows clients then add a MIC; pidgin-sipe does not.
    pub include_timestamp: bool,
    /// VERSION field of the CHALLENGE (debug information only).
    pub version: [u8; 8],
    /// The name clients authenticate to (the `targetname` of the SIP challenge, the gateway's
    /// FQDN). An AUTHENTICATE whose MsvAvTargetName names a service other than `sip/<name>` or
    /// `<name>` was made for someone else and relayed here: refused ([`NtlmError::WrongTarget`]).
    /// Empty: not checked.
    pub target_name: String,
}

impl AcceptorConfig {
    /// Windows Server 2008 R2 SP1 (6.1.7601), NTLMSSP revision 15, as sent by Lync 2013 servers.
    pub const DEFAULT_VERSION: [u8; 8] = [6, 1, 0xB1, 0x1D, 0, 0, 0, 0x0F];
    /// Default maximum clock skew: 15 minutes.
    pub const DEFAULT_MAX_CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);

    /// Defaults: 15 min skew, no timestamp (like OCS 2007 R2), version 6.1.7601 rev 15.
    pub fn new(identity: ServerIdentity) -> Self {
        AcceptorConfig {
            target_name: identity.dns_computer.clone(),
            identity,
            max_clock_skew: Self::DEFAULT_MAX_CLOCK_SKEW,
            include_timestamp: false,
            version: Self::DEFAULT_VERSION,
        }
    }
}

/// AV pair ids used in the TargetInfo.
const AV_EOL: u16 = 0;
const AV_NB_COMPUTER: u16 = 1;
const AV_NB_DOMAIN: u16 = 2;
const AV_DNS_COMPUTER: u16 = 3;
const AV_DNS_DOMAIN: u16 = 4;
const AV_DNS_TREE: u16 = 5;
const AV_TIMESTAMP: u16 = 7;

/// DNS names are at most 253 characters; longer configured names are cut to this many UTF-16
/// units by [`NtlmAcceptor::new`] (and refused by [`NtlmAcceptor::try_new`]).
const MAX_NAME_UNITS: usize = 255;

const CHALLENGE_HEADER_LEN: usize = 56;
const SERVER_CHALLENGE_AT: usize = 24;

/// The constant bytes of every CHALLENGE_MESSAGE this acceptor sends; only the server challenge
/// and the timestamp change per handshake.
struct ChallengeTemplate {
    bytes: Box<[u8]>,
    /// `bytes` in standard base64 (with padding), as the `gssapi-data` of a 401 carries it.
    b64: Box<str>,
    timestamp_at: Option<usize>,
    max_clock_skew: Duration,
    /// `max_clock_skew` in FILETIME ticks (100 ns).
    max_skew_ticks: i128,
    /// The MsvAvTargetName values taken (lower-case): `sip/<target_name>` and `<target_name>`;
    /// empty when not checked.
    targets: Box<[String]>,
}

fn utf16le(s: &str) -> Vec<u8> {
    s.encode_utf16()
        .take(MAX_NAME_UNITS)
        .flat_map(u16::to_le_bytes)
        .collect()
}

fn push_av(out: &mut Vec<u8>, id: u16, value: &[u8]) {
    // Values are capped at MAX_NAME_UNITS UTF-16 units (or 8 bytes), so the length fits a u16.
    let len = u16::try_from(value.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(value);
}

impl ChallengeTemplate {
    fn build(config: &AcceptorConfig) -> Self {
        let id = &config.identity;
        let mut target_info = Vec::with_capacity(256);
        push_av(&mut target_info, AV_NB_DOMAIN, &utf16le(&id.netbios_domain));
        push_av(
            &mut target_info,
            AV_NB_COMPUTER,
            &utf16le(&id.netbios_computer),
        );
        for (av, name) in [
            (AV_DNS_DOMAIN, &id.dns_domain),
            (AV_DNS_COMPUTER, &id.dns_computer),
            (AV_DNS_TREE, &id.dns_tree),
        ] {
            if !name.is_empty() {
                push_av(&mut target_info, av, &utf16le(name));
            }
        }
        let timestamp_at = if config.include_timestamp {
            push_av(&mut target_info, AV_TIMESTAMP, &[0; 8]);
            Some(CHALLENGE_HEADER_LEN + target_info.len() - 8)
        } else {
            None
        };
        push_av(&mut target_info, AV_EOL, &[]);
        // At most 5 names of 510 bytes plus 24 bytes of framing: always fits a u16.
        let ti_len = u16::try_from(target_info.len()).unwrap_or(u16::MAX);

        let mut m = Vec::with_capacity(CHALLENGE_HEADER_LEN + target_info.len());
        m.extend_from_slice(SIGNATURE);
        m.extend_from_slice(&2u32.to_le_bytes());
        // Empty TargetName (REQUEST_TARGET is not set), offset pointing at the payload.
        m.extend_from_slice(&0u16.to_le_bytes());
        m.extend_from_slice(&0u16.to_le_bytes());
        m.extend_from_slice(&(CHALLENGE_HEADER_LEN as u32).to_le_bytes());
        m.extend_from_slice(&flags::CHALLENGE_FLAGS.to_le_bytes());
        m.extend_from_slice(&[0; 8]); // ServerChallenge, patched per handshake
        m.extend_from_slice(&[0; 8]); // Reserved
        m.extend_from_slice(&ti_len.to_le_bytes());
        m.extend_from_slice(&ti_len.to_le_bytes());
        m.extend_from_slice(&(CHALLENGE_HEADER_LEN as u32).to_le_bytes());
        m.extend_from_slice(&config.version);
        m.extend_from_slice(&target_info);
        ChallengeTemplate {
            b64: B64.encode(&m).into_boxed_str(),
            bytes: m.into_boxed_slice(),
            timestamp_at,
            max_clock_skew: config.max_clock_skew,
            max_skew_ticks: (config.max_clock_skew.as_nanos() / 100) as i128,
            targets: if config.target_name.is_empty() {
                Box::default()
            } else {
                let name = config.target_name.to_lowercase();
                Box::new([format!("sip/{name}"), name])
            },
        }
    }

    /// [`write`](Self::write)'s bytes as the template's constant runs and the two fields, in
    /// order, for hashing without a copy (`timestamp` is its little-endian bytes).
    fn parts<'a>(&'a self, server_challenge: &'a [u8; 8], timestamp: &'a [u8; 8]) -> [&'a [u8]; 5] {
        let b = &self.bytes[..];
        let head = b.get(..SERVER_CHALLENGE_AT).unwrap_or(b);
        let rest = b.get(SERVER_CHALLENGE_AT + 8..).unwrap_or(&[]);
        match self.timestamp_at {
            Some(at) => [
                head,
                server_challenge,
                b.get(SERVER_CHALLENGE_AT + 8..at).unwrap_or(&[]),
                timestamp,
                b.get(at + 8..).unwrap_or(&[]),
            ],
            None => [head, server_challenge, rest, &[], &[]],
        }
    }

    fn write(&self, server_challenge: &[u8; 8], timestamp: u64, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&self.bytes);
        if let Some(dst) = out.get_mut(start + SERVER_CHALLENGE_AT..start + SERVER_CHALLENGE_AT + 8)
        {
            dst.copy_from_slice(server_challenge);
        }
        if let Some(at) = self.timestamp_at
            && let Some(dst) = out.get_mut(start + at..start + at + 8)
        {
            dst.copy_from_slice(&timestamp.to_le_bytes());
        }
    }

    /// Appends the base64 of [`write`](Self::write)'s bytes to `out`: the constant encoding, with
    /// only the 3-byte groups the server challenge and the timestamp fall in encoded again.
    fn write_base64(&self, server_challenge: &[u8; 8], timestamp: u64, out: &mut String) {
        let timestamp = timestamp.to_le_bytes();
        // In message order, and never in one group: the timestamp is in the TargetInfo, which
        // starts after the 56-byte header that holds the server challenge.
        let fields = [
            Some((SERVER_CHALLENGE_AT, server_challenge)),
            self.timestamp_at.map(|at| (at, &timestamp)),
        ];
        let mut done = 0; // base64 characters of `b64` written so far
        for (at, value) in fields.into_iter().flatten() {
            // The whole groups around the field (the last one may be the message's short tail).
            let first = at / 3 * 3;
            let end = (at + value.len())
                .div_ceil(3)
                .saturating_mul(3)
                .min(self.bytes.len());
            let (Some(constant), Some(chars_before)) = (
                self.bytes.get(first..end),
                self.b64.get(done..first / 3 * 4),
            ) else {
                continue;
            };
            // 8 bytes span at most 4 groups.
            let mut group_bytes = [0u8; 12];
            let mut group_chars = [0u8; 16];
            let Some(window) = group_bytes.get_mut(..constant.len()) else {
                continue;
            };
            window.copy_from_slice(constant);
            if let Some(dst) = window.get_mut(at - first..at - first + value.len()) {
                dst.copy_from_slice(value);
            }
            let Ok(n) = B64.encode_slice(&*window, &mut group_chars) else {
                continue;
            };
            out.push_str(chars_before);
            // Only base64 characters were written.
            out.push_str(std::str::from_utf8(&group_chars[..n]).unwrap_or(""));
            done = first / 3 * 4 + n;
        }
        out.push_str(self.b64.get(done..).unwrap_or(""));
    }
}

/// Issues CHALLENGE_MESSAGEs. Immutable and shareable between threads (`Send + Sync`); the
/// constant part of the challenge is built once.
#[derive(Clone)]
pub struct NtlmAcceptor {
    template: Arc<ChallengeTemplate>,
}

impl fmt::Debug for NtlmAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NtlmAcceptor")
            .field("challenge_len", &self.template.bytes.len())
            .field("timestamp", &self.template.timestamp_at.is_some())
            .field("max_clock_skew", &self.template.max_clock_skew)
            .finish()
    }
}

impl NtlmAcceptor {
    /// Builds the acceptor. Names longer than 255 UTF-16 units are truncated (see
    /// [`try_new`](Self::try_new) to refuse them instead).
    pub fn new(config: AcceptorConfig) -> Self {
        NtlmAcceptor {
            template: Arc::new(ChallengeTemplate::build(&config)),
        }
    }

    /// Like [`new`](Self::new) but refuses names longer than 255 UTF-16 units.
    pub fn try_new(config: AcceptorConfig) -> Result<Self, NtlmError> {
        let id = &config.identity;
        for name in [
            &id.netbios_domain,
            &id.netbios_computer,
            &id.dns_domain,
            &id.dns_computer,
            &id.dns_tree,
        ] {
            if name.encode_utf16().count() > MAX_NAME_UNITS {
                return Err(NtlmError::Config(
                    "server name longer than 255 UTF-16 units",
                ));
            }
        }
        Ok(Self::new(config))
    }

    /// Leg 2: a CHALLENGE_MESSAGE for `server_challenge` (8 bytes no one can predict, never
    /// reused: from a CSPRNG, or a keyed MAC over something unique). `timestamp` is only used for
    /// the MsvAvTimestamp when configured (the issue time, or anything within the clock skew of it
    /// that the caller can give again at the final leg).
    ///
    /// Building it is cheap (a pointer copy): a stateless server calls this again with the same
    /// two values at the final leg instead of keeping the result.
    pub fn challenge(&self, server_challenge: [u8; 8], timestamp: SystemTime) -> PendingHandshake {
        PendingHandshake {
            template: Arc::clone(&self.template),
            server_challenge,
            timestamp: filetime_from_system_time(timestamp),
        }
    }
}

/// A CHALLENGE as issued, which the AUTHENTICATE is checked against: the server challenge, the
/// challenge timestamp and a shared pointer to the constant challenge bytes (needed to check a
/// MIC). `Send + Sync`, 24 bytes on 64-bit targets. A server may keep it between the two legs, or
/// rebuild it at the final leg from the same server challenge and timestamp
/// ([`NtlmAcceptor::challenge`]).
///
/// One AUTHENTICATE per challenge: this type does not remember what it accepted, so the caller
/// enforces that (remove a kept handshake before calling [`accept`](Self::accept), or refuse a
/// second session for the same challenge).
#[derive(Clone)]
pub struct PendingHandshake {
    template: Arc<ChallengeTemplate>,
    server_challenge: [u8; 8],
    timestamp: u64,
}

impl fmt::Debug for PendingHandshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingHandshake")
            .field("server_challenge", &self.server_challenge)
            .field("timestamp", &self.timestamp)
            .finish_non_exhaustive()
    }
}

/// A successful [`PendingHandshake::accept_detailed`].
#[derive(Debug)]
pub struct Accepted {
    /// The session keys.
    pub session: NtlmSession,
    /// The ExportedSessionKey, for diagnostics, tests and protocols deriving further keys.
    pub exported_session_key: Key16,
}

/// What [`PendingHandshake::precheck`] found in an AUTHENTICATE_MESSAGE that passed the checks
/// needing no key: what a domain controller needs to verify the NTLMv2 response
/// (`wbcAuthenticateUserEx` / NETLOGON: the server challenge and the NT response). Public data:
/// all of it travelled in clear, but together it is an offline-crackable record of the user's
/// password, so `Debug` shows none of it.
#[derive(Clone, Copy)]
pub struct Prechecked<'a> {
    server_challenge: [u8; 8],
    nt_proof_str: [u8; 16],
    blob: &'a [u8],
}

impl fmt::Debug for Prechecked<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prechecked")
            .field("blob_len", &self.blob.len())
            .finish_non_exhaustive()
    }
}

impl Prechecked<'_> {
    /// The server challenge the response answers.
    pub fn server_challenge(&self) -> [u8; 8] {
        self.server_challenge
    }

    /// The NTLMv2 response as sent: NTProofStr (16 bytes) then the client challenge blob.
    pub fn nt_response(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.blob.len());
        out.extend_from_slice(&self.nt_proof_str);
        out.extend_from_slice(self.blob);
        out
    }
}

impl PendingHandshake {
    /// The CHALLENGE_MESSAGE bytes (the caller base64-encodes them into `gssapi-data`).
    pub fn challenge_message(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.template.bytes.len());
        self.write_challenge_message(&mut out);
        out
    }

    /// Appends the CHALLENGE_MESSAGE bytes to `out`.
    pub fn write_challenge_message(&self, out: &mut Vec<u8>) {
        self.template
            .write(&self.server_challenge, self.timestamp, out);
    }

    /// Appends the CHALLENGE_MESSAGE in standard base64 (padded) to `out`, as
    /// [`challenge_message`](Self::challenge_message) then a base64 encoding would, without
    /// encoding the constant part again: what the `gssapi-data` of a 401 carries.
    pub fn write_challenge_base64(&self, out: &mut String) {
        self.template
            .write_base64(&self.server_challenge, self.timestamp, out);
    }

    /// The server challenge of this handshake.
    pub fn server_challenge(&self) -> [u8; 8] {
        self.server_challenge
    }

    /// Leg 3: verifies an AUTHENTICATE_MESSAGE with the user's NT hash (looked up by
    /// `authenticate.user()` / `domain()`) and derives the session.
    ///
    /// Checks, in order: NTLMv2 response present (else [`NtlmError::NotNtlmV2`]); UNICODE, SIGN,
    /// ESS and KEY_EXCH negotiated; NTProofStr (constant time); the MIC when the client's
    /// MsvAvFlags has bit 0x2 (constant time, `HMAC_MD5(ExportedSessionKey, CHALLENGE ||
    /// AUTHENTICATE with the MIC zeroed)`); the client timestamp (its MsvAvTimestamp, else the
    /// NTLMv2 blob's) within `max_clock_skew` of `now`.
    ///
    /// For an unknown user, call this with any fixed [`NtHash`] and report the (certain)
    /// failure: answering faster would tell a client which user names exist.
    pub fn accept(
        &self,
        authenticate: &AuthenticateMessage<'_>,
        nt_hash: &NtHash,
        now: SystemTime,
    ) -> Result<NtlmSession, NtlmError> {
        self.accept_detailed(authenticate, nt_hash, now)
            .map(|a| a.session)
    }

    /// [`accept`](Self::accept), also returning the ExportedSessionKey.
    pub fn accept_detailed(
        &self,
        authenticate: &AuthenticateMessage<'_>,
        nt_hash: &NtHash,
        now: SystemTime,
    ) -> Result<Accepted, NtlmError> {
        let pre = self.precheck(authenticate)?;
        let ntowf = crypto::ntowfv2(nt_hash, authenticate.user(), authenticate.domain());
        // NTProofStr and SessionBaseKey are both keyed with NTOWFv2: prepare the key once.
        let ntowf_mac = HmacMd5Key::new(ntowf.as_bytes());
        let proof = ntowf_mac.mac(&[&self.server_challenge, pre.blob]);
        if !bool::from(proof.ct_eq(&pre.nt_proof_str)) {
            return Err(NtlmError::WrongPassword);
        }
        let session_base_key = Key16::from_bytes(ntowf_mac.mac(&[&proof]));
        self.accept_with_session_base_key(authenticate, &session_base_key, now)
    }

    /// The checks of [`accept`](Self::accept) that need no key (NTLMv2 response present,
    /// UNICODE, SIGN, ESS and KEY_EXCH negotiated, a user name, a 16-byte
    /// EncryptedRandomSessionKey), for a server that has the NTLMv2 response verified elsewhere:
    /// by the domain controller (winbind), which answers with the SessionBaseKey ("user session
    /// key"). Returns what that verifier needs: the NT response as sent, the user and domain as
    /// sent (NTOWFv2 covers them, so they must reach the domain unchanged).
    ///
    /// Then call [`accept_with_session_base_key`](Self::accept_with_session_base_key) with the
    /// key the verifier returned.
    pub fn precheck<'a>(
        &self,
        authenticate: &AuthenticateMessage<'a>,
    ) -> Result<Prechecked<'a>, NtlmError> {
        let v2 = match authenticate.nt_response() {
            NtResponse::V2(v2) => v2,
            NtResponse::V1 => return Err(NtlmError::NotNtlmV2(LegacyAuth::NtlmV1)),
            NtResponse::Empty => {
                let lm = authenticate.lm_response();
                let anonymous = authenticate.user().is_empty() && (lm.is_empty() || lm == [0]);
                return Err(NtlmError::NotNtlmV2(if anonymous {
                    LegacyAuth::Anonymous
                } else {
                    LegacyAuth::LmOnly
                }));
            }
        };
        let negotiated = authenticate.flags();
        let missing = flags::REQUIRED_AUTHENTICATE_FLAGS & !negotiated;
        if missing != 0 {
            return Err(NtlmError::MissingFlags(missing));
        }
        if authenticate.user().is_empty() {
            return Err(NtlmError::Malformed("empty user name"));
        }
        if authenticate.encrypted_session_key().len() != 16 {
            return Err(NtlmError::Malformed(
                "EncryptedRandomSessionKey is not 16 bytes",
            ));
        }
        // The service the client meant ([MS-NLMP] 3.2.5.1.2 MsvAvTargetName): NTProofStr binds
        // only the 8-byte server challenge, which an attacker can hand to any service its victim
        // authenticates to. Windows names that service here, inside what NTProofStr covers.
        if let Some(name) = v2.av_target_name
            && !name.is_empty()
            && !self.template.targets.is_empty()
        {
            let units: Vec<u16> = name
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect();
            let name = String::from_utf16(&units)
                .map_err(|_| NtlmError::Malformed("MsvAvTargetName is not UTF-16"))?
                .to_lowercase();
            if !self.template.targets.contains(&name) {
                return Err(NtlmError::WrongTarget);
            }
        }
        Ok(Prechecked {
            server_challenge: self.server_challenge,
            nt_proof_str: v2.nt_proof_str,
            blob: v2.blob,
        })
    }

    /// The rest of [`accept_detailed`](Self::accept_detailed) once the NTLMv2 response is known
    /// to be genuine and `session_base_key` is its SessionBaseKey (from the NT hash here, or from
    /// the domain controller): runs [`precheck`](Self::precheck) again (cheap), derives the
    /// ExportedSessionKey (KEY_EXCH), checks the MIC when the client flagged one, and the client
    /// timestamp, then builds the session exactly as the local path does.
    ///
    /// The caller vouches for the key: this does not (cannot) check that it belongs to the
    /// NTLMv2 response. A wrong key gives a session whose signatures never verify, and a MIC
    /// (when flagged) that does not match.
    pub fn accept_with_session_base_key(
        &self,
        authenticate: &AuthenticateMessage<'_>,
        session_base_key: &Key16,
        now: SystemTime,
    ) -> Result<Accepted, NtlmError> {
        self.precheck(authenticate)?;
        let encrypted_key: [u8; 16] = authenticate
            .encrypted_session_key()
            .try_into()
            .map_err(|_| NtlmError::Malformed("EncryptedRandomSessionKey is not 16 bytes"))?;
        let exported_session_key = crypto::exported_session_key(session_base_key, &encrypted_key);

        if authenticate.has_mic() {
            self.check_mic(authenticate.as_bytes(), &exported_session_key)?;
        }
        self.check_client_time(authenticate, now)?;

        let session =
            NtlmSession::from_exported_session_key(&exported_session_key, authenticate.flags())?;
        Ok(Accepted {
            session,
            exported_session_key,
        })
    }

    /// The client timestamp (its MsvAvTimestamp, else the NTLMv2 blob's) within the configured
    /// clock skew of `now`. Part of [`accept`](Self::accept); public so that a server handing the
    /// response to the domain can refuse a stale one before the round trip.
    pub fn check_client_time(
        &self,
        authenticate: &AuthenticateMessage<'_>,
        now: SystemTime,
    ) -> Result<(), NtlmError> {
        let NtResponse::V2(v2) = authenticate.nt_response() else {
            return Err(NtlmError::NotNtlmV2(LegacyAuth::NtlmV1));
        };
        let client_time = i128::from(v2.av_timestamp.unwrap_or(v2.blob_timestamp));
        let server_time = ticks_since_1601(now);
        if (client_time - server_time).abs() > self.template.max_skew_ticks {
            return Err(NtlmError::ClockSkew {
                offset_secs: ticks_diff_secs(client_time, server_time),
                max_secs: self.template.max_clock_skew.as_secs(),
            });
        }
        Ok(())
    }

    fn check_mic(&self, auth: &[u8], exported_session_key: &Key16) -> Result<(), NtlmError> {
        // `parse` guaranteed the payload starts at or after the MIC field when a MIC is flagged.
        let (Some(head), Some(mic), Some(tail)) = (
            auth.get(..MIC_RANGE.start),
            auth.get(MIC_RANGE),
            auth.get(MIC_RANGE.end..),
        ) else {
            return Err(NtlmError::Malformed(
                "MIC flagged but the message has no MIC field",
            ));
        };
        // The CHALLENGE as sent, hashed from the template's pieces rather than copied out.
        let timestamp = self.timestamp.to_le_bytes();
        let [c0, c1, c2, c3, c4] = self.template.parts(&self.server_challenge, &timestamp);
        let expected = HmacMd5Key::new(exported_session_key.as_bytes())
            .mac(&[c0, c1, c2, c3, c4, head, &[0u8; 16], tail]);
        if bool::from(expected.as_slice().ct_eq(mic)) {
            Ok(())
        } else {
            Err(NtlmError::BadMic)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn challenge_base64_is_the_encoding_of_the_message() {
        // Names of every length modulo 3 move the timestamp and the message's tail across the
        // base64 groups; challenge bytes and timestamps of all kinds land in them.
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for computer in ["GW", "GW1", "GW12", "GW123", "COSMO-OCS-R2"] {
            for dns in ["", "e.com", "ex.com", "exa.com"] {
                for include_timestamp in [false, true] {
                    let mut config = AcceptorConfig::new(ServerIdentity {
                        netbios_domain: "EXAMPLE".into(),
                        netbios_computer: computer.into(),
                        dns_domain: dns.into(),
                        dns_computer: dns.into(),
                        dns_tree: String::new(),
                    });
                    config.include_timestamp = include_timestamp;
                    let acceptor = NtlmAcceptor::new(config);
                    for _ in 0..20 {
                        let challenge = next().to_le_bytes();
                        let at = UNIX_EPOCH + Duration::from_nanos(next() >> 8);
                        let pending = acceptor.challenge(challenge, at);
                        let timestamp = pending.timestamp.to_le_bytes();
                        let parts = acceptor.template.parts(&challenge, &timestamp);
                        assert_eq!(parts.concat(), pending.challenge_message());
                        let mut out = String::from("prefix ");
                        pending.write_challenge_base64(&mut out);
                        assert_eq!(
                            out,
                            format!("prefix {}", B64.encode(pending.challenge_message()))
                        );
                    }
                }
            }
        }
    }
}
