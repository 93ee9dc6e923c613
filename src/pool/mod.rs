//! Pools of server connections, one per (database, user, node): idle list, FIFO waiters with a
//! checkout timeout, the guard that owns a checked-out connection inside the client task, and the
//! maintenance that enforces `min_size`, `server_idle_timeout` and `server_lifetime`.

mod cancel;
mod maintain;
mod set;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{AcquireError, Notify, OwnedSemaphorePermit, Semaphore, TryAcquireError};

pub use cancel::CancelTarget;
pub use set::{PoolKey, PoolSet};

use crate::config::PoolSettings;
use crate::metrics::PoolMetrics;
use crate::net::WorkerId;
use crate::server::{ConnectParams, ServerConnection, ServerError, ServerState};

/// How long the proxy's own housekeeping queries (ROLLBACK, reset) may take before the connection is
/// given up as broken.
const HOUSEKEEPING_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether a reset query drops every prepared statement.
fn deallocates(reset_query: &str) -> bool {
    let upper = reset_query.to_ascii_uppercase();
    upper.contains("DISCARD ALL") || upper.contains("DEALLOCATE ALL")
}

/// Why a client got no server connection.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("no server connection available in pool {pool} within {waited:?} (all {size} in use)")]
    CheckoutTimeout {
        pool: String,
        waited: Duration,
        size: usize,
    },
    #[error("cannot connect to server for pool {pool}: {source}")]
    Connect { pool: String, source: ServerError },
    #[error("pool {pool} is closed")]
    Closed { pool: String },
    #[error("pool {pool} is paused (admin PAUSE) and was not resumed within {waited:?}")]
    Paused { pool: String, waited: Duration },
}

/// Counts open connections; the count goes down when the slot is dropped with its connection.
#[derive(Debug)]
struct OpenSlot(Arc<AtomicUsize>);

impl OpenSlot {
    fn new(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        OpenSlot(counter.clone())
    }
}

impl Drop for OpenSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection that belongs to a pool.
#[derive(Debug)]
struct Member {
    conn: ServerConnection,
    _slot: OpenSlot,
}

/// A snapshot of a pool's counters, for admin views and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolStats {
    /// Server connections open (idle + in use).
    pub open: usize,
    /// Server connections idle in the pool.
    pub idle: usize,
    /// Server connections held by clients.
    pub active: usize,
    /// Clients waiting for a connection.
    pub waiting: usize,
}

/// The server connections of one (database, user, node).
#[derive(Debug)]
pub struct Pool {
    name: String,
    settings: PoolSettings,
    connect: ConnectParams,
    permits: Arc<Semaphore>,
    /// Slots beyond `size` (`reserve_size`), for clients that waited `reserve_timeout`.
    reserve: Arc<Semaphore>,
    idle: Mutex<Vec<Member>>,
    open: Arc<AtomicUsize>,
    waiting: AtomicUsize,
    metrics: Arc<PoolMetrics>,
    /// Admin PAUSE: new checkouts wait until [`Pool::resume`].
    paused: AtomicBool,
    resumed: Notify,
    /// Number of the newest housekeeping task: a reload that keeps the pool starts a new one, and
    /// the superseded task must then stop without closing the idle connections.
    maintainer: AtomicUsize,
    /// The parameters (ParameterStatus) of the first server connection this pool opened, before
    /// any client's settings: what a session-pooled client is greeted with when every connection
    /// is taken, so that it waits at its first query rather than at login.
    greeting: Mutex<Option<ServerParams>>,
}

/// A server's parameters as it reported them (ParameterStatus), shared.
pub type ServerParams = Arc<[(String, String)]>;

/// One idle server connection as admin views show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdleServer {
    /// Time since the connection was opened.
    pub age: Duration,
    /// Time since it was last handed back.
    pub idle_for: Duration,
    /// The server's backend process id.
    pub remote_pid: i32,
}

impl Pool {
    /// A pool that opens connections with `connect`; none are opened until needed (or by maintenance
    /// for `min_size`).
    pub fn new(name: String, settings: PoolSettings, connect: ConnectParams) -> Arc<Pool> {
        Pool::with_metrics(name, settings, connect, Arc::new(PoolMetrics::detached()))
    }

    /// Like [`Pool::new`], recording into `metrics` (checkout wait and timeouts, connects, server
    /// connections idle/active, waiting clients, size).
    pub fn with_metrics(
        name: String,
        settings: PoolSettings,
        connect: ConnectParams,
        metrics: Arc<PoolMetrics>,
    ) -> Arc<Pool> {
        metrics
            .pool_size
            .set(i64::try_from(settings.size).unwrap_or(i64::MAX));
        Arc::new(Pool {
            name,
            permits: Arc::new(Semaphore::new(settings.size)),
            reserve: Arc::new(Semaphore::new(settings.reserve_size)),
            settings,
            connect,
            idle: Mutex::new(Vec::new()),
            open: Arc::new(AtomicUsize::new(0)),
            waiting: AtomicUsize::new(0),
            metrics,
            paused: AtomicBool::new(false),
            resumed: Notify::new(),
            maintainer: AtomicUsize::new(0),
            greeting: Mutex::new(None),
        })
    }

