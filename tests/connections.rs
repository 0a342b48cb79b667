//! Connection limits over real sockets (issue 12, point 7): a peer that never reads is closed by the
//! write timeout, the idle and slow-message timers keep running while a write to it is blocked,
//! and one source address cannot take every connection slot. And the socket-level tests of the
//! smaller items of point 8: Digest ACKs and unknown Digest users.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use sagw_gateway::{Config, Running};
use support::{Client, Kind, Msg, scrape, unique};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{Instant, timeout};

/// A gateway on loopback, authentication off, with this `[limits]` section.
async fn gateway(limits: &str) -> Running {
    let dir = std::env::temp_dir().join(format!("sagw-conn-{}-{}", std::process::id(), unique()));
    let text = format!(
        r#"
[log]
level = "warn"
[listen]
udp = "127.0.0.1:0"
tcp = "127.0.0.1:0"
tls = "127.0.0.1:0"
[tls]
generated_dir = "{}"
handshake_timeout_secs = 1
[timers]
t1_ms = 50
t2_ms = 400
[limits]
{limits}
[metrics]
listen = "127.0.0.1:0"
[auth]
enabled = false
"#,
        dir.display()
    );
    let settings = Config::parse(&text)
        .expect("test config parses")
        .validate()
        .expect("test config valid");
    sagw_gateway::start(settings).await.expect("gateway starts")
}

/// A TCP connection from `from` (any port) with a small receive buffer, so that what the gateway
/// writes to it and it never reads piles up in the gateway's send buffer quickly.
async fn connect_from(
    from: &str,
    to: SocketAddr,
    rcvbuf: Option<u32>,
) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    if let Some(n) = rcvbuf {
        s.set_recv_buffer_size(n)?;
    }
    s.bind(format!("{from}:0").parse().expect("address"))?;
    s.connect(to).await
}

fn options(to: SocketAddr, from: SocketAddr, pad: usize) -> String {
    // Padding rides in Via headers below the top one: a response copies every Via, so a request
    // of this size makes the gateway write about as much back.
    let mut vias = String::new();
    let mut left = pad;
    let mut i = 0;
    while left > 0 {
        let n = left.min(7000);
        vias.push_str(&format!(
            "Via: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bKpad{i};x={}\r\n",
            "p".repeat(n)
        ));
        left -= n;
        i += 1;
    }
    format!(
        "OPTIONS sip:{to} SIP/2.0\r\nVia: SIP/2.0/TCP {from};branch=z9hG4bKo{n}\r\n{vias}Max-Forwards: 70\r\n\
From: <sip:probe@example.com>;tag=o{n}\r\nTo: <sip:{to}>\r\nCall-ID: opt-{n}\r\nCSeq: 1 OPTIONS\r\n\
Content-Length: 0\r\n\r\n",
        n = unique()
    )
}

/// One OPTIONS to the gateway over `s`, answered 200 within a few seconds.
async fn served(s: &mut TcpStream) -> bool {
    let (Ok(to), Ok(from)) = (s.peer_addr(), s.local_addr()) else {
        return false;
    };
    if s.write_all(options(to, from, 0).as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    let deadline = Instant::now() + support::WAIT;
    loop {
        while buf.starts_with(b"\r\n") {
            buf.drain(..2);
        }
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Msg::parse(&buf[..end + 4]).and_then(|m| m.status()) == Some(200);
        }
        match tokio::time::timeout_at(deadline, s.read(&mut tmp)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&tmp[..n]),
            _ => return false,
        }
    }
}

/// A client on the connection-per-message path that keeps being served.
async fn still_served(c: &mut Client) {
    let opt = format!(
        "OPTIONS sip:{gw} SIP/2.0\r\nVia: {}\r\nFrom: <sip:{u}@example.com>;tag=o\r\nTo: <sip:{gw}>\r\n\
Call-ID: opt-{n}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        c.via(&format!("z9hG4bKopt{}", unique())),
        gw = c.server,
        u = c.user,
        n = unique()
    );
    c.send(&opt).await;
    let r = c
        .recv_where("OPTIONS answer", |m| m.cseq_method() == "OPTIONS")
        .await;
    assert_eq!(r.status(), Some(200));
}

/// The value of one series on the metrics page (0 when absent).
fn series(page: &str, name: &str) -> u64 {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0)
}

