//! Issue 12, points 1, 3 and the identity items of 8: a signed-in user acts only as themselves,
//! and the gateway signs only with the SA a message was verified with. The gateway in-process on
//! loopback sockets; the clients are `sagw-client` (an implementation of the client side
//! independent of the gateway's code path), driven as an attacker would drive them.

mod auth_support;
#[path = "../crates/kerberos/tests/support/mod.rs"]
mod kdc;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use auth_support::{
    Client, DOMAIN, GwOptions, WAIT, config, gateway, gateway_and_auth, http, unique, verified,
};
use sagw_client::sa::LegParams;
use sagw_client::session::RngSend;
use sagw_client::transport::{Connection, TransportKind};
use sagw_client::{AuthScheme, Completed, Failure, SignatureCheck};
use sagw_gateway::Running;
use sagw_sip::Message;
use tokio::net::UdpSocket;
use tokio::time::Instant;

fn text(m: &Message) -> String {
    String::from_utf8_lossy(&m.to_bytes()).into_owned()
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One row of `GET /admin/sas`.
#[derive(Debug, Clone)]
struct SaRow {
    identity: String,
    epid: String,
    expiry: u64,
}

async fn sas(gw: &Running) -> Vec<SaRow> {
    let (status, body) = http(gw, "GET", "/admin/sas").await;
    assert!(status.contains("200"), "{status}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&body).expect("a JSON list");
    rows.iter()
        .map(|r| SaRow {
            identity: r["identity"].as_str().expect("identity").to_owned(),
            epid: r["epid"].as_str().expect("epid").to_owned(),
            expiry: r["expiry"].as_u64().expect("expiry"),
        })
        .collect()
}

async fn sa_of(gw: &Running, c: &Client) -> Option<SaRow> {
    let epid = c.epid();
    sas(gw).await.into_iter().find(|r| r.epid == epid)
}

async fn signed_in(gw: &Running, user: &str, scheme: AuthScheme) -> Client {
    Client::signed_in(
        gw,
        TransportKind::Tcp,
        config(user, &format!("{user}-pw"), scheme, 4),
    )
    .await
}

/// Re-signs `m` after an edit (SA schemes; Digest credentials do not cover the headers).
fn resign(c: &mut Client, m: &mut Message) {
    if let Some(sa) = c.ep.sa_mut() {
        sa.sign(m, LegParams::default(), c.rng.as_rng())
            .expect("signed");
    }
}

/// A REGISTER from `c`, authenticated as `c`'s user (signed with its SA, or with its Digest
/// credentials), whose AOR (To) is `aor`. `wildcard`: `Contact: *` and `Expires: 0`.
fn register_for(c: &mut Client, aor: &str, wildcard: bool) -> Message {
    let mut m =
        c.ep.request("REGISTER", aor, None, c.rng.as_rng())
            .expect("REGISTER");
    if wildcard {
        m.set_header("Contact", "*");
        m.set_header("Expires", "0");
    } else if m.header("Expires").is_none() {
        m.set_header("Expires", "600");
    }
    resign(c, &mut m);
    m
}

/// alice registers a Contact at the next hop's address (a server's Contact, read from its 200
/// in one of her own calls): bob's in-dialog BYE to that server, whose Request-URI is that
/// Contact (a server that does not Record-Route), still reaches the server, not alice. Before,
/// her binding took it, signed for her: calls with that server never ended, and their DTMF and
/// transfers went to her.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_at_the_next_hops_address_takes_no_other_clients_requests() {
    let hop = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let hop_addr = hop.local_addr().expect("addr");
    let hops = [format!("udp:{hop_addr}")];
    let gw = auth_support::gateway(GwOptions {
        next_hops: &hops,
        ..GwOptions::default()
    })
    .await;
    let mut alice = signed_in(&gw, "alice", AuthScheme::Ntlm).await;
    let mut bob = signed_in(&gw, "bob", AuthScheme::Ntlm).await;
    let server_contact = format!("sip:asterisk@{hop_addr}");
    let aor = alice.ep.config().aor.clone();
    let mut reg = register_for(&mut alice, &aor, false);
    reg.set_header("Contact", &format!("<{server_contact}>"));
    resign(&mut alice, &mut reg);
    let (r, _) = alice.drive(reg).await;
    assert_eq!(r.expect("registered").status, 200);

    let mut bye = bob
        .ep
        .request("BYE", &server_contact, None, bob.rng.as_rng())
        .expect("BYE");
    bye.set_header("To", &format!("<{server_contact}>;tag=srv1"));
    resign(&mut bob, &mut bye);
    bob.conn.send(&bye).await.expect("send");
    let mut buf = vec![0u8; 65536];
    let (at_hop, at_alice) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(2), hop.recv_from(&mut buf)),
        alice.next_request(Instant::now() + Duration::from_secs(2)),
    );
    assert!(at_alice.is_none(), "bob's BYE reached alice: {at_alice:?}");
    let (n, _) = at_hop.expect("bob's BYE reaches the server").expect("recv");
    let got = Message::parse(&buf[..n]).expect("SIP");
    assert_eq!(got.method(), Some("BYE"));
}

