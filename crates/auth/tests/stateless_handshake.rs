//! The stateless NTLM handshake (issue 12, point 6): the server challenge is a keyed MAC of the
//! `opaque`, the epid and a 30 s window, recomputed at the final leg. What must still be refused:
//! a final leg after its window and the next, a replayed final leg, a final leg for an `opaque`
//! the gateway never issued, and a challenge answered under another epid. What must work: the
//! MIC over the recomputed CHALLENGE (with MsvAvTimestamp), and a refused final leg leaves the
//! client's real handshake usable.

mod support;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sagw_auth::{Binding, Challenge, Decision, Reason, Scheme};
use sagw_ntlm::initiator::MicPolicy;
use sagw_sip::{AuthHeaderBuilder, Message};
use support::*;

fn cause(d: &Decision) -> Option<Reason> {
    match d {
        Decision::Challenge(c) => c.cause,
        Decision::Reject { reason, .. } => Some(*reason),
        _ => None,
    }
}

fn leg2(
    core: &sagw_auth::SecurityCore,
    c: &mut NtlmClient,
    at: std::time::SystemTime,
) -> Challenge {
    let mut rng = rng();
    match core.on_request(&c.leg1("REGISTER"), &ctx(), at, &mut rng) {
        Decision::Continue(ch) => ch,
        other => panic!("leg 2 expected, got {other:?}"),
    }
}

fn authenticated(d: Decision) -> sagw_auth::Authenticated {
    match d {
        Decision::Authenticated(a) => a,
        other => panic!("expected authentication, got {other:?}"),
    }
}

/// `challenge` with its `opaque` replaced.
fn with_opaque(challenge: &Challenge, opaque: &str) -> Challenge {
    let mut c = challenge.clone();
    for (name, value) in &mut c.headers {
        if *name != "Date" {
            let gssapi = challenge_param(challenge, "NTLM", "gssapi-data").expect("gssapi-data");
            *value = AuthHeaderBuilder::new("NTLM")
                .quoted("qop", "auth")
                .quoted("opaque", opaque)
                .quoted("gssapi-data", &gssapi)
                .quoted("targetname", TARGET)
                .quoted("realm", REALM)
                .token("version", "4")
                .build();
        }
    }
    c
}

#[test]
fn first_legs_store_nothing_and_each_gets_its_own_opaque_and_challenge() {
    let core = core();
    let mut c = NtlmClient::new("alice", "alice-pw", "aaaaaaaaaa");
    let a = leg2(&core, &mut c, t0());
    let b = leg2(&core, &mut c, t0());
    assert_ne!(
        challenge_param(&a, "NTLM", "opaque"),
        challenge_param(&b, "NTLM", "opaque")
    );
    assert_ne!(
        challenge_param(&a, "NTLM", "gssapi-data"),
        challenge_param(&b, "NTLM", "gssapi-data")
    );
    assert!(core.sas().is_empty());
    assert_eq!(core.sas().recent_final_legs(), 0);
    // The opaque is still 8 upper-case hex digits, as Microsoft servers send it.
    let o = challenge_param(&a, "NTLM", "opaque").expect("opaque");
    assert!(
        o.len() == 8
            && o.bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
    );
}

