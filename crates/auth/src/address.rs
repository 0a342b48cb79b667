//! Addresses as the servers behind read them when they look for a user: the spellings of one
//! SIP address (`sips:`, a port, `%`-escapes, a password, parameters) and its user part.

/// `uri` as a server behind may take it when it looks for a user: scheme `sip` (for `sips` too),
/// the user part unescaped and without a password or parameters, the host without a port or
/// parameters, lower case; a `tel:` (or `tels:`) number as `tel:` without separators; any other
/// scheme as it is, lower case. For asking whether an
/// address is some user's identity whatever its spelling (`sips:`, `:5060`, `b%6Fb`, `bob:pw`):
/// each of those reaches bob at a registrar.
pub(crate) fn canonical_address(uri: &str) -> String {
    let uri = uri.trim();
    let sip_rest = uri.split_once(':').and_then(|(scheme, rest)| {
        (scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips")).then_some(rest)
    });
    let Some(rest) = sip_rest else {
        // A `tel:` number without its parameters and visual separators (RFC 3966 §4: compared
        // without them); `tel:+49-30-999` is `sip:+4930999@…;user=phone` to a registrar. A
        // `tels:` one too: no RFC defines it, but Kamailio reads its number as a `tel:` one's.
        if let Some((scheme, rest)) = uri.split_once(':')
            && (scheme.eq_ignore_ascii_case("tel") || scheme.eq_ignore_ascii_case("tels"))
        {
            let number = rest.split(';').next().unwrap_or_default();
            return format!("tel:{}", canonical_user(number));
        }
        return uri.to_ascii_lowercase();
    };
    // The user part runs to the last `@`, as the registrar reads it.
    let (user, hostport) = match rest.rsplit_once('@') {
        Some((user, hostport)) => (Some(user), hostport),
        None => (None, rest),
    };
    let hostport = hostport.split([';', '?']).next().unwrap_or_default();
    let host = match hostport.find(']') {
        Some(end) if hostport.starts_with('[') => &hostport[..=end],
        _ => hostport.split(':').next().unwrap_or_default(),
    };
    let mut out = String::from("sip:");
    if let Some(user) = user {
        out.push_str(&canonical_user(user));
        out.push('@');
    }
    out.push_str(host);
    out.make_ascii_lowercase();
    out
}

/// A SIP URI's user part (`userinfo` before the `@`) as a registrar looks it up: without a
/// password or user parameters, unescaped, lower case; a telephone number (digits, a leading
/// `+`, visual separators) without its separators (`+49-30-999` is `+4930999`).
pub(crate) fn canonical_user(userinfo: &str) -> String {
    let user = userinfo.split([':', ';']).next().unwrap_or_default();
    let mut out: String = percent_encoding::percent_decode_str(user)
        .decode_utf8_lossy()
        .into_owned();
    out.make_ascii_lowercase();
    if is_phone_number(&out) {
        out.retain(|c| !is_visual_separator(c));
    }
    out
}

/// RFC 3966's `visual-separator`.
fn is_visual_separator(c: char) -> bool {
    matches!(c, '-' | '.' | '(' | ')')
}

/// Digits with visual separators and at most a leading `+`, at least one digit.
fn is_phone_number(s: &str) -> bool {
    let digits = s.strip_prefix('+').unwrap_or(s);
    digits.chars().any(|c| c.is_ascii_digit())
        && digits
            .chars()
            .all(|c| c.is_ascii_digit() || is_visual_separator(c))
}

/// The user part of a [`canonical_address`]: a SIP URI's, or a `tel:` URI's number (without its
/// parameters); `None` for a SIP URI without one or another scheme.
pub(crate) fn address_user(canonical: &str) -> Option<&str> {
    if let Some(rest) = canonical.strip_prefix("sip:") {
        return rest.rsplit_once('@').map(|(user, _)| user);
    }
    canonical
        .strip_prefix("tel:")
        .and_then(|number| number.split(';').next())
        .filter(|number| !number.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_an_address_has_one_canonical_form() {
        for spelt in [
            "sip:bob@example.com",
            " SIPS:Bob@Example.COM ",
            "sip:bob@example.com:5060",
            "sip:b%6Fb@example.com",
            "sip:b%6fB@example.com",
            "sip:bob:secret@example.com;transport=tcp",
            "sip:bob;npdi@example.com?subject=x",
        ] {
            assert_eq!(canonical_address(spelt), "sip:bob@example.com", "{spelt}");
            assert_eq!(address_user(&canonical_address(spelt)), Some("bob"));
        }
        assert_eq!(
            canonical_address("sip:[2001:db8::1]:5060;lr"),
            "sip:[2001:db8::1]"
        );
        assert_eq!(address_user("sip:[2001:db8::1]"), None);
        assert_eq!(
            canonical_address("sip:a@b@Example.com"),
            "sip:a@b@example.com"
        );
        assert_eq!(address_user("sip:a@b@example.com"), Some("a@b"));
        assert_eq!(canonical_address("tel:+4930123456"), "tel:+4930123456");
        assert_eq!(
            address_user("tel:+4930123456;phone-context=x"),
            Some("+4930123456")
        );
        assert_eq!(address_user("urn:service:sos"), None);
        assert_eq!(
            canonical_address("TEL:+49-30-(123).456;ext=1"),
            "tel:+4930123456"
        );
        assert_eq!(
            canonical_address("sip:+49-30-123456@Example.com;user=phone"),
            "sip:+4930123456@example.com"
        );
        // A name with a dot or a dash is not a number.
        assert_eq!(
            canonical_address("sip:bob.smith@example.com"),
            "sip:bob.smith@example.com"
        );
        assert_eq!(
            canonical_address("sip:-.-@example.com"),
            "sip:-.-@example.com"
        );
    }
}
