//! Server and client transactions (RFC 3261 §17) and the responses the proxy sends upstream:
//! their state, the answers made here, and the choice among the final responses of forked branches
//! (§16.7).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use sagw_sip::Message;

use super::Edge;
use super::forward::{OutboundCall, outbound_stage};
use super::routing::BranchTo;
use super::timers::TimerKind;
use crate::edit::{build_response, reason_phrase};
use crate::hook::ClientKey;
use crate::hook::{AuthNote, OutboundKind, SaEndpoint};
use crate::token::{Ids, Unique};
use crate::types::{Action, Flow, Now, Report, Target, later};
use crate::uri::{Via, push_decimal};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ServerState {
    /// No final response yet.
    Proceeding,
    /// Non-2xx final sent (INVITE: waiting for the ACK).
    Completed,
    /// INVITE 2xx sent: absorb retransmitted INVITEs (RFC 6026 "Accepted").
    Accepted,
    /// ACK received for a non-2xx final.
    Confirmed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ClientState {
    /// Sent, nothing heard.
    Trying,
    /// A provisional response arrived.
    Proceeding,
    /// Final response received; kept to absorb retransmissions.
    Completed,
}

/// Why the last next hop tried for a request failed: what the client is told when no hop is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HopFailure {
    /// The next hop gave no answer in time.
    Timeout,
    /// The driver could not deliver (connection refused, flow gone).
    Transport,
}

impl HopFailure {
    /// The answer when every hop failed: 408 after a silent one (RFC 3261 §16.7 step 6 maps a
    /// timeout to 408), 503 when none could be reached (with `Retry-After`, added by the caller).
    pub(super) fn status(self) -> u16 {
        match self {
            HopFailure::Transport => 503,
            HopFailure::Timeout => 408,
        }
    }
}

pub(super) struct ServerTx {
    pub(super) method: String,
    /// The request as received (plus received/rport), for building and signing responses;
    /// dropped once the final response is sent. A completed UDP transaction lingers 32 s
    /// (Timer J) only to repeat its answer to retransmissions, and at thousands of requests per
    /// second these copies were most of the proxy's memory.
    pub(super) request: Option<Message>,
    /// The request after Route processing, before per-hop edits: re-used for fail-over.
    pub(super) forward: Option<Message>,
    pub(super) upstream: Flow,
    pub(super) from_client: bool,
    pub(super) note: Option<AuthNote>,
    /// The endpoint the client proved to be (with an SA): named in the flow tokens of the
    /// Path and Record-Route entries written for it.
    pub(super) endpoint: Option<SaEndpoint>,
    pub(super) state: ServerState,
    /// The last response sent, as bytes: only retransmissions need it again, and it is the
    /// one part of a completed transaction kept for its whole lifetime (a parsed `Message`
    /// took three times the memory).
    pub(super) last_response: Option<Box<[u8]>>,
    /// Client transactions, one per branch (several when a request forks to every binding).
    pub(super) branches: Vec<String>,
    /// The best non-2xx final response of the finished branches (RFC 3261 §16.7 step 6).
    pub(super) best: Option<Message>,
    /// The challenges (`WWW-Authenticate`, `Proxy-Authenticate`) of the branches' 401 and 407
    /// answers other than `best`: a 401 or 407 sent upstream carries them all (§16.7 step 7).
    pub(super) challenges: Vec<(&'static str, String)>,
    pub(super) started: Instant,
    /// To tag of the responses made here, made on first use: a proxied transaction whose
    /// responses all come from downstream never needs one.
    pub(super) to_tag: Option<Unique>,
    pub(super) loop_hash: String,
    /// Targets still to try, in order (next hops, or the addresses a Route's name resolved to).
    pub(super) hops: VecDeque<crate::config::NextHop>,
    pub(super) epoch: u32,
    pub(super) interval: Duration,
    /// Whom it counts against in the client shares ([`Opening::client`]).
    pub(super) client: Option<ClientKey>,
    /// A client's INVITE, once answered: what the ACK of a 2xx to it names
    /// (`accepted::dialog_key`). Only a 2xx with that key is kept for its ACK.
    pub(super) ack_key: Option<String>,
}

/// A request that opens a server transaction: the request, the flow it came on and what the
/// authentication stage said of it.
pub(super) struct Opening {
    pub(super) request: Message,
    pub(super) upstream: Flow,
    pub(super) from_client: bool,
    pub(super) admitted: Admitted,
    /// Whom it counts against in the client shares ([`Opening::new`]): worked out once, for the
    /// share check and for the transaction.
    pub(super) client: Option<ClientKey>,
}

impl ServerTx {
    /// An INVITE's that answered 2xx (Accepted, RFC 6026): an ACK that matches it is the 2xx's,
    /// the transaction user's (§7.1), not one to absorb.
    pub(super) fn accepted_invite(&self) -> bool {
        self.state == ServerState::Accepted && self.method == "INVITE"
    }

