//! What the core tells the gateway to do with a message.

use std::net::SocketAddr;

use crate::config::ChallengeFamily;
use crate::counters::{Reason, Scheme};
use crate::manager::SaHandle;

/// Transport a message arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// SIP over UDP.
    Udp,
    /// SIP over TCP.
    Tcp,
    /// SIP over TLS (on TCP).
    Tls,
}

/// Where a message came from. Authentication does not depend on it (nothing is limited per source
/// address: clients behind one NAT or load balancer share it); it is there for callers and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportContext {
    /// The client's address and port as seen by the gateway (after any NAT).
    pub source: SocketAddr,
    /// The transport the message came on.
    pub transport: Transport,
}

/// A 401/407 to send back, with every header it needs (challenges and `Date`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// 401 or 407, per the [`ChallengeFamily`].
    pub status: u16,
    /// `Unauthorized` or `Proxy Authentication Required`.
    pub reason_phrase: &'static str,
    /// Headers to add to the response, in order.
    pub headers: Vec<(&'static str, String)>,
    /// Why the request was challenged again, when it carried credentials that failed.
    pub cause: Option<Reason>,
}

/// How an authenticated message is bound to its proof.
#[derive(Debug, Clone)]
pub enum Binding {
    /// An MS-SIPAE SA: every message to this client is signed with it.
    Sa {
        /// The SA the message verified with (or that its final leg just made).
        sa: SaHandle,
        /// The family of the client's credentials header.
        family: ChallengeFamily,
        /// True when this message finished the handshake.
        established_now: bool,
    },
    /// RFC 3261 Digest: the final response carries this `Authentication-Info` value.
    Digest {
        /// The family of the client's credentials header (which `*-Info` header carries it).
        family: ChallengeFamily,
        /// The header value: `nextnonce`, `qop`, `rspauth`, `cnonce`, `nc`.
        authentication_info: String,
    },
}

/// The message is authenticated.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// The SIP identity the credentials prove, e.g. `sip:alice@example.com`.
    pub identity: String,
    /// The scheme that proved it.
    pub scheme: Scheme,
    /// What the answers to the message are signed with (an SA) or carry (Digest).
    pub binding: Binding,
    /// Other SAs of this identity that establishing this one ended, to keep the identity within
    /// its cap ([`crate::CoreConfig::max_sas_per_identity`]); for the operator's log.
    pub evicted: Vec<crate::sa::Opaque>,
    /// Where the credentials header that proved this is in the request's
    /// [`sagw_sip::Message::headers`] order, for [`crate::SecurityCore::strip_credentials`] on the
    /// same, unedited request: that header is ours without being read again.
    pub credentials_at: usize,
}

/// The core's verdict on a request from a client.
#[derive(Debug, Clone)]
pub enum Decision {
    /// Answer with a fresh challenge.
    Challenge(Challenge),
    /// The handshake goes on: answer with this 401/407 (carries `opaque` and `gssapi-data`).
    Continue(Challenge),
    /// Process the request; sign the answers with the binding.
    Authenticated(Authenticated),
    /// Answer with this final error. Nothing about the request was verified (a malformed request,
    /// or a first leg refused at a limit), so the answer is never signed: signing it with an SA
    /// the request merely names would hand any sender that SA's signature over a Call-ID and CSeq
    /// of its choosing.
    Reject {
        /// 400 for a request refused before its credentials are read (an over-long epid, a CSeq
        /// method that is not the request's), 503 when the NTLM final-leg table is full.
        status: u16,
        /// The reason phrase to send with it.
        reason_phrase: &'static str,
        /// Why, for the log.
        reason: Reason,
    },
    /// The request verified, but its sender may not do this (a From that is not the authenticated
    /// user, a REGISTER for another AOR): answer with this final error, signed with the binding the
    /// request was verified with, so the client can read its refusal.
    Forbidden(Forbidden),
    /// Drop silently: ACK or CANCEL without valid credentials ([MS-SIPAE] 3.3.5.1).
    Discard(Reason),
    /// Not judged yet: the request carries a Kerberos AP-REQ the core accepts off its caller's
    /// thread ([`crate::SecurityCore::with_kerberos_offload`]), or an NTLM response for the domain
    /// to verify ([`crate::SecurityCore::with_domain_ntlm`]). Run the job
    /// ([`crate::SecurityCore::run_job`], on a worker), file its outcome
    /// ([`crate::SecurityCore::job_done`]), then hand the same request to the core again. Nothing
    /// was counted.
    Deferred(crate::jobs::AuthJob),
    /// Answer 503 with `Retry-After: retry_after_secs`: the domain or the directory that must
    /// vouch for this sign-in could not answer. Never a pass, never a final refusal; the
    /// handshake is not used up.
    Unavailable {
        /// [`Reason::DomainUnavailable`] or [`Reason::DirectoryUnavailable`].
        reason: Reason,
        /// Seconds for `Retry-After` ([`crate::DomainSettings::retry_after_secs`]).
        retry_after_secs: u32,
    },
}

/// A verified request its sender is not allowed to make.
#[derive(Debug, Clone)]
pub struct Forbidden {
    /// Always 403.
    pub status: u16,
    /// `Forbidden`.
    pub reason_phrase: &'static str,
    /// [`Reason::SaMismatch`] (From is not the authenticated user) or [`Reason::ForeignAor`]
    /// (a REGISTER for another user's AOR).
    pub reason: Reason,
    /// What the request proved: the only binding its answer may be signed with.
    pub verified: Authenticated,
}

impl Decision {
    /// The SA binding, when the decision is an authenticated MS-SIPAE message.
    pub fn sa(&self) -> Option<&SaHandle> {
        match self {
            Decision::Authenticated(Authenticated {
                binding: Binding::Sa { sa, .. },
                ..
            }) => Some(sa),
            _ => None,
        }
    }
}

/// The core's verdict on a response a client sent (to a request the gateway sent it).
#[derive(Debug, Clone)]
pub enum ResponseVerdict {
    /// Signed with a live SA and verified.
    Verified(SaHandle),
    /// No credentials for this gateway in it. Whether that is acceptable (it is not, once the endpoint
    /// has an SA) is the gateway's call: it knows which SA the request went out under.
    Unsigned,
    /// Signed, but the signature or its SA does not hold: drop and count.
    Drop(Reason),
}
