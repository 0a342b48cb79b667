//! The core thread's own duties: reading UDP in passes (a burst larger than one pass is answered
//! whole), waking for events from connection tasks, and letting go of its sockets at shutdown.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use support::*;

/// Settings for a gateway on UDP only (loopback, ephemeral port, no metrics, no auth) with
/// `extra` TOML lines in `[proxy]`.
fn udp_only(extra: &str) -> sagw_gateway::Settings {
    let text = format!(
        "[log]\nlevel = \"warn\"\n[listen]\nudp = \"127.0.0.1:0\"\ntcp = \"\"\ntls = \"\"\n\
[metrics]\nlisten = \"\"\n[proxy]\n{extra}\n[auth]\nenabled = false\n"
    );
    sagw_gateway::Config::parse(&text)
        .expect("test config parses")
        .validate()
        .expect("test config valid")
}

fn options(port: u16, from_port: u16, branch: &str) -> String {
    format!(
        "OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:{from_port};branch=z9hG4bK{branch}\r\n\
Max-Forwards: 70\r\nFrom: <sip:probe@example.com>;tag=p\r\nTo: <sip:127.0.0.1:{port}>\r\n\
Call-ID: {branch}@burst\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

/// More datagrams than one read pass takes (256) queue up before the core reads any: every one is
/// answered, so a pass that stops on its budget comes back to the socket without waiting for a
/// new edge from epoll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_udp_burst_larger_than_one_pass_is_answered_whole() {
    let gw = gateway("").await;
    let port = gw.udp.expect("udp listener").port();
    let sock = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
    .unwrap();
    sock.set_recv_buffer_size(4 << 20).unwrap();
    sock.bind(
        &"127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    let sock: std::net::UdpSocket = sock.into();
    let me = sock.local_addr().unwrap().port();
    const N: usize = 700;
    // Written from a plain thread in one go: the gateway cannot answer in between faster than a
    // loop of send_to calls fills its queue.
    let sent: Vec<String> = (0..N).map(|i| format!("burst{}x{i}", unique())).collect();
    for b in &sent {
        sock.send_to(options(port, me, b).as_bytes(), ("127.0.0.1", port))
            .unwrap();
    }
    // Well under the gateway's first timer (Timer J, 64 x T1 = 3.2 s here): a core that went to
    // sleep with datagrams still queued would only come back to them when a timer woke it.
    let deadline = std::time::Instant::now() + Duration::from_millis(1500);
    let sock = tokio::task::spawn_blocking(move || {
        let mut seen = HashSet::new();
        let mut buf = vec![0u8; 65_536];
        while seen.len() < N {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() || sock.set_read_timeout(Some(left)).is_err() {
                break;
            }
            let Ok(n) = sock.recv(&mut buf) else { break };
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            assert!(text.starts_with("SIP/2.0 200"), "unexpected answer: {text}");
            let branch = text
                .split("branch=z9hG4bK")
                .nth(1)
                .and_then(|r| r.split(['\r', ';', ',']).next())
                .unwrap()
                .to_owned();
            seen.insert(branch);
        }
        seen
    })
    .await
    .unwrap();
    let want: HashSet<String> = sent.into_iter().collect();
    assert_eq!(
        sock.len(),
        N,
        "every OPTIONS of the burst is answered within 1.5 s"
    );
    assert_eq!(sock, want);
}

/// Messages over TCP reach the core thread while UDP is idle (the waker), and the core keeps
/// serving UDP and TCP side by side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_events_wake_the_core_while_udp_is_idle() {
    let gw = gateway("").await;
    for round in 0..20 {
        for kind in [Kind::Tcp, Kind::Udp] {
            let mut c = Client::connect(&gw, kind, "probe").await;
            let b = format!("wake{round}{}", unique());
            let port = match kind {
                Kind::Udp => gw.udp.unwrap().port(),
                _ => gw.tcp.unwrap().port(),
            };
            c.send(&format!(
                "OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/{} {};branch=z9hG4bK{b}\r\n\
Max-Forwards: 70\r\nFrom: <sip:probe@example.com>;tag=p\r\nTo: <sip:127.0.0.1>\r\n\
Call-ID: {b}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
                kind.via(),
                c.local
            ))
            .await;
            let r = c.recv().await;
            assert_eq!(r.status(), Some(200), "round {round} over {kind:?}");
        }
        // Let the core fall asleep between rounds, so each message has to wake it.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// After shutdown the core thread has ended and dropped the UDP socket: the port can be bound
/// again at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_the_core_thread_and_frees_the_udp_port() {
    let gw = gateway("").await;
    let addr = gw.udp.unwrap();
    gw.shutdown(Duration::from_secs(5)).await;
    let mut bound = None;
    for _ in 0..50 {
        match std::net::UdpSocket::bind(addr) {
            Ok(s) => {
                bound = Some(s);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    assert!(bound.is_some(), "UDP port {addr} still held after shutdown");
}

/// Dropping a running gateway without shutdown also stops the core thread (it is not a task
/// that ends with the runtime).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_gateway_stops_the_core_thread() {
    let gw = gateway("").await;
    let addr = gw.udp.unwrap();
    drop(gw);
    let mut bound = false;
    for _ in 0..100 {
        if std::net::UdpSocket::bind(addr).is_ok() {
            bound = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        bound,
        "UDP port {addr} still held after the gateway was dropped"
    );
}

/// `proxy.core_cpu` pins the core thread: with "0" some `sagw-core` thread of this process may
/// run on CPU 0 only (other tests' gateways pin theirs to the last CPU, or run unpinned).
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_cpu_pins_the_core_thread() {
    let settings = udp_only("core_cpu = \"0\"");
    let gw = sagw_gateway::start(settings)
        .await
        .expect("starts pinned to CPU 0");
    let mut pinned_to_0 = false;
    for _ in 0..50 {
        for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
            if comm.trim() == "sagw-core"
                && status.lines().any(|l| {
                    l.split_whitespace().collect::<Vec<_>>() == ["Cpus_allowed_list:", "0"]
                })
            {
                pinned_to_0 = true;
            }
        }
        if pinned_to_0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(pinned_to_0, "no sagw-core thread pinned to CPU 0");
    gw.shutdown(Duration::from_secs(5)).await;
}

/// A CPU the process may not use is a start error that names the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_core_cpu_outside_the_allowed_set_is_a_start_error() {
    let settings = udp_only("core_cpu = \"100000\"");
    let err = sagw_gateway::start(settings)
        .await
        .expect_err("CPU 100000 refused");
    assert!(err.to_string().contains("`proxy.core_cpu`"), "{err}");
}

/// An authentication stage that panics on a MESSAGE: a stand-in for any bug on the core thread.
struct PanicsOnMessage;

impl sagw_proxy::ClientAuth for PanicsOnMessage {
    fn inbound(
        &mut self,
        msg: &mut sagw_sip::Message,
        _ctx: &sagw_proxy::InboundContext<'_>,
    ) -> sagw_proxy::InboundVerdict {
        assert_ne!(
            msg.method(),
            Some("MESSAGE"),
            "test: the core thread panics"
        );
        sagw_proxy::InboundVerdict::Continue {
            note: None,
            endpoint: None,
            client: None,
        }
    }
}

/// A panic on the core thread is reported through `Running::stopped` (the binary exits with a
/// failure on it) instead of leaving a process that accepts connections but drops all SIP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_on_the_core_thread_is_reported() {
    let settings = udp_only("");
    let gw = sagw_gateway::start_with_auth(settings, Box::new(PanicsOnMessage))
        .await
        .unwrap();
    let port = gw.udp.unwrap().port();
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = sock.local_addr().unwrap().port();
    // An OPTIONS is served: the core is alive.
    sock.send_to(options(port, me, "alive1").as_bytes(), ("127.0.0.1", port))
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), sock.recv(&mut buf))
        .await
        .expect("OPTIONS answered")
        .unwrap();
    assert!(buf[..n].starts_with(b"SIP/2.0 200"));
    let message = options(port, me, "boom1").replace("OPTIONS", "MESSAGE");
    sock.send_to(message.as_bytes(), ("127.0.0.1", port))
        .await
        .unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(5), gw.stopped())
        .await
        .expect("the core's end is reported");
    assert_eq!(exit, sagw_gateway::CoreExit::Panicked);
}

