//! Low-level NTLM cryptography ([MS-NLMP] 3.3.2, 3.4.4, 3.4.5), exposed for test vectors,
//! benchmarks and the [`initiator`](crate::initiator).
//!
//! HMAC-MD5 is implemented here on top of the `md-5` compression function so that a keyed
//! state (the MD5 states after the ipad and opad blocks) can be cached per session; it is
//! cross-checked against the `hmac` crate in the tests.

use std::fmt;

use md4::Md4;
use md5::block_api::compress;
use md5::digest::Digest;
use rc4::{KeyInit, Rc4, StreamCipher};
use zeroize::Zeroize;

use crate::NtlmError;
use crate::flags;

/// A 16-byte secret (NTOWFv2, session keys, signing/sealing keys). Zeroized on drop; its
/// `Debug` output is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct Key16([u8; 16]);

impl Key16 {
    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Key16(bytes)
    }

    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl Drop for Key16 {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for Key16 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key16(<redacted>)")
    }
}

/// The NT one-way function of a password, `MD4(UTF-16LE(password))` ([MS-NLMP] 3.3.1): what a
/// credential store keeps instead of the password. Zeroized on drop; `Debug` is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct NtHash([u8; 16]);

impl NtHash {
    /// `MD4(UTF-16LE(password))`.
    pub fn from_password(password: &str) -> Self {
        let mut utf16: Vec<u8> = password.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let mut h = Md4::new();
        h.update(&utf16);
        utf16.zeroize();
        NtHash(h.finalize().into())
    }

    /// Wraps a stored NT hash.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        NtHash(bytes)
    }

    /// The raw hash bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl Drop for NtHash {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for NtHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NtHash(<redacted>)")
    }
}

/// Which side sends the message a key is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client-to-server keys ("Client" mode in [MS-NLMP] 3.4.5).
    ClientToServer,
    /// Server-to-client keys ("Server" mode).
    ServerToClient,
}

/// Whether the 8-byte ESS checksum is RC4-encrypted ([MS-NLMP] 3.4.4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumSealing {
    /// KEY_EXCH negotiated, connectionless: RC4 keyed with `MD5(SealKey || LE32(SeqNum))`, fresh
    /// state per message. This is what MS-SIPAE uses.
    Connectionless,
    /// No key exchange: the checksum is sent as is (the [MS-NLMP] 4.2.4.4 example value).
    Unsealed,
}

const CLIENT_SIGN_MAGIC: &[u8] = b"session key to client-to-server signing key magic constant\0";
const SERVER_SIGN_MAGIC: &[u8] = b"session key to server-to-client signing key magic constant\0";
const CLIENT_SEAL_MAGIC: &[u8] = b"session key to client-to-server sealing key magic constant\0";
const SERVER_SEAL_MAGIC: &[u8] = b"session key to server-to-client sealing key magic constant\0";

const MD5_INIT: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

/// MD5 of the concatenation of `parts`. The keys derived here hash at most 75 bytes: those are
/// padded into one or two blocks on the stack and compressed straight away (measured: ~110
/// instructions a call fewer than through [`Md5Stream`]'s buffer); longer messages take the stream.
fn md5(parts: &[&[u8]]) -> [u8; 16] {
    const ROOM: usize = 128 - 9; // two blocks, less the 0x80 byte and the 64-bit length
    let total: usize = parts.iter().map(|p| p.len()).sum();
    if total > ROOM {
        let mut s = Md5Stream::resume(MD5_INIT, 0);
        for p in parts {
            s.update(p);
        }
        return s.finish();
    }
    let mut blocks = [[0u8; 64]; 2];
    let used = if total + 9 > 64 { 2 } else { 1 };
    {
        let flat = blocks.as_flattened_mut();
        let mut at = 0;
        for p in parts {
            if let Some(dst) = flat.get_mut(at..at + p.len()) {
                dst.copy_from_slice(p);
            }
            at += p.len();
        }
        if let Some(b) = flat.get_mut(at) {
            *b = 0x80;
        }
        let end = used * 64;
        if let Some(dst) = flat.get_mut(end - 8..end) {
            dst.copy_from_slice(&((total as u64) * 8).to_le_bytes());
        }
    }
    let mut state = MD5_INIT;
    compress(&mut state, blocks.get(..used).unwrap_or(&[]));
    let out = state_bytes(&state);
    blocks.as_flattened_mut().zeroize();
    state.zeroize();
    out
}

