//! Timers: the heap of retransmission and timeout timers, the clean-up grid, what fires when,
//! and delivery failures reported by the driver.

use std::cmp::{Ordering, Reverse};
use std::time::{Duration, Instant};

use super::Edge;
use super::transaction::{ClientState, HopFailure, ServerState, resend_copy};
use crate::types::{Action, Now, SendToken, Target, later};

/// Grid for clean-up timers (see [`Edge::on_cleanup_grid`]): a finished transaction's memory
/// lingers at most this much longer than its timer asks.
pub(super) const CLEANUP_GRID: Duration = Duration::from_millis(128);

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum TimerKind {
    ClientRetransmit(String, u32),
    ClientTimeout(String, u32),
    ClientCleanup(String, u32),
    ServerRetransmit(String, u32),
    ServerCleanup(String, u32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TimerEntry {
    pub(super) at: Instant,
    pub(super) seq: u64,
    pub(super) kind: TimerKind,
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
impl Edge {
    /// Drop timers at the head of the heap that would do nothing when they fire (their
    /// transaction is gone, has moved on to a new epoch, or left the state the timer serves), so
    /// that [`Edge::poll_timeout`] names the next timer with work to do. Most timers end this
    /// way (Timer A/E once a response arrives, B/F once the transaction completes, C once a
    /// final arrives); left in place, each woke the driver for nothing.
    pub(super) fn prune_stale_timers(&mut self) {
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
    pub(super) fn timer_is_stale(&self, kind: &TimerKind) -> bool {
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

    pub(super) fn schedule(&mut self, at: Instant, kind: TimerKind) {
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
    pub(super) fn on_cleanup_grid(&mut self, at: Instant) -> Instant {
        // The grid extends both ways from its origin: an earlier timer may come later (Timer I
        // after Timer H).
        let origin = *self.cleanup_origin.get_or_insert(at);
        crate::types::on_grid(origin, at, CLEANUP_GRID)
    }

    /// Process every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Now) {
        self.start_probes(now.mono);
        self.probe_timers(now);
        self.registrar.expire(now.mono);
        self.report_binding_changes();
        self.answered.expire(now.mono, &mut self.shares);
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

    pub(super) fn fire(&mut self, kind: TimerKind, now: Now) {
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
                let (to, endpoint, mut message) =
                    (ct.target, ct.endpoint.clone(), ct.request.clone());
                // Signed again, not a copy of the first signature: a client with an SA drops a
                // `snum` it saw ([MS-SIP] 3.1.5.1), and it saw the first copy if only its answer
                // was lost. An SA gone meanwhile sends nothing (Timer F ends the transaction).
                if self
                    .pass_request(to, &mut message, endpoint.as_ref(), now)
                    .is_err()
                {
                    return;
                }
                self.actions.push_back(Action::Send {
                    to,
                    message,
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
                if state == ClientState::Trying
                    && let Some(h) = hop
                {
                    self.hop_failed(h, now);
                }
                match (sk, hop) {
                    (Some(sk), Some(_)) => {
                        // The hop may answer yet: kept, apart from the request, until Timer B.
                        self.detach_branch(&key, now);
                        self.try_next_hop(&sk, HopFailure::Timeout, now);
                    }
                    (Some(sk), None) => {
                        self.client.remove(&key);
                        self.branch_failed(&sk, &key, 408, now);
                    }
                    (None, _) => {
                        self.client.remove(&key);
                    }
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
                    self.close_server(&key);
                }
            }
        }
    }

    /// The driver could not deliver a message sent with `token` (connection refused or reset,
    /// flow gone): fail over to the next hop, or answer 503 (next hops) / 480 (a client's flow).
    pub fn send_failed(&mut self, token: &SendToken, now: Now) {
        self.fail_send(token, now);
        self.prune_stale_timers();
    }

    pub(super) fn fail_send(&mut self, token: &SendToken, now: Now) {
        if self.probe_send_failed(&token.0, now) {
            return;
        }
        let Some(ct) = self.client.get(&token.0) else {
            return;
        };
        if ct.state == ClientState::Completed {
            return;
        }
        let hop = ct.hop;
        let gone = ct.gone;
        let sk = ct.server_key.clone();
        let target = ct.target;
        self.client.remove(&token.0);
        // A send over a stream flow that failed: the connection is gone, and with it what else
        // went over it (a ringing branch sends nothing more, and no close will come for a flow
        // the driver no longer has: its entry in `stream_branches` would stay for good).
        if let Target::Flow(f) = target
            && f.transport.is_reliable()
        {
            self.fail_branches_over(f.id, now);
        }
        let Some(sk) = sk else { return };
        match hop {
            Some(h) => {
                self.hop_failed(h, now);
                self.try_next_hop(&sk, HopFailure::Transport, now);
            }
            None => self.branch_failed(&sk, &token.0, gone, now),
        }
    }
}
