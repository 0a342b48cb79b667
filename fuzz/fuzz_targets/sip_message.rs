#![no_main]
//! Message::parse never panics; whatever parses serialises to bytes that parse to the same
//! message (same start line, headers and body), and the accessors and edits never panic.
use libfuzzer_sys::fuzz_target;
use sagw_sip::{Limits, Message, parse_name_addr};

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
    if let Some(first) = m.headers().next() {
        e.set_header(first.name, "x");
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
});
