//! The authentication hook: where `sagw-auth` plugs into the message pipeline.
//!
//! * Every message **received from a client** (requests and responses; not from next hops) goes
//!   through [`ClientAuth::inbound`] before the proxy acts on it, after parsing and the RFC 3261
//!   §8.1.1 validity checks.
//! * Every message **sent to a client** (responses, requests towards it, the proxy's own
//!   responses) goes through [`ClientAuth::outbound`] last, after all of the proxy's own
//!   rewrites (Via, Record-Route, Max-Forwards), so a signature computed there covers the final
//!   bytes.
//!
//! "Client" means any peer that is not a configured next hop or trusted peer.

use std::any::Any;
use std::sync::Arc;

use sagw_sip::Message;

use crate::registrar::BindingInfo;
use crate::types::{Flow, Now};

/// The endpoint a client proved itself to be: the identity its security association was made
/// for, and the device's endpoint id ([MS-SIPAE] `epid`). Every request delivered to it must be
/// signed with that endpoint's SA. The proxy writes it, under the flow token's MAC, into the
/// Path and Record-Route entries it adds for the client, so a request that comes back through
/// them (from a registrar behind the edge, or in a dialog) is signed for the endpoint the gateway
/// named, whatever the request itself claims.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct SaEndpoint {
    /// The authenticated SIP identity (`sip:alice@example.com`).
    pub identity: String,
    /// The endpoint id the SA is bound to.
    pub epid: String,
}

/// Whom a client's transactions count against (`max_transactions_per_client`): an authenticated
/// identity, or the source address of a request that proved none. A hash: nothing is allocated
/// per transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey(u64);

impl ClientKey {
    /// The identity a request proved, its scheme left out and ASCII case folded, as identities
    /// compare: `sips:Alice@x` and `sip:alice@x` are one client.
    pub fn identity(identity: &str) -> ClientKey {
        Self::folded(b'i', identity)
    }

    /// The identity a request from a server behind asserts (P-Asserted-Identity): a share of its
    /// own, apart from the identity's [`identity`](Self::identity) share. Whoever can make a
    /// server assert an identity (a caller whose network lets it choose its caller id) then uses
    /// up that share, never the share of the client's own requests.
    pub fn asserted(identity: &str) -> ClientKey {
        Self::folded(b'a', identity)
    }

    fn folded(kind: u8, identity: &str) -> ClientKey {
        use std::hash::{BuildHasher, Hasher};
        let rest = identity.split_once(':').map_or(identity, |(_, rest)| rest);
        let mut h = Self::hasher().build_hasher();
        h.write_u8(kind);
        // Folded on the stack, hashed a slice at a time (a byte at a time cost ~550 instructions
        // a request).
        let mut buf = [0u8; 64];
        for chunk in rest.as_bytes().chunks(buf.len()) {
            let folded = &mut buf[..chunk.len()];
            folded.copy_from_slice(chunk);
            folded.make_ascii_lowercase();
            h.write(folded);
        }
        ClientKey(h.finish())
    }

    /// The hash's seed, drawn once a process. Asserted identities and UDP source addresses are
    /// chosen by whoever sends them; under a seed anyone could read in the source, one could
    /// search offline for an asserted identity whose key is alice's own and use up the share of
    /// her requests. A key is compared only within the process, never sent.
    fn hasher() -> foldhash::fast::FixedState {
        static SEED: std::sync::LazyLock<u64> = std::sync::LazyLock::new(|| {
            use std::hash::BuildHasher;
            std::collections::hash_map::RandomState::new().hash_one(0u64)
        });
        foldhash::fast::FixedState::with_seed(*SEED)
    }

    /// A source address, grouped as [`source_key`] groups it.
    pub fn source(ip: std::net::IpAddr) -> ClientKey {
        use std::hash::{BuildHasher, Hasher};
        let mut h = Self::hasher().build_hasher();
        h.write_u8(b's');
        match source_key(ip) {
            std::net::IpAddr::V4(v4) => h.write(&v4.octets()),
            std::net::IpAddr::V6(v6) => h.write(&v6.octets()),
        }
        ClientKey(h.finish())
    }
}

