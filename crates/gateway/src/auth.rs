//! The authentication stage: `sagw-auth`'s security core on every message to and from clients.
//!
//! Inbound requests get the core's decision: a challenge or handshake leg is answered here; an
//! authenticated request loses the credentials meant for the gateway and any identity the client
//! asserted, and carries the gateway's `P-Asserted-Identity` on to the next hop, which trusts it.
//! Responses a client sends must be signed once its endpoint has an SA. Outbound, every message to an
//! authenticated client is signed last, after the proxy's own rewrites: responses with the SA (or
//! Digest binding) their request was authenticated with, requests with the SA of the endpoint the
//! registrar binding names (AOR + epid). 100 Trying stays unsigned, as OCS does.
//!
//! The stage is this file; `setup` builds the security core and the policy router from `[auth]`,
//! and `routing` picks the policy each request meets. Their items are re-exported here, where the
//! rest of the gateway names them.

mod routing;
mod setup;

use std::sync::Arc;

use sagw_auth::{
    Authenticated, Binding, ChallengeFamily, Decision, ResponseVerdict, Rng, Scheme, SecurityCore,
    Transport, TransportContext, uri_names_identity,
};
use sagw_proxy::hook::{
    Answering, AuthNote, ClientAuth, InboundContext, InboundVerdict, OutboundContext, OutboundKind,
    OutboundVerdict, SaEndpoint,
};
use sagw_proxy::{build_response, reason_phrase};
use sagw_sip::Message;
use tracing::{debug, info};

use crate::listener::ListenerId;

pub use routing::{PolicyRouter, Routed};
pub(crate) use setup::kerberos_config;
pub use setup::{
    AuthSetupError, BuiltCore, OsRng, SharedKeys, build_core, build_core_keyed,
    build_core_with_backend, build_core_with_store, check_policies, kerberos_acceptor, policy_key,
};

/// What the stage reads per request and a configuration reload replaces (crate::reload): the
/// director map and the policy router.
#[derive(Debug, Clone)]
pub struct StageRouting {
    /// (lower-cased `user@domain` or `domain`, home server URI)
    pub director: Vec<(String, String)>,
    /// Which policy a request meets.
    pub router: PolicyRouter,
}

/// The stage the proxy calls for every client message.
pub struct SecurityStage {
    core: Arc<SecurityCore>,
    rng: Box<dyn Rng + Send>,
    /// Swapped whole by a reload while the proxy owns the stage.
    routing: Arc<arc_swap::ArcSwap<StageRouting>>,
    /// Where deferred sign-ins run (Kerberos AP-REQs, domain NTLM), one pool per kind.
    jobs: Vec<Arc<crate::auth_jobs::AuthWorkers>>,
}

impl SecurityStage {
    /// A stage over `core`, drawing randomness from `rng` (the OS in production, a script in
    /// recorded-flow tests).
    pub fn new(
        core: Arc<SecurityCore>,
        rng: Box<dyn Rng + Send>,
        director: Vec<(String, String)>,
    ) -> Self {
        SecurityStage {
            core,
            rng,
            routing: Arc::new(arc_swap::ArcSwap::from_pointee(StageRouting {
                director,
                router: PolicyRouter::default(),
            })),
            jobs: Vec::new(),
        }
    }

    /// Hands the jobs of `workers`' kind the core defers to them (Kerberos: the core is built
    /// with `with_kerberos_offload`; domain NTLM: with `with_domain_ntlm`).
    pub fn with_workers(mut self, workers: Arc<crate::auth_jobs::AuthWorkers>) -> Self {
        self.jobs.retain(|w| w.kind() != workers.kind());
        self.jobs.push(workers);
        self
    }

    /// The policies per listener and client kind (from [`build_core`]).
    pub fn with_router(self, router: PolicyRouter) -> Self {
        let director = self.routing.load().director.clone();
        self.routing
            .store(Arc::new(StageRouting { director, router }));
        self
    }

    /// Where a reload puts a new director map and router: the stage reads it per request.
    pub fn routing(&self) -> Arc<arc_swap::ArcSwap<StageRouting>> {
        self.routing.clone()
    }

    /// The core, for metrics and the admin endpoint.
    pub fn core(&self) -> &Arc<SecurityCore> {
        &self.core
    }

    /// A fresh To tag, held inline: it is only copied into the response, so it is not worth a
    /// String (once per challenge). Lower-case hex, as `{:02x}` per byte wrote it.
    fn tag(&mut self) -> sagw_proxy::Unique {
        let mut b = [0u8; 8];
        self.rng.fill_bytes(&mut b);
        sagw_proxy::Unique::of(b)
    }

    fn respond(
        &mut self,
        req: &Message,
        code: u16,
        reason: &str,
        headers: &[(&str, String)],
    ) -> InboundVerdict {
        let tag = self.tag();
        match build_response(req, code, reason, Some(tag.as_str()), headers) {
            Some(r) => InboundVerdict::Respond(r),
            None => InboundVerdict::Drop,
        }
    }

