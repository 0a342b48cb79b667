//! Typed errors. Each message says what an operator should check; `detail`
//! carries MIT's own text (from `gss_display_status`) for the logs.

use std::time::Duration;

use crate::ffi::{Status, routine};

/// Why a Kerberos operation failed.
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum KerberosError {
    /// The token is not a (single-leg) Kerberos AP-REQ: wrong framing, not
    /// krb5, truncated or garbage base64 payload.
    #[error(
        "gssapi-data is not a valid Kerberos AP-REQ token (check the client sends raw krb5, not SPNEGO/NTLM): {detail}"
    )]
    Malformed { detail: String },

    /// The ticket names another service principal than the acceptor's.
    #[error(
        "ticket is for another service than ours (check the client's targetname/SPN matches sip/<fqdn> of this gateway): {detail}"
    )]
    WrongService { detail: String },

    /// The service ticket's end time (plus the allowed skew) has passed.
    #[error("ticket expired (the client must get a new service ticket): {detail}")]
    TicketExpired { detail: String },

    /// The ticket's start time is in the future beyond the allowed skew.
    #[error("ticket not yet valid (check clock synchronisation of KDC and gateway): {detail}")]
    TicketNotYetValid { detail: String },

    /// The replay cache has already seen this authenticator.
    #[error("AP-REQ is a replay (an authenticator may be accepted only once)")]
    Replay,

    /// Authenticator time too far from the gateway clock.
    #[error(
        "clock skew too great (allowed {allowed:?}; check NTP on the gateway and the client): {detail}"
    )]
    ClockSkew { allowed: Duration, detail: String },

    /// The keytab has no usable key for the principal (missing principal,
    /// missing enctype or old kvno).
    #[error(
        "keytab has no key for {principal} (check the keytab path/KRB5_KTNAME and re-export it after every key change): {detail}"
    )]
    NoKey { principal: String, detail: String },

    /// The ticket or authenticator failed its integrity check: tampered
    /// with, or the keytab key differs from the KDC's (same kvno, other key).
    #[error(
        "AP-REQ integrity check failed (tampered token, or the keytab key no longer matches the KDC: re-export it): {detail}"
    )]
    Integrity { detail: String },

    /// The client belongs to a realm the configuration does not accept.
    #[error(
        "client {client} is from a realm not accepted here (allowed: {allowed}; adjust KerberosConfig::client_realms for cross-realm users)"
    )]
    WrongRealm { client: String, allowed: String },

    /// A MIC did not verify (wrong key, altered message or token).
    #[error("signature (GSS MIC) does not verify")]
    BadMic,

    /// The context outlived its ticket; a new handshake is needed.
    #[error("security context expired with its ticket (re-authenticate)")]
    ContextExpired,

    /// A valid but unsupported variant (multi-leg DCE style, IAKERB, an
    /// enctype the local library does not allow).
    #[error("unsupported Kerberos variant: {detail}")]
    Unsupported { detail: String },

    /// Initiator side: MICs requested before the AP-REP was processed.
    #[error("context not established yet (process the AP-REP with finish() first)")]
    NotEstablished,

    /// Configuration cannot be honoured.
    #[error("Kerberos configuration error: {detail}")]
    Config { detail: String },

    /// Initiator side: no usable credentials in the credential cache.
    #[error(
        "no usable Kerberos credentials (run kinit / check KRB5CCNAME or the ccache path): {detail}"
    )]
    NoCredentials { detail: String },

    /// Any other GSS-API failure.
    #[error("GSS-API failure (major {major:#x}, minor {minor}): {message}")]
    Gss {
        major: u32,
        minor: u32,
        message: String,
    },
}

/// Who most likely has to act on an error: decides log level and alerting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fault {
    /// The client sent something wrong, stale or hostile; re-challenge it.
    Client,
    /// The gateway's keytab, krb5.conf or library needs an operator.
    Gateway,
    /// Either side (an integrity failure is tampering *or* a keytab that no
    /// longer matches the KDC).
    Either,
}

impl KerberosError {
    pub fn fault(&self) -> Fault {
        match self {
            KerberosError::Malformed { .. }
            | KerberosError::WrongService { .. }
            | KerberosError::TicketExpired { .. }
            | KerberosError::TicketNotYetValid { .. }
            | KerberosError::Replay
            | KerberosError::ClockSkew { .. }
            | KerberosError::WrongRealm { .. }
            | KerberosError::BadMic
            | KerberosError::ContextExpired
            | KerberosError::Unsupported { .. }
            | KerberosError::NotEstablished => Fault::Client,
            KerberosError::NoKey { .. }
            | KerberosError::Config { .. }
            | KerberosError::NoCredentials { .. }
            | KerberosError::Gss { .. } => Fault::Gateway,
            KerberosError::Integrity { .. } => Fault::Either,
        }
    }
}

