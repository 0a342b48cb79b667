//! verify() per algorithm (nonce MAC + response), plus challenge minting and the replay table.
//! Quick run: cargo bench -p sagw-digest --bench verify -- --warm-up-time 1 --measurement-time 3

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use sagw_digest::client::{Challenge, authorize, parse_header};
use sagw_digest::{
    Algorithm, DigestConfig, DigestResponse, DigestServer, Ha1, Nonce, NonceCounter, NonceKey,
};

const REALM: &str = "sip.example.com";
const URI: &str = "sip:sip.example.com;transport=tls";

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000)
}

fn server() -> DigestServer {
    let mut cfg = DigestConfig::new(REALM);
    cfg.algorithms = vec![Algorithm::Sha512_256, Algorithm::Sha256, Algorithm::Md5];
    DigestServer::new(cfg, NonceKey::new([0x42; 32]))
}

fn bench_verify(c: &mut Criterion) {
    let srv = server();
    let challenges = srv.challenges(t0(), [1; 8], false);
    for value in &challenges {
        let hp = parse_header(value).expect("own challenge parses");
        let ch = Challenge::from_params(hp.pairs()).expect("own challenge is valid");
        let ha1 = Ha1::compute(ch.algorithm, "alice", REALM, "secret");
        let auth =
            authorize(&ch, "alice", &ha1, "REGISTER", URI, "0a4f113b", 1).expect("matching HA1");
        let params: Vec<(String, String)> = auth
            .params()
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect();
        let now = t0() + Duration::from_secs(1);
        c.bench_function(&format!("verify/{}", ch.algorithm), |b| {
            b.iter(|| {
                let resp = DigestResponse::from_params(
                    params.iter().map(|(n, v)| (n.as_str(), v.as_str())),
                )
                .expect("valid");
                black_box(srv.verify(black_box(&resp), "REGISTER", &ha1, now)).expect("ok")
            })
        });
    }
    c.bench_function("challenges/3-algorithms", |b| {
        b.iter(|| black_box(srv.challenges(black_box(t0()), [7; 8], false)))
    });
    c.bench_function("nonce_counter/record-fresh-10k-table", |b| {
        let mut counter = NonceCounter::new(10_000, Duration::from_secs(300));
        let nonces: Vec<Nonce> = (0..20_000u64)
            .map(|i| srv.make_nonce(t0() + Duration::from_millis(i), i.to_le_bytes()))
            .collect();
        let mut i = 0usize;
        let now = t0() + Duration::from_secs(30);
        b.iter(|| {
            // Cycles through 20k nonces against a 10k table: every call inserts and evicts.
            let n = &nonces[i % nonces.len()];
            i += 1;
            let nc = u32::try_from(i / nonces.len() + 1).unwrap_or(u32::MAX);
            black_box(counter.check_and_record(n, nc, "alice", now)).ok()
        })
    });
}

criterion_group!(benches, bench_verify);
criterion_main!(benches);
