//! Just enough SIP-URI and Via parsing for routing decisions (RFC 3261 §19.1, §20.42).

use std::net::{IpAddr, SocketAddr};

use crate::types::Transport;

/// A `sip:`/`sips:` URI, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SipUri<'a> {
    /// True for `sips:`.
    pub secure: bool,
    /// User part (before `@`), without password handling.
    pub user: Option<&'a str>,
    /// Host as written (IPv6 references keep their brackets).
    pub host: &'a str,
    /// Port when present.
    pub port: Option<u16>,
    /// The `;param` tail (without the leading `;`), before any `?headers`.
    pub params: &'a str,
}

impl<'a> SipUri<'a> {
    /// The same request target as far as routing goes: scheme, user, host (ASCII case ignored),
    /// port and `maddr` (which sends a request elsewhere than its host, RFC 3261 §19.1.1). The
    /// other parameters are left out: stacks write a URI back with its parameters re-ordered or
    /// re-cased. For a request the gateway passes because of where it goes (the ACK of a 2xx, a
    /// request in a dialog delivered under another address): only to the party that answered.
    pub fn same_target(&self, other: &SipUri<'_>) -> bool {
        let maddr = |u: &SipUri<'_>| param_in(u.params, "maddr").map(str::to_ascii_lowercase);
        self.secure == other.secure
            && self.user == other.user
            && self.host.eq_ignore_ascii_case(other.host)
            && self.port == other.port
            && maddr(self) == maddr(other)
    }

    /// Parse a SIP or SIPS URI; `None` for other schemes or malformed input.
    pub fn parse(s: &'a str) -> Option<SipUri<'a>> {
        let s = trim(s);
        let colon = memchr::memchr(b':', s.as_bytes())?;
        let scheme = s.get(..colon)?;
        let secure = if scheme.eq_ignore_ascii_case("sip") {
            false
        } else if scheme.eq_ignore_ascii_case("sips") {
            true
        } else {
            return None;
        };
        let rest = s.get(colon + 1..)?;
        let rest = match memchr::memchr(b'?', rest.as_bytes()) {
            Some(q) => rest.get(..q)?,
            None => rest,
        };
        let (user, hostpart) = match memchr::memrchr(b'@', rest.as_bytes()) {
            Some(at) => (Some(rest.get(..at)?), rest.get(at + 1..)?),
            None => (None, rest),
        };
        let (hostport, params) = match memchr::memchr(b';', hostpart.as_bytes()) {
            Some(i) => (hostpart.get(..i)?, hostpart.get(i + 1..)?),
            None => (hostpart, ""),
        };
        let (host, port) = split_hostport(hostport)?;
        Some(SipUri {
            secure,
            user: user.filter(|u| !u.is_empty()),
            host,
            port,
            params,
        })
    }

    /// Value of URI parameter `name` (case-insensitive); `Some("")` for a flag parameter.
    pub fn param(&self, name: &str) -> Option<&'a str> {
        param_in(self.params, name)
    }

    /// The `transport` parameter as a [`Transport`] (TLS for `sips:` without one).
    pub fn transport(&self) -> Option<Transport> {
        match self.param("transport") {
            Some(t) => Transport::from_token(t),
            None if self.secure => Some(Transport::Tls),
            None => None,
        }
    }

    /// The host as an IP address when it is a literal.
    pub fn ip(&self) -> Option<IpAddr> {
        host_ip(self.host)
    }

    /// `sip:user@host[:port]` with the host and the user's ASCII letters lower-cased: the key of an
    /// address-of-record. The user part is case-sensitive in SIP, but the security core takes
    /// `sip:Alice@…` for the authenticated `sip:alice@…`: were they two AORs here, one account
    /// could register as many AORs as its name has case variants, each with its bindings
    /// (`max_bindings_per_aor` apiece), and calls to one spelling would miss the other's.
    pub fn aor(&self) -> String {
        let mut out = String::new();
        self.write_aor(&mut out);
        out
    }

