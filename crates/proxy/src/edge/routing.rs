//! Where a request goes (RFC 3261 §16.4-16.5): our own Route entries and the flow tokens in them,
//! the next Route, registered bindings, the next hops.

use std::net::SocketAddr;
use std::time::Instant;

use sagw_sip::{Message, parse_name_addr};

use super::Edge;
use crate::config::{Mode, NextHop, RouteTarget};
use crate::edit::{pop_route, top_route};
use crate::hook::SaEndpoint;
use crate::registrar::{Binding, RemoteBinding};
use crate::token::flow_token_claim;
use crate::types::{Flow, Target, Transport};
use crate::uri::{SipUri, request_target};

/// How far a request's own Route set is followed (B3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RoutePolicy {
    /// A next hop's (a flow from a next hop's address, whatever its port): the operator's proxy
    /// routes anywhere.
    Anywhere,
    /// A client's: to a next hop or an operator-listed target only.
    Client,
    /// Another server's (a trusted peer, a peer trusted by its certificate, a gateway of the
    /// pool): where a client may, or to another server. What such a server relays can be a
    /// client's request whose Route set the client wrote.
    Server,
}

impl RoutePolicy {
    /// The policy for the Route entries below one that names this gateway, in a request that
    /// found no flow token of ours there to follow. Whoever wrote them, it was not the next hop
    /// in its own request: a client may name the next hop and then this gateway (a next hop's
    /// `loose_route()` pops its own entry and relays the rest here), and nothing in an entry
    /// naming the gateway, a token naming the flow the request came in on included, tells
    /// whose it is (a Record-Route shows our tokens to the dialog's peer). So they are followed
    /// only as far as a server's that may be relaying a client's Route set: never `Anywhere`.
    fn below_our_entry(self) -> RoutePolicy {
        match self {
            RoutePolicy::Anywhere | RoutePolicy::Server => RoutePolicy::Server,
            RoutePolicy::Client => RoutePolicy::Client,
        }
    }
}

/// Where routing sends a request.
pub(super) enum Dest {
    /// One client flow (a binding, or a flow token of ours).
    Flow(BranchTo),
    /// Every live binding of an AOR, most recent first (parallel forking).
    Fork(Vec<BranchTo>),
    Addr(Transport, std::net::SocketAddr),
    /// A Route naming a host by name: the driver resolves it (RFC 3263) and the request goes
    /// to what it resolves to.
    Name(NameTarget),
    Hops,
}

/// A host name a Route names, with what the URI says about how to reach it.
pub(super) struct NameTarget {
    pub(super) host: String,
    pub(super) port: Option<u16>,
    pub(super) transport: Option<Transport>,
    pub(super) secure: bool,
    /// How far the request may go ([`RoutePolicy`]): the resolved addresses are judged by the
    /// policy the Route was followed under, not the one of the flow it came in on.
    pub(super) policy: RoutePolicy,
}

/// The far end of one branch of a proxied request.
pub(super) struct BranchTo {
    pub(super) target: Target,
    /// The client endpoint there, when it has an SA: the request is signed for it.
    pub(super) endpoint: Option<SaEndpoint>,
    /// The answer when the target's flow turns out to be gone: 430 Flow Failed for a flow named
    /// by one of our flow tokens (RFC 5626 §5.3: the registrar behind an edge, or the far end
    /// of a dialog, learns that this flow, not the user, is gone), 480 otherwise.
    pub(super) gone: u16,
    /// A Route to push on top of the request for this branch: the node of the pool that holds
    /// the client's flow, with its flow token ([`crate::RemoteBinding::node_route`]).
    pub(super) route: Option<String>,
    /// The Request-URI for this branch: the Contact of the binding it goes to, when the request
    /// was addressed to the binding's address of record (RFC 3261 §16.6 step 2). A PBX or a
    /// phone with several lines reads which one rang from it.
    pub(super) request_uri: Option<String>,
}

