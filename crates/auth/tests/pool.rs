//! SAs moving between two gateways of a pool (or across a restart): the journal lists what the pool
//! must learn, an exported SA taken in elsewhere verifies the client's next signature, refuses what
//! the first gateway verified, and signs with an `snum` above anything the first one used.

mod support;

use sagw_auth::pool::{SNUM_GENERATION_SHIFT, generation_snum_base};
use sagw_auth::{Decision, Reason, SaRecord, SaResume};
use support::*;

fn authenticated(d: Decision) -> sagw_auth::Authenticated {
    match d {
        Decision::Authenticated(a) => a,
        other => panic!("expected an authenticated decision, got {other:?}"),
    }
}

fn snum_of(msg: &sagw_sip::Message) -> u32 {
    let v = msg.header("Authentication-Info").expect("signed");
    let h = sagw_sip::AuthHeader::parse(v).expect("parses");
    h.param("snum").expect("snum").parse().expect("number")
}

#[test]
fn an_sa_moves_to_another_gateway_with_its_window_and_a_higher_snum() {
    let a = core().enable_pool_journal();
    let b = core().enable_pool_journal();
    let mut rng = rng();
    let mut c = NtlmClient::new("alice", "alice-pw", "01010101");
    let first = authenticated(c.sign_in(&a, t0(), &mut rng));
    let mut ok = response_to(&parse(&c.request("REGISTER", &[])), 200, "OK", &[]);
    a.finish_response(&mut ok, &first, t0(), &mut rng)
        .expect("signs");
    assert_eq!(snum_of(&ok), 1, "a gateway on its own counts from 1");

    let j = a.drain_pool_journal();
    assert_eq!(j.established.len(), 1, "the new SA is journaled");
    let sa = j.established[0].clone();

    // Two signed messages verify at A; the journal carries the window forward.
    let t = c.request("MESSAGE", &[]);
    let m1 = c.signed(&t, &mut rng);
    let t = c.request("MESSAGE", &[]);
    let m2 = c.signed(&t, &mut rng);
    for m in [&m1, &m2] {
        assert!(matches!(
            a.on_request(m, &ctx(), t0(), &mut rng),
            Decision::Authenticated(_)
        ));
    }
    let j = a.drain_pool_journal();
    assert_eq!(
        j.progressed.len(),
        1,
        "one entry per SA, however many messages"
    );
    let progress = &j.progressed[0];
    assert!(a.drain_pool_journal().is_empty(), "drained");

    // B takes it over at generation 1.
    let record = a.export_sa(&sa).expect("exports");
    let bytes = record.encode();
    let record = SaRecord::decode(&bytes).expect("decodes");
    let resume = SaResume {
        snum_after: generation_snum_base(1).expect("generation 1"),
        window: Some(progress.window),
        idle_deadline: Some(progress.idle_deadline),
    };
    // Before it claims, B checks a held message against a copy: a signed one verifies (the
    // window moved on only in the copy), the same with a made-up signature or an already used
    // number does not.
    let t = c.request("MESSAGE", &[]);
    let held = c.signed(&t, &mut rng);
    assert!(b.verifies_with_record(&record, &resume, &held, t0()));
    assert!(
        b.verifies_with_record(&record, &resume, &held, t0()),
        "nothing was recorded"
    );
    let forged = parse(
        &String::from_utf8(held.to_bytes())
            .expect("text")
            .replace("response=\"", "response=\"00"),
    );
    assert!(!b.verifies_with_record(&record, &resume, &forged, t0()));
    assert!(
        !b.verifies_with_record(&record, &resume, &m1, t0()),
        "m1's number is in the window"
    );
    b.adopt_sa(record, &resume, t0()).expect("adopts");
    assert!(
        b.drain_pool_journal().established.is_empty(),
        "an adopted SA is not new"
    );

    // What A verified is refused at B.
    match b.on_request(&m2, &ctx(), t0(), &mut rng) {
        Decision::Challenge(ch) => assert_eq!(ch.cause, Some(Reason::Replay)),
        other => panic!("a replay must be refused, got {other:?}"),
    }
    // The client's next message verifies at B, and B's signature is above A's snums.
    let t = c.request("MESSAGE", &[]);
    let m3 = c.signed(&t, &mut rng);
    let at_b = authenticated(b.on_request(&m3, &ctx(), t0(), &mut rng));
    let mut resp = response_to(&m3, 200, "OK", &[]);
    b.finish_response(&mut resp, &at_b, t0(), &mut rng)
        .expect("signs");
    c.verify_server_signature(&resp)
        .expect("the client verifies B's signature");
    assert_eq!(snum_of(&resp), (1 << SNUM_GENERATION_SHIFT) + 1);

    // A lets go of it when told it moved: its copy verifies nothing more.
    assert!(a.forget_sa(sa.opaque()));
    let t = c.request("MESSAGE", &[]);
    let m4 = c.signed(&t, &mut rng);
    assert!(matches!(
        a.on_request(&m4, &ctx(), t0(), &mut rng),
        Decision::Challenge(_)
    ));
    assert!(
        a.drain_pool_journal().ended.is_empty(),
        "a move does not end the SA"
    );
}

#[test]
fn ended_sas_and_identities_are_journaled_and_pool_revocations_are_not() {
    let a = core().enable_pool_journal();
    let mut rng = rng();
    let mut c = NtlmClient::new("alice", "alice-pw", "01010101");
    let first = authenticated(c.sign_in(&a, t0(), &mut rng));
    let sa = match &first.binding {
        sagw_auth::Binding::Sa { sa, .. } => sa.clone(),
        _ => panic!("an SA"),
    };
    a.drain_pool_journal();
    // A new handshake from the same endpoint replaces the SA: the old one ended.
    let mut again = NtlmClient::new("alice", "alice-pw", "01010101");
    authenticated(again.sign_in(&a, t0(), &mut rng));
    let j = a.drain_pool_journal();
    assert_eq!(j.established.len(), 1);
    assert_eq!(j.ended.len(), 1);
    assert_eq!(j.ended[0].opaque, sa.opaque());
    assert_eq!(j.ended[0].identity.as_deref(), Some(sa.identity()));
    assert_eq!(a.revoke_identity("sip:alice@example.com"), 1);
    assert_eq!(
        a.drain_pool_journal().ended_identities,
        ["sip:alice@example.com"]
    );
    // Revocations that came from the pool are not sent back to it.
    let mut bob = NtlmClient::new("bob", "bob-pw", "02020202");
    let b = authenticated(bob.sign_in(&a, t0(), &mut rng));
    let bsa = match &b.binding {
        sagw_auth::Binding::Sa { sa, .. } => sa.clone(),
        _ => panic!("an SA"),
    };
    a.drain_pool_journal();
    assert!(a.revoke_from_pool(bsa.opaque()));
    assert!(a.drain_pool_journal().is_empty());
}

#[test]
fn an_ended_sa_is_not_taken_in() {
    let a = core();
    let b = core();
    let mut rng = rng();
    let mut c = NtlmClient::new("alice", "alice-pw", "01010101");
    let first = authenticated(c.sign_in(&a, t0(), &mut rng));
    let sa = match &first.binding {
        sagw_auth::Binding::Sa { sa, .. } => sa.clone(),
        _ => panic!("an SA"),
    };
    let record = a.export_sa(&sa).expect("exports");
    let late = t0() + std::time::Duration::from_secs(record.hard_expiry - record.created + 1);
    let resume = SaResume {
        snum_after: 0,
        window: None,
        idle_deadline: None,
    };
    assert!(b.adopt_sa(record, &resume, late).is_err());
}
