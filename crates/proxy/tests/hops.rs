//! Next hops without sockets, on a virtual clock: active OPTIONS probing (down after N failures in
//! a row, up on the first answer, fail fast while every hop is down) and host names in a Route
//! resolved by the driver on the core's request.

use std::time::{Duration, Instant, SystemTime};

use sagw_proxy::{
    Action, Edge, EdgeConfig, Flow, FlowId, HopHealth, Inbound, LocalAddrs, NextHop, Now,
    ProbeConfig, Report, ResolveRequest, Secret, Target, Transport, build_response,
};
use sagw_sip::Message;

const GW: &str = "192.0.2.10";

fn local() -> LocalAddrs {
    LocalAddrs {
        host: GW.into(),
        aliases: Vec::new(),
        udp: Some(5060),
        tcp: Some(5060),
        tls: Some(5061),
        extra_ports: Vec::new(),
    }
}

fn alice() -> Flow {
    Flow {
        id: FlowId(1),
        transport: Transport::Tcp,
        remote: "198.51.100.1:40001".parse().unwrap(),
    }
}

fn hop(addr: &str) -> NextHop {
    NextHop {
        transport: Transport::Udp,
        addr: addr.parse().unwrap(),
    }
}

const HOP1: &str = "203.0.113.1:5060";
const HOP2: &str = "203.0.113.2:5060";

#[derive(Debug)]
struct Sent {
    to: Target,
    msg: Message,
    token: Option<sagw_proxy::SendToken>,
}

struct H {
    edge: Edge,
    now: Now,
    reports: Vec<Report>,
    resolves: Vec<ResolveRequest>,
}

impl H {
    fn new(cfg: EdgeConfig) -> H {
        H {
            edge: Edge::new(cfg),
            now: Now {
                mono: Instant::now(),
                wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            },
            reports: Vec::new(),
            resolves: Vec::new(),
        }
    }

    /// Two UDP next hops probed every 5 s, down after 3 failures.
    fn probed() -> H {
        let mut cfg = EdgeConfig::new(local(), Secret::new([7; 32]));
        cfg.next_hops = vec![hop(HOP1), hop(HOP2)];
        cfg.probe = ProbeConfig {
            interval: Some(Duration::from_secs(5)),
            failures_down: 3,
        };
        cfg.retry_after = Duration::from_secs(30);
        H::new(cfg)
    }

    fn drain(&mut self) -> Vec<Sent> {
        let mut out = Vec::new();
        while let Some(a) = self.edge.poll_action() {
            match a {
                Action::Send { to, message, token } => out.push(Sent {
                    to,
                    msg: message,
                    token,
                }),
                Action::Report(r) => self.reports.push(r),
                Action::Resolve(r) => self.resolves.push(r),
            }
        }
        out
    }

    fn feed(&mut self, f: Flow, raw: &str) -> Vec<Sent> {
        let message = Message::parse(raw.as_bytes()).expect("test message parses");
        self.edge
            .handle_inbound(Inbound { message, flow: f }, self.now);
        self.drain()
    }

    fn answer(&mut self, from: NextHop, req: &Message, code: u16) -> Vec<Sent> {
        let resp = build_response(req, code, "X", Some("t"), &[]).unwrap();
        let flow = Flow {
            id: FlowId(0),
            transport: from.transport,
            remote: from.addr,
        };
        self.edge.handle_inbound(
            Inbound {
                message: resp,
                flow,
            },
            self.now,
        );
        self.drain()
    }

    /// Advance the clock to `at` firing every due timer on the way, as a driver does.
    fn run_until(&mut self, at: Instant) -> Vec<Sent> {
        // A driver's first call with the time starts the probes (the core has no clock).
        self.edge.handle_timeout(self.now);
        let mut out = self.drain();
        while let Some(t) = self.edge.poll_timeout().filter(|t| *t <= at) {
            let t = t.max(self.now.mono);
            self.now = self.now.after(t - self.now.mono);
            self.edge.handle_timeout(self.now);
            out.extend(self.drain());
        }
        self.now = self.now.after(at.saturating_duration_since(self.now.mono));
        out
    }

    fn advance(&mut self, d: Duration) -> Vec<Sent> {
        let at = self.now.mono + d;
        self.run_until(at)
    }

