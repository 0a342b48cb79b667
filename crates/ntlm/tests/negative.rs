//! Refusals: wrong password, clock skew, tampered signatures and buffers, legacy and anonymous
//! authentication, truncated and lying messages, bad MIC, missing flags.

mod common;

use std::time::Duration;

use common::*;
use sagw_ntlm::flags;
use sagw_ntlm::initiator::{self, ClientInputs, Credentials, MicPolicy};
use sagw_ntlm::time::system_time_from_filetime;
use sagw_ntlm::{
    AcceptorConfig, AuthenticateMessage, LegacyAuth, NtHash, NtlmAcceptor, NtlmError, NtlmSession,
    signature_from_hex,
};

const LM: usize = 12;
const NT: usize = 20;
const DOMAIN: usize = 28;
const USER: usize = 36;
const WORKSTATION: usize = 44;
const SESSION_KEY: usize = 52;
const FLAGS: usize = 60;

fn set_field(msg: &mut [u8], at: usize, len: u16, offset: u32) {
    msg[at..at + 2].copy_from_slice(&len.to_le_bytes());
    msg[at + 2..at + 4].copy_from_slice(&len.to_le_bytes());
    msg[at + 4..at + 8].copy_from_slice(&offset.to_le_bytes());
}

fn field(msg: &[u8], at: usize) -> (u16, u32) {
    (
        u16::from_le_bytes(msg[at..at + 2].try_into().unwrap()),
        u32::from_le_bytes(msg[at + 4..at + 8].try_into().unwrap()),
    )
}

fn accept_a(bytes: &[u8]) -> Result<NtlmSession, NtlmError> {
    let msg = AuthenticateMessage::parse(bytes)?;
    acceptor_a()
        .challenge(SERVER_CHALLENGE_A, clock_a())
        .accept(&msg, &NtHash::from_password(PASSWORD_A), clock_a())
}

fn session_a() -> NtlmSession {
    accept_a(&b64(AUTHENTICATE_B64)).unwrap()
}

#[test]
fn wrong_password_is_refused() {
    let bytes = b64(AUTHENTICATE_B64);
    let msg = AuthenticateMessage::parse(&bytes).unwrap();
    let pending = acceptor_a().challenge(SERVER_CHALLENGE_A, clock_a());
    for pw in ["Pa$$worD", "", "Pa$$word ", "pa$$word"] {
        assert_eq!(
            pending
                .accept(&msg, &NtHash::from_password(pw), clock_a())
                .unwrap_err(),
            NtlmError::WrongPassword,
            "{pw:?}"
        );
    }
}

#[test]
fn answer_to_another_challenge_is_refused() {
    let bytes = b64(AUTHENTICATE_B64);
    let msg = AuthenticateMessage::parse(&bytes).unwrap();
    let mut other = SERVER_CHALLENGE_A;
    other[7] ^= 1;
    let pending = acceptor_a().challenge(other, clock_a());
    assert_eq!(
        pending
            .accept(&msg, &NtHash::from_password(PASSWORD_A), clock_a())
            .unwrap_err(),
        NtlmError::WrongPassword
    );
}

#[test]
fn user_is_authenticated_case_insensitively_and_domain_exactly() {
    // UserName "User" -> "USER" (same length): NTOWFv2 upper-cases the user, so it still verifies.
    let mut bytes = b64(AUTHENTICATE_B64);
    let (_, user_off) = field(&bytes, USER);
    let upper: Vec<u8> = "USER".encode_utf16().flat_map(u16::to_le_bytes).collect();
    bytes[user_off as usize..user_off as usize + 8].copy_from_slice(&upper);
    assert!(accept_a(&bytes).is_ok());
    // Domain "COSMO" -> "COSMA": refused.
    let mut bytes = b64(AUTHENTICATE_B64);
    let (_, dom_off) = field(&bytes, DOMAIN);
    bytes[dom_off as usize + 8] = b'A';
    assert_eq!(accept_a(&bytes).unwrap_err(), NtlmError::WrongPassword);
}

