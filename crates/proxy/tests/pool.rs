//! The registrar in a pool: bindings saved and restored across a restart, and bindings held by
//! another node (remote bindings) that requests are forked to through that node. Sans-IO, on a
//! virtual clock.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use sagw_proxy::{
    Action, BindingRecord, ClientAuth, Edge, EdgeConfig, Flow, FlowId, Inbound, LocalAddrs, Now,
    OutboundContext, OutboundVerdict, RemoteBinding, RemoteBindingError, SaEndpoint, Secret,
    Target, Transport, build_response,
};
use sagw_sip::Message;

const NODE2: &str = "10.0.0.2:5061";
const NODE2_ROUTE: &str = "<sip:TOKEN2@10.0.0.2:5061;transport=tls;lr>";

fn local() -> LocalAddrs {
    LocalAddrs {
        host: "10.0.0.1".into(),
        aliases: vec!["gw.example.com".into()],
        udp: Some(5060),
        tcp: Some(5060),
        tls: Some(5061),
        extra_ports: Vec::new(),
    }
}

fn config() -> EdgeConfig {
    let mut cfg = EdgeConfig::new(local(), Secret::new([3; 32]));
    cfg.trusted_peers = vec!["10.0.0.2".parse().unwrap()];
    cfg
}

fn flow(id: u64, t: Transport, remote: &str) -> Flow {
    Flow {
        id: FlowId(id),
        transport: t,
        remote: remote.parse().unwrap(),
    }
}

fn alice() -> Flow {
    flow(0, Transport::Udp, "198.51.100.1:5060")
}

/// The connection node 2 opened to us (or we to it): a trusted peer's flow.
fn node2_flow() -> Flow {
    flow(7, Transport::Tls, NODE2)
}

fn node2_addr() -> SocketAddr {
    NODE2.parse().unwrap()
}

/// The outbound calls the auth stage saw, as (kind, start line).
#[derive(Clone, Default)]
struct Outbound(Arc<Mutex<Vec<String>>>);

impl ClientAuth for Outbound {
    fn outbound(&mut self, msg: &mut Message, ctx: &OutboundContext<'_>) -> OutboundVerdict {
        self.0
            .lock()
            .unwrap()
            .push(format!("{:?} {}", ctx.kind, msg.start_line()));
        msg.push_header("X-Signed", "yes");
        OutboundVerdict::Deliver
    }
}

struct H {
    edge: Edge,
    now: Now,
    outbound: Outbound,
}

#[derive(Debug)]
struct Sent {
    to: Target,
    msg: Message,
}

impl H {
    fn new() -> H {
        H::at(Now {
            mono: Instant::now(),
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        })
    }

    fn at(now: Now) -> H {
        let outbound = Outbound::default();
        H {
            edge: Edge::with_auth(config(), Box::new(outbound.clone())),
            now,
            outbound,
        }
    }

    fn feed(&mut self, f: Flow, raw: &str) -> Vec<Sent> {
        self.feed_msg(
            f,
            Message::parse(raw.as_bytes()).expect("test message parses"),
        )
    }

    fn feed_msg(&mut self, f: Flow, message: Message) -> Vec<Sent> {
        self.edge
            .handle_inbound(Inbound { message, flow: f }, self.now);
        let mut out = Vec::new();
        while let Some(a) = self.edge.poll_action() {
            if let Action::Send { to, message, .. } = a {
                out.push(Sent { to, msg: message });
            }
        }
        out
    }

    fn advance(&mut self, d: Duration) {
        let end = self.now.after(d);
        while let Some(t) = self.edge.poll_timeout() {
            if t > end.mono {
                break;
            }
            let now = Now {
                mono: t,
                wall: self.now.wall + (t - self.now.mono),
            };
            self.now = now;
            self.edge.handle_timeout(now);
            while self.edge.poll_action().is_some() {}
        }
        self.now = end;
    }

    fn register(&mut self, f: Flow, user: &str, epid: &str, expires: u32) {
        self.register_cseq(f, user, epid, expires, 1);
    }

