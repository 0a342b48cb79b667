//! Accept/sign/verify against a real MIT KDC (see tests/support).

mod support;

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use sagw_kerberos::initiator::{self, InitiatorOptions, Mutual, Sequencing};
use sagw_kerberos::{
    ClientRealms, Enctype, KerberosAcceptor, KerberosConfig, KerberosError, MicFormat,
};
use support::{
    AES_FQDN, ALICE, ALICE_PW, BOB, BOB_PW, KdcOptions, OTHER_FQDN, RC4_FQDN, REALM, STALE_FQDN,
    TestKdc,
};

/// A signature buffer as [MS-SIPAE] builds it (version 4 layout).
const BUFFER: &[u8] = b"<Kerberos><41c2a0b4><3><EXAMPLE.TEST><sip/gw.example.test><6E2B01F4><REGISTER>\
<sip:alice@example.test><8a1b7c2d><sip:alice@example.test><><><><><200>";

fn kdc() -> Option<&'static TestKdc> {
    support::kdc(KdcOptions::default())
}

fn acceptor(kdc: &TestKdc, fqdn: &str, keytab: &PathBuf) -> KerberosAcceptor {
    let mut cfg = KerberosConfig::new(fqdn);
    cfg.keytab = Some(keytab.clone());
    cfg.replay_cache = Some(kdc.rcache());
    KerberosAcceptor::new(cfg).expect("acceptor")
}

fn seconds_between(a: SystemTime, b: SystemTime) -> f64 {
    match a.duration_since(b) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// Both directions of signing for one service, checking the token format.
fn round_trip(fqdn: &str, keytab: &PathBuf, enctype: Enctype, mic_len: usize, format: MicFormat) {
    let Some(kdc) = kdc() else { return };
    let ccache = kdc.kinit(ALICE, ALICE_PW, Some("1h"));
    let acc = acceptor(kdc, fqdn, keytab);
    assert_eq!(acc.targetname(), format!("sip/{fqdn}"));
    assert_eq!(acc.principal(), format!("sip/{fqdn}@{REALM}"));

    let (ap_req, client) = initiator::initiate(fqdn, Some(&ccache), false).expect("initiate");
    assert!(client.is_established(), "integrity-only context is one leg");
    let before = SystemTime::now();
    let accepted = acc.accept(&ap_req).expect("accept");
    assert_eq!(accepted.client_principal, format!("{ALICE}@{REALM}"));
    assert!(accepted.ap_rep.is_none(), "no AP-REP without mutual auth");
    let end = accepted.ticket_end.expect("ticket end");
    let expected = before + Duration::from_secs(3600);
    assert!(
        seconds_between(end, expected).abs() < 5.0,
        "ticket end {end:?} should be ~1 h from now ({expected:?})"
    );

    let server = &accepted.session;
    assert_eq!(server.enctype(), Some(enctype));
    assert_eq!(client.enctype(), Some(enctype));
    assert_eq!(server.mic_format(), Some(format));
    assert_eq!(enctype.mic_len(), Some(mic_len));

    // Server -> client.
    let server_mic = server.get_mic(BUFFER).expect("server get_mic");
    assert_eq!(server_mic.len(), mic_len);
    client.verify_mic(BUFFER, &server_mic).expect("client verifies server MIC");

    // Client -> server.
    let client_mic = client.get_mic(BUFFER).expect("client get_mic");
    assert_eq!(client_mic.len(), mic_len);
    server.verify_mic(BUFFER, &client_mic).expect("server verifies client MIC");

    match format {
        MicFormat::Rfc4121 => {
            // TOK_ID 04 04; Flags: SentByAcceptor (0x01) only on server tokens.
            assert_eq!(&server_mic[..2], &[0x04, 0x04]);
            assert_eq!(&client_mic[..2], &[0x04, 0x04]);
            assert_eq!(server_mic[2] & 0x01, 0x01, "server token flags SentByAcceptor");
            assert_eq!(client_mic[2] & 0x01, 0x00);
            assert_eq!(&server_mic[3..8], &[0xff; 5]);
        }
        MicFormat::Rfc4757 => {
            // GSS framing, krb5 OID, TOK_ID 01 01, SGN_ALG 11 00 (HMAC-MD5).
            let header = [
                0x60, 0x23, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x12, 0x01, 0x02, 0x02,
                0x01, 0x01, 0x11, 0x00, 0xff, 0xff, 0xff, 0xff,
            ];
            assert_eq!(&server_mic[..21], &header);
            assert_eq!(&client_mic[..21], &header);
        }
        other => panic!("unexpected format {other:?}"),
    }

    // A signature over another buffer, or from the other direction, fails.
    assert!(matches!(
        server.verify_mic(b"<other buffer>", &client_mic),
        Err(KerberosError::BadMic)
    ));
    assert!(matches!(
        server.verify_mic(BUFFER, &server_mic),
        Err(KerberosError::BadMic)
    ));
}

#[test]
fn aes_two_leg_accept_and_mics() {
    let Some(kdc) = kdc() else { return };
    round_trip(
        AES_FQDN,
        &kdc.aes_keytab,
        Enctype::Aes256CtsHmacSha1,
        28,
        MicFormat::Rfc4121,
    );
}

#[test]
fn rc4_only_service_gives_37_byte_tokens() {
    let Some(kdc) = kdc() else { return };
    round_trip(RC4_FQDN, &kdc.rc4_keytab, Enctype::Rc4Hmac, 37, MicFormat::Rfc4757);
}
