//! The [`Message`] type: accessors, edits and serialisation (parsing is in `parse.rs`).

use std::borrow::Cow;
use std::fmt;

use crate::error::ParseError;
use crate::name::{HeaderId, is_token_byte};
use crate::name_addr::{NameAddr, parse_name_addr};
use crate::parse::{
    Framing, Limits, VersionPolicy, parse_content_length, parse_core, parse_start_line,
};
use crate::scan::{Split, is_lws, trim_lws};

/// The start line, borrowed from a [`Message`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind<'a> {
    /// Request-Line.
    Request {
        /// Method token, case as on the wire (methods are case-sensitive).
        method: &'a str,
        /// Request-URI as on the wire.
        uri: &'a str,
    },
    /// Status-Line.
    Response {
        /// Status code (100..=699).
        code: u16,
        /// Reason phrase as on the wire (may be empty).
        reason: &'a str,
    },
}

/// One header field, borrowed from a [`Message`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    /// Name exactly as on the wire (case and compact form preserved).
    pub name: &'a str,
    /// Value with surrounding whitespace trimmed, otherwise raw: a folded value keeps its inner
    /// CRLF and leading whitespace of continuation lines.
    pub value: &'a str,
}

/// The CSeq header, split into its two parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CSeq<'a> {
    /// The digits as on the wire (leading zeros kept, e.g. `0009`).
    pub number: &'a str,
    /// The method token.
    pub method: &'a str,
}

/// First values of the headers the security core reads ([`Message::core_headers`]), as
/// [`Message::header`] returns them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CoreHeaders<'a> {
    /// Call-ID (or `i`).
    pub call_id: Option<&'a str>,
    /// CSeq, unsplit ([`CSeq::parse`]).
    pub cseq: Option<&'a str>,
    /// From (or `f`).
    pub from: Option<&'a str>,
    /// To (or `t`).
    pub to: Option<&'a str>,
    /// Expires.
    pub expires: Option<&'a str>,
    /// P-Asserted-Identity.
    pub p_asserted_identity: Option<&'a str>,
    /// P-Preferred-Identity.
    pub p_preferred_identity: Option<&'a str>,
}

impl CSeq<'_> {
    /// The sequence number if it is below 2^31 as RFC 3261 §8.1.1.5 requires.
    pub fn value(&self) -> Option<u32> {
        if self.number.is_empty() {
            return None;
        }
        // The fields are public, so do not assume `number` holds only digits.
        let n: u64 = self.number.bytes().try_fold(0u64, |acc, d| {
            let digit = d.checked_sub(b'0').filter(|v| *v < 10)?;
            acc.checked_mul(10)?.checked_add(u64::from(digit))
        })?;
        u32::try_from(n).ok().filter(|n| *n < 1 << 31)
    }
}

