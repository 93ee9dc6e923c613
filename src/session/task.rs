//! The task of one client connection: what it holds in shared structures (given back on drop),
//! its boxed start (startup, login, greeting; whole session-pooled and console sessions), and the
//! small loop a transaction-pooled client waits in between transactions. The task's future is
//! what an idle client costs, so only that loop's state lives in it; every other future is boxed.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::client::{poll_idle, Greeted, Served, Session};
use super::limits::ClientLimitGuard;
use super::moving::{MovedClient, Placed, SessionClient};
use super::routing::ClientRouting;
use super::transaction::{ClientState, Step};
use super::{startup, ClientError, Generation, Shared};
use crate::admin::ClientEntry;
use crate::metrics::{DatabaseMetrics, GlobalMetrics};
use crate::net::{Stream, WorkerId};
use crate::pool::Pool;
use crate::protocol::backend;

/// A timer for `timeout`, or none when it is zero. Boxed: an idle client without a timeout
/// then carries no timer state at all.
fn idle_timer(timeout: Duration) -> Option<std::pin::Pin<Box<tokio::time::Sleep>>> {
    (!timeout.is_zero()).then(|| Box::pin(tokio::time::sleep(timeout)))
}

/// What a connected client holds in process-wide counts: `clients`, the metrics, and its
/// per-database/user limits. Owned (no borrows), so it can live in the client's task beside what
/// it counts; released on drop.
pub(super) struct Tenancy {
    pub shared: Arc<Shared>,
    pub generation: Arc<Generation>,
    pub limits: Option<ClientLimitGuard>,
}

impl Tenancy {
    /// Counts a new connection. Returns it and the number of connected clients, this one included.
    fn new(shared: Arc<Shared>) -> (Tenancy, usize) {
        let connected = shared.clients.fetch_add(1, Ordering::Relaxed) + 1;
        let generation = shared.generation.load_full();
        generation.metrics.global().client_connected();
        let tenancy = Tenancy {
            shared,
            generation,
            limits: None,
        };
        (tenancy, connected)
    }

    fn global(&self) -> &GlobalMetrics {
        self.generation.metrics.global()
    }
}

impl Drop for Tenancy {
    fn drop(&mut self) {
        self.global().client_disconnected();
        self.shared.clients.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Takes `entry` out of the admin registry and its cancel key out of the cancel registry.
fn leave(shared: &Shared, entry: &ClientEntry) {
    if let Some(key) = entry.cancel_key() {
        shared.cancels.release(key);
    }
    shared.registry.unregister(entry.id);
}

/// A client in the admin and cancel registries until dropped, or until [`Client`] takes the entry
/// over.
pub(super) struct Registration {
    pub shared: Arc<Shared>,
    pub entry: Option<Arc<ClientEntry>>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(entry) = &self.entry {
            leave(&self.shared, entry);
        }
    }
}

/// A transaction-pooled client between transactions: everything it keeps while idle.
pub(super) struct Client {
    pub(super) tenancy: Tenancy,
    entry: Arc<ClientEntry>,
    pub(super) worker: WorkerId,
    pub(super) stream: Stream,
    /// The primary's pool (routing may pick another per transaction).
    pool: Arc<Pool>,
    /// Client bytes read but not yet handled (no allocation while idle).
    buf: BytesMut,
    state: ClientState,
    routing: Option<Box<ClientRouting>>,
    /// A replica refused the last query with 25006: it goes again, to the primary.
    retrying: bool,
    /// Close with 57P01 at the next idle point once the proxy drains. A client accepted while
    /// draining (from the backlog) first gets one transaction, so its connect is not wasted.
    close_when_drained: bool,
}

/// Serves one accepted client connection on the runtime of `worker` until it ends, or until it
/// leaves for another worker at an idle point (the balancer asked, see
/// [`super::placement::Placement`]), handed over to be resumed there. Never panics on client
/// input; every failure the client can be told about is sent as an ErrorResponse with a
/// SQLSTATE before closing.
pub fn run_client(
    shared: Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
    worker: WorkerId,
) -> impl Future<Output = ()> + Send + 'static {
    let placed = Placed::new(shared.clone(), worker);
    // The arguments go into the box at once: an async fn would keep room for them for good.
    let start = Box::pin(start(shared, tcp, peer, placed));
    // The client is served inline (not through `Client::serve`), and the value `start.await`
    // gives lives in a block of its own (a local is kept across every await to the end of its
    // scope, moved out or not): the task's future then holds one `Client`, not two.
    async move {
        let mut client = {
            let Some(started) = start.await else {
                return;
            };
            match started {
                Started::Transactions(client) => *client,
                Started::Session(session) => {
                    // Boxed: the task's future keeps a pointer for it, and the relay inside is
                    // polled through this one box only.
                    let relays = box_in_place(|| session.relays());
                    if let Some(moved) = relays.await {
                        moved.hand_over();
                    }
                    return;
                }
            }
        };
        let end = match client.transactions().await {
            Exit::Move(target) => return MovedClient::transactions(target, client).hand_over(),
            Exit::Ended(end) => end,
        };
        let finish = Box::pin(client.finish(end));
        finish.await;
    }
}

