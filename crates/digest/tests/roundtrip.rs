//! Challenge -> client credentials -> verify -> replay check -> Authentication-Info, for every
//! algorithm, with both the crate's client helper and an independent response computation.

mod common;

use common::*;
use sagw_digest::client::{Challenge, authorize, parse_header};
use sagw_digest::{Algorithm, DigestResponse, Ha1, NonceCounter, QopMode, response_hex, userhash};

const USER: &str = "alice";
const PASSWORD: &str = "correct horse battery staple";
const URI: &str = "sip:sip.example.com;transport=tls";

#[test]
fn challenges_list_offered_algorithms_in_order_with_one_nonce() {
    let srv = server(&[Algorithm::Sha512_256, Algorithm::Sha256, Algorithm::Md5]);
    let ch = srv.challenges(at(T0), [1; 8], false);
    assert_eq!(ch.len(), 3);
    let nonce = srv.make_nonce(at(T0), [1; 8]);
    assert_eq!(nonce.len(), sagw_digest::NONCE_LEN);
    assert_eq!(
        ch[0],
        format!(
            r#"Digest realm="sip.example.com", nonce="{nonce}", algorithm=SHA-512-256, qop="auth""#
        )
    );
    assert!(ch[1].contains("algorithm=SHA-256,"));
    assert!(ch[2].contains("algorithm=MD5,"));
    let stale = srv.challenges(at(T0), [1; 8], true);
    assert!(stale.iter().all(|c| c.ends_with(", stale=true")));
    // Deterministic given time and salt; the salt changes the nonce.
    assert_eq!(nonce, srv.make_nonce(at(T0), [1; 8]));
    assert_ne!(nonce, srv.make_nonce(at(T0), [2; 8]));
    assert_ne!(nonce, srv.make_nonce(at(T0 + 1), [1; 8]));
}

#[test]
fn round_trip_every_algorithm_with_client_helper() {
    let srv = server(&Algorithm::ALL);
    let mut counter = NonceCounter::new(100, srv.config().nonce_lifetime);
    let challenges = srv.challenges(at(T0), [9; 8], false);
    assert_eq!(challenges.len(), 6);
    for (i, value) in challenges.iter().enumerate() {
        let hp = parse_header(value).unwrap();
        assert_eq!(hp.scheme, "Digest");
        let ch = Challenge::from_params(hp.pairs()).unwrap();
        assert_eq!(ch.algorithm, Algorithm::ALL[i]);
        assert_eq!(ch.qop, QopMode::Auth);
        let ha1 = Ha1::compute(ch.algorithm, USER, REALM, PASSWORD);
        // All challenges share one nonce and nc counts uses of the nonce, whatever the algorithm
        // (RFC 7616 §3.4.5), so each algorithm continues the count.
        let first = u32::try_from(i).unwrap() * 3 + 1;
        for nc in first..first + 3 {
            let cnonce = format!("cn-{i}-{nc}");
            let auth = authorize(&ch, USER, &ha1, "REGISTER", URI, &cnonce, nc).unwrap();
            let wire = auth.header_value();
            let parsed = parse_header(&wire).unwrap();
            let resp = DigestResponse::from_params(parsed.pairs()).unwrap();
            let v = srv.verify(&resp, "REGISTER", &ha1, at(T0 + 10)).unwrap();
            assert_eq!(v.username, USER);
            assert_eq!(v.algorithm, ch.algorithm);
            assert_eq!(v.nc, nc);
            assert_eq!(v.nonce_issued, at(T0));
            assert_eq!(v.uri, URI);
            counter.check_verified(&v, "alice", at(T0 + 10)).unwrap();

            // The client checks rspauth with the same formula and an empty method.
            let info = srv.authentication_info(&v, &ha1, None);
            let info_line = format!("X {info}");
            let info_params = parse_header(&info_line).unwrap();
            let get = |n: &str| {
                info_params
                    .pairs()
                    .find(|(k, _)| *k == n)
                    .map(|(_, v)| v.to_owned())
                    .unwrap()
            };
            let nc_text = format!("{nc:08x}");
            let expect = response_hex(
                &ha1,
                ch.algorithm,
                ch.nonce,
                Some((&nc_text, &cnonce, "auth")),
                "",
                URI,
            );
            assert_eq!(get("rspauth"), expect);
            assert_eq!(get("cnonce"), cnonce);
            assert_eq!(get("nc"), nc_text);
            assert_eq!(get("qop"), "auth");
        }
    }
    // Replaying the last credentials is caught by the counter, not by verify (stateless).
    let hp = parse_header(&challenges[0]).unwrap();
    let ch = Challenge::from_params(hp.pairs()).unwrap();
    let ha1 = Ha1::compute(ch.algorithm, USER, REALM, PASSWORD);
    let auth = authorize(&ch, USER, &ha1, "REGISTER", URI, "cn-0-3", 18).unwrap();
    let resp = DigestResponse::from_params(auth.params()).unwrap();
    let v = srv.verify(&resp, "REGISTER", &ha1, at(T0 + 11)).unwrap();
    assert_eq!(
        counter.check_verified(&v, "alice", at(T0 + 11)),
        Err(sagw_digest::DigestError::Replay)
    );
}

