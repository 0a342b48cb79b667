//! `[auth.directory]`: where the SIP identities of domain accounts come from (Active Directory over
//! LDAP). Validated into [`DirectoryConfig`]; [`crate::directory::build`] turns that into the
//! lookup the security core consults after the domain vouched for an account.
//!
//! Only protected transports are accepted (`ldaps://`, or `ldap://` with `starttls = true`), and
//! only the CA in `ca_file` is trusted: the directory's answer decides which SIP identity an
//! account signs in as, so a forged answer would be an impersonation.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::ConfigError;

/// `[auth.directory]` as written.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct DirectorySection {
    /// `ldaps://host[:port]` or `ldap://host[:port]` (then `starttls = true`).
    pub url: String,
    /// StartTLS on an `ldap://` URL (required there: plain LDAP is refused).
    pub starttls: bool,
    /// PEM file with the CA(s) that issued the DC's certificate; the only ones trusted.
    pub ca_file: String,
    /// "simple" (bind_dn + bind_password_file) or "anonymous".
    pub bind: String,
    /// The bind account: a DN or a UPN (`svc@example.com`).
    pub bind_dn: String,
    /// File holding the bind password (first line; refused when group or others may read it).
    pub bind_password_file: String,
    /// Where users are searched (subtree), e.g. `DC=example,DC=com`.
    pub base_dn: String,
    /// An extra attribute holding the SIP address, consulted after msRTCSIP-PrimaryUserAddress and
    /// proxyAddresses (empty: none). A value without `sip:`/`sips:` gets `sip:` put in front.
    pub attribute: String,
    /// Last resort: `sip:<userPrincipalName>`.
    pub use_upn: bool,
    /// NetBIOS name of the domain NTLM users must belong to (empty: read from the directory).
    pub netbios_domain: String,
    /// Kerberos realm (and DNS name) of the domain (empty: from `base_dn`'s DC= components).
    pub realm: String,
    /// How long an answer (identity, disabled) is reused.
    pub cache_ttl_secs: u64,
    /// How long "not found" / "no SIP address" is reused.
    pub negative_ttl_secs: u64,
    /// Connect (TCP + TLS), bind and search each give up after this long: the sign-in gets 503.
    pub timeout_secs: u64,
}

impl Default for DirectorySection {
    fn default() -> Self {
        DirectorySection {
            url: String::new(),
            starttls: false,
            ca_file: String::new(),
            bind: "simple".into(),
            bind_dn: String::new(),
            bind_password_file: String::new(),
            base_dn: String::new(),
            attribute: String::new(),
            use_upn: false,
            netbios_domain: String::new(),
            realm: String::new(),
            cache_ttl_secs: 300,
            negative_ttl_secs: 30,
            timeout_secs: 5,
        }
    }
}

/// How the gateway binds to the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirectoryBind {
    /// Simple bind as `dn` with the password read from `password_file` at start.
    Simple { dn: String, password_file: PathBuf },
    /// No bind (a directory that lets anonymous clients read users; AD does not by default).
    Anonymous,
}

/// Attributes Active Directory lets every user write on their own account by default (the
/// Personal-Information and Web-Information property sets, granted to SELF): as `attribute`, each
/// user would choose the SIP identity they sign in as.
const SELF_WRITABLE: &[&str] = &[
    "telephoneNumber",
    "otherTelephone",
    "ipPhone",
    "otherIpPhone",
    "homePhone",
    "otherHomePhone",
    "mobile",
    "otherMobile",
    "pager",
    "otherPager",
    "facsimileTelephoneNumber",
    "otherFacsimileTelephoneNumber",
    "info",
    "streetAddress",
    "street",
    "postalAddress",
    "homePostalAddress",
    "postOfficeBox",
    "postalCode",
    "physicalDeliveryOfficeName",
    "l",
    "st",
    "c",
    "co",
    "wWWHomePage",
    "url",
];

