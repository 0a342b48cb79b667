//! NTLMv2 client side of connectionless NTLM ([MS-NLMP] 3.1.5.2): builds an
//! AUTHENTICATE_MESSAGE from a CHALLENGE_MESSAGE, the way pidgin-sipe and Office Communicator do.
//!
//! Written independently of the acceptor (own CHALLENGE parser, own textbook HMAC-MD5 on the
//! `md-5` crate, own message layout) so that round trips between the two are a real check;
//! only the final session-key schedule ([`NtlmSession::from_exported_session_key`]) is shared,
//! and that is pinned by the published vectors. Every random input is passed in.

use std::time::SystemTime;

use md5::{Digest, Md5};
use rc4::{KeyInit, Rc4, StreamCipher};
use zeroize::Zeroize;

use crate::crypto::{Key16, NtHash};
use crate::flags::*;
use crate::time::filetime_from_system_time;
use crate::{NtlmError, NtlmSession};

/// Flags pidgin-sipe requires in a CHALLENGE_MESSAGE (it refuses the challenge otherwise).
pub const REQUIRED_CHALLENGE_FLAGS: u32 = NEGOTIATE_UNICODE
    | NEGOTIATE_NTLM
    | NEGOTIATE_ALWAYS_SIGN
    | NEGOTIATE_EXTENDED_SESSIONSECURITY
    | NEGOTIATE_TARGET_INFO
    | NEGOTIATE_SIGN
    | NEGOTIATE_DATAGRAM
    | NEGOTIATE_IDENTIFY
    | NEGOTIATE_KEY_EXCH;

/// Flags the client keeps from the challenge (plus REQUEST_TARGET; 56 is dropped when 128 is
/// kept). Against `0xE29882F3` this gives `0x62988255`, as a real Communicator 2007 R2 sent.
pub const ACCEPTED_CHALLENGE_FLAGS: u32 =
    REQUIRED_CHALLENGE_FLAGS | NEGOTIATE_VERSION | NEGOTIATE_128 | NEGOTIATE_56 | REQUEST_TARGET;

/// The user's credentials.
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a> {
    /// User name as typed (NTOWFv2 upper-cases it).
    pub user: &'a str,
    /// The user's domain.
    pub domain: &'a str,
    /// `MD4(UTF-16LE(password))`.
    pub nt_hash: &'a NtHash,
}

/// Whether to send a MIC (MsvAvFlags bit 0x2 and a 16-byte MIC field at offset 72).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MicPolicy {
    /// No MIC, payload right after the Version field (pidgin-sipe, Communicator 2007 R2).
    Omit,
    /// MIC = `HMAC_MD5(ExportedSessionKey, CHALLENGE || AUTHENTICATE with MIC zeroed)`.
    Include,
}

/// The per-handshake client inputs (random values come from the caller).
#[derive(Clone)]
pub struct ClientInputs<'a> {
    /// Workstation name sent in the AUTHENTICATE.
    pub workstation: &'a str,
    /// 8 random bytes.
    pub client_challenge: [u8; 8],
    /// Client time, used when the challenge carries no MsvAvTimestamp.
    pub timestamp: SystemTime,
    /// 16 random bytes: the ExportedSessionKey when KEY_EXCH is negotiated.
    pub random_session_key: [u8; 16],
    /// VERSION field (debug information), e.g. `[5, 2, 0xCE, 0x0E, 0, 0, 0, 0x0F]`.
    pub version: [u8; 8],
    /// MIC or not.
    pub mic: MicPolicy,
}

/// The client's result: the message to send and its session.
#[derive(Debug)]
pub struct ClientAuthenticate {
    /// AUTHENTICATE_MESSAGE bytes (base64 into `gssapi-data`).
    pub message: Vec<u8>,
    /// The NegotiateFlags sent.
    pub flags: u32,
    /// Session keys (client side: use `sign_as_client` / `verify_from_server`).
    pub session: NtlmSession,
    /// ExportedSessionKey.
    pub exported_session_key: Key16,
}

fn hmac_md5(key: &[u8; 16], parts: &[&[u8]]) -> [u8; 16] {
    // Textbook RFC 2104 over the md-5 crate; deliberately not the acceptor's cached HMAC.
    let mut ipad = [0x36u8; 64];
    let mut opad = [0x5cu8; 64];
    for (i, k) in key.iter().enumerate() {
        ipad[i] ^= k;
        opad[i] ^= k;
    }
    let mut inner = Md5::new();
    inner.update(ipad);
    for p in parts {
        inner.update(p);
    }
    let inner_hash = inner.finalize();
    let mut outer = Md5::new();
    outer.update(opad);
    outer.update(inner_hash);
    ipad.zeroize();
    opad.zeroize();
    outer.finalize().into()
}

fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

struct ParsedChallenge<'a> {
    flags: u32,
    server_challenge: [u8; 8],
    target_info: &'a [u8],
    timestamp: Option<[u8; 8]>,
}

fn read_u16(b: &[u8], at: usize) -> Result<u16, NtlmError> {
    b.get(at..at + 2)
        .and_then(|s| s.try_into().ok())
        .map(u16::from_le_bytes)
        .ok_or(NtlmError::Malformed("truncated CHALLENGE_MESSAGE"))
}

fn read_u32(b: &[u8], at: usize) -> Result<u32, NtlmError> {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or(NtlmError::Malformed("truncated CHALLENGE_MESSAGE"))
}

fn parse_challenge(msg: &[u8]) -> Result<ParsedChallenge<'_>, NtlmError> {
    if msg.get(..8) != Some(b"NTLMSSP\0".as_slice()) || read_u32(msg, 8)? != 2 {
        return Err(NtlmError::Malformed("not a CHALLENGE_MESSAGE"));
    }
    let flags = read_u32(msg, 20)?;
    let server_challenge: [u8; 8] = msg
        .get(24..32)
        .and_then(|s| s.try_into().ok())
        .ok_or(NtlmError::Malformed("truncated CHALLENGE_MESSAGE"))?;
    let ti_len = usize::from(read_u16(msg, 40)?);
    let ti_off = read_u32(msg, 44)? as usize;
    let target_info =
        msg.get(ti_off..ti_off.saturating_add(ti_len))
            .ok_or(NtlmError::Malformed(
                "TargetInfo outside the CHALLENGE_MESSAGE",
            ))?;
    let mut timestamp = None;
    let mut at = 0;
    loop {
        let id = read_u16(target_info, at)?;
        let len = usize::from(read_u16(target_info, at + 2)?);
        let value = target_info
            .get(at + 4..at + 4 + len)
            .ok_or(NtlmError::Malformed("TargetInfo AV pair truncated"))?;
        match id {
            0 => break,
            7 => timestamp = value.try_into().ok(),
            _ => {}
        }
        at += 4 + len;
    }
    Ok(ParsedChallenge {
        flags,
        server_challenge,
        target_info,
        timestamp,
    })
}

/// The client's AV pairs: the server's TargetInfo, with MsvAvFlags bit 0x2 set when a MIC is sent.
fn client_av_pairs(target_info: &[u8], mic: MicPolicy) -> Vec<u8> {
    let mut out = Vec::with_capacity(target_info.len() + 8);
    let mut at = 0;
    let mut flags_written = false;
    while let (Ok(id), Ok(len)) = (read_u16(target_info, at), read_u16(target_info, at + 2)) {
        let len = usize::from(len);
        let Some(value) = target_info.get(at + 4..at + 4 + len) else {
            break;
        };
        if id == 0 {
            break;
        }
        if id == 6 && mic == MicPolicy::Include {
            let v = value.try_into().map(u32::from_le_bytes).unwrap_or(0) | 0x2;
            out.extend_from_slice(&6u16.to_le_bytes());
            out.extend_from_slice(&4u16.to_le_bytes());
            out.extend_from_slice(&v.to_le_bytes());
            flags_written = true;
        } else {
            out.extend_from_slice(&target_info[at..at + 4 + len]);
        }
        at += 4 + len;
    }
    if mic == MicPolicy::Include && !flags_written {
        out.extend_from_slice(&6u16.to_le_bytes());
        out.extend_from_slice(&4u16.to_le_bytes());
        out.extend_from_slice(&2u32.to_le_bytes());
    }
    out.extend_from_slice(&[0, 0, 0, 0]); // MsvAvEOL
    out
}