#[test]
fn a_final_leg_after_its_window_and_the_next_is_challenged_again() {
    let core = core();
    let mut rng = rng();
    // t0 starts a window; a challenge issued 10 s in is taken until the next window ends (t0+60).
    let issued = t0() + Duration::from_secs(10);
    let mut c = NtlmClient::new("alice", "alice-pw", "aaaaaaaaaa");
    let ch = leg2(&core, &mut c, issued);
    let late = t0() + Duration::from_secs(60);
    let leg3 = c.leg3("REGISTER", &ch, late, &mut rng);
    let d = core.on_request(&leg3, &ctx(), late, &mut rng);
    assert_eq!(cause(&d), Some(Reason::UnknownHandshake));
    let Decision::Challenge(again) = d else {
        unreachable!()
    };
    assert_eq!(again.status, 401, "a REGISTER is challenged again");
    assert!(core.sas().is_empty());
    // Much later, when the window tag comes round again, the proof fails instead.
    let much_later = t0() + Duration::from_secs(120);
    let leg3 = c.leg3("REGISTER", &ch, much_later, &mut rng);
    assert_eq!(
        cause(&core.on_request(&leg3, &ctx(), much_later, &mut rng)),
        Some(Reason::WrongPassword)
    );
    // The last second of the next window is still in time.
    let mut d = NtlmClient::new("bob", "bob-pw", "bbbbbbbbbb");
    let ch = leg2(&core, &mut d, issued);
    let just = t0() + Duration::from_secs(59);
    let leg3 = d.leg3("REGISTER", &ch, just, &mut rng);
    authenticated(core.on_request(&leg3, &ctx(), just, &mut rng));
    let snap = core.counters().snapshot();
    assert_eq!(
        snap.handshake_failures(Scheme::Ntlm, Reason::UnknownHandshake),
        1
    );
}

#[test]
fn a_replayed_final_leg_is_refused_and_leaves_the_sa_alone() {
    let core = core();
    let mut rng = rng();
    let mut c = NtlmClient::new("alice", "alice-pw", "aaaaaaaaaa");
    let ch = leg2(&core, &mut c, t0());
    let leg3 = c.leg3("REGISTER", &ch, t0(), &mut rng);
    let a = authenticated(core.on_request(&leg3, &ctx(), t0(), &mut rng));
    let Binding::Sa { sa, .. } = &a.binding else {
        panic!("an SA")
    };
    assert_eq!(core.sas().recent_final_legs(), 1);
    // The same final leg again, at once and later in its acceptance period.
    for later in [0, 20, 59] {
        let at = t0() + Duration::from_secs(later);
        assert_eq!(
            cause(&core.on_request(&leg3, &ctx(), at, &mut rng)),
            Some(Reason::ReplayedToken),
            "{later} s on"
        );
    }
    // The SA is untouched: the client's signed requests still verify, in order.
    let text = c.request("MESSAGE", &[]);
    let m = c.signed(&text, &mut rng);
    authenticated(core.on_request(&m, &ctx(), t0(), &mut rng));
    assert!(sa.is_live(1_767_603_600));

    // The endpoint signs in again (in the next window): its old SA is replaced and gone, and the
    // old final leg still cannot bring it back.
    let mut c2 = NtlmClient::new("alice", "alice-pw", "aaaaaaaaaa");
    authenticated(c2.sign_in(&core, t0() + Duration::from_secs(30), &mut rng));
    assert_eq!(core.sas().len(), 1);
    assert!(!sa.is_live(1_767_603_630), "replaced");
    let at = t0() + Duration::from_secs(40);
    assert_eq!(
        cause(&core.on_request(&leg3, &ctx(), at, &mut rng)),
        Some(Reason::ReplayedToken)
    );
    // Once its window and the next are over the entry goes, and the final leg is simply late.
    core.expire(t0() + Duration::from_secs(60));
    assert_eq!(core.sas().recent_final_legs(), 1, "the second sign-in's");
    let at = t0() + Duration::from_secs(61);
    assert_eq!(
        cause(&core.on_request(&leg3, &ctx(), at, &mut rng)),
        Some(Reason::UnknownHandshake)
    );
    let snap = core.counters().snapshot();
    assert_eq!(
        snap.handshake_failures(Scheme::Ntlm, Reason::ReplayedToken),
        4
    );
}

