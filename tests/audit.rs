//! The audit trail, read where an operator reads it: the standard error of a gateway process.
//! The gateway is this test binary started again as `audit_node` (logging installed as `sagw`
//! installs it, JSON format, standard error a pipe), and real clients (`sagw-client`) sign in to it
//! with NTLM and Digest, with the right and with a wrong password.

mod auth_support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use auth_support::*;
use sagw_client::session::RngSend;
use sagw_client::transport::TransportKind;
use sagw_client::{AuthScheme, Step};
use serde_json::Value;

const NODE_ENV: &str = "SAGW_AUDIT_NODE_CONFIG";

/// The gateway process (run by [`Gateway::start`], not on its own).
#[test]
#[ignore = "the gateway process of the audit tests"]
fn audit_node() {
    let Ok(path) = std::env::var(NODE_ENV) else {
        return;
    };
    let settings = sagw_gateway::Config::load(path.as_ref())
        .expect("node config")
        .validate()
        .expect("node config valid");
    sagw_gateway::logging::init(&settings.log_level, settings.log_format);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let gw = sagw_gateway::start(settings).await.expect("node starts");
        // What `sagw` does: a reload re-reads the file.
        gw.set_config_source(sagw_gateway::reload::ConfigSource {
            path: Some(path.into()),
            ..Default::default()
        });
        println!(
            "READY tcp={} admin={}",
            gw.tcp.expect("tcp"),
            gw.admin_addr.expect("admin")
        );
        // Until the test kills it.
        std::future::pending::<()>().await;
    });
}

struct Gateway {
    child: Child,
    tcp: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    stderr: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    fn start() -> Gateway {
        let dir = tempfile::tempdir().expect("dir");
        let d = dir.path().display();
        let admin = write_admin_token(dir.path());
        let text = format!(
            r#"
[log]
level = "info"
format = "json"
[listen]
udp = "127.0.0.1:0"
tcp = "127.0.0.1:0"
tls = ""
[proxy]
core_cpu = "none"
[metrics]
listen = ""
{admin}
[auth]
enabled = true
schemes = ["ntlm", "digest"]
sip_domain = "{DOMAIN}"
fqdn = "sagw.example.com"
credentials = "{d}/users"
nonce_key = "{d}/nonce.key"
[state]
key_file = "{d}/pool.key"
snapshot = ""
"#
        );
        let path = dir.path().join("gw.toml");
        std::fs::write(&path, &text).expect("config");
        let auth = sagw_gateway::Config::parse(&text)
            .expect("parses")
            .validate()
            .expect("valid")
            .auth
            .expect("auth on");
        for (u, p) in [("alice", "alice-pw"), ("carol", "carol-pw")] {
            sagw_gateway::users::add(&auth, u, p, None).expect("user");
        }
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "audit_node",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(NODE_ENV, &path)
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("gateway process");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let lines = stderr.clone();
        let err = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                lines.lock().expect("lines").push(line);
            }
        });
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(i) = line.find("READY ") {
                    let _ = tx.send(line[i + 6..].trim().to_owned());
                }
            }
        });
        let addr = |ready: &str, name: &str| {
            ready
                .split(' ')
                .find_map(|f| f.strip_prefix(name)?.parse().ok())
        };
        let (tcp, admin) = rx
            .recv_timeout(Duration::from_secs(20))
            .ok()
            .and_then(|ready| Some((addr(&ready, "tcp=")?, addr(&ready, "admin=")?)))
            .unwrap_or_else(|| {
                let _ = child.kill();
                panic!(
                    "the gateway did not start: {:?}",
                    stderr.lock().expect("lines")
                );
            });
        Gateway {
            child,
            tcp,
            admin,
            stderr,
            _dir: dir,
        }
    }

    /// The audit events so far, once there are at least `n` (or after 5 s).
    fn audit(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let events: Vec<Value> = self
                .stderr
                .lock()
                .expect("lines")
                .iter()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|v| v["target"] == "sagw::audit")
                .collect();
            if events.len() >= n || Instant::now() > deadline {
                return events;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn all_stderr(&self) -> String {
        self.stderr.lock().expect("lines").join("\n")
    }
}