    /// The server parameters to greet a client with while every connection is taken (`None`
    /// until the pool has opened a connection, or while a slot is free).
    pub fn greeting_when_full(&self) -> Option<ServerParams> {
        if self.permits.available_permits() > 0 {
            return None;
        }
        self.greeting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Where this pool's metrics go; the relay records queries, transactions and bytes here.
    pub fn metrics(&self) -> &Arc<PoolMetrics> {
        &self.metrics
    }

    /// `database/user@node`, for errors and logs.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn settings(&self) -> &PoolSettings {
        &self.settings
    }

    /// Where this pool's connections go.
    pub fn connect_params(&self) -> &ConnectParams {
        &self.connect
    }

    pub fn stats(&self) -> PoolStats {
        let idle = self.lock_idle().len();
        PoolStats {
            open: self.open.load(Ordering::Relaxed),
            idle,
            active: self.settings.size - self.permits.available_permits()
                + self.settings.reserve_size
                - self.reserve.available_permits(),
            waiting: self.waiting.load(Ordering::Relaxed),
        }
    }

    /// The idle connections, most recently used last.
    pub fn idle_servers(&self) -> Vec<IdleServer> {
        self.lock_idle()
            .iter()
            .map(|m| IdleServer {
                age: m.conn.age(),
                idle_for: m.conn.idle_for(),
                remote_pid: m.conn.backend_key().process_id,
            })
            .collect()
    }

    /// Makes new checkouts wait until [`Pool::resume`] (still bounded by `checkout_timeout`).
    /// Connections already checked out are not affected.
    pub fn pause(&self) {
        self.paused.store(true, Ordering::Release);
    }

    /// Lets checkouts waiting on [`Pool::pause`] go on.
    pub fn resume(&self) {
        self.paused.store(false, Ordering::Release);
        self.resumed.notify_waiters();
    }

    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    /// Waits while the pool is paused, up to `checkout_timeout`.
    async fn wait_resumed(&self) -> Result<(), PoolError> {
        let started = Instant::now();
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let resumed = tokio::time::timeout(self.settings.checkout_timeout, async {
            loop {
                let notified = self.resumed.notified();
                let mut notified = std::pin::pin!(notified);
                // Registered before the check, so a resume in between is not missed.
                notified.as_mut().enable();
                if !self.is_paused() {
                    return;
                }
                notified.await;
            }
        })
        .await;
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        resumed.map_err(|_| PoolError::Paused {
            pool: self.name.clone(),
            waited: started.elapsed(),
        })
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<Member>> {
        // A panic while holding this lock cannot leave the Vec inconsistent; keep going.
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether a connection is too old to be used again.
    fn expired(&self, conn: &ServerConnection) -> bool {
        let lifetime = self.settings.server_lifetime;
        !lifetime.is_zero() && conn.age() >= lifetime
    }

    /// Waits (FIFO) for a free slot up to `checkout_timeout`, then hands out an idle connection that is
    /// still alive, or opens a new one. A broken or expired idle connection is closed, never handed out.
    /// The connection is driven by `worker`, the caller's runtime. While the pool is paused (admin
    /// PAUSE) it first waits for RESUME, also bounded by `checkout_timeout`.
    pub async fn checkout(self: &Arc<Self>, worker: WorkerId) -> Result<PooledServer, PoolError> {
        if self.paused.load(Ordering::Relaxed) {
            self.wait_resumed().await?;
        }
        // Free slot: no timer, no clock read. The semaphore hands released slots to queued waiters
        // first, so this never jumps the FIFO queue.
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                self.metrics.checkout_wait.observe_zero();
                (permit, false)
            }
            Err(TryAcquireError::Closed) => {
                return Err(PoolError::Closed {
                    pool: self.name.clone(),
                })
            }
            // Waiting and connecting are boxed: each checkout's future (moved into the client's
            // per-transaction future) then carries neither unless it needs it.
            Err(TryAcquireError::NoPermits) => Box::pin(self.wait_for_slot()).await?,
        };
        let (permit, reserve) = permit;
        loop {
            let candidate = self.pop_idle(worker);
            let Some(mut member) = candidate else { break };
            if self.expired(&member.conn)
                || !member.conn.check_alive()
                || member.conn.move_to(worker).is_err()
            {
                tracing::debug!(pool = %self.name, "closing stale idle server connection");
                continue;
            }
            return Ok(PooledServer::new(member, permit, reserve, self.clone()));
        }
        let conn = Box::pin(self.connect_counted(worker))
            .await
            .map_err(|source| PoolError::Connect {
                pool: self.name.clone(),
                source,
            })?;
        tracing::debug!(pool = %self.name, "opened server connection");
        let member = Member {
            conn,
            _slot: OpenSlot::new(&self.open),
        };
        Ok(PooledServer::new(member, permit, reserve, self.clone()))
    }