    /// The home server of an identity, when the director sends it elsewhere.
    fn home_of(&self, identity: &str) -> Option<String> {
        let aor = identity
            .strip_prefix("sips:")
            .or_else(|| identity.strip_prefix("sip:"))
            .unwrap_or(identity);
        let domain = aor.rsplit_once('@').map_or(aor, |(_, d)| d);
        let routing = self.routing.load();
        let director = &routing.director;
        director
            .iter()
            .find(|(k, _)| is_lowered(k, aor))
            .or_else(|| director.iter().find(|(k, _)| is_lowered(k, domain)))
            .map(|(_, home)| home.clone())
    }

    fn authenticated(
        &mut self,
        msg: &mut Message,
        auth: Authenticated,
        ctx: &InboundContext<'_>,
    ) -> InboundVerdict {
        let now = ctx.now.wall;
        if msg.method() == Some("REGISTER")
            && let Some(home) = self.home_of(&auth.identity)
        {
            let tag = self.tag();
            let contact = format!("<{home}>");
            let Some(mut moved) = build_response(
                msg,
                301,
                "Moved Permanently",
                Some(tag.as_str()),
                &[("Contact", contact)],
            ) else {
                return InboundVerdict::Drop;
            };
            if let Err(e) = self
                .core
                .finish_response(&mut moved, &auth, now, &mut *self.rng)
            {
                debug!(error = %e, "could not sign the redirect");
            }
            info!(identity = %auth.identity, home = %home, "REGISTER redirected to the home server");
            return InboundVerdict::Respond(moved);
        }
        if !auth.evicted.is_empty() {
            info!(
                identity = %auth.identity,
                evicted = auth.evicted.len(),
                "security associations ended: the identity is at auth.max_sas_per_identity"
            );
        }
        self.core.strip_credentials(msg, Some(auth.credentials_at));
        strip_identity_headers(msg, Speaker::Proven(&auth.identity));
        let mut asserted = String::with_capacity(auth.identity.len() + 2);
        asserted.push('<');
        asserted.push_str(&auth.identity);
        asserted.push('>');
        msg.push_header("P-Asserted-Identity", &asserted);
        // The SA's own identity and epid, not the request's headers: the flow tokens written
        // for this request name this endpoint, and requests back through them are signed for it.
        let endpoint = match &auth.binding {
            Binding::Sa { sa, .. } => Some(SaEndpoint {
                identity: sa.identity().to_owned(),
                epid: sa.epid().to_owned(),
            }),
            Binding::Digest { .. } => None,
        };
        // The transactions it opens count against the identity it proved, not its address: over
        // UDP an address can be anyone's.
        let client = Some(sagw_proxy::ClientKey::identity(&auth.identity));
        let note: AuthNote = Arc::new(auth);
        InboundVerdict::Continue {
            note: Some(note),
            endpoint,
            client,
        }
    }
}

impl SecurityStage {
    /// The ACK of a 2xx to a Digest client's INVITE, over the INVITE's flow, naming that 2xx (the
    /// edge found it: [`InboundContext::acknowledges`]): passed on as the INVITE's identity,
    /// whatever credentials it carries, if its From is that identity as the INVITE's had to be.
    /// A Digest client cannot prove this ACK on its own: PJSIP sends it without credentials, RFC
    /// 3261 §13.2.2.4 has others copy the INVITE's (made for another method, `uri` and nonce
    /// count) and send it again for each retransmitted 2xx, and an ACK cannot be challenged. An
    /// SA client signs its ACKs like anything else: `None`, judged as usual.
    fn acknowledging(
        &mut self,
        msg: &mut Message,
        ctx: &InboundContext<'_>,
    ) -> Option<InboundVerdict> {
        let note = ctx.acknowledges.filter(|_| msg.method() == Some("ACK"))?;
        let invite = note.downcast_ref::<Authenticated>()?;
        if !matches!(invite.binding, Binding::Digest { .. }) {
            return None;
        }
        // Its identity, or the address a server gave it in this dialog (a callee's re-INVITE:
        // see `InboundContext::dialog_local`).
        let from_is_its_own = msg.from().is_some_and(|f| {
            uri_names_identity(f.uri, &invite.identity)
                || self
                    .core
                    .lends_dialog_address(f.uri, &invite.identity, ctx.dialog_local)
        });
        if !from_is_its_own {
            self.core.counters().discarded();
            debug!(identity = %invite.identity, source = %ctx.flow.remote, "ACK of an accepted INVITE from someone else dropped");
            return Some(InboundVerdict::Drop);
        }
        debug!(identity = %invite.identity, source = %ctx.flow.remote, "ACK of an accepted INVITE passed on as its identity");
        self.core.strip_credentials(msg, None);
        strip_identity_headers(msg, Speaker::Proven(&invite.identity));
        msg.push_header("P-Asserted-Identity", &format!("<{}>", invite.identity));
        Some(InboundVerdict::Continue {
            note: Some(note.clone()),
            endpoint: None,
            client: Some(sagw_proxy::ClientKey::identity(&invite.identity)),
        })
    }
}

