//! Hex for signatures: emitted upper-case like OCS, accepted in either case (notes §2.1).

const UPPER: &[u8; 16] = b"0123456789ABCDEF";

pub fn upper(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(UPPER[(b >> 4) as usize] as char);
        s.push(UPPER[(b & 15) as usize] as char);
    }
    s
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

/// Decodes exactly 16 bytes without allocating (NTLM signatures on the hot path).
pub fn decode16(s: &str) -> Option<[u8; 16]> {
    let b = s.as_bytes();
    if b.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (o, p) in out.iter_mut().zip(b.chunks_exact(2)) {
        *o = (nibble(p[0])? << 4) | nibble(p[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip_and_case() {
        assert_eq!(super::upper(&[0x01, 0xab, 0xff]), "01ABFF");
        assert_eq!(super::decode("01abFF"), Some(vec![1, 0xab, 0xff]));
        assert_eq!(super::decode("0"), None);
        assert_eq!(super::decode("zz"), None);
        assert_eq!(
            super::decode16("0100000029618e9651b65a7764000000").map(|b| b[4]),
            Some(0x29)
        );
        assert_eq!(super::decode16("01"), None);
    }
}
