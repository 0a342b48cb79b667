//! The MS-SIPAE signature buffer ("message breakdown", notes §1): selected header values, each in
//! `<` `>`, concatenated. Both signing and verifying build it from the message as it is on the wire,
//! with the case and spelling it has there.

use std::cell::RefCell;

use sagw_sip::{CSeq, CoreHeaders, Message, NameAddr, TagAndEpid, parse_name_addr_tagged};

/// What the signature buffer and the security core's identity checks read from one message,
/// found once per message: one pass over the headers, From and To each parsed once with their
/// `tag` and `epid` read in the same pass, shared by the epid check, the buffer and the From/To
/// identity checks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MessageFacts<'m> {
    pub headers: CoreHeaders<'m>,
    pub cseq: Option<CSeq<'m>>,
    /// From as a name-addr; `None` when absent or unreadable (as [`Message::from`]).
    pub from: Option<NameAddr<'m>>,
    /// To, likewise.
    pub to: Option<NameAddr<'m>>,
    /// `tag` and `epid` of From and of To (the first of each name, as [`NameAddr::param`]
    /// finds it).
    pub from_params: TagAndEpid<'m>,
    pub to_params: TagAndEpid<'m>,
}

/// Which side of the message is the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// A request the client sent: it is in From.
    Request,
    /// A response the client sent: it is in To.
    Response,
}

impl<'m> MessageFacts<'m> {
    /// Reads `msg` (a request or a response, from the client or to it).
    pub fn of(msg: &'m Message) -> Self {
        let headers = msg.core_headers();
        let (from, from_params) = tagged(headers.from);
        let (to, to_params) = tagged(headers.to);
        MessageFacts {
            cseq: headers.cseq.and_then(CSeq::parse),
            from,
            to,
            from_params,
            to_params,
            headers,
        }
    }

    /// The client's `epid`: in From for a request it sent, in To for a response.
    pub fn epid(&self, dir: Direction) -> Option<&'m str> {
        match dir {
            Direction::Request => self.from_params.epid,
            Direction::Response => self.to_params.epid,
        }
    }
}

/// A From or To value as a name-addr with its tag and epid; nothing when absent or unreadable.
fn tagged(value: Option<&str>) -> (Option<NameAddr<'_>>, TagAndEpid<'_>) {
    match value.map(parse_name_addr_tagged) {
        Some(Ok((na, params))) => (Some(na), params),
        _ => (None, TagAndEpid::default()),
    }
}

/// What the buffer takes from the authentication header rather than from the message.
#[derive(Debug, Clone, Copy)]
pub struct BufferParams<'a> {
    /// Scheme token as sent: `NTLM`, `Kerberos`.
    pub scheme: &'a str,
    /// `crand` or `srand`, without quotes.
    pub rand: &'a str,
    /// `cnum` or `snum` as decimal text.
    pub num: &'a str,
    /// `realm` of the header, without quotes.
    pub realm: &'a str,
    /// `targetname` of the header exactly as sent (an FQDN for NTLM, `sip/<fqdn>` for Kerberos).
    pub targetname: &'a str,
    /// Protocol version of the SA: 2 selects the 12-element layout, 3 and 4 the 15-element one.
    pub version: u8,
}

/// The signature buffer of one message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SignatureBuffer(Vec<u8>);

impl SignatureBuffer {
    /// Builds the buffer of `msg`. Absent fields are `<>`; nothing here can fail: a message without
    /// Call-ID or CSeq simply signs with empty slots, and the SIP layer is what rejects such messages.
    pub fn build(msg: &Message, params: &BufferParams<'_>) -> Self {
        let mut out = Vec::with_capacity(256);
        Self::write(msg, params, &mut out);
        SignatureBuffer(out)
    }

    /// Same as [`SignatureBuffer::build`] into a reusable vector (cleared first).
    pub fn write(msg: &Message, p: &BufferParams<'_>, out: &mut Vec<u8>) {
        write_facts(msg, &MessageFacts::of(msg), p, out);
    }

