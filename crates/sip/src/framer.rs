//! Sans-IO framing of SIP over stream transports (TCP, TLS).

use crate::error::ParseError;
use crate::message::Message;
use crate::parse::{Framing, Limits, parse_core};

/// The end of a header section. Built once: `memmem::find` builds its searcher on every call,
/// and the framer searches once per message.
static HEADER_END: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\r\n\r\n"));

/// RFC 5626 §4.4.1 keep-alives seen between messages on a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAliveKind {
    /// Double CRLF: the peer asks for a pong (answer with a single CRLF).
    Ping,
    /// Single CRLF: the peer answers our ping.
    Pong,
}

/// One unit taken off a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete message.
    Message(Message),
    /// A keep-alive between messages.
    KeepAlive(KeepAliveKind),
}

/// Accumulates stream bytes and cuts them into messages and keep-alives.
///
/// On a stream Content-Length is mandatory (RFC 3261 §18.3). Any error leaves the stream without
/// trustworthy message boundaries: the framer then returns the same error forever and the caller
/// must close the connection.
///
/// A lone CRLF at the end of the buffered bytes is held back until the next bytes show whether
/// it is a pong or the first half of a ping split across two segments; as a server mostly
/// receives pings, reporting a pong early would leave such a ping unanswered.
#[derive(Debug)]
pub struct StreamFramer {
    limits: Limits,
    buf: Vec<u8>,
    /// Start of unconsumed bytes in `buf`.
    pos: usize,
    /// Bytes of the current message known to be needed before parsing again is worthwhile.
    need: usize,
    /// Bytes of the current message already searched for the end of the header section.
    scanned: usize,
    failed: Option<ParseError>,
}

/// The most buffer a framer keeps once everything in it was framed: a few ordinary messages.
const RETAINED_CAPACITY: usize = 16 * 1024;

impl StreamFramer {
    /// A framer with the given limits.
    pub fn new(limits: Limits) -> Self {
        StreamFramer {
            limits,
            buf: Vec::new(),
            pos: 0,
            need: 0,
            scanned: 0,
            failed: None,
        }
    }

    /// Append received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        // Compact lazily so that a burst of small messages does not move bytes each time.
        if self.pos > 0 && (self.pos == self.buf.len() || self.pos >= 4096) {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The next complete frame, `Ok(None)` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, ParseError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let rest = self.buf.get(self.pos..).unwrap_or(&[]);
        if rest.starts_with(b"\r\n") {
            return Ok(match rest.get(2..4) {
                Some(b"\r\n") => {
                    self.pos += 4;
                    Some(Frame::KeepAlive(KeepAliveKind::Ping))
                }
                Some(b) if b.first() != Some(&b'\r') => {
                    self.pos += 2;
                    Some(Frame::KeepAlive(KeepAliveKind::Pong))
                }
                // "\r\n", "\r\n\r" or "\r\n\r" + non-LF: wait for more bytes (a ping may be split).
                _ if rest.get(3).is_none() => None,
                _ => {
                    self.pos += 2;
                    Some(Frame::KeepAlive(KeepAliveKind::Pong))
                }
            });
        }
        if rest.is_empty() || rest.len() < self.need {
            return Ok(None);
        }
        if self.need == 0 {
            // Look for the end of the header section in the new bytes only, so that a peer
            // trickling a header byte by byte costs linear, not quadratic, work.
            let from = self.scanned.saturating_sub(3);
            let tail = rest.get(from..).unwrap_or(&[]);
            if HEADER_END.find(tail).is_none() {
                self.scanned = rest.len();
                if rest.len() <= self.limits.max_message_bytes {
                    return Ok(None);
                }
                // Too long for a header section: report the first syntax error when there is
                // one (more useful in logs), the size otherwise.
                let e = match parse_core(rest, &self.limits, Framing::Stream) {
                    Err(ParseError::Incomplete) | Ok(_) => ParseError::TooLarge {
                        limit: self.limits.max_message_bytes,
                    },
                    Err(e) => e,
                };
                return self.fail(e);
            }
        }
        match parse_core(rest, &self.limits, Framing::Stream) {
            Ok((message, used)) => {
                self.pos += used;
                self.need = 0;
                self.scanned = 0;
                // A large message's buffer is not kept for the connection's life: ten thousand
                // connections that each sent one 64 KB request, then only pings, held 1 GB.
                if self.pos == self.buf.len() && self.buf.capacity() > RETAINED_CAPACITY {
                    self.buf = Vec::new();
                    self.pos = 0;
                }
                Ok(Some(Frame::Message(message)))
            }
            Err(ParseError::Incomplete) => {
                if rest.len() > self.limits.max_message_bytes {
                    return self.fail(ParseError::TooLarge {
                        limit: self.limits.max_message_bytes,
                    });
                }
                // Re-parse only once the bytes announced so far can be complete.
                self.need = announced_len(rest).unwrap_or(rest.len() + 1);
                Ok(None)
            }
            Err(e) => self.fail(e),
        }
    }

