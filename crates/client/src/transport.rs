//! Connections to the edge over UDP, TCP and TLS (rustls), carrying whole SIP messages.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use sagw_sip::{Frame, Limits, Message, StreamFramer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Which transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum TransportKind {
    Udp,
    Tcp,
    Tls,
}

impl TransportKind {
    /// The Via token.
    pub fn via(self) -> &'static str {
        match self {
            TransportKind::Udp => "UDP",
            TransportKind::Tcp => "TCP",
            TransportKind::Tls => "TLS",
        }
    }
}

/// Transport errors.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("connect to {addr}: {source}")]
    Connect { addr: SocketAddr, source: io::Error },
    #[error("TLS handshake with {addr}: {source}")]
    Tls { addr: SocketAddr, source: io::Error },
    #[error("TLS configuration: {0}")]
    TlsConfig(String),
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
    #[error("the server closed the connection")]
    Closed,
    #[error("unparsable message from the server: {0}")]
    Parse(String),
}

/// How to check the server's certificate.
#[derive(Debug, Clone)]
pub enum TlsTrust {
    /// Trust only the certificates (CAs or the server's own) in this PEM file.
    Pem(std::path::PathBuf),
    /// Accept any certificate: for a lab gateway with a self-signed certificate only.
    Insecure,
}

/// TLS options.
#[derive(Debug, Clone)]
pub struct TlsOptions {
    pub trust: TlsTrust,
    /// Name to check the certificate against (SNI); an IP address works too.
    pub server_name: String,
}

