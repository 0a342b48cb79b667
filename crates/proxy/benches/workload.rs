//! The two sipp workloads of issue 6, modelled without I/O (shared by `benches/edge.rs` and
//! `examples/perf.rs`): the messages are exactly what `benches/sipp/scenarios/*.xml` send, the
//! configuration is `benches/sipp/sagw.toml` (UDP only on 127.0.0.1:15062, registrar mode, one
//! UDP next hop), and time advances at a steady rate so that the transaction tables and timer
//! heap hold what they hold in a long run (every UDP transaction lingers 64*T1 = 32 s).
//!
//! Only [`RegisterLoad::step`] and [`CallLoad::step`] are the proxy's work: building the peers'
//! messages (sipp's side) happens outside them, so the benches time and count only the steps.
#![allow(dead_code)] // each user of this file uses part of it

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use sagw_proxy::{
    Action, Edge, EdgeConfig, Flow, FlowId, Inbound, LocalAddrs, NextHop, Now, Secret, Transport,
};
use sagw_sip::Message;

/// Distinct users of the REGISTER workload (sipp's `-inf users.csv`).
pub const USERS: u64 = 10_000;
/// The gateway's one UDP socket: every UDP peer shares it (crates/gateway/src/driver/core_thread.rs).
const UDP_FLOW: FlowId = FlowId(0);

fn now0() -> Now {
    Now {
        mono: Instant::now(),
        wall: SystemTime::now(),
    }
}

fn edge() -> Edge {
    let local = LocalAddrs {
        host: "127.0.0.1".into(),
        aliases: vec![],
        udp: Some(15062),
        tcp: None,
        tls: None,
        extra_ports: Vec::new(),
    };
    let mut cfg = EdgeConfig::new(local, Secret::new([4; 32]));
    // sipp is one address and, without authentication, one client: its 64 000 lingering
    // transactions are all its own.
    cfg.max_transactions_per_client = cfg.max_transactions;
    cfg.next_hops = vec![NextHop {
        transport: Transport::Udp,
        addr: "127.0.0.1:15082".parse().unwrap(),
    }];
    Edge::new(cfg)
}

fn udp(remote: &str) -> Flow {
    Flow {
        id: UDP_FLOW,
        transport: Transport::Udp,
        remote: remote.parse::<SocketAddr>().unwrap(),
    }
}

/// Hand `m` to the proxy, run due timers as the driver does, drain the actions; return the
/// messages sent. This is the measured unit.
pub fn feed(edge: &mut Edge, flow: Flow, m: Message, now: Now) -> Vec<Message> {
    edge.handle_inbound(Inbound { message: m, flow }, now);
    if edge.poll_timeout().is_some_and(|t| t <= now.mono) {
        edge.handle_timeout(now);
    }
    let mut sent = Vec::new();
    while let Some(a) = edge.poll_action() {
        if let Action::Send { message, .. } = a {
            sent.push(message);
        }
    }
    sent
}

/// Steady-state REGISTER refreshes: 10 000 users already registered, 2000 REGISTER/s, each a
/// new Call-ID with CSeq 1 (sipp's register.xml).
pub struct RegisterLoad {
    pub edge: Edge,
    pub now: Now,
    flow: Flow,
    n: u64,
}

impl RegisterLoad {
    /// Every user registered once, then 32 s of refreshes so that the lingering server
    /// transactions reach their steady count.
    pub fn new() -> RegisterLoad {
        let mut load = RegisterLoad {
            edge: edge(),
            now: now0(),
            flow: udp("127.0.0.1:15092"),
            n: 0,
        };
        for _ in 0..USERS + 64_000 {
            load.refresh(&mut Unmetered);
        }
        assert_eq!(load.edge.registrar().len(), USERS as usize);
        load
    }

    /// One REGISTER of the next user; `meter` wraps the proxy's step. Returns the 200.
    pub fn refresh(&mut self, meter: &mut impl Meter) -> Vec<Message> {
        let m = self.next_message();
        let (edge, flow, now) = (&mut self.edge, self.flow, self.now);
        meter.run(|| feed(edge, flow, m, now))
    }

