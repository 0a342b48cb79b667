//! NTLM security associations through the core, against an independent client: handshake, signing
//! both ways, tampering, replay, expiry, endpoint binding, identity, ACK/CANCEL, pending floods.

mod support;

use std::time::Duration;

use sagw_auth::{
    Binding, ChallengeFamily, Decision, MAX_SA_LIFETIME, Reason, ResponseVerdict, Scheme,
    SignatureHeader,
};
use support::*;

fn established(d: &Decision) -> sagw_auth::Authenticated {
    match d {
        Decision::Authenticated(a) => a.clone(),
        other => panic!("expected an authenticated decision, got {other:?}"),
    }
}

fn cause(d: &Decision) -> Option<Reason> {
    match d {
        Decision::Challenge(c) => c.cause,
        other => panic!("expected a challenge, got {other:?}"),
    }
}

#[test]
fn first_request_gets_one_challenge_per_scheme_with_date() {
    let core = core();
    let mut rng = rng();
    let mut c = NtlmClient::new("alice", "alice-pw", "01010101");
    let register = parse(&c.request("REGISTER", &[]));
    let Decision::Challenge(ch) = core.on_request(&register, &ctx(), t0(), &mut rng) else {
        panic!("expected a challenge");
    };
    assert_eq!(ch.status, 401, "REGISTER is challenged with 401 by default");
    assert_eq!(ch.cause, None);
    let names: Vec<_> = ch.headers.iter().map(|(n, _)| *n).collect();
    assert_eq!(names[0], "Date");
    assert!(names[1..].iter().all(|n| *n == "WWW-Authenticate"));
    let schemes: Vec<_> = ch.headers[1..]
        .iter()
        .map(|(_, v)| v.split(' ').next().unwrap_or(""))
        .collect();
    assert_eq!(schemes, ["NTLM", "Digest", "Digest"]);
    assert_eq!(
        ch.headers[1].1,
        "NTLM qop=\"auth\", realm=\"SIP Communications Service\", targetname=\"gw.example.com\", version=4"
    );

    let invite = parse(&c.request("INVITE", &[]));
    let Decision::Challenge(ch) = core.on_request(&invite, &ctx(), t0(), &mut rng) else {
        panic!("expected a challenge");
    };
    assert_eq!(ch.status, 407, "other requests get 407 at a proxy");
    assert!(
        ch.headers[1..]
            .iter()
            .all(|(n, _)| *n == "Proxy-Authenticate")
    );
}

#[test]
fn ack_and_cancel_are_never_challenged() {
    let core = core();
    let mut rng = rng();
    let mut c = NtlmClient::new("alice", "alice-pw", "01010101");
    for method in ["ACK", "CANCEL"] {
        let m = parse(&c.request(method, &[]));
        assert!(matches!(
            core.on_request(&m, &ctx(), t0(), &mut rng),
            Decision::Discard(Reason::NoCredentials)
        ));
    }
    // With an SA but a broken signature: still dropped, never challenged.
    established(&c.sign_in(&core, t0(), &mut rng));
    let text = c.request("ACK", &[]);
    let mut m = c.signed(&text, &mut rng);
    let v = m
        .header("Authorization")
        .expect("auth")
        .replace("response=\"01", "response=\"02");
    m.set_header("Authorization", &v);
    assert!(matches!(
        core.on_request(&m, &ctx(), t0(), &mut rng),
        Decision::Discard(Reason::BadSignature)
    ));
    assert_eq!(core.counters().snapshot().discarded, 3);
}

