//! A response written and indexed in one pass: what a proxy answers itself (RFC 3261 §8.2.6) used
//! to be written as text and parsed again, about 5 k instructions a response on the Digest
//! REGISTER path. The writer records each header's place as it writes it, exactly where parsing
//! the text would find it; whatever that direct index does not model is parsed instead, so the
//! message is the same either way.

use crate::message::{Entry, Message, Range, StartKind, StartLine, Store};
use crate::name::{HeaderId, is_token_byte};
use crate::parse::Limits;
use crate::scan::is_wsp;

/// Writes `SIP/2.0 <code> <reason>`, then header lines, then `Content-Length: 0` and the blank
/// line ([`ResponseWriter::finish`]).
#[derive(Debug)]
pub struct ResponseWriter {
    head: String,
    start: StartLine,
    headers: Vec<Entry>,
    /// Something the direct index does not model: a start line or header that parsing would
    /// refuse or read differently (a line break or edge whitespace in a value, a name that is no
    /// token, a Content-Length of the caller's), or a size over [`Limits::default`]. `finish`
    /// then parses the text, as before, and gives what that gives.
    irregular: bool,
}

impl ResponseWriter {
    /// A response head with room for `capacity` bytes.
    pub fn new(code: u16, reason: &str, capacity: usize) -> ResponseWriter {
        let mut head = String::with_capacity(capacity);
        head.push_str("SIP/2.0 ");
        head.push_str(itoa::Buffer::new().format(code));
        head.push(' ');
        let reason_start = head.len();
        head.push_str(reason);
        let line_end = head.len();
        head.push_str("\r\n");
        // What the parser accepts as a status line, and reads the way it is indexed here: a
        // three-digit code in range, and a reason without controls.
        let irregular = !(100..=699).contains(&code)
            || reason_start != 12
            || line_end > Limits::default().max_line_bytes
            || reason
                .bytes()
                .any(|c| (c < b' ' && c != b'\t') || c == 0x7f);
        ResponseWriter {
            head,
            start: StartLine {
                store: Store::Head,
                line: (0, line_end),
                version: (0, 7),
                kind: StartKind::Response {
                    code,
                    reason: (reason_start, line_end),
                },
            },
            headers: Vec::with_capacity(16),
            irregular,
        }
    }

    /// Appends `name: value`.
    pub fn header(&mut self, name: &str, value: &str) {
        self.header_parts(name, &[value]);
    }

    /// Appends a header whose value is the concatenation of `parts` (a To with a tag added, say).
    pub fn header_parts(&mut self, name: &str, parts: &[&str]) {
        let (id, indexed) = self.write_line(name, parts);
        // A Content-Length of the caller's would be a second one beside `finish`'s.
        self.irregular |= !indexed || id == HeaderId::ContentLength;
    }

    /// Writes `name: parts…` and indexes it; true when the index is what parsing the line gives.
    fn write_line(&mut self, name: &str, parts: &[&str]) -> (HeaderId, bool) {
        let pos = self.head.len();
        self.head.push_str(name);
        self.head.push_str(": ");
        let value_start = self.head.len();
        for p in parts {
            self.head.push_str(p);
        }
        let value_end = self.head.len();
        self.head.push_str("\r\n");
        let id = HeaderId::from_name(name.as_bytes());
        let value = self
            .head
            .as_bytes()
            .get(value_start..value_end)
            .unwrap_or(&[]);
        let indexed = !name.is_empty()
            && name.bytes().all(is_token_byte)
            && memchr::memchr2(b'\r', b'\n', value).is_none()
            && !value.first().is_some_and(|&c| is_wsp(c))
            && !value.last().is_some_and(|&c| is_wsp(c))
            && value_end - pos <= Limits::default().max_line_bytes;
        let value: Range = (value_start, value_end);
        self.headers.push(Entry {
            id,
            store: Store::Head,
            name: (pos, pos + name.len()),
            value,
            raw: Some((pos, self.head.len())),
        });
        (id, indexed)
    }

