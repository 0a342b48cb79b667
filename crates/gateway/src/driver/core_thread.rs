//! The core thread: owns the sans-IO [`Edge`], reads and writes the UDP sockets, takes the
//! connection tasks' events and executes the edge's actions.

use std::os::fd::AsRawFd;

use super::core_stream::{CoreStream, STREAM_TOKEN};
use super::udp_batch::{self, BATCH, Outgoing, RecvBatch, SendBatch};
use super::*;

/// Bytes waiting for a connection to a next hop, with the token to fail if it never opens.
pub(super) type Queued = (Vec<u8>, Option<SendToken>);

/// A UDP listener's socket, read and written by the core thread.
pub(super) struct UdpListener {
    pub(super) listener: ListenerId,
    pub(super) sock: mio::net::UdpSocket,
    pub(super) family: udp_batch::Family,
}

/// The security core and the workers that run its deferred sign-ins (one pool per kind).
pub(super) type Jobs = (
    Arc<sagw_auth::SecurityCore>,
    Vec<Arc<crate::auth_jobs::AuthWorkers>>,
);

pub(super) struct Core {
    pub(super) edge: Edge,
    pub(super) shared: Arc<Shared>,
    /// In listener order; the first is where datagrams to an address (next hops) leave from.
    pub(super) udp: Vec<UdpListener>,
    pub(super) pending: HashMap<(Transport, SocketAddr), Vec<Queued>>,
    /// The deferred sign-ins' workers; `None` when no sign-in is deferred.
    pub(super) jobs: Option<Jobs>,
    /// Where the registrar's bindings go when the core stops (memory backend with a snapshot).
    pub(super) save_bindings: Option<Arc<Mutex<Option<Vec<u8>>>>>,
    /// With `[state] backend = "redis"`: SAs owned, messages held while an SA is claimed.
    pub(super) pool: Option<crate::pool::PoolLink>,
    /// The store task's answers (unbounded: one per claim in flight, and the pool's events).
    pub(super) pool_events: Option<mpsc::UnboundedReceiver<crate::pool::PoolEvent>>,
    /// The `proxy.next_hops` entry each next-hop target came from.
    pub(super) hop_origins: HashMap<sagw_proxy::NextHop, String>,
    /// Reloads and the drain (driver/control.rs): rare, so unbounded.
    pub(super) control: mpsc::UnboundedReceiver<Control>,
    /// The parser's limits for datagrams (a reload changes them).
    pub(super) sip_limits: sagw_sip::Limits,
    /// Datagrams of this pass, sent together by [`Core::flush_udp`].
    pub(super) udp_out: Vec<Outgoing>,
    /// Where accepted connections are added to the core's `epoll`.
    pub(super) registry: mio::Registry,
    /// The connections the core reads and writes, by their flow's sequence number.
    pub(super) streams: HashMap<u64, CoreStream>,
    /// Bytes waiting for all their sockets together (`limits.write_backlog_total_bytes`).
    pub(super) backlog_bytes: usize,
    /// Connections to read in the next pass: readable by `epoll`, or left with more to read.
    pub(super) stream_ready: Vec<u64>,
    /// The buffer each connection is read into in turn.
    pub(super) read_buf: Vec<u8>,
    /// When the connections' timers are next checked.
    pub(super) next_sweep: Instant,
}

