//! Kerberos security associations through the core against a real MIT KDC (started by the test on
//! loopback; see crates/kerberos/tests/support): a client gets a ticket with a password, drives the
//! 2-leg handshake, and both sides sign and verify. AES and RC4-HMAC service keys; bad tokens.
#![cfg(feature = "kerberos-mit")]

#[path = "../../../tests/domain_support/mod.rs"]
mod domain_support;
#[path = "../../kerberos/tests/support/mod.rs"]
mod kdc;
mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sagw_auth::kerberos_mit::MitKerberos;
use sagw_auth::{
    Binding, BufferParams, ChallengeFamily, CoreConfig, Decision, FileCredentialStore, Reason,
    Scheme, SecurityCore, SignatureBuffer,
};
use sagw_kerberos::initiator::{ClientSession, initiate};
use sagw_kerberos::{KerberosAcceptor, KerberosConfig};
use sagw_sip::{AuthHeader, AuthHeaderBuilder, Message};
use support::{REALM, ctx, judge_deferred, parse, response_to, rng};

fn core_for(k: &kdc::TestKdc, fqdn: &str, keytab: &Path) -> SecurityCore {
    let mut cfg = KerberosConfig::new(fqdn);
    cfg.keytab = Some(keytab.to_path_buf());
    cfg.replay_cache = Some(k.rcache());
    let acceptor = KerberosAcceptor::new(cfg).expect("acceptor from the test keytab");
    SecurityCore::new(
        CoreConfig::new("example.test"),
        Arc::new(FileCredentialStore::new()),
    )
    .with_kerberos(Box::new(MitKerberos::new(acceptor)), None)
}

struct KrbClient {
    session: ClientSession,
    targetname: String,
    opaque: Option<String>,
    cnum: u32,
    seq: u32,
}

impl KrbClient {
    /// A client of `sip/<fqdn>` holding `session`, before its first signed message.
    fn new(session: ClientSession, fqdn: &str) -> Self {
        KrbClient {
            session,
            targetname: format!("sip/{fqdn}"),
            opaque: None,
            cnum: 0,
            seq: 0,
        }
    }

    fn request(&mut self, method: &str) -> String {
        self.seq += 1;
        format!(
            "{method} sip:example.test SIP/2.0\r\nVia: SIP/2.0/TLS 198.51.100.7:50000;branch=z9hG4bKk{n}\r\nFrom: <sip:alice@example.test>;tag=k{n};epid=kerb000001\r\nTo: <sip:alice@example.test>\r\nCall-ID: krb-{n}\r\nCSeq: {n} {method}\r\nContent-Length: 0\r\n\r\n",
            n = self.seq
        )
    }

    fn buffer(&self, m: &Message, rand: &str, num: &str) -> SignatureBuffer {
        SignatureBuffer::build(
            m,
            &BufferParams {
                scheme: "Kerberos",
                rand,
                num,
                realm: REALM,
                targetname: &self.targetname,
                version: 4,
            },
        )
    }

    /// Adds the credentials header; signs unless `gssapi` is set and the client is version 3.
    fn credentials(&mut self, text: &str, gssapi: Option<&[u8]>, sign: bool) -> Message {
        let mut m = parse(text);
        let mut b = AuthHeaderBuilder::new("Kerberos")
            .quoted("qop", "auth")
            .quoted("realm", REALM)
            .quoted("targetname", &self.targetname);
        if let Some(o) = &self.opaque {
            b = b.quoted("opaque", o);
        }
        if let Some(token) = gssapi {
            b = b
                .quoted("gssapi-data", &B64.encode(token))
                .token("version", "4");
        }
        if sign {
            self.cnum += 1;
            let crand = format!("{:08x}", 0xC0FFEE00u32 + self.cnum);
            let cnum = self.cnum.to_string();
            let mic = self
                .session
                .get_mic(self.buffer(&m, &crand, &cnum).as_bytes())
                .expect("client MIC");
            b = b
                .quoted("crand", &crand)
                .quoted("cnum", &cnum)
                .quoted("response", &sagw_hex::encode(&mic));
        }
        m.push_header("Authorization", &b.build());
        m
    }

