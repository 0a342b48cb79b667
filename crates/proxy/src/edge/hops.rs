//! The next-hop set: each target's health (down after N failures in a row, up again on the first
//! answer), active OPTIONS probing (Kamailio's dispatcher does the same), and requests parked
//! while the driver resolves a host name for them (RFC 3263).
//!
//! Sans-IO like the rest of the core: probes are client transactions of their own whose timers
//! run through [`Edge::poll_timeout`] / [`Edge::handle_timeout`]; a name is resolved by the
//! driver when the core emits [`Action::Resolve`], and the targets come back through
//! [`Edge::resolved`].

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sagw_sip::Message;

use super::Edge;
use super::routing::BranchTo;
use super::transaction::{ClientState, HopFailure};
use crate::Map;
use crate::config::{NextHop, ProbeConfig};
use crate::types::{
    Action, Flow, HopHealth, HopStatus, Now, Report, ResolveId, ResolveRequest, Target, Transport,
    later,
};

/// What a probe or a transaction said about a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// It answered (any final response to a probe but 408 and 503; any response but 503 to a
    /// request).
    Alive,
    /// No answer in time, the connection failed, or 503/408.
    Failed,
}

/// The health state machine of one target.
///
/// With probing, a target is down after `failures_down` failures in a row (one lost probe over
/// UDP is not an outage) and stays down until something answers: the probes find out when it is
/// back, within one probe interval. Without probing nothing would find out, so one failure puts
/// it aside for `retry_after` and it is tried again after that (the behaviour before probing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tracker {
    health: HopHealth,
    failures: u32,
    last_ok: Option<Instant>,
    /// Without probing: when a down target is tried again.
    retry_at: Option<Instant>,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker {
            health: HopHealth::Up,
            failures: 0,
            last_ok: None,
            retry_at: None,
        }
    }
}

impl Tracker {
    /// Record an outcome; true when the health changed.
    pub(crate) fn record(
        &mut self,
        outcome: Outcome,
        now: Instant,
        probe: &ProbeConfig,
        retry_after: Duration,
    ) -> bool {
        let before = self.health;
        match outcome {
            Outcome::Alive => {
                self.health = HopHealth::Up;
                self.failures = 0;
                self.last_ok = Some(now);
                self.retry_at = None;
            }
            Outcome::Failed => {
                self.failures = self.failures.saturating_add(1);
                match probe.interval {
                    Some(_) => {
                        if self.failures >= probe.failures_down.max(1) {
                            self.health = HopHealth::Down;
                        }
                    }
                    None => {
                        self.health = HopHealth::Down;
                        self.retry_at = Some(later(now, retry_after));
                    }
                }
            }
        }
        before != self.health
    }

    /// The health in effect at `now` (without probing, a down target's time out ends).
    pub(crate) fn health(&self, now: Instant) -> HopHealth {
        match (self.health, self.retry_at) {
            (HopHealth::Down, Some(at)) if at <= now => HopHealth::Up,
            (h, _) => h,
        }
    }

    pub(crate) fn consecutive_failures(&self) -> u32 {
        self.failures
    }
}

/// One target of the set.
struct HopEntry {
    hop: NextHop,
    tracker: Tracker,
    /// When the next probe goes out; `None` until the core first learns the time.
    next_probe: Option<Instant>,
    /// The branch of the probe in flight.
    probing: Option<String>,
}

impl HopEntry {
    fn new(hop: NextHop) -> HopEntry {
        HopEntry {
            hop,
            tracker: Tracker::default(),
            next_probe: None,
            probing: None,
        }
    }
}

/// An OPTIONS probe in flight.
struct ProbeTx {
    hop: NextHop,
    request: Message,
    /// No final answer by then: a failure.
    deadline: Instant,
    /// UDP: the next retransmission and the interval after it.
    retransmit: Option<(Instant, Duration)>,
}

/// What waits for a name to be resolved.
pub(super) enum Parked {
    /// A request with a server transaction (its `forward` copy waits in it), and how far its
    /// Route set may take it ([`super::routing::NameTarget::policy`]).
    Request {
        key: String,
        policy: super::routing::RoutePolicy,
    },
    /// A 2xx ACK, forwarded statelessly once its target is known.
    Ack(Box<ParkedAck>),
}

