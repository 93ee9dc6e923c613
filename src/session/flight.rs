//! What a relay tracks about the requests in flight on one server connection, message by message:
//! requests awaiting ReadyForQuery and Sync, the transaction status, session state a query creates,
//! and the per-query metrics (timed with the worker's wake-up clock, `metrics::clock`; bytes
//! flushed once per transaction).

use std::time::Instant;

use super::relay::Policy;
use crate::metrics::{clock, DatabaseMetrics, PoolMetrics};
use crate::protocol::backend::{self, TransactionStatus};
use crate::protocol::ProtocolError;

/// Where the relay records what it forwards: the pool's query, transaction and byte counters, and
/// the database's errors by SQLSTATE class.
#[derive(Clone, Copy, Debug)]
pub struct RelayMetrics<'m> {
    pub pool: &'m PoolMetrics,
    pub database: &'m DatabaseMetrics,
}

/// Requests sent and not yet answered with ReadyForQuery, and the last transaction status.
///
/// Laid out in order (`repr(C)`): what each request and its answer update (the counts, the
/// status, the clocks, the histograms' owners) fits one cache line; the rest follows.
#[derive(Debug)]
#[repr(C)]
pub(super) struct Flight<'m> {
    pub(super) pending: i64,
    pub(super) status: TransactionStatus,
    /// Extended-protocol messages forwarded since the last Sync.
    pub(super) unsynced: bool,
    /// Session pooling while the proxy drains: end at the next idle ReadyForQuery.
    pub(super) draining: bool,
    pub(super) settings_changed: bool,
    pub(super) statements_dropped: bool,
    /// When the oldest unanswered request began (its first message); `None` while none is out.
    pub(super) query_start: Option<Instant>,
    /// When the current transaction's first message arrived; `None` between transactions.
    pub(super) transaction_start: Option<Instant>,
    pub(super) metrics: RelayMetrics<'m>,
    /// Bytes written to the server and to the client since the last flush to `metrics`.
    pub(super) bytes_to_server: u64,
    pub(super) bytes_to_client: u64,
    /// When the state last changed (a request started or was answered, an idle client sent
    /// something); kept only when a timeout is set.
    pub(super) since: Option<Instant>,
    /// Client messages seen, counted only under `Policy::retry_read_only`.
    pub(super) client_messages: u32,
    pub(super) pinned: Option<&'static str>,
    pub(super) parameters: Vec<(String, String)>,
}

impl Flight<'_> {
    /// Notes a state change for the timeouts (a clock read only when one is set).
    pub(super) fn touch(&mut self) {
        if let Some(since) = self.since.as_mut() {
            *since = Instant::now();
        }
    }

    /// A request message arrived: starts the query (and transaction) clocks if they are stopped.
    #[inline]
    pub(super) fn request_started(&mut self) {
        if self.query_start.is_none() {
            let now = clock::now();
            self.query_start = Some(now);
            self.transaction_start.get_or_insert(now);
        }
    }

    /// A ReadyForQuery arrived (after `pending` and `status` were updated): records the query, and
    /// the transaction if it ended.
    pub(super) fn request_answered(&mut self) {
        let now = clock::now();
        let query = self.query_start.take().map(|start| {
            let took = now.saturating_duration_since(start);
            self.metrics.pool.query_duration.observe(took);
            (start, took)
        });
        if self.pending > 0 {
            // Pipelined: the next answer is timed from this one.
            self.query_start = Some(now);
        }
        if self.status == TransactionStatus::Idle {
            if let Some(start) = self.transaction_start.take() {
                // An autocommit statement is its own transaction: same start, same duration.
                let took = match query {
                    Some((query_start, took)) if query_start == start => took,
                    _ => now.saturating_duration_since(start),
                };
                self.metrics.pool.transaction_duration.observe(took);
            }
            self.flush_bytes();
        }
    }

    /// Adds the bytes counted since the last flush to the pool's counters.
    pub(super) fn flush_bytes(&mut self) {
        if self.bytes_to_server > 0 {
            self.metrics.pool.bytes_received.add(self.bytes_to_server);
            self.bytes_to_server = 0;
        }
        if self.bytes_to_client > 0 {
            self.metrics.pool.bytes_sent.add(self.bytes_to_client);
            self.bytes_to_client = 0;
        }
    }

    /// Counts `n` bytes written by the pipe reading from `source`.
    #[inline]
    pub(super) fn wrote(&mut self, source: Source, n: usize) {
        match source {
            Source::Client => self.bytes_to_server += n as u64,
            Source::Server => self.bytes_to_client += n as u64,
        }
    }
}

