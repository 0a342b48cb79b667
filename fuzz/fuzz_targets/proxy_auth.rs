#![no_main]
//! The whole proxy with authentication on (issue 12, "What it must show", last bullet): the real
//! pipeline (`sagw_proxy::Edge` + `sagw_gateway::auth::SecurityStage` over a core built by
//! `sagw_gateway::auth::build_core` from a parsed config, NTLM and Digest offered, registrar mode,
//! one UDP next hop, `client_routes` empty), in which alice has signed in with a real three-leg
//! NTLM handshake driven by the independent initiator (`sagw_ntlm::initiator`), so a real SA with
//! a known opaque exists. The input is then a sequence of messages from alice (as sent, or signed
//! by the harness with her SA), from mallory (another client, never authenticated) and from the
//! next hop, with time moving on and timers firing between them.
//!
//! Invariants, checked on every message the edge emits (a broken one panics, so libFuzzer keeps
//! the input as a crash):
//! 1. **Where client messages go** (issue 12 "Where clients may route", points 2 and 5): while the
//!    edge handles a message that came from a client flow (alice or mallory), every
//!    `Target::Addr` send goes to the next hop's address, the only target the policy allows with
//!    `client_routes` empty. Timers and the next hop's messages are exempt (a server may route
//!    anywhere). Every `Target::Flow` send, whatever caused it, names a flow the edge was given
//!    (flow tokens are MAC'd: another flow would be a forged one).
//! 2. **No signature with alice's SA outside her flow** (issue 12 "Signatures only with the SA that
//!    verified", point 3): no message to mallory, to the next hop or to any other address carries
//!    an `Authentication-Info` / `Proxy-Authentication-Info` whose `rspauth` verifies with alice's
//!    NTLM session (the client side of her SA, held by the harness). Checking the signature, not
//!    only the `opaque`, keeps headers a peer merely wrote (and the proxy passed on) from counting.
//!    The setup checks that the same test accepts the gateway's signature on alice's 200 OK.
//! 3. Nothing panics.
//!
//! Input format: chunks separated by the byte 0xFF (as `proxy_edge`). A chunk is one control byte
//! and a SIP message:
//! * bits 0-1: the sender: 0 alice (sent as is), 1 alice (signed by the harness with her SA, as her
//!   client would), 2 mallory, 3 the next hop;
//! * bits 2-4: time that passes before it (timers fire): 0, 20 ms, 500 ms, 4 s, 33 s, 5 min, 1 h,
//!   9 h (registrations, SA idle and SA lifetime all run out within reach);
//! * bits 5-7: how many times it is sent back to back: 1, 1, 1, 1, 2, 3, 8, 40 (a flood in one
//!   chunk: the per-source handshake cap is 32).
//!
//! Before parsing, these placeholders in the message are replaced (what that sender could know):
//! `${epid}` alice's epid, `${opaque}` alice's SA opaque, and from the last request the sender
//! received: `${via}` its Via lines, `${dialog}` its From, To (with a tag added when it has none),
//! Call-ID and CSeq lines, `${rr}` its Record-Route lines; from the last message the sender
//! received: `${route}` Route lines from its Record-Route (reversed for a response, as a caller
//! uses them), `${contact}` its Contact URI. Header placeholders expand to zero or more whole
//! lines, each ended by CRLF (write `${via}${dialog}Content-Length: 0`). With them a next hop or a
//! client can answer the requests the edge sent it, and follow a dialog, which random bytes never
//! would. Seeds: `fuzz/corpus/proxy_auth/seed-*` (written by `fuzz/seeds/proxy_auth.py`); a
//! dictionary: `fuzz/proxy_auth.dict`; inputs that broke an invariant:
//! `fuzz/regressions/proxy_auth/`.
//!
//! `PROXY_AUTH_TRACE=1` prints every message in and out (to run one input and see what it does:
//! `cargo fuzz run proxy_auth FILE` with the variable set).
//!
//! Determinism: the core is sans-IO; time is a fixed base plus what the input adds, randomness is
//! a seeded `XorShiftRng` (the stage's, the core set-up's and alice's client's), and the whole
//! world (core, edge, alice's sign-in) is rebuilt for every input. Only the credentials file and
//! the Digest nonce key are made once per process, in a temporary directory. (The proxy's tables
//! hash with a per-process seed: only their iteration order may differ between runs.) The rebuild
//! and the sign-in cost about 1.3 ms of CPU per input (instrumented build); a typical input of a
//! few messages takes 4 ms, about 200 executions per second on one core of a shared 2-core machine.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use libfuzzer_sys::fuzz_target;
use sagw_auth::{BufferParams, Rng as _, SignatureBuffer, XorShiftRng};
use sagw_gateway::auth::SecurityStage;
use sagw_gateway::auth_config::AuthSettings;
use sagw_gateway::listener::ListenerId;
use sagw_ntlm::initiator::{ClientInputs, Credentials, MicPolicy, authenticate};
use sagw_ntlm::{NtHash, NtlmSession};
use sagw_proxy::{
    Action, Edge, EdgeConfig, Flow, Inbound, LocalAddrs, Now, Secret, Target, Transport,
};
use sagw_sip::{AuthHeader, AuthHeaderBuilder, Message};