#[test]
fn sign_in_then_signed_messages_both_ways() {
    let core = core();
    let mut rng = rng();
    let mut c = NtlmClient::new("alice", "alice-pw", "0a0b0c0d0e");
    let auth = established(&c.sign_in(&core, t0(), &mut rng));
    assert_eq!(auth.identity, "sip:alice@example.com");
    let Binding::Sa {
        sa,
        family,
        established_now,
    } = &auth.binding
    else {
        panic!("SA binding");
    };
    assert!(*established_now);
    assert_eq!(*family, ChallengeFamily::Www);
    assert_eq!(sa.epid(), "0a0b0c0d0e");
    assert_eq!(sa.opaque().to_string().len(), 8);

    // The final response of the handshake, signed by the core, verifies at the client.
    let text = c.request("REGISTER", &[]);
    let req = parse(&text);
    let mut ok = response_to(&req, 200, "OK", &["Expires: 3600"]);
    core.finish_response(&mut ok, &auth, t0(), &mut rng)
        .expect("sign");
    c.verify_server_signature(&ok)
        .expect("server signature verifies");
    let info = ok
        .header("Authentication-Info")
        .expect("signed into Authentication-Info");
    for p in [
        "rspauth=\"",
        "srand=\"",
        "snum=\"1\"",
        "opaque=\"",
        "qop=\"auth\"",
        "targetname=\"gw.example.com\"",
        "realm=\"SIP Communications Service\"",
    ] {
        assert!(info.contains(p), "{p} missing in {info}");
    }

    // Later requests are verified; each response carries the next snum.
    for i in 0..5u32 {
        let text = c.request("MESSAGE", &[]);
        let m = c.signed(&text, &mut rng);
        let a = established(&core.on_request(&m, &ctx(), t0(), &mut rng));
        assert!(matches!(
            a.binding,
            Binding::Sa {
                established_now: false,
                ..
            }
        ));
        let mut resp = response_to(&m, 200, "OK", &[]);
        core.finish_response(&mut resp, &a, t0(), &mut rng)
            .expect("sign");
        c.verify_server_signature(&resp).expect("verifies");
        let snum = format!("snum=\"{}\"", i + 2);
        assert!(
            resp.header("Authentication-Info")
                .unwrap_or("")
                .contains(&snum)
        );
    }
    let snap = core.counters().snapshot();
    assert_eq!(
        snap.scheme(Scheme::Ntlm).verified,
        6,
        "leg 3 (v4) + 5 requests"
    );
    assert_eq!(snap.scheme(Scheme::Ntlm).signed, 6);
}

#[test]
fn a_flipped_bit_in_any_signed_header_value_fails() {
    let core = core();
    let mut rng = rng();
    let mut c = NtlmClient::new("alice", "alice-pw", "0a0b0c0d0e");
    established(&c.sign_in(&core, t0(), &mut rng));
    // (header, original fragment, tampered fragment): every slot of the buffer.
    let cases: &[(&str, &str, &str)] = &[
        ("Call-ID", "call-alice", "call-alicf"),
        ("CSeq", "CSeq: ", "CSeq: 1"),
        ("From", "tag=t", "tag=u"),
        ("From", "sip:alice@", "sip:alicf@"),
        ("To", "sip:carol@", "sip:carom@"),
        ("Expires", "60", "61"),
        ("P-Asserted-Identity", "sip:alice@", "sip:alicf@"),
        ("P-Asserted-Identity", "tel:+1555", "tel:+1556"),
    ];
    for (header, from, to) in cases {
        let text = c.request(
            "MESSAGE",
            &[
                "Expires: 60",
                "P-Asserted-Identity: <sip:alice@example.com>, <tel:+15551234>",
            ],
        );
        let mut m = c.signed(&text, &mut rng);
        if *header == "CSeq" {
            // CSeq's number is a slot; prefix a digit.
            let v = m.header("CSeq").expect("cseq").to_owned();
            m.set_header("CSeq", &format!("1{v}"));
            let _ = (from, to);
        } else {
            let v = m.header(header).expect("header present").to_owned();
            assert!(v.contains(from), "{header}: {v}");
            m.set_header(header, &v.replacen(from, to, 1));
        }
        let d = core.on_request(&m, &ctx(), t0(), &mut rng);
        match d {
            Decision::Challenge(c) => assert_eq!(c.cause, Some(Reason::BadSignature), "{header}"),
            // A tampered From user is also a different identity; either way it must not pass.
            Decision::Forbidden(f) if f.status == 403 => assert_eq!(*header, "From"),
            other => panic!("{header} tampered but accepted: {other:?}"),
        }
    }
    // The untampered message still passes (the window was not burnt by forgeries).
    let text = c.request("MESSAGE", &[]);
    let m = c.signed(&text, &mut rng);
    established(&core.on_request(&m, &ctx(), t0(), &mut rng));
}

