//! The server side: accept AP-REQs for `sip/<fqdn>@REALM` from a keytab.

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::context::{Enctype, MicFormat, SecContext, SequenceWarning};
use crate::error::{KerberosError, Op};
use crate::ffi::{self, AcceptFailure, Context, Cred, CredError, Name, Usage};
use crate::profile;
use crate::token;

/// Which client realms may authenticate.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum ClientRealms {
    /// Only clients of the service's own realm (the default).
    #[default]
    ServiceRealm,
    /// Exactly these realms (case-sensitive, as Kerberos realms are).
    Listed(Vec<String>),
    /// Any realm the KDC trusts (cross-realm tickets included).
    Any,
}

/// Acceptor configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KerberosConfig {
    /// Keytab holding the `sip/<fqdn>` keys. `None`: MIT's default
    /// (`KRB5_KTNAME`, then `[libdefaults] default_keytab_name`).
    pub keytab: Option<PathBuf>,
    /// The gateway FQDN; the principal is `sip/<fqdn>@REALM` and the
    /// MS-SIPAE targetname `sip/<fqdn>`.
    pub service_fqdn: String,
    /// Service realm. `None`: krb5.conf `default_realm`.
    pub realm: Option<String>,
    /// Largest clock skew tolerated. Enforced by MIT through krb5.conf
    /// `[libdefaults] clockskew` (the GSS acceptor reads nothing else);
    /// [`KerberosAcceptor::new`] refuses to start if that value is larger.
    pub max_clock_skew: Duration,
    /// MIT replay cache name for this acceptor, e.g. `file2:/var/lib/sagw/krb5.rcache2`.
    /// `None`: MIT's default (`KRB5RCACHENAME`, else `dfl:` =
    /// `$KRB5RCACHEDIR` or `/var/tmp/krb5_<euid>.rcache2`). `none:` is refused, here or
    /// from `KRB5RCACHENAME` / `KRB5RCACHETYPE`.
    pub replay_cache: Option<String>,
    /// Client realms accepted.
    pub client_realms: ClientRealms,
}

impl KerberosConfig {
    /// Defaults for everything but the FQDN: default keytab and realm,
    /// 5 minutes skew ([MS-SIP] Kerberos tolerance), MIT replay cache,
    /// clients from the service realm only.
    pub fn new(service_fqdn: impl Into<String>) -> Self {
        KerberosConfig {
            keytab: None,
            service_fqdn: service_fqdn.into(),
            realm: None,
            max_clock_skew: Duration::from_secs(300),
            replay_cache: None,
            client_realms: ClientRealms::ServiceRealm,
        }
    }
}

/// Accepts Kerberos AP-REQs for one service principal.
///
/// `Send + Sync`: the MIT credential has its own lock, so `accept` may be
/// called from many threads; MIT holds that lock for the whole accept
/// (ticket decryption and replay-cache update), so accepts on one acceptor
/// run one at a time. Create several acceptors if that ever limits.
pub struct KerberosAcceptor {
    cred: Cred,
    principal: String,
    targetname: String,
    realm: String,
    skew: Duration,
    client_realms: ClientRealms,
}

impl fmt::Debug for KerberosAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KerberosAcceptor")
            .field("principal", &self.principal)
            .field("clock_skew", &self.skew)
            .field("client_realms", &self.client_realms)
            .finish_non_exhaustive()
    }
}

/// The result of a successful accept.
#[derive(Debug)]
pub struct Accepted {
    /// The established context, for signatures.
    pub session: KerberosSession,
    /// The authenticated client, `alice@EXAMPLE.TEST`.
    pub client_principal: String,
    /// End of the service ticket; `None` when the library reports an
    /// indefinite lifetime. The SA must not outlive it: MIT keeps signing
    /// and verifying after this instant, so expiry is the caller's check.
    pub ticket_end: Option<SystemTime>,
    /// GSS token carrying the AP-REP, when the client asked for mutual
    /// authentication; send it back base64 in `gssapi-data`.
    pub ap_rep: Option<Vec<u8>>,
}

