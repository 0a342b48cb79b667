//! Kerberos in a pool of gateway processes sharing SAs through a real Redis (docs/pools.md), with
//! the MIT test KDC and the project's client (`sagw-client`): an AP-REQ accepted at one gateway
//! is refused at the other by the pool's replay registry (each gateway has its own MIT replay
//! cache, as on separate hosts), and a Kerberos SA made at one gateway goes on at the other after
//! the first is killed (its GSS context exported, sealed, claimed and imported).

mod auth_support;
#[path = "../crates/kerberos/tests/support/mod.rs"]
mod kdc;
mod pool_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use auth_support::*;
use pool_support::*;
use sagw_client::session::RngSend;
use sagw_client::transport::TransportKind;
use sagw_client::{AuthScheme, Step};
use sagw_kerberos::initiator::{InitiatorOptions, Mutual, Sequencing, initiate_with};
use sagw_sip::Message;

const FQDN: &str = "sagw.example.com";
const REPLAYED: &str =
    "sagw_auth_handshake_failures_total{scheme=\"kerberos\",reason=\"replayed_token\"}";
const COMPLETED: &str = "sagw_auth_handshakes_total{scheme=\"kerberos\",outcome=\"completed\"}";
const REGISTRY_DOWN: &str = "sagw_auth_kerberos_replay_unavailable_total";

/// Not a test: the body of a gateway process the tests below start.
#[test]
#[ignore = "a gateway process of the pool tests, started by them"]
pub fn pool_node() {
    node_main();
}

/// Two gateways serving Kerberos (`sip/sagw.example.com`, a keytab from the test KDC) and NTLM,
/// each with its own MIT replay cache directory.
struct KrbPool {
    dir: tempfile::TempDir,
    a: Node,
    b: Node,
    ccache: String,
    _cc: sagw_client::kinit::CcacheDir,
}

fn rcache_dir(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.rcache"))
}

fn krb_node(dir: &Path, name: &str, redis: &[String], keytab: &Path) -> Node {
    let rc = rcache_dir(dir, name);
    std::fs::create_dir_all(&rc).expect("rcache dir");
    let auth = format!("kerberos_keytab = \"{}\"", keytab.display());
    let rc = rc.display().to_string();
    // MIT's default replay cache is `$KRB5RCACHEDIR/krb5_<euid>.rcache2` (KRB5RCACHENAME, when
    // set, wins: it is set to this node's own file too).
    let name_var = format!("file2:{rc}/node.rcache2");
    Node::start_opts(
        dir,
        name,
        redis,
        false,
        &NodeOptions {
            schemes: &["kerberos", "ntlm"],
            auth_extra: &auth,
            env: &[("KRB5RCACHEDIR", &rc), ("KRB5RCACHENAME", &name_var)],
            ..NodeOptions::default()
        },
    )
}

fn krb_pool(k: &kdc::TestKdc, redis: &[String]) -> KrbPool {
    let dir = tempfile::tempdir().expect("dir");
    users(dir.path());
    let keytab = k.service_keytab(FQDN).expect("sip/sagw.example.com keytab");
    let a = krb_node(dir.path(), "a", redis, &keytab);
    let b = krb_node(dir.path(), "b", redis, &keytab);
    let cc = sagw_client::kinit::CcacheDir::new().expect("ccache dir");
    let ccache = cc
        .kinit(
            &format!("{}@{}", kdc::ALICE, kdc::REALM),
            &sagw_client::Password::new(kdc::ALICE_PW),
        )
        .expect("kinit");
    KrbPool {
        dir,
        a,
        b,
        ccache,
        _cc: cc,
    }
}

/// A Kerberos client (alice, `sip:alice@example.test`, the identity the gateway maps
/// `alice@EXAMPLE.TEST` to) over TCP to `addr`.
async fn kerberos_client(addr: SocketAddr, ccache: &str) -> Client {
    let mut cfg = config("alice", "", AuthScheme::Kerberos, 4);
    cfg.aor = "sip:alice@example.test".into();
    cfg.registrar = "sip:example.test".into();
    cfg.password = None;
    cfg.ccache = Some(ccache.to_owned());
    cfg.mutual = false;
    Client::connect_to(addr, TransportKind::Tcp, cfg).await
}