    /// A server transaction in Proceeding, before any response or branch.
    pub(super) fn new(
        opening: Opening,
        loop_hash: String,
        started: Instant,
        interval: Duration,
    ) -> Self {
        let Opening {
            request,
            upstream,
            from_client,
            admitted,
            client,
        } = opening;
        ServerTx {
            method: request.method().unwrap_or("").to_owned(),
            request: Some(request),
            forward: None,
            upstream,
            from_client,
            note: admitted.note,
            endpoint: admitted.endpoint,
            state: ServerState::Proceeding,
            last_response: None,
            branches: Vec::new(),
            best: None,
            challenges: Vec::new(),
            started,
            to_tag: None,
            loop_hash,
            hops: VecDeque::new(),
            epoch: 0,
            interval,
            client,
            ack_key: None,
        }
    }
}

/// The key of the client transaction of a CANCEL sent for the branch keyed `branch_key`: the CANCEL
/// shares its INVITE's branch (RFC 3261 §9.1), so its key is the branch's with a suffix; the
/// sender and the response matching must agree on it.
pub(super) fn cancel_key(branch_key: &str) -> String {
    [branch_key, "|CANCEL"].concat()
}

pub(super) struct ClientTx {
    pub(super) server_key: Option<String>,
    pub(super) method: String,
    /// As sent (after the outbound stage).
    pub(super) request: Message,
    pub(super) target: Target,
    /// The client endpoint at the target, when it has an SA: the CANCEL and ACK we send there
    /// are signed for it too.
    pub(super) endpoint: Option<SaEndpoint>,
    /// The answer when the target's flow is gone (see [`BranchTo::gone`]).
    pub(super) gone: u16,
    pub(super) state: ClientState,
    pub(super) epoch: u32,
    pub(super) interval: Duration,
    pub(super) cancel_pending: bool,
    /// The target when it is one of a list tried in turn (next hops, a resolved name): a
    /// failure fails over to the next and counts against the target's health.
    pub(super) hop: Option<crate::config::NextHop>,
    pub(super) ack: Option<Message>,
    /// Timer C fired and the branch was cancelled: the next timeout gives up on it.
    pub(super) timer_c_fired: bool,
}

impl ClientTx {
    /// A client transaction for `request`, just sent to `to`: no server transaction, no next hop
    /// (set them where they apply), retransmitting from `t1`.
    pub(super) fn trying(method: String, request: Message, to: BranchTo, t1: Duration) -> Self {
        ClientTx {
            server_key: None,
            method,
            request,
            target: to.target,
            endpoint: to.endpoint,
            gone: to.gone,
            state: ClientState::Trying,
            epoch: 0,
            interval: t1,
            cancel_pending: false,
            hop: None,
            ack: None,
            timer_c_fired: false,
        }
    }

