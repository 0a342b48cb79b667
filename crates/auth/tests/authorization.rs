//! What an authenticated client may make the core do (issue 12): register only its own AOR, get
//! refusals signed only with the SA that verified them, keep an SA alive only by its own signatures
//! and granted registrations, hold a bounded number of SAs, and lose them when its user goes.

mod support;

use std::time::Duration;

use sagw_auth::{Binding, ChallengeFamily, Decision};
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
    let mut cfg = config();
    cfg.pending.max_per_source = 1;
    let core = core_with(cfg);
    let mut rng = rng();
    let mut bob = NtlmClient::new("bob", "bob-pw", "bbbbbbbbbb");
    established(&bob.sign_in(&core, t0(), &mut rng));
    // A first leg naming bob's endpoint, from a source already at its pending limit.
    let mut mallory = NtlmClient::new("bob", "whatever", "bbbbbbbbbb");
    let _ = core.on_request(&mallory.leg1("REGISTER"), &ctx(), t0(), &mut rng);
    match core.on_request(&mallory.leg1("REGISTER"), &ctx(), t0(), &mut rng) {
        // `Reject` has no binding to sign with: the type leaves the stage nothing to sign.
        Decision::Reject { .. } | Decision::Continue(_) => {}
        other => panic!("{other:?}"),
    }
}
