//! The edge state machine without sockets: whole call flows on a virtual clock.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use sagw_proxy::{
    Action, Answering, ClientAuth, ClientKey, DropReason, Edge, EdgeConfig, Flow, FlowId, Inbound,
    InboundContext, InboundVerdict, LimitKind, LiveSettings, LocalAddrs, Mode, NextHop, Now,
    OutboundContext, OutboundKind, OutboundVerdict, Report, SaEndpoint, Secret, Target, Transport,
    build_response,
};
use sagw_sip::Message;

const GW: &str = "192.0.2.10";

fn local() -> LocalAddrs {
    LocalAddrs {
        host: GW.into(),
        aliases: vec!["gw.example.com".into()],
        udp: Some(5060),
        tcp: Some(5060),
        tls: Some(5061),
        extra_ports: Vec::new(),
    }
}

fn flow(id: u64, t: Transport, remote: &str) -> Flow {
    Flow {
        id: FlowId(id),
        transport: t,
        remote: remote.parse().unwrap(),
    }
}

fn alice() -> Flow {
    flow(1, Transport::Tcp, "198.51.100.1:40001")
}
fn bob() -> Flow {
    flow(0, Transport::Udp, "198.51.100.2:40002")
}

struct H {
    edge: Edge,
    now: Now,
    reports: Vec<Report>,
}

#[derive(Debug)]
struct Sent {
    to: Target,
    msg: Message,
    token: Option<sagw_proxy::SendToken>,
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

    fn registrar() -> H {
        H::new(EdgeConfig::new(local(), Secret::new([3; 32])))
    }

    fn feed(&mut self, f: Flow, raw: &str) -> Vec<Sent> {
        let message = Message::parse(raw.as_bytes()).expect("test message parses");
        self.feed_msg(f, message)
    }

    fn feed_msg(&mut self, f: Flow, message: Message) -> Vec<Sent> {
        self.edge
            .handle_inbound(Inbound { message, flow: f }, self.now);
        self.drain()
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
                Action::Resolve(r) => panic!("no names in these tests: {r:?}"),
            }
        }
        out
    }

    fn reports(&mut self) -> Vec<Report> {
        self.drain();
        std::mem::take(&mut self.reports)
    }

    /// Advance the clock to `d` later, firing due timers.
    fn advance(&mut self, d: Duration) -> Vec<Sent> {
        let end = self.now.after(d);
        let mut out = Vec::new();
        while let Some(t) = self.edge.poll_timeout() {
            if t > end.mono {
                break;
            }
            self.now = Now {
                mono: t,
                wall: self.now.wall + (t - self.now.mono),
            };
            self.edge.handle_timeout(self.now);
            out.extend(self.drain());
        }
        self.now = end;
        out
    }

    fn register(&mut self, f: Flow, user: &str, epid: &str) {
        let t = f.transport.via_token();
        let sent = self.feed(
            f,
            &format!(
                "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/{t} 10.0.0.5:5060;branch=z9hG4bKr{user};rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:{user}@example.com>;tag=r{user};epid={epid}\r\nTo: <sip:{user}@example.com>\r\n\
Call-ID: reg-{user}\r\nCSeq: 1 REGISTER\r\nContact: <sip:{user}@10.0.0.5:5060;transport={}>\r\nExpires: 3600\r\n\
Content-Length: 0\r\n\r\n",
                f.transport.uri_param()
            ),
        );
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].msg.status_code(), Some(200));
        assert_eq!(sent[0].to, Target::Flow(f));
    }
}

fn invite(branch: &str, to_user: &str, mf: u32) -> String {
    format!(
        "INVITE sip:{to_user}@example.com SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.5:5060;branch={branch}\r\n\
Max-Forwards: {mf}\r\nFrom: \"Alice\" <sip:alice@example.com>;tag=a1;epid=ea\r\nTo: <sip:{to_user}@example.com>\r\n\
Call-ID: call-1\r\nCSeq: 10 INVITE\r\nContact: <sip:alice@10.0.0.5:5060;transport=tcp>\r\n\
Content-Type: application/sdp\r\nContent-Length: 4\r\n\r\nv=0\n"
    )
}

/// The callee's response to a forwarded request: Via and Record-Route copied, To tag added.
fn answer(req: &Message, code: u16, reason: &str) -> Message {
    let mut extra = vec![("Contact", "<sip:bob@10.0.0.6:5060>".to_owned())];
    for rr in req.header_all("Record-Route") {
        extra.push(("Record-Route", rr.to_owned()));
    }
    build_response(req, code, reason, Some("b1"), &extra).unwrap()
}

fn vias(m: &Message) -> Vec<String> {
    m.header_all("Via").map(str::to_owned).collect()
}

#[test]
fn call_between_two_registered_clients() {
    let mut h = H::registrar();
    h.register(alice(), "alice", "ea");
    h.register(bob(), "bob", "eb");
    assert_eq!(h.edge.stats().bindings, 2);
    let b = h.edge.registrar().lookup("sip:bob@example.com", h.now.mono);
    assert_eq!(b[0].info.epid.as_deref(), Some("eb"));

    // INVITE: 100 Trying to alice, the INVITE over bob's UDP flow.
    let sent = h.feed(alice(), &invite("z9hG4bKinv1", "bob", 70));
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[0].to, Target::Flow(alice()));
    assert_eq!(sent[0].msg.status_code(), Some(100));
    let fwd = &sent[1];
    assert_eq!(fwd.to, Target::Flow(bob()));
    let v = vias(&fwd.msg);
    assert_eq!(v.len(), 2);
    assert!(
        v[0].starts_with(&format!("SIP/2.0/UDP {GW}:5060;branch=z9hG4bK")),
        "{v:?}"
    );
    // The client's Via records where it really came from.
    assert_eq!(
        v[1],
        "SIP/2.0/TCP 10.0.0.5:5060;branch=z9hG4bKinv1;received=198.51.100.1"
    );
    assert_eq!(fwd.msg.header("Max-Forwards"), Some("69"));
    let rr: Vec<&str> = fwd.msg.header_all("Record-Route").collect();
    assert_eq!(rr.len(), 2);
    assert!(rr[0].contains(";transport=udp;lr"), "{rr:?}");
    assert!(rr[1].contains(";transport=tcp;lr"), "{rr:?}");
    assert_eq!(fwd.msg.body(), b"v=0\n");
    // The body and untouched headers are byte-identical.
    assert!(
        String::from_utf8_lossy(&fwd.msg.to_bytes())
            .contains("From: \"Alice\" <sip:alice@example.com>;tag=a1;epid=ea\r\n")
    );

    // 180 and 200 from bob reach alice without our Via.
    let ringing = answer(&fwd.msg, 180, "Ringing");
    let sent = h.feed_msg(bob(), ringing);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].to, Target::Flow(alice()));
    assert_eq!(sent[0].msg.status_code(), Some(180));
    assert_eq!(vias(&sent[0].msg).len(), 1);
    let ok = answer(&fwd.msg, 200, "OK");
    let sent = h.feed_msg(bob(), ok);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].msg.status_code(), Some(200));
    let rr_alice: Vec<String> = sent[0]
        .msg
        .header_all("Record-Route")
        .map(str::to_owned)
        .collect();

    // ACK from alice follows the reversed route set and reaches bob's flow.
    let route = format!("Route: {}\r\nRoute: {}\r\n", rr_alice[1], rr_alice[0]);
    let ack = format!(
        "ACK sip:bob@10.0.0.6:5060 SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.5:5060;branch=z9hG4bKack1\r\n{route}\
Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a1\r\nTo: <sip:bob@example.com>;tag=b1\r\n\
Call-ID: call-1\r\nCSeq: 10 ACK\r\nContent-Length: 0\r\n\r\n"
    );
    let sent = h.feed(alice(), &ack);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].to, Target::Flow(bob()));
    assert!(sent[0].msg.header("Route").is_none());
    // Retransmitted ACK gets the same branch (stateless forwarding is deterministic).
    let again = h.feed(alice(), &ack);
    assert_eq!(vias(&again[0].msg)[0], vias(&sent[0].msg)[0]);

    // BYE from bob uses the route set in Record-Route order and reaches alice's TCP flow.
    let route = format!("Route: {}, {}\r\n", rr_alice[0], rr_alice[1]);
    let bye = format!(
        "BYE sip:alice@10.0.0.5:5060;transport=tcp SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.6:5060;branch=z9hG4bKbye1;rport\r\n{route}\
Max-Forwards: 70\r\nFrom: <sip:bob@example.com>;tag=b1\r\nTo: <sip:alice@example.com>;tag=a1\r\n\
Call-ID: call-1\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n"
    );
    let sent = h.feed(bob(), &bye);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].to, Target::Flow(alice()));
    assert!(vias(&sent[0].msg)[0].starts_with(&format!("SIP/2.0/TCP {GW}:5060;")));
    assert!(vias(&sent[0].msg)[1].contains("received=198.51.100.2;rport=40002"));
    let bye_ok = build_response(&sent[0].msg, 200, "OK", None, &[]).unwrap();
    let sent = h.feed_msg(alice(), bye_ok);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].to, Target::Flow(bob()));
    assert_eq!(sent[0].msg.cseq().unwrap().method, "BYE");

    // The INVITE server transaction absorbs a retransmitted INVITE after the 2xx.
    assert!(
        h.feed(alice(), &invite("z9hG4bKinv1", "bob", 70))
            .is_empty()
    );
    // Everything is cleaned up after 64*T1.
    h.advance(Duration::from_secs(40));
    assert_eq!(h.edge.stats().server_transactions, 0);
    assert_eq!(h.edge.stats().client_transactions, 0);
}

#[test]
fn message_and_registration_retransmission() {
    let mut h = H::registrar();
    h.register(alice(), "alice", "ea");
    h.register(bob(), "bob", "eb");
    let msg = "MESSAGE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.5;branch=z9hG4bKm1\r\n\
Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a9\r\nTo: <sip:bob@example.com>\r\nCall-ID: m1\r\n\
CSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi";
    let sent = h.feed(alice(), msg);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].to, Target::Flow(bob()));
    assert!(sent[0].msg.header("Record-Route").is_none());
    // UDP towards bob: retransmitted at T1, 2*T1 ...
    let re = h.advance(Duration::from_millis(600));
    assert_eq!(re.len(), 1);
    assert_eq!(re[0].msg.to_bytes(), sent[0].msg.to_bytes());
    let ok = build_response(&sent[0].msg, 200, "OK", Some("bb"), &[]).unwrap();
    let back = h.feed_msg(bob(), ok);
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].to, Target::Flow(alice()));
    assert!(
        h.advance(Duration::from_secs(10)).is_empty(),
        "no retransmission after the answer"
    );

    // A REGISTER retransmission gets the very same answer.
    let reg = "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.7;branch=z9hG4bKrr\r\n\
From: <sip:carol@example.com>;tag=c\r\nTo: <sip:carol@example.com>\r\nCall-ID: rc\r\nCSeq: 1 REGISTER\r\n\
Contact: <sip:carol@10.0.0.7>\r\nContent-Length: 0\r\n\r\n";
    let carol = flow(0, Transport::Udp, "198.51.100.3:5060");
    let a = h.feed(carol, reg);
    let b = h.feed(carol, reg);
    assert_eq!(a[0].msg.to_bytes(), b[0].msg.to_bytes());
    assert_eq!(h.edge.registrar().len(), 3);
}

/// Found by the `proxy_edge` fuzz target (issue 17): a copy of carol's REGISTER from another
/// address matched her server transaction (RFC 3261 §17.2.3 keys on the Via alone) and made the
/// edge send her last response to her again. A copy from elsewhere is dropped; carol's own
/// retransmission is still answered.
#[test]
fn a_copy_of_a_request_from_another_flow_is_not_a_retransmission() {
    let mut h = H::registrar();
    let reg = "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.7;branch=z9hG4bKrr\r\n\
From: <sip:carol@example.com>;tag=c\r\nTo: <sip:carol@example.com>\r\nCall-ID: rc\r\nCSeq: 1 REGISTER\r\n\
Contact: <sip:carol@10.0.0.7>\r\nContent-Length: 0\r\n\r\n";
    let carol = flow(0, Transport::Udp, "198.51.100.3:5060");
    let mallory = flow(0, Transport::Udp, "198.51.100.66:5060");
    let first = h.feed(carol, reg);
    assert_eq!(first.len(), 1);
    assert!(
        h.feed(mallory, reg).is_empty(),
        "a copy from elsewhere is not answered"
    );
    assert!(
        h.reports()
            .contains(&Report::Dropped(DropReason::ForeignTransaction))
    );
    let again = h.feed(carol, reg);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].to, Target::Flow(carol));
    assert_eq!(again[0].msg.to_bytes(), first[0].msg.to_bytes());
}

#[test]
fn cancel_before_answer() {
    let mut h = H::registrar();
    h.register(alice(), "alice", "ea");
    h.register(bob(), "bob", "eb");
    let sent = h.feed(alice(), &invite("z9hG4bKc1", "bob", 70));
    let fwd = sent[1].msg.clone();
    h.feed_msg(bob(), answer(&fwd, 180, "Ringing"));
    let cancel = "CANCEL sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.5:5060;branch=z9hG4bKc1\r\n\
Max-Forwards: 70\r\nFrom: \"Alice\" <sip:alice@example.com>;tag=a1;epid=ea\r\nTo: <sip:bob@example.com>\r\n\
Call-ID: call-1\r\nCSeq: 10 CANCEL\r\nContent-Length: 0\r\n\r\n";
    let sent = h.feed(alice(), cancel);
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[0].to, Target::Flow(alice()));
    assert_eq!(sent[0].msg.status_code(), Some(200));
    assert_eq!(sent[0].msg.cseq().unwrap().method, "CANCEL");
    assert_eq!(sent[1].to, Target::Flow(bob()));
    assert_eq!(sent[1].msg.method(), Some("CANCEL"));
    // Same branch as the INVITE we sent (RFC 3261 §9.1).
    assert_eq!(vias(&sent[1].msg)[0], vias(&fwd)[0]);
    // bob: 200 to CANCEL (consumed), 487 to INVITE (ACKed by us, forwarded to alice).
    let c_ok = build_response(&sent[1].msg, 200, "OK", Some("b1"), &[]).unwrap();
    assert!(h.feed_msg(bob(), c_ok).is_empty());
    let sent = h.feed_msg(bob(), answer(&fwd, 487, "Request Terminated"));
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[0].to, Target::Flow(bob()));
    assert_eq!(sent[0].msg.method(), Some("ACK"));
    assert_eq!(sent[0].msg.to().unwrap().tag(), Some("b1"));
    assert_eq!(sent[1].to, Target::Flow(alice()));
    assert_eq!(sent[1].msg.status_code(), Some(487));
    // alice's ACK for the 487 ends at the proxy.
    let ack = "ACK sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.5:5060;branch=z9hG4bKc1\r\n\
Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a1\r\nTo: <sip:bob@example.com>;tag=b1\r\n\
Call-ID: call-1\r\nCSeq: 10 ACK\r\nContent-Length: 0\r\n\r\n";
    assert!(h.feed(alice(), ack).is_empty());
    // Unknown CANCEL: 481.
    let stray = cancel.replace("z9hG4bKc1", "z9hG4bKnone");
    let sent = h.feed(alice(), &stray);
    assert_eq!(sent[0].msg.status_code(), Some(481));
}

#[test]
fn cancel_before_any_provisional_waits_for_one() {
    let mut h = H::registrar();
    h.register(bob(), "bob", "eb");
    let sent = h.feed(alice(), &invite("z9hG4bKc2", "bob", 70));
    let fwd = sent[1].msg.clone();
    let cancel = invite("z9hG4bKc2", "bob", 70)
        .replace("INVITE sip:", "CANCEL sip:")
        .replace("10 INVITE", "10 CANCEL");
    let cancel = Message::parse(cancel.as_bytes()).unwrap();
    let mut cancel = cancel;
    cancel.set_body(b"");
    cancel.remove_header("Content-Type");
    let sent = h.feed_msg(alice(), cancel);
    assert_eq!(
        sent.len(),
        1,
        "only the 200 to CANCEL until bob sends a provisional"
    );
    let sent = h.feed_msg(bob(), answer(&fwd, 100, "Trying"));
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].msg.method(), Some("CANCEL"));
}

#[test]
fn max_forwards_loop_and_bad_requests() {
    let mut h = H::registrar();
    h.register(bob(), "bob", "eb");
    let sent = h.feed(alice(), &invite("z9hG4bKmf", "bob", 0));
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].msg.status_code(), Some(483));

    // Our own forwarded request coming back unchanged is a loop.
    // The first return is a spiral, not a loop (RFC 3261 §16.3 step 4): it was retargeted to
    // bob's Contact, and goes on; the same request again is a loop.
    let sent = h.feed(alice(), &invite("z9hG4bKlp", "bob", 70));
    let mut spiral = sent[1].msg.clone();
    spiral.remove_header("Record-Route");
    let sent = h.feed_msg(alice(), spiral);
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[1].to, Target::Flow(bob()));
    let mut looped = sent[1].msg.clone();
    looped.remove_header("Record-Route");
    let sent = h.feed_msg(alice(), looped);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].msg.status_code(), Some(482));

    // CSeq method differs from the request method: 400.
    let bad = invite("z9hG4bKbad", "bob", 70).replace("10 INVITE", "10 BYE");
    let sent = h.feed(alice(), &bad);
    assert_eq!(sent[0].msg.status_code(), Some(400));

    // Unknown user, no next hop: 404.
    let sent = h.feed(alice(), &invite("z9hG4bKnf", "nobody", 70));
    assert_eq!(sent.last().unwrap().msg.status_code(), Some(404));

    // A response whose Via is not ours is dropped.
    let resp = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 203.0.113.9;branch=z9hG4bKx\r\nFrom: <sip:a@x>;tag=1\r\n\
To: <sip:b@x>;tag=2\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    assert!(h.feed(bob(), resp).is_empty());
    assert!(
        h.reports()
            .contains(&Report::Dropped(sagw_proxy::DropReason::ResponseNotOurs))
    );

    // OPTIONS to the proxy itself: 200.
    let opt = format!(
        "OPTIONS sip:{GW}:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKo\r\nFrom: <sip:a@x>;tag=1\r\n\
To: <sip:{GW}>\r\nCall-ID: o\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    let sent = h.feed(bob(), &opt);
    assert_eq!(sent[0].msg.status_code(), Some(200));
}

fn with_hops(n: usize) -> H {
    let mut cfg = EdgeConfig::new(local(), Secret::new([5; 32]));
    cfg.next_hops = (0..n)
        .map(|i| NextHop {
            transport: Transport::Tcp,
            addr: format!("203.0.113.{}:5060", i + 1).parse().unwrap(),
        })
        .collect();
    cfg.retry_after = Duration::from_secs(17);
    H::new(cfg)
}

