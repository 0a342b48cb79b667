//! The edge proxy state machine (RFC 3261 §16 transaction-stateful proxy, §17 transactions).

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use sagw_sip::{Message, parse_name_addr};

use crate::Map;
use crate::config::{EdgeConfig, Mode, NextHop};
use crate::edit::{
    build_hop_request, build_response, pop_route, pop_via, push_on_top, push_via, reason_phrase,
    set_top_via, top_route, top_via,
};
use crate::hook::{
    AuthNote, ClientAuth, InboundContext, InboundVerdict, NoAuth, OutboundContext, OutboundKind,
};
use crate::registrar::{BindingInfo, RegisterOutcome, Registrar};
use crate::token::{BRANCH_PREFIX, Ids, branch_loop_hash, flow_token_claim, loop_hash};
use crate::types::{
    Action, DropReason, Flow, Inbound, LimitKind, Now, Report, SendToken, Stats, Target, Transport,
    later,
};
use crate::uri::{SipUri, Via, list_elements, push_decimal};

/// Methods whose out-of-dialog requests create dialogs, so the proxy Record-Routes them.
const DIALOG_METHODS: [&str; 4] = ["INVITE", "SUBSCRIBE", "REFER", "NOTIFY"];

/// Grid for clean-up timers (see [`Edge::on_cleanup_grid`]): a finished transaction's memory
/// lingers at most this much longer than its timer asks.
const CLEANUP_GRID: Duration = Duration::from_millis(128);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerState {
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
enum ClientState {
    /// Sent, nothing heard.
    Trying,
    /// A provisional response arrived.
    Proceeding,
    /// Final response received; kept to absorb retransmissions.
    Completed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// The next hop gave no answer in time.
    Timeout,
    /// The driver could not deliver (connection refused, flow gone).
    Transport,
}

struct ServerTx {
    method: String,
    /// The request as received (plus received/rport), for building and signing responses;
    /// dropped once the final response is sent. A completed UDP transaction lingers 32 s
    /// (Timer J) only to repeat its answer to retransmissions, and at thousands of requests per
    /// second these copies were most of the proxy's memory.
    request: Option<Message>,
    /// The request after Route processing, before per-hop edits: re-used for fail-over.
    forward: Option<Message>,
    upstream: Flow,
    from_client: bool,
    note: Option<AuthNote>,
    state: ServerState,
    /// The last response sent, as bytes: only retransmissions need it again, and it is the
    /// one part of a completed transaction kept for its whole lifetime (a parsed `Message`
    /// took three times the memory).
    last_response: Option<Box<[u8]>>,
    /// Client transactions, one per branch (several when a request forks to every binding).
    branches: Vec<String>,
    /// The best non-2xx final response of the finished branches (RFC 3261 §16.7 step 6).
    best: Option<Message>,
    started: Instant,
    /// To tag of the responses made here, made on first use: a proxied transaction whose
    /// responses all come from downstream never needs one.
    to_tag: Option<String>,
    loop_hash: String,
    /// Next hops still to try, in order.
    hops: VecDeque<usize>,
    epoch: u32,
    interval: Duration,
}

impl ServerTx {
    /// A server transaction in Proceeding, before any response or branch.
    #[allow(clippy::too_many_arguments)]
    fn new(
        method: String,
        request: Message,
        upstream: Flow,
        from_client: bool,
        note: Option<AuthNote>,
        loop_hash: String,
        started: Instant,
        interval: Duration,
    ) -> Self {
        ServerTx {
            method,
            request: Some(request),
            forward: None,
            upstream,
            from_client,
            note,
            state: ServerState::Proceeding,
            last_response: None,
            branches: Vec::new(),
            best: None,
            started,
            to_tag: None,
            loop_hash,
            hops: VecDeque::new(),
            epoch: 0,
            interval,
        }
    }
}

struct ClientTx {
    server_key: Option<String>,
    method: String,
    /// As sent (after the outbound stage).
    request: Message,
    target: Target,
    binding: Option<BindingInfo>,
    state: ClientState,
    epoch: u32,
    interval: Duration,
    cancel_pending: bool,
    hop: Option<usize>,
    ack: Option<Message>,
    /// Timer C fired and the branch was cancelled: the next timeout gives up on it.
    timer_c_fired: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum TimerKind {
    ClientRetransmit(String, u32),
    ClientTimeout(String, u32),
    ClientCleanup(String, u32),
    ServerRetransmit(String, u32),
    ServerCleanup(String, u32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct TimerEntry {
    at: Instant,
    seq: u64,
    kind: TimerKind,
}

impl Ord for TimerEntry {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

impl PartialOrd for TimerEntry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Where routing sends a request.
enum Dest {
    Flow(Flow, Option<BindingInfo>),
    /// Every live binding of an AOR, most recent first (parallel forking).
    Fork(Vec<(Flow, BindingInfo)>),
    Addr(Transport, std::net::SocketAddr),
    Hops,
}

/// The sans-IO edge proxy: feed it messages, timeouts and delivery failures; drain [`Action`]s.
///
/// ```
/// use std::time::{Instant, SystemTime};
/// use sagw_proxy::{Edge, EdgeConfig, LocalAddrs, Secret, Now, Inbound, Flow, FlowId, Transport, Action};
/// let local = LocalAddrs { host: "192.0.2.10".into(), aliases: vec![], udp: Some(5060), tcp: Some(5060), tls: None, extra_ports: vec![] };
/// let mut edge = Edge::new(EdgeConfig::new(local, Secret::new([9; 32])));
/// let now = Now { mono: Instant::now(), wall: SystemTime::now() };
/// let flow = Flow { id: FlowId(1), transport: Transport::Tcp, remote: "198.51.100.7:40000".parse().unwrap() };
/// let msg = sagw_sip::Message::parse(b"OPTIONS sip:192.0.2.10 SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.1;branch=z9hG4bK1\r\n\
///     From: <sip:a@x>;tag=1\r\nTo: <sip:192.0.2.10>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").unwrap();
/// edge.handle_inbound(Inbound { message: msg, flow }, now);
/// let Some(Action::Send { message, .. }) = edge.poll_action() else { panic!() };
/// assert_eq!(message.status_code(), Some(200));
/// ```
pub struct Edge {
    cfg: EdgeConfig,
    auth: Box<dyn ClientAuth>,
    ids: Ids,
    registrar: Registrar,
    /// Boxed: a transaction is several hundred bytes and a UDP edge keeps ~100 000 of them
    /// (Timer J); inline, every insert moved the whole struct into a table far larger than the
    /// caches, and every probe walked it.
    server: Map<String, Box<ServerTx>>,
    client: Map<String, Box<ClientTx>>,
    timers: BinaryHeap<Reverse<TimerEntry>>,
    timer_seq: u64,
    /// Clean-up timers, by their instant on the clean-up grid. Kept apart from the heap: there
    /// is one per finished transaction (128 000 at 4000 REGISTER/s over UDP), and in the heap
    /// every push and pop walked ~17 levels of a table far larger than the caches; here a
    /// timer joins the bucket of its grid step (~250 buckets for Timer J) and a due bucket is
    /// taken whole.
    cleanups: BTreeMap<Instant, Vec<TimerKind>>,
    /// Where the clean-up timers' grid starts (the first timer scheduled).
    cleanup_origin: Option<Instant>,
    actions: VecDeque<Action>,
    hop_down: Vec<Option<Instant>>,
}

impl std::fmt::Debug for Edge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edge")
            .field("server_transactions", &self.server.len())
            .field("client_transactions", &self.client.len())
            .field("bindings", &self.registrar.len())
            .finish()
    }
}

/// The RFC 3261 branch of `via`, when it has the magic cookie.
fn rfc3261_branch<'a>(via: &Via<'a>) -> Option<&'a str> {
    via.branch().filter(|b| b.starts_with("z9hG4bK"))
}

/// The server transaction key of a request (RFC 3261 §17.2.3): branch, sent-by and method.
/// Written into one pre-sized String: it is built for every request.
fn server_key(via: &Via<'_>, method: &str, msg: &Message) -> String {
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
            let mut key = String::with_capacity(b.len() + via.host.len() + method.len() + 8);
            key.push_str(b);
            key.push('\u{0}');
            push_sent_by(&mut key);
            key.push('\u{0}');
            key.push_str(method);
            key
        }
        // RFC 2543 peers: no magic cookie, match on the dialog and CSeq identifiers instead.
        None => {
            let mut key = String::with_capacity(128);
            key.push_str("2543\u{0}");
            key.push_str(msg.call_id().unwrap_or(""));
            key.push('\u{0}');
            key.push_str(msg.cseq().map(|c| c.number).unwrap_or(""));
            key.push('\u{0}');
            key.push_str(msg.from().and_then(|f| f.tag()).unwrap_or(""));
            key.push('\u{0}');
            push_sent_by(&mut key);
            key.push('\u{0}');
            key.push_str(method);
            key
        }
    }
}

