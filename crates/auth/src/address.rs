//! Addresses as the servers behind read them when they look for a user: the spellings of one
//! SIP address (`sips:`, a port, `%`-escapes, a password, parameters) and its user part.

/// `uri` as a server behind may take it when it looks for a user: scheme `sip` (for `sips` too),
/// the user part unescaped and without a password or parameters, the host without a port or
/// parameters, lower case; any other scheme (`tel:`) as it is, lower case. For asking whether an
/// address is some user's identity whatever its spelling (`sips:`, `:5060`, `b%6Fb`, `bob:pw`):
/// each of those reaches bob at a registrar.
pub(crate) fn canonical_address(uri: &str) -> String {
    let uri = uri.trim();
    let sip_rest = uri.split_once(':').and_then(|(scheme, rest)| {
        (scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips")).then_some(rest)
    });
    let Some(rest) = sip_rest else {
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
/// password or user parameters, unescaped, lower case.
pub(crate) fn canonical_user(userinfo: &str) -> String {
    let user = userinfo.split([':', ';']).next().unwrap_or_default();
    let mut out: String = percent_encoding::percent_decode_str(user)
        .decode_utf8_lossy()
        .into_owned();
    out.make_ascii_lowercase();
    out
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
    }
}
