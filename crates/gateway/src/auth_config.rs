//! The `[auth]` section: which schemes the gateway offers, where the user hashes and keys live, the
//! challenge policy, SA timers and the director's home servers. Validated into [`AuthSettings`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::ConfigError;

/// `[auth]` as written.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// Authenticate clients (default true). Off, every request passes unauthenticated (lab use only).
    pub enabled: bool,
    /// Schemes offered, in challenge order: any of "kerberos", "ntlm", "digest".
    pub schemes: Vec<String>,
    /// `realm` of NTLM/Kerberos challenges.
    pub realm: String,
    /// Domain of SIP identities (`user` -> `sip:user@<sip_domain>`).
    pub sip_domain: String,
    /// The gateway's FQDN: NTLM `targetname`, Kerberos principal `sip/<fqdn>`.
    pub fqdn: String,
    /// Credentials file (user hashes; see docs). Created empty, mode 600, when missing.
    pub credentials: String,
    /// Challenge status for REGISTER: 401 (default: what Lync-family clients need) or 407.
    pub register_challenge: u16,
    /// Challenge status for other requests: 407 (a proxy) or 401.
    pub other_challenge: u16,
    /// Where signatures go: "authentication-info" or "follow-client".
    pub signature_header: String,
    /// The `version` advertised (3 or 4).
    pub version: u8,
    /// Absolute SA lifetime in seconds (at most 28800).
    pub sa_lifetime_secs: u64,
    /// Idle SA lifetime in seconds.
    pub sa_idle_secs: u64,
    /// Handshakes in progress, in total and per source address.
    pub pending_max: usize,
    pub pending_max_per_source: usize,
    /// NetBIOS names in the NTLM CHALLENGE.
    pub ntlm_netbios_domain: String,
    pub ntlm_netbios_computer: String,
    /// NTLM client clock tolerance in seconds.
    pub ntlm_max_clock_skew_secs: u64,
    /// Kerberos keytab (empty: KRB5_KTNAME / the krb5 default).
    pub kerberos_keytab: String,
    /// Kerberos clock tolerance in seconds (krb5.conf clockskew must not exceed it).
    pub kerberos_max_clock_skew_secs: u64,
    /// Digest realm (empty: sip_domain).
    pub digest_realm: String,
    /// Digest algorithms offered, strongest first.
    pub digest_algorithms: Vec<String>,
    /// Digest nonce lifetime in seconds.
    pub digest_nonce_lifetime_secs: u64,
    /// File with the 32-byte nonce key (created, mode 600, when missing).
    pub nonce_key: String,
    /// Director: user AOR (`user@domain`) or domain -> home server URI; a REGISTER for them gets a
    /// signed 301 with that Contact.
    pub director: BTreeMap<String, String>,
    /// Per-listener challenge statuses: `udp`, `tcp` or `tls` -> { register_challenge, other_challenge }.
    pub listener: BTreeMap<String, ListenerPolicy>,
}

/// `[auth.listener.<transport>]`: the challenge family for clients of one listener.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ListenerPolicy {
    pub register_challenge: Option<u16>,
    pub other_challenge: Option<u16>,
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection {
            // Secure by default: a configuration that forgets [auth] does not open the edge.
            enabled: true,
            schemes: vec!["ntlm".into(), "digest".into()],
            realm: "SIP Communications Service".into(),
            sip_domain: "example.com".into(),
            fqdn: "sagw.example.com".into(),
            credentials: "sagw-data/users".into(),
            register_challenge: 401,
            other_challenge: 407,
            signature_header: "authentication-info".into(),
            version: 4,
            sa_lifetime_secs: 8 * 3600,
            sa_idle_secs: 900,
            pending_max: 65_536,
            pending_max_per_source: 32,
            ntlm_netbios_domain: "SAGW".into(),
            ntlm_netbios_computer: "SAGW".into(),
            ntlm_max_clock_skew_secs: 900,
            kerberos_keytab: String::new(),
            kerberos_max_clock_skew_secs: 300,
            digest_realm: String::new(),
            digest_algorithms: vec!["SHA-256".into(), "MD5".into()],
            digest_nonce_lifetime_secs: 300,
            nonce_key: "sagw-data/nonce.key".into(),
            director: BTreeMap::new(),
            listener: BTreeMap::new(),
        }
    }
}

