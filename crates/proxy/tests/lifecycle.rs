//! The edge reconfigured while it runs (a configuration reload) and drained before it stops,
//! without sockets: transactions, bindings and dialogs go on through both.

use std::time::{Duration, Instant, SystemTime};

use sagw_proxy::{
    Action, Edge, EdgeConfig, Flow, FlowId, Inbound, Intake, LimitKind, LiveSettings, LocalAddrs,
    NextHop, Now, Report, Secret, Target, Transport, build_response,
};
use sagw_sip::Message;

fn local() -> LocalAddrs {
    LocalAddrs {
        host: "192.0.2.10".into(),
        aliases: Vec::new(),
        udp: Some(5060),
        tcp: Some(5060),
        tls: None,
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

fn bob() -> Flow {
    Flow {
        id: FlowId(2),
        transport: Transport::Tcp,
        remote: "198.51.100.2:40002".parse().unwrap(),
    }
}

fn hop(n: u8) -> NextHop {
    NextHop {
        transport: Transport::Tcp,
        addr: format!("203.0.113.{n}:5060").parse().unwrap(),
    }
}

struct H {
    edge: Edge,
    now: Now,
    reports: Vec<Report>,
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
        }
    }

    fn feed(
        &mut self,
        f: Flow,
        raw: &str,
    ) -> Vec<(Target, Message, Option<sagw_proxy::SendToken>)> {
        let message = Message::parse(raw.as_bytes()).expect("test message parses");
        self.feed_msg(f, message)
    }

    fn feed_msg(
        &mut self,
        f: Flow,
        message: Message,
    ) -> Vec<(Target, Message, Option<sagw_proxy::SendToken>)> {
        self.edge
            .handle_inbound(Inbound { message, flow: f }, self.now);
        self.drain()
    }

    fn drain(&mut self) -> Vec<(Target, Message, Option<sagw_proxy::SendToken>)> {
        let mut out = Vec::new();
        while let Some(a) = self.edge.poll_action() {
            match a {
                Action::Send { to, message, token } => out.push((to, message, token)),
                Action::Report(r) => self.reports.push(r),
                Action::Resolve(r) => panic!("no names in these tests: {r:?}"),
            }
        }
        out
    }
}

fn live(cfg: &EdgeConfig) -> LiveSettings {
    LiveSettings {
        domains: cfg.domains.clone(),
        next_hops: cfg.next_hops.clone(),
        trusted_peers: cfg.trusted_peers.clone(),
        client_routes: cfg.client_routes.clone(),
        timers: cfg.timers,
        retry_after: cfg.retry_after,
        max_transactions: cfg.max_transactions,
        max_transactions_per_client: cfg.max_transactions_per_client,
        registrar: cfg.registrar.clone(),
        probe: cfg.probe,
    }
}

fn message(branch: &str, to: &str, to_tag: &str) -> String {
    format!(
        "MESSAGE sip:{to}@example.com SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.5:5060;branch={branch}\r\n\
Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a1\r\nTo: <sip:{to}@example.com>{to_tag}\r\n\
Call-ID: {branch}\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n"
    )
}

#[test]
fn a_reconfigured_edge_keeps_its_transactions_and_the_down_state_of_the_hops_it_keeps() {
    let mut cfg = EdgeConfig::new(local(), Secret::new([5; 32]));
    cfg.next_hops = vec![hop(1), hop(2)];
    cfg.retry_after = Duration::from_secs(17);
    let mut h = H::new(cfg.clone());

    // Hop 1 fails: it is down for Retry-After, the request goes on to hop 2.
    let sent = h.feed(alice(), &message("z9hG4bKm1", "carol", ""));
    let token = sent[0].2.clone().expect("a token");
    h.edge.send_failed(&token, h.now);
    let sent = h.drain();
    assert_eq!(sent[0].0.addr(), hop(2).addr);
    let at_hop2 = sent[0].1.clone();

    // Reload: hop 2 goes away, hop 3 comes first, hop 1 stays (second now).
    cfg.next_hops = vec![hop(3), hop(1)];
    cfg.retry_after = Duration::from_secs(9);
    h.edge.reconfigure(live(&cfg));
    assert_eq!(h.edge.config().next_hops, cfg.next_hops);
    assert_eq!(h.edge.stats().server_transactions, 1, "nothing lost");

    // The transaction at hop 2 still completes.
    let ok = build_response(&at_hop2, 200, "OK", Some("c1"), &[]).expect("response");
    let from_hop2 = Flow {
        id: FlowId(9),
        transport: Transport::Tcp,
        remote: hop(2).addr,
    };
    let sent = h.feed_msg(from_hop2, ok);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].0, Target::Flow(alice()));
    assert_eq!(sent[0].1.status_code(), Some(200));

    // A new request goes to hop 3; when it fails, hop 1 is still known down (it moved in the
    // list with its state): 503 with the new Retry-After.
    let sent = h.feed(alice(), &message("z9hG4bKm2", "carol", ""));
    assert_eq!(sent[0].0.addr(), hop(3).addr);
    h.edge
        .send_failed(sent[0].2.as_ref().expect("a token"), h.now);
    let sent = h.drain();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].0, Target::Flow(alice()));
    assert_eq!(sent[0].1.status_code(), Some(503));
    assert_eq!(sent[0].1.header("Retry-After"), Some("9"));
}

