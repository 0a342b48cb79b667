//! The client side of MS-SIPAE and Digest, for the harnesses: a real NTLM handshake driven by the
//! independent initiator (`sagw_ntlm::initiator`, written from the client's side of [MS-NLMP]), a
//! real Digest handshake (`sagw_digest::client`), signing a message as the client does and checking
//! a server signature. Everything here is set-up the harness controls, not fuzz input: a failure is
//! a broken harness (or a broken core), so it panics.
//!
//! [`CoreWorld`] is a fresh security core in which alice holds an NTLM SA and bob a Digest nonce,
//! both from real handshakes, rebuilt the same way for every input (`auth_decide`).
//!
//! Speed without losing reproducibility: the handshakes run once per process
//! ([`CoreWorld::handshake`]); every input then gets a fresh core that adopts alice's SA from that
//! snapshot the way a restarted gateway or another pool node does (`export_sa` / `adopt_sa`), and
//! copies of both clients. Same state for every input, a third of the cost.

use std::sync::Arc;
use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sagw_auth::{
    Authenticated, Binding, BufferParams, CoreConfig, Decision, DigestSettings,
    FileCredentialStore, NtlmSettings, Rng, SecurityCore, SignatureBuffer, Transport,
    TransportContext, XorShiftRng,
};
use sagw_digest::Algorithm;
use sagw_ntlm::initiator::{ClientInputs, Credentials, MicPolicy, authenticate};
use sagw_ntlm::{NtHash, NtlmSession, ServerIdentity};
use sagw_sip::{AuthHeader, AuthHeaderBuilder, Message};

use crate::t0;

pub const DOMAIN: &str = "example.com";
pub const REALM: &str = "SIP Communications Service";
pub const TARGET: &str = "gw.example.com";
/// The protocol version the clients offer (the gateway's default): a signed AUTHENTICATE.
pub const VERSION: u8 = 4;
pub const ALICE_PW: &str = "alice-pw";
pub const BOB_PW: &str = "bob-pw";
pub const ALICE_EPID: &str = "a1b2c3d4e5";
pub const ALICE_ADDR: &str = "198.51.100.7:50000";
pub const BOB_ADDR: &str = "198.51.100.8:50000";
pub const MALLORY_ADDR: &str = "203.0.113.66:5060";

/// `Authorization: NTLM ...` of a first leg.
pub fn ntlm_negotiate(realm: &str, targetname: &str) -> String {
    AuthHeaderBuilder::new("NTLM")
        .quoted("qop", "auth")
        .quoted("realm", realm)
        .quoted("targetname", targetname)
        .quoted("gssapi-data", "")
        .token("version", &VERSION.to_string())
        .build()
}

/// The client side of an NTLM SA.
pub struct ClientSa {
    pub session: NtlmSession,
    pub opaque: String,
    pub realm: String,
    pub targetname: String,
    pub cnum: u32,
}

impl ClientSa {
    /// Answers a leg-2 challenge (`WWW-Authenticate: NTLM ... gssapi-data=...`) for `user`: the
    /// client's SA and the final leg's credentials, to be signed into the request with [`sign`].
    pub fn answer(
        challenge: &str,
        user: &str,
        password: &str,
        now: SystemTime,
        rng: &mut dyn Rng,
    ) -> (ClientSa, AuthHeaderBuilder) {
        let h = AuthHeader::parse(challenge).expect("leg 2 parses");
        let param = |n: &str| {
            h.param(n)
                .unwrap_or_else(|| panic!("leg 2 without {n}: {challenge}"))
                .to_owned()
        };
        let token = B64.decode(param("gssapi-data")).expect("base64 CHALLENGE");
        let mut cc = [0u8; 8];
        let mut rsk = [0u8; 16];
        rng.fill_bytes(&mut cc);
        rng.fill_bytes(&mut rsk);
        let nt = NtHash::from_password(password);
        let auth = authenticate(
            &token,
            &Credentials {
                user,
                domain: "EXAMPLE",
                nt_hash: &nt,
            },
            &ClientInputs {
                workstation: "WS",
                client_challenge: cc,
                timestamp: now,
                random_session_key: rsk,
                version: [6, 1, 0xB1, 0x1D, 0, 0, 0, 0x0F],
                mic: MicPolicy::Omit,
            },
        )
        .expect("initiator answers the CHALLENGE");
        let sa = ClientSa {
            session: auth.session,
            opaque: param("opaque"),
            realm: param("realm"),
            targetname: param("targetname"),
            cnum: 0,
        };
        let leg = AuthHeaderBuilder::new("NTLM")
            .quoted("qop", "auth")
            .quoted("realm", &sa.realm)
            .quoted("opaque", &sa.opaque)
            .quoted("targetname", &sa.targetname)
            .token("version", &VERSION.to_string())
            .quoted("gssapi-data", &B64.encode(&auth.message));
        (sa, leg)
    }