#[test]
fn round_trip_with_independent_response_computation() {
    let srv = server(&Algorithm::ALL);
    let nonce = srv.make_nonce(at(T0), [3; 8]);
    for alg in Algorithm::ALL {
        let creds = Creds::new(
            alg, USER, REALM, PASSWORD, "INVITE", URI, &nonce, "00000001", "0a4f113b",
        );
        let resp = DigestResponse::from_params(creds.pairs()).unwrap();
        let ha1 = Ha1::from_hex(alg, &h(alg, &format!("{USER}:{REALM}:{PASSWORD}"))).unwrap();
        let v = srv.verify(&resp, "INVITE", &ha1, at(T0 + 1)).unwrap();
        assert_eq!(v.algorithm, alg);
        // The method is part of A2: the same credentials do not authorize a BYE.
        assert_eq!(
            srv.verify(&resp, "BYE", &ha1, at(T0 + 1)),
            Err(sagw_digest::DigestError::WrongResponse)
        );
    }
}

#[test]
fn userhash_round_trip() {
    let srv = server(&[Algorithm::Sha256]);
    let nonce = srv.make_nonce(at(T0), [4; 8]);
    let challenge = format!(
        r#"Digest realm="{REALM}", nonce="{nonce}", algorithm=SHA-256, qop="auth", userhash=true"#
    );
    let hp = parse_header(&challenge).unwrap();
    let ch = Challenge::from_params(hp.pairs()).unwrap();
    assert!(ch.userhash);
    let ha1 = Ha1::compute(Algorithm::Sha256, USER, REALM, PASSWORD);
    let auth = authorize(&ch, USER, &ha1, "REGISTER", URI, "abc", 1).unwrap();
    let resp = DigestResponse::from_params(auth.params()).unwrap();
    assert!(resp.userhash);
    let uh = userhash(Algorithm::Sha256, USER, REALM);
    assert_eq!(uh, h(Algorithm::Sha256, &format!("{USER}:{REALM}")));
    assert_eq!(resp.username, uh);
    let v = srv.verify(&resp, "REGISTER", &ha1, at(T0 + 1)).unwrap();
    assert!(v.userhash);
    assert_eq!(v.username, uh);
}

#[test]
fn sipp_style_bye_reuses_invite_nonce_with_next_nc() {
    let srv = server(&[Algorithm::Md5]);
    let mut counter = NonceCounter::new(10, srv.config().nonce_lifetime);
    let nonce = srv.make_nonce(at(T0), [5; 8]);
    let ha1 = Ha1::compute(Algorithm::Md5, USER, REALM, PASSWORD);
    for (method, nc, t) in [("INVITE", "00000001", 1), ("BYE", "00000002", 30)] {
        let creds = Creds::new(
            Algorithm::Md5,
            USER,
            REALM,
            PASSWORD,
            method,
            URI,
            &nonce,
            nc,
            "6b8b4567",
        );
        let resp = DigestResponse::from_params(creds.pairs()).unwrap();
        let v = srv.verify(&resp, method, &ha1, at(T0 + t)).unwrap();
        counter
            .check_and_record(v.nonce, v.nc, "alice", at(T0 + t))
            .unwrap();
    }
    assert_eq!(counter.len(), 1);
}