fn register(
    h: &mut H,
    f: Flow,
    user: &str,
) -> Vec<(Target, Message, Option<sagw_proxy::SendToken>)> {
    h.feed(
        f,
        &format!(
            "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.5:5060;branch=z9hG4bKr{user}{n}\r\n\
Max-Forwards: 70\r\nFrom: <sip:{user}@example.com>;tag=r{user}\r\nTo: <sip:{user}@example.com>\r\n\
Call-ID: reg-{user}-{n}\r\nCSeq: 1 REGISTER\r\nContact: <sip:{user}@10.0.0.5:5060;transport=tcp>\r\n\
Expires: 3600\r\nContent-Length: 0\r\n\r\n",
            n = h.edge.stats().bindings
        ),
    )
}

#[test]
fn a_draining_edge_refuses_new_requests_and_lets_the_rest_finish() {
    let mut h = H::new(EdgeConfig::new(local(), Secret::new([5; 32])));
    assert_eq!(
        register(&mut h, alice(), "alice")[0].1.status_code(),
        Some(200)
    );
    assert_eq!(register(&mut h, bob(), "bob")[0].1.status_code(), Some(200));
    let sent = h.feed(alice(), &message("z9hG4bKd1", "bob", ""));
    assert_eq!(sent[0].0, Target::Flow(bob()));
    let at_bob = sent[0].1.clone();
    assert_eq!(h.edge.transactions_in_progress(), 1);

    h.edge.set_intake(Intake::Draining);
    assert_eq!(h.edge.intake(), Intake::Draining);
    // New out-of-dialog requests: 503 with Retry-After, counted.
    let sent = h.feed(alice(), &message("z9hG4bKd2", "bob", ""));
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, Target::Flow(alice()));
    assert_eq!(sent[0].1.status_code(), Some(503));
    assert_eq!(sent[0].1.header("Retry-After"), Some("30"));
    assert!(
        h.reports
            .iter()
            .any(|r| matches!(r, Report::Limit(LimitKind::Draining)))
    );
    assert_eq!(
        register(&mut h, alice(), "alice")[0].1.status_code(),
        Some(503)
    );
    assert_eq!(h.edge.stats().bindings, 2, "bindings stay");
    // A retransmission of the request in progress is absorbed by its transaction, not refused.
    assert!(h.feed(alice(), &message("z9hG4bKd1", "bob", "")).is_empty());
    // The transaction in progress completes.
    let ok = build_response(&at_bob, 200, "OK", Some("b1"), &[]).expect("response");
    let sent = h.feed_msg(bob(), ok);
    assert_eq!(sent[0].0, Target::Flow(alice()));
    assert_eq!(sent[0].1.status_code(), Some(200));
    assert_eq!(h.edge.transactions_in_progress(), 0);
    // In-dialog requests go on.
    let sent = h.feed(alice(), &message("z9hG4bKd3", "bob", ";tag=b1"));
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].0, Target::Flow(bob()));
    assert_eq!(sent[0].1.method(), Some("MESSAGE"));

    h.edge.set_intake(Intake::Open);
    let sent = h.feed(alice(), &message("z9hG4bKd4", "bob", ""));
    assert_eq!(sent[0].0, Target::Flow(bob()), "open again");
}
