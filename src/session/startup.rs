//! The first packets of a client connection: SSLRequest (answered 'S' and upgraded when TLS is
//! configured, else 'N'), GSSENCRequest (always 'N'), CancelRequest, and the StartupMessage.

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::ClientError;
use crate::config::ClientTlsMode;
use crate::net::{ClientTlsAcceptor, Stream};
use crate::protocol::startup::{self, CancelKey, StartupMessage, StartupPacket};

/// What a new connection turned out to be.
#[derive(Debug)]
pub enum Opening {
    /// A client that wants a session; `buf` holds any bytes it already sent after the startup packet.
    Session {
        stream: Stream,
        startup: StartupMessage,
        buf: BytesMut,
    },
    /// A one-shot cancel request.
    Cancel(CancelKey),
}

/// Reads startup packets until a StartupMessage or CancelRequest arrives, negotiating encryption.
pub async fn open(
    tcp: TcpStream,
    tls: Option<&ClientTlsAcceptor>,
    mode: ClientTlsMode,
) -> Result<Opening, ClientError> {
    let mut stream = Stream::plain(tcp);
    let mut buf = BytesMut::with_capacity(256);
    loop {
        let packet = loop {
            if let Some(packet) =
                startup::decode_startup(&mut buf).map_err(ClientError::Protocol)?
            {
                break packet;
            }
            if stream.read_buf(&mut buf).await.map_err(ClientError::Io)? == 0 {
                return Err(ClientError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
        };
        match packet {
            StartupPacket::Cancel(key) => return Ok(Opening::Cancel(key)),
            StartupPacket::GssEncRequest => {
                stream.write_all(b"N").await.map_err(ClientError::Io)?;
            }
            StartupPacket::SslRequest => {
                if stream.is_tls() {
                    return Err(ClientError::UnexpectedMessage {
                        tag: b'?',
                        phase: "SSLRequest inside TLS",
                    });
                }
                // Bytes sent after SSLRequest but before the handshake would bypass encryption.
                if !buf.is_empty() {
                    return Err(ClientError::UnexpectedMessage {
                        tag: b'?',
                        phase: "data after SSLRequest",
                    });
                }
                let offer = matches!(mode, ClientTlsMode::Prefer | ClientTlsMode::Require);
                stream = match (tls, stream.into_plain()) {
                    (Some(acceptor), Ok(mut tcp)) if offer => {
                        tcp.write_all(b"S").await.map_err(ClientError::Io)?;
                        acceptor.accept(tcp).await.map_err(ClientError::Tls)?
                    }
                    (_, Ok(tcp)) => {
                        let mut plain = Stream::plain(tcp);
                        plain.write_all(b"N").await.map_err(ClientError::Io)?;
                        plain
                    }
                    (_, Err(other)) => other,
                };
            }
            StartupPacket::Startup(startup) => {
                if mode == ClientTlsMode::Require && !stream.is_tls() {
                    let error = ClientError::TlsRequired;
                    super::task::report(&mut stream, &error).await;
                    return Err(error);
                }
                return Ok(Opening::Session {
                    stream,
                    startup,
                    buf,
                });
            }
        }
    }
}
