//! Kerberos acceptance off the core thread (issue 13): a Kerberos acceptor that takes 300 ms per
//! AP-REQ does not hold up anybody else's messages, a sign-in still completes through the worker
//! threads, retransmissions of a sign-in being accepted are dropped, and a full job queue answers
//! 503 with Retry-After.

mod auth_support;
#[path = "../crates/kerberos/tests/support/mod.rs"]
mod kdc;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use auth_support::{
    Client, DOMAIN, GwOptions, config, gateway_settings, http, metric, signed_messages, verified,
};
use sagw_auth::{KerberosAccepted, KerberosBackend, KerberosRejection, Reason};
use sagw_client::transport::TransportKind;
use sagw_client::{AuthScheme, Failure};
use sagw_sip::Message;
use tokio::net::UdpSocket;

const DELAY: Duration = Duration::from_millis(300);

/// A Kerberos acceptor that takes [`DELAY`] per AP-REQ: MIT's (when there is a KDC) or one that
/// refuses every token.
struct Slow {
    inner: Option<sagw_auth::kerberos_mit::MitKerberos>,
    targetname: String,
}

impl KerberosBackend for Slow {
    fn targetname(&self) -> &str {
        self.inner
            .as_ref()
            .map_or(self.targetname.as_str(), |k| k.targetname())
    }

    fn accept(&self, ap_req: &[u8]) -> Result<KerberosAccepted, KerberosRejection> {
        std::thread::sleep(DELAY);
        match &self.inner {
            Some(k) => k.accept(ap_req),
            None => Err(KerberosRejection {
                reason: Reason::WrongService,
                detail: "scripted refusal".into(),
            }),
        }
    }

    fn replay_key(&self, ap_req: &[u8]) -> Option<[u8; 32]> {
        self.inner.as_ref().and_then(|k| k.replay_key(ap_req))
    }
}

async fn slow_gateway(
    o: GwOptions<'_>,
    inner: Option<sagw_auth::kerberos_mit::MitKerberos>,
) -> sagw_gateway::Running {
    let targetname = format!("sip/{}", o.fqdn);
    let (settings, _) = gateway_settings(o);
    sagw_gateway::start_with_kerberos_backend(settings, Box::new(Slow { inner, targetname }))
        .await
        .expect("gateway starts")
}

/// A Kerberos REGISTER with the `n`th fake token (distinct tokens: distinct jobs).
fn kerberos_register(n: usize, local: SocketAddr, targetname: &str) -> Message {
    let token = format!("YIIBAAA{}", char::from(b'A' + n as u8));
    let text = format!(
        "REGISTER sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKkw{n}\r\nMax-Forwards: 70\r\nFrom: <sip:alice@{DOMAIN}>;tag=kw{n};epid=01234567{n:02}\r\nTo: <sip:alice@{DOMAIN}>\r\nCall-ID: kw-{n}\r\nCSeq: 1 REGISTER\r\nContact: <sip:alice@{local}>\r\nAuthorization: Kerberos qop=\"auth\", realm=\"SIP Communications Service\", targetname=\"{targetname}\", gssapi-data=\"{token}\", version=4\r\nContent-Length: 0\r\n\r\n"
    );
    Message::parse(text.as_bytes()).expect("request")
}

/// Every final answer on `sock` until `quiet` passes without one, by Call-ID.
async fn answers(sock: &UdpSocket, quiet: Duration) -> Vec<(String, Message)> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65_536];
    while let Ok(Ok(n)) = tokio::time::timeout(quiet, sock.recv(&mut buf)).await {
        let m = Message::parse(&buf[..n]).expect("response");
        if m.status_code().is_some_and(|s| s >= 200) {
            out.push((m.call_id().unwrap_or("").to_owned(), m));
        }
    }
    out
}

