//! Responses from the network: matching to client transactions, the inbound authentication stage
//! for client responses, and passing them upstream.

use std::time::Duration;

use sagw_sip::Message;

use super::Edge;
use super::timers::TimerKind;
use super::transaction::{ClientState, HopFailure, ServerState};
use crate::edit::{build_hop_request, pop_via, top_via};
use crate::hook::{Answering, InboundContext, InboundVerdict, SaEndpoint};
use crate::token::BRANCH_PREFIX;
use crate::types::{Action, DropReason, Flow, Now, Report, Target, later};
use crate::uri::Via;

impl Edge {
    /// Whether `request`, on its way to the client at `flow` (its endpoint `to`), passed through
    /// this gateway before from that same client: a Via of ours below the top one (this hop's)
    /// whose token names that flow, or an endpoint of the same identity (another connection of
    /// the client's). Tokens are MACed: nobody else writes one that parses.
    fn came_from(&self, request: &Message, flow: &Flow, to: Option<&SaEndpoint>) -> bool {
        request.header_values("Via").skip(1).any(|v| {
            Via::parse(v)
                .and_then(|via| via.param("sgf"))
                .and_then(|t| self.ids.parse_via_flow_token(t))
                .is_some_and(|(from, endpoint)| {
                    from == *flow
                        || matches!((endpoint, to), (Some(e), Some(t))
                            if e.identity.eq_ignore_ascii_case(&t.identity))
                })
        })
    }