/// Signs `c` in step by step and returns the final leg it sent (the REGISTER carrying the
/// AP-REQ) with the outcome.
async fn sign_in_keeping_the_ap_req(
    c: &mut Client,
) -> (Message, Result<sagw_client::Completed, String>) {
    let first = c.ep.start_register(c.rng.as_rng()).expect("first REGISTER");
    let challenge = c.send_raw(&first, WAIT).await.expect("a challenge");
    assert_eq!(challenge.status_code(), Some(401), "{challenge:?}");
    let mut step =
        c.ep.on_response(&challenge, SystemTime::now(), c.rng.as_rng());
    while let Step::NeedKerberosTicket {
        service_fqdn,
        ccache,
        mutual,
    } = step
    {
        let t = tokio::task::spawn_blocking(move || {
            initiate_with(
                &service_fqdn,
                ccache.as_deref(),
                InitiatorOptions {
                    mutual: if mutual {
                        Mutual::Requested
                    } else {
                        Mutual::NotRequested
                    },
                    sequencing: Sequencing::Off,
                },
            )
        })
        .await
        .expect("initiator task");
        step =
            c.ep.on_kerberos_ticket(t, SystemTime::now(), c.rng.as_rng());
    }
    let Step::Send(leg) = step else {
        panic!("expected the AP-REQ leg, got {step:?}\n{}", c.trace());
    };
    let carries_ap_req = leg
        .header_all("Authorization")
        .any(|v| v.starts_with("Kerberos") && v.contains("gssapi-data"));
    assert!(carries_ap_req, "{leg:?}");
    let (r, _) = c.drive(leg.clone()).await;
    let trace = c.trace();
    (leg, r.map_err(|f| format!("{f}\n{trace}")))
}

/// Sends a copy of `leg` to `addr` over a connection of its own (an attacker who captured it)
/// and returns the final answer.
async fn replay(addr: SocketAddr, leg: &Message) -> Message {
    let mut attacker = client_to(addr, TransportKind::Tcp, "bob").await;
    attacker.send_raw(leg, WAIT).await.expect("an answer")
}

/// DER length octets: short form below 128, else the fewest octets.
fn der_length(n: usize) -> Vec<u8> {
    if n < 0x80 {
        return vec![n as u8];
    }
    let bytes: Vec<u8> = n
        .to_be_bytes()
        .into_iter()
        .skip_while(|b| *b == 0)
        .collect();
    let mut out = vec![0x80 | bytes.len() as u8];
    out.extend(bytes);
    out
}

/// A DER length (short form or 1-3 octets) at the start of `b`: (length, octets used).
fn read_length(b: &[u8]) -> (usize, usize) {
    if b[0] < 0x80 {
        return (usize::from(b[0]), 1);
    }
    let n = usize::from(b[0] & 0x7f);
    let len = b[1..=n]
        .iter()
        .fold(0, |acc, &x| (acc << 8) | usize::from(x));
    (len, 1 + n)
}

/// The AP-REQ token `token` with its SEQUENCE length written in four octets (BER, which MIT
/// reads) and the two enclosing lengths fixed up: the same AP-REQ in other bytes.
fn sequence_length_in_four_octets(token: &[u8]) -> Vec<u8> {
    assert_eq!(token[0], 0x60);
    let (_, used) = read_length(&token[1..]);
    let inner = &token[1 + used..];
    // The krb5 OID (06 09 ..., 11 bytes) and TOK_ID 01 00, then [APPLICATION 14].
    let head = &inner[..13];
    assert_eq!(inner[13], 0x6e);
    let (_, used) = read_length(&inner[14..]);
    let ap_req = &inner[14 + used..];
    assert_eq!(ap_req[0], 0x30);
    let (seq_len, used) = read_length(&ap_req[1..]);
    let body = &ap_req[1 + used..];
    assert_eq!(body.len(), seq_len);
    let mut seq = vec![0x30, 0x84];
    seq.extend((seq_len as u32).to_be_bytes());
    seq.extend(body);
    let mut app = vec![0x6e];
    app.extend(der_length(seq.len()));
    app.extend(seq);
    let mut inner = head.to_vec();
    inner.extend(app);
    let mut out = vec![0x60];
    out.extend(der_length(inner.len()));
    out.extend(inner);
    out
}

