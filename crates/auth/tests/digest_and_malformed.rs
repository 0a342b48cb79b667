//! Digest through the core's decision API, and every class of malformed credentials: each gives a
//! typed reason and a 4xx decision, never a panic.

mod support;

use std::time::Duration;

use sagw_auth::{Binding, Decision, Reason, Scheme};
use sagw_digest::client::{Challenge as DigestChallenge, authorize, parse_header};
use sagw_digest::{Algorithm, Ha1};
use sagw_sip::Message;
use support::*;

fn digest_challenge(d: &Decision) -> (u16, Vec<String>) {
    match d {
        Decision::Challenge(c) => (
            c.status,
            c.headers
                .iter()
                .filter(|(_, v)| v.starts_with("Digest "))
                .map(|(_, v)| v.clone())
                .collect(),
        ),
        other => panic!("expected a challenge, got {other:?}"),
    }
}

fn register(user: &str, cseq: u32) -> String {
    format!(
        "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bK{cseq}\r\nFrom: <sip:{user}@example.com>;tag=f{cseq}\r\nTo: <sip:{user}@example.com>\r\nCall-ID: d-{user}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:{user}@192.0.2.9:5060>\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n"
    )
}

fn with_auth(text: &str, name: &str, value: &str) -> Message {
    let mut m = parse(text);
    m.push_header(name, value);
    m
}

fn answer(challenge: &str, user: &str, pw: &str, method: &str, nc: u32) -> String {
    let p = parse_header(challenge).expect("challenge parses");
    let ch = DigestChallenge::from_params(p.pairs()).expect("challenge params");
    let ha1 = Ha1::compute(ch.algorithm.base(), user, ch.realm, pw);
    authorize(&ch, user, &ha1, method, "sip:example.com", "0a4f113b", nc)
        .expect("authorize")
        .header_value()
}

#[test]
fn digest_register_with_every_offered_algorithm() {
    let core = core();
    let mut rng = rng();
    let (status, challenges) =
        digest_challenge(&core.on_request(&parse(&register("alice", 1)), &ctx(), t0(), &mut rng));
    assert_eq!(status, 401);
    assert_eq!(challenges.len(), 2);
    assert!(
        challenges[0].contains("algorithm=SHA-256"),
        "{}",
        challenges[0]
    );
    for (i, ch) in challenges.iter().enumerate() {
        // One nonce serves every algorithm of a challenge: the count goes on.
        let auth = answer(ch, "alice", "alice-pw", "REGISTER", 1 + i as u32);
        let m = with_auth(&register("alice", 2 + i as u32), "Authorization", &auth);
        match core.on_request(&m, &ctx(), t0(), &mut rng) {
            Decision::Authenticated(a) => {
                assert_eq!(a.identity, "sip:alice@example.com");
                assert_eq!(a.scheme, Scheme::Digest);
                let Binding::Digest {
                    authentication_info,
                    ..
                } = &a.binding
                else {
                    panic!("digest binding");
                };
                assert!(
                    authentication_info.contains("nextnonce=\""),
                    "{authentication_info}"
                );
                assert!(
                    authentication_info.contains("rspauth=\""),
                    "{authentication_info}"
                );
                let mut ok = response_to(&m, 200, "OK", &[]);
                core.finish_response(&mut ok, &a, t0(), &mut rng)
                    .expect("digest info");
                assert_eq!(
                    ok.header("Authentication-Info"),
                    Some(authentication_info.as_str())
                );
            }
            other => panic!("algorithm {i}: {other:?}"),
        }
    }
}

