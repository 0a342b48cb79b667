//! The whole proxy with authentication on, as the driver builds it: `sagw_proxy::Edge` with
//! `sagw_gateway::auth::SecurityStage` over a core made by `sagw_gateway::auth::build_core` from a
//! parsed config (NTLM and Digest offered, registrar mode, one UDP next hop, `client_routes`
//! empty), in which alice has signed in with a real three-leg NTLM handshake (a REGISTER), so she
//! holds a real SA whose client side the harness keeps ([`ClientSa`]). Peers: alice (TLS, signed in),
//! mallory (UDP, never authenticated) and the next hop.
//!
//! Invariants, checked on every message the edge emits (a broken one panics, so libFuzzer keeps
//! the input as a crash):
//! 1. **Where client messages go** (issue 12 "Where clients may route", points 2 and 5; the routing
//!    policy): while the edge handles a message from a client flow, every `Target::Addr` send goes
//!    to the next hop's address (the only target the policy allows with `client_routes` empty),
//!    also when the request named a host the edge had resolved (see [`World::drain`]). Timers and the next hop's messages are exempt (a server may route
//!    anywhere). Every `Target::Flow` send, whatever caused it, names a flow the edge was given
//!    (flow tokens are MAC'd: another flow would be a forged one).
//! 2. **No signature with alice's SA outside her flow** (issue 12 point 3): no message to mallory,
//!    the next hop or any other address carries an `Authentication-Info` /
//!    `Proxy-Authentication-Info` whose `rspauth` verifies with alice's session. Checking the
//!    signature, not only the `opaque`, keeps headers a peer merely wrote from counting.
//! 3. **No relay of unauthenticated messages** (issue 17): while the edge handles a message from a
//!    client that did not sign it (mallory, or alice sending as is), nothing is sent to the next
//!    hop or to the other client: it is answered (a challenge, a refusal) or dropped. The one
//!    exception: alice's CANCEL, which needs no credentials, of an INVITE she opened.
//!
//! Determinism: time is a fixed base plus what the input adds; randomness is seeded
//! (`XorShiftRng`: the stage's, the core set-up's and alice's client's); the world is rebuilt for
//! every input. Once per process are made: the settings and the credentials file (in a temporary
//! directory), and alice's real sign-in ([`World::signed_in`]). Every input's world then starts
//! from that snapshot the way a restarted gateway does: a fresh core and edge that adopt her SA
//! (`export_sa` / `adopt_sa`) and import her registration (`export_bindings` /
//! `import_bindings`), with a copy of her client. Same state for every input, at a fraction of the
//! cost of three handshake legs through the edge. (The proxy's tables hash with a per-process seed: only their iteration order
//! may differ between runs.)
//!
//! `PROXY_AUTH_TRACE=1` prints every message in and out.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, UNIX_EPOCH};

use sagw_auth::{SecurityCore, XorShiftRng};
use sagw_gateway::auth::SecurityStage;
use sagw_gateway::auth::SharedKeys;
use sagw_gateway::auth_config::AuthSettings;
use sagw_gateway::listener::ListenerId;
use sagw_proxy::{
    Action, BindingRecord, Edge, EdgeConfig, Flow, Inbound, LocalAddrs, NextHop, Now, Secret,
    Target, Transport,
};
use sagw_sip::{AuthHeader, Message};

use crate::sipae::{ALICE_EPID, ALICE_PW, ClientSa, credentials_header, ntlm_negotiate};
use crate::{T0, substitute};

pub const GW: &str = "192.0.2.1";
pub const DOMAIN: &str = crate::sipae::DOMAIN;
pub const HOP: &str = "198.51.100.10:5060";
pub const ALICE: &str = crate::sipae::ALICE_ADDR;
pub const MALLORY: &str = crate::sipae::MALLORY_ADDR;

