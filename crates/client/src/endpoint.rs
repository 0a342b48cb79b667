//! The sans-IO client endpoint: builds requests, reads responses, says what to do next.
//!
//! One endpoint is one Lync-style client: an AOR, an account, an `epid`. It registers (walking the
//! MS-SIPAE legs or Digest), then sends signed requests and answers requests the server sends it.
//! No sockets, no clock, no randomness of its own: the driver passes `now` and an [`Rng`], sends
//! what [`Step::Send`] holds, and feeds every received message back. Kerberos tickets come from the
//! driver too ([`Step::NeedKerberosTicket`]), because getting one may block on the KDC.

use std::fmt;
use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sagw_auth::Rng;
use sagw_digest::client::{Challenge as DigestChallenge, authorize, parse_header};
use sagw_digest::{Algorithm, Ha1, QopMode, response_hex};
use sagw_kerberos::KerberosError;
use sagw_kerberos::initiator::ClientSession;
use sagw_ntlm::NtHash;
use sagw_ntlm::initiator::{ClientInputs, Credentials, MicPolicy, authenticate};
use sagw_sip::{AuthHeader, AuthHeaderBuilder, Message, parse_challenges};
use serde::Serialize;
use zeroize::Zeroizing;

use crate::sa::{
    BadSignature, ClientMechanism, ClientSa, Family, LegParams, SaScheme, SignatureCheck,
};
use crate::util::{parse_http_date, rand_hex, signed_secs};

/// An authentication scheme the client may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum AuthScheme {
    Kerberos,
    Ntlm,
    Digest,
}

impl AuthScheme {
    pub fn token(self) -> &'static str {
        match self {
            AuthScheme::Kerberos => "Kerberos",
            AuthScheme::Ntlm => "NTLM",
            AuthScheme::Digest => "Digest",
        }
    }
    fn from_token(s: &str) -> Option<Self> {
        [AuthScheme::Kerberos, AuthScheme::Ntlm, AuthScheme::Digest]
            .into_iter()
            .find(|a| a.token().eq_ignore_ascii_case(s))
    }
    /// Clock skew the server side tolerates ([MS-SIP]: 15 min NTLM, 5 min Kerberos).
    fn skew_tolerance_secs(self) -> Option<i64> {
        match self {
            AuthScheme::Ntlm => Some(15 * 60),
            AuthScheme::Kerberos => Some(5 * 60),
            AuthScheme::Digest => None,
        }
    }
}

/// A password, wiped on drop and never printed.
#[derive(Clone)]
pub struct Password(Zeroizing<String>);

impl Password {
    pub fn new(s: impl Into<String>) -> Self {
        Password(Zeroizing::new(s.into()))
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// Who the endpoint is.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// Account name for NTLM and Digest (`alice`).
    pub user: String,
    /// NTLM domain (`EXAMPLE`).
    pub domain: String,
    /// Address of record (`sip:alice@example.com`); From and To of REGISTER.
    pub aor: String,
    /// Request-URI of REGISTER (`sip:example.com`).
    pub registrar: String,
    /// Endpoint id, 10 hex digits in Lync clients.
    pub epid: String,
    /// For NTLM and Digest (and Kerberos when the driver runs kinit).
    pub password: Option<Password>,
    /// Kerberos credential cache (`FILE:/tmp/cc`); `None` = the default cache.
    pub ccache: Option<String>,
    /// Schemes allowed, in order of preference.
    pub schemes: Vec<AuthScheme>,
    /// MS-SIPAE protocol version to speak (3 or 4).
    pub version: u8,
    /// `Expires` header of REGISTER (seconds); `None` sends none (Office Communicator 2007 R2 did
    /// not, and its recorded signature covers an empty Expires slot).
    pub expires: Option<u32>,
    pub workstation: String,
    /// NTLM VERSION field of the AUTHENTICATE (debug information only).
    pub ntlm_version: [u8; 8],
    pub user_agent: String,
    /// Ask for Kerberos mutual authentication (the server returns an AP-REP).
    pub mutual: bool,
}

impl EndpointConfig {
    /// Defaults for `user` in `sip_domain`: NTLM first, then Kerberos, then Digest; version 4.
    pub fn new(user: &str, sip_domain: &str, epid: &str) -> Self {
        EndpointConfig {
            user: user.to_owned(),
            domain: String::new(),
            aor: format!("sip:{user}@{sip_domain}"),
            registrar: format!("sip:{sip_domain}"),
            epid: epid.to_owned(),
            password: None,
            ccache: None,
            schemes: vec![AuthScheme::Ntlm, AuthScheme::Kerberos, AuthScheme::Digest],
            version: 4,
            expires: Some(3600),
            workstation: "SAGW-CLIENT".to_owned(),
            ntlm_version: [6, 1, 0xB1, 0x1D, 0, 0, 0, 0x0F],
            user_agent: concat!("sagw-client/", env!("CARGO_PKG_VERSION")).to_owned(),
            mutual: false,
        }
    }
}

/// One challenge the server offered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Offer {
    pub scheme: String,
    pub realm: Option<String>,
    pub targetname: Option<String>,
    pub version: Option<String>,
    /// Digest algorithm.
    pub algorithm: Option<String>,
}

impl fmt::Display for Offer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.scheme)?;
        for (k, v) in [
            ("realm", &self.realm),
            ("targetname", &self.targetname),
            ("version", &self.version),
            ("algorithm", &self.algorithm),
        ] {
            if let Some(v) = v {
                write!(f, " {k}={v}")?;
            }
        }
        Ok(())
    }
}

