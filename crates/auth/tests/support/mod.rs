//! A test client for the security core. It builds SIP text by hand and does NTLM with
//! `sagw_ntlm::initiator` (written from the client's side of [MS-NLMP], not the acceptor's code), so
//! the core is checked against an independent peer. It uses the core's `SignatureBuffer`, whose layout
//! is pinned separately by the published buffer vectors.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sagw_auth::{
    BufferParams, Challenge, CoreConfig, Decision, DigestSettings, FileCredentialStore,
    NtlmSettings, Rng, SecurityCore, SignatureBuffer, Transport, TransportContext, XorShiftRng,
};
use sagw_digest::Algorithm;
use sagw_ntlm::initiator::{ClientInputs, Credentials, MicPolicy, authenticate};
use sagw_ntlm::{NtHash, NtlmSession, ServerIdentity};
use sagw_sip::{AuthHeader, AuthHeaderBuilder, Message};

pub const REALM: &str = "SIP Communications Service";
pub const TARGET: &str = "gw.example.com";
pub const DIGEST_REALM: &str = "example.com";

/// 2026-01-05 09:00:00 UTC.
pub fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_767_603_600)
}

pub fn config() -> CoreConfig {
    let mut cfg = CoreConfig::new("example.com");
    cfg.ntlm = Some(NtlmSettings::new(
        TARGET,
        ServerIdentity {
            netbios_domain: "EXAMPLE".into(),
            netbios_computer: "GW".into(),
            dns_domain: "example.com".into(),
            dns_computer: TARGET.into(),
            dns_tree: "example.com".into(),
        },
    ));
    let mut digest = sagw_digest::DigestConfig::new(DIGEST_REALM);
    digest.algorithms = vec![Algorithm::Sha256, Algorithm::Md5];
    cfg.digest = Some(DigestSettings {
        config: digest,
        nonce_key: [7u8; 32],
        max_tracked_nonces: 10_000,
        max_tracked_nonces_per_identity: sagw_digest::DEFAULT_NONCES_PER_OWNER,
        started: None,
    });
    cfg
}

pub fn store() -> FileCredentialStore {
    let mut s = FileCredentialStore::new();
    let realms = [
        (DIGEST_REALM, Algorithm::Sha256),
        (DIGEST_REALM, Algorithm::Md5),
    ];
    s.add_password("alice", "alice-pw", &realms);
    s.add_password("bob", "bob-pw", &realms);
    s
}

pub fn core_with(cfg: CoreConfig) -> SecurityCore {
    SecurityCore::new(cfg, Arc::new(store()))
}

pub fn core() -> SecurityCore {
    core_with(config())
}

pub fn ctx() -> TransportContext {
    ctx_from("198.51.100.7:50000")
}

pub fn ctx_from(addr: &str) -> TransportContext {
    TransportContext {
        source: addr.parse().expect("addr"),
        transport: Transport::Tls,
    }
}

pub fn rng() -> XorShiftRng {
    XorShiftRng::new(0x5EED)
}

pub fn parse(text: &str) -> Message {
    Message::parse(text.as_bytes())
        .unwrap_or_else(|e| panic!("test message must parse: {e}\n{text}"))
}

/// The value of the first challenge header for `scheme`.
pub fn challenge_param(c: &Challenge, scheme: &str, name: &str) -> Option<String> {
    c.headers.iter().find_map(|(_, v)| {
        let h = AuthHeader::parse(v).ok()?;
        if h.scheme.eq_ignore_ascii_case(scheme) {
            h.param(name).map(str::to_owned)
        } else {
            None
        }
    })
}

/// A Lync-style endpoint.
pub struct NtlmClient {
    pub user: String,
    pub password: String,
    pub epid: String,
    /// The domain the AUTHENTICATE names (`EXAMPLE`).
    pub domain: String,
    pub version: u8,
    /// `Authorization` (401 family) or `Proxy-Authorization`.
    pub header: &'static str,
    pub session: Option<NtlmSession>,
    pub opaque: Option<String>,
    pub cnum: u32,
    pub call_seq: u32,
    pub mic: MicPolicy,
}

impl NtlmClient {
    pub fn new(user: &str, password: &str, epid: &str) -> Self {
        NtlmClient {
            user: user.into(),
            password: password.into(),
            epid: epid.into(),
            domain: "EXAMPLE".into(),
            version: 4,
            header: "Authorization",
            session: None,
            opaque: None,
            cnum: 0,
            call_seq: 0,
            mic: MicPolicy::Omit,
        }
    }

