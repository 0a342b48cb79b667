//! The sans-IO client endpoint: builds requests, reads responses, says what to do next.
//!
//! One endpoint is one Lync-style client: an AOR, an account, an `epid`. It registers (walking the
//! MS-SIPAE legs or Digest), then sends signed requests and answers requests the server sends it.
//! No sockets, no clock, no randomness of its own: the driver passes `now` and an [`Rng`], sends
//! what [`Step::Send`] holds, and feeds every received message back. Kerberos tickets come from the
//! driver too ([`Step::NeedKerberosTicket`]), because getting one may block on the KDC.

mod build;
mod config;
mod digest;
mod failure;
mod kerberos;
mod ntlm;
mod register;
mod trace;

use std::time::SystemTime;

use sagw_auth::Rng;
use sagw_kerberos::KerberosError;
use sagw_kerberos::initiator::ClientSession;
use sagw_sip::Message;
use serde::Serialize;

use crate::sa::{ClientSa, Family, SignatureCheck};
use crate::util::rand_hex;

pub use config::{AuthScheme, EndpointConfig, Password};
use digest::{DigestState, digest_state};
pub use failure::Failure;
use kerberos::KerberosOffer;
use register::{RegStage, usable};
pub use trace::{Event, Offer};

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

/// What the endpoint waits for: one thing at a time.
#[derive(Debug, Default)]
enum Waiting {
    /// Nothing in flight.
    #[default]
    Nothing,
    /// The response to this request.
    Response(Outstanding),
    /// The driver's Kerberos ticket for this offer; no request is in flight meanwhile.
    KerberosTicket(KerberosOffer),
}

impl Waiting {
    /// The request in flight, taken out (nothing is waited for after it); `None`, and the wait
    /// left as it was, when no response is awaited.
    fn take_response(&mut self) -> Option<Outstanding> {
        match std::mem::take(self) {
            Waiting::Response(o) => Some(o),
            other => {
                *self = other;
                None
            }
        }
    }

    /// The offer a Kerberos ticket is awaited for, taken out as [`Waiting::take_response`] takes a
    /// request.
    fn take_kerberos_offer(&mut self) -> Option<KerberosOffer> {
        match std::mem::take(self) {
            Waiting::KerberosTicket(offer) => Some(offer),
            other => {
                *self = other;
                None
            }
        }
    }
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
    waiting: Waiting,
    sa: Option<ClientSa>,
    digest: Option<DigestState>,
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
            waiting: Waiting::Nothing,
            sa: None,
            digest: None,
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

    /// Whether `msg` is a response to the request in flight (Call-ID and CSeq match).
    pub fn is_current(&self, msg: &Message) -> bool {
        let Waiting::Response(o) = &self.waiting else {
            return false;
        };
        msg.call_id() == Some(o.call_id.as_str())
            && msg
                .cseq()
                .is_some_and(|c| c.value() == Some(o.cseq) && c.method == o.method)
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
        self.waiting = Waiting::Response(o);
        Ok(msg)
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
        let Some(o) = self.waiting.take_response() else {
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
            self.waiting = Waiting::Response(o);
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
}