#[test]
fn clock_skew_beyond_the_limit_is_refused_both_ways() {
    let bytes = b64(AUTHENTICATE_B64);
    let msg = AuthenticateMessage::parse(&bytes).unwrap();
    let pending = acceptor_a().challenge(SERVER_CHALLENGE_A, clock_a());
    let nt = NtHash::from_password(PASSWORD_A);
    let limit = AcceptorConfig::DEFAULT_MAX_CLOCK_SKEW;
    // The client timestamp is 10:08:08.97...; boundaries are measured from its exact value.
    let exact = system_time_from_filetime(u64::from_le_bytes(
        hexd("59519A1727B9CA01").try_into().unwrap(),
    ))
    .unwrap();
    assert!(pending.accept(&msg, &nt, exact + limit).is_ok());
    assert!(pending.accept(&msg, &nt, exact - limit).is_ok());
    assert!(
        pending
            .accept(&msg, &nt, exact + limit + Duration::from_nanos(100))
            .is_err()
    );
    assert!(
        pending
            .accept(&msg, &nt, exact - limit - Duration::from_nanos(100))
            .is_err()
    );
    let late = clock_a() + limit + Duration::from_secs(1);
    assert_eq!(
        pending.accept(&msg, &nt, late).unwrap_err(),
        NtlmError::ClockSkew {
            offset_secs: -901,
            max_secs: 900
        }
    );
    let early = clock_a() - limit - Duration::from_secs(60);
    assert_eq!(
        pending.accept(&msg, &nt, early).unwrap_err(),
        NtlmError::ClockSkew {
            offset_secs: 961,
            max_secs: 900
        }
    );
    // A stricter configuration.
    let mut cfg = config_a();
    cfg.max_clock_skew = Duration::from_secs(5);
    let strict = NtlmAcceptor::new(cfg).challenge(SERVER_CHALLENGE_A, clock_a());
    assert!(matches!(
        strict.accept(&msg, &nt, clock_a() + Duration::from_secs(6)),
        Err(NtlmError::ClockSkew { .. })
    ));
}

#[test]
fn every_flipped_signature_bit_is_refused() {
    let session = session_a();
    let good = signature_from_hex(CLIENT_MAC_A).unwrap();
    session.verify_from_client(REQUEST_BUFFER_A, &good).unwrap();
    for bit in 0..128 {
        let mut sig = good;
        sig[bit / 8] ^= 1 << (bit % 8);
        assert_eq!(
            session.verify_from_client(REQUEST_BUFFER_A, &sig),
            Err(NtlmError::BadSignature),
            "bit {bit}"
        );
    }
    // Wrong lengths and the server's own signature (wrong direction) are refused too.
    assert!(
        session
            .verify_from_client(REQUEST_BUFFER_A, &good[..15])
            .is_err()
    );
    assert!(
        session
            .verify_from_client(REQUEST_BUFFER_A, &[good.as_slice(), &[0]].concat())
            .is_err()
    );
    assert!(session.verify_from_client(REQUEST_BUFFER_A, &[]).is_err());
    let server_sig = session.sign_as_server(REQUEST_BUFFER_A);
    assert!(
        session
            .verify_from_client(REQUEST_BUFFER_A, &server_sig)
            .is_err()
    );
    assert!(
        session
            .verify_from_client_hex(REQUEST_BUFFER_A, "not hex")
            .is_err()
    );
}

#[test]
fn every_flipped_buffer_bit_is_refused() {
    let session = session_a();
    let good = signature_from_hex(CLIENT_MAC_A).unwrap();
    for byte in 0..REQUEST_BUFFER_A.len() {
        for bit in [0, 5] {
            let mut buf = REQUEST_BUFFER_A.to_vec();
            buf[byte] ^= 1 << bit;
            assert_eq!(
                session.verify_from_client(&buf, &good),
                Err(NtlmError::BadSignature)
            );
        }
    }
    let mut longer = REQUEST_BUFFER_A.to_vec();
    longer.push(b'>');
    assert!(session.verify_from_client(&longer, &good).is_err());
    assert!(
        session
            .verify_from_client(&REQUEST_BUFFER_A[1..], &good)
            .is_err()
    );
}

