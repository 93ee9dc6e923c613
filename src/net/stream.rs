//! `Stream`: one socket that is either plain TCP or TLS (as a server towards clients, or as a client
//! towards Postgres), so the layers above read and write without caring which. The TCP socket can be
//! moved to another worker's reactor ([`Stream::rebind`]) when a pooled server connection is used by
//! a client on a different worker thread.

use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
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
    /// Sends at once (a bare system call, see `net::sys`), without asking the reactor first: a
    /// socket is almost always writable, and the reactor's path (readiness check, budget, closure)
    /// costs more user time than the `send` itself. Only a full send buffer (`WouldBlock`) goes
    /// through tokio, which then registers the task to be woken when there is room.
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let tcp = match self.get_mut().get() {
            Ok(tcp) => tcp,
            Err(e) => return Poll::Ready(Err(e)),
        };
        match super::sys::send(tcp.as_raw_fd(), buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Pin::new(tcp).poll_write(cx, buf),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Pin::new(tcp).poll_write(cx, buf),
            done => Poll::Ready(done),
        }
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
    #[inline]
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

    /// Whether a read may find bytes: false only for a plain socket whose reactor readiness is
    /// cleared (nothing arrived since the last read drained it). A cheap check (one atomic load)
    /// for a task that polls several sockets at each wake-up and wants to skip the idle ones.
    #[inline]
    pub fn may_read(&self) -> bool {
        match self {
            Stream::Plain(Tcp(Some(tcp))) => tcp.try_io(Interest::READABLE, || Ok(())).is_ok(),
            _ => true,
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

    /// Reads what the socket has into `buf`'s spare capacity, like `tokio_util::io::poll_read_buf`
    /// (0 = end of stream), for a caller that polls several sockets at each wake-up of its task,
    /// as a relay does. On plain TCP, `state` (kept by the caller: [`ReadState::Unknown`] at
    /// first, and whenever its task may have changed) saves the reactor calls a plain read would
    /// make: a wake-up by one socket re-registers that socket only, not every socket polled, and a
    /// short read goes straight to registering instead of trying a read it knows is in vain.
    /// What must hold: the same task polls this stream's reads for as long as `state` is kept.
    pub fn poll_recv(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        state: &mut ReadState,
    ) -> Poll<io::Result<usize>> {
        let tcp = match self {
            Stream::Plain(Tcp(Some(tcp))) => &*tcp,
            other => {
                *state = ReadState::Unknown;
                return tokio_util::io::poll_read_buf(Pin::new(other), cx, buf);
            }
        };
        if buf.capacity() == buf.len() {
            buf.reserve(1);
        }
        loop {
            if *state == ReadState::Drained {
                // With the task's cooperative budget spent, tokio answers Pending without
                // registering anything (it reschedules the task instead): armed only if the
                // poll reaches the reactor.
                let registers = tokio::task::coop::has_budget_remaining();
                match tcp.poll_read_ready(cx) {
                    Poll::Ready(Ok(())) => *state = ReadState::Unknown,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        *state = match registers {
                            true => ReadState::Armed,
                            false => ReadState::Unknown,
                        };
                        return Poll::Pending;
                    }
                }
            }
            let spare = buf.capacity() - buf.len();
            let (mut tried, mut got) = (false, None);
            let read = tcp.try_io(Interest::READABLE, || {
                tried = true;
                let n = super::sys::recv(tcp.as_raw_fd(), buf.spare_capacity_mut())?;
                // SAFETY: recv initialized the first `n` bytes of the spare capacity.
                unsafe { buf.set_len(buf.len() + n) };
                got = Some(n);
                // A short read drained the socket: report it as would-block so that the reactor
                // forgets the readiness, as `poll_read` does, and no read is tried in vain.
                if n > 0 && n < spare {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(n)
            });
            match (read, got) {
                (_, Some(n)) => {
                    *state = match n > 0 && n < spare {
                        true => ReadState::Drained,
                        false => ReadState::Unknown,
                    };
                    return Poll::Ready(Ok(n));
                }
                (Ok(n), None) => return Poll::Ready(Ok(n)),
                (Err(e), None) if e.kind() != io::ErrorKind::WouldBlock => {
                    *state = ReadState::Unknown;
                    return Poll::Ready(Err(e));
                }
                // Not ready, and the waker is in the reactor's slot since the last readiness.
                (Err(_), None) if !tried && *state == ReadState::Armed => return Poll::Pending,
                // Not ready (or the read would block, which cleared the readiness): register.
                (Err(_), None) => *state = ReadState::Drained,
            }
        }
    }
}

/// What a task reading a plain TCP socket with [`Stream::poll_recv`] knows about the socket's
/// readiness between two polls. An enum so that each poll takes the one path its state allows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReadState {
    /// Nothing known: try a read (the first state, and after any doubt).
    #[default]
    Unknown,
    /// The last read was short or would block, so the reactor's readiness is cleared: the next
    /// poll registers the task's waker without a read.
    Drained,
    /// The task's waker is registered and no readiness was seen since: a poll checks the
    /// readiness flag only.
    Armed,
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Wake, Waker};
    use std::time::Duration;

    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    use super::*;

    /// Counts its wake-ups.
    #[derive(Default)]
    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    async fn pair() -> (Stream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let peer = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (ours, _) = listener.accept().await.expect("accept");
        (Stream::plain(ours), peer)
    }

    /// Waits until `counter` was woken `n` times in all (the reactor runs on this runtime).
    async fn woken(counter: &Counter, n: usize) {
        for _ in 0..500 {
            if counter.0.load(Ordering::SeqCst) >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!("not woken {n} times");
    }

    #[tokio::test]
    async fn an_armed_read_registers_once_and_is_still_woken() {
        let (mut stream, mut peer) = pair().await;
        let counter = Arc::new(Counter::default());
        let waker = Waker::from(counter.clone());
        let mut cx = Context::from_waker(&waker);
        let mut buf = BytesMut::with_capacity(64);
        let mut state = ReadState::Unknown;

        assert!(stream.poll_recv(&mut cx, &mut buf, &mut state).is_pending());
        assert_eq!(
            state,
            ReadState::Armed,
            "registered at the first would-block"
        );
        // Polled again while armed: no new registration is needed, and none is lost.
        assert!(stream.poll_recv(&mut cx, &mut buf, &mut state).is_pending());
        assert!(!stream.may_read(), "nothing arrived");
        peer.write_all(b"hello").await.expect("write");
        woken(&counter, 1).await;
        assert!(stream.may_read(), "the reactor saw the bytes");
        match stream.poll_recv(&mut cx, &mut buf, &mut state) {
            Poll::Ready(Ok(5)) => {}
            other => panic!("expected 5 bytes, got {other:?}"),
        }
        assert!(!stream.may_read(), "the short read drained the socket");
        assert_eq!(
            state,
            ReadState::Drained,
            "a short read: the reactor's readiness is cleared"
        );
        assert_eq!(&buf[..], b"hello");

        // The short read cleared the readiness: the next poll registers without a read.
        assert!(stream.poll_recv(&mut cx, &mut buf, &mut state).is_pending());
        assert_eq!(state, ReadState::Armed);
        peer.write_all(b"again").await.expect("write");
        woken(&counter, 2).await;
        assert!(matches!(
            stream.poll_recv(&mut cx, &mut buf, &mut state),
            Poll::Ready(Ok(5))
        ));

        // The peer closing wakes an armed read too, which then sees the end of the stream.
        assert!(stream.poll_recv(&mut cx, &mut buf, &mut state).is_pending());
        drop(peer);
        woken(&counter, 3).await;
        assert!(matches!(
            stream.poll_recv(&mut cx, &mut buf, &mut state),
            Poll::Ready(Ok(0))
        ));
    }

    /// A read that would block after the task spent its cooperative budget (a relay streaming a
    /// large COPY does) registers nothing, so it must not count as armed: the next poll
    /// registers, and data then wakes it.
    #[tokio::test]
    async fn a_read_without_budget_is_not_armed() {
        let (mut stream, mut peer) = pair().await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for i in 0..1000 {
            tx.send(i).expect("send");
        }
        let mut buf = BytesMut::with_capacity(64);
        let mut state = ReadState::Unknown;
        std::future::poll_fn(|cx| {
            while tokio::task::coop::has_budget_remaining() {
                let _ = rx.poll_recv(cx);
            }
            assert!(stream.poll_recv(cx, &mut buf, &mut state).is_pending());
            assert_ne!(
                state,
                ReadState::Armed,
                "the budget was spent: no waker was registered"
            );
            Poll::Ready(())
        })
        .await;
        // A new poll of the task starts with a fresh budget.
        tokio::task::yield_now().await;
        assert!(
            std::future::poll_fn(|cx| Poll::Ready(
                stream.poll_recv(cx, &mut buf, &mut state).is_pending()
            ))
            .await
        );
        assert_eq!(state, ReadState::Armed, "registered with a fresh budget");
        peer.write_all(b"data").await.expect("write");
        let read = tokio::time::timeout(
            Duration::from_secs(5),
            std::future::poll_fn(|cx| stream.poll_recv(cx, &mut buf, &mut state)),
        )
        .await;
        assert!(
            matches!(read, Ok(Ok(4))),
            "the armed read was woken: {read:?}"
        );
    }
}
