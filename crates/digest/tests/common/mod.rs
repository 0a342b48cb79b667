#![allow(dead_code)]

use std::time::{Duration, SystemTime};

use sagw_digest::{Algorithm, DigestConfig, DigestServer, NonceKey};

pub const T0: u64 = 1_750_000_000;
pub const REALM: &str = "sip.example.com";
pub const KEY: [u8; 32] = [0x42; 32];

pub fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

pub fn server_with(realm: &str, algs: &[Algorithm], key: [u8; 32]) -> DigestServer {
    let mut cfg = DigestConfig::new(realm);
    cfg.algorithms = algs.to_vec();
    DigestServer::new(cfg, NonceKey::new(key))
}

pub fn server(algs: &[Algorithm]) -> DigestServer {
    server_with(REALM, algs, KEY)
}

/// Hash written against the RustCrypto crates directly, independent of the crate's own code.
pub fn h(alg: Algorithm, s: &str) -> String {
    use sha2::Digest as _;
    match alg.base() {
        Algorithm::Md5 => sagw_hex::encode(md5::Md5::digest(s.as_bytes())),
        Algorithm::Sha256 => sagw_hex::encode(sha2::Sha256::digest(s.as_bytes())),
        _ => sagw_hex::encode(sha2::Sha512_256::digest(s.as_bytes())),
    }
}

/// Independent client-side response computation (RFC 7616 §3.4.1/§3.4.2, qop=auth).
#[allow(clippy::too_many_arguments)]
pub fn independent_response(
    alg: Algorithm,
    user: &str,
    realm: &str,
    password: &str,
    method: &str,
    uri: &str,
    nonce: &str,
    nc: &str,
    cnonce: &str,
) -> String {
    let mut ha1 = h(alg, &format!("{user}:{realm}:{password}"));
    if alg.is_sess() {
        ha1 = h(alg, &format!("{ha1}:{nonce}:{cnonce}"));
    }
    let ha2 = h(alg, &format!("{method}:{uri}"));
    h(alg, &format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"))
}

/// Credentials as (name, value) pairs, overridable per test.
pub struct Creds {
    pub params: Vec<(String, String)>,
}

impl Creds {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        alg: Algorithm,
        user: &str,
        realm: &str,
        password: &str,
        method: &str,
        uri: &str,
        nonce: &str,
        nc: &str,
        cnonce: &str,
    ) -> Self {
        let response =
            independent_response(alg, user, realm, password, method, uri, nonce, nc, cnonce);
        let p = |a: &str, b: &str| (a.to_owned(), b.to_owned());
        Creds {
            params: vec![
                p("username", user),
                p("realm", realm),
                p("nonce", nonce),
                p("uri", uri),
                p("response", &response),
                p("algorithm", alg.token()),
                p("qop", "auth"),
                p("nc", nc),
                p("cnonce", cnonce),
            ],
        }
    }

    pub fn set(mut self, name: &str, value: &str) -> Self {
        match self.params.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value.to_owned(),
            None => self.params.push((name.to_owned(), value.to_owned())),
        }
        self
    }

    pub fn remove(mut self, name: &str) -> Self {
        self.params.retain(|(n, _)| n != name);
        self
    }

    pub fn push(mut self, name: &str, value: &str) -> Self {
        self.params.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.params.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }
}