/// No KDC needed: an acceptor that refuses after 300 ms. Kerberos sign-ins wait for it on the
/// workers while an NTLM client's signed MESSAGEs are answered at once; the sign-ins are
/// challenged again with the acceptor's reason; copies of one sign-in make one job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_kerberos_acceptor_does_not_hold_up_other_messages() {
    let gw = slow_gateway(
        GwOptions {
            schemes: &["kerberos", "ntlm"],
            ..GwOptions::default()
        },
        None,
    )
    .await;
    let mut alice = Client::signed_in(
        &gw,
        TransportKind::Tcp,
        config("alice", "alice-pw", AuthScheme::Ntlm, 4),
    )
    .await;

    let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    sock.connect(gw.udp.expect("udp")).await.expect("connect");
    let local = sock.local_addr().expect("local");
    let started = Instant::now();
    // Four sign-ins for two workers (~600 ms of acceptor time); the first one three times over
    // (a client retransmitting): one job.
    let first = kerberos_register(0, local, "sip/sagw.example.com").to_bytes();
    for _ in 0..3 {
        sock.send(&first).await.expect("send");
    }
    for n in 1..4 {
        let m = kerberos_register(n, local, "sip/sagw.example.com");
        sock.send(&m.to_bytes()).await.expect("send");
    }
    let trips = signed_messages(&mut alice, DOMAIN, 10).await;
    let got = answers(&sock, Duration::from_secs(2)).await;
    let first_kerberos = started + DELAY;
    for (i, (at, rtt)) in trips.iter().enumerate() {
        assert!(
            *rtt < Duration::from_millis(150),
            "MESSAGE {i} took {rtt:?} while Kerberos sign-ins were pending"
        );
        let _ = at;
    }
    let before = trips.iter().filter(|(at, _)| *at < first_kerberos).count();
    assert!(
        before >= 5,
        "NTLM messages answered while the first AP-REQ was being accepted: {before}"
    );
    assert_eq!(
        got.len(),
        4,
        "one answer per sign-in, not per copy: {got:?}"
    );
    for (call_id, m) in &got {
        assert_eq!(m.status_code(), Some(401), "{call_id}");
    }
    assert!(
        started.elapsed() >= 2 * DELAY,
        "the acceptor ran on two workers"
    );
    let (_, body) = http(&gw, "GET", "/metrics").await;
    assert_eq!(
        metric(
            &body,
            "sagw_auth_handshake_failures_total{scheme=\"kerberos\",reason=\"wrong_service\"}"
        ),
        4,
        "{body}"
    );
    assert_eq!(
        metric(&body, "sagw_kerberos_jobs_total{outcome=\"queued\"}"),
        4
    );
    assert_eq!(
        metric(&body, "sagw_kerberos_jobs_total{outcome=\"duplicate\"}"),
        2
    );
    assert_eq!(metric(&body, "sagw_kerberos_jobs_in_flight"), 0);
    assert_eq!(
        metric(&body, "sagw_dropped_total{reason=\"auth\"}"),
        0,
        "held, not dropped"
    );
}

/// One worker and room for one job: a burst of sign-ins gets 503 with Retry-After for what does
/// not fit, and the rest are answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_kerberos_queue_answers_503_with_retry_after() {
    let gw = slow_gateway(
        GwOptions {
            schemes: &["kerberos", "ntlm"],
            auth_extra: "kerberos_workers = 1\nkerberos_queue = 1",
            ..GwOptions::default()
        },
        None,
    )
    .await;
    // Each from an address of its own: one source may hold only a share of the queue
    // (`tests/domain_workers.rs::one_host_cannot_hold_the_whole_domain_queue`); this is the queue
    // itself full.
    let mut socks = Vec::new();
    for n in 0..5u8 {
        let sock = UdpSocket::bind((std::net::Ipv4Addr::new(127, 0, 0, 10 + n), 0))
            .await
            .expect("bind");
        sock.connect(gw.udp.expect("udp")).await.expect("connect");
        let local = sock.local_addr().expect("local");
        let m = kerberos_register(usize::from(n), local, "sip/sagw.example.com");
        sock.send(&m.to_bytes()).await.expect("send");
        socks.push(sock);
    }
    let mut got = Vec::new();
    for sock in &socks {
        got.extend(answers(sock, Duration::from_secs(2)).await);
    }
    assert_eq!(got.len(), 5, "{got:?}");
    let busy: Vec<&Message> = got
        .iter()
        .map(|(_, m)| m)
        .filter(|m| m.status_code() == Some(503))
        .collect();
    assert!(busy.len() >= 2, "a queue of one for five sign-ins: {got:?}");
    assert!(busy.iter().all(|m| m.header("Retry-After").is_some()));
    assert!(
        got.iter().any(|(_, m)| m.status_code() == Some(401)),
        "the queued ones are answered"
    );
    let (_, body) = http(&gw, "GET", "/metrics").await;
    assert_eq!(
        metric(&body, "sagw_kerberos_jobs_total{outcome=\"queue_full\"}"),
        busy.len() as u64
    );
    assert_eq!(
        metric(
            &body,
            "sagw_auth_handshake_failures_total{scheme=\"kerberos\",reason=\"handshake_limit\"}"
        ),
        busy.len() as u64
    );
}

