//! Every parse error and limit, each triggered by the smallest input that shows it.

use sagw_sip::{Kind, Limits, Message, ParseError as E};

const HEAD: &str = "OPTIONS sip:a@example.com SIP/2.0\r\n";

fn parse(s: &str) -> Result<Message, E> {
    Message::parse(s.as_bytes())
}

#[test]
fn start_line_grammar() {
    assert!(parse("OPTIONS sip:a@b SIP/2.0\r\n\r\n").is_ok());
    assert!(
        parse("OPTIONS sip:a@b sip/2.0\r\n\r\n").is_ok(),
        "version is case-insensitive"
    );
    assert!(parse("sip/2.0 200 OK\r\n\r\n").is_ok());
    assert!(parse("SIP/2.0 699 x\r\n\r\n").is_ok());
    assert!(
        parse("SIP/2.0 100\r\n\r\n").is_ok(),
        "missing reason accepted"
    );
    assert_eq!(
        parse("OPTIONS sip:a@b SIP/2.1\r\n\r\n").err(),
        Some(E::UnsupportedVersion)
    );
    assert_eq!(
        parse("SIP/3.0 200 OK\r\n\r\n").err(),
        Some(E::UnsupportedVersion)
    );
    for bad in [
        "OPTIONS sip:a@b\r\n\r\n",
        "OPTIONS  sip:a@b SIP/2.0\r\n\r\n",
        "OPTIONS sip:a@b SIP/2.0 \r\n\r\n",
        "OPTIONS sip:a@b HTTP/1.1\r\n\r\n",
        "OPTIONS sip:a@b SIP/2.\r\n\r\n",
        "OPTIONS sip:a@b SIP/x.0\r\n\r\n",
        "OPT(ONS sip:a@b SIP/2.0\r\n\r\n",
        "OPTIONS a@b SIP/2.0\r\n\r\n",
        "OPTIONS :a@b SIP/2.0\r\n\r\n",
        "OPTIONS <sip:a@b> SIP/2.0\r\n\r\n",
        "OPTIONS sip:a\"b SIP/2.0\r\n\r\n",
        " OPTIONS sip:a@b SIP/2.0\r\n\r\n",
        "SIP/2.0 20 OK\r\n\r\n",
        "SIP/2.0 2000 OK\r\n\r\n",
        "SIP/2.0 099 x\r\n\r\n",
        "SIP/2.0 700 x\r\n\r\n",
        "SIP/2.0 2x0 OK\r\n\r\n",
        "SIP/2.0 200 O\u{7}K\r\n\r\n",
        "SIP/2.0  200 OK\r\n\r\n",
    ] {
        assert_eq!(parse(bad).err(), Some(E::BadStartLine), "{bad:?}");
    }
}

#[test]
fn leading_crlfs_are_skipped() {
    assert_eq!(parse("\r\n").err(), Some(E::Incomplete));
    let m = parse("\r\n\r\nOPTIONS sip:a@b SIP/2.0\r\nCall-ID: 1\r\n\r\n").unwrap();
    assert_eq!(
        m.kind(),
        Kind::Request {
            method: "OPTIONS",
            uri: "sip:a@b"
        }
    );
    assert_eq!(
        m.to_bytes(),
        b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: 1\r\n\r\n"
    );
}