fn transport(t: sagw_proxy::Transport) -> Transport {
    match t {
        sagw_proxy::Transport::Udp => Transport::Udp,
        sagw_proxy::Transport::Tcp => Transport::Tcp,
        sagw_proxy::Transport::Tls => Transport::Tls,
    }
}

impl ClientAuth for SecurityStage {
    fn inbound(&mut self, msg: &mut Message, ctx: &InboundContext<'_>) -> InboundVerdict {
        let now = ctx.now.wall;
        if !msg.is_request() {
            // The edge names the request every client response answers (its transaction, or the
            // `sgt` of our Via for a late one) and drops the others unjudged: a response without
            // one has nothing to be judged against, and its own To is only its own claim.
            let Answering::Request(sent_to) = ctx.answering else {
                self.core.counters().dropped_response();
                debug!("dropped a client response that answers no known request");
                return InboundVerdict::Drop;
            };
            return match self.core.on_response(msg, now) {
                ResponseVerdict::Verified(sa)
                    if sent_to
                        .is_some_and(|e| e.identity != sa.identity() || e.epid != sa.epid()) =>
                {
                    // Signed, but by another endpoint than the one the request went to.
                    self.core.counters().dropped_response();
                    debug!("dropped a client response signed by another endpoint's SA");
                    InboundVerdict::Drop
                }
                ResponseVerdict::Verified(_) => {
                    // The client's proof is for this gateway, not for whoever gets the response;
                    // an identity it asserts is its own claim, which nobody downstream may take
                    // for the gateway's.
                    self.core.strip_credentials(msg, None);
                    strip_identity_headers(msg, Speaker::Response);
                    InboundVerdict::Continue {
                        note: None,
                        endpoint: None,
                        client: None,
                    }
                }
                ResponseVerdict::Drop(reason) => {
                    debug!(
                        reason = reason.label(),
                        "dropped a client response whose signature failed"
                    );
                    InboundVerdict::Drop
                }
                ResponseVerdict::Unsigned => {
                    // Once an endpoint has an SA, its final and 18x responses must be signed: the
                    // endpoint the request went to when the gateway sent it, whatever the
                    // response's To says.
                    if sent_to.is_some() && msg.status_code() != Some(100) {
                        self.core.counters().dropped_response();
                        InboundVerdict::Drop
                    } else {
                        strip_identity_headers(msg, Speaker::Response);
                        InboundVerdict::Continue {
                            note: None,
                            endpoint: None,
                            client: None,
                        }
                    }
                }
            };
        }
        if let Some(verdict) = self.acknowledging(msg, ctx) {
            return verdict;
        }
        let tctx = TransportContext {
            source: ctx.flow.remote,
            transport: transport(ctx.flow.transport),
        };
        let listener = ListenerId::of(ctx.flow.id);
        let routing = self.routing.load();
        let routed = routing.router.route(listener, msg);
        debug!(policy = routed.name, listener = listener.0, source = %ctx.flow.remote, "challenge policy");
        let decision = self.core.on_request_in_dialog(
            msg,
            &tctx,
            routed.id,
            &routed.family,
            ctx.dialog_local,
            now,
            &mut *self.rng,
        );
        crate::audit::decision(&decision, msg, &ctx.flow);
        match decision {
            Decision::Challenge(c) | Decision::Continue(c) => {
                if let Some(cause) = c.cause {
                    debug!(reason = cause.label(), source = %ctx.flow.remote, "credentials refused, challenging again");
                }
                let headers: Vec<(&str, String)> = c.headers.into_iter().collect();
                self.respond(msg, c.status, c.reason_phrase, &headers)
            }
            Decision::Authenticated(a) => self.authenticated(msg, a, ctx),
            Decision::Reject {
                status,
                reason_phrase,
                reason,
            } => {
                // Nothing in the request was verified: the answer goes unsigned. Signing it with
                // the SA its From and epid name would give any sender that SA's signature over a
                // Call-ID and CSeq of its choosing (and used to extend the SA's idle life).
                debug!(status, reason = reason.label(), source = %ctx.flow.remote, "request rejected");
                self.respond(msg, status, reason_phrase, &[])
            }
            Decision::Forbidden(f) => {
                debug!(
                    status = f.status,
                    reason = f.reason.label(),
                    identity = %f.verified.identity,
                    source = %ctx.flow.remote,
                    "authenticated request forbidden"
                );
                // Signed with the binding that verified the request, and only with it: the client
                // discards unsigned finals, and no other SA has anything to do with this request.
                match self.respond(msg, f.status, f.reason_phrase, &[]) {
                    InboundVerdict::Respond(mut r) => {
                        if let Err(e) =
                            self.core
                                .finish_response(&mut r, &f.verified, now, &mut *self.rng)
                        {
                            debug!(error = %e, "refusal left unsigned");
                        }
                        InboundVerdict::Respond(r)
                    }
                    other => other,
                }
            }
            Decision::Discard(reason) => {
                debug!(
                    reason = reason.label(),
                    "ACK/CANCEL without valid credentials dropped"
                );
                InboundVerdict::Drop
            }
            Decision::Deferred(job) => self.deferred(msg, job, ctx),
            Decision::Unavailable {
                reason,
                retry_after_secs,
            } => {
                // Nothing was verified (the domain or the directory could not say): unsigned,
                // like a Reject, and never a pass.
                info!(
                    reason = reason.label(),
                    source = %ctx.flow.remote,
                    retry_after_secs,
                    "sign-in waits for the domain: 503"
                );
                let retry = retry_after_secs.max(1).to_string();
                self.respond(msg, 503, "Service Unavailable", &[("Retry-After", retry)])
            }
        }
    }

