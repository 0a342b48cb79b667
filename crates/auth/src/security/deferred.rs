//! The sign-ins the core runs off its caller's thread ([`Decision::Deferred`]): running a job on
//! a worker ([`SecurityCore::run_job`]), filing its outcome ([`SecurityCore::job_done`]), and the
//! NTLM final leg of a user the domain verifies. Kerberos's leg stays with the other legs in
//! `handshakes.rs`; it takes its outcome from the same table.

use super::*;
use crate::DomainNtlmOutcome;
use crate::jobs::NtlmFinalLegJob;

/// How long the pool remembers an NTLM final leg's use: its challenge is taken 30 to 60 s after
/// it was issued, never later.
const FINAL_LEG_TTL: std::time::Duration = std::time::Duration::from_secs(120);

impl SecurityCore {
    /// Runs a deferred sign-in step. Blocking (MIT's file replay cache, a store round trip, a
    /// domain controller, the directory): for a worker thread. Counts nothing; the request it
    /// belongs to counts as before when it is judged again.
    pub fn run_job(&self, job: &AuthJob) -> AuthOutcome {
        match job {
            AuthJob::Kerberos(job) => AuthOutcome::Kerberos(self.run_kerberos_job(job)),
            AuthJob::DomainNtlm(job) => {
                let mut outcome = crate::domain::run(
                    self.domain_ntlm.as_deref(),
                    self.directory.as_deref(),
                    job,
                    |user| self.default_identity(user),
                    |identity| {
                        self.credentials
                            .owns_identity(identity, &self.config.sip_domain)
                    },
                );
                // In a pool, the final leg's one use is recorded pool-wide, as a local one's is.
                if self.final_legs_pooled
                    && outcome.result.is_ok()
                    && self.final_leg_first_use(&NtlmFinalLegJob::new(&job.server_challenge))
                        == ReplayCheck::Replayed
                {
                    outcome = DomainNtlmOutcome::refused(Reason::ReplayedToken);
                }
                AuthOutcome::DomainNtlm(outcome)
            }
            AuthJob::NtlmFinalLeg(job) => AuthOutcome::NtlmFinalLeg(self.final_leg_first_use(job)),
        }
    }

    /// The pool's registry on an NTLM final leg: first use, replayed, or cannot tell (accepted
    /// on this gateway's own record, as an AP-REQ is on MIT's replay cache).
    fn final_leg_first_use(&self, job: &NtlmFinalLegJob) -> ReplayCheck {
        self.kerberos_replay.first_use(job.key(), FINAL_LEG_TTL)
    }

    /// Accepts a deferred AP-REQ: the backend, the replay registry, then the directory.
    fn run_kerberos_job(&self, job: &KerberosJob) -> KerberosOutcome {
        let mut outcome = match &self.kerberos {
            Some(backend) => self.accept_kerberos(backend.as_ref(), job.ap_req()),
            None => KerberosOutcome {
                result: Err(KerberosRejection {
                    reason: Reason::UnsupportedScheme,
                    detail: "Kerberos is not enabled".into(),
                }),
                registry_unavailable: false,
                identity: None,
            },
        };
        if let (Ok(accepted), Some(directory)) = (&outcome.result, &self.directory) {
            outcome.identity = self.kerberos_identity(directory.as_ref(), accepted);
        }
        outcome
    }

    /// The directory's identity for an accepted principal; `None` for a principal with an
    /// instance (refused by the leg, without asking).
    pub(super) fn kerberos_identity(
        &self,
        directory: &dyn AccountDirectory,
        accepted: &KerberosAccepted,
    ) -> Option<Result<String, Reason>> {
        principal_to_identity(&accepted.client_principal, None).ok()?;
        Some(
            crate::domain::directory_identity(
                directory,
                DomainAccount::Kerberos {
                    principal: &accepted.client_principal,
                },
            )
            .map_err(|f| f.reason),
        )
    }

    /// Files a worker's outcome for the request of `key`, which the caller judges again next.
    pub fn job_done(&self, key: [u8; 32], outcome: AuthOutcome, now: SystemTime) {
        self.finished
            .lock()
            .insert(key, outcome.into(), unix_secs(now));
    }

