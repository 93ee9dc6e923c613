//! The relay between a client and its server connection, as one hand-written future that drives
//! both directions: each forwards bytes after reading only message headers (bodies are never copied
//! or decoded), except the few messages the proxy must see: Terminate from the client;
//! ReadyForQuery and ParameterStatus from the server. A direction whose writes block stops reading
//! (backpressure) while the other keeps flowing, so a client that pipelines while the server streams
//! results cannot deadlock us. No locks, no allocation per message, one read and one write syscall
//! per batch of messages.
//!
//! In transaction pooling the relay also finds the release point: the server said ReadyForQuery
//! with status idle, every request was answered, no extended-protocol message awaits its Sync, and
//! nothing is half-forwarded. Clients that create session state the pool cannot move (a named
//! prepared statement, SET, LISTEN, ...) are pinned: they keep their server connection.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{ready, Context, Poll};
use std::time::Instant;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::io::poll_read_buf;

use super::deadline::{Deadlines, Expired, Timeouts};
use super::exchange::{Exchange, Expect, Response};
pub use super::flight::RelayMetrics;
use super::flight::{note_request, observe, Flight, Source, StatementDrop};
use super::pins::QueryEffects;
use super::retry::{Hold, HoldStep};
use crate::admin::ClientEntry;
use crate::net::Stream;
use crate::protocol::backend::TransactionStatus;
use crate::protocol::frame::{Passthrough, Step};
use crate::protocol::ProtocolError;
use crate::server::ServerState;

/// Read sizes per direction: clients mostly send small requests; servers stream results.
const CLIENT_READ: usize = 8 * 1024;
const SERVER_READ: usize = 16 * 1024;
/// Free room below which a client buffer grows to `CLIENT_READ` before the next read.
const CLIENT_MIN_SPARE: usize = 256;

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
    /// Transaction pooling: the transaction ended and the server connection can go back.
    TransactionDone,
    /// The client sent nothing inside a transaction for `idle_transaction_timeout`.
    IdleInTransaction,
    /// The client sent nothing between transactions for `client_idle_timeout`.
    ClientIdle,
    /// `Policy::retry_read_only`: the replica refused the client's only request with 25006
    /// before anything reached the client; the server is idle and the request can be retried.
    ReadOnlyRetry,
}

/// How the relay pools: session (never releases) or transaction (releases at each idle point).
#[derive(Clone, Copy)]
pub struct Policy {
    pub transaction_pooling: bool,
    /// What a simple query does to session state: pins the client (and why), changes settings,
    /// drops named statements.
    pub effects: fn(&[u8]) -> QueryEffects,
    /// Hold the server's first messages until the client's only request is known not to have
    /// failed with 25006 (see [`super::retry`]); set only for replica-routed simple queries.
    pub retry_read_only: bool,
    /// Log each Query and Parse at debug level (read whole; only when debug logging is on).
    pub log_queries: bool,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Policy(transaction_pooling: {}, retry_read_only: {})",
            self.transaction_pooling, self.retry_read_only
        )
    }
}

/// What the relay observed about the server connection, to decide whether it can be reused.
#[derive(Debug)]
pub struct RelayOutcome {
    pub end: RelayEnd,
    pub server_state: ServerState,
    /// ParameterStatus values the server reported while relaying.
    pub parameters: Vec<(String, String)>,
    /// Client bytes read but not yet forwarded (the start of its next transaction).
    pub client_buf: BytesMut,
    /// Server bytes read but not yet forwarded (empty at a release point); the buffer is reused.
    pub server_buf: BytesMut,
    /// Why the client must keep this server connection, if it must.
    pub pinned: Option<&'static str>,
    /// The client may have changed session settings: read them back before reuse.
    pub settings_changed: bool,
    /// The client dropped named statements in SQL (DEALLOCATE, DISCARD ALL): the server
    /// connection's prepared set is no longer known.
    pub statements_dropped: bool,
}

/// The least `out` reserves at its first use in a relay.
const OUT_MIN: usize = 256;