#[test]
fn a_final_leg_for_an_opaque_never_issued_is_refused() {
    let core = core();
    let mut rng = rng();
    let mut c = NtlmClient::new("alice", "alice-pw", "aaaaaaaaaa");
    let ch = leg2(&core, &mut c, t0());
    let issued = challenge_param(&ch, "NTLM", "opaque").expect("opaque");
    // Same window tag (top two bits), other random bits: the gateway recomputes a challenge for
    // it, which is not the one the client answered.
    let n = u32::from_str_radix(&issued, 16).expect("hex");
    let forged = format!("{:08X}", n ^ 0x0000_0001);
    let leg3 = c.leg3("REGISTER", &with_opaque(&ch, &forged), t0(), &mut rng);
    assert_eq!(
        cause(&core.on_request(&leg3, &ctx(), t0(), &mut rng)),
        Some(Reason::WrongPassword)
    );
    // Another window's tag: refused before any work.
    let forged = format!("{:08X}", n ^ 0x8000_0000);
    let leg3 = c.leg3("REGISTER", &with_opaque(&ch, &forged), t0(), &mut rng);
    assert_eq!(
        cause(&core.on_request(&leg3, &ctx(), t0(), &mut rng)),
        Some(Reason::UnknownHandshake)
    );
    // A final leg with no opaque at all.
    let leg3 = c.leg3("REGISTER", &ch, t0(), &mut rng);
    let text = String::from_utf8(leg3.to_bytes())
        .expect("utf8")
        .replace(&format!("opaque=\"{issued}\", "), "");
    assert_eq!(
        cause(&core.on_request(&parse(&text), &ctx(), t0(), &mut rng)),
        Some(Reason::MalformedHeader)
    );
    assert!(core.sas().is_empty());
    assert_eq!(
        core.sas().recent_final_legs(),
        0,
        "failures are not remembered"
    );
    // None of that burnt the real challenge.
    let leg3 = c.leg3("REGISTER", &ch, t0(), &mut rng);
    authenticated(core.on_request(&leg3, &ctx(), t0(), &mut rng));
}

#[test]
fn a_challenge_for_one_epid_does_not_verify_under_another() {
    let core = core();
    let mut rng = rng();
    let mut c = NtlmClient::new("alice", "alice-pw", "aaaaaaaaaa");
    let ch = leg2(&core, &mut c, t0());
    // The same client answers it, but its final leg comes from another endpoint.
    c.epid = "bbbbbbbbbb".into();
    let leg3 = c.leg3("REGISTER", &ch, t0(), &mut rng);
    assert_eq!(
        cause(&core.on_request(&leg3, &ctx(), t0(), &mut rng)),
        Some(Reason::WrongPassword)
    );
    // Or from no endpoint at all.
    let text = String::from_utf8(leg3.to_bytes())
        .expect("utf8")
        .replace(";epid=bbbbbbbbbb", "");
    assert_eq!(
        cause(&core.on_request(&parse(&text), &ctx(), t0(), &mut rng)),
        Some(Reason::WrongPassword)
    );
    assert!(core.sas().is_empty());
    // Under the epid it was issued for, it verifies.
    c.epid = "aaaaaaaaaa".into();
    let leg3 = c.leg3("REGISTER", &ch, t0(), &mut rng);
    let a = authenticated(core.on_request(&leg3, &ctx(), t0(), &mut rng));
    let Binding::Sa { sa, .. } = &a.binding else {
        panic!("an SA")
    };
    assert_eq!(sa.epid(), "aaaaaaaaaa");
}

