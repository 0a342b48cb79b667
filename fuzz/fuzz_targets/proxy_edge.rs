#![no_main]
//! The proxy core never panics: arbitrary bytes that parse as SIP are fed to an `Edge` (registrar
//! mode with one next hop) from a client flow and from the next hop, with time moving on, and every
//! action it produces is drained.
use std::time::{Duration, Instant, SystemTime};

use libfuzzer_sys::fuzz_target;
use sagw_proxy::{
    Edge, EdgeConfig, Flow, FlowId, Inbound, LocalAddrs, NextHop, Now, Secret, Transport,
};
use sagw_sip::Message;

fuzz_target!(|data: &[u8]| {
    let local = LocalAddrs {
        host: "192.0.2.1".into(),
        aliases: Vec::new(),
        udp: Some(5060),
        tcp: Some(5060),
        tls: Some(5061),
        extra_ports: Vec::new(),
    };
    let mut cfg = EdgeConfig::new(local, Secret::new([3; 32]));
    let hop: std::net::SocketAddr = "198.51.100.10:5060".parse().expect("addr");
    cfg.next_hops = vec![NextHop { transport: Transport::Udp, addr: hop }];
    let mut edge = Edge::new(cfg);
    let mut now = Now { mono: Instant::now(), wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_603_600) };
    let client = Flow { id: FlowId(1), transport: Transport::Tcp, remote: "203.0.113.9:40000".parse().expect("addr") };
    let server = Flow { id: FlowId(0), transport: Transport::Udp, remote: hop };
    // Several messages separated by a marker byte, alternating sources.
    for (i, chunk) in data.split(|b| *b == 0xFF).enumerate() {
        if let Ok(m) = Message::parse(chunk) {
            let flow = if i % 2 == 0 { client } else { server };
            edge.handle_inbound(Inbound { message: m, flow }, now);
        }
        while edge.poll_action().is_some() {}
        now = now.after(Duration::from_millis(700));
        edge.handle_timeout(now);
        while edge.poll_action().is_some() {}
    }
});
