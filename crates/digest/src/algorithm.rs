//! Digest algorithms (RFC 7616 §3.2 / §6.1, adopted for SIP by RFC 8760 §2.1) and the hashing
//! primitives built on them.

use md5::Md5;
use sha2::{Digest as _, Sha256, Sha512_256};
use zeroize::Zeroize;

/// A Digest `algorithm` token.
///
/// The `-sess` variants derive a per-(nonce, cnonce) HA1 from the stored one (RFC 7616 §3.4.2), so
/// a user store keyed by hash function serves both forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Md5,
    Sha256,
    Sha512_256,
    Md5Sess,
    Sha256Sess,
    Sha512_256Sess,
}

impl Algorithm {
    /// Every algorithm this crate implements, strongest first (RFC 8760 §2.6 asks servers to list
    /// challenges in order of preference).
    pub const ALL: [Algorithm; 6] = [
        Algorithm::Sha512_256,
        Algorithm::Sha256,
        Algorithm::Md5,
        Algorithm::Sha512_256Sess,
        Algorithm::Sha256Sess,
        Algorithm::Md5Sess,
    ];

    /// The token as registered in the IANA "HTTP Digest Hash Algorithms" registry.
    pub fn token(&self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha512_256 => "SHA-512-256",
            Algorithm::Md5Sess => "MD5-sess",
            Algorithm::Sha256Sess => "SHA-256-sess",
            Algorithm::Sha512_256Sess => "SHA-512-256-sess",
        }
    }

    /// Parses a token, ignoring ASCII case (tokens are case-insensitive, RFC 7616 §3.3).
    pub fn from_token(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|a| a.token().eq_ignore_ascii_case(s))
    }

    /// The same hash function without session keying: what the user store's HA1 is computed with.
    pub fn base(&self) -> Algorithm {
        match self {
            Algorithm::Md5 | Algorithm::Md5Sess => Algorithm::Md5,
            Algorithm::Sha256 | Algorithm::Sha256Sess => Algorithm::Sha256,
            Algorithm::Sha512_256 | Algorithm::Sha512_256Sess => Algorithm::Sha512_256,
        }
    }

    /// Whether HA1 is re-keyed with nonce and cnonce.
    pub fn is_sess(&self) -> bool {
        *self != self.base()
    }

    /// Output length in bytes (16 for MD5, 32 otherwise).
    pub fn output_len(&self) -> usize {
        match self.base() {
            Algorithm::Md5 => 16,
            _ => 32,
        }
    }

    /// Lower-case hex of `H(data)`; exposed for callers that need the userhash or test tooling.
    pub fn hash_hex(&self, data: &[u8]) -> String {
        let mut h = Hasher::new(*self);
        h.update(data);
        h.finish().to_hex().as_str().to_owned()
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.token())
    }
}

/// Streaming hash over the algorithm's function.
pub(crate) enum Hasher {
    Md5(Md5),
    Sha256(Sha256),
    Sha512_256(Sha512_256),
}

impl Hasher {
    pub(crate) fn new(alg: Algorithm) -> Self {
        match alg.base() {
            Algorithm::Md5 => Hasher::Md5(Md5::new()),
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            _ => Hasher::Sha512_256(Sha512_256::new()),
        }
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Md5(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512_256(h) => h.update(data),
        }
    }

    /// `H(p0 ":" p1 ":" ... )`, the shape of every Digest hash input.
    pub(crate) fn colon_joined(alg: Algorithm, parts: &[&[u8]]) -> DigestBytes {
        let mut h = Hasher::new(alg);
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                h.update(b":");
            }
            h.update(p);
        }
        h.finish()
    }

    pub(crate) fn finish(self) -> DigestBytes {
        let mut out = DigestBytes {
            buf: [0; 32],
            len: 0,
        };
        let written = match self {
            Hasher::Md5(h) => out.fill(&h.finalize()),
            Hasher::Sha256(h) => out.fill(&h.finalize()),
            Hasher::Sha512_256(h) => out.fill(&h.finalize()),
        };
        out.len = written;
        out
    }
}

/// A hash output on the stack (at most 32 bytes), wiped on drop because HA1 and its session form
/// are password equivalents.
pub(crate) struct DigestBytes {
    buf: [u8; 32],
    len: usize,
}

impl DigestBytes {
    /// Copies at most 32 bytes (all callers pass hash outputs, which fit).
    pub(crate) fn copy_of(bytes: &[u8]) -> Self {
        let mut out = DigestBytes {
            buf: [0; 32],
            len: 0,
        };
        out.len = out.fill(bytes);
        out
    }

    fn fill(&mut self, src: &[u8]) -> usize {
        let n = src.len().min(self.buf.len());
        if let (Some(dst), Some(src)) = (self.buf.get_mut(..n), src.get(..n)) {
            dst.copy_from_slice(src);
        }
        n
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
    }

    pub(crate) fn to_hex(&self) -> HexBuf {
        HexBuf::encode(self.as_bytes())
    }
}

impl Drop for DigestBytes {
    fn drop(&mut self) {
        self.buf.zeroize();
    }
}

/// Lower-case hex of a hash output, on the stack and wiped on drop (hex HA1 is the KD secret).
pub(crate) struct HexBuf {
    buf: [u8; 64],
    len: usize,
}

impl HexBuf {
    /// Lower-case hex of `bytes` (at most 32: a hash output; more are cut off), in one
    /// `const_hex` call: its encoder dispatches on the CPU's features per call, too much to pay
    /// per byte.
    pub(crate) fn encode(bytes: &[u8]) -> Self {
        let mut out = HexBuf {
            buf: [0; 64],
            len: 0,
        };
        let bytes = bytes.get(..32).unwrap_or(bytes);
        if let Some(dst) = out.buf.get_mut(..2 * bytes.len())
            && sagw_hex::encode_to_slice(bytes, dst).is_ok()
        {
            out.len = dst.len();
        }
        out
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
    }

    pub(crate) fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever written.
        std::str::from_utf8(self.as_bytes()).unwrap_or("")
    }
}

impl Drop for HexBuf {
    fn drop(&mut self) {
        self.buf.zeroize();
    }
}
