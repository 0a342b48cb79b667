//! Who the endpoint is: its account, its password and the schemes it may use.

use std::fmt;

use serde::Serialize;
use zeroize::Zeroizing;

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
    pub(super) fn from_token(s: &str) -> Option<Self> {
        [AuthScheme::Kerberos, AuthScheme::Ntlm, AuthScheme::Digest]
            .into_iter()
            .find(|a| a.token().eq_ignore_ascii_case(s))
    }
    /// Clock skew the server side tolerates ([MS-SIP]: 15 min NTLM, 5 min Kerberos).
    pub(super) fn skew_tolerance_secs(self) -> Option<i64> {
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
