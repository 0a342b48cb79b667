//! NTLM verified by the domain: users outside the credentials store go to a
//! [`DomainNtlmVerifier`] on a worker ([`Decision::Deferred`]), and the SA is made with the
//! SessionBaseKey it returns. The fake verifier here does what a domain controller does with an
//! NTLMv2 response (NTOWFv2 from the account's password, NTProofStr, SessionBaseKey), so a wrong
//! key anywhere in the core's path fails the signatures.

#[path = "../../../tests/domain_support/mod.rs"]
mod domain_support;
mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use domain_support::FakeDomain;
use parking_lot::Mutex;
use sagw_auth::{
    AccountDirectory, AuthJob, Decision, DirectoryAnswer, DirectoryUnavailable, DomainAccount,
    DomainError, DomainRefusal, DomainSettings, FileCredentialStore, Reason, Rng, Scheme,
    SecurityCore, XorShiftRng,
};
use sagw_sip::Message;
use support::*;

/// A directory that maps `user` to `sip:<user>.sip@example.com`, with per-account answers.
#[derive(Default)]
struct FakeDirectory {
    answers: Mutex<HashMap<String, Result<DirectoryAnswer, DirectoryUnavailable>>>,
}

impl AccountDirectory for FakeDirectory {
    fn lookup(&self, account: DomainAccount<'_>) -> Result<DirectoryAnswer, DirectoryUnavailable> {
        let DomainAccount::Ntlm { user, .. } = account else {
            return Ok(DirectoryAnswer::NotFound);
        };
        self.answers.lock().get(user).cloned().unwrap_or_else(|| {
            Ok(DirectoryAnswer::Identity(format!(
                "sip:{user}.sip@example.com"
            )))
        })
    }
}

fn fake(users: &[(&str, &str)]) -> Arc<FakeDomain> {
    Arc::new(FakeDomain::with(users))
}

fn domain_core(store: FileCredentialStore, domain: Arc<FakeDomain>) -> SecurityCore {
    SecurityCore::new(config(), Arc::new(store)).with_domain_ntlm(
        domain,
        DomainSettings {
            retry_after_secs: 7,
        },
    )
}

/// What the gateway does with a request: a deferred job runs on another thread, its outcome is
/// filed, and the request is judged again. Returns the decision and whether it was deferred.
fn judge(core: &SecurityCore, m: &Message, now: SystemTime, rng: &mut dyn Rng) -> (Decision, bool) {
    match core.on_request(m, &ctx(), now, rng) {
        Decision::Deferred(job) => {
            assert!(matches!(job, AuthJob::DomainNtlm(_)), "{job:?}");
            (judge_deferred(core, &job, m, Scheme::Ntlm, now, rng), true)
        }
        other => (other, false),
    }
}

fn final_leg(
    client: &mut NtlmClient,
    core: &SecurityCore,
    now: SystemTime,
    rng: &mut dyn Rng,
) -> Message {
    let leg1 = client.leg1("REGISTER");
    let Decision::Continue(c) = core.on_request(&leg1, &ctx(), now, rng) else {
        panic!("leg 2 expected");
    };
    client.leg3("REGISTER", &c, now, rng)
}

fn sign_in(
    client: &mut NtlmClient,
    core: &SecurityCore,
    now: SystemTime,
    rng: &mut dyn Rng,
) -> (Decision, bool) {
    let leg3 = final_leg(client, core, now, rng);
    judge(core, &leg3, now, rng)
}

fn cause(d: &Decision) -> Option<Reason> {
    match d {
        Decision::Challenge(c) => c.cause,
        other => panic!("a fresh challenge expected, got {other:?}"),
    }
}

#[test]
fn a_domain_user_signs_in_through_a_worker_and_signs_traffic() {
    let domain = fake(&[("dana", "Dana-pw1")]);
    let core = domain_core(store(), domain.clone());
    let mut rng = rng();
    let now = t0();
    let mut dana = NtlmClient::new("dana", "Dana-pw1", "d1");
    let (decision, deferred) = sign_in(&mut dana, &core, now, &mut rng);
    assert!(deferred, "a user outside the store goes to the domain");
    let Decision::Authenticated(auth) = decision else {
        panic!("{decision:?}")
    };
    assert_eq!(auth.identity, "sip:dana@example.com");
    assert_eq!(domain.calls(), 1);
    let snap = core.counters().snapshot();
    assert_eq!(snap.scheme(Scheme::Ntlm).handshakes_completed, 1);

    // The SA signs and verifies with the key the domain returned.
    let mut ok = response_to(&dana.leg1("REGISTER"), 200, "OK", &[]);
    core.finish_response(&mut ok, &auth, now, &mut rng)
        .expect("signed");
    dana.verify_server_signature(&ok)
        .expect("the client verifies the gateway");
    let text = dana.request("OPTIONS", &[]);
    let signed = dana.signed(&text, &mut rng);
    match core.on_request(&signed, &ctx(), now, &mut rng) {
        Decision::Authenticated(a) => assert_eq!(a.identity, "sip:dana@example.com"),
        other => panic!("signed request: {other:?}"),
    }
    assert_eq!(domain.calls(), 1, "signed traffic never asks the domain");
}