/// Validated authentication settings.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub ntlm: bool,
    pub kerberos: bool,
    pub digest: bool,
    pub realm: String,
    pub sip_domain: String,
    pub fqdn: String,
    pub credentials: PathBuf,
    pub register_family: sagw_auth::ChallengeFamily,
    pub other_family: sagw_auth::ChallengeFamily,
    pub signature_header: sagw_auth::SignatureHeader,
    pub version: u8,
    pub sa_lifetime: Duration,
    pub sa_idle: Duration,
    pub pending_max: usize,
    pub pending_max_per_source: usize,
    pub netbios_domain: String,
    pub netbios_computer: String,
    pub ntlm_skew: Duration,
    pub keytab: Option<PathBuf>,
    pub kerberos_skew: Duration,
    pub digest_realm: String,
    pub digest_algorithms: Vec<sagw_digest::Algorithm>,
    pub nonce_lifetime: Duration,
    pub nonce_key: PathBuf,
    /// (lower-cased `user@domain` or `domain`, home URI)
    pub director: Vec<(String, String)>,
    /// Challenge policy per listener transport (udp, tcp, tls), where it differs from the default.
    pub listener_policy: Vec<(sagw_proxy::Transport, sagw_auth::ChallengePolicy)>,
}

fn invalid(key: &str, why: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        message: why.into(),
    }
}

fn family(key: &str, status: u16) -> Result<sagw_auth::ChallengeFamily, ConfigError> {
    match status {
        401 => Ok(sagw_auth::ChallengeFamily::Www),
        407 => Ok(sagw_auth::ChallengeFamily::Proxy),
        _ => Err(invalid(key, "must be 401 or 407")),
    }
}

fn secs(key: &str, v: u64, max: u64) -> Result<Duration, ConfigError> {
    if v == 0 || v > max {
        return Err(invalid(key, format!("must be between 1 and {max}")));
    }
    Ok(Duration::from_secs(v))
}

