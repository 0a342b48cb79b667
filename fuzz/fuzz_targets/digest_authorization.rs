//! Digest credentials from arbitrary bytes: DigestResponse::from_params on params split from the
//! input, then verify, Authentication-Info and the replay table. Also feeds the tooling header
//! splitter. Placeholders let the fuzzer reach the success path: a value `@N` becomes a genuine
//! nonce, a `response` of `@R` becomes the correct response for the other parameters.

#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use sagw_digest::client::parse_header;
use sagw_digest::{
    Algorithm, DigestConfig, DigestResponse, DigestServer, Ha1, NonceCounter, NonceKey,
    Rfc2069Policy, response_hex,
};

const REALM: &str = "fuzz.example";

fn servers() -> &'static [DigestServer; 2] {
    static S: OnceLock<[DigestServer; 2]> = OnceLock::new();
    S.get_or_init(|| {
        let mk = || {
            let mut cfg = DigestConfig::new(REALM);
            cfg.algorithms = Algorithm::ALL.to_vec();
            cfg.max_nonce_uses = 50;
            DigestServer::new(cfg, NonceKey::new([0x5a; 32]))
        };
        [mk(), mk().with_rfc2069(Rfc2069Policy::Accept)]
    })
}

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000)
}

fn split(input: &str) -> Vec<(&str, &str)> {
    input
        .split(',')
        .filter_map(|item| {
            let (n, v) = item.split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            Some((n.trim(), v))
        })
        .collect()
}

fn exercise(srv: &DigestServer, params: &[(&str, &str)], sel: u8, nonce: &str) {
    let Ok(resp) = DigestResponse::from_params(params.iter().copied()) else {
        return;
    };
    let alg = Algorithm::ALL[usize::from(sel) % Algorithm::ALL.len()];
    let ha1 = Ha1::compute(alg, resp.username, REALM, "pw");
    let now = t0() + Duration::from_secs(u64::from(sel >> 3) * 20);

    let mut fixed = resp;
    let nonce_owned;
    if resp.nonce == "@N" {
        nonce_owned = nonce.to_owned();
        fixed.nonce = &nonce_owned;
    }
    let rsp;
    if resp.response == "@R" {
        let qop = match (resp.qop, resp.nc, resp.cnonce) {
            (Some(q), Some(nc), Some(c)) => Some((nc, c, q)),
            _ => None,
        };
        let used = resp
            .algorithm
            .and_then(Algorithm::from_token)
            .unwrap_or(Algorithm::Md5);
        let ha1 = Ha1::compute(used, resp.username, REALM, "pw");
        rsp = response_hex(&ha1, used, fixed.nonce, qop, "REGISTER", resp.uri);
        fixed.response = &rsp;
    }
    let ha1_for = |a: Algorithm| Ha1::compute(a, resp.username, REALM, "pw");
    let used = fixed
        .algorithm
        .and_then(Algorithm::from_token)
        .unwrap_or(alg);
    for h in [&ha1, &ha1_for(used)] {
        if let Ok(v) = srv.verify(&fixed, "REGISTER", h, now) {
            assert_eq!(v.username, resp.username);
            assert!(v.nc <= srv.config().max_nonce_uses);
            let info = srv.authentication_info(&v, h, Some(nonce));
            assert!(!info.contains('\r') && !info.contains('\n'));
            let mut counter = NonceCounter::new(4, srv.config().nonce_lifetime);
            assert!(counter.check_verified(&v, now).is_ok());
            assert!(counter.check_verified(&v, now).is_err());
            let _ = counter.check_and_record(v.nonce, v.nc.wrapping_add(1), now);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let input = String::from_utf8_lossy(rest);
    let srv = &servers()[usize::from(sel & 1)];
    let nonce = srv.make_nonce(t0(), [sel; 8]);

    let params = split(&input);
    exercise(srv, &params, sel, &nonce);

    if let Ok(hp) = parse_header(&input) {
        let pairs: Vec<(&str, &str)> = hp.pairs().collect();
        exercise(srv, &pairs, sel, &nonce);
        let _ = sagw_digest::client::Challenge::from_params(pairs.iter().copied());
    }

    let mut counter = NonceCounter::new(2, Duration::from_secs(300));
    let _ = counter.check_and_record(&input, u32::from(sel), t0());
});