/// [MS-NLMP] 4.2.2.3: a real NTLMv1 AUTHENTICATE_MESSAGE (24-byte LM and NT responses).
fn ntlmv1_authenticate() -> Vec<u8> {
    hexd(
        "4e544c4d53535000 03000000 1800 1800 6c000000 1800 1800 84000000 0c00 0c00 48000000 \
         0800 0800 54000000 1000 1000 5c000000 1000 1000 9c000000 358280e2 0501280a0000000f \
         44006f006d00610069006e00 5500730065007200 43004f004d0050005500540045005200 \
         98def7b87f88aa5dafe2df779688a172def11c7d5ccdef13 \
         67c43011f30298a2ad35ece64f16331c44bdbed927841f94 \
         518822b1b3f350c8958682ecbb3e3cb7",
    )
}

#[test]
fn ntlmv1_lm_only_and_anonymous_are_refused_with_a_reason() {
    let v1 = ntlmv1_authenticate();
    assert_eq!(
        accept_a(&v1).unwrap_err(),
        NtlmError::NotNtlmV2(LegacyAuth::NtlmV1)
    );

    // LM-only: the recorded message with its NT response removed.
    let mut lm_only = b64(AUTHENTICATE_B64);
    set_field(&mut lm_only, NT, 0, 0);
    assert_eq!(
        accept_a(&lm_only).unwrap_err(),
        NtlmError::NotNtlmV2(LegacyAuth::LmOnly)
    );

    // Anonymous: empty user, empty NT response, LM = Z(1) ([MS-NLMP] 3.2.5.1.2).
    let mut anon = b64(AUTHENTICATE_B64);
    set_field(&mut anon, NT, 0, 0);
    set_field(&mut anon, USER, 0, 0);
    let (_, lm_off) = field(&anon, LM);
    anon[lm_off as usize] = 0;
    set_field(&mut anon, LM, 1, lm_off);
    assert_eq!(
        accept_a(&anon).unwrap_err(),
        NtlmError::NotNtlmV2(LegacyAuth::Anonymous)
    );
    set_field(&mut anon, LM, 0, 0);
    assert_eq!(
        accept_a(&anon).unwrap_err(),
        NtlmError::NotNtlmV2(LegacyAuth::Anonymous)
    );
}

#[test]
fn missing_required_flags_are_refused() {
    for flag in [
        flags::NEGOTIATE_EXTENDED_SESSIONSECURITY,
        flags::NEGOTIATE_KEY_EXCH,
        flags::NEGOTIATE_SIGN,
        flags::NEGOTIATE_UNICODE,
    ] {
        let mut bytes = b64(AUTHENTICATE_B64);
        let f = u32::from_le_bytes(bytes[FLAGS..FLAGS + 4].try_into().unwrap()) & !flag;
        bytes[FLAGS..FLAGS + 4].copy_from_slice(&f.to_le_bytes());
        match accept_a(&bytes) {
            Err(NtlmError::MissingFlags(m)) => assert_eq!(m, flag),
            // Without UNICODE the names are OEM and the UTF-16 bytes are not ASCII.
            Err(NtlmError::Malformed(_)) if flag == flags::NEGOTIATE_UNICODE => {}
            other => panic!("flag {flag:#x}: {other:?}"),
        }
    }
}

#[test]
fn every_truncation_of_the_recorded_message_is_refused() {
    let bytes = b64(AUTHENTICATE_B64);
    for len in 0..bytes.len() {
        assert!(
            matches!(
                AuthenticateMessage::parse(&bytes[..len]),
                Err(NtlmError::Malformed(_))
            ),
            "prefix of {len} bytes"
        );
    }
}

