//! What an authenticated client may make the core do (issue 12): register only its own AOR, get
//! refusals signed only with the SA that verified them, keep an SA alive only by its own signatures
//! and granted registrations, hold a bounded number of SAs, and lose them when its user goes.

mod support;

use std::time::Duration;

use sagw_auth::{Binding, ChallengeFamily, Decision, Reason};
use support::*;

fn established(d: &Decision) -> sagw_auth::Authenticated {
    match d {
        Decision::Authenticated(a) => a.clone(),
        other => panic!("expected an authenticated decision, got {other:?}"),
    }
}

fn sa_expiry(core: &sagw_auth::SecurityCore, epid: &str) -> u64 {
    core.sas()
        .list()
        .into_iter()
        .find(|i| i.epid == epid)
        .map(|i| i.expiry)
        .expect("the SA")
}

fn secs(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

#[test]
fn a_register_for_another_aor_is_forbidden_with_the_verified_binding() {
    let core = core();
    let mut rng = rng();
    let mut c = NtlmClient::new("alice", "alice-pw", "0a0b0c0d0e");
    established(&c.sign_in(&core, t0(), &mut rng));
    // bob's AOR, and AORs that start like alice's but are others to the registrar, which reads
    // the user part up to the last `@` (RFC 3261's grammar): `alice@example.com;n=1` at
    // example.com. Before, the core cut the URI at its first `;`, saw alice's own AOR, and one
    // account filed bindings under as many new AORs as it liked.
    for (to, extra) in [
        (
            "To: <sip:bob@",
            &["Contact: <sip:alice@198.51.100.7:50000;transport=tls>"][..],
        ),
        ("To: <sip:bob@", &["Contact: *", "Expires: 0"][..]),
        (
            "To: <sip:alice@example.com;n=1@",
            &["Contact: <sip:alice@198.51.100.7:50000;transport=tls>"][..],
        ),
        (
            "To: <sip:alice@example.com;user=phone;n=2@",
            &["Contact: <sip:alice@198.51.100.7:50000;transport=tls>"][..],
        ),
    ] {
        let text = c.request("REGISTER", extra).replace("To: <sip:alice@", to);
        let m = c.signed(&text, &mut rng);
        let Decision::Forbidden(f) = core.on_request(&m, &ctx(), t0(), &mut rng) else {
            panic!("a REGISTER with {to}… passed");
        };
        assert_eq!((f.status, f.reason), (403, Reason::ForeignAor));
        assert_eq!(f.verified.identity, "sip:alice@example.com");
        // The refusal is signed with alice's SA, which her client verifies.
        let mut r = response_to(&m, 403, "Forbidden", &[]);
        core.finish_response(&mut r, &f.verified, t0(), &mut rng)
            .expect("signed");
        c.verify_server_signature(&r).expect("alice verifies it");
    }
    // Her own AOR (in any case, sips: or with parameters) is fine.
    let text = c.request("REGISTER", &[]).replace(
        "To: <sip:alice@example.com>",
        "To: <sips:Alice@Example.com;x=1>",
    );
    let m = c.signed(&text, &mut rng);
    established(&core.on_request(&m, &ctx(), t0(), &mut rng));
    assert_eq!(core.counters().snapshot().forbidden, 4);
}

#[test]
fn a_digest_register_for_another_aor_is_forbidden() {
    let core = core();
    let mut rng = rng();
    let reg = |to: &str| {
        parse(&format!(
            "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/TLS h;branch=z9hG4bK{to}\r\nFrom: <sip:alice@example.com>;tag=1\r\nTo: <sip:{to}@example.com>\r\nCall-ID: d-{to}\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n"
        ))
    };
    let first = reg("bob");
    let Decision::Challenge(ch) = core.on_request(&first, &ctx(), t0(), &mut rng) else {
        panic!("challenged");
    };
    let m = digest_answer(&first, &ch, "alice", "alice-pw");
    match core.on_request(&m, &ctx(), t0(), &mut rng) {
        Decision::Forbidden(f) => {
            assert_eq!(f.reason, Reason::ForeignAor);
            assert!(matches!(f.verified.binding, Binding::Digest { .. }));
        }
        other => panic!("expected 403, got {other:?}"),
    }
}

/// Answers the first SHA-256 Digest challenge of `ch` for `user` (`uri` sip:example.com).
fn digest_answer(req: &Message, ch: &sagw_auth::Challenge, user: &str, pw: &str) -> Message {
    use sagw_digest::client::{Challenge as DigestChallenge, authorize, parse_header};
    let value = ch
        .headers
        .iter()
        .find(|(n, v)| *n == "WWW-Authenticate" && v.contains("SHA-256"))
        .map(|(_, v)| v.clone())
        .expect("a SHA-256 challenge");
    let p = parse_header(&value).expect("challenge parses");
    let dc = DigestChallenge::from_params(p.pairs()).expect("challenge params");
    let ha1 = sagw_digest::Ha1::compute(dc.algorithm.base(), user, dc.realm, pw);
    let auth = authorize(&dc, user, &ha1, "REGISTER", "sip:example.com", "c0ffee", 1)
        .expect("authorize")
        .header_value();
    let mut m = req.clone();
    m.push_header("Authorization", &auth);
    m
}

use sagw_sip::Message;

#[test]
fn signing_for_a_client_does_not_extend_its_sa() {
    let core = core();
    let mut rng = rng();
    let mut c = NtlmClient::new("alice", "alice-pw", "0a0b0c0d0e");
    let a = established(&c.sign_in(&core, t0(), &mut rng));
    let before = sa_expiry(&core, "0a0b0c0d0e");
    let Binding::Sa { sa, .. } = &a.binding else {
        panic!("SA");
    };
    let later = t0() + Duration::from_secs(600);
    let text = "MESSAGE sip:alice@198.51.100.7 SIP/2.0\r\nVia: SIP/2.0/TLS gw;branch=z9hG4bKx\r\nFrom: <sip:bob@example.com>;tag=b\r\nTo: <sip:alice@example.com>;epid=0a0b0c0d0e\r\nCall-ID: chosen\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n";
    let mut m = parse(text);
    core.sign(&mut m, sa, ChallengeFamily::Www, later, &mut rng)
        .expect("signed");
    assert_eq!(sa_expiry(&core, "0a0b0c0d0e"), before);
    // The client's own signed request does.
    let text = c.request("MESSAGE", &[]);
    let m = c.signed(&text, &mut rng);
    established(&core.on_request(&m, &ctx(), later, &mut rng));
    assert_eq!(sa_expiry(&core, "0a0b0c0d0e"), secs(later) + 900);
}

#[test]
fn a_refusal_before_verification_carries_no_sa() {
    let core = core_with(config());
    let mut rng = rng();
    let mut bob = NtlmClient::new("bob", "bob-pw", "bbbbbbbbbb");
    established(&bob.sign_in(&core, t0(), &mut rng));
    // First legs naming bob's endpoint: challenged, never answered with anything bob's SA signs.
    let mut mallory = NtlmClient::new("bob", "whatever", "bbbbbbbbbb");
    let _ = core.on_request(&mallory.leg1("REGISTER"), &ctx(), t0(), &mut rng);
    match core.on_request(&mallory.leg1("REGISTER"), &ctx(), t0(), &mut rng) {
        // `Reject` has no binding to sign with: the type leaves the stage nothing to sign.
        Decision::Reject { .. } | Decision::Continue(_) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_granted_registration_not_the_asked_one_sets_the_idle_life() {
    let core = core();
    let mut rng = rng();
    let mut c = NtlmClient::new("alice", "alice-pw", "0a0b0c0d0e");
    established(&c.sign_in(&core, t0(), &mut rng));
    let text = c.request("REGISTER", &["Expires: 28000"]);
    let m = c.signed(&text, &mut rng);
    let a = established(&core.on_request(&m, &ctx(), t0(), &mut rng));
    assert_eq!(
        sa_expiry(&core, "0a0b0c0d0e"),
        secs(t0()) + 900,
        "asking changes nothing"
    );
    core.register_granted(&a, 3600, t0());
    assert_eq!(sa_expiry(&core, "0a0b0c0d0e"), secs(t0()) + 3630);
}

#[test]
fn an_identity_holds_at_most_its_cap_of_sas_the_least_recently_used_goes() {
    let mut cfg = config();
    cfg.max_sas_per_identity = 3;
    let core = core_with(cfg);
    let mut rng = rng();
    let mut clients: Vec<NtlmClient> = (0..3)
        .map(|i| NtlmClient::new("alice", "alice-pw", &format!("e{i}")))
        .collect();
    for (i, c) in clients.iter_mut().enumerate() {
        established(&c.sign_in(&core, t0() + Duration::from_secs(i as u64), &mut rng));
    }
    // e0 stays busy, so e1 is the least recently used.
    let text = clients[0].request("MESSAGE", &[]);
    let m = clients[0].signed(&text, &mut rng);
    established(&core.on_request(&m, &ctx(), t0() + Duration::from_secs(60), &mut rng));
    let mut d = NtlmClient::new("alice", "alice-pw", "e3");
    let a = established(&d.sign_in(&core, t0() + Duration::from_secs(61), &mut rng));
    assert_eq!(a.evicted.len(), 1);
    let left: Vec<String> = core.sas().list().into_iter().map(|i| i.epid).collect();
    assert_eq!(left.len(), 3);
    assert!(!left.contains(&"e1".to_owned()), "{left:?}");
    assert_eq!(core.counters().snapshot().sa_evicted_identity_cap, 1);
    // Another identity is not affected by alice's cap.
    let mut b = NtlmClient::new("bob", "bob-pw", "b0");
    assert!(
        established(&b.sign_in(&core, t0(), &mut rng))
            .evicted
            .is_empty()
    );
    assert_eq!(core.sas().len(), 4);
}

#[test]
fn an_overlong_epid_is_refused_before_any_state() {
    let core = core();
    let mut rng = rng();
    let mut c = NtlmClient::new("alice", "alice-pw", &"a".repeat(65));
    let d = core.on_request(&c.leg1("REGISTER"), &ctx(), t0(), &mut rng);
    assert!(
        matches!(
            d,
            Decision::Reject {
                status: 400,
                reason: Reason::EpidTooLong,
                ..
            }
        ),
        "{d:?}"
    );
    assert_eq!((core.sas().len(), core.sas().recent_final_legs()), (0, 0));
    assert_eq!(core.counters().snapshot().epid_refused, 1);
    let mut ok = NtlmClient::new("alice", "alice-pw", &"a".repeat(64));
    established(&ok.sign_in(&core, t0(), &mut rng));
}

/// An account whose credentials give it a `sip` identity is revoked, by its account name, under
/// that identity (before: under the default `sip:<account>@…`, so none of its SAs).
#[test]
fn revoking_an_account_uses_the_identity_it_signs_in_as() {
    let mut store = store();
    store.add_password("carol", "carol-pw", &[]);
    store
        .set_sip_identity("carol", "sip:caroline@example.com")
        .expect("identity");
    let core = sagw_auth::SecurityCore::new(config(), std::sync::Arc::new(store));
    let mut rng = rng();
    let mut carol = NtlmClient::new("carol", "carol-pw", "c0");
    let _ = carol.sign_in(&core, t0(), &mut rng);
    assert_eq!(core.sas().len(), 1, "carol's SA");
    assert_eq!(core.revoke_account("carol"), 1);
    assert_eq!(core.sas().len(), 0);
}

#[test]
fn revoking_a_user_ends_all_of_its_sas_and_only_its() {
    let core = core();
    let mut rng = rng();
    for i in 0..3 {
        established(
            &NtlmClient::new("alice", "alice-pw", &format!("a{i}")).sign_in(&core, t0(), &mut rng),
        );
    }
    let mut bob = NtlmClient::new("bob", "bob-pw", "b0");
    established(&bob.sign_in(&core, t0(), &mut rng));
    assert_eq!(core.revoke_user("ALICE", None), 3);
    assert_eq!(core.sas().len(), 1);
    assert_eq!(core.revoke_user("alice", None), 0);
    assert_eq!(core.revoke_user("bob", Some("sip:robert@example.com")), 0);
    assert_eq!(core.counters().snapshot().sa_revoked, 3);
    // bob goes on.
    let text = bob.request("MESSAGE", &[]);
    let m = bob.signed(&text, &mut rng);
    established(&core.on_request(&m, &ctx(), t0(), &mut rng));
}

/// A dialog's address is lent to the callee (`lends_dialog_address`) only when it is no other
/// store user's identity, in any spelling a registrar would map to that user: the exact text of
/// an identity with a port, its escapes, the user at another host of the registrar's (its
/// address, an alias: stock Kamailio looks up the user part alone), a `tel:` number that is a
/// user's. The callee's own addresses and numbers nobody owns are lent.
#[test]
fn no_store_users_identity_is_lent_in_any_spelling() {
    let mut store = store();
    let realms = [(DIGEST_REALM, sagw_digest::Algorithm::Md5)];
    for (user, identity) in [
        ("carol", "sip:carol@pbx.example.com:5080"),
        ("dave", "sip:+4930999@example.com"),
        // Two branches' extension 100: erin's, and frank's at another PBX.
        ("erin", "sip:100@branch-a.example.com"),
        ("frank", "sips:100@pbx-b.example.com:5061"),
    ] {
        store.add_password(user, "pw", &realms);
        store
            .set_sip_identity(user, identity)
            .expect("valid identity");
    }
    // An account named as a number with separators, without a `sip` line.
    store.add_password("555-1234", "pw", &realms);
    let core = sagw_auth::SecurityCore::new(config(), std::sync::Arc::new(store));
    // Erin's own extension at another host is someone else's too: frank's.
    let erin = "sip:100@branch-a.example.com";
    for franks in ["sip:100@pbx-b.example.com", "sip:100@10.0.0.5:5060"] {
        assert!(
            !core.lends_dialog_address(franks, erin, Some(franks)),
            "{franks} may be frank's"
        );
    }
    let alice = "sip:alice@example.com";
    let lent = |address: &str| core.lends_dialog_address(address, alice, Some(address));
    for owned in [
        "sip:bob@example.com",
        "sips:bob@example.com",
        "sip:bob@192.0.2.10",
        "sip:b%6Fb@192.0.2.10:5060",
        "sip:carol@pbx.example.com:5080",
        "sip:c%61rol@pbx.example.com:5080",
        "sip:carol@pbx.example.com",
        "tel:+4930999",
        "tel:+49-30-999",
        // Kamailio reads a `tels:` URI's number as it does a `tel:` one's.
        "tels:+4930999",
        "TELS:+49-30-999",
        "tel:+49.(30).999;phone-context=example.com",
        "sip:+4930999@192.0.2.10;user=phone",
        "sip:+49-30-999@192.0.2.10;user=phone",
        "sip:5551234@192.0.2.10",
        "sip:555%2D1234@example.com:5060",
        "tel:555-1234",
        // Read by Kamailio as bob at its first `@`.
        "sip:bob@example.com@evil.example",
    ] {
        assert!(!lent(owned), "{owned} is someone's");
    }
    for free in [
        "sip:alice@10.0.0.5:5060",
        "sip:+4930123456@example.com",
        "tel:+4930123456",
        "sip:sales@example.com",
        // An escaped `@` is read alike by every parser: `alice@corp.com` is nobody's here.
        "sip:alice%40corp.com@sbc.example.com",
    ] {
        assert!(lent(free), "{free} is nobody else's");
    }
    // The From must be the address lent.
    assert!(!core.lends_dialog_address(
        "sip:sales@example.com",
        alice,
        Some("sip:support@example.com")
    ));
}
