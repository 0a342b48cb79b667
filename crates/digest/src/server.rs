//! The verifying side: challenges, credential checks, `Authentication-Info`.

use std::time::{Duration, SystemTime};

use subtle::ConstantTimeEq;

use crate::DigestError;
use crate::algorithm::{Algorithm, DigestBytes, Hasher};
use crate::ha1::Ha1;
use crate::nonce::{self, Nonce, NonceKey};
use crate::params::DigestResponse;

/// How far in the future a nonce's timestamp may lie. Nonces minted by another node of a cluster
/// sharing the key carry that node's clock; anything further ahead was not minted by a sane peer.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(30);

/// Server settings. Build with [`DigestConfig::new`] and adjust fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestConfig {
    /// Realm put in challenges and required in credentials (exact match).
    pub realm: String,
    /// Algorithms offered, most preferred first; one challenge is emitted per entry
    /// (RFC 8760 §2.6). Credentials using any other algorithm are refused.
    pub algorithms: Vec<Algorithm>,
    /// How long a nonce stays valid after issue.
    pub nonce_lifetime: Duration,
    /// Largest `nc` accepted on one nonce; beyond it the nonce is reported stale so the client
    /// fetches a fresh one.
    pub max_nonce_uses: u32,
    /// This server's node in a pool of gateways sharing the nonce key; 0 for a single gateway.
    /// Written into every nonce under its MAC: a nonce of another node verifies (same key) but is
    /// answered like an expired one ([`DigestError::OtherNode`], a fresh challenge with
    /// `stale=true`), so credentials accepted by one node cannot be replayed at another, whose
    /// nonce-count table never saw them.
    pub node_id: u16,
}

impl DigestConfig {
    /// Defaults: SHA-256 then MD5 (what deployed SIP phones implement; SHA-512-256 support is
    /// rare), 300 s nonce lifetime, 1000 uses per nonce.
    pub fn new(realm: impl Into<String>) -> Self {
        DigestConfig {
            realm: realm.into(),
            algorithms: vec![Algorithm::Sha256, Algorithm::Md5],
            nonce_lifetime: Duration::from_secs(300),
            max_nonce_uses: 1000,
            node_id: 0,
        }
    }

    /// Checks what `DigestServer::new` cannot reject (it is infallible): call at configuration
    /// load time.
    pub fn validate(&self) -> Result<(), DigestError> {
        if self.realm.bytes().any(|b| b < 0x20 || b == 0x7f) {
            return Err(DigestError::InvalidConfig(
                "realm contains control characters",
            ));
        }
        if self.algorithms.is_empty() {
            return Err(DigestError::InvalidConfig("no algorithm offered"));
        }
        if self.nonce_lifetime.is_zero() {
            return Err(DigestError::InvalidConfig("nonce lifetime is zero"));
        }
        if self.max_nonce_uses == 0 {
            return Err(DigestError::InvalidConfig("max_nonce_uses is zero"));
        }
        Ok(())
    }
}

/// Whether credentials without `qop` (RFC 2069 form, response = `KD(HA1, nonce:HA2)`) are accepted.
///
/// They carry no `nc`/`cnonce`, so the only replay defence is single use of the nonce through
/// [`crate::NonceCounter`] (which records them as `nc = 0`). Refused by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Rfc2069Policy {
    #[default]
    Reject,
    Accept,
}

/// The protection form of verified credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QopMode {
    /// `qop=auth` with `nc` and `cnonce`.
    Auth,
    /// Legacy RFC 2069 form (only with [`Rfc2069Policy::Accept`]).
    Rfc2069,
}

/// Credentials that passed [`DigestServer::verify`], borrowed from the [`DigestResponse`] they
/// were verified from: they are used while that request is judged (nonce count, rspauth), so
/// copying their strings out of the request would only cost allocations on every request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifiedDigest<'a> {
    /// As sent: the user name, or `H(user:realm)` hex when `userhash` is set.
    pub username: &'a str,
    pub userhash: bool,
    pub algorithm: Algorithm,
    pub qop: QopMode,
    /// The `uri` directive as sent; whether it names the request target is the caller's policy.
    pub uri: &'a str,
    pub nonce: &'a str,
    pub nonce_issued: SystemTime,
    /// 0 for the RFC 2069 form.
    pub nc: u32,
    pub cnonce: Option<&'a str>,
    /// `nc` exactly as sent: rspauth must hash the client's spelling.
    nc_text: &'a str,
}

