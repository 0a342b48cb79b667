//! What `sagw check-config` checks beyond the values of the file: the files the gateway will read
//! at start (the Kerberos keytab, the keys of `[state]`), so that a service that would fail at
//! start, or start without Kerberos, fails here first, with the key to fix.
//!
//! Run it as the service's user (`sudo -u sagw sagw --config … check-config`): whether a file is
//! readable is a question about that user.

use std::path::{Path, PathBuf};

use crate::auth_config::{AuthSettings, KerberosWithoutKeytab};
use crate::state_config::{StateBackend, StateSettings};

/// A file the gateway needs is missing, unreadable or wrong.
#[derive(Debug, thiserror::Error)]
#[error("config key `{key}`: {why}")]
pub struct CheckError {
    /// The key naming the file (or the feature needing it).
    pub key: &'static str,
    /// What is wrong, and what to do.
    pub why: String,
}

/// Where MIT krb5 will look for the keytab: the configured file, else `KRB5_KTNAME`, else the
/// krb5 default.
fn keytab_source(a: &AuthSettings) -> (String, Option<PathBuf>) {
    if let Some(p) = &a.keytab {
        return (p.display().to_string(), Some(p.clone()));
    }
    match std::env::var("KRB5_KTNAME") {
        Ok(name) => {
            let file = name.strip_prefix("FILE:").unwrap_or(&name);
            let path = (!file.contains(':')).then(|| PathBuf::from(file));
            (format!("{name} (KRB5_KTNAME)"), path)
        }
        Err(_) => (
            "the krb5 default (krb5.conf default_keytab_name, else /etc/krb5.keytab)".to_owned(),
            None,
        ),
    }
}

/// The Kerberos keytab, when a policy offers Kerberos: readable, and holding `sip/<fqdn>` for
/// the service realm (`auth.kerberos_realm`, else krb5.conf's default_realm), checked by
/// acquiring the acceptor's credentials through MIT GSS-API as the gateway does at start. Under
/// `kerberos_without_keytab = "skip"` a failure is a note (Kerberos is then not offered), under
/// "refuse" an error.
pub fn kerberos(a: &AuthSettings) -> Result<Vec<String>, CheckError> {
    if !a.kerberos {
        return Ok(vec!["kerberos: no policy offers it".to_owned()]);
    }
    let (source, path) = keytab_source(a);
    let failed = |why: String| match a.kerberos_without_keytab {
        KerberosWithoutKeytab::Refuse => Err(CheckError {
            key: "auth.kerberos_keytab",
            why,
        }),
        KerberosWithoutKeytab::Skip => Ok(vec![format!(
            "note: Kerberos is not offered (auth.kerberos_without_keytab = \"skip\"): {why}"
        )]),
    };
    if let Some(p) = &path
        && let Err(e) = std::fs::File::open(p)
    {
        return failed(format!(
            "keytab {} cannot be read: {e} (the gateway's user must be able to read it)",
            p.display()
        ));
    }
    match sagw_kerberos::KerberosAcceptor::new(crate::auth::kerberos_config(a)) {
        Ok(acceptor) => Ok(vec![format!(
            "kerberos: the keytab ({source}) holds {}; clock skew {}s",
            acceptor.principal(),
            acceptor.effective_clock_skew().as_secs()
        )]),
        Err(e) => {
            let listing = path
                .as_deref()
                .map(|p| format!("; `klist -k {}` lists what it holds", p.display()))
                .unwrap_or_default();
            failed(format!(
                "the keytab ({source}) has no usable key for sip/{}{}: {e}{listing}",
                a.fqdn,
                a.kerberos_realm
                    .as_deref()
                    .map(|r| format!("@{r}"))
                    .unwrap_or_default(),
            ))
        }
    }
}