/// An OPTIONS to the gateway itself over a stream, from `local`.
fn stream_options(
    gw: &sagw_gateway::Running,
    via: &str,
    local: std::net::SocketAddr,
    b: &str,
) -> String {
    let port = gw.tcp.unwrap().port();
    format!(
        "OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/{via} {local};branch=z9hG4bK{b}\r\n\
Max-Forwards: 70\r\nFrom: <sip:probe@example.com>;tag=p\r\nTo: <sip:127.0.0.1>\r\n\
Call-ID: {b}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

/// Accepted connections are the core thread's own: when their peers close them (a TLS
/// close_notify, a TLS socket closed without one, a TCP FIN, a TCP reset), the core sees it,
/// forgets the flow and counts the connection closed; the open-connection gauges come back to
/// zero and new connections are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_closed_by_their_peers_are_forgotten_by_the_core() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gw = gateway("").await;
    let mut tcp = Vec::new();
    let mut tls = Vec::new();
    for i in 0..2 {
        for kind in [Kind::Tcp, Kind::Tls] {
            let mut c = Client::connect(&gw, kind, "probe").await;
            let b = format!("close{i}{}", unique());
            c.send(&stream_options(&gw, kind.via(), c.local, &b)).await;
            assert_eq!(c.recv().await.status(), Some(200), "{kind:?}");
        }
        // Raw streams, closed below in four ways.
        let mut t = tokio::net::TcpStream::connect(gw.tcp.unwrap())
            .await
            .unwrap();
        let local = t.local_addr().unwrap();
        t.write_all(stream_options(&gw, "TCP", local, &format!("raw{i}{}", unique())).as_bytes())
            .await
            .unwrap();
        let mut buf = [0u8; 4096];
        assert!(t.read(&mut buf).await.unwrap() > 0, "TCP answered");
        tcp.push(t);
        let mut s = tls_connect(&gw, &[&rustls::version::TLS13]).await.unwrap();
        let local = s.get_ref().0.local_addr().unwrap();
        s.write_all(
            stream_options(&gw, "TLS", local, &format!("rawtls{i}{}", unique())).as_bytes(),
        )
        .await
        .unwrap();
        s.flush().await.unwrap();
        assert!(s.read(&mut buf).await.unwrap() > 0, "TLS answered");
        tls.push(s);
    }
    // The Clients closed as they went out of scope; the raw streams are open.
    let page = scrape_until(
        &gw,
        &[
            "sagw_connections{transport=\"tcp\"} 2",
            "sagw_connections{transport=\"tls\"} 2",
        ],
    )
    .await;
    assert!(
        page.contains("sagw_connections{transport=\"tcp\"} 2"),
        "{page}"
    );
    assert!(
        page.contains("sagw_connections{transport=\"tls\"} 2"),
        "{page}"
    );
    assert!(
        page.contains("sagw_connections_total{transport=\"tls\"} 4"),
        "{page}"
    );
    // TCP: a FIN, then a reset (linger 0).
    let fin = tcp.pop().unwrap();
    drop(fin);
    let rst = tcp.pop().unwrap();
    socket2::SockRef::from(&rst)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(rst);
    // TLS: a close_notify, then a socket closed under the session.
    let mut notify = tls.pop().unwrap();
    notify.shutdown().await.unwrap();
    let abrupt = tls.pop().unwrap();
    drop(abrupt);
    let page = scrape_until(
        &gw,
        &[
            "sagw_connections{transport=\"tcp\"} 0",
            "sagw_connections{transport=\"tls\"} 0",
        ],
    )
    .await;
    drop(notify);
    assert!(
        page.contains("sagw_connections{transport=\"tcp\"} 0")
            && page.contains("sagw_connections{transport=\"tls\"} 0"),
        "every connection closed by its peer is counted closed: {page}"
    );
    for kind in [Kind::Tcp, Kind::Tls] {
        let mut c = Client::connect(&gw, kind, "probe").await;
        c.send(&stream_options(
            &gw,
            kind.via(),
            c.local,
            &format!("after{}", unique()),
        ))
        .await;
        assert_eq!(
            c.recv().await.status(),
            Some(200),
            "{kind:?} after the closes"
        );
    }
}

/// A peer that sends pipelined requests from plain threads without pause, faster than the core
/// answers them, reading and counting its answers. Run in a namespace with a real network's MTU
/// ([`rerun_in_netns`]): on loopback's 64 KiB one the flood pauses by itself.
struct Flood {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    answered: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    writer: std::thread::JoinHandle<std::io::Result<usize>>,
}

impl Flood {
    fn start(gw: &sagw_gateway::Running) -> Flood {
        use std::io::{Read, Write};
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let to = gw.tcp.unwrap();
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.set_tcp_mss(1400).unwrap();
        sock.connect(&to.into()).unwrap();
        let flood: std::net::TcpStream = sock.into();
        let local = flood.local_addr().unwrap();
        let mut rd = flood.try_clone().unwrap();
        let mut wr = flood;
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicUsize::new(0));
        // The flooder reads its answers, so the gateway's writes to it never stall.
        {
            let answered = answered.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 1 << 16];
                while let Ok(k) = rd.read(&mut buf) {
                    if k == 0 {
                        break;
                    }
                    let n = buf[..k].windows(11).filter(|w| w == b"SIP/2.0 200").count();
                    answered.fetch_add(n, Ordering::Relaxed);
                }
            });
        }
        let batch: String = (0..200)
            .map(|i| stream_options(gw, "TCP", local, &format!("flood{i}{}", unique())))
            .collect();
        let writer = {
            let stop = stop.clone();
            std::thread::spawn(move || -> std::io::Result<usize> {
                let mut sent = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    wr.write_all(batch.as_bytes())?;
                    sent += 1;
                }
                Ok(sent)
            })
        };
        Flood {
            stop,
            answered,
            writer,
        }
    }

    fn answered(&self) -> usize {
        self.answered.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops the flood: the batches of 200 requests it wrote, or how its connection failed.
    async fn stop(self) -> std::io::Result<usize> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let writer = self.writer;
        tokio::task::spawn_blocking(move || writer.join())
            .await
            .unwrap()
            .unwrap()
    }
}

