//! Configuration reload: SIGHUP (or `Lifecycle::reload`) re-reads the file and applies what can
//! change live. A renewed TLS certificate is shown to new connections while an open one and its
//! SA go on; a broken file keeps the running configuration and is counted; a changed limit or
//! next hop applies to the next requests; a changed listen address waits for a restart and the
//! gateway keeps listening where it was.

mod auth_support;
mod lifecycle_support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use auth_support::{
    Client, DOMAIN, challenged, config, http, http_as, metric, metrics_of, unique, verified,
    write_admin_token,
};
use lifecycle_support::*;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use sagw_client::transport::{Connection, TransportKind};
use sagw_client::{AuthScheme, Endpoint, Failure, LocalAddr};
use sagw_gateway::reload::ConfigSource;
use tokio::net::UdpSocket;

#[test]
#[ignore = "the body of a gateway process the tests start"]
fn lifecycle_node() {
    node_main();
}

/// A gateway on loopback with the certificate files in `dir`, NTLM on, `extra` appended to
/// `[limits]`.
fn gateway_config(dir: &Path, limits: &str) -> String {
    let d = dir.display();
    format!(
        r#"
[log]
level = "warn"
[listen]
udp = "127.0.0.1:0"
tcp = "127.0.0.1:0"
tls = "127.0.0.1:0"
[tls]
cert = "{d}/cert.pem"
key = "{d}/key.pem"
[proxy]
core_cpu = "none"
[limits]
{limits}
[metrics]
listen = "127.0.0.1:0"
[auth]
enabled = true
schemes = ["ntlm"]
sip_domain = "{DOMAIN}"
fqdn = "sagw.example.com"
credentials = "{d}/users"
nonce_key = "{d}/nonce.key"
"#
    )
}

fn fingerprint_of(pem: &str) -> String {
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).expect("certificate");
    sagw_gateway::tls::fingerprint(der.as_ref())
}

