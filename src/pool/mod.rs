//! Pools of server connections, one per (database, user, node): idle list, FIFO waiters with a
//! checkout timeout, the guard that owns a checked-out connection inside the client task, and the
//! maintenance that enforces `min_size`, `server_idle_timeout` and `server_lifetime`.

mod cancel;
mod maintain;
mod queue;
mod set;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

pub use cancel::CancelTarget;
use queue::{Event, Grant, SlotKind, Slots};
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
    /// Idle connections, slots taken (`size` regular, `reserve_size` for clients that waited
    /// `reserve_timeout`) and the FIFO queue of waiting checkouts, under one lock held only for
    /// a push or pop (never across `.await`).
    slots: Mutex<Slots>,
    open: Arc<AtomicUsize>,
    /// Checkouts waiting for an admin RESUME (those waiting for a slot are in `slots`).
    paused_waiting: AtomicUsize,
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
    /// The runtime the pool's housekeeping runs on (the app's, set by [`Pool::maintain`]): the
    /// watchdog of waiting checkouts runs there too. On a worker's runtime its timer would make
    /// every wake-up of that worker a timed `epoll_wait` (a kernel timer armed and cancelled)
    /// and a timer-wheel pass, for as long as anyone waits.
    housekeeping: std::sync::OnceLock<tokio::runtime::Handle>,
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
            settings,
            connect,
            slots: Mutex::new(Slots::default()),
            open: Arc::new(AtomicUsize::new(0)),
            paused_waiting: AtomicUsize::new(0),
            metrics,
            paused: AtomicBool::new(false),
            resumed: Notify::new(),
            maintainer: AtomicUsize::new(0),
            greeting: Mutex::new(None),
            housekeeping: std::sync::OnceLock::new(),
        })
    }

    /// The server parameters to greet a client with while every connection is taken (`None`
    /// until the pool has opened a connection, or while a slot is free).
    pub fn greeting_when_full(&self) -> Option<ServerParams> {
        if self.lock_slots().used < self.settings.size {
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
        let slots = self.lock_slots();
        PoolStats {
            open: self.open.load(Ordering::Relaxed),
            idle: slots.idle.len(),
            active: slots.used + slots.reserve_used,
            waiting: slots.waiting() + self.paused_waiting.load(Ordering::Relaxed),
        }
    }

    /// The idle connections, most recently used last.
    pub fn idle_servers(&self) -> Vec<IdleServer> {
        self.lock_slots()
            .idle
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
        self.paused_waiting.fetch_add(1, Ordering::Relaxed);
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
        self.paused_waiting.fetch_sub(1, Ordering::Relaxed);
        resumed.map_err(|_| PoolError::Paused {
            pool: self.name.clone(),
            waited: started.elapsed(),
        })
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
        self.checkout_noticed(worker, None::<fn() -> std::future::Ready<()>>)
            .await
    }

    /// Like [`Pool::checkout`]; a checkout still waiting after `checkout_notice_after` runs
    /// `notice` once (e.g. to tell the client) and keeps its place in the queue.
    pub async fn checkout_noticed<N, F>(
        self: &Arc<Self>,
        worker: WorkerId,
        notice: Option<N>,
    ) -> Result<PooledServer, PoolError>
    where
        N: FnOnce() -> F,
        F: std::future::Future<Output = ()>,
    {
        if self.paused.load(Ordering::Relaxed) {
            self.wait_resumed().await?;
        }
        // A free slot: no timer, no clock read, no waiting.
        let taken = self.lock_slots().try_take(self.settings.size);
        let mut server = if taken {
            self.metrics.checkout_wait.observe_zero();
            PooledServer::new(None, SlotKind::Regular, self.clone())
        } else {
            // Waiting and connecting are boxed: each checkout's future (moved into the client's
            // per-transaction future) then carries neither unless it needs it.
            match Box::pin(self.wait_for_slot(worker, notice)).await? {
                Grant::Server(member, kind) => PooledServer::new(Some(member), kind, self.clone()),
                Grant::Slot(kind) => PooledServer::new(None, kind, self.clone()),
                Grant::TimedOut | Grant::Closed => {
                    unreachable!("wait_for_slot maps these to errors")
                }
            }
        };
        // The slot is held by `server` from here: dropping it on an error frees the slot.
        let mut candidate = server.member.take();
        loop {
            let Some(mut member) = candidate.take().or_else(|| self.pop_idle(worker)) else {
                break;
            };
            if self.expired(&member.conn)
                || !member.conn.check_alive()
                || member.conn.move_to(worker).is_err()
            {
                tracing::debug!(pool = %self.name, "closing stale idle server connection");
                continue;
            }
            server.member = Some(member);
            return Ok(server);
        }
        let conn = Box::pin(self.connect_counted(worker))
            .await
            .map_err(|source| PoolError::Connect {
                pool: self.name.clone(),
                source,
            })?;
        tracing::debug!(pool = %self.name, "opened server connection");
        server.member = Some(Box::new(Member {
            conn,
            _slot: OpenSlot::new(&self.open),
        }));
        Ok(server)
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

    /// Waits in the FIFO queue up to `checkout_timeout` for a connection handed back or a slot
    /// freed; after `reserve_timeout` a reserve slot will do too. Returns a [`Grant::Server`] or
    /// [`Grant::Slot`].
    async fn wait_for_slot<N, F>(
        self: &Arc<Self>,
        worker: WorkerId,
        mut notice: Option<N>,
    ) -> Result<Grant, PoolError>
    where
        N: FnOnce() -> F,
        F: std::future::Future<Output = ()>,
    {
        let mut ticket = match self.enqueue(worker) {
            Ok(ticket) => ticket,
            Err(Grant::Closed) => {
                return Err(PoolError::Closed {
                    pool: self.name.clone(),
                })
            }
            Err(grant) => {
                self.metrics.checkout_wait.observe_zero();
                return Ok(grant);
            }
        };
        let grant = loop {
            match std::future::poll_fn(|cx| ticket.poll(cx)).await {
                Event::Granted(grant) => break grant,
                Event::NoticeDue => {
                    if let Some(notice) = notice.take() {
                        notice().await;
                    }
                }
            }
        };
        let started = ticket.since();
        drop(ticket);
        self.metrics.checkout_wait.observe_since(started);
        match grant {
            Grant::TimedOut => Err(PoolError::CheckoutTimeout {
                pool: self.name.clone(),
                waited: started.elapsed(),
                size: self.settings.size,
            }),
            Grant::Closed => Err(PoolError::Closed {
                pool: self.name.clone(),
            }),
            grant => Ok(grant),
        }
    }

    /// Stops handing out connections: waiters and later checkouts fail with [`PoolError::Closed`].
    pub fn close(&self) {
        self.close_queue();
    }

    /// Closes every idle connection (shutdown, node down).
    pub async fn close_idle(&self) {
        let idle: Vec<Box<Member>> = std::mem::take(&mut self.lock_slots().idle);
        self.metrics
            .server_idle
            .add(-i64::try_from(idle.len()).unwrap_or(0));
        for member in idle {
            member.conn.close().await;
        }
    }

    /// The most recently used idle connection, preferring one already driven by `worker` so it need
    /// not move between reactors.
    fn pop_idle(&self, worker: WorkerId) -> Option<Box<Member>> {
        let mut slots = self.lock_slots();
        let idle = &mut slots.idle;
        let member = match idle.iter().rposition(|m| m.conn.home() == worker) {
            Some(index) => Some(idle.remove(index)),
            None => idle.pop(),
        };
        drop(slots);
        if member.is_some() {
            self.metrics.server_idle.dec();
        }
        member
    }
}

/// A server connection checked out of a pool, owned by one client task. Hand it back with
/// [`PooledServer::release`]; if dropped instead, the connection is closed (its state is unknown) and
/// the slot is freed.
#[derive(Debug)]
pub struct PooledServer {
    member: Option<Box<Member>>,
    pool: Arc<Pool>,
    /// The slot held until the connection is handed back or closed. A reserve one: the
    /// connection is closed on release while the pool is above `size`.
    slot: Option<SlotKind>,
}

impl PooledServer {
    /// Holds `slot` from now on; `member` may be filled in later (an empty one only frees the
    /// slot when dropped).
    fn new(member: Option<Box<Member>>, slot: SlotKind, pool: Arc<Pool>) -> Self {
        pool.metrics.server_active.inc();
        PooledServer {
            member,
            pool,
            slot: Some(slot),
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
        let mut member = member;
        let conn = &mut member.conn;
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
            member.conn.close().await;
            return;
        }
        let now = Instant::now();
        let lifetime = self.pool.settings.server_lifetime;
        if !lifetime.is_zero() && conn.age_at(now) >= lifetime {
            member.conn.close().await;
            return;
        }
        let reserve = self.slot == Some(SlotKind::Reserve);
        if reserve && self.pool.open.load(Ordering::Relaxed) > self.pool.settings.size {
            tracing::debug!(pool = %self.pool.name, "closing reserve server connection");
            member.conn.close().await;
            return;
        }
        conn.mark_idle(now);
        if let Some(kind) = self.slot.take() {
            self.pool.give_back(member, kind);
        }
    }
}

impl Drop for PooledServer {
    /// Released or not, the connection is no longer checked out. One never handed back is closed
    /// first, then its slot freed (for a waiter to open a new one).
    fn drop(&mut self) {
        self.pool.metrics.server_active.dec();
        drop(self.member.take());
        if let Some(kind) = self.slot.take() {
            self.pool.free_slot(kind);
        }
    }
}

#[cfg(test)]
mod tests;