    fn health(&self, addr: &str) -> HopHealth {
        self.edge
            .hop_status(self.now.mono)
            .into_iter()
            .find(|s| s.hop.addr == addr.parse().unwrap())
            .unwrap()
            .health
    }
}

/// The probes sent, newest first per target (older ones in the list are UDP retransmissions of
/// probes that have since timed out).
fn probes(sent: &[Sent]) -> Vec<&Sent> {
    let mut out: Vec<&Sent> = Vec::new();
    for s in sent.iter().rev() {
        if s.msg.method() == Some("OPTIONS") && !out.iter().any(|o| o.to == s.to) {
            out.push(s);
        }
    }
    out.sort_by_key(|s| s.to.addr());
    out
}

fn message(branch: &str) -> String {
    format!(
        "MESSAGE sip:carol@example.com SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.5;branch={branch}\r\n\
Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a9\r\nTo: <sip:carol@example.com>\r\n\
Call-ID: {branch}\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n"
    )
}

#[test]
fn probes_mark_a_hop_down_after_three_misses_and_up_on_the_first_answer() {
    let mut h = H::probed();
    // The first call that tells the core the time starts the probes: one per target.
    let sent = h.advance(Duration::ZERO);
    let first = probes(&sent);
    assert_eq!(first.len(), 2, "{sent:?}");
    assert_eq!(first[0].to.addr(), HOP1.parse().unwrap());
    assert_eq!(first[1].to.addr(), HOP2.parse().unwrap());
    assert_eq!(first[0].msg.cseq().unwrap().method, "OPTIONS");
    // Hop 1 answers with a 404: any final answer but 503/408 shows a live SIP stack.
    let p1 = first[0].msg.clone();
    h.answer(hop(HOP1), &p1, 404);
    // Hop 2 never answers. Two missed probes are not an outage...
    for round in 1..=2 {
        let sent = h.advance(Duration::from_secs(5));
        let p = probes(&sent);
        assert!(
            p.iter().any(|s| s.to.addr() == HOP2.parse().unwrap()),
            "round {round}: {sent:?}"
        );
        for s in p.iter().filter(|s| s.to.addr() == HOP1.parse().unwrap()) {
            let m = s.msg.clone();
            h.answer(hop(HOP1), &m, 200);
        }
        assert_eq!(h.health(HOP2), HopHealth::Up, "after {round} misses");
    }
    // ...the third in a row is.
    let sent = h.advance(Duration::from_secs(5));
    assert_eq!(h.health(HOP2), HopHealth::Down);
    assert!(h.reports.iter().any(|r| matches!(r,
        Report::Hop(s) if s.hop == hop(HOP2) && s.health == HopHealth::Down && s.consecutive_failures == 3)));
    for s in probes(&sent) {
        let (m, to) = (s.msg.clone(), s.to);
        if to.addr() == HOP1.parse().unwrap() {
            h.answer(hop(HOP1), &m, 200);
        }
    }
    // Hop 2 is still probed while down, and its first answer brings it back.
    let sent = h.advance(Duration::from_secs(5));
    let back = probes(&sent)
        .into_iter()
        .find(|s| s.to.addr() == HOP2.parse().unwrap())
        .expect("a down hop is still probed")
        .msg
        .clone();
    h.answer(hop(HOP2), &back, 200);
    assert_eq!(h.health(HOP2), HopHealth::Up);
    // A 503 to a probe counts as a failure, like silence.
    let sent = h.advance(Duration::from_secs(5));
    let p2 = probes(&sent)
        .into_iter()
        .find(|s| s.to.addr() == HOP2.parse().unwrap())
        .unwrap()
        .msg
        .clone();
    h.answer(hop(HOP2), &p2, 503);
    let st = h.edge.hop_status(h.now.mono);
    assert_eq!(st[1].consecutive_failures, 1);
}

