//! Challenge policies in the core: a policy offers a subset of the schemes the core serves, its
//! own Digest realm and algorithm order, and refuses (challenges again) credentials of anything
//! it does not offer. Policy 0 is the core's own configuration, unchanged for existing callers.

mod support;

use sagw_auth::{
    AuthPolicy, ChallengePolicy, Decision, DigestOffer, PolicyError, PolicyId, Scheme, SchemeSet,
};
use sagw_digest::client::{Challenge as DigestChallenge, authorize, parse_header};
use sagw_digest::{Algorithm, Ha1};
use sagw_sip::Message;
use support::*;

fn register(user: &str, cseq: u32) -> String {
    format!(
        "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bKp{cseq}\r\nFrom: <sip:{user}@example.com>;tag=f{cseq}\r\nTo: <sip:{user}@example.com>\r\nCall-ID: p-{user}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:{user}@192.0.2.9:5060>\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n"
    )
}

fn offered(d: &Decision) -> Vec<String> {
    match d {
        Decision::Challenge(c) => c
            .headers
            .iter()
            .filter(|(n, _)| *n == "WWW-Authenticate" || *n == "Proxy-Authenticate")
            .map(|(_, v)| v.clone())
            .collect(),
        other => panic!("expected a challenge, got {other:?}"),
    }
}

fn digest_answer(challenge: &str, user: &str, pw: &str, nc: u32) -> String {
    let p = parse_header(challenge).expect("challenge parses");
    let ch = DigestChallenge::from_params(p.pairs()).expect("challenge params");
    let ha1 = Ha1::compute(ch.algorithm.base(), user, ch.realm, pw);
    authorize(
        &ch,
        user,
        &ha1,
        "REGISTER",
        "sip:example.com",
        "0a4f113b",
        nc,
    )
    .expect("authorize")
    .header_value()
}

fn with_auth(text: &str, value: &str) -> Message {
    let mut m = parse(text);
    m.push_header("Authorization", value);
    m
}

fn policy(schemes: &[Scheme], digest: Option<(&str, &[Algorithm])>) -> AuthPolicy {
    AuthPolicy {
        schemes: schemes.iter().copied().collect(),
        digest: digest.map(|(realm, algs)| DigestOffer {
            realm: realm.into(),
            algorithms: algs.to_vec(),
        }),
    }
}

#[test]
fn the_default_policy_offers_everything_the_core_serves() {
    let core = core();
    let mut rng = rng();
    let d = core.on_request(&parse(&register("alice", 1)), &ctx(), t0(), &mut rng);
    let offers = offered(&d);
    assert!(offers[0].starts_with("NTLM "), "{offers:?}");
    assert!(offers[1].contains("algorithm=SHA-256"), "{offers:?}");
    assert!(offers[2].contains("algorithm=MD5"), "{offers:?}");
    let o = core.policy_offer(PolicyId::DEFAULT).expect("policy 0");
    assert_eq!(
        o.schemes,
        SchemeSet::EMPTY.with(Scheme::Ntlm).with(Scheme::Digest),
        "Kerberos is not served here"
    );
    assert_eq!(o.digest_algorithms, [Algorithm::Sha256, Algorithm::Md5]);
}

#[test]
fn a_digest_md5_policy_offers_only_md5_and_refuses_ntlm_and_sha256() {
    let mut core = core();
    let md5 = core
        .add_policy(policy(
            &[Scheme::Digest],
            Some((DIGEST_REALM, &[Algorithm::Md5])),
        ))
        .expect("policy");
    let fam = ChallengePolicy::default();
    let mut rng = rng();
    let first = core.on_request_under(
        &parse(&register("alice", 1)),
        &ctx(),
        md5,
        &fam,
        t0(),
        &mut rng,
    );
    let offers = offered(&first);
    assert_eq!(offers.len(), 1, "{offers:?}");
    assert!(offers[0].starts_with("Digest ") && offers[0].contains("algorithm=MD5"));

    // SHA-256 credentials (answering the default policy's challenge) are refused: challenged again.
    let default = core.on_request(&parse(&register("alice", 2)), &ctx(), t0(), &mut rng);
    let sha = offered(&default)
        .into_iter()
        .find(|v| v.contains("SHA-256"))
        .expect("SHA-256 offered by default");
    let m = with_auth(
        &register("alice", 3),
        &digest_answer(&sha, "alice", "alice-pw", 1),
    );
    assert!(matches!(
        core.on_request_under(&m, &ctx(), md5, &fam, t0(), &mut rng),
        Decision::Challenge(_)
    ));

    // NTLM is not taken at all: leg 1 gets the Digest challenge, not an NTLM leg 2.
    let mut c = NtlmClient::new("alice", "alice-pw", "0123456789");
    let leg1 = c.leg1("REGISTER");
    let d = core.on_request_under(&leg1, &ctx(), md5, &fam, t0(), &mut rng);
    let offers = offered(&d);
    assert!(
        offers.iter().all(|v| v.starts_with("Digest ")),
        "{offers:?}"
    );

    // The policy's own challenge is answered.
    let m = with_auth(
        &register("alice", 4),
        &digest_answer(&offers[0], "alice", "alice-pw", 1),
    );
    assert!(matches!(
        core.on_request_under(&m, &ctx(), md5, &fam, t0(), &mut rng),
        Decision::Authenticated(_)
    ));
}