/// How a client sees a final response to one of its requests: signed by the gateway for its own
/// SA (or, with Digest, carrying `Authentication-Info`).
fn signed_for(c: &mut Client, scheme: AuthScheme, r: &Message) -> bool {
    match scheme {
        AuthScheme::Digest => r
            .header("Authentication-Info")
            .is_some_and(|v| v.contains("rspauth")),
        _ => verified(&c.verify(r)),
    }
}

/// A MESSAGE from `from` to `to`'s AOR: returns whether `to` received it, and whether `other`
/// (listening meanwhile) received anything.
async fn delivered_to(from: &mut Client, to: &mut Client, other: &mut Client) -> (bool, bool) {
    let target = to.ep.config().aor.clone();
    let deadline = Instant::now() + Duration::from_secs(2);
    let ((r, _), got, stolen) = tokio::join!(
        from.request("MESSAGE", &target, Some(("text/plain", "for bob only"))),
        to.serve_ua(Duration::from_secs(2), 1),
        other.next_request(deadline),
    );
    let done = r.unwrap_or_else(|f| panic!("MESSAGE to {target}: {f}"));
    assert_eq!(done.status, 200, "{done:?}");
    (got.len() == 1, stolen.is_some())
}

/// Point 1 in registrar mode, for one scheme of the attacker: bob signs in; alice, signed in,
/// REGISTERs bob's AOR (her own From, a fresh Call-ID), then unregisters it with `Contact: *`.
async fn hijack_in_registrar_mode(scheme: AuthScheme) {
    let gw = gateway(GwOptions::default()).await;
    let mut bob = signed_in(&gw, "bob", AuthScheme::Ntlm).await;
    let mut alice = signed_in(&gw, "alice", scheme).await;
    let mut carol = signed_in(&gw, "carol", AuthScheme::Ntlm).await;
    let bob_aor = format!("sip:bob@{DOMAIN}");
    for wildcard in [false, true] {
        let m = register_for(&mut alice, &bob_aor, wildcard);
        let r = alice
            .send_raw(&m, WAIT)
            .await
            .unwrap_or_else(|| panic!("{scheme:?}: no answer to the hijack"));
        assert_eq!(
            r.status_code(),
            Some(403),
            "{scheme:?} wildcard={wildcard}: a REGISTER for another AOR is refused:\n{}",
            text(&r)
        );
        assert!(
            signed_for(&mut alice, scheme, &r),
            "{scheme:?}: the 403 is signed for alice:\n{}",
            text(&r)
        );
    }
    // bob's binding is untouched: carol's MESSAGE reaches bob, not alice.
    let (to_bob, to_alice) = delivered_to(&mut carol, &mut bob, &mut alice).await;
    assert!(to_bob, "{scheme:?}: bob is still reachable");
    assert!(!to_alice, "{scheme:?}: nothing for bob reaches alice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_for_another_aor_is_refused_in_registrar_mode_ntlm() {
    hijack_in_registrar_mode(AuthScheme::Ntlm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_for_another_aor_is_refused_in_registrar_mode_digest() {
    hijack_in_registrar_mode(AuthScheme::Digest).await;
}

/// A registrar behind the edge, on UDP: answers every REGISTER 200 with the contact it was given
/// (granting `grant` seconds, as a Contact parameter only) and records the AOR (To) of each.
struct FakeRegistrar {
    addr: SocketAddr,
    aors: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeRegistrar {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn fake_registrar(grant: u32) -> FakeRegistrar {
    let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let addr = sock.local_addr().expect("addr");
    let aors = Arc::new(Mutex::new(Vec::new()));
    let seen = aors.clone();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        loop {
            let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                return;
            };
            let Ok(m) = Message::parse(&buf[..n]) else {
                continue;
            };
            if !m.is_request() || m.method() != Some("REGISTER") {
                continue;
            }
            let to = m.to().map(|t| t.uri.to_owned()).unwrap_or_default();
            seen.lock().expect("lock").push(to);
            let mut s = String::from("SIP/2.0 200 OK\r\n");
            for v in m.header_all("Via") {
                s.push_str(&format!("Via: {v}\r\n"));
            }
            s.push_str(&format!(
                "From: {}\r\nTo: {};tag=reg{}\r\nCall-ID: {}\r\nCSeq: {}\r\n",
                m.header("From").unwrap_or(""),
                m.header("To").unwrap_or(""),
                unique(),
                m.call_id().unwrap_or(""),
                m.header("CSeq").unwrap_or(""),
            ));
            if let Some(c) = m
                .header("Contact")
                .and_then(|c| sagw_sip::parse_name_addr(c).ok())
            {
                s.push_str(&format!("Contact: <{}>;expires={grant}\r\n", c.uri));
            }
            s.push_str("Server: fake-registrar\r\nContent-Length: 0\r\n\r\n");
            let _ = sock.send_to(s.as_bytes(), from).await;
        }
    });
    FakeRegistrar { addr, aors, task }
}

/// Point 1 in edge mode: the hijacking REGISTER is answered 403 by the gateway, signed, and never
/// reaches the registrar behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_for_another_aor_is_refused_in_edge_mode_and_not_forwarded() {
    let reg = fake_registrar(600).await;
    let hops = [format!("udp:{}", reg.addr)];
    let gw = gateway(GwOptions {
        mode: "edge",
        next_hops: &hops,
        ..GwOptions::default()
    })
    .await;
    for scheme in [AuthScheme::Ntlm, AuthScheme::Digest] {
        let mut alice = signed_in(&gw, "alice", scheme).await;
        let before = reg.aors.lock().expect("lock").len();
        for wildcard in [false, true] {
            let m = register_for(&mut alice, &format!("sip:bob@{DOMAIN}"), wildcard);
            let r = alice.send_raw(&m, WAIT).await.expect("an answer");
            assert_eq!(
                r.status_code(),
                Some(403),
                "{scheme:?} wildcard={wildcard}:\n{}",
                text(&r)
            );
            assert!(
                r.header("Server").is_none_or(|s| !s.contains("fake")),
                "answered by the gateway, not the registrar"
            );
            assert!(signed_for(&mut alice, scheme, &r), "{}", text(&r));
        }
        // Give a forwarded REGISTER time to arrive.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let aors = reg.aors.lock().expect("lock").clone();
        assert!(
            aors[before..].is_empty(),
            "{scheme:?}: nothing reached the registrar: {aors:?}"
        );
        // alice's own REGISTER still goes through.
        let m = register_for(&mut alice, &format!("sip:alice@{DOMAIN}"), false);
        let r = alice.send_raw(&m, WAIT).await.expect("an answer");
        assert_eq!(r.status_code(), Some(200), "{}", text(&r));
    }
}

/// Point 1 with Kerberos (the MIT test KDC; skipped loudly without one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_for_another_aor_is_refused_kerberos() {
    let Some(k) = kdc::kdc(kdc::KdcOptions::default()) else {
        return;
    };
    let gw = gateway(GwOptions {
        schemes: &["kerberos", "ntlm"],
        fqdn: kdc::AES_FQDN,
        keytab: Some(k.aes_keytab.clone()),
        sip_domain: "example.test",
        ..GwOptions::default()
    })
    .await;
    let dir = sagw_client::kinit::CcacheDir::new().expect("ccache dir");
    let ccache = dir
        .kinit(
            &format!("{}@{}", kdc::ALICE, kdc::REALM),
            &sagw_client::Password::new(kdc::ALICE_PW),
        )
        .expect("kinit");
    let mut cfg = config("alice", "", AuthScheme::Kerberos, 4);
    cfg.aor = "sip:alice@example.test".into();
    cfg.registrar = "sip:example.test".into();
    cfg.password = None;
    cfg.ccache = Some(ccache);
    let mut alice = Client::signed_in(&gw, TransportKind::Tcp, cfg).await;
    for wildcard in [false, true] {
        let m = register_for(&mut alice, "sip:bob@example.test", wildcard);
        let r = alice.send_raw(&m, WAIT).await.expect("an answer");
        assert_eq!(r.status_code(), Some(403), "{}", text(&r));
        assert!(
            signed_for(&mut alice, AuthScheme::Kerberos, &r),
            "{}",
            text(&r)
        );
    }
}

