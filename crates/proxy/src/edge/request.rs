//! Requests from the network: validation, the inbound authentication stage, transaction
//! matching, local answers (OPTIONS, registrar, loops), then routing and forwarding.

use std::time::Duration;

use sagw_sip::Message;

use super::Edge;
use super::forward::set_max_forwards;
use super::hops::{Parked, ParkedAck};
use super::routing::{BranchTo, Dest};
use super::timers::TimerKind;
use super::transaction::{
    Admitted, HopFailure, Opening, ServerState, ServerTx, ensure_to_tag, resend_copy,
    rfc3261_branch, server_key,
};
use crate::config::{Intake, Mode};
use crate::edit::{build_response, push_on_top, push_via, set_top_via, top_via};
use crate::hook::{Answering, AuthNote, InboundContext, InboundVerdict};
use crate::registrar::RegisterOutcome;
use crate::token::{Unique, branch_loop_hash, loop_hash};
use crate::types::{Action, DropReason, Flow, LimitKind, Now, Report, Target, later};
use crate::uri::{
    SipUri, Via, list_elements, param_name, param_parts, push_decimal, push_ip, trim,
};

/// RFC 3261 §18.2.1 and RFC 3581: record where the request really came from in the top Via,
/// `via` (the message's top Via, parsed from a copy: it is rewritten here).
pub(super) fn stamp_via(msg: &mut Message, via: &Via<'_>, flow: &Flow) {
    let ip = flow.remote.ip();
    let sent_ip = crate::uri::host_ip(via.host);
    let needs_received = sent_ip != Some(ip);
    let has_rport = via.param("rport").is_some();
    if !needs_received && !has_rport {
        return;
    }
    // Written straight into one String: with clients behind NAT this runs for every request.
    let mut new = String::with_capacity(via.host.len() + via.params.len() + 64);
    new.push_str("SIP/2.0/");
    new.push_str(via.transport);
    new.push(' ');
    new.push_str(via.host);
    if let Some(p) = via.port {
        new.push(':');
        push_decimal(&mut new, u64::from(p));
    }
    for p in param_parts(via.params).map(trim).filter(|p| {
        let name = param_name(p);
        !p.is_empty()
            && !name.eq_ignore_ascii_case("received")
            && !name.eq_ignore_ascii_case("rport")
    }) {
        new.push(';');
        new.push_str(p);
    }
    new.push_str(";received=");
    push_ip(&mut new, ip);
    if has_rport {
        new.push_str(";rport=");
        push_decimal(&mut new, u64::from(flow.remote.port()));
    }
    set_top_via(msg, &new);
}

/// What [`Edge::on_request`] copies out of a request, in buffers kept from one request to the
/// next: most requests keep none of it (they are challenged, retransmitted, or answered without
/// a transaction), and what keeps the key (a transaction, a timer) takes its own copy.
#[derive(Debug, Default)]
pub(super) struct RequestBufs {
    /// The method and top Via, read before the request is edited and after.
    method: String,
    via: String,
    /// The server transaction key.
    key: String,
}

/// `s`, copied into `buf` (cleared first).
fn copy_into<'b>(buf: &'b mut String, s: &str) -> &'b str {
    buf.clear();
    buf.push_str(s);
    buf
}

/// True when `flow` is the one a server transaction's request came over, `upstream` (same
/// transport and peer address: a UDP client's retransmissions come from the address it first
/// used).
pub(super) fn opened_by(upstream: Flow, flow: &Flow) -> bool {
    upstream.remote == flow.remote && upstream.transport == flow.transport
}

/// True when the request belongs to a dialog (its To has a tag, RFC 3261 §12.2).
fn in_dialog(msg: &Message) -> bool {
    msg.to().is_some_and(|t| t.param("tag").is_some())
}

/// Credentials the stage can judge without starting or finishing a sign-in: a signature on an SA,
/// or Digest. A handshake leg (`gssapi-data`: NTLM, Kerberos) would establish an SA, and run a
/// worker job, at a gateway that is going away.
fn carries_signed_credentials(msg: &Message) -> bool {
    let mut values = msg
        .header_all("Authorization")
        .chain(msg.header_all("Proxy-Authorization"))
        .peekable();
    values.peek().is_some() && values.all(|v| !sagw_sip::mentions_gssapi_data(v))
}

