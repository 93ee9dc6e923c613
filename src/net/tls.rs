//! TLS setup with rustls (aws-lc-rs provider): the acceptor for clients that send SSLRequest, and the
//! connector for our connections to servers in the `disable`/`prefer`/`require`/`verify-full` modes.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::stream::Tcp;
use super::{NetError, Stream};
use crate::config::{ServerTls, ServerTlsMode};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, NetError> {
    let err = |reason: String| NetError::TlsFile {
        path: path.display().to_string(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no certificate found".into()));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, NetError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| NetError::TlsFile {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// Accepts TLS from clients. Holds our certificate so SCRAM channel binding can hash it.
#[derive(Clone)]
pub struct ClientTlsAcceptor {
    acceptor: TlsAcceptor,
    cert_der: Arc<[u8]>,
}

impl std::fmt::Debug for ClientTlsAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientTlsAcceptor")
    }
}

impl ClientTlsAcceptor {
    /// Loads a PEM certificate chain and private key.
    pub fn from_files(cert_file: &Path, key_file: &Path) -> Result<Self, NetError> {
        let certs = load_certs(cert_file)?;
        let key = load_key(key_file)?;
        let cert_der: Arc<[u8]> = Arc::from(certs[0].as_ref());
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| NetError::TlsConfig(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| NetError::TlsConfig(e.to_string()))?;
        Ok(ClientTlsAcceptor {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            cert_der,
        })
    }

    /// DER of our leaf certificate (for `tls-server-end-point` channel binding).
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// Runs the TLS handshake on a client socket that sent SSLRequest and got 'S'.
    pub async fn accept(&self, tcp: TcpStream) -> Result<Stream, NetError> {
        let tls = self
            .acceptor
            .accept(Tcp::new(tcp))
            .await
            .map_err(NetError::TlsHandshake)?;
        Ok(Stream::TlsAccepted(Box::new(tls)))
    }
}

/// Connects to servers with TLS according to the configured mode.
#[derive(Clone)]
pub struct ServerTlsConnector {
    mode: ServerTlsMode,
    connector: Option<TlsConnector>,
}

impl std::fmt::Debug for ServerTlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServerTlsConnector({:?})", self.mode)
    }
}

impl ServerTlsConnector {
    /// Builds the connector: `verify-full` checks the chain against `ca_file` and the host name;
    /// `prefer` and `require` encrypt without verifying, as libpq does in those modes.
    pub fn new(cfg: &ServerTls) -> Result<Self, NetError> {
        let connector = match cfg.mode {
            ServerTlsMode::Disable => None,
            ServerTlsMode::Prefer | ServerTlsMode::Require => {
                let verifier = Arc::new(AcceptAnyCert(provider()));
                let builder = rustls::ClientConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| NetError::TlsConfig(e.to_string()))?
                    .dangerous()
                    .with_custom_certificate_verifier(verifier);
                Some(finish_client_config(builder, cfg)?)
            }
            ServerTlsMode::VerifyFull => {
                let ca = cfg.ca_file.as_deref().ok_or_else(|| {
                    NetError::TlsConfig("server_tls.ca_file is required for verify-full".into())
                })?;
                let mut roots = rustls::RootCertStore::empty();
                for cert in load_certs(ca)? {
                    roots
                        .add(cert)
                        .map_err(|e| NetError::TlsConfig(e.to_string()))?;
                }
                let builder = rustls::ClientConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| NetError::TlsConfig(e.to_string()))?
                    .with_root_certificates(roots);
                Some(finish_client_config(builder, cfg)?)
            }
        };
        Ok(ServerTlsConnector {
            mode: cfg.mode,
            connector,
        })
    }

    /// The configured mode.
    pub fn mode(&self) -> &ServerTlsMode {
        &self.mode
    }

    /// Runs the TLS handshake on a server socket whose SSLRequest was answered 'S'.
    pub async fn connect(&self, tcp: TcpStream, host: &str) -> Result<Stream, NetError> {
        let Some(connector) = &self.connector else {
            return Ok(Stream::plain(tcp));
        };
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| NetError::InvalidServerName(host.to_string()))?;
        let tls = connector
            .connect(name, Tcp::new(tcp))
            .await
            .map_err(NetError::TlsHandshake)?;
        Ok(Stream::TlsConnected(Box::new(tls)))
    }
}

fn finish_client_config(
    builder: rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert>,
    cfg: &ServerTls,
) -> Result<TlsConnector, NetError> {
    let config = match (&cfg.cert_file, &cfg.key_file) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .map_err(|e| NetError::TlsConfig(e.to_string()))?,
        _ => builder.with_no_client_auth(),
    };
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Encrypts without authenticating the server (libpq's `sslmode=require`); signatures are still checked
/// so the handshake itself is sound.
#[derive(Debug)]
struct AcceptAnyCert(Arc<CryptoProvider>);

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
