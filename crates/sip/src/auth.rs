//! Authentication header grammar shared by Digest (RFC 3261 §25 / RFC 7235) and MS-SIPAE
//! (NTLM, Kerberos, TLS-DSK): `scheme 1*SP param *("," param)`, `param = token "=" (token /
//! quoted-string)`.

use std::borrow::Cow;
use std::fmt;
use std::ops::ControlFlow;

use crate::error::AuthParseError;

/// Parameters one challenge or credentials value may hold. The longest real ones (Digest with
/// every RFC 7616 directive, MS-SIPAE's NTLM and Kerberos legs) have about a dozen; the Digest
/// crate refuses more than the same number. Bounds the work of the duplicate check.
pub const MAX_PARAMS: usize = 32;

/// Challenges one header value may list (RFC 7235 §4.1); real servers list one per scheme and
/// algorithm. Bounds what a value of empty challenges (`a, b, c, ...`) makes the parser allocate.
pub const MAX_CHALLENGES: usize = 16;

/// Whether a credentials value holds `gssapi-data` (any case, as parameter names compare)
/// anywhere: one that does may be an MS-SIPAE handshake leg (NTLM, Kerberos); one that does not
/// cannot be. Looked for only where a `-` is, without parsing the value.
pub fn mentions_gssapi_data(value: &str) -> bool {
    const NAME: &[u8] = b"gssapi-data";
    let b = value.as_bytes();
    memchr::memchr_iter(b'-', b).any(|dash| {
        dash.checked_sub(6)
            .and_then(|start| b.get(start..start + NAME.len()))
            .is_some_and(|w| w.eq_ignore_ascii_case(NAME))
    })
}

/// One parameter of an authentication header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthParam<'a> {
    /// Name as written (compare case-insensitively).
    pub name: &'a str,
    /// Value with quotes removed and `\`-escapes resolved (borrowed when there were none).
    pub value: Cow<'a, str>,
    /// Whether the value was a quoted-string on the wire. MS-SIPAE peers expect some values
    /// quoted (sipe finds `rand="` by substring), so builders should keep the form.
    pub quoted: bool,
}

/// A parsed challenge, credentials or Authentication-Info value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthHeader<'a> {
    /// Scheme token as written, e.g. `NTLM`, `Kerberos`, `TLS-DSK`, `Digest`.
    pub scheme: &'a str,
    /// Parameters in wire order (names unique, case-insensitively).
    pub params: Vec<AuthParam<'a>>,
}

impl<'a> AuthHeader<'a> {
    /// Parse one challenge or credentials value. Rejects empty input, a missing scheme, empty or
    /// non-token names, a missing value, unterminated quotes, duplicate names (case-insensitive),
    /// more than [`MAX_PARAMS`] parameters, empty list elements, trailing commas and anything that
    /// is not `name=value`. A value holding several challenges is
    /// [`AuthParseError::MultipleChallenges`] (see [`parse_challenges`]), found as soon as the
    /// second one starts.
    pub fn parse(value: &'a str) -> Result<AuthHeader<'a>, AuthParseError> {
        let mut one = None;
        collect(value, 1, |h| one = Some(h))?;
        one.ok_or(AuthParseError::Empty)
    }

    /// [`parse`](Self::parse) without building the header: each parameter is handed to `visit`
    /// in wire order as it is read, and nothing is allocated unless a value has `\`-escapes.
    /// `Ok(Continue(scheme))` when the whole value was read and `parse` accepts it (the same
    /// errors otherwise); `Ok(Break(()))` when `visit` stopped the scan, which says nothing about
    /// the rest of the value. For hot paths that read a few known parameters once.
    pub fn scan(
        value: &'a str,
        visit: impl FnMut(AuthParam<'a>) -> ControlFlow<()>,
    ) -> Result<ControlFlow<(), &'a str>, AuthParseError> {
        let mut sink = Visit {
            visit,
            scheme: "",
            value,
            names: [(0, 0); MAX_PARAMS],
            count: 0,
        };
        Ok(match parse_each(value, 1, &mut sink)? {
            ControlFlow::Continue(()) => ControlFlow::Continue(sink.scheme),
            ControlFlow::Break(()) => ControlFlow::Break(()),
        })
    }

    /// Value of parameter `name` (case-insensitive), unescaped.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name))
            .map(|p| p.value.as_ref())
    }

