//! The admin HTTP API, the health checks, the metrics listener and the SIP probers' exemption,
//! against a gateway started in this process, over real loopback sockets: raw HTTP/1.1 written by
//! hand (what the gateway must refuse is exactly what a well-behaved client library would not
//! send), real sign-ins by `sagw-client`, real SIP datagrams for the probes.

mod auth_support;

use std::net::SocketAddr;
use std::time::Duration;

use auth_support::*;
use sagw_client::transport::TransportKind;
use sagw_client::{AuthScheme, Failure};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// One HTTP/1.1 response read off a connection that stays open: (status, headers, body).
async fn read_response(s: &mut TcpStream) -> (u16, String, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .expect("content-length");
            while buf.len() < end + 4 + len {
                let n = tokio::time::timeout(WAIT, s.read(&mut chunk))
                    .await
                    .expect("body in time")
                    .expect("read");
                assert!(n > 0, "closed mid-body");
                buf.extend_from_slice(&chunk[..n]);
            }
            let status = head
                .split(' ')
                .nth(1)
                .and_then(|c| c.parse().ok())
                .expect("status");
            let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned();
            return (status, head, body);
        }
        let n = tokio::time::timeout(WAIT, s.read(&mut chunk))
            .await
            .expect("answer in time")
            .expect("read");
        assert!(
            n > 0,
            "closed before a response: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// `method path` to `addr` with the given extra header lines; (status, headers, body).
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(
        format!(
            "{method} {path} HTTP/1.1\r\n{headers}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .expect("write");
    read_response(&mut s).await
}

fn bearer() -> String {
    format!("Host: 127.0.0.1\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n")
}

/// An authorised call to the admin API; (status, JSON body).
async fn admin(gw: &sagw_gateway::Running, method: &str, path: &str) -> (u16, Value) {
    let (status, _, body) =
        request(gw.admin_addr.expect("admin"), method, path, &bearer(), "").await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

async fn signed_in(gw: &sagw_gateway::Running, user: &str) -> Client {
    let mut c = Client::connect(
        gw,
        TransportKind::Tcp,
        config(user, &format!("{user}-pw"), AuthScheme::Ntlm, 4),
    )
    .await;
    let (r, _) = c.sign_in().await;
    r.unwrap_or_else(|f| panic!("{user}: {f}\n{}", c.trace()));
    c
}

/// An OPTIONS on the client's SA: Ok when answered and signed, the failure otherwise.
async fn signed_request(c: &mut Client) -> Result<(), Failure> {
    c.request("OPTIONS", &format!("sip:{DOMAIN}"), None)
        .await
        .0
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_refuses_requests_without_the_token_or_for_another_host() {
    let gw = gateway(GwOptions::default()).await;
    let addr = gw.admin_addr.expect("admin API on");
    let host = "Host: 127.0.0.1\r\n";
    // No token, a wrong one, another scheme, the token with a byte more.
    for auth in [
        String::new(),
        "Authorization: Bearer wrong\r\n".to_owned(),
        format!("Authorization: Basic {ADMIN_TOKEN}\r\n"),
        format!("Authorization: Bearer {ADMIN_TOKEN}x\r\n"),
    ] {
        for (method, path) in [
            ("GET", "/admin/sas"),
            ("POST", "/admin/sas/00000001/revoke"),
            ("GET", "/admin/log-level"),
            ("POST", "/admin/drain"),
        ] {
            let (status, head, _) = request(addr, method, path, &format!("{host}{auth}"), "").await;
            assert_eq!(status, 401, "{method} {path} with {auth:?}");
            assert!(head.contains("www-authenticate: Bearer"), "{head}");
        }
    }
    // The right token, but a Host a rebinding page would send, or a browser's Origin.
    let token = format!("Authorization: Bearer {ADMIN_TOKEN}\r\n");
    for extra in [
        format!("Host: attacker.example:{}\r\n{token}", addr.port()),
        format!("Host: localhost.attacker.example\r\n{token}"),
        format!("{host}{token}Origin: http://127.0.0.1:{}\r\n", addr.port()),
        token.clone(),
    ] {
        let (status, head, _) = request(addr, "GET", "/admin/sas", &extra, "").await;
        assert_eq!(status, 403, "{extra:?}");
        assert!(
            !head.to_ascii_lowercase().contains("access-control"),
            "{head}"
        );
    }
    // The health checks need no token, but the Host rule holds for them too.
    let (status, _, _) = request(addr, "GET", "/healthz", host, "").await;
    assert_eq!(status, 200);
    let (status, _, _) = request(addr, "GET", "/readyz", "Host: evil.example\r\n", "").await;
    assert_eq!(status, 403);
    // And with everything right, the API answers.
    let (status, _, body) = request(addr, "GET", "/admin/sas", &format!("{host}{token}"), "").await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_in_clients_sa_is_listed_revoked_and_its_registration_shown() {
    let gw = gateway(GwOptions::default()).await;
    let mut a = signed_in(&gw, "alice").await;
    let mut b = signed_in(&gw, "bob").await;
    let opaque =
        a.ep.sa()
            .and_then(|sa| sa.opaque())
            .expect("an SA")
            .to_owned();

    let (status, list) = admin(&gw, "GET", "/admin/sas").await;
    assert_eq!(status, 200);
    let row = list
        .as_array()
        .expect("a list")
        .iter()
        .find(|r| r["opaque"] == opaque.as_str())
        .unwrap_or_else(|| panic!("{opaque} in {list}"));
    assert_eq!(row["identity"], format!("sip:alice@{DOMAIN}"));
    assert_eq!(row["epid"], a.epid().as_str());
    assert_eq!(row["scheme"], "NTLM");

    // The registration the sign-in made, by AOR, with the endpoint it proved.
    let (status, regs) = admin(
        &gw,
        "GET",
        &format!("/admin/registrations/sip:alice@{DOMAIN}"),
    )
    .await;
    assert_eq!(status, 200);
    let regs = regs.as_array().expect("a list").clone();
    assert_eq!(regs.len(), 1, "{regs:?}");
    assert_eq!(regs[0]["identity"], format!("sip:alice@{DOMAIN}"));
    assert_eq!(regs[0]["epid"], a.epid().as_str());
    assert_eq!(regs[0]["transport"], "tcp");
    assert_eq!(regs[0]["remote"], a.conn.local_addr().to_string());
    assert_eq!(regs[0]["local"], true);
    let (_, none) = admin(&gw, "GET", "/admin/registrations/sip:nobody@example.com").await;
    assert_eq!(none, serde_json::json!([]));

    // Revoked: alice's next signed request is challenged; bob is served on.
    assert!(signed_request(&mut a).await.is_ok());
    let (status, body) = admin(&gw, "POST", &format!("/admin/sas/{opaque}/revoke")).await;
    assert_eq!(
        (status, body["revoked"].as_str()),
        (200, Some(opaque.as_str()))
    );
    let (status, _) = admin(&gw, "POST", &format!("/admin/sas/{opaque}/revoke")).await;
    assert_eq!(status, 404, "a second revoke finds nothing");
    let (status, _) = admin(&gw, "POST", "/admin/sas/not-hex/revoke").await;
    assert_eq!(status, 400);
    match signed_request(&mut a).await {
        Err(Failure::SaRejected { .. }) => {}
        other => panic!("revoked SA: {other:?}\n{}", a.trace()),
    }
    assert!(signed_request(&mut b).await.is_ok(), "{}", b.trace());

    // A user's SAs, by account name.
    let (status, body) = admin(&gw, "POST", "/admin/users/bob/revoke").await;
    assert_eq!((status, body["revoked"].as_u64()), (200, Some(1)));
    match signed_request(&mut b).await {
        Err(Failure::SaRejected { .. }) => {}
        other => panic!("revoked user: {other:?}\n{}", b.trace()),
    }
    let (_, list) = admin(&gw, "GET", "/admin/sas").await;
    assert_eq!(list, serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_reload_and_drain_through_the_api() {
    // 127.0.0.2 is a load balancer probing over SIP as well.
    let gw = gateway_with_probers(&["127.0.0.2"]).await;
    let addr = gw.admin_addr.expect("admin");
    let host = "Host: 127.0.0.1\r\n";
    let (status, _, body) = request(addr, "GET", "/healthz", host, "").await;
    assert_eq!((status, body.as_str()), (200, "{\"alive\":true}"));
    let (status, _, body) = request(addr, "GET", "/readyz", host, "").await;
    assert_eq!((status, body.as_str()), (200, "{\"ready\":true}"));
    assert_eq!(probe(&gw, "127.0.0.2", 1).await, 200);

    // A reload that cannot read its file changes nothing and says why.
    let (status, err) = admin(&gw, "POST", "/admin/reload").await;
    assert_eq!(status, 422, "{err}");
    assert!(
        err["error"]
            .as_str()
            .is_some_and(|e| e.contains("configuration source")),
        "{err}"
    );
    let dir = tempfile::tempdir().expect("dir");
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, "[proxy\nmode = ").expect("file");
    gw.set_config_source(sagw_gateway::reload::ConfigSource {
        path: Some(broken.clone()),
        log_level: None,
        log_format: None,
    });
    let (status, err) = admin(&gw, "POST", "/admin/reload").await;
    assert_eq!(status, 422, "{err}");
    assert!(
        err["error"]
            .as_str()
            .is_some_and(|e| e.contains(&broken.display().to_string())),
        "{err}"
    );
    assert_eq!(request(addr, "GET", "/readyz", host, "").await.0, 200);

    // Drained: not ready, alive still, and the balancer's SIP probe is answered 503.
    let (status, body) = admin(&gw, "POST", "/admin/drain").await;
    assert_eq!((status, &body["draining"]), (200, &Value::Bool(true)));
    let (status, _, body) = request(addr, "GET", "/readyz", host, "").await;
    assert_eq!(status, 503);
    assert!(body.contains("draining"), "{body}");
    assert_eq!(request(addr, "GET", "/healthz", host, "").await.0, 200);
    assert_eq!(probe(&gw, "127.0.0.2", 2).await, 503);
    assert_eq!(admin(&gw, "GET", "/admin/hops").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_level_changes_at_run_time() {
    // The process's subscriber, as `sagw` installs it (once per process; only this test here
    // needs it).
    sagw_gateway::logging::init("warn", sagw_gateway::config::LogFormat::Human);
    let gw = gateway(GwOptions::default()).await;
    assert_eq!(
        admin(&gw, "GET", "/admin/log-level").await,
        (200, serde_json::json!({ "level": "warn" }))
    );
    assert!(!tracing::enabled!(target: "sagw_gateway::auth", tracing::Level::DEBUG));
    let addr = gw.admin_addr.expect("admin");
    let (status, _, _) = request(
        addr,
        "PUT",
        "/admin/log-level",
        &bearer(),
        "sagw_gateway=debug,warn",
    )
    .await;
    assert_eq!(status, 200);
    assert!(tracing::enabled!(target: "sagw_gateway::auth", tracing::Level::DEBUG));
    assert!(!tracing::enabled!(target: "sagw_client", tracing::Level::DEBUG));
    let json = format!("{}Content-Type: application/json\r\n", bearer());
    let (status, _, body) = request(
        addr,
        "PUT",
        "/admin/log-level",
        &json,
        "{\"level\":\"nonsense=[\"}",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, _, _) = request(
        addr,
        "PUT",
        "/admin/log-level",
        &json,
        "{\"level\":\"warn\"}",
    )
    .await;
    assert_eq!(status, 200);
    assert!(!tracing::enabled!(target: "sagw_gateway::auth", tracing::Level::DEBUG));
    assert_eq!(
        admin(&gw, "GET", "/admin/log-level").await.1,
        serde_json::json!({ "level": "warn" })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_keep_the_connection_and_serve_nothing_else() {
    let gw = gateway(GwOptions::default()).await;
    let metrics = gw.metrics_addr.expect("metrics");
    let mut s = TcpStream::connect(metrics).await.expect("connect");
    // Two requests on one connection (HTTP/1.1 keep-alive), the second after the first answer.
    for _ in 0..2 {
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .expect("write");
        let (status, head, body) = read_response(&mut s).await;
        assert_eq!(status, 200);
        assert!(head.contains("text/plain; version=0.0.4"), "{head}");
        assert!(body.contains("sagw_auth_challenges_total"), "{body}");
        // The core thread's own CPU time: it has run (started, read its sockets) by now.
        let core_cpu = body
            .lines()
            .find_map(|l| l.strip_prefix("sagw_core_thread_cpu_seconds_total "))
            .and_then(|v| v.parse::<f64>().ok());
        assert!(core_cpu.is_some_and(|s| s > 0.0), "{body}");
        assert!(
            body.contains("# TYPE sagw_core_thread_cpu_seconds_total counter"),
            "{body}"
        );
    }
    // Only /metrics is metrics; the admin routes are not served here at all.
    for path in ["/", "/admin/sas", "/metrics/x", "/healthz"] {
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
            .await
            .expect("write");
        assert_eq!(read_response(&mut s).await.0, 404, "{path}");
    }
    let (status, _, _) = request(
        gw.admin_addr.expect("admin"),
        "GET",
        "/metrics",
        &bearer(),
        "",
    )
    .await;
    assert_eq!(status, 404, "metrics are not on the admin listener");
}

/// An OPTIONS to the gateway itself from `from`; the status of the answer.
async fn probe(gw: &sagw_gateway::Running, from: &str, n: u32) -> u16 {
    let udp = gw.udp.expect("udp");
    let sock = UdpSocket::bind(format!("{from}:0")).await.expect("bind");
    let me = sock.local_addr().expect("addr");
    let msg = format!(
        "OPTIONS sip:{udp} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKlb{n}\r\nFrom: <sip:lb@{me}>;tag=lb{n}\r\n\
To: <sip:{udp}>\r\nCall-ID: probe-{n}-{}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        unique()
    );
    sock.send_to(msg.as_bytes(), udp).await.expect("send");
    let mut buf = vec![0u8; 65536];
    let (n, _) = tokio::time::timeout(Duration::from_secs(3), sock.recv_from(&mut buf))
        .await
        .expect("an answer")
        .expect("recv");
    let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
    answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("{answer}"))
}

/// Probes are answered without a transaction: each used to open one, kept until Timer J (32 s
/// over UDP), so anyone who could send datagrams from a prober's address (a forged source is
/// enough) filled `proxy.max_transactions` and every client got 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_hold_no_transaction_and_cannot_fill_the_table() {
    let (mut settings, _) = gateway_settings(GwOptions::default());
    settings.admin.sip_probers = vec!["127.0.0.2".parse().expect("ip")];
    settings.max_transactions = 10;
    let gw = sagw_gateway::start(settings).await.expect("gateway starts");
    for n in 0..30 {
        assert_eq!(probe(&gw, "127.0.0.2", n).await, 200, "probe {n}");
    }
    // A client is challenged, not turned away.
    let status = probe(&gw, "127.0.0.1", 100).await;
    assert!(matches!(status, 401 | 407), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probers_options_is_answered_and_anyone_elses_challenged() {
    // 127.0.0.2 is the load balancer; the test's other address, 127.0.0.1, is anybody.
    let gw = gateway(GwOptions::default()).await;
    let prober_gw = gateway_with_probers(&["127.0.0.2"]).await;
    assert_eq!(probe(&prober_gw, "127.0.0.2", 1).await, 200);
    assert!(matches!(probe(&prober_gw, "127.0.0.1", 2).await, 401 | 407));
    // Without the setting the balancer's probe is challenged like any other request.
    assert!(matches!(probe(&gw, "127.0.0.2", 3).await, 401 | 407));
}

/// A test gateway with `[admin] sip_probers`.
async fn gateway_with_probers(probers: &[&str]) -> sagw_gateway::Running {
    let (mut settings, _) = gateway_settings(GwOptions::default());
    settings.admin.sip_probers = probers.iter().map(|p| p.parse().expect("ip")).collect();
    sagw_gateway::start(settings).await.expect("gateway starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_stays_off_without_a_private_token_file() {
    use std::os::unix::fs::PermissionsExt;
    let (settings, _) = gateway_settings(GwOptions::default());
    let token = settings.admin.token_file.clone();
    // Readable by everyone: refused (the gateway runs, the API does not).
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let gw = sagw_gateway::start(settings.clone())
        .await
        .expect("gateway starts");
    assert_eq!(gw.admin_addr, None);
    assert!(gw.udp.is_some());
    // Readable and writable by its group: refused as well.
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o660)).expect("chmod");
    let gw = sagw_gateway::start(settings.clone())
        .await
        .expect("gateway starts");
    assert_eq!(gw.admin_addr, None);
    // Empty, then missing.
    std::fs::write(&token, "\n").expect("empty");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let gw = sagw_gateway::start(settings.clone())
        .await
        .expect("gateway starts");
    assert_eq!(gw.admin_addr, None);
    std::fs::remove_file(&token).expect("rm");
    let gw = sagw_gateway::start(settings).await.expect("gateway starts");
    assert_eq!(gw.admin_addr, None);
}

/// A `GET /healthz` on a new connection: its status, `None` when the connection is closed
/// (refused at the cap) or nothing comes back within a second.
async fn health(addr: SocketAddr) -> Option<u16> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(1), s.read_to_end(&mut out))
        .await
        .ok()?
        .ok()?;
    String::from_utf8_lossy(&out)
        .split(' ')
        .nth(1)?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_read_their_answers_do_not_hold_the_listener() {
    use std::io::Write;
    let gw = gateway(GwOptions::default()).await;
    let addr = gw.admin_addr.expect("admin");
    // As many as the listener takes (driver/setup.rs HTTP_CONNECTIONS), each with a receive
    // window of a few answers and a small segment size (which keeps the kernel from growing the
    // gateway's send buffer to megabytes on loopback): the gateway's writes stall after a few
    // hundred answers.
    // Eight connections from each of eight addresses (one source holds at most eight).
    let mut held = Vec::new();
    for i in 0..64u8 {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        let from = SocketAddr::from(([127, 0, 0, 1 + i / 8], 0));
        s.bind(&from.into()).expect("bind a loopback address");
        s.set_recv_buffer_size(1024).expect("SO_RCVBUF");
        s.set_tcp_mss(256).expect("TCP_MAXSEG");
        s.connect(&addr.into()).expect("connect");
        s.set_nonblocking(true).expect("non-blocking");
        held.push((s, 0usize));
    }
    // 1000 pipelined health checks on each, as far as they go in (the gateway stops reading once
    // its answers cannot be written), never a byte read.
    let req = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    let all = req.repeat(1000);
    let mut still = 0;
    while still < 3 {
        let mut progress = false;
        for (s, sent) in &mut held {
            while *sent < all.len() {
                match s.write(&all[*sent..]) {
                    Ok(n) => {
                        *sent += n;
                        progress = true;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("write: {e}"),
                }
            }
        }
        still = if progress { 0 } else { still + 1 };
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    // Past the write timeout the stalled connections are gone and a health check is answered.
    tokio::time::sleep(sagw_gateway::http::WRITE_STALL_TIMEOUT).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match health(addr).await {
            Some(status) => {
                assert_eq!(status, 200);
                break;
            }
            None => assert!(
                tokio::time::Instant::now() < deadline,
                "the listener is still held by connections that read nothing"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(held);
}

/// One host that keeps connections open (re-opening them as they time out) holds at most eight
/// of the listener's 64: before, it held them all and the load balancer's health checks were
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_source_cannot_take_every_connection_of_the_admin_listener() {
    let gw = gateway(GwOptions::default()).await;
    let addr = gw.admin_addr.expect("admin");
    let mut held = Vec::new();
    for _ in 0..sagw_gateway::http::MAX_CONNECTIONS_PER_SOURCE {
        held.push(TcpStream::connect(addr).await.expect("connect"));
    }
    // Accepted and held: each is answered.
    for s in &mut held {
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
            .await
            .expect("answered")
            .expect("read");
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    }
    assert_eq!(health(addr).await, None, "a ninth from that address");
    // Another host's health check goes through.
    let other = tokio::net::TcpSocket::new_v4().expect("socket");
    other
        .bind(SocketAddr::from(([127, 0, 0, 2], 0)))
        .expect("bind 127.0.0.2");
    let mut s = other.connect(addr).await.expect("connect");
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut out))
        .await
        .expect("answered")
        .expect("read");
    assert!(
        String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    drop(held);
}

/// Sends `bytes` to `addr` one a second (after `prefix` at once), reading whatever comes back
/// meanwhile, for at most `give_up`: how long the connection lasted until the gateway closed it,
/// `None` when it was still open then, and what the gateway sent.
async fn trickle(
    addr: SocketAddr,
    prefix: &[u8],
    bytes: &[u8],
    give_up: Duration,
) -> (Option<Duration>, String) {
    let start = tokio::time::Instant::now();
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(prefix).await.expect("prefix");
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    for b in bytes.iter().cycle() {
        if start.elapsed() > give_up {
            return (None, String::from_utf8_lossy(&answer).into_owned());
        }
        if s.write_all(std::slice::from_ref(b)).await.is_err() {
            return (
                Some(start.elapsed()),
                String::from_utf8_lossy(&answer).into_owned(),
            );
        }
        // A second between bytes, or less when the gateway answers or closes meanwhile.
        let until = tokio::time::Instant::now() + Duration::from_secs(1);
        loop {
            match tokio::time::timeout_at(until, s.read(&mut buf)).await {
                Err(_) => break,
                Ok(Ok(0)) | Ok(Err(_)) => {
                    return (
                        Some(start.elapsed()),
                        String::from_utf8_lossy(&answer).into_owned(),
                    );
                }
                Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            }
        }
    }
    unreachable!("cycle() never ends")
}

/// A client that sends its request a byte a second (slowloris) holds a connection, and with it a
/// place under the listener's cap, only until the request's deadline (`admin.request_timeout_secs`,
/// 2 s here): then the gateway closes it. The same for one that sends its head at once and
/// trickles the body, with the token or without. And when every place is taken by such clients,
/// a new connection is served again once the deadline has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_trickled_a_byte_a_second_is_cut_at_the_deadline() {
    let deadline = Duration::from_secs(2);
    let (mut settings, _) = gateway_settings(GwOptions::default());
    settings.admin.request_timeout = deadline;
    let gw = sagw_gateway::start(settings).await.expect("gateway starts");
    let addr = gw.admin_addr.expect("admin");
    let give_up = deadline * 3 + Duration::from_secs(5);
    let head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: 0123456789abcdefghijklmnopqrstuvwxyz\r\n";
    let body = |token: &str| {
        format!(
            "PUT /admin/log-level HTTP/1.1\r\nHost: 127.0.0.1\r\n{token}Content-Length: 1000\r\n\r\n"
        )
    };
    let with_token = body(&format!("Authorization: Bearer {ADMIN_TOKEN}\r\n"));
    let without = body("");
    let (head_cut, body_cut, anonymous_cut) = tokio::join!(
        trickle(addr, b"", head, give_up),
        trickle(addr, with_token.as_bytes(), b"info", give_up),
        trickle(addr, without.as_bytes(), b"info", give_up),
    );
    for (what, (cut, answer)) in [
        ("head", head_cut),
        ("body", body_cut),
        ("body without the token", anonymous_cut),
    ] {
        let lasted = cut
            .unwrap_or_else(|| panic!("the {what} trickle still open after {give_up:?}: {answer}"));
        assert!(
            lasted <= deadline + Duration::from_secs(2),
            "the {what} trickle lasted {lasted:?}, deadline {deadline:?}: {answer}"
        );
        assert!(
            lasted >= deadline - Duration::from_millis(500),
            "the {what} trickle closed before the deadline ({lasted:?}): {answer}"
        );
        if what != "head" {
            assert!(answer.starts_with("HTTP/1.1 408 "), "{what}: {answer}");
        }
    }

    // Every place under the cap (driver/setup.rs HTTP_CONNECTIONS) taken by a trickling body.
    let held: Vec<_> = (0..64)
        .map(|_| {
            let req = with_token.clone();
            tokio::spawn(async move { trickle(addr, req.as_bytes(), b"info", give_up).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(health(addr).await, None, "the cap is not taken");
    tokio::time::sleep(deadline + Duration::from_secs(1)).await;
    assert_eq!(health(addr).await, Some(200), "the places are not freed");
    for h in held {
        let (cut, answer) = h.await.expect("trickle");
        assert!(cut.is_some(), "a trickle still open: {answer}");
    }
}