#[test]
fn the_mic_covers_the_recomputed_challenge_with_its_timestamp() {
    let mut cfg = config();
    if let Some(n) = cfg.ntlm.as_mut() {
        n.include_timestamp = true;
    }
    let core = core_with(cfg);
    let mut rng = rng();
    let mut c = NtlmClient::new("alice", "alice-pw", "aaaaaaaaaa");
    c.mic = MicPolicy::Include;
    let issued = t0() + Duration::from_secs(17);
    let ch = leg2(&core, &mut c, issued);
    // The CHALLENGE carries the start of its window as MsvAvTimestamp (AV pair 7), the last AV
    // pair before MsvAvEOL.
    let bytes = B64
        .decode(challenge_param(&ch, "NTLM", "gssapi-data").expect("gssapi-data"))
        .expect("base64");
    let at = bytes.len() - 4 - 8;
    assert_eq!(&bytes[at - 4..at], &[7, 0, 8, 0]);
    let ft = u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    assert_eq!(
        sagw_ntlm::time::system_time_from_filetime(ft),
        Some(t0()),
        "the window's start"
    );
    // The final leg, in the next window: the MIC over the recomputed CHALLENGE verifies.
    let later = t0() + Duration::from_secs(45);
    let leg3 = c.leg3("REGISTER", &ch, later, &mut rng);
    authenticated(core.on_request(&leg3, &ctx(), later, &mut rng));
    // A MIC made over other CHALLENGE bytes does not.
    let mut d = NtlmClient::new("bob", "bob-pw", "bbbbbbbbbb");
    d.mic = MicPolicy::Include;
    let ch = leg2(&core, &mut d, issued);
    let mut other = B64
        .decode(challenge_param(&ch, "NTLM", "gssapi-data").expect("gssapi-data"))
        .expect("base64");
    let len = other.len();
    other[len - 4 - 8] ^= 1; // the timestamp's low byte
    let mut tampered = ch.clone();
    for (name, value) in &mut tampered.headers {
        if *name != "Date" {
            *value = value.replace(
                &challenge_param(&ch, "NTLM", "gssapi-data").expect("gssapi-data"),
                &B64.encode(&other),
            );
        }
    }
    let leg3 = d.leg3("REGISTER", &tampered, later, &mut rng);
    assert_eq!(
        cause(&core.on_request(&leg3, &ctx(), later, &mut rng)),
        Some(Reason::BadMic)
    );
}

#[test]
fn the_table_of_used_final_legs_is_bounded_and_only_successes_fill_it() {
    let mut cfg = config();
    cfg.handshakes.max_recent_final_legs = 2;
    let core = core_with(cfg);
    let mut rng = rng();
    for (i, epid) in ["a000000001", "a000000002"].iter().enumerate() {
        let mut c = NtlmClient::new("alice", "alice-pw", epid);
        authenticated(c.sign_in(&core, t0() + Duration::from_secs(i as u64), &mut rng));
    }
    // Wrong passwords do not count.
    for _ in 0..10 {
        let mut m = NtlmClient::new("alice", "wrong", "a000000009");
        assert_eq!(
            cause(&m.sign_in(&core, t0(), &mut rng)),
            Some(Reason::WrongPassword)
        );
    }
    let mut c = NtlmClient::new("alice", "alice-pw", "a000000003");
    let d = c.sign_in(&core, t0() + Duration::from_secs(2), &mut rng);
    assert!(
        matches!(
            d,
            Decision::Reject {
                status: 503,
                reason: Reason::HandshakeLimit,
                ..
            }
        ),
        "{d:?}"
    );
    // Once their challenges can no longer verify, the entries go.
    let mut c = NtlmClient::new("alice", "alice-pw", "a000000003");
    authenticated(c.sign_in(&core, t0() + Duration::from_secs(60), &mut rng));
    assert_eq!(core.sas().recent_final_legs(), 1);
}

#[test]
fn clients_behind_one_address_are_not_limited() {
    // 33 clients behind one NAT: all challenged, all signed in.
    let core = core();
    let mut rng = rng();
    let nat = ctx_from("192.0.2.77:5060");
    let mut clients: Vec<NtlmClient> = (0..100)
        .map(|i| NtlmClient::new("alice", "alice-pw", &format!("{i:010x}")))
        .collect();
    let challenges: Vec<Challenge> = clients
        .iter_mut()
        .map(
            |c| match core.on_request(&c.leg1("REGISTER"), &nat, t0(), &mut rng) {
                Decision::Continue(ch) => ch,
                other => panic!("{other:?}"),
            },
        )
        .collect();
    for (c, ch) in clients.iter_mut().zip(&challenges) {
        let leg3: Message = c.leg3("REGISTER", ch, t0(), &mut rng);
        authenticated(core.on_request(&leg3, &nat, t0(), &mut rng));
    }
    // Every one signed in; all are alice, so her 16 most recent devices keep their SAs
    // (`max_sas_per_identity`), each new one ending her least recently used.
    assert_eq!(core.sas().len(), sagw_auth::DEFAULT_MAX_SAS_PER_IDENTITY);
}