/// What is made once per process: the validated settings (with the credentials file holding
/// alice and bob) and the monotonic base.
struct Fixture {
    settings: sagw_gateway::Settings,
    auth: AuthSettings,
    base: Instant,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("sagw-fuzz-world-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let text = format!(
            r#"
[listen]
udp = "{GW}:5060"
tcp = "{GW}:5060"
tls = "{GW}:5061"
[metrics]
listen = ""
[proxy]
mode = "registrar"
domains = ["{DOMAIN}"]
next_hops = ["udp:{HOP}"]
client_routes = []
[auth]
schemes = ["ntlm", "digest"]
sip_domain = "{DOMAIN}"
fqdn = "gw.{DOMAIN}"
"#
        );
        let mut cfg = sagw_gateway::Config::parse(&text).expect("config parses");
        cfg.auth.credentials = dir.join("users").display().to_string();
        cfg.auth.nonce_key = dir.join("nonce.key").display().to_string();
        let settings = cfg.validate().expect("config is valid");
        let auth = settings.auth.clone().expect("[auth] is on");
        sagw_gateway::users::add(&auth, "alice", ALICE_PW, None).expect("user alice");
        sagw_gateway::users::add(&auth, "bob", crate::sipae::BOB_PW, None).expect("user bob");
        Fixture {
            settings,
            auth,
            base: Instant::now(),
        }
    })
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Who {
    Alice,
    Mallory,
    Hop,
}

/// What caused the edge's actions being drained.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Cause {
    /// A message from this peer; `signed`: the harness signed it with alice's SA.
    Message {
        from: Who,
        signed: bool,
    },
    Timers,
}

impl Cause {
    fn describe(self) -> &'static str {
        match self {
            Cause::Message {
                from: Who::Alice,
                signed: true,
            } => "a message alice signed",
            Cause::Message {
                from: Who::Alice,
                signed: false,
            } => "a message from alice, unsigned",
            Cause::Message {
                from: Who::Mallory, ..
            } => "a message from mallory",
            Cause::Message { from: Who::Hop, .. } => "a message from the next hop",
            Cause::Timers => "timers",
        }
    }
}

pub struct Peer {
    pub flow: Flow,
    /// The requests the edge sent this peer, the last at the end (at most [`KEPT`]).
    pub requests: Vec<Message>,
    /// The last message the edge sent this peer.
    pub last: Option<Message>,
    /// The last response the edge sent this peer.
    pub last_response: Option<Message>,
}

/// How many requests per peer are kept for answers.
pub const KEPT: usize = 4;

impl Peer {
    pub fn last_request(&self) -> Option<&Message> {
        self.requests.last()
    }
}

pub struct World {
    pub edge: Edge,
    /// The core the edge's security stage uses.
    pub core: Arc<SecurityCore>,
    pub now: Now,
    pub alice: Peer,
    pub mallory: Peer,
    pub hop: Peer,
    /// alice's client side of her SA (`None` only during the sign-in).
    pub sa: Option<ClientSa>,
    pub client_rng: XorShiftRng,
    /// Messages the edge sent to alice during the sign-in.
    setup_inbox: Vec<Message>,
    /// The requests alice sent (signed), the last at the end (at most [`KEPT`]).
    pub alice_sent: Vec<Message>,
    /// Whether the message being handled is a CANCEL.
    inbound_cancel: bool,
}

fn flow(listener: u16, seq: u64, transport: Transport, remote: &str) -> Flow {
    Flow {
        id: ListenerId(listener).flow(seq),
        transport,
        remote: remote.parse().expect("address"),
    }
}

pub fn tracing() -> bool {
    static T: OnceLock<bool> = OnceLock::new();
    *T.get_or_init(|| std::env::var_os("PROXY_AUTH_TRACE").is_some_and(|v| v != "0"))
}

pub fn text(m: &Message) -> String {
    String::from_utf8_lossy(&m.to_bytes()).into_owned()
}

fn keep(list: &mut Vec<Message>, m: Message) {
    if list.len() == KEPT {
        list.remove(0);
    }
    list.push(m);
}

/// The keys of every world's core (a pool's shared keys, here fixed: no key file, no OS
/// randomness).
const KEYS: SharedKeys = SharedKeys {
    ntlm_challenge: [0x11; 32],
    digest_nonce: Some([0x22; 32]),
    digest_node: 0,
};

/// alice signed in, once per process.
struct Snapshot {
    /// The core that holds her SA.
    core: Arc<SecurityCore>,
    /// Her registration.
    bindings: Vec<BindingRecord>,
    /// Her client.
    sa: ClientSa,
    keys: (sagw_ntlm::Key16, u32),
    now: Now,
}

fn snapshot() -> &'static Snapshot {
    static S: OnceLock<Snapshot> = OnceLock::new();
    S.get_or_init(|| {
        let w = World::signed_in();
        let sa = w.sa.expect("signed in");
        let keys = sa.session.export().expect("alice's session exports");
        Snapshot {
            core: w.core,
            bindings: w.edge.export_bindings(w.now),
            sa,
            keys,
            now: w.now,
        }
    })
}