/// The address a source is counted under (connections per address, a client's share of the
/// transactions or of the sign-in queues): IPv4 as is (an IPv4-mapped IPv6 address too), IPv6 by
/// its /56, what one subscriber site usually gets (RFC 6177): single IPv6 addresses cost an
/// attacker nothing, and a /64 little more (twenty /64s of one home's /56 took every connection
/// slot under the per-address cap).
pub fn source_key(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip.to_canonical() {
        std::net::IpAddr::V4(v4) => std::net::IpAddr::V4(v4),
        std::net::IpAddr::V6(v6) => std::net::IpAddr::V6(std::net::Ipv6Addr::from(
            u128::from(v6) & !((1u128 << 72) - 1),
        )),
    }
}

/// State the inbound stage wants back when the outbound stage handles a response of the same
/// transaction (e.g. the SA a request was verified with, or a Digest `Authentication-Info`).
pub type AuthNote = Arc<dyn Any + Send + Sync>;

/// Context of a message from a client.
#[derive(Debug, Clone, Copy)]
pub struct InboundContext<'a> {
    /// The flow it arrived on (transport, peer address after NAT).
    pub flow: Flow,
    /// Current time.
    pub now: Now,
    /// The identity registered over this flow, when there is one.
    pub flow_binding: Option<&'a BindingInfo>,
    /// For a response: the request of ours it answers, when there is one.
    pub answering: Answering<'a>,
    /// For an ACK that matched no transaction (the ACK of a 2xx): what the stage returned for
    /// the INVITE it acknowledges, when that INVITE came over this same flow, has the ACK's
    /// Call-ID, CSeq number and From tag, and a 2xx accepted it less than 64×T1 ago. Such an ACK
    /// may carry no credentials, or a copy of the INVITE's (RFC 3261 §13.2.2.4), or be sent again
    /// for a retransmitted 2xx.
    pub acknowledges: Option<&'a AuthNote>,
    /// For a request in a dialog (its To has a tag) that the gateway delivered to this flow's
    /// client (an INVITE, SUBSCRIBE or REFER it answered with a tag): the client's address in
    /// that dialog, the request's To, when it is not the address of record the client registered
    /// over this flow. The client writes it as its From in the dialog (RFC 3261 §12.1.1), and it
    /// may differ from its identity: a PBX that dialled its contact, a trunk's DID.
    pub dialog_local: Option<&'a str>,
}

/// What a response from a client answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answering<'a> {
    /// A request the gateway sent to this client, over this flow, for this endpoint (`None`: a
    /// client without an SA). That endpoint's SA, and no other, must have signed the response,
    /// whatever the response's own headers say.
    Request(Option<&'a SaEndpoint>),
    /// The message is a request. (A late response is matched to its request through the `sgt`
    /// of our Via and dropped unjudged without one, so a response never comes with this; the
    /// gateway's stage drops one that does.)
    Unknown,
}

/// What the inbound stage decided.
#[derive(Clone)]
pub enum InboundVerdict {
    /// Process the message; `note` comes back with the responses of this transaction.
    Continue {
        /// Opaque state for [`OutboundContext::note`].
        note: Option<AuthNote>,
        /// The endpoint the request proved to come from, when it has an SA: requests that reach
        /// this client later through the flow tokens of this transaction are signed for it.
        endpoint: Option<SaEndpoint>,
        /// Who the transaction counts against in `max_transactions_per_client`: the identity
        /// the request proved ([`ClientKey::identity`]). `None`: its source address.
        client: Option<ClientKey>,
    },
    /// Answer the request with this response (e.g. a 401/407 challenge) instead of processing
    /// it. The response is sent over the request's flow (and passes the outbound stage).
    Respond(Message),
    /// Drop the message silently.
    Drop,
    /// Nothing now: the stage keeps the request and hands it back later through
    /// `Edge::handle_inbound` (e.g. while a Kerberos AP-REQ is accepted on a worker thread), when
    /// it is judged again. Nothing is sent and no drop is counted. Only for requests; a response
    /// held is dropped.
    Held,
}

