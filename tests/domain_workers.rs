//! Domain NTLM off the core thread (issue 15): a domain that takes 300 ms per verification does
//! not hold up signed traffic of established SAs, domain sign-ins complete through the worker
//! threads with the project's client, and a full queue answers 503 with Retry-After.

mod auth_support;
mod domain_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use auth_support::{
    Client, DOMAIN, GwOptions, config, gateway_settings, http, metric, signed_messages, verified,
};
use domain_support::FakeDomain;
use sagw_client::transport::TransportKind;
use sagw_client::{AuthScheme, Failure};

const DELAY: Duration = Duration::from_millis(300);

async fn gateway_with(domain: Arc<FakeDomain>, auth_extra: &str) -> sagw_gateway::Running {
    let (settings, _) = gateway_settings(GwOptions {
        schemes: &["ntlm"],
        auth_extra,
        ..GwOptions::default()
    });
    sagw_gateway::start_with_seams(
        settings,
        sagw_gateway::AuthSeams {
            domain_ntlm: Some(domain),
            ..Default::default()
        },
    )
    .await
    .expect("gateway starts")
}

/// Domain users (not in the credentials file), password `<user>-Dom1`.
fn domain_users(n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| (format!("dom{i}"), format!("dom{i}-Dom1")))
        .collect()
}

