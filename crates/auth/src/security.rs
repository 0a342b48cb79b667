//! The entry point: [`SecurityCore`] judges every message from a client and signs every message to one.

mod deferred;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use parking_lot::Mutex;
use sagw_digest::{DigestError, DigestResponse, DigestServer, NonceCounter, NonceKey};
use sagw_ntlm::{AuthenticateMessage, NtlmAcceptor, NtlmError};
use sagw_sip::{AuthHeader, AuthHeaderBuilder, Message};

use crate::buffer::{BufferParams, Direction, MessageFacts, with_scratch, write_facts};
use crate::config::{ChallengeFamily, ChallengePolicy, CoreConfig, SignatureHeader};
use crate::counters::{Counters, Reason, Scheme};
use crate::credentials::CredentialStore;
use crate::date::http_date;
use crate::decision::{
    Authenticated, Binding, Challenge, Decision, Forbidden, ResponseVerdict, TransportContext,
};
use crate::directory::{AccountDirectory, DomainAccount};
use crate::domain::{
    DomainNtlmJob, DomainNtlmVerifier, DomainSettings, DomainSignIn, is_unavailable,
};
use crate::handshake::Recomputed;
use crate::handshake::{ChallengeSource, NtlmHandshakes};
use crate::hex;
use crate::jobs::{AuthJob, AuthOutcome, Finished, FinishedJobs};
use crate::kerberos::{
    KerberosAccepted, KerberosBackend, KerberosJob, KerberosOutcome, KerberosRejection,
    KerberosReplayRegistry, NoReplayRegistry, ReplayCheck, principal_to_identity, sha256,
};
use crate::manager::{FinalLegRefusal, ManagerLimits, SaHandle, SaLookup, SaManager};
use crate::policy::{AuthPolicy, PolicyError, PolicyId, PolicyOffer, SchemeSet};
use crate::pool::{RecordError, SaRecord, SaResume, SaSecret};
use crate::replay::{ReplayVerdict, ReplayWindow};
use crate::rng::Rng;
use crate::sa::{Mechanism, NewSa, Opaque, SaScheme, SecurityAssociation};

/// Seconds an SA outlives the registration it carries, so a refresh sent on time still verifies.
const REGISTER_MARGIN_SECS: u32 = 30;

/// Policy 0 as built by [`SecurityCore::new`], for [`SecurityCore::policy`]'s fallback.
static DEFAULT_POLICY: PolicyState = PolicyState {
    schemes: SchemeSet::ALL,
    digest: None,
};

/// Why a message could not be signed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignError {
    #[error("the security association {0} has expired or was revoked")]
    Expired(Opaque),
    #[error("the Kerberos context could not make a MIC: {0}")]
    Gss(String),
}

struct DigestState {
    server: DigestServer,
    /// Shared by every policy's Digest server: nonces are unique whatever realm minted them.
    counter: Mutex<NonceCounter>,
    key: [u8; 32],
    /// What the credentials of a user the store does not have are checked against: one HA1 (hex,
    /// parsed per request like a stored one) per hash function, derived from the nonce key, so
    /// that nobody outside knows it.
    decoy: [(sagw_digest::Algorithm, String); 3],
}

impl DigestState {
    fn decoy_ha1(&self, base: sagw_digest::Algorithm) -> Option<sagw_digest::Ha1> {
        self.decoy
            .iter()
            .find(|(a, _)| *a == base)
            .and_then(|(a, hex)| sagw_digest::Ha1::from_hex(*a, hex).ok())
    }
}

/// A registered policy: the schemes it offers and, when it differs from the core's, its own
/// Digest server (realm and algorithm order; same nonce key, so nonces stay stateless).
struct PolicyState {
    schemes: SchemeSet,
    digest: Option<DigestServer>,
}

/// The security core. Shareable across threads (`&self` everywhere); time and randomness come in.
pub struct SecurityCore {
    config: CoreConfig,
    credentials: Arc<dyn CredentialStore>,
    ntlm: Option<NtlmAcceptor>,
    kerberos: Option<Box<dyn KerberosBackend>>,
    kerberos_domain: Option<String>,
    /// AP-REQs are accepted off the caller's thread ([`Decision::Deferred`]).
    kerberos_offload: bool,
    /// Outcomes of deferred sign-ins (Kerberos, domain NTLM), waiting for their request to be
    /// judged again.
    finished: Mutex<FinishedJobs<Finished>>,
    /// NTLM users the credentials store does not have are verified by the domain.
    domain_ntlm: Option<Arc<dyn DomainNtlmVerifier>>,
    domain_settings: DomainSettings,
    /// SIP identities of domain accounts (NTLM through the domain, Kerberos principals).
    directory: Option<Arc<dyn AccountDirectory>>,
    kerberos_replay: Arc<dyn KerberosReplayRegistry>,
    kerberos_replay_unavailable: std::sync::atomic::AtomicU64,
    digest: Option<DigestState>,
    /// Index 0 is the core's own configuration ([`PolicyId::DEFAULT`]).
    policies: Vec<PolicyState>,
    sas: SaManager,
    /// NTLM challenges, recomputed at the final leg: nothing is kept for a first leg.
    ntlm_handshakes: NtlmHandshakes,
    counters: Counters,
    /// The constant end of each scheme's `Authentication-Info` value.
    info_tails: InfoTails,
}

/// `, qop="auth", targetname="…", realm="…"` per SA scheme, built once with
/// [`AuthHeaderBuilder`] (its quoting) instead of on every signed message.
struct InfoTails {
    ntlm: String,
    kerberos: String,
}

impl InfoTails {
    fn tail(targetname: Option<&str>, realm: &str) -> String {
        let built = AuthHeaderBuilder::new("-")
            .quoted("qop", "auth")
            .quoted("targetname", targetname.unwrap_or(""))
            .quoted("realm", realm)
            .build();
        // `- qop=...` becomes `, qop=...`: what follows the parameters written before it.
        format!(",{}", built.strip_prefix('-').unwrap_or(&built))
    }

    fn get(&self, scheme: SaScheme) -> &str {
        match scheme {
            SaScheme::Ntlm => &self.ntlm,
            SaScheme::Kerberos => &self.kerberos,
        }
    }
}