/// Point 3: a refusal is signed only with an SA the request itself was verified against, and
/// nothing unauthenticated moves an SA's idle deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_signed_only_with_the_sa_that_verified_the_request() {
    let gw = gateway(GwOptions::default()).await;
    let bob = signed_in(&gw, "bob", AuthScheme::Ntlm).await;
    let mut alice = signed_in(&gw, "alice", AuthScheme::Ntlm).await;
    let before = sa_of(&gw, &bob).await.expect("bob's SA");
    // Deadlines are whole seconds: let one pass so that a refresh would show.
    tokio::time::sleep(Duration::from_millis(1_100)).await;

    // An unauthenticated sender naming bob (his AOR and epid, both public) in requests the core
    // refuses before any verification: NTLM first legs from one address until the pending
    // handshakes of that address are at their limit (503). No answer may carry bob's signature
    // over a Call-ID and CSeq the sender chose.
    let mut raw = Connection::connect(
        auth_support::addr(&gw, TransportKind::Tcp),
        TransportKind::Tcp,
        None,
    )
    .await
    .expect("connect");
    let local = raw.local_addr();
    let mut statuses = Vec::new();
    for i in 0..40 {
        let n = unique();
        let t = format!(
            "REGISTER sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/TCP {local};branch=z9hG4bKor{n};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:bob@{DOMAIN}>;tag=o{n};epid={epid}\r\nTo: <sip:bob@{DOMAIN}>\r\n\
             Call-ID: chosen-by-mallory-{i}\r\nCSeq: 7{i} REGISTER\r\nContact: <sip:{local};transport=tcp>\r\n\
             Authorization: NTLM qop=\"auth\", realm=\"SIP Communications Service\", targetname=\"sagw.example.com\", gssapi-data=\"\", version=4\r\n\
             Content-Length: 0\r\n\r\n",
            epid = bob.epid(),
        );
        raw.send(&Message::parse(t.as_bytes()).expect("parse"))
            .await
            .expect("send");
        let r = tokio::time::timeout(WAIT, raw.recv())
            .await
            .expect("answered in time")
            .expect("a response");
        assert!(
            r.header("Authentication-Info").is_none()
                && r.header("Proxy-Authentication-Info").is_none(),
            "an unauthenticated request gets no signature of bob's SA:\n{}",
            text(&r)
        );
        statuses.push(r.status_code().unwrap_or(0));
    }
    assert!(
        statuses.iter().all(|s| matches!(s, 401 | 503)),
        "challenged, or refused at the pending limit: {statuses:?}"
    );
    let after = sa_of(&gw, &bob).await.expect("bob's SA");
    assert_eq!(
        after.expiry, before.expiry,
        "unauthenticated requests naming bob do not extend his SA's life"
    );

    // A request alice signed with her SA but whose From names bob: 403, signed with alice's SA
    // (the one that verified it), so her client can read the refusal.
    let mut m = alice
        .ep
        .request(
            "MESSAGE",
            &format!("sip:carol@{DOMAIN}"),
            None,
            alice.rng.as_rng(),
        )
        .expect("request");
    let from = m
        .header("From")
        .expect("From")
        .replace("sip:alice@", "sip:bob@");
    m.set_header("From", &from);
    resign(&mut alice, &mut m);
    let r = alice.send_raw(&m, WAIT).await.expect("an answer");
    assert_eq!(r.status_code(), Some(403), "{}", text(&r));
    let check = alice.verify(&r);
    assert!(
        verified(&check),
        "the 403 is signed with alice's SA: {check:?}\n{}",
        text(&r)
    );
}

