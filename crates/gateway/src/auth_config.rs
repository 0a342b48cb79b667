//! The `[auth]` section: which schemes the gateway offers to whom, where the user hashes and keys
//! live, the challenge policies, SA timers and the director's home servers. Validated into
//! [`AuthSettings`].
//!
//! Challenge policies: the top-level keys (`schemes`, `digest_algorithms`, `digest_realm`,
//! `register_challenge`, `other_challenge`) are the policy named `default`; `[auth.policy.<name>]`
//! adds more. A request meets the policy its listener pins (`[auth.listener.<name>] policy`), else
//! the first `[[auth.client]]` rule its own headers match (an `epid` in From, a User-Agent
//! pattern), else `default`. The gateway serves the union of the schemes its policies offer.

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
    /// Deprecated and ignored: NTLM keeps nothing for a handshake in progress any more (the
    /// challenge is recomputed at the final leg), so there is no table to cap, in total or per
    /// source address. Still accepted so that old files load; each one set gives a warning.
    pub pending_max: Option<usize>,
    /// Deprecated and ignored, like `pending_max`.
    pub pending_max_per_source: Option<usize>,
    /// NetBIOS names in the NTLM CHALLENGE.
    pub ntlm_netbios_domain: String,
    pub ntlm_netbios_computer: String,
    /// NTLM client clock tolerance in seconds.
    pub ntlm_max_clock_skew_secs: u64,
    /// Kerberos keytab (empty: KRB5_KTNAME / the krb5 default).
    pub kerberos_keytab: String,
    /// Kerberos service realm (empty: krb5.conf `[libdefaults] default_realm`).
    pub kerberos_realm: String,
    /// Kerberos clock tolerance in seconds (krb5.conf clockskew must not exceed it).
    pub kerberos_max_clock_skew_secs: u64,
    /// Digest realm (empty: sip_domain).
    pub digest_realm: String,
    /// Digest algorithms offered, strongest first.
    pub digest_algorithms: Vec<String>,
    /// Digest nonce lifetime in seconds.
    pub digest_nonce_lifetime_secs: u64,
    /// Digest nonces whose counts are kept (each costs about 150 bytes).
    pub digest_max_tracked_nonces: usize,
    /// How many of those one identity may hold; beyond it, its own oldest goes. Absent: 1024, or
    /// the whole table when it is smaller.
    pub digest_max_nonces_per_identity: Option<usize>,
    /// File with the 32-byte nonce key (created, mode 600, when missing).
    pub nonce_key: String,
    /// Director: user AOR (`user@domain`) or domain -> home server URI; a REGISTER for them gets a
    /// signed 301 with that Contact.
    pub director: BTreeMap<String, String>,
    /// What happens when a policy offers Kerberos and the keytab lacks `sip/<fqdn>`: "skip" or
    /// "refuse".
    pub kerberos_without_keytab: String,
    /// Named challenge policies (`[auth.policy.<name>]`).
    pub policy: BTreeMap<String, PolicySection>,
    /// Client-kind rules, first match wins (`[[auth.client]]`).
    pub client: Vec<ClientSection>,
    /// Per listener (by name: `udp`, `tcp`, `tls` for `[listen]`'s, or a `[[listen.extra]]` name):
    /// a pinned policy and challenge statuses.
    pub listener: BTreeMap<String, ListenerPolicy>,
    /// SAs one identity may hold at once; one more ends its least recently used SA.
    pub max_sas_per_identity: usize,
    /// Longest `epid` accepted (bytes); longer ones get 400.
    pub max_epid_len: usize,
    /// Threads that accept Kerberos AP-REQs off the core thread (0: on the core thread).
    pub kerberos_workers: usize,
    /// AP-REQs waiting for a worker at most; one more gets 503.
    pub kerberos_queue: usize,
    /// How many of those one source (an IPv4 address, an IPv6 /56) may have at once; absent: a
    /// quarter of the queue.
    pub kerberos_queue_per_source: Option<usize>,
    /// `[auth.directory]`: SIP identities of domain accounts from LDAP.
    pub directory: Option<crate::directory_config::DirectorySection>,
    /// `[auth.domain]`: NTLM verified by the domain (crate::domain_config).
    pub domain: crate::domain_config::DomainSection,
}