pub(crate) type Range = (usize, usize);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Store {
    /// The received head (start line + headers + blank line).
    Head,
    /// Text written by edits.
    Arena,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum StartKind {
    Request { method: Range, uri: Range },
    Response { code: u16, reason: Range },
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct StartLine {
    pub(crate) store: Store,
    /// The line without CRLF.
    pub(crate) line: Range,
    pub(crate) version: Range,
    pub(crate) kind: StartKind,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry {
    pub(crate) id: HeaderId,
    pub(crate) store: Store,
    pub(crate) name: Range,
    pub(crate) value: Range,
    /// The original line(s) in the head including CRLF; `None` for headers written by edits.
    pub(crate) raw: Option<Range>,
}

/// A SIP request or response: the bytes as received plus an index of the start line and headers,
/// and any edits made since.
///
/// Accessors return slices of the original text. Edits never rewrite untouched headers:
/// [`Message::to_bytes`] copies every original header line verbatim (case, spacing, folding and
/// compact names included) and writes edited or added headers as `Name: value` + CRLF.
#[derive(Clone)]
pub struct Message {
    head: String,
    arena: String,
    start: StartLine,
    headers: Vec<Entry>,
    body: Vec<u8>,
    /// While false, serialisation is a plain copy of `head` and `body`.
    edited: bool,
}

impl Message {
    /// Parse one whole message, e.g. a UDP datagram, with the default [`Limits`].
    ///
    /// Leading CRLFs are skipped (RFC 3261 §7.5). Without Content-Length the rest of the input is
    /// the body; with it, bytes beyond Content-Length are ignored (RFC 3261 §18.3) and a shorter
    /// input is [`ParseError::BodyTooShort`]. Lines must end with CRLF.
    pub fn parse(input: &[u8]) -> Result<Message, ParseError> {
        Self::parse_with(input, &Limits::default())
    }

    /// [`Message::parse`] with explicit limits and version policy.
    pub fn parse_with(input: &[u8], limits: &Limits) -> Result<Message, ParseError> {
        parse_core(input, limits, Framing::Datagram).map(|(m, _)| m)
    }

    /// A message as [`parse_core`] read it: not edited.
    pub(crate) fn parsed(
        head: String,
        start: StartLine,
        headers: Vec<Entry>,
        body: Vec<u8>,
    ) -> Message {
        Message {
            head,
            arena: String::new(),
            start,
            headers,
            body,
            edited: false,
        }
    }

    /// A message whose head was written and indexed by [`crate::ResponseWriter`] exactly as
    /// parsing it would have indexed it: no body, not edited.
    pub(crate) fn from_indexed(head: String, start: StartLine, headers: Vec<Entry>) -> Message {
        Message {
            head,
            arena: String::new(),
            start,
            headers,
            body: Vec::new(),
            edited: false,
        }
    }

    fn text(&self, store: Store, (start, end): Range) -> &str {
        let s = match store {
            Store::Head => &self.head,
            Store::Arena => &self.arena,
        };
        s.get(start..end).unwrap_or("")
    }

    /// The start line.
    pub fn kind(&self) -> Kind<'_> {
        match self.start.kind {
            StartKind::Request { method, uri } => Kind::Request {
                method: self.text(self.start.store, method),
                uri: self.text(self.start.store, uri),
            },
            StartKind::Response { code, reason } => Kind::Response {
                code,
                reason: self.text(self.start.store, reason),
            },
        }
    }

    /// True for requests.
    pub fn is_request(&self) -> bool {
        matches!(self.start.kind, StartKind::Request { .. })
    }

    /// Request method (None for responses).
    pub fn method(&self) -> Option<&str> {
        // Not through `kind`: the method is read several times per message, the URI rarely.
        match self.start.kind {
            StartKind::Request { method, .. } => Some(self.text(self.start.store, method)),
            StartKind::Response { .. } => None,
        }
    }

    /// Request-URI (None for responses).
    pub fn request_uri(&self) -> Option<&str> {
        match self.start.kind {
            StartKind::Request { uri, .. } => Some(self.text(self.start.store, uri)),
            StartKind::Response { .. } => None,
        }
    }

    /// Status code (None for requests).
    pub fn status_code(&self) -> Option<u16> {
        match self.start.kind {
            StartKind::Response { code, .. } => Some(code),
            StartKind::Request { .. } => None,
        }
    }

    /// SIP-Version as on the wire, e.g. `SIP/2.0`.
    pub fn version(&self) -> &str {
        self.text(self.start.store, self.start.version)
    }

    /// The start line as on the wire (without CRLF).
    pub fn start_line(&self) -> &str {
        self.text(self.start.store, self.start.line)
    }

    fn header_of(&self, e: &Entry) -> Header<'_> {
        Header {
            name: self.text(e.store, e.name),
            value: self.text(e.store, e.value),
        }
    }

    fn matches(&self, e: &Entry, id: HeaderId, name: &str) -> bool {
        if id == HeaderId::Other {
            e.id == HeaderId::Other && self.text(e.store, e.name).eq_ignore_ascii_case(name)
        } else {
            e.id == id
        }
    }

    /// All header fields in wire order, edits included.
    pub fn headers(&self) -> impl Iterator<Item = Header<'_>> {
        self.headers.iter().map(|e| self.header_of(e))
    }

    /// The header field at `index` in [`Message::headers`] order.
    pub fn header_at(&self, index: usize) -> Option<Header<'_>> {
        self.headers.get(index).map(|e| self.header_of(e))
    }

    /// Number of header fields.
    pub fn header_count(&self) -> usize {
        self.headers.len()
    }

    /// Value of the first header named `name` (case-insensitive; full and compact forms are
    /// equivalent, e.g. `i` and `Call-ID`). A folded value is returned raw (inner CRLF and
    /// continuation whitespace kept).
    #[inline]
    pub fn header(&self, name: &str) -> Option<&str> {
        let id = HeaderId::from_name(name.as_bytes());
        self.headers
            .iter()
            .find(|e| self.matches(e, id, name))
            .map(|e| self.text(e.store, e.value))
    }

    /// Every value of header `name`, one per header line, not comma-split.
    pub fn header_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.header_all_indexed(name).map(|(_, value)| value)
    }

    /// [`Message::header_all`] with each value's index in [`Message::headers`] order, the index
    /// [`Message::remove_header_at`] takes.
    pub fn header_all_indexed<'a>(
        &'a self,
        name: &'a str,
    ) -> impl Iterator<Item = (usize, &'a str)> + 'a {
        let id = HeaderId::from_name(name.as_bytes());
        self.headers
            .iter()
            .enumerate()
            .filter(move |(_, e)| self.matches(e, id, name))
            .map(move |(i, e)| (i, self.text(e.store, e.value)))
    }

    /// Every element of header `name`, comma-split across all its lines (commas inside quotes or
    /// `<...>` do not split; empty elements are skipped). Auth headers (WWW-Authenticate,
    /// Authorization, Proxy-Authenticate, Proxy-Authorization, Authentication-Info,
    /// Proxy-Authentication-Info), Date and the free-text headers Subject, User-Agent, Server and
    /// Organization are never split.
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        let whole = HeaderId::from_name(name.as_bytes()).is_single_valued_text();
        self.header_all(name).flat_map(move |v| {
            if whole {
                Split::whole(v)
            } else {
                Split::new(v, b',', true)
            }
        })
    }

    /// Call-ID value.
    pub fn call_id(&self) -> Option<&str> {
        self.header("Call-ID")
    }

    /// CSeq split into number and method; None when absent or not `1*DIGIT LWS method`.
    pub fn cseq(&self) -> Option<CSeq<'_>> {
        CSeq::parse(self.header("CSeq")?)
    }

    /// The headers the MS-SIPAE signature buffer and the security core read, each the first of
    /// its name (as [`Message::header`] finds it), found in one pass over the headers instead of
    /// one pass per name.
    pub fn core_headers(&self) -> CoreHeaders<'_> {
        let mut h = CoreHeaders::default();
        for e in &self.headers {
            let slot = match e.id {
                HeaderId::CallId => &mut h.call_id,
                HeaderId::CSeq => &mut h.cseq,
                HeaderId::From => &mut h.from,
                HeaderId::To => &mut h.to,
                HeaderId::Expires => &mut h.expires,
                HeaderId::PAssertedIdentity => &mut h.p_asserted_identity,
                HeaderId::PPreferredIdentity => &mut h.p_preferred_identity,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(self.text(e.store, e.value));
            }
        }
        h
    }
}

