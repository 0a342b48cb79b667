//! `sagw admin …` and `sagw reload`: the real binary against a real `sagw run`, the way an
//! operator types them (in this package so that Cargo builds the binary and names its path).

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SAGW: &str = env!("CARGO_BIN_EXE_sagw");

fn config(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"
[log]
level = "info"
[listen]
udp = "127.0.0.1:0"
tcp = "127.0.0.1:0"
tls = ""
[proxy]
core_cpu = "none"
[metrics]
listen = ""
[admin]
listen = "127.0.0.1:0"
token_file = "{d}/admin.token"
[auth]
enabled = true
schemes = ["digest"]
sip_domain = "example.com"
credentials = "{d}/users"
nonce_key = "{d}/nonce.key"
[state]
key_file = "{d}/pool.key"
snapshot = ""
"#
    )
}

fn sagw(cfg: &Path, args: &[&str]) -> Output {
    Command::new(SAGW)
        .arg("-c")
        .arg(cfg)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("sagw runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A running `sagw run`, its standard error collected line by line.
struct Gateway {
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    fn start(cfg: &Path, rust_log: &str) -> Gateway {
        let mut child = Command::new(SAGW)
            .arg("-c")
            .arg(cfg)
            .arg("run")
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sagw run");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let lines = stderr.clone();
        let err = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                lines.lock().expect("lines").push(line);
            }
        });
        Gateway { child, stderr }
    }

    /// The first line containing `what` (waiting up to 10 s).
    fn line(&self, what: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(l) = self
                .stderr
                .lock()
                .expect("lines")
                .iter()
                .find(|l| l.contains(what))
            {
                return l.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no `{what}` in {:?}",
                self.stderr
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn all(&self) -> String {
        self.stderr.lock().expect("lines").join("\n")
    }
}

/// `key=Some(ADDR)` in the "sagw listening" line.
fn field(line: &str, key: &str) -> SocketAddr {
    let start = line.find(&format!("{key}=Some(")).expect(key) + key.len() + 6;
    let rest = &line[start..];
    rest[..rest.find(')').expect(")")].parse().expect("address")
}

#[test]
fn the_admin_subcommands_drive_a_running_gateway() {
    let dir = tempfile::tempdir().expect("dir");
    let cfg = dir.path().join("sagw.toml");
    std::fs::write(&cfg, config(dir.path())).expect("config");

    // A token first: without one the API stays off.
    let out = sagw(&cfg, &["admin", "new-token"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let token_file = dir.path().join("admin.token");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file)
            .expect("token")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let again = sagw(&cfg, &["admin", "new-token"]);
    assert!(!again.status.success(), "an existing token is kept");

    let mut add = Command::new(SAGW)
        .arg("-c")
        .arg(&cfg)
        .args(["user", "add", "alice"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("user add");
    add.stdin
        .take()
        .expect("stdin")
        .write_all(b"alice-pw\n")
        .expect("password");
    assert!(add.wait().expect("user add").success());

    // RUST_LOG wins over log.level (and --log-level, not given here, would win over both).
    let filter = "warn,sagw_gateway::driver=info";
    let gw = Gateway::start(&cfg, filter);
    let listening = gw.line("sagw listening");
    let admin = field(&listening, "admin").to_string();
    let udp = field(&listening, "udp");
    let run = |args: &[&str]| {
        let mut all = vec!["admin", "--addr", admin.as_str()];
        all.extend_from_slice(args);
        sagw(&cfg, &all)
    };

    let ok = |args: &[&str]| -> String {
        let out = run(args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    assert!(ok(&["health"]).contains("\"alive\": true"));
    assert!(ok(&["ready"]).contains("\"ready\": true"));
    assert_eq!(ok(&["sas"]).trim(), "[]");
    assert_eq!(ok(&["registrations", "sip:alice@example.com"]).trim(), "[]");
    assert_eq!(ok(&["hops"]).trim(), "[]");
    assert!(ok(&["revoke-user", "alice"]).contains("\"revoked\": 0"));
    assert!(
        ok(&["log-level"]).contains(filter),
        "RUST_LOG is the filter in force"
    );

    // No debug line yet; one after the level changes, for a request the gateway then handles.
    let probe = |n: u32| {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
        let me = sock.local_addr().expect("addr");
        let msg = format!(
            "OPTIONS sip:{udp} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKcli{n}\r\nFrom: <sip:x@{me}>;tag={n}\r\n\
To: <sip:{udp}>\r\nCall-ID: cli-{n}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        );
        sock.set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        sock.send_to(msg.as_bytes(), udp).expect("send");
        let mut buf = [0u8; 4096];
        sock.recv_from(&mut buf).expect("an answer");
    };
    probe(1);
    assert!(!gw.all().contains("DEBUG"), "{}", gw.all());
    assert!(ok(&["log-level", "debug"]).contains("debug"));
    probe(2);
    gw.line("DEBUG");
    assert!(ok(&["log-level"]).contains("\"level\": \"debug\""));
    let bad = run(&["log-level", "nonsense=["]);
    assert!(!bad.status.success());
    assert!(text(&bad.stderr).contains("400"), "{}", text(&bad.stderr));

    // Not in this build: a clear failure.
    for args in [&["reload"][..], &["drain"]] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(text(&out.stderr).contains("501"), "{}", text(&out.stderr));
    }
    let out = sagw(&cfg, &["reload", "--addr", &admin]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("POST /admin/reload: HTTP 501"));

    // A wrong token, an exposed token file, nobody listening.
    let wrong = dir.path().join("wrong.token");
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&wrong)
            .expect("wrong token");
        f.write_all(b"not-the-token\n").expect("write");
    }
    let wrong_s = wrong.display().to_string();
    let out = run(&["--token-file", &wrong_s, "sas"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("HTTP 401"),
        "{}",
        text(&out.stderr)
    );
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    let out = run(&["--token-file", &wrong_s, "sas"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("chmod 600"),
        "{}",
        text(&out.stderr)
    );
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a port")
        .to_string();
    let out = sagw(&cfg, &["admin", "--addr", &closed, "sas"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cannot reach the admin API"),
        "{}",
        text(&out.stderr)
    );
}
