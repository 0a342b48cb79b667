//! Accepted stream connections that the core thread reads and writes itself, once set up.
//!
//! Why on the core thread: a connection task read each message, handed it to the core over the
//! event channel (waking the core through the eventfd when it slept), and the core handed the
//! answer back through the connection's queue (waking a tokio worker through the runtime's
//! unpark). On two CPUs that was a context switch for most messages, and the stream transports
//! cost 1.6–1.8× UDP's CPU per sign-in where UDP, read on this thread, pays none of it. Here a
//! connection is a socket in the core's own `epoll`: read, framed and answered on one thread, as
//! a datagram is.
//!
//! What stays in tokio tasks: accepting, the PROXY protocol header, the TLS handshake (whose
//! rustls session, its keys and buffered records included, then moves here), and the
//! connections the gateway opens to next hops.
//!
//! The limits: an idle timer and a slow-message timer (checked every [`SWEEP`] rather than armed
//! per connection: they are in seconds), a write queue of at most `limits.write_queue_messages`
//! messages and `limits.write_queue_bytes` bytes behind a socket that does not take them, and
//! `limits.write_timeout_secs` for the socket to catch up with what waits for it
//! ([`DrainDeadline`]). A peer that sends faster than the core reads is read [`READS_PER_PASS`]
//! times a pass, so one connection never keeps the core from the others.

use std::io::{Read, Write};

use super::*;

/// mio tokens of stream connections: this bit, with the flow's sequence number below it (the
/// waker and the UDP sockets take the small tokens).
pub(super) const STREAM_TOKEN: usize = 1 << 56;
/// Reads of one connection in a pass before the others get their turn.
const READS_PER_PASS: usize = 4;
/// How often the connections' idle, slow-message and write timers are checked.
pub(super) const SWEEP: std::time::Duration = std::time::Duration::from_millis(250);
/// Bytes read from a socket at a time.
const READ_CHUNK: usize = 16 * 1024;
/// The longest registration that keeps a silent connection open: a day, well past any
/// `registrar.max_expires_secs` a deployment uses, and a bound on what a 2xx from a registrar
/// behind (edge mode) may claim.
const MAX_REGISTERED_SECS: u64 = 86_400;

/// A connection set up by its accept task, handed to the core.
pub(super) struct Adopted {
    pub(super) stream: std::net::TcpStream,
    /// The rustls session after its handshake; `None` on TCP.
    pub(super) tls: Option<Box<rustls::ServerConnection>>,
    pub(super) flow: Flow,
    /// Its place under `limits.max_connections_per_ip`, given back when it closes.
    pub(super) slot: Option<IpSlot>,
    pub(super) trust: FlowTrust,
}

/// A connection the core reads and writes.
pub(super) struct CoreStream {
    sock: mio::net::TcpStream,
    tls: Option<Box<rustls::ServerConnection>>,
    flow: Flow,
    framer: StreamFramer,
    /// Bytes the socket has not taken yet, from `out_at`. Over TLS these are records: what the
    /// socket refuses is moved out of rustls at once, so that this one buffer holds (and
    /// `limits.write_queue_bytes` bounds) the backlog on both transports. rustls kept it before,
    /// unbounded and uncounted but by messages.
    out: Vec<u8>,
    out_at: usize,
    /// Bytes the socket has taken from `out` since the connection opened: the scale on which a
    /// [`DrainDeadline`] is set.
    out_taken: u64,
    /// Messages queued since the socket last took everything.
    queued: usize,
    /// Set while bytes wait for the socket.
    drain: Option<DrainDeadline>,
    /// A pong owed while other bytes wait: one, however many pings came meanwhile.
    pong_owed: bool,
    last_rx: Instant,
    /// Until when a registration made over this connection lasts (the last 2xx to a REGISTER
    /// sent over it): the idle timer does not close it before (see [`CoreStream::registered`]).
    registered_until: Option<Instant>,
    partial_since: Option<Instant>,
    /// The limits in effect when the connection opened (a reload applies to the next ones).
    settings: Arc<Settings>,
    /// Counted in `Shared::core_backlogged`.
    counted: bool,
    /// Its part of the core's sum of what the connections' backlogs hold
    /// (`limits.write_backlog_total_bytes`): `held()` as of the last count.
    counted_bytes: usize,
    /// `epoll` said the peer has closed its side (or the socket failed): read to the end.
    end_reported: bool,
    _slot: Option<IpSlot>,
}