const GW: &str = "192.0.2.1";
const DOMAIN: &str = "example.com";
const HOP: &str = "198.51.100.10:5060";
const ALICE: &str = "198.51.100.7:50000";
const MALLORY: &str = "203.0.113.66:5060";
const ALICE_EPID: &str = "a1b2c3d4e5";
const ALICE_PW: &str = "alice-pw";
/// 2026-01-05 09:00:00 UTC.
const T0: u64 = 1_767_603_600;
/// The protocol version alice's client offers (and the gateway's default): signed AUTHENTICATE.
const VERSION: u8 = 4;
const STEPS: [Duration; 8] = [
    Duration::ZERO,
    Duration::from_millis(20),
    Duration::from_millis(500),
    Duration::from_secs(4),
    Duration::from_secs(33),
    Duration::from_secs(300),
    Duration::from_secs(3600),
    Duration::from_secs(9 * 3600),
];
const REPEATS: [usize; 8] = [1, 1, 1, 1, 2, 3, 8, 40];

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
        let dir = std::env::temp_dir().join(format!("sagw-fuzz-proxy-auth-{}", std::process::id()));
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
        sagw_gateway::users::add(&auth, "bob", "bob-pw", None).expect("user bob");
        // Creates the nonce key file once (build_core reads it back afterwards).
        let mut rng = XorShiftRng::new(7);
        sagw_gateway::auth::build_core(&auth, &mut rng).expect("core");
        Fixture {
            settings,
            auth,
            base: Instant::now(),
        }
    })
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Who {
    Alice,
    Mallory,
    Hop,
}

struct Peer {
    flow: Flow,
    /// The last request the edge sent this peer.
    last_request: Option<Message>,
    /// The last message the edge sent this peer.
    last: Option<Message>,
}

/// Alice's client side of her SA.
struct AliceSa {
    session: NtlmSession,
    opaque: String,
    realm: String,
    targetname: String,
    cnum: u32,
}

struct World {
    edge: Edge,
    now: Now,
    alice: Peer,
    mallory: Peer,
    hop: Peer,
    sa: Option<AliceSa>,
    client_rng: XorShiftRng,
    /// Messages the edge sent to alice, for the set-up.
    alice_inbox: Vec<Message>,
}

fn flow(listener: u16, seq: u64, transport: Transport, remote: &str) -> Flow {
    Flow {
        id: ListenerId(listener).flow(seq),
        transport,
        remote: remote.parse().expect("address"),
    }
}

fn tracing() -> bool {
    static T: OnceLock<bool> = OnceLock::new();
    *T.get_or_init(|| std::env::var_os("PROXY_AUTH_TRACE").is_some_and(|v| v != "0"))
}

fn text(m: &Message) -> String {
    String::from_utf8_lossy(&m.to_bytes()).into_owned()
}

impl World {
    fn new() -> World {
        let fx = fixture();
        let s = &fx.settings;
        let mut setup_rng = XorShiftRng::new(7);
        let (core, router) =
            sagw_gateway::auth::build_core(&fx.auth, &mut setup_rng).expect("core");
        let stage = SecurityStage::new(
            Arc::new(core),
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
            last_request: None,
            last: None,
        };
        World {
            edge: Edge::with_auth(ec, Box::new(stage)),
            now: Now {
                mono: fx.base,
                wall: UNIX_EPOCH + Duration::from_secs(T0),
            },
            alice: peer(flow(2, 1, Transport::Tls, ALICE)),
            mallory: peer(flow(0, 0, Transport::Udp, MALLORY)),
            hop: peer(flow(0, 0, Transport::Udp, HOP)),
            sa: None,
            client_rng: XorShiftRng::new(42),
            alice_inbox: Vec::new(),
        }
    }

