//! Every published vector: A (recorded OC 2007 R2 <-> OCS 2007 R2 exchange), B (OCS 2007 non-ESS
//! signature), C ([MS-NLMP] 4.2 cryptographic values, including the 4.2.4 AUTHENTICATE_MESSAGE).

mod common;

use common::*;
use sagw_ntlm::crypto::{self, ChecksumSealing, Direction};
use sagw_ntlm::initiator::{self, ClientInputs, Credentials, MicPolicy};
use sagw_ntlm::time::system_time_from_filetime;
use sagw_ntlm::{
    AuthenticateMessage, Key16, NtHash, NtlmSession, signature_from_hex, signature_to_hex,
};

#[test]
fn a_challenge_is_byte_identical_to_the_recorded_ocs_2007_r2_challenge() {
    let pending = acceptor_a().challenge(SERVER_CHALLENGE_A, clock_a());
    assert_eq!(pending.challenge_message(), b64(CHALLENGE_B64));
}

#[test]
fn a_accepts_the_recorded_authenticate_and_reproduces_both_signatures() {
    let pending = acceptor_a().challenge(SERVER_CHALLENGE_A, clock_a());
    let bytes = b64(AUTHENTICATE_B64);
    let msg = AuthenticateMessage::parse(&bytes).unwrap();
    assert_eq!(msg.user(), "User");
    assert_eq!(msg.domain(), "COSMO");
    assert_eq!(msg.workstation(), "COSMO-OCS-R2");
    assert_eq!(msg.flags(), 0x6298_8255);
    assert_eq!(msg.version(), Some([5, 2, 0xCE, 0x0E, 0, 0, 0, 0x0F]));
    assert!(
        !msg.has_mic(),
        "the recorded message has no MIC (payload starts at 72)"
    );
    assert_eq!(
        msg.nt_proof_str().unwrap().to_vec(),
        hexd("8DC0C800AE76ECA606D2B9FBEBD04731")
    );

    let accepted = pending
        .accept_detailed(&msg, &NtHash::from_password(PASSWORD_A), clock_a())
        .unwrap();
    assert_eq!(
        accepted.exported_session_key.as_bytes().to_vec(),
        hexd("6742FBE37BB1946B49D86A525BD29A9B")
    );
    let session = accepted.session;
    assert!(session.is_ess());
    // The v4 REGISTER carrying the AUTHENTICATE is already signed with the new SA (lower-case hex).
    session
        .verify_from_client_hex(REQUEST_BUFFER_A, CLIENT_MAC_A)
        .unwrap();
    session
        .verify_from_client_hex(REQUEST_BUFFER_A, &CLIENT_MAC_A.to_uppercase())
        .unwrap();
    assert_eq!(
        signature_to_hex(&session.sign_as_server(RESPONSE_BUFFER_A)),
        SERVER_MAC_A
    );
    // The mirror pair gives the same values from the client side.
    assert_eq!(
        session.sign_as_client(REQUEST_BUFFER_A).to_vec(),
        hexd(CLIENT_MAC_A)
    );
    session
        .verify_from_server(
            RESPONSE_BUFFER_A,
            &signature_from_hex(SERVER_MAC_A).unwrap(),
        )
        .unwrap();
    // And `accept` (without the key) agrees.
    let s2 = pending
        .accept(&msg, &NtHash::from_password(PASSWORD_A), clock_a())
        .unwrap();
    assert_eq!(
        s2.sign_as_server(RESPONSE_BUFFER_A),
        session.sign_as_server(RESPONSE_BUFFER_A)
    );
}