#[test]
fn with_every_hop_down_requests_fail_at_once_and_flow_again_after_one_good_probe() {
    let mut h = H::probed();
    // Nobody answers: after three probe intervals both hops are down.
    h.advance(Duration::ZERO);
    h.advance(Duration::from_secs(15));
    assert_eq!(h.health(HOP1), HopHealth::Down);
    assert_eq!(h.health(HOP2), HopHealth::Down);
    // A request now is answered 503 at once, nothing is sent to a next hop, and Retry-After is
    // the probe interval (the hops are found back within it), not the 30 s retry-after.
    let sent = h.feed(alice(), &message("z9hG4bKd1"));
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].to, Target::Flow(alice()));
    assert_eq!(sent[0].msg.status_code(), Some(503));
    assert_eq!(sent[0].msg.header("Retry-After"), Some("5"));
    // Hop 2 comes back: its next probe is answered, and the next request goes there.
    let sent = h.advance(Duration::from_secs(5));
    let p2 = probes(&sent)
        .into_iter()
        .find(|s| s.to.addr() == HOP2.parse().unwrap())
        .unwrap()
        .msg
        .clone();
    h.answer(hop(HOP2), &p2, 200);
    let sent = h.feed(alice(), &message("z9hG4bKd2"));
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].to.addr(), HOP2.parse().unwrap());
    assert_eq!(sent[0].msg.method(), Some("MESSAGE"));
}

#[test]
fn a_request_waiting_on_a_hop_that_goes_down_is_answered_then_not_at_its_timeout() {
    let mut cfg = EdgeConfig::new(local(), Secret::new([7; 32]));
    cfg.next_hops = vec![hop(HOP1)];
    cfg.probe = ProbeConfig {
        interval: Some(Duration::from_secs(1)),
        failures_down: 3,
    };
    let mut h = H::new(cfg);
    h.advance(Duration::ZERO);
    let sent = h.feed(alice(), &message("z9hG4bKw1"));
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].to.addr(), HOP1.parse().unwrap());
    // Three probes go unanswered (3 s): the request gets 503 then, not a 408 after 32 s.
    let sent = h.advance(Duration::from_secs(3));
    let answer: Vec<_> = sent
        .iter()
        .filter(|s| s.to == Target::Flow(alice()))
        .collect();
    assert_eq!(answer.len(), 1, "{sent:?}");
    assert_eq!(answer[0].msg.status_code(), Some(503));
}

#[test]
fn a_hop_refusing_connections_fails_its_probes() {
    let mut cfg = EdgeConfig::new(local(), Secret::new([7; 32]));
    cfg.next_hops = vec![NextHop {
        transport: Transport::Tcp,
        addr: HOP1.parse().unwrap(),
    }];
    cfg.probe = ProbeConfig {
        interval: Some(Duration::from_secs(2)),
        failures_down: 2,
    };
    let mut h = H::new(cfg);
    for (wait, after) in [(0, HopHealth::Up), (2, HopHealth::Down)] {
        let sent = h.advance(Duration::from_secs(wait));
        assert_eq!(sent.len(), 1, "{sent:?}");
        let token = sent[0]
            .token
            .clone()
            .expect("a probe's delivery failure is reported");
        h.edge.send_failed(&token, h.now);
        h.drain();
        assert_eq!(h.health(HOP1), after);
    }
}

fn routed(branch: &str, route: &str) -> String {
    format!(
        "MESSAGE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.1;branch={branch}\r\n\
Route: <{route}>\r\nMax-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a\r\n\
To: <sip:bob@example.com>;tag=b\r\nCall-ID: {branch}\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n"
    )
}

fn tcp(addr: &str) -> NextHop {
    NextHop {
        transport: Transport::Tcp,
        addr: addr.parse().unwrap(),
    }
}