    /// Whether the scheme is `scheme` (case-insensitive, as RFC 7235 §2.1 says).
    pub fn is_scheme(&self, scheme: &str) -> bool {
        self.scheme.eq_ignore_ascii_case(scheme)
    }

    /// A builder pre-filled with this header's scheme and parameters (keeping quoted/token form).
    pub fn to_builder(&self) -> AuthHeaderBuilder {
        self.params
            .iter()
            .fold(AuthHeaderBuilder::new(self.scheme), |b, p| b.param(p))
    }
}

impl fmt::Display for AuthHeader<'_> {
    /// Canonical form: `Scheme a="x", b=4`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.to_builder().as_str())
    }
}

/// RFC 7230 `tchar` plus the RFC 3261 token characters (a superset of both), as a table.
static TCHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        i += 1;
    }
    t
};

#[inline(always)]
fn is_tchar(b: u8) -> bool {
    TCHAR[usize::from(b)]
}

struct Cursor<'a> {
    s: &'a str,
    i: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.i).copied()
    }

    /// Skip LWS (folded values may hold CRLF); returns whether anything was skipped.
    #[inline(always)]
    fn skip_lws(&mut self) -> bool {
        let start = self.i;
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.i += 1;
        }
        self.i > start
    }

    #[inline(always)]
    fn token(&mut self) -> &'a str {
        let start = self.i;
        let b = self.s.as_bytes();
        // The index in a local, not in `self`: the loop then keeps it in a register.
        let mut i = start;
        while b.get(i).is_some_and(|&c| is_tchar(c)) {
            i += 1;
        }
        self.i = i;
        self.s.get(start..i).unwrap_or("")
    }

    /// A quoted-string starting at the current `"`. Inlined into the parameter loop (seven
    /// short values a signed message); resolving escapes, which no client sends, is not.
    #[inline(always)]
    fn quoted(&mut self) -> Result<Cow<'a, str>, AuthParseError> {
        let open = self.i;
        let b = self.s.as_bytes();
        let mut i = open + 1;
        let mut has_escape = false;
        // Jump between quotes and backslashes: gssapi-data values are hundreds of bytes long.
        loop {
            let rest = b.get(i..).unwrap_or(&[]);
            let Some(j) = quote_or_backslash(rest) else {
                return Err(AuthParseError::UnterminatedQuote { at: open });
            };
            i += j;
            if b.get(i) == Some(&b'"') {
                break;
            }
            has_escape = true;
            if b.get(i + 1).is_none() {
                return Err(AuthParseError::UnterminatedQuote { at: open });
            }
            i += 2;
        }
        self.i = i + 1;
        let inner = self.s.get(open + 1..i).unwrap_or("");
        if !has_escape {
            return Ok(Cow::Borrowed(inner));
        }
        Ok(Cow::Owned(unescape(inner)))
    }
}

