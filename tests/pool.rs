//! A pool of gateway processes sharing SAs through a real Redis (docs/pools.md), with independent
//! clients (`sagw-client`). Each gateway is this test binary started again as `pool_node` with a
//! configuration file, so it can be killed with SIGKILL like a real one.

mod auth_support;
mod pool_support;

use std::time::Duration;

use auth_support::*;
use pool_support::*;
use sagw_client::Step;
use sagw_client::session::RngSend;
use sagw_client::transport::TransportKind;
use sagw_sip::Message;
use sagw_state::testing::RedisCluster;
use tokio::time::Instant;

/// Scenario `$body` (an `async fn(redis_urls: &[String], cluster: bool)`) as two tests: `$one` on
/// one Redis server, `$cluster` on a 3-master Redis Cluster.
macro_rules! on_both_stores {
    ($body:ident, $one:ident, $cluster:ident) => {
        #[tokio::test]
        async fn $one() {
            let Some(redis) = standalone() else { return };
            $body(&[redis.url()], false).await;
        }

        #[tokio::test]
        async fn $cluster() {
            let Some(cluster) = RedisCluster::start() else {
                return;
            };
            $body(&cluster.urls(), true).await;
        }
    };
}

/// alice, signed in at A over TCP.
async fn alice_signed_in_at_a(p: &Pool) -> Client {
    let mut c = client_to(p.a.tcp, TransportKind::Tcp, "alice").await;
    let (r, _) = c.sign_in().await;
    assert_eq!(r.expect("signed in at A").status, 200);
    c
}

/// alice signed in at A, and a signed OPTIONS of hers that A answered 200: the copy an attacker
/// captured.
async fn captured_at_a(p: &Pool) -> (Client, Message) {
    let mut c = alice_signed_in_at_a(p).await;
    let m =
        c.ep.request("OPTIONS", &format!("sip:{DOMAIN}"), None, c.rng.as_rng())
            .expect("signed request");
    let r = c.send_raw(&m, WAIT).await.expect("A answers");
    assert_eq!(r.status_code(), Some(200), "the genuine copy at A");
    (c, m)
}

/// The captured `m` replayed at B is refused, and alice herself goes on at B with her next
/// number.
async fn replayed_at_b_is_refused(p: &Pool, mut c: Client, m: &Message, when: &str) {
    let mut attacker = client_to(p.b.tcp, TransportKind::Tcp, "alice").await;
    let r = attacker.send_raw(m, WAIT).await.expect("B answers");
    assert_ne!(
        r.status_code(),
        Some(200),
        "the captured copy replayed at B {when}: {r:?}"
    );
    move_to(&mut c, p.b.tcp, TransportKind::Tcp).await;
    let (ok, seen) = options(&mut c).await;
    assert!(ok && !challenged(&seen), "{seen:?}");
}

/// Not a test: the body of a gateway process the tests below start.
#[test]
#[ignore = "a gateway process of the pool tests, started by them"]
fn pool_node() {
    node_main();
}

async fn failover_after_sigkill(redis: &[String], cluster: bool) {
    let mut p = pool(redis, cluster);
    let mut c = alice_signed_in_at_a(&p).await;
    let (ok, seen) = options(&mut c).await;
    assert!(ok, "signed traffic at A");
    let at_a = snum(&seen);
    wait_published(redis, cluster, &c).await;

    p.a.kill();
    move_to(&mut c, p.b.tcp, TransportKind::Tcp).await;
    let (ok, seen) = options(&mut c).await;
    assert!(
        ok,
        "B verified the client's signature and signed its answer: {seen:?}"
    );
    assert!(!challenged(&seen), "no new handshake at B: {seen:?}");
    let at_b = snum(&seen);
    assert!(
        at_b > at_a,
        "snum goes on increasing ({at_a} at A, {at_b} at B)"
    );
    let (ok, seen) = options(&mut c).await;
    assert!(ok && !challenged(&seen));
    assert!(snum(&seen) > at_b);
    let page = metrics_of(p.b.metrics).await;
    assert_eq!(
        metric(&page, "sagw_state_claims_total{result=\"taken\"}"),
        1,
        "{page}"
    );
    assert_eq!(metric(&page, "sagw_state_owned_sas"), 1);
    drop(p.dir);
}