    fn peer(&self, who: Who) -> &Peer {
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

    /// Hands `m` to the edge as received from `who`, then checks every action it produced.
    fn inject(&mut self, who: Who, m: Message) {
        let flow = self.peer(who).flow;
        let now = self.now;
        if tracing() {
            eprintln!(
                "==> from {who:?} at +{:?}\n{}",
                now.mono - fixture().base,
                text(&m)
            );
        }
        self.edge.handle_inbound(Inbound { message: m, flow }, now);
        self.drain(Some(who));
    }

    /// Time passes; due timers fire.
    fn advance(&mut self, d: Duration) {
        self.now = self.now.after(d);
        let now = self.now;
        self.edge.handle_timeout(now);
        self.drain(None);
    }

    /// Drains the edge's actions, checking the invariants; `cause` is the sender of the message
    /// being handled (`None`: timers).
    fn drain(&mut self, cause: Option<Who>) {
        while let Some(action) = self.edge.poll_action() {
            let Action::Send { to, message, .. } = action else {
                continue;
            };
            if tracing() {
                eprintln!("<== to {to:?} ({})\n{}", cause_name(cause), text(&message));
            }
            let dest = self.check(cause, to, &message);
            if let Some(who) = dest {
                if who == Who::Alice && self.sa.is_none() {
                    self.alice_inbox.push(message.clone());
                }
                let p = self.peer_mut(who);
                if message.is_request() {
                    p.last_request = Some(message.clone());
                }
                p.last = Some(message);
            }
        }
    }

    /// The invariants for one send; returns the peer it reaches, if it is one of ours.
    fn check(&self, cause: Option<Who>, to: Target, m: &Message) -> Option<Who> {
        let hop_addr = self.hop.flow.remote;
        let dest = match to {
            Target::Flow(f) => {
                let known = [Who::Alice, Who::Mallory, Who::Hop]
                    .into_iter()
                    .find(|w| self.peer(*w).flow == f);
                if known.is_none() {
                    panic!(
                        "invariant 1 broken: a send over a flow the edge was never given ({f:?}), while handling {}:\n{}",
                        cause_name(cause),
                        text(m)
                    );
                }
                known
            }
            Target::Addr { transport, addr } => {
                if matches!(cause, Some(Who::Alice | Who::Mallory)) && addr != hop_addr {
                    panic!(
                        "invariant 1 broken (issue 12 points 2/5, where clients may route): {} made the edge send to {transport:?} {addr}, not the next hop {hop_addr}:\n{}",
                        cause_name(cause),
                        text(m)
                    );
                }
                [Who::Alice, Who::Mallory, Who::Hop]
                    .into_iter()
                    .find(|w| self.peer(*w).flow.remote == addr)
            }
        };
        if dest != Some(Who::Alice)
            && let Some(sa) = &self.sa
            && let Some((header, opaque_matches)) = signed_by(sa, m)
        {
            let where_to = match to {
                Target::Flow(f) => {
                    format!("flow {:?} {} {}", f.id, f.transport.uri_param(), f.remote)
                }
                Target::Addr { transport, addr } => format!("{} {addr}", transport.uri_param()),
            };
            panic!(
                "invariant 2 broken (issue 12 point 3, signatures only with the SA that verified): a message signed with alice's SA ({header}, rspauth verifies with her session, opaque {}) went to {} ({where_to}) while handling {}:\n{}",
                if opaque_matches {
                    "is hers"
                } else {
                    "is not hers"
                },
                dest.map_or("an address outside the test".to_owned(), |d| format!(
                    "{d:?}"
                )),
                cause_name(cause),
                text(m)
            );
        }
        dest
    }

    /// Alice signs in: REGISTER, NTLM negotiate leg, AUTHENTICATE leg (signed, version 4), each
    /// answered as expected, the 200 OK signed with the new SA.
    fn sign_in(&mut self) {
        let reg = |cseq: u32, extra: &str| {
            let m = format!(
                "REGISTER sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/TLS {ALICE};branch=z9hG4bKsetup{cseq}\r\nMax-Forwards: 70\r\nFrom: <sip:alice@{DOMAIN}>;tag=s{cseq};epid={ALICE_EPID}\r\nTo: <sip:alice@{DOMAIN}>\r\nCall-ID: setup-alice\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:alice@{ALICE};transport=tls>\r\nExpires: 3600\r\n{extra}Content-Length: 0\r\n\r\n"
            );
            Message::parse(m.as_bytes()).expect("setup REGISTER parses")
        };
        self.inject(Who::Alice, reg(1, ""));
        let offer = self.expect_challenge("NTLM ");
        let offer = AuthHeader::parse(&offer).expect("challenge parses");
        let realm = offer.param("realm").expect("realm").to_owned();
        let targetname = offer.param("targetname").expect("targetname").to_owned();
        let negotiate = AuthHeaderBuilder::new("NTLM")
            .quoted("qop", "auth")
            .quoted("realm", &realm)
            .quoted("targetname", &targetname)
            .quoted("gssapi-data", "")
            .token("version", &VERSION.to_string())
            .build();
        self.inject(
            Who::Alice,
            reg(2, &format!("Authorization: {negotiate}\r\n")),
        );
        let challenge = self.expect_challenge("NTLM ");
        let challenge = AuthHeader::parse(&challenge).expect("CHALLENGE parses");
        let token = B64
            .decode(challenge.param("gssapi-data").expect("gssapi-data"))
            .expect("base64 CHALLENGE");
        let opaque = challenge.param("opaque").expect("opaque").to_owned();
        let mut cc = [0u8; 8];
        let mut rsk = [0u8; 16];
        self.client_rng.fill_bytes(&mut cc);
        self.client_rng.fill_bytes(&mut rsk);
        let nt = NtHash::from_password(ALICE_PW);
        let auth = authenticate(
            &token,
            &Credentials {
                user: "alice",
                domain: "EXAMPLE",
                nt_hash: &nt,
            },
            &ClientInputs {
                workstation: "WS",
                client_challenge: cc,
                timestamp: self.now.wall,
                random_session_key: rsk,
                version: [6, 1, 0xB1, 0x1D, 0, 0, 0, 0x0F],
                mic: MicPolicy::Omit,
            },
        )
        .expect("initiator AUTHENTICATE");
        let mut sa = AliceSa {
            session: auth.session,
            opaque: opaque.clone(),
            realm,
            targetname,
            cnum: 0,
        };
        let mut m = reg(3, "");
        let leg = AuthHeaderBuilder::new("NTLM")
            .quoted("qop", "auth")
            .quoted("realm", &sa.realm)
            .quoted("opaque", &opaque)
            .quoted("targetname", &sa.targetname)
            .token("version", &VERSION.to_string())
            .quoted("gssapi-data", &B64.encode(&auth.message));
        sign(&mut self.client_rng, &mut sa, &mut m, "Authorization", leg);
        self.inject(Who::Alice, m);
        let ok = self
            .alice_inbox
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
            signed_by(&sa, &ok).is_some_and(|(_, opaque)| opaque),
            "setup: the 200 OK to alice does not verify with her SA:\n{}",
            text(&ok)
        );
        self.sa = Some(sa);
        self.alice_inbox.clear();
    }

