//! Requests leaving the proxy: Max-Forwards, Record-Route, Path and Via, client transactions,
//! fail-over, CANCEL, and the outbound authentication stage every message to a client passes.

use sagw_sip::Message;

use super::routing::{BranchTo, RoutePolicy};
use super::timers::TimerKind;
use super::transaction::{ClientState, ClientTx, HopFailure, cancel_key};
use super::{Edge, TrustedFlows, is_client};
use crate::config::{EdgeConfig, Mode, NextHop};
use crate::edit::{build_hop_request, push_on_top, push_via, set_request_uri};
use crate::hook::{
    AuthNote, ClientAuth, OutboundContext, OutboundKind, OutboundVerdict, SaEndpoint,
};
use crate::registrar::Registrar;
use crate::types::{Action, DropReason, Now, Report, SendToken, Target, Transport, later};
use crate::uri::push_decimal;

/// Methods whose out-of-dialog requests create dialogs, so the proxy Record-Routes them.
pub(super) const DIALOG_METHODS: [&str; 4] = ["INVITE", "SUBSCRIBE", "REFER", "NOTIFY"];

/// Set Max-Forwards to `n`.
pub(super) fn set_max_forwards(msg: &mut Message, n: u32) {
    let mut v = String::with_capacity(3);
    push_decimal(&mut v, u64::from(n));
    msg.set_header("Max-Forwards", &v);
}

/// What the outbound stage is told about a message besides its flow.
#[derive(Clone, Copy)]
pub(super) struct OutboundCall<'a> {
    pub(super) kind: OutboundKind,
    pub(super) endpoint: Option<&'a SaEndpoint>,
    pub(super) request: Option<&'a Message>,
    pub(super) note: Option<&'a AuthNote>,
    pub(super) now: Now,
}

/// Run the outbound stage on a message to a client (nothing for a next hop). A function of the
/// fields it needs rather than a method, so that a caller can hand it a request borrowed from
/// the transaction table instead of a copy.
pub(super) fn outbound_stage(
    cfg: &EdgeConfig,
    trusted: &TrustedFlows,
    auth: &mut dyn ClientAuth,
    registrar: &Registrar,
    to: Target,
    msg: &mut Message,
    call: OutboundCall<'_>,
) -> OutboundVerdict {
    let Target::Flow(flow) = to else {
        return OutboundVerdict::Deliver;
    };
    if !is_client(cfg, trusted, &flow) {
        return OutboundVerdict::Deliver;
    }
    // A request with no endpoint of its own (e.g. a 2xx ACK routed by a token without one) is
    // for whoever registered over the flow, as far as this gateway knows. Not a response: one
    // without a note answers nothing this gateway verified (or is relayed by a token that names
    // its endpoint), and signing it for whoever the flow belongs to would make the gateway sign
    // what any sender chose.
    let endpoint = match call.kind {
        OutboundKind::Request => call.endpoint.or_else(|| {
            registrar
                .flow_identity(&flow)
                .and_then(|b| b.endpoint.as_ref())
        }),
        OutboundKind::Response => call.endpoint,
    };
    let ctx = OutboundContext {
        flow,
        now: call.now,
        kind: call.kind,
        endpoint,
        request: call.request,
        note: call.note,
    };
    auth.outbound(msg, &ctx)
}
impl Edge {
    /// Queue a response; one to a client passes the outbound stage first (which signs it).
    pub(super) fn emit_response(
        &mut self,
        to: Target,
        resp: Message,
        request: Option<&Message>,
        note: Option<&AuthNote>,
        now: Now,
    ) {
        let call = OutboundCall {
            kind: OutboundKind::Response,
            endpoint: None,
            request,
            note,
            now,
        };
        self.emit_staged_response(to, resp, call);
    }

    /// Queue a response relayed without its transaction (a late 2xx to INVITE): to a client, the
    /// outbound stage signs it for `endpoint`, the one the flow token that routed it names.
    pub(super) fn emit_relayed_response(
        &mut self,
        to: Target,
        resp: Message,
        endpoint: Option<&SaEndpoint>,
        now: Now,
    ) {
        let call = OutboundCall {
            kind: OutboundKind::Response,
            endpoint,
            request: None,
            note: None,
            now,
        };
        self.emit_staged_response(to, resp, call);
    }

