//! Transaction pooling for one client: what it carries between server connections (settings,
//! named statements), and each step of its session: answer what needs no server, or route the
//! transaction, check a server connection out, relay, and give the connection back.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::client::Session;
use super::exchange::Expect;
use super::relay::{RelayEnd, RelayOutcome};
use super::routing::{metric_labels, ClientRouting, Retry};
use super::statements::{parse_without_server, ClientStatements};
use super::ClientError;
use crate::admin::ClientState as Activity;
use crate::metrics::{RouteReason, RouteTarget};
use crate::net::Stream;
use crate::pool::{Pool, PooledServer};
use crate::protocol::backend::{self, TransactionStatus};
use crate::router::{Decision, Intent, Request};
use crate::server::ServerState;
use crate::topology::Lsn;

/// Read size while a transaction-pooled client has no server connection.
const IDLE_READ: usize = 1024;

/// Time allowed for the proxy's own queries between a client's transactions (reading settings
/// back, dropping statements).
const HOUSEKEEPING_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads back the settings a client changed with SET/RESET/set_config: whatever the session set.
const SESSION_SETTINGS_SQL: &str = "SELECT name, setting FROM pg_settings WHERE source = 'session'";

/// What a transaction-pooled client carries from one server connection to the next.
#[derive(Debug, Default)]
pub(super) struct ClientState {
    /// `None` while the client has no settings at all (one pointer in an idle client's task).
    settings: Option<Box<Settings>>,
    pub(super) statements: ClientStatements,
    /// Responses owed while relaying (empty between transactions).
    pub(super) expected: VecDeque<Expect>,
    /// The transaction being relayed is a replica-routed simple query the relay should hold for
    /// a 25006 retry on the primary.
    pub(super) retry_read_only: bool,
}

/// A client's settings.
#[derive(Debug, Default)]
struct Settings {
    /// From the startup packet (what RESET returns to).
    startup: Vec<(String, String)>,
    /// What every server connection must have for this client.
    current: Vec<(String, String)>,
}

impl ClientState {
    /// A client's state at login: `settings` from its startup packet.
    pub fn with_settings(settings: Vec<(String, String)>) -> ClientState {
        let settings = (!settings.is_empty()).then(|| {
            Box::new(Settings {
                startup: settings.clone(),
                current: settings,
            })
        });
        ClientState {
            settings,
            ..ClientState::default()
        }
    }

    /// The settings every server connection must have for this client.
    pub(super) fn settings(&self) -> &[(String, String)] {
        self.settings.as_ref().map_or(&[], |s| &s.current)
    }

    /// Replaces the client's current settings (its startup ones stay).
    fn set_settings(&mut self, current: Vec<(String, String)>) {
        match self.settings.as_mut() {
            Some(settings) => settings.current = current,
            None if current.is_empty() => {}
            None => {
                self.settings = Some(Box::new(Settings {
                    startup: Vec::new(),
                    current,
                }))
            }
        }
    }
}

/// What one step of a transaction-pooled client led to.
pub(super) enum Step {
    /// Answered without a server; wait for more.
    Continue,
    /// A transaction ran to its end.
    Transaction,
    /// A replica refused the query with 25006 before anything reached the client: run it again,
    /// on the primary.
    Retry,
    /// The session ends.
    End(Result<RelayEnd, ClientError>),
}

/// A server connection checked out for the client's next transaction, and what routing needs
/// to know after it.
struct Opened {
    server: PooledServer,
    /// The query to send again on the primary if the replica refuses it (25006).
    retry: Option<Retry>,
    /// The transaction is a write whose position must be recorded (read-your-writes).
    tracked: bool,
}

impl<'a> Session<'a> {
    /// One step of a transaction-pooled client: reads what it sent (when nothing is buffered),
    /// then answers what needs no server (Parse of a known statement, the proxy's own SET), or
    /// runs one transaction (to the primary when `primary_only`).
    #[allow(clippy::too_many_arguments)]
    pub async fn step(
        &self,
        stream: &mut Stream,
        buf: &mut BytesMut,
        pool: &Arc<Pool>,
        state: &mut ClientState,
        routing: &mut Option<Box<ClientRouting>>,
        primary_only: bool,
    ) -> Step {
        if buf.is_empty() {
            buf.reserve(IDLE_READ);
            let read = tokio::select! {
                read = stream.read_buf(buf) => read,
                _ = self.client.stopped() => return Step::End(Err(ClientError::ShuttingDown)),
            };
            match read {
                Err(e) => return Step::End(Err(ClientError::Io(e))),
                Ok(0) => return Step::End(Ok(RelayEnd::ClientGone)),
                Ok(_) => {}
            }
        }
        if buf.first() == Some(&b'X') {
            return Step::End(Ok(RelayEnd::ClientTerminated));
        }
        if let Some((consumed, parses)) =
            parse_without_server(&self.shared.statements, &mut state.statements, buf)
        {
            // Known statements need no server: answer ParseComplete(s) and ReadyForQuery.
            let _ = buf.split_to(consumed);
            let mut out = BytesMut::with_capacity(parses * 5 + 6);
            for _ in 0..parses {
                out.extend_from_slice(&[b'1', 0, 0, 0, 4]);
            }
            backend::encode_ready_for_query(TransactionStatus::Idle, &mut out);
            return match stream.write_all(&out).await {
                Ok(()) => Step::Continue,
                Err(e) => Step::End(Err(ClientError::Io(e))),
            };
        }
        match Self::answer_key_command(stream, buf, routing.as_deref_mut()).await {
            Ok(true) => return Step::Continue,
            Ok(false) => {}
            Err(e) => return Step::End(Err(e)),
        }
        let taken = std::mem::take(buf);
        let (end, rest) = self
            .transaction(stream, taken, pool, state, routing, primary_only)
            .await;
        *buf = rest;
        match end {
            Ok(RelayEnd::ReadOnlyRetry) => Step::Retry,
            Ok(RelayEnd::TransactionDone) => Step::Transaction,
            other => Step::End(other),
        }
    }

