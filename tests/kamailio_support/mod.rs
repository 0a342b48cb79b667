//! A real Kamailio (Debian `kamailio`) as the registrar behind a gateway in edge mode: started with
//! `tests/kamailio/registrar.cfg` on a free loopback port in a temporary directory, small memory,
//! one worker per transport; ready once it answers an OPTIONS; stopped when dropped. When a test
//! fails, its log is kept and its path and last lines are printed.
//!
//! When the binary is missing: with `CI=true` that is a test failure, otherwise the tests say why
//! (loudly) and skip, like the Kerberos KDC helper.
#![allow(dead_code)]

use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// `sh -c STOP_SCRIPT LOG KAMAILIO ARGS...`: see [`Kamailio::start`].
const STOP_SCRIPT: &str = r#"
setsid "$@" >"$0" 2>&1 & k=$!
read _x
kill $k 2>/dev/null
alive() { [ -r /proc/$k/stat ] && [ "$(cut -d' ' -f3 /proc/$k/stat 2>/dev/null)" != Z ]; }
n=0
while alive && [ $n -lt 30 ]; do sleep 0.1; n=$((n+1)); done
if alive; then
  echo "test harness: Kamailio still running 3 s after SIGTERM, SIGKILL to its process group" >>"$0"
  kill -KILL -$k 2>/dev/null
fi
wait $k 2>/dev/null
"#;

/// A running Kamailio.
pub struct Kamailio {
    bin: PathBuf,
    /// UDP and TCP port it listens on (127.0.0.1).
    pub port: u16,
    /// Its temporary directory (working and runtime directory, log); removed unless a test failed.
    pub dir: PathBuf,
    /// Its stderr log.
    pub log: PathBuf,
    child: Child,
    /// The wrapper shell kills Kamailio when this pipe closes, also when the test process dies.
    stdin: Option<ChildStdin>,
}

/// The configuration under test.
pub fn cfg_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("kamailio/registrar.cfg")
}

fn binary() -> Option<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"]
        .iter()
        .map(|d| Path::new(d).join("kamailio"))
        .find(|p| p.exists())
}

/// Starts Kamailio, or returns None (after saying why) when it is not installed, which with CI=true
/// is a panic instead. An installed Kamailio that does not start (the config under test is ours)
/// always panics.
pub fn kamailio() -> Option<Kamailio> {
    let Some(bin) = binary() else {
        let why = "the `kamailio` binary is not installed (Debian package kamailio; \
                   scripts/setup-debian.sh installs it)";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true and Kamailio cannot run: {why}");
        }
        // Straight to the stderr handle: libtest captures eprintln! of passing tests, and a skip
        // must not be silent.
        let _ = writeln!(
            std::io::stderr(),
            "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
             !! SKIPPING the Kamailio edge-registrar tests: {why}.\n\
             !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
        );
        return None;
    };
    // Kamailio installed but not starting is a failure everywhere: the config under test is ours.
    let mut last = String::new();
    // A port picked by binding :0 may be taken again before Kamailio binds it: retry.
    for _ in 0..3 {
        match Kamailio::start(&bin) {
            Ok(k) => return Some(k),
            Err(e) => last = e,
        }
    }
    panic!("Kamailio did not start: {last}");
}

/// A port free for both UDP and TCP on 127.0.0.1 (at the time of asking).
fn free_port() -> Result<u16, String> {
    for _ in 0..20 {
        let udp = UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("bind udp: {e}"))?;
        let port = udp.local_addr().map_err(|e| e.to_string())?.port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err("no port free for both UDP and TCP".into())
}

impl Kamailio {
    fn start(bin: &Path) -> Result<Kamailio, String> {
        let dir = tempfile::Builder::new()
            .prefix("sagw-kamailio-")
            .tempdir()
            .map_err(|e| format!("tempdir: {e}"))?
            .keep();
        let port = free_port()?;
        let log = dir.join("kamailio.log");
        let (child, stdin) = Self::spawn(bin, &dir, port, &log)?;
        let mut k = Kamailio {
            bin: bin.to_owned(),
            port,
            dir,
            log,
            child,
            stdin,
        };
        k.wait_ready(Duration::from_secs(10))?;
        Ok(k)
    }

