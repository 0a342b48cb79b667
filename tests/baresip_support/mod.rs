//! A real baresip (Debian `baresip-core`), headless, driven over its `ctrl_tcp` module: netstrings
//! of JSON, commands `{"command":"dial","params":"sip:bob@...","token":"1"}` answered with
//! `{"response":true,"ok":..,"data":..,"token":..}`, and events `{"event":true,"type":..}` in
//! between. Audio comes from a WAV file (`aufile`) and goes to a bridge nobody listens to
//! (`aubridge`), so RTP flows without sound hardware; media and SIP stay on 127.0.0.1
//! (`net_interface`). baresip sends RTP peer to peer, so its own counters (RTCP statistics in
//! `CALL_RTCP` events, the packet table it prints when a call ends) are where RTP is seen.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

/// The baresip binary, or `None` after a loud message when it is missing; with CI=true a missing
/// baresip fails the test instead (as `kdc()` does for the test KDC).
pub fn baresip() -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join("baresip"))
        .find(|p| p.is_file());
    if found.is_none() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true and baresip is missing: scripts/setup-debian.sh installs baresip-core");
        }
        let _ = writeln!(
            std::io::stderr(),
            "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
             !! SKIPPING the baresip interoperability test: no baresip binary.\n\
             !! Install baresip-core (Debian; scripts/setup-debian.sh) to run it.\n\
             !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
        );
    }
    found
}

