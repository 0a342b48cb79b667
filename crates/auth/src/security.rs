//! The entry point: [`SecurityCore`] judges every message from a client and signs every message to one.

mod construction;
mod credentials;
mod deferred;
mod digest_requests;
mod handshakes;
mod signatures;

use std::sync::Arc;
use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use parking_lot::Mutex;
use sagw_digest::{DigestError, DigestResponse, DigestServer, NonceCounter, NonceKey};
use sagw_ntlm::{AuthenticateMessage, NtlmAcceptor};
use sagw_sip::{AuthHeader, AuthHeaderBuilder, Message};

use crate::buffer::{BufferParams, Direction, MessageFacts, with_scratch, write_facts};
use crate::config::{ChallengeFamily, ChallengePolicy, CoreConfig, SignatureHeader};
use crate::counters::{Counters, Reason, Scheme};
use crate::credentials::CredentialStore;
use crate::date::{http_date, unix_secs};
use crate::decision::{
    Authenticated, Binding, Challenge, Decision, Forbidden, ResponseVerdict, TransportContext,
};
use crate::directory::{AccountDirectory, DomainAccount};
use crate::domain::{
    DomainNtlmJob, DomainNtlmVerifier, DomainSettings, DomainSignIn, is_unavailable,
};
use crate::handshake::Recomputed;
use crate::handshake::{ChallengeSource, NtlmHandshakes};
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
use credentials::Found;
use signatures::SignedPresented;

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
    /// The SA is no longer live (past its hard or idle deadline, revoked or replaced): nothing
    /// can be signed with it.
    #[error("the security association {0} has expired or was revoked")]
    Expired(Opaque),
    /// The Kerberos backend failed to make the MIC (GSS error text).
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
    /// The constant parts of an NTLM leg 2's challenge header.
    ntlm_challenge_header: Option<handshakes::NtlmChallengeHeader>,
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

/// The credentials a message presents: one credentials header the client sent for this gateway
/// (what proves a user is the store, [`crate::credentials`]).
struct Presented<'m> {
    header: AuthHeader<'m>,
    /// Where the header is in [`Message::headers`] order: what [`Authenticated::credentials_at`]
    /// carries to [`SecurityCore::strip_credentials`].
    at: usize,
    family: ChallengeFamily,
    /// What the message's From, To, CSeq and the buffer's other headers say, read once.
    facts: MessageFacts<'m>,
}

/// One leg of an NTLM or Kerberos handshake, or a signed request: what it is judged from (the
/// request, the policy it is judged under, the credentials it presents, the time) and the
/// randomness a fresh challenge or opaque draws from. Built once where the leg starts and handed
/// whole to each step after.
struct Leg<'a> {
    msg: &'a Message,
    p: &'a PolicyState,
    presented: &'a Presented<'a>,
    now: SystemTime,
    rng: &'a mut dyn Rng,
}

/// Upper-case hex of `bytes` in the first `2 * bytes.len()` bytes of `out`, without allocating:
/// how the per-message signing path writes `srand`, `opaque` and `rspauth`. Emitted upper-case like
/// OCS, accepted in either case (notes §2.1). `const_hex` writes upper case directly (the `hex`
/// crate wrote lower case only, which then had to be upper-cased in place).
/// Empty when `out` is too short (every caller's buffer fits exactly).
fn upper_hex_into<'o>(bytes: &[u8], out: &'o mut [u8]) -> &'o str {
    out.get_mut(..2 * bytes.len())
        .and_then(|out| sagw_hex::encode_to_str_upper(bytes, out).ok())
        .map_or("", |s| &*s)
}

impl SecurityCore {
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