/// Point 8: one identity holds at most `auth.max_sas_per_identity` SAs (default 16); the least
/// recently used one makes room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_associations_per_identity_are_capped() {
    let gw = gateway(GwOptions::default()).await;
    let mut clients = Vec::new();
    for _ in 0..17 {
        clients.push(signed_in(&gw, "alice", AuthScheme::Ntlm).await);
    }
    let alice_sas = sas(&gw)
        .await
        .into_iter()
        .filter(|r| r.identity == format!("sip:alice@{DOMAIN}"))
        .count();
    assert_eq!(alice_sas, 16, "at most 16 SAs for one identity");
    // The first (least recently used) made room; the newest works.
    let first = &mut clients[0];
    let m = first
        .ep
        .request(
            "OPTIONS",
            &format!("sip:{DOMAIN}"),
            None,
            first.rng.as_rng(),
        )
        .expect("request");
    let r = first.send_raw(&m, WAIT).await.expect("answer");
    assert!(
        matches!(r.status_code(), Some(401 | 407)),
        "the evicted SA is gone:\n{}",
        text(&r)
    );
    let last = clients.last_mut().expect("last");
    let (r, _) = last
        .request("OPTIONS", &format!("sip:{DOMAIN}"), None)
        .await;
    let done = r.expect("newest SA works");
    assert!(verified(&done.signature), "{done:?}");
    let (_, metrics) = http(&gw, "GET", "/metrics").await;
    assert!(
        metrics.contains("sagw_auth_sa_events_total{event=\"evicted_identity_cap\"} 1"),
        "counted:\n{metrics}"
    );
}

/// Point 8: an epid longer than `auth.max_epid_len` (default 64) is refused before any state is
/// kept for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overlong_epid_is_refused() {
    let gw = gateway(GwOptions::default()).await;
    let mut cfg = config("alice", "alice-pw", AuthScheme::Ntlm, 4);
    cfg.epid = "ab".repeat(2_000);
    let mut c = Client::connect(&gw, TransportKind::Tcp, cfg).await;
    let (r, seen) = c.sign_in().await;
    match r {
        Err(Failure::Status { status: 400, .. }) => {}
        other => panic!(
            "a 4 000-byte epid is refused with 400: {other:?} {:?}",
            seen.iter().map(text).collect::<Vec<_>>()
        ),
    }
    assert!(sas(&gw).await.is_empty(), "no SA for it");
    // A normal epid still signs in.
    signed_in(&gw, "alice", AuthScheme::Ntlm).await;
}

/// Point 8: the SA's idle life follows the registration the registrar *granted*, not the one the
/// client asked for: the embedded registrar (max 7200 s), and a registrar behind the edge that
/// grants 300 s as a Contact parameter only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_idle_ttl_follows_the_granted_expires() {
    let gw = gateway(GwOptions::default()).await;
    let mut cfg = config("alice", "alice-pw", AuthScheme::Ntlm, 4);
    cfg.expires = Some(28_000);
    let c = Client::signed_in(&gw, TransportKind::Tcp, cfg).await;
    let sa = sa_of(&gw, &c).await.expect("SA");
    let left = sa.expiry.saturating_sub(now_secs());
    assert!(
        (7_000..=7_240).contains(&left),
        "registrar mode: 7200 s granted (+30 s margin), 28000 asked; the SA has {left} s"
    );

    let reg = fake_registrar(300).await;
    let hops = [format!("udp:{}", reg.addr)];
    let gw = gateway(GwOptions {
        mode: "edge",
        next_hops: &hops,
        ..GwOptions::default()
    })
    .await;
    let mut cfg = config("alice", "alice-pw", AuthScheme::Ntlm, 4);
    cfg.expires = Some(28_000);
    let c = Client::signed_in(&gw, TransportKind::Tcp, cfg).await;
    let sa = sa_of(&gw, &c).await.expect("SA");
    let left = sa.expiry.saturating_sub(now_secs());
    assert!(
        left <= 900,
        "edge mode: 300 s granted, 28000 asked; the SA has {left} s (idle default 900)"
    );
}