    pub fn aor(&self) -> String {
        format!("sip:{}@example.com", self.user)
    }

    /// Request text without credentials; `extra` are whole header lines.
    pub fn request(&mut self, method: &str, extra: &[&str]) -> String {
        self.call_seq += 1;
        let aor = self.aor();
        let (ruri, to) = if method == "REGISTER" {
            ("sip:example.com".to_owned(), format!("<{aor}>"))
        } else {
            (
                "sip:carol@example.com".to_owned(),
                "<sip:carol@example.com>".to_owned(),
            )
        };
        let mut s = format!(
            "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/TLS 198.51.100.7:50000;branch=z9hG4bK{n}\r\nMax-Forwards: 70\r\nFrom: <{aor}>;tag=t{n};epid={epid}\r\nTo: {to}\r\nCall-ID: call-{user}-{n}\r\nCSeq: {n} {method}\r\n",
            n = self.call_seq,
            epid = self.epid,
            user = self.user,
        );
        for line in extra {
            s.push_str(line);
            s.push_str("\r\n");
        }
        s.push_str("Content-Length: 0\r\n\r\n");
        s
    }

    fn with_header(text: &str, name: &str, value: &str) -> Message {
        let mut m = parse(text);
        m.push_header(name, value);
        m
    }

    /// Leg 1: `gssapi-data=""`.
    pub fn leg1(&mut self, method: &str) -> Message {
        let text = self.request(method, &[]);
        let v = AuthHeaderBuilder::new("NTLM")
            .quoted("qop", "auth")
            .quoted("realm", REALM)
            .quoted("targetname", TARGET)
            .quoted("gssapi-data", "")
            .token("version", &self.version.to_string())
            .build();
        Self::with_header(&text, self.header, &v)
    }

    /// Leg 3 from the server's leg-2 challenge; version 4 signs it already.
    pub fn leg3(
        &mut self,
        method: &str,
        challenge: &Challenge,
        now: SystemTime,
        rng: &mut dyn Rng,
    ) -> Message {
        let opaque = challenge_param(challenge, "NTLM", "opaque").expect("opaque in leg 2");
        let token =
            challenge_param(challenge, "NTLM", "gssapi-data").expect("gssapi-data in leg 2");
        let challenge_bytes = B64.decode(token).expect("base64 CHALLENGE");
        let nt = NtHash::from_password(&self.password);
        let mut cc = [0u8; 8];
        rng.fill_bytes(&mut cc);
        let mut rsk = [0u8; 16];
        rng.fill_bytes(&mut rsk);
        let auth = authenticate(
            &challenge_bytes,
            &Credentials {
                user: &self.user,
                domain: &self.domain,
                nt_hash: &nt,
            },
            &ClientInputs {
                workstation: "WS1",
                client_challenge: cc,
                timestamp: now,
                random_session_key: rsk,
                version: [6, 1, 0xB1, 0x1D, 0, 0, 0, 0x0F],
                mic: self.mic,
            },
        )
        .expect("initiator answers the challenge");
        self.session = Some(auth.session);
        self.opaque = Some(opaque.clone());
        let text = self.request(method, &[]);
        let b = AuthHeaderBuilder::new("NTLM")
            .quoted("qop", "auth")
            .quoted("realm", REALM)
            .quoted("opaque", &opaque)
            .quoted("targetname", TARGET)
            .token("version", &self.version.to_string())
            .quoted("gssapi-data", &B64.encode(&auth.message));
        if self.version >= 4 {
            self.sign_into(&text, b, rng)
        } else {
            Self::with_header(&text, self.header, &b.build())
        }
    }

    fn sign_into(&mut self, text: &str, b: AuthHeaderBuilder, rng: &mut dyn Rng) -> Message {
        let mut m = parse(text);
        self.cnum += 1;
        let mut r = [0u8; 4];
        rng.fill_bytes(&mut r);
        let crand = format!("{:08x}", u32::from_be_bytes(r));
        let cnum = self.cnum.to_string();
        let buf = SignatureBuffer::build(
            &m,
            &BufferParams {
                scheme: "NTLM",
                rand: &crand,
                num: &cnum,
                realm: REALM,
                targetname: TARGET,
                version: self.version,
            },
        );
        let sig = self
            .session
            .as_ref()
            .expect("session")
            .sign_as_client(buf.as_bytes());
        let v = b
            .quoted("crand", &crand)
            .quoted("cnum", &cnum)
            .quoted(
                "response",
                &sagw_ntlm::signature_to_hex(&sig).to_lowercase(),
            )
            .build();
        m.push_header(self.header, &v);
        m
    }