/// The text of a quoted-string with its `\`-escapes resolved.
#[cold]
fn unescape(inner: &str) -> String {
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Where the first `"` or `\\` of `s` is. Most values are short (an opaque, a `cnum`, a 32-digit
/// `response`: every signed message has seven or so), where `memchr`'s set-up costs more than
/// the search: the first 32 bytes are searched 8 at a time in a `u64`, the rest (a gssapi-data
/// token of hundreds of bytes) with `memchr`.
#[inline]
fn quote_or_backslash(s: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const QUOTES: u64 = u64::from_ne_bytes([b'"'; 8]);
    const BACKSLASHES: u64 = u64::from_ne_bytes([b'\\'; 8]);
    // The high bit of each byte of `x` that is zero, and possibly of bytes after the first zero
    // byte (a borrow), never before it: the lowest one set is exact.
    let zero_bytes = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let (chunks, _) = s.as_chunks::<8>();
    for (k, chunk) in chunks.iter().take(4).enumerate() {
        let x = u64::from_le_bytes(*chunk);
        let hits = zero_bytes(x ^ QUOTES) | zero_bytes(x ^ BACKSLASHES);
        if hits != 0 {
            return Some(k * 8 + (hits.trailing_zeros() / 8) as usize);
        }
    }
    let done = chunks.len().min(4) * 8;
    let rest = s.get(done..).unwrap_or(&[]);
    let found = if rest.len() < 8 {
        rest.iter().position(|&c| c == b'"' || c == b'\\')
    } else {
        memchr::memchr2(b'"', b'\\', rest)
    };
    found.map(|j| done + j)
}

/// Parse a value holding one or more challenges (RFC 7235 §4.1 allows e.g.
/// `Digest realm="a", nonce="b", NTLM realm="c"`). A new challenge starts at a list element that
/// is a token followed by whitespace and a parameter (or by `,` or the end), not by `=`. At most
/// [`MAX_CHALLENGES`] challenges of at most [`MAX_PARAMS`] parameters each.
pub fn parse_challenges(value: &str) -> Result<Vec<AuthHeader<'_>>, AuthParseError> {
    let mut out = Vec::new();
    collect(value, MAX_CHALLENGES, |h| out.push(h))?;
    Ok(out)
}

/// Each element of the list as an [`AuthHeader`], handed to `emit` as it is complete: a single
/// header ([`AuthHeader::parse`]) needs no vector of headers around its one element.
fn collect<'a>(
    value: &'a str,
    max: usize,
    emit: impl FnMut(AuthHeader<'a>),
) -> Result<(), AuthParseError> {
    let mut sink = Collect {
        emit,
        params: Vec::new(),
    };
    // `Collect` never stops the parse early: a complete parse is the only `Ok`.
    parse_each(value, max, &mut sink).map(|_| ())
}

/// Where the elements of a challenge or credentials list go as [`parse_each`] reads them.
trait Sink<'a> {
    /// How many parameters the current element has so far.
    fn count(&self) -> usize;
    /// Whether the current element already has a parameter `name` (case-insensitive).
    fn has(&self, name: &str) -> bool;
    /// One parameter of the current element (its name is new, at byte `at` of the value);
    /// `Break` ends the parse there.
    fn param(&mut self, at: usize, p: AuthParam<'a>) -> ControlFlow<()>;
    /// The current element (scheme `scheme`) is complete.
    fn element(&mut self, scheme: &'a str);
}

/// Builds each element's [`AuthHeader`] and hands it to `emit`.
struct Collect<'a, F> {
    emit: F,
    params: Vec<AuthParam<'a>>,
}

impl<'a, F: FnMut(AuthHeader<'a>)> Sink<'a> for Collect<'a, F> {
    fn count(&self) -> usize {
        self.params.len()
    }

    fn has(&self, name: &str) -> bool {
        self.params
            .iter()
            .any(|p| p.name.eq_ignore_ascii_case(name))
    }

    fn param(&mut self, _at: usize, p: AuthParam<'a>) -> ControlFlow<()> {
        if self.params.capacity() == 0 {
            // Room for the longest real headers (see MAX_PARAMS) in one allocation.
            self.params = Vec::with_capacity(12);
        }
        self.params.push(p);
        ControlFlow::Continue(())
    }

    fn element(&mut self, scheme: &'a str) {
        let params = std::mem::take(&mut self.params);
        (self.emit)(AuthHeader { scheme, params });
    }
}

/// Hands each parameter of a single header to a visitor, and keeps its scheme. Where the names
/// so far are in `value` is kept on the stack for the duplicate check, so that nothing is
/// allocated (as offsets: an array of zeros is cheaper to set up than one of empty `&str`s).
struct Visit<'a, F> {
    visit: F,
    scheme: &'a str,
    value: &'a str,
    names: [(usize, usize); MAX_PARAMS],
    count: usize,
}

impl<'a, F: FnMut(AuthParam<'a>) -> ControlFlow<()>> Sink<'a> for Visit<'a, F> {
    fn count(&self) -> usize {
        self.count
    }

    fn has(&self, name: &str) -> bool {
        self.names
            .get(..self.count)
            .unwrap_or(&[])
            .iter()
            .any(|&(at, len)| {
                len == name.len()
                    && self
                        .value
                        .get(at..at + len)
                        .is_some_and(|n| n.eq_ignore_ascii_case(name))
            })
    }

    fn param(&mut self, at: usize, p: AuthParam<'a>) -> ControlFlow<()> {
        if let Some(slot) = self.names.get_mut(self.count) {
            *slot = (at, p.name.len());
        }
        self.count += 1;
        (self.visit)(p)
    }