/// An existing secret file must be one the gateway accepts (32 bytes, mode 0600); a missing one
/// is made at first start, in a directory that must then be writable.
/// `[auth.domain]`: libwbclient loads and winbindd answers a ping (`wbcCtxPing`). Run as the
/// service's user: challenge/response also needs the privileged pipe (group `winbindd_priv`),
/// which a ping does not reach, so the line says so.
pub fn domain(a: &AuthSettings) -> Result<Vec<String>, CheckError> {
    let Some(d) = &a.domain_ntlm else {
        return Ok(vec![
            "domain: NTLM is verified from the credentials file only".to_owned(),
        ]);
    };
    let verifier = crate::domain::WinbindVerifier::load(&d.library).map_err(|e| CheckError {
        key: "auth.domain.library",
        why: format!("{e} (install libwbclient0, or give its path)"),
    })?;
    verifier.ping().map_err(|e| CheckError {
        key: "auth.domain.ntlm",
        why: format!(
            "{e}: is winbindd running on this host (a domain member: `net ads join`, then start winbind)?"
        ),
    })?;
    Ok(vec![format!(
        "domain: {} loaded, winbindd answers; {} workers, queue {}, Retry-After {}s (the service's user needs the winbindd_priv group for NTLM)",
        d.library,
        d.workers,
        d.queue,
        d.retry_after.as_secs()
    )])
}

fn secret_file(key: &'static str, path: &Path, what: &str) -> Result<String, CheckError> {
    if path.exists() {
        sagw_state::keys::secret_file(path).map_err(|e| CheckError {
            key,
            why: e.to_string(),
        })?;
        Ok(format!("{what}: {} (readable, 32 bytes)", path.display()))
    } else {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Ok(format!(
            "{what}: {} does not exist yet: made at first start (mode 0600), in {} (must be writable)",
            path.display(),
            dir.display()
        ))
    }
}

/// `[state]`: the backend, and its key and snapshot files.
pub fn state(s: &StateSettings) -> Result<Vec<String>, CheckError> {
    let mut lines = Vec::new();
    match &s.backend {
        StateBackend::Memory { snapshot } => {
            lines.push(format!(
                "state: memory (this gateway alone); snapshot {}",
                match snapshot {
                    None => "none: a restart signs everyone out".to_owned(),
                    Some(p) if p.exists() => match std::fs::File::open(p) {
                        Ok(_) => format!("{} (present: read at the next start)", p.display()),
                        Err(e) => {
                            return Err(CheckError {
                                key: "state.snapshot",
                                why: format!("{} cannot be read: {e}", p.display()),
                            });
                        }
                    },
                    Some(p) => format!("{} (written at SIGTERM)", p.display()),
                }
            ));
        }
        StateBackend::Redis {
            urls,
            cluster,
            password_file,
            ..
        } => {
            // The URLs may carry a password (redis://:password@host): only their hosts are shown.
            let hosts: Vec<&str> = urls
                .iter()
                .map(|u| {
                    let rest = u.split_once("://").map_or(u.as_str(), |(_, r)| r);
                    rest.rsplit_once('@').map_or(rest, |(_, h)| h)
                })
                .collect();
            lines.push(format!(
                "state: redis {} at {} (not contacted by check-config)",
                if *cluster { "cluster" } else { "server" },
                hosts.join(", ")
            ));
            if let Some(p) = password_file
                && let Err(e) = std::fs::File::open(p)
            {
                return Err(CheckError {
                    key: "state.password_file",
                    why: format!("{} cannot be read: {e}", p.display()),
                });
            }
        }
    }
    lines.push(secret_file("state.key_file", &s.key_file, "pool key")?);
    Ok(lines)
}