/// Waits until `limit` has been counted at least once; its count then.
async fn limit_hit_within(gw: &Running, limit: &str, within: Duration) -> u64 {
    let name = format!("sagw_limit_hits_total{{limit=\"{limit}\"}}");
    let deadline = Instant::now() + within;
    loop {
        let n = series(&scrape(gw).await, &name);
        if n > 0 || Instant::now() >= deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_pings_but_never_reads_is_closed_by_the_write_timeout() {
    // Idle and slow-message timers far away, and a write queue too long to fill in this time: only
    // the write timeout can close the slow reader (a full queue closes it too, in production).
    let gw = gateway(
        "idle_timeout_secs = 60\nmessage_timeout_secs = 60\nwrite_timeout_secs = 1\n\
         write_queue_messages = 1000000\nwrite_queue_bytes = 1073741824\nmax_message_bytes = 65535\n",
    )
    .await;
    let mut good = Client::connect(&gw, Kind::Tcp, "good").await;
    still_served(&mut good).await;

    let slow = connect_from("127.0.0.1", gw.tcp.unwrap(), Some(4096))
        .await
        .expect("connect");
    let (to, from) = (slow.peer_addr().unwrap(), slow.local_addr().unwrap());
    // RFC 5626 pings, each owed a pong, and requests the gateway answers at length (~56 KB): this
    // peer reads none of it, so the gateway's writes to it stop going through.
    let pings = b"\r\n\r\n".repeat(64);
    let started = Instant::now();
    let mut sent = 0usize;
    let mut stalled_at: Option<Instant> = None;
    let mut checked_good = false;
    let mut pending: Vec<u8> = Vec::new();
    let closed = 'send: loop {
        if started.elapsed() > Duration::from_secs(20) {
            break false;
        }
        if pending.is_empty() {
            pending.extend_from_slice(options(to, from, 56_000).as_bytes());
            pending.extend_from_slice(&pings);
        }
        // Never a write given up halfway: a cancelled `write_all` left half a request in the
        // stream, the pings after it broke the framing, and the gateway closed the connection for
        // a parse error instead of the write timeout (seen under load). What is not written yet
        // stays in `pending` and goes first when the socket takes bytes again.
        match timeout(Duration::from_millis(100), slow.writable()).await {
            Ok(Ok(())) => match slow.try_write(&pending) {
                Ok(0) => break 'send true,
                Ok(n) => {
                    sent += n;
                    pending.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => break 'send true,
            },
            Ok(Err(_)) => break 'send true,
            // The gateway stopped reading us.
            Err(_) => {
                stalled_at.get_or_insert_with(Instant::now);
            }
        }
        if !checked_good && (stalled_at.is_some() || sent > 4 << 20) {
            // Others are served while the slow reader's answers pile up.
            still_served(&mut good).await;
            checked_good = true;
        }
    };
    assert!(
        closed,
        "a peer that never reads is still connected after {:?} ({sent} bytes of pings sent; \
         its writes stalled {:?} before the end)",
        started.elapsed(),
        stalled_at.map(|s| s.elapsed())
    );
    // The peer keeps sending, so it is never idle; the write timeout (1 s) must close it, a
    // margin after the gateway's writes to it stopped going through.
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "closed only after {:?}",
        started.elapsed()
    );
    assert!(
        limit_hit_within(&gw, "write_timeout", Duration::from_secs(2)).await >= 1,
        "counted as the write_timeout limit: {}",
        scrape(&gw).await
    );
    still_served(&mut good).await;
    gw.shutdown(support::WAIT).await;
}

/// Sends padded OPTIONS (each answered at about its own length) on `s` and reads nothing, until
/// the gateway closes the connection or `budget` bytes have gone: the bytes sent, and whether it
/// was closed.
async fn pipeline_without_reading<S>(
    s: &mut S,
    to: SocketAddr,
    from: SocketAddr,
    budget: usize,
) -> (usize, bool)
where
    S: tokio::io::AsyncWrite + Unpin,
{
    let mut sent = 0;
    while sent < budget {
        let request = options(to, from, 56_000);
        let written = timeout(support::WAIT, async {
            s.write_all(request.as_bytes()).await?;
            s.flush().await
        })
        .await;
        match written {
            Ok(Ok(())) => sent += request.len(),
            Ok(Err(_)) => return (sent, true),
            // The gateway stopped reading the connection without closing it.
            Err(_) => return (sent, false),
        }
    }
    (sent, false)
}

/// Limits under which only the byte bound of the write queue can close a peer that never reads
/// within a test's time: the other timers far away, a message count that is never reached.
const ONLY_THE_BYTE_BOUND: &str = "idle_timeout_secs = 60\nmessage_timeout_secs = 60\n\
    write_timeout_secs = 60\nwrite_queue_messages = 1000000\nwrite_queue_bytes = 262144\n";

/// Far more than the byte bound (256 KiB) and every socket buffer between the two ends (a few
/// MB on loopback): a connection still open after this much holds an unbounded backlog.
const PIPELINE_BUDGET: usize = 64 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_reads_is_closed_once_its_backlog_passes_the_byte_bound() {
    let gw = gateway(ONLY_THE_BYTE_BOUND).await;
    let mut good = Client::connect(&gw, Kind::Tcp, "good").await;
    still_served(&mut good).await;

    let mut slow = connect_from("127.0.0.1", gw.tcp.unwrap(), Some(4096))
        .await
        .expect("connect");
    let (to, from) = (slow.peer_addr().unwrap(), slow.local_addr().unwrap());
    closed_at_the_byte_bound(gw, &mut good, &mut slow, to, from).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_peer_that_never_reads_is_closed_once_its_backlog_passes_the_byte_bound() {
    let gw = gateway(ONLY_THE_BYTE_BOUND).await;
    let mut good = Client::connect(&gw, Kind::Tls, "good").await;
    still_served(&mut good).await;

    let (mut slow, to, from) = slow_tls_peer(&gw).await;
    closed_at_the_byte_bound(gw, &mut good, &mut slow, to, from).await;
}

/// A TLS connection to the gateway with a small receive buffer, for a peer that will not read:
/// the stream, the gateway's address and its own.
async fn slow_tls_peer(
    gw: &Running,
) -> (
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    SocketAddr,
    SocketAddr,
) {
    let tcp = connect_from("127.0.0.1", gw.tls.unwrap(), Some(4096))
        .await
        .expect("connect");
    let (to, from) = (tcp.peer_addr().unwrap(), tcp.local_addr().unwrap());
    let config = support::tls_client_config(
        &gw.cert.as_ref().unwrap().cert_path,
        &[&rustls::version::TLS13],
    );
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1")
        .unwrap()
        .to_owned();
    let s = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    (s, to, from)
}

/// `slow` (to the gateway at `to`, from `from`) pipelines padded requests and reads nothing: it
/// is closed once its answers pass the byte bound, counted so, and `good` is still served.
async fn closed_at_the_byte_bound<S>(
    gw: Running,
    good: &mut Client,
    slow: &mut S,
    to: SocketAddr,
    from: SocketAddr,
) where
    S: tokio::io::AsyncWrite + Unpin,
{
    let (sent, closed) = pipeline_without_reading(slow, to, from, PIPELINE_BUDGET).await;
    assert!(
        closed,
        "a peer that never reads is still connected after {sent} bytes of requests, each \
         answered at about its length"
    );
    assert!(
        limit_hit_within(&gw, "write_queue_bytes", Duration::from_secs(2)).await >= 1,
        "counted as the write_queue_bytes limit: {}",
        scrape(&gw).await
    );
    still_served(good).await;
    gw.shutdown(support::WAIT).await;
}

/// Limits under which only the overall budget (2 MiB) can close a peer that never reads within
/// a test's time: each connection's own bound (1 GiB) and the timers far away.
const ONLY_THE_OVERALL_BUDGET: &str = "idle_timeout_secs = 60\nmessage_timeout_secs = 60\n\
    write_timeout_secs = 60\nwrite_queue_messages = 1000000\nwrite_queue_bytes = 1073741824\n\
    write_backlog_total_bytes = 2097152\n";

/// The overall budget, `limits.write_backlog_total_bytes`: each connection's own byte bound alone
/// let `max_connections` peers that never read hold that many full backlogs (10 GiB at the
/// defaults). Eight such connections, each under a bound it never reaches here, are sent a padded
/// OPTIONS each in turn (each answered at about its length): the budget for all of them closes
/// them, under the overall limit's name, what their backlogs hold together
/// (`sagw_write_backlog_bytes`) never shows more, and a client that reads is served throughout.
/// (The budget is not put at a few connections' own bounds with the backlogs growing alike: the
/// kernel's socket buffers take a different share of each connection's answers, so one can reach
/// its own bound first.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_that_never_read_hold_no_more_than_the_overall_backlog_budget() {
    let gw = gateway(ONLY_THE_OVERALL_BUDGET).await;
    let mut good = Client::connect(&gw, Kind::Tcp, "good").await;
    let mut slow = Vec::new();
    for _ in 0..8 {
        let s = connect_from("127.0.0.1", gw.tcp.unwrap(), Some(4096))
            .await
            .expect("connect");
        let (to, from) = (s.peer_addr().unwrap(), s.local_addr().unwrap());
        slow.push((s, to, from, true));
    }
    held_within_the_overall_budget(gw, &mut good, slow).await;
}

/// The same over TLS, where what waits is records moved out of rustls into the connection's
/// buffer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_peers_that_never_read_hold_no_more_than_the_overall_backlog_budget() {
    let gw = gateway(ONLY_THE_OVERALL_BUDGET).await;
    let mut good = Client::connect(&gw, Kind::Tls, "good").await;
    let mut slow = Vec::new();
    for _ in 0..8 {
        let (s, to, from) = slow_tls_peer(&gw).await;
        slow.push((s, to, from, true));
    }
    held_within_the_overall_budget(gw, &mut good, slow).await;
}