/// While [`Flood`]s run, a client over `kind` (connected before them) sends 20 requests one by
/// one: each is answered within 2 s, and the slowest within 1 s (the bound is for a loaded CI
/// machine). The floods stay open and answered.
async fn served_beside_floods(gw: &sagw_gateway::Running, kind: Kind, flooders: usize) {
    let mut c = Client::connect(gw, kind, "probe").await;
    let request = |c: &Client, b: &str| match kind {
        Kind::Udp => options(gw.udp.unwrap().port(), c.local.port(), b),
        _ => stream_options(gw, kind.via(), c.local, b),
    };
    c.send(&request(&c, &format!("warm{}", unique()))).await;
    assert_eq!(c.recv().await.status(), Some(200));
    let floods: Vec<Flood> = (0..flooders).map(|_| Flood::start(gw)).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before: usize = floods.iter().map(Flood::answered).sum();
    let mut slowest = Duration::ZERO;
    for i in 0..20 {
        let started = tokio::time::Instant::now();
        c.send(&request(&c, &format!("other{i}{}", unique()))).await;
        let r = tokio::time::timeout(Duration::from_secs(2), c.recv())
            .await
            .unwrap_or_else(|_| {
                panic!("{kind:?}: request {i} of the other client not answered in 2 s")
            });
        assert_eq!(r.status(), Some(200));
        slowest = slowest.max(started.elapsed());
    }
    let during = floods.iter().map(Flood::answered).sum::<usize>() - before;
    for f in floods {
        let batches = f
            .stop()
            .await
            .expect("the flood connection stayed open while the other client was served");
        assert!(
            batches > 5,
            "the flooder kept sending ({batches} batches of 200 requests)"
        );
    }
    assert!(
        during > 200,
        "the flooders were answered while the other client was ({during} answers)"
    );
    assert!(
        slowest < Duration::from_secs(1),
        "{kind:?} beside {flooders} flood(s): the slowest answer took {slowest:?}"
    );
}

