//! The relay between a client and its server connection, as one hand-written future that drives
//! both directions: each forwards bytes after reading only message headers (bodies are never copied
//! or decoded), except the few messages the proxy must see: Terminate from the client;
//! ReadyForQuery and ParameterStatus from the server. A direction whose writes block stops reading
//! (backpressure) while the other keeps flowing, so a client that pipelines while the server streams
//! results cannot deadlock us. No locks, no allocation per message, one read and one write syscall
//! per batch of messages.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::io::poll_read_buf;

use crate::net::Stream;
use crate::protocol::backend::{self, TransactionStatus};
use crate::protocol::frame::{Passthrough, Step};
use crate::protocol::ProtocolError;
use crate::server::ServerState;

/// Read sizes per direction: clients mostly send small requests; servers stream results.
const CLIENT_READ: usize = 8 * 1024;
const SERVER_READ: usize = 16 * 1024;

/// How a relay ended.
#[derive(Debug)]
pub enum RelayEnd {
    /// The client sent Terminate.
    ClientTerminated,
    /// The client closed its socket (or it failed).
    ClientGone,
    /// The server closed its socket (or it failed).
    ServerGone,
    /// The client sent a message we cannot accept.
    ClientProtocol(ProtocolError),
    /// The server sent bytes that are not the protocol.
    ServerProtocol(ProtocolError),
    /// The proxy is shutting down.
    Shutdown,
}

/// What the relay observed about the server connection, to decide whether it can be reused.
#[derive(Debug)]
pub struct RelayOutcome {
    pub end: RelayEnd,
    pub server_state: ServerState,
    /// ParameterStatus values the server reported while relaying.
    pub parameters: Vec<(String, String)>,
}

/// Requests sent and not yet answered with ReadyForQuery, and the last transaction status.
#[derive(Debug)]
struct Flight {
    pending: i64,
    status: TransactionStatus,
    parameters: Vec<(String, String)>,
}

/// Which end a pipe reads from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Client,
    Server,
}

/// One direction: a buffer, the header walker, and how much of the buffer is ready to write.
#[derive(Debug)]
struct Pipe {
    source: Source,
    buf: BytesMut,
    pass: Passthrough,
    /// Bytes at the front of `buf` cleared for forwarding.
    ready: usize,
    /// Set when the client's Terminate was reached: end once `ready` bytes are written.
    terminated: bool,
    /// Written bytes that may still sit in a TLS buffer.
    need_flush: bool,
    read_size: usize,
    max_message_size: usize,
}

impl Pipe {
    fn new(source: Source, buf: BytesMut, max_message_size: usize) -> Pipe {
        let read_size = match source {
            Source::Client => CLIENT_READ,
            Source::Server => SERVER_READ,
        };
        Pipe {
            source,
            buf,
            pass: Passthrough::default(),
            ready: 0,
            terminated: false,
            need_flush: false,
            read_size,
            max_message_size,
        }
    }

    fn gone(&self) -> RelayEnd {
        match self.source {
            Source::Client => RelayEnd::ClientGone,
            Source::Server => RelayEnd::ServerGone,
        }
    }

    fn peer_gone(&self) -> RelayEnd {
        match self.source {
            Source::Client => RelayEnd::ServerGone,
            Source::Server => RelayEnd::ClientGone,
        }
    }

    fn protocol_error(&self, e: ProtocolError) -> RelayEnd {
        match self.source {
            Source::Client => RelayEnd::ClientProtocol(e),
            Source::Server => RelayEnd::ServerProtocol(e),
        }
    }

    /// Whether stopping here leaves the server connection out of step: a message only partly
    /// forwarded or written, or (reading from the server) bytes read but not delivered, which would
    /// otherwise reach the next client as the tail of a message.
    fn torn(&self) -> bool {
        let undelivered = match self.source {
            Source::Client => self.ready > 0,
            Source::Server => !self.buf.is_empty(),
        };
        self.pass.in_message() || undelivered
    }