    fn outbound(&mut self, msg: &mut Message, ctx: &OutboundContext<'_>) -> OutboundVerdict {
        let now = ctx.now.wall;
        match ctx.kind {
            OutboundKind::Response => {
                if msg.status_code() == Some(100) {
                    return OutboundVerdict::Deliver;
                }
                let Some(auth) = ctx.note.and_then(|n| n.downcast_ref::<Authenticated>()) else {
                    // Relayed after its transaction ended, for the endpoint the request came
                    // from (the proxy names it only then): signed with its SA like any other
                    // response to it, else the client drops it.
                    if let Some(endpoint) = ctx.endpoint {
                        self.sign_relayed_response(msg, endpoint, now);
                    }
                    return OutboundVerdict::Deliver;
                };
                // Whatever a server behind us signed is not for this client.
                msg.remove_header("Authentication-Info");
                msg.remove_header("Proxy-Authentication-Info");
                if let Some(req) = ctx.request {
                    add_register_expires(msg, req);
                    // The SA outlives the registration the registrar granted (not the one the
                    // client asked for, which the registrar may have shortened).
                    if let Some(granted) = granted_register_expires(msg, req) {
                        self.core.register_granted(auth, granted, now);
                    }
                }
                if let Err(e) = self.core.finish_response(msg, auth, now, &mut *self.rng) {
                    debug!(error = %e, "response left unsigned");
                }
                OutboundVerdict::Deliver
            }
            OutboundKind::Request => {
                msg.remove_header("Authentication-Info");
                msg.remove_header("Proxy-Authentication-Info");
                // No endpoint: a client without an SA (Digest), which gets requests as they are.
                let Some(endpoint) = ctx.endpoint else {
                    return OutboundVerdict::Deliver;
                };
                self.sign_request(msg, endpoint, now)
            }
        }
    }
}

impl SecurityStage {
    /// A sign-in step the core runs off its thread: queued for a worker of its kind (the request
    /// comes back through the proxy with the outcome), dropped when the same token is being worked
    /// on already (a retransmission: the original's answer will come), 503 when the queue is full.
    fn deferred(
        &mut self,
        msg: &mut Message,
        job: sagw_auth::AuthJob,
        ctx: &InboundContext<'_>,
    ) -> InboundVerdict {
        use crate::auth_jobs::Submitted;
        let kind = job.kind();
        let Some(workers) = self.jobs.iter().find(|w| w.kind() == kind).cloned() else {
            // No workers: run it here (tests, `kerberos_workers = 0`), then judge the request
            // with the outcome.
            let key = *job.key();
            let outcome = self.core.run_job(&job);
            self.core.job_done(key, outcome, ctx.now.wall);
            return self.inbound(msg, ctx);
        };
        match workers.submit(job, msg.clone(), ctx.flow) {
            Submitted::Queued => InboundVerdict::Held,
            Submitted::InFlight => {
                debug!(source = %ctx.flow.remote, kind = kind.label(), "retransmission of a sign-in being worked on: dropped");
                InboundVerdict::Held
            }
            refused @ (Submitted::Full | Submitted::SourceShare) => {
                let (scheme, key) = match (kind, refused) {
                    (sagw_auth::JobKind::Kerberos, Submitted::Full) => {
                        (Scheme::Kerberos, "queue full (auth.kerberos_queue)")
                    }
                    (sagw_auth::JobKind::Kerberos, _) => (
                        Scheme::Kerberos,
                        "this source's share of the queue taken (auth.kerberos_queue_per_source)",
                    ),
                    (sagw_auth::JobKind::DomainNtlm, Submitted::Full) => {
                        (Scheme::Ntlm, "queue full (auth.domain.queue)")
                    }
                    (sagw_auth::JobKind::DomainNtlm, _) => (
                        Scheme::Ntlm,
                        "this source's share of the queue taken (auth.domain.queue_per_source)",
                    ),
                    (sagw_auth::JobKind::NtlmFinalLeg, Submitted::Full) => {
                        (Scheme::Ntlm, "the pool's NTLM queue full")
                    }
                    (sagw_auth::JobKind::NtlmFinalLeg, _) => (
                        Scheme::Ntlm,
                        "this source's share of the pool's NTLM queue taken",
                    ),
                };
                let counters = self.core.counters();
                if kind == sagw_auth::JobKind::Kerberos {
                    // NTLM counted its start at the first leg.
                    counters.handshake_started(scheme);
                }
                counters.handshake_failed(scheme, sagw_auth::Reason::HandshakeLimit);
                crate::audit::refused(msg, &ctx.flow, sagw_auth::Reason::HandshakeLimit, None);
                info!(source = %ctx.flow.remote, kind = kind.label(), "sign-in job refused, {key}: 503");
                if matches!(msg.method(), Some("ACK" | "CANCEL")) {
                    return InboundVerdict::Drop;
                }
                let retry = workers.retry_after().as_secs().max(1).to_string();
                self.respond(msg, 503, "Service Unavailable", &[("Retry-After", retry)])
            }
        }
    }

