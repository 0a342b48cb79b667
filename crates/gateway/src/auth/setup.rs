//! How the authentication stage is built from `[auth]`: the security core with every policy
//! registered and the router that picks among them, the keys (fresh, from their files, or the
//! pool's), the Kerberos acceptor when the keytab allows one, and what `sagw check-config` says of
//! each policy.

use std::path::Path;
use std::sync::Arc;

use sagw_auth::kerberos_mit::MitKerberos;
use sagw_auth::{
    AuthPolicy, CoreConfig, DigestOffer, DigestSettings, NtlmSettings, Rng, Scheme, SchemeSet,
    SecurityCore,
};
use tracing::{info, warn};

use super::routing::{PolicyRouter, RoutedPolicy};
use crate::auth_config::{AuthSettings, EpidMatch, KerberosWithoutKeytab};

/// Why the authentication stage could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    /// The credentials file.
    #[error("credentials: {0}")]
    Users(#[from] crate::users::UsersError),
    /// The nonce key file.
    #[error("nonce key {path}: {why}")]
    NonceKey {
        /// The file.
        path: String,
        /// Why.
        why: String,
    },
    /// The Kerberos acceptor (keytab, krb5.conf).
    #[error("kerberos: {0}")]
    Kerberos(String),
    /// `[auth.domain]`: libwbclient could not be loaded.
    #[error("config key `auth.domain.library`: {0}")]
    Domain(#[from] sagw_winbind::LoadError),
    /// `[auth.directory]`: its CA or bind password file.
    #[error("{0}")]
    Directory(#[from] crate::directory_config::DirectoryConfigError),
    /// A policy the security core cannot serve.
    #[error("config key `{key}`: {why}")]
    Policy {
        /// The policy's key (`auth.schemes` for `default`, else `auth.policy.<name>.schemes`).
        key: String,
        /// Why.
        why: String,
    },
}

/// The config key of a policy's scheme list, for errors.
pub fn policy_key(name: &str) -> String {
    if name == "default" {
        "auth.schemes".to_owned()
    } else {
        format!("auth.policy.{name}.schemes")
    }
}

/// The acceptor's configuration from `[auth]`: keytab, service realm, clock skew.
pub(crate) fn kerberos_config(a: &AuthSettings) -> sagw_kerberos::KerberosConfig {
    let mut k = sagw_kerberos::KerberosConfig::new(a.fqdn.clone());
    k.keytab = a.keytab.clone();
    k.realm = a.kerberos_realm.clone();
    k.max_clock_skew = a.kerberos_skew;
    k.replay_cache = replay_cache(a, std::env::var_os("KRB5RCACHENAME").is_some());
    k
}

/// MIT's replay cache beside the credentials file, in the gateway's data directory, unless the
/// environment names one (`KRB5RCACHENAME`). MIT's default is under `/var/tmp`, which the
/// service's `PrivateTmp=yes` empties at every stop (and a container starts without): an AP-REQ
/// captured before a restart was taken again after it, within the clock skew.
///
/// The file must be one this process can write: MIT opens it only when it stores an
/// authenticator, and a store that fails refuses the sign-in. One it cannot open (a read-only
/// directory, a file another user made) leaves MIT's default, with a warning.
fn replay_cache(a: &AuthSettings, named_by_environment: bool) -> Option<String> {
    if named_by_environment {
        return None;
    }
    let dir = a
        .credentials
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let path = dir.join("krb5.rcache2");
    // Nothing is left behind (check-config builds this too, maybe as another user): an existing
    // file is opened for writing, else a probe is made in the directory and removed.
    let usable = if path.exists() {
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map(drop)
    } else {
        let probe = dir.join(format!(".sagw-rcache-probe-{}", std::process::id()));
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&probe)
            .and_then(|_| std::fs::remove_file(&probe))
    };
    match usable {
        Ok(()) => Some(format!("file2:{}", path.display())),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "the Kerberos replay cache cannot be kept with the data: MIT's default under /var/tmp is used, which a service with PrivateTmp loses at each stop");
            None
        }
    }
}