    /// The credentials of a request on the established SA, before [`sign`] adds the signature.
    pub fn credentials(&self) -> AuthHeaderBuilder {
        AuthHeaderBuilder::new("NTLM")
            .quoted("qop", "auth")
            .quoted("realm", &self.realm)
            .quoted("opaque", &self.opaque)
            .quoted("targetname", &self.targetname)
    }

    /// Signs `m` as the client does (MS-SIPAE 3.2.5.1.2): the next `cnum`, a fresh `crand`, the
    /// signature of the buffer over `m`, all in `header`.
    pub fn sign(&mut self, rng: &mut dyn Rng, m: &mut Message, header: &str, b: AuthHeaderBuilder) {
        self.cnum += 1;
        let mut r = [0u8; 4];
        rng.fill_bytes(&mut r);
        let crand = format!("{:08x}", u32::from_be_bytes(r));
        let cnum = self.cnum.to_string();
        let buf = SignatureBuffer::build(
            m,
            &BufferParams {
                scheme: "NTLM",
                rand: &crand,
                num: &cnum,
                realm: &self.realm,
                targetname: &self.targetname,
                version: VERSION,
            },
        );
        let sig = self.session.sign_as_client(buf.as_bytes());
        let v = b
            .quoted("crand", &crand)
            .quoted("cnum", &cnum)
            .quoted("response", &sagw_ntlm::signature_to_hex(&sig))
            .build();
        m.push_header(header, &v);
    }

    /// When `m` carries a server signature that verifies with this SA's session: the header's
    /// name and whether its `opaque` is this SA's.
    pub fn signed_by(&self, m: &Message) -> Option<(&'static str, bool)> {
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
                if self
                    .session
                    .verify_from_server(buf.as_bytes(), &sig)
                    .is_ok()
                {
                    return Some((name, h.param("opaque") == Some(self.opaque.as_str())));
                }
            }
        }
        None
    }
}

/// The family of header a request carries its credentials in: REGISTER uses `Authorization`
/// (401), everything else `Proxy-Authorization` (407), as Lync clients do.
pub fn credentials_header(m: &Message) -> &'static str {
    if m.is_request() && m.method() != Some("REGISTER") {
        "Proxy-Authorization"
    } else {
        "Authorization"
    }
}

/// A Digest client that answered a challenge: it authorizes any request with the next `nc`.
#[derive(Clone)]
pub struct DigestClient {
    user: String,
    challenge: String,
    ha1: sagw_digest::Ha1,
    nc: u32,
}

impl DigestClient {
    /// From a `WWW-Authenticate: Digest ...` value.
    pub fn new(challenge: &str, user: &str, password: &str) -> DigestClient {
        let hp = sagw_digest::client::parse_header(challenge).expect("Digest challenge parses");
        let ch = sagw_digest::client::Challenge::from_params(hp.pairs()).expect("its parameters");
        let ha1 = sagw_digest::Ha1::compute(ch.algorithm.base(), user, ch.realm, password);
        DigestClient {
            user: user.to_owned(),
            challenge: challenge.to_owned(),
            ha1,
            nc: 0,
        }
    }