/// Header names identified once, for [`Message::remove_named`]: a list removed from every
/// message is not looked up again for each.
#[derive(Debug, Clone, Copy)]
pub struct HeaderNames<const N: usize> {
    names: [&'static str; N],
    ids: [HeaderId; N],
    /// A bit per known id among the names ([`id_bit`]).
    known: u64,
    /// A bit per length of the names without an id ([`length_bit`]).
    lengths: u64,
}

impl<const N: usize> HeaderNames<N> {
    /// `names` (full or compact forms), identified.
    pub fn new(names: [&'static str; N]) -> Self {
        let ids = names.map(|n| HeaderId::from_name(n.as_bytes()));
        let (known, lengths) = masks(&names, &ids);
        HeaderNames {
            names,
            ids,
            known,
            lengths,
        }
    }
}

/// The [`HeaderNames`] bit sets of `names`, identified as `ids`.
fn masks(names: &[&str], ids: &[HeaderId]) -> (u64, u64) {
    ids.iter()
        .zip(names)
        .fold((0, 0), |(known, lengths), (id, name)| match id {
            HeaderId::Other => (known, lengths | length_bit(name.len())),
            id => (known | id_bit(*id), lengths),
        })
}

// Every known id has its own bit in a `u64`.
const _: () = assert!((HeaderId::Other as u64) < 64);

/// A known id's bit.
fn id_bit(id: HeaderId) -> u64 {
    1 << id as u64
}

/// A name length's bit; lengths of 63 and over share the last.
fn length_bit(len: usize) -> u64 {
    1 << len.min(63)
}

impl<'a> CSeq<'a> {
    /// A CSeq value split into number and method; None unless `1*DIGIT LWS method`.
    pub fn parse(v: &'a str) -> Option<CSeq<'a>> {
        let digits = v.bytes().take_while(u8::is_ascii_digit).count();
        let (number, rest) = v.split_at_checked(digits)?;
        if number.is_empty() || !rest.bytes().next().is_some_and(is_lws) {
            return None;
        }
        let method = trim_lws(rest);
        (!method.is_empty() && method.bytes().all(is_token_byte)).then_some(CSeq { number, method })
    }
}

impl Message {
    /// From header as a [`NameAddr`] (None when absent or malformed).
    pub fn from(&self) -> Option<NameAddr<'_>> {
        parse_name_addr(self.header("From")?).ok()
    }