    pub(super) fn on_response(
        &mut self,
        mut msg: Message,
        flow: Flow,
        from_client: bool,
        now: Now,
    ) {
        // Malformed (RFC 3261 §8.1.3.1): a duplicated CSeq or To, read one way here and another
        // by whoever gets it, is not passed on.
        if msg.validate().is_err() {
            self.report(Report::Dropped(DropReason::Invalid));
            return;
        }
        let Some(top) = top_via(&msg) else {
            self.report(Report::Dropped(DropReason::Invalid));
            return;
        };
        let Some(via) = Via::parse(top) else {
            self.report(Report::Dropped(DropReason::Invalid));
            return;
        };
        let Some(branch) = via
            .branch()
            .filter(|b| b.starts_with(BRANCH_PREFIX))
            .filter(|_| self.cfg.local.is_local(via.host, via.port, via.transport()))
            .map(str::to_owned)
        else {
            self.report(Report::Dropped(DropReason::ResponseNotOurs));
            return;
        };
        let sgf = via.param("sgf").map(str::to_owned);
        let code = msg.status_code().unwrap_or(500);
        let method = msg.cseq().map(|c| c.method.to_owned()).unwrap_or_default();
        let cancel_key = (method == "CANCEL").then(|| super::transaction::cancel_key(&branch));
        let ct_key: &str = cancel_key.as_deref().unwrap_or(&branch);
        if !from_client && self.probe_answered(ct_key, code, &flow, now) {
            return;
        }
        if from_client && let Err(reason) = self.admit_client_response(&mut msg, flow, ct_key, now)
        {
            self.report(Report::Dropped(reason));
            return;
        }
        if from_client
            && let Some(ct) = self.client.get(ct_key)
            && ct.state != ClientState::Completed
            && ct
                .server_key
                .as_deref()
                .and_then(|sk| self.server.get(sk))
                .is_some_and(|st| !st.from_client)
        {
            // A dialog a server opened with the client: its requests in it may come from the
            // request's To (see `delivered`). Not one a client opened: it would choose that To.
            // Nor the client's own call come back through a server behind (which passes To on as
            // it came): the request carries the Via this gateway gave it on the way out, whose
            // token names the client's flow, or its endpoint, whatever the mode.
            let aor = self.registrar.flow_identity(&flow).map(|b| b.aor.as_str());
            let own_call = self.came_from(&ct.request, &flow, ct.endpoint.as_ref());
            let cap = self.cfg.max_transactions;
            if !own_call {
                self.delivered
                    .answered(&ct.request, &msg, &flow, aor, now.mono, cap);
            }
        }
        let Some(ct) = self.client.get_mut(ct_key) else {
            if method == "CANCEL" {
                self.report(Report::Dropped(DropReason::Stray));
                return;
            }
            // No transaction (e.g. a retransmitted 2xx after it ended): forward statelessly
            // by the flow token in our Via, else by the next Via. From a client only an INVITE
            // 2xx (the one response a UAS retransmits on its own) with a token of ours in the Via
            // goes on: routing a client's response by a Via it wrote would make the gateway a
            // reflector to any address or connection it names.
            if from_client && !(method == "INVITE" && (200..300).contains(&code)) {
                self.report(Report::Dropped(DropReason::Stray));
                return;
            }
            self.relay_without_transaction(msg, sgf.as_deref(), from_client, now);
            return;
        };
        if ct.method == "CANCEL" {
            if code >= 200 {
                ct.state = ClientState::Completed;
                ct.epoch += 1;
                self.client.remove(ct_key);
            }
            return;
        }
        let server_key = ct.server_key.clone();
        // Taken now: a finished transaction over a stream leaves the table below.
        let hop = ct.hop;
        // A 503 after a provisional is the far end's answer relayed by the hop, which is up: it
        // neither counts against the hop nor fails over (the callee was reached through it).
        let from_the_hop = ct.state == ClientState::Trying;
        match hop {
            // Any answer but 503 shows the target is alive (and brings a down one back).
            Some(h) if code != 503 || !from_the_hop => self.hop_alive(h, now),
            // A 503 counts against it where probing will bring it back; without probing only
            // when there is another target to fail over to (below), as before probing.
            Some(h) if code >= 200 && self.cfg.probe.interval.is_some() => self.hop_failed(h, now),
            _ => {}
        }
        let Some(ct) = self.client.get_mut(ct_key) else {
            return;
        };
        if code < 200 {
            if ct.state == ClientState::Trying {
                ct.state = ClientState::Proceeding;
                ct.epoch += 1;
                let epoch = ct.epoch;
                let invite = ct.method == "INVITE";
                let cancel = std::mem::take(&mut ct.cancel_pending);
                if invite {
                    self.schedule(
                        later(now.mono, self.cfg.timers.timer_c),
                        TimerKind::ClientTimeout(ct_key.to_owned(), epoch),
                    );
                } else {
                    // Over UDP the request is still sent again, every T2 (RFC 3261 §17.1.2.2):
                    // its final answer may be lost like any datagram.
                    if !ct.target.transport().is_reliable() {
                        ct.interval = self.cfg.timers.t2;
                        self.schedule(
                            later(now.mono, self.cfg.timers.t2),
                            TimerKind::ClientRetransmit(ct_key.to_owned(), epoch),
                        );
                    }
                    self.schedule(
                        later(now.mono, self.cfg.timers.timeout()),
                        TimerKind::ClientTimeout(ct_key.to_owned(), epoch),
                    );
                }
                if cancel {
                    self.send_cancel(ct_key, now);
                }
            } else if ct.method == "INVITE" && code > 100 && !ct.timer_c_fired {
                // Each later provisional restarts Timer C (RFC 3261 §16.7 step 2).
                ct.epoch += 1;
                let epoch = ct.epoch;
                self.schedule(
                    later(now.mono, self.cfg.timers.timer_c),
                    TimerKind::ClientTimeout(ct_key.to_owned(), epoch),
                );
            }
            if code == 100 {
                return;
            }
            if let Some(sk) = server_key {
                pop_via(&mut msg);
                self.send_upstream(&sk, msg, now);
            }
            return;
        }
        // Final response.
        let detached = server_key.is_none();
        if ct.state == ClientState::Completed {
            // Retransmission: re-ACK a non-2xx; a 2xx is end to end, pass it on.
            let ack = ct.ack.clone();
            let target = ct.target;
            if code >= 300 {
                if let Some(ack) = ack {
                    self.actions.push_back(Action::Send {
                        to: target,
                        message: ack,
                        token: None,
                    });
                }
            } else if let Some(sk) = server_key
                && let Some((up, note, ack_key)) = self
                    .server
                    .get(&sk)
                    .map(|s| (s.upstream, s.note.clone(), s.ack_key.clone()))
            {
                pop_via(&mut msg);
                self.emit_late_response(up, msg, note, ack_key.as_deref(), now);
            } else if detached && method == "INVITE" {
                self.relay_without_transaction(msg, sgf.as_deref(), from_client, now);
            }
            return;
        }
        ct.state = ClientState::Completed;
        ct.epoch += 1;
        let epoch = ct.epoch;
        let invite = ct.method == "INVITE";
        let target = ct.target;
        // The hop-by-hop ACK of a non-2xx is built from the request as sent, borrowed.
        let ack = if invite && code >= 300 {
            build_hop_request(&ct.request, "ACK", msg.header("To"))
        } else {
            None
        };
        let endpoint = ack.as_ref().and_then(|_| ct.endpoint.clone());
        if let Some(ack) = ack
            && let Ok(sent) = self.emit_kept(target, ack, None, endpoint.as_ref(), now)
            && let Some(ct) = self.client.get_mut(ct_key)
        {
            ct.ack = Some(sent);
        }
        let linger = if invite || !target.transport().is_reliable() {
            self.cfg.timers.timeout()
        } else {
            Duration::ZERO
        };
        if linger.is_zero() {
            self.client.remove(ct_key);
        } else {
            self.schedule(
                later(now.mono, linger),
                TimerKind::ClientCleanup(ct_key.to_owned(), epoch),
            );
        }
        if code == 503
            && from_the_hop
            && let (Some(h), Some(sk)) = (hop, server_key.as_deref())
            && self
                .server
                .get(sk)
                .is_some_and(|s| s.state == ServerState::Proceeding && !s.hops.is_empty())
        {
            // RFC 3263 §4.3: a 503 from a next hop means "try the next one".
            if self.cfg.probe.interval.is_none() {
                self.hop_failed(h, now);
            }
            self.try_next_hop(sk, HopFailure::Transport, now);
            return;
        }
        if detached && invite && (200..300).contains(&code) {
            // A branch given up for the next hop (`detach_branch`) answered after all: a 2xx to
            // INVITE is end to end and goes on to the caller, who sorts out two dialogs.
            self.relay_without_transaction(msg, sgf.as_deref(), from_client, now);
            return;
        }
        if let Some(sk) = server_key {
            pop_via(&mut msg);
            let still_open = self
                .server
                .get(&sk)
                .is_some_and(|s| s.state == ServerState::Proceeding);
            if still_open && (200..300).contains(&code) {
                self.send_upstream(&sk, msg, now);
                self.cancel_branches(&sk, Some(ct_key), now);
            } else if still_open {
                // A 503 from a device, or from beyond a next hop that relayed the callee's
                // provisional, says that one is unavailable, not this gateway: sent on as 500
                // (RFC 3261 §16.7 step 6), without the Retry-After that would keep the caller
                // off this gateway. A next hop's own 503 with no other hop left is this
                // gateway's: it cannot serve anything now, and says so.
                if code == 503
                    && (hop.is_none() || !from_the_hop)
                    && msg
                        .set_start_line("SIP/2.0 500 Server Internal Error")
                        .is_ok()
                {
                    msg.remove_header("Retry-After");
                }
                self.branch_final(&sk, ct_key, msg, now);
            } else if invite
                && (200..300).contains(&code)
                && let Some((up, note, ack_key)) = self
                    .server
                    .get(&sk)
                    .map(|s| (s.upstream, s.note.clone(), s.ack_key.clone()))
            {
                // An INVITE 2xx after we already answered (another fork's 2xx, or after a
                // timeout): 2xx responses to INVITE are end to end, the caller sorts them out.
                self.emit_late_response(up, msg, note, ack_key.as_deref(), now);
            }
        }
    }