impl Edge {
    /// The 503 a draining gateway answers new work with (signed with `admitted`, when the stage
    /// admitted the request).
    fn refuse_draining(
        &mut self,
        msg: &Message,
        flow: Flow,
        admitted: Option<&AuthNote>,
        now: Now,
    ) {
        self.report(Report::Limit(LimitKind::Draining));
        let retry = self.cfg.retry_after.as_secs().to_string();
        self.respond_stateless_noted(msg, flow, 503, &[("Retry-After", retry)], admitted, now);
    }

    /// Server transaction `key`, kept whole or as its answer alone (`answered`): the flow that
    /// opened it, and the answer a retransmission of its request gets (none before the first
    /// response, nor after an INVITE 2xx: RFC 6026, the UAS retransmits its 2xx itself).
    fn transaction_answer(&self, key: &str) -> Option<(Flow, Option<&[u8]>)> {
        match self.server.get(key) {
            Some(st) => Some((
                st.upstream,
                st.last_response
                    .as_deref()
                    .filter(|_| st.state != ServerState::Accepted),
            )),
            None => self
                .answered
                .get(key)
                .map(|a| (a.upstream, Some(&*a.response))),
        }
    }

    /// A load balancer's health probe: from one of [`crate::EdgeConfig::probers`], without a
    /// Route, to this proxy itself with no user part. Only then is an OPTIONS answered without
    /// the authentication stage (anything else from a prober's address is a client's request).
    fn is_probe(&self, msg: &Message, flow: &Flow) -> bool {
        let ip = flow.remote.ip().to_canonical();
        self.cfg.probers.iter().any(|p| p.to_canonical() == ip)
            && msg.header("Route").is_none()
            && msg.request_uri().and_then(SipUri::parse).is_some_and(|u| {
                u.user.is_none() && self.cfg.local.is_local(u.host, u.port, u.transport())
            })
    }

    pub(super) fn on_request(&mut self, msg: Message, flow: Flow, from_client: bool, now: Now) {
        let mut bufs = std::mem::take(&mut self.request_bufs);
        self.on_request_with(msg, flow, from_client, now, &mut bufs);
        self.request_bufs = bufs;
    }