/// `[auth.directory]`: the CA and the bind password file as the gateway reads them at start,
/// then a real connection: TLS with that CA, the bind, and the rootDSE/NetBIOS name read (so a
/// wrong CA, a certificate not naming the URL's host, or a wrong password fails here, not at the
/// first sign-in).
pub fn directory(a: &AuthSettings) -> Result<Vec<String>, CheckError> {
    use crate::directory_config::DirectoryConfigError;
    let Some(cfg) = &a.directory else {
        return Ok(Vec::new());
    };
    let dir = crate::directory::LdapDirectory::new(cfg.clone()).map_err(|e| CheckError {
        key: match e {
            DirectoryConfigError::PasswordFile { .. } => "auth.directory.bind_password_file",
            DirectoryConfigError::Ca { .. } | DirectoryConfigError::Tls(_) => {
                "auth.directory.ca_file"
            }
        },
        why: e.to_string(),
    })?;
    let line = dir.probe().map_err(|e| CheckError {
        key: "auth.directory.url",
        why: format!(
            "the directory does not answer: {}; check url, ca_file (the DC's certificate must be \
             issued by it and name {} in its subjectAltName), bind_dn and the password",
            e.0, cfg.host
        ),
    })?;
    Ok(vec![line])
}

/// `auth.credentials`: the users file loads as a start would load it (its mode, its syntax, one
/// record of a kind per user, one user per SIP identity). A file not there yet is made empty.
pub fn credentials(a: &AuthSettings) -> Result<String, CheckError> {
    let path = &a.credentials;
    if !path.exists() {
        return Ok(format!(
            "credentials: {} does not exist yet: made empty at first start (mode 0600)",
            path.display()
        ));
    }
    let store = crate::users::load(path, &a.sip_domain).map_err(|e| CheckError {
        key: "auth.credentials",
        why: e.to_string(),
    })?;
    Ok(format!(
        "credentials: {} ({} users)",
        path.display(),
        store.users().count()
    ))
}

/// [`crate::users::digest_gaps`] of the credentials file, when it loads.
pub fn digest_gaps(a: &AuthSettings) -> Vec<String> {
    match crate::users::load(&a.credentials, &a.sip_domain) {
        Ok(store) if a.credentials.exists() => crate::users::digest_gaps(a, &store),
        _ => Vec::new(),
    }
}