/// libre (baresip) v3.12 to v4.6 answer a `stale=true` challenge with `algorithm=` left empty
/// (it freed the algorithm it had kept, and printed the null); its response is MD5, as an absent
/// algorithm means (RFC 7616 §3.3). PJSIP's verifier takes an empty one for MD5 too. Refused as
/// malformed, the client was challenged again without `stale`, gave up, and stayed unregistered
/// from its first refresh on.
#[test]
fn an_empty_algorithm_is_taken_as_none_given() {
    let core = core();
    let mut rng = rng();
    let (_, challenges) =
        digest_challenge(&core.on_request(&parse(&register("alice", 1)), &ctx(), t0(), &mut rng));
    let md5 = challenges
        .iter()
        .find(|c| c.contains("algorithm=MD5"))
        .expect("an MD5 challenge");
    let auth = answer(md5, "alice", "alice-pw", "REGISTER", 1);
    let start = auth.find("algorithm=MD5").expect("the client names MD5");
    let empty = format!(
        "{}algorithm={}",
        &auth[..start],
        &auth[start + "algorithm=MD5".len()..]
    );
    let empty = if empty.ends_with("algorithm=") {
        empty
    } else {
        // Last, as libre writes it.
        let without = empty
            .replace("algorithm=, ", "")
            .replace(", algorithm=", "");
        format!("{without}, algorithm=")
    };
    assert!(empty.ends_with(", algorithm="), "{empty}");
    let m = with_auth(&register("alice", 2), "Authorization", &empty);
    match core.on_request(&m, &ctx(), t0(), &mut rng) {
        Decision::Authenticated(a) => assert_eq!(a.identity, "sip:alice@example.com"),
        other => panic!("{empty}: {other:?}"),
    }
    // Any other parameter without a value is still malformed.
    let bad = auth.replace("qop=auth", "qop=");
    assert_ne!(bad, auth);
    let m = with_auth(&register("alice", 3), "Authorization", &bad);
    assert!(
        matches!(core.on_request(&m, &ctx(), t0(), &mut rng), Decision::Challenge(c) if c.cause == Some(Reason::MalformedHeader)),
        "{bad}"
    );
}

#[test]
fn digest_wrong_password_stale_nonce_and_replay() {
    let core = core();
    let mut rng = rng();
    let (_, ch) =
        digest_challenge(&core.on_request(&parse(&register("bob", 1)), &ctx(), t0(), &mut rng));
    let bad = with_auth(
        &register("bob", 2),
        "Authorization",
        &answer(&ch[0], "bob", "nope", "REGISTER", 1),
    );
    match core.on_request(&bad, &ctx(), t0(), &mut rng) {
        Decision::Challenge(c) => assert_eq!(c.cause, Some(Reason::WrongPassword)),
        other => panic!("{other:?}"),
    }
    let good = with_auth(
        &register("bob", 3),
        "Authorization",
        &answer(&ch[0], "bob", "bob-pw", "REGISTER", 2),
    );
    assert!(matches!(
        core.on_request(&good, &ctx(), t0(), &mut rng),
        Decision::Authenticated(_)
    ));
    match core.on_request(&good, &ctx(), t0(), &mut rng) {
        Decision::Challenge(c) => assert_eq!(c.cause, Some(Reason::Replay)),
        other => panic!("a replayed nonce count must fail: {other:?}"),
    }
    // The same nonce ten minutes later: stale, and the challenge says so.
    let later = with_auth(
        &register("bob", 4),
        "Authorization",
        &answer(&ch[0], "bob", "bob-pw", "REGISTER", 3),
    );
    match core.on_request(&later, &ctx(), t0() + Duration::from_secs(600), &mut rng) {
        Decision::Challenge(c) => {
            assert_eq!(c.cause, Some(Reason::StaleNonce));
            assert!(
                c.headers
                    .iter()
                    .any(|(_, v)| v.starts_with("Digest ") && v.contains("stale=true"))
            );
        }
        other => panic!("{other:?}"),
    }
    let snap = core.counters().snapshot();
    assert_eq!(
        snap.handshake_failures(Scheme::Digest, Reason::WrongPassword),
        1
    );
    assert_eq!(
        snap.handshake_failures(Scheme::Digest, Reason::StaleNonce),
        1
    );
}

#[test]
fn digest_invite_then_bye_on_the_same_nonce_as_sipp_does() {
    let core = core();
    let mut rng = rng();
    let invite = |cseq: u32, method: &str| {
        format!(
            "{method} sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bK{cseq}\r\nFrom: <sip:alice@example.com>;tag=a\r\nTo: <sip:bob@example.com>\r\nCall-ID: call-1\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
        )
    };
    let (status, ch) =
        digest_challenge(&core.on_request(&parse(&invite(1, "INVITE")), &ctx(), t0(), &mut rng));
    assert_eq!(status, 407);
    let m = with_auth(
        &invite(2, "INVITE"),
        "Proxy-Authorization",
        &answer(&ch[1], "alice", "alice-pw", "INVITE", 1),
    );
    assert!(matches!(
        core.on_request(&m, &ctx(), t0(), &mut rng),
        Decision::Authenticated(_)
    ));
    let bye = with_auth(
        &invite(3, "BYE"),
        "Proxy-Authorization",
        &answer(&ch[1], "alice", "alice-pw", "BYE", 2),
    );
    assert!(matches!(
        core.on_request(&bye, &ctx(), t0(), &mut rng),
        Decision::Authenticated(_)
    ));
}

