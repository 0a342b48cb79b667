use std::fmt;

use crate::NtlmError;
use crate::flags;

pub(crate) const SIGNATURE: &[u8; 8] = b"NTLMSSP\0";
/// Fixed AUTHENTICATE_MESSAGE header up to and including NegotiateFlags.
const FIXED_HEADER_LEN: usize = 64;
/// Version field, present when the payload leaves room for it.
const VERSION_RANGE: std::ops::Range<usize> = 64..72;
/// The MIC sits right after the Version field ([MS-NLMP] 2.2.1.3).
pub(crate) const MIC_RANGE: std::ops::Range<usize> = 72..88;

/// Fixed part of NTLMv2_CLIENT_CHALLENGE before the AV pairs ([MS-NLMP] 2.2.2.7).
const V2_BLOB_HEADER_LEN: usize = 28;
const NT_PROOF_LEN: usize = 16;

const AV_EOL: u16 = 0;
const AV_FLAGS: u16 = 6;
const AV_TIMESTAMP: u16 = 7;
const AV_TARGET_NAME: u16 = 9;
/// MsvAvFlags bit: the client provides a MIC.
const AV_FLAG_MIC_PRESENT: u32 = 0x2;

/// The NT challenge response of an AUTHENTICATE_MESSAGE, classified.
#[derive(Debug, Clone, Copy)]
pub(crate) enum NtResponse<'a> {
    /// No NT response (anonymous or LM-only).
    Empty,
    /// 24-byte NTLMv1 response.
    V1,
    /// NTLMv2_RESPONSE.
    V2(V2Response<'a>),
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct V2Response<'a> {
    pub(crate) nt_proof_str: [u8; 16],
    /// NTLMv2_CLIENT_CHALLENGE ("temp"), the input of NTProofStr after the server challenge.
    pub(crate) blob: &'a [u8],
    /// TimeStamp of the client challenge structure (FILETIME).
    pub(crate) blob_timestamp: u64,
    /// MsvAvTimestamp among the client's AV pairs (the server's, echoed), if any.
    pub(crate) av_timestamp: Option<u64>,
    /// MsvAvFlags among the client's AV pairs, if any.
    pub(crate) av_flags: Option<u32>,
    /// MsvAvTargetName (the SPN the client meant), UTF-16LE, if any.
    pub(crate) av_target_name: Option<&'a [u8]>,
}

/// A bounds-checked view of an AUTHENTICATE_MESSAGE ([MS-NLMP] 2.2.1.3).
///
/// Parsing checks the structure only (every offset and length, UTF-16LE strings, the NTLMv2
/// client challenge and its AV pairs); policy (NTLMv2 only, required flags) and the
/// cryptographic checks happen in [`PendingHandshake::accept`](crate::PendingHandshake::accept).
#[derive(Clone)]
pub struct AuthenticateMessage<'a> {
    bytes: &'a [u8],
    flags: u32,
    lm_response: &'a [u8],
    nt_response: NtResponse<'a>,
    encrypted_session_key: &'a [u8],
    /// The user, domain and workstation names decoded, one after the other in one allocation.
    names: String,
    /// Where the user name ends in `names` and the domain begins.
    user_end: usize,
    /// Where the domain ends in `names` and the workstation begins.
    domain_end: usize,
    version: Option<[u8; 8]>,
}

impl fmt::Debug for AuthenticateMessage<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Without the responses and the encrypted key: with the server challenge they are an
        // offline-crackable record of the user's password (a NetNTLMv2 hash).
        f.debug_struct("AuthenticateMessage")
            .field("len", &self.bytes.len())
            .field("flags", &self.flags)
            .field("user", &self.user())
            .field("domain", &self.domain())
            .field("workstation", &self.workstation())
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

fn le_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn le_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// A payload field (`Len`, `MaxLen` ignored, `BufferOffset`). An empty field's offset is not
/// looked at; a non-empty one must lie inside the message and after the fixed header.
struct Field {
    offset: usize,
    len: usize,
}

impl Field {
    fn read(msg: &[u8], at: usize) -> Result<Self, NtlmError> {
        let len = le_u16(msg, at).ok_or(NtlmError::Malformed("truncated header"))?;
        let offset = le_u32(msg, at + 4).ok_or(NtlmError::Malformed("truncated header"))?;
        let len = usize::from(len);
        let offset = usize::try_from(offset).map_err(|_| NtlmError::Malformed("field offset"))?;
        if len > 0 {
            if offset < FIXED_HEADER_LEN {
                return Err(NtlmError::Malformed("field overlaps the message header"));
            }
            let end = offset
                .checked_add(len)
                .ok_or(NtlmError::Malformed("field offset"))?;
            if end > msg.len() {
                return Err(NtlmError::Malformed(
                    "field extends past the end of the message",
                ));
            }
        }
        Ok(Field { offset, len })
    }

