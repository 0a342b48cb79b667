//! Changing the proxy's settings while it runs (a configuration reload) and draining it before
//! it stops: neither touches a transaction, a binding or a dialog.

use std::collections::VecDeque;

use super::Edge;
use super::transaction::ServerState;
use crate::config::{Intake, LiveSettings, NextHop};

impl Edge {
    /// Applies new settings. Transactions in progress and bindings stay: a transaction keeps
    /// the timers it has scheduled, its fail-over goes on through the next hops it has left that
    /// are still configured, and a next hop that is still configured keeps its health state (by
    /// transport and address, wherever it moved in the list; see [`Edge::set_next_hops`]).
    pub fn reconfigure(&mut self, live: LiveSettings) {
        let old_hops = self.cfg.next_hops.clone();
        self.replace_next_hops(live.next_hops);
        // A configured hop that is gone is not failed over to any more; other targets (the
        // addresses of a Route's name) are not configuration and stay.
        let gone = |h: &NextHop| old_hops.contains(h) && !self.cfg.next_hops.contains(h);
        for st in self.server.values_mut() {
            st.hops = st
                .hops
                .iter()
                .filter(|h| !gone(h))
                .copied()
                .collect::<VecDeque<_>>();
        }
        self.set_probe(live.probe);
        self.cfg.domains = live.domains;
        self.cfg.trusted_peers = live.trusted_peers;
        self.cfg.client_routes = live.client_routes;
        self.cfg.timers = live.timers;
        self.cfg.retry_after = live.retry_after;
        self.cfg.max_transactions = live.max_transactions;
        self.cfg.max_transactions_per_client = live.max_transactions_per_client;
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
