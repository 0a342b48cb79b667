//! The sipp Digest REGISTER flow of issue 16 without sockets: what the core thread does for
//! `scripts/bench-sipp.sh --auth --scenarios register` (REGISTER, 401, REGISTER with credentials,
//! 200), with the bench's own configuration (`benches/sipp/sagw-auth.toml`), 10 000 users, the
//! security stage in front of the edge, and the driver's per-datagram steps: parse, the message
//! metrics, `Edge::handle_inbound`, due timers, the actions (transaction and binding metrics) and
//! the serialisation of every datagram sent. For exact counts per flow:
//!
//! ```sh
//! cargo build --release -p sagw-gateway --example digest_flow
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*Callgrind*' \
//!     target/release/examples/digest_flow 2000
//! ```
//!
//! (`DIGEST_FLOW_RPORT=1` in the environment: the REGISTERs' Via ends in `;rport`.)
//!
//! Instructions per flow = the total `Ir` / the count. The example also prints the time (four
//! clock reads a flow included), the allocations and the bytes
//! allocated per flow inside the measured steps (a counting wrapper around mimalloc,
//! the allocator the gateway ships with). sipp's side (building the REGISTERs, answering the
//! challenge) and the warm-up (every user registered, then 32 s of flows at 2000/s so that the
//! lingering transactions reach their steady count) are not counted.

use std::alloc::{GlobalAlloc, Layout};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use sagw_gateway::metrics::Metrics;
use sagw_proxy::{
    Action, BindingChange, Edge, Flow, FlowId, Inbound, LocalAddrs, Now, Report, Secret, Transport,
};
use sagw_sip::{Limits, Message};

/// Counts what is allocated, then hands the call to mimalloc.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is passed unchanged to mimalloc, which upholds the GlobalAlloc contract.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: the caller's layout, as GlobalAlloc::alloc requires.
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator with `layout`.
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // A reallocation counts as one allocation of the new size (a grown Vec or String).
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        // SAFETY: as GlobalAlloc::realloc requires, passed on.
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The bench's users (scripts/bench-sipp.sh: u00001..u10000, passwords pw00001..).
const USERS: u64 = 10_000;
const REALM: &str = "sagw.bench";
/// sipp's UAC (the script's UAC_PORT for sagw).
const SIPP: &str = "127.0.0.1:15092";

struct World {
    edge: Edge,
    metrics: Metrics,
    limits: Limits,
    flow: Flow,
    now: Now,
    n: u64,
    /// Allocations and bytes inside the measured steps.
    allocs: u64,
    bytes: u64,
    /// Time inside the measured steps (the gateway's side only).
    inside: Duration,
}

/// The steps callgrind collects (by name: keep it out of line): one datagram through the driver's
/// per-message work, returning the datagrams sent.
struct Callgrind;

impl Callgrind {
    #[inline(never)]
    fn step(w: &mut World, datagram: &[u8]) -> Vec<Vec<u8>> {
        datagram_in(w, datagram)
    }
}

/// What `core_thread.rs` does with a datagram: parse, count, hand to the edge, run due timers,
/// execute the actions (count and serialise each send, count reports).
fn datagram_in(w: &mut World, data: &[u8]) -> Vec<Vec<u8>> {
    let mut sent = Vec::new();
    let Ok(message) = Message::parse_with(data, &w.limits) else {
        return sent;
    };
    w.metrics.message("in", &message);
    w.edge.handle_inbound(
        Inbound {
            message,
            flow: w.flow,
        },
        w.now,
    );
    if w.edge.poll_timeout().is_some_and(|t| t <= w.now.mono) {
        w.edge.handle_timeout(w.now);
    }
    while let Some(a) = w.edge.poll_action() {
        match a {
            Action::Send { message, .. } => {
                w.metrics.message("out", &message);
                sent.push(message.to_bytes());
            }
            Action::Report(Report::Transaction {
                method,
                status,
                elapsed,
            }) => w.metrics.transaction(&method, status, elapsed),
            Action::Report(Report::Binding { change, .. }) => {
                w.metrics.binding_change(match change {
                    BindingChange::Added => "added",
                    BindingChange::Refreshed => "refreshed",
                    BindingChange::Removed => "removed",
                })
            }
            _ => {}
        }
    }
    sent
}

fn measured(w: &mut World, datagram: &[u8], count: bool) -> Vec<Vec<u8>> {
    if !count {
        return datagram_in(w, datagram);
    }
    let (a0, b0) = (
        ALLOCS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    );
    let t = Instant::now();
    let out = Callgrind::step(w, datagram);
    w.inside += t.elapsed();
    w.allocs += ALLOCS.load(Ordering::Relaxed) - a0;
    w.bytes += BYTES.load(Ordering::Relaxed) - b0;
    out
}

/// With `DIGEST_FLOW_RPORT=1` the Via ends in `;rport`, as most softphones' and the project's
/// own client's do (sipp's does not): the gateway then rewrites the top Via of every request.
static VIA_TAIL: std::sync::LazyLock<&'static str> = std::sync::LazyLock::new(|| {
    if std::env::var_os("DIGEST_FLOW_RPORT").is_some_and(|v| v == "1") {
        ";rport"
    } else {
        ""
    }
});