#[test]
fn next_hop_fail_over_then_503() {
    let mut h = with_hops(2);
    let sent = h.feed(alice(), &invite("z9hG4bKh1", "carol", 70));
    assert_eq!(sent.len(), 2);
    let first = &sent[1];
    assert_eq!(
        first.to,
        Target::Addr {
            transport: Transport::Tcp,
            addr: "203.0.113.1:5060".parse().unwrap()
        }
    );
    let token = first.token.clone().unwrap();
    h.edge.send_failed(&token, h.now);
    let sent = h.drain();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].to.addr(), "203.0.113.2:5060".parse().unwrap());
    assert_ne!(
        vias(&sent[0].msg)[0],
        vias(&first.msg)[0],
        "a new branch per attempt"
    );
    h.edge.send_failed(sent[0].token.as_ref().unwrap(), h.now);
    let sent = h.drain();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].to, Target::Flow(alice()));
    assert_eq!(sent[0].msg.status_code(), Some(503));
    assert_eq!(sent[0].msg.header("Retry-After"), Some("17"));
    // Both hops are known down now: the next request is answered at once.
    let sent = h.feed(alice(), &invite("z9hG4bKh2", "carol", 70));
    assert_eq!(sent.last().unwrap().msg.status_code(), Some(503));
    // After Retry-After they are tried again.
    h.advance(Duration::from_secs(18));
    let sent = h.feed(alice(), &invite("z9hG4bKh3", "carol", 70));
    assert_eq!(
        sent.last().unwrap().to.addr(),
        "203.0.113.1:5060".parse().unwrap()
    );
}

/// A MESSAGE no next hop answers: every hop tried, then the transaction ends unanswered (no 408
/// to a non-INVITE, RFC 4320 §4.2: the client's own Timer F ends it). From a UDP client it is kept
/// for Timer J, so that the client's retransmissions are not forwarded again; from a stream
/// client it goes at once. Neither holds a drain up.
#[test]
fn silent_next_hop_fails_over_then_the_message_ends_unanswered() {
    let mut cfg = EdgeConfig::new(local(), Secret::new([5; 32]));
    cfg.next_hops = ["203.0.113.1:5060", "203.0.113.2:5060"]
        .iter()
        .map(|a| NextHop {
            transport: Transport::Udp,
            addr: a.parse().unwrap(),
        })
        .collect();
    let mut h = H::new(cfg.clone());
    let carol = flow(0, Transport::Udp, "198.51.100.3:5062");
    let msg = "MESSAGE sip:carol@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5;branch=z9hG4bKs1\r\n\
Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a9\r\nTo: <sip:carol@example.com>\r\nCall-ID: s1\r\n\
CSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n";
    let sent = h.feed(carol, msg);
    assert_eq!(sent.len(), 1);
    // Retransmissions at 0.5, 1.5, 3.5 s; fail-over at 4 s.
    let sent = h.advance(Duration::from_millis(4001));
    let to_first = sent
        .iter()
        .filter(|s| s.to.addr() == "203.0.113.1:5060".parse().unwrap())
        .count();
    assert_eq!(to_first, 3, "{sent:?}");
    assert_eq!(
        sent.last().unwrap().to.addr(),
        "203.0.113.2:5060".parse().unwrap()
    );
    // The last hop gets the full 64*T1, then nothing goes to the client.
    let sent = h.advance(Duration::from_secs(32));
    assert!(
        !sent.iter().any(|s| s.to == Target::Flow(carol)),
        "{sent:?}"
    );
    assert_eq!(
        h.edge.transactions_in_progress(),
        0,
        "a drain waits for nothing"
    );
    // Its retransmission meanwhile is taken for one: not forwarded again.
    let again = h.feed(carol, msg);
    assert!(again.is_empty(), "{again:?}");
    // The transaction lasts Timer J's time; the last hop's branch waits one Timer B more for a
    // late answer (`detach_branch`).
    h.advance(Duration::from_secs(33));
    assert_eq!(h.edge.stats().server_transactions, 0);
    assert_eq!(h.edge.stats().client_transactions, 0);

    // From a stream client: gone as soon as it is given up.
    let mut h = H::new(cfg);
    h.feed(alice(), &msg.replace("SIP/2.0/UDP", "SIP/2.0/TCP"));
    h.advance(Duration::from_secs(37));
    assert_eq!(h.edge.stats().server_transactions, 0);
}

#[test]
fn invite_non_2xx_over_udp_is_retransmitted_until_ack() {
    let mut h = H::registrar();
    let carol = flow(0, Transport::Udp, "198.51.100.3:5062");
    let inv = invite("z9hG4bKu1", "nobody", 70).replace("SIP/2.0/TCP", "SIP/2.0/UDP");
    let sent = h.feed(carol, &inv);
    assert_eq!(sent.last().unwrap().msg.status_code(), Some(404));
    let re = h.advance(Duration::from_millis(1600));
    assert_eq!(re.len(), 2, "Timer G at T1 and 2*T1");
    let ack = "ACK sip:nobody@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKu1\r\n\
Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a1\r\nTo: <sip:nobody@example.com>;tag=x\r\n\
Call-ID: call-1\r\nCSeq: 10 ACK\r\nContent-Length: 0\r\n\r\n";
    assert!(h.feed(carol, ack).is_empty());
    assert!(h.advance(Duration::from_secs(10)).is_empty());
    assert_eq!(h.edge.stats().server_transactions, 0);
}

#[test]
fn flow_close_removes_bindings() {
    let mut h = H::registrar();
    h.register(alice(), "alice", "ea");
    h.edge.flow_closed(FlowId(1), h.now);
    assert_eq!(h.edge.registrar().len(), 0);
    let sent = h.feed(bob(), &invite("z9hG4bKfc", "alice", 70));
    assert_eq!(sent.last().unwrap().msg.status_code(), Some(404));
}

#[test]
fn edge_mode_adds_path_and_routes_back_through_it() {
    let (mut h, registrar) = edge_behind_registrar();
    let reg = "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.5;branch=z9hG4bKe1\r\n\
Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=e;epid=ea\r\nTo: <sip:alice@example.com>\r\nCall-ID: e1\r\n\
CSeq: 1 REGISTER\r\nContact: <sip:alice@10.0.0.5;transport=tcp>\r\nContent-Length: 0\r\n\r\n";
    let sent = h.feed(alice(), reg);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].to.addr(), registrar.remote);
    let path = sent[0].msg.header("Path").unwrap().to_owned();
    assert!(path.contains(";lr;ob>"), "{path}");
    let ok = build_response(&sent[0].msg, 200, "OK", Some("r"), &[]).unwrap();
    let back = h.feed_msg(registrar, ok);
    assert_eq!(back[0].to, Target::Flow(alice()));
    // The registrar sends a request for alice with the Path as Route: it reaches alice's flow.
    let req = format!(
        "MESSAGE sip:alice@10.0.0.5;transport=tcp SIP/2.0\r\nVia: SIP/2.0/TCP 203.0.113.1;branch=z9hG4bKsrv\r\n\
Route: {path}\r\nMax-Forwards: 70\r\nFrom: <sip:bob@example.com>;tag=b\r\nTo: <sip:alice@example.com>\r\n\
Call-ID: e2\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n"
    );
    let sent = h.feed(registrar, &req);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].to, Target::Flow(alice()));
    // A forged token is not honoured.
    let forged = req.replace(&path, &path.replacen('.', ".f", 1));
    let sent = h.feed(registrar, &forged.replace("z9hG4bKsrv", "z9hG4bKsrv2"));
    assert!(
        sent.iter().all(|s| s.to != Target::Flow(alice())),
        "{sent:?}"
    );
}

/// An auth stage that challenges REGISTERs without Authorization and tags what it signs. A
/// request with Authorization proves the endpoint its From names (identity and epid); requests to
/// an endpoint whose epid is in `ended` are refused with 480, as for an SA that ended.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<String>>>, Arc<Mutex<Vec<String>>>);

impl Recorder {
    fn end_sa(&self, epid: &str) {
        self.1.lock().unwrap().push(epid.to_owned());
    }
}

impl ClientAuth for Recorder {
    fn inbound(&mut self, msg: &mut Message, ctx: &InboundContext<'_>) -> InboundVerdict {
        let answering = match ctx.answering {
            Answering::Request(e) => Some(e.map(|e| e.epid.clone())),
            Answering::Unknown => None,
        };
        self.0.lock().unwrap().push(if msg.is_request() {
            format!("in {} {:?}", msg.start_line(), ctx.flow.id)
        } else {
            format!(
                "in {} {:?} answering={answering:?}",
                msg.start_line(),
                ctx.flow.id
            )
        });
        if let Some(lent) = ctx.dialog_local {
            self.0.lock().unwrap().push(format!("lent {lent}"));
        }
        if msg.method() == Some("REGISTER") && msg.header("Authorization").is_none() {
            let r = build_response(
                msg,
                401,
                "Unauthorized",
                Some("auth"),
                &[("WWW-Authenticate", "NTLM realm=\"x\"".into())],
            )
            .unwrap();
            return InboundVerdict::Respond(r);
        }
        let endpoint = msg
            .header("Authorization")
            .and(msg.from())
            .and_then(|from| {
                Some(SaEndpoint {
                    identity: from.uri.to_owned(),
                    epid: from.param("epid")?.to_owned(),
                })
            });
        let client = endpoint.as_ref().map(|e| ClientKey::identity(&e.identity));
        InboundVerdict::Continue {
            note: Some(Arc::new(msg.call_id().unwrap_or("").to_owned())),
            endpoint,
            client,
        }
    }

    fn outbound(&mut self, msg: &mut Message, ctx: &OutboundContext<'_>) -> OutboundVerdict {
        let note = ctx.note.and_then(|n| n.downcast_ref::<String>()).cloned();
        let epid = ctx.endpoint.map(|e| e.epid.clone());
        self.0.lock().unwrap().push(format!(
            "out {:?} {} epid={epid:?} note={note:?}",
            ctx.kind,
            msg.start_line(),
        ));
        if ctx.kind == OutboundKind::Request
            && epid.is_some_and(|e| self.1.lock().unwrap().contains(&e))
        {
            return OutboundVerdict::Refuse(480);
        }
        // Replaced, as the gateway's signer replaces `Authentication-Info`.
        msg.set_header("X-Signed", "yes");
        OutboundVerdict::Deliver
    }
}

/// Edge mode, the registrar behind the gateway its one next hop: the harness and the
/// registrar's flow.
fn edge_behind_registrar() -> (H, Flow) {
    let mut cfg = EdgeConfig::new(local(), Secret::new([5; 32]));
    cfg.mode = Mode::Edge;
    let registrar = flow(9, Transport::Tcp, "203.0.113.1:5060");
    cfg.next_hops = vec![NextHop {
        transport: Transport::Tcp,
        addr: registrar.remote,
    }];
    (H::new(cfg), registrar)
}

/// Edge mode with the recording auth stage: `alice()` signs in through the registrar behind the
/// gateway; returns the harness, the registrar's flow and the Path the registrar stored.
fn edge_with_signed_in_alice(rec: &Recorder) -> (H, Flow, String) {
    let (mut h, registrar) = edge_behind_registrar();
    h.edge = Edge::with_auth(h.edge.config().clone(), Box::new(rec.clone()));
    let reg = "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.5;branch=z9hG4bKe1\r\n\
Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=e;epid=ea\r\nTo: <sip:alice@example.com>\r\n\
Call-ID: e1\r\nCSeq: 1 REGISTER\r\nAuthorization: NTLM x\r\nContact: <sip:alice@10.0.0.5;transport=tcp>\r\n\
Content-Length: 0\r\n\r\n";
    let sent = h.feed(alice(), reg);
    assert_eq!(sent[0].to.addr(), registrar.remote, "{sent:?}");
    let path = sent[0].msg.header("Path").expect("Path").to_owned();
    let ok = build_response(&sent[0].msg, 200, "OK", Some("r"), &[]).unwrap();
    let back = h.feed_msg(registrar, ok);
    assert_eq!(back[0].to, Target::Flow(alice()));
    rec.0.lock().unwrap().clear();
    (h, registrar, path)
}

/// A Contact a client registers with a server's address (a next hop's or a trusted peer's IP,
/// read from the Contact of a server's 200 in one of its own calls) does not take the requests
/// other clients send to that server: their in-dialog requests to a server that does not
/// Record-Route (Asterisk, a PSTN gateway) carry its Contact as Request-URI and nothing else once
/// the gateway's own Route entries are gone. Before, alice's binding took bob's BYE and ACK,
/// signed for her.
#[test]
fn a_contact_at_a_servers_address_does_not_take_requests_to_the_server() {
    let mut cfg = EdgeConfig::new(local(), Secret::new([6; 32]));
    cfg.next_hops = vec![NextHop {
        transport: Transport::Udp,
        addr: "203.0.113.1:5060".parse().unwrap(),
    }];
    cfg.trusted_peers = vec!["203.0.113.9".parse().unwrap()];
    let mut h = H::new(cfg);
    h.register(bob(), "bob", "eb");
    for (n, server) in ["203.0.113.1:5060", "203.0.113.9:5070"].iter().enumerate() {
        let reg = format!(
            "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.5:5060;branch=z9hG4bKra{n}\r\n\
Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=ra;epid=ea\r\nTo: <sip:alice@example.com>\r\n\
Call-ID: reg-alice-{n}\r\nCSeq: {} REGISTER\r\nContact: <sip:asterisk@{server}>\r\nExpires: 3600\r\n\
Content-Length: 0\r\n\r\n",
            n + 1
        );
        let sent = h.feed(alice(), &reg);
        assert_eq!(sent[0].msg.status_code(), Some(200), "{sent:?}");
        let bye = format!(
            "BYE sip:asterisk@{server} SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.6:5060;branch=z9hG4bKby{n};rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:bob@example.com>;tag=b1;epid=eb\r\nTo: <sip:asterisk@example.com>;tag=s1\r\n\
Call-ID: call-{n}\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
        );
        let sent = h.feed(bob(), &bye);
        assert!(
            sent.iter().all(|s| s.to != Target::Flow(alice())),
            "bob's BYE to the server at {server} went to alice: {sent:?}"
        );
    }
}

/// The servers behind the next hop (an Asterisk, a PSTN gateway behind Kamailio) are in no list:
/// a client's request is taken by a registered contact only when its To names that contact's
/// address of record (alice's request in bob's dialog names bob; bob's BYE to a PSTN gateway
/// names the number he called, whoever registered that gateway's Contact). A server's request
/// still reaches a contact whatever its To (a PBX dialling the registered contact), and a
/// device whose contact shares a next hop's IP on another port is still a device.
#[test]
fn a_clients_request_is_taken_by_a_contact_only_for_its_address_of_record() {
    let mut cfg = EdgeConfig::new(local(), Secret::new([6; 32]));
    let hop = flow(5, Transport::Udp, "203.0.113.1:5060");
    cfg.next_hops = vec![NextHop {
        transport: Transport::Udp,
        addr: hop.remote,
    }];
    let mut h = H::new(cfg);
    h.register(bob(), "bob", "eb");
    let register = |h: &mut H, n: u32, contact: &str| {
        let reg = format!(
            "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.5:5060;branch=z9hG4bKrc{n}\r\n\
Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=ra;epid=ea\r\nTo: <sip:alice@example.com>\r\n\
Call-ID: reg-alice\r\nCSeq: {n} REGISTER\r\nContact: <{contact}>\r\nExpires: 3600\r\n\
Content-Length: 0\r\n\r\n"
        );
        let sent = h.feed(alice(), &reg);
        assert_eq!(sent[0].msg.status_code(), Some(200), "{sent:?}");
    };
    let request = |method: &str, ruri: &str, to: &str, n: u32| {
        format!(
            "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.6:5060;branch=z9hG4bKcq{n};rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:bob@example.com>;tag=b1;epid=eb\r\nTo: <{to}>;tag=s1\r\n\
Call-ID: call-c{n}\r\nCSeq: 2 {method}\r\nContent-Length: 0\r\n\r\n"
        )
    };
    // A PSTN gateway behind the next hop, at an address no list names.
    register(&mut h, 1, "sip:gw@10.0.0.50:5060");
    let sent = h.feed(
        bob(),
        &request(
            "BYE",
            "sip:gw@10.0.0.50:5060",
            "sip:+15551234@pstn.example.com",
            1,
        ),
    );
    assert!(
        sent.iter().all(|s| s.to != Target::Flow(alice())),
        "bob's BYE to the PSTN gateway went to alice: {sent:?}"
    );
    // In a dialog with alice, bob's request names her: her contact takes it.
    let sent = h.feed(
        bob(),
        &request("INFO", "sip:gw@10.0.0.50:5060", "sip:alice@example.com", 2),
    );
    assert!(
        sent.iter().any(|s| s.to == Target::Flow(alice())),
        "bob's request in alice's dialog: {sent:?}"
    );
    // A contact at the next hop's IP, another port: a device, which the server's request reaches.
    register(&mut h, 2, "sip:alice@203.0.113.1:5070");
    let from_server = "OPTIONS sip:alice@203.0.113.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.1:5060;branch=z9hG4bKsrv1\r\n\
Max-Forwards: 70\r\nFrom: <sip:pbx@example.com>;tag=p1\r\nTo: <sip:+4930123@example.com>\r\n\
Call-ID: srv-1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    let sent = h.feed(hop, from_server);
    assert!(
        sent.iter().any(|s| s.to == Target::Flow(alice())),
        "the server's request to alice's contact: {sent:?}"
    );
}

/// A request the gateway retransmits to a client with an SA over UDP (Timer E) goes through the
/// outbound stage again, signed afresh: the client keeps a replay window of its `snum`s
/// ([MS-SIP] 3.1.5.1: one seen is dropped), so a copy of the first signed bytes, sent because
/// the client's answer was lost, was dropped unanswered and the sender got 408 for a message
/// delivered.
#[test]
fn a_request_retransmitted_to_a_signed_in_client_is_signed_again() {
    let rec = Recorder::default();
    let mut h = H::registrar();
    h.edge = Edge::with_auth(h.edge.config().clone(), Box::new(rec.clone()));
    let reg = "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.6:5060;branch=z9hG4bKrb;rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:bob@example.com>;tag=rb;epid=eb\r\nTo: <sip:bob@example.com>\r\n\
Call-ID: reg-bob\r\nCSeq: 1 REGISTER\r\nAuthorization: NTLM x\r\nContact: <sip:bob@10.0.0.6:5060>\r\n\
Expires: 3600\r\nContent-Length: 0\r\n\r\n";
    let sent = h.feed(bob(), reg);
    assert_eq!(sent[0].msg.status_code(), Some(200), "{sent:?}");
    let msg = "MESSAGE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.5;branch=z9hG4bKm1\r\n\
Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a9;epid=ea\r\nTo: <sip:bob@example.com>\r\nCall-ID: m1\r\n\
CSeq: 1 MESSAGE\r\nAuthorization: NTLM x\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi";
    let signed = |rec: &Recorder| {
        rec.0
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with("out Request MESSAGE") && l.contains("epid=Some(\"eb\")"))
            .count()
    };
    let sent = h.feed(alice(), msg);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].to, Target::Flow(bob()));
    assert_eq!(signed(&rec), 1);
    let re = h.advance(Duration::from_millis(600));
    assert_eq!(re.len(), 1, "{re:?}");
    assert_eq!(re[0].to, Target::Flow(bob()));
    assert_eq!(
        signed(&rec),
        2,
        "the retransmission signed for bob's endpoint again"
    );
    assert_eq!(
        re[0].msg.header_all("X-Signed").count(),
        1,
        "signed once, from the unsigned request kept"
    );
    // Bob's SA ended meanwhile: nothing is sent unsigned.
    rec.1.lock().unwrap().push("eb".to_owned());
    assert!(h.advance(Duration::from_millis(1100)).is_empty());
}