on_both_stores!(
    failover_after_sigkill,
    a_tcp_client_goes_on_at_b_after_a_is_killed,
    a_tcp_client_goes_on_at_b_after_a_is_killed_on_a_redis_cluster
);

async fn ntlm_legs_over_udp_may_reach_different_gateways_on(redis: &[String], cluster: bool) {
    let p = pool(redis, cluster);
    let mut c = client_to(p.a.udp, TransportKind::Udp, "alice").await;
    let leg1 = c.ep.start_register(c.rng.as_rng()).expect("leg 1");
    let challenge = c
        .send_raw(&leg1, WAIT)
        .await
        .expect("A challenges the first leg");
    assert!(matches!(challenge.status_code(), Some(401)));
    // The final leg goes to B, as a UDP load balancer may send it.
    move_to(&mut c, p.b.udp, TransportKind::Udp).await;
    let leg3 = match c
        .ep
        .on_response(&challenge, std::time::SystemTime::now(), c.rng.as_rng())
    {
        Step::Send(m) => m,
        other => panic!("expected the next leg, got {other:?}"),
    };
    let (r, seen) = c.drive(leg3).await;
    let r = r.expect("B completes the handshake A started");
    assert_eq!(r.status, 200, "{seen:?}");
    assert!(verified(&r.signature));
    let (ok, _) = options(&mut c).await;
    assert!(ok, "signed traffic at B");
}

on_both_stores!(
    ntlm_legs_over_udp_may_reach_different_gateways_on,
    ntlm_legs_over_udp_may_reach_different_gateways,
    ntlm_legs_over_udp_may_reach_different_gateways_on_a_redis_cluster
);

