//! Stream framing: pipelining, arbitrary splits, keep-alives, limits and sticky errors.

use sagw_sip::{Frame, KeepAliveKind, Limits, Message, ParseError, StreamFramer};

fn flow(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/data/flows/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn stream() -> (Vec<u8>, Vec<Frame>) {
    let req = flow("oc2007r2-register-request.sip");
    let ok = flow("oc2007r2-register-200ok.sip");
    let with_body = b"MESSAGE sip:a@b SIP/2.0\r\nl: 5\r\nCall-ID: x\r\n\r\nhello".to_vec();
    let mut bytes = Vec::new();
    bytes.extend_from_slice(b"\r\n\r\n");
    bytes.extend_from_slice(&req);
    bytes.extend_from_slice(&ok);
    bytes.extend_from_slice(b"\r\n\r\n");
    bytes.extend_from_slice(&with_body);
    bytes.extend_from_slice(b"\r\n");
    bytes.extend_from_slice(&req);
    let expected = vec![
        Frame::KeepAlive(KeepAliveKind::Ping),
        Frame::Message(Message::parse(&req).unwrap()),
        Frame::Message(Message::parse(&ok).unwrap()),
        Frame::KeepAlive(KeepAliveKind::Ping),
        Frame::Message(Message::parse(&with_body).unwrap()),
        Frame::KeepAlive(KeepAliveKind::Pong),
        Frame::Message(Message::parse(&req).unwrap()),
    ];
    (bytes, expected)
}

fn drain(f: &mut StreamFramer, out: &mut Vec<Frame>) {
    while let Some(frame) = f.next_frame().unwrap() {
        out.push(frame);
    }
}

#[test]
fn pipelined_input_yields_every_frame_in_order() {
    let (bytes, expected) = stream();
    let mut f = StreamFramer::new(Limits::default());
    f.push(&bytes);
    let mut got = Vec::new();
    drain(&mut f, &mut got);
    assert_eq!(got, expected);
    assert_eq!(f.buffered(), 0);
    if let Frame::Message(m) = &got[4] {
        assert_eq!(m.body(), b"hello");
    }
}

#[test]
fn byte_by_byte_and_every_two_way_split_give_the_same_frames() {
    let (bytes, expected) = stream();
    let mut f = StreamFramer::new(Limits::default());
    let mut got = Vec::new();
    for b in &bytes {
        f.push(std::slice::from_ref(b));
        drain(&mut f, &mut got);
    }
    assert_eq!(got, expected);

    for cut in 0..=bytes.len() {
        let mut f = StreamFramer::new(Limits::default());
        let mut got = Vec::new();
        f.push(&bytes[..cut]);
        drain(&mut f, &mut got);
        f.push(&bytes[cut..]);
        drain(&mut f, &mut got);
        assert_eq!(got, expected, "cut at {cut}");
    }
}

#[test]
fn lone_crlf_waits_for_the_next_bytes() {
    let mut f = StreamFramer::new(Limits::default());
    f.push(b"\r\n");
    assert_eq!(f.next_frame(), Ok(None));
    f.push(b"\r\n");
    assert_eq!(
        f.next_frame(),
        Ok(Some(Frame::KeepAlive(KeepAliveKind::Ping)))
    );
    f.push(b"\r\nSIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(
        f.next_frame(),
        Ok(Some(Frame::KeepAlive(KeepAliveKind::Pong)))
    );
    assert!(matches!(f.next_frame(), Ok(Some(Frame::Message(m))) if m.status_code() == Some(200)));
    assert_eq!(f.next_frame(), Ok(None));
}

#[test]
fn content_length_is_mandatory_and_errors_are_sticky() {
    let mut f = StreamFramer::new(Limits::default());
    f.push(b"OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\n\r\n");
    let err = Err(ParseError::MissingHeader("Content-Length"));
    assert_eq!(f.next_frame(), err);
    f.push(b"OPTIONS sip:a@b SIP/2.0\r\nl: 0\r\n\r\n");
    assert_eq!(f.next_frame(), err);
}

#[test]
fn limits_are_enforced_before_the_message_is_complete() {
    let limits = Limits {
        max_message_bytes: 1024,
        ..Limits::default()
    };
    // A header section that never ends.
    let mut f = StreamFramer::new(limits.clone());
    f.push(b"OPTIONS sip:a@b SIP/2.0\r\n");
    let mut result = Ok(None);
    for _ in 0..100 {
        f.push(b"X-Filler: 0123456789\r\n");
        result = f.next_frame();
        if result.is_err() {
            break;
        }
    }
    assert_eq!(result, Err(ParseError::TooLarge { limit: 1024 }));
    assert!(f.buffered() == 0, "buffer released after a fatal error");

    // A Content-Length beyond the limit fails as soon as the head is complete.
    let mut f = StreamFramer::new(limits);
    f.push(b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 5000\r\n\r\nabc");
    assert_eq!(f.next_frame(), Err(ParseError::TooLarge { limit: 1024 }));

    // Garbage is a framing error, not "incomplete".
    let mut f = StreamFramer::new(Limits::default());
    f.push(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(f.next_frame(), Err(ParseError::BadStartLine));
}

#[test]
fn many_small_pipelined_messages_beyond_the_message_limit_are_fine() {
    let limits = Limits {
        max_message_bytes: 256,
        ..Limits::default()
    };
    let msg = b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 0\r\n\r\n";
    let mut f = StreamFramer::new(limits);
    for _ in 0..100 {
        f.push(msg);
    }
    let mut got = Vec::new();
    drain(&mut f, &mut got);
    assert_eq!(got.len(), 100);
}