/// An established acceptor context.
///
/// `Send + Sync`: calls are serialised by an internal mutex (RFC 2744
/// forbids concurrent calls on one GSS context).
#[derive(Debug)]
pub struct KerberosSession {
    inner: SecContext,
}

impl KerberosSession {
    /// Server signature: the GSS MIC token over the signature buffer.
    pub fn get_mic(&self, buffer: &[u8]) -> Result<Vec<u8>, KerberosError> {
        self.inner.get_mic(buffer)
    }

    /// Verify a client signature. Sequencing warnings (duplicate, old,
    /// out-of-order, gap) are not errors: replay is the caller's cnum check.
    pub fn verify_mic(&self, buffer: &[u8], token: &[u8]) -> Result<(), KerberosError> {
        self.inner.verify_mic(buffer, token).map(|_| ())
    }

    /// [`verify_mic`](Self::verify_mic), also reporting the sequencing
    /// warning MIT attached to a valid token (for logs and metrics).
    pub fn verify_mic_with_sequence(
        &self,
        buffer: &[u8],
        token: &[u8],
    ) -> Result<Option<SequenceWarning>, KerberosError> {
        self.inner.verify_mic(buffer, token)
    }

    /// Enctype of the per-message key, when the library reports it.
    pub fn enctype(&self) -> Option<Enctype> {
        self.inner.enctype()
    }

    /// The context as a `gss_export_sec_context` token, for another process
    /// (a restart, another node of a pool) to [`import`](Self::import). The
    /// token holds the session keys and sequence state: seal it before it
    /// leaves the process. The session stays usable here (MIT deactivates an
    /// exported context; it is imported back in place under the session's
    /// lock). Should that re-import ever fail, this session is dead and the
    /// error says so; the token is still valid.
    pub fn export(&self) -> Result<zeroize::Zeroizing<Vec<u8>>, KerberosError> {
        self.inner.export()
    }

    /// A session from a token [`export`](Self::export) made. Needs no
    /// keytab: the token carries the context's keys.
    pub fn import(token: &[u8]) -> Result<Self, KerberosError> {
        Ok(KerberosSession {
            inner: SecContext::import(token)?,
        })
    }

    /// Token framing of signatures from this session.
    pub fn mic_format(&self) -> Option<MicFormat> {
        self.inner.enctype().map(Enctype::mic_format)
    }
}

fn config_err(detail: impl Into<String>) -> KerberosError {
    KerberosError::Config {
        detail: detail.into(),
    }
}

fn valid_component(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && !matches!(c, '/' | '@' | '\\'))
}