    fn register_cseq(&mut self, f: Flow, user: &str, epid: &str, expires: u32, cseq: u32) {
        let t = f.transport.via_token();
        let sent = self.feed(
            f,
            &format!(
                "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/{t} 10.0.0.5:5060;branch=z9hG4bKr{user}{epid};rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:{user}@example.com>;tag=r{epid};epid={epid}\r\nTo: <sip:{user}@example.com>\r\n\
Call-ID: reg-{user}-{epid}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:{user}@{}>\r\nExpires: {expires}\r\n\
Content-Length: 0\r\n\r\n",
                f.remote
            ),
        );
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].msg.status_code(), Some(200), "{sent:?}");
    }

    fn remote(&mut self, user: &str, device: &str, secs: u64) -> Result<(), RemoteBindingError> {
        let binding = RemoteBinding {
            node_route: NODE2_ROUTE.into(),
            peer: (Transport::Tls, node2_addr()),
            expires: self.now.wall + Duration::from_secs(secs),
            endpoint: Some(SaEndpoint {
                identity: format!("sip:{user}@example.com"),
                epid: device.trim_start_matches("e:").into(),
            }),
        };
        self.edge.install_remote_binding(
            &format!("sip:{user}@Example.com"),
            device,
            binding,
            self.now,
        )
    }

    fn signed(&self) -> Vec<String> {
        std::mem::take(&mut *self.outbound.0.lock().unwrap())
    }
}

fn message(branch: &str, to_user: &str) -> String {
    format!(
        "MESSAGE sip:{to_user}@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.1:5060;branch={branch}\r\n\
Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a1\r\nTo: <sip:{to_user}@example.com>\r\n\
Call-ID: {branch}\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi"
    )
}

fn invite(branch: &str, to_user: &str) -> String {
    format!(
        "INVITE sip:{to_user}@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.1:5060;branch={branch}\r\n\
Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a1\r\nTo: <sip:{to_user}@example.com>\r\n\
Call-ID: {branch}\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@198.51.100.1:5060>\r\nContent-Length: 0\r\n\r\n"
    )
}

fn routes(m: &Message) -> Vec<&str> {
    m.header_all("Route").collect()
}

fn to_node2() -> Target {
    Target::Addr {
        transport: Transport::Tls,
        addr: node2_addr(),
    }
}

#[test]
fn a_remote_binding_takes_requests_to_its_node_with_the_route_on_top() {
    let mut h = H::new();
    h.remote("carol", "e:c1", 600).unwrap();
    assert_eq!(h.edge.registrar().remote_len(), 1);
    assert_eq!(
        h.edge.stats().bindings,
        0,
        "remote bindings are not local ones"
    );
    h.signed();

    let sent = h.feed(alice(), &message("z9hG4bKm1", "carol"));
    assert_eq!(sent.len(), 1, "{sent:?}");
    let out = &sent[0];
    assert_eq!(out.to, to_node2());
    assert_eq!(out.msg.request_uri(), Some("sip:carol@example.com"));
    assert_eq!(routes(&out.msg), vec![NODE2_ROUTE]);
    assert!(
        out.msg.header("X-Signed").is_none(),
        "a request to a pool node is not signed"
    );
    assert!(h.signed().is_empty(), "the outbound stage did not run");

    // Node 2's answer is a server's: it reaches alice (signed for her, as every response to a
    // client is).
    let ok = build_response(&out.msg, 200, "OK", Some("c"), &[]).unwrap();
    let back = h.feed_msg(node2_flow(), ok);
    assert_eq!(back.len(), 1, "{back:?}");
    assert_eq!(back[0].to, Target::Flow(alice()));
    assert_eq!(back[0].msg.status_code(), Some(200));
    assert_eq!(h.signed(), vec!["Response SIP/2.0 200 OK".to_owned()]);

    // An INVITE the same way: Record-Routed by us, Route on top, Request-URI unchanged.
    let sent = h.feed(alice(), &invite("z9hG4bKi1", "carol"));
    assert_eq!(sent.len(), 2, "100 Trying and the INVITE: {sent:?}");
    assert_eq!(sent[1].to, to_node2());
    assert_eq!(sent[1].msg.request_uri(), Some("sip:carol@example.com"));
    assert_eq!(routes(&sent[1].msg), vec![NODE2_ROUTE]);
    assert_eq!(sent[1].msg.header_all("Record-Route").count(), 2);

    // Removed: the AOR is unknown again.
    assert!(
        h.edge
            .remove_remote_binding("sip:carol@example.com", "e:c1")
    );
    assert!(
        !h.edge
            .remove_remote_binding("sip:carol@example.com", "e:c1")
    );
    let sent = h.feed(alice(), &message("z9hG4bKm2", "carol"));
    assert_eq!(sent[0].to, Target::Flow(alice()));
    assert_eq!(sent[0].msg.status_code(), Some(404));
}

