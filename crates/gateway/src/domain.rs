//! The domain's NTLM verifier: winbind through libwbclient (crate `sagw-winbind`), plugged into
//! the security core's [`DomainNtlmVerifier`] seam. Called on the domain-NTLM worker threads
//! only (crate::auth_jobs); each call takes a winbind context from a small pool (one per thread
//! at most: a context is one connection to winbindd and is used by one thread at a time).

use std::sync::Arc;

use parking_lot::Mutex;
use sagw_auth::{
    DomainError, DomainNtlmRequest, DomainNtlmVerifier, DomainRefusal, DomainVerified,
};
use sagw_winbind::{Context, JoinedDomain, Library, LogonError, Refusal, ResponseLogon};

/// NTLMv2 responses verified by the domain through winbind.
pub struct WinbindVerifier {
    library: Arc<Library>,
    /// The domain this host is joined to, asked of winbindd at the first logon (a domain that is
    /// down at start must not stop the gateway).
    joined: std::sync::OnceLock<JoinedDomain>,
    /// Idle contexts; a worker takes one (or makes one) per call and gives it back.
    idle: Mutex<Vec<Context>>,
}

impl std::fmt::Debug for WinbindVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WinbindVerifier")
            .field("library", &self.library.name())
            .finish_non_exhaustive()
    }
}

impl WinbindVerifier {
    /// Loads `library` (libwbclient). Does not ask winbindd anything: a domain that is down at
    /// start only makes sign-ins wait for it (503), it does not stop the gateway.
    pub fn load(library: &str) -> Result<Self, sagw_winbind::LoadError> {
        Ok(WinbindVerifier {
            library: Library::load(library)?,
            joined: std::sync::OnceLock::new(),
            idle: Mutex::new(Vec::new()),
        })
    }

    /// `wbcCtxPing`: whether winbindd answers (check-config).
    pub fn ping(&self) -> Result<(), sagw_winbind::Unavailable> {
        let mut ctx = self.take()?;
        let r = ctx.ping();
        if r.is_ok() {
            self.idle.lock().push(ctx);
        }
        r
    }

    fn take(&self) -> Result<Context, sagw_winbind::Unavailable> {
        match self.idle.lock().pop() {
            Some(ctx) => Ok(ctx),
            None => self.library.context(),
        }
    }
}

fn refusal(r: Refusal) -> DomainRefusal {
    match r {
        Refusal::WrongPassword => DomainRefusal::WrongPassword,
        Refusal::AccountDisabled => DomainRefusal::AccountDisabled,
        Refusal::AccountLockedOut => DomainRefusal::AccountLockedOut,
        Refusal::AccountExpired => DomainRefusal::AccountExpired,
        Refusal::PasswordExpired => DomainRefusal::PasswordExpired,
        Refusal::PasswordMustChange => DomainRefusal::PasswordMustChange,
        Refusal::NoSuchUser => DomainRefusal::NoSuchUser,
        Refusal::MachineAccount | Refusal::Other => DomainRefusal::Other,
    }
}

impl DomainNtlmVerifier for WinbindVerifier {
    fn verify(&self, r: &DomainNtlmRequest<'_>) -> Result<DomainVerified, DomainError> {
        let mut ctx = self.take().map_err(|e| DomainError::Unavailable(e.0))?;
        let result = ctx.authenticate_response(&ResponseLogon {
            user: r.user,
            domain: r.domain,
            workstation: r.workstation,
            server_challenge: r.server_challenge,
            nt_response: r.nt_response,
        });
        match result {
            Ok(logon) => {
                let joined = match self.joined.get() {
                    Some(j) => j.clone(),
                    None => match ctx.joined_domain() {
                        Ok(j) => self.joined.get_or_init(|| j).clone(),
                        Err(e) => return Err(DomainError::Unavailable(e.0)),
                    },
                };
                self.idle.lock().push(ctx);
                Ok(DomainVerified {
                    user: logon.account_name.clone(),
                    domain: logon.domain_name.clone(),
                    joined_domain: joined.is(&logon.domain_name),
                    session_base_key: sagw_ntlm::Key16::from_bytes(logon.user_session_key),
                })
            }
            Err(LogonError::Refused(refused)) => {
                self.idle.lock().push(ctx);
                Err(DomainError::Refused {
                    refusal: refusal(refused.refusal),
                    detail: format!("{} ({:#010x})", refused.nt_string, refused.nt_status),
                })
            }
            // The context's connection may be broken: it is dropped, the next call makes a
            // new one (winbindd restarted, the DC's own winbindd back).
            Err(LogonError::Unavailable(e)) => Err(DomainError::Unavailable(e.0)),
        }
    }
}
