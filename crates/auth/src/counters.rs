//! Counters an operator graphs: handshakes, failures by scheme and reason, SA churn.
//! Plain atomics; the gateway exports a [`CountersSnapshot`] to Prometheus.

use std::sync::atomic::{AtomicU64, Ordering};

use sagw_digest::DigestError;
use sagw_ntlm::NtlmError;

use crate::sa::SaScheme;

/// Authentication schemes, for labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// NTLM (MS-SIPAE SA), label `ntlm`.
    Ntlm,
    /// Kerberos (MS-SIPAE SA), label `kerberos`.
    Kerberos,
    /// RFC 7616 Digest (no SA), label `digest`.
    Digest,
}

impl Scheme {
    /// Every scheme, in the order [`CountersSnapshot::by_scheme`] lists them.
    pub const ALL: [Scheme; 3] = [Scheme::Ntlm, Scheme::Kerberos, Scheme::Digest];
    /// The metric label value: `ntlm`, `kerberos` or `digest`.
    pub fn label(self) -> &'static str {
        match self {
            Scheme::Ntlm => "ntlm",
            Scheme::Kerberos => "kerberos",
            Scheme::Digest => "digest",
        }
    }
}

impl From<SaScheme> for Scheme {
    fn from(s: SaScheme) -> Self {
        match s {
            SaScheme::Ntlm => Scheme::Ntlm,
            SaScheme::Kerberos => Scheme::Kerberos,
        }
    }
}

/// Why authentication of a message failed. Each value is something an operator can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The credentials header could not be parsed, or a parameter is missing, duplicated or garbled.
    MalformedHeader,
    /// The handshake token (NTLM message, AP-REQ, Digest fields) is malformed.
    MalformedToken,
    /// The user is not in the credential store.
    UnknownUser,
    /// The password (NTProofStr, Digest response) is wrong. For NTLM this is also what a final leg
    /// for a challenge this gateway did not issue looks like (a forged `opaque`, another epid, or a
    /// challenge issued before a restart under another key): the proof is checked against the
    /// challenge recomputed from the final leg, and nothing else tells them apart.
    WrongPassword,
    /// Client and server clocks differ by more than allowed.
    ClockSkew,
    /// NTLMv1, LM or anonymous NTLM, or a flag set the gateway does not accept.
    WeakNtlm,
    /// The NTLM MIC did not verify.
    BadMic,
    /// The final leg named a handshake that timed out (its `opaque` is not of the current or the
    /// previous handshake window), or no first leg was answered since start.
    UnknownHandshake,
    /// Too many NTLM final legs succeeded within two handshake windows to remember them all for
    /// one-time use (503). Only final legs with the right password count.
    HandshakeLimit,
    /// Kerberos refused the AP-REQ for a reason not listed below.
    KerberosRejected,
    /// The Kerberos ticket is for another service principal than `sip/<fqdn>` of this gateway, or
    /// the NTLM AUTHENTICATE names another service (MsvAvTargetName): made for it, relayed here.
    WrongService,
    /// The Kerberos ticket has expired or is not yet valid.
    TicketExpired,
    /// The AP-REQ was seen before (Kerberos replay cache), or an NTLM final leg's `opaque` was used
    /// by an earlier final leg (or names a live SA).
    ReplayedToken,
    /// The client's Kerberos realm is not accepted here.
    WrongRealm,
    /// The gateway's keytab lacks the key the ticket needs, or no longer matches the KDC.
    GatewayKeytab,
    /// The message names an SA that does not exist.
    UnknownSa,
    /// The SA's lifetime or idle time is over.
    ExpiredSa,
    /// The SA belongs to another endpoint (epid) or another realm/targetname/scheme.
    SaMismatch,
    /// The signature did not verify.
    BadSignature,
    /// The `cnum` was seen before.
    Replay,
    /// The `cnum` is older than the replay window.
    OutsideWindow,
    /// A Digest nonce is past its lifetime (the client is told `stale=true`).
    StaleNonce,
    /// The Digest nonce was not issued by this gateway.
    BadNonce,
    /// A genuine Digest nonce of another node of the pool (the client is told `stale=true` and
    /// gets a nonce of this node).
    OtherNode,
    /// The scheme, realm or algorithm is not offered here.
    UnsupportedScheme,
    /// The request carried no credentials for this gateway.
    NoCredentials,
    /// The message needed a signature and had none.
    Unsigned,
    /// A REGISTER for an AOR that is not the authenticated user's.
    ForeignAor,
    /// The endpoint id (`epid`) is longer than the gateway accepts.
    EpidTooLong,
    /// A Kerberos principal with an instance component (`bob/admin@REALM`): not a SIP user.
    PrincipalInstance,
    /// The domain says the account is disabled (or the directory does).
    AccountDisabled,
    /// The domain locked the account out (its lockout policy: too many bad passwords).
    AccountLockedOut,
    /// The domain account has expired.
    AccountExpired,
    /// The domain account's password has expired.
    PasswordExpired,
    /// The domain account must change its password before signing in.
    PasswordMustChange,
    /// The directory has no SIP address for the account.
    NoSipAddress,
    /// The directory does not know the account the domain vouched for.
    DirectoryNotFound,
    /// The domain (winbind, a domain controller) could not answer: 503 with Retry-After.
    DomainUnavailable,
    /// The domain refused the logon for another reason (logon hours, workstation, machine
    /// account...).
    DomainRefused,
    /// The directory could not answer: 503 with Retry-After.
    DirectoryUnavailable,
    /// The domain vouched for an account whose SIP identity is a credentials-file user's: a
    /// domain account never takes a file user's identity.
    IdentityTaken,
    /// An account whose name makes no SIP user of its own: a computer account (`PC1$`), or a
    /// name with a `%` escape, which the servers behind read as another name.
    AccountName,
}