    /// The next user's REGISTER (sipp's side: not measured).
    fn next_message(&mut self) -> Message {
        self.n += 1;
        let n = self.n;
        let user = n % USERS;
        let reg = format!(
            "REGISTER sip:127.0.0.1:15062 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:15092;branch=z9hG4bK-1234-{n}-0\r\n\
Max-Forwards: 70\r\n\
From: <sip:user{user:05}@127.0.0.1:15062>;tag=1234R{n}\r\n\
To: <sip:user{user:05}@127.0.0.1:15062>\r\n\
Call-ID: {n}-1234@127.0.0.1\r\n\
CSeq: 1 REGISTER\r\n\
Contact: <sip:user{user:05}@127.0.0.1:15092;transport=UDP>\r\n\
Expires: 3600\r\n\
User-Agent: sipp-bench\r\n\
Content-Length: 0\r\n\r\n"
        );
        // 2000 REGISTER/s.
        self.now = self.now.after(Duration::from_micros(500));
        Message::parse(reg.as_bytes()).unwrap()
    }
}

impl Default for RegisterLoad {
    fn default() -> Self {
        RegisterLoad::new()
    }
}

const SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

/// Wraps each measured proxy step: nothing, a timer, ...
pub trait Meter {
    /// Run one step.
    fn run(&mut self, step: impl FnOnce() -> Vec<Message>) -> Vec<Message>;
}

/// Measures nothing.
pub struct Unmetered;

impl Meter for Unmetered {
    fn run(&mut self, step: impl FnOnce() -> Vec<Message>) -> Vec<Message> {
        step()
    }
}

/// Adds up the wall time of the steps.
#[derive(Default)]
pub struct Timed(pub Duration);

impl Meter for Timed {
    fn run(&mut self, step: impl FnOnce() -> Vec<Message>) -> Vec<Message> {
        let t = Instant::now();
        let out = step();
        self.0 += t.elapsed();
        out
    }
}

/// Steady-state calls: INVITE from the sipp UAC (UDP) to the never-registered callee, proxied to
/// the next hop (the sipp UAS), which answers 100, 180 and 200; ACK; BYE; 200. 500 calls/s, so
/// about 16 000 calls' transactions linger at any time.
pub struct CallLoad {
    pub edge: Edge,
    pub now: Now,
    caller: Flow,
    hop: Flow,
    n: u64,
}

fn only(mut sent: Vec<Message>, what: &str) -> Message {
    assert_eq!(sent.len(), 1, "{what}: {sent:?}");
    sent.pop().unwrap()
}

/// The next hop's answer to `req` (sipp's call_uas.xml: Via, From, To with its tag, Call-ID,
/// CSeq and Record-Route copied, then its Contact).
fn uas_response(req: &Message, code: u16, reason: &str, tag: Option<&str>, sdp: bool) -> Message {
    let mut s = format!("SIP/2.0 {code} {reason}\r\n");
    for v in req.header_all("Via") {
        s.push_str(&format!("Via: {v}\r\n"));
    }
    s.push_str(&format!("From: {}\r\n", req.header("From").unwrap()));
    match tag {
        Some(t) => s.push_str(&format!("To: {};tag={t}\r\n", req.header("To").unwrap())),
        None => s.push_str(&format!("To: {}\r\n", req.header("To").unwrap())),
    }
    s.push_str(&format!("Call-ID: {}\r\n", req.call_id().unwrap()));
    s.push_str(&format!("CSeq: {}\r\n", req.header("CSeq").unwrap()));
    if code > 100 && req.method() == Some("INVITE") {
        for v in req.header_all("Record-Route") {
            s.push_str(&format!("Record-Route: {v}\r\n"));
        }
        s.push_str("Contact: <sip:127.0.0.1:15082;transport=UDP>\r\n");
    }
    if sdp {
        s.push_str(&format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{SDP}",
            SDP.len()
        ));
    } else {
        s.push_str("Content-Length: 0\r\n\r\n");
    }
    Message::parse(s.as_bytes()).unwrap()
}