#[test]
fn a_name_in_a_route_is_resolved_by_the_driver_and_failed_over() {
    let mut cfg = EdgeConfig::new(local(), Secret::new([7; 32]));
    cfg.next_hops = vec![tcp(HOP1)];
    cfg.client_routes = vec![sagw_proxy::RouteTarget::Host("10.1.1.2".parse().unwrap())];
    let mut h = H::new(cfg);
    // A client's in-dialog request whose route set names one front-end of the pool by name.
    let sent = h.feed(
        alice(),
        &routed("z9hG4bKn1", "sip:fe1.pool.example.com;transport=tcp;lr"),
    );
    assert!(
        sent.is_empty(),
        "nothing goes out before the name is resolved: {sent:?}"
    );
    let want = h.resolves.pop().expect("the core asks for the name");
    assert_eq!(want.host, "fe1.pool.example.com");
    assert_eq!(want.port, None);
    assert_eq!(want.transport, Some(Transport::Tcp));
    assert!(!want.secure);
    // A retransmission meanwhile is absorbed, not resolved again.
    let sent = h.feed(
        alice(),
        &routed("z9hG4bKn1", "sip:fe1.pool.example.com;transport=tcp;lr"),
    );
    assert!(sent.is_empty() && h.resolves.is_empty());
    // Two records: a host the client may not reach is left out, the next one is used; when it
    // fails, the request fails over to the one after.
    h.edge.resolved(
        want.id,
        vec![tcp("127.0.0.1:5060"), tcp("10.1.1.2:5060"), tcp(HOP1)],
        h.now,
    );
    let sent = h.drain();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].to.addr(), "10.1.1.2:5060".parse().unwrap());
    // Loose routing: the entry stays for the server it names to remove.
    assert_eq!(
        sent[0].msg.header("Route"),
        Some("<sip:fe1.pool.example.com;transport=tcp;lr>")
    );
    h.edge.send_failed(sent[0].token.as_ref().unwrap(), h.now);
    let sent = h.drain();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].to.addr(), HOP1.parse().unwrap());
}

#[test]
fn a_name_that_resolves_to_nothing_allowed_is_refused() {
    let mut cfg = EdgeConfig::new(local(), Secret::new([7; 32]));
    cfg.next_hops = vec![tcp(HOP1)];
    let mut h = H::new(cfg);
    h.feed(
        alice(),
        &routed("z9hG4bKn2", "sips:internal.example.com:5061;lr"),
    );
    let want = h.resolves.pop().unwrap();
    assert_eq!(want.port, Some(5061));
    assert_eq!(want.transport, Some(Transport::Tls));
    assert!(want.secure);
    // Loopback is not for clients: 403, as for a Route to that address.
    h.edge.resolved(want.id, vec![tcp("127.0.0.1:5061")], h.now);
    let sent = h.drain();
    assert_eq!(sent[0].msg.status_code(), Some(403));
    // A name that does not resolve: 503 with Retry-After.
    h.feed(alice(), &routed("z9hG4bKn3", "sip:gone.example.com;lr"));
    let want = h.resolves.pop().unwrap();
    h.edge.resolved(want.id, Vec::new(), h.now);
    let sent = h.drain();
    assert_eq!(sent[0].msg.status_code(), Some(503));
    assert!(sent[0].msg.header("Retry-After").is_some());
}

/// A client's Route set bounced off the next hop (its own entry popped, relayed back here): a
/// name below the entry naming this gateway is judged, once resolved, as a client's or another
/// server's Route would be, not as the next hop's own choice. Before, loopback was reached.
#[test]
fn a_name_below_our_entry_in_a_next_hops_request_goes_only_where_a_server_may() {
    let mut cfg = EdgeConfig::new(local(), Secret::new([7; 32]));
    cfg.next_hops = vec![tcp(HOP1)];
    let mut h = H::new(cfg);
    let from_hop = Flow {
        id: FlowId(9),
        transport: Transport::Tcp,
        remote: HOP1.parse().unwrap(),
    };
    let bounced = |branch: &str, method: &str| {
        routed(branch, "sip:internal.example.com:6379;transport=tcp;lr")
            .replace(
                "Route: <",
                &format!("Route: <sip:{GW}:5060;transport=tcp;lr>, <"),
            )
            .replace("MESSAGE", method)
    };
    h.feed(from_hop, &bounced("z9hG4bKnb1", "MESSAGE"));
    let want = h.resolves.pop().expect("the name is resolved");
    h.edge.resolved(want.id, vec![tcp("127.0.0.1:6379")], h.now);
    let sent = h.drain();
    assert!(
        !sent
            .iter()
            .any(|s| s.to.addr() == "127.0.0.1:6379".parse().unwrap()),
        "{sent:?}"
    );
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].msg.status_code(), Some(403), "{sent:?}");
    // A 2xx ACK the same way: dropped.
    assert!(h.feed(from_hop, &bounced("z9hG4bKnb2", "ACK")).is_empty());
    let want = h.resolves.pop().expect("the name is resolved");
    h.edge.resolved(want.id, vec![tcp("127.0.0.1:6379")], h.now);
    let sent = h.drain();
    assert!(sent.is_empty(), "{sent:?}");
    // The next hop's own Route to that name, not through us, is followed.
    h.feed(
        from_hop,
        &routed(
            "z9hG4bKnb3",
            "sip:internal.example.com:6379;transport=tcp;lr",
        ),
    );
    let want = h.resolves.pop().expect("the name is resolved");
    h.edge.resolved(want.id, vec![tcp("127.0.0.1:6379")], h.now);
    let sent = h.drain();
    assert_eq!(
        sent[0].to.addr(),
        "127.0.0.1:6379".parse().unwrap(),
        "{sent:?}"
    );
}