    /// [`SipUri::aor`] written into `out`, cleared first (a buffer kept from one REGISTER to the
    /// next).
    pub fn write_aor(&self, out: &mut String) {
        // A password, if any, is not part of the identity.
        let user = self.user.map(|u| u.split(':').next().unwrap_or(u));
        // Sized for all of it (a port takes six bytes at most): it is built for every REGISTER.
        let user_len = user.map_or(0, |u| u.len() + 1);
        out.clear();
        out.reserve(4 + user_len + self.host.len() + 6);
        out.push_str("sip:");
        if let Some(user) = user {
            out.push_str(user);
            out.push('@');
        }
        out.push_str(self.host);
        // Lower-cased in place, past the scheme.
        if let Some(h) = out.get_mut(4..) {
            h.make_ascii_lowercase();
        }
        if let Some(p) = self.port {
            out.push(':');
            push_decimal(out, u64::from(p));
        }
    }

    /// Socket address for a literal host, with the transport's default port.
    pub fn socket_addr(&self, transport: Transport) -> Option<SocketAddr> {
        Some(SocketAddr::new(
            self.ip()?,
            self.port.unwrap_or(transport.default_port()),
        ))
    }
}

/// Split `host[:port]`, `[v6][:port]`.
pub(crate) fn split_hostport(s: &str) -> Option<(&str, Option<u16>)> {
    let s = trim(s);
    if s.is_empty() {
        return None;
    }
    let (host, port) = if s.starts_with('[') {
        let close = memchr::memchr(b']', s.as_bytes())?;
        let host = s.get(..=close)?;
        match s.get(close + 1..)? {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':')?)),
        }
    } else {
        match memchr::memrchr(b':', s.as_bytes()) {
            Some(i) => (s.get(..i)?, Some(s.get(i + 1..)?)),
            None => (s, None),
        }
    };
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'[' | b']' | b':'))
    {
        return None;
    }
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok()?),
        None => None,
    };
    Some((host, port))
}

/// `addr` with an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, how a dual-stack socket shows an
/// IPv4 host) as the IPv4 address it is: what configured addresses are compared with.
pub(crate) fn canonical(addr: std::net::SocketAddr) -> std::net::SocketAddr {
    std::net::SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// A literal IPv4 or bracketed IPv6 host.
pub(crate) fn host_ip(host: &str) -> Option<IpAddr> {
    let h = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    h.parse().ok()
}

/// A registered Contact as a Request-URI (RFC 3261 §16.6 step 2): without what §19.1.1 does not
/// allow there, its `?headers` and its `method` parameter.
pub(crate) fn request_target(contact: &str) -> std::borrow::Cow<'_, str> {
    let contact = trim(contact);
    let uri = match memchr::memchr(b'?', contact.as_bytes()) {
        Some(q) => contact.get(..q).unwrap_or(contact),
        None => contact,
    };
    // The parameters run to the end once the headers are cut off.
    let Some(params) = SipUri::parse(uri)
        .map(|u| u.params)
        .filter(|p| param_in(p, "method").is_some())
    else {
        return std::borrow::Cow::Borrowed(uri);
    };
    let head = uri.get(..uri.len() - params.len()).unwrap_or(uri);
    let mut out = String::with_capacity(uri.len());
    out.push_str(head.strip_suffix(';').unwrap_or(head));
    for p in param_parts(params).filter(|p| !param_name(p).eq_ignore_ascii_case("method")) {
        out.push(';');
        out.push_str(p);
    }
    std::borrow::Cow::Owned(out)
}

/// `str::trim`, without decoding chars when both ends are printable ASCII (the usual case):
/// every character `trim` removes is either at most 0x20 or not ASCII.
pub(crate) fn trim(s: &str) -> &str {
    let b = s.as_bytes();
    if b.first().is_some_and(plain) && b.last().is_some_and(plain) {
        s
    } else {
        s.trim()
    }
}

