//! A small Prometheus registry (text exposition format 0.0.4) and its loopback HTTP endpoint.
//!
//! Hand-rolled rather than the `metrics` facade + exporter: a dozen series, no HTTP framework, and
//! label values are bounded here (methods outside the known set are reported as `other`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Latency histogram buckets, seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
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

/// Bound a method to a label value.
pub fn method_label(m: &str) -> &'static str {
    METHODS
        .iter()
        .find(|k| **k == m)
        .copied()
        .unwrap_or("other")
}

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Inner {
    counters: BTreeMap<(&'static str, String), u64>,
    histograms: BTreeMap<String, Histogram>,
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
}

/// The registry.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
    /// Gauges.
    pub gauges: Gauges,
    /// The security core, when authentication is on: its counters are rendered too, and the
    /// admin endpoints list and revoke its SAs.
    pub auth: std::sync::OnceLock<std::sync::Arc<sagw_auth::SecurityCore>>,
}

const HELP: [(&str, &str, &str); 8] = [
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
];

impl Metrics {
    /// Add `n` to a counter with pre-rendered labels (`a="b",c="d"`).
    pub fn inc(&self, name: &'static str, labels: String, n: u64) {
        if let Ok(mut g) = self.inner.lock() {
            *g.counters.entry((name, labels)).or_default() += n;
        }
    }

    /// A message in or out.
    pub fn message(&self, direction: &str, msg: &sagw_sip::Message) {
        let (method, status) = match msg.status_code() {
            Some(code) => (
                msg.cseq()
                    .map(|c| method_label(c.method))
                    .unwrap_or("other"),
                code,
            ),
            None => (method_label(msg.method().unwrap_or("")), 0),
        };
        self.inc(
            "sagw_messages_total",
            format!("direction=\"{direction}\",method=\"{method}\",status=\"{status}\""),
            1,
        );
    }

    /// A limit was hit.
    pub fn limit(&self, limit: &str) {
        self.inc("sagw_limit_hits_total", format!("limit=\"{limit}\""), 1);
    }

    /// Transaction finished.
    pub fn transaction(&self, method: &str, status: u16, elapsed: Duration) {
        let method = method_label(method);
        self.inc(
            "sagw_transactions_total",
            format!("method=\"{method}\",status=\"{status}\""),
            1,
        );
        let secs = elapsed.as_secs_f64();
        if let Ok(mut g) = self.inner.lock() {
            let h = g.histograms.entry(method.to_owned()).or_default();
            for (i, b) in BUCKETS.iter().enumerate() {
                if secs <= *b
                    && let Some(c) = h.counts.get_mut(i)
                {
                    *c += 1;
                }
            }
            h.sum += secs;
            h.count += 1;
        }
    }

    /// Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let Ok(g) = self.inner.lock() else {
            return out;
        };
        for (name, kind, help) in HELP {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for ((n, labels), v) in g.counters.range((name, String::new())..) {
                if *n != name {
                    break;
                }
                let _ = writeln!(out, "{name}{{{labels}}} {v}");
            }
        }
        let h = "sagw_transaction_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {h} Time from request to final response\n# TYPE {h} histogram"
        );
        for (method, hist) in &g.histograms {
            for (b, c) in BUCKETS.iter().zip(hist.counts.iter()) {
                let _ = writeln!(out, "{h}_bucket{{method=\"{method}\",le=\"{b}\"}} {c}");
            }
            let _ = writeln!(
                out,
                "{h}_bucket{{method=\"{method}\",le=\"+Inf\"}} {}",
                hist.count
            );
            let _ = writeln!(out, "{h}_sum{{method=\"{method}\"}} {}", hist.sum);
            let _ = writeln!(out, "{h}_count{{method=\"{method}\"}} {}", hist.count);
        }
        drop(g);
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
        ];
        for (name, help, v, labels) in gauges {
            if !help.is_empty() {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            }
            let _ = writeln!(out, "{name}{{{labels}}} {}", v.load(Ordering::Relaxed));
        }
        out
    }
}

