//! Randomness comes from the caller, so a recorded flow replays with the same challenge, `opaque` and
//! `srand`, and so the core never reaches for an OS facility on its own.

/// A source of random bytes. The gateway passes a CSPRNG; tests pass scripted bytes.
pub trait Rng {
    /// Fills `buf` with random bytes (challenge keys, `opaque`s, `srand`, Digest nonce salts).
    fn fill_bytes(&mut self, buf: &mut [u8]);
}

impl<R: Rng + ?Sized> Rng for &mut R {
    fn fill_bytes(&mut self, buf: &mut [u8]) {
        (**self).fill_bytes(buf)
    }
}

/// Replays a fixed byte script, then continues with a deterministic pseudo-random sequence (so a
/// test that draws more than it scripted still gets distinct values). For tests and recorded-flow
/// replays only: it is obviously not random.
#[derive(Debug, Clone)]
pub struct ScriptedRng {
    script: Vec<u8>,
    pos: usize,
    after: XorShiftRng,
}

impl ScriptedRng {
    /// Returns the bytes of `script` first, in order.
    pub fn new(script: impl Into<Vec<u8>>) -> Self {
        ScriptedRng {
            script: script.into(),
            pos: 0,
            after: XorShiftRng::new(0x5C21_97ED),
        }
    }

    /// Appends bytes the next calls will return after what is already queued.
    pub fn push(&mut self, bytes: &[u8]) {
        self.script.drain(..self.pos.min(self.script.len()));
        self.pos = 0;
        self.script.extend_from_slice(bytes);
    }
}

impl Rng for ScriptedRng {
    fn fill_bytes(&mut self, buf: &mut [u8]) {
        for b in buf.iter_mut() {
            match self.script.get(self.pos) {
                Some(v) => {
                    *b = *v;
                    self.pos += 1;
                }
                None => self.after.fill_bytes(std::slice::from_mut(b)),
            }
        }
    }
}

/// A fast non-cryptographic generator (xorshift64*) for benchmarks and load tests. Not for production.
#[derive(Debug, Clone)]
pub struct XorShiftRng(u64);

impl XorShiftRng {
    /// A generator from `seed` (the same seed gives the same bytes; 0 is usable).
    pub fn new(seed: u64) -> Self {
        XorShiftRng(seed | 1)
    }
}

impl Rng for XorShiftRng {
    fn fill_bytes(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}