/// Validated `[auth.directory]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryConfig {
    /// The URL as written (scheme and host checked).
    pub url: String,
    /// The host of `url`: the name the DC's certificate must carry.
    pub host: String,
    pub starttls: bool,
    pub ca_file: PathBuf,
    pub bind: DirectoryBind,
    pub base_dn: String,
    /// The extra attribute (None: not configured).
    pub attribute: Option<String>,
    pub use_upn: bool,
    /// None: learned from the directory (the crossRef of `base_dn`) on first use.
    pub netbios_domain: Option<String>,
    /// Upper case.
    pub realm: String,
    pub cache_ttl: Duration,
    pub negative_ttl: Duration,
    pub timeout: Duration,
}

/// Why the directory cannot be set up from a valid configuration (a file it names).
#[derive(Debug, thiserror::Error)]
pub enum DirectoryConfigError {
    /// `ca_file` is missing, unreadable or holds no certificate.
    #[error("config key `auth.directory.ca_file`: {path}: {why}")]
    Ca {
        /// The file.
        path: String,
        /// What is wrong with it.
        why: String,
    },
    /// `bind_password_file` is missing, unreadable, empty or readable by others.
    #[error("config key `auth.directory.bind_password_file`: {path}: {why}")]
    PasswordFile {
        /// The file.
        path: String,
        /// What is wrong with it.
        why: String,
    },
    /// The TLS client could not be built from the CA.
    #[error("config key `auth.directory.ca_file`: TLS set-up: {0}")]
    Tls(String),
}

fn invalid(key: &str, why: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: format!("auth.directory.{key}"),
        message: why.into(),
    }
}

fn secs(key: &str, v: u64, max: u64) -> Result<Duration, ConfigError> {
    if v == 0 || v > max {
        return Err(invalid(key, format!("must be between 1 and {max}")));
    }
    Ok(Duration::from_secs(v))
}

/// The realm a base DN names: `DC=example,DC=com` → `EXAMPLE.COM` (None without DC= parts).
pub fn realm_of_base_dn(base_dn: &str) -> Option<String> {
    let labels: Vec<String> = base_dn
        .split(',')
        .filter_map(|rdn| {
            let (k, v) = rdn.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("dc")
                .then(|| v.trim().to_ascii_uppercase())
        })
        .collect();
    (!labels.is_empty() && labels.iter().all(|l| !l.is_empty())).then(|| labels.join("."))
}

/// A value that must not carry line breaks or NULs (it ends up in a log line or a filter).
fn clean(key: &str, v: &str) -> Result<String, ConfigError> {
    let v = v.trim();
    if v.is_empty() {
        return Err(invalid(key, "must be set"));
    }
    if v.chars().any(char::is_control) {
        return Err(invalid(key, "must not contain control characters"));
    }
    Ok(v.to_owned())
}