/// Credentials computed for one Request-URI (alice's INVITE to bob, captured over UDP) do not
/// carry another (the same INVITE to a premium-rate number, sent first, or with `user=phone`):
/// the `uri` they name must be the request's (RFC 7616 §3.4.6). Before, the `uri` was checked on
/// ACK only, and the moved INVITE was alice's. A `sip:` URI without a user part (sipp writes the
/// server's address there) is still taken for any Request-URI; a `tel:` URI names a number and is
/// not.
#[test]
fn digest_credentials_name_the_request_uri_they_were_made_for() {
    let core = core();
    let mut rng = rng();
    let invite = |ruri: &str, cseq: u32| {
        format!(
            "INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bKu{cseq}\r\nFrom: <sip:alice@example.com>;tag=a\r\nTo: <sip:bob@example.com>\r\nCall-ID: call-u\r\nCSeq: {cseq} INVITE\r\nContent-Length: 0\r\n\r\n"
        )
    };
    let (_, ch) = digest_challenge(&core.on_request(
        &parse(&invite("sip:bob@example.com", 1)),
        &ctx(),
        t0(),
        &mut rng,
    ));
    let for_uri = |uri: &str, nc: u32| {
        let p = parse_header(&ch[1]).expect("challenge parses");
        let c = DigestChallenge::from_params(p.pairs()).expect("challenge params");
        let ha1 = Ha1::compute(c.algorithm.base(), "alice", c.realm, "alice-pw");
        authorize(&c, "alice", &ha1, "INVITE", uri, "0a4f113b", nc)
            .expect("authorize")
            .header_value()
    };
    let moved = with_auth(
        &invite("sip:+19005550100@example.com", 2),
        "Proxy-Authorization",
        &for_uri("sip:bob@example.com", 1),
    );
    let d = core.on_request(&moved, &ctx(), t0(), &mut rng);
    assert!(
        !matches!(d, Decision::Authenticated(_)),
        "credentials made for sip:bob@ carried an INVITE to another number: {d:?}"
    );
    for (ruri, uri) in [
        ("sip:bob@example.com;user=phone", "sip:bob@example.com"),
        ("sip:Bob@example.com", "sip:bob@example.com"),
        (
            "sip:+19005550199@example.com;user=phone",
            "tel:+18005550100",
        ),
        ("tel:+19005550199", "tel:+18005550100"),
    ] {
        let moved = with_auth(&invite(ruri, 2), "Proxy-Authorization", &for_uri(uri, 1));
        let d = core.on_request(&moved, &ctx(), t0(), &mut rng);
        assert!(
            !matches!(d, Decision::Authenticated(_)),
            "credentials made for {uri} carried {ruri}: {d:?}"
        );
    }
    // The count was not used up: the genuine request still goes through.
    let genuine = with_auth(
        &invite("sip:bob@example.com", 3),
        "Proxy-Authorization",
        &for_uri("sip:bob@example.com", 1),
    );
    let d = core.on_request(&genuine, &ctx(), t0(), &mut rng);
    assert!(matches!(d, Decision::Authenticated(_)), "{d:?}");
    // sipp's form: the server's address, no user part.
    let sipp = with_auth(
        &invite("sip:bob@example.com", 4),
        "Proxy-Authorization",
        &for_uri("sip:192.0.2.10:5060", 2),
    );
    let d = core.on_request(&sipp, &ctx(), t0(), &mut rng);
    assert!(matches!(d, Decision::Authenticated(_)), "{d:?}");
}

#[test]
fn digest_credentials_for_another_realm_are_not_ours() {
    let core = core();
    let mut rng = rng();
    let m = with_auth(
        &register("alice", 1),
        "Authorization",
        "Digest username=\"alice\", realm=\"elsewhere\", nonce=\"x\", uri=\"sip:example.com\", response=\"00\"",
    );
    match core.on_request(&m, &ctx(), t0(), &mut rng) {
        Decision::Challenge(c) => assert_eq!(c.cause, None),
        other => panic!("{other:?}"),
    }
}