#[test]
fn a_flipped_bit_in_the_signature_fails_and_hex_case_does_not_matter() {
    let core = core();
    let mut rng = rng();
    let mut c = NtlmClient::new("alice", "alice-pw", "0a0b0c0d0e");
    established(&c.sign_in(&core, t0(), &mut rng));
    let text = c.request("OPTIONS", &[]);
    let m = c.signed(&text, &mut rng);
    let v = m.header("Authorization").expect("auth").to_owned();
    let resp_at = v.find("response=\"").expect("response") + 10;
    let sig = &v[resp_at..resp_at + 32];
    let mut flipped = sig.as_bytes().to_vec();
    flipped[10] = if flipped[10] == b'0' { b'1' } else { b'0' };
    let mut bad = m.clone();
    bad.set_header(
        "Authorization",
        &v.replace(sig, std::str::from_utf8(&flipped).expect("hex")),
    );
    assert_eq!(
        cause(&core.on_request(&bad, &ctx(), t0(), &mut rng)),
        Some(Reason::BadSignature)
    );
    let mut upper = m.clone();
    upper.set_header("Authorization", &v.replace(sig, &sig.to_uppercase()));
    established(&core.on_request(&upper, &ctx(), t0(), &mut rng));
}

#[test]
fn replayed_and_too_old_cnums_are_refused() {
    let core = core();
    let mut rng = rng();
    let mut c = NtlmClient::new("alice", "alice-pw", "0a0b0c0d0e");
    established(&c.sign_in(&core, t0(), &mut rng));
    let text = c.request("MESSAGE", &[]);
    let m = c.signed(&text, &mut rng);
    established(&core.on_request(&m, &ctx(), t0(), &mut rng));
    assert_eq!(
        cause(&core.on_request(&m, &ctx(), t0(), &mut rng)),
        Some(Reason::Replay)
    );

    // Sign one message now, then 300 more: the old one falls out of the 256-wide window.
    let old_text = c.request("MESSAGE", &[]);
    let old = c.signed(&old_text, &mut rng);
    // An out-of-order message inside the window is fine.
    let mid_text = c.request("MESSAGE", &[]);
    let mid = c.signed(&mid_text, &mut rng);
    let text = c.request("MESSAGE", &[]);
    let newer = c.signed(&text, &mut rng);
    established(&core.on_request(&newer, &ctx(), t0(), &mut rng));
    established(&core.on_request(&mid, &ctx(), t0(), &mut rng));
    c.cnum += 300;
    let text = c.request("MESSAGE", &[]);
    let far = c.signed(&text, &mut rng);
    established(&core.on_request(&far, &ctx(), t0(), &mut rng));
    assert_eq!(
        cause(&core.on_request(&old, &ctx(), t0(), &mut rng)),
        Some(Reason::OutsideWindow)
    );
    let snap = core.counters().snapshot();
    assert_eq!(snap.verify_failures(Scheme::Ntlm, Reason::Replay), 1);
    assert_eq!(snap.verify_failures(Scheme::Ntlm, Reason::OutsideWindow), 1);
}

#[test]
fn an_sa_dies_at_exactly_eight_hours_however_active() {
    let mut cfg = config();
    cfg.sa_lifetime = Duration::from_secs(24 * 3600); // asked for more: clamped to 8 h
    cfg.sa_idle_ttl = Duration::from_secs(3600);
    let core = core_with(cfg);
    let mut rng = rng();
    let mut c = NtlmClient::new("alice", "alice-pw", "0a0b0c0d0e");
    established(&c.sign_in(&core, t0(), &mut rng));
    // Active every 30 minutes up to one second before the 8-hour mark.
    let mut t = t0();
    let last = t0() + MAX_SA_LIFETIME - Duration::from_secs(1);
    while t < last {
        t = (t + Duration::from_secs(1800)).min(last);
        let text = c.request("MESSAGE", &[]);
        let m = c.signed(&text, &mut rng);
        established(&core.on_request(&m, &ctx(), t, &mut rng));
    }
    let text = c.request("MESSAGE", &[]);
    let m = c.signed(&text, &mut rng);
    let at_8h = t0() + MAX_SA_LIFETIME;
    assert_eq!(
        cause(&core.on_request(&m, &ctx(), at_8h, &mut rng)),
        Some(Reason::ExpiredSa)
    );
    // The SA is gone: the next attempt is simply unknown, and signing with it is refused.
    assert_eq!(
        cause(&core.on_request(&m, &ctx(), at_8h, &mut rng)),
        Some(Reason::UnknownSa)
    );
    assert_eq!(core.counters().snapshot().sa_expired_lifetime, 1);
}

