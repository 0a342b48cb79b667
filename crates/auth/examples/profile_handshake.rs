//! A fixed workload for instruction-count profiling (valgrind --tool=callgrind), which stays exact on
//! a busy machine where wall-clock benchmarks do not: N full NTLM sign-ins, then N signed requests.
//! Run: cargo build --release -p sagw-auth --example profile_handshake &&
//!      valgrind --tool=callgrind target/release/examples/profile_handshake 2000

#[path = "../tests/support/mod.rs"]
mod support;

use sagw_auth::Decision;
use support::*;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let core = core();
    let mut rng = rng();
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        let mut c = NtlmClient::new("alice", "alice-pw", &format!("{i:010x}"));
        assert!(matches!(
            c.sign_in(&core, t0(), &mut rng),
            Decision::Authenticated(_)
        ));
        clients.push(c);
    }
    for c in &mut clients {
        let text = c.request("MESSAGE", &[]);
        let m = c.signed(&text, &mut rng);
        assert!(matches!(
            core.on_request(&m, &ctx(), t0(), &mut rng),
            Decision::Authenticated(_)
        ));
    }
    // And the gateway signing a 200 OK to each request.
    let mut signed = 0;
    for c in &mut clients {
        let req = parse(&c.request("MESSAGE", &[]));
        let Some(sa) = core.sa_for_endpoint(&c.aor(), &c.epid, t0()) else {
            continue;
        };
        let mut ok = response_to(&req, 200, "OK", &[]);
        core.sign(
            &mut ok,
            &sa,
            sagw_auth::ChallengeFamily::Www,
            t0(),
            &mut rng,
        )
        .expect("sign");
        signed += 1;
    }
    println!("{} SAs, {signed} responses signed", core.sas().len());
}