    /// A signed request on the established SA.
    pub fn signed(&mut self, text: &str, rng: &mut dyn Rng) -> Message {
        let b = AuthHeaderBuilder::new("NTLM")
            .quoted("qop", "auth")
            .quoted("realm", REALM)
            .quoted("opaque", self.opaque.as_deref().expect("opaque"))
            .quoted("targetname", TARGET);
        self.sign_into(text, b, rng)
    }

    /// Runs legs 1 and 3 of a REGISTER sign-in and returns the final decision.
    pub fn sign_in(&mut self, core: &SecurityCore, now: SystemTime, rng: &mut dyn Rng) -> Decision {
        self.sign_in_from(core, &ctx(), now, rng)
    }

    pub fn sign_in_from(
        &mut self,
        core: &SecurityCore,
        ctx: &TransportContext,
        now: SystemTime,
        rng: &mut dyn Rng,
    ) -> Decision {
        let leg1 = self.leg1("REGISTER");
        let challenge = match core.on_request(&leg1, ctx, now, rng) {
            Decision::Continue(c) => c,
            other => panic!("leg 2 expected, got {other:?}"),
        };
        let leg3 = self.leg3("REGISTER", &challenge, now, rng);
        core.on_request(&leg3, ctx, now, rng)
    }

    /// Checks the server's signature on a message the core signed for this client.
    pub fn verify_server_signature(&self, msg: &Message) -> Result<(), String> {
        let value = msg
            .header("Authentication-Info")
            .or_else(|| msg.header("Proxy-Authentication-Info"))
            .ok_or("no signature header")?;
        let h = AuthHeader::parse(value).map_err(|e| e.to_string())?;
        let p = |n: &str| h.param(n).ok_or(format!("missing {n}"));
        let buf = SignatureBuffer::build(
            msg,
            &BufferParams {
                scheme: h.scheme,
                rand: p("srand")?,
                num: p("snum")?,
                realm: p("realm")?,
                targetname: p("targetname")?,
                version: self.version,
            },
        );
        let sig = sagw_ntlm::signature_from_hex(p("rspauth")?).map_err(|e| e.to_string())?;
        self.session
            .as_ref()
            .ok_or("no session")?
            .verify_from_server(buf.as_bytes(), &sig)
            .map_err(|e| e.to_string())
    }
}

/// What the gateway does with a [`Decision::Deferred`]: the job runs on another thread (a worker,
/// which counts nothing: checked against the counters of `scheme`), its outcome is filed, and the
/// same request is judged again, which takes the outcome.
pub fn judge_deferred(
    core: &SecurityCore,
    job: &sagw_auth::AuthJob,
    m: &Message,
    scheme: sagw_auth::Scheme,
    now: SystemTime,
    rng: &mut dyn Rng,
) -> Decision {
    let before = core.counters().snapshot();
    let outcome = std::thread::scope(|s| s.spawn(|| core.run_job(job)).join().expect("worker"));
    assert_eq!(
        before.scheme(scheme),
        core.counters().snapshot().scheme(scheme),
        "a worker counts nothing"
    );
    core.job_done(*job.key(), outcome, now);
    let again = core.on_request(m, &ctx(), now, rng);
    assert!(
        !matches!(again, Decision::Deferred(_)),
        "judged with the outcome"
    );
    assert_eq!(core.jobs_waiting(), 0, "the outcome was taken");
    again
}

/// A response the gateway would send to `req` (status line + the dialog headers).
pub fn response_to(req: &Message, code: u16, reason: &str, extra: &[&str]) -> Message {
    let mut s = format!("SIP/2.0 {code} {reason}\r\n");
    for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
        let v = req.header(name).expect("dialog header");
        if name == "To" && !v.contains("tag=") {
            s.push_str(&format!("To: {v};tag=gw1\r\n"));
        } else {
            s.push_str(&format!("{name}: {v}\r\n"));
        }
    }
    for line in extra {
        s.push_str(line);
        s.push_str("\r\n");
    }
    s.push_str("Content-Length: 0\r\n\r\n");
    parse(&s)
}