    /// Where this transaction's request went, for a request sent the same way (its CANCEL).
    pub(super) fn branch_to(&self) -> BranchTo {
        BranchTo {
            target: self.target,
            endpoint: self.endpoint.clone(),
            gone: self.gone,
            // A remote branch's Route, and a binding's Request-URI, are in `request` already,
            // and so in a CANCEL built from it.
            route: None,
            request_uri: None,
        }
    }
}

/// What the inbound stage established about a client's request.
#[derive(Default)]
pub(super) struct Admitted {
    pub(super) note: Option<AuthNote>,
    pub(super) endpoint: Option<SaEndpoint>,
    /// The identity the stage says the request proved, for the client shares.
    pub(super) client: Option<ClientKey>,
}

impl Opening {
    /// The request, and whom its transaction counts against in the client shares: the identity the request
    /// proved, else its source address. A request from a server behind us counts against the
    /// share of the identity its P-Asserted-Identity names ([`ClientKey::asserted`]: a share of
    /// its own), so that a client's requests coming back through the servers (its own AOR
    /// called, forked to each of its devices; a pool peer relaying them) are bounded too; without
    /// one, against nobody. Its own share stays apart: a caller elsewhere whose network lets it
    /// assert alice's identity uses up only the asserted share, not alice's requests' share.
    pub(super) fn new(
        request: Message,
        upstream: Flow,
        from_client: bool,
        admitted: Admitted,
    ) -> Opening {
        let client = if from_client {
            Some(
                admitted
                    .client
                    .unwrap_or_else(|| ClientKey::source(upstream.remote.ip())),
            )
        } else {
            request
                .header_values("P-Asserted-Identity")
                .next()
                .and_then(|asserted| sagw_sip::parse_name_addr(asserted).ok())
                .map(|na| ClientKey::asserted(na.uri))
        };
        Opening {
            request,
            upstream,
            from_client,
            admitted,
            client,
        }
    }
}

/// The RFC 3261 branch of `via`, when it has the magic cookie.
pub(super) fn rfc3261_branch<'a>(via: &Via<'a>) -> Option<&'a str> {
    via.branch().filter(|b| b.starts_with("z9hG4bK"))
}

/// The server transaction key of a request (RFC 3261 §17.2.3): branch, sent-by and method,
/// written into `key` (cleared first): it is built for every request, and most only look it up.
pub(super) fn server_key(key: &mut String, via: &Via<'_>, method: &str, msg: &Message) {
    key.clear();
    let push_sent_by = |key: &mut String| {
        let start = key.len();
        key.push_str(via.host);
        if let Some(host) = key.get_mut(start..) {
            host.make_ascii_lowercase();
        }
        if let Some(p) = via.port {
            key.push(':');
            push_decimal(key, u64::from(p));
        }
    };
    match rfc3261_branch(via) {
        Some(b) => {
            key.reserve(b.len() + via.host.len() + method.len() + 8);
            key.push_str(b);
            key.push('\u{0}');
            push_sent_by(key);
            key.push('\u{0}');
            key.push_str(method);
        }
        // RFC 2543 peers: no magic cookie, match on the dialog and CSeq identifiers instead.
        None => {
            key.reserve(128);
            key.push_str("2543\u{0}");
            key.push_str(msg.call_id().unwrap_or(""));
            key.push('\u{0}');
            key.push_str(msg.cseq().map(|c| c.number).unwrap_or(""));
            key.push('\u{0}');
            key.push_str(msg.from().and_then(|f| f.tag()).unwrap_or(""));
            key.push('\u{0}');
            push_sent_by(key);
            key.push('\u{0}');
            key.push_str(method);
        }
    }
}

/// A response this proxy sent before, parsed again to be sent again. It was serialised from a
/// `Message` and is our own, so it is parsed without size limits: the configured limits (which
/// may exceed the parser's defaults) were applied to what it was built from.
pub(super) fn resend_copy(bytes: &[u8]) -> Option<Message> {
    let own = sagw_sip::Limits {
        max_message_bytes: usize::MAX,
        max_headers: usize::MAX,
        max_line_bytes: usize::MAX,
        ..sagw_sip::Limits::default()
    };
    Message::parse_with(bytes, &own).ok()
}