    fn element(&mut self, scheme: &'a str) {
        self.scheme = scheme;
        self.count = 0;
    }
}

/// How one list element's parameters ended.
enum ElementEnd {
    /// At the end of the value.
    Last,
    /// Another element follows, at the cursor.
    More,
    /// The sink asked to stop.
    Stopped,
}

/// The elements of a challenge or credentials list, each handed to `sink` as it is read (at most
/// `max`; one more is an error). No vector of headers is built around them, and with [`Visit`]
/// no vector of parameters either.
fn parse_each<'a>(
    value: &'a str,
    max: usize,
    sink: &mut impl Sink<'a>,
) -> Result<ControlFlow<()>, AuthParseError> {
    let mut c = Cursor { s: value, i: 0 };
    c.skip_lws();
    if c.peek().is_none() {
        return Err(AuthParseError::Empty);
    }
    let mut count = 0usize;
    loop {
        if count >= max {
            return Err(if max == 1 {
                AuthParseError::MultipleChallenges
            } else {
                AuthParseError::TooManyChallenges { max }
            });
        }
        let scheme_at = c.i;
        let scheme = c.token();
        if scheme.is_empty() {
            return Err(AuthParseError::BadScheme { at: scheme_at });
        }
        let end = element_params(&mut c, sink)?;
        if let ElementEnd::Stopped = end {
            return Ok(ControlFlow::Break(()));
        }
        sink.element(scheme);
        count += 1;
        if let ElementEnd::Last = end {
            return Ok(ControlFlow::Continue(()));
        }
    }
}

/// The parameters of the element whose scheme the cursor has just passed.
fn element_params<'a>(
    c: &mut Cursor<'a>,
    sink: &mut impl Sink<'a>,
) -> Result<ElementEnd, AuthParseError> {
    let spaced = c.skip_lws();
    match c.peek() {
        None => return Ok(ElementEnd::Last),
        Some(b',') => {
            c.i += 1;
            list_separator_tail(c)?;
            return Ok(ElementEnd::More);
        }
        Some(_) if !spaced => return Err(AuthParseError::Garbage { at: c.i }),
        Some(_) => {}
    }
    let mut lengths = 0u64;
    loop {
        let name_at = c.i;
        let name = c.token();
        if name.is_empty() {
            return Err(AuthParseError::BadParamName { at: name_at });
        }
        c.skip_lws();
        if c.peek() != Some(b'=') {
            if sink.count() == 0 {
                return Err(AuthParseError::Garbage { at: c.i });
            }
            // The element is the next challenge's scheme.
            c.i = name_at;
            return Ok(ElementEnd::More);
        }
        c.i += 1;
        c.skip_lws();
        let value_at = c.i;
        let (value, quoted) = if c.peek() == Some(b'"') {
            (c.quoted()?, true)
        } else {
            let t = c.token();
            // An empty `algorithm=` is what libre (baresip) v3.12 to v4.6 write after a
            // `stale=true` challenge: taken as given without a value (the Digest layer reads it
            // as absent, MD5), as PJSIP's verifier does. Any other empty value is malformed.
            if t.is_empty() && !name.eq_ignore_ascii_case("algorithm") {
                return Err(AuthParseError::BadParamValue { at: value_at });
            }
            (Cow::Borrowed(t), false)
        };
        if sink.count() >= MAX_PARAMS {
            return Err(AuthParseError::TooManyParams { max: MAX_PARAMS });
        }
        // Each name is compared with the ones before it, of which there are fewer than
        // MAX_PARAMS: at most MAX_PARAMS times the length of the value in all, linear. (It
        // was unbounded: 2 000 parameters in one 8 KB line took 2 million comparisons.) A
        // comparison stops at the first differing length or byte. Names of equal length
        // (ignoring case) can only be equal: unless one before it had this name's length (a
        // bit a length, lengths past 63 sharing the last), there is nothing to compare.
        let length = 1u64 << name.len().min(63);
        let same_length = lengths & length != 0;
        lengths |= length;
        if same_length && sink.has(name) {
            return Err(AuthParseError::DuplicateParam {
                name: name.to_owned(),
            });
        }
        if sink
            .param(
                name_at,
                AuthParam {
                    name,
                    value,
                    quoted,
                },
            )
            .is_break()
        {
            return Ok(ElementEnd::Stopped);
        }
        c.skip_lws();
        match c.peek() {
            None => return Ok(ElementEnd::Last),
            Some(b',') => {
                c.i += 1;
                list_separator_tail(c)?;
            }
            Some(_) => return Err(AuthParseError::Garbage { at: c.i }),
        }
    }
}