impl KerberosAcceptor {
    /// Acquire acceptor credentials for `sip/<fqdn>@REALM` from the keytab.
    /// Fails with [`KerberosError::NoKey`] if the keytab lacks that
    /// principal, and with [`KerberosError::Config`] if krb5.conf allows more
    /// clock skew than `max_clock_skew`.
    pub fn new(config: KerberosConfig) -> Result<Self, KerberosError> {
        if !valid_component(&config.service_fqdn) {
            return Err(config_err(format!(
                "service_fqdn {:?} is not a host name",
                config.service_fqdn
            )));
        }
        let values = profile::read().map_err(|code| {
            config_err(format!(
                "cannot read the krb5 profile (KRB5_CONFIG / /etc/krb5.conf), krb5 error {code}"
            ))
        })?;
        if values.clock_skew > config.max_clock_skew {
            return Err(config_err(format!(
                "krb5.conf [libdefaults] clockskew is {}s but max_clock_skew is {}s; MIT enforces the profile value, so set clockskew = {} there",
                values.clock_skew.as_secs(),
                config.max_clock_skew.as_secs(),
                config.max_clock_skew.as_secs()
            )));
        }
        let realm = match config.realm.clone().or(values.default_realm) {
            Some(r) if valid_component(&r) => r,
            Some(r) => return Err(config_err(format!("realm {r:?} is not a realm name"))),
            None => {
                return Err(config_err(
                    "no realm: set KerberosConfig::realm or [libdefaults] default_realm",
                ));
            }
        };
        let targetname = format!("sip/{}", config.service_fqdn);
        let principal = format!("{targetname}@{realm}");

        let mut store: Vec<(&str, String)> = Vec::new();
        if let Some(path) = &config.keytab {
            let path = path
                .to_str()
                .ok_or_else(|| config_err("keytab path is not UTF-8"))?;
            store.push(("keytab", format!("FILE:{path}")));
        }
        if replay_cache_is_none(
            config.replay_cache.as_deref(),
            std::env::var("KRB5RCACHENAME").ok().as_deref(),
            std::env::var("KRB5RCACHETYPE").ok().as_deref(),
        ) {
            return Err(config_err(
                "replay cache type none (configured, or KRB5RCACHENAME / KRB5RCACHETYPE in the environment): would accept replayed AP-REQs",
            ));
        }
        if let Some(rc) = &config.replay_cache {
            store.push(("rcache", rc.clone()));
        }
        let store: Vec<(&str, &str)> = store.iter().map(|(k, v)| (*k, v.as_str())).collect();

        let name = Name::import(&principal, ffi::OID_NT_KRB5_PRINCIPAL).map_err(|st| {
            KerberosError::from_status(
                Op::AcquireAcceptor {
                    principal: &principal,
                },
                st,
            )
        })?;
        let cred = Cred::acquire_from(Some(&name), Usage::Accept, &store).map_err(|e| match e {
            CredError::Nul => config_err("keytab or replay cache name contains NUL"),
            CredError::Gss(st) => KerberosError::from_status(
                Op::AcquireAcceptor {
                    principal: &principal,
                },
                st,
            ),
        })?;
        Ok(KerberosAcceptor {
            cred,
            principal,
            targetname,
            realm,
            skew: values.clock_skew,
            client_realms: config.client_realms,
        })
    }

    /// The MS-SIPAE targetname, `sip/<fqdn>`.
    pub fn targetname(&self) -> &str {
        &self.targetname
    }

    /// The full service principal, `sip/<fqdn>@REALM`.
    pub fn principal(&self) -> &str {
        &self.principal
    }

    /// The clock skew MIT enforces (from krb5.conf), at most
    /// `max_clock_skew`.
    pub fn effective_clock_skew(&self) -> Duration {
        self.skew
    }

    /// Accept one AP-REQ GSS token (the decoded `gssapi-data`). Single leg:
    /// multi-leg variants (DCE style, IAKERB) are refused.
    ///
    /// Reads the system clock (MIT does too) to turn the context lifetime
    /// into `ticket_end`.
    pub fn accept(&self, ap_req: &[u8]) -> Result<Accepted, KerberosError> {
        token::check_ap_req(ap_req).map_err(|why| KerberosError::Malformed {
            detail: why.to_owned(),
        })?;
        let op = Op::Accept {
            principal: &self.principal,
            skew: self.skew,
        };
        let out = Context::accept(&self.cred, ap_req).map_err(|f| match f {
            AcceptFailure::Gss(st) => KerberosError::from_status(op, st),
            AcceptFailure::ContinueNeeded => KerberosError::Unsupported {
                detail: "multi-leg Kerberos exchange (DCE style or IAKERB)".into(),
            },
        })?;
        let now = SystemTime::now();
        let client_principal = out
            .source
            .display()
            .map_err(|st| KerberosError::from_status(op, st))?;
        self.check_realm(&client_principal)?;
        let ticket_end = match out.time_rec {
            u32::MAX => None,
            // MIT reports endtime - now + clockskew (a grace period); the
            // ticket itself ends `skew` earlier, possibly already.
            secs => now
                .checked_add(Duration::from_secs(u64::from(secs)))
                .and_then(|t| t.checked_sub(self.skew)),
        };
        let ap_rep = match out.output.as_slice() {
            [] => None,
            token => Some(token.to_vec()),
        };
        Ok(Accepted {
            session: KerberosSession {
                inner: SecContext::new(out.ctx),
            },
            client_principal,
            ticket_end,
            ap_rep,
        })
    }