/// A stateless ACK waiting for its target.
pub(super) struct ParkedAck {
    pub(super) msg: Message,
    pub(super) policy: super::routing::RoutePolicy,
    pub(super) loop_hash: String,
    pub(super) incoming: String,
    pub(super) max_forwards: u32,
}

/// Requests and ACKs waiting for a name to be resolved, at most.
pub(super) const MAX_PARKED: usize = 4096;
/// At most this many of them per flow (a connection, or a UDP source address), so that one client
/// naming hosts whose DNS never answers cannot hold every place (each waits up to 64×T1) while
/// others' name-routed requests get 503.
pub(super) const MAX_PARKED_PER_FLOW: usize = 64;

/// Next-hop targets, their health and probes, and requests parked on a resolution.
#[derive(Default)]
pub(super) struct HopSet {
    entries: Vec<HopEntry>,
    probes: Map<String, ProbeTx>,
    /// What waits for a name, and until when at most.
    parked: Map<u64, (Parked, Instant, Flow)>,
    /// How many of the parked wait for each flow (a UDP client's is its source address).
    parked_by_flow: Map<Flow, usize>,
    next_resolve: u64,
    /// False until the probes have their first deadline (the core had no time at construction).
    started: bool,
}

impl HopSet {
    pub(super) fn new(hops: &[NextHop]) -> HopSet {
        HopSet {
            entries: hops.iter().copied().map(HopEntry::new).collect(),
            ..HopSet::default()
        }
    }

    fn entry_mut(&mut self, hop: &NextHop) -> Option<&mut HopEntry> {
        self.entries.iter_mut().find(|e| e.hop == *hop)
    }

    /// The earliest probe to send, retransmit or give up on.
    pub(super) fn deadline(&self) -> Option<Instant> {
        let sends = self
            .entries
            .iter()
            .filter(|e| e.probing.is_none())
            .filter_map(|e| e.next_probe);
        let probes = self.probes.values().map(|p| {
            p.retransmit
                .map_or(p.deadline, |(at, _)| at.min(p.deadline))
        });
        let parked = self.parked.values().map(|(_, until, _)| *until);
        sends.chain(probes).chain(parked).min()
    }

    pub(super) fn take_parked(&mut self, id: ResolveId) -> Option<Parked> {
        let (parked, _, flow) = self.parked.remove(&id.0)?;
        if let Some(n) = self.parked_by_flow.get_mut(&flow) {
            *n -= 1;
            if *n == 0 {
                self.parked_by_flow.remove(&flow);
            }
        }
        Some(parked)
    }
}

impl Edge {
    /// Replace the next-hop targets (the driver resolved the configured names again, or the
    /// configuration changed). A target kept from before keeps its health and probe schedule;
    /// a new one starts up and is probed at once.
    pub fn set_next_hops(&mut self, hops: Vec<NextHop>, now: Now) {
        self.replace_next_hops(hops);
        self.start_probes(now.mono);
        self.prune_stale_timers();
    }

    /// [`Edge::set_next_hops`] without the time: new targets are probed from the next call that
    /// passes it.
    pub(super) fn replace_next_hops(&mut self, hops: Vec<NextHop>) {
        let mut old = std::mem::take(&mut self.hops.entries);
        let mut entries = Vec::with_capacity(hops.len());
        for hop in &hops {
            match old.iter().position(|e| e.hop == *hop) {
                Some(i) => entries.push(old.swap_remove(i)),
                None => entries.push(HopEntry::new(*hop)),
            }
        }
        // Probes of targets that are gone are forgotten (their answers are then dropped as
        // strays).
        for gone in old {
            if let Some(b) = gone.probing {
                self.hops.probes.remove(&b);
            }
        }
        self.hops.entries = entries;
        self.cfg.next_hops = hops;
        self.hops.started = false;
    }

    /// Every next-hop target's state, in the order they are tried.
    pub fn hop_status(&self, now: Instant) -> Vec<HopStatus> {
        self.hops
            .entries
            .iter()
            .map(|e| HopStatus {
                hop: e.hop,
                health: e.tracker.health(now),
                consecutive_failures: e.tracker.consecutive_failures(),
                last_ok: e.tracker.last_ok,
            })
            .collect()
    }