/// The To tag for a response with `code` made here for `st` (none for 100 Trying, which gets
/// none, RFC 3261 §8.2.6.2), made on first use and the same for every later one.
pub(super) fn ensure_to_tag(st: &mut ServerTx, ids: &mut Ids, code: u16) {
    if code > 100 && st.to_tag.is_none() {
        st.to_tag = Some(ids.unique());
    }
}
impl Edge {
    /// Answer `req` without a transaction.
    pub(super) fn respond_stateless(
        &mut self,
        req: &Message,
        flow: Flow,
        code: u16,
        extra: &[(&str, String)],
        now: Now,
    ) {
        self.respond_stateless_noted(req, flow, code, extra, None, now);
    }

    /// [`respond_stateless`](Self::respond_stateless) to a request the authentication stage
    /// admitted with `note`: the outbound stage signs the answer with it, or a client with an SA
    /// drops it unsigned (and retransmits, or signs in again, where it was told to wait).
    pub(super) fn respond_stateless_noted(
        &mut self,
        req: &Message,
        flow: Flow,
        code: u16,
        extra: &[(&str, String)],
        note: Option<&AuthNote>,
        now: Now,
    ) {
        let tag = self.ids.unique();
        if let Some(resp) =
            build_response(req, code, reason_phrase(code), Some(tag.as_str()), extra)
        {
            self.emit_response(Target::Flow(flow), resp, Some(req), note, now);
        }
    }

    /// Keeps a new server transaction, counted in its client's share.
    pub(super) fn open_server(&mut self, key: &str, st: ServerTx) {
        let client = st.client;
        if let Some(old) = self.server.insert(key.to_owned(), Box::new(st)) {
            // Not done today (a key in use is a retransmission, matched before): the one replaced
            // gives its place back all the same.
            self.shares.give_back(old.client);
        }
        self.shares.take(client);
    }

    /// Ends a server transaction, giving its place in its client's share back.
    pub(super) fn close_server(&mut self, key: &str) {
        if let Some(st) = self.server.remove(key) {
            self.shares.give_back(st.client);
        }
    }

    /// Create a server transaction answered at once (so retransmissions get the same answer).
    pub(super) fn local_transaction(
        &mut self,
        key: &str,
        opening: Opening,
        code: u16,
        extra: &[(&str, String)],
        now: Now,
    ) {
        let st = ServerTx::new(opening, String::new(), now.mono, self.cfg.timers.t1);
        self.open_server(key, st);
        self.respond(key, code, extra, now);
    }

    /// Send a response generated here for server transaction `key`.
    pub(super) fn respond(&mut self, key: &str, code: u16, extra: &[(&str, String)], now: Now) {
        let Some(st) = self.server.get_mut(key) else {
            return;
        };
        if st.state != ServerState::Proceeding {
            return;
        }
        ensure_to_tag(st, &mut self.ids, code);
        let tag = st.to_tag.as_ref().map(Unique::as_str);
        let resp = st
            .request
            .as_ref()
            .and_then(|r| build_response(r, code, reason_phrase(code), tag, extra));
        if let Some(resp) = resp {
            self.send_upstream(key, resp, now);
        }
    }

