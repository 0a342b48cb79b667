//! Parsing: the limits and version policy a message is read under, the start line, and
//! [`parse_core`], which indexes one message's head and takes its body (for a whole datagram, or
//! the start of a stream's buffer).

use crate::error::ParseError;
use crate::message::{Entry, Message, Range, StartKind, StartLine, Store};
use crate::name::{HeaderId, is_token_byte};
use crate::scan::is_wsp;

/// Which SIP-Version values [`Message::parse_with`] accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VersionPolicy {
    /// Only `SIP/2.0` (case-insensitive); anything else well formed is
    /// [`ParseError::UnsupportedVersion`].
    #[default]
    Sip20Only,
    /// Any `SIP/<digits>.<digits>`: lets a UAS parse a request it must answer with 505 (RFC 4475
    /// §3.1.2.16). [`Message::version`] tells which version was sent.
    AnySipVersion,
}

/// Size limits and acceptance policy, for datagrams and streams alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Whole message: start line, headers and body. Default 64 KiB.
    pub max_message_bytes: usize,
    /// Header fields (a folded header counts once). Default 256.
    pub max_headers: usize,
    /// One physical line, without its CRLF. Default 8 KiB.
    pub max_line_bytes: usize,
    /// Accepted SIP-Version values. Default [`VersionPolicy::Sip20Only`].
    pub version: VersionPolicy,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 64 * 1024,
            max_headers: 256,
            max_line_bytes: 8 * 1024,
            version: VersionPolicy::Sip20Only,
        }
    }
}

/// Whether a missing Content-Length means "rest of the input" (datagram) or is an error (stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    Datagram,
    Stream,
}

pub(crate) fn parse_content_length(v: &[u8]) -> Result<usize, ParseError> {
    if v.is_empty() {
        return Err(ParseError::BadContentLength);
    }
    v.iter().try_fold(0usize, |acc, &d| {
        if d.is_ascii_digit() {
            acc.checked_mul(10)
                .and_then(|a| a.checked_add(usize::from(d - b'0')))
                .ok_or(ParseError::BadContentLength)
        } else {
            Err(ParseError::BadContentLength)
        }
    })
}

/// Find the end of the line starting at `from`: returns (index of CR, index after LF).
fn line_end(data: &[u8], from: usize, line: usize, limits: &Limits) -> Result<Range, ParseError> {
    let rest = data.get(from..).unwrap_or(&[]);
    // Never scan further than one maximal line: bounds the work a hostile peer can cause.
    let window = rest
        .get(..limits.max_line_bytes.saturating_add(1))
        .unwrap_or(rest);
    match memchr::memchr2(b'\r', b'\n', window) {
        Some(i) if i > limits.max_line_bytes => Err(ParseError::LineTooLong { line }),
        Some(i) => match (window.get(i), rest.get(i + 1)) {
            (Some(b'\r'), Some(b'\n')) => Ok((from + i, from + i + 2)),
            (Some(b'\r'), None) => Err(ParseError::Incomplete),
            _ => Err(ParseError::BareLineEnding { line }),
        },
        None if rest.len() > limits.max_line_bytes => Err(ParseError::LineTooLong { line }),
        None => Err(ParseError::Incomplete),
    }
}

/// `SIP/1*DIGIT.1*DIGIT`, case-insensitive `SIP`.
fn check_version(v: &[u8], policy: VersionPolicy) -> Result<(), ParseError> {
    let Some((sip, num)) = v.split_at_checked(4) else {
        return Err(ParseError::BadStartLine);
    };
    if !sip.eq_ignore_ascii_case(b"SIP/") {
        return Err(ParseError::BadStartLine);
    }
    let dot = memchr::memchr(b'.', num).ok_or(ParseError::BadStartLine)?;
    let (major, minor) = (
        num.get(..dot).unwrap_or(&[]),
        num.get(dot + 1..).unwrap_or(&[]),
    );
    let digits = |d: &[u8]| !d.is_empty() && d.iter().all(u8::is_ascii_digit);
    if !digits(major) || !digits(minor) {
        return Err(ParseError::BadStartLine);
    }
    if num != b"2.0" && policy == VersionPolicy::Sip20Only {
        return Err(ParseError::UnsupportedVersion);
    }
    Ok(())
}