/// In edge mode a client's own call that comes back to it through the registrar behind (which
/// passes To on as it came) opens no dialog lent to it: it chose that To. The edge knows it by
/// its own Via further down the returning INVITE, whose token names the client's flow and
/// endpoint. Before, only the embedded registrar's binding could tell (registrar mode), and
/// alice's INVITE to herself with `To: <sip:ceo@…>`, answered 180 by her, lent her the CEO's
/// address in that dialog. A server's own INVITE (no Via of ours) still lends its To.
#[test]
fn edge_mode_a_clients_own_call_looped_back_lends_nothing() {
    let rec = Recorder::default();
    let (mut h, registrar, path) = edge_with_signed_in_alice(&rec);
    let contact = "<sip:alice@10.0.0.5;transport=tcp>";
    let invite = format!(
        "INVITE sip:alice@example.com SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.5;branch=z9hG4bKself1\r\n\
Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=self;epid=ea\r\nTo: <sip:ceo@example.com>\r\n\
Call-ID: self-call\r\nCSeq: 1 INVITE\r\nAuthorization: NTLM x\r\nContact: {contact}\r\nContent-Length: 0\r\n\r\n"
    );
    let sent = h.feed(alice(), &invite);
    let out = sent_request(&sent, "INVITE");
    // The registrar sends it on to alice's registered contact by the Path it stored.
    let text = String::from_utf8(out.to_bytes().to_vec()).unwrap();
    let (_, rest) = text.split_once("\r\n").unwrap();
    let back = format!(
        "INVITE sip:alice@10.0.0.5;transport=tcp SIP/2.0\r\n\
Via: SIP/2.0/TCP 203.0.113.1;branch=z9hG4bKreg1\r\nRoute: {path}\r\n{rest}"
    );
    let sent = h.feed(registrar, &back);
    let delivered = sent
        .iter()
        .find(|s| s.to == Target::Flow(alice()) && s.msg.method() == Some("INVITE"))
        .unwrap_or_else(|| panic!("her own INVITE comes back to her: {sent:?}"))
        .msg
        .clone();
    let ringing = build_response(
        &delivered,
        180,
        "Ringing",
        Some("t1"),
        &[("Contact", contact.into())],
    )
    .unwrap();
    h.feed_msg(alice(), ringing);
    rec.0.lock().unwrap().clear();
    let message = "MESSAGE sip:alice@10.0.0.5;transport=tcp SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.5;branch=z9hG4bKselfm\r\n\
Max-Forwards: 70\r\nFrom: <sip:ceo@example.com>;tag=t1;epid=ea\r\nTo: <sip:alice@example.com>;tag=self\r\n\
Call-ID: self-call\r\nCSeq: 5 MESSAGE\r\nAuthorization: NTLM x\r\nContent-Length: 0\r\n\r\n";
    h.feed(alice(), message);
    let log = rec.0.lock().unwrap().clone();
    assert!(
        log.iter().any(|l| l.starts_with("in MESSAGE")),
        "the MESSAGE reached the stage: {log:?}"
    );
    assert!(
        !log.iter().any(|l| l.starts_with("lent ")),
        "her own call lent her the To she chose: {log:?}"
    );
}

/// A request from the registrar for alice, routed by `route`.
fn from_registrar(method: &str, branch: &str, route: &str, to_extra: &str) -> String {
    format!(
        "{method} sip:alice@10.0.0.5;transport=tcp SIP/2.0\r\nVia: SIP/2.0/TCP 203.0.113.1;branch={branch}\r\n\
Route: {route}\r\nMax-Forwards: 70\r\nFrom: <sip:bob@example.com>;tag=b;epid=eb\r\n\
To: <sip:alice@example.com>{to_extra}\r\nCall-ID: {branch}\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
    )
}

/// The request of `method` among `sent` (one the edge sent on).
fn sent_request(sent: &[Sent], method: &str) -> Message {
    sent.iter()
        .find(|s| s.msg.method() == Some(method))
        .unwrap_or_else(|| panic!("no {method} sent: {sent:?}"))
        .msg
        .clone()
}

/// `m`'s Record-Route values, in order.
fn record_route(m: &Message) -> Vec<String> {
    m.header_all("Record-Route").map(str::to_owned).collect()
}

#[test]
fn edge_mode_signs_requests_for_the_endpoint_the_path_names() {
    let rec = Recorder::default();
    let (mut h, registrar, path) = edge_with_signed_in_alice(&rec);
    assert!(path.contains(";lr;ob>"), "{path}");
    // Whatever the request says about the endpoint (To names bob's epid here), the outbound stage
    // gets the endpoint the Path token was issued for.
    let sent = h.feed(
        registrar,
        &from_registrar("MESSAGE", "z9hG4bKm1", &path, ";epid=eb"),
    );
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].to, Target::Flow(alice()));
    assert_eq!(sent[0].msg.header("X-Signed"), Some("yes"));
    assert_eq!(
        rec.0.lock().unwrap().last().unwrap(),
        "out Request MESSAGE sip:alice@10.0.0.5;transport=tcp SIP/2.0 epid=Some(\"ea\") note=None"
    );
    // An answer from another client's flow (it learnt the branch) is not alice's: dropped unjudged.
    let ok = build_response(&sent[0].msg, 200, "OK", Some("t"), &[]).unwrap();
    let carol = flow(4, Transport::Tcp, "198.51.100.4:40004");
    assert!(h.feed_msg(carol, ok.clone()).is_empty());
    assert!(
        h.reports()
            .contains(&Report::Dropped(DropReason::ResponseNotOurs))
    );
    // alice's own answer is judged against the endpoint the MESSAGE was sent to.
    let sent = h.feed_msg(alice(), ok);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].to, Target::Flow(registrar));
    assert_eq!(
        rec.0.lock().unwrap().last().unwrap(),
        "in SIP/2.0 200 OK FlowId(1) answering=Some(Some(\"ea\"))"
    );
    // An INVITE through the Path is Record-Routed with alice's endpoint in the token on her side:
    // the far end's BYE, routed by that entry alone, is signed for her too.
    let sent = h.feed(registrar, &from_registrar("INVITE", "z9hG4bKi1", &path, ""));
    let invite = sent
        .iter()
        .find(|s| s.msg.method() == Some("INVITE"))
        .expect("INVITE to alice");
    assert_eq!(invite.to, Target::Flow(alice()));
    let rr_alice_side = invite
        .msg
        .header_all("Record-Route")
        .next()
        .expect("Record-Route")
        .to_owned();
    assert_ne!(
        rr_alice_side, path,
        "a token of its own, not a copy of the Path"
    );
    rec.0.lock().unwrap().clear();
    // In the INVITE's dialog (its Call-ID): the Record-Route token is bound to it.
    let bye = from_registrar("BYE", "z9hG4bKb1", &rr_alice_side, ";tag=alice")
        .replace("Call-ID: z9hG4bKb1", "Call-ID: z9hG4bKi1");
    let sent = h.feed(registrar, &bye);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].to, Target::Flow(alice()));
    assert!(
        rec.0.lock().unwrap()[0].ends_with("epid=Some(\"ea\") note=None"),
        "{:?}",
        rec.0.lock().unwrap()
    );
}

/// `m`'s text with `from` replaced by `to` (once, and it must be there).
fn edited(m: &Message, from: &str, to: &str) -> Message {
    let text = String::from_utf8(m.to_bytes()).unwrap();
    assert!(text.contains(from), "{from} not in\n{text}");
    Message::parse(text.replacen(from, to, 1).as_bytes()).unwrap()
}

/// The value of parameter `name` in `m`'s top Via.
fn top_via_param(m: &Message, name: &str) -> String {
    let via = m.header("Via").unwrap();
    let start = via.find(&format!(";{name}=")).unwrap() + name.len() + 2;
    via[start..].split(';').next().unwrap().to_owned()
}

/// A late 2xx is relayed without a transaction only for an INVITE (RFC 3261 §16.7): the method
/// the request was sent with is under the `sgt` MAC, so a client cannot take the branch of a
/// MESSAGE it once got, write `INVITE` in its CSeq, and have as many 2xx as it likes relayed.
#[test]
fn a_late_2xx_whose_cseq_says_invite_for_another_request_is_not_relayed() {
    let rec = Recorder::default();
    let (mut h, registrar, path) = edge_with_signed_in_alice(&rec);
    let sent = h.feed(
        registrar,
        &from_registrar("MESSAGE", "z9hG4bKlm1", &path, ""),
    );
    let message = sent
        .into_iter()
        .find(|s| s.msg.method() == Some("MESSAGE"))
        .expect("MESSAGE to alice")
        .msg;
    let ok = build_response(&message, 200, "OK", Some("al"), &[]).unwrap();
    assert_eq!(h.feed_msg(alice(), ok.clone()).len(), 1);
    h.advance(Duration::from_secs(40));
    let cseq = ok.header("CSeq").unwrap().to_owned();
    let as_invite = edited(
        &ok,
        &format!("CSeq: {cseq}\r\n"),
        &format!("CSeq: {}\r\n", cseq.replace("MESSAGE", "INVITE")),
    );
    assert!(
        h.feed_msg(alice(), as_invite).is_empty(),
        "a 2xx rewritten to INVITE was relayed"
    );
}

/// Found by the `proxy_edge` fuzz campaign: a client's 2xx to INVITE after the gateway's
/// transaction ended was judged by the epid in its own To (none there: no SA, relayed unsigned).
/// Now the endpoint and flow the INVITE went to come from our Via (`sgt`), MAC'd with its branch
/// and its `sgf`; what the registrar's late 2xx to alice's own INVITE gets is signed for her.
#[test]
fn a_late_invite_2xx_is_judged_against_the_endpoint_the_invite_went_to() {
    let rec = Recorder::default();
    let (mut h, registrar, path) = edge_with_signed_in_alice(&rec);
    let sent = h.feed(registrar, &from_registrar("INVITE", "z9hG4bKl1", &path, ""));
    let invite = sent
        .into_iter()
        .find(|s| s.msg.method() == Some("INVITE"))
        .expect("INVITE to alice")
        .msg;
    let ok = build_response(&invite, 200, "OK", Some("al"), &[]).unwrap();
    assert_eq!(h.feed_msg(alice(), ok.clone()).len(), 1);
    // Past the client transaction's linger (64*T1).
    h.advance(Duration::from_secs(40));
    rec.0.lock().unwrap().clear();
    let sent = h.feed_msg(alice(), ok.clone());
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].to, Target::Flow(registrar));
    assert_eq!(
        rec.0.lock().unwrap().as_slice(),
        ["in SIP/2.0 200 OK FlowId(1) answering=Some(Some(\"ea\"))"]
    );
    let sgt = top_via_param(&ok, "sgt");
    let sgf = top_via_param(&ok, "sgf");
    let carol = flow(4, Transport::Tcp, "198.51.100.4:40004");
    for (what, from, copy) in [
        (
            "sgt removed",
            alice(),
            edited(&ok, &format!(";sgt={sgt}"), ""),
        ),
        (
            "sgt of another branch",
            alice(),
            edited(&ok, "z9hG4bKsgw", "z9hG4bKsgwX"),
        ),
        (
            "sgf swapped for the Path's token",
            alice(),
            edited(
                &ok,
                &sgf,
                path.split("sip:")
                    .nth(1)
                    .unwrap()
                    .split('@')
                    .next()
                    .unwrap(),
            ),
        ),
        ("another flow", carol, ok.clone()),
    ] {
        rec.0.lock().unwrap().clear();
        assert!(h.feed_msg(from, copy).is_empty(), "{what}: relayed");
        assert!(
            rec.0.lock().unwrap().is_empty(),
            "{what}: judged {:?}",
            rec.0.lock().unwrap()
        );
        assert!(
            h.reports().contains(&Report::Dropped(DropReason::Stray)),
            "{what}"
        );
    }
    // Malformed: the fuzzer's input had two CSeq (and To) headers, one reader's INVITE 2xx being
    // another's MESSAGE 200. Dropped before anything reads it, transaction or not.
    let twice = edited(
        &ok,
        "CSeq: 1 INVITE\r\n",
        "CSeq: 1 INVITE\r\nCSeq: 1 MESSAGE\r\n",
    );
    assert!(h.feed_msg(alice(), twice).is_empty());
    assert!(h.reports().contains(&Report::Dropped(DropReason::Invalid)));

    // alice calls out; the registrar's 2xx after the transaction ended goes to her signed for her
    // endpoint, which the flow token in our Via names.
    let out = "INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.5;branch=z9hG4bKo1\r\n\
Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=o;epid=ea\r\nTo: <sip:bob@example.com>\r\n\
Call-ID: o1\r\nCSeq: 1 INVITE\r\nAuthorization: NTLM x\r\nContact: <sip:alice@10.0.0.5;transport=tcp>\r\n\
Content-Length: 0\r\n\r\n";
    let sent = h.feed(alice(), out);
    let forwarded = sent
        .into_iter()
        .find(|s| s.to.addr() == registrar.remote)
        .expect("INVITE to the registrar")
        .msg;
    let ok = build_response(&forwarded, 200, "OK", Some("bo"), &[]).unwrap();
    assert_eq!(h.feed_msg(registrar, ok.clone()).len(), 1);
    h.advance(Duration::from_secs(40));
    rec.0.lock().unwrap().clear();
    let sent = h.feed_msg(registrar, ok);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].to, Target::Flow(alice()));
    assert_eq!(sent[0].msg.header("X-Signed"), Some("yes"));
    assert_eq!(
        rec.0.lock().unwrap().as_slice(),
        ["out Response SIP/2.0 200 OK epid=Some(\"ea\") note=None"]
    );
}

/// A call from the servers behind (the registrar's connection) to alice: once that connection
/// closes (Kamailio closes an idle TCP connection after 120 s, and either side after a restart),
/// alice's BYE still reaches the registrar, by its address, as any of her requests does. Before,
/// the Record-Route entry on the server side carried a token naming the server's connection, and
/// every in-dialog request of alice's got 430 once it closed: the call could not be ended.
#[test]
fn a_clients_in_dialog_request_reaches_the_server_after_its_connection_closed() {
    let rec = Recorder::default();
    let (mut h, registrar, path) = edge_with_signed_in_alice(&rec);
    let sent = h.feed(
        registrar,
        &from_registrar("INVITE", "z9hG4bKsc1", &path, ""),
    );
    let invite = sent_request(&sent, "INVITE");
    let route_set = record_route(&invite);
    assert_eq!(route_set.len(), 2, "{route_set:?}");
    h.edge.flow_closed(registrar.id, h.now);
    let bye = format!(
        "BYE sip:bob@203.0.113.9 SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.5;branch=z9hG4bKsc2\r\n\
Route: {}\r\nMax-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=alice;epid=ea\r\n\
To: <sip:bob@example.com>;tag=b\r\nCall-ID: z9hG4bKsc1\r\nCSeq: 2 BYE\r\n\
Authorization: NTLM x\r\nContent-Length: 0\r\n\r\n",
        route_set.join(", ")
    );
    let sent = h.feed(alice(), &bye);
    let got: Vec<_> = sent
        .iter()
        .map(|s| (s.to, s.msg.start_line().to_owned()))
        .collect();
    assert!(
        sent.iter().any(|s| s.msg.method() == Some("BYE")
            && s.to.addr() == registrar.remote
            && s.to != Target::Flow(registrar)),
        "alice's BYE reaches the registrar by its address: {got:?}"
    );
    assert!(
        !sent.iter().any(|s| s.msg.status_code() == Some(430)),
        "{got:?}"
    );
}

/// alice, called from behind the next hop, answers with a Record-Route of her own: the caller's
/// user agent would send its ACK and BYE past the gateway and the next hop, to a host and port
/// she chose inside the network. The 200 relayed carries the set the INVITE was sent with.
/// Before, it carried hers.
#[test]
fn a_clients_answer_carries_the_record_route_its_request_was_sent_with() {
    let rec = Recorder::default();
    let (mut h, registrar, path) = edge_with_signed_in_alice(&rec);
    let sent = h.feed(
        registrar,
        &from_registrar("INVITE", "z9hG4bKrr1", &path, ""),
    );
    let invite = sent_request(&sent, "INVITE");
    let sent_set = record_route(&invite);
    assert!(!sent_set.is_empty());
    let mut ok = answer(&invite, 200, "OK");
    ok.remove_header("Record-Route");
    ok.push_header("Record-Route", "<sip:10.0.0.99:22;lr>");
    ok.push_header("Contact", "<sip:alice@10.0.0.5;transport=tcp>");
    let out = h.feed_msg(alice(), ok);
    let relayed = out
        .iter()
        .find(|s| s.msg.status_code() == Some(200))
        .expect("200 relayed");
    assert_eq!(relayed.to, Target::Flow(registrar));
    let relayed_set: Vec<String> = relayed
        .msg
        .header_all("Record-Route")
        .map(str::to_owned)
        .collect();
    assert_eq!(relayed_set, sent_set);
}

/// The Record-Route token of alice's connection is in every request of a dialog with her, so
/// mallory, who once called her (or was called), has it. His MESSAGE routed by it, out of that
/// dialog (with or without a To tag he made up), goes to the next hop like his other requests,
/// not straight to alice's connection signed for her, past whatever the servers enforce. Before,
/// it reached alice.
#[test]
fn a_clients_out_of_dialog_request_does_not_follow_another_clients_token() {
    let rec = Recorder::default();
    let (mut h, registrar, path) = edge_with_signed_in_alice(&rec);
    let sent = h.feed(
        registrar,
        &from_registrar("INVITE", "z9hG4bKtk1", &path, ""),
    );
    let invite = sent_request(&sent, "INVITE");
    let alices_token = invite
        .header_all("Record-Route")
        .next()
        .expect("Record-Route")
        .to_owned();
    let mallory = flow(7, Transport::Tcp, "198.51.100.7:40007");
    // His route set as a dialog's would be: this gateway's entry on his side first (its token,
    // were there one, names his own flow and is not followed), then alice's.
    let message = |branch: &str, call_id: &str, to_tag: &str| {
        format!(
            "MESSAGE sip:alice@example.com SIP/2.0\r\nVia: SIP/2.0/TCP 198.51.100.7:40007;branch={branch}\r\n\
Route: <sip:{GW}:5060;transport=tcp;lr>\r\nRoute: {alices_token}\r\nMax-Forwards: 70\r\nFrom: <sip:mallory@example.com>;tag=m;epid=em\r\n\
To: <sip:alice@example.com>{to_tag}\r\nCall-ID: {call_id}\r\nCSeq: 1 MESSAGE\r\n\
Authorization: NTLM x\r\nContent-Length: 0\r\n\r\n"
        )
    };
    // Out of a dialog, and with a To tag of mallory's making on a Call-ID of his: to the next
    // hop, like his other requests (pidgin-sipe shows a MESSAGE whatever its To tag says).
    for (branch, to_tag) in [("z9hG4bKtk2", ""), ("z9hG4bKtk3", ";tag=forged")] {
        let sent = h.feed(mallory, &message(branch, branch, to_tag));
        let to: Vec<_> = sent.iter().map(|s| s.to).collect();
        assert!(
            !to.contains(&Target::Flow(alice())),
            "alice's token took mallory's MESSAGE ({to_tag:?}) to her: {to:?}"
        );
        assert!(
            sent.iter()
                .any(|s| s.msg.method() == Some("MESSAGE") && s.to.addr() == registrar.remote),
            "to the next hop: {to:?}"
        );
    }
    // Within the dialog the token was issued for (its Call-ID), it is followed.
    let sent = h.feed(mallory, &message("z9hG4bKtk4", "z9hG4bKtk1", ";tag=a"));
    assert!(
        sent.iter().any(|s| s.to == Target::Flow(alice())),
        "{:?}",
        sent.iter().map(|s| s.to).collect::<Vec<_>>()
    );
}