/// What is forwarded after a sign-in keeps only what is not ours: the credentials that proved the
/// request (found by the index the decision carries, without a second parse) and any other
/// credentials for this gateway go; another scheme's and another realm's stay, in order. With no
/// index (a response) the same headers go.
#[test]
fn stripping_removes_our_credentials_and_keeps_the_others() {
    let core = core();
    let mut rng = rng();
    let (_, ch) =
        digest_challenge(&core.on_request(&parse(&register("bob", 1)), &ctx(), t0(), &mut rng));
    let auth = answer(&ch[0], "bob", "bob-pw", "REGISTER", 1);
    let elsewhere = "Digest username=\"bob\", realm=\"elsewhere\", nonce=\"x\", uri=\"sip:example.com\", response=\"00\"";
    // A copy of ours before the one that proves the request (Authorization is looked at first),
    // so that the index is read across a removal, and someone else's after it.
    let mut m = parse(&register("bob", 2));
    m.push_header("Proxy-Authorization", &auth);
    m.push_header("Authorization", "Basic Ym9iOnB3");
    m.push_header("Authorization", &auth);
    m.push_header("Proxy-Authorization", elsewhere);
    m.push_header("Authorization", elsewhere);
    let Decision::Authenticated(a) = core.on_request(&m, &ctx(), t0(), &mut rng) else {
        panic!("bob signs in");
    };
    assert_eq!(
        m.header_at(a.credentials_at).map(|h| (h.name, h.value)),
        Some(("Authorization", auth.as_str())),
        "the index names the header that proved the request"
    );
    let left = |m: &Message| -> Vec<(String, String)> {
        m.headers()
            .filter(|h| h.name.ends_with("Authorization"))
            .map(|h| (h.name.to_owned(), h.value.to_owned()))
            .collect()
    };
    let expected = vec![
        ("Authorization".to_owned(), "Basic Ym9iOnB3".to_owned()),
        ("Proxy-Authorization".to_owned(), elsewhere.to_owned()),
        ("Authorization".to_owned(), elsewhere.to_owned()),
    ];
    let mut by_index = m.clone();
    assert_eq!(
        core.strip_credentials(&mut by_index, Some(a.credentials_at)),
        2
    );
    assert_eq!(left(&by_index), expected);
    let mut by_parse = m.clone();
    assert_eq!(core.strip_credentials(&mut by_parse, None), 2);
    assert_eq!(left(&by_parse), expected);
    assert_eq!(by_index.to_bytes(), by_parse.to_bytes());
}

fn ntlm_header(params: &str) -> String {
    format!("NTLM qop=\"auth\", realm=\"{REALM}\", targetname=\"{TARGET}\", {params}")
}