    /// True when `hop` is a next-hop target that is down now (other targets are never skipped).
    pub(super) fn hop_is_down(&self, hop: &NextHop, now: Instant) -> bool {
        self.hops
            .entries
            .iter()
            .find(|e| e.hop == *hop)
            .is_some_and(|e| e.tracker.health(now) == HopHealth::Down)
    }

    /// The Retry-After of a 503 sent because no next hop is up: with probing a hop is found
    /// back within one probe interval, so clients are told to come back then rather than after
    /// the (long) retry-after time.
    pub(super) fn retry_after_secs(&self) -> u64 {
        let base = self.cfg.retry_after;
        let d = match self.cfg.probe.interval {
            Some(i) => base.min(i.max(Duration::from_secs(1))),
            None => base,
        };
        d.as_secs().max(1)
    }

    /// A transaction to `hop` failed (timeout, transport, 503).
    pub(super) fn hop_failed(&mut self, hop: NextHop, now: Now) {
        self.hop_outcome(hop, Outcome::Failed, now);
    }

    /// `hop` answered a request.
    pub(super) fn hop_alive(&mut self, hop: NextHop, now: Now) {
        self.hop_outcome(hop, Outcome::Alive, now);
    }

    fn hop_outcome(&mut self, hop: NextHop, outcome: Outcome, now: Now) {
        let probe = self.cfg.probe;
        let retry_after = self.cfg.retry_after;
        let Some(e) = self.hops.entry_mut(&hop) else {
            return;
        };
        let before = (e.tracker.health, e.tracker.failures);
        let changed = e.tracker.record(outcome, now.mono, &probe, retry_after);
        let status = HopStatus {
            hop,
            health: e.tracker.health(now.mono),
            consecutive_failures: e.tracker.failures,
            last_ok: e.tracker.last_ok,
        };
        if before != (e.tracker.health, e.tracker.failures) || outcome == Outcome::Alive {
            self.report(Report::Hop(status));
        }
        if changed && status.health == HopHealth::Down && probe.interval.is_some() {
            self.fail_in_flight(hop, now);
        }
    }

    /// A probed hop went down: requests still waiting for its first answer fail over (or get
    /// 503) now instead of at their timeout; a hop that misses several probes in a row is not
    /// going to answer them.
    fn fail_in_flight(&mut self, hop: NextHop, now: Now) {
        let waiting: Vec<(String, String)> = self
            .client
            .iter()
            .filter(|(_, ct)| ct.hop == Some(hop) && ct.state == ClientState::Trying)
            .filter_map(|(k, ct)| Some((k.clone(), ct.server_key.clone()?)))
            .collect();
        for (ck, sk) in waiting {
            self.detach_branch(&ck, now);
            self.try_next_hop(&sk, HopFailure::Transport, now);
        }
    }

    /// A connection the driver opened to `addr` over `transport` closed (the peer closed or
    /// reset it, or refused the TLS handshake after it seemed done, as a server that requires a
    /// client certificate does under TLS 1.3). Requests sent over it that have heard nothing
    /// yet cannot be answered over it: they fail now (fail-over, or 503) instead of at their
    /// timeout, and so do probes.
    pub fn connection_lost(&mut self, transport: Transport, addr: SocketAddr, now: Now) {
        let lost = Target::Addr { transport, addr };
        let mut keys: Vec<String> = self
            .client
            .iter()
            .filter(|(_, ct)| ct.target == lost && ct.state == ClientState::Trying)
            .map(|(k, _)| k.clone())
            .collect();
        keys.extend(
            self.hops
                .probes
                .iter()
                .filter(|(_, p)| p.hop.transport == transport && p.hop.addr == addr)
                .map(|(b, _)| b.clone()),
        );
        for k in keys {
            self.fail_send(&crate::types::SendToken(k), now);
        }
        self.prune_stale_timers();
    }

    /// New probing settings: turned off, the probes in flight are forgotten (their answers are
    /// then strays); turned on or changed, every target is probed from the next call that passes
    /// the time.
    pub(super) fn set_probe(&mut self, probe: ProbeConfig) {
        if probe == self.cfg.probe {
            return;
        }
        self.cfg.probe = probe;
        self.hops.probes.clear();
        for e in &mut self.hops.entries {
            e.probing = None;
            e.next_probe = None;
        }
        self.hops.started = false;
    }

