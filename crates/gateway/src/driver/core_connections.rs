//! The core thread's side of the accepted connections it owns (one of them is a
//! [`CoreStream`]): adopting them from their accept tasks, reading the ready ones, writing to
//! them (or queueing for a next hop's connection task), the overall budget of what their backlogs
//! hold (`limits.write_backlog_total_bytes`), their timers, judging trusted peers again after a
//! reload, and their end.

use super::core_stream::{Adopted, CoreStream, Pass, STREAM_TOKEN, SWEEP};
use super::core_thread::Core;
use super::*;

impl Core {
    /// Write bytes to a connection (the core's own) or queue them for its task; false when it
    /// is gone or too slow (then it is closed). The connection must be `flow` whole, not only its
    /// id: ids start again at each start while flow tokens outlive it (keyed by the pool key, in
    /// a registrar's Path or a dialog's Record-Route), so an old token's id can name another
    /// peer's connection now.
    /// A 2xx to a REGISTER granting `for_secs` goes to the client at `flow`: its connection (one
    /// the core holds) stays open that long, whatever the idle timer says.
    pub(super) fn registered_over(&mut self, flow: Flow, for_secs: u64) {
        let seq = ListenerId::seq_of(flow.id);
        if let Some(s) = self
            .streams
            .get_mut(&seq)
            .filter(|s| same_flow(&s.flow(), &flow))
        {
            s.registered(Instant::now(), for_secs);
        }
    }