    /// Moves data from `src` to `dst` until one of them would block (Pending) or the direction ends.
    fn poll_pump<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut src: Pin<&mut R>,
        mut dst: Pin<&mut W>,
        flight: &mut Flight,
    ) -> Poll<RelayEnd>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        loop {
            while self.ready > 0 {
                match ready!(dst.as_mut().poll_write(cx, &self.buf[..self.ready])) {
                    Ok(0) | Err(_) => return Poll::Ready(self.peer_gone()),
                    Ok(n) => {
                        self.buf.advance(n);
                        self.ready -= n;
                        self.need_flush = true;
                    }
                }
            }
            if self.terminated {
                return Poll::Ready(RelayEnd::ClientTerminated);
            }
            if let Err(e) = self.scan(flight) {
                return Poll::Ready(self.protocol_error(e));
            }
            if self.ready > 0 || self.terminated {
                continue;
            }
            if self.buf.capacity() - self.buf.len() < self.read_size / 4 {
                self.buf.reserve(self.read_size);
            }
            match poll_read_buf(src.as_mut(), cx, &mut self.buf) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(self.gone()),
                Poll::Ready(Ok(_)) => {}
                Poll::Pending => {
                    if self.need_flush {
                        if ready!(dst.as_mut().poll_flush(cx)).is_err() {
                            return Poll::Ready(self.peer_gone());
                        }
                        self.need_flush = false;
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// Clears buffered bytes for forwarding, message by message, looking at headers only, and at
    /// whole frames for the few messages the proxy must understand.
    fn scan(&mut self, flight: &mut Flight) -> Result<(), ProtocolError> {
        loop {
            match self
                .pass
                .step(&self.buf[self.ready..], self.max_message_size)?
            {
                Step::NeedMore => return Ok(()),
                Step::Body { n } => {
                    self.pass.advance(n);
                    self.ready += n;
                }
                Step::Message { header, available } => {
                    match (self.source, header.tag) {
                        (Source::Client, b'X') => {
                            // Terminate ends the session; it is not forwarded.
                            self.terminated = true;
                            return Ok(());
                        }
                        // Each of these is answered by exactly one ReadyForQuery.
                        (Source::Client, b'Q' | b'S' | b'F') => flight.pending += 1,
                        (Source::Server, b'Z' | b'S') => {
                            if available < header.frame_len() {
                                self.buf.reserve(header.frame_len() - available);
                                return Ok(());
                            }
                            let start = self.ready + 5;
                            let body = &self.buf[start..self.ready + header.frame_len()];
                            observe(header.tag, body, flight)?;
                        }
                        _ => {}
                    }
                    self.pass.advance(available);
                    self.ready += available;
                }
            }
        }
    }
}

/// Records what a ReadyForQuery or ParameterStatus says.
fn observe(tag: u8, body: &[u8], flight: &mut Flight) -> Result<(), ProtocolError> {
    if tag == b'Z' {
        flight.status = backend::ready_for_query_status(body)?;
        flight.pending -= 1;
        return Ok(());
    }
    let mut parts = body.split(|b| *b == 0);
    let name = parts.next().unwrap_or_default();
    let value = parts.next().unwrap_or_default();
    flight.parameters.push((
        String::from_utf8_lossy(name).into_owned(),
        String::from_utf8_lossy(value).into_owned(),
    ));
    Ok(())
}

/// Both directions of one client/server pair.
struct Relay<'a> {
    client: &'a mut Stream,
    server: &'a mut Stream,
    upstream: Pipe,
    downstream: Pipe,
    flight: Flight,
}

impl Future for Relay<'_> {
    type Output = RelayEnd;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<RelayEnd> {
        let this = self.get_mut();
        let client = Pin::new(&mut *this.client);
        let server = Pin::new(&mut *this.server);
        if let Poll::Ready(end) = this
            .upstream
            .poll_pump(cx, client, server, &mut this.flight)
        {
            return Poll::Ready(end);
        }
        let client = Pin::new(&mut *this.client);
        let server = Pin::new(&mut *this.server);
        this.downstream
            .poll_pump(cx, server, client, &mut this.flight)
    }
}

/// Relays until either side ends or `stop` fires. `client_buf` holds client bytes already read;
/// `server_buf` server bytes already read.
pub async fn relay(
    client: &mut Stream,
    client_buf: BytesMut,
    server: &mut Stream,
    server_buf: BytesMut,
    max_message_size: usize,
    stop: &tokio_util::sync::CancellationToken,
) -> RelayOutcome {
    let mut relay = Relay {
        client,
        server,
        upstream: Pipe::new(Source::Client, client_buf, max_message_size),
        downstream: Pipe::new(Source::Server, server_buf, usize::MAX),
        flight: Flight {
            pending: 0,
            status: TransactionStatus::Idle,
            parameters: Vec::new(),
        },
    };
    let end = tokio::select! {
        biased;
        end = &mut relay => end,
        _ = stop.cancelled() => RelayEnd::Shutdown,
    };
    let busy = relay.flight.pending != 0 || relay.upstream.torn() || relay.downstream.torn();
    let server_state = match (busy, relay.flight.status) {
        (true, _) => ServerState::Busy,
        (false, TransactionStatus::Idle) => ServerState::Idle,
        (false, TransactionStatus::InTransaction) => ServerState::InTransaction,
        (false, TransactionStatus::Failed) => ServerState::FailedTransaction,
    };
    RelayOutcome {
        end,
        server_state,
        parameters: relay.flight.parameters,
    }
}
