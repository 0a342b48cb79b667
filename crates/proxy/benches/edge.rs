//! Cost of the proxy core per proxied transaction (no I/O): MESSAGE + 200 between two
//! registered clients, INVITE + 180 + 200 + ACK, and the two sipp workloads of issue 6
//! (`register_refresh_udp`, `call_udp_next_hop`; see `workload.rs`), which time only the proxy's
//! steps, not the building of the peers' messages.

use std::hint::black_box;
use std::time::{Instant, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use sagw_proxy::{
    Action, Edge, EdgeConfig, Flow, FlowId, Inbound, LocalAddrs, Now, Secret, Transport,
    build_response,
};
use sagw_sip::Message;

mod workload;

fn setup() -> (Edge, Flow, Flow, Now) {
    let local = LocalAddrs {
        host: "192.0.2.10".into(),
        aliases: vec![],
        udp: Some(5060),
        tcp: Some(5060),
        tls: Some(5061),
        extra_ports: Vec::new(),
    };
    let mut edge = Edge::new(EdgeConfig::new(local, Secret::new([4; 32])));
    let now = Now {
        mono: Instant::now(),
        wall: SystemTime::now(),
    };
    let a = Flow {
        id: FlowId(1),
        transport: Transport::Tcp,
        remote: "198.51.100.1:40001".parse().unwrap(),
    };
    let b = Flow {
        id: FlowId(2),
        transport: Transport::Tcp,
        remote: "198.51.100.2:40002".parse().unwrap(),
    };
    register(&mut edge, a, b, now, 1);
    (edge, a, b, now)
}

fn register(edge: &mut Edge, a: Flow, b: Flow, now: Now, cseq: u64) {
    for (f, u) in [(a, "alice"), (b, "bob")] {
        let reg = format!(
            "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.1;branch=z9hG4bKr{u}{cseq}\r\n\
From: <sip:{u}@example.com>;tag=1;epid=e{u}\r\nTo: <sip:{u}@example.com>\r\nCall-ID: r{u}\r\n\
CSeq: {cseq} REGISTER\r\nContact: <sip:{u}@10.0.0.1;transport=tcp>\r\nContent-Length: 0\r\n\r\n"
        );
        edge.handle_inbound(
            Inbound {
                message: Message::parse(reg.as_bytes()).unwrap(),
                flow: f,
            },
            now,
        );
    }
    while edge.poll_action().is_some() {}
}

/// Feed and return the last request sent.
fn feed(edge: &mut Edge, flow: Flow, m: Message, now: Now) -> Option<Message> {
    edge.handle_inbound(Inbound { message: m, flow }, now);
    let mut last = None;
    while let Some(a) = edge.poll_action() {
        if let Action::Send { message, .. } = a {
            last = Some(message);
        }
    }
    last
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("edge");
    let (mut edge, a, b, mut now) = setup();
    let mut n = 0u64;
    g.bench_function("message_200", |bench| {
        bench.iter(|| {
            n += 1;
            let req = format!(
                "MESSAGE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.1;branch=z9hG4bKm{n}\r\n\
Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a\r\nTo: <sip:bob@example.com>\r\nCall-ID: m{n}\r\n\
CSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
            );
            let fwd = feed(&mut edge, a, Message::parse(req.as_bytes()).unwrap(), now).unwrap();
            let ok = build_response(&fwd, 200, "OK", Some("b"), &[]).unwrap();
            black_box(feed(&mut edge, b, ok, now));
        })
    });
    g.bench_function("invite_180_200_ack", |bench| {
        bench.iter(|| {
            n += 1;
            let req = format!(
                "INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.1;branch=z9hG4bKi{n}\r\n\
Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a\r\nTo: <sip:bob@example.com>\r\nCall-ID: i{n}\r\n\
CSeq: 1 INVITE\r\nContact: <sip:alice@10.0.0.1;transport=tcp>\r\nContent-Length: 0\r\n\r\n"
            );
            let fwd = feed(&mut edge, a, Message::parse(req.as_bytes()).unwrap(), now).unwrap();
            let rr: Vec<(&str, String)> =
                fwd.header_all("Record-Route").map(|v| ("Record-Route", v.to_owned())).collect();
            let ringing = build_response(&fwd, 180, "Ringing", Some("b"), &rr).unwrap();
            feed(&mut edge, b, ringing, now);
            let ok = build_response(&fwd, 200, "OK", Some("b"), &rr).unwrap();
            let ok = feed(&mut edge, b, ok, now).unwrap();
            let routes: Vec<String> = ok.header_all("Record-Route").map(str::to_owned).collect();
            let ack = format!(
                "ACK sip:bob@10.0.0.1;transport=tcp SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.1;branch=z9hG4bKa{n}\r\n\
Route: {}\r\nRoute: {}\r\nMax-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a\r\nTo: <sip:bob@example.com>;tag=b\r\n\
Call-ID: i{n}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
                routes[1], routes[0]
            );
            black_box(feed(&mut edge, a, Message::parse(ack.as_bytes()).unwrap(), now));
            // Let the transactions end so the tables stay at a steady size.
            now = now.after(std::time::Duration::from_millis(1));
            if n.is_multiple_of(1000) {
                now = now.after(std::time::Duration::from_secs(40));
                edge.handle_timeout(now);
                while edge.poll_action().is_some() {}
                register(&mut edge, a, b, now, n);
            }
        })
    });
    g.finish();

    let mut g = c.benchmark_group("sipp");
    let mut reg = workload::RegisterLoad::new();
    g.bench_function("register_refresh_udp", |bench| {
        bench.iter_custom(|iters| {
            let mut timed = workload::Timed::default();
            for _ in 0..iters {
                black_box(reg.refresh(&mut timed));
            }
            timed.0
        })
    });
    drop(reg);
    let mut calls = workload::CallLoad::new();
    g.bench_function("call_udp_next_hop", |bench| {
        bench.iter_custom(|iters| {
            let mut timed = workload::Timed::default();
            for _ in 0..iters {
                calls.call(&mut timed);
            }
            timed.0
        })
    });
    g.finish();

    // What a connection that closes costs the core when many clients are registered (over UDP
    // here, the flows a closing connection has nothing to do with): anyone may open and close
    // connections without a byte of SIP.
    let mut g = c.benchmark_group("flows");
    let (mut edge, _, _, now) = setup();
    for i in 0..20_000u32 {
        let flow = Flow {
            id: FlowId(0),
            transport: Transport::Udp,
            remote: std::net::SocketAddr::from((
                [10, (i >> 16) as u8, (i >> 8) as u8, i as u8],
                5060,
            )),
        };
        let reg = format!(
            "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKu{i}\r\n\
From: <sip:u{i}@example.com>;tag=1\r\nTo: <sip:u{i}@example.com>\r\nCall-ID: u{i}\r\n\
CSeq: 1 REGISTER\r\nContact: <sip:u{i}@{}>\r\nContent-Length: 0\r\n\r\n",
            flow.remote
        );
        feed(
            &mut edge,
            flow,
            Message::parse(reg.as_bytes()).unwrap(),
            now,
        );
    }
    let mut id = 1_000u64;
    g.bench_function("close_with_20000_udp_bindings", |bench| {
        bench.iter(|| {
            id += 1;
            edge.flow_closed(FlowId(id), now);
            while edge.poll_action().is_some() {}
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