#[test]
fn store_users_are_verified_locally_first() {
    let domain = fake(&[("alice", "domain-pw")]);
    let core = domain_core(store(), domain.clone());
    let mut rng = rng();
    let mut alice = NtlmClient::new("alice", "alice-pw", "a1");
    let (decision, deferred) = sign_in(&mut alice, &core, t0(), &mut rng);
    assert!(!deferred);
    assert!(
        matches!(decision, Decision::Authenticated(_)),
        "{decision:?}"
    );
    // The store's user with the domain's password: the store's answer, no domain round trip.
    let mut alice = NtlmClient::new("alice", "domain-pw", "a2");
    let (decision, deferred) = sign_in(&mut alice, &core, t0(), &mut rng);
    assert!(!deferred);
    assert_eq!(cause(&decision), Some(Reason::WrongPassword));
    assert_eq!(domain.calls(), 0);
}

/// A trusted domain's account (`OTHER\\alice`) verified by the DC is not the joined domain's
/// `alice`: without a directory to map it, it gets no identity (it used to get
/// `sip:alice@example.com`, the joined domain's alice's).
#[test]
fn an_account_of_a_trusted_domain_is_not_mapped_without_a_directory() {
    let domain = fake(&[("dana", "dana-pw")]);
    let core = domain_core(FileCredentialStore::new(), domain.clone());
    let mut rng = rng();
    let mut other = NtlmClient::new("dana", "dana-pw", "d1");
    other.domain = "OTHER".into();
    let (decision, deferred) = sign_in(&mut other, &core, t0(), &mut rng);
    assert!(deferred);
    assert_eq!(domain.calls(), 1, "the domain verified the response");
    assert_eq!(cause(&decision), Some(Reason::WrongRealm), "{decision:?}");
    // The joined domain's dana signs in.
    let mut dana = NtlmClient::new("dana", "dana-pw", "d2");
    let (decision, _) = sign_in(&mut dana, &core, t0(), &mut rng);
    assert!(
        matches!(decision, Decision::Authenticated(_)),
        "{decision:?}"
    );
}

/// A domain account cannot sign in as a credentials-file user's identity: not when the file user
/// has no NT hash (Digest only: the name went to the domain), not when the client writes the name
/// another way the file does not know (a UPN), not when the file gives its identity to another
/// name (`bob sip sip:carol@...` beside a domain account carol).
#[test]
fn a_domain_account_cannot_take_a_file_users_identity() {
    let mut file = FileCredentialStore::new();
    file.add_password(
        "alice",
        "alice-pw",
        &[("example.com", sagw_digest::Algorithm::Md5)],
    );
    file.add_password("bob", "bob-pw", &[]);
    file.set_sip_identity("bob", "sip:carol@example.com")
        .expect("identity");
    // alice keeps her Digest credentials only.
    let text = file
        .to_file_text()
        .lines()
        .filter(|l| !(l.starts_with("alice") && l.contains(" nt ")))
        .collect::<Vec<_>>()
        .join("\n");
    let file = FileCredentialStore::parse(&text).expect("parses");
    assert!(sagw_auth::CredentialStore::nt_hash(&file, "alice").is_none());
    let domain = fake(&[("alice", "other-alice-pw"), ("carol", "carol-pw")]);
    let core = domain_core(file, domain.clone());
    let mut rng = rng();
    for (user, pw) in [("alice", "other-alice-pw"), ("carol", "carol-pw")] {
        let mut c = NtlmClient::new(user, pw, user);
        let (decision, _) = sign_in(&mut c, &core, t0(), &mut rng);
        assert!(
            !matches!(decision, Decision::Authenticated(_)),
            "domain {user} took a file user's identity: {decision:?}"
        );
        assert_eq!(
            cause(&decision),
            Some(Reason::IdentityTaken),
            "{decision:?}"
        );
    }
}

