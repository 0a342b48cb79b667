//! The store client against real Redis servers: one server, and a Cluster of three masters.
//! Without redis-server these tests print SKIPPED, except under CI=true where they fail.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sagw_auth::{KerberosReplayRegistry, ReplayCheck};
use sagw_state::testing::{RedisCluster, RedisServer};
use sagw_state::{
    Checkpoint, CheckpointOutcome, ClaimAt, EventReceiver, NodeHold, PoolKey, PublishOutcome,
    RevokeOutcome, SaProgress, Store, StoreConfig, StoreError, StoreEvent, StoreReplayRegistry,
};

fn config(urls: Vec<String>, cluster: bool) -> StoreConfig {
    StoreConfig {
        urls,
        cluster,
        password_file: None,
        connect_timeout: Duration::from_millis(500),
        command_timeout: Duration::from_millis(500),
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// The next event that is not `Resubscribed`, within `within`.
async fn next_event(rx: &mut EventReceiver, within: Duration) -> StoreEvent {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(StoreEvent::Resubscribed)) => continue,
            Ok(Some(e)) => return e,
            Ok(None) => panic!("event stream ended"),
            Err(_) => panic!("no event within {within:?}"),
        }
    }
}

/// Waits for the subscription to be live.
async fn live(rx: &mut EventReceiver) {
    match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
        Ok(Some(StoreEvent::Resubscribed)) => {}
        other => panic!("expected the subscription to come up, got {other:?}"),
    }
}