/// What an NTLM failure means to an operator: a wrong password, a clock to fix, a client to
/// configure for NTLMv2; the rest is a token the client should not have sent.
impl From<&NtlmError> for Reason {
    fn from(e: &NtlmError) -> Reason {
        match e {
            NtlmError::WrongPassword => Reason::WrongPassword,
            NtlmError::ClockSkew { .. } => Reason::ClockSkew,
            NtlmError::NotNtlmV2 { .. } => Reason::WeakNtlm,
            NtlmError::MissingFlags { .. } => Reason::WeakNtlm,
            NtlmError::BadMic => Reason::BadMic,
            NtlmError::WrongTarget => Reason::WrongService,
            _ => Reason::MalformedToken,
        }
    }
}

/// What a Digest failure means to an operator (a stale or foreign nonce is routine; a replay or
/// a wrong response is not).
impl From<&DigestError> for Reason {
    fn from(e: &DigestError) -> Reason {
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
}

impl Reason {
    /// Every reason, for exporters that list each label (also the counters' index order).
    pub const ALL: [Reason; 42] = [
        Reason::MalformedHeader,
        Reason::MalformedToken,
        Reason::UnknownUser,
        Reason::WrongPassword,
        Reason::ClockSkew,
        Reason::WeakNtlm,
        Reason::BadMic,
        Reason::UnknownHandshake,
        Reason::HandshakeLimit,
        Reason::KerberosRejected,
        Reason::WrongService,
        Reason::TicketExpired,
        Reason::ReplayedToken,
        Reason::WrongRealm,
        Reason::GatewayKeytab,
        Reason::UnknownSa,
        Reason::ExpiredSa,
        Reason::SaMismatch,
        Reason::BadSignature,
        Reason::Replay,
        Reason::OutsideWindow,
        Reason::StaleNonce,
        Reason::BadNonce,
        Reason::UnsupportedScheme,
        Reason::NoCredentials,
        Reason::Unsigned,
        Reason::ForeignAor,
        Reason::EpidTooLong,
        Reason::PrincipalInstance,
        Reason::OtherNode,
        Reason::AccountDisabled,
        Reason::AccountLockedOut,
        Reason::AccountExpired,
        Reason::PasswordExpired,
        Reason::PasswordMustChange,
        Reason::NoSipAddress,
        Reason::DirectoryNotFound,
        Reason::DomainUnavailable,
        Reason::DomainRefused,
        Reason::DirectoryUnavailable,
        Reason::IdentityTaken,
        Reason::AccountName,
    ];

