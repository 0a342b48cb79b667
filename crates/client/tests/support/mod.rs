//! A small SIP server on loopback around `sagw_auth::SecurityCore`: it challenges, lets the core
//! decide, answers 200 OK signed through the core, and (on OPTIONS) first sends the client a signed
//! MESSAGE whose signed answer it verifies with `on_response`. Enough of a gateway to exercise
//! every scheme of the client over UDP, TCP and TLS until the real gateway authenticates.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use sagw_auth::{
    ChallengeFamily, CoreConfig, Decision, DigestSettings, FileCredentialStore, NtlmSettings,
    ResponseVerdict, SecurityCore, Transport, TransportContext, XorShiftRng,
};
use sagw_digest::Algorithm;
use sagw_ntlm::ServerIdentity;
use sagw_sip::{Frame, Limits, Message, StreamFramer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;

pub const SIP_DOMAIN: &str = "example.test";
pub const NTLM_TARGET: &str = "gw.example.test";
pub const DIGEST_REALM: &str = "example.test";
pub const USERS: [(&str, &str); 2] = [("alice", "alice-pw"), ("bob", "bob-pw")];

/// How the server misbehaves (or not).
#[derive(Clone, Copy, Debug, Default)]
pub struct Quirks {
    /// Seconds added to the server clock.
    pub clock_offset: i64,
    /// Flip a digit of every rspauth.
    pub tamper: bool,
    /// Answer each message over TCP this late (a slow edge).
    pub delay: std::time::Duration,
}

pub fn ntlm_digest_config() -> CoreConfig {
    let mut cfg = CoreConfig::new(SIP_DOMAIN);
    cfg.ntlm = Some(NtlmSettings::new(
        NTLM_TARGET,
        ServerIdentity {
            netbios_domain: "EXAMPLE".into(),
            netbios_computer: "GW".into(),
            dns_domain: SIP_DOMAIN.into(),
            dns_computer: NTLM_TARGET.into(),
            dns_tree: SIP_DOMAIN.into(),
        },
    ));
    let mut digest = sagw_digest::DigestConfig::new(DIGEST_REALM);
    digest.algorithms = vec![Algorithm::Sha256, Algorithm::Md5];
    cfg.digest = Some(DigestSettings {
        config: digest,
        nonce_key: [9u8; 32],
        max_tracked_nonces: 10_000,
        max_tracked_nonces_per_identity: sagw_digest::DEFAULT_NONCES_PER_OWNER,
        started: None,
    });
    cfg
}

pub fn store() -> FileCredentialStore {
    let mut s = FileCredentialStore::new();
    for (u, p) in USERS {
        s.add_password(
            u,
            p,
            &[
                (DIGEST_REALM, Algorithm::Sha256),
                (DIGEST_REALM, Algorithm::Md5),
            ],
        );
    }
    for n in 0..20 {
        s.add_password(
            &format!("load{n}"),
            &format!("load{n}-pw"),
            &[(DIGEST_REALM, Algorithm::Sha256)],
        );
    }
    s
}

pub struct Server {
    pub core: Arc<SecurityCore>,
    pub quirks: Quirks,
    /// Verdicts on the client's answers to our MESSAGEs.
    pub verdicts: Arc<Mutex<Vec<String>>>,
    rng: Mutex<XorShiftRng>,
}

fn now(q: &Quirks) -> SystemTime {
    let n = SystemTime::now();
    if q.clock_offset >= 0 {
        n + Duration::from_secs(q.clock_offset.unsigned_abs())
    } else {
        n - Duration::from_secs(q.clock_offset.unsigned_abs())
    }
}

fn response_to(req: &Message, code: u16, reason: &str, extra: &[(&str, String)]) -> Message {
    let mut s = format!("SIP/2.0 {code} {reason}\r\n");
    for v in req.header_all("Via") {
        s.push_str(&format!("Via: {v}\r\n"));
    }
    for name in ["From", "To", "Call-ID", "CSeq"] {
        let v = req.header(name).unwrap_or("");
        if name == "To" && !v.contains("tag=") {
            s.push_str(&format!("To: {v};tag=gw{code}\r\n"));
        } else {
            s.push_str(&format!("{name}: {v}\r\n"));
        }
    }
    for (n, v) in extra {
        s.push_str(&format!("{n}: {v}\r\n"));
    }
    s.push_str("Content-Length: 0\r\n\r\n");
    Message::parse(s.as_bytes()).expect("server response parses")
}

fn tamper(msg: &mut Message) {
    if let Some(v) = msg.header("Authentication-Info").map(str::to_owned)
        && let Some(i) = v.find("rspauth=\"")
    {
        let mut b = v.into_bytes();
        let at = i + 9 + 4;
        b[at] = if b[at] == b'0' { b'1' } else { b'0' };
        msg.set_header(
            "Authentication-Info",
            std::str::from_utf8(&b).expect("ascii"),
        );
    }
}

impl Server {
    pub fn new(core: SecurityCore, quirks: Quirks) -> Arc<Self> {
        Arc::new(Server {
            core: Arc::new(core),
            quirks,
            verdicts: Arc::new(Mutex::new(Vec::new())),
            rng: Mutex::new(XorShiftRng::new(0xC11E)),
        })
    }

    /// Messages to send back for one received message.
    pub fn handle(&self, msg: &Message, source: SocketAddr, transport: Transport) -> Vec<Message> {
        let now = now(&self.quirks);
        let mut rng = self.rng.lock();
        if !msg.is_request() {
            let verdict = match self.core.on_response(msg, now) {
                ResponseVerdict::Verified(_) => "verified".to_owned(),
                ResponseVerdict::Unsigned => "unsigned".to_owned(),
                ResponseVerdict::Drop(r) => format!("drop {}", r.label()),
            };
            self.verdicts.lock().push(verdict);
            return Vec::new();
        }
        let ctx = TransportContext { source, transport };
        let method = msg.method().unwrap_or("").to_owned();
        match self.core.on_request(msg, &ctx, now, &mut *rng) {
            Decision::Challenge(c) | Decision::Continue(c) => {
                let extra: Vec<(&str, String)> = c.headers.clone();
                vec![response_to(msg, c.status, c.reason_phrase, &extra)]
            }
            Decision::Reject {
                status,
                reason_phrase,
                ..
            } => vec![response_to(msg, status, reason_phrase, &[])],
            Decision::Forbidden(f) => {
                // Signed with the binding that verified the request, as the gateway does.
                let mut r = response_to(msg, f.status, f.reason_phrase, &[]);
                let _ = self
                    .core
                    .finish_response(&mut r, &f.verified, now, &mut *rng);
                vec![r]
            }
            // This core accepts Kerberos inline and has no domain: nothing is ever deferred or
            // unavailable.
            Decision::Discard(_) | Decision::Deferred(_) | Decision::Unavailable { .. } => {
                Vec::new()
            }
            Decision::Authenticated(auth) => {
                let mut out = Vec::new();
                if method == "OPTIONS"
                    && let Some(sa) = msg
                        .from()
                        .and_then(|f| f.param("epid"))
                        .and_then(|epid| self.core.sa_for_endpoint(&auth.identity, epid, now))
                {
                    let epid = sa.epid().to_owned();
                    let text = format!(
                        "MESSAGE sip:client SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bKgw{n}\r\nMax-Forwards: 70\r\nFrom: <sip:gw@{SIP_DOMAIN}>;tag=gwm{n}\r\nTo: <{id}>;epid={epid}\r\nCall-ID: gw-push-{n}\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
                        n = sa.opaque(),
                        id = auth.identity,
                    );
                    let mut push = Message::parse(text.as_bytes()).expect("push parses");
                    self.core
                        .sign(&mut push, &sa, ChallengeFamily::Www, now, &mut *rng)
                        .expect("sign push");
                    out.push(push);
                }
                let extra = if method == "REGISTER" {
                    vec![("Expires", "3600".to_owned())]
                } else {
                    Vec::new()
                };
                let mut ok = response_to(msg, 200, "OK", &extra);
                self.core
                    .finish_response(&mut ok, &auth, now, &mut *rng)
                    .expect("sign 200");
                if self.quirks.tamper {
                    tamper(&mut ok);
                }
                out.push(ok);
                out
            }
        }
    }
}

/// Serves TCP (plain, or TLS with `tls`) on an ephemeral loopback port.
pub async fn serve_tcp(server: Arc<Server>, tls: Option<tokio_rustls::TlsAcceptor>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((sock, peer)) = listener.accept().await {
            let server = server.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    Some(acc) => {
                        if let Ok(s) = acc.accept(sock).await {
                            stream_loop(server, s, peer, Transport::Tls).await;
                        }
                    }
                    None => stream_loop(server, sock, peer, Transport::Tcp).await,
                }
            });
        }
    });
    addr
}

