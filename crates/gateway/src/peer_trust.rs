//! Inbound mutual TLS: servers trusted by their certificate instead of their address.
//!
//! With `tls.peer_ca` set, every TLS listener asks the client for a certificate, without requiring
//! one. A connection whose certificate chains to `tls.peer_ca` (and is valid now, for client
//! authentication) and names one of `proxy.trusted_peer_names` in a DNS subject alternative name
//! is a trusted peer, with the powers a `proxy.trusted_peers` address has: the driver tells the
//! proxy so when the connection is established (`Edge::trust_flow`).
//!
//! Why the chain is judged after the handshake and not in it: a certificate that does not verify
//! (another CA, expired) must not cost the client its connection. A phone with a device
//! certificate from another PKI, or a softphone that answers the request with whatever it has, is
//! still a client that may sign in. So the handshake accepts any chain (the client still proves
//! it holds the leaf's key: its CertificateVerify signature is checked as usual) and [`PeerTrust::judge`]
//! decides, with rustls' own WebPKI verifier, whether the connection is a trusted peer's. Only a
//! listed name counts, compared exactly (no wildcards: a `*.pool.example.com` certificate issued
//! to a web server must not make it a SIP peer) and only in DNS SANs (the subject CN is not a
//! name, RFC 6125).

use std::path::Path;
use std::sync::Arc;

use rustls::DistinguishedName;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, UnixTime};

use crate::tls::TlsError;

/// What a connection's client certificate makes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerVerdict {
    /// No certificate: a client.
    NoCertificate,
    /// A certificate that does not make a trusted peer: a client.
    Untrusted(Refusal),
    /// A trusted peer, by this listed name.
    Trusted(String),
}

/// Why a presented certificate does not make a trusted peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// It does not verify against `tls.peer_ca` (another CA, expired, not for client use...).
    Chain(String),
    /// It verifies, but none of its DNS names is in `proxy.trusted_peer_names`.
    NameNotListed,
    /// More certificates than [`MAX_CHAIN`]: not looked at.
    ChainTooLong(usize),
}

/// The most certificates a peer's chain may have: its own, and up to four intermediates (real
/// chains have one or two). Any client may send a chain, and the verifier explores the paths
/// through its intermediates: ten that name each other cost it hundreds of milliseconds, on the
/// core thread when a connection is adopted.
pub const MAX_CHAIN: usize = 5;

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Chain(why) => write!(f, "does not verify against tls.peer_ca: {why}"),
            Refusal::NameNotListed => f.write_str("names no host in proxy.trusted_peer_names"),
            Refusal::ChainTooLong(n) => {
                write!(
                    f,
                    "a chain of {n} certificates (at most {MAX_CHAIN} are read)"
                )
            }
        }
    }
}

/// The peer CA and the trusted names.
#[derive(Debug)]
pub struct PeerTrust {
    /// rustls' verifier over `tls.peer_ca`, client certificates optional.
    webpki: Arc<dyn ClientCertVerifier>,
    /// Lower case, without a trailing dot.
    names: Vec<String>,
}

impl PeerTrust {
    /// Loads the CA bundle (PEM) and takes the names (validated by the configuration).
    pub fn load(ca: &Path, names: &[String]) -> Result<PeerTrust, TlsError> {
        let file_err = |e: &dyn std::fmt::Display| TlsError::File {
            path: ca.to_owned(),
            message: e.to_string(),
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca).map_err(|e| file_err(&e))? {
            let cert = cert.map_err(|e| file_err(&e))?;
            roots.add(cert).map_err(|e| file_err(&e))?;
        }
        if roots.is_empty() {
            return Err(file_err(&"no CA certificate in file"));
        }
        let webpki =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), crate::tls::provider())
                .allow_unauthenticated()
                .build()
                .map_err(|e| file_err(&e))?;
        Ok(PeerTrust {
            webpki,
            names: names.iter().map(|n| normalise(n)).collect(),
        })
    }

    /// The verifier for the server configuration: asks for a certificate, hinting at the peer
    /// CA, never requires one, and leaves the chain to [`PeerTrust::judge`].
    pub fn request_verifier(&self) -> Arc<dyn ClientCertVerifier> {
        Arc::new(RequestCertificate {
            webpki: self.webpki.clone(),
        })
    }

    /// Judges the chain a handshake ended with (`peer_certificates()`, leaf first).
    pub fn judge(&self, chain: Option<&[CertificateDer<'_>]>) -> PeerVerdict {
        let Some((leaf, intermediates)) = chain.and_then(|c| c.split_first()) else {
            return PeerVerdict::NoCertificate;
        };
        if intermediates.len() >= MAX_CHAIN {
            return PeerVerdict::Untrusted(Refusal::ChainTooLong(intermediates.len() + 1));
        }
        if let Err(e) = self
            .webpki
            .verify_client_cert(leaf, intermediates, UnixTime::now())
        {
            return PeerVerdict::Untrusted(Refusal::Chain(e.to_string()));
        }
        match dns_names(leaf)
            .into_iter()
            .find(|n| self.names.iter().any(|listed| listed == n))
        {
            Some(name) => PeerVerdict::Trusted(name),
            None => PeerVerdict::Untrusted(Refusal::NameNotListed),
        }
    }
}

