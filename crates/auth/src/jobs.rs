//! Sign-ins the core has run off its thread: Kerberos AP-REQs (MIT's replay cache, a pool's
//! replay registry) and NTLM responses the domain verifies (a round trip to a domain controller),
//! each followed by a directory lookup when one is configured.
//!
//! The core answers [`crate::Decision::Deferred`] with an [`AuthJob`]; the caller runs it on a
//! worker ([`crate::SecurityCore::run_job`], blocking), files the [`AuthOutcome`] on the core's
//! thread ([`crate::SecurityCore::job_done`]) and hands the same request to the core again, which
//! takes the outcome instead of deferring. Nothing is counted until then, so the counters read as
//! they would for an inline sign-in.

use std::collections::{HashMap, VecDeque};

use crate::domain::{DomainFailure, DomainNtlmJob, DomainNtlmOutcome, DomainSignIn};
use crate::kerberos::{KerberosAccepted, KerberosJob, KerberosOutcome, KerberosRejection};

/// A sign-in step to run on a worker thread.
#[derive(Debug, Clone)]
pub enum AuthJob {
    /// Accept an AP-REQ.
    Kerberos(KerberosJob),
    /// Have the domain verify an NTLMv2 response.
    DomainNtlm(DomainNtlmJob),
    /// Record an NTLM final leg's one use across the pool (its proof already verified here).
    NtlmFinalLeg(NtlmFinalLegJob),
}

/// An NTLM final leg to record in the pool's replay registry: a final leg may reach any gateway
/// of a pool (they share the challenge key), and its one use was recorded per gateway only, so
/// a captured one was taken once more at each other gateway.
#[derive(Debug, Clone)]
pub struct NtlmFinalLegJob {
    key: [u8; 32],
}

impl NtlmFinalLegJob {
    /// The job of the final leg that answers `server_challenge` (unique per opaque, epid and
    /// window).
    pub(crate) fn new(server_challenge: &[u8; 8]) -> Self {
        let mut input = Vec::with_capacity(32);
        input.extend_from_slice(b"sagw ntlm final leg\0");
        input.extend_from_slice(server_challenge);
        NtlmFinalLegJob {
            key: crate::kerberos::sha256(&input),
        }
    }

    /// The registry key, and what the outcome is filed under.
    pub fn key(&self) -> &[u8; 32] {
        &self.key
    }
}

impl AuthJob {
    /// What the outcome is filed under; the same for a retransmission of the same request.
    pub fn key(&self) -> &[u8; 32] {
        match self {
            AuthJob::Kerberos(j) => j.key(),
            AuthJob::DomainNtlm(j) => j.key(),
            AuthJob::NtlmFinalLeg(j) => j.key(),
        }
    }

    /// `kerberos` or `domain_ntlm`, for logs and metrics (and which worker pool runs it).
    pub fn kind(&self) -> JobKind {
        match self {
            AuthJob::Kerberos(_) => JobKind::Kerberos,
            AuthJob::DomainNtlm(_) => JobKind::DomainNtlm,
            AuthJob::NtlmFinalLeg(_) => JobKind::NtlmFinalLeg,
        }
    }
}

/// The kinds of job, each with its own worker pool in the gateway (a slow domain controller does
/// not hold Kerberos sign-ins up, nor the other way round).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobKind {
    /// A Kerberos AP-REQ to accept ([`AuthJob::Kerberos`]).
    Kerberos,
    /// An NTLM response for the domain to verify ([`AuthJob::DomainNtlm`]).
    DomainNtlm,
    /// An NTLM final leg to record in the pool ([`AuthJob::NtlmFinalLeg`]).
    NtlmFinalLeg,
}

impl JobKind {
    /// The metric and log label: `kerberos` or `domain_ntlm`.
    pub fn label(self) -> &'static str {
        match self {
            JobKind::Kerberos => "kerberos",
            JobKind::DomainNtlm => "domain_ntlm",
            JobKind::NtlmFinalLeg => "ntlm_final_leg",
        }
    }
}

/// What a worker made of an [`AuthJob`].
#[derive(Debug)]
pub enum AuthOutcome {
    /// The outcome of an [`AuthJob::Kerberos`].
    Kerberos(KerberosOutcome),
    /// The outcome of an [`AuthJob::DomainNtlm`].
    DomainNtlm(DomainNtlmOutcome),
    /// What the pool's registry said of an NTLM final leg.
    NtlmFinalLeg(crate::kerberos::ReplayCheck),
}

