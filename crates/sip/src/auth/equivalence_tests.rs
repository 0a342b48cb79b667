//! The parser as it was before the allocation-free [`AuthHeader::scan`] (a `Vec` of parameters
//! per header, names checked against it), kept verbatim as the reference the present one must
//! agree with: same headers, same errors, on well-formed and hostile values alike.

use std::borrow::Cow;
use std::ops::ControlFlow;

use super::{
    AuthHeader, AuthParam, MAX_CHALLENGES, MAX_PARAMS, is_tchar, parse_challenges,
    quote_or_backslash,
};
use crate::error::AuthParseError;

struct OldCursor<'a> {
    s: &'a str,
    i: usize,
}

impl<'a> OldCursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.i).copied()
    }

    /// Skip LWS (folded values may hold CRLF); returns whether anything was skipped.
    fn skip_lws(&mut self) -> bool {
        let start = self.i;
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.i += 1;
        }
        self.i > start
    }

    fn token(&mut self) -> &'a str {
        let start = self.i;
        while self.peek().is_some_and(is_tchar) {
            self.i += 1;
        }
        self.s.get(start..self.i).unwrap_or("")
    }

    /// A quoted-string starting at the current `"`.
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
        Ok(Cow::Owned(out))
    }
}

/// [`parse_challenges`] stopping when challenge `max + 1` starts: `max` 1 is
/// [`AuthHeader::parse`], which has no use for the rest of a value that lists several.
fn parse_list(value: &str, max: usize) -> Result<Vec<AuthHeader<'_>>, AuthParseError> {
    let mut out = Vec::new();
    parse_each(value, max, |h| out.push(h))?;
    Ok(out)
}

/// The elements of a challenge or credentials list, each handed to `emit` as it is complete
/// (at most `max`; one more is an error). A single header ([`AuthHeader::parse`]) needs no
/// vector of headers around its one element.
fn parse_each<'a>(
    value: &'a str,
    max: usize,
    mut emit: impl FnMut(AuthHeader<'a>),
) -> Result<(), AuthParseError> {
    let mut c = OldCursor { s: value, i: 0 };
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
        let mut params: Vec<AuthParam<'_>> = Vec::with_capacity(12);
        let spaced = c.skip_lws();
        match c.peek() {
            None => {
                emit(AuthHeader { scheme, params });
                return Ok(());
            }
            Some(b',') => {
                c.i += 1;
                list_separator_tail(&mut c)?;
                emit(AuthHeader { scheme, params });
                count += 1;
                continue;
            }
            Some(_) if !spaced => return Err(AuthParseError::Garbage { at: c.i }),
            Some(_) => {}
        }
        let finished = loop {
            let name_at = c.i;
            let name = c.token();
            if name.is_empty() {
                return Err(AuthParseError::BadParamName { at: name_at });
            }
            c.skip_lws();
            if c.peek() != Some(b'=') {
                if params.is_empty() {
                    return Err(AuthParseError::Garbage { at: c.i });
                }
                // The element is the next challenge's scheme.
                c.i = name_at;
                break false;
            }
            c.i += 1;
            c.skip_lws();
            let value_at = c.i;
            let (value, quoted) = if c.peek() == Some(b'"') {
                (c.quoted()?, true)
            } else {
                let t = c.token();
                if t.is_empty() {
                    return Err(AuthParseError::BadParamValue { at: value_at });
                }
                (Cow::Borrowed(t), false)
            };
            if params.len() >= MAX_PARAMS {
                return Err(AuthParseError::TooManyParams { max: MAX_PARAMS });
            }
            // Each name is compared with the ones before it, of which there are fewer than
            // MAX_PARAMS: at most MAX_PARAMS times the length of the value in all, linear. (It
            // was unbounded: 2 000 parameters in one 8 KB line took 2 million comparisons.) A
            // comparison stops at the first differing length or byte.
            let duplicate = params.iter().any(|p| p.name.eq_ignore_ascii_case(name));
            if duplicate {
                return Err(AuthParseError::DuplicateParam {
                    name: name.to_owned(),
                });
            }
            params.push(AuthParam {
                name,
                value,
                quoted,
            });
            c.skip_lws();
            match c.peek() {
                None => break true,
                Some(b',') => {
                    c.i += 1;
                    list_separator_tail(&mut c)?;
                }
                Some(_) => return Err(AuthParseError::Garbage { at: c.i }),
            }
        };
        emit(AuthHeader { scheme, params });
        count += 1;
        if finished {
            return Ok(());
        }
    }
}