/// How a client's start ended when it did not end the session.
enum Started {
    /// A transaction-pooled client, ready for its first transaction (boxed: what `start`
    /// returns is kept in the task's future while a session-pooled client is served).
    Transactions(Box<Client>),
    /// A session-pooled client with its server connection, ready to relay.
    Session(Box<SessionClient>),
}

/// Boxes the future `make` builds in the box itself: `Box::pin(make())` builds it on the stack
/// and copies all of it (the 2.3 KB of a transaction's step, most of it not yet used) into the
/// box, once per transaction (2.1 KB once per session for a session-pooled client's relays).
/// Written into its allocation, only the fields set are stored.
fn box_in_place<F: Future>(make: impl FnOnce() -> F) -> std::pin::Pin<Box<F>> {
    Box::into_pin(Box::write(Box::new_uninit(), make()))
}

/// Why a transaction-pooled client stopped serving on this worker.
enum Exit {
    Ended(Result<super::relay::RelayEnd, ClientError>),
    Move(WorkerId),
}

/// Startup, login and greeting; serves console clients to their end. Returns the pooled client
/// ready to be served: transaction by transaction, or a session-pooled one on its server
/// connection.
async fn start(
    shared: Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
    placed: Placed,
) -> Option<Started> {
    let worker = placed.worker;
    let (mut tenancy, connected) = Tenancy::new(shared);
    let started = Instant::now();
    let generation = tenancy.generation.clone();
    let opening = tokio::time::timeout(
        generation.config.limits.startup_timeout,
        startup::open(
            tcp,
            generation.client_tls.as_ref(),
            generation.config.client_tls.mode,
        ),
    );
    let (mut stream, startup, buf) = match opening.await {
        Err(_) => {
            tracing::info!(%peer, "client dropped: no startup packet within startup_timeout");
            return None;
        }
        Ok(Err(e)) => {
            tracing::info!(%peer, error = %e, "client startup failed");
            return None;
        }
        Ok(Ok(startup::Opening::Cancel(key))) => {
            tenancy.shared.cancels.cancel(key).await;
            return None;
        }
        Ok(Ok(startup::Opening::Session {
            stream,
            startup,
            buf,
        })) => (stream, startup, buf),
    };
    if stream.is_tls() {
        tenancy.global().tls_handshakes.inc();
    }
    let user = startup.user().unwrap_or_default();
    let database = startup.database().unwrap_or_default();
    let entry = tenancy.shared.registry.register(peer, user, database);
    let mut registration = Registration {
        shared: tenancy.shared.clone(),
        entry: Some(entry.clone()),
    };
    let served = match admit(&generation, connected, database, user) {
        Err(e) => Err(e),
        Ok(admitted) => {
            tenancy.limits = Some(admitted);
            tenancy.shared.cancels.issue(&entry);
            let session = Session::new(&tenancy.shared, &generation, &entry, worker);
            session.serve(&mut stream, startup, buf, started).await
        }
    };
    let greeted = match served {
        Ok(Served::Pooled(greeted)) => greeted,
        Ok(Served::Session(server, buf)) => {
            let session = SessionClient {
                tenancy,
                placed,
                registration,
                stream,
                server,
                buf,
            };
            return Some(Started::Session(Box::new(session)));
        }
        Ok(Served::Ended(end)) => {
            finish(&tenancy, &entry, &mut stream, Ok(end)).await;
            return None;
        }
        Err(e) => {
            finish(&tenancy, &entry, &mut stream, Err(e)).await;
            return None;
        }
    };
    let Greeted {
        pool,
        server,
        settings,
        buf,
    } = *greeted;
    if let Some(server) = server {
        server.release(false).await;
    }
    let routing = ClientRouting::new(&generation, entry.database(), entry.user()).map(Box::new);
    registration.entry = None;
    placed.into_client();
    Some(Started::Transactions(Box::new(Client {
        close_when_drained: !tenancy.shared.drain_started.load(Ordering::Acquire),
        tenancy,
        entry,
        worker,
        stream,
        pool,
        buf,
        state: ClientState::with_settings(settings),
        routing,
        retrying: false,
    })))
}

impl Drop for Client {
    fn drop(&mut self) {
        leave(&self.tenancy.shared, &self.entry);
        self.tenancy.shared.placement.left(self.worker);
    }
}

impl Client {
    /// Transaction pooling: waits for the client's next message without a server connection or a
    /// read buffer, then handles it in a boxed step (a transaction, or what needs no server);
    /// repeats until the client leaves.
    async fn transactions(&mut self) -> Exit {
        loop {
            if self.buf.is_empty() {
                if self.close_when_drained
                    && self.tenancy.shared.drain_started.load(Ordering::Acquire)
                {
                    return Exit::Ended(Err(ClientError::ShuttingDown));
                }
                if let Some(target) = self.tenancy.shared.placement.claim_move(self.worker) {
                    return Exit::Move(target);
                }
                self.buf = BytesMut::new();
                let mut timer = idle_timer(self.pool.settings().client_idle_timeout);
                if let Err(e) = self.wait_idle(&mut timer).await {
                    return Exit::Ended(Err(e));
                }
            }
            let step = box_in_place(|| self.step());
            if let Step::End(end) = step.await {
                return Exit::Ended(end);
            }
        }
    }