async fn a_revocation_at_one_gateway_is_refused_at_the_other_within_a_second_on(
    redis: &[String],
    cluster: bool,
) {
    let p = pool(redis, cluster);
    let mut c = alice_signed_in_at_a(&p).await;
    assert!(options(&mut c).await.0);
    // Revoked through B, which does not hold the SA: the pool revokes it.
    let opaque = opaque_of(&c);
    let answer = http_post(p.b.admin, &format!("/admin/sas/{opaque}/revoke")).await;
    assert!(
        answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200"),
        "{answer}"
    );
    let revoked_at = Instant::now();
    // A stops taking it within a second (the client, challenged, would sign in again: give it
    // a raw copy of a signed request instead, which must no longer be answered 200).
    let mut refused = false;
    while revoked_at.elapsed() < Duration::from_secs(1) {
        let m =
            c.ep.request("OPTIONS", &format!("sip:{DOMAIN}"), None, c.rng.as_rng())
                .expect("signed request");
        let r = c.send_raw(&m, WAIT).await.expect("answer");
        if r.status_code() != Some(200) {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused, "A still took the revoked SA a second later");
}

on_both_stores!(
    a_revocation_at_one_gateway_is_refused_at_the_other_within_a_second_on,
    a_revocation_at_one_gateway_is_refused_at_the_other_within_a_second,
    a_revocation_at_one_gateway_is_refused_at_the_other_within_a_second_on_a_redis_cluster
);

async fn a_signed_request_replayed_to_another_gateway_is_refused_on(
    redis: &[String],
    cluster: bool,
) {
    let p = pool(redis, cluster);
    let (c, m) = captured_at_a(&p).await;
    wait_published(redis, cluster, &c).await;
    // Let A's write-behind of the window land (it is sent at once; this only rules out a slow
    // machine).
    tokio::time::sleep(Duration::from_millis(100)).await;
    replayed_at_b_is_refused(&p, c, &m, "").await;
}

on_both_stores!(
    a_signed_request_replayed_to_another_gateway_is_refused_on,
    a_signed_request_replayed_to_another_gateway_is_refused,
    a_signed_request_replayed_to_another_gateway_is_refused_on_a_redis_cluster
);

/// A gateway publishes what it owns again whenever its link to the store comes back (a dropped
/// subscription, a missed probe, the store restarted empty). That publication must carry the
/// replay window: one without it made the next claimer start from a fresh window, and every
/// message the owner had verified could be replayed once at another gateway.
#[tokio::test]
async fn a_replay_window_survives_the_store_link_coming_back() {
    let Some(redis) = standalone() else { return };
    let urls = [redis.url()];
    let p = pool(&urls, false);
    let (c, m) = captured_at_a(&p).await;
    wait_published(&urls, false, &c).await;
    // A's write-behind of the window (every 20 ms).
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Each publication seals the record afresh (a new nonce): it changes when A publishes again.
    let key = format!("sagw:sa:{{{}}}", opaque_of(&c).to_ascii_uppercase());
    let sealed = redis.cli(&["HGET", &key, "rec"]);
    assert!(!sealed.trim().is_empty(), "{key} in the store");
    // Both gateways' subscriptions drop, as on a network blip; each subscribes again and
    // publishes what it owns.
    let killed = redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert_eq!(killed.trim(), "2", "both gateways' subscriptions: {killed}");
    let deadline = Instant::now() + WAIT;
    while redis.cli(&["HGET", &key, "rec"]) == sealed {
        assert!(Instant::now() < deadline, "A never published the SA again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    replayed_at_b_is_refused(&p, c, &m, "after A published again").await;
}

/// A gateway stopped by SIGTERM (a rolling upgrade) writes what its last messages moved before it
/// exits: the SA's next gateway resumes from the window as the stopped one left it, not as its
/// last periodic write-behind (every 20 ms) did.
#[tokio::test]
async fn a_gateway_stopped_gracefully_leaves_its_latest_replay_window() {
    let Some(redis) = standalone() else { return };
    let urls = [redis.url()];
    let mut p = pool(&urls, false);
    let (c, m) = captured_at_a(&p).await;
    // Stopped at once, within the 20 ms before the next write-behind.
    p.a.terminate();
    replayed_at_b_is_refused(&p, c, &m, "after A stopped").await;
}

/// A Lync-style client that moves to another gateway sends its burst of requests at once (its
/// SUBSCRIBEs, a MESSAGE) over its new connection, all signed with the SA the gateway has yet to
/// claim from the pool. None is lost: over TCP nothing sends it again. Before, B held eight
/// messages of one SA while it claimed it and dropped the rest unanswered.
#[tokio::test]
async fn a_burst_over_a_new_connection_loses_nothing_while_the_sa_is_claimed() {
    let Some(redis) = standalone() else { return };
    let urls = [redis.url()];
    let p = pool(&urls, false);
    let mut c = alice_signed_in_at_a(&p).await;
    wait_published(&urls, false, &c).await;
    move_to(&mut c, p.b.tcp, TransportKind::Tcp).await;
    const BURST: usize = 16;
    let mut call_ids = std::collections::HashSet::new();
    for _ in 0..BURST {
        let m =
            c.ep.request("OPTIONS", &format!("sip:{DOMAIN}"), None, c.rng.as_rng())
                .expect("signed request");
        call_ids.insert(m.call_id().expect("Call-ID").to_owned());
        c.conn.send(&m).await.expect("send");
    }
    let deadline = Instant::now() + WAIT;
    while !call_ids.is_empty() {
        let r = tokio::time::timeout_at(deadline, c.conn.recv())
            .await
            .unwrap_or_else(|_| panic!("{} of {BURST} requests never answered", call_ids.len()))
            .expect("recv");
        if r.status_code().is_some_and(|code| code >= 200) {
            call_ids.remove(r.call_id().unwrap_or(""));
        }
    }
}

#[tokio::test]
async fn no_established_sa_is_lost_when_redis_stops_and_comes_back_empty() {
    let Some(mut redis) = standalone() else {
        return;
    };
    let p = pool(&[redis.url()], false);
    let mut c = alice_signed_in_at_a(&p).await;
    wait_published(&[redis.url()], false, &c).await;
    redis.stop();
    for _ in 0..3 {
        assert!(
            options(&mut c).await.0,
            "signed traffic goes on without the store"
        );
    }
    let mut bob = client_to(p.a.tcp, TransportKind::Tcp, "bob").await;
    let (r, _) = bob.sign_in().await;
    assert_eq!(r.expect("a new sign-in without the store").status, 200);
    // Back, without persistence: empty. A notices within a second (it probes the store) and
    // publishes again what it holds; one claim at B then finds it.
    redis.restart();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    move_to(&mut c, p.b.tcp, TransportKind::Tcp).await;
    let (ok, seen) = options(&mut c).await;
    assert!(
        ok && !challenged(&seen),
        "alice's SA, made at A, reached B through the store after the gap: {seen:?}"
    );
    move_to(&mut bob, p.b.tcp, TransportKind::Tcp).await;
    let (ok, seen) = options(&mut bob).await;
    assert!(
        ok && !challenged(&seen),
        "bob's SA, made while the store was down, too: {seen:?}"
    );
}

async fn bob_registered_at_b_receives_alices_message_sent_through_a_on(
    redis: &[String],
    cluster: bool,
) {
    let dir = tempfile::tempdir().expect("dir");
    users(dir.path());
    let peers = ["127.0.0.2", "127.0.0.3"];
    let at = |ip| NodeOptions {
        ip,
        peers: &peers,
        ..NodeOptions::default()
    };
    let a = Node::start_opts(dir.path(), "a", redis, cluster, &at("127.0.0.2"));
    let b = Node::start_opts(dir.path(), "b", redis, cluster, &at("127.0.0.3"));
    let mut bob = client_to(b.tcp, TransportKind::Tcp, "bob").await;
    let (r, _) = bob.sign_in().await;
    assert_eq!(r.expect("bob registered at B").status, 200);
    let mut alice = client_to(a.tcp, TransportKind::Tcp, "alice").await;
    let (r, _) = alice.sign_in().await;
    assert_eq!(r.expect("alice signed in at A").status, 200);
    let to = format!("sip:bob@{DOMAIN}");
    // A learns bob's binding through the store (published at once, within milliseconds).
    let deadline = Instant::now() + WAIT;
    loop {
        let (sent, received) = tokio::join!(
            alice.request(
                "MESSAGE",
                &to,
                Some(("text/plain", "hello across the pool"))
            ),
            bob.serve(Duration::from_millis(700), 1)
        );
        let status = sent.0.as_ref().map(|c| c.status).ok();
        if status == Some(404) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        assert_eq!(
            received.len(),
            1,
            "bob got the MESSAGE over his own connection to B"
        );
        let (msg, check, answered) = &received[0];
        assert_eq!(msg.method(), Some("MESSAGE"));
        assert!(verified(check), "signed by B for bob: {check:?}");
        assert!(answered);
        let asserted = msg.header("P-Asserted-Identity").unwrap_or("");
        assert!(
            asserted.contains("alice@"),
            "A asserted alice: {asserted:?}"
        );
        let done = sent.0.expect("answered");
        assert_eq!(done.status, 200);
        assert!(verified(&done.signature), "A signed bob's 200 for alice");
        // A SUBSCRIBE from alice is Record-Routed by B with two entries, the second naming (by
        // its flow token) B's connection from A. bob routes a request of his own through it to
        // an address beyond: B sends it to A over that connection, and A must not take the Route
        // set bob wrote for a server's (before, it relayed the request to its own loopback, or
        // any internal address).
        let (_, received) = tokio::join!(
            alice.request("SUBSCRIBE", &to, None),
            bob.serve(Duration::from_secs(2), 1)
        );
        let (sub, _, _) = received.first().expect("bob got the SUBSCRIBE");
        let at_b = b.tcp.to_string();
        let peer_side = sub
            .header_all("Record-Route")
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|rr| rr.contains(&at_b))
            .nth(1)
            .expect("B's entry for its connection from A")
            .to_owned();
        let internal = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("an internal service");
        let beyond = internal.local_addr().expect("addr");
        let mut m = bob
            .ep
            .request(
                "MESSAGE",
                &format!("sip:alice@{DOMAIN}"),
                None,
                bob.rng.as_rng(),
            )
            .expect("a MESSAGE");
        m.set_header(
            "Route",
            &format!("{peer_side}, <sip:{beyond};transport=tcp;lr>"),
        );
        bob.sign_again(&mut m);
        let _ = bob.send_raw(&m, Duration::from_secs(2)).await;
        let reached = tokio::time::timeout(Duration::from_secs(1), internal.accept()).await;
        assert!(
            reached.is_err(),
            "bob's Route through the pool reached {beyond}"
        );
        break;
    }
    drop((a, b));
}

on_both_stores!(
    bob_registered_at_b_receives_alices_message_sent_through_a_on,
    bob_registered_at_b_receives_alices_message_sent_through_a,
    bob_registered_at_b_receives_alices_message_sent_through_a_on_a_redis_cluster
);

async fn a_digest_nonce_of_one_gateway_is_stale_at_the_other_on(redis: &[String], cluster: bool) {
    let p = pool(redis, cluster);
    let mut c = Client::connect_to(
        p.a.tcp,
        TransportKind::Tcp,
        config("alice", "alice-pw", sagw_client::AuthScheme::Digest, 4),
    )
    .await;
    let (r, _) = c.sign_in().await;
    assert_eq!(r.expect("signed in at A with Digest").status, 200);
    // The next request reuses A's nonce at B: B answers it as stale (not as a wrong password),
    // the client retries with B's nonce without asking for the password again.
    move_to(&mut c, p.b.tcp, TransportKind::Tcp).await;
    let (r, seen) = c
        .request(
            "MESSAGE",
            &format!("sip:alice@{DOMAIN}"),
            Some(("text/plain", "hi")),
        )
        .await;
    let stale = seen.iter().any(|m| {
        matches!(m.status_code(), Some(401) | Some(407))
            && m.header_all("WWW-Authenticate")
                .chain(m.header_all("Proxy-Authenticate"))
                .any(|v| v.starts_with("Digest") && param(v, "stale").as_deref() == Some("true"))
    });
    assert!(stale, "B marked A's nonce stale: {seen:?}");
    let r = r.expect("answered after the retry");
    assert!(matches!(r.status, 200 | 404 | 480), "{r:?}");
}

on_both_stores!(
    a_digest_nonce_of_one_gateway_is_stale_at_the_other_on,
    a_digest_nonce_of_one_gateway_is_stale_at_the_other,
    a_digest_nonce_of_one_gateway_is_stale_at_the_other_on_a_redis_cluster
);

/// Anyone may send a message signed with an invented `opaque`: each such opaque costs one store
/// lookup, then it is remembered as unknown, and every copy is challenged as before.
async fn invented_opaques_cost_one_lookup_each_on(redis: &[String], cluster: bool) {
    let p = pool(redis, cluster);
    let mut c = alice_signed_in_at_a(&p).await;
    let real = opaque_of(&c);
    let invented = ["0BAD0001", "0BAD0002", "0BAD0003"];
    for opaque in invented {
        for _ in 0..5 {
            let m =
                c.ep.request("OPTIONS", &format!("sip:{DOMAIN}"), None, c.rng.as_rng())
                    .expect("signed request");
            let text = String::from_utf8(m.to_bytes())
                .expect("text")
                .replace(&real, opaque);
            let forged = sagw_sip::Message::parse(text.as_bytes()).expect("parses");
            let r = c.send_raw(&forged, WAIT).await.expect("an answer");
            assert!(
                matches!(r.status_code(), Some(401) | Some(407)),
                "challenged: {r:?}"
            );
        }
    }
    let page = metrics_of(p.a.metrics).await;
    assert_eq!(
        metric(&page, "sagw_state_claims_total{result=\"unknown\"}"),
        invented.len() as u64,
        "one lookup per invented opaque: {page}"
    );
    assert_eq!(metric(&page, "sagw_state_held_messages"), 0);
}

on_both_stores!(
    invented_opaques_cost_one_lookup_each_on,
    invented_opaques_cost_one_store_lookup_each,
    invented_opaques_cost_one_store_lookup_each_on_a_redis_cluster
);

/// A captured NTLM final leg replayed at the other gateway of the pool within its window: the
/// challenge key is the pool's (a final leg may legitimately reach another gateway), and the
/// record of each final leg's one use was per gateway, so the copy signed in as alice at B.
/// The pool's store now records each final leg's use (`SET NX`, asked on a worker thread).
#[tokio::test]
async fn an_ntlm_final_leg_replayed_at_another_gateway_is_refused() {
    let Some(redis) = standalone() else { return };
    let urls = [redis.url()];
    let p = pool(&urls, false);
    let mut c = client_to(p.a.tcp, TransportKind::Tcp, "alice").await;
    let (final_leg, ok) = c.sign_in_keeping_the_last_request().await;
    assert!(ok, "alice signed in at A: {}", c.trace());
    let mut attacker = client_to(p.b.tcp, TransportKind::Tcp, "bob").await;
    let answer = attacker
        .send_raw(&final_leg, WAIT)
        .await
        .expect("B answers");
    assert_ne!(
        answer.status_code(),
        Some(200),
        "alice's captured final leg signed in at B: {answer:?}"
    );
    let page = metrics_of(p.b.metrics).await;
    assert_eq!(
        metric(
            &page,
            "sagw_auth_handshake_failures_total{scheme=\"ntlm\",reason=\"replayed_token\"}"
        ),
        1,
        "{page}"
    );
}

/// `redis-cli` on one Redis server: `command` on the key of `c`'s SA, then `args`; its output.
fn on_the_sa(url: &str, c: &Client, command: &str, args: &[&str]) -> String {
    let key = format!("sagw:sa:{{{}}}", opaque_of(c).to_uppercase());
    let out = std::process::Command::new("redis-cli")
        .args(["-u", url, command, &key])
        .args(args)
        .output()
        .expect("redis-cli runs (redis-tools)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The owner and generation the store holds for the SA of `c` (one Redis server).
fn owner_and_generation(url: &str, c: &Client) -> String {
    on_the_sa(url, c, "HMGET", &["owner", "gen"])
}

/// Whoever knows a live opaque (it travels in clear in every signed message) sends another
/// gateway of the pool messages shaped as signed with it, with a made-up signature. A claim used
/// to come before the held message was verified, so each such message moved the SA (owner and
/// generation bumped), reopening the 20 ms replay window each time and, past generation 4 095,
/// forcing its client to sign in again. Now the gateway verifies a held message against the
/// record it read before it claims: junk moves nothing, and the client goes on at its gateway
/// without a claim back.
#[tokio::test]
async fn messages_with_a_made_up_signature_do_not_move_an_sa() {
    let Some(redis) = standalone() else { return };
    let urls = [redis.url()];
    let p = pool(&urls, false);
    let mut c = alice_signed_in_at_a(&p).await;
    wait_published(&urls, false, &c).await;
    let before = owner_and_generation(&urls[0], &c);
    let mut attacker = client_to(p.b.tcp, TransportKind::Tcp, "mallory").await;
    for i in 0..5 {
        let m =
            c.ep.request("OPTIONS", &format!("sip:{DOMAIN}"), None, c.rng.as_rng())
                .expect("signed request");
        let text = String::from_utf8(m.to_bytes()).expect("text");
        let at = text.find("response=\"").expect("a response parameter") + 10;
        // The same length, other digits: only the signature is wrong.
        let forged = format!(
            "{}{:032x}{}",
            &text[..at],
            0x5EED_0000u128 + i,
            &text[at + 32..]
        );
        let forged = sagw_sip::Message::parse(forged.as_bytes()).expect("parses");
        let r = attacker.send_raw(&forged, WAIT).await.expect("B answers");
        assert!(
            matches!(r.status_code(), Some(401) | Some(407)),
            "junk is challenged at B: {r:?}"
        );
    }
    assert_eq!(
        owner_and_generation(&urls[0], &c),
        before,
        "messages with a made-up signature moved the SA"
    );
    let page = metrics_of(p.b.metrics).await;
    assert_eq!(
        metric(&page, "sagw_state_claims_total{result=\"taken\"}"),
        0,
        "B claimed the SA: {page}"
    );
    // Its client goes on at A, and A still owns the SA.
    let (ok, seen) = options(&mut c).await;
    assert!(ok && !challenged(&seen), "{seen:?}");
    assert_eq!(owner_and_generation(&urls[0], &c), before);
}

/// Claims bump an SA's generation, and a message merely shaped as signed causes one, so whoever
/// knows an opaque can push its SA to the last generation whose `snum` numbers still fit above
/// every earlier one's (`MAX_GENERATION`). Past it no gateway takes the SA over: the client is
/// challenged and signs in again, instead of being served by an owner whose `snum` repeats the
/// previous owner's (the base saturated at 4 096 and stayed there). One Redis server; the
/// generation is set in the store directly rather than by 4 096 bounces.
#[tokio::test]
async fn an_sa_past_the_last_generation_is_not_taken_over() {
    let Some(redis) = standalone() else { return };
    let urls = [redis.url()];
    let p = pool(&urls, false);
    let mut c = alice_signed_in_at_a(&p).await;
    wait_published(&urls, false, &c).await;
    on_the_sa(
        &urls[0],
        &c,
        "HSET",
        &["gen", &sagw_auth::pool::MAX_GENERATION.to_string()],
    );
    move_to(&mut c, p.b.tcp, TransportKind::Tcp).await;
    let (ok, seen) = options(&mut c).await;
    assert!(
        challenged(&seen),
        "B took over an SA past the last generation and served it: {seen:?}"
    );
    assert!(!ok, "{seen:?}");
    // It signs in again at B, and goes on there.
    let (r, _) = c.sign_in().await;
    assert_eq!(r.expect("signed in again at B").status, 200);
    let (ok, seen) = options(&mut c).await;
    assert!(ok && !challenged(&seen), "{seen:?}");
}

/// The settings of an in-process pool gateway with node id `node` on `redis`.
fn in_process_node(dir: &std::path::Path, node: &str, redis: &str) -> sagw_gateway::Settings {
    let d = dir.display();
    let text = format!(
        "[listen]\nudp = \"127.0.0.1:0\"\ntcp = \"127.0.0.1:0\"\ntls = \"\"\n[proxy]\ncore_cpu = \"none\"\n\
         [metrics]\nlisten = \"\"\n[admin]\nlisten = \"\"\n\
         [auth]\nenabled = true\nsip_domain = \"{DOMAIN}\"\ncredentials = \"{d}/users\"\nnonce_key = \"{d}/{node}.nonce\"\n\
         [state]\nbackend = \"redis\"\nredis = [\"{redis}\"]\nkey_file = \"{d}/pool.key\"\nnode_id = \"{node}\"\n"
    );
    sagw_gateway::Config::parse(&text)
        .expect("parses")
        .validate()
        .expect("valid")
}

/// Two running gateways with one `state.node_id` took each other's SAs as their own: the second
/// now fails to start, saying why, once the first's hold has not lapsed in a hold's time. A
/// gateway stopped gracefully lets go of its id, and the next start under it is at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_gateway_with_a_node_id_in_use_does_not_start() {
    let Some(redis) = standalone() else { return };
    let dir = tempfile::tempdir().expect("dir");
    users(dir.path());
    let first = sagw_gateway::start(in_process_node(dir.path(), "dup", &redis.url()))
        .await
        .expect("the first starts");
    let t = tokio::time::Instant::now();
    let second = sagw_gateway::start(in_process_node(dir.path(), "dup", &redis.url())).await;
    let Err(e) = second else {
        panic!("a second gateway started with node id dup");
    };
    assert!(e.to_string().contains("state.node_id = \"dup\""), "{e}");
    assert!(
        t.elapsed() >= sagw_gateway::state::NODE_HOLD,
        "waited a hold's time first"
    );
    // Another id starts at once beside it.
    let other = sagw_gateway::start(in_process_node(dir.path(), "other", &redis.url()))
        .await
        .expect("another node id starts");
    other.shutdown(Duration::from_secs(2)).await;
    // Stopped gracefully, the first lets go: the next start under its id does not wait.
    first.shutdown(Duration::from_secs(2)).await;
    let t = tokio::time::Instant::now();
    let again = sagw_gateway::start(in_process_node(dir.path(), "dup", &redis.url()))
        .await
        .expect("starts under the id let go");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    again.shutdown(Duration::from_secs(2)).await;
}
