//! Message edits a proxy makes: build responses and hop-by-hop requests, rewrite Via and Route
//! lists. Headers the proxy does not touch keep their wire bytes (signatures cover them).

use sagw_sip::{Message, ResponseWriter};

use crate::uri::list_elements;

/// Names a header by either of its forms.
fn is_named(name: &str, full: &str, compact: Option<&str>) -> bool {
    name.eq_ignore_ascii_case(full) || compact.is_some_and(|c| name.eq_ignore_ascii_case(c))
}

/// `(index, name, value)` of every header line named `full`/`compact`, in order.
fn lines<'m>(
    msg: &'m Message,
    full: &'m str,
    compact: Option<&'m str>,
) -> impl Iterator<Item = (usize, &'m str, &'m str)> + 'm {
    msg.headers()
        .enumerate()
        .filter(move |(_, h)| is_named(h.name, full, compact))
        .map(|(i, h)| (i, h.name, h.value))
}

/// Every Via element, top first.
#[cfg(test)]
pub(crate) fn vias(msg: &Message) -> Vec<String> {
    msg.header_all("Via")
        .flat_map(list_elements)
        .map(str::to_owned)
        .collect()
}

/// The top Via element (the first element of the first Via line).
pub(crate) fn top_via(msg: &Message) -> Option<&str> {
    list_elements(msg.header_all("Via").next()?).next()
}

/// Replace (with `Some`) or remove (with `None`) the first element of a list header, keeping
/// the other elements of its line and every other line untouched.
fn edit_first_element(
    msg: &mut Message,
    full: &str,
    compact: Option<&str>,
    new: Option<&str>,
) -> bool {
    let Some((index, name, value)) = lines(msg, full, compact).next() else {
        return false;
    };
    let mut elements = list_elements(value);
    if elements.next().is_none() {
        return false;
    }
    // The line is rewritten as `name: new, rest...` with the other elements joined by ", ";
    // name and value share one buffer (the message is borrowed until the edit).
    let mut buf = String::with_capacity(name.len() + value.len() + new.map_or(0, str::len));
    buf.push_str(name);
    let name_len = buf.len();
    let mut any = false;
    if let Some(v) = new {
        buf.push_str(v);
        any = true;
    }
    for e in elements {
        if any {
            buf.push_str(", ");
        }
        buf.push_str(e);
        any = true;
    }
    msg.remove_header_at(index);
    if any && let (Some(name), Some(value)) = (buf.get(..name_len), buf.get(name_len..)) {
        msg.insert_header(index, name, value);
    }
    true
}

/// Replace the top Via element.
pub(crate) fn set_top_via(msg: &mut Message, value: &str) -> bool {
    edit_first_element(msg, "Via", Some("v"), Some(value))
}

/// Remove the top Via element.
pub(crate) fn pop_via(msg: &mut Message) -> bool {
    edit_first_element(msg, "Via", Some("v"), None)
}

/// Insert a Via line above every other.
pub(crate) fn push_via(msg: &mut Message, value: &str) {
    let index = lines(msg, "Via", Some("v")).next().map_or(0, |(i, _, _)| i);
    msg.insert_header(index, "Via", value);
}

/// The top Route element.
pub(crate) fn top_route(msg: &Message) -> Option<&str> {
    list_elements(msg.header_all("Route").next()?).next()
}

/// Remove the top Route element.
pub(crate) fn pop_route(msg: &mut Message) -> bool {
    edit_first_element(msg, "Route", None, None)
}

/// Every Route element in order.
pub(crate) fn routes(msg: &Message) -> impl Iterator<Item = &str> {
    msg.header_all("Route").flat_map(list_elements)
}

/// Insert a header line above the first line named `name` (or after the Via lines when there is
/// none): Record-Route and Path entries go on top of the existing ones.
pub(crate) fn push_on_top(msg: &mut Message, name: &str, value: &str) {
    let index = match lines(msg, name, None).next() {
        Some((i, _, _)) => i,
        None => lines(msg, "Via", Some("v"))
            .last()
            .map_or(0, |(i, _, _)| i + 1),
    };
    msg.insert_header(index, name, value);
}

