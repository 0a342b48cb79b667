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
    println!("{} SAs", core.sas().len());
}