    fn emit_staged_response(&mut self, to: Target, mut resp: Message, call: OutboundCall<'_>) {
        // The stage never refuses a response (only requests), so the verdict changes nothing.
        let _ = outbound_stage(
            &self.cfg,
            &self.trusted_flows,
            &mut *self.auth,
            &self.registrar,
            to,
            &mut resp,
            call,
        );
        self.actions.push_back(Action::Send {
            to,
            message: resp,
            token: None,
        });
    }

    /// Run the outbound stage on a request (to a client, for `endpoint`): `Err(status)` when
    /// it refused the request, which must then not be sent (counted here).
    pub(super) fn pass_request(
        &mut self,
        to: Target,
        msg: &mut Message,
        endpoint: Option<&SaEndpoint>,
        now: Now,
    ) -> Result<(), u16> {
        let call = OutboundCall {
            kind: OutboundKind::Request,
            endpoint,
            request: None,
            note: None,
            now,
        };
        match outbound_stage(
            &self.cfg,
            &self.trusted_flows,
            &mut *self.auth,
            &self.registrar,
            to,
            msg,
            call,
        ) {
            OutboundVerdict::Deliver => {
                // A re-INVITE, UPDATE or BYE in a dialog a server opened with a client under
                // another address (see `delivered`).
                if let Target::Flow(flow) = to {
                    self.delivered.delivering(msg, &flow);
                }
                Ok(())
            }
            OutboundVerdict::Refuse(status) => {
                self.report(Report::Dropped(DropReason::Auth));
                Err(status)
            }
        }
    }

    /// Queue a request that no transaction keeps (a 2xx ACK forwarded statelessly).
    pub(super) fn emit_request(
        &mut self,
        to: Target,
        mut msg: Message,
        endpoint: Option<&SaEndpoint>,
        now: Now,
    ) -> Result<(), u16> {
        self.pass_request(to, &mut msg, endpoint, now)?;
        self.actions.push_back(Action::Send {
            to,
            message: msg,
            token: None,
        });
        Ok(())
    }

    /// Queue a request, returning a copy of what was sent (kept by transactions that retransmit
    /// it or build an ACK or CANCEL from it), or the status of a refusal.
    pub(super) fn emit_kept(
        &mut self,
        to: Target,
        mut msg: Message,
        token: Option<SendToken>,
        endpoint: Option<&SaEndpoint>,
        now: Now,
    ) -> Result<Message, u16> {
        self.pass_request(to, &mut msg, endpoint, now)?;
        let kept = msg.clone();
        self.actions.push_back(Action::Send {
            to,
            message: msg,
            token,
        });
        Ok(kept)
    }

    /// Our Via for a request leaving over `transport`; `extra` is appended after `rport`.
    pub(super) fn our_via(&self, transport: Transport, branch: &str, extra: &str) -> String {
        let host = &self.cfg.local.host;
        let mut via = String::with_capacity(32 + host.len() + branch.len() + extra.len());
        via.push_str("SIP/2.0/");
        via.push_str(transport.via_token());
        via.push(' ');
        via.push_str(host);
        via.push(':');
        push_decimal(&mut via, u64::from(self.cfg.local.port(transport)));
        via.push_str(";branch=");
        via.push_str(branch);
        via.push_str(";rport");
        via.push_str(extra);
        via
    }

    /// `<sip:[user@]host:port;transport=t;lr[extra]>`, for Record-Route and Path.
    pub(super) fn our_uri(&self, transport: Transport, user: Option<&str>, extra: &str) -> String {
        let host = &self.cfg.local.host;
        let user_len = user.map_or(0, |u| u.len() + 1);
        let mut uri = String::with_capacity(40 + user_len + host.len() + extra.len());
        uri.push_str("<sip:");
        if let Some(u) = user {
            uri.push_str(u);
            uri.push('@');
        }
        uri.push_str(host);
        uri.push(':');
        push_decimal(&mut uri, u64::from(self.cfg.local.port(transport)));
        uri.push_str(";transport=");
        uri.push_str(transport.uri_param());
        uri.push_str(";lr");
        uri.push_str(extra);
        uri.push('>');
        uri
    }