    /// Signs a response relayed after its transaction ended for `endpoint`, the one the request
    /// came from; left unsigned (as a response is never refused) when that endpoint has no live
    /// SA any more.
    fn sign_relayed_response(
        &mut self,
        msg: &mut Message,
        endpoint: &SaEndpoint,
        now: std::time::SystemTime,
    ) {
        msg.remove_header("Authentication-Info");
        msg.remove_header("Proxy-Authentication-Info");
        let Some(sa) = self
            .core
            .sa_for_endpoint(&endpoint.identity, &endpoint.epid, now)
        else {
            debug!(identity = %endpoint.identity, "relayed response left unsigned: the endpoint has no live SA");
            return;
        };
        if let Err(e) = self
            .core
            .sign(msg, &sa, ChallengeFamily::Www, now, &mut *self.rng)
        {
            debug!(error = %e, "relayed response left unsigned");
        }
    }

    /// Signs a request to `endpoint` with its SA, or refuses it with 480 when the endpoint has
    /// none any more (expired, revoked, signed out): its client drops unsigned requests, and the
    /// sender would otherwise wait for a timeout.
    fn sign_request(
        &mut self,
        msg: &mut Message,
        endpoint: &SaEndpoint,
        now: std::time::SystemTime,
    ) -> OutboundVerdict {
        let Some(sa) = self
            .core
            .sa_for_endpoint(&endpoint.identity, &endpoint.epid, now)
        else {
            debug!(identity = %endpoint.identity, "request to an endpoint without a live SA refused");
            return OutboundVerdict::Refuse(480);
        };
        // The client finds the SA for its answer by the To epid, and copies To into the answer,
        // which is judged by it: To names the endpoint the request goes to. An epid the request
        // came with (another device's, or a caller's choice) is replaced, or the endpoint's
        // signed answer would be taken for another endpoint's and dropped.
        if let Some(to) = msg.header("To")
            && let Ok(na) = sagw_sip::parse_name_addr(to)
        {
            let to = match na.param("epid") {
                None => Some([to, ";epid=", &endpoint.epid].concat()),
                Some(epid) if epid != endpoint.epid => replace_part(to, epid, &endpoint.epid),
                Some(_) => None,
            };
            if let Some(to) = to {
                msg.set_header("To", &to);
            }
        }
        match self
            .core
            .sign(msg, &sa, ChallengeFamily::Www, now, &mut *self.rng)
        {
            Ok(()) => OutboundVerdict::Deliver,
            Err(e) => {
                debug!(error = %e, "request to client could not be signed; refused");
                OutboundVerdict::Refuse(480)
            }
        }
    }
}

/// A 2xx to REGISTER from a registrar behind the edge may give the granted lifetime only as the
/// Contact's `expires` parameter; Lync-family clients read only the `Expires` header (pidgin-sipe
/// hangs without it, notes §9), so copy it before signing.
fn add_register_expires(resp: &mut Message, req: &Message) {
    if req.method() != Some("REGISTER")
        || !resp.status_code().is_some_and(|c| (200..300).contains(&c))
        || resp.expires().is_some()
    {
        return;
    }
    let Some(own) = req
        .header("Contact")
        .and_then(|c| sagw_sip::parse_name_addr(c).ok())
        .map(|na| na.uri.to_owned())
    else {
        return;
    };
    let granted = resp.header_values("Contact").find_map(|c| {
        let na = sagw_sip::parse_name_addr(c).ok()?;
        if na.uri.eq_ignore_ascii_case(&own) {
            na.param("expires").map(str::to_owned)
        } else {
            None
        }
    });
    if let Some(e) = granted {
        resp.push_header("Expires", &e);
    }
}

