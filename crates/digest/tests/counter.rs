//! Nonce-count replay table: window semantics, expiry, bounded memory.

mod common;

use std::time::Duration;

use common::*;
use sagw_digest::{Algorithm, DigestError, NC_WINDOW, NonceCounter};

const LIFE: Duration = Duration::from_secs(300);

fn nonce(issued: u64, salt: u8) -> String {
    server(&[Algorithm::Md5])
        .make_nonce(at(issued), [salt; 8])
        .to_string()
}

#[test]
fn each_pair_accepted_once_in_any_order_within_window() {
    let mut c = NonceCounter::new(8, LIFE);
    let n = nonce(T0, 1);
    let now = at(T0 + 1);
    for nc in [1, 3, 2, 10, 5] {
        c.check_and_record(&n, nc, "alice", now).unwrap();
    }
    for nc in [1, 2, 3, 5, 10] {
        assert_eq!(
            c.check_and_record(&n, nc, "alice", now),
            Err(DigestError::Replay),
            "nc {nc}"
        );
    }
    c.check_and_record(&n, 4, "alice", now).unwrap();
}

#[test]
fn window_edges() {
    let mut c = NonceCounter::new(8, LIFE);
    let n = nonce(T0, 2);
    let now = at(T0 + 1);
    c.check_and_record(&n, 100, "alice", now).unwrap();
    // 100 - 63 is the oldest count still inside a 64-wide window; 100 - 64 is outside.
    c.check_and_record(&n, 100 - (NC_WINDOW - 1), "alice", now)
        .unwrap();
    assert_eq!(
        c.check_and_record(&n, 100 - NC_WINDOW, "alice", now),
        Err(DigestError::NcOutOfWindow)
    );
    assert_eq!(
        c.check_and_record(&n, 30, "alice", now),
        Err(DigestError::NcOutOfWindow)
    );
    // A jump wider than the window forgets everything below it.
    c.check_and_record(&n, 1000, "alice", now).unwrap();
    c.check_and_record(&n, 999, "alice", now).unwrap();
    assert_eq!(
        c.check_and_record(&n, 100, "alice", now),
        Err(DigestError::NcOutOfWindow)
    );
    assert_eq!(
        c.check_and_record(&n, 999, "alice", now),
        Err(DigestError::Replay)
    );
    // Shift by exactly the window width keeps only the new maximum.
    c.check_and_record(&n, 1000 + NC_WINDOW, "alice", now)
        .unwrap();
    assert_eq!(
        c.check_and_record(&n, 1000, "alice", now),
        Err(DigestError::NcOutOfWindow)
    );
    c.check_and_record(&n, 1001, "alice", now).unwrap();
    assert_eq!(c.check_and_record(&n, u32::MAX, "alice", now), Ok(()));
    assert_eq!(
        c.check_and_record(&n, u32::MAX, "alice", now),
        Err(DigestError::Replay)
    );
}

#[test]
fn nonces_are_independent() {
    let mut c = NonceCounter::new(8, LIFE);
    let (a, b) = (nonce(T0, 3), nonce(T0, 4));
    c.check_and_record(&a, 1, "alice", at(T0)).unwrap();
    c.check_and_record(&b, 1, "alice", at(T0)).unwrap();
    assert_eq!(c.len(), 2);
    assert_eq!(
        c.check_and_record(&a, 1, "alice", at(T0)),
        Err(DigestError::Replay)
    );
}

/// The table keys a nonce by its whole text: nonces one character apart, at its start, middle
/// or end, are counted apart.
#[test]
fn nonces_one_character_apart_are_independent() {
    let mut c = NonceCounter::new(8, LIFE);
    let n = nonce(T0, 11);
    // `A` and `E` carry zero in the two bits the last character leaves unused, so every variant
    // still decodes.
    let variant = |i: usize| {
        let mut b = n.clone().into_bytes();
        b[i] = if b[i] == b'A' { b'E' } else { b'A' };
        String::from_utf8(b).unwrap()
    };
    let all = [
        n.clone(),
        variant(0),
        variant(n.len() / 2),
        variant(n.len() - 1),
    ];
    for v in &all {
        c.check_and_record(v, 1, "alice", at(T0 + 1)).unwrap();
    }
    assert_eq!(c.len(), all.len());
    for v in &all {
        assert_eq!(
            c.check_and_record(v, 1, "alice", at(T0 + 1)),
            Err(DigestError::Replay)
        );
    }
}

#[test]
fn expired_entries_are_dropped_and_expired_nonces_refused() {
    let mut c = NonceCounter::new(8, LIFE);
    let old = nonce(T0, 5);
    c.check_and_record(&old, 1, "alice", at(T0)).unwrap();
    assert_eq!(c.len(), 1);
    // Still tracked at the last valid second.
    assert_eq!(
        c.check_and_record(&old, 1, "alice", at(T0 + 300)),
        Err(DigestError::Replay)
    );
    // One second later the nonce cannot verify any more: the entry goes, the nonce is stale.
    let fresh = nonce(T0 + 301, 6);
    c.check_and_record(&fresh, 1, "alice", at(T0 + 301))
        .unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(
        c.check_and_record(&old, 2, "alice", at(T0 + 301)),
        Err(DigestError::Stale)
    );
    assert_eq!(c.len(), 1);
}