    /// Send the request of server transaction `key` to `target` in a new client transaction.
    ///
    /// `Err(status)` when the outbound stage refused it (no branch was made): the caller fails
    /// the branch with that status.
    pub(super) fn forward(
        &mut self,
        key: &str,
        mut out: Message,
        to: BranchTo,
        hop: Option<NextHop>,
        now: Now,
    ) -> Result<(), u16> {
        let Some(st) = self.server.get(key) else {
            return Ok(());
        };
        let target = to.target;
        let upstream = st.upstream;
        let from_client = st.from_client;
        let lh = st.loop_hash.clone();
        let method = st.method.clone();
        let has_alternatives = !st.hops.is_empty();
        let mf = out
            .header("Max-Forwards")
            .and_then(|m| m.trim().parse::<u32>().ok())
            .unwrap_or(71);
        set_max_forwards(&mut out, mf.saturating_sub(1).min(70));
        if let Some(uri) = &to.request_uri {
            // A Contact that makes no start line (it parsed as a SIP URI when it registered)
            // leaves the address of record there.
            set_request_uri(&mut out, uri);
        }
        let out_transport = target.transport();
        // One token for the flow the request came from, naming the endpoint at that flow: in the
        // Path and Record-Route, requests that come back through it are signed for that endpoint;
        // in the Via, so is a response relayed after its transaction is gone.
        let upstream_endpoint = st.endpoint.as_ref().filter(|_| from_client);
        // Two tokens of the same flow, under MACs of their own: the Via's is seen by every
        // recipient of the request and must not route one; the Route one (Record-Route, Path)
        // only by a dialog's peer or the registrar.
        let via_token = self.ids.via_flow_token(&upstream, upstream_endpoint);
        if let Some(route) = &to.route {
            push_on_top(&mut out, "Route", route);
        }
        let in_dialog = out.to().and_then(|t| t.tag()).is_some();
        if !in_dialog && DIALOG_METHODS.contains(&method.as_str()) {
            // RFC 5658 double Record-Route: one entry per side, each with that side's transport
            // and, for a client side, the token of its flow, bound to this dialog's Call-ID.
            let call_id = out.call_id().unwrap_or("");
            let out_token = match target {
                Target::Flow(f) => Some(self.ids.dialog_flow_token(
                    &f,
                    to.endpoint.as_ref(),
                    call_id,
                )),
                Target::Addr { .. } => None,
            };
            // A next hop that reached us over a connection of its own is reached again by its
            // address (the Route set beyond our entries, else the next hop, both where a
            // client's requests may go), not through that connection: it closes when idle
            // (Kamailio's after 120 s), and a token naming it made every in-dialog request of
            // the client's fail with 430 from then on. Anything else keeps its token: a client's
            // flow, a datagram flow (it names the address itself), a server trusted by its
            // certificate (it may connect from anywhere) or by its address (a client may not
            // route to it by address: an IVR in registrar mode would lose its ACK and BYE).
            let by_token = from_client
                || !upstream.transport.is_reliable()
                || self.trusted_flows.contains(&upstream)
                || self.route_policy(&upstream, false) != RoutePolicy::Anywhere;
            let rr_in = if by_token {
                let token = self
                    .ids
                    .dialog_flow_token(&upstream, upstream_endpoint, call_id);
                self.our_uri(upstream.transport, Some(&token), "")
            } else {
                self.our_uri(upstream.transport, None, "")
            };
            let rr_out = self.our_uri(out_transport, out_token.as_deref(), "");
            push_on_top(&mut out, "Record-Route", &rr_in);
            push_on_top(&mut out, "Record-Route", &rr_out);
        }
        if method == "REGISTER" && from_client {
            // Path is for the proxies on the way (RFC 3327), and a client is none: an entry it
            // wrote could name this gateway with another flow's token, which the registrar would
            // then route the client's requests by. In either mode.
            out.remove_header("Path");
            if self.cfg.mode == Mode::Edge {
                let token = self.ids.flow_token(&upstream, upstream_endpoint);
                // `ob` (RFC 5626 §5.1) says this edge keeps the client's flow alive with the
                // keep-alives the client sends: CRLF pings over a stream, which it answers. Over
                // UDP they are STUN, which it does not answer: a client told `ob` found its flow
                // failed at every keep-alive and registered again and again.
                let ob = if upstream.transport.is_reliable() {
                    ";ob"
                } else {
                    ""
                };
                let path = self.our_uri(out_transport, Some(&token), ob);
                push_on_top(&mut out, "Path", &path);
            }
        }
        let branch = self.ids.branch(&lh);
        // To a client, also the endpoint it was sent to, for judging its response once this
        // transaction is gone (see `Ids::target_token`).
        let target_token = match target {
            Target::Flow(f) => {
                Some(
                    self.ids
                        .target_token(&branch, &method, &via_token, &f, to.endpoint.as_ref()),
                )
            }
            Target::Addr { .. } => None,
        };
        let mut sgf = String::with_capacity(
            5 + via_token.len() + target_token.as_ref().map_or(0, |t| 5 + t.len()),
        );
        sgf.push_str(";sgf=");
        sgf.push_str(&via_token);
        if let Some(t) = &target_token {
            sgf.push_str(";sgt=");
            sgf.push_str(t);
        }
        let via = self.our_via(out_transport, &branch, &sgf);
        push_via(&mut out, &via);
        let token = SendToken(branch.clone());
        let sent = self.emit_kept(target, out, Some(token), to.endpoint.as_ref(), now)?;
        let t1 = self.cfg.timers.t1;
        let mut ct = ClientTx::trying(method.clone(), sent, to, t1);
        ct.server_key = Some(key.to_owned());
        ct.hop = hop;
        if !out_transport.is_reliable() {
            self.schedule(
                later(now.mono, t1),
                TimerKind::ClientRetransmit(branch.clone(), 0),
            );
        }
        let timeout = if hop.is_some() && has_alternatives {
            self.cfg.timers.fail_over.min(self.cfg.timers.timeout())
        } else {
            self.cfg.timers.timeout()
        };
        self.schedule(
            later(now.mono, timeout),
            TimerKind::ClientTimeout(branch.clone(), 0),
        );
        self.client.insert(branch.clone(), Box::new(ct));
        if let Target::Flow(f) = target
            && f.transport.is_reliable()
        {
            self.note_stream_branch(f.id, &branch);
        }
        if let Some(st) = self.server.get_mut(key) {
            st.branches.push(branch);
        }
        Ok(())
    }