#[test]
fn an_idle_sa_expires_and_signed_traffic_keeps_it_alive() {
    let core = core(); // idle TTL 15 minutes
    let mut rng = rng();
    let mut c = NtlmClient::new("alice", "alice-pw", "0a0b0c0d0e");
    established(&c.sign_in(&core, t0(), &mut rng));
    let text = c.request("MESSAGE", &[]);
    let m = c.signed(&text, &mut rng);
    established(&core.on_request(&m, &ctx(), t0() + Duration::from_secs(600), &mut rng));
    let text = c.request("MESSAGE", &[]);
    let m = c.signed(&text, &mut rng);
    // 600 s + 15 min - 1 s: still alive thanks to the message at 600 s.
    established(&core.on_request(&m, &ctx(), t0() + Duration::from_secs(600 + 899), &mut rng));
    let text = c.request("MESSAGE", &[]);
    let m = c.signed(&text, &mut rng);
    let late = t0() + Duration::from_secs(600 + 899 + 900);
    assert_eq!(
        cause(&core.on_request(&m, &ctx(), late, &mut rng)),
        Some(Reason::ExpiredSa)
    );
    assert_eq!(core.counters().snapshot().sa_expired_idle, 1);
}

#[test]
fn a_granted_registration_longer_than_the_idle_ttl_keeps_the_sa() {
    let core = core();
    let mut rng = rng();
    let mut c = NtlmClient::new("alice", "alice-pw", "0a0b0c0d0e");
    established(&c.sign_in(&core, t0(), &mut rng));
    let text = c.request("REGISTER", &["Expires: 3600"]);
    let m = c.signed(&text, &mut rng);
    let a = established(&core.on_request(&m, &ctx(), t0(), &mut rng));
    // The registrar's 2xx granted the hour (the gateway reads it from the response).
    core.register_granted(&a, 3600, t0());
    let text = c.request("REGISTER", &["Expires: 3600"]);
    let m = c.signed(&text, &mut rng);
    established(&core.on_request(&m, &ctx(), t0() + Duration::from_secs(3600), &mut rng));
}

#[test]
fn housekeeping_removes_expired_sas() {
    let core = core();
    let mut rng = rng();
    for i in 0..10 {
        let mut c = NtlmClient::new("alice", "alice-pw", &format!("ep{i}"));
        established(&c.sign_in(&core, t0(), &mut rng));
    }
    assert_eq!(core.sas().len(), 10);
    assert_eq!(core.expire(t0() + Duration::from_secs(60)), 0);
    assert_eq!(core.expire(t0() + Duration::from_secs(901)), 10);
    assert!(core.sas().is_empty());
}

#[test]
fn an_sa_is_bound_to_its_endpoint() {
    let core = core();
    let mut rng = rng();
    let mut c = NtlmClient::new("alice", "alice-pw", "aaaaaaaaaa");
    established(&c.sign_in(&core, t0(), &mut rng));
    let text = c
        .request("MESSAGE", &[])
        .replace("epid=aaaaaaaaaa", "epid=bbbbbbbbbb");
    let m = c.signed(&text, &mut rng);
    assert_eq!(
        cause(&core.on_request(&m, &ctx(), t0(), &mut rng)),
        Some(Reason::SaMismatch)
    );
}

#[test]
fn a_user_cannot_speak_as_another() {
    let core = core();
    let mut rng = rng();
    let mut c = NtlmClient::new("alice", "alice-pw", "aaaaaaaaaa");
    established(&c.sign_in(&core, t0(), &mut rng));
    let text = c
        .request("MESSAGE", &[])
        .replace("From: <sip:alice@", "From: <sip:bob@");
    let m = c.signed(&text, &mut rng);
    // Refused, with the SA that verified the request (alice's) to sign the refusal.
    match core.on_request(&m, &ctx(), t0(), &mut rng) {
        Decision::Forbidden(f) => {
            assert_eq!(f.status, 403);
            assert_eq!(f.verified.identity, "sip:alice@example.com");
        }
        other => panic!("expected 403, got {other:?}"),
    }
}