    /// The credentials for `method` and `uri` with the next `nc` (`None`: the challenge does not
    /// allow them, e.g. an empty URI).
    pub fn authorize(&mut self, method: &str, uri: &str) -> Option<String> {
        let hp = sagw_digest::client::parse_header(&self.challenge).ok()?;
        let ch = sagw_digest::client::Challenge::from_params(hp.pairs()).ok()?;
        self.nc += 1;
        let cnonce = format!("c{:07x}", self.nc);
        sagw_digest::client::authorize(&ch, &self.user, &self.ha1, method, uri, &cnonce, self.nc)
            .ok()
            .map(|a| a.header_value())
    }
}

/// A REGISTER (or another request) from `user` at `addr`, without credentials; `extra` are whole
/// header lines, each ended by CRLF.
pub fn request(method: &str, user: &str, addr: &str, seq: u32, extra: &str) -> Message {
    let ruri = if method == "REGISTER" {
        format!("sip:{DOMAIN}")
    } else {
        format!("sip:carol@{DOMAIN}")
    };
    let to = if method == "REGISTER" {
        format!("<sip:{user}@{DOMAIN}>")
    } else {
        format!("<sip:carol@{DOMAIN}>")
    };
    let text = format!(
        "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/TLS {addr};branch=z9hG4bKs{seq}\r\nMax-Forwards: 70\r\nFrom: <sip:{user}@{DOMAIN}>;tag=s{seq};epid={ALICE_EPID}\r\nTo: {to}\r\nCall-ID: setup-{user}\r\nCSeq: {seq} {method}\r\nContact: <sip:{user}@{addr};transport=tls>\r\n{extra}Content-Length: 0\r\n\r\n"
    );
    Message::parse(text.as_bytes()).expect("set-up request parses")
}

/// The value of the last challenge header of `scheme` (e.g. `"NTLM "`) among `headers`.
pub fn challenge_value(headers: &[(&'static str, String)], scheme: &str) -> Option<String> {
    headers
        .iter()
        .map(|(_, v)| v)
        .rfind(|v| v.starts_with(scheme))
        .cloned()
}

/// A response to `req` with its dialog headers (a `To` tag added when it has none).
pub fn response_to(req: &Message, code: u16) -> Option<Message> {
    let mut s = format!("SIP/2.0 {code} Whatever\r\n");
    for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
        for v in req.header_all(name) {
            if name == "To" && !v.contains("tag=") {
                s.push_str(&format!("To: {v};tag=gw1\r\n"));
            } else {
                s.push_str(&format!("{name}: {v}\r\n"));
            }
        }
    }
    s.push_str("Content-Length: 0\r\n\r\n");
    Message::parse(s.as_bytes()).ok()
}

/// The core's configuration: NTLM and Digest (SHA-256 and MD5) offered, defaults otherwise.
pub fn core_config() -> CoreConfig {
    let mut cfg = CoreConfig::new(DOMAIN);
    cfg.ntlm = Some(NtlmSettings::new(
        TARGET,
        ServerIdentity {
            netbios_domain: "EXAMPLE".into(),
            netbios_computer: "GW".into(),
            dns_domain: DOMAIN.into(),
            dns_computer: TARGET.into(),
            dns_tree: DOMAIN.into(),
        },
    ));
    let mut digest = sagw_digest::DigestConfig::new(DOMAIN);
    digest.algorithms = vec![Algorithm::Sha256, Algorithm::Md5];
    cfg.digest = Some(DigestSettings {
        config: digest,
        nonce_key: [7u8; 32],
        max_tracked_nonces: 1024,
    });
    cfg
}

/// alice and bob, with their Digest HA1s (derived once per process: the store is shared, read only).
pub fn credential_store() -> Arc<FileCredentialStore> {
    static STORE: std::sync::OnceLock<Arc<FileCredentialStore>> = std::sync::OnceLock::new();
    STORE
        .get_or_init(|| {
            let mut s = FileCredentialStore::new();
            let realms = [(DOMAIN, Algorithm::Sha256), (DOMAIN, Algorithm::Md5)];
            s.add_password("alice", ALICE_PW, &realms);
            s.add_password("bob", BOB_PW, &realms);
            Arc::new(s)
        })
        .clone()
}

pub fn context(addr: &str) -> TransportContext {
    TransportContext {
        source: addr.parse().expect("address"),
        transport: Transport::Tls,
    }
}

/// A fresh security core in which alice signed in with NTLM (she holds an SA) and bob with
/// Digest (he holds a nonce), at [`t0`], every random draw from one seeded generator: the same for
/// every input, so an artifact replays exactly.
pub struct CoreWorld {
    pub core: SecurityCore,
    pub rng: XorShiftRng,
    pub now: SystemTime,
    pub alice: ClientSa,
    pub bob: DigestClient,
}

/// The SA-holding core the handshakes made, once per process.
struct Snapshot {
    world: CoreWorld,
    /// alice's session keys (exported session key and negotiated flags).
    alice_keys: (sagw_ntlm::Key16, u32),
}

fn snapshot() -> &'static Snapshot {
    static S: std::sync::OnceLock<Snapshot> = std::sync::OnceLock::new();
    S.get_or_init(|| {
        let world = CoreWorld::handshake();
        let alice_keys = world
            .alice
            .session
            .export()
            .expect("alice's session exports");
        Snapshot { world, alice_keys }
    })
}