/// What happened, step by step (kept when tracing is on; `probe` prints it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Sent {
        method: String,
        cseq: u32,
        credentials: String,
    },
    Received {
        status: u16,
        reason: String,
        method: String,
    },
    Offered {
        offers: Vec<Offer>,
    },
    ServerDate {
        date: String,
        /// Server clock minus local clock, seconds.
        skew_secs: i64,
    },
    NoServerDate,
    Chose {
        scheme: AuthScheme,
    },
    NtlmChallenge {
        opaque: String,
        flags: String,
        target_info_bytes: usize,
    },
    KerberosTicket {
        service: String,
        enctype: Option<String>,
        mutual: bool,
    },
    Established {
        scheme: AuthScheme,
        opaque: Option<String>,
        version: u8,
        /// When the client must renew the SA.
        lifetime_secs: u64,
    },
    SignatureVerified {
        what: String,
        num: u32,
    },
    SignatureUnsigned {
        what: String,
    },
    SignatureFailed {
        what: String,
        reason: String,
    },
    Warning {
        text: String,
    },
    Answered {
        method: String,
        status: u16,
    },
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Sent {
                method,
                cseq,
                credentials,
            } => write!(f, "-> {method} (CSeq {cseq}) {credentials}"),
            Event::Received {
                status,
                reason,
                method,
            } => write!(f, "<- {status} {reason} ({method})"),
            Event::Offered { offers } => {
                write!(f, "   offered:")?;
                for o in offers {
                    write!(f, "\n     - {o}")?;
                }
                Ok(())
            }
            Event::ServerDate { date, skew_secs } => write!(
                f,
                "   Date: {date} (server clock {} local by {}s)",
                if *skew_secs >= 0 {
                    "ahead of"
                } else {
                    "behind"
                },
                skew_secs.unsigned_abs()
            ),
            Event::NoServerDate => write!(f, "   no Date header: clock skew cannot be checked"),
            Event::Chose { scheme } => write!(f, "   using {}", scheme.token()),
            Event::NtlmChallenge {
                opaque,
                flags,
                target_info_bytes,
            } => write!(
                f,
                "   NTLM CHALLENGE: opaque={opaque} flags={flags} target-info={target_info_bytes} bytes"
            ),
            Event::KerberosTicket {
                service,
                enctype,
                mutual,
            } => write!(
                f,
                "   Kerberos AP-REQ for {service} (session key {}, mutual {})",
                enctype.as_deref().unwrap_or("unknown until established"),
                if *mutual { "requested" } else { "off" }
            ),
            Event::Established {
                scheme,
                opaque,
                version,
                lifetime_secs,
            } => write!(
                f,
                "   SA established: {} opaque={} version={version} renew within {}h{:02}m",
                scheme.token(),
                opaque.as_deref().unwrap_or("(none)"),
                lifetime_secs / 3600,
                (lifetime_secs / 60) % 60
            ),
            Event::SignatureVerified { what, num } => {
                write!(f, "   signature OK on {what} (snum/nc {num})")
            }
            Event::SignatureUnsigned { what } => write!(f, "   {what} is NOT signed"),
            Event::SignatureFailed { what, reason } => {
                write!(f, "   signature on {what} FAILED: {reason}")
            }
            Event::Warning { text } => write!(f, "   warning: {text}"),
            Event::Answered { method, status } => {
                write!(f, "   answered incoming {method} with {status}")
            }
        }
    }
}

/// Why a sign-in or a request failed. [`Failure::label`] groups them for load summaries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
pub enum Failure {
    #[error("no common scheme: the server offered [{}], we allow [{}]", offered.join(", "), allowed.join(", "))]
    NoCommonScheme {
        offered: Vec<String>,
        allowed: Vec<String>,
    },
    #[error("{scheme} needs a password (none given)")]
    NoPassword { scheme: String },
    #[error("the server refused the {scheme} credentials with a fresh {status} challenge{}", hint_text(.hints))]
    Rejected {
        scheme: String,
        status: u16,
        hints: Vec<String>,
    },
    #[error("the server answered {status} {reason}")]
    Status { status: u16, reason: String },
    #[error("the server's signature is bad: {0}")]
    BadServerSignature(BadSignature),
    #[error("the server did not sign its {what}")]
    Unsigned { what: String },
    #[error("NTLM: {0}")]
    Ntlm(String),
    #[error("Kerberos: {0}")]
    Kerberos(String),
    #[error("Digest: {0}")]
    Digest(String),
    #[error(
        "the server challenged a request signed with our SA ({status}): it no longer knows the SA"
    )]
    SaRejected { status: u16 },
    #[error("cannot build a message: {0}")]
    Build(String),
    #[error("unexpected message from the server: {0}")]
    Protocol(String),
    #[error("no answer within {secs} s")]
    Timeout { secs: u64 },
    #[error("transport: {0}")]
    Transport(String),
}

fn hint_text(hints: &[String]) -> String {
    if hints.is_empty() {
        String::new()
    } else {
        format!(" ({})", hints.join("; "))
    }
}

impl Failure {
    /// A short stable label for counting failures.
    pub fn label(&self) -> &'static str {
        match self {
            Failure::NoCommonScheme { .. } => "no-common-scheme",
            Failure::NoPassword { .. } => "no-password",
            Failure::Rejected { hints, .. } => {
                if hints.iter().any(|h| h.starts_with("clock skew")) {
                    "rejected-clock-skew"
                } else {
                    "rejected"
                }
            }
            Failure::Status { status, .. } => match status {
                403 => "status-403",
                408 => "status-408",
                480..=499 => "status-4xx",
                500..=599 => "status-5xx",
                _ => "status-other",
            },
            Failure::BadServerSignature(_) => "bad-server-signature",
            Failure::Unsigned { .. } => "unsigned-response",
            Failure::Ntlm(_) => "ntlm",
            Failure::Kerberos(_) => "kerberos",
            Failure::Digest(_) => "digest",
            Failure::SaRejected { .. } => "sa-rejected",
            Failure::Build(_) => "build",
            Failure::Protocol(_) => "protocol",
            Failure::Timeout { .. } => "timeout",
            Failure::Transport(_) => "transport",
        }
    }
}

/// A final response that ended a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Completed {
    pub status: u16,
    pub reason: String,
    pub signature: SignatureCheck,
}

/// What the driver does next.
#[derive(Debug)]
pub enum Step {
    /// Send this request (the next leg, or a Digest retry) and feed back its responses.
    Send(Message),
    /// A provisional response or a message for another transaction: keep waiting.
    Wait,
    /// Get a Kerberos AP-REQ (may block on the KDC) and hand it to [`Endpoint::on_kerberos_ticket`].
    NeedKerberosTicket {
        service_fqdn: String,
        ccache: Option<String>,
        mutual: bool,
    },
    /// The transaction finished.
    Done(Completed),
    Failed(Failure),
}