#[test]
fn a_new_handshake_from_the_same_endpoint_replaces_its_sa() {
    let core = core();
    let mut rng = rng();
    let mut first = NtlmClient::new("alice", "alice-pw", "aaaaaaaaaa");
    established(&first.sign_in(&core, t0(), &mut rng));
    let mut second = NtlmClient::new("alice", "alice-pw", "aaaaaaaaaa");
    established(&second.sign_in(&core, t0(), &mut rng));
    assert_eq!(core.sas().len(), 1);
    let text = first.request("MESSAGE", &[]);
    let m = first.signed(&text, &mut rng);
    assert_eq!(
        cause(&core.on_request(&m, &ctx(), t0(), &mut rng)),
        Some(Reason::UnknownSa)
    );
    let text = second.request("MESSAGE", &[]);
    let m = second.signed(&text, &mut rng);
    established(&core.on_request(&m, &ctx(), t0(), &mut rng));
    // Another user with the same epid does not displace alice.
    let mut bob = NtlmClient::new("bob", "bob-pw", "aaaaaaaaaa");
    established(&bob.sign_in(&core, t0(), &mut rng));
    assert_eq!(core.sas().len(), 2);
    assert_eq!(core.counters().snapshot().sa_replaced, 1);
}

/// The response to a request verified with an SA that a new handshake of the same endpoint
/// replaced before the answer came (an INVITE ringing when Lync signs in again, about every 8
/// hours, or after a 401 to its REGISTER) is signed with the SA that replaced it: the one the
/// client holds now. Before, the response went out unsigned, and the client dropped it.
#[test]
fn a_response_after_the_endpoints_sa_was_replaced_is_signed_with_the_new_one() {
    let core = core();
    let mut rng = rng();
    let mut first = NtlmClient::new("alice", "alice-pw", "aaaaaaaaaa");
    established(&first.sign_in(&core, t0(), &mut rng));
    let text = first.request("INVITE", &[]);
    let invite = first.signed(&text, &mut rng);
    let auth = established(&core.on_request(&invite, &ctx(), t0(), &mut rng));

    let mut second = NtlmClient::new("alice", "alice-pw", "aaaaaaaaaa");
    established(&second.sign_in(&core, t0(), &mut rng));
    let mut ok = response_to(&invite, 200, "OK", &[]);
    core.finish_response(&mut ok, &auth, t0(), &mut rng)
        .expect("signed");
    second
        .verify_server_signature(&ok)
        .expect("signed with the SA alice holds now");
    assert!(first.verify_server_signature(&ok).is_err());

    // Revoked with nothing in its place (signed out, user removed): unsigned, as before.
    let text = second.request("MESSAGE", &[]);
    let m = second.signed(&text, &mut rng);
    let auth = established(&core.on_request(&m, &ctx(), t0(), &mut rng));
    let sa = core
        .sa_for_endpoint("sip:alice@example.com", "aaaaaaaaaa", t0())
        .expect("live");
    assert!(core.sas().revoke(sa.opaque(), core.counters()));
    let mut ok = response_to(&m, 200, "OK", &[]);
    assert!(
        core.finish_response(&mut ok, &auth, t0(), &mut rng)
            .is_err()
    );
}

#[test]
fn an_unsigned_request_after_the_sa_is_challenged() {
    let core = core();
    let mut rng = rng();
    let mut c = NtlmClient::new("alice", "alice-pw", "aaaaaaaaaa");
    established(&c.sign_in(&core, t0(), &mut rng));
    let m = parse(&c.request("MESSAGE", &[]));
    assert_eq!(cause(&core.on_request(&m, &ctx(), t0(), &mut rng)), None);
    // Credentials naming the SA but without a signature.
    let text = c.request("MESSAGE", &[]);
    let mut m = parse(&text);
    m.push_header(
        "Authorization",
        &format!(
            "NTLM qop=\"auth\", realm=\"{REALM}\", opaque=\"{}\", targetname=\"{TARGET}\"",
            c.opaque.as_deref().expect("opaque")
        ),
    );
    assert_eq!(
        cause(&core.on_request(&m, &ctx(), t0(), &mut rng)),
        Some(Reason::Unsigned)
    );
}