    fn verify_server(&mut self, m: &Message) -> Result<(), String> {
        let v = m.header("Authentication-Info").ok_or("unsigned")?;
        let h = AuthHeader::parse(v).map_err(|e| e.to_string())?;
        if let Some(o) = h.param("opaque") {
            self.opaque = Some(o.to_owned());
        }
        if let Some(ap_rep) = h.param("gssapi-data") {
            let bytes = B64.decode(ap_rep).map_err(|e| e.to_string())?;
            self.session.finish(&bytes).map_err(|e| e.to_string())?;
        }
        let p = |n: &str| h.param(n).ok_or(format!("missing {n}"));
        let buf = self.buffer(m, p("srand")?, p("snum")?);
        let token = sagw_hex::decode(p("rspauth")?).map_err(|_| "bad hex")?;
        self.session
            .verify_mic(buf.as_bytes(), &token)
            .map_err(|e| e.to_string())
    }
}

/// `on_request`, and for a core that offloads Kerberos, what the gateway does with a deferred
/// request: the job on another thread, its outcome filed, the request judged again.
fn decide(
    core: &SecurityCore,
    m: &Message,
    now: SystemTime,
    rng: &mut dyn sagw_auth::Rng,
) -> Decision {
    match core.on_request(m, &ctx(), now, rng) {
        Decision::Deferred(job) => judge_deferred(core, &job, m, Scheme::Kerberos, now, rng),
        other => other,
    }
}

