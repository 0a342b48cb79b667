//! The recorded OC 2007 R2 sign-in: byte-exact round trips, the MS-SIPAE signature elements
//! (notes §1.2, vectors A and E) read through the public API, and edits that keep untouched
//! bytes.

use sagw_sip::{AuthHeader, Message};

fn read(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/data/flows/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// The MS-SIPAE v3/v4 signature buffer, assembled only from this crate's accessors.
fn sipae_buffer(m: &Message, auth_header: &str) -> String {
    let auth = AuthHeader::parse(m.header(auth_header).unwrap()).unwrap();
    let (rand, num) = if m.is_request() {
        ("crand", "cnum")
    } else {
        ("srand", "snum")
    };
    let cseq = m.cseq().unwrap();
    let from = m.from().unwrap();
    let to = m.to().unwrap();
    let mut elements = vec![
        auth.scheme,
        auth.param(rand).unwrap(),
        auth.param(num).unwrap(),
        auth.param("realm").unwrap(),
        auth.param("targetname").unwrap(),
        m.call_id().unwrap(),
        cseq.number,
        cseq.method,
        from.uri,
        from.tag().unwrap_or(""),
        to.uri,
        to.tag().unwrap_or(""),
        "", // no P-Asserted-Identity in this flow
        "",
        m.expires().unwrap_or(""),
    ];
    let code = m.status_code().map(|c| c.to_string());
    if let Some(code) = &code {
        elements.push(code);
    }
    elements.iter().map(|e| format!("<{e}>")).collect()
}

#[test]
fn recorded_register_round_trips_and_yields_vector_a_buffer() {
    let raw = read("oc2007r2-register-request.sip");
    let m = Message::parse(&raw).unwrap();
    assert_eq!(m.to_bytes(), raw);
    assert_eq!(m.header_count(), 14);
    assert_eq!(
        sipae_buffer(&m, "Proxy-Authorization"),
        "<NTLM><13317733><1><SIP Communications Service><cosmo-ocs-r2.cosmo.local>\
         <4037df9284354df39065195bd57a4b14><3><REGISTER><sip:user@cosmo.local><3e49177a52>\
         <sip:user@cosmo.local><><><><>"
    );
    assert_eq!(m.validate(), Ok(()));
    let auth = AuthHeader::parse(m.header("proxy-authorization").unwrap()).unwrap();
    assert_eq!(
        auth.param("response"),
        Some("0100000029618e9651b65a7764000000")
    );
    let recorded = String::from_utf8(read("oc2007r2-ntlm-register.txt")).unwrap();
    let authenticate = recorded
        .lines()
        .find_map(|l| l.strip_prefix("AUTHENTICATE_B64="))
        .unwrap();
    assert_eq!(auth.param("gssapi-data"), Some(authenticate));
}

#[test]
fn recorded_200_ok_round_trips_and_yields_vector_e_buffer() {
    let raw = read("oc2007r2-register-200ok.sip");
    let m = Message::parse(&raw).unwrap();
    assert_eq!(m.to_bytes(), raw);
    assert_eq!(
        sipae_buffer(&m, "Authentication-Info"),
        "<NTLM><9616454F><1><SIP Communications Service><cosmo-ocs-r2.cosmo.local>\
         <4037df9284354df39065195bd57a4b14><3><REGISTER><sip:user@cosmo.local><3e49177a52>\
         <sip:user@cosmo.local><5E61CCD925D17E043D9A74835A88F664><><><7200><200>"
    );
    assert_eq!(m.from().unwrap().display_name, Some("User"));
    assert_eq!(m.from().unwrap().param("epid"), Some("c8ca638a15"));
}

#[test]
fn multi_value_headers_split_but_auth_headers_stay_whole() {
    let m = Message::parse(&read("oc2007r2-register-request.sip")).unwrap();
    let supported: Vec<_> = m.header_values("supported").collect();
    assert_eq!(
        supported,
        [
            "gruu-10",
            "adhoclist",
            "msrtc-event-categories",
            "ms-forking"
        ]
    );
    assert_eq!(m.header_all("k").count(), 2, "compact form k == Supported");
    // Quoted commas inside Contact parameters do not split.
    assert_eq!(m.header_values("m").count(), 1);
    let pa: Vec<_> = m.header_values("Proxy-Authorization").collect();
    assert_eq!(pa, [m.header("Proxy-Authorization").unwrap()]);
    assert!(pa[0].contains(", "));

    // Folded: still one element, returned raw.
    let folded = String::from_utf8(read("oc2007r2-register-request.sip"))
        .unwrap()
        .replace("\", realm=", "\",\r\n realm=");
    let f = Message::parse(folded.as_bytes()).unwrap();
    let pa: Vec<_> = f.header_values("Proxy-Authorization").collect();
    assert_eq!(pa.len(), 1);
    assert!(pa[0].starts_with("NTLM qop=\"auth\",\r\n realm="));
    assert_eq!(
        AuthHeader::parse(pa[0]).unwrap(),
        AuthHeader::parse(m.header("Proxy-Authorization").unwrap()).unwrap()
    );

    let ok = Message::parse(&read("oc2007r2-register-200ok.sip")).unwrap();
    assert_eq!(ok.header_values("Allow-Events").count(), 7);
    assert_eq!(ok.header_values("u").count(), 7);
    assert_eq!(ok.header_values("Authentication-Info").count(), 1);
}

#[test]
fn edits_keep_untouched_bytes_and_wire_names() {
    let raw = read("oc2007r2-register-200ok.sip");
    let original = Message::parse(&raw).unwrap();

    // Removing the auth header and writing it back in place reproduces the message exactly.
    let mut m = original.clone();
    let value = m.header("Authentication-Info").unwrap().to_owned();
    assert_eq!(m.remove_header("authentication-info"), 1);
    assert!(
        !m.to_bytes()
            .windows(19)
            .any(|w| w == b"Authentication-Info")
    );
    m.insert_header(1, "Authentication-Info", &value);
    assert_eq!(m.to_bytes(), raw);

    // set_header: in place, first occurrence's wire name, later duplicates dropped.
    let mut m = original.clone();
    m.set_header("SUPPORTED", "ms-forking");
    let names: Vec<_> = m.headers().map(|h| h.name).collect();
    assert_eq!(names.iter().filter(|n| **n == "Supported").count(), 1);
    let out = String::from_utf8(m.to_bytes()).unwrap();
    assert!(out.contains("\r\nSupported: ms-forking\r\nServer: RTC/3.5\r\nContent-Length: 0\r\n"));
    // Every header line other than Supported is byte-identical, in the same order.
    let lines = |s: &str| -> Vec<String> {
        s.split("\r\n")
            .filter(|l| !l.starts_with("Supported"))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(lines(&out), lines(std::str::from_utf8(&raw).unwrap()));

    // set_body keeps Content-Length's position.
    let mut m = original.clone();
    m.set_body(b"hello");
    let out = m.to_bytes();
    assert!(out.ends_with(b"Content-Length: 5\r\n\r\nhello"));
    let again = Message::parse(&out).unwrap();
    assert_eq!(again.body(), b"hello");
    assert_eq!(again.header_count(), original.header_count());

    // remove_header_at / push_header.
    let mut m = original.clone();
    m.remove_header_at(0);
    m.remove_header_at(999);
    m.push_header("Proxy-Authentication-Info", "NTLM snum=\"2\"");
    let again = Message::parse(&m.to_bytes()).unwrap();
    assert_eq!(again.header("ms-keep-alive"), None);
    assert_eq!(again.headers().last().unwrap().value, "NTLM snum=\"2\"");
    assert_eq!(again.header_count(), original.header_count());
}

/// `remove_headers` and `remove_named` remove what `remove_header` would for each name, compact forms and other
/// names' case included, in one pass; the rest stays in order.
#[test]
fn remove_headers_and_named_are_remove_header_for_each_name() {
    let raw = b"MESSAGE sip:b@example.com SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n\
Diversion: <sip:x@example.com>\r\nFrom: <sip:a@example.com>;tag=1\r\ny: abc\r\nTo: <sip:b@example.com>\r\n\
Call-ID: c\r\nCSeq: 1 MESSAGE\r\nidentity: def\r\nP-Asserted-Identity: <sip:a@example.com>\r\n\
X-Keep: 1\r\nDIVERSION: <sip:z@example.com>\r\nContent-Length: 0\r\n\r\n";
    let names = [
        "P-Asserted-Identity",
        "Diversion",
        "Identity",
        "y",
        "Absent",
    ];
    let mut one_by_one = Message::parse(raw).unwrap();
    let mut removed = 0;
    for n in names {
        removed += one_by_one.remove_header(n);
    }
    let mut at_once = Message::parse(raw).unwrap();
    assert_eq!(at_once.remove_headers(names), removed);
    assert_eq!(at_once.to_bytes(), one_by_one.to_bytes());
    assert_eq!(removed, 5);
    assert!(at_once.header("X-Keep").is_some());
    // Identified once: the same. `X-Keep` has the length of `Absent`, so that the length bit
    // lets it through to the comparison.
    let named = sagw_sip::HeaderNames::new(names);
    let mut by_name = Message::parse(raw).unwrap();
    assert_eq!(by_name.remove_named(&named), removed);
    assert_eq!(by_name.to_bytes(), one_by_one.to_bytes());
}

#[test]
fn start_line_edit_turns_request_into_response() {
    let raw = read("oc2007r2-register-request.sip");
    let mut m = Message::parse(&raw).unwrap();
    m.set_start_line("SIP/2.0 401 Unauthorized").unwrap();
    assert_eq!(m.status_code(), Some(401));
    assert_eq!(m.method(), None);
    assert!(
        m.to_bytes()
            .starts_with(b"SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/TLS")
    );
    assert_eq!(
        m.set_start_line("SIP/2.0 99 Bad"),
        Err(sagw_sip::ParseError::BadStartLine)
    );
    assert_eq!(
        m.set_start_line("SIP/2.0 200 OK\r\nX: y"),
        Err(sagw_sip::ParseError::BadStartLine)
    );
    assert_eq!(
        m.status_code(),
        Some(401),
        "failed edits leave the message as it was"
    );
}

#[test]
fn edits_cannot_inject_lines() {
    let mut m = Message::parse(&read("oc2007r2-register-request.sip")).unwrap();
    let before = m.header_count();
    m.push_header("X-Evil", "a\r\nVia: SIP/2.0/UDP attacker\r\n\r\nbody");
    m.push_header("Bad Name:", "v");
    m.set_header("Call-ID", "x\ny");
    let again = Message::parse(&m.to_bytes()).unwrap();
    assert_eq!(again.header_count(), before + 2);
    assert_eq!(again.header_all("Via").count(), 1);
    assert_eq!(
        again.header("X-Evil"),
        Some("a  Via: SIP/2.0/UDP attacker    body")
    );
    assert_eq!(again.header("Bad-Name-"), Some("v"));
    assert_eq!(again.call_id(), Some("x y"));
    assert!(again.body().is_empty());
}

/// A header added by `set_header` is found by the name it was written under, the same as after a
/// parse of the serialised message: an empty name is written `X`, which is the compact form of
/// Session-Expires; a name that is no token is written with `-`.
#[test]
fn set_header_indexes_added_headers_by_their_written_name() {
    let mut m = Message::parse(&read("oc2007r2-register-request.sip")).unwrap();
    m.set_header("", "90");
    m.set_header("Call ID", "z");
    m.set_header("Subject", "s");
    let again = Message::parse(&m.to_bytes()).unwrap();
    for name in ["Session-Expires", "x", "Call-ID", "Call-ID", "Subject"] {
        assert_eq!(m.header(name), again.header(name), "{name}");
    }
    assert_eq!(m.header("Session-Expires"), Some("90"));
}