    /// Stops it as dropping does (SIGTERM, SIGKILL 3 s later), keeping its port and directory
    /// for [`Kamailio::restart`]: a registrar that died.
    pub fn stop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }

    /// Starts it again on the same port after [`Kamailio::stop`]; returns once it answers.
    pub fn restart(&mut self) -> Result<(), String> {
        let (child, stdin) = Self::spawn(&self.bin, &self.dir, self.port, &self.log)?;
        self.child = child;
        self.stdin = stdin;
        self.wait_ready(Duration::from_secs(10))
    }

    fn spawn(
        bin: &Path,
        dir: &Path,
        port: u16,
        log: &Path,
    ) -> Result<(Child, Option<ChildStdin>), String> {
        // sh starts Kamailio in its own process group (setsid) and waits on our pipe; EOF (we
        // dropped the handle, or the test process died) => SIGTERM, and SIGKILL to the whole group
        // when it is still there 3 s later: Kamailio 5.6's workers sometimes hang on a lock when
        // they get SIGTERM, and its main process would then wait `exit_timeout` (60 s) for them.
        let child = Command::new("sh")
            .arg("-c")
            .arg(STOP_SCRIPT)
            .arg(log)
            .arg(bin)
            .arg("-f")
            .arg(cfg_path())
            // Foreground, log to stderr, 32 MB shared and 4 MB private memory, one UDP worker and
            // one TCP worker; working and runtime directories in the temp dir.
            .args(["-DD", "-E", "-m", "32", "-M", "4", "-n", "1", "-N", "1"])
            .arg("-w")
            .arg(dir)
            .arg("-Y")
            .arg(dir)
            .arg("-l")
            .arg(format!("udp:127.0.0.1:{port}"))
            .arg("-l")
            .arg(format!("tcp:127.0.0.1:{port}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn kamailio: {e}"))?;
        let mut child = child;
        let stdin = child.stdin.take();
        Ok((child, stdin))
    }

    /// Waits until Kamailio answers an OPTIONS over UDP with 200.
    fn wait_ready(&mut self, limit: Duration) -> Result<(), String> {
        let sock = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .map_err(|e| e.to_string())?;
        let local = sock.local_addr().map_err(|e| e.to_string())?;
        let deadline = Instant::now() + limit;
        let mut n = 0u32;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "the wrapper exited ({status}) before Kamailio answered:\n{}",
                    self.tail(30)
                ));
            }
            n += 1;
            let probe = format!(
                "OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n\
                 Via: SIP/2.0/UDP {local};branch=z9hG4bKprobe{n};rport\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=probe\r\n\
                 To: <sip:127.0.0.1:{port}>\r\nCall-ID: probe-{port}\r\nCSeq: {n} OPTIONS\r\n\
                 Content-Length: 0\r\n\r\n",
                port = self.port
            );
            let _ = sock.send_to(probe.as_bytes(), self.addr());
            if let Ok(len) = sock.recv(&mut buf)
                && buf[..len].starts_with(b"SIP/2.0 200")
            {
                return Ok(());
            }
        }
        Err(format!(
            "Kamailio did not answer OPTIONS on udp:127.0.0.1:{} within {limit:?}; log {}:\n{}",
            self.port,
            self.log.display(),
            self.tail(30)
        ))
    }

    /// Its UDP/TCP address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The gateway's next hop naming it.
    pub fn next_hop(&self) -> String {
        format!("udp:127.0.0.1:{}", self.port)
    }

    /// The last `n` lines of its log.
    pub fn tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        if log.contains("test harness: Kamailio still running") {
            eprintln!(
                "Kamailio on port {} hung on SIGTERM and was killed",
                self.port
            );
        }
        if std::thread::panicking() {
            eprintln!(
                "--- Kamailio log {} (last 60 lines) ---\n{}\n--- end of Kamailio log ---",
                self.log.display(),
                self.tail(60)
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