fn sign_in(core: &SecurityCore, k: &kdc::TestKdc, fqdn: &str, mutual: bool, mic_len: usize) {
    let ccache = k.kinit(kdc::ALICE, kdc::ALICE_PW, None);
    let (ap_req, session) = initiate(fqdn, Some(&ccache), mutual).expect("AP-REQ");
    let mut c = KrbClient::new(session, fqdn);
    let mut rng = rng();
    let now = SystemTime::now();

    // Leg 1: a challenge offering Kerberos for sip/<fqdn>, with Date.
    let first = parse(&c.request("REGISTER"));
    let Decision::Challenge(ch) = decide(core, &first, now, &mut rng) else {
        panic!("challenge expected");
    };
    assert!(ch.headers.iter().any(|(n, _)| *n == "Date"));
    let offer = &ch
        .headers
        .iter()
        .find(|(_, v)| v.starts_with("Kerberos "))
        .expect("Kerberos offered")
        .1;
    assert_eq!(
        offer,
        &format!("Kerberos qop=\"auth\", realm=\"{REALM}\", targetname=\"sip/{fqdn}\", version=4")
    );

    // Leg 2: the AP-REQ. Without mutual authentication the client context is complete, so a
    // version-4 client signs this request already.
    let text = c.request("REGISTER");
    let m = c.credentials(&text, Some(&ap_req), !mutual);
    let auth = match decide(core, &m, now, &mut rng) {
        Decision::Authenticated(a) => a,
        other => panic!("Kerberos sign-in failed: {other:?}"),
    };
    assert_eq!(auth.identity, "sip:alice@example.test");
    assert_eq!(auth.scheme, Scheme::Kerberos);
    let Binding::Sa { sa, .. } = &auth.binding else {
        panic!("SA binding")
    };
    let hard = sa.hard_expiry();
    let now_secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    assert!(hard <= now_secs + 8 * 3600, "never beyond 8 h");

    // A request to the client signed before the final response (a NOTIFY that arrives first)
    // does not take the AP-REP: it belongs to the 200 of the final leg.
    let mut notify = Message::parse(
        b"NOTIFY sip:alice@10.0.0.5:5060 SIP/2.0\r\nVia: SIP/2.0/TCP 192.0.2.10;branch=z9hG4bKn1\r\n\
From: <sip:presence@example.test>;tag=p1\r\nTo: <sip:alice@example.test>;tag=a1\r\n\
Call-ID: n1\r\nCSeq: 1 NOTIFY\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
    )
    .expect("NOTIFY");
    core.sign(&mut notify, sa, ChallengeFamily::Www, now, &mut rng)
        .expect("NOTIFY signed");
    assert!(
        !notify
            .header("Authentication-Info")
            .expect("signed")
            .contains("gssapi-data="),
        "the NOTIFY took the AP-REP"
    );
    // Nor does a 2xx of another transaction relayed to the client meanwhile (a late 2xx to an
    // INVITE, signed with the endpoint's SA when its transaction has ended).
    let mut late = response_to(&notify, 200, "OK", &[]);
    core.sign(&mut late, sa, ChallengeFamily::Www, now, &mut rng)
        .expect("late 2xx signed");
    assert!(
        !late
            .header("Authentication-Info")
            .expect("signed")
            .contains("gssapi-data="),
        "a relayed 2xx took the AP-REP"
    );
    // Nor the 200 to a CANCEL of the final leg's request, signed with that request's note as the
    // edge signs it, which goes before the request's own final response (its 487).
    let mut cancelled = response_to(&m, 200, "OK", &[]);
    let cseq = format!("{} CANCEL", m.cseq().expect("CSeq").number);
    cancelled.set_header("CSeq", &cseq);
    core.finish_response(&mut cancelled, &auth, now, &mut rng)
        .expect("200 to CANCEL signed");
    assert!(
        !cancelled
            .header("Authentication-Info")
            .expect("signed")
            .contains("gssapi-data="),
        "the 200 to a CANCEL took the AP-REP"
    );
    // The signed final response carries opaque (and the AP-REP when mutual).
    let mut ok = response_to(&m, 200, "OK", &["Expires: 3600"]);
    core.finish_response(&mut ok, &auth, now, &mut rng)
        .expect("sign");
    let info = ok.header("Authentication-Info").expect("signed").to_owned();
    assert!(info.starts_with("Kerberos "), "{info}");
    assert_eq!(info.contains("gssapi-data="), mutual, "{info}");
    c.verify_server(&ok)
        .expect("the client verifies the gateway's MIC");
    let rspauth = AuthHeader::parse(&info)
        .expect("parse")
        .param("rspauth")
        .expect("rspauth")
        .len();
    assert_eq!(rspauth, 2 * mic_len, "MIC token length for this enctype");
    assert_eq!(c.opaque.as_deref(), Some(sa.opaque().to_string().as_str()));

    // Later requests signed by the client verify; a tampered one and a replay do not.
    for _ in 0..3 {
        let text = c.request("MESSAGE");
        let m = c.credentials(&text, None, true);
        let a = match decide(core, &m, now, &mut rng) {
            Decision::Authenticated(a) => a,
            other => panic!("signed MESSAGE refused: {other:?}"),
        };
        let mut resp = response_to(&m, 200, "OK", &[]);
        core.finish_response(&mut resp, &a, now, &mut rng)
            .expect("sign");
        c.verify_server(&resp).expect("verifies");
        match decide(core, &m, now, &mut rng) {
            Decision::Challenge(ch) => assert_eq!(ch.cause, Some(Reason::Replay)),
            other => panic!("replay accepted: {other:?}"),
        }
    }
    let text = c.request("MESSAGE");
    let m = c.credentials(&text, None, true);
    let tampered = parse(
        &String::from_utf8(m.to_bytes())
            .expect("utf8")
            .replace("krb-", "krc-"),
    );
    match decide(core, &tampered, now, &mut rng) {
        Decision::Challenge(ch) => assert_eq!(ch.cause, Some(Reason::BadSignature)),
        other => panic!("tampered message accepted: {other:?}"),
    }
    // The AP-REQ again: MIT's replay cache refuses it.
    let text = c.request("REGISTER");
    let again = c.credentials(&text, Some(&ap_req), false);
    match decide(core, &again, now, &mut rng) {
        Decision::Challenge(ch) => assert_eq!(ch.cause, Some(Reason::ReplayedToken)),
        other => panic!("replayed AP-REQ accepted: {other:?}"),
    }
    let snap = core.counters().snapshot();
    assert_eq!(snap.scheme(Scheme::Kerberos).handshakes_completed, 1);
}

