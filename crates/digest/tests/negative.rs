//! Everything verify and from_params must refuse, and the error each refusal produces.

mod common;

use common::*;
use sagw_digest::{
    Algorithm, DigestConfig, DigestError, DigestResponse, DigestServer, Disposition, Ha1,
    MAX_CLOCK_SKEW, NonceKey,
};

const USER: &str = "bob";
const PASSWORD: &str = "hunter2";
const URI: &str = "sip:sip.example.com";

fn creds(srv: &DigestServer, alg: Algorithm, password: &str) -> Creds {
    let nonce = srv.make_nonce(at(T0), [8; 8]);
    Creds::new(
        alg, USER, REALM, password, "REGISTER", URI, &nonce, "00000001", "c0ffee",
    )
}

fn verify_at<'c>(
    srv: &DigestServer,
    c: &'c Creds,
    alg: Algorithm,
    t: u64,
) -> Result<sagw_digest::VerifiedDigest<'c>, DigestError> {
    let resp = DigestResponse::from_params(c.pairs())?;
    let ha1 = Ha1::compute(alg, USER, REALM, PASSWORD);
    srv.verify(&resp, "REGISTER", &ha1, at(t))
}

#[test]
fn baseline_is_accepted() {
    let srv = server(&[Algorithm::Sha256]);
    assert!(
        verify_at(
            &srv,
            &creds(&srv, Algorithm::Sha256, PASSWORD),
            Algorithm::Sha256,
            T0
        )
        .is_ok()
    );
}

#[test]
fn wrong_password() {
    for alg in [Algorithm::Md5, Algorithm::Sha256, Algorithm::Sha512_256] {
        let srv = server(&[alg]);
        let c = creds(&srv, alg, "hunter3");
        assert_eq!(
            verify_at(&srv, &c, alg, T0 + 1).unwrap_err(),
            DigestError::WrongResponse
        );
    }
}

#[test]
fn tampered_nonce() {
    let srv = server(&[Algorithm::Sha256]);
    let nonce = srv.make_nonce(at(T0), [8; 8]);
    // Flip one character in the timestamp, the salt and the tag region in turn.
    for pos in [0, 12, 30] {
        let mut bytes = nonce.as_bytes().to_vec();
        bytes[pos] = if bytes[pos] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(bytes).unwrap();
        // Recompute the response over the forged nonce so only the MAC can catch it.
        let c = Creds::new(
            Algorithm::Sha256,
            USER,
            REALM,
            PASSWORD,
            "REGISTER",
            URI,
            &forged,
            "00000001",
            "x",
        );
        assert_eq!(
            verify_at(&srv, &c, Algorithm::Sha256, T0 + 1).unwrap_err(),
            DigestError::BadNonce,
            "position {pos}"
        );
    }
}

#[test]
fn non_canonical_nonce_encoding_is_refused() {
    // 32 bytes in 43 base64url characters leave 2 spare bits in the last character. Accepting a
    // variant with those bits set would give one nonce several spellings, and the replay table,
    // keyed by spelling, would treat them as different nonces.
    let srv = server(&[Algorithm::Md5]);
    let nonce = (0u8..=255)
        .map(|s| srv.make_nonce(at(T0), [s; 8]))
        .find(|n| n.ends_with('A'))
        .expect("some salt yields a nonce ending in 'A' (low bits zero)");
    let variant = format!("{}B", &nonce[..nonce.len() - 1]);
    let c = Creds::new(
        Algorithm::Md5,
        USER,
        REALM,
        PASSWORD,
        "REGISTER",
        URI,
        &variant,
        "00000001",
        "x",
    );
    assert_eq!(
        verify_at(&srv, &c, Algorithm::Md5, T0 + 1).unwrap_err(),
        DigestError::BadNonce
    );
    let ok = Creds::new(
        Algorithm::Md5,
        USER,
        REALM,
        PASSWORD,
        "REGISTER",
        URI,
        &nonce,
        "00000001",
        "x",
    );
    assert!(verify_at(&srv, &ok, Algorithm::Md5, T0 + 1).is_ok());
}

