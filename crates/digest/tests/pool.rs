//! Nodes of a pool share the nonce key but not their nonce-count tables: each takes only the
//! nonces it minted and answers another node's as stale.

mod common;

use common::*;
use sagw_digest::{
    Algorithm, DigestConfig, DigestError, DigestResponse, DigestServer, Disposition, Ha1,
    NonceCounter, NonceKey,
};

const USER: &str = "bob";
const PASSWORD: &str = "hunter2";
const URI: &str = "sip:sip.example.com";

fn node(id: u16) -> (DigestServer, NonceCounter) {
    let mut cfg = DigestConfig::new(REALM);
    cfg.algorithms = vec![Algorithm::Sha256];
    cfg.node_id = id;
    let counter = NonceCounter::new(64, cfg.nonce_lifetime);
    (DigestServer::new(cfg, NonceKey::new(KEY)), counter)
}

fn creds(nonce: &str, nc: &str) -> Creds {
    Creds::new(
        Algorithm::Sha256,
        USER,
        REALM,
        PASSWORD,
        "REGISTER",
        URI,
        nonce,
        nc,
        "c0ffee",
    )
}

/// The whole server path: verify, then the nonce-count table.
fn judge(
    srv: &DigestServer,
    counter: &mut NonceCounter,
    c: &Creds,
    t: u64,
) -> Result<(), DigestError> {
    let resp = DigestResponse::from_params(c.pairs())?;
    let ha1 = Ha1::compute(Algorithm::Sha256, USER, REALM, PASSWORD);
    let v = srv.verify(&resp, "REGISTER", &ha1, at(t))?;
    counter.check_verified(&v, "alice", at(t))
}

#[test]
fn a_nonce_of_another_node_is_stale_there_and_replays_nowhere() {
    let (n1, mut c1) = node(1);
    let (n2, mut c2) = node(2);
    let nonce = n1.make_nonce(at(T0), [1; 8]);
    let first = creds(&nonce, "00000001");

    // Node 1 takes its own nonce once; the same Authorization again is a replay there.
    assert_eq!(judge(&n1, &mut c1, &first, T0 + 1), Ok(()));
    assert_eq!(
        judge(&n1, &mut c1, &first, T0 + 2),
        Err(DigestError::Replay)
    );
    // Node 2 recognises the nonce (same key) but did not mint it: stale, never accepted, and its
    // own table is left untouched.
    let e = judge(&n2, &mut c2, &first, T0 + 2).unwrap_err();
    assert_eq!(e, DigestError::OtherNode);
    assert_eq!(e.disposition(), Disposition::ChallengeStale);
    assert!(c2.is_empty());
    // A fresh count on node 1's nonce is no better at node 2.
    assert_eq!(
        judge(&n2, &mut c2, &creds(&nonce, "00000002"), T0 + 3),
        Err(DigestError::OtherNode)
    );

    // The client retries at node 2 with the nonce node 2's stale challenge carried.
    let challenge = n2.challenges(at(T0 + 2), [2; 8], true);
    assert!(challenge[0].ends_with(", stale=true"));
    let fresh = challenge[0]
        .split("nonce=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_owned();
    assert_ne!(fresh, nonce.as_str());
    assert_eq!(
        judge(&n2, &mut c2, &creds(&fresh, "00000001"), T0 + 3),
        Ok(())
    );
    // ... which node 1 in turn answers as stale.
    assert_eq!(
        judge(&n1, &mut c1, &creds(&fresh, "00000002"), T0 + 3),
        Err(DigestError::OtherNode)
    );
}

#[test]
fn other_node_only_after_a_correct_response() {
    let (n1, _) = node(1);
    let (n2, mut c2) = node(2);
    let nonce = n1.make_nonce(at(T0), [3; 8]);
    let wrong = Creds::new(
        Algorithm::Sha256,
        USER,
        REALM,
        "guess",
        "REGISTER",
        URI,
        &nonce,
        "00000001",
        "c0ffee",
    );
    assert_eq!(
        judge(&n2, &mut c2, &wrong, T0 + 1),
        Err(DigestError::WrongResponse)
    );
}

#[test]
fn the_node_id_cannot_be_edited() {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    let (n1, _) = node(1);
    let (n2, mut c2) = node(2);
    let nonce = n1.make_nonce(at(T0), [4; 8]);
    // Bytes 6 and 7 of the time word hold the node id: rewrite 1 as 2.
    let mut raw = URL_SAFE_NO_PAD.decode(nonce.as_str()).unwrap();
    assert_eq!(&raw[6..8], &[1, 0]);
    raw[6] = 2;
    let forged = URL_SAFE_NO_PAD.encode(&raw);
    assert_eq!(
        judge(&n2, &mut c2, &creds(&forged, "00000001"), T0 + 1),
        Err(DigestError::BadNonce)
    );
}

#[test]
fn node_zero_and_node_one_do_not_mix() {
    // Node 0 is also a pool member: the single-gateway format is node 0's nonce.
    let (n0, mut c0) = node(0);
    let (n1, mut c1) = node(1);
    let zero = n0.make_nonce(at(T0), [5; 8]);
    let one = n1.make_nonce(at(T0), [5; 8]);
    assert_eq!(
        judge(&n1, &mut c1, &creds(&zero, "00000001"), T0 + 1),
        Err(DigestError::OtherNode)
    );
    assert_eq!(
        judge(&n0, &mut c0, &creds(&one, "00000001"), T0 + 1),
        Err(DigestError::OtherNode)
    );
    assert_eq!(
        judge(&n0, &mut c0, &creds(&zero, "00000001"), T0 + 1),
        Ok(())
    );
    // Past its lifetime another node's nonce is still reported as another node's.
    let late = T0 + n1.config().nonce_lifetime.as_secs() + 10;
    assert_eq!(
        judge(&n0, &mut c0, &creds(&one, "00000002"), late),
        Err(DigestError::OtherNode)
    );
}