#[test]
fn expired_remote_bindings_are_not_used() {
    let mut h = H::new();
    assert_eq!(
        h.remote("carol", "e:c1", 0),
        Err(RemoteBindingError::Expired)
    );
    h.remote("carol", "e:c1", 60).unwrap();
    h.advance(Duration::from_secs(59));
    assert_eq!(
        h.feed(alice(), &message("z9hG4bKx1", "carol"))[0].to,
        to_node2()
    );
    h.advance(Duration::from_secs(2));
    assert_eq!(h.edge.registrar().remote_len(), 0, "purged at its deadline");
    let sent = h.feed(alice(), &message("z9hG4bKx2", "carol"));
    assert_eq!(sent[0].msg.status_code(), Some(404));
}

#[test]
fn local_and_remote_bindings_fork_and_local_wins_for_the_same_device() {
    let mut h = H::new();
    let bob1 = flow(0, Transport::Udp, "198.51.100.2:5060");
    h.register(bob1, "bob", "b1", 3600);
    // The same device at node 2 (a stale copy): shadowed by ours. Another device there: forked to.
    h.remote("bob", "e:b1", 600).unwrap();
    h.remote("bob", "e:b2", 600).unwrap();
    let live = h
        .edge
        .registrar()
        .lookup_remote("sip:bob@example.com", h.now.mono);
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].0, "e:b2");
    h.signed();

    let sent = h.feed(alice(), &invite("z9hG4bKf1", "bob"));
    assert_eq!(sent.len(), 3, "100 and one INVITE per device: {sent:?}");
    assert_eq!(sent[0].msg.status_code(), Some(100));
    let (local, remote) = (&sent[1], &sent[2]);
    assert_eq!(local.to, Target::Flow(bob1));
    assert!(routes(&local.msg).is_empty());
    assert_eq!(local.msg.header("X-Signed"), Some("yes"));
    assert_eq!(remote.to, to_node2());
    // The node that holds the device's flow puts its Contact there.
    assert_eq!(remote.msg.request_uri(), Some("sip:bob@example.com"));
    assert_eq!(routes(&remote.msg), vec![NODE2_ROUTE]);
    assert!(remote.msg.header("X-Signed").is_none());
    assert_eq!(
        h.signed(),
        vec![
            "Response SIP/2.0 100 Trying".to_owned(),
            "Request INVITE sip:bob@198.51.100.2:5060 SIP/2.0".to_owned()
        ],
        "only the local branch passed the outbound stage"
    );

    // Both ring; the local device answers; node 2's branch is cancelled through the same Route.
    let to_remote = remote.msg.clone();
    let to_local = local.msg.clone();
    let ringing = build_response(&to_remote, 180, "Ringing", Some("r2"), &[]).unwrap();
    assert_eq!(
        h.feed_msg(node2_flow(), ringing)[0].to,
        Target::Flow(alice())
    );
    let ok = build_response(&to_local, 200, "OK", Some("r1"), &[]).unwrap();
    let sent = h.feed_msg(bob1, ok);
    let cancel = sent
        .iter()
        .find(|s| s.msg.method() == Some("CANCEL"))
        .expect("the remote branch is cancelled");
    assert_eq!(cancel.to, to_node2());
    assert_eq!(routes(&cancel.msg), vec![NODE2_ROUTE]);
    assert!(cancel.msg.header("X-Signed").is_none());
}

#[test]
fn a_closed_flow_leaves_remote_bindings_alone() {
    let mut h = H::new();
    let bob_tcp = flow(4, Transport::Tcp, "198.51.100.3:40000");
    h.register(bob_tcp, "bob", "b1", 3600);
    h.remote("bob", "e:b2", 600).unwrap();
    h.edge.flow_closed(FlowId(4), h.now);
    h.edge.flow_closed(FlowId(7), h.now);
    assert_eq!(h.edge.stats().bindings, 0);
    assert_eq!(h.edge.registrar().remote_len(), 1);
    let sent = h.feed(alice(), &message("z9hG4bKc1", "bob"));
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].to, to_node2());
}