/// While bytes wait for the socket: what it must have taken, within `limits.write_timeout_secs`
/// of when this was set. Once it has, and bytes still wait, a new deadline covers them.
///
/// Why not "since the socket last took a byte", as before: a peer that read a trickle (a segment
/// now and then, and a request to make the gateway write again) reset that timer each time and
/// kept a backlog that only grew, for ever. Why not "since the backlog was last empty": a client
/// that reads all it is sent, on a slow link, while more keeps coming, would be closed although
/// nothing it is sent waits long. Here what waits must leave within `write_timeout` (30 s by
/// default), whatever comes after it: every byte leaves within twice that or the connection
/// closes. A client on a bad mobile link that takes a 100 KB backlog in a few seconds never
/// comes near it; one that does not keep up with its own backlog is closed, and to hold a full
/// backlog (`limits.write_queue_bytes`) a peer must read it all every `write_timeout`.
#[derive(Debug, Clone, Copy)]
struct DrainDeadline {
    /// `CoreStream::out_taken` once the socket has taken what waited when this was set.
    through: u64,
    set_at: Instant,
}

/// What one read pass left.
pub(super) enum Pass {
    /// The socket has no more for now.
    Drained,
    /// The budget ran out first: read again next pass.
    More,
}

impl CoreStream {
    /// The stream is non-blocking already (tokio's sockets are, and stay so through `into_std`).
    pub(super) fn new(mut a: Adopted, settings: Arc<Settings>) -> CoreStream {
        if let Some(tls) = a.tls.as_deref_mut() {
            // Unbounded in rustls: `flush` moves what the socket refuses into `out`, which the
            // write queue's limits bound. A limit here would make rustls take part of a message.
            tls.set_buffer_limit(None);
        }
        let now = Instant::now();
        CoreStream {
            sock: mio::net::TcpStream::from_std(a.stream),
            tls: a.tls,
            flow: a.flow,
            framer: StreamFramer::new(settings.sip_limits.clone()),
            out: Vec::new(),
            out_at: 0,
            out_taken: 0,
            queued: 0,
            drain: None,
            pong_owed: false,
            last_rx: now,
            registered_until: None,
            partial_since: None,
            settings,
            counted: false,
            counted_bytes: 0,
            end_reported: false,
            _slot: a.slot,
        }
    }

    pub(super) fn flow(&self) -> Flow {
        self.flow
    }

    /// The certificate chain the TLS client presented, leaf first (none over TCP).
    pub(super) fn peer_certificates(&self) -> Option<&[rustls_pki_types::CertificateDer<'static>]> {
        self.tls.as_ref().and_then(|t| t.peer_certificates())
    }

    /// `epoll` reported the peer's FIN (or an error) with its readiness: the next reads go on
    /// past a short one, to the end of the stream. A FIN queued with the last data raises no
    /// edge of its own, so the read that would see it must not be saved.
    pub(super) fn end_reported(&mut self) {
        self.end_reported = true;
    }

    pub(super) fn socket(&mut self) -> &mut mio::net::TcpStream {
        &mut self.sock
    }

    /// True while bytes wait for the socket.
    pub(super) fn backlogged(&self) -> bool {
        self.drain.is_some()
    }

    /// The bytes waiting for the socket.
    fn waiting(&self) -> usize {
        self.out.len().saturating_sub(self.out_at)
    }

    /// What its backlog holds, as last counted into the core's sum.
    pub(super) fn counted_bytes(&self) -> usize {
        self.counted_bytes
    }

    /// The memory its backlog holds: the buffer's capacity, not only the bytes still waiting in
    /// it. A peer that reads a large backlog down to a few bytes and stops keeps the whole
    /// buffer (it is given back once empty), and counting what waits would let many such peers
    /// hold far more than the sum says.
    fn held(&self) -> usize {
        self.out.capacity().max(self.waiting())
    }

    /// Brings `Shared::core_backlogged` and the core's sum of what backlogs hold (`total`) up to
    /// date after a read or a write.
    pub(super) fn count_backlog(&mut self, counter: &AtomicUsize, total: &mut usize) {
        let held = self.held();
        *total = total
            .saturating_sub(self.counted_bytes)
            .saturating_add(held);
        self.counted_bytes = held;
        let backlogged = self.backlogged();
        if backlogged != self.counted {
            if backlogged {
                counter.fetch_add(1, Ordering::Relaxed);
            } else {
                counter.fetch_sub(1, Ordering::Relaxed);
            }
            self.counted = backlogged;
        }
    }

