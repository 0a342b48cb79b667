//! Per-message costs on the recorded OC 2007 R2 REGISTER (final NTLM leg, 1.4 KB, 14 headers) and
//! its signed 200 OK (1.2 KB, 16 headers).
//!
//! Run: `cargo bench -p sagw-sip --bench parse -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use sagw_sip::{AuthHeader, AuthHeaderBuilder, Message, StreamFramer};

const REGISTER: &[u8] = include_bytes!("../tests/data/flows/oc2007r2-register-request.sip");
const OK_200: &[u8] = include_bytes!("../tests/data/flows/oc2007r2-register-200ok.sip");

/// Every header lookup the MS-SIPAE signer/verifier does on one message.
fn signer_fields(m: &Message) -> usize {
    let cseq = m
        .cseq()
        .map(|c| c.number.len() + c.method.len())
        .unwrap_or(0);
    let from = m
        .from()
        .map(|f| f.uri.len() + f.tag().map_or(0, str::len))
        .unwrap_or(0);
    let to = m
        .to()
        .map(|t| t.uri.len() + t.tag().map_or(0, str::len))
        .unwrap_or(0);
    let pai = m
        .header_values("P-Asserted-Identity")
        .chain(m.header_values("P-Preferred-Identity"))
        .count();
    cseq + from + to + pai + m.call_id().map_or(0, str::len) + m.expires().map_or(0, str::len)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("sip");
    g.bench_function("parse REGISTER", |b| {
        b.iter(|| Message::parse(black_box(REGISTER)))
    });
    g.bench_function("parse 200 OK", |b| {
        b.iter(|| Message::parse(black_box(OK_200)))
    });

    let register = Message::parse(REGISTER).unwrap();
    let ok = Message::parse(OK_200).unwrap();
    let mut out = Vec::with_capacity(4096);
    g.bench_function("serialise REGISTER (unedited)", |b| {
        b.iter(|| {
            out.clear();
            black_box(&register).write_to(&mut out);
            out.len()
        })
    });
    let mut edited = ok.clone();
    edited.remove_header("Authentication-Info");
    edited.insert_header(
        1,
        "Authentication-Info",
        &AuthHeaderBuilder::new("NTLM")
            .quoted("rspauth", "01000000E615438A917661BE64000000")
            .quoted("srand", "9616454F")
            .quoted("snum", "1")
            .build(),
    );
    g.bench_function("serialise 200 OK (auth header replaced)", |b| {
        b.iter(|| {
            out.clear();
            black_box(&edited).write_to(&mut out);
            out.len()
        })
    });
    g.bench_function("signer header lookups REGISTER", |b| {
        b.iter(|| signer_fields(black_box(&register)))
    });
    g.bench_function("signer header lookups 200 OK", |b| {
        b.iter(|| signer_fields(black_box(&ok)))
    });
    g.bench_function("parse Proxy-Authorization (NTLM, 9 params)", |b| {
        let v = register.header("Proxy-Authorization").unwrap();
        b.iter(|| AuthHeader::parse(black_box(v)).map(|h| h.params.len()))
    });
    // The duplicate-parameter check once compared every name with all before it, unbounded: an
    // 8 KB header line of 2 000 parameters cost 2 million comparisons. Now at most MAX_PARAMS (32)
    // per value, so the worst case is 32 look-alike names as long as the line allows.
    let params = |n: usize, prefix: &str| {
        (0..n)
            .map(|i| format!("{prefix}{i:02}=x"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let at_cap = format!("Digest {}", params(32, "p"));
    g.bench_function("auth header: 32 short unknown parameters (the cap)", |b| {
        b.iter(|| AuthHeader::parse(black_box(&at_cap)).map(|h| h.params.len()))
    });
    let look_alike = format!("Digest {}", params(32, &"n".repeat(240)));
    g.bench_function("auth header: 32 look-alike 242-byte names (8 KB)", |b| {
        b.iter(|| AuthHeader::parse(black_box(&look_alike)).map(|h| h.params.len()))
    });
    let hostile = format!("Digest {}", params(2000, "p"));
    g.bench_function("auth header: 2000 parameters in one 8 KB line", |b| {
        b.iter(|| AuthHeader::parse(black_box(&hostile)).map(|h| h.params.len()))
    });
    g.bench_function("edit 200 OK: replace auth header + serialise", |b| {
        b.iter(|| {
            let mut m = black_box(&ok).clone();
            m.set_header(
                "Authentication-Info",
                "NTLM rspauth=\"0\", srand=\"1\", snum=\"2\"",
            );
            m.to_bytes()
        })
    });
    let mut stream = Vec::new();
    for _ in 0..8 {
        stream.extend_from_slice(REGISTER);
        stream.extend_from_slice(b"\r\n\r\n");
    }
    g.bench_function("framer: 8 REGISTERs + 8 pings in 1400-byte segments", |b| {
        b.iter(|| {
            let mut f = StreamFramer::new(Default::default());
            let mut n = 0;
            for seg in black_box(&stream).chunks(1400) {
                f.push(seg);
                while let Ok(Some(_)) = f.next_frame() {
                    n += 1;
                }
            }
            n
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