    fn check_realm(&self, client: &str) -> Result<(), KerberosError> {
        let realm = principal_realm(client);
        let ok = match &self.client_realms {
            ClientRealms::Any => true,
            ClientRealms::ServiceRealm => realm == Some(self.realm.as_str()),
            ClientRealms::Listed(list) => realm.is_some_and(|r| list.iter().any(|l| l == r)),
        };
        if ok {
            return Ok(());
        }
        let allowed = match &self.client_realms {
            ClientRealms::Any => "any".to_owned(),
            ClientRealms::ServiceRealm => self.realm.clone(),
            ClientRealms::Listed(list) => list.join(", "),
        };
        Err(KerberosError::WrongRealm {
            client: client.to_owned(),
            allowed,
        })
    }
}

/// The realm of a displayed principal: after the last `@` that is not
/// escaped (`alice\@corp@EXAMPLE.TEST` is an enterprise name).
pub(crate) fn principal_realm(principal: &str) -> Option<&str> {
    let bytes = principal.as_bytes();
    let mut realm_start = None;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'\\' => i += 1,
            b'@' => realm_start = Some(i + 1),
            _ => {}
        }
        i += 1;
    }
    realm_start.and_then(|s| principal.get(s..))
}

/// Whether MIT would use the `none` replay cache: the configured name, else `KRB5RCACHENAME`,
/// else `KRB5RCACHETYPE` (MIT's order when the credential store names none). A service
/// environment that sets either to `none` would otherwise switch replay protection off silently.
fn replay_cache_is_none(
    configured: Option<&str>,
    env_name: Option<&str>,
    env_type: Option<&str>,
) -> bool {
    let none = |v: &str| v.trim().to_ascii_lowercase().starts_with("none");
    match (configured, env_name) {
        (Some(c), _) => none(c),
        (None, Some(n)) if !n.trim().is_empty() => none(n),
        _ => env_type.is_some_and(|t| t.trim().eq_ignore_ascii_case("none")),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_none_replay_cache_from_the_configuration_or_the_environment() {
        use super::replay_cache_is_none as none;
        assert!(none(Some("none:"), None, None));
        assert!(!none(
            Some("file2:/var/lib/sagw/rc"),
            Some("none:"),
            Some("none")
        ));
        assert!(none(None, Some("none:"), None));
        assert!(none(None, None, Some("none")));
        assert!(none(None, Some(""), Some("NONE")));
        assert!(!none(None, Some("file2:/tmp/rc"), Some("none")));
        assert!(!none(None, None, None));
        assert!(!none(None, None, Some("file2")));
    }

    use super::*;

    #[test]
    fn realm_of_principal() {
        assert_eq!(principal_realm("alice@EXAMPLE.TEST"), Some("EXAMPLE.TEST"));
        assert_eq!(
            principal_realm("alice\\@corp.example@EXAMPLE.TEST"),
            Some("EXAMPLE.TEST")
        );
        assert_eq!(principal_realm("alice\\@corp"), None);
        assert_eq!(principal_realm("alice"), None);
        assert_eq!(principal_realm("trailing\\"), None);
    }

    #[test]
    fn fqdn_validation() {
        assert!(valid_component("gw.example.test"));
        assert!(!valid_component("gw/x"));
        assert!(!valid_component("gw@x"));
        assert!(!valid_component(""));
        assert!(!valid_component("gw x"));
    }
}