/// Every operation, with two gateways `gw-a` and `gw-b` sharing the store.
async fn suite(urls: Vec<String>, cluster: bool) {
    let a = Store::connect(&config(urls.clone(), cluster))
        .await
        .expect("gw-a connects");
    let b = Store::connect(&config(urls, cluster))
        .await
        .expect("gw-b connects");
    assert!(a.is_up());
    let mut events = b.subscribe();
    live(&mut events).await;

    // The pool key: the first gateway records it, the same key passes, another is refused.
    let key = PoolKey::from_bytes([5; 32]);
    a.check_pool_key(&key.fingerprint())
        .await
        .expect("recorded");
    b.check_pool_key(&key.fingerprint())
        .await
        .expect("same key");
    let other = PoolKey::from_bytes([6; 32]).fingerprint();
    match b.check_pool_key(&other).await {
        Err(StoreError::KeyMismatch { stored, ours }) => {
            assert_eq!(stored, key.fingerprint());
            assert_eq!(ours, other);
        }
        r => panic!("expected KeyMismatch, got {r:?}"),
    }

    // Publish at gw-a, claim at gw-b.
    let op = 0x357E_6F72;
    let exp = now() + 3600;
    a.publish_sa(
        op,
        "alice@example.com",
        b"sealed-record\x00\xff",
        "gw-a",
        0,
        exp,
        None,
    )
    .await
    .expect("published");
    assert!(a.sa_exists(op).await.expect("exists"));
    assert_eq!(
        a.sa_owner(op).await.expect("owner"),
        Some(("gw-a".into(), 0))
    );
    assert_eq!(a.claim_sa(0x0BAD_0BAD, "gw-b").await.expect("claim"), None);
    assert_eq!(a.sa_owner(0x0BAD_0BAD).await.expect("owner"), None);

    let c = b.claim_sa(op, "gw-b").await.expect("claim").expect("known");
    assert_eq!(c.sealed_rec, b"sealed-record\x00\xff");
    assert_eq!(c.generation, 1);
    assert_eq!(c.win, None);
    assert_eq!(c.idle, None);
    assert_eq!(c.prev_owner.as_deref(), Some("gw-a"));
    assert_eq!(
        next_event(&mut events, Duration::from_secs(1)).await,
        StoreEvent::Moved {
            opaque: op,
            node: "gw-b".into(),
            generation: 1
        }
    );

    // A peek reads the SA as it is and changes nothing; a claim at a generation the SA has left
    // changes nothing either (another gateway claimed it since that peek).
    let seen = a.peek_sa(op).await.expect("peek").expect("known");
    assert_eq!(seen.sealed_rec, b"sealed-record\x00\xff");
    assert_eq!(seen.generation, 1);
    assert_eq!(seen.prev_owner.as_deref(), Some("gw-b"));
    assert_eq!(a.peek_sa(0x0BAD_0BAD).await.expect("peek"), None);
    assert_eq!(
        a.sa_owner(op).await.expect("owner"),
        Some(("gw-b".into(), 1))
    );
    assert_eq!(
        a.claim_sa_at(op, "gw-a", 0).await.expect("claim"),
        ClaimAt::Moved
    );
    assert_eq!(
        a.claim_sa_at(0x0BAD_0BAD, "gw-a", 0).await.expect("claim"),
        ClaimAt::Unknown
    );
    assert_eq!(
        a.sa_owner(op).await.expect("owner"),
        Some(("gw-b".into(), 1)),
        "a refused claim moved the SA"
    );

    // gw-a's write behind is refused now; gw-b's is taken.
    let win_b = vec![0xA5u8; 40];
    let r = a
        .checkpoint(&[Checkpoint {
            opaque: op,
            user: "alice@example.com".into(),
            node: "gw-a".into(),
            generation: 0,
            win: vec![1; 40],
            idle: 111,
        }])
        .await
        .expect("checkpoint");
    assert_eq!(r.len(), 1);
    assert_eq!(
        r[0].outcome,
        CheckpointOutcome::Moved,
        "gw-a lost the SA to gw-b's claim"
    );
    assert_eq!(
        a.publish_sa(
            op,
            "alice@example.com",
            b"old",
            "gw-a",
            0,
            now() + 600,
            None
        )
        .await
        .expect("publish"),
        PublishOutcome::Moved,
        "a node back from a partition does not take back what was claimed meanwhile"
    );
    let r = b
        .checkpoint(&[Checkpoint {
            opaque: op,
            user: "alice@example.com".into(),
            node: "gw-b".into(),
            generation: 1,
            win: win_b.clone(),
            idle: 222,
        }])
        .await
        .expect("checkpoint");
    assert_eq!(r[0].outcome, CheckpointOutcome::Written);
    // gw-b's link to the store comes back and it publishes what it owns again, with the window
    // it holds by then: a claimer resumes from that one, not from a fresh window (which would
    // take once more every message gw-b verified).
    let win_b = vec![0xA6u8; 40];
    assert_eq!(
        b.publish_sa(
            op,
            "alice@example.com",
            b"sealed-record\x00\xff",
            "gw-b",
            1,
            exp,
            Some(SaProgress {
                win: &win_b,
                idle: 223
            })
        )
        .await
        .expect("publish"),
        PublishOutcome::Published
    );
    assert_eq!(
        a.check_owned("gw-b", &[(op, 1)]).await.expect("check"),
        Vec::<u32>::new()
    );
    assert_eq!(
        a.check_owned("gw-a", &[(op, 0), (0x0BAD_0BAD, 0)])
            .await
            .expect("check"),
        vec![op, 0x0BAD_0BAD]
    );

    // Back to gw-a: it starts from gw-b's window, one generation up.
    let c = a.claim_sa(op, "gw-a").await.expect("claim").expect("known");
    assert_eq!(c.generation, 2);
    assert_eq!(c.win.as_deref(), Some(&win_b[..]));
    assert_eq!(c.idle, Some(223));
    assert_eq!(c.prev_owner.as_deref(), Some("gw-b"));
    assert!(matches!(
        next_event(&mut events, Duration::from_secs(1)).await,
        StoreEvent::Moved { generation: 2, .. }
    ));
    assert_eq!(
        b.check_owned("gw-b", &[(op, 1)]).await.expect("check"),
        vec![op]
    );

    // A batch across many slots, after the scripts were flushed (NOSCRIPT: loaded again).
    let many: Vec<u32> = (0..40u32).map(|i| 0x1000_0000 + i * 7919).collect();
    for o in &many {
        a.publish_sa(*o, "carol", b"r", "gw-a", 0, exp, None)
            .await
            .expect("published");
    }
    a.checkpoint(&[Checkpoint {
        opaque: many[0],
        user: "carol".into(),
        node: "gw-a".into(),
        generation: 0,
        win: vec![0; 4],
        idle: 1,
    }])
    .await
    .expect("loads the script");
    flush_scripts();
    let batch: Vec<Checkpoint> = many
        .iter()
        .map(|o| Checkpoint {
            opaque: *o,
            user: "carol".into(),
            node: "gw-a".into(),
            generation: 0,
            win: o.to_be_bytes().to_vec(),
            idle: u64::from(*o),
        })
        .collect();
    let r = a.checkpoint(&batch).await.expect("batch");
    assert_eq!(r.len(), many.len());
    for (res, o) in r.iter().zip(&many) {
        assert_eq!(res.opaque, *o);
        assert_eq!(res.outcome, CheckpointOutcome::Written, "{o:08X}");
    }
    let c = b
        .claim_sa(many[7], "gw-b")
        .await
        .expect("claim")
        .expect("known");
    assert_eq!(c.win.as_deref(), Some(&many[7].to_be_bytes()[..]));
    assert_eq!(c.idle, Some(u64::from(many[7])));
    let r = a.checkpoint(&batch).await.expect("batch");
    assert_eq!(
        r.iter()
            .filter(|r| r.outcome != CheckpointOutcome::Written)
            .count(),
        1
    );
    assert_eq!(r[7].outcome, CheckpointOutcome::Moved);
    let _ = next_event(&mut events, Duration::from_secs(1)).await; // moved

    // Revoke one SA: the subscriber hears it within 1 s.
    let t = Instant::now();
    assert!(a.revoke_sa(op).await.expect("revoked"));
    assert_eq!(
        next_event(&mut events, Duration::from_secs(1)).await,
        StoreEvent::Revoked(op)
    );
    assert!(t.elapsed() < Duration::from_secs(1));
    assert!(!a.sa_exists(op).await.expect("exists"));
    // Its tombstone: an owner that missed the event learns it at its next checkpoint, a
    // publication cannot bring it back, nobody can claim it.
    // A write-behind of `node` at `generation` (the window and deadline do not matter here).
    let cp = |opaque, node: &str, generation| Checkpoint {
        opaque,
        user: "alice@example.com".into(),
        node: node.into(),
        generation,
        win: vec![0; 37],
        idle: 1,
    };
    let r = b
        .checkpoint(&[cp(op, "gw-b", 1), cp(0x0BAD_0001, "gw-b", 1)])
        .await
        .expect("cp");
    assert_eq!(r[0].outcome, CheckpointOutcome::Revoked);
    assert_eq!(r[1].outcome, CheckpointOutcome::Missing, "never published");
    assert_eq!(
        b.publish_sa(op, "alice@example.com", b"r", "gw-b", 1, exp, None)
            .await
            .expect("publish"),
        PublishOutcome::Revoked
    );
    assert!(b.claim_sa(op, "gw-b").await.expect("claim").is_none());
    assert!(!a.revoke_sa(op).await.expect("already gone"));
    assert_eq!(
        next_event(&mut events, Duration::from_secs(1)).await,
        StoreEvent::Revoked(op),
        "published even when the store had it no more"
    );

    // Revoke an identity: its SAs (in several slots), not another's.
    for o in [0x0000_0001u32, 0x7777_0002, 0xFFFF_FFFE] {
        a.publish_sa(o, "dave@example.com", b"r", "gw-a", 0, exp, None)
            .await
            .expect("published");
    }
    a.publish_sa(0x0000_0009, "erin@example.com", b"r", "gw-a", 0, exp, None)
        .await
        .expect("published");
    // A short-lived SA later must not shorten the set's life.
    a.publish_sa(
        0x0000_0003,
        "dave@example.com",
        b"r",
        "gw-a",
        0,
        now() + 60,
        None,
    )
    .await
    .expect("published");
    // Revoked by another spelling of the identity (the security core folds ASCII case).
    let revoked = b
        .revoke_identity("DAVE@Example.com")
        .await
        .expect("revoked");
    assert_eq!(
        revoked,
        vec![0x0000_0001, 0x0000_0003, 0x7777_0002, 0xFFFF_FFFE]
    );
    let mut heard = Vec::new();
    for _ in 0..4 {
        match next_event(&mut events, Duration::from_secs(1)).await {
            StoreEvent::Revoked(o) => heard.push(o),
            e => panic!("unexpected {e:?}"),
        }
    }
    heard.sort_unstable();
    assert_eq!(heard, revoked);
    for o in &revoked {
        assert!(!a.sa_exists(*o).await.expect("exists"));
    }
    assert!(a.sa_exists(0x0000_0009).await.expect("erin's stays"));
    // Tombstones, as for one SA: the owner that missed the events learns it at its next
    // checkpoint, and cannot publish them again (before, "missing", then published again).
    let r = a
        .checkpoint(&[cp(0x0000_0001, "gw-a", 0)])
        .await
        .expect("cp");
    assert_eq!(r[0].outcome, CheckpointOutcome::Revoked);
    assert_eq!(
        b.revoke_identity("dave@example.com").await.expect("again"),
        Vec::<u32>::new()
    );
    assert_eq!(
        a.publish_sa(0x7777_0002, "dave@example.com", b"r", "gw-a", 0, exp, None)
            .await
            .expect("publish"),
        PublishOutcome::Revoked
    );
    assert_eq!(
        b.revoke_identity("nobody").await.expect("none"),
        Vec::<u32>::new()
    );

    // Kerberos: first use anywhere in the pool, then refused everywhere.
    let k = [0x42; 32];
    assert!(
        a.kerberos_first_use(&k, Duration::from_secs(600))
            .await
            .expect("first")
    );
    assert!(
        !b.kerberos_first_use(&k, Duration::from_secs(600))
            .await
            .expect("replay")
    );
    assert!(
        !a.kerberos_first_use(&k, Duration::from_secs(600))
            .await
            .expect("replay")
    );
    assert!(
        b.kerberos_first_use(&[0x43; 32], Duration::from_secs(600))
            .await
            .expect("other")
    );
    let short = [0x44; 32];
    assert!(
        a.kerberos_first_use(&short, Duration::from_millis(50))
            .await
            .expect("first")
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(
        a.kerberos_first_use(&short, Duration::from_millis(50))
            .await
            .expect("expired")
    );

    // The same through the Kerberos workers' registry (a plain thread waiting on the runtime).
    let reg = StoreReplayRegistry::new(a.clone(), tokio::runtime::Handle::current());
    let seen = tokio::task::spawn_blocking(move || {
        let ttl = Duration::from_secs(600);
        (
            reg.first_use(&[0x50; 32], ttl),
            reg.first_use(&[0x50; 32], ttl),
        )
    })
    .await
    .expect("worker");
    assert_eq!(seen, (ReplayCheck::First, ReplayCheck::Replayed));

    // Bindings.
    let aor = "sip:bob@example.com";
    a.put_binding(aor, "<urn:uuid:1>", b"binding-1", "gw-a", now() + 600)
        .await
        .expect("put");
    assert_eq!(
        next_event(&mut events, Duration::from_secs(1)).await,
        StoreEvent::Binding {
            aor: aor.into(),
            node: "gw-a".into()
        }
    );
    b.put_binding(aor, "<urn:uuid:2>", b"binding-2", "gw-b", now() + 300)
        .await
        .expect("put");
    a.put_binding(
        aor,
        "<urn:uuid:old>",
        b"gone",
        "gw-a",
        now().saturating_sub(5),
    )
    .await
    .expect("put expired");
    a.put_binding("sip:frank@example.com", "d", b"f", "gw-a", now() + 600)
        .await
        .expect("put");
    let bs = b.bindings_of(aor).await.expect("read");
    assert_eq!(bs.len(), 2, "{bs:?}");
    assert_eq!(
        (bs[0].device.as_str(), bs[0].node.as_str(), &bs[0].value[..]),
        ("<urn:uuid:1>", "gw-a", &b"binding-1"[..])
    );
    assert_eq!(
        (bs[1].device.as_str(), bs[1].node.as_str(), &bs[1].value[..]),
        ("<urn:uuid:2>", "gw-b", &b"binding-2"[..])
    );
    let all = a.all_bindings().await.expect("all");
    assert_eq!(all.len(), 3, "{all:?}");
    a.remove_binding(aor, "<urn:uuid:1>", "gw-a")
        .await
        .expect("removed");
    assert_eq!(b.bindings_of(aor).await.expect("read").len(), 1);
    // gw-a tidying a device that gw-b holds now (the client registered there since gw-a read
    // the AOR): gw-b's binding stays.
    a.remove_binding(aor, "<urn:uuid:2>", "gw-a")
        .await
        .expect("removed");
    let left = b.bindings_of(aor).await.expect("read");
    assert_eq!(
        (left.len(), left[0].node.as_str()),
        (1, "gw-b"),
        "another node's binding is not removed: {left:?}"
    );
    b.remove_binding(aor, "<urn:uuid:2>", "gw-b")
        .await
        .expect("removed");
    a.remove_binding(aor, "<urn:uuid:old>", "gw-a")
        .await
        .expect("removed");
    assert!(b.bindings_of(aor).await.expect("read").is_empty());
    let all = a.all_bindings().await.expect("all");
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].aor, "sip:frank@example.com");
    let mut binding_events = 0;
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(300), events.recv()).await {
        if matches!(&e, StoreEvent::Binding { aor: a, .. } if a == aor) {
            binding_events += 1;
        }
    }
    assert_eq!(
        binding_events, 6,
        "2 puts and 4 removes of {aor} after the first"
    );

    // Refused arguments never reach the store.
    assert_eq!(
        a.claim_sa(1, "bad node").await,
        Err(StoreError::Invalid("node id"))
    );
    a.ping().await.expect("ping");

    // A node id is one running gateway's: a second instance under it is told who holds it,
    // until the first lets go or its hold lapses.
    let hold = Duration::from_millis(400);
    assert_eq!(a.hold_node("gw-n", "i1", hold).await, Ok(NodeHold::Held));
    assert_eq!(
        b.hold_node("gw-n", "i2", hold).await,
        Ok(NodeHold::HeldByOther("i1".into()))
    );
    assert_eq!(a.hold_node("gw-n", "i1", hold).await, Ok(NodeHold::Held));
    b.release_node("gw-n", "i2").await.expect("release");
    assert_eq!(
        b.hold_node("gw-n", "i2", hold).await,
        Ok(NodeHold::HeldByOther("i1".into())),
        "another instance's release changes nothing"
    );
    a.release_node("gw-n", "i1").await.expect("release");
    assert_eq!(b.hold_node("gw-n", "i2", hold).await, Ok(NodeHold::Held));
    tokio::time::sleep(hold + Duration::from_millis(200)).await;
    assert_eq!(
        a.hold_node("gw-n", "i3", hold).await,
        Ok(NodeHold::Held),
        "a hold not extended lapses"
    );
    assert_eq!(
        a.hold_node("bad node", "i1", hold).await,
        Err(StoreError::Invalid("node id"))
    );
}