#[test]
fn eviction_never_reopens_a_live_nonce() {
    let mut c = NonceCounter::new(2, LIFE);
    let n1 = nonce(T0, 7);
    let n2 = nonce(T0 + 10, 8);
    let n3 = nonce(T0 + 20, 9);
    c.check_and_record(&n1, 1, "alice", at(T0 + 20)).unwrap();
    c.check_and_record(&n2, 1, "alice", at(T0 + 20)).unwrap();
    // Full: n1 (closest to expiry) is evicted while still valid.
    c.check_and_record(&n3, 1, "alice", at(T0 + 20)).unwrap();
    assert_eq!(c.len(), 2);
    // Replaying n1 must not succeed just because it was forgotten: it is reported stale, the
    // client gets a fresh nonce.
    assert_eq!(
        c.check_and_record(&n1, 1, "alice", at(T0 + 21)),
        Err(DigestError::Stale)
    );
    assert_eq!(
        c.check_and_record(&n1, 2, "alice", at(T0 + 21)),
        Err(DigestError::Stale)
    );
    // Tracked nonces keep working; a nonce issued after the watermark is admitted.
    assert_eq!(
        c.check_and_record(&n2, 1, "alice", at(T0 + 21)),
        Err(DigestError::Replay)
    );
    c.check_and_record(&n3, 2, "alice", at(T0 + 21)).unwrap();
    let n4 = nonce(T0 + 21, 10);
    c.check_and_record(&n4, 1, "alice", at(T0 + 21)).unwrap();
    assert_eq!(c.len(), 2);
}

#[test]
fn memory_stays_bounded_under_many_nonces() {
    let srv = server(&[Algorithm::Md5]);
    let mut c = NonceCounter::new(64, LIFE);
    // 10 000 logins, one every 10 ms, each on its own nonce used 5 ms after issue.
    for i in 0..10_000u64 {
        let issued = at(T0) + Duration::from_millis(10 * i);
        let n = srv.make_nonce(issued, i.to_le_bytes());
        c.check_and_record(&n, 1, "alice", issued + Duration::from_millis(5))
            .unwrap();
        assert!(c.len() <= 64);
    }
}

#[test]
fn table_turnover_faster_than_issue_resolution_is_refused_as_stale() {
    // Overload: more first uses of same-instant nonces than the table holds. Once a live entry
    // is evicted, other never-seen nonces from that instant cannot be told apart from it, so they
    // are refused (stale) rather than risk admitting a replay.
    let srv = server(&[Algorithm::Md5]);
    let mut c = NonceCounter::new(4, LIFE);
    let mut results = Vec::new();
    for salt in 0..8u8 {
        let n = srv.make_nonce(at(T0), [salt; 8]);
        results.push(c.check_and_record(&n, 1, "alice", at(T0)));
    }
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 5);
    assert!(results[5..].iter().all(|r| *r == Err(DigestError::Stale)));
    // A nonce issued a millisecond later is admitted again.
    let later = srv.make_nonce(at(T0) + Duration::from_millis(1), [99; 8]);
    c.check_and_record(&later, 1, "alice", at(T0 + 1)).unwrap();
}

#[test]
fn foreign_nonces_are_refused() {
    let mut c = NonceCounter::new(8, LIFE);
    assert_eq!(
        c.check_and_record("abc", 1, "alice", at(T0)),
        Err(DigestError::BadNonce)
    );
    let long = "A".repeat(100_000);
    assert_eq!(
        c.check_and_record(&long, 1, "alice", at(T0)),
        Err(DigestError::BadNonce)
    );
    assert!(c.is_empty());
}

/// A counter made at a restart: the nonces issued before it are stale, those issued after it are
/// tracked as usual.
#[test]
fn nonces_issued_before_a_start_are_stale() {
    let mut c = NonceCounter::new(8, LIFE).stale_before(at(T0));
    let before = nonce(T0 - 10, 7);
    let after = nonce(T0 + 1, 8);
    let now = at(T0 + 2);
    assert_eq!(
        c.check_and_record(&before, 1, "alice", now),
        Err(DigestError::Stale)
    );
    assert_eq!(c.check_and_record(&after, 1, "alice", now), Ok(()));
    assert_eq!(
        c.check_and_record(&after, 1, "alice", now),
        Err(DigestError::Replay)
    );
}