/// With the test KDC: real Kerberos sign-ins through a 300 ms acceptor complete on the workers
/// (signed 200, the client verifies it, later signed requests verify), while an NTLM client's
/// signed MESSAGEs keep being answered in a few milliseconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kerberos_sign_ins_complete_through_the_workers_while_ntlm_flows() {
    let Some(k) = kdc::kdc(kdc::KdcOptions::default()) else {
        return;
    };
    let mut kcfg = sagw_kerberos::KerberosConfig::new(kdc::AES_FQDN);
    kcfg.keytab = Some(k.aes_keytab.clone());
    let acceptor = sagw_kerberos::KerberosAcceptor::new(kcfg).expect("acceptor");
    let gw = slow_gateway(
        GwOptions {
            schemes: &["kerberos", "ntlm"],
            fqdn: kdc::AES_FQDN,
            sip_domain: "example.test",
            ..GwOptions::default()
        },
        Some(sagw_auth::kerberos_mit::MitKerberos::new(acceptor)),
    )
    .await;
    let mut ntlm = config("alice", "alice-pw", AuthScheme::Ntlm, 4);
    ntlm.aor = "sip:alice@example.test".into();
    ntlm.registrar = "sip:example.test".into();
    let mut alice = Client::connect(&gw, TransportKind::Tcp, ntlm).await;
    let (r, _) = alice.sign_in().await;
    r.unwrap_or_else(|f| panic!("NTLM sign-in: {f}\n{}", alice.trace()));

    let dir = sagw_client::kinit::CcacheDir::new().expect("ccache dir");
    let ccache = dir
        .kinit(
            &format!("{}@{}", kdc::ALICE, kdc::REALM),
            &sagw_client::Password::new(kdc::ALICE_PW),
        )
        .expect("kinit");
    let started = Instant::now();
    let mut sign_ins = Vec::new();
    for kind in [TransportKind::Tcp, TransportKind::Udp, TransportKind::Tcp] {
        let mut cfg = config("alice", "", AuthScheme::Kerberos, 4);
        cfg.aor = "sip:alice@example.test".into();
        cfg.registrar = "sip:example.test".into();
        cfg.password = None;
        cfg.ccache = Some(ccache.clone());
        cfg.mutual = kind == TransportKind::Udp;
        let addr = auth_support::addr(&gw, kind);
        sign_ins.push(tokio::spawn(async move {
            let mut c = Client::connect_to(addr, kind, cfg).await;
            let (r, _) = c.sign_in().await;
            let done = r.map_err(|f: Failure| format!("{kind:?}: {f}\n{}", c.trace()))?;
            if !verified(&done.signature) {
                return Err(format!("{kind:?}: unverified {done:?}"));
            }
            let (r, _) = c.request("OPTIONS", "sip:example.test", None).await;
            let done = r.map_err(|f| format!("OPTIONS: {f}"))?;
            if !verified(&done.signature) {
                return Err(format!("OPTIONS unverified {done:?}"));
            }
            Ok(Instant::now())
        }));
    }
    let trips = signed_messages(&mut alice, "example.test", 10).await;
    let mut finished = Vec::new();
    for s in sign_ins {
        finished.push(s.await.expect("task").unwrap_or_else(|e| panic!("{e}")));
    }
    for (i, (_, rtt)) in trips.iter().enumerate() {
        assert!(
            *rtt < Duration::from_millis(150),
            "MESSAGE {i} took {rtt:?} during Kerberos sign-ins"
        );
    }
    let first_done = finished.iter().min().copied().expect("sign-ins");
    assert!(
        first_done >= started + DELAY,
        "the slow acceptor was on the path"
    );
    let before = trips.iter().filter(|(at, _)| *at < first_done).count();
    assert!(
        before >= 5,
        "NTLM messages answered before any Kerberos sign-in completed: {before}"
    );
    let (_, body) = http(&gw, "GET", "/metrics").await;
    assert_eq!(
        metric(
            &body,
            "sagw_auth_handshakes_total{scheme=\"kerberos\",outcome=\"completed\"}"
        ),
        3,
        "{body}"
    );
}

/// One host's AP-REQs take at most its share of the queue (`auth.kerberos_queue_per_source`):
/// before, twelve from one address took a queue of twelve and a client on another address got
/// 503; now the host gets 503 beyond its four, and the other client is queued and answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_host_takes_only_its_share_of_the_kerberos_queue() {
    let gw = slow_gateway(
        GwOptions {
            schemes: &["kerberos", "ntlm"],
            auth_extra: "kerberos_workers = 1\nkerberos_queue = 12\nkerberos_queue_per_source = 4",
            ..GwOptions::default()
        },
        None,
    )
    .await;
    let to = gw.udp.expect("udp");
    let flood = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    flood.connect(to).await.expect("connect");
    let local = flood.local_addr().expect("local");
    for n in 0..13 {
        flood
            .send(&kerberos_register(n, local, "sip/sagw.example.com").to_bytes())
            .await
            .expect("send");
    }
    let other = UdpSocket::bind("127.0.0.2:0").await.expect("bind");
    other.connect(to).await.expect("connect");
    let other_local = other.local_addr().expect("local");
    other
        .send(&kerberos_register(20, other_local, "sip/sagw.example.com").to_bytes())
        .await
        .expect("send");
    let got = answers(&flood, Duration::from_secs(2)).await;
    let busy = got
        .iter()
        .filter(|(_, m)| m.status_code() == Some(503))
        .count();
    assert_eq!(busy, 13 - 4, "one host, a share of four: {got:?}");
    let theirs = answers(&other, Duration::from_secs(2)).await;
    assert_eq!(theirs.len(), 1, "{theirs:?}");
    assert_eq!(
        theirs[0].1.status_code(),
        Some(401),
        "the other host's sign-in is queued and judged (refused by the acceptor): {theirs:?}"
    );
    let (_, body) = http(&gw, "GET", "/metrics").await;
    assert_eq!(
        metric(&body, "sagw_kerberos_jobs_total{outcome=\"source_share\"}"),
        9
    );
}