#[test]
fn nonce_from_another_key_or_realm() {
    let srv = server(&[Algorithm::Md5]);
    let other_key = server_with(REALM, &[Algorithm::Md5], [0x43; 32]);
    let other_realm = server_with("other.example.com", &[Algorithm::Md5], KEY);
    for minter in [&other_key, &other_realm] {
        let nonce = minter.make_nonce(at(T0), [8; 8]);
        let c = Creds::new(
            Algorithm::Md5,
            USER,
            REALM,
            PASSWORD,
            "REGISTER",
            URI,
            &nonce,
            "00000001",
            "x",
        );
        assert_eq!(
            verify_at(&srv, &c, Algorithm::Md5, T0 + 1).unwrap_err(),
            DigestError::BadNonce
        );
    }
}

#[test]
fn foreign_nonce_format() {
    let srv = server(&[Algorithm::Md5]);
    for nonce in [
        "dcd98b7102dd2f0e8b11d0f600bfb0c093",
        "x",
        "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
    ] {
        let c = Creds::new(
            Algorithm::Md5,
            USER,
            REALM,
            PASSWORD,
            "REGISTER",
            URI,
            nonce,
            "00000001",
            "x",
        );
        assert_eq!(
            verify_at(&srv, &c, Algorithm::Md5, T0 + 1).unwrap_err(),
            DigestError::BadNonce
        );
    }
}

#[test]
fn expiry_and_future_nonces() {
    let srv = server(&[Algorithm::Sha256]);
    let c = creds(&srv, Algorithm::Sha256, PASSWORD);
    let life = srv.config().nonce_lifetime.as_secs();
    assert!(verify_at(&srv, &c, Algorithm::Sha256, T0 + life).is_ok());
    let e = verify_at(&srv, &c, Algorithm::Sha256, T0 + life + 1).unwrap_err();
    assert_eq!(e, DigestError::Stale);
    assert_eq!(e.disposition(), Disposition::ChallengeStale);
    // Issued by a peer whose clock runs slightly ahead: fine. Far ahead: not ours.
    let skew = MAX_CLOCK_SKEW.as_secs();
    assert!(verify_at(&srv, &c, Algorithm::Sha256, T0 - skew).is_ok());
    assert_eq!(
        verify_at(&srv, &c, Algorithm::Sha256, T0 - skew - 1).unwrap_err(),
        DigestError::BadNonce
    );
}

#[test]
fn nonce_use_limit_reports_stale() {
    let mut cfg = DigestConfig::new(REALM);
    cfg.algorithms = vec![Algorithm::Md5];
    cfg.max_nonce_uses = 5;
    let srv = DigestServer::new(cfg, NonceKey::new(KEY));
    let nonce = srv.make_nonce(at(T0), [8; 8]);
    let mk = |nc: &str| {
        Creds::new(
            Algorithm::Md5,
            USER,
            REALM,
            PASSWORD,
            "REGISTER",
            URI,
            &nonce,
            nc,
            "x",
        )
    };
    assert!(verify_at(&srv, &mk("00000005"), Algorithm::Md5, T0 + 1).is_ok());
    assert_eq!(
        verify_at(&srv, &mk("00000006"), Algorithm::Md5, T0 + 1).unwrap_err(),
        DigestError::Stale
    );
}

#[test]
fn realm_mismatch() {
    let srv = server(&[Algorithm::Md5]);
    let nonce = srv.make_nonce(at(T0), [8; 8]);
    let c = Creds::new(
        Algorithm::Md5,
        USER,
        "evil.example.com",
        PASSWORD,
        "REGISTER",
        URI,
        &nonce,
        "00000001",
        "x",
    );
    assert_eq!(
        verify_at(&srv, &c, Algorithm::Md5, T0 + 1).unwrap_err(),
        DigestError::RealmMismatch
    );
}