/// A server trusted by its address, not a next hop (an IVR or a PBX beside an embedded
/// registrar), calls alice over TCP: her ACK and BYE go back over its connection, through the
/// token in the Record-Route entry on its side. A client may not name it by address, and in
/// registrar mode there is no next hop to fall back on: without the token her ACK was dropped and
/// her BYE got 404.
#[test]
fn a_clients_in_dialog_requests_reach_a_trusted_server_that_called_it() {
    let mut cfg = EdgeConfig::new(local(), Secret::new([3; 32]));
    cfg.trusted_peers = vec!["203.0.113.51".parse().unwrap()];
    let mut h = H::new(cfg);
    h.register(alice(), "alice", "ea");
    let ivr = flow(12, Transport::Tcp, "203.0.113.51:40123");
    let sent = h.feed(
        ivr,
        "INVITE sip:alice@example.com SIP/2.0\r\nVia: SIP/2.0/TCP 203.0.113.51:5060;branch=z9hG4bKivr1\r\n\
Max-Forwards: 70\r\nFrom: <sip:ivr@example.com>;tag=i\r\nTo: <sip:alice@example.com>\r\n\
Call-ID: ivr-call\r\nCSeq: 1 INVITE\r\nContact: <sip:ivr@203.0.113.51:5060;transport=tcp>\r\n\
Content-Length: 0\r\n\r\n",
    );
    let invite = sent_request(&sent, "INVITE");
    let route = record_route(&invite);
    let ack = format!(
        "ACK sip:ivr@203.0.113.51:5060;transport=tcp SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.5:5060;branch=z9hG4bKack1\r\n\
Route: {}\r\nMax-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a\r\nTo: <sip:ivr@example.com>;tag=i\r\n\
Call-ID: ivr-call\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
        route.join(", ")
    );
    let sent = h.feed(alice(), &ack);
    assert!(
        sent.iter()
            .any(|s| s.msg.method() == Some("ACK") && s.to == Target::Flow(ivr)),
        "alice's ACK reaches the IVR: {:?}",
        sent.iter()
            .map(|s| (s.to, s.msg.start_line().to_owned()))
            .collect::<Vec<_>>()
    );
}

#[test]
fn edge_mode_refuses_requests_for_an_ended_sa_and_answers_430_for_a_gone_flow() {
    let rec = Recorder::default();
    let (mut h, registrar, path) = edge_with_signed_in_alice(&rec);
    // The flow is gone: the registrar learns it from a 430 (RFC 5626 §5.3), not a timeout.
    let sent = h.feed(
        registrar,
        &from_registrar("MESSAGE", "z9hG4bKg1", &path, ""),
    );
    assert_eq!(sent[0].to, Target::Flow(alice()));
    let token = sent[0].token.clone().expect("send token");
    h.edge.send_failed(&token, h.now);
    let sent = h.drain();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].to, Target::Flow(registrar));
    assert_eq!(sent[0].msg.status_code(), Some(430));
    // alice's SA ends: nothing unsigned goes to her, the registrar gets 480 at once.
    rec.end_sa("ea");
    let sent = h.feed(
        registrar,
        &from_registrar("MESSAGE", "z9hG4bKg2", &path, ""),
    );
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].to, Target::Flow(registrar));
    assert_eq!(sent[0].msg.status_code(), Some(480));
    assert!(h.reports().contains(&Report::Dropped(DropReason::Auth)));
}

#[test]
fn auth_hook_sees_client_messages_and_signs_last() {
    let rec = Recorder::default();
    let mut cfg = EdgeConfig::new(local(), Secret::new([3; 32]));
    let server = flow(9, Transport::Tcp, "203.0.113.1:5060");
    cfg.next_hops = vec![NextHop {
        transport: Transport::Tcp,
        addr: server.remote,
    }];
    let mut h = H {
        edge: Edge::with_auth(cfg, Box::new(rec.clone())),
        now: Now {
            mono: Instant::now(),
            wall: SystemTime::now(),
        },
        reports: Vec::new(),
    };
    // Challenged: the 401 goes out through the outbound stage.
    let reg = "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5;branch=z9hG4bKa1\r\n\
From: <sip:bob@example.com>;tag=e;epid=eb\r\nTo: <sip:bob@example.com>\r\nCall-ID: a1\r\n\
CSeq: 1 REGISTER\r\nContact: <sip:bob@10.0.0.5>\r\nContent-Length: 0\r\n\r\n";
    let sent = h.feed(bob(), reg);
    assert_eq!(sent[0].msg.status_code(), Some(401));
    assert_eq!(sent[0].msg.header("X-Signed"), Some("yes"));
    let authed = reg
        .replace("z9hG4bKa1", "z9hG4bKa2")
        .replace("CSeq: 1", "Authorization: NTLM x\r\nCSeq: 2");
    let sent = h.feed(bob(), &authed);
    assert_eq!(sent[0].msg.status_code(), Some(200));
    // A request from the server side to bob: no inbound stage, outbound stage with bob's epid.
    let req = "MESSAGE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/TCP 203.0.113.1;branch=z9hG4bKsv\r\n\
Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a\r\nTo: <sip:bob@example.com>\r\n\
Call-ID: a3\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n";
    let sent = h.feed(server, req);
    assert_eq!(sent[0].to, Target::Flow(bob()));
    let fwd = sent[0].msg.clone();
    let bytes = String::from_utf8(fwd.to_bytes()).unwrap();
    assert!(
        bytes.ends_with("X-Signed: yes\r\n\r\n"),
        "signed after every other edit: {bytes}"
    );
    // bob's answer passes the inbound stage; the server gets it unsigned by us.
    let ok = build_response(&fwd, 200, "OK", Some("t"), &[]).unwrap();
    let sent = h.feed_msg(bob(), ok);
    assert_eq!(sent[0].to, Target::Flow(server));
    assert_eq!(sent[0].msg.header("X-Signed"), None);
    let log = rec.0.lock().unwrap().clone();
    assert_eq!(
        log,
        vec![
            "in REGISTER sip:example.com SIP/2.0 FlowId(0)".to_owned(),
            "out Response SIP/2.0 401 Unauthorized epid=None note=None".into(),
            "in REGISTER sip:example.com SIP/2.0 FlowId(0)".into(),
            // A response is for its note; the endpoint registered over the flow is not offered.
            "out Response SIP/2.0 200 OK epid=None note=Some(\"a1\")".into(),
            "out Request MESSAGE sip:bob@10.0.0.5 SIP/2.0 epid=Some(\"eb\") note=None".into(),
            "in SIP/2.0 200 OK FlowId(0) answering=Some(Some(\"eb\"))".into(),
        ]
    );
}

#[test]
fn transaction_limit_answers_503() {
    let mut cfg = EdgeConfig::new(local(), Secret::new([3; 32]));
    cfg.max_transactions = 1;
    cfg.next_hops = vec![NextHop {
        transport: Transport::Tcp,
        addr: "203.0.113.1:5060".parse().unwrap(),
    }];
    let mut h = H::new(cfg);
    h.feed(alice(), &invite("z9hG4bKl1", "x", 70));
    let sent = h.feed(alice(), &invite("z9hG4bKl2", "x", 70));
    assert_eq!(sent[0].msg.status_code(), Some(503));
    assert!(
        h.reports()
            .contains(&Report::Limit(sagw_proxy::LimitKind::Transactions))
    );
}

/// A REGISTER answered here over UDP is kept, as its answer, for Timer J (64 x T1): its
/// retransmissions get the very same bytes until then, it counts against `max_transactions`
/// like any transaction, and once Timer J has fired the same request is a new transaction.
#[test]
fn an_answer_made_here_is_repeated_until_timer_j_and_counts_against_the_limit() {
    let mut cfg = EdgeConfig::new(local(), Secret::new([3; 32]));
    cfg.max_transactions = 1;
    let mut h = H::new(cfg);
    let reg = "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.7;branch=z9hG4bKtj\r\n\
From: <sip:carol@example.com>;tag=c\r\nTo: <sip:carol@example.com>\r\nCall-ID: tj\r\nCSeq: 1 REGISTER\r\n\
Contact: <sip:carol@10.0.0.7>\r\nContent-Length: 0\r\n\r\n";
    let carol = flow(0, Transport::Udp, "198.51.100.3:5060");
    let first = h.feed(carol, reg);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].msg.status_code(), Some(200));
    assert_eq!(h.edge.stats().server_transactions, 1);
    // The limit counts it: another request is refused while it lingers.
    let other = reg.replace("z9hG4bKtj", "z9hG4bKtk");
    let refused = h.feed(carol, &other);
    assert_eq!(refused[0].msg.status_code(), Some(503));
    h.advance(Duration::from_secs(31));
    let again = h.feed(carol, reg);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].msg.to_bytes(), first[0].msg.to_bytes());
    // 64 x T1 and at most one clean-up grid step after the answer: forgotten.
    h.advance(Duration::from_millis(1_200));
    assert_eq!(h.edge.stats().server_transactions, 0);
    // What is left to wake for is the binding's expiry, an hour away.
    assert!(
        h.edge
            .poll_timeout()
            .is_none_or(|t| t > h.now.mono + Duration::from_secs(3000))
    );
    let anew = h.feed(carol, reg);
    assert_eq!(anew.len(), 1);
    // Judged anew, not repeated: to the registrar the same Call-ID and CSeq as its binding's
    // is out of order (RFC 3261 §10.3 step 7).
    assert_eq!(anew[0].msg.status_code(), Some(500));
}

/// A proxied MESSAGE over UDP is not one of the answers kept alone (`edge::answered`): its
/// server transaction keeps its state for Timer J, so the callee's retransmitted 200 is still
/// relayed to the caller, and the caller's retransmission still gets the 200 again.
#[test]
fn a_proxied_udp_message_keeps_its_transaction_for_late_responses() {
    let mut h = H::registrar();
    let carol = flow(0, Transport::Udp, "198.51.100.3:5060");
    h.register(carol, "carol", "ec");
    h.register(bob(), "bob", "eb");
    let msg = "MESSAGE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.7;branch=z9hG4bKpm\r\n\
Max-Forwards: 70\r\nFrom: <sip:carol@example.com>;tag=c9\r\nTo: <sip:bob@example.com>\r\nCall-ID: pm\r\n\
CSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi";
    let sent = h.feed(carol, msg);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].to, Target::Flow(bob()));
    let ok = build_response(&sent[0].msg, 200, "OK", Some("bb"), &[]).unwrap();
    let relayed = h.feed_msg(bob(), ok.clone());
    assert_eq!(relayed.len(), 1);
    assert_eq!(relayed[0].to, Target::Flow(carol));
    assert_eq!(relayed[0].msg.status_code(), Some(200));
    h.advance(Duration::from_secs(5));
    let again = h.feed_msg(bob(), ok);
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0].to, Target::Flow(carol));
    assert_eq!(again[0].msg.status_code(), Some(200));
    let repeated = h.feed(carol, msg);
    assert_eq!(repeated.len(), 1);
    assert_eq!(repeated[0].to, Target::Flow(carol));
    assert_eq!(repeated[0].msg.to_bytes(), relayed[0].msg.to_bytes());
}

#[test]
fn a_503_from_a_next_hop_fails_over() {
    let mut h = with_hops(2);
    let sent = h.feed(alice(), &invite("z9hG4bKh503", "carol", 70));
    let first = sent[1].msg.clone();
    assert_eq!(sent[1].to.addr(), "203.0.113.1:5060".parse().unwrap());
    let hop1 = flow(9, Transport::Tcp, "203.0.113.1:5060");
    let busy = build_response(&first, 503, "Service Unavailable", Some("s"), &[]).unwrap();
    let sent = h.feed_msg(hop1, busy);
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[0].msg.method(), Some("ACK"), "the 503 is acknowledged");
    assert_eq!(sent[0].to.addr(), "203.0.113.1:5060".parse().unwrap());
    assert_eq!(sent[1].to.addr(), "203.0.113.2:5060".parse().unwrap());
    assert_eq!(sent[1].msg.method(), Some("INVITE"));
    // A 503 from the last hop is passed on.
    let hop2 = flow(10, Transport::Tcp, "203.0.113.2:5060");
    let busy = build_response(&sent[1].msg, 503, "Service Unavailable", Some("s"), &[]).unwrap();
    let sent = h.feed_msg(hop2, busy);
    assert_eq!(sent.last().unwrap().to, Target::Flow(alice()));
    assert_eq!(sent.last().unwrap().msg.status_code(), Some(503));
}

/// bob signed in from two devices: a UDP one (epid b1) and a TLS one (epid b2).
fn two_devices() -> (H, Flow, Flow) {
    let mut h = H::registrar();
    h.register(alice(), "alice", "ea");
    let d1 = bob();
    let d2 = flow(3, Transport::Tls, "198.51.100.9:50000");
    for (f, epid, cseq) in [(d1, "b1", 1), (d2, "b2", 2)] {
        let t = f.transport.via_token();
        let reg = format!(
            "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/{t} 10.0.0.6;branch=z9hG4bKd{epid}\r\n\
From: <sip:bob@example.com>;tag=d{epid};epid={epid}\r\nTo: <sip:bob@example.com>\r\nCall-ID: reg-{epid}\r\n\
CSeq: {cseq} REGISTER\r\nContact: <sip:bob@10.0.0.6:{cseq}>\r\nContent-Length: 0\r\n\r\n"
        );
        assert_eq!(h.feed(f, &reg)[0].msg.status_code(), Some(200));
    }
    (h, d1, d2)
}

fn fork_invite(h: &mut H, branch: &str) -> (Message, Message) {
    let sent = h.feed(alice(), &invite(branch, "bob", 70));
    assert_eq!(sent.len(), 3, "100 + one INVITE per device: {sent:?}");
    assert_eq!(sent[0].msg.status_code(), Some(100));
    // Most recent binding first.
    assert_eq!(sent[1].to.transport(), Transport::Tls);
    assert_eq!(sent[2].to.transport(), Transport::Udp);
    assert_ne!(
        vias(&sent[1].msg)[0],
        vias(&sent[2].msg)[0],
        "one branch per fork"
    );
    (sent[2].msg.clone(), sent[1].msg.clone())
}

#[test]
fn forks_to_every_device_first_2xx_wins_and_cancels_the_rest() {
    let (mut h, d1, d2) = two_devices();
    let (to_d1, to_d2) = fork_invite(&mut h, "z9hG4bKf1");
    // Both ring; d1 answers; d2 gets a CANCEL; its 487 is ACKed and goes no further.
    assert_eq!(
        h.feed_msg(d1, answer(&to_d1, 180, "Ringing"))[0].to,
        Target::Flow(alice())
    );
    assert_eq!(
        h.feed_msg(d2, answer(&to_d2, 180, "Ringing"))[0].to,
        Target::Flow(alice())
    );
    let sent = h.feed_msg(d1, answer(&to_d1, 200, "OK"));
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[0].to, Target::Flow(alice()));
    assert_eq!(sent[0].msg.status_code(), Some(200));
    assert_eq!(sent[1].to, Target::Flow(d2));
    assert_eq!(sent[1].msg.method(), Some("CANCEL"));
    let sent = h.feed_msg(d2, answer(&to_d2, 487, "Request Terminated"));
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].msg.method(), Some("ACK"));
    assert_eq!(sent[0].to, Target::Flow(d2));
}

#[test]
fn forks_wait_for_every_branch_and_send_the_best_failure() {
    let (mut h, d1, d2) = two_devices();
    let (to_d1, to_d2) = fork_invite(&mut h, "z9hG4bKf2");
    // d2 is busy: ACKed, held while d1 is still pending.
    let sent = h.feed_msg(d2, answer(&to_d2, 486, "Busy Here"));
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].msg.method(), Some("ACK"));
    // d1 rejects too: the best of the two goes to alice (the busy one: a 480 says nothing of
    // the user).
    let sent = h.feed_msg(d1, answer(&to_d1, 480, "Temporarily Unavailable"));
    assert_eq!(sent.last().unwrap().to, Target::Flow(alice()));
    assert_eq!(sent.last().unwrap().msg.status_code(), Some(486));
    assert_eq!(
        sent.iter()
            .filter(|s| s.to == Target::Flow(alice()))
            .count(),
        1
    );
}

#[test]
fn a_6xx_from_one_fork_ends_the_search() {
    let (mut h, d1, d2) = two_devices();
    let (to_d1, to_d2) = fork_invite(&mut h, "z9hG4bKf3");
    h.feed_msg(d1, answer(&to_d1, 180, "Ringing"));
    let sent = h.feed_msg(d2, answer(&to_d2, 603, "Decline"));
    let to_alice: Vec<_> = sent
        .iter()
        .filter(|s| s.to == Target::Flow(alice()))
        .collect();
    assert_eq!(to_alice.len(), 1);
    assert_eq!(to_alice[0].msg.status_code(), Some(603));
    assert!(
        sent.iter()
            .any(|s| s.to == Target::Flow(d1) && s.msg.method() == Some("CANCEL")),
        "{sent:?}"
    );
}

#[test]
fn forked_message_answers_once() {
    let (mut h, d1, d2) = two_devices();
    let msg = "MESSAGE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.5;branch=z9hG4bKfm\r\n\
Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a9\r\nTo: <sip:bob@example.com>\r\nCall-ID: fm\r\n\
CSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n";
    let sent = h.feed(alice(), msg);
    assert_eq!(sent.len(), 2);
    let (m2, m1) = (sent[0].msg.clone(), sent[1].msg.clone());
    let ok = h.feed_msg(d1, build_response(&m1, 200, "OK", Some("x"), &[]).unwrap());
    assert_eq!(ok.len(), 1);
    assert_eq!(ok[0].to, Target::Flow(alice()));
    let again = h.feed_msg(d2, build_response(&m2, 200, "OK", Some("y"), &[]).unwrap());
    assert!(again.is_empty(), "second 200 absorbed: {again:?}");
}

