//! Changing the proxy's settings while it runs (a configuration reload) and draining it before
//! it stops: neither touches a transaction, a binding or a dialog.

use std::collections::VecDeque;

use super::Edge;
use super::transaction::ServerState;
use crate::config::{Intake, LiveSettings, NextHop};

impl Edge {
    /// Applies new settings. Transactions in progress and bindings stay: a transaction keeps
    /// the timers it has scheduled, its fail-over goes on through the next hops it has left that
    /// are still configured, and a next hop that is still configured keeps its down state (by
    /// transport and address, wherever it moved in the list).
    pub fn reconfigure(&mut self, live: LiveSettings) {
        let old_hops = std::mem::replace(&mut self.cfg.next_hops, live.next_hops);
        // Where each old hop is in the new list, if it is still there.
        let moved: Vec<Option<usize>> = old_hops
            .iter()
            .map(|h: &NextHop| self.cfg.next_hops.iter().position(|n| n == h))
            .collect();
        let mut hop_down = vec![None; self.cfg.next_hops.len()];
        for (old, new) in moved.iter().enumerate() {
            if let (Some(new), Some(down)) = (new, self.hop_down.get(old).copied().flatten())
                && let Some(slot) = hop_down.get_mut(*new)
            {
                *slot = Some(down);
            }
        }
        self.hop_down = hop_down;
        let remap = |i: usize| moved.get(i).copied().flatten();
        for st in self.server.values_mut() {
            st.hops = st
                .hops
                .iter()
                .filter_map(|&i| remap(i))
                .collect::<VecDeque<_>>();
        }
        for ct in self.client.values_mut() {
            ct.hop = ct.hop.and_then(remap);
        }
        self.cfg.domains = live.domains;
        self.cfg.trusted_peers = live.trusted_peers;
        self.cfg.client_routes = live.client_routes;
        self.cfg.timers = live.timers;
        self.cfg.retry_after = live.retry_after;
        self.cfg.max_transactions = live.max_transactions;
        self.registrar.set_config(live.registrar.clone());
        self.cfg.registrar = live.registrar;
    }

    /// Opens or drains the proxy (see [`Intake`]).
    pub fn set_intake(&mut self, intake: Intake) {
        self.intake = intake;
    }

    /// Open or draining.
    pub fn intake(&self) -> Intake {
        self.intake
    }

    /// Server transactions still waiting for their final response: what a drain waits for.
    /// (Finished ones linger a while to absorb retransmissions; they are not counted.)
    pub fn transactions_in_progress(&self) -> usize {
        self.server
            .values()
            .filter(|st| st.state == ServerState::Proceeding)
            .count()
    }
}