/// `str::trim_start`, the same way as [`trim`].
fn trim_start(s: &str) -> &str {
    if s.as_bytes().first().is_some_and(plain) {
        s
    } else {
        s.trim_start()
    }
}

/// A byte that is printable ASCII, never whitespace.
fn plain(b: &u8) -> bool {
    (0x21..0x80).contains(b)
}

/// The `;`-separated parts of a parameter list, as `str::split(';')` gives them: found with
/// `memchr` (this runs for every Via, URI and parameter lookup of every message).
pub(crate) fn param_parts(params: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(params);
    std::iter::from_fn(move || {
        let r = rest?;
        match memchr::memchr(b';', r.as_bytes()) {
            Some(i) => {
                rest = r.get(i + 1..);
                r.get(..i)
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

/// A parameter's name and value (`""` for a flag), both trimmed.
fn name_value(p: &str) -> (&str, &str) {
    let p = trim(p);
    match memchr::memchr(b'=', p.as_bytes()) {
        Some(i) => (
            trim(p.get(..i).unwrap_or("")),
            trim(p.get(i + 1..).unwrap_or("")),
        ),
        None => (p, ""),
    }
}

/// Look up `name` in a `;`-separated parameter list.
pub(crate) fn param_in<'a>(params: &'a str, name: &str) -> Option<&'a str> {
    param_parts(params).find_map(|p| {
        let (n, v) = name_value(p);
        n.eq_ignore_ascii_case(name).then(|| {
            v.strip_prefix('"')
                .and_then(|x| x.strip_suffix('"'))
                .unwrap_or(v)
        })
    })
}

/// The name of a parameter (`p` as [`param_parts`] gives it; `branch` of `branch=z9hG4bK1`).
pub(crate) fn param_name(p: &str) -> &str {
    name_value(p).0
}

/// One Via header element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Via<'a> {
    /// Transport token as written (`UDP`, `TCP`, `TLS`, ...).
    pub transport: &'a str,
    /// sent-by host.
    pub host: &'a str,
    /// sent-by port.
    pub port: Option<u16>,
    /// The `;param` tail without its leading `;`.
    pub params: &'a str,
}

impl<'a> Via<'a> {
    /// Parse one Via element: `SIP/2.0/UDP host:port;params` (LWS allowed around `/`).
    pub fn parse(s: &'a str) -> Option<Via<'a>> {
        let s = trim(s);
        let b = s.as_bytes();
        let first = memchr::memchr(b'/', b)?;
        let second = first + 1 + memchr::memchr(b'/', b.get(first + 1..)?)?;
        let name = trim(s.get(..first)?);
        let version = trim(s.get(first + 1..second)?);
        let rest = trim_start(s.get(second + 1..)?);
        if !name.eq_ignore_ascii_case("SIP") || version != "2.0" {
            return None;
        }
        let tend = rest
            .bytes()
            .position(|c| c.is_ascii_whitespace())
            .unwrap_or(rest.len());
        let transport = rest.get(..tend)?;
        let after = trim_start(rest.get(tend..)?);
        let (sent_by, params) = match memchr::memchr(b';', after.as_bytes()) {
            Some(i) => (after.get(..i)?, after.get(i + 1..)?),
            None => (after, ""),
        };
        if transport.is_empty() {
            return None;
        }
        let (host, port) = split_hostport(sent_by)?;
        Some(Via {
            transport,
            host,
            port,
            params,
        })
    }

    /// Parameter value (`Some("")` for a flag).
    pub fn param(&self, name: &str) -> Option<&'a str> {
        param_in(self.params, name)
    }

    /// The branch parameter.
    pub fn branch(&self) -> Option<&'a str> {
        self.param("branch")
    }

    /// Transport as an enum.
    pub fn transport(&self) -> Option<Transport> {
        Transport::from_token(self.transport)
    }

    /// `host:port` of sent-by, lower-cased (transaction matching key part).
    pub fn sent_by_key(&self) -> String {
        let mut key = self.host.to_ascii_lowercase();
        if let Some(p) = self.port {
            key.push(':');
            push_decimal(&mut key, u64::from(p));
        }
        key
    }

    /// Where a response to this Via goes (RFC 3261 §18.2.2 with RFC 3581 rport): `received` or
    /// the sent-by host, `rport` value or the sent-by port.
    pub fn response_addr(&self) -> Option<SocketAddr> {
        let transport = self.transport().unwrap_or(Transport::Udp);
        let ip = match self.param("received") {
            Some(r) => host_ip(r)?,
            None => host_ip(self.host)?,
        };
        let port = match self.param("rport").and_then(|p| p.parse::<u16>().ok()) {
            Some(p) => p,
            None => self.port.unwrap_or(transport.default_port()),
        };
        Some(SocketAddr::new(ip, port))
    }
}

/// Split a header value on commas outside quotes and angle brackets.
#[cfg(test)]
pub(crate) fn split_list(v: &str) -> Vec<&str> {
    list_elements(v).collect()
}

/// The elements of a header value, split on commas outside quotes and angle brackets, trimmed,
/// empty ones skipped: [`split_list`] without the `Vec` (most callers want the first element).
pub(crate) fn list_elements(v: &str) -> ListElements<'_> {
    ListElements { rest: Some(v) }
}