/// Whether Kerberos can be served: `Ok(None)` when no policy offers it, `Ok(Some(acceptor))`
/// when the keytab holds `sip/<fqdn>`; when it does not, an error under
/// `kerberos_without_keytab = "refuse"` naming the first policy that offers it, else `Ok(None)`
/// after a warning (every policy then goes without Kerberos).
pub fn kerberos_acceptor(
    a: &AuthSettings,
) -> Result<Option<sagw_kerberos::KerberosAcceptor>, AuthSetupError> {
    if !a.kerberos {
        return Ok(None);
    }
    match sagw_kerberos::KerberosAcceptor::new(kerberos_config(a)) {
        Ok(acceptor) => Ok(Some(acceptor)),
        Err(e) => {
            let offering: Vec<&str> = a
                .policies
                .iter()
                .filter(|p| p.schemes.contains(Scheme::Kerberos))
                .map(|p| p.name.as_str())
                .collect();
            match a.kerberos_without_keytab {
                KerberosWithoutKeytab::Refuse => Err(AuthSetupError::Policy {
                    key: policy_key(offering.first().copied().unwrap_or("default")),
                    why: format!(
                        "offers kerberos, which the gateway cannot serve: {e} (set auth.kerberos_keytab, or auth.kerberos_without_keytab = \"skip\")"
                    ),
                }),
                KerberosWithoutKeytab::Skip => {
                    warn!(error = %e, policies = ?offering, "Kerberos is not offered: no usable keytab (auth.kerberos_without_keytab = \"skip\")");
                    Ok(None)
                }
            }
        }
    }
}

/// Random bytes from the operating system (through ring), drawn 4 KiB at a time so that signing a
/// message does not cost a system call.
pub struct OsRng {
    sys: ring::rand::SystemRandom,
    buf: Box<[u8; 4096]>,
    pos: usize,
}

impl OsRng {
    /// A generator; fails when the operating system has no randomness to give.
    pub fn new() -> Result<Self, AuthSetupError> {
        let mut r = OsRng {
            sys: ring::rand::SystemRandom::new(),
            buf: Box::new([0u8; 4096]),
            pos: 4096,
        };
        r.refill().map_err(|_| AuthSetupError::NonceKey {
            path: "(system randomness)".into(),
            why: "the operating system gave no random bytes".into(),
        })?;
        Ok(r)
    }

    fn refill(&mut self) -> Result<(), ring::error::Unspecified> {
        use ring::rand::SecureRandom;
        self.sys.fill(&mut self.buf[..])?;
        self.pos = 0;
        Ok(())
    }
}

impl Rng for OsRng {
    fn fill_bytes(&mut self, out: &mut [u8]) {
        for b in out.iter_mut() {
            if self.pos >= self.buf.len() {
                // The OS source only fails on a broken system; predictable challenges or salts
                // would be worse than stopping.
                if self.refill().is_err() {
                    tracing::error!("system randomness failed; stopping");
                    std::process::abort();
                }
            }
            *b = self.buf[self.pos];
            self.pos += 1;
        }
    }
}

/// The Digest nonce key of a single gateway: the `auth.nonce_key` file, made at first start.
fn nonce_key(path: &Path) -> Result<[u8; 32], AuthSetupError> {
    let existed = path.exists();
    let key = sagw_state::keys::secret_file(path).map_err(|e| AuthSetupError::NonceKey {
        path: path.display().to_string(),
        why: match e {
            sagw_state::KeyError::File { why, .. } => why,
            other => other.to_string(),
        },
    })?;
    if !existed {
        info!(path = %path.display(), "generated a Digest nonce key");
    }
    Ok(*key)
}

