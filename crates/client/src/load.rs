//! Load: N endpoints (distinct users and epids), C at a time, each a full sign-in then signed
//! MESSAGEs on its SA; bounded by count and by time. Latencies go into HDR histograms per worker,
//! merged at the end.
//!
//! With a rate, each operation's latency runs from its intended start, the instant the pacer's
//! schedule gave it, not from when a worker got round to it: at saturation the operations queue
//! behind slow answers, and a clock started late would leave that wait out of the percentiles
//! (coordinated omission). Without a rate the two instants are the same.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::time::Instant;

use crate::endpoint::{AuthScheme, Endpoint, EndpointConfig, Failure, LocalAddr, Password};
use crate::sa::SignatureCheck;
use crate::session::{Timers, request, sign_in};
use crate::transport::{Connection, TlsOptions, TransportKind, tls_connector};
use crate::util::OsRng;

/// Who the endpoints are. `{n}` in the user and password patterns is the endpoint's user index.
#[derive(Debug, Clone)]
pub struct Population {
    pub user_pattern: String,
    pub password_pattern: Option<String>,
    /// Distinct users; endpoint `i` is user `i % users` (with its own epid). `0`: one user per
    /// endpoint.
    pub users: usize,
    pub first_user: usize,
    pub domain: String,
    pub sip_domain: String,
    pub schemes: Vec<AuthScheme>,
    pub version: u8,
    /// Kerberos cache per user index (from kinit in the setup phase), or one for all.
    pub ccaches: Vec<String>,
}

impl Population {
    fn user_index(&self, i: usize) -> usize {
        let n = if self.users == 0 { i } else { i % self.users };
        self.first_user + n
    }

    pub fn user(&self, i: usize) -> String {
        self.user_pattern
            .replace("{n}", &self.user_index(i).to_string())
    }