impl World {
    /// A fresh world in which alice has signed in: her SA and registration from the per-process
    /// snapshot (see the module documentation).
    pub fn new() -> World {
        let snap = snapshot();
        let mut w = World::unsigned();
        let sa = snap
            .core
            .sa_for_endpoint(&format!("sip:alice@{DOMAIN}"), ALICE_EPID, snap.now.wall)
            .expect("the snapshot's SA");
        let record = snap.core.export_sa(&sa).expect("alice's SA exports");
        let resume = sagw_auth::SaResume {
            snum_after: sa.snum(),
            window: Some(sa.window_bytes()),
            idle_deadline: None,
        };
        w.core
            .adopt_sa(record, &resume, snap.now.wall)
            .expect("alice's SA adopted");
        let restored = w.edge.import_bindings(snap.bindings.clone(), snap.now);
        assert_eq!(restored, 1, "alice's registration restored");
        w.now = snap.now;
        w.sa = Some(snap.sa.copy(&snap.keys));
        w
    }

    /// A fresh world, and alice's real sign-in through the edge: REGISTER, NTLM negotiate leg,
    /// AUTHENTICATE leg.
    pub fn signed_in() -> World {
        let mut w = World::unsigned();
        w.sign_in();
        w
    }

    fn unsigned() -> World {
        let fx = fixture();
        let s = &fx.settings;
        let mut setup_rng = XorShiftRng::new(7);
        let (core, _, router) =
            sagw_gateway::auth::build_core_keyed(&fx.auth, &mut setup_rng, Some(&KEYS))
                .expect("core");
        let core = Arc::new(core);
        let stage = SecurityStage::new(
            core.clone(),
            Box::new(XorShiftRng::new(0x5A6E)),
            fx.auth.director.clone(),
        )
        .with_router(router);
        let local = LocalAddrs {
            host: GW.to_owned(),
            aliases: Vec::new(),
            udp: Some(5060),
            tcp: Some(5060),
            tls: Some(5061),
            extra_ports: Vec::new(),
        };
        let mut ec = EdgeConfig::new(local, Secret::new([9; 32]));
        ec.mode = s.mode;
        ec.domains = s.domains.clone();
        ec.next_hops = s.next_hops.clone();
        ec.trusted_peers = s.trusted_peers.clone();
        ec.client_routes = s.client_routes.clone();
        ec.registrar = s.registrar.clone();
        ec.timers = s.timers;
        assert!(ec.client_routes.is_empty() && ec.next_hops.len() == 1);
        // Listeners in [listen] order: udp 0, tcp 1, tls 2 (as the driver numbers them).
        let peer = |f| Peer {
            flow: f,
            requests: Vec::new(),
            last: None,
            last_response: None,
        };
        World {
            edge: Edge::with_auth(ec, Box::new(stage)),
            core,
            now: Now {
                mono: fx.base,
                wall: UNIX_EPOCH + Duration::from_secs(T0),
            },
            alice: peer(flow(2, 1, Transport::Tls, ALICE)),
            mallory: peer(flow(0, 0, Transport::Udp, MALLORY)),
            hop: peer(flow(0, 0, Transport::Udp, HOP)),
            sa: None,
            client_rng: XorShiftRng::new(42),
            setup_inbox: Vec::new(),
            alice_sent: Vec::new(),
            inbound_cancel: false,
        }
    }

    pub fn peer(&self, who: Who) -> &Peer {
        match who {
            Who::Alice => &self.alice,
            Who::Mallory => &self.mallory,
            Who::Hop => &self.hop,
        }
    }

    fn peer_mut(&mut self, who: Who) -> &mut Peer {
        match who {
            Who::Alice => &mut self.alice,
            Who::Mallory => &mut self.mallory,
            Who::Hop => &mut self.hop,
        }
    }

    /// Signs `m` with alice's SA as her client does (`Proxy-Authorization` for requests other than
    /// REGISTER); remembers the requests (other than ACK and CANCEL) for follow-ups.
    pub fn sign_as_alice(&mut self, m: &mut Message) {
        if let Some(sa) = self.sa.as_mut() {
            let b = sa.credentials();
            sa.sign(&mut self.client_rng, m, credentials_header(m), b);
        }
        if m.is_request() && !matches!(m.method(), Some("ACK" | "CANCEL")) {
            keep(&mut self.alice_sent, m.clone());
        }
    }