/// `[auth.listener.<name>]`: the policy and challenge family for clients of one listener.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ListenerPolicy {
    /// Pins this policy for every request on the listener (client rules are not consulted).
    pub policy: Option<String>,
    pub register_challenge: Option<u16>,
    pub other_challenge: Option<u16>,
}

/// `[auth.policy.<name>]`: what one kind of client is offered. Unset keys take the top-level
/// `[auth]` value.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PolicySection {
    pub schemes: Vec<String>,
    pub digest_algorithms: Option<Vec<String>>,
    pub digest_realm: Option<String>,
    pub register_challenge: Option<u16>,
    pub other_challenge: Option<u16>,
}

/// `[[auth.client]]`: a client-kind rule. Every condition given must hold.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClientSection {
    /// "present" (MS-SIPAE clients put an `epid` in From) or "absent".
    pub epid: Option<String>,
    /// Regular expression (case-insensitive) the User-Agent header must match.
    pub user_agent: Option<String>,
    /// The policy these clients meet.
    pub policy: String,
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
            pending_max: None,
            pending_max_per_source: None,
            ntlm_netbios_domain: "SAGW".into(),
            ntlm_netbios_computer: "SAGW".into(),
            ntlm_max_clock_skew_secs: 900,
            kerberos_keytab: String::new(),
            kerberos_max_clock_skew_secs: 300,
            digest_realm: String::new(),
            digest_algorithms: vec!["SHA-256".into(), "MD5".into()],
            digest_nonce_lifetime_secs: 300,
            digest_max_tracked_nonces: 100_000,
            digest_max_nonces_per_identity: None,
            nonce_key: "sagw-data/nonce.key".into(),
            kerberos_realm: String::new(),
            director: BTreeMap::new(),
            // A file that lists Kerberos and has no keytab fails as it always did; the embedded
            // default says "skip" (it offers Kerberos where the host can serve it).
            kerberos_without_keytab: "refuse".into(),
            // Not the embedded default's rules: a policy or rule the operator did not write must
            // never change what the gateway offers (docs/configuration.md).
            policy: BTreeMap::new(),
            client: Vec::new(),
            max_sas_per_identity: sagw_auth::DEFAULT_MAX_SAS_PER_IDENTITY,
            max_epid_len: sagw_auth::DEFAULT_MAX_EPID_LEN,
            listener: BTreeMap::new(),
            kerberos_workers: 2,
            kerberos_queue: 256,
            kerberos_queue_per_source: None,
            directory: None,
            domain: crate::domain_config::DomainSection::default(),
        }
    }
}

/// What to do when a policy offers Kerberos and the keytab cannot serve it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KerberosWithoutKeytab {
    /// Leave Kerberos out of every policy, with a warning at start: the embedded default offers
    /// Kerberos to MS-SIPAE clients wherever the host has a keytab, and NTLM everywhere.
    Skip,
    /// Refuse to start (and fail `check-config`), naming the policy.
    Refuse,
}

/// Which clients a rule is about, by the `epid` From parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpidMatch {
    /// Either.
    Any,
    /// From has an `epid` ([MS-SIPAE] clients).
    Present,
    /// From has none.
    Absent,
}

/// One validated challenge policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySettings {
    /// `default` for the top-level keys, else the `[auth.policy.<name>]` name.
    pub name: String,
    pub schemes: sagw_auth::SchemeSet,
    pub digest_realm: String,
    pub digest_algorithms: Vec<sagw_digest::Algorithm>,
    pub family: sagw_auth::ChallengePolicy,
}

/// One validated client-kind rule.
#[derive(Debug, Clone)]
pub struct ClientRule {
    pub epid: EpidMatch,
    pub user_agent: Option<regex::Regex>,
    /// Index into [`AuthSettings::policies`].
    pub policy: usize,
}