    /// One transaction of a transaction-pooled client: route it, check a server connection out,
    /// relay until the transaction ends, record the client's write position, give the server
    /// connection back. Returns how the relay ended and the client bytes not yet forwarded.
    #[allow(clippy::too_many_arguments)]
    async fn transaction(
        &self,
        stream: &mut Stream,
        buf: BytesMut,
        pool: &Arc<Pool>,
        state: &mut ClientState,
        routing: &mut Option<Box<ClientRouting>>,
        primary_only: bool,
    ) -> (Result<RelayEnd, ClientError>, BytesMut) {
        let opened = self
            .open(
                stream,
                pool,
                &buf,
                state,
                routing.as_deref_mut(),
                primary_only,
            )
            .await;
        let Opened {
            mut server,
            retry,
            tracked,
        } = match opened {
            Ok(opened) => opened,
            Err(e) => return (Err(e), buf),
        };
        state.expected.clear();
        let (end, rest) = self
            .relay(stream, buf, &mut server, Some(state), None)
            .await;
        if let (Ok(RelayEnd::ReadOnlyRetry), Some(retry)) = (&end, retry) {
            let buf = self.read_only_refused(retry, rest);
            server.release(false).await;
            return (end, buf);
        }
        let reset = !matches!(end, Ok(RelayEnd::TransactionDone));
        match (routing.as_deref_mut(), tracked, reset) {
            (Some(routing), true, true) => routing.abandoned(),
            (Some(routing), true, false) => Self::record_write(routing, &mut server).await,
            _ => {}
        }
        // Empty between transactions: an idle client keeps no allocation for it (one small
        // allocation per transaction costs less than holding it in every idle client).
        state.expected = VecDeque::new();
        tracing::debug!(peer = %self.peer, pool = %server.pool().name(), ?end, "transaction ended");
        // A session that ends releases with the session-mode reset, so state never leaks.
        server.release(reset).await;
        self.client.set_state(Activity::Idle);
        (end, rest)
    }

    /// Routes the work at the front of `buf` and checks out a server connection on the chosen
    /// node. A replica that cannot be connected to (stopped, and not yet marked down by the
    /// health checks) hands the work to the primary instead, so its clients see no error.
    async fn open(
        &self,
        stream: &mut Stream,
        pool: &Arc<Pool>,
        buf: &[u8],
        state: &mut ClientState,
        mut routing: Option<&mut ClientRouting>,
        primary_only: bool,
    ) -> Result<Opened, ClientError> {
        let (chosen, mut routed) = self
            .route(pool, buf, state, routing.as_deref_mut(), primary_only)
            .await?;
        let server = match self.checkout(stream, &chosen, state.settings()).await {
            Err(ClientError::Pool(e @ crate::pool::PoolError::Connect { .. }))
                if routed.as_ref().is_some_and(|(d, _)| d.replica) =>
            {
                tracing::info!(peer = %self.peer, database = %self.database, error = %e,
                    "replica unreachable; sending the read to the primary");
                let (primary, rerouted) = self
                    .route(pool, buf, state, routing.as_deref_mut(), true)
                    .await?;
                routed = rerouted;
                self.checkout(stream, &primary, state.settings()).await?
            }
            other => other?,
        };
        let (retry, tracked) = match (routing, &routed) {
            (Some(routing), Some((decision, request))) => (
                routing.retry(buf, decision),
                routing.start_write(decision, request),
            ),
            _ => (None, false),
        };
        state.retry_read_only = retry.is_some();
        Ok(Opened {
            server,
            retry,
            tracked,
        })
    }

