//! SIP identities of domain accounts from Active Directory over LDAP: [`LdapDirectory`], the
//! [`sagw_auth::AccountDirectory`] the security core asks (on a worker thread) once the domain
//! (winbind for NTLM, the KDC for Kerberos) vouched for an account.
//!
//! * Transport: LDAPS or StartTLS (rustls, ring), trusting only `ca_file`; the DC's certificate
//!   must name the URL's host in its subjectAltName (no CN fallback). Plain LDAP is refused by
//!   the configuration: the answer decides who a user signs in as.
//! * Connections: kept between lookups (a stack of idle ones; a worker takes one, so there are at
//!   most as many as lookups ever ran at once, i.e. one per worker thread). One that fails is
//!   dropped and the lookup retried once on a fresh connection (a DC restart, an idle close).
//! * Search: NTLM accounts by `sAMAccountName` once their domain is the configured one (NetBIOS
//!   name or DNS realm); Kerberos principals by `sAMAccountName` or `userPrincipalName` once
//!   their realm is. The user name comes from the client, so the filter value is escaped
//!   (RFC 4515, every byte outside `[A-Za-z0-9._@-]` as `\XX`).
//! * The identity: `msRTCSIP-PrimaryUserAddress`, else a `sip:` entry of `proxyAddresses`, else
//!   the configured `attribute`, else `sip:<userPrincipalName>` when `use_upn`; each checked with
//!   [`sagw_auth::is_valid_sip_identity`] (an invalid value is skipped, with a warning).
//!   `userAccountControl` with ACCOUNTDISABLE (0x2): [`DirectoryAnswer::Disabled`], whatever the
//!   attributes.
//! * Cache: answers for `cache_ttl`, "not found"/"no SIP address" for `negative_ttl`, at most
//!   [`CACHE_ENTRIES`] accounts; "unavailable" is never cached.
//! * Failures (connect, TLS, bind, search, timeout): [`DirectoryUnavailable`] → 503 upstream.
//!   The bind password never reaches a log line or an error message.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use ldap3::{LdapConn, LdapConnSettings, Scope, SearchEntry};
use parking_lot::Mutex;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use sagw_auth::{AccountDirectory, DirectoryAnswer, DirectoryUnavailable, DomainAccount};
use zeroize::Zeroizing;

use crate::directory_config::{DirectoryBind, DirectoryConfig, DirectoryConfigError};

/// Accounts the cache holds at most (one entry is a few hundred bytes).
pub const CACHE_ENTRIES: usize = 16_384;
/// Idle connections kept at most (more only if that many lookups ran at once).
const IDLE_CONNECTIONS: usize = 64;
/// `userAccountControl` ACCOUNTDISABLE.
const UAC_ACCOUNTDISABLE: i64 = 0x2;
/// Longest account name looked up (sAMAccountName is at most 20 characters, a UPN at most
/// 1024 bytes by schema; nothing a client sends beyond this is a real account).
const MAX_NAME: usize = 512;

const ATTR_PRIMARY: &str = "msRTCSIP-PrimaryUserAddress";
const ATTR_PROXY: &str = "proxyAddresses";
const ATTR_UPN: &str = "userPrincipalName";
const ATTR_SAM: &str = "sAMAccountName";
const ATTR_UAC: &str = "userAccountControl";

/// Builds the directory `[auth.directory]` describes: reads the CA and the bind password now
/// (a restart picks up changes), connects on first use.
pub fn build(cfg: &DirectoryConfig) -> Result<Arc<dyn AccountDirectory>, DirectoryConfigError> {
    Ok(Arc::new(LdapDirectory::new(cfg.clone())?))
}

/// Counters of one [`LdapDirectory`] (tests and figures).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectoryStats {
    /// Lookups asked for.
    pub lookups: u64,
    /// Answered from the cache.
    pub cache_hits: u64,
    /// LDAP searches for an account sent to the directory.
    pub searches: u64,
    /// Entries those searches returned (a name that widened the filter would show here).
    pub entries: u64,
    /// Connections opened (and bound).
    pub connects: u64,
    /// Lookups that ended unavailable.
    pub unavailable: u64,
}

#[derive(Default)]
struct Stats {
    lookups: AtomicU64,
    cache_hits: AtomicU64,
    searches: AtomicU64,
    entries: AtomicU64,
    connects: AtomicU64,
    unavailable: AtomicU64,
}