    fn on_request_with(
        &mut self,
        mut msg: Message,
        flow: Flow,
        from_client: bool,
        now: Now,
        bufs: &mut RequestBufs,
    ) {
        let RequestBufs {
            method: method_buf,
            via: via_buf,
            key,
        } = bufs;
        let method = copy_into(method_buf, msg.method().unwrap_or(""));
        // Copied and parsed once: stamping and the authentication stage edit the message, and
        // neither changes what is read from it here (sent-by and branch, for the key).
        let top = match msg.validate() {
            Ok(()) => top_via(&msg).map(|v| copy_into(via_buf, v)),
            Err(_) => None,
        };
        let Some(via) = top.and_then(Via::parse) else {
            if method == "ACK" {
                self.report(Report::Dropped(DropReason::Invalid));
            } else {
                self.respond_stateless(&msg, flow, 400, &[], now);
            }
            return;
        };
        stamp_via(&mut msg, &via, &flow);
        // ACK and CANCEL match the INVITE transaction; every key below is this one.
        let ack_or_cancel = matches!(method, "ACK" | "CANCEL");
        let txn_method = if ack_or_cancel { "INVITE" } else { method };
        server_key(key, &via, txn_method, &msg);
        // Authentication comes after transaction matching: a retransmission repeats the last
        // response without being judged again (its signature's cnum or its Digest nonce count was
        // consumed by the original), and the ACK or CANCEL of a transaction the client opened over
        // this same flow belongs to a request that was authenticated already (CANCEL can never be
        // challenged, RFC 3261 §22.1).
        // A transaction is the flow's that opened it: the Via that keys it can be copied by anyone
        // who saw the request, and a copy from elsewhere taken as a retransmission would make us
        // send its last response to the opener, unauthenticated (found by the proxy_edge fuzz
        // target). Such a copy is dropped, before authentication: no genuine peer sends one.
        // So is an ACK or CANCEL of a transaction another flow opened, however well it is signed:
        // the Via it takes its key from is as easy to copy, and it would end another client's
        // INVITE, stop its retransmissions, or have the 200 to a CANCEL signed with the opener's
        // SA for a Call-ID and CSeq of the sender's choice.
        let mut admitted = Admitted::default();
        // An ACK whose key is an INVITE's answered 2xx (Accepted, RFC 6026) is that 2xx's ACK,
        // the transaction user's (§7.1): an RFC 2543 client's, whose key is made of what its
        // INVITE and that ACK share. It is judged and routed as any 2xx ACK.
        let acks_a_2xx = method == "ACK"
            && self
                .server
                .get(key.as_str())
                .is_some_and(|st| st.accepted_invite());
        let opener = self
            .transaction_answer(key)
            .filter(|_| !acks_a_2xx)
            .map(|(upstream, _)| opened_by(upstream, &flow));
        if opener == Some(false) {
            self.report(Report::Dropped(DropReason::ForeignTransaction));
            return;
        }
        let belongs_to_open_transaction = ack_or_cancel && opener == Some(true);
        let retransmission = !ack_or_cancel && opener == Some(true);
        let probe = from_client && method == "OPTIONS" && self.is_probe(&msg, &flow);
        let draining = self.intake == Intake::Draining
            && !ack_or_cancel
            && !retransmission
            && !in_dialog(&msg);
        // A signed-in client's request is judged first, so that its 503 is signed: a client with
        // an SA drops an unsigned one and its request just disappears. Anything else gets its
        // 503 before authentication: a gateway going away has nothing to challenge for. The
        // client tries another gateway, or this one after the restart.
        let signed_503 = draining && from_client && !probe && carries_signed_credentials(&msg);
        if draining && !signed_503 {
            self.refuse_draining(&msg, flow, None, now);
            return;
        }
        if probe {
            // Answered without a transaction: a probe needs none (a lost answer is the next
            // probe's), and a kept one would let anyone who can forge a prober's source address
            // fill `max_transactions`, turning every client away with 503.
            self.respond_stateless(&msg, flow, 200, &[allow()], now);
            return;
        }
        if from_client && !belongs_to_open_transaction && !retransmission && !probe {
            // The ACK of a 2xx to an INVITE of this flow's: the INVITE's note, for the stage.
            let acknowledges = if method == "ACK" && opener.is_none() {
                self.accepted.acknowledged(&msg, &flow, now.mono)
            } else {
                None
            };
            // A request in a dialog delivered to this flow under another address (nothing is
            // parsed while no such dialog is kept).
            let dialog_local = self.delivered.local_uri(&msg, &flow, now.mono);
            let ctx = InboundContext {
                flow,
                now,
                flow_binding: self.registrar.flow_identity(&flow),
                answering: Answering::Unknown,
                acknowledges: acknowledges.as_ref(),
                dialog_local: dialog_local.as_deref(),
            };
            match self.auth.inbound(&mut msg, &ctx) {
                InboundVerdict::Continue { note, .. } if draining => {
                    self.refuse_draining(&msg, flow, note.as_ref(), now);
                    return;
                }
                // A challenge would start a sign-in: a plain 503 instead. Any other answer of the
                // stage's (a 403 it signed, a redirect to the user's home server) stands.
                InboundVerdict::Respond(resp)
                    if draining && matches!(resp.status_code(), Some(401 | 407)) =>
                {
                    self.refuse_draining(&msg, flow, None, now);
                    return;
                }
                InboundVerdict::Continue {
                    note,
                    endpoint,
                    client,
                } => {
                    if acknowledges.is_some() {
                        self.accepted.take(&msg, &flow);
                    }
                    if dialog_local.is_some() && method == "BYE" {
                        self.delivered.ended(&msg, &flow);
                    }
                    admitted = Admitted {
                        note,
                        endpoint,
                        client,
                    };
                }
                InboundVerdict::Respond(resp) => {
                    self.emit_response(Target::Flow(flow), resp, Some(&msg), None, now);
                    return;
                }
                InboundVerdict::Drop => {
                    self.report(Report::Dropped(DropReason::Auth));
                    return;
                }
                // The stage hands it back later; no transaction exists for it meanwhile.
                InboundVerdict::Held => return,
            }
            // An RFC 2543 key is made of headers the stage may have edited: match on the
            // request as it is now (a branch key depends on the Via copy only).
            if rfc3261_branch(&via).is_none() {
                server_key(key, &via, txn_method, &msg);
            }
        }
        let key = key.as_str();
        match method {
            "ACK" => {
                self.on_ack(msg, key, flow, now);
                return;
            }
            "CANCEL" => {
                self.on_cancel(msg, key, flow, admitted.note.as_ref(), now);
                return;
            }
            _ => {}
        }
        // From here the request opens a transaction (answered here or proxied), or is a
        // retransmission of one.
        let opening = Opening::new(msg, flow, from_client, admitted);
        let msg = &opening.request;
        if let Some((upstream, last)) = self.transaction_answer(key) {
            // An RFC 2543 key, made again after the authentication stage edited the request,
            // can name another flow's transaction: as above, not ours to answer.
            if !opened_by(upstream, &flow) {
                self.report(Report::Dropped(DropReason::ForeignTransaction));
                return;
            }
            // Retransmission: repeat the last response, if any (RFC 3261 §17.2.1, §17.2.2).
            if let Some(resp) = last.and_then(resend_copy) {
                self.actions.push_back(Action::Send {
                    to: Target::Flow(upstream),
                    message: resp,
                    token: None,
                });
            }
            self.report(Report::Dropped(DropReason::Retransmission));
            return;
        }
        let full = if self.server_transactions() >= self.cfg.max_transactions {
            Some(LimitKind::Transactions)
        } else {
            opening
                .client
                .filter(|c| self.shares.full(*c, self.cfg.max_transactions_per_client))
                .map(|_| LimitKind::TransactionsPerClient)
        };
        if let Some(limit) = full {
            self.report(Report::Limit(limit));
            let retry = self.cfg.retry_after.as_secs().to_string();
            // Signed as the request was admitted (an SA client drops an unsigned answer).
            let note = opening.admitted.note.as_ref();
            self.respond_stateless_noted(msg, flow, 503, &[("Retry-After", retry)], note, now);
            return;
        }
        let max_forwards = msg
            .header("Max-Forwards")
            .and_then(|m| m.trim().parse::<u32>().ok())
            .unwrap_or(70);
        let ruri = msg.request_uri().and_then(SipUri::parse);
        let ruri_local = ruri.as_ref().is_some_and(|u| {
            u.user.is_none() && self.cfg.local.is_local(u.host, u.port, u.transport())
        });
        // A request for a domain the embedded registrar serves (no user part: the domain itself,
        // as a client's keep-alive OPTIONS names it) is for the registrar, that is for us.
        let for_served_domain = |u: &SipUri<'_>| {
            self.cfg.mode == Mode::Registrar
                && u.user.is_none()
                && crate::uri::host_ip(u.host).is_none()
                && self.serves(u)
        };
        if method == "OPTIONS"
            && msg.header("Route").is_none()
            && (ruri_local || ruri.as_ref().is_some_and(for_served_domain))
        {
            self.local_transaction(key, opening, 200, &[allow()], now);
            return;
        }
        if max_forwards == 0 {
            self.local_transaction(key, opening, 483, &[], now);
            return;
        }
        // Loop detection (RFC 3261 §16.3 item 4): one of our Vias with this request's loop hash.
        // The hash is computed only when there is one of our Vias to compare with (a request
        // answered here, like REGISTER, never needs it otherwise).
        let mut lh: Option<String> = None;
        let mut looped = false;
        for v in msg.header_all("Via").flat_map(list_elements) {
            let Some(v) = Via::parse(v) else { continue };
            if !self.cfg.local.is_local(v.host, v.port, v.transport()) {
                continue;
            }
            let Some(theirs) = v.branch().and_then(branch_loop_hash) else {
                continue;
            };
            if theirs == lh.get_or_insert_with(|| loop_hash(msg)).as_str() {
                looped = true;
                break;
            }
        }
        if looped {
            self.local_transaction(key, opening, 482, &[], now);
            return;
        }
        if method == "REGISTER"
            && self.cfg.mode == Mode::Registrar
            && (ruri_local || self.serves_ruri(msg))
        {
            let outcome =
                self.registrar
                    .register(msg, flow, opening.admitted.endpoint.as_ref(), now.mono);
            self.report_binding_changes();
            match outcome {
                RegisterOutcome::Ok { mut headers } => {
                    // The granted lifetime of this request's own binding also goes into an
                    // Expires header: Lync-family clients read only that (pidgin-sipe hangs
                    // without it, notes §9).
                    let own = msg
                        .header("Contact")
                        .and_then(|c| sagw_sip::parse_name_addr(c).ok())
                        .map(|na| na.uri);
                    let granted = own.and_then(|uri| {
                        headers.iter().find_map(|(_, c)| {
                            let na = sagw_sip::parse_name_addr(c).ok()?;
                            (na.uri == uri).then(|| na.param("expires").map(str::to_owned))?
                        })
                    });
                    if let Some(e) = granted {
                        headers.push(("Expires", e));
                    }
                    self.local_transaction(key, opening, 200, &headers, now);
                }
                RegisterOutcome::Error(code, _, extra) => {
                    self.local_transaction(key, opening, code, &extra, now);
                }
            }
            return;
        }

