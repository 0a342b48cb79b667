//! The metrics page, line by line: what a given set of messages, transactions, limits and counters
//! renders to. The expected text was produced by the mutex-and-BTreeMap registry this replaced, so
//! this pins the exposition format (names, HELP/TYPE lines, label sets, series order, cumulative
//! buckets) across the change to atomics.
//!
//! Series order within a family is the byte order of the rendered label string (what the old
//! `BTreeMap<String, _>` gave): upper-case methods in alphabetical order, then `other`; statuses in
//! string order (`0`, `100`..`699`, and out-of-range values where their digits sort them).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sagw_gateway::metrics::Metrics;
use sagw_sip::Message;

fn request(method: &str) -> Message {
    let text = format!(
        "{method} sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\n\
From: <sip:alice@example.com>;tag=a\r\nTo: <sip:bob@example.com>\r\nCall-ID: c\r\n\
CSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
    );
    Message::parse(text.as_bytes()).unwrap()
}

fn response(code: u16, cseq_method: Option<&str>) -> Message {
    let cseq = cseq_method
        .map(|m| format!("CSeq: 1 {m}\r\n"))
        .unwrap_or_default();
    let text = format!(
        "SIP/2.0 {code} Whatever\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\n\
From: <sip:alice@example.com>;tag=a\r\nTo: <sip:bob@example.com>;tag=b\r\nCall-ID: c\r\n\
{cseq}Content-Length: 0\r\n\r\n"
    );
    Message::parse(text.as_bytes()).unwrap()
}

fn record(m: &Metrics) {
    for _ in 0..3 {
        m.message("in", &request("INVITE"));
        m.message("out", &request("INVITE"));
    }
    m.message("in", &request("ACK"));
    m.message("in", &request("REGISTER"));
    m.message("in", &request("REGISTER"));
    m.message("in", &request("FOO"));
    m.message("in", &request("invite"));
    m.message("in", &response(100, Some("INVITE")));
    m.message("in", &response(180, Some("INVITE")));
    m.message("in", &response(200, Some("INVITE")));
    m.message("out", &response(100, Some("INVITE")));
    m.message("out", &response(180, Some("INVITE")));
    m.message("out", &response(200, Some("INVITE")));
    m.message("out", &response(200, Some("REGISTER")));
    m.message("out", &response(200, Some("REGISTER")));
    m.message("out", &response(405, Some("FOO")));
    m.message("out", &response(699, Some("SERVICE")));
    m.message("out", &response(503, None));
    // A direct inc() on a series message() also feeds: one line, summed.
    m.inc(
        "sagw_messages_total",
        "direction=\"in\",method=\"INVITE\",status=\"0\"".into(),
        10,
    );

    // Bucket bounds are inclusive: exactly 1 ms lands in le="0.001".
    m.transaction("INVITE", 200, Duration::from_millis(30));
    m.transaction("INVITE", 200, Duration::from_millis(1));
    m.transaction("INVITE", 486, Duration::from_micros(2500));
    m.transaction("INVITE", 486, Duration::from_micros(2501));
    m.transaction("REGISTER", 200, Duration::ZERO);
    m.transaction("FOO", 404, Duration::from_millis(1));
    m.transaction("MESSAGE", 408, Duration::from_secs(31));
    m.transaction("MESSAGE", 200, Duration::from_secs(30));
    // Out-of-range statuses are still counted, under their own value.
    m.transaction("OPTIONS", 0, Duration::from_millis(5));
    m.transaction("OPTIONS", 99, Duration::from_millis(5));
    m.transaction("OPTIONS", 700, Duration::from_millis(5));
    m.transaction("OPTIONS", 1000, Duration::from_millis(5));

    m.limit("connections");
    m.limit("connections");
    m.limit("udp_size");
    m.limit("transactions");
    m.limit("some_new_limit");

    m.inc("sagw_connections_total", "transport=\"tcp\"".into(), 3);
    m.inc("sagw_connections_total", "transport=\"tls\"".into(), 1);
    m.inc("sagw_dropped_total", "reason=\"loop\"".into(), 2);
    m.inc("sagw_parse_errors_total", "transport=\"udp\"".into(), 1);
    m.inc("sagw_send_failures_total", "transport=\"tcp\"".into(), 1);
    // The table path and the map path of one series add up to one line.
    m.binding_change("added");
    m.inc("sagw_bindings_changes_total", "change=\"added\"".into(), 1);
    m.inc("sagw_config_reloads_total", "result=\"failed\"".into(), 1);
    m.binding_change("refreshed");
    m.binding_change("refreshed");
    m.binding_change("refreshed");
    m.binding_change("weird");
    m.inc("sagw_limit_hits_total", "limit=\"connections\"".into(), 5);

    m.gauges.server_transactions.store(4, Ordering::Relaxed);
    m.gauges.client_transactions.store(5, Ordering::Relaxed);
    m.gauges.bindings.store(2, Ordering::Relaxed);
    m.gauges.connections_tcp.store(3, Ordering::Relaxed);
    m.gauges.connections_tls.store(-1, Ordering::Relaxed);
}