/// An incoming request and our answer.
#[derive(Debug)]
pub struct Answer {
    /// The signed response to send; `None` when the request must be discarded ([MS-SIP] 3.1.5.2:
    /// a request whose signature fails is dropped).
    pub response: Option<Message>,
    pub check: SignatureCheck,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RegStage {
    /// Sent without credentials; expecting the offer.
    Offer,
    /// Sent NTLM `gssapi-data=""`; expecting the CHALLENGE.
    NtlmChallenge,
    /// Waiting for the driver's Kerberos ticket.
    KerberosTicket,
    /// Sent the final leg of this scheme.
    Final(AuthScheme),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TxKind {
    Register(RegStage),
    Request { retried: bool },
}

#[derive(Debug)]
struct Outstanding {
    call_id: String,
    cseq: u32,
    method: String,
    ruri: String,
    to: String,
    body: Option<(String, Vec<u8>)>,
    kind: TxKind,
}

/// Digest state between requests: the nonce in use and its count.
struct DigestState {
    realm: String,
    nonce: String,
    algorithm: Algorithm,
    qop: QopMode,
    opaque: Option<String>,
    nc: u32,
    ha1: Ha1,
    /// (cnonce, nc text, uri) of the last credentials sent, to check `rspauth`.
    last: Option<(String, String, String)>,
    family: Family,
}

impl fmt::Debug for DigestState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DigestState")
            .field("realm", &self.realm)
            .field("algorithm", &self.algorithm)
            .field("nc", &self.nc)
            .finish_non_exhaustive()
    }
}

/// The pending Kerberos offer while the driver gets a ticket.
#[derive(Debug, Clone)]
struct KerberosOffer {
    realm: String,
    targetname: String,
    version: u8,
    family: Family,
}

/// Local transport facts for Via and Contact.
#[derive(Debug, Clone)]
pub struct LocalAddr {
    /// `TCP`, `TLS` or `UDP`.
    pub transport: &'static str,
    /// `host:port` as seen locally.
    pub addr: String,
}

/// A registered state summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Registration {
    pub scheme: AuthScheme,
    pub opaque: Option<String>,
    pub version: u8,
    pub lifetime_secs: u64,
}

/// One client endpoint.
#[derive(Debug)]
pub struct Endpoint {
    cfg: EndpointConfig,
    local: LocalAddr,
    reg_call_id: Option<String>,
    reg_cseq: u32,
    req_seq: u32,
    outstanding: Option<Outstanding>,
    sa: Option<ClientSa>,
    digest: Option<DigestState>,
    kerberos_offer: Option<KerberosOffer>,
    registered: Option<Registration>,
    trace: Option<Vec<Event>>,
    last_skew: Option<i64>,
}

fn status_of(msg: &Message) -> Result<u16, Failure> {
    msg.status_code()
        .ok_or_else(|| Failure::Protocol("expected a response".into()))
}

fn reason_of(msg: &Message) -> String {
    msg.start_line()
        .splitn(3, ' ')
        .nth(2)
        .unwrap_or("")
        .to_owned()
}

impl Endpoint {
    pub fn new(cfg: EndpointConfig, local: LocalAddr) -> Self {
        Endpoint {
            cfg,
            local,
            reg_call_id: None,
            reg_cseq: 0,
            req_seq: 0,
            outstanding: None,
            sa: None,
            digest: None,
            kerberos_offer: None,
            registered: None,
            trace: None,
            last_skew: None,
        }
    }

    /// Keep a step-by-step [`Event`] log (for `probe`).
    pub fn with_trace(mut self) -> Self {
        self.trace = Some(Vec::new());
        self
    }

    pub fn config(&self) -> &EndpointConfig {
        &self.cfg
    }
    pub fn sa(&self) -> Option<&ClientSa> {
        self.sa.as_ref()
    }
    /// The SA, to sign messages the endpoint does not build itself (in-dialog requests such as ACK
    /// and BYE, or deliberately malformed ones in tests).
    pub fn sa_mut(&mut self) -> Option<&mut ClientSa> {
        self.sa.as_mut()
    }
    pub fn registration(&self) -> Option<&Registration> {
        self.registered.as_ref()
    }
    /// Server clock minus local clock from the last challenge's `Date`, seconds.
    pub fn last_skew(&self) -> Option<i64> {
        self.last_skew
    }
    pub fn set_local(&mut self, local: LocalAddr) {
        self.local = local;
    }

    /// Events since the last call.
    pub fn take_events(&mut self) -> Vec<Event> {
        self.trace.as_mut().map(std::mem::take).unwrap_or_default()
    }

    fn event(&mut self, e: impl FnOnce() -> Event) {
        if let Some(t) = &mut self.trace {
            t.push(e());
        }
    }

    /// Whether `msg` is a response to the request in flight (Call-ID and CSeq match).
    pub fn is_current(&self, msg: &Message) -> bool {
        let Some(o) = &self.outstanding else {
            return false;
        };
        msg.call_id() == Some(o.call_id.as_str())
            && msg
                .cseq()
                .is_some_and(|c| c.value() == Some(o.cseq) && c.method == o.method)
    }

    // ---------------------------------------------------------------------------------------
    // Building

    #[allow(clippy::too_many_arguments)]
    fn build(
        &mut self,
        method: &str,
        ruri: &str,
        to: &str,
        call_id: &str,
        cseq: u32,
        body: Option<&(String, Vec<u8>)>,
        rng: &mut dyn Rng,
    ) -> Result<Message, Failure> {
        let branch = rand_hex(rng, 8);
        let tag = rand_hex(rng, 5);
        let t = self.local.transport;
        let addr = &self.local.addr;
        // No epid at all when there is none: a standard SIP client, for probing what the edge
        // offers such clients.
        let epid = if self.cfg.epid.is_empty() {
            String::new()
        } else {
            format!(";epid={}", self.cfg.epid)
        };
        let mut s = format!(
            "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/{t} {addr};branch=z9hG4bK{branch};rport\r\n\
             Max-Forwards: 70\r\nFrom: <{aor}>;tag={tag}{epid}\r\nTo: <{to}>\r\n\
             Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n\
             Contact: <sip:{addr};transport={tl}>\r\nUser-Agent: {ua}\r\n",
            aor = self.cfg.aor,
            tl = t.to_ascii_lowercase(),
            ua = self.cfg.user_agent,
        );
        if method == "REGISTER"
            && let Some(e) = self.cfg.expires
        {
            s.push_str(&format!("Expires: {e}\r\n"));
        }
        let body_bytes: &[u8] = match body {
            Some((ct, b)) => {
                s.push_str(&format!("Content-Type: {ct}\r\n"));
                b
            }
            None => &[],
        };
        s.push_str(&format!("Content-Length: {}\r\n\r\n", body_bytes.len()));
        let mut raw = s.into_bytes();
        raw.extend_from_slice(body_bytes);
        Message::parse(&raw).map_err(|e| Failure::Build(format!("{method}: {e}")))
    }

