//! The entry point: [`SecurityCore`] judges every message from a client and signs every message to one.

mod challenges;
mod construction;
mod credentials;
mod deferred;
mod digest_requests;
mod handshakes;
mod policies;
mod pool;
mod signatures;

use std::sync::Arc;
use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use parking_lot::Mutex;
use sagw_digest::{DigestError, DigestResponse, DigestServer, NonceCounter, NonceKey};
use sagw_ntlm::{AuthenticateMessage, NtlmAcceptor};
use sagw_sip::{AuthHeader, AuthHeaderBuilder, Message, uri_without_params};

use crate::address::{address_user, canonical_address};
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
    /// A pool's registry records NTLM final legs too ([`Decision::Deferred`] to a worker).
    final_legs_pooled: bool,
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
    /// The constant challenge values of the MS schemes.
    ms_challenges: challenges::MsChallenges,
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
        ctx: &TransportContext,
        id: PolicyId,
        policy: &ChallengePolicy,
        now: SystemTime,
        rng: &mut dyn Rng,
    ) -> Decision {
        self.on_request_in_dialog(msg, ctx, id, policy, None, now, rng)
    }

    /// [`SecurityCore::on_request_under`] for a request in a dialog that the gateway delivered to
    /// the client under `dialog_local`, another address than its identity (a PBX that dialled
    /// its contact, a trunk's DID): the client's From in that dialog is that address (RFC 3261
    /// §12.1.1), so a From naming it is taken as well as one naming the identity. The proxy
    /// says which dialogs those are (`InboundContext::dialog_local`); a REGISTER's never counts.
    #[allow(clippy::too_many_arguments)]
    pub fn on_request_in_dialog(
        &self,
        msg: &Message,
        _ctx: &TransportContext,
        id: PolicyId,
        policy: &ChallengePolicy,
        dialog_local: Option<&str>,
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
                return self.enforce_identity(msg, &facts, decision, dialog_local);
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
        self.enforce_identity(msg, &facts, decision, dialog_local)
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

    /// Ends every SA the credentials-store account `user` signed in to: under the identity it
    /// signs in as (its `sip` line, else the default), as the admin API's revocation by account
    /// name means. [`revoke_user`](Self::revoke_user) with `None` revoked the default identity
    /// even for an account with a `sip` line: none of its SAs, or another principal's.
    pub fn revoke_account(&self, user: &str) -> usize {
        self.revoke_identity(&self.identity_of(user))
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
        dialog_local: Option<&str>,
    ) -> Decision {
        let Decision::Authenticated(auth) = decision else {
            return decision;
        };
        let from_uri = facts
            .from
            .map(|na| uri_without_params(na.uri))
            .unwrap_or_default();
        let register = msg.method() == Some("REGISTER");
        let dialog_address =
            || !register && self.lends_dialog_address(from_uri, &auth.identity, dialog_local);
        let reason = if !same_identity(from_uri, &auth.identity) && !dialog_address() {
            Reason::SaMismatch
        } else if register
            && !same_identity(
                facts
                    .to
                    .map(|na| uri_without_params(na.uri))
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

    /// Whether a request of `identity`'s may have `from_uri` as its From because it is the address
    /// of a dialog delivered to it under another address than its identity (`dialog_local`, see
    /// `sagw_proxy::InboundContext::dialog_local`): unless that address is another user's
    /// identity, however it is spelt. A server behind may address a client by any To, and a call
    /// to alice addressed to bob (a forward, or a caller's choice) lends her no right to write
    /// bob's name.
    pub fn lends_dialog_address(
        &self,
        from_uri: &str,
        identity: &str,
        dialog_local: Option<&str>,
    ) -> bool {
        dialog_local.is_some_and(|local| {
            if !uri_is_address(from_uri, local) {
                return false;
            }
            let canonical = canonical_address(local);
            if same_identity(&canonical, identity) {
                return true;
            }
            let (store, domain) = (&self.credentials, &self.config.sip_domain);
            let written = trim(uri_without_params(local));
            let secure = canonical
                .strip_prefix("sip:")
                .map(|rest| format!("sips:{rest}"));
            // Some user's identity as written (`sip:carol@pbx.example.com:5080`), or as the
            // registrar reads it.
            let exact = [Some(written), Some(&*canonical), secure.as_deref()];
            if exact
                .into_iter()
                .flatten()
                .any(|a| store.owns_identity(a, domain))
            {
                return false;
            }
            // A user part holding an `@` as written is read to the last `@` here, and to the
            // first by Kamailio and PJSIP: whose it is depends on who reads it. (An escaped
            // `%40` is read alike by all.)
            if written
                .rsplit_once('@')
                .is_some_and(|(userinfo, _)| userinfo.contains('@'))
            {
                return false;
            }
            // A user's name at another host of the registrar's (its address, an alias: a stock
            // registrar looks the user part up alone), or a user's number as a `tel:` URI. The
            // client's own user part is its own at whatever host (its registered contact), when
            // no other user's identity has it too (two branches' extension 100).
            match address_user(&canonical) {
                Some(user) => {
                    let own = address_user(&canonical_address(identity)) == Some(user);
                    store.user_part_owners(user, domain) <= usize::from(own)
                }
                None => true,
            }
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
                    || match AuthHeader::parse(h.value) {
                        Ok(a) => self.policies.iter().any(|p| self.is_ours(p, &a)),
                        // Its realm cannot be read: in a scheme this gateway serves it is taken as
                        // ours, or a next hop's more lenient parser could read credentials meant
                        // for the gateway beside the identity it asserts. A server further on
                        // would refuse credentials that do not parse anyway.
                        Err(_) => self.serves_scheme_of(h.value),
                    });
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

/// Whether `uri` (a name-addr's URI, its URI parameters ignored) names `identity`, compared as
/// the From of a request is: for the other headers in which a client names itself (a REFER's
/// `Referred-By`), which may stay only when they name the identity it proved.
pub fn uri_names_identity(uri: &str, identity: &str) -> bool {
    same_identity(uri_without_params(uri), identity)
}

/// Whether `uri` (a From's URI, its URI parameters ignored) is `address` (a URI without
/// parameters): for SIP URIs as identities compare (scheme `sip`/`sips` alike, ASCII case
/// ignored), any other scheme (`tel:+4930…`) as text, ASCII case ignored.
fn uri_is_address(uri: &str, address: &str) -> bool {
    fn sip_rest(s: &str) -> Option<&str> {
        let (scheme, rest) = s.split_once(':')?;
        (scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips")).then_some(rest)
    }
    let (uri, address) = (
        trim(uri_without_params(uri)),
        trim(uri_without_params(address)),
    );
    match (sip_rest(uri), sip_rest(address)) {
        (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
        (None, None) => uri.eq_ignore_ascii_case(address),
        _ => false,
    }
}

/// `sip:User@Example.com` and `sip:user@example.com` are one identity; a `sips:` From is the same user.
fn same_identity(from_uri: &str, identity: &str) -> bool {
    fn norm(s: &str) -> &str {
        let s = trim(s);
        s.strip_prefix("sips:")
            .or_else(|| s.strip_prefix("sip:"))
            .unwrap_or(s)
    }
    // ASCII case folding of both sides, compared without lower-cased copies. A `:` in the user
    // part is a password to SIP (the registrar binds `sip:alice@…` for `sip:alice:x@…`): no
    // identity has one, and no URI with one is anybody's.
    let from = norm(from_uri).as_bytes();
    // Bytes, not `str::split`: this runs for every request (twice for a REGISTER).
    let user = from
        .iter()
        .position(|&b| b == b'@')
        .map_or(from, |at| &from[..at]);
    !from_uri.is_empty()
        && from.eq_ignore_ascii_case(norm(identity).as_bytes())
        && !user.contains(&b':')
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
    fn no_uri_with_a_password_is_anybodys_identity() {
        use super::same_identity;
        assert!(same_identity(
            "sip:Alice@Example.com",
            "sip:alice@example.com"
        ));
        assert!(same_identity(
            "sips:alice@example.com",
            "sip:alice@example.com"
        ));
        assert!(!same_identity(
            "sip:alice:x@example.com",
            "sip:alice:x@example.com"
        ));
        assert!(!same_identity(
            "sip:alice:x@example.com",
            "sip:alice@example.com"
        ));
        assert!(!same_identity("", ""));
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