#[test]
fn lying_headers_are_refused() {
    let good = b64(AUTHENTICATE_B64);
    let total = good.len() as u32;
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    for (name, at) in [
        ("lm", LM),
        ("nt", NT),
        ("domain", DOMAIN),
        ("user", USER),
        ("ws", WORKSTATION),
        ("key", SESSION_KEY),
    ] {
        let (len, off) = field(&good, at);
        let mut m = good.clone();
        set_field(&mut m, at, len, total - u32::from(len) + 1); // one byte past the end
        cases.push((name, m));
        let mut m = good.clone();
        set_field(&mut m, at, u16::MAX, off); // huge length
        cases.push((name, m));
        let mut m = good.clone();
        set_field(&mut m, at, len.max(1), u32::MAX); // offset overflow
        cases.push((name, m));
        let mut m = good.clone();
        set_field(&mut m, at, len.max(1), 8); // points into the header
        cases.push((name, m));
    }
    let mut bad_sig = good.clone();
    bad_sig[6] = b'Q';
    cases.push(("signature", bad_sig));
    let mut bad_type = good.clone();
    bad_type[8] = 2;
    cases.push(("type", bad_type));
    let mut odd_user = good.clone();
    let (_, uoff) = field(&good, USER);
    set_field(&mut odd_user, USER, 7, uoff);
    cases.push(("odd utf-16", odd_user));
    let mut bad_surrogate = good.clone();
    bad_surrogate[uoff as usize..uoff as usize + 2].copy_from_slice(&0xD800u16.to_le_bytes());
    cases.push(("lone surrogate", bad_surrogate));
    // NTLMv2 blob: RespType 2, AV pair running past the end, no EOL.
    let (nt_len, nt_off) = field(&good, NT);
    let blob = nt_off as usize + 16;
    let mut resp_type = good.clone();
    resp_type[blob] = 2;
    cases.push(("resp type", resp_type));
    let mut av_overrun = good.clone();
    av_overrun[blob + 28 + 2..blob + 28 + 4].copy_from_slice(&0x7fffu16.to_le_bytes());
    cases.push(("av overrun", av_overrun));
    let mut no_eol = good.clone();
    set_field(&mut no_eol, NT, nt_len - 8, nt_off); // cut the EOL and the trailing zeros
    cases.push(("no eol", no_eol));
    let mut short_nt = good.clone();
    set_field(&mut short_nt, NT, 30, nt_off);
    cases.push(("short nt", short_nt));

    for (name, m) in cases {
        assert!(
            matches!(AuthenticateMessage::parse(&m), Err(NtlmError::Malformed(_))),
            "{name}: {:?}",
            AuthenticateMessage::parse(&m).map(|_| ())
        );
    }

    // A parseable message whose EncryptedRandomSessionKey is not 16 bytes.
    let mut short_key = good.clone();
    let (_, koff) = field(&good, SESSION_KEY);
    set_field(&mut short_key, SESSION_KEY, 8, koff);
    assert!(matches!(accept_a(&short_key), Err(NtlmError::Malformed(_))));
}

fn client(challenge: &[u8], mic: MicPolicy, nt: &NtHash) -> initiator::ClientAuthenticate {
    initiator::authenticate(
        challenge,
        &Credentials {
            user: "alice",
            domain: "EXAMPLE",
            nt_hash: nt,
        },
        &ClientInputs {
            workstation: "WS1",
            client_challenge: [9; 8],
            timestamp: clock_a(),
            random_session_key: [0x42; 16],
            version: [10, 0, 0x61, 0x4A, 0, 0, 0, 0x0F],
            mic,
        },
    )
    .unwrap()
}

#[test]
fn mic_is_checked_when_flagged() {
    let mut cfg = config_a();
    cfg.include_timestamp = true;
    let pending = NtlmAcceptor::new(cfg).challenge([3; 8], clock_a());
    let challenge = pending.challenge_message();
    let nt = NtHash::from_password("s3cret");
    let out = client(&challenge, MicPolicy::Include, &nt);
    let check = |bytes: &[u8]| {
        let msg = AuthenticateMessage::parse(bytes)?;
        pending.accept(&msg, &nt, clock_a())
    };
    let msg = AuthenticateMessage::parse(&out.message).unwrap();
    assert!(msg.has_mic());
    check(&out.message).unwrap();

    // Any bit of the MIC.
    for bit in 0..128 {
        let mut m = out.message.clone();
        m[72 + bit / 8] ^= 1 << (bit % 8);
        assert_eq!(check(&m).unwrap_err(), NtlmError::BadMic, "bit {bit}");
    }
    // The workstation name and the Version are only protected by the MIC.
    let mut m = out.message.clone();
    let (_, ws_off) = field(&m, WORKSTATION);
    m[ws_off as usize] ^= 0x20;
    assert_eq!(check(&m).unwrap_err(), NtlmError::BadMic);
    let mut m = out.message.clone();
    m[64] ^= 1;
    assert_eq!(check(&m).unwrap_err(), NtlmError::BadMic);
    // A MIC over a different CHALLENGE (same server challenge, other timestamp) is refused.
    let later = NtlmAcceptor::new({
        let mut c = config_a();
        c.include_timestamp = true;
        c
    })
    .challenge([3; 8], clock_a() + Duration::from_secs(1));
    let msg = AuthenticateMessage::parse(&out.message).unwrap();
    assert_eq!(
        later.accept(&msg, &nt, clock_a()).unwrap_err(),
        NtlmError::BadMic
    );
}