    /// Hands `m` to the edge as received from `who` (`signed`: alice signed it), then checks every
    /// action it produced.
    pub fn inject(&mut self, who: Who, signed: bool, m: Message) {
        let flow = self.peer(who).flow;
        let now = self.now;
        if tracing() {
            eprintln!(
                "==> from {who:?}{} at +{:?}\n{}",
                if signed { " (signed)" } else { "" },
                now.mono - fixture().base,
                text(&m)
            );
        }
        self.inbound_cancel = m.method() == Some("CANCEL");
        self.edge.handle_inbound(Inbound { message: m, flow }, now);
        self.drain(Cause::Message { from: who, signed });
    }

    /// Time passes; due timers fire.
    pub fn advance(&mut self, d: Duration) {
        self.now = self.now.after(d);
        let now = self.now;
        self.edge.handle_timeout(now);
        self.drain(Cause::Timers);
    }

    /// Drains the edge's actions, checking the invariants. A name the edge asks to resolve (a
    /// Route naming a host) resolves at once, under the same cause, to the loopback address at the
    /// port asked for, and for every other request also to the next hop: the policy is judged on
    /// the addresses a name resolves to, so a client's request must go to the next hop or nowhere.
    fn drain(&mut self, cause: Cause) {
        loop {
            let mut resolves = Vec::new();
            while let Some(action) = self.edge.poll_action() {
                let (to, message) = match action {
                    Action::Send { to, message, .. } => (to, message),
                    Action::Resolve(r) => {
                        resolves.push(r);
                        continue;
                    }
                    Action::Report(_) => continue,
                };
                if tracing() {
                    eprintln!("<== to {to:?} ({})\n{}", cause.describe(), text(&message));
                }
                let dest = self.check(cause, to, &message);
                if let Some(who) = dest {
                    if who == Who::Alice && self.sa.is_none() {
                        self.setup_inbox.push(message.clone());
                    }
                    let p = self.peer_mut(who);
                    if message.is_request() {
                        keep(&mut p.requests, message.clone());
                    } else {
                        p.last_response = Some(message.clone());
                    }
                    p.last = Some(message);
                }
            }
            if resolves.is_empty() {
                return;
            }
            for r in resolves {
                let transport = r.transport.unwrap_or(Transport::Udp);
                let loopback = SocketAddr::from(([127, 0, 0, 1], r.port.unwrap_or(5060)));
                let mut targets = vec![NextHop {
                    transport,
                    addr: loopback,
                }];
                if r.id.0 % 2 == 0 {
                    targets.push(NextHop {
                        transport: Transport::Udp,
                        addr: self.hop.flow.remote,
                    });
                }
                if tracing() {
                    eprintln!("<== resolve {r:?} ({}): {targets:?}", cause.describe());
                }
                let now = self.now;
                self.edge.resolved(r.id, targets, now);
            }
        }
    }