#[test]
fn algorithm_unknown_or_not_offered() {
    let srv = server(&[Algorithm::Sha256]);
    let c = creds(&srv, Algorithm::Sha256, PASSWORD);
    for alg in ["SHA-1", "sha-256x", "", "AKAv1-MD5"] {
        let c = Creds {
            params: c.params.clone(),
        }
        .set("algorithm", alg);
        assert_eq!(
            verify_at(&srv, &c, Algorithm::Sha256, T0 + 1).unwrap_err(),
            DigestError::UnsupportedAlgorithm,
            "{alg:?}"
        );
    }
    // Token matching ignores case.
    let lower = Creds {
        params: c.params.clone(),
    }
    .set("algorithm", "sha-256");
    assert!(verify_at(&srv, &lower, Algorithm::Sha256, T0 + 1).is_ok());
    // Absent means MD5, which this server does not offer.
    let absent = Creds {
        params: c.params.clone(),
    }
    .remove("algorithm");
    assert_eq!(
        verify_at(&srv, &absent, Algorithm::Sha256, T0 + 1).unwrap_err(),
        DigestError::UnsupportedAlgorithm
    );
    // Offered, but the user store handed over an HA1 for another hash function.
    let srv2 = server(&[Algorithm::Sha256, Algorithm::Md5]);
    let c2 = creds(&srv2, Algorithm::Sha256, PASSWORD);
    let resp = DigestResponse::from_params(c2.pairs()).unwrap();
    let md5 = Ha1::compute(Algorithm::Md5, USER, REALM, PASSWORD);
    let e = srv2
        .verify(&resp, "REGISTER", &md5, at(T0 + 1))
        .unwrap_err();
    assert_eq!(e, DigestError::Ha1AlgorithmMismatch);
    assert_eq!(e.disposition(), Disposition::ServerError);
}

#[test]
fn qop_variants() {
    let srv = server(&[Algorithm::Md5]);
    let c = creds(&srv, Algorithm::Md5, PASSWORD);
    let with = |n: &str, v: &str| {
        Creds {
            params: c.params.clone(),
        }
        .set(n, v)
    };
    assert_eq!(
        verify_at(&srv, &with("qop", "auth-int"), Algorithm::Md5, T0 + 1).unwrap_err(),
        DigestError::UnsupportedQop
    );
    assert_eq!(
        verify_at(&srv, &with("qop", "token"), Algorithm::Md5, T0 + 1).unwrap_err(),
        DigestError::UnsupportedQop
    );
    // RFC 2069 form refused by default.
    let legacy = Creds {
        params: c.params.clone(),
    }
    .remove("qop")
    .remove("nc")
    .remove("cnonce");
    assert_eq!(
        verify_at(&srv, &legacy, Algorithm::Md5, T0 + 1).unwrap_err(),
        DigestError::UnsupportedQop
    );
    // qop without nc / cnonce.
    let no_nc = Creds {
        params: c.params.clone(),
    }
    .remove("nc");
    assert_eq!(
        DigestResponse::from_params(no_nc.pairs()).unwrap_err(),
        DigestError::MissingParam("nc")
    );
    let no_cnonce = Creds {
        params: c.params.clone(),
    }
    .remove("cnonce");
    assert_eq!(
        DigestResponse::from_params(no_cnonce.pairs()).unwrap_err(),
        DigestError::MissingParam("cnonce")
    );
    // nc without qop.
    let no_qop = Creds {
        params: c.params.clone(),
    }
    .remove("qop");
    assert!(matches!(
        DigestResponse::from_params(no_qop.pairs()),
        Err(DigestError::Malformed(_))
    ));
}

#[test]
fn garbage_nc_values() {
    let srv = server(&[Algorithm::Md5]);
    let nonce = srv.make_nonce(at(T0), [8; 8]);
    for nc in [
        "1",
        "0000001",
        "000000001",
        "0000001g",
        "00000000",
        "+0000001",
        " 0000001",
        "ffffffff ",
    ] {
        // The response is computed over the bad nc so only the nc check can reject it.
        let c = Creds::new(
            Algorithm::Md5,
            USER,
            REALM,
            PASSWORD,
            "REGISTER",
            URI,
            &nonce,
            nc,
            "x",
        );
        assert!(
            matches!(
                verify_at(&srv, &c, Algorithm::Md5, T0 + 1),
                Err(DigestError::Malformed(_))
            ),
            "nc {nc:?}"
        );
    }
    // Upper-case hex is tolerated and hashed as sent.
    let c = Creds::new(
        Algorithm::Md5,
        USER,
        REALM,
        PASSWORD,
        "REGISTER",
        URI,
        &nonce,
        "0000000A",
        "x",
    );
    assert_eq!(verify_at(&srv, &c, Algorithm::Md5, T0 + 1).unwrap().nc, 10);
}