    /// The metric and log label: the variant's name in snake case (`wrong_password`).
    pub fn label(self) -> &'static str {
        match self {
            Reason::MalformedHeader => "malformed_header",
            Reason::MalformedToken => "malformed_token",
            Reason::UnknownUser => "unknown_user",
            Reason::WrongPassword => "wrong_password",
            Reason::ClockSkew => "clock_skew",
            Reason::WeakNtlm => "weak_ntlm",
            Reason::BadMic => "bad_mic",
            Reason::UnknownHandshake => "unknown_handshake",
            Reason::HandshakeLimit => "handshake_limit",
            Reason::KerberosRejected => "kerberos_rejected",
            Reason::WrongService => "wrong_service",
            Reason::TicketExpired => "ticket_expired",
            Reason::ReplayedToken => "replayed_token",
            Reason::WrongRealm => "wrong_realm",
            Reason::GatewayKeytab => "gateway_keytab",
            Reason::UnknownSa => "unknown_sa",
            Reason::ExpiredSa => "expired_sa",
            Reason::SaMismatch => "sa_mismatch",
            Reason::BadSignature => "bad_signature",
            Reason::Replay => "replay",
            Reason::OutsideWindow => "outside_window",
            Reason::StaleNonce => "stale_nonce",
            Reason::BadNonce => "bad_nonce",
            Reason::UnsupportedScheme => "unsupported_scheme",
            Reason::NoCredentials => "no_credentials",
            Reason::Unsigned => "unsigned",
            Reason::ForeignAor => "foreign_aor",
            Reason::EpidTooLong => "epid_too_long",
            Reason::PrincipalInstance => "principal_instance",
            Reason::OtherNode => "other_node",
            Reason::AccountDisabled => "account_disabled",
            Reason::AccountLockedOut => "account_locked_out",
            Reason::AccountExpired => "account_expired",
            Reason::PasswordExpired => "password_expired",
            Reason::PasswordMustChange => "password_must_change",
            Reason::NoSipAddress => "no_sip_address",
            Reason::DirectoryNotFound => "directory_not_found",
            Reason::DomainUnavailable => "domain_unavailable",
            Reason::DomainRefused => "domain_refused",
            Reason::DirectoryUnavailable => "directory_unavailable",
            Reason::IdentityTaken => "identity_taken",
            Reason::AccountName => "account_name",
        }
    }

    /// Answered with a fresh challenge marked `stale=true` (RFC 7616 §3.3): the client proved
    /// it knows the password, only its nonce is not good here.
    pub fn is_stale(self) -> bool {
        matches!(self, Reason::StaleNonce | Reason::OtherNode)
    }

