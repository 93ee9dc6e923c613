//! One client session after its StartupMessage: login, then either session pooling (one server
//! connection for the whole session) or transaction pooling (a server connection from the first
//! message of a transaction until the server is idle again), relaying in between.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use super::deadline::Timeouts;
use super::exchange::Exchange;
use super::relay::{self, Policy, Relay, RelayEnd, RelayMetrics, RelayOutcome};
use super::transaction::ClientState;
use super::{auth, params, ClientError, Generation, Shared};
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
use crate::server::ServerState;

/// How a client's login went: its session ended (console, errors), or it logged in under
/// transaction pooling (to be served transaction by transaction) or session pooling (to be
/// served by [`Session::session_relays`] from the client task's top, see
/// `moving::SessionClient`: one future fewer to go through on every wake-up).
pub(super) enum Served {
    Ended(RelayEnd),
    Pooled(Box<Greeted>),
    /// A session-pooled client with its server connection and the client bytes already read.
    Session(PooledServer, BytesMut),
}

/// How a session-pooled client's relays ended.
pub(super) enum SessionEnd {
    Ended(RelayEnd),
    /// Leaving for another worker at an idle point, with its server connection and the client
    /// bytes already read.
    Moved(WorkerId, PooledServer, BytesMut),
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

    /// Logs the client in and greets it; serves a console client until it leaves, and hands a
    /// pooled one back greeted (a session-pooled one with its server connection).
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

    /// Session pooling: takes the one server connection for the whole session (relayed by
    /// [`Session::session_relays`]).
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
        Ok(Served::Session(server, buf))
    }

    /// Relays a session-pooled client's session on `server` until it ends (then releases the
    /// connection with the reset, at the end or when the proxy drains, at the client's next idle
    /// point), or until, at an idle point, it takes a move to another worker that the balancer
    /// asked of this one (then hands everything back to move). Not boxed inside: the client
    /// task boxes this future whole.
    pub async fn session_relays(
        &self,
        stream: &mut Stream,
        mut buf: BytesMut,
        mut server: PooledServer,
    ) -> Result<SessionEnd, ClientError> {
        let placement = &self.shared.placement;
        let end = loop {
            let exit = relay::IdleExit {
                draining: &self.shared.drain_started,
                moving: placement.moving_flag(self.worker),
            };
            // The relay is awaited right here, not through `Session::relay`: one future layer
            // fewer on every wake-up of the session.
            let mut relay = self.start_relay(stream, buf, &mut server, None, Some(exit));
            let end = (&mut relay).await;
            let outcome = relay.finish(end).await;
            let (end, rest) = self.end_relay(&mut server, None, outcome).await;
            let draining = self.shared.drain_started.load(Ordering::Acquire);
            if !matches!(end, Ok(RelayEnd::TransactionDone)) || draining {
                break end;
            }
            if let Some(target) = placement.claim_move(self.worker) {
                return Ok(SessionEnd::Moved(target, server, rest));
            }
            // Another client took the last move asked for: go on here.
            buf = rest;
        };
        let release = Box::pin(server.release(true));
        release.await;
        match end {
            // Session pooling ends at an idle point only when the proxy drains.
            Ok(RelayEnd::TransactionDone) => Err(ClientError::ShuttingDown),
            other => other.map(SessionEnd::Ended),
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
    pub(super) fn database_metrics(&self) -> &'a crate::metrics::DatabaseMetrics {
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
    pub(super) async fn checkout(
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

    /// Relays until the session (or, with `transaction_pooling`, the transaction) ends; records what
    /// the relay saw on the server connection. Returns the client bytes not yet forwarded.
    pub(super) async fn relay(
        &self,
        stream: &mut Stream,
        buf: BytesMut,
        server: &mut PooledServer,
        mut state: Option<&mut ClientState>,
        drain: Option<relay::IdleExit<'a>>,
    ) -> (Result<RelayEnd, ClientError>, BytesMut) {
        let mut relay = self.start_relay(stream, buf, server, state.as_deref_mut(), drain);
        let end = (&mut relay).await;
        let outcome = relay.finish(end).await;
        self.end_relay(server, state, outcome).await
    }

    /// The relay of [`Session::relay`], to await in place (see [`Relay::new`]), then finish and
    /// hand to [`Session::end_relay`]. Sets the client's cancel target to `server`.
    pub(super) fn start_relay<'r>(
        &'r self,
        stream: &'r mut Stream,
        buf: BytesMut,
        server: &'r mut PooledServer,
        state: Option<&'r mut ClientState>,
        drain: Option<relay::IdleExit<'r>>,
    ) -> Relay<'r, 'r, 'r> {
        let target = CancelTarget {
            pool: server.pool().clone(),
            server_key: server.conn().backend_key(),
        };
        let settings = server.pool().settings();
        // Only a query timeout cancels from the relay (each clone counts on the pool's Arc).
        let cancel = (!settings.query_timeout.is_zero()).then(|| target.clone());
        let timeouts = Timeouts::from_settings(settings, cancel);
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
            retry_read_only: state.as_ref().is_some_and(|s| s.retry_read_only),
            log_queries: tracing::enabled!(tracing::Level::DEBUG),
        };
        let (server_stream, prepared) = conn.parts_mut();
        prepared.set_capacity(capacity);
        let exchange = state.map(|state| Exchange {
            cache: &self.shared.statements,
            client: &mut state.statements,
            server: prepared,
            expected: &mut state.expected,
            settings_changed: false,
            pinned: None,
            metrics: metrics.pool,
        });
        Relay::new(
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
    }

    /// Records what a finished relay saw on `server` (and, under transaction pooling, in
    /// `state`), and clears the client's cancel target. Returns how the relay ended for the
    /// client, and the client bytes not yet forwarded.
    pub(super) async fn end_relay(
        &self,
        server: &mut PooledServer,
        state: Option<&mut ClientState>,
        outcome: RelayOutcome,
    ) -> (Result<RelayEnd, ClientError>, BytesMut) {
        let (_, conn) = server.parts();
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