    /// To header as a [`NameAddr`] (None when absent or malformed).
    pub fn to(&self) -> Option<NameAddr<'_>> {
        parse_name_addr(self.header("To")?).ok()
    }

    /// The Expires header value as on the wire (not Contact `;expires=`).
    pub fn expires(&self) -> Option<&str> {
        self.header("Expires")
    }

    /// Content-Length as a number, if present and well formed.
    pub fn content_length(&self) -> Option<usize> {
        parse_content_length(self.header("Content-Length")?.as_bytes()).ok()
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// RFC 3261 §8.1.1 checks that need the whole message, for a UAS/proxy deciding to answer 400
    /// (or, for a response, to drop it: a second CSeq or To that one reader takes and another
    /// skips is how a message is made to mean two things):
    /// To, From, Call-ID, CSeq and Via present; To, From, Call-ID, CSeq, Max-Forwards,
    /// Content-Type and Expires at most once; CSeq number below 2^31 and its method equal to the
    /// request method; Max-Forwards, when present, 0..=255 (it is not required: RFC 2543 peers
    /// omit it, RFC 4475 §3.4.1, and a proxy adds one); From and To parsable.
    pub fn validate(&self) -> Result<(), ParseError> {
        // One pass over the headers (this runs on every message a proxy relays).
        const SINGLE: [(HeaderId, &str); 7] = [
            (HeaderId::To, "To"),
            (HeaderId::From, "From"),
            (HeaderId::CallId, "Call-ID"),
            (HeaderId::CSeq, "CSeq"),
            (HeaderId::MaxForwards, "Max-Forwards"),
            (HeaderId::ContentType, "Content-Type"),
            (HeaderId::Expires, "Expires"),
        ];
        let mut seen = [false; SINGLE.len()];
        for e in &self.headers {
            for (seen, (id, name)) in seen.iter_mut().zip(SINGLE) {
                if id == e.id {
                    if *seen {
                        return Err(ParseError::DuplicateHeader(name));
                    }
                    *seen = true;
                }
            }
        }
        for name in ["To", "From", "Call-ID", "CSeq", "Via"] {
            if self.header(name).is_none() {
                return Err(ParseError::MissingHeader(name));
            }
        }
        let cseq = self.cseq().ok_or(ParseError::BadHeaderValue("CSeq"))?;
        if cseq.value().is_none() {
            return Err(ParseError::BadHeaderValue("CSeq"));
        }
        if self.from().is_none() {
            return Err(ParseError::BadHeaderValue("From"));
        }
        if self.to().is_none() {
            return Err(ParseError::BadHeaderValue("To"));
        }
        if let Some(mf) = self.header("Max-Forwards") {
            // Optional here: RFC 2543 peers omit it (RFC 4475 §3.4.1) and a proxy adds one.
            let digits = !mf.is_empty() && mf.bytes().all(|b| b.is_ascii_digit());
            if !digits
                || mf.trim_start_matches('0').len() > 3
                || mf.parse::<u16>().map_or(true, |n| n > 255)
            {
                return Err(ParseError::BadHeaderValue("Max-Forwards"));
            }
        }
        if self.method().is_some_and(|method| method != cseq.method) {
            return Err(ParseError::CSeqMismatch);
        }
        Ok(())
    }

    // ----------------------------------------------------------------------------------------
    // Edits

    fn arena_push(&mut self, s: &str) -> Range {
        push_into(&mut self.arena, s)
    }

    fn new_entry(&mut self, name: &str, value: &str) -> Entry {
        self.new_entry_known(None, name, value)
    }

    /// [`Message::new_entry`] with the id of `name` when the caller has it already (it holds
    /// for the written name only if sanitising left the name as it was).
    fn new_entry_known(&mut self, id: Option<HeaderId>, name: &str, value: &str) -> Entry {
        let written = sanitize_name(name);
        let id = match (&written, id) {
            // Unchanged (an empty name becomes `X`, which is a compact form).
            (Cow::Borrowed(w), Some(id)) if w.len() == name.len() => id,
            _ => HeaderId::from_name(written.as_bytes()),
        };
        let name = written;
        let value = sanitize_value(value);
        let n = self.arena_push(&name);
        let v = self.arena_push(trim_lws(&value));
        Entry {
            id,
            store: Store::Arena,
            name: n,
            value: v,
            raw: None,
        }
    }

    /// Append a header after the last one.
    ///
    /// Edits can never inject a line: CR and LF in `value` become SP, and characters of `name`
    /// that are not token characters become `-` (an empty name becomes `X`). Surrounding
    /// whitespace of `value` is dropped, matching what parsing would return.
    pub fn push_header(&mut self, name: &str, value: &str) {
        self.push_entry(None, name, value);
    }

    /// [`Message::push_header`] with the id of `name` when the caller has it already.
    fn push_entry(&mut self, id: Option<HeaderId>, name: &str, value: &str) {
        let e = self.new_entry_known(id, name, value);
        self.headers.push(e);
        self.edited = true;
    }

    /// Insert a header so that it becomes `headers().nth(index)` (index clamped to the count).
    /// Sanitised like [`Message::push_header`].
    pub fn insert_header(&mut self, index: usize, name: &str, value: &str) {
        let e = self.new_entry(name, value);
        let index = index.min(self.headers.len());
        self.headers.insert(index, e);
        self.edited = true;
    }

    /// Remove every header named `name` (compact forms included); returns how many were removed.
    pub fn remove_header(&mut self, name: &str) -> usize {
        self.remove_headers([name])
    }

    /// [`Message::remove_header`] for each of `names`, in one pass over the headers (nine calls
    /// for the identity headers a client may not send cost ~1 400 instructions a request).
    pub fn remove_headers<const N: usize>(&mut self, names: [&str; N]) -> usize {
        let ids = names.map(|n| HeaderId::from_name(n.as_bytes()));
        let (known, lengths) = masks(&names, &ids);
        self.remove_identified(&names, &ids, known, lengths)
    }

    /// [`Message::remove_headers`] with the names identified once ([`HeaderNames`]), for a list
    /// removed from every message: a header whose id or length no name has is passed over at the
    /// cost of a bit test (21 names compared with each header cost ~1 100 instructions a
    /// request).
    pub fn remove_named<const N: usize>(&mut self, names: &HeaderNames<N>) -> usize {
        self.remove_identified(&names.names, &names.ids, names.known, names.lengths)
    }

    fn remove_identified(
        &mut self,
        names: &[&str],
        ids: &[HeaderId],
        known: u64,
        lengths: u64,
    ) -> usize {
        let before = self.headers.len();
        // The entries are moved out for the filter (the text is read through `self`), so that no
        // list of verdicts is allocated: this runs several times per message.
        let mut headers = std::mem::take(&mut self.headers);
        // A known header by its id alone; another by its text, read once per header and compared
        // (length first) with the names that have no id.
        headers.retain(|e| {
            if e.id != HeaderId::Other {
                return known & id_bit(e.id) == 0;
            }
            let text = self.text(e.store, e.name);
            if lengths & length_bit(text.len()) == 0 {
                return true;
            }
            !ids.iter()
                .zip(names)
                .any(|(id, name)| *id == HeaderId::Other && text.eq_ignore_ascii_case(name))
        });
        self.headers = headers;
        let removed = before - self.headers.len();
        if removed > 0 {
            self.edited = true;
        }
        removed
    }

    /// Remove the header at `index` in [`Message::headers`] order (no-op when out of range).
    pub fn remove_header_at(&mut self, index: usize) {
        if index < self.headers.len() {
            self.headers.remove(index);
            self.edited = true;
        }
    }

    /// Replace the first header named `name` in place, keeping its wire name (e.g. `l`), and drop
    /// later headers of that name; push a new header when there is none. Sanitised like
    /// [`Message::push_header`].
    pub fn set_header(&mut self, name: &str, value: &str) {
        let id = HeaderId::from_name(name.as_bytes());
        let Some(first) = self.headers.iter().position(|e| self.matches(e, id, name)) else {
            self.push_entry(Some(id), name, value);
            return;
        };
        let Some(old) = self.headers.get(first).copied() else {
            return;
        };
        // The wire name stays as it was (already a token: parsed, or sanitised when written),
        // without a copy through the heap: an arena name is reused where it is (the arena only
        // grows), a received one is copied from the head into the arena.
        let name_range = match old.store {
            Store::Arena => old.name,
            Store::Head => {
                let wire = self.head.get(old.name.0..old.name.1).unwrap_or("");
                push_into(&mut self.arena, wire)
            }
        };
        let value = sanitize_value(value);
        let value_range = self.arena_push(trim_lws(&value));
        if let Some(slot) = self.headers.get_mut(first) {
            *slot = Entry {
                id: old.id,
                store: Store::Arena,
                name: name_range,
                value: value_range,
                raw: None,
            };
        }
        self.edited = true;
        // Later headers of that name (rare): dropped.
        if !self
            .headers
            .iter()
            .skip(first + 1)
            .any(|e| self.matches(e, id, name))
        {
            return;
        }
        let mut index = 0;
        let later: Vec<bool> = self
            .headers
            .iter()
            .map(|e| {
                let drop = index > first && self.matches(e, id, name);
                index += 1;
                !drop
            })
            .collect();
        let mut it = later.iter();
        self.headers.retain(|_| it.next().copied().unwrap_or(true));
        self.edited = true;
    }

    /// Replace the start line (e.g. `SIP/2.0 200 OK` when building a response from a request).
    /// The line is validated like a received one (with [`VersionPolicy::Sip20Only`]); on error the
    /// message is unchanged.
    pub fn set_start_line(&mut self, line: &str) -> Result<(), ParseError> {
        if line.bytes().any(|b| b == b'\r' || b == b'\n') {
            return Err(ParseError::BadStartLine);
        }
        let (version, kind) = parse_start_line(line.as_bytes(), VersionPolicy::Sip20Only)?;
        let (base, end) = self.arena_push(line);
        let shift = |(s, e): Range| (s + base, e + base);
        self.start = StartLine {
            store: Store::Arena,
            line: (base, end),
            version: shift(version),
            kind: match kind {
                StartKind::Request { method, uri } => StartKind::Request {
                    method: shift(method),
                    uri: shift(uri),
                },
                StartKind::Response { code, reason } => StartKind::Response {
                    code,
                    reason: shift(reason),
                },
            },
        };
        self.edited = true;
        Ok(())
    }

    /// Replace the body and set Content-Length to its length (keeping the header's position and
    /// wire name, adding it at the end when absent).
    pub fn set_body(&mut self, body: &[u8]) {
        self.body = body.to_vec();
        self.set_header("Content-Length", &body.len().to_string());
        self.edited = true;
    }

    /// Serialise to a new buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.head.len() + self.arena.len() + self.body.len() + 8);
        self.write_to(&mut out);
        out
    }