/// `leg` (a final Kerberos leg) with its AP-REQ written again by `rewrite`.
fn with_ap_req(leg: &Message, rewrite: impl Fn(&[u8]) -> Vec<u8>) -> Message {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let text = String::from_utf8(leg.to_bytes()).expect("text");
    let start = text.find("gssapi-data=\"").expect("gssapi-data") + 13;
    let end = start + text[start..].find('"').expect("closing quote");
    let token = b64.decode(&text[start..end]).expect("base64 token");
    let again = b64.encode(rewrite(&token));
    let text = format!("{}{again}{}", &text[..start], &text[end..]);
    Message::parse(text.as_bytes()).expect("parses")
}

/// An AP-REQ accepted at A and replayed to B is refused by B because the pool's registry
/// (`SET NX` on the authenticator's hash in Redis) has seen it: B's MIT replay cache is its own
/// and has not. Shown by the other half: with the store stopped, the same kind of replay is
/// accepted at B (MIT's per-node cache alone; the gap docs/pools.md states), so it was the store
/// that refused the first one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kerberos_ap_req_accepted_at_a_is_refused_at_b_by_the_pool() {
    let Some(k) = kdc::kdc(kdc::KdcOptions::default()) else {
        return;
    };
    let Some(mut redis) = standalone() else {
        return;
    };
    let p = krb_pool(k, &[redis.url()]);

    let mut c = kerberos_client(p.a.tcp, &p.ccache).await;
    let (leg, r) = sign_in_keeping_the_ap_req(&mut c).await;
    let done = r.unwrap_or_else(|e| panic!("Kerberos sign-in at A: {e}"));
    assert_eq!(done.status, 200);
    assert!(verified(&done.signature), "{done:?}");
    let (ok, seen) = options(&mut c).await;
    assert!(ok, "signed traffic at A: {seen:?}");
    let keys = redis.cli(&["--scan", "--pattern", "sagw:krb:*"]);
    assert_eq!(
        keys.lines().filter(|l| !l.trim().is_empty()).count(),
        1,
        "the authenticator A accepted is in the pool's registry: {keys:?}"
    );

    let answer = replay(p.b.tcp, &leg).await;
    assert_ne!(
        answer.status_code(),
        Some(200),
        "the AP-REQ replayed at B: {answer:?}"
    );
    let at_b = metrics_of(p.b.metrics).await;
    assert_eq!(metric(&at_b, REPLAYED), 1, "{at_b}");
    assert_eq!(metric(&at_b, COMPLETED), 0, "{at_b}");
    assert_eq!(metric(&at_b, REGISTRY_DOWN), 0, "{at_b}");
    let at_a = metrics_of(p.a.metrics).await;
    assert_eq!(metric(&at_a, COMPLETED), 1, "{at_a}");
    assert_eq!(metric(&at_a, REPLAYED), 0, "{at_a}");
    // Another AP-REQ accepted at A, written again in BER (its SEQUENCE length in four octets)
    // and replayed at B, whose MIT replay cache has not seen it: MIT reads it, and it used to be
    // accepted without a replay key, the registry never asked.
    let mut c3 = kerberos_client(p.a.tcp, &p.ccache).await;
    let (leg3, r) = sign_in_keeping_the_ap_req(&mut c3).await;
    assert_eq!(r.expect("a second Kerberos sign-in at A").status, 200);
    let answer = replay(p.b.tcp, &with_ap_req(&leg3, sequence_length_in_four_octets)).await;
    assert_ne!(
        answer.status_code(),
        Some(200),
        "the AP-REQ written again in BER signed in at B: {answer:?}"
    );
    assert_eq!(metric(&metrics_of(p.b.metrics).await, COMPLETED), 0);
    // Each node's MIT replay cache is its own file in its own directory.
    for name in ["a", "b"] {
        let files: Vec<_> = std::fs::read_dir(rcache_dir(p.dir.path(), name))
            .expect("rcache dir")
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect();
        assert!(!files.is_empty(), "node {name} wrote no replay cache");
    }

    // The store stopped: the registry cannot tell, each node has only its own replay cache, and
    // a fresh AP-REQ accepted at A is taken again at B.
    redis.stop();
    let mut c2 = kerberos_client(p.a.tcp, &p.ccache).await;
    let (leg2, r) = sign_in_keeping_the_ap_req(&mut c2).await;
    let done = r.unwrap_or_else(|e| panic!("Kerberos sign-in at A without the store: {e}"));
    assert_eq!(done.status, 200, "new sign-ins go on without the store");
    let answer = replay(p.b.tcp, &leg2).await;
    assert_eq!(
        answer.status_code(),
        Some(200),
        "without the store, B's own replay cache does not know A's AP-REQ: {answer:?}"
    );
    let at_b = metrics_of(p.b.metrics).await;
    assert_eq!(metric(&at_b, REPLAYED), 1, "no second refusal at B: {at_b}");
    assert!(metric(&at_b, REGISTRY_DOWN) >= 1, "{at_b}");
    assert!(metric(&metrics_of(p.a.metrics).await, REGISTRY_DOWN) >= 1);
    // A's own replay cache still refuses a replay at A.
    let answer = replay(p.a.tcp, &leg2).await;
    assert_ne!(answer.status_code(), Some(200), "{answer:?}");
}

