//! Message edits a proxy makes: build responses and hop-by-hop requests, rewrite Via and Route
//! lists. Headers the proxy does not touch keep their wire bytes (signatures cover them).

use sagw_sip::Message;

use crate::uri::split_list;

/// Names a header by either of its forms.
fn is_named(name: &str, full: &str, compact: Option<&str>) -> bool {
    name.eq_ignore_ascii_case(full) || compact.is_some_and(|c| name.eq_ignore_ascii_case(c))
}

/// `(index, value)` of every header line named `full`/`compact`, in order.
fn lines<'m>(
    msg: &'m Message,
    full: &str,
    compact: Option<&str>,
) -> Vec<(usize, &'m str, &'m str)> {
    msg.headers()
        .enumerate()
        .filter(|(_, h)| is_named(h.name, full, compact))
        .map(|(i, h)| (i, h.name, h.value))
        .collect()
}

/// Every Via element, top first.
pub(crate) fn vias(msg: &Message) -> Vec<String> {
    lines(msg, "Via", Some("v"))
        .into_iter()
        .flat_map(|(_, _, v)| split_list(v).into_iter().map(str::to_owned))
        .collect()
}

/// The top Via element.
pub(crate) fn top_via(msg: &Message) -> Option<String> {
    let (_, _, v) = lines(msg, "Via", Some("v")).into_iter().next()?;
    split_list(v).first().map(|s| (*s).to_owned())
}

/// Replace (with `Some`) or remove (with `None`) the first element of a list header, keeping
/// the other elements of its line and every other line untouched.
fn edit_first_element(
    msg: &mut Message,
    full: &str,
    compact: Option<&str>,
    new: Option<&str>,
) -> bool {
    let Some((index, name, value)) = lines(msg, full, compact).into_iter().next() else {
        return false;
    };
    let name = name.to_owned();
    let mut elements: Vec<String> = split_list(value).into_iter().map(str::to_owned).collect();
    if elements.is_empty() {
        return false;
    }
    match new {
        Some(v) => {
            if let Some(first) = elements.first_mut() {
                *first = v.to_owned();
            }
        }
        None => {
            elements.remove(0);
        }
    }
    msg.remove_header_at(index);
    if !elements.is_empty() {
        msg.insert_header(index, &name, &elements.join(", "));
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
    let index = lines(msg, "Via", Some("v"))
        .first()
        .map_or(0, |(i, _, _)| *i);
    msg.insert_header(index, "Via", value);
}

/// The top Route element.
pub(crate) fn top_route(msg: &Message) -> Option<String> {
    let (_, _, v) = lines(msg, "Route", None).into_iter().next()?;
    split_list(v).first().map(|s| (*s).to_owned())
}

/// Remove the top Route element.
pub(crate) fn pop_route(msg: &mut Message) -> bool {
    edit_first_element(msg, "Route", None, None)
}

/// Every Route element in order.
pub(crate) fn routes(msg: &Message) -> Vec<String> {
    lines(msg, "Route", None)
        .into_iter()
        .flat_map(|(_, _, v)| split_list(v).into_iter().map(str::to_owned))
        .collect()
}

/// Insert a header line above the first line named `name` (or after the Via lines when there is
/// none): Record-Route and Path entries go on top of the existing ones.
pub(crate) fn push_on_top(msg: &mut Message, name: &str, value: &str) {
    let index = match lines(msg, name, None).first() {
        Some((i, _, _)) => *i,
        None => lines(msg, "Via", Some("v"))
            .last()
            .map_or(0, |(i, _, _)| i + 1),
    };
    msg.insert_header(index, name, value);
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
    let mut s = String::with_capacity(512);
    s.push_str("SIP/2.0 ");
    s.push_str(&code.to_string());
    s.push(' ');
    s.push_str(reason);
    s.push_str("\r\n");
    for v in req.header_all("Via") {
        push_line(&mut s, "Via", v);
    }
    push_line(&mut s, "From", req.header("From")?);
    let to = req.header("To")?;
    match (req.to().and_then(|t| t.tag()), to_tag) {
        (None, Some(tag)) if code > 100 => push_line(&mut s, "To", &format!("{to};tag={tag}")),
        _ => push_line(&mut s, "To", to),
    }
    push_line(&mut s, "Call-ID", req.call_id()?);
    push_line(&mut s, "CSeq", req.header("CSeq")?);
    for (name, value) in extra {
        push_line(&mut s, name, value);
    }
    s.push_str("Content-Length: 0\r\n\r\n");
    Message::parse(s.as_bytes()).ok()
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
    push_line(&mut s, "Via", &top_via(sent)?);
    for r in routes(sent) {
        push_line(&mut s, "Route", &r);
    }
    push_line(&mut s, "Max-Forwards", "70");
    push_line(&mut s, "From", sent.header("From")?);
    push_line(&mut s, "To", to.or_else(|| sent.header("To"))?);
    push_line(&mut s, "Call-ID", sent.call_id()?);
    let cseq = sent.cseq()?;
    push_line(&mut s, "CSeq", &format!("{} {method}", cseq.number));
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
        assert_eq!(routes(&m), vec!["<sip:p2;lr>"]);
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
        assert_eq!(routes(&c).len(), 2);
        c.validate().unwrap();
    }
}