/// The core thread: until shutdown, take what is ready (datagrams, events from connection tasks,
/// due timers), then sleep in `epoll` until the next of them.
pub(super) fn core_loop(mut core: Core, mut poll: mio::Poll, mut events: mpsc::Receiver<Event>) {
    let stop = core.shared.shutdown.clone();
    let mut ready = mio::Events::with_capacity(256);
    // The batches' system-call headers hold raw pointers (not `Send`): made on this thread.
    let (mut rx, mut tx) = (RecvBatch::new(), SendBatch::new());
    // Datagrams may have queued before the sockets were registered: read once before sleeping.
    let mut udp_ready = vec![true; core.udp.len()];
    let origin = Instant::now();
    loop {
        if !matches!(stop.has_changed(), Ok(false)) {
            break;
        }
        // First: a reload's new settings apply to everything read after it was confirmed.
        while let Ok(c) = core.control.try_recv() {
            core.on_control(c);
        }
        let mut busy = false;
        for (i, ready) in udp_ready.iter_mut().enumerate() {
            if *ready {
                // Edge-triggered: the socket is read until it is empty (a short batch, or would
                // block), or the budget says stop (then it is still ready and the loop comes back
                // to it without sleeping).
                *ready = core.read_udp(i, &mut rx, &mut tx);
                busy |= *ready;
            }
        }
        busy |= core.read_streams();
        for _ in 0..EVENT_BUDGET {
            match events.try_recv() {
                Ok(ev) => core.handle(ev),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => return,
            }
        }
        busy |= !events.is_empty();
        while let Some(ev) = core.pool_events.as_mut().and_then(|r| r.try_recv().ok()) {
            core.handle(Event::Pool(ev));
        }
        if let Some(p) = core.pool.as_mut() {
            p.flush(Instant::now());
            let aors = p.take_dirty_aors();
            if !aors.is_empty() {
                let n = now();
                for aor in aors {
                    let local = core.edge.pool_bindings(&aor, n);
                    p.publish_bindings(aor, local);
                }
            }
        }
        if core
            .edge
            .poll_timeout()
            .is_some_and(|t| t <= Instant::now())
        {
            core.edge.handle_timeout(now());
            core.run_actions();
        }
        core.sweep_streams(Instant::now());
        // What this pass answered leaves now, in as few system calls as it can.
        core.flush_udp(&mut tx);
        core.publish_gauges();
        if core.edge.intake() == Intake::Draining {
            core.shared
                .in_progress
                .store(core.edge.transactions_in_progress(), Ordering::Relaxed);
        }
        if busy {
            // Where a pass stopped on its budget there is more to read, but other sockets may
            // have become ready meanwhile: `epoll` is asked without sleeping. Edge-triggered,
            // it says once what became ready; a connection that always has more than a pass
            // reads would otherwise keep the loop from ever asking, and the UDP listeners and
            // every other connection would not be read again while it lasted.
            if let Err(e) = poll.poll(&mut ready, Some(std::time::Duration::ZERO))
                && e.kind() != std::io::ErrorKind::Interrupted
            {
                warn!(error = %e, "core thread: epoll failed");
            }
            core.take_ready(&ready, &mut udp_ready);
            continue;
        }
        core.shared.wake.sleeping.store(true, Ordering::SeqCst);
        std::sync::atomic::fence(Ordering::SeqCst);
        if !events.is_empty()
            || !core.control.is_empty()
            || core.pool_events.as_ref().is_some_and(|r| !r.is_empty())
        {
            core.shared.wake.sleeping.store(false, Ordering::SeqCst);
            continue;
        }
        let due = match (
            core.edge.poll_timeout(),
            core.pool.as_ref().and_then(|p| p.next_deadline()),
        ) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let mut timeout = due.map(|t| {
            sagw_proxy::on_grid(origin, t, TIMER_GRID).saturating_duration_since(Instant::now())
        });
        if !core.streams.is_empty() {
            let sweep = core.next_sweep.saturating_duration_since(Instant::now());
            timeout = Some(timeout.map_or(sweep, |t| t.min(sweep)));
        }
        if let Err(e) = poll.poll(&mut ready, timeout)
            && e.kind() != std::io::ErrorKind::Interrupted
        {
            warn!(error = %e, "core thread: epoll failed");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        core.shared.wake.sleeping.store(false, Ordering::SeqCst);
        core.take_ready(&ready, &mut udp_ready);
    }
    // Connections handed over but not adopted yet leave the flow table and the counts as the
    // adopted ones do below (once closed, a hand-over that comes later does that itself).
    events.close();
    while let Ok(ev) = events.try_recv() {
        if let Event::Adopt(a) = ev {
            core.shared.unregister_connection(&a.flow);
        }
    }
    let open: Vec<u64> = core.streams.keys().copied().collect();
    for seq in open {
        core.close_stream(seq, Closed::Shutdown);
    }
    core.flush_udp(&mut tx);
    if let Some(p) = core.pool.as_mut() {
        p.flush_before_stop(Instant::now());
    }
    if let Some(slot) = &core.save_bindings {
        let records = core.edge.export_bindings(now());
        match serde_json::to_vec(&records) {
            Ok(json) => {
                if let Ok(mut s) = slot.lock() {
                    *s = Some(json);
                }
            }
            Err(e) => warn!(error = %e, "registrar bindings not saved"),
        }
    }
    debug!("core thread stopped");
}

impl Core {
    /// Takes what `epoll` reported ready: UDP listeners to read, connections to read (to the end
    /// of the stream where the peer's FIN was reported) and connections whose backlog the
    /// socket takes again.
    fn take_ready(&mut self, ready: &mio::Events, udp_ready: &mut [bool]) {
        for e in ready.iter() {
            let token = e.token().0;
            if token & STREAM_TOKEN != 0 {
                let seq = (token & !STREAM_TOKEN) as u64;
                let ending = e.is_read_closed() || e.is_error();
                if ending && let Some(s) = self.streams.get_mut(&seq) {
                    s.end_reported();
                }
                if e.is_readable() || ending {
                    self.stream_ready.push(seq);
                }
                if e.is_writable() {
                    self.stream_writable(seq);
                }
            } else if let Some(r) = token.checked_sub(1).and_then(|i| udp_ready.get_mut(i)) {
                *r = true;
            }
        }
        self.run_actions();
    }

    fn on_control(&mut self, c: Control) {
        match c {
            Control::Reconfigure { live, limits, done } => {
                self.edge.reconfigure(*live);
                self.sip_limits = limits;
                self.judge_trusted_peers_again();
                // The reload waits for this; it may have given up meanwhile.
                let _ = done.send(());
            }
            Control::Intake { intake, done } => {
                self.edge.set_intake(intake);
                let _ = done.send(());
            }
        }
    }

    fn publish_gauges(&self) {
        let s = self.edge.stats();
        let g = &self.shared.metrics.gauges;
        g.server_transactions
            .store(s.server_transactions as i64, Ordering::Relaxed);
        g.client_transactions
            .store(s.client_transactions as i64, Ordering::Relaxed);
        g.bindings.store(s.bindings as i64, Ordering::Relaxed);
        g.write_backlog_bytes.store(
            i64::try_from(self.backlog_bytes).unwrap_or(i64::MAX),
            Ordering::Relaxed,
        );
        if let Some(p) = &self.pool {
            let ps = p.stats();
            g.pool_owned.store(ps.owned as i64, Ordering::Relaxed);
            g.pool_held.store(ps.held as i64, Ordering::Relaxed);
        }
    }

    /// Read and handle datagrams of UDP listener `i`, a batch per system call, until its socket
    /// has no more (false) or the budget is spent (true: more may be waiting). The answers to a
    /// batch leave together at its end.
    fn read_udp(&mut self, i: usize, rx: &mut RecvBatch, tx: &mut SendBatch) -> bool {
        let mut read = 0;
        while read < UDP_BUDGET {
            let Some(u) = self.udp.get(i) else {
                return false;
            };
            let (listener, fd) = (u.listener, u.sock.as_raw_fd());
            match rx.recv(fd, u.family) {
                Ok(n) => {
                    for k in 0..n {
                        if let Some((data, remote)) = rx.get(k) {
                            self.on_datagram(data, remote, listener);
                        }
                    }
                    self.flush_udp(tx);
                    read += n.max(1);
                    // A short batch emptied the queue: a datagram that arrives after it raises
                    // a new edge (Linux signals every datagram queued to an edge-triggered
                    // epoll), so the read that would only say "would block" is saved.
                    if n < BATCH {
                        return false;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
                // ICMP errors from earlier sends surface here on some systems: not fatal.
                Err(_) => read += 1,
            }
        }
        true
    }

    fn on_datagram(&mut self, data: &[u8], remote: SocketAddr, listener: ListenerId) {
        let shared = &self.shared;
        let limits = &self.sip_limits;
        if data.len() > limits.max_message_bytes {
            shared.metrics.limit("udp_size");
            return;
        }
        if data.iter().all(|b| matches!(b, b'\r' | b'\n' | 0)) {
            // Keep-alive datagram (CRLF or NUL padding): nothing to do.
            return;
        }
        let message = match Message::parse_with(data, limits) {
            Ok(m) => m,
            Err(e) => {
                shared.metrics.parse_error(Transport::Udp);
                if let Some(l) = parse_limit_label(&e) {
                    shared.metrics.limit(l);
                }
                debug!(%remote, error = %e, "unparsable datagram dropped");
                return;
            }
        };
        shared.metrics.message("in", &message);
        if tracing::enabled!(target: "sagw::sip", Level::TRACE) {
            trace!(target: "sagw::sip", %remote, transport = "udp", "recv\n{}", redacted(&message));
        }
        let flow = Flow {
            id: listener.flow(0),
            transport: Transport::Udp,
            remote,
        };
        self.inbound(Inbound { message, flow });
        self.run_actions();
    }

    /// A message for the proxy, unless the pool holds it while its SA is fetched.
    pub(super) fn inbound(&mut self, inb: Inbound) {
        let inb = match self.pool.as_mut() {
            Some(p) => match p.hold(inb, Instant::now()) {
                None => return,
                Some(inb) => inb,
            },
            None => inb,
        };
        self.edge.handle_inbound(inb, now());
    }

    fn handle(&mut self, ev: Event) {
        match ev {
            Event::Inbound(inb) => self.inbound(inb),
            Event::Pool(crate::pool::PoolEvent::RemoteBindings { aor, bindings }) => {
                self.install_remote(&aor, bindings);
            }
            Event::Pool(crate::pool::PoolEvent::Republish) => {
                // The store was away (or restarted empty): the SAs and bindings this gateway
                // holds are published again, and the others' bindings read again.
                let n = now();
                let local = self.edge.export_bindings(n);
                if let Some(p) = self.pool.as_mut() {
                    p.on_event(crate::pool::PoolEvent::Republish, n.wall, n.mono);
                    for r in &local {
                        p.binding_changed(&r.aor);
                    }
                    p.load_bindings();
                }
            }
            Event::Pool(ev) => {
                let n = now();
                let released = match self.pool.as_mut() {
                    Some(p) => p.on_event(ev, n.wall, n.mono),
                    None => Vec::new(),
                };
                // Judged now that the SA is here (or known not to be): not held again.
                for inb in released {
                    self.edge.handle_inbound(inb, now());
                }
            }
            Event::AuthJob(done) => self.job_done(*done),
            Event::Closed(id) => self.edge.flow_closed(id, now()),
            Event::OutboundClosed((transport, addr)) => {
                self.edge.connection_lost(transport, addr, now());
            }
            Event::Connected(key) => {
                let queued = self.pending.remove(&key).unwrap_or_default();
                for (bytes, token) in queued {
                    self.send_stream_addr(key, bytes, token);
                }
            }
            Event::Resolved(id, targets) => {
                remember_names(&self.shared, targets.iter());
                let hops = targets.iter().map(|t| t.hop).collect();
                self.edge.resolved(id, hops, now());
            }
            Event::NextHops(hops) => {
                info!(targets = hops.len(), "next hops resolved again");
                record_hop_names(&self.shared, &mut self.hop_origins, &hops);
                self.edge.set_next_hops(cfg_hops(&hops), now());
                self.publish_hops();
            }
            Event::Admin(q) => self.answer(q),
            Event::Adopt(a) => self.adopt(*a),
            Event::ConnectFailed(key) => {
                let queued = self.pending.remove(&key).unwrap_or_default();
                warn!(transport = %key.0, addr = %key.1, "next hop unreachable");
                for (_, token) in queued {
                    self.shared.metrics.send_failure(key.0);
                    if let Some(t) = token {
                        self.edge.send_failed(&t, now());
                    }
                }
            }
        }
        self.run_actions();
    }

    /// A worker's outcome: filed with the core, then the request goes through the proxy again and
    /// the core judges it with the outcome. A request whose connection closed meanwhile is
    /// dropped (a binding on a closed flow would never be removed).
    fn job_done(&mut self, done: crate::auth_jobs::Done) {
        let Some((security, pools)) = &self.jobs else {
            return;
        };
        let now = now();
        if let Some(workers) = pools.iter().find(|w| w.kind() == done.kind) {
            workers.finished(&done.key);
        }
        let stream = matches!(done.flow.transport, Transport::Tcp | Transport::Tls);
        let open = || {
            self.shared
                .flows
                .lock()
                .is_ok_and(|t| t.by_id.contains_key(&done.flow.id))
        };
        if stream && !open() {
            debug!(remote = %done.flow.remote, kind = done.kind.label(), "sign-in of a closed connection dropped");
            return;
        }
        security.job_done(done.key, done.outcome, now.wall);
        self.edge.handle_inbound(
            Inbound {
                message: done.message,
                flow: done.flow,
            },
            now,
        );
        security.job_judged(&done.key, now.wall);
    }

    /// The admin API's question.
    fn answer(&self, q: crate::admin::CoreQuery) {
        match q {
            crate::admin::CoreQuery::Registrations { aor, reply } => {
                let _ = reply.send(self.registrations(&aor));
            }
        }
    }

    /// The bindings of `aor` (normalised as the registrar does), local then remote.
    fn registrations(&self, aor: &str) -> Vec<crate::admin::RegistrationView> {
        use crate::admin::RegistrationView;
        let Some(aor) = sagw_proxy::uri::SipUri::parse(aor.trim()).map(|u| u.aor()) else {
            return Vec::new();
        };
        let n = now();
        let registrar = self.edge.registrar();
        let mut out: Vec<RegistrationView> = registrar
            .export_aor(&aor, n)
            .into_iter()
            .map(|r| RegistrationView {
                aor: r.aor,
                device: r.device,
                contact: r.contact,
                transport: r.flow.transport.to_string(),
                remote: r.flow.remote.to_string(),
                expires_unix: r.expires_unix,
                identity: r.endpoint.map(|e| e.identity),
                epid: r.epid,
                local: true,
            })
            .collect();
        for (device, b) in registrar.lookup_remote(&aor, n.mono) {
            out.push(RegistrationView {
                aor: aor.clone(),
                device: device.to_owned(),
                contact: b.node_route.clone(),
                transport: b.peer.0.to_string(),
                remote: b.peer.1.to_string(),
                expires_unix: b
                    .expires
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
                identity: b.endpoint.as_ref().map(|e| e.identity.clone()),
                epid: b.endpoint.as_ref().map(|e| e.epid.clone()),
                local: false,
            });
        }
        out
    }

    /// The other gateways' bindings of `aor` (registrar mode in a pool): requests for it are
    /// relayed to the gateway that holds each client's flow.
    fn install_remote(&mut self, aor: &str, bindings: Vec<crate::pool::SharedBinding>) {
        let n = now();
        let mut installed = Vec::with_capacity(bindings.len());
        for b in bindings {
            let expires = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(b.expires_unix);
            let remote = sagw_proxy::RemoteBinding {
                node_route: b.route,
                peer: (Transport::Tcp, b.peer),
                expires,
                endpoint: b.endpoint,
            };
            match self.edge.install_remote_binding(aor, &b.device, remote, n) {
                Ok(()) => installed.push(b.device),
                Err(sagw_proxy::RemoteBindingError::UntrustedPeer) => warn!(
                    aor = %aor, peer = %b.peer,
                    "a pool gateway is not in proxy.trusted_peers: requests for its clients are not relayed to it"
                ),
                Err(e) => {
                    debug!(aor = %aor, peer = %b.peer, error = %e, "pool binding not installed")
                }
            }
        }
        if let Some(p) = self.pool.as_mut() {
            for gone in p.replace_remote(aor, installed) {
                self.edge.remove_remote_binding(aor, &gone);
            }
        }
    }

    pub(super) fn run_actions(&mut self) {
        while let Some(action) = self.edge.poll_action() {
            match action {
                Action::Send { to, message, token } => self.send(to, &message, token),
                Action::Resolve(req) => self.resolve(req),
                Action::Report(r) => {
                    if let (Report::Binding { aor, .. }, Some(p)) = (&r, self.pool.as_mut()) {
                        p.binding_changed(aor);
                    }
                    self.report(r)
                }
            }
        }
    }

    /// Resolve a name for the core in a task; the targets come back as an event.
    fn resolve(&self, req: sagw_proxy::ResolveRequest) {
        let shared = self.shared.clone();
        self.shared.runtime.spawn(async move {
            let q = crate::resolver::NameQuery {
                host: req.host.trim_end_matches('.').to_ascii_lowercase(),
                port: req.port,
                transport: req.transport,
                secure: req.secure,
            };
            let r = shared.resolver.resolve(&q).await;
            if r.targets.is_empty() {
                debug!(host = %q.host, "a Route names a host that does not resolve");
            }
            shared.post(Event::Resolved(req.id, r.targets)).await;
        });
    }

    /// Publish the next hops' state for the admin API and metrics.
    fn publish_hops(&self) {
        self.shared
            .hop_table
            .publish(self.edge.hop_status(Instant::now()), &self.hop_origins);
    }

    fn report(&self, r: Report) {
        let m = &self.shared.metrics;
        match r {
            Report::Hop(_) => self.publish_hops(),
            Report::Transaction {
                method,
                status,
                elapsed,
            } => m.transaction(&method, status, elapsed),
            Report::Dropped(reason) => {
                m.dropped(reason);
            }
            Report::Limit(l) => m.limit(l.label()),
            Report::Binding { aor, change } => {
                debug!(%aor, ?change, "binding");
                let kind = match change {
                    sagw_proxy::BindingChange::Added => "added",
                    sagw_proxy::BindingChange::Refreshed => "refreshed",
                    sagw_proxy::BindingChange::Removed => "removed",
                };
                m.binding_change(kind);
            }
        }
    }

    fn send(&mut self, to: Target, msg: &Message, token: Option<SendToken>) {
        if tracing::enabled!(target: "sagw::sip", Level::TRACE) {
            trace!(target: "sagw::sip", to = ?to, "send\n{}", redacted(msg));
        }
        self.shared.metrics.message("out", msg);
        let bytes = msg.to_bytes();
        match (to, to.transport()) {
            (_, Transport::Udp) => {
                // A client's datagrams leave from the socket it reached (its NAT binding names
                // that port); datagrams to an address from the first UDP listener. Queued: the
                // pass ends with `flush_udp`.
                let sock = match to {
                    Target::Flow(f) => {
                        let id = ListenerId::of(f.id);
                        self.udp.iter().position(|u| u.listener == id)
                    }
                    Target::Addr { .. } => None,
                }
                .or_else(|| (!self.udp.is_empty()).then_some(0));
                match sock {
                    Some(sock) if bytes.len() <= 65_507 => self.udp_out.push(Outgoing {
                        sock,
                        to: to.addr(),
                        bytes,
                        token,
                    }),
                    _ => self.send_failure(Transport::Udp, token),
                }
            }
            (Target::Flow(f), t) => {
                if let Some(secs) = registration_granted(msg) {
                    self.registered_over(f, secs);
                }
                if !self.write_flow(f, bytes) {
                    self.send_failure(t, token);
                }
            }
            (Target::Addr { transport, addr }, _) => {
                self.send_stream_addr((transport, addr), bytes, token);
            }
        }
    }

    /// Sends the queued datagrams, a `sendmmsg` per run of up to [`BATCH`] for one socket. A
    /// datagram the kernel refuses is reported as a failed send of its token, as an immediate
    /// `sendto` was; what the edge does about it (another next hop, a 503) is sent in turn.
    pub(super) fn flush_udp(&mut self, tx: &mut SendBatch) {
        while !self.udp_out.is_empty() {
            let mut out = std::mem::take(&mut self.udp_out);
            let mut failed = Vec::new();
            let mut start = 0;
            while let Some(first) = out.get(start) {
                let sock = first.sock;
                let run = out
                    .get(start..)
                    .unwrap_or_default()
                    .iter()
                    .take(BATCH)
                    .take_while(|o| o.sock == sock)
                    .count();
                let batch = out.get(start..start + run).unwrap_or_default();
                let sent = match self.udp.get(sock) {
                    Some(u) => tx.send(u.sock.as_raw_fd(), batch),
                    None => 0,
                };
                start += sent;
                if sent < run {
                    // The kernel refused this one: report it, go on with the next.
                    if let Some(o) = out.get_mut(start) {
                        failed.push(o.token.take());
                    }
                    start += 1;
                }
            }
            out.clear();
            // The queue's buffer is kept for the next pass (the failures below may queue more).
            self.udp_out = out;
            if failed.is_empty() {
                return;
            }
            for token in failed {
                self.send_failure(Transport::Udp, token);
            }
            self.run_actions();
        }
    }

    pub(super) fn send_failure(&mut self, t: Transport, token: Option<SendToken>) {
        self.shared.metrics.send_failure(t);
        if let Some(token) = token {
            self.edge.send_failed(&token, now());
        }
    }
}

/// The longest registration a 2xx to a REGISTER grants, in seconds: its Contacts' `expires`
/// (RFC 3261 §10.3: each binding's), else its `Expires`, else none (0: an unregistration's, a
/// query's with no binding left). `None` for any other message.
fn registration_granted(msg: &Message) -> Option<u64> {
    if !msg.status_code().is_some_and(|c| (200..300).contains(&c))
        || msg.cseq().is_none_or(|c| c.method != "REGISTER")
    {
        return None;
    }
    msg.header_values("Contact")
        .filter_map(|c| {
            sagw_sip::parse_name_addr(c)
                .ok()?
                .param("expires")?
                .trim()
                .parse::<u64>()
                .ok()
        })
        .max()
        .or_else(|| msg.header("Expires")?.trim().parse().ok())
        .or(Some(0))
}