#[test]
fn header_syntax() {
    let bad = |h: &str| parse(&format!("{HEAD}{h}\r\n\r\n")).err();
    assert_eq!(
        parse(&format!("{HEAD} folded: x\r\n\r\n")).err(),
        Some(E::BadHeader { line: 2 })
    );
    assert_eq!(
        bad("Via: a\r\nNo colon here"),
        Some(E::BadHeader { line: 3 })
    );
    assert_eq!(bad(": empty name"), Some(E::BadHeader { line: 2 }));
    assert_eq!(bad("Bad Name: x"), Some(E::BadHeader { line: 2 }));
    assert_eq!(bad("Bad/Name: x"), Some(E::BadHeader { line: 2 }));
    assert_eq!(bad("Via: a\nTo: b"), Some(E::BareLineEnding { line: 2 }));
    assert_eq!(bad("Via: a\rTo: b"), Some(E::BareLineEnding { line: 2 }));
    assert_eq!(
        Message::parse(b"OPTIONS sip:a@b SIP/2.0\r\nTo: \xff\r\n\r\n").err(),
        Some(E::NotUtf8 { line: 2 })
    );
    assert_eq!(
        Message::parse(b"OPTIONS sip:a@b SIP/2.0\nTo: b\r\n\r\n").err(),
        Some(E::BareLineEnding { line: 1 })
    );
    // Empty values, spaces before the colon, NUL inside a value are fine.
    let m = parse(&format!(
        "{HEAD}Subject:\r\nX-A  :  v  \r\nX-B: a\0b\r\n\r\n"
    ))
    .unwrap();
    assert_eq!(m.header("s"), Some(""));
    assert_eq!(m.header("x-a"), Some("v"));
    assert_eq!(m.header("X-B"), Some("a\0b"));
    // A value that only starts on the continuation line.
    let m = parse(&format!("{HEAD}To:\r\n   <sip:b@c>\r\n\r\n")).unwrap();
    assert_eq!(m.header("To"), Some("<sip:b@c>"));
    // Whitespace-only continuation lines add nothing to the value but stay on the wire.
    let raw = format!("{HEAD}To: <sip:b@c>\r\n   \r\n\r\n");
    let m = parse(&raw).unwrap();
    assert_eq!(m.header("To"), Some("<sip:b@c>"));
    assert_eq!(m.to_bytes(), raw.as_bytes());
}

#[test]
fn incomplete_and_body_errors() {
    assert_eq!(parse("").err(), Some(E::Incomplete));
    assert_eq!(parse("OPTIONS sip:a@b SIP/2.0").err(), Some(E::Incomplete));
    assert_eq!(
        parse("OPTIONS sip:a@b SIP/2.0\r").err(),
        Some(E::Incomplete)
    );
    assert_eq!(
        parse(&format!("{HEAD}Via: x\r\n")).err(),
        Some(E::Incomplete)
    );
    let cl = |v: &str| parse(&format!("{HEAD}Content-Length: {v}\r\n\r\nabc")).err();
    assert_eq!(cl("3"), None);
    assert_eq!(cl("2"), None, "extra datagram bytes are ignored");
    assert_eq!(
        cl("4"),
        Some(E::BodyTooShort {
            expected: 4,
            available: 3
        })
    );
    assert_eq!(cl("-1"), Some(E::BadContentLength));
    assert_eq!(cl("3 3"), Some(E::BadContentLength));
    assert_eq!(cl("0x3"), Some(E::BadContentLength));
    assert_eq!(cl(""), Some(E::BadContentLength));
    assert_eq!(cl("99999999999999999999999999"), Some(E::BadContentLength));
    assert_eq!(cl("70000"), Some(E::TooLarge { limit: 65536 }));
    assert_eq!(
        parse(&format!("{HEAD}l: 3\r\nContent-Length: 3\r\n\r\nabc")).err(),
        Some(E::MultipleContentLength)
    );
    let m = parse(&format!("{HEAD}l: 2\r\n\r\nabc")).unwrap();
    assert_eq!(m.body(), b"ab");
    assert_eq!(m.to_bytes(), format!("{HEAD}l: 2\r\n\r\nab").as_bytes());
}