#[test]
fn kerberos_sign_in_with_an_aes_service_key() {
    let Some(k) = kdc::kdc(kdc::KdcOptions::default()) else {
        return;
    };
    let core = core_for(k, kdc::AES_FQDN, &k.aes_keytab);
    sign_in(&core, k, kdc::AES_FQDN, false, 28);
}

#[test]
fn kerberos_sign_in_with_mutual_authentication() {
    let Some(k) = kdc::kdc(kdc::KdcOptions::default()) else {
        return;
    };
    let core = core_for(k, kdc::AES_FQDN, &k.aes_keytab);
    sign_in(&core, k, kdc::AES_FQDN, true, 28);
}

/// The gateway's mode: every AP-REQ goes to a worker and back, with the same outcome, counters,
/// SA, AP-REP and replay refusal as inline.
#[test]
fn kerberos_sign_in_offloaded_to_a_worker() {
    let Some(k) = kdc::kdc(kdc::KdcOptions::default()) else {
        return;
    };
    for mutual in [false, true] {
        let core = core_for(k, kdc::AES_FQDN, &k.aes_keytab).with_kerberos_offload();
        sign_in(&core, k, kdc::AES_FQDN, mutual, 28);
        let snap = core.counters().snapshot();
        assert_eq!(snap.scheme(Scheme::Kerberos).handshakes_started, 2);
        assert_eq!(
            snap.handshake_failures(Scheme::Kerberos, Reason::ReplayedToken),
            1
        );
    }
}

/// A token that is no framed AP-REQ is refused on the spot: it never waits for a worker, so
/// anyone sending garbage in `gssapi-data` cannot fill the Kerberos queue (`kerberos_queue`) and
/// turn real sign-ins away with 503.
#[test]
fn malformed_tokens_never_reach_a_worker() {
    let Some(k) = kdc::kdc(kdc::KdcOptions::default()) else {
        return;
    };
    let core = core_for(k, kdc::AES_FQDN, &k.aes_keytab).with_kerberos_offload();
    let mut rng = rng();
    let ccache = k.kinit(kdc::ALICE, kdc::ALICE_PW, None);
    let (good, session) = initiate(kdc::AES_FQDN, Some(&ccache), false).expect("AP-REQ");
    let mut c = KrbClient::new(session, kdc::AES_FQDN);
    for token in [
        b"garbage, not a token".to_vec(),
        good[..good.len() / 2].to_vec(),
    ] {
        let text = c.request("REGISTER");
        let m = c.credentials(&text, Some(&token), false);
        match core.on_request(&m, &ctx(), SystemTime::now(), &mut rng) {
            Decision::Challenge(ch) => assert_eq!(ch.cause, Some(Reason::MalformedToken)),
            other => panic!("{other:?}"),
        }
    }
}

/// A stand-in for the pool's store: `SET NX`, or down.
#[derive(Default)]
struct SharedRegistry {
    seen: std::sync::Mutex<std::collections::HashMap<[u8; 32], Duration>>,
    down: std::sync::atomic::AtomicBool,
}

impl sagw_auth::KerberosReplayRegistry for SharedRegistry {
    fn first_use(&self, key: &[u8; 32], ttl: Duration) -> sagw_auth::ReplayCheck {
        if self.down.load(std::sync::atomic::Ordering::Relaxed) {
            return sagw_auth::ReplayCheck::Unavailable;
        }
        match self.seen.lock().expect("lock").insert(*key, ttl) {
            None => sagw_auth::ReplayCheck::First,
            Some(_) => sagw_auth::ReplayCheck::Replayed,
        }
    }
}