#[test]
fn malformed_credentials_give_a_reason_and_a_challenge() {
    let core = core();
    let mut rng = rng();
    let mut c = NtlmClient::new("alice", "alice-pw", "aaaaaaaaaa");
    let leg1 = c.leg1("REGISTER");
    let Decision::Continue(ch) = core.on_request(&leg1, &ctx(), t0(), &mut rng) else {
        panic!("leg 2");
    };
    let opaque = challenge_param(&ch, "NTLM", "opaque").expect("opaque");
    let cases: Vec<(String, Reason)> = vec![
        // Not base64.
        (ntlm_header(&format!("opaque=\"{opaque}\", gssapi-data=\"!!!notbase64\"")), Reason::MalformedToken),
        (ntlm_header("opaque=\"0000000G\", gssapi-data=\"AAAA\""), Reason::MalformedHeader),
        (ntlm_header("gssapi-data=\"TlRMTVNTUAADAAAA\""), Reason::MalformedHeader),
        // An opaque of the current window (its top bits are the window's tag) is recomputed, and
        // its truncated AUTHENTICATE is malformed; one tagged with a window two back has timed out.
        (ntlm_header("opaque=\"12345678\", gssapi-data=\"TlRMTVNTUAADAAAA\""), Reason::MalformedToken),
        (ntlm_header("opaque=\"92345678\", gssapi-data=\"TlRMTVNTUAADAAAA\""), Reason::UnknownHandshake),
        (ntlm_header("opaque=\"12345678\", crand=\"1\", cnum=\"x\", response=\"00\""), Reason::UnknownSa),
        ("NTLM realm=\"a\", realm=\"b\"".to_owned(), Reason::MalformedHeader),
        ("NTLM qop=\"auth, realm=\"x".to_owned(), Reason::MalformedHeader),
        ("NTLM =x".to_owned(), Reason::MalformedHeader),
        ("Digest username=\"alice\", realm=\"example.com\"".to_owned(), Reason::MalformedHeader),
        (format!("Digest username=\"alice\", realm=\"example.com\", nonce=\"{}\", uri=\"sip:x\", response=\"00\"", "A".repeat(5000)), Reason::MalformedHeader),
        ("Digest username=\"alice\", realm=\"example.com\", nonce=\"gHpijZsBAACCRqA9zhEK6Y6room-VmPXhdNRczr5okR\", uri=\"sip:x\", response=\"0123456789abcdef0123456789abcdef\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"abc\"".to_owned(), Reason::BadNonce),
    ];
    for (value, expected) in cases {
        let m = with_auth(&c.request("REGISTER", &[]), "Authorization", &value);
        match core.on_request(&m, &ctx(), t0(), &mut rng) {
            Decision::Challenge(ch) => assert_eq!(ch.cause, Some(expected), "{value}"),
            other => panic!("{value}: {other:?}"),
        }
    }
    // Truncated and lying AUTHENTICATE messages, each against a fresh challenge.
    let lying: Vec<Vec<u8>> = vec![
        b"NTLMSSP\0\x03\0\0\0".to_vec(),
        {
            // Header claiming an NT response far past the end.
            let mut v = b"NTLMSSP\0\x03\0\0\0".to_vec();
            v.extend_from_slice(&[0u8; 8]);
            v.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xf0, 0xff, 0xff, 0x7f]);
            v.extend_from_slice(&[0u8; 60]);
            v
        },
        b"NTLMSSP\0\x01\0\0\0".to_vec(),
        vec![0u8; 4096],
    ];
    use base64::Engine as _;
    for bytes in lying {
        let leg1 = c.leg1("REGISTER");
        let Decision::Continue(ch) = core.on_request(&leg1, &ctx(), t0(), &mut rng) else {
            panic!("leg 2");
        };
        let opaque = challenge_param(&ch, "NTLM", "opaque").expect("opaque");
        let token = base64::engine::general_purpose::STANDARD.encode(&bytes);
        let m = with_auth(
            &c.request("REGISTER", &[]),
            "Authorization",
            &ntlm_header(&format!("opaque=\"{opaque}\", gssapi-data=\"{token}\"")),
        );
        match core.on_request(&m, &ctx(), t0(), &mut rng) {
            Decision::Challenge(ch) => assert_eq!(ch.cause, Some(Reason::MalformedToken)),
            other => panic!("{other:?}"),
        }
    }
    let snap = core.counters().snapshot();
    assert!(snap.handshake_failures(Scheme::Ntlm, Reason::MalformedToken) >= 5);
}

#[test]
fn unknown_schemes_and_other_realms_are_left_alone() {
    let core = core();
    let mut rng = rng();
    let mut c = NtlmClient::new("alice", "alice-pw", "aaaaaaaaaa");
    for value in [
        "Basic YWxpY2U6cHc=",
        "TLS-DSK realm=\"SIP Communications Service\", targetname=\"gw.example.com\", version=4",
        "NTLM realm=\"Some Other Realm\", targetname=\"x\", gssapi-data=\"\"",
    ] {
        let m = with_auth(&c.request("REGISTER", &[]), "Authorization", value);
        match core.on_request(&m, &ctx(), t0(), &mut rng) {
            Decision::Challenge(ch) => assert_eq!(ch.cause, None, "{value}"),
            other => panic!("{value}: {other:?}"),
        }
    }
}

#[test]
fn kerberos_is_refused_when_not_enabled() {
    let core = core();
    let mut rng = rng();
    let mut c = NtlmClient::new("alice", "alice-pw", "aaaaaaaaaa");
    let m = with_auth(
        &c.request("REGISTER", &[]),
        "Authorization",
        "Kerberos realm=\"SIP Communications Service\", targetname=\"sip/gw.example.com\", gssapi-data=\"YIIB\"",
    );
    // Not offered here, so not ours: a plain challenge without Kerberos in it.
    let Decision::Challenge(ch) = core.on_request(&m, &ctx(), t0(), &mut rng) else {
        panic!("challenge");
    };
    assert!(!ch.headers.iter().any(|(_, v)| v.starts_with("Kerberos")));
    let _ = Algorithm::Md5;
}

