//! Why a sign-in or a request failed, with a stable label for each kind.

use serde::Serialize;

use crate::sa::BadSignature;

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
