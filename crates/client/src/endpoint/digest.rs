//! Digest: the nonce in use and its count, the credentials for each request, and `rspauth`.

use std::fmt;

use sagw_auth::Rng;
use sagw_digest::client::{Challenge as DigestChallenge, authorize, parse_header};
use sagw_digest::{Algorithm, Ha1, QopMode, response_hex};
use sagw_sip::{AuthHeader, Message};

use super::{Endpoint, Failure, Password};
use crate::sa::{BadSignature, Family, SignatureCheck};

/// Digest state between requests: the nonce in use and its count.
pub(super) struct DigestState {
    realm: String,
    nonce: String,
    pub(super) algorithm: Algorithm,
    qop: QopMode,
    opaque: Option<String>,
    nc: u32,
    ha1: Ha1,
    /// (cnonce, nc text, uri) of the last credentials sent, to check `rspauth`.
    last: Option<(String, String, String)>,
    pub(super) family: Family,
}

impl fmt::Debug for DigestState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DigestState")
            .field("realm", &self.realm)
            .field("algorithm", &self.algorithm)
            .field("nc", &self.nc)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    pub(super) fn verify_digest_info(&mut self, msg: &Message) -> SignatureCheck {
        let Some(d) = &mut self.digest else {
            return SignatureCheck::Unsigned;
        };
        let Some(value) = msg
            .header("Authentication-Info")
            .or_else(|| msg.header("Proxy-Authentication-Info"))
        else {
            return SignatureCheck::Unsigned;
        };
        // Authentication-Info has no scheme token; give the parameter parser one.
        let full = format!("Digest {value}");
        let parsed = match parse_header(&full) {
            Ok(p) => p,
            Err(e) => return SignatureCheck::Bad(BadSignature::Malformed(e.to_string())),
        };
        let get = |n: &str| {
            parsed
                .pairs()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.to_owned())
        };
        let next = get("nextnonce");
        let result = match (get("rspauth"), &d.last) {
            (None, _) => SignatureCheck::Unsigned,
            (Some(_), None) => SignatureCheck::Bad(BadSignature::Malformed(
                "rspauth without credentials of ours".into(),
            )),
            (Some(rspauth), Some((cnonce, nc, uri))) => {
                if get("cnonce").as_deref() != Some(cnonce.as_str())
                    || get("nc").as_deref() != Some(nc.as_str())
                {
                    SignatureCheck::Bad(BadSignature::OtherSa {
                        field: "cnonce/nc",
                        got: format!("{:?}/{:?}", get("cnonce"), get("nc")),
                        ours: format!("{cnonce}/{nc}"),
                    })
                } else {
                    let expected = response_hex(
                        &d.ha1,
                        d.algorithm,
                        &d.nonce,
                        Some((nc, cnonce, "auth")),
                        "",
                        uri,
                    );
                    if expected.eq_ignore_ascii_case(&rspauth) {
                        SignatureCheck::Verified { num: d.nc }
                    } else {
                        SignatureCheck::Bad(BadSignature::Mismatch {
                            buffer: format!("A2 = \":{uri}\""),
                        })
                    }
                }
            }
        };
        if let Some(n) = next {
            d.nonce = n;
            d.nc = 0;
        }
        result
    }
}

pub(super) fn digest_state(
    h: &AuthHeader<'_>,
    user: &str,
    password: &Password,
    family: Family,
) -> Result<DigestState, Failure> {
    let c = DigestChallenge::from_params(h.params.iter().map(|p| (p.name, p.value.as_ref())))
        .map_err(|e| Failure::Digest(format!("cannot use the challenge: {e}")))?;
    Ok(DigestState {
        realm: c.realm.to_owned(),
        nonce: c.nonce.to_owned(),
        algorithm: c.algorithm,
        qop: c.qop,
        opaque: c.opaque.map(str::to_owned),
        nc: 0,
        ha1: Ha1::compute(c.algorithm, user, c.realm, password.expose()),
        last: None,
        family,
    })
}

pub(super) fn digest_credentials(
    d: &mut DigestState,
    user: &str,
    method: &str,
    uri: &str,
    rng: &mut dyn Rng,
) -> Result<String, Failure> {
    d.nc = d.nc.wrapping_add(1);
    let mut c = [0u8; 8];
    rng.fill_bytes(&mut c);
    let cnonce = sagw_hex::encode(c);
    let challenge = DigestChallenge {
        realm: &d.realm,
        nonce: &d.nonce,
        algorithm: d.algorithm,
        qop: d.qop,
        opaque: d.opaque.as_deref(),
        stale: false,
        userhash: false,
    };
    let a = authorize(&challenge, user, &d.ha1, method, uri, &cnonce, d.nc)
        .map_err(|e| Failure::Digest(e.to_string()))?;
    d.last = Some((cnonce, format!("{:08x}", d.nc), uri.to_owned()));
    Ok(a.header_value())
}