    /// Ends the head with `Content-Length: 0` and the blank line. `None` where parsing the text
    /// fails (over the default limits, or a start line or header it refuses).
    pub fn finish(mut self) -> Option<Message> {
        // Ours, the one Content-Length, and a regular line.
        self.write_line("Content-Length", &["0"]);
        self.head.push_str("\r\n");
        let limits = Limits::default();
        if self.irregular
            || self.headers.len() > limits.max_headers
            || self.head.len() > limits.max_message_bytes
        {
            return Message::parse(self.head.as_bytes()).ok();
        }
        Some(Message::from_indexed(self.head, self.start, self.headers))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every accessor a caller has, compared: the writer's message and the parse of its text.
    fn assert_same(w: Option<Message>, text: &str) {
        let parsed = Message::parse(text.as_bytes()).ok();
        let (Some(w), Some(p)) = (&w, &parsed) else {
            assert_eq!(w.is_some(), parsed.is_some(), "{text:?}");
            return;
        };
        assert_eq!(w.to_bytes(), p.to_bytes(), "{text:?}");
        assert_eq!(w.start_line(), p.start_line());
        assert_eq!(w.status_code(), p.status_code());
        assert_eq!(w.kind(), p.kind());
        let hw: Vec<_> = w.headers().map(|h| (h.name, h.value)).collect();
        let hp: Vec<_> = p.headers().map(|h| (h.name, h.value)).collect();
        assert_eq!(hw, hp, "{text:?}");
        for name in [
            "Via",
            "To",
            "From",
            "Call-ID",
            "CSeq",
            "Content-Length",
            "WWW-Authenticate",
        ] {
            assert_eq!(w.header(name), p.header(name), "{name} in {text:?}");
        }
        assert_eq!(w.content_length(), p.content_length());
        assert_eq!(w.body(), p.body());
        assert_eq!(w.validate(), p.validate());
    }

    fn write(code: u16, reason: &str, headers: &[(&str, &str)]) -> (Option<Message>, String) {
        let mut w = ResponseWriter::new(code, reason, 256);
        let mut text = format!("SIP/2.0 {code} {reason}\r\n");
        for (n, v) in headers {
            w.header(n, v);
            text.push_str(&format!("{n}: {v}\r\n"));
        }
        text.push_str("Content-Length: 0\r\n\r\n");
        (w.finish(), text)
    }

    #[test]
    fn a_written_response_is_what_parsing_its_text_gives() {
        let common = [
            (
                "Via",
                "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;received=192.0.2.1",
            ),
            (
                "v",
                "SIP/2.0/TCP 10.0.0.1;branch=z9hG4bK2, SIP/2.0/UDP 10.0.0.2",
            ),
            ("From", "\"A\" <sip:a@example.com>;tag=1"),
            ("To", "<sip:b@example.com>;tag=2"),
            ("i", "abc@host"),
            ("CSeq", "1 REGISTER"),
            (
                "WWW-Authenticate",
                "Digest realm=\"x\", nonce=\"y\", algorithm=MD5",
            ),
            ("X-Empty", ""),
        ];
        for (code, reason) in [(200, "OK"), (401, "Unauthorized"), (100, ""), (699, "x\ty")] {
            let (w, text) = write(code, reason, &common);
            assert!(w.is_some());
            assert_same(w, &text);
        }
        // Folded values as a request's accessor returns them, controls, edge whitespace, names
        // that are no tokens, a caller's Content-Length, codes out of range: parsed instead,
        // with the same outcome.
        for odd in [
            ("Subject", "folded\r\n continues"),
            ("Subject", " leading"),
            ("Subject", "trailing\t"),
            ("Subject", "bare\nline"),
            ("Bad Name", "x"),
            ("", "x"),
            ("Content-Length", "0"),
            ("l", "5"),
            ("Nul", "a\0b"),
        ] {
            let (w, text) = write(200, "OK", &[("CSeq", "1 INVITE"), odd]);
            assert_same(w, &text);
        }
        for (code, reason) in [
            (99, "x"),
            (700, "x"),
            (20, "x"),
            (1000, "x"),
            (200, "a\rb"),
            (200, "a\u{7f}"),
        ] {
            let (w, text) = write(code, reason, &[("CSeq", "1 INVITE")]);
            assert_same(w, &text);
        }
        // Over the limits: refused the same way.
        let long = "x".repeat(9000);
        let (w, text) = write(200, "OK", &[("Subject", &long)]);
        assert!(w.is_none());
        assert_same(w, &text);
        let many: Vec<(&str, &str)> = (0..300).map(|_| ("X-A", "b")).collect();
        let (w, text) = write(200, "OK", &many);
        assert!(w.is_none());
        assert_same(w, &text);
    }

    #[test]
    fn a_written_response_edits_like_a_parsed_one() {
        let (w, text) = write(
            401,
            "Unauthorized",
            &[("To", "<sip:b@x>"), ("CSeq", "1 REGISTER")],
        );
        let mut w = w.unwrap();
        let mut p = Message::parse(text.as_bytes()).unwrap();
        for m in [&mut w, &mut p] {
            m.set_header("To", "<sip:b@x>;tag=t");
            m.push_header("Date", "Thu, 03 Dec 2026 13:00:00 GMT");
            m.remove_header("CSeq");
        }
        assert_eq!(w.to_bytes(), p.to_bytes());
    }
}
