//! TLS towards the servers behind the gateway: the client certificate presented to them (mutual
//! TLS, as Microsoft pools require of their edge), the CA each is verified against, and the DNS
//! name each is verified by (and sent as SNI).
//!
//! Why by name: a pool's front-end servers have certificates for their names, not their
//! addresses, and an address says nothing about who holds it. The name is the one the next hop
//! was configured or found under (the SRV target, the Route's host); a hop configured by address
//! is verified against that address, unless `[[tls.next_hop]] server_name` names it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

use crate::tls::TlsError;

fn file_err(path: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

/// A client certificate chain and its key, as files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertFiles {
    /// PEM chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// Settings for one next hop (`[[tls.next_hop]]`), matched by the host name (or address) the
/// connection is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerTls {
    /// The host name (or IP address) this applies to, lower-case.
    pub host: String,
    /// CA bundle to verify it against (default: `tls.next_hop_ca`).
    pub ca: Option<PathBuf>,
    /// Client certificate for it (default: `tls.client_cert`/`client_key`).
    pub client: Option<ClientCertFiles>,
    /// The name to verify and send as SNI instead of `host`.
    pub server_name: Option<String>,
}

/// Everything `[tls]` says about connections the gateway opens.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboundTlsSettings {
    /// Default CA bundle (`tls.next_hop_ca`).
    pub ca: Option<PathBuf>,
    /// Default client certificate (`tls.client_cert`, `tls.client_key`).
    pub client: Option<ClientCertFiles>,
    /// Per-hop settings.
    pub peers: Vec<PeerTls>,
}

struct PeerConfig {
    config: Arc<ClientConfig>,
    server_name: Option<String>,
}

/// The rustls client configurations, built once at start.
#[derive(Default)]
pub struct OutboundTls {
    default: Option<Arc<ClientConfig>>,
    peers: HashMap<String, PeerConfig>,
}

impl std::fmt::Debug for OutboundTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundTls")
            .field("default", &self.default.is_some())
            .field("peers", &self.peers.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn roots(ca: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| file_err(ca, e))? {
        let cert = cert.map_err(|e| file_err(ca, e))?;
        roots.add(cert).map_err(|e| file_err(ca, e))?;
    }
    if roots.is_empty() {
        return Err(file_err(ca, "no CA certificate in file"));
    }
    Ok(roots)
}

/// A client configuration trusting `ca`, presenting `client` when given.
pub fn client_config(
    ca: &Path,
    client: Option<&ClientCertFiles>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_root_certificates(roots(ca)?);
    let cfg = match client {
        None => builder.with_no_client_auth(),
        Some(c) => {
            let chain = CertificateDer::pem_file_iter(&c.cert)
                .map_err(|e| file_err(&c.cert, e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| file_err(&c.cert, e))?;
            if chain.is_empty() {
                return Err(file_err(&c.cert, "no certificate in file"));
            }
            let key = crate::tls::private_key(&c.key)?;
            builder.with_client_auth_cert(chain, key)?
        }
    };
    Ok(Arc::new(cfg))
}

impl OutboundTls {
    /// Load every configured CA and client certificate (errors name the file).
    pub fn load(s: &OutboundTlsSettings) -> Result<OutboundTls, TlsError> {
        let default = match &s.ca {
            Some(ca) => Some(client_config(ca, s.client.as_ref())?),
            None => None,
        };
        let mut peers = HashMap::new();
        for p in &s.peers {
            // Config::validate makes sure a peer has a CA of its own or the default one.
            let Some(ca) = p.ca.as_ref().or(s.ca.as_ref()) else {
                continue;
            };
            let client = p.client.as_ref().or(s.client.as_ref());
            peers.insert(
                p.host.clone(),
                PeerConfig {
                    config: client_config(ca, client)?,
                    server_name: p.server_name.clone(),
                },
            );
        }
        Ok(OutboundTls { default, peers })
    }

    /// True when TLS connections can be opened at all.
    pub fn enabled(&self) -> bool {
        self.default.is_some() || !self.peers.is_empty()
    }

    /// The configuration and the server name for a connection to `addr`, known as `name` (the
    /// configured or resolved host name, if any). `None`: no CA applies (no TLS possible).
    pub fn for_target(
        &self,
        name: Option<&str>,
        addr: SocketAddr,
    ) -> Option<(Arc<ClientConfig>, ServerName<'static>)> {
        let ip = addr.ip().to_string();
        let peer = name
            .and_then(|n| self.peers.get(&n.to_ascii_lowercase()))
            .or_else(|| self.peers.get(&ip));
        let (config, verify) = match peer {
            Some(p) => (p.config.clone(), p.server_name.as_deref().or(name)),
            None => (self.default.clone()?, name),
        };
        let server = match verify {
            Some(n) => ServerName::try_from(n.to_owned()).ok()?,
            None => ServerName::IpAddress(addr.ip().into()),
        };
        Some((config, server))
    }
}
