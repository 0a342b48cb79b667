//! Server CPU per NTLM handshake and per MS-SIPAE signature, each beside its crypto floor.
//!
//! Run: `cargo bench -p sagw-ntlm --bench ntlm -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use criterion::{Criterion, criterion_group, criterion_main};
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use rc4::{KeyInit, Rc4, StreamCipher};
use sagw_ntlm::{
    AcceptorConfig, AuthenticateMessage, NtHash, NtlmAcceptor, NtlmSession, ServerIdentity,
    signature_from_hex,
};

const AUTHENTICATE_B64: &str = "TlRMTVNTUAADAAAAGAAYAHIAAADGAMYAigAAAAoACgBIAAAACAAIAFIAAAAYABgAWgAAABAAEABQAQAAVYKYYgUCzg4AAAAPQwBPAFMATQBPAFUAcwBlAHIAQwBPAFMATQBPAC0ATwBDAFMALQBSADIAoeku/k4Hi/fFwASazGFmwtauh1yw/apBjcDIAK527KYG0rn769BHMQEBAAAAAAAAWVGaFye5ygHWrodcsP2qQQAAAAACAAoAQwBPAFMATQBPAAEAGABDAE8AUwBNAE8ALQBPAEMAUwAtAFIAMgAEABYAYwBvAHMAbQBvAC4AbABvAGMAYQBsAAMAMABjAG8AcwBtAG8ALQBvAGMAcwAtAHIAMgAuAGMAbwBzAG0AbwAuAGwAbwBjAGEAbAAFABYAYwBvAHMAbQBvAC4AbABvAGMAYQBsAAAAAAAAAAAAMctznhyoCkmFkeiueXEV5A==";
const REQUEST_BUFFER_A: &[u8] = b"<NTLM><13317733><1><SIP Communications Service><cosmo-ocs-r2.cosmo.local><4037df9284354df39065195bd57a4b14><3><REGISTER><sip:user@cosmo.local><3e49177a52><sip:user@cosmo.local><><><><>";
const CLIENT_MAC_A: &str = "0100000029618e9651b65a7764000000";
const SERVER_CHALLENGE_A: [u8; 8] = [0xDD, 0x1B, 0xAA, 0xF4, 0xE7, 0xE2, 0x18, 0xD1];

type HmacMd5 = Hmac<Md5>;

