//! NTLM verified by the Windows domain: the seam the gateway plugs winbind into.
//!
//! A user the credentials file does not have is not refused outright when domain NTLM is on: the
//! core checks everything it can without a key ([`sagw_ntlm::PendingHandshake::precheck`], the
//! client timestamp), then answers [`crate::Decision::Deferred`] with an
//! [`crate::AuthJob::DomainNtlm`]. A worker thread runs it ([`crate::SecurityCore::run_job`]): the
//! [`DomainNtlmVerifier`] hands the server challenge and the NTLMv2 response to a domain
//! controller, which answers with the SessionBaseKey (or a refusal), then the
//! [`crate::AccountDirectory`], when one is configured, names the SIP identity. The core files the
//! outcome ([`crate::SecurityCore::job_done`]) and judges the request again: KEY_EXCH, the MIC,
//! one SA per challenge, exactly as for a file user.
//!
//! The verifier never sees a password or an NT hash, and neither does the gateway.

use sagw_ntlm::Key16;

use crate::counters::Reason;
use crate::directory::{AccountDirectory, DirectoryAnswer, DirectoryUnavailable, DomainAccount};

/// What the domain is asked to verify: the names exactly as the AUTHENTICATE carried them (they
/// are inside the NTLMv2 proof), the server challenge and the NT response. Both crossed the
/// network in clear, but together they allow an offline password search: `Debug` shows the
/// names only.
#[derive(Clone, Copy)]
pub struct DomainNtlmRequest<'a> {
    /// The account name from the AUTHENTICATE.
    pub user: &'a str,
    /// The domain name from the AUTHENTICATE (may be empty).
    pub domain: &'a str,
    /// The client's workstation name from the AUTHENTICATE (may be empty).
    pub workstation: &'a str,
    /// The server challenge this gateway sent in the CHALLENGE.
    pub server_challenge: [u8; 8],
    /// The NTLMv2 response (NTProofStr and the client's blob).
    pub nt_response: &'a [u8],
}

impl std::fmt::Debug for DomainNtlmRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DomainNtlmRequest")
            .field("user", &self.user)
            .field("domain", &self.domain)
            .field("workstation", &self.workstation)
            .finish_non_exhaustive()
    }
}

/// A logon the domain accepted.
pub struct DomainVerified {
    /// The account name as the domain spells it (`alice`): what the SIP identity is made from.
    pub user: String,
    /// The account's domain as the domain controller named it (`EXAMPLE`).
    pub domain: String,
    /// Whether that is the domain this host is joined to. Only its accounts map to
    /// `sip:<account>@<sip_domain>` without a directory: a trusted domain's `alice` is another
    /// person than the joined domain's.
    pub joined_domain: bool,
    /// The NTLMv2 SessionBaseKey ("user session key"). Secret.
    pub session_base_key: Key16,
}

impl std::fmt::Debug for DomainVerified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DomainVerified")
            .field("user", &self.user)
            .field("domain", &self.domain)
            .field("joined_domain", &self.joined_domain)
            .finish_non_exhaustive()
    }
}

/// Why the domain refused a logon. Each is a final answer for these credentials: 401 with a
/// fresh challenge, logged and counted with its own [`Reason`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainRefusal {
    /// The response does not match the password (or not this challenge).
    WrongPassword,
    /// The account is disabled in the domain.
    AccountDisabled,
    /// The domain's lockout policy locked the account (with any password).
    AccountLockedOut,
    /// The account's expiry date has passed.
    AccountExpired,
    /// The password's maximum age has passed.
    PasswordExpired,
    /// The password must be changed before the next logon (not something SIP can do).
    PasswordMustChange,
    /// The domain does not know the account.
    NoSuchUser,
    /// Any other refusal (logon hours, workstation restrictions, machine accounts...).
    Other,
}

impl DomainRefusal {
    /// The counter and log reason.
    pub fn reason(self) -> Reason {
        match self {
            DomainRefusal::WrongPassword => Reason::WrongPassword,
            DomainRefusal::AccountDisabled => Reason::AccountDisabled,
            DomainRefusal::AccountLockedOut => Reason::AccountLockedOut,
            DomainRefusal::AccountExpired => Reason::AccountExpired,
            DomainRefusal::PasswordExpired => Reason::PasswordExpired,
            DomainRefusal::PasswordMustChange => Reason::PasswordMustChange,
            DomainRefusal::NoSuchUser => Reason::UnknownUser,
            DomainRefusal::Other => Reason::DomainRefused,
        }
    }
}