/// The core reads and answers every connection on its one thread: a peer that sends without
/// pause does not keep it from another connection's client, whose requests are answered promptly
/// all the while. A pass reads a connection at most `READS_PER_PASS` times (with no such budget
/// the flood's socket is never found empty and the other client is never answered), and a pass
/// that stops on that budget still collects what else `epoll` has ready before the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_pauses_does_not_keep_the_core_from_others() {
    if !rerun_in_netns(
        "a_connection_that_never_pauses_does_not_keep_the_core_from_others",
        1500,
    ) {
        return;
    }
    let gw = gateway("").await;
    served_beside_floods(&gw, Kind::Tcp, 1).await;
    served_beside_floods(&gw, Kind::Tcp, 3).await;
}

/// Datagrams are read only when `epoll` says so (edge-triggered): a connection that always has
/// more than a pass reads must not keep the core from ever asking again, or the UDP listener,
/// read dry once, is never read again while the flood lasts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_is_served_while_connections_flood() {
    if !rerun_in_netns("udp_is_served_while_connections_flood", 1500) {
        return;
    }
    let gw = gateway("").await;
    served_beside_floods(&gw, Kind::Udp, 2).await;
}

/// A response that matches nothing: the gateway drops it and answers nothing.
const STRAY_RESPONSE: &str = "SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bKstray\r\n\
From: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>;tag=2\r\nCall-ID: stray\r\n\
CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";