fn state_bytes(state: &[u32; 4]) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (chunk, word) in out.chunks_exact_mut(4).zip(state) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    out
}

/// MD5 over a message whose first whole blocks were already compressed into `state`.
struct Md5Stream {
    state: [u32; 4],
    buf: [u8; 64],
    buf_len: usize,
    total_len: u64,
}

impl Md5Stream {
    fn resume(state: [u32; 4], bytes_done: u64) -> Self {
        Md5Stream {
            state,
            buf: [0; 64],
            buf_len: 0,
            total_len: bytes_done,
        }
    }

    fn update(&mut self, mut data: &[u8]) {
        self.total_len = self.total_len.wrapping_add(data.len() as u64);
        if self.buf_len > 0 {
            let take = (64 - self.buf_len).min(data.len());
            let (head, rest) = data.split_at(take);
            if let Some(dst) = self.buf.get_mut(self.buf_len..self.buf_len + take) {
                dst.copy_from_slice(head);
            }
            self.buf_len += take;
            data = rest;
            if self.buf_len < 64 {
                return;
            }
            compress(&mut self.state, std::slice::from_ref(&self.buf));
            self.buf_len = 0;
        }
        let (blocks, rest) = data.as_chunks::<64>();
        compress(&mut self.state, blocks);
        if let Some(dst) = self.buf.get_mut(..rest.len()) {
            dst.copy_from_slice(rest);
        }
        self.buf_len = rest.len();
    }

    fn finish(mut self) -> [u8; 16] {
        let bit_len = self.total_len.wrapping_mul(8);
        let mut block = [0u8; 64];
        if let (Some(dst), Some(src)) =
            (block.get_mut(..self.buf_len), self.buf.get(..self.buf_len))
        {
            dst.copy_from_slice(src);
        }
        if let Some(b) = block.get_mut(self.buf_len) {
            *b = 0x80;
        }
        if self.buf_len >= 56 {
            compress(&mut self.state, std::slice::from_ref(&block));
            block = [0u8; 64];
        }
        block[56..].copy_from_slice(&bit_len.to_le_bytes());
        compress(&mut self.state, std::slice::from_ref(&block));
        let out = state_bytes(&self.state);
        self.state.zeroize();
        self.buf.zeroize();
        out
    }
}

/// HMAC-MD5 keyed state for a 16-byte key: the MD5 states after the ipad and opad blocks.
/// Computing a MAC from it skips the two key blocks.
#[derive(Clone)]
pub(crate) struct HmacMd5Key {
    inner: [u32; 4],
    outer: [u32; 4],
}

impl HmacMd5Key {
    pub(crate) fn new(key: &[u8; 16]) -> Self {
        let mut block = [0x36u8; 64];
        for (b, k) in block.iter_mut().zip(key) {
            *b ^= k;
        }
        let mut inner = MD5_INIT;
        compress(&mut inner, std::slice::from_ref(&block));
        for b in block.iter_mut() {
            *b ^= 0x36 ^ 0x5c;
        }
        let mut outer = MD5_INIT;
        compress(&mut outer, std::slice::from_ref(&block));
        block.zeroize();
        HmacMd5Key { inner, outer }
    }

    /// HMAC-MD5 of the concatenation of `parts`.
    pub(crate) fn mac(&self, parts: &[&[u8]]) -> [u8; 16] {
        let mut s = self.start();
        for p in parts {
            s.update(p);
        }
        self.finish(s)
    }

    /// The inner hash after the key block: feed it the message, then [`finish`](Self::finish).
    fn start(&self) -> Md5Stream {
        Md5Stream::resume(self.inner, 64)
    }

    /// The MAC of what `s` (from [`start`](Self::start)) was fed.
    fn finish(&self, s: Md5Stream) -> [u8; 16] {
        let inner_hash = s.finish();
        // The outer message is 64 (opad) + 16 bytes: one final padded block.
        let mut block = [0u8; 64];
        block[..16].copy_from_slice(&inner_hash);
        block[16] = 0x80;
        block[56..].copy_from_slice(&((64u64 + 16) * 8).to_le_bytes());
        let mut outer = self.outer;
        compress(&mut outer, std::slice::from_ref(&block));
        let out = state_bytes(&outer);
        outer.zeroize();
        out
    }
}