/// Why the domain gave no key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The domain answered no. `detail` is the status text for the log (no secrets).
    #[error("refused by the domain ({refusal:?}): {detail}")]
    Refused {
        /// Why, as the counters and the log classify it.
        refusal: DomainRefusal,
        /// The domain's status text.
        detail: String,
    },
    /// No answer (winbind or the domain controller unreachable): 503 with Retry-After, never a
    /// pass and never a refusal.
    #[error("domain unavailable: {0}")]
    Unavailable(String),
}

/// The domain's NTLM verifier (winbind in the gateway). Blocking: called on worker threads only,
/// never on the core thread. Must not panic (a worker catches it and refuses the sign-in).
pub trait DomainNtlmVerifier: Send + Sync {
    /// Has a domain controller check the NTLMv2 response: the account and its SessionBaseKey,
    /// a refusal, or no answer.
    fn verify(&self, request: &DomainNtlmRequest<'_>) -> Result<DomainVerified, DomainError>;
}

/// Settings of the domain path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DomainSettings {
    /// The Retry-After of the 503 a sign-in gets while the domain (or directory) is unavailable.
    pub retry_after_secs: u32,
}

impl Default for DomainSettings {
    fn default() -> Self {
        DomainSettings {
            retry_after_secs: 5,
        }
    }
}

/// An NTLM AUTHENTICATE the core wants the domain to verify off its thread.
#[derive(Clone)]
pub struct DomainNtlmJob {
    pub(crate) key: [u8; 32],
    pub(crate) user: String,
    pub(crate) domain: String,
    pub(crate) workstation: String,
    pub(crate) server_challenge: [u8; 8],
    pub(crate) nt_response: Vec<u8>,
}

impl DomainNtlmJob {
    /// What the outcome is filed under: SHA-256 of the `opaque` and the AUTHENTICATE message (a
    /// retransmission of the same final leg has the same key).
    pub fn key(&self) -> &[u8; 32] {
        &self.key
    }

    /// The request for the verifier.
    pub fn request(&self) -> DomainNtlmRequest<'_> {
        DomainNtlmRequest {
            user: &self.user,
            domain: &self.domain,
            workstation: &self.workstation,
            server_challenge: self.server_challenge,
            nt_response: &self.nt_response,
        }
    }

    /// The account name as sent, for logs.
    pub fn user(&self) -> &str {
        &self.user
    }
}

impl std::fmt::Debug for DomainNtlmJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DomainNtlmJob")
            .field("user", &self.user)
            .field("domain", &self.domain)
            .finish_non_exhaustive()
    }
}

/// A domain sign-in that went through: the key and the SIP identity.
pub(crate) struct DomainSignIn {
    pub(crate) session_base_key: Key16,
    pub(crate) identity: String,
}

/// Why a domain sign-in did not go through: the reason, and whether it is a 503 (nobody could
/// answer) rather than a refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DomainFailure {
    pub(crate) reason: Reason,
    pub(crate) detail: String,
}

impl DomainFailure {
    pub(crate) fn unavailable(&self) -> bool {
        is_unavailable(self.reason)
    }
}

/// The reasons answered with 503 and Retry-After.
pub fn is_unavailable(reason: Reason) -> bool {
    matches!(
        reason,
        Reason::DomainUnavailable | Reason::DirectoryUnavailable
    )
}

/// What a worker made of a [`DomainNtlmJob`].
pub struct DomainNtlmOutcome {
    pub(crate) result: Result<DomainSignIn, DomainFailure>,
}

impl DomainNtlmOutcome {
    /// A refusal made outside the verifier (e.g. a worker that panicked).
    pub fn refused(reason: Reason) -> Self {
        DomainNtlmOutcome {
            result: Err(DomainFailure {
                reason,
                detail: String::new(),
            }),
        }
    }

