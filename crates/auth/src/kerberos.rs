//! The Kerberos seam: the core drives any acceptor that turns an AP-REQ into a GSS session. The gateway
//! plugs in MIT krb5 (crate `sagw-kerberos`); keeping C libraries out of this crate keeps it buildable
//! and testable on its own.

use std::time::{Duration, SystemTime};

use sha2::{Digest as _, Sha256};

use crate::counters::Reason;
use crate::sa::GssSession;

/// A Kerberos context the acceptor established.
pub struct KerberosAccepted {
    /// The GSS context: the SA's keys.
    pub session: Box<dyn GssSession>,
    /// `alice@EXAMPLE.TEST`.
    pub client_principal: String,
    /// When the service ticket expires; the SA's hard expiry is no later. `None`: unknown, the
    /// configured SA lifetime alone applies.
    pub ticket_end: Option<SystemTime>,
    /// AP-REP for clients that asked for mutual authentication.
    pub ap_rep: Option<Vec<u8>>,
}

/// Why an AP-REQ was refused, for logs (no secrets in `detail`) and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KerberosRejection {
    /// The counter and log reason (wrong service, expired ticket, keytab...).
    pub reason: Reason,
    /// The acceptor's own words (MIT's error text), for the log.
    pub detail: String,
}

/// A Kerberos acceptor for `sip/<fqdn>`.
pub trait KerberosBackend: Send + Sync {
    /// `sip/<fqdn>`, as challenges and signature buffers carry it.
    fn targetname(&self) -> &str;
    /// Accepts the AP-REQ (decoded `gssapi-data`): the GSS context, client principal, ticket end
    /// and AP-REP, or why not. Blocking (MIT's replay cache is a file): run on a worker when the
    /// core offloads Kerberos.
    fn accept(&self, ap_req: &[u8]) -> Result<KerberosAccepted, KerberosRejection>;
    /// A session exported by [`GssSession::export`] (on this node or another node of the pool),
    /// made usable again. Backends that cannot move sessions refuse.
    fn import_session(&self, exported: &[u8]) -> Result<Box<dyn GssSession>, String> {
        let _ = exported;
        Err("this Kerberos backend cannot import sessions".into())
    }
    /// The key that names this AP-REQ's one use across a pool: SHA-256 of the authenticator's
    /// ciphertext (not of the whole token: `ap-options` travel in the clear and can be flipped
    /// without the acceptor noticing). `None`: the backend cannot tell, and the
    /// [`KerberosReplayRegistry`] is not asked.
    fn replay_key(&self, ap_req: &[u8]) -> Option<[u8; 32]> {
        let _ = ap_req;
        None
    }
    /// Whether `ap_req` is shaped as an AP-REQ this backend can accept at all: a cheap structural
    /// check, made before a token waits for a worker (garbage must not fill the queue).
    fn well_formed(&self, ap_req: &[u8]) -> bool {
        let _ = ap_req;
        true
    }
    /// The clock skew the acceptor tolerates: an authenticator older than this is refused anyway,
    /// so a replay registry remembers each one for twice this long.
    fn clock_skew(&self) -> Duration {
        Duration::from_secs(300)
    }
}

/// What a [`KerberosReplayRegistry`] says about an authenticator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayCheck {
    /// Never seen in the pool: this is its one use.
    First,
    /// Already used (on this node or another): refuse the AP-REQ (`replayed_token`).
    Replayed,
    /// The registry cannot tell (store down, timeout). The AP-REQ is accepted: MIT's local replay
    /// cache already ran; only a replay to another node goes unnoticed meanwhile.
    Unavailable,
}

/// The cross-node replay check of Kerberos authenticators, beside MIT's file replay cache (which
/// only the node that wrote it reads). Called on a worker thread after an AP-REQ was accepted, with
/// [`KerberosBackend::replay_key`] and a time to remember it (twice the acceptor's clock skew): a
/// pool implements it with the shared store (`SET NX` with that expiry), a single gateway with
/// [`NoReplayRegistry`]. May block for a store round trip; must not panic.
pub trait KerberosReplayRegistry: Send + Sync {
    /// Records `key` as used for `ttl` unless it already was, and says which.
    fn first_use(&self, key: &[u8; 32], ttl: Duration) -> ReplayCheck;
}

/// The registry of a single gateway: MIT's replay cache is the whole story, so every
/// authenticator is a first use here.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoReplayRegistry;

impl KerberosReplayRegistry for NoReplayRegistry {
    fn first_use(&self, _key: &[u8; 32], _ttl: Duration) -> ReplayCheck {
        ReplayCheck::First
    }
}

/// SHA-256, for job and replay keys.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// An AP-REQ the core wants accepted off its thread ([`crate::Decision::Deferred`] with
/// [`crate::AuthJob::Kerberos`]): run it with [`crate::SecurityCore::run_job`] on a worker, hand
/// the outcome back with [`crate::SecurityCore::job_done`], then judge the request again.
#[derive(Clone)]
pub struct KerberosJob {
    key: [u8; 32],
    ap_req: Vec<u8>,
}

impl KerberosJob {
    pub(crate) fn new(ap_req: Vec<u8>) -> Self {
        KerberosJob {
            key: sha256(&ap_req),
            ap_req,
        }
    }

    /// SHA-256 of the token: what the outcome is filed under, and what tells a retransmission of
    /// the same request (the same token) while its job runs.
    pub fn key(&self) -> &[u8; 32] {
        &self.key
    }

    /// The AP-REQ (decoded `gssapi-data`).
    pub fn ap_req(&self) -> &[u8] {
        &self.ap_req
    }
}