#[test]
fn remote_bindings_need_a_trusted_peer_and_a_loose_route() {
    let mut h = H::new();
    let mut b = RemoteBinding {
        node_route: NODE2_ROUTE.into(),
        peer: (Transport::Tls, "10.0.0.3:5061".parse().unwrap()),
        expires: h.now.wall + Duration::from_secs(60),
        endpoint: None,
    };
    let now = h.now;
    assert_eq!(
        h.edge
            .install_remote_binding("sip:bob@example.com", "e:b", b.clone(), now),
        Err(RemoteBindingError::UntrustedPeer)
    );
    b.peer = (Transport::Tls, node2_addr());
    for bad in [
        "<sip:TOKEN2@10.0.0.2:5061;transport=tls>",
        "<sip:x@10.0.0.2;lr>\r\nX-Injected: 1",
        "not a uri",
    ] {
        let mut r = b.clone();
        r.node_route = bad.into();
        assert_eq!(
            h.edge
                .install_remote_binding("sip:bob@example.com", "e:b", r, now),
            Err(RemoteBindingError::BadRoute),
            "{bad}"
        );
    }
    assert_eq!(
        h.edge
            .install_remote_binding("tel:+1555", "e:b", b.clone(), now),
        Err(RemoteBindingError::BadAor)
    );
    assert_eq!(h.edge.registrar().remote_len(), 0);
    // Reinstalling replaces: one binding per device.
    h.edge
        .install_remote_binding("sip:bob@example.com", "e:b", b.clone(), now)
        .unwrap();
    b.expires += Duration::from_secs(60);
    h.edge
        .install_remote_binding("sip:bob@example.com", "e:b", b, now)
        .unwrap();
    assert_eq!(h.edge.registrar().remote_len(), 1);
}

#[test]
fn bindings_survive_a_restart_through_export_and_import() {
    let mut h = H::new();
    let bob_udp = flow(0, Transport::Udp, "198.51.100.2:5060");
    let bob_tcp = flow(5, Transport::Tcp, "198.51.100.3:40000");
    let carol_udp = flow(0, Transport::Udp, "198.51.100.4:5060");
    h.register(bob_udp, "bob", "b1", 3600);
    h.register(bob_tcp, "bob", "b2", 3600);
    h.register(carol_udp, "carol", "c1", 60);
    h.advance(Duration::from_secs(10));
    let records = h.edge.export_bindings(h.now);
    assert_eq!(records.len(), 3);
    let bob1 = records.iter().find(|r| r.device == "e:b1").unwrap();
    assert_eq!(bob1.aor, "sip:bob@example.com");
    assert_eq!(bob1.flow, bob_udp);
    assert_eq!(bob1.contact, "sip:bob@198.51.100.2:5060");
    let wall = h
        .now
        .wall
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(bob1.expires_unix, wall + 3590);

    // Saved as text, read back by a new process 100 s later on a new monotonic clock; the
    // driver keeps the UDP ones (its socket is flow 0 again) and drops the connections.
    let saved = serde_json::to_string(&records).unwrap();
    let read: Vec<BindingRecord> = serde_json::from_str(&saved).unwrap();
    assert_eq!(read, records);
    let mut h2 = H::at(Now {
        mono: Instant::now() + Duration::from_secs(5000),
        wall: h.now.wall + Duration::from_secs(100),
    });
    let udp: Vec<BindingRecord> = read
        .into_iter()
        .filter(|r| !r.flow.transport.is_reliable())
        .collect();
    assert_eq!(udp.len(), 2);
    assert_eq!(
        h2.edge.import_bindings(udp, h2.now),
        1,
        "carol's has lapsed"
    );
    let now = h2.now;
    let b = h2.edge.registrar().lookup("sip:bob@example.com", now.mono);
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].flow, bob_udp);
    assert_eq!(b[0].expires_at, now.mono + Duration::from_secs(3490));

    let sent = h2.feed(alice(), &message("z9hG4bKr1", "bob"));
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].to, Target::Flow(bob_udp));
    let sent = h2.feed(alice(), &message("z9hG4bKr2", "carol"));
    assert_eq!(sent[0].msg.status_code(), Some(404));

    // The restored binding remembers its last REGISTER: a replay of it is out of order, and a
    // refresh finds the binding (same device key) rather than adding one.
    let replay = h2.feed(
        bob_udp,
        &format!(
            "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKrbobb1x;rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:bob@example.com>;tag=rb1;epid=b1\r\nTo: <sip:bob@example.com>\r\n\
Call-ID: reg-bob-b1\r\nCSeq: 1 REGISTER\r\nContact: <sip:bob@{}>\r\nExpires: 3600\r\n\
Content-Length: 0\r\n\r\n",
            bob_udp.remote
        ),
    );
    assert_eq!(replay[0].msg.status_code(), Some(500));
    h2.register_cseq(bob_udp, "bob", "b1", 3600, 2);
    assert_eq!(h2.edge.stats().bindings, 1);
    // A record for a device that has a binding already, or with a device key a REGISTER would
    // not have made, is left out.
    let mut again = h2.edge.export_bindings(h2.now);
    assert_eq!(h2.edge.import_bindings(again.clone(), h2.now), 0);
    again[0].device = "e:other".into();
    assert_eq!(h2.edge.import_bindings(again, h2.now), 0);
}