/// The lifetime a 2xx to REGISTER granted the client's binding: its `Expires` header (the
/// embedded registrar writes it, [`add_register_expires`] copies a registrar's Contact parameter
/// into it). `None` for other responses, and when the 2xx says nothing the client could rely on
/// either (the SA then lives by its idle timer alone).
fn granted_register_expires(resp: &Message, req: &Message) -> Option<u32> {
    if req.method() != Some("REGISTER")
        || !resp.status_code().is_some_and(|c| (200..300).contains(&c))
    {
        return None;
    }
    resp.expires()?.trim().parse::<u32>().ok()
}

/// Whether `key` is `s` with its ASCII letters lower-cased: what `key == s.to_ascii_lowercase()`
/// says, without the copy (every REGISTER looks its identity up in the director).
fn is_lowered(key: &str, s: &str) -> bool {
    key.len() == s.len()
        && key
            .bytes()
            .zip(s.bytes())
            .all(|(k, b)| k == b.to_ascii_lowercase())
}

/// Whose message identity headers are stripped from, and so what it may still say of itself.
#[derive(Clone, Copy)]
enum Speaker<'a> {
    /// A client's request, authenticated as this identity.
    Proven(&'a str),
    /// A client's response: nothing in one names a party the client may vouch for.
    Response,
}

/// Headers in which a message names whose it is, or on whose behalf it comes: whoever receives
/// a client's message must see only the identity the gateway asserts (for requests it adds its
/// own P-Asserted-Identity after this), never the client's claim. Remote-Party-ID is the
/// pre-RFC 3325 form some servers still honour; a voicemail server or PBX takes the mailbox or
/// the redirecting party from Diversion (RFC 5806) or History-Info (RFC 7044); an IMS server the
/// user it serves from P-Served-User (RFC 5502); a verifier the caller from a STIR Identity
/// (RFC 8224, compact `y`, which the parser does not know as Identity) or the older
/// Identity-Info. All of them are written by servers on the way, none by a client of this
/// gateway's.
const CLAIMED_IDENTITY_HEADERS: [&str; 21] = [
    "P-Asserted-Identity",
    "P-Preferred-Identity",
    "Remote-Party-ID",
    "Diversion",
    "History-Info",
    "P-Served-User",
    "Identity",
    "y",
    "Identity-Info",
    // What only the trust domain writes (RFC 7315 §4, RFC 5502, RFC 6050, RFC 5503, RFC 7316),
    // and the servers behind believe: the number called, what to bill and where, the visited
    // network, the served user's profile, the service asserted, the cable network's billing,
    // redirection, tracing, priority and intercept, the private network. `P-Access-Network-Info`
    // stays: a UA writes its own (RFC 7315 §4.4), but not one that says `network-provided`
    // (below).
    "P-Called-Party-ID",
    "P-Charging-Vector",
    "P-Charging-Function-Addresses",
    "P-Visited-Network-ID",
    "P-Profile-Key",
    "P-Asserted-Service",
    "P-DCS-Billing-Info",
    "P-DCS-Redirect",
    "P-DCS-Trace-Party-ID",
    "P-DCS-OSPS",
    "P-DCS-LAES",
    "P-Private-Network-Indication",
];

/// Removes the [`CLAIMED_IDENTITY_HEADERS`] and a `Referred-By` (compact `b`) that names anyone
/// but the proven identity: the target of a transfer believes the referrer it names, and a
/// REFER's own (pidgin-sipe and Lync write `Referred-By: <sip:self>;epid=…`) is the only one a
/// client may vouch for. A referee's INVITE naming the one who referred it loses it: the
/// gateway cannot tell that referrer's word from the client's.
fn strip_identity_headers(msg: &mut Message, speaker: Speaker<'_>) {
    static CLAIMED: std::sync::LazyLock<sagw_sip::HeaderNames<21>> =
        std::sync::LazyLock::new(|| sagw_sip::HeaderNames::new(CLAIMED_IDENTITY_HEADERS));
    msg.remove_named(&CLAIMED);
    // An access network the network vouches for (RFC 7315 §5.4: `network-provided`) is the
    // network's word, which IMS servers take as such: never a client's.
    if msg.header_values("P-Access-Network-Info").any(|v| {
        v.split(';')
            .skip(1)
            .any(|p| p.trim().eq_ignore_ascii_case("network-provided"))
    }) {
        msg.remove_header("P-Access-Network-Info");
    }
    let own_referrer = match speaker {
        Speaker::Proven(identity) => msg.header_values("Referred-By").all(|v| {
            sagw_sip::parse_name_addr(v).is_ok_and(|na| uri_names_identity(na.uri, identity))
        }),
        Speaker::Response => false,
    };
    if !own_referrer {
        msg.remove_header("Referred-By");
    }
    // Only a REFER has a Refer-To (RFC 3515): no other request pays for the look.
    if msg.method() == Some("REFER") {
        strip_refer_to_identity(msg);
    }
}

