#![no_main]
//! AuthenticateMessage::parse and PendingHandshake::accept never panic on arbitrary bytes.
//! Inputs starting with 0xA5 instead drive the initiator: a genuine AUTHENTICATE (with or without
//! MIC) is built from the fuzz bytes and must be accepted as is; it is then mutated at
//! fuzz-chosen positions and truncated, which must never panic (this reaches the MIC, clock and
//! key-derivation paths that random bytes cannot, since they never carry a valid NTProofStr).
//! Integrity (issue 17, asserted): the genuine message with one byte changed is refused when that
//! byte is covered by the NTProofStr (the NtChallengeResponse field: the proof and the blob it is
//! computed over) or, when the message carries a MIC, anywhere (the MIC covers the whole message).
use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use sagw_ntlm::initiator::{self, ClientInputs, Credentials, MicPolicy};
use sagw_ntlm::{
    AcceptorConfig, AuthenticateMessage, NtHash, NtlmAcceptor, PendingHandshake, ServerIdentity,
};

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_267_438_088)
}

fn acceptor(timestamp: bool) -> NtlmAcceptor {
    let mut cfg = AcceptorConfig::new(ServerIdentity {
        netbios_domain: "COSMO".into(),
        netbios_computer: "COSMO-OCS-R2".into(),
        dns_domain: "cosmo.local".into(),
        dns_computer: "cosmo-ocs-r2.cosmo.local".into(),
        dns_tree: "cosmo.local".into(),
    });
    cfg.include_timestamp = timestamp;
    NtlmAcceptor::new(cfg)
}

static PENDING: LazyLock<[PendingHandshake; 2]> = LazyLock::new(|| {
    let challenge = [0xDD, 0x1B, 0xAA, 0xF4, 0xE7, 0xE2, 0x18, 0xD1];
    [
        acceptor(false).challenge(challenge, now()),
        acceptor(true).challenge(challenge, now()),
    ]
});
static NT: LazyLock<NtHash> = LazyLock::new(|| NtHash::from_password("Pa$$word"));

/// Where the NtChallengeResponse (NTProofStr and the blob it covers) is in an AUTHENTICATE
/// ([MS-NLMP] 2.2.1.3: its length at offset 20, its offset at 24).
fn nt_response(msg: &[u8]) -> std::ops::Range<usize> {
    let len = usize::from(u16::from_le_bytes([msg[20], msg[21]]));
    let off = u32::from_le_bytes([msg[24], msg[25], msg[26], msg[27]]) as usize;
    off.min(msg.len())..(off + len).min(msg.len())
}

fn exercise(bytes: &[u8], pending: &PendingHandshake) -> bool {
    let Ok(msg) = AuthenticateMessage::parse(bytes) else {
        return false;
    };
    let _ = (
        msg.user(),
        msg.domain(),
        msg.workstation(),
        msg.flags(),
        msg.version(),
    );
    let _ = (msg.nt_proof_str(), msg.has_mic());
    match pending.accept(&msg, &NT, now()) {
        Ok(session) => {
            let sig = session.sign_as_client(bytes);
            session
                .verify_from_client(bytes, &sig)
                .expect("own signature verifies");
            true
        }
        Err(_) => false,
    }
}

fuzz_target!(|data: &[u8]| {
    if data.first() != Some(&0xA5) || data.len() < 40 {
        for pending in PENDING.iter() {
            exercise(data, pending);
        }
        return;
    }
    let rest = &data[1..];
    let with_timestamp = rest[0] & 1 == 1;
    let mic = if rest[0] & 2 == 2 {
        MicPolicy::Include
    } else {
        MicPolicy::Omit
    };
    let pending = &PENDING[usize::from(with_timestamp)];
    let client_challenge: [u8; 8] = rest[1..9].try_into().unwrap();
    let random_session_key: [u8; 16] = rest[9..25].try_into().unwrap();
    let mutations = &rest[25..];
    let user =
        String::from_utf8_lossy(&rest[25..25 + usize::from(rest[0] >> 4).min(mutations.len())])
            .into_owned();
    let out = initiator::authenticate(
        &pending.challenge_message(),
        &Credentials {
            user: if user.is_empty() { "u" } else { &user },
            domain: "COSMO",
            nt_hash: &NT,
        },
        &ClientInputs {
            workstation: "WS",
            client_challenge,
            timestamp: now(),
            random_session_key,
            version: [6, 1, 0xB1, 0x1D, 0, 0, 0, 0x0F],
            mic,
        },
    )
    .expect("initiator accepts our challenge");
    assert!(
        exercise(&out.message, pending),
        "genuine AUTHENTICATE must be accepted"
    );

    // One covered byte changed: refused.
    if let [hi, lo, x, ..] = mutations {
        let covered = if mic == MicPolicy::Include {
            0..out.message.len()
        } else {
            nt_response(&out.message)
        };
        if !covered.is_empty() {
            let pos = covered.start + usize::from(u16::from_be_bytes([*hi, *lo])) % covered.len();
            let mut m = out.message.clone();
            m[pos] ^= if *x == 0 { 1 } else { *x };
            assert!(
                !exercise(&m, pending),
                "AUTHENTICATE with byte {pos} changed (covered by {}) was accepted",
                if mic == MicPolicy::Include {
                    "the MIC"
                } else {
                    "the NTProofStr"
                }
            );
        }
    }

    // Mutations: pairs (position, xor mask).
    let mut m = out.message.clone();
    for pair in mutations.chunks_exact(2) {
        let pos = usize::from(pair[0]) * m.len() / 256;
        m[pos] ^= pair[1];
    }
    exercise(&m, pending);
    // Truncation at a fuzz-chosen length.
    let cut = usize::from(*mutations.last().unwrap_or(&0)) * m.len() / 256;
    exercise(&out.message[..cut], pending);
});