    /// Send a response (ours, or a downstream one with our Via already removed) to the client
    /// of server transaction `key`, and move the transaction on.
    pub(super) fn send_upstream(&mut self, key: &str, mut resp: Message, now: Now) {
        let Some(st) = self.server.get_mut(key) else {
            return;
        };
        if st.state != ServerState::Proceeding {
            return;
        }
        let code = resp.status_code().unwrap_or(500);
        let upstream = st.upstream;
        let started = st.started;
        let invite = st.method == "INVITE";
        let reliable = upstream.transport.is_reliable();
        // The request and note are lent from the transaction, not copied.
        let call = OutboundCall {
            kind: OutboundKind::Response,
            endpoint: None,
            request: st.request.as_ref(),
            note: st.note.as_ref(),
            now,
        };
        // The stage never refuses a response (only requests), so the verdict changes nothing.
        let _ = outbound_stage(
            &self.cfg,
            &self.trusted_flows,
            &mut *self.auth,
            &self.registrar,
            Target::Flow(upstream),
            &mut resp,
            call,
        );
        // A copy is kept only where a retransmitted request gets it again: not after an INVITE
        // 2xx (RFC 6026 Accepted absorbs them) nor for a final response that ends a transaction
        // over a stream at once.
        let keep = if code < 200 {
            true
        } else if invite {
            code >= 300
        } else {
            !reliable
        };
        st.last_response = keep.then(|| resp.to_bytes().into_boxed_slice());
        // A client's INVITE answered: what its 2xx ACKs name, kept while the request is here
        // (a 2xx may come after a non-2xx final, from another fork). An accepted one: its ACK, a
        // transaction of its own, finds this 2xx again.
        if invite && code >= 200 && st.from_client && st.ack_key.is_none() {
            let mut k = String::new();
            st.ack_key = st
                .request
                .as_ref()
                .and_then(|r| super::accepted::dialog_key(&mut k, r, "INVITE", &upstream))
                .map(str::to_owned);
        }
        // The server side's 2xx to a client's re-INVITE or UPDATE in a dialog delivered to it
        // under another address moves that dialog's remote target (see `delivered`).
        if (200..300).contains(&code)
            && st.from_client
            && let Some(request) = &st.request
        {
            self.delivered.refreshed(request, &resp, &upstream);
        }
        if invite
            && (200..300).contains(&code)
            && let (Some(note), Some(ack_key)) = (&st.note, &st.ack_key)
        {
            let expires = later(now.mono, self.cfg.timers.timeout());
            let cap = self.cfg.max_transactions;
            self.accepted
                .answered(ack_key, &resp, &upstream, note, now.mono, expires, cap);
        }
        self.actions.push_back(Action::Send {
            to: Target::Flow(upstream),
            message: resp,
            token: None,
        });
        if code < 200 {
            return;
        }
        let timers = self.cfg.timers;
        st.epoch += 1;
        let epoch = st.epoch;
        // Final: what is left to do (absorb retransmissions, match the ACK or a CANCEL, pass
        // on a late fork's 2xx) needs neither the request nor the fail-over state.
        st.request = None;
        st.forward = None;
        st.best = None;
        st.hops = VecDeque::new();
        let retransmit = if invite && code >= 300 {
            st.state = ServerState::Completed;
            // Timer G (unreliable only) until the ACK, Timer H as the limit.
            (!reliable).then_some(timers.t1)
        } else if invite {
            st.state = ServerState::Accepted;
            None
        } else {
            st.state = ServerState::Completed;
            None
        };
        let cleanup = if !invite && reliable {
            Duration::ZERO
        } else {
            timers.timeout()
        };
        // Answered here (never a branch: no late response from downstream can come for it) and
        // over UDP: from now on only its answer is kept (see `answered`).
        let answer = (!invite && !reliable && st.branches.is_empty())
            .then(|| st.last_response.take())
            .flatten();
        // The report takes the method; a transaction removed below (kept as its answer, or
        // ended at once over a stream) gives its own up: a copy per final response was an
        // allocation per REGISTER.
        let ends_here = answer.is_some() || cleanup.is_zero();
        let method = if ends_here {
            std::mem::take(&mut st.method)
        } else {
            st.method.clone()
        };
        self.report(Report::Transaction {
            method,
            status: code,
            elapsed: now.mono.saturating_duration_since(started),
        });
        if let Some(response) = answer {
            // Its place in the client's share goes with the answer, given back at Timer J.
            let client = self.server.remove(key).and_then(|st| st.client);
            let expires = self.on_cleanup_grid(later(now.mono, cleanup));
            if let Some(replaced) = self
                .answered
                .insert(key, upstream, response, expires, client)
            {
                // An answer made again under the same key (not done today).
                self.shares.give_back(Some(replaced));
            }
            return;
        }
        if let Some(iv) = retransmit {
            self.schedule(
                later(now.mono, iv),
                TimerKind::ServerRetransmit(key.to_owned(), epoch),
            );
        }
        if cleanup.is_zero() {
            self.close_server(key);
        } else {
            self.schedule(
                later(now.mono, cleanup),
                TimerKind::ServerCleanup(key.to_owned(), epoch),
            );
        }
    }

