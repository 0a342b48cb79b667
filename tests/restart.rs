//! One gateway restarting loses nothing (`[state] backend = "memory"`, docs/pools.md): SIGTERM
//! saves its SAs, sealed with the pool key, and the next start takes them back. A TCP client whose
//! connection died with the old process reconnects and keeps signing with the SA it had, with no new
//! handshake, and the gateway's `snum` goes on increasing.

mod auth_support;

use std::time::Duration;

use auth_support::*;
use sagw_client::AuthScheme;
use sagw_client::session::RngSend;
use sagw_client::transport::TransportKind;
use sagw_gateway::{Config, Running};
use sagw_sip::Message;

async fn start(dir: &std::path::Path, snapshot: bool) -> Running {
    start_on(dir, snapshot, 0).await
}

/// With the UDP listener on `udp_port` (0: any), so that a restart can keep it.
async fn start_on(dir: &std::path::Path, snapshot: bool, udp_port: u16) -> Running {
    start_on_ports(dir, snapshot, udp_port, 0).await
}

/// With Digest offered beside NTLM, no snapshot.
async fn start_with_digest(dir: &std::path::Path) -> Running {
    start_with(dir, false, 0, 0, r#"["ntlm", "digest"]"#).await
}

/// With the UDP and TCP listeners on these ports (0: any).
async fn start_on_ports(
    dir: &std::path::Path,
    snapshot: bool,
    udp_port: u16,
    tcp_port: u16,
) -> Running {
    start_with(dir, snapshot, udp_port, tcp_port, r#"["ntlm"]"#).await
}

/// With these schemes (a TOML list).
async fn start_with(
    dir: &std::path::Path,
    snapshot: bool,
    udp_port: u16,
    tcp_port: u16,
    schemes: &str,
) -> Running {
    let text = format!(
        r#"
[log]
level = "warn"
[listen]
udp = "127.0.0.1:{udp_port}"
tcp = "127.0.0.1:{tcp_port}"
tls = ""
[metrics]
listen = "127.0.0.1:0"
[auth]
enabled = true
schemes = {schemes}
sip_domain = "{DOMAIN}"
fqdn = "sagw.example.com"
credentials = "{d}/users"
nonce_key = "{d}/nonce.key"
[state]
backend = "memory"
key_file = "{d}/pool.key"
snapshot = "{snap}"
"#,
        d = dir.display(),
        snap = if snapshot {
            format!("{}/state.snapshot", dir.display())
        } else {
            String::new()
        },
    );
    let settings = Config::parse(&text)
        .expect("parses")
        .validate()
        .expect("valid");
    let auth = settings.auth.clone().expect("auth");
    if !dir.join("users").exists() {
        sagw_gateway::users::add(&auth, "alice", "alice-pw", None).expect("user");
        sagw_gateway::users::add(&auth, "bob", "bob-pw", None).expect("user");
    }
    sagw_gateway::start(settings).await.expect("starts")
}

#[tokio::test]
async fn a_restarted_gateway_keeps_its_security_associations() {
    let dir = tempfile::tempdir().expect("dir");
    let gw = start(dir.path(), true).await;
    let mut c = signed_in(&gw, TransportKind::Tcp, "alice").await;
    let (r, seen) = c.request("OPTIONS", &format!("sip:{DOMAIN}"), None).await;
    let r = r.expect("answered");
    assert!(verified(&r.signature), "{:?}", r.signature);
    let before = snum(&seen);

    // SIGTERM: what `sagw` does on the signal.
    gw.shutdown(Duration::from_secs(5)).await;
    assert!(dir.path().join("state.snapshot").exists(), "state saved");

    let gw = start(dir.path(), true).await;
    assert!(
        !dir.path().join("state.snapshot").exists(),
        "a snapshot is used once"
    );
    move_to(&mut c, gw.tcp.expect("tcp"), TransportKind::Tcp).await;
    let (r, seen) = c.request("OPTIONS", &format!("sip:{DOMAIN}"), None).await;
    let r = r.expect("answered after the restart");
    assert!(!challenged(&seen), "no new handshake: {seen:?}");
    assert!(verified(&r.signature), "{:?}", r.signature);
    assert!(snum(&seen) > before, "snum goes on increasing");
    let after = snum(&seen);
    let (r, seen) = c.request("OPTIONS", &format!("sip:{DOMAIN}"), None).await;
    assert!(verified(&r.expect("answered").signature));
    assert!(!challenged(&seen));
    assert!(snum(&seen) > after);
    gw.shutdown(Duration::from_secs(5)).await;
}

/// The credentials file changed while the gateway was down (the natural time to remove a user
/// or reset a password): the file users' SAs of the snapshot are not taken back, and they sign
/// in again. Before, a removed user's SA came back and went on signing for up to 8 hours.
#[tokio::test]
async fn a_user_removed_while_the_gateway_was_down_is_not_restored() {
    let dir = tempfile::tempdir().expect("dir");
    let gw = start(dir.path(), true).await;
    let mut c = signed_in(&gw, TransportKind::Tcp, "alice").await;
    gw.shutdown(Duration::from_secs(5)).await;
    assert!(dir.path().join("state.snapshot").exists(), "state saved");

    let users = std::fs::read_to_string(dir.path().join("users")).expect("users");
    let without_alice: String = users
        .lines()
        .filter(|l| !l.starts_with("alice "))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(without_alice.len(), users.len());
    std::fs::write(dir.path().join("users"), without_alice).expect("users written");

    let gw = start(dir.path(), true).await;
    move_to(&mut c, gw.tcp.expect("tcp"), TransportKind::Tcp).await;
    let (r, seen) = c.request("OPTIONS", &format!("sip:{DOMAIN}"), None).await;
    assert!(
        challenged(&seen) && r.is_err(),
        "alice's SA came back though she was removed: {seen:?}"
    );
    gw.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn without_a_snapshot_a_restart_signs_everyone_out() {
    let dir = tempfile::tempdir().expect("dir");
    let gw = start(dir.path(), false).await;
    let mut c = signed_in(&gw, TransportKind::Tcp, "alice").await;
    gw.shutdown(Duration::from_secs(5)).await;
    let gw = start(dir.path(), false).await;
    move_to(&mut c, gw.tcp.expect("tcp"), TransportKind::Tcp).await;
    let (_, seen) = c.request("OPTIONS", &format!("sip:{DOMAIN}"), None).await;
    assert!(
        challenged(&seen),
        "the SA is gone: the client is challenged"
    );
    gw.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn udp_bindings_and_their_sas_survive_a_restart() {
    let dir = tempfile::tempdir().expect("dir");
    let port = free_port(true);
    let gw = start_on(dir.path(), true, port).await;
    let mut alice = signed_in(&gw, TransportKind::Udp, "alice").await;
    gw.shutdown(Duration::from_secs(5)).await;

    let gw = start_on(dir.path(), true, port).await;
    let mut bob = signed_in(&gw, TransportKind::Tcp, "bob").await;
    let to = format!("sip:alice@{DOMAIN}");
    let (sent, received) = tokio::join!(
        bob.request("MESSAGE", &to, Some(("text/plain", "after the restart"))),
        alice.serve(Duration::from_secs(5), 1)
    );
    assert_eq!(
        received.len(),
        1,
        "alice's binding was restored: the MESSAGE reached her"
    );
    let (msg, check, answered) = &received[0];
    assert_eq!(msg.method(), Some("MESSAGE"));
    assert!(
        verified(check),
        "signed with alice's restored SA: {check:?}"
    );
    assert!(answered);
    assert_eq!(sent.0.expect("delivered").status, 200);
    gw.shutdown(Duration::from_secs(5)).await;
}

/// `user` (password `<user>-pw`, NTLM, version 4) connected over `kind` and signed in.
async fn signed_in(gw: &Running, kind: TransportKind, user: &str) -> Client {
    let mut c = connect(
        gw,
        kind,
        config(user, &format!("{user}-pw"), AuthScheme::Ntlm, 4),
    )
    .await;
    let (r, _) = c.sign_in().await;
    assert_eq!(r.expect("signed in").status, 200, "{user}");
    c
}

/// A free port on 127.0.0.1, for UDP or TCP.
fn free_port(udp: bool) -> u16 {
    if udp {
        std::net::UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr())
    } else {
        std::net::TcpListener::bind("127.0.0.1:0").and_then(|s| s.local_addr())
    }
    .expect("a free port")
    .port()
}

/// Flow ids start again at each start, and flow tokens (keyed by the pool key) outlive a restart
/// in Record-Route and Path: a token of alice's TCP connection from before the restart named the
/// id that the first connection after it gets. A request routed by that token went to that
/// connection, whoever holds it, signed for alice. Now a token reaches a connection only if the
/// connection is to the address it names.
#[tokio::test]
async fn a_flow_token_from_before_a_restart_reaches_no_other_connection() {
    use tokio::io::AsyncReadExt;
    let dir = tempfile::tempdir().expect("dir");
    let (udp, tcp) = (free_port(true), free_port(false));
    let gw = start_on_ports(dir.path(), true, udp, tcp).await;
    let mut alice = signed_in(&gw, TransportKind::Tcp, "alice").await;
    let mut bob = signed_in(&gw, TransportKind::Udp, "bob").await;
    // alice subscribes to bob: the SUBSCRIBE bob gets is Record-Routed, alice's side with the
    // token of her TCP connection.
    let to = format!("sip:bob@{DOMAIN}");
    let (sent, received) = tokio::join!(
        alice.request("SUBSCRIBE", &to, None),
        bob.serve(Duration::from_secs(5), 1)
    );
    assert!(sent.0.is_ok(), "{}", alice.trace());
    let (sub, _, _) = received.first().expect("bob got the SUBSCRIBE");
    let alices_side = sub
        .header_all("Record-Route")
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find(|rr| rr.contains("transport=tcp"))
        .expect("a Record-Route entry of alice's TCP side")
        .to_owned();
    drop(alice);
    gw.shutdown(Duration::from_secs(5)).await;

    let gw = start_on_ports(dir.path(), true, udp, tcp).await;
    // The first connection of the new run: mallory's, signed in as nobody.
    let mut mallory = tokio::net::TcpStream::connect(gw.tcp.expect("tcp"))
        .await
        .expect("connect");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut m = bob
        .ep
        .request(
            "MESSAGE",
            &format!("sip:alice@{DOMAIN}"),
            Some(("text/plain".into(), b"for alice".to_vec())),
            bob.rng.as_rng(),
        )
        .expect("a MESSAGE");
    m.set_header("Route", &alices_side);
    bob.sign_again(&mut m);
    let _ = bob.send_raw(&m, Duration::from_secs(2)).await;
    let mut buf = vec![0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(1), mallory.read(&mut buf)).await;
    if let Ok(Ok(n)) = read {
        assert_eq!(
            n,
            0,
            "mallory's connection got alice's request: {}",
            String::from_utf8_lossy(&buf[..n])
        );
    }
    gw.shutdown(Duration::from_secs(5)).await;
}

/// A captured NTLM final leg replayed just after a restart without a snapshot: the challenge it
/// answers was a MAC under a key read from the pool key file, and the record of its one use died
/// with the process, so the copy signed in as alice on the attacker's connection (her calls then
/// reached it, signed for her). One gateway now draws its challenge key at each start (a sign-in
/// caught by a restart fails once and starts again). With a snapshot, her restored SA already
/// refused the copy.
#[tokio::test]
async fn an_ntlm_final_leg_replayed_after_a_restart_is_refused() {
    let answer = last_sign_in_request_replayed_after_a_restart(AuthScheme::Ntlm).await;
    assert_ne!(
        answer.status_code(),
        Some(200),
        "alice's captured final leg signed in after the restart: {answer:?}"
    );
}

/// alice signs in (`scheme`, without a snapshot, Digest offered beside NTLM); the gateway
/// restarts; an attacker's new connection sends the last request of her sign-in again: its
/// answer.
async fn last_sign_in_request_replayed_after_a_restart(scheme: AuthScheme) -> Message {
    let dir = tempfile::tempdir().expect("dir");
    let gw = start_with_digest(dir.path()).await;
    let mut alice = connect(
        &gw,
        TransportKind::Tcp,
        config("alice", "alice-pw", scheme, 4),
    )
    .await;
    let (captured, ok) = alice.sign_in_keeping_the_last_request().await;
    assert!(ok, "alice signed in: {}", alice.trace());
    gw.shutdown(Duration::from_secs(5)).await;

    let gw = start_with_digest(dir.path()).await;
    let mut attacker = connect(&gw, TransportKind::Tcp, config("bob", "bob-pw", scheme, 4)).await;
    let answer = attacker
        .send_raw(&captured, Duration::from_secs(5))
        .await
        .expect("an answer");
    gw.shutdown(Duration::from_secs(5)).await;
    answer
}

/// A captured Digest request replayed just after a restart: the nonce's MAC still verifies (the
/// nonce key is a file), and the nonce counts died with the process, so the copy was taken again
/// (a new binding of alice's AOR on the attacker's connection). Nonces issued before the start
/// are stale now: the client answers a fresh challenge, the copy gets nothing.
#[tokio::test]
async fn a_digest_request_replayed_after_a_restart_is_stale() {
    let answer = last_sign_in_request_replayed_after_a_restart(AuthScheme::Digest).await;
    assert_ne!(
        answer.status_code(),
        Some(200),
        "alice's captured REGISTER was taken after the restart: {answer:?}"
    );
}