    /// Files `branch` under the stream flow it went out on. The keys of transactions that
    /// ended stay until the list doubles past its live ones, so a long-lived connection (a
    /// trunk's, a busy client's) keeps a list as long as what it has open, not all it ever had.
    fn note_stream_branch(&mut self, flow: crate::types::FlowId, branch: &str) {
        let client = &self.client;
        let keys = self.stream_branches.entry(flow).or_default();
        if keys.len() >= 32 && keys.len().is_power_of_two() {
            keys.retain(|k| client.contains_key(k));
        }
        keys.push(branch.to_owned());
    }

    /// The stream flow `flow` closed: its branches that have no final answer fail now, as a
    /// send over it would (480, or 430 for a flow a token named), instead of waiting for Timer
    /// C or B. Before, a callee whose app was killed while ringing kept the caller hearing
    /// ringback for three and a half minutes, and then got 408 rather than the other devices'
    /// answer.
    pub(super) fn fail_branches_over(&mut self, flow: crate::types::FlowId, now: Now) {
        let Some(keys) = self.stream_branches.remove(&flow) else {
            return;
        };
        for key in keys {
            let open = self.client.get(&key).is_some_and(|ct| {
                matches!(ct.target, Target::Flow(f) if f.id == flow)
                    && ct.state != ClientState::Completed
            });
            if open {
                self.fail_send(&SendToken(key), now);
            }
        }
    }