/// What `sagw check-config` checks beyond the file: that every policy can be served (Kerberos
/// needs `sip/<fqdn>` in the keytab; under `kerberos_without_keytab = "skip"` a policy left with
/// nothing else is an error) and what each policy offers to whom, as lines to print.
pub fn check_policies(
    a: &AuthSettings,
    listeners: &[crate::listener::ListenerSpec],
) -> Result<Vec<String>, AuthSetupError> {
    let mut lines = Vec::new();
    // Why Kerberos is or is not offered is check::kerberos's line.
    let kerberos = kerberos_acceptor(a)?.is_some();
    for (i, p) in a.policies.iter().enumerate() {
        let offered = served_schemes(p.schemes, kerberos);
        if offered.is_empty() {
            return Err(only_kerberos(&p.name));
        }
        let mut what: Vec<String> = offered.iter().map(|s| s.label().to_owned()).collect();
        if let Some(d) = what.iter_mut().find(|w| *w == "digest") {
            let algs: Vec<&str> = p.digest_algorithms.iter().map(|a| a.token()).collect();
            *d = format!("digest ({}; realm {})", algs.join(", "), p.digest_realm);
        }
        let mut who: Vec<String> = Vec::new();
        for (n, r) in a.client_rules.iter().enumerate() {
            if r.policy == i {
                let mut cond = Vec::new();
                match r.epid {
                    EpidMatch::Present => cond.push("epid in From".to_owned()),
                    EpidMatch::Absent => cond.push("no epid in From".to_owned()),
                    EpidMatch::Any => {}
                }
                if let Some(re) = &r.user_agent {
                    cond.push(format!("User-Agent ~ {}", re.as_str()));
                }
                who.push(format!("auth.client[{n}] ({})", cond.join(", ")));
            }
        }
        for (l, la) in listeners.iter().zip(&a.by_listener) {
            if la.policy == Some(i) {
                who.push(format!(
                    "every request on listener {} ({} {})",
                    l.name, l.transport, l.addr
                ));
            }
        }
        if i == 0 {
            who.push("requests no rule matches".to_owned());
        }
        lines.push(format!(
            "policy {}: {}; challenges {} to REGISTER, {} to others; met by {}",
            p.name,
            what.join(", "),
            p.family.register.status(),
            p.family.other.status(),
            who.join("; ")
        ));
    }
    Ok(lines)
}

/// What a policy offering `schemes` can serve: without a Kerberos acceptor (no usable keytab,
/// `kerberos_without_keytab = "skip"`), everything but Kerberos.
fn served_schemes(schemes: SchemeSet, kerberos: bool) -> SchemeSet {
    schemes
        .iter()
        .filter(|s| kerberos || *s != Scheme::Kerberos)
        .collect()
}

/// The error of a policy left with nothing to offer once Kerberos cannot be served.
fn only_kerberos(policy: &str) -> AuthSetupError {
    AuthSetupError::Policy {
        key: policy_key(policy),
        why: "offers only kerberos, which the gateway cannot serve (no usable keytab)".to_owned(),
    }
}

/// Builds the security core the settings describe, with its policies registered, and the router
/// that picks one per request.
pub fn build_core(
    a: &AuthSettings,
    rng: &mut dyn Rng,
) -> Result<(SecurityCore, PolicyRouter), AuthSetupError> {
    build_core_with_store(a, rng).map(|(core, _, router)| (core, router))
}

/// What the `build_core_*` functions make: the security core, the credentials store (the driver
/// reloads it) and the router of the per-source policies.
pub type BuiltCore = (
    SecurityCore,
    Arc<crate::users::ReloadingStore>,
    PolicyRouter,
);

/// [`build_core`], also returning the credentials store so the driver can reload it.
pub fn build_core_with_store(
    a: &AuthSettings,
    rng: &mut dyn Rng,
) -> Result<BuiltCore, AuthSetupError> {
    build_core_keyed(a, rng, None)
}

/// Keys a pool shares (docs/pools.md): the NTLM challenge key (a final leg may reach any gateway,
/// and a restart does not break a handshake between its legs) and, for a pool, the Digest nonce key.
pub struct SharedKeys {
    /// Key of the NTLM challenge MAC; `None`: fresh at this start (one gateway).
    pub ntlm_challenge: Option<[u8; 32]>,
    /// Digest nonce key; `None`: the `auth.nonce_key` file (one gateway).
    pub digest_nonce: Option<[u8; 32]>,
    /// The node number Digest nonces carry (0: one gateway; docs/pools.md).
    pub digest_node: u16,
    /// When the gateway started: its Digest nonces issued before are stale. `None` (a test's or
    /// a bench's core, on a clock of its own): none are.
    pub started: Option<std::time::SystemTime>,
}

/// [`build_core_with_store`] with keys from the pool key instead of fresh ones.
pub fn build_core_keyed(
    a: &AuthSettings,
    rng: &mut dyn Rng,
    keys: Option<&SharedKeys>,
) -> Result<BuiltCore, AuthSetupError> {
    build_core_with_backend(a, rng, keys, None)
}