    fn record_sent(&mut self, msg: &Message, credentials: impl FnOnce() -> String) {
        let method = msg.method().unwrap_or("").to_owned();
        let cseq = msg.cseq().and_then(|c| c.value()).unwrap_or(0);
        self.event(|| Event::Sent {
            method,
            cseq,
            credentials: credentials(),
        });
    }

    fn next_register(&mut self, stage: RegStage, rng: &mut dyn Rng) -> Result<Message, Failure> {
        let call_id = match &self.reg_call_id {
            Some(c) => c.clone(),
            None => {
                let c = rand_hex(rng, 16);
                self.reg_call_id = Some(c.clone());
                c
            }
        };
        self.reg_cseq = self.reg_cseq.wrapping_add(1);
        let registrar = self.cfg.registrar.clone();
        let aor = self.cfg.aor.clone();
        let msg = self.build(
            "REGISTER",
            &registrar,
            &aor,
            &call_id,
            self.reg_cseq,
            None,
            rng,
        )?;
        self.outstanding = Some(Outstanding {
            call_id,
            cseq: self.reg_cseq,
            method: "REGISTER".into(),
            ruri: registrar,
            to: aor,
            body: None,
            kind: TxKind::Register(stage),
        });
        Ok(msg)
    }

    /// Leg 1: REGISTER without credentials. Starts (or restarts) a sign-in.
    pub fn start_register(&mut self, rng: &mut dyn Rng) -> Result<Message, Failure> {
        self.sa = None;
        self.digest = None;
        self.registered = None;
        let msg = self.next_register(RegStage::Offer, rng)?;
        self.record_sent(&msg, || "no credentials".into());
        Ok(msg)
    }

    /// A new request on the registered endpoint (own Call-ID), signed with the SA or carrying Digest
    /// credentials.
    pub fn request(
        &mut self,
        method: &str,
        target: &str,
        body: Option<(String, Vec<u8>)>,
        rng: &mut dyn Rng,
    ) -> Result<Message, Failure> {
        if self.registered.is_none() {
            return Err(Failure::Build("not registered".into()));
        }
        self.req_seq = self.req_seq.wrapping_add(1);
        let call_id = format!("{}-{}", rand_hex(rng, 8), self.req_seq);
        let mut o = Outstanding {
            call_id,
            cseq: 1,
            method: method.to_owned(),
            ruri: target.to_owned(),
            to: target.to_owned(),
            body,
            kind: TxKind::Request { retried: false },
        };
        let msg = self.send_request(&mut o, rng)?;
        self.outstanding = Some(o);
        Ok(msg)
    }

    fn send_request(&mut self, o: &mut Outstanding, rng: &mut dyn Rng) -> Result<Message, Failure> {
        let mut msg = self.build(
            &o.method,
            &o.ruri,
            &o.to,
            &o.call_id,
            o.cseq,
            o.body.as_ref(),
            rng,
        )?;
        self.add_credentials(&mut msg, &o.method, &o.ruri, rng)?;
        let cred = msg
            .header("Authorization")
            .or_else(|| msg.header("Proxy-Authorization"))
            .map(summarise_credentials)
            .unwrap_or_default();
        self.record_sent(&msg, || cred);
        Ok(msg)
    }

    fn add_credentials(
        &mut self,
        msg: &mut Message,
        method: &str,
        uri: &str,
        rng: &mut dyn Rng,
    ) -> Result<(), Failure> {
        if let Some(sa) = &mut self.sa {
            return sa
                .sign(msg, LegParams::default(), rng)
                .map_err(Failure::Kerberos);
        }
        if let Some(d) = &mut self.digest {
            let value = digest_credentials(d, &self.cfg.user, method, uri, rng)?;
            msg.set_header(d.family.credentials_header(), &value);
        }
        Ok(())
    }

    // ---------------------------------------------------------------------------------------
    // Responses

    /// Feeds a response to the request in flight.
    pub fn on_response(&mut self, msg: &Message, now: SystemTime, rng: &mut dyn Rng) -> Step {
        if !self.is_current(msg) {
            return Step::Wait;
        }
        let status = match status_of(msg) {
            Ok(s) => s,
            Err(f) => return Step::Failed(f),
        };
        if status < 200 {
            return Step::Wait;
        }
        let Some(o) = self.outstanding.take() else {
            return Step::Wait;
        };
        let reason = reason_of(msg);
        self.event(|| Event::Received {
            status,
            reason: reason.clone(),
            method: o.method.clone(),
        });
        let step = match o.kind {
            TxKind::Register(stage) => self.register_response(stage, msg, status, now, rng),
            TxKind::Request { retried } => self.request_response(o, retried, msg, status, now, rng),
        };
        match step {
            Ok(s) => s,
            Err(f) => Step::Failed(f),
        }
    }

    fn note_date(&mut self, msg: &Message, now: SystemTime) {
        match msg.header("Date") {
            Some(d) => {
                if let Some(t) = parse_http_date(d) {
                    let skew = signed_secs(t, now);
                    self.last_skew = Some(skew);
                    let date = d.to_owned();
                    self.event(|| Event::ServerDate {
                        date,
                        skew_secs: skew,
                    });
                } else {
                    let text = format!("unreadable Date header `{d}`");
                    self.event(|| Event::Warning { text });
                }
            }
            None => self.event(|| Event::NoServerDate),
        }
    }

