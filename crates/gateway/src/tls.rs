//! TLS setup: the server certificate (operator files, or an ECDSA P-256 certificate generated at
//! first start and kept on disk), rustls configs with the `ring` provider, TLS 1.2 and 1.3.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

use crate::config::CertSource;

/// TLS setup failures.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Reading or writing a PEM file failed.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// A private key file other users may read or write: whoever reads it can pose as the
    /// gateway (the listener's key) or as the gateway towards the servers behind it (the client
    /// key). Its group may read it (0640: Debian's `ssl-cert` group).
    #[error(
        "{path}: private key file has mode {mode:o}, which lets other users read or write it; chmod 600 it (or 640, with a group the gateway's user is in)"
    )]
    KeyExposed {
        /// The key file.
        path: PathBuf,
        /// Its permission bits (octal in the message).
        mode: u32,
    },
    /// Generating the certificate failed.
    #[error("certificate generation: {0}")]
    Generate(String),
    /// rustls refused the configuration.
    #[error("tls configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

fn file_err(path: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

/// The certificate in use, for the start-up log.
#[derive(Debug, Clone)]
pub struct CertInfo {
    /// Where the certificate lives.
    pub cert_path: PathBuf,
    /// SHA-256 fingerprint of the leaf, `AA:BB:...`.
    pub fingerprint: String,
    /// True when generated at this start.
    pub generated_now: bool,
}

/// Loaded certificate and key.
pub struct Identity {
    /// Chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// Private key.
    pub key: PrivateKeyDer<'static>,
    /// Description.
    pub info: CertInfo,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("info", &self.info)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// SHA-256 fingerprint, colon-separated upper-case hex.
pub fn fingerprint(der: &[u8]) -> String {
    let digits = sagw_hex::encode_upper(Sha256::digest(der));
    let mut s = String::with_capacity(95);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && i % 2 == 0 {
            s.push(':');
        }
        s.push(c);
    }
    s
}

fn load_pem(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file_err(cert, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(cert, e))?;
    if chain.is_empty() {
        return Err(file_err(cert, "no certificate in file"));
    }
    let key_der = private_key(key)?;
    Ok((chain, key_der))
}

/// Reads a PEM private key, refusing a file other users have any permission on
/// ([`TlsError::KeyExposed`]): the listener's key and the client key presented to next hops.
pub(crate) fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let meta = std::fs::metadata(path).map_err(|e| file_err(path, e))?;
    if let Some(mode) = crate::file_mode::exposed(&meta, crate::file_mode::OTHER) {
        return Err(TlsError::KeyExposed {
            path: path.to_owned(),
            mode,
        });
    }
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_err(path, e))
}

/// Load the configured certificate, or the generated one (creating it on first start).
pub fn load_identity(source: &CertSource) -> Result<Identity, TlsError> {
    let (cert_path, key_path, generated_now) = match source {
        CertSource::Files { cert, key } => (cert.clone(), key.clone(), false),
        CertSource::Generated { dir, names } => {
            let cert = dir.join("sagw-cert.pem");
            let key = dir.join("sagw-key.pem");
            // Made again when its names are not the ones configured now: a name added to
            // `tls.subject_names` was reported applied by a reload while the old certificate,
            // without it, stayed for good.
            let fresh = if key.exists() && generated_names_match(dir, names) {
                false
            } else {
                generate(dir, &cert, &key, names)?;
                true
            };
            (cert, key, fresh)
        }
    };
    let (chain, key) = load_pem(&cert_path, &key_path)?;
    let fingerprint = chain
        .first()
        .map(|c| fingerprint(c.as_ref()))
        .unwrap_or_default();
    Ok(Identity {
        chain,
        key,
        info: CertInfo {
            cert_path,
            fingerprint,
            generated_now,
        },
    })
}

/// Whether the generated certificate in `dir` is there and names exactly `names`.
pub(crate) fn generated_names_match(dir: &Path, names: &[String]) -> bool {
    names_of(&dir.join("sagw-cert.pem")).as_ref() == Some(&name_set(names))
}

/// The names a generated certificate is made for, as its subject alternative names read: DNS
/// names lower case, IP addresses in their canonical text.
fn name_set(names: &[String]) -> std::collections::BTreeSet<String> {
    names
        .iter()
        .map(|n| match n.parse::<std::net::IpAddr>() {
            Ok(ip) => ip.to_string(),
            Err(_) => n.to_ascii_lowercase(),
        })
        .collect()
}