/// [`build_core_keyed`] with `kerberos` as the Kerberos acceptor instead of MIT's from the
/// keytab (a test seam: a slow or scripted acceptor).
pub fn build_core_with_backend(
    a: &AuthSettings,
    rng: &mut dyn Rng,
    keys: Option<&SharedKeys>,
    kerberos: Option<Box<dyn sagw_auth::KerberosBackend>>,
) -> Result<BuiltCore, AuthSetupError> {
    crate::users::ensure_file(&a.credentials)?;
    let store = Arc::new(crate::users::ReloadingStore::open(
        &a.credentials,
        &a.sip_domain,
    )?);
    if store.user_count() == 0 {
        warn!(path = %a.credentials.display(), "no users yet: every request will be challenged (add some with `sagw user add NAME`)");
    }
    for w in store.digest_gaps(a) {
        warn!("{w}");
    }
    let mut cfg = CoreConfig::new(a.sip_domain.clone());
    cfg.realm = a.realm.clone();
    cfg.version = a.version;
    cfg.policy.register = a.register_family;
    cfg.policy.other = a.other_family;
    cfg.signature_header = a.signature_header;
    cfg.sa_lifetime = a.sa_lifetime;
    cfg.sa_idle_ttl = a.sa_idle;
    cfg.max_sas_per_identity = a.max_sas_per_identity;
    cfg.max_epid_len = a.max_epid_len;
    if let Some(k) = keys {
        cfg.node_id = k.digest_node;
    }
    for d in &a.deprecated {
        warn!("{d}");
    }
    if a.ntlm {
        let mut n = NtlmSettings::new(
            a.fqdn.clone(),
            sagw_ntlm::ServerIdentity {
                netbios_domain: a.netbios_domain.clone(),
                netbios_computer: a.netbios_computer.clone(),
                dns_domain: a.sip_domain.clone(),
                dns_computer: a.fqdn.clone(),
                dns_tree: a.sip_domain.clone(),
            },
        );
        n.max_clock_skew = a.ntlm_skew;
        // NTLM server challenges are a MAC under this key (nothing is kept per handshake): the
        // pool's, so that a final leg may reach another gateway of the pool; else fresh at every
        // start, so a final leg for a challenge from before a restart fails. The record of a
        // final leg's one use lives in memory only: a key that outlived it let a captured final
        // leg sign in again after a restart.
        let key = match keys.and_then(|k| k.ntlm_challenge) {
            Some(k) => k,
            None => {
                let mut key = [0u8; 32];
                rng.fill_bytes(&mut key);
                key
            }
        };
        n.challenge_key = Some(key);
        cfg.ntlm = Some(n);
    }
    if a.digest {
        let mut d = sagw_digest::DigestConfig::new(a.digest_realm.clone());
        d.algorithms = a.digest_algorithms.clone();
        d.nonce_lifetime = a.nonce_lifetime;
        cfg.digest = Some(DigestSettings {
            config: d,
            nonce_key: match keys.and_then(|k| k.digest_nonce) {
                Some(k) => k,
                None => nonce_key(&a.nonce_key)?,
            },
            max_tracked_nonces: a.max_tracked_nonces,
            max_tracked_nonces_per_identity: a.max_tracked_nonces_per_identity,
            // The counts of the nonces issued before this start are gone: those nonces are stale
            // (a client answers a fresh challenge), or a captured request on one is taken again.
            started: keys.and_then(|k| k.started),
        });
    }
    let mut core = SecurityCore::new(cfg, store.clone());
    let backend = match kerberos {
        Some(b) => Some(b),
        None => kerberos_acceptor(a)?.map(|acceptor| {
            Box::new(MitKerberos::new(acceptor)) as Box<dyn sagw_auth::KerberosBackend>
        }),
    };
    let kerberos = backend.is_some();
    if let Some(backend) = backend {
        core = core.with_kerberos(backend, None);
    }
    let mut routed = Vec::with_capacity(a.policies.len());
    for p in &a.policies {
        let schemes = served_schemes(p.schemes, kerberos);
        let id = core
            .add_policy(AuthPolicy {
                schemes,
                digest: schemes.contains(Scheme::Digest).then(|| DigestOffer {
                    realm: p.digest_realm.clone(),
                    algorithms: p.digest_algorithms.clone(),
                }),
            })
            .map_err(|e| match e {
                sagw_auth::PolicyError::Empty => only_kerberos(&p.name),
                other => AuthSetupError::Policy {
                    key: policy_key(&p.name),
                    why: other.to_string(),
                },
            })?;
        routed.push(RoutedPolicy {
            id,
            family: p.family,
            name: p.name.clone(),
        });
    }
    let router = PolicyRouter {
        policies: routed,
        rules: a.client_rules.clone(),
        listeners: a.by_listener.clone(),
    };
    Ok((core, store, router))
}