/// `SCRIPT FLUSH` on every node of the server or cluster under test.
fn flush_scripts() {
    // redis-cli on every node: what a restarted server looks like to the store.
    for port in FLUSH_PORTS.with(|p| p.borrow().clone()) {
        let out = std::process::Command::new("redis-cli")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "SCRIPT",
                "FLUSH",
            ])
            .output()
            .expect("redis-cli");
        assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));
    }
}

thread_local! {
    static FLUSH_PORTS: std::cell::RefCell<Vec<u16>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[tokio::test(flavor = "current_thread")]
async fn every_operation_on_one_server() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    FLUSH_PORTS.with(|p| *p.borrow_mut() = vec![redis.port()]);
    suite(vec![redis.url()], false).await;
}

#[tokio::test(flavor = "current_thread")]
async fn every_operation_on_a_three_master_cluster() {
    let Some(mut cluster) = RedisCluster::start() else {
        return;
    };
    FLUSH_PORTS.with(|p| *p.borrow_mut() = cluster.nodes().iter().map(|n| n.port()).collect());
    // One URL is enough: the others are discovered.
    suite(vec![cluster.urls()[1].clone()], true).await;
}

#[tokio::test(flavor = "current_thread")]
async fn store_down_fails_fast_then_recovers_and_resubscribes() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let cfg = config(vec![redis.url()], false);
    let s = Store::connect(&cfg).await.expect("connects");
    let mut events = s.subscribe();
    live(&mut events).await;
    s.publish_sa(7, "alice", b"r", "gw-a", 0, now() + 600, None)
        .await
        .expect("published");

    redis.stop();
    for _ in 0..3 {
        let t = Instant::now();
        let r = s.claim_sa(7, "gw-b").await;
        assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
        assert!(
            t.elapsed() < cfg.command_timeout + Duration::from_millis(300),
            "failed in {:?}",
            t.elapsed()
        );
        let t = Instant::now();
        let r = s
            .checkpoint(&[Checkpoint {
                opaque: 7,
                user: "x".into(),
                node: "gw-a".into(),
                generation: 0,
                win: vec![],
                idle: 0,
            }])
            .await;
        assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
        assert!(t.elapsed() < cfg.command_timeout + Duration::from_millis(300));
        assert!(!s.is_up());
    }

    let reg = StoreReplayRegistry::new(s.clone(), tokio::runtime::Handle::current());
    let t = Instant::now();
    let check =
        tokio::task::spawn_blocking(move || reg.first_use(&[1; 32], Duration::from_secs(1)))
            .await
            .expect("worker");
    assert_eq!(check, ReplayCheck::Unavailable);
    assert!(t.elapsed() < cfg.command_timeout + Duration::from_millis(500));

    // Back on the same port (empty: nothing was saved).
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.ping().await.is_err() {
        assert!(Instant::now() < deadline, "the store did not come back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(s.is_up());
    // The subscription says it is back, then delivers again.
    let t = Instant::now();
    match tokio::time::timeout(Duration::from_secs(5), events.recv()).await {
        Ok(Some(StoreEvent::Resubscribed)) => {}
        Ok(Some(e)) => panic!("unexpected {e:?}"),
        _ => panic!("no Resubscribed within 5 s"),
    }
    assert!(t.elapsed() < Duration::from_secs(5));
    s.publish_sa(8, "alice", b"r", "gw-a", 0, now() + 600, None)
        .await
        .expect("published again");
    assert!(s.revoke_sa(8).await.expect("revoked"));
    assert_eq!(
        next_event(&mut events, Duration::from_secs(1)).await,
        StoreEvent::Revoked(8)
    );
    // The scripts were lost with the server: EVALSHA loads them again.
    assert!(s.claim_sa(8, "gw-b").await.expect("claim").is_none());
}

#[tokio::test(flavor = "current_thread")]
async fn store_down_from_the_start_never_hangs() {
    // A port with nothing behind it.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let cfg = config(vec![format!("redis://127.0.0.1:{port}")], false);
    assert!(matches!(
        Store::connect(&cfg).await,
        Err(StoreError::Unavailable(_))
    ));
    let s = Store::open(&cfg).expect("opens without the store");
    let t = Instant::now();
    assert!(matches!(
        s.kerberos_first_use(&[1; 32], Duration::from_secs(1)).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(t.elapsed() < cfg.command_timeout + Duration::from_millis(300));
    assert!(!s.is_up());
}

#[tokio::test(flavor = "current_thread")]
async fn auth_with_the_password_in_the_url_or_a_file() {
    let Some(redis) = RedisServer::start_with_password("s3cret-pw") else {
        return;
    };
    let s = Store::connect(&config(vec![redis.url()], false))
        .await
        .expect("password in the URL");
    assert!(
        s.kerberos_first_use(&[9; 32], Duration::from_secs(5))
            .await
            .expect("set")
    );
    assert!(!format!("{s:?}").contains("s3cret"));

    let bare = format!("redis://127.0.0.1:{}", redis.port());
    let r = Store::connect(&config(vec![bare.clone()], false)).await;
    assert!(matches!(r, Err(StoreError::Auth(_))), "{r:?}");

    let dir = tempfile::tempdir().expect("tmp");
    let pw = dir.path().join("redis.pw");
    std::fs::write(&pw, "s3cret-pw\n").expect("write");
    let mut cfg = config(vec![bare], false);
    cfg.password_file = Some(pw.clone());
    let s = Store::connect(&cfg).await.expect("password from the file");
    assert!(
        !s.kerberos_first_use(&[9; 32], Duration::from_secs(5))
            .await
            .expect("seen")
    );
    std::fs::write(&pw, "wrong\n").expect("write");
    assert!(matches!(
        Store::connect(&cfg).await,
        Err(StoreError::Auth(_))
    ));
    assert!(!format!("{cfg:?}").contains("s3cret"));
}

#[tokio::test(flavor = "current_thread")]
async fn cluster_with_a_password() {
    let Some(cluster) = RedisCluster::start_with(Some("clu-pw")) else {
        return;
    };
    let s = Store::connect(&config(cluster.urls(), true))
        .await
        .expect("connects");
    let mut events = s.subscribe();
    live(&mut events).await;
    s.publish_sa(0xABCD_0001, "zed", b"r", "gw-a", 0, now() + 60, None)
        .await
        .expect("published");
    assert!(s.revoke_sa(0xABCD_0001).await.expect("revoked"));
    assert_eq!(
        next_event(&mut events, Duration::from_secs(1)).await,
        StoreEvent::Revoked(0xABCD_0001)
    );
}

/// No event but `Resubscribed` within `within`.
async fn quiet(rx: &mut EventReceiver, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(StoreEvent::Resubscribed)) => continue,
            Ok(Some(e)) => panic!("unexpected {e:?}"),
            Ok(None) => panic!("event stream ended"),
            Err(_) => return,
        }
    }
}

