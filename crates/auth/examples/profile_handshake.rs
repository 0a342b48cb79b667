//! A fixed workload for instruction-count profiling (valgrind --tool=callgrind), which stays exact on
//! a busy machine where wall-clock benchmarks do not: N clients, each signing in (legs 1 and 3), then
//! sending one signed request and receiving one signed 200 OK. Each sign-in starts, as a client's
//! does, with a REGISTER without credentials and its challenge.
//! Run: cargo build --release -p sagw-auth --example profile_handshake &&
//!      valgrind --tool=callgrind target/release/examples/profile_handshake 2000 [STEP_MS]
//!
//! Without STEP_MS every client signs in at the same instant, so the table of recently used final
//! legs only grows (it forgets a final leg one to two 30 s handshake windows after its challenge).
//! With it the clock moves STEP_MS milliseconds per client: at 100 and 1 000 clients the run spans
//! 100 s, and from about the third window on each final leg's claim also purges an old one, as on a
//! gateway signing users in without pause.
//!
//! Each client uses its SA right after signing in: all clients are `alice` (the test store's user),
//! and an identity keeps at most `max_sas_per_identity` SAs, so an SA made 16 sign-ins earlier is
//! gone (each sign-in past the cap ends the least recently used one, as on a busy gateway).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, SystemTime};

use sagw_auth::{ChallengeFamily, Decision, SaHandle, SecurityCore, TransportContext, XorShiftRng};
use sagw_sip::Message;
use support::*;

// One function per kind of message the server judges, kept out of line so that callgrind's
// `--toggle-collect='*server_leg1*'` (`*server_challenge*`, `*server_leg3*`,
// `*server_signed_request*`, `*server_sign*`)
// counts each alone (a pattern matching the core's own functions would also match their closures,
// and each match toggles collection).
#[inline(never)]
fn server_challenge(
    core: &SecurityCore,
    m: &Message,
    ctx: &TransportContext,
    now: SystemTime,
    rng: &mut XorShiftRng,
) -> Decision {
    // Distinct bodies: identical functions would be merged into one symbol.
    std::hint::black_box(0);
    core.on_request(m, ctx, now, rng)
}

#[inline(never)]
fn server_leg1(
    core: &SecurityCore,
    m: &Message,
    ctx: &TransportContext,
    now: SystemTime,
    rng: &mut XorShiftRng,
) -> Decision {
    // Distinct bodies: identical functions would be merged into one symbol.
    std::hint::black_box(1);
    core.on_request(m, ctx, now, rng)
}

#[inline(never)]
fn server_leg3(
    core: &SecurityCore,
    m: &Message,
    ctx: &TransportContext,
    now: SystemTime,
    rng: &mut XorShiftRng,
) -> Decision {
    // Distinct bodies: identical functions would be merged into one symbol.
    std::hint::black_box(2);
    core.on_request(m, ctx, now, rng)
}

#[inline(never)]
fn server_signed_request(
    core: &SecurityCore,
    m: &Message,
    ctx: &TransportContext,
    now: SystemTime,
    rng: &mut XorShiftRng,
) -> Decision {
    // Distinct bodies: identical functions would be merged into one symbol.
    std::hint::black_box(3);
    core.on_request(m, ctx, now, rng)
}

#[inline(never)]
fn server_sign(
    core: &SecurityCore,
    m: &mut Message,
    sa: &SaHandle,
    now: SystemTime,
    rng: &mut XorShiftRng,
) {
    core.sign(m, sa, ChallengeFamily::Www, now, rng)
        .expect("sign");
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let step_ms: u64 = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(0);
    let core = core();
    let mut rng = rng();
    let ctx = ctx();
    let mut signed = 0;
    for i in 0..n {
        let now = t0() + Duration::from_millis(step_ms * i as u64);
        let mut c = NtlmClient::new("alice", "alice-pw", &format!("{i:010x}"));
        let bare = parse(&c.request("REGISTER", &[]));
        assert!(matches!(
            server_challenge(&core, &bare, &ctx, now, &mut rng),
            Decision::Challenge(_)
        ));
        let leg1 = c.leg1("REGISTER");
        let Decision::Continue(challenge) = server_leg1(&core, &leg1, &ctx, now, &mut rng) else {
            panic!("leg 2 expected");
        };
        let leg3 = c.leg3("REGISTER", &challenge, now, &mut rng);
        assert!(matches!(
            server_leg3(&core, &leg3, &ctx, now, &mut rng),
            Decision::Authenticated(_)
        ));
        let text = c.request("MESSAGE", &[]);
        let m = c.signed(&text, &mut rng);
        assert!(matches!(
            server_signed_request(&core, &m, &ctx, now, &mut rng),
            Decision::Authenticated(_)
        ));
        // And the gateway signing a 200 OK to a request of the client's.
        let req = parse(&c.request("MESSAGE", &[]));
        let sa = core
            .sa_for_endpoint(&c.aor(), &c.epid, now)
            .expect("the SA just made");
        let mut ok = response_to(&req, 200, "OK", &[]);
        server_sign(&core, &mut ok, &sa, now, &mut rng);
        signed += 1;
    }
    println!(
        "{} SAs, {signed} responses signed, {} final legs remembered",
        core.sas().len(),
        core.sas().recent_final_legs()
    );
}