/// 20 s of a 440 Hz tone, 8 kHz mono s16 WAV: what `aufile` sends.
fn tone_wav(path: &Path) {
    let rate = 8000u32;
    let samples: Vec<u8> = (0..rate * 20)
        .flat_map(|i| {
            let x = (2.0 * std::f64::consts::PI * 440.0 * f64::from(i) / f64::from(rate)).sin();
            // The cast keeps the sample within i16: |x| <= 1.
            ((x * 8000.0) as i16).to_le_bytes()
        })
        .collect();
    let len = u32::try_from(samples.len()).expect("small file");
    let mut w = Vec::with_capacity(44 + samples.len());
    w.extend_from_slice(b"RIFF");
    w.extend_from_slice(&(36 + len).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    w.extend_from_slice(&16u32.to_le_bytes()); // fmt chunk size
    w.extend_from_slice(&1u16.to_le_bytes()); // PCM
    w.extend_from_slice(&1u16.to_le_bytes()); // mono
    w.extend_from_slice(&rate.to_le_bytes());
    w.extend_from_slice(&(rate * 2).to_le_bytes());
    w.extend_from_slice(&2u16.to_le_bytes());
    w.extend_from_slice(&16u16.to_le_bytes());
    w.extend_from_slice(b"data");
    w.extend_from_slice(&len.to_le_bytes());
    w.extend_from_slice(&samples);
    std::fs::write(path, w).expect("tone.wav");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One baresip user agent with one account.
pub struct Baresip {
    pub user: String,
    child: Child,
    ctrl: TcpStream,
    rx: Vec<u8>,
    events: VecDeque<Value>,
    log: PathBuf,
    _dir: tempfile::TempDir,
    token: u64,
}

impl Drop for Baresip {
    fn drop(&mut self) {
        // Our own child, by its handle.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Baresip {
    /// Starts baresip for `user@domain` (password `password`), registering through the gateway
    /// at `proxy` over UDP. Its config dir is a temp dir: `config` (modules: ctrl_tcp, aufile
    /// source, aubridge sink, g711; menu for the call commands), `accounts` (one line).
    pub async fn start(
        bin: &Path,
        user: &str,
        domain: &str,
        password: &str,
        proxy: SocketAddr,
    ) -> Baresip {
        let dir = tempfile::tempdir().expect("temp dir");
        let wav = dir.path().join("tone.wav");
        tone_wav(&wav);
        let ctrl_port = free_port();
        let config = format!(
            "poll_method epoll\n\
             sip_listen 127.0.0.1:0\n\
             net_interface 127.0.0.1\n\
             call_local_timeout 120\n\
             call_max_calls 4\n\
             audio_source aufile,{wav}\n\
             audio_player aubridge,sink-{user}\n\
             audio_alert aubridge,alert-{user}\n\
             audio_level no\n\
             rtp_stats yes\n\
             statmode_default off\n\
             module_path /usr/lib/baresip/modules\n\
             module g711.so\n\
             module aufile.so\n\
             module aubridge.so\n\
             module_tmp account.so\n\
             module_app menu.so\n\
             module_app ctrl_tcp.so\n\
             ctrl_tcp_listen 127.0.0.1:{ctrl_port}\n",
            wav = wav.display()
        );
        std::fs::write(dir.path().join("config"), config).expect("config");
        let account = format!(
            "<sip:{user}@{domain}>;auth_pass={password};outbound=\"sip:127.0.0.1:{port};transport=udp\";regint=600;answermode=auto;audio_codecs=PCMU\n",
            port = proxy.port()
        );
        std::fs::write(dir.path().join("accounts"), account).expect("accounts");
        let log = dir.path().join("stdout.log");
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(bin)
            .arg("-f")
            .arg(dir.path())
            // A safety net: gone after 3 minutes even if this process dies without killing it.
            .args(["-t", "180"])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("baresip starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        let ctrl = loop {
            match TcpStream::connect(("127.0.0.1", ctrl_port)).await {
                Ok(s) => break s,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!(
                    "ctrl_tcp of {user}: {e}\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                ),
            }
        };
        Baresip {
            user: user.to_owned(),
            child,
            ctrl,
            rx: Vec::new(),
            events: VecDeque::new(),
            log,
            _dir: dir,
            token: 0,
        }
    }

    /// Everything baresip printed so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// Waits until the log shows `needle` (e.g. the account's `200 OK` to REGISTER), failing on
    /// `failure` lines.
    pub async fn wait_log(&self, needle: &str, failures: &[&str], limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            if let Some(f) = failures.iter().find(|f| log.contains(*f)) {
                panic!("{}: `{f}` in the log:\n{log}", self.user);
            }
            assert!(
                Instant::now() < deadline,
                "{}: no `{needle}` within {limit:?}:\n{log}",
                self.user
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn read_one(&mut self, deadline: Instant) -> Option<Value> {
        loop {
            if let Some(colon) = self.rx.iter().position(|b| *b == b':') {
                let len: usize = std::str::from_utf8(&self.rx[..colon])
                    .ok()
                    .and_then(|l| l.parse().ok())
                    .expect("netstring length");
                if self.rx.len() > colon + len + 1 {
                    let body = self.rx[colon + 1..colon + 1 + len].to_vec();
                    assert_eq!(self.rx[colon + 1 + len], b',', "netstring end");
                    self.rx.drain(..colon + len + 2);
                    return Some(serde_json::from_slice(&body).expect("JSON from ctrl_tcp"));
                }
            }
            let mut buf = [0u8; 4096];
            match timeout_at(deadline, self.ctrl.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => panic!("{}: ctrl_tcp closed\n{}", self.user, self.log()),
                Ok(Ok(n)) => self.rx.extend_from_slice(&buf[..n]),
                Err(_) => return None,
            }
        }
    }

    /// Runs a command and returns its response (`ok` checked); events seen meanwhile are kept.
    pub async fn command(&mut self, command: &str, params: Option<&str>) -> Value {
        self.token += 1;
        let token = self.token.to_string();
        let mut msg = serde_json::json!({"command": command, "token": token});
        if let Some(p) = params {
            msg["params"] = Value::from(p);
        }
        let body = msg.to_string();
        let frame = format!("{}:{body},", body.len());
        self.ctrl
            .write_all(frame.as_bytes())
            .await
            .expect("ctrl_tcp write");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let v = self
                .read_one(deadline)
                .await
                .unwrap_or_else(|| panic!("{}: no answer to {command}\n{}", self.user, self.log()));
            if v["response"] == Value::Bool(true) && v["token"] == token.as_str() {
                assert_eq!(
                    v["ok"],
                    Value::Bool(true),
                    "{}: {command} failed: {v}",
                    self.user
                );
                return v;
            }
            self.events.push_back(v);
        }
    }

    /// The first event `pred` accepts (earlier ones are dropped), within `limit`.
    pub async fn event(
        &mut self,
        what: &str,
        limit: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            while let Some(v) = self.events.pop_front() {
                if pred(&v) {
                    return v;
                }
            }
            match self.read_one(deadline).await {
                Some(v) => self.events.push_back(v),
                None => panic!("{}: no {what} within {limit:?}\n{}", self.user, self.log()),
            }
        }
    }

    /// An event of type `ty`.
    pub async fn event_type(&mut self, ty: &str, limit: Duration) -> Value {
        self.event(ty, limit, |v| v["type"] == ty).await
    }
}

/// (transmitted, received) RTP packets from the table baresip prints when a call ends
/// (`packets:  476  476`, Transmit then Receive), the last one in `log`.
pub fn packet_table(log: &str) -> Option<(u64, u64)> {
    let line = log
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with("packets:"))?;
    let mut n = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse::<u64>().ok());
    Some((n.next()??, n.next()??))
}