/// An owner over its share evicts its own oldest nonce, never another owner's: a user who fetches
/// a fresh nonce for every request cannot make the others' nonces stale.
#[test]
fn an_owner_over_its_share_evicts_only_its_own_nonces() {
    let srv = server(&[Algorithm::Md5]);
    let mut c = NonceCounter::new(100, LIFE).with_owner_share(10);
    let alice = nonce(T0, 1);
    c.check_and_record(&alice, 1, "alice", at(T0)).unwrap();
    let mut first_of_mallory = None;
    for i in 1..=1000u64 {
        let issued = at(T0) + Duration::from_millis(10 * i);
        let n = srv.make_nonce(issued, i.to_le_bytes());
        c.check_and_record(&n, 1, "mallory", issued).unwrap();
        first_of_mallory.get_or_insert(n);
        assert!(c.len() <= 11, "{} entries", c.len());
    }
    // alice's nonce is still tracked: her next count is taken, a replay is not.
    c.check_and_record(&alice, 2, "alice", at(T0 + 11)).unwrap();
    assert_eq!(
        c.check_and_record(&alice, 1, "alice", at(T0 + 11)),
        Err(DigestError::Replay)
    );
    // mallory's first nonce was evicted while valid: it is stale for her, never open again.
    let first = first_of_mallory.unwrap();
    assert_eq!(
        c.check_and_record(&first, 2, "mallory", at(T0 + 11)),
        Err(DigestError::Stale)
    );
    // Other users still get new nonces tracked, up to the table.
    c.check_and_record(&nonce(T0 + 11, 2), 1, "bob", at(T0 + 11))
        .unwrap();
}

/// The counts of one nonce are kept per owner: someone who saw alice's nonce and used its counts
/// with credentials of their own does not use hers up.
#[test]
fn one_nonce_is_counted_apart_for_each_owner() {
    let mut c = NonceCounter::new(8, LIFE);
    let n = nonce(T0, 3);
    for nc in 1..=5 {
        c.check_and_record(&n, nc, "mallory", at(T0 + 1)).unwrap();
    }
    for nc in 1..=5 {
        c.check_and_record(&n, nc, "alice", at(T0 + 1)).unwrap();
    }
    assert_eq!(
        c.check_and_record(&n, 3, "alice", at(T0 + 1)),
        Err(DigestError::Replay)
    );
}

/// An owner evicts its oldest *recorded* nonce, which may be younger than one it keeps. When the
/// older one expires and the owner holds nothing more, the watermark must stay until the evicted
/// nonce expires too, or a captured request on it is taken again.
#[test]
fn an_owners_watermark_outlives_its_entries_while_its_nonces_verify() {
    let mut c = NonceCounter::new(8, LIFE).with_owner_share(1);
    let younger = nonce(T0 + 10, 4);
    let older = nonce(T0 + 5, 5);
    c.check_and_record(&younger, 1, "alice", at(T0 + 10))
        .unwrap();
    // Over the share: `younger` (recorded first) goes, under alice's watermark.
    c.check_and_record(&older, 1, "alice", at(T0 + 10)).unwrap();
    // `older` expires at T0 + 305, `younger` at T0 + 310. Another user's request makes the table
    // drop `older`: alice holds nothing now.
    c.check_and_record(&nonce(T0 + 306, 6), 1, "bob", at(T0 + 306))
        .unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(
        c.check_and_record(&younger, 1, "alice", at(T0 + 307)),
        Err(DigestError::Stale)
    );
    // Once `younger` can no longer verify, nothing is held for alice: a fresh nonce is tracked.
    c.check_and_record(&nonce(T0 + 311, 7), 1, "alice", at(T0 + 311))
        .unwrap();
}

/// A share kept empty for its watermark goes once the watermark's nonces expire, whether or not
/// its owner comes back: dormant accounts leave nothing behind.
#[test]
fn an_empty_share_goes_when_its_watermark_expires() {
    let mut c = NonceCounter::new(8, LIFE).with_owner_share(1);
    c.check_and_record(&nonce(T0 + 10, 4), 1, "alice", at(T0 + 10))
        .unwrap();
    c.check_and_record(&nonce(T0 + 5, 5), 1, "alice", at(T0 + 10))
        .unwrap();
    // alice's last entry expires at T0 + 305; her watermark (T0 + 10) is needed until T0 + 310.
    c.check_and_record(&nonce(T0 + 306, 6), 1, "bob", at(T0 + 306))
        .unwrap();
    assert_eq!(
        c.owners(),
        2,
        "alice's empty share is kept for its watermark"
    );
    c.check_and_record(&nonce(T0 + 311, 7), 1, "bob", at(T0 + 311))
        .unwrap();
    assert_eq!(c.owners(), 1, "only bob's share is left");
}

/// Owners compare without ASCII case, as identities do: an operator who rewrites alice's identity
/// in another case gives her no second, empty share on which a captured request is taken again.
#[test]
fn owners_compare_without_ascii_case() {
    let mut c = NonceCounter::new(8, LIFE);
    let n = nonce(T0, 3);
    c.check_and_record(&n, 1, "Alice@example.com", at(T0 + 1))
        .unwrap();
    assert_eq!(
        c.check_and_record(&n, 1, "alice@EXAMPLE.com", at(T0 + 1)),
        Err(DigestError::Replay)
    );
}