    /// The invariants for one send; returns the peer it reaches, if it is one of ours.
    fn check(&self, cause: Cause, to: Target, m: &Message) -> Option<Who> {
        let hop_addr = self.hop.flow.remote;
        let from_client = matches!(
            cause,
            Cause::Message {
                from: Who::Alice | Who::Mallory,
                ..
            }
        );
        let dest = match to {
            Target::Flow(f) => {
                let known = [Who::Alice, Who::Mallory, Who::Hop]
                    .into_iter()
                    .find(|w| self.peer(*w).flow == f);
                assert!(
                    known.is_some(),
                    "invariant 1 broken: a send over a flow the edge was never given ({f:?}), while handling {}:\n{}",
                    cause.describe(),
                    text(m)
                );
                known
            }
            Target::Addr { transport, addr } => {
                assert!(
                    !from_client || addr == hop_addr,
                    "invariant 1 broken (issue 12 points 2/5, where clients may route): {} made the edge send to {transport:?} {addr}, not the next hop {hop_addr}:\n{}",
                    cause.describe(),
                    text(m)
                );
                [Who::Alice, Who::Mallory, Who::Hop]
                    .into_iter()
                    .find(|w| self.peer(*w).flow.remote == addr)
            }
        };
        if let Cause::Message {
            from,
            signed: false,
        } = cause
            && from != Who::Hop
            && self.sa.is_some()
        {
            // The one exception, by design ([MS-SIPAE] 3.3.5.1, tests/flows/ack-cancel.flow): a
            // CANCEL needs no credentials, and the edge honours it for an INVITE its sender opened
            // (authenticated) on the same flow, so alice's unsigned CANCEL may go on.
            let honoured_cancel = from == Who::Alice
                && self.inbound_cancel
                && dest == Some(Who::Hop)
                && m.method() == Some("CANCEL");
            assert!(
                dest == Some(from) || honoured_cancel,
                "invariant 3 broken (no relay of unauthenticated messages): {} made the edge send to {}:\n{}",
                cause.describe(),
                dest.map_or_else(|| format!("{to:?}"), |d| format!("{d:?}")),
                text(m)
            );
        }
        if dest != Some(Who::Alice)
            && let Some(sa) = &self.sa
            && let Some((header, opaque_matches)) = sa.signed_by(m)
        {
            panic!(
                "invariant 2 broken (issue 12 point 3, signatures only with the SA that verified): a message signed with alice's SA ({header}, rspauth verifies with her session, opaque {}) went to {} ({to:?}) while handling {}:\n{}",
                if opaque_matches {
                    "is hers"
                } else {
                    "is not hers"
                },
                dest.map_or("an address outside the test".to_owned(), |d| format!(
                    "{d:?}"
                )),
                cause.describe(),
                text(m)
            );
        }
        dest
    }

    /// alice signs in: REGISTER, NTLM negotiate leg, AUTHENTICATE leg (signed, version 4), each
    /// answered as expected, the 200 OK signed with the new SA.
    fn sign_in(&mut self) {
        let reg =
            |cseq: u32, extra: &str| crate::sipae::request("REGISTER", "alice", ALICE, cseq, extra);
        self.inject(Who::Alice, false, reg(1, ""));
        let offer = self.expect_challenge("NTLM ");
        let offer = AuthHeader::parse(&offer).expect("challenge parses");
        let negotiate = ntlm_negotiate(
            offer.param("realm").expect("realm"),
            offer.param("targetname").expect("targetname"),
        );
        self.inject(
            Who::Alice,
            false,
            reg(2, &format!("Authorization: {negotiate}\r\n")),
        );
        let challenge = self.expect_challenge("NTLM ");
        let (mut sa, leg) = ClientSa::answer(
            &challenge,
            "alice",
            ALICE_PW,
            self.now.wall,
            &mut self.client_rng,
        );
        let mut m = reg(3, "");
        sa.sign(&mut self.client_rng, &mut m, "Authorization", leg);
        self.inject(Who::Alice, true, m);
        let ok = self
            .setup_inbox
            .pop()
            .expect("setup: nothing sent to alice for the AUTHENTICATE leg");
        assert_eq!(
            ok.status_code(),
            Some(200),
            "setup: sign-in failed:\n{}",
            text(&ok)
        );
        // The invariant 2 test must accept the gateway's own signature for her.
        assert!(
            sa.signed_by(&ok).is_some_and(|(_, opaque)| opaque),
            "setup: the 200 OK to alice does not verify with her SA:\n{}",
            text(&ok)
        );
        self.sa = Some(sa);
        self.setup_inbox.clear();
    }

    /// The last `WWW-Authenticate` of `scheme` in the 401 just sent to alice.
    fn expect_challenge(&mut self, scheme: &str) -> String {
        let m = self
            .setup_inbox
            .pop()
            .expect("setup: nothing sent to alice");
        assert_eq!(
            m.status_code(),
            Some(401),
            "setup: expected 401:\n{}",
            text(&m)
        );
        m.headers()
            .filter(|h| h.name.eq_ignore_ascii_case("WWW-Authenticate"))
            .map(|h| h.value.to_owned())
            .filter(|v| v.starts_with(scheme))
            .last()
            .unwrap_or_else(|| panic!("setup: no {scheme} challenge:\n{}", text(&m)))
    }