/// One credentials header the client sent for this gateway.
struct Credentials<'m> {
    header: AuthHeader<'m>,
    /// Where the header is in [`Message::headers`] order: what [`Authenticated::credentials_at`]
    /// carries to [`SecurityCore::strip_credentials`].
    at: usize,
    family: ChallengeFamily,
    /// What the message's From, To, CSeq and the buffer's other headers say, read once.
    facts: MessageFacts<'m>,
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl SecurityCore {
    pub fn new(config: CoreConfig, credentials: Arc<dyn CredentialStore>) -> Self {
        let ntlm = config.ntlm.as_ref().map(|n| {
            NtlmAcceptor::new(sagw_ntlm::AcceptorConfig {
                identity: n.identity.clone(),
                max_clock_skew: n.max_clock_skew,
                include_timestamp: n.include_timestamp,
                version: n.version,
            })
        });
        let digest = config.digest.as_ref().map(|d| DigestState {
            server: DigestServer::new(
                sagw_digest::DigestConfig {
                    node_id: config.node_id,
                    ..d.config.clone()
                },
                NonceKey::new(d.nonce_key),
            ),
            counter: Mutex::new(NonceCounter::new(
                d.max_tracked_nonces,
                d.config.nonce_lifetime,
            )),
            key: d.nonce_key,
            decoy: [
                sagw_digest::Algorithm::Md5,
                sagw_digest::Algorithm::Sha256,
                sagw_digest::Algorithm::Sha512_256,
            ]
            .map(|a| {
                let seed = [
                    b"sagw decoy HA1 for unknown users\0".as_slice(),
                    &d.nonce_key,
                ]
                .concat();
                (a, a.hash_hex(&seed))
            }),
        });
        let limits = ManagerLimits {
            recent_final_legs_max: config.handshakes.max_recent_final_legs,
        };
        let sas = SaManager::new(limits).with_max_per_identity(config.max_sas_per_identity);
        let ntlm_handshakes = NtlmHandshakes::new(
            config.handshakes.window,
            config.ntlm.as_ref().and_then(|n| n.challenge_key.as_ref()),
        );
        let info_tails = InfoTails {
            ntlm: InfoTails::tail(
                config.ntlm.as_ref().map(|n| n.targetname.as_str()),
                &config.realm,
            ),
            kerberos: InfoTails::tail(None, &config.realm),
        };
        SecurityCore {
            info_tails,
            config,
            credentials,
            ntlm,
            kerberos: None,
            kerberos_domain: None,
            kerberos_offload: false,
            finished: Mutex::new(FinishedJobs::new()),
            domain_ntlm: None,
            domain_settings: DomainSettings::default(),
            directory: None,
            kerberos_replay: Arc::new(NoReplayRegistry),
            kerberos_replay_unavailable: std::sync::atomic::AtomicU64::new(0),
            digest,
            policies: vec![PolicyState {
                schemes: SchemeSet::ALL,
                digest: None,
            }],
            sas,
            ntlm_handshakes,
            counters: Counters::default(),
        }
    }

    /// Enables Kerberos with an acceptor; `identity_domain` overrides the SIP domain of identities
    /// (default: the principal's realm in lower case).
    pub fn with_kerberos(
        mut self,
        backend: Box<dyn KerberosBackend>,
        identity_domain: Option<String>,
    ) -> Self {
        self.kerberos = Some(backend);
        self.kerberos_domain = identity_domain;
        self.info_tails.kerberos = InfoTails::tail(self.kerberos_targetname(), &self.config.realm);
        self
    }

    /// Kerberos AP-REQs are not accepted inline: [`SecurityCore::on_request`] answers
    /// [`Decision::Deferred`] with the job, which the caller runs elsewhere
    /// ([`run_job`](Self::run_job), on a worker thread), files ([`job_done`](Self::job_done))
    /// and then judges the request again, which takes the outcome instead of accepting. The
    /// result is what the inline path gives.
    pub fn with_kerberos_offload(mut self) -> Self {
        self.kerberos_offload = true;
        self
    }

    /// NTLM sign-ins of users the credentials store does not have are verified by the domain
    /// (`verifier`, blocking): always off the caller's thread ([`Decision::Deferred`] with
    /// [`AuthJob::DomainNtlm`]). The store is asked first: its users are verified here.
    pub fn with_domain_ntlm(
        mut self,
        verifier: Arc<dyn DomainNtlmVerifier>,
        settings: DomainSettings,
    ) -> Self {
        self.domain_ntlm = Some(verifier);
        self.domain_settings = settings;
        self
    }

    /// The directory that names the SIP identity of domain accounts: NTLM users the domain
    /// verified and Kerberos principals (instead of `sip:<user>@<domain>`). Asked on the worker
    /// thread right after the domain or the KDC vouched for the account; inline only for a core
    /// without Kerberos offload (tests).
    pub fn with_directory(mut self, directory: Arc<dyn AccountDirectory>) -> Self {
        self.directory = Some(directory);
        self
    }

    /// Whether NTLM users outside the credentials store go to the domain.
    pub fn serves_domain_ntlm(&self) -> bool {
        self.domain_ntlm.is_some() && self.ntlm.is_some()
    }

    /// The pool's check that an authenticator is used once across every node (asked after each
    /// accepted AP-REQ, inline or on a worker). The default, [`NoReplayRegistry`], leaves it to
    /// MIT's replay cache.
    pub fn with_kerberos_replay_registry(
        mut self,
        registry: Arc<dyn KerberosReplayRegistry>,
    ) -> Self {
        self.kerberos_replay = registry;
        self
    }

    /// Whether Kerberos is enabled ([`with_kerberos`](Self::with_kerberos)).
    pub fn serves_kerberos(&self) -> bool {
        self.kerberos.is_some()
    }

    /// AP-REQs accepted because the replay registry could not tell (since start).
    pub fn kerberos_replay_unavailable(&self) -> u64 {
        self.kerberos_replay_unavailable
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn accept_kerberos(&self, backend: &dyn KerberosBackend, ap_req: &[u8]) -> KerberosOutcome {
        let accepted = match backend.accept(ap_req) {
            Ok(a) => a,
            Err(rejection) => {
                return KerberosOutcome {
                    result: Err(rejection),
                    registry_unavailable: false,
                    identity: None,
                };
            }
        };
        let Some(key) = backend.replay_key(ap_req) else {
            return KerberosOutcome {
                result: Ok(accepted),
                registry_unavailable: false,
                identity: None,
            };
        };
        match self
            .kerberos_replay
            .first_use(&key, backend.clock_skew().saturating_mul(2))
        {
            ReplayCheck::First => KerberosOutcome {
                result: Ok(accepted),
                registry_unavailable: false,
                identity: None,
            },
            ReplayCheck::Replayed => KerberosOutcome {
                result: Err(KerberosRejection {
                    reason: Reason::ReplayedToken,
                    detail: "authenticator already used in the pool".into(),
                }),
                registry_unavailable: false,
                identity: None,
            },
            ReplayCheck::Unavailable => {
                self.kerberos_replay_unavailable
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                KerberosOutcome {
                    result: Ok(accepted),
                    registry_unavailable: true,
                    identity: None,
                }
            }
        }
    }

    /// Computes NTLM server challenges with `source` instead of the keyed MAC: for replaying a
    /// recorded sign-in, whose challenge no MAC reproduces ([`crate::RecordedChallenges`]).
    pub fn with_ntlm_challenges(mut self, source: Box<dyn ChallengeSource>) -> Self {
        self.ntlm_handshakes.set_source(source);
        self
    }

    /// Keeps the pool journal: what the other gateways of a pool, or the next start of this one,
    /// must learn ([`crate::pool`]); drained with [`drain_pool_journal`](Self::drain_pool_journal).
    pub fn enable_pool_journal(mut self) -> Self {
        self.sas.enable_journal();
        self
    }

    /// SAs made, moved on and ended since the last call.
    pub fn drain_pool_journal(&self) -> crate::pool::PoolJournal {
        self.sas.drain_journal()
    }

    /// The SA as a record another gateway (or the next start) can take in with
    /// [`adopt_sa`](Self::adopt_sa). Key material: seal it.
    pub fn export_sa(&self, sa: &SecurityAssociation) -> Result<SaRecord, RecordError> {
        let secret = match sa.mechanism() {
            Mechanism::Ntlm(session) => {
                let (key, flags) = session
                    .export()
                    .ok_or_else(|| RecordError::NotExportable("NTLM session without ESS".into()))?;
                SaSecret::Ntlm {
                    exported_session_key: *key.as_bytes(),
                    negotiate_flags: flags,
                }
            }
            Mechanism::Kerberos(session) => SaSecret::Kerberos(zeroize::Zeroizing::new(
                session.export().map_err(RecordError::NotExportable)?,
            )),
        };
        Ok(SaRecord {
            opaque: sa.opaque(),
            version: sa.version(),
            identity: sa.identity().to_owned(),
            epid: sa.epid().to_owned(),
            created: sa.created(),
            hard_expiry: sa.hard_expiry(),
            idle_ttl: sa.idle_ttl(),
            secret,
            final_token: sa.peek_final_token(),
        })
    }

    /// Takes in an SA made elsewhere in the pool (or before a restart), going on from `resume`.
    /// It replaces whatever this gateway held for the same opaque or endpoint. Refused when its
    /// time is up or its keys cannot be used here (a Kerberos SA on a gateway without Kerberos).
    pub fn adopt_sa(
        &self,
        record: SaRecord,
        resume: &SaResume,
        now: SystemTime,
    ) -> Result<SaHandle, RecordError> {
        let secs = unix_secs(now);
        let idle_deadline = resume
            .idle_deadline
            .unwrap_or_else(|| secs.saturating_add(u64::from(record.idle_ttl)));
        if secs >= record.hard_expiry || secs >= idle_deadline {
            return Err(RecordError::Ended);
        }
        let mechanism = match &record.secret {
            SaSecret::Ntlm {
                exported_session_key,
                negotiate_flags,
            } => Mechanism::Ntlm(
                sagw_ntlm::NtlmSession::from_exported_session_key(
                    &sagw_ntlm::Key16::from_bytes(*exported_session_key),
                    *negotiate_flags,
                )
                .map_err(|e| RecordError::NotImportable(e.to_string()))?,
            ),
            SaSecret::Kerberos(ctx) => {
                let backend = self.kerberos.as_ref().ok_or_else(|| {
                    RecordError::NotImportable("Kerberos is not enabled here".into())
                })?;
                Mechanism::Kerberos(
                    backend
                        .import_session(ctx)
                        .map_err(RecordError::NotImportable)?,
                )
            }
        };
        let window = match resume.window {
            Some(bytes) => Some(ReplayWindow::from_bytes(&bytes).ok_or(RecordError::Malformed)?),
            None => None,
        };
        let sa = SecurityAssociation::new(NewSa {
            opaque: record.opaque,
            version: record.version,
            identity: record.identity.clone(),
            epid: record.epid.clone(),
            mechanism,
            now: record.created,
            hard_expiry: record.hard_expiry,
            idle_ttl: record.idle_ttl,
            final_token: record.final_token.clone(),
        });
        sa.resume(resume.snum_after, window, idle_deadline);
        Ok(self.sas.adopt(sa, &self.counters).handle)
    }

    /// Drops an SA another gateway of the pool took over (it lives on there).
    pub fn forget_sa(&self, opaque: Opaque) -> bool {
        self.sas.forget(opaque)
    }

    /// Ends an SA revoked on another gateway of the pool.
    pub fn revoke_from_pool(&self, opaque: Opaque) -> bool {
        self.sas.revoke_from_pool(opaque, &self.counters)
    }

    /// Ends every SA of an identity revoked on another gateway of the pool.
    pub fn revoke_identity_from_pool(&self, identity: &str) -> usize {
        self.sas.revoke_identity_from_pool(identity, &self.counters)
    }

    /// Registers a policy a caller can name per request ([`SecurityCore::on_request_under`]).
    /// Refused when it offers nothing, or a scheme this core has no acceptor for (call
    /// [`SecurityCore::with_kerberos`] first for Kerberos).
    pub fn add_policy(&mut self, policy: AuthPolicy) -> Result<PolicyId, PolicyError> {
        if policy.schemes.is_empty() {
            return Err(PolicyError::Empty);
        }
        if let Some(s) = policy.schemes.iter().find(|s| !self.serves(*s)) {
            return Err(PolicyError::NotServed(s));
        }
        let digest = match (&policy.digest, &self.digest) {
            (Some(offer), Some(d)) if policy.schemes.contains(Scheme::Digest) => {
                let mut cfg = d.server.config().clone();
                cfg.realm = offer.realm.clone();
                cfg.algorithms = offer.algorithms.clone();
                cfg.validate()
                    .map_err(|e| PolicyError::Digest(e.to_string()))?;
                Some(DigestServer::new(cfg, NonceKey::new(d.key)))
            }
            _ => None,
        };
        let id = u16::try_from(self.policies.len()).map_err(|_| PolicyError::TooMany)?;
        self.policies.push(PolicyState {
            schemes: policy.schemes,
            digest,
        });
        Ok(PolicyId(id))
    }

    /// What a policy offers, as the core will challenge with it (for logs and probes).
    pub fn policy_offer(&self, id: PolicyId) -> Option<PolicyOffer<'_>> {
        let p = self.policies.get(id.index())?;
        let digest = self.digest_server(p).map(|d| d.config());
        Some(PolicyOffer {
            schemes: p.schemes.iter().filter(|s| self.serves(*s)).collect(),
            digest_realm: digest.map(|c| c.realm.as_str()),
            digest_algorithms: digest.map_or(&[], |c| c.algorithms.as_slice()),
        })
    }

    fn serves(&self, s: Scheme) -> bool {
        match s {
            Scheme::Kerberos => self.kerberos.is_some(),
            Scheme::Ntlm => self.ntlm.is_some(),
            Scheme::Digest => self.digest.is_some(),
        }
    }

    fn offers(&self, p: &PolicyState, s: Scheme) -> bool {
        p.schemes.contains(s) && self.serves(s)
    }

    /// The Digest server of a policy, when it offers Digest.
    fn digest_server<'a>(&'a self, p: &'a PolicyState) -> Option<&'a DigestServer> {
        if !p.schemes.contains(Scheme::Digest) {
            return None;
        }
        let core = &self.digest.as_ref()?.server;
        Some(p.digest.as_ref().unwrap_or(core))
    }

    /// The policy `id` names; an id this core did not hand out means the default (ids come from
    /// [`SecurityCore::add_policy`], so that is a caller bug, not an input error).
    fn policy(&self, id: PolicyId) -> &PolicyState {
        self.policies
            .get(id.index())
            .or_else(|| self.policies.first())
            .unwrap_or(&DEFAULT_POLICY)
    }

    pub fn config(&self) -> &CoreConfig {
        &self.config
    }
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
    pub fn sas(&self) -> &SaManager {
        &self.sas
    }

    /// Housekeeping: drop expired SAs and forget final legs whose challenge can no longer verify.
    /// Call every few seconds.
    pub fn expire(&self, now: SystemTime) -> usize {
        self.sas.expire(unix_secs(now), &self.counters)
    }

    // ------------------------------------------------------------------------------------------
    // Challenges

    fn family_for(policy: &ChallengePolicy, msg: &Message) -> ChallengeFamily {
        if msg.method().is_some_and(|m| m == "REGISTER") {
            policy.register
        } else {
            policy.other
        }
    }

    fn ntlm_targetname(&self) -> Option<&str> {
        self.config.ntlm.as_ref().map(|n| n.targetname.as_str())
    }

    fn kerberos_targetname(&self) -> Option<&str> {
        self.kerberos.as_ref().map(|k| k.targetname())
    }

    /// A fresh challenge: one header per enabled scheme (Kerberos, NTLM, Digest) and `Date`.
    pub fn challenge(
        &self,
        family: ChallengeFamily,
        cause: Option<Reason>,
        stale: bool,
        now: SystemTime,
        rng: &mut dyn Rng,
    ) -> Challenge {
        self.challenge_under(PolicyId::DEFAULT, family, cause, stale, now, rng)
    }

    /// A fresh challenge with what policy `id` offers.
    pub fn challenge_under(
        &self,
        id: PolicyId,
        family: ChallengeFamily,
        cause: Option<Reason>,
        stale: bool,
        now: SystemTime,
        rng: &mut dyn Rng,
    ) -> Challenge {
        self.challenge_with(self.policy(id), family, cause, stale, now, rng)
    }

    fn challenge_with(
        &self,
        p: &PolicyState,
        family: ChallengeFamily,
        cause: Option<Reason>,
        stale: bool,
        now: SystemTime,
        rng: &mut dyn Rng,
    ) -> Challenge {
        let name = family.challenge_header();
        let mut headers = vec![("Date", http_date(now))];
        let kerberos = self
            .kerberos_targetname()
            .filter(|_| p.schemes.contains(Scheme::Kerberos));
        let ntlm = self
            .ntlm_targetname()
            .filter(|_| p.schemes.contains(Scheme::Ntlm));
        // Only the MS schemes carry a version: a Digest-only challenge does not format it.
        let version = if kerberos.is_some() || ntlm.is_some() {
            self.config.version.to_string()
        } else {
            String::new()
        };
        if let Some(target) = kerberos {
            headers.push((name, self.ms_challenge("Kerberos", target, &version)));
        }
        if let Some(target) = ntlm {
            headers.push((name, self.ms_challenge("NTLM", target, &version)));
        }
        if let Some(server) = self.digest_server(p) {
            let mut salt = [0u8; 8];
            rng.fill_bytes(&mut salt);
            for value in server.challenges(now, salt, stale) {
                headers.push((name, value));
            }
        }
        self.counters.challenge();
        Challenge {
            status: family.status(),
            reason_phrase: family.reason_phrase(),
            headers,
            cause,
        }
    }

    fn ms_challenge(&self, scheme: &str, target: &str, version: &str) -> String {
        AuthHeaderBuilder::new(scheme)
            .quoted("qop", "auth")
            .quoted("realm", &self.config.realm)
            .quoted("targetname", target)
            .token("version", version)
            .build()
    }

    fn rechallenge(
        &self,
        msg: &Message,
        p: &PolicyState,
        family: ChallengeFamily,
        cause: Reason,
        now: SystemTime,
        rng: &mut dyn Rng,
    ) -> Decision {
        if is_ack_or_cancel(msg) {
            self.counters.discarded();
            return Decision::Discard(cause);
        }
        Decision::Challenge(self.challenge_with(p, family, Some(cause), false, now, rng))
    }

    // ------------------------------------------------------------------------------------------
    // Requests

    /// Judges a request from a client, challenging with the configured policy.
    pub fn on_request(
        &self,
        msg: &Message,
        ctx: &TransportContext,
        now: SystemTime,
        rng: &mut dyn Rng,
    ) -> Decision {
        self.on_request_with_policy(msg, ctx, &self.config.policy, now, rng)
    }

    /// [`SecurityCore::on_request`] with a challenge policy of the caller's (e.g. per listener, for
    /// clients on one transport that want the other header family).
    pub fn on_request_with_policy(
        &self,
        msg: &Message,
        ctx: &TransportContext,
        policy: &ChallengePolicy,
        now: SystemTime,
        rng: &mut dyn Rng,
    ) -> Decision {
        self.on_request_under(msg, ctx, PolicyId::DEFAULT, policy, now, rng)
    }

    /// [`SecurityCore::on_request_with_policy`] under a registered policy `id`: challenges offer
    /// only its schemes (its Digest realm and algorithms), and credentials of any other scheme or
    /// realm are not taken: the request is challenged again, as if it carried none.
    ///
    /// `_ctx` (where the request came from) no longer decides anything: NTLM first legs keep no
    /// state, per source or otherwise. It stays in the signature for its many callers.
    pub fn on_request_under(
        &self,
        msg: &Message,
        _ctx: &TransportContext,
        id: PolicyId,
        policy: &ChallengePolicy,
        now: SystemTime,
        rng: &mut dyn Rng,
    ) -> Decision {
        let p = self.policy(id);
        let facts = MessageFacts::of(msg);
        // An epid is kept with every handshake and SA and hashed on every lookup: bound it before
        // anything is kept for it.
        if endpoint_epid(&facts, Direction::Request)
            .is_some_and(|e| e.len() > self.config.max_epid_len)
        {
            self.counters.epid_refused();
            if is_ack_or_cancel(msg) {
                self.counters.discarded();
                return Decision::Discard(Reason::EpidTooLong);
            }
            return Decision::Reject {
                status: 400,
                reason_phrase: "Bad Request",
                reason: Reason::EpidTooLong,
            };
        }
        // The signature covers the request-line method, not CSeq's: the two must agree.
        if let (Some(method), Some(cseq)) = (msg.method(), facts.cseq)
            && method != cseq.method
        {
            return Decision::Reject {
                status: 400,
                reason_phrase: "CSeq Method Mismatch",
                reason: Reason::MalformedHeader,
            };
        }
        let default_family = Self::family_for(policy, msg);
        let creds = match self.find_credentials(msg, p, facts) {
            Ok(Some(c)) => c,
            Ok(None) => {
                return self.rechallenge_unless_fresh(msg, p, default_family, None, now, rng);
            }
            Err(reason) => {
                return self.rechallenge_unless_fresh(
                    msg,
                    p,
                    default_family,
                    Some(reason),
                    now,
                    rng,
                );
            }
        };
        let decision = match creds.header.scheme {
            s if s.eq_ignore_ascii_case("Digest") => self.digest_request(msg, p, &creds, now, rng),
            s => match SaScheme::from_token(s) {
                Some(scheme) => self.ms_request(msg, p, &creds, scheme, now, rng),
                None => self.rechallenge(msg, p, creds.family, Reason::UnsupportedScheme, now, rng),
            },
        };
        self.enforce_identity(msg, &facts, decision)
    }

    fn rechallenge_unless_fresh(
        &self,
        msg: &Message,
        p: &PolicyState,
        family: ChallengeFamily,
        cause: Option<Reason>,
        now: SystemTime,
        rng: &mut dyn Rng,
    ) -> Decision {
        if is_ack_or_cancel(msg) {
            self.counters.discarded();
            return Decision::Discard(cause.unwrap_or(Reason::NoCredentials));
        }
        Decision::Challenge(self.challenge_with(p, family, cause, false, now, rng))
    }

    /// The first Authorization / Proxy-Authorization header meant for this gateway under policy
    /// `p` (a scheme it offers, our realm); other realms' headers belong to servers further on and
    /// are left alone, and so are schemes the policy does not offer (the request is then challenged
    /// with what it does offer).
    fn find_credentials<'m>(
        &self,
        msg: &'m Message,
        p: &PolicyState,
        facts: MessageFacts<'m>,
    ) -> Result<Option<Credentials<'m>>, Reason> {
        let mut malformed = false;
        for (name, family) in [
            ("Authorization", ChallengeFamily::Www),
            ("Proxy-Authorization", ChallengeFamily::Proxy),
        ] {
            for (at, value) in msg.header_all_indexed(name) {
                // Only headers of a scheme we serve are parsed: `Basic` token68 credentials or
                // another proxy's parameters are none of our business, malformed or not.
                let scheme = value.trim_start().split([' ', '\t']).next().unwrap_or("");
                if !self.serves_scheme(p, scheme) {
                    continue;
                }
                let header = match AuthHeader::parse(value) {
                    Ok(h) => h,
                    Err(_) => {
                        malformed = true;
                        continue;
                    }
                };
                if self.is_ours(p, &header) {
                    return Ok(Some(Credentials {
                        header,
                        at,
                        family,
                        facts,
                    }));
                }
            }
        }
        if malformed {
            Err(Reason::MalformedHeader)
        } else {
            Ok(None)
        }
    }

    fn serves_scheme(&self, p: &PolicyState, scheme: &str) -> bool {
        if scheme.eq_ignore_ascii_case("Digest") {
            return self.offers(p, Scheme::Digest);
        }
        match SaScheme::from_token(scheme) {
            Some(s) => self.offers(p, s.into()),
            None => false,
        }
    }

    fn is_ours(&self, p: &PolicyState, h: &AuthHeader<'_>) -> bool {
        let realm = h.param("realm");
        if h.scheme.eq_ignore_ascii_case("Digest") {
            return self
                .digest_server(p)
                .is_some_and(|d| realm == Some(d.config().realm.as_str()));
        }
        let enabled = match SaScheme::from_token(h.scheme) {
            Some(s) => self.offers(p, s.into()),
            None => false,
        };
        // Clients omit realm on signed messages only rarely; an opaque without realm is still ours if
        // it names one of our SAs, which verification checks.
        enabled && realm.is_none_or(|r| r == self.config.realm)
    }

    fn targetname_for(&self, scheme: SaScheme) -> Option<&str> {
        match scheme {
            SaScheme::Ntlm => self.ntlm_targetname(),
            SaScheme::Kerberos => self.kerberos_targetname(),
        }
    }

    fn ms_request(
        &self,
        msg: &Message,
        p: &PolicyState,
        creds: &Credentials<'_>,
        scheme: SaScheme,
        now: SystemTime,
        rng: &mut dyn Rng,
    ) -> Decision {
        let h = &creds.header;
        match (h.param("gssapi-data"), scheme) {
            (Some(token), SaScheme::Ntlm) => self.ntlm_leg(msg, p, creds, token, now, rng),
            (Some(token), SaScheme::Kerberos) => self.kerberos_leg(msg, p, creds, token, now, rng),
            (None, _) => match self.verify_signed(msg, creds, scheme, Direction::Request, now) {
                Ok(sa) => Decision::Authenticated(Authenticated {
                    identity: sa.identity().to_owned(),
                    scheme: sa.scheme().into(),
                    binding: Binding::Sa {
                        sa,
                        family: creds.family,
                        established_now: false,
                    },
                    credentials_at: creds.at,
                    evicted: Vec::new(),
                }),
                Err(reason) => self.rechallenge(msg, p, creds.family, reason, now, rng),
            },
        }
    }

    fn client_version(h: &AuthHeader<'_>) -> u8 {
        // No version parameter at all is an LCS 2005-era client: protocol version 2.
        h.param("version")
            .and_then(|v| v.trim().parse::<u8>().ok())
            .unwrap_or(2)
    }

    fn ntlm_leg(
        &self,
        msg: &Message,
        p: &PolicyState,
        creds: &Credentials<'_>,
        token: &str,
        now: SystemTime,
        rng: &mut dyn Rng,
    ) -> Decision {
        let (Some(acceptor), Some(target)) = (&self.ntlm, self.ntlm_targetname()) else {
            return self.rechallenge(msg, p, creds.family, Reason::UnsupportedScheme, now, rng);
        };
        let h = &creds.header;
        let epid = endpoint_epid(&creds.facts, Direction::Request).unwrap_or("");
        if token.is_empty() {
            // Leg 1 of connectionless NTLM: the empty token stands in for NEGOTIATE.
            if is_ack_or_cancel(msg) {
                self.counters.discarded();
                return Decision::Discard(Reason::NoCredentials);
            }
            self.counters.handshake_started(Scheme::Ntlm);
            // Nothing is stored: the final leg recomputes this challenge from its opaque and epid.
            let issued = self.ntlm_handshakes.issue(&self.sas, epid, now, rng);
            let opaque = issued.opaque;
            let gssapi = B64.encode(
                acceptor
                    .challenge(issued.server_challenge, issued.timestamp)
                    .challenge_message(),
            );
            // The opaque and the version written without `fmt`, as `{:08X}` and `{}` would.
            let mut opaque_text = [0u8; 8];
            let mut version_text = itoa::Buffer::new();
            let value = AuthHeaderBuilder::new(h.scheme)
                .quoted("qop", "auth")
                .quoted(
                    "opaque",
                    hex::upper_into(&opaque.0.to_be_bytes(), &mut opaque_text),
                )
                .quoted("gssapi-data", &gssapi)
                .quoted("targetname", target)
                .quoted("realm", &self.config.realm)
                .token("version", version_text.format(self.config.version))
                .build();
            self.counters.challenge();
            return Decision::Continue(Challenge {
                status: creds.family.status(),
                reason_phrase: creds.family.reason_phrase(),
                headers: vec![
                    ("Date", http_date(now)),
                    (creds.family.challenge_header(), value),
                ],
                cause: None,
            });
        }
        // Leg 3: AUTHENTICATE for the challenge named by opaque.
        let mut fail = |reason: Reason| {
            self.counters.handshake_failed(Scheme::Ntlm, reason);
            self.rechallenge(msg, p, creds.family, reason, now, rng)
        };
        let Some(opaque) = h.param("opaque").and_then(Opaque::parse) else {
            return fail(Reason::MalformedHeader);
        };
        // The challenge of this opaque and epid, if it is of the current or the previous window.
        // For another epid, or an opaque this gateway never issued, it is a challenge the client
        // never saw, and the NTLMv2 proof below fails.
        let Some(challenge) = self.ntlm_handshakes.recompute(opaque, epid, now) else {
            return fail(Reason::UnknownHandshake);
        };
        let Ok(bytes) = B64.decode(token) else {
            return fail(Reason::MalformedToken);
        };
        let auth = match AuthenticateMessage::parse(&bytes) {
            Ok(a) => a,
            Err(e) => return fail(ntlm_reason(&e)),
        };
        let user = auth.user().to_string();
        // An unknown user costs the same work as a wrong password, so response times do not tell
        // which account names exist.
        let (nt_hash, known) = match self.credentials.nt_hash(&user) {
            Some(h) => (h, true),
            None if self.domain_ntlm.is_some() => {
                // Not in the store: the domain's to verify (the store is asked first).
                let pending = acceptor.challenge(challenge.server_challenge, challenge.timestamp);
                let leg = NtlmFinalLeg {
                    opaque,
                    challenge: &challenge,
                    pending: &pending,
                    bytes: &bytes,
                    auth: &auth,
                    epid,
                };
                return self.domain_ntlm_leg(msg, p, creds, &leg, now, rng);
            }
            None => (sagw_ntlm::NtHash::from_bytes([0x5A; 16]), false),
        };
        let accepted = acceptor
            .challenge(challenge.server_challenge, challenge.timestamp)
            .accept(&auth, &nt_hash, now);
        let session = match accepted {
            Ok(s) if known => s,
            Ok(_) => return fail(Reason::UnknownUser),
            Err(_) if !known => return fail(Reason::UnknownUser),
            Err(e) => return fail(ntlm_reason(&e)),
        };
        let identity = self.identity_of(&user);
        self.establish_ntlm(
            msg, p, creds, opaque, &challenge, epid, session, identity, now, rng,
        )
    }

    /// The end of an NTLM final leg whose proof verified (locally or by the domain): one SA per
    /// challenge, then the SA.
    #[allow(clippy::too_many_arguments)]
    fn establish_ntlm(
        &self,
        msg: &Message,
        p: &PolicyState,
        creds: &Credentials<'_>,
        opaque: Opaque,
        challenge: &Recomputed,
        epid: &str,
        session: sagw_ntlm::NtlmSession,
        identity: String,
        now: SystemTime,
        rng: &mut dyn Rng,
    ) -> Decision {
        // One SA per challenge: a replayed final leg, or a second one for the same opaque, is
        // refused. Only a final leg whose proof verified gets here, so a flood cannot fill this.
        match self
            .sas
            .claim_final_leg(opaque, challenge.accepted_until, unix_secs(now))
        {
            Ok(()) => {}
            Err(FinalLegRefusal::AlreadyUsed) => {
                self.counters
                    .handshake_failed(Scheme::Ntlm, Reason::ReplayedToken);
                return self.rechallenge(msg, p, creds.family, Reason::ReplayedToken, now, rng);
            }
            Err(FinalLegRefusal::Full) => {
                self.counters
                    .handshake_failed(Scheme::Ntlm, Reason::HandshakeLimit);
                return Decision::Reject {
                    status: 503,
                    reason_phrase: "Service Unavailable",
                    reason: Reason::HandshakeLimit,
                };
            }
        }
        // The final leg repeats the version (pidgin-sipe and Microsoft clients send it on every
        // leg); without one it is an LCS 2005-era client, as on the first leg.
        let version = Self::client_version(&creds.header).min(self.config.version);
        let sa = self.new_sa(
            opaque,
            version,
            identity,
            epid,
            Mechanism::Ntlm(session),
            now,
            None,
            None,
        );
        self.finish_handshake(msg, p, creds, sa, Scheme::Ntlm, now, rng)
    }

    #[allow(clippy::too_many_arguments)]
    fn new_sa(
        &self,
        opaque: Opaque,
        version: u8,
        identity: String,
        epid: &str,
        mechanism: Mechanism,
        now: SystemTime,
        ticket_end: Option<SystemTime>,
        final_token: Option<Vec<u8>>,
    ) -> SecurityAssociation {
        let secs = unix_secs(now);
        let mut hard = secs.saturating_add(self.config.effective_sa_lifetime().as_secs());
        if let Some(end) = ticket_end {
            hard = hard.min(unix_secs(end));
        }
        SecurityAssociation::new(NewSa {
            opaque,
            version,
            identity,
            epid: epid.to_owned(),
            mechanism,
            now: secs,
            hard_expiry: hard,
            idle_ttl: u32::try_from(self.config.sa_idle_ttl.as_secs()).unwrap_or(u32::MAX),
            final_token,
        })
    }

    /// Verifies the signature a version-4 final leg already carries, then makes the SA live.
    #[allow(clippy::too_many_arguments)]
    fn finish_handshake(
        &self,
        msg: &Message,
        p: &PolicyState,
        creds: &Credentials<'_>,
        sa: SecurityAssociation,
        scheme: Scheme,
        now: SystemTime,
        rng: &mut dyn Rng,
    ) -> Decision {
        // Verify the version-4 signature before the SA replaces the endpoint's old one: a final leg
        // whose own signature fails proves nothing and must not disturb a working SA.
        if creds.header.param("response").is_some()
            && let Err(reason) = self.verify_with(msg, creds, &sa, Direction::Request, now)
        {
            self.counters.handshake_failed(scheme, reason);
            return self.rechallenge(msg, p, creds.family, reason, now, rng);
        }
        let established = self.sas.establish(sa, &self.counters);
        self.counters.handshake_completed(scheme);
        let sa = established.handle;
        Decision::Authenticated(Authenticated {
            identity: sa.identity().to_owned(),
            scheme,
            binding: Binding::Sa {
                sa,
                family: creds.family,
                established_now: true,
            },
            credentials_at: creds.at,
            evicted: established.evicted,
        })
    }

    fn kerberos_leg(
        &self,
        msg: &Message,
        p: &PolicyState,
        creds: &Credentials<'_>,
        token: &str,
        now: SystemTime,
        rng: &mut dyn Rng,
    ) -> Decision {
        let Some(backend) = &self.kerberos else {
            return self.rechallenge(msg, p, creds.family, Reason::UnsupportedScheme, now, rng);
        };
        let ap_req = if creds.header.param("targetname") != Some(backend.targetname()) {
            Err(Reason::SaMismatch)
        } else {
            match B64.decode(token) {
                Ok(t) if !t.is_empty() => Ok(t),
                _ => Err(Reason::MalformedToken),
            }
        };
        // Offloaded: the outcome a worker filed for this very token, else the job to run. Nothing
        // is counted until the outcome is here, so the counters read as they do inline.
        type KerberosResult = Result<KerberosAccepted, KerberosRejection>;
        let finished: Option<(KerberosResult, Option<Result<String, Reason>>)> = match &ap_req {
            Ok(ap_req) if self.kerberos_offload => {
                let job = KerberosJob::new(ap_req.clone());
                match self.finished.lock().take(job.key(), unix_secs(now)) {
                    Some(Finished::Kerberos { result, identity }) => Some((result, identity)),
                    Some(Finished::DomainNtlm(_)) | None => {
                        return Decision::Deferred(AuthJob::Kerberos(job));
                    }
                }
            }
            _ => None,
        };
        self.counters.handshake_started(Scheme::Kerberos);
        let mut fail = |reason: Reason| {
            self.counters.handshake_failed(Scheme::Kerberos, reason);
            self.rechallenge(msg, p, creds.family, reason, now, rng)
        };
        let ap_req = match ap_req {
            Ok(t) => t,
            Err(reason) => return fail(reason),
        };
        let (result, directory_identity) = match finished {
            Some(f) => f,
            None => (self.accept_kerberos(backend.as_ref(), &ap_req).result, None),
        };
        let accepted = match result {
            Ok(a) => a,
            Err(rejection) => return fail(rejection.reason),
        };
        let Some(mapped) =
            principal_to_identity(&accepted.client_principal, self.kerberos_domain.as_deref())
        else {
            return fail(Reason::PrincipalInstance);
        };
        // With a directory, the principal's SIP identity is the directory's (asked on the
        // worker; inline only when this core does not offload Kerberos).
        let directory_identity = directory_identity.or_else(|| {
            let directory = self.directory.as_ref()?;
            self.kerberos_identity(directory.as_ref(), &accepted)
        });
        let identity = match directory_identity {
            None => mapped,
            Some(Ok(identity)) => identity,
            Some(Err(reason)) if is_unavailable(reason) => {
                return self.unavailable(msg, Scheme::Kerberos, reason);
            }
            Some(Err(reason)) => return fail(reason),
        };
        let epid = endpoint_epid(&creds.facts, Direction::Request).unwrap_or("");
        let opaque = self.sas.fresh_opaque(rng);
        let version = Self::client_version(&creds.header).min(self.config.version);
        let sa = self.new_sa(
            opaque,
            version,
            identity,
            epid,
            Mechanism::Kerberos(accepted.session),
            now,
            accepted.ticket_end,
            accepted.ap_rep,
        );
        self.finish_handshake(msg, p, creds, sa, Scheme::Kerberos, now, rng)
    }

    /// A registrar granted the client of `auth` a registration of `granted_secs` (the 2xx to its
    /// REGISTER says so): its SA must live at least that long (plus a margin, so a refresh sent on
    /// time still verifies), within its hard lifetime. Only the *granted* value counts: the
    /// Expires a client asks for is its own choice, and the registrar may grant less.
    pub fn register_granted(&self, auth: &Authenticated, granted_secs: u32, now: SystemTime) {
        if let Binding::Sa { sa, .. } = &auth.binding {
            sa.raise_idle_ttl(
                granted_secs.saturating_add(REGISTER_MARGIN_SECS),
                unix_secs(now),
            );
            self.sas.note_progress(sa);
        }
    }

    /// Ends every SA of `identity` (e.g. its user was removed from the credentials store, or
    /// their password changed). Returns how many.
    pub fn revoke_identity(&self, identity: &str) -> usize {
        self.sas.revoke_identity(identity, &self.counters)
    }

    /// Ends every SA a credentials-store `user` signed in to, its identity being `sip_identity`
    /// (what the store said) or the default `sip:<user>@<sip_domain>`, as at sign-in. For a user
    /// the store no longer has, or whose password or identity changed.
    pub fn revoke_user(&self, user: &str, sip_identity: Option<&str>) -> usize {
        let identity = match sip_identity {
            Some(s) => s.to_owned(),
            None => self.default_identity(user),
        };
        self.revoke_identity(&identity)
    }

    /// The SIP identity a credentials-store user signs in as: the store's, else the default.
    fn identity_of(&self, user: &str) -> String {
        self.credentials
            .sip_identity(user)
            .unwrap_or_else(|| self.default_identity(user))
    }

    fn default_identity(&self, user: &str) -> String {
        // `sip:<user lower-cased>@<domain>`, written without `fmt` (every Digest request).
        let domain = &self.config.sip_domain;
        let mut id = String::with_capacity(5 + user.len() + domain.len());
        id.push_str("sip:");
        if user.is_ascii() {
            id.extend(user.bytes().map(|b| char::from(b.to_ascii_lowercase())));
        } else {
            // str::to_lowercase, for its context rules (a final sigma).
            id.push_str(&user.to_lowercase());
        }
        id.push('@');
        id.push_str(domain);
        id
    }

    fn verify_signed(
        &self,
        msg: &Message,
        creds: &Credentials<'_>,
        scheme: SaScheme,
        dir: Direction,
        now: SystemTime,
    ) -> Result<SaHandle, Reason> {
        let label: Scheme = scheme.into();
        let result = (|| {
            let h = &creds.header;
            let opaque = h
                .param("opaque")
                .ok_or(Reason::Unsigned)
                .and_then(|o| Opaque::parse(o).ok_or(Reason::MalformedHeader))?;
            let sa = match self.sas.lookup(opaque, unix_secs(now), &self.counters) {
                SaLookup::Live(sa) => sa,
                SaLookup::Expired => return Err(Reason::ExpiredSa),
                SaLookup::Unknown => return Err(Reason::UnknownSa),
            };
            if sa.scheme() != scheme {
                return Err(Reason::SaMismatch);
            }
            self.verify_with(msg, creds, &sa, dir, now)?;
            self.sas.note_progress(&sa);
            Ok(sa)
        })();
        if let Err(reason) = result {
            self.counters.verify_failed(label, reason);
        }
        result
    }

    /// Checks one client signature against `sa` and records its `cnum`.
    fn verify_with(
        &self,
        msg: &Message,
        creds: &Credentials<'_>,
        sa: &SecurityAssociation,
        dir: Direction,
        now: SystemTime,
    ) -> Result<(), Reason> {
        let h = &creds.header;
        // The five parameters in one pass over the header's (the parser refuses duplicates, so
        // the first of each name is the only one, as `AuthHeader::param` finds it).
        let (mut realm, mut targetname, mut crand, mut cnum_text, mut response) =
            (None, None, None, None, None);
        for p in &h.params {
            let slot = match p.name.len() {
                5 if p.name.eq_ignore_ascii_case("realm") => &mut realm,
                5 if p.name.eq_ignore_ascii_case("crand") => &mut crand,
                4 if p.name.eq_ignore_ascii_case("cnum") => &mut cnum_text,
                8 if p.name.eq_ignore_ascii_case("response") => &mut response,
                10 if p.name.eq_ignore_ascii_case("targetname") => &mut targetname,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(p.value.as_ref());
            }
        }
        let realm = realm.unwrap_or(&self.config.realm);
        let targetname = targetname.ok_or(Reason::MalformedHeader)?;
        if realm != self.config.realm || Some(targetname) != self.targetname_for(sa.scheme()) {
            return Err(Reason::SaMismatch);
        }
        if endpoint_epid(&creds.facts, dir).unwrap_or("") != sa.epid() {
            return Err(Reason::SaMismatch);
        }
        let (Some(crand), Some(cnum_text), Some(response)) = (crand, cnum_text, response) else {
            return Err(Reason::Unsigned);
        };
        let cnum: u32 = cnum_text.parse().map_err(|_| Reason::MalformedHeader)?;
        match sa.check_cnum(cnum) {
            ReplayVerdict::Fresh => {}
            ReplayVerdict::Replayed => return Err(Reason::Replay),
            ReplayVerdict::TooOld => return Err(Reason::OutsideWindow),
        }
        let params = BufferParams {
            scheme: h.scheme,
            rand: crand,
            num: cnum_text,
            realm,
            targetname,
            version: sa.version(),
        };
        with_scratch(|scratch| {
            let buffer = &mut scratch.buffer;
            write_facts(msg, &creds.facts, &params, buffer);
            match sa.mechanism() {
                Mechanism::Ntlm(session) => session
                    .verify_from_client_hex(buffer, response)
                    .map_err(|_| Reason::BadSignature),
                Mechanism::Kerberos(session) => {
                    let token = hex::decode(response).ok_or(Reason::BadSignature)?;
                    session
                        .verify_mic(buffer, &token)
                        .map_err(|_| Reason::BadSignature)
                }
            }
        })?;
        // Two copies of one message racing each other: only one wins the number.
        match sa.accept_cnum(cnum) {
            ReplayVerdict::Fresh => {}
            ReplayVerdict::Replayed => return Err(Reason::Replay),
            ReplayVerdict::TooOld => return Err(Reason::OutsideWindow),
        }
        sa.touch(unix_secs(now));
        self.counters.verified(sa.scheme().into());
        Ok(())
    }

    fn digest_request(
        &self,
        msg: &Message,
        p: &PolicyState,
        creds: &Credentials<'_>,
        now: SystemTime,
        rng: &mut dyn Rng,
    ) -> Decision {
        let (Some(d), Some(server)) = (&self.digest, self.digest_server(p)) else {
            return self.rechallenge(msg, p, creds.family, Reason::UnsupportedScheme, now, rng);
        };
        let mut fail = |reason: Reason, stale: bool| {
            self.counters.handshake_failed(Scheme::Digest, reason);
            if is_ack_or_cancel(msg) {
                self.counters.discarded();
                return Decision::Discard(reason);
            }
            Decision::Challenge(self.challenge_with(p, creds.family, Some(reason), stale, now, rng))
        };
        let params = creds
            .header
            .params
            .iter()
            .map(|p| (p.name, p.value.as_ref()));
        let resp = match DigestResponse::from_params(params) {
            Ok(r) => r,
            Err(e) => return fail(digest_reason(&e), false),
        };
        let method = msg.method().unwrap_or("");
        let algorithm = match resp.algorithm {
            None => sagw_digest::Algorithm::Md5,
            Some(a) => match sagw_digest::Algorithm::from_token(a) {
                Some(a) => a,
                None => return fail(Reason::UnsupportedScheme, false),
            },
        };
        // -sess variants share the base algorithm's HA1. (userhash=true clients are not supported:
        // their username is a hash the store cannot index; they fail as an unknown user.)
        let stored = self
            .credentials
            .digest_ha1(resp.username, resp.realm, algorithm.base());
        let known = stored.is_some();
        // A user the store does not have is verified against the decoy HA1: the same nonce MAC,
        // HA1 parse and response computation as a known user with a wrong password, so the time
        // a refusal takes does not tell which users exist (it was refused before any hashing;
        // NTLM already does the same work for both). Counted unknown_user all the same.
        let Some(ha1) = stored.or_else(|| d.decoy_ha1(algorithm.base())) else {
            return fail(Reason::UnknownUser, false);
        };
        let verified = match server.verify(&resp, method, &ha1, now) {
            Ok(v) if known => v,
            // Only with the nonce key: the decoy is derived from it.
            Ok(_) => return fail(Reason::UnknownUser, false),
            Err(e) => {
                let reason = match e {
                    DigestError::WrongResponse if !known => Reason::UnknownUser,
                    e => digest_reason(&e),
                };
                return fail(reason, reason.is_stale());
            }
        };
        // An ACK that gets here is not the ACK of a transaction the proxy matched on this flow
        // (those skip authentication: `belongs_to_open_transaction` in
        // crates/proxy/src/edge/request.rs); it is the ACK of a 2xx, a transaction of its own that
        // goes end to end and gets no response. It once skipped the nonce-count check, and the
        // `uri` is checked for no method, so one captured ACK's credentials carried any number of
        // ACKs, to any target, while the nonce lived. An ACK must name its own Request-URI (RFC
        // 2617 §3.2.2.5; checked before the count, so a refused ACK does not use one up) and use
        // a fresh count like any request. Other methods keep `uri` unchecked (sipp writes the
        // server's address there; their nonce counts stop replays). The reason is SaMismatch:
        // credentials made for something else, like a realm mismatch.
        if msg.method() == Some("ACK") && msg.request_uri() != Some(verified.uri.as_str()) {
            return fail(Reason::SaMismatch, false);
        }
        if let Err(e) = d.counter.lock().check_verified(&verified, now) {
            let reason = digest_reason(&e);
            return fail(reason, reason.is_stale());
        }
        let mut salt = [0u8; 8];
        rng.fill_bytes(&mut salt);
        let next = server.make_nonce(now, salt);
        let info = server.authentication_info(&verified, &ha1, Some(&next));
        self.counters.handshake_completed(Scheme::Digest);
        let identity = self.identity_of(resp.username);
        Decision::Authenticated(Authenticated {
            identity,
            scheme: Scheme::Digest,
            binding: Binding::Digest {
                family: creds.family,
                authentication_info: info,
            },
            credentials_at: creds.at,
            evicted: Vec::new(),
        })
    }

    /// The From of a request must be the authenticated user (403 otherwise): the next hop trusts the
    /// identity the gateway asserts, so one user must not speak as another. A REGISTER's AOR (To)
    /// must be the user's own too: else one user could bind another's AOR to their own contact and
    /// receive (or, with `Contact: *`, end) that user's calls. The credentials store names one SIP
    /// identity per user, so the user's own AOR is exactly the identity it authenticated as.
    ///
    /// Both refusals carry the authenticated binding: the answer is signed with the SA (or Digest
    /// binding) the request was verified with, and with nothing else.
    fn enforce_identity(
        &self,
        msg: &Message,
        facts: &MessageFacts<'_>,
        decision: Decision,
    ) -> Decision {
        let Decision::Authenticated(auth) = decision else {
            return decision;
        };
        let from_uri = facts
            .from
            .map(|na| strip_uri_params(na.uri))
            .unwrap_or_default();
        let reason = if !same_identity(from_uri, &auth.identity) {
            Reason::SaMismatch
        } else if msg.method() == Some("REGISTER")
            && !same_identity(
                facts
                    .to
                    .map(|na| strip_uri_params(na.uri))
                    .unwrap_or_default(),
                &auth.identity,
            )
        {
            Reason::ForeignAor
        } else {
            return Decision::Authenticated(auth);
        };
        self.counters.forbidden();
        Decision::Forbidden(Forbidden {
            status: 403,
            reason_phrase: "Forbidden",
            reason,
            verified: auth,
        })
    }

    /// Removes the credentials meant for this gateway (our schemes and realms) before a request is
    /// forwarded: the next hop trusts the identity the gateway asserts, not the client's proof.
    /// Credentials for other realms (a server further on) stay. `verified_at` is the request's
    /// [`Authenticated::credentials_at`] when nothing edited its headers since it was judged: that
    /// header is ours (it was parsed and checked then) and is not parsed again.
    pub fn strip_credentials(&self, msg: &mut Message, verified_at: Option<usize>) -> usize {
        let mut removed = 0;
        let mut i = 0;
        while let Some(h) = msg.header_at(i) {
            let ours = (h.name.eq_ignore_ascii_case("Authorization")
                || h.name.eq_ignore_ascii_case("Proxy-Authorization"))
                && (verified_at == Some(i + removed)
                    || AuthHeader::parse(h.value)
                        .is_ok_and(|a| self.policies.iter().any(|p| self.is_ours(p, &a))));
            if ours {
                msg.remove_header_at(i);
                removed += 1;
            } else {
                i += 1;
            }
        }
        removed
    }

    // ------------------------------------------------------------------------------------------
    // Responses from clients

    /// Judges a response a client sent to a request the gateway sent it.
    pub fn on_response(&self, msg: &Message, now: SystemTime) -> ResponseVerdict {
        // Responses are judged under the default policy (every scheme served): a response is
        // signed with the SA its endpoint has, whatever policy the SA was made under.
        let facts = MessageFacts::of(msg);
        let creds = match self.find_credentials(msg, self.policy(PolicyId::DEFAULT), facts) {
            Ok(Some(c)) => c,
            Ok(None) => return ResponseVerdict::Unsigned,
            Err(reason) => {
                self.counters.dropped_response();
                return ResponseVerdict::Drop(reason);
            }
        };
        let Some(scheme) = SaScheme::from_token(creds.header.scheme) else {
            return ResponseVerdict::Unsigned;
        };
        match self.verify_signed(msg, &creds, scheme, Direction::Response, now) {
            Ok(sa) => ResponseVerdict::Verified(sa),
            Err(reason) => {
                self.counters.dropped_response();
                ResponseVerdict::Drop(reason)
            }
        }
    }

    // ------------------------------------------------------------------------------------------
    // Signing

    /// The SA of an endpoint, for requests the gateway sends to it (found through the epid the
    /// registrar stored).
    pub fn sa_for_endpoint(&self, identity: &str, epid: &str, now: SystemTime) -> Option<SaHandle> {
        match self
            .sas
            .lookup_endpoint(identity, epid, unix_secs(now), &self.counters)
        {
            SaLookup::Live(sa) => Some(sa),
            _ => None,
        }
    }

    /// Signs a message to the client of `sa`: fresh `srand`, next `snum`, the buffer from the message's
    /// final header values, and `Authentication-Info` (or `Proxy-Authentication-Info` where configured
    /// and the client used that family). An existing header of that name is replaced in place.
    pub fn sign(
        &self,
        msg: &mut Message,
        sa: &SecurityAssociation,
        client_family: ChallengeFamily,
        now: SystemTime,
        rng: &mut dyn Rng,
    ) -> Result<(), SignError> {
        let secs = unix_secs(now);
        if !sa.is_live(secs) {
            return Err(SignError::Expired(sa.opaque()));
        }
        let header = match self.config.signature_header {
            SignatureHeader::AuthenticationInfo => "Authentication-Info",
            SignatureHeader::FollowClient => client_family.info_header(),
        };
        let mut r = [0u8; 4];
        rng.fill_bytes(&mut r);
        // Every text of the header is written into stack buffers, without `fmt` or the heap.
        let mut srand_text = [0u8; 8];
        let srand = hex::upper_into(&r, &mut srand_text);
        let mut snum_text = itoa::Buffer::new();
        let snum = snum_text.format(sa.next_snum());
        let mut opaque_text = [0u8; 8];
        let opaque = hex::upper_into(&sa.opaque().0.to_be_bytes(), &mut opaque_text);
        let scheme = sa.scheme().token();
        let targetname = self.targetname_for(sa.scheme()).unwrap_or("");
        let params = BufferParams {
            scheme,
            rand: srand,
            num: snum,
            realm: &self.config.realm,
            targetname,
            version: sa.version(),
        };
        with_scratch(|scratch| {
            write_facts(msg, &MessageFacts::of(msg), &params, &mut scratch.buffer);
            let mut rspauth_text = [0u8; 32];
            let kerberos_hex;
            let rspauth = match sa.mechanism() {
                Mechanism::Ntlm(session) => {
                    hex::upper_into(&session.sign_as_server(&scratch.buffer), &mut rspauth_text)
                }
                Mechanism::Kerberos(session) => {
                    let mic = session.get_mic(&scratch.buffer).map_err(SignError::Gss)?;
                    kerberos_hex = hex::upper(&mic);
                    kerberos_hex.as_str()
                }
            };
            // What `AuthHeaderBuilder` writes, written directly: the scheme, names and these
            // values (hex digits, decimal, base64) are clean tokens that need no quoting checks,
            // and the constant rest (qop, targetname, realm) was built once by the builder.
            let v = &mut scratch.text;
            v.clear();
            v.push_str(scheme);
            for (i, (name, value)) in [
                ("rspauth", rspauth),
                ("srand", srand),
                ("snum", snum),
                ("opaque", opaque),
            ]
            .into_iter()
            .enumerate()
            {
                v.push_str(if i == 0 { " " } else { ", " });
                v.push_str(name);
                v.push_str("=\"");
                v.push_str(value);
                v.push('"');
            }
            v.push_str(self.info_tails.get(sa.scheme()));
            if let Some(token) = sa.take_final_token() {
                v.push_str(", gssapi-data=\"");
                B64.encode_string(token, v);
                v.push('"');
            }
            msg.set_header(header, v);
            Ok::<(), SignError>(())
        })?;
        // No `touch`: a message to the client proves nothing about it, and anyone can make the
        // gateway send one (a call to the user). Only the client's own verified signatures, and
        // the registrations granted to it, keep its SA alive.
        self.counters.signed(sa.scheme().into());
        Ok(())
    }

    /// Adds what an authenticated request's final response needs: the signature (SA schemes) or the
    /// Digest `Authentication-Info`.
    pub fn finish_response(
        &self,
        msg: &mut Message,
        auth: &Authenticated,
        now: SystemTime,
        rng: &mut dyn Rng,
    ) -> Result<(), SignError> {
        match &auth.binding {
            Binding::Sa { sa, family, .. } => self.sign(msg, sa, *family, now, rng),
            Binding::Digest {
                family,
                authentication_info,
            } => {
                msg.set_header(family.info_header(), authentication_info);
                Ok(())
            }
        }
    }
}

