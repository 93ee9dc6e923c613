//! One client session after its StartupMessage: login, then either session pooling (one server
//! connection for the whole session) or transaction pooling (a server connection from the first
//! message of a transaction until the server is idle again), relaying in between.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::deadline::Timeouts;
use super::exchange::{Exchange, Expect};
use super::relay::{self, Policy, RelayEnd, RelayMetrics, RelayOutcome};
use super::routing::{metric_labels, ClientRouting, Retry};
use super::statements::{parse_without_server, ClientStatements};
use super::{auth, params, pins, ClientError, Generation, Shared};
use crate::admin::{ClientEntry, ClientState as Activity};
use crate::config::PoolMode;
use crate::metrics::{RouteReason, RouteTarget};
use crate::net::{Stream, WorkerId};
use crate::pool::{CancelTarget, Pool, PooledServer};
use crate::protocol::backend::{self, ErrorFields, TransactionStatus};
use crate::protocol::sqlstate;
use crate::protocol::startup::{CancelKey, StartupMessage};
use crate::protocol::Framer;
use crate::router::{self, Intent};
use crate::router::{Decision, Request};
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
    statements: ClientStatements,
    /// Responses owed while relaying (empty between transactions).
    expected: VecDeque<Expect>,
    /// The transaction being relayed is a replica-routed simple query the relay should hold for
    /// a 25006 retry on the primary.
    retry_read_only: bool,
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
    fn settings(&self) -> &[(String, String)] {
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

/// What a client's session did: ended (session pooling, console, errors), or logged in under
/// transaction pooling, to be served transaction by transaction.
pub(super) enum Served {
    Ended(RelayEnd),
    Pooled(Box<Greeted>),
    /// A session-pooled client leaving for another worker at an idle point, with its server
    /// connection and the client bytes already read.
    Moved(WorkerId, PooledServer, BytesMut),
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

/// A client logged in and greeted, with the server connection that gave it its parameters.
pub(super) struct Greeted {
    pub pool: Arc<Pool>,
    /// `None` when a session-pooled client was greeted while every connection was taken.
    pub server: Option<PooledServer>,
    /// The settings its server connections must have (from the startup packet).
    pub settings: Vec<(String, String)>,
    /// Client bytes read past the login.
    pub buf: BytesMut,
}

/// Polls an idle client's wait: ready once the client sent something (or closed), its session is
/// stopped (`client`'s entry: KILL, shutdown), `timer` fired (client_idle_timeout) or, with
/// `drain`, the proxy started draining. The wakers live in their owners' slots (socket, client
/// entry, timer), so a task waiting this way (`std::future::poll_fn`) keeps no state beyond
/// its references, and no read buffer.
pub(super) fn poll_idle(
    cx: &mut std::task::Context<'_>,
    client: &ClientEntry,
    stream: &Stream,
    timer: &mut Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    drain: Option<&std::sync::atomic::AtomicBool>,
) -> Poll<Result<(), ClientError>> {
    if client.poll_stopped(cx).is_ready()
        || drain.is_some_and(|started| started.load(Ordering::Acquire))
    {
        return Poll::Ready(Err(ClientError::ShuttingDown));
    }
    if let Some(timer) = timer.as_mut() {
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(ClientError::ClientIdleTimeout));
        }
    }
    stream.poll_read_ready(cx).map_err(ClientError::Io)
}

/// One logged-in (or logging-in) client.
pub(super) struct Session<'a> {
    pub shared: &'a Shared,
    pub generation: &'a Generation,
    pub user: &'a str,
    pub database: &'a str,
    pub peer: SocketAddr,
    pub worker: WorkerId,
    /// This client in the admin registry: its state, its stop signal (KILL or shutdown) and its
    /// cancel target.
    pub client: &'a Arc<ClientEntry>,
    /// The cancel key issued to this client (sent in BackendKeyData).
    pub cancel_key: CancelKey,
}