/// What `[auth.listener.<name>]` says, validated; bound to a listener by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ListenerAuth {
    /// Index into [`AuthSettings::policies`] when the listener pins one.
    pub policy: Option<usize>,
    pub register: Option<sagw_auth::ChallengeFamily>,
    pub other: Option<sagw_auth::ChallengeFamily>,
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
    /// Warnings for deprecated keys the file sets (logged at start, printed by `check-config`).
    pub deprecated: Vec<String>,
    pub netbios_domain: String,
    pub netbios_computer: String,
    pub ntlm_skew: Duration,
    pub keytab: Option<PathBuf>,
    /// `auth.kerberos_realm`; `None`: krb5.conf's default_realm.
    pub kerberos_realm: Option<String>,
    pub kerberos_skew: Duration,
    pub digest_realm: String,
    pub digest_algorithms: Vec<sagw_digest::Algorithm>,
    pub nonce_lifetime: Duration,
    pub max_tracked_nonces: usize,
    pub max_tracked_nonces_per_identity: usize,
    pub nonce_key: PathBuf,
    /// (lower-cased `user@domain` or `domain`, home URI)
    pub director: Vec<(String, String)>,
    pub kerberos_without_keytab: KerberosWithoutKeytab,
    /// The challenge policies; index 0 is `default` (the top-level keys).
    pub policies: Vec<PolicySettings>,
    /// Client-kind rules in order.
    pub client_rules: Vec<ClientRule>,
    /// `[auth.listener.<name>]` by listener name, checked against the listeners by
    /// [`AuthSettings::bind_listeners`].
    pub listener_auth: Vec<(String, ListenerAuth)>,
    /// The same, per [`crate::listener::ListenerId`] (filled by `Config::validate`).
    pub by_listener: Vec<ListenerAuth>,
    pub max_sas_per_identity: usize,
    pub max_epid_len: usize,
    /// Kerberos worker threads (0: AP-REQs are accepted on the core thread).
    pub kerberos_workers: usize,
    /// Bound of the Kerberos job queue.
    pub kerberos_queue: usize,
    /// Kerberos jobs one source may have queued or running.
    pub kerberos_queue_per_source: usize,
    /// `[auth.directory]`, validated (its files are read by [`crate::directory::build`]).
    pub directory: Option<crate::directory_config::DirectoryConfig>,
    /// `[auth.domain]` with `ntlm = "winbind"`: NTLM users outside the credentials file are
    /// verified by the domain.
    pub domain_ntlm: Option<crate::domain_config::DomainNtlmConfig>,
}

impl AuthSettings {
    /// Every (Digest realm, base algorithm) some policy offers: `sagw user add` stores an HA1 for
    /// each.
    pub fn digest_realms(&self) -> Vec<(&str, sagw_digest::Algorithm)> {
        let mut out: Vec<(&str, sagw_digest::Algorithm)> = Vec::new();
        // The top-level realm and algorithms always (as before there were policies: a user added
        // while Digest is off can use it once it is on), then every policy that offers Digest.
        let digest_policies = self.policies.iter().enumerate().filter_map(|(i, p)| {
            (i == 0 || p.schemes.contains(sagw_auth::Scheme::Digest)).then_some(p)
        });
        for p in digest_policies {
            for a in &p.digest_algorithms {
                let entry = (p.digest_realm.as_str(), a.base());
                if !out.contains(&entry) {
                    out.push(entry);
                }
            }
        }
        out
    }

    /// The per-listener table, in listener order, from `[auth.listener.<name>]`; an entry naming
    /// no listener is an error naming its key. `udp`, `tcp` and `tls` are always accepted (the
    /// `[listen]` listeners, possibly disabled), as they were before listeners had names.
    pub fn bind_listeners(&self, names: &[&str]) -> Result<Vec<ListenerAuth>, ConfigError> {
        let mut out = vec![ListenerAuth::default(); names.len()];
        for (name, la) in &self.listener_auth {
            match names.iter().position(|n| n == name) {
                Some(i) => {
                    if let Some(slot) = out.get_mut(i) {
                        *slot = *la;
                    }
                }
                None if matches!(name.as_str(), "udp" | "tcp" | "tls") => {}
                None => {
                    return Err(invalid(
                        &format!("auth.listener.{name}"),
                        format!(
                            "no listener is named `{name}` (listeners: {})",
                            names.join(", ")
                        ),
                    ));
                }
            }
        }
        Ok(out)
    }