    pub(super) fn write_flow(&mut self, flow: Flow, bytes: Vec<u8>) -> bool {
        let id = flow.id;
        let seq = ListenerId::seq_of(id);
        if let Some(s) = self
            .streams
            .get_mut(&seq)
            .filter(|s| same_flow(&s.flow(), &flow))
        {
            let sent = s.send(&bytes);
            s.count_backlog(&self.shared.core_backlogged, &mut self.backlog_bytes);
            return match sent {
                Ok(()) => self.backlog_bytes == 0 || self.shed_backlog(seq) != Shed::Writing,
                Err(why) => {
                    let full = match why {
                        Closed::Killed => Some("write_queue"),
                        Closed::BacklogBytes => Some("write_queue_bytes"),
                        _ => None,
                    };
                    if let Some(limit) = full {
                        self.shared.metrics.limit(limit);
                        warn!(remote = %s.flow().remote, transport = %s.flow().transport, limit, "write queue full: closing slow connection");
                    }
                    self.close_stream(seq, why);
                    false
                }
            };
        }
        let Ok(table) = self.shared.flows.lock() else {
            return false;
        };
        let Some(h) = table.by_id.get(&id).filter(|h| {
            let held = Flow {
                id,
                transport: h.transport,
                remote: h.remote,
            };
            same_flow(&held, &flow)
        }) else {
            return false;
        };
        let ConnIo::Task { tx, kill } = &h.io else {
            return false;
        };
        match tx.try_send(bytes) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.shared.metrics.limit("write_queue");
                warn!(remote = %h.remote, transport = %h.transport, "write queue full: closing slow connection");
                let _ = kill.send(true);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    pub(super) fn send_stream_addr(
        &mut self,
        key: (Transport, SocketAddr),
        bytes: Vec<u8>,
        token: Option<SendToken>,
    ) {
        let existing = self
            .shared
            .flows
            .lock()
            .ok()
            .and_then(|t| t.by_addr.get(&key).copied());
        if let Some(id) = existing {
            let flow = Flow {
                id,
                transport: key.0,
                remote: key.1,
            };
            if !self.write_flow(flow, bytes) {
                self.send_failure(key.0, token);
            }
            return;
        }
        if let Some(q) = self.pending.get_mut(&key) {
            q.push((bytes, token));
            return;
        }
        self.pending.insert(key, vec![(bytes, token)]);
        self.shared
            .runtime
            .spawn(connect_task(key, self.shared.clone()));
    }

    /// An accepted connection becomes the core's: in its `epoll`, its messages read here.
    pub(super) fn adopt(&mut self, a: Adopted) {
        let (flow, trust) = (a.flow, a.trust);
        let seq = ListenerId::seq_of(flow.id);
        let mut s = CoreStream::new(a, self.shared.settings.load_full());
        let token = usize::try_from(seq)
            .ok()
            .filter(|t| t & STREAM_TOKEN == 0)
            .map(|t| mio::Token(t | STREAM_TOKEN));
        let registered = token
            .ok_or_else(|| std::io::Error::other("flow number past the token space"))
            .and_then(|token| {
                self.registry.register(
                    s.socket(),
                    token,
                    mio::Interest::READABLE | mio::Interest::WRITABLE,
                )
            });
        if let Err(e) = registered {
            warn!(remote = %flow.remote, error = %e, "connection not added to the core's epoll: closing it");
            s.close(Closed::ReadError);
            self.forget_stream(flow);
            return;
        }
        // Judged under the trust in force now: the handshake was judged under the one in force
        // when the connection was accepted, and a reload in between judged again only the
        // connections the core held, so a revoked peer stayed trusted (and a name added was not
        // trusted on a handshake already under way). A connection without a certificate is
        // told so at once.
        if flow.transport == Transport::Tls {
            self.edge.accepted_tls_flow(flow.id);
        }
        match (trust, self.trusted_peer_now(&s)) {
            (_, Some(name)) => {
                if trust != FlowTrust::PeerCertificate {
                    info!(remote = %flow.remote, peer = %name, "trusted peer by its TLS certificate (named by a reload during its handshake)");
                }
                self.edge.trust_stream_flow(flow.id);
            }
            (FlowTrust::PeerCertificate, _) => {
                info!(remote = %flow.remote, flow = flow.id.0, "certificate no longer makes a trusted peer after a reload: a client");
            }
            (FlowTrust::ByAddress, _) => {}
        }
        // Records the TLS handshake left to send (session tickets).
        let flushed = s.flush();
        s.count_backlog(&self.shared.core_backlogged, &mut self.backlog_bytes);
        self.streams.insert(seq, s);
        if let Err(why) = flushed {
            self.close_stream(seq, why);
            return;
        }
        // Bytes may have come (and TLS records been decrypted) before the registration.
        self.stream_ready.push(seq);
    }

    /// Reads the connections that are ready, each up to its budget; true when one has more.
    pub(super) fn read_streams(&mut self) -> bool {
        if self.stream_ready.is_empty() {
            return false;
        }
        let ready = std::mem::take(&mut self.stream_ready);
        let mut messages = Vec::new();
        let mut more = Vec::new();
        for seq in ready.iter().copied() {
            if more.contains(&seq) {
                continue;
            }
            let Some(s) = self.streams.get_mut(&seq) else {
                continue;
            };
            let (pass, closed) = s.read(&mut self.read_buf, &mut messages, &self.shared.metrics);
            s.count_backlog(&self.shared.core_backlogged, &mut self.backlog_bytes);
            let flow = s.flow();
            // What a read writes (a TLS key update's records) can grow a backlog's buffer too.
            if self.backlog_bytes > 0 && self.shed_backlog(seq) != Shed::Nothing {
                // The proxy's actions for the connections closed (their bindings gone).
                self.run_actions();
            }
            for message in messages.drain(..) {
                // An answer to an earlier message may have closed it (its peer does not read):
                // what it sent after is not for a flow that is gone.
                if !self.streams.contains_key(&seq) {
                    break;
                }
                self.shared.metrics.message("in", &message);
                if tracing::enabled!(target: "sagw::sip", Level::TRACE) {
                    trace!(target: "sagw::sip", remote = %flow.remote, transport = %flow.transport, "recv\n{}", redacted(&message));
                }
                self.inbound(Inbound { message, flow });
                self.run_actions();
            }
            match closed {
                Some(why) => {
                    self.close_stream(seq, why);
                    self.run_actions();
                }
                None if matches!(pass, Pass::More) => more.push(seq),
                None => {}
            }
        }
        // The list's buffer is kept; what came meanwhile (none: only the poll adds) goes after.
        let mut ready = ready;
        ready.clear();
        ready.append(&mut more);
        ready.append(&mut self.stream_ready);
        self.stream_ready = ready;
        !self.stream_ready.is_empty()
    }

    /// The socket of connection `seq` takes bytes again: what waits for it is written.
    pub(super) fn stream_writable(&mut self, seq: u64) {
        let Some(s) = self.streams.get_mut(&seq) else {
            return;
        };
        if !s.backlogged() {
            return;
        }
        let flushed = s.flush();
        s.count_backlog(&self.shared.core_backlogged, &mut self.backlog_bytes);
        if let Err(why) = flushed {
            self.close_stream(seq, why);
        }
    }

    /// While what the connections' backlogs hold together is past
    /// `limits.write_backlog_total_bytes`, closes connections in [`shed_order`], and says whether
    /// one was `writing` (the one just written to or read). Why not simply that one: peers that do
    /// not read fill the sum, and the next message to a client that reads, whose socket is full
    /// for a moment, would pay for them. Each is given to its socket once more first: a peer that
    /// caught up since its last count is not closed for bytes it has taken.
    fn shed_backlog(&mut self, writing: u64) -> Shed {
        let budget = self.shared.settings.load().write_backlog_total_bytes;
        if self.backlog_bytes <= budget {
            return Shed::Nothing;
        }
        debug_assert_eq!(
            self.backlog_bytes,
            self.streams
                .values()
                .map(|s| s.counted_bytes())
                .sum::<usize>(),
            "the sum of the connections' backlogs drifted"
        );
        let order = shed_order(
            self.streams
                .iter()
                .filter(|(_, s)| s.counted_bytes() > 0)
                .map(|(seq, s)| (self.edge.is_client(&s.flow()), s.counted_bytes(), *seq))
                .collect(),
        );
        let mut shed = Shed::Nothing;
        for seq in order {
            if self.backlog_bytes <= budget {
                break;
            }
            let Some(s) = self.streams.get_mut(&seq) else {
                continue;
            };
            let flushed = s.flush();
            s.count_backlog(&self.shared.core_backlogged, &mut self.backlog_bytes);
            let (flow, held) = (s.flow(), s.counted_bytes());
            let why = match flushed {
                Err(why) => why,
                Ok(()) if held == 0 || self.backlog_bytes <= budget => continue,
                Ok(()) => {
                    self.shared.metrics.limit("write_backlog_total");
                    warn!(remote = %flow.remote, transport = %flow.transport, backlog = held, budget, "connections' backlogs past limits.write_backlog_total_bytes: closing this one (clients' first, the largest first)");
                    Closed::BacklogTotal
                }
            };
            shed = match shed {
                Shed::Writing => Shed::Writing,
                _ if seq == writing => Shed::Writing,
                _ => Shed::Others,
            };
            self.close_stream(seq, why);
        }
        shed
    }

    /// Closes the connections whose idle, slow-message or write timer ran out.
    pub(super) fn sweep_streams(&mut self, now: Instant) {
        if now < self.next_sweep {
            return;
        }
        self.next_sweep = now + SWEEP;
        let expired: Vec<(u64, Closed)> = self
            .streams
            .iter()
            .filter_map(|(seq, s)| s.expired(now).map(|why| (*seq, why)))
            .collect();
        if expired.is_empty() {
            return;
        }
        for (seq, why) in expired {
            self.close_stream(seq, why);
        }
        self.run_actions();
    }

    /// The end of a connection of the core's: counted, logged, out of the flow table and the
    /// proxy's flows. The caller runs the proxy's actions.
    pub(super) fn close_stream(&mut self, seq: u64, why: Closed) {
        let Some(mut s) = self.streams.remove(&seq) else {
            return;
        };
        let _ = self.registry.deregister(s.socket());
        s.uncount_backlog(&self.shared.core_backlogged, &mut self.backlog_bytes);
        let flow = s.flow();
        s.close(why);
        match why {
            Closed::WriteTimeout => self.shared.metrics.limit("write_timeout"),
            Closed::IdleTimeout => self.shared.metrics.limit("idle_timeout"),
            Closed::MessageTimeout => self.shared.metrics.limit("message_timeout"),
            _ => {}
        }
        debug!(remote = %flow.remote, transport = %flow.transport, flow = flow.id.0, reason = why.label(), "connection closed");
        self.forget_stream(flow);
    }

    /// After a reload: a connection trusted by its certificate stays open only while the peer
    /// CA and names in force still make it a trusted peer. One that no longer does is closed
    /// rather than made a client's: what it sent before was taken as a server's, and the server
    /// connects again and is judged as a new connection is.
    pub(super) fn judge_trusted_peers_again(&mut self) {
        let revoked: Vec<u64> = self
            .streams
            .iter()
            .filter(|(_, s)| self.edge.is_trusted_stream_flow(s.flow().id))
            .filter(|(_, s)| self.trusted_peer_now(s).is_none())
            .map(|(seq, _)| *seq)
            .collect();
        for seq in revoked {
            if let Some(s) = self.streams.get(&seq) {
                let flow = s.flow();
                info!(remote = %flow.remote, flow = flow.id.0, "trusted peer no longer trusted after the reload: connection closed");
            }
            self.close_stream(seq, Closed::NoLongerTrusted);
        }
    }

    /// The listed name `s`'s certificate makes it a trusted peer under, by the peer CA and names
    /// in force now; `None` for a client.
    fn trusted_peer_now(&self, s: &CoreStream) -> Option<String> {
        match self
            .shared
            .peers
            .load()
            .as_ref()?
            .judge(s.peer_certificates())
        {
            PeerVerdict::Trusted(name) => Some(name),
            PeerVerdict::NoCertificate | PeerVerdict::Untrusted(_) => None,
        }
    }

    /// A connection of the core's is gone: out of the flow table, the counts and the proxy.
    fn forget_stream(&mut self, flow: Flow) {
        self.shared.unregister_connection(&flow);
        self.edge.flow_closed(flow.id, super::now());
    }
}

/// Whether connection `held` is the flow a token named: id, transport, address and port. Not
/// `SocketAddr` equality: a token keeps no IPv6 scope id or flow label, which a link-local
/// peer's address has.
fn same_flow(held: &Flow, named: &Flow) -> bool {
    held.id == named.id
        && held.transport == named.transport
        && held.remote.ip() == named.remote.ip()
        && held.remote.port() == named.remote.port()
}

/// What [`Core::shed_backlog`] closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shed {
    Nothing,
    /// Other connections than the one it was called for.
    Others,
    /// The one it was called for (and maybe others).
    Writing,
}