const EXPECTED: &str = r#"# HELP sagw_messages_total SIP messages by direction, method and status (0 for requests)
# TYPE sagw_messages_total counter
sagw_messages_total{direction="in",method="ACK",status="0"} 1
sagw_messages_total{direction="in",method="INVITE",status="0"} 13
sagw_messages_total{direction="in",method="INVITE",status="100"} 1
sagw_messages_total{direction="in",method="INVITE",status="180"} 1
sagw_messages_total{direction="in",method="INVITE",status="200"} 1
sagw_messages_total{direction="in",method="REGISTER",status="0"} 2
sagw_messages_total{direction="in",method="other",status="0"} 2
sagw_messages_total{direction="out",method="INVITE",status="0"} 3
sagw_messages_total{direction="out",method="INVITE",status="100"} 1
sagw_messages_total{direction="out",method="INVITE",status="180"} 1
sagw_messages_total{direction="out",method="INVITE",status="200"} 1
sagw_messages_total{direction="out",method="REGISTER",status="200"} 2
sagw_messages_total{direction="out",method="SERVICE",status="699"} 1
sagw_messages_total{direction="out",method="other",status="405"} 1
sagw_messages_total{direction="out",method="other",status="503"} 1
# HELP sagw_transactions_total Finished transactions by method and final status
# TYPE sagw_transactions_total counter
sagw_transactions_total{method="INVITE",status="200"} 2
sagw_transactions_total{method="INVITE",status="486"} 2
sagw_transactions_total{method="MESSAGE",status="200"} 1
sagw_transactions_total{method="MESSAGE",status="408"} 1
sagw_transactions_total{method="OPTIONS",status="0"} 1
sagw_transactions_total{method="OPTIONS",status="1000"} 1
sagw_transactions_total{method="OPTIONS",status="700"} 1
sagw_transactions_total{method="OPTIONS",status="99"} 1
sagw_transactions_total{method="REGISTER",status="200"} 1
sagw_transactions_total{method="other",status="404"} 1
# HELP sagw_connections_total Accepted or opened connections by transport
# TYPE sagw_connections_total counter
sagw_connections_total{transport="tcp"} 3
sagw_connections_total{transport="tls"} 1
# HELP sagw_limit_hits_total Limits hit, by limit
# TYPE sagw_limit_hits_total counter
sagw_limit_hits_total{limit="connections"} 7
sagw_limit_hits_total{limit="some_new_limit"} 1
sagw_limit_hits_total{limit="transactions"} 1
sagw_limit_hits_total{limit="udp_size"} 1
# HELP sagw_dropped_total Messages dropped by the proxy core, by reason
# TYPE sagw_dropped_total counter
sagw_dropped_total{reason="loop"} 2
# HELP sagw_parse_errors_total Messages or streams rejected by the parser, by transport
# TYPE sagw_parse_errors_total counter
sagw_parse_errors_total{transport="udp"} 1
# HELP sagw_send_failures_total Messages that could not be delivered, by transport
# TYPE sagw_send_failures_total counter
sagw_send_failures_total{transport="tcp"} 1
# HELP sagw_bindings_changes_total Registrar binding changes by kind
# TYPE sagw_bindings_changes_total counter
sagw_bindings_changes_total{change="added"} 2
sagw_bindings_changes_total{change="refreshed"} 3
sagw_bindings_changes_total{change="weird"} 1
# HELP sagw_config_reloads_total Configuration reloads (SIGHUP, admin API) by result: ok, or failed (the running configuration stays)
# TYPE sagw_config_reloads_total counter
sagw_config_reloads_total{result="failed"} 1
# HELP sagw_transaction_duration_seconds Time from request to final response
# TYPE sagw_transaction_duration_seconds histogram
sagw_transaction_duration_seconds_bucket{method="INVITE",le="0.001"} 1
sagw_transaction_duration_seconds_bucket{method="INVITE",le="0.0025"} 2
sagw_transaction_duration_seconds_bucket{method="INVITE",le="0.005"} 3
sagw_transaction_duration_seconds_bucket{method="INVITE",le="0.01"} 3
sagw_transaction_duration_seconds_bucket{method="INVITE",le="0.025"} 3
sagw_transaction_duration_seconds_bucket{method="INVITE",le="0.05"} 4
sagw_transaction_duration_seconds_bucket{method="INVITE",le="0.1"} 4
sagw_transaction_duration_seconds_bucket{method="INVITE",le="0.25"} 4
sagw_transaction_duration_seconds_bucket{method="INVITE",le="0.5"} 4
sagw_transaction_duration_seconds_bucket{method="INVITE",le="1"} 4
sagw_transaction_duration_seconds_bucket{method="INVITE",le="5"} 4
sagw_transaction_duration_seconds_bucket{method="INVITE",le="30"} 4
sagw_transaction_duration_seconds_bucket{method="INVITE",le="+Inf"} 4
sagw_transaction_duration_seconds_sum{method="INVITE"} 0.036001000000000005
sagw_transaction_duration_seconds_count{method="INVITE"} 4
sagw_transaction_duration_seconds_bucket{method="MESSAGE",le="0.001"} 0
sagw_transaction_duration_seconds_bucket{method="MESSAGE",le="0.0025"} 0
sagw_transaction_duration_seconds_bucket{method="MESSAGE",le="0.005"} 0
sagw_transaction_duration_seconds_bucket{method="MESSAGE",le="0.01"} 0
sagw_transaction_duration_seconds_bucket{method="MESSAGE",le="0.025"} 0
sagw_transaction_duration_seconds_bucket{method="MESSAGE",le="0.05"} 0
sagw_transaction_duration_seconds_bucket{method="MESSAGE",le="0.1"} 0
sagw_transaction_duration_seconds_bucket{method="MESSAGE",le="0.25"} 0
sagw_transaction_duration_seconds_bucket{method="MESSAGE",le="0.5"} 0
sagw_transaction_duration_seconds_bucket{method="MESSAGE",le="1"} 0
sagw_transaction_duration_seconds_bucket{method="MESSAGE",le="5"} 0
sagw_transaction_duration_seconds_bucket{method="MESSAGE",le="30"} 1
sagw_transaction_duration_seconds_bucket{method="MESSAGE",le="+Inf"} 2
sagw_transaction_duration_seconds_sum{method="MESSAGE"} 61
sagw_transaction_duration_seconds_count{method="MESSAGE"} 2
sagw_transaction_duration_seconds_bucket{method="OPTIONS",le="0.001"} 0
sagw_transaction_duration_seconds_bucket{method="OPTIONS",le="0.0025"} 0
sagw_transaction_duration_seconds_bucket{method="OPTIONS",le="0.005"} 4
sagw_transaction_duration_seconds_bucket{method="OPTIONS",le="0.01"} 4
sagw_transaction_duration_seconds_bucket{method="OPTIONS",le="0.025"} 4
sagw_transaction_duration_seconds_bucket{method="OPTIONS",le="0.05"} 4
sagw_transaction_duration_seconds_bucket{method="OPTIONS",le="0.1"} 4
sagw_transaction_duration_seconds_bucket{method="OPTIONS",le="0.25"} 4
sagw_transaction_duration_seconds_bucket{method="OPTIONS",le="0.5"} 4
sagw_transaction_duration_seconds_bucket{method="OPTIONS",le="1"} 4
sagw_transaction_duration_seconds_bucket{method="OPTIONS",le="5"} 4
sagw_transaction_duration_seconds_bucket{method="OPTIONS",le="30"} 4
sagw_transaction_duration_seconds_bucket{method="OPTIONS",le="+Inf"} 4
sagw_transaction_duration_seconds_sum{method="OPTIONS"} 0.02
sagw_transaction_duration_seconds_count{method="OPTIONS"} 4
sagw_transaction_duration_seconds_bucket{method="REGISTER",le="0.001"} 1
sagw_transaction_duration_seconds_bucket{method="REGISTER",le="0.0025"} 1
sagw_transaction_duration_seconds_bucket{method="REGISTER",le="0.005"} 1
sagw_transaction_duration_seconds_bucket{method="REGISTER",le="0.01"} 1
sagw_transaction_duration_seconds_bucket{method="REGISTER",le="0.025"} 1
sagw_transaction_duration_seconds_bucket{method="REGISTER",le="0.05"} 1
sagw_transaction_duration_seconds_bucket{method="REGISTER",le="0.1"} 1
sagw_transaction_duration_seconds_bucket{method="REGISTER",le="0.25"} 1
sagw_transaction_duration_seconds_bucket{method="REGISTER",le="0.5"} 1
sagw_transaction_duration_seconds_bucket{method="REGISTER",le="1"} 1
sagw_transaction_duration_seconds_bucket{method="REGISTER",le="5"} 1
sagw_transaction_duration_seconds_bucket{method="REGISTER",le="30"} 1
sagw_transaction_duration_seconds_bucket{method="REGISTER",le="+Inf"} 1
sagw_transaction_duration_seconds_sum{method="REGISTER"} 0
sagw_transaction_duration_seconds_count{method="REGISTER"} 1
sagw_transaction_duration_seconds_bucket{method="other",le="0.001"} 1
sagw_transaction_duration_seconds_bucket{method="other",le="0.0025"} 1
sagw_transaction_duration_seconds_bucket{method="other",le="0.005"} 1
sagw_transaction_duration_seconds_bucket{method="other",le="0.01"} 1
sagw_transaction_duration_seconds_bucket{method="other",le="0.025"} 1
sagw_transaction_duration_seconds_bucket{method="other",le="0.05"} 1
sagw_transaction_duration_seconds_bucket{method="other",le="0.1"} 1
sagw_transaction_duration_seconds_bucket{method="other",le="0.25"} 1
sagw_transaction_duration_seconds_bucket{method="other",le="0.5"} 1
sagw_transaction_duration_seconds_bucket{method="other",le="1"} 1
sagw_transaction_duration_seconds_bucket{method="other",le="5"} 1
sagw_transaction_duration_seconds_bucket{method="other",le="30"} 1
sagw_transaction_duration_seconds_bucket{method="other",le="+Inf"} 1
sagw_transaction_duration_seconds_sum{method="other"} 0.001
sagw_transaction_duration_seconds_count{method="other"} 1
# HELP sagw_server_transactions Live server transactions
# TYPE sagw_server_transactions gauge
sagw_server_transactions{} 4
# HELP sagw_client_transactions Live client transactions
# TYPE sagw_client_transactions gauge
sagw_client_transactions{} 5
# HELP sagw_bindings Registrar bindings
# TYPE sagw_bindings gauge
sagw_bindings{} 2
# HELP sagw_connections Open connections
# TYPE sagw_connections gauge
sagw_connections{transport="tcp"} 3
sagw_connections{transport="tls"} -1
# HELP sagw_write_backlog_bytes Bytes the accepted connections' write backlogs hold together (limits.write_backlog_total_bytes)
# TYPE sagw_write_backlog_bytes gauge
sagw_write_backlog_bytes{} 0
"#;

