//! `name-addr` / `addr-spec` values (From, To, Contact, P-Asserted-Identity, ...).

use crate::error::ParseError;
use crate::name::is_token_byte;
use crate::scan::{closing_quote, is_lws, trim_lws};

/// A From/To/Contact-style address, borrowed from the header value.
///
/// All fields are slices of the original value, byte for byte: the MS-SIPAE signature buffer
/// needs the URI exactly as the peer sent it (no case folding, no percent-decoding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameAddr<'a> {
    /// Display name: the text between the quotes (escapes left as written) when quoted, the
    /// trimmed token sequence when not, `None` when absent.
    pub display_name: Option<&'a str>,
    /// The URI: the content between `<` and `>`, or, without angle brackets, everything up to
    /// the first `;` (trimmed).
    pub uri: &'a str,
    /// The raw header-parameter tail after `>` (or after the URI), e.g. `;tag=12;epid=34`.
    /// Empty when there are no parameters.
    pub params: &'a str,
}

impl<'a> NameAddr<'a> {
    /// Value of header parameter `name` (case-insensitive name). The value is returned as on the
    /// wire, without surrounding quotes if it was quoted, and `""` for a flag parameter.
    pub fn param(&self, name: &str) -> Option<&'a str> {
        param_in(self.params, name)
    }

    /// The `tag` parameter: the value after `;tag=` up to the next `;` (LWS-trimmed).
    pub fn tag(&self) -> Option<&'a str> {
        self.param("tag")
    }

    /// Every header parameter as `(name, value)`, in order (see [`ParamPairs`]).
    pub fn param_pairs(&self) -> ParamPairs<'a> {
        ParamPairs::new(self.params)
    }
}

/// Look up a `;name=value` parameter in a raw parameter tail (the first of that name).
pub(crate) fn param_in<'a>(params: &'a str, name: &str) -> Option<&'a str> {
    ParamPairs::new(params)
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// The `(name, value)` pairs of a raw parameter tail, in order: pieces split on `;` outside
/// double quotes (`\` escapes inside quotes), LWS-trimmed, empty ones skipped; the value is
/// without surrounding quotes if it was quoted, and `""` for a flag parameter.
///
/// A plain scan (these tails are a few dozen bytes: `memchr`'s set-up costs more than it saves):
/// every signed message reads its `epid` and its `tag`s here.
#[derive(Debug, Clone)]
pub struct ParamPairs<'a> {
    params: &'a str,
    start: usize,
}

impl<'a> ParamPairs<'a> {
    /// The pairs of `params` (e.g. [`NameAddr::params`]).
    pub fn new(params: &'a str) -> Self {
        ParamPairs { params, start: 0 }
    }
}

impl<'a> Iterator for ParamPairs<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<(&'a str, &'a str)> {
        let b = self.params.as_bytes();
        while self.start <= b.len() {
            let mut i = self.start;
            let end = loop {
                match b.get(i) {
                    None => break b.len(),
                    Some(b';') => break i,
                    // An unterminated quote runs to the end of the value.
                    Some(b'"') => match closing_quote(b, i) {
                        Some(close) => i = close + 1,
                        None => break b.len(),
                    },
                    Some(_) => i += 1,
                }
            };
            let piece = self.params.get(self.start..end).unwrap_or("");
            self.start = end + 1;
            if let Some(pair) = param_piece(piece) {
                return Some(pair);
            }
        }
        None
    }
}

/// One piece of a parameter tail (between `;`s) as `(name, value)`: LWS-trimmed, the value
/// without surrounding quotes, `""` for a flag; `None` for an empty piece. How [`ParamPairs`] and
/// [`parse_name_addr_tagged`] read a piece, so that the two cannot disagree.
fn param_piece(piece: &str) -> Option<(&str, &str)> {
    let piece = trim_lws(piece);
    if piece.is_empty() {
        return None;
    }
    let (n, v) = match piece.bytes().position(|c| c == b'=') {
        Some(eq) => (
            trim_lws(piece.get(..eq).unwrap_or("")),
            trim_lws(piece.get(eq + 1..).unwrap_or("")),
        ),
        None => (piece, ""),
    };
    Some((n, unquote(v)))
}

/// A parameter value without its surrounding quotes, if it has both.
fn unquote(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|inner| inner.strip_suffix('"'))
        .unwrap_or(v)
}

