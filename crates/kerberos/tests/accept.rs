//! Accept/sign/verify against a real MIT KDC (see tests/support).

mod support;

use std::path::Path;
use std::time::{Duration, SystemTime};

use sagw_kerberos::initiator::{self, InitiatorOptions, Mutual, Sequencing};
use sagw_kerberos::{
    ClientRealms, Enctype, Fault, KerberosAcceptor, KerberosConfig, KerberosError, MicFormat,
};
use support::{
    AES_FQDN, ALICE, ALICE_PW, BOB, BOB_PW, KdcOptions, OTHER_FQDN, RC4_FQDN, REALM, STALE_FQDN,
    TestKdc,
};

/// A signature buffer as [MS-SIPAE] builds it (version 4 layout).
const BUFFER: &[u8] =
    b"<Kerberos><41c2a0b4><3><EXAMPLE.TEST><sip/gw.example.test><6E2B01F4><REGISTER>\
<sip:alice@example.test><8a1b7c2d><sip:alice@example.test><><><><><200>";

fn kdc() -> Option<&'static TestKdc> {
    support::kdc(KdcOptions::default())
}

fn acceptor(kdc: &TestKdc, fqdn: &str, keytab: &Path) -> KerberosAcceptor {
    let mut cfg = KerberosConfig::new(fqdn);
    cfg.keytab = Some(keytab.to_path_buf());
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
fn round_trip(fqdn: &str, keytab: &Path, enctype: Enctype, mic_len: usize, format: MicFormat) {
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
    client
        .verify_mic(BUFFER, &server_mic)
        .expect("client verifies server MIC");

    // Client -> server.
    let client_mic = client.get_mic(BUFFER).expect("client get_mic");
    assert_eq!(client_mic.len(), mic_len);
    server
        .verify_mic(BUFFER, &client_mic)
        .expect("server verifies client MIC");

    match format {
        MicFormat::Rfc4121 => {
            // TOK_ID 04 04; Flags: SentByAcceptor (0x01) only on server tokens.
            assert_eq!(&server_mic[..2], &[0x04, 0x04]);
            assert_eq!(&client_mic[..2], &[0x04, 0x04]);
            assert_eq!(
                server_mic[2] & 0x01,
                0x01,
                "server token flags SentByAcceptor"
            );
            assert_eq!(client_mic[2] & 0x01, 0x00);
            assert_eq!(&server_mic[3..8], &[0xff; 5]);
        }
        MicFormat::Rfc4757 => {
            // GSS framing, krb5 OID, TOK_ID 01 01, SGN_ALG 11 00 (HMAC-MD5).
            let header = [
                0x60, 0x23, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x12, 0x01, 0x02, 0x02, 0x01,
                0x01, 0x11, 0x00, 0xff, 0xff, 0xff, 0xff,
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
    round_trip(
        RC4_FQDN,
        &kdc.rc4_keytab,
        Enctype::Rc4Hmac,
        37,
        MicFormat::Rfc4757,
    );
}

#[test]
fn mutual_auth_returns_ap_rep_that_the_initiator_accepts() {
    let Some(kdc) = kdc() else { return };
    let ccache = kdc.kinit(ALICE, ALICE_PW, None);
    let acc = acceptor(kdc, AES_FQDN, &kdc.aes_keytab);

    let (ap_req, mut client) =
        initiator::initiate(AES_FQDN, Some(&ccache), true).expect("initiate");
    assert!(!client.is_established());
    assert!(matches!(
        client.get_mic(BUFFER),
        Err(KerberosError::NotEstablished)
    ));

    let accepted = acc.accept(&ap_req).expect("accept");
    let ap_rep = accepted.ap_rep.clone().expect("AP-REP for mutual auth");
    // GSS framing + krb5 OID + TOK_ID 02 00 (AP-REP), then APPLICATION 15.
    assert_eq!(ap_rep[0], 0x60);
    let krb5_oid = [
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x12, 0x01, 0x02, 0x02,
    ];
    let at = ap_rep
        .windows(krb5_oid.len())
        .position(|w| w == krb5_oid)
        .expect("krb5 OID in AP-REP token");
    assert!(at <= 4, "OID right after the outer length");
    let inner = &ap_rep[at + krb5_oid.len()..];
    assert_eq!(&inner[..2], &[0x02, 0x00]);
    assert_eq!(inner[2], 0x6f);

    // A damaged AP-REP is refused by a fresh initiator context.
    let (_, mut other_client) =
        initiator::initiate(AES_FQDN, Some(&ccache), true).expect("initiate 2");
    let mut bad = ap_rep.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0x01;
    assert!(other_client.finish(&bad).is_err());
    assert!(!other_client.is_established());

    client
        .finish(&ap_rep)
        .expect("initiator accepts the AP-REP");
    assert!(client.is_established());
    assert!(client.finish(&ap_rep).is_err(), "no second AP-REP");

    let server = &accepted.session;
    let c = client.get_mic(BUFFER).unwrap();
    server.verify_mic(BUFFER, &c).expect("client MIC");
    let s = server.get_mic(BUFFER).unwrap();
    client.verify_mic(BUFFER, &s).expect("server MIC");
    assert_eq!(c.len(), 28);
    assert_eq!(s.len(), 28);
    // With mutual auth MIT's acceptor adds its own subkey (RFC 4121
    // AcceptorSubkey flag, 0x04) to the tokens it sends.
    assert_eq!(s[2] & 0x04, 0x04, "acceptor subkey flag");
}

#[test]
fn sequencing_warnings_are_not_errors_but_bad_checksums_are() {
    let Some(kdc) = kdc() else { return };
    let ccache = kdc.kinit(ALICE, ALICE_PW, None);
    let acc = acceptor(kdc, AES_FQDN, &kdc.aes_keytab);
    let options = InitiatorOptions {
        mutual: Mutual::NotRequested,
        sequencing: Sequencing::ReplayAndSequence,
    };
    let (ap_req, client) =
        initiator::initiate_with(AES_FQDN, Some(&ccache), options).expect("initiate");
    let server = acc.accept(&ap_req).expect("accept").session;

    let m1 = client.get_mic(b"<one>").unwrap();
    let m2 = client.get_mic(b"<two>").unwrap();
    let m3 = client.get_mic(b"<three>").unwrap();
    assert_eq!(
        server.verify_mic_with_sequence(b"<one>", &m1).unwrap(),
        None
    );
    // Same token twice: MIT flags a duplicate, we still accept it.
    assert_eq!(
        server.verify_mic_with_sequence(b"<one>", &m1).unwrap(),
        Some(sagw_kerberos::SequenceWarning::Duplicate)
    );
    server
        .verify_mic(b"<one>", &m1)
        .expect("duplicate is not an error");
    // Skipping m2: a gap; then m2 late: unsequenced.
    assert_eq!(
        server.verify_mic_with_sequence(b"<three>", &m3).unwrap(),
        Some(sagw_kerberos::SequenceWarning::Gap)
    );
    assert!(
        server
            .verify_mic_with_sequence(b"<two>", &m2)
            .unwrap()
            .is_some(),
        "late token reported as out of sequence"
    );
    server
        .verify_mic(b"<two>", &m2)
        .expect("out of order is not an error");

    // Integrity failures are errors, whatever the sequence state.
    for i in 0..m1.len() {
        let mut bad = m1.clone();
        bad[i] ^= 0x01;
        assert!(
            server.verify_mic(b"<one>", &bad).is_err(),
            "flipped bit in token byte {i} must fail"
        );
    }
    assert!(matches!(
        server.verify_mic(b"<onf>", &m1),
        Err(KerberosError::BadMic)
    ));
    assert!(matches!(
        server.verify_mic(b"<one>", &m1[..27]),
        Err(KerberosError::BadMic)
    ));
    assert!(matches!(
        server.verify_mic(b"<one>", &[]),
        Err(KerberosError::BadMic)
    ));
    assert!(matches!(
        server.verify_mic(b"<one>", &[0x60, 0x23, 0x06]),
        Err(KerberosError::BadMic)
    ));
}

#[test]
fn garbage_and_truncated_tokens_are_malformed_not_panics() {
    let Some(kdc) = kdc() else { return };
    let ccache = kdc.kinit(ALICE, ALICE_PW, None);
    let acc = acceptor(kdc, AES_FQDN, &kdc.aes_keytab);

    for junk in [
        &b""[..],
        b"\x00",
        b"garbage bytes that are not a token",
        b"NTLMSSP\x00\x01\x00\x00\x00\x07\x82\x08\xa2",
        &[0x60, 0x82, 0xff, 0xff],
        &[0x60, 0x05, 0x06, 0x09, 0x2a],
        &[0xa0; 64],
    ] {
        let err = acc.accept(junk).expect_err("junk must be rejected");
        assert!(
            matches!(err, KerberosError::Malformed { .. }),
            "{junk:02x?} gave {err:?}"
        );
    }

    let (ap_req, _client) = initiator::initiate(AES_FQDN, Some(&ccache), false).unwrap();
    for cut in (0..ap_req.len()).step_by(7).chain([ap_req.len() - 1]) {
        let err = acc
            .accept(&ap_req[..cut])
            .expect_err("truncated AP-REQ accepted");
        assert!(
            matches!(err, KerberosError::Malformed { .. }),
            "cut at {cut}: {err:?}"
        );
    }
    // The untouched token still works: failed attempts did not poison it.
    acc.accept(&ap_req).expect("intact AP-REQ");

    // Corrupt DER inside a correctly framed token (the tag of the AP-REQ
    // SEQUENCE, the pvno tag): MIT cannot decode it.
    for pos in [21usize, 25] {
        let (ap_req, _client) = initiator::initiate(AES_FQDN, Some(&ccache), false).unwrap();
        let mut bad = ap_req.clone();
        bad[pos] ^= 0x20;
        let err = acc.accept(&bad).expect_err("corrupt AP-REQ accepted");
        assert!(
            matches!(err, KerberosError::Malformed { .. }),
            "byte {pos}: {err:?}"
        );
    }

    // A flipped bit in the authenticator ciphertext breaks its checksum.
    let (ap_req, _client) = initiator::initiate(AES_FQDN, Some(&ccache), false).unwrap();
    let mut bad = ap_req.clone();
    let last = bad.len() - 3;
    bad[last] ^= 0x80;
    let err = acc.accept(&bad).expect_err("tampered AP-REQ accepted");
    assert!(matches!(err, KerberosError::Integrity { .. }), "{err:?}");
}

#[test]
fn ticket_for_another_service_is_wrong_service() {
    let Some(kdc) = kdc() else { return };
    let ccache = kdc.kinit(ALICE, ALICE_PW, None);
    let acc = acceptor(kdc, AES_FQDN, &kdc.aes_keytab);
    let (ap_req, _c) = initiator::initiate(OTHER_FQDN, Some(&ccache), false).unwrap();
    let err = acc
        .accept(&ap_req)
        .expect_err("ticket for sip/other accepted");
    assert!(matches!(err, KerberosError::WrongService { .. }), "{err:?}");
    assert!(err.to_string().contains("targetname"), "{err}");
}

#[test]
fn stale_keytab_is_no_key_and_wrong_key_is_integrity() {
    let Some(kdc) = kdc() else { return };
    let ccache = kdc.kinit(ALICE, ALICE_PW, None);

    // Keytab has the principal, but at the kvno before the re-key.
    let stale = acceptor(kdc, STALE_FQDN, &kdc.stale_keytab);
    let (ap_req, _c) = initiator::initiate(STALE_FQDN, Some(&ccache), false).unwrap();
    let err = stale.accept(&ap_req).expect_err("stale keytab accepted");
    assert!(matches!(err, KerberosError::NoKey { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("sip/stale.example.test@EXAMPLE.TEST"),
        "{err}"
    );

    // Right kvno, other key: the ticket does not decrypt.
    let wrong = acceptor(kdc, AES_FQDN, &kdc.wrong_key_keytab);
    let (ap_req, _c) = initiator::initiate(AES_FQDN, Some(&ccache), false).unwrap();
    let err = wrong.accept(&ap_req).expect_err("wrong key accepted");
    assert!(matches!(err, KerberosError::Integrity { .. }), "{err:?}");
    assert_eq!(err.fault(), Fault::Either);
}

#[test]
fn keytab_without_the_principal_fails_at_new() {
    let Some(kdc) = kdc() else { return };
    let mut cfg = KerberosConfig::new(AES_FQDN);
    cfg.keytab = Some(kdc.rc4_keytab.clone());
    let err = KerberosAcceptor::new(cfg).expect_err("rc4 keytab has no sip/gw key");
    assert!(matches!(err, KerberosError::NoKey { .. }), "{err:?}");
    assert!(
        err.to_string().contains("sip/gw.example.test@EXAMPLE.TEST"),
        "{err}"
    );

    let mut cfg = KerberosConfig::new(AES_FQDN);
    cfg.keytab = Some(kdc.dir().join("does-not-exist.keytab"));
    let err = KerberosAcceptor::new(cfg).expect_err("missing keytab");
    assert!(matches!(err, KerberosError::NoKey { .. }), "{err:?}");
}

#[test]
fn default_keytab_comes_from_krb5_ktname() {
    let Some(kdc) = kdc() else { return };
    let ccache = kdc.kinit(BOB, BOB_PW, None);
    // support::kdc() set KRB5_KTNAME to the AES keytab.
    let mut cfg = KerberosConfig::new(AES_FQDN);
    cfg.replay_cache = Some(kdc.rcache());
    let acc = KerberosAcceptor::new(cfg).expect("acceptor from KRB5_KTNAME");
    let (ap_req, _c) = initiator::initiate(AES_FQDN, Some(&ccache), false).unwrap();
    let accepted = acc.accept(&ap_req).expect("accept");
    assert_eq!(accepted.client_principal, format!("{BOB}@{REALM}"));
}

#[test]
fn replayed_ap_req_is_refused_by_the_replay_cache() {
    let Some(kdc) = kdc() else { return };
    let ccache = kdc.kinit(ALICE, ALICE_PW, None);
    let rcache = kdc.rcache();
    let mut cfg = KerberosConfig::new(AES_FQDN);
    cfg.keytab = Some(kdc.aes_keytab.clone());
    cfg.replay_cache = Some(rcache.clone());
    let acc = KerberosAcceptor::new(cfg.clone()).unwrap();

    let (ap_req, _c) = initiator::initiate(AES_FQDN, Some(&ccache), false).unwrap();
    acc.accept(&ap_req).expect("first use");
    let err = acc.accept(&ap_req).expect_err("replay accepted");
    assert!(matches!(err, KerberosError::Replay), "{err:?}");
    assert_eq!(err.fault(), Fault::Client);

    // The cache is a file: a second acceptor (restart, other worker) on the
    // same file also refuses it ...
    let acc2 = KerberosAcceptor::new(cfg.clone()).unwrap();
    assert!(matches!(acc2.accept(&ap_req), Err(KerberosError::Replay)));
    // ... while one with its own cache accepts it, so the rejection above
    // really comes from the replay cache.
    cfg.replay_cache = Some(kdc.rcache());
    let acc3 = KerberosAcceptor::new(cfg).unwrap();
    acc3.accept(&ap_req).expect("fresh replay cache");

    // A new AP-REQ from the same ticket is fine.
    let (ap_req2, _c) = initiator::initiate(AES_FQDN, Some(&ccache), false).unwrap();
    acc.accept(&ap_req2).expect("new authenticator");
}

#[test]
fn client_clock_ahead_is_clock_skew() {
    let Some(kdc) = kdc() else { return };
    let ccache = kdc.kinit(ALICE, ALICE_PW, None);
    let acc = acceptor(kdc, AES_FQDN, &kdc.aes_keytab);
    // Fetch the service ticket with a correct clock (the KDC would refuse a
    // skewed TGS-REQ), then make the client believe it is an hour later.
    let _ = initiator::initiate(AES_FQDN, Some(&ccache), false).unwrap();
    let skewed = kdc.skewed_copy(&ccache, 3600);
    let (ap_req, _c) = initiator::initiate(AES_FQDN, Some(&skewed), false).unwrap();
    let err = acc
        .accept(&ap_req)
        .expect_err("skewed authenticator accepted");
    assert!(matches!(err, KerberosError::ClockSkew { .. }), "{err:?}");
    assert_eq!(acc.effective_clock_skew(), Duration::from_secs(300));

    // Within the skew it is fine.
    let slight = kdc.skewed_copy(&ccache, 120);
    let (ap_req, _c) = initiator::initiate(AES_FQDN, Some(&slight), false).unwrap();
    acc.accept(&ap_req).expect("2 min skew is tolerated");
}

#[test]
fn configuration_errors_are_reported() {
    let Some(kdc) = kdc() else { return };
    let mut cfg = KerberosConfig::new(AES_FQDN);
    cfg.keytab = Some(kdc.aes_keytab.clone());

    let mut strict = cfg.clone();
    strict.max_clock_skew = Duration::from_secs(60);
    let err = KerberosAcceptor::new(strict).expect_err("profile allows 300 s");
    assert!(matches!(err, KerberosError::Config { .. }), "{err:?}");
    assert!(err.to_string().contains("clockskew = 60"), "{err}");

    let mut no_rcache = cfg.clone();
    no_rcache.replay_cache = Some("none:".into());
    assert!(matches!(
        KerberosAcceptor::new(no_rcache),
        Err(KerberosError::Config { .. })
    ));

    for bad in ["", "sip/gw.example.test", "gw@example.test", "gw example"] {
        let mut c = cfg.clone();
        c.service_fqdn = bad.into();
        assert!(
            matches!(KerberosAcceptor::new(c), Err(KerberosError::Config { .. })),
            "{bad:?}"
        );
    }

    let mut realm = cfg.clone();
    realm.realm = Some("OTHER.TEST".into());
    let err = KerberosAcceptor::new(realm).expect_err("keytab has no OTHER.TEST key");
    assert!(matches!(err, KerberosError::NoKey { .. }), "{err:?}");
}

#[test]
fn client_realm_policy() {
    let Some(kdc) = kdc() else { return };
    let ccache = kdc.kinit(ALICE, ALICE_PW, None);
    let mut cfg = KerberosConfig::new(AES_FQDN);
    cfg.keytab = Some(kdc.aes_keytab.clone());
    cfg.replay_cache = Some(kdc.rcache());

    cfg.client_realms = ClientRealms::Listed(vec!["CORP.TEST".into()]);
    let acc = KerberosAcceptor::new(cfg.clone()).unwrap();
    let (ap_req, _c) = initiator::initiate(AES_FQDN, Some(&ccache), false).unwrap();
    let err = acc.accept(&ap_req).expect_err("realm not listed");
    assert!(
        matches!(&err, KerberosError::WrongRealm { client, allowed }
            if client == "alice@EXAMPLE.TEST" && allowed == "CORP.TEST"),
        "{err:?}"
    );

    for policy in [
        ClientRealms::Any,
        ClientRealms::Listed(vec!["CORP.TEST".into(), REALM.into()]),
        ClientRealms::ServiceRealm,
    ] {
        cfg.client_realms = policy;
        let acc = KerberosAcceptor::new(cfg.clone()).unwrap();
        let (ap_req, _c) = initiator::initiate(AES_FQDN, Some(&ccache), false).unwrap();
        acc.accept(&ap_req).expect("realm allowed");
    }
}

#[test]
fn one_acceptor_serves_many_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send<T: Send>() {}
    assert_send_sync::<KerberosAcceptor>();
    assert_send_sync::<sagw_kerberos::KerberosSession>();
    assert_send::<sagw_kerberos::Accepted>();
    assert_send::<initiator::ClientSession>();

    let Some(kdc) = kdc() else { return };
    let ccache = kdc.kinit(ALICE, ALICE_PW, None);
    let acc = acceptor(kdc, AES_FQDN, &kdc.aes_keytab);
    std::thread::scope(|s| {
        for t in 0..4 {
            let (acc, ccache) = (&acc, &ccache);
            s.spawn(move || {
                for i in 0..5 {
                    let (ap_req, client) =
                        initiator::initiate(AES_FQDN, Some(ccache), false).unwrap();
                    let session = acc.accept(&ap_req).expect("accept").session;
                    let msg = format!("<thread {t} message {i}>");
                    let mic = client.get_mic(msg.as_bytes()).unwrap();
                    session.verify_mic(msg.as_bytes(), &mic).expect("verify");
                }
            });
        }
    });
}

#[test]
fn debug_output_shows_no_key_material() {
    let Some(kdc) = kdc() else { return };
    let ccache = kdc.kinit(ALICE, ALICE_PW, None);
    let acc = acceptor(kdc, AES_FQDN, &kdc.aes_keytab);
    let (ap_req, client) = initiator::initiate(AES_FQDN, Some(&ccache), false).unwrap();
    let accepted = acc.accept(&ap_req).unwrap();
    assert_eq!(
        format!("{:?}", accepted.session),
        "KerberosSession { inner: SecContext { enctype: Some(Aes256CtsHmacSha1), .. } }"
    );
    assert_eq!(
        format!("{client:?}"),
        "ClientSession { state: \"established\", enctype: Some(Aes256CtsHmacSha1) }"
    );
    let acc_dbg = format!("{acc:?}");
    assert!(
        acc_dbg.contains("sip/gw.example.test@EXAMPLE.TEST"),
        "{acc_dbg}"
    );
}

#[test]
fn random_mutations_never_panic_or_change_identity() {
    let Some(kdc) = kdc() else { return };
    let ccache = kdc.kinit(ALICE, ALICE_PW, None);
    let acc = acceptor(kdc, AES_FQDN, &kdc.aes_keytab);
    // xorshift64*: deterministic, no extra dependency.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let (ap_req, _c) = initiator::initiate(AES_FQDN, Some(&ccache), false).unwrap();
    let (mut accepted, mut malformed) = (0, 0);
    for round in 0..400 {
        let mut tok = ap_req.clone();
        let edits = 1 + next() % 3;
        for _ in 0..edits {
            let pos = (next() % tok.len() as u64) as usize;
            match next() % 4 {
                0 => tok[pos] ^= 1 << (next() % 8),
                1 => tok[pos] = next() as u8,
                2 => tok.truncate(pos.max(1)),
                _ => tok.insert(pos, next() as u8),
            }
        }
        match acc.accept(&tok) {
            Ok(a) => {
                // Only unauthenticated fields (msg-type, ap-options) can be
                // changed without failing, and never the identity.
                assert_eq!(
                    a.client_principal,
                    format!("{ALICE}@{REALM}"),
                    "round {round}"
                );
                accepted += 1;
            }
            Err(KerberosError::Malformed { .. }) => malformed += 1,
            Err(e @ KerberosError::Gss { .. }) => panic!("round {round}: unclassified {e:?}"),
            Err(_) => {}
        }
    }
    assert!(
        malformed > 100,
        "most random edits break the structure ({malformed})"
    );
    assert!(
        accepted <= 1,
        "one authenticator is accepted at most once ({accepted})"
    );
}

#[test]
fn initiator_without_a_ticket_cache_reports_no_credentials() {
    let Some(kdc) = kdc() else { return };
    let missing = format!("FILE:{}", kdc.dir().join("no-such-ccache").display());
    let err = initiator::initiate(AES_FQDN, Some(&missing), false).expect_err("no ccache");
    assert!(
        matches!(err, KerberosError::NoCredentials { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("kinit"), "{err}");
}

/// The cross-node replay key is the authenticator's ciphertext: found in a real AP-REQ, fresh
/// for every AP-REQ of one ticket, and the same when the clear `ap-options` are flipped (which
/// MIT accepts, so a hash of the whole token could be dodged).
#[test]
fn authenticator_ciphertext_of_real_ap_reqs() {
    let Some(kdc) = kdc() else { return };
    let ccache = kdc.kinit(ALICE, ALICE_PW, None);
    let (a, _c) = initiator::initiate(AES_FQDN, Some(&ccache), false).unwrap();
    let (b, _c) = initiator::initiate(AES_FQDN, Some(&ccache), false).unwrap();
    let ca = sagw_kerberos::authenticator_ciphertext(&a).expect("cipher in a real AP-REQ");
    let cb = sagw_kerberos::authenticator_ciphertext(&b).expect("cipher in a real AP-REQ");
    assert!(ca.len() >= 32, "an AES authenticator: {}", ca.len());
    assert_ne!(ca, cb, "every AP-REQ has its own authenticator");
    // The cipher is the token's tail region, inside it.
    assert!(a.windows(ca.len()).any(|w| w == ca));

    // ap-options: [2] BIT STRING of 32 bits, `a2 07 03 05 00 ..`.
    let at = a
        .windows(5)
        .position(|w| w == [0xa2, 0x07, 0x03, 0x05, 0x00])
        .expect("ap-options in the AP-REQ");
    let mut flipped = a.clone();
    flipped[at + 5] ^= 0x20; // mutual-required
    assert_ne!(flipped, a);
    assert_eq!(
        sagw_kerberos::authenticator_ciphertext(&flipped).expect("still an AP-REQ"),
        ca
    );
    let acc = acceptor(kdc, AES_FQDN, &kdc.aes_keytab);
    acc.accept(&a).expect("original");
    // Another node (its own replay cache) takes the flipped copy: only a key that ignores
    // ap-options lets a shared registry refuse it.
    let other = acceptor(kdc, AES_FQDN, &kdc.aes_keytab);
    other
        .accept(&flipped)
        .expect("MIT accepts flipped ap-options");

    for cut in [0, 1, 10, a.len() / 2, a.len() - 1] {
        assert!(sagw_kerberos::authenticator_ciphertext(&a[..cut]).is_err());
    }
}

/// A session moved to a fresh object (another process would import the same bytes): it verifies
/// the client's MICs and makes MICs the client verifies, and the exporting session keeps working.
#[test]
fn exported_session_imports_and_signs_both_ways() {
    let Some(kdc) = kdc() else { return };
    let ccache = kdc.kinit(ALICE, ALICE_PW, None);
    let acc = acceptor(kdc, AES_FQDN, &kdc.aes_keytab);
    let (ap_req, client) = initiator::initiate(AES_FQDN, Some(&ccache), false).unwrap();
    let accepted = acc.accept(&ap_req).expect("accept");
    let server = accepted.session;
    let first = client.get_mic(BUFFER).unwrap();
    server.verify_mic(BUFFER, &first).expect("before export");

    let token = server.export().expect("export");
    assert!(!token.is_empty());
    // Still usable in place.
    let mic = server.get_mic(BUFFER).expect("exporter still signs");
    client
        .verify_mic(BUFFER, &mic)
        .expect("client verifies the exporter");

    let moved = sagw_kerberos::KerberosSession::import(&token).expect("import");
    assert_eq!(moved.enctype(), server.enctype());
    let from_client = client.get_mic(b"another buffer").unwrap();
    moved
        .verify_mic(b"another buffer", &from_client)
        .expect("imported session verifies a client MIC");
    let from_moved = moved.get_mic(BUFFER).expect("imported session signs");
    client
        .verify_mic(BUFFER, &from_moved)
        .expect("client verifies the imported session's MIC");
    let forged = client.get_mic(b"x").unwrap();
    assert!(moved.verify_mic(b"y", &forged).is_err(), "wrong buffer");

    assert!(sagw_kerberos::KerberosSession::import(b"not a context").is_err());
    assert!(sagw_kerberos::KerberosSession::import(&token[..token.len() / 2]).is_err());
}
