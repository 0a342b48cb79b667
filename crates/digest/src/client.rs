//! The answering side, for test tooling and an operator tool: parse a challenge, produce
//! credentials. Not used by the server path.

use std::borrow::Cow;

use crate::algorithm::Algorithm;
use crate::ha1::{Ha1, userhash};
use crate::server::{QopMode, response_hex};
use crate::{DigestError, quote};

/// A server challenge (`WWW-Authenticate` / `Proxy-Authenticate: Digest ...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Challenge<'a> {
    pub realm: &'a str,
    pub nonce: &'a str,
    pub algorithm: Algorithm,
    /// `Auth` when the challenge offers `qop` containing `auth`, `Rfc2069` when it has no `qop`.
    pub qop: QopMode,
    pub opaque: Option<&'a str>,
    pub stale: bool,
    pub userhash: bool,
}

impl<'a> Challenge<'a> {
    /// Reads already-split, unquoted challenge parameters (names case-insensitive).
    pub fn from_params<I: IntoIterator<Item = (&'a str, &'a str)>>(
        params: I,
    ) -> Result<Self, DigestError> {
        let (mut realm, mut nonce, mut algorithm, mut qop, mut opaque, mut stale, mut uh) =
            (None, None, None, None, None, None, None);
        for (count, (name, value)) in params.into_iter().enumerate() {
            if count >= crate::params::MAX_PARAMS {
                return Err(DigestError::Malformed("too many parameters"));
            }
            let slot = match name {
                n if n.eq_ignore_ascii_case("realm") => &mut realm,
                n if n.eq_ignore_ascii_case("nonce") => &mut nonce,
                n if n.eq_ignore_ascii_case("algorithm") => &mut algorithm,
                n if n.eq_ignore_ascii_case("qop") => &mut qop,
                n if n.eq_ignore_ascii_case("opaque") => &mut opaque,
                n if n.eq_ignore_ascii_case("stale") => &mut stale,
                n if n.eq_ignore_ascii_case("userhash") => &mut uh,
                _ => continue,
            };
            if slot.replace(value).is_some() {
                return Err(DigestError::DuplicateParam);
            }
        }
        let algorithm = match algorithm {
            None => Algorithm::Md5,
            Some(t) => Algorithm::from_token(t).ok_or(DigestError::UnsupportedAlgorithm)?,
        };
        let qop = match qop {
            None => QopMode::Rfc2069,
            Some(list)
                if list
                    .split(',')
                    .any(|q| q.trim().eq_ignore_ascii_case("auth")) =>
            {
                QopMode::Auth
            }
            Some(_) => return Err(DigestError::UnsupportedQop),
        };
        let is_true = |v: Option<&str>| v.is_some_and(|v| v.eq_ignore_ascii_case("true"));
        Ok(Challenge {
            realm: realm.ok_or(DigestError::MissingParam("realm"))?,
            nonce: nonce.ok_or(DigestError::MissingParam("nonce"))?,
            algorithm,
            qop,
            opaque,
            stale: is_true(stale),
            userhash: is_true(uh),
        })
    }
}

/// How a credentials parameter is written on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Quoted,
    Token,
}

/// Credentials ready to send, as (name, value, form) triples in conventional order.
#[derive(Clone, PartialEq, Eq)]
pub struct Authorization {
    params: Vec<(&'static str, String, Form)>,
}

impl Authorization {
    /// Unquoted (name, value) pairs, the shape [`crate::DigestResponse::from_params`] takes.
    pub fn params(&self) -> impl Iterator<Item = (&str, &str)> {
        self.params.iter().map(|(n, v, _)| (*n, v.as_str()))
    }

    /// The header value: `Digest username="..", realm="..", ...`.
    pub fn header_value(&self) -> String {
        let mut out = String::from("Digest ");
        for (i, (name, value, form)) in self.params.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str(name);
            out.push('=');
            match form {
                Form::Quoted => out.push_str(&quote(value)),
                Form::Token => out.push_str(value),
            }
        }
        out
    }
}

impl std::fmt::Debug for Authorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut l = f.debug_list();
        for (n, v, _) in &self.params {
            if *n == "response" {
                l.entry(&(n, "<redacted>"));
            } else {
                l.entry(&(n, v));
            }
        }
        l.finish()
    }
}