/// Reads `s` until what it gave holds a complete 200 answer.
async fn read_200<R: tokio::io::AsyncRead + Unpin>(s: &mut R) {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !(got.windows(11).any(|w| w == b"SIP/2.0 200") && got.ends_with(b"\r\n\r\n")) {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("an answer within 5 s")
            .expect("read");
        assert!(n > 0, "closed before answering");
        got.extend_from_slice(&buf[..n]);
    }
}

/// Reads `s` until the gateway closes it: how long that took.
async fn time_to_eof<R: tokio::io::AsyncRead + Unpin>(s: &mut R) -> Duration {
    use tokio::io::AsyncReadExt;
    let started = tokio::time::Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => panic!("the gateway did not close in 10 s"),
        }
    }
}

/// A peer's last message and its FIN in one segment (`TCP_CORK`, then a half-close; the message
/// needs no answer): one `epoll` edge covers both, and the read that takes the message is short.
/// The gateway must still read on to the end of the stream and close at once, not hold the
/// connection (its descriptor, flow and place under the per-address limit) until the idle timer
/// (2 s in these tests). Over TCP, and over TLS without a close_notify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fin_that_comes_with_the_last_message_closes_the_connection_at_once() {
    use tokio::io::AsyncWriteExt;
    let gw = gateway("").await;
    let (mut over_tcp, mut over_tls): (Vec<Duration>, Vec<Duration>) = (Vec::new(), Vec::new());
    for i in 0..3 {
        let mut tcp = tokio::net::TcpStream::connect(gw.tcp.unwrap())
            .await
            .unwrap();
        let local = tcp.local_addr().unwrap();
        // Answered: the core has the connection.
        let hello = stream_options(&gw, "TCP", local, &format!("fin{i}{}", unique()));
        tcp.write_all(hello.as_bytes()).await.unwrap();
        read_200(&mut tcp).await;
        socket2::SockRef::from(&tcp).set_tcp_cork(true).unwrap();
        tcp.write_all(STRAY_RESPONSE.as_bytes()).await.unwrap();
        socket2::SockRef::from(&tcp)
            .shutdown(std::net::Shutdown::Write)
            .unwrap();
        over_tcp.push(time_to_eof(&mut tcp).await);

        let mut tls = tls_connect(&gw, &[&rustls::version::TLS13]).await.unwrap();
        let local = tls.get_ref().0.local_addr().unwrap();
        let hello = stream_options(&gw, "TLS", local, &format!("tlsfin{i}{}", unique()));
        tls.write_all(hello.as_bytes()).await.unwrap();
        tls.flush().await.unwrap();
        read_200(&mut tls).await;
        socket2::SockRef::from(tls.get_ref().0)
            .set_tcp_cork(true)
            .unwrap();
        tls.write_all(STRAY_RESPONSE.as_bytes()).await.unwrap();
        tls.flush().await.unwrap();
        // A FIN without a close_notify: the TCP stream ends under the TLS one.
        socket2::SockRef::from(tls.get_ref().0)
            .shutdown(std::net::Shutdown::Write)
            .unwrap();
        over_tls.push(time_to_eof(&mut tls.get_mut().0).await);
    }
    assert!(
        over_tcp
            .iter()
            .chain(&over_tls)
            .all(|t| *t < Duration::from_secs(1)),
        "closed after: TCP {over_tcp:?}, TLS {over_tls:?}"
    );
}