/// A domain account whose name SIP reads as another (`b%6Fb`: `bob` to every server behind the
/// gateway, which compares identities unescaped) gets no identity from its name: before, it
/// signed in as `sip:b%6fb@…`, a spelling no file user owns, and its requests reached the
/// servers behind as bob's.
#[test]
fn a_domain_account_whose_name_is_an_escape_gets_no_identity() {
    let mut file = FileCredentialStore::new();
    file.add_password("bob", "bob-pw", &[]);
    let core = domain_core(file, fake(&[("b%6Fb", "mallory-pw")]));
    let mut rng = rng();
    let mut c = NtlmClient::new("b%6Fb", "mallory-pw", "m1");
    let (decision, deferred) = sign_in(&mut c, &core, t0(), &mut rng);
    assert!(deferred, "verified by the domain");
    assert!(
        !matches!(decision, Decision::Authenticated(_)),
        "{decision:?}"
    );
    assert_eq!(cause(&decision), Some(Reason::AccountName), "{decision:?}");
}

#[test]
fn the_sa_is_the_one_the_file_backend_makes() {
    // The same client, the same randomness: once verified from the file, once by the domain.
    let mut file_only = FileCredentialStore::new();
    file_only.add_password("erin", "Erin-pw1", &[]);
    let file_core = SecurityCore::new(config(), Arc::new(file_only));
    let domain_core = domain_core(FileCredentialStore::new(), fake(&[("erin", "Erin-pw1")]));
    let mut records = Vec::new();
    for (core, expect_deferred) in [(&file_core, false), (&domain_core, true)] {
        let mut rng = XorShiftRng::new(0xE21);
        let mut erin = NtlmClient::new("erin", "Erin-pw1", "e1");
        let (decision, deferred) = sign_in(&mut erin, core, t0(), &mut rng);
        assert_eq!(deferred, expect_deferred);
        let sa = decision.sa().expect("an SA").clone();
        let record = core.export_sa(&sa).expect("exportable");
        records.push(format!(
            "{} {} {} {:?}",
            record.opaque, record.identity, record.epid, record.secret
        ));
    }
    assert_eq!(records[0], records[1]);
}

#[test]
fn each_domain_refusal_is_a_challenge_with_its_reason() {
    let cases = [
        (DomainRefusal::AccountDisabled, Reason::AccountDisabled),
        (DomainRefusal::AccountLockedOut, Reason::AccountLockedOut),
        (DomainRefusal::AccountExpired, Reason::AccountExpired),
        (DomainRefusal::PasswordExpired, Reason::PasswordExpired),
        (
            DomainRefusal::PasswordMustChange,
            Reason::PasswordMustChange,
        ),
        (DomainRefusal::Other, Reason::DomainRefused),
    ];
    let domain = fake(&[("fay", "Fay-pw1")]);
    let core = domain_core(store(), domain.clone());
    let mut rng = rng();
    for (i, (refusal, reason)) in cases.into_iter().enumerate() {
        domain.set_state(
            "fay",
            Some(DomainError::Refused {
                refusal,
                detail: format!("{refusal:?}"),
            }),
        );
        let mut fay = NtlmClient::new("fay", "Fay-pw1", &format!("f{i}"));
        let (decision, deferred) = sign_in(&mut fay, &core, t0(), &mut rng);
        assert!(deferred);
        assert_eq!(cause(&decision), Some(reason), "{refusal:?}");
        assert_eq!(
            core.counters()
                .snapshot()
                .handshake_failures(Scheme::Ntlm, reason),
            1,
            "{refusal:?} counted once"
        );
    }
    domain.set_state("fay", None);
    let mut fay = NtlmClient::new("fay", "wrong", "fw");
    assert_eq!(
        cause(&sign_in(&mut fay, &core, t0(), &mut rng).0),
        Some(Reason::WrongPassword)
    );
    let mut nobody = NtlmClient::new("nobody", "x", "nx");
    assert_eq!(
        cause(&sign_in(&mut nobody, &core, t0(), &mut rng).0),
        Some(Reason::UnknownUser)
    );
}