/// A client TLS configuration for these options.
pub fn tls_connector(opts: &TlsOptions) -> Result<TlsConnector, TransportError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TransportError::TlsConfig(e.to_string()))?;
    let config = match &opts.trust {
        TlsTrust::Pem(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in load_certs(path)? {
                roots
                    .add(cert)
                    .map_err(|e| TransportError::TlsConfig(format!("{}: {e}", path.display())))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        TlsTrust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
            .with_no_client_auth(),
    };
    Ok(TlsConnector::from(Arc::new(config)))
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| TransportError::TlsConfig(format!("{}: {e}", path.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| TransportError::TlsConfig(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TransportError::TlsConfig(format!(
            "{}: no certificate in the file",
            path.display()
        )));
    }
    Ok(certs)
}

/// `--insecure`: checks the handshake signatures (so the connection is still to whoever holds the
/// key) but not who the certificate names.
#[derive(Debug)]
struct AcceptAnyCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

enum Inner {
    Udp(UdpSocket),
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// One connection (or, for UDP, one connected socket).
pub struct Connection {
    inner: Inner,
    kind: TransportKind,
    local: SocketAddr,
    peer: SocketAddr,
    framer: StreamFramer,
    read_buf: Vec<u8>,
    write_buf: Vec<u8>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("kind", &self.kind)
            .field("local", &self.local)
            .field("peer", &self.peer)
            .finish()
    }
}

impl Connection {
    /// Connects; `tls` is required for [`TransportKind::Tls`].
    pub async fn connect(
        peer: SocketAddr,
        kind: TransportKind,
        tls: Option<(&TlsConnector, &str)>,
    ) -> Result<Self, TransportError> {
        Self::connect_from(None, peer, kind, tls).await
    }

    /// [`connect`](Self::connect) from the address `source` (any port) instead of one the system
    /// picks: e.g. 127.0.0.2, to be another host on loopback.
    pub async fn connect_from(
        source: Option<std::net::IpAddr>,
        peer: SocketAddr,
        kind: TransportKind,
        tls: Option<(&TlsConnector, &str)>,
    ) -> Result<Self, TransportError> {
        let connect_err = |source| TransportError::Connect { addr: peer, source };
        let (inner, local) = match kind {
            TransportKind::Udp => {
                let bind: SocketAddr = if peer.is_ipv4() {
                    ([127, 0, 0, 1], 0).into()
                } else {
                    (std::net::Ipv6Addr::LOCALHOST, 0).into()
                };
                let bind = if let Some(ip) = source {
                    SocketAddr::new(ip, 0)
                } else if peer.ip().is_loopback() {
                    bind
                } else if peer.is_ipv4() {
                    ([0, 0, 0, 0], 0).into()
                } else {
                    (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                };
                let s = UdpSocket::bind(bind).await.map_err(connect_err)?;
                s.connect(peer).await.map_err(connect_err)?;
                let local = s.local_addr()?;
                (Inner::Udp(s), local)
            }
            TransportKind::Tcp | TransportKind::Tls => {
                let s = match source {
                    None => TcpStream::connect(peer).await.map_err(connect_err)?,
                    Some(ip) => {
                        let socket = if ip.is_ipv4() {
                            tokio::net::TcpSocket::new_v4()
                        } else {
                            tokio::net::TcpSocket::new_v6()
                        }
                        .map_err(connect_err)?;
                        socket.bind(SocketAddr::new(ip, 0)).map_err(connect_err)?;
                        socket.connect(peer).await.map_err(connect_err)?
                    }
                };
                s.set_nodelay(true)?;
                let local = s.local_addr()?;
                if kind == TransportKind::Tcp {
                    (Inner::Tcp(s), local)
                } else {
                    let (connector, name) = tls.ok_or_else(|| {
                        TransportError::TlsConfig("TLS transport without TLS options".into())
                    })?;
                    let name = ServerName::try_from(name.to_owned())
                        .map_err(|e| TransportError::TlsConfig(format!("server name: {e}")))?;
                    let t = connector
                        .connect(name, s)
                        .await
                        .map_err(|source| TransportError::Tls { addr: peer, source })?;
                    (Inner::Tls(Box::new(t)), local)
                }
            }
        };
        Ok(Connection {
            inner,
            kind,
            local,
            peer,
            framer: StreamFramer::new(Limits::default()),
            read_buf: vec![0u8; 65_536],
            write_buf: Vec::with_capacity(2048),
        })
    }

    pub fn kind(&self) -> TransportKind {
        self.kind
    }
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// Sends one message.
    pub async fn send(&mut self, msg: &Message) -> Result<(), TransportError> {
        self.write_buf.clear();
        msg.write_to(&mut self.write_buf);
        match &mut self.inner {
            Inner::Udp(s) => {
                s.send(&self.write_buf).await?;
            }
            Inner::Tcp(s) => s.write_all(&self.write_buf).await?,
            Inner::Tls(s) => {
                s.write_all(&self.write_buf).await?;
                s.flush().await?;
            }
        }
        Ok(())
    }

    /// Receives the next message (keep-alives are skipped; an unparsable datagram is an error).
    pub async fn recv(&mut self) -> Result<Message, TransportError> {
        loop {
            if let Inner::Udp(s) = &mut self.inner {
                let n = s.recv(&mut self.read_buf).await?;
                let Some(bytes) = self.read_buf.get(..n) else {
                    continue;
                };
                if bytes.iter().all(|b| b.is_ascii_whitespace()) {
                    continue;
                }
                return Message::parse(bytes).map_err(|e| TransportError::Parse(e.to_string()));
            }
            match self.framer.next_frame() {
                Ok(Some(Frame::Message(m))) => return Ok(m),
                Ok(Some(_)) => continue,
                Ok(None) => {}
                Err(e) => return Err(TransportError::Parse(e.to_string())),
            }
            let n = match &mut self.inner {
                Inner::Tcp(s) => s.read(&mut self.read_buf).await?,
                Inner::Tls(s) => s.read(&mut self.read_buf).await?,
                Inner::Udp(_) => 0,
            };
            if n == 0 {
                return Err(TransportError::Closed);
            }
            if let Some(bytes) = self.read_buf.get(..n) {
                self.framer.push(bytes);
            }
        }
    }
}