/// Serve `GET /metrics` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: std::sync::Arc<Metrics>) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut used = 0;
            // Read the request head (bounded in size and time), ignore any body.
            let head = tokio::time::timeout(Duration::from_secs(5), async {
                loop {
                    let Some(slot) = buf.get_mut(used..) else {
                        return false;
                    };
                    match sock.read(slot).await {
                        Ok(0) | Err(_) => return false,
                        Ok(n) => used += n,
                    }
                    if buf
                        .get(..used)
                        .is_some_and(|b| b.windows(4).any(|w| w == b"\r\n\r\n"))
                    {
                        return true;
                    }
                    if used >= buf.len() {
                        return false;
                    }
                }
            })
            .await;
            if head != Ok(true) {
                return;
            }
            let req = String::from_utf8_lossy(buf.get(..used).unwrap_or(&[]));
            let ok = req.starts_with("GET /metrics ") || req.starts_with("GET / ");
            let (status, body) = if ok {
                let mut body = metrics.render();
                if let Some(core) = metrics.auth.get() {
                    body.push_str(&render_auth(core));
                }
                ("200 OK", body)
            } else if let Some(core) = metrics.auth.get() {
                admin(&req, core)
            } else {
                ("404 Not Found", "not found\n".to_owned())
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
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
        "sagw_auth_pending_handshakes",
        "gauge",
        "Handshakes in progress",
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
        ("pending_evicted", c.pending_evicted),
        ("pending_expired", c.pending_expired),
        ("pending_refused_source", c.pending_refused_source),
        ("discarded_ack_cancel", c.discarded),
        ("dropped_client_responses", c.dropped_responses),
    ] {
        let _ = writeln!(out, "sagw_auth_sa_events_total{{event=\"{event}\"}} {n}");
    }
    let _ = writeln!(out, "sagw_auth_security_associations {}", core.sas().len());
    let _ = writeln!(
        out,
        "sagw_auth_pending_handshakes {}",
        core.sas().pending_len()
    );
    out
}

/// `GET /admin/sas` lists the SAs (opaque, scheme, identity, epid, created, expiry, snum);
/// `POST /admin/sas/<opaque>/revoke` ends one at once. Served on the metrics listener (loopback by
/// default): operators only.
fn admin(req: &str, core: &sagw_auth::SecurityCore) -> (&'static str, String) {
    let line = req.lines().next().unwrap_or("");
    let mut parts = line.split(' ');
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    match (method, path) {
        ("GET", "/admin/sas") => {
            let mut body = String::from("opaque\tscheme\tidentity\tepid\tcreated\texpiry\tsnum\n");
            for sa in core.sas().list() {
                let _ = writeln!(
                    body,
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    sa.opaque,
                    sa.scheme.token(),
                    sa.identity,
                    sa.epid,
                    sa.created,
                    sa.expiry,
                    sa.snum
                );
            }
            ("200 OK", body)
        }
        ("POST", p) if p.starts_with("/admin/sas/") && p.ends_with("/revoke") => {
            let opaque = p
                .trim_start_matches("/admin/sas/")
                .trim_end_matches("/revoke");
            match sagw_auth::Opaque::parse(opaque) {
                Some(o) if core.sas().revoke(o, core.counters()) => {
                    ("200 OK", format!("revoked {o}\n"))
                }
                Some(_) => ("404 Not Found", "no such SA\n".to_owned()),
                None => ("400 Bad Request", "opaque is 8 hex digits\n".to_owned()),
            }
        }
        _ => ("404 Not Found", "not found\n".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_gauges() {
        let m = Metrics::default();
        let msg = sagw_sip::Message::parse(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n").unwrap();
        m.message("out", &msg);
        m.message("out", &msg);
        m.limit("connections");
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
    }
}