impl BranchTo {
    /// A registered binding's flow, for a request addressed to the binding's address of record:
    /// it goes there under the binding's Contact.
    pub(super) fn looked_up(b: &Binding) -> BranchTo {
        BranchTo {
            request_uri: Some(request_target(&b.info.contact).into_owned()),
            ..BranchTo::binding(b.flow, b.info.endpoint.clone())
        }
    }

    /// A registered binding's flow.
    pub(super) fn binding(flow: Flow, endpoint: Option<SaEndpoint>) -> BranchTo {
        BranchTo {
            target: Target::Flow(flow),
            endpoint,
            gone: 480,
            route: None,
            request_uri: None,
        }
    }

    /// The flow one of our Path or Record-Route tokens names.
    pub(super) fn token(flow: Flow, endpoint: Option<SaEndpoint>) -> BranchTo {
        BranchTo {
            target: Target::Flow(flow),
            endpoint,
            gone: 430,
            route: None,
            request_uri: None,
        }
    }

    /// A binding another node of the pool holds: to that node, through the Route it gave.
    pub(super) fn remote(binding: &RemoteBinding) -> BranchTo {
        let (transport, addr) = binding.peer;
        BranchTo {
            target: Target::Addr { transport, addr },
            // Not signed here: the request goes to a server, which signs it for its client.
            endpoint: None,
            gone: 480,
            route: Some(binding.node_route.clone()),
            request_uri: None,
        }
    }

    /// An address (a next hop, a Route to an address).
    pub(super) fn addr(target: Target) -> BranchTo {
        BranchTo {
            target,
            endpoint: None,
            gone: 480,
            route: None,
            request_uri: None,
        }
    }
}
impl Edge {
    pub(super) fn serves_ruri(&self, msg: &Message) -> bool {
        msg.request_uri()
            .and_then(SipUri::parse)
            .is_some_and(|u| self.serves(&u))
    }

    /// Whether a registered contact that the Request-URI equals may take the request: a contact
    /// of its owner's own address of record, or a device's address (an IP literal that is not
    /// this gateway's). A Contact is whatever URI its client wrote: one that is another address
    /// of record, a user of a served domain or of any other, must not take that address's
    /// requests (alice's `Contact: <sip:bob@example.com>` took every request for bob). Nor one
    /// at a server's address (a next hop's and port, a trusted peer's, a `client_routes`
    /// target's): it is that server's Contact, copied from one of the client's own calls, and
    /// other clients' in-dialog requests to a server that does not Record-Route carry it as
    /// Request-URI. (Servers behind those are in no list: [`Edge::route`] also asks a client's
    /// request to name the contact's address of record in its To.)
    fn contact_names_a_device(&self, uri: &SipUri<'_>, owner: &str) -> bool {
        if uri.aor() == owner {
            return true;
        }
        let Some(ip) = uri.ip() else {
            return false;
        };
        let addr = crate::uri::canonical(SocketAddr::new(
            ip,
            uri.port
                .unwrap_or(uri.transport().unwrap_or(Transport::Udp).default_port()),
        ));
        let at_a_server = self.is_next_hop_addr(addr)
            || super::is_trusted_peer(&self.cfg, addr)
            || self.cfg.client_routes.iter().any(|r| match *r {
                RouteTarget::Addr(a) => crate::uri::canonical(a) == addr,
                RouteTarget::Host(h) => h.to_canonical() == addr.ip(),
            });
        !at_a_server && !self.cfg.local.is_local(uri.host, uri.port, uri.transport())
    }