impl<'a> Session<'a> {
    /// The session of `client`, served on the runtime of `worker`.
    pub fn new(
        shared: &'a Shared,
        generation: &'a Generation,
        client: &'a Arc<ClientEntry>,
        worker: WorkerId,
    ) -> Session<'a> {
        Session {
            shared,
            generation,
            user: client.user(),
            database: client.database(),
            peer: client.peer,
            worker,
            client,
            // Issued before the session starts; a zero key would only cancel nothing.
            cancel_key: client.cancel_key().unwrap_or(CancelKey {
                process_id: 0,
                secret_key: 0,
            }),
        }
    }

    /// Logs the client in and greets it; serves a session-pooled client (or a console one) until
    /// it leaves, and hands a transaction-pooled one back greeted.
    pub async fn serve(
        &self,
        stream: &mut Stream,
        startup: StartupMessage,
        buf: BytesMut,
        started: Instant,
    ) -> Result<Served, ClientError> {
        if self.generation.config.admin.is_console(self.database) {
            let framer = Framer::new(self.generation.config.limits.max_message_size);
            let console = super::console::serve(self, stream, buf, &framer, started);
            return console.await.map(Served::Ended);
        }
        // Futures that run once (login, a session-mode relay) or once per transaction are boxed,
        // each in a statement of its own (a temporary lives to the end of its statement, so an
        // await in the same statement would keep room for the unboxed future): the task of an
        // idle client then holds only the idle loop's state.
        let greeted = self.greet(stream, startup, buf, started).await?;
        match greeted.pool.settings().mode {
            PoolMode::Session => self.session_pooled(stream, greeted).await,
            PoolMode::Transaction => Ok(Served::Pooled(Box::new(greeted))),
        }
    }

    /// Session pooling: one server connection for the whole session, reset and returned at its
    /// end (or when the proxy drains, at the client's next idle point).
    async fn session_pooled(
        &self,
        stream: &mut Stream,
        greeted: Greeted,
    ) -> Result<Served, ClientError> {
        let Greeted {
            pool,
            server,
            settings,
            buf,
        } = greeted;
        let server = match server {
            Some(server) => server,
            None => {
                // Greeted without a connection: take one when the client sends its first
                // message (checkout_timeout and the waiting notice apply).
                if buf.is_empty() {
                    std::future::poll_fn(|cx| poll_idle(cx, self.client, stream, &mut None, None))
                        .await?;
                }
                let checkout = Box::pin(self.checkout(stream, &pool, &settings));
                checkout.await?
            }
        };
        self.session_relays(stream, buf, server).await
    }

    /// Relays a session-pooled client's session on `server` until it ends (then releases the
    /// connection with the reset), or until, at an idle point, it takes a move to another worker
    /// that the balancer asked of this one (then hands everything back to move).
    pub async fn session_relays(
        &self,
        stream: &mut Stream,
        mut buf: BytesMut,
        mut server: PooledServer,
    ) -> Result<Served, ClientError> {
        let placement = &self.shared.placement;
        let end = loop {
            let exit = relay::IdleExit {
                draining: &self.shared.drain_started,
                moving: placement.moving_flag(self.worker),
            };
            let relay = Box::pin(self.relay(stream, buf, &mut server, None, Some(exit)));
            let (end, rest) = relay.await;
            let draining = self.shared.drain_started.load(Ordering::Acquire);
            if !matches!(end, Ok(RelayEnd::TransactionDone)) || draining {
                break end;
            }
            if let Some(target) = placement.claim_move(self.worker) {
                return Ok(Served::Moved(target, server, rest));
            }
            // Another client took the last move asked for: go on here.
            buf = rest;
        };
        let release = Box::pin(server.release(true));
        release.await;
        match end {
            // Session pooling ends at an idle point only when the proxy drains.
            Ok(RelayEnd::TransactionDone) => Err(ClientError::ShuttingDown),
            other => other.map(Served::Ended),
        }
    }

    /// Logs the client in, checks out its first server connection and greets the client with that
    /// server's parameters, a cancel key and ReadyForQuery.
    async fn greet(
        &self,
        stream: &mut Stream,
        startup: StartupMessage,
        mut buf: BytesMut,
        started: Instant,
    ) -> Result<Greeted, ClientError> {
        let config = &self.generation.config;
        let framer = Framer::new(config.limits.max_message_size);
        // The startup packet is dropped once the client is logged in (its user and database are
        // kept as strings by the caller).
        let login = self.login(stream, &startup, &mut buf, &framer);
        let remaining = config
            .limits
            .startup_timeout
            .saturating_sub(started.elapsed());
        let settings = tokio::time::timeout(remaining, login)
            .await
            .map_err(|_| ClientError::StartupTimeout)??;
        let mut out = BytesMut::new();
        backend::encode_auth(&backend::Authentication::Ok, &mut out);
        stream.write_all(&out).await.map_err(ClientError::Io)?;

        let pool = self.pool()?;
        // Session pooling with every connection taken: greet from the pool's server parameters
        // (with this client's own settings) and wait for a connection at the first query, as
        // PgBouncer does, so a login is never stuck behind other sessions.
        let deferred = match pool.settings().mode {
            PoolMode::Session => pool.greeting_when_full(),
            PoolMode::Transaction => None,
        };
        let mut server = match deferred {
            Some(_) => None,
            None => Some(self.checkout(stream, &pool, &settings).await?),
        };
        out.clear();
        match (server.as_mut(), deferred.as_deref()) {
            (Some(server), _) => {
                for (name, value) in server.conn().params() {
                    backend::encode_parameter_status(name, value, &mut out);
                }
            }
            (None, params) => {
                for (name, value) in params.unwrap_or_default() {
                    let value = settings
                        .iter()
                        .find(|(setting, _)| setting.eq_ignore_ascii_case(name))
                        .map_or(value, |(_, own)| own);
                    backend::encode_parameter_status(name, value, &mut out);
                }
            }
        }
        backend::encode_backend_key_data(self.cancel_key, &mut out);
        backend::encode_ready_for_query(TransactionStatus::Idle, &mut out);
        stream.write_all(&out).await.map_err(ClientError::Io)?;
        tracing::info!(peer = %self.peer, user = %self.user, database = %self.database,
            pool = %pool.name(), mode = ?pool.settings().mode, "client connected");
        Ok(Greeted {
            pool,
            server,
            settings,
            buf,
        })
    }

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

    /// Checks the database, user, startup parameters and password. Returns the settings to apply.
    async fn login(
        &self,
        stream: &mut Stream,
        startup: &StartupMessage,
        buf: &mut BytesMut,
        framer: &Framer,
    ) -> Result<Vec<(String, String)>, ClientError> {
        if self.user.is_empty() {
            return Err(ClientError::NoUser);
        }
        if startup.minor_version > 0 {
            let mut out = BytesMut::new();
            let unrecognized: Vec<&str> = startup
                .params
                .iter()
                .filter(|(k, _)| k.starts_with("_pq_."))
                .map(|(k, _)| k.as_str())
                .collect();
            backend::encode_negotiate_protocol_version(0, &unrecognized, &mut out);
            stream.write_all(&out).await.map_err(ClientError::Io)?;
        }
        if self.generation.config.database(self.database).is_none() {
            return Err(ClientError::UnknownDatabase(self.database.to_string()));
        }
        let settings = params::requested_settings(startup).map_err(ClientError::Params)?;
        let tls_cert = self.generation.client_tls.as_ref().map(|t| t.cert_der());
        auth::authenticate(
            &self.generation.auth,
            self.user,
            stream,
            buf,
            framer,
            tls_cert,
        )
        .await?;
        Ok(settings)
    }

    /// This client's database metrics (errors by class, routing decisions).
    fn database_metrics(&self) -> &'a crate::metrics::DatabaseMetrics {
        self.generation
            .database_metrics
            .get(self.database)
            .unwrap_or(self.generation.metrics.unknown_database())
    }

    /// Routes (today: the primary) to the pool of that node.
    fn pool(&self) -> Result<Arc<Pool>, ClientError> {
        let unknown = || ClientError::UnknownDatabase(self.database.to_string());
        let snapshot = self
            .generation
            .topology
            .get(self.database)
            .ok_or_else(unknown)?;
        let node = router::route(self.database, &snapshot.load(), Intent::ReadWrite)?;
        self.database_metrics()
            .route(RouteTarget::Primary, RouteReason::Default);
        let pool = self.generation.pools.get(self.database, self.user, node);
        pool.cloned().ok_or_else(unknown)
    }

    /// Checks a server connection out and gives it the client's settings. A bad setting (e.g. an
    /// unknown time zone) fails like it would on Postgres; the connection itself goes back.
    async fn checkout(
        &self,
        stream: &mut Stream,
        pool: &Arc<Pool>,
        settings: &[(String, String)],
    ) -> Result<PooledServer, ClientError> {
        self.client.request();
        let mut server = self.checkout_noticed(stream, pool).await?;
        self.client.set_state(Activity::Active);
        let conn = server.conn();
        if let Some(sql) = params::sync_statements(settings, conn.applied_settings(), conn.params())
        {
            let timeout = pool.settings().checkout_timeout;
            if let Err(e) = server.conn().run_query(&sql, timeout).await {
                server.conn().set_applied_settings(Vec::new());
                server.release(true).await;
                return Err(ClientError::Server(e));
            }
            server.conn().set_applied_settings(settings.to_vec());
        }
        Ok(server)
    }

    /// Checks a connection out of `pool`; a client still waiting after `checkout_notice_after` is
    /// told so once with a NOTICE and keeps waiting (up to `checkout_timeout`). The pool keeps
    /// one timer for all its waiters, so waiting costs no timer per client.
    async fn checkout_noticed(
        &self,
        stream: &mut Stream,
        pool: &Arc<Pool>,
    ) -> Result<PooledServer, ClientError> {
        let notice = move || async move {
            let message = format!(
                "waiting for a server connection in pool {} (all {} in use)",
                pool.name(),
                pool.settings().size
            );
            tracing::info!(peer = %self.peer, pool = %pool.name(), "client waiting for a server connection past checkout_notice_after");
            let mut out = BytesMut::new();
            backend::encode_notice(
                &ErrorFields::new("NOTICE", sqlstate::WARNING, &message),
                &mut out,
            );
            // A client gone meanwhile is noticed at its next read or write.
            if let Err(e) = stream.write_all(&out).await {
                tracing::debug!(peer = %self.peer, error = %e, "cannot send the waiting notice");
            }
        };
        Ok(pool.checkout_noticed(self.worker, Some(notice)).await?)
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
    async fn after_transaction(
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

    /// Relays until the session (or, with `transaction_pooling`, the transaction) ends; records what
    /// the relay saw on the server connection. Returns the client bytes not yet forwarded.
    #[allow(clippy::too_many_arguments)]
    async fn relay(
        &self,
        stream: &mut Stream,
        buf: BytesMut,
        server: &mut PooledServer,
        mut state: Option<&mut ClientState>,
        drain: Option<relay::IdleExit<'a>>,
    ) -> (Result<RelayEnd, ClientError>, BytesMut) {
        let target = CancelTarget {
            pool: server.pool().clone(),
            server_key: server.conn().backend_key(),
        };
        let timeouts = Timeouts::from_settings(server.pool().settings(), Some(target.clone()));
        self.client.set_cancel_target(Some(target));
        let capacity = server.pool().settings().server_prepared_statements;
        let (pool, conn) = server.parts();
        let metrics = RelayMetrics {
            pool: pool.metrics(),
            database: self.database_metrics(),
        };
        let server_buf = conn.take_buffered();
        let policy = Policy {
            transaction_pooling: state.is_some(),
            effects: pins::query_effects,
            retry_read_only: state.as_ref().is_some_and(|s| s.retry_read_only),
            log_queries: tracing::enabled!(tracing::Level::DEBUG),
        };
        let (server_stream, prepared) = conn.parts_mut();
        prepared.set_capacity(capacity);
        let exchange = state.as_deref_mut().map(|state| Exchange {
            cache: &self.shared.statements,
            client: &mut state.statements,
            server: prepared,
            expected: &mut state.expected,
            settings_changed: false,
            pinned: None,
            metrics: metrics.pool,
        });
        let outcome = relay::relay(
            stream,
            buf,
            server_stream,
            server_buf,
            self.generation.config.limits.max_message_size,
            policy,
            exchange,
            metrics,
            self.client,
            drain,
            timeouts,
        )
        .await;
        self.client.set_cancel_target(None);
        if let (Some(state), RelayEnd::TransactionDone) = (state, &outcome.end) {
            self.after_transaction(conn, state, &outcome).await;
        }
        conn.restore_buffer(outcome.server_buf);
        for (name, value) in &outcome.parameters {
            conn.note_parameter(name, value);
        }
        if let Some(reason) = outcome.pinned {
            self.client.pin(reason);
            tracing::info!(peer = %self.peer, user = %self.user, reason, "client pinned to its server connection until it disconnects");
        }
        let state = match outcome.end {
            RelayEnd::ServerGone | RelayEnd::ServerProtocol(_) => ServerState::Broken,
            _ => outcome.server_state,
        };
        conn.set_state(state);
        let result = match outcome.end {
            RelayEnd::ServerGone => Err(ClientError::ServerLost),
            RelayEnd::ServerProtocol(e) => Err(ClientError::ServerProtocol(e)),
            RelayEnd::ClientProtocol(e) => Err(ClientError::Protocol(e)),
            RelayEnd::Shutdown => Err(ClientError::ShuttingDown),
            RelayEnd::IdleInTransaction => Err(ClientError::IdleInTransactionTimeout {
                pool: server.pool().name().to_string(),
            }),
            RelayEnd::ClientIdle => Err(ClientError::ClientIdleTimeout),
            end => Ok(end),
        };
        (result, outcome.client_buf)
    }
}
