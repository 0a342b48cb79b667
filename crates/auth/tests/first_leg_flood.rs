//! Issue 12, point 6, in the security core: 100 000 NTLM first legs from 10 000 addresses leave
//! nothing behind (no SA, no handshake table, no heap growth, measured by a counting allocator),
//! every one is answered with a CHALLENGE (no per-source or global cap), and real users at those
//! addresses sign in meanwhile and afterwards. This file holds one test, so that the allocator
//! counts only its work.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use sagw_auth::{Decision, Scheme};
use sagw_sip::Message;
use support::*;

/// Live heap bytes.
static LIVE: AtomicIsize = AtomicIsize::new(0);

struct Counting;

// SAFETY: forwards to the system allocator and only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller upholds `alloc`'s contract, which System's shares.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static A: Counting = Counting;

const ADDRESSES: u32 = 10_000;
const LEGS: u32 = 100_000;

fn address(i: u32) -> String {
    let a = i % ADDRESSES;
    format!("10.{}.{}.{}:5060", (a >> 16) & 255, (a >> 8) & 255, a & 255)
}

/// One first leg per address, each from its own endpoint; every hundredth with an 8 000-character
/// epid (a header line may carry 8 KB), which the old pending table kept per handshake and which
/// `max_epid_len` now refuses outright.
fn first_legs() -> Vec<Message> {
    let mut mallory = NtlmClient::new("alice", "x", "");
    (0..ADDRESSES)
        .map(|a| {
            mallory.epid = if a % 100 == 0 {
                format!("{a:08x}{}", "e".repeat(8_000 - 8))
            } else {
                format!("{a:010x}")
            };
            mallory.leg1("REGISTER")
        })
        .collect()
}

/// Sends `range` first legs (the i-th from address i mod 10 000) and checks each is challenged.
fn flood(core: &sagw_auth::SecurityCore, legs: &[Message], range: std::ops::Range<u32>) {
    let mut rng = rng();
    let contexts: Vec<_> = (0..ADDRESSES).map(|a| ctx_from(&address(a))).collect();
    for i in range {
        let a = (i % ADDRESSES) as usize;
        match core.on_request(&legs[a], &contexts[a], t0(), &mut rng) {
            Decision::Continue(c) => assert!(
                challenge_param(&c, "NTLM", "gssapi-data").is_some(),
                "leg {i}: a CHALLENGE"
            ),
            // The 8 000-character epids are over `max_epid_len`: refused before any work.
            Decision::Reject {
                status: 400,
                reason: sagw_auth::Reason::EpidTooLong,
                ..
            } if a.is_multiple_of(100) => {}
            other => panic!("first leg {i} from {}: {other:?}", address(i)),
        }
    }
}

#[test]
fn a_flood_of_first_legs_from_many_addresses_keeps_nothing_and_users_still_sign_in() {
    let core = core();
    let legs = first_legs();
    let mut rng = rng();
    // One leg first: the challenge key is drawn (once) at the first first leg.
    flood(&core, &legs, 0..1);

    let half = LEGS / 2;
    let before = LIVE.load(Ordering::Relaxed);
    flood(&core, &legs, 1..half);
    let grown = LIVE.load(Ordering::Relaxed) - before;
    assert!(
        grown < 4096,
        "{half} first legs left {grown} heap bytes behind"
    );
    assert!(core.sas().is_empty());
    assert_eq!(core.sas().recent_final_legs(), 0);

    // A real user behind one of the flooding addresses signs in mid-flood.
    let mut alice = NtlmClient::new("alice", "alice-pw", "a1a1a1a1a1");
    assert!(matches!(
        alice.sign_in_from(&core, &ctx_from(&address(7)), t0(), &mut rng),
        Decision::Authenticated(_)
    ));

    let before = LIVE.load(Ordering::Relaxed);
    flood(&core, &legs, half..LEGS);
    let grown = LIVE.load(Ordering::Relaxed) - before;
    assert!(
        grown < 4096,
        "{} first legs left {grown} heap bytes behind",
        LEGS - half
    );
    // Only what the real sign-in made: its SA, and its opaque remembered for one-time use.
    assert_eq!(core.sas().len(), 1);
    assert_eq!(core.sas().recent_final_legs(), 1);

    // And another at once, at the address that sent the last leg.
    let mut bob = NtlmClient::new("bob", "bob-pw", "b2b2b2b2b2");
    assert!(matches!(
        bob.sign_in_from(&core, &ctx_from(&address(LEGS - 1)), t0(), &mut rng),
        Decision::Authenticated(_)
    ));
    let snap = core.counters().snapshot();
    let ntlm = snap.scheme(Scheme::Ntlm);
    // Every hundredth leg (its epid over `max_epid_len`) was refused before a handshake started.
    assert_eq!(ntlm.handshakes_started, u64::from(LEGS - LEGS / 100) + 2);
    assert_eq!(ntlm.handshakes_completed, 2);
    assert!(ntlm.handshake_failures.is_empty(), "{snap:?}");
}