/// RFC 3261 Request-URI: `scheme ":"` then URI characters (RFC 2396 unreserved, reserved,
/// escaped, plus `[]` for IPv6). Rejects `<...>` (RFC 4475 §3.1.2.7) and anything with spaces.
fn check_request_uri(uri: &[u8]) -> bool {
    let Some(colon) = memchr::memchr(b':', uri) else {
        return false;
    };
    let scheme = uri.get(..colon).unwrap_or(&[]);
    scheme.first().is_some_and(u8::is_ascii_alphabetic)
        && scheme
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
        && uri.iter().all(|&c| {
            c.is_ascii_alphanumeric()
                || matches!(
                    c,
                    b'-' | b'_'
                        | b'.'
                        | b'!'
                        | b'~'
                        | b'*'
                        | b'\''
                        | b'('
                        | b')'
                        | b';'
                        | b'/'
                        | b'?'
                        | b':'
                        | b'@'
                        | b'&'
                        | b'='
                        | b'+'
                        | b'$'
                        | b','
                        | b'%'
                        | b'['
                        | b']'
                )
        })
}

/// Parse a start line (without CRLF); returns (version range, kind) relative to `line`.
pub(crate) fn parse_start_line(
    line: &[u8],
    policy: VersionPolicy,
) -> Result<(Range, StartKind), ParseError> {
    let sp1 = memchr::memchr(b' ', line).ok_or(ParseError::BadStartLine)?;
    let first = line.get(..sp1).unwrap_or(&[]);
    let rest = line.get(sp1 + 1..).unwrap_or(&[]);
    if first
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"SIP/"))
    {
        check_version(first, policy)?;
        let code_digits = rest.get(..3).ok_or(ParseError::BadStartLine)?;
        if !code_digits.iter().all(u8::is_ascii_digit) || !matches!(rest.get(3), None | Some(b' '))
        {
            return Err(ParseError::BadStartLine);
        }
        let code = code_digits
            .iter()
            .fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));
        if !(100..=699).contains(&code) {
            return Err(ParseError::BadStartLine);
        }
        let reason_start = (sp1 + 5).min(line.len());
        let reason = line.get(reason_start..).unwrap_or(&[]);
        if reason
            .iter()
            .any(|&c| (c < b' ' && c != b'\t') || c == 0x7f)
        {
            return Err(ParseError::BadStartLine);
        }
        Ok((
            (0, sp1),
            StartKind::Response {
                code,
                reason: (reason_start, line.len()),
            },
        ))
    } else {
        if first.is_empty() || !first.iter().copied().all(is_token_byte) {
            return Err(ParseError::BadStartLine);
        }
        let sp2 = memchr::memchr(b' ', rest).ok_or(ParseError::BadStartLine)?;
        let uri = rest.get(..sp2).unwrap_or(&[]);
        let version = rest.get(sp2 + 1..).unwrap_or(&[]);
        if !check_request_uri(uri) {
            return Err(ParseError::BadStartLine);
        }
        check_version(version, policy)?;
        let uri_start = sp1 + 1;
        let version_start = uri_start + sp2 + 1;
        Ok((
            (version_start, line.len()),
            StartKind::Request {
                method: (0, sp1),
                uri: (uri_start, uri_start + sp2),
            },
        ))
    }
}

