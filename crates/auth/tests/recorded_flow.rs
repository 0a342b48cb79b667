//! Vector A through the whole security core: the recorded Office Communicator 2007 R2 sign-in against
//! OCS 2007 R2 (../shared/reference/flows). With the opaque and srand the OCS server drew injected as
//! randomness, its server challenge pinned for that opaque and epid ([`RecordedChallenges`], in
//! place of the keyed MAC no recording can match) and its clock injected as time, the core must issue
//! the same CHALLENGE, accept the recorded AUTHENTICATE, verify the version-4 signature it carries,
//! and sign the recorded 200 OK to the same bytes.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sagw_auth::{
    Binding, ChallengeFamily, CoreConfig, Decision, FileCredentialStore, NtlmSettings, Opaque,
    Reason, RecordedChallenges, Scheme, ScriptedRng, SecurityCore, Transport, TransportContext,
};
use sagw_ntlm::ServerIdentity;
use sagw_sip::Message;

const FLOW: &str = include_str!("../../../../shared/reference/flows/oc2007r2-ntlm-register.txt");
const REQUEST: &[u8] =
    include_bytes!("../../../../shared/reference/flows/oc2007r2-register-request.sip");
const OK_200: &[u8] =
    include_bytes!("../../../../shared/reference/flows/oc2007r2-register-200ok.sip");

/// 2010-03-01 10:08:08 UTC, the client's timestamp in the AUTHENTICATE.
fn recorded_clock() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_267_438_088)
}

fn flow_value(key: &str) -> String {
    FLOW.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .expect("key in flow file")
        .trim()
        .to_owned()
}

/// The server challenge OCS drew for opaque 2BDBAC9D and the client's epid.
const SERVER_CHALLENGE: [u8; 8] = [0xDD, 0x1B, 0xAA, 0xF4, 0xE7, 0xE2, 0x18, 0xD1];
const OPAQUE: Opaque = Opaque(0x2BDB_AC9D);
const EPID: &str = "c8ca638a15";

/// The core OCS was, challenge included.
fn core(password: &str) -> SecurityCore {
    keyed_core(password).with_ntlm_challenges(Box::new(RecordedChallenges::new(&[0x3C; 32]).with(
        OPAQUE,
        EPID,
        SERVER_CHALLENGE,
    )))
}

/// The same configuration, with its own keyed challenges: a gateway that never issued OCS's.
fn keyed_core(password: &str) -> SecurityCore {
    let mut cfg = CoreConfig::new("cosmo.local");
    let mut ntlm = NtlmSettings::new(
        "cosmo-ocs-r2.cosmo.local",
        ServerIdentity {
            netbios_domain: "COSMO".into(),
            netbios_computer: "COSMO-OCS-R2".into(),
            dns_domain: "cosmo.local".into(),
            dns_computer: "cosmo-ocs-r2.cosmo.local".into(),
            dns_tree: "cosmo.local".into(),
        },
    );
    // OCS 2007 R2 (Windows 2003) put Version 5.2.3790 rev 15 in its CHALLENGE.
    ntlm.version = [5, 2, 0xCE, 0x0E, 0, 0, 0, 0x0F];
    cfg.ntlm = Some(ntlm);
    let mut store = FileCredentialStore::new();
    store.add_password("User", password, &[]);
    SecurityCore::new(cfg, Arc::new(store))
}

fn ctx() -> TransportContext {
    TransportContext {
        source: "192.168.172.6:12723".parse().expect("addr"),
        transport: Transport::Tls,
    }
}

/// The recorded REGISTER as the client sent it one leg earlier: empty gssapi-data, no opaque, no
/// signature.
fn first_leg() -> Message {
    let text = std::str::from_utf8(REQUEST).expect("utf8");
    let start = text.find("Proxy-Authorization:").expect("header");
    let end = start + text[start..].find("\r\n").expect("eol");
    let leg1 = format!(
        "{}Proxy-Authorization: NTLM qop=\"auth\", realm=\"SIP Communications Service\", targetname=\"cosmo-ocs-r2.cosmo.local\", version=4, gssapi-data=\"\"{}",
        &text[..start],
        &text[end..]
    );
    Message::parse(leg1.as_bytes()).expect("leg 1 parses")
}

