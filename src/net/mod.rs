//! Network plumbing: TCP connect and socket options, streams that are plain or TLS, and TLS setup for
//! both sides (clients connecting to us, and us connecting to servers).

pub mod frames;
pub mod stream;
mod sys;
pub mod tls;

use std::io;
use std::time::Duration;

use tokio::net::TcpStream;

pub use frames::{read_frame, FrameReadError};
pub use stream::{ReadState, Stream};
pub use tls::{ClientTlsAcceptor, ServerTlsConnector};

/// Which runtime's reactor a socket is registered with: one per worker thread, plus the main
/// runtime (accept loops, housekeeping). A socket used on another worker is re-registered first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WorkerId(pub usize);

impl WorkerId {
    /// The main runtime (not a session worker).
    pub const MAIN: WorkerId = WorkerId(usize::MAX);
}

/// Errors of the network layer, named by what failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("connecting to {addr} timed out after {timeout:?}")]
    ConnectTimeout { addr: String, timeout: Duration },
    #[error("connecting to {addr} failed: {source}")]
    Connect { addr: String, source: io::Error },
    #[error("cannot read TLS file {path}: {reason}")]
    TlsFile { path: String, reason: String },
    #[error("invalid TLS configuration: {0}")]
    TlsConfig(String),
    #[error("TLS handshake failed: {0}")]
    TlsHandshake(io::Error),
    #[error("invalid server name for TLS verification: {0}")]
    InvalidServerName(String),
}

/// Sets the options every proxied socket wants: no Nagle delay (the protocol is request/response and we
/// batch writes ourselves) and TCP keepalive so dead peers are found even when idle.
pub fn tune_socket(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    let sock = socket2::SockRef::from(stream);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(10));
    let _ = sock.set_tcp_keepalive(&keepalive);
}

/// Opens a TCP connection to `host:port` within `timeout`, trying each resolved address in turn.
pub async fn connect(host: &str, port: u16, timeout: Duration) -> Result<TcpStream, NetError> {
    let addr = format!("{host}:{port}");
    let attempt = TcpStream::connect((host, port));
    match tokio::time::timeout(timeout, attempt).await {
        Err(_) => Err(NetError::ConnectTimeout { addr, timeout }),
        Ok(Err(source)) => Err(NetError::Connect { addr, source }),
        Ok(Ok(stream)) => {
            tune_socket(&stream);
            Ok(stream)
        }
    }
}