/// After a `,`: skip LWS and reject a trailing comma or an empty element.
fn list_separator_tail(c: &mut OldCursor<'_>) -> Result<(), AuthParseError> {
    c.skip_lws();
    match c.peek() {
        None | Some(b',') => Err(AuthParseError::Garbage { at: c.i }),
        Some(_) => Ok(()),
    }
}

/// `AuthHeader::parse` as it was.
fn old_parse(value: &str) -> Result<AuthHeader<'_>, AuthParseError> {
    let mut one = None;
    parse_each(value, 1, |h| one = Some(h))?;
    one.ok_or(AuthParseError::Empty)
}

/// A deterministic stream of pseudo-random numbers (xorshift64), for reproducible cases.
struct Rand(u64);

impl Rand {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }
}

const SCHEMES: &[&str] = &[
    "NTLM", "Kerberos", "Digest", "ntlm", "TLS-DSK", "x", "", "=", "N\u{e9}",
];
const NAMES: &[&str] = &[
    "realm",
    "REALM",
    "Realm",
    "opaque",
    "crand",
    "cnum",
    "response",
    "targetname",
    "gssapi-data",
    "GSSAPI-Data",
    "qop",
    "version",
    "x",
    "p-1",
    "",
    "na me",
    "n\"",
    "\u{e9}t\u{e9}",
];
const VALUES: &[&str] = &[
    "\"auth\"",
    "\"SIP Communications Service\"",
    "\"2BDBAC9D\"",
    "\"\"",
    "4",
    "tok-en.x",
    "\"a\\\"b\"",
    "\"a\\\\\"",
    "\"unterminated",
    "\"ends in \\",
    "\"\\",
    "",
    "\"\u{e9}\\\u{e9}\"",
    "\"0100000029618e9651b65a7764000000\"",
    "\"0123456789abcdef0123456789abcdef0123456789\"",
    "\"with, comma\"",
    "\"with = eq\"",
    "a b",
    "==",
    "\"x\"y",
    "\"\r\n\"",
];
const GAPS: &[&str] = &["", " ", "  ", "\t", "\r\n ", "\r\n", " \t "];
const SEPARATORS: &[&str] = &[",", ", ", " ,", ",,", ", , ", ";", " ", ",\r\n\t"];

/// A value from the pieces above: mostly header-shaped, often broken somewhere.
fn case(r: &mut Rand) -> String {
    let mut v = String::new();
    v.push_str(r.pick(GAPS));
    for challenge in 0..1 + r.below(3) / 2 {
        if challenge > 0 {
            v.push_str(r.pick(SEPARATORS));
        }
        v.push_str(r.pick(SCHEMES));
        v.push_str(if r.below(8) == 0 { r.pick(GAPS) } else { " " });
        let n = r.below(10);
        for i in 0..n {
            if i > 0 {
                v.push_str(if r.below(6) == 0 {
                    r.pick(SEPARATORS)
                } else {
                    ", "
                });
            }
            v.push_str(r.pick(NAMES));
            if r.below(10) > 0 {
                if r.below(5) == 0 {
                    v.push_str(r.pick(GAPS));
                }
                v.push('=');
                if r.below(5) == 0 {
                    v.push_str(r.pick(GAPS));
                }
                v.push_str(r.pick(VALUES));
            }
        }
    }
    if r.below(6) == 0 {
        v.push_str(r.pick(SEPARATORS));
    }
    if r.below(6) == 0 {
        v.push_str(r.pick(GAPS));
    }
    v
}