    /// Answers `SET`/`RESET pgsluice.consistency_key` (the proxy's own setting) at the front
    /// of `buf` without a server. True if it did.
    async fn answer_key_command(
        stream: &mut Stream,
        buf: &mut BytesMut,
        routing: Option<&mut ClientRouting>,
    ) -> Result<bool, ClientError> {
        let Some(command) = routing.and_then(|r| r.key_command(buf)) else {
            return Ok(false);
        };
        let _ = buf.split_to(command.consumed);
        let mut out = BytesMut::with_capacity(32);
        backend::encode_command_complete(command.tag, &mut out);
        backend::encode_ready_for_query(TransactionStatus::Idle, &mut out);
        stream.write_all(&out).await.map_err(ClientError::Io)?;
        Ok(true)
    }

    /// A replica refused the client's query with 25006 before anything reached the client (the
    /// relay counted the error): logs it, and returns the client bytes with the query in front
    /// again.
    fn read_only_refused(&self, retry: Retry, rest: BytesMut) -> BytesMut {
        tracing::info!(peer = %self.peer, user = %self.user, database = %self.database,
            "a replica refused a query as read-only (25006); retrying it on the primary");
        let mut buf = BytesMut::with_capacity(retry.query.len() + rest.len());
        buf.extend_from_slice(&retry.query);
        buf.extend_from_slice(&rest);
        buf
    }

    /// Picks the pool for the work at the front of `buf`: by routing (transaction pooling with
    /// replicas; the primary when `primary_only`), else `primary`. Counts the decision. Also
    /// returns the decision, to track the client's writes.
    async fn route(
        &self,
        primary: &Arc<Pool>,
        buf: &[u8],
        state: &ClientState,
        routing: Option<&mut ClientRouting>,
        primary_only: bool,
    ) -> Result<(Arc<Pool>, Option<(Decision, Request)>), ClientError> {
        let Some(routing) = routing else {
            self.database_metrics()
                .route(RouteTarget::Primary, RouteReason::Default);
            return Ok((primary.clone(), None));
        };
        let mut request = routing.request(buf, &state.statements);
        if primary_only {
            request.intent = Intent::Write;
        }
        let decision = routing
            .route(self.generation, self.database, &request)
            .await?;
        let (target, reason) = metric_labels(&decision);
        let reason = if primary_only {
            RouteReason::Other
        } else {
            reason
        };
        self.database_metrics().route(target, reason);
        let pool = self
            .generation
            .pools
            .get(self.database, self.user, decision.node)
            .cloned()
            .unwrap_or_else(|| primary.clone());
        Ok((pool, Some((decision, request))))
    }

    /// After a write transaction on the primary: remembers where the client's writes are in the
    /// WAL (one extra query), so its next reads go only to replicas that replayed them.
    async fn record_write(routing: &mut ClientRouting, server: &mut PooledServer) {
        if !routing.needs_lsn() {
            routing.wrote(None);
            return;
        }
        let row = server
            .conn()
            // The insert position, not the write position: it is past the commit record even
            // before the WAL writer has caught up.
            .query_row("SELECT pg_current_wal_insert_lsn()", HOUSEKEEPING_TIMEOUT)
            .await;
        match row.ok().and_then(|r| r.into_iter().next().flatten()) {
            Some(text) => routing.wrote(Lsn::parse(&text)),
            // Unknown position: keep this client's reads on the primary for now.
            None => routing.wrote(Some(Lsn(u64::MAX))),
        }
    }

    /// Between transactions, with the server idle: drops server statements if the client dropped
    /// them in SQL, and reads back settings the client changed so they follow it to its next
    /// server connection (a SET rolled back, SET LOCAL and RESET all show up right this way).
    /// A failure leaves the connection marked broken, so the pool closes it.
    pub(super) async fn after_transaction(
        &self,
        conn: &mut crate::server::ServerConnection,
        state: &mut ClientState,
        outcome: &RelayOutcome,
    ) {
        if outcome.statements_dropped {
            conn.prepared_mut().clear();
            if conn
                .run_query("DEALLOCATE ALL", HOUSEKEEPING_TIMEOUT)
                .await
                .is_err()
            {
                conn.set_state(ServerState::Broken);
            }
        }
        if !outcome.settings_changed {
            return;
        }
        let rows = match conn
            .query_rows(SESSION_SETTINGS_SQL, HOUSEKEEPING_TIMEOUT)
            .await
        {
            Ok(rows) => rows,
            Err(e) => {
                tracing::info!(peer = %self.peer, error = %e, "cannot read back session settings");
                conn.set_state(ServerState::Broken);
                return;
            }
        };
        let session: Vec<(String, String)> = rows
            .into_iter()
            .filter_map(|row| match row.as_slice() {
                [Some(name), Some(value)] => Some((name.clone(), value.clone())),
                _ => None,
            })
            .collect();
        let mut settings = state
            .settings
            .as_ref()
            .map_or_else(Vec::new, |s| s.startup.clone());
        for (name, value) in &session {
            match settings
                .iter_mut()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
            {
                Some(entry) => entry.1 = value.clone(),
                None => settings.push((name.clone(), value.clone())),
            }
        }
        state.set_settings(settings);
        conn.set_applied_settings(session);
    }
}