/// The LDAP-backed [`AccountDirectory`]. Blocking; call from worker threads (each connection
/// runs its own small tokio runtime, so never from inside an async task).
pub struct LdapDirectory {
    cfg: DirectoryConfig,
    tls: Arc<rustls::ClientConfig>,
    password: Option<Zeroizing<String>>,
    idle: Mutex<Vec<LdapConn>>,
    cache: Mutex<Cache>,
    /// `cfg.netbios_domain`, or the one read from the directory once.
    netbios: Mutex<Option<String>>,
    stats: Stats,
}

impl std::fmt::Debug for LdapDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LdapDirectory")
            .field("url", &self.cfg.url)
            .field("base_dn", &self.cfg.base_dn)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// Reads the bind password: the file's first line, refused when group or others have any access
/// to the file (like the gateway's other secret files).
pub fn read_password_file(path: &Path) -> Result<Zeroizing<String>, DirectoryConfigError> {
    let err = |why: String| DirectoryConfigError::PasswordFile {
        path: path.display().to_string(),
        why,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    if let Some(mode) = crate::file_mode::exposed(&meta, crate::file_mode::GROUP_OR_OTHER) {
        return Err(err(format!(
            "group or others may read it (mode {mode:o}); chmod 600 and make it the gateway user's"
        )));
    }
    if !meta.is_file() {
        return Err(err("not a regular file".into()));
    }
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?);
    let line = text.lines().next().unwrap_or("");
    if line.is_empty() {
        return Err(err("empty: the first line is the password".into()));
    }
    Ok(Zeroizing::new(line.to_owned()))
}

/// The rustls client trusting only the certificates in `ca`.
fn tls_client(ca: &Path) -> Result<Arc<rustls::ClientConfig>, DirectoryConfigError> {
    let err = |why: String| DirectoryConfigError::Ca {
        path: ca.display().to_string(),
        why,
    };
    let count = CertificateDer::pem_file_iter(ca)
        .map_err(|e| err(e.to_string()))?
        .count();
    if count == 0 {
        return Err(err("holds no PEM certificate".into()));
    }
    crate::tls::client_config(ca).map_err(|e| err(e.to_string()))
}

/// RFC 4515 filter value: everything but `[A-Za-z0-9._@-]` as `\XX` (per UTF-8 byte), so no
/// client-sent name can open, close or widen a filter (`*`, `(`, `)`, `\`, NUL and the rest).
pub fn filter_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len() * 3);
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("\\{b:02x}"));
        }
    }
    out
}

/// Whether a client-sent account name is worth a search (non-empty, bounded, no controls).
fn plausible_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= MAX_NAME && !n.chars().any(char::is_control)
}

/// What to search for, once the domain or realm is known to be ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Query {
    /// `sAMAccountName=<name>`.
    Sam(String),
    /// `sAMAccountName=<name>` or `userPrincipalName=<name>@<realm>` (a Kerberos principal).
    Principal { name: String, upn: String },
}

impl Query {
    pub(crate) fn filter(&self) -> String {
        // objectCategory=person leaves out computer accounts (also objectClass=user).
        match self {
            Query::Sam(n) => format!(
                "(&(objectCategory=person)(objectClass=user)(sAMAccountName={}))",
                filter_value(n)
            ),
            Query::Principal { name, upn } => format!(
                "(&(objectCategory=person)(objectClass=user)(|(sAMAccountName={})(userPrincipalName={})))",
                filter_value(name),
                filter_value(upn)
            ),
        }
    }

    /// Of several entries, the one this query means: the sAMAccountName match first (the KDC
    /// names AD clients by it), else the UPN match.
    fn pick<'e>(&self, entries: &'e [Attrs]) -> Option<&'e Attrs> {
        let (name, upn) = match self {
            Query::Sam(n) => (n.as_str(), None),
            Query::Principal { name, upn } => (name.as_str(), Some(upn.as_str())),
        };
        let has = |e: &Attrs, attr: &str, want: &str| {
            e.first(attr).is_some_and(|v| v.eq_ignore_ascii_case(want))
        };
        entries
            .iter()
            .find(|e| has(e, ATTR_SAM, name))
            .or_else(|| upn.and_then(|u| entries.iter().find(|e| has(e, ATTR_UPN, u))))
    }
}

/// An entry's attributes, names compared case-insensitively (the server spells them as its
/// schema does).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Attrs(pub(crate) Vec<(String, Vec<String>)>);