/// A Kerberos SA made at A goes on at B after A is SIGKILLed: B claims it from the store, imports
/// its GSS context and verifies and signs with it; no new handshake, `snum` goes on increasing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kerberos_sa_goes_on_at_b_after_a_is_killed() {
    let Some(k) = kdc::kdc(kdc::KdcOptions::default()) else {
        return;
    };
    let Some(redis) = standalone() else {
        return;
    };
    let mut p = krb_pool(k, &[redis.url()]);
    let mut c = kerberos_client(p.a.tcp, &p.ccache).await;
    let (r, _) = c.sign_in().await;
    let done = r.unwrap_or_else(|f| panic!("Kerberos sign-in at A: {f}\n{}", c.trace()));
    assert_eq!(done.status, 200);
    assert!(verified(&done.signature), "{done:?}");
    let (ok, seen) = options(&mut c).await;
    assert!(ok, "signed traffic at A: {seen:?}");
    let at_a = snum(&seen);
    wait_published(&[redis.url()], false, &c).await;

    p.a.kill();
    move_to(&mut c, p.b.tcp, TransportKind::Tcp).await;
    let (ok, seen) = options(&mut c).await;
    assert!(
        ok,
        "B verified the client's Kerberos signature and signed its answer: {seen:?}\n{}",
        c.trace()
    );
    assert!(!challenged(&seen), "no new handshake at B: {seen:?}");
    let at_b = snum(&seen);
    assert!(
        at_b > at_a,
        "snum goes on increasing ({at_a} at A, {at_b} at B)"
    );
    let (ok, seen) = options(&mut c).await;
    assert!(ok && !challenged(&seen), "{seen:?}");
    assert!(snum(&seen) > at_b);

    let body = metrics_of(p.b.metrics).await;
    assert_eq!(
        metric(&body, COMPLETED),
        0,
        "no Kerberos handshake at B: {body}"
    );
    assert_eq!(
        metric(&body, "sagw_state_owned_sas"),
        1,
        "B owns the SA it claimed: {body}"
    );
    assert_eq!(metric(&body, "sagw_auth_security_associations"), 1);
    drop(p.dir);
}