    /// A branch ended with a non-2xx final response (received, or made up for a timeout or a
    /// dead flow): answer now, or keep the best one until the other branches end (RFC 3261
    /// §16.7 steps 5-6; a 6xx ends the search and cancels the rest).
    pub(super) fn branch_final(&mut self, sk: &str, ct_key: &str, resp: Message, now: Now) {
        let code = resp.status_code().unwrap_or(500);
        let pending = self.other_pending(sk, ct_key);
        if code >= 600 && pending {
            self.cancel_branches(sk, Some(ct_key), now);
        }
        let Some(st) = self.server.get_mut(sk) else {
            return;
        };
        let better = st
            .best
            .as_ref()
            .is_none_or(|b| final_rank(code) < final_rank(b.status_code().unwrap_or(699)));
        // The challenges of whichever 401/407 is not kept.
        let set_aside = if better {
            st.best.replace(resp)
        } else {
            Some(resp)
        };
        if let Some(other) = set_aside {
            keep_challenges(&mut st.challenges, &other);
        }
        if pending && code < 600 {
            return;
        }
        self.send_best(sk, now);
    }

    /// Sends the best final answer kept for `sk` upstream, a 401 or 407 with the other branches'
    /// challenges (§16.7 step 7); false when there is none.
    fn send_best(&mut self, sk: &str, now: Now) -> bool {
        let Some(st) = self.server.get_mut(sk) else {
            return false;
        };
        let Some(mut best) = st.best.take() else {
            return false;
        };
        if matches!(best.status_code(), Some(401 | 407)) {
            for (name, value) in std::mem::take(&mut st.challenges) {
                best.push_header(name, &value);
            }
        }
        self.send_upstream(sk, best, now);
        true
    }

    /// A branch of a non-INVITE request ended without a final response (a timeout): no 408 is
    /// made up for it (RFC 4320 §4.2; the client's own timer ends its transaction, and a 408
    /// arriving late would be taken for an answer). The best answer of the other branches goes
    /// up once they are done; with none, the server transaction ends unanswered.
    pub(super) fn branch_gave_up(&mut self, sk: &str, ct_key: &str, now: Now) {
        if self.other_pending(sk, ct_key) {
            return;
        }
        if !self.send_best(sk, now) {
            self.end_unanswered(sk, now);
        }
    }

    /// A non-INVITE that no branch answered: completed without an answer, and kept for Timer
    /// J's time over UDP, so that the client's retransmissions meanwhile are taken as what they
    /// are (before, the transaction went at once and a retransmission was forwarded again as a
    /// new request); over a stream no retransmission comes (Timer J is 0), and it goes now. Not
    /// in progress either way: a drain does not wait for it.
    pub(super) fn end_unanswered(&mut self, sk: &str, now: Now) {
        let timeout = self.cfg.timers.timeout();
        let Some(st) = self.server.get_mut(sk) else {
            return;
        };
        if st.upstream.transport.is_reliable() {
            self.close_server(sk);
            return;
        }
        st.state = ServerState::Completed;
        st.hops.clear();
        st.forward = None;
        st.epoch += 1;
        let epoch = st.epoch;
        self.schedule(
            later(now.mono, timeout),
            TimerKind::ServerCleanup(sk.to_owned(), epoch),
        );
    }

    /// [`Edge::branch_final`] with a response of our own.
    pub(super) fn branch_failed(&mut self, sk: &str, ct_key: &str, code: u16, now: Now) {
        if code == 408 && self.server.get(sk).is_some_and(|st| st.method != "INVITE") {
            self.branch_gave_up(sk, ct_key, now);
            return;
        }
        let ids = &mut self.ids;
        let resp = self.server.get_mut(sk).and_then(|st| {
            ensure_to_tag(st, ids, code);
            build_response(
                st.request.as_ref()?,
                code,
                reason_phrase(code),
                st.to_tag.as_ref().map(Unique::as_str),
                &[],
            )
        });
        if let Some(resp) = resp {
            self.branch_final(sk, ct_key, resp, now);
        }
    }

    /// True when a branch of `sk` other than `except` has no final response yet.
    pub(super) fn other_pending(&self, sk: &str, except: &str) -> bool {
        self.server.get(sk).is_some_and(|st| {
            st.branches.iter().any(|k| {
                k != except
                    && self
                        .client
                        .get(k)
                        .is_some_and(|c| c.state != ClientState::Completed)
            })
        })
    }