    fn slice<'a>(&self, msg: &'a [u8]) -> &'a [u8] {
        if self.len == 0 {
            return &[];
        }
        msg.get(self.offset..self.offset + self.len).unwrap_or(&[])
    }

    fn start(&self) -> Option<usize> {
        (self.len > 0).then_some(self.offset)
    }
}

/// Appends the decoded `bytes` to `out`.
fn decode_string(bytes: &[u8], unicode: bool, out: &mut String) -> Result<(), NtlmError> {
    if unicode {
        let (units, rest) = bytes.as_chunks::<2>();
        if !rest.is_empty() {
            return Err(NtlmError::Malformed("odd-length UTF-16 string"));
        }
        for c in char::decode_utf16(units.iter().map(|u| u16::from_le_bytes(*u))) {
            out.push(c.map_err(|_| NtlmError::Malformed("invalid UTF-16 string"))?);
        }
        Ok(())
    } else {
        // OEM code page: only its ASCII subset is decoded unambiguously. The acceptor refuses
        // non-Unicode messages anyway; this keeps the names readable for logs.
        if !bytes.is_ascii() {
            return Err(NtlmError::Malformed("non-ASCII OEM string"));
        }
        out.extend(bytes.iter().map(|b| char::from(*b)));
        Ok(())
    }
}

fn parse_nt_response(nt: &[u8]) -> Result<NtResponse<'_>, NtlmError> {
    match nt.len() {
        0 => return Ok(NtResponse::Empty),
        24 => return Ok(NtResponse::V1),
        n if n < NT_PROOF_LEN + V2_BLOB_HEADER_LEN => {
            return Err(NtlmError::Malformed("NT response too short for NTLMv2"));
        }
        _ => {}
    }
    let (proof, blob) = nt.split_at(NT_PROOF_LEN);
    let mut nt_proof_str = [0u8; 16];
    nt_proof_str.copy_from_slice(proof);
    // RespType and HiRespType MUST be 1.
    if blob.get(..2) != Some(&[1, 1]) {
        return Err(NtlmError::Malformed("unknown NTLMv2 response version"));
    }
    let blob_timestamp = le_u64(blob, 8).ok_or(NtlmError::Malformed("truncated NTLMv2 blob"))?;

    let mut av_timestamp = None;
    let mut av_flags = None;
    let mut av_target_name = None;
    let mut at = V2_BLOB_HEADER_LEN;
    loop {
        let id = le_u16(blob, at).ok_or(NtlmError::Malformed("AV pairs not terminated"))?;
        let len = usize::from(
            le_u16(blob, at + 2).ok_or(NtlmError::Malformed("AV pairs not terminated"))?,
        );
        let value = blob
            .get(at + 4..at + 4 + len)
            .ok_or(NtlmError::Malformed("AV pair extends past the NT response"))?;
        match id {
            AV_EOL => break,
            AV_FLAGS => {
                let v: [u8; 4] = value
                    .try_into()
                    .map_err(|_| NtlmError::Malformed("MsvAvFlags length"))?;
                if av_flags.replace(u32::from_le_bytes(v)).is_some() {
                    return Err(NtlmError::Malformed("duplicate MsvAvFlags"));
                }
            }
            AV_TIMESTAMP => {
                let v: [u8; 8] = value
                    .try_into()
                    .map_err(|_| NtlmError::Malformed("MsvAvTimestamp length"))?;
                if av_timestamp.replace(u64::from_le_bytes(v)).is_some() {
                    return Err(NtlmError::Malformed("duplicate MsvAvTimestamp"));
                }
            }
            AV_TARGET_NAME => {
                if value.len() % 2 != 0 {
                    return Err(NtlmError::Malformed("MsvAvTargetName length"));
                }
                if av_target_name.replace(value).is_some() {
                    return Err(NtlmError::Malformed("duplicate MsvAvTargetName"));
                }
            }
            _ => {}
        }
        at += 4 + len;
    }
    Ok(NtResponse::V2(V2Response {
        nt_proof_str,
        blob,
        blob_timestamp,
        av_timestamp,
        av_flags,
        av_target_name,
    }))
}

