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
//! The limits are those of the connection tasks: an idle timer and a slow-message timer (checked
//! every [`SWEEP`] rather than armed per connection: they are in seconds), a write queue of
//! `limits.write_queue_messages` messages behind a socket that takes nothing, and
//! `limits.write_timeout_secs` for a socket to take any byte of what waits for it. A peer that
//! sends faster than the core reads is read [`READS_PER_PASS`] times a pass, so one connection
//! never keeps the core from the others.

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
    /// Plain TCP: bytes the socket has not taken yet, from `out_at` (over TLS rustls keeps the
    /// records it could not write).
    out: Vec<u8>,
    out_at: usize,
    /// Messages queued since the socket last took everything.
    queued: usize,
    /// Since when the socket has taken nothing of what waits for it.
    stalled_since: Option<Instant>,
    /// A pong owed while other bytes wait: one, however many pings came meanwhile.
    pong_owed: bool,
    last_rx: Instant,
    partial_since: Option<Instant>,
    /// The limits in effect when the connection opened (a reload applies to the next ones).
    settings: Arc<Settings>,
    /// Counted in `Shared::core_backlogged`.
    counted: bool,
    /// `epoll` said the peer has closed its side (or the socket failed): read to the end.
    end_reported: bool,
    _slot: Option<IpSlot>,
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
            // Unbounded in rustls: the write queue bounds what waits for the socket.
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
            queued: 0,
            stalled_since: None,
            pong_owed: false,
            last_rx: now,
            partial_since: None,
            settings,
            counted: false,
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
        self.stalled_since.is_some()
    }

    /// Brings `Shared::core_backlogged` up to date after a read or a write.
    pub(super) fn count_backlog(&mut self, counter: &AtomicUsize) {
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

    /// Takes the connection out of `Shared::core_backlogged` as it closes.
    pub(super) fn uncount_backlog(&mut self, counter: &AtomicUsize) {
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
        let filled = match self.tls.as_deref_mut() {
            None => read_plain(&mut self.sock, &mut self.framer, buf, to_end),
            Some(tls) => read_tls(&mut self.sock, tls, &mut self.framer, buf, to_end),
        };
        let (pass, mut closed, got) = match filled {
            Ok((pass, got)) => (pass, None, got),
            Err((why, got)) => (Pass::Drained, Some(why), got),
        };
        // Records the reads made rustls owe (a key update's answer) leave through `flush`,
        // which keeps the stall timer and the write queue's count true: rustls's queue holds
        // any backlog too, and writing it here behind `flush`'s back left a connection marked
        // stalled after its backlog had gone.
        if closed.is_none()
            && self.tls.as_deref().is_some_and(|t| t.wants_write())
            && let Err(why) = self.flush()
        {
            closed = Some(why);
        }
        if got {
            self.last_rx = Instant::now();
        }
        loop {
            match self.framer.next_frame() {
                Ok(Some(Frame::Message(message))) => {
                    self.partial_since = None;
                    messages.push(message);
                }
                Ok(Some(Frame::KeepAlive(KeepAliveKind::Ping))) => {
                    if closed.is_none()
                        && let Err(why) = self.pong()
                    {
                        closed = Some(why);
                    }
                }
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
        // A lone CRLF may be held back by the framer (pong or half a ping): not a partial message.
        if self.framer.buffered() > 4 {
            self.partial_since.get_or_insert(self.last_rx);
        } else {
            self.partial_since = None;
        }
        (pass, closed)
    }

    /// Queues `bytes` and writes what the socket takes. `Err(Killed)` when the write queue is
    /// full: the peer does not read.
    pub(super) fn send(&mut self, bytes: &[u8]) -> Result<(), Closed> {
        if self.stalled_since.is_some() {
            if self.queued >= self.settings.write_queue {
                return Err(Closed::Killed);
            }
            self.queued += 1;
        }
        self.queue(bytes)?;
        if self.tls.is_none() && self.out.len() == self.out_at {
            // All of it went.
            return Ok(());
        }
        self.flush()
    }

    fn pong(&mut self) -> Result<(), Closed> {
        if self.stalled_since.is_some() {
            self.pong_owed = true;
            return Ok(());
        }
        self.queue(b"\r\n")?;
        self.flush()
    }

    fn queue(&mut self, bytes: &[u8]) -> Result<(), Closed> {
        match self.tls.as_deref_mut() {
            // Nothing waiting: written from the caller's buffer, only what the socket does not
            // take is copied (most answers leave whole, and the connection keeps no buffer).
            None if self.out.len() == self.out_at => {
                let at = write_taken(&mut self.sock, bytes)?;
                if let Some(rest) = bytes.get(at..).filter(|r| !r.is_empty()) {
                    self.out.clear();
                    self.out_at = 0;
                    self.out.extend_from_slice(rest);
                    // Stalled from now: `flush` would only hear "would block" again.
                    self.stalled_since.get_or_insert_with(Instant::now);
                }
                Ok(())
            }
            None => {
                self.out.extend_from_slice(bytes);
                Ok(())
            }
            // No buffer limit is set on the session: the write queue above bounds it.
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
            let (waiting, progressed) = match self.tls.as_deref_mut() {
                None => write_plain(&mut self.sock, &mut self.out, &mut self.out_at)?,
                Some(tls) => write_tls(&mut self.sock, tls)?,
            };
            if waiting {
                if progressed || self.stalled_since.is_none() {
                    self.stalled_since = Some(Instant::now());
                }
                return Ok(());
            }
            self.stalled_since = None;
            self.queued = 0;
            if !std::mem::take(&mut self.pong_owed) {
                return Ok(());
            }
            self.queue(b"\r\n")?;
        }
    }

    /// The timer that has run out at `now`, if one has.
    pub(super) fn expired(&self, now: Instant) -> Option<Closed> {
        let s = &self.settings;
        if self
            .stalled_since
            .is_some_and(|t| now.saturating_duration_since(t) >= s.write_timeout)
        {
            return Some(Closed::WriteTimeout);
        }
        if self
            .partial_since
            .is_some_and(|t| now.saturating_duration_since(t) >= s.message_timeout)
        {
            return Some(Closed::MessageTimeout);
        }
        if now.saturating_duration_since(self.last_rx) >= s.idle_timeout {
            return Some(Closed::IdleTimeout);
        }
        None
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

fn read_tls(
    sock: &mut mio::net::TcpStream,
    tls: &mut rustls::ServerConnection,
    framer: &mut StreamFramer,
    buf: &mut [u8],
    to_end: bool,
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
            let _ = tls.write_tls(sock);
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

/// `(bytes still waiting, the socket took some)`.
fn write_plain(
    sock: &mut mio::net::TcpStream,
    out: &mut Vec<u8>,
    at: &mut usize,
) -> Result<(bool, bool), Closed> {
    let taken = write_taken(sock, out.get(*at..).unwrap_or_default())?;
    *at += taken;
    let progressed = taken > 0;
    if *at < out.len() {
        return Ok((true, progressed));
    }
    out.clear();
    *at = 0;
    // A backlog's buffer is not kept once it has gone: most connections never need one.
    if out.capacity() > READ_CHUNK {
        *out = Vec::new();
    }
    Ok((false, progressed))
}

fn write_tls(
    sock: &mut mio::net::TcpStream,
    tls: &mut rustls::ServerConnection,
) -> Result<(bool, bool), Closed> {
    let mut progressed = false;
    while tls.wants_write() {
        match tls.write_tls(sock) {
            Ok(0) => return Err(Closed::WriteError),
            Ok(_) => progressed = true,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok((true, progressed)),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Err(Closed::WriteError),
        }
    }
    Ok((false, progressed))
}

/// The read buffer the core lends each connection in turn.
pub(super) fn read_buffer() -> Vec<u8> {
    vec![0u8; READ_CHUNK]
}