impl Drop for HmacMd5Key {
    fn drop(&mut self) {
        self.inner.zeroize();
        self.outer.zeroize();
    }
}

/// HMAC-MD5 with a 16-byte key over the concatenation of `parts`.
pub fn hmac_md5(key: &[u8; 16], parts: &[&[u8]]) -> [u8; 16] {
    HmacMd5Key::new(key).mac(parts)
}

/// `RC4K(key, data)` in place: a one-time RC4 instance ([MS-NLMP] 3.1.5.1).
pub fn rc4k(key: &[u8], data: &mut [u8]) -> Result<(), NtlmError> {
    let mut c = Rc4::new_from_slice(key).map_err(|_| NtlmError::InvalidKeyLength)?;
    c.apply_keystream(data);
    Ok(())
}

/// Windows `RtlUpcaseUnicodeString`-like upper-casing: one-to-one character mapping only
/// (a character whose upper case is several characters, like `ß`, is kept).
pub(crate) fn upcase_char(c: char) -> char {
    // The Unicode upper case of an ASCII character is its ASCII upper case, without the tables.
    if c.is_ascii() {
        return c.to_ascii_uppercase();
    }
    let mut up = c.to_uppercase();
    match (up.next(), up.next()) {
        (Some(u), None) => u,
        _ => c,
    }
}

/// `NTOWFv2 = HMAC_MD5(NT hash, UNICODE(Uppercase(user) || domain))` ([MS-NLMP] 3.3.2).
pub fn ntowfv2(nt_hash: &NtHash, user: &str, domain: &str) -> Key16 {
    // The UTF-16LE text goes to the hash through a block-sized buffer on the stack, not a copy of
    // the whole of it on the heap.
    struct Utf16Le {
        buf: [u8; 64],
        len: usize,
        hash: Md5Stream,
    }
    impl Utf16Le {
        fn push(&mut self, unit: u16) {
            if self.len + 2 > self.buf.len() {
                self.hash.update(&self.buf[..self.len]);
                self.len = 0;
            }
            self.buf[self.len..self.len + 2].copy_from_slice(&unit.to_le_bytes());
            self.len += 2;
        }
    }
    let key = HmacMd5Key::new(nt_hash.as_bytes());
    let mut text = Utf16Le {
        buf: [0; 64],
        len: 0,
        hash: key.start(),
    };
    let mut units = [0u16; 2];
    for c in user.chars().map(upcase_char) {
        for u in c.encode_utf16(&mut units) {
            text.push(*u);
        }
    }
    for u in domain.encode_utf16() {
        text.push(u);
    }
    text.hash.update(&text.buf[..text.len]);
    Key16(key.finish(text.hash))
}

/// `NTProofStr = HMAC_MD5(NTOWFv2, ServerChallenge || temp)` where `temp` is the NTLMv2 client
/// challenge blob (the NT response after its first 16 bytes).
pub fn nt_proof_str(ntowfv2: &Key16, server_challenge: &[u8; 8], blob: &[u8]) -> [u8; 16] {
    hmac_md5(ntowfv2.as_bytes(), &[server_challenge, blob])
}

/// `SessionBaseKey = HMAC_MD5(NTOWFv2, NTProofStr)`; for NTLMv2 it is also the KeyExchangeKey.
pub fn session_base_key(ntowfv2: &Key16, nt_proof_str: &[u8; 16]) -> Key16 {
    Key16(hmac_md5(ntowfv2.as_bytes(), &[nt_proof_str]))
}

/// `ExportedSessionKey = RC4K(KeyExchangeKey, EncryptedRandomSessionKey)` (KEY_EXCH negotiated).
pub fn exported_session_key(key_exchange_key: &Key16, encrypted: &[u8; 16]) -> Key16 {
    let mut out = *encrypted;
    // A 16-byte key is always valid for RC4; on the impossible error the output is all-zero
    // rather than the (attacker-known) ciphertext.
    if rc4k(key_exchange_key.as_bytes(), &mut out).is_err() {
        out = [0; 16];
    }
    Key16(out)
}

/// SIGNKEY with extended session security ([MS-NLMP] 3.4.5.2).
pub fn sign_key(exported_session_key: &Key16, direction: Direction) -> Key16 {
    let magic = match direction {
        Direction::ClientToServer => CLIENT_SIGN_MAGIC,
        Direction::ServerToClient => SERVER_SIGN_MAGIC,
    };
    Key16(md5(&[exported_session_key.as_bytes(), magic]))
}