/// The security core and router a configuration text builds (for the tests of every part of the
/// stage).
#[cfg(test)]
pub(super) fn core_of(text: &str) -> (SecurityCore, PolicyRouter) {
    let a = crate::Config::parse(text)
        .and_then(|c| c.validate())
        .expect("valid")
        .auth
        .expect("auth on");
    let mut rng = sagw_auth::XorShiftRng::new(3);
    build_core(&a, &mut rng).expect("core")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Kerberos replay cache is kept with the gateway's data (which a service's restart
    /// keeps), not under /var/tmp (which `PrivateTmp=yes` empties at every stop): an AP-REQ
    /// captured before a restart must not be taken after it.
    #[test]
    fn the_kerberos_replay_cache_lives_beside_the_credentials_file() {
        let dir = tempfile::tempdir().expect("dir");
        let users = dir.path().join("users");
        let a = crate::Config::parse(&format!("[auth]\ncredentials = \"{}\"\n", users.display()))
            .and_then(|c| c.validate())
            .expect("valid")
            .auth
            .expect("auth on");
        let cache = dir.path().join("krb5.rcache2");
        assert_eq!(
            replay_cache(&a, false),
            Some(format!("file2:{}", cache.display()))
        );
        assert!(
            !cache.exists(),
            "nothing is made (MIT makes it at the first sign-in)"
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).expect("dir").count(),
            0,
            "no probe left behind"
        );
        assert_eq!(replay_cache(&a, true), None, "KRB5RCACHENAME decides");
        assert_eq!(
            kerberos_config(&a).replay_cache.is_some(),
            std::env::var_os("KRB5RCACHENAME").is_none()
        );
        // A directory it cannot write: MIT's default, not a cache every sign-in fails on.
        let read_only = crate::Config::parse("[auth]\ncredentials = \"/proc/sagw-none/users\"\n")
            .and_then(|c| c.validate())
            .expect("valid")
            .auth
            .expect("auth on");
        assert_eq!(replay_cache(&read_only, false), None);
    }

    #[test]
    fn the_identity_caps_reach_the_core_and_are_bounded() {
        let dir = tempfile::tempdir().expect("temp dir");
        let conf = |extra: &str| {
            format!(
                "[listen]\nudp = \"127.0.0.1:0\"\ntcp = \"\"\ntls = \"\"\n[auth]\ncredentials = \"{d}/users\"\nnonce_key = \"{d}/nonce.key\"\n{extra}\n",
                d = dir.path().display()
            )
        };
        let (core, _) = core_of(&conf("max_sas_per_identity = 4\nmax_epid_len = 20"));
        assert_eq!(core.config().max_sas_per_identity, 4);
        assert_eq!(core.config().max_epid_len, 20);
        // The Digest nonce table: a smaller table alone takes the share down with it.
        let nonces = |extra: &str| {
            crate::Config::parse(&conf(extra))
                .and_then(|c| c.validate())
                .map(|s| s.auth.expect("auth"))
                .map(|a| (a.max_tracked_nonces, a.max_tracked_nonces_per_identity))
        };
        assert_eq!(nonces("").expect("defaults"), (100_000, 1024));
        assert_eq!(
            nonces("digest_max_tracked_nonces = 500").expect("a small table alone"),
            (500, 500)
        );
        assert_eq!(
            nonces(
                "digest_max_tracked_nonces = 500
digest_max_nonces_per_identity = 20"
            )
            .expect("both"),
            (500, 20)
        );
        for (bad, key) in [
            (
                "digest_max_tracked_nonces = 500
digest_max_nonces_per_identity = 501",
                "auth.digest_max_nonces_per_identity",
            ),
            (
                "digest_max_tracked_nonces = 0",
                "auth.digest_max_tracked_nonces",
            ),
            ("max_sas_per_identity = 0", "auth.max_sas_per_identity"),
            ("max_epid_len = 0", "auth.max_epid_len"),
            ("max_epid_len = 100000", "auth.max_epid_len"),
        ] {
            let e = crate::Config::parse(&conf(bad))
                .and_then(|c| c.validate())
                .map(|_| ())
                .expect_err(bad);
            assert!(e.to_string().contains(key), "{e}");
        }
    }
}