    /// The last `WWW-Authenticate` of `scheme` in the 401 just sent to alice.
    fn expect_challenge(&mut self, scheme: &str) -> String {
        let m = self
            .alice_inbox
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

    /// Replaces the placeholders (see the module documentation) in a chunk.
    fn substitute(&self, who: Who, raw: &[u8]) -> Vec<u8> {
        if !raw.windows(2).any(|w| w == b"${") {
            return raw.to_vec();
        }
        let p = self.peer(who);
        let lines = |m: Option<&Message>, names: &[&str]| -> String {
            let Some(m) = m else { return String::new() };
            let mut out = Vec::new();
            for name in names {
                for v in m.header_all(name) {
                    if *name == "To" && !v.contains("tag=") {
                        out.push(format!("To: {v};tag=fz\r\n"));
                    } else {
                        out.push(format!("{name}: {v}\r\n"));
                    }
                }
            }
            out.concat()
        };
        let req = p.last_request.as_ref();
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
            (b"${via}", lines(req, &["Via"])),
            (b"${dialog}", lines(req, &["From", "To", "Call-ID", "CSeq"])),
            (b"${rr}", lines(req, &["Record-Route"])),
            (b"${route}", route),
            (b"${contact}", contact),
        ];
        let mut out = Vec::with_capacity(raw.len() + 256);
        let mut i = 0;
        'outer: while i < raw.len() {
            if raw[i] == b'$' {
                for (k, v) in &table {
                    if raw[i..].starts_with(k) {
                        out.extend_from_slice(v.as_bytes());
                        i += k.len();
                        continue 'outer;
                    }
                }
            }
            out.push(raw[i]);
            i += 1;
        }
        out
    }

    /// One chunk of the input.
    fn step(&mut self, chunk: &[u8]) {
        let Some((&ctl, body)) = chunk.split_first() else {
            return;
        };
        let (who, signed) = match ctl & 3 {
            0 => (Who::Alice, false),
            1 => (Who::Alice, true),
            2 => (Who::Mallory, false),
            _ => (Who::Hop, false),
        };
        self.advance(STEPS[usize::from((ctl >> 2) & 7)]);
        let repeat = REPEATS[usize::from(ctl >> 5)];
        let bytes = self.substitute(who, body);
        let Ok(mut m) = Message::parse(&bytes) else {
            return;
        };
        if signed && let Some(sa) = self.sa.as_mut() {
            let header = if m.is_request() && m.method() != Some("REGISTER") {
                "Proxy-Authorization"
            } else {
                "Authorization"
            };
            let b = AuthHeaderBuilder::new("NTLM")
                .quoted("qop", "auth")
                .quoted("realm", &sa.realm)
                .quoted("opaque", &sa.opaque)
                .quoted("targetname", &sa.targetname);
            sign(&mut self.client_rng, sa, &mut m, header, b);
        }
        for _ in 1..repeat {
            self.inject(who, m.clone());
        }
        self.inject(who, m);
    }
}

