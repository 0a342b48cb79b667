//! A load balancer's SIP OPTIONS health probe: answered here, without the authentication stage,
//! only from a configured prober address and only when it is addressed to the proxy itself; 503
//! while draining. Sans-IO.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Instant, SystemTime};

use sagw_proxy::{
    Action, ClientAuth, Edge, EdgeConfig, Flow, FlowId, Inbound, InboundContext, InboundVerdict,
    LocalAddrs, Now, Secret, Transport, build_response,
};
use sagw_sip::Message;

const PROBER: &str = "10.0.0.9";

/// Challenges everything, counting the requests it saw.
struct Challenger(Arc<AtomicUsize>);

impl ClientAuth for Challenger {
    fn inbound(&mut self, msg: &mut Message, _: &InboundContext<'_>) -> InboundVerdict {
        self.0.fetch_add(1, Ordering::SeqCst);
        let h = [(
            "Proxy-Authenticate",
            "Digest realm=\"x\", nonce=\"n\"".to_owned(),
        )];
        match build_response(msg, 407, "Proxy Authentication Required", Some("t"), &h) {
            Some(r) => InboundVerdict::Respond(r),
            None => InboundVerdict::Drop,
        }
    }
}

fn edge() -> (Edge, Arc<AtomicUsize>) {
    edge_with(|_| {})
}

fn edge_with(adjust: impl FnOnce(&mut EdgeConfig)) -> (Edge, Arc<AtomicUsize>) {
    let local = LocalAddrs {
        host: "192.0.2.10".into(),
        aliases: vec!["gw.example.com".into()],
        udp: Some(5060),
        tcp: Some(5060),
        tls: None,
        extra_ports: Vec::new(),
    };
    let mut cfg = EdgeConfig::new(local, Secret::new([5; 32]));
    cfg.probers = vec![PROBER.parse().unwrap()];
    adjust(&mut cfg);
    let seen = Arc::new(AtomicUsize::new(0));
    (
        Edge::with_auth(cfg, Box::new(Challenger(seen.clone()))),
        seen,
    )
}

fn now() -> Now {
    Now {
        mono: Instant::now(),
        wall: SystemTime::now(),
    }
}

/// Sends an OPTIONS from `ip` and returns the status of the answer.
fn probe(edge: &mut Edge, ip: &str, ruri: &str, route: Option<&str>, n: u32) -> u16 {
    let route = route.map(|r| format!("Route: {r}\r\n")).unwrap_or_default();
    let remote = std::net::SocketAddr::new(ip.parse().unwrap(), 5060);
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_owned()
    };
    let raw = format!(
        "OPTIONS {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {host}:5060;branch=z9hG4bKprobe{n}\r\nFrom: <sip:lb@{host}>;tag={n}\r\n\
To: <{ruri}>\r\nCall-ID: probe-{n}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n{route}Content-Length: 0\r\n\r\n"
    );
    let flow = Flow {
        id: FlowId(0),
        transport: Transport::Udp,
        remote,
    };
    let message = Message::parse(raw.as_bytes()).unwrap();
    edge.handle_inbound(Inbound { message, flow }, now());
    let mut status = None;
    while let Some(a) = edge.poll_action() {
        if let Action::Send { message, .. } = a
            && let Some(s) = message.status_code()
        {
            status = Some(s);
        }
    }
    status.expect("an answer")
}

#[test]
fn the_probers_options_to_the_proxy_is_answered_without_a_challenge() {
    let (mut e, seen) = edge();
    assert_eq!(probe(&mut e, PROBER, "sip:192.0.2.10:5060", None, 1), 200);
    assert_eq!(probe(&mut e, PROBER, "sip:gw.example.com", None, 2), 200);
    assert_eq!(seen.load(Ordering::SeqCst), 0, "the stage never saw them");
}

#[test]
fn anything_else_meets_the_authentication_stage() {
    let (mut e, seen) = edge();
    // Another address, the same probe.
    assert_eq!(probe(&mut e, "10.0.0.8", "sip:192.0.2.10", None, 1), 407);
    // The prober, but to a user, to another host, or with a Route.
    assert_eq!(probe(&mut e, PROBER, "sip:alice@192.0.2.10", None, 2), 407);
    assert_eq!(probe(&mut e, PROBER, "sip:198.51.100.7", None, 3), 407);
    assert_eq!(
        probe(
            &mut e,
            PROBER,
            "sip:192.0.2.10",
            Some("<sip:198.51.100.7;lr>"),
            4
        ),
        407
    );
    assert_eq!(seen.load(Ordering::SeqCst), 4);
}

#[test]
fn a_draining_proxy_answers_the_probe_503() {
    let (mut e, _) = edge();
    assert_eq!(e.intake(), sagw_proxy::Intake::Open);
    e.set_intake(sagw_proxy::Intake::Draining);
    assert_eq!(probe(&mut e, PROBER, "sip:192.0.2.10", None, 1), 503);
}

/// A probe opens no transaction, so probes (whose source address can be forged over UDP) cannot
/// fill `max_transactions` and turn clients away with 503.
#[test]
fn probes_hold_no_transaction() {
    let (mut e, _) = edge_with(|cfg| cfg.max_transactions = 3);
    for n in 1..=10 {
        assert_eq!(probe(&mut e, PROBER, "sip:192.0.2.10", None, n), 200, "{n}");
    }
    assert_eq!(e.stats().server_transactions, 0);
    assert_eq!(probe(&mut e, "10.0.0.8", "sip:192.0.2.10", None, 99), 407);
}

/// On a dual-stack listener (`[::]`) an IPv4 host is seen as `::ffff:a.b.c.d`: it is the same
/// host as the configured IPv4 address, for probers and trusted peers alike (before, neither
/// matched, and both were challenged as clients).
#[test]
fn an_ipv4_host_seen_on_a_dual_stack_listener_is_that_host() {
    let (mut e, seen) = edge_with(|cfg| cfg.trusted_peers = vec!["10.0.0.7".parse().unwrap()]);
    assert_eq!(
        probe(
            &mut e,
            &format!("::ffff:{PROBER}"),
            "sip:192.0.2.10",
            None,
            1
        ),
        200
    );
    assert_eq!(seen.load(Ordering::SeqCst), 0);
    // A trusted peer's request meets no challenge (it is routed, or refused, as a server's).
    let status = probe(&mut e, "::ffff:10.0.0.7", "sip:alice@192.0.2.10", None, 2);
    assert_ne!(status, 407);
    assert_eq!(
        seen.load(Ordering::SeqCst),
        0,
        "the stage saw the peer's request"
    );
}
