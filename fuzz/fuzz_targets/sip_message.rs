#![no_main]
//! Message::parse never panics; whatever parses serialises to bytes that parse to the same
//! message (same start line, headers and body), the accessors and edits never panic, and edits
//! leave every header they do not touch byte-identical to its line(s) in the input (issue 17).
use libfuzzer_sys::fuzz_target;
use sagw_sip::{Limits, Message, parse_name_addr};

/// The header fields of `data` as on the wire, each with its continuation lines and CRLFs, cut
/// independently of the parser: after leading CRLFs and the start line, a line starting with SP or
/// HT continues the previous field, an empty line ends the head.
fn wire_fields(data: &[u8]) -> Vec<&[u8]> {
    let mut rest = data;
    while rest.starts_with(b"\r\n") {
        rest = &rest[2..];
    }
    let line = |r: &[u8]| r.windows(2).position(|w| w == b"\r\n").map(|i| i + 2);
    let Some(sl) = line(rest) else {
        return Vec::new();
    };
    let mut pos = sl;
    let mut fields: Vec<(usize, usize)> = Vec::new();
    while let Some(n) = line(&rest[pos..]) {
        if n == 2 {
            break;
        }
        if matches!(rest[pos], b' ' | b'\t') {
            if let Some(last) = fields.last_mut() {
                last.1 = pos + n;
            }
        } else {
            fields.push((pos, pos + n));
        }
        pos += n;
    }
    fields.into_iter().map(|(s, e)| &rest[s..e]).collect()
}

/// The header section of a serialised message: between the start line and the blank line.
fn head_fields(m: &Message) -> Vec<u8> {
    let bytes = m.to_bytes();
    let start = m.start_line().len() + 2;
    let end = bytes.len() - m.body().len() - 2;
    bytes[start..end].to_vec()
}

fuzz_target!(|data: &[u8]| {
    let Ok(m) = Message::parse(data) else {
        return;
    };
    let bytes = m.to_bytes();
    assert!(!bytes.is_empty());
    let again = Message::parse(&bytes).expect("serialised message must parse");
    assert_eq!(again.to_bytes(), bytes);
    assert_eq!(again.start_line(), m.start_line());
    assert!(again.headers().eq(m.headers()));
    assert_eq!(again.body(), m.body());
    let wire = wire_fields(data);
    assert_eq!(
        wire.len(),
        m.header_count(),
        "the parser and a plain CRLF split disagree on the header count"
    );

    // Accessors the signer uses.
    let _ = (
        m.kind(),
        m.call_id(),
        m.cseq(),
        m.from(),
        m.to(),
        m.expires(),
        m.validate(),
    );
    for h in m.headers() {
        let _ = parse_name_addr(h.value);
        let _ = sagw_sip::parse_challenges(h.value);
        let _ = m.header_values(h.name).count();
    }

    // Edits keep the message parseable and untouched headers intact.
    let mut e = m.clone();
    e.push_header("Authentication-Info", "NTLM rspauth=\"0\"");
    let first = m.headers().next().map(|h| h.name.to_owned());
    if let Some(first) = &first {
        e.set_header(first, "x");
        e.remove_header_at(0);
    }
    e.set_body(b"b");
    // Edits may push a message over the default limits: re-parse without them.
    let unlimited = Limits {
        max_message_bytes: usize::MAX,
        max_headers: usize::MAX,
        max_line_bytes: usize::MAX,
        ..Limits::default()
    };
    let edited = Message::parse_with(&e.to_bytes(), &unlimited).expect("edited message must parse");
    assert_eq!(edited.body(), b"b");
    assert_eq!(
        edited.headers().last().map(|h| h.name),
        e.headers().last().map(|h| h.name)
    );

    // Untouched: every header other than the first one's name (replaced, then removed),
    // Content-Length (set by set_body) and Authentication-Info (pushed). With those removed from
    // both, the edited message and the input have the same header lines, and each of them is a
    // field of the input, byte for byte, in input order.
    let touched = [
        first.as_deref().unwrap_or("Authentication-Info"),
        "Content-Length",
        "Authentication-Info",
    ];
    let (mut kept, mut after) = (m.clone(), edited.clone());
    let mut untouched_edit = e.clone();
    for name in touched {
        kept.remove_header(name);
        after.remove_header(name);
        untouched_edit.remove_header(name);
    }
    let kept_head = head_fields(&kept);
    assert_eq!(
        head_fields(&untouched_edit),
        kept_head,
        "an edit changed a header it did not touch"
    );
    assert_eq!(
        head_fields(&after),
        kept_head,
        "a header changed through a re-parse"
    );
    let mut rest = &kept_head[..];
    let mut matched = 0;
    for f in &wire {
        if rest.starts_with(f) {
            rest = &rest[f.len()..];
            matched += 1;
        }
    }
    assert!(
        rest.is_empty() && matched == kept.header_count(),
        "an untouched header is not byte-identical to its input line(s)"
    );
});