#[test]
fn garbage_response_values() {
    let srv = server(&[Algorithm::Sha256]);
    let c = creds(&srv, Algorithm::Sha256, PASSWORD);
    let good = c
        .params
        .iter()
        .find(|(n, _)| n == "response")
        .unwrap()
        .1
        .clone();
    for bad in [
        "zz".repeat(32),
        good[..63].to_owned(),
        format!("{good}0"),
        good[..32].to_owned(),
        "é".repeat(32),
    ] {
        let c = Creds {
            params: c.params.clone(),
        }
        .set("response", &bad);
        assert_eq!(
            verify_at(&srv, &c, Algorithm::Sha256, T0 + 1).unwrap_err(),
            DigestError::WrongResponse
        );
    }
}

#[test]
fn missing_required_params() {
    let srv = server(&[Algorithm::Md5]);
    let c = creds(&srv, Algorithm::Md5, PASSWORD);
    for name in ["username", "realm", "nonce", "uri", "response"] {
        let c = Creds {
            params: c.params.clone(),
        }
        .remove(name);
        let e = DigestResponse::from_params(c.pairs()).unwrap_err();
        assert_eq!(e, DigestError::MissingParam(name));
        assert_eq!(e.disposition(), Disposition::BadRequest);
    }
    for name in ["username", "nonce", "uri", "response"] {
        let c = Creds {
            params: c.params.clone(),
        }
        .set(name, "");
        assert!(matches!(
            DigestResponse::from_params(c.pairs()),
            Err(DigestError::Malformed(_))
        ));
    }
    assert_eq!(
        DigestResponse::from_params(std::iter::empty()).unwrap_err(),
        DigestError::MissingParam("username")
    );
}

#[test]
fn duplicate_params() {
    let srv = server(&[Algorithm::Md5]);
    let c = creds(&srv, Algorithm::Md5, PASSWORD);
    for name in [
        "username",
        "Nonce",
        "RESPONSE",
        "nc",
        "qop",
        "algorithm",
        "opaque",
        "userhash",
    ] {
        let c = Creds {
            params: c.params.clone(),
        }
        .push(name, "x")
        .push(name, "y");
        assert_eq!(
            DigestResponse::from_params(c.pairs()).unwrap_err(),
            DigestError::DuplicateParam,
            "{name}"
        );
    }
    // Unknown directives are ignored, even repeated.
    let c = Creds {
        params: c.params.clone(),
    }
    .push("x-foo", "1")
    .push("x-foo", "2");
    assert!(DigestResponse::from_params(c.pairs()).is_ok());
}

#[test]
fn other_malformed_inputs() {
    let srv = server(&[Algorithm::Md5]);
    let c = creds(&srv, Algorithm::Md5, PASSWORD);
    let cases = [
        Creds {
            params: c.params.clone(),
        }
        .set("uri", "sip:a\r\nVia: injected"),
        Creds {
            params: c.params.clone(),
        }
        .set("cnonce", "a\0b"),
        Creds {
            params: c.params.clone(),
        }
        .set("username", "a\x7fb"),
        Creds {
            params: c.params.clone(),
        }
        .set("userhash", "maybe"),
        Creds {
            params: c.params.clone(),
        }
        .push("username*", "UTF-8''bob"),
    ];
    for c in cases {
        assert!(matches!(
            DigestResponse::from_params(c.pairs()),
            Err(DigestError::Malformed(_))
        ));
    }
}

#[test]
fn huge_inputs_are_bounded() {
    let srv = server(&[Algorithm::Md5]);
    let c = creds(&srv, Algorithm::Md5, PASSWORD);
    let big = "a".repeat(1 << 20);
    let long_value = Creds {
        params: c.params.clone(),
    }
    .set("uri", &big);
    assert!(matches!(
        DigestResponse::from_params(long_value.pairs()),
        Err(DigestError::Malformed(_))
    ));
    let long_name = Creds {
        params: c.params.clone(),
    }
    .push(&big, "1");
    assert!(matches!(
        DigestResponse::from_params(long_name.pairs()),
        Err(DigestError::Malformed(_))
    ));
    // An endless parameter stream is cut off after MAX_PARAMS items, not consumed.
    let endless = std::iter::repeat(("x-pad", "1"));
    assert_eq!(
        DigestResponse::from_params(endless).unwrap_err(),
        DigestError::Malformed("too many parameters")
    );
    // Within limits, a long (but legal) URI verifies.
    let uri = format!("sip:{}@sip.example.com", "u".repeat(1800));
    let nonce = srv.make_nonce(at(T0), [1; 8]);
    let ok = Creds::new(
        Algorithm::Md5,
        USER,
        REALM,
        PASSWORD,
        "REGISTER",
        &uri,
        &nonce,
        "00000001",
        "x",
    );
    assert!(verify_at(&srv, &ok, Algorithm::Md5, T0 + 1).is_ok());
}