    /// Opens a server connection, counting the attempt in the metrics.
    async fn connect_counted(&self, worker: WorkerId) -> Result<ServerConnection, ServerError> {
        let connected = self.connect.connect(worker).await;
        match &connected {
            Ok(conn) => {
                self.metrics.server_connects.inc();
                let mut greeting = self
                    .greeting
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if greeting.is_none() {
                    *greeting = Some(conn.params().into());
                }
            }
            Err(_) => self.metrics.server_connect_errors.inc(),
        }
        connected
    }

    /// Waits in the FIFO queue for a slot, up to `checkout_timeout`; after `reserve_timeout` a reserve
    /// slot will do too. Returns the slot and whether it is a reserve one.
    async fn wait_for_slot(&self) -> Result<(OwnedSemaphorePermit, bool), PoolError> {
        let started = Instant::now();
        self.waiting.fetch_add(1, Ordering::Relaxed);
        self.metrics.clients_waiting.inc();
        let acquired =
            tokio::time::timeout(self.settings.checkout_timeout, self.acquire_slot()).await;
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        self.metrics.clients_waiting.dec();
        self.metrics.checkout_wait.observe_since(started);
        match acquired {
            Err(_) => {
                self.metrics.checkout_timeouts.inc();
                Err(PoolError::CheckoutTimeout {
                    pool: self.name.clone(),
                    waited: started.elapsed(),
                    size: self.settings.size,
                })
            }
            Ok(Err(_)) => Err(PoolError::Closed {
                pool: self.name.clone(),
            }),
            Ok(Ok(permit)) => Ok(permit),
        }
    }

    /// A regular slot; with a reserve, after `reserve_timeout` whichever of a regular or a reserve
    /// slot frees first (true if reserve).
    async fn acquire_slot(&self) -> Result<(OwnedSemaphorePermit, bool), AcquireError> {
        let mut regular = std::pin::pin!(self.permits.clone().acquire_owned());
        if self.settings.reserve_size == 0 {
            return regular.await.map(|p| (p, false));
        }
        if let Ok(acquired) =
            tokio::time::timeout(self.settings.reserve_timeout, regular.as_mut()).await
        {
            return acquired.map(|p| (p, false));
        }
        tracing::info!(pool = %self.name, "client waited reserve_timeout: a reserve connection may open");
        tokio::select! {
            acquired = regular => acquired.map(|p| (p, false)),
            acquired = self.reserve.clone().acquire_owned() => acquired.map(|p| (p, true)),
        }
    }

    /// Stops handing out connections: waiters and later checkouts fail with [`PoolError::Closed`].
    pub fn close(&self) {
        self.permits.close();
        self.reserve.close();
    }

    /// Closes every idle connection (shutdown, node down).
    pub async fn close_idle(&self) {
        let idle: Vec<Member> = std::mem::take(&mut *self.lock_idle());
        self.metrics
            .server_idle
            .add(-i64::try_from(idle.len()).unwrap_or(0));
        for member in idle {
            member.conn.close().await;
        }
    }

    /// The most recently used idle connection, preferring one already driven by `worker` so it need
    /// not move between reactors.
    fn pop_idle(&self, worker: WorkerId) -> Option<Member> {
        let mut idle = self.lock_idle();
        let member = match idle.iter().rposition(|m| m.conn.home() == worker) {
            Some(index) => Some(idle.remove(index)),
            None => idle.pop(),
        };
        if member.is_some() {
            self.metrics.server_idle.dec();
        }
        member
    }

    fn put_idle(&self, member: Member) {
        self.lock_idle().push(member);
        self.metrics.server_idle.inc();
    }
}

/// A server connection checked out of a pool, owned by one client task. Hand it back with
/// [`PooledServer::release`]; if dropped instead, the connection is closed (its state is unknown) and
/// the slot is freed.
#[derive(Debug)]
pub struct PooledServer {
    member: Option<Member>,
    pool: Arc<Pool>,
    _permit: OwnedSemaphorePermit,
    /// Checked out under a reserve slot: closed on release while the pool is above `size`.
    reserve: bool,
}