#[test]
fn timer_c_cancels_the_ringing_branch() {
    let mut cfg = EdgeConfig::new(local(), Secret::new([3; 32]));
    cfg.timers.timer_c = Duration::from_secs(10);
    let mut h = H::new(cfg);
    h.register(bob(), "bob", "eb");
    let sent = h.feed(alice(), &invite("z9hG4bKtc", "bob", 70));
    let fwd = sent[1].msg.clone();
    h.feed_msg(bob(), answer(&fwd, 180, "Ringing"));
    let sent = h.advance(Duration::from_secs(11));
    let cancel: Vec<_> = sent
        .iter()
        .filter(|s| s.msg.method() == Some("CANCEL"))
        .collect();
    // Sent at Timer C, then retransmitted over UDP (T1 = 500 ms) with the same bytes.
    assert_eq!(cancel.len(), 2, "{sent:?}");
    assert_eq!(cancel[0].to, Target::Flow(bob()));
    assert_eq!(cancel[0].msg.to_bytes(), cancel[1].msg.to_bytes());
    // bob never answers the CANCEL: after 64*T1 alice gets 408.
    let sent = h.advance(Duration::from_secs(40));
    let last = sent
        .iter()
        .rev()
        .find(|s| s.to == Target::Flow(alice()))
        .unwrap();
    assert_eq!(last.msg.status_code(), Some(408));
    assert_eq!(h.edge.stats().client_transactions, 0);
}

/// Timers that would do nothing when they fire (Timer A and B once a provisional has arrived,
/// the transaction's timers once it is gone) are not what `poll_timeout` names: each of them
/// used to wake the driver for nothing.
#[test]
fn poll_timeout_names_only_timers_with_work_to_do() {
    let mut cfg = EdgeConfig::new(local(), Secret::new([5; 32]));
    cfg.next_hops = vec![NextHop {
        transport: Transport::Udp,
        addr: "203.0.113.1:5060".parse().unwrap(),
    }];
    let mut h = H::new(cfg);
    let t0 = h.now.mono;
    let sent = h.feed(alice(), &invite("z9hG4bKst1", "carol", 70));
    let fwd = sent.last().unwrap().msg.clone();
    assert_eq!(fwd.method(), Some("INVITE"));
    // Timer A (T1 = 500 ms) is live while nothing is heard.
    let first = h.edge.poll_timeout().unwrap();
    assert!(first <= t0 + Duration::from_millis(500), "{:?}", first - t0);

    // A 180 stops Timer A and replaces Timer B by Timer C (3 minutes).
    let next_hop = flow(0, Transport::Udp, "203.0.113.1:5060");
    let sent = h.feed_msg(next_hop, answer(&fwd, 180, "Ringing"));
    assert_eq!(sent.len(), 1);
    let next = h.edge.poll_timeout().unwrap();
    assert!(
        next >= t0 + Duration::from_secs(180),
        "a stale Timer A/B is still named: {:?} after the start",
        next - t0
    );
    // Nothing is lost: the 200 and the ACK still go through, and Timer C never fires.
    let sent = h.feed_msg(next_hop, answer(&fwd, 200, "OK"));
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].msg.status_code(), Some(200));
    let later = h.advance(Duration::from_secs(200));
    assert!(
        later.iter().all(|s| s.msg.method() != Some("CANCEL")),
        "{later:?}"
    );
    assert_eq!(h.edge.stats().client_transactions, 0);
    assert_eq!(h.edge.stats().server_transactions, 0);
}

/// The clean-up timers of transactions that finished a few milliseconds apart fall due
/// together (one wake-up of the driver, not one per transaction), never early, and at most one
/// grid step (128 ms) late.
#[test]
fn cleanup_timers_of_nearby_transactions_share_a_wake_up() {
    let mut h = H::registrar();
    let t0 = h.now.mono;
    for i in 0..20 {
        let f = flow(0, Transport::Udp, &format!("198.51.100.{}:5060", i + 1));
        let sent = h.feed(
            f,
            &format!(
                "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.{i}:5060;branch=z9hG4bKcg{i}\r\n\
Max-Forwards: 70\r\nFrom: <sip:u{i}@example.com>;tag=c{i}\r\nTo: <sip:u{i}@example.com>\r\n\
Call-ID: cg-{i}\r\nCSeq: 1 REGISTER\r\nContact: <sip:u{i}@10.0.0.{i}:5060>\r\nExpires: 3600\r\n\
Content-Length: 0\r\n\r\n"
            ),
        );
        assert_eq!(sent[0].msg.status_code(), Some(200));
        h.now = h.now.after(Duration::from_millis(3));
    }
    assert_eq!(h.edge.stats().server_transactions, 20);
    // Timer J (64 x T1 = 32 s) of each: collect the instants the driver is asked to wake at.
    let mut wakes = Vec::new();
    while let Some(t) = h.edge.poll_timeout() {
        if t > t0 + Duration::from_secs(40) {
            break;
        }
        wakes.push(t);
        h.now = Now {
            mono: t,
            wall: h.now.wall,
        };
        h.edge.handle_timeout(h.now);
        h.drain();
    }
    assert_eq!(h.edge.stats().server_transactions, 0);
    assert!(
        wakes.len() <= 2,
        "{} wake-ups for 20 clean-ups",
        wakes.len()
    );
    let first = *wakes.first().unwrap();
    let last = *wakes.last().unwrap();
    assert!(first >= t0 + Duration::from_secs(32), "{:?}", first - t0);
    assert!(
        last < t0 + Duration::from_millis(32_000 + 19 * 3 + 128),
        "{:?}",
        last - t0
    );
}

#[test]
fn a_clients_stray_response_is_not_reflected() {
    let mut h = with_hops(1);
    // A response that matches no transaction, dressed with a Via that looks like ours and a second
    // one naming an internal host: from a client it goes nowhere (the gateway is no reflector)...
    let stray = format!(
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP {GW}:5060;branch=z9hG4bKsgwabc.def\r\n\
Via: SIP/2.0/TCP 10.9.9.9:22;branch=z9hG4bKx\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\n\
Call-ID: s1\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n"
    );
    assert!(h.feed(alice(), &stray).is_empty());
    assert!(h.reports().contains(&Report::Dropped(DropReason::Stray)));
    // ... not even as an INVITE 2xx, unless our Via carries a flow token of ours.
    let invite_ok = stray.replace("1 MESSAGE", "1 INVITE");
    assert!(h.feed(alice(), &invite_ok).is_empty());
    // The same from a next hop (a server) is routed by the next Via, as RFC 3261 §16.7 asks.
    let hop = flow(9, Transport::Tcp, "203.0.113.1:5060");
    let sent = h.feed(hop, &stray);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].to.addr(), "10.9.9.9:22".parse().unwrap());
}

#[test]
fn a_client_routes_only_to_next_hops_and_listed_targets() {
    let mut h = with_hops(1);
    let routed = |branch: &str, to: &str| {
        format!(
            "MESSAGE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.1;branch={branch}\r\n\
Route: <sip:{to};transport=tcp;lr>\r\nMax-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a\r\n\
To: <sip:bob@example.com>\r\nCall-ID: {branch}\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n"
        )
    };
    // Loopback, an internal host, our own other port: 403, nothing forwarded.
    for (i, to) in ["127.0.0.1:22", "10.9.9.9:5060", "192.0.2.10:5070"]
        .into_iter()
        .enumerate()
    {
        let sent = h.feed(alice(), &routed(&format!("z9hG4bKr{i}"), to));
        assert_eq!(sent.len(), 1, "{to}: {sent:?}");
        assert_eq!(sent[0].to, Target::Flow(alice()));
        assert_eq!(sent[0].msg.status_code(), Some(403), "{to}");
    }
    // The next hop (a record-routing server in the dialog's route set) is fine.
    let sent = h.feed(alice(), &routed("z9hG4bKrhop", "203.0.113.1:5060"));
    assert_eq!(sent[0].to.addr(), "203.0.113.1:5060".parse().unwrap());
    // An address that is a next hop over two transports keeps the one the Route names.
    let mut both = h.edge.config().clone();
    both.next_hops.push(NextHop {
        transport: Transport::Udp,
        addr: "203.0.113.1:5060".parse().unwrap(),
    });
    let mut h2 = H::new(both);
    let udp_route =
        routed("z9hG4bKrboth", "203.0.113.1:5060").replace(";transport=tcp", ";transport=udp");
    let sent = h2.feed(alice(), &udp_route);
    assert_eq!(sent[0].to.transport(), Transport::Udp, "{sent:?}");
    // Over its configured transport only (TCP here), whatever the Route says: a client's
    // `transport=udp` (or `tcp` to a `tls:` hop) does not pick a weaker one.
    let udp =
        routed("z9hG4bKrhopu", "203.0.113.1:5060").replace(";transport=tcp", ";transport=udp");
    let sent = h.feed(alice(), &udp);
    assert_eq!(
        sent[0].to,
        Target::Addr {
            transport: Transport::Tcp,
            addr: "203.0.113.1:5060".parse().unwrap()
        }
    );
    // A server may route anywhere (it is trusted to).
    let hop = flow(9, Transport::Tcp, "203.0.113.1:5060");
    let sent = h.feed(hop, &routed("z9hG4bKrsrv", "10.9.9.9:5060"));
    assert_eq!(sent[0].to.addr(), "10.9.9.9:5060".parse().unwrap());
    // An operator-listed target is fine too.
    let mut cfg = h.edge.config().clone();
    cfg.client_routes = vec![sagw_proxy::RouteTarget::Host("10.9.9.9".parse().unwrap())];
    let mut h = H::new(cfg);
    let sent = h.feed(alice(), &routed("z9hG4bKrok", "10.9.9.9:5060"));
    assert_eq!(sent[0].to.addr(), "10.9.9.9:5060".parse().unwrap());
}

/// A server that is not a next hop (a trusted peer, say another gateway of a pool) routes by
/// Route only where a client may, or to another server: what it relays can be a client's request
/// whose Route set the client wrote. Before, a signed-in user at gateway A sent a request whose
/// route set named the pool peer's flow token and then `127.0.0.1:6379`: A sent it to B over the
/// peer connection, and B, taking it for a server's, relayed it to its own loopback.
#[test]
fn a_trusted_peer_routes_only_where_a_client_or_a_server_may() {
    let mut cfg = with_hops(1).edge.config().clone();
    // 203.0.113.1 is the next hop's address too: listed so that its own connections (from
    // ephemeral ports) are a server's.
    cfg.trusted_peers = vec![
        "203.0.113.50".parse().unwrap(),
        "203.0.113.51".parse().unwrap(),
        "203.0.113.1".parse().unwrap(),
    ];
    let mut h = H::new(cfg);
    let peer = flow(9, Transport::Tcp, "203.0.113.50:41000");
    let routed = |branch: &str, to: &str| {
        format!(
            "MESSAGE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/TCP 203.0.113.50;branch={branch}\r\n\
Route: <sip:{to};transport=tcp;lr>\r\nMax-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a\r\n\
To: <sip:bob@example.com>\r\nCall-ID: {branch}\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n"
        )
    };
    for (i, to) in ["127.0.0.1:6379", "10.9.9.9:5060"].into_iter().enumerate() {
        let sent = h.feed(peer, &routed(&format!("z9hG4bKtp{i}"), to));
        assert!(
            !sent.iter().any(|s| s.to.addr() == to.parse().unwrap()),
            "a trusted peer's request relayed to {to}: {sent:?}"
        );
        assert_eq!(sent[0].msg.status_code(), Some(403), "{to}: {sent:?}");
    }
    // A next hop connecting from its own address, on any port, routes anywhere.
    let hop_conn = flow(10, Transport::Tcp, "203.0.113.1:40123");
    let sent = h.feed(hop_conn, &routed("z9hG4bKtphop", "10.9.9.9:5060"));
    assert_eq!(
        sent[0].to.addr(),
        "10.9.9.9:5060".parse().unwrap(),
        "{sent:?}"
    );
    // The next hop and another server are fine.
    for (i, to) in ["203.0.113.1:5060", "203.0.113.51:5060"]
        .into_iter()
        .enumerate()
    {
        let sent = h.feed(peer, &routed(&format!("z9hG4bKtpok{i}"), to));
        assert_eq!(sent[0].to.addr(), to.parse().unwrap(), "{sent:?}");
    }
}

/// What the next hop sends back when it loose-routes a request (Kamailio's `loose_route()`): its
/// own Route entry popped, its Via on top, to the next Route, which names this gateway.
fn bounced_by_the_hop(forwarded: &Message) -> Message {
    let mut m = forwarded.clone();
    let routes: Vec<String> = m
        .header_values("Route")
        .skip(1)
        .map(str::to_owned)
        .collect();
    m.remove_header("Route");
    for r in &routes {
        m.push_header("Route", r);
    }
    let branch = format!("z9hG4bKkam{}", forwarded.call_id().unwrap_or(""));
    m.insert_header(
        0,
        "Via",
        &format!("SIP/2.0/TCP 203.0.113.1:5060;branch={branch}"),
    );
    m
}

/// A client's Route set that bounces off the next hop back into the gateway: the next hop pops
/// its own entry and relays the request here, where, from a next hop's address, its Route set
/// was followed anywhere. Before, alice's `Route: <hop>, <gateway>, <127.0.0.1:6379>` reached
/// the gateway's own loopback (the Redis state store, or any internal host): the gateway popped
/// the entry alice wrote for it and took what followed for the next hop's own choice.
#[test]
fn a_clients_route_set_bounced_off_the_next_hop_goes_only_where_a_client_may() {
    let mut cfg = with_hops(1).edge.config().clone();
    cfg.trusted_peers = vec!["203.0.113.51".parse().unwrap()];
    let mut h = H::new(cfg);
    let hop = flow(9, Transport::Tcp, "203.0.113.1:5060");
    let routed = |method: &str, branch: &str, to: &str| {
        format!(
            "{method} sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.1;branch={branch}\r\n\
Route: <sip:203.0.113.1:5060;transport=tcp;lr>, <sip:{GW}:5060;transport=tcp;lr>, <sip:{to};transport=tcp;lr>\r\n\
Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a\r\nTo: <sip:bob@example.com>;tag=x\r\n\
Call-ID: {branch}\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
        )
    };
    for (i, to) in ["127.0.0.1:6379", "10.9.9.9:5060", "192.0.2.10:5070"]
        .into_iter()
        .enumerate()
    {
        // alice may name the next hop: her request goes there, the rest of her Route set with it.
        let sent = h.feed(alice(), &routed("MESSAGE", &format!("z9hG4bKbo{i}"), to));
        assert_eq!(sent.len(), 1, "{to}: {sent:?}");
        assert_eq!(sent[0].to.addr(), hop.remote, "{to}: {sent:?}");
        let back = h.feed_msg(hop, bounced_by_the_hop(&sent[0].msg));
        assert!(
            !back.iter().any(|s| s.to.addr() == to.parse().unwrap()),
            "alice's Route reached {to} through the next hop: {back:?}"
        );
        assert_eq!(back.len(), 1, "{to}: {back:?}");
        assert_eq!(back[0].to, Target::Flow(hop), "{to}: {back:?}");
        assert_eq!(back[0].msg.status_code(), Some(403), "{to}: {back:?}");
        // Her 2xx ACK, forwarded statelessly, is dropped rather than sent there.
        let sent = h.feed(alice(), &routed("ACK", &format!("z9hG4bKboa{i}"), to));
        assert_eq!(sent[0].to.addr(), hop.remote, "{to}: {sent:?}");
        let back = h.feed_msg(hop, bounced_by_the_hop(&sent[0].msg));
        assert!(back.is_empty(), "alice's ACK reached {to}: {back:?}");
    }
    // Beyond an entry of ours, the next hop's request still goes where a client's or another
    // server's may: a trusted peer, the next hop itself.
    for (i, to) in ["203.0.113.51:5060", "203.0.113.1:5060"]
        .into_iter()
        .enumerate()
    {
        let sent = h.feed(alice(), &routed("MESSAGE", &format!("z9hG4bKbok{i}"), to));
        let back = h.feed_msg(hop, bounced_by_the_hop(&sent[0].msg));
        assert_eq!(back.len(), 1, "{to}: {back:?}");
        assert_eq!(back[0].to.addr(), to.parse().unwrap(), "{to}: {back:?}");
    }
    // The next hop's own Route set, not through us, is followed anywhere (it is trusted to).
    let own = "MESSAGE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/TCP 203.0.113.1;branch=z9hG4bKown\r\n\
Route: <sip:10.9.9.9:5060;transport=tcp;lr>\r\nMax-Forwards: 70\r\nFrom: <sip:carol@example.com>;tag=c\r\n\
To: <sip:bob@example.com>\r\nCall-ID: own\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n";
    let sent = h.feed(hop, own);
    assert_eq!(
        sent[0].to.addr(),
        "10.9.9.9:5060".parse().unwrap(),
        "{sent:?}"
    );
    // A dialog the gateway record-routed: the next hop's in-dialog request reaches alice by the
    // token of hers in our Record-Route, past the entry of ours without one.
    let sent = h.feed(alice(), &invite("z9hG4bKborr", "bob", 70));
    let inv = sent.iter().find(|s| s.msg.is_request()).expect("INVITE");
    assert_eq!(inv.to.addr(), hop.remote, "{sent:?}");
    let rr: Vec<String> = inv
        .msg
        .header_values("Record-Route")
        .map(str::to_owned)
        .collect();
    assert_eq!(rr.len(), 2, "{rr:?}");
    let bye = format!(
        "BYE sip:alice@10.0.0.5:5060;transport=tcp SIP/2.0\r\nVia: SIP/2.0/TCP 203.0.113.1;branch=z9hG4bKbobye\r\n\
Route: {}, {}\r\nMax-Forwards: 70\r\nFrom: <sip:bob@example.com>;tag=b1\r\n\
To: \"Alice\" <sip:alice@example.com>;tag=a1\r\nCall-ID: call-1\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n",
        rr[0], rr[1]
    );
    let sent = h.feed(hop, &bye);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].to, Target::Flow(alice()), "{sent:?}");
}

#[test]
fn options_for_the_served_domain_is_answered_by_the_registrar() {
    let mut cfg = EdgeConfig::new(local(), Secret::new([3; 32]));
    cfg.domains = vec!["example.com".into()];
    let mut h = H::new(cfg);
    let options = |uri: &str, branch: &str| {
        format!(
            "OPTIONS {uri} SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.1;branch={branch}\r\nMax-Forwards: 70\r\n\
From: <sip:alice@example.com>;tag=a\r\nTo: <{uri}>\r\nCall-ID: {branch}\r\nCSeq: 1 OPTIONS\r\n\
Content-Length: 0\r\n\r\n"
        )
    };
    let sent = h.feed(alice(), &options("sip:example.com", "z9hG4bKo1"));
    assert_eq!(sent[0].msg.status_code(), Some(200));
    assert!(sent[0].msg.header("Allow").is_some());
    // Another domain is not ours to answer for.
    let sent = h.feed(alice(), &options("sip:example.org", "z9hG4bKo2"));
    assert_eq!(sent[0].msg.status_code(), Some(404));
}

