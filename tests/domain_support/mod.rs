//! A domain controller in a box for the domain-NTLM tests: accounts with passwords and a state
//! each (the joined domain is `EXAMPLE`; an account asked for under another domain name is that
//! trusted domain's), verifying NTLMv2 responses as a DC does (NTOWFv2 from the password, NTProofStr, then the
//! SessionBaseKey), optionally slowly. A wrong key anywhere in the gateway's path fails the
//! signatures, so the tests using it check the real derivation.
//!
//! Shared by crates/auth/tests/domain_ntlm.rs (through `#[path]`) and tests/domain_workers.rs.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sagw_auth::{
    DomainError, DomainNtlmRequest, DomainNtlmVerifier, DomainRefusal, DomainVerified,
};
use sagw_ntlm::{NtHash, crypto};

#[derive(Default)]
pub struct FakeDomain {
    accounts: Mutex<HashMap<String, (String, Option<DomainError>)>>,
    /// Time each verification takes (a slow DC).
    pub delay: Duration,
    calls: AtomicUsize,
}

impl FakeDomain {
    pub fn with(users: &[(&str, &str)]) -> Self {
        let d = FakeDomain::default();
        for (u, p) in users {
            d.accounts
                .lock()
                .expect("lock")
                .insert(u.to_lowercase(), ((*p).to_owned(), None));
        }
        d
    }

    /// Every verification takes `delay`.
    pub fn slow(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// What the domain answers for `user` once the password is right (a refusal), or for
    /// anything (unavailable); `None`: signs in.
    pub fn set_state(&self, user: &str, state: Option<DomainError>) {
        if let Some(a) = self
            .accounts
            .lock()
            .expect("lock")
            .get_mut(&user.to_lowercase())
        {
            a.1 = state;
        }
    }

    /// Verifications asked so far.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl DomainNtlmVerifier for FakeDomain {
    fn verify(&self, r: &DomainNtlmRequest<'_>) -> Result<DomainVerified, DomainError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(self.delay);
        let accounts = self.accounts.lock().expect("lock");
        let Some((password, state)) = accounts.get(&r.user.to_lowercase()) else {
            return Err(DomainError::Refused {
                refusal: DomainRefusal::NoSuchUser,
                detail: "NT_STATUS_NO_SUCH_USER".into(),
            });
        };
        if let Some(DomainError::Unavailable(e)) = state {
            return Err(DomainError::Unavailable(e.clone()));
        }
        let ntowf = crypto::ntowfv2(&NtHash::from_password(password), r.user, r.domain);
        let (proof, blob) = r.nt_response.split_at(16.min(r.nt_response.len()));
        if crypto::nt_proof_str(&ntowf, &r.server_challenge, blob) != proof {
            return Err(DomainError::Refused {
                refusal: DomainRefusal::WrongPassword,
                detail: "NT_STATUS_WRONG_PASSWORD".into(),
            });
        }
        if let Some(e) = state {
            return Err(e.clone());
        }
        let proof: [u8; 16] = proof.try_into().expect("16 bytes");
        Ok(DomainVerified {
            user: r.user.to_lowercase(),
            // A trusted domain's account is named with its own domain (the client says which;
            // a DC passes the logon on to that domain's DCs).
            domain: r.domain.to_uppercase(),
            joined_domain: r.domain.eq_ignore_ascii_case("EXAMPLE"),
            session_base_key: crypto::session_base_key(&ntowf, &proof),
        })
    }
}