#[test]
fn wrong_password_and_unknown_user_fail_the_handshake() {
    let core = core();
    let mut rng = rng();
    let mut c = NtlmClient::new("alice", "wrong", "aaaaaaaaaa");
    assert_eq!(
        cause(&c.sign_in(&core, t0(), &mut rng)),
        Some(Reason::WrongPassword)
    );
    let mut c = NtlmClient::new("mallory", "x", "aaaaaaaaaa");
    assert_eq!(
        cause(&c.sign_in(&core, t0(), &mut rng)),
        Some(Reason::UnknownUser)
    );
    assert!(core.sas().is_empty());
    let snap = core.counters().snapshot();
    assert_eq!(
        snap.handshake_failures(Scheme::Ntlm, Reason::WrongPassword),
        1
    );
    assert_eq!(
        snap.handshake_failures(Scheme::Ntlm, Reason::UnknownUser),
        1
    );
}

#[test]
fn a_final_leg_is_taken_once() {
    let core = core();
    let mut rng = rng();
    let mut c = NtlmClient::new("alice", "alice-pw", "aaaaaaaaaa");
    let leg1 = c.leg1("REGISTER");
    let Decision::Continue(ch) = core.on_request(&leg1, &ctx(), t0(), &mut rng) else {
        panic!("leg 2");
    };
    let leg3 = c.leg3("REGISTER", &ch, t0(), &mut rng);
    established(&core.on_request(&leg3, &ctx(), t0(), &mut rng));
    assert_eq!(
        cause(&core.on_request(&leg3, &ctx(), t0(), &mut rng)),
        Some(Reason::ReplayedToken)
    );
}

#[test]
fn a_handshake_times_out_after_its_window_and_the_next() {
    let core = core();
    let mut rng = rng();
    let mut c = NtlmClient::new("alice", "alice-pw", "aaaaaaaaaa");
    let leg1 = c.leg1("REGISTER");
    let Decision::Continue(ch) = core.on_request(&leg1, &ctx(), t0(), &mut rng) else {
        panic!("leg 2");
    };
    // t0 starts a 30 s window: the final leg is taken until the next one ends.
    let later = t0() + Duration::from_secs(60);
    let leg3 = c.leg3("REGISTER", &ch, later, &mut rng);
    assert_eq!(
        cause(&core.on_request(&leg3, &ctx(), later, &mut rng)),
        Some(Reason::UnknownHandshake)
    );
}

/// A gateway set to version 3 takes a version-3 client's unsigned final leg; one at version 4
/// (the default) refuses it: an unsigned AUTHENTICATE may be relayed (tests/auth_e2e.rs,
/// `an_ntlm_sign_in_relayed_from_another_service_is_refused`).
#[test]
fn version_3_clients_sign_from_the_next_request() {
    let mut rng = rng();
    let mut c = NtlmClient::new("alice", "alice-pw", "aaaaaaaaaa");
    c.version = 3;
    let d = c.sign_in(&core(), t0(), &mut rng);
    assert!(
        matches!(&d, Decision::Challenge(ch) if ch.cause == Some(Reason::Unsigned)),
        "{d:?}"
    );
    let mut cfg = config();
    cfg.version = 3;
    let core = core_with(cfg);
    let a = established(&c.sign_in(&core, t0(), &mut rng));
    assert_eq!(a.binding_sa_version(), 3);
    let text = c.request("MESSAGE", &[]);
    let m = c.signed(&text, &mut rng);
    established(&core.on_request(&m, &ctx(), t0(), &mut rng));
}

trait SaVersion {
    fn binding_sa_version(&self) -> u8;
}
impl SaVersion for sagw_auth::Authenticated {
    fn binding_sa_version(&self) -> u8 {
        match &self.binding {
            Binding::Sa { sa, .. } => sa.version(),
            Binding::Digest { .. } => 0,
        }
    }
}