/// Stateless Digest verifier. Immutable after construction, so one instance can be shared by all
/// worker threads.
pub struct DigestServer {
    config: DigestConfig,
    key: NonceKey,
    rfc2069: Rfc2069Policy,
}

impl std::fmt::Debug for DigestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DigestServer")
            .field("config", &self.config)
            .field("key", &self.key)
            .field("rfc2069", &self.rfc2069)
            .finish()
    }
}

/// Parses `nc`: exactly 8 hex digits (RFC 7616 §3.4: `nc-value = 8LHEX`), not zero.
fn parse_nc(s: &str) -> Result<u32, DigestError> {
    let mut be = [0u8; 4];
    if sagw_hex::decode_to_slice(s, &mut be).is_err() {
        return Err(DigestError::Malformed("nc is not 8 hex digits"));
    }
    match u32::from_be_bytes(be) {
        0 => Err(DigestError::Malformed("nc is zero")),
        n => Ok(n),
    }
}

/// The `response` (or, with an empty method, `rspauth`) value. `qop` is `None` for RFC 2069.
pub(crate) struct ResponseInput<'a> {
    pub alg: Algorithm,
    pub nonce: &'a str,
    pub qop: Option<(&'a str, &'a str, &'a str)>, // (nc, cnonce, qop) as sent
    pub method: &'a str,
    pub uri: &'a str,
}

pub(crate) fn compute_response(ha1: &Ha1, input: &ResponseInput<'_>) -> DigestBytes {
    let cnonce = input.qop.map_or("", |(_, c, _)| c);
    let key = ha1.effective(input.alg, input.nonce, cnonce).to_hex();
    let ha2 =
        Hasher::colon_joined(input.alg, &[input.method.as_bytes(), input.uri.as_bytes()]).to_hex();
    match input.qop {
        Some((nc, cnonce, qop)) => Hasher::colon_joined(
            input.alg,
            &[
                key.as_bytes(),
                input.nonce.as_bytes(),
                nc.as_bytes(),
                cnonce.as_bytes(),
                qop.as_bytes(),
                ha2.as_bytes(),
            ],
        ),
        None => Hasher::colon_joined(
            input.alg,
            &[key.as_bytes(), input.nonce.as_bytes(), ha2.as_bytes()],
        ),
    }
}

/// Hex `response` for the given inputs; shared by the client helper and tests.
pub fn response_hex(
    ha1: &Ha1,
    alg: Algorithm,
    nonce: &str,
    qop: Option<(&str, &str, &str)>,
    method: &str,
    uri: &str,
) -> String {
    compute_response(
        ha1,
        &ResponseInput {
            alg,
            nonce,
            qop,
            method,
            uri,
        },
    )
    .to_hex()
    .as_str()
    .to_owned()
}

impl DigestServer {
    /// Builds a verifier. Never fails: check the configuration with [`DigestConfig::validate`].
    pub fn new(config: DigestConfig, key: NonceKey) -> Self {
        DigestServer {
            config,
            key,
            rfc2069: Rfc2069Policy::Reject,
        }
    }

    /// Opts in to (or out of) the legacy no-`qop` form.
    pub fn with_rfc2069(mut self, policy: Rfc2069Policy) -> Self {
        self.rfc2069 = policy;
        self
    }

    pub fn config(&self) -> &DigestConfig {
        &self.config
    }

    /// A nonce carrying its own timestamp, node id and MAC, verifiable without state:
    /// base64url(LE64(node << 48 | unix ms) || salt || HMAC-SHA256(key, label || ts || salt ||
    /// realm)[..16]). `salt` must come from the caller's CSPRNG so nonces minted in the same
    /// second differ.
    pub fn make_nonce(&self, now: SystemTime, salt: [u8; 8]) -> Nonce {
        nonce::make(
            &self.key,
            &self.config.realm,
            self.config.node_id,
            now,
            salt,
        )
    }

    /// Challenge header values (for `WWW-Authenticate` or `Proxy-Authenticate`), one per offered
    /// algorithm in preference order, all sharing one fresh nonce:
    /// `Digest realm="..", nonce="..", algorithm=SHA-256, qop="auth"[, stale=true]`.
    pub fn challenges(&self, now: SystemTime, salt: [u8; 8], stale: bool) -> Vec<String> {
        self.challenge_values(now, salt, stale).collect()
    }