impl AuthOutcome {
    /// A refusal made outside the job (a worker that panicked), of the job's kind.
    pub fn refused(kind: JobKind, reason: crate::Reason) -> Self {
        match kind {
            JobKind::Kerberos => AuthOutcome::Kerberos(KerberosOutcome::refused(reason)),
            JobKind::DomainNtlm => AuthOutcome::DomainNtlm(DomainNtlmOutcome::refused(reason)),
            // A job that could not run (a worker's panic): refused, as a replay is.
            JobKind::NtlmFinalLeg => {
                AuthOutcome::NtlmFinalLeg(crate::kerberos::ReplayCheck::Replayed)
            }
        }
    }
}

/// An outcome as filed, waiting for its request.
pub(crate) enum Finished {
    Kerberos {
        result: Result<KerberosAccepted, KerberosRejection>,
        identity: Option<Result<String, crate::Reason>>,
    },
    DomainNtlm(Result<DomainSignIn, DomainFailure>),
    NtlmFinalLeg(crate::kerberos::ReplayCheck),
}

impl From<AuthOutcome> for Finished {
    fn from(o: AuthOutcome) -> Self {
        match o {
            AuthOutcome::Kerberos(k) => Finished::Kerberos {
                result: k.result,
                identity: k.identity,
            },
            AuthOutcome::DomainNtlm(d) => Finished::DomainNtlm(d.result),
            AuthOutcome::NtlmFinalLeg(c) => Finished::NtlmFinalLeg(c),
        }
    }
}

/// Outcomes handed back and not yet taken by the request they belong to. The request is judged
/// again right after its outcome is filed, so this stays tiny; the bound and the expiry only
/// matter when that request never gets back to the same path.
pub(crate) struct FinishedJobs<T> {
    map: HashMap<[u8; 32], (u64, T)>,
    order: VecDeque<(u64, [u8; 32])>,
}

/// Outcomes kept at most.
pub(crate) const MAX_FINISHED_JOBS: usize = 4096;
/// Seconds an outcome waits for its request.
pub(crate) const FINISHED_JOB_TTL_SECS: u64 = 10;

impl<T> FinishedJobs<T> {
    pub(crate) fn new() -> Self {
        FinishedJobs {
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn expire(&mut self, now: u64) {
        while let Some(&(until, key)) = self.order.front() {
            if until > now && self.map.len() < MAX_FINISHED_JOBS {
                break;
            }
            self.order.pop_front();
            if self.map.get(&key).is_some_and(|(u, _)| *u == until) {
                self.map.remove(&key);
            }
        }
    }

    pub(crate) fn insert(&mut self, key: [u8; 32], value: T, now: u64) {
        self.expire(now);
        let until = now.saturating_add(FINISHED_JOB_TTL_SECS);
        self.map.insert(key, (until, value));
        self.order.push_back((until, key));
    }

    pub(crate) fn take(&mut self, key: &[u8; 32], now: u64) -> Option<T> {
        self.expire(now);
        self.map.remove(key).map(|(_, r)| r)
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::{FINISHED_JOB_TTL_SECS, FinishedJobs, MAX_FINISHED_JOBS};

    #[test]
    fn finished_jobs_are_bounded_and_expire() {
        let key = |i: usize| crate::kerberos::sha256(&i.to_le_bytes());
        let mut jobs = FinishedJobs::new();
        for i in 0..MAX_FINISHED_JOBS + 100 {
            jobs.insert(key(i), i, 1000);
        }
        assert_eq!(jobs.len(), MAX_FINISHED_JOBS);
        assert!(jobs.take(&key(0), 1000).is_none(), "the oldest made room");
        assert_eq!(
            jobs.take(&key(MAX_FINISHED_JOBS + 99), 1000),
            Some(MAX_FINISHED_JOBS + 99)
        );
        assert!(
            jobs.take(&key(MAX_FINISHED_JOBS + 99), 1000).is_none(),
            "taken once"
        );
        jobs.insert(key(1), 1, 2000);
        assert!(
            jobs.take(&key(1), 2000 + FINISHED_JOB_TTL_SECS).is_none(),
            "expired"
        );
        assert_eq!(jobs.len(), 0);
    }
}