/// The subject alternative names of the certificate in `cert` (PEM), as [`name_set`] writes
/// them; `None` when it does not read.
fn names_of(cert: &Path) -> Option<std::collections::BTreeSet<String>> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let der = CertificateDer::from_pem_file(cert).ok()?;
    let (_, parsed) = X509Certificate::from_der(der.as_ref()).ok()?;
    let san = parsed.subject_alternative_name().ok()??;
    san.value
        .general_names
        .iter()
        .map(|g| match g {
            GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
            GeneralName::IPAddress(b) => match b.len() {
                4 => <[u8; 4]>::try_from(*b)
                    .ok()
                    .map(|a| std::net::IpAddr::from(a).to_string()),
                16 => <[u8; 16]>::try_from(*b)
                    .ok()
                    .map(|a| std::net::IpAddr::from(a).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

fn generate(dir: &Path, cert: &Path, key: &Path, names: &[String]) -> Result<(), TlsError> {
    std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    let mut params = rcgen::CertificateParams::new(names.to_vec())
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        names.first().cloned().unwrap_or_else(|| "sagw".into()),
    );
    let c = params
        .self_signed(&pair)
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    write_private(key, pair.serialize_pem().as_bytes())?;
    std::fs::write(cert, c.pem()).map_err(|e| file_err(cert, e))?;
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| file_err(path, e))?;
    // A file that was there already keeps its mode through `open`: set it.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| file_err(path, e))?;
    }
    f.write_all(bytes).map_err(|e| file_err(path, e))
}

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Server config: TLS 1.3 and 1.2; with `peers` (`tls.peer_ca`), a client certificate is asked
/// for but never required (see [`crate::peer_trust`]), else none is asked for.
pub fn server_config(
    id: &Identity,
    peers: Option<&crate::peer_trust::PeerTrust>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match peers {
        Some(p) => builder.with_client_cert_verifier(p.request_verifier()),
        None => builder.with_no_client_auth(),
    };
    let cfg = builder.with_single_cert(id.chain.clone(), id.key.clone_key())?;
    Ok(Arc::new(cfg))
}

/// Client config for TLS next hops, trusting the CAs in `ca` (PEM).
pub fn client_config(ca: &Path) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| file_err(ca, e))? {
        let cert = cert.map_err(|e| file_err(ca, e))?;
        roots.add(cert).map_err(|e| file_err(ca, e))?;
    }
    let cfg = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_then_reused() {
        let dir = std::env::temp_dir().join(format!("sagw-tls-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let src = CertSource::Generated {
            dir: dir.clone(),
            names: vec!["localhost".into(), "127.0.0.1".into()],
        };
        let a = load_identity(&src).unwrap();
        assert!(a.info.generated_now);
        // The key it wrote passes its own check: no permission for group or others.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("sagw-key.pem"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(a.info.fingerprint.len(), 95);
        let b = load_identity(&src).unwrap();
        assert!(!b.info.generated_now);
        assert_eq!(a.info.fingerprint, b.info.fingerprint);
        server_config(&b, None).unwrap();
        client_config(&b.info.cert_path).unwrap();
        // A name added: made again, for the new names; then reused again.
        let more = CertSource::Generated {
            dir: dir.clone(),
            names: vec![
                "localhost".into(),
                "127.0.0.1".into(),
                "sip.example.com".into(),
            ],
        };
        let c = load_identity(&more).unwrap();
        assert!(c.info.generated_now);
        assert_ne!(c.info.fingerprint, a.info.fingerprint);
        assert_eq!(
            names_of(&c.info.cert_path),
            Some(name_set(&[
                "SIP.example.com".into(),
                "localhost".into(),
                "127.0.0.1".into()
            ]))
        );
        assert!(!load_identity(&more).unwrap().info.generated_now);
        assert!(!format!("{b:?}").contains("PRIVATE"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn fingerprint_is_colon_separated_upper_case_sha256() {
        assert_eq!(
            fingerprint(b""),
            "E3:B0:C4:42:98:FC:1C:14:9A:FB:F4:C8:99:6F:B9:24:\
             27:AE:41:E4:64:9B:93:4C:A4:95:99:1B:78:52:B8:55"
        );
    }
}