async fn stream_loop<S>(server: Arc<Server>, sock: S, peer: SocketAddr, transport: Transport)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(sock);
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    tokio::spawn(async move {
        while let Some(b) = rx.recv().await {
            if wr.write_all(&b).await.is_err() {
                break;
            }
        }
    });
    let mut framer = StreamFramer::new(Limits::default());
    let mut buf = vec![0u8; 65536];
    loop {
        let n = match rd.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        framer.push(&buf[..n]);
        while let Ok(Some(frame)) = framer.next_frame() {
            if let Frame::Message(m) = frame {
                if !server.quirks.delay.is_zero() {
                    tokio::time::sleep(server.quirks.delay).await;
                }
                for out in server.handle(&m, peer, transport) {
                    let _ = tx.send(out.to_bytes());
                }
            }
        }
    }
}

/// Serves UDP on an ephemeral loopback port.
pub async fn serve_udp(server: Arc<Server>) -> SocketAddr {
    let sock = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind"));
    let addr = sock.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, peer)) = sock.recv_from(&mut buf).await {
            let Ok(m) = Message::parse(&buf[..n]) else {
                continue;
            };
            for out in server.handle(&m, peer, Transport::Udp) {
                let _ = sock.send_to(&out.to_bytes(), peer).await;
            }
        }
    });
    addr
}

/// A self-signed certificate for `localhost`: (PEM of the certificate, TLS acceptor).
pub fn self_signed_tls() -> (String, tokio_rustls::TlsAcceptor) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("cert params");
    let cert = params.self_signed(&key).expect("self-signed");
    let pem = cert.pem();
    let der = rustls::pki_types::CertificateDer::from(cert.der().to_vec());
    let key_der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("key der");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![der], key_der)
        .expect("server config");
    (pem, tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