/// A URI without its parameters, as the gateway compares identities and addresses: cut at the
/// first `;` after its user part, which runs to the last `@` (RFC 3261's grammar, as the
/// embedded registrar reads it). So `sip:alice@example.com;n=1@example.com` keeps its `;n=1`
/// and is another address than alice's (cut at the first `;`, it passed for alice's own, and one
/// account filed bindings under as many new addresses of record as it liked), and RFC 4694's
/// `sip:+4930123;npdi;rn=+4930000@trunk.example;user=phone` keeps its user parameters and
/// loses `;user=phone`.
pub fn uri_without_params(uri: &str) -> &str {
    let host = uri.rfind('@').map_or(0, |at| at + 1);
    match uri[host..].find(';') {
        Some(i) => &uri[..host + i],
        None => uri,
    }
}

/// Parse a `name-addr` (`"Display" <uri>;params`, `Display <uri>;params`, `<uri>;params`) or an
/// `addr-spec` (`uri;params`) header value.
///
/// Rejected ([`ParseError::BadNameAddr`]): unterminated quoted display names, display names with
/// non-token characters outside quotes (e.g. `Bell, Alexander <...>`, RFC 4475 §3.1.2.15),
/// whitespace or control characters inside the URI (`< sip:a@b >`, §3.1.2.14), URIs without a
/// scheme, an addr-spec URI holding `?` or `,` (RFC 4475 §3.1.2.13), a missing `>`, and anything but `;`-parameters after the address (so a list of several
/// addresses is rejected rather than silently truncated).
pub fn parse_name_addr(value: &str) -> Result<NameAddr<'_>, ParseError> {
    parse::<false>(value).map(|(na, _)| na)
}

/// The `tag` and `epid` parameters of a From or To value (the first of each name, as
/// [`NameAddr::param`] finds it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TagAndEpid<'a> {
    /// `tag`, without quotes.
    pub tag: Option<&'a str>,
    /// `epid`, without quotes.
    pub epid: Option<&'a str>,
}

/// [`parse_name_addr`], with the `tag` and `epid` parameters read in the pass that checks the
/// parameters: what the MS-SIPAE signature buffer and the epid checks read from every signed
/// message's From and To, without a second scan of the tail.
pub fn parse_name_addr_tagged(value: &str) -> Result<(NameAddr<'_>, TagAndEpid<'_>), ParseError> {
    parse::<true>(value)
}

/// [`parse_name_addr`], and with `READ` the tag and epid ([`parse_name_addr_tagged`]).
fn parse<const READ: bool>(value: &str) -> Result<(NameAddr<'_>, TagAndEpid<'_>), ParseError> {
    let v = trim_lws(value);
    let b = v.as_bytes();
    // Plain scans rather than `memchr` here and below: From and To values are a few dozen bytes,
    // and the first `<` is usually the first byte.
    let (display_name, lt) = match b.iter().position(|&c| matches!(c, b'"' | b'<' | b';')) {
        Some(0) if b.first() == Some(&b'"') => {
            let close = closing_quote(b, 0).ok_or(ParseError::BadNameAddr)?;
            let dn = v.get(1..close).ok_or(ParseError::BadNameAddr)?;
            let after = close + 1;
            let lt = after
                + b.get(after..)
                    .unwrap_or(&[])
                    .iter()
                    .position(|&c| !is_lws(c))
                    .ok_or(ParseError::BadNameAddr)?;
            if b.get(lt) != Some(&b'<') {
                return Err(ParseError::BadNameAddr);
            }
            (Some(dn), lt)
        }
        Some(i) if b.get(i) == Some(&b'<') => {
            let dn = trim_lws(v.get(..i).unwrap_or(""));
            if !dn
                .bytes()
                .all(|c| is_token_byte(c) || is_lws(c) || c >= 0x80)
            {
                return Err(ParseError::BadNameAddr);
            }
            ((!dn.is_empty()).then_some(dn), i)
        }
        Some(i) if b.get(i) == Some(&b'"') => return Err(ParseError::BadNameAddr),
        found => {
            // addr-spec: no angle brackets before the first ';'.
            let end = found.unwrap_or(b.len());
            let uri = trim_lws(v.get(..end).unwrap_or(""));
            let params = v.get(end..).unwrap_or("");
            // RFC 3261 §20: a URI holding ',', '?' or ';' must be in angle brackets, otherwise
            // its headers/parameters are ambiguous with the header's (RFC 4475 §3.1.2.13).
            if uri.contains([',', '?']) {
                return Err(ParseError::BadNameAddr);
            }
            check_uri(uri)?;
            let read = check_params::<READ>(params)?;
            return Ok((
                NameAddr {
                    display_name: None,
                    uri,
                    params,
                },
                read,
            ));
        }
    };
    let gt = angle_uri_end(b, lt)?;
    let uri = v.get(lt + 1..gt).ok_or(ParseError::BadNameAddr)?;
    let params = v.get(gt + 1..).unwrap_or("");
    let read = check_params::<READ>(params)?;
    Ok((
        NameAddr {
            display_name,
            uri,
            params,
        },
        read,
    ))
}