#[test]
fn clients_that_read_proxy_authentication_info_can_be_configured() {
    let mut cfg = config();
    cfg.signature_header = SignatureHeader::FollowClient;
    let core = core_with(cfg);
    let mut rng = rng();
    let mut c = NtlmClient::new("alice", "alice-pw", "aaaaaaaaaa");
    c.header = "Proxy-Authorization";
    let a = established(&c.sign_in(&core, t0(), &mut rng));
    let req = parse(&c.request("REGISTER", &[]));
    let mut ok = response_to(&req, 200, "OK", &[]);
    core.finish_response(&mut ok, &a, t0(), &mut rng)
        .expect("sign");
    assert!(ok.header("Authentication-Info").is_none());
    assert!(ok.header("Proxy-Authentication-Info").is_some());
    c.verify_server_signature(&ok).expect("verifies");

    // The default stays Authentication-Info even for a Proxy-Authorization client.
    let core = support::core();
    let mut c = NtlmClient::new("alice", "alice-pw", "aaaaaaaaaa");
    c.header = "Proxy-Authorization";
    let a = established(&c.sign_in(&core, t0(), &mut rng));
    let mut ok = response_to(&req, 200, "OK", &[]);
    core.finish_response(&mut ok, &a, t0(), &mut rng)
        .expect("sign");
    assert!(ok.header("Authentication-Info").is_some());
}

#[test]
fn responses_from_the_client_are_verified() {
    let core = core();
    let mut rng = rng();
    let mut c = NtlmClient::new("alice", "alice-pw", "aaaaaaaaaa");
    established(&c.sign_in(&core, t0(), &mut rng));
    // The gateway sent alice a request (alice is in To); she answers 200 and signs it.
    let text = "SIP/2.0 200 OK\r\nVia: SIP/2.0/TLS gw.example.com;branch=z9hG4bKgw\r\nFrom: <sip:carol@example.com>;tag=c1\r\nTo: <sip:alice@example.com>;tag=a1;epid=aaaaaaaaaa\r\nCall-ID: in-1\r\nCSeq: 5 INVITE\r\nContent-Length: 0\r\n\r\n".to_owned();
    let m = c.signed(&text, &mut rng);
    assert!(matches!(
        core.on_response(&m, t0()),
        ResponseVerdict::Verified(_)
    ));
    // The same 2xx to INVITE again is alice's UAS retransmitting it until the ACK: relayed. A
    // copy changed under its cnum is not.
    assert!(matches!(
        core.on_response(&m, t0()),
        ResponseVerdict::Verified(_)
    ));
    let changed = parse(
        &String::from_utf8(m.to_bytes())
            .expect("utf8")
            .replace("tag=c1", "tag=c2"),
    );
    assert!(matches!(
        core.on_response(&changed, t0()),
        ResponseVerdict::Drop(Reason::BadSignature)
    ));
    // Any other response seen again is a replay.
    let other = c.signed(&text.replace("5 INVITE", "6 MESSAGE"), &mut rng);
    assert!(matches!(
        core.on_response(&other, t0()),
        ResponseVerdict::Verified(_)
    ));
    assert!(matches!(
        core.on_response(&other, t0()),
        ResponseVerdict::Drop(Reason::Replay)
    ));
    let m2 = c.signed(&text, &mut rng);
    let tampered = parse(
        &String::from_utf8(m2.to_bytes())
            .expect("utf8")
            .replace("in-1", "in-2"),
    );
    assert!(matches!(
        core.on_response(&tampered, t0()),
        ResponseVerdict::Drop(Reason::BadSignature)
    ));
    let unsigned = parse(&text);
    assert!(matches!(
        core.on_response(&unsigned, t0()),
        ResponseVerdict::Unsigned
    ));
    assert_eq!(core.counters().snapshot().dropped_responses, 3);
}

