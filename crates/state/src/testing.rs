//! Real Redis servers for tests (feature `testing`): one `redis-server` on a free loopback port in
//! a temporary directory, or a Cluster of three masters. Processes are killed on drop.
//!
//! Without `redis-server` on the PATH, [`RedisServer::start`] and [`RedisCluster::start`] return
//! `None` after printing why, so a test can skip; under `CI=true` they panic instead: CI must
//! never pass by skipping (scripts/setup-debian.sh installs `redis-server` and `redis-tools`).
//!
//! ```ignore
//! let Some(redis) = sagw_state::testing::RedisServer::start() else { return };
//! let url = redis.url();
//! ```

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const SERVER: &str = "redis-server";
const CLI: &str = "redis-cli";

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn tool_works(tool: &str) -> Result<(), String> {
    match Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("`{tool} --version` exited with {s}")),
        Err(e) => Err(format!("`{tool}` cannot be run: {e}")),
    }
}

/// Whether the tests can run: `true` if `tools` are all there; `false` (after printing why) if
/// not and not in CI; panics under `CI=true`.
pub fn require(tools: &[&str]) -> bool {
    for t in tools {
        if let Err(why) = tool_works(t) {
            if in_ci() {
                panic!(
                    "{why}: the Redis tests need redis-server and redis-cli under CI (scripts/setup-debian.sh installs them)"
                );
            }
            eprintln!(
                "SKIPPED: {why} (install redis-server and redis-tools to run the Redis tests)"
            );
            return false;
        }
    }
    true
}

/// A loopback port that is free, and (for Cluster nodes) whose bus port (+10000) is free too.
fn free_port() -> u16 {
    static N: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id()
        .wrapping_mul(2_654_435_761)
        .wrapping_add(N.fetch_add(1, Ordering::Relaxed).wrapping_mul(7919))
        .wrapping_add(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos()),
        );
    for i in 0..2000u32 {
        let port = 20_000 + ((seed.wrapping_add(i.wrapping_mul(104_729))) % 25_000) as u16;
        let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 10_000) {
            return port;
        }
    }
    panic!("no free loopback port for redis-server");
}

/// One `redis-server` process.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    args: Vec<String>,
    password: Option<String>,
}

impl RedisServer {
    /// A server without a password. `None`: redis-server is missing (and this is not CI).
    pub fn start() -> Option<RedisServer> {
        Self::start_with(None, &[])
    }

    /// A server that requires `password` (`requirepass`).
    pub fn start_with_password(password: &str) -> Option<RedisServer> {
        Self::start_with(Some(password), &[])
    }

    /// A server with more `redis-server` arguments.
    pub fn start_with(password: Option<&str>, extra: &[&str]) -> Option<RedisServer> {
        if !require(&[SERVER]) {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("sagw-redis-")
            .tempdir()
            .expect("temporary directory for redis-server");
        let port = free_port();
        let mut args: Vec<String> = vec![
            "--port".into(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            String::new(),
            "--appendonly".into(),
            "no".into(),
            "--dir".into(),
            dir.path().display().to_string(),
            "--logfile".into(),
            dir.path().join("redis.log").display().to_string(),
            "--daemonize".into(),
            "no".into(),
        ];
        if let Some(pw) = password {
            args.push("--requirepass".into());
            args.push(pw.into());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut s = RedisServer {
            child: None,
            port,
            dir,
            args,
            password: password.map(str::to_owned),
        };
        s.spawn();
        Some(s)
    }

    fn spawn(&mut self) {
        let child = Command::new(SERVER)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!(
                    "redis-server on port {} exited ({status}) at start; its log:\n{}",
                    self.port,
                    self.log()
                );
            }
            if ping_raw(self.port) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "redis-server on port {} not ready within 10 s; its log:\n{}",
                    self.port,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// `redis://[:password@]127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        match &self.password {
            Some(pw) => format!("redis://:{pw}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's working directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills the server (SIGKILL) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port (empty: nothing was saved).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Runs `redis-cli` against this server with `args`; its standard output.
    pub fn cli(&self, args: &[&str]) -> String {
        cli(self.port, self.password.as_deref(), args)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether something on `port` answers a RESP `PING` (`+PONG`, or `-NOAUTH` behind a password).
fn ping_raw(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(n) if n > 0 => buf[..n].starts_with(b"+PONG") || buf[..n].starts_with(b"-NOAUTH"),
        _ => false,
    }
}

fn cli(port: u16, password: Option<&str>, args: &[&str]) -> String {
    let mut cmd = Command::new(CLI);
    cmd.arg("-h")
        .arg("127.0.0.1")
        .arg("-p")
        .arg(port.to_string());
    if let Some(pw) = password {
        cmd.env("REDISCLI_AUTH", pw);
    }
    let out = cmd
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A Redis Cluster of three masters (no replicas) on loopback.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three `--cluster-enabled` servers and joins them (`redis-cli --cluster create`),
    /// then waits for `cluster_state:ok` on each. `None`: the tools are missing (not CI).
    pub fn start() -> Option<RedisCluster> {
        Self::start_with(None)
    }

    /// The same, every node requiring `password`.
    pub fn start_with(password: Option<&str>) -> Option<RedisCluster> {
        if !require(&[SERVER, CLI]) {
            return None;
        }
        let mut nodes = Vec::new();
        for _ in 0..3 {
            let mut extra = vec![
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
            ];
            if password.is_some() {
                extra.extend(["--masterauth", password.unwrap_or_default()]);
            }
            nodes.push(RedisServer::start_with(password, &extra)?);
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let mut cmd = Command::new(CLI);
        if let Some(pw) = password {
            cmd.env("REDISCLI_AUTH", pw);
        }
        let out = cmd
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        for n in &nodes {
            loop {
                let info = n.cli(&["cluster", "info"]);
                if info.contains("cluster_state:ok") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "cluster node {} not ok within 20 s: {info}",
                    n.port
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Some(RedisCluster { nodes })
    }

    /// The nodes' URLs.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The nodes.
    pub fn nodes(&mut self) -> &mut [RedisServer] {
        &mut self.nodes
    }
}