/// Builds the AUTHENTICATE_MESSAGE answering `challenge`.
pub fn authenticate(
    challenge: &[u8],
    credentials: &Credentials<'_>,
    inputs: &ClientInputs<'_>,
) -> Result<ClientAuthenticate, NtlmError> {
    let ch = parse_challenge(challenge)?;
    let missing = REQUIRED_CHALLENGE_FLAGS & !ch.flags;
    if missing != 0 {
        return Err(NtlmError::MissingFlags(missing));
    }
    let mut flags = (ch.flags & ACCEPTED_CHALLENGE_FLAGS) | REQUEST_TARGET;
    if flags & NEGOTIATE_128 != 0 {
        flags &= !NEGOTIATE_56;
    }

    // NTOWFv2 = HMAC_MD5(NT hash, UNICODE(Uppercase(User) || UserDom)); upper-casing per character.
    let user_upper: String = credentials
        .user
        .chars()
        .map(|c| {
            let mut u = c.to_uppercase();
            match (u.next(), u.next()) {
                (Some(x), None) => x,
                _ => c,
            }
        })
        .collect();
    let mut id = utf16(&user_upper);
    id.extend_from_slice(&utf16(credentials.domain));
    let ntowf = hmac_md5(credentials.nt_hash.as_bytes(), &[&id]);

    let time = ch
        .timestamp
        .unwrap_or_else(|| filetime_from_system_time(inputs.timestamp).to_le_bytes());
    let mut temp = Vec::with_capacity(28 + ch.target_info.len() + 12);
    temp.extend_from_slice(&[1, 1, 0, 0, 0, 0, 0, 0]);
    temp.extend_from_slice(&time);
    temp.extend_from_slice(&inputs.client_challenge);
    temp.extend_from_slice(&[0; 4]);
    temp.extend_from_slice(&client_av_pairs(ch.target_info, inputs.mic));
    temp.extend_from_slice(&[0; 4]);

    let nt_proof = hmac_md5(&ntowf, &[&ch.server_challenge, &temp]);
    let mut nt_response = nt_proof.to_vec();
    nt_response.extend_from_slice(&temp);
    let mut lm_response =
        hmac_md5(&ntowf, &[&ch.server_challenge, &inputs.client_challenge]).to_vec();
    lm_response.extend_from_slice(&inputs.client_challenge);
    let key_exchange_key = hmac_md5(&ntowf, &[&nt_proof]);

    let (exported, encrypted) =
        if flags & NEGOTIATE_KEY_EXCH != 0 && flags & (NEGOTIATE_SIGN | NEGOTIATE_SEAL) != 0 {
            let mut enc = inputs.random_session_key;
            Rc4::new_from_slice(&key_exchange_key)
                .map_err(|_| NtlmError::InvalidKeyLength)?
                .apply_keystream(&mut enc);
            (inputs.random_session_key, enc.to_vec())
        } else {
            (key_exchange_key, Vec::new())
        };

    let domain = utf16(credentials.domain);
    let user = utf16(credentials.user);
    let workstation = utf16(inputs.workstation);
    let longest = [&domain, &user, &workstation, &nt_response]
        .iter()
        .map(|v| v.len())
        .max();
    if longest.is_some_and(|l| l > usize::from(u16::MAX)) {
        return Err(NtlmError::Malformed(
            "AUTHENTICATE field longer than 65535 bytes",
        ));
    }
    let header_len = match inputs.mic {
        MicPolicy::Omit => 72,
        MicPolicy::Include => 88,
    };
    let mut msg = Vec::with_capacity(header_len + 512);
    msg.extend_from_slice(b"NTLMSSP\0");
    msg.extend_from_slice(&3u32.to_le_bytes());
    // Payload order as Communicator/pidgin-sipe: domain, user, workstation, LM, NT, session key.
    let mut offset = header_len;
    let mut field = |len: usize| {
        let f = [(len as u16).to_le_bytes(), (len as u16).to_le_bytes()].concat();
        let o = (offset as u32).to_le_bytes();
        offset += len;
        [f.as_slice(), &o].concat()
    };
    let domain_f = field(domain.len());
    let user_f = field(user.len());
    let ws_f = field(workstation.len());
    let lm_f = field(lm_response.len());
    let nt_f = field(nt_response.len());
    let key_f = field(encrypted.len());
    for f in [&lm_f, &nt_f, &domain_f, &user_f, &ws_f, &key_f] {
        msg.extend_from_slice(f);
    }
    msg.extend_from_slice(&flags.to_le_bytes());
    msg.extend_from_slice(if flags & NEGOTIATE_VERSION != 0 {
        &inputs.version
    } else {
        &[0; 8]
    });
    if inputs.mic == MicPolicy::Include {
        msg.extend_from_slice(&[0; 16]);
    }
    for part in [
        &domain,
        &user,
        &workstation,
        &lm_response,
        &nt_response,
        &encrypted,
    ] {
        msg.extend_from_slice(part);
    }

    if inputs.mic == MicPolicy::Include {
        let mic = hmac_md5(&exported, &[challenge, &msg]);
        msg[72..88].copy_from_slice(&mic);
    }

    let exported_session_key = Key16::from_bytes(exported);
    let session = NtlmSession::from_exported_session_key(&exported_session_key, flags)?;
    Ok(ClientAuthenticate {
        message: msg,
        flags,
        session,
        exported_session_key,
    })
}