#[test]
fn a_low_level_functions_give_the_vector_values() {
    let nt = NtHash::from_password(PASSWORD_A);
    let ntowf = crypto::ntowfv2(&nt, "User", "COSMO");
    let bytes = b64(AUTHENTICATE_B64);
    // NT response at 0x8a, 198 bytes; the blob follows the 16-byte NTProofStr.
    let blob = &bytes[0x8a + 16..0x8a + 198];
    let proof = crypto::nt_proof_str(&ntowf, &SERVER_CHALLENGE_A, blob);
    assert_eq!(proof.to_vec(), hexd("8DC0C800AE76ECA606D2B9FBEBD04731"));
    let lmv2 = crypto::hmac_md5(
        ntowf.as_bytes(),
        &[&SERVER_CHALLENGE_A, &hexd("D6AE875CB0FDAA41")],
    );
    assert_eq!(lmv2.to_vec(), hexd("A1E92EFE4E078BF7C5C0049ACC6166C2"));
    let sbk = crypto::session_base_key(&ntowf, &proof);
    let enc: [u8; 16] = hexd("31CB739E1CA80A498591E8AE797115E4").try_into().unwrap();
    let esk = crypto::exported_session_key(&sbk, &enc);
    assert_eq!(
        esk.as_bytes().to_vec(),
        hexd("6742FBE37BB1946B49D86A525BD29A9B")
    );
    let flags = 0x6298_8255;
    let mac_c = crypto::mac_ess(
        &crypto::sign_key(&esk, Direction::ClientToServer),
        &crypto::seal_key(&esk, flags, Direction::ClientToServer),
        100,
        REQUEST_BUFFER_A,
        ChecksumSealing::Connectionless,
    );
    assert_eq!(mac_c.to_vec(), hexd(CLIENT_MAC_A));
    let mac_s = crypto::mac_ess(
        &crypto::sign_key(&esk, Direction::ServerToClient),
        &crypto::seal_key(&esk, flags, Direction::ServerToClient),
        100,
        RESPONSE_BUFFER_A,
        ChecksumSealing::Connectionless,
    );
    assert_eq!(signature_to_hex(&mac_s), SERVER_MAC_A);
}

#[test]
fn a_initiator_reproduces_the_recorded_authenticate_byte_for_byte() {
    let nt = NtHash::from_password(PASSWORD_A);
    let ts = u64::from_le_bytes(hexd("59519A1727B9CA01").try_into().unwrap());
    let out = initiator::authenticate(
        &b64(CHALLENGE_B64),
        &Credentials {
            user: "User",
            domain: "COSMO",
            nt_hash: &nt,
        },
        &ClientInputs {
            workstation: "COSMO-OCS-R2",
            client_challenge: hexd("D6AE875CB0FDAA41").try_into().unwrap(),
            timestamp: system_time_from_filetime(ts).unwrap(),
            random_session_key: hexd("6742FBE37BB1946B49D86A525BD29A9B").try_into().unwrap(),
            version: [5, 2, 0xCE, 0x0E, 0, 0, 0, 0x0F],
            mic: MicPolicy::Omit,
        },
    )
    .unwrap();
    assert_eq!(out.flags, 0x6298_8255);
    assert_eq!(out.message, b64(AUTHENTICATE_B64));
    assert_eq!(
        out.session.sign_as_client(REQUEST_BUFFER_A).to_vec(),
        hexd(CLIENT_MAC_A)
    );
}

#[test]
fn b_non_ess_signature_of_ocs_2007() {
    let key = hexd("5F029153BC025058969548615E7099BA");
    let buf: &[u8] = b"<NTLM><0878F41B><1><SIP Communications Service><ocs1.ocs.provo.novell.com><8592g5DCBa1694i5887m0D0Bt2247b3F38xAE9Fx><3><REGISTER><sip:gabriel@ocs.provo.novell.com><2947328781><B816D65C2300A32CFA6D371F2AF537FD><900><200>";
    let expected = "0100000000000000BF2E52667DDF6DED";
    assert_eq!(
        signature_to_hex(&crypto::mac_non_ess(&key, 100, buf).unwrap()),
        expected
    );
    let session = NtlmSession::non_ess_from_seal_key(&key).unwrap();
    assert!(!session.is_ess());
    assert_eq!(signature_to_hex(&session.sign_as_server(buf)), expected);
    session
        .verify_from_server(buf, &signature_from_hex(expected).unwrap())
        .unwrap();
    let mut tampered = buf.to_vec();
    tampered[10] ^= 1;
    assert!(
        session
            .verify_from_server(&tampered, &signature_from_hex(expected).unwrap())
            .is_err()
    );
}

fn plaintext() -> Vec<u8> {
    "Plaintext"
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect()
}

#[test]
fn c_ms_nlmp_4_2_4_ntlmv2_values() {
    let nt = NtHash::from_password("Password");
    let ntowf = crypto::ntowfv2(&nt, "User", "Domain");
    assert_eq!(
        ntowf.as_bytes().to_vec(),
        hexd("0C868A403BFD7A93A3001EF22EF02E3F")
    );
    let rsk = Key16::from_bytes([0x55; 16]);
    let sign = crypto::sign_key(&rsk, Direction::ClientToServer);
    let seal = crypto::seal_key(&rsk, 0xE28A_8233, Direction::ClientToServer);
    assert_eq!(
        sign.as_bytes().to_vec(),
        hexd("4788DC861B4782F35D43FD98FE1A2D39")
    );
    assert_eq!(
        seal.as_bytes().to_vec(),
        hexd("59F600973CC4960A25480A7C196E4C58")
    );
    let mac = crypto::mac_ess(&sign, &seal, 0, &plaintext(), ChecksumSealing::Unsealed);
    assert_eq!(signature_to_hex(&mac), "0100000070352851F256430900000000");
}

