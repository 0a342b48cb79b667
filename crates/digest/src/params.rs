//! Client credentials (`Authorization` / `Proxy-Authorization: Digest ...`) as already-split
//! parameters.

use crate::DigestError;

/// More parameters than any real client sends; bounds the work a hostile header can cause.
pub const MAX_PARAMS: usize = 32;
/// Longest accepted parameter value in bytes (a long SIP Request-URI still fits).
pub const MAX_VALUE_LEN: usize = 2048;
/// Longest accepted parameter name in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// Digest credentials borrowed from the caller's header parser. Values are already unquoted and
/// unescaped.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DigestResponse<'a> {
    pub username: &'a str,
    pub realm: &'a str,
    pub nonce: &'a str,
    pub uri: &'a str,
    pub response: &'a str,
    pub algorithm: Option<&'a str>,
    pub qop: Option<&'a str>,
    pub nc: Option<&'a str>,
    pub cnonce: Option<&'a str>,
    pub opaque: Option<&'a str>,
    /// `username` is `H(username:realm)` (RFC 7616 §3.4.4).
    pub userhash: bool,
}

/// The directives we understand, in slot order. Unknown directives are ignored (RFC 7616 §3.4:
/// "any unrecognized directive MUST be ignored").
const NAMES: [&str; 12] = [
    "username",
    "username*",
    "realm",
    "nonce",
    "uri",
    "response",
    "algorithm",
    "qop",
    "nc",
    "cnonce",
    "opaque",
    "userhash",
];
const USERNAME: usize = 0;
const USERNAME_STAR: usize = 1;
const REALM: usize = 2;
const NONCE: usize = 3;
const URI: usize = 4;
const RESPONSE: usize = 5;
const ALGORITHM: usize = 6;
const QOP: usize = 7;
const NC: usize = 8;
const CNONCE: usize = 9;
const OPAQUE: usize = 10;
const USERHASH: usize = 11;

fn put<'a>(slot: &mut Option<&'a str>, value: &'a str) -> Result<(), DigestError> {
    if slot.is_some() {
        return Err(DigestError::DuplicateParam);
    }
    *slot = Some(value);
    Ok(())
}

/// Rejects values that could not have come from a well-formed quoted-string or token and that
/// would be dangerous to echo (CR/LF header injection, NUL).
fn check_value(v: &str) -> Result<(), DigestError> {
    if v.len() > MAX_VALUE_LEN {
        return Err(DigestError::Malformed("parameter value too long"));
    }
    if v.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(DigestError::Malformed(
            "control character in parameter value",
        ));
    }
    Ok(())
}

fn required<'a>(v: Option<&'a str>, name: &'static str) -> Result<&'a str, DigestError> {
    match v {
        None => Err(DigestError::MissingParam(name)),
        Some("") => Err(DigestError::Malformed("empty required parameter")),
        Some(s) => Ok(s),
    }
}

impl<'a> DigestResponse<'a> {
    /// Collects the directives of one credentials value. Names match ASCII-case-insensitively.
    ///
    /// Errors: a known directive twice -> `DuplicateParam`; `username`, `realm`, `nonce`, `uri` or
    /// `response` absent -> `MissingParam`; `qop` without `nc`/`cnonce` -> `MissingParam`;
    /// `nc`/`cnonce` without `qop`, `username*` (not used by SIP), a bad `userhash` flag, control
    /// characters or oversized input -> `Malformed`.
    pub fn from_params<I: IntoIterator<Item = (&'a str, &'a str)>>(
        params: I,
    ) -> Result<Self, DigestError> {
        let mut slots: [Option<&'a str>; NAMES.len()] = [None; NAMES.len()];
        for (count, (name, value)) in params.into_iter().enumerate() {
            if count >= MAX_PARAMS {
                return Err(DigestError::Malformed("too many parameters"));
            }
            if name.len() > MAX_NAME_LEN {
                return Err(DigestError::Malformed("parameter name too long"));
            }
            check_value(value)?;
            let Some(slot) = NAMES
                .iter()
                .position(|n| n.eq_ignore_ascii_case(name))
                .and_then(|i| slots.get_mut(i))
            else {
                continue;
            };
            put(slot, value)?;
        }

        let get = |i: usize| slots.get(i).copied().flatten();
        if get(USERNAME_STAR).is_some() {
            // RFC 8760 does not carry RFC 7616's extended username notation over to SIP.
            return Err(DigestError::Malformed("username* is not supported"));
        }
        let username = required(get(USERNAME), "username")?;
        let realm = get(REALM).ok_or(DigestError::MissingParam("realm"))?;
        let nonce = required(get(NONCE), "nonce")?;
        let uri = required(get(URI), "uri")?;
        let response = required(get(RESPONSE), "response")?;
        match get(QOP) {
            Some(_) => {
                required(get(NC), "nc")?;
                required(get(CNONCE), "cnonce")?;
            }
            None if get(NC).is_some() || get(CNONCE).is_some() => {
                return Err(DigestError::Malformed("nc or cnonce without qop"));
            }
            None => {}
        }
        let userhash = match get(USERHASH) {
            None => false,
            Some(v) if v.eq_ignore_ascii_case("true") => true,
            Some(v) if v.eq_ignore_ascii_case("false") => false,
            Some(_) => return Err(DigestError::Malformed("userhash is neither true nor false")),
        };
        Ok(DigestResponse {
            username,
            realm,
            nonce,
            uri,
            response,
            // Empty (libre's `algorithm=` after a stale challenge): as if absent, MD5.
            algorithm: get(ALGORITHM).filter(|a| !a.is_empty()),
            qop: get(QOP),
            nc: get(NC),
            cnonce: get(CNONCE),
            opaque: get(OPAQUE),
            userhash,
        })
    }
}

impl std::fmt::Debug for DigestResponse<'_> {
    /// `response` is redacted: with the nonce it allows an offline dictionary attack on the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DigestResponse")
            .field("username", &self.username)
            .field("realm", &self.realm)
            .field("nonce", &self.nonce)
            .field("uri", &self.uri)
            .field("response", &"<redacted>")
            .field("algorithm", &self.algorithm)
            .field("qop", &self.qop)
            .field("nc", &self.nc)
            .field("cnonce", &self.cnonce)
            .field("opaque", &self.opaque)
            .field("userhash", &self.userhash)
            .finish()
    }
}