#[test]
fn limits() {
    let small = Limits {
        max_message_bytes: 200,
        max_headers: 3,
        max_line_bytes: 40,
        ..Limits::default()
    };
    let p = |s: &str| Message::parse_with(s.as_bytes(), &small).err();
    assert_eq!(p(&format!("{HEAD}A: 1\r\nB: 2\r\nC: 3\r\n\r\n")), None);
    assert_eq!(
        p(&format!("{HEAD}A: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n")),
        Some(E::TooManyHeaders)
    );
    // Folded continuation lines do not count as headers.
    assert_eq!(
        p(&format!("{HEAD}A: 1\r\n 1\r\n 1\r\nB: 2\r\nC: 3\r\n\r\n")),
        None
    );
    let line40 = format!("X: {}", "a".repeat(37));
    assert_eq!(p(&format!("{HEAD}{line40}\r\n\r\n")), None);
    assert_eq!(
        p(&format!("{HEAD}{line40}a\r\n\r\n")),
        Some(E::LineTooLong { line: 2 })
    );
    assert_eq!(
        p(&format!("{HEAD}{line40}a")),
        Some(E::LineTooLong { line: 2 })
    );
    assert_eq!(
        p(&format!(
            "{HEAD}A: 1\r\n{}\r\n",
            " continued\r\n".repeat(20)
        )),
        Some(E::TooLarge { limit: 200 })
    );
    assert_eq!(
        p(&format!("{HEAD}l: 160\r\n\r\n{}", "b".repeat(160))),
        Some(E::TooLarge { limit: 200 })
    );
    assert_eq!(p(&format!("{HEAD}l: 155\r\n\r\n{}", "b".repeat(155))), None);
    assert_eq!(
        p(&format!("{HEAD}\r\n{}", "b".repeat(300))),
        Some(E::TooLarge { limit: 200 }),
        "a datagram without Content-Length is bounded too"
    );
}

#[test]
fn validate_rules() {
    let base = "INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nTo: <sip:a@b>\r\nFrom: <sip:c@d>;tag=1\r\nCall-ID: x\r\n";
    let v = |extra: &str| parse(&format!("{base}{extra}\r\n\r\n")).unwrap().validate();
    assert_eq!(v("CSeq: 1 INVITE"), Ok(()));
    assert_eq!(v("CSeq: 1 INVITE\r\nMax-Forwards: 255"), Ok(()));
    assert_eq!(
        v("CSeq: 1 INVITE\r\nMax-Forwards: 256"),
        Err(E::BadHeaderValue("Max-Forwards"))
    );
    assert_eq!(
        v("CSeq: 1 INVITE\r\nMax-Forwards: -1"),
        Err(E::BadHeaderValue("Max-Forwards"))
    );
    assert_eq!(v("CSeq: 2147483647 INVITE"), Ok(()));
    assert_eq!(v("CSeq: 2147483648 INVITE"), Err(E::BadHeaderValue("CSeq")));
    assert_eq!(v("CSeq: INVITE"), Err(E::BadHeaderValue("CSeq")));
    assert_eq!(v("CSeq: 1INVITE"), Err(E::BadHeaderValue("CSeq")));
    assert_eq!(
        v("CSeq: 1 invite"),
        Err(E::CSeqMismatch),
        "methods are case-sensitive"
    );
    assert_eq!(
        v("CSeq: 1 INVITE\r\ni: y"),
        Err(E::DuplicateHeader("Call-ID"))
    );
    assert_eq!(
        v("CSeq: 1 INVITE\r\nExpires: 1\r\nExpires: 2"),
        Err(E::DuplicateHeader("Expires"))
    );
    let no_via = "OPTIONS sip:a@b SIP/2.0\r\nTo: <sip:a@b>\r\nFrom: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n\r\n";
    assert_eq!(
        parse(no_via).unwrap().validate(),
        Err(E::MissingHeader("Via"))
    );
    let resp = "SIP/2.0 200 OK\r\nVia: v\r\nTo: <sip:a@b>\r\nFrom: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n\r\n";
    assert_eq!(parse(resp).unwrap().validate(), Ok(()));
}

#[test]
fn debug_output_hides_header_values() {
    let m = parse(&format!("{HEAD}Authorization: Basic c2VjcmV0\r\n\r\n")).unwrap();
    let dbg = format!("{m:?}");
    assert!(dbg.contains("Authorization"));
    assert!(!dbg.contains("c2VjcmV0"));
}

#[test]
fn cseq_value_range_and_foreign_input() {
    use sagw_sip::CSeq;
    let c = |number| CSeq {
        number,
        method: "INVITE",
    };
    assert_eq!(c("0009").value(), Some(9));
    assert_eq!(c("2147483647").value(), Some(2_147_483_647));
    assert_eq!(c("2147483648").value(), None);
    assert_eq!(c("36893488147419103232").value(), None);
    assert_eq!(c("").value(), None);
    assert_eq!(c("!1").value(), None);
    assert_eq!(c("1a").value(), None);
}