    /// The Contact to put in the Request-URI of a request routed by our flow token, when the
    /// request is one another gateway of the pool relays for an address of record that the
    /// token's flow registered: that gateway knows the device's flow, not its Contact, and
    /// sends the request as it received it. Registrar mode, out of a dialog, from a server.
    fn relayed_to_aor(
        &self,
        msg: &Message,
        flow: &Flow,
        from_client: bool,
        now: Instant,
    ) -> Option<String> {
        if from_client
            || self.cfg.mode != Mode::Registrar
            || msg.to().is_some_and(|t| t.tag().is_some())
        {
            return None;
        }
        let aor = SipUri::parse(msg.request_uri()?)?.aor();
        let binding = self
            .registrar
            .lookup(&aor, now)
            .into_iter()
            .find(|b| b.flow == *flow)?;
        Some(request_target(&binding.info.contact).into_owned())
    }

    pub(super) fn serves(&self, uri: &SipUri<'_>) -> bool {
        self.cfg.domains.is_empty()
            || self
                .cfg
                .domains
                .iter()
                .any(|d| d.eq_ignore_ascii_case(uri.host))
            || self.cfg.local.is_local(uri.host, uri.port, uri.transport())
    }

    /// RFC 3261 §16.4 and §16.5: strip our own Route entries (remembering a flow token in them),
    /// then pick the destination from the next Route or the Request-URI.
    pub(super) fn route(
        &mut self,
        msg: &mut Message,
        inflow: &Flow,
        policy: RoutePolicy,
        now: Instant,
    ) -> Result<Dest, u16> {
        let from_client = policy == RoutePolicy::Client;
        // A Record-Route token is seen by the dialog's peer: bob's is in the 180 his device sent
        // alice. It is bound to its dialog's Call-ID, and from a client only such a token is
        // followed, within a dialog (a To tag): out of it, alice's MESSAGE or INVITE routed by
        // bob's token went straight to bob's connection, signed for him, past the next hop and
        // whatever it enforces (blocking, privacy, archiving), and pidgin-sipe shows a MESSAGE
        // whatever its To tag says. It goes to the next hop now, as her other requests do. A
        // Path token (the registrar's requests for a client) is followed from servers only.
        let may_follow_tokens = !from_client || msg.to().is_some_and(|t| t.tag().is_some());
        let mut token_flow = None;
        let mut policy = policy;
        // A client's first Route entry of ours is its own side of the dialog (the caller's
        // route set is the Record-Route reversed, the callee's in order, and this gateway wrote
        // its two entries one per side): its token names where the client was, not where the
        // request goes. Followed, a client that had reconnected (a new connection, the gateway
        // restarted, a NAT's new port) sent its BYE or re-SUBSCRIBE back to its own old flow,
        // and never to the far end, when the far side's entry carries no token (a server's).
        let mut own_entry = from_client;
        while let Some(r) = top_route(msg) {
            let Ok(na) = parse_name_addr(r) else { break };
            let Some(uri) = SipUri::parse(na.uri) else {
                break;
            };
            if !self.cfg.local.is_local(uri.host, uri.port, uri.transport()) {
                break;
            }
            // A token naming the flow the request came in on changes nothing: its MAC is checked
            // only when it names another flow.
            let own = std::mem::take(&mut own_entry);
            if let Some(u) = uri.user
                && !own
                && may_follow_tokens
                && flow_token_claim(u)
                    .is_some_and(|f| !(f.id == inflow.id && f.remote == inflow.remote))
                && let Some(named) = self
                    .ids
                    .parse_dialog_flow_token(u, msg.call_id().unwrap_or(""))
                    .or_else(|| {
                        (!from_client)
                            .then(|| self.ids.parse_flow_token(u))
                            .flatten()
                    })
            {
                token_flow = Some(named);
            }
            pop_route(msg);
            policy = policy.below_our_entry();
        }
        if let Some((f, endpoint)) = token_flow {
            // The endpoint the token was issued for; a token without one (a client with no SA,
            // or a next hop's flow) falls back to what registered over the flow, if anything.
            let endpoint = endpoint.or_else(|| {
                self.registrar
                    .flow_identity(&f)
                    .and_then(|b| b.endpoint.clone())
            });
            let mut to = BranchTo::token(f, endpoint);
            to.request_uri = self.relayed_to_aor(msg, &f, from_client, now);
            return Ok(Dest::Flow(to));
        }
        if let Some(r) = top_route(msg) {
            let uri = parse_name_addr(r).ok().and_then(|na| SipUri::parse(na.uri));
            if let Some(uri) = uri.filter(|u| u.ip().is_none()) {
                // A name (a Record-Route naming one front-end server of a pool): resolved by the
                // driver; whether a client may go there is judged on the addresses it resolves
                // to, as for a Route to an address.
                return Ok(Dest::Name(NameTarget {
                    host: uri.host.to_owned(),
                    port: uri.port,
                    transport: uri.transport(),
                    secure: uri.secure,
                    policy,
                }));
            }
            let next = uri.and_then(|uri| {
                let t = uri.transport().unwrap_or(Transport::Udp);
                Some((t, uri.socket_addr(t)?))
            });
            return match next {
                // A client names where its request goes only within the operator's policy: a
                // Route to any address would make the gateway its relay into the network
                // behind it (loopback, internal hosts), past the next hop.
                Some((_, addr)) if !self.may_route_to(policy, addr) => Err(403),
                // A next hop is reached over the transport it is configured with, whatever a
                // client's Route says: `transport=tcp` to a `tls:` hop would send the request,
                // and the identity the gateway asserts, in clear over the server network.
                Some((transport, addr)) => {
                    let to = self.hop_transport(policy, NextHop { transport, addr });
                    Ok(Dest::Addr(to.transport, to.addr))
                }
                None if !self.cfg.next_hops.is_empty() => Ok(Dest::Hops),
                None => Err(404),
            };
        }
        let ruri = msg.request_uri().unwrap_or("").to_owned();
        let Some(uri) = SipUri::parse(&ruri) else {
            return Err(416);
        };
        // A client's request goes to a registered contact only when it is for that contact's
        // address of record, or for the contact itself (its To: alice's request in bob's dialog
        // names bob). A Contact is its client's choice: one that copies a server's behind the
        // next hop would take every other client's in-dialog requests to that server, whose To
        // names the server's side of the dialog.
        if let Some((owner, b)) = self.registrar.lookup_contact(&ruri, now)
            && self.contact_names_a_device(&uri, owner)
            && (!from_client
                || msg
                    .to()
                    .and_then(|t| SipUri::parse(t.uri))
                    .is_some_and(|to| {
                        let to = to.aor();
                        to == owner || to == uri.aor()
                    }))
        {
            return Ok(Dest::Flow(BranchTo::binding(
                b.flow,
                b.info.endpoint.clone(),
            )));
        }
        let local_lookup = match self.cfg.mode {
            Mode::Registrar => self.serves(&uri),
            Mode::Edge => !from_client,
        };
        if local_lookup {
            let aor = uri.aor();
            // This node's bindings, most recent first, then those other nodes of the pool hold
            // (for devices with no binding here).
            let mut branches: Vec<BranchTo> = self
                .registrar
                .lookup(&aor, now)
                .into_iter()
                .map(BranchTo::looked_up)
                .chain(
                    self.registrar
                        .lookup_remote(&aor, now)
                        .into_iter()
                        .map(|(_, r)| BranchTo::remote(r)),
                )
                .collect();
            match branches.len() {
                0 => {}
                1 => {
                    if let Some(to) = branches.pop() {
                        return Ok(Dest::Flow(to));
                    }
                }
                _ => return Ok(Dest::Fork(branches)),
            }
        }
        if self.cfg.local.is_local(uri.host, uri.port, uri.transport()) && uri.user.is_none() {
            return Err(404);
        }
        if from_client
            && (msg.method() == Some("ACK") || msg.to().is_some_and(|t| t.tag().is_some()))
            && let Some(hop) = self.next_hop_named_by(&uri)
        {
            // In a dialog with a server that does not Record-Route (Asterisk's PJSIP by
            // default, one of a pair of B2BUAs), the Request-URI is that server: the request
            // goes there, not to the first next hop up, which knows nothing of the dialog.
            let to = self.hop_transport(policy, hop);
            return Ok(Dest::Addr(to.transport, to.addr));
        }
        if from_client && !self.cfg.next_hops.is_empty() {
            return Ok(Dest::Hops);
        }
        match self.cfg.mode {
            Mode::Registrar if self.serves(&uri) => Err(404),
            Mode::Registrar => Err(404),
            Mode::Edge => Err(480),
        }
    }

