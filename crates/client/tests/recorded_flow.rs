//! Vector A from the client's side: the endpoint, given the randomness and clock Office
//! Communicator 2007 R2 used, must send the recorded AUTHENTICATE and the recorded signature
//! (`response="0100000029618e9651b65a7764000000"`) on the recorded REGISTER, and must verify the
//! recorded 200 OK's `rspauth`.

use std::ops::Add;
use std::time::{SystemTime, UNIX_EPOCH};

use sagw_auth::ScriptedRng;
use sagw_client::sa::LegParams;
use sagw_client::{
    AuthScheme, BadSignature, ClientMechanism, ClientSa, Endpoint, EndpointConfig, Family,
    LocalAddr, Password, SaScheme, SaTerms, SignatureCheck, Step,
};
use sagw_ntlm::NtHash;
use sagw_ntlm::initiator::{ClientInputs, Credentials, MicPolicy, authenticate};
use sagw_ntlm::time::system_time_from_filetime;
use sagw_sip::{AuthHeader, Message};

const FLOW: &str = include_str!("../../../../shared/reference/flows/oc2007r2-ntlm-register.txt");
const REQUEST: &[u8] =
    include_bytes!("../../../../shared/reference/flows/oc2007r2-register-request.sip");
const OK_200: &[u8] =
    include_bytes!("../../../../shared/reference/flows/oc2007r2-register-200ok.sip");
const TARGET: &str = "cosmo-ocs-r2.cosmo.local";
const REALM: &str = "SIP Communications Service";
const CLIENT_MAC: &str = "0100000029618e9651b65a7764000000";

fn flow_value(key: &str) -> String {
    FLOW.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .expect("key in flow file")
        .trim()
        .to_owned()
}

/// 2010-03-01 10:08:08.xx UTC: the client timestamp inside the recorded AUTHENTICATE (FILETIME
/// 59519A1727B9CA01, sub-second part included).
fn recorded_clock() -> SystemTime {
    let ft = u64::from_le_bytes(unhex("59519A1727B9CA01").try_into().expect("8 bytes"));
    let t = system_time_from_filetime(ft).expect("valid FILETIME");
    assert_eq!(
        t.duration_since(UNIX_EPOCH).expect("after 1970").as_secs(),
        1_267_438_088
    );
    t
}

fn unhex(s: &str) -> Vec<u8> {
    sagw_hex::decode(s).expect("hex")
}

fn param(msg: &Message, header: &str, name: &str) -> Option<String> {
    let v = msg.header(header)?;
    AuthHeader::parse(v).ok()?.param(name).map(str::to_owned)
}

fn recorded_sa() -> ClientSa {
    let out = authenticate(
        &base64_decode(&flow_value("CHALLENGE_B64")),
        &Credentials {
            user: "User",
            domain: "COSMO",
            nt_hash: &NtHash::from_password("Pa$$word"),
        },
        &ClientInputs {
            workstation: "COSMO-OCS-R2",
            client_challenge: unhex("D6AE875CB0FDAA41").try_into().expect("8"),
            timestamp: recorded_clock(),
            random_session_key: unhex("6742FBE37BB1946B49D86A525BD29A9B")
                .try_into()
                .expect("16"),
            version: [5, 2, 0xCE, 0x0E, 0, 0, 0, 0x0F],
            mic: MicPolicy::Omit,
        },
    )
    .expect("initiator");
    ClientSa::new(
        SaScheme::Ntlm,
        ClientMechanism::Ntlm(out.session),
        SaTerms {
            realm: REALM,
            targetname: TARGET,
            version: 4,
            family: Family::Proxy,
        },
        Some("2BDBAC9D".into()),
        recorded_clock(),
    )
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .expect("base64")
}

#[test]
fn client_sa_reproduces_the_recorded_register_signature() {
    let mut sa = recorded_sa();
    let mut msg = Message::parse(REQUEST).expect("recorded REGISTER");
    let token = flow_value("AUTHENTICATE_B64");
    sa.sign_with(
        &mut msg,
        "13317733",
        LegParams {
            gssapi_data: Some(&token),
            version: Some(4),
        },
    )
    .expect("sign");
    assert_eq!(
        param(&msg, "Proxy-Authorization", "response").as_deref(),
        Some(CLIENT_MAC)
    );
    assert_eq!(
        param(&msg, "Proxy-Authorization", "cnum").as_deref(),
        Some("1")
    );
}

#[test]
fn client_sa_verifies_the_recorded_200_ok_and_refuses_tampering_and_replay() {
    let mut sa = recorded_sa();
    let ok = Message::parse(OK_200).expect("recorded 200");
    assert_eq!(sa.verify(&ok), SignatureCheck::Verified { num: 1 });
    // The same message again is a replay of snum 1.
    assert_eq!(
        sa.verify(&ok),
        SignatureCheck::Bad(BadSignature::Replayed(1))
    );

    let mut sa = recorded_sa();
    let text = std::str::from_utf8(OK_200).expect("utf8");
    let tampered =
        Message::parse(text.replace("Expires: 7200", "Expires: 7201").as_bytes()).expect("parses");
    assert!(matches!(
        sa.verify(&tampered),
        SignatureCheck::Bad(BadSignature::Mismatch { .. })
    ));
    // A header for another targetname is not our SA's signature.
    let other = Message::parse(
        text.replace(
            "targetname=\"cosmo-ocs-r2.cosmo.local\"",
            "targetname=\"evil.cosmo.local\"",
        )
        .as_bytes(),
    )
    .expect("parses");
    assert!(matches!(
        sa.verify(&other),
        SignatureCheck::Bad(BadSignature::OtherSa {
            field: "targetname",
            ..
        })
    ));
    let unsigned = Message::parse(
        text.lines()
            .filter(|l| !l.starts_with("Authentication-Info"))
            .collect::<Vec<_>>()
            .join("\r\n")
            .add("\r\n")
            .as_bytes(),
    )
    .expect("parses");
    assert_eq!(sa.verify(&unsigned), SignatureCheck::Unsigned);
}