/// The headers of a Refer-To URI go into the request the referee sends (RFC 3515 §2.1): one of
/// the [`CLAIMED_IDENTITY_HEADERS`] or a `Referred-By` there is vouched for in the referee's
/// name, and is removed from the URI (names compared unescaped, ASCII case ignored); the others
/// (`Replaces`, `Require`, a body) stay as written. A Refer-To with URI headers that does not
/// parse as one name-addr (a raw `<` inside the brackets, headers in an addr-spec, a list) is
/// removed whole: what it carries cannot be told, and a referee's lenient parser may read it.
fn strip_refer_to_identity(msg: &mut Message) {
    let edits: Vec<(usize, Option<String>)> = msg
        .header_all_indexed("Refer-To")
        .filter_map(|(i, v)| {
            if !v.contains('?') {
                return None;
            }
            match refer_to_without_identity(v) {
                Ok(None) => None,
                Ok(Some(kept)) => Some((i, Some(kept))),
                Err(()) => Some((i, None)),
            }
        })
        .collect();
    for (i, value) in edits.into_iter().rev() {
        msg.remove_header_at(i);
        if let Some(value) = value {
            msg.insert_header(i, "Refer-To", &value);
        }
    }
}

/// `v` (a Refer-To value with a `?`) without the identity headers of its URI: `Ok(None)` when it
/// has none, `Err` when it does not parse as one name-addr whose URI is a slice of it.
fn refer_to_without_identity(v: &str) -> Result<Option<String>, ()> {
    let na = sagw_sip::parse_name_addr(v).map_err(|_| ())?;
    let Some((base, headers)) = na.uri.split_once('?') else {
        // The `?` is outside the URI (a parameter's value): nothing the referee copies.
        return Ok(None);
    };
    let kept: Vec<&str> = headers
        .split('&')
        .filter(|h| {
            let name = h.split_once('=').map_or(*h, |(n, _)| n);
            let name = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
            !CLAIMED_IDENTITY_HEADERS
                .iter()
                .chain(&["Referred-By", "b"])
                .any(|c| c.eq_ignore_ascii_case(name.trim()))
        })
        .collect();
    if kept.len() == headers.split('&').count() {
        return Ok(None);
    }
    let uri = if kept.is_empty() {
        base.to_owned()
    } else {
        [base, "?", &kept.join("&")].concat()
    };
    replace_part(v, na.uri, &uri).map(Some).ok_or(())
}

/// `whole` with `part`, a slice of it (what a parser of `whole` returned), replaced by `with`:
/// its place is where its address says. `None` when `part` is not within `whole`.
fn replace_part(whole: &str, part: &str, with: &str) -> Option<String> {
    let at = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    let (before, after) = (whole.get(..at)?, whole.get(at + part.len()..)?);
    Some([before, with, after].concat())
}

/// A short name for the reason phrase of a status, for generated responses.
pub fn phrase(code: u16) -> &'static str {
    reason_phrase(code)
}

#[cfg(test)]
mod tests {
    use super::setup::core_of;
    use super::*;

    #[test]
    fn a_part_is_replaced_where_it_is_and_only_when_it_is_a_slice_of_the_whole() {
        let to = "<sip:bob@example.com>;epid=0badc0de;tag=t1";
        let epid = &to[27..35];
        assert_eq!(epid, "0badc0de");
        assert_eq!(
            super::replace_part(to, epid, "b0b").as_deref(),
            Some("<sip:bob@example.com>;epid=b0b;tag=t1")
        );
        // Equal text elsewhere (a flag parameter's static ""): not a slice of `to`.
        assert_eq!(super::replace_part(to, "0badc0de", "b0b"), None);
    }

    #[test]
    fn is_lowered_is_equality_with_the_lower_cased_copy() {
        let keys = [
            "alice@example.com",
            "example.com",
            "Alice@example.com",
            "",
            "\u{e9}",
        ];
        let names = [
            "alice@example.com",
            "ALICE@Example.COM",
            "alice@example.co",
            "alice@example.comm",
            "Example.com",
            "",
            "\u{e9}",
            "\u{c9}",
        ];
        for k in keys {
            for n in names {
                assert_eq!(
                    super::is_lowered(k, n),
                    k == n.to_ascii_lowercase(),
                    "{k:?} {n:?}"
                );
            }
        }
    }