/// UDP listeners of both families read through the same batch: a datagram read on the IPv6
/// (dual-stack) listener right after one on the IPv4 listener is answered to its own source,
/// not to an address made of the previous datagram's (the kernel writes each source's length
/// back into the batch's headers, which then said "IPv4-sized" to the next IPv6 read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_datagram_keeps_its_source_across_listeners_of_both_families() {
    let text = "[log]\nlevel = \"warn\"\n[listen]\nudp = \"127.0.0.1:0\"\ntcp = \"\"\ntls = \"\"\n\
[[listen.extra]]\nname = \"v6\"\ntransport = \"udp\"\naddress = \"[::]:0\"\n\
[metrics]\nlisten = \"\"\n[proxy]\n[auth]\nenabled = false\n";
    let settings = sagw_gateway::Config::parse(text)
        .expect("parses")
        .validate()
        .expect("valid");
    let gw = sagw_gateway::start(settings).await.expect("gateway starts");
    let v4 = gw.udp.expect("udp listener").port();
    let v6 = gw
        .listeners
        .iter()
        .find(|l| l.name == "v6")
        .expect("the v6 listener")
        .addr
        .port();
    tokio::task::spawn_blocking(move || {
        let ask = |s: &std::net::UdpSocket, port: u16, tag: &str| {
            let me = s.local_addr().unwrap().port();
            let req = options(port, me, &format!("{tag}{}", unique()));
            s.send_to(req.as_bytes(), ("127.0.0.1", port)).unwrap();
        };
        let answered = |s: &std::net::UdpSocket| {
            s.set_read_timeout(Some(Duration::from_millis(800)))
                .unwrap();
            let mut buf = vec![0u8; 65_536];
            s.recv_from(&mut buf)
                .ok()
                .is_some_and(|(n, _)| buf[..n].starts_with(b"SIP/2.0 200"))
        };
        for round in 0..3 {
            // a, from 127.0.0.2, on the IPv6 listener; c, on the IPv4 one; then b, from
            // 127.0.0.3, on the IPv6 listener again, with a trap on a's address at b's port.
            let a = std::net::UdpSocket::bind("127.0.0.2:0").unwrap();
            ask(&a, v6, "a");
            assert!(answered(&a), "round {round}: a answered");
            let c = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            ask(&c, v4, "c");
            assert!(answered(&c), "round {round}: c answered");
            let b = std::net::UdpSocket::bind("127.0.0.3:0").unwrap();
            let trap =
                std::net::UdpSocket::bind(("127.0.0.2", b.local_addr().unwrap().port())).unwrap();
            ask(&b, v6, "b");
            let to_b = answered(&b);
            assert!(
                to_b,
                "round {round}: b's answer went elsewhere (to a's address at b's port: {})",
                answered(&trap)
            );
        }
    })
    .await
    .unwrap();
}
