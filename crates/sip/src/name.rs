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
    pub(crate) fn from_name(n: &[u8]) -> HeaderId {
        // Dispatch on the length first so that each name costs one or two case-insensitive
        // comparisons: this runs for every header of every parsed message.
        let candidates: &[(&[u8], HeaderId)] = match n.len() {
            1 => return Self::from_compact(n.first().copied().unwrap_or(0)),
            2 => &[(b"to", H::To)],
            3 => &[(b"via", H::Via)],
            4 => &[(b"from", H::From), (b"cseq", H::CSeq), (b"date", H::Date)],
            5 => &[
                (b"route", H::Route),
                (b"event", H::Event),
                (b"allow", H::Allow),
            ],
            6 => &[(b"server", H::Server)],
            7 => &[
                (b"call-id", H::CallId),
                (b"contact", H::Contact),
                (b"expires", H::Expires),
                (b"subject", H::Subject),
            ],
            8 => &[(b"refer-to", H::ReferTo)],
            9 => &[(b"supported", H::Supported)],
            10 => &[(b"user-agent", H::UserAgent)],
            11 => &[(b"referred-by", H::ReferredBy)],
            12 => &[
                (b"max-forwards", H::MaxForwards),
                (b"content-type", H::ContentType),
                (b"record-route", H::RecordRoute),
                (b"allow-events", H::AllowEvents),
                (b"organization", H::Organization),
            ],
            13 => &[(b"authorization", H::Authorization)],
            14 => &[
                (b"content-length", H::ContentLength),
                (b"accept-contact", H::AcceptContact),
                (b"reject-contact", H::RejectContact),
            ],
            15 => &[(b"session-expires", H::SessionExpires)],
            16 => &[
                (b"www-authenticate", H::WwwAuthenticate),
                (b"content-encoding", H::ContentEncoding),
            ],
            18 => &[(b"proxy-authenticate", H::ProxyAuthenticate)],
            19 => &[
                (b"proxy-authorization", H::ProxyAuthorization),
                (b"authentication-info", H::AuthenticationInfo),
                (b"p-asserted-identity", H::PAssertedIdentity),
                (b"request-disposition", H::RequestDisposition),
            ],
            20 => &[(b"p-preferred-identity", H::PPreferredIdentity)],
            25 => &[(b"proxy-authentication-info", H::ProxyAuthenticationInfo)],
            _ => return H::Other,
        };
        for (lower, id) in candidates {
            if n.eq_ignore_ascii_case(lower) {
                return *id;
            }
        }
        H::Other
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

/// RFC 3261 `token` characters.
#[inline]
pub(crate) fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
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
        assert_eq!(HeaderId::from_name(b"q"), H::Other);
        assert_eq!(HeaderId::from_name(b""), H::Other);
    }
}
