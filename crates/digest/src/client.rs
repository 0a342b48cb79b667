//! The answering side, for test tooling and an operator tool: parse a challenge, produce
//! credentials. Not used by the server path.

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