    /// Gives the probes their first deadline once the core knows the time.
    pub(super) fn start_probes(&mut self, now: Instant) {
        if self.hops.started {
            return;
        }
        self.hops.started = true;
        if self.cfg.probe.interval.is_none() {
            return;
        }
        for e in &mut self.hops.entries {
            e.next_probe.get_or_insert(now);
        }
    }

    /// Send the probes that are due, retransmit those over UDP, and fail those unanswered; give
    /// up on resolutions the driver never answered.
    pub(super) fn probe_timers(&mut self, now: Now) {
        let overdue: Vec<u64> = self
            .hops
            .parked
            .iter()
            .filter(|(_, (_, until, _))| *until <= now.mono)
            .map(|(id, _)| *id)
            .collect();
        for id in overdue {
            self.resolved(ResolveId(id), Vec::new(), now);
        }
        let Some(interval) = self.cfg.probe.interval else {
            return;
        };
        let expired: Vec<String> = self
            .hops
            .probes
            .iter()
            .filter(|(_, p)| p.deadline <= now.mono)
            .map(|(b, _)| b.clone())
            .collect();
        for branch in expired {
            self.probe_done(&branch, Outcome::Failed, now);
        }
        let t2 = self.cfg.timers.t2;
        let mut resend = Vec::new();
        for p in self.hops.probes.values_mut() {
            if let Some((at, iv)) = p.retransmit
                && at <= now.mono
            {
                let next = iv.saturating_mul(2).min(t2);
                p.retransmit = Some((later(now.mono, next), next));
                resend.push((p.hop, p.request.clone()));
            }
        }
        for (hop, request) in resend {
            self.actions.push_back(Action::Send {
                to: Target::Addr {
                    transport: hop.transport,
                    addr: hop.addr,
                },
                message: request,
                token: None,
            });
        }
        let due: Vec<NextHop> = self
            .hops
            .entries
            .iter()
            .filter(|e| e.probing.is_none() && e.next_probe.is_some_and(|t| t <= now.mono))
            .map(|e| e.hop)
            .collect();
        for hop in due {
            self.send_probe(hop, interval, now);
        }
    }

    fn send_probe(&mut self, hop: NextHop, interval: Duration, now: Now) {
        let branch = self.ids.branch("probe");
        let tag = self.ids.unique();
        let call_id = self.ids.unique();
        let via = self.our_via(hop.transport, &branch, "");
        let host = &self.cfg.local.host;
        let mut text = String::with_capacity(400);
        text.push_str("OPTIONS sip:");
        text.push_str(&hop.addr.to_string());
        text.push_str(";transport=");
        text.push_str(hop.transport.uri_param());
        text.push_str(" SIP/2.0\r\nVia: ");
        text.push_str(&via);
        text.push_str("\r\nMax-Forwards: 70\r\nFrom: <sip:sagw@");
        text.push_str(host);
        text.push_str(">;tag=");
        text.push_str(tag.as_str());
        text.push_str("\r\nTo: <sip:");
        text.push_str(&hop.addr.to_string());
        text.push_str(">\r\nCall-ID: ");
        text.push_str(call_id.as_str());
        text.push_str("@sagw.probe\r\nCSeq: 1 OPTIONS\r\nAccept: application/sdp\r\nContent-Length: 0\r\n\r\n");
        let Ok(request) = Message::parse(text.as_bytes()) else {
            return;
        };
        // The probe must end before the next one is due: one probe in flight per target.
        let deadline = later(now.mono, interval.min(self.cfg.timers.timeout()));
        let t1 = self.cfg.timers.t1;
        let retransmit = (!hop.transport.is_reliable()).then(|| (later(now.mono, t1), t1));
        if let Some(e) = self.hops.entry_mut(&hop) {
            e.probing = Some(branch.clone());
            e.next_probe = Some(later(now.mono, interval));
        }
        self.hops.probes.insert(
            branch.clone(),
            ProbeTx {
                hop,
                request: request.clone(),
                deadline,
                retransmit,
            },
        );
        self.actions.push_back(Action::Send {
            to: Target::Addr {
                transport: hop.transport,
                addr: hop.addr,
            },
            message: request,
            token: Some(crate::types::SendToken(branch)),
        });
    }