#[test]
fn c_ms_nlmp_4_2_3_ess_56_bit_values() {
    // NTLMv1 with client challenge: KXKEY EB93..., 56-bit seal key, ESS signing key and MAC.
    let kx = Key16::from_bytes(hexd("EB93429A8BD952F8B89C55B87F475EDC").try_into().unwrap());
    let flags = 0x820A_8233; // 56 | VERSION | ESS | TARGET_TYPE_SERVER | ALWAYS_SIGN | NTLM | SEAL | SIGN | OEM | UNICODE
    let seal = crypto::seal_key(&kx, flags, Direction::ClientToServer);
    assert_eq!(
        seal.as_bytes().to_vec(),
        hexd("04DD7F014D8504D265A25CC86A3A7C06")
    );
    let sign = crypto::sign_key(&kx, Direction::ClientToServer);
    assert_eq!(
        sign.as_bytes().to_vec(),
        hexd("60E799BE5C72FC92922AE8EBE961FB8D")
    );
    let mac = crypto::mac_ess(&sign, &seal, 0, &plaintext(), ChecksumSealing::Unsealed);
    assert_eq!(signature_to_hex(&mac), "01000000FF2AEB52F681793A00000000");
}

/// [MS-NLMP] 4.2.4.3 AUTHENTICATE_MESSAGE (Time = 0, ServerChallenge 0123456789abcdef).
pub fn ms_nlmp_v2_authenticate() -> Vec<u8> {
    hexd(
        "4e544c4d53535000 03000000 1800 1800 6c000000 5400 5400 84000000 0c00 0c00 48000000 \
         0800 0800 54000000 1000 1000 5c000000 1000 1000 d8000000 358288e2 0501280a0000000f \
         44006f006d00610069006e00 5500730065007200 43004f004d0050005500540045005200 \
         86c35097ac9cec102554764a57cccc19aaaaaaaaaaaaaaaa \
         68cd0ab851e51c96aabc927bebef6a1c 0101000000000000 0000000000000000 aaaaaaaaaaaaaaaa 00000000 \
         02000c0044006f006d00610069006e00 01000c00530065007200760065007200 0000000000000000 \
         c5dad2544fc9799094ce1ce90bc9d03e",
    )
}

#[test]
fn c_acceptor_accepts_the_ms_nlmp_4_2_4_authenticate_message() {
    let bytes = ms_nlmp_v2_authenticate();
    let msg = AuthenticateMessage::parse(&bytes).unwrap();
    assert_eq!(
        (msg.user(), msg.domain(), msg.workstation()),
        ("User", "Domain", "COMPUTER")
    );
    assert_eq!(
        msg.nt_proof_str().unwrap().to_vec(),
        hexd("68cd0ab851e51c96aabc927bebef6a1c")
    );
    let epoch_1601 = system_time_from_filetime(0).unwrap();
    let pending = acceptor_a().challenge(hexd("0123456789abcdef").try_into().unwrap(), epoch_1601);
    let accepted = pending
        .accept_detailed(&msg, &NtHash::from_password("Password"), epoch_1601)
        .unwrap();
    // KEY_EXCH: the ExportedSessionKey is the client's RandomSessionKey 0x55 * 16.
    assert_eq!(accepted.exported_session_key.as_bytes(), &[0x55; 16]);
    // SessionBaseKey value of 4.2.4.1.2.
    let ntowf = crypto::ntowfv2(&NtHash::from_password("Password"), "User", "Domain");
    let sbk = crypto::session_base_key(&ntowf, &msg.nt_proof_str().unwrap());
    assert_eq!(
        sbk.as_bytes().to_vec(),
        hexd("8de40ccadbc14a82f15cb0ad0de95ca3")
    );
    // 4.2.4.2.3: RC4 of the RandomSessionKey with the KeyExchangeKey.
    let mut enc = [0x55u8; 16];
    crypto::rc4k(sbk.as_bytes(), &mut enc).unwrap();
    assert_eq!(enc.to_vec(), hexd("c5dad2544fc9799094ce1ce90bc9d03e"));
}