#[test]
fn ha1_hex_handling() {
    let ha1 = Ha1::compute(Algorithm::Sha512_256, USER, REALM, PASSWORD);
    let hex = ha1.to_hex();
    assert_eq!(
        hex,
        h(Algorithm::Sha512_256, &format!("{USER}:{REALM}:{PASSWORD}"))
    );
    let back = Ha1::from_hex(Algorithm::Sha512_256, &hex.to_uppercase()).unwrap();
    assert_eq!(back.to_hex(), hex);
    assert_eq!(
        Ha1::from_hex(Algorithm::Md5, &hex).unwrap_err(),
        DigestError::InvalidHa1
    );
    assert_eq!(
        Ha1::from_hex(Algorithm::Sha256, &hex[..62]).unwrap_err(),
        DigestError::InvalidHa1
    );
    for bad in [
        "g0000000000000000000000000000000",
        "+0000000000000000000000000000000",
        "000000000000000000000000000000000",
        "0000000000000000000000000000000",
    ] {
        assert_eq!(
            Ha1::from_hex(Algorithm::Md5, bad).unwrap_err(),
            DigestError::InvalidHa1,
            "{bad}"
        );
    }
    assert_eq!(
        Ha1::from_hex(Algorithm::Md5Sess, &"0".repeat(32))
            .unwrap()
            .algorithm(),
        Algorithm::Md5
    );
}

#[test]
fn secrets_stay_out_of_debug_output() {
    let ha1 = Ha1::compute(Algorithm::Md5, USER, REALM, PASSWORD);
    let hex = ha1.to_hex();
    let dbg = format!("{ha1:?}");
    assert!(!dbg.contains(&hex) && dbg.contains("redacted"), "{dbg}");

    let key = NonceKey::new([0xab; 32]);
    let dbg = format!("{key:?}");
    assert!(
        !dbg.contains("171") && !dbg.to_lowercase().contains("ab"),
        "{dbg}"
    );
    let srv = DigestServer::new(DigestConfig::new(REALM), NonceKey::new([0xab; 32]));
    let dbg = format!("{srv:?}");
    assert!(!dbg.contains("171") && dbg.contains("redacted"), "{dbg}");

    let c = creds(&srv, Algorithm::Sha256, PASSWORD);
    let response = c
        .params
        .iter()
        .find(|(n, _)| n == "response")
        .unwrap()
        .1
        .clone();
    let resp = DigestResponse::from_params(c.pairs()).unwrap();
    let dbg = format!("{resp:?}");
    assert!(!dbg.contains(&response) && dbg.contains("bob"), "{dbg}");
}

#[test]
fn config_validation_and_empty_offer() {
    let mut cfg = DigestConfig::new("a\r\nb");
    assert!(matches!(cfg.validate(), Err(DigestError::InvalidConfig(_))));
    cfg.realm = "ok".into();
    assert!(cfg.validate().is_ok());
    cfg.algorithms.clear();
    assert!(cfg.validate().is_err());
    // Even unvalidated, an empty offer challenges with nothing and verifies nothing.
    let srv = DigestServer::new(cfg, NonceKey::new(KEY));
    assert!(srv.challenges(at(T0), [0; 8], false).is_empty());
    let c = creds(&srv, Algorithm::Md5, PASSWORD);
    assert_eq!(
        verify_at(&srv, &c, Algorithm::Md5, T0 + 1).unwrap_err(),
        DigestError::UnsupportedAlgorithm
    );
}

#[test]
fn realm_with_quotes_is_escaped_in_challenges() {
    let srv = server_with(r#"we "quote" \ things"#, &[Algorithm::Md5], KEY);
    let ch = &srv.challenges(at(T0), [0; 8], false)[0];
    assert!(
        ch.starts_with(r#"Digest realm="we \"quote\" \\ things", "#),
        "{ch}"
    );
    let hp = sagw_digest::client::parse_header(ch).unwrap();
    assert_eq!(hp.pairs().next(), Some(("realm", r#"we "quote" \ things"#)));
}
