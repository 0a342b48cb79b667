//! Server-side SIP Digest authentication: RFC 3261 §22 with the RFC 7616 algorithms as adopted for
//! SIP by RFC 8760 (MD5, SHA-256, SHA-512-256 and their `-sess` forms), `qop=auth`.
//!
//! Sans-IO: no clock, no RNG, no hidden shared state. The caller passes `now` and random salt,
//! and feeds already-split `(name, unquoted value)` parameters from its own header parser.
//!
//! Flow:
//! 1. No or bad credentials: send [`DigestServer::challenges`] (one header per algorithm).
//! 2. Credentials: [`DigestResponse::from_params`], look the user's [`Ha1`] up by
//!    (username, realm, algorithm), [`DigestServer::verify`], then
//!    [`NonceCounter::check_verified`] against replays, then check `uri` against the request.
//! 3. On success optionally add [`DigestServer::authentication_info`].
//!
//! Nonces are stateless (timestamp + salt + node id + HMAC), so any node holding the [`NonceKey`]
//! verifies them; only the nonce-count table is stateful and it is bounded. Nodes of a pool share
//! the key but not their tables, so each takes only the nonces it minted ([`DigestConfig::node_id`])
//! and answers another node's with a fresh challenge marked `stale=true`.

mod algorithm;
pub mod client;
mod counter;
mod error;
mod ha1;
mod nonce;
mod params;
mod server;

pub use algorithm::Algorithm;
pub use counter::{DEFAULT_NONCES_PER_OWNER, NC_WINDOW, NonceCounter};
pub use error::{DigestError, Disposition};
pub use ha1::{Ha1, userhash};
pub use nonce::{NONCE_LEN, Nonce, NonceKey};
pub use params::{DigestResponse, MAX_NAME_LEN, MAX_PARAMS, MAX_VALUE_LEN};
pub use server::{
    DigestConfig, DigestServer, MAX_CLOCK_SKEW, QopMode, Rfc2069Policy, VerifiedDigest,
    response_hex,
};

/// Writes `s` as a quoted-string (RFC 3261 §25.1): `"` and `\` escaped, control characters
/// dropped so that no value, even one echoed from a client, can break the header line.
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    quote_into(s, &mut out);
    out
}

/// [`quote`] appended to `out` (the per-challenge header values are written this way, without
/// `fmt` or a temporary).
pub(crate) fn quote_into(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() && c != '\t' => {}
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_escapes_and_strips_controls() {
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(quote("x\r\nInjected: 1"), "\"xInjected: 1\"");
    }
}