/// Opaque, then srand: the order in which the core draws randomness (the server challenge is not
/// drawn: it is computed from the opaque, the epid and the time window). The opaque's top two bits
/// are the window's tag; at the recorded clock that is 00, which 2BDBAC9D has.
fn recorded_rng() -> ScriptedRng {
    let mut script = Vec::new();
    script.extend_from_slice(&[0x2B, 0xDB, 0xAC, 0x9D]);
    script.extend_from_slice(&[0x96, 0x16, 0x45, 0x4F]);
    ScriptedRng::new(script)
}

#[test]
fn replays_the_oc2007r2_sign_in_byte_for_byte() {
    let core = core("Pa$$word");
    let mut rng = recorded_rng();
    let now = recorded_clock();

    // Leg 2: the CHALLENGE, exactly as OCS sent it, under opaque 2BDBAC9D.
    let challenge = match core.on_request(&first_leg(), &ctx(), now, &mut rng) {
        Decision::Continue(c) => c,
        other => panic!("expected the handshake to continue, got {other:?}"),
    };
    assert_eq!(challenge.status, 407, "the client used Proxy-Authorization");
    assert_eq!(
        challenge.headers[0],
        ("Date", "Mon, 01 Mar 2010 10:08:08 GMT".to_owned())
    );
    let (name, value) = &challenge.headers[1];
    assert_eq!(*name, "Proxy-Authenticate");
    assert!(value.starts_with("NTLM "), "{value}");
    assert!(value.contains("opaque=\"2BDBAC9D\""), "{value}");
    let expected_gssapi = format!("gssapi-data=\"{}\"", flow_value("CHALLENGE_B64"));
    assert!(
        value.contains(&expected_gssapi),
        "CHALLENGE differs from the recording: {value}"
    );

    // Leg 3: the recorded AUTHENTICATE with its version-4 signature.
    let request = Message::parse(REQUEST).expect("request parses");
    let auth = match core.on_request(&request, &ctx(), now, &mut rng) {
        Decision::Authenticated(a) => a,
        other => panic!("expected authentication, got {other:?}"),
    };
    assert_eq!(auth.identity, "sip:user@cosmo.local");
    assert_eq!(auth.scheme, Scheme::Ntlm);
    let Binding::Sa {
        sa,
        family,
        established_now,
    } = &auth.binding
    else {
        panic!("NTLM binds an SA");
    };
    assert!(*established_now);
    assert_eq!(*family, ChallengeFamily::Proxy);
    assert_eq!(sa.opaque().to_string(), "2BDBAC9D");
    assert_eq!(sa.epid(), "c8ca638a15");
    let snap = core.counters().snapshot();
    assert_eq!(
        snap.scheme(Scheme::Ntlm).verified,
        1,
        "the v4 signature was checked"
    );
    assert_eq!(snap.scheme(Scheme::Ntlm).handshakes_completed, 1);

    // The 200 OK: sign the recorded response (its rspauth blanked) with srand 9616454F, snum 1.
    let recorded = std::str::from_utf8(OK_200).expect("utf8");
    let blanked = recorded.replace(
        "01000000E615438A917661BE64000000",
        "00000000000000000000000000000000",
    );
    let mut response = Message::parse(blanked.as_bytes()).expect("200 parses");
    core.finish_response(&mut response, &auth, now, &mut rng)
        .expect("signs");
    assert_eq!(
        String::from_utf8(response.to_bytes()).expect("utf8"),
        recorded,
        "the signed 200 OK must equal the recorded one byte for byte"
    );
}

#[test]
fn the_recorded_authenticate_fails_with_another_password() {
    let core = core("not-the-password");
    let mut rng = recorded_rng();
    let now = recorded_clock();
    assert!(matches!(
        core.on_request(&first_leg(), &ctx(), now, &mut rng),
        Decision::Continue(_)
    ));
    let request = Message::parse(REQUEST).expect("parses");
    match core.on_request(&request, &ctx(), now, &mut rng) {
        Decision::Challenge(c) => {
            assert_eq!(c.cause, Some(Reason::WrongPassword));
            assert_eq!(c.status, 407);
        }
        other => panic!("expected a fresh challenge, got {other:?}"),
    }
    assert!(core.sas().is_empty());
    let snap = core.counters().snapshot();
    assert_eq!(
        snap.handshake_failures(Scheme::Ntlm, Reason::WrongPassword),
        1
    );
}