    /// Takes the connection out of `Shared::core_backlogged` and the core's sum of what
    /// backlogs hold as it closes.
    pub(super) fn uncount_backlog(&mut self, counter: &AtomicUsize, total: &mut usize) {
        *total = total.saturating_sub(std::mem::take(&mut self.counted_bytes));
        if std::mem::take(&mut self.counted) {
            counter.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Reads what the socket has (up to the pass's budget) into the framer, then takes the
    /// complete frames: messages into `messages`, pings answered. Messages framed before an
    /// error are still given; the error closes the connection after them.
    pub(super) fn read(
        &mut self,
        buf: &mut [u8],
        messages: &mut Vec<Message>,
        metrics: &Metrics,
    ) -> (Pass, Option<Closed>) {
        let to_end = self.end_reported;
        let nothing_waits = self.waiting() == 0;
        let filled = match self.tls.as_deref_mut() {
            None => read_plain(&mut self.sock, &mut self.framer, buf, to_end),
            Some(tls) => read_tls(
                &mut self.sock,
                tls,
                &mut self.framer,
                buf,
                to_end,
                nothing_waits,
            ),
        };
        let (pass, mut closed, got) = match filled {
            Ok((pass, got)) => (pass, None, got),
            Err((why, got)) => (Pass::Drained, Some(why), got),
        };
        // Records the reads made rustls owe (a key update's answer) leave through `flush`, behind
        // the records waiting in `out`: written here they would go out of order, and the write
        // queue's deadline and counts would not see them.
        if closed.is_none()
            && self.tls.as_deref().is_some_and(|t| t.wants_write())
            && let Err(why) = self.flush()
        {
            closed = Some(why);
        }
        if got {
            self.last_rx = Instant::now();
        }
        // One pong for all the pings of a pass: a peer that sends nothing but pings (362 in a
        // segment) had a write, and over TLS a record, made for each on the core thread.
        let mut pinged = false;
        loop {
            match self.framer.next_frame() {
                Ok(Some(Frame::Message(message))) => {
                    self.partial_since = None;
                    messages.push(message);
                }
                Ok(Some(Frame::KeepAlive(KeepAliveKind::Ping))) => pinged = true,
                Ok(Some(Frame::KeepAlive(KeepAliveKind::Pong))) => {}
                Ok(None) => break,
                Err(e) => {
                    metrics.parse_error(self.flow.transport);
                    if let Some(l) = parse_limit_label(&e) {
                        metrics.limit(l);
                    }
                    debug!(remote = %self.flow.remote, error = %e, "unframeable input: closing");
                    return (Pass::Drained, Some(Closed::ParseError));
                }
            }
        }
        if pinged
            && closed.is_none()
            && let Err(why) = self.pong()
        {
            closed = Some(why);
        }
        // A lone CRLF may be held back by the framer (pong or half a ping): not a partial message.
        if self.framer.buffered() > 4 {
            self.partial_since.get_or_insert(self.last_rx);
        } else {
            self.partial_since = None;
        }
        (pass, closed)
    }

    /// Queues `bytes` and writes what the socket takes. `Err(Killed)` when the write queue
    /// holds its limit of messages, `Err(BacklogBytes)` when `bytes` would take it past its limit
    /// of bytes: the peer does not read (or not as fast as it asks for answers).
    pub(super) fn send(&mut self, bytes: &[u8]) -> Result<(), Closed> {
        if self.backlogged() {
            if self.queued >= self.settings.write_queue {
                return Err(Closed::Killed);
            }
            // Over TLS what waits is records, a little more than the messages in them: the
            // bound is on what the gateway holds.
            if self.waiting().saturating_add(bytes.len()) > self.settings.write_queue_bytes {
                return Err(Closed::BacklogBytes);
            }
            self.queued += 1;
        }
        self.queue(bytes)?;
        if self.tls.is_none() && self.waiting() == 0 {
            // All of it went.
            return Ok(());
        }
        self.flush()
    }

    fn pong(&mut self) -> Result<(), Closed> {
        if self.backlogged() {
            self.pong_owed = true;
            return Ok(());
        }
        self.queue(b"\r\n")?;
        self.flush()
    }

    fn queue(&mut self, bytes: &[u8]) -> Result<(), Closed> {
        match self.tls.as_deref_mut() {
            // Nothing waiting: written from the caller's buffer, only what the socket does not
            // take is copied (most answers leave whole, and the connection keeps no buffer). The
            // `flush` that follows sets the deadline for the rest.
            None if self.out.len() == self.out_at => {
                let at = write_taken(&mut self.sock, bytes)?;
                if let Some(rest) = bytes.get(at..).filter(|r| !r.is_empty()) {
                    self.out.clear();
                    self.out_at = 0;
                    self.out.extend_from_slice(rest);
                }
                Ok(())
            }
            None => {
                compact(&mut self.out, &mut self.out_at);
                self.out.extend_from_slice(bytes);
                Ok(())
            }
            // rustls holds the records until the `flush` that follows: written, or moved to `out`.
            Some(tls) => tls
                .writer()
                .write_all(bytes)
                .map_err(|_| Closed::WriteError),
        }
    }

    /// Writes what waits, as far as the socket takes it. Called again when the socket says it
    /// is writable.
    pub(super) fn flush(&mut self) -> Result<(), Closed> {
        loop {
            self.write_out()?;
            let waiting = self.waiting();
            if waiting > 0 {
                let met = self.drain.is_none_or(|d| self.out_taken >= d.through);
                if met {
                    self.drain = Some(DrainDeadline {
                        through: self.out_taken.saturating_add(waiting as u64),
                        set_at: Instant::now(),
                    });
                }
                return Ok(());
            }
            self.drain = None;
            self.queued = 0;
            if !std::mem::take(&mut self.pong_owed) {
                return Ok(());
            }
            self.queue(b"\r\n")?;
        }
    }

    /// Writes `out`, then (once all of it has gone) rustls's records, as far as the socket takes
    /// them. The records it refuses are moved to `out`, behind what waits there already.
    fn write_out(&mut self) -> Result<(), Closed> {
        let taken = write_taken(
            &mut self.sock,
            self.out.get(self.out_at..).unwrap_or_default(),
        )?;
        self.out_at += taken;
        self.out_taken = self.out_taken.saturating_add(taken as u64);
        if self.out_at == self.out.len() {
            // A backlog's buffer is not kept once it has gone: most connections never need one,
            // and a connection's `held` is then nothing.
            self.out = Vec::new();
            self.out_at = 0;
        }
        let Some(tls) = self.tls.as_deref_mut() else {
            return Ok(());
        };
        if self.out.is_empty() && !write_tls(&mut self.sock, tls)? {
            return Ok(());
        }
        compact(&mut self.out, &mut self.out_at);
        while tls.wants_write() {
            match tls.write_tls(&mut self.out) {
                Ok(0) => break,
                Ok(_) => {}
                Err(_) => return Err(Closed::WriteError),
            }
        }
        Ok(())
    }

    /// The timer that has run out at `now`, if one has.
    pub(super) fn expired(&self, now: Instant) -> Option<Closed> {
        let s = &self.settings;
        if self
            .drain
            .is_some_and(|d| now.saturating_duration_since(d.set_at) >= s.write_timeout)
        {
            return Some(Closed::WriteTimeout);
        }
        if self
            .partial_since
            .is_some_and(|t| now.saturating_duration_since(t) >= s.message_timeout)
        {
            return Some(Closed::MessageTimeout);
        }
        if now.saturating_duration_since(self.last_rx) >= s.idle_timeout
            && self.registered_until.is_none_or(|until| now >= until)
        {
            return Some(Closed::IdleTimeout);
        }
        None
    }

    /// A 2xx to a REGISTER went out over this connection, granting `for_secs` (the longest of
    /// its contacts'): the client is reachable only through this connection (RFC 5626 §5.3), and
    /// many phones send nothing until their refresh (no CRLF keep-alive unless outbound is
    /// negotiated), so the idle timer leaves the connection open that long. A later 2xx replaces
    /// it (an unregistration's grants nothing).
    pub(super) fn registered(&mut self, now: Instant, for_secs: u64) {
        self.registered_until =
            Some(now + std::time::Duration::from_secs(for_secs.min(MAX_REGISTERED_SECS)));
    }

    /// The end of the connection: over TLS a close_notify when the gateway stops (as the
    /// connection tasks send), then the socket closes as it is dropped.
    pub(super) fn close(mut self, why: Closed) {
        if why == Closed::Shutdown {
            if let Some(tls) = self.tls.as_deref_mut() {
                tls.send_close_notify();
            }
            // Best effort: the peer may not be reading, and the core does not wait for it.
            let _ = self.flush();
            let _ = self.sock.shutdown(std::net::Shutdown::Write);
        }
    }
}

/// `Err` carries why the connection ends and whether anything was read before.
type Filled = Result<(Pass, bool), (Closed, bool)>;

/// `to_end`: `epoll` reported the peer's FIN, so a short read does not end the pass.
fn read_plain(
    sock: &mut mio::net::TcpStream,
    framer: &mut StreamFramer,
    buf: &mut [u8],
    to_end: bool,
) -> Filled {
    let mut got = false;
    for _ in 0..READS_PER_PASS {
        match sock.read(buf) {
            Ok(0) => return Err((Closed::Eof, got)),
            Ok(n) => {
                framer.push(buf.get(..n).unwrap_or_default());
                got = true;
                // A short read emptied the receive queue: data that arrives after it raises a
                // new edge, so the read that would only say "would block" is saved. Not once the
                // FIN is known to be there: it raises no new edge.
                if n < buf.len() && !to_end {
                    return Ok((Pass::Drained, got));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                return Ok((Pass::Drained, got));
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Err((Closed::ReadError, got)),
        }
    }
    Ok((Pass::More, got))
}

/// `nothing_waits`: no records wait in the connection's `out`, so an alert may go straight to
/// the socket (behind them it would break the stream).
fn read_tls(
    sock: &mut mio::net::TcpStream,
    tls: &mut rustls::ServerConnection,
    framer: &mut StreamFramer,
    buf: &mut [u8],
    to_end: bool,
    nothing_waits: bool,
) -> Filled {
    let mut got = false;
    for _ in 0..READS_PER_PASS {
        // Plaintext first: the handshake, or the last pass, may have left some.
        got |= plaintext(tls, framer, buf).map_err(|why| (why, got))?;
        let mut counted = Counted { sock, short: false };
        let read = tls.read_tls(&mut counted);
        let short = counted.short;
        let eof = match read {
            Ok(n) => n == 0,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                return Ok((Pass::Drained, got));
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return Err((Closed::ReadError, got)),
        };
        if tls.process_new_packets().is_err() {
            // rustls queued an alert saying why: sent if the socket takes it.
            if nothing_waits {
                let _ = tls.write_tls(sock);
            }
            return Err((Closed::ReadError, got));
        }
        got |= plaintext(tls, framer, buf).map_err(|why| (why, got))?;
        if eof {
            return Err((Closed::Eof, got));
        }
        // As for plain TCP: a short read emptied the receive queue.
        if short && !to_end {
            return Ok((Pass::Drained, got));
        }
    }
    Ok((Pass::More, got))
}

/// The socket as rustls reads it, noting whether a read returned less than asked for.
struct Counted<'a> {
    sock: &'a mut mio::net::TcpStream,
    short: bool,
}

impl Read for Counted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.sock.read(buf)?;
        self.short = n > 0 && n < buf.len();
        Ok(n)
    }
}

/// Moves the decrypted bytes into the framer; `Err(Eof)` once the peer's close_notify is read.
fn plaintext(
    tls: &mut rustls::ServerConnection,
    framer: &mut StreamFramer,
    buf: &mut [u8],
) -> Result<bool, Closed> {
    let mut got = false;
    loop {
        match tls.reader().read(buf) {
            Ok(0) => return Err(Closed::Eof),
            Ok(n) => {
                framer.push(buf.get(..n).unwrap_or_default());
                got = true;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(got),
            // The peer closed the socket without a close_notify.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(Closed::Eof),
            Err(_) => return Err(Closed::ReadError),
        }
    }
}

/// Writes `bytes` until the socket would block: how many it took.
fn write_taken(sock: &mut mio::net::TcpStream, bytes: &[u8]) -> Result<usize, Closed> {
    let mut at = 0;
    while let Some(rest) = bytes.get(at..).filter(|r| !r.is_empty()) {
        match sock.write(rest) {
            Ok(0) => return Err(Closed::WriteError),
            Ok(n) => at += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Err(Closed::WriteError),
        }
    }
    Ok(at)
}

/// Drops what the socket has taken from the front of `out` once that is half of it or more: a
/// backlog read slowly while more is queued behind it would otherwise keep in memory everything
/// it was ever sent until it drained. Half: each byte is moved about once.
fn compact(out: &mut Vec<u8>, at: &mut usize) {
    if *at > 0 && *at >= out.len() / 2 {
        out.drain(..*at);
        *at = 0;
    }
}

/// Writes rustls's records to the socket until it would block: true when some are left.
fn write_tls(
    sock: &mut mio::net::TcpStream,
    tls: &mut rustls::ServerConnection,
) -> Result<bool, Closed> {
    while tls.wants_write() {
        match tls.write_tls(sock) {
            Ok(0) => return Err(Closed::WriteError),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Err(Closed::WriteError),
        }
    }
    Ok(false)
}

/// The read buffer the core lends each connection in turn.
pub(super) fn read_buffer() -> Vec<u8> {
    vec![0u8; READ_CHUNK]
}
