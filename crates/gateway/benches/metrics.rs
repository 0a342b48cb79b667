//! Cost of the metrics registry on the per-message path: `message()` for a request and a response,
//! `transaction()`, `limit()`, `dropped()` (beside the formatted label it replaced), `message()`
//! from two threads at once, and a scrape (`render()`).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use sagw_gateway::metrics::Metrics;
use sagw_sip::Message;

const INVITE: &[u8] = b"INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.1;branch=z9hG4bK1\r\n\
Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a\r\nTo: <sip:bob@example.com>\r\nCall-ID: c1\r\n\
CSeq: 1 INVITE\r\nContact: <sip:alice@10.0.0.1;transport=tcp>\r\nContent-Length: 0\r\n\r\n";

const OK: &[u8] = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP 10.0.0.1;branch=z9hG4bK1\r\n\
From: <sip:alice@example.com>;tag=a\r\nTo: <sip:bob@example.com>;tag=b\r\nCall-ID: c1\r\n\
CSeq: 1 INVITE\r\nContact: <sip:bob@10.0.0.2;transport=tcp>\r\nContent-Length: 0\r\n\r\n";

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("metrics");
    let m = Metrics::default();
    let req = Message::parse(INVITE).unwrap();
    let resp = Message::parse(OK).unwrap();
    g.bench_function("message_request", |b| {
        b.iter(|| m.message(black_box("in"), black_box(&req)))
    });
    g.bench_function("message_response", |b| {
        b.iter(|| m.message(black_box("out"), black_box(&resp)))
    });
    g.bench_function("transaction", |b| {
        b.iter(|| {
            m.transaction(
                black_box("INVITE"),
                black_box(200),
                black_box(Duration::from_micros(1234)),
            )
        })
    });
    g.bench_function("limit", |b| b.iter(|| m.limit(black_box("connections"))));
    // A dropped message (a flood of retransmissions or stray responses), counted in its table,
    // and the way it was counted before: a label formatted and looked up under the mutex.
    g.bench_function("dropped", |b| {
        b.iter(|| m.dropped(black_box(sagw_proxy::DropReason::Retransmission)))
    });
    g.bench_function("dropped_through_a_formatted_label", |b| {
        b.iter(|| {
            m.inc(
                "sagw_dropped_total",
                format!(
                    "reason=\"{}\"",
                    black_box(sagw_proxy::DropReason::Retransmission).label()
                ),
                1,
            )
        })
    });
    // Two threads calling message() on the same registry: the time per call as seen by one of them.
    let shared = Arc::new(Metrics::default());
    g.bench_function("message_request_2_threads", |b| {
        b.iter_custom(|iters| {
            let other = {
                let m = shared.clone();
                std::thread::spawn(move || {
                    let req = Message::parse(INVITE).unwrap();
                    for _ in 0..iters {
                        m.message(black_box("in"), black_box(&req));
                    }
                })
            };
            let start = Instant::now();
            for _ in 0..iters {
                shared.message(black_box("in"), black_box(&req));
            }
            let t = start.elapsed();
            other.join().unwrap();
            t
        })
    });
    g.bench_function("render", |b| b.iter(|| black_box(m.render())));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
