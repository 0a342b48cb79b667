//! A local DNS server for the RFC 3263 tests: Debian's `dnsmasq` on a free loopback port, serving
//! only the records a test gives it (`--srv-host`, `--host-record`, authoritative for `.test`,
//! nothing forwarded); ready once it answers; killed when dropped.
//!
//! When the binary is missing: with `CI=true` that is a test failure, otherwise the tests say why
//! (loudly) and skip, like the Kamailio helper.
#![allow(dead_code)]

use std::io::Write as _;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running dnsmasq.
pub struct Dnsmasq {
    /// Where it answers (UDP and TCP).
    pub addr: SocketAddr,
    log: PathBuf,
    child: Child,
}

fn binary() -> Option<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/usr/local/sbin"]
        .iter()
        .map(|d| Path::new(d).join("dnsmasq"))
        .find(|p| p.exists())
}

/// Starts dnsmasq with `args` (its record options), or returns None (after saying why) when it is
/// not installed; with CI=true that is a panic instead.
pub fn dnsmasq(args: &[String]) -> Option<Dnsmasq> {
    let Some(bin) = binary() else {
        let why = "the `dnsmasq` binary is not installed (Debian package dnsmasq-base; \
                   scripts/setup-debian.sh installs it)";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true and dnsmasq cannot run: {why}");
        }
        let _ = writeln!(
            std::io::stderr(),
            "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
             !! SKIPPING the RFC 3263 tests: {why}.\n\
             !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
        );
        return None;
    };
    let mut last = String::new();
    // A port picked by binding :0 may be taken again before dnsmasq binds it: retry.
    for _ in 0..3 {
        match Dnsmasq::start(&bin, args) {
            Ok(d) => return Some(d),
            Err(e) => last = e,
        }
    }
    panic!("dnsmasq did not start: {last}");
}

impl Dnsmasq {
    fn start(bin: &Path, args: &[String]) -> Result<Dnsmasq, String> {
        let port = UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let log =
            std::env::temp_dir().join(format!("sagw-dnsmasq-{}-{port}.log", std::process::id()));
        let file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let child = Command::new(bin)
            .args([
                "--no-daemon",
                "--conf-file=/dev/null",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--no-resolv",
                "--no-hosts",
                "--pid-file=",
                "--user=root",
                "--group=root",
                // Answers for .test come from here only (NXDOMAIN/NODATA, never REFUSED).
                "--local=/test/",
                "--host-record=ready.test,127.0.0.1",
                "--log-queries",
                "--log-facility=-",
            ])
            .arg(format!("--port={port}"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .map_err(|e| format!("spawn dnsmasq: {e}"))?;
        let mut d = Dnsmasq {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
            child,
        };
        d.wait_ready(Duration::from_secs(5))?;
        Ok(d)
    }

    /// Waits until an A query for `ready.test` is answered.
    fn wait_ready(&mut self, limit: Duration) -> Result<(), String> {
        let sock = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .map_err(|e| e.to_string())?;
        let mut query = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in ["ready", "test"] {
            query.push(label.len() as u8);
            query.extend_from_slice(label.as_bytes());
        }
        query.extend_from_slice(&[0, 0, 1, 0, 1]);
        let deadline = Instant::now() + limit;
        let mut buf = [0u8; 512];
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("dnsmasq exited ({status}):\n{}", self.tail()));
            }
            let _ = sock.send_to(&query, self.addr);
            if let Ok(n) = sock.recv(&mut buf)
                && n > 12
                && buf[..2] == [0x12, 0x34]
            {
                return Ok(());
            }
        }
        let _ = self.child.kill();
        Err(format!(
            "dnsmasq did not answer within {limit:?}:\n{}",
            self.tail()
        ))
    }

    /// Its log.
    pub fn tail(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- dnsmasq log ---\n{}\n--- end ---", self.tail());
        }
        let _ = std::fs::remove_file(&self.log);
    }
}