#[test]
fn an_ntlm_policy_refuses_digest_credentials_and_signs_in_with_ntlm() {
    let mut core = core();
    let ntlm = core
        .add_policy(policy(&[Scheme::Ntlm], None))
        .expect("policy");
    let fam = ChallengePolicy::default();
    let mut rng = rng();
    let d = core.on_request(&parse(&register("bob", 1)), &ctx(), t0(), &mut rng);
    let digest = offered(&d)
        .into_iter()
        .find(|v| v.contains("MD5"))
        .expect("MD5 offered by default");
    let m = with_auth(
        &register("bob", 2),
        &digest_answer(&digest, "bob", "bob-pw", 1),
    );
    let d = core.on_request_under(&m, &ctx(), ntlm, &fam, t0(), &mut rng);
    let offers = offered(&d);
    assert_eq!(offers.len(), 1);
    assert!(offers[0].starts_with("NTLM "), "{offers:?}");

    let mut c = NtlmClient::new("bob", "bob-pw", "0123456789");
    let leg1 = c.leg1("REGISTER");
    let challenge = match core.on_request_under(&leg1, &ctx(), ntlm, &fam, t0(), &mut rng) {
        Decision::Continue(ch) => ch,
        other => panic!("leg 2 expected, got {other:?}"),
    };
    let leg3 = c.leg3("REGISTER", &challenge, t0(), &mut rng);
    assert!(matches!(
        core.on_request_under(&leg3, &ctx(), ntlm, &fam, t0(), &mut rng),
        Decision::Authenticated(_)
    ));
}

#[test]
fn a_policy_realm_is_its_own_and_binds_the_nonce() {
    let mut core = core();
    let other = core
        .add_policy(policy(
            &[Scheme::Digest],
            Some(("phones.example.com", &[Algorithm::Md5])),
        ))
        .expect("policy");
    let fam = ChallengePolicy::default();
    let mut rng = rng();
    let d = core.on_request_under(
        &parse(&register("alice", 1)),
        &ctx(),
        other,
        &fam,
        t0(),
        &mut rng,
    );
    let offers = offered(&d);
    assert!(
        offers[0].contains("realm=\"phones.example.com\""),
        "{offers:?}"
    );
    // alice has no HA1 for that realm in the store: refused as an unknown user, challenged again.
    let m = with_auth(
        &register("alice", 2),
        &digest_answer(&offers[0], "alice", "alice-pw", 1),
    );
    assert!(matches!(
        core.on_request_under(&m, &ctx(), other, &fam, t0(), &mut rng),
        Decision::Challenge(_)
    ));
    // Credentials for the default realm are not this policy's: challenged again.
    let d = core.on_request(&parse(&register("alice", 3)), &ctx(), t0(), &mut rng);
    let md5 = offered(&d)
        .into_iter()
        .find(|v| v.contains("MD5"))
        .expect("MD5");
    let m = with_auth(
        &register("alice", 4),
        &digest_answer(&md5, "alice", "alice-pw", 1),
    );
    assert!(matches!(
        core.on_request_under(&m, &ctx(), other, &fam, t0(), &mut rng),
        Decision::Challenge(_)
    ));
}

#[test]
fn policies_the_core_cannot_serve_are_refused() {
    let mut core = core();
    assert_eq!(
        core.add_policy(policy(&[Scheme::Kerberos, Scheme::Ntlm], None)),
        Err(PolicyError::NotServed(Scheme::Kerberos))
    );
    assert_eq!(core.add_policy(policy(&[], None)), Err(PolicyError::Empty));
    assert!(matches!(
        core.add_policy(policy(&[Scheme::Digest], Some((DIGEST_REALM, &[])))),
        Err(PolicyError::Digest(_))
    ));
}