    fn index(self) -> usize {
        Reason::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// How an SA ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiryKind {
    /// Its hard lifetime ([`crate::CoreConfig::sa_lifetime`], or the Kerberos ticket's end) ran out.
    Lifetime,
    /// Its client sent nothing signed within the idle TTL ([`crate::CoreConfig::sa_idle_ttl`]).
    Idle,
}

const NS: usize = 3;
const NR: usize = Reason::ALL.len();

fn si(s: Scheme) -> usize {
    match s {
        Scheme::Ntlm => 0,
        Scheme::Kerberos => 1,
        Scheme::Digest => 2,
    }
}

/// One counter per reason (`Default` is not derived for arrays this long).
struct PerReason([AtomicU64; NR]);

impl Default for PerReason {
    fn default() -> Self {
        PerReason(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl std::ops::Index<usize> for PerReason {
    type Output = AtomicU64;
    fn index(&self, i: usize) -> &AtomicU64 {
        &self.0[i]
    }
}

/// The core's counters, bumped as it judges and signs ([`crate::SecurityCore::counters`]); read
/// them with [`Counters::snapshot`]. Each method below counts one event; all are monotonic since
/// start.
#[derive(Default)]
pub struct Counters {
    challenges: AtomicU64,
    handshakes_started: [AtomicU64; NS],
    handshakes_completed: [AtomicU64; NS],
    handshake_failures: [PerReason; NS],
    verified: [AtomicU64; NS],
    verify_failures: [PerReason; NS],
    signed: [AtomicU64; NS],
    sa_established: [AtomicU64; NS],
    sa_expired_lifetime: AtomicU64,
    sa_expired_idle: AtomicU64,
    sa_replaced: AtomicU64,
    sa_revoked: AtomicU64,
    discarded: AtomicU64,
    dropped_responses: AtomicU64,
    sa_evicted_identity_cap: AtomicU64,
    forbidden: AtomicU64,
    epid_refused: AtomicU64,
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    /// A 401/407 sent: a fresh challenge (every scheme offered) or an NTLM first leg's answer.
    pub fn challenge(&self) {
        inc(&self.challenges)
    }
    /// An SA handshake began: an NTLM first leg answered, or a Kerberos AP-REQ taken up (not
    /// counted while its job is deferred). Digest has no start.
    pub fn handshake_started(&self, s: Scheme) {
        inc(&self.handshakes_started[si(s)])
    }
    /// A handshake succeeded: an SA was made (NTLM, Kerberos) or a Digest request verified.
    pub fn handshake_completed(&self, s: Scheme) {
        inc(&self.handshakes_completed[si(s)])
    }
    /// A final leg, AP-REQ or Digest response did not succeed, by reason (a 503 for a domain or
    /// directory that could not answer included).
    pub fn handshake_failed(&self, s: Scheme, r: Reason) {
        inc(&self.handshake_failures[si(s)][r.index()])
    }
    /// A client's signature verified: a signed request or response, or the signature a version-4
    /// final leg already carries.
    pub fn verified(&self, s: Scheme) {
        inc(&self.verified[si(s)])
    }
    /// A message naming an SA failed verification, by reason (unknown or expired SA, bad
    /// signature, replayed `cnum`...).
    pub fn verify_failed(&self, s: Scheme, r: Reason) {
        inc(&self.verify_failures[si(s)][r.index()])
    }
    /// A message to a client signed with its SA.
    pub fn signed(&self, s: Scheme) {
        inc(&self.signed[si(s)])
    }
    /// An SA made by a handshake here (SAs adopted from the pool are not counted).
    pub fn sa_established(&self, s: SaScheme) {
        inc(&self.sa_established[si(s.into())])
    }
    /// An SA removed because its time was up, by which deadline.
    pub fn sa_expired(&self, kind: ExpiryKind) {
        match kind {
            ExpiryKind::Lifetime => inc(&self.sa_expired_lifetime),
            ExpiryKind::Idle => inc(&self.sa_expired_idle),
        }
    }
    /// An SA ended because a new handshake from the same endpoint (identity and epid) made another.
    pub fn sa_replaced(&self) {
        inc(&self.sa_replaced)
    }
    /// An SA ended by revocation: an operator, a credentials change, or the pool.
    pub fn sa_revoked(&self) {
        inc(&self.sa_revoked)
    }
    /// An ACK or CANCEL dropped silently instead of being challenged or refused
    /// ([`crate::Decision::Discard`]).
    pub fn discarded(&self) {
        inc(&self.discarded)
    }
    /// A response from a client dropped: its credentials header was malformed, or its signature
    /// or SA did not hold ([`crate::ResponseVerdict::Drop`]).
    pub fn dropped_response(&self) {
        inc(&self.dropped_responses)
    }
    /// An SA made room for a newer one of the same identity (`max_sas_per_identity`).
    pub fn sa_evicted_identity_cap(&self) {
        inc(&self.sa_evicted_identity_cap)
    }
    /// A verified request refused because its sender may not make it (From, REGISTER AOR).
    pub fn forbidden(&self) {
        inc(&self.forbidden)
    }
    /// A request refused for an over-long `epid`.
    pub fn epid_refused(&self) {
        inc(&self.epid_refused)
    }

    /// Every counter read at once (each load is relaxed: a snapshot taken under load is not
    /// atomic across counters).
    pub fn snapshot(&self) -> CountersSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut by_scheme = Vec::new();
        for s in Scheme::ALL {
            let i = si(s);
            let failures = |arr: &[PerReason; NS]| {
                Reason::ALL
                    .iter()
                    .map(|r| (*r, get(&arr[i][r.index()])))
                    .filter(|(_, n)| *n > 0)
                    .collect::<Vec<_>>()
            };
            by_scheme.push(SchemeCounters {
                scheme: s,
                handshakes_started: get(&self.handshakes_started[i]),
                handshakes_completed: get(&self.handshakes_completed[i]),
                handshake_failures: failures(&self.handshake_failures),
                verified: get(&self.verified[i]),
                verify_failures: failures(&self.verify_failures),
                signed: get(&self.signed[i]),
                sa_established: get(&self.sa_established[i]),
            });
        }
        CountersSnapshot {
            challenges: get(&self.challenges),
            by_scheme,
            sa_expired_lifetime: get(&self.sa_expired_lifetime),
            sa_expired_idle: get(&self.sa_expired_idle),
            sa_replaced: get(&self.sa_replaced),
            sa_revoked: get(&self.sa_revoked),
            discarded: get(&self.discarded),
            dropped_responses: get(&self.dropped_responses),
            sa_evicted_identity_cap: get(&self.sa_evicted_identity_cap),
            forbidden: get(&self.forbidden),
            epid_refused: get(&self.epid_refused),
        }
    }
}

/// One scheme's counters in a [`CountersSnapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemeCounters {
    /// The scheme these counts are for.
    pub scheme: Scheme,
    /// Handshakes begun ([`Counters::handshake_started`]; always 0 for Digest).
    pub handshakes_started: u64,
    /// Handshakes that made an SA, or Digest requests that verified.
    pub handshakes_completed: u64,
    /// Refused final legs, AP-REQs and Digest responses by reason. Non-zero failure counts only.
    pub handshake_failures: Vec<(Reason, u64)>,
    /// Client signatures that verified (requests, responses, version-4 final legs).
    pub verified: u64,
    /// Signed messages from clients that did not verify, by reason. Non-zero counts only.
    pub verify_failures: Vec<(Reason, u64)>,
    /// Messages to clients signed.
    pub signed: u64,
    /// SAs made by a handshake here.
    pub sa_established: u64,
}

/// The counters at one moment, as the gateway exports them (all totals since start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountersSnapshot {
    /// 401/407 challenges sent, NTLM first-leg answers included.
    pub challenges: u64,
    /// Per-scheme counters, one entry per [`Scheme::ALL`] in that order.
    pub by_scheme: Vec<SchemeCounters>,
    /// SAs that reached their hard lifetime.
    pub sa_expired_lifetime: u64,
    /// SAs whose client stayed silent past the idle TTL.
    pub sa_expired_idle: u64,
    /// SAs ended by a newer handshake from the same endpoint.
    pub sa_replaced: u64,
    /// SAs revoked (operator, credentials change, pool).
    pub sa_revoked: u64,
    /// ACKs and CANCELs dropped silently instead of being challenged or refused.
    pub discarded: u64,
    /// Responses from clients dropped for a malformed header, a bad signature or SA.
    pub dropped_responses: u64,
    /// SAs ended to keep an identity within [`crate::CoreConfig::max_sas_per_identity`].
    pub sa_evicted_identity_cap: u64,
    /// Verified requests refused with 403 (From not the user, REGISTER for another AOR).
    pub forbidden: u64,
    /// Requests refused for an `epid` longer than [`crate::CoreConfig::max_epid_len`].
    pub epid_refused: u64,
}

impl CountersSnapshot {
    /// The counters of scheme `s`.
    pub fn scheme(&self, s: Scheme) -> &SchemeCounters {
        // by_scheme always holds every scheme in Scheme::ALL order.
        &self.by_scheme[si(s)]
    }

    /// Handshake failures of scheme `s` for reason `r` (0 when none).
    pub fn handshake_failures(&self, s: Scheme, r: Reason) -> u64 {
        self.scheme(s)
            .handshake_failures
            .iter()
            .find(|(x, _)| *x == r)
            .map_or(0, |(_, n)| *n)
    }

    /// Verification failures of scheme `s` for reason `r` (0 when none).
    pub fn verify_failures(&self, s: Scheme, r: Reason) -> u64 {
        self.scheme(s)
            .verify_failures
            .iter()
            .find(|(x, _)| *x == r)
            .map_or(0, |(_, n)| *n)
    }
}
