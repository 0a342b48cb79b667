//! Header name identification: full and compact forms (RFC 3261 §7.3.3 and later registrations).

/// Headers this crate knows by name. Anything else is [`HeaderId::Other`] and matched by
/// case-insensitive name comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub(crate) enum HeaderId {
    AcceptContact,
    Allow,
    AllowEvents,
    AuthenticationInfo,
    Authorization,
    CallId,
    Contact,
    ContentEncoding,
    ContentLength,
    ContentType,
    CSeq,
    Date,
    Event,
    Expires,
    From,
    MaxForwards,
    Organization,
    PAssertedIdentity,
    PPreferredIdentity,
    ProxyAuthenticate,
    ProxyAuthenticationInfo,
    ProxyAuthorization,
    RecordRoute,
    ReferredBy,
    ReferTo,
    RejectContact,
    RequestDisposition,
    Route,
    Server,
    SessionExpires,
    Subject,
    Supported,
    To,
    UserAgent,
    Via,
    WwwAuthenticate,
    Other,
}

use HeaderId as H;

/// Canonical spelling and compact form of every known id (checked against `from_name` in tests).
#[cfg(test)]
pub(crate) const KNOWN: &[(&str, Option<u8>, HeaderId)] = &[
    ("Accept-Contact", Some(b'a'), H::AcceptContact),
    ("Allow", None, H::Allow),
    ("Allow-Events", Some(b'u'), H::AllowEvents),
    ("Authentication-Info", None, H::AuthenticationInfo),
    ("Authorization", None, H::Authorization),
    ("Call-ID", Some(b'i'), H::CallId),
    ("Contact", Some(b'm'), H::Contact),
    ("Content-Encoding", Some(b'e'), H::ContentEncoding),
    ("Content-Length", Some(b'l'), H::ContentLength),
    ("Content-Type", Some(b'c'), H::ContentType),
    ("CSeq", None, H::CSeq),
    ("Date", None, H::Date),
    ("Event", Some(b'o'), H::Event),
    ("Expires", None, H::Expires),
    ("From", Some(b'f'), H::From),
    ("Max-Forwards", None, H::MaxForwards),
    ("Organization", None, H::Organization),
    ("P-Asserted-Identity", None, H::PAssertedIdentity),
    ("P-Preferred-Identity", None, H::PPreferredIdentity),
    ("Proxy-Authenticate", None, H::ProxyAuthenticate),
    (
        "Proxy-Authentication-Info",
        None,
        H::ProxyAuthenticationInfo,
    ),
    ("Proxy-Authorization", None, H::ProxyAuthorization),
    ("Record-Route", None, H::RecordRoute),
    ("Referred-By", Some(b'b'), H::ReferredBy),
    ("Refer-To", Some(b'r'), H::ReferTo),
    ("Reject-Contact", Some(b'j'), H::RejectContact),
    ("Request-Disposition", Some(b'd'), H::RequestDisposition),
    ("Route", None, H::Route),
    ("Server", None, H::Server),
    ("Session-Expires", Some(b'x'), H::SessionExpires),
    ("Subject", Some(b's'), H::Subject),
    ("Supported", Some(b'k'), H::Supported),
    ("To", Some(b't'), H::To),
    ("User-Agent", None, H::UserAgent),
    ("Via", Some(b'v'), H::Via),
    ("WWW-Authenticate", None, H::WwwAuthenticate),
];