/// One direction: a buffer, the header walker, and how much of the buffer is ready to write.
#[derive(Debug)]
struct Pipe {
    source: Source,
    buf: BytesMut,
    pass: Passthrough,
    /// Bytes at the front of `buf` cleared for forwarding.
    ready: usize,
    /// Bytes to forward before anything in `buf`, used once a message is rewritten, dropped or
    /// answered by the proxy; while it holds bytes, `ready` is 0 and cleared messages are copied
    /// here to keep their order. Allocated only when needed.
    out: BytesMut,
    /// End the direction this way once `ready` bytes are written (Terminate, a release point).
    stop: Option<RelayEnd>,
    /// Written bytes that may still sit in a TLS buffer.
    need_flush: bool,
    read_size: usize,
    max_message_size: usize,
    /// Server messages held back for a possible 25006 retry (`Policy::retry_read_only`).
    hold: Option<Hold>,
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
            out: BytesMut::new(),
            stop: None,
            need_flush: false,
            read_size,
            max_message_size,
            hold: None,
        }
    }

    /// Room below which the buffer grows before a read. Small on the client side: a request
    /// usually fits in the buffer the idle client read it into, which then need not grow (and be
    /// copied) at every transaction.
    fn min_spare(&self) -> usize {
        match self.source {
            Source::Client => CLIENT_MIN_SPARE,
            Source::Server => self.read_size / 4,
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
        let undelivered = !self.out.is_empty()
            || match self.source {
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
        flight: &mut Flight<'_>,
        policy: Policy,
        exchange: &mut Option<Exchange<'_>>,
    ) -> Poll<RelayEnd>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        loop {
            while !self.out.is_empty() {
                match ready!(dst.as_mut().poll_write(cx, &self.out)) {
                    Ok(0) | Err(_) => return Poll::Ready(self.peer_gone()),
                    Ok(n) => {
                        self.out.advance(n);
                        self.need_flush = true;
                        flight.wrote(self.source, n);
                    }
                }
            }
            while self.ready > 0 {
                match ready!(dst.as_mut().poll_write(cx, &self.buf[..self.ready])) {
                    Ok(0) | Err(_) => return Poll::Ready(self.peer_gone()),
                    Ok(n) => {
                        self.buf.advance(n);
                        self.ready -= n;
                        self.need_flush = true;
                        flight.wrote(self.source, n);
                    }
                }
            }
            if let Some(end) = self.stop.take() {
                if self.need_flush {
                    if ready!(dst.as_mut().poll_flush(cx)).is_err() {
                        return Poll::Ready(self.peer_gone());
                    }
                    self.need_flush = false;
                }
                return Poll::Ready(end);
            }
            if let Err(e) = self.scan(flight, policy, exchange) {
                return Poll::Ready(self.protocol_error(e));
            }
            if self.ready > 0 || !self.out.is_empty() || self.stop.is_some() {
                continue;
            }
            if self.buf.capacity() - self.buf.len() < self.min_spare() {
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
    fn scan(
        &mut self,
        flight: &mut Flight<'_>,
        policy: Policy,
        exchange: &mut Option<Exchange<'_>>,
    ) -> Result<(), ProtocolError> {
        while self.stop.is_none() {
            if let Some(exchange) = exchange.as_mut() {
                if self.source == Source::Server && exchange.owes() && !self.pass.in_message() {
                    self.release_hold();
                    self.divert();
                    exchange.owed(&mut self.out);
                }
            }
            let (header, available) = match self
                .pass
                .step(&self.buf[self.ready..], self.max_message_size)?
            {
                Step::NeedMore => return Ok(()),
                Step::Body { n } => {
                    self.clear(n);
                    continue;
                }
                Step::Message { header, available } => (header, available),
            };
            let frame_len = header.frame_len();
            let rewriting = exchange.is_some();
            let needs_whole = match self.source {
                Source::Client => {
                    (policy.transaction_pooling
                        && matches!(header.tag, b'P' | b'Q' | b'B' | b'D' | b'C'))
                        || (policy.log_queries && matches!(header.tag, b'P' | b'Q'))
                }
                Source::Server => {
                    matches!(header.tag, b'Z' | b'S' | b'E')
                        || (rewriting && matches!(header.tag, b'1' | b'3'))
                        || self.hold.is_some()
                }
            };
            if needs_whole && available < frame_len {
                self.buf.reserve(frame_len - available);
                return Ok(());
            }
            let frame = &self.buf[self.ready..self.ready + available];
            let body = if needs_whole { &frame[5..] } else { &[][..] };
            match self.source {
                Source::Client => {
                    if header.tag == b'X' {
                        // Terminate ends the session; it is not forwarded.
                        self.stop = Some(RelayEnd::ClientTerminated);
                        return Ok(());
                    }
                    let dropped = note_request(header.tag, body, flight, policy);
                    if let Some(exchange) = exchange.as_mut() {
                        if self.client_request(exchange, available, dropped, flight) {
                            continue;
                        }
                    }
                }
                Source::Server => {
                    if let Some(exchange) = exchange.as_mut() {
                        if exchange.response(header.tag) == Response::Drop {
                            self.divert();
                            self.drop_message(frame_len);
                            continue;
                        }
                    }
                    if self.hold.is_some() {
                        if self.held(header.tag, frame_len, flight)? {
                            continue;
                        }
                        // Held messages went out ahead: the message moved in the buffer.
                        let frame = &self.buf[self.ready..self.ready + available];
                        if observe(header.tag, &frame[5..], flight)?
                            && (policy.transaction_pooling || flight.draining)
                            && !owed(exchange)
                        {
                            self.stop = Some(RelayEnd::TransactionDone);
                        }
                        self.clear(available);
                        continue;
                    }
                    let owed = exchange.as_ref().is_some_and(|e| !e.expected.is_empty());
                    if observe(header.tag, body, flight)?
                        && (policy.transaction_pooling || flight.draining)
                        && !owed
                    {
                        self.stop = Some(RelayEnd::TransactionDone);
                    }
                }
            }
            self.clear(available);
        }
        Ok(())
    }

    /// Hands a client message at the scan position to the statement exchange. True if the
    /// exchange consumed it (rewritten, answered by the proxy); false to forward it as is.
    fn client_request(
        &mut self,
        exchange: &mut Exchange<'_>,
        available: usize,
        dropped: Option<StatementDrop>,
        flight: &mut Flight<'_>,
    ) -> bool {
        let frame = &self.buf[self.ready..self.ready + available];
        if let Some(dropped) = dropped {
            exchange.expected.push_back(Expect::UntilReady);
            let name = match dropped {
                StatementDrop::All => {
                    exchange.client.clear();
                    flight.statements_dropped = true;
                    return false;
                }
                StatementDrop::Named(name) => name,
            };
            let Some((sql, all)) = exchange.deallocate(name.as_bytes()) else {
                return false;
            };
            flight.statements_dropped |= all;
            self.divert();
            crate::protocol::frontend::encode_query(&sql, &mut self.out);
            self.drop_message(available);
            return true;
        }
        if !exchange.intercepts(frame) {
            exchange.request(frame, &mut self.out);
            return false;
        }
        self.divert();
        let frame = &self.buf[..available];
        if exchange.request(frame, &mut self.out) == super::exchange::Request::Forward {
            self.out.extend_from_slice(frame);
        }
        if flight.pinned.is_none() {
            flight.pinned = exchange.pinned;
        }
        self.drop_message(available);
        true
    }

    /// Under `Policy::retry_read_only`, holds or releases the whole server message at the scan
    /// position. True if it was consumed (held, or dropped for a retry).
    fn held(
        &mut self,
        tag: u8,
        frame_len: usize,
        flight: &mut Flight,
    ) -> Result<bool, ProtocolError> {
        let Some(mut hold) = self.hold.take() else {
            return Ok(false);
        };
        let frame = &self.buf[self.ready..self.ready + frame_len];
        let body = &frame[5..];
        match hold.step(tag, body) {
            HoldStep::Keep => {
                observe(tag, body, flight)?;
                hold.buf.extend_from_slice(frame);
                self.hold = Some(hold);
            }
            HoldStep::Retry if flight.client_messages == 1 => {
                observe(tag, body, flight)?;
                self.stop = Some(RelayEnd::ReadOnlyRetry);
            }
            HoldStep::Retry | HoldStep::Release => {
                self.hold = Some(hold);
                self.release_hold();
                return Ok(false);
            }
        }
        self.divert();
        self.drop_message(frame_len);
        Ok(true)
    }

    /// Stops holding: what was held goes out first.
    fn release_hold(&mut self) {
        if let Some(hold) = self.hold.take() {
            self.divert();
            self.out.extend_from_slice(&hold.buf);
        }
    }

    /// Clears the next `n` scanned bytes for forwarding, in place or (when earlier output was
    /// rewritten) after it.
    fn clear(&mut self, n: usize) {
        if self.out.is_empty() {
            self.ready += n;
        } else {
            self.out.extend_from_slice(&self.buf[..n]);
            self.buf.advance(n);
        }
        self.pass.advance(n);
    }

    /// Gives `out` room at its first use in a relay for everything buffered, so rewriting a
    /// pipeline allocates once instead of growing message by message.
    fn prepare_out(&mut self) {
        if self.out.capacity() == 0 {
            self.out.reserve(self.buf.len().max(OUT_MIN));
        }
    }

    /// Moves the bytes cleared in place to `out`, so that something can be inserted after them.
    fn divert(&mut self) {
        self.prepare_out();
        if self.ready > 0 {
            self.out.extend_from_slice(&self.buf[..self.ready]);
            self.buf.advance(self.ready);
            self.ready = 0;
        }
    }

    /// Consumes the whole message at the scan position (after [`Pipe::divert`]) without
    /// forwarding it.
    fn drop_message(&mut self, frame_len: usize) {
        debug_assert_eq!(self.ready, 0);
        self.pass.advance(frame_len);
        self.buf.advance(frame_len);
    }
}

/// Whether the statement exchange still owes the client responses.
fn owed(exchange: &Option<Exchange<'_>>) -> bool {
    exchange.as_ref().is_some_and(|e| !e.expected.is_empty())
}

/// Both directions of one client/server pair.
struct Relay<'a, 's, 'e> {
    client: &'a mut Stream,
    server: &'a mut Stream,
    upstream: Pipe,
    downstream: Pipe,
    flight: Flight<'a>,
    policy: Policy,
    /// Named prepared statements under transaction pooling (`None` in session pooling).
    exchange: Option<Exchange<'e>>,
    /// The client's entry: its stop flag (KILL, shutdown), and the waker slot that stop and the
    /// proxy's drain wake. Registered at the first poll and after each wake-up (which takes the
    /// waker out of the slot), not at every poll.
    stop: &'s ClientEntry,
    /// The entry's wake-up count when this relay last registered its waker.
    stop_registered: Option<u32>,
    /// Session pooling: the flags that end the relay at the next idle point (`None` once seen).
    drain: Option<IdleExit<'s>>,
    /// The timeouts' timer, when any is set.
    deadlines: Option<Deadlines>,
}

impl Future for Relay<'_, '_, '_> {
    type Output = RelayEnd;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<RelayEnd> {
        let this = self.get_mut();
        if this
            .stop
            .poll_stopped_registered(cx, &mut this.stop_registered)
            .is_ready()
        {
            return Poll::Ready(RelayEnd::Shutdown);
        }
        if this.drain_started() {
            return Poll::Ready(RelayEnd::TransactionDone);
        }
        let policy = this.policy;
        loop {
            let client = Pin::new(&mut *this.client);
            let server = Pin::new(&mut *this.server);
            if let Poll::Ready(end) = this.upstream.poll_pump(
                cx,
                client,
                server,
                &mut this.flight,
                policy,
                &mut this.exchange,
            ) {
                return Poll::Ready(end);
            }
            let client = Pin::new(&mut *this.client);
            let server = Pin::new(&mut *this.server);
            match this.downstream.poll_pump(
                cx,
                server,
                client,
                &mut this.flight,
                policy,
                &mut this.exchange,
            ) {
                Poll::Ready(RelayEnd::TransactionDone) if !this.releasable() => continue,
                Poll::Pending => return this.poll_deadlines(cx),
                other => return other,
            }
        }
    }
}

impl Relay<'_, '_, '_> {
    /// Session pooling: whether the drain just began while the client is between transactions
    /// (then the relay ends now); later idle points end it in `scan`. A client that connected
    /// during the drain runs until its first transaction ends.
    fn drain_started(&mut self) -> bool {
        let Some(exit) = self.drain else {
            return false;
        };
        if !exit.raised() {
            return false;
        }
        self.drain = None;
        if self.flight.draining {
            return false;
        }
        self.flight.draining = true;
        self.flight.pending == 0
            && self.flight.status == TransactionStatus::Idle
            && !self.flight.unsynced
            && self.releasable()
    }

    /// With both directions waiting: whether a timeout ends the relay (a query timeout only
    /// cancels the query; its error then flows like any other).
    fn poll_deadlines(&mut self, cx: &mut Context<'_>) -> Poll<RelayEnd> {
        let (Some(deadlines), Some(since)) = (self.deadlines.as_mut(), self.flight.since.as_mut())
        else {
            return Poll::Pending;
        };
        // Extended-protocol messages before their Sync count as a request in progress too.
        let busy = self.flight.pending > 0 || self.flight.unsynced;
        match ready!(deadlines.poll(cx, since, busy, self.flight.status)) {
            Expired::IdleInTransaction => Poll::Ready(RelayEnd::IdleInTransaction),
            Expired::ClientIdle => Poll::Ready(RelayEnd::ClientIdle),
        }
    }

    /// At a release point, whether the connection is really free: no client message is partly
    /// forwarded and no server bytes wait behind the ReadyForQuery.
    fn releasable(&self) -> bool {
        !self.upstream.pass.in_message()
            && self.upstream.ready == 0
            && self.upstream.out.is_empty()
            && self.downstream.buf.is_empty()
            && self.downstream.out.is_empty()
            && self.exchange.as_ref().is_none_or(|e| e.expected.is_empty())
    }
}

