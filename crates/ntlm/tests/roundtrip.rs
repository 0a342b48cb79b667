//! Initiator <-> acceptor round trips with pseudo-random inputs (reproducible xorshift seed).

mod common;

use std::time::Duration;

use common::*;
use sagw_ntlm::crypto::{self, ChecksumSealing, Direction};
use sagw_ntlm::initiator::{self, ClientInputs, Credentials, MicPolicy};
use sagw_ntlm::{
    AcceptorConfig, AuthenticateMessage, NtHash, NtlmAcceptor, NtlmError, ServerIdentity,
};

#[test]
fn random_handshakes_authenticate_and_sign_both_ways() {
    let mut rng = Rng(0x5eed_0001_dead_beef);
    for i in 0..200 {
        let identity = ServerIdentity {
            netbios_domain: rng.name(15).to_uppercase(),
            netbios_computer: rng.name(15).to_uppercase(),
            dns_domain: rng.name(40),
            dns_computer: if i % 3 == 0 {
                String::new()
            } else {
                rng.name(60)
            },
            dns_tree: if i % 4 == 0 {
                String::new()
            } else {
                rng.name(40)
            },
        };
        let mut cfg = AcceptorConfig::new(identity);
        cfg.include_timestamp = i % 2 == 0;
        let acceptor = NtlmAcceptor::new(cfg);
        let now = clock_a() + Duration::from_secs(rng.below(1 << 30));
        let pending = acceptor.challenge(rng.bytes(), now);
        let challenge = pending.challenge_message();

        let user = rng.name(20);
        let domain = rng.name(15);
        let password = rng.name(30);
        let nt = NtHash::from_password(&password);
        let mic = if i % 5 < 2 {
            MicPolicy::Include
        } else {
            MicPolicy::Omit
        };
        // Client clock off by up to +-10 minutes (within the default 15).
        let skew = Duration::from_secs(rng.below(600));
        let client_time = if i % 2 == 0 { now + skew } else { now - skew };
        let out = initiator::authenticate(
            &challenge,
            &Credentials {
                user: &user,
                domain: &domain,
                nt_hash: &nt,
            },
            &ClientInputs {
                workstation: &rng.name(15),
                client_challenge: rng.bytes(),
                timestamp: client_time,
                random_session_key: rng.bytes(),
                version: rng.bytes(),
                mic,
            },
        )
        .unwrap();

        let msg = AuthenticateMessage::parse(&out.message).unwrap();
        assert_eq!((msg.user(), msg.domain()), (user.as_str(), domain.as_str()));
        assert_eq!(msg.has_mic(), mic == MicPolicy::Include);
        let accepted = pending.accept_detailed(&msg, &nt, now).unwrap();
        assert_eq!(accepted.exported_session_key, out.exported_session_key);
        // The split path (the domain verifies the response and returns the SessionBaseKey, as
        // winbind does) gives the same keys.
        let pre = pending.precheck(&msg).unwrap();
        assert_eq!(pre.server_challenge(), pending.server_challenge());
        let nt_response = pre.nt_response();
        let ntowf = crypto::ntowfv2(&nt, &user, &domain);
        let proof: [u8; 16] = nt_response[..16].try_into().unwrap();
        assert_eq!(
            crypto::nt_proof_str(&ntowf, &pending.server_challenge(), &nt_response[16..]),
            proof
        );
        let base = crypto::session_base_key(&ntowf, &proof);
        let split = pending
            .accept_with_session_base_key(&msg, &base, now)
            .unwrap();
        assert_eq!(split.exported_session_key, out.exported_session_key);
        if msg.has_mic() {
            // Another key (the domain vouching for someone else's response) fails the MIC.
            assert_eq!(
                pending
                    .accept_with_session_base_key(&msg, &sagw_ntlm::Key16::from_bytes([9; 16]), now)
                    .unwrap_err(),
                NtlmError::BadMic
            );
        }
        let server = accepted.session;

        let len = rng.below(400) as usize;
        let buf: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let c_sig = out.session.sign_as_client(&buf);
        server.verify_from_client(&buf, &c_sig).unwrap();
        let s_sig = server.sign_as_server(&buf);
        out.session.verify_from_server(&buf, &s_sig).unwrap();
        assert_ne!(c_sig, s_sig, "directions use different keys");
        // Independent recomputation with the low-level functions.
        let esk = &out.exported_session_key;
        let expect = crypto::mac_ess(
            &crypto::sign_key(esk, Direction::ClientToServer),
            &crypto::seal_key(esk, out.flags, Direction::ClientToServer),
            100,
            &buf,
            ChecksumSealing::Connectionless,
        );
        assert_eq!(c_sig, expect);

        // A wrong password for the same message is refused.
        let wrong = NtHash::from_password(&format!("{password}x"));
        assert_eq!(
            pending.accept(&msg, &wrong, now).unwrap_err(),
            NtlmError::WrongPassword
        );
    }
}