fn check(got: &str, expected: &str) {
    let got: Vec<&str> = got.lines().collect();
    let want: Vec<&str> = expected.lines().collect();
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let (gl, gv) = g.rsplit_once(' ').unwrap_or((g, ""));
        let (wl, wv) = w.rsplit_once(' ').unwrap_or((w, ""));
        if gl.contains("_sum{") && gl == wl {
            // Sums are floats: the old registry added f64 seconds, the new one integer
            // microseconds, so only the value is compared, to well under a microsecond.
            let (gv, wv): (f64, f64) = (gv.parse().unwrap(), wv.parse().unwrap());
            assert!((gv - wv).abs() < 1e-9, "line {}: {g:?} != {w:?}", i + 1);
        } else {
            assert_eq!(g, w, "line {}", i + 1);
        }
    }
    assert_eq!(got.len(), want.len(), "line count\n{}", got.join("\n"));
}

#[test]
fn renders_the_same_page_line_by_line() {
    let m = Metrics::default();
    record(&m);
    let page = m.render();
    check(&page, EXPECTED);
    // Sums are kept in whole microseconds, so they render as exact decimals (the f64 sum before
    // gave 0.036001000000000005 here).
    for line in [
        "sagw_transaction_duration_seconds_sum{method=\"INVITE\"} 0.036001",
        "sagw_transaction_duration_seconds_sum{method=\"MESSAGE\"} 61",
        "sagw_transaction_duration_seconds_sum{method=\"REGISTER\"} 0",
    ] {
        assert!(page.lines().any(|l| l == line), "{line}\n{page}");
    }
}