#[test]
fn requests_to_an_endpoint_are_signed_with_its_sa() {
    let core = core();
    let mut rng = rng();
    let mut c = NtlmClient::new("alice", "alice-pw", "aaaaaaaaaa");
    established(&c.sign_in(&core, t0(), &mut rng));
    let sa = core
        .sa_for_endpoint("sip:alice@example.com", "aaaaaaaaaa", t0())
        .expect("SA found by identity and epid");
    assert!(
        core.sa_for_endpoint("sip:alice@example.com", "bbbbbbbbbb", t0())
            .is_none()
    );
    let mut invite = parse(
        "INVITE sip:alice@198.51.100.7:50000;transport=tls SIP/2.0\r\nVia: SIP/2.0/TLS gw.example.com;branch=z9hG4bK1\r\nFrom: <sip:carol@example.com>;tag=c9\r\nTo: <sip:alice@example.com>\r\nCall-ID: in-9\r\nCSeq: 1 INVITE\r\nP-Asserted-Identity: <sip:carol@example.com>\r\nContent-Length: 0\r\n\r\n",
    );
    core.sign(&mut invite, &sa, ChallengeFamily::Www, t0(), &mut rng)
        .expect("sign");
    c.verify_server_signature(&invite)
        .expect("the client verifies the gateway's request");
}

#[test]
fn snum_strictly_increases_under_concurrent_signing() {
    let core = core();
    let mut rng = rng();
    let mut c = NtlmClient::new("alice", "alice-pw", "aaaaaaaaaa");
    let a = established(&c.sign_in(&core, t0(), &mut rng));
    let Binding::Sa { sa, .. } = &a.binding else {
        panic!()
    };
    let req = parse(&c.request("MESSAGE", &[]));
    let snums = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for seed in 0..4u64 {
            let (core, sa, req, snums) = (&core, sa, &req, &snums);
            s.spawn(move || {
                let mut rng = sagw_auth::XorShiftRng::new(seed + 1);
                for _ in 0..500 {
                    let mut r = response_to(req, 200, "OK", &[]);
                    core.sign(&mut r, sa, ChallengeFamily::Www, t0(), &mut rng)
                        .expect("sign");
                    let h = r.header("Authentication-Info").expect("signed").to_owned();
                    let at = h.find("snum=\"").expect("snum") + 6;
                    let n: u32 = h[at..]
                        .split('"')
                        .next()
                        .expect("num")
                        .parse()
                        .expect("u32");
                    snums.lock().expect("lock").push(n);
                }
            });
        }
    });
    let mut all = snums.into_inner().expect("lock");
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=2000).collect::<Vec<u32>>(),
        "every snum used exactly once"
    );
}

#[test]
fn revoked_sas_stop_at_once() {
    let core = core();
    let mut rng = rng();
    let mut c = NtlmClient::new("alice", "alice-pw", "aaaaaaaaaa");
    let a = established(&c.sign_in(&core, t0(), &mut rng));
    let Binding::Sa { sa, .. } = &a.binding else {
        panic!()
    };
    let list = core.sas().list();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].identity, "sip:alice@example.com");
    assert!(core.sas().revoke(sa.opaque(), core.counters()));
    let mut r = parse(&c.request("MESSAGE", &[]));
    assert!(
        core.sign(&mut r, sa, ChallengeFamily::Www, t0(), &mut rng)
            .is_err()
    );
    let text = c.request("MESSAGE", &[]);
    let m = c.signed(&text, &mut rng);
    assert_eq!(
        cause(&core.on_request(&m, &ctx(), t0(), &mut rng)),
        Some(Reason::UnknownSa)
    );
}

#[test]
fn a_cseq_method_that_differs_from_the_request_line_is_refused() {
    // The buffer takes the method from the request line (as pidgin-sipe does), so a request whose
    // CSeq method was changed would still verify: such a request is malformed (RFC 3261 8.1.1.7).
    let core = core();
    let mut rng = rng();
    let mut c = NtlmClient::new("alice", "alice-pw", "0a0b0c0d0e");
    established(&c.sign_in(&core, t0(), &mut rng));
    let text = c.request("MESSAGE", &[]);
    let mut m = c.signed(&text, &mut rng);
    let v = m.header("CSeq").expect("cseq").replace("MESSAGE", "INVITE");
    m.set_header("CSeq", &v);
    assert!(matches!(
        core.on_request(&m, &ctx(), t0(), &mut rng),
        Decision::Reject {
            status: 400,
            reason: Reason::MalformedHeader,
            ..
        }
    ));
}
