//! `Stream`: one socket that is either plain TCP or TLS (as a server towards clients, or as a client
//! towards Postgres), so the layers above read and write without caring which. The TCP socket can be
//! moved to another worker's reactor ([`Stream::rebind`]) when a pooled server connection is used by
//! a client on a different worker thread.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A TCP socket that can be re-registered with the reactor of the runtime it is used on.
#[derive(Debug)]
pub struct Tcp(Option<TcpStream>);

impl Tcp {
    pub fn new(stream: TcpStream) -> Tcp {
        Tcp(Some(stream))
    }

    fn get(&mut self) -> io::Result<&mut TcpStream> {
        self.0
            .as_mut()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "socket lost in rebind"))
    }

    /// Moves the socket to the current runtime's reactor. Must run inside that runtime.
    fn rebind(&mut self) -> io::Result<()> {
        let Some(stream) = self.0.take() else {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "socket lost in rebind",
            ));
        };
        let std = stream.into_std()?;
        self.0 = Some(TcpStream::from_std(std)?);
        Ok(())
    }
}

fn pending_or<T>(
    result: io::Result<&mut TcpStream>,
    f: impl FnOnce(Pin<&mut TcpStream>) -> Poll<io::Result<T>>,
) -> Poll<io::Result<T>> {
    match result {
        Ok(stream) => f(Pin::new(stream)),
        Err(e) => Poll::Ready(Err(e)),
    }
}

impl AsyncRead for Tcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        pending_or(self.get_mut().get(), |s| s.poll_read(cx, buf))
    }
}

impl AsyncWrite for Tcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        pending_or(self.get_mut().get(), |s| s.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        pending_or(self.get_mut().get(), |s| s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        pending_or(self.get_mut().get(), |s| s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        pending_or(self.get_mut().get(), |s| s.poll_shutdown(cx))
    }
}

/// A connection that may have been upgraded to TLS after an SSLRequest.
#[derive(Debug)]
pub enum Stream {
    /// Plain TCP.
    Plain(Tcp),
    /// TLS where we are the TLS server (a client connected to us).
    TlsAccepted(Box<tokio_rustls::server::TlsStream<Tcp>>),
    /// TLS where we are the TLS client (our connection to a Postgres server).
    TlsConnected(Box<tokio_rustls::client::TlsStream<Tcp>>),
}

impl Stream {
    /// A plain TCP stream.
    pub fn plain(stream: TcpStream) -> Stream {
        Stream::Plain(Tcp::new(stream))
    }

    /// Whether the bytes on this stream are encrypted.
    pub fn is_tls(&self) -> bool {
        !matches!(self, Stream::Plain(_))
    }

    /// Takes the plain socket back (to start TLS on it); `None` if TLS is already on.
    pub fn into_plain(self) -> Result<TcpStream, Stream> {
        match self {
            Stream::Plain(Tcp(Some(tcp))) => Ok(tcp),
            other => Err(other),
        }
    }

    /// Waits until a plain socket has bytes (or EOF) to read, without a buffer, so an idle client
    /// holds no read memory. TLS streams return at once: their records must be read to know.
    pub async fn readable(&self) -> io::Result<()> {
        match self {
            Stream::Plain(Tcp(Some(tcp))) => tcp.readable().await,
            _ => Ok(()),
        }
    }

    /// [`Stream::readable`] as a poll: the waker goes into the socket's own reactor slot, so a
    /// task waiting this way keeps no future state for it.
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Stream::Plain(Tcp(Some(tcp))) => tcp.poll_read_ready(cx),
            _ => Poll::Ready(Ok(())),
        }
    }

    /// Re-registers the socket with the current runtime's reactor, so a connection opened on one
    /// worker thread is driven by the worker that uses it now. Must run inside that runtime.
    pub fn rebind(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(tcp) => tcp.rebind(),
            Stream::TlsAccepted(s) => s.get_mut().0.rebind(),
            Stream::TlsConnected(s) => s.get_mut().0.rebind(),
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