fn hmac_md5(key: &[u8], parts: &[&[u8]]) -> [u8; 16] {
    let mut m = HmacMd5::new_from_slice(key).unwrap();
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

fn md5(parts: &[&[u8]]) -> [u8; 16] {
    let mut h = Md5::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn rc4(key: &[u8], data: &mut [u8]) {
    Rc4::new_from_slice(key).unwrap().apply_keystream(data);
}

const C_SIGN: &[u8] = b"session key to client-to-server signing key magic constant\0";
const S_SIGN: &[u8] = b"session key to server-to-client signing key magic constant\0";
const C_SEAL: &[u8] = b"session key to client-to-server sealing key magic constant\0";
const S_SEAL: &[u8] = b"session key to server-to-client sealing key magic constant\0";

/// The primitive calls any server must make for a handshake (verify the NTLMv2 proof, derive
/// both directions' keys, verify the request MAC), straight on the RustCrypto crates, without
/// parsing, allocation of messages or any caching. Inputs are pre-extracted from the message.
fn handshake_floor(nt: &[u8; 16], id: &[u8], blob: &[u8], proof: &[u8], enc: &[u8; 16]) -> bool {
    let ntowf = hmac_md5(nt, &[id]);
    let p = hmac_md5(&ntowf, &[&SERVER_CHALLENGE_A, blob]);
    if p != proof {
        return false;
    }
    let sbk = hmac_md5(&ntowf, &[&p]);
    let mut esk = *enc;
    rc4(&sbk, &mut esk);
    let seq = 100u32.to_le_bytes();
    let mut mac = [0u8; 8];
    for (sign, seal) in [(C_SIGN, C_SEAL), (S_SIGN, S_SEAL)] {
        let sign_key = md5(&[&esk, sign]);
        let seal_key = md5(&[&esk, seal]);
        let per_msg = md5(&[&seal_key, &seq]);
        let mut ks = [0u8; 8];
        rc4(&per_msg, &mut ks);
        if sign == C_SIGN {
            let h = hmac_md5(&sign_key, &[&seq, REQUEST_BUFFER_A]);
            for ((m, h), k) in mac.iter_mut().zip(&h).zip(&ks) {
                *m = h ^ k;
            }
        }
    }
    black_box(mac)[0] != 0xFF
}

fn bench_handshake(c: &mut Criterion) {
    let auth = base64::engine::general_purpose::STANDARD
        .decode(AUTHENTICATE_B64)
        .unwrap();
    let mut cfg = AcceptorConfig::new(ServerIdentity {
        netbios_domain: "COSMO".into(),
        netbios_computer: "COSMO-OCS-R2".into(),
        dns_domain: "cosmo.local".into(),
        dns_computer: "cosmo-ocs-r2.cosmo.local".into(),
        dns_tree: "cosmo.local".into(),
    });
    cfg.version = [5, 2, 0xCE, 0x0E, 0, 0, 0, 0x0F];
    let acceptor = NtlmAcceptor::new(cfg);
    let now: SystemTime = UNIX_EPOCH + Duration::from_secs(1_267_438_088);
    let nt = NtHash::from_password("Pa$$word");
    let client_mac = signature_from_hex(CLIENT_MAC_A).unwrap();

    let mut g = c.benchmark_group("handshake");
    g.bench_function(
        "sagw: challenge + parse + accept + verify request MAC",
        |b| {
            b.iter(|| {
                let pending = acceptor.challenge(black_box(SERVER_CHALLENGE_A), now);
                let challenge = pending.challenge_message();
                black_box(&challenge);
                let msg = AuthenticateMessage::parse(black_box(&auth)).unwrap();
                let session = pending.accept(&msg, &nt, now).unwrap();
                session
                    .verify_from_client(REQUEST_BUFFER_A, &client_mac)
                    .unwrap();
                session
            })
        },
    );
    let id: Vec<u8> = "USERCOSMO"
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    let (proof, blob) = auth[0x8a..0x8a + 198].split_at(16);
    let enc: [u8; 16] = auth[0x150..0x160].try_into().unwrap();
    assert!(handshake_floor(nt.as_bytes(), &id, blob, proof, &enc));
    g.bench_function("floor: bare RustCrypto calls of the same handshake", |b| {
        b.iter(|| handshake_floor(nt.as_bytes(), black_box(&id), black_box(blob), proof, &enc))
    });
    g.finish();
}

fn bench_signatures(c: &mut Criterion) {
    let esk = [
        0x67u8, 0x42, 0xFB, 0xE3, 0x7B, 0xB1, 0x94, 0x6B, 0x49, 0xD8, 0x6A, 0x52, 0x5B, 0xD2, 0x9A,
        0x9B,
    ];
    let session =
        NtlmSession::from_exported_session_key(&sagw_ntlm::Key16::from_bytes(esk), 0x6298_8255)
            .unwrap();
    let client_mac = signature_from_hex(CLIENT_MAC_A).unwrap();
    session
        .verify_from_client(REQUEST_BUFFER_A, &client_mac)
        .unwrap();
    let sign_key = md5(&[&esk, S_SIGN]);
    let seal_key = md5(&[&esk, S_SEAL]);
    let seq = 100u32.to_le_bytes();
    let per_msg = md5(&[&seal_key, &seq]);

    println!(
        "size_of::<NtlmSession>() = {} bytes; size_of::<PendingHandshake>() = {} bytes; REGISTER buffer = {} bytes",
        NtlmSession::SIZE,
        std::mem::size_of::<sagw_ntlm::PendingHandshake>(),
        REQUEST_BUFFER_A.len()
    );

    let mut g = c.benchmark_group("signature (REGISTER buffer)");
    g.bench_function("sagw: sign_as_server", |b| {
        b.iter(|| session.sign_as_server(black_box(REQUEST_BUFFER_A)))
    });
    g.bench_function("sagw: verify_from_client", |b| {
        b.iter(|| session.verify_from_client(black_box(REQUEST_BUFFER_A), black_box(&client_mac)))
    });
    g.bench_function("floor: HMAC-MD5 + RC4 (fresh key schedule)", |b| {
        b.iter(|| {
            let h = hmac_md5(&sign_key, &[&seq, black_box(REQUEST_BUFFER_A)]);
            let mut chk = [0u8; 8];
            chk.copy_from_slice(&h[..8]);
            rc4(&per_msg, &mut chk);
            chk
        })
    });
    g.bench_function("floor: HMAC-MD5 alone", |b| {
        b.iter(|| hmac_md5(&sign_key, &[&seq, black_box(REQUEST_BUFFER_A)]))
    });
    g.bench_function("spec as written: HMAC-MD5 + MD5(SealKey||seq) + RC4", |b| {
        b.iter(|| {
            let h = hmac_md5(&sign_key, &[&seq, black_box(REQUEST_BUFFER_A)]);
            let k = md5(&[&seal_key, &seq]);
            let mut chk = [0u8; 8];
            chk.copy_from_slice(&h[..8]);
            rc4(&k, &mut chk);
            chk
        })
    });
    g.finish();
}

criterion_group!(benches, bench_handshake, bench_signatures);
criterion_main!(benches);
