//! The step-by-step log of what the endpoint sent, received and checked (`probe` prints it).

use std::fmt;

use sagw_sip::{AuthHeader, Message};
use serde::Serialize;

use super::{AuthScheme, Endpoint};
use crate::sa::SignatureCheck;

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

impl Endpoint {
    pub(super) fn event(&mut self, e: impl FnOnce() -> Event) {
        if let Some(t) = &mut self.trace {
            t.push(e());
        }
    }

    pub(super) fn record_sent(&mut self, msg: &Message, credentials: impl FnOnce() -> String) {
        let method = msg.method().unwrap_or("").to_owned();
        let cseq = msg.cseq().and_then(|c| c.value()).unwrap_or(0);
        self.event(|| Event::Sent {
            method,
            cseq,
            credentials: credentials(),
        });
    }

    pub(super) fn record_check(&mut self, what: &str, check: &SignatureCheck) {
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
}

/// `NTLM qop="auth", ... response="..."` shortened for the trace.
pub(super) fn summarise_credentials(v: &str) -> String {
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