#[test]
fn a_stream_flow_the_driver_trusts_is_a_server_until_it_closes() {
    let rec = Recorder::default();
    let mut h = H {
        edge: Edge::with_auth(
            EdgeConfig::new(local(), Secret::new([3; 32])),
            Box::new(rec.clone()),
        ),
        now: Now {
            mono: Instant::now(),
            wall: SystemTime::now(),
        },
        reports: Vec::new(),
    };
    let peer = flow(7, Transport::Tls, "203.0.113.20:40000");
    let options = |b: &str| {
        format!(
            "OPTIONS sip:{GW} SIP/2.0\r\nVia: SIP/2.0/TLS 203.0.113.20;branch=z9hG4bK{b}\r\n\
Max-Forwards: 70\r\nFrom: <sip:fe1@pool.example.com>;tag=f\r\nTo: <sip:{GW}>\r\nCall-ID: {b}\r\n\
CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
    };
    let seen = |rec: &Recorder| {
        rec.0
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with("in "))
            .count()
    };
    // Before: a client (its request passes the inbound stage).
    assert!(h.edge.is_client(&peer));
    h.feed(peer, &options("t1"));
    assert_eq!(seen(&rec), 1);
    // Trusted: a server, over this flow only; a UDP flow with the same id (a socket every peer
    // shares) is not.
    h.edge.trust_stream_flow(peer.id);
    assert!(!h.edge.is_client(&peer));
    assert!(
        h.edge
            .is_client(&flow(7, Transport::Udp, "203.0.113.20:40000"))
    );
    assert!(
        h.edge
            .is_client(&flow(8, Transport::Tls, "203.0.113.20:40000"))
    );
    let sent = h.feed(peer, &options("t2"));
    assert_eq!(sent[0].msg.status_code(), Some(200));
    assert_eq!(seen(&rec), 1, "a server's request skips the inbound stage");
    assert_eq!(
        sent[0].msg.header("X-Signed"),
        None,
        "nor is its answer signed"
    );
    // Closed: the id is forgotten.
    h.edge.flow_closed(peer.id, h.now);
    assert!(h.edge.is_client(&peer));
}

/// A TLS next hop's address and port make a server of the connection the gateway opened to it
/// (verified by its certificate), not of a connection accepted from there: whoever DNS names for
/// the hop (a forged answer's author) can connect from its own port 5061. A `trusted_peers`
/// address and a certificate still make an accepted one a server's.
#[test]
fn an_accepted_tls_connection_from_a_next_hops_address_is_a_client() {
    let hop = "203.0.113.60:5061";
    let mut cfg = EdgeConfig::new(local(), Secret::new([3; 32]));
    cfg.next_hops = vec![NextHop {
        transport: Transport::Tls,
        addr: hop.parse().unwrap(),
    }];
    cfg.trusted_peers = vec!["203.0.113.61".parse().unwrap()];
    let mut edge = Edge::new(cfg);
    let opened = flow(20, Transport::Tls, hop);
    assert!(
        !edge.is_client(&opened),
        "the connection the gateway opened"
    );
    let accepted = flow(21, Transport::Tls, hop);
    edge.accepted_tls_flow(accepted.id);
    assert!(edge.is_client(&accepted), "accepted from the hop's address");
    // Over TCP the address is all there is (docs/security.md B8a).
    let tcp = flow(21, Transport::Tcp, hop);
    assert!(edge.is_client(&tcp), "no TCP next hop at that address");
    let peer = flow(22, Transport::Tls, "203.0.113.61:40000");
    edge.accepted_tls_flow(peer.id);
    assert!(!edge.is_client(&peer), "a trusted_peers address");
    edge.trust_stream_flow(accepted.id);
    assert!(!edge.is_client(&accepted), "a certificate");
    // The mark ends with the flow: the id may name a connection the gateway opens later.
    edge.flow_closed(
        accepted.id,
        sagw_proxy::Now {
            mono: Instant::now(),
            wall: SystemTime::now(),
        },
    );
    assert!(!edge.is_client(&flow(21, Transport::Tls, hop)));
}

fn carol() -> Flow {
    flow(3, Transport::Tcp, "198.51.100.3:40003")
}

/// bob calls carol (INVITE, 180 back to bob); returns nothing, the INVITE stays open.
fn bob_rings_carol(h: &mut H) {
    h.register(bob(), "bob", "eb");
    h.register(carol(), "carol", "ec");
    let inv = "INVITE sip:carol@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.6:5060;branch=z9hG4bKbobinv;rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:bob@example.com>;tag=b1;epid=eb\r\nTo: <sip:carol@example.com>\r\n\
Call-ID: bobcall\r\nCSeq: 1 INVITE\r\nContact: <sip:bob@10.0.0.6:5060>\r\nContent-Length: 0\r\n\r\n";
    let sent = h.feed(bob(), inv);
    let fwd = sent
        .iter()
        .find(|s| s.to == Target::Flow(carol()))
        .expect("the INVITE reaches carol")
        .msg
        .clone();
    h.feed_msg(carol(), answer(&fwd, 180, "Ringing"));
}

/// A CANCEL with the Via of bob's INVITE (anyone the INVITE reached has seen it), sent over alice's
/// flow with her own From and a Call-ID and CSeq of her choice: it is not bob's to cancel from
/// there. Before, it cancelled bob's INVITE (CANCEL to carol, 487 to bob), and its 200 went to
/// alice with bob's note, which the gateway signs with bob's SA (a signing oracle over alice's
/// Call-ID and CSeq).
#[test]
fn a_cancel_from_another_flow_does_not_touch_the_invite() {
    let notes = NoteSpy::default();
    let mut h = H::registrar();
    h.edge = Edge::with_auth(h.edge.config().clone(), Box::new(notes.clone()));
    bob_rings_carol(&mut h);
    notes.0.lock().unwrap().clear();
    let cancel = "CANCEL sip:carol@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.6:5060;branch=z9hG4bKbobinv\r\n\
Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=x;epid=ea\r\nTo: <sip:carol@example.com>\r\n\
Call-ID: chosen-by-alice\r\nCSeq: 4242 CANCEL\r\nContent-Length: 0\r\n\r\n";
    let sent = h.feed(alice(), cancel);
    let got: Vec<_> = sent
        .iter()
        .map(|s| (s.to, s.msg.method().map(str::to_owned), s.msg.status_code()))
        .collect();
    assert!(got.is_empty(), "the foreign CANCEL did something: {got:?}");
    assert!(
        h.reports
            .iter()
            .any(|r| matches!(r, Report::Dropped(DropReason::ForeignTransaction))),
        "{:?}",
        h.reports
    );
    let log = notes.0.lock().unwrap().clone();
    assert!(
        !log.iter().any(|l| l.contains("epid=eb")),
        "something went out with bob's note: {log:#?}"
    );
    // bob's own CANCEL, over his flow, still cancels it.
    let cancel = "CANCEL sip:carol@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.6:5060;branch=z9hG4bKbobinv;rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:bob@example.com>;tag=b1;epid=eb\r\nTo: <sip:carol@example.com>\r\n\
Call-ID: bobcall\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n";
    let sent = h.feed(bob(), cancel);
    assert!(
        sent.iter()
            .any(|s| s.to == Target::Flow(carol()) && s.msg.method() == Some("CANCEL")),
        "bob's CANCEL reaches carol: {:?}",
        sent.iter()
            .map(|s| (s.to, s.msg.start_line().to_owned()))
            .collect::<Vec<_>>()
    );
}

/// A CANCEL that matches no transaction (its INVITE ended, or never reached us) goes through the
/// stage like any request; its 481 is signed with what the stage admitted it with. Before, the
/// 481 went out without the note (unsigned), and an SA client dropped it and waited 32 s.
#[test]
fn the_481_to_a_cancel_of_no_transaction_is_signed_as_it_was_admitted() {
    let notes = NoteSpy::default();
    let mut h = H::registrar();
    h.edge = Edge::with_auth(h.edge.config().clone(), Box::new(notes.clone()));
    let cancel = "CANCEL sip:carol@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKgone;rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a1;epid=ea\r\nTo: <sip:carol@example.com>\r\n\
Call-ID: gonecall\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n";
    let sent = h.feed(alice(), cancel);
    assert!(
        sent.iter()
            .any(|s| s.to == Target::Flow(alice()) && s.msg.status_code() == Some(481)),
        "{:?}",
        sent.iter()
            .map(|s| (s.to, s.msg.start_line().to_owned()))
            .collect::<Vec<_>>()
    );
    let log = notes.0.lock().unwrap().clone();
    assert!(
        log.iter()
            .any(|l| l.contains("481") && l.contains("verified epid=ea")),
        "the 481 went out without alice's note: {log:#?}"
    );
}

/// A draining gateway: a signed request is judged so that its 503 is signed; the stage's own
/// refusal (a 403 it signed) stands rather than an unsigned 503; and a handshake leg never
/// reaches the stage (it would make an SA, or run a worker job, at a gateway going away).
#[test]
fn a_draining_gateway_judges_signed_requests_and_starts_no_sign_in() {
    #[derive(Clone, Default)]
    struct Judged(Arc<Mutex<Vec<String>>>);
    impl ClientAuth for Judged {
        fn inbound(&mut self, msg: &mut Message, _ctx: &InboundContext<'_>) -> InboundVerdict {
            let from = msg.from().map(|f| f.uri.to_owned()).unwrap_or_default();
            self.0.lock().unwrap().push(from.clone());
            if from.contains("mallory") {
                let mut r = build_response(msg, 403, "Forbidden", Some("f"), &[]).unwrap();
                r.push_header("X-Signed", "by-the-stage");
                return InboundVerdict::Respond(r);
            }
            InboundVerdict::Continue {
                note: Some(Arc::new(from)),
                endpoint: None,
                client: None,
            }
        }
        fn outbound(&mut self, msg: &mut Message, ctx: &OutboundContext<'_>) -> OutboundVerdict {
            if let Some(n) = ctx.note.and_then(|n| n.downcast_ref::<String>()) {
                msg.push_header("X-Signed", n);
            }
            OutboundVerdict::Deliver
        }
    }
    let judged = Judged::default();
    let mut h = H::registrar();
    h.edge = Edge::with_auth(h.edge.config().clone(), Box::new(judged.clone()));
    h.edge.set_intake(sagw_proxy::Intake::Draining);
    let request = |user: &str, branch: &str, credentials: &str| {
        format!(
            "MESSAGE sip:carol@example.com SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.5;branch={branch}\r\n\
Max-Forwards: 70\r\nFrom: <sip:{user}@example.com>;tag=x;epid=e\r\nTo: <sip:carol@example.com>\r\n\
Call-ID: {branch}\r\nCSeq: 1 MESSAGE\r\n{credentials}Content-Length: 0\r\n\r\n"
        )
    };
    let answer = |sent: Vec<Sent>| {
        assert_eq!(sent.len(), 1, "{sent:?}");
        (
            sent[0].msg.status_code(),
            sent[0].msg.header("X-Signed").map(str::to_owned),
        )
    };
    let signed =
        "Proxy-Authorization: NTLM opaque=\"1\", crand=\"2\", cnum=\"3\", response=\"4\"\r\n";
    assert_eq!(
        answer(h.feed(alice(), &request("alice", "z9hG4bKd1", signed))),
        (Some(503), Some("sip:alice@example.com".to_owned()))
    );
    assert_eq!(
        answer(h.feed(alice(), &request("mallory", "z9hG4bKd2", signed))),
        (Some(403), Some("by-the-stage".to_owned()))
    );
    let leg = "Proxy-Authorization: NTLM qop=\"auth\", gssapi-data=\"TlRMTVNTUAADAAAA\"\r\n";
    assert_eq!(
        answer(h.feed(alice(), &request("bob", "z9hG4bKd3", leg))),
        (Some(503), None)
    );
    let shouted = "Proxy-Authorization: NTLM qop=\"auth\", GSSAPI-DATA=\"TlRMTVNTUAADAAAA\"\r\n";
    assert_eq!(
        answer(h.feed(alice(), &request("bob", "z9hG4bKd4", shouted))),
        (Some(503), None)
    );
    assert_eq!(
        *judged.0.lock().unwrap(),
        ["sip:alice@example.com", "sip:mallory@example.com"],
        "the handshake leg reached the stage"
    );
}

/// A stage whose note is the epid of the request it admitted (as the gateway's note is the SA that
/// verified it), and which records the note each outbound message is signed with.
#[derive(Clone, Default)]
struct NoteSpy(Arc<Mutex<Vec<String>>>);

impl ClientAuth for NoteSpy {
    fn inbound(&mut self, msg: &mut Message, _ctx: &InboundContext<'_>) -> InboundVerdict {
        let who = msg
            .from()
            .and_then(|f| f.param("epid"))
            .unwrap_or("")
            .to_owned();
        InboundVerdict::Continue {
            note: Some(Arc::new(format!("verified epid={who}"))),
            endpoint: None,
            client: None,
        }
    }
    fn outbound(&mut self, msg: &mut Message, ctx: &OutboundContext<'_>) -> OutboundVerdict {
        let note = ctx.note.and_then(|n| n.downcast_ref::<String>()).cloned();
        self.0.lock().unwrap().push(format!(
            "to {:?}: {} signed-with={note:?}",
            ctx.flow.id,
            msg.start_line()
        ));
        OutboundVerdict::Deliver
    }
}

/// A response to a request the gateway sent to an address (a next hop, a client route) comes from
/// that host. Another client that learnt the branch (anyone the request reached sees the Via
/// stack) and answers it over its own flow is not relayed; before, its 200 answered alice's
/// MESSAGE, judged as answering no endpoint (which the gateway's stage passes unsigned).
#[test]
fn a_client_cannot_answer_a_request_sent_to_an_address() {
    let mut cfg = EdgeConfig::new(local(), Secret::new([5; 32]));
    let hop: std::net::SocketAddr = "203.0.113.1:5060".parse().unwrap();
    cfg.next_hops = vec![NextHop {
        transport: Transport::Tcp,
        addr: hop,
    }];
    let mut h = H::new(cfg);
    let sent = h.feed(
        alice(),
        &message_to("alice", "sip:dave@other.example", "z9hG4bKa2d"),
    );
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].to.addr(), hop);
    let mallory = flow(66, Transport::Tcp, "198.51.100.66:4066");
    let forged = build_response(&sent[0].msg, 200, "OK", Some("mal"), &[]).unwrap();
    let out = h.feed_msg(mallory, forged);
    assert!(
        out.is_empty(),
        "mallory's 200 was relayed: {:?}",
        out.iter()
            .map(|s| (s.to, s.msg.start_line().to_owned()))
            .collect::<Vec<_>>()
    );
    assert!(
        h.reports
            .iter()
            .any(|r| matches!(r, Report::Dropped(DropReason::ResponseNotOurs))),
        "{:?}",
        h.reports
    );
    // The hop's own answer, over the connection to it, is.
    let server = flow(9, Transport::Tcp, "203.0.113.1:5060");
    let ok = build_response(&sent[0].msg, 200, "OK", Some("d1"), &[]).unwrap();
    let out = h.feed_msg(server, ok);
    assert!(
        out.iter()
            .any(|s| s.to == Target::Flow(alice()) && s.msg.status_code() == Some(200)),
        "the hop's 200 reaches alice"
    );
}

/// Edge mode: a Path a client puts in its own REGISTER is not forwarded. Path is for the proxies
/// on the way (RFC 3327); a client's entry naming this gateway, with another flow's token (bob's,
/// learnt from any Record-Route of a dialog with him), made the requests the registrar sends to
/// alice reach bob's flow, signed for bob.
#[test]
fn a_path_a_client_supplies_is_not_forwarded() {
    let (mut h, registrar) = edge_behind_registrar();
    let reg_b = "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.6;branch=z9hG4bKeb\r\n\
Max-Forwards: 70\r\nFrom: <sip:bob@example.com>;tag=e;epid=eb\r\nTo: <sip:bob@example.com>\r\nCall-ID: eb\r\n\
CSeq: 1 REGISTER\r\nContact: <sip:bob@10.0.0.6>\r\nContent-Length: 0\r\n\r\n";
    let sent = h.feed(bob(), reg_b);
    let bob_token_uri = sent[0]
        .msg
        .header("Path")
        .expect("bob's Path")
        .replace(";ob", "");
    let reg_a = format!(
        "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.5;branch=z9hG4bKea\r\n\
Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=e;epid=ea\r\nTo: <sip:alice@example.com>\r\nCall-ID: ea\r\n\
CSeq: 1 REGISTER\r\nPath: {bob_token_uri}\r\nPath: <sip:elsewhere.example;lr>\r\n\
Contact: <sip:alice@10.0.0.5;transport=tcp>\r\nContent-Length: 0\r\n\r\n"
    );
    let sent = h.feed(alice(), &reg_a);
    let paths: Vec<String> = sent[0].msg.header_all("Path").map(str::to_owned).collect();
    assert_eq!(paths.len(), 1, "only the gateway's own Path: {paths:?}");
    // The registrar routes a request for alice by the Path set it stored.
    let req = from_registrar("MESSAGE", "z9hG4bKsrvx", &paths.join(", "), "");
    let sent = h.feed(registrar, &req);
    let to: Vec<Target> = sent.iter().map(|s| s.to).collect();
    assert_eq!(
        to,
        vec![Target::Flow(alice())],
        "a request for alice went to {to:?}"
    );
}

/// Registrar mode forwards a REGISTER for a domain it does not serve to the next hops: a client's
/// own Path entries are removed there too (before, only in edge mode), or an entry with another
/// client's flow token would route the far registrar's requests for alice to that flow.
#[test]
fn a_path_a_client_supplies_is_not_forwarded_in_registrar_mode_either() {
    let mut cfg = with_hops(1).edge.config().clone();
    cfg.mode = Mode::Registrar;
    cfg.domains = vec!["example.com".into()];
    let mut h = H::new(cfg);
    let reg = "REGISTER sip:other.example SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.5;branch=z9hG4bKrp\r\n\
Max-Forwards: 70\r\nFrom: <sip:alice@other.example>;tag=e;epid=ea\r\nTo: <sip:alice@other.example>\r\n\
Call-ID: rp\r\nCSeq: 1 REGISTER\r\nPath: <sip:t1x0a000005x13c4.0123456789abcdef0123@192.0.2.10;lr>\r\n\
Contact: <sip:alice@10.0.0.5;transport=tcp>\r\nContent-Length: 0\r\n\r\n";
    let sent = h.feed(alice(), reg);
    let forwarded = sent
        .iter()
        .find(|s| s.to.addr() == "203.0.113.1:5060".parse().unwrap())
        .expect("forwarded to the next hop");
    assert_eq!(
        forwarded.msg.header_all("Path").count(),
        0,
        "the client's Path was forwarded: {:?}",
        forwarded.msg.header_all("Path").collect::<Vec<_>>()
    );
}

