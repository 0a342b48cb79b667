//! The 256-wide anti-replay window for `cnum` ([MS-SIP] 3.1.1 / 3.1.5.1).
//!
//! The receiver remembers the highest number seen and a bitmap of the 256 numbers below it. A higher
//! number slides the window; a lower one is accepted once if it is still inside the window; anything
//! seen before or older than the window is refused. The window starts at the first signed message of an
//! SA rather than at 1, because pidgin-sipe keeps counting `cnum` across SAs (notes §6.3).

/// Width of the window in message numbers.
pub const WINDOW: u32 = 256;

/// Length of [`ReplayWindow::to_bytes`].
pub const STATE_LEN: usize = 37;

/// Why a number was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayVerdict {
    /// The number is new: it has been recorded.
    Fresh,
    /// The number was already seen inside the window.
    Replayed,
    /// The number is older than the window can judge.
    TooOld,
}

/// 256-bit sliding window; 40 bytes.
#[derive(Debug, Clone, Default)]
pub struct ReplayWindow {
    /// Highest number accepted; `None` until the first message.
    highest: Option<u32>,
    /// Bit `i` set = `highest - i` was seen (bit 0 is `highest` itself).
    seen: [u64; 4],
}

impl ReplayWindow {
    /// An empty window: the first number checked is accepted, whatever it is.
    pub const fn new() -> Self {
        ReplayWindow {
            highest: None,
            seen: [0; 4],
        }
    }

    /// Highest number accepted so far.
    pub fn highest(&self) -> Option<u32> {
        self.highest
    }

    /// Would `num` be accepted? Does not record it: signatures are checked first, so that a forged
    /// message cannot burn a number that the real client will use later.
    pub fn check(&self, num: u32) -> ReplayVerdict {
        let Some(highest) = self.highest else {
            return ReplayVerdict::Fresh;
        };
        if num > highest {
            return ReplayVerdict::Fresh;
        }
        let age = highest - num;
        if age >= WINDOW {
            return ReplayVerdict::TooOld;
        }
        if self.bit(age) {
            ReplayVerdict::Replayed
        } else {
            ReplayVerdict::Fresh
        }
    }

    /// Check and record in one step.
    pub fn accept(&mut self, num: u32) -> ReplayVerdict {
        let verdict = self.check(num);
        if verdict != ReplayVerdict::Fresh {
            return verdict;
        }
        match self.highest {
            Some(highest) if num <= highest => self.set_bit(highest - num),
            Some(highest) => {
                self.shift((num - highest) as u64);
                self.highest = Some(num);
                self.set_bit(0);
            }
            None => {
                self.highest = Some(num);
                self.set_bit(0);
            }
        }
        ReplayVerdict::Fresh
    }

    /// The window as [`STATE_LEN`] bytes (highest number, whether there is one, the bitmap), for a
    /// gateway that takes the SA over to go on from where this one stopped.
    pub fn to_bytes(&self) -> [u8; STATE_LEN] {
        let mut out = [0u8; STATE_LEN];
        out[0] = u8::from(self.highest.is_some());
        out[1..5].copy_from_slice(&self.highest.unwrap_or(0).to_be_bytes());
        for (i, w) in self.seen.iter().enumerate() {
            out[5 + i * 8..13 + i * 8].copy_from_slice(&w.to_be_bytes());
        }
        out
    }

