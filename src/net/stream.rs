//! `Stream`: one socket that is either plain TCP or TLS (as a server towards clients, or as a client
//! towards Postgres), so the layers above read and write without caring which.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A connection that may have been upgraded to TLS after an SSLRequest.
#[derive(Debug)]
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS where we are the TLS server (a client connected to us).
    TlsAccepted(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// TLS where we are the TLS client (our connection to a Postgres server).
    TlsConnected(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Stream {
    /// Whether the bytes on this stream are encrypted.
    pub fn is_tls(&self) -> bool {
        !matches!(self, Stream::Plain(_))
    }

    /// The underlying TCP socket (for addresses and socket options).
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::TlsAccepted(s) => s.get_ref().0,
            Stream::TlsConnected(s) => s.get_ref().0,
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::TlsAccepted(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::TlsConnected(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::TlsAccepted(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::TlsConnected(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::TlsAccepted(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            Stream::TlsConnected(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::TlsAccepted(s) => s.is_write_vectored(),
            Stream::TlsConnected(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::TlsAccepted(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::TlsConnected(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::TlsAccepted(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::TlsConnected(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