#[test]
fn a_2xx_ack_routed_by_name_waits_for_the_name() {
    let mut cfg = EdgeConfig::new(local(), Secret::new([7; 32]));
    cfg.next_hops = vec![tcp(HOP1)];
    let mut h = H::new(cfg);
    let ack = "ACK sip:bob@10.1.1.9 SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.1;branch=z9hG4bKa1\r\n\
Route: <sip:fe1.pool.example.com:5070;transport=tcp;lr>\r\nMax-Forwards: 70\r\n\
From: <sip:alice@example.com>;tag=a\r\nTo: <sip:bob@example.com>;tag=b\r\nCall-ID: a1\r\n\
CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n";
    assert!(h.feed(alice(), ack).is_empty());
    let want = h.resolves.pop().unwrap();
    assert_eq!(want.port, Some(5070));
    h.edge.resolved(want.id, vec![tcp(HOP1)], h.now);
    let sent = h.drain();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].to.addr(), HOP1.parse().unwrap());
    assert_eq!(sent[0].msg.method(), Some("ACK"));
    assert_eq!(sent[0].msg.header("Max-Forwards"), Some("69"));
}

#[test]
fn set_next_hops_keeps_the_health_of_targets_that_stay() {
    let mut h = H::probed();
    h.advance(Duration::ZERO);
    h.advance(Duration::from_secs(15));
    assert_eq!(h.health(HOP2), HopHealth::Down);
    // The name was resolved again: hop 1 is gone, hop 2 stays (down), a new target comes.
    let now = h.now;
    h.edge
        .set_next_hops(vec![hop(HOP2), hop("203.0.113.3:5060")], now);
    let st = h.edge.hop_status(h.now.mono);
    assert_eq!(st.len(), 2);
    assert_eq!(st[0].health, HopHealth::Down);
    assert_eq!(st[1].health, HopHealth::Up);
    // The new target is probed at once.
    let sent = h.advance(Duration::ZERO);
    assert!(
        probes(&sent)
            .iter()
            .any(|s| s.to.addr() == "203.0.113.3:5060".parse().unwrap()),
        "{sent:?}"
    );
    // Requests go to the new one (hop 2 is down) and it is a server, not a client.
    let sent = h.feed(alice(), &message("z9hG4bKs1"));
    assert_eq!(sent[0].to.addr(), "203.0.113.3:5060".parse().unwrap());
}

#[test]
fn a_lost_connection_fails_the_requests_waiting_on_it_at_once() {
    let mut cfg = EdgeConfig::new(local(), Secret::new([7; 32]));
    cfg.next_hops = vec![tcp(HOP1), tcp(HOP2)];
    let mut h = H::new(cfg);
    let sent = h.feed(alice(), &message("z9hG4bKl1"));
    assert_eq!(sent[0].to.addr(), HOP1.parse().unwrap());
    // The connection to hop 1 closes before any answer: fail over to hop 2 now.
    let now = h.now;
    h.edge
        .connection_lost(Transport::Tcp, HOP1.parse().unwrap(), now);
    let sent = h.drain();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].to.addr(), HOP2.parse().unwrap());
    // Hop 2 answers 100 first: a request that heard from its hop keeps waiting for it.
    let m = sent[0].msg.clone();
    h.answer(tcp(HOP2), &m, 100);
    h.edge
        .connection_lost(Transport::Tcp, HOP2.parse().unwrap(), now);
    assert!(h.drain().is_empty());
}