    /// The index of the policy named `name`.
    pub fn policy_index(&self, name: &str) -> Option<usize> {
        self.policies.iter().position(|p| p.name == name)
    }
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
        let default_schemes = schemes("auth.schemes", &self.schemes)?;
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
        let digest_algorithms = algorithms(
            "auth.digest_algorithms",
            &self.digest_algorithms,
            default_schemes,
        )?;
        let digest_realm = if self.digest_realm.trim().is_empty() {
            sip_domain.clone()
        } else {
            realm_of_records("auth.digest_realm", &self.digest_realm)?
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
        let kerberos_without_keytab = match self.kerberos_without_keytab.as_str() {
            "skip" => KerberosWithoutKeytab::Skip,
            "refuse" => KerberosWithoutKeytab::Refuse,
            other => {
                return Err(invalid(
                    "auth.kerberos_without_keytab",
                    format!("`{other}` is not skip or refuse"),
                ));
            }
        };
        let mut policies = vec![PolicySettings {
            name: "default".into(),
            schemes: default_schemes,
            digest_realm: digest_realm.clone(),
            digest_algorithms: digest_algorithms.clone(),
            family: sagw_auth::ChallengePolicy {
                register: register_family,
                other: other_family,
            },
        }];
        for (name, p) in &self.policy {
            let key = format!("auth.policy.{name}");
            if name == "default" {
                return Err(invalid(
                    &key,
                    "`default` is the policy of the top-level [auth] keys; give this one another name",
                ));
            }
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(invalid(&key, "a policy name is letters, digits, - and _"));
            }
            let set = schemes(&format!("{key}.schemes"), &p.schemes)?;
            let algs = match &p.digest_algorithms {
                Some(a) => algorithms(&format!("{key}.digest_algorithms"), a, set)?,
                None => digest_algorithms.clone(),
            };
            let realm = match &p.digest_realm {
                Some(r) if !r.trim().is_empty() => {
                    realm_of_records(&format!("{key}.digest_realm"), r)?
                }
                _ => digest_realm.clone(),
            };
            let register = match p.register_challenge {
                Some(s) => family(&format!("{key}.register_challenge"), s)?,
                None => register_family,
            };
            let other = match p.other_challenge {
                Some(s) => family(&format!("{key}.other_challenge"), s)?,
                None => other_family,
            };
            policies.push(PolicySettings {
                name: name.clone(),
                schemes: set,
                digest_realm: realm,
                digest_algorithms: algs,
                family: sagw_auth::ChallengePolicy { register, other },
            });
        }
        let policy_named = |key: &str, name: &str| {
            policies.iter().position(|p| p.name == name).ok_or_else(|| {
                invalid(
                    key,
                    format!(
                        "no policy is named `{name}` (policies: {})",
                        policies
                            .iter()
                            .map(|p| p.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })
        };
        let mut client_rules = Vec::new();
        for (i, c) in self.client.iter().enumerate() {
            let key = format!("auth.client[{i}]");
            let epid = match c.epid.as_deref() {
                None => EpidMatch::Any,
                Some("present") => EpidMatch::Present,
                Some("absent") => EpidMatch::Absent,
                Some(other) => {
                    return Err(invalid(
                        &format!("{key}.epid"),
                        format!("`{other}` is not present or absent"),
                    ));
                }
            };
            let user_agent = match c.user_agent.as_deref() {
                None => None,
                Some(p) if p.trim().is_empty() => {
                    return Err(invalid(&format!("{key}.user_agent"), "empty pattern"));
                }
                Some(p) => Some(
                    regex::RegexBuilder::new(p)
                        .case_insensitive(true)
                        .size_limit(1 << 20)
                        .build()
                        .map_err(|e| {
                            invalid(
                                &format!("{key}.user_agent"),
                                format!("not a regular expression: {e}"),
                            )
                        })?,
                ),
            };
            if epid == EpidMatch::Any && user_agent.is_none() {
                return Err(invalid(
                    &key,
                    "a rule needs a condition (epid or user_agent); requests no rule matches meet the `default` policy",
                ));
            }
            let policy = policy_named(&format!("{key}.policy"), &c.policy)?;
            client_rules.push(ClientRule {
                epid,
                user_agent,
                policy,
            });
        }
        let mut listener_auth = Vec::new();
        for (name, p) in &self.listener {
            let key = format!("auth.listener.{name}");
            listener_auth.push((
                name.clone(),
                ListenerAuth {
                    policy: match &p.policy {
                        Some(n) => Some(policy_named(&format!("{key}.policy"), n)?),
                        None => None,
                    },
                    register: p
                        .register_challenge
                        .map(|s| family(&format!("{key}.register_challenge"), s))
                        .transpose()?,
                    other: p
                        .other_challenge
                        .map(|s| family(&format!("{key}.other_challenge"), s))
                        .transpose()?,
                },
            ));
        }
        // The gateway serves what any policy offers.
        let served = policies.iter().fold(sagw_auth::SchemeSet::EMPTY, |acc, p| {
            p.schemes.iter().fold(acc, sagw_auth::SchemeSet::with)
        });
        let ntlm = served.contains(sagw_auth::Scheme::Ntlm);
        let kerberos = served.contains(sagw_auth::Scheme::Kerberos);
        let digest = served.contains(sagw_auth::Scheme::Digest);
        let deprecated = [
            ("auth.pending_max", self.pending_max),
            ("auth.pending_max_per_source", self.pending_max_per_source),
        ]
        .into_iter()
        .filter(|(_, v)| v.is_some())
        .map(|(key, _)| {
            format!(
                "{key} is deprecated and ignored: NTLM first legs keep no state (the challenge is recomputed at the final leg), so there is no table of handshakes in progress to cap; remove the key"
            )
        })
        .collect();
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
            deprecated,
            netbios_domain: plain("auth.ntlm_netbios_domain", &self.ntlm_netbios_domain)?,
            netbios_computer: plain("auth.ntlm_netbios_computer", &self.ntlm_netbios_computer)?,
            ntlm_skew: secs(
                "auth.ntlm_max_clock_skew_secs",
                self.ntlm_max_clock_skew_secs,
                86_400,
            )?,
            keytab: (!self.kerberos_keytab.trim().is_empty())
                .then(|| PathBuf::from(self.kerberos_keytab.trim())),
            kerberos_realm: kerberos_realm(&self.kerberos_realm)?,
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
            max_tracked_nonces: bounded(
                "auth.digest_max_tracked_nonces",
                self.digest_max_tracked_nonces,
                1,
                10_000_000,
            )?,
            max_tracked_nonces_per_identity: match self.digest_max_nonces_per_identity {
                None => sagw_digest::DEFAULT_NONCES_PER_OWNER.min(self.digest_max_tracked_nonces),
                Some(n) => bounded(
                    "auth.digest_max_nonces_per_identity",
                    n,
                    1,
                    self.digest_max_tracked_nonces.max(1),
                )?,
            },
            nonce_key: PathBuf::from(plain("auth.nonce_key", &self.nonce_key)?),
            director,
            kerberos_without_keytab,
            policies,
            client_rules,
            listener_auth,
            by_listener: Vec::new(),
            max_sas_per_identity: bounded(
                "auth.max_sas_per_identity",
                self.max_sas_per_identity,
                1,
                1024,
            )?,
            // An epid is at least one character; 1 KiB is far beyond any client's.
            max_epid_len: bounded("auth.max_epid_len", self.max_epid_len, 1, 1024)?,
            kerberos_workers: bounded("auth.kerberos_workers", self.kerberos_workers, 0, 64)?,
            kerberos_queue: bounded("auth.kerberos_queue", self.kerberos_queue, 1, 65_536)?,
            kerberos_queue_per_source: match self.kerberos_queue_per_source {
                None => crate::auth_jobs::default_share(self.kerberos_queue),
                Some(n) => bounded(
                    "auth.kerberos_queue_per_source",
                    n,
                    1,
                    self.kerberos_queue.max(1),
                )?,
            },
            directory: self
                .directory
                .as_ref()
                .map(crate::directory_config::DirectorySection::validate)
                .transpose()?,
            domain_ntlm: self.domain.validate(ntlm)?,
        }))
    }
}

