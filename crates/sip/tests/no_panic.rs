//! Deterministic robustness sweep (complements the cargo-fuzz targets, runs in every `cargo
//! test`): every prefix of every corpus message and every single-byte substitution with a
//! grammar-relevant byte must parse or fail with an error (never panic), and whatever parses must
//! round-trip and survive the accessors, the auth grammar and the stream framer.

use sagw_sip::{AuthHeader, Limits, Message, StreamFramer, parse_challenges, parse_name_addr};

fn corpus() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for dir in ["rfc4475", "flows"] {
        let path = format!("{}/tests/data/{dir}", env!("CARGO_MANIFEST_DIR"));
        let mut files: Vec<_> = std::fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "dat" || e == "sip"))
            .collect();
        files.sort();
        out.extend(files.iter().map(|p| std::fs::read(p).unwrap()));
    }
    out
}

fn exercise(input: &[u8]) {
    let Ok(m) = Message::parse(input) else {
        return;
    };
    let bytes = m.to_bytes();
    // Exactly the input after leading CRLFs, possibly without trailing datagram bytes.
    let mut start = 0;
    while input.get(start..start + 2) == Some(b"\r\n") {
        start += 2;
    }
    assert!(input[start..].starts_with(&bytes));
    let again = Message::parse(&bytes).unwrap();
    assert!(again.headers().eq(m.headers()));
    let _ = (
        m.cseq(),
        m.from(),
        m.to(),
        m.call_id(),
        m.expires(),
        m.validate(),
    );
    for h in m.headers() {
        let _ = parse_name_addr(h.value);
        if let Ok(a) = AuthHeader::parse(h.value) {
            assert_eq!(
                AuthHeader::parse(&a.to_string()).unwrap().params.len(),
                a.params.len()
            );
        }
        let _ = parse_challenges(h.value);
        let _ = m.header_values(h.name).count();
    }
}

#[test]
fn prefixes_and_byte_substitutions_never_panic() {
    const BYTES: &[u8] = b"\0\r\n \t:;,\"<>\\=\xff";
    let (mut parsed, mut mutants) = (0usize, 0usize);
    for msg in corpus() {
        for cut in 0..=msg.len() {
            exercise(&msg[..cut]);
        }
        // Two substitutions per position, rotating through BYTES, keep the sweep fast enough for
        // a debug build while every byte value still lands in every kind of field.
        let mut m = msg.clone();
        for i in 0..msg.len() {
            for k in [i, i * 5 + 3] {
                m[i] = BYTES[k % BYTES.len()];
                mutants += 1;
                if Message::parse(&m).is_ok() {
                    parsed += 1;
                }
                exercise(&m);
            }
            m[i] = msg[i];
        }
    }
    // The sweep must reach the success paths, not only the error paths.
    assert!(
        parsed * 3 > mutants,
        "only {parsed} of {mutants} mutants parsed"
    );
    eprintln!("{parsed} of {mutants} mutants parsed");
}

#[test]
fn framer_survives_the_corpus_concatenated_in_odd_segments() {
    let all: Vec<u8> = corpus().concat();
    for seg in [1, 7, 64, 1500] {
        let mut f = StreamFramer::new(Limits::default());
        for chunk in all.chunks(seg) {
            f.push(chunk);
            while let Ok(Some(_)) = f.next_frame() {}
        }
    }
}