/// `slow` (each: the stream, the gateway's address, its own, whether it is open) send padded
/// requests in turn and read nothing, under [`ONLY_THE_OVERALL_BUDGET`]: some are closed for the
/// overall budget, what the backlogs hold never shows more than it, and `good` is still served.
async fn held_within_the_overall_budget<S>(
    gw: Running,
    good: &mut Client,
    mut slow: Vec<(S, SocketAddr, SocketAddr, bool)>,
) where
    S: tokio::io::AsyncWrite + Unpin,
{
    still_served(good).await;
    let over_budget = "sagw_limit_hits_total{limit=\"write_backlog_total\"}";
    let budget = 2u64 << 20;
    let mut sent = 0usize;
    let mut most_held = 0;
    let mut first_closed: Option<Instant> = None;
    // Up to 400 rounds (22 MB a connection, far past its socket buffers, a few MB on loopback,
    // and the budget), and 1.5 s more once one was closed.
    for _ in 0..400 {
        for (s, to, from, open) in slow.iter_mut().filter(|c| c.3) {
            // One request each (a budget of one byte).
            match pipeline_without_reading(s, *to, *from, 1).await {
                (0, true) => *open = false,
                (0, false) => panic!("the gateway stopped reading a connection without closing it"),
                (n, _) => sent += n,
            }
        }
        let page = scrape(&gw).await;
        let held = series(&page, "sagw_write_backlog_bytes{}");
        assert!(
            held <= budget,
            "the backlogs hold {held} bytes together, over the {budget}-byte budget"
        );
        most_held = most_held.max(held);
        if series(&page, over_budget) > 0 || slow.iter().any(|c| !c.3) {
            first_closed.get_or_insert_with(Instant::now);
        }
        if slow.iter().all(|c| !c.3)
            || first_closed.is_some_and(|t| t.elapsed() > Duration::from_millis(1500))
        {
            break;
        }
    }
    let metrics = scrape(&gw).await;
    assert!(
        limit_hit_within(&gw, "write_backlog_total", Duration::from_secs(2)).await >= 1,
        "eight peers that never read were sent {sent} bytes of requests and none was closed \
         for the overall budget: {metrics}"
    );
    assert!(
        most_held > 0,
        "the gauge never showed the peers' backlogs ({sent} bytes of requests sent)"
    );
    still_served(good).await;
    gw.shutdown(support::WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_reads_a_trickle_is_closed_by_the_write_timeout() {
    // Only the write timeout (2 s) can close it: the byte bound and the message count far away.
    let gw = gateway(
        "idle_timeout_secs = 60\nmessage_timeout_secs = 60\nwrite_timeout_secs = 2\n\
         write_queue_messages = 1000000\nwrite_queue_bytes = 1073741824\n",
    )
    .await;
    let mut good = Client::connect(&gw, Kind::Tcp, "good").await;
    still_served(&mut good).await;

    let slow = connect_from("127.0.0.1", gw.tcp.unwrap(), Some(4096))
        .await
        .expect("connect");
    let (to, from) = (slow.peer_addr().unwrap(), slow.local_addr().unwrap());
    let (mut rd, mut wr) = slow.into_split();
    let started = Instant::now();
    // Answers of ~5.6 MB, more than the socket buffers hold: a backlog waits in the gateway.
    let (_, mut closed) = pipeline_without_reading(&mut wr, to, from, 100 * 56_000).await;
    // Then a trickle: a little read, one more request, a pause. The socket takes a few bytes of
    // the backlog each round, never all of it, and the backlog only grows.
    let mut read = 0usize;
    let mut chunk = vec![0u8; 4096];
    while !closed && started.elapsed() < Duration::from_secs(8) {
        let mut this_round = 0;
        while this_round < 16 * 1024 {
            match timeout(Duration::from_millis(200), rd.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    closed = true;
                    break;
                }
                Ok(Ok(n)) => this_round += n,
                Err(_) => break,
            }
        }
        read += this_round;
        if closed {
            break;
        }
        closed = pipeline_without_reading(&mut wr, to, from, 1).await.1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        closed,
        "a peer that reads a trickle ({read} bytes in {:?}) keeps its growing backlog",
        started.elapsed()
    );
    assert!(
        limit_hit_within(&gw, "write_timeout", Duration::from_secs(2)).await >= 1,
        "counted as the write_timeout limit: {}",
        scrape(&gw).await
    );
    still_served(&mut good).await;
    gw.shutdown(support::WAIT).await;
}

/// Fills the gateway's write path to `s` (large responses it never reads), then returns; `tail`
/// is sent last (when the gateway still reads).
async fn block_the_gateway_writing_to(s: &mut TcpStream, tail: &[u8]) {
    let (to, from) = (s.peer_addr().unwrap(), s.local_addr().unwrap());
    // 200 responses of ~56 KB: more than any socket buffer on both sides.
    for _ in 0..200 {
        let req = options(to, from, 56_000);
        if timeout(Duration::from_millis(500), s.write_all(req.as_bytes()))
            .await
            .is_err()
        {
            // The gateway stopped reading (an old-style connection task blocked in its write).
            return;
        }
    }
    let _ = timeout(Duration::from_millis(500), s.write_all(tail)).await;
}

/// [`limit_hit_within`], `good` sending a request every few hundred milliseconds meanwhile.
async fn limit_hit_talking(gw: &Running, limit: &str, within: Duration, good: &mut Client) -> u64 {
    let deadline = Instant::now() + within;
    loop {
        let n = limit_hit_within(gw, limit, Duration::from_millis(300)).await;
        if n > 0 || Instant::now() >= deadline {
            return n;
        }
        still_served(good).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_message_timers_run_while_a_write_is_blocked() {
    // The write timeout and the write queue's byte bound far away: the idle (2 s) and
    // slow-message (1 s) timers must close these.
    let gw = gateway(
        "idle_timeout_secs = 2\nmessage_timeout_secs = 1\nwrite_timeout_secs = 120\n\
         write_queue_bytes = 1073741824\nmax_message_bytes = 65535\n",
    )
    .await;
    let mut good = Client::connect(&gw, Kind::Tcp, "good").await;
    still_served(&mut good).await;
    let gauge = "sagw_connections{transport=\"tcp\"}";
    assert_eq!(series(&scrape(&gw).await, gauge), 1);

    // Silent after filling: the idle timer must close it.
    let mut silent = connect_from("127.0.0.1", gw.tcp.unwrap(), Some(4096))
        .await
        .unwrap();
    block_the_gateway_writing_to(&mut silent, b"").await;
    // Half a message after filling: the slow-message timer must close it.
    let mut partial = connect_from("127.0.0.1", gw.tcp.unwrap(), Some(4096))
        .await
        .unwrap();
    block_the_gateway_writing_to(
        &mut partial,
        b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKhalf\r\n",
    )
    .await;
    let blocked = Instant::now();
    still_served(&mut good).await;

    // The good client talks all along: its own idle timer (2 s) must not close it while the
    // blocked peers' timers run (it did, now and then, when it waited silently beside them).
    assert!(
        limit_hit_talking(&gw, "message_timeout", Duration::from_secs(5), &mut good).await >= 1,
        "the slow-message timer closed the half message: {}",
        scrape(&gw).await
    );
    assert!(
        limit_hit_talking(&gw, "idle_timeout", Duration::from_secs(6), &mut good).await >= 1,
        "the idle timer closed the silent peer: {}",
        scrape(&gw).await
    );
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut left = series(&scrape(&gw).await, gauge);
    while left != 1 && Instant::now() < deadline {
        still_served(&mut good).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        left = series(&scrape(&gw).await, gauge);
    }
    assert_eq!(
        left,
        1,
        "both blocked peers are gone {:?} after they stopped, the good client stays",
        blocked.elapsed()
    );
    still_served(&mut good).await;
    drop((silent, partial));
    gw.shutdown(support::WAIT).await;
}

/// A phone registered over TCP stays reachable for as long as the registration the gateway
/// granted it, without sending anything meanwhile: many phones send no RFC 5626 keep-alive (the
/// 200 asks for none) and only register again at their refresh. Before, the idle timer closed
/// the connection (600 s by default, 2 s here) and the binding went with it, so calls to the
/// phone failed for the rest of each registration interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_connection_outlives_the_idle_timer_for_its_registration() {
    let gw = gateway("idle_timeout_secs = 2\nmessage_timeout_secs = 1\n").await;
    let mut phone = Client::connect(&gw, Kind::Tcp, "phone").await;
    assert_eq!(phone.register().await.status(), Some(200));
    let mut caller = Client::connect(&gw, Kind::Udp, "caller").await;
    // Silent past the idle limit.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let text = caller.request("MESSAGE", "phone", "z9hG4bKidle1", "idle-1", 1, "hi");
    caller.send(&text).await;
    let got = phone
        .recv_within(Duration::from_secs(2))
        .await
        .expect("the MESSAGE reaches the registered phone after the idle limit");
    assert_eq!(got.method(), Some("MESSAGE"));
    assert_eq!(
        series(
            &scrape(&gw).await,
            "sagw_limit_hits_total{limit=\"idle_timeout\"}"
        ),
        0,
        "no idle close of a registered connection"
    );
    // Unregistered (Contact: *, Expires: 0): the idle timer closes it again.
    let text = format!(
        "REGISTER sip:example.com SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\n\
From: <sip:phone@example.com>;tag=u1\r\nTo: <sip:phone@example.com>\r\nCall-ID: unreg-phone\r\n\
CSeq: 1 REGISTER\r\nContact: *\r\nExpires: 0\r\nContent-Length: 0\r\n\r\n",
        phone.via("z9hG4bKunreg")
    );
    phone.send(&text).await;
    let ok = phone
        .recv_where("the unregistration's 200", |m| {
            m.cseq_method() == "REGISTER"
        })
        .await;
    assert_eq!(ok.status(), Some(200));
    assert!(
        phone.closed_within(Duration::from_secs(4)).await,
        "closed as idle once nothing is registered over it"
    );
    gw.shutdown(support::WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_keeps_talking_outlives_the_idle_timer_and_closes_once_silent() {
    // The idle timer is armed once and moved only when it fires: a peer that talks for longer
    // than the idle limit must stay, whatever the first deadline was; once silent it goes.
    let gw = gateway("idle_timeout_secs = 2\nmessage_timeout_secs = 1\n").await;
    let mut talker = connect_from("127.0.0.1", gw.tcp.unwrap(), None)
        .await
        .unwrap();
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(4500) {
        assert!(
            served(&mut talker).await,
            "still served {:?} after connecting (idle limit 2 s)",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert_eq!(
        series(
            &scrape(&gw).await,
            "sagw_limit_hits_total{limit=\"idle_timeout\"}"
        ),
        0,
        "no idle close while it talked"
    );
    // Silent now: closed within the idle limit (and a little scheduling slack).
    let mut probe = [0u8; 64];
    let closed = timeout(Duration::from_secs(4), async {
        loop {
            match talker.read(&mut probe).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the idle timer closed the silent connection"
    );
    assert_eq!(
        limit_hit_within(&gw, "idle_timeout", Duration::from_secs(1)).await,
        1
    );
    gw.shutdown(support::WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_connection() {
    let gw = gateway("max_connections = 100\nmax_connections_per_ip = 3\n").await;
    let tcp = gw.tcp.unwrap();
    let mut first = Vec::new();
    for _ in 0..3 {
        let mut s = connect_from("127.0.0.1", tcp, None).await.unwrap();
        assert!(served(&mut s).await, "within the cap: served");
        first.push(s);
    }
    // The fourth from the same address is closed at accept.
    let mut fourth = connect_from("127.0.0.1", tcp, None).await.unwrap();
    assert!(
        !served(&mut fourth).await,
        "the fourth from 127.0.0.1 is refused"
    );
    // TLS counts towards the same cap: the handshake never completes.
    let mut tls = connect_from("127.0.0.1", gw.tls.unwrap(), None)
        .await
        .unwrap();
    let mut probe = [0u8; 16];
    let r = timeout(Duration::from_secs(2), tls.read(&mut probe)).await;
    assert!(
        matches!(r, Ok(Ok(0)) | Ok(Err(_))),
        "TLS from 127.0.0.1 closed: {r:?}"
    );
    // Another address is not affected.
    let mut other = connect_from("127.0.0.2", tcp, None).await.unwrap();
    assert!(served(&mut other).await, "127.0.0.2 is served");
    // The first three are still served, and a slot freed is a slot to take.
    for s in &mut first {
        assert!(served(s).await);
    }
    drop(first.pop());
    let gauge = "sagw_connections{transport=\"tcp\"}";
    let deadline = Instant::now() + support::WAIT;
    while series(&scrape(&gw).await, gauge) != 3 {
        assert!(
            Instant::now() < deadline,
            "the dropped connection is counted out"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut again = connect_from("127.0.0.1", tcp, None).await.unwrap();
    assert!(served(&mut again).await, "a freed slot is taken again");
    let page = scrape(&gw).await;
    assert_eq!(
        series(&page, "sagw_limit_hits_total{limit=\"connections_per_ip\"}"),
        2,
        "{page}"
    );
    assert_eq!(
        series(&page, "sagw_limit_hits_total{limit=\"connections\"}"),
        0,
        "{page}"
    );
    gw.shutdown(support::WAIT).await;
}

// ------------------------------------------------------------------------------------------------
// Digest at the socket (issue 12, point 8): ACKs are held to their own `uri` and a fresh nonce
// count, and an unknown user goes through the same checks as a known one.

mod auth_support;

use auth_support::GwOptions;

/// The first Digest challenge of a 401/407 and the realm it names.
fn digest_offer(m: &Msg) -> String {
    m.headers
        .iter()
        .filter(|(n, _)| {
            n.eq_ignore_ascii_case("Proxy-Authenticate")
                || n.eq_ignore_ascii_case("WWW-Authenticate")
        })
        .map(|(_, v)| v.clone())
        .find(|v| v.starts_with("Digest "))
        .unwrap_or_else(|| panic!("no Digest challenge in {m:?}"))
}

/// Digest credentials for `method`/`uri` answering `offer` with nonce count `nc`; `nonce` replaces
/// the challenge's nonce when given (a forged one).
fn digest_credentials(
    offer: &str,
    user: &str,
    password: &str,
    method: &str,
    uri: &str,
    nc: u32,
    nonce: Option<&str>,
) -> String {
    let hp = sagw_digest::client::parse_header(offer).expect("challenge parses");
    let mut ch = sagw_digest::client::Challenge::from_params(hp.pairs()).expect("challenge params");
    if let Some(n) = nonce {
        ch.nonce = n;
    }
    let ha1 = sagw_digest::Ha1::compute(ch.algorithm.base(), user, ch.realm, password);
    sagw_digest::client::authorize(&ch, user, &ha1, method, uri, "0a4f113b", nc)
        .expect("authorize")
        .header_value()
}

/// alice's Digest INVITE to carol through the gateway, answered 200 by the next hop (a UDP socket
/// of the test): what her 2xx ACKs are written from.
struct AnsweredDigestInvite {
    gw: Running,
    alice: Client,
    hop: tokio::net::UdpSocket,
    call: String,
    /// The 200's Contact: the ACK's Request-URI.
    target: String,
    /// The route set of the 200, as the ACK's Route headers.
    route: String,
    /// `Authorization` or `Proxy-Authorization`, as the challenge asked.
    header: &'static str,
    offer: String,
    /// The credentials of the INVITE that was answered, as sent.
    invite_credentials: String,
    /// The next hop's 200, and the gateway's address it went to: sent again for a retransmission.
    ok: String,
    gw_udp: Option<SocketAddr>,
}

impl AnsweredDigestInvite {
    const RURI: &'static str = "sip:carol@example.com";

    async fn new() -> Self {
        // carol is nobody here: the INVITE goes to the next hop.
        let hop = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let hop_addr = hop.local_addr().unwrap();
        let hops = [format!("udp:{hop_addr}")];
        let gw = auth_support::gateway(GwOptions {
            schemes: &["digest"],
            next_hops: &hops,
            ..Default::default()
        })
        .await;
        let alice = Client::connect(&gw, Kind::Tcp, "alice").await;
        let mut call = AnsweredDigestInvite {
            gw,
            alice,
            hop,
            call: format!("ack-{}", unique()),
            target: format!("sip:carol@{hop_addr}"),
            route: String::new(),
            header: "Proxy-Authorization",
            offer: String::new(),
            invite_credentials: String::new(),
            ok: String::new(),
            gw_udp: None,
        };
        let invite = call.request(&call.alice, "INVITE", Self::RURI, "z9hG4bKinv1", 1, "");
        call.alice.send(&invite).await;
        let challenge = call
            .alice
            .recv_where("407", |m| matches!(m.status(), Some(401 | 407)))
            .await;
        call.offer = digest_offer(&challenge);
        if challenge.status() == Some(401) {
            call.header = "Authorization";
        }
        call.invite_credentials = digest_credentials(
            &call.offer,
            "alice",
            "alice-pw",
            "INVITE",
            Self::RURI,
            1,
            None,
        );
        let extra = format!("{}: {}\r\n", call.header, call.invite_credentials);
        let invite = call.request(&call.alice, "INVITE", Self::RURI, "z9hG4bKinv2", 2, &extra);
        call.alice.send(&invite).await;
        // The next hop answers 200 with its Contact: the ACK's Request-URI.
        let mut buf = vec![0u8; 65536];
        let (invite, gw_udp) = loop {
            let (n, from) = timeout(support::WAIT, call.hop.recv_from(&mut buf))
                .await
                .expect("INVITE at the next hop")
                .unwrap();
            let m = Msg::parse(&buf[..n]).expect("parses");
            if m.method() == Some("INVITE") {
                break (m, from);
            }
        };
        call.ok = invite.reply(200, "OK", "hop", &format!("Contact: <{}>\r\n", call.target));
        call.gw_udp = Some(gw_udp);
        call.resend_ok().await;
        let ok = call
            .alice
            .recv_where("200", |m| {
                m.status() == Some(200) && m.cseq_method() == "INVITE"
            })
            .await;
        let mut routes: Vec<String> = ok.all("Record-Route");
        routes.reverse();
        call.route = routes.iter().map(|r| format!("Route: {r}\r\n")).collect();
        call
    }

    /// The next hop's 200 (again), sent to the gateway.
    async fn resend_ok(&mut self) {
        let to = self.gw_udp.expect("the INVITE reached the hop");
        self.hop.send_to(self.ok.as_bytes(), to).await.unwrap();
    }

    /// A request of alice's dialog (From tag `a1`), as `c` writes it.
    fn request(
        &self,
        c: &Client,
        method: &str,
        ruri: &str,
        branch: &str,
        cseq: u32,
        extra: &str,
    ) -> String {
        self.request_tagged(c, "a1", method, ruri, branch, cseq, extra)
    }

    #[allow(clippy::too_many_arguments)]
    fn request_tagged(
        &self,
        c: &Client,
        from_tag: &str,
        method: &str,
        ruri: &str,
        branch: &str,
        cseq: u32,
        extra: &str,
    ) -> String {
        format!(
            "{method} {ruri} SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag={from_tag}\r\n\
To: <sip:carol@example.com>{totag}\r\nCall-ID: {call}\r\nCSeq: {cseq} {method}\r\nContact: {}\r\n{extra}\
Content-Length: 0\r\n\r\n",
            c.via(branch),
            c.contact(),
            call = self.call,
            totag = if method == "ACK" { ";tag=hop" } else { "" },
        )
    }

    /// The ACKs that reach the next hop within a few seconds, by their `Subject`, up to and
    /// including the one named `last`; the whole messages come with them.
    async fn acks_at_the_hop(&self, last: &str) -> Vec<(String, Msg)> {
        let mut buf = vec![0u8; 65536];
        let mut acks = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(3);
        while let Ok(Ok((n, _))) =
            tokio::time::timeout_at(deadline, self.hop.recv_from(&mut buf)).await
        {
            let m = Msg::parse(&buf[..n]).expect("parses");
            if m.method() == Some("ACK") {
                let case = m.header("Subject").unwrap_or("").to_owned();
                let done = case == last;
                acks.push((case, m));
                if done {
                    break;
                }
            }
        }
        acks
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_ack_needs_its_own_uri_and_a_fresh_nonce_count() {
    let mut call = AnsweredDigestInvite::new().await;
    let (target, route, header) = (call.target.clone(), call.route.clone(), call.header);
    // Three ACKs for the 2xx, each its own transaction; only the last may be forwarded.
    let cases = [
        // The INVITE's nonce count again: a replay of credentials already used.
        ("replayed-nc", 1, target.clone()),
        // A fresh count, but `uri` names another resource than the ACK's Request-URI.
        ("other-uri", 2, AnsweredDigestInvite::RURI.to_owned()),
        // A fresh count and its own Request-URI.
        ("good", 3, target.clone()),
    ];
    for (case, nc, uri) in &cases {
        let creds = digest_credentials(&call.offer, "alice", "alice-pw", "ACK", uri, *nc, None);
        let extra = format!("{route}Subject: {case}\r\n{header}: {creds}\r\n");
        // Another From tag: not the answered INVITE's dialog, so these ACKs stand on their own
        // credentials.
        let ack = call.request_tagged(
            &call.alice,
            "a2",
            "ACK",
            &target,
            &format!("z9hG4bKack{case}"),
            2,
            &extra,
        );
        call.alice.send(&ack).await;
    }
    // The ACKs are handled in order: anything forwarded before "good" was let through wrongly.
    let acks: Vec<String> = call
        .acks_at_the_hop("good")
        .await
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    assert_eq!(
        acks,
        ["good"],
        "only the ACK with a fresh nonce count and its own uri reaches the next hop"
    );
    call.gw.shutdown(support::WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_clients_2xx_ack_reaches_the_callee_without_credentials_or_with_the_invites() {
    // PJSIP sends the ACK of a 2xx without credentials; sipsorcery, doubango and others copy
    // the INVITE's (RFC 3261 §13.2.2.4: "the same credentials as the INVITE"), and resend that
    // ACK for each retransmitted 2xx. The callee that gets no ACK hangs up after 32 s.
    let mut call = AnsweredDigestInvite::new().await;
    let (target, route, header) = (call.target.clone(), call.route.clone(), call.header);
    let copied = format!("{header}: {}\r\n", call.invite_credentials);
    let call_id = call.call.clone();
    let ack = |c: &Client,
               case: &str,
               from: &str,
               to_tag: &str,
               ruri: &str,
               cseq: u32,
               creds: &str| {
        format!(
            "ACK {ruri} SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\nFrom: {from}\r\n\
To: <sip:carol@example.com>;tag={to_tag}\r\nCall-ID: {}\r\nCSeq: {cseq} ACK\r\n{route}Subject: {case}\r\n\
{creds}Content-Length: 0\r\n\r\n",
            c.via(&format!("z9hG4bKack{case}{}", unique())),
            call_id,
        )
    };
    let alice = "<sip:alice@example.com>;tag=a1";
    // Not alice's ACK of the 200 she got: another connection, another From tag, another CSeq,
    // another To tag (not the 200's), another target than the 200's Contact, another From.
    let mut mallory = Client::connect(&call.gw, Kind::Tcp, "mallory").await;
    let other_flow = ack(&mallory, "other-flow", alice, "hop", &target, 2, &copied);
    mallory.send(&other_flow).await;
    let premium = target.replace("carol@", "premium@");
    let wrong = [
        ack(
            &call.alice,
            "other-tag",
            "<sip:alice@example.com>;tag=a2",
            "hop",
            &target,
            2,
            &copied,
        ),
        ack(&call.alice, "other-cseq", alice, "hop", &target, 3, &copied),
        ack(&call.alice, "other-to-tag", alice, "fork2", &target, 2, ""),
        ack(&call.alice, "other-target", alice, "hop", &premium, 2, ""),
        ack(
            &call.alice,
            "other-from",
            "<sip:ceo@example.com>;tag=a1",
            "hop",
            &target,
            2,
            "",
        ),
    ];
    for w in &wrong {
        call.alice.send(w).await;
    }
    call.alice
        .send(&ack(&call.alice, "bare", alice, "hop", &target, 2, ""))
        .await;
    // One ACK a 2xx: a second before the 2xx comes again is not alice's UA's.
    call.alice
        .send(&ack(
            &call.alice,
            "unasked",
            alice,
            "hop",
            &target,
            2,
            &copied,
        ))
        .await;
    let mut acks = call.acks_at_the_hop("").await;
    let cases: Vec<&str> = acks.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(
        cases,
        ["bare"],
        "alice's ACK of the 200 reaches the callee, and no other"
    );
    // The 200 again (the callee did not see the ACK in time): the same ACK again, as
    // RFC 3261 §13.2.2.4 has the UA write it, with the INVITE's credentials.
    call.resend_ok().await;
    call.alice
        .recv_where("200 again", |m| {
            m.status() == Some(200) && m.cseq_method() == "INVITE"
        })
        .await;
    call.alice
        .send(&ack(
            &call.alice,
            "copied",
            alice,
            "hop",
            &target,
            2,
            &copied,
        ))
        .await;
    acks.extend(call.acks_at_the_hop("copied").await);
    let cases: Vec<&str> = acks.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(cases, ["bare", "copied"]);
    let (_, copied) = acks.pop().unwrap();
    assert_eq!(copied.header("Proxy-Authorization"), None, "{copied:?}");
    assert_eq!(copied.header("Authorization"), None, "{copied:?}");
    assert_eq!(
        copied.header("P-Asserted-Identity"),
        Some("<sip:alice@example.com>"),
        "{copied:?}"
    );
    call.gw.shutdown(support::WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_digest_user_meets_the_same_checks_as_a_known_one() {
    let gw = auth_support::gateway(GwOptions {
        schemes: &["digest"],
        ..Default::default()
    })
    .await;
    let mut c = Client::connect(&gw, Kind::Tcp, "alice").await;
    let register = |c: &Client, user: &str, extra: &str| {
        format!(
            "REGISTER sip:example.com SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\nFrom: <sip:{user}@example.com>;tag=r{n}\r\n\
To: <sip:{user}@example.com>\r\nCall-ID: reg-{n}\r\nCSeq: 1 REGISTER\r\nContact: {}\r\n{extra}Content-Length: 0\r\n\r\n",
            c.via(&format!("z9hG4bKr{}", unique())),
            c.contact(),
            n = unique()
        )
    };
    c.send(&register(&c, "alice", "")).await;
    let challenge = c.recv_where("401", |m| m.status() == Some(401)).await;
    let offer = digest_offer(&challenge);
    let hp = sagw_digest::client::parse_header(&offer).unwrap();
    let genuine = sagw_digest::client::Challenge::from_params(hp.pairs())
        .unwrap()
        .nonce
        .to_owned();
    // The same length and alphabet, another MAC: a nonce this gateway never minted.
    let forged: String = genuine
        .chars()
        .rev()
        .map(|ch| if ch == 'A' { 'B' } else { ch })
        .collect();
    assert_ne!(forged, genuine);

    let mut answers = Vec::new();
    let mut nc = 0;
    for nonce in [Some(forged.as_str()), None] {
        // alice with a wrong password, and a user the store does not have.
        for user in ["alice", "mallory"] {
            nc += 1;
            let creds = digest_credentials(
                &offer,
                user,
                "not-the-password",
                "REGISTER",
                "sip:example.com",
                nc,
                nonce,
            );
            c.send(&register(&c, user, &format!("Authorization: {creds}\r\n")))
                .await;
            let r = c
                .recv_where("answer", |m| m.cseq_method() == "REGISTER")
                .await;
            let challenges: Vec<&str> = r
                .headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("WWW-Authenticate"))
                .map(|(_, v)| v.as_str())
                .collect();
            let stale = challenges.iter().any(|v| v.contains("stale=true"));
            answers.push((user, r.status(), stale, challenges.len()));
        }
    }
    // What the client sees does not tell the two apart.
    for pair in answers.chunks(2) {
        assert_eq!(
            (pair[0].1, pair[0].2, pair[0].3),
            (pair[1].1, pair[1].2, pair[1].3),
            "{answers:?}"
        );
        assert_eq!(pair[0].1, Some(401));
    }
    // And the work is the same: a forged nonce is found by its MAC for both (before, the unknown
    // user was refused at the store lookup, before any nonce check or hashing); with a genuine
    // nonce both responses are computed and found wrong, the operator's counters still telling an
    // unknown user from a wrong password.
    let page = auth_support::http(&gw, "GET", "/metrics").await.1;
    let failures = |reason: &str| {
        series(
            &page,
            &format!("sagw_auth_handshake_failures_total{{scheme=\"digest\",reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(failures("bad_nonce"), 2, "{page}");
    assert_eq!(failures("wrong_password"), 1, "{page}");
    assert_eq!(failures("unknown_user"), 1, "{page}");
    gw.shutdown(support::WAIT).await;
}

/// alice, a Digest client over TCP, registered; the next hop, a UDP socket of the test, calls
/// her. What her requests in that call are written from.
struct CalledDigestClient {
    gw: Running,
    alice: Client,
    hop: tokio::net::UdpSocket,
    gw_udp: SocketAddr,
    /// The 200 of the last [`call_to`](Self::call_to), as the next hop got it.
    answered: Option<Msg>,
}

impl CalledDigestClient {
    async fn new() -> Self {
        let hop = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let hops = [format!("udp:{}", hop.local_addr().unwrap())];
        let gw = auth_support::gateway(GwOptions {
            schemes: &["digest"],
            next_hops: &hops,
            ..Default::default()
        })
        .await;
        let gw_udp = gw.udp.expect("UDP listener");
        let mut alice = Client::connect(&gw, Kind::Tcp, "alice").await;
        let register = |c: &Client, n: u32, extra: &str| {
            format!(
                "REGISTER sip:example.com SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=r1\r\n\
To: <sip:alice@example.com>\r\nCall-ID: reg-{}\r\nCSeq: {n} REGISTER\r\nContact: {}\r\n{extra}Content-Length: 0\r\n\r\n",
                c.via(&format!("z9hG4bKreg{n}")),
                c.local,
                c.contact()
            )
        };
        alice.send(&register(&alice, 1, "")).await;
        let challenge = alice.recv_where("401", |m| m.status() == Some(401)).await;
        let creds = digest_credentials(
            &digest_offer(&challenge),
            "alice",
            "alice-pw",
            "REGISTER",
            "sip:example.com",
            1,
            None,
        );
        alice
            .send(&register(&alice, 2, &format!("Authorization: {creds}\r\n")))
            .await;
        let ok = alice
            .recv_where("200", |m| m.cseq_method() == "REGISTER")
            .await;
        assert_eq!(ok.status(), Some(200), "{ok:?}");
        CalledDigestClient {
            gw,
            alice,
            hop,
            gw_udp,
            answered: None,
        }
    }

    /// The next hop calls alice's AOR with `to` as the INVITE's To (a trunk's DID, say); alice
    /// answers 200 with To tag `al`. Returns the INVITE as she got it.
    async fn call_to(&mut self, call_id: &str, to: &str) -> Msg {
        let got = self.ring(call_id, to).await;
        let contact = format!("Contact: {}\r\n", self.alice.contact());
        self.answered = Some(self.alice_answers(&got, 200, "OK", &contact).await);
        got
    }

    /// Alice answers the next hop's `request` with `code` (To tag `al`, `extra` headers): that
    /// answer as the next hop got it.
    async fn alice_answers(&mut self, request: &Msg, code: u16, reason: &str, extra: &str) -> Msg {
        self.alice
            .send(&request.reply(code, reason, "al", extra))
            .await;
        let method = request.cseq_method();
        self.at_hop(&format!("the {code}"), code, &method).await
    }

    /// The next hop's INVITE of [`call_to`](Self::call_to), as alice got it, not answered yet.
    async fn ring(&mut self, call_id: &str, to: &str) -> Msg {
        let hop_addr = self.hop.local_addr().unwrap();
        let invite = format!(
            "INVITE sip:alice@example.com SIP/2.0\r\nVia: SIP/2.0/UDP {hop_addr};branch=z9hG4bKhop{call_id}\r\n\
Max-Forwards: 70\r\nFrom: <sip:+15551234@example.com>;tag=h1\r\nTo: <{to}>\r\nCall-ID: {call_id}\r\n\
CSeq: 1 INVITE\r\nContact: <sip:caller@{hop_addr}>\r\nContent-Length: 0\r\n\r\n"
        );
        self.hop
            .send_to(invite.as_bytes(), self.gw_udp)
            .await
            .unwrap();
        self.alice
            .recv_where("INVITE", |m| m.method() == Some("INVITE"))
            .await
    }

    /// The next hop's request in the last call (`did` as alice's address), along the route set
    /// its 200 recorded: what alice got.
    async fn caller_sends(&mut self, method: &str, cseq: u32, did: &str, call_id: &str) -> Msg {
        let hop_addr = self.hop.local_addr().unwrap();
        let ok = self.answered.as_ref().expect("a call answered");
        let mut routes = ok.all("Record-Route");
        routes.reverse();
        let route: String = routes.iter().map(|r| format!("Route: {r}\r\n")).collect();
        let target = ok
            .header("Contact")
            .unwrap_or("")
            .trim_matches(['<', '>'])
            .to_owned();
        let request = format!(
            "{method} {target} SIP/2.0\r\nVia: SIP/2.0/UDP {hop_addr};branch=z9hG4bKhop{method}{cseq}{call_id}\r\n\
Max-Forwards: 70\r\n{route}From: <sip:+15551234@example.com>;tag=h1\r\nTo: <{did}>;tag=al\r\n\
Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContact: <sip:caller@{hop_addr}>\r\nContent-Length: 0\r\n\r\n"
        );
        self.hop
            .send_to(request.as_bytes(), self.gw_udp)
            .await
            .unwrap();
        self.alice
            .recv_where(method, |m| m.method() == Some(method))
            .await
    }

    /// The next hop's next answer with `code` to a `method`.
    async fn at_hop(&mut self, what: &str, code: u16, method: &str) -> Msg {
        let mut buf = vec![0u8; 65536];
        loop {
            let (n, _) = timeout(support::WAIT, self.hop.recv_from(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("{what} at the next hop"))
                .unwrap();
            let m = Msg::parse(&buf[..n]).expect("parses");
            if m.status() == Some(code) && m.cseq_method() == method {
                break m;
            }
        }
    }

    /// The next request with `method` at the next hop.
    async fn request_at_hop(&mut self, what: &str, method: &str) -> Msg {
        let mut buf = vec![0u8; 65536];
        loop {
            let (n, _) = timeout(support::WAIT, self.hop.recv_from(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("{what} at the next hop"))
                .unwrap();
            let m = Msg::parse(&buf[..n]).expect("parses");
            if m.method() == Some(method) {
                break m;
            }
        }
    }

    /// The caller answers alice's re-INVITE (as it reached the next hop) 200 with `contact`:
    /// the route set of her ACK, from the 200 as she got it.
    async fn accept_reinvite(&mut self, reinvite: &Msg, contact: &str) -> String {
        let ok = reinvite.reply(200, "OK", "h1", &format!("Contact: <{contact}>\r\n"));
        self.hop.send_to(ok.as_bytes(), self.gw_udp).await.unwrap();
        let ok = self
            .alice
            .recv_where("200 to the re-INVITE", |m| {
                m.status() == Some(200) && m.cseq_method() == "INVITE"
            })
            .await;
        ok.all("Record-Route")
            .iter()
            .map(|r| format!("Route: {r}\r\n"))
            .collect()
    }

    /// alice's ACK in the call `call_id` (her tag `al`, the caller's `h1`) to `ruri`, from `from`,
    /// along `route`, without credentials as PJSIP sends it.
    async fn ack(&mut self, ruri: &str, from: &str, call_id: &str, cseq: u32, route: &str) {
        let ack = format!(
            "ACK {ruri} SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\nFrom: <{from}>;tag=al\r\n\
To: <sip:+15551234@example.com>;tag=h1\r\nCall-ID: {call_id}\r\nCSeq: {cseq} ACK\r\n{route}Content-Length: 0\r\n\r\n",
            self.alice.via(&format!("z9hG4bKack{}", unique()))
        );
        self.alice.send(&ack).await;
    }

    /// alice's request in the call `invite` made, from `from` with her tag and to the caller's
    /// `to_tag`, along the route set the INVITE recorded, answered 407 once and sent again
    /// with her credentials: the answer, or what reached the next hop.
    async fn in_dialog(&mut self, invite: &Msg, method: &str, from: &str, to_tag: &str) -> Msg {
        let hop_addr = self.hop.local_addr().unwrap();
        self.in_dialog_to(
            invite,
            method,
            &format!("sip:caller@{hop_addr}"),
            from,
            to_tag,
        )
        .await
    }

    /// [`in_dialog`](Self::in_dialog) with another Request-URI than the caller's Contact.
    async fn in_dialog_to(
        &mut self,
        invite: &Msg,
        method: &str,
        ruri: &str,
        from: &str,
        to_tag: &str,
    ) -> Msg {
        let route: String = invite
            .all("Record-Route")
            .iter()
            .map(|r| format!("Route: {r}\r\n"))
            .collect();
        let call_id = invite.header("Call-ID").unwrap_or("").to_owned();
        let request = |c: &Client, cseq: u32, extra: &str| {
            format!(
                "{method} {ruri} SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\nFrom: <{from}>;tag=al\r\n\
To: <sip:+15551234@example.com>;tag={to_tag}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n{route}\
Contact: {}\r\n{extra}Content-Length: 0\r\n\r\n",
                c.via(&format!("z9hG4bK{method}{cseq}{}", unique())),
                c.contact()
            )
        };
        self.alice.send(&request(&self.alice, 1, "")).await;
        let challenge = self
            .alice
            .recv_where("407", |m| m.cseq_method() == method)
            .await;
        assert_eq!(challenge.status(), Some(407), "{challenge:?}");
        let creds = digest_credentials(
            &digest_offer(&challenge),
            "alice",
            "alice-pw",
            method,
            ruri,
            1,
            None,
        );
        let again = request(&self.alice, 2, &format!("Proxy-Authorization: {creds}\r\n"));
        self.alice.send(&again).await;
        let mut buf = vec![0u8; 65536];
        tokio::select! {
            answer = self.alice.recv_where("answer", |m| {
                m.cseq_method() == method && m.status() != Some(100)
            }) => answer,
            got = async {
                loop {
                    let (n, _) = self.hop.recv_from(&mut buf).await.unwrap();
                    let m = Msg::parse(&buf[..n]).expect("parses");
                    if m.method() == Some(method) {
                        break m;
                    }
                }
            } => got,
        }
    }
}

/// A called client takes the INVITE's To as its own address in the call (RFC 3261 §12.1.1). A
/// trunk's DID or a PBX dialling the registered contact makes that To another address than the
/// client's identity, and its BYE, re-INVITE, REFER and NOTIFY in the call were refused 403: the
/// callee could not hang up. The gateway delivered that dialog to this connection, and lets the
/// client's requests in it have that From; nothing else does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callee_addressed_by_another_uri_than_its_identity_can_hang_up() {
    let mut c = CalledDigestClient::new().await;
    let hop_addr = c.hop.local_addr().unwrap();
    let did = "sip:+4930123456@example.com";
    let invite = c.call_to("did-call", did).await;
    // A request of the call whose To tag is not the caller's: not the dialog delivered.
    let stray = c.in_dialog(&invite, "INFO", did, "h2").await;
    assert_eq!(stray.status(), Some(403), "{stray:?}");
    // Nor one to anyone but the caller (its Contact).
    let elsewhere = format!("sip:carol@{hop_addr}");
    let stray = c
        .in_dialog_to(&invite, "MESSAGE", &elsewhere, did, "h1")
        .await;
    assert_eq!(stray.status(), Some(403), "{stray:?}");
    // Hold: her re-INVITE, and the ACK of its 200 without credentials, as PJSIP sends it.
    let reinvite = c.in_dialog(&invite, "INVITE", did, "h1").await;
    assert_eq!(reinvite.method(), Some("INVITE"), "{reinvite:?}");
    let caller = format!("sip:caller@{hop_addr}");
    let route = c.accept_reinvite(&reinvite, &caller).await;
    c.ack(&caller, did, "did-call", 2, &route).await;
    let got = c.request_at_hop("the ACK of the hold", "ACK").await;
    assert_eq!(
        got.header("P-Asserted-Identity"),
        Some("<sip:alice@example.com>")
    );
    let bye = c.in_dialog(&invite, "BYE", did, "h1").await;
    assert_eq!(
        bye.method(),
        Some("BYE"),
        "the BYE reaches the caller: {bye:?}"
    );
    assert_eq!(bye.header("From"), Some(format!("<{did}>;tag=al").as_str()));
    assert_eq!(
        bye.header("P-Asserted-Identity"),
        Some("<sip:alice@example.com>"),
        "the gateway asserts who she is, whatever the dialog calls her"
    );
    // The BYE ended the dialog: the address is not hers any more.
    let after = c.in_dialog(&invite, "INFO", did, "h1").await;
    assert_eq!(after.status(), Some(403), "{after:?}");

    // A tel: URI as the To, as trunks write a number.
    let invite = c.call_to("tel-call", "tel:+4930123456").await;
    let bye = c.in_dialog(&invite, "BYE", "tel:+4930123456", "h1").await;
    assert_eq!(bye.method(), Some("BYE"), "{bye:?}");

    // A call addressed to another user's identity (bob is a user here) lends her nothing.
    let invite = c.call_to("bobs-call", "sip:bob@example.com").await;
    let bye = c
        .in_dialog(&invite, "BYE", "sip:bob@example.com", "h1")
        .await;
    assert_eq!(bye.status(), Some(403), "{bye:?}");
    // Her own address in that call is hers anyway.
    let own = c
        .in_dialog(&invite, "BYE", "sip:alice@example.com", "h1")
        .await;
    assert_eq!(own.method(), Some("BYE"), "{own:?}");
    c.gw.shutdown(support::WAIT).await;
}

/// A call addressed to another user's identity lends the callee nothing however the server
/// spelt it: `sips:`, a port, an escaped user part and a password are the same user to the
/// servers behind. Before, only the exact `sip:user@domain` text was recognised as bob's, and
/// alice's BYE and ACK with `From: <sips:bob@example.com>` reached the caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_identity_in_any_spelling_lends_nothing() {
    let mut c = CalledDigestClient::new().await;
    let hop_addr = c.hop.local_addr().unwrap();
    for (call_id, bob) in [
        ("sips-bob", "sips:bob@example.com"),
        ("port-bob", "sip:bob@example.com:5060"),
        ("escaped-bob", "sip:b%6Fb@example.com"),
        ("password-bob", "sip:bob:x@example.com"),
        ("case-bob", "SIP:Bob@Example.COM"),
    ] {
        let invite = c.call_to(call_id, bob).await;
        let bye = c.in_dialog(&invite, "BYE", bob, "h1").await;
        assert_eq!(bye.status(), Some(403), "{bob}: {bye:?}");
    }
    // The ACK of her own re-INVITE in such a call, from bob's address: dropped; from hers: on.
    let bob = "sips:bob@example.com";
    let invite = c.call_to("ack-bob", bob).await;
    let reinvite = c
        .in_dialog(&invite, "INVITE", "sip:alice@example.com", "h1")
        .await;
    assert_eq!(reinvite.method(), Some("INVITE"), "{reinvite:?}");
    let ruri = format!("sip:caller@{hop_addr}");
    let route = c.accept_reinvite(&reinvite, &ruri).await;
    c.ack(&ruri, bob, "ack-bob", 2, &route).await;
    c.ack(&ruri, "sip:alice@example.com", "ack-bob", 2, &route)
        .await;
    let ack = c.request_at_hop("an ACK", "ACK").await;
    assert_eq!(
        ack.header("From"),
        Some("<sip:alice@example.com>;tag=al"),
        "bob's address never reaches the caller: {ack:?}"
    );
    c.gw.shutdown(support::WAIT).await;
}

/// A request the callee turns down inside the call (a re-INVITE answered 491 in glare, a REFER
/// declined) does not end the dialog (RFC 3261 §14.1): before, any final over 299 to a server's
/// INVITE forgot the dialog's address, and the callee's BYE was refused 403.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_declined_inside_a_delivered_dialog_keeps_it() {
    let mut c = CalledDigestClient::new().await;
    let did = "sip:+4930123456@example.com";
    let invite = c.call_to("glare-call", did).await;
    let reinvite = c.caller_sends("INVITE", 2, did, "glare-call").await;
    c.alice_answers(&reinvite, 491, "Request Pending", "").await;
    let bye = c.in_dialog(&invite, "BYE", did, "h1").await;
    assert_eq!(
        bye.method(),
        Some("BYE"),
        "the BYE reaches the caller: {bye:?}"
    );
    c.gw.shutdown(support::WAIT).await;
}

/// A response after the client's final one (a 180 after its 486, which no UA sends) is not
/// looked at: the declined call lends the client nothing. Without that, a client answering a
/// server's INVITE 486 and then 180 kept the dialog it had turned down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provisional_answer_after_a_decline_lends_nothing() {
    let mut c = CalledDigestClient::new().await;
    let did = "sip:+4930123456@example.com";
    let invite = c.ring("declined-call", did).await;
    c.alice_answers(&invite, 486, "Busy Here", "").await;
    let contact = format!("Contact: {}\r\n", c.alice.contact());
    c.alice
        .send(&invite.reply(180, "Ringing", "al", &contact))
        .await;
    let bye = c.in_dialog(&invite, "BYE", did, "h1").await;
    assert_eq!(bye.status(), Some(403), "{bye:?}");
    c.gw.shutdown(support::WAIT).await;
}

/// The caller's 2xx to the callee's re-INVITE may move its target (RFC 3261 §12.2.1.2): the
/// callee's ACK and BYE then go to the new Contact. Before, only the caller's own requests moved
/// it, and the hold's ACK was dropped (the PBX ends the call 32 s later) and the BYE refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_the_caller_moves_in_its_2xx_is_followed() {
    let mut c = CalledDigestClient::new().await;
    let hop_addr = c.hop.local_addr().unwrap();
    let did = "sip:+4930123456@example.com";
    let invite = c.call_to("moved-call", did).await;
    let reinvite = c.in_dialog(&invite, "INVITE", did, "h1").await;
    assert_eq!(reinvite.method(), Some("INVITE"), "{reinvite:?}");
    let moved = format!("sip:media-server@{hop_addr}");
    let route = c.accept_reinvite(&reinvite, &moved).await;
    c.ack(&moved, did, "moved-call", 2, &route).await;
    let ack = c.request_at_hop("the hold's ACK", "ACK").await;
    assert_eq!(ack.header("From"), Some(format!("<{did}>;tag=al").as_str()));
    let bye = c.in_dialog_to(&invite, "BYE", &moved, did, "h1").await;
    assert_eq!(bye.method(), Some("BYE"), "{bye:?}");
    c.gw.shutdown(support::WAIT).await;
}

/// A client that calls itself chooses the INVITE's To: a dialog a client opened lends nothing,
/// however the client answers it. Before, alice's INVITE to herself with `To: <sip:+1800…>`,
/// answered 180 by her, let her send requests with that From in the Call-ID.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_calling_itself_does_not_choose_its_own_dialog_address() {
    let mut c = CalledDigestClient::new().await;
    let bank = "sip:+18005550100@example.com";
    let contact = c.alice.contact();
    let invite = |c: &Client, cseq: u32, extra: &str| {
        format!(
            "INVITE sip:alice@example.com SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\n\
From: <sip:alice@example.com>;tag=self\r\nTo: <{bank}>\r\nCall-ID: self-call\r\nCSeq: {cseq} INVITE\r\n\
Contact: {contact}\r\n{extra}Content-Length: 0\r\n\r\n",
            c.via(&format!("z9hG4bKself{cseq}"))
        )
    };
    c.alice.send(&invite(&c.alice, 1, "")).await;
    let challenge = c.alice.recv_where("407", |m| m.status() == Some(407)).await;
    let creds = digest_credentials(
        &digest_offer(&challenge),
        "alice",
        "alice-pw",
        "INVITE",
        "sip:alice@example.com",
        1,
        None,
    );
    c.alice
        .send(&invite(
            &c.alice,
            2,
            &format!("Proxy-Authorization: {creds}\r\n"),
        ))
        .await;
    let got = c
        .alice
        .recv_where("her own INVITE", |m| m.method() == Some("INVITE"))
        .await;
    c.alice
        .send(&got.reply(180, "Ringing", "t1", &format!("Contact: {contact}\r\n")))
        .await;
    c.alice
        .recv_where("her 180", |m| m.status() == Some(180))
        .await;
    let ruri = c.alice.contact().trim_matches(['<', '>']).to_owned();
    let message = format!(
        "MESSAGE {ruri} SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\nFrom: <{bank}>;tag=t1\r\n\
To: <sip:alice@example.com>;tag=self\r\nCall-ID: self-call\r\nCSeq: 5 MESSAGE\r\nContent-Length: 0\r\n\r\n",
        c.alice.via("z9hG4bKselfmsg")
    );
    c.alice.send(&message).await;
    let challenge = c
        .alice
        .recv_where("407", |m| m.cseq_method() == "MESSAGE")
        .await;
    let creds = digest_credentials(
        &digest_offer(&challenge),
        "alice",
        "alice-pw",
        "MESSAGE",
        &ruri,
        1,
        None,
    );
    let message = message
        .replace(
            "Content-Length: 0",
            &format!("Proxy-Authorization: {creds}\r\nContent-Length: 0"),
        )
        .replace("z9hG4bKselfmsg", "z9hG4bKselfmsg2");
    c.alice.send(&message).await;
    let answer = c
        .alice
        .recv_where("the MESSAGE's answer", |m| {
            m.cseq_method() == "MESSAGE" && m.status().is_some()
        })
        .await;
    assert_eq!(answer.status(), Some(403), "{answer:?}");
    c.gw.shutdown(support::WAIT).await;
}