/// Two gateways with their own MIT replay caches and one registry: an AP-REQ accepted by one is
/// refused by the other (also with its ap-options flipped); with the registry down it is taken on
/// MIT's word, and counted.
#[test]
fn the_replay_registry_refuses_an_authenticator_used_on_another_node() {
    let Some(k) = kdc::kdc(kdc::KdcOptions::default()) else {
        return;
    };
    let registry = Arc::new(SharedRegistry::default());
    let node = |offload: bool| {
        let core = core_for(k, kdc::AES_FQDN, &k.aes_keytab)
            .with_kerberos_replay_registry(registry.clone());
        if offload {
            core.with_kerberos_offload()
        } else {
            core
        }
    };
    let (a, b) = (node(true), node(false));
    let ccache = k.kinit(kdc::ALICE, kdc::ALICE_PW, None);
    let (ap_req, session) = initiate(kdc::AES_FQDN, Some(&ccache), false).expect("AP-REQ");
    let mut c = KrbClient::new(session, kdc::AES_FQDN);
    let mut rng = rng();
    let now = SystemTime::now();
    // Signed: without mutual authentication a version-4 client signs the AP-REQ's request.
    let text = c.request("REGISTER");
    let m = c.credentials(&text, Some(&ap_req), true);
    assert!(matches!(
        decide(&a, &m, now, &mut rng),
        Decision::Authenticated(_)
    ));
    let ttl = *registry
        .seen
        .lock()
        .expect("lock")
        .values()
        .next()
        .expect("registered");
    assert_eq!(ttl, Duration::from_secs(600), "twice the 300 s clock skew");
    match decide(&b, &m, now, &mut rng) {
        Decision::Challenge(ch) => assert_eq!(ch.cause, Some(Reason::ReplayedToken)),
        other => panic!("replay on another node accepted: {other:?}"),
    }
    // ap-options ([2] BIT STRING, in the clear) flipped: a new token, the same authenticator.
    let at = ap_req
        .windows(5)
        .position(|w| w == [0xa2, 0x07, 0x03, 0x05, 0x00])
        .expect("ap-options");
    let mut flipped = ap_req.clone();
    flipped[at + 5] ^= 0x20;
    let c_node = node(true);
    let text = c.request("REGISTER");
    let m2 = c.credentials(&text, Some(&flipped), true);
    match decide(&c_node, &m2, now, &mut rng) {
        Decision::Challenge(ch) => assert_eq!(ch.cause, Some(Reason::ReplayedToken)),
        other => panic!("flipped ap-options dodged the registry: {other:?}"),
    }
    assert_eq!(registry.seen.lock().expect("lock").len(), 1);

    // The store is down: a fresh AP-REQ is accepted (MIT's cache ran) and counted.
    registry
        .down
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let (ap_req2, s2) = initiate(kdc::AES_FQDN, Some(&ccache), false).expect("AP-REQ");
    let mut c2 = KrbClient::new(s2, kdc::AES_FQDN);
    let text = c2.request("REGISTER");
    let m3 = c2.credentials(&text, Some(&ap_req2), true);
    assert!(matches!(
        decide(&b, &m3, now, &mut rng),
        Decision::Authenticated(_)
    ));
    assert_eq!(b.kerberos_replay_unavailable(), 1);
}

#[test]
fn kerberos_sign_in_with_an_rc4_service_key() {
    let Some(k) = kdc::kdc(kdc::KdcOptions::default()) else {
        return;
    };
    let core = core_for(k, kdc::RC4_FQDN, &k.rc4_keytab);
    sign_in(&core, k, kdc::RC4_FQDN, false, 37);
}