    /// [`Self::challenges`] one by one, for a caller that puts them in a list of its own.
    pub fn challenge_values(
        &self,
        now: SystemTime,
        salt: [u8; 8],
        stale: bool,
    ) -> impl ExactSizeIterator<Item = String> + '_ {
        let nonce = self.make_nonce(now, salt);
        self.config.algorithms.iter().map(move |alg| {
            // Written piece by piece: one allocation per value, no `fmt` (every challenge).
            let mut v = String::with_capacity(96 + self.config.realm.len() + nonce.len());
            v.push_str("Digest realm=");
            crate::quote_into(&self.config.realm, &mut v);
            v.push_str(", nonce=\"");
            v.push_str(nonce.as_str());
            v.push_str("\", algorithm=");
            v.push_str(alg.token());
            v.push_str(", qop=\"auth\"");
            if stale {
                v.push_str(", stale=true");
            }
            v
        })
    }

    /// Verifies credentials against the request method and the user's HA1.
    ///
    /// Order matters: everything that needs no secret is checked first; the nonce MAC next (so
    /// forged nonces cost one HMAC, not a response computation); then the response; the issuing
    /// node, expiry and the use limit last, so `OtherNode` and `Stale` are only ever reported to a
    /// client that proved it knows the password (RFC 7616 §3.3 on `stale`).
    ///
    /// Does not judge `uri` (caller's policy) and does not track `nc`: feed the result to a
    /// [`crate::NonceCounter`].
    pub fn verify<'a>(
        &self,
        resp: &DigestResponse<'a>,
        method: &str,
        ha1: &Ha1,
        now: SystemTime,
    ) -> Result<VerifiedDigest<'a>, DigestError> {
        self.verify_with(resp, method, ha1, now, |n| {
            nonce::check(&self.key, &self.config.realm, n)
        })
    }

    /// `verify` with the nonce authentication injected, so unit tests can run the published
    /// RFC examples (whose nonces are not ours) through the whole decision path.
    fn verify_with<'a>(
        &self,
        resp: &DigestResponse<'a>,
        method: &str,
        ha1: &Ha1,
        now: SystemTime,
        authenticate_nonce: impl FnOnce(&str) -> Option<nonce::Issued>,
    ) -> Result<VerifiedDigest<'a>, DigestError> {
        let alg = match resp.algorithm {
            None => Algorithm::Md5, // RFC 7616 §3.3: absent means MD5
            Some(tok) => Algorithm::from_token(tok).ok_or(DigestError::UnsupportedAlgorithm)?,
        };
        if !self.config.algorithms.contains(&alg) {
            return Err(DigestError::UnsupportedAlgorithm);
        }
        if ha1.algorithm() != alg.base() {
            return Err(DigestError::Ha1AlgorithmMismatch);
        }
        if resp.realm != self.config.realm {
            return Err(DigestError::RealmMismatch);
        }
        let (mode, qop) = match (resp.qop, resp.nc, resp.cnonce) {
            (Some(q), Some(nc), Some(cnonce)) if q.eq_ignore_ascii_case("auth") => {
                if cnonce.is_empty() {
                    return Err(DigestError::Malformed("empty cnonce"));
                }
                (QopMode::Auth, Some((nc, cnonce, q)))
            }
            (Some(q), _, _) if q.eq_ignore_ascii_case("auth") => {
                return Err(DigestError::MissingParam(if resp.nc.is_none() {
                    "nc"
                } else {
                    "cnonce"
                }));
            }
            (Some(_), _, _) => return Err(DigestError::UnsupportedQop),
            (None, None, None) if self.rfc2069 == Rfc2069Policy::Accept && !alg.is_sess() => {
                (QopMode::Rfc2069, None)
            }
            (None, None, None) => return Err(DigestError::UnsupportedQop),
            (None, _, _) => return Err(DigestError::Malformed("nc or cnonce without qop")),
        };
        let nc = match qop {
            Some((nc, _, _)) => parse_nc(nc)?,
            None => 0,
        };

        let mut got = [0u8; 32];
        let got = got
            .get_mut(..alg.output_len())
            .ok_or(DigestError::WrongResponse)?;
        if sagw_hex::decode_to_slice(resp.response, got).is_err() {
            return Err(DigestError::WrongResponse);
        }

        let nonce::Issued { at: issued, node } =
            authenticate_nonce(resp.nonce).ok_or(DigestError::BadNonce)?;
        if issued
            .duration_since(now)
            .is_ok_and(|ahead| ahead > MAX_CLOCK_SKEW)
        {
            return Err(DigestError::BadNonce);
        }

        let want = compute_response(
            ha1,
            &ResponseInput {
                alg,
                nonce: resp.nonce,
                qop,
                method,
                uri: resp.uri,
            },
        );
        if !bool::from(want.as_bytes().ct_eq(got)) {
            return Err(DigestError::WrongResponse);
        }

        // Genuine (our key), but minted by another node of the pool: that node's nonce-count
        // table, not ours, knows which counts were used, so the client gets a nonce of ours.
        if node != self.config.node_id {
            return Err(DigestError::OtherNode);
        }
        let expired = match issued.checked_add(self.config.nonce_lifetime) {
            Some(expiry) => now > expiry,
            None => true,
        };
        if expired || nc > self.config.max_nonce_uses {
            return Err(DigestError::Stale);
        }

        Ok(VerifiedDigest {
            username: resp.username,
            userhash: resp.userhash,
            algorithm: alg,
            qop: mode,
            uri: resp.uri,
            nonce: resp.nonce,
            nonce_issued: issued,
            nc,
            cnonce: qop.map(|(_, c, _)| c),
            nc_text: qop.map_or("", |(n, _, _)| n),
        })
    }

    /// `Authentication-Info` value for the final response:
    /// `nextnonce="..", qop=auth, rspauth="..", cnonce="..", nc=00000001`, where rspauth is the
    /// response computed with an empty method (A2 = ":" uri, RFC 7616 §3.5). `ha1` must be the one
    /// `verify` accepted. For the RFC 2069 form there is no rspauth: the value holds only
    /// `nextnonce`, or is empty (omit the header) when there is none.
    pub fn authentication_info(
        &self,
        verified: &VerifiedDigest<'_>,
        ha1: &Ha1,
        next_nonce: Option<&str>,
    ) -> String {
        // Written piece by piece, without `fmt` (every authenticated request).
        let mut out = String::with_capacity(160);
        if let Some(n) = next_nonce {
            out.push_str("nextnonce=");
            crate::quote_into(n, &mut out);
        }
        if let (QopMode::Auth, Some(cnonce)) = (verified.qop, verified.cnonce) {
            let rspauth = compute_response(
                ha1,
                &ResponseInput {
                    alg: verified.algorithm,
                    nonce: verified.nonce,
                    qop: Some((verified.nc_text, cnonce, "auth")),
                    method: "",
                    uri: verified.uri,
                },
            )
            .to_hex();
            if !out.is_empty() {
                out.push_str(", ");
            }
            out.push_str("qop=auth, rspauth=\"");
            out.push_str(rspauth.as_str());
            out.push_str("\", cnonce=");
            crate::quote_into(cnonce, &mut out);
            out.push_str(", nc=");
            out.push_str(verified.nc_text);
        }
        out
    }
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<DigestServer>();
}