    /// The configured next hop a URI names by its address and port (over the URI's transport,
    /// UDP by default, which [`Edge::hop_transport`] then puts right).
    fn next_hop_named_by(&self, uri: &SipUri<'_>) -> Option<NextHop> {
        uri.ip()?;
        let transport = uri.transport().unwrap_or(Transport::Udp);
        let addr = crate::uri::canonical(uri.socket_addr(transport)?);
        self.is_next_hop_addr(addr)
            .then_some(NextHop { transport, addr })
    }

    /// Whether `addr` (canonical) is a configured next hop's address and port, over whichever
    /// transport.
    fn is_next_hop_addr(&self, addr: SocketAddr) -> bool {
        self.cfg
            .next_hops
            .iter()
            .any(|h| crate::uri::canonical(h.addr) == addr)
    }

    /// True when a client's Route may name `addr`: a next hop, or an operator-listed target.
    pub(super) fn client_may_route_to(&self, addr: std::net::SocketAddr) -> bool {
        self.cfg.next_hops.iter().any(|h| h.addr == addr)
            || self.cfg.client_routes.iter().any(|r| r.matches(addr))
    }

    /// `to` over the transport its next hop is configured with, when it is one and the Route
    /// was not a next hop's own: a client's `transport=tcp` to a `tls:` hop would otherwise send
    /// the request, and the identity the gateway asserts, in clear over the server network.
    pub(super) fn hop_transport(&self, policy: RoutePolicy, to: NextHop) -> NextHop {
        if policy == RoutePolicy::Anywhere {
            return to;
        }
        // `to` itself when it is a configured next hop (one address may be a next hop over
        // several transports); else the first transport that address is configured with.
        if self.cfg.next_hops.contains(&to) {
            return to;
        }
        self.cfg
            .next_hops
            .iter()
            .find(|h| h.addr == to.addr)
            .copied()
            .unwrap_or(to)
    }

