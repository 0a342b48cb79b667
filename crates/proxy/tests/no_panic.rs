//! Whatever parses must not panic the proxy core: the RFC 4475 torture messages and random
//! mutations of valid requests, fed as requests and responses from clients and from a next hop.

use std::time::{Duration, Instant, SystemTime};

use sagw_proxy::{
    Action, Edge, EdgeConfig, Flow, FlowId, Inbound, LocalAddrs, NextHop, Now, Secret, Transport,
};
use sagw_sip::Message;

fn edge() -> Edge {
    let mut cfg = EdgeConfig::new(
        LocalAddrs {
            host: "192.0.2.10".into(),
            aliases: vec![],
            udp: Some(5060),
            tcp: Some(5060),
            tls: Some(5061),
            extra_ports: Vec::new(),
        },
        Secret::new([1; 32]),
    );
    cfg.next_hops = vec![NextHop {
        transport: Transport::Udp,
        addr: "203.0.113.1:5060".parse().unwrap(),
    }];
    Edge::new(cfg)
}

fn flows() -> [Flow; 3] {
    [
        Flow {
            id: FlowId(0),
            transport: Transport::Udp,
            remote: "198.51.100.1:5060".parse().unwrap(),
        },
        Flow {
            id: FlowId(7),
            transport: Transport::Tcp,
            remote: "[2001:db8::1]:40000".parse().unwrap(),
        },
        Flow {
            id: FlowId(0),
            transport: Transport::Udp,
            remote: "203.0.113.1:5060".parse().unwrap(),
        },
    ]
}

/// Feed, then echo every forwarded request back as a response and drive the timers.
fn exercise(e: &mut Edge, msg: Message, now: &mut Now) -> usize {
    let mut sends = 0;
    for f in flows() {
        e.handle_inbound(
            Inbound {
                message: msg.clone(),
                flow: f,
            },
            *now,
        );
        let mut echo = Vec::new();
        while let Some(a) = e.poll_action() {
            if let Action::Send { message, token, .. } = a {
                sends += 1;
                if message.is_request() {
                    if let Some(r) =
                        sagw_proxy::build_response(&message, 486, "Busy", Some("x"), &[])
                    {
                        echo.push(r);
                    }
                    if let Some(t) = token {
                        e.send_failed(&t, *now);
                    }
                }
            }
        }
        for r in echo {
            e.handle_inbound(
                Inbound {
                    message: r,
                    flow: f,
                },
                *now,
            );
        }
    }
    *now = now.after(Duration::from_secs(3));
    e.handle_timeout(*now);
    while e.poll_action().is_some() {}
    sends
}

#[test]
fn rfc4475_torture_messages() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../sip/tests/data/rfc4475");
    let mut e = edge();
    let mut now = Now {
        mono: Instant::now(),
        wall: SystemTime::now(),
    };
    let mut parsed = 0;
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|d| d.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let bytes = std::fs::read(&path).unwrap();
        if let Ok(m) = Message::parse(&bytes) {
            parsed += 1;
            exercise(&mut e, m, &mut now);
        }
    }
    assert!(
        parsed > 10,
        "the corpus was found and mostly parses ({parsed})"
    );
}

#[test]
fn random_mutations_of_a_call() {
    let base = b"INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK77;rport\r\n\
Route: <sip:192.0.2.10:5060;lr>, <sip:203.0.113.1;lr>\r\nMax-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=1\r\n\
To: <sip:bob@example.com>\r\nCall-ID: c@h\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@10.0.0.1>\r\nContent-Length: 0\r\n\r\n";
    let resp = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKsgwabc.123;rport;sgf=t1x0a000001x50.00\r\n\
Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK77\r\nFrom: <sip:alice@example.com>;tag=1\r\n\
To: <sip:bob@example.com>;tag=2\r\nCall-ID: c@h\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
    let alphabet = b" ;:,<>@=\"\r\n0123456789zZ.[]";
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut e = edge();
    let mut now = Now {
        mono: Instant::now(),
        wall: SystemTime::now(),
    };
    let mut accepted = 0;
    for i in 0..3000 {
        let mut m = if i % 2 == 0 {
            base.to_vec()
        } else {
            resp.to_vec()
        };
        for _ in 0..(1 + next() % 4) {
            let pos = (next() as usize) % m.len();
            let c = alphabet[(next() as usize) % alphabet.len()];
            match next() % 3 {
                0 => m[pos] = c,
                1 => m.insert(pos, c),
                _ => {
                    m.remove(pos);
                }
            }
        }
        if let Ok(msg) = Message::parse(&m) {
            accepted += 1;
            exercise(&mut e, msg, &mut now);
        }
    }
    assert!(accepted > 300, "mutations mostly still parse ({accepted})");
}