/// The flow token in the Via of a request the gateway forwards (`sgf`, for routing its
/// responses back) is seen by whoever receives any request from a client; it does not work as a
/// Route. Before, carol, having received one MESSAGE from alice, could send out-of-dialog
/// requests straight to alice's connection, past the registrar or next hop, signed for alice.
#[test]
fn a_via_flow_token_does_not_route_a_request() {
    let mut h = H::registrar();
    h.register(alice(), "alice", "ea");
    h.register(carol(), "carol", "ec");
    let sent = h.feed(
        alice(),
        &message_to("alice", "sip:carol@example.com", "z9hG4bKvt1"),
    );
    let to_carol = sent
        .iter()
        .find(|s| s.to == Target::Flow(carol()))
        .expect("the MESSAGE reached carol");
    let sgf = top_via_param(&to_carol.msg, "sgf");
    assert!(!sgf.is_empty());
    let forged = format!(
        "MESSAGE sip:nobody@example.com SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.7:5060;branch=z9hG4bKvt2\r\n\
Route: <sip:{sgf}@{GW}:5060;transport=tcp;lr>\r\nMax-Forwards: 70\r\nFrom: <sip:carol@example.com>;tag=c1\r\n\
To: <sip:nobody@example.com>\r\nCall-ID: vt2\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n"
    );
    let sent = h.feed(carol(), &forged);
    assert!(
        !sent.iter().any(|s| s.to == Target::Flow(alice())),
        "carol's request reached alice's connection by her Via token: {sent:?}"
    );
}

/// The security core takes `sip:ALICE@…` for alice, so the registrar does too: one AOR, whatever
/// the spelling (before, each case variant of a name was an AOR of its own, with bindings of its
/// own, which one account could multiply; and a call to `sip:alice@…` missed `sip:ALICE@…`'s).
#[test]
fn the_case_of_a_user_part_makes_no_other_address_of_record() {
    let mut h = H::registrar();
    let reg = "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.5:5060;branch=z9hG4bKcase\r\n\
Max-Forwards: 70\r\nFrom: <sip:ALICE@example.com>;tag=rc;epid=eA\r\nTo: <sip:ALICE@example.com>\r\n\
Call-ID: reg-case\r\nCSeq: 1 REGISTER\r\nContact: <sip:alice@10.0.0.5:5060;transport=tcp>\r\nExpires: 3600\r\n\
Content-Length: 0\r\n\r\n";
    let sent = h.feed(alice(), reg);
    assert_eq!(sent[0].msg.status_code(), Some(200), "{sent:?}");
    let sent = h.feed(
        carol(),
        &message_to("carol", "sip:alice@example.com", "z9hG4bKcase1"),
    );
    let to: Vec<Target> = sent.iter().map(|s| s.to).collect();
    assert_eq!(to, vec![Target::Flow(alice())], "delivered to {to:?}");
}

/// A MESSAGE from `user` (From `user@example.com`) to `to`.
fn message_to(user: &str, to: &str, branch: &str) -> String {
    format!(
        "MESSAGE {to} SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.7:5060;branch={branch}\r\n\
Max-Forwards: 70\r\nFrom: <sip:{user}@example.com>;tag=m1\r\nTo: <{to}>\r\n\
Call-ID: {branch}\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n"
    )
}

/// Two AORs that registered the same device contact (clients behind different NATs writing the
/// same private address, or alice writing bob's on purpose): a request addressed to that contact
/// belongs to neither for sure, and goes to neither. Before, the latest registration took it, so
/// alice, registering bob's contact after him, got the requests addressed to his device, signed
/// for her.
#[test]
fn a_contact_two_addresses_of_record_registered_routes_to_neither() {
    let mut h = H::registrar();
    h.register(bob(), "bob", "eb");
    let reg = "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.5:5060;branch=z9hG4bKsame\r\n\
Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=rs;epid=es\r\nTo: <sip:alice@example.com>\r\n\
Call-ID: reg-alice-same\r\nCSeq: 1 REGISTER\r\nContact: <sip:bob@10.0.0.5:5060;transport=udp>\r\nExpires: 3600\r\n\
Content-Length: 0\r\n\r\n";
    let sent = h.feed(alice(), reg);
    assert_eq!(sent[0].msg.status_code(), Some(200), "{sent:?}");
    let sent = h.feed(
        carol(),
        &message_to("carol", "sip:bob@10.0.0.5:5060", "z9hG4bKsame1"),
    );
    assert!(
        !sent.iter().any(|s| s.to == Target::Flow(alice())),
        "a request to bob's device contact reached alice: {sent:?}"
    );
    // The AOR still reaches bob.
    let sent = h.feed(
        carol(),
        &message_to("carol", "sip:bob@example.com", "z9hG4bKsame2"),
    );
    let to: Vec<Target> = sent.iter().map(|s| s.to).collect();
    assert_eq!(to, vec![Target::Flow(bob())], "delivered to {to:?}");
}

/// A Contact names where a device is, not whose requests it takes: alice's own REGISTER (To and
/// From alice, as the security core enforces) with `Contact: <sip:bob@example.com>`, or with a
/// user of another domain, does not make requests for those addresses reach her. Before, the
/// registered-contact match ran before the AOR lookup and took every request for bob, whether
/// he was registered or not.
#[test]
fn a_contact_that_is_another_address_of_record_takes_none_of_its_requests() {
    let mut h = H::registrar();
    for (i, contact) in ["sip:bob@example.com", "sip:dave@other.example"]
        .iter()
        .enumerate()
    {
        let reg = format!(
            "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.5:5060;branch=z9hG4bKhij{i}\r\n\
Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=ra;epid=eh{i}\r\nTo: <sip:alice@example.com>\r\n\
Call-ID: reg-alice-hijack-{i}\r\nCSeq: 1 REGISTER\r\nContact: <{contact}>\r\nExpires: 3600\r\n\
Content-Length: 0\r\n\r\n"
        );
        let sent = h.feed(alice(), &reg);
        assert_eq!(sent[0].msg.status_code(), Some(200), "{sent:?}");
    }
    // Neither bob (not registered) nor another domain's user: their requests do not reach alice.
    for (to, branch) in [
        ("sip:bob@example.com", "z9hG4bKc2b0"),
        ("sip:dave@other.example", "z9hG4bKc2d"),
    ] {
        let sent = h.feed(carol(), &message_to("carol", to, branch));
        assert!(
            !sent.iter().any(|s| s.to == Target::Flow(alice())),
            "a request for {to} reached alice"
        );
    }
    // bob registered: they reach bob alone.
    h.register(bob(), "bob", "eb");
    let sent = h.feed(
        carol(),
        &message_to("carol", "sip:bob@example.com", "z9hG4bKc2b1"),
    );
    let to: Vec<Target> = sent.iter().map(|s| s.to).collect();
    assert_eq!(to, vec![Target::Flow(bob())], "delivered to {to:?}");
    // A request to alice's own device contact still reaches her.
    h.register(alice(), "alice", "ea");
    let sent = h.feed(
        carol(),
        &message_to(
            "carol",
            "sip:alice@10.0.0.5:5060;transport=tcp",
            "z9hG4bKc2a",
        ),
    );
    let to: Vec<Target> = sent.iter().map(|s| s.to).collect();
    assert_eq!(to, vec![Target::Flow(alice())], "delivered to {to:?}");
}

/// A client's requests that come back through the servers behind (its own AOR called, forked to
/// each of its devices; a pool peer relaying them) count against the identity the gateway
/// asserted for it, not against nobody: before, one client held its share and, through the
/// registrar, as many more transactions as it liked. And the 503 of a full share to a client's
/// own request is signed, as its request was admitted.
#[test]
fn requests_from_the_servers_count_against_the_identity_they_assert() {
    let rec = Recorder::default();
    let (mut h, registrar, path) = edge_with_signed_in_alice(&rec);
    let c = h.edge.config().clone();
    h.edge.reconfigure(LiveSettings {
        domains: c.domains.clone(),
        next_hops: c.next_hops.clone(),
        trusted_peers: c.trusted_peers.clone(),
        client_routes: c.client_routes.clone(),
        timers: c.timers,
        retry_after: c.retry_after,
        max_transactions: c.max_transactions,
        max_transactions_per_client: 2,
        registrar: c.registrar.clone(),
        probe: c.probe,
    });
    let invite = |branch: &str, asserted: &str| {
        from_registrar("INVITE", branch, &path, "").replace(
            "Content-Length: 0",
            &format!("P-Asserted-Identity: <{asserted}>\r\nContent-Length: 0"),
        )
    };
    // mallory's calls to alice, which alice does not answer: two are hers to hold.
    for b in ["z9hG4bKm1", "z9hG4bKm2"] {
        let sent = h.feed(registrar, &invite(b, "sip:mallory@example.com"));
        assert!(
            sent.iter().any(|s| s.to == Target::Flow(alice())),
            "{sent:?}"
        );
    }
    let sent = h.feed(registrar, &invite("z9hG4bKm3", "sips:Mallory@example.com"));
    assert!(
        sent.iter()
            .any(|s| s.to.addr() == registrar.remote && s.msg.status_code() == Some(503)),
        "mallory's third: {sent:?}"
    );
    assert!(
        h.reports()
            .contains(&Report::Limit(LimitKind::TransactionsPerClient))
    );
    // bob's call is his own: it goes through.
    let sent = h.feed(registrar, &invite("z9hG4bKb1", "sip:bob@example.com"));
    assert!(
        sent.iter().any(|s| s.to == Target::Flow(alice())),
        "{sent:?}"
    );
    // Calls asserting alice's identity (a caller elsewhere may choose its caller id) use up a
    // share apart from her own requests': hers below still get their two.
    for b in ["z9hG4bKf1", "z9hG4bKf2", "z9hG4bKf3"] {
        h.feed(registrar, &invite(b, "sip:alice@example.com"));
    }

    // alice's own requests count against her identity (the Recorder proves the From's); her
    // third, over the share, gets a 503 the outbound stage signs with her request's note.
    for n in 1..=3 {
        let req = format!(
            "MESSAGE sip:carol@example.com SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.5;branch=z9hG4bKa{n}\r\n\
Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a;epid=ea\r\nTo: <sip:carol@example.com>\r\n\
Call-ID: a{n}\r\nCSeq: 1 MESSAGE\r\nAuthorization: NTLM x\r\nContent-Length: 0\r\n\r\n"
        );
        h.feed(alice(), &req);
    }
    let log = rec.0.lock().unwrap().clone();
    let refused: Vec<&String> = log
        .iter()
        .filter(|l| l.starts_with("out Response SIP/2.0 503") && l.contains("note=Some(\"a"))
        .collect();
    assert_eq!(
        refused.len(),
        1,
        "alice's first two are hers, the calls asserting her take nothing of them: {log:#?}"
    );
    assert!(refused[0].ends_with("note=Some(\"a3\")"), "{log:#?}");
}

/// A stage that admits everything with a note naming the request, and records, for each ACK it
/// judges, the note of the INVITE the edge says it acknowledges.
#[derive(Clone, Default)]
struct AckSpy(Arc<Mutex<Vec<Option<String>>>>);

impl ClientAuth for AckSpy {
    fn inbound(&mut self, msg: &mut Message, ctx: &InboundContext<'_>) -> InboundVerdict {
        if msg.method() == Some("ACK") {
            let of = ctx
                .acknowledges
                .and_then(|n| n.downcast_ref::<String>())
                .cloned();
            self.0.lock().unwrap().push(of);
        }
        InboundVerdict::Continue {
            note: Some(Arc::new(format!("admitted {}", msg.start_line()))),
            endpoint: None,
            client: None,
        }
    }
}

/// An edge with one next hop and an [`AckSpy`] as its stage, and alice's INVITE (Via branch
/// `branch`) forwarded to that hop: the harness, the spy, the INVITE as the hop got it and the
/// hop's flow.
fn invite_past_a_spy(branch: &str) -> (H, AckSpy, Message, Flow) {
    let mut h = with_hops(1);
    let spy = AckSpy::default();
    h.edge = Edge::with_auth(h.edge.config().clone(), Box::new(spy.clone()));
    let sent = h.feed(alice(), &invite(branch, "carol", 70));
    let forwarded = sent.last().unwrap().msg.clone();
    assert_eq!(forwarded.method(), Some("INVITE"));
    (
        h,
        spy,
        forwarded,
        flow(90, Transport::Tcp, "203.0.113.1:5060"),
    )
}

/// Alice's ACK in the call of [`invite`]: its Via branch, Request-URI, CSeq number, From tag and
/// To tag.
fn alice_ack(branch: &str, ruri: &str, cseq: u32, tag: &str, to_tag: &str) -> String {
    format!(
        "ACK {ruri} SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.5:5060;branch={branch}\r\n\
Max-Forwards: 70\r\nFrom: \"Alice\" <sip:alice@example.com>;tag={tag};epid=ea\r\nTo: <sip:carol@example.com>;tag={to_tag}\r\n\
Call-ID: call-1\r\nCSeq: {cseq} ACK\r\nContent-Length: 0\r\n\r\n"
    )
}

/// The ACK of a 2xx matches no transaction (another branch), but the edge finds the 2xx it
/// acknowledges for the stage: sent over the same flow, with the same Call-ID, CSeq number and
/// From tag, the 2xx's To tag and its Contact as the Request-URI, one ACK a 2xx relayed, within
/// 64×T1 of the last. The stage passes a Digest client's ACK on as the INVITE's identity
/// (crates/gateway/src/auth.rs `acknowledging`). Also for a 2xx that came after the transaction
/// was answered otherwise (another fork's, a late one after a 408): its ACK is as much the
/// client's.
#[test]
fn the_ack_of_a_2xx_names_the_invite_it_acknowledges_to_the_stage() {
    let (mut h, spy, forwarded, hop) = invite_past_a_spy("z9hG4bKai1");
    let sent = h.feed_msg(hop, answer(&forwarded, 200, "OK"));
    assert_eq!(sent.last().unwrap().msg.status_code(), Some(200));
    let bob_contact = "sip:bob@10.0.0.6:5060";
    let invite_note = Some("admitted INVITE sip:carol@example.com SIP/2.0".to_owned());
    h.feed(
        alice(),
        &alice_ack("z9hG4bKack1", bob_contact, 10, "a1", "b1"),
    );
    // The same ACK again before the 2xx came again; then from another flow, of another CSeq,
    // of another From tag, of another To tag, to another target.
    for (from, branch, ruri, cseq, tag, to_tag) in [
        (alice(), "z9hG4bKack1", bob_contact, 10, "a1", "b1"),
        (bob(), "z9hG4bKack2", bob_contact, 10, "a1", "b1"),
        (alice(), "z9hG4bKack3", bob_contact, 11, "a1", "b1"),
        (alice(), "z9hG4bKack4", bob_contact, 10, "a2", "b1"),
        (alice(), "z9hG4bKack5", bob_contact, 10, "a1", "b2"),
        (
            alice(),
            "z9hG4bKack6",
            "sip:premium@10.0.0.6:5060",
            10,
            "a1",
            "b1",
        ),
    ] {
        h.feed(from, &alice_ack(branch, ruri, cseq, tag, to_tag));
    }
    // The 2xx again: one more ACK.
    h.feed_msg(hop, answer(&forwarded, 200, "OK"));
    h.feed(
        alice(),
        &alice_ack("z9hG4bKack7", bob_contact, 10, "a1", "b1"),
    );
    // Once 64×T1 passed since the last 2xx, the ACK stands alone.
    h.advance(h.edge.config().timers.timeout() + Duration::from_secs(1));
    h.feed_msg(hop, answer(&forwarded, 200, "OK"));
    h.advance(h.edge.config().timers.timeout() + Duration::from_secs(1));
    h.feed(
        alice(),
        &alice_ack("z9hG4bKack8", bob_contact, 10, "a1", "b1"),
    );
    let n = invite_note.clone();
    assert_eq!(
        *spy.0.lock().unwrap(),
        [n.clone(), None, None, None, None, None, None, n, None]
    );
}

/// An RFC 2543 client (no `z9hG4bK` cookie) sends the ACK of a 2xx with its INVITE's Via: the
/// key made of the Call-ID, CSeq number and From tag is the INVITE's, whose server transaction
/// is kept after the 2xx (Accepted, RFC 6026) to absorb retransmitted INVITEs. An ACK in that
/// state belongs to the transaction user (RFC 6026 §7.1): it is the 2xx's, judged by the stage as
/// any 2xx ACK and routed on, not absorbed as a retransmitted ACK of a failure.
#[test]
fn an_rfc2543_clients_ack_of_a_2xx_is_forwarded() {
    let (mut h, spy, forwarded, hop) = invite_past_a_spy("old2543");
    let sent = h.feed_msg(hop, answer(&forwarded, 200, "OK"));
    assert_eq!(sent.last().unwrap().msg.status_code(), Some(200));
    let ack = alice_ack("old2543", "sip:bob@10.0.0.6:5060", 10, "a1", "b1");
    let sent = h.feed(alice(), &ack);
    let acks: Vec<_> = sent
        .iter()
        .filter(|s| s.msg.method() == Some("ACK"))
        .collect();
    assert_eq!(acks.len(), 1, "the 2xx ACK is routed on: {sent:?}");
    assert_eq!(acks[0].to.addr(), "203.0.113.1:5060".parse().unwrap());
    assert_eq!(
        *spy.0.lock().unwrap(),
        [Some(
            "admitted INVITE sip:carol@example.com SIP/2.0".to_owned()
        )],
        "the stage judged it, told which INVITE it acknowledges"
    );
    // A retransmitted INVITE is still absorbed by the transaction, not forwarded again.
    let sent = h.feed(alice(), &invite("old2543", "carol", 70));
    assert!(
        sent.iter().all(|s| s.msg.method() != Some("INVITE")),
        "{sent:?}"
    );
}

/// A fork's 2xx that comes after the INVITE was answered 408 (Timer C, or another branch's
/// 6xx) still goes to the client, and its ACK is the client's as any other.
#[test]
fn the_ack_of_a_2xx_after_a_non_2xx_final_names_the_invite_too() {
    let (mut h, spy, forwarded, hop) = invite_past_a_spy("z9hG4bKai2");
    let sent = h.feed_msg(hop, answer(&forwarded, 603, "Decline"));
    assert_eq!(sent.last().unwrap().msg.status_code(), Some(603));
    // Another UAS behind the hop answers 200 after all (a fork downstream).
    let mut late = answer(&forwarded, 200, "OK");
    let to = late.header("To").unwrap().replace("tag=b1", "tag=b9");
    late.set_header("To", &to);
    let sent = h.feed_msg(hop, late);
    assert_eq!(
        sent.last().map(|s| s.msg.status_code()),
        Some(Some(200)),
        "{sent:?}"
    );
    h.feed(
        alice(),
        &alice_ack("z9hG4bKack9", "sip:bob@10.0.0.6:5060", 10, "a1", "b9"),
    );
    assert_eq!(
        *spy.0.lock().unwrap(),
        [Some(
            "admitted INVITE sip:carol@example.com SIP/2.0".to_owned()
        )]
    );
}