    /// The request of job `key` was judged again (synchronously, after [`job_done`](Self::job_done)):
    /// an outcome it did not take (the request was dropped before the authentication stage: a
    /// transaction of another flow under its key, a drain) goes now. Left for its 10 s, it was
    /// there for any request with the same token to take, past the replay cache the token had
    /// already passed: a captured sign-in used from another flow.
    pub fn job_judged(&self, key: &[u8; 32], now: SystemTime) {
        let _ = self.finished.lock().take(key, unix_secs(now));
    }

    /// Outcomes filed and not yet taken (tests, gauges).
    pub fn jobs_waiting(&self) -> usize {
        self.finished.lock().len()
    }

    /// An NTLM final leg of a user the store does not have, with domain NTLM on: everything that
    /// needs no key is checked here (a stale or malformed final leg never costs the domain a
    /// round trip, nor the account a bad-password count), then the domain verifies the response
    /// on a worker ([`Decision::Deferred`]), and with its SessionBaseKey the SA is made as for a
    /// store user. A domain (or directory) that cannot answer gives 503 with Retry-After: the
    /// handshake is not used up, the client may send the same final leg again.
    pub(super) fn domain_ntlm_leg(
        &self,
        leg: &mut Leg<'_>,
        final_leg: &NtlmFinalLeg<'_>,
    ) -> Decision {
        let pre = match final_leg.pending.precheck(final_leg.auth) {
            Ok(pre) => pre,
            Err(e) => return self.fail_leg(leg, Scheme::Ntlm, Reason::from(&e)),
        };
        if let Err(e) = final_leg.pending.check_client_time(final_leg.auth, leg.now) {
            return self.fail_leg(leg, Scheme::Ntlm, Reason::from(&e));
        }
        // The server challenge too (it hashes the opaque, the epid and the window): the domain
        // vouched for the response to that challenge, and the same bytes under another epid
        // answer another one.
        let key = sha256(
            &[
                final_leg.opaque.to_string().as_bytes(),
                b"\0",
                &pre.server_challenge(),
                final_leg.bytes,
            ]
            .concat(),
        );
        let result = match self.finished.lock().take(&key, unix_secs(leg.now)) {
            Some(Finished::DomainNtlm(result)) => result,
            // The outcome of another kind of job under this key: impossible (the key hashes
            // the token); judged afresh.
            Some(Finished::Kerberos { .. } | Finished::NtlmFinalLeg(_)) | None => {
                return Decision::Deferred(AuthJob::DomainNtlm(DomainNtlmJob {
                    key,
                    user: final_leg.auth.user().to_owned(),
                    domain: final_leg.auth.domain().to_owned(),
                    workstation: final_leg.auth.workstation().to_owned(),
                    server_challenge: pre.server_challenge(),
                    nt_response: pre.nt_response(),
                }));
            }
        };
        let DomainSignIn {
            session_base_key,
            identity,
        } = match result {
            Ok(signed_in) => signed_in,
            Err(failure) if failure.unavailable() => {
                return self.unavailable(leg.msg, Scheme::Ntlm, failure.reason);
            }
            Err(failure) => return self.fail_leg(leg, Scheme::Ntlm, failure.reason),
        };
        let session = match final_leg.pending.accept_with_session_base_key(
            final_leg.auth,
            &session_base_key,
            leg.now,
        ) {
            Ok(accepted) => accepted.session,
            Err(e) => return self.fail_leg(leg, Scheme::Ntlm, Reason::from(&e)),
        };
        self.establish_ntlm(
            leg,
            final_leg.opaque,
            final_leg.challenge,
            session,
            identity,
        )
    }

    /// 503 with Retry-After: the domain or the directory could not answer. Never a pass, and not
    /// a refusal the client would take as final.
    pub(super) fn unavailable(&self, msg: &Message, scheme: Scheme, reason: Reason) -> Decision {
        self.counters.handshake_failed(scheme, reason);
        if is_ack_or_cancel(msg) {
            self.counters.discarded();
            return Decision::Discard(reason);
        }
        Decision::Unavailable {
            reason,
            retry_after_secs: self.domain_settings.retry_after_secs,
        }
    }
}