    fn probe_done(&mut self, branch: &str, outcome: Outcome, now: Now) {
        let Some(p) = self.hops.probes.remove(branch) else {
            return;
        };
        if let Some(e) = self.hops.entry_mut(&p.hop)
            && e.probing.as_deref() == Some(branch)
        {
            e.probing = None;
        }
        self.hop_outcome(p.hop, outcome, now);
    }

    /// A response to one of our probes (true: it was one, and it is consumed here). Any final
    /// response means the hop is alive, as Kamailio's dispatcher takes it with its default reply
    /// codes widened: a 404 or 405 to OPTIONS still shows a SIP stack that routes requests;
    /// 503 (overloaded, RFC 3263 §4.3) and 408 (it could not reach what is behind it) do not.
    pub(super) fn probe_answered(
        &mut self,
        branch: &str,
        code: u16,
        flow: &Flow,
        now: Now,
    ) -> bool {
        let Some(p) = self.hops.probes.get(branch) else {
            return false;
        };
        if p.hop.addr != flow.remote || p.hop.transport != flow.transport {
            // Our branch from somewhere else: not the hop's answer.
            return true;
        }
        if code < 200 {
            // A provisional: the hop is there; stop retransmitting, wait for the final.
            if let Some(p) = self.hops.probes.get_mut(branch) {
                p.retransmit = None;
            }
            return true;
        }
        let outcome = if code == 503 || code == 408 {
            Outcome::Failed
        } else {
            Outcome::Alive
        };
        self.probe_done(branch, outcome, now);
        true
    }

    /// The driver could not deliver a probe (connection refused): a failed probe.
    pub(super) fn probe_send_failed(&mut self, branch: &str, now: Now) -> bool {
        if !self.hops.probes.contains_key(branch) {
            return false;
        }
        self.probe_done(branch, Outcome::Failed, now);
        true
    }

    /// Park what waits for a name and ask the driver to resolve it; false (nothing parked) when
    /// [`MAX_PARKED`] already wait: each is a resolution a signed-in client's Route can cause, and
    /// an ACK holds no transaction the transaction cap would count.
    ///
    /// A driver that never answers must not leave the request waiting for ever: after 64×T1
    /// (Timer B/F) it is answered 503 as if the name did not resolve.
    pub(super) fn park(
        &mut self,
        parked: Parked,
        want: &super::routing::NameTarget,
        from: Flow,
        now: Instant,
    ) -> bool {
        let of_flow = self.hops.parked_by_flow.get(&from).copied().unwrap_or(0);
        if self.hops.parked.len() >= MAX_PARKED || of_flow >= MAX_PARKED_PER_FLOW {
            self.report(Report::Limit(crate::types::LimitKind::Resolutions));
            return false;
        }
        *self.hops.parked_by_flow.entry(from).or_default() += 1;
        self.hops.next_resolve = self.hops.next_resolve.wrapping_add(1);
        let id = ResolveId(self.hops.next_resolve);
        let until = later(now, self.cfg.timers.timeout());
        self.hops.parked.insert(id.0, (parked, until, from));
        self.actions.push_back(Action::Resolve(ResolveRequest {
            id,
            host: want.host.clone(),
            port: want.port,
            transport: want.transport,
            secure: want.secure,
        }));
        true
    }