#[test]
fn the_recorded_authenticate_is_refused_outside_the_clock_skew() {
    let core = core("Pa$$word");
    let mut rng = recorded_rng();
    let late = recorded_clock() + Duration::from_secs(16 * 60);
    assert!(matches!(
        core.on_request(&first_leg(), &ctx(), late, &mut rng),
        Decision::Continue(_)
    ));
    let request = Message::parse(REQUEST).expect("parses");
    match core.on_request(&request, &ctx(), late, &mut rng) {
        Decision::Challenge(c) => assert_eq!(c.cause, Some(Reason::ClockSkew)),
        other => panic!("expected a fresh challenge, got {other:?}"),
    }
}

#[test]
fn the_recorded_final_leg_is_taken_once() {
    let core = core("Pa$$word");
    let mut rng = recorded_rng();
    let now = recorded_clock();
    assert!(matches!(
        core.on_request(&first_leg(), &ctx(), now, &mut rng),
        Decision::Continue(_)
    ));
    let request = Message::parse(REQUEST).expect("parses");
    assert!(matches!(
        core.on_request(&request, &ctx(), now, &mut rng),
        Decision::Authenticated(_)
    ));
    // The same AUTHENTICATE again (a replay): its opaque has its SA already.
    match core.on_request(&request, &ctx(), now, &mut rng) {
        Decision::Challenge(c) => assert_eq!(c.cause, Some(Reason::ReplayedToken)),
        other => panic!("expected a fresh challenge, got {other:?}"),
    }
    // Still refused once that SA is gone, for as long as the challenge could verify.
    assert!(core.sas().revoke(OPAQUE, core.counters()));
    match core.on_request(&request, &ctx(), now + Duration::from_secs(20), &mut rng) {
        Decision::Challenge(c) => assert_eq!(c.cause, Some(Reason::ReplayedToken)),
        other => panic!("expected a fresh challenge, got {other:?}"),
    }
    assert!(core.sas().is_empty());
}

#[test]
fn a_final_leg_for_a_challenge_this_gateway_never_issued_is_challenged_afresh() {
    // No first leg answered since start: there is no challenge key yet, nothing can be ours.
    let core = keyed_core("Pa$$word");
    let mut rng = recorded_rng();
    let request = Message::parse(REQUEST).expect("parses");
    match core.on_request(&request, &ctx(), recorded_clock(), &mut rng) {
        Decision::Challenge(c) => {
            assert_eq!(c.cause, Some(Reason::UnknownHandshake));
            assert!(c.headers.iter().any(|(n, _)| *n == "Date"));
        }
        other => panic!("expected a fresh challenge, got {other:?}"),
    }
    // After a first leg of its own, the recorded AUTHENTICATE (right password, OCS's challenge)
    // meets this gateway's challenge for that opaque, and its NTLMv2 proof fails.
    assert!(matches!(
        core.on_request(&first_leg(), &ctx(), recorded_clock(), &mut rng),
        Decision::Continue(_)
    ));
    match core.on_request(&request, &ctx(), recorded_clock(), &mut rng) {
        Decision::Challenge(c) => assert_eq!(c.cause, Some(Reason::WrongPassword)),
        other => panic!("expected a fresh challenge, got {other:?}"),
    }
    assert!(core.sas().is_empty());
    assert_eq!(core.sas().recent_final_legs(), 0);
}

#[test]
fn the_recorded_final_leg_times_out_after_two_windows() {
    let core = core("Pa$$word");
    let mut rng = recorded_rng();
    assert!(matches!(
        core.on_request(&first_leg(), &ctx(), recorded_clock(), &mut rng),
        Decision::Continue(_)
    ));
    // Issued 8 s into a 30 s window: taken until the end of the next one (52 s on), not after.
    let request = Message::parse(REQUEST).expect("parses");
    let late = recorded_clock() + Duration::from_secs(52);
    match core.on_request(&request, &ctx(), late, &mut rng) {
        Decision::Challenge(c) => assert_eq!(c.cause, Some(Reason::UnknownHandshake)),
        other => panic!("expected a fresh challenge, got {other:?}"),
    }
    let in_time = recorded_clock() + Duration::from_secs(51);
    assert!(matches!(
        core.on_request(&request, &ctx(), in_time, &mut rng),
        Decision::Authenticated(_)
    ));
}