impl<'a> AuthenticateMessage<'a> {
    /// Parses and bounds-checks an AUTHENTICATE_MESSAGE (the decoded `gssapi-data`).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, NtlmError> {
        if bytes.len() < FIXED_HEADER_LEN {
            return Err(NtlmError::Malformed(
                "shorter than the AUTHENTICATE_MESSAGE header",
            ));
        }
        if bytes.get(..8) != Some(SIGNATURE.as_slice()) {
            return Err(NtlmError::Malformed("missing NTLMSSP signature"));
        }
        if le_u32(bytes, 8) != Some(3) {
            return Err(NtlmError::Malformed("not an AUTHENTICATE_MESSAGE"));
        }
        let lm = Field::read(bytes, 12)?;
        let nt = Field::read(bytes, 20)?;
        let domain = Field::read(bytes, 28)?;
        let user = Field::read(bytes, 36)?;
        let workstation = Field::read(bytes, 44)?;
        let session_key = Field::read(bytes, 52)?;
        let flags = le_u32(bytes, 60).ok_or(NtlmError::Malformed("truncated header"))?;

        let payload_start = [&lm, &nt, &domain, &user, &workstation, &session_key]
            .iter()
            .filter_map(|f| f.start())
            .min()
            .unwrap_or(bytes.len());
        let version = if flags & flags::NEGOTIATE_VERSION != 0 && payload_start >= VERSION_RANGE.end
        {
            bytes.get(VERSION_RANGE).and_then(|v| v.try_into().ok())
        } else {
            None
        };

        let unicode = flags & flags::NEGOTIATE_UNICODE != 0;
        let nt_response = parse_nt_response(nt.slice(bytes))?;
        if let NtResponse::V2(v2) = &nt_response
            && v2.av_flags.is_some_and(|f| f & AV_FLAG_MIC_PRESENT != 0)
            && payload_start < MIC_RANGE.end
        {
            return Err(NtlmError::Malformed(
                "MIC flagged but the payload overlaps the MIC field",
            ));
        }
        // Sized for ASCII names (one byte per UTF-16 unit), as they mostly are.
        let (user, domain, workstation) = (
            user.slice(bytes),
            domain.slice(bytes),
            workstation.slice(bytes),
        );
        let units = if unicode { 2 } else { 1 };
        let mut names =
            String::with_capacity((user.len() + domain.len() + workstation.len()) / units);
        decode_string(user, unicode, &mut names)?;
        let user_end = names.len();
        decode_string(domain, unicode, &mut names)?;
        let domain_end = names.len();
        decode_string(workstation, unicode, &mut names)?;
        Ok(AuthenticateMessage {
            bytes,
            flags,
            lm_response: lm.slice(bytes),
            nt_response,
            encrypted_session_key: session_key.slice(bytes),
            names,
            user_end,
            domain_end,
            version,
        })
    }

    /// The user name as sent (authenticated case-insensitively once accepted).
    pub fn user(&self) -> &str {
        self.names.get(..self.user_end).unwrap_or("")
    }

    /// The user's domain as sent (authenticated once accepted).
    pub fn domain(&self) -> &str {
        self.names.get(self.user_end..self.domain_end).unwrap_or("")
    }

    /// The client's workstation name (not authenticated unless the client sent a MIC).
    pub fn workstation(&self) -> &str {
        self.names.get(self.domain_end..).unwrap_or("")
    }

    /// The NegotiateFlags the client concluded on.
    pub fn flags(&self) -> u32 {
        self.flags
    }

    /// The client's VERSION field, when present.
    pub fn version(&self) -> Option<[u8; 8]> {
        self.version
    }

    /// NTProofStr (the first 16 bytes of an NTLMv2 response); public data, sent in clear.
    pub fn nt_proof_str(&self) -> Option<[u8; 16]> {
        match &self.nt_response {
            NtResponse::V2(v2) => Some(v2.nt_proof_str),
            _ => None,
        }
    }

    /// Whether the client flagged a MIC (MsvAvFlags bit 0x2 in its AV pairs).
    pub fn has_mic(&self) -> bool {
        match &self.nt_response {
            NtResponse::V2(v2) => v2.av_flags.is_some_and(|f| f & AV_FLAG_MIC_PRESENT != 0),
            _ => false,
        }
    }

    /// The raw message bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    pub(crate) fn nt_response(&self) -> &NtResponse<'a> {
        &self.nt_response
    }

    pub(crate) fn lm_response(&self) -> &'a [u8] {
        self.lm_response
    }

    pub(crate) fn encrypted_session_key(&self) -> &'a [u8] {
        self.encrypted_session_key
    }
}