impl std::fmt::Debug for KerberosJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No token bytes (a live credential until it is used).
        f.debug_struct("KerberosJob")
            .field("ap_req_len", &self.ap_req.len())
            .finish_non_exhaustive()
    }
}

/// What a worker made of a [`KerberosJob`].
pub struct KerberosOutcome {
    pub(crate) result: Result<KerberosAccepted, KerberosRejection>,
    /// The replay registry could not tell (the AP-REQ was accepted on MIT's word).
    pub registry_unavailable: bool,
    /// The SIP identity the directory gave the principal (or why not), when a directory is
    /// configured ([`crate::SecurityCore::with_directory`]); `None`: mapped from the principal.
    pub(crate) identity: Option<Result<String, crate::Reason>>,
}

impl KerberosOutcome {
    /// A refusal made outside the acceptor (e.g. a worker that failed).
    pub fn refused(reason: Reason) -> Self {
        KerberosOutcome {
            result: Err(KerberosRejection {
                reason,
                detail: String::new(),
            }),
            registry_unavailable: false,
            identity: None,
        }
    }

    /// Accepted, or why not.
    pub fn is_accepted(&self) -> bool {
        self.result.is_ok()
    }
}

impl std::fmt::Debug for KerberosOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("KerberosOutcome");
        match &self.result {
            Ok(a) => d.field("client_principal", &a.client_principal),
            Err(r) => d.field("rejected", &r.reason),
        };
        d.field("registry_unavailable", &self.registry_unavailable)
            .finish()
    }
}

/// Default mapping of a client principal to a SIP identity: `alice@EXAMPLE.TEST` ->
/// `sip:alice@example.test`; with `domain` set, `sip:alice@<domain>`.
///
/// A principal with an instance component (`bob/admin@REALM`, `host/pc1@REALM`) maps to nothing:
/// it is a different principal from `bob@REALM`, with its own key, often held by someone else
/// (an administrator's second identity, a service or machine). Dropping the instance would let it
/// speak as `sip:bob@…`; mapping it to `sip:bob/admin@…` would make a SIP user nobody provisions.
/// SIP users are user principals, so these are refused. So is a principal whose identity would
/// not be one ([`is_valid_sip_identity`](crate::is_valid_sip_identity)): `alice:phone@REALM` is
/// legal in Kerberos, but SIP reads `sip:alice:phone@…` as user `alice` with a password
/// ([`Reason::PrincipalInstance`] for both). A computer account (`PC1$@REALM`: its key is in the
/// machine's keytab, which the machine's administrators read) and a name with a `%` escape
/// (`b%6Fb`, which the servers behind read as `bob`) are refused as [`Reason::AccountName`]
/// ([`account_name_makes_an_identity`]).
pub fn principal_to_identity(principal: &str, domain: Option<&str>) -> Result<String, Reason> {
    let (user, realm) = principal.rsplit_once('@').unwrap_or((principal, ""));
    if user.is_empty() || user.contains('/') {
        return Err(Reason::PrincipalInstance);
    }
    if !account_name_makes_an_identity(user) {
        return Err(Reason::AccountName);
    }
    let host = domain.map_or_else(|| realm.to_ascii_lowercase(), str::to_owned);
    let identity = format!("sip:{}@{}", user.to_ascii_lowercase(), host);
    if crate::is_valid_sip_identity(&identity) {
        Ok(identity)
    } else {
        Err(Reason::PrincipalInstance)
    }
}

/// Whether an account name a domain or KDC vouched for may become a SIP user part as it is: not
/// a computer account (`PC1$`) and no `%`, which SIP reads as an escape (an account `b%6Fb` would
/// be `bob` to every server behind the gateway, while the gateway compares it as written).
pub fn account_name_makes_an_identity(user: &str) -> bool {
    !user.ends_with('$') && !user.contains('%')
}

#[cfg(test)]
mod tests {
    use crate::Reason;

    #[test]
    fn maps_principals() {
        assert_eq!(
            super::principal_to_identity("alice@EXAMPLE.TEST", None)
                .ok()
                .as_deref(),
            Some("sip:alice@example.test")
        );
        assert_eq!(
            super::principal_to_identity("Bob@CORP.EXAMPLE", Some("example.com"))
                .ok()
                .as_deref(),
            Some("sip:bob@example.com")
        );
    }

    #[test]
    fn refuses_principals_with_an_instance() {
        for p in [
            "bob/admin@EXAMPLE.TEST",
            "host/pc1.example.test@EXAMPLE.TEST",
            "@EXAMPLE.TEST",
        ] {
            assert_eq!(
                super::principal_to_identity(p, None),
                Err(Reason::PrincipalInstance),
                "{p}"
            );
        }
    }

    #[test]
    fn refuses_principals_that_make_no_sip_identity() {
        for p in [
            "alice:phone@EXAMPLE.TEST",
            "alice\\@example.test@EXAMPLE.TEST",
            "al ice@EXAMPLE.TEST",
            "alice<@EXAMPLE.TEST",
        ] {
            assert_eq!(
                super::principal_to_identity(p, None),
                Err(Reason::PrincipalInstance),
                "{p}"
            );
        }
    }

    /// A computer account's principal (what `kinit -k 'PC1$'` gets from a machine's keytab, which
    /// its local administrators can read) and a name with an escape (`b%6Fb`, which the servers
    /// behind read as `bob`) are no SIP user's: NTLM through the domain refuses the first too.
    #[test]
    fn refuses_computer_accounts_and_escaped_names() {
        for p in [
            "PC1$@EXAMPLE.TEST",
            "pc1$@EXAMPLE.TEST",
            "b%6Fb@EXAMPLE.TEST",
        ] {
            assert_eq!(
                super::principal_to_identity(p, None),
                Err(Reason::AccountName),
                "{p}"
            );
        }
    }
}