/// What a byte ends or breaks in a URI between `<` and `>` ([`angle_uri_end`]).
const URI_BYTE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    // Whitespace and controls.
    while c <= b' ' as usize {
        t[c] = URI_BAD;
        c += 1;
    }
    t[0x7f] = URI_BAD;
    t[b'<' as usize] = URI_BAD;
    t[b'"' as usize] = URI_BAD;
    t[b'>' as usize] = URI_END;
    t
};
const URI_BAD: u8 = 1;
const URI_END: u8 = 2;

/// The `>` closing the URI that opens after the `<` at `lt`, the URI checked as [`check_uri`]
/// does, in the same pass: every signed message's From and To come through here, and the URI was
/// otherwise scanned twice (for `>`, then for its bytes).
fn angle_uri_end(b: &[u8], lt: usize) -> Result<usize, ParseError> {
    let start = lt + 1;
    let rest = b.get(start..).ok_or(ParseError::BadNameAddr)?;
    // The scheme: a letter, then letters, digits, `+`, `-`, `.` up to the colon.
    let colon = rest
        .iter()
        .position(|&c| !(c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.')))
        .ok_or(ParseError::BadNameAddr)?;
    if colon == 0
        || rest.get(colon) != Some(&b':')
        || !rest.first().is_some_and(u8::is_ascii_alphabetic)
    {
        return Err(ParseError::BadNameAddr);
    }
    let body = rest.get(colon + 1..).unwrap_or(&[]);
    match body.iter().position(|&c| URI_BYTE[usize::from(c)] != 0) {
        Some(i) if body.get(i) == Some(&b'>') => Ok(start + colon + 1 + i),
        _ => Err(ParseError::BadNameAddr),
    }
}

/// `scheme ":" ...` with no whitespace, controls, quotes or angle brackets.
fn check_uri(uri: &str) -> Result<(), ParseError> {
    let b = uri.as_bytes();
    let colon = b
        .iter()
        .position(|&c| c == b':')
        .ok_or(ParseError::BadNameAddr)?;
    let scheme = b.get(..colon).unwrap_or(&[]);
    let scheme_ok = scheme.first().is_some_and(u8::is_ascii_alphabetic)
        && scheme
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'));
    let body_ok = b
        .iter()
        .all(|&c| c > b' ' && c != 0x7f && !matches!(c, b'<' | b'>' | b'"'));
    if scheme_ok && body_ok {
        Ok(())
    } else {
        Err(ParseError::BadNameAddr)
    }
}

/// Empty, or `;` parameters with balanced quotes and no `,`, `<` or `>` outside quotes.
///
/// With `READ`, the pieces between the `;`s are read too, as [`ParamPairs`] splits them (on `;`
/// outside quotes; once the quotes are known to be balanced its split and this one agree), for
/// the first `tag` and `epid`.
fn check_params<const READ: bool>(params: &str) -> Result<TagAndEpid<'_>, ParseError> {
    let p = params.trim_start_matches([' ', '\t', '\r', '\n']);
    let b = p.as_bytes();
    let mut read = TagAndEpid::default();
    if b.is_empty() {
        return Ok(read);
    }
    if b.first() != Some(&b';') {
        return Err(ParseError::BadNameAddr);
    }
    let mut piece = 1;
    let mut i = 0;
    while i < b.len() {
        match b.get(i) {
            Some(b'"') => i = closing_quote(b, i).ok_or(ParseError::BadNameAddr)?,
            Some(b',' | b'<' | b'>') => return Err(ParseError::BadNameAddr),
            Some(b';') if READ && i > 0 => {
                take_tag_or_epid(p.get(piece..i).unwrap_or(""), &mut read);
                piece = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if READ {
        take_tag_or_epid(p.get(piece..).unwrap_or(""), &mut read);
    }
    Ok(read)
}

/// One `name[=value]` piece of a parameter tail ([`param_piece`]), kept if it is the first `tag`
/// or `epid`.
fn take_tag_or_epid<'a>(piece: &'a str, read: &mut TagAndEpid<'a>) {
    // `tag=…` and `epid=…` from their first bytes, as every From and To of a signed message
    // writes them: with the name at the piece's start nothing precedes it to trim, so the value
    // after the `=` is what `param_piece` would return. Other pieces take the general path.
    let b = piece.as_bytes();
    let word = b
        .first_chunk::<4>()
        .map_or(0, |w| u32::from_le_bytes(*w) | 0x2020_2020);
    let fast = if word == u32::from_le_bytes(*b"tag=") && b.get(3) == Some(&b'=') {
        Some((&mut read.tag, 4))
    } else if word == u32::from_le_bytes(*b"epid") && b.get(4) == Some(&b'=') {
        Some((&mut read.epid, 5))
    } else {
        None
    };
    if let Some((slot, value_at)) = fast {
        if slot.is_none() {
            *slot = Some(unquote(trim_lws(piece.get(value_at..).unwrap_or(""))));
        }
        return;
    }
    let Some((name, value)) = param_piece(piece) else {
        return;
    };
    let slot = match name.len() {
        3 if name.eq_ignore_ascii_case("tag") => &mut read.tag,
        4 if name.eq_ignore_ascii_case("epid") => &mut read.epid,
        _ => return,
    };
    if slot.is_none() {
        *slot = Some(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uri_loses_only_the_parameters_after_its_user_part() {
        for (uri, without) in [
            (
                "sip:alice@example.com;transport=tcp",
                "sip:alice@example.com",
            ),
            ("sip:example.com;lr", "sip:example.com"),
            ("sip:alice@example.com", "sip:alice@example.com"),
            (
                "sip:alice@example.com;n=1@example.com",
                "sip:alice@example.com;n=1@example.com",
            ),
            (
                "sip:alice@example.com;n=1@example.com;transport=tcp",
                "sip:alice@example.com;n=1@example.com",
            ),
            (
                "sip:+4930123;npdi;rn=+4930000@trunk.example;user=phone",
                "sip:+4930123;npdi;rn=+4930000@trunk.example",
            ),
            (
                "sip:alice@example.com;maddr=x@y",
                "sip:alice@example.com;maddr=x@y",
            ),
            ("tel:+4930123;phone-context=x", "tel:+4930123"),
        ] {
            assert_eq!(uri_without_params(uri), without, "{uri}");
        }
    }

    /// The former `Split`-based lookup, kept as the reference the fast one must agree with.
    fn param_in_reference<'a>(params: &'a str, name: &str) -> Option<&'a str> {
        for piece in crate::scan::Split::new(params, b';', false) {
            let (n, v) = match piece.find('=') {
                Some(eq) => (trim_lws(&piece[..eq]), trim_lws(&piece[eq + 1..])),
                None => (piece, ""),
            };
            if n.eq_ignore_ascii_case(name) {
                return Some(
                    v.strip_prefix('"')
                        .and_then(|inner| inner.strip_suffix('"'))
                        .unwrap_or(v),
                );
            }
        }
        None
    }

    /// Parameter tails that try the split: quotes, escapes, empty pieces, case, folding.
    const TAILS: &[&str] = &[
        "",
        ";",
        ";;tag=1",
        ";tag=3e49177a52;epid=c8ca638a15",
        " ; TAG = x ; q",
        ";a=\"x;tag=2\";tag=3",
        ";a=\"unterminated;tag=4",
        ";a=\"esc\\\";tag=5\";tag=6",
        ";epid=\"q\";tag",
        ";tag=;epid= ",
        ";x=a=b;tag=\"\"",
        ";\r\n tag=folded",
    ];

    #[test]
    fn param_lookup_agrees_with_the_split_reference() {
        for tail in TAILS {
            for name in ["tag", "epid", "a", "q", "x", "missing", ""] {
                assert_eq!(
                    param_in(tail, name),
                    param_in_reference(tail, name),
                    "{tail:?} {name:?}"
                );
            }
        }
    }

    /// Asserts that `parse_name_addr_tagged` agrees with `parse_name_addr` and then
    /// `NameAddr::param`: the same name-addr and tag and epid, or the same error. The tag and epid
    /// when it parsed.
    fn tagged_agrees(value: &str) -> Option<TagAndEpid<'_>> {
        match (parse_name_addr(value), parse_name_addr_tagged(value)) {
            (Ok(na), Ok((tna, read))) => {
                assert_eq!(na, tna, "{value:?}");
                assert_eq!(read.tag, na.param("tag"), "{value:?}");
                assert_eq!(read.epid, na.param("epid"), "{value:?}");
                Some(read)
            }
            (Err(a), Err(b)) => {
                assert_eq!(a, b, "{value:?}");
                None
            }
            (a, b) => panic!("{value:?}: {a:?} but {b:?}"),
        }
    }

    #[test]
    fn tagged_parse_agrees_with_parse_then_param_lookup() {
        let more = [
            " ; TAG = x ; EpId = y ; q",
            ";tag=1;tag=2;epid=3;epid=4",
            ";tags=1;tag",
            ";tag=\"a\"b\"",
            ";epid",
            "tag=1",
            ";tag=1,<sip:x@y>",
            ";tag=\"quoted;still\" ;epid=\"e\"",
        ];
        let tails = TAILS.iter().chain(&more);
        let heads = [
            "<sip:alice@example.com>",
            "\"Alice\" <sip:alice@example.com>",
            "Alice Smith <sips:alice@example.com;transport=tls>",
            "sip:alice@example.com",
            " <sip:a@b> ",
            "\"unterminated <sip:a@b>",
        ];
        let mut checked = 0;
        for head in heads {
            for tail in tails.clone() {
                let value = format!("{head}{tail}");
                checked += usize::from(tagged_agrees(&value).is_some());
            }
        }
        assert!(checked > 60, "most combinations parse: {checked}");
    }

    #[test]
    fn tagged_parse_agrees_on_generated_tails() {
        // Tails of the pieces that matter to the split, from a fixed xorshift sequence.
        const PIECES: &[&str] = &[
            ";", "=", "\"", "\\", ",", " ", "\t", "tag", "TAG", "epid", "Epid", "x", "1", "<", ">",
            // The first bytes the fast path reads: the names with `=`, and bytes that equal `=`
            // or a letter once OR-ed with the case bit.
            "tag=", "tAg=", "epid=", "EPID=", "\u{1d}", "\u{1d}=", "\r\n ", "tagx=", "epi",
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let (mut parsed, mut with_tag, mut with_epid) = (0, 0, 0);
        for _ in 0..20_000 {
            let len = (next() % 12) as usize;
            let tail: String = (0..len)
                .map(|_| PIECES[(next() % PIECES.len() as u64) as usize])
                .collect();
            let value = format!("<sip:a@b>;{tail}");
            if let Some(read) = tagged_agrees(&value) {
                parsed += 1;
                with_tag += usize::from(read.tag.is_some());
                with_epid += usize::from(read.epid.is_some());
            }
        }
        assert!(
            parsed > 2_000 && with_tag > 200 && with_epid > 200,
            "enough tails parse, with a tag or an epid, to compare: {parsed}, {with_tag}, {with_epid}"
        );
    }

    /// The two scans `angle_uri_end` replaced: the first `>`, then `check_uri` of what is before it.
    fn angle_uri_end_reference(b: &[u8], lt: usize) -> Result<usize, ParseError> {
        let gt = lt
            + 1
            + b.get(lt + 1..)
                .unwrap_or(&[])
                .iter()
                .position(|&c| c == b'>')
                .ok_or(ParseError::BadNameAddr)?;
        let uri = std::str::from_utf8(b.get(lt + 1..gt).ok_or(ParseError::BadNameAddr)?)
            .map_err(|_| ParseError::BadNameAddr)?;
        check_uri(uri)?;
        Ok(gt)
    }

    #[test]
    fn angle_uri_scan_agrees_with_the_two_scans_it_replaced() {
        // Every string of up to five bytes over an alphabet of the bytes that matter, after `<`.
        let alphabet = b"s1+:@> <\"\x7f\t.;-\xc3";
        let mut checked = 0;
        let mut strings: Vec<Vec<u8>> = vec![Vec::new()];
        for _ in 0..5 {
            let mut longer = Vec::new();
            for s in &strings {
                for &c in alphabet {
                    let mut t = s.clone();
                    t.push(c);
                    longer.push(t);
                }
            }
            for s in &longer {
                let mut b = vec![b'<'];
                b.extend_from_slice(s);
                if std::str::from_utf8(&b).is_err() {
                    continue;
                }
                assert_eq!(
                    angle_uri_end(&b, 0),
                    angle_uri_end_reference(&b, 0),
                    "{:?}",
                    String::from_utf8_lossy(&b)
                );
                checked += 1;
            }
            strings = longer;
        }
        assert!(checked > 100_000, "{checked}");
        for v in [
            "<sip:user@cosmo.local>;tag=1",
            "<sips:a@b;transport=tls>",
            "<tel:+1-555>",
            "<sip:a b@c>",
            "<:a@b>",
            "<1sip:a@b>",
            "<sip:a@b",
            "<sip\"x:a>",
        ] {
            assert_eq!(
                angle_uri_end(v.as_bytes(), 0),
                angle_uri_end_reference(v.as_bytes(), 0),
                "{v}"
            );
        }
    }

    #[test]
    fn recorded_from_and_to_forms() {
        let f = parse_name_addr("<sip:user@cosmo.local>;tag=3e49177a52;epid=c8ca638a15").unwrap();
        assert_eq!(f.display_name, None);
        assert_eq!(f.uri, "sip:user@cosmo.local");
        assert_eq!(f.tag(), Some("3e49177a52"));
        assert_eq!(f.param("EPID"), Some("c8ca638a15"));
        let f = parse_name_addr("\"User\"<sip:user@cosmo.local>;tag=3e49177a52").unwrap();
        assert_eq!(f.display_name, Some("User"));
        assert_eq!(f.uri, "sip:user@cosmo.local");
        let t = parse_name_addr("<sip:user@cosmo.local>").unwrap();
        assert_eq!(t.tag(), None);
        assert_eq!(t.params, "");
    }

    #[test]
    fn display_names_may_hide_separators_in_quotes() {
        let a = parse_name_addr(
            r#""Bell, <Alexander>; \"AG\"" <SIP:a.g.bell@Example.com;transport=tcp>;TAG=x;q"#,
        )
        .unwrap();
        assert_eq!(a.display_name, Some(r#"Bell, <Alexander>; \"AG\""#));
        assert_eq!(a.uri, "SIP:a.g.bell@Example.com;transport=tcp");
        assert_eq!(a.tag(), Some("x"));
        assert_eq!(a.param("q"), Some(""));
        assert_eq!(a.param("missing"), None);
    }

    #[test]
    fn addr_spec_form_ends_uri_at_first_semicolon() {
        let a = parse_name_addr("sip:caller@example.net;tag=2234923;epid=1").unwrap();
        assert_eq!(a.uri, "sip:caller@example.net");
        assert_eq!(a.tag(), Some("2234923"));
        assert_eq!(a.params, ";tag=2234923;epid=1");
        // RFC 4475 wsinv: LWS around ';' and '=' and a folded tail.
        let a =
            parse_name_addr(" sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n").unwrap();
        assert_eq!(a.uri, "sip:vivekg@chair-dnrc.example.com");
        assert_eq!(a.tag(), Some("1918181833n"));
        let a = parse_name_addr("sip:a@b;+sip.instance=\"<urn:uuid:1>\"").unwrap();
        assert_eq!(a.uri, "sip:a@b");
        assert_eq!(a.param("+sip.instance"), Some("<urn:uuid:1>"));
    }

    #[test]
    fn unquoted_display_name_and_lws() {
        let a = parse_name_addr("caller<sip:caller@example.com>;tag=323").unwrap();
        assert_eq!(a.display_name, Some("caller"));
        let a = parse_name_addr(
            "\"J Rosenberg \\\\\\\"\"       <sip:jdrosen@example.com>\r\n  ;\r\n  tag = 98asjd8",
        )
        .unwrap();
        assert_eq!(a.display_name, Some("J Rosenberg \\\\\\\""));
        assert_eq!(a.tag(), Some("98asjd8"));
    }

    #[test]
    fn malformed_values_are_rejected() {
        for bad in [
            "\"Mr. J. User <sip:j.user@example.com>", // quotbal
            "Bell, Alexander <sip:a.g.bell@example.com>;tag=43", // baddn
            "\"Watson, Thomas\" < sip:t.watson@example.org >", // badaspec
            "<sip:a@b",
            "<sip:a@b>junk",
            "<sip:a@b>, <sip:c@d>",
            "noscheme",
            "<>",
            "sip:user@example.com?Route=%3Csip:sip.example.com%3E", // regbadct
            "",
            "Joe \"x\" <sip:a@b>",
            "<sip:a@b>;x=\"open",
        ] {
            assert_eq!(
                parse_name_addr(bad),
                Err(ParseError::BadNameAddr),
                "{bad:?}"
            );
        }
    }
}