/// Parse one message from the start of `input`; returns it and the number of input bytes it
/// covers (leading CRLFs included).
pub(crate) fn parse_core(
    input: &[u8],
    limits: &Limits,
    framing: Framing,
) -> Result<(Message, usize), ParseError> {
    let mut skip = 0;
    while input.get(skip..skip + 2) == Some(b"\r\n") {
        skip += 2;
    }
    let data = input.get(skip..).unwrap_or(&[]);
    let too_large = ParseError::TooLarge {
        limit: limits.max_message_bytes,
    };

    let (sl_end, mut pos) = line_end(data, 0, 1, limits)?;
    let (version, kind) = parse_start_line(data.get(..sl_end).unwrap_or(&[]), limits.version)?;

    let mut headers: Vec<Entry> = Vec::with_capacity(20);
    let mut line_no = 1;
    let head_end = loop {
        line_no += 1;
        if pos > limits.max_message_bytes {
            return Err(too_large);
        }
        let (end, next) = line_end(data, pos, line_no, limits)?;
        let line = data.get(pos..end).unwrap_or(&[]);
        let Some(&first) = line.first() else {
            break next;
        };
        if is_wsp(first) {
            // Continuation of the previous header (RFC 3261 §7.3.1 folding).
            let Some(last) = headers.last_mut() else {
                return Err(ParseError::BadHeader { line: line_no });
            };
            let lead = line.iter().take_while(|&&c| is_wsp(c)).count();
            if lead < line.len() {
                let trail = line.iter().rev().take_while(|&&c| is_wsp(c)).count();
                if last.value.0 == last.value.1 {
                    last.value.0 = pos + lead;
                }
                last.value.1 = end - trail;
            }
            if let Some(raw) = last.raw.as_mut() {
                raw.1 = next;
            }
        } else {
            if headers.len() >= limits.max_headers {
                return Err(ParseError::TooManyHeaders);
            }
            let colon =
                memchr::memchr(b':', line).ok_or(ParseError::BadHeader { line: line_no })?;
            let before = line.get(..colon).unwrap_or(&[]);
            let name_len = before.len() - before.iter().rev().take_while(|&&c| is_wsp(c)).count();
            let name = before.get(..name_len).unwrap_or(&[]);
            // Non-short-circuiting: header names are short and an early exit costs a
            // mispredicted branch per header.
            if name.is_empty() || !name.iter().fold(true, |ok, &c| ok & is_token_byte(c)) {
                return Err(ParseError::BadHeader { line: line_no });
            }
            let mut i = colon + 1;
            i += line.iter().skip(i).take_while(|&&c| is_wsp(c)).count();
            let trail = line
                .iter()
                .skip(i)
                .rev()
                .take_while(|&&c| is_wsp(c))
                .count();
            headers.push(Entry {
                id: HeaderId::from_name(name),
                store: Store::Head,
                name: (pos, pos + name_len),
                value: (pos + i, end - trail),
                raw: Some((pos, next)),
            });
        }
        pos = next;
    };
    if head_end > limits.max_message_bytes {
        return Err(too_large);
    }

    let head_bytes = data.get(..head_end).unwrap_or(&[]);
    let head = match std::str::from_utf8(head_bytes) {
        Ok(s) => s.to_owned(),
        Err(e) => {
            let upto = head_bytes.get(..e.valid_up_to()).unwrap_or(&[]);
            let line = 1 + upto.iter().filter(|&&c| c == b'\n').count();
            return Err(ParseError::NotUtf8 { line });
        }
    };

    let mut content_length = None;
    for e in headers.iter().filter(|e| e.id == HeaderId::ContentLength) {
        if content_length.is_some() {
            return Err(ParseError::MultipleContentLength);
        }
        let v = data.get(e.value.0..e.value.1).unwrap_or(&[]);
        content_length = Some(parse_content_length(v)?);
    }
    let available = data.len() - head_end.min(data.len());
    let body_len = match (content_length, framing) {
        (Some(n), _) => n,
        (None, Framing::Datagram) => available,
        (None, Framing::Stream) => return Err(ParseError::MissingHeader("Content-Length")),
    };
    let total = head_end.checked_add(body_len).ok_or(too_large.clone())?;
    if total > limits.max_message_bytes {
        return Err(too_large);
    }
    let body = match data.get(head_end..total) {
        Some(b) => b.to_vec(),
        None if framing == Framing::Stream => return Err(ParseError::Incomplete),
        None => {
            return Err(ParseError::BodyTooShort {
                expected: body_len,
                available,
            });
        }
    };
    let message = Message::parsed(
        head,
        StartLine {
            store: Store::Head,
            line: (0, sl_end),
            version,
            kind,
        },
        headers,
        body,
    );
    Ok((message, skip + total))
}
