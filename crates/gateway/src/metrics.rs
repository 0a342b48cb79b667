//! A small Prometheus registry (text exposition format 0.0.4); [`crate::admin::metrics_router`]
//! serves it on its own listener.
//!
//! Hand-rolled rather than the `metrics` facade + exporter: a dozen series, and label values are bounded here (methods outside the known set are reported as `other`).
//!
//! The series on the per-message path live in fixed tables of atomics, so [`Metrics::message`],
//! [`Metrics::transaction`] and (for the gateway's own limit labels) [`Metrics::limit`] neither
//! allocate nor lock: `sagw_messages_total` by (direction, method, status),
//! `sagw_transactions_total` by (method, status), the latency histogram by method, and
//! `sagw_limit_hits_total` by known limit. Statuses 0 and 100..=699 have a slot; any other value,
//! an unknown direction or limit, and every other family go through [`Metrics::inc`]: pre-rendered
//! labels in a map under a mutex. At scrape time both are merged, and each family's series are
//! written in the byte order of their label text (what the map alone used to give; histograms in
//! the order of their method label): the page does not depend on which path counted a series, a
//! series counted by both is one line, and only series counted at least once appear. The tables
//! cost about 225 KiB per registry and a scrape reads all of them (some microseconds).
//!
//! Every atomic is updated and read with `Relaxed` ordering: each counter is independent, nothing
//! else is published through it, and an atomic read-modify-write never loses an increment whatever
//! the ordering. A scrape that races with updates may see one counter's increment and not
//! another's, which Prometheus tolerates (it never had a cross-series snapshot to rely on).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use sagw_proxy::{DropReason, Transport};

/// Latency histogram buckets: inclusive upper bounds and their `le` labels (seconds). Compared as
/// `Duration`s, which gives the same answer as the `as_secs_f64() <= bound` this replaced (a test
/// checks both sides of every bound).
const BUCKETS: [(Duration, &str); 12] = [
    (Duration::from_micros(1_000), "0.001"),
    (Duration::from_micros(2_500), "0.0025"),
    (Duration::from_millis(5), "0.005"),
    (Duration::from_millis(10), "0.01"),
    (Duration::from_millis(25), "0.025"),
    (Duration::from_millis(50), "0.05"),
    (Duration::from_millis(100), "0.1"),
    (Duration::from_millis(250), "0.25"),
    (Duration::from_millis(500), "0.5"),
    (Duration::from_secs(1), "1"),
    (Duration::from_secs(5), "5"),
    (Duration::from_secs(30), "30"),
];

const METHODS: [&str; 15] = [
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "REGISTER",
    "OPTIONS",
    "MESSAGE",
    "SUBSCRIBE",
    "NOTIFY",
    "REFER",
    "INFO",
    "UPDATE",
    "PRACK",
    "PUBLISH",
    "SERVICE",
];

/// Index of `other` in the per-method tables.
const OTHER_METHOD: usize = METHODS.len();
/// Methods in the per-method tables: [`METHODS`] and `other`.
const METHOD_SLOTS: usize = METHODS.len() + 1;

/// Index of a method in [`METHODS`], or [`OTHER_METHOD`]. A `match` rather than a scan of
/// `METHODS`: the compiler dispatches on length first (kept in step by a test).
fn method_index(m: &str) -> usize {
    match m {
        "INVITE" => 0,
        "ACK" => 1,
        "BYE" => 2,
        "CANCEL" => 3,
        "REGISTER" => 4,
        "OPTIONS" => 5,
        "MESSAGE" => 6,
        "SUBSCRIBE" => 7,
        "NOTIFY" => 8,
        "REFER" => 9,
        "INFO" => 10,
        "UPDATE" => 11,
        "PRACK" => 12,
        "PUBLISH" => 13,
        "SERVICE" => 14,
        _ => OTHER_METHOD,
    }
}

/// Label of a per-method table index.
fn method_name(i: usize) -> &'static str {
    METHODS.get(i).copied().unwrap_or("other")
}

/// Bound a method to a label value.
pub fn method_label(m: &str) -> &'static str {
    method_name(method_index(m))
}

/// Statuses with a slot in the fixed tables: 0 (requests) and 100..=699 (every status the parser
/// accepts). Anything else is counted through the map, under its own value.
const STATUS_SLOTS: usize = 1 + 600;

fn status_slot(status: u16) -> Option<usize> {
    match status {
        0 => Some(0),
        100..=699 => Some(usize::from(status) - 99),
        _ => None,
    }
}