    pub fn config(&self, i: usize) -> EndpointConfig {
        let user = self.user(i);
        // epid: 10 hex digits as Lync sends, distinct per endpoint.
        let epid = format!("{:010x}", 0x005A_0000_0000_u64 + i as u64);
        let mut cfg = EndpointConfig::new(&user, &self.sip_domain, &epid);
        cfg.domain = self.domain.clone();
        cfg.schemes = self.schemes.clone();
        cfg.version = self.version;
        cfg.password = self
            .password_pattern
            .as_ref()
            .map(|p| Password::new(p.replace("{n}", &self.user_index(i).to_string())));
        cfg.ccache = match self.ccaches.len() {
            0 => None,
            1 => self.ccaches.first().cloned(),
            k => self.ccaches.get(i % k).cloned(),
        };
        cfg
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub server: SocketAddr,
    pub transport: TransportKind,
    pub tls: Option<TlsOptions>,
    pub population: Population,
    /// N.
    pub endpoints: usize,
    /// C.
    pub concurrency: usize,
    /// Signed MESSAGEs per SA after its sign-in.
    pub messages: usize,
    pub message_target: String,
    /// Stop starting work after this.
    pub duration: Duration,
    /// Offered sign-ins per second (paced over all workers); `None` = as fast as answered.
    pub rate: Option<f64>,
    /// Offered MESSAGEs per second; `None` = as fast as answered.
    pub message_rate: Option<f64>,
    /// A new connection per endpoint (else each worker keeps one).
    pub connection_per_endpoint: bool,
    pub timers: Timers,
    pub progress: bool,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Latency {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    fn from(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            count: h.len(),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// One phase's results.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Phase {
    pub ok: u64,
    pub failed: u64,
    /// Successful operations per second over the run.
    pub per_sec: f64,
    pub latency: Latency,
    pub failures: BTreeMap<String, u64>,
    /// One example message per failure label.
    pub examples: BTreeMap<String, String>,
}

/// The run's summary (`--json` prints it as is).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub server: String,
    pub transport: TransportKind,
    pub schemes: Vec<AuthScheme>,
    pub endpoints_planned: usize,
    pub endpoints_started: usize,
    pub concurrency: usize,
    pub messages_per_sa: usize,
    pub offered_sign_in_rate: Option<f64>,
    pub offered_message_rate: Option<f64>,
    pub elapsed_secs: f64,
    pub sign_ins: Phase,
    pub messages: Phase,
    /// Sign-ins by scheme actually used.
    pub by_scheme: BTreeMap<String, u64>,
}

struct WorkerResult {
    hs: Histogram<u64>,
    msg: Histogram<u64>,
    hs_fail: BTreeMap<String, u64>,
    msg_fail: BTreeMap<String, u64>,
    examples_hs: BTreeMap<String, String>,
    examples_msg: BTreeMap<String, String>,
    by_scheme: BTreeMap<String, u64>,
}

fn histogram() -> Histogram<u64> {
    // 1 µs .. 60 s, 3 significant digits.
    match Histogram::new_with_bounds(1, 60_000_000, 3) {
        Ok(h) => h,
        // hdrhistogram refuses only sigfig > 5 or inverted bounds; these constants are neither.
        Err(_) => std::process::abort(),
    }
}

/// Paces operations at `rate` per second over all workers.
struct Pacer {
    start: Instant,
    rate: Option<f64>,
    next: AtomicU64,
}

impl Pacer {
    /// Waits for the next slot of the schedule and returns the operation's intended start: the
    /// slot's instant, which is in the past when every worker was busy at that time (see the
    /// module's doc); now, without a rate.
    async fn wait(&self) -> Instant {
        match self.rate.filter(|r| *r > 0.0) {
            Some(r) => {
                let k = self.next.fetch_add(1, Ordering::Relaxed);
                let at = self.start + Duration::from_secs_f64(k as f64 / r);
                tokio::time::sleep_until(at).await;
                at
            }
            None => Instant::now(),
        }
    }
}

/// Microseconds from an operation's intended start until now (at least 1: the histogram's floor).
fn latency_us(intended: Instant) -> u64 {
    u64::try_from(intended.elapsed().as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

struct Shared {
    cfg: LoadConfig,
    next: AtomicUsize,
    deadline: Instant,
    sign_in_pacer: Pacer,
    message_pacer: Pacer,
    done_ops: AtomicU64,
    connector: Option<tokio_rustls::TlsConnector>,
}

fn count(map: &mut BTreeMap<String, u64>, ex: &mut BTreeMap<String, String>, f: &Failure) {
    *map.entry(f.label().to_owned()).or_default() += 1;
    ex.entry(f.label().to_owned())
        .or_insert_with(|| f.to_string());
}

async fn connect(shared: &Shared) -> Result<Connection, Failure> {
    let name = shared
        .cfg
        .tls
        .as_ref()
        .map(|t| t.server_name.as_str())
        .unwrap_or("");
    Connection::connect(
        shared.cfg.server,
        shared.cfg.transport,
        shared.connector.as_ref().map(|c| (c, name)),
    )
    .await
    .map_err(|e| Failure::Transport(e.to_string()))
}

async fn worker(shared: Arc<Shared>) -> WorkerResult {
    let mut r = WorkerResult {
        hs: histogram(),
        msg: histogram(),
        hs_fail: BTreeMap::new(),
        msg_fail: BTreeMap::new(),
        examples_hs: BTreeMap::new(),
        examples_msg: BTreeMap::new(),
        by_scheme: BTreeMap::new(),
    };
    let mut rng = OsRng;
    let mut conn: Option<Connection> = None;
    let cfg = &shared.cfg;
    loop {
        if Instant::now() >= shared.deadline {
            break;
        }
        let i = shared.next.fetch_add(1, Ordering::Relaxed);
        if i >= cfg.endpoints {
            break;
        }
        let intended = shared.sign_in_pacer.wait().await;
        if Instant::now() >= shared.deadline {
            break;
        }
        if conn.is_none() || cfg.connection_per_endpoint {
            match connect(&shared).await {
                Ok(c) => conn = Some(c),
                Err(f) => {
                    count(&mut r.hs_fail, &mut r.examples_hs, &f);
                    shared.done_ops.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let mut ep = Endpoint::new(
            cfg.population.config(i),
            LocalAddr {
                transport: c.kind().via(),
                addr: c.local_addr().to_string(),
            },
        );
        match sign_in(c, &mut ep, &mut rng, &cfg.timers).await {
            Ok(_) => {
                let _ = r.hs.record(latency_us(intended));
                if let Some(reg) = ep.registration() {
                    *r.by_scheme
                        .entry(reg.scheme.token().to_owned())
                        .or_default() += 1;
                }
            }
            Err(f) => {
                count(&mut r.hs_fail, &mut r.examples_hs, &f);
                if matches!(f, Failure::Transport(_) | Failure::Timeout { .. }) {
                    conn = None;
                }
                shared.done_ops.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        }
        shared.done_ops.fetch_add(1, Ordering::Relaxed);
        for m in 0..cfg.messages {
            let intended = shared.message_pacer.wait().await;
            if Instant::now() >= shared.deadline {
                break;
            }
            let Some(c) = conn.as_mut() else { break };
            let body = Some((
                "text/plain".to_owned(),
                format!("load {i}/{m}").into_bytes(),
            ));
            let res = request(
                c,
                &mut ep,
                "MESSAGE",
                &cfg.message_target,
                body,
                &mut rng,
                &cfg.timers,
            )
            .await;
            let outcome = match res {
                Ok(done) if (200..300).contains(&done.status) => match done.signature {
                    SignatureCheck::Verified { .. } => Ok(()),
                    SignatureCheck::Unsigned => Err(Failure::Unsigned {
                        what: format!("{} to MESSAGE", done.status),
                    }),
                    SignatureCheck::Bad(b) => Err(Failure::BadServerSignature(b)),
                },
                Ok(done) => Err(Failure::Status {
                    status: done.status,
                    reason: done.reason,
                }),
                Err(f) => Err(f),
            };
            match outcome {
                Ok(()) => {
                    let _ = r.msg.record(latency_us(intended));
                }
                Err(f) => {
                    let fatal = matches!(
                        f,
                        Failure::Transport(_)
                            | Failure::Timeout { .. }
                            | Failure::SaRejected { .. }
                    );
                    count(&mut r.msg_fail, &mut r.examples_msg, &f);
                    if fatal {
                        if !matches!(f, Failure::SaRejected { .. }) {
                            conn = None;
                        }
                        break;
                    }
                }
            }
        }
        if cfg.connection_per_endpoint {
            conn = None;
        }
    }
    r
}

/// Runs the load and returns its summary.
pub async fn run(cfg: LoadConfig) -> Result<Summary, String> {
    let connector = match &cfg.tls {
        Some(t) => Some(tls_connector(t).map_err(|e| e.to_string())?),
        None => None,
    };
    let start = Instant::now();
    let shared = Arc::new(Shared {
        deadline: start + cfg.duration,
        next: AtomicUsize::new(0),
        sign_in_pacer: Pacer {
            start,
            rate: cfg.rate,
            next: AtomicU64::new(0),
        },
        message_pacer: Pacer {
            start,
            rate: cfg.message_rate,
            next: AtomicU64::new(0),
        },
        done_ops: AtomicU64::new(0),
        connector,
        cfg: cfg.clone(),
    });
    let bar = (cfg.progress && std::io::stderr().is_terminal()).then(|| {
        let pb = indicatif::ProgressBar::new(cfg.endpoints as u64);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} sign-ins ({per_sec}) {msg}",
        ) {
            pb.set_style(style.progress_chars("=> "));
        }
        pb
    });
    let mut handles = Vec::with_capacity(cfg.concurrency);
    for _ in 0..cfg.concurrency.max(1) {
        handles.push(tokio::spawn(worker(shared.clone())));
    }
    if let Some(pb) = &bar {
        let shared = shared.clone();
        let pb = pb.clone();
        tokio::spawn(async move {
            loop {
                pb.set_position(shared.done_ops.load(Ordering::Relaxed));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }
    let mut results = Vec::new();
    for h in handles {
        results.push(h.await.map_err(|e| format!("worker failed: {e}"))?);
    }
    let elapsed = start.elapsed().as_secs_f64().max(1e-9);
    if let Some(pb) = bar {
        pb.finish_and_clear();
    }
    let mut hs = histogram();
    let mut msg = histogram();
    let mut sign_ins = Phase::default();
    let mut messages = Phase::default();
    let mut by_scheme = BTreeMap::new();
    for r in results {
        let _ = hs.add(&r.hs);
        let _ = msg.add(&r.msg);
        for (k, v) in r.hs_fail {
            *sign_ins.failures.entry(k).or_default() += v;
        }
        for (k, v) in r.msg_fail {
            *messages.failures.entry(k).or_default() += v;
        }
        for (k, v) in r.examples_hs {
            sign_ins.examples.entry(k).or_insert(v);
        }
        for (k, v) in r.examples_msg {
            messages.examples.entry(k).or_insert(v);
        }
        for (k, v) in r.by_scheme {
            *by_scheme.entry(k).or_default() += v;
        }
    }
    for (phase, h) in [(&mut sign_ins, &hs), (&mut messages, &msg)] {
        phase.ok = h.len();
        phase.failed = phase.failures.values().sum();
        phase.per_sec = h.len() as f64 / elapsed;
        phase.latency = Latency::from(h);
    }
    Ok(Summary {
        server: cfg.server.to_string(),
        transport: cfg.transport,
        schemes: cfg.population.schemes.clone(),
        endpoints_planned: cfg.endpoints,
        endpoints_started: shared.next.load(Ordering::Relaxed).min(cfg.endpoints),
        concurrency: cfg.concurrency,
        messages_per_sa: cfg.messages,
        offered_sign_in_rate: cfg.rate,
        offered_message_rate: cfg.message_rate,
        elapsed_secs: elapsed,
        sign_ins,
        messages,
        by_scheme,
    })
}

impl Summary {
    /// Operations (sign-ins and MESSAGEs, connection failures included) that failed.
    pub fn failed(&self) -> u64 {
        self.sign_ins.failed + self.messages.failed
    }

    /// The human-readable summary.
    pub fn render(&self) -> String {
        let mut s = format!(
            "sagw-client load: {} over {:?}, {} endpoints planned / {} started, concurrency {}, {} MESSAGEs per SA, {:.2} s\n",
            self.server,
            self.transport,
            self.endpoints_planned,
            self.endpoints_started,
            self.concurrency,
            self.messages_per_sa,
            self.elapsed_secs
        );
        for (name, p) in [
            ("sign-ins", &self.sign_ins),
            ("signed MESSAGEs", &self.messages),
        ] {
            s.push_str(&format!(
                "  {name:<16} ok {:>8}  failed {:>6}  {:>10.1}/s  latency ms p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}\n",
                p.ok,
                p.failed,
                p.per_sec,
                p.latency.p50_ms,
                p.latency.p90_ms,
                p.latency.p99_ms,
                p.latency.p999_ms,
                p.latency.max_ms
            ));
            for (label, n) in &p.failures {
                s.push_str(&format!(
                    "      {n:>8} x {label}: {}\n",
                    p.examples.get(label).map(String::as_str).unwrap_or("")
                ));
            }
        }
        if self.offered_sign_in_rate.is_some() || self.offered_message_rate.is_some() {
            s.push_str("  latency of paced operations runs from their scheduled start\n");
        }
        if !self.by_scheme.is_empty() {
            let schemes: Vec<String> = self
                .by_scheme
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            s.push_str(&format!("  schemes used: {}\n", schemes.join(", ")));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pacer(rate: Option<f64>) -> Pacer {
        Pacer {
            start: Instant::now(),
            rate,
            next: AtomicU64::new(0),
        }
    }

    /// Late callers get their slot's instant, not the instant they called: the wait that made
    /// them late counts in their latency.
    #[tokio::test(start_paused = true)]
    async fn the_intended_start_is_the_schedule_even_for_a_late_operation() {
        let p = pacer(Some(10.0));
        let t0 = p.start;
        assert_eq!(p.wait().await, t0);
        // The second slot is 100 ms on: the pacer sleeps until then.
        assert_eq!(p.wait().await, t0 + Duration::from_millis(100));
        assert_eq!(Instant::now(), t0 + Duration::from_millis(100));
        // A worker busy for a second: slots 2..=11 are all in the past when it asks.
        tokio::time::advance(Duration::from_secs(1)).await;
        let late = p.wait().await;
        assert_eq!(late, t0 + Duration::from_millis(200));
        assert_eq!(
            Instant::now(),
            t0 + Duration::from_millis(1100),
            "no sleep when late"
        );
        assert_eq!(latency_us(late), 900_000);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_rate_the_intended_start_is_now() {
        let p = pacer(None);
        tokio::time::advance(Duration::from_millis(250)).await;
        assert_eq!(p.wait().await, Instant::now());
        assert_eq!(latency_us(Instant::now()), 1, "the histogram's floor");
    }
}