/// A client over TLS to `addr`, trusting the certificates in `trusted`.
async fn tls_client(addr: SocketAddr, trusted: &Path) -> Client {
    let connector = sagw_client::transport::tls_connector(&sagw_client::transport::TlsOptions {
        trust: sagw_client::transport::TlsTrust::Pem(trusted.to_owned()),
        server_name: "127.0.0.1".into(),
    })
    .expect("tls config");
    let conn = Connection::connect(addr, TransportKind::Tls, Some((&connector, "127.0.0.1")))
        .await
        .expect("tls connect");
    let ep = Endpoint::new(
        config("alice", "alice-pw", AuthScheme::Ntlm, 4),
        LocalAddr {
            transport: conn.kind().via(),
            addr: conn.local_addr().to_string(),
        },
    );
    Client {
        conn,
        ep,
        rng: auth_support::rng(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_shows_new_connections_the_renewed_certificate_and_open_ones_go_on() {
    let dir = tempfile::tempdir().expect("dir");
    let (cert_a, key_a) = certificate();
    let (cert_b, key_b) = certificate();
    std::fs::write(dir.path().join("cert.pem"), &cert_a).expect("cert");
    write_key(&dir.path().join("key.pem"), &key_a);
    let trusted = dir.path().join("trusted.pem");
    std::fs::write(&trusted, format!("{cert_a}{cert_b}")).expect("bundle");
    let text = gateway_config(dir.path(), "");
    add_users(&text, &["alice"]);
    let node = Node::start(dir.path(), &text);
    let tls = node.tls.expect("tls listener");
    assert_eq!(
        presented_fingerprint(tls, &trusted).await,
        fingerprint_of(&cert_a)
    );

    let mut alice = tls_client(tls, &trusted).await;
    let (r, _) = alice.sign_in().await;
    assert_eq!(r.expect("signed in").status, 200);

    // The renewed certificate is written over the old files, as certbot and friends do.
    std::fs::write(dir.path().join("cert.pem"), &cert_b).expect("cert");
    write_key(&dir.path().join("key.pem"), &key_b);
    assert_eq!(node.reload_with(&text).await, Reloads { ok: 1, failed: 0 });
    assert_eq!(
        presented_fingerprint(tls, &trusted).await,
        fingerprint_of(&cert_b),
        "a new connection is shown the new certificate"
    );

    // The connection opened before the reload, and the SA on it, go on: a signed request is
    // answered with a valid signature, without a new handshake.
    let (r, seen) = alice
        .request("OPTIONS", &format!("sip:{DOMAIN}"), None)
        .await;
    let r = r.expect("answered on the old connection");
    assert_eq!(r.status, 200);
    assert!(verified(&r.signature), "{:?}", r.signature);
    assert!(!challenged(&seen), "no new handshake: {seen:?}");
}

/// An OPTIONS of about `size` bytes from `sock` to the gateway's domain.
fn options(sock: &UdpSocket, size: usize) -> Vec<u8> {
    let local = sock.local_addr().expect("local");
    let head = format!(
        "OPTIONS sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{n};rport\r\nMax-Forwards: 70\r\nFrom: <sip:probe@{DOMAIN}>;tag={n}\r\nTo: <sip:{DOMAIN}>\r\nCall-ID: reload-{n}\r\nCSeq: 1 OPTIONS\r\n",
        n = unique()
    );
    let pad = size.saturating_sub(head.len() + 40);
    format!(
        "{head}X-Padding: {}\r\nContent-Length: 0\r\n\r\n",
        "a".repeat(pad)
    )
    .into_bytes()
}

/// True when the gateway answers (anything: a challenge too) an OPTIONS of `size` bytes.
async fn answered(gw: SocketAddr, size: usize) -> bool {
    let sock = UdpSocket::bind("127.0.0.1:0").await.expect("udp");
    sock.send_to(&options(&sock, size), gw).await.expect("send");
    let mut buf = vec![0u8; 65_536];
    tokio::time::timeout(Duration::from_millis(700), sock.recv_from(&mut buf))
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_file_keeps_the_running_configuration_and_a_good_one_changes_a_limit() {
    let dir = tempfile::tempdir().expect("dir");
    let (cert, key) = certificate();
    std::fs::write(dir.path().join("cert.pem"), &cert).expect("cert");
    write_key(&dir.path().join("key.pem"), &key);
    let text = gateway_config(dir.path(), "max_message_bytes = 65535");
    add_users(&text, &["alice"]);
    let node = Node::start(dir.path(), &text);
    let udp = node.udp.expect("udp");
    assert!(answered(udp, 3000).await, "a 3000-byte OPTIONS is answered");

    // Not TOML at all.
    assert_eq!(
        node.reload_with("[[[ this is not toml").await,
        Reloads { ok: 0, failed: 1 }
    );
    assert!(answered(udp, 3000).await, "still serving");
    // TOML with a lower limit, and one invalid value: nothing of it applies.
    let invalid = gateway_config(
        dir.path(),
        "max_message_bytes = 1024\n[proxy]\nretry_after_secs = 0\n",
    )
    .replace("[proxy]\ncore_cpu = \"none\"\n", "");
    assert_eq!(
        node.reload_with(&invalid).await,
        Reloads { ok: 0, failed: 2 }
    );
    assert!(
        answered(udp, 3000).await,
        "the lower limit of the invalid file was not applied"
    );
    // Valid: the limit applies to the next datagram.
    let lower = gateway_config(dir.path(), "max_message_bytes = 1024");
    assert_eq!(node.reload_with(&lower).await, Reloads { ok: 1, failed: 2 });
    assert!(
        !answered(udp, 3000).await,
        "over the new limit: dropped unanswered"
    );
    assert!(answered(udp, 800).await, "under it: answered");
    let m = metrics_of(node.metrics).await;
    assert!(metric(&m, "sagw_limit_hits_total{limit=\"udp_size\"}") >= 1);
}

/// An edge with authentication off, on the UDP address `udp`, towards `hop`.
fn edge_config(udp: &str, hop: SocketAddr) -> String {
    format!(
        r#"
[log]
level = "warn"
[listen]
udp = "{udp}"
tcp = ""
tls = ""
[proxy]
mode = "edge"
next_hops = ["udp:{hop}"]
core_cpu = "none"
[metrics]
listen = ""
[auth]
enabled = false
"#
    )
}

/// A new directory with a certificate, its key and an admin token, and the configuration text
/// that uses them (not written yet).
fn directory_with_config() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("dir");
    let (cert, key) = certificate();
    std::fs::write(dir.path().join("cert.pem"), &cert).expect("cert");
    write_key(&dir.path().join("key.pem"), &key);
    let text = format!(
        "{}{}",
        gateway_config(dir.path(), ""),
        write_admin_token(dir.path())
    );
    (dir, text)
}

/// A gateway started from a configuration file in a new directory (a generated certificate, the
/// admin API, `users` added): the directory, the file, the gateway.
async fn gateway_from_file(
    users: &[&str],
) -> (tempfile::TempDir, std::path::PathBuf, sagw_gateway::Running) {
    let (dir, text) = directory_with_config();
    add_users(&text, users);
    let path = dir.path().join("sagw.toml");
    std::fs::write(&path, &text).expect("config");
    let gw = start_from_file(&path).await;
    (dir, path, gw)
}

async fn start_from_file(path: &Path) -> sagw_gateway::Running {
    let source = ConfigSource {
        path: Some(path.to_owned()),
        ..ConfigSource::default()
    };
    let gw = sagw_gateway::start(source.load().expect("valid"))
        .await
        .expect("starts");
    gw.set_config_source(source);
    gw
}

/// A MESSAGE for someone behind the edge, sent from `sock`.
fn message(sock: &UdpSocket) -> Vec<u8> {
    let local = sock.local_addr().expect("local");
    format!(
        "MESSAGE sip:bob@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{n};rport\r\nMax-Forwards: 70\r\nFrom: <sip:alice@{DOMAIN}>;tag={n}\r\nTo: <sip:bob@{DOMAIN}>\r\nCall-ID: hop-{n}\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n",
        n = unique()
    )
    .into_bytes()
}

async fn received(hop: &UdpSocket, within: Duration) -> bool {
    let mut buf = vec![0u8; 65_536];
    tokio::time::timeout(within, hop.recv_from(&mut buf))
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_sends_the_next_requests_to_the_new_next_hop() {
    let dir = tempfile::tempdir().expect("dir");
    let hop_a = UdpSocket::bind("127.0.0.1:0").await.expect("hop a");
    let hop_b = UdpSocket::bind("127.0.0.1:0").await.expect("hop b");
    let path = dir.path().join("sagw.toml");
    std::fs::write(
        &path,
        edge_config("127.0.0.1:0", hop_a.local_addr().expect("a")),
    )
    .expect("config");
    let gw = start_from_file(&path).await;
    let udp = gw.udp.expect("udp");
    let client = UdpSocket::bind("127.0.0.1:0").await.expect("client");

    client.send_to(&message(&client), udp).await.expect("send");
    assert!(received(&hop_a, WAIT).await, "the first next hop gets it");

    std::fs::write(
        &path,
        edge_config("127.0.0.1:0", hop_b.local_addr().expect("b")),
    )
    .expect("config");
    let report = gw.lifecycle().reload().expect("reloaded");
    assert_eq!(report.applied, ["proxy.next_hops"]);
    assert!(report.needs_restart.is_empty(), "{report:?}");

    client.send_to(&message(&client), udp).await.expect("send");
    assert!(received(&hop_b, WAIT).await, "the new next hop gets it");
    assert!(
        !received(&hop_a, Duration::from_millis(300)).await,
        "the old one no longer does"
    );
    gw.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_listen_address_waits_for_a_restart_and_the_old_one_keeps_serving() {
    let dir = tempfile::tempdir().expect("dir");
    let free = || {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("a free port")
    };
    let (old, new) = (free(), free());
    let hop = UdpSocket::bind("127.0.0.1:0").await.expect("hop");
    let hop_addr = hop.local_addr().expect("hop");
    let path = dir.path().join("sagw.toml");
    std::fs::write(&path, edge_config(&old.to_string(), hop_addr)).expect("config");
    let gw = start_from_file(&path).await;
    assert_eq!(gw.udp, Some(old));

    std::fs::write(&path, edge_config(&new.to_string(), hop_addr)).expect("config");
    let report = gw.reload().expect("reloaded");
    assert_eq!(report.needs_restart, ["listen.udp"]);
    assert!(report.applied.is_empty(), "{report:?}");

    let client = UdpSocket::bind("127.0.0.1:0").await.expect("client");
    client.send_to(&message(&client), old).await.expect("send");
    assert!(
        received(&hop, WAIT).await,
        "still listening on the old address"
    );
    assert!(
        std::net::UdpSocket::bind(new).is_ok(),
        "the new address was not bound"
    );
    gw.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_configuration_source_a_reload_changes_nothing_and_says_why() {
    let hop = UdpSocket::bind("127.0.0.1:0").await.expect("hop");
    let settings =
        sagw_gateway::Config::parse(&edge_config("127.0.0.1:0", hop.local_addr().expect("hop")))
            .expect("parses")
            .validate()
            .expect("valid");
    let gw = sagw_gateway::start(settings).await.expect("starts");
    let e = gw.reload().expect_err("nothing to re-read");
    assert!(e.0.contains("configuration source"), "{e}");
    gw.shutdown(Duration::from_secs(2)).await;
}

/// The operator removes mallory from the credentials file, but the new file cannot be loaded
/// (here: readable by others). The reload must fail, saying why, rather than answer "ok" while
/// mallory's SA goes on; once the file is fixed, a reload ends her SA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_fails_while_the_credentials_file_cannot_be_loaded() {
    use std::os::unix::fs::PermissionsExt;
    let (_dir, path, gw) = gateway_from_file(&["alice", "mallory"]).await;
    let mut mallory = Client::connect(
        &gw,
        TransportKind::Tcp,
        config("mallory", "mallory-pw", AuthScheme::Ntlm, 4),
    )
    .await;
    let (r, _) = mallory.sign_in().await;
    r.unwrap_or_else(|f| panic!("mallory: {f}\n{}", mallory.trace()));

    let text = std::fs::read_to_string(&path).expect("config");
    let auth = sagw_gateway::Config::parse(&text)
        .expect("parses")
        .validate()
        .expect("valid")
        .auth
        .expect("auth");
    assert!(sagw_gateway::users::remove(&auth, "mallory").expect("removed"));
    std::fs::set_permissions(&auth.credentials, std::fs::Permissions::from_mode(0o644))
        .expect("chmod");
    let (status, body) = http(&gw, "POST", "/admin/reload").await;
    assert!(status.contains(" 422 "), "{status} {body}");
    assert!(
        body.contains("credentials") && body.contains("644"),
        "the error names the file's problem: {body}"
    );
    let failed = |m: &str| metric(m, "sagw_config_reloads_total{result=\"failed\"}");
    assert_eq!(
        failed(&metrics_of(gw.metrics_addr.expect("metrics")).await),
        1
    );

    // Fixed: the reload goes through and mallory's SA is gone.
    std::fs::set_permissions(&auth.credentials, std::fs::Permissions::from_mode(0o600))
        .expect("chmod");
    let (status, body) = http(&gw, "POST", "/admin/reload").await;
    assert!(status.contains(" 200 "), "{status} {body}");
    let (_, sas) = http(&gw, "GET", "/admin/sas").await;
    assert!(!sas.contains("mallory"), "{sas}");
    match mallory
        .request("OPTIONS", &format!("sip:{DOMAIN}"), None)
        .await
        .0
    {
        Err(Failure::SaRejected { .. }) => {}
        other => panic!(
            "mallory's SA after the reload: {other:?}\n{}",
            mallory.trace()
        ),
    }
    gw.shutdown(Duration::from_secs(2)).await;
}

/// An operator who replaces a leaked admin token (a new file) and reloads (SIGHUP, or the API
/// with the old token) has the new one in force and the old one refused at once. Before, the
/// token was read at start only: the reload said "ok", listed nothing as needing a restart,
/// and the leaked token kept working until one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_puts_a_replaced_admin_token_in_force() {
    use std::os::unix::fs::OpenOptionsExt;
    let (dir, _path, gw) = gateway_from_file(&["alice"]).await;
    let new = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let token_file = dir.path().join("admin.token");
    std::fs::remove_file(&token_file).expect("remove");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&token_file)
        .expect("new token file");
    std::io::Write::write_all(&mut f, format!("{new}\n").as_bytes()).expect("write");
    let (status, body) = http(&gw, "POST", "/admin/reload").await;
    assert!(status.contains(" 200 "), "{status} {body}");
    assert!(
        body.contains("admin.token_file"),
        "reported as applied: {body}"
    );
    assert!(
        http_as(&gw, auth_support::ADMIN_TOKEN, "GET", "/admin/sas")
            .await
            .0
            .contains(" 401 "),
        "the old token after the reload"
    );
    assert!(
        http_as(&gw, new, "GET", "/admin/sas")
            .await
            .0
            .contains(" 200 "),
        "the new token after the reload"
    );
    // A token file others may read fails the reload, and the token in force stays.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    assert!(
        http_as(&gw, new, "POST", "/admin/reload")
            .await
            .0
            .contains(" 422 ")
    );
    assert!(
        http_as(&gw, new, "GET", "/admin/sas")
            .await
            .0
            .contains(" 200 "),
        "the token in force after a failed reload"
    );
    gw.shutdown(Duration::from_secs(2)).await;
}

/// An API off since start (no token file then) is not turned on by a reload after the token was
/// written: the reload says it needs a restart. Before, it answered "ok" with nothing to restart,
/// and the operator waited for an API that never came.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_written_after_the_start_is_reported_as_needing_a_restart() {
    let (dir, text) = directory_with_config();
    let path = dir.path().join("sagw.toml");
    std::fs::write(&path, &text).expect("config");
    std::fs::remove_file(dir.path().join("admin.token")).expect("no token yet");
    let gw = start_from_file(&path).await;
    assert_eq!(gw.admin_addr, None, "no token, no API");
    let report = gw.reload().expect("reloaded");
    assert!(
        !report.needs_restart.iter().any(|k| k == "admin.token_file"),
        "{report:?}"
    );
    write_admin_token(dir.path());
    let report = gw.reload().expect("reloaded");
    assert!(
        report.needs_restart.iter().any(|k| k == "admin.token_file"),
        "{report:?}"
    );
    gw.shutdown(Duration::from_secs(2)).await;
}

/// Two records of one kind for one user (names differing only in case, as lookups ignore it), or
/// two users signing in as one SIP identity: which one counts would be the loader's guess. A
/// reload that meets such a file fails, names the line and the user (never a hash), and keeps the
/// users in force; a start from it fails the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credentials_file_with_a_user_or_an_identity_twice_is_refused_at_reload_and_start() {
    let (dir, path, gw) = gateway_from_file(&["alice", "bob"]).await;
    let users = dir.path().join("users");
    let good = std::fs::read_to_string(&users).expect("users");
    let next = good.lines().count() + 1;
    // MD4 of "password": not alice's.
    const OTHER_NT: &str = "8846F7EAEE8FB117AD06BDD830B7586C";
    let cases = [
        // alice again, in capitals, with another hash: which one would NTLM check?
        (format!("ALICE nt {OTHER_NT}\n"), next, "ALICE"),
        // Two users, one `sip` identity (ASCII case ignored).
        (
            "alice sip sip:boss@example.com\nbob sip sip:Boss@example.com\n".to_owned(),
            next + 1,
            "bob",
        ),
        // bob's `sip` line takes alice's default identity, sip:alice@<sip_domain>.
        ("bob sip sip:alice@example.com\n".to_owned(), next, "bob"),
    ];
    for (extra, line, user) in &cases {
        // Written whole and renamed over the file (mode 600), never in place: the gateway's
        // periodic check may read a file being written in place while it is still empty (no
        // users: valid), and the users in force would then be none.
        let tmp = dir.path().join("users.new");
        write_key(&tmp, &format!("{good}{extra}"));
        std::fs::rename(&tmp, &users).expect("rename");
        let (status, body) = http(&gw, "POST", "/admin/reload").await;
        assert!(status.contains(" 422 "), "{extra:?}: {status} {body}");
        let body = serde_json::from_str::<serde_json::Value>(&body).expect("JSON")["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error in {body}"))
            .to_owned();
        assert!(
            body.contains(&format!("\"{user}\"")) && body.contains("credentials"),
            "the error names the user: {extra:?}: {body}"
        );
        assert!(
            body.contains(&format!("line {line}")),
            "the error names the line: {extra:?}: {body}"
        );
        assert!(
            !body.contains(OTHER_NT) && !body.contains("8846"),
            "no hash in the error: {body}"
        );
        // The users in force are the ones loaded before: alice signs in with her password.
        Client::signed_in(
            &gw,
            TransportKind::Tcp,
            config("alice", "alice-pw", AuthScheme::Ntlm, 4),
        )
        .await;

        // And a gateway does not start from that file.
        let source = ConfigSource {
            path: Some(path.clone()),
            ..ConfigSource::default()
        };
        let e = sagw_gateway::start(source.load().expect("valid config"))
            .await
            .err()
            .unwrap_or_else(|| panic!("started with {extra:?}"));
        let e = e.to_string();
        assert!(
            e.contains(&format!("\"{user}\"")) && !e.contains("8846"),
            "{extra:?}: {e}"
        );
    }
    gw.shutdown(Duration::from_secs(2)).await;
}

