//! Connection limits over real sockets (issue 12, point 7): one source address cannot take every
//! connection slot.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use sagw_gateway::{Config, Running};
use support::{Msg, scrape, unique};
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

/// The value of one series on the metrics page (0 when absent).
fn series(page: &str, name: &str) -> u64 {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0)
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