/// Polls the SA list until `gone` holds (the credentials file is read every 5 s, at the first
/// tick at least 2 s after its last change: two ticks at most).
async fn wait_for_sas(gw: &Running, what: &str, gone: impl Fn(&[SaRow]) -> bool) {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let rows = sas(gw).await;
        if gone(&rows) {
            return;
        }
        assert!(Instant::now() < end, "{what}: {rows:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Point 8: `sagw user remove` ends the user's SAs at the next reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_user_loses_its_security_associations() {
    let (gw, auth) = gateway_and_auth(GwOptions::default()).await;
    let mut bob = signed_in(&gw, "bob", AuthScheme::Ntlm).await;
    let mut alice = signed_in(&gw, "alice", AuthScheme::Ntlm).await;
    assert!(sagw_gateway::users::remove(&auth, "bob").expect("remove"));
    let bob_id = format!("sip:bob@{DOMAIN}");
    wait_for_sas(&gw, "bob's SA revoked after `user remove`", |rows| {
        !rows.iter().any(|r| r.identity == bob_id)
    })
    .await;
    let m = bob
        .ep
        .request("OPTIONS", &format!("sip:{DOMAIN}"), None, bob.rng.as_rng())
        .expect("request");
    let r = bob.send_raw(&m, WAIT).await.expect("answer");
    assert!(
        matches!(r.status_code(), Some(401 | 407)),
        "bob's signed request is challenged:\n{}",
        text(&r)
    );
    // alice is untouched.
    let (r, _) = alice
        .request("OPTIONS", &format!("sip:{DOMAIN}"), None)
        .await;
    assert!(verified(&r.expect("alice served").signature));
}

/// Point 8: a change the file's modification time and size do not show (same size, mtime put
/// back, same inode) is still picked up, and the changed user's SAs end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_with_the_same_size_and_mtime_is_picked_up() {
    let (gw, auth) = gateway_and_auth(GwOptions::default()).await;
    let _bob = signed_in(&gw, "bob", AuthScheme::Ntlm).await;
    let path = auth.credentials.clone();
    let old_mtime = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .expect("mtime");
    let old = std::fs::read_to_string(&path).expect("read");
    // The new file as `sagw user add bob` would write it, copied into the old file in place.
    let scratch = tempfile::tempdir().expect("tmp");
    let mut other = auth.clone();
    other.credentials = scratch.path().join("users");
    std::fs::write(&other.credentials, &old).expect("copy");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&other.credentials, std::fs::Permissions::from_mode(0o600))
            .expect("chmod");
    }
    sagw_gateway::users::add(&other, "bob", "bob-pw-2", None).expect("add");
    let new = std::fs::read_to_string(&other.credentials).expect("read");
    assert_eq!(new.len(), old.len(), "hashes are fixed-size");
    assert_ne!(new, old);
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(false)
            .open(&path)
            .expect("open in place");
        f.write_all(new.as_bytes()).expect("write");
        f.set_modified(old_mtime).expect("mtime back");
    }
    let bob_id = format!("sip:bob@{DOMAIN}");
    wait_for_sas(&gw, "bob's SA revoked after his password changed", |rows| {
        !rows.iter().any(|r| r.identity == bob_id)
    })
    .await;
    // The new password works.
    Client::signed_in(
        &gw,
        TransportKind::Tcp,
        config("bob", "bob-pw-2", AuthScheme::Ntlm, 4),
    )
    .await;
}

/// Point 8: `sagw user add --sip` refuses a URI with a line break (which would add a record of
/// the caller's choice, e.g. another user's NT hash, to the credentials file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sip_identity_with_a_newline_cannot_inject_a_credentials_record() {
    let (gw, auth) = gateway_and_auth(GwOptions::default()).await;
    let owned = {
        let mut s = sagw_auth::FileCredentialStore::new();
        s.add_password("x", "owned-pw", &[]);
        let t = s.to_file_text();
        let line = t.lines().find(|l| l.contains(" nt ")).expect("nt line");
        line.split_whitespace().nth(2).expect("hash").to_owned()
    };
    let before = std::fs::read(&auth.credentials).expect("read");
    let injected = format!("sip:mallory@{DOMAIN}\nbob nt {owned}");
    let added = sagw_gateway::users::add(&auth, "mallory", "m-pw", Some(&injected));
    if added.is_ok() {
        // Show what it does: after the reload, bob's account is someone else's.
        tokio::time::sleep(Duration::from_secs(6)).await;
        let mut c = Client::connect(
            &gw,
            TransportKind::Tcp,
            config("bob", "owned-pw", AuthScheme::Ntlm, 4),
        )
        .await;
        let (r, _) = c.sign_in().await;
        panic!(
            "a --sip value with a newline was accepted; signing in as bob with the injected password: {r:?}"
        );
    }
    assert_eq!(
        std::fs::read(&auth.credentials).expect("read"),
        before,
        "the file is unchanged"
    );
    let mut c = Client::connect(
        &gw,
        TransportKind::Tcp,
        config("bob", "owned-pw", AuthScheme::Ntlm, 4),
    )
    .await;
    assert!(c.sign_in().await.0.is_err(), "bob's account is still bob's");
}