    /// A branch given up for the next hop (no answer in time, or its hop went down) while the
    /// hop may still answer: kept, apart from its server transaction, until Timer B, so that what
    /// the hop sends late is dealt with here. A provisional gets a CANCEL, a non-2xx an ACK, a
    /// 2xx to INVITE goes on to the caller (end to end, RFC 6026); nothing else reaches the
    /// caller, whose request runs on the next hop now. Before, it was forgotten: the hop's 180
    /// and its final answer reached the caller beside the next hop's, and its branch could not be
    /// cancelled, so the callee reached through it rang on with nobody calling.
    pub(super) fn detach_branch(&mut self, ck: &str, now: Now) {
        let timeout = self.cfg.timers.timeout();
        let Some(ct) = self.client.get_mut(ck) else {
            return;
        };
        // No longer one of the request's branches: the answer of the next hop is not held
        // waiting for this one's (which never comes to the request).
        if let Some(sk) = ct.server_key.take()
            && let Some(st) = self.server.get_mut(&sk)
        {
            st.branches.retain(|b| b != ck);
        }
        let Some(ct) = self.client.get_mut(ck) else {
            return;
        };
        ct.hop = None;
        ct.cancel_pending = ct.method == "INVITE";
        // Its retransmissions and timers end here.
        ct.epoch += 1;
        let epoch = ct.epoch;
        self.schedule(
            later(now.mono, timeout),
            TimerKind::ClientTimeout(ck.to_owned(), epoch),
        );
    }

    /// Forward to the next target that is not known to be down; 503 (or 408 after a timeout)
    /// when none is left.
    pub(super) fn try_next_hop(&mut self, key: &str, last_failure: HopFailure, now: Now) {
        loop {
            let Some(st) = self.server.get_mut(key) else {
                return;
            };
            let Some(hop) = st.hops.pop_front() else {
                let code = last_failure.status();
                if code == 408 && st.method != "INVITE" {
                    // No 408 to a non-INVITE (RFC 4320 §4.2): the client's own timer ends it.
                    self.end_unanswered(key, now);
                    return;
                }
                let extra = if code == 503 {
                    vec![("Retry-After", self.retry_after_secs().to_string())]
                } else {
                    Vec::new()
                };
                self.respond(key, code, &extra, now);
                return;
            };
            if self.hop_is_down(&hop, now.mono) {
                continue;
            }
            let Some(st) = self.server.get_mut(key) else {
                return;
            };
            // Kept for fail-over only while there is a hop left to fail over to.
            let next = if st.hops.is_empty() {
                st.forward.take()
            } else {
                st.forward.clone()
            };
            let Some(msg) = next else {
                return;
            };
            // An address, not a client flow: the outbound stage does not run, nothing is refused.
            let to = BranchTo::addr(Target::Addr {
                transport: hop.transport,
                addr: hop.addr,
            });
            let _ = self.forward(key, msg, to, Some(hop), now);
            return;
        }
    }

    /// CANCEL every unfinished branch of server transaction `sk` but `except` (RFC 3261
    /// §16.10; a branch with no provisional response yet is cancelled when one arrives).
    pub(super) fn cancel_branches(&mut self, sk: &str, except: Option<&str>, now: Now) {
        let branches = self
            .server
            .get(sk)
            .map(|s| s.branches.clone())
            .unwrap_or_default();
        for ck in branches.iter().filter(|k| Some(k.as_str()) != except) {
            match self.client.get(ck).map(|c| c.state) {
                Some(ClientState::Proceeding) => self.send_cancel(ck, now),
                Some(ClientState::Trying) => {
                    if let Some(ct) = self.client.get_mut(ck) {
                        ct.cancel_pending = true;
                    }
                }
                _ => {}
            }
        }
    }

    pub(super) fn send_cancel(&mut self, ct_key: &str, now: Now) {
        let Some(ct) = self.client.get(ct_key) else {
            return;
        };
        let Some(cancel) = build_hop_request(&ct.request, "CANCEL", None) else {
            return;
        };
        let to = ct.branch_to();
        let target = to.target;
        let key = cancel_key(ct_key);
        if self.client.contains_key(&key) {
            return;
        }
        // Refused: the endpoint lost its SA since the INVITE went out; an unsigned CANCEL would
        // be dropped by it, so the branch ends by its own timers.
        let Ok(sent) = self.emit_kept(target, cancel, None, to.endpoint.as_ref(), now) else {
            return;
        };
        let t1 = self.cfg.timers.t1;
        if !target.transport().is_reliable() {
            self.schedule(
                later(now.mono, t1),
                TimerKind::ClientRetransmit(key.clone(), 0),
            );
        }
        self.schedule(
            later(now.mono, self.cfg.timers.timeout()),
            TimerKind::ClientTimeout(key.clone(), 0),
        );
        self.client.insert(
            key,
            Box::new(ClientTx::trying("CANCEL".into(), sent, to, t1)),
        );
    }
}