/// Iterator of [`list_elements`].
pub(crate) struct ListElements<'a> {
    /// What is left to split; `None` once the last element was returned.
    rest: Option<&'a str>,
}

impl<'a> Iterator for ListElements<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        loop {
            let v = self.rest?;
            let end = element_end(v.as_bytes());
            let element = match end {
                Some(i) => {
                    self.rest = v.get(i + 1..);
                    v.get(..i).unwrap_or("")
                }
                None => {
                    self.rest = None;
                    v
                }
            };
            let element = element.trim();
            if !element.is_empty() {
                return Some(element);
            }
        }
    }
}

/// Index of the first comma of `v` outside quotes and angle brackets. Jumps from one special
/// byte to the next with `memchr` (this runs over every Via and Route value several times per
/// message): outside brackets only `,` `"` `<` matter, inside them `>` `"`, inside quotes `"` and
/// the `\\` escape. All are ASCII, so every index found is a char boundary.
fn element_end(v: &[u8]) -> Option<usize> {
    let mut at = 0;
    let mut angle = false;
    loop {
        let rest = v.get(at..)?;
        let found = if angle {
            memchr::memchr2(b'>', b'"', rest)
        } else {
            memchr::memchr3(b',', b'"', b'<', rest)
        };
        let i = at + found?;
        match v.get(i) {
            Some(b',') => return Some(i),
            Some(b'<') => angle = true,
            Some(b'>') => angle = false,
            Some(b'"') => {
                // Inside quotes: up to the closing quote, skipping escaped bytes.
                let mut j = i + 1;
                loop {
                    let q = v.get(j..)?;
                    let k = j + memchr::memchr2(b'"', b'\\', q)?;
                    if v.get(k) == Some(&b'"') {
                        j = k;
                        break;
                    }
                    j = k + 2;
                }
                at = j + 1;
                continue;
            }
            _ => {}
        }
        at = i + 1;
    }
}

/// Append the decimal digits of `n` to `out` (what `n.to_string()` gives, without the
/// formatting machinery or a temporary String).
pub(crate) fn push_decimal(out: &mut String, n: u64) {
    out.push_str(itoa::Buffer::new().format(n));
}