/// A principal made for the test (`name` with `pw`, in the test KDC) signing in over TCP as
/// `aor`, against a Kerberos-only gateway: the sign-in's outcome, the gateway, the client.
async fn a_principal_signs_in(
    k: &kdc::TestKdc,
    name: &str,
    pw: &str,
    aor: &str,
) -> (Result<Completed, Failure>, Running, Client) {
    let out = k
        .env(&mut std::process::Command::new("kadmin.local"))
        .args(["-r", kdc::REALM, "-q", &format!("addprinc -pw {pw} {name}")])
        .output()
        .expect("kadmin.local");
    assert!(out.status.success(), "{out:?}");
    let gw = gateway(GwOptions {
        schemes: &["kerberos"],
        fqdn: kdc::AES_FQDN,
        keytab: Some(k.aes_keytab.clone()),
        sip_domain: "example.test",
        ..GwOptions::default()
    })
    .await;
    let dir = sagw_client::kinit::CcacheDir::new().expect("ccache dir");
    let ccache = dir
        .kinit(
            &format!("{name}@{}", kdc::REALM),
            &sagw_client::Password::new(pw),
        )
        .expect("kinit");
    let mut cfg = config("unused", "", AuthScheme::Kerberos, 4);
    cfg.aor = aor.into();
    cfg.registrar = "sip:example.test".into();
    cfg.password = None;
    cfg.ccache = Some(ccache);
    let mut c = Client::connect(&gw, TransportKind::Tcp, cfg).await;
    let (r, _) = c.sign_in().await;
    (r, gw, c)
}

/// Point 8: a Kerberos principal with an instance (`bob/admin@REALM`) is not the SIP user `bob`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kerberos_principal_with_an_instance_is_not_its_primary() {
    let Some(k) = kdc::kdc(kdc::KdcOptions::default()) else {
        return;
    };
    let (r, gw, mut c) =
        a_principal_signs_in(k, "bob/admin", "bob-Admin-3", "sip:bob@example.test").await;
    assert!(
        r.is_err(),
        "bob/admin does not sign in as sip:bob: {r:?}\n{}",
        c.trace()
    );
    assert!(sas(&gw).await.is_empty(), "no SA for bob/admin");
}

/// A principal whose name holds a `:` (`alice:phone@REALM`, legal in Kerberos) used to become the
/// identity `sip:alice:phone@…`: its REGISTER with that To passed the identity check, and the
/// registrar, which reads `alice:phone` as user `alice` with a password, bound alice's AOR. No SIP
/// identity has a `:` in its user part now, so such a principal has none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kerberos_principal_with_a_colon_is_not_the_user_before_it() {
    let Some(k) = kdc::kdc(kdc::KdcOptions::default()) else {
        return;
    };
    let (r, gw, mut c) = a_principal_signs_in(
        k,
        "alice:phone",
        "alice-Phone-3",
        "sip:alice:phone@example.test",
    )
    .await;
    assert!(
        r.is_err(),
        "alice:phone registered (alice's AOR to the registrar): {r:?}\n{}",
        c.trace()
    );
    assert!(sas(&gw).await.is_empty(), "no SA for alice:phone");
}

/// Point 8 (and 4's last clause): identity headers a client supplies never pass, in either
/// direction: Remote-Party-ID, P-Asserted-Identity and P-Preferred-Identity in its requests, and
/// in its responses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_identity_headers_never_pass_in_either_direction() {
    let gw = gateway(GwOptions::default()).await;
    let mut bob = signed_in(&gw, "bob", AuthScheme::Ntlm).await;
    let mut alice = signed_in(&gw, "alice", AuthScheme::Ntlm).await;
    let forged = [
        (
            "Remote-Party-ID",
            format!("<sip:ceo@{DOMAIN}>;party=calling"),
        ),
        ("P-Asserted-Identity", format!("<sip:ceo@{DOMAIN}>")),
        ("P-Preferred-Identity", format!("<sip:ceo@{DOMAIN}>")),
    ];
    let mut m = alice
        .ep
        .request(
            "MESSAGE",
            &format!("sip:bob@{DOMAIN}"),
            None,
            alice.rng.as_rng(),
        )
        .expect("request");
    for (h, v) in &forged {
        m.push_header(h, v);
    }
    resign(&mut alice, &mut m);
    let deadline = Instant::now() + WAIT;
    let bob_side = async {
        let req = bob
            .next_request(deadline)
            .await
            .expect("bob gets the MESSAGE");
        let mut ok = bob.response(&req, 200, "OK", "b1");
        for (h, v) in &forged {
            ok.push_header(h, v);
        }
        resign(&mut bob, &mut ok);
        bob.conn.send(&ok).await.expect("send");
        req
    };
    let (r, req) = tokio::join!(alice.send_raw(&m, WAIT), bob_side);
    assert_eq!(
        req.header("P-Asserted-Identity"),
        Some(format!("<sip:alice@{DOMAIN}>").as_str()),
        "only the gateway's assertion:\n{}",
        text(&req)
    );
    assert_eq!(req.header_all("P-Asserted-Identity").count(), 1);
    for h in ["Remote-Party-ID", "P-Preferred-Identity"] {
        assert!(
            req.header(h).is_none(),
            "{h} from alice's request is stripped:\n{}",
            text(&req)
        );
    }
    let r = r.expect("alice gets the 200");
    assert_eq!(r.status_code(), Some(200), "{}", text(&r));
    for (h, _) in &forged {
        assert!(
            r.header(h).is_none(),
            "{h} from bob's response is stripped:\n{}",
            text(&r)
        );
    }
    assert!(
        matches!(alice.verify(&r), SignatureCheck::Verified { .. }),
        "{}",
        text(&r)
    );
}

