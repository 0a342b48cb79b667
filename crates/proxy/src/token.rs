//! Keyed identifiers: Via branches, To tags and flow tokens (RFC 5626 §5.2 style: the flow a
//! dialog or registration uses is written into our own Record-Route/Path/Via entries, protected by
//! an HMAC so that a client cannot name another client's connection).

use std::net::{IpAddr, SocketAddr};

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::hook::SaEndpoint;
use crate::types::{Flow, FlowId, Transport};

/// The RFC 3261 branch magic cookie followed by our own marker.
pub(crate) const BRANCH_PREFIX: &str = "z9hG4bKsgw";

/// Secret key material (from the caller's RNG). Never printed.
#[derive(Clone)]
pub struct Secret([u8; 32]);

impl Secret {
    /// Wrap 32 random bytes.
    pub fn new(bytes: [u8; 32]) -> Secret {
        Secret(bytes)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// The lower-case hex digits, by value: [`push_hex`], [`hex_u64`] and [`Unique::of`] write with it.
const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Lower-case hex of `bytes` appended to `out`, without `format!` or a `String` per call: it runs
/// for every branch, tag and flow token; the gateway's security stage writes its response tags with
/// it too. Kept by hand, two table lookups a byte straight into `out`: the inputs are a few bytes,
/// where `const_hex` through a 64-byte stack buffer (its encoder dispatches on the CPU's features
/// per call) measured no faster under callgrind (about 2 instructions more per REGISTER flow of
/// the proxy's `perf` example).
#[inline]
pub fn push_hex(bytes: &[u8], out: &mut String) {
    out.reserve(2 * bytes.len());
    for &b in bytes {
        out.push(char::from(HEX_DIGITS[usize::from(b >> 4)]));
        out.push(char::from(HEX_DIGITS[usize::from(b & 0x0f)]));
    }
}

/// A token part's bytes: exactly two digits a byte, so one token has one spelling.
fn decode_hex(s: &str) -> Option<Vec<u8>> {
    sagw_hex::decode(s).ok()
}

/// Lower-case hex of `n` without leading zeros (what `{:x}` writes) appended to `out`. A number
/// formatter, not byte hex: `const_hex` has no equivalent (it writes every byte, leading zeros
/// included), so this one stays.
fn hex_u64(n: u64, out: &mut String) {
    let digits = (64 - n.leading_zeros()).div_ceil(4).max(1);
    for i in (0..digits).rev() {
        // The mask keeps the index below 16.
        out.push(char::from(HEX_DIGITS[((n >> (4 * i)) & 0xf) as usize]));
    }
}

/// The number [`hex_u64`] wrote: hex digits only. `from_str_radix` alone also takes a leading
/// `+`, so one token would have two spellings.
fn parse_hex_u64(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

/// Eight bytes as 16 lower-case hex digits, held inline: what `Ids::unique` makes, and the To
/// tags the gateway's security stage draws. A transaction answered here keeps one as its To tag,
/// which as a String was an allocation per transaction.
// Word-aligned so that the UTF-8 check of `as_str` takes its two-words-at-a-time path; unaligned,
// it went a byte at a time (some 110 instructions, more than the allocation it saves).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(align(8))]
pub struct Unique([u8; 16]);

impl Unique {
    /// The hex of `bytes`. Kept by hand, two table lookups a byte: `sagw_hex::encode_to_slice`
    /// cost some 40 instructions more per call under callgrind (its CPU-feature dispatch and SIMD
    /// set-up, for eight bytes), once per transaction.
    pub fn of(bytes: [u8; 8]) -> Unique {
        let mut digits = [b'0'; 16];
        for ([hi, lo], b) in digits.as_chunks_mut::<2>().0.iter_mut().zip(bytes) {
            *hi = HEX_DIGITS[usize::from(b >> 4)];
            *lo = HEX_DIGITS[usize::from(b & 0x0f)];
        }
        Unique(digits)
    }

    /// The digits.
    pub fn as_str(&self) -> &str {
        // Hex digits only, always UTF-8.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// Where a flow token is written, each under a MAC of its own: one cannot stand for the other.
#[derive(Clone, Copy)]
enum TokenUse<'a> {
    /// Path and the pool's shared bindings: routes requests, whoever sends them from the servers.
    Route,
    /// Record-Route: routes the requests of one dialog, this Call-ID's.
    Dialog(&'a str),
    /// Our Via's `sgf`: routes responses back.
    Via,
}

/// Generates identifiers from a secret and a counter: unique, unpredictable without the secret,
/// and reproducible in tests.
pub(crate) struct Ids {
    /// HMAC-SHA256 already keyed with the secret: keying hashes two blocks (ipad, opad), half the
    /// cost of a MAC over a short input, so it is done once and the state cloned per MAC.
    keyed: Hmac<Sha256>,
    counter: u64,
}

impl std::fmt::Debug for Ids {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The keyed state is derived from the secret: never printed.
        f.debug_struct("Ids")
            .field("counter", &self.counter)
            .finish()
    }
}

impl Ids {
    pub(crate) fn new(secret: Secret) -> Ids {
        let keyed = <Hmac<Sha256> as KeyInit>::new_from_slice(&secret.0)
            .unwrap_or_else(|_| <Hmac<Sha256> as KeyInit>::new(&Default::default()));
        Ids { keyed, counter: 0 }
    }

    fn mac(&self) -> Hmac<Sha256> {
        self.keyed.clone()
    }

    /// 16 hex digits, fresh on every call.
    pub(crate) fn unique(&mut self) -> Unique {
        self.counter = self.counter.wrapping_add(1);
        let mut m = self.mac();
        m.update(b"unique");
        m.update(&self.counter.to_be_bytes());
        let out = m.finalize().into_bytes();
        // The MAC has 32 bytes: its first eight are always there.
        Unique::of(out.first_chunk::<8>().copied().unwrap_or_default())
    }

    /// A branch for a stateful client transaction: prefix, loop hash, unique part.
    pub(crate) fn branch(&mut self, loop_hash: &str) -> String {
        let unique = self.unique();
        let unique = unique.as_str();
        let mut s = String::with_capacity(BRANCH_PREFIX.len() + loop_hash.len() + 1 + unique.len());
        s.push_str(BRANCH_PREFIX);
        s.push_str(loop_hash);
        s.push('.');
        s.push_str(unique);
        s
    }

    /// A branch for a stateless forward: a function of the incoming branch so that a
    /// retransmission gets the same one (RFC 3261 §16.11).
    pub(crate) fn stateless_branch(&self, loop_hash: &str, incoming: &str) -> String {
        let mut m = self.mac();
        m.update(b"stateless");
        m.update(incoming.as_bytes());
        let out = m.finalize().into_bytes();
        let mut s = String::with_capacity(BRANCH_PREFIX.len() + loop_hash.len() + 17);
        s.push_str(BRANCH_PREFIX);
        s.push_str(loop_hash);
        s.push('.');
        push_hex(out.get(..8).unwrap_or(&[]), &mut s);
        s
    }

    /// The token naming `flow`, and the authenticated endpoint the token is issued for when there
    /// is one: `<t><id>x<addr hex>x<port>[z<identity hex>z<epid hex>].<mac>`, URI user-part safe.
    /// The endpoint is under the MAC, so a request that comes back through the token is signed for
    /// the endpoint the gateway wrote, never for one the request names (issue: edge mode, where
    /// the gateway has no bindings of its own to find the SA by).
    pub(crate) fn flow_token(&self, flow: &Flow, endpoint: Option<&SaEndpoint>) -> String {
        self.token_for(TokenUse::Route, flow, endpoint)
    }

    /// [`flow_token`](Self::flow_token) for a Record-Route, under a MAC over the dialog's Call-ID
    /// too. A Record-Route shows the token to the dialog's peer; bound to the dialog, it routes
    /// only that dialog's requests: alice, who once called bob, cannot send her MESSAGE straight
    /// to bob's connection, signed for him, past the servers, by the token in his 180.
    pub(crate) fn dialog_flow_token(
        &self,
        flow: &Flow,
        endpoint: Option<&SaEndpoint>,
        call_id: &str,
    ) -> String {
        self.token_for(TokenUse::Dialog(call_id), flow, endpoint)
    }

    /// [`flow_token`](Self::flow_token) for our Via's `sgf` (responses find their way back by
    /// it), under a MAC of its own: every recipient of a forwarded request sees it, and it must
    /// not route a request (only Record-Route shows a dialog's peer a Route token).
    pub(crate) fn via_flow_token(&self, flow: &Flow, endpoint: Option<&SaEndpoint>) -> String {
        self.token_for(TokenUse::Via, flow, endpoint)
    }

    fn token_for(&self, using: TokenUse<'_>, flow: &Flow, endpoint: Option<&SaEndpoint>) -> String {
        let extra = endpoint.map_or(0, |e| 2 + 2 * (e.identity.len() + e.epid.len()));
        let mut payload = String::with_capacity(48 + extra);
        push_flow(flow, &mut payload);
        if let Some(e) = endpoint {
            push_endpoint(e, &mut payload);
        }
        let mac = self.token_mac(using, &payload);
        payload.push('.');
        payload.push_str(&mac);
        payload
    }

    /// The `sgt` Via parameter of a request sent to a client over `flow` with our `branch` and
    /// `sgf` (the flow token its responses are routed back by): the SA endpoint it was sent to
    /// (`z<identity hex>z<epid hex>`, empty for a client without one) and a MAC over the branch,
    /// the request's method (a late 2xx is relayed only for an INVITE, read from its CSeq),
    /// the `sgf`, the flow and the endpoint. When the request's transaction is gone, a response
    /// that carries it is judged against the endpoint the request went to and must come over that
    /// flow, as one that matches the transaction is; nothing in the response itself (its To epid,
    /// say) can claim otherwise. The parameter cannot be moved to another Via or dropped from
    /// this one (a response from a client without a valid one is not relayed), nor the `sgf`
    /// beside it swapped for another flow's token (one seen in a Record-Route, say).
    pub(crate) fn target_token(
        &self,
        branch: &str,
        method: &str,
        sgf: &str,
        flow: &Flow,
        endpoint: Option<&SaEndpoint>,
    ) -> String {
        let mut token = String::with_capacity(
            21 + endpoint.map_or(0, |e| 2 + 2 * (e.identity.len() + e.epid.len())),
        );
        if let Some(e) = endpoint {
            push_endpoint(e, &mut token);
        }
        let mac = self.target_mac(branch, method, sgf, flow, &token);
        token.push('.');
        token.push_str(&mac);
        token
    }

    /// The endpoint a [`Ids::target_token`] names when it was made for `branch`, `sgf` and
    /// `flow`: `Some(None)` for a client without an SA, `None` when forged, moved or malformed.
    pub(crate) fn parse_target_token(
        &self,
        branch: &str,
        method: &str,
        sgf: &str,
        flow: &Flow,
        token: &str,
    ) -> Option<Option<SaEndpoint>> {
        let (payload, mac) = token.rsplit_once('.')?;
        if !constant_time_eq(&self.target_mac(branch, method, sgf, flow, payload), mac) {
            return None;
        }
        if payload.is_empty() {
            return Some(None);
        }
        let (_, endpoint) = payload.split_once(ENDPOINT_MARK)?;
        parse_endpoint(endpoint).map(Some)
    }

    fn target_mac(
        &self,
        branch: &str,
        method: &str,
        sgf: &str,
        flow: &Flow,
        endpoint: &str,
    ) -> String {
        let mut named = String::with_capacity(48);
        push_flow(flow, &mut named);
        let mut m = self.mac();
        m.update(b"target\0");
        m.update(branch.as_bytes());
        m.update(b"\0");
        m.update(method.as_bytes());
        m.update(b"\0");
        m.update(sgf.as_bytes());
        m.update(b"\0");
        m.update(named.as_bytes());
        m.update(b"\0");
        m.update(endpoint.as_bytes());
        let out = m.finalize().into_bytes();
        let mut s = String::with_capacity(20);
        push_hex(out.get(..10).unwrap_or(&[]), &mut s);
        s
    }

    fn token_mac(&self, using: TokenUse<'_>, payload: &str) -> String {
        let mut m = self.mac();
        match using {
            TokenUse::Route => m.update(b"flow"),
            TokenUse::Via => m.update(b"via-flow"),
            TokenUse::Dialog(call_id) => {
                m.update(b"dialog-flow");
                m.update(call_id.as_bytes());
                m.update(b"\0");
            }
        }
        m.update(payload.as_bytes());
        let out = m.finalize().into_bytes();
        let mut s = String::with_capacity(20);
        push_hex(out.get(..10).unwrap_or(&[]), &mut s);
        s
    }

    /// Decode a token made by [`Ids::flow_token`]; `None` when forged or malformed.
    pub(crate) fn parse_flow_token(&self, token: &str) -> Option<(Flow, Option<SaEndpoint>)> {
        self.parse_token(TokenUse::Route, token)
    }

    /// Decode a token made by [`Ids::dialog_flow_token`] for the dialog of `call_id`; `None` when
    /// forged, malformed or made for another dialog.
    pub(crate) fn parse_dialog_flow_token(
        &self,
        token: &str,
        call_id: &str,
    ) -> Option<(Flow, Option<SaEndpoint>)> {
        self.parse_token(TokenUse::Dialog(call_id), token)
    }

    /// Decode a token made by [`Ids::via_flow_token`]; `None` when forged or malformed.
    pub(crate) fn parse_via_flow_token(&self, token: &str) -> Option<(Flow, Option<SaEndpoint>)> {
        self.parse_token(TokenUse::Via, token)
    }

    fn parse_token(&self, using: TokenUse<'_>, token: &str) -> Option<(Flow, Option<SaEndpoint>)> {
        let (payload, mac) = token.rsplit_once('.')?;
        if !constant_time_eq(&self.token_mac(using, payload), mac) {
            return None;
        }
        let (flow_part, endpoint) = match payload.split_once(ENDPOINT_MARK) {
            None => (payload, None),
            Some((flow_part, endpoint)) => (flow_part, Some(parse_endpoint(endpoint)?)),
        };
        Some((decode_flow_token(flow_part)?, endpoint))
    }
}

/// Constant-time comparison is not needed for correctness but costs nothing here.
fn constant_time_eq(expect: &str, got: &str) -> bool {
    expect.len() == got.len()
        && expect
            .bytes()
            .zip(got.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// `<t><id>x<addr hex>x<port>`: the flow part of a token.
fn push_flow(flow: &Flow, out: &mut String) {
    out.push(match flow.transport {
        Transport::Udp => 'u',
        Transport::Tcp => 't',
        Transport::Tls => 's',
    });
    hex_u64(flow.id.0, out);
    out.push('x');
    match flow.remote.ip() {
        IpAddr::V4(a) => push_hex(&a.octets(), out),
        IpAddr::V6(a) => push_hex(&a.octets(), out),
    }
    out.push('x');
    hex_u64(u64::from(flow.remote.port()), out);
}

/// `z<identity hex>z<epid hex>`: the endpoint part of a token.
fn push_endpoint(e: &SaEndpoint, out: &mut String) {
    out.push(ENDPOINT_MARK);
    push_hex(e.identity.as_bytes(), out);
    out.push(ENDPOINT_MARK);
    push_hex(e.epid.as_bytes(), out);
}

/// The endpoint after the first [`ENDPOINT_MARK`] (`<identity hex>z<epid hex>`).
fn parse_endpoint(s: &str) -> Option<SaEndpoint> {
    let (identity, epid) = s.split_once(ENDPOINT_MARK)?;
    Some(SaEndpoint {
        identity: String::from_utf8(decode_hex(identity)?).ok()?,
        epid: String::from_utf8(decode_hex(epid)?).ok()?,
    })
}

/// Separates the endpoint from the flow in a token: not a hex digit, not a transport letter.
const ENDPOINT_MARK: char = 'z';

/// The flow a token made by [`Ids::flow_token`] claims, without checking its MAC: only for
/// deciding that a token can be ignored, never for trusting it. `None` when malformed.
pub(crate) fn flow_token_claim(token: &str) -> Option<Flow> {
    let payload = token.rsplit_once('.')?.0;
    decode_flow_token(payload.split(ENDPOINT_MARK).next()?)
}

/// The flow in a token's payload (`<t><id>x<addr hex>x<port>`).
fn decode_flow_token(payload: &str) -> Option<Flow> {
    let mut chars = payload.chars();
    let transport = match chars.next()? {
        'u' => Transport::Udp,
        't' => Transport::Tcp,
        's' => Transport::Tls,
        _ => return None,
    };
    let rest = chars.as_str();
    let mut parts = rest.split('x');
    let id = parse_hex_u64(parts.next()?)?;
    let addr = parts.next()?;
    let port = u16::try_from(parse_hex_u64(parts.next()?)?).ok()?;
    if parts.next().is_some() {
        return None;
    }
    let bytes = decode_hex(addr)?;
    let ip = match bytes.len() {
        4 => IpAddr::from(<[u8; 4]>::try_from(bytes.as_slice()).ok()?),
        16 => IpAddr::from(<[u8; 16]>::try_from(bytes.as_slice()).ok()?),
        _ => return None,
    };
    Some(Flow {
        id: FlowId(id),
        transport,
        remote: SocketAddr::new(ip, port),
    })
}

/// RFC 3261 §16.6 step 8 loop-detection hash: the fields that, unchanged, mean the request came
/// back to us in a loop rather than a spiral.
pub(crate) fn loop_hash(msg: &sagw_sip::Message) -> String {
    let mut h = Sha256::new();
    for part in [
        msg.request_uri().unwrap_or(""),
        msg.from().and_then(|f| f.tag()).unwrap_or(""),
        msg.to().and_then(|t| t.tag()).unwrap_or(""),
        msg.call_id().unwrap_or(""),
        msg.cseq().map(|c| c.number).unwrap_or(""),
        msg.header("Proxy-Require").unwrap_or(""),
        msg.header("Route").unwrap_or(""),
    ] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    let out = h.finalize();
    let mut s = String::with_capacity(12);
    push_hex(out.get(..6).unwrap_or(&[]), &mut s);
    s
}

/// The loop-hash part of one of our branches.
pub(crate) fn branch_loop_hash(branch: &str) -> Option<&str> {
    branch.strip_prefix(BRANCH_PREFIX)?.split('.').next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_matches_format() {
        for n in [
            0u64,
            1,
            0xf,
            0x10,
            0xabc,
            0x1234,
            u64::from(u16::MAX),
            u64::MAX,
            1 << 40,
        ] {
            let mut s = String::new();
            hex_u64(n, &mut s);
            assert_eq!(s, format!("{n:x}"));
        }
        let mut s = String::new();
        push_hex(&[0, 0x0f, 0xa5, 0xff], &mut s);
        assert_eq!(s, "000fa5ff");
        // Appends, and past the 32-byte stack chunk too (identities and epids are any length).
        let bytes: Vec<u8> = (0..=200u8).map(|b| b.wrapping_mul(37)).collect();
        for n in [0, 1, 31, 32, 33, 64, 65, 201] {
            let mut s = String::from("x");
            push_hex(&bytes[..n], &mut s);
            let reference: String = bytes[..n].iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(s, format!("x{reference}"));
        }
    }

    #[test]
    fn hex_in_tokens_is_digits_only() {
        // `u8::from_str_radix` took "+a" for 10; hex decoding refuses a sign.
        let flow = decode_flow_token("t1x0a010203x13c4").expect("plain hex");
        assert_eq!(flow.remote, "10.1.2.3:5060".parse().unwrap());
        assert_eq!(decode_flow_token("t1x+a010203x13c4"), None);
        assert_eq!(flow_token_claim("t1x+a010203x13c4.0"), None);
        assert_eq!(decode_flow_token("t1x0A010203x13c4"), Some(flow));
        // The flow id and the port too: one spelling per token.
        assert_eq!(decode_flow_token("t+1x0a010203x13c4"), None);
        assert_eq!(decode_flow_token("t1x0a010203x+13c4"), None);
        assert_eq!(decode_flow_token("tx0a010203x13c4"), None);
        assert_eq!(decode_flow_token("t1x0a010203x10000"), None);
        assert!(parse_endpoint("61z62").is_some());
        assert_eq!(parse_endpoint("+az62"), None);
        // A `0x` prefix is not part of a token.
        assert_eq!(parse_endpoint("0x61z62"), None);
        assert_eq!(parse_endpoint("61z0X62"), None);
        assert_eq!(parse_endpoint("61z+b"), None);
        // Odd lengths and non-digits, as before.
        assert_eq!(decode_flow_token("t1x0a01020x13c4"), None);
        assert_eq!(decode_flow_token("t1x0a0102g3x13c4"), None);
        assert_eq!(parse_endpoint("6z62"), None);
    }

    #[test]
    fn keyed_state_is_the_plain_hmac() {
        let ids = Ids::new(Secret::new([7; 32]));
        let mut fresh = <Hmac<Sha256> as KeyInit>::new_from_slice(&[7; 32]).unwrap();
        fresh.update(b"x");
        let mut cached = ids.mac();
        cached.update(b"x");
        assert_eq!(
            fresh.finalize().into_bytes(),
            cached.finalize().into_bytes()
        );
    }

    /// A Record-Route token routes only its dialog's requests, and is no Path (Route) token,
    /// nor a Route token one.
    #[test]
    fn dialog_tokens_are_bound_to_their_call_id() {
        let ids = Ids::new(Secret::new([7; 32]));
        let flow = Flow {
            id: FlowId(9),
            transport: Transport::Tcp,
            remote: "10.1.2.3:5060".parse().unwrap(),
        };
        let bob = SaEndpoint {
            identity: "sip:bob@example.com".into(),
            epid: "eb".into(),
        };
        let t = ids.dialog_flow_token(&flow, Some(&bob), "call-1");
        assert_eq!(
            ids.parse_dialog_flow_token(&t, "call-1"),
            Some((flow, Some(bob.clone())))
        );
        assert_eq!(ids.parse_dialog_flow_token(&t, "call-2"), None);
        assert_eq!(ids.parse_dialog_flow_token(&t, ""), None);
        assert_eq!(ids.parse_flow_token(&t), None);
        let path = ids.flow_token(&flow, Some(&bob));
        assert_eq!(ids.parse_dialog_flow_token(&path, "call-1"), None);
    }

    #[test]
    fn flow_tokens_round_trip_and_reject_forgery() {
        let ids = Ids::new(Secret::new([7; 32]));
        for remote in ["10.1.2.3:5060", "[2001:db8::1]:40000"] {
            let flow = Flow {
                id: FlowId(0x1234),
                transport: Transport::Tls,
                remote: remote.parse().unwrap(),
            };
            let t = ids.flow_token(&flow, None);
            assert!(t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.'));
            assert_eq!(ids.parse_flow_token(&t), Some((flow, None)));
            // A Via token is not a Route token, nor the other way round.
            let v = ids.via_flow_token(&flow, None);
            assert_eq!(ids.parse_via_flow_token(&v), Some((flow, None)));
            assert_eq!(ids.parse_flow_token(&v), None);
            assert_eq!(ids.parse_via_flow_token(&t), None);
            let mut forged = t.clone().into_bytes();
            forged[1] = if forged[1] == b'2' { b'3' } else { b'2' };
            assert_eq!(
                ids.parse_flow_token(std::str::from_utf8(&forged).unwrap()),
                None
            );
            let other = Ids::new(Secret::new([8; 32]));
            assert_eq!(other.parse_flow_token(&t), None);
        }
        assert_eq!(ids.parse_flow_token("garbage"), None);
        assert_eq!(ids.parse_flow_token(""), None);
    }

    #[test]
    fn endpoint_tokens_round_trip_and_cannot_be_redirected() {
        let ids = Ids::new(Secret::new([7; 32]));
        let flow = Flow {
            id: FlowId(7),
            transport: Transport::Tcp,
            remote: "10.1.2.3:40000".parse().unwrap(),
        };
        let alice = SaEndpoint {
            identity: "sip:alice@example.com".into(),
            epid: "01010101".into(),
        };
        let t = ids.flow_token(&flow, Some(&alice));
        assert!(t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.'));
        assert_eq!(ids.parse_flow_token(&t), Some((flow, Some(alice.clone()))));
        // The flow is still readable without the key (to skip our own inbound flow).
        assert_eq!(flow_token_claim(&t), Some(flow));
        // Another endpoint spliced into a valid token, or the endpoint dropped, breaks the MAC.
        let bob = ids.flow_token(
            &flow,
            Some(&SaEndpoint {
                identity: "sip:bob@example.com".into(),
                epid: "01010101".into(),
            }),
        );
        let (t_payload, t_mac) = t.rsplit_once('.').unwrap();
        let (b_payload, _) = bob.rsplit_once('.').unwrap();
        assert_eq!(ids.parse_flow_token(&format!("{b_payload}.{t_mac}")), None);
        let bare = t_payload.split(ENDPOINT_MARK).next().unwrap();
        assert_eq!(ids.parse_flow_token(&format!("{bare}.{t_mac}")), None);
        // Malformed endpoint parts under a valid MAC are refused, not trusted half-way.
        for payload in [
            format!("{bare}z6g"),
            format!("{bare}z61"),
            format!("{bare}z61z6"),
            format!("{bare}zff"),
        ] {
            let forged = format!("{payload}.{}", ids.token_mac(TokenUse::Route, &payload));
            assert_eq!(ids.parse_flow_token(&forged), None, "{payload}");
        }
    }

    #[test]
    fn target_tokens_name_the_endpoint_for_one_branch_and_flow_only() {
        let ids = Ids::new(Secret::new([7; 32]));
        let flow = Flow {
            id: FlowId(9),
            transport: Transport::Tcp,
            remote: "10.1.2.3:40000".parse().unwrap(),
        };
        let other_flow = Flow {
            id: FlowId(10),
            ..flow
        };
        let alice = SaEndpoint {
            identity: "sip:alice@example.com".into(),
            epid: "01010101".into(),
        };
        let t = ids.target_token("z9hG4bKsgwa.1", "INVITE", "up", &flow, Some(&alice));
        assert!(t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.'));
        assert_eq!(
            ids.parse_target_token("z9hG4bKsgwa.1", "INVITE", "up", &flow, &t),
            Some(Some(alice.clone()))
        );
        let digest = ids.target_token("z9hG4bKsgwa.1", "INVITE", "up", &flow, None);
        assert_eq!(
            ids.parse_target_token("z9hG4bKsgwa.1", "INVITE", "up", &flow, &digest),
            Some(None)
        );
        // Moved to another branch, answered over another flow, the endpoint dropped or another
        // key's token: refused.
        assert_eq!(
            ids.parse_target_token("z9hG4bKsgwa.2", "INVITE", "up", &flow, &t),
            None
        );
        assert_eq!(
            ids.parse_target_token("z9hG4bKsgwa.1", "INVITE", "up", &other_flow, &t),
            None
        );
        let (_, mac) = t.rsplit_once('.').unwrap();
        assert_eq!(
            ids.parse_target_token("z9hG4bKsgwa.1", "INVITE", "up", &flow, &format!(".{mac}")),
            None
        );
        let other = Ids::new(Secret::new([8; 32]));
        assert_eq!(
            other.parse_target_token("z9hG4bKsgwa.1", "INVITE", "up", &flow, &t),
            None
        );
        // Nor for another method (a MESSAGE's branch with INVITE written in the CSeq).
        assert_eq!(
            ids.parse_target_token("z9hG4bKsgwa.1", "MESSAGE", "up", &flow, &t),
            None
        );
        // Nor with the flow token beside it swapped.
        assert_eq!(
            ids.parse_target_token("z9hG4bKsgwa.1", "INVITE", "other", &flow, &t),
            None
        );
        // Nor is it a flow token, or a flow token one.
        assert_eq!(ids.parse_flow_token(&t), None);
        let ft = ids.flow_token(&flow, Some(&alice));
        assert_eq!(
            ids.parse_target_token("z9hG4bKsgwa.1", "INVITE", "up", &flow, &ft),
            None
        );
        for junk in ["", ".", "garbage", "z.z", "zz.00"] {
            assert_eq!(
                ids.parse_target_token("b", "INVITE", "up", &flow, junk),
                None,
                "{junk}"
            );
        }
    }

    #[test]
    fn branches_are_unique_and_carry_the_loop_hash() {
        let mut ids = Ids::new(Secret::new([1; 32]));
        let a = ids.branch("abc");
        let b = ids.branch("abc");
        assert_ne!(a, b);
        assert!(a.starts_with("z9hG4bK"));
        assert_eq!(branch_loop_hash(&a), Some("abc"));
        assert_eq!(
            ids.stateless_branch("h", "z9hG4bK1"),
            ids.stateless_branch("h", "z9hG4bK1")
        );
        assert_ne!(
            ids.stateless_branch("h", "z9hG4bK1"),
            ids.stateless_branch("h", "z9hG4bK2")
        );
    }

    #[test]
    fn unique_is_the_macs_first_eight_bytes_in_hex() {
        let mut ids = Ids::new(Secret::new([1; 32]));
        let mut mac = ids.mac();
        mac.update(b"unique");
        mac.update(&1u64.to_be_bytes());
        let mut hex = String::new();
        push_hex(&mac.finalize().into_bytes()[..8], &mut hex);
        let first = ids.unique();
        assert_eq!(first.as_str(), hex);
        assert_ne!(ids.unique(), first);
    }
}
