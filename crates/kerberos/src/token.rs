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

/// Check that `token` is exactly one framed krb5 AP-REQ. The error is a
/// short description for the operator.
pub(crate) fn check_ap_req(token: &[u8]) -> Result<(), &'static str> {
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
    Ok(())
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
                    check_ap_req(&framed(oid, n)),
                    Ok(()),
                    "oid {oid:02x?} n {n}"
                );
            }
        }
    }

    #[test]
    fn every_truncation_and_padding_is_rejected() {
        let tok = framed(OID_KRB5, 300);
        for cut in 0..tok.len() {
            assert!(check_ap_req(&tok[..cut]).is_err(), "cut {cut}");
        }
        let mut padded = tok.clone();
        padded.push(0);
        assert!(check_ap_req(&padded).is_err());
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