    /// The targets of a name the core asked for ([`Action::Resolve`]), in the order to try them
    /// (RFC 3263: NAPTR, SRV by priority and weight, then addresses); empty when the name did
    /// not resolve. The request waiting for them goes to the first and fails over to the
    /// others; with none left (or none a client may route to), it is answered 503 or 403.
    pub fn resolved(&mut self, id: ResolveId, targets: Vec<NextHop>, now: Now) {
        self.start_probes(now.mono);
        let Some(parked) = self.hops.take_parked(id) else {
            return;
        };
        match parked {
            Parked::Request { key, policy } => {
                let Some(st) = self.server.get(&key) else {
                    return;
                };
                let cancelled = st.state != super::transaction::ServerState::Proceeding;
                if cancelled {
                    return;
                }
                let allowed: Vec<NextHop> = targets
                    .iter()
                    .copied()
                    .filter(|t| self.may_route_to(policy, t.addr))
                    .map(|t| self.hop_transport(policy, t))
                    .collect();
                if allowed.is_empty() {
                    let (code, extra) = if targets.is_empty() {
                        (
                            503,
                            vec![("Retry-After", self.retry_after_secs().to_string())],
                        )
                    } else {
                        (403, Vec::new())
                    };
                    self.respond(&key, code, &extra, now);
                } else {
                    if let Some(st) = self.server.get_mut(&key) {
                        st.hops = allowed.into_iter().collect();
                    }
                    self.try_next_hop(&key, HopFailure::Transport, now);
                }
            }
            Parked::Ack(ack) => {
                let target = targets
                    .iter()
                    .find(|t| self.may_route_to(ack.policy, t.addr))
                    .map(|t| self.hop_transport(ack.policy, *t));
                match target {
                    Some(t) => {
                        let to = BranchTo::addr(Target::Addr {
                            transport: t.transport,
                            addr: t.addr,
                        });
                        self.forward_ack(*ack, to, now);
                    }
                    None => self.report(Report::Dropped(crate::types::DropReason::Stray)),
                }
            }
        }
        self.prune_stale_timers();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probing(n: u32) -> ProbeConfig {
        ProbeConfig {
            interval: Some(Duration::from_secs(5)),
            failures_down: n,
        }
    }

    #[test]
    fn down_only_after_n_failures_in_a_row_and_up_on_the_first_answer() {
        let cfg = probing(3);
        let t0 = Instant::now();
        let ra = Duration::from_secs(30);
        let mut t = Tracker::default();
        assert!(!t.record(Outcome::Failed, t0, &cfg, ra));
        assert!(!t.record(Outcome::Failed, t0, &cfg, ra));
        assert_eq!(
            t.health(t0),
            HopHealth::Up,
            "two failures are not an outage"
        );
        // An answer in between starts the count again.
        assert!(!t.record(Outcome::Alive, t0, &cfg, ra));
        assert_eq!(t.consecutive_failures(), 0);
        assert!(!t.record(Outcome::Failed, t0, &cfg, ra));
        assert!(!t.record(Outcome::Failed, t0, &cfg, ra));
        assert!(
            t.record(Outcome::Failed, t0, &cfg, ra),
            "the third in a row"
        );
        assert_eq!(t.health(t0), HopHealth::Down);
        // Down stays down, however long, until something answers: the probes decide.
        assert!(!t.record(Outcome::Failed, t0, &cfg, ra));
        assert_eq!(t.health(t0 + Duration::from_secs(3600)), HopHealth::Down);
        assert_eq!(t.consecutive_failures(), 4);
        let back = t0 + Duration::from_secs(40);
        assert!(
            t.record(Outcome::Alive, back, &cfg, ra),
            "up on the first answer"
        );
        assert_eq!(t.health(back), HopHealth::Up);
        assert_eq!(t.last_ok, Some(back));
        assert_eq!(t.consecutive_failures(), 0);
    }

    #[test]
    fn threshold_one_and_zero_mean_the_first_failure() {
        let t0 = Instant::now();
        for n in [0, 1] {
            let mut t = Tracker::default();
            assert!(t.record(Outcome::Failed, t0, &probing(n), Duration::from_secs(30)));
            assert_eq!(t.health(t0), HopHealth::Down);
        }
    }

    #[test]
    fn without_probing_one_failure_sets_the_hop_aside_for_retry_after() {
        let cfg = ProbeConfig {
            interval: None,
            failures_down: 3,
        };
        let t0 = Instant::now();
        let ra = Duration::from_secs(30);
        let mut t = Tracker::default();
        assert!(t.record(Outcome::Failed, t0, &cfg, ra));
        assert_eq!(t.health(t0 + Duration::from_secs(29)), HopHealth::Down);
        assert_eq!(
            t.health(t0 + ra),
            HopHealth::Up,
            "tried again after retry-after"
        );
    }
}
