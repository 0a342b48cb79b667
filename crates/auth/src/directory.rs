//! Where a domain account's SIP identity comes from: the directory (Active Directory over LDAP).
//!
//! The domain (winbind for NTLM, the KDC for Kerberos) says who the user is; the directory says
//! which SIP address that account signs in as and whether it may sign in at all. A lookup is a
//! network round trip, so it is only ever made on a worker thread, right after the domain vouched
//! for the account, never on the core thread; the core files the answer with the rest of the job's
//! outcome.

/// A domain account the domain or the KDC has just vouched for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainAccount<'a> {
    /// An NTLM logon: the account name and domain as the domain controller returned them
    /// (`alice`, `EXAMPLE`).
    Ntlm {
        /// The account name (`alice`).
        user: &'a str,
        /// The account's domain (`EXAMPLE`).
        domain: &'a str,
    },
    /// A Kerberos client principal (`alice@EXAMPLE.TEST`), without an instance component.
    Kerberos {
        /// The principal, `user@REALM`.
        principal: &'a str,
    },
}

/// What the directory says about an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirectoryAnswer {
    /// Sign in as this SIP identity (already checked with [`crate::is_valid_sip_identity`]).
    Identity(String),
    /// The account has no SIP address in the directory and none may be made up for it: refused.
    NoSipAddress,
    /// The account is disabled in the directory: refused.
    Disabled,
    /// The directory does not know the account: refused.
    NotFound,
}

/// The directory could not answer (unreachable, timed out, a bind or search error): the sign-in
/// gets 503 with Retry-After, never a pass and never a refusal the client would take as final.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("directory unavailable: {0}")]
pub struct DirectoryUnavailable(pub String);

/// A source of SIP identities for domain accounts. Blocking: called on worker threads only.
pub trait AccountDirectory: Send + Sync {
    /// What the directory says of `account`, or that it could not answer.
    fn lookup(&self, account: DomainAccount<'_>) -> Result<DirectoryAnswer, DirectoryUnavailable>;
}