impl DirectorySection {
    /// The URL's scheme and host: `ldaps://` or `ldap://` + StartTLS, a host, no path/query.
    fn url(&self) -> Result<String, ConfigError> {
        let url = clean("url", &self.url)?;
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| invalid("url", "must be ldaps://host or ldap://host"))?;
        match scheme.to_ascii_lowercase().as_str() {
            "ldaps" if self.starttls => {
                return Err(invalid(
                    "starttls",
                    "StartTLS is for ldap:// URLs; ldaps:// is TLS from the first byte",
                ));
            }
            "ldaps" => {}
            "ldap" if self.starttls => {}
            "ldap" => {
                return Err(invalid(
                    "url",
                    "plain LDAP is refused (the answer decides who a user signs in as): use \
                     ldaps:// or set starttls = true",
                ));
            }
            other => {
                return Err(invalid(
                    "url",
                    format!("`{other}://` is not ldaps:// or ldap:// (with starttls)"),
                ));
            }
        }
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains(['/', '?', '@', ' ', '#']) {
            return Err(invalid(
                "url",
                "must be scheme://host[:port] with no user, path or query",
            ));
        }
        let host = match authority.rsplit_once(':') {
            Some((h, port)) if !h.ends_with(']') && h.contains(':') => {
                // A bare IPv6 address without brackets.
                let _ = port;
                return Err(invalid("url", "write an IPv6 address as [addr]"));
            }
            Some((h, port)) => {
                port.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| invalid("url", format!("`{port}` is not a port")))?;
                h
            }
            None => authority,
        };
        if host.is_empty() {
            return Err(invalid("url", "names no host"));
        }
        if host.starts_with('[') {
            // ldap3 hands the bracketed form to rustls as the server name, which it refuses.
            return Err(invalid(
                "url",
                "IPv6 literals are not supported: use the DC's host name",
            ));
        }
        Ok(host.to_owned())
    }

    /// Checks every key (files are only looked at by [`crate::directory::build`] and
    /// `check-config`).
    pub fn validate(&self) -> Result<DirectoryConfig, ConfigError> {
        let host = self.url()?;
        let bind = match self.bind.as_str() {
            "simple" => {
                if self.bind_password_file.trim().is_empty() {
                    return Err(invalid(
                        "bind_password_file",
                        "a simple bind needs the file holding the password",
                    ));
                }
                DirectoryBind::Simple {
                    dn: clean("bind_dn", &self.bind_dn)?,
                    password_file: PathBuf::from(self.bind_password_file.trim()),
                }
            }
            "anonymous" => {
                if !self.bind_dn.trim().is_empty() || !self.bind_password_file.trim().is_empty() {
                    return Err(invalid(
                        "bind",
                        "anonymous takes no bind_dn or bind_password_file (or say bind = \"simple\")",
                    ));
                }
                DirectoryBind::Anonymous
            }
            other => {
                return Err(invalid(
                    "bind",
                    format!("`{other}` is not simple or anonymous"),
                ));
            }
        };
        let base_dn = clean("base_dn", &self.base_dn)?;
        if !base_dn.contains('=') {
            return Err(invalid("base_dn", "must be a DN such as DC=example,DC=com"));
        }
        let attribute = match self.attribute.trim() {
            "" => None,
            a if a
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b';')
                && a.as_bytes()[0].is_ascii_alphabetic() =>
            {
                Some(a.to_owned())
            }
            a => {
                return Err(invalid(
                    "attribute",
                    format!("`{a}` is not an LDAP attribute name"),
                ));
            }
        };
        let netbios_domain = match self.netbios_domain.trim() {
            "" => None,
            n if n.len() <= 15
                && n.bytes().all(|b| {
                    b.is_ascii_graphic() && !b"\\/:*?\"<>|.".contains(&b) || b == b'-'
                }) =>
            {
                Some(n.to_ascii_uppercase())
            }
            n => {
                return Err(invalid(
                    "netbios_domain",
                    format!("`{n}` is not a NetBIOS domain name (at most 15 characters)"),
                ));
            }
        };
        let realm = match self.realm.trim() {
            "" => realm_of_base_dn(&base_dn).ok_or_else(|| {
                invalid(
                    "realm",
                    "base_dn has no DC= components to take the realm from: set realm",
                )
            })?,
            r if r
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-') =>
            {
                r.to_ascii_uppercase()
            }
            r => {
                return Err(invalid(
                    "realm",
                    format!("`{r}` is not a realm name (e.g. EXAMPLE.COM)"),
                ));
            }
        };
        Ok(DirectoryConfig {
            url: self.url.trim().to_owned(),
            host,
            starttls: self.starttls,
            ca_file: PathBuf::from(clean("ca_file", &self.ca_file)?),
            bind,
            base_dn,
            attribute,
            use_upn: self.use_upn,
            netbios_domain,
            realm,
            cache_ttl: secs("cache_ttl_secs", self.cache_ttl_secs, 86_400)?,
            negative_ttl: secs("negative_ttl_secs", self.negative_ttl_secs, 86_400)?,
            timeout: secs("timeout_secs", self.timeout_secs, 300)?,
        })
    }
}

impl DirectoryConfig {
    /// A warning when `attribute` is one Active Directory lets each user write on their own
    /// account by default: logged at start and printed by `sagw check-config` (an operator who
    /// removed SELF's write permission may keep it).
    pub fn self_writable_attribute(&self) -> Option<String> {
        let a = self.attribute.as_deref()?;
        SELF_WRITABLE
            .iter()
            .any(|w| w.eq_ignore_ascii_case(a))
            .then(|| {
                format!(
                    "auth.directory.attribute `{a}`: Active Directory lets every user write it on their own account by default (the Personal-Information and Web-Information property sets): each user could choose the SIP identity they sign in as. Use msRTCSIP-PrimaryUserAddress, proxyAddresses or an attribute only administrators write, or remove SELF's write permission on it"
                )
            })
    }
}
