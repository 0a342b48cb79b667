use std::fmt;

/// Why an AUTHENTICATE_MESSAGE that is not NTLMv2 was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegacyAuth {
    /// Empty user name and empty NT response ([MS-NLMP] 3.2.5.1.2 NullSession): no key material.
    Anonymous,
    /// Only an LM (or LMv2) response, no NT response.
    LmOnly,
    /// A 24-byte NTLMv1 NT response (DES based, crackable offline).
    NtlmV1,
}

impl fmt::Display for LegacyAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LegacyAuth::Anonymous => "anonymous authentication",
            LegacyAuth::LmOnly => "LM-only response",
            LegacyAuth::NtlmV1 => "NTLMv1 response",
        })
    }
}

/// Errors of the NTLM layer. None of them carries secret material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NtlmError {
    /// The message is not a well-formed NTLM message (truncated, lying offsets, wrong type...).
    #[error("malformed NTLM message: {0}")]
    Malformed(&'static str),
    /// LM, NTLMv1 or anonymous authentication, refused by policy.
    #[error("refused {0}: only NTLMv2 is accepted")]
    NotNtlmV2(LegacyAuth),
    /// Negotiate flags this implementation requires are missing (the mask of missing flags).
    #[error("required NTLM negotiate flags missing: {0:#010x}")]
    MissingFlags(u32),
    /// NTProofStr mismatch: wrong password, user or domain, or an answer to another challenge.
    #[error("NTLMv2 response does not match (wrong password or not an answer to this challenge)")]
    WrongPassword,
    /// The AUTHENTICATE names another service (MsvAvTargetName) than this acceptor's: it was
    /// made for that service and relayed here.
    #[error("the AUTHENTICATE_MESSAGE was made for another service")]
    WrongTarget,
    /// The client flagged a MIC and it does not match.
    #[error("AUTHENTICATE_MESSAGE MIC does not match")]
    BadMic,
    /// The client timestamp is further from `now` than the configured maximum clock skew.
    #[error("client timestamp is {offset_secs} s from server time (limit {max_secs} s)")]
    ClockSkew {
        /// Client time minus server time, in seconds (negative: client behind).
        offset_secs: i64,
        /// The configured limit in seconds.
        max_secs: u64,
    },
    /// A message signature does not verify (or is not 16 bytes / 32 hex digits).
    #[error("NTLM message signature does not verify")]
    BadSignature,
    /// A key given to a low-level function has a length RC4 cannot use.
    #[error("invalid key length")]
    InvalidKeyLength,
    /// Acceptor configuration that cannot be encoded in a CHALLENGE_MESSAGE.
    #[error("invalid NTLM acceptor configuration: {0}")]
    Config(&'static str),
}