#[test]
fn an_unavailable_domain_is_a_503_and_the_handshake_survives_it() {
    let domain = fake(&[("gus", "Gus-pw1")]);
    let core = domain_core(store(), domain.clone());
    let mut rng = rng();
    let now = t0();
    domain.set_state(
        "gus",
        Some(DomainError::Unavailable(
            "WBC_ERR_WINBIND_NOT_AVAILABLE".into(),
        )),
    );
    let mut gus = NtlmClient::new("gus", "Gus-pw1", "g1");
    let leg3 = final_leg(&mut gus, &core, now, &mut rng);
    let (decision, _) = judge(&core, &leg3, now, &mut rng);
    match decision {
        Decision::Unavailable {
            reason,
            retry_after_secs,
        } => {
            assert_eq!(reason, Reason::DomainUnavailable);
            assert_eq!(retry_after_secs, 7);
        }
        other => panic!("503 expected, got {other:?}"),
    }
    assert!(core.sas().is_empty(), "never a pass");
    // The domain is back: the same final leg, sent again, goes through.
    domain.set_state("gus", None);
    let (decision, deferred) = judge(&core, &leg3, now + Duration::from_secs(5), &mut rng);
    assert!(deferred);
    assert!(
        matches!(decision, Decision::Authenticated(_)),
        "{decision:?}"
    );
    // And once used, it is used: a replay is refused.
    let (decision, _) = judge(&core, &leg3, now + Duration::from_secs(6), &mut rng);
    assert_eq!(cause(&decision), Some(Reason::ReplayedToken));
}

#[test]
fn a_stale_final_leg_never_reaches_the_domain() {
    let domain = fake(&[("hal", "Hal-pw1")]);
    let core = domain_core(store(), domain.clone());
    let mut rng = rng();
    let mut hal = NtlmClient::new("hal", "Hal-pw1", "h1");
    let leg1 = hal.leg1("REGISTER");
    let Decision::Continue(c) = core.on_request(&leg1, &ctx(), t0(), &mut rng) else {
        panic!("leg 2")
    };
    // The client's clock is an hour ahead.
    let leg3 = hal.leg3("REGISTER", &c, t0() + Duration::from_secs(3600), &mut rng);
    let (decision, deferred) = judge(&core, &leg3, t0(), &mut rng);
    assert!(!deferred);
    assert_eq!(cause(&decision), Some(Reason::ClockSkew));
    assert_eq!(domain.calls(), 0);
}

#[test]
fn the_directory_names_the_identity_or_refuses() {
    let domain = fake(&[("ivy", "Ivy-pw1"), ("jon", "Jon-pw1"), ("kim", "Kim-pw1")]);
    let directory = Arc::new(FakeDirectory::default());
    directory
        .answers
        .lock()
        .insert("jon".into(), Ok(DirectoryAnswer::NoSipAddress));
    directory.answers.lock().insert(
        "kim".into(),
        Err(DirectoryUnavailable("ldap timeout".into())),
    );
    let core = domain_core(store(), domain).with_directory(directory);
    let mut rng = rng();
    let mut ivy = NtlmClient::new("ivy", "Ivy-pw1", "i1");
    // The identity is the directory's, not the account name's: the client's From
    // (sip:ivy@example.com) is then not its identity, and the request is forbidden.
    match sign_in(&mut ivy, &core, t0(), &mut rng).0 {
        Decision::Forbidden(f) => {
            assert_eq!(f.verified.identity, "sip:ivy.sip@example.com");
            assert_eq!(f.reason, Reason::SaMismatch);
        }
        other => panic!("{other:?}"),
    }
    let mut jon = NtlmClient::new("jon", "Jon-pw1", "j1");
    assert_eq!(
        cause(&sign_in(&mut jon, &core, t0(), &mut rng).0),
        Some(Reason::NoSipAddress)
    );
    let mut kim = NtlmClient::new("kim", "Kim-pw1", "k1");
    match sign_in(&mut kim, &core, t0(), &mut rng).0 {
        Decision::Unavailable { reason, .. } => assert_eq!(reason, Reason::DirectoryUnavailable),
        other => panic!("{other:?}"),
    }
}

#[test]
fn without_domain_ntlm_an_unknown_user_is_refused_inline() {
    let core = SecurityCore::new(config(), Arc::new(store()));
    let mut rng = rng();
    let mut dana = NtlmClient::new("dana", "Dana-pw1", "d1");
    let (decision, deferred) = sign_in(&mut dana, &core, t0(), &mut rng);
    assert!(!deferred);
    assert_eq!(cause(&decision), Some(Reason::UnknownUser));
}