/// The headers of a REFER's Refer-To URI go into the INVITE the referee sends (RFC 3515 §2.1):
/// an identity header or a `Referred-By` smuggled there is one alice vouches for in someone
/// else's name, and goes; `Replaces` (an attended transfer) and the URI stay. Before, bob saw
/// the whole URI, and a referee that copies its headers told carol she was referred by the CEO.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_headers_inside_a_refer_to_uri_never_pass() {
    let gw = gateway(GwOptions::default()).await;
    let mut bob = signed_in(&gw, "bob", AuthScheme::Ntlm).await;
    let mut alice = signed_in(&gw, "alice", AuthScheme::Ntlm).await;
    let replaces = "Replaces=abc%40host%3Bto-tag%3D1%3Bfrom-tag%3D2";
    let ceo = format!("%3Csip%3Aceo%40{DOMAIN}%3E");
    for (refer_to, kept) in [
        (
            format!(
                "<sip:carol@{DOMAIN}?{replaces}&Referred-By={ceo}&P-Asserted-Identity={ceo}&b={ceo}>"
            ),
            format!("<sip:carol@{DOMAIN}?{replaces}>"),
        ),
        (
            format!("\"Carol\" <sip:carol@{DOMAIN}?referred%2Dby={ceo}>;x=1"),
            format!("\"Carol\" <sip:carol@{DOMAIN}>;x=1"),
        ),
        (
            format!("<sip:carol@{DOMAIN}?{replaces}>"),
            format!("<sip:carol@{DOMAIN}?{replaces}>"),
        ),
    ] {
        let req = refer_accepted(&mut alice, &mut bob, &[("Refer-To", &refer_to)]).await;
        assert_eq!(
            req.header("Refer-To"),
            Some(kept.as_str()),
            "{refer_to}:\n{}",
            text(&req)
        );
    }
}

/// A Refer-To with URI headers that does not parse as one name-addr (a raw `<` inside the
/// brackets, URI headers in an addr-spec, a comma list: a referee's lenient parser may still read
/// them) is not passed on for the referee to read: it is removed, and the REFER reaches the
/// referee without one (a malformed REFER, RFC 3515, which the referee refuses).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refer_to_with_headers_that_does_not_parse_never_passes() {
    let gw = gateway(GwOptions::default()).await;
    let mut bob = signed_in(&gw, "bob", AuthScheme::Ntlm).await;
    let mut alice = signed_in(&gw, "alice", AuthScheme::Ntlm).await;
    for refer_to in [
        format!("<sip:carol@{DOMAIN}?Referred-By=<sip:ceo@{DOMAIN}>>"),
        format!("sip:carol@{DOMAIN}?Referred-By=%3Csip:ceo@{DOMAIN}%3E"),
        format!("<sip:carol@{DOMAIN}?b=%3Csip%3Aceo%40{DOMAIN}%3E>, <sip:dave@{DOMAIN}>"),
    ] {
        let req = refer_accepted(&mut alice, &mut bob, &[("Refer-To", &refer_to)]).await;
        assert_eq!(req.header("Refer-To"), None, "{refer_to}:\n{}", text(&req));
    }
}

/// alice's REFER to bob with `headers`, signed; bob accepts it (202) and alice gets the 202.
/// Returns the REFER as bob got it.
async fn refer_accepted(alice: &mut Client, bob: &mut Client, headers: &[(&str, &str)]) -> Message {
    let mut m = alice
        .ep
        .request(
            "REFER",
            &format!("sip:bob@{DOMAIN}"),
            None,
            alice.rng.as_rng(),
        )
        .expect("request");
    for (h, v) in headers {
        m.push_header(h, v);
    }
    resign(alice, &mut m);
    let deadline = Instant::now() + WAIT;
    let bob_side = async {
        let req = bob
            .next_request(deadline)
            .await
            .expect("bob gets the REFER");
        let ok = bob.response(&req, 202, "Accepted", "b2");
        bob.conn.send(&ok).await.expect("send");
        req
    };
    let (r, req) = tokio::join!(alice.send_raw(&m, WAIT), bob_side);
    assert_eq!(r.and_then(|r| r.status_code()), Some(202));
    req
}