/// A dialog through another node: the caller's route set names that node after our two entries,
/// so its in-dialog requests reach the node only when the node is a `client_routes` target.
#[test]
fn in_dialog_requests_through_a_remote_branch_need_the_node_in_client_routes() {
    for listed in [false, true] {
        let mut h = H::new();
        if listed {
            let mut cfg = config();
            cfg.client_routes = vec![sagw_proxy::RouteTarget::Host("10.0.0.2".parse().unwrap())];
            h.edge = Edge::with_auth(cfg, Box::new(h.outbound.clone()));
        }
        h.remote("carol", "e:c1", 600).unwrap();
        let sent = h.feed(alice(), &invite("z9hG4bKd1", "carol"));
        let out = &sent[1].msg;
        // Node 2 Record-Routes itself (its two entries on top) and carol answers.
        let mut extra = vec![
            (
                "Record-Route",
                "<sip:OUT2@10.0.0.2:5061;transport=tls;lr>".to_owned(),
            ),
            (
                "Record-Route",
                "<sip:IN2@10.0.0.2:5061;transport=tls;lr>".to_owned(),
            ),
        ];
        for rr in out.header_all("Record-Route") {
            extra.push(("Record-Route", rr.to_owned()));
        }
        extra.push(("Contact", "<sip:carol@198.51.100.7:5060>".to_owned()));
        let ok = build_response(out, 200, "OK", Some("c"), &extra).unwrap();
        let back = h.feed_msg(node2_flow(), ok);
        let mut route_set: Vec<String> = back[0]
            .msg
            .header_all("Record-Route")
            .map(str::to_owned)
            .collect();
        route_set.reverse();
        let bye = format!(
            "BYE sip:carol@198.51.100.7:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bKbye\r\n\
Max-Forwards: 70\r\nRoute: {}\r\nFrom: <sip:alice@example.com>;tag=a1\r\nTo: <sip:carol@example.com>;tag=c\r\n\
Call-ID: z9hG4bKd1\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n",
            route_set.join(", ")
        );
        let sent = h.feed(alice(), &bye);
        if listed {
            assert_eq!(sent[0].to, to_node2(), "{sent:?}");
            // Our two entries are gone; node 2's are next.
            let top = sent[0].msg.header("Route").unwrap_or_default();
            assert!(
                top.starts_with("<sip:IN2@10.0.0.2:5061;transport=tls;lr>"),
                "{top}"
            );
        } else {
            assert_eq!(sent[0].msg.status_code(), Some(403), "{sent:?}");
        }
    }
}

/// A request another node of the pool relays to a device held here comes with the address of
/// record as Request-URI (that node knows the device's flow, not its Contact): this node puts the
/// device's Contact there, as for a request it looked up itself (RFC 3261 §16.6 step 2).
#[test]
fn a_request_relayed_by_another_node_reaches_the_device_under_its_contact() {
    let mut h = H::new();
    let bob = flow(5, Transport::Tcp, "198.51.100.3:40000");
    h.register(bob, "bob", "b1", 3600);
    let now = h.now;
    let (_, route) = h
        .edge
        .pool_bindings("sip:bob@example.com", now)
        .pop()
        .expect("bob's binding, with the Route to it");
    let relayed = format!(
        "INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/TLS {NODE2};branch=z9hG4bKn2i1\r\n\
Via: SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bKa1\r\nRoute: {route}\r\nMax-Forwards: 69\r\n\
From: <sip:alice@example.com>;tag=a1\r\nTo: <sip:bob@example.com>\r\nCall-ID: n2i1\r\n\
CSeq: 1 INVITE\r\nContact: <sip:alice@198.51.100.1:5060>\r\nContent-Length: 0\r\n\r\n"
    );
    let sent = h.feed(node2_flow(), &relayed);
    let to_bob = sent
        .iter()
        .find(|s| s.to == Target::Flow(bob))
        .unwrap_or_else(|| panic!("the INVITE reaches bob: {sent:?}"));
    assert_eq!(to_bob.msg.request_uri(), Some("sip:bob@198.51.100.3:40000"));
    assert!(routes(&to_bob.msg).is_empty(), "{:?}", routes(&to_bob.msg));
}