/// What `scan` visits, with the visitor stopping after `stop_after` parameters (if given).
fn scanned(
    v: &str,
    stop_after: Option<usize>,
) -> (
    Result<ControlFlow<(), &str>, AuthParseError>,
    Vec<AuthParam<'_>>,
) {
    let mut seen = Vec::new();
    let r = AuthHeader::scan(v, |p| {
        seen.push(p);
        if stop_after == Some(seen.len()) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    (r, seen)
}

fn check(v: &str) {
    let old = old_parse(v);
    let new = AuthHeader::parse(v);
    assert_eq!(new, old, "parse {v:?}");
    assert_eq!(
        parse_challenges(v),
        parse_list(v, MAX_CHALLENGES),
        "list {v:?}"
    );
    let (r, seen) = scanned(v, None);
    match &old {
        Ok(h) => {
            assert_eq!(r, Ok(ControlFlow::Continue(h.scheme)), "scan {v:?}");
            assert_eq!(seen, h.params, "scan {v:?}");
            // Stopped after k parameters: the first k, and no verdict on the rest.
            for k in 1..=h.params.len() {
                let (r, seen) = scanned(v, Some(k));
                assert_eq!(r, Ok(ControlFlow::Break(())), "scan {v:?} stop {k}");
                assert_eq!(seen[..], h.params[..k], "scan {v:?} stop {k}");
            }
        }
        Err(e) => assert_eq!(r.as_ref(), Err(e), "scan {v:?}"),
    }
}

#[test]
fn the_parser_and_scan_agree_with_the_old_parser_on_generated_values() {
    let mut r = Rand(0x9E37_79B9_7F4A_7C15);
    let (mut accepted, mut refused) = (0, 0);
    for _ in 0..200_000 {
        let v = case(&mut r);
        check(&v);
        if old_parse(&v).is_ok() {
            accepted += 1;
        } else {
            refused += 1;
        }
    }
    // Both sides of the grammar are well covered.
    assert!(
        accepted > 10_000 && refused > 10_000,
        "{accepted} {refused}"
    );
}

#[test]
fn the_parser_and_scan_agree_with_the_old_parser_on_edge_values() {
    let many = |n: usize, dup: &str| {
        let mut v = String::from("NTLM ");
        for i in 0..n {
            v.push_str(&format!("p{i}=x, "));
        }
        v.push_str(dup);
        v.push_str("=y");
        v
    };
    let fixed = [
        "",
        " ",
        "\r\n",
        "NTLM",
        "NTLM ",
        "NTLM,",
        "NTLM, Kerberos",
        "Negotiate, NTLM realm=\"x\"",
        "NTLM realm=\"a\", REALM=\"b\"",
        "NTLM realm=\"a\" , realm=b",
        "NTLM gssapi-data=\"\", qop=auth",
        "NTLM realm=\"\\\"\"",
        "NTLM realm=\"a\\\\\"b\", x=1",
        "NTLM realm=\"a\\",
        "NTLM realm=a,b",
        "NTLM realm=a, b c=d",
        "NTLM realm=a, Digest nonce=b, NTLM x=1",
        "NTLM\trealm=a",
        "NTLM\r\n realm=a",
        "NTLM realm=\u{e9}",
        "NTLM r\u{e9}alm=a",
        "NTLM realm=\"\u{e9}\\\u{e9}\"",
        "NTLM realm=\"x\"\u{e9}",
        "\u{e9}",
        "NTLM =a",
        "NTLM a==b",
        "NTLM a=\"b\",",
        "NTLM a=\"b\",  ",
    ];
    for v in fixed {
        check(v);
    }
    for n in [
        MAX_PARAMS - 2,
        MAX_PARAMS - 1,
        MAX_PARAMS,
        MAX_PARAMS + 1,
        40,
    ] {
        for dup in ["p0", "P0", "q", "p30", "P31"] {
            check(&many(n, dup));
        }
    }
    // Long names: lengths past 63 share one bit of the duplicate check's length mask.
    for (a, b) in [
        (62, 62),
        (63, 63),
        (63, 64),
        (64, 64),
        (64, 70),
        (70, 70),
        (70, 71),
    ] {
        let (x, y) = ("n".repeat(a), "N".repeat(b));
        check(&format!("NTLM {x}=1, {y}=2"));
        check(&format!("NTLM {x}=1, q=2, {y}x=3, {y}=4"));
    }
    let listed = "Negotiate, ".repeat(MAX_CHALLENGES) + "NTLM a=b";
    check(&listed);
    check(&("Negotiate, ".repeat(MAX_CHALLENGES - 1) + "NTLM a=b"));
}
