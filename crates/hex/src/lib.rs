//! Hex for the gateway's wire formats and stored records.
//!
//! Encoding is `const-hex`'s (measured faster than the `hex` crate on the signing path). Its
//! decoders, though, strip a leading `0x`, a spelling that none of the formats decoded here has:
//! an NTLM signature, a Digest `response`, an `nc`, an `rspauth`, an `opaque`, a stored hash. Left
//! to each call site, every new one would have to remember it, in parsing that decides whether a
//! signature is accepted. So the decoders here take exactly two digits a byte (either case) and
//! nothing else, and `clippy.toml` keeps the crate's own decoders out of the rest of the workspace.
#![forbid(unsafe_code)]
// The one place allowed to call const-hex's decoders: each call below has the exact length.
#![allow(clippy::disallowed_methods)]

pub use const_hex::{encode, encode_to_slice, encode_to_str_upper, encode_upper};

/// Why a text is not the hex of the bytes asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HexError {
    /// Not two digits a byte of the length asked for (a `0x` prefix lands here too).
    #[error("wrong number of hex digits")]
    Length,
    /// A character that is not a hex digit.
    #[error("not a hex digit")]
    Digit,
}

/// Decodes `src` into `dst`, which it must fill exactly: `2 * dst.len()` digits, no prefix.
pub fn decode_to_slice(src: impl AsRef<[u8]>, dst: &mut [u8]) -> Result<(), HexError> {
    let src = src.as_ref();
    // The exact length is what refuses a prefix: `0x` + 2n digits is 2n + 2 characters, and
    // `0x` + 2n - 2 digits would decode to one byte too few.
    if src.len() != 2 * dst.len() {
        return Err(HexError::Length);
    }
    const_hex::decode_to_slice(src, dst).map_err(|_| HexError::Digit)
}

/// Decodes exactly `2 * N` digits.
pub fn decode_to_array<const N: usize>(src: impl AsRef<[u8]>) -> Result<[u8; N], HexError> {
    let mut out = [0u8; N];
    decode_to_slice(src, &mut out)?;
    Ok(out)
}

/// Decodes an even number of digits, however many.
pub fn decode(src: impl AsRef<[u8]>) -> Result<Vec<u8>, HexError> {
    let src = src.as_ref();
    if !src.len().is_multiple_of(2) {
        return Err(HexError::Length);
    }
    let mut out = vec![0u8; src.len() / 2];
    decode_to_slice(src, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The digits of `b`, by arithmetic rather than a table: an independent reference.
    fn reference(s: &[u8]) -> Option<Vec<u8>> {
        let digit = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        };
        if !s.len().is_multiple_of(2) {
            return None;
        }
        s.chunks(2)
            .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
            .collect()
    }

    #[test]
    fn round_trips_both_cases() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(decode(encode(&bytes)).unwrap(), bytes);
        assert_eq!(decode(encode_upper(&bytes)).unwrap(), bytes);
        assert_eq!(decode_to_array::<2>("aB0f").unwrap(), [0xab, 0x0f]);
    }

    #[test]
    fn refuses_a_0x_prefix_at_every_length() {
        for n in 0..20 {
            let digits = "5a".repeat(n);
            for prefix in ["0x", "0X"] {
                let text = format!("{prefix}{digits}");
                assert!(decode(&text).is_err(), "{text}");
                // The length that const-hex alone would have accepted, and the one short of it.
                let mut dst = vec![0u8; n];
                assert!(decode_to_slice(&text, &mut dst).is_err(), "{text}");
                let mut dst = vec![0u8; n + 1];
                assert!(decode_to_slice(&text, &mut dst).is_err(), "{text}");
            }
        }
        assert_eq!(
            decode_to_array::<16>(format!("0x{}", "00".repeat(16))),
            Err(HexError::Length)
        );
    }

    #[test]
    fn agrees_with_the_reference_on_every_short_text() {
        // Every text of up to 4 characters over digits, a few non-digits and the prefix letters.
        let alphabet = b"09afAFgGxX -\xff";
        let mut texts: Vec<Vec<u8>> = vec![Vec::new()];
        for _ in 0..4 {
            let next: Vec<Vec<u8>> = texts
                .iter()
                .flat_map(|t| {
                    alphabet.iter().map(move |&c| {
                        let mut t = t.clone();
                        t.push(c);
                        t
                    })
                })
                .collect();
            texts.extend(next.into_iter().filter(|t| t.len() <= 4));
            texts.sort();
            texts.dedup();
        }
        for t in &texts {
            assert_eq!(
                decode(t).ok(),
                reference(t),
                "{:?}",
                String::from_utf8_lossy(t)
            );
            if t.len() == 4 {
                assert_eq!(decode_to_array::<2>(t).ok().map(Vec::from), reference(t));
            }
        }
    }

    #[test]
    fn says_why() {
        assert_eq!(decode("abc"), Err(HexError::Length));
        assert_eq!(decode("zz"), Err(HexError::Digit));
        let mut two = [0u8; 2];
        assert_eq!(decode_to_slice("ab", &mut two), Err(HexError::Length));
    }
}