fn slot_status(slot: usize) -> usize {
    if slot == 0 { 0 } else { slot + 99 }
}

/// `N` counters on the heap (the message table is ~150 KiB: not for a stack frame).
struct Cells<const N: usize>(Box<[AtomicU64]>);

impl<const N: usize> Default for Cells<N> {
    fn default() -> Self {
        Self((0..N).map(|_| AtomicU64::new(0)).collect())
    }
}

impl<const N: usize> Cells<N> {
    fn add(&self, i: usize, n: u64) {
        if let Some(c) = self.0.get(i) {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Non-zero cells, by index.
    fn touched(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.0
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .enumerate()
            .filter(|(_, v)| *v != 0)
    }
}

const DIRECTIONS: [&str; 2] = ["in", "out"];
const MESSAGE_CELLS: usize = DIRECTIONS.len() * METHOD_SLOTS * STATUS_SLOTS;
const TRANSACTION_CELLS: usize = METHOD_SLOTS * STATUS_SLOTS;

/// The limits the gateway reports (`sagw_proxy::LimitKind::label` and the driver's own), counted
/// without formatting; any other label goes through the map.
const LIMITS: [&str; 17] = [
    "transactions",
    "transactions_per_client",
    "bindings_per_aor",
    "connections",
    "connections_per_ip",
    "write_queue",
    "write_queue_bytes",
    "write_backlog_total",
    "write_timeout",
    "tls_handshake_failed",
    "tls_handshake_timeout",
    "message_timeout",
    "idle_timeout",
    "udp_size",
    "message_size",
    "headers",
    "line_length",
];

/// The transports in declaration order, so that `transport as usize` indexes a table.
const TRANSPORTS: [Transport; 3] = [Transport::Udp, Transport::Tcp, Transport::Tls];

/// `sagw_bindings_changes_total` kinds: one per REGISTER, so counted without formatting.
const BINDING_CHANGES: [&str; 3] = ["added", "refreshed", "removed"];

/// One method's latency histogram.
#[derive(Default)]
struct Histogram {
    /// Not cumulative: slot `i` counts durations above bound `i - 1` and up to bound `i`, the last
    /// slot those above every bound. One atomic add per transaction instead of one per bucket; the
    /// scrape adds them up, so the buckets, `+Inf` and `_count` it writes agree with each other.
    slots: [AtomicU64; BUCKETS.len() + 1],
    /// Sum of the durations in whole microseconds (rendered as seconds): an integer so it can be an
    /// atomic; u64 microseconds wrap after 584,000 years of summed latency.
    sum_us: AtomicU64,
}

#[derive(Default)]
struct Inner {
    counters: BTreeMap<(&'static str, String), u64>,
}

/// Gauges kept as atomics (set from the core task, read at scrape time).
#[derive(Default)]
pub struct Gauges {
    /// Server transactions.
    pub server_transactions: AtomicI64,
    /// Client transactions.
    pub client_transactions: AtomicI64,
    /// Registrar bindings.
    pub bindings: AtomicI64,
    /// Open TCP connections.
    pub connections_tcp: AtomicI64,
    /// Open TLS connections.
    pub connections_tls: AtomicI64,
    /// What the accepted connections' write backlogs hold together (bytes), as of the end of
    /// the core thread's last pass.
    pub write_backlog_bytes: AtomicI64,
    /// Set when the gateway is a pool member: the `sagw_state_*` gauges are rendered.
    pub pooled: std::sync::atomic::AtomicBool,
    /// 1 while the state store answers, else 0.
    pub store_up: AtomicI64,
    /// SAs this gateway owns in the pool.
    pub pool_owned: AtomicI64,
    /// Messages held while their SA is fetched from the pool.
    pub pool_held: AtomicI64,
}

/// The registry.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
    /// `sagw_messages_total` by (direction, method, status slot).
    messages: Cells<MESSAGE_CELLS>,
    /// `sagw_transactions_total` by (method, status slot).
    transactions: Cells<TRANSACTION_CELLS>,
    /// `sagw_transaction_duration_seconds` by method.
    durations: [Histogram; METHOD_SLOTS],
    /// `sagw_limit_hits_total` for the labels in [`LIMITS`].
    limits: [AtomicU64; LIMITS.len()],
    /// `sagw_bindings_changes_total` by the kinds in [`BINDING_CHANGES`].
    binding_changes: [AtomicU64; BINDING_CHANGES.len()],
    /// `sagw_dropped_total` by [`DropReason`], indexed by `reason as usize`: a flood of messages
    /// the core drops costs an atomic add each, not a lock and a label.
    dropped: [AtomicU64; DropReason::ALL.len()],
    /// `sagw_parse_errors_total` by transport, indexed by `transport as usize` (see
    /// [`TRANSPORTS`]): garbage datagrams cost an atomic add each, like drops.
    parse_errors: [AtomicU64; TRANSPORTS.len()],
    /// Gauges.
    pub gauges: Gauges,
    /// The security core, when authentication is on: its counters are rendered too, and the
    /// admin API lists and revokes its SAs.
    pub auth: std::sync::OnceLock<std::sync::Arc<sagw_auth::SecurityCore>>,
    /// The sign-in workers (Kerberos AP-REQs, domain NTLM), one pool per kind, when jobs run off
    /// the core thread.
    pub auth_jobs: std::sync::OnceLock<Vec<std::sync::Arc<crate::auth_jobs::AuthWorkers>>>,
    /// Wakes the core thread after an admin change it must pass on (a revocation in a pool:
    /// the core hands its journal to the store on its next pass).
    pub nudge: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>,
    /// The next hops' state (`sagw_next_hop_up`), as the core thread publishes it.
    pub hops: std::sync::OnceLock<std::sync::Arc<crate::hops::HopTable>>,
    /// The core thread, set when it starts: `sagw_core_thread_cpu_seconds_total`.
    pub core_thread: std::sync::OnceLock<crate::thread_cpu::ThreadCpu>,
}

const HELP: [(&str, &str, &str); 9] = [
    (
        "sagw_messages_total",
        "counter",
        "SIP messages by direction, method and status (0 for requests)",
    ),
    (
        "sagw_transactions_total",
        "counter",
        "Finished transactions by method and final status",
    ),
    (
        "sagw_connections_total",
        "counter",
        "Accepted or opened connections by transport",
    ),
    ("sagw_limit_hits_total", "counter", "Limits hit, by limit"),
    (
        "sagw_dropped_total",
        "counter",
        "Messages dropped by the proxy core, by reason",
    ),
    (
        "sagw_parse_errors_total",
        "counter",
        "Messages or streams rejected by the parser, by transport",
    ),
    (
        "sagw_send_failures_total",
        "counter",
        "Messages that could not be delivered, by transport",
    ),
    (
        "sagw_bindings_changes_total",
        "counter",
        "Registrar binding changes by kind",
    ),
    (
        "sagw_config_reloads_total",
        "counter",
        "Configuration reloads (SIGHUP, admin API) by result: ok, or failed (the running configuration stays)",
    ),
];

impl Metrics {
    /// Add `n` to a counter with pre-rendered labels (`a="b",c="d"`).
    pub fn inc(&self, name: &'static str, labels: String, n: u64) {
        if let Ok(mut g) = self.inner.lock() {
            *g.counters.entry((name, labels)).or_default() += n;
        }
    }

    /// The pool's counters (only a pool member has them).
    fn render_pool_counters(&self, out: &mut String) {
        const POOL: [(&str, &str); 3] = [
            (
                "sagw_state_claims_total",
                "SAs fetched from the pool's store for a message signed with one, by result",
            ),
            (
                "sagw_state_opaque_collisions_total",
                "SAs the store refused to publish (new, or republished after a store outage) because another user's SA or tombstone holds their opaque",
            ),
            (
                "sagw_state_errors_total",
                "State store operations that failed, by operation",
            ),
        ];
        let Ok(g) = self.inner.lock() else {
            return;
        };
        for (name, help) in POOL {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for ((_, labels), v) in g
                .counters
                .range((name, String::new())..)
                .take_while(|((n, _), _)| *n == name)
            {
                let _ = writeln!(out, "{name}{{{labels}}} {v}");
            }
        }
    }

    /// A message in or out.
    pub fn message(&self, direction: &str, msg: &sagw_sip::Message) {
        let (method, status) = match msg.status_code() {
            Some(code) => (
                msg.cseq().map_or(OTHER_METHOD, |c| method_index(c.method)),
                code,
            ),
            None => (method_index(msg.method().unwrap_or("")), 0),
        };
        let dir = DIRECTIONS.iter().position(|d| *d == direction);
        if let (Some(dir), Some(slot)) = (dir, status_slot(status)) {
            self.messages
                .add((dir * METHOD_SLOTS + method) * STATUS_SLOTS + slot, 1);
            return;
        }
        // Not in the table (no such direction, or a status outside 100..=699): rare.
        let method = method_name(method);
        self.inc(
            "sagw_messages_total",
            format!("direction=\"{direction}\",method=\"{method}\",status=\"{status}\""),
            1,
        );
    }

    /// A registrar binding was added, refreshed or removed (`kind` one of `BINDING_CHANGES`;
    /// any other kind is counted under its own label).
    pub fn binding_change(&self, kind: &str) {
        if let Some(c) = BINDING_CHANGES
            .iter()
            .position(|k| *k == kind)
            .and_then(|i| self.binding_changes.get(i))
        {
            c.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.inc(
            "sagw_bindings_changes_total",
            format!("change=\"{kind}\""),
            1,
        );
    }

    /// The core dropped a message.
    pub fn dropped(&self, reason: DropReason) {
        if let Some(c) = self.dropped.get(reason as usize) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A stream connection opened (accepted, or to a next hop): the open-connections gauge of its
    /// transport and `sagw_connections_total`.
    pub fn connection_opened(&self, transport: Transport) {
        self.open_connections(transport)
            .fetch_add(1, Ordering::Relaxed);
        self.inc(
            "sagw_connections_total",
            format!("transport=\"{transport}\""),
            1,
        );
    }

    /// A stream connection closed.
    pub fn connection_closed(&self, transport: Transport) {
        self.open_connections(transport)
            .fetch_sub(1, Ordering::Relaxed);
    }

    fn open_connections(&self, transport: Transport) -> &AtomicI64 {
        match transport {
            Transport::Tls => &self.gauges.connections_tls,
            _ => &self.gauges.connections_tcp,
        }
    }

    /// Input on a connection of `transport` that could not be framed as SIP.
    pub fn parse_error(&self, transport: Transport) {
        if let Some(c) = self.parse_errors.get(transport as usize) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A message could not be handed to the transport (`transport` its flow's or next hop's).
    pub fn send_failure(&self, transport: Transport) {
        self.inc(
            "sagw_send_failures_total",
            format!("transport=\"{transport}\""),
            1,
        );
    }

    /// A configuration reload ended: `ok` or `failed`.
    pub fn config_reload(&self, outcome: &str) {
        self.inc(
            "sagw_config_reloads_total",
            format!("result=\"{outcome}\""),
            1,
        );
    }

    /// A limit was hit.
    pub fn limit(&self, limit: &str) {
        if let Some(c) = LIMITS
            .iter()
            .position(|l| *l == limit)
            .and_then(|i| self.limits.get(i))
        {
            c.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.inc("sagw_limit_hits_total", format!("limit=\"{limit}\""), 1);
    }

    /// Transaction finished.
    pub fn transaction(&self, method: &str, status: u16, elapsed: Duration) {
        let method = method_index(method);
        match status_slot(status) {
            Some(slot) => self.transactions.add(method * STATUS_SLOTS + slot, 1),
            // A status outside 100..=699: rare, counted under its own value.
            None => self.inc(
                "sagw_transactions_total",
                format!("method=\"{}\",status=\"{status}\"", method_name(method)),
                1,
            ),
        }
        if let Some(h) = self.durations.get(method) {
            let bucket = BUCKETS.partition_point(|(bound, _)| *bound < elapsed);
            if let Some(c) = h.slots.get(bucket) {
                c.fetch_add(1, Ordering::Relaxed);
            }
            let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
            h.sum_us.fetch_add(us, Ordering::Relaxed);
        }
    }

    /// The series of family `name` counted in the fixed tables, with their label text.
    fn table_series(&self, name: &str, series: &mut Vec<(String, u64)>) {
        if name == "sagw_messages_total" {
            for (i, v) in self.messages.touched() {
                let (dir, rest) = (
                    i / (METHOD_SLOTS * STATUS_SLOTS),
                    i % (METHOD_SLOTS * STATUS_SLOTS),
                );
                let (method, slot) = (rest / STATUS_SLOTS, rest % STATUS_SLOTS);
                let dir = DIRECTIONS.get(dir).copied().unwrap_or("");
                let (method, status) = (method_name(method), slot_status(slot));
                series.push((
                    format!("direction=\"{dir}\",method=\"{method}\",status=\"{status}\""),
                    v,
                ));
            }
        }
        if name == "sagw_transactions_total" {
            for (i, v) in self.transactions.touched() {
                let (method, slot) = (i / STATUS_SLOTS, i % STATUS_SLOTS);
                let (method, status) = (method_name(method), slot_status(slot));
                series.push((format!("method=\"{method}\",status=\"{status}\""), v));
            }
        }
        if name == "sagw_bindings_changes_total" {
            for (kind, c) in BINDING_CHANGES.iter().zip(&self.binding_changes) {
                let v = c.load(Ordering::Relaxed);
                if v != 0 {
                    series.push((format!("change=\"{kind}\""), v));
                }
            }
        }
        if name == "sagw_dropped_total" {
            for (reason, c) in DropReason::ALL.iter().zip(&self.dropped) {
                let v = c.load(Ordering::Relaxed);
                if v != 0 {
                    series.push((format!("reason=\"{}\"", reason.label()), v));
                }
            }
        }
        if name == "sagw_parse_errors_total" {
            for (t, c) in TRANSPORTS.iter().zip(&self.parse_errors) {
                let v = c.load(Ordering::Relaxed);
                if v != 0 {
                    series.push((format!("transport=\"{}\"", t.uri_param()), v));
                }
            }
        }
        if name == "sagw_limit_hits_total" {
            for (limit, c) in LIMITS.iter().zip(&self.limits) {
                let v = c.load(Ordering::Relaxed);
                if v != 0 {
                    series.push((format!("limit=\"{limit}\""), v));
                }
            }
        }
    }

    /// Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let Ok(g) = self.inner.lock() else {
            return out;
        };
        let mut series: Vec<(String, u64)> = Vec::new();
        for (name, kind, help) in HELP {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            series.clear();
            self.table_series(name, &mut series);
            series.extend(
                g.counters
                    .range((name, String::new())..)
                    .take_while(|((n, _), _)| *n == name)
                    .map(|((_, labels), v)| (labels.clone(), *v)),
            );
            // Label text order, one line per label set (the map's order and uniqueness).
            series.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            let mut i = 0;
            while let Some((labels, v)) = series.get(i) {
                let mut v = *v;
                i += 1;
                while let Some((_, more)) = series.get(i).filter(|(l, _)| l == labels) {
                    v = v.wrapping_add(*more);
                    i += 1;
                }
                let _ = writeln!(out, "{name}{{{labels}}} {v}");
            }
        }
        drop(g);
        let h = "sagw_transaction_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {h} Time from request to final response\n# TYPE {h} histogram"
        );
        // Methods in label order, as the map keyed by label gave.
        let mut methods: Vec<usize> = (0..METHOD_SLOTS).collect();
        methods.sort_unstable_by_key(|i| method_name(*i));
        for i in methods {
            let Some(hist) = self.durations.get(i) else {
                continue;
            };
            let slots: [u64; BUCKETS.len() + 1] =
                std::array::from_fn(|j| hist.slots.get(j).map_or(0, |c| c.load(Ordering::Relaxed)));
            let count = slots.iter().fold(0u64, |a, b| a.wrapping_add(*b));
            if count == 0 {
                continue;
            }
            let method = method_name(i);
            let mut cumulative = 0u64;
            for ((_, le), c) in BUCKETS.iter().zip(slots) {
                cumulative = cumulative.wrapping_add(c);
                let _ = writeln!(
                    out,
                    "{h}_bucket{{method=\"{method}\",le=\"{le}\"}} {cumulative}"
                );
            }
            let _ = writeln!(out, "{h}_bucket{{method=\"{method}\",le=\"+Inf\"}} {count}");
            // Exact decimal below 10^15 microseconds (31 years of summed latency): the division
            // is correctly rounded, and a decimal of at most 15 digits survives the round trip
            // through f64, so the shortest representation printed is that decimal.
            let sum = hist.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(out, "{h}_sum{{method=\"{method}\"}} {sum}");
            let _ = writeln!(out, "{h}_count{{method=\"{method}\"}} {count}");
        }
        let gauges = [
            (
                "sagw_server_transactions",
                "Live server transactions",
                &self.gauges.server_transactions,
                "",
            ),
            (
                "sagw_client_transactions",
                "Live client transactions",
                &self.gauges.client_transactions,
                "",
            ),
            (
                "sagw_bindings",
                "Registrar bindings",
                &self.gauges.bindings,
                "",
            ),
            (
                "sagw_connections",
                "Open connections",
                &self.gauges.connections_tcp,
                "transport=\"tcp\"",
            ),
            (
                "sagw_connections",
                "",
                &self.gauges.connections_tls,
                "transport=\"tls\"",
            ),
            (
                "sagw_write_backlog_bytes",
                "Bytes the accepted connections' write backlogs hold together (limits.write_backlog_total_bytes)",
                &self.gauges.write_backlog_bytes,
                "",
            ),
        ];
        let pool: [(&str, &str, &AtomicI64, &str); 3] = [
            (
                "sagw_state_store_up",
                "1 while the pool's state store answers",
                &self.gauges.store_up,
                "",
            ),
            (
                "sagw_state_owned_sas",
                "Security associations this gateway owns in the pool",
                &self.gauges.pool_owned,
                "",
            ),
            (
                "sagw_state_held_messages",
                "Messages held while their SA is fetched from the pool",
                &self.gauges.pool_held,
                "",
            ),
        ];
        let pooled = self.gauges.pooled.load(Ordering::Relaxed);
        let pool = pool.iter().filter(|_| pooled);
        for (name, help, v, labels) in gauges.iter().chain(pool) {
            if !help.is_empty() {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            }
            let _ = writeln!(out, "{name}{{{labels}}} {}", v.load(Ordering::Relaxed));
        }
        if pooled {
            self.render_pool_counters(&mut out);
        }
        if let Some(spent) = self.core_thread.get().and_then(|t| t.on_cpu()) {
            let name = "sagw_core_thread_cpu_seconds_total";
            let _ = writeln!(
                out,
                "# HELP {name} CPU time of the core thread, which does all SIP processing: near one second a second, the gateway is at its ceiling\n# TYPE {name} counter\n{name} {}",
                spent.as_secs_f64()
            );
        }
        if let Some(h) = self.hops.get() {
            out.push_str(&h.render_metrics());
        }
        out
    }
}

/// The whole page: the registry, then the security core's and the sign-in workers' counters
/// when there are some. Served by [`crate::admin::metrics_router`].
pub fn page(metrics: &Metrics) -> String {
    let mut body = metrics.render();
    if let Some(core) = metrics.auth.get() {
        body.push_str(&render_auth(core));
    }
    for w in metrics.auth_jobs.get().into_iter().flatten() {
        body.push_str(&render_auth_jobs(w));
    }
    body
}

/// One pool of sign-in workers' counters in Prometheus text format:
/// `sagw_kerberos_jobs_*` (AP-REQs), `sagw_domain_ntlm_jobs_*` (NTLM responses for the domain)
/// or `sagw_ntlm_final_leg_jobs_*` (NTLM final legs recorded in a pool's store).
pub fn render_auth_jobs(w: &crate::auth_jobs::AuthWorkers) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let (prefix, what) = match w.kind() {
        sagw_auth::JobKind::Kerberos => ("sagw_kerberos_jobs", "Kerberos AP-REQs"),
        sagw_auth::JobKind::DomainNtlm => (
            "sagw_domain_ntlm_jobs",
            "NTLM responses for the domain to verify",
        ),
        sagw_auth::JobKind::NtlmFinalLeg => (
            "sagw_ntlm_final_leg_jobs",
            "NTLM final legs recorded in the pool's store",
        ),
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP {prefix}_total {what} handed to the worker threads, by outcome\n# TYPE {prefix}_total counter"
    );
    for (outcome, n) in [
        ("queued", &w.stats.queued),
        ("done", &w.stats.done),
        ("duplicate", &w.stats.duplicates),
        ("queue_full", &w.stats.refused_full),
        ("source_share", &w.stats.refused_source),
    ] {
        let _ = writeln!(
            out,
            "{prefix}_total{{outcome=\"{outcome}\"}} {}",
            n.load(Relaxed)
        );
    }
    let _ = writeln!(
        out,
        "# HELP {prefix}_in_flight {what} queued or being worked on\n# TYPE {prefix}_in_flight gauge\n{prefix}_in_flight {}",
        w.in_flight()
    );
    out
}

/// The security core's counters in Prometheus text format.
pub fn render_auth(core: &sagw_auth::SecurityCore) -> String {
    let c = core.counters().snapshot();
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    family(
        "sagw_auth_challenges_total",
        "counter",
        "Challenges (401/407) sent",
    );
    family(
        "sagw_auth_handshakes_total",
        "counter",
        "Handshakes by scheme and outcome",
    );
    family(
        "sagw_auth_handshake_failures_total",
        "counter",
        "Failed handshakes by scheme and reason",
    );
    family(
        "sagw_auth_signatures_total",
        "counter",
        "Client signatures verified and server signatures made, by scheme",
    );
    family(
        "sagw_auth_signature_failures_total",
        "counter",
        "Client signatures refused by scheme and reason",
    );
    family(
        "sagw_auth_sa_events_total",
        "counter",
        "Security association events",
    );
    family(
        "sagw_auth_security_associations",
        "gauge",
        "Established security associations",
    );
    family(
        "sagw_auth_ntlm_recent_final_legs",
        "gauge",
        "NTLM final legs remembered for one-time use (successful ones of the last two handshake windows; nothing is kept for a handshake in progress)",
    );
    let _ = writeln!(out, "sagw_auth_challenges_total {}", c.challenges);
    for s in &c.by_scheme {
        let l = s.scheme.label();
        let _ = writeln!(
            out,
            "sagw_auth_handshakes_total{{scheme=\"{l}\",outcome=\"started\"}} {}",
            s.handshakes_started
        );
        let _ = writeln!(
            out,
            "sagw_auth_handshakes_total{{scheme=\"{l}\",outcome=\"completed\"}} {}",
            s.handshakes_completed
        );
        for (r, n) in &s.handshake_failures {
            let _ = writeln!(
                out,
                "sagw_auth_handshake_failures_total{{scheme=\"{l}\",reason=\"{}\"}} {n}",
                r.label()
            );
        }
        let _ = writeln!(
            out,
            "sagw_auth_signatures_total{{scheme=\"{l}\",direction=\"verified\"}} {}",
            s.verified
        );
        let _ = writeln!(
            out,
            "sagw_auth_signatures_total{{scheme=\"{l}\",direction=\"signed\"}} {}",
            s.signed
        );
        for (r, n) in &s.verify_failures {
            let _ = writeln!(
                out,
                "sagw_auth_signature_failures_total{{scheme=\"{l}\",reason=\"{}\"}} {n}",
                r.label()
            );
        }
    }
    for (event, n) in [
        ("expired_lifetime", c.sa_expired_lifetime),
        ("expired_idle", c.sa_expired_idle),
        ("replaced", c.sa_replaced),
        ("revoked", c.sa_revoked),
        ("discarded_ack_cancel", c.discarded),
        ("dropped_client_responses", c.dropped_responses),
        ("evicted_identity_cap", c.sa_evicted_identity_cap),
        ("forbidden_identity", c.forbidden),
        ("epid_too_long", c.epid_refused),
    ] {
        let _ = writeln!(out, "sagw_auth_sa_events_total{{event=\"{event}\"}} {n}");
    }
    let _ = writeln!(out, "sagw_auth_security_associations {}", core.sas().len());
    let _ = writeln!(
        out,
        "sagw_auth_ntlm_recent_final_legs {}",
        core.sas().recent_final_legs()
    );
    if core.serves_kerberos() {
        let _ = writeln!(
            out,
            "# HELP sagw_auth_kerberos_replay_unavailable_total Kerberos AP-REQs accepted on MIT's replay cache alone: the pool's replay registry could not tell\n# TYPE sagw_auth_kerberos_replay_unavailable_total counter\nsagw_auth_kerberos_replay_unavailable_total {}",
            core.kerberos_replay_unavailable()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_index_matches_the_method_list() {
        for (i, m) in METHODS.iter().enumerate() {
            assert_eq!(method_index(m), i, "{m}");
            assert_eq!(method_label(m), *m);
        }
        for m in ["", "invite", "FOO", "INVITEX", "other"] {
            assert_eq!(method_index(m), OTHER_METHOD, "{m}");
            assert_eq!(method_label(m), "other");
        }
    }

    #[test]
    fn buckets_match_the_float_comparison_they_replaced() {
        for (bound, le) in BUCKETS {
            let b: f64 = le.parse().unwrap();
            assert_eq!(bound.as_secs_f64(), b, "{le}");
            for d in [
                bound - Duration::from_nanos(1),
                bound,
                bound + Duration::from_nanos(1),
            ] {
                assert_eq!(d <= bound, d.as_secs_f64() <= b, "{d:?} vs {le}");
            }
        }
        assert!(BUCKETS.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn values_outside_the_tables_are_counted_under_their_own_labels() {
        let m = Metrics::default();
        let msg = sagw_sip::Message::parse(b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").unwrap();
        m.message("sideways", &msg);
        m.message("in", &msg);
        m.transaction("BYE", 65535, Duration::MAX);
        m.limit("new_limit");
        let t = m.render();
        for line in [
            "sagw_messages_total{direction=\"in\",method=\"OPTIONS\",status=\"0\"} 1",
            "sagw_messages_total{direction=\"sideways\",method=\"OPTIONS\",status=\"0\"} 1",
            "sagw_transactions_total{method=\"BYE\",status=\"65535\"} 1",
            "sagw_limit_hits_total{limit=\"new_limit\"} 1",
            "sagw_transaction_duration_seconds_bucket{method=\"BYE\",le=\"30\"} 0",
            "sagw_transaction_duration_seconds_bucket{method=\"BYE\",le=\"+Inf\"} 1",
            "sagw_transaction_duration_seconds_count{method=\"BYE\"} 1",
        ] {
            assert!(t.lines().any(|l| l == line), "{line}\n{t}");
        }
    }

    #[test]
    fn transports_sit_at_their_own_index() {
        for (i, t) in TRANSPORTS.iter().enumerate() {
            assert_eq!(*t as usize, i, "{t:?}");
            match t {
                Transport::Udp | Transport::Tcp | Transport::Tls => {}
            }
        }
    }

    #[test]
    fn status_slots_round_trip() {
        for status in (0..=u16::MAX).rev() {
            match status_slot(status) {
                Some(slot) => {
                    assert!(slot < STATUS_SLOTS);
                    assert_eq!(slot_status(slot), usize::from(status));
                }
                None => assert!(status != 0 && !(100..=699).contains(&status)),
            }
        }
        assert_eq!(status_slot(699), Some(STATUS_SLOTS - 1));
    }

    #[test]
    fn renders_counters_histograms_and_gauges() {
        let m = Metrics::default();
        let msg = sagw_sip::Message::parse(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n").unwrap();
        m.message("out", &msg);
        m.message("out", &msg);
        m.limit("connections");
        m.dropped(DropReason::Retransmission);
        m.dropped(DropReason::Retransmission);
        m.dropped(DropReason::ForeignTransaction);
        m.connection_opened(Transport::Tls);
        m.connection_opened(Transport::Tls);
        m.connection_closed(Transport::Tls);
        m.send_failure(Transport::Udp);
        m.parse_error(Transport::Tcp);
        m.config_reload("failed");
        m.transaction("INVITE", 200, Duration::from_millis(30));
        m.transaction("FOO", 404, Duration::from_millis(1));
        m.gauges.connections_tcp.store(3, Ordering::Relaxed);
        let t = m.render();
        assert!(
            t.contains(
                "sagw_messages_total{direction=\"out\",method=\"REGISTER\",status=\"200\"} 2\n"
            ),
            "{t}"
        );
        assert!(t.contains("sagw_limit_hits_total{limit=\"connections\"} 1\n"));
        assert!(t.contains("sagw_transactions_total{method=\"other\",status=\"404\"} 1\n"));
        assert!(t.contains(
            "sagw_transaction_duration_seconds_bucket{method=\"INVITE\",le=\"0.025\"} 0\n"
        ));
        assert!(t.contains(
            "sagw_transaction_duration_seconds_bucket{method=\"INVITE\",le=\"0.05\"} 1\n"
        ));
        assert!(t.contains("sagw_connections{transport=\"tcp\"} 3\n"));
        for line in [
            "sagw_dropped_total{reason=\"retransmission\"} 2",
            "sagw_dropped_total{reason=\"foreign_transaction\"} 1",
            "sagw_connections{transport=\"tls\"} 1",
            "sagw_connections_total{transport=\"tls\"} 2",
            "sagw_send_failures_total{transport=\"udp\"} 1",
            "sagw_parse_errors_total{transport=\"tcp\"} 1",
            "sagw_config_reloads_total{result=\"failed\"} 1",
        ] {
            assert!(t.lines().any(|l| l == line), "{line}\n{t}");
        }
        // One HELP and TYPE line per family, whether its series come from a table or the map.
        assert_eq!(t.matches("# TYPE sagw_dropped_total counter").count(), 1);
        assert!(
            !t.contains("reason=\"stray\""),
            "untouched reasons are not rendered"
        );
    }
}