impl Edge {
    /// A proxy with no authentication stage.
    pub fn new(cfg: EdgeConfig) -> Edge {
        Edge::with_auth(cfg, Box::new(NoAuth))
    }

    /// A proxy whose client messages pass `auth` (see [`crate::hook`]).
    pub fn with_auth(cfg: EdgeConfig, auth: Box<dyn ClientAuth>) -> Edge {
        let hops = cfg.next_hops.len();
        Edge {
            ids: Ids::new(cfg.secret.clone()),
            registrar: Registrar::new(cfg.registrar.clone()),
            cfg,
            auth,
            server: Map::default(),
            client: Map::default(),
            timers: BinaryHeap::new(),
            timer_seq: 0,
            cleanups: BTreeMap::new(),
            cleanup_origin: None,
            actions: VecDeque::new(),
            hop_down: vec![None; hops],
        }
    }

    /// The configuration.
    pub fn config(&self) -> &EdgeConfig {
        &self.cfg
    }

    /// The location service.
    pub fn registrar(&self) -> &Registrar {
        &self.registrar
    }

    /// Live state counts.
    pub fn stats(&self) -> Stats {
        Stats {
            server_transactions: self.server.len(),
            client_transactions: self.client.len(),
            bindings: self.registrar.len(),
        }
    }

