//! A pool of gateway processes sharing SAs through a real Redis, for the pool tests: each
//! gateway is the test binary itself started again as `pool_node` (see `tests/pool.rs`) with a
//! configuration file, so it can be killed with SIGKILL like a real one.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::auth_support::*;
use sagw_client::AuthScheme;
use sagw_client::transport::TransportKind;
use sagw_sip::Message;
use sagw_state::testing::RedisServer;
use tokio::time::Instant;

pub const NODE_ENV: &str = "SAGW_POOL_NODE_CONFIG";

/// What differs between nodes of the pool tests; the default is what [`Node::start`] uses.
#[derive(Clone, Copy)]
pub struct NodeOptions<'a> {
    /// `[auth] schemes`.
    pub schemes: &'a [&'a str],
    /// More `[auth]` lines (e.g. `kerberos_keytab = "…"`).
    pub auth_extra: &'a str,
    /// Appended to the configuration, after `[state]`.
    pub extra: &'a str,
    /// Set in the node process's environment (e.g. its own `KRB5RCACHEDIR`).
    pub env: &'a [(&'a str, &'a str)],
    /// The address it listens on (a loopback address of its own, so that the other gateways can
    /// trust it by address while clients come from 127.0.0.1).
    pub ip: &'a str,
    /// `proxy.trusted_peers`: the other gateways' addresses.
    pub peers: &'a [&'a str],
}

impl Default for NodeOptions<'_> {
    fn default() -> Self {
        NodeOptions {
            schemes: &["ntlm", "digest"],
            auth_extra: "",
            extra: "",
            env: &[],
            ip: "127.0.0.1",
            peers: &[],
        }
    }
}

/// The body of a `pool_node` process (each pool test binary has a `#[test] #[ignore] fn
/// pool_node` calling it: the harness starts the binary again with `pool_node --exact
/// --ignored`): a gateway on the configuration `NODE_ENV` names, until SIGTERM or SIGKILL.
pub fn node_main() {
    let Ok(path) = std::env::var(NODE_ENV) else {
        return;
    };
    let settings = sagw_gateway::Config::load(Path::new(&path))
        .expect("node config")
        .validate()
        .expect("node config valid");
    sagw_gateway::logging::init(&settings.log_level, settings.log_format);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let gw = sagw_gateway::start(settings).await.expect("node starts");
        println!(
            "READY udp={} tcp={} metrics={} admin={}",
            gw.udp.expect("udp"),
            gw.tcp.expect("tcp"),
            gw.metrics_addr.expect("metrics"),
            gw.admin_addr.expect("admin")
        );
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal");
        term.recv().await;
        gw.shutdown(Duration::from_secs(5)).await;
    });
}

/// One gateway process of the pool.
pub struct Node {
    pub child: Child,
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
    pub metrics: SocketAddr,
    pub admin: SocketAddr,
}

impl Node {
    pub fn start(dir: &Path, name: &str, redis: &[String], cluster: bool) -> Node {
        Self::start_opts(dir, name, redis, cluster, &NodeOptions::default())
    }