/// After a `,`: skip LWS and reject a trailing comma or an empty element.
fn list_separator_tail(c: &mut Cursor<'_>) -> Result<(), AuthParseError> {
    c.skip_lws();
    match c.peek() {
        None | Some(b',') => Err(AuthParseError::Garbage { at: c.i }),
        Some(_) => Ok(()),
    }
}

/// Writes authentication header values: `Scheme a="x", b=4` (`, ` between parameters; `\"` and
/// `\\` escaped inside quoted-strings).
///
/// The output always parses back: characters of the scheme or of names that are not token
/// characters become `-`, CR and LF are dropped from quoted values, and a [`token`] value that is
/// not a valid token is written as a quoted-string instead.
///
/// [`token`]: AuthHeaderBuilder::token
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthHeaderBuilder {
    out: String,
    params: usize,
}

fn push_token(out: &mut String, t: &str) {
    if t.is_empty() {
        out.push('-');
    }
    // Names and schemes are almost always clean tokens already: copy them whole.
    if t.bytes().all(is_tchar) {
        out.push_str(t);
        return;
    }
    out.extend(t.chars().map(|c| {
        if c.is_ascii() && is_tchar(c as u8) {
            c
        } else {
            '-'
        }
    }));
}

/// Whether a quoted value holds `"`, `\\`, CR or LF: a plain scan for short values, `memchr` for
/// long ones (a CHALLENGE's base64 `gssapi-data` is hundreds of bytes).
fn needs_escaping(b: &[u8]) -> bool {
    if b.len() < 64 {
        return b.iter().any(|c| matches!(c, b'"' | b'\\' | b'\r' | b'\n'));
    }
    memchr::memchr3(b'"', b'\\', b'\r', b).is_some() || memchr::memchr(b'\n', b).is_some()
}

impl AuthHeaderBuilder {
    /// Start a value with `scheme`.
    pub fn new(scheme: &str) -> Self {
        Self::with_capacity(scheme, 256)
    }

    /// [`new`](Self::new) with room for `capacity` bytes: a caller that knows its values' lengths
    /// (an NTLM CHALLENGE's `gssapi-data` alone is over 256 bytes) builds without regrowing.
    pub fn with_capacity(scheme: &str, capacity: usize) -> Self {
        let mut out = String::with_capacity(capacity);
        push_token(&mut out, scheme);
        AuthHeaderBuilder { out, params: 0 }
    }

    fn sep(&mut self, name: &str) {
        self.out.push_str(if self.params == 0 { " " } else { ", " });
        self.params += 1;
        push_token(&mut self.out, name);
        self.out.push('=');
    }

    /// Append `name="value"`.
    pub fn quoted(mut self, name: &str, value: &str) -> Self {
        self.sep(name);
        self.out.push('"');
        // Fast path: most values (base64 tokens, hex, host names) need no escaping at all.
        if !needs_escaping(value.as_bytes()) {
            self.out.push_str(value);
            self.out.push('"');
            return self;
        }
        for c in value.chars() {
            match c {
                '"' | '\\' => {
                    self.out.push('\\');
                    self.out.push(c);
                }
                '\r' | '\n' => {}
                _ => self.out.push(c),
            }
        }
        self.out.push('"');
        self
    }

    /// Append `name=value` (quoted instead when `value` is not a token).
    pub fn token(mut self, name: &str, value: &str) -> Self {
        if value.is_empty() || !value.bytes().all(is_tchar) {
            return self.quoted(name, value);
        }
        self.sep(name);
        self.out.push_str(value);
        self
    }

    /// Append a parsed parameter in its original form (quoted or token).
    pub fn param(self, p: &AuthParam<'_>) -> Self {
        if p.quoted {
            self.quoted(p.name, &p.value)
        } else {
            self.token(p.name, &p.value)
        }
    }

    /// The value built so far.
    pub fn as_str(&self) -> &str {
        &self.out
    }