    /// The next action for the driver.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Edge::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.timers.peek().map(|Reverse(e)| e.at),
            self.cleanups.first_key_value().map(|(at, _)| *at),
            self.registrar.next_expiry(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// True when `flow` belongs to a client rather than a next hop or trusted server.
    pub fn is_client(&self, flow: &Flow) -> bool {
        is_client(&self.cfg, flow)
    }

    /// A stream flow closed: its registrations are useless now (the client must re-register).
    pub fn flow_closed(&mut self, flow: crate::types::FlowId) {
        self.registrar.flow_closed(flow);
        self.report_binding_changes();
        self.prune_stale_timers();
    }

    /// Drop timers at the head of the heap that would do nothing when they fire (their
    /// transaction is gone, has moved on to a new epoch, or left the state the timer serves), so
    /// that [`Edge::poll_timeout`] names the next timer with work to do. Most timers end this
    /// way (Timer A/E once a response arrives, B/F once the transaction completes, C once a
    /// final arrives); left in place, each woke the driver for nothing.
    fn prune_stale_timers(&mut self) {
        while let Some(Reverse(top)) = self.timers.peek() {
            if !self.timer_is_stale(&top.kind) {
                break;
            }
            self.timers.pop();
        }
    }

    /// True when firing `kind` now would be a no-op: the same early returns as [`Edge::fire`].
    /// Within one transaction states only move forward and epochs only grow, so a stale timer
    /// stays stale; a key reused by a new transaction (a second CANCEL of a branch) starts at
    /// epoch 0 again, and dropping the old one's timers early only spares it a stray firing.
    fn timer_is_stale(&self, kind: &TimerKind) -> bool {
        match kind {
            TimerKind::ClientRetransmit(key, epoch) => self.client.get(key).is_none_or(|ct| {
                ct.epoch != *epoch
                    || ct.state == ClientState::Completed
                    || (ct.method == "INVITE" && ct.state != ClientState::Trying)
            }),
            TimerKind::ClientTimeout(key, epoch) => self
                .client
                .get(key)
                .is_none_or(|ct| ct.epoch != *epoch || ct.state == ClientState::Completed),
            TimerKind::ClientCleanup(key, epoch) => {
                self.client.get(key).is_none_or(|ct| ct.epoch != *epoch)
            }
            TimerKind::ServerRetransmit(key, epoch) => self
                .server
                .get(key)
                .is_none_or(|st| st.epoch != *epoch || st.state != ServerState::Completed),
            TimerKind::ServerCleanup(key, epoch) => {
                self.server.get(key).is_none_or(|st| st.epoch != *epoch)
            }
        }
    }

    fn schedule(&mut self, at: Instant, kind: TimerKind) {
        if matches!(
            kind,
            TimerKind::ClientCleanup(..) | TimerKind::ServerCleanup(..)
        ) {
            let at = self.on_cleanup_grid(at);
            self.cleanups.entry(at).or_default().push(kind);
            return;
        }
        self.timer_seq += 1;
        self.timers.push(Reverse(TimerEntry {
            at,
            seq: self.timer_seq,
            kind,
        }));
    }

    /// `at` rounded up to the next multiple of [`CLEANUP_GRID`]. Clean-up timers (Timers J,
    /// K, D, L, M: a finished transaction leaves memory) only free state; rounded to one grid,
    /// the clean-ups of many transactions fall due together and cost the driver one wake-up
    /// per grid step instead of one per transaction.
    fn on_cleanup_grid(&mut self, at: Instant) -> Instant {
        // The grid extends both ways from its origin: an earlier timer may come later (Timer I
        // after Timer H).
        let origin = *self.cleanup_origin.get_or_insert(at);
        crate::types::on_grid(origin, at, CLEANUP_GRID)
    }

    fn report(&mut self, r: Report) {
        self.actions.push_back(Action::Report(r));
    }

    fn report_binding_changes(&mut self) {
        for (aor, change) in self.registrar.take_changes() {
            self.report(Report::Binding { aor, change });
        }
        for _ in 0..self.registrar.take_evictions() {
            self.report(Report::Limit(LimitKind::BindingsPerAor));
        }
    }

    /// Queue a send; messages to clients pass the outbound stage first.
    #[allow(clippy::too_many_arguments)]
    fn emit(
        &mut self,
        to: Target,
        mut msg: Message,
        token: Option<SendToken>,
        kind: OutboundKind,
        binding: Option<&BindingInfo>,
        request: Option<&Message>,
        note: Option<&AuthNote>,
        now: Now,
    ) {
        let ctx = OutboundCall {
            kind,
            binding,
            request,
            note,
            now,
        };
        outbound_stage(
            &self.cfg,
            &mut *self.auth,
            &self.registrar,
            to,
            &mut msg,
            ctx,
        );
        self.actions.push_back(Action::Send {
            to,
            message: msg,
            token,
        });
    }

    /// [`Edge::emit`], returning a copy of what was sent (kept by transactions that retransmit
    /// it or build an ACK or CANCEL from it).
    #[allow(clippy::too_many_arguments)]
    fn emit_kept(
        &mut self,
        to: Target,
        msg: Message,
        token: Option<SendToken>,
        kind: OutboundKind,
        binding: Option<&BindingInfo>,
        now: Now,
    ) -> Message {
        let call = OutboundCall {
            kind,
            binding,
            request: None,
            note: None,
            now,
        };
        let mut msg = msg;
        outbound_stage(
            &self.cfg,
            &mut *self.auth,
            &self.registrar,
            to,
            &mut msg,
            call,
        );
        let kept = msg.clone();
        self.actions.push_back(Action::Send {
            to,
            message: msg,
            token,
        });
        kept
    }

    /// Our Via for a request leaving over `transport`; `extra` is appended after `rport`.
    fn our_via(&self, transport: Transport, branch: &str, extra: &str) -> String {
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

    /// A response that arrives after its transaction answered: forwarded upstream as is, with the
    /// transaction's authentication note, so an authenticated client still gets it signed.
    fn emit_late_response(&mut self, up: Flow, msg: Message, note: Option<AuthNote>, now: Now) {
        self.emit(
            Target::Flow(up),
            msg,
            None,
            OutboundKind::Response,
            None,
            None,
            note.as_ref(),
            now,
        );
    }

    /// Answer `req` without a transaction.
    fn respond_stateless(
        &mut self,
        req: &Message,
        flow: Flow,
        code: u16,
        extra: &[(&str, String)],
        now: Now,
    ) {
        let tag = self.ids.unique();
        if let Some(resp) = build_response(req, code, reason_phrase(code), Some(&tag), extra) {
            self.emit(
                Target::Flow(flow),
                resp,
                None,
                OutboundKind::Response,
                None,
                Some(req),
                None,
                now,
            );
        }
    }

    // ------------------------------------------------------------------------------------------
    // Inbound

    /// Process one message from the network.
    pub fn handle_inbound(&mut self, inbound: Inbound, now: Now) {
        let Inbound { message, flow } = inbound;
        let from_client = self.is_client(&flow);
        if message.is_request() {
            self.on_request(message, flow, from_client, now);
        } else {
            self.on_response(message, flow, from_client, now);
        }
        self.prune_stale_timers();
    }

    fn on_request(&mut self, mut msg: Message, flow: Flow, from_client: bool, now: Now) {
        let method = msg.method().unwrap_or("").to_owned();
        if msg.validate().is_err() || top_via(&msg).and_then(Via::parse).is_none() {
            if method == "ACK" {
                self.report(Report::Dropped(DropReason::Invalid));
            } else {
                self.respond_stateless(&msg, flow, 400, &[], now);
            }
            return;
        }
        stamp_via(&mut msg, &flow);
        // Owned: the authentication stage may edit the message.
        let Some(top) = top_via(&msg).map(str::to_owned) else {
            return;
        };
        let Some(via) = Via::parse(&top) else { return };
        // ACK and CANCEL match the INVITE transaction; every key below is this one.
        let ack_or_cancel = matches!(method.as_str(), "ACK" | "CANCEL");
        let txn_method = if ack_or_cancel { "INVITE" } else { &method };
        let mut key = server_key(&via, txn_method, &msg);
        // Authentication comes after transaction matching: a retransmission repeats the last
        // response without being judged again (its signature's cnum or its Digest nonce count was
        // consumed by the original), and the ACK or CANCEL of a transaction the client opened over
        // this same flow belongs to a request that was authenticated already (CANCEL can never be
        // challenged, RFC 3261 §22.1).
        let mut note = None;
        let belongs_to_open_transaction = ack_or_cancel
            && self.server.get(&key).is_some_and(|st| {
                st.upstream.remote == flow.remote && st.upstream.transport == flow.transport
            });
        let retransmission = !ack_or_cancel && self.server.contains_key(&key);
        if from_client && !belongs_to_open_transaction && !retransmission {
            let binding = self.registrar.flow_identity(&flow).cloned();
            let ctx = InboundContext {
                flow,
                now,
                flow_binding: binding.as_ref(),
            };
            match self.auth.inbound(&mut msg, &ctx) {
                InboundVerdict::Continue { note: n } => note = n,
                InboundVerdict::Respond(resp) => {
                    self.emit(
                        Target::Flow(flow),
                        resp,
                        None,
                        OutboundKind::Response,
                        binding.as_ref(),
                        Some(&msg),
                        None,
                        now,
                    );
                    return;
                }
                InboundVerdict::Drop => {
                    self.report(Report::Dropped(DropReason::Auth));
                    return;
                }
            }
            // An RFC 2543 key is made of headers the stage may have edited: match on the
            // request as it is now (a branch key depends on the Via copy only).
            if rfc3261_branch(&via).is_none() {
                key = server_key(&via, txn_method, &msg);
            }
        }
        match method.as_str() {
            "ACK" => {
                self.on_ack(msg, key, flow, now);
                return;
            }
            "CANCEL" => {
                self.on_cancel(msg, key, flow, now);
                return;
            }
            _ => {}
        }
        if let Some(st) = self.server.get(&key) {
            // Retransmission: repeat the last response, if any (RFC 3261 §17.2.1, §17.2.2);
            // after an INVITE 2xx it is absorbed (RFC 6026: the UAS retransmits its 2xx itself).
            let resend = st
                .last_response
                .as_deref()
                .filter(|_| st.state != ServerState::Accepted)
                .and_then(resend_copy)
                .map(|r| (st.upstream, r));
            if let Some((up, resp)) = resend {
                self.actions.push_back(Action::Send {
                    to: Target::Flow(up),
                    message: resp,
                    token: None,
                });
            }
            self.report(Report::Dropped(DropReason::Retransmission));
            return;
        }
        if self.server.len() >= self.cfg.max_transactions {
            self.report(Report::Limit(LimitKind::Transactions));
            let retry = self.cfg.retry_after.as_secs().to_string();
            self.respond_stateless(&msg, flow, 503, &[("Retry-After", retry)], now);
            return;
        }
        let max_forwards = msg
            .header("Max-Forwards")
            .and_then(|m| m.trim().parse::<u32>().ok())
            .unwrap_or(70);
        let ruri_local = msg.request_uri().and_then(SipUri::parse).is_some_and(|u| {
            u.user.is_none() && self.cfg.local.is_local(u.host, u.port, u.transport())
        });
        let addressed_to_us = ruri_local && msg.header("Route").is_none();
        if method == "OPTIONS" && addressed_to_us {
            let allow = ("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE, REGISTER, SUBSCRIBE, NOTIFY, REFER, INFO, UPDATE, PRACK".to_owned());
            self.local_transaction(key, msg, flow, from_client, note, 200, &[allow], now);
            return;
        }
        if max_forwards == 0 {
            self.local_transaction(key, msg, flow, from_client, note, 483, &[], now);
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
            if theirs == lh.get_or_insert_with(|| loop_hash(&msg)).as_str() {
                looped = true;
                break;
            }
        }
        if looped {
            self.local_transaction(key, msg, flow, from_client, note, 482, &[], now);
            return;
        }
        if method == "REGISTER"
            && self.cfg.mode == Mode::Registrar
            && (ruri_local || self.serves_ruri(&msg))
        {
            let outcome = self.registrar.register(&msg, flow, now.mono);
            self.report_binding_changes();
            match outcome {
                RegisterOutcome::Ok { contacts } => {
                    // The granted lifetime of this request's own binding also goes into an
                    // Expires header: Lync-family clients read only that (pidgin-sipe hangs
                    // without it, notes §9).
                    let own = msg
                        .header("Contact")
                        .and_then(|c| sagw_sip::parse_name_addr(c).ok())
                        .map(|na| na.uri.to_owned());
                    let granted = own.and_then(|uri| {
                        contacts.iter().find_map(|c| {
                            let na = sagw_sip::parse_name_addr(c).ok()?;
                            (na.uri == uri).then(|| na.param("expires").map(str::to_owned))?
                        })
                    });
                    let mut extra: Vec<(&str, String)> =
                        contacts.into_iter().map(|c| ("Contact", c)).collect();
                    if let Some(e) = granted {
                        extra.push(("Expires", e));
                    }
                    self.local_transaction(key, msg, flow, from_client, note, 200, &extra, now);
                }
                RegisterOutcome::Error(code, _, extra) => {
                    self.local_transaction(key, msg, flow, from_client, note, code, &extra, now);
                }
            }
            return;
        }

        // Proxy it.
        let lh = lh.unwrap_or_else(|| loop_hash(&msg));
        let mut forward = msg.clone();
        let dest = self.route(&mut forward, &flow, from_client, now.mono);
        let st = ServerTx::new(
            method.clone(),
            msg,
            flow,
            from_client,
            note,
            lh,
            now.mono,
            self.cfg.timers.t1,
        );
        self.server.insert(key.clone(), Box::new(st));
        if method == "INVITE" {
            self.respond(&key, 100, &[], now);
        }
        match dest {
            Ok(Dest::Flow(f, binding)) => {
                self.forward(&key, forward, Target::Flow(f), binding, None, now);
            }
            Ok(Dest::Fork(bindings)) => {
                for (f, info) in bindings {
                    self.forward(
                        &key,
                        forward.clone(),
                        Target::Flow(f),
                        Some(info),
                        None,
                        now,
                    );
                }
            }
            Ok(Dest::Addr(transport, addr)) => {
                self.forward(
                    &key,
                    forward,
                    Target::Addr { transport, addr },
                    None,
                    None,
                    now,
                );
            }
            Ok(Dest::Hops) => {
                if let Some(st) = self.server.get_mut(&key) {
                    st.hops = (0..self.cfg.next_hops.len()).collect();
                    st.forward = Some(forward);
                }
                self.try_next_hop(&key, Failure::Transport, now);
            }
            Err(code) => self.respond(&key, code, &[], now),
        }
    }

    /// Create a server transaction answered at once (so retransmissions get the same answer).
    #[allow(clippy::too_many_arguments)]
    fn local_transaction(
        &mut self,
        key: String,
        msg: Message,
        flow: Flow,
        from_client: bool,
        note: Option<AuthNote>,
        code: u16,
        extra: &[(&str, String)],
        now: Now,
    ) {
        let st = ServerTx::new(
            msg.method().unwrap_or("").to_owned(),
            msg,
            flow,
            from_client,
            note,
            String::new(),
            now.mono,
            self.cfg.timers.t1,
        );
        self.server.insert(key.clone(), Box::new(st));
        self.respond(&key, code, extra, now);
    }

    fn serves_ruri(&self, msg: &Message) -> bool {
        msg.request_uri()
            .and_then(SipUri::parse)
            .is_some_and(|u| self.serves(&u))
    }

    fn serves(&self, uri: &SipUri<'_>) -> bool {
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
    fn route(
        &mut self,
        msg: &mut Message,
        inflow: &Flow,
        from_client: bool,
        now: Instant,
    ) -> Result<Dest, u16> {
        let mut token_flow = None;
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
            if let Some(u) = uri.user
                && flow_token_claim(u)
                    .is_some_and(|f| !(f.id == inflow.id && f.remote == inflow.remote))
                && let Some(f) = self.ids.parse_flow_token(u)
            {
                token_flow = Some(f);
            }
            pop_route(msg);
        }
        if let Some(f) = token_flow {
            let binding = self.registrar.flow_identity(&f).cloned();
            return Ok(Dest::Flow(f, binding));
        }
        if let Some(r) = top_route(msg) {
            let next = parse_name_addr(r).ok().and_then(|na| {
                let uri = SipUri::parse(na.uri)?;
                let t = uri.transport().unwrap_or(Transport::Udp);
                Some((t, uri.socket_addr(t)?))
            });
            return match next {
                Some((t, addr)) => Ok(Dest::Addr(t, addr)),
                None if !self.cfg.next_hops.is_empty() => Ok(Dest::Hops),
                None => Err(404),
            };
        }
        let ruri = msg.request_uri().unwrap_or("").to_owned();
        let Some(uri) = SipUri::parse(&ruri) else {
            return Err(416);
        };
        if let Some(b) = self.registrar.lookup_contact(&ruri, now) {
            return Ok(Dest::Flow(b.flow, Some(b.info.clone())));
        }
        let local_lookup = match self.cfg.mode {
            Mode::Registrar => self.serves(&uri),
            Mode::Edge => !from_client,
        };
        if local_lookup {
            let bindings: Vec<(Flow, BindingInfo)> = self
                .registrar
                .lookup(&uri.aor(), now)
                .into_iter()
                .map(|b| (b.flow, b.info.clone()))
                .collect();
            match bindings.len() {
                0 => {}
                1 => {
                    let (f, info) = bindings.into_iter().next().unzip();
                    if let Some(f) = f {
                        return Ok(Dest::Flow(f, info));
                    }
                }
                _ => return Ok(Dest::Fork(bindings)),
            }
        }
        if self.cfg.local.is_local(uri.host, uri.port, uri.transport()) && uri.user.is_none() {
            return Err(404);
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

    /// `<sip:[user@]host:port;transport=t;lr[extra]>`, for Record-Route and Path.
    fn our_uri(&self, transport: Transport, user: Option<&str>, extra: &str) -> String {
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
    fn forward(
        &mut self,
        key: &str,
        mut out: Message,
        target: Target,
        binding: Option<BindingInfo>,
        hop: Option<usize>,
        now: Now,
    ) {
        let Some(st) = self.server.get(key) else {
            return;
        };
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
        let out_transport = target.transport();
        let in_token = self.ids.flow_token(&upstream);
        let out_token = match target {
            Target::Flow(f) => Some(self.ids.flow_token(&f)),
            Target::Addr { .. } => None,
        };
        let in_dialog = out.to().and_then(|t| t.tag()).is_some();
        if !in_dialog && DIALOG_METHODS.contains(&method.as_str()) {
            // RFC 5658 double Record-Route: one entry per side, each with that side's transport
            // and, for a client side, the token of its flow.
            let rr_in = self.our_uri(upstream.transport, Some(&in_token), "");
            let rr_out = self.our_uri(out_transport, out_token.as_deref(), "");
            push_on_top(&mut out, "Record-Route", &rr_in);
            push_on_top(&mut out, "Record-Route", &rr_out);
        }
        if method == "REGISTER" && self.cfg.mode == Mode::Edge && from_client {
            let path = self.our_uri(out_transport, Some(&in_token), ";ob");
            push_on_top(&mut out, "Path", &path);
        }
        let branch = self.ids.branch(&lh);
        let mut sgf = String::with_capacity(5 + in_token.len());
        sgf.push_str(";sgf=");
        sgf.push_str(&in_token);
        let via = self.our_via(out_transport, &branch, &sgf);
        push_via(&mut out, &via);
        let token = SendToken(branch.clone());
        let sent = self.emit_kept(
            target,
            out,
            Some(token),
            OutboundKind::Request,
            binding.as_ref(),
            now,
        );
        let t1 = self.cfg.timers.t1;
        let ct = ClientTx {
            server_key: Some(key.to_owned()),
            method: method.clone(),
            request: sent,
            target,
            binding,
            state: ClientState::Trying,
            epoch: 0,
            interval: t1,
            cancel_pending: false,
            hop,
            ack: None,
            timer_c_fired: false,
        };
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
        if let Some(st) = self.server.get_mut(key) {
            st.branches.push(branch);
        }
    }

    /// Forward to the next next hop that is not known to be down; 503 when none is left.
    fn try_next_hop(&mut self, key: &str, last_failure: Failure, now: Now) {
        loop {
            let Some(st) = self.server.get_mut(key) else {
                return;
            };
            let Some(i) = st.hops.pop_front() else {
                let code = match last_failure {
                    Failure::Transport => 503,
                    Failure::Timeout => 408,
                };
                let extra = if code == 503 {
                    vec![("Retry-After", self.cfg.retry_after.as_secs().to_string())]
                } else {
                    Vec::new()
                };
                self.respond(key, code, &extra, now);
                return;
            };
            let down = self
                .hop_down
                .get(i)
                .copied()
                .flatten()
                .is_some_and(|until| until > now.mono);
            if down {
                continue;
            }
            let Some(NextHop { transport, addr }) = self.cfg.next_hops.get(i).copied() else {
                continue;
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
            self.forward(
                key,
                msg,
                Target::Addr { transport, addr },
                None,
                Some(i),
                now,
            );
            return;
        }
    }

    /// Send a response generated here for server transaction `key`.
    fn respond(&mut self, key: &str, code: u16, extra: &[(&str, String)], now: Now) {
        let Some(st) = self.server.get_mut(key) else {
            return;
        };
        if st.state != ServerState::Proceeding {
            return;
        }
        ensure_to_tag(st, &mut self.ids, code);
        let tag = st.to_tag.as_deref();
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
    fn send_upstream(&mut self, key: &str, mut resp: Message, now: Now) {
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
            binding: None,
            request: st.request.as_ref(),
            note: st.note.as_ref(),
            now,
        };
        outbound_stage(
            &self.cfg,
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
        self.actions.push_back(Action::Send {
            to: Target::Flow(upstream),
            message: resp,
            token: None,
        });
        if code < 200 {
            return;
        }
        let timers = self.cfg.timers;
        let method = st.method.clone();
        st.epoch += 1;
        let epoch = st.epoch;
        // Final: what is left to do (absorb retransmissions, match the ACK or a CANCEL, pass
        // on a late fork's 2xx) needs neither the request nor the fail-over state.
        st.request = None;
        st.forward = None;
        st.best = None;
        st.hops = VecDeque::new();
        let retransmit = if method == "INVITE" && code >= 300 {
            st.state = ServerState::Completed;
            // Timer G (unreliable only) until the ACK, Timer H as the limit.
            (!reliable).then_some(timers.t1)
        } else if method == "INVITE" {
            st.state = ServerState::Accepted;
            None
        } else {
            st.state = ServerState::Completed;
            None
        };
        let cleanup = if method != "INVITE" && reliable {
            Duration::ZERO
        } else {
            timers.timeout()
        };
        self.report(Report::Transaction {
            method,
            status: code,
            elapsed: now.mono.saturating_duration_since(started),
        });
        if let Some(iv) = retransmit {
            self.schedule(
                later(now.mono, iv),
                TimerKind::ServerRetransmit(key.to_owned(), epoch),
            );
        }
        if cleanup.is_zero() {
            self.server.remove(key);
        } else {
            self.schedule(
                later(now.mono, cleanup),
                TimerKind::ServerCleanup(key.to_owned(), epoch),
            );
        }
    }

    fn on_ack(&mut self, mut msg: Message, key: String, flow: Flow, now: Now) {
        if let Some(st) = self.server.get_mut(&key)
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
                self.server.remove(&key);
            } else {
                self.schedule(
                    later(now.mono, linger),
                    TimerKind::ServerCleanup(key, epoch),
                );
            }
            return;
        }
        if self.server.contains_key(&key) {
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
        let target = match self.route(&mut msg, &flow, from_client, now.mono) {
            Ok(Dest::Flow(f, _)) => Target::Flow(f),
            // A 2xx ACK carries our Route (Record-Route was added): an AOR lookup here is a
            // peer without a route set; the most recent binding is the best guess.
            Ok(Dest::Fork(b)) => match b.first() {
                Some((f, _)) => Target::Flow(*f),
                None => {
                    self.report(Report::Dropped(DropReason::Stray));
                    return;
                }
            },
            Ok(Dest::Addr(transport, addr)) => Target::Addr { transport, addr },
            Ok(Dest::Hops) => match self.first_live_hop(now.mono) {
                Some(h) => Target::Addr {
                    transport: h.transport,
                    addr: h.addr,
                },
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
        set_max_forwards(&mut msg, (mf - 1).min(70));
        let branch = self.ids.stateless_branch(&lh, &incoming);
        let t = target.transport();
        let via = self.our_via(t, &branch, "");
        push_via(&mut msg, &via);
        self.emit(
            target,
            msg,
            None,
            OutboundKind::Request,
            None,
            None,
            None,
            now,
        );
    }

    fn first_live_hop(&self, now: Instant) -> Option<NextHop> {
        self.cfg
            .next_hops
            .iter()
            .enumerate()
            .find(|(i, _)| {
                self.hop_down
                    .get(*i)
                    .copied()
                    .flatten()
                    .is_none_or(|u| u <= now)
            })
            .map(|(_, h)| *h)
    }

    fn on_cancel(&mut self, msg: Message, key: String, flow: Flow, now: Now) {
        let Some(st) = self.server.get_mut(&key) else {
            self.respond_stateless(&msg, flow, 481, &[], now);
            return;
        };
        ensure_to_tag(st, &mut self.ids, 200);
        let tag = st.to_tag.clone();
        let proceeding = st.state == ServerState::Proceeding;
        let no_branches = st.branches.is_empty();
        let note = st.note.clone();
        if let Some(ok) = build_response(&msg, 200, "OK", tag.as_deref(), &[]) {
            self.emit(
                Target::Flow(flow),
                ok,
                None,
                OutboundKind::Response,
                None,
                Some(&msg),
                note.as_ref(),
                now,
            );
        }
        if !proceeding {
            return;
        }
        // Stop fail-over: a cancelled request is not tried elsewhere.
        if let Some(st) = self.server.get_mut(&key) {
            st.hops.clear();
        }
        if no_branches {
            self.respond(&key, 487, &[], now);
        } else {
            self.cancel_branches(&key, None, now);
        }
    }

    /// CANCEL every unfinished branch of server transaction `sk` but `except` (RFC 3261
    /// §16.10; a branch with no provisional response yet is cancelled when one arrives).
    fn cancel_branches(&mut self, sk: &str, except: Option<&str>, now: Now) {
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

    /// True when a branch of `sk` other than `except` has no final response yet.
    fn other_pending(&self, sk: &str, except: &str) -> bool {
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

    /// A branch ended with a non-2xx final response (received, or made up for a timeout or a
    /// dead flow): answer now, or keep the best one until the other branches end (RFC 3261
    /// §16.7 steps 5-6; a 6xx ends the search and cancels the rest).
    fn branch_final(&mut self, sk: &str, ct_key: &str, resp: Message, now: Now) {
        let code = resp.status_code().unwrap_or(500);
        let pending = self.other_pending(sk, ct_key);
        if code >= 600 && pending {
            self.cancel_branches(sk, Some(ct_key), now);
        }
        let Some(st) = self.server.get_mut(sk) else {
            return;
        };
        let rank = |c: u16| if c >= 600 { 0 } else { c };
        let better = st
            .best
            .as_ref()
            .is_none_or(|b| rank(code) < rank(b.status_code().unwrap_or(699)));
        if better {
            st.best = Some(resp);
        }
        if pending && code < 600 {
            return;
        }
        if let Some(best) = st.best.take() {
            self.send_upstream(sk, best, now);
        }
    }

    /// [`Edge::branch_final`] with a response of our own.
    fn branch_failed(&mut self, sk: &str, ct_key: &str, code: u16, now: Now) {
        let ids = &mut self.ids;
        let resp = self.server.get_mut(sk).and_then(|st| {
            ensure_to_tag(st, ids, code);
            build_response(
                st.request.as_ref()?,
                code,
                reason_phrase(code),
                st.to_tag.as_deref(),
                &[],
            )
        });
        if let Some(resp) = resp {
            self.branch_final(sk, ct_key, resp, now);
        }
    }

    fn send_cancel(&mut self, ct_key: &str, now: Now) {
        let Some(ct) = self.client.get(ct_key) else {
            return;
        };
        let Some(cancel) = build_hop_request(&ct.request, "CANCEL", None) else {
            return;
        };
        let target = ct.target;
        let binding = ct.binding.clone();
        let key = format!("{ct_key}|CANCEL");
        if self.client.contains_key(&key) {
            return;
        }
        let sent = self.emit_kept(
            target,
            cancel,
            None,
            OutboundKind::Request,
            binding.as_ref(),
            now,
        );
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
            Box::new(ClientTx {
                server_key: None,
                method: "CANCEL".into(),
                request: sent,
                target,
                binding,
                state: ClientState::Trying,
                epoch: 0,
                interval: t1,
                cancel_pending: false,
                hop: None,
                ack: None,
                timer_c_fired: false,
            }),
        );
    }

    fn on_response(&mut self, mut msg: Message, flow: Flow, from_client: bool, now: Now) {
        if from_client {
            let binding = self.registrar.flow_identity(&flow).cloned();
            let ctx = InboundContext {
                flow,
                now,
                flow_binding: binding.as_ref(),
            };
            if !matches!(
                self.auth.inbound(&mut msg, &ctx),
                InboundVerdict::Continue { .. }
            ) {
                self.report(Report::Dropped(DropReason::Auth));
                return;
            }
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
        let ct_key = if method == "CANCEL" {
            format!("{branch}|CANCEL")
        } else {
            branch
        };
        let Some(ct) = self.client.get_mut(&ct_key) else {
            if method == "CANCEL" {
                self.report(Report::Dropped(DropReason::Stray));
                return;
            }
            // No transaction (e.g. a retransmitted 2xx after it ended): forward statelessly
            // by the flow token in our Via, else by the next Via.
            pop_via(&mut msg);
            let target = match sgf.and_then(|t| self.ids.parse_flow_token(&t)) {
                Some(f) => Some(Target::Flow(f)),
                None => top_via(&msg).and_then(|v| {
                    let v = Via::parse(v)?;
                    Some(Target::Addr {
                        transport: v.transport()?,
                        addr: v.response_addr()?,
                    })
                }),
            };
            match target {
                Some(t) => {
                    self.emit(t, msg, None, OutboundKind::Response, None, None, None, now);
                }
                None => self.report(Report::Dropped(DropReason::ResponseUnroutable)),
            }
            return;
        };
        if ct.method == "CANCEL" {
            if code >= 200 {
                ct.state = ClientState::Completed;
                ct.epoch += 1;
                self.client.remove(&ct_key);
            }
            return;
        }
        let server_key = ct.server_key.clone();
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
                        TimerKind::ClientTimeout(ct_key.clone(), epoch),
                    );
                } else {
                    self.schedule(
                        later(now.mono, self.cfg.timers.timeout()),
                        TimerKind::ClientTimeout(ct_key.clone(), epoch),
                    );
                }
                if cancel {
                    self.send_cancel(&ct_key, now);
                }
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
                && let Some((up, note)) = self.server.get(&sk).map(|s| (s.upstream, s.note.clone()))
            {
                pop_via(&mut msg);
                self.emit_late_response(up, msg, note, now);
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
        let binding = ack.as_ref().and_then(|_| ct.binding.clone());
        if let Some(ack) = ack {
            let sent = self.emit_kept(
                target,
                ack,
                None,
                OutboundKind::Request,
                binding.as_ref(),
                now,
            );
            if let Some(ct) = self.client.get_mut(&ct_key) {
                ct.ack = Some(sent);
            }
        }
        let linger = if invite || !target.transport().is_reliable() {
            self.cfg.timers.timeout()
        } else {
            Duration::ZERO
        };
        if linger.is_zero() {
            self.client.remove(&ct_key);
        } else {
            self.schedule(
                later(now.mono, linger),
                TimerKind::ClientCleanup(ct_key.clone(), epoch),
            );
        }
        let hop = self.client.get(&ct_key).and_then(|c| c.hop);
        if code == 503
            && let (Some(i), Some(sk)) = (hop, server_key.as_deref())
            && self
                .server
                .get(sk)
                .is_some_and(|s| s.state == ServerState::Proceeding && !s.hops.is_empty())
        {
            // RFC 3263 §4.3: a 503 from a next hop means "try the next one".
            self.mark_down(i, now.mono);
            self.try_next_hop(sk, Failure::Transport, now);
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
                self.cancel_branches(&sk, Some(&ct_key), now);
            } else if still_open {
                self.branch_final(&sk, &ct_key, msg, now);
            } else if invite
                && (200..300).contains(&code)
                && let Some((up, note)) = self.server.get(&sk).map(|s| (s.upstream, s.note.clone()))
            {
                // An INVITE 2xx after we already answered (another fork's 2xx, or after a
                // timeout): 2xx responses to INVITE are end to end, the caller sorts them out.
                self.emit_late_response(up, msg, note, now);
            }
        }
    }

    // ------------------------------------------------------------------------------------------
    // Timers and failures

    /// Process every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Now) {
        self.registrar.expire(now.mono);
        self.report_binding_changes();
        // The heap and the clean-up buckets in time order (a tie goes to the heap).
        loop {
            let heap = self.timers.peek().map(|Reverse(e)| e.at);
            let bucket = self.cleanups.first_key_value().map(|(at, _)| *at);
            match (heap, bucket) {
                (Some(h), b) if h <= now.mono && b.is_none_or(|b| h <= b) => {
                    if let Some(Reverse(entry)) = self.timers.pop() {
                        self.fire(entry.kind, now);
                    }
                }
                (_, Some(b)) if b <= now.mono => {
                    if let Some((_, kinds)) = self.cleanups.pop_first() {
                        for kind in kinds {
                            self.fire(kind, now);
                        }
                    }
                }
                _ => break,
            }
        }
        self.prune_stale_timers();
    }

    fn fire(&mut self, kind: TimerKind, now: Now) {
        let timers = self.cfg.timers;
        match kind {
            TimerKind::ClientRetransmit(key, epoch) => {
                let Some(ct) = self.client.get_mut(&key) else {
                    return;
                };
                if ct.epoch != epoch || ct.state == ClientState::Completed {
                    return;
                }
                if ct.method == "INVITE" && ct.state != ClientState::Trying {
                    return;
                }
                ct.interval = if ct.method == "INVITE" {
                    ct.interval.saturating_mul(2)
                } else {
                    ct.interval.saturating_mul(2).min(timers.t2)
                };
                let next = later(now.mono, ct.interval);
                self.actions.push_back(Action::Send {
                    to: ct.target,
                    message: ct.request.clone(),
                    token: None,
                });
                self.schedule(next, TimerKind::ClientRetransmit(key, epoch));
            }
            TimerKind::ClientTimeout(key, epoch) => {
                let Some(ct) = self.client.get(&key) else {
                    return;
                };
                if ct.epoch != epoch || ct.state == ClientState::Completed {
                    return;
                }
                let state = ct.state;
                let invite = ct.method == "INVITE";
                let cancel = ct.method == "CANCEL";
                let hop = ct.hop;
                let sk = ct.server_key.clone();
                if cancel {
                    self.client.remove(&key);
                    return;
                }
                let timer_c_fired = ct.timer_c_fired;
                if invite && state == ClientState::Proceeding && !timer_c_fired {
                    // Timer C (RFC 3261 §16.8): cancel the branch; its 487 is its final
                    // response. Keep the client transaction to ACK it, and give up on it if
                    // even that never comes.
                    self.send_cancel(&key, now);
                    if let Some(ct) = self.client.get_mut(&key) {
                        ct.epoch += 1;
                        ct.timer_c_fired = true;
                        let epoch = ct.epoch;
                        let at = later(now.mono, self.cfg.timers.timeout());
                        self.schedule(at, TimerKind::ClientTimeout(key, epoch));
                    }
                    return;
                }
                self.client.remove(&key);
                if state == ClientState::Trying
                    && let Some(i) = hop
                {
                    self.mark_down(i, now.mono);
                }
                match (sk, hop) {
                    (Some(sk), Some(_)) => self.try_next_hop(&sk, Failure::Timeout, now),
                    (Some(sk), None) => self.branch_failed(&sk, &key, 408, now),
                    (None, _) => {}
                }
            }
            TimerKind::ClientCleanup(key, epoch) => {
                if self.client.get(&key).is_some_and(|c| c.epoch == epoch) {
                    self.client.remove(&key);
                }
            }
            TimerKind::ServerRetransmit(key, epoch) => {
                let Some(st) = self.server.get_mut(&key) else {
                    return;
                };
                if st.epoch != epoch || st.state != ServerState::Completed {
                    return;
                }
                st.interval = st.interval.saturating_mul(2).min(timers.t2);
                let next = later(now.mono, st.interval);
                if let Some(r) = st.last_response.as_deref().and_then(resend_copy) {
                    self.actions.push_back(Action::Send {
                        to: Target::Flow(st.upstream),
                        message: r,
                        token: None,
                    });
                }
                self.schedule(next, TimerKind::ServerRetransmit(key, epoch));
            }
            TimerKind::ServerCleanup(key, epoch) => {
                if self.server.get(&key).is_some_and(|s| s.epoch == epoch) {
                    self.server.remove(&key);
                }
            }
        }
    }

    fn mark_down(&mut self, hop: usize, now: Instant) {
        if let Some(slot) = self.hop_down.get_mut(hop) {
            *slot = Some(later(now, self.cfg.retry_after));
        }
    }

    /// The driver could not deliver a message sent with `token` (connection refused or reset,
    /// flow gone): fail over to the next hop, or answer 503 (next hops) / 480 (a client's flow).
    pub fn send_failed(&mut self, token: &SendToken, now: Now) {
        self.fail_send(token, now);
        self.prune_stale_timers();
    }

    fn fail_send(&mut self, token: &SendToken, now: Now) {
        let Some(ct) = self.client.get(&token.0) else {
            return;
        };
        if ct.state == ClientState::Completed {
            return;
        }
        let hop = ct.hop;
        let sk = ct.server_key.clone();
        self.client.remove(&token.0);
        let Some(sk) = sk else { return };
        match hop {
            Some(i) => {
                self.mark_down(i, now.mono);
                self.try_next_hop(&sk, Failure::Transport, now);
            }
            None => self.branch_failed(&sk, &token.0, 480, now),
        }
    }
}

/// A response this proxy sent before, parsed again to be sent again. It was serialised from a
/// `Message` and is our own, so it is parsed without size limits: the configured limits (which
/// may exceed the parser's defaults) were applied to what it was built from.
fn resend_copy(bytes: &[u8]) -> Option<Message> {
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
fn ensure_to_tag(st: &mut ServerTx, ids: &mut Ids, code: u16) {
    if code > 100 && st.to_tag.is_none() {
        st.to_tag = Some(ids.unique());
    }
}

/// Set Max-Forwards to `n`.
fn set_max_forwards(msg: &mut Message, n: u32) {
    let mut v = String::with_capacity(3);
    push_decimal(&mut v, u64::from(n));
    msg.set_header("Max-Forwards", &v);
}

/// True when `flow` belongs to a client rather than a next hop or trusted server.
fn is_client(cfg: &EdgeConfig, flow: &Flow) -> bool {
    !(cfg
        .next_hops
        .iter()
        .any(|h| h.addr == flow.remote && h.transport == flow.transport)
        || cfg.trusted_peers.contains(&flow.remote.ip()))
}

/// What the outbound stage is told about a message besides its flow.
#[derive(Clone, Copy)]
struct OutboundCall<'a> {
    kind: OutboundKind,
    binding: Option<&'a BindingInfo>,
    request: Option<&'a Message>,
    note: Option<&'a AuthNote>,
    now: Now,
}

/// Run the outbound stage on a message to a client (nothing for a next hop). A function of the
/// fields it needs rather than a method, so that a caller can hand it a request borrowed from
/// the transaction table instead of a copy.
fn outbound_stage(
    cfg: &EdgeConfig,
    auth: &mut dyn ClientAuth,
    registrar: &Registrar,
    to: Target,
    msg: &mut Message,
    call: OutboundCall<'_>,
) {
    if let Target::Flow(flow) = to
        && is_client(cfg, &flow)
    {
        let binding = call.binding.or_else(|| registrar.flow_identity(&flow));
        let ctx = OutboundContext {
            flow,
            now: call.now,
            kind: call.kind,
            binding,
            request: call.request,
            note: call.note,
        };
        auth.outbound(msg, &ctx);
    }
}

/// RFC 3261 §18.2.1 and RFC 3581: record where the request really came from in the top Via.
fn stamp_via(msg: &mut Message, flow: &Flow) {
    let Some(top) = top_via(msg) else { return };
    let Some(via) = Via::parse(top) else { return };
    let ip = flow.remote.ip();
    let sent_ip = crate::uri::host_ip(via.host);
    let needs_received = sent_ip != Some(ip);
    let has_rport = via.param("rport").is_some();
    if !needs_received && !has_rport {
        return;
    }
    // Written straight into one String: with clients behind NAT this runs for every request.
    let mut new = String::with_capacity(top.len() + 48);
    new.push_str("SIP/2.0/");
    new.push_str(via.transport);
    new.push(' ');
    new.push_str(via.host);
    if let Some(p) = via.port {
        new.push(':');
        push_decimal(&mut new, u64::from(p));
    }
    for p in via.params.split(';').map(str::trim).filter(|p| {
        let name = p.split('=').next().unwrap_or("").trim();
        !p.is_empty()
            && !name.eq_ignore_ascii_case("received")
            && !name.eq_ignore_ascii_case("rport")
    }) {
        new.push(';');
        new.push_str(p);
    }
    new.push_str(";received=");
    // Display of an IpAddr is the only formatting left here (exact canonical text).
    let _ = write!(new, "{ip}");
    if has_rport {
        new.push_str(";rport=");
        push_decimal(&mut new, u64::from(flow.remote.port()));
    }
    set_top_via(msg, &new);
}