/// Identity headers beyond the three above, which servers behind the gateway believe as well: a
/// voicemail server or PBX takes the mailbox or the redirecting party from `Diversion` or
/// `History-Info`, an IMS server the served user from `P-Served-User`, a verifier the caller
/// from a STIR `Identity`, the target of a transfer the referrer from `Referred-By` (compact
/// `b`), a billing or IMS server the trust domain's `P-Called-Party-ID`, `P-Charging-Vector`,
/// `P-Charging-Function-Addresses`, `P-Visited-Network-ID`, `P-Profile-Key` and
/// `P-Asserted-Service`, RFC 5503's `P-DCS-*`, `P-Private-Network-Indication`, and a
/// `P-Access-Network-Info` that says `network-provided`. Before, all of them passed from a signed-in client's requests and responses unchanged.
/// A `Referred-By` naming the client itself (pidgin-sipe's and Lync's REFER) is its own claim of
/// its proven identity, and stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirection_and_referrer_headers_from_a_client_never_pass() {
    let gw = gateway(GwOptions::default()).await;
    let mut bob = signed_in(&gw, "bob", AuthScheme::Ntlm).await;
    let mut alice = signed_in(&gw, "alice", AuthScheme::Ntlm).await;
    let ceo = format!("<sip:ceo@{DOMAIN}>");
    let forged = [
        ("Diversion", format!("{ceo};reason=unconditional")),
        ("History-Info", format!("{ceo};index=1")),
        ("P-Served-User", format!("{ceo};sescase=orig")),
        (
            "Identity",
            "eyJhbGciOiJFUzI1NiJ9.e30.c2ln;info=<https://x/c>".to_owned(),
        ),
        (
            "y",
            "eyJhbGciOiJFUzI1NiJ9.e30.c2ln;info=<https://x/c>".to_owned(),
        ),
        ("Identity-Info", "<https://x/c>;alg=rsa-sha1".to_owned()),
        // The trust domain's own (RFC 7315, RFC 5502, RFC 6050): the number that was called,
        // what to bill and where, the visited network, the served user's profile, the service.
        ("P-Called-Party-ID", ceo.clone()),
        (
            "P-Charging-Vector",
            "icid-value=\"1234bc9876e\";orig-ioi=home1.net".to_owned(),
        ),
        ("P-Charging-Function-Addresses", "ccf=192.1.1.1".to_owned()),
        ("P-Visited-Network-ID", "\"Visited network\"".to_owned()),
        ("P-Profile-Key", format!("<sip:ceo-profile@{DOMAIN}>")),
        (
            "P-Asserted-Service",
            "urn:urn-7:3gpp-service.ims.icsi.mmtel".to_owned(),
        ),
        (
            "P-DCS-Billing-Info",
            "0123456789ABCDEF/0123456789@[5555::a55:55ff:fe55:5555]".to_owned(),
        ),
        ("P-DCS-Redirect", format!("\"{ceo}\";count=1")),
        ("P-DCS-Trace-Party-ID", ceo.clone()),
        ("P-DCS-OSPS", "BLV".to_owned()),
        ("P-DCS-LAES", "[5555::25:ff:fe12:3456]:5060".to_owned()),
        ("P-Private-Network-Indication", "example.com".to_owned()),
        (
            "P-Access-Network-Info",
            "3GPP-E-UTRAN-FDD;utran-cell-id-3gpp=262010001;network-provided".to_owned(),
        ),
        ("Referred-By", ceo.clone()),
        ("b", format!("\"CEO\" {ceo}")),
    ];
    let gone = |m: &Message, what: &str| {
        for (h, _) in &forged {
            assert!(m.header(h).is_none(), "{h} passed in {what}:\n{}", text(m));
        }
        for h in ["Identity", "Referred-By"] {
            assert!(m.header(h).is_none(), "{h} passed in {what}:\n{}", text(m));
        }
    };
    for method in ["MESSAGE", "REFER"] {
        let mut m = alice
            .ep
            .request(
                method,
                &format!("sip:bob@{DOMAIN}"),
                None,
                alice.rng.as_rng(),
            )
            .expect("request");
        if method == "REFER" {
            m.push_header("Refer-To", &format!("<sip:carol@{DOMAIN}>"));
        }
        for (h, v) in &forged {
            m.push_header(h, v);
        }
        resign(&mut alice, &mut m);
        let deadline = Instant::now() + WAIT;
        let bob_side = async {
            let req = bob
                .next_request(deadline)
                .await
                .unwrap_or_else(|| panic!("bob gets the {method}"));
            let mut ok = bob.response(&req, 202, "Accepted", "b1");
            for (h, v) in &forged {
                ok.push_header(h, v);
            }
            resign(&mut bob, &mut ok);
            bob.conn.send(&ok).await.expect("send");
            req
        };
        let (r, req) = tokio::join!(alice.send_raw(&m, WAIT), bob_side);
        gone(&req, &format!("alice's {method}"));
        let r = r.expect("alice gets the 202");
        assert_eq!(r.status_code(), Some(202), "{}", text(&r));
        gone(&r, &format!("bob's answer to a {method}"));
    }
    // Her transfer naming herself as the referrer, as pidgin-sipe writes it (tag and epid
    // outside the brackets), and with another spelling of her identity: kept.
    for referrer in [
        format!("<sip:alice@{DOMAIN}>;tag=a1;epid=0123456789"),
        format!("\"Alice\" <sips:Alice@{DOMAIN}>"),
    ] {
        let carol = format!("<sip:carol@{DOMAIN}>");
        let req = refer_accepted(
            &mut alice,
            &mut bob,
            &[("Refer-To", &carol), ("Referred-By", &referrer)],
        )
        .await;
        assert_eq!(
            req.header("Referred-By"),
            Some(referrer.as_str()),
            "alice's own Referred-By:\n{}",
            text(&req)
        );
    }
}