    /// The reason, when it did not go through.
    pub fn failure(&self) -> Option<(Reason, &str)> {
        self.result
            .as_ref()
            .err()
            .map(|f| (f.reason, f.detail.as_str()))
    }

    /// The SIP identity, when it went through.
    pub fn identity(&self) -> Option<&str> {
        self.result.as_ref().ok().map(|s| s.identity.as_str())
    }
}

impl std::fmt::Debug for DomainNtlmOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("DomainNtlmOutcome");
        match &self.result {
            Ok(s) => d.field("identity", &s.identity),
            Err(e) => d.field("failed", &e.reason),
        };
        d.finish()
    }
}

/// What the directory says of a domain account, as a sign-in outcome.
pub(crate) fn directory_identity(
    directory: &dyn AccountDirectory,
    account: DomainAccount<'_>,
) -> Result<String, DomainFailure> {
    let failure = |reason, detail: &str| DomainFailure {
        reason,
        detail: detail.to_owned(),
    };
    match directory.lookup(account) {
        Ok(DirectoryAnswer::Identity(identity)) => Ok(identity),
        Ok(DirectoryAnswer::NoSipAddress) => Err(failure(Reason::NoSipAddress, "")),
        Ok(DirectoryAnswer::Disabled) => Err(failure(Reason::AccountDisabled, "in the directory")),
        Ok(DirectoryAnswer::NotFound) => Err(failure(Reason::DirectoryNotFound, "")),
        Err(DirectoryUnavailable(detail)) => Err(failure(Reason::DirectoryUnavailable, &detail)),
    }
}

/// A worker's run of a [`DomainNtlmJob`]: the domain verifies the response, then the directory
/// (when there is one) names the SIP identity; without a directory it is `default_identity` of
/// the account name the domain returned, for an account of the joined domain only. An identity
/// a credentials-file user signs in as (`file_owns`) is refused: the file is asked first for
/// the name the client wrote, but a file user without an NT hash, a name written another way
/// (a UPN) or a file user's `sip` identity would otherwise fall to a domain account.
pub(crate) fn run(
    verifier: Option<&dyn DomainNtlmVerifier>,
    directory: Option<&dyn AccountDirectory>,
    job: &DomainNtlmJob,
    default_identity: impl Fn(&str) -> String,
    file_owns: impl Fn(&str) -> bool,
) -> DomainNtlmOutcome {
    let Some(verifier) = verifier else {
        return DomainNtlmOutcome::refused(Reason::UnsupportedScheme);
    };
    let result = match verifier.verify(&job.request()) {
        Err(DomainError::Refused { refusal, detail }) => Err(DomainFailure {
            reason: refusal.reason(),
            detail,
        }),
        Err(DomainError::Unavailable(detail)) => Err(DomainFailure {
            reason: Reason::DomainUnavailable,
            detail,
        }),
        Ok(verified) => {
            let identity = match directory {
                Some(directory) => directory_identity(
                    directory,
                    DomainAccount::Ntlm {
                        user: &verified.user,
                        domain: &verified.domain,
                    },
                ),
                None if verified.joined_domain => {
                    let identity = default_identity(&verified.user);
                    if crate::kerberos::account_name_makes_an_identity(&verified.user)
                        && crate::is_valid_sip_identity(&identity)
                    {
                        Ok(identity)
                    } else {
                        Err(DomainFailure {
                            reason: Reason::AccountName,
                            detail: format!(
                                "account {:?} makes no SIP identity of its own",
                                verified.user
                            ),
                        })
                    }
                }
                None => Err(DomainFailure {
                    reason: Reason::WrongRealm,
                    detail: format!(
                        "an account of domain {}: only the joined domain's accounts have an identity without [auth.directory]",
                        verified.domain
                    ),
                }),
            };
            identity.and_then(|identity| {
                if file_owns(&identity) {
                    return Err(DomainFailure {
                        reason: Reason::IdentityTaken,
                        detail: format!("{identity} is a credentials-file user's"),
                    });
                }
                Ok(DomainSignIn {
                    session_base_key: verified.session_base_key,
                    identity,
                })
            })
        }
    };
    DomainNtlmOutcome { result }
}