/// With the domain's accounts beside a credentials file (`[auth.domain]`), a Kerberos principal
/// is a domain account: it never takes an identity a file user signs in as, as over NTLM (B14).
/// Before, domain alice, refused over NTLM, signed in with a ticket as the file's alice. A KDC
/// alone (no domain, no directory) still serves the file's users under their own names.
#[test]
fn a_kerberos_principal_of_the_domain_cannot_take_a_file_users_identity() {
    let Some(k) = kdc::kdc(kdc::KdcOptions::default()) else {
        return;
    };
    let mut file = FileCredentialStore::new();
    file.add_password("alice", "file-alice-pw", &[]);
    let file = Arc::new(file);
    let acceptor = || {
        let mut cfg = KerberosConfig::new(kdc::AES_FQDN);
        cfg.keytab = Some(k.aes_keytab.clone());
        cfg.replay_cache = Some(k.rcache());
        Box::new(MitKerberos::new(
            KerberosAcceptor::new(cfg).expect("acceptor"),
        ))
    };
    let with_domain = SecurityCore::new(CoreConfig::new("example.test"), file.clone())
        .with_kerberos(acceptor(), None)
        .with_domain_ntlm(
            Arc::new(domain_support::FakeDomain::with(&[])),
            sagw_auth::DomainSettings {
                retry_after_secs: 7,
            },
        );
    let kdc_alone =
        SecurityCore::new(CoreConfig::new("example.test"), file).with_kerberos(acceptor(), None);
    let ccache = k.kinit(kdc::ALICE, kdc::ALICE_PW, None);
    let mut rng = rng();
    for (core, taken) in [(&with_domain, true), (&kdc_alone, false)] {
        let (ap_req, session) = initiate(kdc::AES_FQDN, Some(&ccache), false).expect("AP-REQ");
        let mut c = KrbClient::new(session, kdc::AES_FQDN);
        let text = c.request("REGISTER");
        let m = c.credentials(&text, Some(&ap_req), true);
        match decide(core, &m, SystemTime::now(), &mut rng) {
            Decision::Challenge(ch) if taken => {
                assert_eq!(ch.cause, Some(Reason::IdentityTaken))
            }
            Decision::Authenticated(a) if !taken => {
                assert_eq!(a.identity, "sip:alice@example.test")
            }
            other => panic!("domain beside the file: {taken}: {other:?}"),
        }
    }
    assert!(with_domain.sas().is_empty());
}

#[test]
fn kerberos_bad_tokens_are_challenged_with_a_reason() {
    let Some(k) = kdc::kdc(kdc::KdcOptions::default()) else {
        return;
    };
    let core = core_for(k, kdc::AES_FQDN, &k.aes_keytab);
    let mut rng = rng();
    let ccache = k.kinit(kdc::ALICE, kdc::ALICE_PW, None);
    let (other_ticket, session) = initiate(kdc::OTHER_FQDN, Some(&ccache), false).expect("AP-REQ");
    let mut c = KrbClient::new(session, kdc::AES_FQDN);
    let (good, _) = initiate(kdc::AES_FQDN, Some(&ccache), false).expect("AP-REQ");
    let cases: Vec<(Vec<u8>, Reason)> = vec![
        (b"garbage, not a token".to_vec(), Reason::MalformedToken),
        (good[..good.len() / 2].to_vec(), Reason::MalformedToken),
        (other_ticket, Reason::WrongService),
    ];
    for (token, expected) in cases {
        let text = c.request("REGISTER");
        let m = c.credentials(&text, Some(&token), false);
        match core.on_request(&m, &ctx(), SystemTime::now(), &mut rng) {
            Decision::Challenge(ch) => assert_eq!(ch.cause, Some(expected)),
            other => panic!("{expected:?}: {other:?}"),
        }
    }
    // A targetname that is not ours never reaches the acceptor.
    c.targetname = "sip/elsewhere.example.test".into();
    let text = c.request("REGISTER");
    let m = c.credentials(&text, Some(&good), false);
    match core.on_request(&m, &ctx(), SystemTime::now(), &mut rng) {
        Decision::Challenge(ch) => assert_eq!(ch.cause, Some(Reason::SaMismatch)),
        other => panic!("{other:?}"),
    }
    let snap = core.counters().snapshot();
    assert_eq!(
        snap.handshake_failures(Scheme::Kerberos, Reason::WrongService),
        1
    );
    assert!(core.sas().is_empty());
    let _ = Duration::ZERO;
}

/// alice's REGISTER carrying a new AP-REQ for the AES service (`mutual` authentication asked or
/// not), signed when `signed`: what a client sends on the Kerberos leg.
fn alice_ap_req_register(k: &kdc::TestKdc, mutual: bool, signed: bool) -> Message {
    let ccache = k.kinit(kdc::ALICE, kdc::ALICE_PW, None);
    let (ap_req, session) = initiate(kdc::AES_FQDN, Some(&ccache), mutual).expect("AP-REQ");
    let mut c = KrbClient::new(session, kdc::AES_FQDN);
    let text = c.request("REGISTER");
    c.credentials(&text, Some(&ap_req), signed)
}