#[test]
fn mic_flag_without_room_for_a_mic_is_malformed() {
    // Build a MIC-flagged message, then move the payload back to offset 72 (no MIC slot).
    let pending = acceptor_a().challenge([5; 8], clock_a());
    let nt = NtHash::from_password("pw");
    let out = client(&pending.challenge_message(), MicPolicy::Include, &nt);
    let mut m = out.message[..72].to_vec();
    m.extend_from_slice(&out.message[88..]);
    for at in [LM, NT, DOMAIN, USER, WORKSTATION, SESSION_KEY] {
        let (len, off) = field(&m, at);
        set_field(&mut m, at, len, off - 16);
    }
    assert!(matches!(
        AuthenticateMessage::parse(&m),
        Err(NtlmError::Malformed(_))
    ));
}

#[test]
fn non_ess_sessions_cannot_come_from_the_acceptor() {
    assert_eq!(
        NtlmSession::from_exported_session_key(&sagw_ntlm::Key16::from_bytes([1; 16]), 0x4000_8215)
            .unwrap_err(),
        NtlmError::MissingFlags(flags::NEGOTIATE_EXTENDED_SESSIONSECURITY)
    );
    assert_eq!(
        NtlmSession::non_ess_from_seal_key(&[]).unwrap_err(),
        NtlmError::InvalidKeyLength
    );
}

#[test]
fn initiator_refuses_weak_challenges() {
    let mut ch = b64(CHALLENGE_B64);
    let f = u32::from_le_bytes(ch[20..24].try_into().unwrap()) & !flags::NEGOTIATE_KEY_EXCH;
    ch[20..24].copy_from_slice(&f.to_le_bytes());
    let nt = NtHash::from_password("pw");
    let r = initiator::authenticate(
        &ch,
        &Credentials {
            user: "u",
            domain: "d",
            nt_hash: &nt,
        },
        &ClientInputs {
            workstation: "w",
            client_challenge: [0; 8],
            timestamp: clock_a(),
            random_session_key: [0; 16],
            version: [0; 8],
            mic: MicPolicy::Omit,
        },
    );
    assert_eq!(
        r.unwrap_err(),
        NtlmError::MissingFlags(flags::NEGOTIATE_KEY_EXCH)
    );
    assert!(
        initiator::authenticate(
            &ch[..40],
            &Credentials {
                user: "u",
                domain: "d",
                nt_hash: &nt
            },
            &ClientInputs {
                workstation: "w",
                client_challenge: [0; 8],
                timestamp: clock_a(),
                random_session_key: [0; 16],
                version: [0; 8],
                mic: MicPolicy::Omit,
            }
        )
        .is_err()
    );
}

/// `Debug` of a parsed AUTHENTICATE and of its precheck shows none of the NT response: with the
/// server challenge it is a record of the password that can be cracked offline.
#[test]
fn debug_output_carries_no_response() {
    let bytes = b64(AUTHENTICATE_B64);
    let msg = AuthenticateMessage::parse(&bytes).unwrap();
    let pending = acceptor_a().challenge(SERVER_CHALLENGE_A, clock_a());
    let pre = pending.precheck(&msg).unwrap();
    let proof: Vec<String> = pre.nt_response()[..4].iter().map(u8::to_string).collect();
    let proof = proof.join(", ");
    for text in [format!("{msg:?}"), format!("{pre:?}")] {
        assert!(!text.contains(&proof), "{text}");
        assert!(!text.contains("nt_response"), "{text}");
        assert!(!text.contains("encrypted_session_key"), "{text}");
    }
    assert!(format!("{msg:?}").contains("user"));
}