fn fake(users: &[(String, String)]) -> FakeDomain {
    let refs: Vec<(&str, &str)> = users
        .iter()
        .map(|(u, p)| (u.as_str(), p.as_str()))
        .collect();
    FakeDomain::with(&refs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_domain_does_not_hold_up_signed_traffic() {
    let users = domain_users(4);
    let domain = Arc::new(fake(&users).slow(DELAY));
    let gw = gateway_with(
        domain.clone(),
        "[auth.domain]\nntlm = \"winbind\"\nworkers = 2\nqueue = 16\n",
    )
    .await;
    // alice is in the credentials file: verified locally, at once.
    let mut alice = Client::signed_in(
        &gw,
        TransportKind::Tcp,
        config("alice", "alice-pw", AuthScheme::Ntlm, 4),
    )
    .await;
    assert_eq!(domain.calls(), 0, "a file user never goes to the domain");

    // Four domain sign-ins (UDP and TCP) on two workers: ~600 ms of domain time.
    let started = Instant::now();
    let mut sign_ins = Vec::new();
    for (i, (user, password)) in users.iter().enumerate() {
        let kind = if i % 2 == 0 {
            TransportKind::Udp
        } else {
            TransportKind::Tcp
        };
        let mut c = Client::connect(&gw, kind, config(user, password, AuthScheme::Ntlm, 4)).await;
        sign_ins.push(tokio::spawn(async move {
            let (r, _) = c.sign_in().await;
            let done = r.unwrap_or_else(|f| panic!("domain sign-in: {f}\n{}", c.trace()));
            assert!(verified(&done.signature), "{done:?}");
            // The SA signs: a request after the sign-in verifies both ways.
            let (r, _) = c.request("OPTIONS", &format!("sip:{DOMAIN}"), None).await;
            let done = r.unwrap_or_else(|f| panic!("OPTIONS: {f}\n{}", c.trace()));
            assert!(verified(&done.signature), "{done:?}");
            Instant::now()
        }));
    }
    // Meanwhile alice's signed MESSAGEs are answered within milliseconds.
    let trips = signed_messages(&mut alice, DOMAIN, 10).await;
    for (i, (_, rtt)) in trips.iter().enumerate() {
        assert!(
            *rtt < Duration::from_millis(150),
            "MESSAGE {i} took {rtt:?} while domain sign-ins waited"
        );
    }
    let during = trips.iter().filter(|(at, _)| *at < started + DELAY).count();
    assert!(
        during >= 5,
        "signed MESSAGEs answered while the first verification ran: {during}"
    );
    for s in sign_ins {
        s.await.expect("sign-in task");
    }
    assert!(
        started.elapsed() >= 2 * DELAY,
        "four verifications on two workers"
    );
    assert_eq!(domain.calls(), 4, "one verification per sign-in");
    let (_, body) = http(&gw, "GET", "/metrics").await;
    assert_eq!(
        metric(&body, "sagw_domain_ntlm_jobs_total{outcome=\"queued\"}"),
        4,
        "{body}"
    );
    assert_eq!(metric(&body, "sagw_domain_ntlm_jobs_in_flight"), 0);
    assert_eq!(
        metric(
            &body,
            "sagw_auth_handshakes_total{scheme=\"ntlm\",outcome=\"completed\"}"
        ),
        5
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_domain_queue_answers_503_with_retry_after() {
    let users = domain_users(5);
    let domain = Arc::new(fake(&users).slow(DELAY));
    let gw = gateway_with(
        domain.clone(),
        "[auth.domain]\nntlm = \"winbind\"\nworkers = 1\nqueue = 1\nretry_after_secs = 9\n",
    )
    .await;
    let mut tasks = Vec::new();
    // Each from an address of its own: one source may hold only a share of the queue
    // (`one_host_cannot_hold_the_whole_domain_queue`); this is the queue itself full.
    for (i, (user, password)) in users.iter().enumerate() {
        let mut c = Client::connect_from(
            Some(std::net::IpAddr::from([127, 0, 0, 10 + i as u8])),
            gw.tcp.expect("tcp"),
            TransportKind::Tcp,
            config(user, password, AuthScheme::Ntlm, 4),
        )
        .await;
        tasks.push(tokio::spawn(async move {
            let (r, seen) = c.sign_in().await;
            (r.map(|d| d.status), seen)
        }));
    }
    let mut busy = 0;
    let mut ok = 0;
    for t in tasks {
        let (r, seen) = t.await.expect("task");
        match r {
            Ok(200) => ok += 1,
            Err(Failure::Status { status: 503, .. }) => {
                busy += 1;
                let last = seen.last().expect("the 503");
                assert_eq!(last.header("Retry-After"), Some("9"), "{last:?}");
            }
            other => panic!("unexpected: {other:?}"),
        }
    }
    assert!(
        busy >= 2,
        "one worker, a queue of one, five sign-ins: {busy} busy"
    );
    assert!(ok >= 1, "the queued ones are answered");
    let (_, body) = http(&gw, "GET", "/metrics").await;
    assert_eq!(
        metric(&body, "sagw_domain_ntlm_jobs_total{outcome=\"queue_full\"}"),
        busy
    );
    assert_eq!(
        metric(
            &body,
            "sagw_auth_handshake_failures_total{scheme=\"ntlm\",reason=\"handshake_limit\"}"
        ),
        busy
    );
}

/// One host that sends domain sign-ins faster than the domain answers them once held the whole
/// queue: every other client got 503 until it drained. A source now holds at most its share of
/// the queue (a quarter by default), and a client on another address is queued and signed in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_host_cannot_hold_the_whole_domain_queue() {
    let users = domain_users(101);
    let domain = Arc::new(fake(&users).slow(Duration::from_millis(50)));
    let gw = gateway_with(
        domain.clone(),
        "[auth.domain]\nntlm = \"winbind\"\nworkers = 1\nqueue = 64\nretry_after_secs = 9\n",
    )
    .await;
    let (refused_tx, mut refused_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut flood = Vec::new();
    for (user, _) in &users[1..] {
        // Wrong passwords: each costs the domain a verification all the same.
        let mut c = Client::connect(
            &gw,
            TransportKind::Tcp,
            config(user, "not-the-password", AuthScheme::Ntlm, 4),
        )
        .await;
        let refused_tx = refused_tx.clone();
        flood.push(tokio::spawn(async move {
            let (r, _) = c.sign_in().await;
            if let Err(Failure::Status { status: 503, .. }) = r {
                let _ = refused_tx.send(());
            }
        }));
    }
    // The queue (or this host's share of it) is full once the flood's first sign-ins are turned
    // away; then a user on another address signs in.
    tokio::time::timeout(Duration::from_secs(20), refused_rx.recv())
        .await
        .expect("the flood is turned away within 20 s")
        .expect("a refusal");
    let (user, password) = &users[0];
    let mut c = Client::connect_from(
        Some("127.0.0.2".parse().expect("ip")),
        gw.tcp.expect("tcp"),
        TransportKind::Tcp,
        config(user, password, AuthScheme::Ntlm, 4),
    )
    .await;
    let (r, seen) = c.sign_in().await;
    match r {
        Ok(done) => assert_eq!(done.status, 200),
        Err(f) => panic!(
            "the user on another address was turned away: {f}\n{:?}",
            seen.last().map(|m| m.status_code())
        ),
    }
    for t in flood {
        t.await.expect("flood task");
    }
}