/// `pem` written as a private key file (or any secret: the credentials file), mode 600 from its
/// creation.
fn write_key(path: &Path, pem: &str) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .expect("key file");
    std::io::Write::write_all(&mut f, pem.as_bytes()).expect("key");
}

/// A TLS private key that other users may read or write (mode & 0o007) is refused, at start and
/// at a reload, naming the file, its mode and the fix; one its group may read (0640, Debian's
/// ssl-cert group) is not. The same for the client key presented to next hops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_key_other_users_can_read_is_refused_at_start_and_reload() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("dir");
    let (cert, key) = certificate();
    std::fs::write(dir.path().join("cert.pem"), &cert).expect("cert");
    let key_path = dir.path().join("key.pem");
    write_key(&key_path, &key);
    let client_key = dir.path().join("client-key.pem");
    write_key(&client_key, &key);
    let chmod = |p: &Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).expect("chmod")
    };
    let d = dir.path().display();
    let outbound = format!(
        "[tls]\nnext_hop_ca = \"{d}/cert.pem\"\nclient_cert = \"{d}/cert.pem\"\nclient_key = \"{d}/client-key.pem\"\n"
    );
    let text = format!(
        "{}{}",
        gateway_config(dir.path(), "").replacen("[tls]\n", &outbound, 1),
        write_admin_token(dir.path())
    );
    add_users(&text, &["alice"]);
    let path = dir.path().join("sagw.toml");
    std::fs::write(&path, &text).expect("config");
    let start = || async {
        let source = ConfigSource {
            path: Some(path.clone()),
            ..ConfigSource::default()
        };
        sagw_gateway::start(source.load().expect("valid config")).await
    };
    for (file, mode) in [(&key_path, 0o644), (&key_path, 0o602), (&client_key, 0o604)] {
        chmod(file, mode);
        let e = start()
            .await
            .err()
            .unwrap_or_else(|| panic!("started with {} at {mode:o}", file.display()))
            .to_string();
        assert!(
            e.contains(&file.display().to_string())
                && e.contains(&format!("{mode:o}"))
                && e.contains("chmod 600"),
            "{e}"
        );
        assert!(!e.contains("PRIVATE KEY"), "{e}");
        chmod(file, 0o600);
    }
    // Group-readable: fine.
    chmod(&key_path, 0o640);
    chmod(&client_key, 0o640);
    let gw = start().await.expect("starts with keys at 640");
    gw.set_config_source(ConfigSource {
        path: Some(path.clone()),
        ..ConfigSource::default()
    });
    for file in [&key_path, &client_key] {
        chmod(file, 0o644);
        let (status, body) = http(&gw, "POST", "/admin/reload").await;
        assert!(status.contains(" 422 "), "{status} {body}");
        assert!(
            body.contains(&file.display().to_string()) && body.contains("644"),
            "{body}"
        );
        chmod(file, 0o640);
    }
    let (status, body) = http(&gw, "POST", "/admin/reload").await;
    assert!(status.contains(" 200 "), "{status} {body}");
    gw.shutdown(Duration::from_secs(2)).await;
}