impl AuthSection {
    /// `None` when authentication is off.
    pub fn validate(&self) -> Result<Option<AuthSettings>, ConfigError> {
        if !self.enabled {
            return Ok(None);
        }
        let (mut ntlm, mut kerberos, mut digest) = (false, false, false);
        for s in &self.schemes {
            match s.to_ascii_lowercase().as_str() {
                "ntlm" => ntlm = true,
                "kerberos" => kerberos = true,
                "digest" => digest = true,
                other => {
                    return Err(invalid(
                        "auth.schemes",
                        format!("`{other}` is not ntlm, kerberos or digest"),
                    ));
                }
            }
        }
        if !(ntlm || kerberos || digest) {
            return Err(invalid("auth.schemes", "enable at least one scheme"));
        }
        let plain = |key: &str, v: &str| -> Result<String, ConfigError> {
            if v.trim().is_empty() || v.contains(['"', '\\', '\r', '\n']) {
                Err(invalid(
                    key,
                    "must be non-empty, without quotes, backslashes or line breaks",
                ))
            } else {
                Ok(v.trim().to_owned())
            }
        };
        let realm = plain("auth.realm", &self.realm)?;
        let sip_domain = plain("auth.sip_domain", &self.sip_domain)?.to_ascii_lowercase();
        let fqdn = plain("auth.fqdn", &self.fqdn)?;
        if fqdn.contains(['/', ' ', ':']) {
            return Err(invalid(
                "auth.fqdn",
                "must be a bare host name (no sip/ prefix)",
            ));
        }
        if !matches!(self.version, 3 | 4) {
            return Err(invalid("auth.version", "must be 3 or 4"));
        }
        let signature_header = match self.signature_header.as_str() {
            "authentication-info" => sagw_auth::SignatureHeader::AuthenticationInfo,
            "follow-client" => sagw_auth::SignatureHeader::FollowClient,
            other => {
                return Err(invalid(
                    "auth.signature_header",
                    format!("`{other}` is not authentication-info or follow-client"),
                ));
            }
        };
        let mut digest_algorithms = Vec::new();
        for a in &self.digest_algorithms {
            match sagw_digest::Algorithm::from_token(a) {
                Some(alg) => digest_algorithms.push(alg),
                None => {
                    return Err(invalid(
                        "auth.digest_algorithms",
                        format!("`{a}` is not MD5, SHA-256 or SHA-512-256 (or a -sess form)"),
                    ));
                }
            }
        }
        if digest && digest_algorithms.is_empty() {
            return Err(invalid(
                "auth.digest_algorithms",
                "offer at least one algorithm",
            ));
        }
        let digest_realm = if self.digest_realm.trim().is_empty() {
            sip_domain.clone()
        } else {
            plain("auth.digest_realm", &self.digest_realm)?
        };
        let mut director = Vec::new();
        for (k, v) in &self.director {
            if !(v.starts_with("sip:") || v.starts_with("sips:"))
                || v.contains(['<', '>', '\r', '\n', ' '])
            {
                return Err(invalid(
                    &format!("auth.director.{k}"),
                    "must be a sip: or sips: URI",
                ));
            }
            director.push((k.to_ascii_lowercase(), v.clone()));
        }
        let register_family = family("auth.register_challenge", self.register_challenge)?;
        let other_family = family("auth.other_challenge", self.other_challenge)?;
        let mut listener_policy = Vec::new();
        for (t, p) in &self.listener {
            let key = format!("auth.listener.{t}");
            let transport = sagw_proxy::Transport::from_token(t)
                .ok_or_else(|| invalid(&key, "must be udp, tcp or tls"))?;
            let register = match p.register_challenge {
                Some(s) => family(&format!("{key}.register_challenge"), s)?,
                None => register_family,
            };
            let other = match p.other_challenge {
                Some(s) => family(&format!("{key}.other_challenge"), s)?,
                None => other_family,
            };
            listener_policy.push((transport, sagw_auth::ChallengePolicy { register, other }));
        }
        if self.pending_max == 0 || self.pending_max_per_source == 0 {
            return Err(invalid("auth.pending_max", "limits must be greater than 0"));
        }
        Ok(Some(AuthSettings {
            ntlm,
            kerberos,
            digest,
            realm,
            sip_domain,
            fqdn,
            credentials: PathBuf::from(plain("auth.credentials", &self.credentials)?),
            register_family,
            other_family,
            signature_header,
            version: self.version,
            sa_lifetime: secs("auth.sa_lifetime_secs", self.sa_lifetime_secs, 8 * 3600)?,
            sa_idle: secs("auth.sa_idle_secs", self.sa_idle_secs, 8 * 3600)?,
            pending_max: self.pending_max,
            pending_max_per_source: self.pending_max_per_source,
            netbios_domain: plain("auth.ntlm_netbios_domain", &self.ntlm_netbios_domain)?,
            netbios_computer: plain("auth.ntlm_netbios_computer", &self.ntlm_netbios_computer)?,
            ntlm_skew: secs(
                "auth.ntlm_max_clock_skew_secs",
                self.ntlm_max_clock_skew_secs,
                86_400,
            )?,
            keytab: (!self.kerberos_keytab.trim().is_empty())
                .then(|| PathBuf::from(self.kerberos_keytab.trim())),
            kerberos_skew: secs(
                "auth.kerberos_max_clock_skew_secs",
                self.kerberos_max_clock_skew_secs,
                86_400,
            )?,
            digest_realm,
            digest_algorithms,
            nonce_lifetime: secs(
                "auth.digest_nonce_lifetime_secs",
                self.digest_nonce_lifetime_secs,
                86_400,
            )?,
            nonce_key: PathBuf::from(plain("auth.nonce_key", &self.nonce_key)?),
            director,
            listener_policy,
        }))
    }
}