/// What an NTLM final leg brought, checked as far as the credentials lookup.
struct NtlmFinalLeg<'a> {
    opaque: Opaque,
    challenge: &'a Recomputed,
    pending: &'a sagw_ntlm::PendingHandshake,
    bytes: &'a [u8],
    auth: &'a AuthenticateMessage<'a>,
    epid: &'a str,
}

fn endpoint_epid<'m>(facts: &MessageFacts<'m>, dir: Direction) -> Option<&'m str> {
    facts.epid(dir)
}

fn is_ack_or_cancel(msg: &Message) -> bool {
    matches!(msg.method(), Some("ACK") | Some("CANCEL"))
}

fn strip_uri_params(uri: &str) -> &str {
    uri.split(';').next().unwrap_or(uri)
}

/// `sip:User@Example.com` and `sip:user@example.com` are one identity; a `sips:` From is the same user.
fn same_identity(from_uri: &str, identity: &str) -> bool {
    fn norm(s: &str) -> &str {
        let s = s.trim();
        s.strip_prefix("sips:")
            .or_else(|| s.strip_prefix("sip:"))
            .unwrap_or(s)
    }
    // ASCII case folding of both sides, compared without lower-cased copies.
    !from_uri.is_empty() && norm(from_uri).eq_ignore_ascii_case(norm(identity))
}

fn ntlm_reason(e: &NtlmError) -> Reason {
    match e {
        NtlmError::WrongPassword => Reason::WrongPassword,
        NtlmError::ClockSkew { .. } => Reason::ClockSkew,
        NtlmError::NotNtlmV2 { .. } => Reason::WeakNtlm,
        NtlmError::MissingFlags { .. } => Reason::WeakNtlm,
        NtlmError::BadMic => Reason::BadMic,
        _ => Reason::MalformedToken,
    }
}

fn digest_reason(e: &DigestError) -> Reason {
    match e {
        DigestError::Stale => Reason::StaleNonce,
        DigestError::OtherNode => Reason::OtherNode,
        DigestError::BadNonce => Reason::BadNonce,
        DigestError::Replay => Reason::Replay,
        DigestError::NcOutOfWindow => Reason::OutsideWindow,
        DigestError::WrongResponse => Reason::WrongPassword,
        DigestError::UnsupportedAlgorithm | DigestError::UnsupportedQop => {
            Reason::UnsupportedScheme
        }
        DigestError::RealmMismatch => Reason::SaMismatch,
        _ => Reason::MalformedHeader,
    }
}

/// A duration in seconds that fits the SA's u32 fields.
pub fn secs_u32(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}