/// sipp's REGISTER (benches/sipp/scenarios/register_auth.xml), with `auth` as its credentials.
fn register(n: u64, user: &str, cseq: u32, auth: Option<&str>) -> Vec<u8> {
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let tail = *VIA_TAIL;
    format!(
        "REGISTER sip:127.0.0.1:15062 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:15092;branch=z9hG4bK-4242-{n}-{cseq}{tail}\r\n\
Max-Forwards: 70\r\n\
From: <sip:{user}@127.0.0.1:15062>;tag=4242R{n}\r\n\
To: <sip:{user}@127.0.0.1:15062>\r\n\
Call-ID: {n}-4242@127.0.0.1\r\n\
CSeq: {cseq} REGISTER\r\n\
Contact: <sip:{user}@127.0.0.1:15092;transport=UDP>\r\n\
{auth}Expires: 3600\r\n\
User-Agent: sipp-bench\r\n\
Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// sipp's answer to the 401 (MD5, qop=auth, nc 1).
fn answer(challenge: &[u8], user: &str, password: &str, n: u64) -> String {
    let m = Message::parse(challenge).expect("the 401 parses");
    assert_eq!(m.status_code(), Some(401), "{m:?}");
    let value = m.header("WWW-Authenticate").expect("a challenge");
    let params = sagw_digest::client::parse_header(value).expect("challenge syntax");
    let ch = sagw_digest::client::Challenge::from_params(params.pairs()).expect("a challenge");
    let ha1 = sagw_digest::Ha1::compute(ch.algorithm.base(), user, ch.realm, password);
    let cnonce = format!("{n:016x}");
    sagw_digest::client::authorize(
        &ch,
        user,
        &ha1,
        "REGISTER",
        "sip:127.0.0.1:15062",
        &cnonce,
        1,
    )
    .expect("authorize")
    .header_value()
}

impl World {
    fn new() -> World {
        let dir = std::env::temp_dir().join(format!("sagw-digest-flow-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let users = dir.join("users");
        let mut text = String::from("# digest_flow example\n");
        for i in 1..=USERS {
            let (u, p) = (format!("u{i:05}"), format!("pw{i:05}"));
            let ha1 = sagw_digest::Ha1::compute(sagw_digest::Algorithm::Md5, &u, REALM, &p);
            text.push_str(&format!("{u} ha1 MD5 {} {REALM}\n", ha1.to_hex()));
        }
        write_private(&users, &text);
        let mut cfg =
            sagw_gateway::Config::parse(include_str!("../../../benches/sipp/sagw-auth.toml"))
                .expect("benches/sipp/sagw-auth.toml");
        cfg.auth.credentials = users.display().to_string();
        cfg.auth.nonce_key = dir.join("nonce.key").display().to_string();
        let settings = cfg.validate().expect("the bench configuration");
        let auth = settings.auth.clone().expect("[auth] enabled");
        let mut rng = sagw_gateway::auth::OsRng::new().expect("OS randomness");
        let (core, router) = sagw_gateway::auth::build_core(&auth, &mut rng).expect("core");
        let stage = sagw_gateway::auth::SecurityStage::new(
            Arc::new(core),
            Box::new(rng),
            auth.director.clone(),
        )
        .with_router(router);
        let local = LocalAddrs {
            host: "127.0.0.1".into(),
            aliases: Vec::new(),
            udp: Some(15062),
            tcp: None,
            tls: None,
            extra_ports: Vec::new(),
        };
        let ec = settings.edge_config(local, Secret::new([4; 32]), settings.next_hops.clone());
        let _ = std::fs::remove_dir_all(&dir);
        World {
            edge: Edge::with_auth(ec, Box::new(stage)),
            metrics: Metrics::default(),
            limits: settings.sip_limits.clone(),
            flow: Flow {
                id: FlowId(0),
                transport: Transport::Udp,
                remote: SIPP.parse::<SocketAddr>().expect("address"),
            },
            now: Now {
                mono: Instant::now(),
                wall: SystemTime::now(),
            },
            n: 0,
            allocs: 0,
            bytes: 0,
            inside: Duration::ZERO,
        }
    }

    /// One flow of the next user (sipp's SEQUENTIAL injection file), 2000 flows/s.
    fn flow(&mut self, count: bool) {
        self.n += 1;
        let n = self.n;
        self.now = self.now.after(Duration::from_micros(500));
        let i = (n - 1) % USERS + 1;
        let (user, password) = (format!("u{i:05}"), format!("pw{i:05}"));
        let first = register(n, &user, 1, None);
        let out = measured(self, &first, count);
        assert_eq!(out.len(), 1, "one 401");
        let auth = answer(&out[0], &user, &password, n);
        let second = register(n, &user, 2, Some(&auth));
        let out = measured(self, &second, count);
        assert_eq!(out.len(), 1, "one 200");
        assert!(
            out[0].starts_with(b"SIP/2.0 200 "),
            "{:?}",
            String::from_utf8_lossy(&out[0])
        );
    }
}

fn write_private(path: &std::path::Path, text: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .expect("credentials file");
    f.write_all(text.as_bytes()).expect("credentials written");
}

fn main() {
    let mut args = std::env::args().skip(1);
    let count: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(10_000);
    // 32 s at 2000 flows/s after every user's first registration (Timer J: 64 x T1).
    let warm: u64 = args
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(USERS + 64_000);
    let t = Instant::now();
    let mut w = World::new();
    for _ in 0..warm {
        w.flow(false);
    }
    eprintln!("set-up and {warm} warm-up flows in {:?}", t.elapsed());
    let t = Instant::now();
    for _ in 0..count {
        w.flow(true);
    }
    let elapsed = t.elapsed();
    eprintln!(
        "{count} Digest REGISTER flows in {elapsed:?} ({:.2} µs a flow with sipp's side); measured steps: {:.2} µs, {:.2} allocations, {:.0} bytes allocated per flow",
        elapsed.as_secs_f64() * 1e6 / count as f64,
        w.inside.as_secs_f64() * 1e6 / count as f64,
        w.allocs as f64 / count as f64,
        w.bytes as f64 / count as f64
    );
}