impl HeaderId {
    /// Identify a header name as written on the wire (any case, full or compact form).
    #[inline]
    pub(crate) fn from_name(n: &[u8]) -> HeaderId {
        // Length and first letter select at most one candidate, so each name costs one
        // case-insensitive comparison: this runs for every header of every parsed message.
        let Some(&first) = n.first() else {
            return H::Other;
        };
        let at = |i: usize| n.get(i).map_or(0, |b| b | 0x20);
        let (lower, id): (&[u8], HeaderId) = match (n.len(), first | 0x20) {
            (1, _) => return Self::from_compact(first),
            (2, b't') => (b"to", H::To),
            (3, b'v') => (b"via", H::Via),
            (4, b'f') => (b"from", H::From),
            (4, b'c') => (b"cseq", H::CSeq),
            (4, b'd') => (b"date", H::Date),
            (5, b'r') => (b"route", H::Route),
            (5, b'e') => (b"event", H::Event),
            (5, b'a') => (b"allow", H::Allow),
            (6, b's') => (b"server", H::Server),
            (7, b'c') if at(2) == b'l' => (b"call-id", H::CallId),
            (7, b'c') => (b"contact", H::Contact),
            (7, b'e') => (b"expires", H::Expires),
            (7, b's') => (b"subject", H::Subject),
            (8, b'r') => (b"refer-to", H::ReferTo),
            (9, b's') => (b"supported", H::Supported),
            (10, b'u') => (b"user-agent", H::UserAgent),
            (11, b'r') => (b"referred-by", H::ReferredBy),
            (12, b'm') => (b"max-forwards", H::MaxForwards),
            (12, b'c') => (b"content-type", H::ContentType),
            (12, b'r') => (b"record-route", H::RecordRoute),
            (12, b'a') => (b"allow-events", H::AllowEvents),
            (12, b'o') => (b"organization", H::Organization),
            (13, b'a') => (b"authorization", H::Authorization),
            (14, b'c') => (b"content-length", H::ContentLength),
            (14, b'a') => (b"accept-contact", H::AcceptContact),
            (14, b'r') => (b"reject-contact", H::RejectContact),
            (15, b's') => (b"session-expires", H::SessionExpires),
            (16, b'w') => (b"www-authenticate", H::WwwAuthenticate),
            (16, b'c') => (b"content-encoding", H::ContentEncoding),
            (18, b'p') => (b"proxy-authenticate", H::ProxyAuthenticate),
            (19, b'p') if at(1) == b'r' => (b"proxy-authorization", H::ProxyAuthorization),
            (19, b'p') => (b"p-asserted-identity", H::PAssertedIdentity),
            (19, b'a') => (b"authentication-info", H::AuthenticationInfo),
            (19, b'r') => (b"request-disposition", H::RequestDisposition),
            (20, b'p') => (b"p-preferred-identity", H::PPreferredIdentity),
            (25, b'p') => (b"proxy-authentication-info", H::ProxyAuthenticationInfo),
            _ => return H::Other,
        };
        // Branch-free case-insensitive compare. Sound because `lower` holds only lower-case
        // letters and '-': `b | 0x20` equals a letter only for that letter in either case, and
        // equals '-' only for '-' or CR, which a header name cannot contain.
        let diff = n
            .iter()
            .zip(lower)
            .fold(0u8, |acc, (a, b)| acc | ((a | 0x20) ^ b));
        if diff == 0 && n.len() == lower.len() {
            id
        } else {
            H::Other
        }
    }

    fn from_compact(c: u8) -> HeaderId {
        match c.to_ascii_lowercase() {
            b'a' => H::AcceptContact,
            b'b' => H::ReferredBy,
            b'c' => H::ContentType,
            b'd' => H::RequestDisposition,
            b'e' => H::ContentEncoding,
            b'f' => H::From,
            b'i' => H::CallId,
            b'j' => H::RejectContact,
            b'k' => H::Supported,
            b'l' => H::ContentLength,
            b'm' => H::Contact,
            b'o' => H::Event,
            b'r' => H::ReferTo,
            b's' => H::Subject,
            b't' => H::To,
            b'u' => H::AllowEvents,
            b'v' => H::Via,
            b'x' => H::SessionExpires,
            _ => H::Other,
        }
    }

    /// Headers whose values are not comma-separated lists: auth headers carry commas between their
    /// parameters, Date has one after the weekday, and free-text headers may contain commas.
    pub(crate) fn is_single_valued_text(self) -> bool {
        matches!(
            self,
            H::WwwAuthenticate
                | H::Authorization
                | H::ProxyAuthenticate
                | H::ProxyAuthorization
                | H::AuthenticationInfo
                | H::ProxyAuthenticationInfo
                | H::Date
                | H::Subject
                | H::UserAgent
                | H::Server
                | H::Organization
        )
    }
}

/// RFC 3261 `token` characters, as a table: the header scanner asks for every name byte.
static TOKEN: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
            );
        i += 1;
    }
    t
};

/// RFC 3261 `token` characters.
#[inline(always)]
pub(crate) fn is_token_byte(b: u8) -> bool {
    TOKEN[usize::from(b)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_name_and_compact_form_resolves() {
        for (name, compact, id) in KNOWN {
            assert_eq!(HeaderId::from_name(name.as_bytes()), *id, "{name}");
            assert_eq!(
                HeaderId::from_name(name.to_ascii_uppercase().as_bytes()),
                *id,
                "{name}"
            );
            assert_eq!(
                HeaderId::from_name(name.to_ascii_lowercase().as_bytes()),
                *id,
                "{name}"
            );
            if let Some(c) = compact {
                assert_eq!(HeaderId::from_compact(*c), *id);
                assert_eq!(HeaderId::from_name(&[c.to_ascii_uppercase()]), *id);
            }
        }
        assert_eq!(HeaderId::from_name(b"X-Foo"), H::Other);
        // Same length and first letter as known names, but different.
        for other in [
            "Tx",
            "Vib",
            "Fram",
            "Callxid",
            "Contacx",
            "Proxy-Authorizatiox",
            "P-Asserted-Identitx",
        ] {
            assert_eq!(HeaderId::from_name(other.as_bytes()), H::Other, "{other}");
        }
        let tokens: Vec<u8> = (0..=255u8).filter(|b| is_token_byte(*b)).collect();
        assert_eq!(
            tokens,
            b"!%'*+-.0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_`abcdefghijklmnopqrstuvwxyz~"
        );
        assert_eq!(HeaderId::from_name(b"q"), H::Other);
        assert_eq!(HeaderId::from_name(b""), H::Other);
    }
}