impl ClientSa {
    /// A copy: the same keys, opaque and `cnum`.
    pub fn copy(&self, keys: &(sagw_ntlm::Key16, u32)) -> ClientSa {
        ClientSa {
            session: NtlmSession::from_exported_session_key(&keys.0, keys.1)
                .expect("session from its own keys"),
            opaque: self.opaque.clone(),
            realm: self.realm.clone(),
            targetname: self.targetname.clone(),
            cnum: self.cnum,
        }
    }
}

impl CoreWorld {
    /// A fresh core holding alice's SA as the handshakes made it (adopted from the per-process
    /// snapshot), bob's Digest client as it answered, the clock at [`t0`] and the generator at
    /// a fixed seed.
    pub fn new() -> CoreWorld {
        let snap = snapshot();
        let t = &snap.world;
        let core = SecurityCore::new(core_config(), credential_store());
        let sa = t
            .core
            .sa_for_endpoint("sip:alice@example.com", ALICE_EPID, t.now)
            .expect("the snapshot's SA");
        let record = t.core.export_sa(&sa).expect("alice's SA exports");
        let resume = sagw_auth::SaResume {
            snum_after: sa.snum(),
            window: Some(sa.window_bytes()),
            idle_deadline: None,
        };
        core.adopt_sa(record, &resume, t.now)
            .expect("alice's SA adopted");
        CoreWorld {
            core,
            rng: XorShiftRng::new(0x0005_EED2),
            now: t.now,
            alice: t.alice.copy(&snap.alice_keys),
            bob: t.bob.clone(),
        }
    }