    /// Replaces the placeholders in a chunk `who` sends: `${epid}` alice's epid, `${opaque}` her SA's
    /// opaque, and from the last request the sender received: `${via}` its Via lines, `${dialog}`
    /// its From, To (with a tag added when it has none), Call-ID and CSeq lines, `${rr}` its
    /// Record-Route lines; from the last message the sender received: `${route}` Route lines from
    /// its Record-Route (reversed for a response, as a caller uses them), `${contact}` its Contact
    /// URI. Header placeholders expand to zero or more whole lines, each ended by CRLF.
    pub fn substitute(&self, who: Who, raw: &[u8]) -> Vec<u8> {
        if !raw.windows(2).any(|w| w == b"${") {
            return raw.to_vec();
        }
        let p = self.peer(who);
        let req = p.last_request();
        let last = p.last.as_ref();
        let route = last.map_or_else(String::new, |m| {
            let mut rr: Vec<&str> = m.header_all("Record-Route").collect();
            if !m.is_request() {
                rr.reverse();
            }
            rr.iter().map(|r| format!("Route: {r}\r\n")).collect()
        });
        let contact = last
            .and_then(|m| m.header("Contact"))
            .and_then(|c| sagw_sip::parse_name_addr(c).ok().map(|n| n.uri.to_owned()))
            .unwrap_or_default();
        let opaque = self.sa.as_ref().map_or("", |s| s.opaque.as_str());
        let table: [(&[u8], String); 7] = [
            (b"${epid}", ALICE_EPID.to_owned()),
            (b"${opaque}", opaque.to_owned()),
            (b"${via}", header_lines(req, &["Via"])),
            (
                b"${dialog}",
                header_lines(req, &["From", "To", "Call-ID", "CSeq"]),
            ),
            (b"${rr}", header_lines(req, &["Record-Route"])),
            (b"${route}", route),
            (b"${contact}", contact),
        ];
        substitute(raw, &table)
    }
}

impl Default for World {
    fn default() -> Self {
        World::new()
    }
}

/// The lines of `names` in `m`, each `Name: value\r\n`, a `To` without a tag given one.
pub fn header_lines(m: Option<&Message>, names: &[&str]) -> String {
    let Some(m) = m else { return String::new() };
    let mut out = String::new();
    for name in names {
        for v in m.header_all(name) {
            if *name == "To" && !v.contains("tag=") {
                out.push_str(&format!("To: {v};tag=fz\r\n"));
            } else {
                out.push_str(&format!("{name}: {v}\r\n"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Message {
        Message::parse(text.as_bytes()).expect("test message parses")
    }

    /// A restored world serves alice as the sign-in left her: the next hop's MESSAGE reaches her
    /// flow signed with her SA; her signed answer goes to the next hop; mallory gets a challenge.
    #[test]
    fn a_restored_world_reaches_alice_and_challenges_mallory() {
        let mut w = World::new();
        w.inject(
            Who::Hop,
            false,
            parse(&format!(
                "MESSAGE sip:alice@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {HOP};branch=z9hG4bKt1\r\nMax-Forwards: 70\r\nFrom: <sip:bob@{DOMAIN}>;tag=b\r\nTo: <sip:alice@{DOMAIN}>\r\nCall-ID: t1\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n"
            )),
        );
        let got = w
            .alice
            .last_request()
            .expect("the MESSAGE reached alice")
            .clone();
        let sa = w.sa.as_ref().expect("alice's SA");
        assert_eq!(sa.signed_by(&got), Some(("Authentication-Info", true)));
        let mut ok = parse(
            &String::from_utf8(w.substitute(
                Who::Alice,
                b"SIP/2.0 200 OK\r\n${via}${dialog}Content-Length: 0\r\n\r\n",
            ))
            .expect("utf-8"),
        );
        w.sign_as_alice(&mut ok);
        w.inject(Who::Alice, true, ok);
        assert_eq!(
            w.hop.last_response.as_ref().and_then(Message::status_code),
            Some(200)
        );
        w.inject(
            Who::Mallory,
            false,
            parse(&format!(
                "REGISTER sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {MALLORY};branch=z9hG4bKm1\r\nMax-Forwards: 70\r\nFrom: <sip:alice@{DOMAIN}>;tag=m\r\nTo: <sip:alice@{DOMAIN}>\r\nCall-ID: m1\r\nCSeq: 1 REGISTER\r\nContact: <sip:alice@{MALLORY}>\r\nContent-Length: 0\r\n\r\n"
            )),
        );
        assert_eq!(
            w.mallory
                .last_response
                .as_ref()
                .and_then(Message::status_code),
            Some(401)
        );
    }
}
