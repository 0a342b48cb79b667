//! Hex for `srand`, Kerberos MIC tokens and the credentials file: emitted upper-case like OCS,
//! accepted in either case (notes §2.1). NTLM signatures use `sagw_ntlm`'s own hex helpers.

const UPPER: &[u8; 16] = b"0123456789ABCDEF";

pub fn upper(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(UPPER[(b >> 4) as usize] as char);
        s.push(UPPER[(b & 15) as usize] as char);
    }
    s
}

/// [`upper`] into `out` (at least twice as long as `bytes`), without allocating: the per-message
/// signing path writes `srand`, `opaque` and `rspauth` this way.
pub fn upper_into<'o>(bytes: &[u8], out: &'o mut [u8]) -> &'o str {
    let mut n = 0;
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = UPPER[(b >> 4) as usize];
        pair[1] = UPPER[(b & 15) as usize];
        n += 2;
    }
    // Only ASCII hex digits were written.
    std::str::from_utf8(&out[..n]).unwrap_or("")
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

pub fn decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    b.chunks_exact(2)
        .map(|p| Some((nibble(p[0])? << 4) | nibble(p[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip_and_case() {
        assert_eq!(super::upper(&[0x01, 0xab, 0xff]), "01ABFF");
        assert_eq!(super::decode("01abFF"), Some(vec![1, 0xab, 0xff]));
        assert_eq!(super::decode("0"), None);
        assert_eq!(super::decode("zz"), None);
    }

    #[test]
    fn into_buffers_match_the_allocating_forms() {
        let mut out = [0u8; 8];
        assert_eq!(super::upper_into(&[0x01, 0xab, 0xff], &mut out), "01ABFF");
        let mut out = [0u8; 8];
        let v = 0x0a0b_c0deu32;
        assert_eq!(
            super::upper_into(&v.to_be_bytes(), &mut out),
            format!("{v:08X}")
        );
    }
}