    /// A fresh core, and the real handshakes: alice's three NTLM legs, bob's Digest challenge and
    /// answer.
    pub fn handshake() -> CoreWorld {
        let core = SecurityCore::new(core_config(), credential_store());
        let mut rng = XorShiftRng::new(0x5EED);
        let now = t0();
        let alice_ctx = context(ALICE_ADDR);
        // alice: leg 1, leg 2 (CHALLENGE), leg 3 signed with her new SA.
        let leg1 = ntlm_negotiate(REALM, TARGET);
        let m = request(
            "REGISTER",
            "alice",
            ALICE_ADDR,
            1,
            &format!("Authorization: {leg1}\r\n"),
        );
        let Decision::Continue(ch) = core.on_request(&m, &alice_ctx, now, &mut rng) else {
            panic!("set-up: leg 2 expected");
        };
        let ch = challenge_value(&ch.headers, "NTLM ").expect("NTLM leg 2");
        let (mut alice, leg3) = ClientSa::answer(&ch, "alice", ALICE_PW, now, &mut rng);
        let mut m = request("REGISTER", "alice", ALICE_ADDR, 2, "");
        alice.sign(&mut rng, &mut m, "Authorization", leg3);
        let d = core.on_request(&m, &alice_ctx, now, &mut rng);
        let a = authenticated_sa(&d).expect("set-up: alice's sign-in failed");
        assert_eq!(
            a, alice.opaque,
            "set-up: alice's SA is not the one she was given"
        );
        // bob: a challenge, then Digest credentials for it.
        let m = request("REGISTER", "bob", BOB_ADDR, 1, "");
        let Decision::Challenge(ch) = core.on_request(&m, &context(BOB_ADDR), now, &mut rng) else {
            panic!("set-up: a challenge for bob expected");
        };
        let ch = challenge_value(&ch.headers, "Digest ").expect("a Digest challenge");
        let mut bob = DigestClient::new(&ch, "bob", BOB_PW);
        let mut m = request("REGISTER", "bob", BOB_ADDR, 2, "");
        let creds = bob
            .authorize("REGISTER", &format!("sip:{DOMAIN}"))
            .expect("Digest credentials");
        m.push_header("Authorization", &creds);
        match core.on_request(&m, &context(BOB_ADDR), now, &mut rng) {
            Decision::Authenticated(Authenticated {
                binding: Binding::Digest { .. },
                ..
            }) => {}
            other => panic!("set-up: bob's Digest sign-in failed: {other:?}"),
        }
        CoreWorld {
            core,
            rng,
            now,
            alice,
            bob,
        }
    }
}

impl Default for CoreWorld {
    fn default() -> Self {
        CoreWorld::new()
    }
}

/// The opaque of the SA a decision authenticated (or verified, for a refusal it signs).
pub fn authenticated_sa(d: &Decision) -> Option<String> {
    let a = match d {
        Decision::Authenticated(a) => a,
        Decision::Forbidden(f) => &f.verified,
        _ => return None,
    };
    match &a.binding {
        Binding::Sa { sa, .. } => Some(sa.opaque().to_string()),
        Binding::Digest { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The snapshot a fresh core adopts serves alice as her real handshake did, and bob's Digest
    /// client goes on with the next `nc`.
    #[test]
    fn a_fresh_world_holds_alices_sa_and_bobs_nonce() {
        let mut w = CoreWorld::new();
        let mut m = request("MESSAGE", "alice", ALICE_ADDR, 7, "");
        let b = w.alice.credentials();
        let header = credentials_header(&m);
        w.alice.sign(&mut w.rng, &mut m, header, b);
        let d = w
            .core
            .on_request(&m, &context(ALICE_ADDR), w.now, &mut w.rng);
        assert_eq!(authenticated_sa(&d), Some(w.alice.opaque.clone()));
        let Decision::Authenticated(a) = &d else {
            panic!("alice's signed MESSAGE: {d:?}");
        };
        let mut ok = response_to(&m, 200).expect("response");
        w.core
            .finish_response(&mut ok, a, w.now, &mut w.rng)
            .expect("signed");
        assert_eq!(w.alice.signed_by(&ok), Some(("Authentication-Info", true)));
        // The same signed request again is a replay.
        let again = w
            .core
            .on_request(&m, &context(ALICE_ADDR), w.now, &mut w.rng);
        assert_eq!(authenticated_sa(&again), None);

        let mut r = request("REGISTER", "bob", BOB_ADDR, 9, "");
        let creds = w
            .bob
            .authorize("REGISTER", "sip:example.com")
            .expect("credentials");
        r.push_header("Authorization", &creds);
        let d = w.core.on_request(&r, &context(BOB_ADDR), w.now, &mut w.rng);
        assert!(
            matches!(&d, Decision::Authenticated(a) if a.identity == "sip:bob@example.com"),
            "bob's REGISTER: {d:?}"
        );
        // Another world starts from the same state: the generator and alice's cnum are reset.
        let w2 = CoreWorld::new();
        assert_eq!(w2.alice.cnum, CoreWorld::new().alice.cnum);
        assert!(w2.alice.cnum < w.alice.cnum);
    }
}