    /// The configuration the core was built with.
    pub fn config(&self) -> &CoreConfig {
        &self.config
    }
    /// The counters, for the gateway's metrics ([`Counters::snapshot`]).
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
    /// The SA manager, for operators: listing, revoking, looking up SAs.
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
        let kerberos = self
            .kerberos_targetname()
            .filter(|_| p.schemes.contains(Scheme::Kerberos));
        let ntlm = self
            .ntlm_targetname()
            .filter(|_| p.schemes.contains(Scheme::Ntlm));
        let digest = self.digest_server(p);
        // Sized once for every header it gets, rather than grown as they are pushed.
        let mut headers = Vec::with_capacity(
            1 + usize::from(kerberos.is_some())
                + usize::from(ntlm.is_some())
                + digest.map_or(0, |d| d.config().algorithms.len()),
        );
        headers.push(("Date", http_date(now)));
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
        if let Some(server) = digest {
            let mut salt = [0u8; 8];
            rng.fill_bytes(&mut salt);
            headers.extend(
                server
                    .challenge_values(now, salt, stale)
                    .map(|value| (name, value)),
            );
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

    fn rechallenge_leg(&self, leg: &mut Leg<'_>, cause: Reason) -> Decision {
        self.rechallenge(
            leg.msg,
            leg.p,
            leg.presented.family,
            cause,
            leg.now,
            leg.rng,
        )
    }

    /// A handshake leg that failed: counted against its scheme's handshakes, then challenged
    /// again.
    fn fail_leg(&self, leg: &mut Leg<'_>, scheme: Scheme, reason: Reason) -> Decision {
        self.counters.handshake_failed(scheme, reason);
        self.rechallenge_leg(leg, reason)
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
        let presented = match self.find_credentials(msg, p, facts) {
            Ok(Some(Found::Full(c))) => c,
            Ok(Some(Found::Signed(s))) => {
                let decision = self.signed_request(msg, p, &s, now, rng);
                return self.enforce_identity(msg, &facts, decision);
            }
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
        let decision = match presented.header.scheme {
            s if s.eq_ignore_ascii_case("Digest") => {
                self.digest_request(msg, p, &presented, now, rng)
            }
            s => match SaScheme::from_token(s) {
                Some(scheme) => {
                    let mut leg = Leg {
                        msg,
                        p,
                        presented: &presented,
                        now,
                        rng,
                    };
                    self.ms_request(&mut leg, scheme)
                }
                None => self.rechallenge(
                    msg,
                    p,
                    presented.family,
                    Reason::UnsupportedScheme,
                    now,
                    rng,
                ),
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

    fn targetname_for(&self, scheme: SaScheme) -> Option<&str> {
        match scheme {
            SaScheme::Ntlm => self.ntlm_targetname(),
            SaScheme::Kerberos => self.kerberos_targetname(),
        }
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
    // Requests the gateway sends to a client (signing them, and verifying the client's responses,
    // is in security/signatures.rs)

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
}

/// What an NTLM final leg brought, checked as far as the credentials lookup.
struct NtlmFinalLeg<'a> {
    opaque: Opaque,
    challenge: &'a Recomputed,
    pending: &'a sagw_ntlm::PendingHandshake,
    bytes: &'a [u8],
    auth: &'a AuthenticateMessage<'a>,
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
        let s = trim(s);
        s.strip_prefix("sips:")
            .or_else(|| s.strip_prefix("sip:"))
            .unwrap_or(s)
    }
    // ASCII case folding of both sides, compared without lower-cased copies.
    !from_uri.is_empty() && norm(from_uri).eq_ignore_ascii_case(norm(identity))
}

/// `str::trim`, without its decoding of a character at each end when both end bytes are ASCII
/// and not white space (as they are in every URI and identity): a white-space character is
/// either one of those ASCII bytes or a multi-byte one, whose first and last bytes are not ASCII.
fn trim(s: &str) -> &str {
    let kept = |b: Option<&u8>| b.is_some_and(|&b| b.is_ascii() && !char::from(b).is_whitespace());
    let b = s.as_bytes();
    if kept(b.first()) && kept(b.last()) {
        s
    } else {
        s.trim()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn trim_is_str_trim() {
        let ends = [
            "", " ", "\t", "\r\n", "\u{0b}", "\u{0c}", "\u{a0}", "\u{2003}", "\u{3000}", "\u{e9}",
            "x", ";", "\u{85}", "\u{200b}", "\u{feff}",
        ];
        for a in ends {
            for b in ends {
                for mid in ["", "sip:a@b", " ", "\u{a0}x\u{a0}"] {
                    let s = format!("{a}{mid}{b}");
                    assert_eq!(super::trim(&s), s.trim(), "{s:?}");
                }
            }
        }
    }

    #[test]
    fn upper_hex_into_is_the_upper_case_of_the_crate_and_of_fmt() {
        let mut out = [0u8; 6];
        assert_eq!(
            super::upper_hex_into(&[0x01, 0xab, 0xff], &mut out),
            "01ABFF"
        );
        let v = 0x0a0b_c0deu32;
        let mut out = [0u8; 8];
        assert_eq!(
            super::upper_hex_into(&v.to_be_bytes(), &mut out),
            format!("{v:08X}")
        );
        let sig = [0x5a; 16];
        let mut out = [0u8; 32];
        assert_eq!(
            super::upper_hex_into(&sig, &mut out),
            sig.iter().map(|b| format!("{b:02X}")).collect::<String>()
        );
        // A longer buffer keeps its tail; a shorter one gets nothing.
        let mut out = [b'.'; 4];
        assert_eq!(super::upper_hex_into(&[0xc0], &mut out), "C0");
        assert_eq!(&out, b"C0..");
        let mut out = [0u8; 3];
        assert_eq!(super::upper_hex_into(&[1, 2], &mut out), "");
    }
}