/// Two users drew the same opaque on two gateways (docs/security.md B11e): bob's publication is
/// refused and neither it nor bob's revocations touch alice's SA.
async fn opaque_collisions(urls: Vec<String>, cluster: bool) {
    let a = Store::connect(&config(urls.clone(), cluster))
        .await
        .expect("gw-a connects");
    let b = Store::connect(&config(urls, cluster))
        .await
        .expect("gw-b connects");
    let mut events = a.subscribe();
    live(&mut events).await;
    let exp = now() + 3600;
    let alice = "alice@example.com";
    let bob = "bob@example.com";

    // Alice's live SA on gw-a; gw-b makes bob's SA under the same opaque.
    let op = 0x0C01_1DE5;
    a.publish_sa(op, alice, b"alice's", "gw-a", 0, exp, None)
        .await
        .expect("published");
    let r = b
        .publish_sa(op, bob, b"bob's", "gw-b", 0, exp, None)
        .await
        .expect("publish");
    assert_eq!(r, PublishOutcome::Taken, "bob's SA took alice's opaque");
    // Bob's revocation (a password change) ends nothing of alice's, and says nothing to the pool.
    assert_eq!(
        b.revoke_identity(bob).await.expect("revoke bob"),
        Vec::<u32>::new(),
        "bob's revocation ended alice's SA"
    );
    quiet(&mut events, Duration::from_millis(300)).await;
    let seen = a
        .peek_sa(op)
        .await
        .expect("peek")
        .expect("alice's SA stays");
    assert_eq!(seen.sealed_rec, b"alice's");
    assert_eq!(seen.prev_owner.as_deref(), Some("gw-a"));

    // The same gateway, having forgotten alice's SA (claimed away and back), never overwrites it
    // with another user's at the same generation.
    let op2 = 0x0C01_1DE6;
    a.publish_sa(op2, alice, b"alice's", "gw-a", 0, exp, None)
        .await
        .expect("published");
    let r = a
        .publish_sa(op2, bob, b"bob's", "gw-a", 0, exp, None)
        .await
        .expect("publish");
    assert_eq!(r, PublishOutcome::Taken, "bob's SA replaced alice's");
    // Nor does its checkpoint of bob's SA, sent before it heard of the refusal: alice's window
    // and idle deadline stay hers (her SA would otherwise be claimable again after it idled out).
    let r = a
        .checkpoint(&[Checkpoint {
            opaque: op2,
            user: bob.into(),
            node: "gw-a".into(),
            generation: 0,
            win: vec![0xB0; 8],
            idle: exp,
        }])
        .await
        .expect("checkpoint");
    assert_ne!(
        r[0].outcome,
        CheckpointOutcome::Written,
        "bob's checkpoint was written over alice's SA"
    );
    let r = a
        .checkpoint(&[Checkpoint {
            opaque: op2,
            user: "ALICE@example.com".into(),
            node: "gw-a".into(),
            generation: 0,
            win: vec![0xA1; 8],
            idle: exp,
        }])
        .await
        .expect("checkpoint");
    assert_eq!(r[0].outcome, CheckpointOutcome::Written, "alice's own");
    assert_eq!(
        a.peek_sa(op2)
            .await
            .expect("peek")
            .expect("stays")
            .sealed_rec,
        b"alice's"
    );
    assert_eq!(
        b.revoke_identity(bob).await.expect("revoke bob"),
        Vec::<u32>::new()
    );
    assert!(a.sa_exists(op2).await.expect("exists"));
    quiet(&mut events, Duration::from_millis(300)).await;

    // gw-b ends bob's SA (replaced by his next handshake) before it heard Taken: its revocation
    // names bob, and leaves alice's SA alone.
    assert_eq!(
        b.revoke_sa_of(op, bob).await.expect("revoke"),
        RevokeOutcome::OtherUser
    );
    assert_eq!(
        b.revoke_sa_of(op, "ALICE@example.com")
            .await
            .expect("revoke"),
        RevokeOutcome::Revoked,
        "the identity compares as the user sets do, ASCII case folded"
    );
    assert_eq!(
        next_event(&mut events, Duration::from_secs(1)).await,
        StoreEvent::Revoked(op)
    );
    // Alice's tombstone keeps her name: bob's SA under the opaque is refused as taken (it would
    // be refused as revoked otherwise, ending it all the same), and bob cannot lift it.
    assert_eq!(
        b.publish_sa(op, bob, b"bob's", "gw-b", 0, exp, None)
            .await
            .expect("publish"),
        PublishOutcome::Taken
    );
    assert_eq!(
        b.revoke_sa_of(op, bob).await.expect("revoke"),
        RevokeOutcome::OtherUser
    );
    assert_eq!(
        a.publish_sa(op, alice, b"alice's", "gw-a", 0, exp, None)
            .await
            .expect("publish"),
        PublishOutcome::Revoked
    );
    // An operator's revocation by opaque ends whatever the opaque names.
    assert!(b.revoke_sa(op2).await.expect("revoke"));
    assert_eq!(
        next_event(&mut events, Duration::from_secs(1)).await,
        StoreEvent::Revoked(op2)
    );
    // An SA the store never had: tombstoned under the identity named, and published.
    let op3 = 0x0C01_1DE7;
    assert_eq!(
        b.revoke_sa_of(op3, bob).await.expect("revoke"),
        RevokeOutcome::Absent
    );
    assert_eq!(
        next_event(&mut events, Duration::from_secs(1)).await,
        StoreEvent::Revoked(op3)
    );
    assert_eq!(
        a.publish_sa(op3, alice, b"alice's", "gw-a", 0, exp, None)
            .await
            .expect("publish"),
        PublishOutcome::Taken
    );
    quiet(&mut events, Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "current_thread")]
async fn opaque_collisions_on_one_server() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    opaque_collisions(vec![redis.url()], false).await;
}

#[tokio::test(flavor = "current_thread")]
async fn opaque_collisions_on_a_three_master_cluster() {
    let Some(cluster) = RedisCluster::start() else {
        return;
    };
    opaque_collisions(vec![cluster.urls()[0].clone()], true).await;
}