    /// The bytes to MAC (or to verify a MAC over): `<...>` elements, no separators.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The bytes, without a copy.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

/// The buffer of `msg` from what was already read of it ([`MessageFacts::of`]).
pub(crate) fn write_facts(
    msg: &Message,
    facts: &MessageFacts<'_>,
    p: &BufferParams<'_>,
    out: &mut Vec<u8>,
) {
    out.clear();
    let mut slot = |v: &str| {
        out.push(b'<');
        out.extend_from_slice(v.as_bytes());
        out.push(b'>');
    };
    slot(p.scheme);
    slot(p.rand);
    slot(p.num);
    slot(p.realm);
    slot(p.targetname);
    let h = &facts.headers;
    slot(h.call_id.unwrap_or(""));
    let cseq = facts.cseq.as_ref();
    slot(cseq.map_or("", |c| c.number));
    // For requests pidgin-sipe takes the request-line method; it equals CSeq's in valid messages.
    let method = msg
        .method()
        .or_else(|| cseq.map(|c| c.method))
        .unwrap_or("");
    slot(method);
    // A From or To the SIP layer cannot read gives empty slots (the signature then simply fails
    // to verify, which is the right outcome for a mangled header).
    slot(facts.from.map_or("", |na| na.uri));
    slot(facts.from_params.tag.unwrap_or(""));
    let (to_uri, to_tag) = (
        facts.to.map_or("", |na| na.uri),
        facts.to_params.tag.unwrap_or(""),
    );
    if p.version >= 3 {
        slot(to_uri);
        slot(to_tag);
        let identity = h.p_asserted_identity.or(h.p_preferred_identity);
        let (sip, tel) = asserted_identity_uris(identity);
        slot(sip);
        slot(tel);
    } else {
        slot(to_tag);
    }
    slot(h.expires.unwrap_or(""));
    if let Some(code) = msg.status_code() {
        slot(itoa::Buffer::new().format(code));
    }
}

/// Per-thread working space of the signing path, reused by every sign and verification on the
/// thread instead of fresh allocations per message.
#[derive(Default)]
pub(crate) struct Scratch {
    /// The signature buffer.
    pub buffer: Vec<u8>,
    /// The `Authentication-Info` value being written.
    pub text: String,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch {
        buffer: Vec::with_capacity(512),
        text: String::with_capacity(512),
    });
}

/// Runs `f` with this thread's [`Scratch`] (a fresh one if it is already in use).
pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut s) => {
            let r = f(&mut s);
            // A rare huge message must not pin its size on the thread for good.
            if s.buffer.capacity() > 16 * 1024 || s.text.capacity() > 16 * 1024 {
                *s = Scratch::default();
            }
            r
        }
        Err(_) => f(&mut Scratch::default()),
    })
}

/// First `sip:` and first `tel:` URI of a P-Asserted-Identity value (notes §1.2 slots 13/14): a whole
/// value starting with `tel:` fills the tel slot; otherwise each comma-separated part contributes the URI
/// inside its angle brackets. The scheme test ignores case; the value keeps it.
fn asserted_identity_uris(value: Option<&str>) -> (&str, &str) {
    let Some(value) = value else {
        return ("", "");
    };
    let value = value.trim();
    if starts_with_ignore_case(value, "tel:") {
        return ("", value);
    }
    let (mut sip, mut tel) = ("", "");
    for part in value.split(',') {
        let Some(open) = part.find('<') else {
            continue;
        };
        let rest = &part[open + 1..];
        let Some(close) = rest.find('>') else {
            continue;
        };
        let uri = &rest[..close];
        if sip.is_empty() && starts_with_ignore_case(uri, "sip:") {
            sip = uri;
        } else if tel.is_empty() && starts_with_ignore_case(uri, "tel:") {
            tel = uri;
        }
    }
    (sip, tel)
}

fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params<'a>(
        scheme: &'a str,
        rand: &'a str,
        num: &'a str,
        target: &'a str,
        version: u8,
    ) -> BufferParams<'a> {
        BufferParams {
            scheme,
            rand,
            num,
            realm: "SIP Communications Service",
            targetname: target,
            version,
        }
    }

    fn build(raw: &str, p: &BufferParams<'_>) -> String {
        let msg = Message::parse(raw.as_bytes()).expect("test message parses");
        String::from_utf8(SignatureBuffer::build(&msg, p).into_bytes()).expect("utf8")
    }

    const OC_REQUEST: &str =
        include_str!("../../../../shared/reference/flows/oc2007r2-register-request.sip");
    const OC_200: &str =
        include_str!("../../../../shared/reference/flows/oc2007r2-register-200ok.sip");

    #[test]
    fn vector_e_recorded_register_request() {
        let p = params("NTLM", "13317733", "1", "cosmo-ocs-r2.cosmo.local", 4);
        assert_eq!(
            build(OC_REQUEST, &p),
            "<NTLM><13317733><1><SIP Communications Service><cosmo-ocs-r2.cosmo.local><4037df9284354df39065195bd57a4b14><3><REGISTER><sip:user@cosmo.local><3e49177a52><sip:user@cosmo.local><><><><>"
        );
    }

    #[test]
    fn vector_e_recorded_200_ok() {
        let p = params("NTLM", "9616454F", "1", "cosmo-ocs-r2.cosmo.local", 4);
        assert_eq!(
            build(OC_200, &p),
            "<NTLM><9616454F><1><SIP Communications Service><cosmo-ocs-r2.cosmo.local><4037df9284354df39065195bd57a4b14><3><REGISTER><sip:user@cosmo.local><3e49177a52><sip:user@cosmo.local><5E61CCD925D17E043D9A74835A88F664><><><7200><200>"
        );
    }

    const LYNC_180: &str = "SIP/2.0 180 Ringing\r\n\
Authentication-Info: NTLM rspauth=\"010000003EA8D688BA51D5CD64000000\", srand=\"1B6D47A1\", snum=\"11\", opaque=\"357E6F72\", qop=\"auth\", targetname=\"LOC-COMPANYT-FE03.COMPANY.COM\", realm=\"SIP Communications Service\"\r\n\
FROM: \"Sender\"<sip:sender@company.com>;tag=2420628112;epid=54392f1bbf01\r\n\
TO: \"recipient\"<sip:recipient@company.com>;tag=7aee15546a;epid=3102EB8BD1\r\n\
CSEQ: 1 INVITE\r\n\
CALL-ID: 41CEg82ECa0AC8i3DD7mE673t9CF4b19DAxF780x\r\n\
CONTENT-LENGTH: 0\r\n\
P-ASSERTED-IDENTITY: \"recipient\"<SIP:recipient@company.com>\r\n\r\n";

    const LYNC_180_BUFFER: &str = "<NTLM><1B6D47A1><11><SIP Communications Service><LOC-COMPANYT-FE03.COMPANY.COM><41CEg82ECa0AC8i3DD7mE673t9CF4b19DAxF780x><1><INVITE><sip:sender@company.com><2420628112><sip:recipient@company.com><7aee15546a><SIP:recipient@company.com><><><180>";

    #[test]
    fn vector_e_lync_180_with_upper_case_header_names() {
        let p = params("NTLM", "1B6D47A1", "11", "LOC-COMPANYT-FE03.COMPANY.COM", 4);
        assert_eq!(build(LYNC_180, &p), LYNC_180_BUFFER);
    }

    #[test]
    fn vector_e_unbracketed_from_and_to() {
        let raw = LYNC_180
            .replace(
                "FROM: \"Sender\"<sip:sender@company.com>;tag=2420628112;epid=54392f1bbf01",
                "FROM: sip:sender@company.com;tag=2420628112;epid=54392f1bbf01",
            )
            .replace(
                "TO: \"recipient\"<sip:recipient@company.com>;tag=7aee15546a;epid=3102EB8BD1",
                "TO: sip:recipient@company.com;tag=7aee15546a;epid=3102EB8BD1",
            );
        let p = params("NTLM", "1B6D47A1", "11", "LOC-COMPANYT-FE03.COMPANY.COM", 4);
        assert_eq!(build(&raw, &p), LYNC_180_BUFFER);
    }

    #[test]
    fn vector_b_version_2_layout() {
        let raw = "SIP/2.0 200 OK\r\n\
ms-keep-alive: UAS; tcp=no; hop-hop=yes; end-end=no; timeout=300\r\n\
Authentication-Info: NTLM rspauth=\"0100000000000000BF2E52667DDF6DED\", srand=\"0878F41B\", snum=\"1\", opaque=\"4452DFB0\", qop=\"auth\", targetname=\"ocs1.ocs.provo.novell.com\", realm=\"SIP Communications Service\"\r\n\
From: \"Gabriel Burt\"<sip:gabriel@ocs.provo.novell.com>;tag=2947328781;epid=1234567890\r\n\
To: <sip:gabriel@ocs.provo.novell.com>;tag=B816D65C2300A32CFA6D371F2AF537FD\r\n\
Call-ID: 8592g5DCBa1694i5887m0D0Bt2247b3F38xAE9Fx\r\n\
CSeq: 3 REGISTER\r\n\
Contact: <sip:164.99.195.20:10409;transport=tls;ms-received-cid=1E00>;expires=900\r\n\
Expires: 900\r\n\
Content-Length: 0\r\n\r\n";
        let p = params("NTLM", "0878F41B", "1", "ocs1.ocs.provo.novell.com", 2);
        assert_eq!(
            build(raw, &p),
            "<NTLM><0878F41B><1><SIP Communications Service><ocs1.ocs.provo.novell.com><8592g5DCBa1694i5887m0D0Bt2247b3F38xAE9Fx><3><REGISTER><sip:gabriel@ocs.provo.novell.com><2947328781><B816D65C2300A32CFA6D371F2AF537FD><900><200>"
        );
    }

    #[test]
    fn pai_parsing_cases_from_pidgin_sipe() {
        assert_eq!(
            asserted_identity_uris(Some("\"Cullen Jennings\" <sip:fluffy@cisco.com>")),
            ("sip:fluffy@cisco.com", "")
        );
        assert_eq!(
            asserted_identity_uris(Some("tel:+14085264000")),
            ("", "tel:+14085264000")
        );
        assert_eq!(
            asserted_identity_uris(Some(
                "\"Lunch, Lucas\" <sip:llucas@cisco.com>,<tel:+420123456;ext=88463>"
            )),
            ("sip:llucas@cisco.com", "tel:+420123456;ext=88463")
        );
        assert_eq!(asserted_identity_uris(None), ("", ""));
        assert_eq!(asserted_identity_uris(Some("<SIP:x@y>")), ("SIP:x@y", ""));
    }

    #[test]
    fn ppi_stands_in_for_a_missing_pai() {
        let raw = "MESSAGE sip:b@example.com SIP/2.0\r\nFrom: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>\r\nCall-ID: c1\r\nCSeq: 7 MESSAGE\r\nP-Preferred-Identity: <sip:a@example.com>, <tel:+15551234>\r\nContent-Length: 0\r\n\r\n";
        let p = params("NTLM", "0000ABCD", "9", "gw.example.com", 4);
        assert_eq!(
            build(raw, &p),
            "<NTLM><0000ABCD><9><SIP Communications Service><gw.example.com><c1><7><MESSAGE><sip:a@example.com><1><sip:b@example.com><><sip:a@example.com><tel:+15551234><>"
        );
    }

    #[test]
    fn request_has_no_trailing_code_slot_and_uses_request_line_method() {
        let raw = "OPTIONS sip:gw SIP/2.0\r\nFrom: <sip:a@x>;tag=9\r\nTo: <sip:gw>\r\nCall-ID: z\r\nCSeq: 2 OPTIONS\r\nExpires: 60\r\nContent-Length: 0\r\n\r\n";
        let p = params("Kerberos", "1", "2", "sip/gw.x", 4);
        assert_eq!(
            build(raw, &p),
            "<Kerberos><1><2><SIP Communications Service><sip/gw.x><z><2><OPTIONS><sip:a@x><9><sip:gw><><><><60>"
        );
    }
}