    fn offers<'m>(msg: &'m Message, family: Family) -> Vec<AuthHeader<'m>> {
        msg.header_all(family.challenge_header())
            .filter_map(|v| parse_challenges(v).ok())
            .flatten()
            .collect()
    }

    fn rejection_hints(&self, scheme: AuthScheme, msg: &Message) -> Vec<String> {
        let mut hints = Vec::new();
        if let (Some(skew), Some(tol)) = (self.last_skew, scheme.skew_tolerance_secs())
            && skew.abs() > tol
        {
            hints.push(format!(
                "clock skew {skew}s exceeds the {tol}s {} tolerance",
                scheme.token()
            ));
        }
        for w in msg.header_all("Warning") {
            hints.push(format!("Warning: {w}"));
        }
        if hints.is_empty() {
            hints.push(match scheme {
                AuthScheme::Ntlm => {
                    "wrong password, unknown user or wrong domain (the server does not say which)"
                        .into()
                }
                AuthScheme::Kerberos => {
                    "ticket refused: check the SPN sip/<fqdn>, the gateway keytab and clocks".into()
                }
                AuthScheme::Digest => "wrong password or unknown user".into(),
            });
        }
        hints
    }

    fn register_response(
        &mut self,
        stage: RegStage,
        msg: &Message,
        status: u16,
        now: SystemTime,
        rng: &mut dyn Rng,
    ) -> Result<Step, Failure> {
        let family = Family::from_status(status);
        if let Some(family) = family {
            self.note_date(msg, now);
            return match stage {
                RegStage::Offer => self.choose_scheme(msg, family, now, rng),
                RegStage::NtlmChallenge => self.ntlm_leg3(msg, family, now, rng),
                RegStage::KerberosTicket => Err(Failure::Protocol(
                    "response while waiting for a Kerberos ticket".into(),
                )),
                RegStage::Final(scheme) => {
                    let hints = self.rejection_hints(scheme, msg);
                    Err(Failure::Rejected {
                        scheme: scheme.token().into(),
                        status,
                        hints,
                    })
                }
            };
        }
        if !(200..300).contains(&status) {
            return Err(Failure::Status {
                status,
                reason: reason_of(msg),
            });
        }
        let RegStage::Final(scheme) = stage else {
            // Registered without credentials: the server does not authenticate.
            self.event(|| Event::Warning {
                text: "the server accepted REGISTER without any credentials".into(),
            });
            return Err(Failure::Protocol(
                "REGISTER accepted without authentication (the gateway has no auth configured?)"
                    .into(),
            ));
        };
        self.finish_register(scheme, msg, status)
    }

    fn finish_register(
        &mut self,
        scheme: AuthScheme,
        msg: &Message,
        status: u16,
    ) -> Result<Step, Failure> {
        let what = format!("{status} to REGISTER");
        let check = match scheme {
            AuthScheme::Digest => self.verify_digest_info(msg),
            _ => {
                let sa = self
                    .sa
                    .as_mut()
                    .ok_or_else(|| Failure::Protocol("no SA after the final leg".into()))?;
                sa.absorb_final(msg).map_err(Failure::BadServerSignature)?;
                sa.verify(msg)
            }
        };
        self.record_check(&what, &check);
        match &check {
            SignatureCheck::Verified { .. } => {}
            SignatureCheck::Unsigned => return Err(Failure::Unsigned { what }),
            SignatureCheck::Bad(b) => return Err(Failure::BadServerSignature(b.clone())),
        }
        match msg.expires().and_then(|e| e.trim().parse::<u32>().ok()) {
            Some(e) if e > 0 => {}
            _ => self.event(|| Event::Warning {
                text: "the 200 OK has no Expires header > 0 (pidgin-sipe hangs without one)".into(),
            }),
        }
        let reg = match &self.sa {
            Some(sa) => Registration {
                scheme,
                opaque: sa.opaque().map(str::to_owned),
                version: sa.version(),
                lifetime_secs: sa.lifetime().as_secs(),
            },
            None => Registration {
                scheme,
                opaque: None,
                version: 0,
                lifetime_secs: u64::from(self.cfg.expires.unwrap_or(0)),
            },
        };
        let r = reg.clone();
        self.event(|| Event::Established {
            scheme: r.scheme,
            opaque: r.opaque,
            version: r.version,
            lifetime_secs: r.lifetime_secs,
        });
        self.registered = Some(reg);
        Ok(Step::Done(Completed {
            status,
            reason: reason_of(msg),
            signature: check,
        }))
    }

    fn record_check(&mut self, what: &str, check: &SignatureCheck) {
        let what = what.to_owned();
        match check {
            SignatureCheck::Verified { num } => {
                let num = *num;
                self.event(|| Event::SignatureVerified { what, num })
            }
            SignatureCheck::Unsigned => self.event(|| Event::SignatureUnsigned { what }),
            SignatureCheck::Bad(b) => {
                let reason = b.to_string();
                self.event(|| Event::SignatureFailed { what, reason })
            }
        }
    }

    fn choose_scheme(
        &mut self,
        msg: &Message,
        family: Family,
        now: SystemTime,
        rng: &mut dyn Rng,
    ) -> Result<Step, Failure> {
        let offers = Self::offers(msg, family);
        let listed: Vec<Offer> = offers
            .iter()
            .map(|h| Offer {
                scheme: h.scheme.to_owned(),
                realm: h.param("realm").map(str::to_owned),
                targetname: h.param("targetname").map(str::to_owned),
                version: h.param("version").map(str::to_owned),
                algorithm: h.param("algorithm").map(str::to_owned),
            })
            .collect();
        let shown = listed.clone();
        self.event(|| Event::Offered { offers: shown });
        let chosen = self.cfg.schemes.iter().copied().find_map(|want| {
            offers
                .iter()
                .find(|h| AuthScheme::from_token(h.scheme) == Some(want) && usable(want, h))
                .map(|h| (want, h))
        });
        let Some((scheme, offer)) = chosen else {
            return Err(Failure::NoCommonScheme {
                offered: listed.iter().map(|o| o.scheme.clone()).collect(),
                allowed: self
                    .cfg
                    .schemes
                    .iter()
                    .map(|s| s.token().to_owned())
                    .collect(),
            });
        };
        self.event(|| Event::Chose { scheme });
        let realm = offer.param("realm").unwrap_or("").to_owned();
        let targetname = offer.param("targetname").unwrap_or("").to_owned();
        let server_version = offer
            .param("version")
            .and_then(|v| v.trim().parse::<u8>().ok())
            .unwrap_or(2);
        let version = self.cfg.version.min(server_version).max(3);
        match scheme {
            AuthScheme::Ntlm => {
                if self.cfg.password.is_none() {
                    return Err(Failure::NoPassword {
                        scheme: "NTLM".into(),
                    });
                }
                let mut m = self.next_register(RegStage::NtlmChallenge, rng)?;
                let value = AuthHeaderBuilder::new("NTLM")
                    .quoted("qop", "auth")
                    .quoted("realm", &realm)
                    .quoted("targetname", &targetname)
                    .quoted("gssapi-data", "")
                    .token("version", &version.to_string())
                    .build();
                m.set_header(family.credentials_header(), &value);
                self.record_sent(&m, || {
                    "NTLM gssapi-data=\"\" (stands in for NEGOTIATE)".into()
                });
                Ok(Step::Send(m))
            }
            AuthScheme::Kerberos => {
                let service_fqdn = targetname
                    .strip_prefix("sip/")
                    .unwrap_or(&targetname)
                    .to_owned();
                self.kerberos_offer = Some(KerberosOffer {
                    realm,
                    targetname,
                    version,
                    family,
                });
                self.outstanding = Some(Outstanding {
                    call_id: String::new(),
                    cseq: 0,
                    method: String::new(),
                    ruri: String::new(),
                    to: String::new(),
                    body: None,
                    kind: TxKind::Register(RegStage::KerberosTicket),
                });
                Ok(Step::NeedKerberosTicket {
                    service_fqdn,
                    ccache: self.cfg.ccache.clone(),
                    mutual: self.cfg.mutual,
                })
            }
            AuthScheme::Digest => {
                let Some(password) = self.cfg.password.clone() else {
                    return Err(Failure::NoPassword {
                        scheme: "Digest".into(),
                    });
                };
                let d = digest_state(offer, &self.cfg.user, &password, family)?;
                self.digest = Some(d);
                let mut m = self.next_register(RegStage::Final(AuthScheme::Digest), rng)?;
                let registrar = self.cfg.registrar.clone();
                self.add_credentials(&mut m, "REGISTER", &registrar, rng)?;
                let alg = self
                    .digest
                    .as_ref()
                    .map(|d| d.algorithm.token())
                    .unwrap_or("");
                let summary = format!("Digest algorithm={alg} (realm {})", offer_realm(offer));
                self.record_sent(&m, || summary);
                let _ = now;
                Ok(Step::Send(m))
            }
        }
    }

    fn ntlm_leg3(
        &mut self,
        msg: &Message,
        family: Family,
        now: SystemTime,
        rng: &mut dyn Rng,
    ) -> Result<Step, Failure> {
        let offers = Self::offers(msg, family);
        let Some(h) = offers
            .iter()
            .find(|h| h.is_scheme("NTLM") && h.param("gssapi-data").is_some_and(|g| !g.is_empty()))
        else {
            let hints = self.rejection_hints(AuthScheme::Ntlm, msg);
            return Err(Failure::Rejected {
                scheme: "NTLM".into(),
                status: family_status(family),
                hints,
            });
        };
        let opaque = h
            .param("opaque")
            .ok_or_else(|| Failure::Protocol("NTLM CHALLENGE without opaque".into()))?
            .to_owned();
        let realm = h.param("realm").unwrap_or("").to_owned();
        let targetname = h.param("targetname").unwrap_or("").to_owned();
        let server_version = h
            .param("version")
            .and_then(|v| v.trim().parse::<u8>().ok())
            .unwrap_or(2);
        let version = self.cfg.version.min(server_version).max(3);
        let challenge = B64
            .decode(h.param("gssapi-data").unwrap_or(""))
            .map_err(|e| Failure::Ntlm(format!("CHALLENGE is not base64: {e}")))?;
        let flags = challenge
            .get(20..24)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
            .unwrap_or(0);
        let ti_len = challenge
            .get(40..42)
            .and_then(|b| b.try_into().ok())
            .map(u16::from_le_bytes)
            .unwrap_or(0);
        let o = opaque.clone();
        self.event(|| Event::NtlmChallenge {
            opaque: o,
            flags: format!("0x{flags:08X}"),
            target_info_bytes: usize::from(ti_len),
        });
        let password = self
            .cfg
            .password
            .clone()
            .ok_or_else(|| Failure::NoPassword {
                scheme: "NTLM".into(),
            })?;
        let nt = NtHash::from_password(password.expose());
        let mut client_challenge = [0u8; 8];
        rng.fill_bytes(&mut client_challenge);
        let mut rsk = Zeroizing::new([0u8; 16]);
        rng.fill_bytes(&mut rsk[..]);
        let auth = authenticate(
            &challenge,
            &Credentials {
                user: &self.cfg.user,
                domain: &self.cfg.domain,
                nt_hash: &nt,
            },
            &ClientInputs {
                workstation: &self.cfg.workstation,
                client_challenge,
                timestamp: now,
                random_session_key: *rsk,
                version: self.cfg.ntlm_version,
                mic: MicPolicy::Omit,
            },
        )
        .map_err(|e| Failure::Ntlm(format!("cannot answer the CHALLENGE: {e}")))?;
        let token = B64.encode(&auth.message);
        let mut sa = ClientSa::new(
            SaScheme::Ntlm,
            ClientMechanism::Ntlm(auth.session),
            &realm,
            &targetname,
            Some(opaque.clone()),
            version,
            family,
            now,
        );
        let mut m = self.next_register(RegStage::Final(AuthScheme::Ntlm), rng)?;
        if version >= 4 {
            sa.sign(
                &mut m,
                LegParams {
                    gssapi_data: Some(&token),
                    version: Some(version),
                },
                rng,
            )
            .map_err(Failure::Ntlm)?;
        } else {
            let value = AuthHeaderBuilder::new("NTLM")
                .quoted("qop", "auth")
                .quoted("realm", &realm)
                .quoted("opaque", &opaque)
                .quoted("targetname", &targetname)
                .token("version", &version.to_string())
                .quoted("gssapi-data", &token)
                .build();
            m.set_header(family.credentials_header(), &value);
        }
        self.sa = Some(sa);
        let len = auth.message.len();
        self.record_sent(&m, || {
            format!(
                "NTLM AUTHENTICATE ({len} bytes, flags 0x{:08X}){}",
                auth.flags,
                if version >= 4 {
                    ", signed (version 4)"
                } else {
                    ", unsigned (version 3)"
                }
            )
        });
        Ok(Step::Send(m))
    }

    /// The driver's answer to [`Step::NeedKerberosTicket`]: the AP-REQ and the initiator context.
    pub fn on_kerberos_ticket(
        &mut self,
        ticket: Result<(Vec<u8>, ClientSession), KerberosError>,
        now: SystemTime,
        rng: &mut dyn Rng,
    ) -> Step {
        match self.kerberos_leg2(ticket, now, rng) {
            Ok(s) => s,
            Err(f) => Step::Failed(f),
        }
    }

    fn kerberos_leg2(
        &mut self,
        ticket: Result<(Vec<u8>, ClientSession), KerberosError>,
        now: SystemTime,
        rng: &mut dyn Rng,
    ) -> Result<Step, Failure> {
        let offer = self
            .kerberos_offer
            .take()
            .ok_or_else(|| Failure::Protocol("no Kerberos offer pending".into()))?;
        let (token, session) = ticket.map_err(|e| Failure::Kerberos(e.to_string()))?;
        let established = session.is_established();
        let enctype = session.enctype().map(|e| format!("{e:?}"));
        let service = offer.targetname.clone();
        let mutual = self.cfg.mutual;
        self.event(|| Event::KerberosTicket {
            service,
            enctype,
            mutual,
        });
        let token = B64.encode(&token);
        let mut sa = ClientSa::new(
            SaScheme::Kerberos,
            ClientMechanism::Kerberos(session),
            &offer.realm,
            &offer.targetname,
            None,
            offer.version,
            offer.family,
            now,
        );
        let mut m = self.next_register(RegStage::Final(AuthScheme::Kerberos), rng)?;
        let signed = offer.version >= 4 && established;
        if signed {
            sa.sign(
                &mut m,
                LegParams {
                    gssapi_data: Some(&token),
                    version: Some(offer.version),
                },
                rng,
            )
            .map_err(Failure::Kerberos)?;
        } else {
            let value = AuthHeaderBuilder::new("Kerberos")
                .quoted("qop", "auth")
                .quoted("realm", &offer.realm)
                .quoted("targetname", &offer.targetname)
                .quoted("gssapi-data", &token)
                .token("version", &offer.version.to_string())
                .build();
            m.set_header(offer.family.credentials_header(), &value);
        }
        self.sa = Some(sa);
        self.record_sent(&m, || {
            format!(
                "Kerberos AP-REQ{}",
                if signed {
                    ", signed (version 4)"
                } else {
                    ", unsigned"
                }
            )
        });
        Ok(Step::Send(m))
    }

    fn verify_digest_info(&mut self, msg: &Message) -> SignatureCheck {
        let Some(d) = &mut self.digest else {
            return SignatureCheck::Unsigned;
        };
        let Some(value) = msg
            .header("Authentication-Info")
            .or_else(|| msg.header("Proxy-Authentication-Info"))
        else {
            return SignatureCheck::Unsigned;
        };
        // Authentication-Info has no scheme token; give the parameter parser one.
        let full = format!("Digest {value}");
        let parsed = match parse_header(&full) {
            Ok(p) => p,
            Err(e) => return SignatureCheck::Bad(BadSignature::Malformed(e.to_string())),
        };
        let get = |n: &str| {
            parsed
                .pairs()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.to_owned())
        };
        let next = get("nextnonce");
        let result = match (get("rspauth"), &d.last) {
            (None, _) => SignatureCheck::Unsigned,
            (Some(_), None) => SignatureCheck::Bad(BadSignature::Malformed(
                "rspauth without credentials of ours".into(),
            )),
            (Some(rspauth), Some((cnonce, nc, uri))) => {
                if get("cnonce").as_deref() != Some(cnonce.as_str())
                    || get("nc").as_deref() != Some(nc.as_str())
                {
                    SignatureCheck::Bad(BadSignature::OtherSa {
                        field: "cnonce/nc",
                        got: format!("{:?}/{:?}", get("cnonce"), get("nc")),
                        ours: format!("{cnonce}/{nc}"),
                    })
                } else {
                    let expected = response_hex(
                        &d.ha1,
                        d.algorithm,
                        &d.nonce,
                        Some((nc, cnonce, "auth")),
                        "",
                        uri,
                    );
                    if expected.eq_ignore_ascii_case(&rspauth) {
                        SignatureCheck::Verified { num: d.nc }
                    } else {
                        SignatureCheck::Bad(BadSignature::Mismatch {
                            buffer: format!("A2 = \":{uri}\""),
                        })
                    }
                }
            }
        };
        if let Some(n) = next {
            d.nonce = n;
            d.nc = 0;
        }
        result
    }

    fn request_response(
        &mut self,
        mut o: Outstanding,
        retried: bool,
        msg: &Message,
        status: u16,
        now: SystemTime,
        rng: &mut dyn Rng,
    ) -> Result<Step, Failure> {
        let what = format!("{status} to {}", o.method);
        if let Some(family) = Family::from_status(status) {
            self.note_date(msg, now);
            if self.sa.is_some() {
                return Err(Failure::SaRejected { status });
            }
            if retried || self.digest.is_none() {
                let hints = self.rejection_hints(AuthScheme::Digest, msg);
                return Err(Failure::Rejected {
                    scheme: "Digest".into(),
                    status,
                    hints,
                });
            }
            // A new or stale nonce: answer the challenge once.
            let offers = Self::offers(msg, family);
            let offer = offers
                .iter()
                .find(|h| h.is_scheme("Digest") && usable(AuthScheme::Digest, h))
                .ok_or_else(|| Failure::Digest("challenge without a usable Digest offer".into()))?;
            let password = self
                .cfg
                .password
                .clone()
                .ok_or_else(|| Failure::NoPassword {
                    scheme: "Digest".into(),
                })?;
            self.digest = Some(digest_state(offer, &self.cfg.user, &password, family)?);
            o.cseq = o.cseq.wrapping_add(1);
            o.kind = TxKind::Request { retried: true };
            let m = self.send_request(&mut o, rng)?;
            self.outstanding = Some(o);
            return Ok(Step::Send(m));
        }
        let check = match &mut self.sa {
            Some(sa) => sa.verify(msg),
            None => self.verify_digest_info(msg),
        };
        self.record_check(&what, &check);
        if let SignatureCheck::Bad(b) = &check {
            return Err(Failure::BadServerSignature(b.clone()));
        }
        Ok(Step::Done(Completed {
            status,
            reason: reason_of(msg),
            signature: check,
        }))
    }

    // ---------------------------------------------------------------------------------------
    // Requests from the server

    /// Verifies a request the server sent us and builds our signed `200 OK` (or, for a request whose
    /// signature fails, nothing: it is discarded).
    pub fn answer(&mut self, req: &Message, rng: &mut dyn Rng) -> Answer {
        let method = req.method().unwrap_or("").to_owned();
        let check = match &mut self.sa {
            Some(sa) => sa.verify(req),
            None => SignatureCheck::Unsigned,
        };
        self.record_check(&format!("incoming {method}"), &check);
        let must_be_signed = self.sa.is_some();
        if matches!(check, SignatureCheck::Bad(_))
            || (must_be_signed && check == SignatureCheck::Unsigned)
            || method == "ACK"
        {
            return Answer {
                response: None,
                check,
            };
        }
        let response = self.build_response(req, 200, "OK", rng);
        if let Some(r) = &response {
            let status = r.status_code().unwrap_or(0);
            self.event(|| Event::Answered { method, status });
        }
        Answer { response, check }
    }

    fn build_response(
        &mut self,
        req: &Message,
        status: u16,
        reason: &str,
        rng: &mut dyn Rng,
    ) -> Option<Message> {
        let mut s = format!("SIP/2.0 {status} {reason}\r\n");
        for v in req.header_all("Via") {
            s.push_str(&format!("Via: {v}\r\n"));
        }
        let to = req.header("To")?;
        let mut to_value = to.to_owned();
        // The server finds our SA for a response through the To epid.
        if req.to().and_then(|na| na.param("epid")).is_none() && !self.cfg.epid.is_empty() {
            to_value.push_str(&format!(";epid={}", self.cfg.epid));
        }
        if req.to().and_then(|na| na.tag()).is_none() {
            to_value.push_str(&format!(";tag={}", rand_hex(rng, 5)));
        }
        s.push_str(&format!(
            "From: {}\r\nTo: {to_value}\r\nCall-ID: {}\r\nCSeq: {}\r\nContent-Length: 0\r\n\r\n",
            req.header("From")?,
            req.call_id()?,
            req.header("CSeq")?,
        ));
        let mut m = Message::parse(s.as_bytes()).ok()?;
        if let Some(sa) = &mut self.sa {
            // Responses we send are signed like requests ([MS-SIPAE]; pidgin-sipe does the same).
            sa.sign(&mut m, LegParams::default(), rng).ok()?;
        }
        Some(m)
    }
}