/// Two gateways of a pool share the nonce key, each with its own node id: a Digest
/// `Authorization` taken by one is stale at the other (a fresh nonce of that node, `stale=true`,
/// counted `other_node`), and stays a replay at the first.
#[test]
fn digest_nonce_of_another_pool_node_is_stale_there() {
    let node = |id: u16| {
        let mut cfg = config();
        cfg.node_id = id;
        core_with(cfg)
    };
    let (n1, n2) = (node(1), node(2));
    let mut rng = rng();
    let (_, ch) =
        digest_challenge(&n1.on_request(&parse(&register("bob", 1)), &ctx(), t0(), &mut rng));
    let auth = answer(&ch[0], "bob", "bob-pw", "REGISTER", 1);
    let m = with_auth(&register("bob", 2), "Authorization", &auth);
    assert!(matches!(
        n1.on_request(&m, &ctx(), t0(), &mut rng),
        Decision::Authenticated(_)
    ));
    // Replayed at node 1: its nonce-count table refuses it.
    match n1.on_request(&m, &ctx(), t0(), &mut rng) {
        Decision::Challenge(c) => assert_eq!(c.cause, Some(Reason::Replay)),
        other => panic!("{other:?}"),
    }
    // Replayed at node 2: stale, with a nonce node 2 takes.
    let fresh = match n2.on_request(&m, &ctx(), t0(), &mut rng) {
        Decision::Challenge(c) => {
            assert_eq!(c.status, 401);
            assert_eq!(c.cause, Some(Reason::OtherNode));
            let (_, digest) = digest_challenge(&Decision::Challenge(c));
            assert!(
                digest.iter().all(|v| v.contains("stale=true")),
                "{digest:?}"
            );
            digest[0].clone()
        }
        other => panic!("{other:?}"),
    };
    assert_ne!(fresh, ch[0]);
    let retry = with_auth(
        &register("bob", 3),
        "Authorization",
        &answer(&fresh, "bob", "bob-pw", "REGISTER", 1),
    );
    assert!(matches!(
        n2.on_request(&retry, &ctx(), t0(), &mut rng),
        Decision::Authenticated(_)
    ));
    // Node 2's nonce is in turn another node's at node 1.
    match n1.on_request(&retry, &ctx(), t0(), &mut rng) {
        Decision::Challenge(c) => assert_eq!(c.cause, Some(Reason::OtherNode)),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        n2.counters()
            .snapshot()
            .handshake_failures(Scheme::Digest, Reason::OtherNode),
        1
    );
    assert_eq!(Reason::OtherNode.label(), "other_node");
}

/// One account that fetches a fresh nonce for every request once filled the whole nonce-count
/// table (shared by all users, 10 000 entries here) and made every other user's nonces stale:
/// alice's ACK of a 2xx, which cannot be challenged, was then discarded and her call failed.
/// bob's nonces now stay within his own share of the table.
#[test]
fn one_digest_user_cannot_make_another_users_nonce_stale() {
    let core = core();
    let mut rng = rng();
    let request = |method: &str, cseq: u32| {
        format!(
            "{method} sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bK{method}{cseq}\r\nFrom: <sip:alice@example.com>;tag=a\r\nTo: <sip:carol@example.com>;tag=c\r\nCall-ID: call-alice\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
        )
    };
    let (_, ch) =
        digest_challenge(&core.on_request(&parse(&request("INVITE", 1)), &ctx(), t0(), &mut rng));
    let invite = with_auth(
        &request("INVITE", 2),
        "Proxy-Authorization",
        &answer(&ch[1], "alice", "alice-pw", "INVITE", 1),
    );
    assert!(matches!(
        core.on_request(&invite, &ctx(), t0(), &mut rng),
        Decision::Authenticated(_)
    ));
    // bob: a fresh challenge, then one use of its nonce, more times than the table holds, 40 a
    // second, all within the lifetime of alice's nonce (300 s).
    let mut later = t0();
    for cseq in 1..=10_001u32 {
        later = t0() + Duration::from_millis(1000 + u64::from(cseq) * 25);
        let (_, ch) = digest_challenge(&core.on_request(
            &parse(&register("bob", cseq)),
            &ctx(),
            later,
            &mut rng,
        ));
        let m = with_auth(
            &register("bob", cseq),
            "Authorization",
            &answer(&ch[1], "bob", "bob-pw", "REGISTER", 1),
        );
        match core.on_request(&m, &ctx(), later, &mut rng) {
            Decision::Authenticated(_) => {}
            other => panic!("bob's REGISTER {cseq}: {other:?}"),
        }
    }
    // alice's ACK of the 2xx, on the INVITE's nonce with the next count.
    let ack = with_auth(
        &request("ACK", 2),
        "Proxy-Authorization",
        &answer(&ch[1], "alice", "alice-pw", "ACK", 2),
    );
    match core.on_request(&ack, &ctx(), later, &mut rng) {
        Decision::Authenticated(_) => {}
        other => panic!("alice's ACK after bob's flood: {other:?}"),
    }
}