impl Attrs {
    fn from_entry(e: SearchEntry) -> Attrs {
        Attrs(e.attrs.into_iter().collect())
    }
    fn all(&self, name: &str) -> &[String] {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
            .unwrap_or(&[])
    }
    fn first(&self, name: &str) -> Option<&str> {
        self.all(name).first().map(String::as_str)
    }
}

/// `sip:`/`sips:` (any case) → lower-case scheme; a bare `user@host` (an attribute like `mail`)
/// gets `sip:`. None when the result is not a valid SIP identity.
pub(crate) fn sip_uri(value: &str) -> Option<String> {
    let v = value.trim();
    let uri = match v.split_once(':') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("sip") => format!("sip:{rest}"),
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("sips") => format!("sips:{rest}"),
        Some(_) => return None,
        None => format!("sip:{v}"),
    };
    sagw_auth::is_valid_sip_identity(&uri).then_some(uri)
}

/// Where an identity came from (for the debug log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Primary,
    ProxyAddresses,
    Attribute,
    Upn,
}

/// The answer one directory entry gives (see the module doc for the order).
pub(crate) fn answer_for(
    e: &Attrs,
    attribute: Option<&str>,
    use_upn: bool,
) -> (DirectoryAnswer, Option<Source>) {
    let uac = e.first(ATTR_UAC).and_then(|v| v.trim().parse::<i64>().ok());
    if uac.is_some_and(|u| u & UAC_ACCOUNTDISABLE != 0) {
        return (DirectoryAnswer::Disabled, None);
    }
    let account = e.first(ATTR_SAM).unwrap_or("?");
    let checked = |attr: &str, v: &str| {
        let uri = sip_uri(v);
        if uri.is_none() {
            tracing::warn!(
                account,
                attribute = attr,
                value = v,
                "directory: not a usable SIP identity, skipped"
            );
        }
        uri
    };
    if let Some(uri) = e
        .all(ATTR_PRIMARY)
        .iter()
        .find_map(|v| checked(ATTR_PRIMARY, v))
    {
        return (DirectoryAnswer::Identity(uri), Some(Source::Primary));
    }
    // Exchange's convention: an upper-case prefix marks the primary address of its kind. Then in
    // a fixed order, since LDAP does not order values.
    let mut sips: Vec<&String> = e
        .all(ATTR_PROXY)
        .iter()
        .filter(|v| v.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("sip:")))
        .collect();
    sips.sort_by_key(|v| (!v.starts_with("SIP:"), v.as_str()));
    if let Some(uri) = sips.iter().find_map(|v| checked(ATTR_PROXY, v)) {
        return (DirectoryAnswer::Identity(uri), Some(Source::ProxyAddresses));
    }
    if let Some(attr) = attribute {
        let mut values: Vec<&String> = e.all(attr).iter().collect();
        values.sort();
        if let Some(uri) = values.iter().find_map(|v| checked(attr, v)) {
            return (DirectoryAnswer::Identity(uri), Some(Source::Attribute));
        }
    }
    if use_upn
        && let Some(upn) = e.first(ATTR_UPN)
        && let Some(uri) = checked(ATTR_UPN, &format!("sip:{upn}"))
    {
        return (DirectoryAnswer::Identity(uri), Some(Source::Upn));
    }
    (DirectoryAnswer::NoSipAddress, None)
}

/// The answers of past lookups, by account. Time is passed in (unit tests move it).
#[derive(Debug)]
pub(crate) struct Cache {
    map: HashMap<String, (DirectoryAnswer, Instant)>,
    cap: usize,
}

impl Cache {
    pub(crate) fn new(cap: usize) -> Cache {
        Cache {
            map: HashMap::new(),
            cap,
        }
    }

    pub(crate) fn get(&mut self, key: &str, now: Instant) -> Option<DirectoryAnswer> {
        match self.map.get(key) {
            Some((a, until)) if now < *until => Some(a.clone()),
            Some(_) => {
                self.map.remove(key);
                None
            }
            None => None,
        }
    }