    /// Serves transactions until the client leaves (then says why) or takes a move to another
    /// worker (then returns itself to move).
    pub(super) async fn serve(mut self) -> Option<MovedClient> {
        match self.transactions().await {
            Exit::Move(target) => Some(MovedClient::transactions(target, self)),
            Exit::Ended(end) => {
                let finish = Box::pin(self.finish(end));
                finish.await;
                None
            }
        }
    }

    /// Waits for the client's next message, without a read buffer (see [`poll_idle`]); closes
    /// it if the proxy drains meanwhile.
    fn wait_idle<'s>(
        &'s self,
        timer: &'s mut Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    ) -> impl Future<Output = Result<(), ClientError>> + 's {
        std::future::poll_fn(move |cx| {
            let drain = &self.tenancy.shared.drain_started;
            let drain = self.close_when_drained.then_some(drain);
            poll_idle(cx, &self.entry, &self.stream, timer, drain)
        })
    }

    /// Reads what the client sent (when nothing is buffered) and handles it: one transaction, or
    /// a message the proxy answers itself.
    async fn step(&mut self) -> Step {
        let session = Session::new(
            &self.tenancy.shared,
            &self.tenancy.generation,
            &self.entry,
            self.worker,
        );
        let primary_only = std::mem::take(&mut self.retrying);
        let step = session
            .step(
                &mut self.stream,
                &mut self.buf,
                &self.pool,
                &mut self.state,
                &mut self.routing,
                primary_only,
            )
            .await;
        match step {
            Step::Retry => {
                self.retrying = true;
                Step::Continue
            }
            Step::Transaction => {
                self.close_when_drained = true;
                Step::Continue
            }
            other => other,
        }
    }

    /// Logs the end of the session and tells the client why, if it can be told.
    pub(super) async fn finish(mut self, end: Result<super::relay::RelayEnd, ClientError>) {
        finish(&self.tenancy, &self.entry, &mut self.stream, end).await;
    }
}

/// Counts the client against `max_client_conn` (`connected` is the process-wide count with it)
/// and its database's and user's limits.
fn admit(
    generation: &Generation,
    connected: usize,
    database: &str,
    user: &str,
) -> Result<ClientLimitGuard, ClientError> {
    let max = generation.config.limits.max_client_conn;
    if connected > max {
        return Err(ClientError::TooManyClients { max });
    }
    generation.client_limits.admit(database, user)
}

/// Logs how the session ended; on an error, counts it and sends it to the client if it can be
/// told, then closes gracefully.
pub(super) async fn finish(
    tenancy: &Tenancy,
    entry: &ClientEntry,
    stream: &mut Stream,
    end: Result<super::relay::RelayEnd, ClientError>,
) {
    let (peer, user, database) = (entry.peer, entry.user(), entry.database());
    let e = match end {
        Err(ClientError::ShuttingDown) if entry.killed() => ClientError::Killed,
        Err(e) => e,
        Ok(end) => {
            tracing::info!(%peer, %user, %database, ?end, elapsed = ?entry.connected_for(), "client disconnected");
            return;
        }
    };
    match e.repeat_key(peer.ip(), user) {
        None => {
            tracing::info!(%peer, %user, %database, error = %e, "client session ended with error")
        }
        Some(key) => {
            if let Some(suppressed) = crate::logging::repeats().allow(&key) {
                tracing::warn!(%peer, %user, %database, error = %e, suppressed, "client session ended with error (repeats logged once per 10 s)");
            }
        }
    }
    let generation = &tenancy.generation;
    let db_metrics = generation
        .database_metrics
        .get(database)
        .unwrap_or(generation.metrics.unknown_database());
    record_error(tenancy.global(), db_metrics, &e);
    report(stream, &e).await;
}

/// Sends `error` to the client if it can be told, then closes gracefully.
pub(super) async fn report(stream: &mut Stream, error: &ClientError) {
    if let Some(fields) = error.fields() {
        let mut out = BytesMut::new();
        backend::encode_error(&fields, &mut out);
        let _ = stream.write_all(&out).await;
    }
    let _ = stream.shutdown().await;
}

/// Counts a session-ending error: auth failures, limit rejections, and its SQLSTATE class.
fn record_error(global: &GlobalMetrics, database: &DatabaseMetrics, error: &ClientError) {
    match error {
        ClientError::AuthFailed { .. }
        | ClientError::Auth(crate::auth::AuthError::WrongPassword) => global.auth_failures.inc(),
        ClientError::TooManyClients { .. } | ClientError::TooManyClientsFor { .. } => {
            global.client_limit_rejections.inc()
        }
        _ => {}
    }
    if let Some(code) = error.fields().as_ref().and_then(|f| f.code()) {
        database.error(code);
    }
}