fn bounded(key: &str, v: usize, min: usize, max: usize) -> Result<usize, ConfigError> {
    if (min..=max).contains(&v) {
        Ok(v)
    } else {
        Err(invalid(key, format!("must be between {min} and {max}")))
    }
}

/// A realm is one principal component: no separators (`/`, `@`), quotes, spaces or controls.
fn kerberos_realm(v: &str) -> Result<Option<String>, ConfigError> {
    let v = v.trim();
    if v.is_empty() {
        return Ok(None);
    }
    if v.chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '/' | '@' | '\\' | '"'))
    {
        return Err(invalid(
            "auth.kerberos_realm",
            format!("`{v}` is not a realm name (e.g. EXAMPLE.COM)"),
        ));
    }
    Ok(Some(v.to_owned()))
}

fn plain(key: &str, v: &str) -> Result<String, ConfigError> {
    if v.trim().is_empty() || v.contains(['"', '\\', '\r', '\n']) {
        Err(invalid(
            key,
            "must be non-empty, without quotes, backslashes or line breaks",
        ))
    } else {
        Ok(v.trim().to_owned())
    }
}

/// A Digest realm, which the credentials file writes at the end of each `ha1` record: where a
/// `#` begins a comment. `Acme #2` was written and read back as `Acme`, and every sign-in failed.
fn realm_of_records(key: &str, v: &str) -> Result<String, ConfigError> {
    let v = plain(key, v)?;
    if v.contains('#') {
        return Err(invalid(
            key,
            "must not contain `#`, which begins a comment in the credentials file",
        ));
    }
    Ok(v)
}