/// Which end a pipe reads from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Source {
    Client,
    Server,
}

/// Named statements a simple query drops from the client's view.
pub(super) enum StatementDrop {
    /// `DEALLOCATE ALL`, `DISCARD ALL`.
    All,
    /// `DEALLOCATE name` (the whole query string).
    Named(String),
}

/// Tracks what a client request means for the server connection: requests awaiting ReadyForQuery,
/// extended-protocol messages awaiting Sync, and session state. Returns the client statements a
/// simple query drops.
pub(super) fn note_request(
    tag: u8,
    body: &[u8],
    flight: &mut Flight<'_>,
    policy: Policy,
) -> Option<StatementDrop> {
    if flight.pending == 0 {
        flight.touch();
    }
    if policy.retry_read_only {
        flight.client_messages += 1;
    }
    match tag {
        // Each of these is answered by exactly one ReadyForQuery.
        b'Q' | b'F' => {
            flight.request_started();
            flight.pending += 1;
        }
        b'S' => {
            flight.request_started();
            flight.pending += 1;
            flight.unsynced = false;
        }
        b'P' | b'B' | b'D' | b'E' | b'C' | b'H' => {
            flight.request_started();
            flight.unsynced = true;
        }
        _ => {}
    }
    if body.is_empty() || !matches!(tag, b'Q' | b'P') {
        return None;
    }
    let sql = match tag {
        b'Q' => body.strip_suffix(&[0]).unwrap_or(body),
        // Parse: the query text follows the statement name.
        _ => {
            let name_end = body.iter().position(|b| *b == 0)?;
            let rest = &body[name_end + 1..];
            &rest[..rest.iter().position(|b| *b == 0)?]
        }
    };
    if policy.log_queries {
        // Per-query logging: on only when debug logging is enabled.
        tracing::debug!(
            kind = if tag == b'Q' { "query" } else { "parse" },
            sql = %String::from_utf8_lossy(sql),
            "client request"
        );
    }
    if !policy.transaction_pooling {
        return None;
    }
    let effects = super::pins::query_effects(sql);
    if flight.pinned.is_none() {
        flight.pinned = effects.pin;
    }
    flight.settings_changed |= effects.settings;
    if tag != b'Q' {
        return None;
    }
    if effects.forget_all_statements {
        return Some(StatementDrop::All);
    }
    effects.deallocate.map(StatementDrop::Named)
}

/// Records what a server message says; true at a release point (idle, nothing owed, not pinned).
pub(super) fn observe(
    tag: u8,
    body: &[u8],
    flight: &mut Flight<'_>,
) -> Result<bool, ProtocolError> {
    if tag == b'Z' {
        flight.status = backend::ready_for_query_status(body)?;
        flight.pending -= 1;
        flight.request_answered();
        flight.touch();
        return Ok(flight.pending == 0
            && flight.status == TransactionStatus::Idle
            && !flight.unsynced
            && flight.pinned.is_none());
    }
    if tag == b'E' {
        let code = backend::error_code(body).unwrap_or_default();
        flight
            .metrics
            .database
            .error(std::str::from_utf8(code).unwrap_or_default());
        return Ok(false);
    }
    if tag != b'S' {
        return Ok(false);
    }
    let mut parts = body.split(|b| *b == 0);
    let name = parts.next().unwrap_or_default();
    let value = parts.next().unwrap_or_default();
    flight.parameters.push((
        String::from_utf8_lossy(name).into_owned(),
        String::from_utf8_lossy(value).into_owned(),
    ));
    Ok(false)
}