    /// Whose Route a request from `flow` follows ([`RoutePolicy`]).
    pub(super) fn route_policy(&self, flow: &Flow, from_client: bool) -> RoutePolicy {
        let flow_ip = flow.remote.ip().to_canonical();
        if from_client {
            RoutePolicy::Client
        } else if self
            .cfg
            .next_hops
            .iter()
            .any(|h| h.addr.ip().to_canonical() == flow_ip)
        {
            // A next hop's own address, whatever port it connects from (a server opening its own
            // connection to the gateway does so from an ephemeral one).
            RoutePolicy::Anywhere
        } else {
            RoutePolicy::Server
        }
    }

    /// True when a Route under `policy` may name `addr`.
    pub(super) fn may_route_to(&self, policy: RoutePolicy, addr: std::net::SocketAddr) -> bool {
        match policy {
            RoutePolicy::Anywhere => true,
            RoutePolicy::Client => self.client_may_route_to(addr),
            RoutePolicy::Server => {
                let ip = addr.ip().to_canonical();
                self.client_may_route_to(addr)
                    || self
                        .cfg
                        .trusted_peers
                        .iter()
                        .any(|p| p.to_canonical() == ip)
            }
        }
    }

    pub(super) fn first_live_hop(&self, now: Instant) -> Option<NextHop> {
        self.cfg
            .next_hops
            .iter()
            .find(|h| !self.hop_is_down(h, now))
            .copied()
    }
}