fn schemes(key: &str, list: &[String]) -> Result<sagw_auth::SchemeSet, ConfigError> {
    let mut set = sagw_auth::SchemeSet::EMPTY;
    for s in list {
        let scheme = match s.to_ascii_lowercase().as_str() {
            "ntlm" => sagw_auth::Scheme::Ntlm,
            "kerberos" => sagw_auth::Scheme::Kerberos,
            "digest" => sagw_auth::Scheme::Digest,
            other => {
                return Err(invalid(
                    key,
                    format!("`{other}` is not ntlm, kerberos or digest"),
                ));
            }
        };
        set = set.with(scheme);
    }
    if set.is_empty() {
        return Err(invalid(key, "enable at least one scheme"));
    }
    Ok(set)
}

fn algorithms(
    key: &str,
    list: &[String],
    set: sagw_auth::SchemeSet,
) -> Result<Vec<sagw_digest::Algorithm>, ConfigError> {
    let mut out = Vec::new();
    for a in list {
        match sagw_digest::Algorithm::from_token(a) {
            Some(alg) if out.contains(&alg) => {
                return Err(invalid(key, format!("`{a}` is listed twice")));
            }
            Some(alg) => out.push(alg),
            None => {
                return Err(invalid(
                    key,
                    format!("`{a}` is not MD5, SHA-256 or SHA-512-256 (or a -sess form)"),
                ));
            }
        }
    }
    if set.contains(sagw_auth::Scheme::Digest) && out.is_empty() {
        return Err(invalid(key, "offer at least one algorithm"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn the_retired_pending_limits_still_load_with_a_warning_each() {
        let text = "[auth]\npending_max = 0\npending_max_per_source = 32\n";
        let s = Config::parse(text).unwrap().validate().unwrap();
        let a = s.auth.expect("auth on");
        assert_eq!(a.deprecated.len(), 2, "{:?}", a.deprecated);
        assert!(
            a.deprecated[0].starts_with("auth.pending_max is deprecated and ignored"),
            "{:?}",
            a.deprecated
        );
        assert!(a.deprecated[1].starts_with("auth.pending_max_per_source is deprecated"));
        // Without them, no warning.
        let s = Config::embedded().unwrap().validate().unwrap();
        assert!(s.auth.expect("auth on").deprecated.is_empty());
    }

    #[test]
    fn a_digest_realm_with_a_comment_mark_is_refused() {
        for text in [
            "[auth]\ndigest_realm = \"Acme #2\"\n",
            "[auth]\n[auth.policy.internal]\nschemes = [\"digest\"]\ndigest_realm = \"Acme #2\"\n",
        ] {
            let e = Config::parse(text).unwrap().validate().unwrap_err();
            assert!(e.to_string().contains("digest_realm"), "{e}");
            assert!(e.to_string().contains('#'), "{e}");
        }
        let s = Config::parse("[auth]\ndigest_realm = \"Acme 2\"\n")
            .unwrap()
            .validate()
            .unwrap();
        assert!(s.auth.is_some());
    }
}