/// Session pooling: what ends a session's relay at the client's next idle point (so no
/// transaction is cut): the proxy draining, or the client's worker asked to hand clients to
/// another (see [`super::placement::Placement`]).
#[derive(Clone, Copy, Debug)]
pub struct IdleExit<'s> {
    pub draining: &'s AtomicBool,
    pub moving: Option<&'s AtomicBool>,
}

impl IdleExit<'_> {
    fn raised(&self) -> bool {
        self.draining.load(Ordering::Acquire)
            || self.moving.is_some_and(|m| m.load(Ordering::Acquire))
    }
}

/// Relays until either side ends or the client's entry `stop`s (KILL, shutdown). `client_buf` holds client
/// bytes already read; `server_buf` server bytes already read. `exchange` renames named prepared
/// statements (transaction pooling). `timeouts` are enforced while relaying. With `drain`, the
/// proxy's drain flag (session pooling; the registry wakes every client when it is set), a relay that sees the proxy draining ends with `TransactionDone` at the
/// client's next idle point, so no transaction is cut.
#[allow(clippy::too_many_arguments)]
pub async fn relay<'s>(
    client: &mut Stream,
    client_buf: BytesMut,
    server: &mut Stream,
    server_buf: BytesMut,
    max_message_size: usize,
    policy: Policy,
    exchange: Option<Exchange<'_>>,
    metrics: RelayMetrics<'_>,
    stop: &'s ClientEntry,
    drain: Option<IdleExit<'s>>,
    timeouts: Timeouts,
) -> RelayOutcome {
    let draining = drain.is_some_and(|exit| exit.raised());
    let deadlines = Deadlines::new(timeouts);
    let mut downstream = Pipe::new(Source::Server, server_buf, usize::MAX);
    if policy.retry_read_only {
        downstream.hold = Some(Hold::default());
    }
    let mut relay = Relay {
        client,
        server,
        upstream: Pipe::new(Source::Client, client_buf, max_message_size),
        downstream,
        flight: Flight {
            pending: 0,
            status: TransactionStatus::Idle,
            parameters: Vec::new(),
            unsynced: false,
            pinned: None,
            settings_changed: false,
            statements_dropped: false,
            metrics,
            query_start: None,
            transaction_start: None,
            bytes_to_server: 0,
            bytes_to_client: 0,
            since: deadlines.as_ref().map(|_| Instant::now()),
            client_messages: 0,
            draining,
        },
        policy,
        exchange,
        stop,
        stop_registered: None,
        drain,
        deadlines,
    };
    let end = (&mut relay).await;
    relay.flight.flush_bytes();
    if let Some(deadlines) = relay.deadlines.as_mut() {
        deadlines.finish().await;
    }
    let owed = relay
        .exchange
        .as_ref()
        .is_some_and(|e| !e.expected.is_empty());
    let busy =
        relay.flight.pending != 0 || owed || relay.upstream.torn() || relay.downstream.torn();
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
        client_buf: relay.upstream.buf,
        server_buf: relay.downstream.buf,
        pinned: relay.flight.pinned,
        settings_changed: relay.flight.settings_changed
            || relay.exchange.as_ref().is_some_and(|e| e.settings_changed),
        statements_dropped: relay.flight.statements_dropped,
    }
}