    /// With the schemes, `[auth]` lines, appended text and environment of `o`.
    pub fn start_opts(
        dir: &Path,
        name: &str,
        redis: &[String],
        cluster: bool,
        o: &NodeOptions<'_>,
    ) -> Node {
        let NodeOptions {
            schemes,
            auth_extra,
            extra,
            env,
            ip,
            peers,
        } = *o;
        let peers = peers
            .iter()
            .map(|p| format!("\"{p}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let schemes = schemes
            .iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let urls = redis
            .iter()
            .map(|u| format!("\"{u}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let d = dir.display();
        let level = std::env::var("SAGW_POOL_LOG").unwrap_or_else(|_| "warn".into());
        let admin = write_admin_token(dir);
        let text = format!(
            r#"
[log]
level = "{level}"
[listen]
udp = "{ip}:0"
tcp = "{ip}:0"
tls = ""
[proxy]
core_cpu = "none"
trusted_peers = [{peers}]
[timers]
t1_ms = 50
t2_ms = 400
[metrics]
listen = "127.0.0.1:0"
{admin}
[auth]
enabled = true
schemes = [{schemes}]
sip_domain = "{DOMAIN}"
fqdn = "sagw.example.com"
credentials = "{d}/users"
nonce_key = "{d}/{name}.nonce.key"
{auth_extra}
[state]
backend = "redis"
redis = [{urls}]
cluster = {cluster}
key_file = "{d}/pool.key"
node_id = "{name}"
command_timeout_ms = 300
{extra}
"#
        );
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, text).expect("config");
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "pool_node",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(NODE_ENV, &path)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node process");
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                // The harness may have written `test pool_node ... ` on the same line.
                if let Some(i) = line.find("READY ") {
                    let _ = tx.send(line[i + 6..].to_owned());
                }
            }
        });
        let Ok(ready) = rx.recv_timeout(Duration::from_secs(20)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("node {name} did not start");
        };
        let field = |k: &str| -> SocketAddr {
            ready
                .split(' ')
                .find_map(|f| f.strip_prefix(&format!("{k}=")))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{k} in {ready}"))
        };
        Node {
            udp: field("udp"),
            tcp: field("tcp"),
            metrics: field("metrics"),
            admin: field("admin"),
            child,
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, as an operator stops it, and waits for it to exit.
    pub fn terminate(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "SIGTERM not sent");
        let exit = self.child.wait().expect("the node exits");
        assert!(exit.success(), "the node stopped cleanly: {exit}");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct Pool {
    pub dir: tempfile::TempDir,
    pub a: Node,
    pub b: Node,
}

pub fn users(dir: &Path) {
    let text = format!(
        "[auth]\nenabled = true\nsip_domain = \"{DOMAIN}\"\ncredentials = \"{}/users\"\nnonce_key = \"{}/x.key\"\n",
        dir.display(),
        dir.display()
    );
    let settings = sagw_gateway::Config::parse(&text)
        .expect("parses")
        .validate()
        .expect("valid");
    let auth = settings.auth.expect("auth");
    for (u, p) in [("alice", "alice-pw"), ("bob", "bob-pw")] {
        sagw_gateway::users::add(&auth, u, p, None).expect("user");
    }
}

pub fn pool(redis: &[String], cluster: bool) -> Pool {
    let dir = tempfile::tempdir().expect("dir");
    users(dir.path());
    let a = Node::start(dir.path(), "a", redis, cluster);
    let b = Node::start(dir.path(), "b", redis, cluster);
    Pool { dir, a, b }
}

pub async fn client_to(addr: SocketAddr, kind: TransportKind, user: &str) -> Client {
    Client::connect_to(
        addr,
        kind,
        config(user, &format!("{user}-pw"), AuthScheme::Ntlm, 4),
    )
    .await
}

/// A signed OPTIONS to the served domain: (answered 200 with a verified signature, responses).
pub async fn options(c: &mut Client) -> (bool, Vec<Message>) {
    let (r, seen) = c.request("OPTIONS", &format!("sip:{DOMAIN}"), None).await;
    let ok = r.is_ok_and(|r| r.status == 200 && verified(&r.signature));
    (ok, seen)
}

/// `POST path` on a node's admin API, with the token.
pub async fn http_post(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("admin");
    s.write_all(
        format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .expect("write");
    let mut out = String::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_string(&mut out)).await;
    out
}

pub fn opaque_of(c: &Client) -> String {
    c.ep.sa()
        .and_then(|sa| sa.opaque())
        .expect("an SA")
        .to_owned()
}

/// Waits until the SA of `c` is in the pool's store (its gateway publishes it right after the
/// handshake, without making the client wait for it).
pub async fn wait_published(redis: &[String], cluster: bool, c: &Client) {
    let store = sagw_state::Store::open(&sagw_state::StoreConfig {
        urls: redis.to_vec(),
        cluster,
        password_file: None,
        connect_timeout: Duration::from_secs(2),
        command_timeout: Duration::from_secs(2),
    })
    .expect("store");
    let opaque = u32::from_str_radix(&opaque_of(c), 16).expect("hex opaque");
    let deadline = Instant::now() + WAIT;
    while !store.sa_exists(opaque).await.unwrap_or(false) {
        assert!(Instant::now() < deadline, "the SA never reached the store");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn standalone() -> Option<RedisServer> {
    RedisServer::start()
}