    /// Finish.
    pub fn build(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECORDED_PROXY_AUTHORIZATION: &str = r#"NTLM qop="auth", realm="SIP Communications Service", opaque="2BDBAC9D", targetname="cosmo-ocs-r2.cosmo.local", version=4, gssapi-data="TlRMTVNTUAADAAAA", crand="13317733", cnum="1", response="0100000029618e9651b65a7764000000""#;

    #[test]
    fn recorded_ntlm_credentials() {
        let h = AuthHeader::parse(RECORDED_PROXY_AUTHORIZATION).unwrap();
        assert_eq!(h.scheme, "NTLM");
        assert_eq!(h.params.len(), 9);
        assert_eq!(h.param("REALM"), Some("SIP Communications Service"));
        assert_eq!(h.param("version"), Some("4"));
        assert!(!h.params[4].quoted);
        assert_eq!(h.param("crand"), Some("13317733"));
        assert_eq!(
            h.param("response"),
            Some("0100000029618e9651b65a7764000000")
        );
        assert!(matches!(h.params[0].value, Cow::Borrowed(_)));
        // The canonical form of this value is the value itself.
        assert_eq!(h.to_string(), RECORDED_PROXY_AUTHORIZATION);
    }

    #[test]
    fn escapes_are_resolved_and_rebuilt() {
        let h = AuthHeader::parse(r#"Digest realm="a \"b\" \\ c", nonce=xyz"#).unwrap();
        assert_eq!(h.param("realm"), Some(r#"a "b" \ c"#));
        assert!(matches!(h.params[0].value, Cow::Owned(_)));
        assert_eq!(h.to_string(), r#"Digest realm="a \"b\" \\ c", nonce=xyz"#);
    }

    #[test]
    fn builder_output_is_exact() {
        let v = AuthHeaderBuilder::new("NTLM")
            .quoted("realm", "SIP Communications Service")
            .token("version", "4")
            .quoted("x", "q\"\\")
            .token("bad", "has space")
            .build();
        assert_eq!(
            v,
            r#"NTLM realm="SIP Communications Service", version=4, x="q\"\\", bad="has space""#
        );
        assert_eq!(AuthHeaderBuilder::new("Kerberos").build(), "Kerberos");
    }

    #[test]
    fn several_challenges_in_one_value() {
        let v = r#"Digest realm="a", nonce="b", NTLM realm="c", targetname="t""#;
        let all = parse_challenges(v).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].scheme, "Digest");
        assert_eq!(all[0].param("nonce"), Some("b"));
        assert_eq!(all[1].scheme, "NTLM");
        assert_eq!(all[1].param("realm"), Some("c"));
        assert_eq!(
            AuthHeader::parse(v),
            Err(AuthParseError::MultipleChallenges)
        );
        let all = parse_challenges("Negotiate, NTLM realm=\"x\"").unwrap();
        assert_eq!(all.len(), 2);
        assert!(all[0].params.is_empty());
        // LWS including a fold is allowed around '=' and ','.
        let h = AuthHeader::parse("Digest realm = \"a\" ,\r\n nonce=b").unwrap();
        assert_eq!(h.param("nonce"), Some("b"));
    }

    /// What fits in one 8 KB header line: 2 000 distinct names. Checking each name against every
    /// one before it was 2 million comparisons per header, and a message may hold 256 headers.
    fn many_params(n: usize) -> String {
        let mut v = String::from("Digest ");
        for i in 0..n {
            if i > 0 {
                v.push_str(", ");
            }
            v.push_str(&format!("p{i}=x"));
        }
        v
    }

    #[test]
    fn thousands_of_parameters_are_refused() {
        let v = many_params(2000);
        let r = AuthHeader::parse(&v);
        assert!(r.is_err(), "2000 parameters accepted");
        assert!(
            r.as_ref()
                .is_err_and(|e| e.to_string().contains("too many parameters")),
            "{r:?}"
        );
        assert_eq!(r, Err(AuthParseError::TooManyParams { max: MAX_PARAMS }));
        // Up to the cap every name is checked, whatever its case.
        let at_cap = many_params(MAX_PARAMS);
        assert_eq!(
            AuthHeader::parse(&at_cap).map(|h| h.params.len()),
            Ok(MAX_PARAMS)
        );
        assert_eq!(
            AuthHeader::parse(&many_params(MAX_PARAMS + 1)),
            Err(AuthParseError::TooManyParams { max: MAX_PARAMS })
        );
        for (v, dup) in [
            ("Digest nonce=a, x=1, NONCE=b", "NONCE"),
            ("NTLM gssapi-data=a, Gssapi-Data=b", "Gssapi-Data"),
            ("Digest p7=a, realm=b, P7=c", "P7"),
        ] {
            assert_eq!(
                AuthHeader::parse(v),
                Err(AuthParseError::DuplicateParam { name: dup.into() }),
                "{v}"
            );
        }
        // A value made of thousands of challenges is refused too, and AuthHeader::parse stops at
        // the second one.
        let v = "Negotiate, ".repeat(1000) + "NTLM";
        assert!(parse_challenges(&v).is_err(), "1000 challenges accepted");
        assert_eq!(
            parse_challenges(&v),
            Err(AuthParseError::TooManyChallenges {
                max: MAX_CHALLENGES
            })
        );
        assert_eq!(
            AuthHeader::parse(&v),
            Err(AuthParseError::MultipleChallenges)
        );
        let listed = "Negotiate, ".repeat(MAX_CHALLENGES - 1) + "NTLM";
        assert_eq!(
            parse_challenges(&listed).map(|l| l.len()),
            Ok(MAX_CHALLENGES)
        );
    }

    #[test]
    fn malformed_values_are_rejected() {
        use AuthParseError as E;
        let cases: &[(&str, AuthParseError)] = &[
            ("", E::Empty),
            ("   ", E::Empty),
            ("=x", E::BadScheme { at: 0 }),
            ("Digest realm=\"a", E::UnterminatedQuote { at: 13 }),
            ("Digest realm=\"a\\", E::UnterminatedQuote { at: 13 }),
            (
                "Digest realm=a, REALM=b",
                E::DuplicateParam {
                    name: "REALM".into(),
                },
            ),
            ("Digest =a", E::BadParamName { at: 7 }),
            ("Digest realm=", E::BadParamValue { at: 13 }),
            ("Digest realm=a,", E::Garbage { at: 15 }),
            ("Digest realm=a,,b=c", E::Garbage { at: 15 }),
            ("Digest realm=a b=c", E::Garbage { at: 15 }),
            ("Digest realm", E::Garbage { at: 12 }),
            ("Digest\"x\"", E::Garbage { at: 6 }),
            ("Basic dXNlcjpwYXNz==", E::BadParamValue { at: 19 }),
            ("Digest realm=\"a\"x", E::Garbage { at: 16 }),
        ];
        for (input, want) in cases {
            assert_eq!(AuthHeader::parse(input).as_ref(), Err(want), "{input:?}");
        }
    }
}

#[cfg(test)]
mod equivalence_tests;

#[cfg(test)]
mod scan_tests {
    use super::quote_or_backslash;

    #[test]
    fn quote_or_backslash_finds_the_first_as_a_plain_scan_does() {
        let naive = |s: &[u8]| s.iter().position(|&c| c == b'"' || c == b'\\');
        // Every length up to past the 32 bytes searched a word at a time, each stop byte at
        // every position, with and without a second one after it, among bytes that differ from
        // the stop bytes by one bit (and 0x00, 0x80, 0xff, where word tricks go wrong).
        let fillers = [
            b'a',
            b'#',
            b'!',
            b'^',
            b'\\' ^ 0x80,
            b'"' ^ 0x80,
            0,
            0x80,
            0xff,
        ];
        for len in 0..80 {
            for &fill in &fillers {
                let plain = vec![fill; len];
                assert_eq!(quote_or_backslash(&plain), naive(&plain));
                for at in 0..len {
                    for stop in [b'"', b'\\'] {
                        let mut s = plain.clone();
                        s[at] = stop;
                        assert_eq!(quote_or_backslash(&s), naive(&s), "{len} {at}");
                        if at + 3 < len {
                            s[at + 3] = b'"';
                            assert_eq!(quote_or_backslash(&s), naive(&s));
                        }
                        if at > 0 {
                            let mut s = s.clone();
                            s[at - 1] = 0;
                            assert_eq!(quote_or_backslash(&s), naive(&s));
                        }
                    }
                }
            }
        }
    }
}