impl CallLoad {
    /// 32 s of calls first, so that the lingering transactions reach their steady count.
    pub fn new() -> CallLoad {
        let mut load = CallLoad {
            edge: edge(),
            now: now0(),
            caller: udp("127.0.0.1:15092"),
            hop: udp("127.0.0.1:15082"),
            n: 0,
        };
        for _ in 0..16_000 {
            load.call(&mut Unmetered);
        }
        load
    }

    /// Run one call; `meter` wraps every proxy step.
    pub fn call(&mut self, meter: &mut impl Meter) {
        self.n += 1;
        let n = self.n;
        // 500 calls/s.
        self.now = self.now.after(Duration::from_millis(2));
        let now = self.now;
        let (caller, hop) = (self.caller, self.hop);
        let edge = &mut self.edge;
        let from = format!("<sip:user{:05}@127.0.0.1:15062>;tag=1234C{n}", n % USERS);
        let contact = format!("<sip:user{:05}@127.0.0.1:15092;transport=UDP>", n % USERS);

        let invite = Message::parse(
            format!(
                "INVITE sip:callee@127.0.0.1:15062 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:15092;branch=z9hG4bK-1234-{n}-0\r\n\
Max-Forwards: 70\r\n\
From: {from}\r\n\
To: <sip:callee@127.0.0.1:15062>\r\n\
Call-ID: {n}-1234@127.0.0.1\r\n\
CSeq: 1 INVITE\r\n\
Contact: {contact}\r\n\
User-Agent: sipp-bench\r\n\
Content-Type: application/sdp\r\n\
Content-Length: {len}\r\n\r\n{SDP}",
                len = SDP.len()
            )
            .as_bytes(),
        )
        .unwrap();
        let sent = meter.run(|| feed(edge, caller, invite, now));
        // 100 Trying to the caller, the INVITE to the next hop.
        assert_eq!(sent.len(), 2, "INVITE: {sent:?}");
        let fwd = sent.into_iter().last().unwrap();
        let tag = format!("1234U{n}");
        for (code, reason, sdp) in [(100, "Trying", false), (180, "Ringing", false)] {
            let r = uas_response(&fwd, code, reason, (code > 100).then_some(&*tag), sdp);
            let sent = meter.run(|| feed(edge, hop, r, now));
            assert_eq!(sent.len(), usize::from(code > 100), "{code}: {sent:?}");
        }
        let ok = uas_response(&fwd, 200, "OK", Some(&tag), true);
        let ok = only(meter.run(|| feed(edge, hop, ok, now)), "200");
        // The caller's route set: the Record-Route entries reversed (RFC 3261 §12.1.2).
        let mut routes: Vec<String> = ok.header_all("Record-Route").map(str::to_owned).collect();
        routes.reverse();
        let in_dialog = |method: &str, cseq: u32, branch: &str| {
            let mut s = format!("{method} sip:127.0.0.1:15082;transport=UDP SIP/2.0\r\n");
            s.push_str(&format!(
                "Via: SIP/2.0/UDP 127.0.0.1:15092;branch=z9hG4bK-1234-{n}-{branch}\r\n"
            ));
            for r in &routes {
                s.push_str(&format!("Route: {r}\r\n"));
            }
            s.push_str(&format!(
                "Max-Forwards: 70\r\nFrom: {from}\r\nTo: <sip:callee@127.0.0.1:15062>;tag={tag}\r\n\
Call-ID: {n}-1234@127.0.0.1\r\nCSeq: {cseq} {method}\r\nContact: {contact}\r\n\
User-Agent: sipp-bench\r\nContent-Length: 0\r\n\r\n"
            ));
            Message::parse(s.as_bytes()).unwrap()
        };
        let ack = in_dialog("ACK", 1, "5");
        only(meter.run(|| feed(edge, caller, ack, now)), "ACK");
        let bye = in_dialog("BYE", 2, "7");
        let bye = only(meter.run(|| feed(edge, caller, bye, now)), "BYE");
        let ok = uas_response(&bye, 200, "OK", None, false);
        only(meter.run(|| feed(edge, hop, ok, now)), "BYE 200");
    }
}

impl Default for CallLoad {
    fn default() -> Self {
        CallLoad::new()
    }
}