    /// Relays a response that has no server transaction to follow (a 2xx retransmitted after
    /// its transaction ended, a branch given up): by the flow token in our Via, else by the next
    /// Via. The token names the endpoint at its flow when the request came from one with an SA:
    /// the response is signed for it, as one with its transaction would be.
    fn relay_without_transaction(
        &mut self,
        mut msg: Message,
        sgf: Option<&str>,
        from_client: bool,
        now: Now,
    ) {
        pop_via(&mut msg);
        let (target, endpoint) = match sgf.and_then(|t| self.ids.parse_via_flow_token(t)) {
            Some((f, endpoint)) => (Some(Target::Flow(f)), endpoint),
            None if from_client => (None, None),
            None => (
                top_via(&msg).and_then(|v| {
                    let v = Via::parse(v)?;
                    Some(Target::Addr {
                        transport: v.transport()?,
                        addr: v.response_addr()?,
                    })
                }),
                None,
            ),
        };
        match target {
            Some(t) => self.emit_relayed_response(t, msg, endpoint.as_ref(), now),
            None => self.report(Report::Dropped(DropReason::ResponseUnroutable)),
        }
    }

    /// The authentication stage's judgement of a response from a client. A response to a request
    /// this gateway sent to a client must come back over the flow it went out on, and is judged
    /// against the endpoint it was sent to (whose SA must have signed it), not against what its
    /// own headers claim. Once the transaction is gone, the request's flow and endpoint come from
    /// the `sgt` parameter of our Via (MAC'd over the branch); without a valid one the response
    /// is not ours to relay.
    pub(super) fn admit_client_response(
        &mut self,
        msg: &mut Message,
        flow: Flow,
        ct_key: &str,
        now: Now,
    ) -> Result<(), DropReason> {
        let sent = self.client.get(ct_key);
        if let Some(ct) = sent {
            let from_its_target = match ct.target {
                Target::Flow(to) => to == flow,
                // Sent to an address (a client route to a host that is neither a next hop nor a
                // trusted peer): its answer comes from that host, over the connection opened to
                // it or from its address over UDP, never from a client elsewhere that learnt the
                // branch from the Via stack.
                Target::Addr { addr, .. } => {
                    addr.ip().to_canonical() == flow.remote.ip().to_canonical()
                }
            };
            if !from_its_target {
                return Err(DropReason::ResponseNotOurs);
            }
        }
        let late;
        let answering = match sent {
            Some(ct) => Answering::Request(ct.endpoint.as_ref()),
            // Read from our Via only here, where it is needed (rare: a late response).
            None => {
                late = top_via(msg)
                    .and_then(Via::parse)
                    .and_then(|v| {
                        let sgf = v.param("sgf").unwrap_or_default();
                        let method = msg.cseq().map(|c| c.method).unwrap_or_default();
                        self.ids.parse_target_token(
                            v.branch()?,
                            method,
                            sgf,
                            &flow,
                            v.param("sgt")?,
                        )
                    })
                    .ok_or(DropReason::Stray)?;
                Answering::Request(late.as_ref())
            }
        };
        let ctx = InboundContext {
            flow,
            now,
            flow_binding: self.registrar.flow_identity(&flow),
            answering,
            acknowledges: None,
            dialog_local: None,
        };
        match self.auth.inbound(msg, &ctx) {
            InboundVerdict::Continue { .. } => {
                if let Some(ct) = self.client.get(ct_key) {
                    restore_record_route(msg, &ct.request);
                }
                Ok(())
            }
            InboundVerdict::Respond(_) | InboundVerdict::Drop | InboundVerdict::Held => {
                Err(DropReason::Auth)
            }
        }
    }
}

/// A UAS copies the request's Record-Route into its responses (RFC 3261 §12.1.1), and the far end
/// of the dialog takes its route set from them. A client that wrote a set of its own would send
/// the servers' user agent (a PSTN gateway, a conference server) past this gateway and the next
/// hop, with its ACK, BYE and re-INVITEs, to a host and port of the client's choosing inside the
/// network. So a client's response carries the set the request was sent with, whatever it says
/// (after its signature was checked: the stage judged it as the client sent it). Late responses,
/// whose request is gone, are relayed as they are.
fn restore_record_route(resp: &mut Message, request: &Message) {
    if resp
        .header_all("Record-Route")
        .eq(request.header_all("Record-Route"))
    {
        return;
    }
    let sent: Vec<String> = request
        .header_all("Record-Route")
        .map(str::to_owned)
        .collect();
    resp.remove_header("Record-Route");
    for value in &sent {
        resp.push_header("Record-Route", value);
    }
}