    /// The inverse of [`to_bytes`](Self::to_bytes); `None` for anything else.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        if b.len() != STATE_LEN || b[0] > 1 {
            return None;
        }
        let highest = u32::from_be_bytes(b[1..5].try_into().ok()?);
        let mut seen = [0u64; 4];
        for (i, w) in seen.iter_mut().enumerate() {
            *w = u64::from_be_bytes(b[5 + i * 8..13 + i * 8].try_into().ok()?);
        }
        Some(ReplayWindow {
            highest: (b[0] == 1).then_some(highest),
            seen,
        })
    }

    fn bit(&self, age: u32) -> bool {
        let (word, bit) = ((age / 64) as usize, age % 64);
        self.seen.get(word).is_some_and(|w| w & (1u64 << bit) != 0)
    }

    fn set_bit(&mut self, age: u32) {
        let (word, bit) = ((age / 64) as usize, age % 64);
        if let Some(w) = self.seen.get_mut(word) {
            *w |= 1u64 << bit;
        }
    }

    /// Make room for `by` newer numbers: every recorded age grows by `by`.
    fn shift(&mut self, by: u64) {
        if by >= u64::from(WINDOW) {
            self.seen = [0; 4];
            return;
        }
        let words = (by / 64) as usize;
        let bits = (by % 64) as u32;
        let old = self.seen;
        let mut new = [0u64; 4];
        for (i, slot) in new.iter_mut().enumerate() {
            let Some(src) = i.checked_sub(words) else {
                continue;
            };
            let mut v = old[src] << bits;
            if bits > 0 && src > 0 {
                v |= old[src - 1] >> (64 - bits);
            }
            *slot = v;
        }
        self.seen = new;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_number_is_accepted_whatever_it_is() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.accept(4711), ReplayVerdict::Fresh);
        assert_eq!(w.highest(), Some(4711));
    }

    #[test]
    fn the_window_survives_its_bytes() {
        let mut w = ReplayWindow::new();
        assert_eq!(
            ReplayWindow::from_bytes(&w.to_bytes()).and_then(|w| w.highest()),
            None
        );
        for n in [10, 12, 300, 299, 100] {
            w.accept(n);
        }
        let back = ReplayWindow::from_bytes(&w.to_bytes()).expect("decodes");
        assert_eq!(back.highest(), Some(300));
        for n in [10, 12, 300, 299, 100] {
            assert_ne!(back.check(n), ReplayVerdict::Fresh, "{n} was seen");
        }
        assert_eq!(back.check(298), ReplayVerdict::Fresh);
        assert_eq!(back.check(301), ReplayVerdict::Fresh);
        assert!(ReplayWindow::from_bytes(&[2; STATE_LEN]).is_none());
        assert!(ReplayWindow::from_bytes(&[0; 5]).is_none());
    }

    #[test]
    fn duplicates_are_refused() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.accept(1), ReplayVerdict::Fresh);
        assert_eq!(w.accept(1), ReplayVerdict::Replayed);
        assert_eq!(w.accept(2), ReplayVerdict::Fresh);
        assert_eq!(w.accept(1), ReplayVerdict::Replayed);
        assert_eq!(w.accept(2), ReplayVerdict::Replayed);
    }

    #[test]
    fn out_of_order_inside_the_window_is_accepted_once() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.accept(10), ReplayVerdict::Fresh);
        assert_eq!(w.accept(300), ReplayVerdict::Fresh);
        // 300 - 45 = 255: the oldest number still inside the window.
        assert_eq!(w.accept(45), ReplayVerdict::Fresh);
        assert_eq!(w.accept(45), ReplayVerdict::Replayed);
        // 300 - 44 = 256: one past the window.
        assert_eq!(w.accept(44), ReplayVerdict::TooOld);
        assert_eq!(w.accept(10), ReplayVerdict::TooOld);
    }

    #[test]
    fn check_does_not_record() {
        let mut w = ReplayWindow::new();
        w.accept(5);
        assert_eq!(w.check(6), ReplayVerdict::Fresh);
        assert_eq!(w.check(6), ReplayVerdict::Fresh);
        assert_eq!(w.accept(6), ReplayVerdict::Fresh);
        assert_eq!(w.check(6), ReplayVerdict::Replayed);
    }

    #[test]
    fn bits_survive_shifts_across_word_boundaries() {
        let mut w = ReplayWindow::new();
        for n in [100u32, 101, 163, 164, 165, 230] {
            assert_eq!(w.accept(n), ReplayVerdict::Fresh, "{n}");
        }
        assert_eq!(w.accept(400), ReplayVerdict::Fresh);
        for n in [163u32, 164, 165, 230, 400] {
            assert_eq!(
                w.check(n),
                ReplayVerdict::Replayed,
                "{n} must still be remembered"
            );
        }
        assert_eq!(w.check(100), ReplayVerdict::TooOld);
        assert_eq!(w.check(101), ReplayVerdict::TooOld);
        for n in [145u32, 162, 166, 229, 399] {
            assert_eq!(w.check(n), ReplayVerdict::Fresh, "{n} was never seen");
        }
    }

    #[test]
    fn matches_a_naive_model_on_a_pseudo_random_sequence() {
        let mut w = ReplayWindow::new();
        let mut seen = std::collections::BTreeSet::new();
        let mut highest: Option<u32> = None;
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let base = highest.unwrap_or(1000);
            let num = (base + (x % 40) as u32).saturating_sub((x >> 8) as u32 % 300);
            let expected = match highest {
                None => ReplayVerdict::Fresh,
                Some(h) if num > h => ReplayVerdict::Fresh,
                Some(h) if h - num >= WINDOW => ReplayVerdict::TooOld,
                Some(_) if seen.contains(&num) => ReplayVerdict::Replayed,
                Some(_) => ReplayVerdict::Fresh,
            };
            assert_eq!(w.accept(num), expected, "num {num} highest {highest:?}");
            if expected == ReplayVerdict::Fresh {
                seen.insert(num);
                highest = Some(highest.map_or(num, |h| h.max(num)));
            }
        }
    }
}