fn family_status(f: Family) -> u16 {
    match f {
        Family::Www => 401,
        Family::Proxy => 407,
    }
}

fn offer_realm<'a>(h: &'a AuthHeader<'_>) -> &'a str {
    h.param("realm").unwrap_or("")
}

/// Whether we can answer this offer at all (Digest: a known algorithm and qop=auth).
fn usable(scheme: AuthScheme, h: &AuthHeader<'_>) -> bool {
    match scheme {
        AuthScheme::Digest => {
            DigestChallenge::from_params(h.params.iter().map(|p| (p.name, p.value.as_ref())))
                .is_ok()
        }
        _ => true,
    }
}

fn digest_state(
    h: &AuthHeader<'_>,
    user: &str,
    password: &Password,
    family: Family,
) -> Result<DigestState, Failure> {
    let c = DigestChallenge::from_params(h.params.iter().map(|p| (p.name, p.value.as_ref())))
        .map_err(|e| Failure::Digest(format!("cannot use the challenge: {e}")))?;
    Ok(DigestState {
        realm: c.realm.to_owned(),
        nonce: c.nonce.to_owned(),
        algorithm: c.algorithm,
        qop: c.qop,
        opaque: c.opaque.map(str::to_owned),
        nc: 0,
        ha1: Ha1::compute(c.algorithm, user, c.realm, password.expose()),
        last: None,
        family,
    })
}