/// The whole endpoint through the recorded sign-in: with the recorded randomness (Call-ID,
/// From-tag, client challenge, session key, crand) its third REGISTER is the recorded one in every
/// signed field.
#[test]
fn endpoint_walks_the_recorded_sign_in() {
    let mut cfg = EndpointConfig::new("User", "cosmo.local", "c8ca638a15");
    cfg.aor = "sip:user@cosmo.local".into();
    cfg.domain = "COSMO".into();
    cfg.workstation = "COSMO-OCS-R2".into();
    cfg.ntlm_version = [5, 2, 0xCE, 0x0E, 0, 0, 0, 0x0F];
    cfg.password = Some(Password::new("Pa$$word"));
    cfg.schemes = vec![AuthScheme::Ntlm];
    cfg.expires = None;
    let mut ep = Endpoint::new(
        cfg,
        LocalAddr {
            transport: "TLS",
            addr: "192.168.172.6:12723".into(),
        },
    )
    .with_trace();

    let mut script = Vec::new();
    script.extend(unhex("4037df9284354df39065195bd57a4b14")); // Call-ID
    script.extend([0u8; 8 + 5 + 8 + 5]); // branch, tag of legs 1 and 2
    script.extend(unhex("D6AE875CB0FDAA41")); // client challenge
    script.extend(unhex("6742FBE37BB1946B49D86A525BD29A9B")); // random session key
    script.extend([0u8; 8]); // branch of leg 3
    script.extend(unhex("3e49177a52")); // From-tag of leg 3
    script.extend(unhex("13317733")); // crand
    let mut rng = ScriptedRng::new(script);
    let now = recorded_clock();

    let leg1 = ep.start_register(&mut rng).expect("leg 1");
    assert_eq!(leg1.call_id(), Some("4037df9284354df39065195bd57a4b14"));
    let offer = Message::parse(
        format!(
            "SIP/2.0 407 Proxy Authentication Required\r\nFrom: <sip:user@cosmo.local>;tag=x;epid=c8ca638a15\r\nTo: <sip:user@cosmo.local>;tag=s1\r\nCall-ID: 4037df9284354df39065195bd57a4b14\r\nCSeq: 1 REGISTER\r\nDate: Mon, 01 Mar 2010 10:08:08 GMT\r\nProxy-Authenticate: NTLM realm=\"{REALM}\", targetname=\"{TARGET}\", version=4\r\nContent-Length: 0\r\n\r\n"
        )
        .as_bytes(),
    )
    .expect("offer");
    let Step::Send(leg2) = ep.on_response(&offer, now, &mut rng) else {
        panic!("leg 2 expected");
    };
    assert_eq!(
        param(&leg2, "Proxy-Authorization", "gssapi-data").as_deref(),
        Some("")
    );
    let challenge = Message::parse(
        format!(
            "SIP/2.0 407 Proxy Authentication Required\r\nFrom: <sip:user@cosmo.local>;tag=x;epid=c8ca638a15\r\nTo: <sip:user@cosmo.local>;tag=s2\r\nCall-ID: 4037df9284354df39065195bd57a4b14\r\nCSeq: 2 REGISTER\r\nDate: Mon, 01 Mar 2010 10:08:08 GMT\r\nProxy-Authenticate: NTLM opaque=\"2BDBAC9D\", gssapi-data=\"{}\", targetname=\"{TARGET}\", realm=\"{REALM}\", version=4\r\nContent-Length: 0\r\n\r\n",
            flow_value("CHALLENGE_B64")
        )
        .as_bytes(),
    )
    .expect("challenge");
    let Step::Send(leg3) = ep.on_response(&challenge, now, &mut rng) else {
        panic!("leg 3 expected");
    };
    assert_eq!(
        param(&leg3, "Proxy-Authorization", "gssapi-data"),
        Some(flow_value("AUTHENTICATE_B64")),
        "the AUTHENTICATE is the recorded one byte for byte"
    );
    assert_eq!(
        param(&leg3, "Proxy-Authorization", "response").as_deref(),
        Some(CLIENT_MAC)
    );
    assert_eq!(
        param(&leg3, "Proxy-Authorization", "opaque").as_deref(),
        Some("2BDBAC9D")
    );

    let ok = Message::parse(OK_200).expect("200");
    match ep.on_response(&ok, now, &mut rng) {
        Step::Done(c) => {
            assert_eq!(c.status, 200);
            assert_eq!(c.signature, SignatureCheck::Verified { num: 1 });
        }
        other => panic!("sign-in should complete: {other:?}"),
    }
    let reg = ep.registration().expect("registered");
    assert_eq!(reg.opaque.as_deref(), Some("2BDBAC9D"));
    let trace: Vec<String> = ep.take_events().iter().map(|e| e.to_string()).collect();
    let text = trace.join("\n");
    assert!(
        text.contains("skew") || text.contains("Date: Mon, 01 Mar 2010"),
        "{text}"
    );
    assert!(text.contains("signature OK on 200 to REGISTER"), "{text}");
    assert!(text.contains("opaque=2BDBAC9D"), "{text}");
}