    fn fail(&mut self, e: ParseError) -> Result<Option<Frame>, ParseError> {
        self.failed = Some(e.clone());
        self.buf = Vec::new();
        self.pos = 0;
        Err(e)
    }
}

/// Total length of the message at the start of `rest` when its header section is complete
/// (only Content-Length is needed; the full parse happens once the body is there).
fn announced_len(rest: &[u8]) -> Option<usize> {
    let head_end = HEADER_END.find(rest)? + 4;
    let head = rest.get(..head_end)?;
    let mut cl = None;
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .peekable();
    while let Some(line) = lines.next() {
        let Some(colon) = memchr::memchr(b':', line) else {
            continue;
        };
        let name = line.get(..colon).unwrap_or(&[]).trim_ascii_end();
        if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l") {
            // The value may be folded onto the lines below (RFC 3261 §7.3.1), as the parser
            // reads it: unread here, the framer parsed the whole head again at every read
            // until the body was in.
            let mut v = std::str::from_utf8(line.get(colon + 1..).unwrap_or(&[]))
                .ok()?
                .trim()
                .to_owned();
            while let Some(cont) =
                lines.next_if(|l| l.first().is_some_and(|b| *b == b' ' || *b == b'\t'))
            {
                // The parser joins the lines with a space.
                v.push(' ');
                v.push_str(std::str::from_utf8(cont).ok()?.trim());
            }
            cl = v.trim().parse::<usize>().ok();
        }
    }
    head_end.checked_add(cl?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The length a head announces is what the parser will read, a folded Content-Length
    /// included: the framer waits for that many bytes before it parses the head again. Unread,
    /// it parsed a 35 KB head again at each of 30 000 one-byte reads of the body.
    #[test]
    fn the_announced_length_reads_a_folded_content_length() {
        let head = "MESSAGE sip:b@x SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nFrom: <sip:a@x>;tag=1\r\n\
To: <sip:b@x>\r\nCall-ID: c\r\nCSeq: 1 MESSAGE\r\nContent-Length:\r\n\t 30000\r\nX: y\r\n\r\n";
        assert_eq!(
            announced_len(head.as_bytes()),
            Some(head.len() + 30_000),
            "{head}"
        );
        let plain = head.replace("Content-Length:\r\n\t 30000", "l: 7");
        assert_eq!(announced_len(plain.as_bytes()), Some(plain.len() + 7));

        // And the parser agrees: the whole message parses once the 30 000 bytes are in.
        let mut f = StreamFramer::new(Limits::default());
        f.push(head.as_bytes());
        let first = f.next_frame();
        assert!(matches!(first, Ok(None)), "{first:?}");
        assert_eq!(f.need, head.len() + 30_000);
        f.push(&vec![b'a'; 30_000]);
        assert!(matches!(f.next_frame(), Ok(Some(Frame::Message(_)))));
        // Framed whole: the 30 KB buffer is not kept.
        assert_eq!(f.buf.capacity(), 0);
    }
}