/// Answers `challenge` for `method` / `uri` with the user's HA1 (see [`Ha1::compute`]).
/// `cnonce` must come from the caller's RNG; `nc` counts the uses of this nonce, from 1.
pub fn authorize(
    challenge: &Challenge<'_>,
    username: &str,
    ha1: &Ha1,
    method: &str,
    uri: &str,
    cnonce: &str,
    nc: u32,
) -> Result<Authorization, DigestError> {
    if ha1.algorithm() != challenge.algorithm.base() {
        return Err(DigestError::Ha1AlgorithmMismatch);
    }
    let alg = challenge.algorithm;
    let nc_text = format!("{nc:08x}");
    let qop = match challenge.qop {
        QopMode::Auth => Some((nc_text.as_str(), cnonce, "auth")),
        QopMode::Rfc2069 if alg.is_sess() => return Err(DigestError::UnsupportedQop),
        QopMode::Rfc2069 => None,
    };
    let response = response_hex(ha1, alg, challenge.nonce, qop, method, uri);
    let user = if challenge.userhash {
        userhash(alg, username, challenge.realm)
    } else {
        username.to_owned()
    };
    let mut params = vec![
        ("username", user, Form::Quoted),
        ("realm", challenge.realm.to_owned(), Form::Quoted),
        ("nonce", challenge.nonce.to_owned(), Form::Quoted),
        ("uri", uri.to_owned(), Form::Quoted),
        ("response", response, Form::Quoted),
        ("algorithm", alg.token().to_owned(), Form::Token),
    ];
    if qop.is_some() {
        params.push(("cnonce", cnonce.to_owned(), Form::Quoted));
        params.push(("qop", "auth".to_owned(), Form::Token));
        params.push(("nc", nc_text, Form::Token));
    }
    if let Some(o) = challenge.opaque {
        params.push(("opaque", o.to_owned(), Form::Quoted));
    }
    if challenge.userhash {
        params.push(("userhash", "true".to_owned(), Form::Token));
    }
    Ok(Authorization { params })
}

/// A `Digest ...` header value split into its scheme and unquoted parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderParams<'a> {
    pub scheme: &'a str,
    pub params: Vec<(&'a str, Cow<'a, str>)>,
}

impl HeaderParams<'_> {
    /// Borrowed (name, value) pairs for [`Challenge::from_params`] /
    /// [`crate::DigestResponse::from_params`].
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.params.iter().map(|(n, v)| (*n, v.as_ref()))
    }
}

/// Lenient token: any visible ASCII except the list and quoting delimiters (and `=` in names).
fn is_name_char(b: u8) -> bool {
    b.is_ascii_graphic() && !matches!(b, b',' | b'"' | b'=')
}

fn is_value_char(b: u8) -> bool {
    b.is_ascii_graphic() && !matches!(b, b',' | b'"')
}

fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while s
        .get(i)
        .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
    {
        i += 1;
    }
    i
}

fn token(s: &[u8], start: usize, allowed: fn(u8) -> bool) -> usize {
    let mut i = start;
    while s.get(i).copied().is_some_and(allowed) {
        i += 1;
    }
    i
}

/// Splits a challenge or credentials header value (`Digest realm="x", qop="auth", nc=00000001`),
/// unquoting quoted-strings (RFC 3261 §25.1, `\` escapes). A minimal parser for tooling and
/// tests; the gateway feeds the server from its own SIP header parser.
pub fn parse_header(value: &str) -> Result<HeaderParams<'_>, DigestError> {
    let s = value.as_bytes();
    let start = skip_ws(s, 0);
    let end = token(s, start, is_name_char);
    let scheme = value.get(start..end).unwrap_or("");
    if scheme.is_empty() {
        return Err(DigestError::Malformed("missing auth scheme"));
    }
    let mut params = Vec::new();
    let mut i = end;
    loop {
        i = skip_ws(s, i);
        match s.get(i) {
            None => break,
            Some(b',') => {
                i += 1;
                continue;
            }
            Some(_) => {}
        }
        if params.len() >= crate::params::MAX_PARAMS {
            return Err(DigestError::Malformed("too many parameters"));
        }
        let name_end = token(s, i, is_name_char);
        let name = value.get(i..name_end).unwrap_or("");
        if name.is_empty() {
            return Err(DigestError::Malformed("expected a parameter name"));
        }
        i = skip_ws(s, name_end);
        if s.get(i) != Some(&b'=') {
            return Err(DigestError::Malformed("expected `=` after parameter name"));
        }
        i = skip_ws(s, i + 1);
        let v = if s.get(i) == Some(&b'"') {
            let (v, next) = quoted(value, i + 1)?;
            i = next;
            v
        } else {
            let v_end = token(s, i, is_value_char);
            let v = value.get(i..v_end).unwrap_or("");
            if v.is_empty() {
                return Err(DigestError::Malformed("expected a parameter value"));
            }
            i = v_end;
            Cow::Borrowed(v)
        };
        params.push((name, v));
        i = skip_ws(s, i);
        match s.get(i) {
            None => break,
            Some(b',') => i += 1,
            Some(_) => return Err(DigestError::Malformed("expected `,` between parameters")),
        }
    }
    Ok(HeaderParams { scheme, params })
}

/// Reads a quoted-string body starting after the opening quote; returns it and the index after
/// the closing quote.
fn quoted(value: &str, start: usize) -> Result<(Cow<'_, str>, usize), DigestError> {
    let rest = value.get(start..).unwrap_or("");
    let mut out: Option<String> = None;
    let mut chars = rest.char_indices();
    while let Some((off, c)) = chars.next() {
        match c {
            '"' => {
                let v = match out {
                    Some(o) => Cow::Owned(o),
                    None => Cow::Borrowed(rest.get(..off).unwrap_or("")),
                };
                return Ok((v, start + off + 1));
            }
            '\\' => {
                let Some((_, esc)) = chars.next() else { break };
                out.get_or_insert_with(|| rest.get(..off).unwrap_or("").to_owned())
                    .push(esc);
            }
            c => {
                if let Some(o) = out.as_mut() {
                    o.push(c);
                }
            }
        }
    }
    Err(DigestError::Malformed("unterminated quoted-string"))
}