#[test]
fn a_resolution_that_never_comes_back_ends_in_503_not_a_stuck_transaction() {
    let mut cfg = EdgeConfig::new(local(), Secret::new([7; 32]));
    cfg.next_hops = vec![tcp(HOP1)];
    let mut h = H::new(cfg);
    h.feed(alice(), &routed("z9hG4bKn9", "sip:slow.example.com;lr"));
    let want = h.resolves.pop().unwrap();
    // 64×T1 later the request is answered; the late answer changes nothing.
    let sent = h.advance(Duration::from_secs(32));
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].msg.status_code(), Some(503));
    h.edge.resolved(want.id, vec![tcp(HOP1)], h.now);
    assert!(h.drain().is_empty());
    assert_eq!(
        h.edge.stats().server_transactions,
        0,
        "nothing left waiting"
    );
}

/// Each Route naming a host parks its request until the driver resolves the name: a signed-in
/// client naming ever new hosts (whose DNS never answers) parked without bound before. At most
/// 64 wait per flow (one more from that flow: 503), so one client cannot hold every place, and
/// 4 096 in all (one more: 503, and no resolution asked).
#[test]
fn requests_waiting_for_a_name_are_bounded() {
    let mut cfg = EdgeConfig::new(local(), Secret::new([7; 32]));
    cfg.next_hops = vec![tcp(HOP1)];
    let mut h = H::new(cfg);
    let client = |i: u64| Flow {
        id: FlowId(100 + i),
        transport: Transport::Tcp,
        remote: format!("198.51.100.{}:{}", 1 + i / 200, 40000 + i)
            .parse()
            .unwrap(),
    };
    let named = |n: usize| {
        routed(
            &format!("z9hG4bKpk{n}"),
            &format!("sip:n{n}.attacker.example;transport=tcp;lr"),
        )
    };
    for n in 0..64 {
        assert!(h.feed(client(0), &named(n)).is_empty(), "{n}");
    }
    let sent = h.feed(client(0), &named(64));
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].msg.status_code(), Some(503), "the 65th of one flow");
    assert_eq!(h.resolves.len(), 64);
    // Other flows go on waiting their turn, up to the total.
    let mut n = 100;
    for f in 1..64 {
        for _ in 0..64 {
            assert!(h.feed(client(f), &named(n)).is_empty(), "flow {f}");
            n += 1;
        }
    }
    assert_eq!(h.resolves.len(), 4096);
    let sent = h.feed(client(64), &named(n));
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].msg.status_code(), Some(503));
    assert_eq!(h.resolves.len(), 4096, "no resolution asked");
}

/// Over UDP every client comes in on its listener's flow id: the share is per source address,
/// so clients behind other addresses are not held back by one that fills its own.
#[test]
fn udp_clients_each_have_their_own_share_of_waiting_requests() {
    let mut cfg = EdgeConfig::new(local(), Secret::new([7; 32]));
    cfg.next_hops = vec![tcp(HOP1)];
    let mut h = H::new(cfg);
    let udp = |port: u16| Flow {
        id: FlowId(0),
        transport: Transport::Udp,
        remote: format!("198.51.100.7:{port}").parse().unwrap(),
    };
    for n in 0..64 {
        let m = routed(
            &format!("z9hG4bKu{n}"),
            &format!("sip:u{n}.attacker.example;transport=tcp;lr"),
        );
        assert!(h.feed(udp(5060), &m).is_empty(), "{n}");
    }
    let m = routed("z9hG4bKuo", "sip:fe1.pool.example.com;transport=tcp;lr");
    assert!(
        h.feed(udp(5062), &m).is_empty(),
        "another UDP client still waits its turn"
    );
    assert_eq!(h.resolves.len(), 65);
}

/// Past the fail-over timer: the INVITE as sent to hop 2.
fn failed_over_to_hop2(h: &mut H) -> Message {
    let sent = h.advance(Duration::from_millis(4100));
    sent.iter()
        .find(|s| s.to.addr() == HOP2.parse().unwrap() && s.msg.method() == Some("INVITE"))
        .unwrap_or_else(|| panic!("failed over: {sent:?}"))
        .msg
        .clone()
}

/// Two UDP next hops, and alice's INVITE (branch and Call-ID from `tag`).
fn two_hops_and_an_invite(tag: &str) -> (H, String) {
    let mut cfg = EdgeConfig::new(local(), Secret::new([7; 32]));
    cfg.next_hops = vec![hop(HOP1), hop(HOP2)];
    let invite = format!(
        "INVITE sip:carol@example.com SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.5;branch=z9hG4bK{tag}\r\n\
Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a9\r\nTo: <sip:carol@example.com>\r\n\
Call-ID: {tag}\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@10.0.0.5>\r\nContent-Length: 0\r\n\r\n"
    );
    (H::new(cfg), invite)
}