/// SEALKEY with extended session security ([MS-NLMP] 3.4.5.3): 128, 56 or 40 bits of the
/// exported session key depending on NEGOTIATE_128 / NEGOTIATE_56 in `negotiate_flags`.
pub fn seal_key(exported_session_key: &Key16, negotiate_flags: u32, direction: Direction) -> Key16 {
    let esk = exported_session_key.as_bytes();
    let used: &[u8] = if negotiate_flags & flags::NEGOTIATE_128 != 0 {
        esk
    } else if negotiate_flags & flags::NEGOTIATE_56 != 0 {
        &esk[..7]
    } else {
        &esk[..5]
    };
    let magic = match direction {
        Direction::ClientToServer => CLIENT_SEAL_MAGIC,
        Direction::ServerToClient => SERVER_SEAL_MAGIC,
    };
    Key16(md5(&[used, magic]))
}

/// The first `N` bytes of the connectionless per-message RC4 keystream,
/// RC4 keyed with `MD5(SealKey || LE32(seq))` ([MS-NLMP] 3.4).
pub(crate) fn connectionless_keystream<const N: usize>(seal_key: &Key16, seq: u32) -> [u8; N] {
    let mut per_message = Key16(md5(&[seal_key.as_bytes(), &seq.to_le_bytes()]));
    let mut ks = [0u8; N];
    if rc4k(per_message.as_bytes(), &mut ks).is_err() {
        // Unreachable (16-byte key); an all-zero mask only weakens nothing the HMAC protects.
        ks = [0u8; N];
    }
    per_message.0.zeroize();
    ks
}

/// NTLMSSP_MESSAGE_SIGNATURE with extended session security ([MS-NLMP] 3.4.4.2):
/// `LE32(1) || checksum(8) || LE32(seq)`, checksum = `HMAC_MD5(SignKey, LE32(seq) || msg)[0..8]`,
/// RC4-encrypted per `sealing`.
pub fn mac_ess(
    sign_key: &Key16,
    seal_key: &Key16,
    seq: u32,
    msg: &[u8],
    sealing: ChecksumSealing,
) -> [u8; 16] {
    let seq_le = seq.to_le_bytes();
    let h = hmac_md5(sign_key.as_bytes(), &[&seq_le, msg]);
    let mask: [u8; 8] = match sealing {
        ChecksumSealing::Connectionless => connectionless_keystream(seal_key, seq),
        ChecksumSealing::Unsealed => [0; 8],
    };
    let mut out = [0u8; 16];
    out[..4].copy_from_slice(&1u32.to_le_bytes());
    for ((o, c), m) in out[4..12].iter_mut().zip(&h).zip(&mask) {
        *o = c ^ m;
    }
    out[12..].copy_from_slice(&seq_le);
    out
}

/// NTLMSSP_MESSAGE_SIGNATURE without extended session security ([MS-NLMP] 3.4.4.1),
/// connectionless: RC4 keyed with `seal_key` (fresh state) encrypts
/// `RandomPad(0) || CRC32(msg) || 0`, the pad is then zeroed and `seq` XORed into the last field.
pub fn mac_non_ess(seal_key: &[u8], seq: u32, msg: &[u8]) -> Result<[u8; 16], NtlmError> {
    let mut ks = [0u8; 12];
    rc4k(seal_key, &mut ks)?;
    let mut tail = [0u8; 8];
    tail.copy_from_slice(&ks[4..]);
    Ok(non_ess_signature(&tail, seq, msg))
}