/// Values of `name="…"` in a trace of SIP messages.
fn quoted_params(trace: &str, name: &str) -> Vec<String> {
    let key = format!("{name}=\"");
    trace
        .match_indices(&key)
        .filter_map(|(i, _)| {
            let rest = &trace[i + key.len()..];
            rest.find('"').map(|end| rest[..end].to_owned())
        })
        .filter(|v| v.len() >= 8)
        .collect()
}

/// Signs in over TCP, keeping every message both ways as text: (signed in, client, wire text).
async fn attempt(
    gw: &Gateway,
    user: &str,
    password: &str,
    scheme: AuthScheme,
) -> (bool, Client, String) {
    let mut c = Client::connect_to(
        gw.tcp,
        TransportKind::Tcp,
        config(user, password, scheme, 4),
    )
    .await;
    let mut wire = String::new();
    let mut pending = c.ep.start_register(c.rng.as_rng()).expect("REGISTER");
    loop {
        wire.push_str(&String::from_utf8_lossy(&pending.to_bytes()));
        c.conn.send(&pending).await.expect("send");
        let step = loop {
            let m = tokio::time::timeout(WAIT, c.conn.recv())
                .await
                .expect("an answer in time")
                .expect("recv");
            wire.push_str(&String::from_utf8_lossy(&m.to_bytes()));
            let step = c.ep.on_response(&m, SystemTime::now(), c.rng.as_rng());
            if !matches!(step, Step::Wait) {
                break step;
            }
        };
        match step {
            Step::Send(m) => pending = m,
            Step::Done(_) => return (true, c, wire),
            _ => return (false, c, wire),
        }
    }
}