impl std::fmt::Debug for InboundVerdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InboundVerdict::Continue {
                note,
                endpoint,
                client,
            } => f
                .debug_struct("Continue")
                .field("note", &note.as_ref().map(|_| ".."))
                .field("endpoint", endpoint)
                .field("client", client)
                .finish(),
            InboundVerdict::Respond(m) => f.debug_tuple("Respond").field(m).finish(),
            InboundVerdict::Drop => f.write_str("Drop"),
            InboundVerdict::Held => f.write_str("Held"),
        }
    }
}

/// What kind of message is leaving towards a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboundKind {
    /// A response to a request the client sent (proxied or generated here).
    Response,
    /// A request towards the client (a call to it, an in-dialog request, CANCEL, ACK).
    Request,
}

/// Context of a message about to be sent to a client.
#[derive(Clone, Copy)]
pub struct OutboundContext<'a> {
    /// The flow it will be sent over.
    pub flow: Flow,
    /// Current time.
    pub now: Now,
    /// Response or request.
    pub kind: OutboundKind,
    /// For requests: the endpoint the destination proved to be, from the flow token the request
    /// was routed by or from the registrar binding it was sent to. `None` for a client without
    /// an SA (Digest, or no authentication). For a response without a `note` (one relayed after
    /// its transaction ended): the endpoint the flow token in our Via names, the one the request
    /// came from; `None` for any other response.
    pub endpoint: Option<&'a SaEndpoint>,
    /// For responses: the client's request as received (before the proxy's edits).
    pub request: Option<&'a Message>,
    /// For responses: what the inbound stage returned for the request.
    pub note: Option<&'a AuthNote>,
}

impl std::fmt::Debug for OutboundContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundContext")
            .field("flow", &self.flow)
            .field("kind", &self.kind)
            .field("endpoint", &self.endpoint)
            .field("has_note", &self.note.is_some())
            .finish()
    }
}

/// What the outbound stage decided for a message to a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboundVerdict {
    /// Send it, as edited.
    Deliver,
    /// Do not send this request: its branch fails with this status instead (480 when the
    /// endpoint it is for has no SA any more: an unsigned request would be dropped by the
    /// client, and the sender would wait for a timeout). Only requests are refused; a refused
    /// response is not sent.
    Refuse(u16),
}

/// The authentication stage. Both methods default to "do nothing", so `NoAuth` (or any
/// `impl ClientAuth for X {}`) is a pass-through.
pub trait ClientAuth: Send {
    /// Judge a message from a client. A request that is let through may be edited first (the
    /// authentication stage removes the credentials meant for this gateway and asserts the
    /// identity it proved).
    fn inbound(&mut self, msg: &mut Message, ctx: &InboundContext<'_>) -> InboundVerdict {
        let _ = (msg, ctx);
        InboundVerdict::Continue {
            note: None,
            endpoint: None,
            client: None,
        }
    }

    /// Edit (e.g. sign) a message about to go to a client, or refuse to send it. Runs after
    /// every other edit.
    fn outbound(&mut self, msg: &mut Message, ctx: &OutboundContext<'_>) -> OutboundVerdict {
        let _ = (msg, ctx);
        OutboundVerdict::Deliver
    }
}

/// The pass-through stage (no authentication).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoAuth;

impl ClientAuth for NoAuth {}

#[cfg(test)]
mod tests {
    use super::ClientKey;
    use std::hash::{BuildHasher, Hasher};

    /// What a key was under the seed written in the source (1), which anyone could search for
    /// collisions offline.
    fn under_a_known_seed(kind: u8, folded: &[u8]) -> u64 {
        let mut h = foldhash::fast::FixedState::with_seed(1).build_hasher();
        h.write_u8(kind);
        h.write(folded);
        h.finish()
    }

    #[test]
    fn keys_are_not_those_of_a_seed_anyone_can_read() {
        let alice = ClientKey::identity("sip:alice@example.com");
        assert_ne!(alice.0, under_a_known_seed(b'i', b"alice@example.com"));
        assert_ne!(
            ClientKey::asserted("sip:alice@example.com").0,
            under_a_known_seed(b'a', b"alice@example.com")
        );
        // Within the process, the same identity is the same client.
        assert_eq!(alice, ClientKey::identity("sip:Alice@example.com"));
    }
}
