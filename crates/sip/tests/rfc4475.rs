//! RFC 4475 torture messages, one expectation per file.
//!
//! Layers: `Message::parse` (syntax a proxy needs to frame and forward), `Message::validate`
//! (RFC 3261 §8.1.1 whole-message rules), accessors such as `to()`/`parse_name_addr` (address
//! syntax). Semantic problems (URI schemes, Via branch, Date, Require, Accept, ...) pass all three
//! and are left to higher layers: `Higher` below says which one must act.

use sagw_sip::{Limits, Message, ParseError, VersionPolicy, parse_name_addr};

#[derive(Debug)]
enum Expect {
    /// §3.1.1 valid message: parses, validates, round-trips byte for byte.
    Valid,
    /// Rejected by `Message::parse` with exactly this error.
    ParseErr(ParseError),
    /// Parses and round-trips; `validate()` rejects with exactly this error.
    ValidateErr(ParseError),
    /// Parses, validates and round-trips; `parse_name_addr` on this header rejects it.
    NameAddrErr(&'static str),
    /// Syntactically fine for this crate (parses, validates, round-trips); the named higher layer
    /// must act.
    Higher(&'static str),
}

use Expect::*;

fn table() -> Vec<(&'static str, &'static str, Expect)> {
    vec![
        // §3.1.1 valid messages
        ("wsinv", "3.1.1.1", Valid),
        ("intmeth", "3.1.1.2", Valid),
        ("esc01", "3.1.1.3", Valid),
        ("escnull", "3.1.1.4", Valid),
        ("esc02", "3.1.1.5", Valid),
        ("lwsdisp", "3.1.1.6", Valid),
        ("longreq", "3.1.1.7", Valid),
        ("dblreq", "3.1.1.8", Valid), // trailing second request ignored (datagram)
        ("semiuri", "3.1.1.9", Valid),
        ("transports", "3.1.1.10", Valid),
        ("mpart01", "3.1.1.11", Valid),
        ("unreason", "3.1.1.12", Valid),
        ("noreason", "3.1.1.13", Valid),
        // §3.1.2 invalid messages
        (
            "badinv01",
            "3.1.2.1",
            Higher("Via/Contact list parsing (empty params ;;,;,,)"),
        ),
        (
            "clerr",
            "3.1.2.2",
            ParseErr(ParseError::BodyTooShort {
                expected: 9999,
                available: 154,
            }),
        ),
        ("ncl", "3.1.2.3", ParseErr(ParseError::BadContentLength)),
        (
            "scalar02",
            "3.1.2.4",
            ValidateErr(ParseError::BadHeaderValue("CSeq")),
        ),
        (
            "scalarlg",
            "3.1.2.5",
            ValidateErr(ParseError::BadHeaderValue("CSeq")),
        ),
        (
            "quotbal",
            "3.1.2.6",
            ValidateErr(ParseError::BadHeaderValue("To")),
        ),
        ("ltgtruri", "3.1.2.7", ParseErr(ParseError::BadStartLine)),
        ("lwsruri", "3.1.2.8", ParseErr(ParseError::BadStartLine)),
        ("lwsstart", "3.1.2.9", ParseErr(ParseError::BadStartLine)),
        ("trws", "3.1.2.10", ParseErr(ParseError::BadStartLine)),
        (
            "escruri",
            "3.1.2.11",
            Higher("request routing: headers in a Request-URI (RFC 3261 §19.1.5)"),
        ),
        (
            "baddate",
            "3.1.2.12",
            Higher("Date consumers (time zone must be GMT)"),
        ),
        ("regbadct", "3.1.2.13", NameAddrErr("Contact")),
        (
            "badaspec",
            "3.1.2.14",
            ValidateErr(ParseError::BadHeaderValue("To")),
        ),
        (
            "baddn",
            "3.1.2.15",
            ValidateErr(ParseError::BadHeaderValue("From")),
        ),
        (
            "badvers",
            "3.1.2.16",
            ParseErr(ParseError::UnsupportedVersion),
        ),
        (
            "mismatch01",
            "3.1.2.17",
            ValidateErr(ParseError::CSeqMismatch),
        ),
        (
            "mismatch02",
            "3.1.2.18",
            ValidateErr(ParseError::CSeqMismatch),
        ),
        ("bigcode", "3.1.2.19", ParseErr(ParseError::BadStartLine)),
        // §3.2 transaction layer
        (
            "badbranch",
            "3.2.1",
            Higher("transaction layer (branch without z9hG4bK)"),
        ),
        // §3.3 application layer
        (
            "insuf",
            "3.3.1",
            ValidateErr(ParseError::MissingHeader("To")),
        ),
        (
            "unkscm",
            "3.3.2",
            Higher("proxy core: unknown Request-URI scheme (416)"),
        ),
        (
            "novelsc",
            "3.3.3",
            Higher("proxy core: atypical Request-URI scheme"),
        ),
        (
            "unksm2",
            "3.3.4",
            Higher("UAS: unknown URI schemes in To/From/Contact"),
        ),
        (
            "bext01",
            "3.3.5",
            Higher("proxy/UAS: Require/Proxy-Require (420)"),
        ),
        ("invut", "3.3.6", Higher("UAS: unknown Content-Type (415)")),
        (
            "regaut01",
            "3.3.7",
            Higher("auth layer: unknown Authorization scheme"),
        ),
        (
            "multi01",
            "3.3.8",
            ValidateErr(ParseError::DuplicateHeader("CSeq")),
        ),
        (
            "mcl01",
            "3.3.9",
            ParseErr(ParseError::MultipleContentLength),
        ),
        (
            "bcast",
            "3.3.10",
            Higher("UAC/proxy response routing (broadcast Via)"),
        ),
        (
            "zeromf",
            "3.3.11",
            Higher("proxy core: Max-Forwards 0 (483)"),
        ),
        (
            "cparam01",
            "3.3.12",
            Higher("registrar: Contact parameters"),
        ),
        (
            "cparam02",
            "3.3.13",
            Higher("registrar: URI parameter vs header parameter"),
        ),
        (
            "regescrt",
            "3.3.14",
            Higher("registrar: escaped headers in Contact URI"),
        ),
        ("sdp01", "3.3.15", Higher("UAS: Accept (406)")),
        // §3.4 backward compatibility
        (
            "inv2543",
            "3.4.1",
            Higher("proxy: add Max-Forwards, no From tag (RFC 2543)"),
        ),
    ]
}

fn read(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/data/rfc4475/{name}.dat",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Round trip is exact for the bytes the message covers: the whole datagram, except for dblreq
/// whose trailing second request is not part of the first message.
fn assert_round_trip(name: &str, raw: &[u8], m: &Message) {
    let out = m.to_bytes();
    if name == "dblreq" {
        assert!(raw.starts_with(&out), "{name}: not a prefix");
        assert_eq!(
            out.len(),
            raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4
        );
    } else {
        assert_eq!(out, raw, "{name}: round trip differs");
    }
    let again = Message::parse(&out).unwrap();
    assert_eq!(again.to_bytes(), out);
    assert_eq!(
        again.headers().collect::<Vec<_>>(),
        m.headers().collect::<Vec<_>>()
    );
}

#[test]
fn every_file_has_an_expectation_and_meets_it() {
    let table = table();
    let mut files: Vec<String> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/rfc4475"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter_map(|f| f.strip_suffix(".dat").map(str::to_owned))
            .collect();
    files.sort();
    let mut listed: Vec<&str> = table.iter().map(|(n, _, _)| *n).collect();
    listed.sort_unstable();
    assert_eq!(files, listed, "table and corpus differ");
    assert_eq!(files.len(), 49);

    for (name, section, expect) in &table {
        let raw = read(name);
        let parsed = Message::parse(&raw);
        let ctx = format!("{name} (RFC 4475 §{section}, {expect:?})");
        match expect {
            ParseErr(e) => assert_eq!(parsed.as_ref().err(), Some(e), "{ctx}"),
            Higher(layer) => {
                let m = parsed.unwrap_or_else(|e| panic!("{ctx}: {e:?}"));
                assert_round_trip(name, &raw, &m);
                assert_eq!(m.validate(), Ok(()), "{ctx}: left for {layer}");
            }
            Valid => {
                let m = parsed.unwrap_or_else(|e| panic!("{ctx}: {e:?}"));
                assert_round_trip(name, &raw, &m);
                assert_eq!(m.validate(), Ok(()), "{ctx}");
            }
            ValidateErr(e) => {
                let m = parsed.unwrap_or_else(|e| panic!("{ctx}: {e:?}"));
                assert_round_trip(name, &raw, &m);
                assert_eq!(m.validate().as_ref().err(), Some(e), "{ctx}");
            }
            NameAddrErr(header) => {
                let m = parsed.unwrap_or_else(|e| panic!("{ctx}: {e:?}"));
                assert_round_trip(name, &raw, &m);
                assert_eq!(m.validate(), Ok(()), "{ctx}");
                assert_eq!(
                    parse_name_addr(m.header(header).unwrap()),
                    Err(ParseError::BadNameAddr),
                    "{ctx}"
                );
            }
        }
    }
}

#[test]
fn wsinv_folding_compact_forms_and_odd_whitespace() {
    let m = Message::parse(&read("wsinv")).unwrap();
    assert_eq!(m.method(), Some("INVITE"));
    // "TO :" with the value on the continuation line; name kept as written.
    let to = m.headers().find(|h| h.name == "TO").unwrap();
    assert_eq!(
        to.value,
        "sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n"
    );
    assert_eq!(m.to().unwrap().tag(), Some("1918181833n"));
    let from = m.from().unwrap();
    assert_eq!(from.display_name, Some(r#"J Rosenberg \\\""#));
    assert_eq!(from.uri, "sip:jdrosen@example.com");
    assert_eq!(from.tag(), Some("98asjd8"));
    assert_eq!(m.header("max-forwards"), Some("0068"));
    let cseq = m.cseq().unwrap();
    assert_eq!((cseq.number, cseq.method), ("0009", "INVITE"));
    // Folded values are returned raw.
    assert_eq!(
        m.header("Via"),
        Some("SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;branch=390skdjuw")
    );
    assert_eq!(
        m.header("NewFangledHeader"),
        Some("newfangled value\r\n continued newfangled value")
    );
    assert_eq!(m.header("Subject"), Some(""), "`s :` is an empty Subject");
    // Two Via header lines; the compact one holds two comma-separated values.
    assert_eq!(m.header_all("Via").count(), 2);
    let vias: Vec<_> = m.header_values("v").collect();
    assert_eq!(vias.len(), 3);
    assert_eq!(
        vias[1],
        "SIP  / 2.0  / TCP     spindle.example.com   ;\r\n  branch  =   z9hG4bK9ikj8"
    );
    let contact = parse_name_addr(m.header("Contact").unwrap()).unwrap();
    assert_eq!(contact.display_name, Some(r#"Quoted string \"\""#));
    assert_eq!(contact.param("newparam"), Some("newvalue"));
    assert_eq!(contact.param("q"), Some("0.33"));
    assert_eq!(m.content_length(), Some(150));
    assert_eq!(m.body().len(), 150);
}

#[test]
fn intmeth_esc_and_reason_phrases() {
    let m = Message::parse(&read("intmeth")).unwrap();
    assert_eq!(
        m.method(),
        Some("!interesting-Method0123456789_*+`.%indeed'~")
    );
    assert_eq!(m.cseq().unwrap().method, m.method().unwrap());
    assert!(m.to().unwrap().display_name.unwrap().contains('\0'));

    let m = Message::parse(&read("esc02")).unwrap();
    assert_eq!(m.method(), Some("RE%47IST%45R"));
    // `C%6Fntact` is not Contact: no percent-decoding of names.
    assert_eq!(m.header_all("Contact").count(), 2);
    assert_eq!(
        m.header("C%6Fntact"),
        Some("<sip:alias2@host2.example.com>")
    );

    let m = Message::parse(&read("unreason")).unwrap();
    assert_eq!(m.status_code(), Some(200));
    assert_eq!(
        m.kind(),
        sagw_sip::Kind::Response {
            code: 200,
            reason: "= 2**3 * 5**2 но сто девяносто девять - простое"
        }
    );
    let m = Message::parse(&read("noreason")).unwrap();
    assert_eq!(
        m.kind(),
        sagw_sip::Kind::Response {
            code: 100,
            reason: ""
        }
    );
}

#[test]
fn bodies_by_content_length_or_rest_of_datagram() {
    let raw = read("mpart01");
    let m = Message::parse(&raw).unwrap();
    assert_eq!(m.body().len(), m.content_length().unwrap());
    assert!(m.body().contains(&b'\n'));
    // inv2543 has no Content-Length: the rest of the datagram is the body.
    let raw = read("inv2543");
    let m = Message::parse(&raw).unwrap();
    assert_eq!(m.content_length(), None);
    assert!(m.body().starts_with(b"v=0\r\n"));
    assert!(m.body().ends_with(b"m=audio 49217 RTP/AVP 0\r\n"));
    // dblreq: the second request in the datagram is ignored.
    let m = Message::parse(&read("dblreq")).unwrap();
    assert_eq!(m.method(), Some("REGISTER"));
    assert_eq!(m.call_id(), Some("dblreq.0ha0isndaksdj99sdfafnl3lk233412"));
    assert!(m.body().is_empty());
}

#[test]
fn badvers_parses_only_when_other_versions_are_allowed() {
    let limits = Limits {
        version: VersionPolicy::AnySipVersion,
        ..Limits::default()
    };
    let m = Message::parse_with(&read("badvers"), &limits).unwrap();
    assert_eq!(m.version(), "SIP/7.0");
    // enough to build the 505: every mandatory header is readable
    assert_eq!(m.validate(), Ok(()));
}
