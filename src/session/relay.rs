//! The relay between a client and its server connection, as one hand-written future that drives
//! both directions (each a `pipe::Pipe`): each forwards bytes after reading only
//! message headers (bodies are never copied or decoded), except the few messages the proxy must
//! see: Terminate from the client; ReadyForQuery and ParameterStatus from the server. A direction
//! whose writes block stops reading (backpressure) while the other keeps flowing, so a client that
//! pipelines while the server streams results cannot deadlock us. No locks, no allocation per
//! message, one read and one write syscall per batch of messages.
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

use bytes::BytesMut;

use super::deadline::{Deadlines, Expired, Timeouts};
use super::exchange::Exchange;
pub use super::flight::RelayMetrics;
use super::flight::{Flight, Source};
use super::pipe::Pipe;
use super::retry::Hold;
use crate::admin::ClientEntry;
use crate::net::Stream;
use crate::protocol::backend::TransactionStatus;
use crate::protocol::ProtocolError;
use crate::server::ServerState;

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

/// Both directions of one client/server pair.
///
/// Laid out in order (`repr(C)`): the fields each poll reads before it reaches the pipes share
/// the first cache line, each pipe starts a line of its own (see [`Pipe`]), and what only
/// timeouts and transaction pooling use comes last.
#[repr(C)]
pub(super) struct Relay<'a, 's, 'e> {
    client: &'a mut Stream,
    server: &'a mut Stream,
    /// The client's entry: its stop flag (KILL, shutdown), and the waker slot that stop and the
    /// proxy's drain wake. Registered at the first poll and after each wake-up (which takes the
    /// waker out of the slot), not at every poll.
    stop: &'s ClientEntry,
    /// The entry's wake-up count when this relay last registered its waker.
    stop_registered: Option<u32>,
    /// Session pooling: the flags that end the relay at the next idle point (`None` once seen).
    drain: Option<IdleExit<'s>>,
    policy: Policy,
    upstream: Pipe,
    downstream: Pipe,
    flight: Flight<'a>,
    /// Named prepared statements under transaction pooling (`None` in session pooling).
    exchange: Option<Exchange<'e>>,
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
            if !this.upstream.quiet(this.client, &this.exchange) {
                if let Poll::Ready(end) = this.upstream.poll_pump(
                    cx,
                    this.client,
                    this.server,
                    &mut this.flight,
                    policy,
                    &mut this.exchange,
                ) {
                    return Poll::Ready(end);
                }
            }
            if this.downstream.quiet(this.server, &this.exchange) {
                return this.poll_deadlines(cx);
            }
            match this.downstream.poll_pump(
                cx,
                this.server,
                this.client,
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

impl<'a, 's, 'e> Relay<'a, 's, 'e> {
    /// A relay between `client` and `server` until either side ends or the client's entry
    /// `stop`s (KILL, shutdown); await it (`&mut relay`), then [`Relay::finish`] it.
    /// `client_buf` holds client bytes already read; `server_buf` server bytes already read.
    /// `exchange` renames named prepared statements (transaction pooling). `timeouts` are
    /// enforced while relaying. With `drain`, the proxy's drain flag (session pooling; the
    /// registry wakes every client when it is set), a relay that sees the proxy draining ends
    /// with `TransactionDone` at the client's next idle point, so no transaction is cut.
    /// Built, awaited and finished by the caller itself, so that each wake-up polls the relay
    /// through no future layer of its own.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        client: &'a mut Stream,
        client_buf: BytesMut,
        server: &'a mut Stream,
        server_buf: BytesMut,
        max_message_size: usize,
        policy: Policy,
        exchange: Option<Exchange<'e>>,
        metrics: RelayMetrics<'a>,
        stop: &'s ClientEntry,
        drain: Option<IdleExit<'s>>,
        timeouts: Timeouts,
    ) -> Self {
        let draining = drain.is_some_and(|exit| exit.raised());
        let deadlines = Deadlines::new(timeouts);
        let mut downstream = Pipe::new(Source::Server, server_buf, usize::MAX);
        if policy.retry_read_only {
            downstream.hold = Some(Hold::default());
        }
        Relay {
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
        }
    }

    /// What the relay observed, once it ended with `end`: waits for a query-timeout cancel still
    /// on its way, so it can never hit the connection's next user.
    pub(super) async fn finish(mut self, end: RelayEnd) -> RelayOutcome {
        self.flight.flush_bytes();
        if let Some(deadlines) = self.deadlines.as_mut() {
            deadlines.finish().await;
        }
        let owed = self
            .exchange
            .as_ref()
            .is_some_and(|e| !e.expected.is_empty());
        let busy =
            self.flight.pending != 0 || owed || self.upstream.torn() || self.downstream.torn();
        let server_state = match (busy, self.flight.status) {
            (true, _) => ServerState::Busy,
            (false, TransactionStatus::Idle) => ServerState::Idle,
            (false, TransactionStatus::InTransaction) => ServerState::InTransaction,
            (false, TransactionStatus::Failed) => ServerState::FailedTransaction,
        };
        RelayOutcome {
            end,
            server_state,
            settings_changed: self.flight.settings_changed
                || self.exchange.as_ref().is_some_and(|e| e.settings_changed),
            parameters: self.flight.parameters,
            client_buf: self.upstream.buf,
            server_buf: self.downstream.buf,
            pinned: self.flight.pinned,
            statements_dropped: self.flight.statements_dropped,
        }
    }
}
