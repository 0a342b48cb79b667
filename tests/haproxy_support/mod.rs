//! A real HAProxy (Debian `haproxy`) in front of a gateway: `tests/haproxy/gateway.cfg` (the
//! snippet docs/deployment.md shows) with its placeholders filled in, in the foreground, on a free
//! loopback port; ready once it accepts a connection; stopped when dropped (a wrapper shell kills
//! it when our pipe closes, also when the test process dies).
//!
//! When the binary is missing: with `CI=true` that is a test failure, otherwise the test says why
//! (loudly) and skips, like the Kamailio helper.
#![allow(dead_code)]

use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// `sh -c STOP_SCRIPT LOG HAPROXY ARGS...`: HAProxy in the background of a shell that waits on
/// its stdin and stops HAProxy when it closes.
const STOP_SCRIPT: &str = r#"
"$@" >"$0" 2>&1 & k=$!
read _x
kill $k 2>/dev/null
wait $k 2>/dev/null
"#;

/// A running HAProxy.
pub struct HaProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
    log: PathBuf,
    child: Child,
    stdin: Option<ChildStdin>,
}

fn binary() -> Option<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"]
        .iter()
        .map(|d| Path::new(d).join("haproxy"))
        .find(|p| p.exists())
}

impl HaProxy {
    /// HAProxy forwarding to `gateway` from `source` with `send-proxy-v2`, or None (after saying
    /// why) when it is not installed, which with CI=true is a panic instead. An installed HAProxy
    /// that does not start always panics.
    pub fn start(gateway: SocketAddr, source: &str) -> Option<HaProxy> {
        let Some(bin) = binary() else {
            let why = "the `haproxy` binary is not installed (Debian package haproxy; \
                       scripts/setup-debian.sh installs it)";
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("CI=true and HAProxy cannot run: {why}");
            }
            let _ = writeln!(
                std::io::stderr(),
                "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
                 !! SKIPPING the HAProxy test: {why}.\n\
                 !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
            );
            return None;
        };
        let mut last = String::new();
        // A port picked by binding :0 may be taken again before HAProxy binds it: retry.
        for _ in 0..3 {
            match HaProxy::try_start(&bin, gateway, source) {
                Ok(h) => return Some(h),
                Err(e) => last = e,
            }
        }
        panic!("HAProxy did not start: {last}");
    }

    fn try_start(bin: &Path, gateway: SocketAddr, source: &str) -> Result<HaProxy, String> {
        let dir = tempfile::Builder::new()
            .prefix("sagw-haproxy-")
            .tempdir()
            .map_err(|e| format!("tempdir: {e}"))?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("free port: {e}"))?
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let template = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("haproxy/gateway.cfg"),
        )
        .map_err(|e| format!("haproxy/gateway.cfg: {e}"))?;
        let cfg = dir.path().join("haproxy.cfg");
        std::fs::write(
            &cfg,
            template
                .replace("FRONTEND", &addr.to_string())
                .replace("GATEWAY", &gateway.to_string())
                .replace("SOURCE", source),
        )
        .map_err(|e| format!("write config: {e}"))?;
        let log = dir.path().join("haproxy.log");
        // -db: foreground, no daemon; -f: the configuration.
        let child = Command::new("sh")
            .arg("-c")
            .arg(STOP_SCRIPT)
            .arg(&log)
            .arg(bin)
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn haproxy: {e}"))?;
        let mut h = HaProxy {
            addr,
            dir,
            log,
            child,
            stdin: None,
        };
        h.stdin = h.child.stdin.take();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = h.child.try_wait() {
                return Err(format!("haproxy exited ({status}):\n{}", h.log()));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(h);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "haproxy did not listen on {addr} within 10 s:\n{}",
            h.log()
        ))
    }

    /// What HAProxy wrote so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        // Closing the pipe makes the wrapper stop HAProxy; then reap the wrapper.
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}