/// Append the text of `ip` to `out`: an IPv4 address in dotted decimal by hand (the per-message
/// case: a Via `received=` of every UDP request), an IPv6 one through its `Display` (RFC 5952's
/// compressed form; rare enough not to be written twice).
pub(crate) fn push_ip(out: &mut String, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                push_decimal(out, u64::from(octet));
            }
        }
        std::net::IpAddr::V6(v6) => {
            use std::fmt::Write as _;
            let _ = write!(out, "{v6}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_contact_as_request_uri_loses_its_headers_and_method() {
        for (contact, uri) in [
            ("sip:bob@10.0.0.6:5060", "sip:bob@10.0.0.6:5060"),
            (
                "sip:2001@10.0.0.6;transport=tls;method=INVITE?Subject=x",
                "sip:2001@10.0.0.6;transport=tls",
            ),
            ("sip:bob@h;METHOD=REGISTER;lr", "sip:bob@h;lr"),
            ("sip:bob@h;method", "sip:bob@h"),
            // A `;` in the user part is not a parameter.
            ("sip:a;method=x@h;ob", "sip:a;method=x@h;ob"),
            ("sip:a;b@h;method=x;ob", "sip:a;b@h;ob"),
            (" sip:bob@h?X=1 ", "sip:bob@h"),
        ] {
            assert_eq!(request_target(contact), uri, "{contact}");
        }
    }

    /// The str-pattern forms the byte scans replaced, kept to check them against.
    mod reference {
        pub(super) fn split_hostport(s: &str) -> Option<(&str, Option<u16>)> {
            let s = s.trim();
            if s.is_empty() {
                return None;
            }
            let (host, port) = if s.starts_with('[') {
                let close = s.find(']')?;
                let host = s.get(..=close)?;
                match s.get(close + 1..)? {
                    "" => (host, None),
                    p => (host, Some(p.strip_prefix(':')?)),
                }
            } else {
                match s.rfind(':') {
                    Some(i) => (s.get(..i)?, Some(s.get(i + 1..)?)),
                    None => (s, None),
                }
            };
            if host.is_empty()
                || !host.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'[' | b']' | b':')
                })
            {
                return None;
            }
            let port = match port {
                Some(p) => Some(p.parse::<u16>().ok()?),
                None => None,
            };
            Some((host, port))
        }

        pub(super) fn param_in<'a>(params: &'a str, name: &str) -> Option<&'a str> {
            params.split(';').find_map(|p| {
                let p = p.trim();
                let (n, v) = match p.find('=') {
                    Some(i) => (p.get(..i)?.trim(), p.get(i + 1..)?.trim()),
                    None => (p, ""),
                };
                n.eq_ignore_ascii_case(name).then(|| {
                    v.strip_prefix('"')
                        .and_then(|x| x.strip_suffix('"'))
                        .unwrap_or(v)
                })
            })
        }

        /// (transport, host, port, params) of `Via::parse`.
        pub(super) fn via(s: &str) -> Option<(&str, &str, Option<u16>, &str)> {
            let s = s.trim();
            let mut parts = s.splitn(3, '/');
            let name = parts.next()?.trim();
            let version = parts.next()?.trim();
            let rest = parts.next()?.trim_start();
            if !name.eq_ignore_ascii_case("SIP") || version != "2.0" {
                return None;
            }
            let tend = rest
                .find(|c: char| c.is_ascii_whitespace())
                .unwrap_or(rest.len());
            let transport = rest.get(..tend)?;
            let after = rest.get(tend..)?.trim_start();
            let (sent_by, params) = match after.find(';') {
                Some(i) => (after.get(..i)?, after.get(i + 1..)?),
                None => (after, ""),
            };
            if transport.is_empty() {
                return None;
            }
            let (host, port) = split_hostport(sent_by)?;
            Some((transport, host, port, params))
        }

        /// (secure, user, host, port, params) of `SipUri::parse`.
        #[allow(clippy::type_complexity)]
        pub(super) fn uri(s: &str) -> Option<(bool, Option<&str>, &str, Option<u16>, &str)> {
            let s = s.trim();
            let colon = s.find(':')?;
            let scheme = s.get(..colon)?;
            let secure = if scheme.eq_ignore_ascii_case("sip") {
                false
            } else if scheme.eq_ignore_ascii_case("sips") {
                true
            } else {
                return None;
            };
            let rest = s.get(colon + 1..)?;
            let rest = rest.split('?').next().unwrap_or(rest);
            let (user, hostpart) = match rest.rfind('@') {
                Some(at) => (Some(rest.get(..at)?), rest.get(at + 1..)?),
                None => (None, rest),
            };
            let (hostport, params) = match hostpart.find(';') {
                Some(i) => (hostpart.get(..i)?, hostpart.get(i + 1..)?),
                None => (hostpart, ""),
            };
            let (host, port) = split_hostport(hostport)?;
            Some((secure, user.filter(|u| !u.is_empty()), host, port, params))
        }
    }

    /// Checks the byte scans against the str-pattern forms on one input.
    fn agree(s: &str) {
        assert_eq!(split_hostport(s), reference::split_hostport(s), "{s:?}");
        for name in ["", "a", "rport", "A", "x y"] {
            assert_eq!(
                param_in(s, name),
                reference::param_in(s, name),
                "{s:?} {name:?}"
            );
        }
        let via = Via::parse(s).map(|v| (v.transport, v.host, v.port, v.params));
        assert_eq!(via, reference::via(s), "{s:?}");
        let uri = SipUri::parse(s).map(|u| (u.secure, u.user, u.host, u.port, u.params));
        assert_eq!(uri, reference::uri(s), "{s:?}");
    }

    #[test]
    fn byte_scans_agree_with_the_str_patterns_they_replaced() {
        // Every string of up to four characters over the characters that matter (whitespace
        // that `trim` removes and `is_ascii_whitespace` does not, non-ASCII ones included),
        // behind prefixes that reach each parser's later steps.
        let alphabet = [
            "/", ";", "=", ":", "[", "]", "@", "?", " ", "\t", "\x0b", "\u{a0}", "\u{3000}", "a",
            "1", "\"", "é",
        ];
        let mut strings = vec![String::new()];
        let mut checked = 0;
        for _ in 0..4 {
            let mut longer = Vec::new();
            for s in &strings {
                for c in alphabet {
                    longer.push(format!("{s}{c}"));
                }
            }
            for s in &longer {
                for prefix in ["", "SIP/2.0/UDP h", "sip:u@h", "a=1;"] {
                    agree(&format!("{prefix}{s}"));
                    checked += 1;
                }
            }
            strings = longer;
        }
        assert!(checked > 300_000, "{checked}");
        for s in [
            " SIP / 2.0 / TCP 192.0.2.1:5061 ;branch=z9hG4bK1; rport ",
            "SIP/2.0/UDP [2001:db8::1]:5060;received=192.0.2.9;rport=5062",
            "SIP/2.0/TLS host.example.com;branch=\"q\"",
            "\u{a0}SIP/2.0/UDP h:1\u{3000}",
            "sips:alice:pw@[::1]:5061;transport=tls;lr?subject=x",
            "sip:@h",
            "sip:h:99999",
        ] {
            agree(s);
        }
    }

    #[test]
    fn uri_parts() {
        let u = SipUri::parse("sip:alice@Example.COM:5070;transport=TCP;lr?x=y").unwrap();
        assert_eq!(u.user, Some("alice"));
        assert_eq!(u.host, "Example.COM");
        assert_eq!(u.port, Some(5070));
        assert_eq!(u.transport(), Some(Transport::Tcp));
        assert_eq!(u.param("lr"), Some(""));
        assert_eq!(u.aor(), "sip:alice@example.com:5070");
        let aor = SipUri::parse("sips:Alice:secret@EXAMPLE.com:65535")
            .unwrap()
            .aor();
        // The user's letters folded too (one AOR whatever the spelling, as for the security core).
        assert_eq!(aor, "sip:alice@example.com:65535");
        assert_eq!(aor.capacity(), aor.len(), "sized for the longest port");
        assert_eq!(
            SipUri::parse("sip:Example.COM").unwrap().aor(),
            "sip:example.com"
        );
        // Into a buffer that held a longer AOR, and a shorter one: only the new one is left.
        let mut buf = String::new();
        for s in [
            "sip:a.long.user.name@Example.COM:5070",
            "sip:b@h",
            "sips:C@H:1",
        ] {
            let u = SipUri::parse(s).unwrap();
            u.write_aor(&mut buf);
            assert_eq!(buf, u.aor());
        }
        let v6 = SipUri::parse("sips:[::1]:5061").unwrap();
        assert_eq!(v6.ip(), Some("::1".parse().unwrap()));
        assert_eq!(v6.transport(), Some(Transport::Tls));
        assert_eq!(
            v6.socket_addr(Transport::Tls),
            Some("[::1]:5061".parse().unwrap())
        );
        assert!(SipUri::parse("tel:+123").is_none());
        assert!(SipUri::parse("sip:a@").is_none());
        assert!(SipUri::parse("sip:a@h:99999").is_none());
    }

    #[test]
    fn via_parts() {
        let v =
            Via::parse("SIP / 2.0 / TCP 10.0.0.1:5062;branch=z9hG4bK1;rport=4000;received=1.2.3.4")
                .unwrap();
        assert_eq!(v.transport(), Some(Transport::Tcp));
        assert_eq!(v.host, "10.0.0.1");
        assert_eq!(v.branch(), Some("z9hG4bK1"));
        assert_eq!(v.response_addr(), Some("1.2.3.4:4000".parse().unwrap()));
        let v = Via::parse("SIP/2.0/UDP host.example").unwrap();
        assert_eq!(v.port, None);
        assert_eq!(v.response_addr(), None);
        assert!(Via::parse("SIP/3.0/UDP h").is_none());
        assert!(Via::parse("garbage").is_none());
    }

    #[test]
    fn decimal() {
        for n in [0u64, 7, 10, 99, 100, 3600, 65535, u64::MAX] {
            let mut s = String::from("x");
            push_decimal(&mut s, n);
            assert_eq!(s, format!("x{n}"));
        }
    }

    #[test]
    fn ip_text_is_display() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "255.255.255.255",
            "192.0.2.9",
            "::1",
            "2001:db8::7:0:1",
            "::ffff:192.0.2.1",
        ] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            let mut s = String::from("x");
            push_ip(&mut s, ip);
            assert_eq!(s, format!("x{ip}"));
        }
    }

    #[test]
    fn list_split_matches_the_byte_scan() {
        // The scanner before memchr, kept as the reference.
        fn reference(v: &str) -> Vec<&str> {
            let (mut out, mut start) = (Vec::new(), 0);
            let (mut quoted, mut angle, mut escape) = (false, false, false);
            for (i, c) in v.char_indices() {
                if escape {
                    escape = false;
                    continue;
                }
                match c {
                    '\\' if quoted => escape = true,
                    '"' => quoted = !quoted,
                    '<' if !quoted => angle = true,
                    '>' if !quoted => angle = false,
                    ',' if !quoted && !angle => {
                        out.push(v[start..i].trim());
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            out.push(v[start..].trim());
            out.retain(|p| !p.is_empty());
            out
        }
        for v in [
            "a, b",
            "<sip:a,b>, \"x,<y\" <sip:c>;p=\"q,>\", d",
            "\"esc\\\",still\", e",
            "\"unterminated, f",
            "<unclosed, g",
            "\"a\\",
            "x\\, y",
            "<a\"b>,c\">, d",
            "é,ü , <é,>",
            ",,,",
        ] {
            assert_eq!(split_list(v), reference(v), "{v}");
        }
    }

    #[test]
    fn list_split() {
        assert_eq!(
            list_elements(" , a,,b ,").collect::<Vec<_>>(),
            vec!["a", "b"]
        );
        assert_eq!(list_elements("").next(), None);
        assert_eq!(
            split_list("\"a\\\",b\" <sip:x>, é, <sip:y,z>"),
            vec!["\"a\\\",b\" <sip:x>", "é", "<sip:y,z>"]
        );
        assert_eq!(
            split_list("<sip:a;x=1,2>;q=1 , \"x,y\" <sip:b>,,"),
            vec!["<sip:a;x=1,2>;q=1", "\"x,y\" <sip:b>"]
        );
    }
}