fn normalise(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// The DNS subject alternative names of a certificate, normalised; none when it does not parse
/// (it has then already failed verification).
fn dns_names(cert: &CertificateDer<'_>) -> Vec<String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let Ok((_, parsed)) = X509Certificate::from_der(cert.as_ref()) else {
        return Vec::new();
    };
    let Ok(Some(san)) = parsed.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|g| match g {
            GeneralName::DNSName(n) => Some(normalise(n)),
            _ => None,
        })
        .collect()
}

/// Asks for a client certificate (optional), checks the handshake signatures with the peer CA's
/// verifier, and accepts any chain: [`PeerTrust::judge`] decides what it is worth.
#[derive(Debug)]
struct RequestCertificate {
    webpki: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for RequestCertificate {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.webpki.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Judged after the handshake (see the module's documentation): a chain that does not
        // verify makes a client, not a failed connection.
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Ca {
        cert: rcgen::Certificate,
        issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    }

    fn ca(name: &str) -> Ca {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        let cert = p.self_signed(&key).unwrap();
        Ca {
            cert,
            issuer: rcgen::Issuer::new(p, key),
        }
    }

    fn leaf(ca: &Ca, names: &[&str]) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let p = rcgen::CertificateParams::new(
            names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
        )
        .unwrap();
        p.signed_by(&key, &ca.issuer).unwrap().der().clone()
    }

    fn trust(ca: &Ca, names: &[&str]) -> PeerTrust {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, ca.cert.pem()).unwrap();
        PeerTrust::load(
            &path,
            &names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
        )
        .unwrap()
    }

    #[test]
    fn a_listed_name_under_the_peer_ca_is_trusted_and_nothing_else() {
        let pool = ca("pool CA");
        let other = ca("other CA");
        let t = trust(&pool, &["FE1.pool.example.com."]);
        assert_eq!(t.judge(None), PeerVerdict::NoCertificate);
        assert_eq!(t.judge(Some(&[])), PeerVerdict::NoCertificate);
        assert_eq!(
            t.judge(Some(&[leaf(&pool, &["fe1.pool.example.com"])])),
            PeerVerdict::Trusted("fe1.pool.example.com".into())
        );
        assert_eq!(
            t.judge(Some(&[leaf(&pool, &["fe2.pool.example.com"])])),
            PeerVerdict::Untrusted(Refusal::NameNotListed)
        );
        assert_eq!(
            t.judge(Some(&[leaf(&pool, &["*.pool.example.com"])])),
            PeerVerdict::Untrusted(Refusal::NameNotListed),
            "a wildcard is not a listed name"
        );
        assert!(matches!(
            t.judge(Some(&[leaf(&other, &["fe1.pool.example.com"])])),
            PeerVerdict::Untrusted(Refusal::Chain(_))
        ));
        assert!(matches!(
            t.judge(Some(&[CertificateDer::from(vec![0x30, 0x03, 1, 2, 3])])),
            PeerVerdict::Untrusted(Refusal::Chain(_))
        ));
    }

    /// A chain of intermediates that name each other is not explored: the verifier's paths
    /// through them cost it hundreds of milliseconds a connection.
    #[test]
    fn a_chain_longer_than_the_limit_is_not_verified() {
        let pool = ca("pool CA");
        let t = trust(&pool, &["fe1.pool.example.com"]);
        let mut chain = vec![leaf(&pool, &["fe1.pool.example.com"])];
        for i in 0..MAX_CHAIN {
            chain.push(ca(&format!("loop CA {i}")).cert.der().clone());
        }
        assert_eq!(
            t.judge(Some(&chain)),
            PeerVerdict::Untrusted(Refusal::ChainTooLong(MAX_CHAIN + 1))
        );
        // The leaf with four intermediates beside it is still judged.
        chain.truncate(MAX_CHAIN);
        assert_eq!(
            t.judge(Some(&chain)),
            PeerVerdict::Trusted("fe1.pool.example.com".into())
        );
    }

    #[test]
    fn an_empty_ca_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "").unwrap();
        let e = PeerTrust::load(&path, &[]).unwrap_err().to_string();
        assert!(e.contains("no CA certificate"), "{e}");
    }
}