/// Published examples run through the full verification path. Their nonces were not minted by
/// us, so the nonce MAC step is replaced by a stub that reports a fixed issue time; every other
/// check (algorithm, realm, qop/nc syntax, response, staleness) runs as in production.
#[cfg(test)]
mod rfc_tests {
    use super::*;
    use crate::client::{HeaderParams, parse_header};

    const T0: u64 = 1_700_000_000;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn server(realm: &str, algs: &[Algorithm]) -> DigestServer {
        let mut cfg = DigestConfig::new(realm);
        cfg.algorithms = algs.to_vec();
        DigestServer::new(cfg, NonceKey::new([7; 32]))
    }

    /// An RFC Authorization value, split into its parameters (what verified credentials borrow).
    fn params(header: &str) -> HeaderParams<'_> {
        let hp = parse_header(header).unwrap();
        assert_eq!(hp.scheme, "Digest");
        hp
    }

    /// Verifies `hp` as if its nonce had been issued at T0.
    fn run<'h>(
        srv: &DigestServer,
        hp: &'h HeaderParams<'_>,
        ha1: &Ha1,
        now: SystemTime,
    ) -> Result<VerifiedDigest<'h>, DigestError> {
        let resp = DigestResponse::from_params(hp.pairs()).unwrap();
        srv.verify_with(&resp, "GET", ha1, now, |_| {
            Some(nonce::Issued {
                at: at(T0),
                node: 0,
            })
        })
    }

    // RFC 7616 §3.9.1 (password "Circle of Life", lower-case "of" per verified erratum 4495).
    const RFC7616_MD5: &str = r#"Digest username="Mufasa", realm="http-auth@example.org", uri="/dir/index.html", algorithm=MD5, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", nc=00000001, cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", qop=auth, response="8ca523f5e9506fed4657c9700eebdbec", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#;
    const RFC7616_SHA256: &str = r#"Digest username="Mufasa", realm="http-auth@example.org", uri="/dir/index.html", algorithm=SHA-256, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", nc=00000001, cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", qop=auth, response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#;
    // RFC 2617 §3.5 (password "Circle Of Life"); no algorithm directive, so MD5 by default.
    const RFC2617: &str = r#"Digest username="Mufasa", realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", qop=auth, nc=00000001, cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1", opaque="5ccc069c403ebaf9f0171e9517f40e41""#;

    #[test]
    fn nc_is_eight_hex_digits_and_not_zero() {
        assert_eq!(parse_nc("00000001"), Ok(1));
        assert_eq!(parse_nc("0000000A"), Ok(10));
        assert_eq!(parse_nc("deadBEEF"), Ok(0xdead_beef));
        assert_eq!(
            parse_nc("00000000"),
            Err(DigestError::Malformed("nc is zero"))
        );
        for bad in [
            "",
            "0000001",
            "000000001",
            "0000000g",
            "+0000001",
            "-0000001",
        ] {
            assert_eq!(
                parse_nc(bad),
                Err(DigestError::Malformed("nc is not 8 hex digits")),
                "{bad}"
            );
        }
    }

    #[test]
    fn rfc7616_md5_example() {
        let srv = server("http-auth@example.org", &[Algorithm::Md5]);
        let ha1 = Ha1::compute(
            Algorithm::Md5,
            "Mufasa",
            "http-auth@example.org",
            "Circle of Life",
        );
        let hp = params(RFC7616_MD5);
        let v = run(&srv, &hp, &ha1, at(T0 + 1)).unwrap();
        assert_eq!(v.username, "Mufasa");
        assert_eq!(v.algorithm, Algorithm::Md5);
        assert_eq!(v.nc, 1);
        assert_eq!(v.qop, QopMode::Auth);
        assert_eq!(v.nonce_issued, at(T0));
        // RFC 2617's capital-O password must not verify against the RFC 7616 response.
        let wrong = Ha1::compute(
            Algorithm::Md5,
            "Mufasa",
            "http-auth@example.org",
            "Circle Of Life",
        );
        assert_eq!(
            run(&srv, &params(RFC7616_MD5), &wrong, at(T0 + 1)),
            Err(DigestError::WrongResponse)
        );
    }

    #[test]
    fn rfc7616_sha256_example() {
        let srv = server("http-auth@example.org", &[Algorithm::Sha256]);
        let ha1 = Ha1::compute(
            Algorithm::Sha256,
            "Mufasa",
            "http-auth@example.org",
            "Circle of Life",
        );
        let hp = params(RFC7616_SHA256);
        let v = run(&srv, &hp, &ha1, at(T0 + 1)).unwrap();
        assert_eq!(v.algorithm, Algorithm::Sha256);
        // The MD5 example is refused by a SHA-256-only server.
        let md5 = Ha1::compute(
            Algorithm::Md5,
            "Mufasa",
            "http-auth@example.org",
            "Circle of Life",
        );
        assert_eq!(
            run(&srv, &params(RFC7616_MD5), &md5, at(T0 + 1)),
            Err(DigestError::UnsupportedAlgorithm)
        );
    }

    #[test]
    fn rfc2617_example_defaults_to_md5() {
        let srv = server("testrealm@host.com", &[Algorithm::Md5]);
        let ha1 = Ha1::compute(
            Algorithm::Md5,
            "Mufasa",
            "testrealm@host.com",
            "Circle Of Life",
        );
        assert_eq!(ha1.to_hex(), "939e7578ed9e3c518a452acee763bce9");
        let hp = params(RFC2617);
        let v = run(&srv, &hp, &ha1, at(T0 + 1)).unwrap();
        assert_eq!(v.algorithm, Algorithm::Md5);
        // RFC 2617 prints no rspauth; this value was cross-checked with Python hashlib:
        // MD5(HA1:nonce:00000001:0a4f113b:auth:MD5(":/dir/index.html")).
        let info = srv.authentication_info(&v, &ha1, Some("next"));
        assert_eq!(
            info,
            r#"nextnonce="next", qop=auth, rspauth="376602cfd2f4e8e5e78b948a85263e85", cnonce="0a4f113b", nc=00000001"#
        );
    }

    #[test]
    fn rfc7616_sha256_rspauth_cross_checked() {
        let srv = server("http-auth@example.org", &[Algorithm::Sha256]);
        let ha1 = Ha1::compute(
            Algorithm::Sha256,
            "Mufasa",
            "http-auth@example.org",
            "Circle of Life",
        );
        let hp = params(RFC7616_SHA256);
        let v = run(&srv, &hp, &ha1, at(T0 + 1)).unwrap();
        // Not printed in the RFC; computed independently with Python hashlib.
        assert_eq!(
            srv.authentication_info(&v, &ha1, None),
            r#"qop=auth, rspauth="86d3b25618d41854ca5039a5d7e53ff6355d5134a9b1fb088a78ac3c462195a0", cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", nc=00000001"#
        );
    }

    /// RFC 7616 §3.9.2 as corrected by erratum 4897: the printed userhash (488869...) and response
    /// (ae66e6...) were computed with a pre-standard SHA-512/256 and are wrong; the corrected
    /// values are reproduced by every independent implementation (and by Python's hashlib).
    #[test]
    fn rfc7616_sha512_256_userhash_example_with_erratum_4897() {
        let realm = "api@example.org";
        let user = "J\u{e4}s\u{f8}n Doe";
        assert_eq!(
            user.as_bytes(),
            [
                0x4a, 0xc3, 0xa4, 0x73, 0xc3, 0xb8, 0x6e, 0x20, 0x44, 0x6f, 0x65
            ]
        );
        let uh = crate::userhash(Algorithm::Sha512_256, user, realm);
        assert_eq!(
            uh,
            "793263caabb707a56211940d90411ea4a575adeccb7e360aeb624ed06ece9b0b"
        );
        assert_ne!(
            uh,
            "488869477bf257147b804c45308cd62ac4e25eb717b12b298c79e62dcea254ec"
        );
        let header = format!(
            r#"Digest username="{uh}", realm="api@example.org", uri="/doe.json", algorithm=SHA-512-256, nonce="5TsQWLVdgBdmrQ0XsxbDODV+57QdFR34I9HAbC/RVvkK", nc=00000001, cnonce="NTg6RKcb9boFIAS3KrFK9BGeh+iDa/sm6jUMp2wds69v", qop=auth, response="3798d4131c277846293534c3edc11bd8a5e4cdcbff78b05db9d95eeb1cec68a5", opaque="HRPCssKJSGjCrkzDg8OhwpzCiGPChXYjwrI2QmXDnsOS", userhash=true"#
        );
        let srv = server(realm, &[Algorithm::Sha512_256]);
        let ha1 = Ha1::compute(Algorithm::Sha512_256, user, realm, "Secret, or not?");
        let hp = params(&header);
        let v = run(&srv, &hp, &ha1, at(T0 + 1)).unwrap();
        assert!(v.userhash);
        assert_eq!(v.username, uh);
        assert_eq!(v.algorithm, Algorithm::Sha512_256);
        // The response as printed in the RFC does not verify.
        let printed = header.replace(
            "3798d4131c277846293534c3edc11bd8a5e4cdcbff78b05db9d95eeb1cec68a5",
            "ae66e67d6b427bd3f120414a82e4acff38e8ecd9101d6c861229025f607a79dd",
        );
        assert_eq!(
            run(&srv, &params(&printed), &ha1, at(T0 + 1)),
            Err(DigestError::WrongResponse)
        );
    }

    /// RFC 2069 §2.4 example as corrected by its erratum (printed e966c932... is wrong).
    const RFC2069: &str = r#"Digest username="Mufasa", realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", response="1949323746fe6a43ef61f9606e7febea", opaque="5ccc069c403ebaf9f0171e9517f40e41""#;

    #[test]
    fn rfc2069_form_only_when_accepted() {
        let ha1 = Ha1::compute(
            Algorithm::Md5,
            "Mufasa",
            "testrealm@host.com",
            "CircleOfLife",
        );
        let strict = server("testrealm@host.com", &[Algorithm::Md5]);
        assert_eq!(
            run(&strict, &params(RFC2069), &ha1, at(T0 + 1)),
            Err(DigestError::UnsupportedQop)
        );
        let lax =
            server("testrealm@host.com", &[Algorithm::Md5]).with_rfc2069(Rfc2069Policy::Accept);
        let hp = params(RFC2069);
        let v = run(&lax, &hp, &ha1, at(T0 + 1)).unwrap();
        assert_eq!(v.qop, QopMode::Rfc2069);
        assert_eq!(v.nc, 0);
        assert_eq!(v.cnonce, None);
        assert_eq!(lax.authentication_info(&v, &ha1, None), "");
        assert_eq!(
            lax.authentication_info(&v, &ha1, Some("n2")),
            r#"nextnonce="n2""#
        );
        // -sess needs a cnonce, so it has no RFC 2069 form.
        let sess =
            server("testrealm@host.com", &[Algorithm::Md5Sess]).with_rfc2069(Rfc2069Policy::Accept);
        let hdr = RFC2069.replace("response=", "algorithm=MD5-sess, response=");
        assert_eq!(
            run(&sess, &params(&hdr), &ha1, at(T0 + 1)),
            Err(DigestError::UnsupportedQop)
        );
    }

    /// MD5-sess over the RFC 2617 inputs; expected value from Python hashlib
    /// (HA1-sess = MD5(hex(HA1):nonce:cnonce)).
    #[test]
    fn md5_sess_cross_checked() {
        let srv = server("testrealm@host.com", &[Algorithm::Md5Sess]);
        let ha1 = Ha1::compute(
            Algorithm::Md5Sess,
            "Mufasa",
            "testrealm@host.com",
            "Circle Of Life",
        );
        assert_eq!(ha1.algorithm(), Algorithm::Md5);
        let hdr = RFC2617
            .replace(
                "6629fae49393a05397450978507c4ef1",
                "8e3825c57e897f5a0dec6c2d4e5059d0",
            )
            .replace("qop=auth", "algorithm=MD5-sess, qop=auth");
        let hp = params(&hdr);
        let v = run(&srv, &hp, &ha1, at(T0 + 1)).unwrap();
        assert_eq!(v.algorithm, Algorithm::Md5Sess);
        // The plain-MD5 response is not a valid MD5-sess response.
        let plain = RFC2617.replace("qop=auth", "algorithm=MD5-sess, qop=auth");
        assert_eq!(
            run(&srv, &params(&plain), &ha1, at(T0 + 1)),
            Err(DigestError::WrongResponse)
        );
    }

    #[test]
    fn stale_only_after_a_correct_response() {
        let srv = server("testrealm@host.com", &[Algorithm::Md5]);
        let ha1 = Ha1::compute(
            Algorithm::Md5,
            "Mufasa",
            "testrealm@host.com",
            "Circle Of Life",
        );
        let lifetime = srv.config().nonce_lifetime.as_secs();
        assert!(run(&srv, &params(RFC2617), &ha1, at(T0 + lifetime)).is_ok());
        assert_eq!(
            run(&srv, &params(RFC2617), &ha1, at(T0 + lifetime + 1)),
            Err(DigestError::Stale)
        );
        let wrong = Ha1::compute(Algorithm::Md5, "Mufasa", "testrealm@host.com", "guess");
        assert_eq!(
            run(&srv, &params(RFC2617), &wrong, at(T0 + lifetime + 1)),
            Err(DigestError::WrongResponse)
        );
    }

    #[test]
    fn response_hex_case_is_irrelevant() {
        let srv = server("testrealm@host.com", &[Algorithm::Md5]);
        let ha1 = Ha1::compute(
            Algorithm::Md5,
            "Mufasa",
            "testrealm@host.com",
            "Circle Of Life",
        );
        let upper = RFC2617.replace(
            "6629fae49393a05397450978507c4ef1",
            "6629FAE49393A05397450978507C4EF1",
        );
        assert!(run(&srv, &params(&upper), &ha1, at(T0 + 1)).is_ok());
        for wrong in [
            "6629fae4",
            "6629fae49393a05397450978507c4ef",
            "6629fae49393a05397450978507c4ef10",
            "+629fae49393a05397450978507c4ef1",
            "6629fae49393a05397450978507c4efg",
        ] {
            let text = RFC2617.replace("6629fae49393a05397450978507c4ef1", wrong);
            assert_eq!(
                run(&srv, &params(&text), &ha1, at(T0 + 1)),
                Err(DigestError::WrongResponse),
                "{wrong}"
            );
        }
    }
}