/// Replace a request's Request-URI with `uri`; false (nothing changed) when the start line it
/// would make does not parse.
pub(crate) fn set_request_uri(msg: &mut Message, uri: &str) -> bool {
    let Some(method) = msg.method() else {
        return false;
    };
    let mut line = String::with_capacity(method.len() + uri.len() + 10);
    line.push_str(method);
    line.push(' ');
    line.push_str(uri);
    line.push_str(" SIP/2.0");
    msg.set_start_line(&line).is_ok()
}

/// Standard reason phrase for codes the proxy generates.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        416 => "Unsupported URI Scheme",
        423 => "Interval Too Brief",
        430 => "Flow Failed",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        487 => "Request Terminated",
        500 => "Server Internal Error",
        503 => "Service Unavailable",
        505 => "Version Not Supported",
        _ => "Unknown",
    }
}

/// Build a response to `req` (RFC 3261 §8.2.6): Via lines, From, To (with `to_tag` added when
/// the request's To has none and the code is above 100), Call-ID and CSeq copied, then `extra`.
/// `None` when the request lacks what a response needs.
pub fn build_response(
    req: &Message,
    code: u16,
    reason: &str,
    to_tag: Option<&str>,
    extra: &[(&str, String)],
) -> Option<Message> {
    let extra_len: usize = extra.iter().map(|(n, v)| n.len() + v.len() + 4).sum();
    // Written and indexed in one pass: writing the text and parsing it again was ~5 k
    // instructions a response (the 401 and the 200 of every Digest REGISTER).
    let mut w = ResponseWriter::new(code, reason, req.start_line().len() + 400 + extra_len);
    for v in req.header_all("Via") {
        w.header("Via", v);
    }
    w.header("From", req.header("From")?);
    let to = req.header("To")?;
    match (req.to().and_then(|t| t.tag()), to_tag) {
        (None, Some(tag)) if code > 100 => w.header_parts("To", &[to, ";tag=", tag]),
        _ => w.header("To", to),
    }
    w.header("Call-ID", req.call_id()?);
    w.header("CSeq", req.header("CSeq")?);
    for (name, value) in extra {
        w.header(name, value);
    }
    w.finish()
}

/// Build a hop-by-hop request (CANCEL, or ACK for a non-2xx final response) from the request a
/// client transaction sent (RFC 3261 §9.1, §17.1.1.3): same Request-URI, top Via, Route set,
/// From, Call-ID and CSeq number; To from `to` (the response's, for an ACK).
pub(crate) fn build_hop_request(sent: &Message, method: &str, to: Option<&str>) -> Option<Message> {
    let mut s = String::with_capacity(512);
    s.push_str(method);
    s.push(' ');
    s.push_str(sent.request_uri()?);
    s.push_str(" SIP/2.0\r\n");
    push_line(&mut s, "Via", top_via(sent)?);
    for r in routes(sent) {
        push_line(&mut s, "Route", r);
    }
    push_line(&mut s, "Max-Forwards", "70");
    push_line(&mut s, "From", sent.header("From")?);
    push_line(&mut s, "To", to.or_else(|| sent.header("To"))?);
    push_line(&mut s, "Call-ID", sent.call_id()?);
    let cseq = sent.cseq()?;
    s.push_str("CSeq: ");
    s.push_str(cseq.number);
    s.push(' ');
    s.push_str(method);
    s.push_str("\r\n");
    s.push_str("Content-Length: 0\r\n\r\n");
    Message::parse(s.as_bytes()).ok()
}