// krb5 com_err codes (krb5/krb5.h, MIT 1.20; stable since they are wire
// error numbers offset by ERROR_TABLE_BASE_krb5).
const KRB5KDC_ERR_ETYPE_NOSUPP: i32 = -1765328370;
const KRB5KRB_AP_ERR_BAD_INTEGRITY: i32 = -1765328353;
const KRB5KRB_AP_ERR_TKT_EXPIRED: i32 = -1765328352;
const KRB5KRB_AP_ERR_TKT_NYV: i32 = -1765328351;
const KRB5KRB_AP_ERR_REPEAT: i32 = -1765328350;
const KRB5KRB_AP_ERR_NOT_US: i32 = -1765328349;
const KRB5KRB_AP_ERR_BADMATCH: i32 = -1765328348;
const KRB5KRB_AP_ERR_SKEW: i32 = -1765328347;
const KRB5KRB_AP_ERR_BADVERSION: i32 = -1765328345;
const KRB5KRB_AP_ERR_MSG_TYPE: i32 = -1765328344;
const KRB5KRB_AP_ERR_MODIFIED: i32 = -1765328343;
const KRB5KRB_AP_ERR_BADKEYVER: i32 = -1765328340;
const KRB5KRB_AP_ERR_NOKEY: i32 = -1765328339;
const KRB5KRB_AP_WRONG_PRINC: i32 = -1765328240;
const KRB5KRB_AP_ERR_TKT_INVALID: i32 = -1765328239;
const KRB5_PROG_ETYPE_NOSUPP: i32 = -1765328234;
const KRB5_RC_REPLAY: i32 = -1765328221;
const KRB5_KT_NOTFOUND: i32 = -1765328203;
const KRB5_BAD_ENCTYPE: i32 = -1765328196;
const KRB5_BAD_MSIZE: i32 = -1765328194;
const KRB5_KT_KVNONOTFOUND: i32 = -1765328154;
const KRB5_CC_NOTFOUND: i32 = -1765328243;
const KRB5_FCC_NOFILE: i32 = -1765328189;
// ASN.1 decoder table (asn1_err.h) spans 1859794432..=1859794432+255.
const ERROR_TABLE_BASE_ASN1: i32 = 1859794432;
// GSS krb5 mechanism table (gssapi_err_krb5.h).
const ERROR_TABLE_BASE_K5G: i32 = 39756032;
const KG_KEYTAB_NOMATCH: i32 = ERROR_TABLE_BASE_K5G + 1;
const KG_EMPTY_CCACHE: i32 = ERROR_TABLE_BASE_K5G + 12;
// Generic GSS table (gssapi_generic_err.h): token framing problems.
const ERROR_TABLE_BASE_GGSS: i32 = -2045022976;

/// The operation during which a status was returned.
#[derive(Clone, Copy)]
pub(crate) enum Op<'a> {
    AcquireAcceptor {
        principal: &'a str,
    },
    Accept {
        principal: &'a str,
        skew: Duration,
    },
    Initiate,
    GetMic,
    VerifyMic,
    /// `gss_export_sec_context` / `gss_import_sec_context`.
    Transfer,
}