    /// The edge names the request every client response answers; a response handed to the
    /// stage without one is dropped, not judged by the epid its own To claims.
    #[test]
    fn a_client_response_that_answers_no_known_request_is_dropped() {
        let dir = tempfile::tempdir().expect("temp dir");
        let text = format!(
            "[listen]\nudp = \"127.0.0.1:0\"\ntcp = \"\"\ntls = \"\"\n[auth]\nschemes = [\"ntlm\", \"digest\"]\ncredentials = \"{d}/users\"\nnonce_key = \"{d}/nonce.key\"\n",
            d = dir.path().display()
        );
        let (core, _) = core_of(&text);
        let mut stage = SecurityStage::new(
            Arc::new(core),
            Box::new(sagw_auth::XorShiftRng::new(4)),
            Vec::new(),
        );
        let response = || {
            Message::parse(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP gw;branch=z9hG4bK1\r\nFrom: <sip:b@example.com>;tag=1\r\nTo: <sip:a@example.com>;tag=2\r\nCall-ID: c\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n").expect("response")
        };
        let ctx = |answering| InboundContext {
            flow: sagw_proxy::Flow {
                id: sagw_proxy::FlowId(1),
                transport: sagw_proxy::Transport::Udp,
                remote: "192.0.2.1:5060".parse().expect("address"),
            },
            now: sagw_proxy::Now {
                mono: std::time::Instant::now(),
                wall: std::time::SystemTime::now(),
            },
            flow_binding: None,
            answering,
            acknowledges: None,
            dialog_local: None,
        };
        assert!(matches!(
            stage.inbound(&mut response(), &ctx(Answering::Unknown)),
            InboundVerdict::Drop
        ));
        // The same response to a request the gateway sent to a client without an SA is relayed.
        assert!(matches!(
            stage.inbound(&mut response(), &ctx(Answering::Request(None))),
            InboundVerdict::Continue { .. }
        ));
    }

    /// A UA's own access network stays (RFC 7315 §4.4); one the network vouches for does not.
    #[test]
    fn only_a_network_provided_access_network_info_is_removed() {
        let msg = |pani: &str| {
            Message::parse(format!("MESSAGE sip:b@example.com SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nFrom: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>\r\nCall-ID: c\r\nCSeq: 1 MESSAGE\r\nP-Access-Network-Info: {pani}\r\nContent-Length: 0\r\n\r\n").as_bytes()).expect("request")
        };
        let mut own = msg("IEEE-802.11;i-wlan-node-id=ffffff");
        strip_identity_headers(&mut own, Speaker::Proven("sip:a@example.com"));
        assert!(own.header("P-Access-Network-Info").is_some());
        let mut vouched = msg("3GPP-E-UTRAN-FDD; utran-cell-id-3gpp=262010001; Network-Provided");
        strip_identity_headers(&mut vouched, Speaker::Proven("sip:a@example.com"));
        assert!(vouched.header("P-Access-Network-Info").is_none());
    }

    #[test]
    fn the_granted_expiry_is_the_2xx_expires_of_a_register() {
        let req = Message::parse(b"REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/TLS h;branch=z9hG4bK1\r\nFrom: <sip:a@example.com>;tag=1\r\nTo: <sip:a@example.com>\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\nContact: <sip:a@10.0.0.1:5061;transport=tls>\r\nExpires: 28000\r\nContent-Length: 0\r\n\r\n").expect("request");
        let resp = |status: &str, extra: &str| {
            Message::parse(format!("SIP/2.0 {status}\r\nVia: SIP/2.0/TLS h;branch=z9hG4bK1\r\nFrom: <sip:a@example.com>;tag=1\r\nTo: <sip:a@example.com>;tag=2\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\n{extra}Content-Length: 0\r\n\r\n").as_bytes()).expect("response")
        };
        assert_eq!(
            granted_register_expires(&resp("200 OK", "Expires: 600\r\n"), &req),
            Some(600)
        );
        // Nothing granted: the request's 28000 is not taken instead.
        assert_eq!(granted_register_expires(&resp("200 OK", ""), &req), None);
        assert_eq!(
            granted_register_expires(&resp("423 Interval Too Brief", "Expires: 600\r\n"), &req),
            None
        );
    }

    #[test]
    fn copies_the_granted_expiry_of_the_clients_own_contact() {
        let req = Message::parse(b"REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/TLS h;branch=z9hG4bK1\r\nFrom: <sip:a@example.com>;tag=1\r\nTo: <sip:a@example.com>\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\nContact: <sip:a@10.0.0.1:5061;transport=tls>\r\nContent-Length: 0\r\n\r\n").expect("request");
        let mut resp = Message::parse(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/TLS h;branch=z9hG4bK1\r\nFrom: <sip:a@example.com>;tag=1\r\nTo: <sip:a@example.com>;tag=2\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\nContact: <sip:a@10.9.9.9>;expires=60, <sip:a@10.0.0.1:5061;transport=tls>;expires=900\r\nContent-Length: 0\r\n\r\n").expect("response");
        add_register_expires(&mut resp, &req);
        assert_eq!(resp.expires(), Some("900"));
        // An Expires already there is left alone.
        add_register_expires(&mut resp, &req);
        assert_eq!(resp.header_all("Expires").count(), 1);
    }
}