fn push_line(s: &mut String, name: &str, value: &str) {
    s.push_str(name);
    s.push_str(": ");
    s.push_str(value);
    s.push_str("\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `build_response` did before it had the writer: the text, parsed.
    fn build_response_by_parsing(
        req: &Message,
        code: u16,
        reason: &str,
        to_tag: Option<&str>,
        extra: &[(&str, String)],
    ) -> Option<Message> {
        let mut s = format!("SIP/2.0 {code} {reason}\r\n");
        for v in req.header_all("Via") {
            s.push_str(&format!("Via: {v}\r\n"));
        }
        s.push_str(&format!("From: {}\r\n", req.header("From")?));
        let to = req.header("To")?;
        match (req.to().and_then(|t| t.tag()), to_tag) {
            (None, Some(tag)) if code > 100 => s.push_str(&format!("To: {to};tag={tag}\r\n")),
            _ => s.push_str(&format!("To: {to}\r\n")),
        }
        s.push_str(&format!("Call-ID: {}\r\n", req.call_id()?));
        s.push_str(&format!("CSeq: {}\r\n", req.header("CSeq")?));
        for (name, value) in extra {
            s.push_str(&format!("{name}: {value}\r\n"));
        }
        s.push_str("Content-Length: 0\r\n\r\n");
        Message::parse(s.as_bytes()).ok()
    }

    /// Every request of the RFC 4475 torture set (odd spacing, folding, compact names, long
    /// values), answered both ways with and without a tag and extra headers: the same message.
    #[test]
    fn responses_are_what_writing_and_parsing_them_gave() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../sip/tests/data/rfc4475");
        let mut compared = 0;
        let extras = [
            Vec::new(),
            vec![
                (
                    "WWW-Authenticate",
                    "Digest realm=\"x\", nonce=\"n\"".to_owned(),
                ),
                ("Contact", "<sip:a@b>;expires=60".to_owned()),
            ],
            vec![("Subject", "folded\r\n value".to_owned())],
        ];
        for entry in std::fs::read_dir(dir).expect("rfc4475 data") {
            let raw = std::fs::read(entry.expect("entry").path()).expect("read");
            let Ok(req) = Message::parse(&raw) else {
                continue;
            };
            if !req.is_request() {
                continue;
            }
            for (code, reason) in [(100, "Trying"), (200, "OK"), (401, "Unauthorized")] {
                for tag in [None, Some("t1")] {
                    for extra in &extras {
                        let new = build_response(&req, code, reason, tag, extra);
                        let old = build_response_by_parsing(&req, code, reason, tag, extra);
                        assert_eq!(
                            new.as_ref().map(Message::to_bytes),
                            old.as_ref().map(Message::to_bytes)
                        );
                        if let (Some(new), Some(old)) = (new, old) {
                            let hn: Vec<_> = new.headers().map(|h| (h.name, h.value)).collect();
                            let ho: Vec<_> = old.headers().map(|h| (h.name, h.value)).collect();
                            assert_eq!(hn, ho);
                            assert_eq!(new.to().map(|t| t.tag()), old.to().map(|t| t.tag()));
                            assert_eq!(new.validate(), old.validate());
                            compared += 1;
                        }
                    }
                }
            }
        }
        assert!(compared > 300, "only {compared} compared");
    }

    const REQ: &[u8] = b"INVITE sip:bob@b.example SIP/2.0\r\n\
Via: SIP/2.0/UDP a.example;branch=z9hG4bK1, SIP/2.0/TCP p.example;branch=z9hG4bK0\r\n\
v: SIP/2.0/TCP q.example;branch=z9hG4bKq\r\n\
Route: <sip:p1;lr>, <sip:p2;lr>\r\n\
From: <sip:alice@a.example>;tag=1\r\n\
To: <sip:bob@b.example>\r\n\
Call-ID: c1\r\n\
CSeq: 7 INVITE\r\n\
Content-Length: 0\r\n\r\n";

    #[test]
    fn via_and_route_edits() {
        let mut m = Message::parse(REQ).unwrap();
        assert_eq!(vias(&m).len(), 3);
        assert!(pop_via(&mut m));
        assert_eq!(
            top_via(&m).unwrap(),
            "SIP/2.0/TCP p.example;branch=z9hG4bK0"
        );
        push_via(&mut m, "SIP/2.0/TCP gw;branch=z9hG4bKgw");
        assert_eq!(top_via(&m).unwrap(), "SIP/2.0/TCP gw;branch=z9hG4bKgw");
        assert_eq!(vias(&m).len(), 3);
        assert!(set_top_via(&mut m, "SIP/2.0/UDP x;branch=z9hG4bKx"));
        assert_eq!(vias(&m).first().unwrap(), "SIP/2.0/UDP x;branch=z9hG4bKx");
        assert_eq!(top_route(&m).unwrap(), "<sip:p1;lr>");
        assert!(pop_route(&mut m));
        assert_eq!(routes(&m).collect::<Vec<_>>(), vec!["<sip:p2;lr>"]);
        assert!(pop_route(&mut m));
        assert!(!pop_route(&mut m));
        assert!(m.header("Route").is_none());
        push_on_top(&mut m, "Record-Route", "<sip:gw;lr>");
        let bytes = String::from_utf8(m.to_bytes()).unwrap();
        // Untouched headers keep their bytes, including the compact Via line.
        assert!(
            bytes.contains(
                "v: SIP/2.0/TCP q.example;branch=z9hG4bKq\r\nRecord-Route: <sip:gw;lr>\r\n"
            )
        );
        Message::parse(&m.to_bytes()).unwrap().validate().unwrap();
    }

    #[test]
    fn first_element_edits_keep_the_rest_of_the_line() {
        let mut m = Message::parse(REQ).unwrap();
        assert!(set_top_via(&mut m, "SIP/2.0/UDP x;branch=z9hG4bKx"));
        let bytes = String::from_utf8(m.to_bytes()).unwrap();
        assert!(bytes.contains(
            "Via: SIP/2.0/UDP x;branch=z9hG4bKx, SIP/2.0/TCP p.example;branch=z9hG4bK0\r\n"
        ));
        assert!(pop_via(&mut m));
        assert!(pop_via(&mut m));
        // The compact line is now the top one.
        assert!(set_top_via(&mut m, "SIP/2.0/UDP y"));
        let bytes = String::from_utf8(m.to_bytes()).unwrap();
        assert!(bytes.contains("\r\nv: SIP/2.0/UDP y\r\n"), "{bytes}");
        assert!(pop_via(&mut m));
        assert!(!pop_via(&mut m));
        assert!(m.header("Via").is_none());
    }

    #[test]
    fn response_copies_the_transaction_headers() {
        let m = Message::parse(REQ).unwrap();
        let r = build_response(
            &m,
            486,
            "Busy Here",
            Some("t9"),
            &[("Retry-After", "5".into())],
        )
        .unwrap();
        assert_eq!(r.status_code(), Some(486));
        assert_eq!(r.header_all("Via").count(), 2);
        assert_eq!(r.to().unwrap().tag(), Some("t9"));
        assert_eq!(r.header("Retry-After"), Some("5"));
        assert_eq!(r.cseq().unwrap().number, "7");
        let trying = build_response(&m, 100, "Trying", Some("t9"), &[]).unwrap();
        assert_eq!(trying.to().unwrap().tag(), None);
    }

    #[test]
    fn cancel_matches_the_invite() {
        let m = Message::parse(REQ).unwrap();
        let c = build_hop_request(&m, "CANCEL", None).unwrap();
        assert_eq!(c.request_uri(), Some("sip:bob@b.example"));
        assert_eq!(vias(&c), vec!["SIP/2.0/UDP a.example;branch=z9hG4bK1"]);
        assert_eq!(c.cseq().unwrap().method, "CANCEL");
        assert_eq!(routes(&c).count(), 2);
        c.validate().unwrap();
    }
}
