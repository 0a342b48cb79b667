//! A gateway in a process of its own, running the very signal loop `sagw` runs
//! (`sagw_gateway::signals::run`), for the reload and drain tests: each is the test binary itself
//! started again as `lifecycle_node` with a configuration file, and signalled with `kill`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::auth_support::{metric, metrics_of};
use sagw_gateway::reload::ConfigSource;

pub const NODE_ENV: &str = "SAGW_LIFECYCLE_NODE_CONFIG";
pub const WAIT: Duration = Duration::from_secs(5);

/// The body of a `lifecycle_node` process: what `sagw --config FILE` does.
pub fn node_main() {
    let Ok(path) = std::env::var(NODE_ENV) else {
        return;
    };
    let source = ConfigSource {
        path: Some(PathBuf::from(path)),
        ..ConfigSource::default()
    };
    let settings = source.load().expect("node config valid");
    sagw_gateway::logging::init(&settings.log_level, settings.log_format);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let ended = rt.block_on(async {
        let handlers = sagw_gateway::signals::Signals::install();
        let gw = sagw_gateway::start(settings).await.expect("node starts");
        let addr = |a: Option<SocketAddr>| a.map_or_else(|| "-".to_owned(), |a| a.to_string());
        println!(
            "READY udp={} tcp={} tls={} metrics={}",
            addr(gw.udp),
            addr(gw.tcp),
            addr(gw.tls),
            addr(gw.metrics_addr)
        );
        gw.set_config_source(source);
        sagw_gateway::signals::run(gw, handlers).await
    });
    // The harness reads the exit status: 0 only when the loop ended on a signal.
    std::process::exit(match ended {
        sagw_gateway::signals::Ended::Signalled => 0,
        sagw_gateway::signals::Ended::CoreFailed => 1,
    });
}

/// One gateway process.
pub struct Node {
    pub child: Child,
    pub udp: Option<SocketAddr>,
    pub tcp: Option<SocketAddr>,
    pub tls: Option<SocketAddr>,
    pub metrics: SocketAddr,
    pub config: PathBuf,
}

impl Node {
    /// Writes `text` to `dir/sagw.toml` and starts a node on it.
    pub fn start(dir: &Path, text: &str) -> Node {
        let config = dir.join("sagw.toml");
        std::fs::write(&config, text).expect("config");
        let level = std::env::var("SAGW_LIFECYCLE_LOG").ok();
        let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
        cmd.args([
            "lifecycle_node",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(NODE_ENV, &config)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        if let Some(l) = level {
            cmd.env("SAGW_LIFECYCLE_LOG", l);
        }
        let mut child = cmd.spawn().expect("node process");
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                // The harness may have written `test lifecycle_node ... ` on the same line.
                if let Some(i) = line.find("READY ") {
                    let _ = tx.send(line[i + 6..].to_owned());
                }
            }
        });
        let Ok(ready) = rx.recv_timeout(Duration::from_secs(20)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the gateway process did not start");
        };
        let field = |k: &str| -> Option<SocketAddr> {
            ready
                .split(' ')
                .find_map(|f| f.strip_prefix(&format!("{k}=")))
                .and_then(|v| v.parse().ok())
        };
        Node {
            udp: field("udp"),
            tcp: field("tcp"),
            tls: field("tls"),
            metrics: field("metrics").expect("metrics address"),
            child,
            config,
        }
    }

    /// Sends `signal` (`HUP`, `TERM`, `INT`) with the shell's `kill` (POSIX sh has it built
    /// in: no package beyond the base system).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!("kill -{signal} {}", self.child.id()))
            .status()
            .expect("sh");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Rewrites the configuration file, then SIGHUP; returns once the reload is counted (ok or
    /// failed) in the metrics, with the counts then.
    pub async fn reload_with(&self, text: &str) -> Reloads {
        let before = self.reloads().await;
        std::fs::write(&self.config, text).expect("config");
        self.signal("HUP");
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let now = self.reloads().await;
            if now != before {
                return now;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the reload was never counted"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `sagw_config_reloads_total` by result.
    pub async fn reloads(&self) -> Reloads {
        let m = metrics_of(self.metrics).await;
        Reloads {
            ok: metric(&m, "sagw_config_reloads_total{result=\"ok\"}"),
            failed: metric(&m, "sagw_config_reloads_total{result=\"failed\"}"),
        }
    }

    /// Waits (up to `limit`) for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let end = std::time::Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reloads counted by the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reloads {
    pub ok: u64,
    pub failed: u64,
}

/// Adds `users` (password `<user>-pw`) to the credentials file of the configuration `text`.
pub fn add_users(text: &str, users: &[&str]) {
    let auth = sagw_gateway::Config::parse(text)
        .expect("parses")
        .validate()
        .expect("valid")
        .auth
        .expect("auth");
    for u in users {
        sagw_gateway::users::add(&auth, u, &format!("{u}-pw"), None).expect("user");
    }
}

/// A self-signed certificate for 127.0.0.1 and its key, as PEM.
pub fn certificate() -> (String, String) {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("params")
        .self_signed(&pair)
        .expect("certificate");
    (cert.pem(), pair.serialize_pem())
}

/// The SHA-256 fingerprint (as the gateway logs it) of the certificate a new TLS connection to
/// `addr` is shown; `trusted` is a PEM bundle of the certificates the probe accepts.
pub async fn presented_fingerprint(addr: SocketAddr, trusted: &Path) -> String {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(trusted).expect("bundle") {
        roots.add(c.expect("certificate")).expect("root");
    }
    let cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let tls = tokio::time::timeout(
        WAIT,
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg)).connect(name, tcp),
    )
    .await
    .expect("handshake in time")
    .expect("handshake");
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("a certificate")
        .clone();
    sagw_gateway::tls::fingerprint(leaf.as_ref())
}