/// The TLS private keys a start reads (the listener's, when configured as files, and the client
/// keys presented to next hops): readable, and by nobody but the gateway's user and group.
pub fn tls_keys(
    cert: &crate::config::CertSource,
    outbound: &crate::tls_client::OutboundTlsSettings,
) -> Result<Vec<String>, CheckError> {
    let mut keys: Vec<(&'static str, PathBuf)> = Vec::new();
    match cert {
        crate::config::CertSource::Files { key, .. } => keys.push(("tls.key", key.clone())),
        // The generated key, once a start has made it (a start reads it the same way).
        crate::config::CertSource::Generated { dir, .. } => {
            let key = dir.join("sagw-key.pem");
            if key.exists() {
                keys.push(("tls.generated_dir", key));
            }
        }
    }
    if let Some(c) = &outbound.client {
        keys.push(("tls.client_key", c.key.clone()));
    }
    for p in &outbound.peers {
        if let Some(c) = &p.client {
            keys.push(("tls.next_hop.client_key", c.key.clone()));
        }
    }
    keys.into_iter()
        .map(|(key, path)| {
            crate::tls::private_key(&path)
                .map(|_| {
                    format!(
                        "TLS private key: {} (readable, not by others)",
                        path.display()
                    )
                })
                .map_err(|e| CheckError {
                    key,
                    why: e.to_string(),
                })
        })
        .collect()
}

/// What a start builds its TLS from, built the same way: the listener's certificate and key (a
/// key that is not the certificate's fails here as it fails a start; a generated pair only once
/// a start made it), the peer CA, the next hops' CA and client certificates. Before, check-config
/// looked only at the keys' modes and said "OK" to a pair that made the start fail.
pub fn tls_files(settings: &crate::Settings) -> Result<Vec<String>, CheckError> {
    let mut lines = Vec::new();
    let peers = match &settings.peer_trust {
        Some(p) => Some(
            crate::peer_trust::PeerTrust::load(&p.ca, &p.names).map_err(|e| CheckError {
                key: "tls.peer_ca",
                why: e.to_string(),
            })?,
        ),
        None => None,
    };
    let tls_listener = settings
        .listeners
        .iter()
        .any(|l| l.transport == sagw_proxy::Transport::Tls);
    // The files as they are: a check writes nothing (run as another user, it would leave a key
    // the service cannot read), so a generated pair is read as files, not made again, and only
    // once a start made it.
    let (cert_key, as_files, made) = match &settings.cert {
        files @ crate::config::CertSource::Files { .. } => ("tls.cert", files.clone(), true),
        crate::config::CertSource::Generated { dir, names } => {
            let (cert, key) = (dir.join("sagw-cert.pem"), dir.join("sagw-key.pem"));
            let made = cert.exists() && key.exists();
            if tls_listener && made && !crate::tls::generated_names_match(dir, names) {
                lines.push(format!(
                    "TLS certificate: the generated one in {} is not for tls.subject_names: the next start or reload makes it again (a new key and fingerprint)",
                    dir.display()
                ));
            }
            (
                "tls.generated_dir",
                crate::config::CertSource::Files { cert, key },
                made,
            )
        }
    };
    if tls_listener && made {
        let fail = |e: &dyn std::fmt::Display| CheckError {
            key: cert_key,
            why: e.to_string(),
        };
        let id = crate::tls::load_identity(&as_files).map_err(|e| fail(&e))?;
        crate::tls::server_config(&id, peers.as_ref()).map_err(|e| fail(&e))?;
        lines.push(format!(
            "TLS certificate: {} (sha256 {}), with its key",
            id.info.cert_path.display(),
            id.info.fingerprint
        ));
    }
    crate::tls_client::OutboundTls::load(&settings.hops.outbound_tls).map_err(|e| CheckError {
        key: "tls.next_hop_ca",
        why: e.to_string(),
    })?;
    Ok(lines)
}

/// `auth.nonce_key`, the Digest nonce key of a gateway alone.
pub fn nonce_key(a: &AuthSettings) -> Result<String, CheckError> {
    secret_file("auth.nonce_key", &a.nonce_key, "digest nonce key")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_settings(text: &str) -> StateSettings {
        crate::config::Config::parse(text)
            .expect("parse")
            .validate()
            .expect("valid")
            .state
    }

    #[test]
    fn domain_names_the_library_it_cannot_load() {
        let auth = |domain: &str| {
            crate::config::Config::parse(&format!("[auth]\nschemes = [\"ntlm\"]\n{domain}"))
                .expect("parse")
                .validate()
                .expect("valid")
                .auth
                .expect("auth on")
        };
        let off = domain(&auth("")).expect("no domain, nothing to check");
        assert!(off[0].contains("credentials file only"), "{off:?}");
        let err = domain(&auth(
            "[auth.domain]\nntlm = \"winbind\"\nlibrary = \"/nonexistent/libwbclient.so.0\"\n",
        ))
        .expect_err("no such library");
        assert_eq!(err.key, "auth.domain.library");
    }

    #[test]
    fn state_reports_the_backend_and_checks_an_existing_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("pool.key");
        let text = format!(
            "[state]\nkey_file = \"{}\"\nsnapshot = \"{}\"\n",
            key.display(),
            dir.path().join("snap").display()
        );
        let lines = state(&state_settings(&text)).expect("fine");
        assert!(lines[0].starts_with("state: memory"), "{lines:?}");
        assert!(lines[1].contains("does not exist yet"), "{lines:?}");
        assert!(!key.exists(), "check-config creates nothing");

        std::fs::write(&key, [7u8; 31]).expect("short key");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        }
        let err = state(&state_settings(&text)).expect_err("a 31-byte key");
        assert_eq!(err.key, "state.key_file");
        assert!(err.to_string().contains("32 bytes"), "{err}");
    }

    #[test]
    fn redis_urls_are_shown_without_their_password() {
        let s = state_settings(
            "[state]\nbackend = \"redis\"\nredis = [\"redis://:hunter2@127.0.0.1:6390\"]\n",
        );
        let lines = state(&s).expect("fine");
        assert!(lines[0].contains("127.0.0.1:6390"), "{lines:?}");
        assert!(!lines.join("\n").contains("hunter2"));
    }
}
