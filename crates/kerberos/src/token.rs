//! Structural check of the GSS InitialContextToken framing (RFC 2743 §3.1,
//! RFC 4121 §4.1) before a token reaches MIT.
//!
//! MIT falls back to parsing a badly framed token as a raw (DCE-style)
//! AP-REQ and then reports decoding failures as `GSS_S_FAILURE` without a
//! minor code, which cannot be told apart from an internal failure. Checking
//! the outer lengths here makes every truncated or padded token a clear
//! [`Malformed`](crate::KerberosError::Malformed) and keeps
//! unsupported variants (raw DCE AP-REQs, IAKERB) away from the library.

/// Largest token accepted. Windows caps Kerberos tokens at MaxTokenSize
/// (at most 65535 bytes); the SIP layer limits messages well below that.
pub(crate) const MAX_TOKEN_LEN: usize = 65_535;

/// `06 09 2a 86 48 86 f7 12 01 02 02`: krb5 1.2.840.113554.1.2.2.
const OID_KRB5: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x12, 0x01, 0x02, 0x02,
];
/// 1.2.840.48018.1.2.2, the OID older Windows versions put in tokens.
const OID_KRB5_MS: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x82, 0xf7, 0x12, 0x01, 0x02, 0x02,
];
/// 1.3.5.1.5.2, pre-RFC 1964 krb5 OID MIT still accepts.
const OID_KRB5_OLD: &[u8] = &[0x06, 0x05, 0x2b, 0x05, 0x01, 0x05, 0x02];

/// TOK_ID of an AP-REQ inner token.
const TOK_ID_AP_REQ: [u8; 2] = [0x01, 0x00];
/// `[APPLICATION 14]` constructed: KRB_AP_REQ.
const TAG_AP_REQ: u8 = 0x6e;

/// Read a DER definite length; returns (length, bytes consumed).
fn der_len(bytes: &[u8]) -> Option<(usize, usize)> {
    let (&first, rest) = bytes.split_first()?;
    if first < 0x80 {
        return Some((usize::from(first), 1));
    }
    let n = usize::from(first & 0x7f);
    // 0x80 (indefinite) is not DER; more than 3 octets exceeds MAX_TOKEN_LEN.
    if n == 0 || n > 3 {
        return None;
    }
    let octets = rest.get(..n)?;
    let len = octets
        .iter()
        .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
    Some((len, 1 + n))
}

/// Check that `token` is exactly one framed krb5 AP-REQ whose authenticator
/// [`authenticator_ciphertext`] finds. The error is a short description for
/// the operator.
///
/// MIT also reads BER forms (lengths in four octets, indefinite lengths, high
/// tag numbers) the structure reader here does not. A token it accepted in
/// such a form had no replay key, so the pool's registry was never asked and
/// a captured AP-REQ written again in BER signed in at another gateway. Every
/// token accepted now has the key its DER original has (real clients write
/// DER).
pub(crate) fn check_ap_req(token: &[u8]) -> Result<(), &'static str> {
    authenticator_ciphertext(token).map(|_| ())
}

/// The contents of the `[APPLICATION 14]` KRB_AP_REQ inside a framed token.
fn ap_req_contents(token: &[u8]) -> Result<&[u8], &'static str> {
    if token.is_empty() {
        return Err("empty token");
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err("token longer than 65535 bytes");
    }
    let body = match token.split_first() {
        Some((0x60, rest)) => rest,
        _ => return Err("not a GSS InitialContextToken (first byte is not 0x60)"),
    };
    let (len, used) = der_len(body).ok_or("bad outer length")?;
    let inner = body.get(used..).ok_or("bad outer length")?;
    if inner.len() != len {
        return Err("outer length does not match the token size (truncated or padded)");
    }
    let after_oid = [OID_KRB5, OID_KRB5_MS, OID_KRB5_OLD]
        .iter()
        .find_map(|oid| inner.strip_prefix(*oid))
        .ok_or("mechanism is not Kerberos V5 (SPNEGO, NTLM or IAKERB are not accepted here)")?;
    let ap_req = after_oid
        .strip_prefix(&TOK_ID_AP_REQ[..])
        .ok_or("inner token is not an AP-REQ (TOK_ID 01 00)")?;
    let req_body = match ap_req.split_first() {
        Some((&TAG_AP_REQ, rest)) => rest,
        _ => return Err("inner token is not a KRB_AP_REQ"),
    };
    let (req_len, used) = der_len(req_body).ok_or("bad AP-REQ length")?;
    if req_body.len() != used + req_len {
        return Err("AP-REQ length does not match the token (truncated or padded)");
    }
    req_body.get(used..).ok_or("bad AP-REQ length")
}

/// One DER element with a one-byte tag: (tag, contents, what follows).
fn tlv(bytes: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = bytes.split_first()?;
    // High tag numbers (0x1f) do not occur in the structures read here.
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (len, used) = der_len(rest)?;
    let body = rest.get(used..)?;
    Some((tag, body.get(..len)?, body.get(len..)?))
}

