//! Errors at the crate boundary.
//!
//! Variants carry only `&'static str` reasons, never client-supplied text: error values end up in logs
//! and a hostile client must not be able to write into them.

/// Why a Digest operation failed.
#[derive(thiserror::Error, Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DigestError {
    /// A parameter value is syntactically unacceptable (bad `nc`, control characters, too long, ...).
    #[error("malformed digest credentials: {0}")]
    Malformed(&'static str),
    /// A parameter required by the credentials form in use is absent.
    #[error("missing digest parameter `{0}`")]
    MissingParam(&'static str),
    /// A known parameter occurs more than once (RFC 7616 §3.4: each directive at most once).
    #[error("duplicate digest parameter")]
    DuplicateParam,
    /// The `algorithm` is unknown or not among those this server offers.
    #[error("digest algorithm unknown or not offered")]
    UnsupportedAlgorithm,
    /// `qop` is something other than `auth` (e.g. `auth-int`), or absent while RFC 2069 is refused.
    #[error("unsupported qop")]
    UnsupportedQop,
    /// The credentials name a realm this server does not serve.
    #[error("realm does not match")]
    RealmMismatch,
    /// The nonce was not minted by this server (bad MAC, other key or realm, bad encoding, or
    /// a timestamp implausibly far in the future).
    #[error("nonce not issued by this server")]
    BadNonce,
    /// The nonce is genuine but expired or used up, and the response was otherwise correct: the
    /// caller should re-challenge with `stale=true` so the client retries without re-prompting.
    #[error("nonce is stale")]
    Stale,
    /// The nonce is genuine (this key and realm) but was minted by another node of the pool, and
    /// the response was otherwise correct. Handled like [`DigestError::Stale`]: the caller
    /// re-challenges with `stale=true` and a nonce of its own.
    #[error("nonce issued by another node")]
    OtherNode,
    /// This (nonce, nc) pair has been accepted before.
    #[error("nonce count replayed")]
    Replay,
    /// `nc` is older than the replay window kept for this nonce.
    #[error("nonce count outside the replay window")]
    NcOutOfWindow,
    /// The `response` does not match the one computed from the stored HA1.
    #[error("wrong digest response")]
    WrongResponse,
    /// The HA1 handed to `verify` was computed for another hash function than the one the client
    /// used: a user-store bug, not a client error.
    #[error("HA1 hash function does not match the digest algorithm")]
    Ha1AlgorithmMismatch,
    /// A stored HA1 is not valid hex of the expected length.
    #[error("invalid HA1 hex")]
    InvalidHa1,
    /// The server configuration is unusable.
    #[error("invalid digest configuration: {0}")]
    InvalidConfig(&'static str),
}

/// What an RFC 3261 server should do about a failed verification. Advisory: the gateway's policy
/// (e.g. 403 after repeated failures) may override it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// 400 Bad Request: the credentials cannot be parsed.
    BadRequest,
    /// 401/407 with a fresh challenge.
    Challenge,
    /// 401/407 with a fresh challenge carrying `stale=true`: the client proved it knows the
    /// password (or only lost its nonce-count state), so it may retry without re-prompting.
    ChallengeStale,
    /// 500: the server side (user store, configuration) is at fault.
    ServerError,
}

impl DigestError {
    /// The reply an RFC 3261 / RFC 7616 server would give for this error.
    pub fn disposition(&self) -> Disposition {
        match self {
            DigestError::Malformed(_)
            | DigestError::MissingParam(_)
            | DigestError::DuplicateParam => Disposition::BadRequest,
            DigestError::Stale | DigestError::OtherNode | DigestError::NcOutOfWindow => {
                Disposition::ChallengeStale
            }
            DigestError::UnsupportedAlgorithm
            | DigestError::UnsupportedQop
            | DigestError::RealmMismatch
            | DigestError::BadNonce
            | DigestError::Replay
            | DigestError::WrongResponse => Disposition::Challenge,
            DigestError::Ha1AlgorithmMismatch
            | DigestError::InvalidHa1
            | DigestError::InvalidConfig(_) => Disposition::ServerError,
        }
    }
}