fn digest_credentials(
    d: &mut DigestState,
    user: &str,
    method: &str,
    uri: &str,
    rng: &mut dyn Rng,
) -> Result<String, Failure> {
    d.nc = d.nc.wrapping_add(1);
    let mut c = [0u8; 8];
    rng.fill_bytes(&mut c);
    let cnonce = hex::encode(c);
    let challenge = DigestChallenge {
        realm: &d.realm,
        nonce: &d.nonce,
        algorithm: d.algorithm,
        qop: d.qop,
        opaque: d.opaque.as_deref(),
        stale: false,
        userhash: false,
    };
    let a = authorize(&challenge, user, &d.ha1, method, uri, &cnonce, d.nc)
        .map_err(|e| Failure::Digest(e.to_string()))?;
    d.last = Some((cnonce, format!("{:08x}", d.nc), uri.to_owned()));
    Ok(a.header_value())
}

/// `NTLM qop="auth", ... response="..."` shortened for the trace.
fn summarise_credentials(v: &str) -> String {
    match AuthHeader::parse(v) {
        Ok(h) => {
            let mut s = h.scheme.to_owned();
            for k in ["opaque", "cnum", "nc", "algorithm"] {
                if let Some(p) = h.param(k) {
                    s.push_str(&format!(" {k}={p}"));
                }
            }
            if h.param("response").is_some() {
                s.push_str(" signed");
            }
            s
        }
        Err(_) => "credentials".into(),
    }
}