/// RFC 3261 §16.6 step 2: a request for an address of record reaches each registered device with
/// that device's Contact as Request-URI (a PBX or phone routes on it: `sip:2001@pbx` says which
/// line rang), less what a Request-URI may not carry (headers, `method`). The CANCEL of a
/// branch names what its INVITE did.
#[test]
fn a_request_for_an_address_of_record_goes_to_each_device_under_its_contact() {
    let (mut h, d1, d2) = two_devices();
    let reg = "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/TLS 10.0.0.6;branch=z9hG4bKdb2x\r\n\
From: <sip:bob@example.com>;tag=db2;epid=b2\r\nTo: <sip:bob@example.com>\r\nCall-ID: reg-b2\r\n\
CSeq: 3 REGISTER\r\nContact: <sip:2001@10.0.0.6:5061;transport=tls;method=INVITE?Subject=x>\r\n\
Content-Length: 0\r\n\r\n";
    assert_eq!(h.feed(d2, reg)[0].msg.status_code(), Some(200));
    let (to_d1, to_d2) = fork_invite(&mut h, "z9hG4bKrt1");
    assert_eq!(to_d1.request_uri(), Some("sip:bob@10.0.0.6:1"));
    assert_eq!(
        to_d2.request_uri(),
        Some("sip:2001@10.0.0.6:5061;transport=tls")
    );
    assert_eq!(
        to_d1.header("To"),
        Some("<sip:bob@example.com>"),
        "To keeps the address of record"
    );
    h.feed_msg(d2, answer(&to_d2, 180, "Ringing"));
    let sent = h.feed_msg(d1, answer(&to_d1, 200, "OK"));
    let cancel = sent
        .iter()
        .find(|s| s.msg.method() == Some("CANCEL"))
        .expect("the other branch is cancelled");
    assert_eq!(cancel.to, Target::Flow(d2));
    assert_eq!(cancel.msg.request_uri(), to_d2.request_uri());

    // A request to a contact itself is not rewritten.
    let sent = h.feed(
        alice(),
        &message_to(
            "alice",
            "sip:2001@10.0.0.6:5061;transport=tls",
            "z9hG4bKrt2",
        ),
    );
    let to_contact = sent.iter().find(|s| s.to == Target::Flow(d2)).unwrap();
    assert_eq!(
        to_contact.msg.request_uri(),
        Some("sip:2001@10.0.0.6:5061;transport=tls")
    );
}

/// Timer C is reset by every provisional after the first (RFC 3261 §16.7 step 2, a MUST): a
/// callee that keeps the call alive with a 180 a minute (a queue's early media, a PSTN gateway)
/// is not cancelled at Timer C after its first 180. Before, every call ringing longer than Timer
/// C was cut.
#[test]
fn later_provisionals_reset_timer_c() {
    let mut cfg = EdgeConfig::new(local(), Secret::new([3; 32]));
    cfg.timers.timer_c = Duration::from_secs(10);
    let mut h = H::new(cfg);
    h.register(bob(), "bob", "eb");
    let sent = h.feed(alice(), &invite("z9hG4bKtcr", "bob", 70));
    let fwd = sent[1].msg.clone();
    h.feed_msg(bob(), answer(&fwd, 183, "Session Progress"));
    for _ in 0..3 {
        let sent = h.advance(Duration::from_secs(8));
        assert!(
            !sent.iter().any(|s| s.msg.method() == Some("CANCEL")),
            "{sent:?}"
        );
        h.feed_msg(bob(), answer(&fwd, 180, "Ringing"));
    }
    // Silence past Timer C: cancelled then.
    let sent = h.advance(Duration::from_secs(11));
    assert!(
        sent.iter().any(|s| s.msg.method() == Some("CANCEL")),
        "{sent:?}"
    );
}

/// RFC 3261 §16.7 step 6 among forks: a busy device's 486 is the answer, not the 480 of a device
/// that is gone or the 408 of one that never answered (they say nothing about the user); a 503 is
/// sent on as 500, not as this gateway being unavailable.
#[test]
fn a_busy_device_is_the_answer_over_a_gone_or_silent_one_and_503_becomes_500() {
    let (mut h, d1, d2) = two_devices();
    let (to_d1, to_d2) = fork_invite(&mut h, "z9hG4bKrank1");
    let sent = h.feed_msg(d2, answer(&to_d2, 486, "Busy Here"));
    assert!(
        !sent.iter().any(|s| s.to == Target::Flow(alice())),
        "held while d1 rings: {sent:?}"
    );
    let sent = h.feed_msg(d1, answer(&to_d1, 480, "Temporarily Unavailable"));
    let up = sent
        .iter()
        .find(|s| s.to == Target::Flow(alice()) && s.msg.status_code().is_some())
        .unwrap_or_else(|| panic!("{sent:?}"));
    assert_eq!(up.msg.status_code(), Some(486));

    let (to_d1, to_d2) = fork_invite(&mut h, "z9hG4bKrank2");
    h.feed_msg(d2, answer(&to_d2, 503, "Service Unavailable"));
    let sent = h.feed_msg(d1, answer(&to_d1, 500, "Server Internal Error"));
    let up = sent
        .iter()
        .find(|s| s.to == Target::Flow(alice()) && s.msg.status_code().is_some())
        .unwrap_or_else(|| panic!("{sent:?}"));
    assert_eq!(up.msg.status_code(), Some(500), "500 ranks before 503");

    let (to_d1, to_d2) = fork_invite(&mut h, "z9hG4bKrank3");
    h.feed_msg(d2, answer(&to_d2, 503, "Service Unavailable"));
    let mut only_503 = answer(&to_d1, 503, "Service Unavailable");
    only_503.push_header("Retry-After", "120");
    let sent = h.feed_msg(d1, only_503);
    let up = sent
        .iter()
        .find(|s| s.to == Target::Flow(alice()) && s.msg.status_code().is_some())
        .unwrap_or_else(|| panic!("{sent:?}"));
    assert_eq!(up.msg.status_code(), Some(500), "a 503 goes on as 500");
    assert!(up.msg.header("Retry-After").is_none());
}

/// A non-INVITE over UDP that got a provisional keeps being retransmitted, every T2 (RFC 3261
/// §17.1.2.2), so a lost final answer is recovered; and one that gets no final answer is not
/// answered 408 (RFC 4320 §4.2): the client's own timer ends it. Before, the first 100 stopped
/// the retransmissions and the client got 408 32 s later.
#[test]
fn a_non_invite_over_udp_is_retransmitted_after_a_provisional_and_never_answered_408() {
    let mut h = H::registrar();
    h.register(bob(), "bob", "eb");
    let msg = "MESSAGE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.5;branch=z9hG4bKnir1\r\n\
Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a1\r\nTo: <sip:bob@example.com>\r\n\
Call-ID: nir-1\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n";
    let sent = h.feed(alice(), msg);
    let fwd = sent
        .iter()
        .find(|s| s.to == Target::Flow(bob()))
        .expect("to bob")
        .msg
        .clone();
    h.feed_msg(bob(), answer(&fwd, 100, "Trying"));
    let sent = h.advance(Duration::from_secs(10));
    let copies = sent
        .iter()
        .filter(|s| s.to == Target::Flow(bob()) && s.msg.method() == Some("MESSAGE"))
        .count();
    assert!(copies >= 2, "retransmitted every T2 (4 s): {copies}");
    let sent = h.advance(Duration::from_secs(80));
    assert!(
        !sent
            .iter()
            .any(|s| s.to == Target::Flow(alice()) && s.msg.status_code() == Some(408)),
        "{sent:?}"
    );
    assert_eq!(h.edge.stats().client_transactions, 0);
    assert_eq!(h.edge.stats().server_transactions, 0);
}

/// A device ringing over a connection that closes (its app killed, its network changed) fails its
/// branch at once: the caller gets the other device's answer now. Before, the branch waited for
/// Timer C and 64×T1 more, three and a half minutes of ringback, and then 408.
#[test]
fn a_ringing_branch_whose_connection_closes_fails_at_once() {
    let (mut h, d1, d2) = two_devices();
    let (to_d1, to_d2) = fork_invite(&mut h, "z9hG4bKgone1");
    h.feed_msg(d2, answer(&to_d2, 180, "Ringing"));
    let sent = h.feed_msg(d1, answer(&to_d1, 486, "Busy Here"));
    assert!(
        !sent
            .iter()
            .any(|s| s.to == Target::Flow(alice()) && s.msg.status_code() == Some(486)),
        "held while d2 rings: {sent:?}"
    );
    let now = h.now;
    h.edge.flow_closed(d2.id, now);
    let sent = h.drain();
    let finals: Vec<u16> = sent
        .iter()
        .filter(|s| s.to == Target::Flow(alice()))
        .filter_map(|s| s.msg.status_code())
        .filter(|c| *c >= 200)
        .collect();
    assert_eq!(finals, [486], "{sent:?}");
}

/// A dialog with a server behind that does not Record-Route (Asterisk's PJSIP by default, one of
/// a pair of B2BUAs): the caller's in-dialog requests and 2xx ACK name that server in their
/// Request-URI and carry no Route of its. They go to it when it is a configured next hop, not to
/// the first next hop up, which knows nothing of the dialog (the ACK lost, the BYE answered 481,
/// the call left up on the other server).
#[test]
fn in_dialog_requests_go_to_the_next_hop_their_request_uri_names() {
    let mut h = with_hops(2);
    let hop2 = "203.0.113.2:5060".parse().unwrap();
    for (method, branch) in [("ACK", "z9hG4bKid1"), ("BYE", "z9hG4bKid2")] {
        let req = format!(
            "{method} sip:s@203.0.113.2:5060;transport=tcp SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.5;branch={branch}\r\n\
Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a1\r\nTo: <sip:carol@example.com>;tag=s1\r\n\
Call-ID: id-1\r\nCSeq: 2 {method}\r\nContent-Length: 0\r\n\r\n"
        );
        let sent = h.feed(alice(), &req);
        let out = sent
            .iter()
            .find(|s| s.msg.method() == Some(method))
            .unwrap_or_else(|| panic!("{method} forwarded: {sent:?}"));
        assert_eq!(out.to.addr(), hop2, "{method}");
    }
    // Out of a dialog the Request-URI is the callee, not a hop: the first next hop takes it.
    let sent = h.feed(
        alice(),
        "MESSAGE sip:s@203.0.113.2:5060 SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.5;branch=z9hG4bKid3\r\n\
Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a1\r\nTo: <sip:s@203.0.113.2>\r\n\
Call-ID: id-3\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n",
    );
    let out = sent
        .iter()
        .find(|s| s.msg.method() == Some("MESSAGE"))
        .expect("forwarded");
    assert_eq!(out.to.addr(), "203.0.113.1:5060".parse().unwrap());
}

/// A send over a connection that fails says it is gone: the branches still open over it fail
/// too (here a ringing INVITE's, whose caller then gets the other device's answer), as when its
/// close is reported. The driver reports no close for a connection it no longer has.
#[test]
fn a_failed_send_over_a_connection_fails_its_other_branches() {
    let (mut h, d1, d2) = two_devices();
    let (to_d1, to_d2) = fork_invite(&mut h, "z9hG4bKsf1");
    h.feed_msg(d2, answer(&to_d2, 180, "Ringing"));
    h.feed_msg(d1, answer(&to_d1, 486, "Busy Here"));
    let msg = "MESSAGE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.5;branch=z9hG4bKsf2\r\n\
Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a1\r\nTo: <sip:bob@example.com>\r\n\
Call-ID: sf-2\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n";
    let sent = h.feed(alice(), msg);
    let token = sent
        .iter()
        .find(|s| s.to == Target::Flow(d2))
        .and_then(|s| s.token.clone())
        .expect("the MESSAGE to d2, with its token");
    let now = h.now;
    h.edge.send_failed(&token, now);
    let sent = h.drain();
    let invite_finals: Vec<u16> = sent
        .iter()
        .filter(|s| s.to == Target::Flow(alice()))
        .filter(|s| s.msg.cseq().is_some_and(|c| c.method == "INVITE"))
        .filter_map(|s| s.msg.status_code())
        .collect();
    assert_eq!(invite_finals, [486], "{sent:?}");
}

/// alice called through the registrar behind the gateway, then her connection was replaced (she
/// reconnected, the gateway restarted, her NAT gave her another port). Her BYE carries the route
/// set of the call, whose first entry of ours is her own side, with her old connection's token:
/// not followed. Before, the BYE went back to her old connection (430, the far end never hung up).
#[test]
fn a_clients_in_dialog_request_after_it_reconnected_goes_to_the_far_end() {
    let (mut h, registrar) = edge_behind_registrar();
    let sent = h.feed(alice(), &invite("z9hG4bKrc1", "bob", 70));
    let fwd = sent_request(&sent, "INVITE");
    let ok = answer(&fwd, 200, "OK");
    let sent = h.feed_msg(registrar, ok);
    let ok = sent
        .iter()
        .find(|s| s.to == Target::Flow(alice()) && s.msg.status_code() == Some(200))
        .expect("the 200 reaches alice")
        .msg
        .clone();
    let rr: Vec<String> = ok.header_all("Record-Route").map(str::to_owned).collect();
    assert_eq!(rr.len(), 2, "{rr:?}");
    // Her route set: the Record-Route reversed; her own side first.
    let route = format!("Route: {}\r\nRoute: {}\r\n", rr[1], rr[0]);
    let again = flow(11, Transport::Tcp, "198.51.100.1:40011");
    let bye = format!(
        "BYE sip:bob@10.0.0.6:5060 SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.5:5060;branch=z9hG4bKrc2\r\n{route}\
Max-Forwards: 70\r\nFrom: \"Alice\" <sip:alice@example.com>;tag=a1;epid=ea\r\nTo: <sip:bob@example.com>;tag=b1\r\n\
Call-ID: call-1\r\nCSeq: 11 BYE\r\nContent-Length: 0\r\n\r\n"
    );
    let sent = h.feed(again, &bye);
    let out = sent
        .iter()
        .find(|s| s.msg.method() == Some("BYE"))
        .unwrap_or_else(|| panic!("the BYE goes on: {sent:?}"));
    assert_eq!(out.to.addr(), registrar.remote, "to the far end's side");
}

/// The Path says `ob` (RFC 5626: this edge keeps the flow alive with the client's keep-alives)
/// for clients over a stream, whose CRLF pings it answers, not over UDP, where keep-alives are
/// STUN, which it does not answer.
#[test]
fn the_path_says_ob_only_for_clients_over_a_stream() {
    let (mut h, registrar) = edge_behind_registrar();
    for (f, ob) in [(alice(), true), (bob(), false)] {
        let t = f.transport.via_token();
        let reg = format!(
            "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/{t} 10.0.0.5;branch=z9hG4bKob{}\r\n\
Max-Forwards: 70\r\nFrom: <sip:u@example.com>;tag=o\r\nTo: <sip:u@example.com>\r\n\
Call-ID: ob-{}\r\nCSeq: 1 REGISTER\r\nContact: <sip:u@10.0.0.5>\r\nContent-Length: 0\r\n\r\n",
            f.id.0, f.id.0
        );
        let sent = h.feed(f, &reg);
        let out = sent
            .iter()
            .find(|s| s.to.addr() == registrar.remote)
            .expect("to the registrar");
        let path = out.msg.header("Path").expect("Path");
        assert_eq!(path.contains(";ob"), ob, "{:?}: {path}", f.transport);
    }
}

/// Two devices challenge the forked INVITE (a 401 and a 407, each its own realm): the 401 that
/// goes to the caller carries both challenges (RFC 3261 §16.7 step 7, a MUST), so that the caller
/// can answer both. Before, one device's challenge was lost.
#[test]
fn the_challenges_of_every_branch_go_up_together() {
    let (mut h, d1, d2) = two_devices();
    let (to_d1, to_d2) = fork_invite(&mut h, "z9hG4bKch1");
    let challenged = |req: &Message, code: u16, name: &str, realm: &str| {
        let mut r = answer(req, code, "Unauthorized");
        r.push_header(
            name,
            &format!("Digest realm=\"{realm}\", nonce=\"n\", qop=\"auth\""),
        );
        r
    };
    h.feed_msg(
        d2,
        challenged(&to_d2, 407, "Proxy-Authenticate", "d2.example.com"),
    );
    let sent = h.feed_msg(
        d1,
        challenged(&to_d1, 401, "WWW-Authenticate", "d1.example.com"),
    );
    let up = sent
        .iter()
        .find(|s| s.to == Target::Flow(alice()) && s.msg.status_code().is_some_and(|c| c >= 400))
        .unwrap_or_else(|| panic!("{sent:?}"));
    assert_eq!(up.msg.status_code(), Some(401));
    let www: Vec<&str> = up.msg.header_all("WWW-Authenticate").collect();
    let proxy: Vec<&str> = up.msg.header_all("Proxy-Authenticate").collect();
    assert_eq!(www.len(), 1, "{www:?}");
    assert!(www[0].contains("d1.example.com"));
    assert_eq!(proxy.len(), 1, "{proxy:?}");
    assert!(proxy[0].contains("d2.example.com") && proxy[0].contains("qop=\"auth\""));
}

/// The same when the request ends with a branch that never answers (a MESSAGE to a device gone
/// silent): the 401 that goes up at its timeout carries the other challenges too.
#[test]
fn the_challenges_go_up_together_after_a_silent_branch_too() {
    let (mut h, d1, d2) = two_devices();
    let d3 = flow(4, Transport::Udp, "198.51.100.10:5070");
    let reg = "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.6;branch=z9hG4bKd3\r\n\
From: <sip:bob@example.com>;tag=d3;epid=b3\r\nTo: <sip:bob@example.com>\r\nCall-ID: reg-b3\r\n\
CSeq: 3 REGISTER\r\nContact: <sip:bob@10.0.0.6:3>\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(h.feed(d3, reg)[0].msg.status_code(), Some(200));
    let msg = "MESSAGE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.5;branch=z9hG4bKch2\r\n\
Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a1\r\nTo: <sip:bob@example.com>\r\n\
Call-ID: ch-2\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n";
    let sent = h.feed(alice(), msg);
    let to = |f: Flow| {
        sent.iter()
            .find(|s| s.to == Target::Flow(f))
            .expect("a branch")
            .msg
            .clone()
    };
    let (to_d1, to_d2) = (to(d1), to(d2));
    let mut r1 = answer(&to_d1, 401, "Unauthorized");
    r1.push_header("WWW-Authenticate", "Digest realm=\"d1\", nonce=\"n\"");
    let mut r2 = answer(&to_d2, 407, "Proxy Authentication Required");
    r2.push_header("Proxy-Authenticate", "Digest realm=\"d2\", nonce=\"n\"");
    h.feed_msg(d1, r1);
    h.feed_msg(d2, r2);
    // d3 stays silent: its branch ends at Timer F.
    let sent = h.advance(Duration::from_secs(40));
    let up = sent
        .iter()
        .find(|s| s.to == Target::Flow(alice()) && s.msg.status_code().is_some_and(|c| c >= 400))
        .unwrap_or_else(|| panic!("{sent:?}"));
    assert_eq!(up.msg.status_code(), Some(401));
    assert_eq!(up.msg.header_all("Proxy-Authenticate").count(), 1);
}