impl KerberosError {
    pub(crate) fn from_status(op: Op<'_>, st: Status) -> Self {
        let detail = st.message();
        let code = st.krb5_code();
        match op {
            Op::AcquireAcceptor { principal } => match st.routine_error() {
                routine::NO_CRED | routine::DEFECTIVE_CREDENTIAL | routine::CREDENTIALS_EXPIRED => {
                    KerberosError::NoKey {
                        principal: principal.to_owned(),
                        detail,
                    }
                }
                routine::BAD_NAME | routine::BAD_NAMETYPE => KerberosError::Config {
                    detail: format!("cannot use service principal {principal}: {detail}"),
                },
                _ => Self::gss(st, detail),
            },
            Op::Accept { principal, skew } => match code {
                KRB5KRB_AP_ERR_REPEAT | KRB5_RC_REPLAY => KerberosError::Replay,
                KRB5KRB_AP_ERR_SKEW => KerberosError::ClockSkew {
                    allowed: skew,
                    detail,
                },
                KRB5KRB_AP_ERR_TKT_EXPIRED => KerberosError::TicketExpired { detail },
                KRB5KRB_AP_ERR_TKT_NYV => KerberosError::TicketNotYetValid { detail },
                KRB5KRB_AP_WRONG_PRINC | KRB5KRB_AP_ERR_NOT_US => {
                    KerberosError::WrongService { detail }
                }
                KRB5_KT_NOTFOUND
                | KRB5_KT_KVNONOTFOUND
                | KRB5KRB_AP_ERR_NOKEY
                | KRB5KRB_AP_ERR_BADKEYVER
                | KG_KEYTAB_NOMATCH => KerberosError::NoKey {
                    principal: principal.to_owned(),
                    detail,
                },
                KRB5KRB_AP_ERR_BAD_INTEGRITY | KRB5KRB_AP_ERR_MODIFIED => {
                    KerberosError::Integrity { detail }
                }
                KRB5KRB_AP_ERR_BADMATCH
                | KRB5KRB_AP_ERR_MSG_TYPE
                | KRB5KRB_AP_ERR_BADVERSION
                | KRB5KRB_AP_ERR_TKT_INVALID
                | KRB5_BAD_MSIZE => KerberosError::Malformed { detail },
                KRB5_BAD_ENCTYPE | KRB5_PROG_ETYPE_NOSUPP | KRB5KDC_ERR_ETYPE_NOSUPP => {
                    KerberosError::Unsupported { detail }
                }
                c if is_asn1(c) || is_ggss(c) => KerberosError::Malformed { detail },
                // MIT's acceptor loses the minor code when the AP-REQ body
                // does not decode (it jumps past the line that stores it),
                // and the mechglue then reports 0 or a substitute number.
                // The outer framing was checked before the call, so this is
                // a corrupt AP-REQ, not an internal failure.
                _ if st.routine_error() == routine::FAILURE && lost_minor(st.minor) => {
                    KerberosError::Malformed {
                        detail: format!("AP-REQ does not decode ({detail})"),
                    }
                }
                _ => match st.routine_error() {
                    routine::DEFECTIVE_TOKEN | routine::BAD_MECH | routine::BAD_BINDINGS => {
                        KerberosError::Malformed { detail }
                    }
                    routine::BAD_SIG => KerberosError::Integrity { detail },
                    routine::NO_CRED => KerberosError::NoKey {
                        principal: principal.to_owned(),
                        detail,
                    },
                    routine::CREDENTIALS_EXPIRED => KerberosError::TicketExpired { detail },
                    _ => Self::gss(st, detail),
                },
            },
            Op::Initiate => match (code, st.routine_error()) {
                (KG_EMPTY_CCACHE | KRB5_CC_NOTFOUND | KRB5_FCC_NOFILE, _)
                | (_, routine::NO_CRED | routine::CREDENTIALS_EXPIRED) => {
                    KerberosError::NoCredentials { detail }
                }
                (KRB5KRB_AP_ERR_TKT_EXPIRED, _) => KerberosError::TicketExpired { detail },
                (KRB5KRB_AP_ERR_SKEW, _) => KerberosError::ClockSkew {
                    allowed: Duration::ZERO,
                    detail,
                },
                (_, routine::DEFECTIVE_TOKEN) => KerberosError::Malformed { detail },
                (_, routine::BAD_SIG) => KerberosError::Integrity { detail },
                _ => Self::gss(st, detail),
            },
            Op::GetMic => match st.routine_error() {
                routine::CONTEXT_EXPIRED => KerberosError::ContextExpired,
                _ => Self::gss(st, detail),
            },
            Op::Transfer => match st.routine_error() {
                routine::CONTEXT_EXPIRED => KerberosError::ContextExpired,
                routine::DEFECTIVE_TOKEN => KerberosError::Malformed { detail },
                _ => Self::gss(st, detail),
            },
            Op::VerifyMic => match st.routine_error() {
                routine::CONTEXT_EXPIRED => KerberosError::ContextExpired,
                routine::NO_CONTEXT => Self::gss(st, detail),
                // A token that does not even parse is, for the caller, a
                // signature that does not verify.
                _ => KerberosError::BadMic,
            },
        }
    }

    fn gss(st: Status, message: String) -> Self {
        KerberosError::Gss {
            major: st.major,
            minor: st.minor,
            message,
        }
    }
}

/// 0, or one of the substitute numbers MIT's mechglue hands out (counting
/// up from 100001, util_errmap.c) when a mechanism's minor code collides
/// with one already mapped.
fn lost_minor(minor: u32) -> bool {
    minor == 0 || (100_001..200_000).contains(&minor)
}

fn is_asn1(code: i32) -> bool {
    (ERROR_TABLE_BASE_ASN1..ERROR_TABLE_BASE_ASN1 + 256).contains(&code)
}

fn is_ggss(code: i32) -> bool {
    (ERROR_TABLE_BASE_GGSS..ERROR_TABLE_BASE_GGSS + 256).contains(&code)
}