impl PooledServer {
    fn new(member: Member, permit: OwnedSemaphorePermit, reserve: bool, pool: Arc<Pool>) -> Self {
        pool.metrics.server_active.inc();
        PooledServer {
            member: Some(member),
            pool,
            _permit: permit,
            reserve,
        }
    }

    /// The pool it came from.
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// The connection. Always present until released.
    pub fn conn(&mut self) -> &mut ServerConnection {
        match self.member.as_mut() {
            Some(member) => &mut member.conn,
            None => unreachable!("a PooledServer holds its connection until release"),
        }
    }

    /// The pool and the connection at once (to record into the pool's metrics while relaying).
    pub fn parts(&mut self) -> (&Pool, &mut ServerConnection) {
        match self.member.as_mut() {
            Some(member) => (&self.pool, &mut member.conn),
            None => unreachable!("a PooledServer holds its connection until release"),
        }
    }

    /// Returns the connection to the pool if it can be made clean: an open transaction is rolled back,
    /// then `reset_query` runs when `reset` is true. A busy, broken or expired connection is closed.
    pub async fn release(mut self, reset: bool) {
        let Some(member) = self.member.take() else {
            return;
        };
        let Member { mut conn, _slot } = member;
        let clean = match conn.state() {
            ServerState::Idle => true,
            ServerState::InTransaction | ServerState::FailedTransaction => conn
                .run_query("ROLLBACK", HOUSEKEEPING_TIMEOUT)
                .await
                .is_ok(),
            ServerState::Busy | ServerState::Broken => false,
        };
        let reset_query = &self.pool.settings.reset_query;
        let reset_ran = reset && !reset_query.is_empty();
        let clean = clean
            && (!reset_ran
                || conn
                    .run_query(reset_query, HOUSEKEEPING_TIMEOUT)
                    .await
                    .is_ok())
            && conn.state() == ServerState::Idle;
        let clean = clean
            && (!reset_ran
                || conn.prepared_mut().is_empty()
                || deallocates(reset_query)
                || conn
                    .run_query("DEALLOCATE ALL", HOUSEKEEPING_TIMEOUT)
                    .await
                    .is_ok());
        if reset_ran {
            conn.set_applied_settings(Vec::new());
            conn.prepared_mut().clear();
        }
        if !clean {
            tracing::debug!(pool = %self.pool.name, state = ?conn.state(), "closing server connection that cannot be reused");
            conn.close().await;
            return;
        }
        if self.pool.expired(&conn) {
            conn.close().await;
            return;
        }
        if self.reserve && self.pool.open.load(Ordering::Relaxed) > self.pool.settings.size {
            tracing::debug!(pool = %self.pool.name, "closing reserve server connection");
            conn.close().await;
            return;
        }
        conn.set_state(ServerState::Idle);
        self.pool.put_idle(Member { conn, _slot });
    }
}

impl Drop for PooledServer {
    /// Released or not, the connection is no longer checked out.
    fn drop(&mut self) {
        self.pool.metrics.server_active.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServerTls;
    use crate::net::ServerTlsConnector;

    /// A pool whose connections go nowhere (port 1 refuses), so a checkout past the pause gate
    /// fails fast with `Connect`.
    fn unreachable_pool(checkout_timeout: Duration) -> Arc<Pool> {
        let settings = PoolSettings {
            checkout_timeout,
            ..PoolSettings::default()
        };
        let connect = ConnectParams {
            host: "127.0.0.1".into(),
            port: 1,
            user: "u".into(),
            password: None,
            database: "d".into(),
            tls: ServerTlsConnector::new(&ServerTls {
                mode: crate::config::ServerTlsMode::Disable,
                ..ServerTls::default()
            })
            .unwrap(),
            connect_timeout: Duration::from_secs(1),
            max_message_size: 1 << 20,
        };
        Pool::new("d/u@n".into(), settings, connect)
    }

    #[tokio::test]
    async fn paused_checkout_times_out_then_resume_lets_it_through() {
        let pool = unreachable_pool(Duration::from_millis(100));
        pool.pause();
        assert!(pool.is_paused());
        let err = pool.checkout(WorkerId::MAIN).await.unwrap_err();
        assert!(matches!(err, PoolError::Paused { .. }), "{err}");
        assert_eq!(pool.stats().waiting, 0);

        let pool = unreachable_pool(Duration::from_secs(10));
        pool.pause();
        let waiter = tokio::spawn({
            let pool = pool.clone();
            async move { pool.checkout(WorkerId::MAIN).await.map(|_| ()) }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(pool.stats().waiting, 1);
        pool.resume();
        let result = tokio::time::timeout(Duration::from_secs(5), waiter).await;
        let err = result.unwrap().unwrap().unwrap_err();
        assert!(matches!(err, PoolError::Connect { .. }), "{err}");
        assert!(pool.idle_servers().is_empty());
    }
}