        // Proxy it.
        let lh = lh.unwrap_or_else(|| loop_hash(msg));
        let mut forward = msg.clone();
        let policy = self.route_policy(&flow, from_client);
        let dest = self.route(&mut forward, &flow, policy, now.mono);
        let st = ServerTx::new(opening, lh, now.mono, self.cfg.timers.t1);
        self.open_server(key, st);
        if method == "INVITE" {
            self.respond(key, 100, &[], now);
        }
        match dest {
            Ok(Dest::Flow(to)) => {
                if let Err(status) = self.forward(key, forward, to, None, now) {
                    self.branch_failed(key, "", status, now);
                }
            }
            Ok(Dest::Fork(branches)) => {
                // Refusals are answered once every branch went out: failing one before the
                // others exist would end the search with its answer.
                let mut refused = Vec::new();
                for to in branches {
                    if let Err(status) = self.forward(key, forward.clone(), to, None, now) {
                        refused.push(status);
                    }
                }
                for status in refused {
                    self.branch_failed(key, "", status, now);
                }
            }
            Ok(Dest::Addr(transport, addr)) => {
                let to = BranchTo::addr(Target::Addr { transport, addr });
                // Not a client flow: the outbound stage does not run, nothing is refused.
                let _ = self.forward(key, forward, to, None, now);
            }
            Ok(Dest::Hops) => {
                if let Some(st) = self.server.get_mut(key) {
                    st.hops = self.cfg.next_hops.iter().copied().collect();
                    st.forward = Some(forward);
                }
                self.try_next_hop(key, HopFailure::Transport, now);
            }
            Ok(Dest::Name(name)) => {
                // Waits in its server transaction (a retransmission is absorbed meanwhile, a
                // CANCEL answers it) until the driver hands back the targets.
                if let Some(st) = self.server.get_mut(key) {
                    st.forward = Some(forward);
                }
                let parked = self.park(
                    Parked::Request {
                        key: key.to_owned(),
                        policy: name.policy,
                    },
                    &name,
                    flow,
                    now.mono,
                );
                if !parked {
                    let retry = self.cfg.retry_after.as_secs().to_string();
                    self.respond(key, 503, &[("Retry-After", retry)], now);
                }
            }
            Err(code) => self.respond(key, code, &[], now),
        }
    }

    pub(super) fn on_ack(&mut self, mut msg: Message, key: &str, flow: Flow, now: Now) {
        if let Some(st) = self.server.get_mut(key)
            && st.state == ServerState::Completed
            && st.method == "INVITE"
        {
            // ACK for our non-2xx final: hop by hop, ends here (RFC 3261 §17.2.1).
            st.state = ServerState::Confirmed;
            st.epoch += 1;
            let epoch = st.epoch;
            let linger = if flow.transport.is_reliable() {
                Duration::ZERO
            } else {
                self.cfg.timers.t4
            };
            if linger.is_zero() {
                self.close_server(key);
            } else {
                self.schedule(
                    later(now.mono, linger),
                    TimerKind::ServerCleanup(key.to_owned(), epoch),
                );
            }
            return;
        }
        if self.server.get(key).is_some_and(|st| !st.accepted_invite()) {
            // A retransmitted ACK after the transaction moved on.
            self.report(Report::Dropped(DropReason::Retransmission));
            return;
        }
        // ACK for a 2xx: end to end, forwarded statelessly (RFC 3261 §16.11).
        let mf = msg
            .header("Max-Forwards")
            .and_then(|m| m.trim().parse::<u32>().ok())
            .unwrap_or(70);
        if mf == 0 {
            self.report(Report::Dropped(DropReason::Stray));
            return;
        }
        let from_client = self.is_client(&flow);
        let lh = loop_hash(&msg);
        let incoming = top_via(&msg)
            .and_then(|v| Via::parse(v).and_then(|v| v.branch().map(str::to_owned)))
            .unwrap_or_default();
        let policy = self.route_policy(&flow, from_client);
        let dest = self.route(&mut msg, &flow, policy, now.mono);
        let mut ack = ParkedAck {
            msg,
            policy,
            loop_hash: lh,
            incoming,
            max_forwards: mf,
        };
        let to = match dest {
            Ok(Dest::Flow(to)) => to,
            // A 2xx ACK carries our Route (Record-Route was added): an AOR lookup here is a
            // peer without a route set; the most recent binding is the best guess.
            Ok(Dest::Fork(b)) => match b.into_iter().next() {
                Some(to) => to,
                None => {
                    self.report(Report::Dropped(DropReason::Stray));
                    return;
                }
            },
            Ok(Dest::Addr(transport, addr)) => BranchTo::addr(Target::Addr { transport, addr }),
            Ok(Dest::Name(name)) => {
                ack.policy = name.policy;
                // Full: the ACK is dropped (counted), as a lost datagram would be.
                let _ = self.park(Parked::Ack(Box::new(ack)), &name, flow, now.mono);
                return;
            }
            Ok(Dest::Hops) => match self.first_live_hop(now.mono) {
                Some(h) => BranchTo::addr(Target::Addr {
                    transport: h.transport,
                    addr: h.addr,
                }),
                None => {
                    self.report(Report::Dropped(DropReason::Stray));
                    return;
                }
            },
            Err(_) => {
                self.report(Report::Dropped(DropReason::Stray));
                return;
            }
        };
        self.forward_ack(ack, to, now);
    }

    /// Send a 2xx ACK on, statelessly, once its target is known.
    pub(super) fn forward_ack(&mut self, ack: ParkedAck, to: BranchTo, now: Now) {
        let ParkedAck {
            mut msg,
            loop_hash: lh,
            incoming,
            max_forwards: mf,
            ..
        } = ack;
        set_max_forwards(&mut msg, mf.saturating_sub(1).min(70));
        if let Some(route) = &to.route {
            push_on_top(&mut msg, "Route", route);
        }
        let branch = self.ids.stateless_branch(&lh, &incoming);
        let t = to.target.transport();
        let via = self.our_via(t, &branch, "");
        push_via(&mut msg, &via);
        // A refused ACK (the endpoint's SA ended) is counted by emit; there is no one to tell.
        let _ = self.emit_request(to.target, msg, to.endpoint.as_ref(), now);
    }

    /// `admitted`: what the stage said of a CANCEL that matched no transaction (one that matched
    /// skips the stage): its 481 is signed with it, or a client with an SA drops it and waits.
    pub(super) fn on_cancel(
        &mut self,
        msg: Message,
        key: &str,
        flow: Flow,
        admitted: Option<&AuthNote>,
        now: Now,
    ) {
        let Some(st) = self.server.get_mut(key) else {
            self.respond_stateless_noted(&msg, flow, 481, &[], admitted, now);
            return;
        };
        ensure_to_tag(st, &mut self.ids, 200);
        let tag = st.to_tag;
        let proceeding = st.state == ServerState::Proceeding;
        let no_branches = st.branches.is_empty();
        let note = st.note.clone();
        if let Some(ok) = build_response(&msg, 200, "OK", tag.as_ref().map(Unique::as_str), &[]) {
            self.emit_response(Target::Flow(flow), ok, Some(&msg), note.as_ref(), now);
        }
        if !proceeding {
            return;
        }
        // Stop fail-over: a cancelled request is not tried elsewhere.
        if let Some(st) = self.server.get_mut(key) {
            st.hops.clear();
        }
        if no_branches {
            self.respond(key, 487, &[], now);
        } else {
            self.cancel_branches(key, None, now);
        }
    }
}

/// The `Allow` header of an OPTIONS answered here.
fn allow() -> (&'static str, String) {
    (
        "Allow",
        "INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE, REGISTER, SUBSCRIBE, NOTIFY, REFER, INFO, UPDATE, PRACK"
            .to_owned(),
    )
}
