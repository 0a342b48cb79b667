#![no_main]
//! The whole proxy with authentication on (issue 12, "What it must show", last bullet): the world
//! of `sagw_fuzz::world` (the real `Edge` + `SecurityStage` over a core `build_core` made from a
//! parsed config, alice signed in with a real NTLM handshake) fed a sequence of messages from alice
//! (as sent, or signed by the harness with her SA), from mallory (another client, never
//! authenticated) and from the next hop, with time moving on and timers firing between them. The
//! invariants are the world's (see `fuzz/src/world.rs`): client messages go only to the next hop,
//! no signature with alice's SA outside her flow, no relay of unauthenticated messages.
//!
//! Input format: chunks separated by the byte 0xFF. A chunk is one control byte and a SIP message:
//! * bits 0-1: the sender: 0 alice (sent as is), 1 alice (signed by the harness with her SA, as her
//!   client would), 2 mallory, 3 the next hop;
//! * bits 2-4: time that passes before it (timers fire): `sagw_fuzz::STEPS`;
//! * bits 5-7: how many times it is sent back to back: 1, 1, 1, 1, 2, 3, 8, 40 (a flood in one
//!   chunk: the per-source handshake cap is 32).
//!
//! Before parsing, the placeholders of `World::substitute` are filled in (`${epid}`, `${opaque}`,
//! `${via}`, `${dialog}`, `${rr}`, `${route}`, `${contact}`: what that sender could know), so a
//! next hop or a client can answer the requests the edge sent it and follow a dialog, which random
//! bytes never would. Seeds: `fuzz/seeds/proxy_auth/` (`fuzz/seeds/make_seeds.py`); dictionary:
//! `fuzz/dict/proxy_auth.dict`; inputs that broke an invariant: `fuzz/regressions/proxy_auth/`.
//! `PROXY_AUTH_TRACE=1` prints every message in and out (`cargo fuzz run proxy_auth FILE`).

use libfuzzer_sys::fuzz_target;
use sagw_fuzz::world::{Who, World};
use sagw_fuzz::{STEPS, chunks};
use sagw_sip::Message;

const REPEATS: [usize; 8] = [1, 1, 1, 1, 2, 3, 8, 40];

/// One chunk of the input.
fn step(w: &mut World, chunk: &[u8]) {
    let Some((&ctl, body)) = chunk.split_first() else {
        return;
    };
    let (who, signed) = match ctl & 3 {
        0 => (Who::Alice, false),
        1 => (Who::Alice, true),
        2 => (Who::Mallory, false),
        _ => (Who::Hop, false),
    };
    w.advance(STEPS[usize::from((ctl >> 2) & 7)]);
    let repeat = REPEATS[usize::from(ctl >> 5)];
    let bytes = w.substitute(who, body);
    let Ok(mut m) = Message::parse(&bytes) else {
        return;
    };
    if signed {
        w.sign_as_alice(&mut m);
    }
    for _ in 1..repeat {
        w.inject(who, signed, m.clone());
    }
    w.inject(who, signed, m);
}

fuzz_target!(|data: &[u8]| {
    let mut w = World::new();
    for chunk in chunks(data) {
        step(&mut w, chunk);
    }
    // Whatever is still pending runs out.
    w.advance(std::time::Duration::from_secs(300));
});