/// The contents of the one element tagged `tag` among the elements of a
/// SEQUENCE body, which must all be well formed.
fn field(mut seq: &[u8], tag: u8) -> Option<&[u8]> {
    let mut found = None;
    while !seq.is_empty() {
        let (t, contents, rest) = tlv(seq)?;
        if t == tag {
            if found.is_some() {
                return None;
            }
            found = Some(contents);
        }
        seq = rest;
    }
    found
}

/// The contents of `bytes` when it is exactly one element tagged `tag`.
fn only(bytes: &[u8], tag: u8) -> Option<&[u8]> {
    match tlv(bytes)? {
        (t, contents, []) if t == tag => Some(contents),
        _ => None,
    }
}

/// The ciphertext of the authenticator inside a framed AP-REQ token:
/// `AP-REQ ::= [APPLICATION 14] SEQUENCE { pvno [0], msg-type [1],
/// ap-options [2], ticket [3], authenticator [4] EncryptedData }`,
/// `EncryptedData ::= SEQUENCE { etype [0], kvno [1] OPTIONAL, cipher [2]
/// OCTET STRING }` (RFC 4120 §5.5.1, §5.2.9).
///
/// This is what identifies one use of a ticket: the client encrypts a fresh
/// authenticator (time, microseconds, subkey) each time, and nobody without
/// the session key can make another that decrypts. A hash of the whole token
/// would not do as a replay key: `ap-options` travel in the clear and can be
/// flipped (MIT still accepts the token), giving a replay a new hash.
///
/// Only the structure is read, with bounds checks; nothing is decrypted. The
/// error is a short description.
pub fn authenticator_ciphertext(token: &[u8]) -> Result<&[u8], &'static str> {
    let ap_req = ap_req_contents(token)?;
    let seq = only(ap_req, 0x30).ok_or("AP-REQ is not one SEQUENCE")?;
    let authenticator = field(seq, 0xa4).ok_or("AP-REQ has no authenticator")?;
    let enc = only(authenticator, 0x30).ok_or("authenticator is not EncryptedData")?;
    let cipher = field(enc, 0xa2).ok_or("authenticator has no cipher")?;
    let cipher = only(cipher, 0x04).ok_or("authenticator cipher is not an OCTET STRING")?;
    if cipher.is_empty() {
        return Err("authenticator cipher is empty");
    }
    Ok(cipher)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A structurally valid token around an AP-REQ body of `n` bytes.
    fn framed(oid: &[u8], n: usize) -> Vec<u8> {
        let mut ap_req = vec![TAG_AP_REQ];
        push_len(&mut ap_req, n);
        ap_req.extend(std::iter::repeat_n(0x30, n));
        let mut inner = oid.to_vec();
        inner.extend_from_slice(&TOK_ID_AP_REQ);
        inner.extend_from_slice(&ap_req);
        let mut tok = vec![0x60];
        push_len(&mut tok, inner.len());
        tok.extend_from_slice(&inner);
        tok
    }

    fn push_len(out: &mut Vec<u8>, n: usize) {
        match n {
            0..=0x7f => out.push(n as u8),
            0x80..=0xff => out.extend_from_slice(&[0x81, n as u8]),
            _ => out.extend_from_slice(&[0x82, (n >> 8) as u8, n as u8]),
        }
    }

    #[test]
    fn accepts_all_krb5_oids_and_length_forms() {
        for oid in [OID_KRB5, OID_KRB5_MS, OID_KRB5_OLD] {
            for n in [1, 0x7f, 0x80, 0xff, 0x100, 700, 20_000] {
                assert_eq!(
                    check_ap_req(&ap_req_token_under(oid, 0, &vec![9; n])),
                    Ok(()),
                    "oid {oid:02x?} n {n}"
                );
            }
        }
    }

    #[test]
    fn an_ap_req_whose_authenticator_is_not_found_is_rejected() {
        // Framing around anything but an AP-REQ SEQUENCE with an authenticator.
        assert!(check_ap_req(&framed(OID_KRB5, 300)).is_err());
        // The same AP-REQ with its SEQUENCE length in four octets (BER): MIT reads it, the
        // replay key's reader does not, so it is refused here.
        let body = ap_req_sequence(0, &[7; 64]);
        let mut seq = vec![0x30, 0x84];
        seq.extend((body.len() as u32).to_be_bytes());
        seq.extend(&body);
        let ber = tlv_bytes(
            0x60,
            &[OID_KRB5, &TOK_ID_AP_REQ[..], &tlv_bytes(TAG_AP_REQ, &seq)].concat(),
        );
        assert_eq!(ap_req_contents(&ber), Ok(&seq[..]));
        assert!(check_ap_req(&ber).is_err());
        assert_eq!(check_ap_req(&ap_req_token(0, &[7; 64])), Ok(()));
    }

    #[test]
    fn every_truncation_and_padding_is_rejected() {
        let tok = ap_req_token(0, &[7; 300]);
        for cut in 0..tok.len() {
            assert!(check_ap_req(&tok[..cut]).is_err(), "cut {cut}");
        }
        let mut padded = tok.clone();
        padded.push(0);
        assert!(check_ap_req(&padded).is_err());
    }

    fn tlv_bytes(tag: u8, contents: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        push_len(&mut out, contents.len());
        out.extend_from_slice(contents);
        out
    }

    /// A framed AP-REQ with the given ap-options and authenticator cipher
    /// (the ticket is opaque filler: only the structure matters here).
    fn ap_req_token(ap_options: u8, cipher: &[u8]) -> Vec<u8> {
        ap_req_token_under(OID_KRB5, ap_options, cipher)
    }

    /// [`ap_req_token`] under mechanism OID `oid`.
    fn ap_req_token_under(oid: &[u8], ap_options: u8, cipher: &[u8]) -> Vec<u8> {
        let ap_req = tlv_bytes(
            TAG_AP_REQ,
            &tlv_bytes(0x30, &ap_req_sequence(ap_options, cipher)),
        );
        let inner = [oid, &TOK_ID_AP_REQ[..], &ap_req].concat();
        tlv_bytes(0x60, &inner)
    }

    /// The contents of an AP-REQ's SEQUENCE.
    fn ap_req_sequence(ap_options: u8, cipher: &[u8]) -> Vec<u8> {
        let enc = [
            tlv_bytes(0xa0, &tlv_bytes(0x02, &[18])),
            tlv_bytes(0xa1, &tlv_bytes(0x02, &[2])),
            tlv_bytes(0xa2, &tlv_bytes(0x04, cipher)),
        ]
        .concat();
        [
            tlv_bytes(0xa0, &tlv_bytes(0x02, &[5])),
            tlv_bytes(0xa1, &tlv_bytes(0x02, &[14])),
            tlv_bytes(0xa2, &tlv_bytes(0x03, &[0, ap_options, 0, 0, 0])),
            tlv_bytes(0xa3, &tlv_bytes(0x61, &[0x30; 40])),
            tlv_bytes(0xa4, &tlv_bytes(0x30, &enc)),
        ]
        .concat()
    }

    #[test]
    fn finds_the_authenticator_cipher_whatever_the_ap_options() {
        let cipher: Vec<u8> = (0..=255u8).cycle().take(300).collect();
        let plain = ap_req_token(0x00, &cipher);
        let mutual = ap_req_token(0x20, &cipher);
        assert_eq!(check_ap_req(&plain), Ok(()));
        assert_ne!(plain, mutual);
        assert_eq!(authenticator_ciphertext(&plain), Ok(cipher.as_slice()));
        assert_eq!(authenticator_ciphertext(&mutual), Ok(cipher.as_slice()));
    }

    #[test]
    fn truncated_or_garbled_ap_reqs_have_no_cipher_and_never_panic() {
        let tok = ap_req_token(0, &[7; 200]);
        for cut in 0..tok.len() {
            assert!(authenticator_ciphertext(&tok[..cut]).is_err(), "cut {cut}");
        }
        // Every single byte changed to every value: an error or some slice, never a panic.
        for i in 0..tok.len() {
            for v in [0x00, 0x30, 0x7f, 0x80, 0x81, 0x84, 0xa4, 0xff] {
                let mut t = tok.clone();
                t[i] = v;
                let _ = authenticator_ciphertext(&t);
            }
        }
        // No authenticator, an empty cipher, framing around garbage.
        assert!(authenticator_ciphertext(&framed(OID_KRB5, 50)).is_err());
        assert!(authenticator_ciphertext(&ap_req_token(0, &[])).is_err());
        let mut x: u32 = 0x1234_5678;
        for len in 0..2000 {
            let junk: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let _ = authenticator_ciphertext(&junk);
        }
    }

    #[test]
    fn rejects_other_mechanisms_and_token_types() {
        // SPNEGO 1.3.6.1.5.5.2
        let spnego = [0x06, 0x06, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x02];
        assert!(check_ap_req(&framed(&spnego, 10)).is_err());
        // IAKERB 1.3.6.1.5.2.5
        let iakerb = [0x06, 0x06, 0x2b, 0x06, 0x01, 0x05, 0x02, 0x05];
        assert!(check_ap_req(&framed(&iakerb, 10)).is_err());
        // AP-REP token id.
        let mut tok = framed(OID_KRB5, 10);
        let pos = 2 + OID_KRB5.len();
        tok[pos] = 0x02;
        assert!(check_ap_req(&tok).is_err());
        // Raw (DCE style) AP-REQ without framing.
        assert!(check_ap_req(&[TAG_AP_REQ, 0x01, 0x30]).is_err());
        assert!(check_ap_req(b"NTLMSSP\0").is_err());
        // Indefinite and oversized length forms.
        assert!(check_ap_req(&[0x60, 0x80, 0x00, 0x00]).is_err());
        assert!(check_ap_req(&[0x60, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(check_ap_req(&vec![0x60; MAX_TOKEN_LEN + 1]).is_err());
    }
}