#[test]
fn empty_registry_renders_only_help_and_gauges() {
    let page = Metrics::default().render();
    for line in page.lines() {
        assert!(
            line.starts_with('#')
                || line.starts_with("sagw_server_transactions{}")
                || line.starts_with("sagw_client_transactions{}")
                || line.starts_with("sagw_bindings{}")
                || line.starts_with("sagw_connections{")
                || line.starts_with("sagw_write_backlog_bytes{}"),
            "{line}"
        );
    }
}

#[test]
fn counts_from_many_threads_add_up() {
    let m = Arc::new(Metrics::default());
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let m = m.clone();
            std::thread::spawn(move || {
                let req = request("INVITE");
                let ok = response(200, Some("INVITE"));
                for _ in 0..10_000 {
                    m.message("in", &req);
                    m.message("out", &ok);
                    m.transaction("INVITE", 200, Duration::from_millis(3));
                    m.limit("connections");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let page = m.render();
    for line in [
        "sagw_messages_total{direction=\"in\",method=\"INVITE\",status=\"0\"} 40000",
        "sagw_messages_total{direction=\"out\",method=\"INVITE\",status=\"200\"} 40000",
        "sagw_transactions_total{method=\"INVITE\",status=\"200\"} 40000",
        "sagw_limit_hits_total{limit=\"connections\"} 40000",
        "sagw_transaction_duration_seconds_bucket{method=\"INVITE\",le=\"0.0025\"} 0",
        "sagw_transaction_duration_seconds_bucket{method=\"INVITE\",le=\"0.005\"} 40000",
        "sagw_transaction_duration_seconds_bucket{method=\"INVITE\",le=\"+Inf\"} 40000",
        "sagw_transaction_duration_seconds_count{method=\"INVITE\"} 40000",
    ] {
        assert!(page.lines().any(|l| l == line), "{line}\n{page}");
    }
    let sum: f64 = page
        .lines()
        .find_map(|l| l.strip_prefix("sagw_transaction_duration_seconds_sum{method=\"INVITE\"} "))
        .unwrap()
        .parse()
        .unwrap();
    assert!((sum - 120.0).abs() < 1e-9, "{sum}");
}