/// Non-ESS signature from the keystream bytes 4..12 (the bytes that encrypt CRC32 and SeqNum).
pub(crate) fn non_ess_signature(ks: &[u8; 8], seq: u32, msg: &[u8]) -> [u8; 16] {
    let crc = crc32fast::hash(msg).to_le_bytes();
    let mut out = [0u8; 16];
    out[..4].copy_from_slice(&1u32.to_le_bytes());
    for ((o, c), k) in out[8..12].iter_mut().zip(&crc).zip(&ks[..4]) {
        *o = c ^ k;
    }
    for ((o, s), k) in out[12..].iter_mut().zip(&seq.to_le_bytes()).zip(&ks[4..]) {
        *o = s ^ k;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::{Hmac, Mac};
    use md5::Md5;

    /// Deterministic xorshift so the cross-checks cover many lengths reproducibly.
    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn own_hmac_md5_matches_hmac_crate_for_all_lengths_and_splits() {
        let mut rng = 0x1234_5678_9abc_def1u64;
        for len in 0..300usize {
            let key: [u8; 16] = std::array::from_fn(|_| xorshift(&mut rng) as u8);
            let msg: Vec<u8> = (0..len).map(|_| xorshift(&mut rng) as u8).collect();
            let split = if len == 0 {
                0
            } else {
                (xorshift(&mut rng) as usize) % len
            };
            let (a, b) = msg.split_at(split);
            let ours = hmac_md5(&key, &[a, &[], b]);
            let mut reference = Hmac::<Md5>::new_from_slice(&key).unwrap();
            reference.update(&msg);
            let expected: [u8; 16] = reference.finalize().into_bytes().into();
            assert_eq!(ours, expected, "length {len}, split {split}");
        }
    }

    #[test]
    fn short_md5_matches_the_md5_crate_for_all_lengths_and_splits() {
        let mut rng = 0x0fed_cba9_8765_4321u64;
        for len in 0..200usize {
            let msg: Vec<u8> = (0..len).map(|_| xorshift(&mut rng) as u8).collect();
            let split = if len == 0 {
                0
            } else {
                (xorshift(&mut rng) as usize) % len
            };
            let (a, b) = msg.split_at(split);
            let expected: [u8; 16] = Md5::digest(&msg).into();
            assert_eq!(md5(&[a, b]), expected, "length {len}, split {split}");
        }
    }

    #[test]
    fn rfc2202_hmac_md5_case_2_style_key_of_16_bytes() {
        // RFC 2202 test case 1: key = 0x0b * 16, data = "Hi There".
        let key = [0x0bu8; 16];
        assert_eq!(
            sagw_hex::encode(hmac_md5(&key, &[b"Hi There"])),
            "9294727a3638bb1c13f48ef8158bfc9d"
        );
    }

    #[test]
    fn nt_hash_of_password() {
        // [MS-NLMP] 4.2.2.1.2 NTOWFv1("Password") = MD4(UNICODE("Password")).
        assert_eq!(
            sagw_hex::encode(NtHash::from_password("Password").as_bytes()),
            "a4f49c406510bdcab6824ee7c30fd852"
        );
    }

    #[test]
    fn ntowfv2_is_the_hmac_of_the_whole_utf16_text() {
        let nt = NtHash::from_password("Pa$$word");
        // Lengths around the 64-byte buffer, characters outside the BMP and upper-casing.
        for (user, domain) in [
            ("", ""),
            ("User", "COSMO"),
            ("u".repeat(31).as_str(), "d"),
            ("u".repeat(32).as_str(), "d"),
            ("u".repeat(33).as_str(), "é".repeat(40).as_str()),
            ("ünïcode😀", "dömain😀"),
        ] {
            let mut text = Vec::new();
            for c in user.chars().map(upcase_char) {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    text.extend_from_slice(&u.to_le_bytes());
                }
            }
            for u in domain.encode_utf16() {
                text.extend_from_slice(&u.to_le_bytes());
            }
            let mut reference = Hmac::<Md5>::new_from_slice(nt.as_bytes()).unwrap();
            reference.update(&text);
            let expected: [u8; 16] = reference.finalize().into_bytes().into();
            assert_eq!(
                ntowfv2(&nt, user, domain).as_bytes(),
                &expected,
                "{user} {domain}"
            );
        }
    }

    #[test]
    fn upcase_is_one_to_one() {
        assert_eq!(upcase_char('a'), 'A');
        assert_eq!(upcase_char('é'), 'É');
        assert_eq!(upcase_char('ß'), 'ß');
        assert_eq!(upcase_char('1'), '1');
        // The ASCII shortcut agrees with the Unicode tables.
        for c in (0..128u8).map(char::from) {
            assert_eq!(Some(upcase_char(c)), c.to_uppercase().next(), "{c:?}");
            assert_eq!(c.to_uppercase().count(), 1);
        }
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let k = Key16::from_bytes([0xAB; 16]);
        let h = NtHash::from_bytes([0xCD; 16]);
        assert_eq!(
            format!("{k:?} {h:?}"),
            "Key16(<redacted>) NtHash(<redacted>)"
        );
    }
}