    pub(crate) fn put(
        &mut self,
        key: String,
        answer: DirectoryAnswer,
        until: Instant,
        now: Instant,
    ) {
        if self.map.len() >= self.cap && !self.map.contains_key(&key) {
            self.map.retain(|_, (_, u)| now < *u);
            if self.map.len() >= self.cap {
                // All fresh: the one that would expire first goes.
                if let Some(k) = self
                    .map
                    .iter()
                    .min_by_key(|(_, (_, u))| *u)
                    .map(|(k, _)| k.clone())
                {
                    self.map.remove(&k);
                }
            }
        }
        self.map.insert(key, (answer, until));
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

/// Why an operation on a connection failed.
struct OpError {
    reason: DirectoryUnavailable,
    /// The directory did not answer in time (as opposed to a closed connection or an error).
    timed_out: bool,
}

impl From<DirectoryUnavailable> for OpError {
    fn from(reason: DirectoryUnavailable) -> OpError {
        OpError {
            reason,
            timed_out: false,
        }
    }
}

/// An LDAP failure, as the reason of [`DirectoryUnavailable`] (never holds the password: ldap3's
/// errors carry result codes and server texts, not the request).
fn unavailable(what: &str, e: impl std::fmt::Display) -> DirectoryUnavailable {
    DirectoryUnavailable(format!("{what}: {e}"))
}

impl LdapDirectory {
    /// Reads the CA and the bind password; no connection yet.
    pub fn new(cfg: DirectoryConfig) -> Result<LdapDirectory, DirectoryConfigError> {
        let tls = tls_client(&cfg.ca_file)?;
        let password = match &cfg.bind {
            DirectoryBind::Simple { password_file, .. } => Some(read_password_file(password_file)?),
            DirectoryBind::Anonymous => None,
        };
        Ok(LdapDirectory {
            netbios: Mutex::new(cfg.netbios_domain.clone()),
            cfg,
            tls,
            password,
            idle: Mutex::new(Vec::new()),
            cache: Mutex::new(Cache::new(CACHE_ENTRIES)),
            stats: Stats::default(),
        })
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &DirectoryConfig {
        &self.cfg
    }

    /// Counters since it was built.
    pub fn stats(&self) -> DirectoryStats {
        let s = &self.stats;
        DirectoryStats {
            lookups: s.lookups.load(Ordering::Relaxed),
            cache_hits: s.cache_hits.load(Ordering::Relaxed),
            searches: s.searches.load(Ordering::Relaxed),
            entries: s.entries.load(Ordering::Relaxed),
            connects: s.connects.load(Ordering::Relaxed),
            unavailable: s.unavailable.load(Ordering::Relaxed),
        }
    }

    /// Forgets every cached answer (tests; a reload does not need it: TTLs are short).
    pub fn clear_cache(&self) {
        *self.cache.lock() = Cache::new(CACHE_ENTRIES);
    }

    /// A new connection, bound.
    fn connect(&self) -> Result<LdapConn, DirectoryUnavailable> {
        let settings = LdapConnSettings::new()
            .set_conn_timeout(self.cfg.timeout)
            .set_config(self.tls.clone())
            .set_starttls(self.cfg.starttls);
        let mut conn = LdapConn::with_settings(settings, &self.cfg.url)
            .map_err(|e| unavailable(&format!("connect {}", self.cfg.url), e))?;
        if let (DirectoryBind::Simple { dn, .. }, Some(pw)) = (&self.cfg.bind, &self.password) {
            conn.with_timeout(self.cfg.timeout)
                .simple_bind(dn, pw)
                .and_then(|r| r.success())
                .map_err(|e| unavailable(&format!("bind as {dn}"), e))?;
        }
        self.stats.connects.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(url = %self.cfg.url, "directory: connected");
        Ok(conn)
    }

    /// Runs `op` on a kept connection or a new one; the connection is kept again afterwards when
    /// `op` succeeded. A kept connection that fails (closed by a DC restart or an idle timeout) is
    /// replaced by a fresh one for a second try, unless the directory timed out: it is slow, not
    /// gone, and a second try would only double the wait (so a lookup waits at most one
    /// `timeout_secs` per step: connect, bind, search).
    fn with_conn<T>(
        &self,
        op: impl Fn(&mut LdapConn) -> Result<T, OpError>,
    ) -> Result<T, DirectoryUnavailable> {
        let kept = self.idle.lock().pop();
        if let Some(mut conn) = kept {
            match op(&mut conn) {
                Ok(v) => {
                    self.keep(conn);
                    return Ok(v);
                }
                Err(e) if e.timed_out => return Err(e.reason),
                Err(e) => {
                    tracing::debug!(reason = %e.reason.0, "directory: kept connection failed, reconnecting");
                }
            }
        }
        let mut conn = self.connect()?;
        let v = op(&mut conn).map_err(|e| e.reason)?;
        self.keep(conn);
        Ok(v)
    }

    fn keep(&self, conn: LdapConn) {
        let mut idle = self.idle.lock();
        if idle.len() < IDLE_CONNECTIONS {
            idle.push(conn);
        }
    }

    /// Entries (not referrals) of a search, or why not.
    fn search(
        &self,
        conn: &mut LdapConn,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: &[&str],
    ) -> Result<Vec<Attrs>, OpError> {
        let (entries, _) = conn
            .with_timeout(self.cfg.timeout)
            .search(base, scope, filter, attrs.to_vec())
            .and_then(|r| r.success())
            .map_err(|e| OpError {
                timed_out: matches!(e, ldap3::LdapError::Timeout { .. }),
                reason: unavailable("search", e),
            })?;
        Ok(entries
            .into_iter()
            .filter(|e| !e.is_ref() && !e.is_intermediate())
            .map(|e| Attrs::from_entry(SearchEntry::construct(e)))
            .collect())
    }

    /// The domain's NetBIOS name: configured, else read once from the crossRef of `base_dn` in
    /// the configuration partition.
    fn netbios(&self) -> Result<String, DirectoryUnavailable> {
        if let Some(n) = self.netbios.lock().clone() {
            return Ok(n);
        }
        let name = self.with_conn(|conn| {
            let root = self.search(
                conn,
                "",
                Scope::Base,
                "(objectClass=*)",
                &["configurationNamingContext"],
            )?;
            let config_nc = root
                .first()
                .and_then(|e| e.first("configurationNamingContext"))
                .map(str::to_owned)
                .ok_or_else(|| {
                    DirectoryUnavailable(
                        "the rootDSE names no configurationNamingContext: set auth.directory.netbios_domain".into(),
                    )
                })?;
            let refs = self.search(
                conn,
                &format!("CN=Partitions,{config_nc}"),
                Scope::OneLevel,
                &format!(
                    "(&(objectClass=crossRef)(nCName={}))",
                    filter_value(&self.cfg.base_dn)
                ),
                &["nETBIOSName"],
            )?;
            refs.first()
                .and_then(|e| e.first("nETBIOSName"))
                .map(str::to_ascii_uppercase)
                .ok_or_else(|| {
                    DirectoryUnavailable(format!(
                        "no crossRef with a nETBIOSName for {} (is base_dn the domain's root?): set auth.directory.netbios_domain",
                        self.cfg.base_dn
                    ))
                    .into()
                })
        })?;
        tracing::info!(netbios_domain = %name, "directory: the domain's NetBIOS name, from the directory");
        *self.netbios.lock() = Some(name.clone());
        Ok(name)
    }

    /// The search for `account`, or None when it is not of this domain (or not a plausible name).
    fn query(&self, account: DomainAccount<'_>) -> Result<Option<Query>, DirectoryUnavailable> {
        match account {
            DomainAccount::Ntlm { user, domain } => {
                if !plausible_name(user) {
                    return Ok(None);
                }
                let ours = domain.eq_ignore_ascii_case(&self.cfg.realm)
                    || domain.eq_ignore_ascii_case(&self.netbios()?);
                Ok(ours.then(|| Query::Sam(user.to_owned())))
            }
            DomainAccount::Kerberos { principal } => {
                let Some((name, realm)) = principal.rsplit_once('@') else {
                    return Ok(None);
                };
                // MIT writes an enterprise principal's `@` escaped (`alice\@example.com@REALM`);
                // any other escape is not a name the directory holds.
                let unescaped;
                let name = if name.contains('\\') {
                    unescaped = name.replace("\\@", "@");
                    if unescaped.contains('\\') {
                        return Ok(None);
                    }
                    unescaped.as_str()
                } else {
                    name
                };
                if !plausible_name(name)
                    || name.contains('/')
                    || !realm.eq_ignore_ascii_case(&self.cfg.realm)
                {
                    return Ok(None);
                }
                // An enterprise principal (`alice@example.com@EXAMPLE.COM`) is a UPN already.
                let upn = if name.contains('@') {
                    name.to_owned()
                } else {
                    format!("{name}@{}", self.cfg.realm.to_ascii_lowercase())
                };
                Ok(Some(Query::Principal {
                    name: name.to_owned(),
                    upn,
                }))
            }
        }
    }

    /// Asks the directory (no cache).
    fn ask(&self, q: &Query) -> Result<DirectoryAnswer, DirectoryUnavailable> {
        let mut attrs = vec![ATTR_SAM, ATTR_UPN, ATTR_UAC, ATTR_PRIMARY, ATTR_PROXY];
        if let Some(a) = &self.cfg.attribute {
            attrs.push(a);
        }
        let filter = q.filter();
        let entries = self.with_conn(|conn| {
            self.stats.searches.fetch_add(1, Ordering::Relaxed);
            self.search(conn, &self.cfg.base_dn, Scope::Subtree, &filter, &attrs)
        })?;
        self.stats
            .entries
            .fetch_add(entries.len() as u64, Ordering::Relaxed);
        let Some(entry) = q.pick(&entries) else {
            return Ok(DirectoryAnswer::NotFound);
        };
        let (answer, source) = answer_for(entry, self.cfg.attribute.as_deref(), self.cfg.use_upn);
        tracing::debug!(?q, ?answer, ?source, "directory: answered");
        Ok(answer)
    }

    /// The cache key of an account (lower case: AD names compare case-insensitively).
    fn key(account: DomainAccount<'_>) -> String {
        match account {
            DomainAccount::Ntlm { user, domain } => format!("n:{domain}\\{user}"),
            DomainAccount::Kerberos { principal } => format!("k:{principal}"),
        }
        .to_lowercase()
    }

    /// Connects, binds and reads what the lookups need (the NetBIOS name): `check-config`'s test.
    /// A line describing the outcome.
    pub fn probe(&self) -> Result<String, DirectoryUnavailable> {
        let netbios = self.netbios()?;
        // netbios() may have answered from the configuration without a connection.
        self.with_conn(|conn| {
            self.search(
                conn,
                "",
                Scope::Base,
                "(objectClass=*)",
                &["defaultNamingContext"],
            )
            .map(|_| ())
        })?;
        Ok(format!(
            "directory: {} answers (TLS with {}, {}); domain {netbios} / {}, users under {}",
            self.cfg.url,
            self.cfg.ca_file.display(),
            match &self.cfg.bind {
                DirectoryBind::Simple { dn, .. } => format!("bound as {dn}"),
                DirectoryBind::Anonymous => "anonymous".to_owned(),
            },
            self.cfg.realm,
            self.cfg.base_dn
        ))
    }
}

impl Drop for LdapDirectory {
    /// Each kept connection owns a small tokio runtime, which panics when dropped inside an async
    /// context; the gateway may drop the security core (and so this) on a runtime thread at
    /// shutdown. The connections are dropped on a thread of their own instead.
    fn drop(&mut self) {
        let idle = std::mem::take(&mut *self.idle.lock());
        if idle.is_empty() {
            return;
        }
        if let Err(e) = std::thread::Builder::new()
            .name("sagw-ldap-close".into())
            .spawn(move || drop(idle))
        {
            tracing::warn!("directory: no thread to close the LDAP connections: {e}");
        }
    }
}

impl AccountDirectory for LdapDirectory {
    fn lookup(&self, account: DomainAccount<'_>) -> Result<DirectoryAnswer, DirectoryUnavailable> {
        self.stats.lookups.fetch_add(1, Ordering::Relaxed);
        let key = Self::key(account);
        if let Some(a) = self.cache.lock().get(&key, Instant::now()) {
            self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(a);
        }
        let answer = self.query(account).and_then(|q| match q {
            Some(q) => self.ask(&q),
            None => Ok(DirectoryAnswer::NotFound),
        });
        match &answer {
            Ok(a) => {
                let now = Instant::now();
                let ttl = match a {
                    DirectoryAnswer::Identity(_) | DirectoryAnswer::Disabled => self.cfg.cache_ttl,
                    DirectoryAnswer::NoSipAddress | DirectoryAnswer::NotFound => {
                        self.cfg.negative_ttl
                    }
                };
                self.cache.lock().put(key, a.clone(), now + ttl, now);
            }
            Err(e) => {
                self.stats.unavailable.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(reason = %e.0, "directory: cannot answer");
            }
        }
        answer
    }
}

#[cfg(test)]
#[path = "directory_tests.rs"]
mod tests;