/// The order in which connections are closed while their backlogs hold more than
/// `limits.write_backlog_total_bytes` together, from `(is a client's, bytes held, sequence)`:
/// clients' before servers' (a next hop's or trusted peer's connection carries many clients'
/// traffic, and its backlog is the one most likely to be large for good reason), and among
/// each, the one holding the most first. Sorted once: a reload that lowers the budget a long way
/// may close many at the next write.
fn shed_order(mut candidates: Vec<(bool, usize, u64)>) -> Vec<u64> {
    candidates.sort_unstable_by(|a, b| b.cmp(a));
    candidates.into_iter().map(|(_, _, seq)| seq).collect()
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_holding_the_most_are_closed_first_and_servers_last() {
        let order = shed_order(vec![
            (true, 300, 1),
            (false, 5_000, 2),
            (true, 4_000, 3),
            (true, 100, 4),
            (false, 200, 5),
        ]);
        assert_eq!(order, [3, 1, 4, 2, 5]);
    }

    #[test]
    fn a_token_names_a_link_local_peer_whatever_its_scope() {
        let named = Flow {
            id: FlowId(7),
            transport: Transport::Tcp,
            remote: "[fe80::1]:40000".parse().unwrap(),
        };
        let held = Flow {
            remote: std::net::SocketAddr::V6(std::net::SocketAddrV6::new(
                "fe80::1".parse().unwrap(),
                40000,
                0,
                2,
            )),
            ..named
        };
        assert!(same_flow(&held, &named));
        for other in [
            Flow {
                id: FlowId(8),
                ..named
            },
            Flow {
                transport: Transport::Tls,
                ..named
            },
            Flow {
                remote: "[fe80::1]:40001".parse().unwrap(),
                ..named
            },
            Flow {
                remote: "[fe80::2]:40000".parse().unwrap(),
                ..named
            },
        ] {
            assert!(!same_flow(&held, &other), "{other:?}");
        }
    }
}