    /// A response that arrives after its transaction answered: forwarded upstream as is, with the
    /// transaction's authentication note, so an authenticated client still gets it signed.
    pub(super) fn emit_late_response(
        &mut self,
        up: Flow,
        msg: Message,
        note: Option<AuthNote>,
        ack_key: Option<&str>,
        now: Now,
    ) {
        // Another fork's 2xx, a retransmitted one, or one after a non-2xx final: each has an ACK
        // of its own (see `accepted`), if it names the INVITE (`ack_key`).
        if let (Some(note), Some(ack_key)) = (&note, ack_key)
            && msg.status_code().is_some_and(|c| (200..300).contains(&c))
        {
            let expires = later(now.mono, self.cfg.timers.timeout());
            let cap = self.cfg.max_transactions;
            self.accepted
                .answered(ack_key, &msg, &up, note, now.mono, expires, cap);
        }
        self.emit_response(Target::Flow(up), msg, None, note.as_ref(), now);
    }
}

/// The challenges of a 401 or 407 answer, kept for the one that goes upstream: at most 16 (a
/// request forks to a few devices; a branch answering with many challenges gets no more room).
fn keep_challenges(kept: &mut Vec<(&'static str, String)>, resp: &Message) {
    if !matches!(resp.status_code(), Some(401 | 407)) {
        return;
    }
    for name in ["WWW-Authenticate", "Proxy-Authenticate"] {
        // Whole lines: a challenge's parameters have commas of their own.
        for value in resp.header_all(name) {
            if kept.len() < 16 {
                kept.push((name, value.to_owned()));
            }
        }
    }
}

/// The order of final answers among a request's branches (lower first, RFC 3261 §16.7 step 6):
/// a 6xx ends the search; then the lowest class. Within 4xx, the answers a caller can act on
/// (credentials, a format, an extension, an address to complete) first, and last those that say
/// nothing of the callee (a timeout, a gone flow, unavailable, terminated): a busy device's 486
/// is the answer, not the 480 of another that is off. Within 5xx, 503 last.
fn final_rank(code: u16) -> (u8, u8, u16) {
    match code {
        600.. => (0, 0, code),
        300..=399 => (1, 0, code),
        401 | 407 | 415 | 420 | 484 => (2, 0, code),
        408 | 430 | 480 | 487 => (2, 2, code),
        400..=499 => (2, 1, code),
        503 => (3, 1, code),
        500..=599 => (3, 0, code),
        _ => (4, 0, code),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edit::top_via;

    fn request(branch: &str) -> Message {
        let text = format!(
            "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP Host.Example:5062{branch}\r\n\
From: <sip:a@example.com>;tag=f1\r\nTo: <sip:a@example.com>\r\nCall-ID: c1\r\n\
CSeq: 7 REGISTER\r\nContent-Length: 0\r\n\r\n"
        );
        Message::parse(text.as_bytes()).unwrap()
    }

    /// The edge writes every request's key into the buffer the last one left: what was there
    /// must not show.
    #[test]
    fn server_key_overwrites_its_buffer() {
        let rfc3261 = request(";branch=z9hG4bK-1");
        let rfc2543 = request(";branch=1");
        let key_of = |buf: &mut String, msg: &Message| {
            let via = top_via(msg).and_then(Via::parse).unwrap();
            server_key(buf, &via, "REGISTER", msg);
            buf.clone()
        };
        let fresh = |msg: &Message| key_of(&mut String::new(), msg);
        assert_eq!(fresh(&rfc3261), "z9hG4bK-1\0host.example:5062\0REGISTER");
        assert_eq!(
            fresh(&rfc2543),
            "2543\0c1\u{0}7\0f1\0host.example:5062\0REGISTER"
        );
        let mut buf = String::new();
        for msg in [&rfc2543, &rfc3261, &rfc2543, &rfc3261] {
            assert_eq!(key_of(&mut buf, msg), fresh(msg));
        }
    }
}