#[test]
fn client_timestamp_is_checked_when_the_challenge_has_none() {
    let pending = acceptor_a().challenge([1; 8], clock_a());
    let nt = NtHash::from_password("pw");
    let build = |client_time| {
        initiator::authenticate(
            &pending.challenge_message(),
            &Credentials {
                user: "bob",
                domain: "D",
                nt_hash: &nt,
            },
            &ClientInputs {
                workstation: "W",
                client_challenge: [2; 8],
                timestamp: client_time,
                random_session_key: [3; 16],
                version: [0; 8],
                mic: MicPolicy::Omit,
            },
        )
        .unwrap()
        .message
    };
    let ok = build(clock_a() + Duration::from_secs(14 * 60));
    assert!(
        pending
            .accept(&AuthenticateMessage::parse(&ok).unwrap(), &nt, clock_a())
            .is_ok()
    );
    let skewed = build(clock_a() + Duration::from_secs(20 * 60));
    assert_eq!(
        pending
            .accept(
                &AuthenticateMessage::parse(&skewed).unwrap(),
                &nt,
                clock_a()
            )
            .unwrap_err(),
        NtlmError::ClockSkew {
            offset_secs: 1200,
            max_secs: 900
        }
    );
}

#[test]
fn challenge_timestamp_bounds_the_handshake_age() {
    // With MsvAvTimestamp in the challenge, the client echoes it: the check limits how long after
    // the CHALLENGE an AUTHENTICATE is accepted.
    let mut cfg = config_a();
    cfg.include_timestamp = true;
    let pending = NtlmAcceptor::new(cfg).challenge([1; 8], clock_a());
    let nt = NtHash::from_password("pw");
    let out = initiator::authenticate(
        &pending.challenge_message(),
        &Credentials {
            user: "bob",
            domain: "D",
            nt_hash: &nt,
        },
        &ClientInputs {
            workstation: "W",
            client_challenge: [2; 8],
            timestamp: clock_a() - Duration::from_secs(3600), // ignored: the challenge has a time
            random_session_key: [3; 16],
            version: [0; 8],
            mic: MicPolicy::Include,
        },
    )
    .unwrap();
    let msg = AuthenticateMessage::parse(&out.message).unwrap();
    assert!(
        pending
            .accept(&msg, &nt, clock_a() + Duration::from_secs(60))
            .is_ok()
    );
    assert!(matches!(
        pending.accept(&msg, &nt, clock_a() + Duration::from_secs(16 * 60)),
        Err(NtlmError::ClockSkew { .. })
    ));
}

#[test]
fn state_sizes() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<sagw_ntlm::PendingHandshake>();
    send_sync::<NtlmAcceptor>();
    send_sync::<sagw_ntlm::NtlmSession>();
    let pending = std::mem::size_of::<sagw_ntlm::PendingHandshake>();
    let session = std::mem::size_of::<sagw_ntlm::NtlmSession>();
    println!("size_of PendingHandshake = {pending}, NtlmSession = {session}");
    // 84 bytes of signing state, 20 to move the session to another gateway of a pool.
    assert!(pending <= 32 && session <= 120);
}