fn find<'a>(events: &'a [Value], outcome: &str, scheme: &str, user_part: &str) -> &'a Value {
    events
        .iter()
        .find(|e| {
            e["fields"]["outcome"] == outcome
                && e["fields"]["scheme"] == scheme
                && e["fields"]["user"]
                    .as_str()
                    .is_some_and(|u| u.contains(user_part))
        })
        .unwrap_or_else(|| panic!("{outcome} {scheme} {user_part} in {events:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_ins_and_refusals_are_audited_without_secrets() {
    let gw = Gateway::start();
    let (ok, alice, w1) = attempt(&gw, "alice", "alice-pw", AuthScheme::Ntlm).await;
    assert!(ok, "{w1}");
    let (ok, mallory, w2) = attempt(&gw, "alice", "not-alices-pw", AuthScheme::Ntlm).await;
    assert!(!ok, "{w2}");
    let (ok, _carol, w3) = attempt(&gw, "carol", "carol-pw", AuthScheme::Digest).await;
    assert!(ok, "{w3}");
    let (ok, eve, w4) = attempt(&gw, "carol", "guessed-pw", AuthScheme::Digest).await;
    assert!(!ok, "{w4}");

    let events = gw.audit(4);
    for e in &events {
        assert_eq!(e["level"], "INFO", "{e}");
    }
    let s = find(&events, "signed_in", "ntlm", "sip:alice@");
    let alice_port = alice.conn.local_addr().port();
    assert_eq!(s["fields"]["source"], format!("127.0.0.1:{alice_port}"));
    assert_eq!(s["fields"]["transport"], "tcp");
    let opaque = alice
        .ep
        .sa()
        .and_then(|sa| sa.opaque())
        .expect("SA")
        .to_owned();
    assert_eq!(
        s["fields"]["sa"],
        opaque.as_str(),
        "the SA's public name, for revoke"
    );

    let r = find(&events, "refused", "ntlm", "alice");
    assert_eq!(r["fields"]["reason"], "wrong_password");
    assert_eq!(
        r["fields"]["source"],
        format!("127.0.0.1:{}", mallory.conn.local_addr().port())
    );
    let d = find(&events, "signed_in", "digest", "sip:carol@");
    assert_eq!(d["fields"]["method"], "REGISTER");
    let r = find(&events, "refused", "digest", "carol");
    assert_eq!(r["fields"]["reason"], "wrong_password");
    assert_eq!(
        r["fields"]["source"],
        format!("127.0.0.1:{}", eve.conn.local_addr().port())
    );

    // Nothing secret, anywhere on standard error: not the passwords, not a token or response
    // any client sent, not a nonce the gateway issued.
    let all = gw.all_stderr();
    for password in ["alice-pw", "not-alices-pw", "carol-pw", "guessed-pw"] {
        assert!(!all.contains(password), "{password} logged");
    }
    let mut secrets = Vec::new();
    for wire in [&w1, &w2, &w3, &w4] {
        for p in [
            "gssapi-data",
            "response",
            "nonce",
            "cnonce",
            "rspauth",
            "crand",
            "srand",
        ] {
            secrets.extend(quoted_params(wire, p));
        }
    }
    assert!(
        secrets.len() >= 8,
        "the clients' traces hold their credentials: {secrets:?}"
    );
    for s in &secrets {
        assert!(!all.contains(s.as_str()), "{s} logged:\n{all}");
    }
    // Standard error is a pipe here: no colour codes.
    assert!(!all.contains('\u{1b}'), "ANSI escapes on a pipe");
}

/// An admin API request with `body`; the status code.
async fn admin(gw: &Gateway, method: &str, path: &str, body: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(gw.admin)
        .await
        .expect("admin");
    s.write_all(
        format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .expect("write");
    let mut out = String::new();
    tokio::time::timeout(WAIT, s.read_to_string(&mut out))
        .await
        .expect("an answer in time")
        .expect("read");
    out.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("{out}"))
}

/// `PUT /admin/log-level` with `level` as the body; the status code.
async fn put_log_level(gw: &Gateway, level: &str) -> u16 {
    admin(gw, "PUT", "/admin/log-level", level).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_logging_off_is_audited_before_it_applies() {
    let gw = Gateway::start();
    // A filter with a line break would write a line of the caller's into the log: refused.
    assert_eq!(put_log_level(&gw, "info\nforged").await, 400);
    assert_eq!(put_log_level(&gw, "off").await, 200);
    let events = gw.audit(1);
    let change = events
        .iter()
        .find(|e| e["fields"]["new"] == "off")
        .unwrap_or_else(|| panic!("the change in {events:#?}\n{}", gw.all_stderr()));
    assert_eq!(change["fields"]["old"], "info", "{change}");
    // And off it is: nothing logged after it (a refused sign-in would be audited otherwise).
    let (ok, _c, _) = attempt(&gw, "alice", "not-alices-pw", AuthScheme::Ntlm).await;
    assert!(!ok);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(gw.audit(0).len(), 1, "{}", gw.all_stderr());
}

/// `POST /admin/reload`; the status code.
async fn reload(gw: &Gateway) -> u16 {
    admin(gw, "POST", "/admin/reload", "").await
}

/// A log filter changed by a reload of `log.level` is audited as one changed through the API
/// is: who (`by`), the filter it replaced and the new one. A reload that leaves it alone records
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_level_changed_by_a_reload_is_audited() {
    let gw = Gateway::start();
    let path = gw._dir.path().join("gw.toml");
    let text = std::fs::read_to_string(&path).expect("config");
    // Still lets the audit trail through, so that what comes after shows too.
    let new = "info,hyper=warn";
    std::fs::write(
        &path,
        text.replacen("level = \"info\"", &format!("level = \"{new}\""), 1),
    )
    .expect("config");
    assert_eq!(reload(&gw).await, 200, "{}", gw.all_stderr());
    let changes = |events: Vec<Value>| -> Vec<Value> {
        events
            .into_iter()
            .filter(|e| e["fields"]["new"].is_string())
            .collect()
    };
    let seen = changes(gw.audit(1));
    let change = seen
        .first()
        .unwrap_or_else(|| panic!("no audit event for the change\n{}", gw.all_stderr()));
    assert_eq!(change["fields"]["old"], "info", "{change}");
    assert_eq!(change["fields"]["new"], new, "{change}");
    assert_eq!(change["fields"]["by"], "reload", "{change}");
    // Unchanged: nothing more.
    assert_eq!(reload(&gw).await, 200);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(changes(gw.audit(0)).len(), 1, "{}", gw.all_stderr());
    // Through the API: the same event, by the API.
    assert_eq!(put_log_level(&gw, "info").await, 200);
    let seen = changes(gw.audit(2));
    let api = seen.get(1).unwrap_or_else(|| panic!("{seen:#?}"));
    assert_eq!(api["fields"]["old"], new, "{api}");
    assert_eq!(api["fields"]["by"], "admin_api", "{api}");
}

/// A flood of requests anyone can send (Digest credentials with a made-up nonce: refused as
/// `bad_nonce`) writes at most `REFUSALS_PER_SECOND` audit lines a second,
/// and one line with the count of the rest. Before, each one was a line written on the core
/// thread: a flood stalled SIP behind a slow journal and pushed real events out of its rate limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_refusals_writes_a_bounded_number_of_audit_lines() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gw = Gateway::start();
    let flood = 400usize;
    let mut s = tokio::net::TcpStream::connect(gw.tcp).await.expect("tcp");
    let local = s.local_addr().expect("local");
    let mut batch = String::new();
    for i in 0..flood {
        batch.push_str(&format!(
            "MESSAGE sip:bob@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/TCP {local};branch=z9hG4bKfl{i}\r\n\
Max-Forwards: 70\r\nFrom: <sip:mallory@{DOMAIN}>;tag=m{i}\r\nTo: <sip:bob@{DOMAIN}>\r\n\
Call-ID: flood-{i}\r\nCSeq: 1 MESSAGE\r\nProxy-Authorization: Digest username=\"mallory\", \
realm=\"{DOMAIN}\", nonce=\"made-up-{i}\", uri=\"sip:bob@{DOMAIN}\", \
response=\"0123456789abcdef0123456789abcdef\"\r\nContent-Length: 0\r\n\r\n"
        ));
    }
    let started = Instant::now();
    s.write_all(batch.as_bytes()).await.expect("flood");
    // Every request answered (challenged), so all of them were judged.
    let mut answered = Vec::new();
    let mut buf = [0u8; 65_536];
    let deadline = tokio::time::Instant::now() + WAIT;
    while answered
        .windows(b"SIP/2.0 40".len())
        .filter(|w| *w == b"SIP/2.0 40")
        .count()
        < flood
    {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => answered.extend_from_slice(&buf[..n]),
            other => panic!("not every request was answered: {other:?}"),
        }
    }
    // The one-second windows the refusals fell in (on a loaded machine, more than one or two).
    let windows = started.elapsed().as_secs() as usize + 2;
    // The count of those not written comes within about a second.
    let deadline = Instant::now() + Duration::from_secs(5);
    let (refused, not_logged) = loop {
        let events = gw.audit(0);
        let refused = events
            .iter()
            .filter(|e| e["fields"]["outcome"] == "refused")
            .count();
        let not_logged: u64 = events
            .iter()
            .filter_map(|e| e["fields"]["not_logged"].as_u64())
            .sum();
        if refused as u64 + not_logged >= flood as u64 || Instant::now() > deadline {
            break (refused, not_logged);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // `REFUSALS_PER_SECOND` in crates/gateway/src/audit.rs.
    let limit = 50;
    assert!(
        (1..=windows * limit).contains(&refused) && refused < flood,
        "{refused} refusal lines for {flood} refusals"
    );
    assert_eq!(
        refused as u64 + not_logged,
        flood as u64,
        "every refusal written or counted"
    );
}