/// An INVITE the first next hop did not answer in time (fail-over) goes to the second; the first
/// answering late is dealt with here, not relayed beside the second's answers: its 180 gets a
/// CANCEL (the callee it reached stops ringing), its 487 an ACK, and the caller hears only the
/// second hop. Its 2xx, had it come, would go on (end to end). Before, the first hop's
/// transaction was forgotten at the fail-over: its 180 and its final answer reached the caller,
/// and its branch could not be cancelled.
#[test]
fn a_next_hop_given_up_for_the_next_one_is_cancelled_when_it_answers_late() {
    let (mut h, invite) = two_hops_and_an_invite("fo1");
    let invite = invite.as_str();
    // The request as sent to hop 1.
    let sent_to_hop1 = |sent: &[Sent]| {
        sent.iter()
            .find(|s| s.to.addr() == HOP1.parse().unwrap())
            .expect("to hop 1")
            .msg
            .clone()
    };
    let to_hop1 = sent_to_hop1(&h.feed(alice(), invite));
    let to_hop2 = failed_over_to_hop2(&mut h);
    let to_alice = |sent: &[Sent]| -> Vec<u16> {
        sent.iter()
            .filter(|s| s.to == Target::Flow(alice()))
            .filter_map(|s| s.msg.status_code())
            .collect()
    };
    let to_hop1_a = |sent: &[Sent], method: &str| {
        sent.iter()
            .any(|s| s.to.addr() == HOP1.parse().unwrap() && s.msg.method() == Some(method))
    };
    // Hop 1 rings late: cancelled, not relayed.
    let sent = h.answer(hop(HOP1), &to_hop1, 180);
    assert!(to_alice(&sent).is_empty(), "{sent:?}");
    assert!(to_hop1_a(&sent, "CANCEL"), "{sent:?}");
    // Its 487: ACKed there, not relayed.
    let sent = h.answer(hop(HOP1), &to_hop1, 487);
    assert!(to_alice(&sent).is_empty(), "{sent:?}");
    assert!(to_hop1_a(&sent, "ACK"), "{sent:?}");
    // Hop 2's answers are the caller's.
    let sent = h.answer(hop(HOP2), &to_hop2, 180);
    assert_eq!(to_alice(&sent), [180]);
    let sent = h.answer(hop(HOP2), &to_hop2, 486);
    assert_eq!(to_alice(&sent), [486]);

    // Another call, once hop 1 is tried again (retry_after): it answers 200 after the
    // fail-over. A 2xx goes on to the caller.
    h.advance(Duration::from_secs(40));
    let invite2 = invite
        .replace("z9hG4bKfo1", "z9hG4bKfo2")
        .replace("fo1", "fo2");
    let to_hop1 = sent_to_hop1(&h.feed(alice(), &invite2));
    h.advance(Duration::from_millis(4100));
    let sent = h.answer(hop(HOP1), &to_hop1, 200);
    assert_eq!(to_alice(&sent), [200]);
}

/// The other order: the hop given up stays silent, and the next hop's answer goes to the caller
/// at once. The branch given up was still counted among the request's open branches: the next
/// hop's 486 was held for it for good, and the transaction with it.
#[test]
fn the_next_hops_answer_is_not_held_for_the_hop_given_up() {
    let (mut h, invite) = two_hops_and_an_invite("fo3");
    h.feed(alice(), &invite);
    let to_hop2 = failed_over_to_hop2(&mut h);
    let sent = h.answer(hop(HOP2), &to_hop2, 486);
    let finals: Vec<u16> = sent
        .iter()
        .filter(|s| s.to == Target::Flow(alice()))
        .filter_map(|s| s.msg.status_code())
        .collect();
    assert_eq!(finals, [486], "{sent:?}");
    // Everything ends once the timers run out.
    h.advance(Duration::from_secs(70));
    assert_eq!(h.edge.stats().server_transactions, 0);
    assert_eq!(h.edge.stats().client_transactions, 0);
}