    /// Append the serialised message to `out`. Without edits this is the received bytes exactly.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        if !self.edited {
            out.extend_from_slice(self.head.as_bytes());
            out.extend_from_slice(&self.body);
            return;
        }
        out.extend_from_slice(self.start_line().as_bytes());
        out.extend_from_slice(b"\r\n");
        for e in &self.headers {
            match e.raw {
                Some(raw) => out.extend_from_slice(self.text(Store::Head, raw).as_bytes()),
                None => {
                    out.extend_from_slice(self.text(e.store, e.name).as_bytes());
                    out.extend_from_slice(b": ");
                    out.extend_from_slice(self.text(e.store, e.value).as_bytes());
                    out.extend_from_slice(b"\r\n");
                }
            }
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
    }
}

impl fmt::Debug for Message {
    /// Start line and header names only: values may carry credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("start_line", &self.start_line())
            .field(
                "headers",
                &self.headers().map(|h| h.name).collect::<Vec<_>>(),
            )
            .field("body_len", &self.body.len())
            .finish()
    }
}

impl PartialEq for Message {
    /// Two messages are equal when they serialise to the same bytes.
    fn eq(&self, other: &Self) -> bool {
        self.to_bytes() == other.to_bytes()
    }
}

impl Eq for Message {}

/// Appends `s` to an edit arena, returning its range there.
fn push_into(arena: &mut String, s: &str) -> Range {
    // Grow in one step with room to spare: signing adds a ~250-byte header to every message.
    if arena.capacity() - arena.len() < s.len() {
        arena.reserve(s.len().max(256));
    }
    let start = arena.len();
    arena.push_str(s);
    (start, arena.len())
}

fn sanitize_name(name: &str) -> Cow<'_, str> {
    if name.is_empty() {
        return Cow::Borrowed("X");
    }
    // Names the code writes are clean tokens: no copy for them.
    if name.bytes().all(is_token_byte) {
        return Cow::Borrowed(name);
    }
    Cow::Owned(
        name.chars()
            .map(|c| {
                if c.is_ascii() && is_token_byte(c as u8) {
                    c
                } else {
                    '-'
                }
            })
            .collect(),
    )
}

fn sanitize_value(value: &str) -> Cow<'_, str> {
    if memchr::memchr2(b'\r', b'\n', value.as_bytes()).is_none() {
        return Cow::Borrowed(value);
    }
    Cow::Owned(value.replace(['\r', '\n'], " "))
}