fn cause_name(cause: Option<Who>) -> &'static str {
    match cause {
        Some(Who::Alice) => "a message from alice",
        Some(Who::Mallory) => "a message from mallory",
        Some(Who::Hop) => "a message from the next hop",
        None => "timers",
    }
}

/// Signs `m` as alice's client does (MS-SIPAE 3.2.5.1.2): the next `cnum`, a fresh `crand`.
fn sign(
    rng: &mut XorShiftRng,
    sa: &mut AliceSa,
    m: &mut Message,
    header: &str,
    b: AuthHeaderBuilder,
) {
    sa.cnum += 1;
    let mut r = [0u8; 4];
    rng.fill_bytes(&mut r);
    let crand = format!("{:08x}", u32::from_be_bytes(r));
    let cnum = sa.cnum.to_string();
    let buf = SignatureBuffer::build(
        m,
        &BufferParams {
            scheme: "NTLM",
            rand: &crand,
            num: &cnum,
            realm: &sa.realm,
            targetname: &sa.targetname,
            version: VERSION,
        },
    );
    let sig = sa.session.sign_as_client(buf.as_bytes());
    let v = b
        .quoted("crand", &crand)
        .quoted("cnum", &cnum)
        .quoted("response", &sagw_ntlm::signature_to_hex(&sig))
        .build();
    m.push_header(header, &v);
}

/// When `m` carries a server signature that verifies with alice's session: the header's name and
/// whether its opaque is hers.
fn signed_by(sa: &AliceSa, m: &Message) -> Option<(&'static str, bool)> {
    for name in ["Authentication-Info", "Proxy-Authentication-Info"] {
        for v in m.header_all(name) {
            let Ok(h) = AuthHeader::parse(v) else {
                continue;
            };
            let Some(rspauth) = h.param("rspauth") else {
                continue;
            };
            let Ok(sig) = sagw_ntlm::signature_from_hex(rspauth) else {
                continue;
            };
            let buf = SignatureBuffer::build(
                m,
                &BufferParams {
                    scheme: h.scheme,
                    rand: h.param("srand").unwrap_or(""),
                    num: h.param("snum").unwrap_or(""),
                    realm: h.param("realm").unwrap_or(""),
                    targetname: h.param("targetname").unwrap_or(""),
                    version: VERSION,
                },
            );
            if sa.session.verify_from_server(buf.as_bytes(), &sig).is_ok() {
                return Some((name, h.param("opaque") == Some(sa.opaque.as_str())));
            }
        }
    }
    None
}

fn world() -> World {
    let mut w = World::new();
    w.sign_in();
    w
}

fuzz_target!(|data: &[u8]| {
    let mut w = world();
    for chunk in data.split(|b| *b == 0xFF) {
        w.step(chunk);
    }
    // Whatever is still pending runs out.
    w.advance(Duration::from_secs(300));
});