/// Under version 4 an AP-REQ that completes the client's context (no mutual authentication, no
/// AP-REP) comes in a signed request (notes §6.1): without the signature nothing ties the ticket
/// to the request around it, and whoever captured a victim's AP-REQ (a server the victim's
/// client also signs in to, a tap on a plain link) had any request of its choosing taken as the
/// victim's. Refused now, as an NTLM final leg is; with mutual authentication the client cannot
/// sign yet, and is taken.
#[test]
fn an_unsigned_ap_req_that_needs_no_ap_rep_is_refused_under_version_4() {
    let Some(k) = kdc::kdc(kdc::KdcOptions::default()) else {
        return;
    };
    let core = core_for(k, kdc::AES_FQDN, &k.aes_keytab);
    let mut rng = rng();
    let m = alice_ap_req_register(k, false, false);
    match decide(&core, &m, SystemTime::now(), &mut rng) {
        Decision::Challenge(ch) => assert_eq!(ch.cause, Some(Reason::Unsigned)),
        other => panic!("an unsigned AP-REQ was taken: {other:?}"),
    }
    // Mutual: the client has no key to sign with until the AP-REP; taken unsigned.
    let m = alice_ap_req_register(k, true, false);
    assert!(
        matches!(
            decide(&core, &m, SystemTime::now(), &mut rng),
            Decision::Authenticated(_)
        ),
        "mutual authentication, unsigned"
    );
}

/// A worker's outcome is for the request it was run for, judged again at once: one that request
/// did not take (dropped before the stage) goes when it has been judged, and the same token in
/// another request is a new job, which the replay cache refuses. Before, the outcome waited 10 s
/// for any request with that token to take it, past the replay cache.
#[test]
fn an_outcome_its_request_did_not_take_is_not_left_for_another() {
    let Some(k) = kdc::kdc(kdc::KdcOptions::default()) else {
        return;
    };
    let core = core_for(k, kdc::AES_FQDN, &k.aes_keytab).with_kerberos_offload();
    let mut rng = rng();
    let m = alice_ap_req_register(k, false, true);
    let now = SystemTime::now();
    let Decision::Deferred(job) = core.on_request(&m, &ctx(), now, &mut rng) else {
        panic!("offloaded");
    };
    let outcome = std::thread::scope(|s| s.spawn(|| core.run_job(&job)).join().expect("worker"));
    core.job_done(*job.key(), outcome, now);
    // Its request never reached the stage again (dropped on the way): judged, all the same.
    core.job_judged(job.key(), now);
    assert_eq!(core.jobs_waiting(), 0);
    // The same request from elsewhere: a new job, and the replay cache has seen the token.
    let Decision::Deferred(again) = core.on_request(&m, &ctx(), now, &mut rng) else {
        panic!("not taken from a leftover outcome");
    };
    match judge_deferred(&core, &again, &m, Scheme::Kerberos, now, &mut rng) {
        Decision::Challenge(ch) => assert_eq!(ch.cause, Some(Reason::ReplayedToken)),
        other => panic!("{other:?}"),
    }
}

/// A ticket past its end (MIT takes one up to its clock skew late) makes no SA: bounded by that
/// end, it would be over before its first message. Here the gateway's clock is two days on.
#[test]
fn a_ticket_past_its_end_makes_no_sa() {
    let Some(k) = kdc::kdc(kdc::KdcOptions::default()) else {
        return;
    };
    let core = core_for(k, kdc::AES_FQDN, &k.aes_keytab);
    let mut rng = rng();
    let m = alice_ap_req_register(k, false, true);
    let later = SystemTime::now() + Duration::from_secs(2 * 86_400);
    match decide(&core, &m, later, &mut rng) {
        Decision::Challenge(ch) => assert_eq!(ch.cause, Some(Reason::TicketExpired)),
        other => panic!("{other:?}"),
    }
    assert!(core.sas().is_empty());
}
